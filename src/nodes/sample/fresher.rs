//! Fresher selection at little cost: each query's candidate pool, found in the searched
//! cache h(B) (whose h is up to `apply_every − 1` steps old), re-scored with the current
//! h applied to the pool's rows of B (`rescore`), and the false-negative guard computed
//! on the stale scores q·B as well (`margin_on`).
//!
//! Both read the pool's rows of the stale cache B, which each shard holds (the same
//! batches `correct` keeps), so they cost b × pool corrector rows a step and no target
//! forward. The shard that holds a candidate scores it; the query's worker takes the
//! whole cache's top `pool` by the searched score ([`merge_top`]), then re-ranks it by the
//! fresher score (ties by id) and filters it, so the choice does not depend on W.

use freshen_operators::host::HostRead;
use std::collections::HashMap;
use std::rc::Rc;

use candle_core::{Device, Tensor};
use freshen_operators::corrector::Corrector;
use freshen_operators::search::merge_top;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::dataflow::shard::Shard;
use crate::error::Result;
use crate::store::tables::col;

/// Which scores the false-negative guard (`margin`) compares.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum MarginOn {
    /// The searched cache's (h(B), or B when h is not applied), re-scored with
    /// `rescore`. The default.
    #[default]
    Searched,
    /// The stale cache's, q·B[c] against q·B[positive].
    Stale,
    /// Both: a candidate too close to the positive by either is dropped.
    Both,
}

/// What a shard computes for fresher selection.
pub(super) struct Fresher {
    /// The current corrector, when re-scoring.
    pub h: Option<Rc<Corrector>>,
    /// Whether the stale scores are wanted (the guard reads them).
    pub stale_scores: bool,
    /// This worker's rows of B.
    pub stale: Shard,
    pub device: Device,
}

/// Per candidate (and the positive), the fresher and stale scores a shard sent.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Extra {
    pub fresher: Option<f32>,
    pub stale: Option<f32>,
}

impl Fresher {
    /// For each query `queries[i]`, the scores of the rows `ids[i]` (all held here): by
    /// the current h over their B rows, and by B itself. One corrector pass for all.
    pub fn scores(&self, queries: &[&[f32]], ids: &[Vec<String>]) -> Result<Vec<Vec<Extra>>> {
        let mut out: Vec<Vec<Extra>> = ids
            .iter()
            .map(|i| vec![Extra::default(); i.len()])
            .collect();
        let all: Vec<String> = ids.iter().flatten().cloned().collect();
        if all.is_empty() || (self.h.is_none() && !self.stale_scores) {
            return Ok(out);
        }
        let (values, d) = self.stale.vectors(&all, col::EMBEDDING, "cache")?;
        let fresher = match &self.h {
            Some(h) => {
                let b = Tensor::from_slice(&values, (all.len(), d), &self.device)?;
                Some(h.forward(&b)?.flatten_all()?.host_vec1::<f32>()?)
            }
            None => None,
        };
        let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        let mut row = 0;
        for (q, extras) in queries.iter().zip(out.iter_mut()) {
            for e in extras.iter_mut() {
                let at = row * d..(row + 1) * d;
                if self.stale_scores {
                    e.stale = Some(dot(q, &values[at.clone()]));
                }
                if let Some(f) = &fresher {
                    e.fresher = Some(dot(q, &f[at]));
                }
                row += 1;
            }
        }
        Ok(out)
    }
}

