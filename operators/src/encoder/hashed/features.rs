//! Featurisation: a text's word and character n-grams, hashed to bucket ids (see the
//! module docs of the encoder).

use super::HashedEncoder;
use crate::hashing::hash64;

impl HashedEncoder {
    /// Feature bucket ids of one text, in bag order (tokenisation: lowercase if set, split
    /// on non-alphanumeric characters; see the module docs). Never empty: a text without
    /// features gets the sentinel feature of `"e:"`.
    pub fn features(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.features_into(text, &mut out, &mut Scratch::default());
        out
    }

    /// Appends the feature bucket ids of `text` to `out`, reusing `scratch`'s buffers.
    fn features_into(&self, text: &str, out: &mut Vec<u32>, scratch: &mut Scratch) {
        let start = out.len();
        let lowered;
        let text = if self.cfg.lowercase {
            lowered = text.to_lowercase();
            lowered.as_str()
        } else {
            text
        };
        let buckets = self.cfg.buckets as u64;
        let bucket = |key: &str| (hash64(key.as_bytes()) % buckets) as u32;
        let words: Vec<&str> = text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let key = &mut scratch.key;
        for n in 1..=self.cfg.word_ngrams {
            for gram in words.windows(n) {
                key.clear();
                key.push_str("w:");
                for (i, w) in gram.iter().enumerate() {
                    if i > 0 {
                        key.push(' ');
                    }
                    key.push_str(w);
                }
                out.push(bucket(key));
            }
        }
        let (lo, hi) = self.cfg.char_ngrams;
        if hi > 0 {
            let chars = &mut scratch.chars;
            for w in &words {
                chars.clear();
                chars.push('<');
                chars.extend(w.chars());
                chars.push('>');
                for n in lo..=hi {
                    for gram in chars.windows(n) {
                        key.clear();
                        key.push_str("c:");
                        key.extend(gram);
                        out.push(bucket(key));
                    }
                }
            }
        }
        if out.len() == start {
            out.push(bucket("e:"));
        }
    }

    /// The features of a batch: all bucket ids in text order, the owning text of each id,
    /// and each text's feature count as a `(b, 1)` column.
    pub(super) fn batch_features(&self, texts: &[&str]) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
        let mut ids: Vec<u32> = Vec::new();
        let mut owner: Vec<u32> = Vec::new();
        let mut counts: Vec<f32> = Vec::with_capacity(texts.len());
        let mut scratch = Scratch::default();
        for (i, text) in texts.iter().enumerate() {
            let start = ids.len();
            self.features_into(text, &mut ids, &mut scratch);
            owner.resize(ids.len(), i as u32);
            counts.push((ids.len() - start) as f32);
        }
        (ids, owner, counts)
    }
}

/// Reusable buffers of the featuriser.
#[derive(Default)]
struct Scratch {
    key: String,
    chars: Vec<char>,
}
