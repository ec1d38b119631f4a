use super::*;
use crate::corrector::{CorrectorConfig, Norm};
use crate::device::cpu;

fn world(amplitude: f64, frequency: u32, seed: u64) -> World {
    World::generate(
        &WorldConfig {
            dim: 2,
            targets: 400,
            queries: 200,
            drift: DriftConfig {
                amplitude,
                frequency,
                noise: 0.0,
            },
        },
        seed,
    )
    .unwrap()
}

#[test]
fn the_world_is_deterministic_for_a_seed_and_on_the_sphere() {
    let a = world(0.5, 3, 7);
    assert_eq!(a, world(0.5, 3, 7));
    let b = world(0.5, 3, 8);
    assert_ne!(a.stale, b.stale);
    assert_ne!(a.queries, b.queries);
    for v in a
        .stale
        .chunks(2)
        .chain(a.fresh.chunks(2))
        .chain(a.queries.chunks(2))
    {
        let norm = (v[0] * v[0] + v[1] * v[1]).sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{v:?}");
    }
    // On the circle the drift moves a target at angle θ to θ + a·cos(3θ).
    for (s, f) in a.stale.chunks(2).zip(a.fresh.chunks(2)) {
        let theta = f64::from(s[1]).atan2(f64::from(s[0]));
        let want = theta + 0.5 * (3.0 * theta).cos();
        let (c, si) = (f64::from(f[0]), f64::from(f[1]));
        assert!((c - want.cos()).abs() < 1e-5 && (si - want.sin()).abs() < 1e-5);
    }
    // More amplitude, more staleness.
    let stale = |w: &World| {
        relative_staleness(
            &w.tensor(&w.stale, &cpu()).unwrap(),
            &w.tensor(&w.fresh, &cpu()).unwrap(),
        )
        .unwrap()
    };
    assert!(stale(&world(1.0, 3, 7)) > 2.0 * stale(&a));
}

#[test]
fn training_rows_are_a_seeded_subset_of_the_asked_size() {
    let a = training_rows(1000, 0.1, 3).unwrap();
    assert_eq!(a.len(), 100);
    assert!(a.windows(2).all(|w| w[0] < w[1]) && *a.last().unwrap() < 1000);
    assert_eq!(a, training_rows(1000, 0.1, 3).unwrap());
    assert_ne!(a, training_rows(1000, 0.1, 4).unwrap());
    assert_eq!(training_rows(10, 0.001, 0).unwrap().len(), 1);
    assert_eq!(
        training_rows(10, 1.0, 0).unwrap(),
        (0..10).collect::<Vec<_>>()
    );
    assert!(training_rows(10, 0.0, 0).is_err());
    assert!(training_rows(10, 1.5, 0).is_err());
}

fn corrector(dim: usize, width: usize, depth: usize, norm: Norm) -> Corrector {
    Corrector::new(
        CorrectorConfig {
            width,
            depth,
            norm,
            ..CorrectorConfig::new(dim)
        },
        &cpu(),
    )
    .unwrap()
}

#[test]
fn an_identity_h_leaves_the_stale_divergence() {
    let w = world(0.8, 3, 1);
    let h = corrector(2, 16, 1, Norm::None);
    let rows = training_rows(w.targets(), 0.5, 0).unwrap();
    let judge = Judge::new(&w, &rows, 20.0, &cpu()).unwrap();
    let m = judge.measure(&h, 0, f64::NAN).unwrap();
    assert!(m.kl_stale > 0.1, "the drift must matter: {m:?}");
    assert_eq!(m.kl_corrected, m.kl_stale);
    assert_eq!(m.corrected_staleness, m.staleness);
}

#[test]
fn a_linear_h_undoes_a_linear_drift() {
    // frequency 0: one rotation by 0.6 rad, exactly orthogonal.
    let w = World::generate(
        &WorldConfig {
            dim: 4,
            targets: 300,
            queries: 100,
            drift: DriftConfig {
                amplitude: 0.6,
                frequency: 0,
                noise: 0.0,
            },
        },
        2,
    )
    .unwrap();
    let h = corrector(4, 1, 0, Norm::None);
    let rows = training_rows(w.targets(), 0.2, 0).unwrap();
    let cfg = FitConfig {
        steps: 600,
        lr: 0.02,
        ..FitConfig::default()
    };
    let m = fit(&h, &w, &rows, &cfg).unwrap();
    let (first, last) = (m[0], *m.last().unwrap());
    assert!(first.kl_stale > 0.5, "{first:?}");
    assert!(
        last.kl_corrected < 1e-3 * first.kl_stale,
        "a linear map fits a rotation: {last:?}"
    );
    assert!(last.held_out_staleness < 1e-4, "{last:?}");
}

#[test]
fn both_losses_learn_a_non_linear_drift_and_the_softmax_one_sees_the_task() {
    let w = world(0.6, 2, 3);
    let rows = training_rows(w.targets(), 0.25, 1).unwrap();
    for loss in [FitLoss::Drift, FitLoss::Softmax] {
        let h = corrector(2, 32, 1, Norm::None);
        let cfg = FitConfig {
            loss,
            steps: 300,
            ..FitConfig::default()
        };
        let m = fit(&h, &w, &rows, &cfg).unwrap();
        let last = m.last().unwrap();
        assert_eq!(last.step, 300);
        assert!(
            last.kl_corrected < 0.3 * last.kl_stale,
            "{loss:?}: {last:?}"
        );
        // The loss went down between the first and last measured update.
        assert!(m[1].loss > last.loss, "{loss:?}: {m:?}");
    }
}

#[test]
fn the_toy_softmaxes_are_distributions() {
    let w = world(0.5, 3, 0);
    let h = corrector(2, 8, 1, Norm::None);
    let [p, s, c] = query_softmaxes(&h, &w, 0, 20.0).unwrap();
    for v in [&p, &s, &c] {
        assert_eq!(v.len(), 400);
        assert!((v.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    assert_eq!(s, c, "an untrained h is the identity");
    assert!(query_softmaxes(&h, &w, 200, 20.0).is_err());
}

#[test]
fn the_procrustes_fit_undoes_an_orthogonal_drift_to_float_tolerance() {
    let w = World::generate(
        &WorldConfig {
            dim: 8,
            targets: 300,
            queries: 100,
            drift: DriftConfig {
                amplitude: 0.7,
                frequency: 0,
                noise: 0.0,
            },
        },
        4,
    )
    .unwrap();
    let rows = training_rows(w.targets(), 0.1, 0).unwrap();
    let cfg = FitConfig {
        loss: FitLoss::Procrustes,
        ..FitConfig::default()
    };
    let m = fit(&corrector(8, 1, 0, Norm::None), &w, &rows, &cfg).unwrap();
    let (first, last) = (m[0], m[1]);
    assert!(first.kl_stale > 0.5, "{first:?}");
    assert!(last.kl_corrected < 1e-6, "{last:?}");
    assert!(last.held_out_staleness < 1e-10, "{last:?}");
    // A non-linear h cannot take a linear map.
    assert!(fit(&corrector(8, 4, 1, Norm::None), &w, &rows, &cfg).is_err());
}
