//! `eval` during training: dev metrics every N steps, the best step kept, test at the end.
//!
//! At a dev step it re-embeds the corpus with the current target tower (counted in the
//! ledger under `eval`), ranks the dev queries exactly and keeps a copy of the weights if
//! the step beats the best so far (early stopping, as practitioners select checkpoints).
//! After the last step it puts the best weights back and reports test metrics twice: with
//! the corpus re-embedded (the standard), and against the corrected cache h(B) with no
//! re-embedding at all. Its per-step rows carry `update`'s row plus the dev columns; its
//! output is part of the feedback loop, so step `t + 1` starts only after its dev
//! evaluation of step `t` has read the weights of step `t`.

use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::AsArray;
use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::UInt64Type;
use candle_core::{Device, Tensor};
use freshen_operators::loss::softmax_kl;
use freshen_operators::metrics::MetricSet;
use freshen_operators::search::{top_k, DEFAULT_CHUNK};
use freshen_operators::train::{Trainable, TrainableEncoder};
use timely::dataflow::Scope;

use super::{rows_of, tick, TrainState};
use crate::error::{Error, Result};
use crate::runtime::dataflow::{BatchStream, Time};
use crate::runtime::eval::{push_qrels, rank_and_score, write_runs, Ranked};
use crate::runtime::ops::joined_rows;
use crate::runtime::shared::Shared;
use crate::runtime::stepwise::{stepwise, Route};
use crate::spec::EvalSpec;
use crate::store::batch::{self, Batch};
use crate::store::parquet_io::AtomicParquetWriter;
use crate::store::tables::{self, LEDGER_REASONS};
use crate::store::vectors::Vectors;

/// Dev queries used by the oracle diagnostics (bounds their cost on large dev sets).
const DIAGNOSTIC_QUERIES: usize = 256;
/// Top-k of the diagnostics' overlap.
const OVERLAP_K: usize = 10;

/// What a training eval needs beyond its settings.
pub struct EvalPlan {
    /// Steps of the run.
    pub steps: usize,
    /// β of the loss (for the diagnostics' softmax).
    pub beta: f64,
    /// The run's name (the pipeline's).
    pub run: String,
    /// The settings, as JSON.
    pub settings: String,
}

/// Every model's weights, by model name.
type Snapshots = Vec<(String, Vec<(String, Tensor)>)>;

/// The best dev step so far: its step, its dev value and its weights.
type Best = (Time, f64, Snapshots);

/// The leader's state of a training eval.
struct Evaluator {
    spec: EvalSpec,
    plan: EvalPlan,
    state: Rc<TrainState>,
    shared: Arc<Shared>,
    corpus: Vec<((String, u64), String)>,
    queries: HashMap<String, String>,
    dev: Vec<(String, String, i32)>,
    test: Vec<(String, String, i32)>,
    stale: Vectors,
    best: Option<Best>,
    candidates: u64,
    last_step: Option<Time>,
}

