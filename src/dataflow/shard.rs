//! A table sharded across the workers: which worker owns a row, the operator that moves
//! rows to their owners, and the lookup that brings a worker the rows it asks for.
//!
//! A cache of N targets is held as W disjoint shards of about N/W rows, one per timely
//! worker (threads and processes alike), so more workers make a larger corpus fit instead
//! of copying it W times. A row's owner is a hash of its id, never its position: the same
//! row has the same owner in every version of the table (a refresh, h(B)) and in every
//! table keyed by the same ids (the corpus texts, B, h(B)).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{interleave_record_batch, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema};
use freshen_operators::hashing::hash64_seeded;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Exchange, Operator as _};

use super::operator::BuildCx;
use super::rows_of;
use super::stepwise::{StepInputs, Stepwise};
use super::streams::{BatchStream, Time};
use crate::error::{Error, Result};
use crate::store::batch::{self, Batch};
use crate::store::tables::col;

/// The column that names the worker a batch is going to (a request's asker, a reply's
/// destination): every row of such a batch has the same value.
pub const TO: &str = "__to";

/// The column of a request that names the worker asking.
const FROM: &str = "__from";

/// Seed of the owner hash (any fixed value: changing it moves rows between shards).
const OWNER_SEED: u64 = 0x5348_4152_4421;

/// The worker of `workers` that owns the row with id `id`.
pub fn owner(id: &str, workers: usize) -> usize {
    (hash64_seeded(OWNER_SEED, id.as_bytes()) % workers.max(1) as u64) as usize
}

/// `b`'s rows split by the owner of their `key` column: `(owner, rows)` per owner that
/// has any, in owner order, each keeping the rows' order.
pub fn split_by_owner(
    b: &RecordBatch,
    key: &str,
    workers: usize,
) -> Result<Vec<(usize, RecordBatch)>> {
    if workers <= 1 || b.num_rows() == 0 {
        return Ok(vec![(0, b.clone())]);
    }
    let ids = batch::strings(b, key)?;
    let mut rows: Vec<Vec<u32>> = vec![Vec::new(); workers];
    for r in 0..b.num_rows() {
        rows[owner(ids.value(r), workers)].push(r as u32);
    }
    let mut out = Vec::new();
    for (w, r) in rows.into_iter().enumerate() {
        if r.is_empty() {
            continue;
        }
        let part = if r.len() == b.num_rows() {
            b.clone()
        } else {
            take_record_batch(b, &UInt32Array::from(r))?
        };
        out.push((w, part));
    }
    Ok(out)
}

/// `b` with a [`TO`] column saying it goes to worker `to`.
pub fn addressed(b: &RecordBatch, to: usize) -> Result<RecordBatch> {
    with_worker(b, TO, to)
}

/// `b` with a column `name` holding `worker` on every row (replacing one of that name).
fn with_worker(b: &RecordBatch, name: &str, worker: usize) -> Result<RecordBatch> {
    let to = worker;
    let mut fields: Vec<Field> = b
        .schema()
        .fields()
        .iter()
        .filter(|f| f.name() != name)
        .map(|f| f.as_ref().clone())
        .collect();
    let mut columns: Vec<ArrayRef> = b
        .schema()
        .fields()
        .iter()
        .zip(b.columns())
        .filter(|(f, _)| f.name() != name)
        .map(|(_, c)| c.clone())
        .collect();
    fields.push(Field::new(name, DataType::UInt32, false));
    columns.push(Arc::new(UInt32Array::from(vec![to as u32; b.num_rows()])));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// The worker an addressed batch goes to (0 for an empty or unaddressed one).
fn destination(b: &Batch) -> u64 {
    worker_in(&b.0, TO)
}

/// The worker named in column `name` of `b`'s first row (0 when there is none).
fn worker_in(b: &RecordBatch, name: &str) -> u64 {
    b.column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<UInt32Array>().cloned())
        .filter(|a| !a.is_empty())
        .map_or(0, |a| u64::from(a.value(0)))
}

/// Sends addressed batches (with a [`TO`] column) to the worker each names.
pub fn to_addressed(stream: BatchStream<'_>) -> BatchStream<'_> {
    stream.exchange(destination)
}

/// Moves every row of `stream` to the worker that owns it by its `key` column: the
/// sharded form of a table (each worker then holds only its own rows).
pub fn to_owners<'s>(
    stream: BatchStream<'s>,
    key: &'static str,
    workers: usize,
) -> BatchStream<'s> {
    stream
        .unary::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(Pipeline, "ByOwner", move |_, _| {
            move |input, output| {
                input.for_each_stamp(|time, data| {
                    let mut session = output.session(&time);
                    for batches in data {
                        for b in batches.drain(..) {
                            match split_by_owner(&b.0, key, workers).and_then(|parts| {
                                parts
                                    .into_iter()
                                    .map(|(w, p)| addressed(&p, w))
                                    .collect::<Result<Vec<_>>>()
                            }) {
                                Ok(parts) => {
                                    for p in parts {
                                        session.give(Batch(p));
                                    }
                                }
                                // A batch without the key column is not a table of rows
                                // (a tick): it stays where it is.
                                Err(_) => session.give(b),
                            }
                        }
                    }
                })
            }
        })
        .exchange(destination)
}

/// The rows a worker holds of a sharded table, replaced by each new version.
#[derive(Default)]
pub struct Shard {
    batches: Vec<RecordBatch>,
    index: HashMap<String, (usize, usize)>,
}

