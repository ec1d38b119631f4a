//! The CPU's one-pass kernels for training: AdamW of a dense f32 parameter (weights,
//! both moments and the gradient read once, in one loop), and the squared norm of many
//! gradients at once.
//!
//! The arithmetic is the composed path's, in the same order and precision (each f64
//! setting rounded to f32 as candle's scalar ops round it; a gradient scale multiplied in
//! as candle's `affine` multiplies it), so the two agree to float rounding; the tests hold
//! them to 1e-6 over ten steps. Large tensors are cut into chunks that the threads of
//! rayon's pool take in turn; partial sums are added in chunk order, so a norm is the
//! same whatever the number of threads.
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

use std::sync::Mutex;

use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Tensor};
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

/// The settings of one step, shared by every parameter it moves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Step {
    pub beta1: f64,
    pub beta2: f64,
    /// Bias corrections `1 − β^t`.
    pub c1: f64,
    pub c2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// What every gradient is multiplied by first (the clipping factor; 1: none).
    pub grad_scale: f64,
}

/// One parameter's update in place, its moments borrowed from the optimiser's flat
/// buffers: per element, `g ← s·g`, `m ← β1·m + (1−β1)·g`, `v ← β2·v + (1−β2)·g²`,
/// `w ← w·(1 − lr·wd) − lr · (m/c1) / (√(v/c2) + ε)`.
struct Update<'a> {
    /// The parameter's slices of the first and second moment buffers.
    moments: Mutex<(&'a mut [f32], &'a mut [f32])>,
    beta1: f32,
    rest1: f32,
    beta2: f32,
    rest2: f32,
    /// `1 − lr·wd`.
    decay: f32,
    inv_c1: f32,
    inv_c2: f32,
    eps: f32,
    lr: f32,
    /// The gradient scale, `None` when it is 1.
    scale: Option<f32>,
}

impl InplaceOp2 for Update<'_> {
    fn name(&self) -> &'static str {
        "adamw-update"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let (w, g) = (slice_mut(s1, l1)?, slice(s2, l2)?);
        let mut moments = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused AdamW: moments poisoned".into()))?;
        let (m, v) = &mut *moments;
        if w.len() != g.len() || w.len() != m.len() || w.len() != v.len() {
            candle_core::bail!("fused AdamW: weights, moments and gradients differ in size");
        }
        w.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((w, g), m), v)| self.chunk(w, g, m, v));
        Ok(())
    }
}

impl Update<'_> {
    fn chunk(&self, w: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            let g = match self.scale {
                Some(s) => g * s,
                None => g,
            };
            *m = *m * self.beta1 + g * self.rest1;
            *v = *v * self.beta2 + (g * g) * self.rest2;
            let step = (*m * self.inv_c1) / ((*v * self.inv_c2).sqrt() + self.eps);
            *w = *w * self.decay - step * self.lr;
        }
    }
}

/// One AdamW step of a dense parameter `w` (contiguous f32 on the CPU: [`applies`]) from
/// its gradient `g`, with its moments `m`, `v` (slices of the optimiser's flat buffers)
/// updated in the same pass.
pub(super) fn step(
    w: &Tensor,
    g: &Tensor,
    m: &mut [f32],
    v: &mut [f32],
    s: &Step,
    lr: f64,
) -> crate::Result<()> {
    let update = Update {
        moments: Mutex::new((m, v)),
        beta1: s.beta1 as f32,
        rest1: (1.0 - s.beta1) as f32,
        beta2: s.beta2 as f32,
        rest2: (1.0 - s.beta2) as f32,
        decay: (1.0 - lr * s.weight_decay) as f32,
        inv_c1: (1.0 / s.c1) as f32,
        inv_c2: (1.0 / s.c2) as f32,
        eps: s.eps as f32,
        lr: lr as f32,
        scale: (s.grad_scale != 1.0).then_some(s.grad_scale as f32),
    };
    w.inplace_op2(g, &update)?;
    Ok(())
}

/// The squared L2 norm of contiguous f32 CPU tensors together, each element squared and
/// summed in f64: every tensor's chunks go to the thread pool as one list, and the
/// chunks' sums are added in order.
pub(super) fn sq_norm(tensors: &[&Tensor]) -> crate::Result<f64> {
    let guards: Vec<_> = tensors.iter().map(|t| t.storage_and_layout()).collect();
    let mut chunks: Vec<&[f32]> = Vec::new();
    for (storage, layout) in &guards {
        let candle_core::Storage::Cpu(s) = &**storage else {
            return Err(crate::Error::Setting(
                "fused norm: a CPU tensor expected".into(),
            ));
        };
        chunks.extend(slice(s, layout)?.chunks(CHUNK));
    }
    let partial: Vec<f64> = chunks
        .par_iter()
        .map(|c| c.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>())
        .collect();
    Ok(partial.iter().sum())
}
