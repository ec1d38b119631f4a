//! The CPU backend: fused layer-norm, softmax, GELU and attention kernels that carry
//! their own backward (f32).
//!
//! candle-nn's fused `layer_norm` and `softmax_last_dim` are fast but record no backward
//! (a loss through them silently trains nothing); the differentiable alternatives
//! (`layer_norm_slow`, `softmax`) are chains of eight to ten broadcast ops, each
//! allocating a full-size tensor and each adding a node to the backward pass. These
//! kernels do one pass over each row forward and one backward, and are used for training
//! forwards. A whole transformer layer runs as one op ([`layer`], with its backward), and
//! an inference forward as one op over all the layers, a batch cut into one part a thread
//! ([`infer`]); a layer composed op by op takes candle-nn's fused layer norm for inference.

mod attention;
mod blocked;
mod infer;
mod layer;
mod norm;
mod rows;
mod wide;

use crate::host::HostRead;
use wide::wide_fn;

use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::{composed, Activation, AttentionShape, EncoderBatch, Kernels, LayerWeights};
use crate::Result;

/// Tokens from which an inference call lays each layer's weights out for the
/// whole-stack op ([`Kernels::prepare_layer`]) rather than running the layers one by
/// one on the weights as stored. The copy costs a small part of one full batch of the
/// default budget, which the faster products repay within the call (measured on
/// `pipelines/embed-minilm.yaml`: docs/design/performance.md, "A batch in parts").
pub const LAYOUT_FROM_TOKENS: usize = 4096;

/// The CPU's kernels: the fused ops of this module for training and attention, candle-nn's
/// fused (non-differentiable) ops for inference.
#[derive(Debug)]
pub struct FusedCpu;

impl FusedCpu {
    /// Whether a layer with `activation` runs as this backend's whole-layer op (what the
    /// op computes: the exact GELU) rather than composed. f32 only: [`super::for_device`]
    /// gives other types to [`super::CandleOps`].
    fn owns(activation: Activation) -> bool {
        activation == Activation::Gelu
    }
}

impl Kernels for FusedCpu {
    fn name(&self) -> &'static str {
        "cpu-fused"
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        eps: f64,
        train: bool,
    ) -> Result<Tensor> {
        match train {
            true => layer_norm(x, w, b, eps),
            false => Ok(candle_nn::ops::layer_norm(
                &x.contiguous()?,
                w,
                b,
                eps as f32,
            )?),
        }
    }

    /// One kernel for training and inference (its vectorised exp beat candle-nn's libm
    /// calls); on detached inputs it records nothing.
    fn softmax_last_dim(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        softmax_last_dim(x)
    }

    fn gelu(&self, x: &Tensor) -> Result<Tensor> {
        gelu(x)
    }

    fn attention_bias(&self, _mask: &Tensor) -> Result<Option<Tensor>> {
        // The fused kernel skips padded keys by the texts' lengths: no mask tensor.
        Ok(None)
    }

    /// The layer's weights packed for its whole-layer op where it has one for
    /// `activation` (the exact GELU): for a training forward as [`layer::pack`]; for
    /// an inference call of [`LAYOUT_FROM_TOKENS`] tokens or more with the six
    /// projections' weights transposed, `(n_in, n_out)`, which gemm then reads in the
    /// order its kernel walks them, with no packing of its own (measured by `cargo bench
    /// --bench gemm`). A shorter inference call runs on the weights as stored.
    fn prepare_layer(
        &self,
        weights: &[Tensor],
        activation: Activation,
        train: bool,
        tokens: usize,
    ) -> Result<LayerWeights> {
        Ok(match (Self::owns(activation), train) {
            (true, true) => LayerWeights::Packed(layer::pack(weights)?),
            (true, false) if tokens >= LAYOUT_FROM_TOKENS => {
                LayerWeights::Packed(infer::pack_transposed(weights)?)
            }
            _ => LayerWeights::Stored(weights.to_vec()),
        })
    }

    /// Whole layers run as one op ([`layer`]): a training forward keeps 11 of the 27
    /// tensors the op-by-op graph keeps and frees them as the backward passes; an
    /// inference forward makes fewer passes over memory. Other activations are composed.
    fn encoder_layer(
        &self,
        x: &Tensor,
        batch: &EncoderBatch,
        weights: &LayerWeights,
        train: bool,
    ) -> Result<Tensor> {
        let (shape, sizes) = (
            &batch.attention,
            (batch.hidden, batch.intermediate, batch.eps),
        );
        if !Self::owns(batch.activation) {
            return composed::encoder_layer(self, x, batch, weights.stored()?, train);
        }
        Ok(match (weights, train) {
            (LayerWeights::Packed(p), true) => {
                layer::EncoderLayer::new(shape, sizes.0, sizes.1, sizes.2).apply(x, p)?
            }
            (LayerWeights::Stored(w), true) => {
                layer::EncoderLayer::new(shape, sizes.0, sizes.1, sizes.2)
                    .apply(x, &layer::pack(w)?)?
            }
            (LayerWeights::Packed(p), false) => {
                infer::infer_stack(x, std::slice::from_ref(p), shape, sizes)?
            }
            (LayerWeights::Stored(w), false) => infer::infer(x, w, shape, sizes)?,
        })
    }

    /// An inference forward on packed weights runs every layer as one op, each part of
    /// the batch through all of them on its own thread ([`infer::infer_stack`]); anything
    /// else layer by layer.
    fn encoder_stack(
        &self,
        x: &Tensor,
        batch: &EncoderBatch,
        weights: &[LayerWeights],
        train: bool,
    ) -> Result<Tensor> {
        let packed: Option<Vec<Tensor>> = weights
            .iter()
            .map(|w| match w {
                LayerWeights::Packed(p) => Some(p.clone()),
                LayerWeights::Stored(_) => None,
            })
            .collect();
        match packed {
            Some(p) if !train && Self::owns(batch.activation) => {
                let sizes = (batch.hidden, batch.intermediate, batch.eps);
                Ok(infer::infer_stack(x, &p, &batch.attention, sizes)?)
            }
            _ => weights
                .iter()
                .try_fold(x.clone(), |x, w| self.encoder_layer(&x, batch, w, train)),
        }
    }

    /// An inference forward of whole layers runs each batch in parts, one a thread
    /// ([`infer`]); a training forward runs each batch whole, so that its batches, and so
    /// its numbers, do not depend on the thread count.
    fn parts_per_batch(&self, activation: Activation, train: bool) -> usize {
        match !train && Self::owns(activation) {
            true => rayon::current_num_threads(),
            false => 1,
        }
    }

    /// The fused kernel, training and inference alike: per-row dot products for short
    /// batches, matrix products per text and head from [`attention::BLOCKED_FROM`] tokens
    /// (`blocked`), the score blocks recomputed in the backward rather than kept.
    fn attention(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        shape: &AttentionShape,
        _bias: Option<&Tensor>,
        _train: bool,
    ) -> Result<Tensor> {
        Ok(shape.fused(q, k, v)?)
    }
}

