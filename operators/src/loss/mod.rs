//! The losses of a training step, and the staleness diagnostics.
//!
//! # Losses
//!
//! * [`retriever_loss`]: cross-entropy of the positive over the truncated candidate set
//!   {positive} ∪ negatives, with scores `β·<q, t>`. Gradients flow into the queries and
//!   the (fresh) target embeddings, hence into f and g.
//! * [`retriever_loss_in_batch`]: the same with the other queries' positives as extra
//!   negatives (the in-batch baseline, or in-batch negatives on top of mined ones).
//! * [`drift_mse`] / [`drift_mse_masked`]: the corrector's drift loss
//!   `mean_rows ||h(B[y]) − stopgrad(g(y))||²`. The fresh side is detached inside, so the
//!   corrector loss can never pull the target encoder towards the corrector.
//! * [`corrector_task_loss`]: the truncated softmax with stop-gradient queries against the
//!   corrected embeddings of the same candidate set. The queries are detached inside, so
//!   the corrector's objective never moves the query encoder.
//! * [`listwise_kl`]: KL of the queries' softmax over the corrected targets from the one
//!   over the fresh targets (queries and fresh side detached): the ranking's top, distilled.
//! * [`corrector_loss`]: the corrector objective chosen by a [`CorrectorLoss`] setting.
//!
//! Every loss returns the mean over its rows as a scalar tensor of the inputs' dtype, and
//! uses a numerically stable log-softmax: the row maximum is subtracted first, and it is
//! detached, because log-softmax does not depend on a constant shift, so its exact
//! gradient through the maximum is zero (differentiating candle's `max` would only add
//! rounding noise, spread over tied maxima).
//!
//! # Masks
//!
//! Ragged candidate sets are padded to a common width and come with a `(b, m)` mask of 1
//! (valid) and 0 (padding), in any dtype. Masked logits are replaced by exactly
//! [`MASKED_LOGIT`] (computed as `logit·mask + (mask − 1)·1e9`, so valid logits are kept
//! bit for bit and padded candidates get exactly zero gradient). Masks are checked on the
//! host (they are small): every value must be 0 or 1 and, for the truncated softmax, the
//! positive (column 0) must be valid, otherwise the loss would be meaningless.
//!
//! # Diagnostics
//!
//! [`relative_staleness`] and [`softmax_kl`] return plain `f64`s computed in double
//! precision; they are for logging and tests, not for backpropagation.

use crate::host::HostRead;
use candle_core::{DType, Tensor, D};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod kl;
#[cfg(test)]
mod tests;

pub use kl::SoftmaxKlPart;

/// The logit given to masked-out candidates: `exp` of it (after subtracting a finite row
/// maximum) is exactly zero in f32 and f64, while it stays finite so no `inf − inf` NaN
/// can appear.
pub const MASKED_LOGIT: f64 = -1e9;

/// Which objective trains the corrector (see [`corrector_loss`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CorrectorLoss {
    /// The drift MSE only (the paper's loss; the default).
    #[default]
    Mse,
    /// The task loss only: the truncated softmax of stop-gradient queries against the
    /// corrected candidates.
    Task,
    /// `mse + task_weight · task`.
    Both {
        /// Weight of the task term.
        task_weight: f64,
    },
    /// `mse + weight · KL(P_g ‖ P_h)`: the drift MSE plus [`listwise_kl`], the KL of
    /// each query's softmax over the targets under h(B) from the one under fresh g, so h
    /// learns the order at the top of the ranking (where negatives are picked), not only
    /// the bulk the MSE measures. In a training step the KL is over every (query, touched
    /// or subset target) pair of the step.
    Listwise {
        /// Weight of the KL term.
        #[serde(default = "default_listwise_weight")]
        weight: f64,
    },
    /// No gradient step: a linear h (`depth: 0`, `norm: none`) is set each step to the
    /// orthogonal Procrustes fit `R = polar(M)` of the rows seen, `M` the cross-covariance
    /// `Bᵀ·g` of the touched (and subset) rows, decayed by `decay` a step: the drift
    /// adapters' orthogonal map. Its reported loss is the drift MSE.
    Procrustes {
        /// Weight of the previous steps' rows in `M` (0: this step's only).
        #[serde(default = "default_decay")]
        decay: f64,
    },
}

fn default_decay() -> f64 {
    0.9
}

fn default_listwise_weight() -> f64 {
    1.0
}

fn setting(msg: String) -> Error {
    Error::Setting(msg)
}

fn check_beta(beta: f64) -> Result<()> {
    crate::ranges::finite_positive("beta", beta)
}