/// A query's pool for choosing: the whole cache's top `pool` by the searched score, then
/// (with fresher scores) re-ranked by them, ties by id; and the candidates the stale
/// guard drops (`stale > positive_stale − margin`) removed. Returns the pool with the
/// scores the choice reads, and the positive's score for the searched guard.
pub(super) fn pool_for_choice(
    candidates: Vec<(String, f32)>,
    extra: &HashMap<String, Extra>,
    positive: (Option<f32>, Extra),
    (pool, margin, on): (usize, Option<f32>, MarginOn),
) -> (Vec<(String, f32)>, Option<f32>) {
    let mut top = merge_top(candidates, pool);
    let fresher = |id: &String, s: f32| extra.get(id).and_then(|e| e.fresher).unwrap_or(s);
    let (searched, pos) = positive;
    let mut positive_score = searched;
    if let Some(f) = pos.fresher {
        positive_score = Some(f);
        for c in top.iter_mut() {
            c.1 = fresher(&c.0, c.1);
        }
        top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
    if let (Some(m), MarginOn::Stale | MarginOn::Both, Some(p)) = (margin, on, pos.stale) {
        top.retain(|(id, _)| {
            extra
                .get(id)
                .and_then(|e| e.stale)
                .is_none_or(|s| s <= p - m)
        });
    }
    let guard = match on {
        MarginOn::Stale => None,
        _ => positive_score,
    };
    (top, guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extra(pairs: &[(&str, f32, f32)]) -> HashMap<String, Extra> {
        pairs
            .iter()
            .map(|&(id, f, s)| {
                (
                    id.to_string(),
                    Extra {
                        fresher: Some(f),
                        stale: Some(s),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn the_pool_is_the_searched_top_reranked_by_fresher_scores_and_the_stale_guard_filters() {
        let cands = vec![
            ("a".to_string(), 0.9),
            ("b".to_string(), 0.8),
            ("c".to_string(), 0.7),
            ("d".to_string(), 0.1),
        ];
        // d is outside the searched top 3: re-scoring does not bring it in.
        let ex = extra(&[
            ("a", 0.2, 0.1),
            ("b", 0.6, 0.9),
            ("c", 0.6, 0.3),
            ("d", 0.99, 0.0),
        ]);
        let pos = Extra {
            fresher: Some(0.7),
            stale: Some(0.5),
        };
        let (top, guard) = pool_for_choice(
            cands.clone(),
            &ex,
            (Some(0.95), pos),
            (3, None, MarginOn::Searched),
        );
        let ids: Vec<&str> = top.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(ids, ["b", "c", "a"], "re-ranked, ties by id");
        assert_eq!(top[0].1, 0.6);
        assert_eq!(guard, Some(0.7), "the positive's fresher score");
        // The stale guard drops b (0.9 > 0.5 − 0.1) and keeps the others.
        let (top, guard) = pool_for_choice(
            cands,
            &ex,
            (Some(0.95), pos),
            (3, Some(0.1), MarginOn::Stale),
        );
        let ids: Vec<&str> = top.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(ids, ["c", "a"]);
        assert_eq!(guard, None, "the searched guard is off");
    }

    /// `margin_on: both`: a candidate that beats the positive by the stale scores q·B is
    /// dropped, one that does not is kept, and the searched guard stays on (the positive's
    /// score is returned for it).
    #[test]
    fn the_guard_on_both_drops_by_stale_scores_and_keeps_the_searched_guard() {
        let cands = vec![
            ("x".to_string(), 0.9),
            ("y".to_string(), 0.8),
            ("z".to_string(), 0.7),
        ];
        // Stale scores: x beats the positive's 0.5, y ties it, z is well below.
        let ex = HashMap::from([
            (
                "x".to_string(),
                Extra {
                    fresher: None,
                    stale: Some(0.6),
                },
            ),
            (
                "y".to_string(),
                Extra {
                    fresher: None,
                    stale: Some(0.5),
                },
            ),
            (
                "z".to_string(),
                Extra {
                    fresher: None,
                    stale: Some(0.2),
                },
            ),
        ]);
        let pos = Extra {
            fresher: None,
            stale: Some(0.5),
        };
        let on = |margin: f32| {
            let (top, guard) = pool_for_choice(
                cands.clone(),
                &ex,
                (Some(0.95), pos),
                (3, Some(margin), MarginOn::Both),
            );
            let ids: Vec<String> = top.into_iter().map(|c| c.0).collect();
            (ids, guard)
        };
        // Margin 0: only x (0.6 > 0.5) is dropped; y (0.5 ≤ 0.5) and z are kept.
        assert_eq!(
            on(0.0),
            (vec!["y".to_string(), "z".to_string()], Some(0.95))
        );
        // Margin 0.1: y is too close too (0.5 > 0.4); z stays.
        assert_eq!(on(0.1), (vec!["z".to_string()], Some(0.95)));
        // Searched only: nothing is dropped here (the searched guard applies later).
        let (top, guard) = pool_for_choice(
            cands.clone(),
            &ex,
            (Some(0.95), pos),
            (3, Some(0.1), MarginOn::Searched),
        );
        assert_eq!(top.len(), 3);
        assert_eq!(guard, Some(0.95));
    }
}
