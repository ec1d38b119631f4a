//! Each worker's part of a training `eval`: its shard of the corpus and of the stale cache
//! B, its share of the queries, the shard embedded at an evaluation, and its copy of the
//! best step's weights.
//!
//! A worker embeds only the corpus rows it owns ([`crate::dataflow::shard::owner`], the
//! same owner as every other sharded table) and the queries it owns, ranks every
//! evaluated query against its own rows, and sends the leader each query's top `depth`
//! ([`super::merge`] makes the whole ranking of them). So the corpus is re-embedded
//! once over all workers, and no worker holds more than its shard: the evaluation
//! scales with the cache instead of living on worker 0.

use freshen_operators::host::HostRead;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::RecordBatch;
use candle_core::{Device, Tensor};
use freshen_operators::loss::SoftmaxKlPart;
use freshen_operators::search::{top_k, DEFAULT_CHUNK};

use super::merge::{self, Judgement, ShardAnswer};
use super::rank::push_qrels;
use super::{Eval, EvalModels};
use crate::dataflow::shard::Shard;
use crate::dataflow::{rows_of, EmbeddingRows, RunState, StepInputs, WorkerModels};
use crate::error::Result;
use crate::nodes::text::{joined_rows, joined_text};
use crate::store::batch::{self, Batch};
use crate::store::tables::col;
use freshen_operators::hashing::text_hash;

/// Every evaluated model's weights, by model name.
pub(super) type Snapshots = Vec<(String, Vec<(String, Tensor)>)>;

/// Dev queries used by the oracle diagnostics (bounds their cost on large dev sets).
pub(super) const DIAGNOSTIC_QUERIES: usize = 256;
/// Top-k of the diagnostics' overlap.
pub(super) const OVERLAP_K: usize = 10;
/// Rows per target-tower call when the shard is embedded.
const EMBED_ROWS: usize = 4096;
/// Rows per corrector pass when the shard is corrected.
const CORRECT_ROWS: usize = 8192;
/// Rows per batch of the written embeddings.
const OUTPUT_ROWS: usize = 65_536;

/// The cache a ranking searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Against {
    /// The corpus re-embedded by the current target tower.
    Fresh,
    /// The stale cache corrected by the current h, with no re-embedding.
    Corrected,
}

/// This worker's part of the evaluation.
pub(super) struct EvalShard {
    pub spec: Eval,
    pub models: EvalModels,
    /// Where the towers embed and search.
    pub device: Device,
    /// β of the loss (the diagnostics' softmax).
    pub beta: f64,
    pub state: Rc<WorkerModels>,
    pub run: Arc<RunState>,
    /// This worker.
    pub me: usize,
    /// The corpus rows this worker owns (the batches every reader of the corpus shares),
    /// and the name the shard is reported under.
    pub corpus: (Shard, String),
    /// The corpus rows of the fresh shard, by row: `(batch, row)` in `corpus`.
    pub order: Vec<(usize, usize)>,
    /// The query texts this worker owns, by id.
    pub queries: HashMap<String, String>,
    /// Every judgement of dev and of test (each worker keeps all: they are small).
    pub dev: Vec<Judgement>,
    pub test: Vec<Judgement>,
    /// The rows of the stale cache B this worker owns (shared with `correct`), and the
    /// name the shard is reported under.
    pub stale: (Shard, String),
    /// The shard embedded at the current evaluation: its ids and hashes (in corpus
    /// order), and the vectors as a tensor.
    pub fresh: Option<(EmbeddingRows, Tensor)>,
    /// h(B) of the shard, aligned with `fresh` (at the end, for the corrected metrics).
    pub corrected: Option<Tensor>,
    /// The queries of the current evaluation, from every worker, in id order; with
    /// their texts (the leader's reader reads them).
    pub asked: EmbeddingRows,
    pub asked_texts: HashMap<String, String>,
    /// This worker's copy of the best dev step's weights (every worker's models are the
    /// same, so every worker can put them back for the final evaluation of its shard).
    pub best: Option<Snapshots>,
    /// The starting weights, until the starting model is scored on dev (`start`).
    pub start: Option<Snapshots>,
    /// What the current evaluation is, for the progress lines (`dev evaluation after
    /// step 50`).
    pub label: String,
}

