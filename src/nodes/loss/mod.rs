//! `loss`: the retriever's truncated softmax (or, with `objective: marginal`, the
//! retrieval-augmented model's marginal likelihood, [`marginal`]) and the corrector's
//! objective, turned into gradients of the embedding rows that `update` carries back into
//! the models.
//!
//! The operator sees embedding values only, so stop-gradients are structural: the
//! retriever loss is differentiated with respect to the query and fresh target rows (the
//! towers' outputs), the corrector's loss with respect to the corrected rows only (the
//! fresh rows and the queries enter it as constants).

use freshen_operators::host::HostRead;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::SchemaRef;
use candle_core::{Device, Tensor, Var};
use freshen_operators::loss::{retriever_loss, CorrectorLoss};

use corrector::{corrector_part, CorrectorCx, CorrectorPart};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod corrector;
mod marginal;
#[cfg(test)]
mod tests;

use super::Settings;
use crate::dataflow::{
    rows_of, BatchStream, BuildCx, EmbeddingRows, Operator, StepInputs, Stepwise, Time,
};
use crate::error::{Error, Result};
use crate::graph::needs::{self, Need};
use crate::graph::{CheckCx, InputRole, NodeKind, PlanCx, Planned, TrainingLoss, MAIN};
use crate::models::Role;
use crate::store::batch::{self, Batch};
use crate::store::pairs::string_lists;
use crate::store::tables::{self, col};

use crate::graph::ports::{self, STATS};

/// What the retriever side of the loss is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// The truncated softmax of the positive over the candidates. The default.
    #[default]
    Retriever,
    /// `−log Σ_z p(z | q) p(a | q, z)` over the retrieved passages, with `p(a | q, z)`
    /// from a `read` node (the `reader` input): retrieval as a latent variable.
    Marginal,
}

/// Settings of `loss`: the retriever's loss and the corrector's.
///
/// Writes gradients `node`, `id`, `grad`. Port `stats`: the step's losses and
/// staleness.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Loss {
    /// Inverse temperature β of the softmax.
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// The corrector's objective: `mse` (drift MSE to the stop-gradient fresh embeddings,
    /// the paper's), `task` (truncated softmax of stop-gradient queries against the
    /// corrected candidates), `{both: {task_weight: w}}` (`mse + w · task`),
    /// `{listwise: {weight: w}}` (`mse + w · KL(P_g ‖ P_h)` over the step's queries and
    /// rows: the ranking's top), or `{procrustes: {decay: d}}` (a linear h in closed form).
    #[serde(default, with = "serde_yaml::with::singleton_map")]
    #[schemars(with = "CorrectorLoss")]
    pub corrector: CorrectorLoss,
    /// `retriever` (the truncated softmax) or `marginal` (the retrieval-augmented model's
    /// marginal likelihood, with a `read` node as the `reader` input).
    #[serde(default)]
    pub objective: Objective,
}

fn default_beta() -> f64 {
    20.0
}

impl Settings for Loss {
    const TYPE: &'static str = "loss";
    const ROLES: &'static [InputRole] = ROLES;

    fn validate(&self) -> freshen_operators::Result<()> {
        freshen_operators::ranges::finite_positive("beta", self.beta)?;
        self.corrector
            .validate()
            .map_err(|e| super::under("corrector", e))
    }
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] = &[
    InputRole::required("queries", "the query tower's `encode` node"),
    InputRole::required("targets", "the `encode` node of the step's touched targets"),
    InputRole::required(
        "sample",
        "the `sample` node: each query's positive and negatives",
    ),
    InputRole::optional(
        "drift",
        "a `correct` node with two inputs: h(B) of the touched targets, which trains h",
    ),
    InputRole::optional(
        "reader",
        "a `read` node: the reader's log-likelihoods (`objective: marginal`)",
    ),
    InputRole::implied(
        "subset",
        ("targets", ports::TOUCHED_SUBSET),
        "the training subset's fresh embeddings, from the `targets` node",
    ),
];

