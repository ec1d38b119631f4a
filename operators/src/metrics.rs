//! Standard IR metrics (Recall@k, MRR@k, nDCG@k) from rankings and graded qrels.
//!
//! The definitions follow BEIR, which computes them with `pytrec_eval` (trec_eval):
//!
//! * A document is **relevant** when its grade is > 0. Grades ≤ 0 (judged non-relevant,
//!   or negative "harmful" grades) count as not relevant and give no gain.
//! * **Recall@k** = |relevant ∩ top k| / |relevant| (BEIR's definition; not capped at k,
//!   so a query with 5 relevant documents has Recall@1 ≤ 0.2).
//! * **MRR@k** = 1 / rank of the first relevant document within the top k (ranks from
//!   1), else 0.
//! * **nDCG@k** = DCG@k / IDCG@k with linear gain (the grade) and the log2 discount
//!   `1 / log2(rank + 1)`: DCG@k = Σ_{r ≤ k} grade(doc_r) / log2(r + 1). IDCG@k is the same
//!   sum over the grades of the relevant documents sorted descending (the ideal ranking).
//!   Linear gain is trec_eval's `ndcg_cut`, hence BEIR's; the `2^grade − 1` variant agrees
//!   for binary grades only.
//!
//! A document appearing twice in a ranking counts once, at its first position.
//! [`evaluate`] averages over the ranked queries that have at least one relevant document
//! in the qrels (as BEIR does when every query is ranked); queries without one are counted
//! in [`MetricSet::skipped`] and leave the means untouched.

use std::collections::HashMap;
use std::hash::Hash;

/// Relevance judgements of one query: corpus index → grade (> 0 means relevant).
pub type Relevant = HashMap<u32, i32>;

/// Relevance judgements of a query set: query id → its [`Relevant`] documents.
///
/// The query id is generic: `String` for BEIR's ids (the default), `u32` for queries
/// numbered by the training data. Corpus documents are `u32` indices, as in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct Qrels<Q: Eq + Hash = String> {
    by_query: HashMap<Q, Relevant>,
}

impl<Q: Eq + Hash> Default for Qrels<Q> {
    fn default() -> Self {
        Self {
            by_query: HashMap::new(),
        }
    }
}

impl<Q: Eq + Hash> Qrels<Q> {
    /// No judgements.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the grade of `doc` for `query` (replacing an earlier grade of the same pair).
    pub fn insert(&mut self, query: Q, doc: u32, grade: i32) {
        self.by_query.entry(query).or_default().insert(doc, grade);
    }

    /// The judgements of `query`, if it has any.
    pub fn get(&self, query: &Q) -> Option<&Relevant> {
        self.by_query.get(query)
    }

    /// Queries with at least one judgement (relevant or not).
    pub fn len(&self) -> usize {
        self.by_query.len()
    }

    /// Whether there is no judgement at all.
    pub fn is_empty(&self) -> bool {
        self.by_query.is_empty()
    }

    /// All queries with their judgements, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&Q, &Relevant)> {
        self.by_query.iter()
    }
}

impl<Q: Eq + Hash> FromIterator<(Q, u32, i32)> for Qrels<Q> {
    fn from_iter<I: IntoIterator<Item = (Q, u32, i32)>>(iter: I) -> Self {
        let mut q = Self::new();
        for (query, doc, grade) in iter {
            q.insert(query, doc, grade);
        }
        q
    }
}

/// Number of relevant (grade > 0) documents.
pub fn relevant_count(relevant: &Relevant) -> usize {
    relevant.values().filter(|&&g| g > 0).count()
}

/// The relevant documents of the top `k` of `ranking`, each once: `(rank from 1, grade)`
/// in rank order.
fn hits(ranking: &[u32], relevant: &Relevant, k: usize) -> Vec<(usize, i32)> {
    let mut seen: Vec<u32> = Vec::new();
    let mut out = Vec::new();
    for (r, doc) in ranking.iter().take(k).enumerate() {
        if let Some(&g) = relevant.get(doc) {
            if g > 0 && !seen.contains(doc) {
                seen.push(*doc);
                out.push((r + 1, g));
            }
        }
    }
    out
}

/// Recall@k: the fraction of the relevant documents found in the top `k` of `ranking`
/// (BEIR: |relevant ∩ top k| / |relevant|). 0 when nothing is relevant.
pub fn recall_at(ranking: &[u32], relevant: &Relevant, k: usize) -> f64 {
    let total = relevant_count(relevant);
    if total == 0 {
        return 0.0;
    }
    hits(ranking, relevant, k).len() as f64 / total as f64
}

