//! `eval` during training: dev metrics every N steps, the best step kept, test at the end,
//! over the workers' shards.
//!
//! At a dev step each worker re-embeds its own corpus rows with the current target tower
//! (counted in the ledger under `eval`) and ranks every dev query against them; the
//! leader merges the shards' answers, scores them and decides whether the step is the
//! best so far, and every worker keeps a copy of the best step's weights. After the last
//! step every worker puts the best weights back and ranks the test queries against its
//! rows re-embedded, and against its rows of the corrected cache h(B) with no
//! re-embedding at all. The stages, each a [`Stepwise`] operator at the step's time:
//!
//! 1. **embed** (every worker): its corpus shard, and the dev queries it owns, which go
//!    to every worker;
//! 2. **rank** (every worker): every dev query against its shard, answered to the leader;
//! 3. **merge** (leader): dev metrics, the best step, the per-step row; a verdict to
//!    every worker;
//! 4. **keep** (every worker): the best weights copied; after the last step, put back,
//!    the shard embedded and corrected, the test queries it owns sent to every worker;
//!    its ticks close the training loop, so step `t + 1` starts after step `t`'s dev
//!    evaluation read step `t`'s weights;
//! 5. **test** (every worker): the test queries against its shard, answered to the
//!    leader, and its rows of the written embeddings;
//! 6. **report** (leader): test metrics, run files, checkpoint, and the summary.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, BooleanArray, Float64Array, RecordBatch};
use arrow::datatypes::UInt64Type;
use freshen_operators::metrics::MetricSet;
use timely::dataflow::operators::vec::Broadcast;

use super::evaluator::{EvalPlan, Evaluator, TestResult};
use super::merge::{self, Gathered};
use super::shard::{Against, EvalShard};
use super::{Eval, EvalModels};
use crate::dataflow::shard::to_owners;
use crate::dataflow::{
    ledger, rows_of, tick, write_on_leader, BatchStream, BuildCx, Checkpointable, EmbeddingRows,
    Emitted, Route, StepInputs, Stepwise, Time,
};
use crate::error::{Error, Result};
use crate::store::batch::Batch;
use crate::store::tables::{self, col};

/// Columns of the leader's verdict on a step.
const BEST: &str = "best";
const LAST: &str = "last";

/// The leader's verdict on step `t`: whether its dev evaluation is the best so far, and
/// whether it is the last step.
fn verdict(best: bool, last: bool) -> Result<Batch> {
    Ok(Batch(RecordBatch::try_from_iter(vec![
        (BEST, Arc::new(BooleanArray::from(vec![best])) as ArrayRef),
        (LAST, Arc::new(BooleanArray::from(vec![last]))),
    ])?))
}

fn flag(b: &RecordBatch, name: &str) -> bool {
    b.column_by_name(name)
        .and_then(|c| c.as_boolean_opt())
        .is_some_and(|c| !c.is_empty() && c.value(0))
}

/// A message that carries no rows but makes the next stage act at this step on every
/// worker (a stepwise operator acts at a time only when something arrives for it).
fn marker() -> Batch {
    Batch(RecordBatch::new_empty(tables::step_schema()))
}

/// The steps of `plan`: whether step `t` is due a dev evaluation, and whether it is last.
fn schedule(every: Option<usize>, steps: usize, t: Time) -> (bool, bool) {
    let last = t as usize + 1 >= steps;
    (
        last || every.is_some_and(|n| (t as usize + 1).is_multiple_of(n)),
        last,
    )
}

