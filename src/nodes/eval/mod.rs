//! `eval`: ranks targets for queries by exact search and scores the ranking against
//! qrels.
//!
//! Standalone, its inputs are the `queries`' and the `targets`' embeddings and the
//! `judgements` of the split being evaluated ([`standalone`]). During training (with
//! `models`), they are the `trained` steps (the `update` node), the `corpus`, the
//! `queries`, the `dev` and `test` qrels and the stale `cache`; it then evaluates on dev
//! every `every` steps, keeps the best step, and reports test at it ([`training`]).

mod answers;
mod evaluator;
mod merge;
mod rank;
mod shard;
mod standalone;
mod training;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use arrow::datatypes::SchemaRef;
use candle_core::Device;
use freshen_operators::ranges::{at_least, field_error};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Settings;
use crate::dataflow::{BatchStream, BuildCx, Operator};
use crate::error::{Error, Result};
use crate::graph::needs::{self, Need};
use crate::graph::{
    Access, CheckCx, Context, FileUse, InputRole, NodeKind, PlanCx, Planned, References, TableName,
    MAIN,
};
use crate::models::Role;
use crate::store::tables;
use evaluator::EvalPlan;

use crate::graph::ports::STEPS;

/// Settings of `eval`: retrieval metrics; in training, the dev evaluation that picks
/// the best step and the test evaluation at it.
///
/// Writes the metrics; in training the summary row, and port `steps`: one row per step.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Eval {
    /// Cut-offs of Recall@k (BEIR and DPR report 1, 5, 20, 100).
    #[serde(default = "default_recall_at")]
    pub recall_at: Vec<usize>,
    /// Results ranked and written per query.
    #[serde(default = "default_depth")]
    #[schemars(range(min = 1))]
    pub depth: usize,
    /// Queries per search batch (memory: batch × chunk scores).
    #[serde(default = "default_batch")]
    #[schemars(range(min = 1))]
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
    /// During training: evaluate on dev every this many steps (and after the last). Each
    /// evaluation re-embeds the whole corpus with the target tower (what that costs with
    /// MiniLM on the CPU: docs/writing-pipelines.md).
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub every: Option<usize>,
    /// During training: also score the starting model on dev, before the first step, as
    /// a candidate for the best step (step 0), so that a run never ships a model its own
    /// dev metric rates below the one it started from; costs one more dev evaluation.
    /// Needs `every` above 1 (with `every: 1` the first dev evaluation is after step 1).
    #[serde(default = "default_start")]
    pub start: bool,
    /// During training: the dev metric that picks the best step (`mrr_at_10`,
    /// `ndcg_at_10` or `recall_at_K`).
    #[serde(default = "default_select_by")]
    pub select_by: String,
    /// During training: corpus columns the target tower embeds.
    #[serde(default = "default_target_fields")]
    pub fields: Vec<String>,
    /// During training: query columns the query tower embeds.
    #[serde(default = "crate::nodes::text::default_fields")]
    pub query_fields: Vec<String>,
    /// During training: folder for the best step's weights (safetensors per model).
    #[serde(default)]
    pub checkpoint: Option<PathBuf>,
    /// During training: where to write the corpus embedded by the best target tower.
    #[serde(default)]
    pub embeddings: Option<PathBuf>,
    /// During training with `models.corrector`: where to write the corrected starting
    /// cache h(B) of the best step (`id`, `text_hash`, `embedding`), the index that the
    /// query tower's checkpoint searches with no re-embedding of the corpus at all.
    #[serde(default)]
    pub corrected_embeddings: Option<PathBuf>,
    /// During training: at each dev evaluation, also compare the stale and corrected
    /// caches with the fresh one (top-k overlap, softmax KL).
    #[serde(default)]
    pub diagnostics: bool,
    /// During training with `models.reader`: passages the reader reads per question for
    /// the answer metrics (`exact_match`, `answer_nll`).
    #[serde(default = "default_answer_k")]
    #[schemars(range(min = 1))]
    pub answer_k: usize,
    /// During training with `models.reader`: what the reader reads, as the `read` node's
    /// `context` (`retrieved` passages, or the `question` alone: no retrieval).
    #[serde(default)]
    pub answer_context: Context,
}

