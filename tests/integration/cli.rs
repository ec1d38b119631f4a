//! The inspection commands (`schema`, `graph`) and a run across two processes.

use std::process::Command;

use crate::common::*;

#[test]
fn schema_is_json_schema_of_the_pipeline_format() {
    let o = freshen(&["schema"]);
    assert!(o.status.success());
    let schema: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(schema["title"], "Pipeline");
    let text = schema.to_string();
    for ty in ["source", "encode", "cache", "sink"] {
        assert!(
            text.contains(&format!("\"{ty}\"")),
            "schema lacks operator `{ty}`"
        );
    }
    assert!(
        text.contains("additionalProperties"),
        "unknown keys must be disallowed"
    );
}

/// docs/reference.md is what `freshen schema --markdown` writes, so it follows the code.
#[test]
fn the_committed_reference_is_what_schema_markdown_writes() {
    let o = freshen(&["schema", "--markdown"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    for section in [
        "\n### `sample`\n",
        "\n### `bert`\n",
        "| `stale` | optional | the `cache` node",
    ] {
        assert!(stdout.contains(section), "the reference lacks {section:?}");
    }
    let committed = std::fs::read_to_string(root().join("docs/reference.md")).unwrap_or_default();
    assert!(
        committed == stdout,
        "docs/reference.md differs from `freshen schema --markdown`: run `cargo run --release -- schema --markdown > docs/reference.md`"
    );
}

/// The README's quickstart table is what the quickstart prints: the same best step, dev
/// score, test table and forward counts (the seconds are the machine's).
#[test]
fn the_readme_shows_the_table_the_quickstart_prints() {
    let dir = tempfile::tempdir().unwrap();
    let out = format!("vars.out={}", dir.path().join("out").display());
    let store = format!(
        "nodes.cache.path={}",
        dir.path().join("out-cache").display()
    );
    let o = freshen(&[
        "run",
        "pipelines/quickstart.yaml",
        "--set",
        &out,
        "--set",
        &store,
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let table = |text: &str| -> Vec<String> {
        let from = text
            .find("quickstart: best after")
            .expect("a quickstart table");
        text[from..]
            .lines()
            .take(6)
            .map(|l| without_seconds(l.trim_end()))
            .collect()
    };
    assert_eq!(
        table(&readme),
        table(&stdout),
        "README.md's quickstart table"
    );

    // The quickstart as an older pipeline wrote it, inputs by position: one warning a
    // node, and the same run to the last bit.
    let yaml = std::fs::read_to_string(root().join("pipelines/quickstart.yaml")).unwrap();
    let (old, lists) = by_position(&yaml);
    assert!(lists >= 5, "{lists}");
    // Its own folder: the run is named after the file.
    let old_file = dir.path().join("by-position/quickstart.yaml");
    std::fs::create_dir_all(old_file.parent().unwrap()).unwrap();
    std::fs::write(&old_file, old).unwrap();
    let old_out = format!("vars.out={}", dir.path().join("old").display());
    let old_store = format!(
        "nodes.cache.path={}",
        dir.path().join("old-cache").display()
    );
    let o = freshen(&[
        "run",
        old_file.to_str().unwrap(),
        "--set",
        &old_out,
        "--set",
        &old_store,
    ]);
    let (old_stdout, old_stderr) = text(&o);
    assert!(o.status.success(), "{old_stderr}");
    assert_eq!(
        old_stderr.matches("inputs by position").count(),
        lists,
        "{old_stderr}"
    );
    assert_eq!(table(&old_stdout), table(&stdout));
    // Every figure of the summary (floats printed to their last bit), the settings
    // recorded with the two runs' folders named alike; timings and the peak aside.
    let summary = |dir: &str| {
        let path = dir_of(&out, dir).join("summary.parquet");
        let batches = freshen::store::parquet_io::read_all(&path).unwrap();
        let b = &batches[0];
        let schema = b.schema();
        let folder = dir_of(&out, dir).display().to_string();
        (0..b.num_columns())
            .filter(|&c| {
                let name = schema.field(c).name();
                !name.starts_with("seconds") && name != "peak_bytes"
            })
            .map(|c| {
                let value = arrow::util::display::array_value_to_string(b.column(c), 0).unwrap();
                let value = value
                    .replace(&format!("{folder}-cache"), "CACHE")
                    .replace(&folder, "OUT");
                (schema.field(c).name().clone(), value)
            })
            .collect::<Vec<_>>()
    };
    let (old, new) = (summary("old"), summary("out"));
    assert_eq!(old.len(), new.len());
    for (o, n) in old.iter().zip(&new) {
        assert_eq!(o, n, "the summary, bit for bit");
    }
}

/// The folder `name` beside the one `--set vars.out=` names in `set`.
fn dir_of(set: &str, name: &str) -> std::path::PathBuf {
    let out = std::path::Path::new(set.trim_start_matches("vars.out="));
    out.with_file_name(name)
}

/// `text` with every one-line map of inputs written as the list of an older pipeline
/// (the shipped pipelines name their roles in role order), and how many changed.
fn by_position(text: &str) -> (String, usize) {
    let mut changed = 0;
    let mut out = String::new();
    for line in text.lines() {
        match line.find("inputs: {") {
            Some(at) => {
                let from = at + "inputs: ".len();
                let to = from + line[from..].find('}').expect("a one-line map");
                let values: Vec<&str> = line[from + 1..to]
                    .split(',')
                    .map(|kv| kv.split_once(':').expect("role: input").1.trim())
                    .collect();
                out.push_str(&format!(
                    "{}[{}]{}",
                    &line[..from],
                    values.join(", "),
                    &line[to + 1..]
                ));
                changed += 1;
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    (out, changed)
}

/// A line with its `(1.2s)` timings and its `12.3s wall` left out.
fn without_seconds(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(open) = rest.find(" (") {
        let close = rest[open..].find(')').map(|c| open + c);
        match close {
            Some(c) if rest[open + 2..c].ends_with('s') => {
                out.push_str(&rest[..open]);
                rest = &rest[c + 1..];
            }
            _ => {
                out.push_str(&rest[..open + 2]);
                rest = &rest[open + 2..];
            }
        }
    }
    out.push_str(rest);
    match out.rfind("; ") {
        Some(i) if out.ends_with(" wall") => out[..i].to_string(),
        _ => out,
    }
}

/// BENCHMARKS.md's tables are what `benches/report.py` renders from the result files.
#[test]
fn the_benchmark_tables_are_rendered_from_the_result_files() {
    let o = Command::new("python3")
        .args(["benches/report.py", "--check"])
        .current_dir(root())
        .output()
        .expect("python3 runs");
    let (stdout, stderr) = text(&o);
    assert!(
        o.status.success(),
        "BENCHMARKS.md differs from `python3 benches/report.py`: {stdout}{stderr}"
    );
}

#[test]
fn graph_prints_mermaid_and_dot_with_labelled_edges() {
    let o = freshen(&["graph", "pipelines/embed.yaml"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.starts_with("flowchart LR\n"), "{stdout}");
    assert!(
        stdout.contains("corpus -->|rows ← id, title, text| embed"),
        "{stdout}"
    );
    assert!(stdout.contains("digraph pipeline {"), "{stdout}");
    assert!(
        stdout.contains("\"embed\" -> \"store\" [label=\"vectors ← id, text_hash, embedding\"];"),
        "{stdout}"
    );
    let dot_only = freshen(&["graph", "pipelines/embed.yaml", "--format", "dot"]);
    assert!(!text(&dot_only).0.contains("flowchart"));
    // Every edge of a training graph carries its role, a port's too.
    let o = freshen(&["graph", "pipelines/quickstart.yaml", "--format", "mermaid"]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success() && stderr.is_empty(), "{stderr}");
    for edge in [
        "corrected -->|search ← id, text_hash, embedding| negatives",
        "negatives -->|sample ← ",
        "loss -->|stats ← stats: ",
        "update -->|trained ← ",
    ] {
        assert!(stdout.contains(edge), "{edge}: {stdout}");
    }
    // The inputs freshen wires itself are edges too: the store's keys and refreshes for
    // the cache, the corrector's training subset for the touched nodes and the loss.
    let sets = [
        "--set",
        "nodes.cache.refresh_every=50",
        "--set",
        "nodes.negatives.subset=64",
    ];
    let mut args = vec!["graph", "pipelines/quickstart.yaml", "--format", "mermaid"];
    args.extend(sets);
    let (stdout, stderr) = text(&freshen(&args));
    for edge in [
        "initial -->|reused ← _reused: id, text_hash| cache",
        "initial -->|refresh ← _refresh: ",
        "negatives -->|subset ← subset: id| targets",
        "negatives -->|subset ← subset: id| drift",
        "targets -->|subset ← _subset: ",
    ] {
        assert!(stdout.contains(edge), "{edge}: {stdout}{stderr}");
    }
    // They are not written: naming one is a located error.
    let mut args = vec!["check", "pipelines/quickstart.yaml", "--set"];
    args.push("nodes.cache.inputs={vectors: initial, reused: initial}");
    let o = freshen(&args);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "node cache: input `reused` is wired by freshen: the `_reused` port of input `vectors`"
        ),
        "{stderr}"
    );
}

#[test]
fn two_processes_compute_what_one_worker_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_jsonl_dataset(&data, &corpus(120));
    let run = |name: &str| {
        let work = tmp.path().join(name);
        let yaml = tmp.path().join(format!("{name}.yaml"));
        std::fs::write(&yaml, pipeline(&data, &work)).unwrap();
        (work, yaml.display().to_string())
    };
    let (one, one_yaml) = run("one");
    let o = freshen(&["run", &one_yaml, "--set", "nodes.src.batch_size=10"]);
    assert!(o.status.success(), "{:?}", text(&o));

    let (two, two_yaml) = run("two");
    let base = 20000 + (std::process::id() % 20000) as u16;
    let hosts = tmp.path().join("hosts");
    std::fs::write(
        &hosts,
        format!("127.0.0.1:{base}\n127.0.0.1:{}\n", base + 1),
    )
    .unwrap();
    let h = hosts.display().to_string();
    let spawn = |p: &str| {
        Command::new(env!("CARGO_BIN_EXE_freshen"))
            .args([
                "run",
                &two_yaml,
                "--set",
                "nodes.src.batch_size=10",
                "-n",
                "2",
                "-p",
                p,
                "-H",
                &h,
            ])
            .current_dir(root())
            .spawn()
            .unwrap()
    };
    let (mut p0, mut p1) = (spawn("0"), spawn("1"));
    assert!(p0.wait().unwrap().success());
    assert!(p1.wait().unwrap().success());
    let a = read_embeddings(&one.join("out/emb.parquet"));
    assert_eq!(a.len(), 120);
    assert_eq!(a, read_embeddings(&two.join("out/emb.parquet")));
}

#[test]
fn log_json_gives_structured_counters_and_env_vars_interpolate() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_jsonl_dataset(&data, &corpus(7));
    let work = tmp.path().join("work");
    // The dataset path comes from the environment: `${FRESHEN_TEST_DATA}`.
    let yaml = tmp.path().join("p.yaml");
    let text_yaml =
        pipeline(&data, &work).replace(&data.display().to_string(), "${FRESHEN_TEST_DATA}");
    std::fs::write(&yaml, text_yaml).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_freshen"))
        .args(["run", &yaml.display().to_string(), "--log", "json"])
        .env("FRESHEN_TEST_DATA", &data)
        .current_dir(root())
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let store = events
        .iter()
        .find(|e| e["node"] == "store")
        .unwrap_or_else(|| panic!("no event for node store in {stderr}"));
    assert_eq!(store["encoded"], 7);
    assert_eq!(store["level"], "INFO");

    // Without the variable the error names the string that uses it.
    let o = freshen(&["check", &yaml.display().to_string()]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr.starts_with(&format!(
            "error: {}:5:11: undefined variable `FRESHEN_TEST_DATA`",
            yaml.display()
        )),
        "{stderr}"
    );
}

/// `-h` is help in every command (the host file is `-H` / `--hostfile`).
#[test]
fn dash_h_is_help_everywhere() {
    for cmd in ["run", "check", "graph", "compare", "new"] {
        let o = freshen(&[cmd, "-h"]);
        let (stdout, stderr) = text(&o);
        assert!(o.status.success(), "{cmd} -h: {stderr}");
        assert!(stdout.contains("Usage:"), "{cmd} -h: {stdout}");
    }
    let o = freshen(&["run", "--help"]);
    assert!(text(&o).0.contains("--hostfile"), "{:?}", text(&o));
}
