//! The sharded evaluation against one worker ranking the whole corpus: the same ranked
//! ids and scores, the same metrics, for W = 1, 2, 3 workers, with ties.

use candle_core::{Device, Tensor};
use freshen_operators::hashing::hash64_seeded;

use super::merge::{Gathered, Judgement};
use super::rank::{rank_and_score, RankCx};
use super::shard::ShardRanking;
use crate::dataflow::shard::owner;
use crate::dataflow::EmbeddingRows;
use crate::store::batch::Batch;

const DIM: usize = 4;
const N: usize = 90;

/// `N` targets whose vectors take values in {0, 1, 2} (many exact score ties), in id
/// order.
fn corpus() -> EmbeddingRows {
    EmbeddingRows {
        ids: (0..N).map(|i| format!("t{i:03}")).collect(),
        hashes: vec![0; N],
        values: (0..N)
            .flat_map(|i| (0..DIM).map(move |d| (hash64_seeded(i as u64, &[d as u8]) % 3) as f32))
            .collect(),
        dim: DIM,
    }
}

fn queries() -> EmbeddingRows {
    let q: [[f32; DIM]; 5] = [
        [1.0, 0.0, 0.0, 0.0],
        [1.0, 1.0, 0.0, 0.0],
        [0.0, 1.0, 2.0, 1.0],
        [1.0, 1.0, 1.0, 1.0],
        [0.0, 0.0, 0.0, 0.0],
    ];
    EmbeddingRows {
        ids: (0..5).map(|i| format!("q{i}")).collect(),
        hashes: vec![0; 5],
        values: q.iter().flatten().copied().collect(),
        dim: DIM,
    }
}

/// Judgements: graded, several per query, one of a target the corpus lacks (dropped),
/// and a query with no relevant target.
fn judgements() -> Vec<Judgement> {
    let j = |q: &str, c: &str, g: i32| (q.to_string(), c.to_string(), g);
    vec![
        j("q0", "t001", 1),
        j("q0", "t017", 2),
        j("q1", "t040", 1),
        j("q1", "missing", 1),
        j("q2", "t003", 1),
        j("q2", "t088", 1),
        j("q3", "t010", 0),
        j("q4", "t000", 1),
    ]
}

/// The rows of `all` owned by `w` of `workers`, in id order.
fn shard_of(all: &EmbeddingRows, w: usize, workers: usize) -> EmbeddingRows {
    let mut out = EmbeddingRows {
        dim: all.dim,
        ..EmbeddingRows::default()
    };
    for i in 0..all.len() {
        if owner(&all.ids[i], workers) == w {
            out.ids.push(all.ids[i].clone());
            out.hashes.push(0);
            out.values.extend_from_slice(all.row(i));
        }
    }
    out
}

#[test]
fn sharded_ranking_equals_the_whole_corpus_ranking_for_any_worker_count() {
    let (all, asked, judged) = (corpus(), queries(), judgements());
    let cpu = Device::Cpu;
    let bar = indicatif::ProgressBar::hidden();
    let depth = 12;
    let whole = rank_and_score(
        &asked,
        &all.ids,
        &all.tensor(&cpu).unwrap(),
        &judged,
        &RankCx {
            depth,
            batch: 2,
            recall_at: &[1, 5, 20],
            device: &cpu,
            bar: &bar,
        },
    )
    .unwrap();
    // Ties decide the cut: some query's last two ranks share a score.
    assert!(
        whole
            .scores
            .iter()
            .any(|s| s.windows(2).any(|w| w[0] == w[1])),
        "the test needs tied scores"
    );
    for workers in 1..=3 {
        let mut got = Gathered::default();
        for w in 0..workers {
            let part = shard_of(&all, w, workers);
            let tensor = part.tensor(&cpu).unwrap();
            let ranking = ShardRanking {
                ids: &part.ids,
                cache: &tensor,
                depth,
                batch: 2,
                device: &cpu,
            };
            let texts = |r: usize| Ok(format!("text of {}", part.ids[r]));
            let answer = ranking.answer(&asked, &judged, 3, &texts, &bar).unwrap();
            let batches: Vec<Batch> = answer
                .into_batches()
                .unwrap()
                .into_iter()
                .map(Batch)
                .collect();
            got.add(&batches).unwrap();
        }
        let merged = got.ranking(&judged, depth, &[1, 5, 20]).unwrap();
        assert_eq!(
            merged.ranked.rankings.len(),
            whole.rankings.len(),
            "W = {workers}"
        );
        for ((q, docs), ((wq, wdocs), (s, ws))) in merged.ranked.rankings.iter().zip(
            whole
                .rankings
                .iter()
                .zip(merged.ranked.scores.iter().zip(&whole.scores)),
        ) {
            assert_eq!(q, wq);
            let ids: Vec<&String> = docs.iter().map(|&d| &merged.ids[d as usize]).collect();
            let want: Vec<&String> = wdocs.iter().map(|&d| &all.ids[d as usize]).collect();
            assert_eq!(ids, want, "W = {workers}, query {q}");
            assert_eq!(s, ws, "W = {workers}, query {q}");
            // The reader's texts of the top 3 came with them.
            for &d in docs.iter().take(3) {
                assert_eq!(
                    merged.texts[d as usize],
                    format!("text of {}", merged.ids[d as usize])
                );
            }
        }
        assert_eq!(merged.ranked.metrics, whole.metrics, "W = {workers}");
    }
}

#[test]
fn a_shard_answers_nothing_to_rank_with_no_rows_and_the_merge_refuses_no_judgement() {
    let (asked, judged) = (queries(), judgements());
    let cpu = Device::Cpu;
    let bar = indicatif::ProgressBar::hidden();
    let empty = Tensor::zeros((0, DIM), candle_core::DType::F32, &cpu).unwrap();
    let ranking = ShardRanking {
        ids: &[],
        cache: &empty,
        depth: 5,
        batch: 2,
        device: &cpu,
    };
    let answer = ranking
        .answer(&asked, &judged, 0, &|_| Ok(String::new()), &bar)
        .unwrap();
    assert!(answer.hits.is_empty() && answer.judged.is_empty());
    let mut got = Gathered::default();
    let batches: Vec<Batch> = answer
        .into_batches()
        .unwrap()
        .into_iter()
        .map(Batch)
        .collect();
    got.add(&batches).unwrap();
    let err = got.ranking(&judged, 5, &[1]).err().unwrap().to_string();
    assert!(err.contains("nothing to evaluate"), "{err}");
}
