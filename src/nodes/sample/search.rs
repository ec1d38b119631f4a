//! `sample`'s distributed search over a sharded cache.
//!
//! Each worker holds about N/W rows of the searched cache (its shard, by
//! [`crate::dataflow::shard::owner`]). A step runs in three stages:
//!
//! 1. **Ask** (each worker): its queries of the step with their positives go to every
//!    worker (b × d floats: small next to a shard).
//! 2. **Search** (each worker, its shard): every query of the step is scored against the
//!    shard, which answers the query's worker with its top `pool` non-positives, the
//!    positive's score if it holds the positive, and the scores of the step's positives
//!    it holds (the in-batch negatives).
//! 3. **Choose** (each query's worker): the shards' candidates are merged by score, ties
//!    by id ([`merge_top`]): exactly the top `pool` of the whole cache, so the result
//!    does not depend on W. The sampler then skips, filters and picks as before, with a
//!    random stream per query (seed, node, step, query id), not per worker.
//!
//! Bytes exchanged per step: the queries once to each worker, and per query and shard
//! `pool` (id, score) pairs plus the in-batch scores.

use freshen_operators::host::HostRead;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float32Array, Float32Builder, ListBuilder, RecordBatch, StringArray,
    StringBuilder, UInt32Array, UInt64Array,
};
use candle_core::{Device, Tensor};
use freshen_operators::hashing::hash64_seeded;
use freshen_operators::random::SplitMix64;
use freshen_operators::search::{merge_top, top_k};
use timely::dataflow::operators::vec::Broadcast;

use super::fresher::{pool_for_choice, Extra, Fresher};
use super::gather::gather;
use super::Sample;
use crate::dataflow::shard::{addressed, to_addressed, to_owners};
use crate::dataflow::{rows_of, BatchStream, BuildCx, EmbeddingRows, StepInputs, Stepwise, Time};
use crate::error::{Error, Result};
use crate::store::batch::{self, Batch};
use crate::store::pairs::string_lists;
use crate::store::tables::{self, col};

/// Columns of the messages between the stages.
const ORIGIN: &str = "origin";
pub(super) const QUERY: &str = "query";
pub(super) const CANDIDATES: &str = "candidates";
pub(super) const CANDIDATE_SCORES: &str = "candidate_scores";
pub(super) const BATCH_IDS: &str = "batch_ids";
pub(super) const BATCH_SCORES: &str = "batch_scores";
pub(super) const FRESHER_SCORES: &str = "fresher_scores";
pub(super) const STALE_SCORES: &str = "stale_scores";
pub(super) const POSITIVE_FRESHER: &str = "positive_fresher";
pub(super) const POSITIVE_STALE: &str = "positive_stale";

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Each query's positive and all its positives, from the step's training pairs (none for
/// questions, which have no passage label).
fn positives_of(pairs: &[Batch]) -> Result<HashMap<String, (String, Vec<String>)>> {
    let mut out = HashMap::new();
    for b in rows_of(pairs) {
        let ids = batch::strings(b, col::ID)?;
        if b.column_by_name(col::CORPUS_ID).is_none() {
            for r in 0..b.num_rows() {
                out.insert(ids.value(r).to_string(), (String::new(), Vec::new()));
            }
            continue;
        }
        let pos = batch::strings(b, col::CORPUS_ID)?;
        for (r, all) in string_lists(b, col::POSITIVES)?.into_iter().enumerate() {
            out.insert(ids.value(r).to_string(), (pos.value(r).to_string(), all));
        }
    }
    Ok(out)
}

/// Stage 1: this worker's queries of the step (ids, positive, positives, vectors, this
/// worker), for every worker.
fn ask<'s>(
    cx: &BuildCx<'_, 's>,
    queries: BatchStream<'s>,
    pairs: BatchStream<'s>,
) -> BatchStream<'s> {
    let me = cx.scope.index() as u32;
    let logic = move |_t: Time, inputs: StepInputs| {
        let mut q = EmbeddingRows::default();
        for b in rows_of(&inputs["queries"]) {
            q.push(b)?;
        }
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let info = positives_of(&inputs["pairs"])?;
        let (mut pos, mut all) = (Vec::with_capacity(q.len()), Vec::with_capacity(q.len()));
        for id in &q.ids {
            let (p, a) = info
                .get(id)
                .ok_or_else(|| Error::invariant(format!("query `{id}` has no training pair")))?;
            pos.push(p.clone());
            all.push(a.clone());
        }
        let out = RecordBatch::try_from_iter(vec![
            (
                col::ID,
                Arc::new(StringArray::from(q.ids.clone())) as ArrayRef,
            ),
            (col::CORPUS_ID, Arc::new(StringArray::from(pos))),
            (col::POSITIVES, batch::string_list_column(&all)),
            (
                col::EMBEDDING,
                batch::vector_column(q.values.clone(), q.dim)?,
            ),
            (ORIGIN, Arc::new(UInt32Array::from(vec![me; q.len()]))),
        ])?;
        Ok(vec![(0, Batch(out))])
    };
    Stepwise::new("SampleAsk")
        .input("queries", queries)
        .input("pairs", pairs)
        .build(cx, logic)
        .remove(0)
        .broadcast()
}

