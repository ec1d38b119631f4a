//! The types that travel on the dataflow's edges.

use differential_dataflow::input::InputSession;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::{InputHandle, Stream};

use crate::store::batch::Batch;

/// Logical time: the training step (0 for everything outside training).
pub type Time = u64;
/// A stream of Arrow batches: every edge of a pipeline's graph.
pub type BatchStream<'s> = Stream<'s, Time, Vec<Batch>>;
/// The key of a stored embedding: `(id, text_hash)`.
pub type Key = (String, u64);
/// A corpus row inside a differential group: `((id, text_hash), text)`.
pub type Row = (Key, String);
/// A stream of differential updates to keys.
pub type KeyStream<'s> = Stream<'s, Time, Vec<(Key, Time, isize)>>;
/// A stream of differential updates to rows.
pub type RowStream<'s> = Stream<'s, Time, Vec<(Row, Time, isize)>>;
/// The input a worker feeds a source's batches into.
pub type SourceInput = InputHandle<Time, CapacityContainerBuilder<Vec<Batch>>>;
/// The input a worker feeds a store's keys into.
pub type StoreInput = InputSession<Time, Key, isize>;
