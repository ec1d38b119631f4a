//! One test per class of bad pipeline and bad data: each error is one line naming the
//! file, line:column (or row) and node, exits with 2, and touches no output.

use std::path::{Path, PathBuf};

use crate::common::*;

pub(crate) struct Case {
    pub(crate) _tmp: tempfile::TempDir,
    pub(crate) yaml: PathBuf,
    pub(crate) out: PathBuf,
    pub(crate) data: PathBuf,
}

/// A valid pipeline over a valid dataset, with `edit` applied to the YAML text.
pub(crate) fn case(edit: impl Fn(String) -> String) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let (data, work) = (tmp.path().join("data"), tmp.path().join("work"));
    write_jsonl_dataset(&data, &corpus(5));
    let yaml = tmp.path().join("p.yaml");
    std::fs::write(&yaml, edit(pipeline(&data, &work))).unwrap();
    Case {
        out: work.join("out/emb.parquet"),
        yaml,
        data,
        _tmp: tmp,
    }
}

/// Runs `check` and `run`; both must fail with exit code 2 and exactly one stderr line
/// that starts with `FILE:LINE:COL: node ID: ` and contains `message`.
pub(crate) fn assert_error(c: &Case, place: &str, node: &str, message: &str) {
    assert_error_line(c, &format!("{place}: node {node}: "), message);
}

/// As [`assert_error`], for a line that starts with `FILE:` followed by `after_file`.
pub(crate) fn assert_error_line(c: &Case, after_file: &str, message: &str) {
    assert_error_in(c, &c.yaml, after_file, message);
}

/// As [`assert_error_line`], for a line that names `file` (a data file) first.
pub(crate) fn assert_error_in(c: &Case, file: &std::path::Path, after_file: &str, message: &str) {
    for cmd in ["check", "run"] {
        let o = freshen(&[cmd, &c.yaml.display().to_string()]);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {stderr}");
        let line = stderr.trim_end();
        assert_eq!(
            line.lines().count(),
            1,
            "{cmd}: one line expected: {stderr}"
        );
        let prefix = format!("error: {}:{after_file}", file.display());
        assert!(
            line.starts_with(&prefix),
            "{cmd}: expected prefix `{prefix}` in `{line}`"
        );
        assert!(
            line.contains(message),
            "{cmd}: expected `{message}` in `{line}`"
        );
        assert!(!c.out.exists(), "{cmd}: no output may be written");
    }
}

#[test]
fn yaml_syntax_error_points_at_the_line() {
    let c = case(|y| y.replace("    dataset: d\n", "    dataset: [d\n"));
    let o = freshen(&["check", &c.yaml.display().to_string()]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr.starts_with(&format!("error: {}:10:", c.yaml.display())),
        "{stderr}"
    );
    assert!(stderr.contains("YAML syntax"), "{stderr}");
}

#[test]
fn unknown_operator_type() {
    let c = case(|y| y.replace("type: encode", "type: encoder"));
    assert_error(
        &c,
        "11:11",
        "enc",
        "unknown operator type `encoder` (expected one of source, synthetic, encode, cache, correct, sample, read, loss, update, eval, fit, sink)",
    );
}

#[test]
fn unknown_key() {
    let c = case(|y| {
        y.replace(
            "    inputs: [src]\n",
            "    inputs: [src]\n    batch_szie: 4\n",
        )
    });
    assert_error(&c, "13:5", "enc", "unknown key `batch_szie`");
}

#[test]
fn wrong_value_type() {
    let c = case(|y| y.replace("    dataset: d\n", "    dataset: d\n    batch_size: many\n"));
    assert_error(
        &c,
        "10:17",
        "src",
        "invalid type: string \"many\" (expected usize)",
    );
}

#[test]
fn value_out_of_range() {
    let c = case(|y| y.replace("    dataset: d\n", "    dataset: d\n    batch_size: 0\n"));
    assert_error(
        &c,
        "10:17",
        "src",
        "`batch_size` is 0 (expected at least 1)",
    );
}

#[test]
fn missing_key() {
    let c = case(|y| y.replace("    output: emb\n", ""));
    assert_error(&c, "18:5", "out", "missing key `output`");
}

#[test]
fn duplicate_id() {
    let c = case(|y| y.replace("- id: store", "- id: enc"));
    assert_error(
        &c,
        "14:9",
        "enc",
        "duplicate id `enc` (first defined at line 10",
    );
}

#[test]
fn input_that_names_no_node() {
    let c = case(|y| y.replace("inputs: [store]", "inputs: [stor]"));
    assert_error(
        &c,
        "20:14",
        "out",
        "input `stor` names no node (expected one of src, enc, store, out)",
    );
}

#[test]
fn cycle() {
    let c = case(|y| y.replace("inputs: [src]", "inputs: [store]"));
    assert_error(&c, "12:13", "enc", "cycle: enc -> store -> enc");
}

#[test]
fn edge_whose_schema_does_not_fit() {
    let c = case(|y| y.replace("inputs: [enc]", "inputs: [src]"));
    assert_error(&c, "16:14", "store", "input `src` lacks column `text_hash`");
}

