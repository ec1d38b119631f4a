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

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch};
use arrow::datatypes::UInt64Type;
use freshen_operators::metrics::MetricSet;

use super::evaluator::{EvalPlan, Evaluator};
use super::rank::push_qrels;
use super::{Eval, EvalModels};
use crate::dataflow::{
    rows_of, tick, BatchStream, BuildCx, Checkpointable, EmbeddingRows, Emitted, Route, Stepwise,
    Time,
};
use crate::error::{Error, Result};
use crate::nodes::encode::joined_rows;
use crate::store::batch::Batch;
use crate::store::tables;

/// A training eval. Inputs: `update`'s rows, corpus, queries, dev qrels, test qrels, the
/// cache, the ticks of the finished steps, and the other processes' ledger counts. Returns the summary (once, at the end),
/// the per-step rows, and the ticks that close the feedback loop.
pub(super) fn train_eval<'s>(
    cx: &BuildCx<'_, 's>,
    spec: Eval,
    models: EvalModels,
    plan: EvalPlan,
    (ticks, counts): (BatchStream<'s>, Option<BatchStream<'s>>),
) -> Result<[BatchStream<'s>; 3]> {
    let leader = cx.leader();
    let (every, steps) = (spec.every, plan.steps);
    let evaluator = Rc::new(RefCell::new(Evaluator {
        spec,
        models,
        plan,
        state: cx.models()?,
        shared: cx.run.clone(),
        workers: cx.scope.peers(),
        corpus: Vec::new(),
        queries: HashMap::new(),
        dev: Vec::new(),
        test: Vec::new(),
        stale: EmbeddingRows::default(),
        best: None,
        candidates: 0,
        last_step: None,
        rows: Vec::new(),
    }));
    let mut replay = Vec::new();
    if let Some(point) = &cx.resume {
        let mut e = evaluator.borrow_mut();
        e.restore_state(&point.node_dir(&cx.node))?;
        replay = e.rows.clone();
    }
    cx.models()?
        .register_state(&cx.node, Rc::new(EvalState(evaluator.clone())));
    let ev = evaluator.clone();
    let logic = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let mut out = Vec::new();
        if leader {
            // A resumed run writes the rows of the steps before it first.
            out.extend(
                std::mem::take(&mut replay)
                    .into_iter()
                    .map(|r| (1, Batch(r))),
            );
            let mut e = ev.borrow_mut();
            take_inputs(&mut e, &inputs)?;
            for row in rows_of(&inputs[0]) {
                let r = step_row(&mut e, row, t, every, steps)?;
                e.rows.push(r.clone());
                out.push((1, Batch(r)));
            }
        }
        if let Some(counts) = inputs.get(7) {
            crate::dataflow::ledger::add(&ev.borrow().shared, counts)?;
        }
        if !inputs[6].is_empty() {
            out.push((2, tick()));
        }
        Ok(out)
    };
    let shared = cx.run.clone();
    let finish = Box::new(move |_: Time| -> Result<Emitted> {
        if !leader {
            return Ok(Vec::new());
        }
        let summary = evaluator.borrow_mut().finish()?;
        shared.set_summary(summary.clone());
        Ok(vec![(0, Batch(summary))])
    });
    let mut op = Stepwise::new("TrainEval").outputs(3).finish(finish);
    for stream in cx.inputs()? {
        op = op.input(stream, Route::Leader);
    }
    op = op.input(ticks, Route::Local);
    if let Some(counts) = counts {
        op = op.input(counts, Route::Leader);
    }
    let mut ports = op.build(cx, logic).into_iter();
    let mut next = || {
        ports
            .next()
            .ok_or_else(|| Error::invariant("training eval without outputs"))
    };
    Ok([next()?, next()?, next()?])
}

/// The evaluator, as a checkpoint keeps it.
struct EvalState(Rc<RefCell<Evaluator>>);

impl Checkpointable for EvalState {
    fn save(&self, dir: &std::path::Path) -> Result<()> {
        self.0.borrow().save_state(dir)
    }
}

/// Keeps what the step brought: corpus and query texts, judgements, a new stale cache.
fn take_inputs(e: &mut Evaluator, inputs: &[Vec<Batch>]) -> Result<()> {
    let (fields, query_fields) = (e.spec.fields.clone(), e.spec.query_fields.clone());
    let before = e.corpus.len();
    for b in rows_of(&inputs[1]) {
        e.corpus.extend(joined_rows(b, &fields)?);
    }
    if e.corpus.len() > before {
        // In id order, whatever order the workers' batches arrived in: a ranking breaks
        // ties of score by row, so this makes it the same for every worker count.
        e.corpus.sort_by(|a, b| a.0 .0.cmp(&b.0 .0));
        // Not sharded: the evaluation holds every text on the leader (see the design
        // note in BENCHMARKS.md); reported with the shards so the summary shows it.
        let bytes: usize = e
            .corpus
            .iter()
            .map(|((id, _), t)| id.len() + t.len() + 56)
            .sum();
        e.shared
            .hold(0, "eval: corpus", e.corpus.len() as u64, bytes as u64);
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
    let mut fresh = EmbeddingRows::default();
    for b in rows_of(&inputs[5]) {
        fresh.push(b)?;
    }
    if !fresh.is_empty() {
        e.shared
            .hold(0, "eval: cache", fresh.len() as u64, fresh.bytes());
        e.stale = fresh;
    }
    Ok(())
}

/// The per-step row of `update`'s `row`, with a dev evaluation when one is due.
fn step_row(
    e: &mut Evaluator,
    row: &RecordBatch,
    t: Time,
    every: Option<usize>,
    steps: usize,
) -> Result<RecordBatch> {
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
    let dev = match due && !e.dev.is_empty() {
        true => Some(e.dev_step(step)?),
        false => None,
    };
    let recall_at = e.spec.recall_at.clone();
    with_dev_columns(row, &recall_at, dev.as_ref())
}

/// `update`'s row with the dev columns of [`tables::eval_steps_schema`] appended.
fn with_dev_columns(
    row: &RecordBatch,
    recall_at: &[usize],
    dev: Option<&(MetricSet, [Option<f64>; 6])>,
) -> Result<RecordBatch> {
    let mut cols = row.columns().to_vec();
    let f = |v: Option<f64>| Arc::new(Float64Array::from(vec![v])) as ArrayRef;
    for k in recall_at {
        cols.push(f(dev.map(|d| d.0.recall_at(*k).unwrap_or(0.0))));
    }
    cols.push(f(dev.map(|d| d.0.mrr_at_10)));
    cols.push(f(dev.map(|d| d.0.ndcg_at_10)));
    for i in 0..6 {
        cols.push(f(dev.and_then(|d| d.1[i])));
    }
    Ok(RecordBatch::try_new(
        tables::eval_steps_schema(recall_at),
        cols,
    )?)
}
