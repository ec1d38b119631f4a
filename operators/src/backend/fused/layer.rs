//! A whole post-norm transformer layer as one differentiable op (CPU, f32): the training
//! forward of a BERT layer, and its backward written out by hand.
//!
//! Through candle's autograd a layer is some twenty ops, and the graph keeps every op's
//! output until the backward ends: the matmuls' outputs before their bias, the sums
//! before each residual, the GELU's output, 27 tensors of `(rows, hidden)` per layer in
//! all. Its backward allocates a zero tensor and adds into it for every node. PyTorch
//! keeps about 17 and frees each layer's as its backward passes. This op keeps what the
//! backward needs (q, k, v, the context, the two layer norms' inputs and the
//! pre-activation: 11 tensors of `(rows, hidden)` with the output), recomputes the
//! cheap rest (the first norm's output, the GELU), and drops its tape as soon as its
//! backward has run. The matrix products are gemm calls on the weights as stored, the
//! bias added in the same pass.
//!
//! The layer's sixteen weights come packed in one flat tensor ([`pack`]), in the order
//! of the checkpoint (`query`, `key`, `value`, `attention.output.dense`, its
//! `LayerNorm`, `intermediate.dense`, `output.dense`, its `LayerNorm`; weight then
//! bias), so candle's autograd carries their gradient back to each variable through the
//! concatenation.

use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp2, Layout, Shape, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::norm::{norm_backward_rows, norm_rows};
use super::rows::{
    add_into, bias_gelu_in_place, column_sums, linear, map, pad, parallelism, product, unpad,
    with_values, ROWS_PER_TASK,
};
use super::{contiguous_f32, gelu_slope, gelu_value};
use crate::backend::AttentionShape;

/// The sixteen weights of one layer packed into one flat tensor, in checkpoint order.
pub(crate) fn pack(weights: &[Tensor]) -> candle_core::Result<Tensor> {
    let flat = weights
        .iter()
        .map(Tensor::flatten_all)
        .collect::<candle_core::Result<Vec<_>>>()?;
    Tensor::cat(&flat, 0)
}

/// Where each weight lies in the packed tensor.
#[derive(Debug, Clone, Copy)]
pub(super) struct Offsets {
    pub(super) hidden: usize,
    pub(super) inter: usize,
    /// Start of weight `i` (and of the end, at index 16).
    pub(super) at: [usize; 17],
}

/// Indices of the packed weights.
pub(super) const QUERY: usize = 0;
pub(super) const KEY: usize = 2;
pub(super) const VALUE: usize = 4;
pub(super) const ATTN_OUT: usize = 6;
const ATTN_NORM: usize = 8;
pub(super) const INTER: usize = 10;
pub(super) const OUTPUT: usize = 12;
const OUT_NORM: usize = 14;

impl Offsets {
    pub(super) fn new(hidden: usize, inter: usize) -> Self {
        let (h, i) = (hidden, inter);
        let sizes = [
            h * h,
            h,
            h * h,
            h,
            h * h,
            h,
            h * h,
            h,
            h,
            h,
            i * h,
            i,
            h * i,
            h,
            h,
            h,
        ];
        let mut at = [0; 17];
        for (k, s) in sizes.iter().enumerate() {
            at[k + 1] = at[k] + s;
        }
        Self { hidden, inter, at }
    }

    fn get<'a>(&self, p: &'a [f32], k: usize) -> &'a [f32] {
        &p[self.at[k]..self.at[k + 1]]
    }

    fn get_mut<'a>(&self, p: &'a mut [f32], k: usize) -> &'a mut [f32] {
        &mut p[self.at[k]..self.at[k + 1]]
    }
}

/// A layer's sixteen weights as slices, in checkpoint order.
pub(crate) struct Weights<'a> {
    pub(super) w: [&'a [f32]; 16],
    /// The projections' weights are stored transposed, `(n_in, n_out)`.
    pub(super) transposed: bool,
}

impl<'a> Weights<'a> {
    /// The weights inside one packed buffer ([`pack`], or [`super::infer::pack_transposed`]).
    pub(super) fn packed(p: &'a [f32], o: &Offsets, transposed: bool) -> Self {
        Self {
            w: std::array::from_fn(|k| o.get(p, k)),
            transposed,
        }
    }
}

