//! Bounded top-k selection over one row of scores, streamed chunk by chunk.
//!
//! A [`Selector`] sees a query's scores in increasing index order (chunk after chunk) and
//! keeps only what can still make the top `k`, so a row is never sorted whole:
//!
//! * Until `k` candidates have been seen, every candidate is kept. From then on the
//!   *threshold* is the score of a `k`-th best candidate so far, and a new candidate is kept
//!   only if its score is **strictly** greater. Rejecting equal scores is safe because
//!   indices only grow: a newcomer that merely equals the threshold loses the tie (lower
//!   index first) against the `k` already held. The order itself, ties included, comes
//!   from [`rank_order`], used by every compaction and the final sort.
//! * Kept candidates are appended to a buffer of capacity `k + max(k, 32)`; when it is
//!   full, `select_nth_unstable` keeps the `k` best in O(k) and raises the threshold. Each
//!   compaction pays for at least `max(k, 32)` appends, so the cost stays linear even on
//!   adversarial (ascending) rows, unlike an insertion-sorted buffer (O(k) per insert).
//! * The hot loop first tests a whole block of [`BLOCK`] scores against the threshold with a
//!   branch-free OR of comparisons (which vectorises); only the rare blocks holding a
//!   candidate are walked element by element.
//!
//! NaN scores are never kept (every comparison with NaN is false). Excluded indices (a
//! query's positives) are checked only for candidates that pass the threshold.

use std::cmp::Ordering;

/// Scores tested at once by the block pre-check.
const BLOCK: usize = 16;
/// Minimum slack of the buffer beyond `k` (amortises compactions for small `k`).
const MIN_SLACK: usize = 32;

/// The result order: higher score first, then lower index. `-0.0` and `0.0` are equal
/// (as for the threshold test); NaN never reaches this comparison.
#[inline]
pub(crate) fn rank_order(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.partial_cmp(&a.1)
        .unwrap_or(Ordering::Equal)
        .then(a.0.cmp(&b.0))
}

/// The running top `k` of one query.
pub(crate) struct Selector {
    k: usize,
    /// Kept candidates `(index, score)`, unordered, at most `cap` long.
    buf: Vec<(u32, f32)>,
    cap: usize,
    /// Score of a `k`-th best candidate so far; meaningful once `full`.
    threshold: f32,
    /// Whether `k` candidates have been seen (so the threshold applies).
    full: bool,
    /// Indices never to keep, sorted and deduplicated.
    exclude: Vec<u32>,
}

impl Selector {
    /// A selector for the top `k` (`k` ≥ 1, already clamped to the row length by the
    /// caller so that the buffer stays small), never keeping an index of `exclude`.
    pub(crate) fn new(k: usize, exclude: &[u32]) -> Self {
        debug_assert!(k >= 1);
        let mut exclude = exclude.to_vec();
        exclude.sort_unstable();
        exclude.dedup();
        let cap = k + k.max(MIN_SLACK);
        Self {
            k,
            buf: Vec::with_capacity(cap),
            cap,
            threshold: f32::NEG_INFINITY,
            full: false,
            exclude,
        }
    }

    #[inline]
    fn excluded(&self, j: u32) -> bool {
        !self.exclude.is_empty() && self.exclude.binary_search(&j).is_ok()
    }

    /// Keeps the `k` best of the buffer and raises the threshold to the `k`-th best.
    fn compact(&mut self) {
        let k = self.k;
        self.buf.select_nth_unstable_by(k - 1, rank_order);
        self.buf.truncate(k);
        self.threshold = self.buf[k - 1].1;
    }

    /// Feeds the scores of indices `base, base + 1, …` (all greater than any index fed
    /// before).
    pub(crate) fn scan(&mut self, scores: &[f32], base: u32) {
        let mut start = 0;
        // Filling phase: keep every non-NaN, non-excluded candidate until k are held.
        while !self.full && start < scores.len() {
            let s = scores[start];
            let j = base + start as u32;
            start += 1;
            if s.is_nan() || self.excluded(j) {
                continue;
            }
            self.buf.push((j, s));
            if self.buf.len() == self.k {
                self.full = true;
                // The k-th best of exactly k candidates is the lowest score.
                self.threshold = self.buf.iter().map(|c| c.1).fold(f32::INFINITY, f32::min);
            }
        }
        if start == scores.len() {
            return;
        }
        // Threshold phase.
        let rest = &scores[start..];
        let base = base + start as u32;
        let mut thr = self.threshold;
        let mut blocks = rest.chunks_exact(BLOCK);
        let mut offset = 0usize;
        for block in blocks.by_ref() {
            // Branch-free test of the whole block; vectorises.
            let any = block.iter().fold(false, |acc, &s| acc | (s > thr));
            if any {
                for (i, &s) in block.iter().enumerate() {
                    if s > thr {
                        thr = self.keep(base + (offset + i) as u32, s);
                    }
                }
            }
            offset += BLOCK;
        }
        for (i, &s) in blocks.remainder().iter().enumerate() {
            if s > thr {
                thr = self.keep(base + (offset + i) as u32, s);
            }
        }
    }

    /// Keeps a candidate that passed the threshold (unless excluded); returns the
    /// threshold, raised if the buffer had to be compacted.
    #[inline]
    fn keep(&mut self, j: u32, s: f32) -> f32 {
        if !self.excluded(j) {
            self.buf.push((j, s));
            if self.buf.len() == self.cap {
                self.compact();
            }
        }
        self.threshold
    }

    /// The top `k` (or fewer, if fewer candidates were fed), best first.
    pub(crate) fn finish(mut self) -> Vec<(u32, f32)> {
        self.buf.sort_unstable_by(rank_order);
        self.buf.truncate(self.k);
        self.buf
    }
}
