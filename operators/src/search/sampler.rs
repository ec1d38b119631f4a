//! Hard-negative selection from the cache: a ranked candidate pool, then top-k or
//! Gumbel-top-k sampling.

use candle_core::Tensor;

use super::top_k;
use crate::random::SplitMix64;
use crate::ranges::{field_error, finite, finite_non_negative};
use crate::{Error, Result};

/// How negatives are chosen from a query's filtered candidate pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// The `k` best-scoring candidates (deterministic; the RNG is not used).
    #[default]
    TopK,
    /// `k` candidates drawn without replacement from softmax(β·score) over the filtered
    /// pool, by Gumbel-top-k: each candidate gets the key `β·score + G` with
    /// `G = −ln(−ln U)`, `U` uniform in (0, 1), and the `k` largest keys win. For `k = 1`
    /// this is exactly a softmax sample; for `k > 1` it is successive sampling without
    /// replacement (Kool et al., 2019). β = 0 samples uniformly, large β tends to
    /// [`Strategy::TopK`].
    Gumbel,
}

/// Chooses hard negatives for a batch of queries from a cache of target embeddings.
///
/// Per query: the candidate pool is the top `pool` cache rows by score with the query's
/// positives excluded ([`top_k`]); its `skip_top` best are dropped (they are the most likely
/// unlabelled positives); the margin filter removes candidates scoring too close to the
/// positive; `k` negatives are then taken by `strategy`.
#[derive(Debug, Clone, PartialEq)]
pub struct NegativeSampler {
    /// Negatives per query. A query gets fewer when its filtered pool is smaller: a pool
    /// well above `k + skip_top` leaves room for the margin filter.
    pub k: usize,
    /// How the `k` are chosen from the filtered pool.
    pub strategy: Strategy,
    /// Rank range: skip the `skip_top` best non-positive candidates.
    pub skip_top: usize,
    /// Candidates considered (the top `pool` non-positives, before skipping and the margin
    /// filter); must be at least `k + skip_top`.
    pub pool: usize,
    /// **Absolute** margin below the positive: a candidate is kept only if
    /// `score <= positive_score − margin`, i.e. dropped if `score > positive_score − margin`.
    /// `Some(0.0)` drops candidates scoring above the positive (likely false negatives);
    /// `Some(0.1)` also drops those within 0.1 below it; a negative margin tolerates
    /// candidates up to `|margin|` above it. This is sentence-transformers'
    /// `absolute_margin`, not its `relative_margin` (`score > pos · (1 − m)`), because a
    /// relative margin flips meaning when the positive's inner product is negative, which
    /// unnormalised scores allow. `None`: no filter.
    pub margin: Option<f32>,
    /// Inverse temperature β of [`Strategy::Gumbel`] (finite, ≥ 0; unused by TopK).
    pub beta: f32,
}

impl NegativeSampler {
    /// Checks the settings: `pool ≥ k + skip_top`, a finite margin, a finite β ≥ 0; the
    /// error ([`Error::Field`]) names the setting.
    pub fn validate(&self) -> Result<()> {
        match self.k.checked_add(self.skip_top) {
            Some(need) if self.pool >= need => {}
            _ => {
                return Err(field_error(
                    "pool",
                    format!(
                        "`pool` is {} (expected at least k + skip_top = {} + {})",
                        self.pool, self.k, self.skip_top
                    ),
                ))
            }
        }
        if let Some(m) = self.margin {
            finite("margin", f64::from(m))?;
        }
        finite_non_negative("beta", f64::from(self.beta))
    }

