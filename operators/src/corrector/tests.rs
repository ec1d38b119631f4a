use super::*;
use crate::loss::{drift_mse, relative_staleness, retriever_loss, softmax_kl};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

fn normals(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| rng.normal()).collect()
}

fn randn(seed: u64, shape: &[usize]) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(normals(seed, n), shape, &crate::device::cpu()).unwrap()
}

/// Rows scaled to unit L2 norm.
fn normalise(x: &Tensor) -> Tensor {
    x.broadcast_div(&x.sqr().unwrap().sum_keepdim(1).unwrap().sqrt().unwrap())
        .unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn cfg(dim: usize, width: usize, depth: usize, activation: Activation) -> CorrectorConfig {
    CorrectorConfig {
        dim,
        width,
        depth,
        activation,
        norm: Norm::Layer,
        seed: 3,
    }
}

const ALL_ACTIVATIONS: [Activation; 4] = [
    Activation::Gelu,
    Activation::Relu,
    Activation::Tanh,
    Activation::Silu,
];

#[test]
fn starts_as_the_identity_exactly() {
    let x = randn(1, &[37, 12]);
    for act in ALL_ACTIVATIONS {
        for depth in [0, 1, 2] {
            let h = Corrector::new(cfg(12, 20, depth, act), &crate::device::cpu()).unwrap();
            assert_eq!(h.vars().len(), 4 + 2 * depth);
            assert_eq!(
                flat(&h.forward(&x).unwrap()),
                flat(&x),
                "{act:?} depth {depth}"
            );
            assert_eq!(flat(&h.apply_chunked(&x, 5).unwrap()), flat(&x));
            // (b, m, dim) inputs keep their shape.
            let x3 = x.narrow(0, 0, 36).unwrap().reshape((4, 9, 12)).unwrap();
            let y3 = h.forward(&x3).unwrap();
            assert_eq!(y3.dims(), &[4, 9, 12]);
            assert_eq!(flat(&y3), flat(&x3));
        }
    }
}

/// One AdamW step (no weight decay, so a var only moves if it has a gradient) on the drift
/// loss; returns the loss and which vars got a non-zero gradient.
fn drift_step(h: &Corrector, opt: &mut AdamW, stale: &Tensor, fresh: &Tensor) -> (f32, Vec<bool>) {
    let loss = drift_mse(&h.forward(stale).unwrap(), fresh).unwrap();
    let grads = loss.backward().unwrap();
    let nonzero = h
        .vars()
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .is_some_and(|g| flat(g).iter().any(|&x| x != 0.0))
        })
        .collect();
    opt.step(&grads).unwrap();
    (loss.to_scalar::<f32>().unwrap(), nonzero)
}

#[test]
fn every_variable_trains_on_the_drift_loss() {
    for act in ALL_ACTIVATIONS {
        let h = Corrector::new(cfg(8, 16, 2, act), &crate::device::cpu()).unwrap();
        let names: Vec<&str> = h.named_vars().iter().map(|(n, _)| n.as_str()).collect();
        let stale = randn(2, &[64, 8]);
        let fresh = (&stale + randn(3, &[64, 8]).tanh().unwrap()).unwrap();
        let before: Vec<Vec<f32>> = h.vars().iter().map(|v| flat(v.as_tensor())).collect();
        let params = ParamsAdamW {
            lr: 1e-2,
            weight_decay: 0.0,
            ..Default::default()
        };
        let mut opt = AdamW::new(h.vars(), params).unwrap();
        // Step 0: W_out = 0 blocks everything upstream, so only the output layer learns.
        let (loss0, nonzero) = drift_step(&h, &mut opt, &stale, &fresh);
        for (name, nz) in names.iter().zip(&nonzero) {
            assert_eq!(*nz, name.starts_with("out."), "{act:?} step 0: {name}");
        }
        // Step 1: W_out ≠ 0 now, and every variable gets a gradient.
        let (loss1, nonzero) = drift_step(&h, &mut opt, &stale, &fresh);
        for (name, nz) in names.iter().zip(&nonzero) {
            assert!(nz, "{act:?} step 1: no gradient for {name}");
        }
        // After two steps, every variable has moved (weight decay is off: by gradient).
        for ((name, v), b) in h.named_vars().iter().zip(&before) {
            assert_ne!(&flat(v.as_tensor()), b, "{act:?}: {name} did not move");
        }
        let (loss2, _) = drift_step(&h, &mut opt, &stale, &fresh);
        assert!(
            loss1 < loss0 && loss2 < loss1,
            "{act:?}: {loss0} {loss1} {loss2}"
        );
    }
}

