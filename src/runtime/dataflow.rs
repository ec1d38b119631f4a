//! Compiling a plan into one timely dataflow per worker.
//!
//! Each node becomes a timely operator (or a small fixed group of them) and each edge a
//! stream of Arrow batches. An `encode` read by a `cache` compiles to a
//! differential-dataflow group: the corpus and the stored keys are collections, and an
//! antijoin yields exactly the rows whose `(id, text_hash)` the store lacks, so a re-run
//! encodes only what changed.
//!
//! A training graph adds one feedback edge: the tick of each finished step (from `update`,
//! or from the training `eval` that follows it) comes back one timestamp later to every
//! node that uses a trained model, so step `t + 1` runs on the weights of step `t`.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::input::{Input as _, InputSession};
use differential_dataflow::AsCollection;
use freshen_operators::Encoder;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Concat, ConnectLoop, Feedback, Operator, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, Scope, Stream};

use super::ops;
use super::plan::{EncoderUse, Inline, NodePlan, Plan};
use super::shared::Shared;
use super::train::{self, TrainState};
use crate::error::{Error, Result};
use crate::graph::{MAIN, STATS, STEPS};
use crate::store::batch::Batch;

/// Logical time: the training step (0 for everything outside training).
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
pub fn build<'s>(scope: Scope<'s, Time>, plan: &Arc<Plan>, shared: &Arc<Shared>) -> Result<Built> {
    let graph = &plan.graph;
    let leader = scope.index() == 0;
    let training = graph.training.as_ref();
    let state = if plan.model_names().is_empty() {
        None
    } else {
        Some(Rc::new(TrainState::new(
            plan,
            scope.index() % plan.workers(),
        )?))
    };
    let feedback = training.map(|_| scope.feedback::<Vec<Batch>>(1));
    let fb = || -> Result<BatchStream<'s>> {
        feedback
            .as_ref()
            .map(|(_, s)| s.clone())
            .ok_or_else(|| Error::Other("a training operator outside a training graph".into()))
    };
    let state_of = || -> Result<Rc<TrainState>> {
        state
            .clone()
            .ok_or_else(|| Error::Other("a training operator without models".into()))
    };
    let trained = |model: &str| training.is_some_and(|t| t.trained.contains(model));
    let mut streams: HashMap<(usize, String), BatchStream<'s>> = HashMap::new();
    let mut cache_parts: HashMap<usize, (BatchStream<'s>, KeyStream<'s>)> = HashMap::new();
    let mut refreshes: HashMap<usize, BatchStream<'s>> = HashMap::new();
    let mut ticks: Option<BatchStream<'s>> = None;
    let mut built = Built {
        sources: Vec::new(),
        stores: Vec::new(),
        probe: ProbeHandle::new(),
    };
    for &i in &graph.order {
        let id: Rc<str> = Rc::from(graph.nodes()[i].id.as_str());
        let input = |j: usize| -> BatchStream<'s> {
            let e = &graph.inputs(i)[j];
            streams[&(e.node, e.port.clone())].clone()
        };
        // Whether node `i` is input `j` of the loss, and its model trains.
        let taped = |model: &str, slots: &[usize]| {
            training.is_some_and(|t| {
                slots
                    .iter()
                    .any(|&j| graph.inputs(t.loss).get(j).is_some_and(|e| e.node == i))
            }) && trained(model)
        };
        let out = match &plan.nodes[i] {
            NodePlan::Source { .. } => {
                let mut handle = InputHandle::new();
                let stream = handle.to_stream(scope);
                built.sources.push((i, handle));
                stream
            }
            NodePlan::Encode {
                encoder,
                fields,
                batch_size,
                cache,
            } => {
                let train_node = |model: &String, slots: &[usize]| train::EncodeNode {
                    model: model.clone(),
                    fields: fields.clone(),
                    batch_size: *batch_size,
                    record: taped(model, slots),
                    node: id.clone(),
                };
                match encoder {
                    EncoderUse::Named(model) if graph.inputs(i).len() == 2 => {
                        train::encode_touched(
                            scope,
                            input(0),
                            input(1).broadcast(),
                            fb()?,
                            train_node(model, &[1]),
                            state_of()?,
                            shared.clone(),
                        )
                    }
                    EncoderUse::Named(model)
                        if cache.is_none() && training.is_some_and(|t| t.gated.contains(&i)) =>
                    {
                        train::encode_train(
                            scope,
                            input(0),
                            fb()?,
                            train_node(model, &[0]),
                            state_of()?,
                            shared.clone(),
                        )
                    }
                    _ => {
                        let enc: Rc<dyn Encoder> = match encoder {
                            EncoderUse::Inline(e) => Rc::new(Inline(e.clone())),
                            EncoderUse::Named(model) => state_of()?.encoder(model)?,
                        };
                        let rows = ops::rows(input(0), fields.clone()).as_collection();
                        match cache {
                            None => ops::encode(
                                rows.inner,
                                enc,
                                *batch_size,
                                None,
                                id.clone(),
                                shared.clone(),
                            ),
                            Some(c) => {
                                if let (
                                    EncoderUse::Named(model),
                                    NodePlan::Cache {
                                        refresh_every: Some(every),
                                        ..
                                    },
                                ) = (encoder, &plan.nodes[*c])
                                {
                                    if training.is_some() {
                                        let node = train_node(model, &[]);
                                        let r = train::refresh(
                                            scope,
                                            input(0),
                                            fb()?,
                                            node,
                                            *every,
                                            plan.steps(),
                                            state_of()?,
                                            shared.clone(),
                                        );
                                        refreshes.insert(*c, r);
                                    }
                                }
                                let (out, parts) = cached_encode(
                                    scope,
                                    rows,
                                    enc,
                                    *batch_size,
                                    *c,
                                    &mut built,
                                    graph,
                                    id.clone(),
                                    shared,
                                );
                                cache_parts.insert(*c, parts);
                                out
                            }
                        }
                    }
                }
            }
            NodePlan::Cache { store, .. } => {
                let (fresh, reused) = cache_parts
                    .remove(&i)
                    .ok_or_else(|| Error::Other("a cache must read an encode node".into()))?;
                let out = ops::cache(
                    fresh,
                    reused,
                    store.clone(),
                    leader,
                    id.clone(),
                    shared.clone(),
                );
                match refreshes.remove(&i) {
                    Some(r) => out.concat(r),
                    None => out,
                }
            }
            NodePlan::Correct(spec) => {
                let refreshing = matches!(
                    &plan.nodes[graph.inputs(i)[0].node],
                    NodePlan::Cache {
                        refresh_every: Some(_),
                        ..
                    }
                );
                if graph.inputs(i).len() == 1 {
                    train::correct_cache(
                        scope,
                        input(0).broadcast(),
                        fb()?,
                        spec.clone(),
                        trained(&spec.model),
                        refreshing,
                        plan.steps(),
                        state_of()?,
                        id.clone(),
                        shared.clone(),
                    )
                } else {
                    let record = taped(&spec.model, &[3]) && !refreshing;
                    train::correct_touched(
                        scope,
                        input(0).broadcast(),
                        input(1),
                        fb()?,
                        spec.model.clone(),
                        record,
                        state_of()?,
                        id.clone(),
                        shared.clone(),
                    )
                }
            }
            NodePlan::Sample(spec) => train::sample(
                scope,
                input(0),
                input(1),
                input(2),
                spec.clone(),
                graph.spec.pipeline.seed,
                id.clone(),
                shared.clone(),
            ),
            NodePlan::Loss(spec) => {
                let edges = graph.inputs(i);
                let name = |j: usize| edges.get(j).map(|e| graph.nodes()[e.node].id.clone());
                let corrector_trains = edges.get(3).is_some_and(|e| {
                    matches!(&plan.nodes[e.node], NodePlan::Correct(c) if trained(&c.model))
                        && !matches!(
                            &plan.nodes[graph.inputs(e.node)[0].node],
                            NodePlan::Cache {
                                refresh_every: Some(_),
                                ..
                            }
                        )
                });
                let nodes = train::LossNodes {
                    queries: name(0).unwrap_or_default(),
                    targets: name(1).unwrap_or_default(),
                    corrected: name(3),
                    train_corrector: corrector_trains,
                };
                let inputs = (0..edges.len()).map(input).collect();
                let mut ports = train::loss(
                    scope,
                    inputs,
                    spec.clone(),
                    nodes,
                    id.clone(),
                    shared.clone(),
                )
                .into_iter();
                let (grads, stats) = (ports.next(), ports.next());
                if let Some(stats) = stats {
                    streams.insert((i, STATS.to_string()), stats);
                }
                grads.ok_or_else(|| Error::Other("loss without outputs".into()))?
            }
            NodePlan::Update { spec, steps } => {
                let t = training.ok_or_else(|| Error::Other("update outside training".into()))?;
                let loss = t.loss;
                let taped: Vec<String> = graph
                    .inputs(loss)
                    .iter()
                    .map(|e| graph.nodes()[e.node].id.clone())
                    .collect();
                let models = t
                    .trained
                    .iter()
                    .map(|m| {
                        let spec = &graph.spec.pipeline.models[m];
                        (m.clone(), (spec.lr_scale(), spec.kind() == "corrector"))
                    })
                    .collect();
                let plan = train::UpdatePlan {
                    taped,
                    models,
                    steps: *steps,
                };
                let mut ports = train::update(
                    scope,
                    input(0),
                    input(1),
                    spec.clone(),
                    plan,
                    state_of()?,
                    id.clone(),
                    shared.clone(),
                )
                .into_iter();
                let (rows, tick) = (ports.next(), ports.next());
                ticks = tick;
                rows.ok_or_else(|| Error::Other("update without outputs".into()))?
            }
            NodePlan::Eval { spec } if spec.models.is_some() => {
                let beta = training
                    .and_then(|t| match &plan.nodes[t.loss] {
                        NodePlan::Loss(l) => Some(l.beta),
                        _ => None,
                    })
                    .unwrap_or(20.0);
                let eval_plan = train::EvalPlan {
                    steps: plan.steps(),
                    beta,
                    run: graph
                        .spec
                        .pipeline
                        .name
                        .clone()
                        .unwrap_or_else(|| "run".into()),
                    settings: serde_json::to_string(&graph.spec.pipeline).unwrap_or_default(),
                };
                let update_ticks = ticks.take().ok_or_else(|| {
                    Error::Other("a training eval must read the update node".into())
                })?;
                let inputs = (0..6).map(input).collect();
                let mut ports = train::train_eval(
                    scope,
                    inputs,
                    update_ticks,
                    spec.clone(),
                    eval_plan,
                    state_of()?,
                    id.clone(),
                    shared.clone(),
                )
                .into_iter();
                let (summary, steps, tick) = (ports.next(), ports.next(), ports.next());
                if let Some(steps) = steps {
                    streams.insert((i, STEPS.to_string()), steps);
                }
                ticks = tick;
                summary.ok_or_else(|| Error::Other("eval without outputs".into()))?
            }
            NodePlan::Eval { spec } => {
                let inputs: Vec<BatchStream<'s>> = (0..3).map(input).collect();
                super::eval::eval(&inputs, spec.clone(), leader, id.clone(), shared.clone())
            }
            NodePlan::Sink {
                path,
                layout,
                schema,
            } => {
                ops::sink(
                    input(0),
                    path.clone(),
                    *layout,
                    schema.clone(),
                    leader,
                    id.clone(),
                    shared.clone(),
                )
                .probe_with(&built.probe);
                continue;
            }
        };
        streams.insert((i, MAIN.to_string()), out);
    }
    if let Some((handle, _)) = feedback {
        let ticks =
            ticks.ok_or_else(|| Error::Other("a training graph without an update node".into()))?;
        ticks.connect_loop(handle);
    }
    // Streams nobody reads still have to finish before the run does.
    for ((i, port), s) in streams {
        let read = (0..graph.nodes().len()).any(|c| {
            graph
                .inputs(c)
                .iter()
                .any(|e| e.node == i && e.port == port)
        });
        if !read {
            s.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Drain", |_, _| {
                |input, _| input.for_each(|_, _| {})
            })
            .probe_with(&built.probe);
        }
    }
    Ok(built)
}

