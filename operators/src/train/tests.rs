use candle_core::{DType, Tensor, Var};
use candle_nn::{Optimizer, ParamsAdamW};

use super::*;
use crate::corrector::{Corrector, CorrectorConfig};
use crate::random::SplitMix64;
use crate::{Encoder, HashedEncoder, HashedEncoderConfig};

fn small(seed: u64) -> HashedEncoderConfig {
    HashedEncoderConfig {
        buckets: 512,
        bag_dim: 16,
        dim: 8,
        seed,
        ..Default::default()
    }
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let n: usize = shape.iter().product();
    Tensor::from_vec(
        (0..n).map(|_| rng.normal()).collect::<Vec<f32>>(),
        shape,
        &crate::device::cpu(),
    )
    .unwrap()
}

const TEXTS: [&str; 4] = [
    "a river bank",
    "the bank of a river",
    "stone",
    "green winter light on the river",
];

#[test]
fn hashed_forward_train_gives_the_encode_bits() {
    let enc = HashedEncoder::new(small(1), &crate::device::cpu()).unwrap();
    let rec = enc.forward_train(&TEXTS).unwrap();
    let enc_bits: Vec<u32> = flat(&enc.encode(&TEXTS).unwrap())
        .iter()
        .map(|x| x.to_bits())
        .collect();
    let train_bits: Vec<u32> = flat(&rec.output).iter().map(|x| x.to_bits()).collect();
    assert_eq!(enc_bits, train_bits);
}

/// The row gradients of the table equal the dense gradient of the `index_select` forward on
/// the touched rows, and the dense gradient is zero everywhere else; the projection's
/// gradients agree too.
#[test]
fn hashed_row_gradients_equal_the_dense_gradient() {
    let enc = HashedEncoder::new(small(2), &crate::device::cpu()).unwrap();
    let grad_out = randn(5, &[TEXTS.len(), 8]);
    let sparse = enc
        .backward(&enc.forward_train(&TEXTS).unwrap(), &grad_out)
        .unwrap();
    let dense_out = enc.forward(&TEXTS).unwrap();
    let store = (dense_out * &grad_out)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let params = enc.params();
    for (name, var) in &params {
        let dense = flat(store.get(var.as_tensor()).unwrap());
        match sparse.get(name).unwrap() {
            Grad::Dense(g) => {
                for (a, b) in flat(g).iter().zip(&dense) {
                    assert!(
                        (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                        "{name}: {a} vs {b}"
                    );
                }
            }
            Grad::Rows { ids, width, values } => {
                assert_eq!(name, "bag.weight");
                let mut touched = vec![false; 512];
                for (j, &id) in ids.iter().enumerate() {
                    touched[id as usize] = true;
                    for c in 0..*width {
                        let (a, b) = (values[j * width + c], dense[id as usize * width + c]);
                        assert!(
                            (a - b).abs() <= 1e-6 * (1.0 + b.abs()),
                            "row {id}: {a} vs {b}"
                        );
                    }
                }
                for (row, t) in touched.iter().enumerate() {
                    if !t {
                        assert!(dense[row * width..(row + 1) * width]
                            .iter()
                            .all(|&x| x == 0.0));
                    }
                }
            }
        }
    }
}

/// The vector-Jacobian product equals differentiating the loss directly.
#[test]
fn backward_of_recorded_equals_direct_backward() {
    let h = Corrector::new(CorrectorConfig::new(6), &crate::device::cpu()).unwrap();
    // Move h off the identity so every weight matters.
    for (_, v) in h.params() {
        v.set(&(v.as_tensor() + randn(9, v.dims()).affine(0.1, 0.0).unwrap()).unwrap())
            .unwrap();
    }
    let stale = randn(3, &[5, 6]);
    let target = randn(4, &[5, 6]);
    let rec = h.forward_train(&stale).unwrap();
    // loss = ½·Σ (out − target)², so ∂loss/∂out = out − target.
    let grad_out = (rec.output.detach() - &target).unwrap();
    let vjp = h.backward(&rec, &grad_out).unwrap();
    let out = h.forward(&stale).unwrap();
    let loss = ((out - &target).unwrap().sqr().unwrap().sum_all().unwrap() * 0.5).unwrap();
    let store = loss.backward().unwrap();
    for (name, var) in h.params() {
        let Grad::Dense(g) = vjp.get(&name).unwrap() else {
            panic!("{name} should be dense")
        };
        for (a, b) in flat(g)
            .iter()
            .zip(flat(store.get(var.as_tensor()).unwrap()))
        {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{name}: {a} vs {b}"
            );
        }
    }
}

