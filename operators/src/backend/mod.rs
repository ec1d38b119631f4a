//! The kernels a model runs, chosen once per device behind one narrow interface.
//!
//! As text-embeddings-inference keeps its backends behind a trait, the models here never
//! ask which device they are on: a model takes [`for_device`]'s [`Kernels`] when it is
//! built and calls them. Every method returns its result; a backend without an op of its
//! own inherits the trait's default, which composes it from the backend's smaller ops in
//! one shared place ([`composed`]). The CPU gets the fused kernels of [`fused`] (a whole
//! layer as one op with its own backward, attention that skips padding); other devices
//! get candle's own ops ([`CandleOps`]) and the composed layer. A new device backend is
//! one more implementation of [`Kernels`] and one more arm in [`for_device`].

mod candle;
pub mod composed;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod fused;

pub use self::candle::CandleOps;
pub use fused::FusedCpu;

use candle_core::{DType, Device, Tensor};

use crate::{Error, Result};

/// The shape of one multi-head self-attention call over a right-padded batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionShape {
    /// Texts in the batch.
    pub batch: usize,
    /// Padded length.
    pub tokens: usize,
    /// Heads.
    pub heads: usize,
    /// Width of a head.
    pub head_dim: usize,
    /// Real tokens of each text (keys at or past it are padding).
    pub lengths: Vec<usize>,
}

impl AttentionShape {
    /// `(b·t, heads·head_dim)` projections as `(b, heads, t, head_dim)`, contiguous.
    pub(crate) fn split_heads(&self, y: &Tensor) -> Result<Tensor> {
        let (b, t, nh, dh) = (self.batch, self.tokens, self.heads, self.head_dim);
        Ok(y.reshape((b, t, nh, dh))?.transpose(1, 2)?.contiguous()?)
    }

    /// The inverse of [`AttentionShape::split_heads`]: `(b, heads, t, head_dim)` back to
    /// `(b·t, heads·head_dim)`.
    pub(crate) fn merge_heads(&self, y: &Tensor) -> Result<Tensor> {
        let rows = self.batch * self.tokens;
        Ok(y.transpose(1, 2)?
            .reshape((rows, self.heads * self.head_dim))?)
    }
}

/// The feed-forward block's activation (a checkpoint's `hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// GELU in its exact (erf) form (`gelu`): BERT's, and the one [`fused`] layers compute.
    Gelu,
    /// GELU's tanh approximation (`gelu_new`).
    GeluTanh,
    /// `relu`.
    Relu,
}

/// One batch through a post-norm transformer encoder (BERT's): what every layer call of
/// one forward shares.
pub struct EncoderBatch {
    /// The batch's attention.
    pub attention: AttentionShape,
    /// Width of the token vectors.
    pub hidden: usize,
    /// Width of the feed-forward block.
    pub intermediate: usize,
    /// The layer norms' epsilon.
    pub eps: f64,
    /// The feed-forward block's activation.
    pub activation: Activation,
    /// The batch's attention bias ([`Kernels::attention_bias`]), made once for all the
    /// layers.
    pub bias: Option<Tensor>,
}

/// One layer's sixteen weights for the forwards of one call, as
/// [`Kernels::prepare_layer`] made them. In checkpoint order: query, key, value, the
/// attention's output projection and its layer norm, the intermediate and output
/// projections and the output's layer norm, each weight then bias.
#[derive(Clone)]
pub enum LayerWeights {
    /// The sixteen as stored: what the composed layer runs on.
    Stored(Vec<Tensor>),
    /// The sixteen in one tensor of the backend's own layout, read only by the backend
    /// that packed them (once per call, not per batch: every batch's training graph would
    /// keep its own copy).
    Packed(Tensor),
}

impl LayerWeights {
    /// The weights as stored; an error for weights another backend packed.
    pub fn stored(&self) -> Result<&[Tensor]> {
        match self {
            Self::Stored(w) => Ok(w),
            Self::Packed(_) => Err(Error::Setting(
                "encoder layer: weights packed by one backend given to another".into(),
            )),
        }
    }
}