impl Evaluator {
    fn models(&self) -> Vec<String> {
        let m = self
            .spec
            .models
            .as_ref()
            .expect("a training eval has models");
        [
            Some(m.query.clone()),
            Some(m.target.clone()),
            m.corrector.clone(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    fn query_model(&self) -> Result<Rc<dyn TrainableEncoder>> {
        self.state
            .encoder(&self.spec.models.as_ref().expect("models").query)
    }

    fn target_model(&self) -> Result<Rc<dyn TrainableEncoder>> {
        self.state
            .encoder(&self.spec.models.as_ref().expect("models").target)
    }

    /// The corpus embedded by the current target tower, in corpus order (ledger: eval).
    fn embed_corpus(&self) -> Result<Vectors> {
        let enc = self.target_model()?;
        let started = Instant::now();
        let mut out = Vectors::default();
        for chunk in self.corpus.chunks(4096) {
            let texts: Vec<&str> = chunk.iter().map(|(_, t)| t.as_str()).collect();
            let v = enc.encode(&texts)?;
            out.values.extend(
                v.flatten_all()
                    .and_then(|x| x.to_vec1::<f32>())
                    .map_err(freshen_operators::Error::from)?,
            );
            out.ids.extend(chunk.iter().map(|((id, _), _)| id.clone()));
            out.hashes.extend(chunk.iter().map(|((_, h), _)| *h));
        }
        out.dim = enc.dim();
        let secs = started.elapsed().as_secs_f64();
        self.shared.forwards("eval", self.corpus.len() as u64, secs);
        Ok(out)
    }

    /// The queries judged in `judgements`, embedded by the current query tower.
    fn embed_queries(&self, judgements: &[(String, String, i32)]) -> Result<Vectors> {
        let enc = self.query_model()?;
        let mut ids: Vec<&String> = judgements.iter().map(|(q, _, _)| q).collect();
        ids.sort();
        ids.dedup();
        let ids: Vec<&String> = ids
            .into_iter()
            .filter(|q| self.queries.contains_key(*q))
            .collect();
        let mut out = Vectors::default();
        for chunk in ids.chunks(4096) {
            let texts: Vec<&str> = chunk.iter().map(|q| self.queries[*q].as_str()).collect();
            let v = enc.encode(&texts)?;
            out.values.extend(
                v.flatten_all()
                    .and_then(|x| x.to_vec1::<f32>())
                    .map_err(freshen_operators::Error::from)?,
            );
            out.ids.extend(chunk.iter().map(|q| (*q).clone()));
        }
        out.hashes.resize(out.ids.len(), 0);
        out.dim = enc.dim();
        Ok(out)
    }

    fn rank(
        &self,
        queries: &Vectors,
        targets: &[String],
        cache: &Tensor,
        judgements: &[(String, String, i32)],
    ) -> Result<Ranked> {
        let bar = self.shared.bar("eval", 0);
        let r = rank_and_score(
            queries,
            targets,
            cache,
            judgements,
            self.spec.depth,
            self.spec.batch_size,
            &self.spec.recall_at,
            &bar,
        );
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
                    .ok_or_else(|| Error::Other(format!("`{id}` is not in the cache")))
            })
            .collect::<Result<Vec<_>>>()?;
        self.stale.gather(&rows, &Device::Cpu)
    }

    fn corrected(&self, stale: &Tensor) -> Result<Option<Tensor>> {
        match self.spec.models.as_ref().and_then(|m| m.corrector.as_ref()) {
            Some(h) => Ok(Some(self.state.corrector(h)?.apply_chunked(stale, 8192)?)),
            None => Ok(None),
        }
    }

    /// Top-k overlap with the fresh cache, and softmax KL against it, of the stale and the
    /// corrected caches, on the first dev queries.
    fn diagnostics(
        &self,
        queries: &Vectors,
        fresh: &Tensor,
        stale: &Tensor,
        corrected: Option<&Tensor>,
    ) -> Result<[Option<f64>; 4]> {
        let n = queries.len().min(DIAGNOSTIC_QUERIES);
        let rows: Vec<usize> = (0..n).collect();
        let q = queries.gather(&rows, &Device::Cpu)?;
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
            let (p, c) = (
                q.matmul(&fresh.t().map_err(compute)?).map_err(compute)?,
                q.matmul(&cache.t().map_err(compute)?).map_err(compute)?,
            );
            Ok(softmax_kl(&p, &c, self.plan.beta)?)
        };
        Ok([
            Some(overlap(stale)?),
            corrected.map(overlap).transpose()?,
            Some(kl(stale)?),
            corrected.map(kl).transpose()?,
        ])
    }