/// Dense AdamW follows candle-nn's AdamW (same formula) step for step.
#[test]
fn dense_adamw_matches_candle_nn() {
    let init = randn(1, &[4, 3]);
    let ours = Var::from_tensor(&init).unwrap();
    let theirs = Var::from_tensor(&init).unwrap();
    let params = vec![("w".to_string(), ours.clone())];
    let mut opt = AdamW::new(AdamWConfig::default());
    let mut reference = candle_nn::AdamW::new(
        vec![theirs.clone()],
        ParamsAdamW {
            lr: 0.01,
            ..Default::default()
        },
    )
    .unwrap();
    for step in 0..5 {
        let g = randn(10 + step, &[4, 3]);
        let mut grads = Gradients::default();
        grads.insert("w".into(), Grad::Dense(g.clone()));
        opt.step(&params, &grads, &|_| 0.01).unwrap();
        let loss = (theirs.as_tensor() * &g).unwrap().sum_all().unwrap();
        reference.backward_step(&loss).unwrap();
    }
    for (a, b) in flat(ours.as_tensor()).iter().zip(flat(theirs.as_tensor())) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}

/// Row updates move only the touched rows; when every row is touched every step (and there
/// is no weight decay) they are the dense update exactly.
#[test]
fn row_adamw_moves_touched_rows_only_and_equals_dense_when_all_are_touched() {
    let cfg = AdamWConfig {
        weight_decay: 0.0,
        ..Default::default()
    };
    let init = randn(2, &[6, 4]);
    let rows = Var::from_tensor(&init).unwrap();
    let dense = Var::from_tensor(&init).unwrap();
    let (mut opt_r, mut opt_d) = (AdamW::new(cfg), AdamW::new(cfg));
    for step in 0..3 {
        let g = randn(20 + step, &[6, 4]);
        let ids: Vec<u32> = vec![4, 0, 5, 1, 3, 2];
        let mut values = Vec::new();
        for &id in &ids {
            values.extend(flat(&g.get(id as usize).unwrap()));
        }
        let mut gr = Gradients::default();
        gr.insert(
            "t".into(),
            Grad::Rows {
                ids,
                width: 4,
                values,
            },
        );
        let mut gd = Gradients::default();
        gd.insert("t".into(), Grad::Dense(g));
        opt_r
            .step(&[("t".into(), rows.clone())], &gr, &|_| 0.1)
            .unwrap();
        opt_d
            .step(&[("t".into(), dense.clone())], &gd, &|_| 0.1)
            .unwrap();
    }
    for (a, b) in flat(rows.as_tensor()).iter().zip(flat(dense.as_tensor())) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    // Touch rows 1 and 3 only: the others keep their bits.
    let before = flat(rows.as_tensor());
    let mut g = Gradients::default();
    g.insert(
        "t".into(),
        Grad::Rows {
            ids: vec![3, 1],
            width: 4,
            values: vec![1.0; 8],
        },
    );
    opt_r
        .step(&[("t".into(), rows.clone())], &g, &|_| 0.1)
        .unwrap();
    let after = flat(rows.as_tensor());
    for row in 0..6 {
        let same = before[row * 4..row * 4 + 4] == after[row * 4..row * 4 + 4];
        assert_eq!(same, row != 1 && row != 3, "row {row}");
    }
}

