//! The corrector network h: maps stale cached target embeddings towards fresh ones.
//!
//! # Model
//!
//! ```text
//! h(v) = v + W_out · act( … act(W_1 · LN(v) + b_1) … ) + b_out
//! ```
//!
//! * `LN` is a layer norm over the embedding dimension with a learnable gain and bias
//!   (initialised to 1 and 0, eps [`LN_EPS`]); `norm: none` leaves it out, so that h
//!   sees the vector itself (in 2 dimensions a layer norm keeps nothing but a sign, and
//!   with `depth: 0` and no norm h is exactly linear: `v + W·v + b`). It is built from basic tensor ops, so it
//!   has a backward pass: candle-nn's fused `ops::layer_norm` has none and would silently
//!   cut the graph, leaving the gain and bias untrained.
//! * `depth` hidden layers of `width` units (`depth = 0` gives the linear residual
//!   `v + W_out · LN(v) + b_out`), then the output layer back to `dim`.
//! * `W_out` and `b_out` are **zero-initialised**, so `h` starts as the identity exactly:
//!   before the corrector has seen a single fresh embedding, the corrected cache equals the
//!   stale one, and training can only improve on "no correction". The price: at the first
//!   step only `W_out` and `b_out` get a gradient (everything upstream is multiplied by
//!   `W_out = 0`); after one optimiser step every variable does.
//! * The LN input keeps h's correction independent of the cache's overall scale, while the
//!   residual path keeps the raw vector (norm included) intact.
//!
//! # Parameters and initialisation (seeded, [`SplitMix64`])
//!
//! Variables in the [`VarMap`], by name: `ln.weight`, `ln.bias` `(dim)` (with `norm: layer`);
//! `hidden.{i}.weight` `(width, fan_in)`, `hidden.{i}.bias` `(width)` for i in 0..depth;
//! `out.weight` `(dim, width)` (or `(dim, dim)` at depth 0), `out.bias` `(dim)`. Weights
//! are stored `(out, in)` like `torch.nn.Linear`. Hidden weights and biases are
//! U(−1/√fan_in, 1/√fan_in) (torch's default); each variable is drawn from its own stream
//! seeded with `hash64_seeded(seed, "corrector-v1/<name>")`, so adding a layer does not
//! change the others' initial values.
//!
//! # Files
//!
//! [`Corrector::save`] writes safetensors with the [`VarMap`] names plus the config as a
//! u8 tensor `corrector.config_json`; a plain `VarMap::load` can read the file (it ignores
//! the extra tensor). [`Corrector::load`] checks everything before changing anything.

use crate::host::HostRead;
use std::fmt;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::VarMap;
use serde::{Deserialize, Serialize};

use crate::hashing::hash64_seeded;
use crate::random::SplitMix64;
use crate::ranges::{at_most, field_error, within};
use crate::train::{Recorded, Trainable};
use crate::weights_file;
use crate::{Error, Result};

pub mod procrustes;
#[cfg(test)]
mod tests;

/// Epsilon of the layer norm (added to the variance).
pub const LN_EPS: f64 = 1e-5;
/// Extra tensor of saved files: the config as JSON bytes (u8), checked on load.
const CONFIG_TENSOR: &str = "corrector.config_json";
/// Upper bound of `dim` and `width`, to turn typos into errors instead of huge allocations.
const MAX_WIDTH: usize = 1 << 16;
/// Upper bound of `depth`.
const MAX_DEPTH: usize = 64;
/// Upper bound of the parameter count (2^31 values: 8 GiB of f32).
const MAX_PARAMS: usize = 1 << 31;

/// The non-linearity between the corrector's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// GELU, exact (erf) form like PyTorch's `nn.GELU()`. The default.
    #[default]
    Gelu,
    /// max(0, x).
    Relu,
    /// tanh.
    Tanh,
    /// x·sigmoid(x).
    Silu,
}

impl Activation {
    /// Applies the activation element-wise (differentiable).
    pub fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Gelu => x.gelu_erf()?,
            Self::Relu => x.relu()?,
            Self::Tanh => x.tanh()?,
            Self::Silu => x.silu()?,
        })
    }
}

fn default_width() -> usize {
    512
}

fn default_depth() -> usize {
    1
}

/// What h normalises its input with before the hidden layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    /// A layer norm with a learnable gain and bias. The default.
    #[default]
    Layer,
    /// None: the hidden layers see the raw vector.
    None,
}

