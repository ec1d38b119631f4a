//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (tests run from it too).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the freshen binary with `args` in the repository root.
pub fn freshen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_freshen"))
        .args(args)
        .current_dir(root())
        .env_remove("FRESHEN_LOG")
        .output()
        .expect("the freshen binary runs")
}

/// Stdout and stderr of a finished command, for assertion messages.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Writes a BEIR JSONL dataset: `corpus` as (id, text), queries and a test split of qrels.
pub fn write_jsonl_dataset(dir: &Path, corpus: &[(String, String)]) {
    std::fs::create_dir_all(dir.join("qrels")).unwrap();
    let mut c = String::new();
    let mut q = String::new();
    let mut r = String::from("query-id\tcorpus-id\tscore\n");
    for (id, text) in corpus {
        c.push_str(&serde_json::json!({"_id": id, "title": "", "text": text}).to_string());
        c.push('\n');
        q.push_str(
            &serde_json::json!({"_id": format!("q{id}"), "text": format!("what is {text}")})
                .to_string(),
        );
        q.push('\n');
        r.push_str(&format!("q{id}\t{id}\t1\n"));
    }
    std::fs::write(dir.join("corpus.jsonl"), c).unwrap();
    std::fs::write(dir.join("queries.jsonl"), q).unwrap();
    std::fs::write(dir.join("qrels/test.tsv"), r).unwrap();
}

/// `n` distinct corpus rows.
pub fn corpus(n: usize) -> Vec<(String, String)> {
    let words = [
        "river", "bank", "stone", "light", "house", "green", "music", "paper", "winter", "salt",
    ];
    (0..n)
        .map(|i| {
            let text = format!(
                "{} {} {} number {i}",
                words[i % 10],
                words[(i / 10) % 10],
                words[(i * 7) % 10]
            );
            (format!("d{i:03}"), text)
        })
        .collect()
}

/// A small pipeline: source → encode → cache → sink, over `data`, writing under `work`.
pub fn pipeline(data: &Path, work: &Path) -> String {
    format!(
        "version: 1
seed: 3
inputs:
  d:
    path: {data}
nodes:
  - id: src
    type: source
    dataset: d
  - id: enc
    type: encode
    inputs: [src]
    model: {{kind: hashed, buckets: 4096, bag_dim: 32, dim: 16}}
  - id: store
    type: cache
    inputs: [enc]
    path: {work}/cache
  - id: out
    type: sink
    inputs: [store]
    output: emb
outputs:
  emb:
    path: {work}/out/emb.parquet
",
        data = data.display(),
        work = work.display()
    )
}

/// Rows `(id, text_hash, vector bits)` of an embeddings Parquet file, sorted by id.
pub fn read_embeddings(path: &Path) -> Vec<(String, u64, Vec<u32>)> {
    let mut rows = Vec::new();
    for b in freshen::store::parquet_io::read_all(path).unwrap() {
        let ids = freshen::store::batch::strings(&b, "id").unwrap();
        let hashes = freshen::store::batch::hashes(&b).unwrap();
        let (values, dim) = freshen::store::batch::vectors(&b).unwrap();
        for r in 0..b.num_rows() {
            let v = values[r * dim..(r + 1) * dim]
                .iter()
                .map(|x| x.to_bits())
                .collect();
            rows.push((ids.value(r).to_string(), hashes.value(r), v));
        }
    }
    rows.sort();
    rows
}

/// The single store file under `cache`.
pub fn store_file(cache: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .collect();
    assert_eq!(
        files.len(),
        1,
        "one store file expected in {}",
        cache.display()
    );
    files[0].clone()
}
