//! The leader's state of a training `eval`: the corpus, queries and judgements it has
//! seen, the stale cache, and the best dev step's weights.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use candle_core::{Device, Tensor};
use freshen_operators::loss::softmax_kl;
use freshen_operators::metrics::MetricSet;
use freshen_operators::search::{top_k, DEFAULT_CHUNK};
use freshen_operators::train::TrainableEncoder;

use super::answers::{answer_metrics, AnswerCx, AnswerMetrics};
use super::rank::{rank_and_score, write_runs, RankCx, Ranked};
use super::{Eval, EvalModels};
use crate::dataflow::checkpoint::{load_json, load_tensors, save_json, save_tensors};
use crate::dataflow::{EmbeddingRows, RunState, Time, WorkerModels};
use crate::error::{Error, Result};
use crate::store::batch;
use crate::store::parquet_io::{AtomicParquetWriter, PendingFile};
use crate::store::tables::{self, LEDGER_REASONS};

/// Dev queries used by the oracle diagnostics (bounds their cost on large dev sets).
const DIAGNOSTIC_QUERIES: usize = 256;
/// Top-k of the diagnostics' overlap.
const OVERLAP_K: usize = 10;

/// What a training eval needs beyond its settings.
#[derive(Clone)]
pub(super) struct EvalPlan {
    /// Steps of the run.
    pub steps: usize,
    /// β of the loss (for the diagnostics' softmax).
    pub beta: f64,
    /// The run's name (the pipeline's).
    pub run: String,
    /// The settings, as JSON.
    pub settings: String,
    /// The device of the towers: where the evaluation embeds and searches.
    pub device: Device,
    /// The queries' answers, by id (with `models.reader`).
    pub answers: std::sync::Arc<HashMap<String, String>>,
}

/// Every model's weights, by model name.
type Snapshots = Vec<(String, Vec<(String, Tensor)>)>;

/// The best dev step so far: its step, its dev value and its weights.
type Best = (Time, f64, Snapshots);

/// Rows per batch of the written embeddings.
const EMBEDDINGS_BATCH_ROWS: usize = 65_536;

/// The leader's state of a training eval.
pub(super) struct Evaluator {
    pub spec: Eval,
    pub models: EvalModels,
    pub plan: EvalPlan,
    pub state: Rc<WorkerModels>,
    pub shared: Arc<RunState>,
    /// Timely workers of the run, over every process.
    pub workers: usize,
    pub corpus: Vec<((String, u64), String)>,
    pub queries: HashMap<String, String>,
    pub dev: Vec<(String, String, i32)>,
    pub test: Vec<(String, String, i32)>,
    pub stale: EmbeddingRows,
    pub best: Option<Best>,
    pub candidates: u64,
    pub last_step: Option<Time>,
    /// Every per-step row emitted so far (a checkpoint keeps them, a resumed run emits
    /// them again before its own).
    pub rows: Vec<RecordBatch>,
}

