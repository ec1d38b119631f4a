//! The corrector's part of a loss step: the staleness of the touched targets' stale and
//! corrected rows, and h's loss over those and the training subset's rows, turned into
//! gradients of the corrected rows (or, for the Procrustes objective, into the
//! cross-covariance `update` fits).

use candle_core::{Device, Tensor, Var};
use freshen_operators::host::HostRead;
use freshen_operators::loss::{corrector_loss, listwise_kl, relative_staleness, CorrectorLoss};

use super::{grads_batch, Candidates, Loss};
use crate::dataflow::{rows_of, EmbeddingRows};
use crate::error::{Error, Result};
use crate::store::batch::Batch;
use crate::store::tables::col;

/// The corrector's part of a step: its loss value, the staleness of the stale and
/// corrected rows, and the gradients of the corrected rows (if it trains).
pub(super) struct CorrectorPart {
    pub loss: Option<f64>,
    pub staleness: Option<f64>,
    pub corrected_staleness: Option<f64>,
}

/// What the corrector's part of a step reads.
pub(super) struct CorrectorCx<'a> {
    pub spec: &'a Loss,
    pub node: &'a str,
    pub train: bool,
    pub cands: &'a Candidates,
    /// The touched targets' fresh rows.
    pub fresh: &'a EmbeddingRows,
    /// Those and the training subset's.
    pub all: &'a EmbeddingRows,
    pub queries: &'a Tensor,
    pub mask: &'a Tensor,
    pub dev: &'a Device,
}

/// Staleness of the touched targets' stale and corrected rows against the fresh ones
/// and, when the corrector trains, its loss (over the training subset's rows too) and
/// the gradients of the corrected rows (into `out`).
pub(super) fn corrector_part(
    cx: &CorrectorCx,
    rows: &[Batch],
    out: &mut Vec<(usize, Batch)>,
) -> Result<CorrectorPart> {
    let mut part = CorrectorPart {
        loss: None,
        staleness: None,
        corrected_staleness: None,
    };
    let (mut h, mut stale) = (EmbeddingRows::default(), EmbeddingRows::default());
    for b in rows_of(rows) {
        h.push(b)?;
        stale.push_column(b, col::STALE)?;
    }
    if h.is_empty() {
        return Ok(part);
    }
    let fi = cx.all.index();
    let aligned: Vec<usize> = h
        .ids
        .iter()
        .map(|id| {
            fi.get(id).copied().ok_or_else(|| {
                Error::invariant(format!("corrected target `{id}` has no fresh embedding"))
            })
        })
        .collect::<Result<_>>()?;
    let f = cx.all.gather(&aligned, cx.dev)?;
    let hv = Var::from_tensor(&h.tensor(cx.dev)?)?;
    // The staleness columns are the touched targets' (the subset's follow them).
    let touched = cx.fresh.index();
    let rows: Vec<usize> = (0..h.len())
        .filter(|&r| touched.contains_key(&h.ids[r]))
        .collect();
    if !rows.is_empty() {
        let sel = Tensor::from_vec(
            rows.iter().map(|&r| r as u32).collect::<Vec<_>>(),
            rows.len(),
            cx.dev,
        )?;
        let f_t = f.index_select(&sel, 0)?;
        part.staleness = Some(relative_staleness(&stale.gather(&rows, cx.dev)?, &f_t)?);
        part.corrected_staleness = Some(relative_staleness(
            &hv.as_tensor().index_select(&sel, 0)?,
            &f_t,
        )?);
    }
    if !cx.train {
        return Ok(part);
    }
    // The same candidate sets, over the corrected rows.
    let (b, m, d) = (cx.cands.sets.len(), cx.cands.width(), h.dim);
    let hi = h.index();
    let (padded, _) = cx.cands.padded(m, true);
    let remap: Vec<u32> = padded
        .into_iter()
        .map(|r| hi.get(&cx.fresh.ids[r as usize]).copied().unwrap_or(0) as u32)
        .collect();
    let remap = Tensor::from_vec(remap, b * m, cx.dev)?;
    let cand_h = hv.as_tensor().index_select(&remap, 0)?.reshape((b, m, d))?;
    let cand_f = f.index_select(&remap, 0)?.reshape((b, m, d))?;
    let l = match cx.spec.corrector {
        // The drift MSE is over the distinct touched rows, each once.
        CorrectorLoss::Mse | CorrectorLoss::Procrustes { .. } => {
            freshen_operators::loss::drift_mse(hv.as_tensor(), &f)?
        }
        // The KL over every (query, row) pair of the step: each query's softmax over all
        // the touched and subset targets, so the positives and the other queries' hard
        // negatives shape the top of its corrected ranking too.
        CorrectorLoss::Listwise { weight } => {
            let mse = freshen_operators::loss::drift_mse(hv.as_tensor(), &f)?;
            let kl = listwise_kl(cx.queries, hv.as_tensor(), &f, None, cx.spec.beta)?;
            (mse + (kl * weight)?)?
        }
        objective => corrector_loss(
            objective,
            cx.queries,
            &cand_h,
            &cand_f,
            Some(cx.mask),
            cx.spec.beta,
        )?,
    };
    part.loss = Some(f64::from(l.host_scalar::<f32>()?));
    if let CorrectorLoss::Procrustes { .. } = cx.spec.corrector {
        // Not a gradient to step on: −g(y) per row, whose vector-Jacobian product through
        // the linear h is −g(y)ᵀ·B[y] in its weight, the cross-covariance that `update`
        // sums over the workers and fits (`update`'s Procrustes step).
        out.push((0, grads_batch(cx.node, &h.ids, &f.neg()?)?));
        return Ok(part);
    }
    let g = l.backward()?;
    if let Some(g) = g.get(hv.as_tensor()) {
        out.push((0, grads_batch(cx.node, &h.ids, g)?));
    }
    Ok(part)
}
