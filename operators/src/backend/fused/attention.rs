//! Fused multi-head self-attention for right-padded batches (CPU, f32), forward and
//! backward.
//!
//! Attention through candle ops is two batched matmuls of `b × heads` tiny matrices
//! (`t × 32` by `32 × t` for a 20-token batch), which candle runs one after the other,
//! each split over the thread pool: the fork-join overhead dwarfs the arithmetic. Plus the
//! transposes to and from `(b, heads, t, d)` copy every activation four times per layer.
//! This kernel reads q, k and v straight from the projections' `(b·t, hidden)` rows,
//! parallelises over texts, skips padded keys instead of masking them (so a text's result
//! does not depend on how much padding its batch has) and writes the context in the layout
//! the output projection reads. The backward recomputes the softmax rather than storing it.

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::wide::wide_fn;
use super::{contiguous_f32, host};
use crate::backend::AttentionShape;

impl AttentionShape {
    #[inline(always)]
    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }

    #[inline(always)]
    fn at(&self, i: usize, h: usize) -> usize {
        (i * self.heads + h) * self.head_dim
    }

    /// Softmax weights of query row `i` over the first `len` keys of one text and head.
    #[inline(always)]
    fn weights(&self, q: &[f32], k: &[f32], i: usize, h: usize, len: usize, out: &mut [f32]) {
        let d = self.head_dim;
        let qi = &q[self.at(i, h)..self.at(i, h) + d];
        let mut scores = [0f32; 512];
        let scores = match len <= scores.len() {
            true => &mut scores[..len],
            false => &mut vec![0f32; len][..],
        };
        for (j, s) in scores.iter_mut().enumerate() {
            let kj = &k[self.at(j, h)..self.at(j, h) + d];
            *s = dot(qi, kj) * self.scale();
        }
        super::softmax_row_body(scores, &mut out[..len]);
    }

    /// The context rows of `q`, `k`, `v` (each `(batch·tokens, heads·head_dim)`, row-major).
    pub(super) fn forward_rows(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
    ) -> candle_core::Result<Vec<f32>> {
        let (t, d) = (self.tokens, self.head_dim);
        let text = t * self.heads * d;
        if q.len() != self.batch * text || k.len() != q.len() || v.len() != q.len() {
            candle_core::bail!("attention: inputs do not match {self:?}");
        }
        let mut out = vec![0f32; q.len()];
        let blocked = t >= blocked_from();
        out.par_chunks_mut(text).enumerate().for_each(|(b, o)| {
            let r = b * text..(b + 1) * text;
            let len = self.lengths[b].clamp(1, t);
            self.text_forward((&q[r.clone()], &k[r.clone()], &v[r]), o, len, blocked);
        });
        Ok(out)
    }

    /// One text's context rows `o` from its `t` rows of q, k, v, of which the first `len`
    /// are real.
    fn text_forward(
        &self,
        (q, k, v): (&[f32], &[f32], &[f32]),
        o: &mut [f32],
        len: usize,
        blocked: bool,
    ) {
        if blocked {
            return self.blocked_forward(q, k, v, o, len);
        }
        short_forward(self, (q, k, v), o, len)
    }

    /// The real rows of each text, end to end (no padding rows): text `b` is
    /// `lengths[b]` rows (at least one, at most `tokens`), starting after the texts
    /// before it. This is the layout of [`AttentionShape::forward_unpadded`].
    pub(crate) fn real_rows(&self) -> Vec<std::ops::Range<usize>> {
        let mut at = 0;
        (0..self.batch)
            .map(|b| {
                let len = self.lengths[b].clamp(1, self.tokens);
                at += len;
                at - len..at
            })
            .collect()
    }

    /// The shape of one text of `len` tokens, none padding.
    fn one(&self, len: usize) -> AttentionShape {
        AttentionShape {
            batch: 1,
            tokens: len,
            heads: self.heads,
            head_dim: self.head_dim,
            lengths: vec![len],
        }
    }

    /// [`AttentionShape::forward_rows`] over the unpadded layout of
    /// [`AttentionShape::real_rows`]: no padded query row is computed, and each text takes
    /// the blocked or per-row path by its own length.
    pub(crate) fn forward_unpadded(&self, q: &[f32], k: &[f32], v: &[f32]) -> Vec<f32> {
        let w = self.heads * self.head_dim;
        let mut out = vec![0f32; q.len()];
        let parts = split_rows(&mut out, &self.real_rows(), w);
        let from = blocked_from();
        parts.into_par_iter().for_each(|(r, o)| {
            let x = r.start * w..r.end * w;
            let one = self.one(r.len());
            let texts = (&q[x.clone()], &k[x.clone()], &v[x]);
            one.text_forward(texts, o, r.len(), r.len() >= from);
        });
        out
    }

    /// The gradients `[dq, dk, dv]` over the unpadded layout (as
    /// [`AttentionShape::forward_unpadded`]).
    pub(crate) fn backward_unpadded(
        &self,
        (q, k, v, g): (&[f32], &[f32], &[f32], &[f32]),
    ) -> [Vec<f32>; 3] {
        let w = self.heads * self.head_dim;
        let rows = self.real_rows();
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; q.len()],
            vec![0f32; q.len()],
            vec![0f32; q.len()],
        );
        let parts = split_rows(&mut dq, &rows, w)
            .into_iter()
            .zip(split_rows(&mut dk, &rows, w))
            .zip(split_rows(&mut dv, &rows, w))
            .map(|(((r, dq), (_, dk)), (_, dv))| (r, dq, dk, dv))
            .collect::<Vec<_>>();
        let from = blocked_from();
        parts.into_par_iter().for_each(|(r, dq, dk, dv)| {
            let x = r.start * w..r.end * w;
            let one = self.one(r.len());
            let texts = (&q[x.clone()], &k[x.clone()], &v[x.clone()], &g[x]);
            one.text_backward(texts, (dq, dk, dv), r.len(), r.len() >= from);
        });
        [dq, dk, dv]
    }

    /// The gradients `[dq, dk, dv]` from the rows of `q`, `k`, `v` and the context's
    /// gradient `g` (all in the projections' layout).
    pub(super) fn backward_rows(&self, rows: (&[f32], &[f32], &[f32], &[f32])) -> [Vec<f32>; 3] {
        let (qs, ks, vs, gs) = rows;
        let (t, d) = (self.tokens, self.head_dim);
        let text = t * self.heads * d;
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; qs.len()],
            vec![0f32; qs.len()],
            vec![0f32; qs.len()],
        );
        let blocked = t >= blocked_from();
        dq.par_chunks_mut(text)
            .zip(dk.par_chunks_mut(text))
            .zip(dv.par_chunks_mut(text))
            .enumerate()
            .for_each(|(b, ((dq, dk), dv))| {
                let r = b * text..(b + 1) * text;
                let texts = (&qs[r.clone()], &ks[r.clone()], &vs[r.clone()], &gs[r]);
                let len = self.lengths[b].clamp(1, t);
                self.text_backward(texts, (dq, dk, dv), len, blocked);
            });
        [dq, dk, dv]
    }

    /// One text's gradients of its `t` rows of q, k, v from the context's gradient `g`,
    /// the first `len` rows real.
    fn text_backward(
        &self,
        (q, k, v, g): (&[f32], &[f32], &[f32], &[f32]),
        (dq, dk, dv): (&mut [f32], &mut [f32], &mut [f32]),
        len: usize,
        blocked: bool,
    ) {
        if blocked {
            return self.blocked_backward((q, k, v, g), dq, dk, dv, len);
        }
        short_backward(self, (q, k, v, g), (dq, dk, dv), len)
    }

    /// Runs the fused kernel: `q`, `k`, `v` are `(batch·tokens, heads·head_dim)`.
    pub(crate) fn fused(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        q.apply_op3(k, v, self.clone())
    }
}

