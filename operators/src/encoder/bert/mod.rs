//! BERT-family encoders from sentence-transformers folders (all-MiniLM-L6-v2, BGE, E5 of
//! the BERT architecture), for inference and fine-tuning on candle.
//!
//! ```text
//! text ─ prefix ─ word pieces (tokenizer.json, truncated at max_length) ─ sorted by length,
//!      batched by a token budget ─ BERT (config.json, model.safetensors) ─ token vectors
//!      ─ pooling (1_Pooling: mean or [CLS]) ─ optional L2 normalisation ─▶ vector
//! ```
//!
//! * The folder decides the model, pooling and normalisation ([`FolderConfig`]); the
//!   [`BertOptions`] may override pooling, normalisation and the input length, and add a
//!   prefix (`"query: "` for E5-style models).
//! * Batch invariance: padding gets exactly zero attention weight and is left out of mean
//!   pooling, so a text's vector does not depend on its neighbours except through the
//!   summation order of the matrix products, whose blocking depends on the batch shape:
//!   agreement within 1e-5 absolute per component (tested), not bit-identity.
//! * Fine-tuning: every weight not frozen by [`BertOptions::freeze_embeddings`] or
//!   [`BertOptions::freeze_layers`] is a [`candle_core::Var`]; frozen weights are plain
//!   tensors, so the backward pass neither computes nor stores their gradients.
//! * Checkpoints ([`BertEncoder::save_folder`]) are sentence-transformers folders: the
//!   trained weights under their original names, with the source folder's other files
//!   copied, so sentence-transformers and Hugging Face load them unchanged.

mod config;
mod model;
mod tokenize;
mod train;
mod weights;

#[cfg(test)]
pub(crate) mod tests;

pub use config::{BertConfig, FolderConfig, Pooling};
pub use tokenize::plan_batches;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};

use crate::device::Precision;
use crate::hashing::Hasher64;
use crate::ranges::at_least;
use crate::{Encoder, Result};
use model::BertNet;
use tokenize::TextTokenizer;

/// Default token budget of one batch (inputs × padded length). The layers compute no
/// padding rows (texts run end to end, [`crate::backend`]), so a batch's padding costs
/// little, and larger batches give the matrix products better shapes: on this project's
/// 2-core machine, MiniLM encoded 128-piece passages at 43.0 sentences/s with 1,024,
/// 48.9 with 2,048 and 49.2 with 4,096, glosses at 554 / 519 / 558, and a training step
/// of 32 queries × 8 such passages ran about a tenth faster at 4,096 than at 1,024
/// (docs/design/performance.md, "A BERT layer as one op"). Before the layers skipped
/// padding, 1,024 won: larger batches of WordNet texts carried more padding.
pub const DEFAULT_BATCH_TOKENS: usize = 4096;

/// What the user may set on top of the folder. Every field has a default; unknown
/// fields are rejected when deserialising.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default, deny_unknown_fields)]
pub struct BertOptions {
    /// `mean` or `cls`; default: what `1_Pooling/config.json` says.
    pub pooling: Option<Pooling>,
    /// L2-normalise the output; default: whether `modules.json` has a Normalize module.
    pub normalize: Option<bool>,
    /// Longest input in tokens; default: the folder's `max_seq_length` (256 for MiniLM),
    /// else the position table's length. Never more than the position table.
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub max_length: Option<usize>,
    /// Prepended to every text this model embeds (e.g. `"query: "` for E5 models).
    pub prefix: String,
    /// Token budget of one batch (texts × padded length); texts are sorted by length.
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub batch_tokens: usize,
    /// At most this many texts per batch.
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub max_batch: usize,
    /// When training: keep the embedding tables fixed.
    pub freeze_embeddings: bool,
    /// When training: keep the lowest this many transformer layers fixed.
    pub freeze_layers: usize,
    /// Compute precision: `f32`, or `bf16` / `f16` mixed precision (f32 master weights
    /// and optimiser state; see [`Precision`]).
    pub dtype: Precision,
}

impl Default for BertOptions {
    fn default() -> Self {
        Self {
            pooling: None,
            normalize: None,
            max_length: None,
            prefix: String::new(),
            batch_tokens: DEFAULT_BATCH_TOKENS,
            max_batch: 256,
            freeze_embeddings: false,
            freeze_layers: 0,
            dtype: Precision::F32,
        }
    }
}