impl CorrectorLoss {
    /// Checks the objective's own setting (`task_weight` of `both`: finite, ≥ 0).
    pub fn validate(&self) -> Result<()> {
        match self {
            CorrectorLoss::Both { task_weight } => {
                crate::ranges::finite_non_negative("both.task_weight", *task_weight)
            }
            CorrectorLoss::Listwise { weight } => {
                crate::ranges::finite_non_negative("listwise.weight", *weight)
            }
            CorrectorLoss::Procrustes { decay } => {
                crate::ranges::finite_non_negative("procrustes.decay", *decay)?;
                match *decay < 1.0 {
                    true => Ok(()),
                    false => Err(crate::ranges::field_error(
                        "procrustes.decay",
                        format!("`decay` is {decay} (expected less than 1)"),
                    )),
                }
            }
            _ => Ok(()),
        }
    }
}

/// Checks the settings of a loss: β finite and > 0, and the corrector's objective.
pub fn validate(beta: f64, objective: CorrectorLoss) -> Result<()> {
    check_beta(beta)?;
    objective.validate()
}

/// Checks that `mask` has shape `(b, m)` and only 0/1 values (and, with `positive_first`,
/// that column 0 is all 1); returns the number of valid entries.
fn check_mask(mask: &Tensor, b: usize, m: usize, positive_first: bool) -> Result<usize> {
    if mask.dims() != [b, m] {
        return Err(setting(format!(
            "loss: mask has shape {:?}, expected [{b}, {m}]",
            mask.dims()
        )));
    }
    let values: Vec<Vec<f64>> = mask.to_dtype(DType::F64)?.host_vec2()?;
    let mut valid = 0;
    for (row, vs) in values.iter().enumerate() {
        for (col, &v) in vs.iter().enumerate() {
            if v == 1.0 {
                valid += 1;
            } else if v != 0.0 {
                return Err(setting(format!(
                    "loss: mask values must be 0 or 1, got {v} at ({row}, {col})"
                )));
            } else if col == 0 && positive_first {
                return Err(setting(format!(
                    "loss: the positive (column 0) of row {row} is masked out"
                )));
            }
        }
    }
    Ok(valid)
}

/// `logits·mask + (mask − 1)·1e9`: valid logits unchanged, masked ones exactly
/// [`MASKED_LOGIT`] with zero gradient.
fn apply_mask(logits: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(logits.dtype())?.to_device(logits.device())?;
    let penalty = ((&mask - 1.0)? * -MASKED_LOGIT)?;
    Ok(logits.mul(&mask)?.add(&penalty)?)
}

/// Row-wise log-softmax over the last dimension, with the (detached) row max subtracted
/// (differentiable).
pub fn log_softmax_rows(logits: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_sum = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    Ok(shifted.broadcast_sub(&log_sum)?)
}

/// `(b, m)` scores `<q_i, t_ij>` of `q: (b, d)` against `targets: (b, m, d)`; `what`
/// names the caller in errors.
pub fn candidate_scores(q: &Tensor, targets: &Tensor, what: &str) -> Result<Tensor> {
    let (b, d) = q.dims2()?;
    let (tb, m, td) = targets.dims3()?;
    if (tb, td) != (b, d) {
        return Err(setting(format!(
            "{what}: candidates have shape {:?}, expected [{b}, m, {d}] for queries of shape {:?}",
            targets.dims(),
            q.dims()
        )));
    }
    if b == 0 || m == 0 {
        return Err(setting(format!(
            "{what}: needs at least one query and one candidate, got shape {:?}",
            targets.dims()
        )));
    }
    Ok(targets.matmul(&q.unsqueeze(2)?)?.squeeze(2)?)
}

/// Truncated-softmax cross-entropy of the positive over {positive} ∪ negatives, scores
/// `β·<q, t>`.
///
/// `q: (b, d)`; `targets: (b, m, d)` where index 0 along `m` is the positive; optional
/// `mask: (b, m)` of valid candidates (1/0) for ragged negative sets (see the module docs).
/// Returns the mean over the `b` queries as a scalar tensor, differentiable w.r.t. `q` and
/// `targets`.
pub fn retriever_loss(
    q: &Tensor,
    targets: &Tensor,
    mask: Option<&Tensor>,
    beta: f64,
) -> Result<Tensor> {
    check_beta(beta)?;
    let logits = (candidate_scores(q, targets, "retriever loss")? * beta)?;
    let logits = match mask {
        Some(mask) => {
            let (b, m) = logits.dims2()?;
            check_mask(mask, b, m, true)?;
            apply_mask(&logits, mask)?
        }
        None => logits,
    };
    let log_p = log_softmax_rows(&logits)?;
    Ok(log_p.narrow(1, 0, 1)?.neg()?.mean_all()?)
}

