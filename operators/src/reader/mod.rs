//! The reader of a retrieval-augmented model: scores an answer given a query and one
//! retrieved passage, `log p(a | q, z)`, for the marginal likelihood
//! `−log Σ_z p(z | q) p(a | q, z)` ([`crate::loss::marginal_nll`]).
//!
//! # Model (a span reader, as REALM's and ORQA's readers are)
//!
//! Texts are split into lower-case words ([`words`]); a word's vector is a row of a hashed
//! embedding table (`buckets × dim`, the hash of the word seeded), so there is no
//! vocabulary to build. The query is the mean of its words' vectors, `u`. Passage word
//! `j` (of the first `max_words`) is `w_j = E[z_j] + P[j]` with a learnt position vector.
//! A span `(i, i + l)` of at most `max_span` words scores
//!
//! ```text
//! s(i, l) = ⟨A·u, w_i⟩ + ⟨C·u, w_{i+l}⟩ + b_l
//! ```
//!
//! and `p(span | q, z)` is the softmax over every span of the passage. The answer's
//! probability is that of the spans whose words equal the answer's, mixed with a floor
//! `ε` for passages that do not hold it: `p(a | q, z) = (1 − ε)·Σ_{span = a} p(span) + ε`.
//! An answer that needs the right passage is then learnt as "find it in the passage", and
//! a passage without it scores `log ε` whatever the reader does: the retriever, not the
//! reader, has to find it.
//!
//! # Parameters (seeded, [`SplitMix64`])
//!
//! `words.weight` `(buckets, dim)` N(0, 1/dim); `positions.weight` `(max_words, dim)`
//! N(0, 1/dim); `start.weight`, `end.weight` `(dim, dim)` U(±1/√dim) (torch's `Linear`);
//! `length.bias` `(max_span)` zeros. [`Reader::save`] writes safetensors with these names
//! plus the config; [`Reader::load`] checks both before changing anything.

use crate::host::HostRead;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::hashing::hash64_seeded;
use crate::random::SplitMix64;
use crate::ranges::{field_error, within};
use crate::train::Trainable;
use crate::weights_file;
use crate::{Error, Result};

#[cfg(test)]
mod tests;

/// Extra tensor of saved files: the config as JSON bytes.
const CONFIG_TENSOR: &str = "reader.config_json";

/// Settings of a [`Reader`]; unknown fields are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct ReaderConfig {
    /// Rows of the hashed word table. Default 65,536.
    pub buckets: usize,
    /// Width of word, position and query vectors. Default 64.
    pub dim: usize,
    /// Passage words read (the rest are cut). Default 64.
    pub max_words: usize,
    /// Longest answer span, in words. Default 4.
    pub max_span: usize,
    /// Probability floor of an answer absent from the passage, in (0, 1). Default 1e-4.
    pub epsilon: f64,
    /// Seed of the initialisation and of the word hash. Default 0.
    pub seed: u64,
}

impl Default for ReaderConfig {
    fn default() -> Self {
        Self {
            buckets: 1 << 16,
            dim: 64,
            max_words: 64,
            max_span: 4,
            epsilon: 1e-4,
            seed: 0,
        }
    }
}

impl ReaderConfig {
    /// Checks the ranges; the error names the field.
    pub fn validate(&self) -> Result<()> {
        within("buckets", self.buckets, 1, 1 << 24)?;
        within("dim", self.dim, 1, 4096)?;
        within("max_words", self.max_words, 1, 4096)?;
        within("max_span", self.max_span, 1, 64)?;
        if !(self.epsilon > 0.0 && self.epsilon < 1.0) {
            return Err(field_error(
                "epsilon",
                format!("`epsilon` is {} (expected between 0 and 1)", self.epsilon),
            ));
        }
        Ok(())
    }

    /// Number of trainable values.
    pub fn param_count(&self) -> usize {
        let d = self.dim;
        self.buckets * d + self.max_words * d + 2 * d * d + self.max_span
    }

    /// The settings that make weights incompatible (all but `epsilon`), as JSON.
    fn shape_json(&self) -> serde_json::Value {
        serde_json::json!({
            "buckets": self.buckets, "dim": self.dim, "max_words": self.max_words,
            "max_span": self.max_span, "seed": self.seed,
        })
    }
}

/// The lower-case words of `text`: runs of letters, digits, `-` and `'`.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '\''))
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// One example the reader scores: a query, a passage and an answer.
#[derive(Debug, Clone, Copy)]
pub struct Example<'a> {
    /// The query's text.
    pub query: &'a str,
    /// The passage's text.
    pub passage: &'a str,
    /// The answer's text.
    pub answer: &'a str,
}