wide_fn! {
    /// The per-row path of one text's forward (texts shorter than [`blocked_from`]).
    fn short_forward(
        s: &AttentionShape,
        qkv: (&[f32], &[f32], &[f32]),
        o: &mut [f32],
        len: usize,
    ) {
        let ((q, k, v), (t, d)) = (qkv, (s.tokens, s.head_dim));
        let mut p = vec![0f32; len];
        for h in 0..s.heads {
            for i in 0..t {
                s.weights(q, k, i, h, len, &mut p);
                let oi = &mut o[s.at(i, h)..s.at(i, h) + d];
                for (j, &pj) in p.iter().enumerate() {
                    let vj = &v[s.at(j, h)..s.at(j, h) + d];
                    for (o, v) in oi.iter_mut().zip(vj) {
                        *o += pj * v;
                    }
                }
            }
        }
    }
}

wide_fn! {
    /// The per-row path of one text's backward (texts shorter than [`blocked_from`]).
    fn short_backward(
        s: &AttentionShape,
        qkvg: (&[f32], &[f32], &[f32], &[f32]),
        grads: (&mut [f32], &mut [f32], &mut [f32]),
        len: usize,
    ) {
        let ((q, k, v, g), (dq, dk, dv)) = (qkvg, grads);
        let (t, d) = (s.tokens, s.head_dim);
        let scale = s.scale();
        let mut p = vec![0f32; len];
        let mut ds = vec![0f32; len];
        for h in 0..s.heads {
            for i in 0..t {
                s.weights(q, k, i, h, len, &mut p);
                let gi = &g[s.at(i, h)..s.at(i, h) + d];
                let mut rowsum = 0.0;
                for j in 0..len {
                    let vj = &v[s.at(j, h)..s.at(j, h) + d];
                    ds[j] = dot(gi, vj);
                    rowsum += p[j] * ds[j];
                    let dvj = &mut dv[s.at(j, h)..s.at(j, h) + d];
                    for (a, g) in dvj.iter_mut().zip(gi) {
                        *a += p[j] * g;
                    }
                }
                let qi = &q[s.at(i, h)..s.at(i, h) + d];
                let dqi_at = s.at(i, h);
                for j in 0..len {
                    let sj = p[j] * (ds[j] - rowsum) * scale;
                    let at = s.at(j, h);
                    let kj = &k[at..at + d];
                    for (a, kv) in dq[dqi_at..dqi_at + d].iter_mut().zip(kj) {
                        *a += sj * kv;
                    }
                    for (a, qv) in dk[at..at + d].iter_mut().zip(qi) {
                        *a += sj * qv;
                    }
                }
            }
        }
    }
}