    /// The dev evaluation of step `t`: metrics, diagnostics, and the best step's weights.
    fn dev_step(&mut self, t: Time) -> Result<(MetricSet, [Option<f64>; 4])> {
        let fresh = self.embed_corpus()?;
        let queries = self.embed_queries(&self.dev)?;
        let cache = fresh.tensor(&Device::Cpu)?;
        let ranked = self.rank(&queries, &fresh.ids, &cache, &self.dev)?;
        let diag = if self.spec.diagnostics {
            let stale = self.stale_aligned(&fresh.ids)?;
            let corrected = self.corrected(&stale)?;
            self.diagnostics(&queries, &cache, &stale, corrected.as_ref())?
        } else {
            [None; 4]
        };
        let value = select(&ranked.metrics, &self.spec.select_by);
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
                let snap = match self.state.encoders.get(&name) {
                    Some(e) => e.snapshot()?,
                    None => self.state.corrector(&name)?.snapshot()?,
                };
                snaps.push((name, snap));
            }
            self.best = Some((t, value, snaps));
        }
        Ok((ranked.metrics, diag))
    }

    /// After the last step: the best weights back, test metrics, checkpoint, summary.
    fn finish(&mut self) -> Result<RecordBatch> {
        let (best_step, best_value) = match &self.best {
            Some((t, v, snaps)) => {
                for (name, snap) in snaps {
                    match self.state.encoders.get(name) {
                        Some(e) => e.restore(snap)?,
                        None => self.state.corrector(name)?.restore(snap)?,
                    }
                }
                (*t, *v)
            }
            None => (self.last_step.unwrap_or(0), f64::NAN),
        };
        let fresh = self.embed_corpus()?;
        let queries = self.embed_queries(&self.test)?;
        let ranked = self.rank(
            &queries,
            &fresh.ids,
            &fresh.tensor(&Device::Cpu)?,
            &self.test,
        )?;
        write_runs(&self.spec, &ranked, &fresh.ids, &self.shared)?;
        let corrected = match self.stale.is_empty() {
            true => None,
            false => {
                let stale = self.stale_aligned(&fresh.ids)?;
                match self.corrected(&stale)? {
                    Some(c) => Some(self.rank(&queries, &fresh.ids, &c, &self.test)?.metrics),
                    None => None,
                }
            }
        };
        if let Some(dir) = &self.spec.checkpoint {
            self.save_checkpoint(dir)?;
        }
        if let Some(path) = &self.spec.embeddings {
            let mut w = AtomicParquetWriter::create(path, tables::embeddings_schema(fresh.dim))?;
            w.write(&batch::embeddings_batch(
                fresh.ids.clone(),
                fresh.hashes.clone(),
                fresh.values.clone(),
                fresh.dim,
            )?)?;
            self.shared.add_pending(w.finish()?);
        }
        self.summary(best_step, best_value, &ranked.metrics, corrected.as_ref())
    }

    fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        for name in self.models() {
            match self.state.encoders.get(&name) {
                Some(e) => {
                    e.save_checkpoint(dir, &name)?;
                }
                None => self
                    .state
                    .corrector(&name)?
                    .save(&dir.join(format!("{name}.safetensors")))?,
            }
        }
        Ok(())
    }

    fn summary(
        &self,
        best_step: Time,
        best_value: f64,
        test: &MetricSet,
        corrected: Option<&MetricSet>,
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
        let ledger = self.shared.ledger();
        let mut total = 0;
        for reason in LEDGER_REASONS {
            let (n, secs) = ledger.get(reason).copied().unwrap_or((0, 0.0));
            total += n;
            cols.push(u(n));
            cols.push(f(Some(secs)));
        }
        let touched = ledger.get("touched").map_or(0, |e| e.0);
        cols.extend([
            u(self.candidates),
            u(total),
            u(total - touched),
            f(Some(self.shared.elapsed())),
            s(&self.plan.settings),
        ]);
        Ok(RecordBatch::try_new(
            tables::summary_schema(recall_at),
            cols,
        )?)
    }
}

/// The value of dev metric `name` (checked by the spec).
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

fn compute(e: candle_core::Error) -> Error {
    Error::Compute(e.into())
}

/// `update`'s row with the dev columns of [`tables::eval_steps_schema`] appended.
fn steps_row(
    row: &RecordBatch,
    recall_at: &[usize],
    dev: Option<&(MetricSet, [Option<f64>; 4])>,
) -> Result<RecordBatch> {
    let mut cols = row.columns().to_vec();
    let f = |v: Option<f64>| Arc::new(Float64Array::from(vec![v])) as ArrayRef;
    for k in recall_at {
        cols.push(f(dev.map(|d| d.0.recall_at(*k).unwrap_or(0.0))));
    }
    cols.push(f(dev.map(|d| d.0.mrr_at_10)));
    cols.push(f(dev.map(|d| d.0.ndcg_at_10)));
    for i in 0..4 {
        cols.push(f(dev.and_then(|d| d.1[i])));
    }
    Ok(RecordBatch::try_new(
        tables::eval_steps_schema(recall_at),
        cols,
    )?)
}

