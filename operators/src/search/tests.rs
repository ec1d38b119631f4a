//! Tests of exact search and negative sampling against brute-force references.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use candle_core::{DType, Tensor};

use super::*;
use crate::random::SplitMix64;

/// `rows × d` integers in `[-range, range]` as f32: every dot product is exact whatever the
/// summation order, so chunked and brute-force scores agree to the bit, with many ties.
fn int_data(rng: &mut SplitMix64, rows: usize, d: usize, range: u64) -> Vec<f32> {
    (0..rows * d)
        .map(|_| (rng.next_u64() % (2 * range + 1)) as f32 - range as f32)
        .collect()
}

fn tensor(data: &[f32], rows: usize, d: usize) -> Tensor {
    Tensor::from_slice(data, (rows, d), &crate::device::cpu()).unwrap()
}

/// Reference: every score (sequential f32 dot), excluded removed, one full stable sort by
/// score descending (ties keep index order), first k.
fn brute(q: &[f32], c: &[f32], d: usize, k: usize, exclude: &[Vec<u32>]) -> Vec<Vec<(u32, f32)>> {
    let n = c.len() / d;
    q.chunks(d)
        .enumerate()
        .map(|(i, qi)| {
            let mut all: Vec<(u32, f32)> = (0..n)
                .filter(|&j| exclude.get(i).is_none_or(|e| !e.contains(&(j as u32))))
                .map(|j| {
                    let s = qi
                        .iter()
                        .zip(&c[j * d..(j + 1) * d])
                        .map(|(a, b)| a * b)
                        .sum();
                    (j as u32, s)
                })
                .collect();
            all.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
            all.truncate(k);
            all
        })
        .collect()
}

/// Random exclusion lists: query 0 excludes nothing; others up to 20 indices, with
/// duplicates and an out-of-range index thrown in.
fn random_exclude(rng: &mut SplitMix64, b: usize, n: usize) -> Vec<Vec<u32>> {
    (0..b)
        .map(|i| {
            if i == 0 {
                return Vec::new();
            }
            let m = (rng.next_u64() % 21) as usize;
            let mut e: Vec<u32> = (0..m).map(|_| (rng.next_u64() % n as u64) as u32).collect();
            if let Some(&x) = e.first() {
                e.push(x);
            }
            e.push(n as u32 + 5);
            e
        })
        .collect()
}

#[test]
fn top_k_matches_brute_force_on_integer_data() {
    let mut rng = SplitMix64::new(11);
    // (b, n, d, range, k, chunk): N not a multiple of chunk, chunk < k, k > N − excluded,
    // a single row, heavy ties (d = 3, values in {-1, 0, 1}), and blocks big enough for the
    // threaded row scan (40 × 1000 scores).
    let cases = [
        (3, 1, 4, 2, 1, 1),
        (3, 1, 4, 2, 5, 4),
        (5, 37, 8, 2, 3, 5),
        (5, 37, 8, 2, 8, 5),
        (5, 37, 8, 2, 40, 6),
        (4, 100, 3, 1, 30, 7),
        (6, 1037, 8, 2, 10, 64),
        (6, 1037, 8, 2, 200, 100),
        (6, 1037, 3, 1, 50, DEFAULT_CHUNK),
        (40, 3001, 8, 2, 10, 1000),
        (40, 3001, 3, 1, 1, 999),
    ];
    for (b, n, d, range, k, chunk) in cases {
        let q = int_data(&mut rng, b, d, range);
        let c = int_data(&mut rng, n, d, range);
        let exclude = random_exclude(&mut rng, b, n);
        let (qt, ct) = (tensor(&q, b, d), tensor(&c, n, d));
        let got = top_k(&qt, &ct, k, &exclude, chunk).unwrap();
        let want = brute(&q, &c, d, k, &exclude);
        assert_eq!(got, want, "b {b} n {n} d {d} k {k} chunk {chunk}");
        // The device path (group maxima, then the winning groups), run on the CPU.
        let grouped = top_k_as(&qt, &ct, k, &exclude, chunk, true).unwrap();
        assert_eq!(
            grouped, want,
            "grouped: b {b} n {n} d {d} k {k} chunk {chunk}"
        );
        for (i, row) in got.iter().enumerate() {
            let allowed = (0..n as u32).filter(|j| !exclude[i].contains(j)).count();
            assert_eq!(row.len(), k.min(allowed), "query {i} of case n {n} k {k}");
            assert!(
                row.iter().all(|(j, _)| !exclude[i].contains(j)),
                "excluded returned"
            );
        }
    }
}