/// What the forward keeps for the backward.
pub(super) struct Tape {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    ctx: Vec<f32>,
    /// The first layer norm's input (attention output plus residual).
    x1: Vec<f32>,
    /// The intermediate projection before its GELU.
    z: Vec<f32>,
    /// The second layer norm's input.
    x2: Vec<f32>,
}

/// The op: inputs `x (rows, hidden)` and the packed weights; output `(rows, hidden)`.
pub(crate) struct EncoderLayer {
    shape: AttentionShape,
    offsets: Offsets,
    eps: f32,
    /// The threads of the forward's products: the whole pool, or one for a part of a batch.
    par: Parallelism,
    /// Filled by the forward, taken (and so freed) by the backward.
    tape: Mutex<Option<Tape>>,
}

impl EncoderLayer {
    /// The layer of `shape`'s batch, `hidden` wide with an `inter`-wide feed-forward block.
    pub(crate) fn new(shape: &AttentionShape, hidden: usize, inter: usize, eps: f64) -> Self {
        Self {
            shape: shape.clone(),
            offsets: Offsets::new(hidden, inter),
            eps: eps as f32,
            par: parallelism(),
            tape: Mutex::new(None),
        }
    }

    /// The layer applied to `x` with the packed weights `packed` ([`pack`]).
    pub(crate) fn apply(self, x: &Tensor, packed: &Tensor) -> candle_core::Result<Tensor> {
        x.contiguous()?.apply_op2(packed, self)
    }

    /// The op with its forward's products on `par`'s threads.
    pub(super) fn with_parallelism(mut self, par: Parallelism) -> Self {
        self.par = par;
        self
    }

    /// The layer's output, and the tape for its backward when `keep` (a training
    /// forward). Without it the feed-forward's first product is written without its bias
    /// and takes bias and GELU in one pass in place: no copy of the bias into each row, no
    /// second buffer for the GELU's output.
    pub(super) fn forward_rows(
        &self,
        x: &[f32],
        w: &Weights,
        keep: bool,
    ) -> candle_core::Result<(Vec<f32>, Option<Tape>)> {
        let o = &self.offsets;
        let (h, i) = (o.hidden, o.inter);
        let (t, w) = (w.transposed, &w.w);
        let lin = |x: &[f32], k: usize, n_in: usize, n_out: usize| {
            linear(x, (w[k], w[k + 1], t), (n_in, n_out), self.par)
        };
        let (q, k, v) = (lin(x, QUERY, h, h), lin(x, KEY, h, h), lin(x, VALUE, h, h));
        let ctx = self.shape.forward_unpadded(&q, &k, &v);
        let mut x1 = lin(&ctx, ATTN_OUT, h, h);
        add_into(&mut x1, x);
        let y1 = norm_rows(&x1, w[ATTN_NORM], w[ATTN_NORM + 1], self.eps);
        let (mut x2, z) = match keep {
            true => {
                let z = lin(&y1, INTER, h, i);
                let g = map(&z, gelu_value);
                (lin(&g, OUTPUT, i, h), Some(z))
            }
            false => {
                let mut g = product(&y1, (w[INTER], t), (h, i), self.par);
                bias_gelu_in_place(&mut g, w[INTER + 1]);
                (lin(&g, OUTPUT, i, h), None)
            }
        };
        add_into(&mut x2, &y1);
        drop(y1);
        let y2 = norm_rows(&x2, w[OUT_NORM], w[OUT_NORM + 1], self.eps);
        let tape = z.map(|z| Tape {
            q,
            k,
            v,
            ctx,
            x1,
            z,
            x2,
        });
        Ok((y2, tape))
    }

