//! The names of the ports and columns that more than one node type uses, in one place
//! that every node module may import: a node module never imports another for a name.
//!
//! A port is an extra output of a node, read as `id.port` (`loss.stats`). Ports whose
//! names start with `_` are wired by freshen between a node and the node it feeds (an
//! `encode` and its `cache`); a pipeline does not name them.

pub use super::needs::MAIN;

/// `loss.stats`: the step's losses, which `update` reads.
pub const STATS: &str = "stats";
/// `eval.steps`: a training evaluation's metrics, one row per step.
pub const STEPS: &str = "steps";
/// `sample.subset`: the corrector's training subset, per step the drawn targets each
/// worker owns (`id`).
pub const SUBSET: &str = "subset";
/// A cached `encode`'s keys of the store's rows still current, for its `cache`.
pub const REUSED: &str = "_reused";
/// A cached `encode`'s corpus re-embedded at a refresh, for its `cache`.
pub const REFRESH: &str = "_refresh";
/// A touched `encode`'s fresh embeddings of the training subset, for the `loss`.
pub const TOUCHED_SUBSET: &str = "_subset";
/// `fit.targets`: the synthetic study's stale, true and corrected target vectors.
pub const TARGETS: &str = "targets";
/// `fit.softmax`: the synthetic study's softmaxes of one query.
pub const SOFTMAX: &str = "softmax";
/// `synthetic.queries`: the synthetic world's queries.
pub const QUERIES: &str = "queries";

/// The column of a `read` node's log-likelihoods of each retrieved passage.
pub const LOG_LIK: &str = "log_lik";
/// The column of a synthetic world's true target vectors.
pub const FRESH: &str = "fresh";
/// The column of a synthetic query's split (`train` or `test`).
pub const SPLIT: &str = "split";
/// The column of a synthetic query's vector.
pub const VECTOR: &str = "vector";
