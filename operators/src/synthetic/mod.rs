//! The synthetic study: what a corrector can and cannot fix, on targets whose drift is
//! known exactly.
//!
//! # The world ([`World::generate`], from a seed)
//!
//! * **Stale targets** `B[y]`: `targets` points drawn uniformly on the unit sphere of
//!   `dim` dimensions (a normal vector, normalised).
//! * **True targets** `g(y) = D(B[y])`, with the drift `D`: coordinates are paired
//!   `(x₀, x₁), (x₂, x₃), …` (an odd last coordinate is left alone); each pair `i` is
//!   rotated in its plane by the angle `φᵢ = amplitude · cos(frequency · θᵢ + cᵢ)`, where
//!   `θᵢ` is the pair's own angle and `cᵢ` a seeded phase (`c₀ = 0`). The rotation angle
//!   thus varies smoothly with position: on the circle (`dim: 2`) a target at angle `θ`
//!   moves to `θ + a·cos(kθ)`. Then Gaussian noise of standard deviation `noise` is added
//!   to every coordinate and the vector is normalised again. With `frequency: 0` and no
//!   noise the drift is one fixed rotation (by `amplitude` in the first plane): exactly
//!   linear (orthogonal).
//! * **Queries**: `queries` held-out points and as many training points, uniform on the
//!   sphere. The true distribution of a query `q` is `P(y | q) ∝ exp(β ⟨q, g(y)⟩)`, the
//!   stale one `P_stale ∝ exp(β ⟨q, B[y]⟩)`, the corrected one
//!   `P_h ∝ exp(β ⟨q, h(B[y])⟩)`; the paper's toy uses β = 20.
//!
//! # Fitting h ([`fit`])
//!
//! h is trained on a seeded subset of the targets ([`training_rows`]: a `fraction` of
//! them), full batch with AdamW, by the drift loss `‖h(B[y]) − g(y)‖²` (what freshen's
//! corrector learns from the touched targets) or by the softmax loss `KL(P ‖ P_h)` of the
//! training queries over the subset (the task the corrected scores serve), or sets a
//! linear h to the orthogonal Procrustes fit of the subset in closed form. Every
//! evaluation reports `KL(P ‖ P_stale)` and `KL(P ‖ P_h)` over all targets, for the
//! held-out queries ([`Measured`]).

use crate::host::HostRead;
use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::corrector::Corrector;
use crate::hashing::hash64_seeded;
use crate::loss::{log_softmax_rows as log_softmax, relative_staleness, softmax_kl};
use crate::random::SplitMix64;
use crate::ranges::{at_least, field_error, finite, finite_non_negative, finite_positive, within};
use crate::train::{AdamW, AdamWConfig, Gradients};
use crate::Result;

#[cfg(test)]
mod tests;

/// The drift from the stale targets to the true ones (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct DriftConfig {
    /// Largest rotation, in radians. Default 0.5.
    pub amplitude: f64,
    /// Periods of the rotation angle around a circle (an integer, so the drift is
    /// continuous); 0 makes it one fixed rotation. Default 3.
    pub frequency: u32,
    /// Standard deviation of the Gaussian noise added to each coordinate. Default 0.
    pub noise: f64,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            amplitude: 0.5,
            frequency: 3,
            noise: 0.0,
        }
    }
}

/// Settings of a synthetic [`World`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WorldConfig {
    /// Dimensions of the sphere the points lie on. Default 2 (the circle).
    #[serde(default = "default_dim")]
    pub dim: usize,
    /// Number of targets. Default 1,000.
    #[serde(default = "default_targets")]
    pub targets: usize,
    /// Number of held-out queries (and as many training queries). Default 500.
    #[serde(default = "default_queries")]
    pub queries: usize,
    /// The drift.
    #[serde(default)]
    pub drift: DriftConfig,
}

impl Default for WorldConfig {
    fn default() -> Self {
        Self {
            dim: default_dim(),
            targets: default_targets(),
            queries: default_queries(),
            drift: DriftConfig::default(),
        }
    }
}

fn default_dim() -> usize {
    2
}

fn default_targets() -> usize {
    1000
}

fn default_queries() -> usize {
    500
}

/// Upper bound of `dim`.
const MAX_DIM: usize = 4096;
/// Upper bound of `targets` and `queries` (the KL needs a queries × targets matrix).
const MAX_POINTS: usize = 1 << 22;

