//! `encode` in training: the query tower each step, the target tower on the targets a step
//! touches, and the full re-embedding of a refreshing cache.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use freshen_operators::train::TrainableEncoder;
use timely::dataflow::Scope;

use super::sample::touched_ids;
use super::{rows_of, TapeEntry, TrainState};
use crate::error::Result;
use crate::runtime::dataflow::{BatchStream, Time};
use crate::runtime::ops::joined_rows;
use crate::runtime::shared::Shared;
use crate::runtime::stepwise::{stepwise, Route};
use crate::store::batch::{self, Batch};

/// What an encode node of a training graph needs.
pub struct EncodeNode {
    /// The model of `models:`.
    pub model: String,
    /// Columns joined into the text.
    pub fields: Vec<String>,
    /// Texts per forward pass.
    pub batch_size: usize,
    /// Keep the forward for `update` (the node feeds a loss and its model trains).
    pub record: bool,
    /// The node id.
    pub node: Rc<str>,
}

/// Embeds `ids`/`texts` in chunks, recording the forwards on the tape when asked.
fn embed(
    enc: &dyn TrainableEncoder,
    spec: &EncodeNode,
    state: &TrainState,
    t: Time,
    ids: Vec<String>,
    hashes: Vec<u64>,
    texts: &[String],
) -> Result<Batch> {
    let dim = enc.dim();
    let mut values = Vec::with_capacity(texts.len() * dim);
    for (chunk, chunk_ids) in texts
        .chunks(spec.batch_size.max(1))
        .zip(ids.chunks(spec.batch_size.max(1)))
    {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        if spec.record {
            let recorded = enc.forward_train(&refs)?;
            values.extend(
                recorded
                    .output
                    .detach()
                    .flatten_all()
                    .and_then(|x| x.to_vec1::<f32>())
                    .map_err(freshen_operators::Error::from)?,
            );
            state.record(
                &spec.node,
                t,
                TapeEntry {
                    model: spec.model.clone(),
                    ids: chunk_ids.to_vec(),
                    recorded,
                },
            );
        } else {
            values.extend(
                enc.encode(&refs)?
                    .flatten_all()
                    .and_then(|x| x.to_vec1::<f32>())
                    .map_err(freshen_operators::Error::from)?,
            );
        }
    }
    Ok(Batch(batch::embeddings_batch(ids, hashes, values, dim)?))
}

/// The query tower: embeds each step's rows (after the previous step's update).
/// Inputs: the rows, the feedback.
pub fn encode_train<'s>(
    scope: Scope<'s, Time>,
    rows: BatchStream<'s>,
    feedback: BatchStream<'s>,
    spec: EncodeNode,
    state: Rc<TrainState>,
    shared: Arc<Shared>,
) -> BatchStream<'s> {
    let node = spec.node.clone();
    let enc = state.encoder(&spec.model);
    let counter = shared.clone();
    let logic = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let enc = enc
            .as_ref()
            .map_err(|e| crate::Error::Other(e.to_string()))?;
        let mut out = Vec::new();
        for b in rows_of(&inputs[0]) {
            let rows = joined_rows(b, &spec.fields)?;
            let n = rows.len();
            let (keys, texts): (Vec<_>, Vec<String>) = rows.into_iter().unzip();
            let (ids, hashes) = keys.into_iter().unzip();
            out.push((
                0,
                embed(enc.as_ref(), &spec, &state, t, ids, hashes, &texts)?,
            ));
            counter.count(&spec.node, |s| {
                s.encoded += n;
                s.rows_out += n;
            });
        }
        Ok(out)
    };
    stepwise(
        scope,
        "EncodeTrain",
        vec![(rows, Route::Local), (feedback, Route::Local)],
        1,
        logic,
        None,
        node,
        shared,
    )
    .remove(0)
}

