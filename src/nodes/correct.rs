//! `correct`: applies the corrector h to the stale cache B.
//!
//! With one input (a `cache`) it gives `sample` the cache to search: B itself at step 0,
//! during the corrector's warm-up and whenever a refresh replaced B; otherwise h(B),
//! recomputed every `apply_every` steps. With two inputs (`cache`, then a `sample` node)
//! it gives `loss` h(B[y]) for the targets a step touches, keeping the forward on the tape
//! so that the corrector's loss can train h.

use freshen_operators::host::HostRead;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::touched::{step_ids, touched_requests};
use super::Settings;
use crate::dataflow::shard::{fetch, Shard};
use crate::dataflow::{
    rows_of, BatchStream, BuildCx, EmbeddingRows, Operator, StepInputs, Stepwise, TapeEntry, Time,
};
use crate::error::{Error, Result};
use crate::graph::needs::{self, Need};
use crate::graph::{Cadence, CheckCx, InputRole, NodeKind, PlanCx, Planned, References, MAIN};
use crate::models::Role;
use crate::store::batch::{self, Batch};
use crate::store::tables::{self, col};

/// Settings of `correct`: applies the corrector h to stale embeddings.
///
/// Inputs: a `cache` (gives h(B), for search); or a `cache` and a `sample` node (gives
/// h(B[y]) of the step's touched targets, for the corrector's loss).
///
/// Writes `id`, `text_hash`, `embedding`; with a `sample` input `id`, `embedding`,
/// `stale`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Correct {
    /// A corrector of the pipeline's `models:`.
    pub model: String,
    /// Recompute h(B) over the whole cache every this many steps (it costs N MLP passes).
    #[serde(default = "default_apply_every")]
    #[schemars(range(min = 1))]
    pub apply_every: usize,
    /// Steps during which h trains but `sample` still sees the stale cache (h overshoots
    /// in its first steps).
    #[serde(default)]
    pub warmup: usize,
    /// Cache rows per MLP pass (memory: chunk × width floats).
    #[serde(default = "default_chunk")]
    #[schemars(range(min = 1))]
    pub chunk: usize,
}

fn default_apply_every() -> usize {
    10
}

fn default_chunk() -> usize {
    8192
}

impl Settings for Correct {
    const TYPE: &'static str = "correct";
    const ROLES: &'static [InputRole] = ROLES;

    fn validate(&self) -> freshen_operators::Result<()> {
        freshen_operators::ranges::at_least("apply_every", self.apply_every, 1)?;
        freshen_operators::ranges::at_least("chunk", self.chunk, 1)
    }
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] = &[
    InputRole::required(
        "cache",
        "the `cache` node: the stale cache B that h corrects",
    ),
    InputRole::optional(
        "sample",
        "a `sample` node: only its step's targets are corrected, for the loss",
    ),
    InputRole::implied(
        "subset",
        ("sample", crate::graph::ports::SUBSET),
        "the training subset the `sample` node draws (`subset`), corrected for h's loss",
    ),
];

impl NodeKind for Correct {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    fn references(&self) -> References {
        References {
            models: vec![("model", self.model.clone(), Role::Corrector)],
            ..References::default()
        }
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        vec![
            ("cache", needs::embeddings()),
            (
                "sample",
                vec![needs::text(col::CORPUS_ID), needs::id_list(col::NEGATIVES)],
            ),
        ]
    }

    fn outputs(&self, cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        let dim = cx.input_dim("cache");
        let schema = match cx.has("sample") {
            true => tables::corrected_rows_schema(dim),
            false => tables::embeddings_schema(dim),
        };
        Ok(vec![(MAIN.to_string(), schema)])
    }

    fn cadence(&self) -> Option<Cadence> {
        Some(Cadence {
            warmup: self.warmup,
            apply_every: self.apply_every,
        })
    }

    fn check(&self, cx: &CheckCx) -> Result<()> {
        let cache = cx.producer_is("cache", "cache");
        super::want(cx, "cache", cache, "a `cache` node: the stale embeddings")?;
        // A `sample` input is a sample node: only it writes the `negatives` its needs name.
        Ok(())
    }

