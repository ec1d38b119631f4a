//! Settings of the hashed encoder: defaults, ranges, and which of them the weights
//! depend on.

use crate::{Error, Result};

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
    /// Checks the ranges of the settings; the error names the field at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, msg: String| {
            Err(Error::Setting(format!("hashed encoder: {field} {msg}")))
        };
        if !(1..=MAX_BUCKETS).contains(&self.buckets) {
            return bad(
                "buckets",
                format!("must be in 1..={MAX_BUCKETS}, got {}", self.buckets),
            );
        }
        if !(1..=MAX_WIDTH).contains(&self.bag_dim) {
            return bad(
                "bag_dim",
                format!("must be in 1..={MAX_WIDTH}, got {}", self.bag_dim),
            );
        }
        if !(1..=MAX_WIDTH).contains(&self.dim) {
            return bad(
                "dim",
                format!("must be in 1..={MAX_WIDTH}, got {}", self.dim),
            );
        }
        match self.buckets.checked_mul(self.bag_dim) {
            Some(n) if n <= MAX_TABLE_ELEMS => {}
            _ => {
                let (b, d) = (self.buckets, self.bag_dim);
                let msg =
                    format!("× bag_dim must be at most {MAX_TABLE_ELEMS} values, got {b} × {d}");
                return bad("buckets", msg);
            }
        }
        if self.word_ngrams > MAX_WORD_NGRAMS {
            return bad(
                "word_ngrams",
                format!(
                    "must be in 0..={MAX_WORD_NGRAMS} (0 disables word features), got {}",
                    self.word_ngrams
                ),
            );
        }
        let (lo, hi) = self.char_ngrams;
        if (lo, hi) != (0, 0) && !(1 <= lo && lo <= hi && hi <= MAX_CHAR_NGRAM) {
            let msg = format!(
                "must be (0, 0) (disabled) or (min, max) with 1 <= min <= max <= {MAX_CHAR_NGRAM}, \
                 got ({lo}, {hi})"
            );
            return bad("char_ngrams", msg);
        }
        if self.word_ngrams == 0 && (lo, hi) == (0, 0) {
            return bad(
                "word_ngrams",
                "and char_ngrams disable every feature: enable at least one".into(),
            );
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
