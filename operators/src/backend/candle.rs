//! candle's own ops: the backend of every device without fused kernels (CUDA, Metal, and
//! the CPU in half precision), whose layers are composed from them
//! ([`super::composed`]).

use candle_core::{DType, Tensor, D};

use super::{AttentionShape, Kernels};
use crate::Result;

/// Additive attention bias of padding: exactly zero weight after the softmax.
const PADDING_BIAS: f64 = -1e9;

/// candle-nn's fused kernels for inference (they record no backward) and the
/// differentiable compositions for training.
#[derive(Debug)]
pub struct CandleOps;

impl Kernels for CandleOps {
    fn name(&self) -> &'static str {
        "candle"
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        eps: f64,
        train: bool,
    ) -> Result<Tensor> {
        Ok(match train {
            true => candle_nn::ops::layer_norm_slow(x, w, b, eps as f32)?,
            false => candle_nn::ops::layer_norm(&x.contiguous()?, w, b, eps as f32)?,
        })
    }

    fn softmax_last_dim(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        Ok(match train {
            true => candle_nn::ops::softmax(x, D::Minus1)?,
            false => candle_nn::ops::softmax_last_dim(&x.contiguous()?)?,
        })
    }

    fn gelu(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.gelu_erf()?)
    }

    fn attention_bias(&self, mask: &Tensor) -> Result<Option<Tensor>> {
        let (b, t) = mask.dims2()?;
        let bias = ((mask.ones_like()? - mask)? * PADDING_BIAS)?
            .reshape((b, 1, 1, t))?
            .to_dtype(DType::F32)?;
        Ok(Some(bias))
    }

    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        shape: &AttentionShape,
        bias: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let scale = 1.0 / (shape.head_dim as f64).sqrt();
        let q = shape.split_heads(&(q * scale)?)?;
        let k = shape.split_heads(k)?;
        let v = shape.split_heads(v)?;
        // Half-precision scores are masked and normalised in f32, as autocast does (the
        // padding bias does not fit f16).
        let dt = q.dtype();
        let mut scores = q.matmul(&k.t()?)?.to_dtype(DType::F32)?;
        if let Some(bias) = bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = self.softmax_last_dim(&scores, train)?.to_dtype(dt)?;
        shape.merge_heads(&probs.matmul(&v)?)
    }
}
