//! `eval` on its own: exact search of query embeddings against target embeddings,
//! scored against qrels with the standard IR metrics.
//!
//! Its three inputs (queries, targets, qrels) are tagged and merged into one stream that
//! goes to the leader worker; when all three are complete it builds the target matrix
//! once, ranks the queries that have judgements in batches (search is chunked, so memory
//! is the target matrix plus one score block), writes the ranking as a TREC run and as
//! Parquet if asked, and emits one row of metrics.

use arrow::array::RecordBatch;
use candle_core::Device;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Concatenate, Operator};

use super::rank::{metrics_batch, push_qrels, rank_and_score, write_runs, RankCx};
use super::Eval;
use crate::dataflow::{BatchStream, BuildCx, EmbeddingRows, RunState};
use crate::error::Result;
use crate::store::batch::Batch;

/// Builds the eval operator over its inputs: queries, targets, qrels.
pub(super) fn eval<'s>(
    cx: &BuildCx<'_, 's>,
    spec: Eval,
    device: Device,
) -> Result<BatchStream<'s>> {
    let inputs = cx.inputs()?;
    let (leader, node, shared) = (cx.leader(), cx.node.clone(), cx.run.clone());
    let tagged = inputs
        .iter()
        .enumerate()
        .map(|(tag, s)| s.clone().map(move |b| (tag as u8, b)));
    let merged = cx.scope.concatenate(tagged);
    let to_leader = Exchange::new(|_: &(u8, Batch)| 0u64);
    Ok(
        merged.unary_frontier::<CapacityContainerBuilder<Vec<Batch>>, _, _, _>(
            to_leader,
            "Eval",
            move |cap, _| {
                let mut cap = Some(cap);
                let (mut queries, mut targets) =
                    (EmbeddingRows::default(), EmbeddingRows::default());
                let mut judgements: Vec<(String, String, i32)> = Vec::new();
                move |(input, frontier), output| {
                    input.for_each(|_, data| {
                        for (tag, b) in data.drain(..) {
                            let result = match tag {
                                0 => queries.push(&b.0),
                                1 => targets.push(&b.0),
                                _ => push_qrels(&mut judgements, &b.0),
                            };
                            if let Err(e) = result {
                                shared.fail(e.with_node(&node));
                            }
                        }
                    });
                    if frontier.is_empty() {
                        if let Some(c) = cap.take() {
                            if leader && !shared.failed() {
                                targets = std::mem::take(&mut targets).sorted_by_id();
                                let data = (&queries, &targets, judgements.as_slice());
                                match evaluate(&spec, data, &shared, &device) {
                                    Ok(b) => {
                                        shared.count(&node, |s| s.rows_out += 1);
                                        output.session(&c).give(Batch(b));
                                    }
                                    Err(e) => shared.fail(e.with_node(&node)),
                                }
                            }
                        }
                    }
                }
            },
        ),
    )
}

/// The queries, targets and judgements of one evaluation.
type EvalData<'a> = (
    &'a EmbeddingRows,
    &'a EmbeddingRows,
    &'a [(String, String, i32)],
);

/// Ranks every judged query and scores the ranking; writes the run files it was asked for.
fn evaluate(
    spec: &Eval,
    data: EvalData,
    shared: &RunState,
    device: &Device,
) -> Result<RecordBatch> {
    let (queries, targets, judgements) = data;
    let cache = targets.tensor(device)?;
    let bar = shared
        .progress()
        .bar_of("evaluation: ranking", "queries", 0);
    let cx = RankCx {
        depth: spec.depth,
        batch: spec.batch_size,
        recall_at: &spec.recall_at,
        device,
        bar: &bar,
    };
    let ranked = rank_and_score(queries, &targets.ids, &cache, judgements, &cx)?;
    bar.finish_and_clear();
    write_runs(spec, &ranked, &targets.ids, shared)?;
    metrics_batch(&ranked.metrics, &spec.recall_at)
}