/// The operations of a transformer encoder whose best implementation depends on the
/// device.
///
/// A backend either owns a whole layer, forward and backward, by implementing
/// [`Kernels::encoder_layer`] (and [`Kernels::prepare_layer`] for its weight layout),
/// or inherits the default, which composes the layer from the backend's smaller ops
/// ([`composed::encoder_layer`]). A CUDA backend does the same: forward and backward
/// as custom ops behind [`Kernels::encoder_layer`], or its `layer_norm`, `gelu` and
/// `attention` under the composed default.
///
/// ```text
///                   encoder_stack: every layer of one forward
///                   (default: encoder_layer, layer by layer)
///                                 │
///                   encoder_layer: one layer, with its backward
///            ┌────────────────────┴─────────────────────┐
///     a backend's own op                      composed::encoder_layer (default):
///     FusedCpu, f32 with the exact GELU:      projections, residuals and activation
///       training: fused::layer                from candle ops, and the backend's
///       inference: fused::infer (a long       layer_norm, gelu, attention_bias and
///       call: encoder_stack, all layers       attention
///       as one op)                            CandleOps: CUDA, Metal, half precision
///                                             FusedCpu: relu and gelu_new
/// ```
///
/// `train` asks for a differentiable result (the forward records its backward);
/// otherwise the fastest inference path is taken.
///
/// A backend of one's own implements the small ops and inherits the composed layer.
/// Here one hands them to candle's ops, and agrees with the CPU's fused kernels:
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use freshen_operators::backend::{for_device, AttentionShape, CandleOps, Kernels};
///
/// /// Candle's ops under another name: the skeleton of a new device's backend.
/// #[derive(Debug)]
/// struct Mine;
///
/// impl Kernels for Mine {
///     fn name(&self) -> &'static str {
///         "mine"
///     }
///     fn layer_norm(&self, x: &Tensor, w: &Tensor, b: &Tensor, eps: f64, train: bool)
///         -> freshen_operators::Result<Tensor> {
///         CandleOps.layer_norm(x, w, b, eps, train)
///     }
///     fn softmax_last_dim(&self, x: &Tensor, train: bool) -> freshen_operators::Result<Tensor> {
///         CandleOps.softmax_last_dim(x, train)
///     }
///     fn gelu(&self, x: &Tensor) -> freshen_operators::Result<Tensor> {
///         CandleOps.gelu(x)
///     }
///     fn attention_bias(&self, mask: &Tensor) -> freshen_operators::Result<Option<Tensor>> {
///         CandleOps.attention_bias(mask)
///     }
///     fn attention(&self, q: &Tensor, k: &Tensor, v: &Tensor, shape: &AttentionShape,
///         bias: Option<&Tensor>, train: bool) -> freshen_operators::Result<Tensor> {
///         CandleOps.attention(q, k, v, shape, bias, train)
///     }
/// }
///
/// let dev = Device::Cpu;
/// let cpu = for_device(&dev, DType::F32);
/// assert_eq!(cpu.name(), "cpu-fused");
/// let x = Tensor::arange(0f32, 32., &dev)?.reshape((4, 8))?;
/// let (w, b) = (Tensor::ones(8, DType::F32, &dev)?, Tensor::zeros(8, DType::F32, &dev)?);
/// let gap = (cpu.layer_norm(&x, &w, &b, 1e-12, false)? - Mine.layer_norm(&x, &w, &b, 1e-12, false)?)?
///     .abs()?
///     .max_all()?
///     .to_scalar::<f32>()?;
/// assert!(gap < 1e-5, "{gap}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Kernels: Send + Sync + std::fmt::Debug {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension.
    fn layer_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        eps: f64,
        train: bool,
    ) -> Result<Tensor>;

    /// Softmax over the last dimension.
    fn softmax_last_dim(&self, x: &Tensor, train: bool) -> Result<Tensor>;

    /// GELU in its exact (erf) form.
    fn gelu(&self, x: &Tensor) -> Result<Tensor>;

    /// What [`Kernels::attention`] needs of the batch's `(b, t)` mask (1 for tokens, 0
    /// for padding), computed once per forward: an additive bias, or nothing.
    fn attention_bias(&self, mask: &Tensor) -> Result<Option<Tensor>>;

    /// Self-attention of the projections `q`, `k`, `v`, each `(b·t, heads·head_dim)`:
    /// the context in the same layout, padded keys given exactly zero weight.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        shape: &AttentionShape,
        bias: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor>;

    /// A layer's sixteen weights (checkpoint order) laid out for the forwards of one
    /// call over `tokens` tokens in all, once for all its batches. By default as stored.
    fn prepare_layer(
        &self,
        weights: &[Tensor],
        _activation: Activation,
        _train: bool,
        _tokens: usize,
    ) -> Result<LayerWeights> {
        Ok(LayerWeights::Stored(weights.to_vec()))
    }

    /// One layer over `x`, `(b·t, hidden)`, its weights from [`Kernels::prepare_layer`]
    /// with the same activation and `train`. By default composed from this backend's
    /// smaller ops ([`composed::encoder_layer`]).
    fn encoder_layer(
        &self,
        x: &Tensor,
        batch: &EncoderBatch,
        weights: &LayerWeights,
        train: bool,
    ) -> Result<Tensor> {
        composed::encoder_layer(self, x, batch, weights.stored()?, train)
    }

    /// Every layer of one forward over `x`, `(b·t, hidden)`, each with its weights from
    /// [`Kernels::prepare_layer`]. By default [`Kernels::encoder_layer`] layer by layer.
    fn encoder_stack(
        &self,
        x: &Tensor,
        batch: &EncoderBatch,
        weights: &[LayerWeights],
        train: bool,
    ) -> Result<Tensor> {
        weights
            .iter()
            .try_fold(x.clone(), |x, w| self.encoder_layer(&x, batch, w, train))
    }

    /// The parts this backend cuts each batch of a forward into, one a thread, which
    /// batches formed by a token budget keep a multiple of
    /// ([`crate::encoder::bert::plan_batches`]). By default one: batches run whole.
    fn parts_per_batch(&self, _activation: Activation, _train: bool) -> usize {
        1
    }
}