#[test]
fn retriever_and_corrector_gradients_stay_apart() {
    let (b, m, d) = (4, 5, 8);
    let h = Corrector::new(cfg(d, 16, 1, Activation::Gelu), &crate::device::cpu()).unwrap();
    // Move W_out off zero so that every corrector var is in play.
    h.named_vars()[4]
        .1
        .set(&(randn(4, &[d, 16]) * 0.1).unwrap())
        .unwrap();
    let q = Var::from_tensor(&randn(5, &[b, d])).unwrap();
    let fresh = Var::from_tensor(&randn(6, &[b, m, d])).unwrap();
    let stale = randn(7, &[b, m, d]);

    let retr = retriever_loss(q.as_tensor(), fresh.as_tensor(), None, 5.0).unwrap();
    let g_retr = retr.backward().unwrap();
    for (name, v) in h.named_vars() {
        assert!(
            g_retr.get(v.as_tensor()).is_none(),
            "retriever loss reached {name}"
        );
    }
    let corrected = h.forward(&stale).unwrap();
    let corr = crate::loss::corrector_loss(
        crate::loss::CorrectorLoss::Both { task_weight: 0.5 },
        q.as_tensor(),
        &corrected,
        fresh.as_tensor(),
        None,
        5.0,
    )
    .unwrap();
    let g_corr = corr.backward().unwrap();
    // The sum of both losses gives each side exactly its own loss's gradients.
    let total = (&retr + &corr).unwrap();
    let g_total = total.backward().unwrap();
    let same = |a: Option<&Tensor>, b: Option<&Tensor>| match (a, b) {
        (Some(a), Some(b)) => flat(a) == flat(b),
        (None, None) => true,
        (Some(a), None) | (None, Some(a)) => flat(a).iter().all(|&x| x == 0.0),
    };
    for t in [q.as_tensor(), fresh.as_tensor()] {
        assert!(same(g_total.get(t), g_retr.get(t)));
        assert!(
            same(g_corr.get(t), None),
            "corrector loss reached the retriever"
        );
    }
    for (name, v) in h.named_vars() {
        let g = g_corr
            .get(v.as_tensor())
            .unwrap_or_else(|| panic!("{name}"));
        assert!(flat(g).iter().any(|&x| x != 0.0), "{name}");
        assert!(same(g_total.get(v.as_tensor()), Some(g)), "{name}");
    }
}

#[test]
fn apply_chunked_matches_forward_without_a_graph() {
    let h = Corrector::new(cfg(6, 32, 2, Activation::Silu), &crate::device::cpu()).unwrap();
    for (i, (_, v)) in h.named_vars().iter().enumerate() {
        v.set(&(v.as_tensor() + (randn(10 + i as u64, v.dims()) * 0.2).unwrap()).unwrap())
            .unwrap();
    }
    let cache = Var::from_tensor(&randn(8, &[103, 6])).unwrap();
    let want = flat(&h.forward(cache.as_tensor()).unwrap());
    assert_ne!(want, flat(cache.as_tensor()));
    for chunk in [1, 7, 64, 103, 1000] {
        let got = h.apply_chunked(cache.as_tensor(), chunk).unwrap();
        assert_eq!(got.dims(), &[103, 6]);
        assert!(
            !got.track_op(),
            "chunk {chunk}: the result must be detached"
        );
        for (a, b) in flat(&got).iter().zip(&want) {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "chunk {chunk}: {a} vs {b}"
            );
        }
    }
    let empty = Tensor::zeros((0, 6), DType::F32, &crate::device::cpu()).unwrap();
    assert_eq!(h.apply_chunked(&empty, 4).unwrap().dims(), &[0, 6]);
    assert!(h.apply_chunked(cache.as_tensor(), 0).is_err());
    assert!(h.apply_chunked(&randn(9, &[3, 5]), 4).is_err());
    assert!(h.forward(&randn(9, &[3, 5])).is_err());
    let f64_in = cache.as_tensor().to_dtype(DType::F64).unwrap();
    let err = h.forward(&f64_in).unwrap_err().to_string();
    assert!(err.contains("F64"), "{err}");
}

