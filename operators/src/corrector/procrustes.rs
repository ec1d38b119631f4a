//! The orthogonal Procrustes fit: the rotation `R` that best maps stale embeddings onto
//! fresh ones, `argmin_{RᵀR = I} ‖X·R − Y‖_F`, as the drift adapters that map a new
//! encoder's embeddings onto an old index use. With `M = Xᵀ·Y = U·Σ·Vᵀ` (an SVD), the
//! answer is `R = U·Vᵀ` (Schönemann, 1966). The SVD is a one-sided Jacobi sweep in f64 on
//! the `d × d` matrix `M`: `O(d³)` per sweep, a few sweeps, independent of the rows.

use crate::{Error, Result};

/// Largest number of Jacobi sweeps (convergence is quadratic; 30 is never reached in
/// practice).
const MAX_SWEEPS: usize = 30;

/// `R` (`d × d`, row-major) minimising `‖X·R − Y‖_F` over orthogonal matrices, for
/// `x` and `y` row-major `(n, d)`. A map of rank below `d` (fewer independent rows than
/// dimensions) is completed to a rotation on the directions the rows do not span.
pub fn procrustes(x: &[f32], y: &[f32], d: usize) -> Result<Vec<f64>> {
    if d == 0 || x.len() != y.len() || !x.len().is_multiple_of(d) || x.is_empty() {
        return Err(Error::Setting(format!(
            "procrustes: {} and {} values are not two (n, {d}) matrices",
            x.len(),
            y.len()
        )));
    }
    // M = Xᵀ·Y, in f64.
    let mut m = vec![0f64; d * d];
    for (xr, yr) in x.chunks(d).zip(y.chunks(d)) {
        for (i, &a) in xr.iter().enumerate() {
            let a = f64::from(a);
            let row = &mut m[i * d..(i + 1) * d];
            for (o, &b) in row.iter_mut().zip(yr) {
                *o += a * f64::from(b);
            }
        }
    }
    polar(m, d)
}

/// The orthogonal `R = U·Vᵀ` of `M = U·Σ·Vᵀ` (row-major `d × d`): the Procrustes fit of
/// rows whose cross-covariance `Xᵀ·Y` is `M`, so that a fit can be kept as a running
/// (or decayed) sum of the cross-covariances of the rows seen.
pub fn polar(m: Vec<f64>, d: usize) -> Result<Vec<f64>> {
    if d == 0 || m.len() != d * d {
        return Err(Error::Setting(format!(
            "procrustes: {} values are not a {d} × {d} matrix",
            m.len()
        )));
    }
    let (u, v) = svd(m, d);
    // R = U·Vᵀ.
    let mut r = vec![0f64; d * d];
    for i in 0..d {
        for j in 0..d {
            r[i * d + j] = (0..d).map(|k| u[i * d + k] * v[j * d + k]).sum();
        }
    }
    Ok(r)
}

/// Adds to `m` (`d × d`, decayed by `decay` first) the cross-covariance `Xᵀ·Y` of rows
/// whose fresh side `Y` reached a linear corrector as the output gradient `−Y`: the
/// corrector's weight gradient is then `−Yᵀ·X` (its output is `x·Wᵀ` plus the residual
/// and the bias), so `M += −weight_gradᵀ`. This is how a cross-covariance summed over the
/// workers' rows travels: as a gradient through the gradient exchange.
pub fn add_cross_from_grad(m: &mut [f64], weight_grad: &[f64], d: usize, decay: f64) -> Result<()> {
    if m.len() != d * d || weight_grad.len() != d * d {
        return Err(Error::Setting(format!(
            "procrustes: {} and {} values are not two {d} × {d} matrices",
            m.len(),
            weight_grad.len()
        )));
    }
    for i in 0..d {
        for j in 0..d {
            m[i * d + j] = decay * m[i * d + j] - weight_grad[j * d + i];
        }
    }
    Ok(())
}

