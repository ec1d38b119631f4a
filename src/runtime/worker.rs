//! One worker: build the dataflow, drive its inputs, run to the end.

use std::sync::Arc;

use timely::worker::Worker;

use super::assemble;
use super::plan::Plan;
use crate::dataflow::{Feed, RunState, Time};

/// Builds the worker's dataflow, feeds its share of every source and store (sources
/// first), and steps until every output has finished.
pub fn drive(worker: &mut Worker, plan: &Arc<Plan>, run: &Arc<RunState>) {
    let built = worker.dataflow::<Time, _, _>(|scope| assemble::build(scope, plan, run));
    let built = match built {
        Ok(b) => b,
        Err(e) => {
            run.fail(e);
            return;
        }
    };
    let probe = built.probe;
    let mut feeds: Vec<Box<dyn Feed>> = built.feeds;
    // A stable sort: sources in build order, then stores in build order.
    feeds.sort_by_key(|f| f.stage());
    for feed in feeds {
        feed.feed(worker, run);
    }
    while !probe.done() {
        worker.step();
    }
}