/// Batches of at least this many tokens take the blocked path ([`super::blocked`]: the
/// score blocks as matrix products) in the forward and the backward; shorter ones the
/// per-row dot products, whose per-call cost is lower.
pub const BLOCKED_FROM: usize = 64;

/// [`BLOCKED_FROM`], or `FRESHEN_BLOCKED_ATTENTION_FROM` for measuring the two paths (0:
/// always blocked; a huge value: never).
pub fn blocked_from() -> usize {
    static FROM: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *FROM.get_or_init(|| {
        std::env::var("FRESHEN_BLOCKED_ATTENTION_FROM")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(BLOCKED_FROM)
    })
}

/// `buf` cut into the disjoint row ranges `rows` (rows `w` wide, ranges ascending).
fn split_rows<'a>(
    buf: &'a mut [f32],
    rows: &[std::ops::Range<usize>],
    w: usize,
) -> Vec<(std::ops::Range<usize>, &'a mut [f32])> {
    let mut rest = buf;
    let mut done = 0;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let (_, tail) = std::mem::take(&mut rest).split_at_mut((r.start - done) * w);
        let (part, tail) = tail.split_at_mut(r.len() * w);
        out.push((r.clone(), part));
        rest = tail;
        done = r.end;
    }
    out
}

/// Inner product with eight partial sums (one running sum would not vectorise).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let rest: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + rest
}

