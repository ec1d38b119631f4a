//! Running a validated graph as a timely dataflow on one or more workers and processes.
//!
//! [`run`] prepares a [`Plan`] (models, datasets, stores), starts timely with the
//! requested workers (`-w`) and processes (`-n`, `-p`, `-h`), lets each worker build the
//! same dataflow and feed it its share of the inputs, and commits every output only when
//! all workers finished without error: a failed run leaves earlier outputs untouched.

mod dataflow;
mod eval;
mod ops;
pub mod plan;
mod shared;
mod stepwise;
mod train;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use timely::{CommunicationConfig, WorkerConfig};

use crate::error::{Error, Result};
use crate::graph::Graph;
use plan::NodePlan;
pub use plan::Plan;
pub use shared::NodeStats;
use shared::Shared;

/// How to run: workers, processes, and whether to draw progress bars.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads per process (`-w`).
    pub workers: usize,
    /// Number of processes (`-n`).
    pub processes: usize,
    /// This process's index (`-p`).
    pub process: usize,
    /// File of `host:port` lines, one per process (`-h`); localhost:2101+i when absent.
    pub hostfile: Option<PathBuf>,
    /// Report connection progress between processes (`-r`).
    pub report: bool,
    /// Draw progress bars on stderr (only on a terminal).
    pub progress: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
            report: false,
            progress: false,
        }
    }
}

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

impl RunOptions {
    fn communication(&self) -> Result<CommunicationConfig> {
        if self.processes <= 1 {
            return Ok(if self.workers <= 1 {
                CommunicationConfig::Thread
            } else {
                CommunicationConfig::Process(self.workers)
            });
        }
        let addresses = match &self.hostfile {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                let lines: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
                if lines.len() < self.processes {
                    return Err(Error::Other(format!(
                        "{}: {} addresses for {} processes (expected one host:port line per process)",
                        path.display(),
                        lines.len(),
                        self.processes
                    )));
                }
                lines.into_iter().take(self.processes).collect()
            }
            None => (0..self.processes)
                .map(|i| format!("localhost:{}", 2101 + i))
                .collect(),
        };
        if self.process >= self.processes {
            return Err(Error::Other(format!(
                "process index {} is out of range (expected 0..{})",
                self.process, self.processes
            )));
        }
        Ok(CommunicationConfig::Cluster {
            threads: self.workers.max(1),
            process: self.process,
            addresses,
            report: self.report,
            zerocopy: false,
        })
    }
}

/// Gives each worker's candle kernels its share of the cores, so workers do not
/// oversubscribe the machine (candle's pool is process-wide). Respects a user's setting.
fn share_cores(workers: usize) {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let per = (cores / workers.max(1)).max(1);
        // SAFETY-free in edition 2021; done before any thread of ours starts.
        std::env::set_var("RAYON_NUM_THREADS", per.to_string());
    }
}

