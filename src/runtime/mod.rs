//! Running a validated graph as a timely dataflow on one or more workers and processes.
//!
//! [`run`] prepares a [`Plan`] (models built, every node planned by its kind), starts
//! timely with the requested workers (`-w`) and processes (`-n`, `-p`, `-H`), lets each
//! worker build the same dataflow and feed it its share of the inputs, and commits every
//! output only when all workers finished without error: a failed run leaves earlier
//! outputs untouched.

mod assemble;
mod checkpoint;
mod guard;
mod options;
mod plan;
mod resume;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use timely::WorkerConfig;

use crate::dataflow::{NodeStats, RunState};
use crate::error::{Error, Result};
use crate::graph::Graph;
pub use options::RunOptions;
pub use plan::Plan;

/// What a finished run did.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Counters per node id.
    pub stats: BTreeMap<String, NodeStats>,
    /// Files this process committed.
    pub outputs: Vec<PathBuf>,
    /// Wall-clock seconds, from preparing the models to the last output.
    pub seconds: f64,
    /// A training run's summary row.
    pub summary: Option<arrow::array::RecordBatch>,
}

/// Gives each worker's candle kernels its share of the cores, so workers do not
/// oversubscribe the machine (candle's pool is process-wide). Respects a user's setting.
fn share_cores(workers: usize) {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let per = (cores / workers.max(1)).max(1);
        // Done before any thread of ours starts.
        std::env::set_var("RAYON_NUM_THREADS", per.to_string());
    }
}

/// Runs `graph` and commits its outputs when every worker succeeded.
pub fn run(graph: Graph, opts: &RunOptions) -> Result<RunReport> {
    share_cores(opts.workers);
    let started = Instant::now();
    let communication = opts.communication()?;
    // Process 0 writes the outputs: it holds the locks and commits.
    let guard = match opts.process {
        0 => Some(guard::RunGuard::acquire(&graph)?),
        _ => None,
    };
    crate::store::commit::crash_point("started");
    let all_workers = opts.workers.max(1) * opts.processes.max(1);
    let resumed = match (opts.resume, crate::graph::paths::run_folder(&graph)) {
        (true, Some(dir)) => match resume::open(&graph, &dir, all_workers)? {
            // Every process reads the checkpoint process 0 wrote: one that finds none
            // would train from step 0 beside the others.
            None if opts.process > 0 => {
                return Err(Error::Usage(format!(
                    "--resume: process {} finds no checkpoint in {} (expected the out folder on a file system every process shares; or run without --resume)",
                    opts.process,
                    resume::folder(&dir).display()
                )))
            }
            found => found,
        },
        (false, Some(dir)) if graph.training.is_some() && opts.process == 0 => {
            resume::warn_interrupted(&dir);
            None
        }
        _ => None,
    };
    let plan = Arc::new(Plan::new(
        graph,
        opts.workers,
        all_workers,
        resumed.as_ref().map(|r| r.0.clone()),
    )?);
    let state =
        Arc::new(RunState::new(opts.progress, opts.progress_every).in_process(opts.process));
    if let Some((_, record)) = &resumed {
        resume::restore_counters(&state, record);
    }
    let config = timely::Config {
        communication,
        worker: WorkerConfig::default(),
    };
    let (p, s) = (plan.clone(), state.clone());
    let guards = timely::execute(config, move |w| worker::drive(w, &p, &s))
        .map_err(|e| Error::Usage(format!("timely could not start its workers: {e}")))?;
    for result in guards.join() {
        if let Err(panic) = result {
            state.fail(Error::invariant(format!("a worker stopped: {panic}")));
        }
    }
    if let Some(e) = state.take_error() {
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    let pending = state.take_pending();
    let outputs = match guard.as_ref().and_then(|g| g.run_dir.as_ref()) {
        Some(dir) => {
            let written = crate::store::commit::commit_all(pending, dir)?;
            resume::finished(dir);
            written
        }
        None => Vec::new(),
    };
    let mut stats = state.stats();
    for op in &plan.operators {
        op.after_run(&mut stats);
    }
    Ok(RunReport {
        stats,
        outputs,
        seconds,
        summary: state.summary(),
    })
}