/// MRR@k: 1 / rank of the first relevant document in the top `k` (ranks from 1), else 0.
pub fn mrr_at(ranking: &[u32], relevant: &Relevant, k: usize) -> f64 {
    ranking
        .iter()
        .take(k)
        .position(|d| relevant.get(d).is_some_and(|&g| g > 0))
        .map_or(0.0, |p| 1.0 / (p + 1) as f64)
}

/// The log2 discount of a rank counted from 1: `1 / log2(rank + 1)`.
fn discount(rank: usize) -> f64 {
    1.0 / ((rank + 1) as f64).log2()
}

/// nDCG@k with linear gain (the grade) and log2 discount; the ideal DCG sorts the relevant
/// grades descending. 0 when nothing is relevant.
pub fn ndcg_at(ranking: &[u32], relevant: &Relevant, k: usize) -> f64 {
    let mut grades: Vec<i32> = relevant.values().copied().filter(|&g| g > 0).collect();
    grades.sort_unstable_by(|a, b| b.cmp(a));
    let ideal: f64 = grades
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, &g)| g as f64 * discount(i + 1))
        .sum();
    if ideal == 0.0 {
        return 0.0;
    }
    let dcg: f64 = hits(ranking, relevant, k)
        .into_iter()
        .map(|(r, g)| g as f64 * discount(r))
        .sum();
    dcg / ideal
}

/// Recall cutoffs of [`evaluate`]: BEIR / DPR's Recall@1/5/20/100.
pub const DEFAULT_RECALL_CUTOFFS: [usize; 4] = [1, 5, 20, 100];

/// Mean metrics over the evaluated queries.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSet {
    /// `(k, mean Recall@k)` for each requested cutoff, in the order requested.
    pub recall: Vec<(usize, f64)>,
    /// Mean MRR@10.
    pub mrr_at_10: f64,
    /// Mean nDCG@10.
    pub ndcg_at_10: f64,
    /// Queries averaged over (ranked, with at least one relevant document).
    pub queries: usize,
    /// Ranked queries left out because the qrels give them no relevant document.
    pub skipped: usize,
}

impl MetricSet {
    /// Mean Recall@k, if `k` was one of the cutoffs.
    pub fn recall_at(&self, k: usize) -> Option<f64> {
        self.recall.iter().find(|r| r.0 == k).map(|r| r.1)
    }
}

/// [`evaluate_with`] at [`DEFAULT_RECALL_CUTOFFS`].
pub fn evaluate<Q: Eq + Hash>(rankings: &[(Q, Vec<u32>)], qrels: &Qrels<Q>) -> MetricSet {
    evaluate_with(rankings, qrels, &DEFAULT_RECALL_CUTOFFS)
}