/// Rows per parallel task: small rows are not worth a task each.
const ROWS_PER_TASK: usize = 64;

/// `(x - mean) / sqrt(var + eps) * weight + bias` over the last dimension, one pass per
/// row forward and backward (f32).
pub(crate) fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(x.apply_op3(weight, bias, norm::LayerNorm { eps: eps as f32 })?)
}

/// Softmax over the last dimension with its own backward (f32).
pub(crate) fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    Ok(x.apply_op1(Softmax)?)
}

/// GELU in its exact (erf) form, as BERT checkpoints use: `x · Φ(x)`, with its own
/// backward and a polynomial erf (Abramowitz and Stegun 7.1.26, absolute error below
/// 1.5e-7, well inside float noise of the layer around it). It replaces candle's, whose
/// scalar libm `erf` took an eighth of the encoder's time in profiles.
pub(crate) fn gelu(x: &Tensor) -> Result<Tensor> {
    Ok(x.contiguous()?.apply_op1(Gelu)?)
}

/// e^x in a form the compiler vectorises (libm's `expf` is a call per element: a ninth of
/// the encoder's time at 256 tokens, in the softmaxes and GELU): 2^(x·log2 e) split into
/// an integer power n, put in the exponent bits, and e^f for f = x - n·ln 2 (|f| ≤ ½ ln 2)
/// by its degree-6 Taylor polynomial. Relative error below 2.5e-7 (tested); exactly 0 below -87 (so padding
/// biased by -1e9 gets no weight), and inputs above 88 give e^88.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
                                     // ln 2 in two parts (Cody and Waite), so that x - n·ln 2 loses no bits.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let xc = x.clamp(-87.0, 88.0);
    let r = xc * std::f32::consts::LOG2_E + MAGIC;
    let n = r - MAGIC;
    let f = xc - n * LN2_HI - n * LN2_LO; // |f| ≤ ½ ln 2
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    let power = f32::from_bits(((r.to_bits() as i32 - MAGIC.to_bits() as i32 + 127) << 23) as u32);
    match x < -87.0 {
        true => 0.0,
        false => p * power,
    }
}