#[test]
fn input_file_that_does_not_exist() {
    let c = case(|y| y.replace("/data\n", "/nowhere\n"));
    assert_error(&c, "5:11", "src", "nowhere");
}

#[test]
fn input_file_without_required_columns() {
    let c = case(|y| y);
    std::fs::remove_file(c.data.join("corpus.jsonl")).unwrap();
    let batch = arrow::record_batch::RecordBatch::try_from_iter(vec![(
        "id",
        std::sync::Arc::new(arrow::array::StringArray::from(vec!["a"])) as arrow::array::ArrayRef,
    )])
    .unwrap();
    freshen::store::parquet_io::write_parquet(
        &c.data.join("corpus.parquet"),
        batch.schema(),
        &[batch],
    )
    .unwrap();
    assert_error(&c, "5:11", "src", "missing column `text`");
}

/// Bad rows: `FILE: row N: node ID: message`, exit 2, an earlier output left as it was.
fn assert_data_error(edit: impl Fn(&Path), file: &str, row: usize, message: &str) {
    let c = case(|y| y);
    let first = freshen(&["run", &c.yaml.display().to_string()]);
    assert!(first.status.success(), "{:?}", text(&first));
    let before = std::fs::read(&c.out).unwrap();
    edit(&c.data);
    for cmd in ["check", "run"] {
        let o = freshen(&[cmd, &c.yaml.display().to_string()]);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {stderr}");
        let prefix = format!(
            "error: {}: row {row}: node src: ",
            c.data.join(file).display()
        );
        assert!(
            stderr.starts_with(&prefix),
            "{cmd}: expected prefix `{prefix}` in `{stderr}`"
        );
        assert!(
            stderr.contains(message),
            "{cmd}: expected `{message}` in `{stderr}`"
        );
        assert_eq!(
            std::fs::read(&c.out).unwrap(),
            before,
            "{cmd}: the earlier output must be intact"
        );
    }
}

fn append(path: &Path, line: &str) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str(line);
    std::fs::write(path, s).unwrap();
}

#[test]
fn duplicate_corpus_id() {
    assert_data_error(
        |d| {
            append(
                &d.join("corpus.jsonl"),
                "{\"_id\": \"d001\", \"text\": \"again\"}\n",
            )
        },
        "corpus.jsonl",
        6,
        "duplicate id `d001`",
    );
}

#[test]
fn empty_text() {
    assert_data_error(
        |d| {
            append(
                &d.join("corpus.jsonl"),
                "{\"_id\": \"d100\", \"text\": \"  \"}\n",
            )
        },
        "corpus.jsonl",
        6,
        "empty text",
    );
}

#[test]
fn null_text() {
    assert_data_error(
        |d| {
            append(
                &d.join("corpus.jsonl"),
                "{\"_id\": \"d100\", \"text\": null}\n",
            )
        },
        "corpus.jsonl",
        6,
        "null text",
    );
}

#[test]
fn qrel_naming_an_unknown_id() {
    assert_data_error(
        |d| append(&d.join("qrels/test.tsv"), "qd001\tnope\t1\n"),
        "qrels/test.tsv",
        7,
        "unknown corpus id `nope`",
    );
}

/// The quickstart training pipeline, writing under a temporary folder, with `edit` applied.
pub(crate) fn training_case(edit: impl Fn(String) -> String) -> Case {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    let text = std::fs::read_to_string(root().join("pipelines/quickstart.yaml"))
        .unwrap()
        .replace("out: out/quickstart", &format!("out: {}", work.display()));
    let yaml = tmp.path().join("train.yaml");
    std::fs::write(&yaml, edit(text)).unwrap();
    Case {
        out: work.join("summary.parquet"),
        yaml,
        data: root().join("data/wordnet-sample"),
        _tmp: tmp,
    }
}

/// The 1-based `line:col` where `needle` starts in the case's YAML, shifted by `col`.
fn place_of(c: &Case, needle: &str, col: usize) -> String {
    let text = std::fs::read_to_string(&c.yaml).unwrap();
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("`{needle}` not in the YAML"));
    let line = text[..at].lines().count().max(1) + usize::from(text[..at].ends_with('\n'));
    let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    format!("{line}:{}", at - start + 1 + col)
}

#[test]
fn model_that_is_not_defined() {
    let c = training_case(|y| {
        y.replace(
            "inputs: [pairs]\n    model: f",
            "inputs: [pairs]\n    model: q",
        )
    });
    let place = place_of(&c, "model: q", 7);
    assert_error(
        &c,
        &place,
        "queries",
        "model `q` is not among the pipeline's models (expected one of: f, g, h)",
    );
}

#[test]
fn model_of_the_wrong_kind() {
    let c = training_case(|y| {
        y.replace(
            "inputs: [cache]\n    model: h",
            "inputs: [cache]\n    model: g",
        )
    });
    let place = place_of(&c, "model: g\n    apply_every", 7);
    assert_error(
        &c,
        &place,
        "corrected",
        "model `g` is of kind `hashed` (expected a corrector)",
    );
}

