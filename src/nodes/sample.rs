//! `sample`: hard negatives per query by exact search of the (corrected) cache.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::{ArrayRef, Float32Array, Float32Builder, ListBuilder, RecordBatch};
use arrow::array::{StringArray, StringBuilder, UInt64Array};
use arrow::datatypes::SchemaRef;
use candle_core::{Device, Tensor};
use freshen_operators::hashing::hash64_seeded;
use freshen_operators::random::SplitMix64;
use freshen_operators::search::{NegativeSampler, Strategy};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cache::Cache;
use super::correct::Correct;
use super::encode::Encode;
use super::source::{Source, TableName};
use super::Settings;
use crate::dataflow::{rows_of, BatchStream, BuildCx, EmbeddingRows, Operator, Stepwise, Time};
use crate::error::{Error, Result};
use crate::graph::needs::{self, Need};
use crate::graph::{CheckCx, NodeKind, PlanCx, Planned, MAIN};
use crate::store::batch::{self, Batch};
use crate::store::pairs::string_lists;
use crate::store::tables::{self, col};

/// Settings of `sample`. Inputs, in order: query embeddings, the cache to search, the
/// training pairs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Hard negatives per query (0: in-batch negatives only).
    #[serde(default = "default_k")]
    pub k: usize,
    /// `top_k` or `gumbel` (k drawn without replacement from softmax(β·score) over the
    /// top `pool`).
    #[serde(default)]
    pub strategy: Strategy,
    /// Inverse temperature of `gumbel` sampling.
    #[serde(default = "default_beta")]
    pub beta: f32,
    /// Skip the best `skip_top` non-positive candidates (likely unlabelled positives).
    #[serde(default)]
    pub skip_top: usize,
    /// Candidates considered before skipping and filtering (at least k + skip_top);
    /// default: 4 × (k + skip_top).
    #[serde(default)]
    pub pool: Option<usize>,
    /// Drop candidates scoring above `positive score − margin` (0 drops those that beat
    /// the positive: likely false negatives). Absent: no filter.
    #[serde(default)]
    pub margin: Option<f32>,
    /// Add the other queries' positives of the batch as negatives.
    #[serde(default = "default_true")]
    pub in_batch: bool,
    /// Cache rows scored per matmul (memory: batch × chunk scores).
    #[serde(default = "default_chunk")]
    pub chunk: usize,
}

fn default_k() -> usize {
    16
}

fn default_beta() -> f32 {
    20.0
}

fn default_true() -> bool {
    true
}

fn default_chunk() -> usize {
    freshen_operators::search::DEFAULT_CHUNK
}

impl Sample {
    /// The compute crate's sampler for these settings.
    pub fn sampler(&self) -> NegativeSampler {
        let need = self.k + self.skip_top;
        NegativeSampler {
            k: self.k,
            strategy: self.strategy,
            skip_top: self.skip_top,
            pool: self.pool.unwrap_or(4 * need),
            margin: self.margin,
            beta: self.beta,
        }
    }
}

impl Settings for Sample {
    const TYPE: &'static str = "sample";

    fn validate(&self) -> freshen_operators::Result<()> {
        freshen_operators::ranges::at_least("chunk", self.chunk, 1)?;
        self.sampler().validate()
    }
}

impl NodeKind for Sample {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn arity(&self) -> &'static [usize] {
        &[3]
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<Vec<Need>> {
        vec![
            needs::embeddings(),
            needs::embeddings(),
            vec![
                needs::text(col::ID),
                needs::text(col::CORPUS_ID),
                needs::id_list(col::POSITIVES),
            ],
        ]
    }

    fn outputs(&self, _cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        Ok(vec![(MAIN.to_string(), tables::negatives_schema())])
    }

    fn check(&self, cx: &CheckCx) -> Result<()> {
        let queries = cx
            .producer_as::<Encode>(0)
            .is_some_and(|e| e.model_name().is_some());
        super::want(
            cx,
            0,
            queries,
            "an `encode` node with a model from `models:`: the query tower",
        )?;
        let cache = cx.producer_as::<Cache>(1).is_some()
            || (cx.producer_as::<Correct>(1).is_some() && cx.producer_inputs(1) == 1);
        super::want(
            cx,
            1,
            cache,
            "a `cache` or a one-input `correct` node: the cache to search",
        )?;
        let pairs = cx
            .producer_as::<Source>(2)
            .is_some_and(|s| s.table == TableName::Pairs);
        super::want(cx, 2, pairs, "a `source` with `table: pairs`")
    }

