//! The row kernels compiled for the CPU they run on.
//!
//! The crate is built for the baseline x86-64 target (SSE2), so that one binary runs on
//! any x86-64 machine; gemm picks its AVX2 or AVX-512 kernels at run time, but the row
//! kernels (layer norm, GELU, softmax, the short-text attention, the element-wise passes)
//! were vectorised four floats wide, and at passage lengths they were a sixth of the
//! encoder's time. [`wide_fn`] compiles a kernel a second time with AVX2 and FMA and a
//! third time with AVX-512F, and picks the widest the CPU has: vectorised eight or
//! sixteen floats wide (measured in BENCHMARKS.md, "The row kernels compiled for AVX-512
//! too").
//! No float operation is reordered or fused (Rust never contracts `a·b + c` by itself), so
//! the results are the same to the bit as the baseline's.

/// Whether the CPU has AVX2 and FMA (detected once; `FRESHEN_NO_WIDE=1` says no, for
/// measuring the baseline build).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::env::var_os("FRESHEN_NO_WIDE").is_none_or(|v| v.is_empty() || v == "0")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
    })
}

/// Whether the CPU has AVX-512F as well as AVX2 and FMA (detected once;
/// `FRESHEN_NO_AVX512=1` says no, for measuring the AVX2 kernels).
#[cfg(target_arch = "x86_64")]
pub(crate) fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2()
            && std::env::var_os("FRESHEN_NO_AVX512").is_none_or(|v| v.is_empty() || v == "0")
            && std::arch::is_x86_feature_detected!("avx512f")
    })
}

/// A row kernel compiled three times: for the baseline, with AVX2 and FMA, and with
/// AVX-512F, chosen at run time by [`has_avx512`] and [`has_avx2`]. The body is an
/// `#[inline(always)]` function inside each, so it and the `#[inline(always)]` helpers it
/// calls are compiled with the wrapper's features (a closure would not do: the compiler
/// declines to inline one called from two places).
macro_rules! wide_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($a:ident: $t:ty),* $(,)?) $(-> $r:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($a: $t),*) $(-> $r)? {
            #[inline(always)]
            fn body($($a: $t),*) $(-> $r)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($a: $t),*) $(-> $r)? {
                body($($a),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            fn avx512($($a: $t),*) $(-> $r)? {
                body($($a),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::backend::fused::wide::has_avx512() {
                // SAFETY: the CPU has the features `avx512` is compiled for.
                return unsafe { avx512($($a),*) };
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::backend::fused::wide::has_avx2() {
                // SAFETY: the CPU has the features `avx2` is compiled for.
                return unsafe { avx2($($a),*) };
            }
            body($($a),*)
        }
    };
}
pub(crate) use wide_fn;

#[cfg(test)]
mod tests {
    #[test]
    fn wide_kernels_give_the_baselines_bits() {
        // The same row kernel through its dispatcher and as the plain body: softmax of rows with a range of
        // magnitudes, and a layer norm, bit for bit.
        let rows: Vec<f32> = (0..4096)
            .map(|i| ((i * 7919) % 1013) as f32 * 0.37 - 150.0)
            .collect();
        let mut a = vec![0f32; rows.len()];
        let mut b = vec![0f32; rows.len()];
        for (x, o) in rows.chunks(128).zip(a.chunks_mut(128)) {
            super::super::softmax_row_body(x, o);
        }
        for (x, o) in rows.chunks(128).zip(b.chunks_mut(128)) {
            super::super::softmax_row(x, o);
        }
        assert_eq!(a, b);
        let w: Vec<f32> = (0..384).map(|i| 1.0 + i as f32 * 1e-3).collect();
        let bias: Vec<f32> = (0..384).map(|i| i as f32 * -1e-3).collect();
        let x = &rows[..384 * 8];
        let (mut plain, mut fast) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        super::super::norm::norm_into_body(&mut plain, x, &w, &bias, 1e-12);
        super::super::norm::norm_into(&mut fast, x, &w, &bias, 1e-12);
        assert_eq!(plain, fast);
    }
}
