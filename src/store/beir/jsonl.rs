//! BEIR's JSONL corpus and query files: one JSON object per line.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};
use arrow::record_batch::RecordBatch;
use serde_json::Value;

use super::checks::{check_id, check_text};
use super::lines::Lines;
use super::{Kind, Numbered};
use crate::error::{Error, Result};

/// The fields of one JSONL record; `None` is JSON null (or an absent optional title).
pub(super) struct JsonRow {
    id: Option<String>,
    title: Option<String>,
    text: Option<String>,
}

/// The JSON type of `v`, with its article, for messages.
fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses one JSONL line into its fields, checking that they are present with usable
/// types; ids may be JSON numbers and become strings, as BEIR's loader does.
pub(super) fn parse_json_row(line: &str, kind: Kind) -> Result<JsonRow, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| {
        let full = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let what = full.strip_suffix(&position).unwrap_or(&full);
        format!("invalid JSON ({what} at column {})", e.column())
    })?;
    let Value::Object(mut map) = value else {
        return Err(format!(
            "expected a JSON object, found {}",
            json_type(&value)
        ));
    };
    let (id_key, id) = match map.remove("_id") {
        Some(v) => ("_id", v),
        None => match map.remove("id") {
            Some(v) => ("id", v),
            None => return Err(format!("missing field `_id` ({})", kind.expected_fields())),
        },
    };
    let id = match id {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        other => {
            return Err(format!(
                "`{id_key}` is {} (expected a string or a number)",
                json_type(&other)
            ))
        }
    };
    let text = match map.remove("text") {
        None => return Err(format!("missing field `text` ({})", kind.expected_fields())),
        Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(format!(
                "`text` is {} (expected a string)",
                json_type(&other)
            ))
        }
    };
    let title = match (kind, map.remove("title")) {
        (Kind::Corpus, None | Some(Value::Null)) => Some(String::new()),
        (Kind::Corpus, Some(Value::String(s))) => Some(s),
        (Kind::Corpus, Some(other)) => {
            return Err(format!(
                "`title` is {} (expected a string)",
                json_type(&other)
            ))
        }
        _ => None,
    };
    Ok(JsonRow { id, title, text })
}

/// The batches of one JSONL table, checked record by record; ends after an error.
pub(super) struct JsonlBatches {
    lines: Lines,
    kind: Kind,
    batch_size: usize,
    done: bool,
}

impl JsonlBatches {
    pub(super) fn open(path: PathBuf, kind: Kind, batch_size: usize) -> Result<Self> {
        Ok(Self {
            lines: Lines::open(&path)?,
            kind,
            batch_size,
            done: false,
        })
    }

    fn fill(&mut self) -> Result<Option<Numbered>> {
        let mut ids = StringBuilder::new();
        let mut titles = StringBuilder::new();
        let mut texts = StringBuilder::new();
        let mut rows = Vec::new();
        while rows.len() < self.batch_size {
            let Some((line, text)) = self.lines.next_nonblank()? else {
                break;
            };
            let kind = self.kind;
            let parsed = parse_json_row(text, kind).and_then(|r| {
                check_id("id", r.id.as_deref())?;
                check_text(kind, r.text.as_deref(), r.title.as_deref())?;
                Ok(r)
            });
            let row = parsed.map_err(|m| Error::data(&self.lines.path, Some(line), m))?;
            ids.append_value(row.id.unwrap_or_default());
            titles.append_value(row.title.unwrap_or_default());
            texts.append_value(row.text.unwrap_or_default());
            rows.push(line);
        }
        if rows.is_empty() {
            return Ok(None);
        }
        let mut columns: Vec<ArrayRef> = vec![Arc::new(ids.finish())];
        if self.kind == Kind::Corpus {
            columns.push(Arc::new(titles.finish()));
        }
        columns.push(Arc::new(texts.finish()));
        let batch = RecordBatch::try_new(self.kind.schema(), columns)?;
        Ok(Some(Numbered { batch, rows }))
    }
}

impl Iterator for JsonlBatches {
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