impl BertOptions {
    /// Checks the ranges that need no folder; the error ([`crate::Error::Field`]) names
    /// the field. What depends on the folder (`max_length` against the position table) is
    /// checked when it loads.
    pub fn validate(&self) -> Result<()> {
        at_least("batch_tokens", self.batch_tokens, 1)?;
        at_least("max_batch", self.max_batch, 1)?;
        if let Some(n) = self.max_length {
            at_least("max_length", n, 1)?;
        }
        Ok(())
    }
}

/// One weight: its name, its tensor, and the variable behind it when it trains.
#[derive(Clone)]
struct Param {
    name: String,
    tensor: Tensor,
    var: Option<Var>,
}

/// A BERT-family text encoder (see the module docs).
pub struct BertEncoder {
    folder: FolderConfig,
    options: BertOptions,
    pooling: Pooling,
    normalize: bool,
    tokenizer: TextTokenizer,
    device: Device,
    /// Every tensor the network reads, in [`model::expected_shapes`] order.
    params: Vec<Param>,
    /// Tensors of the file the network does not read (the pooler, say), kept for saving.
    extra: Vec<(String, Tensor)>,
    /// Over the variables: forwards record their graph.
    train_net: BertNet,
    /// Over detached views of the same storage: forwards record nothing.
    infer_net: BertNet,
    fingerprint: String,
}

impl BertEncoder {
    /// Checks the folder `dir` without loading the model: its JSON files, the tokenizer,
    /// and the weight file's header against the config. What `freshen check` runs.
    pub fn check_folder(dir: &Path) -> Result<FolderConfig> {
        let folder = FolderConfig::read(dir)?;
        let max = folder
            .max_seq_length
            .unwrap_or(folder.bert.max_position_embeddings);
        TextTokenizer::load(&dir.join("tokenizer.json"), max)?;
        weights::check_header(&folder)?;
        Ok(folder)
    }

    /// Loads the sentence-transformers folder `dir` onto the CPU. Every file is checked
    /// before use; a problem is a [`crate::Error::ModelFile`] naming the file.
    pub fn load(dir: &Path, options: BertOptions) -> Result<Self> {
        Self::load_on(dir, options, &crate::device::cpu())
    }

    /// As [`BertEncoder::load`], with the weights on `device`.
    pub fn load_on(dir: &Path, options: BertOptions, device: &Device) -> Result<Self> {
        options.validate()?;
        let folder = FolderConfig::read(dir)?;
        let device = device.clone();
        let positions = folder.bert.max_position_embeddings;
        let max_length = options
            .max_length
            .or(folder.max_seq_length)
            .unwrap_or(positions);
        if max_length == 0 || max_length > positions {
            return Err(crate::Error::Setting(format!(
                "max_length {max_length} must be in 1..={positions} (the model's position table)"
            )));
        }
        if options.batch_tokens < max_length {
            return Err(crate::Error::Setting(format!(
                "batch_tokens {} must be at least max_length {max_length}",
                options.batch_tokens
            )));
        }
        let tokenizer = TextTokenizer::load(&dir.join("tokenizer.json"), max_length)?;
        let (params, extra) = weights::load(&folder, &options, &device)?;
        Self::assemble(folder, options, tokenizer, device, params, extra)
    }

    fn assemble(
        folder: FolderConfig,
        options: BertOptions,
        tokenizer: TextTokenizer,
        device: Device,
        params: Vec<Param>,
        extra: Vec<(String, Tensor)>,
    ) -> Result<Self> {
        let lookup = |detached: bool| {
            let params = &params;
            move |name: &str| -> Result<Tensor> {
                let p = params
                    .iter()
                    .find(|p| p.name == name)
                    .ok_or_else(|| crate::Error::Setting(format!("no weight {name}")))?;
                Ok(if detached {
                    p.tensor.detach()
                } else {
                    p.tensor.clone()
                })
            }
        };
        let dtype = options.dtype.dtype();
        let train_net = BertNet::new(&folder.bert, true, dtype, &lookup(false))?;
        let infer_net = BertNet::new(&folder.bert, false, dtype, &lookup(true))?;
        let mut enc = Self {
            pooling: options.pooling.unwrap_or(folder.pooling),
            normalize: options.normalize.unwrap_or(folder.normalize),
            folder,
            options,
            tokenizer,
            device,
            params,
            extra,
            train_net,
            infer_net,
            fingerprint: String::new(),
        };
        enc.fingerprint = enc.compute_fingerprint()?;
        Ok(enc)
    }

    /// The folder this encoder was loaded from.
    pub fn dir(&self) -> &Path {
        &self.folder.dir
    }

    /// The model's shape.
    pub fn config(&self) -> &BertConfig {
        &self.folder.bert
    }

