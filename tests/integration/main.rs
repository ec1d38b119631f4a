//! Integration tests: the `freshen` binary on real files, real timely workers and real
//! readers. One test binary (link time adds up), one module per area.

// Tests read tensors as candle gives them; the counted door is for the code they test.
#![allow(clippy::disallowed_methods)]

mod cli;
mod common;
mod embed;
mod errors;
mod eval;
mod inputs;
mod new;
mod refusals;
mod rlm;
mod shards;
mod study;
mod survive;
mod train;
