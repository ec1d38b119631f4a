use super::*;
use crate::random::SplitMix64;
use candle_core::Var;

/// Standard normal values, seeded.
fn normals(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = SplitMix64::new(seed);
    (0..n).map(|_| f64::from(rng.normal())).collect()
}

fn f64_tensor(values: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &crate::device::cpu()).unwrap()
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// One input of a gradient check: its values, shape, and whether the loss must depend on it.
struct Input {
    values: Vec<f64>,
    shape: Vec<usize>,
    /// false: the loss must give it no gradient at all (stop-gradient).
    differentiable: bool,
}

fn input(seed: u64, shape: &[usize], differentiable: bool) -> Input {
    let n = shape.iter().product();
    Input {
        values: normals(seed, n),
        shape: shape.to_vec(),
        differentiable,
    }
}

/// Compares the autograd gradient of `f` w.r.t. every input with central finite
/// differences (f64, step 1e-5, tolerance 1e-6 relative); inputs marked not differentiable
/// must get no gradient (absent or exactly zero). Returns the loss value.
fn gradcheck(inputs: &[Input], f: impl Fn(&[Tensor]) -> Result<Tensor>) -> f64 {
    let vars: Vec<Var> = inputs
        .iter()
        .map(|i| Var::from_tensor(&f64_tensor(&i.values, &i.shape)).unwrap())
        .collect();
    let tensors: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let loss = f(&tensors).unwrap();
    assert_eq!(loss.dims(), &[] as &[usize], "the loss must be a scalar");
    let value = scalar(&loss);
    let grads = loss.backward().unwrap();
    let eval = |inputs: &[Input], which: usize, at: usize, delta: f64| -> f64 {
        let ts: Vec<Tensor> = inputs
            .iter()
            .enumerate()
            .map(|(k, inp)| {
                let mut v = inp.values.clone();
                if k == which {
                    v[at] += delta;
                }
                f64_tensor(&v, &inp.shape)
            })
            .collect();
        scalar(&f(&ts).unwrap())
    };
    let h = 1e-5;
    for (k, (inp, var)) in inputs.iter().zip(&vars).enumerate() {
        let analytic = grads.get(var.as_tensor()).map(flat);
        if !inp.differentiable {
            if let Some(g) = &analytic {
                assert!(
                    g.iter().all(|&x| x == 0.0),
                    "input {k} must get no gradient, got {g:?}"
                );
            }
        }
        if !inp.differentiable {
            // The loss does depend on it numerically: it is a stop-gradient, not a constant.
            continue;
        }
        let analytic = analytic.unwrap_or_else(|| vec![0.0; inp.values.len()]);
        let mut max_abs = 0f64;
        for (at, &a) in analytic.iter().enumerate() {
            let numeric = (eval(inputs, k, at, h) - eval(inputs, k, at, -h)) / (2.0 * h);
            assert!(
                (a - numeric).abs() <= 1e-6 * (a.abs() + numeric.abs()) + 1e-9,
                "input {k} element {at}: autograd {a} vs finite differences {numeric}"
            );
            max_abs = max_abs.max(a.abs());
        }
        assert!(max_abs > 1e-3, "input {k}: gradient is (nearly) all zero");
    }
    value
}

