//! The persistent embedding store behind the `cache` operator.
//!
//! Embeddings are kept per encoder fingerprint, one Parquet file each, keyed inside
//! by `(id, text_hash)`. A row is reusable exactly when its id, the hash of its text
//! and the encoder's weights and settings all match, so a changed text, a retrained
//! encoder or a new setting can never be served a stale vector.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, GenericListArray, OffsetSizeTrait,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Float32Type, Int64Type, UInt64Type};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::store::batch;
use crate::store::parquet_io::{self, AtomicParquetWriter};
use crate::store::tables::{self, col};

/// A store file that cannot be used: the file, the 1-based row, and how to recover.
fn bad(path: &Path, row: Option<usize>, message: &str) -> Error {
    Error::data(
        path,
        row,
        format!("embedding store: {message}; delete the file to rebuild it"),
    )
}

/// The rows of one batch of a store file, in the canonical layout
/// ([`tables::embeddings_schema`]) whatever layout the tool that wrote the file chose, and
/// checked: no nulls, `dim` values a row, finite values (a NaN served from a cache poisons
/// every search). `first_row` is the number of rows before the batch.
///
/// Other tools rewrite a store in their own layout: pyarrow names a list's items
/// `element`, polars and DuckDB write plain lists, polars large or view strings, and some
/// tools can only write a signed `text_hash`. All of these read as the same rows.
fn normalise(path: &Path, b: &RecordBatch, dim: usize, first_row: usize) -> Result<RecordBatch> {
    let ids = ids_column(path, b, first_row)?;
    let hashes = hash_column(path, b, first_row)?;
    let vectors = vector_column(path, column(path, b, col::EMBEDDING)?, dim, first_row)?;
    let values = vectors.values().as_primitive::<Float32Type>().values();
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let row = first_row + i / dim.max(1) + 1;
        return Err(bad(
            path,
            Some(row),
            &format!("a vector holds {}", values[i]),
        ));
    }
    let columns: Vec<ArrayRef> = vec![ids, hashes, Arc::new(vectors)];
    Ok(RecordBatch::try_new(
        tables::embeddings_schema(dim),
        columns,
    )?)
}

/// Column `name` of a store batch, or an error naming the columns expected.
fn column<'a>(path: &Path, b: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    b.column_by_name(name).ok_or_else(|| {
        bad(
            path,
            None,
            &format!("no column `{name}` (expected id, text_hash, embedding)"),
        )
    })
}

/// The 1-based row of the first null of `a`, if any.
fn first_null(a: &dyn Array, first_row: usize) -> Option<usize> {
    let nulls = a.logical_nulls()?;
    nulls
        .iter()
        .position(|valid| !valid)
        .map(|i| first_row + i + 1)
}

/// The `id` column as Utf8: any string type casts to it.
fn ids_column(path: &Path, b: &RecordBatch, first_row: usize) -> Result<ArrayRef> {
    let ids = column(path, b, col::ID)?;
    let dt = ids.data_type();
    if !tables::is_string(dt) {
        return Err(bad(
            path,
            None,
            &format!("column `id` is {dt} (expected a string)"),
        ));
    }
    if let Some(row) = first_null(ids.as_ref(), first_row) {
        return Err(bad(path, Some(row), "null id"));
    }
    Ok(match dt {
        DataType::Utf8 => ids.clone(),
        _ => cast(ids, &DataType::Utf8)?,
    })
}

/// The `text_hash` column as UInt64; a signed one holds the same bits.
fn hash_column(path: &Path, b: &RecordBatch, first_row: usize) -> Result<ArrayRef> {
    let hashes = column(path, b, col::TEXT_HASH)?;
    let out: ArrayRef = match hashes.data_type() {
        DataType::UInt64 => hashes.clone(),
        DataType::Int64 => Arc::new(
            hashes
                .as_primitive::<Int64Type>()
                .unary::<_, UInt64Type>(|h| h as u64),
        ),
        dt => {
            return Err(bad(
                path,
                None,
                &format!("column `text_hash` is {dt} (expected uint64, or int64 holding its bits)"),
            ))
        }
    };
    if let Some(row) = first_null(out.as_ref(), first_row) {
        return Err(bad(path, Some(row), "null text_hash"));
    }
    Ok(out)
}

