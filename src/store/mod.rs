//! Storage beneath the runtime: Parquet files, BEIR datasets and the embedding cache.
//!
//! Nothing here knows about pipelines or timely; the runtime calls down into it.

pub mod batch;
pub mod beir;
pub mod cache;
pub mod commit;
pub mod lock;
pub mod pairs;
pub mod parquet_io;
pub mod tables;