    /// For each query: candidates = top `pool` by score excluding `positives[i]`, then drop
    /// the first `skip_top`, apply the margin filter against `positive_scores[i]`, then take
    /// the top `k` ([`Strategy::TopK`], best first) or `k` without replacement by
    /// Gumbel-top-k ([`Strategy::Gumbel`], in the order drawn, i.e. by decreasing perturbed
    /// key). Returns indices with their unperturbed scores.
    ///
    /// `rng` is only drawn from by Gumbel, one uniform per filtered candidate, query after
    /// query in pool order: a seed gives the same negatives for the same pools.
    /// `positive_scores` may be empty when `margin` is `None`. `chunk` is [`top_k`]'s.
    ///
    /// # Errors
    /// Invalid settings ([`NegativeSampler::validate`]), `positives` not one list per
    /// query, `positive_scores` of the wrong length or not finite when a margin is set, or
    /// [`top_k`]'s errors.
    pub fn sample(
        &self,
        queries: &Tensor,
        cache: &Tensor,
        positives: &[Vec<u32>],
        positive_scores: &[f32],
        rng: &mut SplitMix64,
        chunk: usize,
    ) -> Result<Vec<Vec<(u32, f32)>>> {
        self.validate()?;
        let (b, _) = queries.dims2()?;
        if positives.len() != b {
            return Err(Error::Setting(format!(
                "{} positive lists for {b} queries",
                positives.len()
            )));
        }
        if let Some(margin) = self.margin {
            if positive_scores.len() != b {
                return Err(Error::Setting(format!(
                    "{} positive scores for {b} queries (needed by the margin filter)",
                    positive_scores.len()
                )));
            }
            if let Some(s) = positive_scores.iter().find(|s| !s.is_finite()) {
                return Err(Error::Setting(format!(
                    "positive score {s} is not finite (margin {margin})"
                )));
            }
        }
        let pools = top_k(queries, cache, self.pool, positives, chunk)?;
        let mut out = Vec::with_capacity(b);
        for (i, pool) in pools.into_iter().enumerate() {
            out.push(self.choose(pool, positive_scores.get(i).copied(), rng));
        }
        Ok(out)
    }

    /// The negatives of one query from its candidate pool (the top `pool` non-positives,
    /// best first, ties by lower key: [`top_k`]'s order, or [`merge_top`]'s across
    /// shards): drop the first `skip_top`, apply the margin filter against
    /// `positive_score` (kept all when it is `None`), take `k` by `strategy`. A pool with
    /// any key type works, so a sharded search chooses from ids.
    pub fn choose<K>(
        &self,
        pool: Vec<(K, f32)>,
        positive_score: Option<f32>,
        rng: &mut SplitMix64,
    ) -> Vec<(K, f32)> {
        let mut cands: Vec<(K, f32)> = pool.into_iter().skip(self.skip_top).collect();
        if let (Some(margin), Some(p)) = (self.margin, positive_score) {
            let limit = p - margin;
            cands.retain(|(_, s)| *s <= limit);
        }
        match self.strategy {
            Strategy::TopK => {
                cands.truncate(self.k);
                cands
            }
            Strategy::Gumbel => gumbel_top_k(cands, self.k, self.beta, rng),
        }
    }
}

/// The `n` best of candidates gathered from several shards' top lists: by score
/// descending, ties by lower key, as [`top_k`] over the union of the shards would rank
/// them when its rows are in key order. Each shard must send its own top `n` (fewer
/// only when it holds fewer rows): then the merged `n` are exactly the global top `n`.
pub fn merge_top<K: Ord>(mut candidates: Vec<(K, f32)>, n: usize) -> Vec<(K, f32)> {
    candidates.retain(|(_, s)| !s.is_nan());
    // As `top_k`: −0.0 and 0.0 are equal scores, so the key decides between them.
    candidates.sort_by(|a, b| {
        b.1.partial_cmp(&a.1)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then_with(|| a.0.cmp(&b.0))
    });
    candidates.truncate(n);
    candidates
}

/// `k` of `cands` without replacement, by the `k` largest keys `β·score + Gumbel(0, 1)`,
/// in decreasing key order (ties, practically impossible, by pool order). Draws exactly one
/// uniform per candidate, in order. Keys are computed in f64.
fn gumbel_top_k<K>(
    cands: Vec<(K, f32)>,
    k: usize,
    beta: f32,
    rng: &mut SplitMix64,
) -> Vec<(K, f32)> {
    let beta = f64::from(beta);
    let mut keyed: Vec<(f64, (K, f32))> = cands
        .into_iter()
        .map(|c| {
            let key = beta * f64::from(c.1) + gumbel(rng);
            // 0·(−∞) is NaN: rank such a candidate last rather than first.
            (if key.is_nan() { f64::NEG_INFINITY } else { key }, c)
        })
        .collect();
    // Stable sort: equal keys keep pool order.
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.into_iter().take(k).map(|(_, c)| c).collect()
}

/// A standard Gumbel sample `−ln(−ln U)`, with `U` uniform on the open interval (0, 1)
/// (53 random bits, offset by half a step so that neither logarithm sees 0 or 1).
#[inline]
fn gumbel(rng: &mut SplitMix64) -> f64 {
    let u = ((rng.next_u64() >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
    -(-u.ln()).ln()
}
