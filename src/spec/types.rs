//! The pipeline format: the structs a YAML pipeline deserialises into.
//!
//! The same structs give `freshen schema` its JSON Schema (through schemars), so the
//! editor's completion and `freshen check` can never disagree about what is allowed.
//! Every struct denies unknown keys: a typo is an error, not a silently ignored line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    /// Variables for `${NAME}` interpolation in strings (the environment is the fallback).
    #[serde(default)]
    pub vars: BTreeMap<String, String>,
    /// Datasets the pipeline reads, by name.
    #[serde(default)]
    pub inputs: BTreeMap<String, InputSpec>,
    /// The operators, as a graph: each node names the nodes it reads from.
    pub nodes: Vec<NodeSpec>,
    /// Files the pipeline writes, by name (sinks refer to them).
    #[serde(default)]
    pub outputs: BTreeMap<String, OutputSpec>,
}

fn default_version() -> u32 {
    1
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

/// One node of the graph: an id, the nodes it reads, and its operator with settings.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct NodeSpec {
    /// Unique name of the node; other nodes name it in their `inputs`.
    pub id: String,
    /// Ids of the nodes whose output this node reads.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// The operator (`type`) and its settings.
    #[serde(flatten)]
    pub op: OperatorSpec,
}

/// The operators, tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OperatorSpec {
    /// Reads a table of a dataset in batches.
    Source(SourceSpec),
    /// Embeds the text of its input rows.
    Encode(EncodeSpec),
    /// Keeps embeddings in a persistent store so unchanged rows are never re-embedded.
    Cache(CacheSpec),
    /// Writes its input to a Parquet output.
    Sink(SinkSpec),
    /// Ranks targets for queries by exact search and scores the ranking against qrels.
    Eval(EvalSpec),
}

impl OperatorSpec {
    /// The `type` name as written in YAML.
    pub fn type_name(&self) -> &'static str {
        match self {
            OperatorSpec::Source(_) => "source",
            OperatorSpec::Encode(_) => "encode",
            OperatorSpec::Cache(_) => "cache",
            OperatorSpec::Sink(_) => "sink",
            OperatorSpec::Eval(_) => "eval",
        }
    }

    /// Every operator type, as written in YAML.
    pub const TYPES: &'static [&'static str] = &["source", "encode", "cache", "sink", "eval"];
}

/// Settings of `source`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    /// Name of an entry of the pipeline's `inputs`.
    pub dataset: String,
    /// Which table to read.
    #[serde(default)]
    pub table: TableName,
    /// For `table: qrels`, the split (`train`, `dev`, `test`, ...).
    #[serde(default)]
    pub split: Option<String>,
    /// Rows per Arrow batch.
    #[serde(default = "default_source_batch")]
    pub batch_size: usize,
}

fn default_source_batch() -> usize {
    1024
}

/// A table of a BEIR dataset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TableName {
    /// `id`, `title`, `text`.
    #[default]
    Corpus,
    /// `id`, `text`.
    Queries,
    /// `query_id`, `corpus_id`, `score` of one split.
    Qrels,
}

/// Settings of `encode`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncodeSpec {
    /// The encoder.
    #[serde(default)]
    pub model: ModelSpec,
    /// Columns whose text is embedded, joined by a space (empty values skipped).
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// Texts per forward pass.
    #[serde(default = "default_encode_batch")]
    pub batch_size: usize,
}

fn default_fields() -> Vec<String> {
    vec!["text".to_string()]
}

fn default_encode_batch() -> usize {
    256
}

/// Which encoder to run, tagged by `kind`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ModelSpec {
    /// Built in, no download: hashed word and character n-grams → embedding bag → linear.
    Hashed(HashedModelSpec),
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec::Hashed(HashedModelSpec::default())
    }
}

/// Settings of the built-in hashed n-gram encoder.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HashedModelSpec {
    /// Rows of the feature table (hash buckets).
    pub buckets: usize,
    /// Width of the embedding bag.
    pub bag_dim: usize,
    /// Width of the output embeddings.
    pub dim: usize,
    /// Longest word n-gram used as a feature.
    pub word_ngrams: usize,
    /// Shortest and longest character n-gram, `[min, max]`.
    pub char_ngrams: [usize; 2],
    /// Lower-case text before hashing.
    pub lowercase: bool,
    /// L2-normalise the output.
    pub normalize: bool,
    /// Seed of the initial weights; the pipeline's seed when absent.
    pub seed: Option<u64>,
}

impl Default for HashedModelSpec {
    fn default() -> Self {
        Self {
            buckets: 1 << 18,
            bag_dim: 256,
            dim: 128,
            word_ngrams: 1,
            char_ngrams: [3, 3],
            lowercase: true,
            normalize: true,
            seed: None,
        }
    }
}

/// Settings of `cache`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// Folder of the persistent store, shared between runs and pipelines.
    #[serde(default = "default_cache_path")]
    pub path: PathBuf,
}

fn default_cache_path() -> PathBuf {
    PathBuf::from(".freshen/cache")
}

/// Settings of `sink`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// Name of an entry of the pipeline's `outputs`.
    pub output: String,
}

/// Settings of `eval`. Its inputs are, in order: query embeddings, target embeddings, and
/// the qrels of the split being evaluated.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalSpec {
    /// Cut-offs of Recall@k (BEIR and DPR report 1, 5, 20, 100).
    #[serde(default = "default_recall_at")]
    pub recall_at: Vec<usize>,
    /// Results ranked and written per query.
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Queries per search batch (memory: batch × chunk scores).
    #[serde(default = "default_eval_batch")]
    pub batch_size: usize,
    /// Where to write the ranking as a TREC run file (`qid Q0 docid rank score tag`).
    #[serde(default)]
    pub trec: Option<PathBuf>,
    /// Where to write the ranking as Parquet (`query_id`, `rank`, `corpus_id`, `score`).
    #[serde(default)]
    pub rankings: Option<PathBuf>,
    /// The run tag of the TREC file (its last column).
    #[serde(default = "default_tag")]
    pub tag: String,
}

fn default_recall_at() -> Vec<usize> {
    vec![1, 5, 20, 100]
}

fn default_depth() -> usize {
    100
}

fn default_eval_batch() -> usize {
    256
}

fn default_tag() -> String {
    "freshen".to_string()
}
