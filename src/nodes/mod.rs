//! The node types: one module each, holding its settings, its checks, its plan and its
//! timely operators.
//!
//! A node type's settings struct implements [`NodeKind`] (what the graph and the
//! runtime ask of it) and [`Settings`] (how it is read from YAML); [`KINDS`] registers
//! every type under its `type` name, which is the only list of them. To add a node
//! type: a module here and one line in [`KINDS`].

pub mod cache;
pub mod correct;
pub mod encode;
pub mod eval;
mod facts;
pub mod fit;
pub mod loss;
pub mod read;
pub mod sample;
pub mod sink;
pub mod source;
pub mod synthetic;
mod text;
mod touched;
pub mod update;

use std::path::Path;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_yaml::Value;

use crate::error::Result;
use crate::graph::{Graph, InputRole, NodeEntry, NodeKind, ParseCx, Registry, Slot};
use crate::spec::schema::Tagged;
use crate::spec::LoadedSpec;

/// Every node type, in the order messages list them.
pub static KINDS: &Registry = &[
    entry::<source::Source>(),
    entry::<synthetic::Synthetic>(),
    entry::<encode::Encode>(),
    entry::<cache::Cache>(),
    entry::<correct::Correct>(),
    entry::<sample::Sample>(),
    entry::<read::Read>(),
    entry::<loss::Loss>(),
    entry::<update::Update>(),
    entry::<eval::Eval>(),
    entry::<fit::Fit>(),
    entry::<sink::Sink>(),
];

/// How a node type's settings are read.
pub trait Settings: DeserializeOwned + Serialize + JsonSchema + NodeKind + Sized {
    /// The `type` as written.
    const TYPE: &'static str;

    /// Every input role it may take, whatever its settings.
    const ROLES: &'static [InputRole];

    /// Range checks; a [`freshen_operators::Error::Field`] names the key at fault.
    fn validate(&self) -> freshen_operators::Result<()> {
        Ok(())
    }

    /// Reads what serde cannot read alone (a model written in place).
    fn resolve(&mut self, cx: &ParseCx) -> Result<()> {
        let _ = cx;
        Ok(())
    }

    /// The JSON Schema of the settings.
    fn schema() -> serde_json::Value {
        crate::models::schema_of::<Self>()
    }
}

fn parse<S: Settings>(cx: &ParseCx, value: Value) -> Result<Box<dyn NodeKind>> {
    let mut settings: S = cx.settings(value)?;
    settings.validate().map_err(|e| cx.located(e))?;
    settings.resolve(cx)?;
    Ok(Box::new(settings))
}

const fn entry<S: Settings>() -> NodeEntry {
    NodeEntry {
        name: S::TYPE,
        parse: parse::<S>,
        schema: S::schema,
        roles: S::ROLES,
    }
}

/// Checks that input `role` is what the node needs (`ok`), described by `what`.
fn want(cx: &crate::graph::CheckCx, role: &str, ok: bool, what: &str) -> Result<()> {
    if ok {
        return Ok(());
    }
    let Some(j) = role.slot(cx.this()) else {
        return Ok(());
    };
    let name = &cx.this().inputs[j];
    let ty = cx.producer(role).map_or("?", |p| p.kind.type_name());
    Err(cx.input_error(
        role,
        format!("input `{role}` must be {what} (got {ty} `{name}`)"),
    ))
}

/// The rows of the dataset table that input `role` of the node derives from (following
/// each producer's first role back to a `source`), when it can be counted.
fn upstream_rows(cx: &crate::graph::CheckCx, role: &str) -> Option<usize> {
    let mut node = cx.producer_index(role)?;
    loop {
        let n = &cx.graph.nodes()[node];
        if let Some(s) = n.kind.data_source() {
            let source_cx = crate::graph::CheckCx {
                graph: cx.graph,
                node,
            };
            return s.row_count(&source_cx);
        }
        let main = n.roles.first()?;
        node = cx.graph.input(node, main)?.node;
    }
}

/// Queries per training step of the pairs `source` node `source` (its batch, at most the
/// split's judgements), with the dotted path of its `batch_size`.
fn pairs_per_step(g: &crate::graph::Graph, source: usize) -> Option<(usize, String)> {
    let s = g.nodes()[source].kind.data_source()?;
    let cx = crate::graph::CheckCx {
        graph: g,
        node: source,
    };
    Some((
        s.per_step(&cx)?,
        format!("{}.batch_size", crate::spec::LoadedSpec::node_path(source)),
    ))
}

