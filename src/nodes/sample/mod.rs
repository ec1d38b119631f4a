//! `sample`: hard negatives per query by exact search of the (corrected) cache, sharded
//! across the workers (`search`).

mod fresher;
mod gather;
mod search;
mod subset;

pub use fresher::MarginOn;
#[cfg(test)]
mod tests;

use arrow::datatypes::SchemaRef;
use candle_core::Device;
use freshen_operators::search::{NegativeSampler, Strategy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Settings;
use crate::dataflow::{BatchStream, BuildCx, Operator};
use crate::error::Result;
use crate::graph::needs::{self, Need};
use crate::graph::Per::Shard;
use crate::graph::{CheckCx, InputRole, NodeKind, Picks, PlanCx, Planned, TableName, MAIN};
use crate::models::Role;
use crate::store::tables::{self, col};

use crate::graph::ports::SUBSET;

/// Settings of `sample`: searches the cache for each query's hard negatives.
///
/// Writes per query `step`, `id`, `corpus_id`, `positive_score`, `negatives`, `scores`.
/// Port `subset`: the corrector's training subset (`id`), when `subset` is above 0.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Hard negatives per query (0: in-batch negatives only).
    #[serde(default = "default_k")]
    pub k: usize,
    /// `top_k` or `gumbel` (k drawn without replacement from softmax(β·score) over the
    /// top `pool`).
    #[serde(default)]
    pub strategy: Strategy,
    /// Inverse temperature of `gumbel` sampling.
    #[serde(default = "default_beta")]
    pub beta: f32,
    /// Skip the best `skip_top` non-positive candidates (likely unlabelled positives).
    #[serde(default)]
    pub skip_top: usize,
    /// Candidates considered before skipping and filtering (at least k + skip_top);
    /// default: 4 × (k + skip_top).
    #[serde(default)]
    pub pool: Option<usize>,
    /// Drop candidates scoring above `positive score − margin` (0 drops those that beat
    /// the positive: likely false negatives). Absent: no filter.
    #[serde(default)]
    pub margin: Option<f32>,
    /// Add the other queries' positives of the batch as negatives.
    #[serde(default = "default_true")]
    pub in_batch: bool,
    /// Cache rows scored per matmul (memory: batch × chunk scores).
    #[serde(default = "default_chunk")]
    #[schemars(range(min = 1))]
    pub chunk: usize,
    /// Retrieval as a latent variable (the retrieval-augmented model): the pairs are
    /// questions with no passage label (`table: answers`), nothing is excluded, and the
    /// `k` passages chosen are the query's retrieved set: the best is written as
    /// `corpus_id` (not a label) and the rest as `negatives`.
    #[serde(default)]
    pub latent: bool,
    /// Targets drawn at random each step (seeded, the same for any number of workers)
    /// and re-embedded only to train the corrector, so that h learns the drift of the
    /// whole corpus and not only of the targets the step touches: `subset` more target
    /// forwards a step (the ledger's `subset`). 0: none. Drawn only when the corrector
    /// trains (not for the stale or refreshing arms).
    #[serde(default)]
    pub subset: usize,
    /// Re-score each query's pool with the current corrector applied to the pool's rows
    /// of B, before choosing: the searched h(B) is up to `apply_every − 1` steps old, this
    /// costs b × pool corrector rows a step and no target forward. Needs the stale cache
    /// as the `stale` input and a `correct` node as `search`.
    #[serde(default)]
    pub rescore: bool,
    /// Which scores the guard (`margin`) compares: `searched` (the searched cache's,
    /// re-scored with `rescore`), `stale` (q·B), or `both`. `stale` and `both` need the
    /// stale cache as the `stale` input.
    #[serde(default)]
    pub margin_on: MarginOn,
}

fn default_k() -> usize {
    16
}

fn default_beta() -> f32 {
    20.0
}

fn default_true() -> bool {
    true
}

fn default_chunk() -> usize {
    freshen_operators::search::DEFAULT_CHUNK
}

