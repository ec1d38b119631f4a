//! The CUDA kernels against the CPU's, run first by the GPU script (`benches/gpu.sh`):
//! each forward and backward to 1e-5 in f32, AdamW's weights to 1e-6 over ten steps, the
//! top-k's rows exactly. They need a CUDA device and fail without one.

use candle_core::{DType, Device, Tensor, Var};

use super::{top_k, CudaOps};
use crate::backend::{AttentionShape, FusedCpu, Kernels};
use crate::host::HostRead;
use crate::random::SplitMix64;
use crate::train::{AdamW, AdamWConfig, Grad, Gradients};

fn gpu() -> Device {
    Device::new_cuda(0).expect("these tests run on a CUDA device")
}

fn randn(seed: u64, shape: &[usize], scale: f32) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..shape.iter().product::<usize>())
        .map(|_| scale * rng.normal())
        .collect()
}

fn on(v: &[f32], shape: &[usize], dev: &Device) -> Tensor {
    Tensor::from_slice(v, shape, dev).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_device(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .host_vec1()
        .unwrap()
}

/// `max |a − b| / (1 + max |b|)`: the gap relative to the reference's scale.
fn gap(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs()));
    let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    worst / (1.0 + scale)
}

/// `Σ f(inputs) ⊙ r` on one device: the output and each input's gradient.
fn forward_backward(
    dev: &Device,
    inputs: &[(Vec<f32>, Vec<usize>)],
    r: &[f32],
    f: &dyn Fn(&[Tensor]) -> Tensor,
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|(v, s)| Var::from_tensor(&on(v, s, dev)).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = f(&tensors);
    let loss = (&y * on(r, y.dims(), dev)).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = vars
        .iter()
        .map(|v| values(grads.get(v.as_tensor()).expect("a gradient")))
        .collect();
    (values(&y), g)
}

/// One op on both devices: output and every input's gradient within 1e-5.
fn holds(
    what: &str,
    inputs: &[(Vec<f32>, Vec<usize>)],
    cpu: &dyn Fn(&[Tensor]) -> Tensor,
    cuda: &dyn Fn(&[Tensor]) -> Tensor,
) {
    let probe: Vec<Tensor> = inputs.iter().map(|(v, s)| on(v, s, &Device::Cpu)).collect();
    let r = randn(99, &[cpu(&probe).elem_count()], 1.0);
    let (yc, gc) = forward_backward(&Device::Cpu, inputs, &r, cpu);
    let (yg, gg) = forward_backward(&gpu(), inputs, &r, cuda);
    assert!(gap(&yg, &yc) <= 1e-5, "{what} forward: {}", gap(&yg, &yc));
    for (i, (a, b)) in gg.iter().zip(&gc).enumerate() {
        assert!(
            gap(a, b) <= 1e-5,
            "{what} gradient of input {i}: {}",
            gap(a, b)
        );
    }
}

#[test]
fn layer_norm_gelu_and_softmax_match_the_cpu_forward_and_backward() {
    let (rows, n) = (37, 384);
    let norm_inputs = [
        (randn(1, &[rows, n], 2.0), vec![rows, n]),
        (
            randn(2, &[n], 0.3).iter().map(|x| 1.0 + x).collect(),
            vec![n],
        ),
        (randn(3, &[n], 0.3), vec![n]),
    ];
    holds(
        "layer norm",
        &norm_inputs,
        &|t| {
            FusedCpu
                .layer_norm(&t[0], &t[1], &t[2], 1e-12, true)
                .unwrap()
        },
        &|t| {
            CudaOps
                .layer_norm(&t[0], &t[1], &t[2], 1e-12, true)
                .unwrap()
        },
    );
    let x = [(randn(4, &[rows, 1536], 3.0), vec![rows, 1536])];
    holds("gelu", &x, &|t| FusedCpu.gelu(&t[0]).unwrap(), &|t| {
        CudaOps.gelu(&t[0]).unwrap()
    });
    let s = [(randn(5, &[rows, 100], 4.0), vec![rows, 100])];
    holds(
        "softmax",
        &s,
        &|t| FusedCpu.softmax_last_dim(&t[0], true).unwrap(),
        &|t| CudaOps.softmax_last_dim(&t[0], true).unwrap(),
    );
}

#[test]
fn masked_attention_matches_the_cpu_on_every_real_token() {
    let shape = AttentionShape {
        batch: 3,
        tokens: 7,
        heads: 2,
        head_dim: 8,
        lengths: vec![7, 3, 5],
    };
    let (bt, width) = (shape.batch * shape.tokens, shape.heads * shape.head_dim);
    let inputs: Vec<(Vec<f32>, Vec<usize>)> = (0..3)
        .map(|i| (randn(10 + i, &[bt, width], 1.0), vec![bt, width]))
        .collect();
    // Padded query rows are never read: they are zeroed before comparing.
    let real: Vec<f32> = (0..bt)
        .flat_map(|row| {
            let keep = row % shape.tokens < shape.lengths[row / shape.tokens];
            vec![if keep { 1.0 } else { 0.0 }; width]
        })
        .collect();
    let masked = |y: Tensor| (&y * on(&real, &[bt, width], y.device())).unwrap();
    holds(
        "attention",
        &inputs,
        &|t| {
            masked(
                FusedCpu
                    .attention(&t[0], &t[1], &t[2], &shape, None, true)
                    .unwrap(),
            )
        },
        &|t| {
            masked(
                CudaOps
                    .attention(&t[0], &t[1], &t[2], &shape, None, true)
                    .unwrap(),
            )
        },
    );
}

