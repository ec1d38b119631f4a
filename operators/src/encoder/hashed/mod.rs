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

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;

use super::Encoder;
use crate::hashing::{hash64, hash64_seeded, hash64_x4, Hasher64, SplitMix64};
use crate::{Error, Result};

/// Rows of every projection matmul (see the module docs on determinism). Changing it may
/// change vectors in the last bits; it is part of `"hashed-v1"`.
pub const PROJECTION_BLOCK_ROWS: usize = 64;
/// Texts embedded per chunk by [`Encoder::encode`] (bounds the gathered rows' memory).
pub const ENCODE_CHUNK: usize = 256;
/// Rows of the embedding table per independently seeded initialisation stream.
pub const INIT_BLOCK_ROWS: usize = 4096;
/// f32 values per `hash64` block of the fingerprint.
pub const FINGERPRINT_BLOCK: usize = 16 * 1024;

/// Tag hashed first into every fingerprint; bump it if the computation ever changes.
const FINGERPRINT_TAG: &[u8] = b"hashed-v1";
/// Name of the embedding table in the [`VarMap`] and in saved files.
const TABLE: &str = "bag.weight";
/// Name of the projection matrix `(dim, bag_dim)`.
const PROJ_WEIGHT: &str = "proj.weight";
/// Name of the projection bias `(dim)`.
const PROJ_BIAS: &str = "proj.bias";
/// Extra tensor of saved files: the config as JSON bytes (u8), checked on load.
const CONFIG_TENSOR: &str = "hashed_encoder.config_json";
/// Epsilon of the normalisation: `x / sqrt(|x|² + EPS²)`.
const NORM_EPS_SQ: f64 = 1e-24;

/// Upper bounds of the settings, to turn typos into errors instead of huge allocations.
const MAX_BUCKETS: usize = u32::MAX as usize; // ids are u32; u32::MAX is a sentinel in candle's index_add
const MAX_TABLE_ELEMS: usize = 1 << 31; // 8 GiB of f32
const MAX_WIDTH: usize = 1 << 16;
const MAX_WORD_NGRAMS: usize = 16;
const MAX_CHAR_NGRAM: usize = 32;

