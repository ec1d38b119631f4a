//! Datasets in the BEIR layout: a corpus, a query set and relevance judgements per split.
//!
//! Two on-disk formats are understood, so that users can train on a BEIR download as it
//! comes and on Parquet conversions of it alike:
//!
//! * Parquet: `corpus.parquet`, `queries.parquet`, `qrels/<split>.parquet`;
//! * BEIR's own: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.
//!
//! Whatever the format, readers yield Arrow batches in the normalised schemas of
//! [`crate::store::tables`], so nothing above this module knows where the rows came from.
//! Readers stream: memory is bounded by the batch size, never by the file. Every problem
//! in a file is reported as one [`Error::Data`] line naming the file and the 1-based row
//! (for Parquet the row index in the file, for JSONL/TSV the line number).

mod checks;
mod jsonl;
mod lines;
mod parquet;
mod tsv;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::store::parquet_io;
use crate::store::tables::{self, col};

use self::jsonl::{parse_json_row, JsonlBatches};
use self::lines::{count_nonblank_lines, Lines};
use self::parquet::{resolve_columns, ParquetBatches};
use self::tsv::{read_tsv_header, TsvBatches};

/// One table of a dataset. Qrels exist per split (`train`, `dev`, `test`, ...), so that
/// variant carries the split name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Table {
    /// The documents that are retrieved.
    Corpus,
    /// The queries that retrieve them.
    Queries,
    /// The relevance judgements of one split, by split name.
    Qrels(String),
}

impl fmt::Display for Table {
    /// `corpus`, `queries` or `qrels/<split>`: short names for progress bars and logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Table::Corpus => f.write_str("corpus"),
            Table::Queries => f.write_str("queries"),
            Table::Qrels(split) => write!(f, "qrels/{split}"),
        }
    }
}

/// The on-disk format of a dataset, once resolved: a dataset is entirely one or the other,
/// so that there is never doubt about which file of a table is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// `corpus.parquet`, `queries.parquet`, `qrels/<split>.parquet`.
    Parquet,
    /// BEIR's own: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv`.
    Jsonl,
}

impl Format {
    fn text_ext(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "jsonl",
        }
    }

    fn qrels_ext(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Jsonl => "tsv",
        }
    }
}

impl fmt::Display for Format {
    /// `parquet` or `jsonl`, the spelling [`FromStr`] accepts, so configs round-trip.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text_ext())
    }
}

impl FromStr for Format {
    type Err = Error;

    /// Parses `parquet` or `jsonl` (any case), as written in pipeline files and flags.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(Format::Parquet),
            "jsonl" => Ok(Format::Jsonl),
            _ => Err(Error::Usage(format!(
                "unknown dataset format `{s}` (expected parquet or jsonl)"
            ))),
        }
    }
}

/// Row counts of a dataset that passed [`Dataset::validate`], for logs and progress bars.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DatasetStats {
    /// Documents in the corpus.
    pub corpus: usize,
    /// Queries.
    pub queries: usize,
    /// Judgements per split, sorted by split name.
    pub qrels: Vec<(String, usize)>,
}

/// A dataset folder in the BEIR layout, with its format resolved.
///
/// Opening only looks at file names; every table is read lazily, so that a command that
/// needs the queries never pays for the corpus.
#[derive(Debug, Clone)]
pub struct Dataset {
    root: PathBuf,
    format: Format,
}

impl Dataset {
    /// Finds the layout under `root`: Parquet (`corpus.parquet`, `queries.parquet`,
    /// `qrels/<split>.parquet`) or BEIR's own (`corpus.jsonl`, `queries.jsonl`,
    /// `qrels/<split>.tsv`). `format: None` = auto-detect from the corpus file; when both
    /// corpus files exist the choice is refused rather than guessed, since one of them may
    /// be stale.
    pub fn open(root: &Path, format: Option<Format>) -> Result<Self> {
        let meta = std::fs::metadata(root).map_err(|e| Error::io(root, e))?;
        if !meta.is_dir() {
            return Err(Error::io(
                root,
                std::io::Error::new(
                    ErrorKind::NotADirectory,
                    "not a directory (expected a dataset folder)",
                ),
            ));
        }
        let format = match format {
            Some(format) => format,
            None => detect(root)?,
        };
        Ok(Self {
            root: root.to_path_buf(),
            format,
        })
    }

