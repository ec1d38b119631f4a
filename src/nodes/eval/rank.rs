//! Exact ranking of queries against targets, the IR metrics of a ranking, and the run
//! files (TREC and Parquet) of both `eval` forms.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Float32Array, Float64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::Int32Type;
use candle_core::{Device, Tensor};
use freshen_operators::metrics::{evaluate_with, MetricSet, Qrels};
use freshen_operators::search::{top_k, DEFAULT_CHUNK};

use super::Eval;
use crate::dataflow::{EmbeddingRows, RunState};
use crate::error::{Error, Result};
use crate::store::batch;
use crate::store::parquet_io::{AtomicParquetWriter, PendingFile};
use crate::store::tables::{self, col};

/// Appends the judgements of a qrels batch.
pub(super) fn push_qrels(out: &mut Vec<(String, String, i32)>, b: &RecordBatch) -> Result<()> {
    let q = batch::strings(b, col::QUERY_ID)?;
    let c = batch::strings(b, col::CORPUS_ID)?;
    let s = b
        .column_by_name(col::SCORE)
        .and_then(|a| a.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| Error::Column {
            column: col::SCORE.to_string(),
            expected: "an int32",
        })?;
    for r in 0..b.num_rows() {
        out.push((q.value(r).to_string(), c.value(r).to_string(), s.value(r)));
    }
    Ok(())
}

/// A ranking of judged queries and its metrics.
pub(super) struct Ranked {
    /// Per judged query: its id and the ranked target rows.
    pub rankings: Vec<(String, Vec<u32>)>,
    /// The scores of those rows.
    pub scores: Vec<Vec<f32>>,
    /// The metrics of the ranking.
    pub metrics: MetricSet,
}

/// How a ranking is made: its depth, queries per search batch, the cut-offs scored,
/// where the search runs, and the bar that shows it.
pub(super) struct RankCx<'a> {
    /// Results ranked per query.
    pub depth: usize,
    /// Queries per search batch.
    pub batch: usize,
    /// Cut-offs of Recall@k.
    pub recall_at: &'a [usize],
    /// The device of the search.
    pub device: &'a Device,
    /// Progress.
    pub bar: &'a indicatif::ProgressBar,
}

/// Ranks every query of `queries` that has a judgement against `targets` (exact search,
/// `depth` deep, `batch` queries at a time) and scores the ranking.
pub(super) fn rank_and_score(
    queries: &EmbeddingRows,
    targets: &[String],
    cache: &Tensor,
    judgements: &[(String, String, i32)],
    cx: &RankCx,
) -> Result<Ranked> {
    let index: HashMap<&str, u32> = targets
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i as u32))
        .collect();
    let mut qrels: Qrels<String> = Qrels::new();
    for (q, c, grade) in judgements {
        if let Some(&doc) = index.get(c.as_str()) {
            qrels.insert(q.clone(), doc, *grade);
        }
    }
    let judged: Vec<usize> = (0..queries.ids.len())
        .filter(|&i| qrels.get(&queries.ids[i]).is_some())
        .collect();
    if targets.is_empty() || judged.is_empty() {
        return Err(Error::Usage(
            "nothing to evaluate: no targets, or no query with a judgement".into(),
        ));
    }
    let dim = cache.dim(1)?;
    if queries.dim != dim {
        return Err(Error::invariant(format!(
            "queries have {} dimensions and targets {dim} (expected the same width)",
            queries.dim
        )));
    }
    cx.bar.set_length(judged.len() as u64);
    let mut rankings: Vec<(String, Vec<u32>)> = Vec::with_capacity(judged.len());
    let mut scores: Vec<Vec<f32>> = Vec::with_capacity(judged.len());
    for chunk in judged.chunks(cx.batch.max(1)) {
        let q = queries.gather(chunk, cx.device)?;
        for (&i, hits) in chunk
            .iter()
            .zip(top_k(&q, cache, cx.depth, &[], DEFAULT_CHUNK)?)
        {
            let (docs, s): (Vec<u32>, Vec<f32>) = hits.into_iter().unzip();
            rankings.push((queries.ids[i].clone(), docs));
            scores.push(s);
        }
        cx.bar.inc(chunk.len() as u64);
    }
    let metrics = evaluate_with(&rankings, &qrels, cx.recall_at);
    Ok(Ranked {
        rankings,
        scores,
        metrics,
    })
}