/// A training eval. Inputs: `update`'s rows, corpus, queries, dev qrels, test qrels, the
/// cache, and `update`'s ticks. Port 0: the summary (once, at the end); port 1: the
/// per-step rows; port 2: the ticks that close the feedback loop.
#[allow(clippy::too_many_arguments)]
pub fn train_eval<'s>(
    scope: Scope<'s, Time>,
    inputs: Vec<BatchStream<'s>>,
    ticks: BatchStream<'s>,
    spec: EvalSpec,
    plan: EvalPlan,
    state: Rc<TrainState>,
    node: Rc<str>,
    shared: Arc<Shared>,
) -> Vec<BatchStream<'s>> {
    let leader = scope.index() == 0;
    let every = spec.every;
    let steps = plan.steps;
    let fields = spec.fields.clone();
    let query_fields = spec.query_fields.clone();
    let recall_at = spec.recall_at.clone();
    let evaluator = Rc::new(std::cell::RefCell::new(Evaluator {
        spec,
        plan,
        state,
        shared: shared.clone(),
        corpus: Vec::new(),
        queries: HashMap::new(),
        dev: Vec::new(),
        test: Vec::new(),
        stale: Vectors::default(),
        best: None,
        candidates: 0,
        last_step: None,
    }));
    let ev = evaluator.clone();
    let logic = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let mut out = Vec::new();
        if leader {
            let mut e = ev.borrow_mut();
            for b in rows_of(&inputs[1]) {
                e.corpus.extend(joined_rows(b, &fields)?);
            }
            for b in rows_of(&inputs[2]) {
                for ((id, _), text) in joined_rows(b, &query_fields)? {
                    e.queries.insert(id, text);
                }
            }
            for b in rows_of(&inputs[3]) {
                push_qrels(&mut e.dev, b)?;
            }
            for b in rows_of(&inputs[4]) {
                push_qrels(&mut e.test, b)?;
            }
            let mut fresh = Vectors::default();
            for b in rows_of(&inputs[5]) {
                fresh.push(b)?;
            }
            if !fresh.is_empty() {
                e.stale = fresh;
            }
            for row in rows_of(&inputs[0]) {
                let step = row
                    .column_by_name("step")
                    .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                    .map(|c| c.value(0))
                    .unwrap_or(t);
                if let Some(c) = row
                    .column_by_name("candidates")
                    .and_then(|c| c.as_primitive_opt::<UInt64Type>())
                {
                    e.candidates += c.iter().flatten().sum::<u64>();
                }
                e.last_step = Some(step);
                let last = step as usize + 1 >= steps;
                let due = last || every.is_some_and(|n| (step as usize + 1).is_multiple_of(n));
                let dev = if due && !e.dev.is_empty() {
                    Some(e.dev_step(step)?)
                } else {
                    None
                };
                out.push((1, Batch(steps_row(row, &recall_at, dev.as_ref())?)));
            }
        }
        if !inputs[6].is_empty() {
            out.push((2, tick()));
        }
        Ok(out)
    };
    let finish_state = evaluator;
    let finish_shared = shared.clone();
    let finish: Box<dyn FnMut(Time) -> Result<crate::runtime::stepwise::Emitted>> =
        Box::new(move |_| {
            if !leader {
                return Ok(Vec::new());
            }
            let summary = finish_state.borrow_mut().finish()?;
            finish_shared.set_summary(summary.clone());
            Ok(vec![(0, Batch(summary))])
        });
    let mut routed: Vec<(BatchStream<'s>, Route)> =
        inputs.into_iter().map(|s| (s, Route::Leader)).collect();
    routed.push((ticks, Route::Local));
    stepwise(
        scope,
        "TrainEval",
        routed,
        3,
        logic,
        Some(finish),
        node,
        shared,
    )
}
