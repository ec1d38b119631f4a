//! The JSON Schema of the pipeline format, for editor completion (`freshen schema`).
//!
//! The top of the format comes from [`Pipeline`]; each node type and each model kind
//! gives the schema of its own settings (derived from the same structs that read them),
//! and [`pipeline_schema`] puts them together: a node is one of the node types, tagged by
//! `type`; a model one of the kinds, tagged by `kind`. So `check` and the schema cannot
//! disagree about what is allowed.

use serde_json::{json, Map, Value};

use super::format::Pipeline;

/// What a node id may be (see `check_node_id` in `load.rs`): letters, digits, `_` and `-`,
/// at least one of them not a digit.
const NODE_ID_PATTERN: &str = "^[A-Za-z0-9_-]*[A-Za-z_-][A-Za-z0-9_-]*$";

/// The schema of one node type's or model kind's settings, under its tag value.
#[derive(Debug, Clone)]
pub struct Tagged {
    /// The `type` (or `kind`) that selects it.
    pub tag: &'static str,
    /// The settings' schema: an object schema.
    pub schema: Value,
    /// A node type's schema of `inputs` (its roles), if it reads any.
    pub inputs: Option<Value>,
}

/// The whole format: `nodes` items are one of `nodes` (tagged by `type`), `models`
/// values one of `models` (tagged by `kind`).
pub fn pipeline_schema(nodes: &[Tagged], models: &[Tagged]) -> Value {
    let mut root = serde_json::to_value(schemars::schema_for!(Pipeline)).unwrap_or_default();
    let mut defs = Map::new();
    let node_items: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let mut s = tagged(n, "type", &mut defs);
            let props = object(&mut s, "properties");
            props.insert(
                "id".into(),
                json!({"type": "string", "pattern": NODE_ID_PATTERN,
                       "description": "Unique name of the node: letters, digits, `_` and `-`, not digits alone (what `--set nodes.ID.key=...` can name)."}),
            );
            let inputs = n.inputs.clone().unwrap_or_else(|| {
                json!({"type": "array", "maxItems": 0,
                       "description": "None: it reads no node."})
            });
            props.insert("inputs".into(), inputs);
            require(&mut s, "id");
            s
        })
        .collect();
    let model_items: Vec<Value> = models
        .iter()
        .map(|m| tagged(m, "kind", &mut defs))
        .collect();
    if let Some(props) = root.get_mut("properties").and_then(Value::as_object_mut) {
        props.insert(
            "nodes".into(),
            json!({"type": "array", "items": {"oneOf": node_items},
                   "description": "The operators, as a graph: each node names the nodes it reads from."}),
        );
        props.insert(
            "models".into(),
            json!({"type": "object", "additionalProperties": {"oneOf": model_items},
                   "description": "Models shared by name between nodes."}),
        );
    }
    object(&mut root, "$defs").extend(defs);
    root
}

/// The schema `t` as a member of a tagged union: `tag: const`, required, no other keys
/// than its own. Its definitions move into `defs`.
fn tagged(t: &Tagged, tag: &str, defs: &mut Map<String, Value>) -> Value {
    let mut s = t.schema.clone();
    lift_defs(&mut s, defs);
    if let Some(o) = s.as_object_mut() {
        o.remove("$schema");
        o.insert("additionalProperties".into(), Value::Bool(false));
    }
    object(&mut s, "properties").insert(tag.into(), json!({"const": t.tag}));
    require(&mut s, tag);
    s
}

/// Moves every `$defs` in `v` (at any depth) into `defs`: references are to the root.
fn lift_defs(v: &mut Value, defs: &mut Map<String, Value>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(d)) = o.remove("$defs") {
                for (k, mut def) in d {
                    lift_defs(&mut def, defs);
                    defs.insert(k, def);
                }
            }
            o.remove("$schema");
            for child in o.values_mut() {
                lift_defs(child, defs);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| lift_defs(i, defs)),
        _ => {}
    }
}

/// The object under `key` of `v`, created if absent.
fn object<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let o = v.as_object_mut().expect("an object");
    let entry = o
        .entry(key.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("an object")
}

fn require(v: &mut Value, key: &str) {
    if let Some(o) = v.as_object_mut() {
        let req = o
            .entry("required".to_string())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = req {
            if !items.iter().any(|i| i == key) {
                items.push(Value::String(key.into()));
            }
        }
    }
}