/// The searched shard: the latest version a step brought, in id order. The vectors live
/// in the tensor only (one copy of the shard, not two).
#[derive(Default)]
pub(super) struct Searched {
    /// Ids and hashes of the rows (their `values` moved into `tensor`).
    rows: EmbeddingRows,
    index: HashMap<String, usize>,
    tensor: Option<Tensor>,
}

impl Searched {
    /// Keeps the version `batches` bring, if they hold any rows; returns whether they did.
    pub(super) fn update(&mut self, batches: &[Batch], device: &Device) -> Result<bool> {
        if rows_of(batches).all(|b| b.num_rows() == 0) {
            return Ok(false);
        }
        // The old version goes first: a shard's two versions are never held at once.
        self.tensor = None;
        let mut fresh = EmbeddingRows::table(batches)?;
        self.index = fresh.index();
        let shape = (fresh.len(), fresh.dim);
        self.tensor = Some(Tensor::from_vec(
            std::mem::take(&mut fresh.values),
            shape,
            device,
        )?);
        self.rows = fresh;
        Ok(true)
    }

    /// The vector of row `r`.
    fn row(&self, r: usize) -> Result<Vec<f32>> {
        let t = self
            .tensor
            .as_ref()
            .ok_or_else(|| Error::invariant("no searched rows"))?;
        Ok(t.get(r)?
            .to_dtype(candle_core::DType::F32)?
            .host_vec1::<f32>()?)
    }

    /// Bytes held: the ids and hashes, and the vectors' tensor.
    pub(super) fn bytes(&self) -> u64 {
        let tensor = self
            .tensor
            .as_ref()
            .map_or(0, |t| t.elem_count() * t.dtype().size_in_bytes());
        self.rows.bytes() + tensor as u64
    }

    /// Rows held.
    pub(super) fn len(&self) -> usize {
        self.rows.ids.len()
    }

    /// Per query, the shard's top `pool` `(id, score)` that are not among its positives
    /// `all[i]`, by score then id (the shard is in id order, and `top_k` breaks ties by
    /// row): merged by [`merge_top`] across shards they are the whole cache's top `pool`.
    pub(super) fn pools(
        &self,
        queries: &Tensor,
        all: &[Vec<String>],
        pool: usize,
        chunk: usize,
    ) -> Result<Vec<Vec<(String, f32)>>> {
        let Some(tensor) = self.tensor.as_ref() else {
            return Ok(vec![Vec::new(); all.len()]);
        };
        let exclude: Vec<Vec<u32>> = all
            .iter()
            .map(|a| {
                a.iter()
                    .filter_map(|p| self.index.get(p).map(|&r| r as u32))
                    .collect()
            })
            .collect();
        let found = top_k(queries, tensor, pool, &exclude, chunk)?;
        Ok(found
            .into_iter()
            .map(|hits| {
                hits.into_iter()
                    .map(|(r, sc)| (self.rows.ids[r as usize].clone(), sc))
                    .collect()
            })
            .collect())
    }
}

