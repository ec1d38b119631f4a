//! The vectors: independent of the batch, normalised and finite, similar for texts that
//! share n-grams; and the encoding speed (ignored by default).

use super::*;

#[test]
fn a_texts_vector_does_not_depend_on_its_batch() {
    // Production widths (bag_dim 256 -> dim 128), so gemm sees its real shapes.
    let cfg = HashedEncoderConfig {
        buckets: 1 << 14,
        ..Default::default()
    };
    let enc = HashedEncoder::new(cfg, &crate::device::cpu()).unwrap();
    let mut probes = texts(2, 6, 40);
    probes.push(String::new());
    probes.push("a".into());
    probes.push("the stale cache, the fresh cache and the corrector between them".into());
    let pool = texts(3, 400, 60);
    let alone: Vec<Vec<u32>> = probes
        .iter()
        .map(|p| bits(&rows(&enc.encode(&[p]).unwrap())[0]))
        .collect();
    // forward gives the same bits as encode.
    for (p, want) in probes.iter().zip(&alone) {
        assert_eq!(
            &bits(&rows(&enc.forward(&[p]).unwrap())[0]),
            want,
            "forward vs encode on {p:?}"
        );
    }
    for k in [
        1usize, 2, 3, 7, 31, 63, 64, 65, 127, 128, 129, 255, 256, 257, 300,
    ] {
        let neighbours: Vec<&str> = pool[..k].iter().map(String::as_str).collect();
        for (p, want) in probes.iter().zip(&alone) {
            for pos in [0, k / 2, k] {
                let mut batch = neighbours.clone();
                batch.insert(pos, p);
                let got = rows(&enc.encode(&batch).unwrap());
                assert_eq!(
                    &bits(&got[pos]),
                    want,
                    "text {p:?} at {pos} among {k} neighbours (encode)"
                );
                if k == 65 || k == 300 {
                    let got = rows(&enc.forward(&batch).unwrap());
                    assert_eq!(
                        &bits(&got[pos]),
                        want,
                        "text {p:?} at {pos} among {k} neighbours (forward)"
                    );
                }
            }
        }
    }
    // Empty batch.
    assert_eq!(enc.encode(&[]).unwrap().dims(), &[0, 128]);
}

#[test]
fn vectors_are_normalised_and_finite() {
    let ts = texts(4, 100, 30);
    let mut refs: Vec<&str> = ts.iter().map(String::as_str).collect();
    refs.extend(["", "...", "a"]);
    let enc = HashedEncoder::new(small(1), &crate::device::cpu()).unwrap();
    let v = enc.encode(&refs).unwrap();
    assert_eq!(v.dims(), &[refs.len(), 16]);
    for (t, row) in refs.iter().zip(rows(&v)) {
        assert!(row.iter().all(|x| x.is_finite()), "{t:?}");
        let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm} of {t:?}");
    }
    // Texts without features share the sentinel vector.
    let r = rows(&v);
    assert_eq!(r[refs.len() - 3], r[refs.len() - 2]);
    // Without normalisation, norms vary.
    let raw = HashedEncoder::new(
        HashedEncoderConfig {
            normalize: false,
            ..small(1)
        },
        &crate::device::cpu(),
    )
    .unwrap();
    let norms: Vec<f32> = rows(&raw.encode(&refs).unwrap())
        .iter()
        .map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt())
        .collect();
    assert!(norms.iter().all(|n| n.is_finite() && *n > 0.0));
    assert!(norms.iter().any(|n| (n - 1.0).abs() > 0.1));
    // ...and normalising the raw vectors gives the normalised ones (same weights: same seed).
    for (raw_row, row) in rows(&raw.encode(&refs).unwrap()).iter().zip(&r) {
        let n = raw_row.iter().map(|x| x * x).sum::<f32>().sqrt();
        for (a, b) in raw_row.iter().zip(row) {
            assert!((a / n - b).abs() < 1e-5);
        }
    }
}

#[test]
fn untrained_vectors_reflect_shared_ngrams() {
    let enc = HashedEncoder::new(
        HashedEncoderConfig {
            buckets: 1 << 16,
            ..Default::default()
        },
        &crate::device::cpu(),
    )
    .unwrap();
    let unrelated = [
        "quantum chromodynamics lattice",
        "medieval tapestry weaving guild",
        "volcanic basalt formations iceland",
        "jazz saxophone improvisation",
    ];
    let v = rows(&enc.encode(&unrelated).unwrap());
    let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    for i in 0..v.len() {
        for j in i + 1..v.len() {
            assert!(
                cos(&v[i], &v[j]).abs() < 0.35,
                "{} vs {}: {}",
                unrelated[i],
                unrelated[j],
                cos(&v[i], &v[j])
            );
        }
    }
    let near = rows(
        &enc.encode(&[
            "stale embedding cache",
            "stale embedding caches",
            "fresh vector index",
        ])
        .unwrap(),
    );
    assert!(cos(&near[0], &near[1]) > 0.8);
    assert!(cos(&near[0], &near[1]) > cos(&near[0], &near[2]) + 0.3);
}

/// `cargo test --release -p freshen-operators encode_speed -- --ignored --nocapture`
#[test]
#[ignore]
fn encode_speed() {
    let t0 = std::time::Instant::now();
    let mut enc =
        HashedEncoder::new(HashedEncoderConfig::default(), &crate::device::cpu()).unwrap();
    println!("new (default config, 2^18 x 256 table): {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    enc.refresh_fingerprint().unwrap();
    println!("fingerprint: {:?}", t0.elapsed());
    let mut rng = SplitMix64::new(9);
    let ts: Vec<String> = (0..10_000)
        .map(|_| {
            let n = 10 + (rng.next_u64() % 11) as usize;
            (0..n)
                .map(|_| {
                    let len = 2 + (rng.next_u64() % 8) as usize;
                    (0..len)
                        .map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char)
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
    let feats: usize = refs.iter().map(|t| enc.features(t).len()).sum();
    println!(
        "{} texts, {:.1} features/text",
        refs.len(),
        feats as f64 / refs.len() as f64
    );
    for _ in 0..3 {
        let t0 = std::time::Instant::now();
        let v = enc.encode(&refs).unwrap();
        let dt = t0.elapsed();
        assert_eq!(v.dims(), &[10_000, 128]);
        println!(
            "encode 10k: {dt:?} ({:.0} texts/s)",
            10_000.0 / dt.as_secs_f64()
        );
    }
    let t0 = std::time::Instant::now();
    for t in &refs {
        std::hint::black_box(enc.features(t));
    }
    println!("features only: {:?}", t0.elapsed());
}
