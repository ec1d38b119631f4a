//! The ledger of target-encoder forwards across processes.
//!
//! Each process counts the forwards its workers run in its [`RunState`]; the summary is
//! written by process 0. After every step, each other process sends what it counted
//! since its last message to worker 0, which adds it to its own ledger: the summary then
//! counts every process's forwards exactly once. Counts of step `t` are complete when
//! `update` finishes `t` (its all-reduce waits for every worker's touched forwards), so
//! the message rides on `update`'s "step done" ticks.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{Float64Type, UInt64Type};

use super::operator::BuildCx;
use super::rows_of;
use super::run_state::RunState;
use super::stepwise::Stepwise;
use super::streams::{BatchStream, Time};
use crate::error::Result;
use crate::store::batch::{self, Batch};

const REASON: &str = "reason";
const FORWARDS: &str = "forwards";
const SECONDS: &str = "seconds";

/// Per step (a tick of `ticks`), what this process counted since its last message, for
/// the leader's ledger; nothing from process 0. Route it to the leader and hand it to
/// [`add`] there.
pub fn share<'s>(cx: &BuildCx<'_, 's>, ticks: BatchStream<'s>) -> BatchStream<'s> {
    let run = cx.run.clone();
    let logic = move |_t: Time, _inputs: Vec<Vec<Batch>>| {
        let delta = run.take_unsent();
        if delta.is_empty() {
            return Ok(Vec::new());
        }
        let reasons: Vec<&str> = delta.keys().map(String::as_str).collect();
        let b = RecordBatch::try_from_iter(vec![
            (REASON, Arc::new(StringArray::from(reasons)) as ArrayRef),
            (
                FORWARDS,
                Arc::new(UInt64Array::from_iter_values(delta.values().map(|v| v.0))),
            ),
            (
                SECONDS,
                Arc::new(Float64Array::from_iter_values(delta.values().map(|v| v.1))),
            ),
        ])?;
        Ok(vec![(0, Batch(b))])
    };
    Stepwise::new("LedgerShare")
        .local_inputs(vec![ticks])
        .build(cx, logic)
        .remove(0)
}

/// Adds the other processes' messages ([`share`]) to `run`'s ledger.
pub fn add(run: &RunState, batches: &[Batch]) -> Result<()> {
    for b in rows_of(batches) {
        let reasons = batch::strings(b, REASON)?;
        let forwards = column::<UInt64Type>(b, FORWARDS)?;
        let seconds = column::<Float64Type>(b, SECONDS)?;
        for r in 0..b.num_rows() {
            run.add_sent(reasons.value(r), forwards.value(r), seconds.value(r));
        }
    }
    Ok(())
}

fn column<'a, T: arrow::datatypes::ArrowPrimitiveType>(
    b: &'a RecordBatch,
    name: &str,
) -> Result<&'a arrow::array::PrimitiveArray<T>> {
    b.column_by_name(name)
        .and_then(|c| c.as_primitive_opt::<T>())
        .ok_or_else(|| crate::error::Error::Column {
            column: name.to_string(),
            expected: "a number",
        })
}