/// Settings of a [`Corrector`]. `dim` is required; the rest have defaults, and unknown
/// fields are rejected when deserialising.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct CorrectorConfig {
    /// Width of the embeddings it corrects (input and output).
    pub dim: usize,
    /// Units of each hidden layer. Default 512.
    #[serde(default = "default_width")]
    pub width: usize,
    /// Number of hidden layers; 0 makes h a linear residual map. Default 1.
    #[serde(default = "default_depth")]
    pub depth: usize,
    /// Non-linearity. Default GELU.
    #[serde(default)]
    pub activation: Activation,
    /// The input's normalisation. Default `layer`.
    #[serde(default)]
    pub norm: Norm,
    /// Seed of the initialisation. Default 0.
    #[serde(default)]
    pub seed: u64,
}

impl CorrectorConfig {
    /// Default settings for embeddings of width `dim`.
    pub fn new(dim: usize) -> Self {
        Self {
            dim,
            width: default_width(),
            depth: default_depth(),
            activation: Activation::default(),
            norm: Norm::default(),
            seed: 0,
        }
    }

    /// Checks the ranges of the settings; the error ([`Error::Field`]) names the field
    /// at fault.
    pub fn validate(&self) -> Result<()> {
        within("dim", self.dim, 1, MAX_WIDTH)?;
        within("width", self.width, 1, MAX_WIDTH)?;
        at_most("depth", self.depth, MAX_DEPTH)?;
        if self.param_count() > MAX_PARAMS {
            return Err(field_error(
                "width",
                format!(
                    "`width` {} with `depth` {} gives {} parameters (expected at most {MAX_PARAMS})",
                    self.width,
                    self.depth,
                    self.param_count()
                ),
            ));
        }
        Ok(())
    }

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        let (d, w) = (self.dim, self.width);
        let last = if self.depth == 0 { d } else { w };
        let hidden = if self.depth == 0 {
            0
        } else {
            (d * w + w) + (self.depth - 1) * (w * w + w)
        };
        let norm = match self.norm {
            Norm::Layer => 2 * d,
            Norm::None => 0,
        };
        norm + hidden + d * last + d
    }

    /// The settings that make weights incompatible (everything but `seed`), as JSON.
    fn shape_json(&self) -> serde_json::Value {
        serde_json::to_value(Self {
            seed: 0,
            ..self.clone()
        })
        .expect("a corrector config serialises")
    }
}

/// The weights a forward pass uses: the variables themselves (differentiable) or detached
/// views of them (no graph).
struct Weights {
    /// The layer norm's gain and bias (`norm: layer`).
    ln: Option<(Tensor, Tensor)>,
    hidden: Vec<(Tensor, Tensor)>,
    out_w: Tensor,
    out_b: Tensor,
}

/// The corrector network (see the module docs).
pub struct Corrector {
    cfg: CorrectorConfig,
    device: Device,
    dtype: DType,
    varmap: VarMap,
    /// Every variable with its name, in forward order.
    named: Vec<(String, Var)>,
}

impl fmt::Debug for Corrector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Corrector")
            .field("config", &self.cfg)
            .field("device", &self.device)
            .field("dtype", &self.dtype)
            .finish_non_exhaustive()
    }
}

impl Corrector {
    /// A freshly initialised f32 corrector (the identity map) on `device`.
    pub fn new(cfg: CorrectorConfig, device: &Device) -> Result<Self> {
        Self::with_dtype(cfg, device, DType::F32)
    }

