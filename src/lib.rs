//! freshen: dense-retriever training as a YAML dataflow graph.
//!
//! Data and imports run one way: [`spec`] (the YAML format) → [`graph`] (a validated
//! graph of typed nodes) → [`runtime`] (a timely dataflow) → the `freshen-operators`
//! crate (the compute). [`store`] (Parquet, datasets, the embedding cache) sits beneath
//! the runtime and imports nothing above it.

pub mod bench;
pub mod cli;
pub mod data;
pub mod error;
pub mod graph;
pub mod report;
pub mod runtime;
pub mod spec;
pub mod store;

pub use error::{Error, Result};
