//! Model kinds: what a `kind:` under `models:` (or an inline `model:`) may say, how it is
//! checked, and how it is built.
//!
//! A model kind is one module ([`hashed`], [`bert`], [`corrector`], [`reader`]) whose settings are
//! the compute crate's own config type, read straight from the pipeline (as candle's
//! models read their `Config` straight from `config.json`), so each default and each
//! range is written once, in `freshen-operators`. On top of its kind's settings every
//! model takes the [`ModelCommon`] settings: `frozen`, `lr_scale` and `device`.
//!
//! To add a kind: a module with a type implementing [`ModelKind`], and one line in
//! [`KINDS`].

pub mod bert;
pub mod corrector;
pub mod hashed;
mod read;
pub mod reader;

use std::fmt;
use std::sync::Arc;

use freshen_operators::corrector::Corrector;
use freshen_operators::device::DeviceChoice;
use freshen_operators::train::TrainableEncoder;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::error::Result;
use crate::spec::schema::Tagged;
use crate::spec::LoadedSpec;
pub use read::ModelCx;

/// What a model is to the graph: something that embeds text, or a corrector of vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Embeds text (`encode` nodes, the towers of a training `eval`).
    Encoder,
    /// Maps stale vectors towards fresh ones (`correct` nodes).
    Corrector,
    /// Scores an answer given a query and a passage (`read` nodes).
    Reader,
}

impl Role {
    /// How messages name what is expected of this role.
    pub fn expected(self) -> &'static str {
        match self {
            Role::Encoder => "an encoder",
            Role::Corrector => "a corrector",
            Role::Reader => "a reader",
        }
    }
}

/// Settings every model takes, whatever its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ModelCommon {
    /// Under `models:`: never trained (e.g. `frozen: true` on the target tower trains the
    /// query side only, so the cache never goes stale; on a corrector, h stays the
    /// identity: the stale-cache baseline).
    pub frozen: bool,
    /// Under `models:`: multiplies the update node's learning rates for this model.
    pub lr_scale: f64,
    /// Where the model's tensors live.
    pub device: DeviceChoice,
}

impl Default for ModelCommon {
    fn default() -> Self {
        Self {
            frozen: false,
            lr_scale: 1.0,
            device: DeviceChoice::Cpu,
        }
    }
}

impl ModelCommon {
    /// The keys of these settings, as written.
    pub const KEYS: &'static [&'static str] = &["frozen", "lr_scale", "device"];

    fn validate(&self) -> freshen_operators::Result<()> {
        freshen_operators::ranges::finite_non_negative("lr_scale", self.lr_scale)?;
        self.device.check_build()
    }
}

/// A built model, as the compute crate gives it.
pub enum Built {
    /// A text encoder.
    Encoder(Box<dyn TrainableEncoder>),
    /// A corrector.
    Corrector(Corrector),
    /// A reader.
    Reader(freshen_operators::reader::Reader),
}

/// A model kind: its settings, checked, and how to build it.
pub trait ModelKind: fmt::Debug + Send + Sync {
    /// The `kind` as written.
    fn kind(&self) -> &'static str;

    /// Whether it embeds text or corrects vectors.
    fn role(&self) -> Role;

    /// The settings every kind has.
    fn common(&self) -> &ModelCommon;

    /// The width of the vectors an encoder writes, when it can be known without loading
    /// weights (`None` for a corrector, or a folder that cannot be read: `check` says why).
    fn output_dim(&self) -> Option<usize>;

    /// Checks the files the model needs without loading its weights (what `freshen
    /// check` runs). Errors point at `path` of the model, the key they name.
    fn check_files(&self, cx: &ModelCx) -> Result<()> {
        let _ = cx;
        Ok(())
    }

    /// Its number of parameters (a corrector's for vectors of width `input_dim`), when it
    /// can be known without loading it.
    fn parameters(&self, input_dim: usize) -> Option<u64>;

