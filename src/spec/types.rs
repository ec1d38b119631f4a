//! The pipeline format: the structs a YAML pipeline deserialises into.
//!
//! The same structs give `freshen schema` its JSON Schema (through schemars), so the
//! editor's completion and `freshen check` can never disagree about what is allowed.
//! Every struct denies unknown keys: a typo is an error, not a silently ignored line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use super::training::*;

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
    /// Models shared by name between nodes (towers and correctors that `update` trains).
    #[serde(default)]
    pub models: BTreeMap<String, ModelSpec>,
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

/// The operators, tagged by `type`. (Settings structs are read once per run, so their
/// sizes do not matter.)
#[allow(clippy::large_enum_variant)]
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
    /// Applies the corrector h to the stale cache.
    Correct(CorrectSpec),
    /// Picks hard negatives per query by exact search of the (corrected) cache.
    Sample(SampleSpec),
    /// The retriever's and the corrector's losses, as gradients of the embeddings.
    Loss(LossSpec),
    /// Applies the gradients: AdamW for the encoders and for the corrector.
    Update(UpdateSpec),
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
            OperatorSpec::Correct(_) => "correct",
            OperatorSpec::Sample(_) => "sample",
            OperatorSpec::Loss(_) => "loss",
            OperatorSpec::Update(_) => "update",
        }
    }

    /// Every operator type, as written in YAML.
    pub const TYPES: &'static [&'static str] = &[
        "source", "encode", "cache", "correct", "sample", "loss", "update", "eval", "sink",
    ];
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
    /// Rows per Arrow batch; for `table: pairs`, queries per training step.
    #[serde(default = "default_source_batch")]
    pub batch_size: usize,
    /// For `table: pairs`: training steps (batches), cycling through the pairs in epochs;
    /// one epoch when absent.
    #[serde(default)]
    pub steps: Option<usize>,
    /// For `table: pairs`: reshuffle the pairs every epoch (seeded).
    #[serde(default = "default_shuffle")]
    pub shuffle: bool,
}

fn default_shuffle() -> bool {
    true
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
    /// Training pairs of one split, one batch per step: `id` (query), `text`, `corpus_id`
    /// (its positive) and `positives` (every relevant id, excluded from its negatives).
    Pairs,
}

/// Settings of `encode`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EncodeSpec {
    /// The encoder: a name from `models:` (shared, trainable) or a model written here.
    #[serde(default)]
    pub model: ModelRef,
    /// Columns whose text is embedded, joined by a space (empty values skipped).
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// Texts per forward pass.
    #[serde(default = "default_encode_batch")]
    pub batch_size: usize,
}

pub(crate) fn default_fields() -> Vec<String> {
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
    /// A pretrained BERT-family model from a sentence-transformers folder
    /// (`scripts/fetch-model.sh all-MiniLM-L6-v2`).
    Bert(BertModelSpec),
    /// A corrector network (only under `models:`, for `correct` nodes).
    Corrector(CorrectorModelSpec),
}

impl ModelSpec {
    /// The `kind` as written in YAML.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelSpec::Hashed(_) => "hashed",
            ModelSpec::Bert(_) => "bert",
            ModelSpec::Corrector(_) => "corrector",
        }
    }

    /// Whether `update` leaves this model as it is.
    pub fn frozen(&self) -> bool {
        match self {
            ModelSpec::Hashed(h) => h.frozen,
            ModelSpec::Bert(b) => b.frozen,
            ModelSpec::Corrector(c) => c.frozen,
        }
    }

    /// The factor on the update node's learning rates for this model.
    pub fn lr_scale(&self) -> f64 {
        match self {
            ModelSpec::Hashed(h) => h.lr_scale,
            ModelSpec::Bert(b) => b.lr_scale,
            ModelSpec::Corrector(c) => c.lr_scale,
        }
    }
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
    /// Under `models:`: never trained (e.g. `frozen: true` on the target tower trains the
    /// query side only, so the cache never goes stale).
    pub frozen: bool,
    /// Under `models:`: multiplies the update node's learning rates for this model.
    pub lr_scale: f64,
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
            frozen: false,
            lr_scale: 1.0,
        }
    }
}

