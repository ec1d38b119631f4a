//! The compute crate's error type.

/// Errors of the compute: tensor failures and bad model settings or files.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tensor operation failed.
    #[error("tensor: {0}")]
    Tensor(candle_core::Error),
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

impl From<candle_core::Error> for Error {
    /// A device out of memory becomes [`Error::Device`], saying what to lower: the one
    /// tensor failure a user can fix.
    fn from(e: candle_core::Error) -> Self {
        let text = e.to_string();
        match text.contains("OUT_OF_MEMORY") || text.contains("out of memory") {
            true => Error::Device {
                device: "cuda".into(),
                message: format!(
                    "out of device memory ({}); lower the sample's batch_size, a bert \
                     model's batch_tokens or max_batch, or the search chunk, or use \
                     dtype: bf16",
                    text.lines().next().unwrap_or_default()
                ),
            },
            false => Error::Tensor(e),
        }
    }
}

/// Results of the compute crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::Error;

    #[test]
    fn a_device_out_of_memory_says_what_to_lower() {
        let oom = candle_core::Error::Msg(
            "DriverError(CUDA_ERROR_OUT_OF_MEMORY, \"out of memory\")".into(),
        );
        let e = Error::from(oom);
        assert!(matches!(e, Error::Device { .. }), "{e}");
        assert!(
            e.to_string().contains("lower the sample's batch_size"),
            "{e}"
        );
        let other = Error::from(candle_core::Error::Msg("shape mismatch".into()));
        assert!(matches!(other, Error::Tensor(_)), "{other}");
    }
}