/// Ten steps of the multi-tensor AdamW on CUDA give the CPU's weights to 1e-6, with the
/// clipping factor on alternate steps; the norm of many gradients in one launch matches
/// the CPU's.
#[test]
fn adamw_and_the_norm_match_the_cpu_over_ten_steps() {
    let shapes: [&[usize]; 4] = [&[300, 512], &[384], &[7, 3], &[1]];
    let run = |dev: &Device| {
        let params: Vec<(String, Var)> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| {
                (
                    format!("p{i}"),
                    Var::from_tensor(&on(&randn(i as u64, s, 1.0), s, dev)).unwrap(),
                )
            })
            .collect();
        let mut opt = AdamW::new(AdamWConfig {
            weight_decay: 0.1,
            ..AdamWConfig::default()
        });
        let mut norms = Vec::new();
        for step in 0..10u64 {
            let mut g = Gradients::default();
            for (i, s) in shapes.iter().enumerate() {
                g.insert(
                    format!("p{i}"),
                    Grad::Dense(on(&randn(100 + 10 * step + i as u64, s, 1.0), s, dev)),
                );
            }
            let norm = g.norm().unwrap();
            norms.push(norm);
            let factor = Gradients::clip_factor(norm, Some(if step % 2 == 0 { 50.0 } else { 1e6 }));
            opt.step_scaled(
                &params,
                &g,
                &|n| if n == "p1" { 3e-3 } else { 1e-2 },
                factor,
            )
            .unwrap();
        }
        let w: Vec<Vec<f32>> = params.iter().map(|(_, v)| values(v.as_tensor())).collect();
        (w, norms)
    };
    let ((wc, nc), (wg, ng)) = (run(&Device::Cpu), run(&gpu()));
    for (a, b) in ng.iter().zip(&nc) {
        assert!((a - b).abs() <= 1e-9 * b, "norm {a} vs {b}");
    }
    for (i, (a, b)) in wg.iter().zip(&wc).enumerate() {
        let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(worst <= 1e-6, "p{i}: {worst}");
    }
}

/// The device's top-k gives the CPU search's rows, in its order: ties to the lower row
/// (duplicated corpus rows), excluded rows skipped, NaN never kept, across chunk edges.
#[test]
fn top_k_matches_the_cpu_search_with_ties_and_exclusions() {
    let (n, d, b, k) = (5000, 32, 9, 10);
    let mut corpus = randn(20, &[n, d], 1.0);
    // Rows 700..710 copy row 3 (ties); row 11 is NaN.
    for r in 700..710 {
        let src: Vec<f32> = corpus[3 * d..4 * d].to_vec();
        corpus[r * d..(r + 1) * d].copy_from_slice(&src);
    }
    corpus[11 * d] = f32::NAN;
    let mut queries = randn(21, &[b, d], 1.0);
    queries[..d].copy_from_slice(&corpus[3 * d..4 * d]);
    let exclude: Vec<Vec<u32>> = (0..b as u32).map(|q| vec![q * 7, 703, 3]).collect();
    let cpu = crate::search::top_k(
        &on(&queries, &[b, d], &Device::Cpu),
        &on(&corpus, &[n, d], &Device::Cpu),
        k,
        &exclude,
        1024,
    )
    .unwrap();
    let dev = gpu();
    let got = top_k(
        &on(&queries, &[b, d], &dev),
        &on(&corpus, &[n, d], &dev),
        k,
        &exclude,
        777,
    )
    .unwrap();
    for (q, (a, c)) in got.iter().zip(&cpu).enumerate() {
        let ids: Vec<u32> = a.iter().map(|p| p.0).collect();
        let want: Vec<u32> = c.iter().map(|p| p.0).collect();
        assert_eq!(ids, want, "query {q}");
    }
    assert!(
        got[0].iter().any(|p| p.0 == 700),
        "the tie of row 3 kept at its lowest row"
    );
}

/// One training step of a small BERT: the loss's input gradient sent back through the
/// encoder gives every weight the CPU's gradient to 1e-5.
#[test]
fn a_bert_training_step_gives_the_cpu_gradients() {
    use crate::encoder::bert::{BertEncoder, BertOptions};
    use crate::train::{Trainable, TrainableEncoder};
    let tmp = tempfile::tempdir().unwrap();
    crate::encoder::bert::tests::write_tiny_bert(tmp.path(), 11, "mean");
    let texts = [
        "the quick brown fox",
        "a cat",
        "small animal of the tree",
        "water and the dog ran",
    ];
    let grads_on = |dev: &Device| {
        let enc = BertEncoder::load_on(tmp.path(), BertOptions::default(), dev).unwrap();
        let rec = enc.forward_train(&texts).unwrap();
        let r = on(&randn(7, rec.output.dims(), 1.0), rec.output.dims(), dev);
        let out = values(&rec.output);
        let grads = enc.backward(&rec, &r).unwrap();
        let mut by_name = Vec::new();
        for (name, _) in enc.params() {
            let Some(Grad::Dense(g)) = grads.get(&name) else {
                panic!("{name}: no gradient");
            };
            by_name.push((name, values(&g.to_dtype(DType::F32).unwrap())));
        }
        (out, by_name)
    };
    let ((oc, gc), (og, gg)) = (grads_on(&Device::Cpu), grads_on(&gpu()));
    assert!(gap(&og, &oc) <= 1e-5, "output: {}", gap(&og, &oc));
    for ((name, a), (_, b)) in gg.iter().zip(&gc) {
        assert!(gap(a, b) <= 1e-5, "{name}: {}", gap(a, b));
    }
}
