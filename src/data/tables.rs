//! What the dataset builders share: their seeded random streams and the BEIR tables they
//! write.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, StringArray};
use arrow::record_batch::RecordBatch;
use freshen_operators::hashing::hash64_seeded;
use freshen_operators::random::SplitMix64;

use crate::error::{Error, Result};
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

/// Copies the files `names` of the set `from`, its qrels and any licence file into `out`
/// unchanged.
pub(crate) fn copy_tables(from: &Path, out: &Path, names: &[&str]) -> Result<()> {
    let qrels = out.join("qrels");
    std::fs::create_dir_all(&qrels).map_err(|e| Error::io(&qrels, e))?;
    let mut files: Vec<PathBuf> = names.iter().map(|n| from.join(n)).collect();
    let split_dir = from.join("qrels");
    for entry in std::fs::read_dir(&split_dir).map_err(|e| Error::io(&split_dir, e))? {
        files.push(entry.map_err(|e| Error::io(&split_dir, e))?.path());
    }
    for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
        let path = entry.map_err(|e| Error::io(from, e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("LICENSE") {
            files.push(path);
        }
    }
    for src in files {
        let rel = src.strip_prefix(from).unwrap_or(&src);
        let dest = out.join(rel);
        std::fs::copy(&src, &dest).map_err(|e| Error::io(&src, e))?;
    }
    Ok(())
}