/// `U` and `V` (row-major, orthogonal) of `a = U·Σ·Vᵀ` by one-sided Jacobi: rotate
/// column pairs of `a` until they are orthogonal, accumulating the rotations in `V`;
/// then `U`'s columns are `a`'s normalised (completed by Gram-Schmidt where a singular
/// value is zero).
fn svd(mut a: Vec<f64>, d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0f64; d * d];
    (0..d).for_each(|i| v[i * d + i] = 1.0);
    let col = |a: &[f64], p: usize, q: usize| -> (f64, f64, f64) {
        let (mut app, mut aqq, mut apq) = (0.0, 0.0, 0.0);
        for i in 0..d {
            let (x, y) = (a[i * d + p], a[i * d + q]);
            app += x * x;
            aqq += y * y;
            apq += x * y;
        }
        (app, aqq, apq)
    };
    for _ in 0..MAX_SWEEPS {
        let mut rotated = false;
        for p in 0..d {
            for q in p + 1..d {
                let (app, aqq, apq) = col(&a, p, q);
                if apq.abs() <= 1e-15 * (app * aqq).sqrt() || apq == 0.0 {
                    continue;
                }
                rotated = true;
                let zeta = (aqq - app) / (2.0 * apq);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let t = if zeta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                for mat in [&mut a, &mut v] {
                    for i in 0..d {
                        let (x, y) = (mat[i * d + p], mat[i * d + q]);
                        mat[i * d + p] = c * x - s * y;
                        mat[i * d + q] = s * x + c * y;
                    }
                }
            }
        }
        if !rotated {
            break;
        }
    }
    // U: the columns of `a` normalised; a zero column is completed orthogonally.
    let norms: Vec<f64> = (0..d)
        .map(|j| (0..d).map(|i| a[i * d + j].powi(2)).sum::<f64>().sqrt())
        .collect();
    let top = norms.iter().copied().fold(0.0, f64::max);
    let mut u = vec![0f64; d * d];
    let mut done: Vec<usize> = Vec::new();
    let mut empty = Vec::new();
    for j in 0..d {
        if norms[j] > 1e-12 * top && top > 0.0 {
            (0..d).for_each(|i| u[i * d + j] = a[i * d + j] / norms[j]);
            done.push(j);
        } else {
            empty.push(j);
        }
    }
    let mut basis = 0;
    for j in empty {
        loop {
            let mut w = vec![0f64; d];
            w[basis % d] = 1.0;
            basis += 1;
            for &k in &done {
                let dot: f64 = (0..d).map(|i| u[i * d + k] * w[i]).sum();
                (0..d).for_each(|i| w[i] -= dot * u[i * d + k]);
            }
            let n = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n > 1e-6 {
                (0..d).for_each(|i| u[i * d + j] = w[i] / n);
                done.push(j);
                break;
            }
        }
    }
    (u, v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::random::SplitMix64;

    /// A random rotation (Gram-Schmidt of a Gaussian matrix), row-major.
    fn rotation(d: usize, seed: u64) -> Vec<f64> {
        let mut rng = SplitMix64::new(seed);
        let mut q: Vec<Vec<f64>> = Vec::new();
        while q.len() < d {
            let mut w: Vec<f64> = (0..d).map(|_| f64::from(rng.normal())).collect();
            for b in &q {
                let dot: f64 = w.iter().zip(b).map(|(x, y)| x * y).sum();
                w.iter_mut().zip(b).for_each(|(x, y)| *x -= dot * y);
            }
            let n = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            q.push(w.into_iter().map(|x| x / n).collect());
        }
        q.concat()
    }

    fn apply(x: &[f32], r: &[f64], d: usize) -> Vec<f32> {
        x.chunks(d)
            .flat_map(|row| {
                (0..d).map(move |j| {
                    (0..d)
                        .map(|k| f64::from(row[k]) * r[k * d + j])
                        .sum::<f64>() as f32
                })
            })
            .collect()
    }

    #[test]
    fn an_exact_rotation_is_recovered_to_float_tolerance() {
        for (d, n) in [(2, 5), (16, 40), (64, 200)] {
            let r = rotation(d, d as u64);
            let mut rng = SplitMix64::new(9);
            let x: Vec<f32> = (0..n * d).map(|_| rng.normal()).collect();
            let y = apply(&x, &r, d);
            let fit = procrustes(&x, &y, d).unwrap();
            let worst = fit
                .iter()
                .zip(&r)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            assert!(worst < 1e-5, "d = {d}: {worst}");
        }
    }

    /// The training path: −Y as the output gradient of a linear corrector, its weight
    /// gradient into the cross-covariance, the polar factor set back into the corrector:
    /// an exact rotation is recovered and h(X) = Y to float tolerance.
    #[test]
    fn a_linear_corrector_fitted_from_its_weight_gradient_recovers_a_rotation() {
        use crate::corrector::{Corrector, CorrectorConfig, Norm};
        use crate::train::{Grad, Trainable};
        use candle_core::{Device, Tensor};
        let (d, n) = (16, 60);
        let r = rotation(d, 3);
        let mut rng = SplitMix64::new(5);
        let x: Vec<f32> = (0..n * d).map(|_| rng.normal()).collect();
        let y = apply(&x, &r, d);
        let h = Corrector::new(
            CorrectorConfig {
                depth: 0,
                norm: Norm::None,
                ..CorrectorConfig::new(d)
            },
            &Device::Cpu,
        )
        .unwrap();
        let xt = Tensor::from_vec(x.clone(), (n, d), &Device::Cpu).unwrap();
        let minus_y =
            Tensor::from_vec(y.iter().map(|v| -v).collect(), (n, d), &Device::Cpu).unwrap();
        // Two halves, as two workers' or two steps' rows (no decay: one sum).
        let mut m = vec![0f64; d * d];
        for half in [0..n / 2, n / 2..n] {
            let rows = xt.narrow(0, half.start, half.len()).unwrap();
            let grad = minus_y.narrow(0, half.start, half.len()).unwrap();
            let recorded = h.forward_train(&rows).unwrap();
            let g = h.backward(&recorded, &grad).unwrap();
            let Some(Grad::Dense(w)) = g.get("out.weight") else {
                panic!("no weight gradient");
            };
            let w: Vec<f64> = w
                .to_dtype(candle_core::DType::F64)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            add_cross_from_grad(&mut m, &w, d, 1.0).unwrap();
        }
        let fit = polar(m, d).unwrap();
        let worst = fit
            .iter()
            .zip(&r)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(worst < 1e-5, "{worst}");
        h.set_linear(&fit).unwrap();
        let out: Vec<f32> = h
            .forward(&xt)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let err = out
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-4, "{err}");
    }

    #[test]
    fn the_fit_is_orthogonal_even_from_too_few_rows() {
        let d = 8;
        let mut rng = SplitMix64::new(1);
        let x: Vec<f32> = (0..3 * d).map(|_| rng.normal()).collect();
        let y: Vec<f32> = (0..3 * d).map(|_| rng.normal()).collect();
        let r = procrustes(&x, &y, d).unwrap();
        for i in 0..d {
            for j in 0..d {
                let dot: f64 = (0..d).map(|k| r[i * d + k] * r[j * d + k]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((dot - want).abs() < 1e-9, "RRᵀ[{i}][{j}] = {dot}");
            }
        }
        assert!(procrustes(&x, &y[..8], d).is_err());
    }
}