impl Sample {
    /// The compute crate's sampler for these settings.
    pub fn sampler(&self) -> NegativeSampler {
        let need = self.k + self.skip_top;
        NegativeSampler {
            k: self.k,
            strategy: self.strategy,
            skip_top: self.skip_top,
            pool: self.pool.unwrap_or(4 * need),
            margin: self.margin,
            beta: self.beta,
        }
    }
}

impl Settings for Sample {
    const TYPE: &'static str = "sample";
    const ROLES: &'static [InputRole] = ROLES;

    fn validate(&self) -> freshen_operators::Result<()> {
        use freshen_operators::ranges::{at_least, field_error};
        at_least("chunk", self.chunk, 1)?;
        if self.latent {
            at_least("k", self.k, 1)?;
            let labelled = [
                ("in_batch", self.in_batch),
                ("margin", self.margin.is_some()),
                ("skip_top", self.skip_top > 0),
            ];
            if let Some((key, _)) = labelled.iter().find(|(_, set)| *set) {
                return Err(field_error(
                    key,
                    format!("`{key}` needs a positive, and `latent: true` has none (expected `in_batch: false`, no `margin`, `skip_top: 0`)"),
                ));
            }
        }
        self.sampler().validate()
    }
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] = &[
    InputRole::required("queries", "the query tower's `encode` node"),
    InputRole::required(
        "search",
        "the cache searched for negatives: a `cache`, or a `correct` node of the whole cache",
    ),
    InputRole::required(
        "pairs",
        "the `source` of training pairs (`table: pairs`; `table: answers` with `latent: true`)",
    ),
    InputRole::optional(
        "stale",
        "the `cache` node: the stale cache B that `rescore` and `margin_on` read",
    ),
];