impl EvalShard {
    /// Every model the evaluation reads, by name.
    pub fn model_names(&self) -> Vec<String> {
        let m = &self.models;
        [
            Some(m.query.clone()),
            Some(m.target.clone()),
            m.corrector.clone(),
            m.reader.clone(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Keeps what a step brought, by input: 1 corpus, 2 queries, 3 dev qrels, 4 test qrels,
    /// 5 the stale cache (1, 2 and 5 already moved to their owners).
    pub fn take_inputs(&mut self, inputs: &StepInputs) -> Result<()> {
        let query_fields = self.spec.query_fields.clone();
        for (input, (shard, name)) in [("corpus", &mut self.corpus), ("cache", &mut self.stale)] {
            if shard.replace(&inputs[input], col::ID)? {
                self.run
                    .hold(self.me, name, shard.len() as u64, shard.bytes());
            }
        }
        for b in rows_of(&inputs["queries"]) {
            for ((id, _), text) in joined_rows(b, &query_fields)? {
                self.queries.insert(id, text);
            }
        }
        for b in rows_of(&inputs["dev"]) {
            push_qrels(&mut self.dev, b)?;
        }
        for b in rows_of(&inputs["test"]) {
            push_qrels(&mut self.test, b)?;
        }
        Ok(())
    }

    /// The leader's bar for one part of the current evaluation (the progress lines
    /// report it under the evaluation's label); hidden on the other workers.
    fn bar(&self, part: &str, unit: &'static str, len: usize) -> indicatif::ProgressBar {
        match self.me {
            0 => self
                .run
                .progress()
                .bar_of(&format!("{}: {part}", self.label), unit, len as u64),
            _ => indicatif::ProgressBar::hidden(),
        }
    }

    /// The embedded text of fresh row `r`.
    fn text(&self, r: usize) -> Result<String> {
        let (b, row) = self.order[r];
        joined_text(&self.corpus.0.batches()[b], &self.spec.fields, row)
    }

    /// Embeds this worker's corpus rows with the current target tower (ledger: `eval`).
    pub fn embed_shard(&mut self) -> Result<()> {
        self.fresh = None;
        let enc = self.state.encoder(&self.models.target)?;
        let started = Instant::now();
        let mut rows = EmbeddingRows {
            dim: enc.dim(),
            ..EmbeddingRows::default()
        };
        // In id order, whatever order the batches arrived in: a ranking breaks ties of
        // score by row, so this makes it the same for every worker count.
        let corpus = &self.corpus.0;
        let order = corpus.in_id_order();
        let bar = self.bar("corpus", "rows", order.len());
        for chunk in order.chunks(EMBED_ROWS) {
            let mut texts = Vec::with_capacity(chunk.len());
            for &(id, b, r) in chunk {
                let text = joined_text(&corpus.batches()[b], &self.spec.fields, r)?;
                rows.ids.push(id.to_string());
                rows.hashes.push(text_hash(&text));
                texts.push(text);
            }
            let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
            rows.values
                .extend(enc.encode(&refs)?.flatten_all()?.host_vec1::<f32>()?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        self.order = order.into_iter().map(|(_, b, r)| (b, r)).collect();
        let secs = started.elapsed().as_secs_f64();
        self.run.forwards("eval", rows.len() as u64, secs);
        // The vectors move into the tensor: one copy of the shard at a time.
        let shape = (rows.len(), rows.dim);
        let tensor = Tensor::from_vec(std::mem::take(&mut rows.values), shape, &self.device)?;
        self.fresh = Some((rows, tensor));
        Ok(())
    }

    /// The judged queries of `judgements` this worker owns, embedded by the current query
    /// tower, with their texts (`id`, `text`, `embedding`); `None` if it owns none.
    pub fn embed_own_queries(&self, judgements: &[Judgement]) -> Result<Option<RecordBatch>> {
        let mut ids: Vec<&String> = judgements
            .iter()
            .map(|(q, _, _)| q)
            .filter(|q| self.queries.contains_key(*q))
            .collect();
        ids.sort();
        ids.dedup();
        if ids.is_empty() {
            return Ok(None);
        }
        let enc = self.state.encoder(&self.models.query)?;
        let texts: Vec<&str> = ids.iter().map(|q| self.queries[*q].as_str()).collect();
        let mut values = Vec::with_capacity(ids.len() * enc.dim());
        let bar = self.bar("queries", "rows", texts.len());
        for chunk in texts.chunks(EMBED_ROWS) {
            values.extend(enc.encode(chunk)?.flatten_all()?.host_vec1::<f32>()?);
            bar.inc(chunk.len() as u64);
        }
        bar.finish_and_clear();
        let ids: Vec<String> = ids.into_iter().cloned().collect();
        Ok(Some(merge::query_batch(ids, &texts, values, enc.dim())?))
    }

    /// Keeps the queries every worker sent for this evaluation, in id order.
    pub fn take_asked(&mut self, batches: &[Batch]) -> Result<()> {
        let mut asked = EmbeddingRows::default();
        self.asked_texts.clear();
        for b in rows_of(batches) {
            asked.push(b)?;
            let (ids, texts) = (
                batch::strings(b, crate::store::tables::col::ID)?,
                batch::strings(b, crate::store::tables::col::TEXT)?,
            );
            for r in 0..b.num_rows() {
                self.asked_texts
                    .insert(ids.value(r).to_string(), texts.value(r).to_string());
            }
        }
        self.asked = asked.sorted_by_id();
        Ok(())
    }

    fn searched(&self, against: Against) -> Result<Option<(&EmbeddingRows, &Tensor)>> {
        let Some((rows, fresh)) = &self.fresh else {
            return Ok(None);
        };
        Ok(match against {
            Against::Fresh => Some((rows, fresh)),
            Against::Corrected => self.corrected.as_ref().map(|c| (rows, c)),
        })
    }

    /// Every asked query's top `depth` of this worker's rows of `against` (ties by id),
    /// with the texts of the first `answer_k` when a reader reads them, and the judged
    /// targets of `judgements` this worker holds.
    pub fn answer(&self, against: Against, judgements: &[Judgement]) -> Result<ShardAnswer> {
        let Some((rows, cache)) = self.searched(against)? else {
            return Ok(ShardAnswer::default());
        };
        let bar = self.bar("ranking", "queries", self.asked.len());
        let read = match self.models.reader {
            Some(_) => self.spec.answer_k,
            None => 0,
        };
        let shard = ShardRanking {
            ids: &rows.ids,
            cache,
            depth: self.spec.depth,
            batch: self.spec.batch_size,
            device: &self.device,
        };
        let out = shard.answer(&self.asked, judgements, read, &|r| self.text(r), &bar);
        bar.finish_and_clear();
        out
    }

    /// The stale rows aligned with the fresh shard's rows.
    fn stale_aligned(&self) -> Result<Option<Tensor>> {
        let Some((rows, _)) = &self.fresh else {
            return Ok(None);
        };
        if self.stale.0.is_empty() {
            return Ok(None);
        }
        let (values, d) = self.stale.0.vectors(&rows.ids, col::EMBEDDING, "cache")?;
        Ok(Some(Tensor::from_vec(
            values,
            (rows.len(), d),
            &self.device,
        )?))
    }

    /// h(B) of the shard with the current corrector, aligned with the fresh rows (none
    /// without a corrector or a stale cache).
    pub fn correct_shard(&mut self) -> Result<()> {
        self.corrected = None;
        let (Some(name), Some((rows, _))) = (self.models.corrector.clone(), &self.fresh) else {
            return Ok(());
        };
        if self.stale.0.is_empty() {
            return Ok(());
        }
        // Chunk by chunk from the shared shard of B: no aligned copy of the whole of it.
        let h = self.state.corrector(&name)?;
        let mut values = Vec::new();
        let mut d = 0;
        for ids in rows.ids.chunks(CORRECT_ROWS) {
            let (b, width) = self.stale.0.vectors(ids, col::EMBEDDING, "cache")?;
            d = width;
            let b = Tensor::from_vec(b, (ids.len(), d), &self.device)?;
            values.extend(h.forward(&b)?.flatten_all()?.host_vec1::<f32>()?);
        }
        self.corrected = Some(Tensor::from_vec(values, (rows.len(), d), &self.device)?);
        Ok(())
    }

    /// For the first asked queries, each cache's top [`OVERLAP_K`] of this worker's rows
    /// (fresh, stale, corrected) and its share of `KL(P_fresh ‖ P_cache)`.
    pub fn diagnostics(&self) -> Result<Vec<merge::DiagPart>> {
        let Some((rows, fresh)) = &self.fresh else {
            return Ok(Vec::new());
        };
        let Some(stale) = self.stale_aligned()? else {
            return Ok(Vec::new());
        };
        let corrected = match &self.models.corrector {
            Some(h) => Some(self.state.corrector(h)?.apply_chunked(&stale, 8192)?),
            None => None,
        };
        let n = self.asked.len().min(DIAGNOSTIC_QUERIES);
        if n == 0 || rows.is_empty() {
            return Ok(Vec::new());
        }
        let q = self
            .asked
            .gather(&(0..n).collect::<Vec<_>>(), &self.device)?;
        let mut caches = vec![(merge::FRESH, fresh.clone()), (merge::STALE, stale)];
        if let Some(c) = corrected {
            caches.push((merge::CORRECTED, c));
        }
        let mut out = Vec::new();
        for (name, cache) in &caches {
            let tops = top_k(&q, cache, OVERLAP_K, &[], DEFAULT_CHUNK)?;
            let kl = match *name == merge::FRESH {
                true => None,
                false => Some(kl_parts(&q, fresh, cache, self.beta)?),
            };
            for (i, hits) in tops.into_iter().enumerate() {
                out.push(merge::DiagPart {
                    query: self.asked.ids[i].clone(),
                    cache: name,
                    top: hits
                        .into_iter()
                        .map(|(r, s)| (rows.ids[r as usize].clone(), s))
                        .collect(),
                    kl: kl.as_ref().map(|k| k[i]),
                });
            }
        }
        Ok(out)
    }

    /// Takes the shard's rows of `against` out as embeddings batches (`id`,
    /// `text_hash`, `embedding`) for the leader to write: the tensor goes, its values
    /// become one Arrow buffer that every batch slices (one copy of the shard, not two).
    /// Take the corrected rows first: they are named by the fresh rows' ids.
    pub fn take_output(&mut self, against: Against) -> Result<Vec<RecordBatch>> {
        let (tensor, rows) = match against {
            Against::Corrected => match (self.corrected.take(), &self.fresh) {
                (Some(t), Some((rows, _))) => (t, rows.clone_keys()),
                _ => return Ok(Vec::new()),
            },
            Against::Fresh => match self.fresh.take() {
                Some((rows, t)) => (t, rows),
                None => return Ok(Vec::new()),
            },
        };
        let d = tensor.dim(1)?;
        let values = tensor.flatten_all()?.host_vec1::<f32>()?;
        drop(tensor);
        let n = rows.len();
        let all = batch::embeddings_batch(rows.ids, rows.hashes, values, d)?;
        Ok((0..n)
            .step_by(OUTPUT_ROWS)
            .map(|start| all.slice(start, OUTPUT_ROWS.min(n - start)))
            .collect())
    }

    /// A copy of the current weights of every evaluated model.
    pub fn snapshot(&self) -> Result<Snapshots> {
        let mut snaps = Vec::new();
        for name in self.model_names() {
            snaps.push((name.clone(), self.state.trainable(&name)?.snapshot()?));
        }
        Ok(snaps)
    }

    /// Puts `snaps` back into the models.
    fn restore(&self, snaps: &Snapshots) -> Result<()> {
        for (name, snap) in snaps {
            self.state.trainable(name)?.restore(snap)?;
        }
        Ok(())
    }

    /// Copies the current weights of every evaluated model as the best step's.
    pub fn keep_best(&mut self) -> Result<()> {
        self.best = Some(self.snapshot()?);
        Ok(())
    }

    /// Puts the best step's weights back (none kept: the last step's stay).
    pub fn restore_best(&self) -> Result<()> {
        match &self.best {
            Some(snaps) => self.restore(snaps),
            None => Ok(()),
        }
    }

    /// The starting model's dev evaluation, once, after the first step: the starting
    /// weights put in, the shard and this worker's dev queries embedded (returned), the
    /// current weights put back. The starting weights become the best so far; a step
    /// must beat them on dev to replace them.
    pub fn embed_start(&mut self) -> Result<Option<RecordBatch>> {
        let Some(start) = self.start.take() else {
            return Ok(None);
        };
        let current = self.snapshot()?;
        self.restore(&start)?;
        self.embed_shard()?;
        let queries = self.embed_own_queries(&self.dev);
        self.restore(&current)?;
        self.best = Some(start);
        queries
    }
}

/// Per query row of `q`, its share of `KL(softmax(β·q·fresh) ‖ softmax(β·q·cache))` over
/// the rows of `fresh` and `cache`, chunk by chunk (never a query × shard matrix).
fn kl_parts(q: &Tensor, fresh: &Tensor, cache: &Tensor, beta: f64) -> Result<Vec<SoftmaxKlPart>> {
    let (n, rows) = (q.dim(0)?, fresh.dim(0)?);
    let mut parts = vec![SoftmaxKlPart::default(); n];
    for start in (0..rows).step_by(DEFAULT_CHUNK) {
        let len = DEFAULT_CHUNK.min(rows - start);
        let p = q
            .matmul(&fresh.narrow(0, start, len)?.t()?)?
            .host_vec2::<f32>()?;
        let c = q
            .matmul(&cache.narrow(0, start, len)?.t()?)?
            .host_vec2::<f32>()?;
        for (part, (p, c)) in parts.iter_mut().zip(p.iter().zip(&c)) {
            part.add(p, c, beta);
        }
    }
    Ok(parts)
}

/// One shard's rows to rank against: their ids (in id order) and vectors.
pub(super) struct ShardRanking<'a> {
    pub ids: &'a [String],
    pub cache: &'a Tensor,
    /// Results per query.
    pub depth: usize,
    /// Queries per search batch.
    pub batch: usize,
    pub device: &'a Device,
}

impl ShardRanking<'_> {
    /// Every query of `asked`'s top `depth` rows (ties by row: by id), with the texts
    /// (`text` of a row) of the first `read`, and the judged targets of `judgements`
    /// among the rows.
    pub fn answer(
        &self,
        asked: &EmbeddingRows,
        judgements: &[Judgement],
        read: usize,
        text: &dyn Fn(usize) -> Result<String>,
        bar: &indicatif::ProgressBar,
    ) -> Result<ShardAnswer> {
        let index: HashMap<&str, usize> = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let judged: std::collections::BTreeSet<&String> = judgements
            .iter()
            .map(|(_, c, _)| c)
            .filter(|c| index.contains_key(c.as_str()))
            .collect();
        let mut out = ShardAnswer {
            judged: judged.into_iter().cloned().collect(),
            ..ShardAnswer::default()
        };
        if self.ids.is_empty() || asked.is_empty() {
            return Ok(out);
        }
        let all: Vec<usize> = (0..asked.len()).collect();
        for chunk in all.chunks(self.batch.max(1)) {
            let q = asked.gather(chunk, self.device)?;
            for (&i, hits) in
                chunk
                    .iter()
                    .zip(top_k(&q, self.cache, self.depth, &[], DEFAULT_CHUNK)?)
            {
                out.texts.push(
                    hits.iter()
                        .take(read)
                        .map(|&(r, _)| text(r as usize))
                        .collect::<Result<_>>()?,
                );
                out.hits.push(
                    hits.into_iter()
                        .map(|(r, s)| (self.ids[r as usize].clone(), s))
                        .collect(),
                );
                out.queries.push(asked.ids[i].clone());
            }
            bar.inc(chunk.len() as u64);
        }
        Ok(out)
    }
}
