//! `encode` for inference: rows in, embeddings out; read by a cache, only the rows its
//! store lacks.

use freshen_operators::host::HostRead;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::RecordBatch;
use differential_dataflow::input::Input as _;
use differential_dataflow::{AsCollection, VecCollection};
use freshen_operators::Encoder;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::worker::Worker;

use crate::dataflow::{
    BatchStream, BuildCx, Feed, FeedStage, KeyStream, Row, RowStream, RunState, StoreInput, Time,
};
use crate::error::Result;
use crate::graph::ports::{MAIN, REUSED};
use crate::nodes::text::joined_rows;
use crate::store::batch::{self, Batch};
use crate::store::cache::{EmbeddingStore, Part};

/// A row to embed: `(id, text_hash, text)`.
type KeyedText = (String, u64, String);

/// An encoder of the node's own, shared by the process's workers, as a worker uses it.
pub(super) struct Shared(pub Arc<dyn Encoder>);

impl Encoder for Shared {
    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn encode(&self, texts: &[&str]) -> freshen_operators::Result<candle_core::Tensor> {
        self.0.encode(texts)
    }

    fn fingerprint(&self) -> &str {
        self.0.fingerprint()
    }

    fn device(&self) -> &candle_core::Device {
        self.0.device()
    }
}

/// Encodes rows `(id, text_hash, text)` into one embeddings batch.
pub fn encode_rows(encoder: &dyn Encoder, rows: Vec<KeyedText>) -> Result<RecordBatch> {
    let texts: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    let vectors = encoder.encode(&texts)?.flatten_all()?.host_vec1::<f32>()?;
    let (ids, hashes): (Vec<String>, Vec<u64>) = rows.into_iter().map(|(id, h, _)| (id, h)).unzip();
    batch::embeddings_batch(ids, hashes, vectors, encoder.dim())
}

/// Turns batches into differential updates of rows `((id, text_hash), text)`.
fn rows<'s>(input: BatchStream<'s>, fields: Vec<String>) -> RowStream<'s> {
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

/// Plain inference over the input rows; `expected` is the input table's row count when
/// the graph knows it (the progress line's total before every row has arrived).
pub(super) fn plain<'s>(
    cx: &BuildCx<'_, 's>,
    encoder: Rc<dyn Encoder>,
    fields: Vec<String>,
    batch_size: usize,
    expected: Option<usize>,
) -> Result<BatchStream<'s>> {
    let rows = rows(cx.input("rows")?, fields);
    let share = expected.map_or(0, |n| n.div_ceil(cx.scope.peers()));
    Ok(encode(cx, rows, encoder, batch_size, (Ledger::None, share)))
}