/// The step's queries as stage 2 reads them.
struct StepQueries {
    q: EmbeddingRows,
    positive: Vec<String>,
    all: Vec<Vec<String>>,
    origin: Vec<u32>,
}

fn step_queries(batches: &[Batch]) -> Result<StepQueries> {
    let mut s = StepQueries {
        q: EmbeddingRows::default(),
        positive: Vec::new(),
        all: Vec::new(),
        origin: Vec::new(),
    };
    for b in rows_of(batches) {
        s.q.push(b)?;
        let pos = batch::strings(b, col::CORPUS_ID)?;
        s.positive
            .extend((0..b.num_rows()).map(|r| pos.value(r).to_string()));
        s.all.extend(string_lists(b, col::POSITIVES)?);
        let origin = b
            .column_by_name(ORIGIN)
            .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
            .ok_or_else(|| Error::Column {
                column: ORIGIN.to_string(),
                expected: "a uint32",
            })?;
        s.origin.extend(origin.values().iter().copied());
    }
    Ok(s)
}

/// An input stream with the name its operator reads it by.
type Named<'s> = (&'static str, BatchStream<'s>);

/// Stage 2: every query of the step against this worker's shard; answers per query's
/// worker.
///
/// With a training subset of `m` (port 1): the shard's offer to the step's draw
/// ([`super::subset`]).
///
/// With `fresher`: each candidate's and positive's fresher and stale scores too, from
/// this worker's rows of B (the stream given with it, then the feedback when h re-scores:
/// the current h is the one `update` left).
fn search<'s>(
    cx: &BuildCx<'_, 's>,
    spec: &Sample,
    (asked, cache): (BatchStream<'s>, BatchStream<'s>),
    device: Device,
    (subset, steps): (Option<(u64, usize)>, usize),
    fresher: Option<(Fresher, Vec<Named<'s>>)>,
) -> Vec<BatchStream<'s>> {
    let (pool, chunk, k, in_batch) = (spec.sampler().pool, spec.chunk, spec.k, spec.in_batch);
    let node = cx.node.clone();
    let (mut fresher, more) = match fresher {
        Some((f, streams)) => (Some(f), streams),
        None => (None, Vec::new()),
    };
    let mut searched = Searched::default();
    let (run, table, me) = (
        cx.run.clone(),
        format!("{}: searched", cx.node),
        cx.scope.index(),
    );
    let logic = move |t: Time, inputs: StepInputs| {
        if searched.update(&inputs["cache"], &device)? {
            run.hold(me, &table, searched.len() as u64, searched.bytes());
        }
        if let Some(f) = fresher.as_mut() {
            f.stale.replace(&inputs["stale"], col::ID)?;
        }
        let s = step_queries(&inputs["asked"])?;
        if searched.tensor.is_none() || s.q.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        if let Some((seed, m)) = subset {
            let seed = super::subset::step_seed(seed, &node, t);
            out.push((1, super::subset::offer(&searched.rows.ids, seed, m)?));
        }
        let pools = match k {
            0 => vec![Vec::new(); s.q.len()],
            _ => searched.pools(&s.q.tensor(&device)?, &s.all, pool, chunk)?,
        };
        let index = &searched.index;
        // The vectors of the step's positives this shard holds (the positive's score and
        // the in-batch negatives' are read from them).
        let mut vectors: HashMap<usize, Vec<f32>> = HashMap::new();
        for p in &s.positive {
            if let Some(&r) = index.get(p) {
                if let std::collections::hash_map::Entry::Vacant(e) = vectors.entry(r) {
                    e.insert(searched.row(r)?);
                }
            }
        }
        // The step's positives this shard holds, in id order.
        let held: Vec<(&str, usize)> = match in_batch {
            true => s
                .positive
                .iter()
                .filter_map(|p| index.get(p).map(|&r| (p.as_str(), r)))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
            false => Vec::new(),
        };
        let mut by_origin: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for (i, &o) in s.origin.iter().enumerate() {
            by_origin.entry(o).or_default().push(i);
        }
        let view = ShardView {
            s: &s,
            pools: &pools,
            index: &searched.index,
            vectors: &vectors,
            held: &held,
        };
        for (origin, members) in by_origin {
            let b = view.answer(&members, fresher.as_ref())?;
            out.push((0, Batch(addressed(&b, origin as usize)?)));
        }
        if t as usize + 1 >= steps {
            // Nothing is searched after the last step: the shard goes before the final
            // evaluation needs the memory.
            searched = Searched::default();
        }
        Ok(out)
    };
    let op = Stepwise::new("SampleSearch")
        .outputs(2)
        .input("asked", asked)
        .input("cache", cache);
    more.into_iter()
        .fold(op, |op, (name, stream)| op.input(name, stream))
        .build(cx, logic)
}