impl WorldConfig {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<()> {
        within("dim", self.dim, 2, MAX_DIM)?;
        within("targets", self.targets, 2, MAX_POINTS)?;
        within("queries", self.queries, 1, MAX_POINTS)?;
        finite("drift.amplitude", self.drift.amplitude)?;
        finite_non_negative("drift.noise", self.drift.noise)?;
        Ok(())
    }
}

/// The points of a synthetic study, row-major `(rows, dim)` in f32.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    /// Dimensions.
    pub dim: usize,
    /// The stale targets `B`.
    pub stale: Vec<f32>,
    /// The true targets `g = D(B)`.
    pub fresh: Vec<f32>,
    /// The held-out queries.
    pub queries: Vec<f32>,
    /// The training queries (used by the softmax loss).
    pub train_queries: Vec<f32>,
}

/// Uniform points on the unit sphere.
fn sphere(rng: &mut SplitMix64, rows: usize, dim: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * dim);
    for _ in 0..rows {
        let v: Vec<f32> = (0..dim).map(|_| rng.normal()).collect();
        out.extend(unit(v));
    }
    out
}

/// `v / ‖v‖` (a zero vector, never drawn in practice, becomes the first axis).
fn unit(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    } else {
        v[0] = 1.0;
    }
    v
}

/// The drift's phase of each coordinate pair.
fn phases(cfg: &WorldConfig, seed: u64) -> Vec<f64> {
    let mut rng = SplitMix64::new(hash64_seeded(seed, b"synthetic-v1/phases"));
    (0..cfg.dim / 2)
        .map(|i| match i {
            0 => 0.0,
            _ => rng.next_f64() * std::f64::consts::TAU,
        })
        .collect()
}

/// The drift `D` of one point, without noise.
fn drifted(x: &[f32], drift: &DriftConfig, phases: &[f64]) -> Vec<f32> {
    let mut out = x.to_vec();
    for (i, c) in phases.iter().enumerate() {
        let (a, b) = (f64::from(x[2 * i]), f64::from(x[2 * i + 1]));
        let theta = b.atan2(a);
        let phi = drift.amplitude * (f64::from(drift.frequency) * theta + c).cos();
        let (s, co) = phi.sin_cos();
        out[2 * i] = (co * a - s * b) as f32;
        out[2 * i + 1] = (s * a + co * b) as f32;
    }
    out
}

impl World {
    /// Draws the world of `cfg` from `seed` (the same seed gives the same points, bit for
    /// bit).
    pub fn generate(cfg: &WorldConfig, seed: u64) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.dim;
        let stream = |tag: &str| SplitMix64::new(hash64_seeded(seed, tag.as_bytes()));
        let stale = sphere(&mut stream("synthetic-v1/targets"), cfg.targets, d);
        let phases = phases(cfg, seed);
        let mut noise = stream("synthetic-v1/noise");
        let mut fresh = Vec::with_capacity(stale.len());
        for x in stale.chunks(d) {
            let mut v = drifted(x, &cfg.drift, &phases);
            if cfg.drift.noise > 0.0 {
                let sd = cfg.drift.noise as f32;
                v.iter_mut().for_each(|x| *x += sd * noise.normal());
            }
            fresh.extend(unit(v));
        }
        Ok(Self {
            dim: d,
            stale,
            fresh,
            queries: sphere(&mut stream("synthetic-v1/queries"), cfg.queries, d),
            train_queries: sphere(&mut stream("synthetic-v1/train-queries"), cfg.queries, d),
        })
    }

    /// Number of targets.
    pub fn targets(&self) -> usize {
        self.stale.len() / self.dim
    }

    /// `(rows, dim)` tensor of `values` on `device`.
    pub fn tensor(&self, values: &[f32], device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            values,
            (values.len() / self.dim, self.dim),
            device,
        )?)
    }
}

/// The seeded subset of `n` targets h trains on: `round(fraction · n)` distinct rows (at
/// least one), in increasing order.
pub fn training_rows(n: usize, fraction: f64, seed: u64) -> Result<Vec<u32>> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(field_error(
            "fraction",
            format!("`fraction` is {fraction} (expected more than 0 and at most 1)"),
        ));
    }
    let take = ((fraction * n as f64).round() as usize).clamp(1, n);
    let mut rng = SplitMix64::new(hash64_seeded(seed, b"synthetic-v1/training-rows"));
    // A partial Fisher-Yates shuffle: the first `take` rows of a seeded permutation.
    let mut rows: Vec<u32> = (0..n as u32).collect();
    for i in 0..take {
        let j = i + (rng.next_u64() % (n - i) as u64) as usize;
        rows.swap(i, j);
    }
    rows.truncate(take);
    rows.sort_unstable();
    Ok(rows)
}

