//! One error enum for the whole framework.
//!
//! Every error a user can cause prints as a single line that says where it is:
//! a pipeline file with `line:column` and the node id, or a data file with the row.
//! Bad input (a pipeline, a data file, a command line) exits with code 2 before anything
//! runs; failures while running exit with code 1.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where in a pipeline file something was written: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column number.
    pub col: usize,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// The error type of freshen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A problem in a pipeline file (syntax, types, graph, schema), found before running.
    ///
    /// Displays as `FILE:LINE:COL: node ID: what is wrong (what was expected)`.
    #[error("{}", spec_line(.file, .span, .node.as_deref(), .message))]
    Spec {
        /// The pipeline file, or `--set` for a command-line override.
        file: PathBuf,
        /// Where in the file; `None` when the problem has no single place.
        span: Option<Span>,
        /// The node the problem belongs to, when it belongs to one.
        node: Option<String>,
        /// What is wrong, with what was expected in parentheses.
        message: String,
    },
    /// A problem in an input data file (missing column, null text, duplicate id, ...).
    ///
    /// Displays as `FILE: row N: node ID: what is wrong`.
    #[error("{}", data_line(.file, *.row, .node.as_deref(), .message))]
    Data {
        /// The data file.
        file: PathBuf,
        /// The 1-based row (for JSONL/TSV: the line number), when the problem has one.
        row: Option<usize>,
        /// The node that reads the file.
        node: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// A command line that cannot be acted on (a host file, a process index, a folder
    /// that holds no run), with what was expected.
    #[error("{0}")]
    Usage(String),
    /// An I/O failure on a named path.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file or folder being read or written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A failure inside a node while the dataflow runs.
    #[error("node {node}: {source}")]
    Node {
        /// The node id.
        node: String,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
    /// A batch without a column an operator needs (the graph's schema checks make this
    /// a bug unless the batch came from a file, whose reader names it).
    #[error("batch lacks {expected} column `{column}`")]
    Column {
        /// The column's name.
        column: String,
        /// Its expected type, for the message (`a string`, `a uint64`, ...).
        expected: &'static str,
    },
    /// A failure of the compute crate (model, tensors, settings).
    #[error(transparent)]
    Compute(#[from] freshen_operators::Error),
    /// An Arrow failure (building or casting a batch).
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A Parquet failure (encoding or decoding a file).
    #[error("parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Drawing a plot failed.
    #[error("{}: {message}", .path.display())]
    Plot {
        /// The image being drawn.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// Training diverged: a step's loss or gradient norm is not finite (the settings,
    /// typically the learning rate, are at fault). Nothing was committed.
    #[error("{0}")]
    Diverged(String),
    /// An internal invariant does not hold: a bug in freshen, never the user's input.
    #[error("internal error: {0} (please report it)")]
    Invariant(String),
}

/// Results of freshen.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code for this error: 2 for bad input found before running and for
    /// a run that diverged (its settings are at fault), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Spec { .. } | Error::Data { .. } | Error::Usage(_) | Error::Diverged(_) => 2,
            // A device that is missing or out of memory: the machine or the settings.
            Error::Compute(freshen_operators::Error::Device { .. }) => 2,
            Error::Node { source, .. } => source.exit_code(),
            _ => 1,
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// A data error in `file` at 1-based `row`.
    pub fn data(file: impl AsRef<Path>, row: Option<usize>, message: impl Into<String>) -> Self {
        Error::Data {
            file: file.as_ref().to_path_buf(),
            row,
            node: None,
            message: message.into(),
        }
    }

    /// A broken invariant.
    pub fn invariant(message: impl Into<String>) -> Self {
        Error::Invariant(message.into())
    }

    /// Attaches a node id: to a spec or data error that has none yet (it then prints in
    /// its own place), otherwise by wrapping the error in [`Error::Node`].
    pub fn with_node(mut self, id: &str) -> Self {
        match &mut self {
            Error::Spec { node, .. } | Error::Data { node, .. } => {
                if node.is_none() {
                    *node = Some(id.to_string());
                }
                self
            }
            Error::Node { .. } => self,
            _ => Error::Node {
                node: id.to_string(),
                source: Box::new(self),
            },
        }
    }
}

fn spec_line(file: &Path, span: &Option<Span>, node: Option<&str>, message: &str) -> String {
    let mut s = file.display().to_string();
    if let Some(span) = span {
        s.push_str(&format!(":{span}"));
    }
    if let Some(node) = node {
        s.push_str(&format!(": node {node}"));
    }
    format!("{s}: {message}")
}

fn data_line(file: &Path, row: Option<usize>, node: Option<&str>, message: &str) -> String {
    let mut s = file.display().to_string();
    if let Some(row) = row {
        s.push_str(&format!(": row {row}"));
    }
    if let Some(node) = node {
        s.push_str(&format!(": node {node}"));
    }
    format!("{s}: {message}")
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::Compute(freshen_operators::Error::Tensor(e))
    }
}
