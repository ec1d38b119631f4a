//! Settings of the hashed encoder: defaults, ranges, and which of them the weights
//! depend on.

use crate::ranges::{at_most, field_error, within};
use crate::Result;

/// Upper bounds of the settings, to turn typos into errors instead of huge allocations.
const MAX_BUCKETS: usize = u32::MAX as usize; // ids are u32; u32::MAX is a sentinel in candle's index_add
const MAX_TABLE_ELEMS: usize = 1 << 31; // 8 GiB of f32
const MAX_WIDTH: usize = 1 << 16;
const MAX_WORD_NGRAMS: usize = 16;
const MAX_CHAR_NGRAM: usize = 32;

/// Settings of a [`HashedEncoder`]. Every field has a default, and unknown fields are
/// rejected when deserialising.
///
/// [`HashedEncoder`]: super::HashedEncoder
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct HashedEncoderConfig {
    /// Rows of the embedding table (feature hash buckets). Default 2^18.
    pub buckets: usize,
    /// Width of the embedding bag. Default 256.
    pub bag_dim: usize,
    /// Width of the output vectors. Default 128.
    pub dim: usize,
    /// Word n-grams for n = 1..=word_ngrams; 0 disables word features. Default 1.
    pub word_ngrams: usize,
    /// Character n-grams `(min, max)` over `"<word>"` (with boundary marks); `(0, 0)`
    /// disables them. Default (3, 3).
    pub char_ngrams: (usize, usize),
    /// Lowercase the text before splitting it into words. Default true.
    pub lowercase: bool,
    /// L2-normalise the output vectors. Default true.
    pub normalize: bool,
    /// Seed of the weight initialisation. Default 0.
    pub seed: u64,
}

impl Default for HashedEncoderConfig {
    fn default() -> Self {
        Self {
            buckets: 1 << 18,
            bag_dim: 256,
            dim: 128,
            word_ngrams: 1,
            char_ngrams: (3, 3),
            lowercase: true,
            normalize: true,
            seed: 0,
        }
    }
}

impl HashedEncoderConfig {
    /// Checks the ranges of the settings; the error ([`crate::Error::Field`]) names the
    /// field at fault.
    pub fn validate(&self) -> Result<()> {
        within("buckets", self.buckets, 1, MAX_BUCKETS)?;
        within("bag_dim", self.bag_dim, 1, MAX_WIDTH)?;
        within("dim", self.dim, 1, MAX_WIDTH)?;
        if self.buckets.saturating_mul(self.bag_dim) > MAX_TABLE_ELEMS {
            let (b, d) = (self.buckets, self.bag_dim);
            return Err(field_error(
                "buckets",
                format!(
                    "`buckets` × `bag_dim` is {b} × {d} (expected at most {MAX_TABLE_ELEMS} values: 8 GiB)"
                ),
            ));
        }
        at_most("word_ngrams", self.word_ngrams, MAX_WORD_NGRAMS)?;
        let (lo, hi) = self.char_ngrams;
        if (lo, hi) != (0, 0) && !(1 <= lo && lo <= hi && hi <= MAX_CHAR_NGRAM) {
            return Err(field_error(
                "char_ngrams",
                format!(
                    "`char_ngrams` is [{lo}, {hi}] (expected [0, 0] to disable them, or [min, max] \
                     with 1 <= min <= max <= {MAX_CHAR_NGRAM})"
                ),
            ));
        }
        if self.word_ngrams == 0 && (lo, hi) == (0, 0) {
            return Err(field_error(
                "word_ngrams",
                "`word_ngrams` is 0 and `char_ngrams` is [0, 0] (expected at least one kind of feature)",
            ));
        }
        Ok(())
    }

    /// The first field, if any, in which `saved` differs from `self` in a way that makes
    /// weights trained under one meaningless under the other (everything but `seed` and
    /// `normalize`).
    pub(super) fn weight_mismatch(&self, saved: &Self) -> Option<String> {
        let relevant = |c: &Self| {
            let c = Self {
                seed: 0,
                normalize: true,
                ..c.clone()
            };
            match serde_json::to_value(c) {
                Ok(serde_json::Value::Object(fields)) => fields,
                _ => unreachable!("a config serialises to a JSON object"),
            }
        };
        let (ours, theirs) = (relevant(self), relevant(saved));
        ours.iter()
            .find(|(field, value)| theirs.get(*field) != Some(value))
            .map(|(field, value)| {
                let saved_value = theirs.get(field).cloned().unwrap_or_default();
                format!("weights were saved with {field} = {saved_value}, this encoder has {field} = {value}")
            })
    }
}