#[test]
fn layer_norm_matches_reference() {
    let x = randn(11, &[5, 7]);
    let gain = randn(12, &[7]);
    let bias = randn(13, &[7]);
    let got: Vec<Vec<f32>> = layer_norm(&x, &gain, &bias).unwrap().to_vec2().unwrap();
    let (xs, g, b): (Vec<Vec<f32>>, Vec<f32>, Vec<f32>) =
        (x.to_vec2().unwrap(), flat(&gain), flat(&bias));
    for (row, out) in xs.iter().zip(&got) {
        let mean = row.iter().map(|&v| v as f64).sum::<f64>() / 7.0;
        let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / 7.0;
        for k in 0..7 {
            let want = (row[k] as f64 - mean) / (var + LN_EPS).sqrt() * g[k] as f64 + b[k] as f64;
            assert!((out[k] as f64 - want).abs() < 1e-5, "{} vs {want}", out[k]);
        }
    }
}

#[test]
fn seeded_init_is_reproducible_and_dtype_independent() {
    let a = Corrector::new(cfg(8, 24, 2, Activation::Relu), &crate::device::cpu()).unwrap();
    let b = Corrector::new(cfg(8, 24, 2, Activation::Relu), &crate::device::cpu()).unwrap();
    let c = Corrector::new(
        CorrectorConfig {
            seed: 4,
            ..cfg(8, 24, 2, Activation::Relu)
        },
        &crate::device::cpu(),
    )
    .unwrap();
    let d = Corrector::with_dtype(
        cfg(8, 24, 2, Activation::Relu),
        &crate::device::cpu(),
        DType::F64,
    )
    .unwrap();
    for i in 0..a.vars().len() {
        let (name, va) = &a.named_vars()[i];
        let vals = flat(va.as_tensor());
        assert_eq!(vals, flat(b.named_vars()[i].1.as_tensor()), "{name}");
        let vd = d.named_vars()[i]
            .1
            .as_tensor()
            .to_dtype(DType::F32)
            .unwrap();
        assert_eq!(vals, flat(&vd), "{name}");
        let expected = match name.as_str() {
            "ln.weight" => Some(1.0),
            "ln.bias" | "out.weight" | "out.bias" => Some(0.0),
            _ => None,
        };
        match expected {
            Some(e) => assert!(vals.iter().all(|&x| x == e), "{name}"),
            None => {
                assert_ne!(vals, flat(c.named_vars()[i].1.as_tensor()), "{name}");
                let fan_in = if name.starts_with("hidden.0") {
                    8.0
                } else {
                    24.0
                };
                let bound = 1.0 / f32::sqrt(fan_in);
                assert!(vals.iter().all(|x| x.abs() <= bound), "{name}");
                assert!(vals.iter().any(|x| x.abs() > 0.8 * bound), "{name}");
            }
        }
    }
    assert_eq!(
        a.config().param_count(),
        a.vars().iter().map(|v| v.elem_count()).sum::<usize>()
    );
    assert_eq!(a.varmap().all_vars().len(), a.vars().len());
    assert!(Corrector::with_dtype(
        cfg(8, 24, 1, Activation::Relu),
        &crate::device::cpu(),
        DType::BF16
    )
    .is_err());
}