/// A training eval. Inputs (in `cx`): `update`'s rows, corpus, queries, dev qrels, test
/// qrels, the cache; `ticks`: `update`'s "step done". Returns the summary (once, at the
/// end), the per-step rows, and the ticks that close the feedback loop.
pub(super) fn train_eval<'s>(
    cx: &mut BuildCx<'_, 's>,
    spec: Eval,
    models: EvalModels,
    plan: EvalPlan,
    ticks: BatchStream<'s>,
) -> Result<[BatchStream<'s>; 3]> {
    let (leader, workers) = (cx.leader(), cx.scope.peers());
    // The corpus and the cache at their owners, the batches shared with the other
    // readers of those tables (`encode`'s and `correct`'s fetches).
    let (corpus, corpus_held) = cx.sharded_input("corpus")?;
    let (cache, cache_held) = cx.sharded_input("cache")?;
    let shard = Rc::new(RefCell::new(EvalShard {
        spec: spec.clone(),
        models: models.clone(),
        device: plan.device.clone(),
        beta: plan.beta,
        state: cx.models()?,
        run: cx.run.clone(),
        me: cx.scope.index(),
        corpus: (Default::default(), corpus_held),
        order: Vec::new(),
        queries: HashMap::new(),
        dev: Vec::new(),
        test: Vec::new(),
        stale: (Default::default(), cache_held),
        fresh: None,
        corrected: None,
        asked: EmbeddingRows::default(),
        asked_texts: HashMap::new(),
        best: None,
        start: None,
        label: String::new(),
    }));
    let evaluator = Rc::new(RefCell::new(Evaluator {
        spec: spec.clone(),
        models,
        plan: plan.clone(),
        state: cx.models()?,
        shared: cx.run.clone(),
        shard: shard.clone(),
        workers,
        best: None,
        candidates: 0,
        last_step: None,
        rows: Vec::new(),
        test: TestResult::default(),
        start_pending: false,
    }));
    let mut replay = Vec::new();
    // The starting model is a candidate (step 0), scored after the first step with the
    // weights kept here; with `every: 1` the first step is a dev step itself, and a run
    // resumed past it has scored it already.
    let scores_start =
        spec.start && cx.resume.is_none() && spec.every.is_some_and(|n| n > 1) && plan.steps > 1;
    if scores_start {
        let mut s = shard.borrow_mut();
        s.start = Some(s.snapshot()?);
        evaluator.borrow_mut().start_pending = true;
    }
    if let Some(point) = &cx.resume {
        let dir = point.node_dir(&cx.node);
        shard.borrow_mut().restore_best_from(&dir)?;
        if leader {
            let mut e = evaluator.borrow_mut();
            e.restore_state(&dir)?;
            replay = e.rows.clone();
        }
    }
    cx.models()?
        .register_state(&cx.node, Rc::new(EvalState(evaluator.clone())));

    let [rows, _, queries, dev, test, _] = ports(cx.inputs()?)?;
    let asked = embed(
        cx,
        &shard,
        &plan,
        [ticks, corpus, queries, dev, test, cache],
    );
    let answers = rank(cx, &shard, asked);
    let [steps, verdicts] = merge(cx, &evaluator, answers, rows, replay)?;
    let [ticks, test_queries] = keep(cx, &shard, verdicts)?;
    let [fresh, corrected, embeddings, corrected_rows] = test_stage(cx, &shard, test_queries)?;
    // h(B) has the target tower's width.
    let dim = cx
        .models()?
        .encoder(&evaluator.borrow().models.target)?
        .dim();
    for (path, rows) in [
        (&spec.embeddings, embeddings),
        (&spec.corrected_embeddings, corrected_rows),
    ] {
        if let Some(path) = path {
            let schema = tables::embeddings_schema(dim);
            write_on_leader(cx, rows, path.clone(), schema, Ok);
        }
    }
    // The other processes' ledger, added before the step's tick goes on: a checkpoint
    // taken after step t then counts every process's forwards of step t.
    let counts = ledger::share(cx, ticks.clone());
    let run = cx.run.clone();
    let ticks = Stepwise::new("EvalLedger")
        .input("ticks", ticks)
        .routed("counts", counts, Route::Leader)
        .build(cx, move |_t, inputs| {
            ledger::add(&run, &inputs["counts"])?;
            Ok(match inputs["ticks"].is_empty() {
                true => Vec::new(),
                false => vec![(0, tick())],
            })
        })
        .remove(0);
    let summary = report(cx, &evaluator, [fresh, corrected, ticks.clone()], leader);
    Ok([summary, steps, ticks])
}

