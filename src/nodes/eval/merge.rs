//! What the workers of a training `eval` send the leader, and how the leader merges it.
//!
//! Each worker answers every evaluated query with its own shard's top `depth` targets
//! ([`super::shard`]); the leader merges a query's answers by score, ties by id
//! ([`merge_top`], as `sample` merges its candidates): exactly the top `depth` of the
//! whole corpus, in the order one worker ranking everything in id order gives, so the
//! metrics do not depend on the number of workers. Judgements count only targets that
//! some worker holds (a judged target missing from the corpus is dropped, as a ranking
//! of the whole corpus drops it). The diagnostics merge the same way: each cache's top
//! 10 by [`merge_top`], the softmax KL from its parts ([`SoftmaxKlPart::merge`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::Float64Type;
use freshen_operators::loss::SoftmaxKlPart;
use freshen_operators::metrics::{evaluate_with, Qrels};
use freshen_operators::search::merge_top;

use super::rank::Ranked;
use super::shard::OVERLAP_K;
use crate::dataflow::rows_of;
use crate::error::{Error, Result};
use crate::store::batch::{self, Batch};
use crate::store::pairs::string_lists;
use crate::store::tables::col;

/// A judgement: query id, target id, grade.
pub(super) type Judgement = (String, String, i32);

/// The caches the diagnostics compare.
pub(super) const FRESH: &str = "fresh";
pub(super) const STALE: &str = "stale";
pub(super) const CORRECTED: &str = "corrected";

/// Columns of the messages.
const QUERY: &str = "query";
const HITS: &str = "hits";
const HIT_SCORES: &str = "hit_scores";
const TEXTS: &str = "texts";
const JUDGED: &str = "judged";
const CACHE: &str = "cache";
const KL: [&str; 5] = ["max_p", "sum_p", "max_q", "sum_q", "cross"];

/// A query batch: ids, texts (the reader reads them) and vectors.
pub(super) fn query_batch(
    ids: Vec<String>,
    texts: &[&str],
    values: Vec<f32>,
    dim: usize,
) -> Result<RecordBatch> {
    Ok(RecordBatch::try_from_iter(vec![
        (col::ID, Arc::new(StringArray::from(ids)) as ArrayRef),
        (col::TEXT, Arc::new(StringArray::from(texts.to_vec()))),
        (col::EMBEDDING, batch::vector_column(values, dim)?),
    ])?)
}

/// One worker's answer to the evaluated queries: per query its shard's top `depth`
/// `(target, score)` and the texts of the first `answer_k` (with a reader), and the
/// judged targets the shard holds.
#[derive(Debug, Default)]
pub(super) struct ShardAnswer {
    pub queries: Vec<String>,
    pub hits: Vec<Vec<(String, f32)>>,
    pub texts: Vec<Vec<String>>,
    pub judged: Vec<String>,
}

impl ShardAnswer {
    /// The answer as messages: the hits, and the judged targets held.
    pub fn into_batches(self) -> Result<Vec<RecordBatch>> {
        let (ids, scores): (Vec<Vec<String>>, Vec<Vec<f32>>) =
            self.hits.into_iter().map(|h| h.into_iter().unzip()).unzip();
        let hits = RecordBatch::try_from_iter(vec![
            (QUERY, Arc::new(StringArray::from(self.queries)) as ArrayRef),
            (HITS, batch::string_list_column(&ids)),
            (HIT_SCORES, batch::float_list_column(&scores)),
            (TEXTS, batch::string_list_column(&self.texts)),
        ])?;
        let judged = RecordBatch::try_from_iter(vec![(
            JUDGED,
            Arc::new(StringArray::from(self.judged)) as ArrayRef,
        )])?;
        Ok(vec![hits, judged])
    }
}

/// One worker's diagnostics of one query and cache: its top [`OVERLAP_K`] and (stale
/// and corrected caches) its share of the softmax KL against the fresh cache.
#[derive(Debug)]
pub(super) struct DiagPart {
    pub query: String,
    pub cache: &'static str,
    pub top: Vec<(String, f32)>,
    pub kl: Option<SoftmaxKlPart>,
}

