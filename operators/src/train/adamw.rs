//! AdamW with decoupled weight decay, dense and row-sparse ("lazy") updates.

use std::collections::HashMap;

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

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

/// First and second moments of one parameter, of its full shape.
struct Moments {
    m: Tensor,
    v: Tensor,
}

/// AdamW over named parameters. Dense gradients update the whole parameter; row gradients
/// update only their rows, moments included, with the bias correction of the global step
/// count (so a rarely seen row takes the same size of step as a frequent one).
pub struct AdamW {
    cfg: AdamWConfig,
    steps: u64,
    state: HashMap<String, Moments>,
}

impl AdamW {
    /// A fresh optimiser (no moments yet).
    pub fn new(cfg: AdamWConfig) -> Self {
        Self {
            cfg,
            steps: 0,
            state: HashMap::new(),
        }
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// A copy of the state: the step count and each parameter's first and second moments,
    /// by name (what a resumable checkpoint keeps).
    pub fn export(&self) -> Result<(u64, NamedMoments)> {
        let mut moments = Vec::with_capacity(self.state.len());
        for (name, m) in &self.state {
            moments.push((name.clone(), m.m.copy()?, m.v.copy()?));
        }
        moments.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((self.steps, moments))
    }

    /// Sets the state to one [`AdamW::export`] gave: the next step continues exactly where
    /// that optimiser stopped.
    pub fn import(&mut self, steps: u64, moments: NamedMoments) {
        self.steps = steps;
        self.state = moments
            .into_iter()
            .map(|(name, m, v)| (name, Moments { m, v }))
            .collect();
    }

    /// One step: every parameter of `params` that has a gradient in `grads` moves, with the
    /// learning rate `lr(name)`. A dense f32 parameter on the CPU takes the fused passes
    /// (`fused`), the others the composed tensor ops.
    pub fn step(
        &mut self,
        params: &[(String, Var)],
        grads: &Gradients,
        lr: &dyn Fn(&str) -> f64,
    ) -> Result<()> {
        self.step_with(params, grads, lr, true)
    }

    /// [`AdamW::step`], with the fused passes allowed or not (`fused: false` is the
    /// reference the tests hold them to).
    pub(super) fn step_with(
        &mut self,
        params: &[(String, Var)],
        grads: &Gradients,
        lr: &dyn Fn(&str) -> f64,
        fused: bool,
    ) -> Result<()> {
        self.steps += 1;
        let t = self.steps as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for (name, var) in params {
            let Some(grad) = grads.get(name) else {
                continue;
            };
            let lr = lr(name);
            if !self.state.contains_key(name) {
                let zeros = var.as_tensor().zeros_like()?;
                let moments = Moments {
                    m: zeros.clone(),
                    v: zeros.copy()?,
                };
                self.state.insert(name.clone(), moments);
            }
            let moments = &self.state[name];
            match grad {
                Grad::Dense(g)
                    if fused
                        && super::fused::applies(&[var.as_tensor(), g, &moments.m, &moments.v]) =>
                {
                    let s = super::fused::Step {
                        beta1: b1,
                        beta2: b2,
                        c1,
                        c2,
                        eps: self.cfg.eps,
                        weight_decay: self.cfg.weight_decay,
                        lr,
                    };
                    super::fused::step(var.as_tensor(), &moments.m, &moments.v, g, &s)?;
                }
                Grad::Dense(g) => {
                    let g = g.to_dtype(var.dtype())?;
                    let m = ((&moments.m * b1)? + (&g * (1.0 - b1))?)?;
                    let v = ((&moments.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let step = (&m / c1)?.div(&((&v / c2)?.sqrt()? + self.cfg.eps)?)?;
                    let decayed = (var.as_tensor() * (1.0 - lr * self.cfg.weight_decay))?;
                    var.set(&(decayed - (step * lr)?)?)?;
                    let moments = self.state.get_mut(name).expect("inserted above");
                    moments.m = m;
                    moments.v = v;
                }
                Grad::Rows { ids, width, values } => {
                    if ids.is_empty() {
                        continue;
                    }
                    let (_, w) = var.as_tensor().dims2()?;
                    if w != *width {
                        return Err(Error::Setting(format!(
                            "{name}: row gradients are {width} wide, the table {w}"
                        )));
                    }
                    let dev = var.device();
                    let n = ids.len();
                    let idx = Tensor::from_slice(ids, n, dev)?;
                    let g = Tensor::from_slice(values, (n, w), dev)?.to_dtype(var.dtype())?;
                    let rows = var.as_tensor().index_select(&idx, 0)?;
                    let m = ((moments.m.index_select(&idx, 0)? * b1)? + (&g * (1.0 - b1))?)?;
                    let v = ((moments.v.index_select(&idx, 0)? * b2)? + (g.sqr()? * (1.0 - b2))?)?;
                    let step = (&m / c1)?.div(&((&v / c2)?.sqrt()? + self.cfg.eps)?)?;
                    let new_rows = (rows - (step * lr)?)?;
                    let scatter = idx
                        .to_dtype(DType::U32)?
                        .unsqueeze(1)?
                        .broadcast_as((n, w))?
                        .contiguous()?;
                    var.as_tensor().scatter_set(&scatter, &new_rows, 0)?;
                    moments.m.scatter_set(&scatter, &m, 0)?;
                    moments.v.scatter_set(&scatter, &v, 0)?;
                }
            }
        }
        Ok(())
    }
}