/// Mean Recall@k for each of `recall_cutoffs`, MRR@10 and nDCG@10 over the queries of
/// `rankings` (each `(query id, ranked corpus indices, best first)`) that have at least
/// one relevant document in `qrels`. Each entry counts once, so rank every query once.
/// With no query to average over, every mean is 0.
pub fn evaluate_with<Q: Eq + Hash>(
    rankings: &[(Q, Vec<u32>)],
    qrels: &Qrels<Q>,
    recall_cutoffs: &[usize],
) -> MetricSet {
    let mut recall = vec![0.0; recall_cutoffs.len()];
    let (mut mrr, mut ndcg, mut queries, mut skipped) = (0.0, 0.0, 0usize, 0usize);
    for (query, ranking) in rankings {
        let Some(rel) = qrels.get(query).filter(|r| relevant_count(r) > 0) else {
            skipped += 1;
            continue;
        };
        queries += 1;
        for (sum, &k) in recall.iter_mut().zip(recall_cutoffs) {
            *sum += recall_at(ranking, rel, k);
        }
        mrr += mrr_at(ranking, rel, 10);
        ndcg += ndcg_at(ranking, rel, 10);
    }
    let mean = |x: f64| {
        if queries == 0 {
            0.0
        } else {
            x / queries as f64
        }
    };
    MetricSet {
        recall: recall_cutoffs
            .iter()
            .zip(recall)
            .map(|(&k, s)| (k, mean(s)))
            .collect(),
        mrr_at_10: mean(mrr),
        ndcg_at_10: mean(ndcg),
        queries,
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(pairs: &[(u32, i32)]) -> Relevant {
        pairs.iter().copied().collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn recall_with_two_relevant_documents() {
        let r = rel(&[(7, 1), (3, 1), (9, 0)]);
        let ranking = [5, 7, 9, 1, 3, 8];
        assert_eq!(recall_at(&ranking, &r, 1), 0.0);
        assert_eq!(recall_at(&ranking, &r, 2), 0.5);
        assert_eq!(recall_at(&ranking, &r, 4), 0.5); // doc 9 has grade 0
        assert_eq!(recall_at(&ranking, &r, 5), 1.0);
        assert_eq!(recall_at(&ranking, &r, 100), 1.0);
        // Not capped at k: two relevant, one slot.
        assert_eq!(recall_at(&[7], &r, 1), 0.5);
        // A duplicate counts once.
        assert_eq!(recall_at(&[7, 7, 7], &r, 3), 0.5);
        assert_eq!(recall_at(&ranking, &rel(&[]), 5), 0.0);
    }

    #[test]
    fn mrr_when_the_first_relevant_is_at_rank_3() {
        let r = rel(&[(4, 1), (6, 2), (2, 0)]);
        let ranking = [2, 9, 6, 4];
        assert!(close(mrr_at(&ranking, &r, 10), 1.0 / 3.0));
        assert_eq!(mrr_at(&ranking, &r, 2), 0.0);
        assert!(close(mrr_at(&ranking, &r, 3), 1.0 / 3.0));
        assert_eq!(mrr_at(&[4], &r, 10), 1.0);
    }

    #[test]
    fn ndcg_with_grades() {
        // Grades 3, 2, 1 for docs 1, 2, 3; ranking puts them 2, (junk), 1, 3.
        let r = rel(&[(1, 3), (2, 2), (3, 1), (8, 0)]);
        let ranking = [2, 8, 1, 3];
        let dcg = 2.0 / 2f64.log2() + 3.0 / 4f64.log2() + 1.0 / 5f64.log2(); // 2 + 1.5 + 0.4307
        let idcg = 3.0 + 2.0 / 3f64.log2() + 1.0 / 2.0; // 3 + 1.2619 + 0.5
        assert!(close(ndcg_at(&ranking, &r, 10), dcg / idcg));
        assert!(
            close(ndcg_at(&ranking, &r, 10), 0.8254499218587348),
            "{}",
            ndcg_at(&ranking, &r, 10)
        );
        // @1: DCG 2 over IDCG 3.
        assert!(close(ndcg_at(&ranking, &r, 1), 2.0 / 3.0));
        // @2: the ideal takes the two best grades only.
        assert!(close(
            ndcg_at(&ranking, &r, 2),
            2.0 / (3.0 + 2.0 / 3f64.log2())
        ));
        assert!(close(ndcg_at(&[1, 2, 3], &r, 10), 1.0));
        assert_eq!(ndcg_at(&[8, 9], &r, 10), 0.0);
        // Binary single relevant at rank 2: 1 / log2(3).
        assert!(close(
            ndcg_at(&[5, 1], &rel(&[(1, 1)]), 10),
            1.0 / 3f64.log2()
        ));
    }

    #[test]
    fn evaluate_averages_over_queries_with_relevant_documents() {
        let qrels: Qrels = [
            ("a".to_string(), 1, 1),
            ("a".to_string(), 2, 1),
            ("b".to_string(), 5, 2),
            ("c".to_string(), 9, 0), // judged, nothing relevant: skipped
        ]
        .into_iter()
        .collect();
        let rankings = vec![
            ("a".to_string(), vec![1, 3, 4, 5, 6, 2]), // R@1 .5, R@5 .5, R@20 1, MRR 1
            ("b".to_string(), vec![7, 8, 5]),          // R@1 0, R@5 1, MRR 1/3
            ("c".to_string(), vec![9]),
            ("d".to_string(), vec![1]), // no qrels at all: skipped
        ];
        let m = evaluate(&rankings, &qrels);
        assert_eq!((m.queries, m.skipped), (2, 2));
        assert_eq!(m.recall_at(1), Some(0.25));
        assert_eq!(m.recall_at(5), Some(0.75));
        assert_eq!(m.recall_at(20), Some(1.0));
        assert_eq!(m.recall_at(100), Some(1.0));
        assert_eq!(m.recall_at(3), None);
        assert!(close(m.mrr_at_10, (1.0 + 1.0 / 3.0) / 2.0));
        let ndcg_a = (1.0 + 1.0 / 7f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        let ndcg_b = 1.0 / 4f64.log2();
        assert!(close(m.ndcg_at_10, (ndcg_a + ndcg_b) / 2.0));
        let m = evaluate_with(&rankings, &qrels, &[2, 6]);
        assert_eq!(m.recall, vec![(2, 0.25), (6, 1.0)]);
        // u32 query ids work too; no evaluable query gives zeros.
        let q: Qrels<u32> = [(0, 1, 1)].into_iter().collect();
        let m = evaluate(&[(1, vec![1])], &q);
        assert_eq!((m.queries, m.skipped, m.mrr_at_10), (0, 1, 0.0));
    }
}
