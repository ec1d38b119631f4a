//! The embed pipeline end to end: the shipped sample read back by pyarrow and DuckDB,
//! incremental re-runs, and 1 worker against 2.

use std::process::Command;

use crate::common::*;

#[test]
fn embed_pipeline_on_the_shipped_sample_is_read_by_pyarrow_and_duckdb() {
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display().to_string();
    for layout in ["fixed", "list"] {
        let out = freshen(&[
            "run",
            "pipelines/embed.yaml",
            "--set",
            &format!("vars.out={w}/{layout}"),
            "--set",
            &format!("nodes.store.path={w}/cache"),
            "--set",
            &format!("outputs.embeddings.vectors={layout}"),
        ]);
        let (stdout, stderr) = text(&out);
        assert!(out.status.success(), "run failed: {stdout}{stderr}");
        let file = format!("{w}/{layout}/embeddings.parquet");
        let script = format!(
            "import pyarrow.parquet as pq, duckdb
t = pq.read_table('{file}')
c = pq.read_table('data/wordnet-sample/corpus.parquet')
print(t.num_rows, c.num_rows, len(t.column('embedding')[0]))
n, dim = duckdb.sql(\"select count(*), min(len(embedding)) from '{file}'\").fetchall()[0]
ids = duckdb.sql(\"select count(distinct id) from '{file}'\").fetchall()[0][0]
print(n, dim, ids)"
        );
        let py = Command::new("python3")
            .args(["-c", &script])
            .current_dir(root())
            .output()
            .unwrap();
        let (pout, perr) = text(&py);
        assert!(py.status.success(), "python readers failed: {perr}");
        let lines: Vec<Vec<usize>> = pout
            .lines()
            .map(|l| l.split_whitespace().map(|x| x.parse().unwrap()).collect())
            .collect();
        let corpus_rows = lines[0][1];
        assert!(corpus_rows >= 5000, "sample too small: {corpus_rows}");
        assert_eq!(
            lines[0],
            vec![corpus_rows, corpus_rows, 128],
            "pyarrow ({layout})"
        );
        assert_eq!(
            lines[1],
            vec![corpus_rows, 128, corpus_rows],
            "duckdb ({layout})"
        );
    }
}

fn counts(stdout: &str) -> String {
    stdout
        .lines()
        .find(|l| l.starts_with("store:"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn rerun_encodes_only_what_changed_and_equals_a_cold_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, work) = (tmp.path().join("data"), tmp.path().join("work"));
    let rows = corpus(20);
    write_jsonl_dataset(&data, &rows);
    let yaml = tmp.path().join("p.yaml");
    std::fs::write(&yaml, pipeline(&data, &work)).unwrap();
    let y = yaml.display().to_string();

    let first = freshen(&["run", &y]);
    assert!(first.status.success(), "{:?}", text(&first));
    assert_eq!(
        counts(&text(&first).0),
        "store: encoded 20, reused 0, dropped 0, replaced 0"
    );

    let again = freshen(&["run", &y]);
    assert!(again.status.success(), "{:?}", text(&again));
    assert_eq!(
        counts(&text(&again).0),
        "store: encoded 0, reused 20, dropped 0, replaced 0"
    );

    // Edit 3 rows, add 2, delete 1.
    let mut edited = rows.clone();
    for r in edited.iter_mut().take(3) {
        r.1.push_str(" edited");
    }
    edited.remove(10);
    edited.push(("d900".into(), "brand new row".into()));
    edited.push(("d901".into(), "another new row".into()));
    write_jsonl_dataset(&data, &edited);
    let third = freshen(&["run", &y]);
    assert!(third.status.success(), "{:?}", text(&third));
    assert_eq!(
        counts(&text(&third).0),
        "store: encoded 5, reused 16, dropped 1, replaced 3"
    );

    // The incremental store equals a cold run on the edited corpus, bit for bit.
    let cold_work = tmp.path().join("cold");
    let cold_yaml = tmp.path().join("cold.yaml");
    std::fs::write(&cold_yaml, pipeline(&data, &cold_work)).unwrap();
    let cold = freshen(&["run", &cold_yaml.display().to_string()]);
    assert!(cold.status.success(), "{:?}", text(&cold));
    assert_eq!(
        counts(&text(&cold).0),
        "store: encoded 21, reused 0, dropped 0, replaced 0"
    );
    let incremental = read_embeddings(&store_file(&work.join("cache")));
    let fresh = read_embeddings(&store_file(&cold_work.join("cache")));
    assert_eq!(incremental.len(), 21);
    assert_eq!(incremental, fresh);
    assert_eq!(read_embeddings(&work.join("out/emb.parquet")), fresh);

    // Back to the first corpus: the store kept the rows the edit replaced or deleted, so
    // nothing is embedded again, and the vectors are the first run's.
    write_jsonl_dataset(&data, &rows);
    let back = freshen(&["run", &y]);
    assert!(back.status.success(), "{:?}", text(&back));
    assert_eq!(
        counts(&text(&back).0),
        "store: encoded 0, reused 20, dropped 2, replaced 0"
    );
    // With nothing retained, going back embeds the rows the edit replaced or deleted.
    write_jsonl_dataset(&data, &edited);
    let o = freshen(&["run", &y, "--set", "nodes.store.retain=0"]);
    assert!(o.status.success(), "{:?}", text(&o));
    write_jsonl_dataset(&data, &rows);
    let o = freshen(&["run", &y]);
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(
        counts(&text(&o).0).starts_with("store: encoded 4, reused 16"),
        "{}",
        text(&o).0
    );
}

#[test]
fn one_and_two_workers_give_identical_embeddings() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    write_jsonl_dataset(&data, &corpus(300));
    let mut results = Vec::new();
    for workers in ["1", "2"] {
        let work = tmp.path().join(format!("w{workers}"));
        let yaml = tmp.path().join(format!("w{workers}.yaml"));
        std::fs::write(
            &yaml,
            pipeline(&data, &work).replace("kind: hashed", "kind: hashed, word_ngrams: 2"),
        )
        .unwrap();
        let out = freshen(&[
            "run",
            &yaml.display().to_string(),
            "-w",
            workers,
            "--set",
            "nodes.src.batch_size=16",
        ]);
        assert!(out.status.success(), "{:?}", text(&out));
        assert_eq!(
            counts(&text(&out).0),
            "store: encoded 300, reused 0, dropped 0, replaced 0"
        );
        results.push(read_embeddings(&work.join("out/emb.parquet")));
    }
    assert_eq!(results[0].len(), 300);
    assert_eq!(results[0], results[1]);
}