/// The device path (group maxima, then the winning groups) run on the CPU, where it
/// differs from the host path: NaN rows (a NaN maximum takes a group), winners each in a
/// group of their own, and excluded indices at the top of their groups. (The integer
/// cases of `top_k_matches_brute_force_on_integer_data` run through it too.)
#[test]
fn the_grouped_device_path_matches_brute_force() {
    let mut rng = SplitMix64::new(12);
    for (b, n, d, range, k, chunk) in [(4, 300, 3, 1, 30, 128), (6, 5000, 3, 1, 50, DEFAULT_CHUNK)]
    {
        let q = int_data(&mut rng, b, d, range);
        let mut c = int_data(&mut rng, n, d, range);
        let nan_row = n / 2;
        c[nan_row * d..(nan_row + 1) * d].fill(f32::NAN);
        let exclude = random_exclude(&mut rng, b, n);
        let (qt, ct) = (tensor(&q, b, d), tensor(&c, n, d));
        let got = top_k_as(&qt, &ct, k, &exclude, chunk, true).unwrap();
        let mut with_nan_excluded = exclude.clone();
        with_nan_excluded
            .iter_mut()
            .for_each(|e| e.push(nan_row as u32));
        let mut clean = c.clone();
        clean[nan_row * d..(nan_row + 1) * d].fill(0.0);
        let want = brute(&q, &clean, d, k, &with_nan_excluded);
        assert_eq!(got, want, "b {b} n {n} d {d} k {k} chunk {chunk}");
        assert_eq!(got, top_k(&qt, &ct, k, &exclude, chunk).unwrap());
    }
    // Float data puts each winner in a group of its own: every chosen group counts.
    let (b, n, d) = (16, 20_000, 16);
    let q: Vec<f32> = (0..b * d).map(|_| rng.normal()).collect();
    let c: Vec<f32> = (0..n * d).map(|_| rng.normal()).collect();
    let exclude = random_exclude(&mut rng, b, n);
    let (qt, ct) = (tensor(&q, b, d), tensor(&c, n, d));
    for (k, chunk) in [(20, 4096), (3, 20_000), (64, 8192)] {
        let got = top_k_as(&qt, &ct, k, &exclude, chunk, true).unwrap();
        assert_eq!(got, top_k(&qt, &ct, k, &exclude, chunk).unwrap(), "k {k}");
    }
    // Excluded indices at the top of their groups: each takes one more group.
    let mut scores = vec![0.0f32; 4 * 64];
    for (g, (top, second)) in [(100.0, 50.0), (99.0, 60.0), (98.0, 1.0), (97.0, 1.0)]
        .into_iter()
        .enumerate()
    {
        scores[g * 64] = top;
        scores[g * 64 + 1] = second;
    }
    let one = tensor(&[1.0, 0.0], 1, 2);
    let got = top_k_as(&one, &scored_cache(&scores), 2, &[vec![0, 64]], 256, true).unwrap();
    assert_eq!(got, [vec![(128, 98.0), (192, 97.0)]]);
}

