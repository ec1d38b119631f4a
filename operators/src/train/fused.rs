//! AdamW of a dense f32 parameter on the CPU in three in-place passes (first moment,
//! second moment, weights) instead of a chain of tensor ops that each allocate; and the
//! squared norm of a gradient in one pass.
//!
//! The arithmetic is the composed path's, in the same order and precision (each f64
//! setting rounded to f32 as candle's scalar ops round it), so the two agree to float
//! rounding; the tests hold them to 1e-6 over ten steps. Large tensors are cut into
//! chunks that the threads of rayon's pool take in turn.
//!
//! ```
//! use candle_core::{Device, Tensor, Var};
//! use freshen_operators::train::{AdamW, AdamWConfig, Grad, Gradients};
//!
//! let w = Var::from_tensor(&Tensor::ones(4, candle_core::DType::F32, &Device::Cpu)?)?;
//! let mut grads = Gradients::default();
//! grads.insert("w".to_string(), Grad::Dense(Tensor::new(&[1f32, -1., 0., 2.], &Device::Cpu)?));
//! let mut opt = AdamW::new(AdamWConfig::default());
//! opt.step(&[("w".to_string(), w.clone())], &grads, &|_| 0.1)?;
//! // The first step moves each weight by lr against its gradient's sign (and decays it).
//! let v = w.as_tensor().to_vec1::<f32>()?;
//! assert!((v[0] - (0.999 - 0.1)).abs() < 1e-5 && (v[1] - (0.999 + 0.1)).abs() < 1e-5);
//! # Ok::<(), freshen_operators::Error>(())
//! ```

use candle_core::{CpuStorage, DType, Device, InplaceOp2, InplaceOp3, Layout, Tensor};
use rayon::prelude::*;

/// Elements a thread takes at a time.
const CHUNK: usize = 1 << 16;

/// Whether the fused passes apply: every tensor on the CPU, f32 and contiguous.
pub(super) fn applies(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| matches!(t.device(), Device::Cpu) && t.dtype() == DType::F32 && t.is_contiguous())
}

/// The contiguous f32 elements of a storage under `layout`.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&v[a..b]),
        _ => candle_core::bail!("fused AdamW: expected a contiguous f32 tensor"),
    }
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((a, b))) => Ok(&mut v[a..b]),
        _ => candle_core::bail!("fused AdamW: expected a contiguous f32 tensor"),
    }
}

/// An exponential moving average in place: `x ← decay·x + (1 − decay)·g` (or `·g²`).
struct Ema {
    /// `decay` as f32.
    decay: f32,
    /// `1 − decay`, computed in f64, as f32.
    rest: f32,
    /// Average the squares of the gradient (the second moment).
    square: bool,
}

impl InplaceOp2 for Ema {
    fn name(&self) -> &'static str {
        "adamw-moment"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (x, g) = (slice_mut(s1, l1)?, slice(s2, l2)?);
        if x.len() != g.len() {
            candle_core::bail!("fused AdamW: {} moments for {} gradients", x.len(), g.len());
        }
        let (decay, rest, square) = (self.decay, self.rest, self.square);
        x.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .for_each(|(x, g)| {
                for (x, &g) in x.iter_mut().zip(g) {
                    let g = if square { g * g } else { g };
                    *x = *x * decay + g * rest;
                }
            });
        Ok(())
    }
}

/// The weight update in place: `w ← w·(1 − lr·wd) − lr · (m/c1) / (√(v/c2) + ε)`.
struct Apply {
    /// `1 − lr·wd`.
    decay: f32,
    /// `1/c1`, `1/c2`.
    inv_c1: f32,
    inv_c2: f32,
    eps: f32,
    lr: f32,
}

impl InplaceOp3 for Apply {
    fn name(&self) -> &'static str {
        "adamw-apply"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<()> {
        let (w, m, v) = (slice_mut(s1, l1)?, slice(s2, l2)?, slice(s3, l3)?);
        if w.len() != m.len() || w.len() != v.len() {
            candle_core::bail!("fused AdamW: weights, moments and gradients differ in size");
        }
        let a = self;
        w.par_chunks_mut(CHUNK)
            .zip(m.par_chunks(CHUNK))
            .zip(v.par_chunks(CHUNK))
            .for_each(|((w, m), v)| {
                for ((w, &m), &v) in w.iter_mut().zip(m).zip(v) {
                    let step = (m * a.inv_c1) / ((v * a.inv_c2).sqrt() * 1.0 + a.eps);
                    *w = *w * a.decay - step * a.lr;
                }
            });
        Ok(())
    }
}

/// The settings of one fused step.
pub(super) struct Step {
    pub beta1: f64,
    pub beta2: f64,
    /// Bias corrections `1 − β^t`.
    pub c1: f64,
    pub c2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub lr: f64,
}

/// One AdamW step of a dense parameter: the moments `m`, `v` and the weights `w` updated
/// in place from the gradient `g` (all contiguous f32 on the CPU: [`applies`]).
pub(super) fn step(w: &Tensor, m: &Tensor, v: &Tensor, g: &Tensor, s: &Step) -> crate::Result<()> {
    let ema = |decay: f64, square| Ema {
        decay: decay as f32,
        rest: (1.0 - decay) as f32,
        square,
    };
    m.inplace_op2(g, &ema(s.beta1, false))?;
    v.inplace_op2(g, &ema(s.beta2, true))?;
    let apply = Apply {
        decay: (1.0 - s.lr * s.weight_decay) as f32,
        inv_c1: (1.0 / s.c1) as f32,
        inv_c2: (1.0 / s.c2) as f32,
        eps: s.eps as f32,
        lr: s.lr as f32,
    };
    w.inplace_op3(m, v, &apply)?;
    Ok(())
}

/// The squared L2 norm of a contiguous f32 CPU tensor, summed in f64 in one pass.
pub(super) fn sq_norm(t: &Tensor) -> crate::Result<f64> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(s) = &*storage else {
        return Err(crate::Error::Setting(
            "fused norm: a CPU tensor expected".into(),
        ));
    };
    let x = slice(s, layout)?;
    Ok(x.iter().map(|&v| f64::from(v) * f64::from(v)).sum())
}