/// Reference truncated-softmax loss on the host: rows of (positive first) scores, with an
/// optional validity mask.
fn reference_ce(scores: &[Vec<f64>], valid: Option<&[Vec<bool>]>, beta: f64) -> f64 {
    let mut total = 0.0;
    for (i, row) in scores.iter().enumerate() {
        let terms: Vec<f64> = row
            .iter()
            .enumerate()
            .filter(|(j, _)| valid.is_none_or(|v| v[i][*j]))
            .map(|(_, s)| beta * s)
            .collect();
        let lse = terms.iter().map(|t| t.exp()).sum::<f64>().ln();
        total += lse - beta * row[0];
    }
    total / scores.len() as f64
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Host scores `<q_i, t_ij>` for q (b, d), t (b, m, d) given as flat values.
fn host_scores(q: &[f64], t: &[f64], b: usize, m: usize, d: usize) -> Vec<Vec<f64>> {
    (0..b)
        .map(|i| {
            (0..m)
                .map(|j| {
                    dot(
                        &q[i * d..(i + 1) * d],
                        &t[(i * m + j) * d..(i * m + j + 1) * d],
                    )
                })
                .collect()
        })
        .collect()
}

/// A (b, m) 0/1 mask with the positive always valid and some negatives padded.
fn ragged_mask(b: usize, m: usize) -> (Tensor, Vec<Vec<bool>>) {
    let valid: Vec<Vec<bool>> = (0..b)
        .map(|i| (0..m).map(|j| j == 0 || (i + j) % 3 != 0).collect())
        .collect();
    assert!(
        valid.iter().flatten().any(|v| !v),
        "the mask must mask something"
    );
    let values: Vec<f32> = valid
        .iter()
        .flatten()
        .map(|&v| if v { 1.0 } else { 0.0 })
        .collect();
    (
        Tensor::from_vec(values, (b, m), &crate::device::cpu()).unwrap(),
        valid,
    )
}

#[test]
fn retriever_loss_matches_reference_and_finite_differences() {
    let (b, m, d, beta) = (3, 4, 5, 3.0);
    let inputs = [input(1, &[b, d], true), input(2, &[b, m, d], true)];
    let scores = host_scores(&inputs[0].values, &inputs[1].values, b, m, d);
    let value = gradcheck(&inputs, |t| retriever_loss(&t[0], &t[1], None, beta));
    assert!((value - reference_ce(&scores, None, beta)).abs() < 1e-12);

    let (mask, valid) = ragged_mask(b, m);
    let value = gradcheck(&inputs, |t| retriever_loss(&t[0], &t[1], Some(&mask), beta));
    assert!((value - reference_ce(&scores, Some(&valid), beta)).abs() < 1e-12);
    // The mask changes the loss (it is not ignored).
    assert!((value - reference_ce(&scores, None, beta)).abs() > 1e-3);
}

#[test]
fn masked_candidates_get_exactly_zero_gradient() {
    let (b, m, d) = (3, 4, 5);
    let q = Var::from_tensor(&f64_tensor(&normals(3, b * d), &[b, d])).unwrap();
    let t = Var::from_tensor(&f64_tensor(&normals(4, b * m * d), &[b, m, d])).unwrap();
    let (mask, valid) = ragged_mask(b, m);
    let loss = retriever_loss(q.as_tensor(), t.as_tensor(), Some(&mask), 20.0).unwrap();
    let g = loss.backward().unwrap();
    let gt: Vec<Vec<Vec<f64>>> = g.get(t.as_tensor()).unwrap().to_vec3().unwrap();
    for i in 0..b {
        for j in 0..m {
            let zero = gt[i][j].iter().all(|&x| x == 0.0);
            assert_eq!(zero, !valid[i][j], "row {i} candidate {j}");
        }
    }
}

#[test]
fn in_batch_loss_matches_reference_and_finite_differences() {
    let (b, k, d, beta) = (3, 2, 4, 2.5);
    let inputs = [
        input(5, &[b, d], true),
        input(6, &[b, d], true),
        input(7, &[b, k, d], true),
    ];
    let (q, pos, negs) = (&inputs[0].values, &inputs[1].values, &inputs[2].values);
    // Reference: row i = [own positive, other positives..., own negatives...].
    let rows: Vec<Vec<f64>> = (0..b)
        .map(|i| {
            let qi = &q[i * d..(i + 1) * d];
            let mut row = vec![dot(qi, &pos[i * d..(i + 1) * d])];
            row.extend(
                (0..b)
                    .filter(|&j| j != i)
                    .map(|j| dot(qi, &pos[j * d..(j + 1) * d])),
            );
            row.extend((0..k).map(|j| dot(qi, &negs[(i * k + j) * d..(i * k + j + 1) * d])));
            row
        })
        .collect();
    let value = gradcheck(&inputs, |t| {
        retriever_loss_in_batch(&t[0], &t[1], Some(&t[2]), None, beta)
    });
    assert!((value - reference_ce(&rows, None, beta)).abs() < 1e-12);

    // With a negative mask: row i's own negatives sit after its b in-batch columns.
    let (neg_mask, neg_valid) = ragged_mask(b, k + 1);
    let neg_mask = neg_mask.narrow(1, 1, k).unwrap().contiguous().unwrap();
    let valid: Vec<Vec<bool>> = neg_valid
        .iter()
        .map(|r| {
            std::iter::repeat_n(true, b)
                .chain(r[1..].iter().copied())
                .collect()
        })
        .collect();
    let value = gradcheck(&inputs, |t| {
        retriever_loss_in_batch(&t[0], &t[1], Some(&t[2]), Some(&neg_mask), beta)
    });
    assert!((value - reference_ce(&rows, Some(&valid), beta)).abs() < 1e-12);

    // Without extra negatives: only the other positives.
    let rows_pos: Vec<Vec<f64>> = rows.iter().map(|r| r[..b].to_vec()).collect();
    let value = gradcheck(&inputs[..2], |t| {
        retriever_loss_in_batch(&t[0], &t[1], None, None, beta)
    });
    assert!((value - reference_ce(&rows_pos, None, beta)).abs() < 1e-12);
}

#[test]
fn drift_mse_matches_reference_and_stops_gradient_to_fresh() {
    let (b, m, d) = (3, 4, 3);
    let inputs = [input(8, &[b, m, d], true), input(9, &[b, m, d], false)];
    let (c, f) = (&inputs[0].values, &inputs[1].values);
    let row_sq = |r: usize| -> f64 { (0..d).map(|k| (c[r * d + k] - f[r * d + k]).powi(2)).sum() };
    let value = gradcheck(&inputs, |t| drift_mse(&t[0], &t[1]));
    let want = (0..b * m).map(row_sq).sum::<f64>() / (b * m) as f64;
    assert!((value - want).abs() < 1e-12);
    // (n, d) rows give the same as (b, m, d).
    let flat2 = [
        Input {
            values: c.clone(),
            shape: vec![b * m, d],
            differentiable: true,
        },
        Input {
            values: f.clone(),
            shape: vec![b * m, d],
            differentiable: false,
        },
    ];
    let value2 = gradcheck(&flat2, |t| drift_mse(&t[0], &t[1]));
    assert!((value - value2).abs() < 1e-12);

    let (mask, valid) = ragged_mask(b, m);
    let value = gradcheck(&inputs, |t| drift_mse_masked(&t[0], &t[1], Some(&mask)));
    let rows: Vec<usize> = (0..b * m).filter(|&r| valid[r / m][r % m]).collect();
    let want = rows.iter().map(|&r| row_sq(r)).sum::<f64>() / rows.len() as f64;
    assert!((value - want).abs() < 1e-12);
}

#[test]
fn corrector_task_loss_matches_reference_and_stops_gradient_to_queries() {
    let (b, m, d, beta) = (2, 3, 4, 4.0);
    let inputs = [input(10, &[b, d], false), input(11, &[b, m, d], true)];
    let scores = host_scores(&inputs[0].values, &inputs[1].values, b, m, d);
    let value = gradcheck(&inputs, |t| corrector_task_loss(&t[0], &t[1], None, beta));
    assert!((value - reference_ce(&scores, None, beta)).abs() < 1e-12);
    let (mask, valid) = ragged_mask(b, m);
    let value = gradcheck(&inputs, |t| {
        corrector_task_loss(&t[0], &t[1], Some(&mask), beta)
    });
    assert!((value - reference_ce(&scores, Some(&valid), beta)).abs() < 1e-12);
}

#[test]
fn corrector_loss_kinds_compose_and_only_reach_corrected() {
    let (b, m, d, beta) = (3, 3, 4, 2.0);
    let inputs = [
        input(12, &[b, d], false),
        input(13, &[b, m, d], true),
        input(14, &[b, m, d], false),
    ];
    let (mask, _) = ragged_mask(b, m);
    for mask in [None, Some(&mask)] {
        let run = |kind| {
            gradcheck(&inputs, |t| {
                corrector_loss(kind, &t[0], &t[1], &t[2], mask, beta)
            })
        };
        let mse = run(CorrectorLoss::Mse);
        let task = run(CorrectorLoss::Task);
        let both = run(CorrectorLoss::Both { task_weight: 0.7 });
        let t: Vec<Tensor> = inputs
            .iter()
            .map(|i| f64_tensor(&i.values, &i.shape))
            .collect();
        assert_eq!(mse, scalar(&drift_mse_masked(&t[1], &t[2], mask).unwrap()));
        assert_eq!(
            task,
            scalar(&corrector_task_loss(&t[0], &t[1], mask, beta).unwrap())
        );
        assert!((both - (mse + 0.7 * task)).abs() < 1e-12);
        assert!(mse > 0.1 && task > 0.1);
    }
    let t = f64_tensor(&inputs[1].values, &inputs[1].shape);
    let q = f64_tensor(&inputs[0].values, &inputs[0].shape);
    let bad = CorrectorLoss::Both { task_weight: -1.0 };
    assert!(corrector_loss(bad, &q, &t, &t, None, beta).is_err());
}

#[test]
fn listwise_kl_matches_the_diagnostic_and_finite_differences() {
    let (b, n, d, beta) = (3, 5, 4, 2.0);
    // Every query against the same rows (the training step's form).
    let inputs = [
        input(21, &[b, d], false),
        input(22, &[n, d], true),
        input(23, &[n, d], false),
    ];
    let value = gradcheck(&inputs, |t| listwise_kl(&t[0], &t[1], &t[2], None, beta));
    let t: Vec<Tensor> = inputs
        .iter()
        .map(|i| f64_tensor(&i.values, &i.shape))
        .collect();
    let (s_h, s_g) = (
        t[0].matmul(&t[1].t().unwrap()).unwrap(),
        t[0].matmul(&t[2].t().unwrap()).unwrap(),
    );
    let reference = softmax_kl(&s_g, &s_h, beta).unwrap();
    assert!((value - reference).abs() < 1e-12, "{value} vs {reference}");
    assert!(value > 0.01);
    // h(B) = g(y) is a minimum: zero loss and zero gradient.
    let same = Var::from_tensor(&t[2]).unwrap();
    let kl = listwise_kl(&t[0], same.as_tensor(), &t[2], None, beta).unwrap();
    assert!(scalar(&kl).abs() < 1e-12);
    let g = kl.backward().unwrap();
    assert!(flat(g.get(same.as_tensor()).unwrap())
        .iter()
        .all(|x| x.abs() < 1e-12));
    // Per-query candidate sets with a ragged mask: a padded candidate changes nothing.
    let (m, mask_rows) = (3, ragged_mask(b, 3));
    let sets = [
        input(24, &[b, d], false),
        input(25, &[b, m, d], true),
        input(26, &[b, m, d], false),
    ];
    let masked = gradcheck(&sets, |t| {
        listwise_kl(&t[0], &t[1], &t[2], Some(&mask_rows.0), beta)
    });
    let kinds = gradcheck(&sets, |t| {
        corrector_loss(
            CorrectorLoss::Listwise { weight: 0.5 },
            &t[0],
            &t[1],
            &t[2],
            Some(&mask_rows.0),
            beta,
        )
    });
    let t: Vec<Tensor> = sets
        .iter()
        .map(|i| f64_tensor(&i.values, &i.shape))
        .collect();
    let mse = scalar(&drift_mse_masked(&t[1], &t[2], Some(&mask_rows.0)).unwrap());
    assert!((kinds - (mse + 0.5 * masked)).abs() < 1e-12);
    // The reference drops the padded candidates from both softmaxes (score −∞).
    let scores = |x: &Tensor| -> Tensor {
        let mut s = host_scores(&flat(&t[0]), &flat(x), b, m, d);
        for (row, valid) in s.iter_mut().zip(&mask_rows.1) {
            for (v, ok) in row.iter_mut().zip(valid) {
                if !ok {
                    *v = f64::NEG_INFINITY;
                }
            }
        }
        f64_tensor(&s.concat(), &[b, m])
    };
    let reference = softmax_kl(&scores(&t[2]), &scores(&t[1]), beta).unwrap();
    assert!(
        (masked - reference).abs() < 1e-12,
        "{masked} vs {reference}"
    );
    let bad = CorrectorLoss::Listwise { weight: f64::NAN };
    assert!(corrector_loss(bad, &t[0], &t[1], &t[2], None, beta).is_err());
}

#[test]
fn losses_are_stable_for_huge_scores() {
    // β·s up to ~1e5 in f32: a naive exp would overflow to inf.
    let (b, m, d) = (2, 3, 2);
    let q = Tensor::from_vec(vec![100f32, 0., -100., 50.], (b, d), &crate::device::cpu()).unwrap();
    let t = Tensor::from_vec(
        vec![10f32, 0., 9., 0., -10., 0., 0., 10., 0., -10., 1., 9.],
        (b, m, d),
        &crate::device::cpu(),
    )
    .unwrap();
    // Logits (β = 100): row 0 [1e5, 9e4, -1e5], row 1 [5e4, -5e4, 3.5e4]: the positives
    // win by 1e4 and 1.5e4, so the loss is ~0 (exp(1e5) would overflow f32).
    let loss = scalar(&retriever_loss(&q, &t, None, 100.0).unwrap());
    assert!(loss.is_finite() && loss.abs() < 1e-3, "{loss}");
    // Swap candidates 0 and 1: the positives now lose by 1e4 and 1e5.
    let swapped = Tensor::cat(
        &[
            &t.narrow(1, 1, 1).unwrap(),
            &t.narrow(1, 0, 1).unwrap(),
            &t.narrow(1, 2, 1).unwrap(),
        ],
        1,
    )
    .unwrap();
    let loss = scalar(&retriever_loss(&q, &swapped, None, 100.0).unwrap());
    assert!(loss.is_finite() && (loss - 55_000.0).abs() < 1.0, "{loss}");
}

#[test]
fn bad_inputs_are_refused() {
    let dev = crate::device::cpu();
    let q = Tensor::zeros((2, 3), DType::F32, &dev).unwrap();
    let t = Tensor::zeros((2, 4, 3), DType::F32, &dev).unwrap();
    assert!(retriever_loss(&q, &t, None, 1.0).is_ok());
    assert!(retriever_loss(&q, &t, None, 0.0).is_err());
    assert!(retriever_loss(&q, &t, None, f64::NAN).is_err());
    let t_bad = Tensor::zeros((3, 4, 3), DType::F32, &dev).unwrap();
    assert!(retriever_loss(&q, &t_bad, None, 1.0).is_err());
    let t_empty = Tensor::zeros((2, 0, 3), DType::F32, &dev).unwrap();
    assert!(retriever_loss(&q, &t_empty, None, 1.0).is_err());
    let mask = |v: Vec<f32>| Tensor::from_vec(v, (2, 4), &dev).unwrap();
    assert!(retriever_loss(
        &q,
        &t,
        Some(&mask(vec![1., 0., 1., 1., 1., 1., 0., 0.])),
        1.0
    )
    .is_ok());
    let err = retriever_loss(
        &q,
        &t,
        Some(&mask(vec![1., 0., 1., 1., 0., 1., 1., 1.])),
        1.0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("positive"), "{err}");
    let err = retriever_loss(
        &q,
        &t,
        Some(&mask(vec![1., 0.5, 1., 1., 1., 1., 1., 1.])),
        1.0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("0 or 1"), "{err}");
    let small = Tensor::ones((2, 3), DType::F32, &dev).unwrap();
    assert!(retriever_loss(&q, &t, Some(&small), 1.0).is_err());
    // In-batch: a mask without negatives, mismatched positives.
    assert!(retriever_loss_in_batch(&q, &q, None, Some(&small), 1.0).is_err());
    assert!(retriever_loss_in_batch(&q, &small.narrow(1, 0, 2).unwrap(), None, None, 1.0).is_err());
    // Drift: shapes, an all-masked set.
    assert!(drift_mse(&q, &small.narrow(1, 0, 2).unwrap()).is_err());
    let none = Tensor::zeros((2, 4), DType::F32, &dev).unwrap();
    assert!(drift_mse_masked(&t, &t, Some(&none)).is_err());
    assert!(drift_mse_masked(&t, &t, Some(&small)).is_err());
}

#[test]
fn diagnostics_match_hand_computed_values() {
    let dev = crate::device::cpu();
    let fresh = Tensor::from_vec(vec![1f32, 0., 0., 2.], (2, 2), &dev).unwrap();
    let a = Tensor::from_vec(vec![1f32, 1., 0., 1.], (2, 2), &dev).unwrap();
    // Row 0: 1/1; row 1: 1/4.
    assert!((relative_staleness(&a, &fresh).unwrap() - 0.625).abs() < 1e-12);
    assert_eq!(relative_staleness(&fresh, &fresh).unwrap(), 0.0);
    assert!(relative_staleness(&a, &fresh.t().unwrap().narrow(0, 0, 1).unwrap()).is_err());

    let p = Tensor::from_vec(vec![0f64, 1., 2., 5., 5., 5.], (2, 3), &dev).unwrap();
    let q = Tensor::from_vec(vec![2f64, 1., 0., 5., 5., 5.], (2, 3), &dev).unwrap();
    let beta = 0.7;
    let kl_row = |sp: &[f64], sq: &[f64]| -> f64 {
        let zp: f64 = sp.iter().map(|s| (beta * s).exp()).sum();
        let zq: f64 = sq.iter().map(|s| (beta * s).exp()).sum();
        sp.iter()
            .zip(sq)
            .map(|(a, b)| {
                let (pa, qb) = ((beta * a).exp() / zp, (beta * b).exp() / zq);
                pa * (pa / qb).ln()
            })
            .sum()
    };
    let want = (kl_row(&[0., 1., 2.], &[2., 1., 0.]) + 0.0) / 2.0;
    let got = softmax_kl(&p, &q, beta).unwrap();
    assert!((got - want).abs() < 1e-12 && got > 0.1, "{got} vs {want}");
    assert!(softmax_kl(&p, &p, beta).unwrap().abs() < 1e-15);
    // Invariant to a per-row shift of either side; f32 input works too.
    let shifted = (&q + 100.0).unwrap().to_dtype(DType::F32).unwrap();
    assert!((softmax_kl(&p, &shifted, beta).unwrap() - want).abs() < 1e-9);
    // -inf: absent from P contributes nothing; absent from Q where P > 0 is infinite.
    let p_inf = Tensor::from_vec(vec![0f64, 1., f64::NEG_INFINITY], (1, 3), &dev).unwrap();
    let q_fin = Tensor::from_vec(vec![0f64, 1., 7.], (1, 3), &dev).unwrap();
    assert!(softmax_kl(&p_inf, &q_fin, beta).unwrap().is_finite());
    assert_eq!(softmax_kl(&q_fin, &p_inf, beta).unwrap(), f64::INFINITY);
    assert!(softmax_kl(&p, &q, -1.0).is_err());
}

#[test]
fn corrector_loss_setting_serde() {
    let kinds: Vec<CorrectorLoss> = serde_json::from_str(
        r#"["mse", "task", {"both": {"task_weight": 0.5}}, {"listwise": {}}]"#,
    )
    .unwrap();
    assert_eq!(
        kinds,
        [
            CorrectorLoss::Mse,
            CorrectorLoss::Task,
            CorrectorLoss::Both { task_weight: 0.5 },
            CorrectorLoss::Listwise { weight: 1.0 }
        ]
    );
    assert_eq!(CorrectorLoss::default(), CorrectorLoss::Mse);
    assert!(serde_json::from_str::<CorrectorLoss>(r#""huber""#).is_err());
    assert!(serde_json::from_str::<CorrectorLoss>(r#"{"both": {"weight": 1}}"#).is_err());
}

#[test]
fn marginal_likelihood_matches_a_hand_computed_example_and_finite_differences() {
    // Two passages, scores (1, 0) at β = 1: p(z) = (e/(1+e), 1/(1+e)) = (0.7311, 0.2689);
    // the reader gives the answer probability 0.5 with passage 0 and 0.1 with passage 1:
    // the marginal is 0.7311·0.5 + 0.2689·0.1 = 0.39242, its negative log 0.93541.
    let scores = f64_tensor(&[1.0, 0.0], &[1, 2]);
    let log_lik = f64_tensor(&[0.5f64.ln(), 0.1f64.ln()], &[1, 2]);
    let e = std::f64::consts::E;
    let want = -((e / (1.0 + e)) * 0.5 + (1.0 / (1.0 + e)) * 0.1).ln();
    let got = scalar(&marginal_nll(&scores, &log_lik, None, 1.0).unwrap());
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    assert!((got - 0.935_414).abs() < 1e-6);

    // Its gradient in the scores is −β (posterior − prior): posterior ∝ prior · p(a|z).
    let s = Var::from_tensor(&scores).unwrap();
    let loss = marginal_nll(s.as_tensor(), &log_lik, None, 1.0).unwrap();
    let g = flat(loss.backward().unwrap().get(s.as_tensor()).unwrap());
    let prior = [e / (1.0 + e), 1.0 / (1.0 + e)];
    let joint = [prior[0] * 0.5, prior[1] * 0.1];
    let post = [
        joint[0] / (joint[0] + joint[1]),
        joint[1] / (joint[0] + joint[1]),
    ];
    for z in 0..2 {
        assert!((g[z] + (post[z] - prior[z])).abs() < 1e-12, "{g:?}");
    }

    // Random batches, both inputs, with and without a mask: autograd = finite differences.
    let beta = 3.0;
    gradcheck(&[input(1, &[3, 4], true), input(2, &[3, 4], true)], |t| {
        marginal_nll(&t[0], &t[1], None, beta)
    });
    let mask = f64_tensor(&[1., 1., 0., 1., 1., 1., 1., 0., 1., 0., 1., 1.], &[3, 4]);
    gradcheck(&[input(3, &[3, 4], true), input(4, &[3, 4], true)], |t| {
        marginal_nll(&t[0], &t[1], Some(&mask), beta)
    });
    // A masked passage counts for nothing: dropping it gives the same loss.
    let full = marginal_nll(
        &f64_tensor(&[0.3, -1.0, 2.0], &[1, 3]),
        &f64_tensor(&[-0.2, -3.0, -0.7], &[1, 3]),
        Some(&f64_tensor(&[1., 0., 1.], &[1, 3])),
        2.0,
    )
    .unwrap();
    let dropped = marginal_nll(
        &f64_tensor(&[0.3, 2.0], &[1, 2]),
        &f64_tensor(&[-0.2, -0.7], &[1, 2]),
        None,
        2.0,
    )
    .unwrap();
    assert!((scalar(&full) - scalar(&dropped)).abs() < 1e-9);
    assert!(marginal_nll(&scores, &f64_tensor(&[0.0; 3], &[1, 3]), None, 1.0).is_err());
}
