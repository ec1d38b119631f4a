//! The targets a step touches, read from a `sample` node's rows: what the touched
//! `encode` re-embeds and the touched `correct` corrects, in one order.

use std::collections::HashSet;

use crate::dataflow::rows_of;
use crate::error::Result;
use crate::store::batch::{self, Batch};
use crate::store::pairs::string_lists;
use crate::store::tables::col;

/// The distinct targets of `sample` rows, in the order every training operator uses: per
/// row, its positive then its negatives, each id at its first appearance.
pub(crate) fn touched_ids(batches: &[Batch]) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for b in rows_of(batches) {
        let positives = batch::strings(b, col::CORPUS_ID)?;
        for (r, negs) in string_lists(b, col::NEGATIVES)?.into_iter().enumerate() {
            for id in std::iter::once(positives.value(r).to_string()).chain(negs) {
                if seen.insert(id.clone()) {
                    ids.push(id);
                }
            }
        }
    }
    Ok(ids)
}

/// Per step, the touched targets of this worker's `sample` rows as a request for a
/// sharded table ([`crate::dataflow::shard::fetch`]): each worker asks the owners for the
/// rows it must embed or correct.
pub(crate) fn touched_requests<'s>(
    cx: &crate::dataflow::BuildCx<'_, 's>,
    sample: crate::dataflow::BatchStream<'s>,
) -> crate::dataflow::BatchStream<'s> {
    let logic = |_t: crate::dataflow::Time, inputs: Vec<Vec<Batch>>| {
        let ids = touched_ids(&inputs[0])?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![(0, crate::dataflow::shard::request(ids)?)])
    };
    crate::dataflow::Stepwise::new("TouchedIds")
        .local_inputs(vec![sample])
        .build(cx, logic)
        .remove(0)
}
