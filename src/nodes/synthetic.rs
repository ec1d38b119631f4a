//! `synthetic`: the synthetic study's world as a source (the paper's toy: targets on the
//! unit circle or sphere, a stale copy, a smooth non-linear drift between them, and
//! queries). The points are drawn from the pipeline's `seed`
//! (`freshen_operators::synthetic`, which documents the drift's family).
//!
//! Its main port carries the targets (`id`, `embedding`: the stale vector B[y], `fresh`:
//! the true vector g(y)); its `queries` port the queries (`id`, `split`: `test` for the
//! held-out ones the divergences are measured on, `train` for those a softmax loss
//! learns from, and `vector`). A `fit` node reads both.
//!
//! ```yaml
//! - id: world
//!   type: synthetic
//!   dim: 2
//!   targets: 1000
//!   queries: 500
//!   drift: {amplitude: 0.5, frequency: 3, noise: 0.0}
//! ```

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use freshen_operators::synthetic::{World, WorldConfig};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::ToStream;

use super::Settings;
use crate::dataflow::{BatchStream, BuildCx, Operator};
use crate::error::Result;
use crate::graph::needs::Need;
use crate::graph::{CheckCx, InputRole, NodeKind, PlanCx, Planned, MAIN};
use crate::store::batch::{vector_column, Batch};
use crate::store::tables::{col, embedding_type};

use crate::graph::ports::{FRESH, QUERIES, SPLIT, VECTOR};

/// Settings of `synthetic`: a seeded world of targets and their drift, the synthetic
/// study's source. Its settings are `WorldConfig`'s (`dim`, `targets`, `queries`,
/// `drift`).
///
/// It reads no node.
///
/// Writes targets `id`, `embedding` (stale B), `fresh` (true g). Port `queries`: `id`,
/// `split` (`test` held out, `train`), `vector`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Synthetic {
    /// The world.
    pub world: WorldConfig,
}

impl Settings for Synthetic {
    const TYPE: &'static str = "synthetic";
    const ROLES: &'static [InputRole] = ROLES;

    fn validate(&self) -> freshen_operators::Result<()> {
        self.world.validate()
    }
}

/// The targets' schema: `id`, `embedding` (stale), `fresh`.
pub fn targets_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::EMBEDDING, embedding_type(dim), false),
        Field::new(FRESH, embedding_type(dim), false),
    ]))
}

/// The queries' schema: `id`, `split`, `vector`.
pub fn queries_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(SPLIT, DataType::Utf8, false),
        Field::new(VECTOR, embedding_type(dim), false),
    ]))
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] = &[];

impl NodeKind for Synthetic {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn world(&self) -> Option<&WorldConfig> {
        Some(&self.world)
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        Vec::new()
    }

    fn outputs(&self, _cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        let d = self.world.dim;
        Ok(vec![
            (MAIN.to_string(), targets_schema(d)),
            (QUERIES.to_string(), queries_schema(d)),
        ])
    }

    fn memory(&self, _cx: &CheckCx) -> Vec<crate::graph::Cost> {
        let w = &self.world;
        vec![crate::graph::Cost {
            what: format!(
                "the synthetic world: (2 × {} targets + 2 × {} queries) × {} floats",
                w.targets, w.queries, w.dim
            ),
            bytes: (2 * (w.targets + w.queries) * w.dim) as f64 * crate::graph::memory::F32,
            at: None,
            per: crate::graph::Per::Leader,
            phase: crate::graph::Phase::Run,
        }]
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let seed = cx.graph.spec.pipeline.seed;
        let world = World::generate(&self.world, seed).map_err(|e| cx.error("", e.to_string()))?;
        Ok(Planned::operator(SyntheticOp {
            targets: Batch(targets_batch(&world)?),
            queries: Batch(queries_batch(&world)?),
        }))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

fn ids(prefix: &str, n: usize) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(
        (0..n).map(|i| format!("{prefix}{i}")),
    ))
}

/// The targets as one batch (ids `t0`, `t1`, …).
fn targets_batch(w: &World) -> Result<RecordBatch> {
    let n = w.targets();
    Ok(RecordBatch::try_new(
        targets_schema(w.dim),
        vec![
            ids("t", n),
            vector_column(w.stale.clone(), w.dim)?,
            vector_column(w.fresh.clone(), w.dim)?,
        ],
    )?)
}

/// The queries as one batch: the held-out ones (`q0`, …, split `test`) then the training
/// ones (`r0`, …, split `train`).
fn queries_batch(w: &World) -> Result<RecordBatch> {
    let (test, train) = (w.queries.len() / w.dim, w.train_queries.len() / w.dim);
    let id: Vec<String> = (0..test)
        .map(|i| format!("q{i}"))
        .chain((0..train).map(|i| format!("r{i}")))
        .collect();
    let split = (0..test).map(|_| "test").chain((0..train).map(|_| "train"));
    let vectors = [w.queries.as_slice(), &w.train_queries].concat();
    Ok(RecordBatch::try_new(
        queries_schema(w.dim),
        vec![
            Arc::new(StringArray::from(id)),
            Arc::new(StringArray::from_iter_values(split)),
            vector_column(vectors, w.dim)?,
        ],
    )?)
}

/// The world at run time: worker 0 sends both batches at time 0.
struct SyntheticOp {
    targets: Batch,
    queries: Batch,
}

impl Operator for SyntheticOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let mine = |b: &Batch| match cx.leader() {
            true => vec![b.clone()],
            false => Vec::new(),
        };
        let targets: BatchStream<'s> = mine(&self.targets).to_stream(cx.scope);
        let queries: BatchStream<'s> = mine(&self.queries).to_stream(cx.scope);
        Ok(vec![
            (MAIN.to_string(), targets),
            (QUERIES.to_string(), queries),
        ])
    }
}
