//! Row-major f32 buffers: the projection (`x · Wᵀ + b` through gemm), element-wise passes
//! and column sums of the whole-layer op ([`super::layer`]), and a tensor's values read in
//! place.

use std::ops::Range;

use candle_core::{Storage, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;

use super::wide::wide_fn;
use super::{gelu_value, host};

/// Rows per task of the bias gradients' partial sums (a fixed size: the sums' order, and
/// so the result, does not depend on the thread count).
pub(super) const ROWS_PER_TASK: usize = 256;

/// gemm over the whole thread pool.
pub(super) fn parallelism() -> Parallelism {
    Parallelism::Rayon(rayon::current_num_threads())
}

/// `x (rows, n_in) · Wᵀ + b` for `W (n_out, n_in)`, or for W stored transposed, `(n_in,
/// n_out)`, when `transposed`: the output starts as the bias and gemm adds the product
/// into it, over `par`'s threads.
pub(super) fn linear(
    x: &[f32],
    (w, b, transposed): (&[f32], &[f32], bool),
    (n_in, n_out): (usize, usize),
    par: Parallelism,
) -> Vec<f32> {
    let rows = x.len() / n_in;
    let mut y = Vec::with_capacity(rows * n_out);
    for _ in 0..rows {
        y.extend_from_slice(b);
    }
    // SAFETY: y holds rows × n_out values.
    unsafe { product_into(y.as_mut_ptr(), x, (w, transposed), (n_in, n_out), true, par) };
    y
}

/// `x (rows, n_in) · Wᵀ` with no bias, W as in [`linear`]: gemm writes the output without
/// reading it, so it is never filled first.
pub(super) fn product(
    x: &[f32],
    (w, transposed): (&[f32], bool),
    (n_in, n_out): (usize, usize),
    par: Parallelism,
) -> Vec<f32> {
    let len = x.len() / n_in * n_out;
    let mut y = Vec::with_capacity(len);
    // SAFETY: y has room for rows × n_out values, which gemm writes without reading
    // them (`read` false); the length is set only after it has.
    unsafe {
        product_into(
            y.as_mut_ptr(),
            x,
            (w, transposed),
            (n_in, n_out),
            false,
            par,
        );
        y.set_len(len);
    }
    y
}

/// `y (+)= x · Wᵀ` into `y`'s rows × n_out values (added to them when `read`).
///
/// # Safety
/// `y` must point to room for rows × n_out values (`rows` = x's rows), initialised when
/// `read`.
unsafe fn product_into(
    y: *mut f32,
    x: &[f32],
    (w, transposed): (&[f32], bool),
    (n_in, n_out): (usize, usize),
    read: bool,
    par: Parallelism,
) {
    let rows = x.len() / n_in;
    assert_eq!(w.len(), n_in * n_out, "projection weights");
    if rows == 0 {
        return;
    }
    // Wᵀ (n_in × n_out): element (a, c) at a + c·n_in in W, at a·n_out + c transposed.
    let (w_cs, w_rs) = match transposed {
        false => (n_in as isize, 1),
        true => (1, n_out as isize),
    };
    // SAFETY: y holds rows × n_out values (the caller's contract), x is rows × n_in, and
    // Wᵀ (n_in × n_out) is read from w (n_in · n_out values, asserted) by the strides above.
    unsafe {
        gemm(
            rows,
            n_out,
            n_in,
            y,
            1,
            n_out as isize,
            read,
            x.as_ptr(),
            1,
            n_in as isize,
            w.as_ptr(),
            w_cs,
            w_rs,
            if read { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// `a += b`, element-wise.
pub(super) fn add_into(a: &mut [f32], b: &[f32]) {
    a.par_chunks_mut(1 << 14)
        .zip(b.par_chunks(1 << 14))
        .for_each(|(a, b)| add_chunk(a, b));
}

/// `f` of every element.
pub(super) fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(1 << 14)
        .zip(x.par_chunks(1 << 14))
        .for_each(|(o, x)| map_into(o, x, &f));
    out
}

/// `z = GELU(z + b)` in place, z's rows `b.len()` wide.
pub(super) fn bias_gelu_in_place(z: &mut [f32], b: &[f32]) {
    z.par_chunks_mut(ROWS_PER_TASK * b.len())
        .for_each(|rows| bias_gelu_chunk(rows, b));
}

wide_fn! {
    /// `z = GELU(z + b)` over one task's rows.
    fn bias_gelu_chunk(z: &mut [f32], b: &[f32]) {
        for row in z.chunks_exact_mut(b.len()) {
            for (z, &b) in row.iter_mut().zip(b) {
                *z = gelu_value(*z + b);
            }
        }
    }
}

wide_fn! {
    /// `a += b` on one thread.
    fn add_chunk(a: &mut [f32], b: &[f32]) {
        for (a, b) in a.iter_mut().zip(b) {
            *a += b;
        }
    }
}

wide_fn! {
    /// `o = f(x)` on one thread; `f` should be an `#[inline(always)]` function or a
    /// closure calling one, so that it is compiled into the wide kernel too.
    pub(super) fn map_into(o: &mut [f32], x: &[f32], f: impl Fn(f32) -> f32) {
        for (o, &x) in o.iter_mut().zip(x) {
            *o = f(x);
        }
    }
}

wide_fn! {
    /// Σ over the rows (`cols` wide) of one task's rows.
    fn column_sum_chunk(rows: &[f32], cols: usize) -> Vec<f32> {
        let mut s = vec![0f32; cols];
        for r in rows.chunks_exact(cols) {
            for (s, x) in s.iter_mut().zip(r) {
                *s += x;
            }
        }
        s
    }
}

/// Σ over the rows of a row-major matrix `cols` wide: partial sums per task of
/// [`ROWS_PER_TASK`] rows, added in task order.
pub(super) fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let partial: Vec<Vec<f32>> = m
        .par_chunks(ROWS_PER_TASK * cols)
        .map(|rows| column_sum_chunk(rows, cols))
        .collect();
    let mut out = vec![0f32; cols];
    for s in partial {
        out.iter_mut().zip(s).for_each(|(o, x)| *o += x);
    }
    out
}

/// `f` of a tensor's f32 values: read in place when it is a contiguous CPU tensor,
/// copied otherwise.
pub(super) fn with_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((a, b))) = (&*storage, layout.contiguous_offsets()) {
            return Ok(f(&cpu.as_slice::<f32>()?[a..b]));
        }
    }
    Ok(f(&host(t)?))
}