#[test]
fn config_serde_and_validation() {
    let c: CorrectorConfig = serde_json::from_str(r#"{"dim": 384}"#).unwrap();
    assert_eq!(c, CorrectorConfig::new(384));
    assert_eq!(
        (c.width, c.depth, c.activation, c.seed),
        (512, 1, Activation::Gelu, 0)
    );
    let c: CorrectorConfig = serde_json::from_str(
        r#"{"dim": 8, "width": 4, "depth": 0, "activation": "silu", "seed": 9}"#,
    )
    .unwrap();
    assert_eq!(
        c,
        CorrectorConfig {
            dim: 8,
            width: 4,
            depth: 0,
            activation: Activation::Silu,
            norm: Norm::Layer,
            seed: 9
        }
    );
    assert_eq!(
        serde_json::to_string(&Activation::Tanh).unwrap(),
        r#""tanh""#
    );
    assert!(serde_json::from_str::<CorrectorConfig>(r#"{"width": 4}"#).is_err());
    assert!(serde_json::from_str::<CorrectorConfig>(r#"{"dim": 4, "widht": 4}"#).is_err());
    assert!(
        serde_json::from_str::<CorrectorConfig>(r#"{"dim": 4, "activation": "Gelu"}"#).is_err()
    );
    for bad in [
        CorrectorConfig::new(0),
        CorrectorConfig {
            width: 0,
            ..CorrectorConfig::new(4)
        },
        CorrectorConfig {
            depth: 65,
            ..CorrectorConfig::new(4)
        },
        CorrectorConfig {
            width: 65536,
            depth: 60,
            ..CorrectorConfig::new(4)
        },
    ] {
        let err = Corrector::new(bad.clone(), &crate::device::cpu()).unwrap_err();
        assert!(matches!(err, Error::Field { .. }), "{bad:?}: {err}");
    }
}

fn tmp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("freshen-corrector-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn save_load_round_trip() {
    let a = Corrector::new(cfg(6, 10, 1, Activation::Tanh), &crate::device::cpu()).unwrap();
    for (i, (_, v)) in a.named_vars().iter().enumerate() {
        v.set(&(v.as_tensor() + randn(20 + i as u64, v.dims())).unwrap())
            .unwrap();
    }
    let x = randn(30, &[9, 6]);
    let path = tmp_path("round-trip.safetensors");
    a.save(&path).unwrap();
    let mut b = Corrector::new(
        CorrectorConfig {
            seed: 99,
            ..cfg(6, 10, 1, Activation::Tanh)
        },
        &crate::device::cpu(),
    )
    .unwrap();
    assert_ne!(flat(&a.forward(&x).unwrap()), flat(&b.forward(&x).unwrap()));
    b.load(&path).unwrap();
    assert_eq!(flat(&a.forward(&x).unwrap()), flat(&b.forward(&x).unwrap()));
    // A plain VarMap load reads the file too (it ignores the config tensor).
    let c = Corrector::new(cfg(6, 10, 1, Activation::Tanh), &crate::device::cpu()).unwrap();
    c.varmap().clone().load(&path).unwrap();
    assert_eq!(flat(&a.forward(&x).unwrap()), flat(&c.forward(&x).unwrap()));
    // An f64 corrector loads the f32 file.
    let mut e = Corrector::with_dtype(
        cfg(6, 10, 1, Activation::Tanh),
        &crate::device::cpu(),
        DType::F64,
    )
    .unwrap();
    e.load(&path).unwrap();
    let ye = e
        .forward(&x.to_dtype(DType::F64).unwrap())
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap();
    for (p, q) in flat(&ye).iter().zip(flat(&a.forward(&x).unwrap())) {
        assert!((p - q).abs() < 1e-5);
    }
    // Another activation or width is refused, and leaves the corrector untouched.
    for other in [
        cfg(6, 10, 1, Activation::Relu),
        cfg(6, 11, 1, Activation::Tanh),
    ] {
        let mut d = Corrector::new(other, &crate::device::cpu()).unwrap();
        let before = flat(&d.forward(&x).unwrap());
        assert!(matches!(d.load(&path), Err(Error::ModelFile { .. })));
        assert_eq!(flat(&d.forward(&x).unwrap()), before);
    }
    assert!(matches!(
        b.load(&tmp_path("missing.safetensors")),
        Err(Error::ModelFile { .. })
    ));
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_dir(path.parent().unwrap());
}

/// The synthetic drift study: stale targets on the unit sphere, a fixed non-linear drift
/// `fresh = normalise(stale + 0.5·tanh(A·stale))`, a corrector trained with AdamW on the
/// drift MSE of random minibatches of half the N training targets; evaluated on targets and
/// queries it never saw, by the KL between the fresh softmax and the corrected or stale one.
///
/// Settings: one hidden layer (widths 128–512, GELU) only reached about 0.32–0.37× the
/// stale KL on this drift in our runs, and width 512 runs ~10× slower on the CPU; width 64
/// at depth 2 fits the drift better and keeps the test to a few seconds.
#[test]
fn corrector_recovers_the_fresh_softmax_on_held_out_targets() {
    let (n, held_out, d, n_queries, beta) = (2000, 1000, 16, 500, 20.0);
    let t0 = std::time::Instant::now();
    let stale = normalise(&randn(40, &[n + held_out, d]));
    let a = randn(41, &[d, d]);
    let drift = (stale.matmul(&a.t().unwrap()).unwrap().tanh().unwrap() * 0.5).unwrap();
    let fresh = normalise(&(&stale + drift).unwrap());
    let queries = normalise(&randn(42, &[n_queries, d]));
    let (train_stale, train_fresh) = (
        stale.narrow(0, 0, n).unwrap(),
        fresh.narrow(0, 0, n).unwrap(),
    );
    let (test_stale, test_fresh) = (
        stale.narrow(0, n, held_out).unwrap(),
        fresh.narrow(0, n, held_out).unwrap(),
    );

    let cfg = CorrectorConfig {
        width: 64,
        depth: 2,
        seed: 5,
        ..CorrectorConfig::new(d)
    };
    let h = Corrector::new(cfg, &crate::device::cpu()).unwrap();
    let lr = 1e-2;
    let mut opt = AdamW::new(
        h.vars(),
        ParamsAdamW {
            lr,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rng = SplitMix64::new(43);
    let (steps, batch) = (300, n / 2);
    for step in 0..steps {
        let progress = step as f64 / steps as f64;
        opt.set_learning_rate(lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()));
        let idx: Vec<u32> = (0..batch)
            .map(|_| (rng.next_u64() % n as u64) as u32)
            .collect();
        let idx = Tensor::from_vec(idx, batch, &crate::device::cpu()).unwrap();
        let corrected = h
            .forward(&train_stale.index_select(&idx, 0).unwrap())
            .unwrap();
        let loss = drift_mse(&corrected, &train_fresh.index_select(&idx, 0).unwrap()).unwrap();
        opt.backward_step(&loss).unwrap();
    }

    let corrected = h.apply_chunked(&test_stale, 256).unwrap();
    let scores = |t: &Tensor| queries.matmul(&t.t().unwrap()).unwrap();
    let kl_stale = softmax_kl(&scores(&test_fresh), &scores(&test_stale), beta).unwrap();
    let kl_h = softmax_kl(&scores(&test_fresh), &scores(&corrected), beta).unwrap();
    let st_stale = relative_staleness(&test_stale, &test_fresh).unwrap();
    let st_h = relative_staleness(&corrected, &test_fresh).unwrap();
    let st_train =
        relative_staleness(&h.apply_chunked(&train_stale, 256).unwrap(), &train_fresh).unwrap();
    println!(
        "synthetic drift (held out, beta {beta}): KL(P||P_stale) = {kl_stale:.4}, \
         KL(P||P_h) = {kl_h:.4} (ratio {:.3}); relative staleness {st_stale:.4} -> {st_h:.4} \
         (training targets {st_train:.4}); {:?}",
        kl_h / kl_stale,
        t0.elapsed()
    );
    assert!(
        kl_stale > 1.0,
        "the drift must matter: KL(P||P_stale) = {kl_stale}"
    );
    assert!(
        kl_h < 0.3 * kl_stale,
        "KL(P||P_h) = {kl_h} vs KL(P||P_stale) = {kl_stale}"
    );
    assert!(st_h < 0.2 * st_stale, "staleness {st_h} vs {st_stale}");
}