#[test]
fn gradients_accumulate_clip_and_cross_workers_as_plain_data() {
    let mut a = Gradients::default();
    a.insert(
        "t".into(),
        Grad::Rows {
            ids: vec![7, 2],
            width: 2,
            values: vec![1.0, 2.0, 3.0, 4.0],
        },
    );
    a.insert(
        "w".into(),
        Grad::Dense(Tensor::new(&[1f32, 1.0], &crate::device::cpu()).unwrap()),
    );
    let mut b = Gradients::default();
    b.insert(
        "t".into(),
        Grad::Rows {
            ids: vec![2, 9],
            width: 2,
            values: vec![10.0, 10.0, 5.0, 5.0],
        },
    );
    a.accumulate(b).unwrap();
    let Some(Grad::Rows { ids, values, .. }) = a.get("t") else {
        panic!("rows expected")
    };
    assert_eq!(ids, &vec![7, 2, 9]);
    assert_eq!(values, &vec![1.0, 2.0, 13.0, 14.0, 5.0, 5.0]);
    let host = a.to_host().unwrap();
    let back = Gradients::from_host(host.clone(), &crate::device::cpu()).unwrap();
    assert_eq!(back.to_host().unwrap(), host);
    let norm = a.norm().unwrap();
    let expected = (1.0f64 + 4.0 + 169.0 + 196.0 + 25.0 + 25.0 + 1.0 + 1.0).sqrt();
    assert!((norm - expected).abs() < 1e-9);
    let before = a.clip_norm(Some(1.0)).unwrap();
    assert!((before - expected).abs() < 1e-9);
    assert!((a.norm().unwrap() - 1.0).abs() < 1e-6);
}

#[test]
fn schedule_warms_up_then_decays() {
    let s = Schedule {
        warmup: 4,
        total: 14,
        decay: Decay::Linear,
    };
    let f: Vec<f64> = (0..14).map(|t| s.factor(t)).collect();
    assert_eq!(&f[..4], &[0.25, 0.5, 0.75, 1.0]);
    assert!((f[9] - 0.5).abs() < 1e-12);
    let c = Schedule {
        decay: Decay::Cosine,
        ..s
    };
    assert!((c.factor(9) - 0.5).abs() < 1e-12);
    assert_eq!(
        Schedule {
            decay: Decay::Constant,
            ..s
        }
        .factor(13),
        1.0
    );
}

/// A training step with the sparse path lowers the loss on its batch, and a snapshot
/// restores the weights bit for bit.
#[test]
fn hashed_encoder_learns_and_restores() {
    let enc = HashedEncoder::new(small(4), &crate::device::cpu()).unwrap();
    let target = randn(8, &[TEXTS.len(), 8]);
    let loss_of = |out: &Tensor| -> f32 {
        (out - &target)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap()
    };
    let snap = enc.snapshot().unwrap();
    let start = loss_of(&enc.encode(&TEXTS).unwrap());
    let mut opt = AdamW::new(AdamWConfig::default());
    for _ in 0..20 {
        let rec = enc.forward_train(&TEXTS).unwrap();
        let grad_out = ((rec.output.detach() - &target).unwrap() * 2.0).unwrap();
        let g = enc.backward(&rec, &grad_out).unwrap();
        opt.step(&enc.params(), &g, &|_| 0.05).unwrap();
    }
    let end = loss_of(&enc.encode(&TEXTS).unwrap());
    assert!(end < 0.8 * start, "{start} -> {end}");
    enc.restore(&snap).unwrap();
    assert_eq!(loss_of(&enc.encode(&TEXTS).unwrap()), start);
    assert_eq!(enc.params()[0].1.dtype(), DType::F32);
}

/// An optimiser rebuilt from an export, on weights restored from a snapshot, takes the
/// next step bit for bit as the original does (dense and row-sparse parameters alike):
/// what resuming a killed run relies on.
#[test]
fn adamw_resumes_from_its_export_bit_for_bit() {
    let enc = HashedEncoder::new(small(3), &crate::device::cpu()).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default());
    let step = |enc: &HashedEncoder, opt: &mut AdamW, seed: u64| {
        let rec = enc.forward_train(&TEXTS).unwrap();
        let g = enc.backward(&rec, &randn(seed, &[TEXTS.len(), 8])).unwrap();
        opt.step(&enc.params(), &g, &|_| 1e-2).unwrap();
    };
    step(&enc, &mut opt, 10);
    step(&enc, &mut opt, 11);
    let weights = enc.snapshot().unwrap();
    let (steps, moments) = opt.export().unwrap();
    step(&enc, &mut opt, 12);
    let resumed = HashedEncoder::new(small(3), &crate::device::cpu()).unwrap();
    resumed.restore(&weights).unwrap();
    let mut again = AdamW::new(AdamWConfig::default());
    again.import(steps, moments);
    step(&resumed, &mut again, 12);
    assert_eq!(again.steps(), opt.steps());
    for ((name, a), (_, b)) in enc.params().iter().zip(resumed.params()) {
        let (a, b) = (flat(a.as_tensor()), flat(b.as_tensor()));
        let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name} differs after the resumed step");
    }
}

