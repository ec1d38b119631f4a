//! The kernels a model runs, chosen once per device behind one narrow interface.
//!
//! As text-embeddings-inference keeps its backends behind a trait, the models here never
//! ask which device they are on: a model takes [`for_device`]'s [`Kernels`] when it is
//! built and calls them. The CPU gets the fused kernels of [`fused`] (one pass per row,
//! with their own backward, attention that skips padding); other devices get candle's
//! own ops ([`CandleOps`]), differentiable compositions when training. A new device
//! backend is one more implementation of [`Kernels`] and one more arm in [`for_device`].

mod candle;
pub mod fused;

pub use self::candle::CandleOps;
pub use fused::FusedCpu;

use candle_core::{DType, Device, Tensor};

use crate::Result;

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

/// One post-norm transformer layer (BERT's, with the exact GELU) over one batch, for
/// [`Kernels::encoder_layer`].
pub struct EncoderLayerShape {
    /// The batch's attention.
    pub attention: AttentionShape,
    /// Width of the token vectors.
    pub hidden: usize,
    /// Width of the feed-forward block.
    pub intermediate: usize,
    /// The layer norms' epsilon.
    pub eps: f64,
}

/// The weights [`Kernels::encoder_layer`] runs a layer with, in checkpoint order: query,
/// key, value, the attention's output projection and its layer norm, the intermediate
/// and output projections and the output's layer norm, each weight then bias.
#[derive(Clone, Copy)]
pub enum LayerWeights<'a> {
    /// A training forward: the sixteen packed by [`Kernels::pack_layer`].
    Packed(&'a Tensor),
    /// An inference forward: the sixteen as stored.
    Stored(&'a [Tensor]),
}

/// The operations of a transformer encoder whose best implementation depends on the device.
///
/// `train` asks for a differentiable result (the forward records its backward);
/// otherwise the fastest inference path is taken.
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

    /// A layer's sixteen weights packed for a training forward of
    /// [`Kernels::encoder_layer`], once per forward call for all its batches; `None`
    /// where the backend has no whole-layer op for training.
    fn pack_layer(&self, _weights: &[Tensor]) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// A layer's sixteen weights laid out for [`Kernels::encoder_stack`], once per
    /// forward call for all its batches; `None` where the backend has no such op.
    fn inference_layer(&self, _weights: &[Tensor]) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Every layer of an inference forward as one op, over each layer's weights as
    /// [`Kernels::inference_layer`] laid them out (`None`: the caller goes layer by layer).
    fn encoder_stack(
        &self,
        _x: &Tensor,
        _layer: &EncoderLayerShape,
        _weights: &[Tensor],
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// A whole layer as one op, where the backend has one for this mode (`None`: the
    /// caller composes the layer from the other kernels).
    fn encoder_layer(
        &self,
        _x: &Tensor,
        _layer: &EncoderLayerShape,
        _weights: LayerWeights,
    ) -> Result<Option<Tensor>> {
        Ok(None)
    }

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
}

/// The parts an inference batch on `device` is cut into, each on its own thread: one per
/// thread of the pool on the CPU ([`fused`]), one elsewhere. Batches formed by a token
/// budget keep a multiple of it ([`crate::encoder::bert::plan_batches`]).
pub fn parts_per_batch(device: &Device) -> usize {
    match device.is_cpu() {
        true => rayon::current_num_threads(),
        false => 1,
    }
}

/// The kernels for tensors of `dtype` on `device`: the fused CPU kernels for f32 on the
/// CPU, candle's ops everywhere else.
pub fn for_device(device: &Device, dtype: DType) -> &'static dyn Kernels {
    match device.is_cpu() && dtype == DType::F32 {
        true => &FusedCpu,
        false => &CandleOps,
    }
}
