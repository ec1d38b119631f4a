//! The sharded search against the whole cache's: the same ids and scores for any worker
//! count, ties included.

use candle_core::{Device, Tensor};
use freshen_operators::hashing::hash64_seeded;
use freshen_operators::search::merge_top;

use super::search::Searched;
use crate::dataflow::shard::{owner, split_by_owner};
use crate::store::batch::{embeddings_batch, Batch};
use crate::store::tables::col;

const DIM: usize = 4;

/// `n` targets whose vectors take values in {0, 1, 2}: many exact score ties. Rows are in
/// a scrambled order, as they arrive from several workers.
fn cache(n: usize) -> arrow::array::RecordBatch {
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| hash64_seeded(5, &(i as u64).to_le_bytes()));
    let ids = order.iter().map(|i| format!("t{i:03}")).collect();
    let values = order
        .iter()
        .flat_map(|&i| (0..DIM).map(move |d| (hash64_seeded(i as u64, &[d as u8]) % 3) as f32))
        .collect();
    embeddings_batch(ids, vec![0; n], values, DIM).unwrap()
}

fn queries() -> (Tensor, Vec<Vec<f32>>) {
    let q: Vec<Vec<f32>> = vec![
        vec![1.0, 0.0, 0.0, 0.0],
        vec![1.0, 1.0, 0.0, 0.0],
        vec![0.0, 1.0, 2.0, 1.0],
        vec![1.0, 1.0, 1.0, 1.0],
        vec![0.0, 0.0, 0.0, 0.0],
    ];
    let flat: Vec<f32> = q.iter().flatten().copied().collect();
    (
        Tensor::from_vec(flat, (q.len(), DIM), &Device::Cpu).unwrap(),
        q,
    )
}

fn positives() -> Vec<Vec<String>> {
    vec![
        vec!["t001".into()],
        vec![],
        vec!["t003".into(), "t040".into()],
        vec![],
        vec!["t000".into()],
    ]
}

fn searched(batches: &[arrow::array::RecordBatch]) -> Searched {
    let mut s = Searched::default();
    let batches: Vec<Batch> = batches.iter().cloned().map(Batch).collect();
    s.update(&batches, &Device::Cpu).unwrap();
    s
}

/// The top `pool` by score then id, from scores computed here one by one.
fn by_hand(
    b: &arrow::array::RecordBatch,
    q: &[f32],
    exclude: &[String],
    pool: usize,
) -> Vec<(String, f32)> {
    let ids = crate::store::batch::strings(b, col::ID).unwrap();
    let (values, _) = crate::store::batch::vectors(b).unwrap();
    let mut all: Vec<(String, f32)> = (0..b.num_rows())
        .filter(|&r| !exclude.iter().any(|e| e == ids.value(r)))
        .map(|r| {
            let v = &values[r * DIM..(r + 1) * DIM];
            (
                ids.value(r).to_string(),
                v.iter().zip(q).map(|(a, b)| a * b).sum(),
            )
        })
        .collect();
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    all.truncate(pool);
    all
}

#[test]
fn sharded_search_equals_the_whole_cache_search_for_one_two_and_three_workers() {
    let table = cache(60);
    let (q, rows) = queries();
    let all = positives();
    let pool = 7;
    let whole = searched(std::slice::from_ref(&table))
        .pools(&q, &all, pool, 16)
        .unwrap();
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(whole[i], by_hand(&table, row, &all[i], pool), "query {i}");
    }
    // The case that makes the test worth having: ties cut by the pool's edge.
    let cut_ties = (0..rows.len())
        .filter(|&i| {
            let longer = by_hand(&table, &rows[i], &all[i], pool + 1);
            longer[pool - 1].1 == longer[pool].1
        })
        .count();
    assert!(
        cut_ties >= 2,
        "only {cut_ties} queries have a tie across the pool's edge"
    );
    for workers in 1..=3 {
        let shards = split_by_owner(&table, col::ID, workers).unwrap();
        assert_eq!(shards.len(), workers);
        let mut merged: Vec<Vec<(String, f32)>> = vec![Vec::new(); rows.len()];
        for (_, shard) in &shards {
            // Several small chunks, so the chunked scan is exercised too.
            let found = searched(std::slice::from_ref(shard))
                .pools(&q, &all, pool, 5)
                .unwrap();
            for (m, f) in merged.iter_mut().zip(found) {
                m.extend(f);
            }
        }
        for (i, m) in merged.into_iter().enumerate() {
            assert_eq!(merge_top(m, pool), whole[i], "{workers} workers, query {i}");
        }
    }
}

#[test]
fn each_worker_holds_about_n_over_w_rows() {
    let n = 20_000;
    let table = cache(n);
    for workers in 2..=4 {
        let shards = split_by_owner(&table, col::ID, workers).unwrap();
        let held: Vec<usize> = shards
            .iter()
            .map(|(_, b)| searched(std::slice::from_ref(b)).len())
            .collect();
        assert_eq!(held.iter().sum::<usize>(), n);
        for (w, (o, b)) in shards.iter().enumerate() {
            assert_eq!(*o, w);
            let ids = crate::store::batch::strings(b, col::ID).unwrap();
            assert!((0..b.num_rows()).all(|r| owner(ids.value(r), workers) == w));
            let share = held[w] as f64 / (n as f64 / workers as f64);
            assert!(
                (0.95..1.05).contains(&share),
                "{workers} workers: worker {w} holds {}",
                held[w]
            );
        }
    }
}