wide_fn! {
    /// `out = softmax(x)` for one row, in passes the compiler vectorises: a float
    /// reduction written as one running sum or maximum stays scalar (its order is fixed),
    /// so these keep [`LANES`] partial ones.
    pub(crate) fn softmax_row(x: &[f32], out: &mut [f32]) {
        softmax_row_body(x, out)
    }
}

/// [`softmax_row`]'s body, for kernels that inline it.
#[inline(always)]
pub(crate) fn softmax_row_body(x: &[f32], out: &mut [f32]) {
    let max = lanes(x, f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
    for (o, &x) in out.iter_mut().zip(x) {
        *o = exp(x - max);
    }
    let inv = 1.0 / lanes(out, 0.0, |a, b| a + b);
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// Partial reductions kept per lane.
const LANES: usize = 16;

/// `v` reduced by `f` from `init`, over [`LANES`] partial results then combined.
#[inline(always)]
pub(crate) fn lanes(v: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; LANES];
    let chunks = v.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            acc[i] = f(acc[i], c[i]);
        }
    }
    let acc = acc.into_iter().fold(init, &f);
    rest.iter().fold(acc, |a, &b| f(a, b))
}

/// `Σ_j term(j)` for `j < n`, over [`LANES`] partial sums then combined (a sum the
/// compiler vectorises; `term` should be a few loads and products).
#[inline(always)]
pub(crate) fn sum_lanes(n: usize, term: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let full = n / LANES * LANES;
    for c in (0..full).step_by(LANES) {
        for (i, a) in acc.iter_mut().enumerate() {
            *a += term(c + i);
        }
    }
    let acc = acc.into_iter().fold(0.0, |a, b| a + b);
    (full..n).fold(acc, |a, j| a + term(j))
}

/// erf(x) by Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// x·Φ(x).
#[inline(always)]
pub(crate) fn gelu_value(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * SQRT_HALF))
}

/// d/dx x·Φ(x) = Φ(x) + x·φ(x).
#[inline(always)]
pub(crate) fn gelu_slope(x: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf(x * SQRT_HALF));
    let pdf = INV_SQRT_2PI * exp(-0.5 * x * x);
    cdf + x * pdf
}

struct Gelu;

wide_fn! {
    /// `o = g · GELU'(x)`, element-wise.
    fn gelu_grad_into(o: &mut [f32], x: &[f32], g: &[f32]) {
        for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
            *o = g * gelu_slope(x);
        }
    }
}

const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;

impl CustomOp1 for Gelu {
    fn name(&self) -> &'static str {
        "freshen-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "gelu")?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(1 << 14)
            .zip(x.par_chunks(1 << 14))
            .for_each(|(o, x)| rows::map_into(o, x, gelu_value));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// d/dx x·Φ(x) = Φ(x) + x·φ(x).
    fn bwd(&self, x: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (xs, gs) = (host(x)?, host(grad)?);
        let mut gx = vec![0f32; xs.len()];
        gx.par_chunks_mut(1 << 14)
            .zip(xs.par_chunks(1 << 14).zip(gs.par_chunks(1 << 14)))
            .for_each(|(o, (x, g))| gelu_grad_into(o, x, g));
        Ok(Some(Tensor::from_vec(gx, x.shape(), x.device())?))
    }
}

/// The values of a contiguous f32 CPU storage, in place.
pub(crate) fn contiguous_f32<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{what}: input must be contiguous"),
    }
}

