//! BEIR's qrels TSV files: a header line, then `query-id<TAB>corpus-id<TAB>score` rows.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Builder, StringBuilder};
use arrow::record_batch::RecordBatch;

use super::checks::{check_id, parse_score, shown};
use super::lines::Lines;
use super::{Kind, Numbered};
use crate::error::{Error, Result};

/// The header line BEIR writes at the top of every qrels TSV file.
const TSV_HEADER: [&str; 3] = ["query-id", "corpus-id", "score"];

/// Reads and checks the header line of a qrels TSV file. `_` for `-` and any case are
/// accepted; anything else (a missing header, a data row in its place) is refused rather
/// than skipped, since skipping would silently lose a judgement.
pub(super) fn read_tsv_header(lines: &mut Lines) -> Result<()> {
    let expected = "expected header query-id, corpus-id, score separated by tabs";
    let Some((line, text)) = lines.next_nonblank()? else {
        return Err(Error::data(
            &lines.path,
            None,
            format!("empty file ({expected})"),
        ));
    };
    let fields: Vec<String> = text
        .split('\t')
        .map(|f| f.trim().to_ascii_lowercase().replace('_', "-"))
        .collect();
    if fields == TSV_HEADER {
        return Ok(());
    }
    let message = format!("unexpected header `{}` ({expected})", shown(text));
    Err(Error::data(&lines.path, Some(line), message))
}

/// Parses one qrels TSV row: query id, corpus id, integer score.
fn parse_qrel(line: &str) -> Result<(&str, &str, i32), String> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [query_id, corpus_id, score] = fields[..] else {
        return Err(format!(
            "expected 3 tab-separated fields (query-id, corpus-id, score), found {}",
            fields.len()
        ));
    };
    check_id("query id", Some(query_id))?;
    check_id("corpus id", Some(corpus_id))?;
    Ok((query_id, corpus_id, parse_score(score)?))
}

/// The batches of one qrels TSV table, checked row by row; ends after an error.
pub(super) struct TsvBatches {
    lines: Lines,
    batch_size: usize,
    done: bool,
}

impl TsvBatches {
    pub(super) fn open(path: PathBuf, batch_size: usize) -> Result<Self> {
        let mut lines = Lines::open(&path)?;
        read_tsv_header(&mut lines)?;
        Ok(Self {
            lines,
            batch_size,
            done: false,
        })
    }

    fn fill(&mut self) -> Result<Option<Numbered>> {
        let mut query_ids = StringBuilder::new();
        let mut corpus_ids = StringBuilder::new();
        let mut scores = Int32Builder::new();
        let mut rows = Vec::new();
        while rows.len() < self.batch_size {
            let Some((line, text)) = self.lines.next_nonblank()? else {
                break;
            };
            match parse_qrel(text) {
                Ok((query_id, corpus_id, score)) => {
                    query_ids.append_value(query_id);
                    corpus_ids.append_value(corpus_id);
                    scores.append_value(score);
                }
                Err(m) => return Err(Error::data(&self.lines.path, Some(line), m)),
            }
            rows.push(line);
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(query_ids.finish()),
            Arc::new(corpus_ids.finish()),
            Arc::new(scores.finish()),
        ];
        let batch = RecordBatch::try_new(Kind::Qrels.schema(), columns)?;
        Ok(Some(Numbered { batch, rows }))
    }
}

impl Iterator for TsvBatches {
    type Item = Result<Numbered>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = self.fill().transpose();
        self.done = !matches!(result, Some(Ok(_)));
        result
    }
}
