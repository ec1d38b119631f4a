//! `freshen new`: the pipeline it writes passes `check` as written and trains, on the
//! shipped sample and on a dataset with no dev split (carved out of train by `freshen
//! data split`, the dataset left as it is); bad input is one line and exit code 2.

use std::collections::HashSet;
use std::path::Path;

use crate::common::*;
use crate::train::column_u64;

/// Runs `freshen new ARGS`, asserting success; its stdout and stderr.
fn new(args: &[&str]) -> (String, String) {
    let o = freshen(&[&["new"], args].concat());
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    (stdout, stderr)
}

/// `check` accepts the pipeline as written.
fn checks(yaml: &Path) {
    let o = freshen(&["check", &yaml.display().to_string()]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(": ok ("), "{stdout}");
}

/// Runs the pipeline for 20 steps (no step-0 evaluation, no diagnostics, its outputs
/// and cache under `work`), asserting that it trained 20 steps and wrote its summary.
fn trains_20_steps(yaml: &Path, work: &Path) {
    let out = work.join("out");
    let sets = [
        "nodes.pairs.steps=20".to_string(),
        "nodes.evaluate.start=false".into(),
        "nodes.evaluate.diagnostics=false".into(),
        format!("vars.out={}", out.display()),
        format!("nodes.cache.path={}", work.join("cache").display()),
    ];
    let yaml = yaml.display().to_string();
    let mut args = vec!["run", yaml.as_str()];
    for s in &sets {
        args.extend(["--set", s.as_str()]);
    }
    let o = freshen(&args);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("best after 20 of 20 steps"), "{stdout}");
    assert!(stdout.contains("test (%)"), "{stdout}");
    assert!(out.join("summary.parquet").is_file());
    let steps = column_u64(&out.join("metrics.parquet"), "step");
    assert_eq!(steps, (1..=20).collect::<Vec<u64>>());
}

/// The query ids of a Parquet qrels file.
fn query_ids(path: &Path) -> HashSet<String> {
    let mut ids = HashSet::new();
    for b in freshen::store::parquet_io::read_all(path).unwrap() {
        let c = freshen::store::batch::strings(&b, "query_id").unwrap();
        ids.extend(c.iter().flatten().map(String::from));
    }
    ids
}

#[test]
fn new_on_the_sample_writes_a_pipeline_that_checks_and_trains_20_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let yaml = tmp.path().join("sample.yaml");
    let (stdout, stderr) = new(&["data/wordnet-sample", "--out", &yaml.display().to_string()]);
    assert!(
        stdout.contains("trained on `train`, best step by `dev`"),
        "{stdout}"
    );
    assert!(stderr.is_empty(), "{stderr}");
    let text = std::fs::read_to_string(&yaml).unwrap();
    assert!(text.contains("  data: data/wordnet-sample\n"), "{text}");
    assert!(text.contains("inputs: {queries: queries, search: corrected, pairs: pairs}"));
    checks(&yaml);
    trains_20_steps(&yaml, tmp.path());
}

#[test]
fn new_carves_a_dev_split_out_of_train_when_there_is_none_and_trains_20_steps() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("nodev");
    std::fs::create_dir_all(data.join("qrels")).unwrap();
    let sample = root().join("data/wordnet-sample");
    for f in [
        "corpus.parquet",
        "queries.parquet",
        "qrels/train.parquet",
        "qrels/test.parquet",
    ] {
        std::fs::copy(sample.join(f), data.join(f)).unwrap();
    }
    let yaml = tmp.path().join("nodev.yaml");
    let (_, stderr) = new(&[
        &data.display().to_string(),
        "-o",
        &yaml.display().to_string(),
    ]);
    assert!(stderr.contains("has no dev split"), "{stderr}");
    // The dataset is left as it is; the split is a folder beside it.
    assert!(!data.join("qrels/dev.parquet").exists());
    let split = tmp.path().join("nodev-with-dev");
    let text = std::fs::read_to_string(&yaml).unwrap();
    assert!(
        text.contains(&format!("  data: {}\n", split.display())),
        "{text}"
    );
    assert!(text.contains("freshen data split --from"), "{text}");
    // Train's queries, divided: a tenth to dev, no query on both sides.
    let (train, dev) = (
        query_ids(&split.join("qrels/train.parquet")),
        query_ids(&split.join("qrels/dev.parquet")),
    );
    let all = query_ids(&data.join("qrels/train.parquet"));
    assert!(train.is_disjoint(&dev));
    assert_eq!(train.union(&dev).cloned().collect::<HashSet<_>>(), all);
    assert_eq!(dev.len(), (all.len() as f64 * 0.1).round() as usize);
    checks(&yaml);
    trains_20_steps(&yaml, tmp.path());
    // A second `new` refuses to replace the file or the split folder; `--force` does.
    let again = freshen(&[
        "new",
        &data.display().to_string(),
        "-o",
        &yaml.display().to_string(),
    ]);
    assert_eq!(again.status.code(), Some(2));
    new(&[
        &data.display().to_string(),
        "-o",
        &yaml.display().to_string(),
        "--force",
    ]);
    assert_eq!(query_ids(&split.join("qrels/dev.parquet")), dev);
}

