//! `correct`: the corrector h over the stale cache B.
//!
//! [`correct_cache`] gives `sample` the cache to search: B itself at step 0, during the
//! corrector's warm-up and whenever a refresh replaced B; otherwise h(B), recomputed every
//! `apply_every` steps. [`correct_touched`] gives `loss` h(B[y]) for the targets a step
//! touches, keeping the forward on the tape so that the corrector's loss can train h.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use candle_core::Device;
use timely::dataflow::Scope;

use super::sample::touched_ids;
use super::{rows_of, TapeEntry, TrainState};
use crate::error::{Error, Result};
use crate::runtime::dataflow::{BatchStream, Time};
use crate::runtime::shared::Shared;
use crate::runtime::stepwise::{stepwise, Route};
use crate::spec::CorrectSpec;
use crate::store::batch::{self, Batch};
use crate::store::tables;
use crate::store::vectors::Vectors;

/// Rows per emitted batch of a whole cache.
const CACHE_BATCH_ROWS: usize = 8192;

/// Replaces `cache` by the rows of `batches` if there are any; returns whether it did.
fn replace_cache(cache: &mut Vectors, batches: &[Batch]) -> Result<bool> {
    let mut fresh = Vectors::default();
    for b in rows_of(batches) {
        fresh.push(b)?;
    }
    if fresh.is_empty() {
        return Ok(false);
    }
    *cache = fresh;
    Ok(true)
}

/// The cache as embeddings batches, with `values` in place of the stored vectors.
fn cache_batches(cache: &Vectors, values: &[f32]) -> Result<Vec<(usize, Batch)>> {
    let d = cache.dim;
    let mut out = Vec::new();
    for start in (0..cache.len()).step_by(CACHE_BATCH_ROWS) {
        let end = (start + CACHE_BATCH_ROWS).min(cache.len());
        out.push((
            0,
            Batch(batch::embeddings_batch(
                cache.ids[start..end].to_vec(),
                cache.hashes[start..end].to_vec(),
                values[start * d..end * d].to_vec(),
                d,
            )?),
        ));
    }
    Ok(out)
}

/// The corrected cache for `sample`. Inputs: the cache (broadcast: every worker searches
/// all of it), the feedback. `trained`: whether `update` trains the corrector (if not, h
/// stays the identity and B passes through); `refreshing`: whether the cache refreshes (the
/// corrector is then not applied: a refreshed cache is fresh); `steps`: the run's steps
/// (nothing is searched after the last).
#[allow(clippy::too_many_arguments)]
pub fn correct_cache<'s>(
    scope: Scope<'s, Time>,
    cache: BatchStream<'s>,
    feedback: BatchStream<'s>,
    spec: CorrectSpec,
    trained: bool,
    refreshing: bool,
    steps: usize,
    state: Rc<TrainState>,
    node: Rc<str>,
    shared: Arc<Shared>,
) -> BatchStream<'s> {
    let h = state.corrector(&spec.model);
    let mut stale = Vectors::default();
    let logic = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let h = h.as_ref().map_err(|e| Error::Other(e.to_string()))?;
        let replaced = replace_cache(&mut stale, &inputs[0])?;
        if replaced || t == 0 {
            return cache_batches(&stale, &stale.values);
        }
        let t = t as usize;
        let due = t < steps
            && trained
            && !refreshing
            && t >= spec.warmup
            && (t - spec.warmup).is_multiple_of(spec.apply_every.max(1));
        if !due || stale.is_empty() {
            return Ok(Vec::new());
        }
        let b = stale.tensor(&Device::Cpu)?;
        let corrected = h
            .apply_chunked(&b, spec.chunk)?
            .flatten_all()
            .and_then(|x| x.to_vec1::<f32>())
            .map_err(freshen_operators::Error::from)?;
        cache_batches(&stale, &corrected)
    };
    stepwise(
        scope,
        "CorrectCache",
        vec![(cache, Route::Local), (feedback, Route::Local)],
        1,
        logic,
        None,
        node,
        shared,
    )
    .remove(0)
}

/// h(B[y]) for the targets each step touches, in the order `encode` embeds them. Inputs:
/// the cache (broadcast), the `sample` rows, the feedback. With `record`, the forward goes
/// on the tape for `update`.
#[allow(clippy::too_many_arguments)]
pub fn correct_touched<'s>(
    scope: Scope<'s, Time>,
    cache: BatchStream<'s>,
    negatives: BatchStream<'s>,
    feedback: BatchStream<'s>,
    model: String,
    record: bool,
    state: Rc<TrainState>,
    node: Rc<str>,
    shared: Arc<Shared>,
) -> BatchStream<'s> {
    let h = state.corrector(&model);
    let mut stale = Vectors::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    let tape_node = node.clone();
    let logic = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let h = h.as_ref().map_err(|e| Error::Other(e.to_string()))?;
        if replace_cache(&mut stale, &inputs[0])? {
            index = stale.index();
        }
        let ids = touched_ids(&inputs[1])?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows =
            ids.iter()
                .map(|id| {
                    index.get(id).copied().ok_or_else(|| {
                        Error::Other(format!("target `{id}` is not in the cache input"))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
        let b = stale.gather(&rows, &Device::Cpu)?;
        let corrected = if record {
            let recorded = h.forward_train(&b)?;
            let values = recorded.output.detach();
            state.record(
                &tape_node,
                t,
                TapeEntry {
                    model: model.clone(),
                    ids: ids.clone(),
                    recorded,
                },
            );
            values
        } else {
            h.forward(&b)?.detach()
        };
        let flat = |x: &candle_core::Tensor| -> Result<Vec<f32>> {
            x.flatten_all()
                .and_then(|x| x.to_vec1::<f32>())
                .map_err(|e| Error::Compute(e.into()))
        };
        let d = stale.dim;
        let out = RecordBatch::try_new(
            tables::corrected_rows_schema(d),
            vec![
                std::sync::Arc::new(StringArray::from(ids)) as ArrayRef,
                batch::vector_column(flat(&corrected)?, d)?,
                batch::vector_column(flat(&b)?, d)?,
            ],
        )?;
        Ok(vec![(0, Batch(out))])
    };
    stepwise(
        scope,
        "CorrectTouched",
        vec![
            (cache, Route::Local),
            (negatives, Route::Local),
            (feedback, Route::Local),
        ],
        1,
        logic,
        None,
        node,
        shared,
    )
    .remove(0)
}
