//! Compiling a plan into one timely dataflow per worker.
//!
//! Each node becomes a timely operator (or a small fixed group of them) and each edge a
//! stream of Arrow batches. An `encode` read by a `cache` compiles to a
//! differential-dataflow group: the corpus and the stored keys are collections, and an
//! antijoin yields exactly the rows whose `(id, text_hash)` the store lacks, so a re-run
//! encodes only what changed.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::input::{Input as _, InputSession};
use differential_dataflow::AsCollection;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Operator, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, Scope, Stream};

use super::ops;
use super::plan::{NodePlan, Plan};
use super::shared::Shared;
use crate::store::batch::Batch;

/// Logical time: one epoch per run (training steps later use it for the step).
pub type Time = u64;
/// A stream of Arrow batches.
pub type BatchStream<'s> = Stream<'s, Time, Vec<Batch>>;
/// The key of a stored embedding: `(id, text_hash)`.
pub type Key = (String, u64);
/// A corpus row inside the differential group: `((id, text_hash), text)`.
pub type Row = (Key, String);
/// A stream of differential updates to keys.
pub type KeyStream<'s> = Stream<'s, Time, Vec<(Key, Time, isize)>>;
/// The input a worker feeds a source's batches into.
pub type SourceInput = InputHandle<Time, CapacityContainerBuilder<Vec<Batch>>>;
/// The input a worker feeds a store's keys into.
pub type StoreInput = InputSession<Time, Key, isize>;

/// The handles a worker drives after building its dataflow.
pub struct Built {
    /// `(source node, input)`: the worker sends its share of the source's batches.
    pub sources: Vec<(usize, SourceInput)>,
    /// `(cache node, input)`: the worker sends its share of the store's keys.
    pub stores: Vec<(usize, StoreInput)>,
    /// Passes when every sink has finished.
    pub probe: ProbeHandle<Time>,
}

/// Builds the dataflow of `plan` in `scope`.
pub fn build<'s>(scope: Scope<'s, Time>, plan: &Arc<Plan>, shared: &Arc<Shared>) -> Built {
    let graph = &plan.graph;
    let leader = scope.index() == 0;
    let mut streams: HashMap<usize, BatchStream<'s>> = HashMap::new();
    let mut cache_parts: HashMap<usize, (BatchStream<'s>, KeyStream<'s>)> = HashMap::new();
    let mut built = Built {
        sources: Vec::new(),
        stores: Vec::new(),
        probe: ProbeHandle::new(),
    };
    for &i in &graph.order {
        let id: Rc<str> = Rc::from(graph.nodes()[i].id.as_str());
        match &plan.nodes[i] {
            NodePlan::Source { .. } => {
                let mut input = InputHandle::new();
                streams.insert(i, input.to_stream(scope));
                built.sources.push((i, input));
            }
            NodePlan::Encode {
                encoder,
                fields,
                batch_size,
                cache,
            } => {
                let upstream = streams[&graph.producers(i)[0]].clone();
                let fields = fields.clone();
                match cache {
                    None => {
                        let rows = ops::rows(upstream, fields).as_collection();
                        let out = ops::encode(
                            rows.inner,
                            encoder.clone(),
                            *batch_size,
                            id.clone(),
                            shared.clone(),
                        );
                        streams.insert(i, out);
                    }
                    Some(c) => {
                        let rows = ops::rows(upstream, fields).as_collection();
                        let (store_input, stored) = scope.new_collection::<(String, u64), isize>();
                        built.stores.push((*c, store_input));
                        let keys = rows.clone().map(|(k, _)| k);
                        let todo = rows.antijoin(stored.clone()).consolidate();
                        let reused = stored
                            .clone()
                            .map(|k| (k, ()))
                            .semijoin(keys.clone())
                            .map(|(k, ())| k);
                        let cache_id: Rc<str> = Rc::from(graph.nodes()[*c].id.as_str());
                        let counter = shared.clone();
                        let ids = keys.map(|(id, _)| id).distinct();
                        stored
                            .map(|(id, _)| (id, ()))
                            .antijoin(ids)
                            .consolidate()
                            .inspect(move |(_, _, diff)| {
                                counter.count(&cache_id, |s| s.dropped += (*diff).max(0) as usize)
                            });
                        let out = ops::encode(
                            todo.inner,
                            encoder.clone(),
                            *batch_size,
                            id.clone(),
                            shared.clone(),
                        );
                        cache_parts.insert(*c, (out.clone(), reused.inner));
                        streams.insert(i, out);
                    }
                }
            }
            NodePlan::Cache { store } => {
                let (fresh, reused) = cache_parts
                    .remove(&i)
                    .expect("the planner checked that a cache reads an encode node");
                let out = ops::cache(
                    fresh,
                    reused,
                    store.clone(),
                    leader,
                    id.clone(),
                    shared.clone(),
                );
                streams.insert(i, out);
            }
            NodePlan::Eval { spec } => {
                let inputs: Vec<BatchStream<'s>> = graph
                    .producers(i)
                    .iter()
                    .map(|p| streams[p].clone())
                    .collect();
                let out =
                    super::eval::eval(&inputs, spec.clone(), leader, id.clone(), shared.clone());
                streams.insert(i, out);
            }
            NodePlan::Sink {
                path,
                layout,
                schema,
            } => {
                let upstream = streams[&graph.producers(i)[0]].clone();
                ops::sink(
                    upstream,
                    path.clone(),
                    *layout,
                    schema.clone(),
                    leader,
                    id.clone(),
                    shared.clone(),
                )
                .probe_with(&built.probe);
            }
        }
    }
    // Streams nobody reads still have to finish before the run does.
    for (i, s) in streams {
        if graph.consumers(i).is_empty() {
            s.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Drain", |_, _| {
                |input, _| input.for_each(|_, _| {})
            })
            .probe_with(&built.probe);
        }
    }
    built
}
