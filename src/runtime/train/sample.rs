//! `sample`: hard negatives per query by exact search of the (corrected) cache.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Float32Builder, ListBuilder, RecordBatch};
use arrow::array::{StringArray, StringBuilder, UInt64Array};
use candle_core::{Device, Tensor};
use freshen_operators::hashing::{hash64_seeded, SplitMix64};
use freshen_operators::search::{NegativeSampler, Strategy};
use timely::dataflow::Scope;

use super::rows_of;
use crate::error::{Error, Result};
use crate::runtime::dataflow::{BatchStream, Time};
use crate::runtime::shared::Shared;
use crate::runtime::stepwise::{stepwise, Route};
use crate::spec::{SampleSpec, SampleStrategy};
use crate::store::batch::{self, Batch};
use crate::store::pairs::string_lists;
use crate::store::tables::{self, col};
use crate::store::vectors::Vectors;

/// The distinct targets of `sample` rows, in the order every training operator uses: per
/// row, its positive then its negatives, each id at its first appearance.
pub fn touched_ids(batches: &[Batch]) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut ids = Vec::new();
    for b in rows_of(batches) {
        let positives = batch::strings(b, col::CORPUS_ID)?;
        for (r, negs) in string_lists(b, col::NEGATIVES)?.into_iter().enumerate() {
            for id in std::iter::once(positives.value(r).to_string()).chain(negs) {
                if seen.insert(id.clone()) {
                    ids.push(id);
                }
            }
        }
    }
    Ok(ids)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Picks negatives for each step's queries. Inputs: query embeddings, the cache to search
/// (the latest version seen is kept), the training pairs.
#[allow(clippy::too_many_arguments)]
pub fn sample<'s>(
    scope: Scope<'s, Time>,
    queries: BatchStream<'s>,
    cache: BatchStream<'s>,
    pairs: BatchStream<'s>,
    spec: SampleSpec,
    seed: u64,
    node: Rc<str>,
    shared: Arc<Shared>,
) -> BatchStream<'s> {
    let sampler = NegativeSampler {
        k: spec.k,
        strategy: match spec.strategy {
            SampleStrategy::TopK => Strategy::TopK,
            SampleStrategy::Gumbel => Strategy::Gumbel,
        },
        skip_top: spec.skip_top,
        pool: spec
            .pool
            .unwrap_or(4 * (spec.k + spec.skip_top))
            .max(spec.k + spec.skip_top),
        margin: spec.margin,
        beta: spec.beta,
    };
    let worker = scope.index();
    let counter = shared.clone();
    let counted = node.clone();
    let tag = node.clone();
    let mut searched = Vectors::default();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut tensor: Option<Tensor> = None;
    let logic = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let mut fresh = Vectors::default();
        for b in rows_of(&inputs[1]) {
            fresh.push(b)?;
        }
        if !fresh.is_empty() {
            index = fresh.index();
            tensor = Some(fresh.tensor(&Device::Cpu)?);
            searched = fresh;
        }
        let mut q = Vectors::default();
        for b in rows_of(&inputs[0]) {
            q.push(b)?;
        }
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let cache = tensor
            .as_ref()
            .ok_or_else(|| Error::Other("no cache to search at this step".into()))?;
        let mut positive_of: HashMap<String, (String, Vec<String>)> = HashMap::new();
        for b in rows_of(&inputs[2]) {
            let ids = batch::strings(b, col::ID)?;
            let pos = batch::strings(b, col::CORPUS_ID)?;
            for (r, all) in string_lists(b, col::POSITIVES)?.into_iter().enumerate() {
                positive_of.insert(ids.value(r).to_string(), (pos.value(r).to_string(), all));
            }
        }
        let look = |id: &str| -> Result<usize> {
            index.get(id).copied().ok_or_else(|| {
                Error::Other(format!("positive `{id}` is not in the searched cache"))
            })
        };
        let mut rows = Vec::with_capacity(q.len());
        for (i, id) in q.ids.iter().enumerate() {
            let (pos, all) = positive_of
                .get(id)
                .ok_or_else(|| Error::Other(format!("query `{id}` has no training pair")))?;
            let p = look(pos)?;
            let excluded: Vec<u32> = all
                .iter()
                .filter_map(|a| index.get(a).map(|&r| r as u32))
                .collect();
            rows.push((pos.clone(), p, excluded, dot(q.row(i), searched.row(p))));
        }
        let chosen = if spec.k == 0 {
            vec![Vec::new(); q.len()]
        } else {
            let queries = q.tensor(&Device::Cpu)?;
            let exclude: Vec<Vec<u32>> = rows.iter().map(|r| r.2.clone()).collect();
            let scores: Vec<f32> = rows.iter().map(|r| r.3).collect();
            let mut rng = SplitMix64::new(hash64_seeded(
                seed,
                format!("sample/{tag}/{t}/{worker}").as_bytes(),
            ));
            sampler.sample(&queries, cache, &exclude, &scores, &mut rng, spec.chunk)?
        };
        let mut negatives = ListBuilder::new(StringBuilder::new());
        let mut scores = ListBuilder::new(Float32Builder::new());
        for (i, picked) in chosen.iter().enumerate() {
            let own: HashSet<u32> = rows[i].2.iter().copied().collect();
            let mut taken: HashSet<u32> = HashSet::new();
            for &(r, s) in picked {
                taken.insert(r);
                negatives.values().append_value(&searched.ids[r as usize]);
                scores.values().append_value(s);
            }
            if spec.in_batch {
                for (j, other) in rows.iter().enumerate() {
                    let r = other.1 as u32;
                    if j != i && !own.contains(&r) && taken.insert(r) {
                        negatives.values().append_value(&other.0);
                        scores
                            .values()
                            .append_value(dot(q.row(i), searched.row(other.1)));
                    }
                }
            }
            negatives.append(true);
            scores.append(true);
        }
        counter.count(&counted, |s| s.rows_out += q.len());
        let out = RecordBatch::try_new(
            tables::negatives_schema(),
            vec![
                Arc::new(UInt64Array::from(vec![t; q.len()])) as ArrayRef,
                Arc::new(StringArray::from(q.ids.clone())),
                Arc::new(StringArray::from_iter_values(
                    rows.iter().map(|r| r.0.as_str()),
                )),
                Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.3))),
                Arc::new(negatives.finish()),
                Arc::new(scores.finish()),
            ],
        )?;
        Ok(vec![(0, Batch(out))])
    };
    stepwise(
        scope,
        "Sample",
        vec![
            (queries, Route::Local),
            (cache, Route::Local),
            (pairs, Route::Local),
        ],
        1,
        logic,
        None,
        node,
        shared,
    )
    .remove(0)
}
