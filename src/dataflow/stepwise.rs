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

/// The batches of one time, per input, by the name each input was added under.
///
/// Reading an input by a name that was not added is a bug of the operator, not of the
/// pipeline: it panics, as indexing a map by a missing key does.
#[derive(Debug)]
pub struct StepInputs {
    names: Rc<[&'static str]>,
    batches: Vec<Vec<Batch>>,
}

impl StepInputs {
    /// Inputs made by hand (to test an operator's logic outside a dataflow).
    pub fn from_named(named: impl IntoIterator<Item = (&'static str, Vec<Batch>)>) -> Self {
        let (names, batches): (Vec<_>, Vec<_>) = named.into_iter().unzip();
        Self {
            names: names.into(),
            batches,
        }
    }

    fn at(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| *n == name)
    }

    /// The batches of input `name`, if the operator added one of that name.
    pub fn get(&self, name: &str) -> Option<&[Batch]> {
        Some(&self.batches[self.at(name)?])
    }
}

impl std::ops::Index<&str> for StepInputs {
    type Output = [Batch];

    fn index(&self, name: &str) -> &[Batch] {
        self.get(name).unwrap_or_else(|| missing(name))
    }
}

fn missing(name: &str) -> ! {
    panic!("a stepwise operator read input `{name}`, which it never added")
}

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
///
/// ```text
///   queries ──┐  step t's batches, by name
///             ├──▶ logic(t, inputs) ──▶ port 0, port 1, ...
///  feedback ──┘  (called once no input can send more for t)
/// ```
///
/// A node builds it with [`Stepwise::build`] in its [`BuildCx`]; outside a pipeline,
/// [`Stepwise::build_in`] takes the scope and run state directly:
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use arrow::array::{RecordBatch, UInt64Array};
/// use freshen::dataflow::{RunState, Stepwise, Time};
/// use freshen::store::batch::Batch;
/// use timely::dataflow::operators::Input;
///
/// let rows = |n: u64| {
///     let col = Arc::new(UInt64Array::from_iter_values(0..n)) as _;
///     Batch(RecordBatch::try_from_iter([("id", col)]).unwrap())
/// };
/// let run = Arc::new(RunState::new(false, None));
/// let seen: Arc<Mutex<Vec<(Time, usize)>>> = Arc::default();
/// let log = seen.clone();
/// timely::execute_directly(move |worker| {
///     let (mut queries, mut feedback) = worker.dataflow::<Time, _, _>(|scope| {
///         let (q_in, queries) = scope.new_input::<Vec<Batch>>();
///         let (f_in, feedback) = scope.new_input::<Vec<Batch>>();
///         // Per step: how many query rows arrived, once the feedback has that step too.
///         Stepwise::new("CountRows")
///             .input("queries", queries)
///             .input("feedback", feedback)
///             .build_in(scope, "count", run.clone(), move |t, inputs| {
///                 let n: usize = inputs["queries"].iter().map(|b| b.0.num_rows()).sum();
///                 log.lock().unwrap().push((t, n));
///                 Ok(vec![(0, rows(n as u64))])
///             });
///         (q_in, f_in)
///     });
///     for t in 0..2 {
///         queries.send(rows(3));
///         queries.send(rows(t + 1));
///         queries.advance_to(t + 1);
///         feedback.advance_to(t + 1);
///     }
/// });
/// assert_eq!(*seen.lock().unwrap(), vec![(0, 4), (1, 5)]);
/// ```
pub struct Stepwise<'s> {
    name: &'static str,
    inputs: Vec<(&'static str, BatchStream<'s>, Route)>,
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

    /// Adds an input that stays on its worker, read as `inputs[name]`.
    pub fn input(self, name: &'static str, stream: BatchStream<'s>) -> Self {
        self.routed(name, stream, Route::Local)
    }

    /// Adds an input if there is one (an optional input of the node).
    pub fn input_if(self, name: &'static str, stream: Option<BatchStream<'s>>) -> Self {
        match stream {
            Some(s) => self.input(name, s),
            None => self,
        }
    }

    /// Adds an input routed by `route`, read as `inputs[name]`.
    pub fn routed(mut self, name: &'static str, stream: BatchStream<'s>, route: Route) -> Self {
        debug_assert!(
            self.inputs.iter().all(|(n, ..)| *n != name),
            "input `{name}` added twice"
        );
        self.inputs.push((name, stream, route));
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
        logic: impl FnMut(Time, StepInputs) -> Result<Emitted> + 'static,
    ) -> Vec<BatchStream<'s>> {
        build(self, cx.scope, logic, cx.node.clone(), cx.run.clone())
    }

    /// Builds the operator in `scope` for node `node`, its errors recorded in `run`.
    pub fn build_in(
        self,
        scope: timely::dataflow::Scope<'s, Time>,
        node: &str,
        run: Arc<RunState>,
        logic: impl FnMut(Time, StepInputs) -> Result<Emitted> + 'static,
    ) -> Vec<BatchStream<'s>> {
        build(self, scope, logic, node.into(), run)
    }
}

fn build<'s>(
    op: Stepwise<'s>,
    scope: timely::dataflow::Scope<'s, Time>,
    mut logic: impl FnMut(Time, StepInputs) -> Result<Emitted> + 'static,
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
    let names: Rc<[&'static str]> = inputs.iter().map(|(n, ..)| *n).collect();
    let mut handles = Vec::with_capacity(count);
    for (_, stream, route) in inputs {
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
                let step = StepInputs {
                    names: names.clone(),
                    batches,
                };
                match logic(t, step) {
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
