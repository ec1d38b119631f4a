//! The transformer layer composed from smaller ops, in one place: what
//! [`Kernels::encoder_layer`] runs by default, for every backend without a whole-layer op
//! of its own for the layer at hand.
//!
//! The projections, residuals and the activations other than the exact GELU are candle
//! ops (differentiable, so a training forward records its backward through them); the
//! layer norms, the exact GELU and attention are the backend's own ([`Kernels`]).

use candle_core::Tensor;

use super::{Activation, EncoderBatch, Kernels};
use crate::{Error, Result};

/// One post-norm layer over `x`, `(b·t, hidden)`, with `kernels`' ops and the sixteen
/// `weights` as stored (checkpoint order): self-attention, its output projection,
/// residual and norm, then the feed-forward block with its residual and norm.
pub fn encoder_layer<K: Kernels + ?Sized>(
    kernels: &K,
    x: &Tensor,
    batch: &EncoderBatch,
    weights: &[Tensor],
    train: bool,
) -> Result<Tensor> {
    let Ok(w) = <&[Tensor; 16]>::try_from(weights) else {
        return Err(Error::Setting(format!(
            "encoder layer: {} weights, not 16",
            weights.len()
        )));
    };
    let norm = |x: &Tensor, weight: &Tensor, bias: &Tensor| -> Result<Tensor> {
        let dt = x.dtype();
        let (weight, bias) = (weight.to_dtype(dt)?, bias.to_dtype(dt)?);
        kernels.layer_norm(x, &weight, &bias, batch.eps, train)
    };
    let ctx = kernels.attention(
        &linear(x, &w[0], &w[1])?,
        &linear(x, &w[2], &w[3])?,
        &linear(x, &w[4], &w[5])?,
        &batch.attention,
        batch.bias.as_ref(),
        train,
    )?;
    let attn = norm(&(linear(&ctx, &w[6], &w[7])? + x)?, &w[8], &w[9])?;
    let inter = linear(&attn, &w[10], &w[11])?;
    let inter = match batch.activation {
        Activation::Relu => inter.relu()?,
        Activation::GeluTanh => inter.gelu()?,
        Activation::Gelu => kernels.gelu(&inter)?,
    };
    norm(&(linear(&inter, &w[12], &w[13])? + attn)?, &w[14], &w[15])
}

/// `x (rows, in) · Wᵀ + b` in `x`'s dtype; gemm reads the transposed weight through its
/// strides. The f32 weights are cast for a half-precision `x` (a no-op for f32), so
/// gradients reach the f32 master weights through the cast.
fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let dt = x.dtype();
    Ok(x.matmul(&weight.to_dtype(dt)?.t()?)?
        .broadcast_add(&bias.to_dtype(dt)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fused::tests::{max_diff, rand};
    use crate::backend::fused::LAYOUT_FROM_TOKENS;
    use crate::backend::{AttentionShape, CandleOps, FusedCpu, LayerWeights};

    const HIDDEN: usize = 16;
    const INTER: usize = 40;
    const TOKENS: usize = 9;
    const LENGTHS: [usize; 3] = [9, 4, 6];

    /// Seeded weights of one layer, in checkpoint order.
    fn layer_weights(seed: u64) -> Vec<Tensor> {
        let (h, i) = (HIDDEN, INTER);
        let square = || vec![h, h];
        let shapes = [
            square(),
            vec![h],
            square(),
            vec![h],
            square(),
            vec![h],
            square(),
            vec![h],
            vec![h],
            vec![h],
            vec![i, h],
            vec![i],
            vec![h, i],
            vec![h],
            vec![h],
            vec![h],
        ];
        let mut out = Vec::with_capacity(16);
        for (k, shape) in shapes.iter().enumerate() {
            let t = (rand(shape, seed + k as u64) * 0.3).unwrap();
            out.push(match k {
                8 | 14 => (t + 1.0).unwrap(),
                _ => t,
            });
        }
        out
    }

    /// 1 for a real token, 0 for padding, `(b, t)`.
    fn mask() -> Tensor {
        let m: Vec<f32> = (0..LENGTHS.len() * TOKENS)
            .map(|r| f32::from(u8::from(r % TOKENS < LENGTHS[r / TOKENS])))
            .collect();
        Tensor::from_vec(m, (LENGTHS.len(), TOKENS), &crate::device::cpu()).unwrap()
    }

    fn batch(kernels: &dyn Kernels) -> EncoderBatch {
        EncoderBatch {
            attention: AttentionShape {
                batch: LENGTHS.len(),
                tokens: TOKENS,
                heads: 4,
                head_dim: HIDDEN / 4,
                lengths: LENGTHS.to_vec(),
            },
            hidden: HIDDEN,
            intermediate: INTER,
            eps: 1e-12,
            activation: Activation::Gelu,
            bias: kernels.attention_bias(&mask()).unwrap(),
        }
    }

    /// Two layers through a backend's [`Kernels::encoder_stack`] for a call of `tokens`,
    /// with the padding rows zeroed (the fused layers compute none).
    fn stack(kernels: &dyn Kernels, x: &Tensor, train: bool, tokens: usize) -> Tensor {
        let weights: Vec<LayerWeights> = [0, 100]
            .into_iter()
            .map(|seed| {
                let w = layer_weights(seed);
                kernels
                    .prepare_layer(&w, Activation::Gelu, train, tokens)
                    .unwrap()
            })
            .collect();
        let y = kernels
            .encoder_stack(x, &batch(kernels), &weights, train)
            .unwrap();
        let rows = mask().flatten_all().unwrap().unsqueeze(1).unwrap();
        y.broadcast_mul(&rows).unwrap()
    }

    /// The fused CPU backend's own layers (training, and inference on the weights as
    /// stored and laid out) give the composed layers' token vectors; weights one backend
    /// packed are refused by the composition rather than misread.
    #[test]
    fn owned_and_composed_layers_agree() {
        let x = rand(&[LENGTHS.len() * TOKENS, HIDDEN], 1);
        let composed = stack(&CandleOps, &x, false, 0);
        for (train, tokens) in [(true, 0), (false, 0), (false, LAYOUT_FROM_TOKENS)] {
            let d = max_diff(&stack(&FusedCpu, &x, train, tokens), &composed);
            assert!(d < 1e-4, "train {train}, {tokens} tokens: {d}");
        }
        let packed = FusedCpu
            .prepare_layer(&layer_weights(0), Activation::Gelu, true, 0)
            .unwrap();
        assert!(matches!(packed, LayerWeights::Packed(_)));
        assert!(CandleOps
            .encoder_layer(&x, &batch(&CandleOps), &packed, false)
            .is_err());
    }
}
