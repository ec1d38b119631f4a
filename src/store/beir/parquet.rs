//! Parquet tables: columns found by name and checked by type, then each batch cast and
//! checked into the normalised schemas of [`crate::store::tables`].

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ::parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use ::parquet::arrow::ProjectionMask;
use arrow::array::{Array, ArrayRef, AsArray, Int32Array, Int32Builder, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow::record_batch::RecordBatch;

use super::checks::{check_id, check_text};
use super::{Kind, Numbered, Want};
use crate::error::{Error, Result};
use crate::store::tables::{self, col};

/// Opens a Parquet file for reading; an unreadable footer is a data error.
fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::data(path, None, format!("not a readable Parquet file ({e})")))
}

/// Checks the columns of a Parquet file's schema; returns the root indices to read.
pub(super) fn resolve_columns(path: &Path, kind: Kind, schema: &SchemaRef) -> Result<Vec<usize>> {
    let mut indices = Vec::new();
    for &(name, want, required) in kind.columns() {
        let Ok(index) = schema.index_of(name) else {
            if required {
                return Err(Error::data(
                    path,
                    None,
                    format!("missing column `{name}` ({})", kind.expected_columns()),
                ));
            }
            continue;
        };
        let dt = schema.field(index).data_type();
        let (ok, expected) = match want {
            Want::String => (tables::is_string(dt), "a string"),
            Want::Integer => (dt.is_integer(), "an integer"),
        };
        if !ok {
            return Err(Error::data(
                path,
                None,
                format!("column `{name}` has type {dt} (expected {expected})"),
            ));
        }
        indices.push(index);
    }
    Ok(indices)
}

/// The value at `i`, `None` when null.
fn value(a: &StringArray, i: usize) -> Option<&str> {
    a.is_valid(i).then(|| a.value(i))
}

/// The batches of one Parquet table, normalised and checked row by row; ends after an
/// error.
pub(super) struct ParquetBatches {
    path: PathBuf,
    kind: Kind,
    reader: ParquetRecordBatchReader,
    rows_read: usize,
    done: bool,
}

impl ParquetBatches {
    pub(super) fn open(path: PathBuf, kind: Kind, batch_size: usize) -> Result<Self> {
        let builder = open_parquet(&path)?;
        let indices = resolve_columns(&path, kind, builder.schema())?;
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(batch_size)
            .build()
            .map_err(|e| Error::data(&path, None, format!("not a readable Parquet file ({e})")))?;
        Ok(Self {
            path,
            kind,
            reader,
            rows_read: 0,
            done: false,
        })
    }

    /// Casts a string column to Utf8; `None` when the (optional) column is absent.
    fn utf8(&self, batch: &RecordBatch, name: &str) -> Result<Option<StringArray>> {
        let Some(array) = batch.column_by_name(name) else {
            return Ok(None);
        };
        let array = if array.data_type() == &DataType::Utf8 {
            array.clone()
        } else {
            cast(array, &DataType::Utf8)?
        };
        Ok(Some(array.as_string::<i32>().clone()))
    }

    fn required_utf8(&self, batch: &RecordBatch, name: &str) -> Result<StringArray> {
        self.utf8(batch, name)?.ok_or_else(|| {
            Error::data(
                &self.path,
                None,
                format!("missing column `{name}` ({})", self.kind.expected_columns()),
            )
        })
    }

    fn err(&self, row: usize, message: String) -> Error {
        Error::data(&self.path, Some(row), message)
    }

    fn normalise(&self, batch: &RecordBatch, first_row: usize) -> Result<Numbered> {
        let n = batch.num_rows();
        let columns: Vec<ArrayRef> = match self.kind {
            Kind::Corpus | Kind::Queries => {
                let ids = self.required_utf8(batch, col::ID)?;
                let texts = self.required_utf8(batch, col::TEXT)?;
                let titles = match self.kind {
                    Kind::Corpus => self.utf8(batch, col::TITLE)?,
                    _ => None,
                };
                for i in 0..n {
                    let title = titles.as_ref().and_then(|t| value(t, i));
                    check_id("id", value(&ids, i))
                        .and_then(|()| check_text(self.kind, value(&texts, i), title))
                        .map_err(|m| self.err(first_row + i, m))?;
                }
                let mut columns: Vec<ArrayRef> = vec![Arc::new(ids)];
                if self.kind == Kind::Corpus {
                    let titles = match titles {
                        Some(t) if t.null_count() == 0 => t,
                        Some(t) => t.iter().map(|v| Some(v.unwrap_or(""))).collect(),
                        None => std::iter::repeat_n(Some(""), n).collect(),
                    };
                    columns.push(Arc::new(titles));
                }
                columns.push(Arc::new(texts));
                columns
            }
            Kind::Qrels => {
                let query_ids = self.required_utf8(batch, col::QUERY_ID)?;
                let corpus_ids = self.required_utf8(batch, col::CORPUS_ID)?;
                for i in 0..n {
                    check_id("query id", value(&query_ids, i))
                        .and_then(|()| check_id("corpus id", value(&corpus_ids, i)))
                        .map_err(|m| self.err(first_row + i, m))?;
                }
                let scores = match batch.column_by_name(col::SCORE) {
                    Some(scores) => self.scores(scores, first_row)?,
                    None => {
                        return Err(Error::data(
                            &self.path,
                            None,
                            format!("missing column `score` ({})", self.kind.expected_columns()),
                        ))
                    }
                };
                vec![Arc::new(query_ids), Arc::new(corpus_ids), Arc::new(scores)]
            }
        };
        let batch = RecordBatch::try_new(self.kind.schema(), columns)?;
        Ok(Numbered {
            batch,
            rows: (first_row..first_row + n).collect(),
        })
    }

    /// Any integer column to Int32, refusing nulls and values out of range.
    fn scores(&self, array: &ArrayRef, first_row: usize) -> Result<Int32Array> {
        let n = array.len();
        let mut out = Int32Builder::with_capacity(n);
        macro_rules! convert {
            ($t:ty) => {{
                let a = array.as_primitive::<$t>();
                for i in 0..n {
                    if a.is_null(i) {
                        return Err(self.err(first_row + i, "null score".to_string()));
                    }
                    let v = i128::from(a.value(i));
                    match i32::try_from(v) {
                        Ok(v) => out.append_value(v),
                        Err(_) => {
                            return Err(self.err(
                                first_row + i,
                                format!("score `{v}` is out of the int32 range"),
                            ))
                        }
                    }
                }
            }};
        }
        match array.data_type() {
            DataType::Int8 => convert!(Int8Type),
            DataType::Int16 => convert!(Int16Type),
            DataType::Int32 => convert!(Int32Type),
            DataType::Int64 => convert!(Int64Type),
            DataType::UInt8 => convert!(UInt8Type),
            DataType::UInt16 => convert!(UInt16Type),
            DataType::UInt32 => convert!(UInt32Type),
            DataType::UInt64 => convert!(UInt64Type),
            dt => {
                return Err(Error::data(
                    &self.path,
                    None,
                    format!("column `score` has type {dt} (expected an integer)"),
                ))
            }
        }
        Ok(out.finish())
    }
}

impl Iterator for ParquetBatches {
    type Item = Result<Numbered>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let result = match self.reader.next()? {
            Ok(batch) => {
                let first_row = self.rows_read + 1;
                self.rows_read += batch.num_rows();
                self.normalise(&batch, first_row)
            }
            Err(e) => Err(Error::data(&self.path, None, format!("read failed ({e})"))),
        };
        self.done = result.is_err();
        Some(result)
    }
}