/// The truncated softmax with in-batch negatives.
///
/// `q: (b, d)`, `pos: (b, d)` (query i's positive is row i), optional extra negatives
/// `negs: (b, k, d)` with an optional `neg_mask: (b, k)` (1/0). Query i is scored against
/// its own positive, the other `b − 1` positives, and its own `k` negatives; the loss is
/// the mean cross-entropy of its positive. Differentiable w.r.t. `q`, `pos` and `negs`.
///
/// If two queries share a positive, each sees the other's copy as a negative: dedupe the
/// batch beforehand if that matters.
pub fn retriever_loss_in_batch(
    q: &Tensor,
    pos: &Tensor,
    negs: Option<&Tensor>,
    neg_mask: Option<&Tensor>,
    beta: f64,
) -> Result<Tensor> {
    check_beta(beta)?;
    let (b, d) = q.dims2()?;
    if pos.dims() != [b, d] || b == 0 {
        return Err(setting(format!(
            "in-batch loss: positives have shape {:?}, expected [{b}, {d}] (b ≥ 1)",
            pos.dims()
        )));
    }
    // (b, b): row i holds query i against every positive; its own is on the diagonal.
    let in_batch = (q.matmul(&pos.t()?)? * beta)?;
    let logits = match negs {
        Some(negs) => {
            let own = (candidate_scores(q, negs, "in-batch loss")? * beta)?;
            let own = match neg_mask {
                Some(mask) => {
                    check_mask(mask, b, own.dim(1)?, false)?;
                    apply_mask(&own, mask)?
                }
                None => own,
            };
            Tensor::cat(&[&in_batch, &own], 1)?
        }
        None if neg_mask.is_some() => {
            return Err(setting(
                "in-batch loss: a negative mask was given without negatives".into(),
            ))
        }
        None => in_batch,
    };
    let log_p = log_softmax_rows(&logits)?;
    let eye = Tensor::eye(b, log_p.dtype(), log_p.device())?;
    let own_positive = log_p.narrow(1, 0, b)?.mul(&eye)?.sum(1)?;
    Ok(own_positive.neg()?.mean_all()?)
}

/// The negative log marginal likelihood of a retrieval-augmented model with retrieval as a
/// latent variable: for each query `i`,
///
/// ```text
/// −log Σ_z p(z | q_i) · p(a_i | q_i, z),   p(z | q_i) = softmax_z(β · scores[i, z])
/// ```
///
/// over the `k` retrieved passages of row `i`, computed as
/// `−logsumexp_z(log_softmax(β·scores)_z + log_lik[i, z])`. `scores: (b, k)` are the
/// retrieval scores `⟨f(q), g(z)⟩`; `log_lik: (b, k)` the reader's `log p(a | q, z)`; an
/// optional `mask: (b, k)` (1/0) drops padded passages. Returns the mean over queries,
/// differentiable in both: the gradient of row `i` with respect to `scores[i, z]` is
/// `−β (posterior_z − prior_z)`, so retrieval learns to rank the passages that explain the
/// answer, with no passage labels.
pub fn marginal_nll(
    scores: &Tensor,
    log_lik: &Tensor,
    mask: Option<&Tensor>,
    beta: f64,
) -> Result<Tensor> {
    check_beta(beta)?;
    let (b, k) = scores.dims2()?;
    if log_lik.dims() != [b, k] || b == 0 || k == 0 {
        return Err(setting(format!(
            "marginal likelihood: scores {:?} and reader log-likelihoods {:?} must both be \
             (b, k) with b, k ≥ 1",
            scores.dims(),
            log_lik.dims()
        )));
    }
    let logits = (scores * beta)?;
    let logits = match mask {
        Some(mask) => {
            check_mask(mask, b, k, false)?;
            apply_mask(&logits, mask)?
        }
        None => logits,
    };
    let joint = (log_softmax_rows(&logits)? + log_lik)?;
    let max = joint.max_keepdim(D::Minus1)?.detach();
    let log_marginal = (joint
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + max)?;
    Ok(log_marginal.neg()?.mean_all()?)
}

/// Corrector drift loss: mean over rows of `||h(B[y]) − stopgrad(g(y))||²` (the fresh side
/// is detached inside). Rows are everything but the last dimension, so `(n, d)` and
/// `(b, m, d)` both work; the shapes must be equal.
pub fn drift_mse(corrected: &Tensor, fresh: &Tensor) -> Result<Tensor> {
    drift_mse_masked(corrected, fresh, None)
}