#[test]
fn training_input_of_the_wrong_kind() {
    let c = training_case(|y| y.replace("search: corrected", "search: queries"));
    let place = place_of(&c, "search: queries", 8);
    assert_error(
        &c,
        &place,
        "negatives",
        "input `search` must be a `cache`, or a `correct` node of the whole cache (no `sample` input): the cache to search (got encode `queries`)",
    );
}

#[test]
fn input_role_that_the_type_does_not_have() {
    let c = training_case(|y| {
        y.replace(
            "pairs: pairs}\n    k: 16",
            "pairs: pairs, stal: cache}\n    k: 16",
        )
    });
    let place = place_of(&c, "stal: cache", 6);
    assert_error(
        &c,
        &place,
        "negatives",
        "`sample` has no input `stal` (expected one of: queries, search, pairs, stale)",
    );
}

#[test]
fn required_input_role_left_out() {
    let c = training_case(|y| y.replace(", pairs: pairs}\n    k: 16", "}\n    k: 16"));
    let place = place_of(&c, "{queries: queries, search: corrected}", 0);
    assert_error(&c, &place, "negatives", "missing input `pairs`: ");
}

#[test]
fn input_role_that_freshen_wires() {
    let c = training_case(|y| {
        y.replace(
            "inputs: [initial]",
            "inputs: {vectors: initial, reused: initial}",
        )
    });
    let place = place_of(&c, "reused: initial", 8);
    assert_error(
        &c,
        &place,
        "cache",
        "input `reused` is wired by freshen: the `_reused` port of input `vectors` (expected it left out)",
    );
}

#[test]
fn port_that_does_not_exist() {
    let c = training_case(|y| y.replace("stats: loss.stats}", "stats: loss.stat}"));
    let place = place_of(&c, "loss.stat}", 0);
    assert_error(
        &c,
        &place,
        "update",
        "`loss` has no port `stat` (expected one of: stats)",
    );
}

/// A pretrained model folder is checked (without loading weights) by `check` and `run`:
/// a missing tokenizer.json is one line naming the pipeline's line:column of the model's
/// `path` and the missing file; nothing is written.
#[test]
fn bert_model_folder_without_a_tokenizer() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny-model");
    std::fs::create_dir_all(&model).unwrap();
    let cfg = serde_json::json!({
        "model_type": "bert", "vocab_size": 30, "hidden_size": 8, "num_hidden_layers": 1,
        "num_attention_heads": 2, "intermediate_size": 16, "max_position_embeddings": 16
    });
    std::fs::write(model.join("config.json"), cfg.to_string()).unwrap();
    let block = format!("  f:\n    kind: bert\n    path: {}\n", model.display());
    let c = training_case(|y| {
        y.replace(
            "  f: {kind: hashed, dim: 128}          # the query tower\n",
            &block,
        )
    });
    let place = place_of(&c, &format!("path: {}", model.display()), 6);
    let file = model.join("tokenizer.json");
    assert_error_line(
        &c,
        &format!("{place}: "),
        &format!("{}: missing", file.display()),
    );
}

#[test]
fn control_character_is_reported_where_it_is() {
    let c = case(|y| y.replace("    inputs: [src]\n", "    inputs: [src]\0\n"));
    assert_error_line(&c, "12:18: ", "control character U+0000 is not allowed");
}

/// A var may use the vars written before it; one written after it is an error at the var
/// that uses it, saying so.
#[test]
fn vars_use_earlier_vars_only() {
    let earlier = "  base: data\n  data: ${base}/wordnet-sample\n";
    let c = training_case(|y| y.replace("  data: data/wordnet-sample\n", earlier));
    let o = freshen(&["check", &c.yaml.display().to_string()]);
    assert!(o.status.success(), "{:?}", text(&o));
    let later = "  data: ${base}/wordnet-sample\n  base: data\n";
    let c = training_case(|y| y.replace("  data: data/wordnet-sample\n", later));
    let place = place_of(&c, "${base}/wordnet-sample", 0);
    assert_error_line(
        &c,
        &format!("{place}: "),
        "variable `data` uses `base`, written after it",
    );
}

#[test]
fn node_id_that_set_cannot_name() {
    let c = case(|y| y.replace("- id: store", "- id: st.ore"));
    assert_error(
        &c,
        "14:9",
        "st.ore",
        "id `st.ore` holds `.` (expected letters, digits",
    );
}

/// A value given with `--set` that is wrong is reported at the `--set`, not at the line
/// of the YAML it would have read.
#[test]
fn set_value_error_is_at_the_set() {
    let c = training_case(|y| y);
    let set = "nodes.dev.split=nosuch";
    for cmd in ["check", "run"] {
        let o = freshen(&[cmd, &c.yaml.display().to_string(), "--set", set]);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            stderr.starts_with(&format!(
                "error: --set {set}: node dev: split `nosuch` is not in the dataset"
            )) && stderr.contains("(expected one of: dev, test, train)"),
            "{cmd}: {stderr}"
        );
        assert!(!c.out.exists(), "{cmd}: no output may be written");
    }
}
