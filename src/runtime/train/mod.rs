//! The training operators: what `encode`, `correct`, `sample`, `loss`, `update` and a
//! training `eval` do at each step, on top of [`stepwise`](super::stepwise).
//!
//! # What lives where
//!
//! Embedding *values* travel between operators as Arrow batches, like every other edge.
//! What cannot travel stays with the worker, in [`TrainState`]: the models (each worker has
//! its own replica, updated identically from all-reduced gradients) and the tape, where an
//! `encode` or `correct` node leaves the forward pass it computed at step `t` (with its
//! autograd graph) until `update` turns the loss's gradients of those values into
//! gradients of the weights.

mod correct;
mod encode;
mod eval;
mod loss;
mod sample;
mod update;

pub use correct::{correct_cache, correct_touched};
pub use encode::{encode_touched, encode_train, refresh, EncodeNode};
pub use eval::{train_eval, EvalPlan};
pub use loss::{loss, LossNodes};
pub use sample::sample;
pub use update::{update, UpdatePlan};

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use arrow::array::RecordBatch;
use freshen_operators::corrector::Corrector;
use freshen_operators::train::{Recorded, TrainableEncoder};

use super::dataflow::Time;
use super::plan::{ModelInstance, Plan};
use crate::error::{Error, Result};
use crate::store::batch::Batch;
use crate::store::tables;

/// A forward pass kept until `update` has its gradients.
pub struct TapeEntry {
    /// The model that computed it.
    pub model: String,
    /// The id of each output row.
    pub ids: Vec<String>,
    /// The output and its graph.
    pub recorded: Recorded,
}

/// One worker's models and the records of its steps in flight.
pub struct TrainState {
    /// Text encoders of `models:`, by name.
    pub encoders: BTreeMap<String, Rc<dyn TrainableEncoder>>,
    /// Correctors of `models:`, by name.
    pub correctors: BTreeMap<String, Rc<Corrector>>,
    tape: RefCell<HashMap<(String, Time), Vec<TapeEntry>>>,
    touched: RefCell<BTreeMap<Time, u64>>,
}

impl TrainState {
    /// Takes this worker's instance of every model of the plan.
    pub fn new(plan: &Plan, local: usize) -> Result<Self> {
        let mut state = TrainState {
            encoders: BTreeMap::new(),
            correctors: BTreeMap::new(),
            tape: RefCell::new(HashMap::new()),
            touched: RefCell::new(BTreeMap::new()),
        };
        for name in plan.model_names() {
            match plan.take_model(&name, local)? {
                ModelInstance::Encoder(e) => {
                    state.encoders.insert(name, Rc::from(e));
                }
                ModelInstance::Corrector(c) => {
                    state.correctors.insert(name, Rc::new(c));
                }
            }
        }
        Ok(state)
    }

    /// The encoder named `name`.
    pub fn encoder(&self, name: &str) -> Result<Rc<dyn TrainableEncoder>> {
        self.encoders
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Other(format!("no encoder named `{name}` on this worker")))
    }

    /// The corrector named `name`.
    pub fn corrector(&self, name: &str) -> Result<Rc<Corrector>> {
        self.correctors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Other(format!("no corrector named `{name}` on this worker")))
    }

    /// Keeps the forward that `node` computed at step `t`.
    pub fn record(&self, node: &str, t: Time, entry: TapeEntry) {
        self.tape
            .borrow_mut()
            .entry((node.to_string(), t))
            .or_default()
            .push(entry);
    }

    /// Takes every forward that `node` computed at step `t`.
    pub fn take(&self, node: &str, t: Time) -> Vec<TapeEntry> {
        self.tape
            .borrow_mut()
            .remove(&(node.to_string(), t))
            .unwrap_or_default()
    }

    /// Counts target-encoder forwards of touched targets at step `t`.
    pub fn count_touched(&self, t: Time, n: u64) {
        *self.touched.borrow_mut().entry(t).or_default() += n;
    }

    /// Takes the count of touched forwards of step `t`.
    pub fn take_touched(&self, t: Time) -> u64 {
        self.touched.borrow_mut().remove(&t).unwrap_or(0)
    }
}

/// An empty batch: the "step t is done" tick that travels on the feedback edge.
pub fn tick() -> Batch {
    Batch(RecordBatch::new_empty(tables::step_schema()))
}

/// Concatenates the rows of `batches` (all of one schema).
pub fn rows_of(batches: &[Batch]) -> impl Iterator<Item = &RecordBatch> {
    batches.iter().map(|b| &b.0).filter(|b| b.num_rows() > 0)
}