    /// What it holds and moves in memory, for the estimate of `graph::memory`. By default
    /// every parameter trains with a dense gradient, nothing is held while it loads or
    /// encodes, and the largest tensor is the whole model (an upper bound).
    fn footprint(&self, input_dim: usize) -> Option<Footprint> {
        let bytes = self.parameters(input_dim)? as f64 * F32;
        Some(Footprint {
            weights: bytes,
            trained: bytes,
            dense_gradient: bytes,
            largest: bytes,
            largest_dense: bytes,
            ..Footprint::default()
        })
    }

    /// Bytes the recorded forwards of `texts` texts of `text_bytes` bytes each keep for
    /// the backward (the tape), when the model trains. Small for all but a transformer.
    fn tape(&self, texts: usize, text_bytes: f64) -> f64 {
        let _ = (texts, text_bytes);
        0.0
    }

    /// Whether the model is a linear map of its input (a closed-form fit such as the
    /// corrector's Procrustes objective can then set it).
    fn linear(&self) -> bool {
        false
    }

    /// Builds the model; a corrector corrects vectors of width `input_dim`.
    fn build(&self, input_dim: usize) -> freshen_operators::Result<Built>;

    /// The settings in effect, defaults included, as JSON (for the run's record).
    fn settings_json(&self) -> serde_json::Value;
}

/// A parsed model, shared by the nodes that name it.
pub type Model = Arc<dyn ModelKind>;

/// Bytes of an f32.
const F32: f64 = 4.0;

/// A model's sizes in bytes, for the memory estimate (`graph::memory`): what it holds, and
/// what its training step, a checkpoint of it and its loading add.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Footprint {
    /// Its weights.
    pub weights: f64,
    /// The weights that train (frozen ones left out): each has two AdamW moments, and the
    /// training evaluation keeps a copy of the best step's.
    pub trained: f64,
    /// Of those, the ones whose gradient is a dense tensor of their size (a table that
    /// trains by rows has a gradient of the touched rows only).
    pub dense_gradient: f64,
    /// The largest trained tensor: a checkpoint converts and scans one tensor at a time.
    pub largest: f64,
    /// The largest trained tensor with a dense gradient: the update and the backward's
    /// sums handle one such tensor at a time.
    pub largest_dense: f64,
    /// Held beyond the weights while it loads (the weight file read whole).
    pub load: f64,
    /// Held while it encodes one batch without a tape.
    pub encode: f64,
}

/// One model kind: its name, how to read its settings, and their schema.
pub struct KindEntry {
    /// The `kind` as written.
    pub name: &'static str,
    /// Reads a model of this kind from its mapping (without `kind` and the common keys).
    pub parse: fn(&ModelCx, Value, ModelCommon) -> Result<Model>,
    /// The JSON Schema of its own settings.
    pub schema: fn() -> serde_json::Value,
    /// What the model is, in a sentence: its schema's description (the reference's).
    pub about: &'static str,
}

/// Every model kind, by name.
pub const KINDS: &[KindEntry] = &[hashed::KIND, bert::KIND, corrector::KIND, reader::KIND];

/// Reads the model written at `path` (`models.g`, or `nodes.3.model` in node `node`).
pub fn parse(spec: &LoadedSpec, path: &str, node: Option<&str>, value: &Value) -> Result<Model> {
    let cx = ModelCx {
        spec,
        path: path.to_string(),
        node,
    };
    cx.parse(value)
}

/// The schemas of every kind, for the pipeline format's schema.
pub fn schemas() -> Vec<Tagged> {
    KINDS
        .iter()
        .map(|k| Tagged {
            tag: k.name,
            schema: with_common((k.schema)(), k.about),
            inputs: None,
        })
        .collect()
}