    /// `(∂x, ∂packed)` from the layer's input, weights and output gradient `dy` (∂x only
    /// when `want_dx`).
    fn backward_rows(
        &self,
        tape: Tape,
        (x, p, dy): (&[f32], &[f32], &[f32]),
        want_dx: bool,
    ) -> (Option<Vec<f32>>, Vec<f32>) {
        let o = &self.offsets;
        let (h, i) = (o.hidden, o.inter);
        let mut d = Grads {
            p,
            dp: vec![0f32; p.len()],
            offsets: o,
        };
        let Tape {
            q,
            k,
            v,
            ctx,
            x1,
            z,
            x2,
        } = tape;
        // Second norm, then the output projection (its input, the GELU, recomputed).
        let dx2 = d.norm(OUT_NORM, &x2, dy, self.eps);
        drop(x2);
        let g = map(&z, gelu_value);
        let mut dz = d.linear(OUTPUT, &g, &dx2, (i, h));
        drop(g);
        dz.par_chunks_mut(ROWS_PER_TASK * i)
            .zip(z.par_chunks(ROWS_PER_TASK * i))
            .for_each(|(d, z)| scale_by_gelu_slope(d, z));
        drop(z);
        // The intermediate projection, whose input (the first norm's output) is
        // recomputed; its residual brings ∂x2 along.
        let y1 = norm_rows(&x1, o.get(p, ATTN_NORM), o.get(p, ATTN_NORM + 1), self.eps);
        let dy1 = d
            .linear_acc(INTER, &y1, &dz, (h, i), Some(dx2))
            .unwrap_or_default();
        drop((y1, dz));
        let dx1 = d.norm(ATTN_NORM, &x1, &dy1, self.eps);
        drop((x1, dy1));
        // Attention, then the three projections, whose input gradients add up with the
        // residual's.
        let dctx = d.linear(ATTN_OUT, &ctx, &dx1, (h, h));
        drop(ctx);
        let [dq, dk, dv] = self.shape.backward_unpadded((&q, &k, &v, &dctx));
        drop((q, k, v, dctx));
        // Below a frozen embedding the input needs no gradient: its three products skipped.
        let mut dx = want_dx.then_some(dx1);
        for (k, dy) in [(QUERY, &dq), (KEY, &dk), (VALUE, &dv)] {
            dx = d.linear_acc(k, x, dy, (h, h), dx);
        }
        (dx, d.dp)
    }
}

super::wide::wide_fn! {
    /// `d ·= GELU'(z)`, element-wise.
    fn scale_by_gelu_slope(d: &mut [f32], z: &[f32]) {
        for (d, &z) in d.iter_mut().zip(z) {
            *d *= gelu_slope(z);
        }
    }
}

/// The packed weights and their gradient, filled weight by weight by the backward.
struct Grads<'a> {
    p: &'a [f32],
    dp: Vec<f32>,
    offsets: &'a Offsets,
}

impl Grads<'_> {
    /// The backward of the layer norm `k` over its input rows `x`: writes ∂w and ∂b,
    /// returns ∂x.
    fn norm(&mut self, k: usize, x: &[f32], dy: &[f32], eps: f32) -> Vec<f32> {
        let o = self.offsets;
        let (dx, dw, db) = norm_backward_rows(x, o.get(self.p, k), dy, eps);
        o.get_mut(&mut self.dp, k).copy_from_slice(&dw);
        o.get_mut(&mut self.dp, k + 1).copy_from_slice(&db);
        dx
    }

    /// The backward of the projection `k` (`y = x · Wᵀ + b`, `x` n_in wide, `y` n_out
    /// wide): writes ∂W = ∂yᵀ · x and ∂b = Σ_rows ∂y, returns ∂x = ∂y · W.
    fn linear(
        &mut self,
        k: usize,
        x: &[f32],
        dy: &[f32],
        (n_in, n_out): (usize, usize),
    ) -> Vec<f32> {
        let rows = dy.len() / n_out;
        let dx = vec![0f32; rows * n_in];
        self.linear_into(k, x, dy, (n_in, n_out), Some((dx, false)))
            .unwrap_or_default()
    }

    /// As [`Grads::linear`], ∂x added into `acc` when given, not computed otherwise.
    fn linear_acc(
        &mut self,
        k: usize,
        x: &[f32],
        dy: &[f32],
        (n_in, n_out): (usize, usize),
        acc: Option<Vec<f32>>,
    ) -> Option<Vec<f32>> {
        self.linear_into(k, x, dy, (n_in, n_out), acc.map(|a| (a, true)))
    }

    /// ∂W and ∂b of projection `k`; ∂x into the given buffer (added to it when the flag
    /// says so), or not at all.
    fn linear_into(
        &mut self,
        k: usize,
        x: &[f32],
        dy: &[f32],
        (n_in, n_out): (usize, usize),
        dx: Option<(Vec<f32>, bool)>,
    ) -> Option<Vec<f32>> {
        let o = self.offsets;
        let rows = dy.len() / n_out;
        let dw = o.get_mut(&mut self.dp, k);
        // SAFETY: ∂W is n_out × n_in (row stride n_in), ∂yᵀ is n_out × rows read from ∂y
        // (rows × n_out), x is rows × n_in: every index lies in its buffer.
        unsafe {
            gemm(
                n_out,
                n_in,
                rows,
                dw.as_mut_ptr(),
                1,
                n_in as isize,
                false,
                dy.as_ptr(),
                n_out as isize,
                1,
                x.as_ptr(),
                1,
                n_in as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism(),
            );
        }
        o.get_mut(&mut self.dp, k + 1)
            .copy_from_slice(&column_sums(dy, n_out));
        let (mut dx, accumulate) = dx?;
        let w = o.get(self.p, k);
        // SAFETY: ∂x is rows × n_in, ∂y rows × n_out, W n_out × n_in, all row-major.
        unsafe {
            gemm(
                rows,
                n_in,
                n_out,
                dx.as_mut_ptr(),
                1,
                n_in as isize,
                accumulate,
                dy.as_ptr(),
                1,
                n_out as isize,
                w.as_ptr(),
                1,
                n_in as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism(),
            );
        }
        Some(dx)
    }
}

