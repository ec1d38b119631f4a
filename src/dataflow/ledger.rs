//! The ledger of target-encoder forwards across processes.
//!
//! Each process counts the forwards its workers run in its [`RunState`]; the summary is
//! written by process 0. After every step, each other process sends what it counted
//! since its last message to worker 0, which adds it to its own ledger: the summary then
//! counts every process's forwards exactly once. Counts of step `t` are complete when
//! `update` finishes `t` (its all-reduce waits for every worker's touched forwards), so
//! the message rides on `update`'s "step done" ticks. The same message carries what the
//! process's workers hold of the sharded tables and its peak memory ([`super::held`]).

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{Float64Type, UInt64Type};

use super::held::Held;
use super::operator::BuildCx;
use super::rows_of;
use super::run_state::RunState;
use super::stepwise::{StepInputs, Stepwise};
use super::streams::{BatchStream, Time};
use crate::error::Result;
use crate::store::batch::{self, Batch};

const REASON: &str = "reason";
const FORWARDS: &str = "forwards";
const SECONDS: &str = "seconds";
const WORKER: &str = "worker";
const TABLE: &str = "table";
const ROWS: &str = "rows";
const BYTES: &str = "bytes";
const PROCESS: &str = "process";
const PEAK: &str = "peak_bytes";

/// Per step (a tick of `ticks`), what this process counted since its last message, for
/// the leader's ledger; nothing from process 0. Route it to the leader and hand it to
/// [`add`] there.
pub fn share<'s>(cx: &BuildCx<'_, 's>, ticks: BatchStream<'s>) -> BatchStream<'s> {
    let run = cx.run.clone();
    let logic = move |_t: Time, _inputs: StepInputs| {
        if run.leads() {
            return Ok(Vec::new());
        }
        let held = run.held();
        let mut out = vec![
            (0, Batch(held_batch(&held)?)),
            (0, Batch(peaks_batch(&held)?)),
        ];
        let delta = run.take_unsent();
        if delta.is_empty() {
            return Ok(out);
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
        out.push((0, Batch(b)));
        Ok(out)
    };
    Stepwise::new("LedgerShare")
        .input("ticks", ticks)
        .build(cx, logic)
        .remove(0)
}

/// The held tables as a message.
fn held_batch(held: &Held) -> Result<RecordBatch> {
    let t = &held.tables;
    Ok(RecordBatch::try_from_iter(vec![
        (
            WORKER,
            Arc::new(UInt64Array::from_iter_values(t.keys().map(|k| k.0 as u64))) as ArrayRef,
        ),
        (
            TABLE,
            Arc::new(StringArray::from_iter_values(
                t.keys().map(|k| k.1.as_str()),
            )),
        ),
        (
            ROWS,
            Arc::new(UInt64Array::from_iter_values(t.values().map(|v| v.0))),
        ),
        (
            BYTES,
            Arc::new(UInt64Array::from_iter_values(t.values().map(|v| v.1))),
        ),
    ])?)
}

/// The peak memory of the processes as a message.
fn peaks_batch(held: &Held) -> Result<RecordBatch> {
    let p = &held.peaks;
    Ok(RecordBatch::try_from_iter(vec![
        (
            PROCESS,
            Arc::new(UInt64Array::from_iter_values(p.keys().map(|&k| k as u64))) as ArrayRef,
        ),
        (
            PEAK,
            Arc::new(UInt64Array::from_iter_values(p.values().copied())),
        ),
    ])?)
}

/// Adds the other processes' messages ([`share`]) to `run`'s ledger and held tables.
pub fn add(run: &RunState, batches: &[Batch]) -> Result<()> {
    for b in rows_of(batches) {
        if b.column_by_name(TABLE).is_some() {
            let (w, rows, bytes) = (
                column::<UInt64Type>(b, WORKER)?,
                column::<UInt64Type>(b, ROWS)?,
                column::<UInt64Type>(b, BYTES)?,
            );
            let table = batch::strings(b, TABLE)?;
            let mut held = Held::default();
            for r in 0..b.num_rows() {
                held.hold(
                    w.value(r) as usize,
                    table.value(r),
                    rows.value(r),
                    bytes.value(r),
                );
            }
            run.merge_held(&held);
            continue;
        }
        if b.column_by_name(PEAK).is_some() {
            let (p, peak) = (
                column::<UInt64Type>(b, PROCESS)?,
                column::<UInt64Type>(b, PEAK)?,
            );
            let mut held = Held::default();
            for r in 0..b.num_rows() {
                held.peak(p.value(r) as usize, peak.value(r));
            }
            run.merge_held(&held);
            continue;
        }
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