/// [`drift_mse`] over the valid rows only: `mask` has the shape of the leading dimensions
/// (`(b, m)` for `(b, m, d)` inputs) and holds 1/0; the mean is over the rows marked 1
/// (padding neither counts nor receives gradient).
pub fn drift_mse_masked(
    corrected: &Tensor,
    fresh: &Tensor,
    mask: Option<&Tensor>,
) -> Result<Tensor> {
    if corrected.dims() != fresh.dims() || corrected.rank() < 2 {
        return Err(setting(format!(
            "drift loss: corrected {:?} and fresh {:?} must have one equal shape of rank ≥ 2",
            corrected.dims(),
            fresh.dims()
        )));
    }
    let dims = corrected.dims();
    let lead = &dims[..dims.len() - 1];
    let rows: usize = lead.iter().product();
    if rows == 0 {
        return Err(setting("drift loss: no rows".into()));
    }
    let sq = (corrected - fresh.detach())?
        .sqr()?
        .sum(D::Minus1)?
        .reshape(rows)?;
    match mask {
        None => Ok(sq.mean_all()?),
        Some(mask) => {
            if mask.dims() != lead {
                return Err(setting(format!(
                    "drift loss: mask has shape {:?}, expected {lead:?}",
                    mask.dims()
                )));
            }
            let flat = mask.reshape((1, rows))?;
            let valid = check_mask(&flat, 1, rows, false)?;
            if valid == 0 {
                return Err(setting("drift loss: every row is masked out".into()));
            }
            let weights = flat.reshape(rows)?.to_dtype(sq.dtype())?;
            Ok((sq.mul(&weights)?.sum_all()? / valid as f64)?)
        }
    }
}

/// Corrector task loss: [`retriever_loss`] of stop-gradient queries (detached inside)
/// against the corrected embeddings of the same candidate set (index 0 the positive).
pub fn corrector_task_loss(
    q: &Tensor,
    corrected_targets: &Tensor,
    mask: Option<&Tensor>,
    beta: f64,
) -> Result<Tensor> {
    retriever_loss(&q.detach(), corrected_targets, mask, beta)
}

/// Listwise distillation of the fresh ranking into the corrected one: the mean over rows
/// of `KL(softmax(β·s_fresh) ‖ softmax(β·s_corrected))`, with `s` the `(b, m)` scores of
/// `q: (b, d)` against `(b, m, d)` candidates (or against the same `(n, d)` rows for every
/// query), optional `mask: (b, m)` for ragged sets. The queries and the fresh side are
/// detached inside, so only `corrected` gets a gradient: `β·(P_h − P_g)` per score, which
/// is largest where either softmax has mass — the ranking's top.
pub fn listwise_kl(
    q: &Tensor,
    corrected: &Tensor,
    fresh: &Tensor,
    mask: Option<&Tensor>,
    beta: f64,
) -> Result<Tensor> {
    check_beta(beta)?;
    if corrected.dims() != fresh.dims() {
        return Err(setting(format!(
            "listwise loss: corrected {:?} and fresh {:?} differ in shape",
            corrected.dims(),
            fresh.dims()
        )));
    }
    let q = q.detach();
    let scores = |t: &Tensor| -> Result<Tensor> {
        match t.rank() {
            2 => Ok(q.matmul(&t.t()?)?),
            _ => candidate_scores(&q, t, "listwise loss"),
        }
    };
    let (a, s) = (
        (scores(&fresh.detach())? * beta)?,
        (scores(corrected)? * beta)?,
    );
    let (a, s) = match mask {
        Some(mask) => {
            let (b, m) = a.dims2()?;
            check_mask(mask, b, m, false)?;
            (apply_mask(&a, mask)?, apply_mask(&s, mask)?)
        }
        None => (a, s),
    };
    let log_p = log_softmax_rows(&a)?;
    let log_q = log_softmax_rows(&s)?;
    let kl = log_p.exp()?.mul(&(log_p - log_q)?)?.sum(D::Minus1)?;
    Ok(kl.mean_all()?)
}

