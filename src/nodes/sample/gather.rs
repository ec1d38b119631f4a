//! What the shards sent each query's worker, gathered per query: candidates with their
//! scores, the positive's score, the in-batch scores, and fresher selection's scores.

use std::collections::HashMap;

use arrow::array::{Array, AsArray, Float32Array, RecordBatch};
use arrow::datatypes::Float32Type;

use super::fresher::Extra;
use super::search::{
    BATCH_IDS, BATCH_SCORES, CANDIDATES, CANDIDATE_SCORES, FRESHER_SCORES, POSITIVE_FRESHER,
    POSITIVE_STALE, QUERY, STALE_SCORES,
};
use crate::dataflow::rows_of;
use crate::error::{Error, Result};
use crate::store::batch::{self, Batch};
use crate::store::pairs::string_lists;
use crate::store::tables::col;

/// What the shards sent for one query.
#[derive(Default)]
pub(super) struct Gathered {
    pub candidates: Vec<(String, f32)>,
    pub positive: Option<f32>,
    pub batch: Vec<(String, f32)>,
    /// With fresher selection: each candidate's fresher and stale scores, the positive's.
    pub extra: HashMap<String, Extra>,
    pub positive_extra: Extra,
}

/// A float32 column by name, if the batch has one.
fn floats<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a Float32Array> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Float32Type>())
}

pub(super) fn gather(batches: &[Batch]) -> Result<HashMap<String, Gathered>> {
    let mut out: HashMap<String, Gathered> = HashMap::new();
    for b in rows_of(batches) {
        let queries = batch::strings(b, QUERY)?;
        let cands = string_lists(b, CANDIDATES)?;
        let scores = batch::float_lists(b, CANDIDATE_SCORES)?;
        let positive = b
            .column_by_name(col::POSITIVE_SCORE)
            .and_then(|c| c.as_primitive_opt::<Float32Type>())
            .ok_or_else(|| Error::Column {
                column: col::POSITIVE_SCORE.to_string(),
                expected: "a float32",
            })?;
        let batch_ids = string_lists(b, BATCH_IDS)?;
        let batch_scores = batch::float_lists(b, BATCH_SCORES)?;
        for r in 0..b.num_rows() {
            let g = out.entry(queries.value(r).to_string()).or_default();
            g.candidates
                .extend(cands[r].iter().cloned().zip(scores[r].iter().copied()));
            if positive.is_valid(r) {
                g.positive = Some(positive.value(r));
            }
            g.batch.extend(
                batch_ids[r]
                    .iter()
                    .cloned()
                    .zip(batch_scores[r].iter().copied()),
            );
            if let (Some(pf), Some(ps)) = (floats(b, POSITIVE_FRESHER), floats(b, POSITIVE_STALE)) {
                let (fresher, stale) = (
                    batch::float_lists(b, FRESHER_SCORES)?,
                    batch::float_lists(b, STALE_SCORES)?,
                );
                let finite = |v: f32| (!v.is_nan()).then_some(v);
                for (j, id) in cands[r].iter().enumerate() {
                    let e = Extra {
                        fresher: fresher[r].get(j).copied().and_then(finite),
                        stale: stale[r].get(j).copied().and_then(finite),
                    };
                    g.extra.insert(id.clone(), e);
                }
                if pf.is_valid(r) || ps.is_valid(r) {
                    g.positive_extra = Extra {
                        fresher: pf.is_valid(r).then(|| pf.value(r)),
                        stale: ps.is_valid(r).then(|| ps.value(r)),
                    };
                }
            }
        }
    }
    Ok(out)
}