/// The multi-tensor step (flat moment buffers, one fused pass per parameter, the clipping
/// factor applied inside it) gives the per-tensor composed ops' weights and moments to
/// 1e-6 over ten steps: a model's worth of parameters of several shapes (one large enough
/// for several threads' chunks), two learning rates, weight decay, clipping on some steps
/// and not others, and an export and import half-way. The norm over all gradients in one
/// pass equals the f64 sum of squares.
#[test]
fn multi_tensor_adamw_matches_the_per_tensor_ops_over_ten_steps() {
    let shapes: [&[usize]; 4] = [&[300, 512], &[384], &[7, 3], &[1]];
    let starts: Vec<Tensor> = (0..shapes.len())
        .map(|i| randn(1 + i as u64, shapes[i]))
        .collect();
    let grads_at = |step: u64| {
        let mut g = Gradients::default();
        for (i, shape) in shapes.iter().enumerate() {
            g.insert(
                format!("p{i}"),
                Grad::Dense(randn(100 + 10 * step + i as u64, shape)),
            );
        }
        g
    };
    let lr = |name: &str| if name == "p1" { 3e-3 } else { 1e-2 };
    let cfg = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let run = |fused: bool| {
        let params: Vec<(String, Var)> = starts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                (
                    format!("p{i}"),
                    Var::from_tensor(&t.copy().unwrap()).unwrap(),
                )
            })
            .collect();
        let mut opt = AdamW::new(cfg);
        for step in 0..10u64 {
            let g = grads_at(step);
            // Clip to a norm below the gradients' on even steps, above it on odd ones.
            let max = if step % 2 == 0 { 50.0 } else { 1e6 };
            let factor = Gradients::clip_factor(g.norm().unwrap(), Some(max));
            assert_eq!(factor < 1.0, step % 2 == 0, "step {step}: factor {factor}");
            opt.step_with(&params, &g, &lr, factor, fused).unwrap();
            if step == 4 {
                let (steps, moments) = opt.export().unwrap();
                opt = AdamW::new(cfg);
                opt.import(steps, moments);
            }
        }
        let (_, moments) = opt.export().unwrap();
        let weights: Vec<Vec<f32>> = params.iter().map(|(_, w)| flat(w.as_tensor())).collect();
        let m: Vec<Vec<f32>> = moments.iter().map(|x| flat(&x.1)).collect();
        let v: Vec<Vec<f32>> = moments.iter().map(|x| flat(&x.2)).collect();
        (weights, m, v)
    };
    let (a, b) = (run(true), run(false));
    for (x, y, what) in [
        (&a.0, &b.0, "weights"),
        (&a.1, &b.1, "m"),
        (&a.2, &b.2, "v"),
    ] {
        assert_eq!(x.len(), shapes.len(), "{what}: one per parameter");
        for (i, (x, y)) in x.iter().zip(y).enumerate() {
            let worst = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-6, "{what} of p{i}: {worst}");
        }
    }
    assert_ne!(a.0[0], flat(&starts[0]), "the weights moved");
    let g = grads_at(3);
    let reference: f64 = shapes
        .iter()
        .enumerate()
        .map(|(i, _)| match g.get(&format!("p{i}")) {
            Some(Grad::Dense(t)) => flat(t).iter().map(|&v| f64::from(v).powi(2)).sum(),
            _ => 0.0,
        })
        .sum::<f64>()
        .sqrt();
    let one_pass = g.norm().unwrap();
    assert!(
        (one_pass - reference).abs() <= 1e-9 * reference,
        "{one_pass} vs {reference}"
    );
}