/// A stage's output ports as an array.
fn ports<'s, const N: usize>(streams: Vec<BatchStream<'s>>) -> Result<[BatchStream<'s>; N]> {
    <[BatchStream<'s>; N]>::try_from(streams)
        .map_err(|_| Error::invariant("a training eval stage without its ports"))
}

/// Stage 1: each step's inputs kept; at a dev step, the shard embedded and the dev
/// queries this worker owns sent to every worker.
fn embed<'s>(
    cx: &BuildCx<'_, 's>,
    shard: &Rc<RefCell<EvalShard>>,
    plan: &EvalPlan,
    [ticks, corpus, queries, dev, test, cache]: [BatchStream<'s>; 6],
) -> BatchStream<'s> {
    let w = cx.scope.peers();
    let (shard, every, steps) = (shard.clone(), shard.borrow().spec.every, plan.steps);
    let leader = cx.leader();
    let logic = move |t: Time, inputs: StepInputs| {
        let mut s = shard.borrow_mut();
        s.take_inputs(&inputs)?;
        let (due, _) = schedule(every, steps, t);
        let ticked = !inputs["ticks"].is_empty();
        if t == 0 && s.start.is_some() && ticked && !s.dev.is_empty() {
            if leader {
                s.run.progress().set_done(
                    "train",
                    1,
                    "evaluating the starting model on dev".into(),
                );
            }
            let mut out = vec![(0, marker())];
            s.label = "dev evaluation of the starting model".into();
            if let Some(q) = s.embed_start()? {
                out.push((0, Batch(q)));
            }
            return Ok(out);
        }
        if !ticked || !due || s.dev.is_empty() {
            return Ok(Vec::new());
        }
        if leader {
            s.run
                .progress()
                .set_done("train", t + 1, "evaluating on dev".into());
        }
        s.label = format!("dev evaluation after step {}", t + 1);
        s.embed_shard()?;
        let mut out = vec![(0, marker())];
        if let Some(q) = s.embed_own_queries(&s.dev)? {
            out.push((0, Batch(q)));
        }
        Ok(out)
    };
    Stepwise::new("EvalEmbed")
        .input("ticks", ticks)
        .input("corpus", corpus)
        .input("queries", to_owners(queries, col::ID, w))
        .input("dev", dev.broadcast())
        .input("test", test.broadcast())
        .input("cache", cache)
        .build(cx, logic)
        .remove(0)
        .broadcast()
}

/// Stage 2: every dev query against this worker's shard (and the diagnostics), answered
/// to the leader.
fn rank<'s>(
    cx: &BuildCx<'_, 's>,
    shard: &Rc<RefCell<EvalShard>>,
    asked: BatchStream<'s>,
) -> BatchStream<'s> {
    let shard = shard.clone();
    let logic = move |_t: Time, inputs: StepInputs| {
        let mut s = shard.borrow_mut();
        s.take_asked(&inputs["asked"])?;
        let dev = s.dev.clone();
        let mut out: Emitted = s
            .answer(Against::Fresh, &dev)?
            .into_batches()?
            .into_iter()
            .map(|b| (0, Batch(b)))
            .collect();
        if s.spec.diagnostics {
            out.push((0, Batch(merge::diag_batch(s.diagnostics()?)?)));
        }
        Ok(out)
    };
    Stepwise::new("EvalRank")
        .input("asked", asked)
        .build(cx, logic)
        .remove(0)
}