/// What one worker's shard holds for a step's queries: their pools, the positives it
/// holds (row and vector), and, with `in_batch`, the positives it holds in id order.
struct ShardView<'a> {
    s: &'a StepQueries,
    pools: &'a [Vec<(String, f32)>],
    index: &'a HashMap<String, usize>,
    vectors: &'a HashMap<usize, Vec<f32>>,
    held: &'a [(&'a str, usize)],
}

impl ShardView<'_> {
    /// The answer to the queries `members` of one worker: each one's pool and scores, its
    /// positive's score, the in-batch positives' scores, and with `fresher` the pool's
    /// fresher and stale scores.
    fn answer(&self, members: &[usize], fresher: Option<&Fresher>) -> Result<RecordBatch> {
        let ShardView {
            s,
            pools,
            index,
            vectors,
            held,
        } = *self;
        let mut cands = Vec::new();
        let mut scores = Vec::new();
        let mut positive = Vec::new();
        let mut batch_ids = Vec::new();
        let mut batch_scores = Vec::new();
        let (mut fresher_scores, mut stale_scores) = (Vec::new(), Vec::new());
        let (mut pos_fresher, mut pos_stale) = (Vec::new(), Vec::new());
        if let Some(f) = fresher {
            // Per query its pool's rows, then the positive's if this shard holds it.
            let lists: Vec<Vec<String>> = members
                .iter()
                .map(|&i| {
                    let mut ids: Vec<String> = pools[i].iter().map(|(id, _)| id.clone()).collect();
                    if index.contains_key(&s.positive[i]) {
                        ids.push(s.positive[i].clone());
                    }
                    ids
                })
                .collect();
            let qs: Vec<&[f32]> = members.iter().map(|&i| s.q.row(i)).collect();
            let unwrap = |v: Option<f32>| v.unwrap_or(f32::NAN);
            for (&i, mut e) in members.iter().zip(f.scores(&qs, &lists)?) {
                let p = match index.contains_key(&s.positive[i]) {
                    true => e.pop().unwrap_or_default(),
                    false => Extra::default(),
                };
                pos_fresher.push(p.fresher);
                pos_stale.push(p.stale);
                fresher_scores.push(e.iter().map(|x| unwrap(x.fresher)).collect::<Vec<_>>());
                stale_scores.push(e.iter().map(|x| unwrap(x.stale)).collect::<Vec<_>>());
            }
        }
        for &i in members {
            let qi = s.q.row(i);
            cands.push(
                pools[i]
                    .iter()
                    .map(|(id, _)| id.clone())
                    .collect::<Vec<_>>(),
            );
            scores.push(pools[i].iter().map(|&(_, sc)| sc).collect::<Vec<_>>());
            positive.push(index.get(&s.positive[i]).map(|r| dot(qi, &vectors[r])));
            batch_ids.push(held.iter().map(|(p, _)| p.to_string()).collect::<Vec<_>>());
            batch_scores.push(
                held.iter()
                    .map(|&(_, r)| dot(qi, &vectors[&r]))
                    .collect::<Vec<_>>(),
            );
        }
        let ids: Vec<String> = members.iter().map(|&i| s.q.ids[i].clone()).collect();
        let mut columns = vec![
            (QUERY, Arc::new(StringArray::from(ids)) as ArrayRef),
            (CANDIDATES, batch::string_list_column(&cands)),
            (CANDIDATE_SCORES, batch::float_list_column(&scores)),
            (col::POSITIVE_SCORE, Arc::new(Float32Array::from(positive))),
            (BATCH_IDS, batch::string_list_column(&batch_ids)),
            (BATCH_SCORES, batch::float_list_column(&batch_scores)),
        ];
        if fresher.is_some() {
            columns.extend([
                (FRESHER_SCORES, batch::float_list_column(&fresher_scores)),
                (STALE_SCORES, batch::float_list_column(&stale_scores)),
                (
                    POSITIVE_FRESHER,
                    Arc::new(Float32Array::from(pos_fresher)) as ArrayRef,
                ),
                (POSITIVE_STALE, Arc::new(Float32Array::from(pos_stale))),
            ]);
        }
        Ok(RecordBatch::try_from_iter(columns)?)
    }
}