/// A kind's settings schema with the common settings' properties added, described by
/// `about`.
fn with_common(mut schema: serde_json::Value, about: &str) -> serde_json::Value {
    if let Some(o) = schema.as_object_mut() {
        o.insert(
            "description".into(),
            serde_json::Value::String(about.into()),
        );
    }
    let common = serde_json::to_value(schemars::schema_for!(ModelCommon)).unwrap_or_default();
    if let (Some(props), Some(extra)) = (
        schema
            .as_object_mut()
            .and_then(|o| o.get_mut("properties"))
            .and_then(|p| p.as_object_mut()),
        common.get("properties").and_then(|p| p.as_object()),
    ) {
        for (k, v) in extra {
            props.insert(k.clone(), v.clone());
        }
    }
    if let (Some(defs), Some(o)) = (common.get("$defs"), schema.as_object_mut()) {
        let entry = o
            .entry("$defs")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if let (Some(e), Some(d)) = (entry.as_object_mut(), defs.as_object()) {
            e.extend(d.clone());
        }
    }
    schema
}

/// The JSON Schema of a settings type, as a value.
pub(crate) fn schema_of<T: JsonSchema>() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default()
}

/// `{kind, ...settings, ...common}` as JSON.
fn settings_json(kind: &str, settings: &impl Serialize, common: &ModelCommon) -> serde_json::Value {
    let mut v = serde_json::to_value(settings).unwrap_or_default();
    if let (Some(o), Ok(serde_json::Value::Object(c))) =
        (v.as_object_mut(), serde_json::to_value(common))
    {
        o.insert("kind".into(), serde_json::Value::String(kind.into()));
        o.extend(c);
    }
    v
}

/// The `model` of an `encode` node: a name from the pipeline's `models:` (shared,
/// trainable), or a model written in place (never trained).
#[derive(Debug, Clone)]
pub enum ModelRef {
    /// A model of the pipeline's `models:` map, shared with every node that names it.
    Named(String),
    /// A model of this node alone.
    Inline(Model),
}

impl ModelRef {
    /// Reads the `model` value at `path`: a string names a model, a mapping is one, and
    /// nothing is the default `{kind: hashed}`.
    pub fn parse(spec: &LoadedSpec, path: &str, node: Option<&str>, value: &Value) -> Result<Self> {
        match value {
            Value::String(name) => Ok(ModelRef::Named(name.clone())),
            Value::Null => {
                let mut m = serde_yaml::Mapping::new();
                m.insert(Value::from("kind"), Value::from(hashed::KIND.name));
                Ok(ModelRef::Inline(parse(
                    spec,
                    path,
                    node,
                    &Value::Mapping(m),
                )?))
            }
            Value::Mapping(_) => Ok(ModelRef::Inline(parse(spec, path, node, value)?)),
            _ => Err(spec.error(
                path,
                node,
                "`model` must be a model name from `models:` or a model such as {kind: hashed}",
            )),
        }
    }

    /// The name, for a model of `models:`.
    pub fn name(&self) -> Option<&str> {
        match self {
            ModelRef::Named(n) => Some(n),
            ModelRef::Inline(_) => None,
        }
    }

    /// As JSON: the name, or the inline model's settings.
    pub fn settings_json(&self) -> serde_json::Value {
        match self {
            ModelRef::Named(n) => serde_json::Value::String(n.clone()),
            ModelRef::Inline(m) => m.settings_json(),
        }
    }

    /// The JSON Schema of a `model` value: a name, or a model of any kind.
    pub fn schema() -> serde_json::Value {
        let mut one_of =
            vec![serde_json::json!({"type": "string", "description": "A model of `models:`."})];
        for t in schemas() {
            let mut s = t.schema;
            if let Some(o) = s.as_object_mut() {
                o.remove("$schema");
                o.insert(
                    "additionalProperties".into(),
                    serde_json::Value::Bool(false),
                );
                if let Some(p) = o.get_mut("properties").and_then(|p| p.as_object_mut()) {
                    p.insert("kind".into(), serde_json::json!({"const": t.tag}));
                }
            }
            one_of.push(s);
        }
        serde_json::json!({ "oneOf": one_of })
    }
}
