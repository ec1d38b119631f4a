//! `encode` in training: the query tower each step, the target tower on the targets a step
//! touches, and the full re-embedding of a refreshing cache.

use freshen_operators::host::HostRead;
use std::collections::HashMap;
use std::time::Instant;

use freshen_operators::train::TrainableEncoder;

use super::TrainEncode;
use crate::dataflow::shard::{fetch, Shard};
use crate::dataflow::{
    rows_of, BatchStream, BuildCx, StepInputs, Stepwise, TapeEntry, Time, WorkerModels,
};
use crate::error::{Error, Result};
use crate::nodes::text::joined_rows;
use crate::nodes::touched::{subset_ids, touched_ids, touched_requests};
use crate::store::batch::{self, Batch};
use crate::store::tables::col;

/// A step's rows to embed: ids, text hashes and texts.
struct Rows {
    ids: Vec<String>,
    hashes: Vec<u64>,
    texts: Vec<String>,
}

/// Embeds `rows` in chunks, recording the forwards on the tape (under `node`) when asked.
fn embed(
    enc: &dyn TrainableEncoder,
    spec: &TrainEncode,
    state: &WorkerModels,
    (node, t): (&str, Time),
    rows: Rows,
) -> Result<Batch> {
    let Rows { ids, hashes, texts } = rows;
    let dim = enc.dim();
    let mut values = Vec::with_capacity(texts.len() * dim);
    for (chunk, chunk_ids) in texts
        .chunks(spec.batch_size.max(1))
        .zip(ids.chunks(spec.batch_size.max(1)))
    {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        if spec.record {
            let recorded = enc.forward_train(&refs)?;
            values.extend(recorded.output.detach().flatten_all()?.host_vec1::<f32>()?);
            state.record(
                node,
                t,
                TapeEntry {
                    model: spec.model.clone(),
                    ids: chunk_ids.to_vec(),
                    recorded,
                },
            );
        } else {
            values.extend(enc.encode(&refs)?.flatten_all()?.host_vec1::<f32>()?);
        }
    }
    Ok(Batch(batch::embeddings_batch(ids, hashes, values, dim)?))
}

/// The query tower: embeds each step's rows (after the previous step's update).
/// Inputs: the rows; and the feedback.
pub(super) fn queries<'s>(cx: &BuildCx<'_, 's>, spec: TrainEncode) -> Result<BatchStream<'s>> {
    let state = cx.models()?;
    let enc = state.encoder(&spec.model)?;
    let (counter, node) = (cx.run.clone(), cx.node.clone());
    let logic = move |t: Time, inputs: StepInputs| {
        let mut out = Vec::new();
        for b in rows_of(&inputs["rows"]) {
            let rows = joined_rows(b, &spec.fields)?;
            let n = rows.len();
            let (keys, texts): (Vec<_>, Vec<String>) = rows.into_iter().unzip();
            let (ids, hashes) = keys.into_iter().unzip();
            let rows = Rows { ids, hashes, texts };
            out.push((0, embed(enc.as_ref(), &spec, &state, (&node, t), rows)?));
            counter.count(&node, |s| {
                s.encoded += n;
                s.rows_out += n;
            });
        }
        Ok(out)
    };
    Ok(Stepwise::new("EncodeTrain")
        .input("rows", cx.input("rows")?)
        .input("feedback", cx.feedback()?)
        .build(cx, logic)
        .remove(0))
}

