//! The built-in hashed n-gram encoder: needs no download, trains with candle.
//!
//! # Model
//!
//! ```text
//! text ─ features ─▶ bucket ids ─ embedding bag (mean of table rows) ─▶ (bag_dim)
//!      ─ linear (bag_dim → dim, with bias) ─▶ (dim) ─ optional L2 normalisation ─▶ vector
//! ```
//!
//! * **Features** ([`HashedEncoder::features`]): the text is lowercased (if
//!   [`HashedEncoderConfig::lowercase`]) and split into words on every character that is
//!   not alphanumeric (Unicode `char::is_alphanumeric`). Features are, in this order:
//!   word n-grams for n = 1..=`word_ngrams` (key `"w:" + words joined by ' '`), then for
//!   each word the character n-grams of `"<word>"` for n in `char_ngrams.0..=char_ngrams.1`
//!   (key `"c:" + chars`). A text with no feature at all (empty, or only punctuation) gets
//!   the single sentinel feature `"e:"`, so every text has a well-defined, finite vector
//!   and a finite gradient. A key's bucket is `hash64(key) % buckets`
//!   ([`crate::hashing::hash64`], stable forever); the seed does not affect features.
//!   Repeated features count repeatedly (a bag, not a set).
//! * **Parameters** (in a [`VarMap`], so training can backprop through
//!   [`HashedEncoder::forward`]): `bag.weight` `(buckets, bag_dim)`, `proj.weight`
//!   `(dim, bag_dim)` and `proj.bias` `(dim)`.
//!
//! # Initialisation (seeded, [`SplitMix64`])
//!
//! * `bag.weight` ~ U(-√(3/bag_dim), √(3/bag_dim)) element-wise: variance 1/bag_dim, so
//!   every row has expected squared norm 1 (the second moments of N(0, 1/bag_dim), which
//!   matter for a random projection; the shape of the distribution hardly does). Uniform
//!   rather than normal because it needs no `ln`/`sin`/`cos`: it is about 20 times cheaper
//!   for the 67M values of the default table, and made of exactly rounded operations only,
//!   so a seed gives the same bits on every platform. The table is generated in blocks of
//!   [`INIT_BLOCK_ROWS`] rows, block `j` from its own stream seeded with
//!   `hash64_seeded(seed, "hashed-v1/bag.weight/{j}")`, so the blocks can be filled in
//!   parallel and the result does not depend on the thread count.
//! * `proj.weight` ~ U(-1/√bag_dim, 1/√bag_dim), like `torch.nn.Linear`'s default.
//! * `proj.bias` = 0. (`nn.Linear` would draw it from the same uniform.) A random bias is
//!   a vector shared by every text: it would make all untrained vectors similar to each
//!   other, and more so the longer the text, because the mean of n rows shrinks like
//!   1/√n while the bias does not. With a zero bias, the untrained encoder is a pure random
//!   projection of the bag, which preserves the bags' cosine similarities independently of
//!   text length. Training is free to learn a bias.
//!
//! With a zero bias and normalised output, the table's overall scale has no effect on the
//! untrained vectors; it only sets the effective step size when training.
//!
//! # Determinism: bit-identical vectors whatever the batch
//!
//! A text's vector does not depend on its batch neighbours, down to the last bit (CPU):
//!
//! * The bag is gathered with `index_select` and summed per text with `index_add`, whose
//!   CPU kernel adds the rows of a text into a zeroed row one after the other in feature
//!   order; the sum is then divided by the text's feature count. Nothing of another text
//!   takes part in that arithmetic.
//! * The projection is the dangerous step: gemm picks its blocking, packing and kernels
//!   from the matrix sizes (and a one-row product can take another path altogether), so
//!   the summation order of a row's dot products can change with the batch's row count.
//!   The projection is therefore always run as separate matmuls of exactly
//!   [`PROJECTION_BLOCK_ROWS`] rows (the last block padded with zero rows and the padding
//!   cut off afterwards). Every gemm call has the same shape and strides, hence the same
//!   code path and reduction order, and gemm never mixes rows. (candle folds a batched
//!   matmul with a shared right-hand side into one tall gemm, so a batched matmul would
//!   not give this guarantee; separate calls do.)
//! * Bias addition and normalisation are element-wise or per-row reductions.
//!
//! [`Encoder::encode`] runs the same computation without autograd, in chunks of
//! [`ENCODE_CHUNK`] texts spread over the cores. On the CPU it sums each text's rows
//! straight from the table's storage instead of gathering a `(features, bag_dim)` copy
//! first, with exactly the additions of `index_add` (a zeroed row, then each row in
//! feature order), so it gives the same bits as [`HashedEncoder::forward`] (tested). On CUDA, `index_add` uses atomics and cuBLAS chooses its own algorithms: vectors are
//! then equal up to float rounding, not bit-identical.
//!
//! # Fingerprint
//!
//! [`Hasher64`] over `"hashed-v1"`, the config as JSON (with `seed` set to 0: the seed only
//! chooses the initial weights, which are hashed themselves), the Unicode version of the
//! toolchain (tokenisation uses Unicode tables, so a toolchain whose tables changed gets a
//! new fingerprint rather than silently different vectors), and every variable of the
//! [`VarMap`] sorted by name: its name, shape and all its f32 values (little-endian bytes,
//! hashed in blocks of [`FINGERPRINT_BLOCK`] values whose `hash64` digests are fed in
//! order; the blocks are hashed in parallel). After changing the weights in place
//! (training), call [`HashedEncoder::refresh_fingerprint`].

mod config;
mod embed;
mod features;
mod fingerprint;
mod parallel;
mod train;
mod weights;

#[cfg(test)]
mod tests;

