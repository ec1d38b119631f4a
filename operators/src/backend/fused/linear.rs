//! A linear layer `x · Wᵀ + b` as one op, forward and backward (CPU, f32).
//!
//! Through candle's ops it is a matmul then a broadcast add: two `(rows, out)` tensors,
//! both kept by the autograd graph until the backward, and one more pass over memory.
//! Here the output starts as the bias and gemm accumulates `x · Wᵀ` into it: one tensor,
//! one pass. In a training forward of MiniLM that is a third of the activations a step
//! keeps (the six projections' pre-bias outputs of every layer).

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use gemm::{gemm, Parallelism};

use super::contiguous_f32;

/// The op: inputs `x (rows, in)`, `W (out, in)`, `b (out)`.
pub(crate) struct Linear;

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "freshen-linear"
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
        let (x, w, b) = (
            contiguous_f32(s1, l1, "linear x")?,
            contiguous_f32(s2, l2, "linear weight")?,
            contiguous_f32(s3, l3, "linear bias")?,
        );
        let (rows, k) = l1.shape().dims2()?;
        let (out, k2) = l2.shape().dims2()?;
        if k != k2 || b.len() != out || x.len() != rows * k || w.len() != out * k {
            candle_core::bail!(
                "linear: x {:?}, weight {:?}, bias {:?} do not fit",
                l1.shape(),
                l2.shape(),
                l3.shape()
            );
        }
        let mut y = Vec::with_capacity(rows * out);
        for _ in 0..rows {
            y.extend_from_slice(b);
        }
        if rows > 0 && out > 0 && k > 0 {
            // SAFETY: y is rows × out (row stride out), x rows × k (row stride k), and
            // Wᵀ is k × out read from W (out × k): element (i, j) at i + j·k.
            unsafe {
                gemm(
                    rows,
                    out,
                    k,
                    y.as_mut_ptr(),
                    1,
                    out as isize,
                    true,
                    x.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr(),
                    k as isize,
                    1,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::Rayon(rayon::current_num_threads()),
                );
            }
        }
        Ok((CpuStorage::F32(y), Shape::from((rows, out))))
    }

    /// dX = dY · W, dW = dYᵀ · X, db = Σ_rows dY.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dx = grad.matmul(w)?;
        let dw = grad.t()?.matmul(x)?;
        let db = grad.sum(0)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `x · Wᵀ + b` through [`Linear`] (`x` made contiguous first).
pub(crate) fn linear(x: &Tensor, w: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    x.contiguous()?
        .apply_op3(&w.contiguous()?, &b.contiguous()?, Linear)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fused::tests::{max_diff, rand};
    use candle_core::Var;

    #[test]
    fn the_fused_linear_matches_matmul_and_add_forward_and_backward() {
        let (x, w, b) = (
            Var::from_tensor(&rand(&[37, 24], 1)).unwrap(),
            Var::from_tensor(&rand(&[19, 24], 2)).unwrap(),
            Var::from_tensor(&rand(&[19], 3)).unwrap(),
        );
        let probe = rand(&[37, 19], 4);
        let fused = linear(&x, &w, &b).unwrap();
        let slow = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .broadcast_add(&b)
            .unwrap();
        assert!(max_diff(&fused, &slow) < 1e-5);
        let gf = (&fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gs = (&slow * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let d = max_diff(
                gf.get(v.as_tensor()).unwrap(),
                gs.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-4, "d{name} differs by {d}");
        }
    }
}