/// A cache's copies held by a node: `copies` × rows × width floats, in all (`per`
/// says whether each worker holds them, a shard of them, or worker 0).
fn cache_copies(
    cx: &crate::graph::CheckCx,
    role: &str,
    copies: f64,
    what: &str,
    per: crate::graph::Per,
) -> Vec<crate::graph::Cost> {
    let (Some(n), d) = (upstream_rows(cx, role), cx.input_dim(role)) else {
        return Vec::new();
    };
    if d == 0 {
        return Vec::new();
    }
    vec![crate::graph::Cost {
        what: format!(
            "node {}: {what}, {copies} × {n} rows × {d} floats",
            cx.this().id
        ),
        bytes: copies * (n * d) as f64 * crate::graph::memory::F32,
        at: None,
        per,
        phase: crate::graph::Phase::Run,
    }]
}

/// A range error of a nested setting, under its parent key.
fn under(parent: &str, e: freshen_operators::Error) -> freshen_operators::Error {
    match e {
        freshen_operators::Error::Field { field, message } => freshen_operators::Error::Field {
            field: format!("{parent}.{field}"),
            message,
        },
        other => other,
    }
}

/// The settings as JSON (for the run's record).
fn json(settings: &impl Serialize) -> serde_json::Value {
    serde_json::to_value(settings).unwrap_or_default()
}

/// Reads and checks the pipeline `file` with its `--set` overrides: the graph every
/// command works on.
pub fn load(file: &Path, sets: &[String]) -> Result<Graph> {
    Graph::build(LoadedSpec::load(file, sets)?, KINDS)
}

/// The JSON Schema of the pipeline format.
pub fn schema() -> serde_json::Value {
    let nodes: Vec<Tagged> = KINDS
        .iter()
        .map(|k| Tagged {
            tag: k.name,
            schema: (k.schema)(),
            inputs: (!k.roles.is_empty()).then(|| inputs_schema(k.roles)),
        })
        .collect();
    crate::spec::schema::pipeline_schema(&nodes, &crate::models::schemas())
}

/// The schema of a node type's `inputs`: a map of its roles (each described), or the
/// list of older pipelines.
fn inputs_schema(roles: &[InputRole]) -> serde_json::Value {
    let written = || roles.iter().filter(|r| r.implied.is_none());
    let props: serde_json::Map<String, serde_json::Value> = written()
        .map(|r| {
            let about = match r.required {
                true => r.about.to_string(),
                false => format!("Optional: {}", r.about),
            };
            (
                r.name.to_string(),
                serde_json::json!({"type": "string", "description": about}),
            )
        })
        .collect();
    let required: Vec<&str> = written().filter(|r| r.required).map(|r| r.name).collect();
    // The inputs freshen wires itself, for the reference: not written, so not in the map.
    let implied: Vec<serde_json::Value> = roles
        .iter()
        .filter_map(|r| {
            let (from, port) = r.implied?;
            Some(serde_json::json!({"name": r.name, "from": from, "port": port, "description": r.about}))
        })
        .collect();
    serde_json::json!({
        "description": "The nodes it reads (`id` or `id.port`), by role. A list in the roles' order also loads, with a warning (`freshen fmt` rewrites it).",
        "oneOf": [
            {"type": "object", "properties": props, "required": required, "additionalProperties": false,
             "x-order": written().map(|r| r.name).collect::<Vec<_>>(), "x-implied": implied},
            {"type": "array", "items": {"type": "string"}}
        ]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_registered_once() {
        let names: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
        assert_eq!(
            names,
            [
                "source",
                "synthetic",
                "encode",
                "cache",
                "correct",
                "sample",
                "read",
                "loss",
                "update",
                "eval",
                "fit",
                "sink"
            ]
        );
        let schema = schema().to_string();
        for n in names {
            assert!(schema.contains(&format!("{{\"const\":\"{n}\"}}")), "{n}");
        }
    }

    #[test]
    fn the_sharded_cache_splits_over_all_workers_in_the_memory_estimate() {
        use crate::graph::{Cost, Per};
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/quickstart.yaml");
        let g = load(&file, &[]).unwrap();
        let by = |costs: &[(Option<usize>, Cost)], per: Per| -> f64 {
            costs
                .iter()
                .filter(|(_, c)| c.per == per)
                .map(|(_, c)| c.bytes)
                .sum()
        };
        let one = crate::graph::memory::costs(&g, 1, 1);
        // Two processes of two workers: the leader's process holds half the shards (its
        // two workers' quarters) and two copies of each per-worker cost.
        let four = crate::graph::memory::costs(&g, 2, 2);
        assert!(by(&one, Per::Shard) > 1e6, "the sample's cache is sharded");
        let evaluate = g.nodes().iter().position(|n| n.id == "evaluate");
        assert!(
            one.iter()
                .filter(|(node, _)| *node == evaluate)
                .all(|(_, c)| c.per == Per::Shard),
            "the evaluation's caches are sharded too: none is the leader's alone"
        );
        assert_eq!(by(&four, Per::Shard), by(&one, Per::Shard) / 2.0);
        assert_eq!(by(&four, Per::Worker), by(&one, Per::Worker) * 2.0);
    }
}