impl NodeKind for Loss {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    /// A fourth input of a list is the reader when it is a `read` node.
    fn positional(&self, types: &[&str]) -> Option<Vec<&'static str>> {
        match types {
            [_, _, _, "read"] => Some(vec!["queries", "targets", "sample", "reader"]),
            _ => crate::graph::by_position(ROLES, types.len()),
        }
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        vec![
            ("queries", needs::embeddings()),
            ("targets", needs::embeddings()),
            (
                "sample",
                vec![
                    needs::text(col::ID),
                    needs::text(col::CORPUS_ID),
                    needs::id_list(col::NEGATIVES),
                ],
            ),
            (
                "drift",
                vec![
                    needs::text(col::ID),
                    needs::vector(col::EMBEDDING),
                    needs::vector(col::STALE),
                ],
            ),
            (
                "reader",
                vec![needs::text(col::ID), needs::vector(ports::LOG_LIK)],
            ),
        ]
    }

    fn outputs(&self, cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        Ok(vec![
            (
                MAIN.to_string(),
                tables::grads_schema(cx.input_dim("queries")),
            ),
            (STATS.to_string(), tables::loss_stats_schema()),
        ])
    }

    fn training_loss(&self) -> Option<TrainingLoss> {
        Some(TrainingLoss {
            beta: self.beta,
            corrector: self.corrector,
        })
    }

    fn check(&self, cx: &CheckCx) -> Result<()> {
        let encode = |role: &str, lookup: bool| {
            cx.producer_is(role, "encode")
                && cx.producer_model(role, Role::Encoder).is_some()
                && cx.producer_has(role, "sample") == lookup
        };
        let queries = encode("queries", false);
        super::want(cx, "queries", queries, "the query tower's `encode` node")?;
        super::want(
            cx,
            "targets",
            encode("targets", true),
            "the `encode` node of the chosen targets (inputs `sample` and `corpus`)",
        )?;
        let sample = cx.producer_is("sample", "sample");
        super::want(cx, "sample", sample, "the `sample` node")?;
        let correct = cx.producer_is("drift", "correct") && cx.producer_has("drift", "sample");
        super::want(
            cx,
            "drift",
            correct,
            "the `correct` node of the chosen targets (inputs `cache` and `sample`)",
        )?;
        let read = cx.producer_is("reader", "read");
        super::want(cx, "reader", read, "a `read` node")?;
        match (self.objective == Objective::Marginal, cx.has("reader")) {
            (true, false) => {
                return Err(cx.error(
                    "objective",
                    "`objective: marginal` needs input `reader` (expected a `read` node)",
                ))
            }
            (false, true) => {
                return Err(cx.input_error(
                    "reader",
                    "input `reader` is read by `objective: marginal` only",
                ))
            }
            _ => {}
        }
        if let CorrectorLoss::Procrustes { .. } = self.corrector {
            let h = cx
                .producer_model("drift", Role::Corrector)
                .and_then(|m| cx.graph.models.get(&m));
            if !h.is_some_and(|m| m.linear()) {
                return Err(cx.error(
                    "corrector",
                    "`procrustes` sets a linear corrector in closed form (expected the touched `correct` node's model to have `depth: 0` and `norm: none`)",
                ));
            }
        }
        let stats_read = cx.consumers().iter().any(|&c| {
            cx.graph
                .inputs(c)
                .iter()
                .any(|e| e.node == cx.node && e.port == STATS)
        });
        if !stats_read {
            return Err(cx.error(
                "",
                "no `update` node reads this loss (expected an update with inputs: {grads: <loss>, stats: <loss>.stats})",
            ));
        }
        Ok(())
    }

    /// The candidate tensors: every query's positive, negatives and (in-batch) the other
    /// queries' positives, forward and backward (about six copies).
    fn memory(&self, cx: &CheckCx) -> Vec<crate::graph::Cost> {
        let picks = cx.producer("sample").and_then(|s| s.kind.picks());
        let (Some(picks), d) = (picks, cx.input_dim("queries")) else {
            return Vec::new();
        };
        let pairs = cx
            .producer_index("sample")
            .and_then(|s| cx.graph.input(s, "pairs").map(|e| e.node));
        let Some((b, at)) = pairs.and_then(|p| super::pairs_per_step(cx.graph, p)) else {
            return Vec::new();
        };
        let m = 1
            + picks.k
            + if picks.in_batch {
                b.saturating_sub(1)
            } else {
                0
            };
        vec![crate::graph::Cost {
            what: format!(
                "node {}: {b} queries × {m} candidates × {d} floats",
                cx.this().id
            ),
            bytes: 6.0 * (b * m * d) as f64 * crate::graph::memory::F32,
            at: Some(at),
            per: crate::graph::Per::Worker,
            phase: crate::graph::Phase::Step,
        }]
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let g = cx.graph;
        let name = |role: &str| g.input(cx.node, role).map(|e| g.nodes()[e.node].id.clone());
        let tower = cx.check().producer_model("queries", Role::Encoder);
        let device = match tower.and_then(|m| g.models.get(&m)) {
            Some(m) => m.common().device.open()?,
            None => freshen_operators::device::cpu(),
        };
        Ok(Planned::operator(LossOp {
            spec: self.clone(),
            nodes: LossNodes {
                queries: name("queries").unwrap_or_default(),
                targets: name("targets").unwrap_or_default(),
                read: name("reader"),
                corrected: name("drift"),
                train_corrector: g.training.as_ref().is_some_and(|t| t.corrector_trains),
            },
            device,
        }))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// The nodes whose rows the loss differentiates, for tagging the gradients.
#[derive(Clone)]
struct LossNodes {
    /// The query tower's encode node.
    queries: String,
    /// The touched targets' encode node.
    targets: String,
    /// The touched targets' correct node, if the loss has one.
    corrected: Option<String>,
    /// The `read` node of `objective: marginal`.
    read: Option<String>,
    /// Whether `update` trains the corrector (else only its staleness is measured).
    train_corrector: bool,
}

/// A loss node at run time: computes on the query tower's device.
struct LossOp {
    spec: Loss,
    nodes: LossNodes,
    device: Device,
}

impl Operator for LossOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let (spec, nodes, dev) = (self.spec.clone(), self.nodes.clone(), self.device.clone());
        let logic = move |t: Time, inputs: StepInputs| step(t, &inputs, (&spec, &nodes, &dev));
        let mut ports = Stepwise::new("Loss")
            .input("queries", cx.input("queries")?)
            .input("targets", cx.input("targets")?)
            .input("sample", cx.input("sample")?)
            .input_if("drift", cx.input_if("drift"))
            .input_if("reader", cx.input_if("reader"))
            // The corrector's training subset, embedded by the touched targets' encode.
            .input_if("subset", cx.input_if("subset"))
            .outputs(2)
            .build(cx, logic)
            .into_iter();
        let (grads, stats) = (ports.next(), ports.next());
        let missing = || Error::invariant("loss without outputs");
        Ok(vec![
            (MAIN.to_string(), grads.ok_or_else(missing)?),
            (STATS.to_string(), stats.ok_or_else(missing)?),
        ])
    }
}

