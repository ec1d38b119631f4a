//! The pipeline format: the top of a pipeline file, with each node's and each model's
//! settings kept as written.
//!
//! What a node or a model may say belongs to its kind (`crate::nodes`,
//! `crate::models`), which reads its settings from the raw mapping kept here; the
//! format only fixes what every pipeline has: a version, a seed, vars, inputs, models,
//! nodes with an `id`, a `type` and `inputs`, and outputs. Every struct denies unknown
//! keys: a typo is an error, not a silently ignored line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

/// The only version of the pipeline format.
pub const FORMAT_VERSION: u32 = 1;

/// A pipeline: named inputs, a graph of operator nodes, named outputs, a seed and variables.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Pipeline {
    /// Version of the pipeline format; only 1 exists.
    #[serde(default = "default_version")]
    pub version: u32,
    /// A short name, used in logs and run tags.
    #[serde(default)]
    pub name: Option<String>,
    /// Free text for humans.
    #[serde(default)]
    pub description: Option<String>,
    /// Seed of every random choice in the run (weight init, sampling, splits).
    #[serde(default)]
    pub seed: u64,
    /// Variables for `${NAME}` interpolation in strings (the environment is the fallback);
    /// a var may use the vars written before it; numbers and booleans are taken as their
    /// text.
    #[serde(default, deserialize_with = "scalar_strings")]
    pub vars: BTreeMap<String, String>,
    /// Datasets the pipeline reads, by name.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Models shared by name between nodes (towers and correctors that `update` trains),
    /// each `{kind: ..., settings}` as written.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub models: BTreeMap<String, Value>,
    /// The operators, as a graph: each node names the nodes it reads from.
    #[serde(skip_deserializing, default)]
    #[schemars(with = "Vec<serde_json::Value>")]
    pub nodes: Vec<NodeSpec>,
    /// Files the pipeline writes, by name (sinks refer to them).
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputSpec>,
}

fn default_version() -> u32 {
    FORMAT_VERSION
}

/// A map of scalars, each as its text (`out: 2024` is the var `2024`).
fn scalar_strings<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, String>, D::Error> {
    let raw = BTreeMap::<String, Value>::deserialize(d)?;
    raw.into_iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k, s)),
            Value::Number(n) => Ok((k, n.to_string())),
            Value::Bool(b) => Ok((k, b.to_string())),
            _ => Err(serde::de::Error::custom(format!(
                "var `{k}` must be a string, number or boolean"
            ))),
        })
        .collect()
}

/// A dataset in the BEIR layout.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Folder holding `corpus`, `queries` and `qrels/<split>` files.
    pub path: PathBuf,
    /// File format; `auto` looks at which files exist.
    #[serde(default)]
    pub format: InputFormat,
}

/// The file format of a dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputFormat {
    /// Parquet if `corpus.parquet` exists, else BEIR JSONL.
    #[default]
    Auto,
    /// `corpus.parquet`, `queries.parquet`, `qrels/<split>.parquet`.
    Parquet,
    /// BEIR's own: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.
    Beir,
}

/// A file the pipeline writes.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Where the Parquet file goes (written to a temporary name, renamed when complete).
    pub path: PathBuf,
    /// How vectors are stored.
    #[serde(default)]
    pub vectors: VectorLayout,
}

/// How an embedding column is stored in Parquet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VectorLayout {
    /// `FixedSizeList<Float32, dim>`: compact, and what numpy-minded readers expect.
    #[default]
    Fixed,
    /// `List<Float32>`: for readers that do not handle fixed-size lists.
    List,
}

/// One node as written: an id, the nodes it reads, its `type`, and the rest of its
/// mapping (its settings, which its kind reads).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeSpec {
    /// Unique name of the node; other nodes name it in their `inputs`. Letters, digits,
    /// `_` and `-`, not digits alone, so that `--set nodes.ID.key=...` can name it
    /// (checked where the file is read).
    pub id: String,
    /// The nodes whose output this node reads (`id` or `id.port`), by role or, in older
    /// pipelines, by position.
    pub inputs: Inputs,
    /// The operator type, as written.
    pub type_name: String,
    /// The node's other keys.
    pub settings: Value,
}

/// A node's inputs as written: a map from each input's role to the node (or `id.port`)
/// it reads, or a list in the roles' declared order (older pipelines; a node with one
/// input may keep the one-element list).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum Inputs {
    /// `inputs: [a, b]`.
    Listed(Vec<String>),
    /// `inputs: {role: a, other: b}`, in the order written.
    Named(Vec<(String, String)>),
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs::Listed(Vec::new())
    }
}

impl Inputs {
    /// How many inputs are written.
    pub fn len(&self) -> usize {
        match self {
            Inputs::Listed(v) => v.len(),
            Inputs::Named(v) => v.len(),
        }
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The nodes read, as written, in the order written.
    pub fn sources(&self) -> Vec<&str> {
        match self {
            Inputs::Listed(v) => v.iter().map(String::as_str).collect(),
            Inputs::Named(v) => v.iter().map(|(_, s)| s.as_str()).collect(),
        }
    }
}
