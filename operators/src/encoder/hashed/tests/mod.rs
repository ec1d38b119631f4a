//! Tests of the hashed encoder: helpers, then featurisation, settings and
//! initialisation; the vectors in [`vectors`], the weights in [`weights`].

use candle_core::Tensor;

use super::{HashedEncoder, HashedEncoderConfig};
use crate::encoder::Encoder;
use crate::hashing::hash64;
use crate::random::SplitMix64;
use crate::Error;

mod vectors;
mod weights;

fn small(seed: u64) -> HashedEncoderConfig {
    HashedEncoderConfig {
        buckets: 4096,
        bag_dim: 32,
        dim: 16,
        seed,
        ..Default::default()
    }
}

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2::<f32>().unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// `n` pseudo-random texts of 0..=max_words words from a small vocabulary.
fn texts(seed: u64, n: usize, max_words: usize) -> Vec<String> {
    const VOCAB: [&str; 24] = [
        "the",
        "stale",
        "cache",
        "embedding",
        "retriever",
        "query",
        "document",
        "passage",
        "dense",
        "vector",
        "négatif",
        "train",
        "Corrector",
        "index",
        "shard",
        "fresh",
        "loss",
        "a",
        "ÜBER",
        "x",
        "gradient",
        "epoch",
        "42",
        "hash-map",
    ];
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| {
            let words = (rng.next_u64() % (max_words as u64 + 1)) as usize;
            let mut s = String::new();
            for i in 0..words {
                if i > 0 {
                    s.push_str(if rng.next_u64().is_multiple_of(5) {
                        ", "
                    } else {
                        " "
                    });
                }
                s.push_str(VOCAB[(rng.next_u64() % VOCAB.len() as u64) as usize]);
            }
            s
        })
        .collect()
}

fn tmp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("freshen-operators-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn features_of_a_known_text() {
    let cfg = HashedEncoderConfig {
        word_ngrams: 2,
        char_ngrams: (3, 3),
        ..small(0)
    };
    let enc = HashedEncoder::new(cfg.clone(), &crate::device::cpu()).unwrap();
    let b = |k: &str| (hash64(k.as_bytes()) % cfg.buckets as u64) as u32;
    let expected: Vec<u32> = [
        "w:hi", "w:bob", "w:hi bob", "c:<hi", "c:hi>", "c:<bo", "c:bob", "c:ob>",
    ]
    .into_iter()
    .map(b)
    .collect();
    assert_eq!(enc.features("Hi, BOB!"), expected);
    assert_eq!(enc.features("  hi -- bob  "), expected);
    // Buckets are pinned through the hash: the default bucket count gives these ids.
    assert_eq!(
        hash64(b"w:hi") % (1 << 18),
        hash64(b"w:hi") & ((1 << 18) - 1)
    );
    // No features at all: the sentinel.
    assert_eq!(enc.features(""), vec![b("e:")]);
    assert_eq!(enc.features(" ,;! "), vec![b("e:")]);
    // Unicode letters are word characters, and lowercasing is Unicode.
    assert_eq!(enc.features("ÜBER")[0], b("w:über"));
    // Without lowercasing, case is kept; with char n-grams (2, 3) both sizes appear.
    let cfg2 = HashedEncoderConfig {
        lowercase: false,
        word_ngrams: 1,
        char_ngrams: (2, 3),
        ..small(0)
    };
    let enc2 = HashedEncoder::new(cfg2, &crate::device::cpu()).unwrap();
    let expected2: Vec<u32> = ["w:Ab", "c:<A", "c:Ab", "c:b>", "c:<Ab", "c:Ab>"]
        .into_iter()
        .map(b)
        .collect();
    assert_eq!(enc2.features("Ab"), expected2);
    // Words only.
    let cfg3 = HashedEncoderConfig {
        char_ngrams: (0, 0),
        word_ngrams: 3,
        ..small(0)
    };
    let enc3 = HashedEncoder::new(cfg3, &crate::device::cpu()).unwrap();
    let expected3: Vec<u32> = ["w:a", "w:b", "w:c", "w:a b", "w:b c", "w:a b c"]
        .into_iter()
        .map(b)
        .collect();
    assert_eq!(enc3.features("a b c"), expected3);
}

