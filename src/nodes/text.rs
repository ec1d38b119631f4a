//! The text a node embeds of a row: some of its columns joined. Shared by the nodes that
//! embed (`encode`), rank (`eval`) and read (`read`) texts, so each joins them alike.

use arrow::array::RecordBatch;
use freshen_operators::hashing::text_hash;

use crate::dataflow::Row;
use crate::error::Result;
use crate::store::batch;
use crate::store::tables::col;

/// The default `fields` of the nodes that embed rows: the text alone.
pub(crate) fn default_fields() -> Vec<String> {
    vec![col::TEXT.to_string()]
}

/// The rows of `batch` with their embedded text (its `fields` joined by a space, empty
/// values skipped) and that text's hash.
pub fn joined_rows(batch: &RecordBatch, fields: &[String]) -> Result<Vec<Row>> {
    let ids = batch::strings(batch, col::ID)?;
    (0..batch.num_rows())
        .map(|r| {
            let text = joined_text(batch, fields, r)?;
            Ok(((ids.value(r).to_string(), text_hash(&text)), text))
        })
        .collect()
}

/// Row `r` of `batch`'s embedded text: its `fields` joined by a space, empty values
/// skipped.
pub fn joined_text(batch: &RecordBatch, fields: &[String], r: usize) -> Result<String> {
    let mut parts = Vec::with_capacity(fields.len());
    for f in fields {
        let v = batch::strings(batch, f)?.value(r).trim();
        if !v.is_empty() {
            parts.push(v);
        }
    }
    Ok(parts.join(" "))
}
