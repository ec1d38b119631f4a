//! Writing a stream into one Parquet file on the leader, as its batches arrive.
//!
//! The file is written under a temporary name and queued in the run state; the run
//! commits it with every other output only when every worker has succeeded. Batches are
//! written as they arrive, so the leader never holds a whole sharded table that the
//! other workers send it (their batches leave them one by one).

use std::path::PathBuf;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::{Operator as _, Probe};

use super::operator::BuildCx;
use super::streams::BatchStream;
use crate::error::Result;
use crate::store::batch::Batch;
use crate::store::parquet_io::AtomicParquetWriter;

/// Writes every batch of `stream`, from every worker, mapped by `map`, into the Parquet
/// file `path` of schema `schema` on worker 0 (an empty file when none arrives); errors
/// are recorded under `cx`'s node. The run waits for it to finish.
pub fn write_on_leader<'s>(
    cx: &BuildCx<'_, 's>,
    stream: BatchStream<'s>,
    path: PathBuf,
    schema: SchemaRef,
    map: impl Fn(RecordBatch) -> Result<RecordBatch> + 'static,
) {
    let (leader, node, shared) = (cx.leader(), cx.node.clone(), cx.run.clone());
    let to_leader = Exchange::new(|_: &Batch| 0u64);
    stream
        .unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            to_leader,
            "WriteParquet",
            move |cap, _| {
                let mut cap = Some(cap);
                let mut writer: Option<AtomicParquetWriter> = None;
                move |(input, frontier), _output| {
                    input.for_each(|_, data| {
                        for b in data.drain(..) {
                            if cap.is_none() || shared.failed() {
                                continue;
                            }
                            let result = (|| {
                                let b = map(b.0)?;
                                if writer.is_none() {
                                    writer =
                                        Some(AtomicParquetWriter::create(&path, schema.clone())?);
                                }
                                writer.as_mut().map_or(Ok(()), |w| w.write(&b))
                            })();
                            if let Err(e) = result {
                                shared.fail(e.with_node(&node));
                            }
                        }
                    });
                    if frontier.is_empty() && cap.is_some() {
                        if leader && !shared.failed() {
                            let result = match writer.take() {
                                Some(w) => w.finish(),
                                None => AtomicParquetWriter::create(&path, schema.clone())
                                    .and_then(|w| w.finish()),
                            };
                            match result {
                                Ok(p) => shared.add_pending(p),
                                Err(e) => shared.fail(e.with_node(&node)),
                            }
                        }
                        cap = None;
                    }
                }
            },
        )
        .probe_with(&cx.assembly.probe);
}
