//! What a sentence-transformers folder says about its model, read and checked up front so
//! that a bad folder fails at load with the file named, never mid-run.
//!
//! A folder holds `config.json` (the transformer's shape), `tokenizer.json`,
//! `model.safetensors`, and optionally `1_Pooling/config.json` (how token vectors become
//! one vector), `modules.json` (whether a `Normalize` module follows) and
//! `sentence_bert_config.json` (the longest input, `max_seq_length`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The transformer's shape, from `config.json` (Hugging Face's `BertConfig` fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Rows of the word-piece embedding table.
    pub vocab_size: usize,
    /// Width of every token vector (384 for MiniLM).
    pub hidden_size: usize,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer; divides `hidden_size`.
    pub num_attention_heads: usize,
    /// Width of the feed-forward block.
    pub intermediate_size: usize,
    /// Feed-forward activation: `gelu` (erf form) is what BERT checkpoints use.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Longest input the position table covers.
    pub max_position_embeddings: usize,
    /// Rows of the segment (token type) table.
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Epsilon of every layer norm.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// `bert` (others such as `roberta` shift positions and are refused).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Only `absolute` position embeddings are supported.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_act() -> String {
    "gelu".into()
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_model_type() -> String {
    "bert".into()
}
fn default_position_type() -> String {
    "absolute".into()
}

/// How token vectors are pooled into one text vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Mean of the non-padding token vectors (MiniLM, most sentence-transformers models).
    Mean,
    /// The first (`[CLS]`) token's vector (BGE, DPR-style models).
    Cls,
}

/// Everything the folder fixes about the model, checked.
#[derive(Debug, Clone)]
pub struct FolderConfig {
    /// The folder.
    pub dir: PathBuf,
    /// `config.json`.
    pub bert: BertConfig,
    /// From `1_Pooling/config.json`; mean when the folder has none (sentence-transformers'
    /// own default for a bare transformer folder).
    pub pooling: Pooling,
    /// Whether `modules.json` lists a `Normalize` module.
    pub normalize: bool,
    /// `max_seq_length` of `sentence_bert_config.json`, if present.
    pub max_seq_length: Option<usize>,
}

pub(crate) fn file_err(path: &Path, message: impl Into<String>) -> Error {
    Error::ModelFile {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| file_err(path, e.to_string()))?;
    serde_json::from_str(&text).map_err(|e| file_err(path, format!("bad JSON: {e}")))
}

impl FolderConfig {
    /// Reads and checks the folder's JSON files (not the weights or the tokenizer).
    pub fn read(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(file_err(
                dir,
                "no such model folder (fetch one with scripts/fetch-model.sh)",
            ));
        }
        let path = dir.join("config.json");
        let bert: BertConfig = read_json(&path)?;
        bert.check(&path)?;
        let pooling_path = dir.join("1_Pooling").join("config.json");
        let pooling = if pooling_path.exists() {
            read_pooling(&pooling_path, bert.hidden_size)?
        } else {
            Pooling::Mean
        };
        let modules_path = dir.join("modules.json");
        let normalize = if modules_path.exists() {
            let modules: Vec<serde_json::Value> = read_json(&modules_path)?;
            modules.iter().any(|m| {
                m.get("type")
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| t.ends_with(".Normalize"))
            })
        } else {
            false
        };
        let st_path = dir.join("sentence_bert_config.json");
        let max_seq_length = if st_path.exists() {
            let v: serde_json::Value = read_json(&st_path)?;
            v.get("max_seq_length")
                .and_then(|m| m.as_u64())
                .map(|m| m as usize)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            bert,
            pooling,
            normalize,
            max_seq_length,
        })
    }
}

impl BertConfig {
    /// Refuses shapes and variants this implementation does not compute.
    pub fn check(&self, path: &Path) -> Result<()> {
        let bad = |m: String| Err(file_err(path, m));
        if self.model_type != "bert" {
            return bad(format!(
                "model_type {:?} is not supported (only \"bert\")",
                self.model_type
            ));
        }
        if self.position_embedding_type != "absolute" {
            return bad(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                self.position_embedding_type
            ));
        }
        if !matches!(self.hidden_act.as_str(), "gelu" | "gelu_new" | "relu") {
            return bad(format!(
                "hidden_act {:?} is not supported (gelu, gelu_new or relu)",
                self.hidden_act
            ));
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("type_vocab_size", self.type_vocab_size),
        ] {
            if v == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

fn read_pooling(path: &Path, hidden: usize) -> Result<Pooling> {
    let v: serde_json::Map<String, serde_json::Value> = read_json(path)?;
    if let Some(d) = v.get("word_embedding_dimension").and_then(|d| d.as_u64()) {
        if d as usize != hidden {
            return Err(file_err(
                path,
                format!("word_embedding_dimension {d} differs from hidden_size {hidden}"),
            ));
        }
    }
    let on: Vec<&str> = v
        .iter()
        .filter(|(k, val)| k.starts_with("pooling_mode_") && val.as_bool() == Some(true))
        .map(|(k, _)| k.as_str())
        .collect();
    match on.as_slice() {
        ["pooling_mode_mean_tokens"] => Ok(Pooling::Mean),
        ["pooling_mode_cls_token"] => Ok(Pooling::Cls),
        [] => Err(file_err(path, "no pooling mode is set")),
        modes => Err(file_err(
            path,
            format!(
                "unknown pooling {} (supported: pooling_mode_mean_tokens or pooling_mode_cls_token, one of them)",
                modes.join(" + ")
            ),
        )),
    }
}