/// Settings of a [`HashedEncoder`]. Every field has a default, and unknown fields are
/// rejected when deserialising.
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
    fn weight_mismatch(&self, saved: &Self) -> Option<String> {
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

        let varmap = VarMap::new();
        {
            let mut data = varmap.data().lock().expect("fresh VarMap lock");
            data.insert(TABLE.to_string(), table.clone());
            data.insert(PROJ_WEIGHT.to_string(), weight.clone());
            data.insert(PROJ_BIAS.to_string(), bias.clone());
        }
        let mut enc = Self {
            cfg,
            device: device.clone(),
            varmap,
            table,
            weight,
            bias,
            fingerprint: String::new(),
        };
        enc.refresh_fingerprint()?;
        Ok(enc)
    }

    /// The settings.
    pub fn config(&self) -> &HashedEncoderConfig {
        &self.cfg
    }

    /// The device of the weights and of the returned vectors.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Feature bucket ids of one text, in bag order (tokenisation: lowercase if set, split
    /// on non-alphanumeric characters; see the module docs). Never empty: a text without
    /// features gets the sentinel feature of `"e:"`.
    pub fn features(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::new();
        self.features_into(text, &mut out, &mut Scratch::default());
        out
    }

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

    /// Saves the weights (safetensors, the [`VarMap`] names) plus the config as a u8
    /// tensor `hashed_encoder.config_json`. Written to a temporary file and renamed, so a
    /// crash never leaves a truncated file at `path`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let file_err = |message: String| Error::ModelFile {
            path: path.to_path_buf(),
            message,
        };
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in self.named_vars() {
            tensors.insert(name.to_string(), var.as_tensor().detach());
        }
        let json = serde_json::to_vec(&self.cfg)
            .map_err(|e| file_err(format!("cannot serialise config: {e}")))?;
        let len = json.len();
        tensors.insert(
            CONFIG_TENSOR.to_string(),
            Tensor::from_vec(json, len, &Device::Cpu)?,
        );
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = std::path::PathBuf::from(tmp);
        candle_core::safetensors::save(&tensors, &tmp)
            .map_err(|e| file_err(format!("cannot write: {e}")))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| file_err(format!("cannot move {} into place: {e}", tmp.display())))
    }

    /// Loads weights saved by [`HashedEncoder::save`] (or any safetensors file with the
    /// three variables as f32 of the right shapes) and recomputes the fingerprint. If the
    /// file holds a config, its featurisation and shapes must equal this encoder's (`seed`
    /// and `normalize` may differ). Nothing is changed unless the whole file checks out.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let file_err = |message: String| Error::ModelFile {
            path: path.to_path_buf(),
            message,
        };
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| file_err(format!("cannot read: {e}")))?;
        if let Some(t) = tensors.get(CONFIG_TENSOR) {
            let bytes: Vec<u8> = t
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(|e| file_err(format!("bad {CONFIG_TENSOR}: {e}")))?;
            let saved: HashedEncoderConfig = serde_json::from_slice(&bytes)
                .map_err(|e| file_err(format!("bad {CONFIG_TENSOR}: {e}")))?;
            if let Some(msg) = self.cfg.weight_mismatch(&saved) {
                return Err(file_err(msg));
            }
        }
        let mut checked = Vec::new();
        for (name, var) in self.named_vars() {
            let t = tensors
                .get(name)
                .ok_or_else(|| file_err(format!("no tensor named {name}")))?;
            if t.dtype() != DType::F32 {
                return Err(file_err(format!("{name} is {:?}, expected F32", t.dtype())));
            }
            if t.dims() != var.dims() {
                return Err(file_err(format!(
                    "{name} has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            checked.push((var, t.to_device(&self.device)?));
        }
        for (var, t) in checked {
            var.set(&t)?;
        }
        self.refresh_fingerprint()
    }

    fn named_vars(&self) -> [(&'static str, &Var); 3] {
        [
            (TABLE, &self.table),
            (PROJ_WEIGHT, &self.weight),
            (PROJ_BIAS, &self.bias),
        ]
    }

    fn compute_fingerprint(&self) -> Result<String> {
        let mut h = Hasher64::new();
        h.update_framed(FINGERPRINT_TAG);
        // The seed only chooses the initial weights, which are hashed below: it is left out
        // so that loaded weights fingerprint the same whatever seed the encoder was built with.
        let settings = HashedEncoderConfig {
            seed: 0,
            ..self.cfg.clone()
        };
        let json = serde_json::to_vec(&settings)
            .map_err(|e| Error::Setting(format!("hashed encoder config: {e}")))?;
        h.update_framed(&json);
        let (ua, ub, uc) = std::char::UNICODE_VERSION;
        h.update(&[ua, ub, uc]);
        // Every variable of the VarMap, in name order (not just the three we know of, so
        // that anything a later change adds is covered too).
        let mut vars: Vec<(String, Var)> = {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| Error::Setting("VarMap lock poisoned".into()))?;
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        h.update_u64(vars.len() as u64);
        for (name, var) in vars {
            h.update_framed(name.as_bytes());
            h.update_framed(var.dtype().as_str().as_bytes());
            h.update_u64(var.rank() as u64);
            for &d in var.dims() {
                h.update_u64(d as u64);
            }
            let digests = match with_cpu_f32(var.as_tensor(), block_digests) {
                Some(digests) => digests,
                None => {
                    let values: Vec<f32> = var
                        .as_tensor()
                        .detach()
                        .to_dtype(DType::F32)?
                        .flatten_all()?
                        .to_vec1()?;
                    block_digests(&values)
                }
            };
            for digest in digests {
                h.update_u64(digest);
            }
        }
        Ok(format!("{:016x}", h.finish()))
    }

    /// The features of a batch: all bucket ids in text order, the owning text of each id,
    /// and each text's feature count as a `(b, 1)` column.
    fn batch_features(&self, texts: &[&str]) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
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

    /// The whole computation with candle ops, on whichever tensors are given (tracked vars
    /// for [`HashedEncoder::forward`], detached ones for [`Encoder::encode`] off the CPU).
    fn embed(
        &self,
        texts: &[&str],
        table: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> Result<Tensor> {
        let (b, bag_dim, dim) = (texts.len(), self.cfg.bag_dim, self.cfg.dim);
        if b == 0 {
            return Ok(Tensor::zeros((0, dim), DType::F32, &self.device)?);
        }
        let (ids, owner, counts) = self.batch_features(texts);
        let total = ids.len();
        let dev = &self.device;
        let ids = Tensor::from_vec(ids, total, dev)?;
        let owner = Tensor::from_vec(owner, total, dev)?;
        let rows = table.index_select(&ids, 0)?; // (total, bag_dim)
                                                 // Per text: 0 + row_1 + row_2 + ... in feature order (candle's CPU index_add).
        let sums = Tensor::zeros((b, bag_dim), DType::F32, dev)?.index_add(&owner, &rows, 0)?;
        let counts = Tensor::from_vec(counts, (b, 1), dev)?;
        self.head(&sums, &counts, weight, bias)
    }

    /// [`HashedEncoder::embed`] without autograd on a CPU table: the bag sums are read
    /// straight from the table's storage instead of gathering a `(features, bag_dim)`
    /// copy, with exactly the additions of candle's CPU `index_add` (a zeroed row, then
    /// each feature row added in feature order), so the bits are the same. `None` when
    /// the batch is empty or the table is not a contiguous f32 CPU tensor.
    fn embed_cpu(
        &self,
        texts: &[&str],
        table: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> Option<Result<Tensor>> {
        let (b, bag_dim) = (texts.len(), self.cfg.bag_dim);
        if b == 0 {
            return None;
        }
        let (ids, owner, counts) = self.batch_features(texts);
        let sums = with_cpu_f32(table, |data| {
            let mut sums = vec![0f32; b * bag_dim];
            for (&id, &text) in ids.iter().zip(&owner) {
                let row = &data[id as usize * bag_dim..(id as usize + 1) * bag_dim];
                let acc = &mut sums[text as usize * bag_dim..(text as usize + 1) * bag_dim];
                for (a, &x) in acc.iter_mut().zip(row) {
                    *a += x;
                }
            }
            sums
        })?;
        let run = || {
            let sums = Tensor::from_vec(sums, (b, bag_dim), &self.device)?;
            let counts = Tensor::from_vec(counts, (b, 1), &self.device)?;
            self.head(&sums, &counts, weight, bias)
        };
        Some(run())
    }

    /// Mean, projection in fixed-size row blocks, bias, normalisation.
    fn head(
        &self,
        sums: &Tensor,
        counts: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> Result<Tensor> {
        let b = sums.dim(0)?;
        let bag = sums.broadcast_div(counts)?;
        // Projection in fixed-size row blocks (see the module docs on determinism).
        let wt = weight.t()?; // (bag_dim, dim) view
        let mut blocks = Vec::with_capacity(b.div_ceil(PROJECTION_BLOCK_ROWS));
        for start in (0..b).step_by(PROJECTION_BLOCK_ROWS) {
            let len = PROJECTION_BLOCK_ROWS.min(b - start);
            let block = bag.narrow(0, start, len)?;
            if len == PROJECTION_BLOCK_ROWS {
                blocks.push(block.matmul(&wt)?);
            } else {
                let padded = block.pad_with_zeros(0, 0, PROJECTION_BLOCK_ROWS - len)?;
                blocks.push(padded.matmul(&wt)?.narrow(0, 0, len)?);
            }
        }
        let projected = if blocks.len() == 1 {
            blocks.pop().expect("one block")
        } else {
            Tensor::cat(&blocks, 0)?
        };
        let out = projected.broadcast_add(bias)?;
        if !self.cfg.normalize {
            return Ok(out);
        }
        let norm = out
            .sqr()?
            .sum_keepdim(1)?
            .affine(1.0, NORM_EPS_SQ)?
            .sqrt()?;
        Ok(out.broadcast_div(&norm)?)
    }

    /// One chunk of [`Encoder::encode`].
    fn encode_chunk(
        &self,
        texts: &[&str],
        table: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> Result<Tensor> {
        match self.embed_cpu(texts, table, weight, bias) {
            Some(result) => result,
            None => self.embed(texts, table, weight, bias),
        }
    }
}

impl Encoder for HashedEncoder {
    fn dim(&self) -> usize {
        self.cfg.dim
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

/// Reusable buffers of the featuriser.
#[derive(Default)]
struct Scratch {
    key: String,
    chars: Vec<char>,
}

/// Worker threads for the parallel init and fingerprint loops.
fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16)
}

/// Runs `f(index, item)` over `items`, split into contiguous groups across threads.
fn par_for_each<T: Send>(items: &mut [T], f: impl Fn(usize, &mut T) + Sync) {
    let threads = threads().min(items.len());
    if threads <= 1 {
        items.iter_mut().enumerate().for_each(|(i, x)| f(i, x));
        return;
    }
    let per = items.len().div_ceil(threads);
    let f = &f;
    std::thread::scope(|s| {
        for (g, group) in items.chunks_mut(per).enumerate() {
            s.spawn(move || {
                group
                    .iter_mut()
                    .enumerate()
                    .for_each(|(i, x)| f(g * per + i, x))
            });
        }
    });
}

/// The embedding table, U(-√(3/bag_dim), √(3/bag_dim)), from per-block streams (see the
/// module docs).
fn init_table(seed: u64, buckets: usize, bag_dim: usize) -> Vec<f32> {
    let mut table = vec![0f32; buckets * bag_dim];
    let bound = (3.0 / bag_dim as f32).sqrt();
    let mut blocks: Vec<&mut [f32]> = table.chunks_mut(INIT_BLOCK_ROWS * bag_dim).collect();
    par_for_each(&mut blocks, |j, block| {
        let mut rng = SplitMix64::new(hash64_seeded(
            seed,
            format!("hashed-v1/bag.weight/{j}").as_bytes(),
        ));
        for x in block.iter_mut() {
            *x = rng.uniform(-bound, bound);
        }
    });
    table
}

/// Runs `f` on the values of `t` in place when it is a contiguous f32 CPU tensor (holding
/// its storage's read lock meanwhile); `None` otherwise.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return None;
    };
    let (start, end) = layout.contiguous_offsets()?;
    let data = cpu.as_slice::<f32>().ok()?;
    Some(f(&data[start..end]))
}

/// `hash64` of the little-endian bytes of each block of [`FINGERPRINT_BLOCK`] values, in
/// order. Blocks are hashed four at a time ([`hash64_x4`]) and groups spread over threads;
/// neither changes the digests.
fn block_digests(values: &[f32]) -> Vec<u64> {
    let blocks: Vec<&[f32]> = values.chunks(FINGERPRINT_BLOCK).collect();
    let mut groups: Vec<(&[&[f32]], [u64; 4])> = blocks.chunks(4).map(|g| (g, [0; 4])).collect();
    par_for_each(&mut groups, |_, (group, out)| {
        let bytes: Vec<Vec<u8>> = group
            .iter()
            .map(|b| b.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        if bytes.len() == 4 && bytes.iter().all(|b| b.len() == bytes[0].len()) {
            *out = hash64_x4([&bytes[0], &bytes[1], &bytes[2], &bytes[3]]);
        } else {
            for (o, b) in out.iter_mut().zip(&bytes) {
                *o = hash64(b);
            }
        }
    });
    groups
        .into_iter()
        .flat_map(|(g, out)| out.into_iter().take(g.len()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(seed: u64) -> HashedEncoderConfig {
        HashedEncoderConfig {
            buckets: 4096,
            bag_dim: 32,
            dim: 16,
            seed,
            ..Default::default()
        }
    }

    fn rows(t: &Tensor) -> Vec<Vec<f32>> {
        t.to_vec2::<f32>().unwrap()
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// `n` pseudo-random texts of 0..=max_words words from a small vocabulary.
    fn texts(seed: u64, n: usize, max_words: usize) -> Vec<String> {
        const VOCAB: [&str; 24] = [
            "the",
            "stale",
            "cache",
            "embedding",
            "retriever",
            "query",
            "document",
            "passage",
            "dense",
            "vector",
            "négatif",
            "train",
            "Corrector",
            "index",
            "shard",
            "fresh",
            "loss",
            "a",
            "ÜBER",
            "x",
            "gradient",
            "epoch",
            "42",
            "hash-map",
        ];
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                let words = (rng.next_u64() % (max_words as u64 + 1)) as usize;
                let mut s = String::new();
                for i in 0..words {
                    if i > 0 {
                        s.push_str(if rng.next_u64().is_multiple_of(5) {
                            ", "
                        } else {
                            " "
                        });
                    }
                    s.push_str(VOCAB[(rng.next_u64() % VOCAB.len() as u64) as usize]);
                }
                s
            })
            .collect()
    }

    fn tmp_path(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("freshen-operators-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn features_of_a_known_text() {
        let cfg = HashedEncoderConfig {
            word_ngrams: 2,
            char_ngrams: (3, 3),
            ..small(0)
        };
        let enc = HashedEncoder::new(cfg.clone(), &Device::Cpu).unwrap();
        let b = |k: &str| (hash64(k.as_bytes()) % cfg.buckets as u64) as u32;
        let expected: Vec<u32> = [
            "w:hi", "w:bob", "w:hi bob", "c:<hi", "c:hi>", "c:<bo", "c:bob", "c:ob>",
        ]
        .into_iter()
        .map(b)
        .collect();
        assert_eq!(enc.features("Hi, BOB!"), expected);
        assert_eq!(enc.features("  hi -- bob  "), expected);
        // Buckets are pinned through the hash: the default bucket count gives these ids.
        assert_eq!(
            hash64(b"w:hi") % (1 << 18),
            hash64(b"w:hi") & ((1 << 18) - 1)
        );
        // No features at all: the sentinel.
        assert_eq!(enc.features(""), vec![b("e:")]);
        assert_eq!(enc.features(" ,;! "), vec![b("e:")]);
        // Unicode letters are word characters, and lowercasing is Unicode.
        assert_eq!(enc.features("ÜBER")[0], b("w:über"));
        // Without lowercasing, case is kept; with char n-grams (2, 3) both sizes appear.
        let cfg2 = HashedEncoderConfig {
            lowercase: false,
            word_ngrams: 1,
            char_ngrams: (2, 3),
            ..small(0)
        };
        let enc2 = HashedEncoder::new(cfg2, &Device::Cpu).unwrap();
        let expected2: Vec<u32> = ["w:Ab", "c:<A", "c:Ab", "c:b>", "c:<Ab", "c:Ab>"]
            .into_iter()
            .map(b)
            .collect();
        assert_eq!(enc2.features("Ab"), expected2);
        // Words only.
        let cfg3 = HashedEncoderConfig {
            char_ngrams: (0, 0),
            word_ngrams: 3,
            ..small(0)
        };
        let enc3 = HashedEncoder::new(cfg3, &Device::Cpu).unwrap();
        let expected3: Vec<u32> = ["w:a", "w:b", "w:c", "w:a b", "w:b c", "w:a b c"]
            .into_iter()
            .map(b)
            .collect();
        assert_eq!(enc3.features("a b c"), expected3);
    }

    #[test]
    fn config_validation_names_the_field() {
        HashedEncoderConfig::default().validate().unwrap();
        let cases: Vec<(HashedEncoderConfig, &str)> = vec![
            (
                HashedEncoderConfig {
                    buckets: 0,
                    ..Default::default()
                },
                "buckets",
            ),
            (
                HashedEncoderConfig {
                    buckets: u32::MAX as usize + 1,
                    bag_dim: 1,
                    ..Default::default()
                },
                "buckets",
            ),
            (
                HashedEncoderConfig {
                    buckets: 1 << 30,
                    bag_dim: 256,
                    ..Default::default()
                },
                "buckets",
            ),
            (
                HashedEncoderConfig {
                    bag_dim: 0,
                    ..Default::default()
                },
                "bag_dim",
            ),
            (
                HashedEncoderConfig {
                    dim: 0,
                    ..Default::default()
                },
                "dim",
            ),
            (
                HashedEncoderConfig {
                    word_ngrams: 100,
                    ..Default::default()
                },
                "word_ngrams",
            ),
            (
                HashedEncoderConfig {
                    char_ngrams: (4, 3),
                    ..Default::default()
                },
                "char_ngrams",
            ),
            (
                HashedEncoderConfig {
                    char_ngrams: (0, 3),
                    ..Default::default()
                },
                "char_ngrams",
            ),
            (
                HashedEncoderConfig {
                    char_ngrams: (3, 1000),
                    ..Default::default()
                },
                "char_ngrams",
            ),
            (
                HashedEncoderConfig {
                    word_ngrams: 0,
                    char_ngrams: (0, 0),
                    ..Default::default()
                },
                "word_ngrams",
            ),
        ];
        for (cfg, field) in cases {
            match cfg.validate() {
                Err(Error::Setting(msg)) => {
                    assert!(msg.contains(field), "{msg:?} should name {field}")
                }
                other => panic!("{cfg:?}: expected a setting error naming {field}, got {other:?}"),
            }
            assert!(HashedEncoder::new(cfg, &Device::Cpu).is_err());
        }
        // Either kind of feature alone is fine.
        HashedEncoderConfig {
            word_ngrams: 0,
            ..Default::default()
        }
        .validate()
        .unwrap();
        HashedEncoderConfig {
            char_ngrams: (0, 0),
            ..Default::default()
        }
        .validate()
        .unwrap();
        // Serde: missing fields take defaults, unknown fields are rejected.
        let cfg: HashedEncoderConfig =
            serde_json::from_str(r#"{"dim": 64, "char_ngrams": [2, 4]}"#).unwrap();
        assert_eq!(
            cfg,
            HashedEncoderConfig {
                dim: 64,
                char_ngrams: (2, 4),
                ..Default::default()
            }
        );
        assert!(serde_json::from_str::<HashedEncoderConfig>(r#"{"dims": 64}"#).is_err());
    }

    #[test]
    fn seeded_init_is_reproducible() {
        let ts = texts(1, 50, 20);
        let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
        let a = HashedEncoder::new(small(7), &Device::Cpu).unwrap();
        let b = HashedEncoder::new(small(7), &Device::Cpu).unwrap();
        let c = HashedEncoder::new(small(8), &Device::Cpu).unwrap();
        assert_eq!(a.fingerprint().len(), 16);
        assert!(a.fingerprint().chars().all(|ch| ch.is_ascii_hexdigit()));
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        let (va, vb, vc) = (
            a.encode(&refs).unwrap(),
            b.encode(&refs).unwrap(),
            c.encode(&refs).unwrap(),
        );
        assert_eq!(rows(&va), rows(&vb));
        assert_ne!(rows(&va), rows(&vc));
        // A setting that changes the vectors changes the fingerprint, even with equal weights.
        let d = HashedEncoder::new(
            HashedEncoderConfig {
                normalize: false,
                ..small(7)
            },
            &Device::Cpu,
        )
        .unwrap();
        assert_ne!(a.fingerprint(), d.fingerprint());
        // The init follows the documented distributions.
        let table: Vec<f32> = a
            .table
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let n = table.len() as f64;
        let mean = table.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = table
            .iter()
            .map(|&x| (x as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        assert!(
            mean.abs() < 0.005 && (var * 32.0 - 1.0).abs() < 0.03,
            "table mean {mean} var {var}"
        );
        let t_bound = (3.0f32 / 32.0).sqrt();
        assert!(table.iter().all(|x| x.abs() <= t_bound));
        let w: Vec<f32> = a
            .weight
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let bound = 1.0 / 32f32.sqrt();
        assert!(w.iter().all(|x| x.abs() <= bound) && w.iter().any(|x| x.abs() > 0.9 * bound));
        let bias: Vec<f32> = a.bias.as_tensor().to_vec1().unwrap();
        assert!(bias.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn a_texts_vector_does_not_depend_on_its_batch() {
        // Production widths (bag_dim 256 -> dim 128), so gemm sees its real shapes.
        let cfg = HashedEncoderConfig {
            buckets: 1 << 14,
            ..Default::default()
        };
        let enc = HashedEncoder::new(cfg, &Device::Cpu).unwrap();
        let mut probes = texts(2, 6, 40);
        probes.push(String::new());
        probes.push("a".into());
        probes.push("the stale cache, the fresh cache and the corrector between them".into());
        let pool = texts(3, 400, 60);
        let alone: Vec<Vec<u32>> = probes
            .iter()
            .map(|p| bits(&rows(&enc.encode(&[p]).unwrap())[0]))
            .collect();
        // forward gives the same bits as encode.
        for (p, want) in probes.iter().zip(&alone) {
            assert_eq!(
                &bits(&rows(&enc.forward(&[p]).unwrap())[0]),
                want,
                "forward vs encode on {p:?}"
            );
        }
        for k in [
            1usize, 2, 3, 7, 31, 63, 64, 65, 127, 128, 129, 255, 256, 257, 300,
        ] {
            let neighbours: Vec<&str> = pool[..k].iter().map(String::as_str).collect();
            for (p, want) in probes.iter().zip(&alone) {
                for pos in [0, k / 2, k] {
                    let mut batch = neighbours.clone();
                    batch.insert(pos, p);
                    let got = rows(&enc.encode(&batch).unwrap());
                    assert_eq!(
                        &bits(&got[pos]),
                        want,
                        "text {p:?} at {pos} among {k} neighbours (encode)"
                    );
                    if k == 65 || k == 300 {
                        let got = rows(&enc.forward(&batch).unwrap());
                        assert_eq!(
                            &bits(&got[pos]),
                            want,
                            "text {p:?} at {pos} among {k} neighbours (forward)"
                        );
                    }
                }
            }
        }
        // Empty batch.
        assert_eq!(enc.encode(&[]).unwrap().dims(), &[0, 128]);
    }

    #[test]
    fn vectors_are_normalised_and_finite() {
        let ts = texts(4, 100, 30);
        let mut refs: Vec<&str> = ts.iter().map(String::as_str).collect();
        refs.extend(["", "...", "a"]);
        let enc = HashedEncoder::new(small(1), &Device::Cpu).unwrap();
        let v = enc.encode(&refs).unwrap();
        assert_eq!(v.dims(), &[refs.len(), 16]);
        for (t, row) in refs.iter().zip(rows(&v)) {
            assert!(row.iter().all(|x| x.is_finite()), "{t:?}");
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "norm {norm} of {t:?}");
        }
        // Texts without features share the sentinel vector.
        let r = rows(&v);
        assert_eq!(r[refs.len() - 3], r[refs.len() - 2]);
        // Without normalisation, norms vary.
        let raw = HashedEncoder::new(
            HashedEncoderConfig {
                normalize: false,
                ..small(1)
            },
            &Device::Cpu,
        )
        .unwrap();
        let norms: Vec<f32> = rows(&raw.encode(&refs).unwrap())
            .iter()
            .map(|r| r.iter().map(|x| x * x).sum::<f32>().sqrt())
            .collect();
        assert!(norms.iter().all(|n| n.is_finite() && *n > 0.0));
        assert!(norms.iter().any(|n| (n - 1.0).abs() > 0.1));
        // ...and normalising the raw vectors gives the normalised ones (same weights: same seed).
        for (raw_row, row) in rows(&raw.encode(&refs).unwrap()).iter().zip(&r) {
            let n = raw_row.iter().map(|x| x * x).sum::<f32>().sqrt();
            for (a, b) in raw_row.iter().zip(row) {
                assert!((a / n - b).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn untrained_vectors_reflect_shared_ngrams() {
        let enc = HashedEncoder::new(
            HashedEncoderConfig {
                buckets: 1 << 16,
                ..Default::default()
            },
            &Device::Cpu,
        )
        .unwrap();
        let unrelated = [
            "quantum chromodynamics lattice",
            "medieval tapestry weaving guild",
            "volcanic basalt formations iceland",
            "jazz saxophone improvisation",
        ];
        let v = rows(&enc.encode(&unrelated).unwrap());
        let cos = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
        for i in 0..v.len() {
            for j in i + 1..v.len() {
                assert!(
                    cos(&v[i], &v[j]).abs() < 0.35,
                    "{} vs {}: {}",
                    unrelated[i],
                    unrelated[j],
                    cos(&v[i], &v[j])
                );
            }
        }
        let near = rows(
            &enc.encode(&[
                "stale embedding cache",
                "stale embedding caches",
                "fresh vector index",
            ])
            .unwrap(),
        );
        assert!(cos(&near[0], &near[1]) > 0.8);
        assert!(cos(&near[0], &near[1]) > cos(&near[0], &near[2]) + 0.3);
    }

    #[test]
    fn save_load_round_trip() {
        let ts = texts(6, 40, 25);
        let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
        let a = HashedEncoder::new(small(11), &Device::Cpu).unwrap();
        let path = tmp_path("round-trip.safetensors");
        a.save(&path).unwrap();
        // Another seed: different weights until loaded.
        let mut b = HashedEncoder::new(small(12), &Device::Cpu).unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
        b.load_weights(&path).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let (va, vb) = (
            rows(&a.encode(&refs).unwrap()),
            rows(&b.encode(&refs).unwrap()),
        );
        for (x, y) in va.iter().zip(&vb) {
            assert_eq!(bits(x), bits(y));
        }
        // The file also works with a plain VarMap load (the names are the VarMap's).
        let mut c = HashedEncoder::new(small(13), &Device::Cpu).unwrap();
        c.varmap.clone().load(&path).unwrap();
        c.refresh_fingerprint().unwrap();
        assert_eq!(c.fingerprint(), a.fingerprint());

        // A different featurisation is refused and leaves the encoder untouched.
        let mut d = HashedEncoder::new(
            HashedEncoderConfig {
                char_ngrams: (2, 4),
                ..small(11)
            },
            &Device::Cpu,
        )
        .unwrap();
        let before = d.fingerprint().to_string();
        match d.load_weights(&path) {
            Err(Error::ModelFile { path: p, message }) => {
                assert_eq!(p, path);
                assert!(message.contains("char_ngrams"), "{message}");
            }
            other => panic!("expected a model file error, got {other:?}"),
        }
        assert_eq!(d.fingerprint(), before);
        // So is a different shape, and a missing file.
        let mut e = HashedEncoder::new(
            HashedEncoderConfig {
                dim: 8,
                ..small(11)
            },
            &Device::Cpu,
        )
        .unwrap();
        assert!(matches!(
            e.load_weights(&path),
            Err(Error::ModelFile { .. })
        ));
        let missing = tmp_path("missing.safetensors");
        assert!(matches!(
            b.load_weights(&missing),
            Err(Error::ModelFile { .. })
        ));
        std::fs::remove_file(&path).unwrap();
        let _ = std::fs::remove_dir(path.parent().unwrap());
    }

    #[test]
    fn forward_is_differentiable_and_refresh_tracks_weights() {
        let ts = texts(7, 70, 20);
        let mut refs: Vec<&str> = ts.iter().map(String::as_str).collect();
        refs.push("");
        let mut enc = HashedEncoder::new(small(3), &Device::Cpu).unwrap();
        let out = enc.forward(&refs).unwrap();
        let target = Tensor::from_vec(
            (0..refs.len() * 16)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) / 5.0)
                .collect::<Vec<_>>(),
            (refs.len(), 16),
            &Device::Cpu,
        )
        .unwrap();
        let loss = (out - &target).unwrap().sqr().unwrap().mean_all().unwrap();
        let grads = loss.backward().unwrap();
        let vars = enc.varmap().all_vars();
        assert_eq!(vars.len(), 3);
        for var in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("no gradient for a var of shape {:?}", var.dims()));
            let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            assert!(g.iter().all(|x| x.is_finite()));
            assert!(
                g.iter().any(|&x| x != 0.0),
                "all-zero gradient for shape {:?}",
                var.dims()
            );
        }
        // A small gradient step lowers the loss, and the refreshed fingerprint follows the weights.
        let before = enc.fingerprint().to_string();
        for var in &vars {
            let g = grads.get(var.as_tensor()).unwrap();
            var.set(&(var.as_tensor() - (g * 0.5).unwrap()).unwrap())
                .unwrap();
        }
        let loss2 = (enc.forward(&refs).unwrap() - &target)
            .unwrap()
            .sqr()
            .unwrap()
            .mean_all()
            .unwrap();
        assert!(loss2.to_scalar::<f32>().unwrap() < loss.to_scalar::<f32>().unwrap());
        assert_eq!(enc.fingerprint(), before);
        enc.refresh_fingerprint().unwrap();
        assert_ne!(enc.fingerprint(), before);
    }

    /// `cargo test --release -p freshen-operators encode_speed -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn encode_speed() {
        let t0 = std::time::Instant::now();
        let mut enc = HashedEncoder::new(HashedEncoderConfig::default(), &Device::Cpu).unwrap();
        println!("new (default config, 2^18 x 256 table): {:?}", t0.elapsed());
        let t0 = std::time::Instant::now();
        enc.refresh_fingerprint().unwrap();
        println!("fingerprint: {:?}", t0.elapsed());
        let mut rng = SplitMix64::new(9);
        let ts: Vec<String> = (0..10_000)
            .map(|_| {
                let n = 10 + (rng.next_u64() % 11) as usize;
                (0..n)
                    .map(|_| {
                        let len = 2 + (rng.next_u64() % 8) as usize;
                        (0..len)
                            .map(|_| (b'a' + (rng.next_u64() % 26) as u8) as char)
                            .collect::<String>()
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let refs: Vec<&str> = ts.iter().map(String::as_str).collect();
        let feats: usize = refs.iter().map(|t| enc.features(t).len()).sum();
        println!(
            "{} texts, {:.1} features/text",
            refs.len(),
            feats as f64 / refs.len() as f64
        );
        for _ in 0..3 {
            let t0 = std::time::Instant::now();
            let v = enc.encode(&refs).unwrap();
            let dt = t0.elapsed();
            assert_eq!(v.dims(), &[10_000, 128]);
            println!(
                "encode 10k: {dt:?} ({:.0} texts/s)",
                10_000.0 / dt.as_secs_f64()
            );
        }
        let t0 = std::time::Instant::now();
        for t in &refs {
            std::hint::black_box(enc.features(t));
        }
        println!("features only: {:?}", t0.elapsed());
    }
}