/// The `embedding` column as a fixed-size list of `dim` non-null float32 a row, from a
/// fixed-size list, list or large list of float32 (items named and nullable as any tool
/// writes them).
fn vector_column(
    path: &Path,
    a: &ArrayRef,
    dim: usize,
    first_row: usize,
) -> Result<FixedSizeListArray> {
    let wrong_type = || {
        bad(
            path,
            None,
            &format!(
                "column `embedding` is {} (expected a list of float32, {dim} values a row, as this encoder writes)",
                a.data_type()
            ),
        )
    };
    let item = match a.data_type() {
        DataType::FixedSizeList(f, _) | DataType::List(f) | DataType::LargeList(f) => f,
        _ => return Err(wrong_type()),
    };
    if item.data_type() != &DataType::Float32 {
        return Err(wrong_type());
    }
    if let Some(row) = first_null(a.as_ref(), first_row) {
        return Err(bad(path, Some(row), "null vector"));
    }
    let values = match a.data_type() {
        DataType::FixedSizeList(_, width) => fixed_values(path, a, *width, dim)?,
        DataType::List(_) => list_values(path, a.as_list::<i32>(), dim, first_row)?,
        _ => list_values(path, a.as_list::<i64>(), dim, first_row)?,
    };
    if let Some(i) = values
        .nulls()
        .and_then(|n| n.iter().position(|valid| !valid))
    {
        let row = first_row + i / dim.max(1) + 1;
        return Err(bad(path, Some(row), "a vector holds a null value"));
    }
    let values = Float32Array::new(values.values().clone(), None);
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    Ok(FixedSizeListArray::try_new(
        item,
        dim as i32,
        Arc::new(values),
        None,
    )?)
}

/// The row-major values of a fixed-size list column of `width` values a row.
fn fixed_values(path: &Path, a: &ArrayRef, width: i32, dim: usize) -> Result<Float32Array> {
    if usize::try_from(width).ok() != Some(dim) {
        return Err(bad(
            path,
            None,
            &format!(
                "column `embedding` holds vectors of width {width} (expected {dim}, as this encoder writes)"
            ),
        ));
    }
    let list = a.as_fixed_size_list();
    let values = list.values().as_primitive::<Float32Type>();
    Ok(values.slice(list.offset() * dim, list.len() * dim))
}

/// The row-major values of a list column whose every row must hold `dim` values.
fn list_values<O: OffsetSizeTrait>(
    path: &Path,
    list: &GenericListArray<O>,
    dim: usize,
    first_row: usize,
) -> Result<Float32Array> {
    let offsets = list.value_offsets();
    for (i, w) in offsets.windows(2).enumerate() {
        let width = w[1].as_usize().saturating_sub(w[0].as_usize());
        if width != dim {
            return Err(bad(
                path,
                Some(first_row + i + 1),
                &format!("a vector of width {width} (expected {dim}, as this encoder writes)"),
            ));
        }
    }
    let start = offsets.first().map_or(0, |o| o.as_usize());
    let values = list.values().as_primitive::<Float32Type>();
    Ok(values.slice(start, list.len() * dim))
}

/// The two files of a store: the rows of the corpus it was last written for, and the
/// rows kept for later (other corpora, older texts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// `embeddings-<fingerprint>.parquet`: the current corpus's rows.
    Current,
    /// `embeddings-<fingerprint>.parquet.retained`: rows kept for a later run.
    Retained,
}

/// The store of one encoder (one fingerprint) under a folder.
#[derive(Debug, Clone)]
pub struct EmbeddingStore {
    path: PathBuf,
    dim: usize,
}

impl EmbeddingStore {
    /// The store in `dir` for the encoder with `fingerprint`, whose vectors have `dim` values.
    pub fn new(dir: &Path, fingerprint: &str, dim: usize) -> Self {
        Self {
            path: dir.join(format!("embeddings-{fingerprint}.parquet")),
            dim,
        }
    }

    /// The Parquet file of the current corpus's rows.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file of `part`.
    pub fn file(&self, part: Part) -> PathBuf {
        match part {
            Part::Current => self.path.clone(),
            Part::Retained => self.path.with_extension("parquet.retained"),
        }
    }

    /// Whether anything has been stored yet.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Streams the rows (`id`, `text_hash`, `embedding`) of `part`; nothing when it has
    /// none. Every batch is read into the canonical layout, whichever tool wrote the file,
    /// and checked: the columns, the width this encoder writes, no nulls and finite
    /// vectors; a problem names the file and row.
    pub fn read_part(
        &self,
        part: Part,
        batch_size: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
        let path = self.file(part);
        if !path.exists() {
            return Ok(Box::new(std::iter::empty()));
        }
        let dim = self.dim;
        let reader = parquet_io::read_batches(&path, batch_size)
            .map_err(|e| bad(&path, None, &e.to_string()))?;
        let mut first_row = 0;
        Ok(Box::new(reader.map(move |b| {
            let b = b.map_err(|e| bad(&path, None, &format!("unreadable ({e})")))?;
            let rows = normalise(&path, &b, dim, first_row)?;
            first_row += b.num_rows();
            Ok(rows)
        })))
    }

