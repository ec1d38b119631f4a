//! The compute crate's error type.

/// Errors of the compute: tensor failures and bad model settings or files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// One setting is out of its range. `field` is its key (dotted for nested settings),
    /// so that a caller reading settings from a file can point at it; the message names
    /// the value and what was expected.
    #[error("{message}")]
    Field {
        /// The setting's key, as written in a settings file (`buckets`, `pool`, ...).
        field: String,
        /// What is wrong, with what was expected in parentheses.
        message: String,
    },
    /// Settings that are inconsistent with each other or with the data.
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
    /// A device was asked for that this build or this machine does not have.
    #[error("device {device}: {message}")]
    Device {
        /// The device as named (`cuda:1`).
        device: String,
        /// What is missing and how to get it.
        message: String,
    },
}

/// Results of the compute crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
