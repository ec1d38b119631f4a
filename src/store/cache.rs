//! The persistent embedding store behind the `cache` operator.
//!
//! Embeddings are kept per encoder fingerprint, one Parquet file each, keyed inside
//! by `(id, text_hash)`. A row is reusable exactly when its id, the hash of its text
//! and the encoder's weights and settings all match, so a changed text, a retrained
//! encoder or a new setting can never be served a stale vector.

use std::path::{Path, PathBuf};

use arrow::record_batch::RecordBatch;

use crate::error::Result;
use crate::store::batch;
use crate::store::parquet_io::{self, AtomicParquetWriter};
use crate::store::tables;

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

    /// The Parquet file holding the store.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether anything has been stored yet.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// Streams the stored rows (`id`, `text_hash`, `embedding`); nothing when the store is new.
    pub fn read(
        &self,
        batch_size: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
        if !self.exists() {
            return Ok(Box::new(std::iter::empty()));
        }
        let path = self.path.clone();
        let reader = parquet_io::read_batches(&self.path, batch_size)?;
        Ok(Box::new(reader.map(move |b| {
            b.map_err(|e| {
                crate::Error::data(
                    &path,
                    None,
                    format!("embedding store unreadable ({e}); delete it to rebuild"),
                )
            })
        })))
    }

    /// Streams the stored keys `(id, text_hash)`, batch by batch.
    pub fn read_keys(
        &self,
        batch_size: usize,
    ) -> Result<impl Iterator<Item = Result<Vec<(String, u64)>>>> {
        Ok(self.read(batch_size)?.map(|b| {
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

    /// Starts the store's next version; it replaces the current one when committed.
    pub fn writer(&self) -> Result<AtomicParquetWriter> {
        AtomicParquetWriter::create(&self.path, tables::embeddings_schema(self.dim))
    }
}
