//! The `eval` operator: exact search of query embeddings against target embeddings,
//! scored against qrels with the standard IR metrics.
//!
//! Its three inputs (queries, targets, qrels) are tagged and merged into one stream that
//! goes to the leader worker; when all three are complete it builds the target matrix
//! once, ranks the queries that have judgements in batches (search is chunked, so memory
//! is the target matrix plus one score block), writes the ranking as a TREC run and as
//! Parquet if asked, and emits one row of metrics.

use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, AsArray, Float32Array, Float64Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use arrow::datatypes::Int32Type;
use candle_core::{Device, Tensor};
use freshen_operators::metrics::{evaluate_with, MetricSet, Qrels};
use freshen_operators::search::{top_k, DEFAULT_CHUNK};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Operator};

use super::dataflow::BatchStream;
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::spec::EvalSpec;
use crate::store::batch::{self, Batch};
use crate::store::parquet_io::{AtomicParquetWriter, PendingFile};
use crate::store::tables::{self, col};
use crate::store::vectors::Vectors;

/// Builds the eval operator over `inputs` = [queries, targets, qrels].
pub fn eval<'s>(
    inputs: &[BatchStream<'s>],
    spec: EvalSpec,
    leader: bool,
    node: Rc<str>,
    shared: Arc<Shared>,
) -> BatchStream<'s> {
    let scope = inputs[0].scope();
    let tagged = inputs
        .iter()
        .enumerate()
        .map(|(tag, s)| s.clone().map(move |b| (tag as u8, b)));
    let merged = scope.concatenate(tagged);
    let to_leader = Exchange::new(|_: &(u8, Batch)| 0u64);
    merged.unary_frontier::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        to_leader,
        "Eval",
        move |cap, _| {
            let mut cap = Some(cap);
            let (mut queries, mut targets) = (Vectors::default(), Vectors::default());
            let mut judgements: Vec<(String, String, i32)> = Vec::new();
            move |(input, frontier), output| {
                input.for_each(|_, data| {
                    for (tag, b) in data.drain(..) {
                        let result = match tag {
                            0 => queries.push(&b.0),
                            1 => targets.push(&b.0),
                            _ => push_qrels(&mut judgements, &b.0),
                        };
                        if let Err(e) = result {
                            shared.fail(Error::Operator {
                                node: node.to_string(),
                                message: e.to_string(),
                            });
                        }
                    }
                });
                if frontier.is_empty() {
                    if let Some(c) = cap.take() {
                        if leader && !shared.failed() {
                            match evaluate(&spec, &queries, &targets, &judgements, &shared) {
                                Ok(b) => {
                                    shared.count(&node, |s| s.rows_out += 1);
                                    output.session(&c).give(Batch(b));
                                }
                                Err(e) => shared.fail(Error::Operator {
                                    node: node.to_string(),
                                    message: e.to_string(),
                                }),
                            }
                        }
                    }
                }
            }
        },
    )
}

pub(crate) fn push_qrels(out: &mut Vec<(String, String, i32)>, b: &RecordBatch) -> Result<()> {
    let q = batch::strings(b, col::QUERY_ID)?;
    let c = batch::strings(b, col::CORPUS_ID)?;
    let s = b
        .column_by_name(col::SCORE)
        .and_then(|a| a.as_primitive_opt::<Int32Type>())
        .ok_or_else(|| Error::Other("qrels lack an int32 `score` column".into()))?;
    for r in 0..b.num_rows() {
        out.push((q.value(r).to_string(), c.value(r).to_string(), s.value(r)));
    }
    Ok(())
}

/// A ranking of judged queries and its metrics.
pub(crate) struct Ranked {
    /// Per judged query: its id and the ranked target rows.
    pub rankings: Vec<(String, Vec<u32>)>,
    /// The scores of those rows.
    pub scores: Vec<Vec<f32>>,
    /// The metrics of the ranking.
    pub metrics: MetricSet,
}

/// Ranks every query of `queries` that has a judgement against `targets` (exact search,
/// `depth` deep, `batch` queries at a time) and scores the ranking.
#[allow(clippy::too_many_arguments)]
pub(crate) fn rank_and_score(
    queries: &Vectors,
    targets: &[String],
    cache: &Tensor,
    judgements: &[(String, String, i32)],
    depth: usize,
    batch: usize,
    recall_at: &[usize],
    bar: &indicatif::ProgressBar,
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
        return Err(Error::Other(
            "nothing to evaluate: no targets, or no query with a judgement".into(),
        ));
    }
    let dim = cache.dim(1).map_err(compute)?;
    if queries.dim != dim {
        return Err(Error::Other(format!(
            "queries have {} dimensions and targets {dim} (expected the same width)",
            queries.dim
        )));
    }
    bar.set_length(judged.len() as u64);
    let mut rankings: Vec<(String, Vec<u32>)> = Vec::with_capacity(judged.len());
    let mut scores: Vec<Vec<f32>> = Vec::with_capacity(judged.len());
    for chunk in judged.chunks(batch.max(1)) {
        let q = queries.gather(chunk, &Device::Cpu)?;
        for (&i, hits) in chunk
            .iter()
            .zip(top_k(&q, cache, depth, &[], DEFAULT_CHUNK)?)
        {
            let (docs, s): (Vec<u32>, Vec<f32>) = hits.into_iter().unzip();
            rankings.push((queries.ids[i].clone(), docs));
            scores.push(s);
        }
        bar.inc(chunk.len() as u64);
    }
    let metrics = evaluate_with(&rankings, &qrels, recall_at);
    Ok(Ranked {
        rankings,
        scores,
        metrics,
    })
}

/// Ranks every judged query and scores the ranking; writes the run files it was asked for.
fn evaluate(
    spec: &EvalSpec,
    queries: &Vectors,
    targets: &Vectors,
    judgements: &[(String, String, i32)],
    shared: &Shared,
) -> Result<RecordBatch> {
    let cache = targets.tensor(&Device::Cpu)?;
    let bar = shared.bar("eval", 0);
    let ranked = rank_and_score(
        queries,
        &targets.ids,
        &cache,
        judgements,
        spec.depth,
        spec.batch_size,
        &spec.recall_at,
        &bar,
    )?;
    bar.finish_and_clear();
    write_runs(spec, &ranked, &targets.ids, shared)?;
    metrics_batch(&ranked.metrics, &spec.recall_at)
}

/// Writes the TREC run and the Parquet ranking that `spec` asks for (committed with the run).
pub(crate) fn write_runs(
    spec: &EvalSpec,
    ranked: &Ranked,
    ids: &[String],
    shared: &Shared,
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

fn compute(e: candle_core::Error) -> Error {
    Error::Compute(e.into())
}

/// One row of metrics in [`tables::metrics_schema`].
fn metrics_batch(m: &MetricSet, recall_at: &[usize]) -> Result<RecordBatch> {
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