/// An encode node read by a cache: the corpus and the stored keys as differential
/// collections, and an antijoin that leaves exactly the rows whose `(id, text_hash)` the
/// store lacks. Returns the fresh embeddings, and the parts the cache reads.
#[allow(clippy::too_many_arguments)]
fn cached_encode<'s>(
    scope: Scope<'s, Time>,
    rows: differential_dataflow::VecCollection<'s, Time, Row, isize>,
    enc: Rc<dyn Encoder>,
    batch_size: usize,
    cache: usize,
    built: &mut Built,
    graph: &crate::graph::Graph,
    id: Rc<str>,
    shared: &Arc<Shared>,
) -> (BatchStream<'s>, (BatchStream<'s>, KeyStream<'s>)) {
    let (store_input, stored) = scope.new_collection::<(String, u64), isize>();
    built.stores.push((cache, store_input));
    let keys = rows.clone().map(|(k, _)| k);
    let todo = rows.antijoin(stored.clone()).consolidate();
    let reused = stored
        .clone()
        .map(|k| (k, ()))
        .semijoin(keys.clone())
        .map(|(k, ())| k);
    let cache_id: Rc<str> = Rc::from(graph.nodes()[cache].id.as_str());
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
        enc,
        batch_size,
        Some("initial"),
        id,
        shared.clone(),
    );
    (out.clone(), (out, reused.inner))
}
