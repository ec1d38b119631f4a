//! The timely operators behind the node types: rows, encode, cache and sink.
//!
//! Each operator keeps its state local, records failures in [`Shared`] and then stops
//! producing, and holds a capability only as long as it may still emit at that time.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::{BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::SchemaRef;
use freshen_operators::hashing::text_hash;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::Stream;

use super::dataflow::{BatchStream, KeyStream, Row, Time};
use super::shared::Shared;
use crate::error::{Error, Result};
use crate::spec::VectorLayout;
use crate::store::batch::{self, Batch};
use crate::store::cache::EmbeddingStore;
use crate::store::parquet_io::AtomicParquetWriter;
use crate::store::tables::col;
use freshen_operators::Encoder;

/// A row to embed: `(id, text_hash, text)`.
type KeyedText = (String, u64, String);

/// Turns batches into differential updates of rows `((id, text_hash), text)`, where the
/// text is the batch's `fields` joined by a space.
pub fn rows<'s>(
    input: BatchStream<'s>,
    fields: Vec<String>,
) -> Stream<'s, Time, Vec<(Row, Time, isize)>> {
    input.unary::<CapacityContainerBuilder<Vec<(Row, Time, isize)>>, _, _, _>(
        Pipeline,
        "Rows",
        move |_, _| {
            move |input, output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let t = *cap.time();
                    let mut session = output.session(&cap);
                    for container in data {
                        for b in container.drain(..) {
                            if let Ok(rows) = joined_rows(&b.0, &fields) {
                                session.give_iterator(rows.into_iter().map(|r| (r, t, 1)));
                            }
                        }
                    }
                });
            }
        },
    )
}

/// The rows of `batch` with their embedded text and its hash.
pub fn joined_rows(batch: &RecordBatch, fields: &[String]) -> Result<Vec<Row>> {
    let ids = batch::strings(batch, col::ID)?;
    let cols = fields
        .iter()
        .map(|f| batch::strings(batch, f))
        .collect::<Result<Vec<_>>>()?;
    Ok((0..batch.num_rows())
        .map(|r| {
            let text = cols
                .iter()
                .map(|c| c.value(r).trim())
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(" ");
            ((ids.value(r).to_string(), text_hash(&text)), text)
        })
        .collect())
}

/// Embeds the rows with positive multiplicity, `batch_size` texts per forward pass, and
/// emits embedding batches (`id`, `text_hash`, `embedding`). With `ledger`, the forwards
/// are counted under that reason (the starting cache's are `initial`).
pub fn encode<'s>(
    input: Stream<'s, Time, Vec<(Row, Time, isize)>>,
    encoder: Rc<dyn Encoder>,
    batch_size: usize,
    ledger: Option<&'static str>,
    node: Rc<str>,
    shared: Arc<Shared>,
) -> BatchStream<'s> {
    input.unary_frontier::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        Pipeline,
        "Encode",
        move |_, _| {
            let mut pending: BTreeMap<Time, (Capability<Time>, Vec<KeyedText>)> = BTreeMap::new();
            let bar = shared.bar(&node, 0);
            move |(input, frontier), output| {
                input.for_each_stamp(|cap, data| {
                    let Some(cap) = cap.retain_least(output.output_index()) else {
                        return;
                    };
                    let entry = pending
                        .entry(*cap.time())
                        .or_insert_with(|| (cap.clone(), Vec::new()));
                    for container in data {
                        for (((id, hash), text), _, diff) in container.drain(..) {
                            for _ in 0..diff.max(0) {
                                entry.1.push((id.clone(), hash, text.clone()));
                            }
                        }
                    }
                    bar.inc_length(entry.1.len() as u64);
                });
                let times: Vec<Time> = pending.keys().copied().collect();
                for t in times {
                    let done = !frontier.less_equal(&t);
                    let Some((cap, rows)) = pending.get_mut(&t) else {
                        continue;
                    };
                    while rows.len() >= batch_size || (done && !rows.is_empty()) {
                        let chunk: Vec<_> = rows.drain(..rows.len().min(batch_size)).collect();
                        if shared.failed() {
                            continue;
                        }
                        let n = chunk.len();
                        let started = std::time::Instant::now();
                        match encode_chunk(encoder.as_ref(), chunk) {
                            Ok(b) => {
                                if let Some(reason) = ledger {
                                    let secs = started.elapsed().as_secs_f64();
                                    shared.forwards(reason, n as u64, secs);
                                }
                                shared.count(&node, |s| {
                                    s.encoded += n;
                                    s.rows_out += n;
                                });
                                bar.inc(n as u64);
                                output.session(&*cap).give(Batch(b));
                            }
                            Err(e) => shared.fail(Error::Operator {
                                node: node.to_string(),
                                message: e.to_string(),
                            }),
                        }
                    }
                    if done {
                        pending.remove(&t);
                    }
                }
                if pending.is_empty() && frontier.is_empty() {
                    bar.finish_and_clear();
                }
            }
        },
    )
}

/// Encodes rows `(id, text_hash, text)` into one embeddings batch.
pub fn encode_chunk(
    encoder: &dyn Encoder,
    rows: Vec<(String, u64, String)>,
) -> Result<RecordBatch> {
    let texts: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let vectors = encoder
        .encode(&texts)?
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(freshen_operators::Error::from)?;
    let (ids, hashes): (Vec<String>, Vec<u64>) = rows.into_iter().map(|(id, h, _)| (id, h)).unzip();
    batch::embeddings_batch(ids, hashes, vectors, encoder.dim())
}