/// Stage 3: each query's negatives from the merged candidates; the `sample` node's rows.
fn choose<'s>(
    cx: &BuildCx<'_, 's>,
    spec: Sample,
    seed: u64,
    (answers, queries, pairs): (BatchStream<'s>, BatchStream<'s>, BatchStream<'s>),
) -> BatchStream<'s> {
    let sampler = spec.sampler();
    let (counter, node) = (cx.run.clone(), cx.node.clone());
    let logic = move |t: Time, inputs: StepInputs| {
        let mut q = EmbeddingRows::default();
        for b in rows_of(&inputs["queries"]) {
            q.push(b)?;
        }
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let info = positives_of(&inputs["pairs"])?;
        let mut got = gather(&inputs["answers"])?;
        let mut positives = Vec::with_capacity(q.len());
        let mut positive_scores = Vec::with_capacity(q.len());
        let mut negatives = ListBuilder::new(StringBuilder::new());
        let mut scores = ListBuilder::new(Float32Builder::new());
        for id in &q.ids {
            let (pos, all) = info
                .get(id)
                .ok_or_else(|| Error::invariant(format!("query `{id}` has no training pair")))?;
            let g = got.remove(id).unwrap_or_default();
            let mut rng = SplitMix64::new(hash64_seeded(
                seed,
                format!("sample/{node}/{t}/{id}").as_bytes(),
            ));
            if spec.latent {
                // The retrieved set: the best as `corpus_id`, the rest as negatives.
                let pool = merge_top(g.candidates, sampler.pool);
                let mut chosen = sampler.choose(pool, None, &mut rng).into_iter();
                let (best, score) = chosen
                    .next()
                    .ok_or_else(|| Error::invariant(format!("query `{id}` retrieved nothing")))?;
                for (n, s) in chosen {
                    negatives.values().append_value(&n);
                    scores.values().append_value(s);
                }
                negatives.append(true);
                scores.append(true);
                positives.push(best);
                positive_scores.push(score);
                continue;
            }
            let score = g.positive.ok_or_else(|| {
                Error::invariant(format!("positive `{pos}` is not in the searched cache"))
            })?;
            let (chosen, score) = match (spec.k, g.extra.is_empty()) {
                (0, _) => (Vec::new(), score),
                (_, true) => {
                    let pool = merge_top(g.candidates, sampler.pool);
                    (sampler.choose(pool, Some(score), &mut rng), score)
                }
                (_, false) => {
                    let settings = (sampler.pool, sampler.margin, spec.margin_on);
                    let positive = (Some(score), g.positive_extra);
                    let (pool, guard) = pool_for_choice(g.candidates, &g.extra, positive, settings);
                    let picked = sampler.choose(pool, guard, &mut rng);
                    (picked, g.positive_extra.fresher.unwrap_or(score))
                }
            };
            let mut taken: HashSet<String> = HashSet::new();
            for (n, s) in chosen {
                negatives.values().append_value(&n);
                scores.values().append_value(s);
                taken.insert(n);
            }
            if spec.in_batch {
                let own: HashSet<&String> = all.iter().collect();
                let mut others = g.batch;
                others.sort_by(|a, b| a.0.cmp(&b.0));
                for (n, s) in others {
                    if !own.contains(&n) && taken.insert(n.clone()) {
                        negatives.values().append_value(&n);
                        scores.values().append_value(s);
                    }
                }
            }
            negatives.append(true);
            scores.append(true);
            positives.push(pos.clone());
            positive_scores.push(score);
        }
        counter.count(&node, |s| s.rows_out += q.len());
        let out = RecordBatch::try_new(
            tables::negatives_schema(),
            vec![
                Arc::new(UInt64Array::from(vec![t; q.len()])) as ArrayRef,
                Arc::new(StringArray::from(q.ids.clone())),
                Arc::new(StringArray::from(positives)),
                Arc::new(Float32Array::from(positive_scores)),
                Arc::new(negatives.finish()),
                Arc::new(scores.finish()),
            ],
        )?;
        Ok(vec![(0, Batch(out))])
    };
    Stepwise::new("SampleChoose")
        .input("answers", answers)
        .input("queries", queries)
        .input("pairs", pairs)
        .build(cx, logic)
        .remove(0)
}

