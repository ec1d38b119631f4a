//! `freshen data rlm`: a task for the retrieval-augmented language model, made from a
//! reverse-dictionary set (`freshen data wordnet`, or the shipped sample): the query is a
//! definition, the answer is the word it defines, and the passages are the dictionary's
//! entries (the set's corpus unchanged).
//!
//! The answer of a query is the first lemma of its synset's entry (the text before its
//! first `, ` or ` (`: `full-length, uncut (adjective)` answers `full-length`), so it is
//! in the right passage word for word and rarely in the definition: a reader that sees no
//! passage cannot read it off, one that sees the right entry can. The qrels are copied
//! only for their splits (and for the retrieval metrics of an evaluation); the model's
//! training never reads which passage is relevant, only the answer string.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::tables::copy_tables;
use crate::error::{Error, Result};
use crate::store::batch;
use crate::store::parquet_io::{read_batches, AtomicParquetWriter};
use crate::store::tables::col;

/// The column of a query's answer.
pub const ANSWER: &str = "answer";

/// What `freshen data rlm` builds.
#[derive(Debug, Clone)]
pub struct RlmOptions {
    /// The reverse-dictionary set (BEIR layout, Parquet).
    pub from: PathBuf,
    /// Output folder.
    pub out: PathBuf,
}

/// What the builder wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RlmStats {
    /// Passages (the corpus).
    pub passages: usize,
    /// Queries with an answer.
    pub queries: usize,
    /// Queries left out: no relevant entry, or an entry with no lemma.
    pub dropped: usize,
}

/// The queries' schema: `id`, `text`, `answer`.
pub fn queries_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::TEXT, DataType::Utf8, false),
        Field::new(ANSWER, DataType::Utf8, false),
    ]))
}

/// The first lemma of an entry: the text before its first `, ` or ` (`.
pub fn first_lemma(entry: &str) -> &str {
    let end = [entry.find(", "), entry.find(" (")]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(entry.len());
    entry[..end].trim()
}

/// `(column a, column b)` string pairs of every row of a Parquet table.
fn pairs(path: &Path, a: &str, b: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for batch in read_batches(path, 8192)? {
        let batch = batch.map_err(|e| Error::data(path, None, e.to_string()))?;
        let x = batch::strings(&batch, a).map_err(|e| Error::data(path, None, e.to_string()))?;
        let y = batch::strings(&batch, b).map_err(|e| Error::data(path, None, e.to_string()))?;
        for r in 0..batch.num_rows() {
            out.push((x.value(r).to_string(), y.value(r).to_string()));
        }
    }
    Ok(out)
}

/// Builds the task (see the module docs).
pub fn build(opts: &RlmOptions) -> Result<RlmStats> {
    let from = &opts.from;
    let entries: HashMap<String, String> = pairs(&from.join("corpus.parquet"), col::ID, col::TEXT)?
        .into_iter()
        .collect();
    // Every query's relevant entry, from any split (each query is in one).
    let mut relevant: HashMap<String, String> = HashMap::new();
    let split_dir = from.join("qrels");
    let mut splits: Vec<PathBuf> = std::fs::read_dir(&split_dir)
        .map_err(|e| Error::io(&split_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    splits.sort();
    for split in &splits {
        for (q, c) in pairs(split, col::QUERY_ID, col::CORPUS_ID)? {
            relevant.entry(q).or_insert(c);
        }
    }
    let mut stats = RlmStats {
        passages: entries.len(),
        ..RlmStats::default()
    };
    let (mut ids, mut texts, mut answers) = (Vec::new(), Vec::new(), Vec::new());
    for (id, text) in pairs(&from.join("queries.parquet"), col::ID, col::TEXT)? {
        let answer = relevant
            .get(&id)
            .and_then(|c| entries.get(c))
            .map(|e| first_lemma(e))
            .filter(|a| !a.is_empty());
        match answer {
            Some(a) => {
                answers.push(a.to_string());
                ids.push(id);
                texts.push(text);
            }
            None => stats.dropped += 1,
        }
    }
    stats.queries = ids.len();
    copy_tables(from, &opts.out, &["corpus.parquet"])?;
    let batch = RecordBatch::try_new(
        queries_schema(),
        vec![
            Arc::new(StringArray::from(ids)) as ArrayRef,
            Arc::new(StringArray::from(texts)),
            Arc::new(StringArray::from(answers)),
        ],
    )?;
    let mut w = AtomicParquetWriter::create(&opts.out.join("queries.parquet"), queries_schema())?;
    w.write(&batch)?;
    w.finish()?.commit()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::parquet_io::read_all;

    #[test]
    fn the_answer_is_the_first_lemma_of_the_relevant_entry() {
        assert_eq!(first_lemma("full-length, uncut (adjective)"), "full-length");
        assert_eq!(first_lemma("hot dog (noun) ; food"), "hot dog");
        assert_eq!(first_lemma("moribund"), "moribund");

        let out = tempfile::tempdir().unwrap();
        let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/wordnet-sample");
        let stats = build(&RlmOptions {
            from: from.clone(),
            out: out.path().to_path_buf(),
        })
        .unwrap();
        assert_eq!(
            (stats.passages, stats.queries, stats.dropped),
            (10_000, 10_000, 0)
        );
        let q = read_all(&out.path().join("queries.parquet")).unwrap();
        let (ids, answers) = (
            batch::strings(&q[0], col::ID).unwrap(),
            batch::strings(&q[0], ANSWER).unwrap(),
        );
        // The sample's first query defines `moribund`, whose entry is `a00004171`.
        let at = (0..q[0].num_rows())
            .find(|&r| ids.value(r) == "qa00004171")
            .unwrap();
        assert_eq!(answers.value(at), "moribund");
        for f in [
            "corpus.parquet",
            "qrels/train.parquet",
            "qrels/test.parquet",
        ] {
            assert_eq!(
                std::fs::read(out.path().join(f)).unwrap(),
                std::fs::read(from.join(f)).unwrap(),
                "{f} is copied unchanged"
            );
        }
    }
}
