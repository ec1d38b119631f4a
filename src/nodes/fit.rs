//! `fit`: trains a corrector h on a fraction of a `synthetic` world's targets and
//! measures what it fixes: `KL(P ‖ P_stale)` against `KL(P ‖ P_h)` on the held-out
//! queries, and the staleness of B and of h(B) (`freshen_operators::synthetic::fit`).
//!
//! Inputs: the `synthetic` node's targets, then its `queries` port. Ports: the main one
//! carries one metrics row per measurement (every `train.eval_every` steps, with the
//! world's and h's settings on each row, so a sweep's files describe themselves);
//! `targets` every target's stale, true and corrected vectors and whether h trained on
//! it; `softmax` the three softmaxes of the held-out query `query` over every target
//! (the paper's toy picture, drawn by `freshen study --picture`). Everything runs on
//! worker 0, full batch, so a seed gives the same numbers whatever the workers.
//!
//! ```yaml
//! - id: fit
//!   type: fit
//!   inputs: {world: world, queries: world.queries}
//!   model: h
//!   train: {fraction: 0.1, steps: 500, lr: 0.01, loss: drift}
//! ```

use freshen_operators::host::HostRead;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, RecordBatch, StringArray, UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use freshen_operators::synthetic::{
    fit, query_softmaxes, training_rows, FitConfig, Measured, World, WorldConfig,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::core::Partition;
use timely::dataflow::operators::Operator as _;

use super::Settings;
use crate::dataflow::{BatchStream, BuildCx, Operator};
use crate::error::{Error, Result};
use crate::graph::needs::{self, Need};
use crate::graph::{CheckCx, InputRole, NodeKind, PlanCx, Planned, References, MAIN};
use crate::models::Role;
use crate::store::batch::{self, vector_column, Batch};
use crate::store::tables::{col, embedding_type};

use crate::graph::ports::{self, SOFTMAX, TARGETS};

/// Settings of `fit`: trains a corrector on a synthetic world (the synthetic study).
///
/// Writes one metrics row per measurement (`step`, `kl_stale`, `kl_corrected`, the
/// staleness of B and h(B), the settings). Port `targets`: the stale, true and
/// corrected vectors and `trained`. Port `softmax`: one query's P, P_stale and P_h.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fit {
    /// A corrector of the pipeline's `models:` (its width and depth are the study's
    /// "parameter count"; `norm: none` in 2 dimensions, where a layer norm keeps only a
    /// sign).
    pub model: String,
    /// How h trains: `fraction`, `steps`, `lr`, `loss` (`drift` or `softmax`), `beta`,
    /// `eval_every`.
    #[serde(default)]
    pub train: FitConfig,
    /// The held-out query whose softmaxes the `softmax` port carries. Default 0.
    #[serde(default)]
    pub query: usize,
}

impl Settings for Fit {
    const TYPE: &'static str = "fit";
    const ROLES: &'static [InputRole] = ROLES;

    fn validate(&self) -> freshen_operators::Result<()> {
        self.train.validate().map_err(|e| super::under("train", e))
    }
}

/// The metrics' schema: one row per measurement.
pub fn metrics_schema() -> SchemaRef {
    let f = |name: &str, t: DataType| Field::new(name, t, false);
    let mut fields = vec![f("step", DataType::UInt64), f("loss", DataType::Float64)];
    for name in [
        "kl_stale",
        "kl_corrected",
        "staleness",
        "corrected_staleness",
        "held_out_staleness",
        "fraction",
        "amplitude",
        "noise",
        "beta",
    ] {
        fields.push(f(name, DataType::Float64));
    }
    for name in [
        "train_targets",
        "targets",
        "params",
        "width",
        "depth",
        "dim",
        "frequency",
        "seed",
    ] {
        fields.push(f(name, DataType::UInt64));
    }
    fields.push(f("loss_kind", DataType::Utf8));
    Arc::new(Schema::new(fields))
}

/// The targets' schema: `id`, `embedding` (stale), `fresh`, `corrected`, `trained`.
pub fn targets_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::EMBEDDING, embedding_type(dim), false),
        Field::new(ports::FRESH, embedding_type(dim), false),
        Field::new("corrected", embedding_type(dim), false),
        Field::new("trained", DataType::Boolean, false),
    ]))
}

/// The softmaxes' schema: `id` (target), `p_true`, `p_stale`, `p_corrected`.
pub fn softmax_schema() -> SchemaRef {
    let p = |name: &str| Field::new(name, DataType::Float32, false);
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        p("p_true"),
        p("p_stale"),
        p("p_corrected"),
    ]))
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] = &[
    InputRole::required(
        "world",
        "the `synthetic` node: the cache and the fresh vectors",
    ),
    InputRole::required("queries", "the synthetic world's queries (`world.queries`)"),
];