/// Picks negatives for each step's queries. Inputs: query embeddings, the cache to search
/// (sharded here; the latest version seen is kept), the training pairs, and for fresher
/// selection the stale cache B. Returns the negatives and, with `subset`, the corrector's
/// training subset (each worker's own targets of it, per step).
pub(super) fn sample<'s>(
    cx: &mut BuildCx<'_, 's>,
    spec: Sample,
    seed: u64,
    device: Device,
    plan: (usize, Option<FresherPlan>, usize),
) -> Result<(BatchStream<'s>, Option<BatchStream<'s>>)> {
    let (subset, fresher_plan, steps) = plan;
    let (queries, cache, pairs) = (
        cx.input("queries")?,
        cx.input("search")?,
        cx.input("pairs")?,
    );
    let fresher = match fresher_plan {
        Some(p) => {
            let (stale, _) = cx.sharded_input("stale")?;
            let mut streams = vec![("stale", stale)];
            let h = match &p.corrector {
                Some(name) => {
                    streams.push(("feedback", cx.feedback()?));
                    Some(cx.models()?.corrector(name)?)
                }
                None => None,
            };
            let f = Fresher {
                h,
                stale_scores: p.stale_scores,
                stale: Default::default(),
                device: device.clone(),
            };
            Some((f, streams))
        }
        None => None,
    };
    let asked = ask(cx, queries.clone(), pairs.clone());
    let cache = to_owners(cache, col::ID, cx.scope.peers());
    let draw = (subset > 0).then_some((seed, subset));
    let mut ports = search(cx, &spec, (asked, cache), device, (draw, steps), fresher).into_iter();
    let (answers, offers) = match (ports.next(), ports.next()) {
        (Some(a), Some(o)) => (to_addressed(a), o),
        _ => return Err(Error::invariant("sample's search without its ports")),
    };
    let picked = draw.map(|_| super::subset::pick(cx, offers, subset));
    Ok((choose(cx, spec, seed, (answers, queries, pairs)), picked))
}

/// Fresher selection's plan: the corrector that re-scores (with `rescore`), and whether
/// the guard reads stale scores.
#[derive(Debug, Clone)]
pub(super) struct FresherPlan {
    pub corrector: Option<String>,
    pub stale_scores: bool,
}
