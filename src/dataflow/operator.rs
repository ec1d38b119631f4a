//! What a node becomes at run time: an [`Operator`] that each worker builds into its
//! dataflow through a [`BuildCx`], and the [`Feed`]s that worker drives afterwards.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::{ProbeHandle, Scope};
use timely::worker::Worker;

use super::checkpoint::ResumePoint;
use super::models::WorkerModels;
use super::run_state::{NodeStats, RunState};
use super::streams::{BatchStream, Time};
use crate::error::{Error, Result};

/// A node's run-time form: built once per worker into its dataflow.
pub trait Operator: Send + Sync {
    /// Builds the node's timely operators from its input streams (`cx.input("queries")`, by role) and
    /// returns its output streams by port name (the main port is `""`).
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>>;

    /// Derives counters no single operator sees, once every worker has finished.
    fn after_run(&self, stats: &mut BTreeMap<String, NodeStats>) {
        let _ = stats;
    }
}

/// When a feed runs: every source's rows first, then the stores' keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FeedStage {
    /// Rows of the datasets.
    Sources,
    /// Keys of the embedding stores.
    Stores,
}

/// An input a worker drives once its dataflow is built: it sends this worker's share of
/// some data and closes the input (by dropping it).
pub trait Feed {
    /// When it runs.
    fn stage(&self) -> FeedStage;

    /// Sends this worker's share, stepping the worker so the dataflow keeps up.
    fn feed(self: Box<Self>, worker: &mut Worker, run: &RunState);
}

/// What building one worker's dataflow collects beyond the streams.
pub struct Assembly<'s> {
    /// The inputs to drive.
    pub feeds: Vec<Box<dyn Feed>>,
    /// Passes when everything that must finish has finished.
    pub probe: ProbeHandle<Time>,
    /// The latest "step done" stream of a training graph: `update` starts it, a node that
    /// must finish before the next step (the training `eval`) replaces it, and the
    /// runtime finally feeds it back into the loop.
    pub ticks: Option<BatchStream<'s>>,
    /// Streams moved to their rows' owners ([`BuildCx::sharded_input`]), by the
    /// `(node, port)` they come from: split once, so every node reading the same table
    /// keeps the same batches (one copy per worker, not one per reader).
    pub sharded: HashMap<(usize, String), BatchStream<'s>>,
    /// Every input an operator read, as `(node, producer, port)`: the edges the runtime
    /// built, which must be the graph's (what `freshen graph` draws).
    pub read: RefCell<BTreeSet<(usize, usize, String)>>,
}

impl Default for Assembly<'_> {
    fn default() -> Self {
        Self {
            feeds: Vec::new(),
            probe: ProbeHandle::new(),
            ticks: None,
            sharded: HashMap::new(),
            read: RefCell::default(),
        }
    }
}

/// Everything a node's [`Operator::build`] may use: its inputs, the worker's scope,
/// models and run state, and the assembly it adds to.
pub struct BuildCx<'a, 's> {
    /// The worker's scope.
    pub scope: Scope<'s, Time>,
    /// The node's id (errors and counters are filed under it).
    pub node: Rc<str>,
    /// The node's index in the graph.
    pub index: usize,
    /// The process's run state: first error, outputs to commit, counters, ledger.
    pub run: Arc<RunState>,
    /// This worker's models, when the pipeline has `models:`.
    pub models: Option<Rc<WorkerModels>>,
    /// A resumed run's checkpoint: its step is the first this run trains.
    pub resume: Option<Arc<ResumePoint>>,
    /// The training loop's feedback: "step t is done", arriving at t + 1.
    pub feedback: Option<BatchStream<'s>>,
    /// `(producer, port)` of each input, in its type's role order.
    pub edges: &'a [(usize, String)],
    /// The role of each input.
    pub roles: &'a [&'static str],
    /// Every node's id, by index.
    pub ids: &'a [String],
    /// Every stream built so far, by `(node, port)`.
    pub streams: &'a HashMap<(usize, String), BatchStream<'s>>,
    /// What the build collects.
    pub assembly: &'a mut Assembly<'s>,
}