    /// The dataset folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The resolved format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The file that holds `table` in this dataset's format (it may not exist).
    pub fn path(&self, table: &Table) -> PathBuf {
        match table {
            Table::Corpus => self.root.join(format!("corpus.{}", self.format.text_ext())),
            Table::Queries => self
                .root
                .join(format!("queries.{}", self.format.text_ext())),
            Table::Qrels(split) => self
                .root
                .join("qrels")
                .join(format!("{split}.{}", self.format.qrels_ext())),
        }
    }

    /// The splits that have qrels in this format, sorted by name: the stems of
    /// `qrels/*.parquet` or `qrels/*.tsv`. Hidden files (such as a writer's temporary
    /// files) are skipped; a missing `qrels/` folder means no splits.
    pub fn splits(&self) -> Result<Vec<String>> {
        let dir = self.root.join("qrels");
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let suffix = format!(".{}", self.format.qrels_ext());
        let mut splits = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with('.') || !entry.path().is_file() {
                continue;
            }
            if let Some(split) = name.strip_suffix(&suffix) {
                if !split.is_empty() {
                    splits.push(split.to_string());
                }
            }
        }
        splits.sort();
        Ok(splits)
    }

    /// Schema-level check without reading rows: file exists, required columns present with
    /// usable types. Lets `freshen check` fail in milliseconds on a wrong file.
    ///
    /// Parquet is checked from its footer. JSONL has no schema, so the first record stands
    /// for it (its fields must be there, with usable JSON types); a TSV file must start
    /// with its header line.
    pub fn check_columns(&self, table: &Table) -> Result<()> {
        let path = self.path(table);
        let kind = Kind::of(table);
        match (self.format, kind) {
            (Format::Parquet, _) => {
                let (schema, _) = parquet_io::read_schema(&path)?;
                resolve_columns(&path, kind, &schema).map(|_| ())
            }
            (Format::Jsonl, Kind::Qrels) => {
                let mut lines = Lines::open(&path)?;
                read_tsv_header(&mut lines)
            }
            (Format::Jsonl, kind) => {
                let mut lines = Lines::open(&path)?;
                let Some((line, text)) = lines.next_nonblank()? else {
                    return Ok(());
                };
                let parsed = parse_json_row(text, kind);
                parsed
                    .map(|_| ())
                    .map_err(|m| Error::data(&path, Some(line), m))
            }
        }
    }

    /// Row count (Parquet: metadata; JSONL/TSV: count non-blank lines, less the TSV
    /// header) — used for progress bars, so it reads no values and checks nothing.
    pub fn row_count(&self, table: &Table) -> Result<usize> {
        let path = self.path(table);
        match (self.format, Kind::of(table)) {
            (Format::Parquet, _) => Ok(parquet_io::read_schema(&path)?.1),
            (Format::Jsonl, Kind::Qrels) => Ok(count_nonblank_lines(&path)?.saturating_sub(1)),
            (Format::Jsonl, _) => count_nonblank_lines(&path),
        }
    }

    /// Streams the table as RecordBatches of at most `batch_size` rows (0 counts as 1) in
    /// the normalised schema of `crate::store::tables` (corpus_schema / queries_schema /
    /// qrels_schema), whatever the file format.
    ///
    /// Column problems are reported here, before the first batch; row problems (nulls,
    /// empty texts, bad JSON, bad scores) by the batch that holds them, after which the
    /// iterator ends. Checks across rows (duplicates, unknown ids) are [`Self::validate`]'s.
    pub fn read(
        &self,
        table: &Table,
        batch_size: usize,
    ) -> Result<Box<dyn Iterator<Item = Result<RecordBatch>> + Send>> {
        let batches = self.numbered(table, batch_size)?;
        Ok(Box::new(batches.map(|b| b.map(|n| n.batch))))
    }

    /// Full scan of every table: nulls, empty texts, duplicate ids, qrels naming unknown
    /// query or corpus ids, bad score values. Returns counts. Memory: the id sets only
    /// (each id with the row it was first seen at, to point at both rows of a
    /// duplicate), never the texts.
    pub fn validate(&self) -> Result<DatasetStats> {
        let corpus = self.collect_ids(&Table::Corpus)?;
        let queries = self.collect_ids(&Table::Queries)?;
        let mut qrels = Vec::new();
        for split in self.splits()? {
            let count = self.check_qrels(&split, &queries, &corpus)?;
            qrels.push((split, count));
        }
        Ok(DatasetStats {
            corpus: corpus.len(),
            queries: queries.len(),
            qrels,
        })
    }

    /// The batches of `table`, each with the file row of each of its rows.
    fn numbered(&self, table: &Table, batch_size: usize) -> Result<NumberedBatches> {
        let path = self.path(table);
        let kind = Kind::of(table);
        let batch_size = batch_size.max(1);
        Ok(match (self.format, kind) {
            (Format::Parquet, _) => Box::new(ParquetBatches::open(path, kind, batch_size)?),
            (Format::Jsonl, Kind::Qrels) => Box::new(TsvBatches::open(path, batch_size)?),
            (Format::Jsonl, _) => Box::new(JsonlBatches::open(path, kind, batch_size)?),
        })
    }
}

