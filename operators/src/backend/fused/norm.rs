//! Layer norm over the last dimension (f32): the row kernels, forward and backward, and
//! the differentiable op built on them.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::wide::wide_fn;
use super::{contiguous_f32, host, sum_lanes, ROWS_PER_TASK};

/// Layer norm of the rows of `x` (row width `w.len()`), one pass per row.
pub(crate) fn norm_rows(x: &[f32], w: &[f32], b: &[f32], eps: f32) -> Vec<f32> {
    let h = w.len();
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(h * ROWS_PER_TASK)
        .zip(x.par_chunks(h * ROWS_PER_TASK))
        .for_each(|(o, x)| norm_into(o, x, w, b, eps));
    out
}

wide_fn! {
    /// [`norm_rows`] of the rows of `x` into `o`, on one thread.
    pub(super) fn norm_into(o: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
        norm_into_body(o, x, w, b, eps)
    }
}

/// [`norm_into`]'s body.
#[inline(always)]
pub(super) fn norm_into_body(o: &mut [f32], x: &[f32], w: &[f32], b: &[f32], eps: f32) {
    let h = w.len();
    for (o, x) in o.chunks_mut(h).zip(x.chunks(h)) {
        let (mean, rstd) = moments(x, eps);
        for j in 0..h {
            o[j] = (x[j] - mean) * rstd * w[j] + b[j];
        }
    }
}

/// The layer norm's backward from its input rows `xs` and the output's gradient `gs`:
/// `(∂x, ∂w, ∂b)`, the weight's sums added up per task in task order (the result does
/// not depend on the thread count).
pub(crate) fn norm_backward_rows(
    xs: &[f32],
    ws: &[f32],
    gs: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let h = ws.len();
    let chunk = h * ROWS_PER_TASK;
    let mut gx = vec![0f32; xs.len()];
    // Per task: partial sums of ∂w and ∂b, added up afterwards in task order (a
    // fixed order: the result does not depend on the thread count).
    let partial: Vec<(Vec<f32>, Vec<f32>)> = gx
        .par_chunks_mut(chunk)
        .zip(xs.par_chunks(chunk).zip(gs.par_chunks(chunk)))
        .map(|(gx, (x, g))| norm_backward_chunk(gx, x, g, ws, eps))
        .collect();
    let (mut gw, mut gb) = (vec![0f32; h], vec![0f32; h]);
    for (pw, pb) in partial {
        for j in 0..h {
            gw[j] += pw[j];
            gb[j] += pb[j];
        }
    }
    (gx, gw, gb)
}

wide_fn! {
    /// One task's rows of the layer norm's backward: ∂x into `gx`, and its partial sums
    /// of ∂w and ∂b.
    fn norm_backward_chunk(
        gx: &mut [f32],
        x: &[f32],
        g: &[f32],
        ws: &[f32],
        eps: f32,
    ) -> (Vec<f32>, Vec<f32>) {
        let h = ws.len();
        let (mut gw, mut gb) = (vec![0f32; h], vec![0f32; h]);
        let mut xhat = vec![0f32; h];
        for (gx, (x, g)) in gx.chunks_mut(h).zip(x.chunks(h).zip(g.chunks(h))) {
            let (mean, rstd) = moments(x, eps);
            for j in 0..h {
                xhat[j] = (x[j] - mean) * rstd;
                gw[j] += g[j] * xhat[j];
                gb[j] += g[j];
            }
            // The two row sums with partial sums per lane: one running sum each would
            // keep this loop scalar.
            let s1 = sum_lanes(h, |j| g[j] * ws[j]);
            let s2 = sum_lanes(h, |j| g[j] * ws[j] * xhat[j]);
            let (m1, m2) = (s1 / h as f32, s2 / h as f32);
            for j in 0..h {
                gx[j] = (g[j] * ws[j] - m1 - xhat[j] * m2) * rstd;
            }
        }
        (gw, gb)
    }
}

pub(super) struct LayerNorm {
    pub(super) eps: f32,
}

/// Mean and 1/σ of one row (sums with partial sums per lane, which vectorise).
#[inline(always)]
fn moments(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = sum_lanes(row.len(), |j| row[j]) / n;
    let var = sum_lanes(row.len(), |j| (row[j] - mean) * (row[j] - mean)) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "freshen-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "layer norm")?;
        let w = contiguous_f32(s2, l2, "layer norm weight")?;
        let b = contiguous_f32(s3, l3, "layer norm bias")?;
        let out = norm_rows(x, w, b, self.eps);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// With x̂ = (x - μ)/σ and ĝ = g ⊙ w: ∂x = (ĝ - mean(ĝ) - x̂ · mean(ĝ ⊙ x̂)) / σ,
    /// ∂w = Σ_rows g ⊙ x̂, ∂b = Σ_rows g.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (xs, ws, gs) = (host(x)?, host(w)?, host(grad)?);
        let (gx, gw, gb) = norm_backward_rows(&xs, &ws, &gs, self.eps);
        let h = ws.len();
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(gx, x.shape(), dev)?),
            Some(Tensor::from_vec(gw, h, dev)?),
            Some(Tensor::from_vec(gb, h, dev)?),
        ))
    }
}
