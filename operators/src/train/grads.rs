//! Gradients by parameter name: dense tensors, or the touched rows of a table.

use crate::host::HostRead;
use std::collections::{BTreeMap, HashMap};

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The gradient of one parameter.
#[derive(Debug, Clone)]
pub enum Grad {
    /// A gradient of the parameter's full shape.
    Dense(Tensor),
    /// The gradients of some rows of a 2-D table, every other row's being zero. `ids` are
    /// distinct, in the order they were first touched; `values` is row-major
    /// `(ids.len(), width)`.
    Rows {
        /// Table rows, distinct.
        ids: Vec<u32>,
        /// Width of a row.
        width: usize,
        /// The rows' gradients.
        values: Vec<f32>,
    },
}

impl Grad {
    /// Row gradients of a table from the gradient of a gathered-rows leaf: table row
    /// `ids[j]` gets row `owner[j]` of `leaf_grad`, summed over repeats.
    pub fn rows_from_leaf(ids: &[u32], owner: &[u32], leaf_grad: &Tensor) -> Result<Self> {
        let (_, width) = leaf_grad.dims2()?;
        let g: Vec<f32> = leaf_grad.to_dtype(DType::F32)?.flatten_all()?.host_vec1()?;
        let mut slot: HashMap<u32, usize> = HashMap::new();
        let mut out_ids = Vec::new();
        let mut values: Vec<f32> = Vec::new();
        for (&id, &o) in ids.iter().zip(owner) {
            let s = *slot.entry(id).or_insert_with(|| {
                out_ids.push(id);
                values.resize(values.len() + width, 0.0);
                out_ids.len() - 1
            });
            let src = &g[o as usize * width..(o as usize + 1) * width];
            for (a, &x) in values[s * width..(s + 1) * width].iter_mut().zip(src) {
                *a += x;
            }
        }
        Ok(Grad::Rows {
            ids: out_ids,
            width,
            values,
        })
    }

    /// Sum of squares of every entry, in f64.
    pub fn sq_norm(&self) -> Result<f64> {
        Ok(match self {
            Grad::Dense(t) if super::fused::applies(&[t]) => super::fused::sq_norm(&[t])?,
            Grad::Dense(t) => t
                .to_dtype(DType::F64)?
                .sqr()?
                .sum_all()?
                .host_scalar::<f64>()?,
            Grad::Rows { values, .. } => values.iter().map(|&x| f64::from(x) * f64::from(x)).sum(),
        })
    }

    fn scale(&mut self, factor: f64) -> Result<()> {
        match self {
            Grad::Dense(t) => *t = t.affine(factor, 0.0)?,
            Grad::Rows { values, .. } => {
                let f = factor as f32;
                values.iter_mut().for_each(|x| *x *= f);
            }
        }
        Ok(())
    }

    fn add(&mut self, other: Grad) -> Result<()> {
        match (self, other) {
            (Grad::Dense(a), Grad::Dense(b)) => *a = a.add(&b)?,
            (
                Grad::Rows { ids, width, values },
                Grad::Rows {
                    ids: ids_b,
                    width: width_b,
                    values: values_b,
                },
            ) if *width == width_b => {
                let w = *width;
                let mut slot: HashMap<u32, usize> =
                    ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
                for (j, id) in ids_b.into_iter().enumerate() {
                    let s = *slot.entry(id).or_insert_with(|| {
                        ids.push(id);
                        values.resize(values.len() + w, 0.0);
                        ids.len() - 1
                    });
                    for (a, &x) in values[s * w..(s + 1) * w]
                        .iter_mut()
                        .zip(&values_b[j * w..(j + 1) * w])
                    {
                        *a += x;
                    }
                }
            }
            _ => {
                return Err(Error::Setting(
                    "gradients of one parameter disagree in kind or width".into(),
                ))
            }
        }
        Ok(())
    }
}

/// Gradients by parameter name (sorted, so sums and norms run in one order everywhere).
#[derive(Debug, Clone, Default)]
pub struct Gradients {
    by_param: BTreeMap<String, Grad>,
}

impl Gradients {
    /// The dense gradients that a backward pass (`store`) holds for `params`, by name.
    pub fn of_vars(params: &[(String, Var)], store: &candle_core::backprop::GradStore) -> Self {
        let mut out = Self::default();
        for (name, var) in params {
            if let Some(g) = store.get(var.as_tensor()) {
                out.insert(name.clone(), Grad::Dense(g.clone()));
            }
        }
        out
    }

    /// Sets the gradient of `param`.
    pub fn insert(&mut self, param: String, grad: Grad) {
        self.by_param.insert(param, grad);
    }

    /// The gradient of `param`, if it has one.
    pub fn get(&self, param: &str) -> Option<&Grad> {
        self.by_param.get(param)
    }