/// Diagnostics as a message.
pub(super) fn diag_batch(parts: Vec<DiagPart>) -> Result<RecordBatch> {
    let kl = |f: fn(&SoftmaxKlPart) -> f64| {
        Arc::new(Float64Array::from(
            parts
                .iter()
                .map(|p| p.kl.as_ref().map(f))
                .collect::<Vec<_>>(),
        )) as ArrayRef
    };
    let kls = [
        kl(|k| k.max_p),
        kl(|k| k.sum_p),
        kl(|k| k.max_q),
        kl(|k| k.sum_q),
        kl(|k| k.cross),
    ];
    let (ids, scores): (Vec<Vec<String>>, Vec<Vec<f32>>) =
        parts.iter().map(|p| p.top.iter().cloned().unzip()).unzip();
    let mut columns: Vec<(&str, ArrayRef)> = vec![
        (
            QUERY,
            Arc::new(StringArray::from_iter_values(
                parts.iter().map(|p| &p.query),
            )),
        ),
        (
            CACHE,
            Arc::new(StringArray::from_iter_values(parts.iter().map(|p| p.cache))),
        ),
        (HITS, batch::string_list_column(&ids)),
        (HIT_SCORES, batch::float_list_column(&scores)),
    ];
    columns.extend(KL.iter().copied().zip(kls));
    Ok(RecordBatch::try_from_iter(columns)?)
}

/// A ranking merged from the shards: the ranking, the targets its rows index, and the
/// texts of those the reader reads (empty for the others).
pub(super) struct Merged {
    pub ranked: Ranked,
    pub ids: Vec<String>,
    pub texts: Vec<String>,
}

/// Per (query, cache), the diagnosed top hits and the softmax KL's parts, from every
/// worker.
type Diagnosed = BTreeMap<(String, String), (Vec<(String, f32)>, Option<SoftmaxKlPart>)>;

/// What the leader gathered from every worker for one ranking and its diagnostics.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    hits: BTreeMap<String, Vec<(String, f32)>>,
    texts: HashMap<String, String>,
    judged: BTreeSet<String>,
    diag: Diagnosed,
}

fn f64_column<'a>(b: &'a RecordBatch, name: &str) -> Result<&'a arrow::array::Float64Array> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<Float64Type>())
        .ok_or_else(|| Error::Column {
            column: name.to_string(),
            expected: "a float64",
        })
}