/// The target tower on the targets a step touches: the positive and negatives of every
/// row of the `sample` node, each distinct target once. Inputs: the sample rows, the corpus
/// (every worker needs all of it: pass it broadcast), the feedback.
pub fn encode_touched<'s>(
    scope: Scope<'s, Time>,
    negatives: BatchStream<'s>,
    corpus: BatchStream<'s>,
    feedback: BatchStream<'s>,
    spec: EncodeNode,
    state: Rc<TrainState>,
    shared: Arc<Shared>,
) -> BatchStream<'s> {
    let node = spec.node.clone();
    let enc = state.encoder(&spec.model);
    let counter = shared.clone();
    let mut texts: HashMap<String, (u64, String)> = HashMap::new();
    let logic = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let enc = enc
            .as_ref()
            .map_err(|e| crate::Error::Other(e.to_string()))?;
        for b in rows_of(&inputs[1]) {
            for ((id, hash), text) in joined_rows(b, &spec.fields)? {
                texts.insert(id, (hash, text));
            }
        }
        let ids = touched_ids(&inputs[0])?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut hashes = Vec::with_capacity(ids.len());
        let mut batch_texts = Vec::with_capacity(ids.len());
        for id in &ids {
            let (h, text) = texts.get(id).ok_or_else(|| {
                crate::Error::Other(format!("target `{id}` is not in the corpus input"))
            })?;
            hashes.push(*h);
            batch_texts.push(text.clone());
        }
        let n = ids.len();
        let started = Instant::now();
        let out = embed(enc.as_ref(), &spec, &state, t, ids, hashes, &batch_texts)?;
        counter.forwards("touched", n as u64, started.elapsed().as_secs_f64());
        state.count_touched(t, n as u64);
        counter.count(&spec.node, |s| {
            s.encoded += n;
            s.rows_out += n;
        });
        Ok(vec![(0, out)])
    };
    stepwise(
        scope,
        "EncodeTouched",
        vec![
            (negatives, Route::Local),
            (corpus, Route::Local),
            (feedback, Route::Local),
        ],
        1,
        logic,
        None,
        node,
        shared,
    )
    .remove(0)
}

/// A refreshing cache's re-embedding: every `every` steps, the whole corpus (this
/// worker's share) with the current target tower, up to the last of `steps`. Inputs: the
/// corpus rows, the feedback.
#[allow(clippy::too_many_arguments)]
pub fn refresh<'s>(
    scope: Scope<'s, Time>,
    corpus: BatchStream<'s>,
    feedback: BatchStream<'s>,
    spec: EncodeNode,
    every: usize,
    steps: usize,
    state: Rc<TrainState>,
    shared: Arc<Shared>,
) -> BatchStream<'s> {
    let node = spec.node.clone();
    let enc = state.encoder(&spec.model);
    let counter = shared.clone();
    let mut rows: Vec<((String, u64), String)> = Vec::new();
    let logic = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let enc = enc
            .as_ref()
            .map_err(|e| crate::Error::Other(e.to_string()))?;
        for b in rows_of(&inputs[0]) {
            rows.extend(joined_rows(b, &spec.fields)?);
        }
        let t_ = t as usize;
        if t == 0 || t_ >= steps || !t_.is_multiple_of(every.max(1)) || rows.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        let mut out = Vec::new();
        for chunk in rows.chunks(spec.batch_size.max(1) * 16) {
            let ids = chunk.iter().map(|((id, _), _)| id.clone()).collect();
            let hashes = chunk.iter().map(|((_, h), _)| *h).collect();
            let texts: Vec<String> = chunk.iter().map(|(_, text)| text.clone()).collect();
            out.push((
                0,
                embed(enc.as_ref(), &spec, &state, t, ids, hashes, &texts)?,
            ));
        }
        counter.forwards(
            "refresh",
            rows.len() as u64,
            started.elapsed().as_secs_f64(),
        );
        Ok(out)
    };
    stepwise(
        scope,
        "Refresh",
        vec![(corpus, Route::Local), (feedback, Route::Local)],
        1,
        logic,
        None,
        node,
        shared,
    )
    .remove(0)
}
