//! What the dataset builders share: their seeded random streams and the BEIR tables they
//! write.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, StringArray};
use arrow::record_batch::RecordBatch;
use freshen_operators::hashing::hash64_seeded;
use freshen_operators::random::SplitMix64;

use crate::error::Result;
use crate::store::parquet_io::write_parquet;
use crate::store::tables::{corpus_schema, qrels_schema};

/// The splitmix64 stream of `(seed, key)`: the same on every platform.
pub(crate) fn stream(seed: u64, key: u64) -> SplitMix64 {
    SplitMix64::new(hash64_seeded(seed, &key.to_le_bytes()))
}

/// A uniform index below `n` (`n > 0`), by multiply-shift.
pub(crate) fn below(rng: &mut SplitMix64, n: usize) -> usize {
    ((u128::from(rng.next_u64()) * n as u128) >> 64) as usize
}

/// A corpus batch of ids, titles (empty when `None`) and texts.
pub(crate) fn corpus_batch(
    ids: &[String],
    titles: Option<&[String]>,
    texts: &[String],
) -> Result<RecordBatch> {
    let titles = match titles {
        Some(t) => StringArray::from_iter_values(t),
        None => StringArray::from_iter_values(std::iter::repeat_n("", ids.len())),
    };
    Ok(RecordBatch::try_new(
        corpus_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(ids)) as ArrayRef,
            Arc::new(titles) as ArrayRef,
            Arc::new(StringArray::from_iter_values(texts)) as ArrayRef,
        ],
    )?)
}

/// Writes `out/qrels/<name>.parquet` for each `(name, (query id, corpus id) pairs)`, every
/// judgement of grade 1.
pub(crate) fn write_qrels(out: &Path, splits: &[(&str, &[(String, String)])]) -> Result<()> {
    for (name, rows) in splits {
        let batch = RecordBatch::try_new(
            qrels_schema(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )) as ArrayRef,
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.1.as_str()),
                )),
                Arc::new(Int32Array::from(vec![1; rows.len()])),
            ],
        )?;
        let path = out.join("qrels").join(format!("{name}.parquet"));
        write_parquet(&path, qrels_schema(), &[batch])?;
    }
    Ok(())
}