/// What an encode does about the ledger of target-encoder forwards.
#[derive(Clone, Copy)]
enum Ledger {
    /// Nothing (not target-encoder forwards).
    None,
    /// Counts them under this reason (the starting cache's are `initial`).
    Count(&'static str),
    /// Fails the run if there is any (a resumed run's starting cache).
    Refuse,
}

/// Embeds the rows with positive multiplicity, `batch_size` texts per forward pass, and
/// emits embedding batches (`id`, `text_hash`, `embedding`). `expected` rows of this
/// worker's share are the progress total until more arrive; the leader's bar is the one
/// the progress lines report.
fn encode<'s>(
    cx: &BuildCx<'_, 's>,
    input: RowStream<'s>,
    encoder: Rc<dyn Encoder>,
    batch_size: usize,
    (ledger, expected): (Ledger, usize),
) -> BatchStream<'s> {
    let (node, shared) = (cx.node.clone(), cx.run.clone());
    let label = match ledger {
        Ledger::Count("initial") => format!("initial cache ({node})"),
        _ => format!("encode {node}"),
    };
    if let Ledger::Count("initial") = ledger {
        shared.progress().phase("initial cache", "rows", 0);
        shared.progress().note(
            "initial cache",
            "comparing the corpus with the store".into(),
        );
    }
    let leader = cx.leader();
    input.unary_frontier::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        Pipeline,
        "Encode",
        move |_, _| {
            let mut pending: BTreeMap<Time, (Capability<Time>, Vec<KeyedText>)> = BTreeMap::new();
            let bar = match leader {
                true => shared.progress().bar(&label, expected as u64),
                false => indicatif::ProgressBar::hidden(),
            };
            let mut arrived = 0u64;
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
                    arrived += entry.1.len() as u64;
                    bar.set_length(arrived.max(expected as u64));
                    if let Ledger::Count("initial") = ledger {
                        let p = shared.progress();
                        p.advance("initial cache", 0, bar.length().unwrap_or(0));
                        p.note("initial cache", String::new());
                    }
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
                        if let Ledger::Refuse = ledger {
                            shared.fail(crate::Error::Usage(format!(
                                "cannot resume: the store lacks {n}+ rows of the starting cache (deleted or changed since the checkpoint; run without --resume)"
                            )));
                            continue;
                        }
                        let started = std::time::Instant::now();
                        match encode_rows(encoder.as_ref(), chunk) {
                            Ok(b) => {
                                if let Ledger::Count(reason) = ledger {
                                    let secs = started.elapsed().as_secs_f64();
                                    shared.forwards(reason, n as u64, secs);
                                }
                                shared.count(&node, |s| {
                                    s.encoded += n;
                                    s.rows_out += n;
                                });
                                bar.inc(n as u64);
                                if let Ledger::Count("initial") = ledger {
                                    shared.progress().advance("initial cache", n as u64, 0);
                                }
                                output.session(&*cap).give(Batch(b));
                            }
                            Err(e) => shared.fail(e.with_node(&node)),
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

/// What the differential group of an encode read by a cache needs.
pub(super) struct CachedGroup {
    pub encoder: Rc<dyn Encoder>,
    pub fields: Vec<String>,
    pub batch_size: usize,
    pub store: EmbeddingStore,
    /// The cache node, whose counters the store's rows go under.
    pub cache_id: String,
}

/// The corpus and the stored keys as differential collections, and an antijoin that
/// leaves exactly the rows whose `(id, text_hash)` the store lacks: those are embedded
/// (port main); the keys of the stored rows still current go to the cache (port
/// [`REUSED`]). The worker feeds the stored keys after the sources.
pub(super) fn cached<'s>(
    cx: &mut BuildCx<'_, 's>,
    group: CachedGroup,
) -> Result<Vec<(String, BatchStream<'s>)>> {
    let rows = rows(cx.input("rows")?, group.fields.clone()).as_collection();
    type Keys<'s> = VecCollection<'s, Time, (String, u64), isize>;
    let (mut store_input, stored): (StoreInput, Keys<'s>) = cx.scope.new_collection();
    let (mut retained_input, retained): (StoreInput, Keys<'s>) = cx.scope.new_collection();
    store_input.advance_to(cx.start());
    retained_input.advance_to(cx.start());
    cx.assembly.feeds.push(Box::new(StoreFeed {
        input: store_input,
        retained: retained_input,
        store: group.store.clone(),
        node: group.cache_id.clone(),
    }));
    // Any stored row serves (the current corpus's or one kept for later); the counters
    // of dropped and replaced rows compare with the current corpus's rows only.
    let all = stored.clone().concat(retained);
    let keys = rows.clone().map(|(k, _)| k);
    let todo = rows.antijoin(all.clone()).consolidate();
    let reused = all.map(|k| (k, ())).semijoin(keys.clone()).map(|(k, ())| k);
    let (counter, cache_id) = (cx.run.clone(), group.cache_id.clone());
    let ids = keys.map(|(id, _)| id).distinct();
    stored
        .map(|(id, _)| (id, ()))
        .antijoin(ids)
        .consolidate()
        .inspect(move |(_, _, diff)| {
            counter.count(&cache_id, |s| s.dropped += (*diff).max(0) as usize)
        });
    // A resumed run's starting cache comes whole from the store: embedding any of it
    // with the trained tower would make a different cache than the run's.
    let ledger = match cx.start() {
        0 => Ledger::Count("initial"),
        _ => Ledger::Refuse,
    };
    let out = encode(cx, todo.inner, group.encoder, group.batch_size, (ledger, 0));
    Ok(vec![
        (MAIN.to_string(), out),
        (REUSED.to_string(), key_batches(reused.inner)),
    ])
}

/// Differential updates of keys as batches of the keys with positive multiplicity.
fn key_batches<'s>(keys: KeyStream<'s>) -> BatchStream<'s> {
    keys.unary::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(Pipeline, "Keys", |_, _| {
        |input, output| {
            input.for_each_stamp(|cap, data| {
                let Some(cap) = cap.retain_least(output.output_index()) else {
                    return;
                };
                let mut session = output.session(&cap);
                for container in data {
                    let kept: Vec<(String, u64)> = container
                        .drain(..)
                        .filter(|(_, _, d)| *d > 0)
                        .map(|(k, _, _)| k)
                        .collect();
                    if let Ok(b) = batch::keys_batch(kept) {
                        session.give(Batch(b));
                    }
                }
            });
        }
    })
}

/// Sends this worker's share of a store's keys (block `b` to worker `b % peers`).
struct StoreFeed {
    /// The keys of the current corpus's rows.
    input: StoreInput,
    /// The keys of the rows kept for later.
    retained: StoreInput,
    store: EmbeddingStore,
    node: String,
}

impl Feed for StoreFeed {
    fn stage(&self) -> FeedStage {
        FeedStage::Stores
    }

    fn feed(mut self: Box<Self>, worker: &mut Worker, run: &RunState) {
        let (index, peers) = (worker.index(), worker.peers());
        for part in [Part::Current, Part::Retained] {
            let input = match part {
                Part::Current => &mut self.input,
                Part::Retained => &mut self.retained,
            };
            match self.store.read_keys(part, 8192) {
                Ok(keys) => {
                    for (b, keys) in keys.enumerate() {
                        match keys {
                            Ok(keys) if b % peers == index => {
                                if part == Part::Current {
                                    run.count(&self.node, |s| s.stored += keys.len());
                                }
                                for k in keys {
                                    input.insert(k);
                                }
                                worker.step();
                            }
                            Ok(_) => {}
                            Err(e) => run.fail(e.with_node(&self.node)),
                        }
                    }
                }
                Err(e) => run.fail(e.with_node(&self.node)),
            }
        }
    }
}
