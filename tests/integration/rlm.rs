//! The retrieval-augmented model: pipelines/rlm.yaml on a tiny slice of the task built
//! from the shipped sample trains (its marginal likelihood goes down), reports the answer
//! metrics, and writes a reader checkpoint that loads back.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Float64Type;
use freshen_operators::reader::{Example, Reader, ReaderConfig};

use crate::common::*;

/// The `column` of every row of a Parquet file.
fn floats(path: &Path, column: &str) -> Vec<Option<f64>> {
    let file = std::fs::File::open(path).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut out = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let c = b
            .column_by_name(column)
            .unwrap()
            .as_primitive::<Float64Type>();
        out.extend((0..b.num_rows()).map(|i| c.is_valid(i).then(|| c.value(i))));
    }
    out
}

#[test]
fn the_rlm_trains_from_answers_alone_and_its_reader_checkpoint_loads() {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("rlm");
    let data_arg = data.to_str().unwrap();
    let o = freshen(&["data", "rlm", "--out", data_arg]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("10000 queries with an answer"), "{stdout}");

    let out = work.path().join("out");
    let sets = [
        format!("vars.data={data_arg}"),
        format!("vars.out={}", out.display()),
        format!("nodes.cache.path={}", work.path().join("cache").display()),
        "nodes.pairs.steps=40".into(),
        "nodes.evaluate.every=40".into(),
    ];
    let mut args = vec!["run", "pipelines/rlm.yaml"];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let o = freshen(&args);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("answers: exact match"), "{stdout}");

    // The marginal likelihood goes down: the last ten steps against the first ten.
    let loss: Vec<f64> = floats(&out.join("metrics.parquet"), "retriever_loss")
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(loss.len(), 40);
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&loss[..10]), mean(&loss[30..]));
    assert!(last < first - 0.1, "{first} → {last}: {loss:?}");
    let em = floats(&out.join("summary.parquet"), "test_exact_match")[0].unwrap();
    assert!(em > 0.0 && em < 1.0, "{em}");

    // The best step's reader loads back into a reader of the pipeline's settings.
    let cfg = ReaderConfig {
        dim: 64,
        max_words: 32,
        max_span: 4,
        seed: 7,
        ..ReaderConfig::default()
    };
    let cpu = freshen_operators::device::cpu();
    let mut r = Reader::new(cfg.clone(), &cpu).unwrap();
    let e = [Example {
        query: "being on the point of death; breathing your last",
        passage: "moribund (adjective)",
        answer: "moribund",
    }];
    let before = r.log_likelihood(&e).unwrap().to_vec1::<f32>().unwrap();
    r.load(&out.join("checkpoint/r.safetensors")).unwrap();
    let after = r.log_likelihood(&e).unwrap().to_vec1::<f32>().unwrap();
    assert_ne!(
        before, after,
        "the trained weights differ from the initial ones"
    );
    let wrong = ReaderConfig { dim: 32, ..cfg };
    assert!(Reader::new(wrong, &cpu)
        .unwrap()
        .load(&out.join("checkpoint/r.safetensors"))
        .is_err());
}

#[test]
fn a_latent_graph_refuses_labels_and_a_marginal_loss_needs_its_reader() {
    let yaml = std::fs::read_to_string(root().join("pipelines/rlm.yaml")).unwrap();
    let work = tempfile::tempdir().unwrap();
    for (from, to, message) in [
        (
            "    latent: true",
            "    latent: false",
            "node retrieved: input `pairs` lacks column `corpus_id`",
        ),
        (
            "    in_batch: false",
            "    in_batch: true",
            "node retrieved: `in_batch` needs a positive, and `latent: true` has none",
        ),
        (
            ", drift: drift, reader: read}",
            ", drift: drift}",
            "node loss: `objective: marginal` needs input `reader`",
        ),
    ] {
        assert!(yaml.contains(from), "{from}");
        let file = work.path().join("bad.yaml");
        std::fs::write(&file, yaml.replace(from, to)).unwrap();
        let o = freshen(&["check", file.to_str().unwrap()]);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("bad.yaml:") && stderr.contains(message),
            "{stderr}"
        );
    }
}