    /// Every gradient, by parameter name.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Grad)> {
        self.by_param.iter()
    }

    /// Whether no parameter has a gradient.
    pub fn is_empty(&self) -> bool {
        self.by_param.is_empty()
    }

    /// Adds `other` into `self`, parameter by parameter.
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        for (name, g) in other.by_param {
            match self.by_param.get_mut(&name) {
                Some(mine) => mine.add(g)?,
                None => {
                    self.by_param.insert(name, g);
                }
            }
        }
        Ok(())
    }

    /// The global L2 norm over every parameter. The dense f32 gradients on the CPU are
    /// summed in one pass over all of them together, those on CUDA in one launch and one
    /// read; the others one by one.
    pub fn norm(&self) -> Result<f64> {
        let grads: Vec<&Grad> = self.by_param.values().collect();
        let (cpu, rest) = dense_where(grads, super::fused::applies);
        let mut sum = super::fused::sq_norm(&cpu)?;
        #[cfg(feature = "cuda")]
        let rest = {
            let (cuda, rest) = dense_where(rest, crate::backend::cuda::applies);
            sum += crate::backend::cuda::sq_norm(&cuda)?;
            rest
        };
        for g in rest {
            sum += g.sq_norm()?;
        }
        Ok(sum.sqrt())
    }

    /// Multiplies every gradient by `factor`.
    pub fn scale(&mut self, factor: f64) -> Result<()> {
        if factor == 1.0 {
            return Ok(());
        }
        for g in self.by_param.values_mut() {
            g.scale(factor)?;
        }
        Ok(())
    }

    /// What scales gradients of global norm `norm` down to at most `max_norm` (when that
    /// is finite and positive): `max_norm / norm` above it, 1 otherwise. [`AdamW::step_scaled`]
    /// takes it, so clipping costs no pass of its own.
    ///
    /// [`AdamW::step_scaled`]: super::AdamW::step_scaled
    pub fn clip_factor(norm: f64, max_norm: Option<f64>) -> f64 {
        match max_norm.filter(|m| m.is_finite() && *m > 0.0) {
            Some(max) if norm > max => max / (norm + 1e-12),
            _ => 1.0,
        }
    }

    /// Scales the gradients down so that their global norm is at most `max_norm` (when it
    /// is finite and positive); returns the norm before clipping.
    pub fn clip_norm(&mut self, max_norm: Option<f64>) -> Result<f64> {
        let norm = self.norm()?;
        let factor = Self::clip_factor(norm, max_norm);
        if factor != 1.0 {
            self.scale(factor)?;
        }
        Ok(norm)
    }

    /// The gradients as plain vectors, to send to other workers.
    pub fn to_host(&self) -> Result<Vec<HostGrad>> {
        self.by_param
            .iter()
            .map(|(name, g)| {
                Ok(match g {
                    Grad::Dense(t) => HostGrad {
                        param: name.clone(),
                        shape: t.dims().to_vec(),
                        ids: None,
                        values: t.to_dtype(DType::F32)?.flatten_all()?.host_vec1()?,
                    },
                    Grad::Rows { ids, width, values } => HostGrad {
                        param: name.clone(),
                        shape: vec![ids.len(), *width],
                        ids: Some(ids.clone()),
                        values: values.clone(),
                    },
                })
            })
            .collect()
    }

    /// Gradients from [`Gradients::to_host`]'s vectors, dense ones placed on `device`.
    pub fn from_host(parts: Vec<HostGrad>, device: &Device) -> Result<Self> {
        let mut out = Gradients::default();
        for p in parts {
            let grad = match p.ids {
                Some(ids) => Grad::Rows {
                    width: p.shape.get(1).copied().unwrap_or(0),
                    ids,
                    values: p.values,
                },
                None => Grad::Dense(Tensor::from_vec(p.values, p.shape, device)?),
            };
            out.accumulate(Gradients {
                by_param: BTreeMap::from([(p.param, grad)]),
            })?;
        }
        Ok(out)
    }
}

/// The dense gradients that `takes` accepts, as tensors, and every other gradient.
fn dense_where(grads: Vec<&Grad>, takes: fn(&[&Tensor]) -> bool) -> (Vec<&Tensor>, Vec<&Grad>) {
    let mut taken = Vec::new();
    let mut rest = Vec::new();
    for g in grads {
        match g {
            Grad::Dense(t) if takes(&[t]) => taken.push(t),
            _ => rest.push(g),
        }
    }
    (taken, rest)
}

/// One parameter's gradient as plain data (what crosses between workers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostGrad {
    /// Parameter name.
    pub param: String,
    /// The dense shape, or `[rows, width]` for row gradients.
    pub shape: Vec<usize>,
    /// Table rows, for row gradients.
    pub ids: Option<Vec<u32>>,
    /// The values, row-major.
    pub values: Vec<f32>,
}