    fn check_files(&self, cx: &CheckCx, rows: bool, _seen: &mut Vec<String>) -> Result<()> {
        if rows {
            return Ok(());
        }
        if let Some(n) = super::upstream_rows(cx, 1) {
            let most = n.saturating_sub(1);
            if self.k + self.skip_top > most {
                return Err(cx.error(
                    "k",
                    format!(
                        "`k` + `skip_top` is {} but the corpus has {n} targets (expected at most {most}: a query's negatives are the other targets)",
                        self.k + self.skip_top
                    ),
                ));
            }
        }
        Ok(())
    }

    fn memory(&self, cx: &CheckCx) -> Vec<crate::graph::Cost> {
        let mut out = super::cache_copies(cx, 1, 2.0, "the searched cache and its tensor");
        if let Some((b, _)) = cx
            .producer_index(2)
            .and_then(|p| super::pairs_per_step(cx.graph, p))
        {
            out.push(crate::graph::Cost {
                what: format!(
                    "node {}: {b} queries × {} scores per search block",
                    cx.this().id,
                    self.chunk
                ),
                bytes: (b * self.chunk) as f64 * crate::graph::memory::F32 * 2.0,
                at: Some(format!(
                    "{}.chunk",
                    crate::spec::LoadedSpec::node_path(cx.node)
                )),
            });
        }
        out
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let graph = cx.graph;
        let queries = graph.producers(cx.node)[0];
        let device = match graph.nodes()[queries]
            .settings::<Encode>()
            .and_then(|e| e.model_name())
            .and_then(|name| graph.models.get(name))
        {
            Some(m) => m.common().device.open()?,
            None => freshen_operators::device::cpu(),
        };
        Ok(Planned::operator(SampleOp {
            spec: self.clone(),
            seed: graph.spec.pipeline.seed,
            device,
        }))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// A sample node at run time: searches on the query tower's device.
struct SampleOp {
    spec: Sample,
    seed: u64,
    device: Device,
}

impl Operator for SampleOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let out = sample(cx, self.spec.clone(), self.seed, self.device.clone())?;
        Ok(vec![(MAIN.to_string(), out)])
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A query of the step: its positive's id and row in the searched cache, the rows of all
/// its positives (never its negatives), and its positive's score.
struct QueryRow {
    positive: String,
    row: usize,
    excluded: Vec<u32>,
    score: f32,
}

/// The searched cache: the latest version a step brought.
#[derive(Default)]
struct Searched {
    rows: EmbeddingRows,
    index: HashMap<String, usize>,
    tensor: Option<Tensor>,
}

impl Searched {
    /// Keeps the cache version in `batches`, if they hold one.
    fn update(&mut self, batches: &[Batch], device: &Device) -> Result<()> {
        let fresh = EmbeddingRows::table(batches)?;
        if !fresh.is_empty() {
            self.index = fresh.index();
            self.tensor = Some(fresh.tensor(device)?);
            self.rows = fresh;
        }
        Ok(())
    }

    /// Each query's positive, its excluded rows and its positive's score.
    fn query_rows(&self, q: &EmbeddingRows, pairs: &[Batch]) -> Result<Vec<QueryRow>> {
        let mut positive_of: HashMap<String, (String, Vec<String>)> = HashMap::new();
        for b in rows_of(pairs) {
            let ids = batch::strings(b, col::ID)?;
            let pos = batch::strings(b, col::CORPUS_ID)?;
            for (r, all) in string_lists(b, col::POSITIVES)?.into_iter().enumerate() {
                positive_of.insert(ids.value(r).to_string(), (pos.value(r).to_string(), all));
            }
        }
        let mut rows = Vec::with_capacity(q.len());
        for (i, id) in q.ids.iter().enumerate() {
            let (pos, all) = positive_of
                .get(id)
                .ok_or_else(|| Error::invariant(format!("query `{id}` has no training pair")))?;
            let row = self.index.get(pos).copied().ok_or_else(|| {
                Error::invariant(format!("positive `{pos}` is not in the searched cache"))
            })?;
            let excluded: Vec<u32> = all
                .iter()
                .filter_map(|a| self.index.get(a).map(|&r| r as u32))
                .collect();
            rows.push(QueryRow {
                positive: pos.clone(),
                row,
                excluded,
                score: dot(q.row(i), self.rows.row(row)),
            });
        }
        Ok(rows)
    }
}

/// One step's negatives: the sampled ones, then (with `in_batch`) the other queries'
/// positives that are not the query's own.
fn negatives_batch(
    t: Time,
    q: &EmbeddingRows,
    rows: &[QueryRow],
    chosen: &[Vec<(u32, f32)>],
    searched: &EmbeddingRows,
    in_batch: bool,
) -> Result<RecordBatch> {
    let mut negatives = ListBuilder::new(StringBuilder::new());
    let mut scores = ListBuilder::new(Float32Builder::new());
    for (i, picked) in chosen.iter().enumerate() {
        let own: HashSet<u32> = rows[i].excluded.iter().copied().collect();
        let mut taken: HashSet<u32> = HashSet::new();
        for &(r, s) in picked {
            taken.insert(r);
            negatives.values().append_value(&searched.ids[r as usize]);
            scores.values().append_value(s);
        }
        if in_batch {
            for (j, other) in rows.iter().enumerate() {
                let r = other.row as u32;
                if j != i && !own.contains(&r) && taken.insert(r) {
                    negatives.values().append_value(&other.positive);
                    scores
                        .values()
                        .append_value(dot(q.row(i), searched.row(other.row)));
                }
            }
        }
        negatives.append(true);
        scores.append(true);
    }
    Ok(RecordBatch::try_new(
        tables::negatives_schema(),
        vec![
            Arc::new(UInt64Array::from(vec![t; q.len()])) as ArrayRef,
            Arc::new(StringArray::from(q.ids.clone())),
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r.positive.as_str()),
            )),
            Arc::new(Float32Array::from_iter_values(rows.iter().map(|r| r.score))),
            Arc::new(negatives.finish()),
            Arc::new(scores.finish()),
        ],
    )?)
}