    /// Streams the current corpus's rows.
    pub fn read(
        &self,
        batch_size: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
        self.read_part(Part::Current, batch_size)
    }

    /// Reads both files whole, checking every row; returns the number of rows.
    pub fn check(&self) -> Result<usize> {
        let mut rows = 0;
        for part in [Part::Current, Part::Retained] {
            for b in self.read_part(part, 8192)? {
                rows += b?.num_rows();
            }
        }
        Ok(rows)
    }

    /// Streams the keys `(id, text_hash)` of `part`, batch by batch.
    pub fn read_keys(
        &self,
        part: Part,
        batch_size: usize,
    ) -> Result<impl Iterator<Item = Result<Vec<(String, u64)>>>> {
        Ok(self.read_part(part, batch_size)?.map(|b| {
            let b = b?;
            let ids = batch::strings(&b, tables::col::ID)?;
            let hashes = batch::hashes(&b)?;
            Ok(ids
                .iter()
                .zip(hashes.values().iter())
                .map(|(id, h)| (id.unwrap_or_default().to_string(), *h))
                .collect())
        }))
    }

    /// Starts the next version of `part`; it replaces the current one when committed.
    pub fn writer(&self, part: Part) -> Result<AtomicParquetWriter> {
        AtomicParquetWriter::create(&self.file(part), tables::embeddings_schema(self.dim))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, Float32Builder, Int64Array, ListBuilder, RecordBatch, StringArray,
    };

    use super::*;
    use crate::store::parquet_io::write_parquet;

    /// A store file whose vectors are plain lists, rows as given (`None`: a null vector).
    fn list_store(dir: &Path, rows: &[Option<Vec<f32>>]) -> EmbeddingStore {
        let store = EmbeddingStore::new(dir, "f", 2);
        let mut vectors = ListBuilder::new(Float32Builder::new());
        for row in rows {
            match row {
                Some(v) => {
                    vectors.values().append_slice(v);
                    vectors.append(true);
                }
                None => vectors.append(false),
            }
        }
        let n = rows.len();
        let ids: ArrayRef = Arc::new(StringArray::from_iter_values(
            (0..n).map(|i| format!("d{i}")),
        ));
        let hashes: ArrayRef = Arc::new(Int64Array::from_iter_values((0..n as i64).map(|i| -i)));
        let b = RecordBatch::try_from_iter([
            ("id", ids),
            ("text_hash", hashes),
            ("embedding", Arc::new(vectors.finish()) as ArrayRef),
        ])
        .unwrap();
        write_parquet(store.path(), b.schema(), &[b]).unwrap();
        store
    }

    /// The error of reading the whole store, batches of one row.
    fn read_err(store: &EmbeddingStore) -> String {
        let mut batches = store.read(1).unwrap();
        batches.find_map(|b| b.err()).unwrap().to_string()
    }

    #[test]
    fn plain_lists_and_signed_hashes_read_as_the_canonical_rows() {
        let dir = tempfile::tempdir().unwrap();
        let store = list_store(dir.path(), &[Some(vec![1.0, 2.0]), Some(vec![3.0, 4.0])]);
        let batches: Vec<RecordBatch> = store.read(1).unwrap().map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].schema(), tables::embeddings_schema(2));
        assert_eq!(batch::hashes(&batches[1]).unwrap().value(0), u64::MAX);
        assert_eq!(batch::vectors(&batches[1]).unwrap(), (&[3.0, 4.0][..], 2));
    }

    #[test]
    fn a_row_of_the_wrong_width_or_a_null_vector_names_its_row() {
        let dir = tempfile::tempdir().unwrap();
        let ok = Some(vec![1.0, 2.0]);
        let store = list_store(dir.path(), &[ok.clone(), ok.clone(), Some(vec![1.0])]);
        let path = store.path().display().to_string();
        assert_eq!(
            read_err(&store),
            format!("{path}: row 3: embedding store: a vector of width 1 (expected 2, as this encoder writes); delete the file to rebuild it")
        );
        let store = list_store(dir.path(), &[ok.clone(), None]);
        assert_eq!(
            read_err(&store),
            format!("{path}: row 2: embedding store: null vector; delete the file to rebuild it")
        );
        let store = list_store(dir.path(), &[ok, Some(vec![f32::NAN, 0.0])]);
        assert!(read_err(&store).starts_with(&format!("{path}: row 2: ")));
    }
}
