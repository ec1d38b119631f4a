//! `loss`: the retriever's truncated softmax and the corrector's objective, turned into
//! gradients of the embedding rows that `update` carries back into the models.
//!
//! The operator sees embedding values only, so stop-gradients are structural: the
//! retriever loss is differentiated with respect to the query and fresh target rows (the
//! towers' outputs), the corrector's loss with respect to the corrected rows only (the
//! fresh rows and the queries enter it as constants).

use std::rc::Rc;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use candle_core::{Device, Tensor, Var};
use freshen_operators::loss::{corrector_loss, relative_staleness, retriever_loss, CorrectorLoss};
use timely::dataflow::Scope;

use super::rows_of;
use crate::error::{Error, Result};
use crate::runtime::dataflow::{BatchStream, Time};
use crate::runtime::shared::Shared;
use crate::runtime::stepwise::{stepwise, Route};
use crate::spec::{CorrectorObjective, LossSpec};
use crate::store::batch::{self, Batch};
use crate::store::pairs::string_lists;
use crate::store::tables::{self, col};
use crate::store::vectors::Vectors;

/// The nodes whose rows the loss differentiates, for tagging the gradients.
pub struct LossNodes {
    /// The query tower's encode node.
    pub queries: String,
    /// The touched targets' encode node.
    pub targets: String,
    /// The touched targets' correct node, if the loss has one.
    pub corrected: Option<String>,
    /// Whether `update` trains the corrector (else only its staleness is measured).
    pub train_corrector: bool,
}

fn compute(e: candle_core::Error) -> Error {
    Error::Compute(e.into())
}

fn flat(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()
        .and_then(|x| x.to_vec1::<f32>())
        .map_err(compute)
}

/// A batch of gradients in [`tables::grads_schema`].
fn grads_batch(node: &str, ids: &[String], grad: &Tensor) -> Result<Batch> {
    let (_, d) = grad.dims2().map_err(compute)?;
    Ok(Batch(RecordBatch::try_new(
        tables::grads_schema(d),
        vec![
            Arc::new(StringArray::from_iter_values(ids.iter().map(|_| node))) as ArrayRef,
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(String::as_str),
            )),
            batch::vector_column(flat(grad)?, d)?,
        ],
    )?))
}