/// The kernels for tensors of `dtype` on `device`: the fused CPU kernels for f32 on the
/// CPU, freshen's CUDA kernels for f32 on CUDA (a CUDA build), candle's ops everywhere
/// else.
pub fn for_device(device: &Device, dtype: DType) -> &'static dyn Kernels {
    match (device, dtype) {
        (Device::Cpu, DType::F32) => &FusedCpu,
        #[cfg(feature = "cuda")]
        (Device::Cuda(_), DType::F32) => &cuda::CudaOps,
        _ => &CandleOps,
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::Instant;

    /// Every kernel `backend::cuda` loads by name.
    const KERNELS: &[&str] = &[
        "adamw_multi_f32",
        "sq_norm_multi_f32",
        "finish_norm",
        "add_layer_norm_fwd",
        "add_layer_norm_bwd",
        "col_sum_f32",
        "bias_gelu_fwd",
        "bias_gelu_bwd",
        "masked_softmax_fwd",
        "masked_softmax_bwd",
        "topk_rows_f32",
        "topk_merge_f32",
    ];

    /// An nvcc: `NVCC`, the one `scripts/build-cuda.sh` installs, or one on `PATH`.
    fn nvcc() -> Option<PathBuf> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let candidates = [
            std::env::var_os("NVCC").map(PathBuf::from),
            Some(root.join(".cuda/py/nvidia/cu13/bin/nvcc")),
            Some(PathBuf::from("nvcc")),
        ];
        candidates.into_iter().flatten().find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
    }

    /// The CUDA kernels' source compiles to sm_90 PTX, as the CUDA build compiles it,
    /// with every kernel the backend loads, when an nvcc is at hand; without one the test
    /// says so and passes (CI has none unless `scripts/build-cuda.sh` ran).
    #[test]
    fn the_cuda_kernels_compile_to_ptx_when_nvcc_is_present() {
        let Some(nvcc) = nvcc() else {
            eprintln!("no nvcc (NVCC, .cuda from scripts/build-cuda.sh, PATH): PTX not compiled");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let ptx = dir.path().join("train.ptx");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/train.cu");
        let start = Instant::now();
        let out = Command::new(&nvcc)
            .args(["--ptx", "-O3", "--fmad=false", "-arch=sm_90", "-o"])
            .arg(&ptx)
            .arg(&source)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nvcc failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "kernels/train.cu compiled to PTX in {:.1?}",
            start.elapsed()
        );
        let text = std::fs::read_to_string(&ptx).unwrap();
        for name in KERNELS {
            assert!(
                text.contains(&format!(".entry {name}(")),
                "{name} is not in the PTX"
            );
        }
    }
}
