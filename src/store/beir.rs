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

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int32Builder, StringArray, StringBuilder,
};
use arrow::compute::cast;
use arrow::datatypes::{
    DataType, Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::parquet_io;
use crate::store::tables::{self, col};

/// Rows per batch when [`Dataset::validate`] scans the tables: large enough to amortise the
/// per-batch work, small enough that only the id sets dominate memory.
const VALIDATE_BATCH: usize = 8192;

/// The header line BEIR writes at the top of every qrels TSV file.
const TSV_HEADER: [&str; 3] = ["query-id", "corpus-id", "score"];

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
            _ => Err(Error::Other(format!(
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
            let table = Table::Qrels(split.clone());
            let path = self.path(&table);
            let mut count = 0;
            for item in self.numbered(&table, VALIDATE_BATCH)? {
                let Numbered { batch, rows } = item?;
                let query_ids = batch.column(0).as_string::<i32>();
                let corpus_ids = batch.column(1).as_string::<i32>();
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
                }
                count += rows.len();
            }
            qrels.push((split, count));
        }
        Ok(DatasetStats {
            corpus: corpus.len(),
            queries: queries.len(),
            qrels,
        })
    }

    /// Reads a corpus or query table and keeps its ids, with the row each was first seen
    /// at; a second occurrence is an error.
    fn collect_ids(&self, table: &Table) -> Result<HashMap<Box<str>, usize>> {
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

// ---------------------------------------------------------------------------------------
// Row checks shared by all formats: each returns the message of the problem, if any.

fn check_id(what: &str, id: Option<&str>) -> Result<(), String> {
    match id {
        None => Err(format!("null {what}")),
        Some(s) if s.trim().is_empty() => Err(format!("empty {what}")),
        Some(_) => Ok(()),
    }
}

/// A query needs a text; a document needs a text or, failing that, a title (BEIR corpora
/// such as TREC-COVID have documents with a title and no text).
fn check_text(kind: Kind, text: Option<&str>, title: Option<&str>) -> Result<(), String> {
    match text {
        None => Err("null text".to_string()),
        Some(t) if t.trim().is_empty() => match kind {
            Kind::Corpus if title.is_some_and(|t| !t.trim().is_empty()) => Ok(()),
            Kind::Corpus => Err("empty text (and no title)".to_string()),
            _ => Err("empty text".to_string()),
        },
        Some(_) => Ok(()),
    }
}

fn parse_score(s: &str) -> Result<i32, String> {
    let t = s.trim();
    t.parse::<i32>().map_err(|e| match e.kind() {
        std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow => {
            format!("score `{}` is out of the int32 range", shown(t))
        }
        _ => format!("score `{}` is not an integer", shown(t)),
    })
}

/// A value as shown inside a one-line message: control characters escaped, long values cut.
fn shown(s: &str) -> String {
    const MAX: usize = 80;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Parquet.

fn open_parquet(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| Error::data(path, None, format!("not a readable Parquet file ({e})")))
}

/// Checks the columns of a Parquet file's schema; returns the root indices to read.
fn resolve_columns(path: &Path, kind: Kind, schema: &SchemaRef) -> Result<Vec<usize>> {
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
            Want::String => (is_string(dt), "a string"),
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

/// String types that cast to Utf8 without loss. `Null` is what pandas writes for a column
/// of nothing but `None` (typically an unused title); it reads as all nulls.
fn is_string(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        DataType::Dictionary(_, values) => is_string(values),
        _ => false,
    }
}

struct ParquetBatches {
    path: PathBuf,
    kind: Kind,
    reader: ParquetRecordBatchReader,
    rows_read: usize,
    done: bool,
}

impl ParquetBatches {
    fn open(path: PathBuf, kind: Kind, batch_size: usize) -> Result<Self> {
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

// ---------------------------------------------------------------------------------------
// Line-based formats (JSONL, TSV).

/// Reads a text file one line at a time, reusing one buffer, counting line numbers.
struct Lines {
    path: PathBuf,
    reader: BufReader<File>,
    buf: String,
    line: usize,
}

impl Lines {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            buf: String::new(),
            line: 0,
        })
    }

    /// The next line with something other than whitespace, without its line ending (and
    /// without a byte-order mark on line 1), with its 1-based line number.
    fn next_nonblank(&mut self) -> Result<Option<(usize, &str)>> {
        let (start, end) = loop {
            self.buf.clear();
            match self.reader.read_line(&mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(_) => self.line += 1,
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    return Err(Error::data(
                        &self.path,
                        Some(self.line + 1),
                        "invalid UTF-8 (expected UTF-8 text)",
                    ))
                }
                Err(e) => return Err(Error::io(&self.path, e)),
            }
            let mut s = self.buf.as_str();
            let start = if self.line == 1 && s.starts_with('\u{feff}') {
                '\u{feff}'.len_utf8()
            } else {
                0
            };
            s = &s[start..];
            let s = s.strip_suffix('\n').unwrap_or(s);
            let s = s.strip_suffix('\r').unwrap_or(s);
            if !s.trim().is_empty() {
                break (start, start + s.len());
            }
        };
        Ok(Some((self.line, &self.buf[start..end])))
    }
}