impl NodeKind for Fit {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    fn references(&self) -> References {
        References {
            models: vec![("model", self.model.clone(), Role::Corrector)],
            ..References::default()
        }
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        vec![
            (
                "world",
                vec![
                    needs::text(col::ID),
                    needs::vector(col::EMBEDDING),
                    needs::vector(ports::FRESH),
                ],
            ),
            (
                "queries",
                vec![
                    needs::text(col::ID),
                    needs::text(ports::SPLIT),
                    needs::vector(ports::VECTOR),
                ],
            ),
        ]
    }

    fn outputs(&self, cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        Ok(vec![
            (MAIN.to_string(), metrics_schema()),
            (TARGETS.to_string(), targets_schema(cx.input_dim("world"))),
            (SOFTMAX.to_string(), softmax_schema()),
        ])
    }

    fn check(&self, cx: &CheckCx) -> Result<()> {
        for role in ["world", "queries"] {
            let ok = cx.producer_is(role, "synthetic");
            super::want(cx, role, ok, "a `synthetic` node")?;
        }
        let world = cx.producer("world").and_then(|p| p.kind.world());
        if let Some(w) = world {
            if self.query >= w.queries {
                return Err(cx.error(
                    "query",
                    format!(
                        "`query` is {} but the world has {} held-out queries (expected less)",
                        self.query, w.queries
                    ),
                ));
            }
        }
        Ok(())
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let world = cx
            .check()
            .producer("world")
            .and_then(|p| p.kind.world())
            .copied()
            .ok_or_else(|| Error::invariant("a fit without its world"))?;
        let model =
            cx.graph.models.get(&self.model).ok_or_else(|| {
                Error::invariant(format!("model `{}` is not defined", self.model))
            })?;
        let params = model.parameters(world.dim).unwrap_or(0);
        let shape = model.settings_json();
        let get = |k: &str| shape.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        Ok(Planned::operator(FitOp {
            spec: self.clone(),
            world,
            seed: cx.graph.spec.pipeline.seed,
            params,
            width: get("width"),
            depth: get("depth"),
        }))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// A fit at run time.
#[derive(Clone)]
struct FitOp {
    spec: Fit,
    world: WorldConfig,
    seed: u64,
    params: u64,
    width: u64,
    depth: u64,
}

impl Operator for FitOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let h = cx.models()?.corrector(&self.spec.model)?;
        let (leader, node, shared) = (cx.leader(), cx.node.clone(), cx.run.clone());
        let op = self.clone();
        let to_leader = || Exchange::new(|_: &Batch| 0u64);
        let out = cx
            .input("world")?
            .binary_frontier::<_, CapacityContainerBuilder<Vec<(u64, Batch)>>, _, _, _, _>(
                cx.input("queries")?,
                to_leader(),
                to_leader(),
                "Fit",
                move |cap, _| {
                    let mut cap = Some(cap);
                    let (mut targets, mut queries) = (Vec::new(), Vec::new());
                    move |(t_in, f1), (q_in, f2), output| {
                        t_in.for_each(|_, data| targets.append(data));
                        q_in.for_each(|_, data| queries.append(data));
                        if !(f1.is_empty() && f2.is_empty()) {
                            return;
                        }
                        let Some(c) = cap.take() else { return };
                        if !leader || shared.failed() {
                            return;
                        }
                        match op.run(&h, &targets, &queries) {
                            Ok(parts) => {
                                for (port, b) in parts {
                                    shared.count(&node, |s| s.rows_out += b.num_rows());
                                    output.session(&c).give((port, Batch(b)));
                                }
                            }
                            Err(e) => shared.fail(e.with_node(&node)),
                        }
                    }
                },
            );
        let mut parts = out
            .partition::<CapacityContainerBuilder<Vec<Batch>>, _, _>(3, |(port, b)| (port, b))
            .into_iter();
        let mut next = || parts.next().expect("three parts");
        Ok(vec![
            (MAIN.to_string(), next()),
            (TARGETS.to_string(), next()),
            (SOFTMAX.to_string(), next()),
        ])
    }
}