/// The reader (see the module docs).
pub struct Reader {
    cfg: ReaderConfig,
    device: Device,
    named: Vec<(String, Var)>,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("config", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// A batch's index tensors, built on the host.
struct Encoded {
    /// `(n, Lq)` word rows of the queries, and their `(n, Lq)` 1/len weights.
    query_rows: Tensor,
    query_weights: Tensor,
    /// `(n, Lz)` word rows of the passages and their `(n, Lz)` validity.
    passage_rows: Tensor,
    /// `(n, Lz · S)` 0 for a valid span, −1e9 otherwise.
    span_penalty: Tensor,
    /// `(n, Lz · S)` 1 where the span's words are the answer's.
    answer_spans: Tensor,
    /// The passages' words (cut to `max_words`), for predictions.
    passage_words: Vec<Vec<String>>,
}

impl Reader {
    /// A freshly initialised f32 reader on `device`.
    pub fn new(cfg: ReaderConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.dim;
        let draw = |name: &str, n: usize, normal: bool| -> Vec<f32> {
            let tag = format!("reader-v1/{name}");
            let mut rng = SplitMix64::new(hash64_seeded(cfg.seed, tag.as_bytes()));
            let scale = 1.0 / (d as f32).sqrt();
            (0..n)
                .map(|_| match normal {
                    true => rng.normal() * scale,
                    false => rng.uniform(-scale, scale),
                })
                .collect()
        };
        let var = |values: Vec<f32>, shape: &[usize]| -> Result<Var> {
            Ok(Var::from_tensor(&Tensor::from_vec(values, shape, device)?)?)
        };
        let named = vec![
            (
                "words.weight".to_string(),
                var(draw("words", cfg.buckets * d, true), &[cfg.buckets, d])?,
            ),
            (
                "positions.weight".to_string(),
                var(
                    draw("positions", cfg.max_words * d, true),
                    &[cfg.max_words, d],
                )?,
            ),
            (
                "start.weight".to_string(),
                var(draw("start", d * d, false), &[d, d])?,
            ),
            (
                "end.weight".to_string(),
                var(draw("end", d * d, false), &[d, d])?,
            ),
            (
                "length.bias".to_string(),
                var(vec![0.0; cfg.max_span], &[cfg.max_span])?,
            ),
        ];
        Ok(Self {
            cfg,
            device: device.clone(),
            named,
        })
    }

    /// An independent copy with the same weights (another worker's replica).
    pub fn replica(&self) -> Result<Self> {
        let copy = Self::new(self.cfg.clone(), &self.device)?;
        for ((_, mine), (_, theirs)) in copy.named.iter().zip(&self.named) {
            mine.set(theirs.as_tensor())?;
        }
        Ok(copy)
    }

    /// The settings.
    pub fn config(&self) -> &ReaderConfig {
        &self.cfg
    }

    /// The device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    fn var(&self, i: usize) -> &Tensor {
        self.named[i].1.as_tensor()
    }

    fn row(&self, word: &str) -> u32 {
        (hash64_seeded(self.cfg.seed, word.as_bytes()) % self.cfg.buckets as u64) as u32
    }

    fn encode(&self, batch: &[Example]) -> Result<Encoded> {
        let (s, max_words) = (self.cfg.max_span, self.cfg.max_words);
        let queries: Vec<Vec<String>> = batch.iter().map(|e| words(e.query)).collect();
        let passages: Vec<Vec<String>> = batch
            .iter()
            .map(|e| words(e.passage).into_iter().take(max_words).collect())
            .collect();
        let lq = queries.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let lz = passages.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let n = batch.len();
        let (mut q_rows, mut q_w) = (vec![0u32; n * lq], vec![0f32; n * lq]);
        let mut z_rows = vec![0u32; n * lz];
        let mut penalty = vec![-1e9f32; n * lz * s];
        let mut answer = vec![0f32; n * lz * s];
        for (k, e) in batch.iter().enumerate() {
            for (j, w) in queries[k].iter().enumerate() {
                q_rows[k * lq + j] = self.row(w);
                q_w[k * lq + j] = 1.0 / queries[k].len() as f32;
            }
            let z = &passages[k];
            let a = words(e.answer);
            for (j, w) in z.iter().enumerate() {
                z_rows[k * lz + j] = self.row(w);
                for l in 0..s.min(z.len() - j) {
                    let at = (k * lz + j) * s + l;
                    penalty[at] = 0.0;
                    if !a.is_empty() && z[j..=j + l] == a[..] {
                        answer[at] = 1.0;
                    }
                }
            }
        }
        let t = |v: Vec<f32>, shape: (usize, usize)| Tensor::from_vec(v, shape, &self.device);
        let ti = |v: Vec<u32>, shape: (usize, usize)| Tensor::from_vec(v, shape, &self.device);
        Ok(Encoded {
            query_rows: ti(q_rows, (n, lq))?,
            query_weights: t(q_w, (n, lq))?,
            passage_rows: ti(z_rows, (n, lz))?,
            span_penalty: t(penalty, (n, lz * s))?,
            answer_spans: t(answer, (n, lz * s))?,
            passage_words: passages,
        })
    }

    /// `(n, Lz · S)` log-probabilities of every span (invalid ones about −1e9).
    fn span_log_probs(&self, enc: &Encoded) -> Result<Tensor> {
        let (n, lq) = enc.query_rows.dims2()?;
        let (_, lz) = enc.passage_rows.dims2()?;
        let (d, s) = (self.cfg.dim, self.cfg.max_span);
        let table = self.var(0);
        let gather = |rows: &Tensor, len: usize| -> Result<Tensor> {
            Ok(table
                .index_select(&rows.flatten_all()?, 0)?
                .reshape((n, len, d))?)
        };
        // u: (n, d), the mean of the query's word vectors.
        let u = gather(&enc.query_rows, lq)?
            .broadcast_mul(&enc.query_weights.unsqueeze(2)?)?
            .sum(1)?;
        let positions = self.var(1).narrow(0, 0, lz)?;
        let w = gather(&enc.passage_rows, lz)?.broadcast_add(&positions)?;
        let score = |m: &Tensor| -> Result<Tensor> {
            let qa = u.matmul(&m.t()?)?.unsqueeze(2)?; // (n, d, 1)
            Ok(w.matmul(&qa)?.squeeze(2)?) // (n, lz)
        };
        let (start, end) = (score(self.var(2))?, score(self.var(3))?);
        // end of span (i, l) is word i + l: shift `end` left by l, padding past the end.
        let pad = Tensor::zeros((n, s), DType::F32, &self.device)?;
        let end = Tensor::cat(&[&end, &pad], 1)?;
        let ends: Vec<Tensor> = (0..s)
            .map(|l| end.narrow(1, l, lz))
            .collect::<candle_core::Result<_>>()?;
        let ends = Tensor::stack(&ends, 2)?; // (n, lz, s)
        let spans = ends
            .broadcast_add(&start.unsqueeze(2)?)?
            .broadcast_add(&self.var(4).reshape((1, 1, s))?)?
            .reshape((n, lz * s))?;
        crate::loss::log_softmax_rows(&(spans + &enc.span_penalty)?)
    }

    /// `(n,)` values of `log p(a | q, z)` for each example, differentiable in the reader's
    /// parameters.
    pub fn log_likelihood(&self, batch: &[Example]) -> Result<Tensor> {
        if batch.is_empty() {
            return Err(Error::Setting("reader: an empty batch".into()));
        }
        let enc = self.encode(batch)?;
        let log_p = self.span_log_probs(&enc)?;
        let copy = (log_p.exp()? * &enc.answer_spans)?.sum(1)?;
        let eps = self.cfg.epsilon;
        Ok(((copy * (1.0 - eps))? + eps)?.log()?)
    }

    /// The most probable answer span of each example's passage, with its probability (the
    /// query and passage of each example; its answer is ignored). A passage with no
    /// words gives an empty answer of probability 0.
    pub fn predict(&self, batch: &[Example]) -> Result<Vec<(String, f64)>> {
        let enc = self.encode(batch)?;
        let log_p: Vec<Vec<f32>> = self.span_log_probs(&enc)?.detach().host_vec2()?;
        let s = self.cfg.max_span;
        Ok(log_p
            .iter()
            .zip(&enc.passage_words)
            .map(|(row, z)| {
                let best = row
                    .iter()
                    .enumerate()
                    .filter(|(at, _)| at / s < z.len() && at / s + at % s < z.len())
                    .max_by(|a, b| a.1.total_cmp(b.1));
                match best {
                    Some((at, lp)) => {
                        let (i, l) = (at / s, at % s);
                        (z[i..=i + l].join(" "), f64::from(lp.exp()))
                    }
                    None => (String::new(), 0.0),
                }
            })
            .collect())
    }

    /// Saves the weights and the config (safetensors, atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        weights_file::save(path, &self.name_refs(), CONFIG_TENSOR, &self.cfg)
    }

    /// Loads weights [`Reader::save`] wrote; the saved config's shape settings must equal
    /// this reader's. Nothing changes unless the whole file checks out.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let loaded = weights_file::read::<ReaderConfig>(path, CONFIG_TENSOR)?;
        if let Some(saved) = &loaded.config {
            if saved.shape_json() != self.cfg.shape_json() {
                return Err(weights_file::mismatch(
                    path,
                    format!(
                        "weights were saved for {}, this reader is {}",
                        saved.shape_json(),
                        self.cfg.shape_json()
                    ),
                ));
            }
        }
        loaded.apply(path, &self.name_refs(), &[DType::F32])
    }

    fn name_refs(&self) -> Vec<(&str, &Var)> {
        self.named.iter().map(|(n, v)| (n.as_str(), v)).collect()
    }
}

impl Trainable for Reader {
    fn params(&self) -> Vec<(String, Var)> {
        self.named.clone()
    }
}