#[test]
fn top_k_float_data_agrees_with_f64_reference() {
    let (b, n, d, k) = (8, 5000, 32, 20);
    let mut rng = SplitMix64::new(5);
    let q: Vec<f32> = (0..b * d).map(|_| rng.normal()).collect();
    let c: Vec<f32> = (0..n * d).map(|_| rng.normal()).collect();
    let got = top_k(&tensor(&q, b, d), &tensor(&c, n, d), k, &[], 777).unwrap();
    for (i, row) in got.iter().enumerate() {
        let exact: Vec<f64> = (0..n)
            .map(|j| {
                (0..d)
                    .map(|t| q[i * d + t] as f64 * c[j * d + t] as f64)
                    .sum()
            })
            .collect();
        let mut sorted = exact.clone();
        sorted.sort_by(|a, b| b.total_cmp(a));
        assert_eq!(row.len(), k);
        assert_eq!(row.iter().map(|r| r.0).collect::<HashSet<_>>().len(), k);
        for w in row.windows(2) {
            assert!(w[0].1 >= w[1].1, "not sorted: {w:?}");
        }
        for &(j, s) in row {
            assert!((s as f64 - exact[j as usize]).abs() < 1e-4, "score of {j}");
            assert!(
                exact[j as usize] >= sorted[k - 1] - 1e-4,
                "{j} is not a top-{k} row"
            );
        }
    }
}

#[test]
fn ties_break_by_lower_index_across_chunks() {
    let (n, d) = (50, 4);
    let c = vec![1.0f32; n * d];
    let q = vec![0.5f32; d];
    let exclude = vec![vec![0, 3, 12]];
    let got = top_k(&tensor(&q, 1, d), &tensor(&c, n, d), 10, &exclude, 7).unwrap();
    let ids: Vec<u32> = got[0].iter().map(|r| r.0).collect();
    assert_eq!(ids, [1, 2, 4, 5, 6, 7, 8, 9, 10, 11]);
    assert!(got[0].iter().all(|r| r.1 == 2.0));
}

#[test]
fn non_contiguous_cache_and_nan_rows() {
    let mut rng = SplitMix64::new(3);
    let (b, n, d) = (3, 301, 8);
    let q = int_data(&mut rng, b, d, 2);
    let mut c = int_data(&mut rng, n, d, 2);
    // Row 17 is NaN: never returned; everything else as if it were absent.
    c[17 * d..18 * d].fill(f32::NAN);
    let cache = tensor(&c, n, d);
    let transposed_twice = cache.t().unwrap().contiguous().unwrap().t().unwrap();
    assert!(!transposed_twice.is_contiguous());
    let excl = vec![vec![17]; b];
    let mut clean = c.clone();
    clean[17 * d..18 * d].fill(0.0);
    let want = brute(&q, &clean, d, 30, &excl);
    for cache in [&cache, &transposed_twice] {
        let got = top_k(&tensor(&q, b, d), cache, 30, &[], 64).unwrap();
        assert_eq!(got, want);
    }
    // A k above the non-NaN count returns every non-NaN row.
    let got = top_k(&tensor(&q, b, d), &cache, 1000, &[], 64).unwrap();
    assert!(got.iter().all(|r| r.len() == n - 1));
}

#[test]
fn degenerate_sizes() {
    let d = 4;
    let q = tensor(&[1.0; 8], 2, d);
    let c = tensor(&[1.0; 12], 3, d);
    assert_eq!(top_k(&q, &c, 0, &[], 2).unwrap(), vec![Vec::new(); 2]);
    let empty = Tensor::zeros((0, d), DType::F32, &crate::device::cpu()).unwrap();
    assert_eq!(top_k(&q, &empty, 5, &[], 2).unwrap(), vec![Vec::new(); 2]);
    let no_queries = Tensor::zeros((0, d), DType::F32, &crate::device::cpu()).unwrap();
    assert!(top_k(&no_queries, &c, 5, &[], 2).unwrap().is_empty());
    let all_excluded = vec![vec![0, 1, 2], vec![1]];
    let got = top_k(&q, &c, 5, &all_excluded, 2).unwrap();
    assert_eq!(got, vec![vec![], vec![(0, 4.0), (2, 4.0)]]);
}