impl Evaluator {
    fn models(&self) -> Vec<String> {
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

    fn query_model(&self) -> Result<Rc<dyn TrainableEncoder>> {
        self.state.encoder(&self.models.query)
    }

    fn target_model(&self) -> Result<Rc<dyn TrainableEncoder>> {
        self.state.encoder(&self.models.target)
    }

    /// The corpus embedded by the current target tower, in corpus order (ledger: eval).
    fn embed_corpus(&self) -> Result<EmbeddingRows> {
        let enc = self.target_model()?;
        let started = Instant::now();
        let mut out = EmbeddingRows::default();
        for chunk in self.corpus.chunks(4096) {
            let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
            let v = enc.encode(&texts)?;
            out.values.extend(v.flatten_all()?.to_vec1::<f32>()?);
            out.ids.extend(chunk.iter().map(|((id, _), _)| id.clone()));
            out.hashes.extend(chunk.iter().map(|((_, h), _)| *h));
        }
        out.dim = enc.dim();
        let secs = started.elapsed().as_secs_f64();
        self.shared.forwards("eval", self.corpus.len() as u64, secs);
        Ok(out)
    }

    /// The queries judged in `judgements`, embedded by the current query tower.
    fn embed_queries(&self, judgements: &[(String, String, i32)]) -> Result<EmbeddingRows> {
        let enc = self.query_model()?;
        let mut ids: Vec<&String> = judgements.iter().map(|(q, _, _)| q).collect();
        ids.sort();
        ids.dedup();
        let ids: Vec<&String> = ids
            .into_iter()
            .filter(|q| self.queries.contains_key(*q))
            .collect();
        let mut out = EmbeddingRows::default();
        for chunk in ids.chunks(4096) {
            let texts: Vec<&str> = chunk.iter().map(|q| self.queries[*q].as_str()).collect();
            let v = enc.encode(&texts)?;
            out.values.extend(v.flatten_all()?.to_vec1::<f32>()?);
            out.ids.extend(chunk.iter().map(|q| (*q).clone()));
        }
        out.hashes.resize(out.ids.len(), 0);
        out.dim = enc.dim();
        Ok(out)
    }

    fn rank(
        &self,
        queries: &EmbeddingRows,
        targets: &[String],
        cache: &Tensor,
        judgements: &[(String, String, i32)],
    ) -> Result<Ranked> {
        let bar = self.shared.progress().bar("eval", 0);
        let cx = RankCx {
            depth: self.spec.depth,
            batch: self.spec.batch_size,
            recall_at: &self.spec.recall_at,
            device: &self.plan.device,
            bar: &bar,
        };
        let r = rank_and_score(queries, targets, cache, judgements, &cx);
        bar.finish_and_clear();
        r
    }

    /// The stale cache aligned to `ids` (the corpus order).
    fn stale_aligned(&self, ids: &[String]) -> Result<Tensor> {
        let index = self.stale.index();
        let rows = ids
            .iter()
            .map(|id| {
                index
                    .get(id)
                    .copied()
                    .ok_or_else(|| Error::invariant(format!("`{id}` is not in the cache")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.stale.gather(&rows, &self.plan.device)
    }

    fn corrected(&self, stale: &Tensor) -> Result<Option<Tensor>> {
        match self.models.corrector.as_ref() {
            Some(h) => Ok(Some(self.state.corrector(h)?.apply_chunked(stale, 8192)?)),
            None => Ok(None),
        }
    }

    /// Top-k overlap with the fresh cache, and softmax KL against it, of the stale and the
    /// corrected caches, on the first dev queries.
    fn diagnostics(
        &self,
        queries: &EmbeddingRows,
        fresh: &Tensor,
        stale: &Tensor,
        corrected: Option<&Tensor>,
    ) -> Result<[Option<f64>; 4]> {
        let n = queries.len().min(DIAGNOSTIC_QUERIES);
        let rows: Vec<usize> = (0..n).collect();
        let q = queries.gather(&rows, &self.plan.device)?;
        let top = |cache: &Tensor| -> Result<Vec<Vec<u32>>> {
            Ok(top_k(&q, cache, OVERLAP_K, &[], DEFAULT_CHUNK)?
                .into_iter()
                .map(|hits| hits.into_iter().map(|(i, _)| i).collect())
                .collect())
        };
        let exact = top(fresh)?;
        let overlap = |cache: &Tensor| -> Result<f64> {
            let got = top(cache)?;
            let hit: usize = exact
                .iter()
                .zip(&got)
                .map(|(a, b)| a.iter().filter(|x| b.contains(x)).count())
                .sum();
            Ok(hit as f64 / (n * OVERLAP_K).max(1) as f64)
        };
        let kl = |cache: &Tensor| -> Result<f64> {
            let (p, c) = (q.matmul(&fresh.t()?)?, q.matmul(&cache.t()?)?);
            Ok(softmax_kl(&p, &c, self.plan.beta)?)
        };
        Ok([
            Some(overlap(stale)?),
            corrected.map(overlap).transpose()?,
            Some(kl(stale)?),
            corrected.map(kl).transpose()?,
        ])
    }

    /// The answer metrics of `ranked` over the corpus rows `ids` (with a reader).
    fn answers(&self, ranked: &Ranked) -> Result<Option<AnswerMetrics>> {
        let Some(name) = &self.models.reader else {
            return Ok(None);
        };
        let reader = self.state.reader(name)?;
        let passages: Vec<&str> = self.corpus.iter().map(|(_, t)| t.as_str()).collect();
        let cx = AnswerCx {
            alone: self.spec.answer_context == crate::nodes::read::Context::Question,
            reader: &reader,
            k: self.spec.answer_k,
            beta: self.plan.beta,
            passages: &passages,
            questions: &self.queries,
            answers: &self.plan.answers,
        };
        answer_metrics(&cx, ranked)
    }

    /// The dev evaluation of step `t`: metrics, diagnostics (the caches' overlap and KL,
    /// then the answers' exact match and NLL), and the best step's weights.
    pub(super) fn dev_step(&mut self, t: Time) -> Result<(MetricSet, [Option<f64>; 6])> {
        self.shared
            .progress()
            .set_done("train", t + 1, "evaluating on dev".into());
        let mut fresh = self.embed_corpus()?;
        let queries = self.embed_queries(&self.dev)?;
        // The vectors move into the tensor: one copy of the corpus at a time, not two.
        let shape = (fresh.len(), fresh.dim);
        let cache = Tensor::from_vec(std::mem::take(&mut fresh.values), shape, &self.plan.device)?;
        let ranked = self.rank(&queries, &fresh.ids, &cache, &self.dev)?;
        let [a, b, c, d] = if self.spec.diagnostics {
            let stale = self.stale_aligned(&fresh.ids)?;
            let corrected = self.corrected(&stale)?;
            self.diagnostics(&queries, &cache, &stale, corrected.as_ref())?
        } else {
            [None; 4]
        };
        let answers = self.answers(&ranked)?;
        let diag = [
            a,
            b,
            c,
            d,
            answers.map(|m| m.exact_match),
            answers.map(|m| m.answer_nll),
        ];
        let value = match self.spec.select_by.as_str() {
            "exact_match" => answers.map_or(0.0, |m| m.exact_match),
            other => select(&ranked.metrics, other),
        };
        tracing::info!(
            step = t + 1,
            metric = self.spec.select_by.as_str(),
            value,
            best = self.best.as_ref().is_none_or(|b| value > b.1),
            "dev evaluation"
        );
        if self.best.as_ref().is_none_or(|b| value > b.1) {
            let mut snaps = Vec::new();
            for name in self.models() {
                let snap = self.state.trainable(&name)?.snapshot()?;
                snaps.push((name, snap));
            }
            self.best = Some((t, value, snaps));
        }
        Ok((ranked.metrics, diag))
    }

    /// After the last step: the best weights back, test metrics, checkpoint, summary.
    pub(super) fn finish(&mut self) -> Result<RecordBatch> {
        self.shared.progress().set_done(
            "train",
            self.plan.steps as u64,
            "test evaluation at the best dev step, writing outputs".into(),
        );
        let (best_step, best_value) = match &self.best {
            Some((t, v, snaps)) => {
                for (name, snap) in snaps {
                    self.state.trainable(name)?.restore(snap)?;
                }
                (*t, *v)
            }
            None => (self.last_step.unwrap_or(0), f64::NAN),
        };
        let mut fresh = self.embed_corpus()?;
        let queries = self.embed_queries(&self.test)?;
        // The embeddings are written first, so that the vectors can then move into the
        // ranking's tensor: one copy of the corpus at a time.
        if let Some(path) = &self.spec.embeddings {
            let mut w = AtomicParquetWriter::create(path, tables::embeddings_schema(fresh.dim))?;
            for start in (0..fresh.len()).step_by(EMBEDDINGS_BATCH_ROWS) {
                let end = (start + EMBEDDINGS_BATCH_ROWS).min(fresh.len());
                w.write(&fresh.batch_of(start..end, None)?)?;
            }
            self.shared.add_pending(w.finish()?);
        }
        let shape = (fresh.len(), fresh.dim);
        let cache = Tensor::from_vec(std::mem::take(&mut fresh.values), shape, &self.plan.device)?;
        let ranked = self.rank(&queries, &fresh.ids, &cache, &self.test)?;
        drop(cache);
        write_runs(&self.spec, &ranked, &fresh.ids, &self.shared)?;
        let answers = self.answers(&ranked)?;
        let corrected = match self.stale.is_empty() {
            true => None,
            false => {
                let stale = self.stale_aligned(&fresh.ids)?;
                match self.corrected(&stale)? {
                    Some(c) => {
                        if let Some(path) = &self.spec.corrected_embeddings {
                            self.write_corrected(path, &fresh, &c)?;
                        }
                        Some(self.rank(&queries, &fresh.ids, &c, &self.test)?.metrics)
                    }
                    None => None,
                }
            }
        };
        if let Some(dir) = &self.spec.checkpoint {
            self.save_checkpoint(dir)?;
        }
        self.summary(
            best_step,
            best_value,
            &ranked.metrics,
            corrected.as_ref(),
            answers,
        )
    }

    /// Writes the corrected cache `corrected` (rows in the order of `rows`, whose ids and
    /// text hashes it takes) as the deployable index, committed with the run.
    fn write_corrected(&self, path: &Path, rows: &EmbeddingRows, corrected: &Tensor) -> Result<()> {
        let dim = corrected.dim(1)?;
        let values: Vec<f32> = corrected.flatten_all()?.to_vec1()?;
        let mut w = AtomicParquetWriter::create(path, tables::embeddings_schema(dim))?;
        for start in (0..rows.len()).step_by(EMBEDDINGS_BATCH_ROWS) {
            let end = (start + EMBEDDINGS_BATCH_ROWS).min(rows.len());
            w.write(&batch::embeddings_batch(
                rows.ids[start..end].to_vec(),
                rows.hashes[start..end].to_vec(),
                values[start * dim..end * dim].to_vec(),
                dim,
            )?)?;
        }
        self.shared.add_pending(w.finish()?);
        Ok(())
    }

    /// Writes the best step's weights into a staged folder that replaces `dest` when the
    /// run commits its outputs.
    fn save_checkpoint(&self, dest: &Path) -> Result<()> {
        let staged = PendingFile::folder(dest)?;
        let dir = staged.tmp_path();
        for name in self.models() {
            self.state.save_model(&name, dir)?;
        }
        self.shared.add_pending(staged);
        Ok(())
    }

    fn summary(
        &self,
        best_step: Time,
        best_value: f64,
        test: &MetricSet,
        corrected: Option<&MetricSet>,
        answers: Option<AnswerMetrics>,
    ) -> Result<RecordBatch> {
        let recall_at = &self.spec.recall_at;
        let f = |v: Option<f64>| Arc::new(Float64Array::from(vec![v])) as ArrayRef;
        let u = |v: u64| Arc::new(UInt64Array::from(vec![v])) as ArrayRef;
        let s = |v: &str| Arc::new(StringArray::from(vec![v])) as ArrayRef;
        let mut cols = vec![
            s(&self.plan.run),
            u(self.plan.steps as u64),
            u(best_step),
            s(&self.spec.select_by),
            f(Some(best_value)),
            u(test.queries as u64),
        ];
        for m in [Some(test), corrected] {
            for k in recall_at {
                cols.push(f(m.map(|m| m.recall_at(*k).unwrap_or(0.0))));
            }
            cols.push(f(m.map(|m| m.mrr_at_10)));
            cols.push(f(m.map(|m| m.ndcg_at_10)));
        }
        cols.push(f(answers.map(|a| a.exact_match)));
        cols.push(f(answers.map(|a| a.answer_nll)));
        let ledger = self.shared.ledger();
        let mut total = 0;
        for reason in LEDGER_REASONS {
            let (n, secs) = ledger.get(reason).copied().unwrap_or((0, 0.0));
            total += n;
            cols.push(u(n));
            cols.push(f(Some(secs)));
        }
        let touched = ledger.get("touched").map_or(0, |e| e.0);
        let held = self.shared.held();
        let list = |v: Vec<u64>| {
            Arc::new(arrow::array::ListArray::from_iter_primitive::<
                arrow::datatypes::UInt64Type,
                _,
                _,
            >([Some(v.into_iter().map(Some))])) as ArrayRef
        };
        cols.extend([
            u(self.candidates),
            u(total),
            u(total - touched),
            f(Some(self.shared.elapsed())),
            u(self.workers as u64),
            list(held.shard_rows(self.workers)),
            list(held.bytes_per_worker(self.workers)),
            list(held.peaks.values().copied().collect()),
            s(&self.plan.settings),
        ]);
        Ok(RecordBatch::try_new(
            tables::summary_schema(recall_at),
            cols,
        )?)
    }
}

impl Evaluator {
    /// Writes what the evaluator carries across steps into a checkpoint's `dir`.
    pub(super) fn save_state(&self, dir: &Path) -> Result<()> {
        let best = self.best.as_ref();
        save_json(
            &dir.join("eval.json"),
            &serde_json::json!({
                "best_step": best.map(|b| b.0),
                "best_value": best.map(|b| b.1),
                "best_models": best.map(|b| b.2.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>()),
                "candidates": self.candidates,
                "last_step": self.last_step,
            }),
        )?;
        if let Some((_, _, snaps)) = best {
            for (model, snap) in snaps {
                save_tensors(&dir.join(format!("best-{model}.safetensors")), snap)?;
            }
        }
        let schema = tables::eval_steps_schema(&self.spec.recall_at);
        let mut w = AtomicParquetWriter::create(&dir.join("rows.parquet"), schema)?;
        for r in &self.rows {
            w.write(r)?;
        }
        w.finish()?.commit()
    }

    /// Takes back what [`Evaluator::save_state`] wrote.
    pub(super) fn restore_state(&mut self, dir: &Path) -> Result<()> {
        let v = load_json(&dir.join("eval.json"))?;
        self.candidates = v["candidates"].as_u64().unwrap_or(0);
        self.last_step = v["last_step"].as_u64();
        self.best = match (v["best_step"].as_u64(), v["best_value"].as_f64()) {
            (Some(step), Some(value)) => {
                let mut snaps = Vec::new();
                for m in v["best_models"].as_array().into_iter().flatten() {
                    let name = m.as_str().unwrap_or_default().to_string();
                    let path = dir.join(format!("best-{name}.safetensors"));
                    let saved = load_tensors(&path, &self.plan.device)?;
                    let params = self.state.trainable(&name)?.params();
                    let mut snap = Vec::with_capacity(params.len());
                    for (p, _) in params {
                        let t = saved.get(&p).cloned().ok_or_else(|| {
                            Error::data(&path, None, format!("the checkpoint lacks `{p}`"))
                        })?;
                        snap.push((p, t));
                    }
                    snaps.push((name, snap));
                }
                Some((step, value, snaps))
            }
            _ => None,
        };
        self.rows = crate::store::parquet_io::read_all(&dir.join("rows.parquet"))?;
        Ok(())
    }
}

/// The value of dev metric `name` (checked when the settings were read).
fn select(m: &MetricSet, name: &str) -> f64 {
    match name {
        "mrr_at_10" => m.mrr_at_10,
        "ndcg_at_10" => m.ndcg_at_10,
        other => other
            .strip_prefix("recall_at_")
            .and_then(|k| k.parse().ok())
            .and_then(|k| m.recall_at(k))
            .unwrap_or(0.0),
    }
}