/// Writes the TREC run and the Parquet ranking that `spec` asks for (committed with the run).
pub(super) fn write_runs(
    spec: &Eval,
    ranked: &Ranked,
    ids: &[String],
    shared: &RunState,
) -> Result<()> {
    if let Some(path) = &spec.trec {
        shared.add_pending(write_trec(
            path,
            &spec.tag,
            &ranked.rankings,
            &ranked.scores,
            ids,
        )?);
    }
    if let Some(path) = &spec.rankings {
        shared.add_pending(write_rankings(path, &ranked.rankings, &ranked.scores, ids)?);
    }
    Ok(())
}

/// One row of metrics in [`tables::metrics_schema`].
pub(super) fn metrics_batch(m: &MetricSet, recall_at: &[usize]) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt64Array::from(vec![m.queries as u64]))];
    for &k in recall_at {
        columns.push(Arc::new(Float64Array::from(vec![m
            .recall_at(k)
            .unwrap_or(0.0)])));
    }
    columns.push(Arc::new(Float64Array::from(vec![m.mrr_at_10])));
    columns.push(Arc::new(Float64Array::from(vec![m.ndcg_at_10])));
    Ok(RecordBatch::try_new(
        tables::metrics_schema(recall_at),
        columns,
    )?)
}

/// `qid Q0 docid rank score tag`, the format trec_eval and pyserini read.
fn write_trec(
    path: &std::path::Path,
    tag: &str,
    rankings: &[(String, Vec<u32>)],
    scores: &[Vec<f32>],
    ids: &[String],
) -> Result<PendingFile> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let pending = PendingFile::new(path);
    let file =
        std::fs::File::create(pending.tmp_path()).map_err(|e| Error::io(pending.tmp_path(), e))?;
    let mut w = std::io::BufWriter::new(file);
    for ((q, docs), s) in rankings.iter().zip(scores) {
        for (rank, (d, score)) in docs.iter().zip(s).enumerate() {
            writeln!(
                w,
                "{q} Q0 {} {} {score:.6} {tag}",
                ids[*d as usize],
                rank + 1
            )
            .map_err(|e| Error::io(pending.tmp_path(), e))?;
        }
    }
    w.flush().map_err(|e| Error::io(pending.tmp_path(), e))?;
    Ok(pending)
}

/// The ranking as Parquet, in [`tables::rankings_schema`].
fn write_rankings(
    path: &std::path::Path,
    rankings: &[(String, Vec<u32>)],
    scores: &[Vec<f32>],
    ids: &[String],
) -> Result<PendingFile> {
    let mut w = AtomicParquetWriter::create(path, tables::rankings_schema())?;
    for (chunk, s) in rankings.chunks(1024).zip(scores.chunks(1024)) {
        let (mut q, mut rank, mut doc, mut score) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((qid, docs), sc) in chunk.iter().zip(s) {
            for (r, (d, x)) in docs.iter().zip(sc).enumerate() {
                q.push(qid.as_str());
                rank.push(r as u32 + 1);
                doc.push(ids[*d as usize].as_str());
                score.push(*x);
            }
        }
        let b = RecordBatch::try_new(
            tables::rankings_schema(),
            vec![
                Arc::new(StringArray::from(q)) as ArrayRef,
                Arc::new(UInt32Array::from(rank)),
                Arc::new(StringArray::from(doc)),
                Arc::new(Float32Array::from(score)),
            ],
        )?;
        w.write(&b)?;
    }
    w.finish()
}
