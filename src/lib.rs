//! freshen: dense-retriever training as a YAML dataflow graph.
//!
//! Data and imports run one way:
//!
//! ```text
//! spec ─▶ graph ─▶ runtime            the pipeline's path: format → checked graph → timely
//!           ▲         │
//!   models ─┤         ▼
//!   nodes ──┴──▶ dataflow ─▶ store ─▶ freshen-operators
//! ```
//!
//! - [`spec`]: the YAML format (positions, `${VAR}`s, `--set`); each node's and model's
//!   settings stay as written until their kind reads them.
//! - [`models`]: one module per model kind; settings are the compute crate's configs.
//! - [`graph`]: the validated graph, the [`graph::NodeKind`] trait every node type
//!   implements, and the training analysis.
//! - [`nodes`]: one module per node type (settings, checks, plan, timely operators),
//!   registered in [`nodes::KINDS`]. The core never names a node type: [`cli`] hands the
//!   registry to [`graph::Graph::build`].
//! - [`dataflow`]: the timely vocabulary operators are built in (streams, the stepwise
//!   operator, the run state, the workers' models), knowing nothing of graphs.
//! - [`runtime`]: plans the nodes, builds each worker's dataflow, runs and commits.
//! - [`store`] (Parquet, datasets, the embedding store) sits beneath all of them;
//!   [`report`], [`data`] and [`speed`] are leaves the commands use.

#![warn(missing_docs)]
// Tests read tensors as candle gives them; the counted door is for the code they test.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod cli;
pub mod data;
pub mod dataflow;
pub mod error;
pub mod graph;
pub mod models;
pub mod nodes;
pub mod report;
pub mod runtime;
pub mod spec;
pub mod speed;
pub mod store;

pub use error::{Error, Result};