/// Stage 3 (leader): the per-step rows, with the dev metrics merged from the shards'
/// answers at a dev step; a verdict on every step for every worker.
fn merge<'s>(
    cx: &BuildCx<'_, 's>,
    evaluator: &Rc<RefCell<Evaluator>>,
    answers: BatchStream<'s>,
    rows: BatchStream<'s>,
    mut replay: Vec<RecordBatch>,
) -> Result<[BatchStream<'s>; 2]> {
    let ev = evaluator.clone();
    let logic = move |t: Time, inputs: StepInputs| {
        // A resumed run writes the rows of the steps before it first.
        let mut out: Emitted = std::mem::take(&mut replay)
            .into_iter()
            .map(|r| (0, Batch(r)))
            .collect();
        let mut e = ev.borrow_mut();
        let mut got = Gathered::default();
        got.add(&inputs["answers"])?;
        let mut answered = !inputs["answers"].is_empty();
        if t == 0 && e.start_pending && answered {
            // The starting model's answers (its weights are the shard's best already).
            let (start, _) = e.dev_step(None, &got)?;
            let row = start_row(&e.spec.recall_at, &start)?;
            e.rows.push(row.clone());
            out.push((0, Batch(row)));
            answered = false;
        }
        let dev = match answered {
            true => Some(e.dev_step(Some(t), &got)?),
            false => None,
        };
        let best = dev.as_ref().is_some_and(|d| d.1);
        for row in rows_of(&inputs["rows"]) {
            if let Some(c) = row
                .column_by_name("candidates")
                .and_then(|c| c.as_primitive_opt::<UInt64Type>())
            {
                e.candidates += c.iter().flatten().sum::<u64>();
            }
            e.last_step = Some(t);
            let r = with_dev_columns(row, &e.spec.recall_at, dev.as_ref().map(|d| &d.0))?;
            e.rows.push(r.clone());
            out.push((0, Batch(r)));
        }
        let (_, last) = schedule(e.spec.every, e.plan.steps, t);
        out.push((1, verdict(best, last)?));
        Ok(out)
    };
    let [steps, verdicts] = ports(
        Stepwise::new("EvalMerge")
            .outputs(2)
            .routed("answers", answers, Route::Leader)
            .routed("rows", rows, Route::Leader)
            .build(cx, logic),
    )?;
    Ok([steps, verdicts.broadcast()])
}

/// Stage 4: the best weights copied when the leader says so; after the last step, put
/// back, the shard embedded and corrected, and the test queries this worker owns sent
/// to every worker. Port 0 ticks every step (the training loop's), port 1 the queries.
fn keep<'s>(
    cx: &BuildCx<'_, 's>,
    shard: &Rc<RefCell<EvalShard>>,
    verdicts: BatchStream<'s>,
) -> Result<[BatchStream<'s>; 2]> {
    let shard = shard.clone();
    let logic = move |_t: Time, inputs: StepInputs| {
        let Some(v) = inputs["verdicts"]
            .iter()
            .map(|b| &b.0)
            .find(|b| b.num_rows() > 0)
        else {
            return Ok(Vec::new());
        };
        let mut s = shard.borrow_mut();
        if flag(v, BEST) {
            s.keep_best()?;
        }
        let mut out = vec![(0, tick())];
        if flag(v, LAST) {
            s.restore_best()?;
            s.label = "test evaluation of the best step".into();
            s.embed_shard()?;
            s.correct_shard()?;
            out.push((1, marker()));
            let test = s.test.clone();
            if let Some(q) = s.embed_own_queries(&test)? {
                out.push((1, Batch(q)));
            }
        }
        Ok(out)
    };
    let [ticks, queries] = ports(
        Stepwise::new("EvalKeep")
            .outputs(2)
            .input("verdicts", verdicts)
            .build(cx, logic),
    )?;
    Ok([ticks, queries.broadcast()])
}

