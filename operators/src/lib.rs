//! The compute behind freshen's operators.
//!
//! This crate holds the numerical work (encoders, hashing, the corrector, search and
//! negative sampling, losses, optimisers and metrics) on candle tensors. It knows nothing of
//! YAML, graphs or timely: the framework crate calls it from inside its operators,
//! which keeps the maths testable on its own and swappable behind narrow traits.
//!
//! Its settings types (the encoders' and the corrector's configs, the sampler, the
//! enums) are the ones pipelines are written in: with the `schema` feature they derive a
//! JSON Schema, so a default or a range is written once, here.
//!
//! Building a corrector and applying it to a cache:
//!
//! ```
//! use freshen_operators::corrector::{Corrector, CorrectorConfig};
//! use freshen_operators::device::cpu;
//!
//! let h = Corrector::new(CorrectorConfig::new(4), &cpu())?;
//! let cache = candle_core::Tensor::ones((10, 4), candle_core::DType::F32, &cpu())?;
//! // h starts as the identity: the corrected cache equals the stale one.
//! let corrected = h.apply_chunked(&cache, 3)?;
//! assert_eq!(corrected.to_vec2::<f32>()?, cache.to_vec2::<f32>()?);
//! # Ok::<(), freshen_operators::Error>(())
//! ```

#![warn(missing_docs)]
// Tests read tensors as candle gives them; the counted door is for the code they test.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod backend;
pub mod corrector;
pub mod device;
pub mod encoder;
pub mod error;
pub mod hashing;
pub mod host;
pub mod loss;
pub mod metrics;
pub mod random;
pub mod ranges;
pub mod reader;
pub mod search;
pub mod synthetic;
pub mod train;
mod weights_file;

pub use encoder::{BertEncoder, BertOptions, Encoder, HashedEncoder, HashedEncoderConfig};
pub use error::{Error, Result};