fn default_start() -> bool {
    true
}

fn default_answer_k() -> usize {
    8
}

/// The models a training-time `eval` node evaluates, by name.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalModels {
    /// The query tower.
    pub query: String,
    /// The target tower.
    pub target: String,
    /// The corrector, for evaluating against the corrected cache with no re-embedding.
    #[serde(default)]
    pub corrector: Option<String>,
    /// The reader of a retrieval-augmented model: adds the answer metrics
    /// (`exact_match`, `answer_nll`) on the queries' `answer` column.
    #[serde(default)]
    pub reader: Option<String>,
}

fn default_select_by() -> String {
    "mrr_at_10".to_string()
}

fn default_target_fields() -> Vec<String> {
    vec!["title".to_string(), "text".to_string()]
}

fn default_recall_at() -> Vec<usize> {
    freshen_operators::metrics::DEFAULT_RECALL_CUTOFFS.to_vec()
}

fn default_depth() -> usize {
    100
}

fn default_batch() -> usize {
    256
}

fn default_tag() -> String {
    "freshen".to_string()
}

impl Settings for Eval {
    const TYPE: &'static str = "eval";
    const ROLES: &'static [InputRole] = ALL_ROLES;

    fn validate(&self) -> freshen_operators::Result<()> {
        at_least("depth", self.depth, 1)?;
        at_least("batch_size", self.batch_size, 1)?;
        if self.recall_at.is_empty() || self.recall_at.contains(&0) {
            return Err(field_error(
                "recall_at",
                format!(
                    "`recall_at` is {:?} (expected cut-offs of at least 1)",
                    self.recall_at
                ),
            ));
        }
        if let Some(every) = self.every {
            at_least("every", every, 1)?;
        }
        let reader = self.models.as_ref().is_some_and(|m| m.reader.is_some());
        let corrector = self.models.as_ref().is_some_and(|m| m.corrector.is_some());
        if self.corrected_embeddings.is_some() && !corrector {
            return Err(field_error(
                "corrected_embeddings",
                "`corrected_embeddings` writes h(B) and needs a corrector (expected models.corrector)",
            ));
        }
        at_least("answer_k", self.answer_k, 1)?;
        let known = self.select_by == "mrr_at_10"
            || self.select_by == "ndcg_at_10"
            || (reader && self.select_by == "exact_match")
            || self
                .select_by
                .strip_prefix("recall_at_")
                .and_then(|k| k.parse::<usize>().ok())
                .is_some_and(|k| self.recall_at.contains(&k));
        if !known {
            return Err(field_error(
                "select_by",
                format!(
                    "`select_by` is `{}` (expected mrr_at_10, ndcg_at_10, recall_at_K for a K of recall_at, or exact_match with models.reader)",
                    self.select_by
                ),
            ));
        }
        Ok(())
    }
}

/// Its inputs, by role, without `models` (embeddings already made).
pub(crate) const ROLES: &[InputRole] = &[
    InputRole::required("queries", "the queries' embeddings (`id`, `embedding`)"),
    InputRole::required(
        "targets",
        "the targets' embeddings: a `cache` or an `encode` node",
    ),
    InputRole::required(
        "judgements",
        "the `source` of relevance judgements (`table: qrels`)",
    ),
];

/// Its inputs, by role, with `models` (while training).
pub(crate) const TRAINING_ROLES: &[InputRole] = &[
    InputRole::required(
        "trained",
        "the `update` node: its steps say when to evaluate",
    ),
    InputRole::required(
        "corpus",
        "the corpus `source`, re-embedded at each evaluation",
    ),
    InputRole::required(
        "queries",
        "the `source` of the queries' texts (`table: queries`)",
    ),
    InputRole::required(
        "dev",
        "the `source` of dev judgements (`table: qrels`, `split: dev`)",
    ),
    InputRole::required(
        "test",
        "the `source` of test judgements (`table: qrels`, `split: test`)",
    ),
    InputRole::required(
        "cache",
        "the `cache` node: the stale cache B, for the corrected metrics",
    ),
];