/// Settings of a BERT-family encoder. The folder fixes the architecture, pooling and
/// normalisation; these settings override or add to it.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BertModelSpec {
    /// A sentence-transformers folder: config.json, tokenizer.json, model.safetensors and
    /// optionally 1_Pooling/config.json, modules.json, sentence_bert_config.json.
    pub path: PathBuf,
    /// `mean` or `cls`; default: what 1_Pooling/config.json says.
    #[serde(default)]
    pub pooling: Option<PoolingSpec>,
    /// L2-normalise the output; default: whether modules.json has a Normalize module.
    #[serde(default)]
    pub normalize: Option<bool>,
    /// Longest input in tokens; default: the folder's max_seq_length (256 for MiniLM).
    #[serde(default)]
    pub max_length: Option<usize>,
    /// Prepended to every text this model embeds (e.g. "query: " for E5 models).
    #[serde(default)]
    pub prefix: String,
    /// Token budget of one batch (texts × padded length); texts are sorted by length.
    #[serde(default = "default_batch_tokens")]
    pub batch_tokens: usize,
    /// At most this many texts per batch.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// When training: keep the embedding tables fixed.
    #[serde(default)]
    pub freeze_embeddings: bool,
    /// When training: keep the lowest this many transformer layers fixed.
    #[serde(default)]
    pub freeze_layers: usize,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (a GPU when built with `--features cuda` and
    /// one is present).
    #[serde(default = "default_device")]
    pub device: String,
    /// Under `models:`: never trained.
    #[serde(default)]
    pub frozen: bool,
    /// Under `models:`: multiplies the update node's learning rates for this model.
    #[serde(default = "default_lr_scale")]
    pub lr_scale: f64,
}

/// How a BERT model pools token vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolingSpec {
    /// Mean of the token vectors.
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
}

fn default_batch_tokens() -> usize {
    1024
}
fn default_max_batch() -> usize {
    256
}
fn default_device() -> String {
    "cpu".into()
}
fn default_lr_scale() -> f64 {
    1.0
}

/// Settings of `cache`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// Folder of the persistent store, shared between runs and pipelines.
    #[serde(default = "default_cache_path")]
    pub path: PathBuf,
    /// When training: re-embed the whole corpus with the current target tower every this
    /// many steps (the ANCE-style baseline; 1 is the oracle). Absent: never.
    #[serde(default)]
    pub refresh_every: Option<usize>,
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

/// Settings of `eval`.
///
/// Standalone, its inputs are, in order: query embeddings, target embeddings, and the qrels
/// of the split being evaluated. During training (with `models`), they are: the `update`
/// node, the corpus, the queries, the dev qrels, the test qrels and the stale cache; it then
/// evaluates on dev every `every` steps, keeps the best step, and reports test at it.
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
    /// During training: the models evaluated, by name.
    #[serde(default)]
    pub models: Option<EvalModels>,
    /// During training: evaluate on dev every this many steps (and after the last).
    #[serde(default)]
    pub every: Option<usize>,
    /// During training: the dev metric that picks the best step (`mrr_at_10`,
    /// `ndcg_at_10` or `recall_at_K`).
    #[serde(default = "default_select_by")]
    pub select_by: String,
    /// During training: corpus columns the target tower embeds.
    #[serde(default = "default_target_fields")]
    pub fields: Vec<String>,
    /// During training: query columns the query tower embeds.
    #[serde(default = "super::types::default_fields")]
    pub query_fields: Vec<String>,
    /// During training: folder for the best step's weights (safetensors per model).
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// During training: where to write the corpus embedded by the best target tower.
    #[serde(default)]
    pub embeddings: Option<PathBuf>,
    /// During training: at each dev evaluation, also compare the stale and corrected
    /// caches with the fresh one (top-k overlap, softmax KL).
    #[serde(default)]
    pub diagnostics: bool,
}

fn default_select_by() -> String {
    "mrr_at_10".to_string()
}

fn default_target_fields() -> Vec<String> {
    vec!["title".to_string(), "text".to_string()]
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