impl NodeKind for Sample {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        let pairs = match self.latent {
            true => vec![needs::text(col::ID)],
            false => vec![
                needs::text(col::ID),
                needs::text(col::CORPUS_ID),
                needs::id_list(col::POSITIVES),
            ],
        };
        vec![
            ("queries", needs::embeddings()),
            ("search", needs::embeddings()),
            ("pairs", pairs),
            ("stale", needs::embeddings()),
        ]
    }

    fn outputs(&self, _cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        let mut out = vec![(MAIN.to_string(), tables::negatives_schema())];
        if self.subset > 0 {
            out.push((SUBSET.to_string(), tables::ids_schema()));
        }
        Ok(out)
    }

    fn picks(&self) -> Option<Picks> {
        Some(Picks {
            k: self.k,
            in_batch: self.in_batch,
            latent: self.latent,
        })
    }

    fn check(&self, cx: &CheckCx) -> Result<()> {
        let queries = cx
            .producer_model("queries", Role::Encoder)
            .is_some_and(|_| cx.producer_is("queries", "encode"));
        super::want(
            cx,
            "queries",
            queries,
            "an `encode` node with a model from `models:`: the query tower",
        )?;
        let cache = cx.producer_is("search", "cache")
            || (cx.producer_is("search", "correct") && !cx.producer_has("search", "sample"));
        super::want(
            cx,
            "search",
            cache,
            "a `cache`, or a `correct` node of the whole cache (no `sample` input): the cache to search",
        )?;
        let (table, what) = match self.latent {
            true => (
                TableName::Answers,
                "a `source` with `table: answers` (latent: true)",
            ),
            false => (TableName::Pairs, "a `source` with `table: pairs`"),
        };
        let pairs = cx.producer_reads("pairs", table);
        super::want(cx, "pairs", pairs, what)?;
        let fresher = self.rescore || self.margin_on != MarginOn::Searched;
        match (cx.has("stale"), fresher) {
            (true, _) => super::want(
                cx,
                "stale",
                cx.producer_is("stale", "cache"),
                "the `cache` node: the stale cache B",
            )?,
            (false, true) => {
                return Err(cx.error(
                    if self.rescore { "rescore" } else { "margin_on" },
                    "fresher selection reads the stale cache B (expected input `stale`: the `cache` node)",
                ))
            }
            _ => {}
        }
        if self.rescore && !cx.producer_is("search", "correct") {
            return Err(cx.error(
                "rescore",
                "`rescore` applies the corrector of the searched cache (expected a `correct` node as input `search`)",
            ));
        }
        Ok(())
    }

    fn check_files(&self, cx: &CheckCx, rows: bool, _seen: &mut Vec<String>) -> Result<()> {
        if rows {
            return Ok(());
        }
        if let Some(n) = super::upstream_rows(cx, "search") {
            let most = n.saturating_sub(1);
            if self.k + self.skip_top > most {
                return Err(cx.error(
                    "k",
                    format!(
                        "`k` + `skip_top` is {} but the corpus has {n} targets (expected at most {most}: a query's negatives are the other targets)",
                        self.k + self.skip_top
                    ),
                ));
            }
        }
        Ok(())
    }

    fn memory(&self, cx: &CheckCx) -> Vec<crate::graph::Cost> {
        let mut out = super::cache_copies(
            cx,
            "search",
            1.0,
            "its shard of the searched cache (a tensor)",
            Shard,
        );
        if let Some((b, _)) = cx
            .producer_index("pairs")
            .and_then(|p| super::pairs_per_step(cx.graph, p))
        {
            out.push(crate::graph::Cost {
                what: format!(
                    "node {}: {b} queries × {} scores per search block",
                    cx.this().id,
                    self.chunk
                ),
                bytes: (b * self.chunk) as f64 * crate::graph::memory::F32 * 2.0,
                at: Some(format!(
                    "{}.chunk",
                    crate::spec::LoadedSpec::node_path(cx.node)
                )),
                per: crate::graph::Per::Worker,
                phase: crate::graph::Phase::Step,
            });
        }
        out
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let graph = cx.graph;
        let check = cx.check();
        let device = match check
            .producer_model("queries", Role::Encoder)
            .and_then(|name| graph.models.get(&name))
        {
            Some(m) => m.common().device.open()?,
            None => freshen_operators::device::cpu(),
        };
        let trains = graph.training.as_ref().is_some_and(|t| t.corrector_trains);
        let searched = check.producer_index("search").unwrap_or(cx.node);
        // h is applied to the searched cache only when it trains and nothing refreshes B.
        let refreshing = graph.input(searched, "cache").is_some_and(|e| {
            let c = e.node;
            graph
                .training
                .as_ref()
                .is_some_and(|t| t.refresh(c).is_some())
        });
        let corrector = check
            .producer_model("search", Role::Corrector)
            .filter(|_| !refreshing);
        let fresher = (self.rescore || self.margin_on != MarginOn::Searched).then(|| {
            search::FresherPlan {
                // The current h re-scores only where the searched cache is h(B).
                corrector: corrector.filter(|_| self.rescore && trains),
                stale_scores: self.margin.is_some() && self.margin_on != MarginOn::Searched,
            }
        });
        Ok(Planned::operator(SampleOp {
            spec: self.clone(),
            seed: graph.spec.pipeline.seed,
            device,
            subset: if trains { self.subset } else { 0 },
            fresher,
            steps: cx.steps,
        }))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// A sample node at run time: searches on the query tower's device; `subset`: the
/// corrector's training subset per step (0 when the corrector does not train).
struct SampleOp {
    spec: Sample,
    seed: u64,
    device: Device,
    subset: usize,
    fresher: Option<search::FresherPlan>,
    /// Steps of the run (the searched shard is dropped after the last).
    steps: usize,
}

impl Operator for SampleOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let (out, subset) = search::sample(
            cx,
            self.spec.clone(),
            self.seed,
            self.device.clone(),
            (self.subset, self.fresher.clone(), self.steps),
        )?;
        // The port the graph declares is built even when the corrector does not train
        // (a refreshing cache): then it carries nothing, and its readers read no subset.
        let subset = match (subset, self.spec.subset > 0) {
            (Some(s), _) => Some(s),
            (None, true) => Some(timely::dataflow::operators::generic::operator::empty(
                cx.scope,
            )),
            (None, false) => None,
        };
        let mut ports = vec![(MAIN.to_string(), out)];
        ports.extend(subset.map(|s| (SUBSET.to_string(), s)));
        Ok(ports)
    }
}
