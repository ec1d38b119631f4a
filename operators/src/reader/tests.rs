use super::*;
use crate::device::cpu;
use crate::loss::marginal_nll;
use crate::train::{AdamW, AdamWConfig, Gradients};

fn small() -> ReaderConfig {
    ReaderConfig {
        buckets: 4096,
        dim: 16,
        max_words: 16,
        max_span: 3,
        epsilon: 1e-4,
        seed: 5,
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    t.to_vec1().unwrap()
}

#[test]
fn words_are_lower_case_runs() {
    assert_eq!(
        words("Hot-dog, (noun) O'Brien's  2nd"),
        ["hot-dog", "noun", "o'brien's", "2nd"]
    );
}

#[test]
fn an_absent_answer_scores_the_floor_and_a_present_one_more() {
    let r = Reader::new(small(), &cpu()).unwrap();
    let batch = [
        Example {
            query: "a domestic animal that barks",
            passage: "dog, domestic dog (noun)",
            answer: "dog",
        },
        Example {
            query: "a domestic animal that barks",
            passage: "cat, true cat (noun)",
            answer: "dog",
        },
        // Two spans hold "domestic dog": the answer takes both... here one, of 2 words.
        Example {
            query: "q",
            passage: "dog, domestic dog (noun)",
            answer: "domestic dog",
        },
        Example {
            query: "q",
            passage: "",
            answer: "dog",
        },
    ];
    let lp = values(&r.log_likelihood(&batch).unwrap());
    let floor = (1e-4f64).ln() as f32;
    assert!((lp[1] - floor).abs() < 1e-5, "{lp:?}");
    assert!((lp[3] - floor).abs() < 1e-5, "{lp:?}");
    assert!(lp[0] > floor + 1.0 && lp[2] > floor + 1.0, "{lp:?}");
    // Every log-likelihood is at most 0 (a probability), and the spans' probabilities
    // over a passage sum to 1.
    assert!(lp.iter().all(|x| *x <= 1e-6));
    let enc = r.encode(&batch[..1]).unwrap();
    let total: f32 = r
        .span_log_probs(&enc)
        .unwrap()
        .exp()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!((total - 1.0).abs() < 1e-5);
}

fn step(r: &Reader, adam: &mut AdamW, loss: &Tensor) {
    let store = loss.backward().unwrap();
    let grads = Gradients::of_vars(&r.params(), &store);
    adam.step(&r.params(), &grads, &|_| 0.05).unwrap();
}

/// Queries naming a country's capital; each comes with the right passage and a wrong one.
fn capitals() -> Vec<(String, String, String, String)> {
    let rows = [
        ("france", "paris"),
        ("italy", "rome"),
        ("spain", "madrid"),
        ("japan", "tokyo"),
        ("peru", "lima"),
        ("egypt", "cairo"),
    ];
    rows.iter()
        .enumerate()
        .map(|(i, (country, city))| {
            let other = rows[(i + 1) % rows.len()];
            (
                format!("the capital of {country}"),
                format!("{country} is a country whose capital is {city} and more"),
                format!(
                    "{} is a country whose capital is {} and more",
                    other.0, other.1
                ),
                city.to_string(),
            )
        })
        .collect()
}

#[test]
fn the_reader_learns_through_the_marginal_likelihood_and_saves_and_loads() {
    let r = Reader::new(small(), &cpu()).unwrap();
    let data = capitals();
    // Each query's two passages with fixed retrieval scores that favour neither.
    let batch: Vec<Example> = data
        .iter()
        .flat_map(|(q, right, wrong, a)| {
            [
                Example {
                    query: q,
                    passage: right,
                    answer: a,
                },
                Example {
                    query: q,
                    passage: wrong,
                    answer: a,
                },
            ]
        })
        .collect();
    let n = data.len();
    let scores = Tensor::zeros((n, 2), DType::F32, &cpu()).unwrap();
    let loss = |r: &Reader| {
        let lp = r.log_likelihood(&batch).unwrap().reshape((n, 2)).unwrap();
        marginal_nll(&scores, &lp, None, 1.0).unwrap()
    };
    let mut adam = AdamW::new(AdamWConfig::default());
    let first: f32 = loss(&r).to_scalar().unwrap();
    for _ in 0..60 {
        step(&r, &mut adam, &loss(&r));
    }
    let last: f32 = loss(&r).to_scalar().unwrap();
    assert!(last < 0.5 * first, "{first} → {last}");
    // It reads the answer out of the right passage.
    let right: Vec<Example> = batch.iter().step_by(2).copied().collect();
    let predicted = r.predict(&right).unwrap();
    for ((p, _), (_, _, _, a)) in predicted.iter().zip(&data) {
        assert_eq!(p, a);
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reader.safetensors");
    r.save(&path).unwrap();
    let mut back = Reader::new(small(), &cpu()).unwrap();
    assert_ne!(
        values(&back.log_likelihood(&right).unwrap()),
        values(&r.log_likelihood(&right).unwrap())
    );
    back.load(&path).unwrap();
    assert_eq!(
        values(&back.log_likelihood(&right).unwrap()),
        values(&r.log_likelihood(&right).unwrap())
    );
    let mut other = Reader::new(ReaderConfig { dim: 8, ..small() }, &cpu()).unwrap();
    let e = other.load(&path).unwrap_err().to_string();
    assert!(e.contains("saved for"), "{e}");
}

#[test]
fn bad_settings_are_refused_by_name() {
    for (cfg, field) in [
        (ReaderConfig { dim: 0, ..small() }, "dim"),
        (
            ReaderConfig {
                epsilon: 1.0,
                ..small()
            },
            "epsilon",
        ),
    ] {
        let e = Reader::new(cfg, &cpu()).unwrap_err();
        assert!(
            matches!(&e, Error::Field { field: f, .. } if f == field),
            "{e}"
        );
    }
    assert_eq!(small().param_count(), 4096 * 16 + 16 * 16 + 2 * 16 * 16 + 3);
}
