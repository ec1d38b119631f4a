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

/// The ids of `batches` (a `sample` node's training subset: the targets of the step's
/// draw this worker owns), in order.
pub(crate) fn subset_ids(batches: &[Batch]) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for b in rows_of(batches) {
        let col = batch::strings(b, col::ID)?;
        ids.extend(col.iter().flatten().map(str::to_string));
    }
    Ok(ids)
}

/// The touched targets of `sample` rows, then the training subset's targets not among
/// them: every row a step's training operators embed or correct, each once, in one order.
pub(crate) fn step_ids(sample: &[Batch], subset: Option<&[Batch]>) -> Result<Vec<String>> {
    let mut ids = touched_ids(sample)?;
    if let Some(subset) = subset {
        let touched: HashSet<String> = ids.iter().cloned().collect();
        ids.extend(
            subset_ids(subset)?
                .into_iter()
                .filter(|id| !touched.contains(id)),
        );
    }
    Ok(ids)
}

/// Per step, the touched targets of this worker's `sample` rows (and, given the
/// `sample` node's training subset, the subset's targets this worker owns) as a request
/// for a sharded table ([`crate::dataflow::shard::fetch`]): each worker asks the owners
/// for the rows it must embed or correct.
pub(crate) fn touched_requests<'s>(
    cx: &crate::dataflow::BuildCx<'_, 's>,
    sample: crate::dataflow::BatchStream<'s>,
    subset: Option<crate::dataflow::BatchStream<'s>>,
) -> crate::dataflow::BatchStream<'s> {
    let logic = |_t: crate::dataflow::Time, inputs: crate::dataflow::StepInputs| {
        let ids = step_ids(&inputs["sample"], inputs.get("subset"))?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(vec![(0, crate::dataflow::shard::request(ids)?)])
    };
    crate::dataflow::Stepwise::new("TouchedIds")
        .input("sample", sample)
        .input_if("subset", subset)
        .build(cx, logic)
        .remove(0)
}