/// The real rows of a padded `(batch·tokens, w)` buffer end to end: text `b`'s rows
/// start at `b·tokens` there and at `real[b].start` in the result
/// ([`crate::backend::AttentionShape::real_rows`]).
pub(super) fn unpad(x: &[f32], real: &[Range<usize>], tokens: usize, w: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(real.last().map_or(0, |r| r.end) * w);
    for (b, r) in real.iter().enumerate() {
        out.extend_from_slice(&x[b * tokens * w..(b * tokens + r.len()) * w]);
    }
    out
}

/// The inverse of [`unpad`] into `out`, zeroed: its padding rows stay zeros.
pub(super) fn pad_into(out: &mut [f32], x: &[f32], real: &[Range<usize>], tokens: usize, w: usize) {
    for (b, r) in real.iter().enumerate() {
        out[b * tokens * w..(b * tokens + r.len()) * w].copy_from_slice(&x[r.start * w..r.end * w]);
    }
}

/// The inverse of [`unpad`]: padding rows come back as zeros.
pub(super) fn pad(x: &[f32], real: &[Range<usize>], tokens: usize, w: usize) -> Vec<f32> {
    let mut out = vec![0f32; real.len() * tokens * w];
    pad_into(&mut out, x, real, tokens, w);
    out
}