/// BEIR's own files: the carved splits are TSV qrels with their header, and the
/// pipeline passes `check`.
#[test]
fn new_on_a_beir_jsonl_dataset_without_dev_writes_tsv_qrels_that_check() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("beir");
    write_jsonl_dataset(&data, &corpus(40));
    std::fs::copy(data.join("qrels/test.tsv"), data.join("qrels/train.tsv")).unwrap();
    let yaml = tmp.path().join("beir.yaml");
    new(&[
        &data.display().to_string(),
        "-o",
        &yaml.display().to_string(),
    ]);
    let dev = std::fs::read_to_string(tmp.path().join("beir-with-dev/qrels/dev.tsv")).unwrap();
    let train = std::fs::read_to_string(tmp.path().join("beir-with-dev/qrels/train.tsv")).unwrap();
    assert!(dev.starts_with("query-id\tcorpus-id\tscore\n"), "{dev}");
    assert_eq!(dev.lines().count() - 1, 4, "{dev}");
    assert_eq!(train.lines().count() - 1, 36, "{train}");
    checks(&yaml);
}

#[test]
fn new_with_a_model_folder_writes_the_drift_recipe_that_checks() {
    let model = root().join("models/all-MiniLM-L6-v2");
    assert!(
        model.join("model.safetensors").exists(),
        "run scripts/fetch-model.sh all-MiniLM-L6-v2"
    );
    let tmp = tempfile::tempdir().unwrap();
    let yaml = tmp.path().join("minilm.yaml");
    let args = ["data/wordnet-sample", "--model", "models/all-MiniLM-L6-v2"];
    new(&[&args[..], &["--out", &yaml.display().to_string()]].concat());
    let text = std::fs::read_to_string(&yaml).unwrap();
    assert!(
        text.contains("  model: models/all-MiniLM-L6-v2\n"),
        "{text}"
    );
    assert!(text.contains("frozen: true"), "{text}");
    checks(&yaml);
}

/// A missing folder, a folder with no dataset, a dataset with no train split, a model
/// path that is no model, and an existing file: each one line naming the path, exit 2,
/// nothing written.
#[test]
fn new_refuses_bad_input_in_one_line_with_exit_code_2() {
    let tmp = tempfile::tempdir().unwrap();
    let nodata = tmp.path().join("empty");
    std::fs::create_dir_all(&nodata).unwrap();
    let notrain = tmp.path().join("notrain");
    write_jsonl_dataset(&notrain, &corpus(5));
    let existing = tmp.path().join("existing.yaml");
    std::fs::write(&existing, "keep me\n").unwrap();
    let path = |p: &Path| p.display().to_string();
    let yaml = path(&tmp.path().join("p.yaml"));
    let (missing, empty) = (path(&tmp.path().join("missing")), path(&nodata));
    let (notrain, kept) = (path(&notrain), path(&existing));
    let sample = "data/wordnet-sample";
    let cases: [(Vec<&str>, &str); 5] = [
        (vec![&missing, "-o", &yaml], &missing),
        (vec![&empty, "-o", &yaml], &empty),
        (vec![&notrain, "-o", &yaml], "no train split"),
        (vec![sample, "--model", &empty, "-o", &yaml], &empty),
        (vec![sample, "-o", &kept], &kept),
    ];
    for (args, names) in cases {
        let o = freshen(&[&["new"], &args[..]].concat());
        let (stdout, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stdout}{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(names),
            "{stderr}"
        );
    }
    assert!(!Path::new(&yaml).exists());
    assert_eq!(std::fs::read_to_string(&existing).unwrap(), "keep me\n");
}
