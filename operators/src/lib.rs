//! The compute behind freshen's operators.
//!
//! This crate holds the numerical work (encoders, hashing, the corrector, search and
//! negative sampling, losses, optimisers and metrics) on candle tensors. It knows nothing of
//! YAML, graphs or timely: the framework crate calls it from inside its operators,
//! which keeps the maths testable on its own and swappable behind narrow traits.

pub mod corrector;
pub mod encoder;
pub mod error;
pub mod hashing;
mod host;
pub mod loss;
pub mod metrics;
pub mod search;
pub mod train;
mod weights_file;

pub use encoder::{BertEncoder, BertOptions, Encoder, HashedEncoder, HashedEncoderConfig};
pub use error::{Error, Result};
