//! AdamW with decoupled weight decay, dense and row-sparse ("lazy") updates.

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::fused::Step;
use super::moments::Moments;
use super::{Grad, Gradients};
use crate::{Error, Result};

/// Each parameter's first and second moments, by name, sorted by name: the optimiser
/// state a resumable checkpoint keeps.
pub type NamedMoments = Vec<(String, Tensor, Tensor)>;

/// Settings of [`AdamW`] (PyTorch's defaults, weight decay included).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay of dense parameters (row-sparse tables get none, like
    /// PyTorch's SparseAdam: decaying only the touched rows would make the decay depend on
    /// how often a row is seen).
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

/// AdamW over named parameters. Dense gradients update the whole parameter; row gradients
/// update only their rows, moments included, with the bias correction of the global step
/// count (so a rarely seen row takes the same size of step as a frequent one).
///
/// The moments of dense f32 CPU parameters live in two flat buffers
/// ([`super::moments`]), and each such parameter takes one fused pass that reads its
/// gradient once and writes its weights and both moments; the others take candle's
/// composed tensor ops.
pub struct AdamW {
    cfg: AdamWConfig,
    steps: u64,
    moments: Moments,
}

impl AdamW {
    /// A fresh optimiser (no moments yet).
    pub fn new(cfg: AdamWConfig) -> Self {
        Self {
            cfg,
            steps: 0,
            moments: Moments::default(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// A copy of the state: the step count and each parameter's first and second moments,
    /// by name (what a resumable checkpoint keeps).
    pub fn export(&self) -> Result<(u64, NamedMoments)> {
        Ok((self.steps, self.moments.export()?))
    }

    /// Sets the state to one [`AdamW::export`] gave: the next step continues exactly where
    /// that optimiser stopped.
    pub fn import(&mut self, steps: u64, moments: NamedMoments) {
        self.steps = steps;
        self.moments = Moments::import(moments);
    }

    /// One step: every parameter of `params` that has a gradient in `grads` moves, with the
    /// learning rate `lr(name)`.
    pub fn step(
        &mut self,
        params: &[(String, Var)],
        grads: &Gradients,
        lr: &dyn Fn(&str) -> f64,
    ) -> Result<()> {
        self.step_scaled(params, grads, lr, 1.0)
    }

    /// [`AdamW::step`] with every gradient multiplied by `grad_scale` first (a clipping
    /// factor from [`Gradients::clip_factor`]), inside the update's own pass where it is
    /// fused: the same weights as scaling the gradients and then stepping.
    pub fn step_scaled(
        &mut self,
        params: &[(String, Var)],
        grads: &Gradients,
        lr: &dyn Fn(&str) -> f64,
        grad_scale: f64,
    ) -> Result<()> {
        self.step_with(params, grads, lr, grad_scale, true)
    }

    /// [`AdamW::step_scaled`], with the fused passes allowed or not (`fused: false` is the
    /// per-tensor reference the tests hold them to).
    pub(super) fn step_with(
        &mut self,
        params: &[(String, Var)],
        grads: &Gradients,
        lr: &dyn Fn(&str) -> f64,
        grad_scale: f64,
        fused: bool,
    ) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let s = super::fused::Step {
            beta1: b1,
            beta2: b2,
            c1: 1.0 - b1.powi(t),
            c2: 1.0 - b2.powi(t),
            eps: self.cfg.eps,
            weight_decay: self.cfg.weight_decay,
            grad_scale,
        };
        #[cfg(feature = "cuda")]
        let mut on_device: Vec<(&str, &Tensor, &Tensor, f64)> = Vec::new();
        for (name, var) in params {
            let Some(grad) = grads.get(name) else {
                continue;
            };
            let (w, lr) = (var.as_tensor(), lr(name));
            match grad {
                #[cfg(feature = "cuda")]
                Grad::Dense(g) if fused && crate::backend::cuda::applies(&[w, g]) => {
                    on_device.push((name, w, g, lr));
                }
                Grad::Dense(g) if fused && super::fused::applies(&[w, g]) => {
                    match self.moments.flat(name, w.dims()) {
                        Some((m, v)) => super::fused::step(w, g, m, v, &s, lr)?,
                        None => self.composed(name, var, g, &s, lr)?,
                    }
                }
                Grad::Dense(g) => self.composed(name, var, g, &s, lr)?,
                Grad::Rows { ids, width, values } => {
                    self.rows(name, var, (ids, *width, values), &s, lr)?
                }
            }
        }
        #[cfg(feature = "cuda")]
        if !on_device.is_empty() {
            let named: Vec<(&str, &Tensor)> = on_device.iter().map(|p| (p.0, p.1)).collect();
            let (m, v, offsets) = self.moments.device_flat(&named)?;
            let launch: Vec<(&Tensor, &Tensor, f64, usize)> = on_device
                .iter()
                .zip(offsets)
                .map(|(&(_, w, g, lr), offset)| (w, g, lr, offset))
                .collect();
            crate::backend::cuda::adamw_multi(&launch, &m, &v, &s)?;
        }
        Ok(())
    }

    /// A dense step in candle's tensor ops (any device and dtype).
    fn composed(&mut self, name: &str, var: &Var, g: &Tensor, s: &Step, lr: f64) -> Result<()> {
        let (b1, b2) = (s.beta1, s.beta2);
        let mut g = g.to_dtype(var.dtype())?;
        if s.grad_scale != 1.0 {
            g = g.affine(s.grad_scale, 0.0)?;
        }
        let (m0, v0) = self.moments.tensors(name, var.as_tensor())?;
        let m = ((&*m0 * b1)? + (&g * (1.0 - b1))?)?;
        let v = ((&*v0 * b2)? + (g.sqr()? * (1.0 - b2))?)?;
        let step = (&m / s.c1)?.div(&((&v / s.c2)?.sqrt()? + s.eps)?)?;
        let decayed = (var.as_tensor() * (1.0 - lr * s.weight_decay))?;
        var.set(&(decayed - (step * lr)?)?)?;
        (*m0, *v0) = (m, v);
        Ok(())
    }

    /// A row-sparse step: only the rows in `ids` move, with their moments.
    fn rows(
        &mut self,
        name: &str,
        var: &Var,
        (ids, width, values): (&[u32], usize, &[f32]),
        s: &Step,
        lr: f64,
    ) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let (_, w) = var.as_tensor().dims2()?;
        if w != width {
            return Err(Error::Setting(format!(
                "{name}: row gradients are {width} wide, the table {w}"
            )));
        }
        let (b1, b2) = (s.beta1, s.beta2);
        let dev = var.device();
        let n = ids.len();
        let idx = Tensor::from_slice(ids, n, dev)?;
        let mut g = Tensor::from_slice(values, (n, w), dev)?.to_dtype(var.dtype())?;
        if s.grad_scale != 1.0 {
            g = g.affine(s.grad_scale, 0.0)?;
        }
        let (m0, v0) = self.moments.tensors(name, var.as_tensor())?;
        let rows = var.as_tensor().index_select(&idx, 0)?;
        let m = ((m0.index_select(&idx, 0)? * b1)? + (&g * (1.0 - b1))?)?;
        let v = ((v0.index_select(&idx, 0)? * b2)? + (g.sqr()? * (1.0 - b2))?)?;
        let step = (&m / s.c1)?.div(&((&v / s.c2)?.sqrt()? + s.eps)?)?;
        let new_rows = (rows - (step * lr)?)?;
        let scatter = idx
            .to_dtype(DType::U32)?
            .unsqueeze(1)?
            .broadcast_as((n, w))?
            .contiguous()?;
        var.as_tensor().scatter_set(&scatter, &new_rows, 0)?;
        m0.scatter_set(&scatter, &m, 0)?;
        v0.scatter_set(&scatter, &v, 0)?;
        Ok(())
    }
}