/// Counts lines with something other than whitespace, in fixed-size chunks so that a
/// huge line costs no memory.
fn count_nonblank_lines(path: &Path) -> Result<usize> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut chunk = vec![0u8; 1 << 16];
    let (mut count, mut nonblank) = (0, false);
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        for &b in &chunk[..n] {
            if b == b'\n' {
                count += usize::from(nonblank);
                nonblank = false;
            } else if !b.is_ascii_whitespace() {
                nonblank = true;
            }
        }
    }
    Ok(count + usize::from(nonblank))
}

/// The fields of one JSONL record; `None` is JSON null (or an absent optional title).
struct JsonRow {
    id: Option<String>,
    title: Option<String>,
    text: Option<String>,
}

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
fn parse_json_row(line: &str, kind: Kind) -> Result<JsonRow, String> {
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

struct JsonlBatches {
    lines: Lines,
    kind: Kind,
    batch_size: usize,
    done: bool,
}

impl JsonlBatches {
    fn open(path: PathBuf, kind: Kind, batch_size: usize) -> Result<Self> {
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

/// Reads and checks the header line of a qrels TSV file. `_` for `-` and any case are
/// accepted; anything else (a missing header, a data row in its place) is refused rather
/// than skipped, since skipping would silently lose a judgement.
fn read_tsv_header(lines: &mut Lines) -> Result<()> {
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

struct TsvBatches {
    lines: Lines,
    batch_size: usize,
    done: bool,
}

impl TsvBatches {
    fn open(path: PathBuf, batch_size: usize) -> Result<Self> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::parquet_io::write_parquet;
    use arrow::array::{Float32Array, Int64Array, LargeStringArray, NullArray, UInt8Array};
    use tempfile::TempDir;

    // ----- helpers -------------------------------------------------------------------

    fn strs(values: &[&str]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    fn opt_strs(values: &[Option<&str>]) -> ArrayRef {
        Arc::new(StringArray::from(values.to_vec()))
    }

    fn ints(values: &[i32]) -> ArrayRef {
        Arc::new(Int32Array::from(values.to_vec()))
    }

    /// Writes one batch whose (nullable) schema is inferred from the columns.
    fn write_pq(path: &Path, columns: Vec<(&str, ArrayRef)>) {
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        write_parquet(path, batch.schema(), &[batch]).unwrap();
    }

    fn write_text(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// The rows every well-formed test dataset holds, as strings.
    fn expected_corpus() -> Vec<Vec<String>> {
        rows_of(&[
            &["d1", "Title one", "text one"],
            &["d2", "", "text two"],
            &["d3", "Title three", "text three"],
            &["5", "", "text five"],
            &["d6", "Title six", "text six"],
        ])
    }

    fn expected_queries() -> Vec<Vec<String>> {
        rows_of(&[
            &["q1", "query one"],
            &["q2", "query two"],
            &["7", "query seven"],
        ])
    }

    fn expected_test_qrels() -> Vec<Vec<String>> {
        rows_of(&[&["q1", "d1", "1"], &["q1", "d2", "0"], &["q2", "d3", "2"]])
    }

    fn expected_dev_qrels() -> Vec<Vec<String>> {
        rows_of(&[&["7", "5", "1"]])
    }

    fn rows_of(rows: &[&[&str]]) -> Vec<Vec<String>> {
        rows.iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    fn parquet_dataset() -> TempDir {
        let dir = TempDir::new().unwrap();
        let root = dir.path();
        write_pq(
            &root.join("corpus.parquet"),
            vec![
                ("id", strs(&["d1", "d2", "d3", "5", "d6"])),
                (
                    "title",
                    strs(&["Title one", "", "Title three", "", "Title six"]),
                ),
                (
                    "text",
                    strs(&[
                        "text one",
                        "text two",
                        "text three",
                        "text five",
                        "text six",
                    ]),
                ),
            ],
        );
        write_pq(
            &root.join("queries.parquet"),
            vec![
                ("id", strs(&["q1", "q2", "7"])),
                ("text", strs(&["query one", "query two", "query seven"])),
            ],
        );
        write_pq(
            &root.join("qrels/test.parquet"),
            vec![
                ("query_id", strs(&["q1", "q1", "q2"])),
                ("corpus_id", strs(&["d1", "d2", "d3"])),
                ("score", ints(&[1, 0, 2])),
            ],
        );
        write_pq(
            &root.join("qrels/dev.parquet"),
            vec![
                ("query_id", strs(&["7"])),
                ("corpus_id", strs(&["5"])),
                ("score", ints(&[1])),
            ],
        );
        dir
    }

    /// The same rows in BEIR's layout, using what BEIR files do in the wild: numeric ids,
    /// `id` for `_id`, absent and null titles, extra fields, blank lines, CRLF endings.
    fn jsonl_dataset() -> TempDir {
        let dir = TempDir::new().unwrap();
        let root = dir.path();
        write_text(
            &root.join("corpus.jsonl"),
            concat!(
                "{\"_id\": \"d1\", \"title\": \"Title one\", \"text\": \"text one\"}\n",
                "{\"_id\": \"d2\", \"text\": \"text two\", \"metadata\": {\"a\": [1]}}\r\n",
                "\n",
                "{\"id\": \"d3\", \"title\": \"Title three\", \"text\": \"text three\"}\n",
                "{\"_id\": 5, \"title\": null, \"text\": \"text five\"}\n",
                "{\"_id\": \"d6\", \"title\": \"Title six\", \"text\": \"text six\"}",
            ),
        );
        write_text(
            &root.join("queries.jsonl"),
            concat!(
                "{\"_id\": \"q1\", \"text\": \"query one\", \"metadata\": {}}\n",
                "{\"_id\": \"q2\", \"text\": \"query two\"}\n",
                "{\"_id\": 7, \"text\": \"query seven\"}\n",
                "\n",
            ),
        );
        write_text(
            &root.join("qrels/test.tsv"),
            "query-id\tcorpus-id\tscore\r\nq1\td1\t1\r\nq1\td2\t0\r\nq2\td3\t2\r\n",
        );
        write_text(
            &root.join("qrels/dev.tsv"),
            "query-id\tcorpus-id\tscore\n7\t5\t1\n",
        );
        dir
    }

    /// Reads a table: the size of each batch and all rows as strings. Checks every batch
    /// has the normalised schema.
    fn collect(ds: &Dataset, table: &Table, batch_size: usize) -> (Vec<usize>, Vec<Vec<String>>) {
        let schema = Kind::of(table).schema();
        let mut sizes = Vec::new();
        let mut rows = Vec::new();
        for batch in ds.read(table, batch_size).unwrap() {
            let batch = batch.unwrap();
            assert_eq!(batch.schema(), schema);
            sizes.push(batch.num_rows());
            for i in 0..batch.num_rows() {
                let row = batch
                    .columns()
                    .iter()
                    .map(|c| match c.data_type() {
                        DataType::Utf8 => c.as_string::<i32>().value(i).to_string(),
                        DataType::Int32 => c.as_primitive::<Int32Type>().value(i).to_string(),
                        dt => panic!("unexpected type {dt}"),
                    })
                    .collect();
                rows.push(row);
            }
        }
        (sizes, rows)
    }

    /// The first error of reading a whole table, whether at open or in a batch.
    fn read_err(ds: &Dataset, table: &Table) -> Error {
        match ds.read(table, 2) {
            Err(e) => e,
            Ok(batches) => batches
                .filter_map(|b| b.err())
                .next()
                .expect("expected a read error"),
        }
    }

    fn some_err<T>(result: Result<T>) -> Error {
        match result {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }

    /// Asserts `e` is a data error on `path` at `row` and prints exactly `message`.
    fn assert_data(e: &Error, path: &Path, row: Option<usize>, message: &str) {
        let expected = match row {
            Some(row) => format!("{}: row {row}: {message}", path.display()),
            None => format!("{}: {message}", path.display()),
        };
        assert_eq!(e.to_string(), expected);
        match e {
            Error::Data { file, row: r, .. } => {
                assert_eq!(file, path);
                assert_eq!(*r, row);
            }
            other => panic!("expected a data error, got {other:?}"),
        }
        assert!(!e.to_string().contains('\n'));
    }

    fn qrels(split: &str) -> Table {
        Table::Qrels(split.to_string())
    }

    // ----- reading -------------------------------------------------------------------

    #[test]
    fn parquet_dataset_reads_back_normalised() {
        let dir = parquet_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        assert_eq!(ds.format(), Format::Parquet);
        assert_eq!(ds.root(), dir.path());
        assert_eq!(
            ds.path(&qrels("test")),
            dir.path().join("qrels/test.parquet")
        );
        assert_eq!(ds.splits().unwrap(), vec!["dev", "test"]);
        for table in [Table::Corpus, Table::Queries, qrels("test"), qrels("dev")] {
            ds.check_columns(&table).unwrap();
        }
        assert_eq!(collect(&ds, &Table::Corpus, 100).1, expected_corpus());
        assert_eq!(collect(&ds, &Table::Queries, 100).1, expected_queries());
        assert_eq!(collect(&ds, &qrels("test"), 100).1, expected_test_qrels());
        assert_eq!(collect(&ds, &qrels("dev"), 100).1, expected_dev_qrels());
        assert_eq!(ds.row_count(&Table::Corpus).unwrap(), 5);
        assert_eq!(ds.row_count(&qrels("test")).unwrap(), 3);
        let stats = ds.validate().unwrap();
        assert_eq!(
            stats,
            DatasetStats {
                corpus: 5,
                queries: 3,
                qrels: vec![("dev".to_string(), 1), ("test".to_string(), 3)],
            }
        );
    }

    #[test]
    fn jsonl_dataset_reads_the_same_rows_as_parquet() {
        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        assert_eq!(ds.format(), Format::Jsonl);
        assert_eq!(ds.path(&Table::Corpus), dir.path().join("corpus.jsonl"));
        assert_eq!(ds.path(&qrels("dev")), dir.path().join("qrels/dev.tsv"));
        assert_eq!(ds.splits().unwrap(), vec!["dev", "test"]);
        for table in [Table::Corpus, Table::Queries, qrels("test"), qrels("dev")] {
            ds.check_columns(&table).unwrap();
        }
        let pq_dir = parquet_dataset();
        let pq = Dataset::open(pq_dir.path(), None).unwrap();
        for table in [Table::Corpus, Table::Queries, qrels("test"), qrels("dev")] {
            assert_eq!(
                collect(&ds, &table, 100).1,
                collect(&pq, &table, 100).1,
                "{table}"
            );
        }
        assert_eq!(collect(&ds, &Table::Corpus, 100).1, expected_corpus());
        assert_eq!(collect(&ds, &qrels("test"), 100).1, expected_test_qrels());
        assert_eq!(ds.validate().unwrap(), pq.validate().unwrap());
    }

    #[test]
    fn small_batches_split_rows_without_losing_any() {
        for dir in [parquet_dataset(), jsonl_dataset()] {
            let ds = Dataset::open(dir.path(), None).unwrap();
            let (sizes, rows) = collect(&ds, &Table::Corpus, 2);
            assert_eq!(sizes, vec![2, 2, 1], "{:?}", ds.format());
            assert_eq!(rows, collect(&ds, &Table::Corpus, 100).1);
            assert_eq!(rows, expected_corpus());
            let (sizes, rows) = collect(&ds, &qrels("test"), 2);
            assert_eq!(sizes, vec![2, 1]);
            assert_eq!(rows, expected_test_qrels());
            let (sizes, _) = collect(&ds, &Table::Queries, 0);
            assert_eq!(sizes, vec![1, 1, 1], "batch size 0 counts as 1");
        }
    }

    #[test]
    fn parquet_accepts_large_utf8_optional_title_extra_columns_and_any_integer_score() {
        let dir = TempDir::new().unwrap();
        let root = dir.path();
        let large = |v: &[&str]| -> ArrayRef { Arc::new(LargeStringArray::from(v.to_vec())) };
        write_pq(
            &root.join("corpus.parquet"),
            vec![
                (
                    "extra",
                    Arc::new(Float32Array::from(vec![1.0, 2.0])) as ArrayRef,
                ),
                ("text", large(&["text one", "text two"])),
                ("title", opt_strs(&[None, Some("Title two")])),
                ("id", large(&["d1", "d2"])),
            ],
        );
        write_pq(
            &root.join("queries.parquet"),
            vec![("id", strs(&["q1"])), ("text", large(&["query one"]))],
        );
        write_pq(
            &root.join("qrels/test.parquet"),
            vec![
                ("score", Arc::new(Int64Array::from(vec![3, -1])) as ArrayRef),
                ("corpus_id", large(&["d1", "d2"])),
                ("query_id", strs(&["q1", "q1"])),
            ],
        );
        write_pq(
            &root.join("qrels/dev.parquet"),
            vec![
                ("query_id", strs(&["q1"])),
                ("corpus_id", strs(&["d2"])),
                ("score", Arc::new(UInt8Array::from(vec![200])) as ArrayRef),
            ],
        );
        let ds = Dataset::open(root, None).unwrap();
        assert_eq!(
            collect(&ds, &Table::Corpus, 10).1,
            rows_of(&[&["d1", "", "text one"], &["d2", "Title two", "text two"]])
        );
        assert_eq!(
            collect(&ds, &qrels("test"), 10).1,
            rows_of(&[&["q1", "d1", "3"], &["q1", "d2", "-1"]])
        );
        assert_eq!(
            collect(&ds, &qrels("dev"), 10).1,
            rows_of(&[&["q1", "d2", "200"]])
        );

        // A title column of type Null (pandas' all-`None` column) is all empty titles.
        let batch = RecordBatch::try_from_iter_with_nullable(vec![
            ("id", strs(&["d1", "d2"]), false),
            ("title", Arc::new(NullArray::new(2)) as ArrayRef, true),
            ("text", strs(&["a", "b"]), false),
        ])
        .unwrap();
        write_parquet(&root.join("corpus.parquet"), batch.schema(), &[batch]).unwrap();
        assert_eq!(
            collect(&ds, &Table::Corpus, 10).1,
            rows_of(&[&["d1", "", "a"], &["d2", "", "b"]])
        );

        // Without a title column every title is empty.
        write_pq(
            &root.join("corpus.parquet"),
            vec![("id", strs(&["d1", "d2"])), ("text", strs(&["a", "b"]))],
        );
        ds.check_columns(&Table::Corpus).unwrap();
        assert_eq!(
            collect(&ds, &Table::Corpus, 10).1,
            rows_of(&[&["d1", "", "a"], &["d2", "", "b"]])
        );
        assert_eq!(ds.validate().unwrap().corpus, 2);
    }

    #[test]
    fn row_count_counts_records_not_lines() {
        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        // corpus.jsonl: 6 lines, one blank, no final newline; queries.jsonl ends in a blank line.
        assert_eq!(ds.row_count(&Table::Corpus).unwrap(), 5);
        assert_eq!(ds.row_count(&Table::Queries).unwrap(), 3);
        assert_eq!(ds.row_count(&qrels("test")).unwrap(), 3);
        assert_eq!(ds.row_count(&qrels("dev")).unwrap(), 1);
    }

    #[test]
    fn splits_list_only_qrels_files_of_the_format() {
        let dir = jsonl_dataset();
        let root = dir.path();
        write_text(&root.join("qrels/notes.txt"), "x");
        write_text(&root.join("qrels/.train.tsv"), "x");
        write_text(&root.join("qrels/train.parquet"), "x");
        std::fs::create_dir_all(root.join("qrels/sub.tsv")).unwrap();
        let ds = Dataset::open(root, None).unwrap();
        assert_eq!(ds.splits().unwrap(), vec!["dev", "test"]);
        std::fs::remove_dir_all(root.join("qrels")).unwrap();
        assert_eq!(ds.splits().unwrap(), Vec::<String>::new());
        assert_eq!(ds.validate().unwrap().qrels, vec![]);
    }

    #[test]
    fn open_detects_the_format_or_says_what_it_expected() {
        let dir = TempDir::new().unwrap();
        let root = dir.path();
        let e = some_err(Dataset::open(root, None));
        assert_data(
            &e,
            root,
            None,
            "no dataset found (expected corpus.parquet or corpus.jsonl)",
        );
        write_text(&root.join("corpus.jsonl"), "");
        assert_eq!(Dataset::open(root, None).unwrap().format(), Format::Jsonl);
        write_text(&root.join("corpus.parquet"), "");
        let e = some_err(Dataset::open(root, None));
        assert_data(
            &e,
            root,
            None,
            "both corpus.parquet and corpus.jsonl exist (expected one; set the format explicitly)",
        );
        let ds = Dataset::open(root, Some(Format::Jsonl)).unwrap();
        assert_eq!(ds.format(), Format::Jsonl);
        assert!(matches!(
            Dataset::open(&root.join("nope"), None),
            Err(Error::Io { .. })
        ));
        assert!(matches!(
            Dataset::open(&root.join("corpus.jsonl"), None),
            Err(Error::Io { .. })
        ));
        assert_eq!("JSONL".parse::<Format>().unwrap(), Format::Jsonl);
        assert_eq!(
            Format::Parquet.to_string().parse::<Format>().unwrap(),
            Format::Parquet
        );
        assert!("csv".parse::<Format>().is_err());
    }

    // ----- errors, one test per class ------------------------------------------------

    #[test]
    fn missing_file_is_an_io_error() {
        for dir in [parquet_dataset(), jsonl_dataset()] {
            let ds = Dataset::open(dir.path(), None).unwrap();
            let path = ds.path(&Table::Queries);
            std::fs::remove_file(&path).unwrap();
            for e in [
                read_err(&ds, &Table::Queries),
                some_err(ds.check_columns(&Table::Queries)),
                some_err(ds.row_count(&Table::Queries)),
                some_err(ds.validate()),
                read_err(&ds, &qrels("train")),
            ] {
                match &e {
                    Error::Io { path: p, source } => {
                        assert!(p == &path || p == &ds.path(&qrels("train")), "{p:?}");
                        assert_eq!(source.kind(), ErrorKind::NotFound);
                    }
                    other => panic!("expected an I/O error, got {other:?}"),
                }
            }
        }
    }

    #[test]
    fn missing_column_is_reported_with_the_expected_columns() {
        let dir = parquet_dataset();
        let root = dir.path();
        let ds = Dataset::open(root, None).unwrap();
        let path = ds.path(&Table::Corpus);
        write_pq(&path, vec![("id", strs(&["d1"])), ("title", strs(&["t"]))]);
        let msg = "missing column `text` (expected columns id, title, text)";
        assert_data(
            &some_err(ds.check_columns(&Table::Corpus)),
            &path,
            None,
            msg,
        );
        assert_data(&read_err(&ds, &Table::Corpus), &path, None, msg);
        assert_data(&some_err(ds.validate()), &path, None, msg);

        let path = ds.path(&qrels("test"));
        write_pq(
            &path,
            vec![("query_id", strs(&["q1"])), ("corpus_id", strs(&["d1"]))],
        );
        let msg = "missing column `score` (expected columns query_id, corpus_id, score)";
        assert_data(
            &some_err(ds.check_columns(&qrels("test"))),
            &path,
            None,
            msg,
        );
    }

    #[test]
    fn jsonl_missing_field_is_reported_with_its_line() {
        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Corpus);
        write_text(
            &path,
            "{\"_id\": \"d1\", \"text\": \"a\"}\n{\"_id\": \"d2\", \"body\": \"b\"}\n",
        );
        ds.check_columns(&Table::Corpus).unwrap();
        let e = read_err(&ds, &Table::Corpus);
        assert_data(
            &e,
            &path,
            Some(2),
            "missing field `text` (expected fields _id, title, text)",
        );
        let path = ds.path(&Table::Queries);
        write_text(&path, "\n{\"qid\": \"q1\", \"text\": \"a\"}\n");
        let e = some_err(ds.check_columns(&Table::Queries));
        assert_data(
            &e,
            &path,
            Some(2),
            "missing field `_id` (expected fields _id, text)",
        );
    }

    #[test]
    fn wrong_column_type_is_reported() {
        let dir = parquet_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Queries);
        write_pq(
            &path,
            vec![
                ("id", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
                ("text", strs(&["a"])),
            ],
        );
        let msg = "column `id` has type Int64 (expected a string)";
        assert_data(
            &some_err(ds.check_columns(&Table::Queries)),
            &path,
            None,
            msg,
        );
        assert_data(&read_err(&ds, &Table::Queries), &path, None, msg);

        let path = ds.path(&qrels("dev"));
        write_pq(
            &path,
            vec![
                ("query_id", strs(&["q1"])),
                ("corpus_id", strs(&["d1"])),
                ("score", Arc::new(Float32Array::from(vec![1.0])) as ArrayRef),
            ],
        );
        let msg = "column `score` has type Float32 (expected an integer)";
        assert_data(&read_err(&ds, &qrels("dev")), &path, None, msg);

        // In JSONL, the type of a field is checked per record.
        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Corpus);
        write_text(&path, "{\"_id\": \"d1\", \"title\": 3, \"text\": \"a\"}\n");
        let e = some_err(ds.check_columns(&Table::Corpus));
        assert_data(
            &e,
            &path,
            Some(1),
            "`title` is a number (expected a string)",
        );
        write_text(&path, "{\"_id\": [1], \"text\": \"a\"}\n");
        let e = read_err(&ds, &Table::Corpus);
        assert_data(
            &e,
            &path,
            Some(1),
            "`_id` is an array (expected a string or a number)",
        );
    }

    #[test]
    fn null_text_is_reported_with_its_row() {
        let dir = parquet_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Corpus);
        write_pq(
            &path,
            vec![
                ("id", strs(&["d1", "d2", "d3"])),
                ("text", opt_strs(&[Some("a"), Some("b"), None])),
            ],
        );
        // Row 3 lies in the second batch of two rows: rows count across batches.
        assert_data(&read_err(&ds, &Table::Corpus), &path, Some(3), "null text");
        assert_data(&some_err(ds.validate()), &path, Some(3), "null text");

        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Queries);
        write_text(
            &path,
            "{\"_id\": \"q1\", \"text\": \"a\"}\n\n{\"_id\": \"q2\", \"text\": null}\n",
        );
        assert_data(&read_err(&ds, &Table::Queries), &path, Some(3), "null text");
    }

    #[test]
    fn empty_text_is_reported_with_its_row() {
        let dir = parquet_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Queries);
        write_pq(
            &path,
            vec![
                ("id", strs(&["q1", "q2", "q3"])),
                ("text", strs(&["a", "b", " \t "])),
            ],
        );
        assert_data(
            &read_err(&ds, &Table::Queries),
            &path,
            Some(3),
            "empty text",
        );

        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Corpus);
        // A document with a title and no text is usable (BEIR's TREC-COVID has many);
        // one with neither is not.
        write_text(
            &path,
            concat!(
                "{\"_id\": \"d1\", \"title\": \"Only a title\", \"text\": \"\"}\n",
                "{\"_id\": \"d2\", \"title\": \" \", \"text\": \"  \"}\n",
            ),
        );
        let e = read_err(&ds, &Table::Corpus);
        assert_data(&e, &path, Some(2), "empty text (and no title)");
    }

    #[test]
    fn null_id_is_reported_with_its_row() {
        let dir = parquet_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Corpus);
        write_pq(
            &path,
            vec![
                ("id", opt_strs(&[Some("d1"), None])),
                ("text", strs(&["a", "b"])),
            ],
        );
        assert_data(&read_err(&ds, &Table::Corpus), &path, Some(2), "null id");

        let path = ds.path(&qrels("test"));
        write_pq(
            &path,
            vec![
                ("query_id", opt_strs(&[None])),
                ("corpus_id", strs(&["d1"])),
                ("score", ints(&[1])),
            ],
        );
        assert_data(
            &read_err(&ds, &qrels("test")),
            &path,
            Some(1),
            "null query id",
        );

        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Queries);
        write_text(&path, "{\"_id\": null, \"text\": \"a\"}\n");
        assert_data(&read_err(&ds, &Table::Queries), &path, Some(1), "null id");
        let path = ds.path(&qrels("dev"));
        write_text(&path, "query-id\tcorpus-id\tscore\n7\t\t1\n");
        assert_data(
            &read_err(&ds, &qrels("dev")),
            &path,
            Some(2),
            "empty corpus id",
        );
    }

    #[test]
    fn duplicate_id_is_reported_with_both_rows() {
        let dir = parquet_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Corpus);
        write_pq(
            &path,
            vec![
                ("id", strs(&["d1", "d2", "d1"])),
                ("text", strs(&["a", "b", "c"])),
            ],
        );
        // Reading does not look across rows; validation does.
        assert_eq!(collect(&ds, &Table::Corpus, 2).1.len(), 3);
        let e = some_err(ds.validate());
        assert_data(
            &e,
            &path,
            Some(3),
            "duplicate id `d1` (first seen at row 1)",
        );

        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Queries);
        // Rows are line numbers: the blank line 2 counts.
        write_text(
            &path,
            concat!(
                "{\"_id\": 7, \"text\": \"a\"}\n",
                "\n",
                "{\"_id\": \"q2\", \"text\": \"b\"}\n",
                "{\"_id\": \"7\", \"text\": \"c\"}\n",
            ),
        );
        let e = some_err(ds.validate());
        assert_data(&e, &path, Some(4), "duplicate id `7` (first seen at row 1)");
    }

    #[test]
    fn qrel_naming_an_unknown_query_id_is_reported() {
        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&qrels("test"));
        write_text(&path, "query-id\tcorpus-id\tscore\nq1\td1\t1\nq9\td1\t1\n");
        let e = some_err(ds.validate());
        assert_data(&e, &path, Some(3), "qrel names unknown query id `q9`");

        let dir = parquet_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&qrels("dev"));
        write_pq(
            &path,
            vec![
                ("query_id", strs(&["7", "q1", "d1"])),
                ("corpus_id", strs(&["5", "d1", "d1"])),
                ("score", ints(&[1, 1, 1])),
            ],
        );
        let e = some_err(ds.validate());
        assert_data(&e, &path, Some(3), "qrel names unknown query id `d1`");
    }

    #[test]
    fn qrel_naming_an_unknown_corpus_id_is_reported() {
        let dir = parquet_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&qrels("test"));
        write_pq(
            &path,
            vec![
                ("query_id", strs(&["q1", "q2"])),
                ("corpus_id", strs(&["d1", "q2"])),
                ("score", ints(&[1, 1])),
            ],
        );
        let e = some_err(ds.validate());
        assert_data(&e, &path, Some(2), "qrel names unknown corpus id `q2`");

        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&qrels("dev"));
        write_text(&path, "query-id\tcorpus-id\tscore\n\n7\t05\t1\n");
        let e = some_err(ds.validate());
        assert_data(&e, &path, Some(3), "qrel names unknown corpus id `05`");
    }

    #[test]
    fn invalid_json_is_reported_with_its_line() {
        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Corpus);
        write_text(
            &path,
            "{\"_id\": \"d1\", \"text\": \"a\"}\n{\"_id\": \"d2\", \"text\": \n",
        );
        ds.check_columns(&Table::Corpus).unwrap();
        let e = read_err(&ds, &Table::Corpus);
        assert_data(
            &e,
            &path,
            Some(2),
            "invalid JSON (EOF while parsing a value at column 22)",
        );
        write_text(&path, "[\"d1\", \"a\"]\n");
        let e = some_err(ds.check_columns(&Table::Corpus));
        assert_data(&e, &path, Some(1), "expected a JSON object, found an array");
        std::fs::write(&path, b"{\"_id\": \"d1\", \"text\": \"\xff\"}\n").unwrap();
        let e = read_err(&ds, &Table::Corpus);
        assert_data(&e, &path, Some(1), "invalid UTF-8 (expected UTF-8 text)");
    }

    #[test]
    fn bad_score_is_reported_with_its_row() {
        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&qrels("test"));
        write_text(
            &path,
            "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\tabc\n",
        );
        let e = read_err(&ds, &qrels("test"));
        assert_data(&e, &path, Some(3), "score `abc` is not an integer");
        assert_data(
            &some_err(ds.validate()),
            &path,
            Some(3),
            "score `abc` is not an integer",
        );
        write_text(&path, "query-id\tcorpus-id\tscore\nq1\td1\t1.0\n");
        let e = read_err(&ds, &qrels("test"));
        assert_data(&e, &path, Some(2), "score `1.0` is not an integer");
        write_text(&path, "query-id\tcorpus-id\tscore\nq1\td1\n");
        let e = read_err(&ds, &qrels("test"));
        assert_data(
            &e,
            &path,
            Some(2),
            "expected 3 tab-separated fields (query-id, corpus-id, score), found 2",
        );

        let dir = parquet_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&qrels("test"));
        write_pq(
            &path,
            vec![
                ("query_id", strs(&["q1", "q1", "q2"])),
                ("corpus_id", strs(&["d1", "d2", "d3"])),
                (
                    "score",
                    Arc::new(Int64Array::from(vec![Some(1), Some(3_000_000_000), None])),
                ),
            ],
        );
        let e = read_err(&ds, &qrels("test"));
        assert_data(
            &e,
            &path,
            Some(2),
            "score `3000000000` is out of the int32 range",
        );
        write_pq(
            &path,
            vec![
                ("query_id", strs(&["q1", "q1", "q2"])),
                ("corpus_id", strs(&["d1", "d2", "d3"])),
                (
                    "score",
                    Arc::new(Int64Array::from(vec![Some(1), Some(2), None])),
                ),
            ],
        );
        assert_data(&read_err(&ds, &qrels("test")), &path, Some(3), "null score");
    }

    #[test]
    fn tsv_header_is_required() {
        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&qrels("test"));
        write_text(&path, "q1\td1\t1\n");
        let msg =
            "unexpected header `q1\\td1\\t1` (expected header query-id, corpus-id, score separated by tabs)";
        assert_data(
            &some_err(ds.check_columns(&qrels("test"))),
            &path,
            Some(1),
            msg,
        );
        assert_data(&read_err(&ds, &qrels("test")), &path, Some(1), msg);
        write_text(&path, "");
        let e = some_err(ds.check_columns(&qrels("test")));
        assert_data(
            &e,
            &path,
            None,
            "empty file (expected header query-id, corpus-id, score separated by tabs)",
        );
        write_text(&path, "\u{feff}Query_ID\tcorpus_id\tScore\nq1\td1\t1\n");
        ds.check_columns(&qrels("test")).unwrap();
        assert_eq!(
            collect(&ds, &qrels("test"), 10).1,
            rows_of(&[&["q1", "d1", "1"]])
        );
    }

    #[test]
    fn values_in_messages_stay_on_one_line() {
        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Queries);
        write_text(
            &path,
            "{\"_id\": \"a\\nb\", \"text\": \"x\"}\n{\"_id\": \"a\\nb\", \"text\": \"y\"}\n",
        );
        let e = some_err(ds.validate());
        assert_data(
            &e,
            &path,
            Some(2),
            "duplicate id `a\\nb` (first seen at row 1)",
        );
    }

    #[test]
    fn reader_ends_after_an_error() {
        let dir = jsonl_dataset();
        let ds = Dataset::open(dir.path(), None).unwrap();
        let path = ds.path(&Table::Queries);
        write_text(
            &path,
            "{\"_id\": \"q1\", \"text\": \"a\"}\nnot json\n{\"_id\": \"q3\", \"text\": \"c\"}\n",
        );
        let items: Vec<_> = ds.read(&Table::Queries, 1).unwrap().collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
    }
}