/// Stage 5: the test queries against this worker's shard, re-embedded (port 0) and
/// corrected (port 1), answered to the leader; the shard's rows of the written
/// embeddings (port 2) and of h(B) (port 3), sent to the leader's writers.
fn test_stage<'s>(
    cx: &BuildCx<'_, 's>,
    shard: &Rc<RefCell<EvalShard>>,
    queries: BatchStream<'s>,
) -> Result<[BatchStream<'s>; 4]> {
    let shard = shard.clone();
    let logic = move |_t: Time, inputs: StepInputs| {
        let mut s = shard.borrow_mut();
        s.take_asked(&inputs["queries"])?;
        let test = s.test.clone();
        let mut out = Emitted::new();
        for b in s.answer(Against::Fresh, &test)?.into_batches()? {
            out.push((0, Batch(b)));
        }
        if s.corrected.is_some() {
            for b in s.answer(Against::Corrected, &test)?.into_batches()? {
                out.push((1, Batch(b)));
            }
        }
        // The corrected rows first (they take the fresh rows' ids), each tensor going as
        // its rows are taken out.
        if s.spec.corrected_embeddings.is_some() {
            let rows = s.take_output(Against::Corrected)?;
            out.extend(rows.into_iter().map(|b| (3, Batch(b))));
        }
        if s.spec.embeddings.is_some() {
            let rows = s.take_output(Against::Fresh)?;
            out.extend(rows.into_iter().map(|b| (2, Batch(b))));
        }
        // The run is over: the shard's tensors go.
        (s.fresh, s.corrected) = (None, None);
        Ok(out)
    };
    ports(
        Stepwise::new("EvalTest")
            .outputs(4)
            .input("queries", queries)
            .build(cx, logic),
    )
}

/// Stage 6 (leader): the test metrics at the best step, the run files and the
/// checkpoint; the summary once every step's ledger is in.
fn report<'s>(
    cx: &BuildCx<'_, 's>,
    evaluator: &Rc<RefCell<Evaluator>>,
    [fresh, corrected, ticks]: [BatchStream<'s>; 3],
    leader: bool,
) -> BatchStream<'s> {
    let ev = evaluator.clone();
    let logic = move |_t: Time, inputs: StepInputs| {
        if inputs["fresh"].is_empty() {
            return Ok(Vec::new());
        }
        let (mut f, mut c) = (Gathered::default(), Gathered::default());
        f.add(&inputs["fresh"])?;
        c.add(&inputs["corrected"])?;
        let mut e = ev.borrow_mut();
        e.test_step(&f, &c)?;
        if let Some(dir) = e.spec.checkpoint.clone() {
            e.save_checkpoint(&dir)?;
        }
        Ok(Vec::new())
    };
    let (shared, ev) = (cx.run.clone(), evaluator.clone());
    let finish = Box::new(move |_: Time| -> Result<Emitted> {
        if !leader {
            return Ok(Vec::new());
        }
        let summary = ev.borrow().summary()?;
        shared.set_summary(summary.clone());
        Ok(vec![(0, Batch(summary))])
    });
    Stepwise::new("EvalReport")
        .finish(finish)
        .routed("fresh", fresh, Route::Leader)
        .routed("corrected", corrected, Route::Leader)
        .input("ticks", ticks)
        .build(cx, logic)
        .remove(0)
}

/// The evaluation, as a checkpoint keeps it: the leader's evaluator and its copy of the
/// best weights.
struct EvalState(Rc<RefCell<Evaluator>>);

impl Checkpointable for EvalState {
    fn save(&self, dir: &std::path::Path) -> Result<()> {
        self.0.borrow().save_state(dir)
    }
}

/// The row of the starting model (step 0): its dev metrics, nothing of a training step.
fn start_row(recall_at: &[usize], dev: &(MetricSet, [Option<f64>; 6])) -> Result<RecordBatch> {
    let schema = tables::step_schema();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match f.name() == col::STEP {
            true => Arc::new(arrow::array::UInt64Array::from(vec![0u64])) as ArrayRef,
            false => arrow::array::new_null_array(f.data_type(), 1),
        })
        .collect();
    let row = RecordBatch::try_new(schema, columns)?;
    with_dev_columns(&row, recall_at, Some(dev))
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