/// The corrector objective `kind` on a truncated candidate set: `q: (b, d)` queries
/// (detached inside), `corrected: (b, m, d)` = h(B[y]) of the candidates, `fresh: (b, m, d)`
/// = g(y) of the same candidates (detached inside), optional `mask: (b, m)`. Gradients
/// reach only what `corrected` was computed from.
pub fn corrector_loss(
    kind: CorrectorLoss,
    q: &Tensor,
    corrected: &Tensor,
    fresh: &Tensor,
    mask: Option<&Tensor>,
    beta: f64,
) -> Result<Tensor> {
    match kind {
        CorrectorLoss::Mse | CorrectorLoss::Procrustes { .. } => {
            drift_mse_masked(corrected, fresh, mask)
        }
        CorrectorLoss::Task => corrector_task_loss(q, corrected, mask, beta),
        CorrectorLoss::Both { task_weight } => {
            kind.validate()?;
            // Checked here too, so a bad fresh shape fails whatever the weight.
            let mse = drift_mse_masked(corrected, fresh, mask)?;
            let task = corrector_task_loss(q, corrected, mask, beta)?;
            Ok((mse + (task * task_weight)?)?)
        }
        CorrectorLoss::Listwise { weight } => {
            kind.validate()?;
            let mse = drift_mse_masked(corrected, fresh, mask)?;
            let kl = listwise_kl(q, corrected, fresh, mask, beta)?;
            Ok((mse + (kl * weight)?)?)
        }
    }
}

/// Rows (everything but the last dimension) of a tensor as f64 vectors.
fn host_rows(t: &Tensor) -> Result<Vec<Vec<f64>>> {
    let last = t.dim(D::Minus1)?;
    let rows: usize = t.dims()[..t.rank() - 1].iter().product();
    Ok(t.to_dtype(DType::F64)?.reshape((rows, last))?.host_vec2()?)
}

/// Relative staleness: mean over rows of `||a − fresh||² / ||fresh||²` (in f64). Rows are
/// everything but the last dimension; the shapes must be equal. A zero fresh row makes the
/// result non-finite.
pub fn relative_staleness(a: &Tensor, fresh: &Tensor) -> Result<f64> {
    if a.dims() != fresh.dims() || a.rank() < 1 {
        return Err(setting(format!(
            "relative staleness: shapes {:?} and {:?} differ",
            a.dims(),
            fresh.dims()
        )));
    }
    let (ra, rf) = (host_rows(a)?, host_rows(fresh)?);
    if ra.is_empty() {
        return Err(setting("relative staleness: no rows".into()));
    }
    let sum: f64 = ra
        .iter()
        .zip(&rf)
        .map(|(x, y)| {
            let num: f64 = x.iter().zip(y).map(|(a, b)| (a - b) * (a - b)).sum();
            let den: f64 = y.iter().map(|b| b * b).sum();
            num / den
        })
        .sum();
    Ok(sum / ra.len() as f64)
}

/// Log-softmax of `β·row` in f64 (row max subtracted); `-inf` entries stay `-inf`.
fn host_log_softmax(row: &[f64], beta: f64) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(beta * x));
    let log_sum = row
        .iter()
        .map(|&x| (beta * x - max).exp())
        .sum::<f64>()
        .ln();
    row.iter().map(|&x| beta * x - max - log_sum).collect()
}

/// `KL(P ‖ Q)` between `P = softmax(β·scores_p)` and `Q = softmax(β·scores_q)` row by row
/// (over the last dimension), averaged over rows; computed in f64. Terms with `P = 0` count
/// 0, so `-inf` scores may mark candidates absent from P (absent from Q where P > 0 gives
/// `inf`, as it should). Every row needs at least one finite score.
pub fn softmax_kl(scores_p: &Tensor, scores_q: &Tensor, beta: f64) -> Result<f64> {
    check_beta(beta)?;
    if scores_p.dims() != scores_q.dims() || scores_p.rank() < 1 {
        return Err(setting(format!(
            "softmax KL: shapes {:?} and {:?} differ",
            scores_p.dims(),
            scores_q.dims()
        )));
    }
    let (rp, rq) = (host_rows(scores_p)?, host_rows(scores_q)?);
    if rp.is_empty() || rp[0].is_empty() {
        return Err(setting(format!(
            "softmax KL: no rows or no columns in shape {:?}",
            scores_p.dims()
        )));
    }
    let mut total = 0.0;
    for (row, (p, q)) in rp.iter().zip(&rq).enumerate() {
        if !p.iter().any(|x| x.is_finite()) || !q.iter().any(|x| x.is_finite()) {
            return Err(setting(format!(
                "softmax KL: row {row} has no finite score"
            )));
        }
        let (lp, lq) = (host_log_softmax(p, beta), host_log_softmax(q, beta));
        total += lp
            .iter()
            .zip(&lq)
            .filter(|(a, _)| **a > f64::NEG_INFINITY)
            .map(|(a, b)| a.exp() * (a - b))
            .sum::<f64>();
    }
    Ok(total / rp.len() as f64)
}
