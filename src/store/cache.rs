//! The persistent embedding store behind the `cache` operator.
//!
//! Embeddings are kept per encoder fingerprint, one Parquet file each, keyed inside
//! by `(id, text_hash)`. A row is reusable exactly when its id, the hash of its text
//! and the encoder's weights and settings all match, so a changed text, a retrained
//! encoder or a new setting can never be served a stale vector.

use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::store::batch;
use crate::store::parquet_io::{self, AtomicParquetWriter};
use crate::store::tables;

/// A store file that cannot be used: the file, the 1-based row, and how to recover.
fn bad(path: &Path, row: Option<usize>, message: &str) -> Error {
    Error::data(
        path,
        row,
        format!("embedding store: {message}; delete the file to rebuild it"),
    )
}

/// Checks one batch of a store file against the schema this encoder writes, and that
/// every vector is finite (a NaN served from a cache poisons every search).
fn check_rows(path: &Path, b: &RecordBatch, dim: usize, first_row: usize) -> Result<()> {
    let want = tables::embeddings_schema(dim);
    for field in want.fields() {
        match b.schema().field_with_name(field.name()) {
            Ok(f) if f.data_type() == field.data_type() => {}
            Ok(f) => {
                return Err(bad(
                    path,
                    None,
                    &format!(
                        "column `{}` is {} (expected {}: vectors of width {dim}, as this encoder writes)",
                        field.name(),
                        f.data_type(),
                        field.data_type()
                    ),
                ))
            }
            Err(_) => {
                return Err(bad(
                    path,
                    None,
                    &format!("no column `{}` (expected id, text_hash, embedding)", field.name()),
                ))
            }
        }
    }
    let (values, d) = batch::vectors(b)?;
    if let Some(i) = values.iter().position(|v| !v.is_finite()) {
        let row = first_row + i / d.max(1) + 1;
        return Err(bad(
            path,
            Some(row),
            &format!("a vector holds {}", values[i]),
        ));
    }
    Ok(())
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
    /// none. Every batch is checked: the columns and the width this encoder writes, and
    /// finite vectors; a problem names the file and row.
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
            check_rows(&path, &b, dim, first_row)?;
            first_row += b.num_rows();
            Ok(b)
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