/// Every role it may take (for the schema and the reference).
pub(crate) const ALL_ROLES: &[InputRole] = &[
    InputRole::required(
        "queries",
        "the queries: their embeddings, or with `models` the `source` of their texts",
    ),
    InputRole::required("targets", "without `models`: the targets' embeddings"),
    InputRole::required(
        "judgements",
        "without `models`: the `source` of relevance judgements",
    ),
    InputRole::required("trained", "with `models`: the `update` node"),
    InputRole::required(
        "corpus",
        "with `models`: the corpus `source`, re-embedded at each evaluation",
    ),
    InputRole::required("dev", "with `models`: the `source` of dev judgements"),
    InputRole::required("test", "with `models`: the `source` of test judgements"),
    InputRole::required("cache", "with `models`: the `cache` node (stale cache B)"),
];

impl NodeKind for Eval {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn roles(&self) -> &'static [InputRole] {
        match self.models {
            Some(_) => TRAINING_ROLES,
            None => ROLES,
        }
    }

    fn references(&self) -> References {
        let mut models = Vec::new();
        if let Some(m) = &self.models {
            models.push(("models.query", m.query.clone(), Role::Encoder));
            models.push(("models.target", m.target.clone(), Role::Encoder));
            if let Some(h) = &m.corrector {
                models.push(("models.corrector", h.clone(), Role::Corrector));
            }
            if let Some(r) = &m.reader {
                models.push(("models.reader", r.clone(), Role::Reader));
            }
        }
        References {
            models,
            ..References::default()
        }
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        match self.models {
            Some(_) => vec![
                ("trained", vec![needs::step()]),
                ("corpus", needs::rows(&self.fields)),
                ("queries", needs::rows(&self.query_fields)),
                ("dev", needs::qrels()),
                ("test", needs::qrels()),
                ("cache", needs::embeddings()),
            ],
            None => vec![
                ("queries", needs::embeddings()),
                ("targets", needs::embeddings()),
                ("judgements", needs::qrels()),
            ],
        }
    }

    fn outputs(&self, _cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        Ok(match self.models {
            Some(_) => vec![
                (MAIN.to_string(), tables::summary_schema(&self.recall_at)),
                (
                    STEPS.to_string(),
                    tables::eval_steps_schema(&self.recall_at),
                ),
            ],
            None => vec![(MAIN.to_string(), tables::metrics_schema(&self.recall_at))],
        })
    }

    fn check(&self, cx: &CheckCx) -> Result<()> {
        if self.models.is_none() {
            return Ok(());
        }
        super::want(
            cx,
            "trained",
            cx.producer_is("trained", "update"),
            "the `update` node",
        )?;
        super::want(
            cx,
            "corpus",
            cx.producer_reads("corpus", TableName::Corpus),
            "a corpus `source`",
        )?;
        super::want(
            cx,
            "queries",
            cx.producer_reads("queries", TableName::Queries),
            "a queries `source`",
        )?;
        super::want(
            cx,
            "dev",
            cx.producer_reads("dev", TableName::Qrels),
            "a qrels `source` of the dev split",
        )?;
        super::want(
            cx,
            "test",
            cx.producer_reads("test", TableName::Qrels),
            "a qrels `source` of the test split",
        )?;
        let cache = cx.producer_is("cache", "cache");
        super::want(cx, "cache", cache, "the `cache` node: the stale embeddings")
    }

    /// A cut-off above the corpus size is allowed (the metric then counts every target)
    /// but warned about: it is almost always a setting meant for a larger corpus.
    fn check_files(&self, cx: &CheckCx, rows: bool, _seen: &mut Vec<String>) -> Result<()> {
        if rows {
            return Ok(());
        }
        let targets = match self.models {
            Some(_) => "corpus",
            None => "targets",
        };
        if let Some(n) = super::upstream_rows(cx, targets) {
            if let Some(k) = self.recall_at.iter().find(|&&k| k > n) {
                tracing::warn!(
                    node = cx.this().id.as_str(),
                    "recall_at {k} is more than the corpus's {n} targets: Recall@{k} counts every target"
                );
            }
        }
        Ok(())
    }

    fn files(&self, cx: &CheckCx) -> Vec<FileUse> {
        let at = |key: &str| format!("{}.{key}", crate::spec::LoadedSpec::node_path(cx.node));
        let mut out = Vec::new();
        for (key, path, access) in [
            ("trec", &self.trec, Access::Write),
            ("rankings", &self.rankings, Access::Write),
            ("embeddings", &self.embeddings, Access::Write),
            (
                "corrected_embeddings",
                &self.corrected_embeddings,
                Access::Write,
            ),
            ("checkpoint", &self.checkpoint, Access::WriteFolder),
        ] {
            if let Some(p) = path {
                out.push(FileUse {
                    at: at(key),
                    path: p.clone(),
                    access,
                });
            }
        }
        out
    }

    fn memory(&self, cx: &CheckCx) -> Vec<crate::graph::Cost> {
        match self.models {
            // At the end: its shard re-embedded, B's rows aligned to it and corrected,
            // and each written output's rows on their way to the leader's file.
            Some(_) => {
                let outputs = [&self.embeddings, &self.corrected_embeddings]
                    .iter()
                    .filter(|o| o.is_some())
                    .count();
                super::cache_copies(
                    cx,
                    "cache",
                    3.0 + outputs as f64,
                    "its shard re-embedded, of B aligned to it and corrected, and of the written embeddings",
                    crate::graph::Per::Shard,
                )
            }
            None => super::cache_copies(
                cx,
                "targets",
                2.0,
                "the targets and their tensor",
                crate::graph::Per::Leader,
            ),
        }
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let g = cx.graph;
        let device_of = |name: &str| -> Result<Device> {
            match g.models.get(name) {
                Some(m) => Ok(m.common().device.open()?),
                None => Ok(freshen_operators::device::cpu()),
            }
        };
        let op = match &self.models {
            None => EvalOp::Standalone {
                spec: self.clone(),
                device: freshen_operators::device::cpu(),
            },
            Some(models) => {
                let training = g
                    .training
                    .as_ref()
                    .ok_or_else(|| Error::invariant("a training eval outside a training graph"))?;
                let answers = match &models.reader {
                    Some(_) => {
                        let check = cx.check();
                        let (queries, at) = check
                            .producer_source("queries")
                            .ok_or_else(|| Error::invariant("a training eval without queries"))?;
                        let ds = queries.open(&at)?;
                        crate::store::pairs::read_answers(&ds)
                            .map_err(|e| e.with_node(&cx.this().id))?
                    }
                    None => Default::default(),
                };
                let plan = EvalPlan {
                    answers: std::sync::Arc::new(answers),
                    steps: cx.steps,
                    beta: training.beta,
                    run: g.spec.pipeline.name.clone().unwrap_or_else(|| "run".into()),
                    settings: g.settings_json().to_string(),
                    device: device_of(&models.target)?,
                };
                EvalOp::Training {
                    spec: self.clone(),
                    models: models.clone(),
                    plan,
                }
            }
        };
        Ok(Planned::operator(op))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// The node's run-time form.
enum EvalOp {
    /// Once, over complete inputs.
    Standalone { spec: Eval, device: Device },
    /// Every `every` steps of a training run, and test at the end.
    Training {
        spec: Eval,
        models: EvalModels,
        plan: EvalPlan,
    },
}

impl Operator for EvalOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        match self {
            EvalOp::Standalone { spec, device } => {
                let out = standalone::eval(cx, spec.clone(), device.clone())?;
                Ok(vec![(MAIN.to_string(), out)])
            }
            EvalOp::Training { spec, models, plan } => {
                let ticks = cx.assembly.ticks.take().ok_or_else(|| {
                    Error::invariant("a training eval built before the update node")
                })?;
                let [summary, steps, ticks] =
                    training::train_eval(cx, spec.clone(), models.clone(), plan.clone(), ticks)?;
                cx.assembly.ticks = Some(ticks);
                Ok(vec![
                    (MAIN.to_string(), summary),
                    (STEPS.to_string(), steps),
                ])
            }
        }
    }
}
