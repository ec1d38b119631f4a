//! The eval operator: exact ranking scored against qrels, TREC run and Parquet ranking.

use std::process::Command;

use crate::common::*;

#[test]
fn eval_ranks_exactly_and_scores_against_qrels() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(data.join("qrels")).unwrap();
    let docs = corpus(20);
    let (mut c, mut q, mut r) = (
        String::new(),
        String::new(),
        String::from("query-id\tcorpus-id\tscore\n"),
    );
    for (i, (id, text)) in docs.iter().enumerate() {
        c.push_str(&format!("{{\"_id\": \"{id}\", \"text\": \"{text}\"}}\n"));
        // Each query is its document's text, except the last, which copies the first's.
        let query = if i == 19 { &docs[0].1 } else { text };
        q.push_str(&format!("{{\"_id\": \"q{id}\", \"text\": \"{query}\"}}\n"));
        r.push_str(&format!("q{id}\t{id}\t1\n"));
    }
    std::fs::write(data.join("corpus.jsonl"), c).unwrap();
    std::fs::write(data.join("queries.jsonl"), q).unwrap();
    std::fs::write(data.join("qrels/test.tsv"), r).unwrap();
    let out = tmp.path().join("out");
    let o = freshen(&[
        "run",
        "pipelines/eval.yaml",
        "--set",
        &format!("vars.data={}", data.display()),
        "--set",
        &format!("vars.out={}", out.display()),
        "--set",
        &format!("nodes.store.path={}", tmp.path().join("cache").display()),
        "--set",
        "nodes.evaluate.depth=5",
    ]);
    assert!(o.status.success(), "{:?}", text(&o));

    let trec = std::fs::read_to_string(out.join("run.trec")).unwrap();
    let lines: Vec<Vec<&str>> = trec.lines().map(|l| l.split(' ').collect()).collect();
    assert_eq!(lines.len(), 20 * 5);
    assert_eq!(&lines[0][..4], &["qd000", "Q0", "d000", "1"]);
    assert_eq!(lines[0][5], "freshen");
    assert!(lines.iter().all(|l| l.len() == 6));

    let script = format!(
        "import duckdb
m = duckdb.sql(\"select queries, recall_at_1, mrr_at_10 from '{o}/metrics.parquet'\").fetchall()[0]
r = duckdb.sql(\"select count(*), max(rank) from '{o}/rankings.parquet'\").fetchall()[0]
print(m[0], m[1], m[2] >= 0.95, r[0], r[1])",
        o = out.display()
    );
    let py = Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&py);
    assert!(py.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), "20 0.95 True 100 5");
}
