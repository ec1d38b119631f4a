//! What a node may ask of the nodes it reads, without importing their modules.
//!
//! A node module never imports another node module. When a node's checks, plan or memory
//! estimate need more of a producer than its type name ([`CheckCx::producer_is`]) or its
//! model ([`CheckCx::producer_model`]), they ask one of [`NodeKind`]'s questions, each
//! answered by the one type it concerns and `None` for every other:
//!
//! | question | answered by | what it tells |
//! |---|---|---|
//! | [`NodeKind::data_source`] | `source` | the table, the dataset, queries per step |
//! | [`NodeKind::picks`] | `sample` | negatives per query, in-batch, latent |
//! | [`NodeKind::cadence`] | `correct` | when h is applied to the whole cache |
//! | [`NodeKind::training_loss`] | `loss` | the softmax's β, the corrector's objective |
//! | [`NodeKind::world`] | `synthetic` | the synthetic world's shape |
//!
//! ```
//! use freshen::graph::{CheckCx, Graph, TableName};
//! use freshen::spec::LoadedSpec;
//!
//! let yaml = "
//! inputs: {d: {path: data/wordnet-sample}}
//! nodes:
//!   - {id: corpus, type: source, dataset: d}
//!   - {id: embed, type: encode, inputs: [corpus], model: {kind: hashed, dim: 8}}
//!   - {id: write, type: sink, inputs: [embed], output: vectors}
//! outputs: {vectors: {path: /tmp/vectors.parquet}}
//! ";
//! let graph = Graph::build(LoadedSpec::from_str("p.yaml".as_ref(), yaml, &[])?, freshen::nodes::KINDS)?;
//! // What `embed` may ask of its `corpus` input without knowing the `source` type.
//! let cx = CheckCx { graph: &graph, node: 1 };
//! let (source, at) = cx.producer_source("rows").expect("a source");
//! assert_eq!(source.table(), TableName::Corpus);
//! assert_eq!(source.row_count(&at), Some(10_000));
//! assert!(cx.producer("rows").unwrap().kind.picks().is_none());
//! # Ok::<(), freshen::Error>(())
//! ```

use super::CheckCx;
#[allow(unused_imports)] // named by the docs' links
use super::NodeKind;
use crate::error::Result;
use crate::store::beir::{Dataset, Table};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A table of a BEIR dataset, as a `source` names it.
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
    /// Training questions of one split, one batch per step, as `pairs` walks them: `id`,
    /// `text` and `answer` (the queries' `answer` column); no passage label (the qrels
    /// only say which queries the split holds).
    Answers,
}

impl TableName {
    /// Whether the table is read by split (qrels, and the per-step training tables).
    pub fn per_split(self) -> bool {
        matches!(self, Self::Qrels | Self::Pairs | Self::Answers)
    }

    /// Whether the source sends one batch per training step.
    pub fn per_step(self) -> bool {
        matches!(self, Self::Pairs | Self::Answers)
    }
}

/// A node that reads a table of a dataset (`source`): what its readers may ask of it.
/// `cx` is the source's own check context ([`CheckCx::producer_source`] gives it).
pub trait DataSource {
    /// The table it reads.
    fn table(&self) -> TableName;

    /// The dataset's file it reads (pairs and answers: the qrels of their split).
    fn data_table(&self) -> Table;

    /// Opens its dataset; a problem points at the dataset's `path`.
    fn open(&self, cx: &CheckCx) -> Result<Dataset>;

    /// Rows per batch; for a per-step table, queries per training step.
    fn batch_size(&self) -> usize;

    /// The mean bytes of the texts its rows carry, columns `fields` joined by a space,
    /// when the dataset can be read.
    fn text_bytes(&self, cx: &CheckCx, fields: &[String]) -> Option<f64>;

    /// The rows of its table, when the dataset can be read.
    fn row_count(&self, cx: &CheckCx) -> Option<usize> {
        self.open(cx).ok()?.row_count(&self.data_table()).ok()
    }

    /// Queries per training step (its batch, at most the split's rows), when the dataset
    /// can be read.
    fn per_step(&self, cx: &CheckCx) -> Option<usize> {
        Some(self.batch_size().min(self.row_count(cx)?.max(1)))
    }
}

/// What a node that picks targets for each query (`sample`) picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Picks {
    /// Negatives (or, latent, retrieved passages) per query.
    pub k: usize,
    /// Whether the other queries' positives are negatives too.
    pub in_batch: bool,
    /// Whether the picks are retrieved passages with no labelled positive.
    pub latent: bool,
}

impl Picks {
    /// The targets each query's step touches: its positive (unless latent) and its picks.
    pub fn per_query(self) -> usize {
        self.k + usize::from(!self.latent)
    }
}

/// When a `correct` node of the whole cache applies its corrector: from step `warmup`,
/// every `apply_every` steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// The first step it applies h at.
    pub warmup: usize,
    /// Steps between applications.
    pub apply_every: usize,
}

/// What a training `loss` node computes, as the training analysis and `update` need it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainingLoss {
    /// The inverse temperature of the retrieval softmax.
    pub beta: f64,
    /// The corrector's objective.
    pub corrector: freshen_operators::loss::CorrectorLoss,
}

/// What a reader reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Context {
    /// The retrieved passages.
    #[default]
    Retrieved,
    /// The question alone (no retrieval).
    Question,
}