impl<'s> BuildCx<'_, 's> {
    /// The slot of the input of role `role`, if it is given.
    pub fn slot(&self, role: &str) -> Option<usize> {
        self.roles.iter().position(|r| *r == role)
    }

    /// Whether the input of role `role` is given.
    pub fn has(&self, role: &str) -> bool {
        self.slot(role).is_some()
    }

    /// The `(producer, port)` of the input of role `role`.
    fn edge(&self, role: &str) -> Result<(usize, String)> {
        self.slot(role)
            .and_then(|j| self.edges.get(j))
            .cloned()
            .ok_or_else(|| Error::invariant(format!("node {}: no input `{role}`", self.node)))
    }

    /// The stream of the input of role `role`.
    pub fn input(&self, role: &str) -> Result<BatchStream<'s>> {
        let key = self.edge(role)?;
        let stream = self.streams.get(&key).cloned().ok_or_else(|| {
            Error::invariant(format!(
                "node {}: input `{role}` is not built yet",
                self.node
            ))
        })?;
        self.assembly
            .read
            .borrow_mut()
            .insert((self.index, key.0, key.1));
        Ok(stream)
    }

    /// The stream of input `role` moved to the owners of its rows by id (each worker then holds
    /// its shard, [`super::shard::to_owners`]), and the name its shard is reported under
    /// ([`super::RunState::hold`]). Nodes that read the same table get the same stream,
    /// so they hold the same batches: keep the batches (Arrow's buffers are shared), not
    /// copies of them, and report them under this name, to hold the shard once.
    pub fn sharded_input(&mut self, role: &str) -> Result<(BatchStream<'s>, String)> {
        let key = self.edge(role)?;
        let read = (self.index, key.0, key.1.clone());
        self.assembly.read.borrow_mut().insert(read);
        let name = match key.1.as_str() {
            "" => format!("{}: shard", self.ids[key.0]),
            port => format!("{}.{port}: shard", self.ids[key.0]),
        };
        if let Some(s) = self.assembly.sharded.get(&key) {
            return Ok((s.clone(), name));
        }
        let s = super::shard::to_owners(
            self.input(role)?,
            crate::store::tables::col::ID,
            self.scope.peers(),
        );
        self.assembly.sharded.insert(key, s.clone());
        Ok((s, name))
    }

    /// Every input's stream, in its type's role order.
    pub fn inputs(&self) -> Result<Vec<BatchStream<'s>>> {
        self.roles.iter().map(|r| self.input(r)).collect()
    }

    /// The stream of input `role` if it is given and its producer built it: an input
    /// freshen wires itself reads a port that its producer makes only in some runs (a
    /// training subset only while the corrector trains).
    pub fn input_if(&self, role: &str) -> Option<BatchStream<'s>> {
        let key = self.edge(role).ok()?;
        self.streams
            .contains_key(&key)
            .then(|| self.input(role).ok())?
    }

    /// The first step this run trains (a resumed run's checkpoint step, else 0).
    pub fn start(&self) -> Time {
        self.resume.as_ref().map_or(0, |r| r.step as Time)
    }

    /// Whether this worker leads (worker 0 writes files and reports).
    pub fn leader(&self) -> bool {
        self.scope.index() == 0
    }

    /// The feedback stream of the training loop.
    pub fn feedback(&self) -> Result<BatchStream<'s>> {
        self.feedback.clone().ok_or_else(|| {
            Error::invariant(format!(
                "node {}: a training operator outside a training graph",
                self.node
            ))
        })
    }

    /// This worker's models.
    pub fn models(&self) -> Result<Rc<WorkerModels>> {
        self.models.clone().ok_or_else(|| {
            Error::invariant(format!(
                "node {}: a training operator without models",
                self.node
            ))
        })
    }
}
