//! The checkpoint operator: at the end of each training step, when a checkpoint is due,
//! the leader writes one (the models, every registered node state, the run's counters)
//! before the step's tick goes back into the loop, so no operator has started the next
//! step while it is written.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::resume::{self, InputFile, RunRecord};
use crate::dataflow::checkpoint::{node_dir, save_json, save_tensors};
use crate::dataflow::{
    tick, BatchStream, BuildCx, RunState, StepInputs, Stepwise, Time, WorkerModels,
};
use crate::error::{Error, Result};
use crate::graph::Resumable;
use crate::store::commit::crash_point;

/// When and where a run writes its checkpoints, and what they record of it.
pub struct CheckpointPlan {
    /// The run's folder.
    pub run_dir: PathBuf,
    /// Steps of the run.
    pub steps: usize,
    /// When checkpoints are written.
    pub when: Resumable,
    /// The settings that decide the numbers.
    pub settings: Value,
    /// The input files.
    pub inputs: Vec<InputFile>,
    /// The step of the checkpoint this run resumed from, if it did.
    pub resumed: Option<usize>,
    /// Workers of the run, over all processes.
    pub workers: usize,
}

/// Passes `ticks` on, writing a checkpoint (on the leader) after each step it is due.
pub fn build<'s>(
    cx: &BuildCx<'_, 's>,
    plan: Arc<CheckpointPlan>,
    ticks: BatchStream<'s>,
) -> Result<BatchStream<'s>> {
    let (leader, run) = (cx.leader(), cx.run.clone());
    let models = cx.models()?;
    let mut last = Instant::now();
    // This run's checkpoints (and the one it resumed from): the newest are kept, and
    // those of an earlier run it did not resume go once it writes its first.
    let mut kept: Vec<usize> = plan.resumed.into_iter().collect();
    let mut owed = false;
    let logic = move |t: Time, inputs: StepInputs| {
        if inputs["ticks"].is_empty() {
            return Ok(Vec::new());
        }
        let s = t as usize + 1;
        let w = &plan.when;
        // Due every `every` steps, at the first step from there where a run can resume.
        owed |= w.every.is_some_and(|n| s.is_multiple_of(n));
        let by_time = w
            .minutes
            .is_some_and(|m| last.elapsed().as_secs_f64() >= 60.0 * m);
        // And after the last step (so a kill in the final evaluation or the commit loses
        // no training), unless that is under a minute of training: a short run does not
        // pay seconds of writing to protect less.
        let at_end = s >= plan.steps && (w.every.is_some() || last.elapsed().as_secs() >= 60);
        let due = (owed || by_time || at_end) && w.at(s);
        if leader && due {
            let started = Instant::now();
            write(&plan, s, &models, &run)?;
            (owed, last) = (false, Instant::now());
            kept.push(s);
            let newest = kept.len().saturating_sub(resume::KEEP);
            kept.drain(..newest);
            resume::prune(&plan.run_dir, &kept);
            tracing::info!(
                step = s,
                seconds = started.elapsed().as_secs_f64(),
                "wrote a resumable checkpoint"
            );
        }
        Ok(vec![(0, tick())])
    };
    Ok(Stepwise::new("Checkpoint")
        .input("ticks", ticks)
        .build(cx, logic)
        .remove(0))
}

/// Writes the checkpoint taken before step `s` (staged, then renamed into place).
fn write(plan: &CheckpointPlan, s: usize, models: &Rc<WorkerModels>, run: &RunState) -> Result<()> {
    let folder = resume::folder(&plan.run_dir);
    let staged = folder.join(format!(".step-{s:06}.{}.tmp", std::process::id()));
    let io = |p: &std::path::Path, e| Error::io(p, e);
    if staged.exists() {
        std::fs::remove_dir_all(&staged).map_err(|e| io(&staged, e))?;
    }
    let model_dir = staged.join("models");
    std::fs::create_dir_all(&model_dir).map_err(|e| io(&model_dir, e))?;
    let names = models.encoders.keys().chain(models.correctors.keys());
    for name in names.chain(models.readers.keys()) {
        save_tensors(
            &model_dir.join(format!("{name}.safetensors")),
            &models.trainable(name)?.snapshot()?,
        )?;
    }
    crash_point(&format!("checkpoint-{s}"));
    for (node, state) in models.states() {
        let dir = node_dir(&staged, &node);
        std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
        state.save(&dir)?;
    }
    let record = RunRecord {
        step: s,
        steps: plan.steps,
        workers: plan.workers,
        settings: plan.settings.clone(),
        inputs: plan.inputs.clone(),
        ledger: run.ledger(),
        stats: run.stats(),
        seconds: run.elapsed(),
    };
    let json = serde_json::to_value(&record)
        .map_err(|e| Error::invariant(format!("checkpoint record: {e}")))?;
    save_json(&staged.join("run.json"), &json)?;
    let dest = resume::step_dir(&plan.run_dir, s);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).map_err(|e| io(&dest, e))?;
    }
    std::fs::rename(&staged, &dest).map_err(|e| io(&dest, e))?;
    Ok(())
}
