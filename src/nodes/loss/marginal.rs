//! The retrieval-augmented model's objective: the negative log marginal likelihood of the
//! answer over each question's retrieved passages, `−log Σ_z p(z | q) p(a | q, z)` with
//! `p(z | q) = softmax_z(β ⟨f(q), g(z)⟩)` over the fresh embeddings of the retrieved set
//! and `p(a | q, z)` from the `read` node
//! ([`freshen_operators::loss::marginal_nll`]). Its gradients reach the query rows, the
//! fresh passage rows and the reader's log-likelihoods, which `update` carries back into
//! f, g and the reader; no passage label enters.

use candle_core::{Device, Tensor, Var};

use super::Candidates;
use crate::dataflow::{rows_of, Time};
use crate::error::{Error, Result};
use crate::store::batch::{self, Batch};
use crate::store::tables::col;

/// The `read` node's `(b, m)` log-likelihoods of the step, aligned with the candidate sets
/// (query order; passages in the sample's order), as a leaf of the loss's graph.
pub(super) fn log_likelihoods(
    t: Time,
    rows: &[Batch],
    cands: &Candidates,
    m: usize,
    dev: &Device,
) -> Result<Var> {
    let mut by_query = std::collections::HashMap::new();
    for b in rows_of(rows) {
        let ids = batch::strings(b, col::ID)?;
        let (values, k) = batch::vectors_of(b, crate::graph::ports::LOG_LIK)?;
        for r in 0..b.num_rows() {
            by_query.insert(ids.value(r).to_string(), &values[r * k..(r + 1) * k]);
        }
    }
    let mut out = Vec::with_capacity(cands.query_ids.len() * m);
    for id in &cands.query_ids {
        let row = by_query.get(id).ok_or_else(|| {
            Error::invariant(format!("question `{id}` has no reader scores at step {t}"))
        })?;
        if row.len() != m {
            return Err(Error::invariant(format!(
                "question `{id}`: the reader scored {} passages, the loss has {m}",
                row.len()
            )));
        }
        out.extend_from_slice(row);
    }
    Ok(Var::from_tensor(&Tensor::from_vec(
        out,
        (cands.query_ids.len(), m),
        dev,
    )?)?)
}

/// The mean negative log marginal likelihood of the step: scores of `q: (b, d)` against
/// its passages `targets: (b, m, d)`, the reader's `log_lik: (b, m)`, `mask: (b, m)`.
pub(super) fn loss(
    q: &Tensor,
    targets: &Tensor,
    log_lik: &Tensor,
    mask: &Tensor,
    beta: f64,
) -> Result<Tensor> {
    let scores = freshen_operators::loss::candidate_scores(q, targets, "marginal likelihood")?;
    Ok(freshen_operators::loss::marginal_nll(
        &scores,
        log_lik,
        Some(mask),
        beta,
    )?)
}