/// The target tower on the targets a step touches: the positive and negatives of every
/// row of the `sample` node, each distinct target once. Inputs: the sample rows, the
/// texts of those targets fetched from the owners' shards of the corpus, and the
/// feedback. The forward runs here, on the worker whose queries touched the targets,
/// because its autograd graph must sit on the tape of the worker that computes their
/// loss: a text (a few hundred bytes) travels, not a 768-float embedding and its
/// gradient back.
///
/// With the `sample` node's training subset (its `subset` port), this worker's targets
/// of the step's draw are embedded too, off the tape (only h learns from them), counted
/// as `subset` forwards and sent on the second returned stream (`_subset`).
pub(super) fn touched<'s>(
    cx: &mut BuildCx<'_, 's>,
    spec: TrainEncode,
) -> Result<(BatchStream<'s>, Option<BatchStream<'s>>)> {
    let state = cx.models()?;
    let enc = state.encoder(&spec.model)?;
    let (counter, node) = (cx.run.clone(), cx.node.clone());
    let sample = cx.input("sample")?;
    let subset = cx.input_if("subset");
    let corpus = cx.sharded_input("corpus")?;
    let requests = touched_requests(cx, sample.clone(), subset.clone());
    let fetched = fetch(cx, "corpus", requests, corpus);
    let with_subset = subset.is_some();
    let logic = move |t: Time, inputs: StepInputs| {
        let mut texts: HashMap<String, (u64, String)> = HashMap::new();
        for b in rows_of(&inputs["texts"]) {
            for ((id, hash), text) in joined_rows(b, &spec.fields)? {
                texts.insert(id, (hash, text));
            }
        }
        let rows_of_ids = |ids: Vec<String>| -> Result<Rows> {
            let mut rows = Rows {
                hashes: Vec::with_capacity(ids.len()),
                texts: Vec::with_capacity(ids.len()),
                ids: Vec::new(),
            };
            for id in &ids {
                let (h, text) = texts.get(id).ok_or_else(|| {
                    Error::invariant(format!("target `{id}` is not in the corpus input"))
                })?;
                rows.hashes.push(*h);
                rows.texts.push(text.clone());
            }
            rows.ids = ids;
            Ok(rows)
        };
        let mut out = Vec::new();
        let ids = touched_ids(&inputs["sample"])?;
        let n = ids.len();
        if n > 0 {
            let started = Instant::now();
            let batch = embed(enc.as_ref(), &spec, &state, (&node, t), rows_of_ids(ids)?)?;
            counter.forwards("touched", n as u64, started.elapsed().as_secs_f64());
            state.count_touched(t, n as u64);
            counter.count(&node, |s| {
                s.encoded += n;
                s.rows_out += n;
            });
            out.push((0, batch));
        }
        if let Some(subset) = inputs.get("subset") {
            let ids = subset_ids(subset)?;
            if !ids.is_empty() {
                let m = ids.len();
                let started = Instant::now();
                let plain = TrainEncode {
                    record: false,
                    ..spec.clone()
                };
                let batch = embed(enc.as_ref(), &plain, &state, (&node, t), rows_of_ids(ids)?)?;
                counter.forwards("subset", m as u64, started.elapsed().as_secs_f64());
                counter.count(&node, |s| s.encoded += m);
                out.push((1, batch));
            }
        }
        Ok(out)
    };
    let mut ports = Stepwise::new("EncodeTouched")
        .outputs(2)
        .input("sample", sample)
        .input("texts", fetched)
        .input("feedback", cx.feedback()?)
        .input_if("subset", subset)
        .build(cx, logic)
        .into_iter();
    let main = ports
        .next()
        .ok_or_else(|| Error::invariant("a touched encode without outputs"))?;
    Ok((main, ports.next().filter(|_| with_subset)))
}

/// A refreshing cache's re-embedding: every `every` steps, the whole corpus (this
/// worker's shard, the batches shared with the corpus's other readers) with the current
/// target tower, up to the last of `steps`. Inputs: the corpus rows, and the feedback.
pub(super) fn refresh<'s>(
    cx: &mut BuildCx<'_, 's>,
    spec: TrainEncode,
    every: usize,
    steps: usize,
) -> Result<BatchStream<'s>> {
    let state = cx.models()?;
    let enc = state.encoder(&spec.model)?;
    let (counter, node, me) = (cx.run.clone(), cx.node.clone(), cx.scope.index());
    let (corpus, held_as) = cx.sharded_input("rows")?;
    let mut shard = Shard::default();
    let logic = move |t: Time, inputs: StepInputs| {
        if shard.replace(&inputs["corpus"], col::ID)? {
            counter.hold(me, &held_as, shard.len() as u64, shard.bytes());
        }
        let t_ = t as usize;
        if t == 0 || t_ >= steps || !t_.is_multiple_of(every.max(1)) || shard.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let mut rows = Vec::with_capacity(shard.len());
        for b in shard.batches() {
            rows.extend(joined_rows(b, &spec.fields)?);
        }
        let mut out = Vec::new();
        for chunk in rows.chunks(spec.batch_size.max(1) * 16) {
            let part = Rows {
                ids: chunk.iter().map(|((id, _), _)| id.clone()).collect(),
                hashes: chunk.iter().map(|((_, h), _)| *h).collect(),
                texts: chunk.iter().map(|(_, text)| text.clone()).collect(),
            };
            out.push((0, embed(enc.as_ref(), &spec, &state, (&node, t), part)?));
        }
        counter.forwards(
            "refresh",
            rows.len() as u64,
            started.elapsed().as_secs_f64(),
        );
        Ok(out)
    };
    Ok(Stepwise::new("Refresh")
        .input("corpus", corpus)
        .input("feedback", cx.feedback()?)
        .build(cx, logic)
        .remove(0))
}