    /// The pooling in effect.
    pub fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The longest input kept, in tokens.
    pub fn max_length(&self) -> usize {
        self.tokenizer.max_length()
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Word-piece ids of `texts` (prefix added, truncated).
    pub fn tokenize(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>> {
        let owned: Vec<String> = texts
            .iter()
            .map(|t| format!("{}{t}", self.options.prefix))
            .collect();
        self.tokenizer.encode(&owned)
    }

    /// Vectors of `texts` through `net`, batched by the token budget, in input order.
    fn embed(&self, net: &BertNet, texts: &[&str]) -> Result<Tensor> {
        let hidden = self.folder.bert.hidden_size;
        if texts.is_empty() {
            return Ok(Tensor::zeros(
                (0, hidden),
                candle_core::DType::F32,
                &self.device,
            )?);
        }
        let ids = self.tokenize(texts)?;
        let lengths: Vec<usize> = ids.iter().map(Vec::len).collect();
        let batches = plan_batches(
            &lengths,
            self.options.batch_tokens,
            self.options.max_batch,
            net.parts_per_batch(),
        );
        let prepared = net.prepare(lengths.iter().sum())?;
        let mut parts = Vec::with_capacity(batches.len());
        let mut order = Vec::with_capacity(texts.len());
        for batch in &batches {
            let rows: Vec<&[u32]> = batch.iter().map(|&i| ids[i].as_slice()).collect();
            let tb = tokenize::pad_batch(&rows, self.tokenizer.pad_id(), &self.device)?;
            // Token vectors in the compute type; pooled and normalised in f32.
            let tokens = net.forward(&tb, &prepared)?.to_dtype(DType::F32)?;
            let mut v = model::pool(&tokens, &tb.mask, self.pooling)?;
            if self.normalize {
                v = model::l2_normalize(&v)?;
            }
            parts.push(v);
            order.extend_from_slice(batch);
        }
        let all = Tensor::cat(&parts, 0)?;
        // Row r of `all` is input order[r]: gather back into input order.
        let mut position = vec![0u32; order.len()];
        for (r, &i) in order.iter().enumerate() {
            position[i] = r as u32;
        }
        let index = Tensor::from_vec(position, order.len(), &self.device)?;
        Ok(all.index_select(&index, 0)?)
    }

    /// Identity of the weights and every setting that changes vectors.
    fn compute_fingerprint(&self) -> Result<String> {
        let mut h = Hasher64::new();
        h.update_framed(b"freshen/bert-v2");
        let cfg = serde_json::to_vec(&self.folder.bert)
            .map_err(|e| crate::Error::Setting(format!("bert config: {e}")))?;
        h.update_framed(&cfg);
        h.update_framed(format!("{:?}", self.pooling).as_bytes());
        h.update_u64(self.normalize as u64);
        h.update_u64(self.tokenizer.max_length() as u64);
        h.update_framed(self.options.prefix.as_bytes());
        // f32 adds nothing, so stores written before the setting existed stay valid.
        if self.options.dtype.is_half() {
            h.update_framed(self.options.dtype.to_string().as_bytes());
        }
        let tok = std::fs::read(self.folder.dir.join("tokenizer.json")).unwrap_or_default();
        h.update_framed(&tok);
        for p in &self.params {
            h.update_framed(p.name.as_bytes());
            for d in crate::encoder::hashed::tensor_digests(&p.tensor)? {
                h.update_u64(d);
            }
        }
        Ok(format!("{:016x}", h.finish()))
    }

    /// Names of the weights that train (all but the frozen ones).
    pub fn trainable_names(&self) -> Vec<String> {
        self.params
            .iter()
            .filter(|p| p.var.is_some())
            .map(|p| p.name.clone())
            .collect()
    }

    /// Writes a sentence-transformers folder at `dir`: the current weights as
    /// `model.safetensors` under their original names (plus the file's other tensors),
    /// and the source folder's other files copied. Written beside and renamed into place.
    pub fn save_folder(&self, dir: &Path) -> Result<PathBuf> {
        weights::save_folder(self, dir)
    }
}

impl Encoder for BertEncoder {
    fn dim(&self) -> usize {
        self.folder.bert.hidden_size
    }

    fn device(&self) -> &Device {
        BertEncoder::device(self)
    }

    /// Inference forward (records nothing), returned on the CPU.
    fn encode(&self, texts: &[&str]) -> Result<Tensor> {
        Ok(self
            .embed(&self.infer_net, texts)?
            .to_device(&crate::device::cpu())?)
    }

    fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}