    /// [`Corrector::new`] with weights of `dtype` (F32 or F64; the same seed gives the
    /// same values: they are drawn as f32).
    pub fn with_dtype(cfg: CorrectorConfig, device: &Device, dtype: DType) -> Result<Self> {
        cfg.validate()?;
        if !matches!(dtype, DType::F32 | DType::F64) {
            return Err(Error::Setting(format!(
                "corrector: dtype must be F32 or F64, got {dtype:?}"
            )));
        }
        let (d, w) = (cfg.dim, cfg.width);
        let var = |values: Vec<f64>, shape: &[usize]| -> Result<Var> {
            let t = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
            Ok(Var::from_tensor(&t)?)
        };
        let uniform = |name: &str, n: usize, fan_in: usize| -> Vec<f64> {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let tag = format!("corrector-v1/{name}");
            let mut rng = SplitMix64::new(hash64_seeded(cfg.seed, tag.as_bytes()));
            (0..n)
                .map(|_| f64::from(rng.uniform(-bound, bound)))
                .collect()
        };
        let mut named = Vec::new();
        if cfg.norm == Norm::Layer {
            named.push(("ln.weight".to_string(), var(vec![1.0; d], &[d])?));
            named.push(("ln.bias".to_string(), var(vec![0.0; d], &[d])?));
        }
        let mut fan_in = d;
        for i in 0..cfg.depth {
            let (wn, bn) = (format!("hidden.{i}.weight"), format!("hidden.{i}.bias"));
            let weight = var(uniform(&wn, w * fan_in, fan_in), &[w, fan_in])?;
            let bias = var(uniform(&bn, w, fan_in), &[w])?;
            named.push((wn, weight));
            named.push((bn, bias));
            fan_in = w;
        }
        named.push((
            "out.weight".into(),
            var(vec![0.0; d * fan_in], &[d, fan_in])?,
        ));
        named.push(("out.bias".into(), var(vec![0.0; d], &[d])?));

        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| Error::Setting("VarMap lock poisoned".into()))?;
            for (name, v) in &named {
                data.insert(name.clone(), v.clone());
            }
        }
        Ok(Self {
            cfg,
            device: device.clone(),
            dtype,
            varmap,
            named,
        })
    }

    /// The settings.
    pub fn config(&self) -> &CorrectorConfig {
        &self.cfg
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The dtype of the weights (inputs must have it too).
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The trainable parameters, by name.
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// The trainable parameters in a fixed order (forward order), unlike
    /// `VarMap::all_vars`, whose order is a hash map's.
    pub fn vars(&self) -> Vec<Var> {
        self.named.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The trainable parameters with their names, in forward order.
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.named
    }

    /// Differentiable forward: `stale` of shape `(…, dim)` (typically `(n, dim)` or
    /// `(b, m, dim)`) to corrected embeddings of the same shape. The graph reaches the
    /// corrector's variables, and `stale` only if `stale` itself is tracked (the cache is
    /// normally a constant).
    pub fn forward(&self, stale: &Tensor) -> Result<Tensor> {
        let weights = self.weights(false);
        self.forward_with(stale, &weights)
    }

    /// [`Corrector::forward`] kept for [`Trainable::backward`].
    pub fn forward_train(&self, stale: &Tensor) -> Result<Recorded> {
        Ok(Recorded {
            output: self.forward(stale)?,
            rows: None,
        })
    }

    /// An independent copy with the same weights (another worker's replica).
    pub fn replica(&self) -> Result<Self> {
        let copy = Self::with_dtype(self.cfg.clone(), &self.device, self.dtype)?;
        for ((_, mine), (_, theirs)) in copy.named.iter().zip(&self.named) {
            mine.set(theirs.as_tensor())?;
        }
        Ok(copy)
    }

    /// Makes a linear corrector (`depth: 0`, `norm: none`) the map `v ↦ v·R` for the
    /// row-major `d × d` matrix `r` (an orthogonal Procrustes fit, say): `W = Rᵀ − I`,
    /// `b = 0`.
    pub fn set_linear(&self, r: &[f64]) -> Result<()> {
        let d = self.cfg.dim;
        if self.cfg.depth != 0 || self.cfg.norm != Norm::None || r.len() != d * d {
            return Err(Error::Setting(format!(
                "corrector: a linear map needs `depth: 0` and `norm: none` and a {d} × {d} matrix (this one is depth {}, norm {:?}, {} values)",
                self.cfg.depth,
                self.cfg.norm,
                r.len()
            )));
        }
        let mut w = vec![0f64; d * d];
        for i in 0..d {
            for j in 0..d {
                w[i * d + j] = r[j * d + i] - if i == j { 1.0 } else { 0.0 };
            }
        }
        let last = self.named.len() - 2;
        let weight = Tensor::from_vec(w, (d, d), &self.device)?.to_dtype(self.dtype)?;
        self.named[last].1.set(&weight)?;
        let bias = Tensor::zeros(d, self.dtype, &self.device)?;
        self.named[last + 1].1.set(&bias)?;
        Ok(())
    }

    /// Whether `h` is still exactly the identity (the output layer is all zeros), so that
    /// applying it can be skipped.
    pub fn is_identity(&self) -> Result<bool> {
        let last = self.named.len() - 2;
        for (_, v) in &self.named[last..] {
            let nonzero = v
                .as_tensor()
                .abs()?
                .max_all()?
                .to_dtype(DType::F64)?
                .host_scalar::<f64>()?;
            if nonzero != 0.0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// `h` over a whole `(N, dim)` cache without gradient, `chunk` rows at a time, so the
    /// hidden activations never exceed `chunk × width` values. The result is a new
    /// detached `(N, dim)` tensor.
    pub fn apply_chunked(&self, cache: &Tensor, chunk: usize) -> Result<Tensor> {
        if chunk == 0 {
            return Err(Error::Setting("corrector: chunk must be ≥ 1".into()));
        }
        let (n, _) = self.check_input(cache)?;
        if cache.rank() != 2 {
            return Err(Error::Setting(format!(
                "corrector: the cache must have shape (N, {}), got {:?}",
                self.cfg.dim,
                cache.dims()
            )));
        }
        let weights = self.weights(true);
        let cache = cache.detach();
        let out = Tensor::zeros((n, self.cfg.dim), self.dtype, &self.device)?;
        let mut start = 0;
        while start < n {
            let len = chunk.min(n - start);
            let part = self.forward_with(&cache.narrow(0, start, len)?, &weights)?;
            out.slice_set(&part, 0, start)?;
            start += len;
        }
        Ok(out)
    }

    /// Checks dtype and last dimension; returns (rows, dim).
    fn check_input(&self, x: &Tensor) -> Result<(usize, usize)> {
        if x.dtype() != self.dtype {
            return Err(Error::Setting(format!(
                "corrector: input is {:?}, the corrector's weights are {:?}",
                x.dtype(),
                self.dtype
            )));
        }
        let d = self.cfg.dim;
        if x.rank() == 0 || x.dim(D::Minus1)? != d {
            return Err(Error::Setting(format!(
                "corrector: input has shape {:?}, expected (…, {d})",
                x.dims()
            )));
        }
        Ok((x.elem_count() / d, d))
    }

    fn weights(&self, detached: bool) -> Weights {
        let t = |i: usize| {
            let v = self.named[i].1.as_tensor();
            if detached {
                v.detach()
            } else {
                v.clone()
            }
        };
        let last = self.named.len() - 2;
        let first = match self.cfg.norm {
            Norm::Layer => 2,
            Norm::None => 0,
        };
        Weights {
            ln: (first == 2).then(|| (t(0), t(1))),
            hidden: (0..self.cfg.depth)
                .map(|i| (t(first + 2 * i), t(first + 1 + 2 * i)))
                .collect(),
            out_w: t(last),
            out_b: t(last + 1),
        }
    }

    fn forward_with(&self, stale: &Tensor, w: &Weights) -> Result<Tensor> {
        let (rows, d) = self.check_input(stale)?;
        if rows == 0 {
            return Ok(stale.clone());
        }
        let v = stale.reshape((rows, d))?;
        let mut x = match &w.ln {
            Some((gain, bias)) => layer_norm(&v, gain, bias)?,
            None => v.clone(),
        };
        for (weight, bias) in &w.hidden {
            x = self
                .cfg
                .activation
                .apply(&x.matmul(&weight.t()?)?.broadcast_add(bias)?)?;
        }
        let delta = x.matmul(&w.out_w.t()?)?.broadcast_add(&w.out_b)?;
        Ok((v + delta)?.reshape(stale.dims())?)
    }

    /// Saves the weights (safetensors, the [`VarMap`] names) plus the config as a u8
    /// tensor `corrector.config_json`. Written to a temporary file and renamed, so a crash
    /// never leaves a truncated file at `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        weights_file::save(path, &self.name_refs(), CONFIG_TENSOR, &self.cfg)
    }

    /// Loads weights saved by [`Corrector::save`] (or any safetensors file holding every
    /// variable with the right shape, in F32 or F64: converted to this corrector's dtype).
    /// If the file holds a config, its shape settings (all but `seed`) must equal this
    /// corrector's. Nothing is changed unless the whole file checks out.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let loaded = weights_file::read::<CorrectorConfig>(path, CONFIG_TENSOR)?;
        if let Some(saved) = &loaded.config {
            if saved.shape_json() != self.cfg.shape_json() {
                return Err(weights_file::mismatch(
                    path,
                    format!(
                        "weights were saved for {}, this corrector is {}",
                        saved.shape_json(),
                        self.cfg.shape_json()
                    ),
                ));
            }
        }
        loaded.apply(path, &self.name_refs(), &[DType::F32, DType::F64])
    }

    /// The variables with their names, as the weight file wants them.
    fn name_refs(&self) -> Vec<(&str, &Var)> {
        self.named.iter().map(|(n, v)| (n.as_str(), v)).collect()
    }
}

impl Trainable for Corrector {
    fn params(&self) -> Vec<(String, Var)> {
        self.named.clone()
    }
}

/// Differentiable layer norm over the last dimension of `x: (n, d)` with gain and bias
/// `(d)`: `(x − mean) / sqrt(var + eps) · gain + bias` (biased variance, like PyTorch).
pub fn layer_norm(x: &Tensor, gain: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centred = x.broadcast_sub(&mean)?;
    let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centred.broadcast_div(&(var + LN_EPS)?.sqrt()?)?;
    Ok(normed.broadcast_mul(gain)?.broadcast_add(bias)?)
}