/// A batch of gradients in [`tables::grads_schema`].
fn grads_batch(node: &str, ids: &[String], grad: &Tensor) -> Result<Batch> {
    let (_, d) = grad.dims2()?;
    Ok(Batch(RecordBatch::try_new(
        tables::grads_schema(d),
        vec![
            Arc::new(StringArray::from_iter_values(ids.iter().map(|_| node))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(String::as_str),
            )),
            batch::vector_column(grad.flatten_all()?.host_vec1::<f32>()?, d)?,
        ],
    )?))
}

/// A step's candidates: per query its row, its id, and its positive then its negatives
/// (rows of the fresh targets).
struct Candidates {
    query_rows: Vec<usize>,
    query_ids: Vec<String>,
    sets: Vec<Vec<usize>>,
}

impl Candidates {
    fn gather(t: Time, rows: &[Batch], q: &EmbeddingRows, fresh: &EmbeddingRows) -> Result<Self> {
        let (qi, fi) = (q.index(), fresh.index());
        let find = |m: &HashMap<String, usize>, id: &str, what: &str| {
            m.get(id).copied().ok_or_else(|| {
                Error::invariant(format!("{what} `{id}` has no embedding at step {t}"))
            })
        };
        let mut out = Candidates {
            query_rows: Vec::new(),
            query_ids: Vec::new(),
            sets: Vec::new(),
        };
        for b in rows_of(rows) {
            let ids = batch::strings(b, col::ID)?;
            let pos = batch::strings(b, col::CORPUS_ID)?;
            for (r, negs) in string_lists(b, col::NEGATIVES)?.into_iter().enumerate() {
                out.query_rows.push(find(&qi, ids.value(r), "query")?);
                out.query_ids.push(ids.value(r).to_string());
                let mut c = vec![find(&fi, pos.value(r), "target")?];
                for n in &negs {
                    c.push(find(&fi, n, "target")?);
                }
                out.sets.push(c);
            }
        }
        Ok(out)
    }

    /// The widest set.
    fn width(&self) -> usize {
        self.sets.iter().map(Vec::len).max().unwrap_or(1)
    }

    /// `(b·m)` row indices (padded with each set's positive, or 0) and the `(b, m)` mask.
    fn padded(&self, m: usize, pad_with_positive: bool) -> (Vec<u32>, Vec<f32>) {
        let mut index = Vec::with_capacity(self.sets.len() * m);
        let mut mask = Vec::with_capacity(self.sets.len() * m);
        for c in &self.sets {
            for j in 0..m {
                let pad = if pad_with_positive { c[0] } else { 0 };
                index.push(c.get(j).copied().unwrap_or(pad) as u32);
                mask.push(if j < c.len() { 1f32 } else { 0.0 });
            }
        }
        (index, mask)
    }
}

