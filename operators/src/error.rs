//! The compute crate's error type.

/// Errors of the compute: tensor failures and bad model settings or files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A setting is out of range or inconsistent.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// A model file is missing or malformed; names the file.
    #[error("{path}: {message}")]
    ModelFile {
        /// The file at fault.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// Results of the compute crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