pub use self::config::HashedEncoderConfig;
pub(crate) use self::fingerprint::tensor_digests;

use std::fmt;

use candle_core::{Device, Tensor, Var};
use candle_nn::VarMap;

use self::parallel::par_for_each;
use self::weights::init_table;
use super::Encoder;
use crate::hashing::hash64_seeded;
use crate::host::with_cpu_f32;
use crate::random::SplitMix64;
use crate::Result;

/// Rows of every projection matmul (see the module docs on determinism). Changing it may
/// change vectors in the last bits; it is part of `"hashed-v1"`.
pub const PROJECTION_BLOCK_ROWS: usize = 64;
/// Texts embedded per chunk by [`Encoder::encode`] (bounds the gathered rows' memory).
pub const ENCODE_CHUNK: usize = 256;
/// Rows of the embedding table per independently seeded initialisation stream.
pub const INIT_BLOCK_ROWS: usize = 4096;
/// f32 values per `hash64` block of the fingerprint.
pub const FINGERPRINT_BLOCK: usize = 16 * 1024;

/// Name of the embedding table in the [`VarMap`] and in saved files.
const TABLE: &str = "bag.weight";
/// Name of the projection matrix `(dim, bag_dim)`.
const PROJ_WEIGHT: &str = "proj.weight";
/// Name of the projection bias `(dim)`.
const PROJ_BIAS: &str = "proj.bias";

/// The built-in hashed word/char n-gram encoder (see the module docs).
pub struct HashedEncoder {
    cfg: HashedEncoderConfig,
    device: Device,
    varmap: VarMap,
    table: Var,
    weight: Var,
    bias: Var,
    fingerprint: String,
}

impl fmt::Debug for HashedEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HashedEncoder")
            .field("config", &self.cfg)
            .field("device", &self.device)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl HashedEncoder {
    /// A freshly initialised encoder (seeded by `cfg.seed`) on `device`.
    pub fn new(cfg: HashedEncoderConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let table = init_table(cfg.seed, cfg.buckets, cfg.bag_dim);
        let table = Var::from_vec(table, (cfg.buckets, cfg.bag_dim), device)?;

        let bound = 1.0 / (cfg.bag_dim as f32).sqrt();
        let mut rng = SplitMix64::new(hash64_seeded(cfg.seed, b"hashed-v1/proj.weight"));
        let weight: Vec<f32> = (0..cfg.dim * cfg.bag_dim)
            .map(|_| rng.uniform(-bound, bound))
            .collect();
        let weight = Var::from_vec(weight, (cfg.dim, cfg.bag_dim), device)?;
        let bias = Var::from_vec(vec![0f32; cfg.dim], cfg.dim, device)?;

        let mut enc = Self::from_vars(cfg, device, table, weight, bias, String::new())?;
        enc.refresh_fingerprint()?;
        Ok(enc)
    }

    /// An encoder over existing variables (registered in a new [`VarMap`] under their
    /// names), with `fingerprint` as given.
    fn from_vars(
        cfg: HashedEncoderConfig,
        device: &Device,
        table: Var,
        weight: Var,
        bias: Var,
        fingerprint: String,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| crate::Error::Setting("VarMap lock poisoned".into()))?;
            data.insert(TABLE.to_string(), table.clone());
            data.insert(PROJ_WEIGHT.to_string(), weight.clone());
            data.insert(PROJ_BIAS.to_string(), bias.clone());
        }
        Ok(Self {
            cfg,
            device: device.clone(),
            varmap,
            table,
            weight,
            bias,
            fingerprint,
        })
    }

    /// The settings.
    pub fn config(&self) -> &HashedEncoderConfig {
        &self.cfg
    }

    /// The device of the weights and of the returned vectors.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Differentiable forward (for training): a `(texts.len(), dim)` f32 tensor whose graph
    /// reaches every variable of [`HashedEncoder::varmap`]. Same values as
    /// [`Encoder::encode`], bit for bit.
    pub fn forward(&self, texts: &[&str]) -> Result<Tensor> {
        self.embed(
            texts,
            self.table.as_tensor(),
            self.weight.as_tensor(),
            self.bias.as_tensor(),
        )
    }

    /// The trainable parameters (`bag.weight`, `proj.weight`, `proj.bias`).
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }

    /// Recomputes the fingerprint from the config and the current weights. Call it after
    /// changing the weights in place (an optimiser step): [`Encoder::fingerprint`] is
    /// otherwise stale.
    pub fn refresh_fingerprint(&mut self) -> Result<()> {
        self.fingerprint = self.compute_fingerprint()?;
        Ok(())
    }
}

impl Encoder for HashedEncoder {
    fn dim(&self) -> usize {
        self.cfg.dim
    }

    fn device(&self) -> &Device {
        HashedEncoder::device(self)
    }

    /// Chunks of [`ENCODE_CHUNK`] texts, spread over the CPU cores; bit-identical to
    /// [`HashedEncoder::forward`].
    fn encode(&self, texts: &[&str]) -> Result<Tensor> {
        let (table, weight, bias) = (
            self.table.as_tensor().detach(),
            self.weight.as_tensor().detach(),
            self.bias.as_tensor().detach(),
        );
        if texts.len() <= ENCODE_CHUNK {
            return self.encode_chunk(texts, &table, &weight, &bias);
        }
        let mut parts: Vec<(&[&str], Option<Result<Tensor>>)> = texts
            .chunks(ENCODE_CHUNK)
            .map(|chunk| (chunk, None))
            .collect();
        par_for_each(&mut parts, |_, (chunk, out)| {
            *out = Some(self.encode_chunk(chunk, &table, &weight, &bias))
        });
        let parts = parts
            .into_iter()
            .map(|(_, out)| out.expect("every chunk is encoded"))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}
