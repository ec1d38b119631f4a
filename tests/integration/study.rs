//! The synthetic study: pipelines/synthetic.yaml runs as shipped (smaller), h fixes
//! most of the stale divergence, a seed gives the same numbers on one worker and on two,
//! and `freshen study` averages the seeds and draws both pictures.

use std::path::{Path, PathBuf};

use arrow::array::AsArray;
use arrow::datatypes::{Float64Type, UInt64Type};

use crate::common::*;

/// Runs the shipped study pipeline at a small size into `out`.
fn run(out: &Path, extra: &[&str]) -> PathBuf {
    let yaml = root().join("pipelines/synthetic.yaml");
    let out_var = format!("vars.out={}", out.display());
    let mut args = vec![
        "run",
        yaml.to_str().unwrap(),
        "--set",
        &out_var,
        "--set",
        "nodes.world.targets=300",
        "--set",
        "nodes.world.queries=100",
        "--set",
        "nodes.fit.train.steps=600",
        "--set",
        "nodes.fit.train.eval_every=200",
        "--set",
        "nodes.fit.train.fraction=0.3",
    ];
    args.extend_from_slice(extra);
    let o = freshen(&args);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    out.to_path_buf()
}

/// The metrics' (step, kl_stale, kl_corrected) rows.
fn metrics(dir: &Path) -> Vec<(u64, f64, f64)> {
    let file = std::fs::File::open(dir.join("metrics.parquet")).unwrap();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let step = b
            .column_by_name("step")
            .unwrap()
            .as_primitive::<UInt64Type>();
        let f = |n: &str| {
            b.column_by_name(n)
                .unwrap()
                .as_primitive::<Float64Type>()
                .clone()
        };
        let (stale, corrected) = (f("kl_stale"), f("kl_corrected"));
        for i in 0..b.num_rows() {
            rows.push((step.value(i), stale.value(i), corrected.value(i)));
        }
    }
    rows
}

#[test]
fn the_synthetic_study_runs_fixes_the_drift_and_is_deterministic() {
    let work = tempfile::tempdir().unwrap();
    let a = run(&work.path().join("a-s1"), &[]);
    let m = metrics(&a);
    assert_eq!(
        m.iter().map(|r| r.0).collect::<Vec<_>>(),
        [0, 200, 400, 600]
    );
    let (first, last) = (m[0], *m.last().unwrap());
    assert_eq!(first.1, first.2, "h starts as the identity");
    assert!(
        last.2 < 0.2 * last.1,
        "h fixes most of the divergence: {m:?}"
    );

    // The same seed on two workers: the same numbers (worker 0 fits, full batch).
    let b = run(&work.path().join("b"), &["-w", "2"]);
    assert_eq!(metrics(&b), m);
    // Another seed: another world.
    let c = run(&work.path().join("a-s2"), &["--set", "seed=2"]);
    assert_ne!(metrics(&c)[0].1, first.1);

    // The study: two seeds of one setting averaged into one row, and both pictures.
    let table = work.path().join("study.parquet");
    let (sweep, toy) = (work.path().join("sweep.png"), work.path().join("toy.png"));
    let o = freshen(&[
        "study",
        a.to_str().unwrap(),
        c.to_str().unwrap(),
        "--out",
        table.to_str().unwrap(),
        "--plot",
        sweep.to_str().unwrap(),
        "--picture",
        a.to_str().unwrap(),
        "--picture-out",
        toy.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| drift"))
        .collect();
    assert_eq!(rows.len(), 1, "{stdout}");
    assert!(rows[0].contains("| 2 |"), "two runs: {stdout}");
    for png in [&sweep, &toy] {
        let bytes = std::fs::read(png).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000,
            "{png:?}"
        );
    }
}

#[test]
fn a_fit_must_read_a_synthetic_world_and_its_queries_port() {
    let work = tempfile::tempdir().unwrap();
    let yaml = std::fs::read_to_string(root().join("pipelines/synthetic.yaml")).unwrap();
    let bad = yaml.replace("queries: world.queries}", "queries: world}");
    let file = work.path().join("bad.yaml");
    std::fs::write(&file, bad).unwrap();
    let o = freshen(&["check", file.to_str().unwrap()]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml:") && stderr.contains("node fit") && stderr.contains("split"),
        "{stderr}"
    );
}
