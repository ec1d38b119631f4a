//! `kind: bert`: a pretrained BERT-family model from a sentence-transformers folder
//! (`scripts/fetch-model.sh all-MiniLM-L6-v2`). Its settings are `path` and
//! [`BertOptions`]'s; the folder fixes the architecture, and its width.

use std::path::PathBuf;
use std::sync::Arc;

use freshen_operators::encoder::bert::FolderConfig;
use freshen_operators::{BertEncoder, BertOptions};
use serde_yaml::Value;

use super::{Built, KindEntry, Model, ModelCommon, ModelCx, ModelKind, Role};
use crate::error::Result;

/// The kind's entry in [`super::KINDS`].
pub const KIND: KindEntry = KindEntry {
    name: "bert",
    parse,
    schema,
    about: "A BERT-family encoder from a sentence-transformers folder (`config.json`, `tokenizer.json`, `model.safetensors`, and optionally `1_Pooling/config.json`, `modules.json`, `sentence_bert_config.json`); nothing is downloaded at run time.",
};

/// A BERT-family encoder's settings.
#[derive(Debug, Clone)]
pub struct Bert {
    /// The sentence-transformers folder: config.json, tokenizer.json, model.safetensors
    /// and optionally 1_Pooling/config.json, modules.json, sentence_bert_config.json.
    pub path: PathBuf,
    /// What the settings add to or override of the folder.
    pub options: BertOptions,
    /// `frozen`, `lr_scale`, `device`.
    pub common: ModelCommon,
}

fn schema() -> serde_json::Value {
    let mut s = super::schema_of::<BertOptions>();
    if let Some(o) = s.as_object_mut() {
        if let Some(p) = o.get_mut("properties").and_then(|p| p.as_object_mut()) {
            p.insert(
                "path".into(),
                serde_json::json!({"type": "string",
                    "description": "A sentence-transformers folder (config.json, tokenizer.json, model.safetensors)."}),
            );
        }
        o.insert("required".into(), serde_json::json!(["path"]));
    }
    s
}

fn parse(cx: &ModelCx, value: Value, common: ModelCommon) -> Result<Model> {
    let mut map = match value {
        Value::Mapping(m) => m,
        _ => return Err(cx.error("", "a bert model must be a mapping")),
    };
    let path = match map.remove("path") {
        Some(Value::String(p)) => PathBuf::from(p),
        Some(_) => return Err(cx.error("path", "`path` must be a folder path (a string)")),
        None => return Err(cx.error("", "missing key `path` (a sentence-transformers folder)")),
    };
    let options: BertOptions = cx.settings(Value::Mapping(map))?;
    options.validate().map_err(|e| cx.located(e))?;
    Ok(Arc::new(Bert {
        path,
        options,
        common,
    }))
}

impl ModelKind for Bert {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    fn role(&self) -> Role {
        Role::Encoder
    }

    fn common(&self) -> &ModelCommon {
        &self.common
    }

    /// Read from the folder's config.json; a bad folder is reported by `check_files`.
    fn output_dim(&self) -> Option<usize> {
        FolderConfig::read(&self.path)
            .ok()
            .map(|f| f.bert.hidden_size)
    }

    fn check_files(&self, cx: &ModelCx) -> Result<()> {
        BertEncoder::check_folder(&self.path)
            .map(|_| ())
            .map_err(|e| cx.error("path", e.to_string()))
    }

    /// The weight file's size: its tensors are f32.
    fn parameters(&self, _input_dim: usize) -> Option<u64> {
        let meta = std::fs::metadata(self.path.join("model.safetensors")).ok()?;
        Some(meta.len() / 4)
    }

    fn build(&self, _input_dim: usize) -> freshen_operators::Result<Built> {
        let device = self.common.device.open()?;
        Ok(Built::Encoder(Box::new(BertEncoder::load_on(
            &self.path,
            self.options.clone(),
            &device,
        )?)))
    }

    fn settings_json(&self) -> serde_json::Value {
        let mut v = super::settings_json(KIND.name, &self.options, &self.common);
        if let Some(o) = v.as_object_mut() {
            o.insert("path".into(), serde_json::json!(self.path));
        }
        v
    }
}