/// One step of the loss: gradients on port 0, one row of statistics on port 1. Input
/// `subset`: the fresh embeddings of the corrector's training subset (its loss only).
fn step(
    t: Time,
    inputs: &StepInputs,
    (spec, nodes, dev): (&Loss, &LossNodes, &Device),
) -> Result<Vec<(usize, Batch)>> {
    let (mut q, mut fresh) = (EmbeddingRows::default(), EmbeddingRows::default());
    for b in rows_of(&inputs["queries"]) {
        q.push(b)?;
    }
    for b in rows_of(&inputs["targets"]) {
        fresh.push(b)?;
    }
    let cands = Candidates::gather(t, &inputs["sample"], &q, &fresh)?;
    if cands.sets.is_empty() {
        return Ok(Vec::new());
    }
    let (b, m, d) = (cands.sets.len(), cands.width(), q.dim);
    let (index, mask) = cands.padded(m, false);
    let index = Tensor::from_vec(index, b * m, dev)?;
    let mask = Tensor::from_vec(mask, (b, m), dev)?;
    let qv = Var::from_tensor(&q.gather(&cands.query_rows, dev)?)?;
    let tv = Var::from_tensor(&fresh.tensor(dev)?)?;
    let targets = tv.as_tensor().index_select(&index, 0)?.reshape((b, m, d))?;
    let mut out = Vec::new();
    let read = match &nodes.read {
        Some(node) => {
            let rows = inputs.get("reader").unwrap_or_default();
            Some((node, marginal::log_likelihoods(t, rows, &cands, m, dev)?))
        }
        None => None,
    };
    let loss = match &read {
        Some((_, ll)) => {
            marginal::loss(qv.as_tensor(), &targets, ll.as_tensor(), &mask, spec.beta)?
        }
        None => retriever_loss(qv.as_tensor(), &targets, Some(&mask), spec.beta)?,
    };
    let retriever = f64::from(loss.host_scalar::<f32>()?);
    let grads = loss.backward()?;
    if let Some(g) = grads.get(qv.as_tensor()) {
        out.push((0, grads_batch(&nodes.queries, &cands.query_ids, g)?));
    }
    if let Some(g) = grads.get(tv.as_tensor()) {
        out.push((0, grads_batch(&nodes.targets, &fresh.ids, g)?));
    }
    if let Some((node, ll)) = &read {
        if let Some(g) = grads.get(ll.as_tensor()) {
            out.push((0, grads_batch(node, &cands.query_ids, g)?));
        }
    }
    let part = match (&nodes.corrected, inputs.get("drift")) {
        (Some(node), Some(rows)) => {
            // h learns from the touched targets and the subset's (the touched first: a
            // target in both is the touched one's row).
            let mut all = fresh.clone();
            for b in inputs.get("subset").into_iter().flat_map(rows_of) {
                all.push(b)?;
            }
            let cx = CorrectorCx {
                spec,
                node,
                train: nodes.train_corrector,
                cands: &cands,
                fresh: &fresh,
                all: &all,
                queries: qv.as_tensor(),
                mask: &mask,
                dev,
            };
            corrector_part(&cx, rows, &mut out)?
        }
        _ => CorrectorPart {
            loss: None,
            staleness: None,
            corrected_staleness: None,
        },
    };
    let candidates: usize = cands.sets.iter().map(Vec::len).sum();
    out.push((1, stats_batch(t, b, candidates, retriever, &part)?));
    Ok(out)
}

/// One row of [`tables::loss_stats_schema`].
fn stats_batch(
    t: Time,
    queries: usize,
    candidates: usize,
    retriever: f64,
    part: &CorrectorPart,
) -> Result<Batch> {
    Ok(Batch(RecordBatch::try_new(
        tables::loss_stats_schema(),
        vec![
            Arc::new(UInt64Array::from(vec![t])) as ArrayRef,
            Arc::new(UInt64Array::from(vec![queries as u64])),
            Arc::new(UInt64Array::from(vec![candidates as u64])),
            Arc::new(Float64Array::from(vec![retriever])),
            Arc::new(Float64Array::from(vec![part.loss])),
            Arc::new(Float64Array::from(vec![part.staleness])),
            Arc::new(Float64Array::from(vec![part.corrected_staleness])),
        ],
    )?))
}
