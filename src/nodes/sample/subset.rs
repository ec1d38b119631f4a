//! The corrector's training subset: `subset` targets drawn at random each step,
//! re-embedded only so that h sees the drift of the whole corpus, not only of the top of
//! each query's ranking (the touched targets).
//!
//! The draw is the `m` targets with the smallest key `hash(seed, node, step, id)` over
//! the whole corpus: each worker offers its shard's `m` smallest to every worker, and
//! every worker keeps those of the merged `m` smallest (ties by id) that it owns. So the
//! subset is exactly `m` distinct targets, the same for any number of workers, and each
//! target is re-embedded by the worker that holds its text and its row of B.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::UInt64Type;
use freshen_operators::hashing::hash64_seeded;
use timely::dataflow::operators::vec::Broadcast;

use crate::dataflow::shard::owner;
use crate::dataflow::{rows_of, BatchStream, BuildCx, StepInputs, Stepwise, Time};
use crate::error::{Error, Result};
use crate::store::batch::{self, Batch};
use crate::store::tables::col;

/// The column of a drawn target's key.
const KEY: &str = "key";

/// The seed of step `t`'s draw by node `node`.
pub(super) fn step_seed(seed: u64, node: &str, t: Time) -> u64 {
    hash64_seeded(seed, format!("subset/{node}/{t}").as_bytes())
}

/// The `m` rows of `ids` with the smallest keys under `seed` (ties by id), as a message
/// `(id, key)` for every worker.
pub(super) fn offer(ids: &[String], seed: u64, m: usize) -> Result<Batch> {
    let mut keyed: Vec<(u64, &str)> = ids
        .iter()
        .map(|id| (hash64_seeded(seed, id.as_bytes()), id.as_str()))
        .collect();
    if keyed.len() > m {
        if m > 0 {
            keyed.select_nth_unstable(m - 1);
        }
        keyed.truncate(m);
    }
    let (keys, ids): (Vec<u64>, Vec<&str>) = keyed.into_iter().unzip();
    Ok(Batch(RecordBatch::try_from_iter(vec![
        (col::ID, Arc::new(StringArray::from(ids)) as ArrayRef),
        (KEY, Arc::new(UInt64Array::from(keys))),
    ])?))
}

/// The merged `m` smallest of the offers, ties by id: the step's subset.
pub(super) fn merge(offers: &[Batch], m: usize) -> Result<Vec<String>> {
    let mut all: Vec<(u64, String)> = Vec::new();
    for b in rows_of(offers) {
        let ids = batch::strings(b, col::ID)?;
        let keys = b
            .column_by_name(KEY)
            .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            .ok_or_else(|| Error::Column {
                column: KEY.to_string(),
                expected: "a uint64",
            })?;
        all.extend((0..b.num_rows()).map(|r| (keys.value(r), ids.value(r).to_string())));
    }
    all.sort_unstable();
    all.dedup();
    all.truncate(m);
    Ok(all.into_iter().map(|(_, id)| id).collect())
}

/// Per step, the subset's targets this worker owns (`id`), from every shard's offer.
pub(super) fn pick<'s>(cx: &BuildCx<'_, 's>, offers: BatchStream<'s>, m: usize) -> BatchStream<'s> {
    let (me, workers) = (cx.scope.index(), cx.scope.peers());
    let logic = move |_t: Time, inputs: StepInputs| {
        let mine: Vec<String> = merge(&inputs["offers"], m)?
            .into_iter()
            .filter(|id| owner(id, workers) == me)
            .collect();
        Ok(vec![(0, crate::dataflow::shard::request(mine)?)])
    };
    Stepwise::new("SubsetPick")
        .input("offers", offers.broadcast())
        .build(cx, logic)
        .remove(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::shard::owner;

    #[test]
    fn the_subset_is_exactly_m_distinct_targets_whatever_the_worker_count() {
        let ids: Vec<String> = (0..500).map(|i| format!("d{i}")).collect();
        let seed = step_seed(7, "negatives", 3);
        let whole = merge(&[offer(&ids, seed, 20).unwrap()], 20).unwrap();
        assert_eq!(whole.len(), 20);
        let mut distinct = whole.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 20);
        for workers in 2..=3 {
            let offers: Vec<Batch> = (0..workers)
                .map(|w| {
                    let shard: Vec<String> = ids
                        .iter()
                        .filter(|id| owner(id, workers) == w)
                        .cloned()
                        .collect();
                    offer(&shard, seed, 20).unwrap()
                })
                .collect();
            assert_eq!(merge(&offers, 20).unwrap(), whole, "W = {workers}");
        }
        // Another step draws another subset; more than the corpus draws all of it.
        let next = merge(
            &[offer(&ids, step_seed(7, "negatives", 4), 20).unwrap()],
            20,
        )
        .unwrap();
        assert_ne!(next, whole);
        assert_eq!(
            merge(&[offer(&ids, seed, 900).unwrap()], 900)
                .unwrap()
                .len(),
            500
        );
    }
}
