//! The fused attention's long-text path: per text and head, the score block `Q Kᵀ`, the
//! weighted values `P V` and, backwards, the four products of the gradient as matrix
//! products (gemm on strided views of the projections' rows), instead of a dot product
//! per query and key.
//!
//! Each text's `t × len` score block lives only while its head is computed (a few hundred
//! KB at 256 tokens), never as a `(b·heads, t, t)` tensor kept for the backward: the
//! backward recomputes it, as the per-row kernel does. So memory stays the per-row
//! kernel's while the O(t²·d) work runs in gemm's vector kernels.

use gemm::{gemm, Parallelism};

use crate::backend::AttentionShape;

/// A read-only strided matrix view: element `(i, j)` at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
struct View {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl View {
    /// A contiguous row-major block of `cols` columns (the score blocks P and dS).
    fn rows(buf: &[f32], cols: usize) -> View {
        View {
            ptr: buf.as_ptr(),
            rs: cols as isize,
            cs: 1,
        }
    }
}

/// `dst (m × n, row stride dst_rs) = beta · lhs (m × k) · rhs (k × n)`.
///
/// # Safety
/// Every element the shapes and strides address must lie in the buffers behind the
/// pointers, and `dst` must not overlap `lhs` or `rhs`.
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_rs: isize,
    lhs: View,
    rhs: View,
    beta: f32,
) {
    gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs,
        false,
        lhs.ptr,
        lhs.cs,
        lhs.rs,
        rhs.ptr,
        rhs.cs,
        rhs.rs,
        0.0,
        beta,
        false,
        false,
        false,
        Parallelism::None,
    );
}

impl AttentionShape {
    /// Head `h` of a text's `(t, heads·d)` rows as a `(rows, d)` view.
    fn head(&self, x: &[f32], h: usize) -> View {
        View {
            ptr: x[h * self.head_dim..].as_ptr(),
            rs: (self.heads * self.head_dim) as isize,
            cs: 1,
        }
    }

    /// The transpose of a view.
    fn t(v: View) -> View {
        View {
            ptr: v.ptr,
            rs: v.cs,
            cs: v.rs,
        }
    }

    /// `P = softmax(scale · Q_h K_hᵀ)` over the first `len` keys, into `p` (`t × len`).
    fn probabilities(&self, q: &[f32], k: &[f32], h: usize, len: usize, p: &mut [f32]) {
        let (t, d) = (self.tokens, self.head_dim);
        let mut s = vec![0f32; t * len];
        // SAFETY: Q_h is t × d and K_hᵀ is d × len within the text's rows; s is t × len.
        unsafe {
            product(
                (t, len, d),
                s.as_mut_ptr(),
                len as isize,
                self.head(q, h),
                Self::t(self.head(k, h)),
                1.0 / (d as f32).sqrt(),
            );
        }
        for (row, out) in s.chunks_exact(len).zip(p.chunks_exact_mut(len)) {
            super::softmax_row(row, out);
        }
    }

    /// One text's attention output `o` (its `(t, heads·d)` rows) from its q, k, v rows.
    pub(super) fn blocked_forward(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        o: &mut [f32],
        len: usize,
    ) {
        let (t, d) = (self.tokens, self.head_dim);
        let mut p = vec![0f32; t * len];
        for h in 0..self.heads {
            self.probabilities(q, k, h, len, &mut p);
            let rs = (self.heads * d) as isize;
            let dst = o[h * d..].as_mut_ptr();
            let pv = View::rows(&p, len);
            // SAFETY: O_h is t × d in the text's output rows, P is t × len, V_h len × d.
            unsafe { product((t, d, len), dst, rs, pv, self.head(v, h), 1.0) };
        }
    }

    /// One text's gradients of q, k and v from the output's gradient `g`: with P
    /// recomputed, dV = Pᵀ dO, dP = dO Vᵀ, dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale,
    /// dQ = dS K, dK = dSᵀ Q. Padded keys get no gradient.
    pub(super) fn blocked_backward(
        &self,
        (q, k, v, g): (&[f32], &[f32], &[f32], &[f32]),
        dq: &mut [f32],
        dk: &mut [f32],
        dv: &mut [f32],
        len: usize,
    ) {
        let (t, d) = (self.tokens, self.head_dim);
        let rs = (self.heads * d) as isize;
        let scale = 1.0 / (d as f32).sqrt();
        let (mut p, mut ds) = (vec![0f32; t * len], vec![0f32; t * len]);
        for h in 0..self.heads {
            self.probabilities(q, k, h, len, &mut p);
            let pv = View::rows(&p, len);
            // SAFETY (each product): the heads' views stay within the text's rows (t rows,
            // or the first len), the blocks are t × len, and each destination is a head's
            // own columns of its own buffer.
            unsafe {
                // dV_h (len × d) = Pᵀ (len × t) · dO_h (t × d).
                product(
                    (len, d, t),
                    dv[h * d..].as_mut_ptr(),
                    rs,
                    Self::t(pv),
                    self.head(g, h),
                    1.0,
                );
                // dP (t × len) = dO_h (t × d) · V_hᵀ (d × len).
                let vt = Self::t(self.head(v, h));
                product(
                    (t, len, d),
                    ds.as_mut_ptr(),
                    len as isize,
                    self.head(g, h),
                    vt,
                    1.0,
                );
            }
            softmax_backward_rows(&p, &mut ds, len, scale);
            let dsv = View::rows(&ds, len);
            unsafe {
                // dQ_h (t × d) = dS (t × len) · K_h (len × d).
                product(
                    (t, d, len),
                    dq[h * d..].as_mut_ptr(),
                    rs,
                    dsv,
                    self.head(k, h),
                    1.0,
                );
                // dK_h (len × d) = dSᵀ (len × t) · Q_h (t × d).
                product(
                    (len, d, t),
                    dk[h * d..].as_mut_ptr(),
                    rs,
                    Self::t(dsv),
                    self.head(q, h),
                    1.0,
                );
            }
        }
    }
}

super::wide::wide_fn! {
    /// The softmax's backward over the rows of `p` (each `len` wide), in place of the
    /// probabilities' gradient `ds`: `ds = p ⊙ (ds − rowsum(p ⊙ ds)) · scale`.
    fn softmax_backward_rows(p: &[f32], ds: &mut [f32], len: usize, scale: f32) {
        for (prow, drow) in p.chunks_exact(len).zip(ds.chunks_exact_mut(len)) {
            let rowsum = super::sum_lanes(len, |j| prow[j] * drow[j]);
            for (x, &pj) in drow.iter_mut().zip(prow) {
                *x = pj * (*x - rowsum) * scale;
            }
        }
    }
}