/// Runs `graph` and commits its outputs when every worker succeeded.
pub fn run(graph: Graph, opts: &RunOptions) -> Result<RunReport> {
    share_cores(opts.workers);
    let started = Instant::now();
    let communication = opts.communication()?;
    let plan = Arc::new(Plan::new(graph, opts.workers)?);
    let shared = Arc::new(Shared::new(opts.progress));
    let config = timely::Config {
        communication,
        worker: WorkerConfig::default(),
    };
    let (p, s) = (plan.clone(), shared.clone());
    let guards =
        timely::execute(config, move |worker| drive(worker, &p, &s)).map_err(Error::Other)?;
    for result in guards.join() {
        if let Err(panic) = result {
            shared.fail(Error::Other(format!("a worker stopped: {panic}")));
        }
    }
    if let Some(e) = shared.take_error() {
        return Err(e);
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut outputs = Vec::new();
    for pending in shared.take_pending() {
        outputs.push(pending.dest().to_path_buf());
        pending.commit()?;
    }
    let mut stats = shared.stats();
    finish_stats(&plan, &mut stats);
    Ok(RunReport {
        stats,
        outputs,
        seconds,
        summary: shared.summary(),
    })
}

/// Derives counters no single operator sees (rows replaced = stored - reused - dropped).
fn finish_stats(plan: &Plan, stats: &mut BTreeMap<String, NodeStats>) {
    for (i, node) in plan.nodes.iter().enumerate() {
        if let NodePlan::Cache { .. } = node {
            let id = &plan.graph.nodes()[i].id;
            let producer = &plan.graph.nodes()[plan.graph.producers(i)[0]].id;
            let encoded = stats.get(producer).map_or(0, |s| s.encoded);
            let s = stats.entry(id.clone()).or_default();
            s.encoded = encoded;
            s.replaced = s.stored.saturating_sub(s.reused + s.dropped);
        }
    }
}

/// One worker: build the dataflow, feed its share of every source and store, run to the end.
fn drive(worker: &mut timely::worker::Worker, plan: &Arc<Plan>, shared: &Arc<Shared>) {
    let (index, peers) = (worker.index(), worker.peers());
    let built =
        worker.dataflow::<dataflow::Time, _, _>(|scope| dataflow::build(scope, plan, shared));
    let mut built = match built {
        Ok(b) => b,
        Err(e) => {
            shared.fail(e);
            return;
        }
    };
    for (node, mut input) in std::mem::take(&mut built.sources) {
        let NodePlan::Source {
            dataset,
            table,
            batch_size,
            rows,
            pairs,
        } = &plan.nodes[node]
        else {
            continue;
        };
        let id = &plan.graph.nodes()[node].id;
        if let Some(p) = pairs {
            feed_pairs(worker, &mut input, p, id, shared);
            continue;
        }
        let bar = if index == 0 {
            shared.bar(id, *rows as u64)
        } else {
            indicatif::ProgressBar::hidden()
        };
        match dataset.read(table, *batch_size) {
            Ok(reader) => {
                for (b, batch) in reader.enumerate() {
                    if shared.failed() {
                        break;
                    }
                    match batch {
                        Ok(batch) if b % peers == index => {
                            bar.inc(batch.num_rows() as u64 * peers as u64);
                            shared.count(id, |s| s.rows_out += batch.num_rows());
                            input.send(crate::store::batch::Batch(batch));
                            // Let the dataflow take each batch before reading the next.
                            worker.step();
                        }
                        Ok(_) => {}
                        Err(e) => shared.fail(e.with_node(id)),
                    }
                }
            }
            Err(e) => shared.fail(e.with_node(id)),
        }
        bar.finish_and_clear();
    }
    for (node, mut input) in std::mem::take(&mut built.stores) {
        let NodePlan::Cache { store, .. } = &plan.nodes[node] else {
            continue;
        };
        let id = &plan.graph.nodes()[node].id;
        match store.read_keys(8192) {
            Ok(keys) => {
                for (b, keys) in keys.enumerate() {
                    match keys {
                        Ok(keys) if b % peers == index => {
                            shared.count(id, |s| s.stored += keys.len());
                            for k in keys {
                                input.insert(k);
                            }
                            worker.step();
                        }
                        Ok(_) => {}
                        Err(e) => shared.fail(e.with_node(id)),
                    }
                }
            }
            Err(e) => shared.fail(e.with_node(id)),
        }
    }
    let probe = built.probe.clone();
    drop(built);
    while !probe.done() {
        worker.step();
    }
}

/// Sends this worker's share of each step's training pairs, batch `t` at time `t`.
fn feed_pairs(
    worker: &mut timely::worker::Worker,
    input: &mut dataflow::SourceInput,
    p: &plan::PairsPlan,
    id: &str,
    shared: &Arc<Shared>,
) {
    let (index, peers) = (worker.index(), worker.peers());
    for step in 0..p.steps {
        if shared.failed() {
            break;
        }
        let rows = p.pairs.batch(step, p.batch_size, p.shuffle, p.seed);
        let mine: Vec<_> = rows
            .into_iter()
            .enumerate()
            .filter(|(r, _)| r % peers == index)
            .map(|(_, row)| row)
            .collect();
        input.advance_to(step as dataflow::Time);
        match crate::store::pairs::pairs_batch(&mine) {
            Ok(b) => {
                shared.count(id, |s| s.rows_out += b.num_rows());
                input.send(crate::store::batch::Batch(b));
            }
            Err(e) => shared.fail(e.with_node(id)),
        }
        worker.step();
    }
}
