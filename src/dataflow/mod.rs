//! The timely vocabulary of freshen's operators: the streams between nodes, the operator
//! a node becomes and the context it is built in, the stepwise operator shape of
//! training, the run state shared by a process's workers, and the models each worker
//! holds.
//!
//! Nothing here knows about pipelines or graphs; the node types (`crate::nodes`) build
//! on it and the runtime assembles their operators.

pub mod checkpoint;
pub mod held;
pub mod ledger;
mod models;
mod operator;
mod progress;
mod rows;
mod run_state;
pub mod shard;
mod stepwise;
mod streams;
mod writer;

pub use checkpoint::{Checkpointable, ResumePoint};
pub use models::{ProcessModels, TapeEntry, WorkerModels};
pub use operator::{Assembly, BuildCx, Feed, FeedStage, Operator};
pub use progress::Progress;
pub use rows::EmbeddingRows;
pub use run_state::{NodeStats, RunState};
pub use stepwise::{Emitted, Finish, Route, StepInputs, Stepwise};
pub use streams::{BatchStream, Key, KeyStream, Row, RowStream, SourceInput, StoreInput, Time};
pub use writer::write_on_leader;

use arrow::array::RecordBatch;

use crate::store::batch::Batch;
use crate::store::tables;

/// An empty batch: the "step t is done" tick that travels on the feedback edge.
pub fn tick() -> Batch {
    Batch(RecordBatch::new_empty(tables::step_schema()))
}

/// The rows of `batches` (all of one schema), skipping empty batches.
pub fn rows_of(batches: &[Batch]) -> impl Iterator<Item = &RecordBatch> {
    batches.iter().map(|b| &b.0).filter(|b| b.num_rows() > 0)
}