#[test]
fn config_validation_names_the_field() {
    HashedEncoderConfig::default().validate().unwrap();
    let cases: Vec<(HashedEncoderConfig, &str)> = vec![
        (
            HashedEncoderConfig {
                buckets: 0,
                ..Default::default()
            },
            "buckets",
        ),
        (
            HashedEncoderConfig {
                buckets: u32::MAX as usize + 1,
                bag_dim: 1,
                ..Default::default()
            },
            "buckets",
        ),
        (
            HashedEncoderConfig {
                buckets: 1 << 30,
                bag_dim: 256,
                ..Default::default()
            },
            "buckets",
        ),
        (
            HashedEncoderConfig {
                bag_dim: 0,
                ..Default::default()
            },
            "bag_dim",
        ),
        (
            HashedEncoderConfig {
                dim: 0,
                ..Default::default()
            },
            "dim",
        ),
        (
            HashedEncoderConfig {
                word_ngrams: 100,
                ..Default::default()
            },
            "word_ngrams",
        ),
        (
            HashedEncoderConfig {
                char_ngrams: (4, 3),
                ..Default::default()
            },
            "char_ngrams",
        ),
        (
            HashedEncoderConfig {
                char_ngrams: (0, 3),
                ..Default::default()
            },
            "char_ngrams",
        ),
        (
            HashedEncoderConfig {
                char_ngrams: (3, 1000),
                ..Default::default()
            },
            "char_ngrams",
        ),
        (
            HashedEncoderConfig {
                word_ngrams: 0,
                char_ngrams: (0, 0),
                ..Default::default()
            },
            "word_ngrams",
        ),
    ];
    for (cfg, field) in cases {
        match cfg.validate() {
            Err(Error::Field { field: f, message }) => {
                assert_eq!(f, field);
                assert!(message.contains(field), "{message:?} should name {field}")
            }
            other => panic!("{cfg:?}: expected a setting error naming {field}, got {other:?}"),
        }
        assert!(HashedEncoder::new(cfg, &crate::device::cpu()).is_err());
    }
    // Either kind of feature alone is fine.
    HashedEncoderConfig {
        word_ngrams: 0,
        ..Default::default()
    }
    .validate()
    .unwrap();
    HashedEncoderConfig {
        char_ngrams: (0, 0),
        ..Default::default()
    }
    .validate()
    .unwrap();
    // Serde: missing fields take defaults, unknown fields are rejected.
    let cfg: HashedEncoderConfig =
        serde_json::from_str(r#"{"dim": 64, "char_ngrams": [2, 4]}"#).unwrap();
    assert_eq!(
        cfg,
        HashedEncoderConfig {
            dim: 64,
            char_ngrams: (2, 4),
            ..Default::default()
        }
    );
    assert!(serde_json::from_str::<HashedEncoderConfig>(r#"{"dims": 64}"#).is_err());
}

#[test]
fn seeded_init_is_reproducible() {
    let ts = texts(1, 50, 20);
    let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
    let a = HashedEncoder::new(small(7), &crate::device::cpu()).unwrap();
    let b = HashedEncoder::new(small(7), &crate::device::cpu()).unwrap();
    let c = HashedEncoder::new(small(8), &crate::device::cpu()).unwrap();
    assert_eq!(a.fingerprint().len(), 16);
    assert!(a.fingerprint().chars().all(|ch| ch.is_ascii_hexdigit()));
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_ne!(a.fingerprint(), c.fingerprint());
    let (va, vb, vc) = (
        a.encode(&refs).unwrap(),
        b.encode(&refs).unwrap(),
        c.encode(&refs).unwrap(),
    );
    assert_eq!(rows(&va), rows(&vb));
    assert_ne!(rows(&va), rows(&vc));
    // A setting that changes the vectors changes the fingerprint, even with equal weights.
    let d = HashedEncoder::new(
        HashedEncoderConfig {
            normalize: false,
            ..small(7)
        },
        &crate::device::cpu(),
    )
    .unwrap();
    assert_ne!(a.fingerprint(), d.fingerprint());
    // The init follows the documented distributions.
    let table: Vec<f32> = a
        .table
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let n = table.len() as f64;
    let mean = table.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = table
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    assert!(
        mean.abs() < 0.005 && (var * 32.0 - 1.0).abs() < 0.03,
        "table mean {mean} var {var}"
    );
    let t_bound = (3.0f32 / 32.0).sqrt();
    assert!(table.iter().all(|x| x.abs() <= t_bound));
    let w: Vec<f32> = a
        .weight
        .as_tensor()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let bound = 1.0 / 32f32.sqrt();
    assert!(w.iter().all(|x| x.abs() <= bound) && w.iter().any(|x| x.abs() > 0.9 * bound));
    let bias: Vec<f32> = a.bias.as_tensor().to_vec1().unwrap();
    assert!(bias.iter().all(|&x| x == 0.0));
}