/// The loss of each step. Inputs: query embeddings, fresh target embeddings, the sample
/// rows, and optionally the corrected touched rows. Port 0: gradients; port 1: one row of
/// statistics per step.
pub fn loss<'s>(
    scope: Scope<'s, Time>,
    inputs: Vec<BatchStream<'s>>,
    spec: LossSpec,
    nodes: LossNodes,
    node: Rc<str>,
    shared: Arc<Shared>,
) -> Vec<BatchStream<'s>> {
    let objective = match spec.corrector {
        CorrectorObjective::Mse => CorrectorLoss::Mse,
        CorrectorObjective::Task => CorrectorLoss::Task,
        CorrectorObjective::Both => CorrectorLoss::Both {
            task_weight: spec.task_weight,
        },
    };
    let logic = move |t: Time, inputs: Vec<Vec<Batch>>| {
        let dev = Device::Cpu;
        let (mut q, mut fresh) = (Vectors::default(), Vectors::default());
        for b in rows_of(&inputs[0]) {
            q.push(b)?;
        }
        for b in rows_of(&inputs[1]) {
            fresh.push(b)?;
        }
        let (qi, fi) = (q.index(), fresh.index());
        // Candidates per query: its positive, then its negatives.
        let mut query_rows = Vec::new();
        let mut query_ids = Vec::new();
        let mut cands: Vec<Vec<usize>> = Vec::new();
        for b in rows_of(&inputs[2]) {
            let ids = batch::strings(b, col::ID)?;
            let pos = batch::strings(b, col::CORPUS_ID)?;
            for (r, negs) in string_lists(b, col::NEGATIVES)?.into_iter().enumerate() {
                let find = |m: &std::collections::HashMap<String, usize>, id: &str, what: &str| {
                    m.get(id).copied().ok_or_else(|| {
                        Error::Other(format!("{what} `{id}` has no embedding at step {t}"))
                    })
                };
                query_rows.push(find(&qi, ids.value(r), "query")?);
                query_ids.push(ids.value(r).to_string());
                let mut c = vec![find(&fi, pos.value(r), "target")?];
                for n in &negs {
                    c.push(find(&fi, n, "target")?);
                }
                cands.push(c);
            }
        }
        if cands.is_empty() {
            return Ok(Vec::new());
        }
        let (b, m, d) = (
            cands.len(),
            cands.iter().map(Vec::len).max().unwrap_or(1),
            q.dim,
        );
        let mut index = Vec::with_capacity(b * m);
        let mut mask = Vec::with_capacity(b * m);
        for c in &cands {
            for j in 0..m {
                index.push(c.get(j).copied().unwrap_or(0) as u32);
                mask.push(if j < c.len() { 1f32 } else { 0.0 });
            }
        }
        let index = Tensor::from_vec(index, b * m, &dev).map_err(compute)?;
        let mask = Tensor::from_vec(mask, (b, m), &dev).map_err(compute)?;
        let qv = Var::from_tensor(&q.gather(&query_rows, &dev)?).map_err(compute)?;
        let tv = Var::from_tensor(&fresh.tensor(&dev)?).map_err(compute)?;
        let targets = tv
            .as_tensor()
            .index_select(&index, 0)
            .and_then(|x| x.reshape((b, m, d)))
            .map_err(compute)?;
        let loss = retriever_loss(qv.as_tensor(), &targets, Some(&mask), spec.beta)?;
        let retriever = f64::from(loss.to_scalar::<f32>().map_err(compute)?);
        let grads = loss.backward().map_err(compute)?;
        let mut out = Vec::new();
        if let Some(g) = grads.get(qv.as_tensor()) {
            out.push((0, grads_batch(&nodes.queries, &query_ids, g)?));
        }
        if let Some(g) = grads.get(tv.as_tensor()) {
            out.push((0, grads_batch(&nodes.targets, &fresh.ids, g)?));
        }
        let (mut corr_loss, mut stale_s, mut corr_s) = (None, None, None);
        if let (Some(corrected_node), Some(rows)) = (&nodes.corrected, inputs.get(3)) {
            let (mut h, mut stale) = (Vectors::default(), Vectors::default());
            for b in rows_of(rows) {
                h.push(b)?;
                stale.push_column(b, col::STALE)?;
            }
            if !h.is_empty() {
                let aligned: Vec<usize> = h
                    .ids
                    .iter()
                    .map(|id| {
                        fi.get(id).copied().ok_or_else(|| {
                            Error::Other(format!("corrected target `{id}` has no fresh embedding"))
                        })
                    })
                    .collect::<Result<_>>()?;
                let f = fresh.gather(&aligned, &dev)?;
                let hv = Var::from_tensor(&h.tensor(&dev)?).map_err(compute)?;
                stale_s = Some(relative_staleness(&stale.tensor(&dev)?, &f)?);
                corr_s = Some(relative_staleness(hv.as_tensor(), &f)?);
                if nodes.train_corrector {
                    // The same candidate sets, over the corrected rows.
                    let hi = h.index();
                    let remap: Vec<u32> = cands
                        .iter()
                        .flat_map(|c| (0..m).map(move |j| c.get(j).copied().unwrap_or(c[0])))
                        .map(|r| hi.get(&fresh.ids[r]).copied().unwrap_or(0) as u32)
                        .collect();
                    let remap = Tensor::from_vec(remap, b * m, &dev).map_err(compute)?;
                    let cand_h = hv
                        .as_tensor()
                        .index_select(&remap, 0)
                        .and_then(|x| x.reshape((b, m, d)))
                        .map_err(compute)?;
                    let cand_f = f
                        .index_select(&remap, 0)
                        .and_then(|x| x.reshape((b, m, d)))
                        .map_err(compute)?;
                    let l = match objective {
                        // The drift MSE is over the distinct touched rows, each once.
                        CorrectorLoss::Mse => {
                            freshen_operators::loss::drift_mse(hv.as_tensor(), &f)?
                        }
                        _ => corrector_loss(
                            objective,
                            qv.as_tensor(),
                            &cand_h,
                            &cand_f,
                            Some(&mask),
                            spec.beta,
                        )?,
                    };
                    corr_loss = Some(f64::from(l.to_scalar::<f32>().map_err(compute)?));
                    let g = l.backward().map_err(compute)?;
                    if let Some(g) = g.get(hv.as_tensor()) {
                        out.push((0, grads_batch(corrected_node, &h.ids, g)?));
                    }
                }
            }
        }
        let candidates: usize = cands.iter().map(Vec::len).sum();
        let stats = RecordBatch::try_new(
            tables::loss_stats_schema(),
            vec![
                Arc::new(UInt64Array::from(vec![t])) as ArrayRef,
                Arc::new(UInt64Array::from(vec![b as u64])),
                Arc::new(UInt64Array::from(vec![candidates as u64])),
                Arc::new(Float64Array::from(vec![retriever])),
                Arc::new(Float64Array::from(vec![corr_loss])),
                Arc::new(Float64Array::from(vec![stale_s])),
                Arc::new(Float64Array::from(vec![corr_s])),
            ],
        )?;
        out.push((1, Batch(stats)));
        Ok(out)
    };
    let routed = inputs.into_iter().map(|s| (s, Route::Local)).collect();
    stepwise(scope, "Loss", routed, 2, logic, None, node, shared)
}
