//! What applying the corrector to a whole cache costs: h over the full WordNet cache
//! (117,659 × 128) for hidden widths 128, 512 and 2048. `correct` pays this every
//! `apply_every` steps; BENCHMARKS.md turns it into a cost per training step.
//!
//!     cargo bench -p freshen-operators --bench corrector

use candle_core::Tensor;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use freshen_operators::corrector::{Corrector, CorrectorConfig};
use freshen_operators::random::SplitMix64;

/// Rows of the full WordNet cache.
const ROWS: usize = 117_659;
const DIM: usize = 128;

fn cache() -> Tensor {
    let mut rng = SplitMix64::new(7);
    let values: Vec<f32> = (0..ROWS * DIM).map(|_| rng.normal()).collect();
    Tensor::from_vec(values, (ROWS, DIM), &freshen_operators::device::cpu()).expect("a tensor")
}

fn apply(c: &mut Criterion) {
    let b = cache();
    let mut group = c.benchmark_group("corrector_apply_117659x128");
    group.sample_size(10);
    for width in [128, 512, 2048] {
        let h = Corrector::new(
            CorrectorConfig {
                width,
                ..CorrectorConfig::new(DIM)
            },
            &freshen_operators::device::cpu(),
        )
        .expect("a corrector");
        group.bench_with_input(BenchmarkId::from_parameter(width), &width, |bench, _| {
            bench.iter(|| h.apply_chunked(&b, 8192).expect("applied"))
        });
    }
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