#[test]
fn top_k_rejects_bad_arguments() {
    let q = tensor(&[1.0; 8], 2, 4);
    let c = tensor(&[1.0; 12], 3, 4);
    let narrow = tensor(&[1.0; 9], 3, 3);
    let setting = |r: Result<Vec<Vec<(u32, f32)>>>| matches!(r, Err(Error::Setting(_)));
    assert!(setting(top_k(&q, &narrow, 1, &[], 8)));
    assert!(setting(top_k(&q, &c, 1, &[], 0)));
    assert!(setting(top_k(&q, &c, 1, &[vec![0]], 8)));
    assert!(setting(top_k(
        &q,
        &c.to_dtype(DType::F64).unwrap(),
        1,
        &[],
        8
    )));
    assert!(setting(top_k(&q.flatten_all().unwrap(), &c, 1, &[], 8)));
    // f64 on both sides is fine (scores compared as f32).
    let (q64, c64) = (
        q.to_dtype(DType::F64).unwrap(),
        c.to_dtype(DType::F64).unwrap(),
    );
    assert_eq!(top_k(&q64, &c64, 1, &[], 8).unwrap()[0], vec![(0, 4.0)]);
}

fn sampler(k: usize, strategy: Strategy, skip_top: usize, pool: usize) -> NegativeSampler {
    NegativeSampler {
        k,
        strategy,
        skip_top,
        pool,
        margin: None,
        beta: 1.0,
    }
}

#[test]
fn sampler_top_k_equals_brute_force_after_exclusion_and_skip() {
    let mut rng = SplitMix64::new(21);
    let (b, n, d) = (6, 500, 8);
    let q = int_data(&mut rng, b, d, 2);
    let c = int_data(&mut rng, n, d, 2);
    let mut positives = random_exclude(&mut rng, b, n);
    positives[0] = vec![7];
    for (k, skip, pool, chunk) in [
        (5, 3, 30, 64),
        (5, 0, 5, 3),
        (4, 10, 14, 1000),
        (8, 2, 40, 7),
    ] {
        let s = sampler(k, Strategy::TopK, skip, pool);
        let got = s
            .sample(
                &tensor(&q, b, d),
                &tensor(&c, n, d),
                &positives,
                &[],
                &mut rng,
                chunk,
            )
            .unwrap();
        let want: Vec<Vec<(u32, f32)>> = brute(&q, &c, d, n, &positives)
            .into_iter()
            .map(|r| r.into_iter().skip(skip).take(k).collect())
            .collect();
        assert_eq!(got, want, "k {k} skip {skip} pool {pool}");
    }
}

/// One query `(1, 0)` against rows whose score is their first coordinate.
fn scored_cache(scores: &[f32]) -> Tensor {
    let data: Vec<f32> = scores.iter().flat_map(|&s| [s, 0.25]).collect();
    tensor(&data, scores.len(), 2)
}

#[test]
fn sampler_margin_filter_drops_exactly_the_right_candidates() {
    // Row 2 (0.75) is the positive. Multiples of 1/8: exact scores and limits.
    let cache = scored_cache(&[1.0, 0.875, 0.75, 0.625, 0.5, 0.25, 0.125, -0.5]);
    let q = tensor(&[1.0, 0.0], 1, 2);
    let ids = |s: &NegativeSampler, pos_score: f32| -> Vec<u32> {
        let mut rng = SplitMix64::new(0);
        let r = s
            .sample(&q, &cache, &[vec![2]], &[pos_score], &mut rng, 3)
            .unwrap();
        r[0].iter().map(|x| x.0).collect()
    };
    let mut s = sampler(3, Strategy::TopK, 0, 7);
    assert_eq!(ids(&s, 0.75), [0, 1, 3]);
    // Kept iff score <= pos − margin: 0.0 drops rows scoring above the positive.
    s.margin = Some(0.0);
    assert_eq!(ids(&s, 0.75), [3, 4, 5]);
    // 0.125: the limit is 0.625, and a score equal to the limit is kept.
    s.margin = Some(0.125);
    assert_eq!(ids(&s, 0.75), [3, 4, 5]);
    s.margin = Some(0.25);
    assert_eq!(ids(&s, 0.75), [4, 5, 6]);
    // Negative margin: tolerates up to 0.125 above the positive (0.875 kept, 1.0 not).
    s.margin = Some(-0.125);
    assert_eq!(ids(&s, 0.75), [1, 3, 4]);
    // The filter uses the positive score given, per query.
    s.margin = Some(0.0);
    assert_eq!(ids(&s, 0.25), [5, 6, 7]);
    // skip_top acts on the ranking before the filter: skip 1 drops row 0, and the filter
    // then drops row 1 (0.875 > 0.625).
    let mut s = sampler(3, Strategy::TopK, 1, 7);
    s.margin = Some(0.125);
    assert_eq!(ids(&s, 0.75), [3, 4, 5]);
    s.margin = None;
    assert_eq!(ids(&s, 0.75), [1, 3, 4]);
    // Too few left: fewer than k. Gumbel never returns a filtered candidate either.
    let mut s = sampler(3, Strategy::Gumbel, 0, 4);
    s.margin = Some(0.0);
    for _ in 0..20 {
        let mut got = ids(&s, 0.75);
        got.sort();
        assert_eq!(got, [3, 4]);
    }
}