impl CustomOp3 for AttentionShape {
    fn name(&self) -> &'static str {
        "freshen-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            contiguous_f32(s1, l1, "attention q")?,
            contiguous_f32(s2, l2, "attention k")?,
            contiguous_f32(s3, l3, "attention v")?,
        );
        let out = self.forward_rows(q, k, v)?;
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    /// With P the softmax weights and dO the output's gradient: dV = Pᵀ dO,
    /// dS = P ⊙ (dO Vᵀ − rowsum(P ⊙ dO Vᵀ)), dQ = scale · dS K, dK = scale · dSᵀ Q.
    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (qs, ks, vs, gs) = (host(q)?, host(k)?, host(v)?, host(grad)?);
        let [dq, dk, dv] = self.backward_rows((&qs, &ks, &vs, &gs));
        let (dev, shape) = (q.device(), q.shape());
        Ok((
            Some(Tensor::from_vec(dq, shape, dev)?),
            Some(Tensor::from_vec(dk, shape, dev)?),
            Some(Tensor::from_vec(dv, shape, dev)?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::fused::tests::{max_diff, rand};
    use candle_core::{Var, D};

    /// The same attention through candle ops, masking padded keys with a large negative.
    fn reference(a: &AttentionShape, q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let (b, t, nh, d) = (a.batch, a.tokens, a.heads, a.head_dim);
        let heads = |x: &Tensor| {
            x.reshape((b, t, nh, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let mask: Vec<f32> = (0..b)
            .flat_map(|i| (0..t).map(move |j| if j < a.lengths[i] { 0.0 } else { -1e9 }))
            .collect();
        let mask = Tensor::from_vec(mask, (b, 1, 1, t), &crate::device::cpu()).unwrap();
        let s = (heads(q).matmul(&heads(k).t().unwrap()).unwrap() * a.scale() as f64)
            .unwrap()
            .broadcast_add(&mask)
            .unwrap();
        let p = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        p.matmul(&heads(v))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b * t, nh * d))
            .unwrap()
    }

    #[test]
    fn fused_attention_matches_candle_ops_forward_and_backward() {
        let a = AttentionShape {
            batch: 3,
            tokens: 7,
            heads: 2,
            head_dim: 4,
            lengths: vec![7, 3, 5],
        };
        let (q, k, v) = (
            Var::from_tensor(&rand(&[21, 8], 1)).unwrap(),
            Var::from_tensor(&rand(&[21, 8], 2)).unwrap(),
            Var::from_tensor(&rand(&[21, 8], 3)).unwrap(),
        );
        let probe = rand(&[21, 8], 4);
        let slow = reference(&a, &q, &k, &v);
        // The fused kernel, then the batched-matmul path long batches take.
        for long in [false, true] {
            let fused = match long {
                false => a.fused(&q, &k, &v).unwrap(),
                true => super::super::tests::matmul_attention(&q, &k, &v, &a).unwrap(),
            };
            check_against(&fused, &slow, &probe, [&q, &k, &v], long);
        }
    }

    /// From [`BLOCKED_FROM`] tokens the kernel takes the blocked (gemm) path: the same
    /// attention and gradients as candle's ops, with a padded text and a text whose
    /// length is not a multiple of any kernel width.
    #[test]
    fn blocked_attention_matches_candle_ops_forward_and_backward() {
        let t = BLOCKED_FROM + 6;
        let a = AttentionShape {
            batch: 2,
            tokens: t,
            heads: 3,
            head_dim: 8,
            lengths: vec![t, 37],
        };
        assert!(t >= blocked_from(), "the test needs the blocked path");
        let n = 2 * t;
        let (q, k, v) = (
            Var::from_tensor(&rand(&[n, 24], 5)).unwrap(),
            Var::from_tensor(&rand(&[n, 24], 6)).unwrap(),
            Var::from_tensor(&rand(&[n, 24], 7)).unwrap(),
        );
        let probe = rand(&[n, 24], 8);
        let slow = reference(&a, &q, &k, &v);
        let fused = a.fused(&q, &k, &v).unwrap();
        check_against(&fused, &slow, &probe, [&q, &k, &v], true);
    }

    fn check_against(fused: &Tensor, slow: &Tensor, probe: &Tensor, vars: [&Var; 3], long: bool) {
        let [q, k, v] = vars;
        assert!(max_diff(fused, slow) < 1e-5, "long {long}");
        let gf = (fused * probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gs = (slow * probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, x) in [("q", q), ("k", k), ("v", v)] {
            let (a, b) = (
                gf.get(x.as_tensor()).unwrap(),
                gs.get(x.as_tensor()).unwrap(),
            );
            assert!(
                max_diff(a, b) < 1e-4,
                "long {long}: d{name} differs by {}",
                max_diff(a, b)
            );
        }
    }
}