    /// Without `sample`: its shard of B (the one copy every reader of the cache shares),
    /// and a new h(B) as batches while it replaces the searched one. With it: nothing of
    /// its own (it reads the same shard of B).
    fn memory(&self, cx: &CheckCx) -> Vec<crate::graph::Cost> {
        match cx.has("sample") {
            false => super::cache_copies(
                cx,
                "cache",
                2.0,
                "its shard of the cache, and of a new h(B) while it replaces the searched one",
                crate::graph::Per::Shard,
            ),
            true => Vec::new(),
        }
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let i = cx.node;
        let training = cx.graph.training.as_ref();
        let cache = cx.check().producer_index("cache").unwrap_or(i);
        let op = match cx.check().has("sample") {
            false => CorrectOp::Cache {
                spec: self.clone(),
                trained: training.is_some_and(|t| t.trains(&self.model)),
                refreshing: training.is_some_and(|t| t.refresh(cache).is_some()),
                steps: cx.steps,
            },
            true => CorrectOp::Touched {
                model: self.model.clone(),
                record: training.is_some_and(|t| t.records(i)),
            },
        };
        Ok(Planned::operator(op))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// The node's run-time form.
enum CorrectOp {
    /// The corrected cache for `sample`. `trained`: whether `update` trains the corrector
    /// (if not, h stays the identity and B passes through); `refreshing`: whether the
    /// cache refreshes (the corrector is then not applied: a refreshed cache is fresh);
    /// `steps`: the run's steps (nothing is searched after the last).
    Cache {
        spec: Correct,
        trained: bool,
        refreshing: bool,
        steps: usize,
    },
    /// h(B[y]) of the touched targets; with `record`, the forward goes on the tape.
    Touched { model: String, record: bool },
}

impl Operator for CorrectOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let out = match self {
            CorrectOp::Cache {
                spec,
                trained,
                refreshing,
                steps,
            } => correct_cache(cx, spec.clone(), *trained, *refreshing, *steps)?,
            CorrectOp::Touched { model, record } => correct_touched(cx, model.clone(), *record)?,
        };
        Ok(vec![(MAIN.to_string(), out)])
    }
}

/// What a cache's vectors become: `(vectors, rows) → new vectors`.
type MapVectors<'a> = &'a dyn Fn(&[f32], usize) -> Result<Vec<f32>>;

/// The held cache as embeddings batches: each held batch as it is (its buffers shared,
/// not copied), or with `map` applied to its vectors `chunk` rows at a time (a whole
/// h(B) is never held beside its batches).
fn cache_batches(
    cache: &Shard,
    chunk: usize,
    map: Option<MapVectors<'_>>,
) -> Result<Vec<(usize, Batch)>> {
    let mut out = Vec::new();
    for b in cache.batches() {
        let Some(map) = map else {
            out.push((0, Batch(b.clone())));
            continue;
        };
        let (values, d) = batch::vectors(b)?;
        let (ids, hashes) = (batch::strings(b, col::ID)?, batch::hashes(b)?);
        for start in (0..b.num_rows()).step_by(chunk.max(1)) {
            let end = (start + chunk).min(b.num_rows());
            let mapped = map(&values[start * d..end * d], end - start)?;
            out.push((
                0,
                Batch(batch::embeddings_batch(
                    (start..end).map(|r| ids.value(r).to_string()).collect(),
                    hashes.values()[start..end].to_vec(),
                    mapped,
                    d,
                )?),
            ));
        }
    }
    Ok(out)
}