impl Gathered {
    /// Whether no worker sent anything.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty() && self.judged.is_empty() && self.diag.is_empty()
    }

    /// Adds the workers' messages.
    pub fn add(&mut self, batches: &[Batch]) -> Result<()> {
        for b in rows_of(batches) {
            if b.column_by_name(JUDGED).is_some() {
                let judged = batch::strings(b, JUDGED)?;
                self.judged
                    .extend(judged.iter().flatten().map(str::to_string));
                continue;
            }
            let queries = batch::strings(b, QUERY)?;
            let ids = string_lists(b, HITS)?;
            let scores = batch::float_lists(b, HIT_SCORES)?;
            let hits = ids
                .into_iter()
                .zip(scores)
                .map(|(i, s)| i.into_iter().zip(s));
            if b.column_by_name(CACHE).is_some() {
                let caches = batch::strings(b, CACHE)?;
                let cols = KL
                    .iter()
                    .map(|n| f64_column(b, n))
                    .collect::<Result<Vec<_>>>()?;
                for (r, top) in hits.enumerate() {
                    let kl = cols[0].is_valid(r).then(|| SoftmaxKlPart {
                        max_p: cols[0].value(r),
                        sum_p: cols[1].value(r),
                        max_q: cols[2].value(r),
                        sum_q: cols[3].value(r),
                        cross: cols[4].value(r),
                    });
                    let key = (queries.value(r).to_string(), caches.value(r).to_string());
                    let e = self.diag.entry(key).or_default();
                    e.0.extend(top);
                    e.1 = match (e.1, kl) {
                        (Some(a), Some(b)) => Some(a.merge(b)),
                        (a, b) => a.or(b),
                    };
                }
                continue;
            }
            let texts = string_lists(b, TEXTS)?;
            for (r, (top, read)) in hits.zip(texts).enumerate() {
                let top: Vec<(String, f32)> = top.collect();
                for ((id, _), text) in top.iter().zip(read) {
                    self.texts.insert(id.clone(), text);
                }
                self.hits
                    .entry(queries.value(r).to_string())
                    .or_default()
                    .extend(top);
            }
        }
        Ok(())
    }

    /// The merged ranking of every gathered query judged in `judgements` (in id order),
    /// `depth` deep, and its metrics.
    pub fn ranking(
        &self,
        judgements: &[Judgement],
        depth: usize,
        recall_at: &[usize],
    ) -> Result<Merged> {
        let mut ids: Vec<String> = self.judged.iter().cloned().collect();
        let mut index: HashMap<String, u32> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.clone(), i as u32))
            .collect();
        let mut qrels: Qrels<String> = Qrels::new();
        for (q, c, grade) in judgements {
            if let Some(&doc) = index.get(c) {
                qrels.insert(q.clone(), doc, *grade);
            }
        }
        let mut rankings = Vec::new();
        let mut scores = Vec::new();
        for (q, hits) in &self.hits {
            if qrels.get(q).is_none() {
                continue;
            }
            let top = merge_top(hits.clone(), depth);
            let mut docs = Vec::with_capacity(top.len());
            let mut s = Vec::with_capacity(top.len());
            for (id, score) in top {
                let next = ids.len() as u32;
                let doc = *index.entry(id.clone()).or_insert_with(|| {
                    ids.push(id);
                    next
                });
                docs.push(doc);
                s.push(score);
            }
            rankings.push((q.clone(), docs));
            scores.push(s);
        }
        if rankings.is_empty() {
            return Err(Error::Usage(
                "nothing to evaluate: no targets, or no query with a judgement".into(),
            ));
        }
        let metrics = evaluate_with(&rankings, &qrels, recall_at);
        let texts = ids
            .iter()
            .map(|id| self.texts.get(id).cloned().unwrap_or_default())
            .collect();
        Ok(Merged {
            ranked: Ranked {
                rankings,
                scores,
                metrics,
            },
            ids,
            texts,
        })
    }

    /// The stale and corrected caches against the fresh one over the diagnosed queries:
    /// top-[`OVERLAP_K`] overlap of each, then `KL(P ‖ P_stale)` and `KL(P ‖ P_h)`
    /// (means over the queries); `None` where a cache was not diagnosed.
    pub fn diagnostics(&self) -> [Option<f64>; 4] {
        let top = |query: &str, cache: &str| -> Option<Vec<String>> {
            let (hits, _) = self.diag.get(&(query.to_string(), cache.to_string()))?;
            Some(
                merge_top(hits.clone(), OVERLAP_K)
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect(),
            )
        };
        let queries: BTreeSet<&String> = self.diag.keys().map(|(q, _)| q).collect();
        let n = queries.len();
        let overlap = |cache: &str| -> Option<f64> {
            let mut hit = 0usize;
            for q in &queries {
                let (exact, got) = (top(q, FRESH)?, top(q, cache)?);
                hit += exact.iter().filter(|x| got.contains(x)).count();
            }
            Some(hit as f64 / (n * OVERLAP_K).max(1) as f64)
        };
        let kl = |cache: &str| -> Option<f64> {
            let mut total = 0.0;
            for q in &queries {
                let (_, part) = self.diag.get(&(q.to_string(), cache.to_string()))?;
                total += part.as_ref()?.value();
            }
            Some(total / n.max(1) as f64)
        };
        if n == 0 {
            return [None; 4];
        }
        [overlap(STALE), overlap(CORRECTED), kl(STALE), kl(CORRECTED)]
    }
}