#[test]
fn gumbel_never_returns_positives_or_duplicates_and_is_deterministic() {
    let mut rng = SplitMix64::new(9);
    let (b, n, d) = (8, 300, 8);
    let q = tensor(&int_data(&mut rng, b, d, 2), b, d);
    let c = tensor(&int_data(&mut rng, n, d, 2), n, d);
    let positives = random_exclude(&mut rng, b, n);
    let mut s = sampler(10, Strategy::Gumbel, 2, 40);
    s.beta = 0.5;
    let run = |seed| {
        s.sample(&q, &c, &positives, &[], &mut SplitMix64::new(seed), 64)
            .unwrap()
    };
    let a = run(7);
    assert_eq!(a, run(7));
    assert_ne!(a, run(8));
    let pools = top_k(&q, &c, 40, &positives, 64).unwrap();
    for (i, row) in a.iter().enumerate() {
        assert_eq!(row.len(), 10);
        let ids: HashSet<u32> = row.iter().map(|r| r.0).collect();
        assert_eq!(ids.len(), 10, "duplicate in {row:?}");
        assert!(row.iter().all(|r| !positives[i].contains(&r.0)));
        // Every pick is from the pool after the skip, with its true score.
        assert!(row.iter().all(|r| pools[i][2..].contains(r)), "{row:?}");
    }
}

#[test]
fn gumbel_frequencies_match_softmax() {
    let scores = [0.0f32, 0.25, 0.5, 0.75, 1.0, 1.5];
    let beta = 2.0f32;
    // Row 6 is the positive (highest score): excluded from the pool.
    let mut all = scores.to_vec();
    all.push(3.0);
    let cache = scored_cache(&all);
    let z: f64 = scores
        .iter()
        .map(|&s| (beta * s) as f64)
        .map(f64::exp)
        .sum();
    let p: Vec<f64> = scores
        .iter()
        .map(|&s| ((beta * s) as f64).exp() / z)
        .collect();
    let batch = 1000;
    let q = Tensor::from_vec(
        [1.0f32, 0.0].repeat(batch),
        (batch, 2),
        &crate::device::cpu(),
    )
    .unwrap();
    let positives = vec![vec![6u32]; batch];
    let mut rng = SplitMix64::new(1234);
    let mut s = sampler(2, Strategy::Gumbel, 0, 6);
    s.beta = beta;
    let (mut first, mut pairs, mut draws) = (vec![0usize; 6], HashMap::new(), 0usize);
    for _ in 0..50 {
        for row in s.sample(&q, &cache, &positives, &[], &mut rng, 4).unwrap() {
            assert_eq!(row.len(), 2);
            first[row[0].0 as usize] += 1;
            *pairs.entry((row[0].0, row[1].0)).or_insert(0usize) += 1;
            draws += 1;
        }
    }
    let within = |count: usize, want: f64, what: &str| {
        let freq = count as f64 / draws as f64;
        let sigma = (want * (1.0 - want) / draws as f64).sqrt();
        assert!(
            (freq - want).abs() < 5.0 * sigma,
            "{what}: {freq} vs {want}"
        );
    };
    // First pick (the k = 1 sample): softmax(β·score).
    for i in 0..6 {
        within(first[i], p[i], &format!("first = {i}"));
    }
    // Second pick without replacement: P(i, j) = p_i · p_j / (1 − p_i).
    for (i, j) in [(5, 4), (4, 5), (5, 0), (3, 2)] {
        let want = p[i] * p[j] / (1.0 - p[i]);
        within(
            pairs.get(&(i as u32, j as u32)).copied().unwrap_or(0),
            want,
            "pair",
        );
    }
}