/// The corrected cache for `sample`. Inputs: the cache (sharded: each worker corrects
/// its own rows, which are the rows its `sample` searches; the batches are the shard's
/// one copy, shared with the other readers of the cache), and the feedback.
fn correct_cache<'s>(
    cx: &mut BuildCx<'_, 's>,
    spec: Correct,
    trained: bool,
    refreshing: bool,
    steps: usize,
) -> Result<BatchStream<'s>> {
    let h = cx.models()?.corrector(&spec.model)?;
    let start = cx.start();
    let mut stale = Shard::default();
    let (cache, table) = cx.sharded_input("cache")?;
    let (run, me) = (cx.run.clone(), cx.scope.index());
    let logic = move |t: Time, inputs: StepInputs| {
        let replaced = stale.replace(&inputs["cache"], col::ID)?;
        if replaced {
            run.hold(me, &table, stale.len() as u64, stale.bytes());
        }
        let s = t as usize;
        let due = s < steps
            && trained
            && !refreshing
            && s >= spec.warmup
            && (s - spec.warmup).is_multiple_of(spec.apply_every.max(1));
        // A new B (at step 0, or a refresh) is searched as it is; so is the B a resumed
        // run starts with, unless the corrector is due at that step: then h(B), as the
        // uninterrupted run computed there (checkpoints are taken only where this holds).
        if (replaced || t == 0) && !(t > 0 && t == start && due) {
            return cache_batches(&stale, spec.chunk, None);
        }
        if !due || stale.is_empty() {
            return Ok(Vec::new());
        }
        // h chunk by chunk, straight into the output batches.
        let apply = |part: &[f32], rows: usize| -> Result<Vec<f32>> {
            let d = part.len() / rows.max(1);
            let part = candle_core::Tensor::from_slice(part, (rows, d), h.device())?;
            Ok(h.apply_chunked(&part, spec.chunk)?
                .flatten_all()?
                .host_vec1::<f32>()?)
        };
        cache_batches(&stale, spec.chunk, Some(&apply))
    };
    Ok(Stepwise::new("CorrectCache")
        .input("cache", cache)
        .input("feedback", cx.feedback()?)
        .build(cx, logic)
        .remove(0))
}

/// h(B[y]) for the targets each step touches, in the order `encode` embeds them, then
/// for this worker's targets of the `sample` node's training subset (its `subset` port)
/// that the step did not touch. Inputs: the rows B[y] fetched from their owners' shards
/// of the cache, the `sample` rows, the feedback, and the subset. With `record`, the
/// forward goes on the tape for `update`.
fn correct_touched<'s>(
    cx: &mut BuildCx<'_, 's>,
    model: String,
    record: bool,
) -> Result<BatchStream<'s>> {
    let state = cx.models()?;
    let h = state.corrector(&model)?;
    let sample = cx.input("sample")?;
    let subset = cx.input_if("subset");
    let cache = cx.sharded_input("cache")?;
    let requests = touched_requests(cx, sample.clone(), subset.clone());
    let fetched = fetch(cx, "cache", requests, cache);
    let tape_node = cx.node.clone();
    let logic = move |t: Time, inputs: StepInputs| {
        let mut stale = EmbeddingRows::default();
        for b in rows_of(&inputs["stale"]) {
            stale.push(b)?;
        }
        let index = stale.index();
        let ids = step_ids(&inputs["sample"], inputs.get("subset"))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = ids
            .iter()
            .map(|id| {
                index.get(id).copied().ok_or_else(|| {
                    Error::invariant(format!("target `{id}` is not in the cache input"))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let b = stale.gather(&rows, h.device())?;
        let corrected = if record {
            let recorded = h.forward_train(&b)?;
            let values = recorded.output.detach();
            let entry = TapeEntry {
                model: model.clone(),
                ids: ids.clone(),
                recorded,
            };
            state.record(&tape_node, t, entry);
            values
        } else {
            h.forward(&b)?.detach()
        };
        let d = stale.dim;
        let out = RecordBatch::try_new(
            tables::corrected_rows_schema(d),
            vec![
                Arc::new(StringArray::from(ids)) as ArrayRef,
                batch::vector_column(corrected.flatten_all()?.host_vec1::<f32>()?, d)?,
                batch::vector_column(b.flatten_all()?.host_vec1::<f32>()?, d)?,
            ],
        )?;
        Ok(vec![(0, Batch(out))])
    };
    Ok(Stepwise::new("CorrectTouched")
        .input("stale", fetched)
        .input("sample", sample)
        .input("feedback", cx.feedback()?)
        .input_if("subset", subset)
        .build(cx, logic)
        .remove(0))
}