/// The cache: writes the store's next version (fresh rows as they arrive, then the stored
/// rows still current) and emits the full table downstream. All on the leader worker.
pub fn cache<'s>(
    fresh: BatchStream<'s>,
    reused: KeyStream<'s>,
    store: EmbeddingStore,
    leader: bool,
    node: Rc<str>,
    shared: Arc<Shared>,
) -> BatchStream<'s> {
    let to_leader = Exchange::new(|_: &Batch| 0u64);
    let keys_to_leader = Exchange::new(|_: &((String, u64), Time, isize)| 0u64);
    fresh.binary_frontier::<_, CapacityContainerBuilder<Vec<Batch>>, _, _, _, _>(
        reused,
        to_leader,
        keys_to_leader,
        "Cache",
        move |cap, _| {
            let mut cap = Some(cap);
            let mut writer: Option<AtomicParquetWriter> = None;
            let mut keep: HashSet<(String, u64)> = HashSet::new();
            move |(fresh, f1), (reused, f2), output| {
                let Some(c) = cap.as_ref() else {
                    fresh.for_each(|_, _| {});
                    reused.for_each(|_, _| {});
                    return;
                };
                fresh.for_each(|_, data| {
                    for b in data.drain(..) {
                        if let Err(e) = write(&mut writer, &store, &b.0) {
                            shared.fail(e.with_node(&node));
                        }
                        shared.count(&node, |s| s.rows_out += b.0.num_rows());
                        output.session(c).give(b);
                    }
                });
                reused.for_each(|_, data| {
                    for (k, _, d) in data.drain(..) {
                        if d > 0 {
                            keep.insert(k);
                        }
                    }
                });
                if f1.is_empty() && f2.is_empty() {
                    if leader && !shared.failed() {
                        let kept = keep.len();
                        let result = copy_kept(&store, &keep, &mut writer, &mut |b| {
                            output.session(c).give(Batch(b));
                        })
                        .and_then(|()| {
                            let w = match writer.take() {
                                Some(w) => w,
                                None => store.writer()?,
                            };
                            shared.add_pending(w.finish()?);
                            Ok(())
                        });
                        match result {
                            Ok(()) => shared.count(&node, |s| {
                                s.reused += kept;
                                s.rows_out += kept;
                            }),
                            Err(e) => shared.fail(Error::Operator {
                                node: node.to_string(),
                                message: e.to_string(),
                            }),
                        }
                    }
                    cap = None;
                }
            }
        },
    )
}

fn write(
    writer: &mut Option<AtomicParquetWriter>,
    store: &EmbeddingStore,
    b: &RecordBatch,
) -> Result<()> {
    if writer.is_none() {
        *writer = Some(store.writer()?);
    }
    match writer.as_mut() {
        Some(w) => w.write(b),
        None => Ok(()),
    }
}

/// Streams the current store and passes on the rows whose key is in `keep`.
fn copy_kept(
    store: &EmbeddingStore,
    keep: &HashSet<(String, u64)>,
    writer: &mut Option<AtomicParquetWriter>,
    emit: &mut dyn FnMut(RecordBatch),
) -> Result<()> {
    if keep.is_empty() {
        return Ok(());
    }
    for b in store.read(8192)? {
        let b = b?;
        let ids = batch::strings(&b, col::ID)?;
        let hashes = batch::hashes(&b)?;
        let mask: BooleanArray = (0..b.num_rows())
            .map(|r| Some(keep.contains(&(ids.value(r).to_string(), hashes.value(r)))))
            .collect();
        let kept = filter_record_batch(&b, &mask)?;
        if kept.num_rows() > 0 {
            write(writer, store, &kept)?;
            emit(kept);
        }
    }
    Ok(())
}

/// Writes its input to a Parquet file under a temporary name; the run commits it.
pub fn sink<'s>(
    input: BatchStream<'s>,
    path: PathBuf,
    layout: VectorLayout,
    schema: SchemaRef,
    leader: bool,
    node: Rc<str>,
    shared: Arc<Shared>,
) -> Stream<'s, Time, Vec<()>> {
    let to_leader = Exchange::new(|_: &Batch| 0u64);
    input.unary_frontier::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
        to_leader,
        "Sink",
        move |cap, _| {
            let mut cap = Some(cap);
            let schema = match layout {
                VectorLayout::Fixed => schema,
                VectorLayout::List => batch::list_layout_schema(&schema),
            };
            let mut writer: Option<AtomicParquetWriter> = None;
            move |(input, frontier), _output| {
                input.for_each(|_, data| {
                    for b in data.drain(..) {
                        if cap.is_none() || shared.failed() {
                            continue;
                        }
                        let result = (|| {
                            let b = match layout {
                                VectorLayout::Fixed => b.0,
                                VectorLayout::List => batch::to_list_layout(&b.0)?,
                            };
                            if writer.is_none() {
                                writer = Some(AtomicParquetWriter::create(&path, schema.clone())?);
                            }
                            shared.count(&node, |s| s.rows_out += b.num_rows());
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
}