impl FitOp {
    /// Rebuilds the world from its batches, fits h, and returns the three outputs by
    /// port number.
    fn run(
        &self,
        h: &freshen_operators::corrector::Corrector,
        targets: &[Batch],
        queries: &[Batch],
    ) -> Result<Vec<(u64, RecordBatch)>> {
        let world = world_of(targets, queries)?;
        let n = world.targets();
        let rows = training_rows(n, self.spec.train.fraction, self.seed)?;
        let measured = fit(h, &world, &rows, &self.spec.train)?;
        let [p, s, c] = query_softmaxes(h, &world, self.spec.query, self.spec.train.beta)?;
        let stale = world.tensor(&world.stale, h.device())?;
        let corrected: Vec<f32> = h.apply_chunked(&stale, 8192)?.flatten_all()?.host_vec1()?;
        let mut trained = vec![false; n];
        rows.iter().for_each(|&r| trained[r as usize] = true);
        let ids = target_ids(targets)?;
        let d = world.dim;
        let targets = RecordBatch::try_new(
            targets_schema(d),
            vec![
                Arc::new(StringArray::from(ids.clone())),
                vector_column(world.stale, d)?,
                vector_column(world.fresh, d)?,
                vector_column(corrected, d)?,
                Arc::new(BooleanArray::from(trained)),
            ],
        )?;
        let softmax = RecordBatch::try_new(
            softmax_schema(),
            vec![
                Arc::new(StringArray::from(ids)),
                Arc::new(Float32Array::from(p)),
                Arc::new(Float32Array::from(s)),
                Arc::new(Float32Array::from(c)),
            ],
        )?;
        Ok(vec![
            (0, self.metrics(&measured, rows.len(), n)?),
            (1, targets),
            (2, softmax),
        ])
    }

    fn metrics(&self, m: &[Measured], trained: usize, n: usize) -> Result<RecordBatch> {
        let rows = m.len();
        let f64s = |f: &dyn Fn(&Measured) -> f64| -> ArrayRef {
            Arc::new(Float64Array::from_iter_values(m.iter().map(f)))
        };
        let same_f = |x: f64| -> ArrayRef { Arc::new(Float64Array::from(vec![x; rows])) };
        let same_u = |x: u64| -> ArrayRef { Arc::new(UInt64Array::from(vec![x; rows])) };
        let (w, t) = (&self.world, &self.spec.train);
        let loss_kind = serde_json::to_value(t.loss)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let columns = vec![
            Arc::new(UInt64Array::from_iter_values(
                m.iter().map(|x| x.step as u64),
            )) as ArrayRef,
            f64s(&|x| x.loss),
            f64s(&|x| x.kl_stale),
            f64s(&|x| x.kl_corrected),
            f64s(&|x| x.staleness),
            f64s(&|x| x.corrected_staleness),
            f64s(&|x| x.held_out_staleness),
            same_f(t.fraction),
            same_f(w.drift.amplitude),
            same_f(w.drift.noise),
            same_f(t.beta),
            same_u(trained as u64),
            same_u(n as u64),
            same_u(self.params),
            same_u(self.width),
            same_u(self.depth),
            same_u(w.dim as u64),
            same_u(u64::from(w.drift.frequency)),
            same_u(self.seed),
            Arc::new(StringArray::from(vec![loss_kind; rows])),
        ];
        Ok(RecordBatch::try_new(metrics_schema(), columns)?)
    }
}

/// The target ids, in the order of the world's rows.
fn target_ids(targets: &[Batch]) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for b in targets {
        let s = batch::strings(&b.0, col::ID)?;
        ids.extend(s.iter().map(|x| x.unwrap_or_default().to_string()));
    }
    Ok(ids)
}

/// The world again, from the `synthetic` node's batches (targets in their order, queries
/// by split).
fn world_of(targets: &[Batch], queries: &[Batch]) -> Result<World> {
    let (mut stale, mut fresh, mut test, mut train) = (vec![], vec![], vec![], vec![]);
    let mut dim = 0;
    for b in targets {
        let (v, d) = batch::vectors_of(&b.0, col::EMBEDDING)?;
        stale.extend_from_slice(v);
        fresh.extend_from_slice(batch::vectors_of(&b.0, ports::FRESH)?.0);
        dim = d;
    }
    for b in queries {
        let (v, d) = batch::vectors_of(&b.0, ports::VECTOR)?;
        let split: &StringArray = batch::strings(&b.0, ports::SPLIT)?;
        for (i, s) in split.iter().enumerate() {
            let row = &v[i * d..(i + 1) * d];
            match s {
                Some("train") => train.extend_from_slice(row),
                _ => test.extend_from_slice(row),
            }
        }
    }
    if dim == 0 || stale.is_empty() || test.is_empty() {
        return Err(Error::invariant("a fit received no targets or no queries"));
    }
    Ok(World {
        dim,
        stale,
        fresh,
        queries: test,
        train_queries: train,
    })
}
