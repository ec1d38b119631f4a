//! `KL(P ‖ Q)` of two softmaxes over a set of targets split into parts: the form a
//! sharded cache can compute, each worker over its own rows, chunk by chunk.
//!
//! With `a = β·scores_p` and `b = β·scores_q` over the same targets,
//! `KL(P ‖ Q) = Σ_i P_i (a_i − b_i) − LSE(a) + LSE(b)`. Each part keeps, relative to its
//! running maxima, `Σ exp(a_i − max_a)`, `Σ exp(b_i − max_b)` and
//! `Σ exp(a_i − max_a)(a_i − b_i)` (an online log-sum-exp): parts merge exactly in any
//! order, so a worker never holds a query's scores over the whole corpus, and the result
//! equals [`super::softmax_kl`] up to the order of the float sums.

use serde::{Deserialize, Serialize};

/// One query's share of `KL(P ‖ Q)` over some targets (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SoftmaxKlPart {
    /// The largest `a_i` seen (−∞ before any).
    pub max_p: f64,
    /// `Σ exp(a_i − max_p)`.
    pub sum_p: f64,
    /// The largest `b_i` seen.
    pub max_q: f64,
    /// `Σ exp(b_i − max_q)`.
    pub sum_q: f64,
    /// `Σ exp(a_i − max_p)(a_i − b_i)`.
    pub cross: f64,
}

impl Default for SoftmaxKlPart {
    fn default() -> Self {
        Self {
            max_p: f64::NEG_INFINITY,
            sum_p: 0.0,
            max_q: f64::NEG_INFINITY,
            sum_q: 0.0,
            cross: 0.0,
        }
    }
}

/// `exp(from − to)`, 0 when `from` is −∞ (nothing accumulated yet).
fn rescale(from: f64, to: f64) -> f64 {
    if from == f64::NEG_INFINITY {
        0.0
    } else {
        (from - to).exp()
    }
}

impl SoftmaxKlPart {
    /// Adds targets whose scores under P and Q are `p` and `q` (one per target), at
    /// inverse temperature `beta`. A target with `p = −∞` has `P = 0` and adds only to Q,
    /// as in [`super::softmax_kl`].
    pub fn add(&mut self, p: &[f32], q: &[f32], beta: f64) {
        let (mut max_p, mut max_q) = (self.max_p, self.max_q);
        for (&x, &y) in p.iter().zip(q) {
            max_p = max_p.max(beta * f64::from(x));
            max_q = max_q.max(beta * f64::from(y));
        }
        let (sp, sq) = (rescale(self.max_p, max_p), rescale(self.max_q, max_q));
        self.sum_p *= sp;
        self.cross *= sp;
        self.sum_q *= sq;
        (self.max_p, self.max_q) = (max_p, max_q);
        for (&x, &y) in p.iter().zip(q) {
            let (a, b) = (beta * f64::from(x), beta * f64::from(y));
            self.sum_q += (b - max_q).exp();
            if a > f64::NEG_INFINITY {
                let e = (a - max_p).exp();
                self.sum_p += e;
                self.cross += e * (a - b);
            }
        }
    }

    /// Both parts' targets together.
    pub fn merge(self, other: Self) -> Self {
        let (max_p, max_q) = (self.max_p.max(other.max_p), self.max_q.max(other.max_q));
        let (a, b) = (rescale(self.max_p, max_p), rescale(other.max_p, max_p));
        let (c, d) = (rescale(self.max_q, max_q), rescale(other.max_q, max_q));
        Self {
            max_p,
            sum_p: self.sum_p * a + other.sum_p * b,
            max_q,
            sum_q: self.sum_q * c + other.sum_q * d,
            cross: self.cross * a + other.cross * b,
        }
    }

    /// `KL(P ‖ Q)` over every target added (NaN when P has no finite score).
    pub fn value(&self) -> f64 {
        let lse_p = self.max_p + self.sum_p.ln();
        let lse_q = self.max_q + self.sum_q.ln();
        self.cross / self.sum_p - lse_p + lse_q
    }
}

#[cfg(test)]
mod tests {
    use super::SoftmaxKlPart;
    use crate::loss::softmax_kl;
    use candle_core::{Device, Tensor};

    fn scores(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2_654_435_761u32) ^ seed) % 1000) as f32 / 1000.0 - 0.5
            })
            .collect()
    }

    #[test]
    fn parts_in_any_split_give_the_whole_kl() {
        let (p, q) = (scores(257, 7), scores(257, 99));
        let whole = softmax_kl(
            &Tensor::from_slice(&p, (1, 257), &Device::Cpu).unwrap(),
            &Tensor::from_slice(&q, (1, 257), &Device::Cpu).unwrap(),
            20.0,
        )
        .unwrap();
        assert!(whole > 0.1, "the test's softmaxes differ: {whole}");
        for cuts in [vec![0, 257], vec![0, 1, 257], vec![0, 100, 101, 200, 257]] {
            let parts: Vec<SoftmaxKlPart> = cuts
                .windows(2)
                .map(|w| {
                    let mut part = SoftmaxKlPart::default();
                    // Chunk by chunk within a part too, as a worker adds them.
                    for c in (w[0]..w[1]).step_by(13) {
                        let e = (c + 13).min(w[1]);
                        part.add(&p[c..e], &q[c..e], 20.0);
                    }
                    part
                })
                .collect();
            let forward = parts
                .iter()
                .fold(SoftmaxKlPart::default(), |a, b| a.merge(*b));
            let backward = parts
                .iter()
                .rev()
                .fold(SoftmaxKlPart::default(), |a, b| a.merge(*b));
            for got in [forward.value(), backward.value()] {
                assert!(
                    (got - whole).abs() < 1e-9 * whole.max(1.0),
                    "{got} vs {whole}"
                );
            }
        }
    }

    #[test]
    fn a_target_absent_from_p_counts_only_in_q() {
        let mut part = SoftmaxKlPart::default();
        part.add(&[0.5, f32::NEG_INFINITY], &[0.5, 0.5], 1.0);
        // P = (1, 0), Q = (½, ½): KL = ln 2.
        assert!((part.value() - std::f64::consts::LN_2).abs() < 1e-12);
    }
}
