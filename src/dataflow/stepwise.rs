//! The shape shared by the training operators: gather a step's batches from every input,
//! act once every input has finished that step.
//!
//! A training step is a timestamp. An operator built by [`Stepwise`] stashes what arrives
//! per time and calls its logic for time `t` only when *every* input's frontier has passed
//! `t`: then nothing more can arrive for `t`, whether from upstream or, through the
//! feedback edge, from the previous step's `update`. That one rule is what orders a
//! training step: a node that uses a model lists the feedback as an input, so at step
//! `t + 1` it runs only after `update` has applied step `t`.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::Capability;

use super::operator::BuildCx;
use super::run_state::RunState;
use super::streams::{BatchStream, Time};
use crate::error::Result;
use crate::store::batch::Batch;

/// How an input's batches reach the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Each worker keeps its own.
    Local,
    /// Everything goes to worker 0.
    Leader,
}

/// A time not yet acted on: a capability per output port, and the batches per input.
type Pending = (Vec<Capability<Time>>, Vec<Vec<Batch>>);

/// What the logic of a step hands out: `(output port, batch)`.
pub type Emitted = Vec<(usize, Batch)>;

/// What runs once after every input is exhausted: it emits on port 0.
pub type Finish = Box<dyn FnMut(Time) -> Result<Emitted>>;

/// A stepwise operator being described: its inputs, its number of outputs, and what runs
/// at the end.
///
/// [`Stepwise::build`]'s `logic(t, batches)` gets, per input, the batches of time `t`,
/// and returns batches to emit at `t`. A [`Stepwise::finish`] closure runs once after
/// every input is exhausted and emits on port 0 (at the last time seen): the operator
/// holds port 0 open for it, so port 0 must not lead back into a feedback loop. Errors
/// are recorded in the run state under the node, and the operator then stops acting.
pub struct Stepwise<'s> {
    name: &'static str,
    inputs: Vec<(BatchStream<'s>, Route)>,
    outputs: usize,
    finish: Option<Finish>,
}

impl<'s> Stepwise<'s> {
    /// An operator named `name` (in timely's logs), with one output and no inputs yet.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            inputs: Vec::new(),
            outputs: 1,
            finish: None,
        }
    }

    /// Adds an input, routed by `route`.
    pub fn input(mut self, stream: BatchStream<'s>, route: Route) -> Self {
        self.inputs.push((stream, route));
        self
    }

    /// Adds inputs that stay on their worker.
    pub fn local_inputs(mut self, streams: Vec<BatchStream<'s>>) -> Self {
        self.inputs
            .extend(streams.into_iter().map(|s| (s, Route::Local)));
        self
    }

    /// Sets the number of output ports.
    pub fn outputs(mut self, n: usize) -> Self {
        self.outputs = n;
        self
    }

    /// Sets what runs once at the end.
    pub fn finish(mut self, f: Finish) -> Self {
        self.finish = Some(f);
        self
    }

    /// Builds the operator in `cx`'s scope with `logic` per step; returns its outputs.
    pub fn build(
        self,
        cx: &BuildCx<'_, 's>,
        logic: impl FnMut(Time, Vec<Vec<Batch>>) -> Result<Emitted> + 'static,
    ) -> Vec<BatchStream<'s>> {
        build(self, cx.scope, logic, cx.node.clone(), cx.run.clone())
    }
}

fn build<'s>(
    op: Stepwise<'s>,
    scope: timely::dataflow::Scope<'s, Time>,
    mut logic: impl FnMut(Time, Vec<Vec<Batch>>) -> Result<Emitted> + 'static,
    node: Rc<str>,
    shared: Arc<RunState>,
) -> Vec<BatchStream<'s>> {
    let Stepwise {
        name,
        inputs,
        outputs,
        finish,
    } = op;
    let mut builder = OperatorBuilder::new(name.to_string(), scope);
    let count = inputs.len();
    let mut handles = Vec::with_capacity(count);
    for (stream, route) in inputs {
        handles.push(match route {
            Route::Local => Box::new(builder.new_input(stream, Pipeline)) as Box<dyn InputPort>,
            Route::Leader => Box::new(builder.new_input(stream, Exchange::new(|_: &Batch| 0u64)))
                as Box<dyn InputPort>,
        });
    }
    let mut ports = Vec::with_capacity(outputs);
    let mut streams = Vec::with_capacity(outputs);
    for _ in 0..outputs {
        let (port, stream) = builder.new_output::<Vec<Batch>>();
        ports.push(port);
        streams.push(stream);
    }
    builder.build(move |initial| {
        let mut held: Option<Capability<Time>> = match finish {
            Some(_) => initial.into_iter().next(),
            None => None,
        };
        let mut finish = finish;
        let mut pending: BTreeMap<Time, Pending> = BTreeMap::new();
        let mut last: Time = 0;
        move |frontiers| {
            for (j, input) in handles.iter_mut().enumerate() {
                input.drain(&mut |time, make_cap, batches| {
                    let entry = pending.entry(time).or_insert_with(|| {
                        let caps = (0..outputs).map(make_cap).collect();
                        (caps, vec![Vec::new(); count])
                    });
                    entry.1[j].extend(batches);
                });
            }
            let mut outs: Vec<_> = ports.iter_mut().map(|p| p.activate()).collect();
            while let Some((&t, _)) = pending.first_key_value() {
                if frontiers.iter().any(|f| f.less_equal(&t)) {
                    break;
                }
                let (caps, batches) = pending.remove(&t).expect("first key exists");
                last = last.max(t);
                if let Some(h) = held.as_mut() {
                    if *h.time() < t {
                        h.downgrade(&t);
                    }
                }
                if shared.failed() {
                    continue;
                }
                match logic(t, batches) {
                    Ok(emitted) => {
                        for (port, b) in emitted {
                            outs[port].give(&caps[port], &mut vec![b]);
                        }
                    }
                    Err(e) => shared.fail(e.with_node(&node)),
                }
            }
            let done = pending.is_empty() && frontiers.iter().all(|f| f.is_empty());
            if done {
                if let (Some(cap), Some(f)) = (held.take(), finish.as_mut()) {
                    if !shared.failed() {
                        match f(last) {
                            Ok(emitted) => {
                                for (_, b) in emitted {
                                    outs[0].give(&cap, &mut vec![b]);
                                }
                            }
                            Err(e) => shared.fail(e.with_node(&node)),
                        }
                    }
                }
            }
        }
    });
    streams
}

/// An input of a stepwise operator, whatever its pact: hands over each message's time, a
/// way to mint capabilities for the outputs at that time, and the batches.
trait InputPort {
    fn drain(&mut self, f: Visit<'_>);
}

/// What [`InputPort::drain`] calls per message: its time, a capability maker for each
/// output port at that time, and its batches.
type Visit<'a> = &'a mut dyn FnMut(Time, &dyn Fn(usize) -> Capability<Time>, Vec<Batch>);

impl<P> InputPort for timely::dataflow::operators::generic::InputHandleCore<Time, Vec<Batch>, P>
where
    P: timely::communication::Pull<timely::dataflow::channels::Message<Time, Vec<Batch>>>,
{
    fn drain(&mut self, f: Visit<'_>) {
        self.for_each(|cap, data| {
            let Some(&time) = cap.least() else {
                return;
            };
            let make = |port: usize| cap.delayed(&time, port);
            f(time, &make, std::mem::take(data));
        });
    }
}
