//! Text encoders: the narrow backend trait and the built-in hashed n-gram encoder.
//!
//! Like text-embeddings-inference's backends, the rest of the system only sees
//! [`Encoder`]: a width, a batch embedding call and a fingerprint. Concrete encoders
//! (the built-in [`HashedEncoder`], the pretrained [`BertEncoder`]) live behind it.

pub mod bert;
mod hashed;

pub use bert::{BertEncoder, BertOptions};
pub use hashed::{HashedEncoder, HashedEncoderConfig};

use crate::Result;
use candle_core::Tensor;

/// A text encoder backend.
pub trait Encoder: Send + Sync {
    /// Width of the embeddings.
    fn dim(&self) -> usize;

    /// Embeds `texts` into a `(texts.len(), dim)` f32 tensor. A text's vector must not
    /// depend on its batch neighbours.
    fn encode(&self, texts: &[&str]) -> Result<Tensor>;

    /// Identity of weights + settings as 16 hex digits: equal fingerprints ⇒ equal
    /// vectors. Persisted cache keys use it.
    fn fingerprint(&self) -> &str;

    /// Where the model computes (its vectors are returned on the host all the same).
    fn device(&self) -> &candle_core::Device;
}
