//! Parquet in and out, with atomic replacement of outputs.
//!
//! Outputs are never written in place: a writer fills a temporary sibling file and the
//! caller commits it (a rename) only when the whole run has succeeded, so a failed run
//! leaves earlier outputs untouched and readers never see half a file.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Error, Result};

/// Rows per Parquet row group: bounds the writer's memory (it buffers one group).
const ROW_GROUP_ROWS: usize = 8192;

/// A Parquet file being written under a temporary name beside its destination.
pub struct AtomicParquetWriter {
    writer: ArrowWriter<File>,
    pending: PendingFile,
}

impl AtomicParquetWriter {
    /// Starts writing a file that will replace `path` once committed.
    pub fn create(path: &Path, schema: SchemaRef) -> Result<Self> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let pending = PendingFile::new(path);
        let file = File::create(&pending.tmp).map_err(|e| Error::io(&pending.tmp, e))?;
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
            .build();
        let writer = ArrowWriter::try_new(file, schema, Some(props))?;
        Ok(Self { writer, pending })
    }

    /// Appends a batch; its schema must be the writer's.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch)?;
        Ok(())
    }

    /// Closes the file. The result still has to be committed to replace the destination.
    pub fn finish(self) -> Result<PendingFile> {
        self.writer.close()?;
        Ok(self.pending)
    }
}

/// A complete file or folder under a temporary name beside its destination: committing
/// it (one rename, see [`super::commit`]) replaces the destination; dropping it
/// uncommitted deletes it.
#[derive(Debug)]
pub struct PendingFile {
    tmp: PathBuf,
    dest: PathBuf,
    folder: bool,
    committed: bool,
}

/// The temporary sibling of `dest` that this process writes: `.<name>.<pid>.<suffix>`.
pub fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{}.{suffix}", std::process::id()))
}

impl PendingFile {
    /// Reserves a temporary file name beside `dest` (same folder, so the rename is atomic).
    pub fn new(dest: &Path) -> Self {
        Self {
            tmp: sibling(dest, "tmp"),
            dest: dest.to_path_buf(),
            folder: false,
            committed: false,
        }
    }

    /// Creates a temporary folder beside `dest`, to be filled and committed in its place.
    pub fn folder(dest: &Path) -> Result<Self> {
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let tmp = sibling(dest, "tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        }
        std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            folder: true,
            committed: false,
        })
    }

    /// The temporary path being written.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    /// The destination the file replaces on commit.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Whether it is a folder.
    pub fn is_folder(&self) -> bool {
        self.folder
    }

    /// Replaces the destination with the temporary file now (for a single file whose
    /// commit stands alone, such as a store's next version; a run's outputs commit
    /// together through [`super::commit::commit_all`]).
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.tmp, &self.dest).map_err(|e| Error::io(&self.dest, e))?;
        self.committed = true;
        Ok(())
    }

    /// Marks it as moved into place by the caller.
    pub(crate) fn mark_committed(&mut self) {
        self.committed = true;
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = match self.folder {
                true => std::fs::remove_dir_all(&self.tmp),
                false => std::fs::remove_file(&self.tmp),
            };
        }
    }
}

/// Writes `batches` to `path` and commits it at once (for outputs made in one go).
pub fn write_parquet(path: &Path, schema: SchemaRef, batches: &[RecordBatch]) -> Result<()> {
    let mut w = AtomicParquetWriter::create(path, schema)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()?.commit()
}

/// Opens a Parquet file for reading in batches of `batch_size` rows.
pub fn read_batches(path: &Path, batch_size: usize) -> Result<ParquetRecordBatchReader> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::data(path, None, format!("not a readable Parquet file ({e})")))?
        .with_batch_size(batch_size.max(1))
        .build()
        .map_err(|e| Error::data(path, None, format!("not a readable Parquet file ({e})")))?;
    Ok(reader)
}

/// Reads the Arrow schema and row count of a Parquet file without reading its rows.
pub fn read_schema(path: &Path) -> Result<(SchemaRef, usize)> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::data(path, None, format!("not a readable Parquet file ({e})")))?;
    let rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
    Ok((builder.schema().clone(), rows))
}

/// Reads a whole Parquet file (for small tables such as qrels).
pub fn read_all(path: &Path) -> Result<Vec<RecordBatch>> {
    let reader = read_batches(path, 65536)?;
    reader
        .map(|b| b.map_err(|e| Error::data(path, None, format!("read failed ({e})"))))
        .collect()
}