/// What h learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FitLoss {
    /// `‖h(B[y]) − g(y)‖²` over the training targets. The default.
    #[default]
    Drift,
    /// `KL(P ‖ P_h)` of the training queries, over the training targets.
    Softmax,
    /// The orthogonal Procrustes fit on the training targets, in closed form (one
    /// "step"; h must be linear: `depth: 0`, `norm: none`).
    Procrustes,
}

/// Settings of [`fit`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FitConfig {
    /// Share of the targets h trains on, in (0, 1]. Default 0.1.
    #[serde(default = "default_fraction")]
    pub fraction: f64,
    /// Optimiser steps (full batch). Default 500.
    #[serde(default = "default_steps")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub steps: usize,
    /// AdamW's learning rate (no weight decay). Default 0.01.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// The loss.
    #[serde(default)]
    pub loss: FitLoss,
    /// Inverse temperature of every softmax. Default 20 (the paper's toy).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Measure every this many steps (and at the last). Default 50.
    #[serde(default = "default_eval_every")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub eval_every: usize,
}

fn default_fraction() -> f64 {
    0.1
}

fn default_steps() -> usize {
    500
}

fn default_lr() -> f64 {
    0.01
}

fn default_beta() -> f64 {
    20.0
}

fn default_eval_every() -> usize {
    50
}

impl Default for FitConfig {
    fn default() -> Self {
        Self {
            fraction: default_fraction(),
            steps: default_steps(),
            lr: default_lr(),
            loss: FitLoss::default(),
            beta: default_beta(),
            eval_every: default_eval_every(),
        }
    }
}

impl FitConfig {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if !(self.fraction > 0.0 && self.fraction <= 1.0) {
            return Err(field_error(
                "fraction",
                format!(
                    "`fraction` is {} (expected more than 0 and at most 1)",
                    self.fraction
                ),
            ));
        }
        at_least("steps", self.steps, 1)?;
        finite_positive("lr", self.lr)?;
        finite_positive("beta", self.beta)?;
        at_least("eval_every", self.eval_every, 1)?;
        Ok(())
    }
}

/// One evaluation of h during [`fit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    /// Optimiser steps taken.
    pub step: usize,
    /// The training loss before that step's update (NaN at step 0 of no update).
    pub loss: f64,
    /// `KL(P ‖ P_stale)` on the held-out queries (the same at every step).
    pub kl_stale: f64,
    /// `KL(P ‖ P_h)` on the held-out queries.
    pub kl_corrected: f64,
    /// Relative staleness of the stale targets, `‖B − g‖² / ‖g‖²`, over all targets.
    pub staleness: f64,
    /// The same for the corrected targets `h(B)`.
    pub corrected_staleness: f64,
    /// The corrected targets' staleness over the targets h did not train on.
    pub held_out_staleness: f64,
}

/// The held-out measurements of h against the world.
struct Judge {
    queries: Tensor,
    stale: Tensor,
    fresh: Tensor,
    true_scores: Tensor,
    kl_stale: f64,
    staleness: f64,
    held_out: Option<Tensor>,
    beta: f64,
}

impl Judge {
    fn new(world: &World, rows: &[u32], beta: f64, device: &Device) -> Result<Self> {
        let queries = world.tensor(&world.queries, device)?;
        let stale = world.tensor(&world.stale, device)?;
        let fresh = world.tensor(&world.fresh, device)?;
        let true_scores = queries.matmul(&fresh.t()?)?;
        let kl_stale = softmax_kl(&true_scores, &queries.matmul(&stale.t()?)?, beta)?;
        let trained: std::collections::HashSet<u32> = rows.iter().copied().collect();
        let others: Vec<u32> = (0..world.targets() as u32)
            .filter(|r| !trained.contains(r))
            .collect();
        let held_out = match others.is_empty() {
            true => None,
            false => Some(Tensor::new(others.as_slice(), device)?),
        };
        Ok(Self {
            staleness: relative_staleness(&stale, &fresh)?,
            queries,
            stale,
            fresh,
            true_scores,
            kl_stale,
            held_out,
            beta,
        })
    }

