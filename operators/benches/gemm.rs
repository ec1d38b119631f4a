//! The f32 matrix products an encoder layer spends its time in, as freshen calls them:
//! `x · Wᵀ` through the gemm crate with W stored (n_out, n_in), on MiniLM's shapes for a
//! batch of 32 texts of 64 word pieces (2,048 rows), one thread and the whole pool, and
//! the whole pool with the output first filled with the bias (gemm then reads it back);
//! and one thread on half the rows, as inference runs each half of a batch, with W as
//! stored and transposed.
//! Criterion's throughput is in flops (2·m·k·n a product), so its `Gelem/s` reads as
//! GFLOP/s, beside `benches/roof.sh`'s FMA peak and PyTorch's `torch.mm` on the same shapes.
//!
//!     cargo bench -p freshen-operators --bench gemm

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use freshen_operators::random::SplitMix64;
use gemm::{gemm, Parallelism};

/// Rows of one batch: 32 texts of 64 word pieces.
const ROWS: usize = 2048;

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.normal()).collect()
}

/// `y = x · Wᵀ` for x (rows, n_in) and W (n_out, n_in), or W stored transposed (n_in,
/// n_out) when `wt`; with `bias`, y starts as the bias in every row and gemm adds into it,
/// as the fused layer's projection does.
fn linear(
    y: &mut [f32],
    x: &[f32],
    w: &[f32],
    (n_in, n_out): (usize, usize),
    bias: Option<&[f32]>,
    par: Parallelism,
    wt: bool,
) {
    let rows = x.len() / n_in;
    assert_eq!(y.len(), rows * n_out);
    assert_eq!(w.len(), n_out * n_in);
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(n_out) {
            row.copy_from_slice(b);
        }
    }
    // SAFETY: y is rows × n_out, x rows × n_in, and Wᵀ (n_in × n_out) is read from W
    // (n_out × n_in, element (a, c) at a + c·n_in) or from W transposed (at a·n_out + c);
    // the lengths are asserted above.
    unsafe {
        gemm(
            rows,
            n_out,
            n_in,
            y.as_mut_ptr(),
            1,
            n_out as isize,
            bias.is_some(),
            x.as_ptr(),
            1,
            n_in as isize,
            w.as_ptr(),
            if wt { 1 } else { n_in as isize },
            if wt { n_out as isize } else { 1 },
            if bias.is_some() { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

fn products(c: &mut Criterion) {
    let threads = rayon::current_num_threads();
    let mut group = c.benchmark_group("gemm_x_wt");
    group.sample_size(20);
    for (name, n_in, n_out) in [
        ("projection_384x384", 384, 384),
        ("ffn_up_384x1536", 384, 1536),
        ("ffn_down_1536x384", 1536, 384),
        ("square_2048x2048", 2048, 2048),
    ] {
        let x = values(ROWS * n_in, 1);
        let w = values(n_out * n_in, 2);
        let b = values(n_out, 3);
        let mut y = vec![0f32; ROWS * n_out];
        let pool = Parallelism::Rayon(threads);
        // (label, rows, threads, bias first, W stored transposed): the last two are one
        // part of an inference batch cut in two (`backend::fused::infer`), over W
        // as stored and as `prepare_layer` lays it out for a long call.
        for (label, rows, par, bias, wt) in [
            ("1_thread".to_string(), ROWS, Parallelism::None, None, false),
            (format!("{threads}_threads"), ROWS, pool, None, false),
            (
                format!("{threads}_threads_bias_first"),
                ROWS,
                pool,
                Some(&b[..]),
                false,
            ),
            (
                "1_thread_half_rows_bias_first".to_string(),
                ROWS / 2,
                Parallelism::None,
                Some(&b[..]),
                false,
            ),
            (
                "1_thread_half_rows_bias_first_transposed".to_string(),
                ROWS / 2,
                Parallelism::None,
                Some(&b[..]),
                true,
            ),
        ] {
            group.throughput(Throughput::Elements((2 * rows * n_in * n_out) as u64));
            let (x, y) = (&x[..rows * n_in], &mut y[..rows * n_out]);
            group.bench_function(BenchmarkId::new(name, &label), |bench| {
                bench.iter(|| linear(y, x, &w, (n_in, n_out), bias, par, wt))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, products);
criterion_main!(benches);