/// Chi-square goodness of fit of Gumbel-top-k draws: k = 2 distinct negatives from a pool
/// of 6 follow the Plackett-Luce law of softmax(β·score), P(i then j) = p_i · p_j / (1 − p_i),
/// over all 30 ordered pairs (29 degrees of freedom). A fixed seed makes the statistic a
/// fixed number; a sampler off the softmax (uniform picks, or β ignored) lands far above
/// the 0.1 % critical value.
#[test]
fn gumbel_draws_pass_a_chi_square_test_against_the_softmax() {
    let scores = [0.0f32, 0.3, 0.6, 0.9, 1.2, 1.5];
    let beta = 1.5f32;
    let mut all = scores.to_vec();
    all.push(4.0); // the positive, excluded
    let cache = scored_cache(&all);
    let w: Vec<f64> = scores.iter().map(|&s| f64::from(beta * s).exp()).collect();
    let z: f64 = w.iter().sum();
    let p: Vec<f64> = w.iter().map(|v| v / z).collect();
    let batch = 500;
    let q = Tensor::from_vec(
        [1.0f32, 0.0].repeat(batch),
        (batch, 2),
        &crate::device::cpu(),
    )
    .unwrap();
    let positives = vec![vec![6u32]; batch];
    let mut s = sampler(2, Strategy::Gumbel, 0, 6);
    s.beta = beta;
    let mut rng = SplitMix64::new(2024);
    let mut counts: HashMap<(u32, u32), usize> = HashMap::new();
    let mut draws = 0usize;
    for _ in 0..40 {
        for row in s.sample(&q, &cache, &positives, &[], &mut rng, 4).unwrap() {
            assert_eq!(row.len(), 2);
            assert_ne!(row[0].0, row[1].0, "k distinct negatives");
            *counts.entry((row[0].0, row[1].0)).or_default() += 1;
            draws += 1;
        }
    }
    let mut chi2 = 0.0;
    for i in 0..6u32 {
        for j in (0..6u32).filter(|&j| j != i) {
            let (pi, pj) = (p[i as usize], p[j as usize]);
            let expected = draws as f64 * pi * pj / (1.0 - pi);
            let seen = counts.get(&(i, j)).copied().unwrap_or(0) as f64;
            chi2 += (seen - expected).powi(2) / expected;
        }
    }
    // The 99.9th percentile of chi-square with 29 degrees of freedom.
    assert!(
        chi2 < 58.3,
        "chi-square {chi2:.1} over 29 degrees of freedom"
    );
}

#[test]
fn sampler_rejects_bad_settings() {
    let q = tensor(&[1.0, 0.0], 1, 2);
    let c = scored_cache(&[1.0, 0.5, 0.25]);
    let mut rng = SplitMix64::new(0);
    let bad = |s: &NegativeSampler, pos: &[Vec<u32>], ps: &[f32]| {
        let r = s.sample(&q, &c, pos, ps, &mut SplitMix64::new(0), 8);
        matches!(r, Err(Error::Setting(_) | Error::Field { .. }))
    };
    let ok = sampler(1, Strategy::TopK, 1, 2);
    assert!(!bad(&ok, &[vec![]], &[]));
    assert!(bad(&sampler(2, Strategy::TopK, 1, 2), &[vec![]], &[]));
    assert!(bad(
        &NegativeSampler {
            beta: f32::NAN,
            ..ok.clone()
        },
        &[vec![]],
        &[]
    ));
    assert!(bad(
        &NegativeSampler {
            beta: -1.0,
            ..ok.clone()
        },
        &[vec![]],
        &[]
    ));
    let with_margin = NegativeSampler {
        margin: Some(0.1),
        ..ok.clone()
    };
    assert!(bad(&with_margin, &[vec![]], &[]));
    assert!(bad(&with_margin, &[vec![]], &[f32::NAN]));
    assert!(!bad(&with_margin, &[vec![]], &[0.5]));
    assert!(bad(
        &NegativeSampler {
            margin: Some(f32::INFINITY),
            ..ok.clone()
        },
        &[vec![]],
        &[0.5]
    ));
    assert!(bad(&ok, &[], &[]));
    let _ = ok.sample(&q, &c, &[vec![]], &[], &mut rng, 8).unwrap();
}