/// Picks the format from which corpus file exists.
fn detect(root: &Path) -> Result<Format> {
    let parquet = root.join("corpus.parquet").is_file();
    let jsonl = root.join("corpus.jsonl").is_file();
    match (parquet, jsonl) {
        (true, false) => Ok(Format::Parquet),
        (false, true) => Ok(Format::Jsonl),
        (true, true) => Err(Error::data(
            root,
            None,
            "both corpus.parquet and corpus.jsonl exist (expected one; set the format explicitly)",
        )),
        (false, false) => Err(Error::data(
            root,
            None,
            "no dataset found (expected corpus.parquet or corpus.jsonl)",
        )),
    }
}

/// The three shapes of table, split names aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Corpus,
    Queries,
    Qrels,
}

impl Kind {
    fn of(table: &Table) -> Self {
        match table {
            Table::Corpus => Kind::Corpus,
            Table::Queries => Kind::Queries,
            Table::Qrels(_) => Kind::Qrels,
        }
    }

    fn schema(self) -> SchemaRef {
        match self {
            Kind::Corpus => tables::corpus_schema(),
            Kind::Queries => tables::queries_schema(),
            Kind::Qrels => tables::qrels_schema(),
        }
    }

    /// Columns of the Parquet form: name, wanted type, required.
    fn columns(self) -> &'static [(&'static str, Want, bool)] {
        match self {
            Kind::Corpus => &[
                (col::ID, Want::String, true),
                (col::TITLE, Want::String, false),
                (col::TEXT, Want::String, true),
            ],
            Kind::Queries => &[
                (col::ID, Want::String, true),
                (col::TEXT, Want::String, true),
            ],
            Kind::Qrels => &[
                (col::QUERY_ID, Want::String, true),
                (col::CORPUS_ID, Want::String, true),
                (col::SCORE, Want::Integer, true),
            ],
        }
    }

    /// `expected columns ...` / `expected fields ...`, for messages.
    fn expected_columns(self) -> String {
        let names: Vec<&str> = self.columns().iter().map(|(n, _, _)| *n).collect();
        format!("expected columns {}", names.join(", "))
    }

    fn expected_fields(self) -> &'static str {
        match self {
            Kind::Corpus => "expected fields _id, title, text",
            Kind::Queries => "expected fields _id, text",
            Kind::Qrels => "expected fields query-id, corpus-id, score",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    String,
    Integer,
}

/// A normalised batch with the 1-based file row of each of its rows, so that checks
/// across batches can point at the right row (JSONL line numbers skip blank lines).
struct Numbered {
    batch: RecordBatch,
    rows: Vec<usize>,
}

type NumberedBatches = Box<dyn Iterator<Item = Result<Numbered>> + Send>;