    fn measure(&self, h: &Corrector, step: usize, loss: f64) -> Result<Measured> {
        let corrected = h.apply_chunked(&self.stale, 8192)?;
        let scores = self.queries.matmul(&corrected.t()?)?;
        let held_out_staleness = match &self.held_out {
            Some(rows) => relative_staleness(
                &corrected.index_select(rows, 0)?,
                &self.fresh.index_select(rows, 0)?,
            )?,
            None => f64::NAN,
        };
        Ok(Measured {
            step,
            loss,
            kl_stale: self.kl_stale,
            kl_corrected: softmax_kl(&self.true_scores, &scores, self.beta)?,
            staleness: self.staleness,
            corrected_staleness: relative_staleness(&corrected, &self.fresh)?,
            held_out_staleness,
        })
    }
}

/// Trains `h` on the targets `rows` of `world` (see the module docs) and measures it at
/// step 0, every `eval_every` steps and at the last. Deterministic: full batch, no
/// sampling.
pub fn fit(h: &Corrector, world: &World, rows: &[u32], cfg: &FitConfig) -> Result<Vec<Measured>> {
    cfg.validate()?;
    let device = h.device().clone();
    let judge = Judge::new(world, rows, cfg.beta, &device)?;
    let index = Tensor::new(rows, &device)?;
    let stale = judge.stale.index_select(&index, 0)?;
    let fresh = judge.fresh.index_select(&index, 0)?;
    let train_queries = world.tensor(&world.train_queries, &device)?;
    let log_p = match cfg.loss {
        FitLoss::Drift | FitLoss::Procrustes => None,
        FitLoss::Softmax => Some(log_softmax(
            &(train_queries.matmul(&fresh.t()?)? * cfg.beta)?,
        )?),
    };
    if cfg.loss == FitLoss::Procrustes {
        let to_host = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.host_vec1()?) };
        let r = crate::corrector::procrustes::procrustes(
            &to_host(&stale)?,
            &to_host(&fresh)?,
            world.dim,
        )?;
        let before = judge.measure(h, 0, f64::NAN)?;
        h.set_linear(&r)?;
        return Ok(vec![before, judge.measure(h, 1, f64::NAN)?]);
    }
    let params = h.named_vars().to_vec();
    let mut adam = AdamW::new(AdamWConfig {
        weight_decay: 0.0,
        ..AdamWConfig::default()
    });
    let mut out = vec![judge.measure(h, 0, f64::NAN)?];
    for step in 1..=cfg.steps {
        let corrected = h.forward(&stale)?;
        let loss = match &log_p {
            None => (corrected - &fresh)?.sqr()?.sum(1)?.mean_all()?,
            Some(log_p) => {
                let log_q = log_softmax(&(train_queries.matmul(&corrected.t()?)? * cfg.beta)?)?;
                (log_p.exp()? * (log_p - log_q)?)?.sum(1)?.mean_all()?
            }
        };
        let value = f64::from(loss.to_dtype(DType::F32)?.host_scalar::<f32>()?);
        let store = loss.backward()?;
        adam.step(&params, &Gradients::of_vars(&params, &store), &|_| cfg.lr)?;
        if step % cfg.eval_every == 0 || step == cfg.steps {
            out.push(judge.measure(h, step, value)?);
        }
    }
    Ok(out)
}

/// The softmaxes of one query over every target: `(P, P_stale, P_h)` at `beta`, for the
/// toy picture.
pub fn query_softmaxes(
    h: &Corrector,
    world: &World,
    query: usize,
    beta: f64,
) -> Result<[Vec<f32>; 3]> {
    let device = h.device().clone();
    let d = world.dim;
    let q = world
        .queries
        .get(query * d..(query + 1) * d)
        .ok_or_else(|| field_error("query", format!("no held-out query {query}")))?;
    let q = Tensor::from_slice(q, (1, d), &device)?;
    let stale = world.tensor(&world.stale, &device)?;
    let corrected = h.apply_chunked(&stale, 8192)?;
    let p = |targets: &Tensor| -> Result<Vec<f32>> {
        let s = (q.matmul(&targets.t()?)? * beta)?;
        Ok(log_softmax(&s)?.exp()?.flatten_all()?.host_vec1()?)
    };
    Ok([
        p(&world.tensor(&world.fresh, &device)?)?,
        p(&stale)?,
        p(&corrected)?,
    ])
}