/// Speed check (run with `--ignored --nocapture`): 64 unit-norm queries against a 200,000 ×
/// 384 unit-norm cache, top-10, as in the top-k section of `notes/stack.md`.
#[test]
#[ignore]
fn speed_top10_64_queries_200k_by_384() {
    let (b, n, d, k) = (64, 200_000, 384, 10);
    let mut rng = SplitMix64::new(42);
    let unit = |rows: usize, rng: &mut SplitMix64| {
        let mut v: Vec<f32> = (0..rows * d).map(|_| rng.uniform(-1.0, 1.0)).collect();
        for row in v.chunks_mut(d) {
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            row.iter_mut().for_each(|x| *x /= norm);
        }
        Tensor::from_vec(v, (rows, d), &crate::device::cpu()).unwrap()
    };
    let q = unit(b, &mut rng);
    let c = unit(n, &mut rng);
    let reps = 5;
    let t = Instant::now();
    for _ in 0..reps {
        let s = q.matmul(&c.t().unwrap()).unwrap();
        std::hint::black_box(s);
    }
    let matmul = t.elapsed().as_secs_f64() / reps as f64;
    println!("matmul only (64 × 200k, one block): {:.1} ms", matmul * 1e3);
    let t = Instant::now();
    for _ in 0..reps {
        let mut start = 0;
        while start < n {
            let rows = DEFAULT_CHUNK.min(n - start);
            let block = c.narrow(0, start, rows).unwrap();
            std::hint::black_box(q.matmul(&block.t().unwrap()).unwrap());
            start += rows;
        }
    }
    let chunked = t.elapsed().as_secs_f64() / reps as f64;
    println!(
        "matmul only, chunks of {DEFAULT_CHUNK}: {:.1} ms",
        chunked * 1e3
    );
    // The selection alone, on one thread, over precomputed scores.
    let flat = q.matmul(&c.t().unwrap()).unwrap().flatten_all().unwrap();
    let flat = flat.to_vec1::<f32>().unwrap();
    let t = Instant::now();
    for row in flat.chunks_exact(n) {
        let mut sel = super::select::Selector::new(k, &[]);
        sel.scan(row, 0);
        std::hint::black_box(sel.finish());
    }
    let scan = t.elapsed().as_secs_f64();
    println!(
        "selection alone, 64 rows × 200k, one thread: {:.1} ms",
        scan * 1e3
    );
    let mut reference = None;
    for chunk in [16_384, DEFAULT_CHUNK, n] {
        let _ = top_k(&q, &c, k, &[], chunk).unwrap(); // warm-up
        let t = Instant::now();
        let mut r = Vec::new();
        for _ in 0..reps {
            r = top_k(&q, &c, k, &[], chunk).unwrap();
        }
        let per = t.elapsed().as_secs_f64() / reps as f64;
        println!(
            "top_k chunk {chunk}: {:.1} ms per batch, {:.0} queries/s",
            per * 1e3,
            b as f64 / per
        );
        let ids: Vec<Vec<u32>> = r.iter().map(|x| x.iter().map(|y| y.0).collect()).collect();
        assert!(ids.iter().all(|x| x.len() == k));
        if let Some(prev) = &reference {
            let same = ids.iter().zip(prev).filter(|(a, b)| a == b).count();
            println!("  rows identical to chunk 16384: {same}/{b}");
        } else {
            reference = Some(ids);
        }
    }
}