impl CustomOp2 for EncoderLayer {
    fn name(&self) -> &'static str {
        "freshen-encoder-layer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(s1, l1, "encoder layer input")?;
        let p = contiguous_f32(s2, l2, "encoder layer weights")?;
        let o = &self.offsets;
        let rows = self.shape.batch * self.shape.tokens;
        if p.len() != o.at[16] || x.len() != rows * o.hidden {
            candle_core::bail!(
                "encoder layer: input {:?} and {} packed weights do not fit {:?} (hidden {}, intermediate {})",
                l1.shape(),
                p.len(),
                self.shape,
                o.hidden,
                o.inter
            );
        }
        let real = self.shape.real_rows();
        let (y, tape) = self.forward_rows(
            &unpad(x, &real, self.shape.tokens, o.hidden),
            &Weights::packed(p, o, false),
            true,
        )?;
        let y = pad(&y, &real, self.shape.tokens, o.hidden);
        *self
            .tape
            .lock()
            .map_err(|_| candle_core::Error::Msg("encoder layer: tape lock poisoned".into()))? =
            tape;
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        packed: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let tape = self
            .tape
            .lock()
            .map_err(|_| candle_core::Error::Msg("encoder layer: tape lock poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("encoder layer: backward ran twice".into()))?;
        let want_dx = x.track_op();
        let (real, t, h) = (
            self.shape.real_rows(),
            self.shape.tokens,
            self.offsets.hidden,
        );
        let xs = with_values(x, |xs| unpad(xs, &real, t, h))?;
        let gs = with_values(grad, |gs| unpad(gs, &real, t, h))?;
        let (dx, dp) = with_values(packed, |ps| {
            self.backward_rows(tape, (&xs, ps, &gs), want_dx)
        })?;
        let dx = match dx {
            Some(dx) => Some(Tensor::from_vec(
                pad(&dx, &real, t, h),
                x.shape(),
                x.device(),
            )?),
            None => None,
        };
        Ok((
            dx,
            Some(Tensor::from_vec(dp, packed.shape(), packed.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fused::infer::{infer, infer_in_parts, infer_stack, pack_transposed};
    use crate::backend::fused::tests::{max_diff, rand};
    use crate::backend::fused::{gelu, host, layer_norm};
    use candle_core::Var;

    /// The same layer through candle's ops and the per-op fused kernels (the path the
    /// model took before this op).
    fn reference(x: &Tensor, w: &[Var], shape: &AttentionShape, eps: f64) -> Tensor {
        let lin = |x: &Tensor, k: usize| {
            x.matmul(&w[k].t().unwrap())
                .unwrap()
                .broadcast_add(&w[k + 1])
                .unwrap()
        };
        let ctx = shape
            .fused(&lin(x, QUERY), &lin(x, KEY), &lin(x, VALUE))
            .unwrap();
        let x1 = (lin(&ctx, ATTN_OUT) + x).unwrap();
        let y1 = layer_norm(&x1, &w[ATTN_NORM], &w[ATTN_NORM + 1], eps).unwrap();
        let g = gelu(&lin(&y1, INTER)).unwrap();
        let x2 = (lin(&g, OUTPUT) + y1).unwrap();
        layer_norm(&x2, &w[OUT_NORM], &w[OUT_NORM + 1], eps).unwrap()
    }

    /// Forward and every gradient (input and the sixteen weights) agree with the
    /// composition on the real rows (padding rows come out zero), and the inference
    /// forward gives the training forward's bits in one part and is within a few ulp of
    /// them in several (gemm rounds a row by the rows it is computed with), for
    /// short texts (per-row attention) and long ones (blocked, and per-row for the short
    /// text among them).
    #[test]
    fn the_layer_op_matches_the_composition_forward_and_backward() {
        for (tokens, lengths) in [(7, vec![7, 3, 5]), (70, vec![70, 41, 9])] {
            let (h, i, heads) = (16, 40, 4);
            let shape = AttentionShape {
                batch: 3,
                tokens,
                heads,
                head_dim: h / heads,
                lengths,
            };
            let rows = 3 * tokens;
            let o = Offsets::new(h, i);
            let w: Vec<Var> = (0..16)
                .map(|k| {
                    let n = o.at[k + 1] - o.at[k];
                    let shape: Vec<usize> = match k {
                        INTER => vec![i, h],
                        OUTPUT => vec![h, i],
                        _ if n == h * h => vec![h, h],
                        _ => vec![n],
                    };
                    let t = (rand(&shape, 10 + k as u64) * 0.3).unwrap();
                    let t = match k {
                        ATTN_NORM | OUT_NORM => (t + 1.0).unwrap(),
                        _ => t,
                    };
                    Var::from_tensor(&t).unwrap()
                })
                .collect();
            let x = Var::from_tensor(&rand(&[rows, h], 1)).unwrap();
            // Padding rows are left out (the op computes none; pooling masks them): the
            // comparison and the probe cover the real rows.
            let mask: Vec<f32> = (0..rows)
                .map(|r| f32::from(u8::from(r % tokens < shape.lengths[r / tokens])))
                .collect();
            let mask = Tensor::from_vec(mask, (rows, 1), &crate::device::cpu()).unwrap();
            let real = |y: &Tensor| y.broadcast_mul(&mask).unwrap();
            let probe = real(&rand(&[rows, h], 2));
            let eps = 1e-12;
            let tensors: Vec<Tensor> = w.iter().map(|v| v.as_tensor().clone()).collect();
            let fused = EncoderLayer::new(&shape, h, i, eps)
                .apply(&x, &pack(&tensors).unwrap())
                .unwrap();
            let slow = reference(&x, &w, &shape, eps);
            assert!(
                max_diff(&fused, &real(&slow)) < 1e-4,
                "{tokens} tokens: forward"
            );
            let x0 = x.detach();
            let stored = infer(&x0, &tensors, &shape, (h, i, eps)).unwrap();
            let packed = pack_transposed(&tensors).unwrap();
            let stack = |layers: &[Tensor]| infer_stack(&x0, layers, &shape, (h, i, eps)).unwrap();
            let transposed = stack(std::slice::from_ref(&packed));
            assert!(
                max_diff(&transposed, &stored) < 1e-6,
                "{tokens} tokens: transposed"
            );
            // Two layers in one op: the second takes the first's output, padded or not.
            let again = infer(&stored, &tensors, &shape, (h, i, eps)).unwrap();
            let two = stack(&[packed.clone(), packed.clone()]);
            assert!(max_diff(&two, &again) < 1e-5, "{tokens} tokens: two layers");
            let (plain, packed) = (
                host(&pack(&tensors).unwrap()).unwrap(),
                host(&packed).unwrap(),
            );
            for (layout, t) in [(&plain, false), (&packed, true)] {
                let w = Weights::packed(layout, &o, t);
                let infer = |threads| {
                    infer_in_parts(&x0, std::slice::from_ref(&w), &shape, (h, i, eps), threads)
                        .unwrap()
                };
                let d = max_diff(&infer(1), &fused);
                assert!(
                    d == 0.0 || t && d < 1e-6,
                    "{tokens} tokens, transposed {t}: {d}"
                );
                for threads in [2, 3] {
                    let d = max_diff(&infer(threads), &fused);
                    assert!(d < 1e-6, "{tokens} tokens in {threads} parts: {d}");
                }
            }
            let grads = |y: &Tensor| (y * &probe).unwrap().sum_all().unwrap().backward().unwrap();
            let (gf, gs) = (grads(&fused), grads(&slow));
            for (k, v) in std::iter::once(&x).chain(&w).enumerate() {
                let d = max_diff(
                    gf.get(v.as_tensor()).unwrap(),
                    gs.get(v.as_tensor()).unwrap(),
                );
                assert!(d < 2e-3, "{tokens} tokens: gradient {k} differs by {d}");
            }
        }
    }
}
