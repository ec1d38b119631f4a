//! The leader's state of a training `eval`: the best dev step so far, the per-step rows,
//! the test results at the best step, and the summary.
//!
//! The workers' shards rank ([`super::shard`]); the leader only merges their answers
//! ([`super::merge`]), scores them, and decides the best step. Every worker keeps its
//! own copy of the best step's weights; the leader's is the one a checkpoint saves.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use freshen_operators::metrics::MetricSet;

use super::answers::{answer_metrics, AnswerCx, AnswerMetrics};
use super::merge::{Gathered, Merged};
use super::rank::write_runs;
use super::shard::EvalShard;
use super::{Eval, EvalModels};
use crate::dataflow::checkpoint::{load_json, load_tensors, save_json, save_tensors};
use crate::dataflow::{RunState, Time, WorkerModels};
use crate::error::{Error, Result};
use crate::store::parquet_io::{AtomicParquetWriter, PendingFile};
use crate::store::tables::{self, LEDGER_REASONS, PER_STEP_REASONS};

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
    pub device: candle_core::Device,
    /// The queries' answers, by id (with `models.reader`).
    pub answers: Arc<HashMap<String, String>>,
}

/// A dev evaluation: its metrics and the diagnostics row (stale and corrected overlap,
/// their softmax KL, then the answers' exact match and NLL).
pub(super) type DevResult = (MetricSet, [Option<f64>; 6]);

/// The test results at the best step.
#[derive(Default)]
pub(super) struct TestResult {
    pub metrics: Option<MetricSet>,
    pub corrected: Option<MetricSet>,
    pub answers: Option<AnswerMetrics>,
}

/// The leader's state of a training eval.
pub(super) struct Evaluator {
    pub spec: Eval,
    pub models: EvalModels,
    pub plan: EvalPlan,
    pub state: Rc<WorkerModels>,
    pub shared: Arc<RunState>,
    /// The leader's own part (its copy of the best weights is the checkpoint's).
    pub shard: Rc<RefCell<EvalShard>>,
    /// Timely workers of the run, over every process.
    pub workers: usize,
    /// The best dev step so far (the updates done: 0 is the starting model) and its dev
    /// value.
    pub best: Option<(u64, f64)>,
    /// Whether the first dev answers to come are the starting model's.
    pub start_pending: bool,
    pub candidates: u64,
    pub last_step: Option<Time>,
    /// Every per-step row emitted so far (a checkpoint keeps them, a resumed run emits
    /// them again before its own).
    pub rows: Vec<RecordBatch>,
    pub test: TestResult,
}

impl Evaluator {
    /// The answer metrics of a merged ranking (with a reader), reading the question
    /// texts `questions`.
    fn answers(
        &self,
        merged: &Merged,
        questions: &HashMap<String, String>,
    ) -> Result<Option<AnswerMetrics>> {
        let Some(name) = &self.models.reader else {
            return Ok(None);
        };
        let reader = self.state.reader(name)?;
        let passages: Vec<&str> = merged.texts.iter().map(String::as_str).collect();
        let cx = AnswerCx {
            alone: self.spec.answer_context == crate::graph::Context::Question,
            reader: &reader,
            k: self.spec.answer_k,
            beta: self.plan.beta,
            passages: &passages,
            questions,
            answers: &self.plan.answers,
        };
        answer_metrics(&cx, &merged.ranked)
    }

    /// Scores the dev evaluation after step `t` (`None`: of the starting model) the
    /// workers answered, and records whether it is the best so far (returned with the
    /// metrics and diagnostics). A step must beat the best before it, the starting
    /// model included, to replace it.
    pub(super) fn dev_step(
        &mut self,
        t: Option<Time>,
        got: &Gathered,
    ) -> Result<(DevResult, bool)> {
        let step = t.map_or(0, |t| t + 1);
        if t.is_none() {
            self.start_pending = false;
        }
        let (dev, questions) = {
            let s = self.shard.borrow();
            (s.dev.clone(), s.asked_texts.clone())
        };
        let merged = got.ranking(&dev, self.spec.depth, &self.spec.recall_at)?;
        let [a, b, c, d] = got.diagnostics();
        let answers = self.answers(&merged, &questions)?;
        let value = match self.spec.select_by.as_str() {
            "exact_match" => answers.map_or(0.0, |m| m.exact_match),
            other => select(&merged.ranked.metrics, other),
        };
        let best = self.best.is_none_or(|b| value > b.1);
        tracing::info!(
            step,
            metric = self.spec.select_by.as_str(),
            value,
            best,
            "dev evaluation"
        );
        if best {
            self.best = Some((step, value));
        }
        let diag = [
            a,
            b,
            c,
            d,
            answers.map(|m| m.exact_match),
            answers.map(|m| m.answer_nll),
        ];
        Ok(((merged.ranked.metrics, diag), best))
    }