/// Picks negatives for each step's queries. Inputs: query embeddings, the cache to search
/// (the latest version seen is kept), the training pairs.
fn sample<'s>(
    cx: &BuildCx<'_, 's>,
    spec: Sample,
    seed: u64,
    device: Device,
) -> Result<BatchStream<'s>> {
    let sampler = spec.sampler();
    let worker = cx.scope.index();
    let (counter, node) = (cx.run.clone(), cx.node.clone());
    let mut searched = Searched::default();
    let logic = move |t: Time, inputs: Vec<Vec<Batch>>| {
        searched.update(&inputs[1], &device)?;
        let mut q = EmbeddingRows::default();
        for b in rows_of(&inputs[0]) {
            q.push(b)?;
        }
        if q.is_empty() {
            return Ok(Vec::new());
        }
        let cache = searched
            .tensor
            .as_ref()
            .ok_or_else(|| Error::invariant("no cache to search at this step"))?;
        let rows = searched.query_rows(&q, &inputs[2])?;
        let chosen = if spec.k == 0 {
            vec![Vec::new(); q.len()]
        } else {
            let queries = q.tensor(&device)?;
            let exclude: Vec<Vec<u32>> = rows.iter().map(|r| r.excluded.clone()).collect();
            let scores: Vec<f32> = rows.iter().map(|r| r.score).collect();
            let mut rng = SplitMix64::new(hash64_seeded(
                seed,
                format!("sample/{node}/{t}/{worker}").as_bytes(),
            ));
            sampler.sample(&queries, cache, &exclude, &scores, &mut rng, spec.chunk)?
        };
        counter.count(&node, |s| s.rows_out += q.len());
        let out = negatives_batch(t, &q, &rows, &chosen, &searched.rows, spec.in_batch)?;
        Ok(vec![(0, Batch(out))])
    };
    Ok(Stepwise::new("Sample")
        .local_inputs(cx.inputs()?)
        .build(cx, logic)
        .remove(0))
}
