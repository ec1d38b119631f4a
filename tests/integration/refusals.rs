//! Bad input that used to get through: each is refused before anything runs, with one
//! line naming the place, and exit code 2; outputs stay as they were.

use std::path::Path;

use crate::common::*;
use crate::errors::{assert_error, assert_error_in, assert_error_line, case, training_case};

/// Runs `check` and `run` with `extra` arguments: both exit 2 with one line containing
/// `message`, and nothing is written.
fn refused(c: &crate::errors::Case, extra: &[&str], message: &str) {
    for cmd in ["check", "run"] {
        let mut a = vec![cmd.to_string(), c.yaml.display().to_string()];
        a.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let o = freshen(&refs);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{cmd}: {stderr}");
        assert!(
            stderr.contains(message),
            "{cmd}: expected `{message}` in {stderr}"
        );
        assert!(!c.out.exists(), "{cmd}: no output may be written");
    }
}

#[test]
fn an_output_over_an_input_file_is_refused() {
    let c = case(|y| y);
    let corpus = c.data.join("corpus.jsonl");
    let before = std::fs::read(&corpus).unwrap();
    let set = format!("outputs.emb.path={}", corpus.display());
    refused(&c, &["--set", &set], "is an input file that node src reads");
    assert_eq!(std::fs::read(&corpus).unwrap(), before);
}

#[test]
fn outputs_that_collide_or_cannot_be_written_are_refused() {
    let c = training_case(|y| y.replace("${out}/metrics.parquet", "${out}/summary.parquet"));
    refused(&c, &[], "is also written by node write_metrics");
    let c = case(|y| y);
    let file = c.data.join("corpus.jsonl");
    let under_file = format!("outputs.emb.path={}/x/emb.parquet", file.display());
    refused(
        &c,
        &["--set", &under_file],
        "cannot be created (expected a folder)",
    );
    let folder = format!("outputs.emb.path={}", c.data.display());
    refused(
        &c,
        &["--set", &folder],
        "is a folder (expected a file path)",
    );
    let store = format!("nodes.store.path={}", file.display());
    refused(
        &c,
        &["--set", &store],
        "is a file (expected the store's folder)",
    );
}

#[test]
fn values_that_used_to_pass_are_refused() {
    let c = case(|y| y);
    refused(
        &c,
        &["--set", "vars.outt=x"],
        "`vars.outt` is not a var of this pipeline",
    );
    let c = case(|y| y.replacen("version: 1", "version: 2", 1));
    assert_error_line(&c, "1:10: ", "`version` is 2 (expected 1");
    // More negatives than the corpus has targets.
    let c = training_case(|y| y.replace("    k: 16\n", "    k: 20000\n"));
    refused(&c, &[], "but the corpus has 10000 targets");
    // Fresher selection without the stale cache it reads.
    let c = training_case(|y| y);
    refused(
        &c,
        &["--set", "nodes.negatives.rescore=true"],
        "node negatives: fresher selection reads the stale cache B",
    );
    refused(
        &c,
        &["--set", "nodes.negatives.margin_on=both"],
        "node negatives: fresher selection reads the stale cache B",
    );
    // A closed-form Procrustes fit of a corrector that is not linear.
    refused(
        &c,
        &["--set", "nodes.loss.corrector={procrustes: {}}"],
        "node loss: `procrustes` sets a linear corrector in closed form",
    );
    // A var given as a number is its text.
    let c = case(|y| y.replace("seed: 3\n", "seed: 3\nvars:\n  n: 4\n"));
    let o = freshen(&[
        "check",
        &c.yaml.display().to_string(),
        "--set",
        "vars.n=2024",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn qrels_without_relevance_or_with_duplicates_are_refused() {
    let c = case(|y| y);
    let qrels = c.data.join("qrels/test.tsv");
    let text0 = std::fs::read_to_string(&qrels).unwrap();
    std::fs::write(&qrels, text0.replace("\t1\n", "\t0\n")).unwrap();
    assert_error_in(
        &c,
        &qrels,
        " node src: ",
        "no judgement has a score above 0",
    );
    let mut dup = text0.clone();
    dup.push_str(text0.lines().nth(1).unwrap());
    dup.push('\n');
    std::fs::write(&qrels, dup).unwrap();
    assert_error_in(
        &c,
        &qrels,
        " row 7: node src: ",
        "are judged twice (first at row 2",
    );
}

fn assert_unreadable(path: &Path, message: &str) {
    let o = freshen(&["check", &path.display().to_string()]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with(&format!("error: {}", path.display())) && stderr.contains(message),
        "{stderr}"
    );
}

#[test]
fn unreadable_pipelines_are_located_errors() {
    let tmp = tempfile::tempdir().unwrap();
    assert_unreadable(&tmp.path().join("none.yaml"), "no such pipeline file");
    assert_unreadable(tmp.path(), "is a folder");
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, b"version: 1\nname: caf\xe9\n").unwrap();
    assert_unreadable(&bad, ":2:10: not UTF-8 text");
    // An undefined var names its node; a merge key is merged.
    let c = case(|y| {
        y.replace(
            "type: cache\n    inputs: [enc]\n    path: ",
            "type: cache\n    inputs: [enc]\n    path: ${nowhere}/",
        )
    });
    assert_error(&c, "17:11", "store", "undefined variable `nowhere`");
    let merged = case(|y| {
        y.replace(
            "  - id: store\n    type: cache\n    inputs: [enc]\n",
            "  - id: store\n    <<: {type: cache, inputs: [enc]}\n",
        )
    });
    let o = freshen(&["check", &merged.yaml.display().to_string()]);
    assert!(o.status.success(), "{:?}", text(&o));
}

#[test]
fn a_store_file_with_nan_or_the_wrong_width_is_refused_naming_it() {
    let c = case(|y| y);
    let y = c.yaml.display().to_string();
    let first = freshen(&["run", &y]);
    assert!(first.status.success(), "{:?}", text(&first));
    let before = std::fs::read(&c.out).unwrap();
    let cache = c.out.parent().unwrap().parent().unwrap().join("cache");
    let store = store_file(&cache);
    // Row 3 of the store gets a NaN.
    let mut batches = freshen::store::parquet_io::read_all(&store).unwrap();
    let b = &batches[0];
    let (values, dim) = freshen::store::batch::vectors(b).unwrap();
    let mut v = values.to_vec();
    v[2 * dim + 1] = f32::NAN;
    let ids = freshen::store::batch::strings(b, "id").unwrap();
    let hashes = freshen::store::batch::hashes(b).unwrap();
    batches[0] = freshen::store::batch::embeddings_batch(
        ids.iter().map(|s| s.unwrap().to_string()).collect(),
        hashes.values().to_vec(),
        v,
        dim,
    )
    .unwrap();
    freshen::store::parquet_io::write_parquet(&store, batches[0].schema(), &batches).unwrap();
    let o = freshen(&["run", &y]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: row 3:", store.display())) && stderr.contains("NaN"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(&c.out).unwrap(),
        before,
        "outputs stay as they were"
    );
}

#[test]
fn a_plan_that_needs_more_memory_than_allowed_is_refused() {
    let c = training_case(|y| y);
    refused(
        &c,
        &["--max-memory", "100M"],
        "more than the 100 MB allowed",
    );
    let c = training_case(|y| y.replace("    batch_size: 64\n", "    batch_size: 100000\n"));
    let o = freshen(&["check", &c.yaml.display().to_string()]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("candidates") && stderr.contains("node loss"),
        "{stderr}"
    );
}