impl Shard {
    /// Keeps the rows of `batches` as the table's new version if they hold any rows;
    /// returns whether they did.
    pub fn replace(&mut self, batches: &[Batch], key: &str) -> Result<bool> {
        let fresh: Vec<RecordBatch> = rows_of(batches).cloned().collect();
        if fresh.is_empty() {
            return Ok(false);
        }
        let mut index = HashMap::new();
        for (i, b) in fresh.iter().enumerate() {
            let ids = batch::strings(b, key)?;
            for r in 0..b.num_rows() {
                index.entry(ids.value(r).to_string()).or_insert((i, r));
            }
        }
        self.batches = fresh;
        self.index = index;
        Ok(true)
    }

    /// Rows held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no row is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The held batches, as they arrived.
    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }

    /// Every held row as `(id, batch, row)`, in id order (the order a ranking or search
    /// breaks ties of score by, so that it is the same for every worker count).
    pub fn in_id_order(&self) -> Vec<(&str, usize, usize)> {
        let mut rows: Vec<(&str, usize, usize)> = self
            .index
            .iter()
            .map(|(id, &(b, r))| (id.as_str(), b, r))
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(b.0));
        rows
    }

    /// The vectors of column `name` of the rows with these ids, row-major, and their
    /// width; an id not held is an error naming it.
    pub fn vectors(&self, ids: &[String], name: &str, what: &str) -> Result<(Vec<f32>, usize)> {
        let mut out = Vec::new();
        let mut width = 0;
        for id in ids {
            let &(b, r) = self.index.get(id).ok_or_else(|| {
                Error::invariant(format!("`{id}` is not in the {what} shard of this worker"))
            })?;
            let (values, dim) = batch::vectors_of(&self.batches[b], name)?;
            width = dim;
            out.extend_from_slice(&values[r * dim..(r + 1) * dim]);
        }
        Ok((out, width))
    }

    /// Bytes the held batches take.
    pub fn bytes(&self) -> u64 {
        self.batches
            .iter()
            .map(|b| b.get_array_memory_size() as u64)
            .sum()
    }

    /// The rows with these ids, in this order; an id not held is an error naming it.
    pub fn rows(&self, ids: &[String], what: &str) -> Result<RecordBatch> {
        let mut at = Vec::with_capacity(ids.len());
        for id in ids {
            at.push(*self.index.get(id).ok_or_else(|| {
                Error::invariant(format!("`{id}` is not in the {what} shard of this worker"))
            })?);
        }
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        match refs.first() {
            Some(first) if at.is_empty() => Ok(RecordBatch::new_empty(first.schema())),
            Some(_) => Ok(interleave_record_batch(&refs, &at)?),
            None => Err(Error::invariant(format!("no {what} rows on this worker"))),
        }
    }
}

/// Brings each worker the rows of a sharded `table` it asks for.
///
/// `requests` carries, per step, batches with an `id` column on the worker that needs
/// those rows; `table` is the table already at its owners
/// ([`BuildCx::sharded_input`], whose name `held_as` its shard is reported under), each
/// new version at a step replacing the last. Each request goes to the owners of its ids,
/// which answer with the rows; the answers come back to the asking worker at the same
/// step, as batches of the table's columns plus [`TO`], in no particular order. Between
/// processes a row travels once each way, so a step moves its requested rows, not the
/// table.
pub fn fetch<'s>(
    cx: &BuildCx<'_, 's>,
    name: &'static str,
    requests: BatchStream<'s>,
    (table, held_as): (BatchStream<'s>, String),
) -> BatchStream<'s> {
    let workers = cx.scope.peers();
    let me = cx.scope.index();
    let asks = requests.unary::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
        Pipeline,
        "Ask",
        move |_, _| {
            move |input, output| {
                input.for_each_stamp(|time, data| {
                    let mut session = output.session(&time);
                    for batches in data {
                        for b in batches.drain(..) {
                            if let Ok(b) = with_worker(&b.0, FROM, me) {
                                session.give(Batch(b));
                            }
                        }
                    }
                })
            }
        },
    );
    let asks = to_owners(asks, col::ID, workers);
    let mut shard = Shard::default();
    let run = cx.run.clone();
    let logic = move |_t: Time, inputs: StepInputs| {
        if shard.replace(&inputs["table"], col::ID)? {
            run.hold(me, &held_as, shard.index.len() as u64, shard.bytes());
        }
        let mut out = Vec::new();
        for b in rows_of(&inputs["asks"]) {
            let ids = batch::strings(b, col::ID)?;
            let ids: Vec<String> = (0..b.num_rows())
                .map(|r| ids.value(r).to_string())
                .collect();
            let asker = worker_in(b, FROM) as usize;
            let rows = shard.rows(&ids, name)?;
            out.push((0, Batch(addressed(&rows, asker)?)));
        }
        Ok(out)
    };
    let answers = Stepwise::new("Serve")
        .input("asks", asks)
        .input("table", table)
        .build(cx, logic)
        .remove(0);
    to_addressed(answers)
}

/// A request batch: the ids a worker needs.
pub fn request(ids: Vec<String>) -> Result<Batch> {
    Ok(Batch(RecordBatch::try_new(
        crate::store::tables::ids_schema(),
        vec![Arc::new(arrow::array::StringArray::from(ids)) as ArrayRef],
    )?))
}