/// A tensor's values as a host vector (a backward's inputs may be strided).
pub(crate) fn host(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.host_vec1::<f32>()
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "freshen-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s, l, "softmax")?;
        let n = l.dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(x.par_chunks(n * ROWS_PER_TASK))
            .for_each(|(o, x)| {
                for (o, x) in o.chunks_mut(n).zip(x.chunks(n)) {
                    softmax_row(x, o);
                }
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }

    /// ∂x = y ⊙ (g - Σ g ⊙ y), per row.
    fn bwd(&self, _x: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let (ys, gs) = (host(res)?, host(grad)?);
        let n = res.dims().last().copied().unwrap_or(1).max(1);
        let mut gx = vec![0f32; ys.len()];
        gx.par_chunks_mut(n * ROWS_PER_TASK)
            .zip(
                ys.par_chunks(n * ROWS_PER_TASK)
                    .zip(gs.par_chunks(n * ROWS_PER_TASK)),
            )
            .for_each(|(gx, (y, g))| {
                for (gx, (y, g)) in gx.chunks_mut(n).zip(y.chunks(n).zip(g.chunks(n))) {
                    let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                    for j in 0..n {
                        gx[j] = y[j] * (g[j] - dot);
                    }
                }
            });
        Ok(Some(Tensor::from_vec(gx, res.shape(), res.device())?))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Attention as `softmax(q kᵀ / √d + padding bias) v` over `(b·heads, t, d)` copies of
    /// the projections, with this backend's softmax (differentiable): a reference for the
    /// fused kernel.
    pub(crate) fn matmul_attention(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        shape: &AttentionShape,
    ) -> Result<Tensor> {
        let (b, t, nh, dh) = (shape.batch, shape.tokens, shape.heads, shape.head_dim);
        let heads = |y: &Tensor| -> Result<Tensor> {
            Ok(y.reshape((b, t, nh, dh))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * nh, t, dh))?)
        };
        let scale = 1.0 / (dh as f64).sqrt();
        let (qh, kh, vh) = (heads(&(q * scale)?)?, heads(k)?, heads(v)?);
        let mut scores = qh.matmul(&kh.transpose(1, 2)?)?;
        if shape.lengths.iter().any(|&n| n < t) {
            // Padded keys get -1e9: exactly zero weight after the softmax.
            let mut bias = vec![0f32; b * t];
            for (i, &n) in shape.lengths.iter().enumerate() {
                bias[i * t + n.min(t)..(i + 1) * t].fill(-1e9);
            }
            let bias = Tensor::from_vec(bias, (b, 1, 1, t), q.device())?;
            scores = scores
                .reshape((b, nh, t, t))?
                .broadcast_add(&bias)?
                .reshape((b * nh, t, t))?;
        }
        let probs = softmax_last_dim(&scores)?;
        Ok(probs
            .matmul(&vh)?
            .reshape((b, nh, t, dh))?
            .transpose(1, 2)?
            .reshape((b * t, nh * dh))?)
    }

    use candle_core::{Var, D};

    #[test]
    fn the_vectorised_exp_is_within_2_5e_7_of_libm() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert_eq!(exp(-1e9), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
    }

    /// Seeded standard-normal values of `shape`.
    pub(crate) fn rand(shape: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::random::SplitMix64::new(seed);
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
        Tensor::from_vec(v, shape, &crate::device::cpu()).unwrap()
    }

    /// Largest absolute difference between two tensors.
    pub(crate) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .host_scalar()
            .unwrap()
    }

    /// The fused kernels and their backward agree with candle's differentiable
    /// compositions (forward, and gradients of a random linear functional).
    #[test]
    fn fused_kernels_match_the_compositions() {
        let x = Var::from_tensor(&rand(&[130, 24], 1)).unwrap();
        let w = Var::from_tensor(&(rand(&[24], 2) + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&rand(&[24], 3)).unwrap();
        let probe = rand(&[130, 24], 4);
        let fused = layer_norm(&x, &w, &b, 1e-12).unwrap();
        let slow = candle_nn::ops::layer_norm_slow(&x, &w, &b, 1e-12).unwrap();
        assert!(max_diff(&fused, &slow) < 1e-5);
        let gf = (fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gs = (slow * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for v in [&x, &w, &b] {
            let (a, b) = (
                gf.get(v.as_tensor()).unwrap(),
                gs.get(v.as_tensor()).unwrap(),
            );
            assert!(
                max_diff(a, b) < 1e-4,
                "layer norm grad differs by {}",
                max_diff(a, b)
            );
        }

        let g = Var::from_tensor(&(rand(&[40, 50], 7) * 3.0).unwrap()).unwrap();
        let probe = rand(&[40, 50], 8);
        let fused = gelu(&g).unwrap();
        let exact = g.gelu_erf().unwrap();
        assert!(
            max_diff(&fused, &exact) < 1e-6,
            "gelu {}",
            max_diff(&fused, &exact)
        );
        let gf = (fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let ge = (exact * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (
            gf.get(g.as_tensor()).unwrap(),
            ge.get(g.as_tensor()).unwrap(),
        );
        assert!(
            max_diff(a, b) < 1e-5,
            "gelu grad differs by {}",
            max_diff(a, b)
        );

        let s = Var::from_tensor(&rand(&[3, 70, 9], 5)).unwrap();
        let probe = rand(&[3, 70, 9], 6);
        let fused = softmax_last_dim(&s).unwrap();
        let slow = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        assert!(max_diff(&fused, &slow) < 1e-6);
        let gf = (fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gs = (slow * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let (a, b) = (
            gf.get(s.as_tensor()).unwrap(),
            gs.get(s.as_tensor()).unwrap(),
        );
        assert!(
            max_diff(a, b) < 1e-5,
            "softmax grad differs by {}",
            max_diff(a, b)
        );
    }
}