    /// Scores the test evaluation at the best step: the ranking of the re-embedded corpus
    /// (written as the run files) and, with a corrector, of the corrected cache.
    pub(super) fn test_step(&mut self, fresh: &Gathered, corrected: &Gathered) -> Result<()> {
        let (test, questions) = {
            let s = self.shard.borrow();
            (s.test.clone(), s.asked_texts.clone())
        };
        let (depth, recall_at) = (self.spec.depth, self.spec.recall_at.clone());
        let merged = fresh.ranking(&test, depth, &recall_at)?;
        write_runs(&self.spec, &merged.ranked, &merged.ids, &self.shared)?;
        self.test.answers = self.answers(&merged, &questions)?;
        self.test.metrics = Some(merged.ranked.metrics);
        if !corrected.is_empty() {
            self.test.corrected = Some(corrected.ranking(&test, depth, &recall_at)?.ranked.metrics);
        }
        Ok(())
    }

    /// Writes the best step's weights into a staged folder that replaces `dest` when the
    /// run commits its outputs (the weights are back in the models by then).
    pub(super) fn save_checkpoint(&self, dest: &Path) -> Result<()> {
        let staged = PendingFile::folder(dest)?;
        let dir = staged.tmp_path();
        for name in self.shard.borrow().model_names() {
            self.state.save_model(&name, dir)?;
        }
        self.shared.add_pending(staged);
        Ok(())
    }

    /// The summary row, once every step and the test evaluation are done.
    pub(super) fn summary(&self) -> Result<RecordBatch> {
        let (best_step, best_value) = match self.best {
            Some((t, v)) => (t, v),
            None => (self.last_step.map_or(0, |t| t + 1), f64::NAN),
        };
        let test = self
            .test
            .metrics
            .as_ref()
            .ok_or_else(|| Error::invariant("a training eval finished without its test"))?;
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
        for m in [Some(test), self.test.corrected.as_ref()] {
            for k in recall_at {
                cols.push(f(m.map(|m| m.recall_at(*k).unwrap_or(0.0))));
            }
            cols.push(f(m.map(|m| m.mrr_at_10)));
            cols.push(f(m.map(|m| m.ndcg_at_10)));
        }
        cols.push(f(self.test.answers.map(|a| a.exact_match)));
        cols.push(f(self.test.answers.map(|a| a.answer_nll)));
        let ledger = self.shared.ledger();
        let mut total = 0;
        for reason in LEDGER_REASONS {
            let (n, secs) = ledger.get(reason).copied().unwrap_or((0, 0.0));
            total += n;
            cols.push(u(n));
            cols.push(f(Some(secs)));
        }
        let per_step: u64 = PER_STEP_REASONS
            .iter()
            .map(|r| ledger.get(*r).map_or(0, |e| e.0))
            .sum();
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
            u(total - per_step),
            f(Some(self.shared.elapsed())),
            u(self.shared.stats().values().map(|s| s.skipped as u64).sum()),
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

    /// Writes what the evaluator carries across steps into a checkpoint's `dir`: the best
    /// step, its weights (the leader's copy) and the rows so far.
    pub(super) fn save_state(&self, dir: &Path) -> Result<()> {
        let shard = self.shard.borrow();
        let snaps = shard.best.as_ref();
        save_json(
            &dir.join("eval.json"),
            &serde_json::json!({
                "best_step": self.best.map(|b| b.0),
                "best_value": self.best.map(|b| b.1),
                "best_models": snaps.map(|s| s.iter().map(|(m, _)| m.clone()).collect::<Vec<_>>()),
                "candidates": self.candidates,
                "last_step": self.last_step,
            }),
        )?;
        for (model, snap) in snaps.into_iter().flatten() {
            save_tensors(&dir.join(format!("best-{model}.safetensors")), snap)?;
        }
        let schema = tables::eval_steps_schema(&self.spec.recall_at);
        let mut w = AtomicParquetWriter::create(&dir.join("rows.parquet"), schema)?;
        for r in &self.rows {
            w.write(r)?;
        }
        w.finish()?.commit()
    }

    /// Takes back what [`Evaluator::save_state`] wrote (on the leader).
    pub(super) fn restore_state(&mut self, dir: &Path) -> Result<()> {
        let v = load_json(&dir.join("eval.json"))?;
        self.candidates = v["candidates"].as_u64().unwrap_or(0);
        self.last_step = v["last_step"].as_u64();
        self.best = match (v["best_step"].as_u64(), v["best_value"].as_f64()) {
            (Some(step), Some(value)) => Some((step, value)),
            _ => None,
        };
        self.rows = crate::store::parquet_io::read_all(&dir.join("rows.parquet"))?;
        Ok(())
    }
}

impl EvalShard {
    /// Takes back the best step's weights a checkpoint's `dir` holds (on every worker:
    /// the models are the same on all of them).
    pub(super) fn restore_best_from(&mut self, dir: &Path) -> Result<()> {
        let v = load_json(&dir.join("eval.json"))?;
        let Some(models) = v["best_models"].as_array() else {
            self.best = None;
            return Ok(());
        };
        let mut snaps = Vec::new();
        for m in models {
            let name = m.as_str().unwrap_or_default().to_string();
            let path = dir.join(format!("best-{name}.safetensors"));
            let saved = load_tensors(&path, &self.device)?;
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
        self.best = Some(snaps);
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
