//! The checks of [`Dataset::validate`] that look across rows: duplicate ids within the
//! corpus or the queries, and qrels naming a query or corpus id that does not exist.

use std::collections::HashMap;

use arrow::array::AsArray;
use arrow::datatypes::Int32Type;

use super::checks::shown;
use super::{Dataset, Numbered, Table};
use crate::error::{Error, Result};

/// Rows per batch when [`Dataset::validate`] scans the tables: large enough to amortise the
/// per-batch work, small enough that only the id sets dominate memory.
const VALIDATE_BATCH: usize = 8192;

impl Dataset {
    /// Reads a corpus or query table and keeps its ids, with the row each was first seen
    /// at; a second occurrence is an error.
    pub(super) fn collect_ids(&self, table: &Table) -> Result<HashMap<Box<str>, usize>> {
        let path = self.path(table);
        let mut seen: HashMap<Box<str>, usize> = HashMap::new();
        for item in self.numbered(table, VALIDATE_BATCH)? {
            let Numbered { batch, rows } = item?;
            let ids = batch.column(0).as_string::<i32>();
            for (i, &row) in rows.iter().enumerate() {
                let id = ids.value(i);
                if let Some(first) = seen.get(id) {
                    return Err(Error::data(
                        &path,
                        Some(row),
                        format!("duplicate id `{}` (first seen at row {first})", shown(id)),
                    ));
                }
                seen.insert(id.into(), row);
            }
        }
        Ok(seen)
    }

    /// Reads the qrels of `split` and checks that every judgement names a known query id
    /// and a known corpus id, that no (query, document) pair is judged twice, and that at
    /// least one judgement is relevant (score > 0); returns the number of judgements.
    pub(super) fn check_qrels(
        &self,
        split: &str,
        queries: &HashMap<Box<str>, usize>,
        corpus: &HashMap<Box<str>, usize>,
    ) -> Result<usize> {
        let table = Table::Qrels(split.to_string());
        let path = self.path(&table);
        let mut count = 0;
        let mut relevant = 0;
        let mut judged: HashMap<(Box<str>, Box<str>), usize> = HashMap::new();
        for item in self.numbered(&table, VALIDATE_BATCH)? {
            let Numbered { batch, rows } = item?;
            let query_ids = batch.column(0).as_string::<i32>();
            let corpus_ids = batch.column(1).as_string::<i32>();
            let scores = batch.column(2).as_primitive::<Int32Type>();
            for (i, &row) in rows.iter().enumerate() {
                let query_id = query_ids.value(i);
                if !queries.contains_key(query_id) {
                    return Err(Error::data(
                        &path,
                        Some(row),
                        format!("qrel names unknown query id `{}`", shown(query_id)),
                    ));
                }
                let corpus_id = corpus_ids.value(i);
                if !corpus.contains_key(corpus_id) {
                    return Err(Error::data(
                        &path,
                        Some(row),
                        format!("qrel names unknown corpus id `{}`", shown(corpus_id)),
                    ));
                }
                if let Some(first) = judged.insert((query_id.into(), corpus_id.into()), row) {
                    return Err(Error::data(
                        &path,
                        Some(row),
                        format!(
                            "query `{}` and document `{}` are judged twice (first at row {first}; expected one judgement per pair)",
                            shown(query_id),
                            shown(corpus_id)
                        ),
                    ));
                }
                relevant += usize::from(scores.value(i) > 0);
            }
            count += rows.len();
        }
        if count > 0 && relevant == 0 {
            return Err(Error::data(
                &path,
                None,
                format!("no judgement has a score above 0 ({count} rows; expected relevant documents, else every metric is 0)"),
            ));
        }
        Ok(count)
    }
}
