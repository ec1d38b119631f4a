//! Compiling a plan into one timely dataflow per worker.
//!
//! Each node's operator builds its timely operators from its inputs' streams, in the
//! graph's topological order; an edge of the graph is a stream of Arrow batches. A
//! training graph adds one feedback edge: the "step done" ticks of the last node that
//! must finish a step (`update`, or the training `eval` that follows it) come back one
//! timestamp later to every node that uses a trained model, so step `t + 1` runs on the
//! weights of step `t`.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Concat, ConnectLoop, Feedback, Operator, Probe};
use timely::dataflow::{InputHandle, ProbeHandle, Scope};

use super::plan::Plan;
use crate::dataflow::{
    tick, Assembly, BatchStream, BuildCx, Feed, RunState, SourceInput, Time, WorkerModels,
};
use crate::error::{Error, Result};
use crate::store::batch::Batch;

/// What a worker drives once its dataflow is built.
pub struct Built {
    /// The inputs to feed.
    pub feeds: Vec<Box<dyn Feed>>,
    /// Passes when everything has finished.
    pub probe: ProbeHandle<Time>,
    /// The edges the operators read, as `(node, producer, port)`: the test that they
    /// are the graph's reads it.
    #[cfg_attr(not(test), allow(dead_code))]
    pub read: BTreeSet<(usize, usize, String)>,
}

/// Builds the dataflow of `plan` in `scope`; returns what the worker drives.
pub fn build<'s>(scope: Scope<'s, Time>, plan: &Arc<Plan>, run: &Arc<RunState>) -> Result<Built> {
    let graph = &plan.graph;
    let models = match plan.models.is_empty() {
        true => None,
        false => Some(Rc::new(WorkerModels::take(
            &plan.models,
            scope.index() % plan.workers(),
        )?)),
    };
    let feedback = graph
        .training
        .as_ref()
        .map(|_| scope.feedback::<Vec<Batch>>(1));
    // A resumed run's first step is told that the step before it is done, as the
    // uninterrupted run's was by that step's tick.
    let gate = match (&feedback, &plan.resume) {
        (Some((_, looped)), Some(point)) => {
            let mut first: SourceInput = InputHandle::new();
            let stream = first.to_stream(scope);
            first.advance_to(point.step as Time);
            first.send(tick());
            Some(looped.clone().concat(stream))
        }
        (Some((_, looped)), None) => Some(looped.clone()),
        _ => None,
    };
    let mut streams: HashMap<(usize, String), BatchStream<'s>> = HashMap::new();
    let mut assembly = Assembly::default();
    let ids: Vec<String> = graph.nodes().iter().map(|n| n.id.clone()).collect();
    for &i in &graph.order {
        let edges: Vec<(usize, String)> = graph
            .inputs(i)
            .iter()
            .map(|e| (e.node, e.port.clone()))
            .collect();
        let mut cx = BuildCx {
            scope,
            node: Rc::from(graph.nodes()[i].id.as_str()),
            index: i,
            run: run.clone(),
            models: models.clone(),
            resume: plan.resume.clone(),
            feedback: gate.clone(),
            edges: &edges,
            roles: &graph.nodes()[i].roles,
            ids: &ids,
            streams: &streams,
            assembly: &mut assembly,
        };
        let outputs = plan.operators[i].build(&mut cx)?;
        for (port, s) in outputs {
            streams.insert((i, port), s);
        }
    }
    if let Some((handle, _)) = feedback {
        let mut ticks = assembly
            .ticks
            .take()
            .ok_or_else(|| Error::invariant("a training graph without an update node"))?;
        if let Some(checkpoints) = &plan.checkpoints {
            let edges = Vec::new();
            let cx = BuildCx {
                scope,
                node: Rc::from("checkpoint"),
                index: usize::MAX,
                run: run.clone(),
                models: models.clone(),
                resume: plan.resume.clone(),
                feedback: gate.clone(),
                edges: &edges,
                roles: &[],
                ids: &ids,
                streams: &streams,
                assembly: &mut assembly,
            };
            ticks = super::checkpoint::build(&cx, checkpoints.clone(), ticks)?;
        }
        ticks.connect_loop(handle);
    }
    drain_unread(plan, &streams, &mut assembly);
    Ok(Built {
        feeds: assembly.feeds,
        probe: assembly.probe,
        read: assembly.read.into_inner(),
    })
}

/// Streams nobody reads still have to finish before the run does.
fn drain_unread<'s>(
    plan: &Plan,
    streams: &HashMap<(usize, String), BatchStream<'s>>,
    assembly: &mut Assembly<'s>,
) {
    let graph = &plan.graph;
    let mut keys: Vec<&(usize, String)> = streams.keys().collect();
    keys.sort();
    for key in keys {
        let (i, port) = key;
        let read = (0..graph.nodes().len()).any(|c| {
            graph
                .inputs(c)
                .iter()
                .any(|e| e.node == *i && &e.port == port)
        });
        if !read {
            streams[key]
                .clone()
                .unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, "Drain", |_, _| {
                    |input, _| input.for_each(|_, _| {})
                })
                .probe_with(&assembly.probe);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::build;
    use crate::dataflow::{RunState, Time};
    use crate::runtime::plan::Plan;

    /// What `freshen graph` draws is what the runtime builds: every edge of the graph,
    /// the ones freshen wires itself included, is read by its node's operators, and no
    /// operator reads another.
    #[test]
    fn the_operators_read_exactly_the_edges_the_graph_draws() {
        let dir = tempfile::tempdir().unwrap();
        let base = [
            format!("vars.out={}", dir.path().join("out").display()),
            format!("nodes.cache.path={}", dir.path().join("cache").display()),
        ];
        let wired = ["nodes.cache.refresh_every=50", "nodes.negatives.subset=64"];
        for extra in [&[][..], &wired[..]] {
            let mut sets = base.to_vec();
            sets.extend(extra.iter().map(|s| s.to_string()));
            let graph = crate::nodes::load("pipelines/quickstart.yaml".as_ref(), &sets).unwrap();
            let drawn: BTreeSet<(usize, usize, String)> = (0..graph.nodes().len())
                .flat_map(|i| {
                    graph
                        .inputs(i)
                        .iter()
                        .map(move |e| (i, e.node, e.port.clone()))
                })
                .collect();
            let ports: BTreeSet<&str> = drawn.iter().map(|(_, _, p)| p.as_str()).collect();
            assert!(ports.contains("_reused"), "{ports:?}");
            if !extra.is_empty() {
                assert!(["_refresh", "subset", "_subset"]
                    .iter()
                    .all(|p| ports.contains(p)));
            }
            let plan = Arc::new(Plan::new(graph, 1, 1, None).unwrap());
            let run = Arc::new(RunState::new(false, None));
            // Built, not run: dropping the feeds closes the inputs.
            let read = timely::execute_directly(move |w| {
                let built = w.dataflow::<Time, _, _>(|scope| build(scope, &plan, &run));
                built.unwrap().read
            });
            assert_eq!(read, drawn, "{extra:?}");
        }
    }
}
