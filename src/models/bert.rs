//! `kind: bert`: a pretrained BERT-family model from a sentence-transformers folder
//! (`scripts/fetch-model.sh all-MiniLM-L6-v2`). Its settings are `path` and
//! [`BertOptions`]'s; the folder fixes the architecture, and its width.

use std::path::PathBuf;
use std::sync::Arc;

use freshen_operators::encoder::bert::FolderConfig;
use freshen_operators::{BertEncoder, BertOptions};
use serde_yaml::Value;

use super::{Built, Footprint, KindEntry, Model, ModelCommon, ModelCx, ModelKind, Role, F32};

/// Bytes of text per word piece, for the estimate of a training step's tokens: 3.5 to 5
/// for the WordNet sample's synonym lists and glosses under an uncased vocabulary; the
/// low end, so that tokens are not under-counted.
const BYTES_PER_PIECE: f64 = 3.5;

/// Word pieces every text adds: `[CLS]` and `[SEP]`.
const SPECIAL_PIECES: f64 = 2.0;

/// Vectors of `hidden` floats a trained layer keeps per token for its backward: q, k, v,
/// the context, the two layer norms' inputs, the pre-activation (four wide) and the
/// output (`backend::fused::layer`).
const TAPE_VECTORS: f64 = 11.0;

/// Vectors a layer works on per token of an inference batch: of `hidden` floats its
/// input, q, k, v, the context and the output; of `intermediate` floats the
/// pre-activation and the activation.
const ENCODE_VECTORS: (f64, f64) = (6.0, 2.0);
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

    /// From the folder's config.json: the embeddings, the layers, which of them train.
    fn footprint(&self, _input_dim: usize) -> Option<Footprint> {
        let s = self.shape()?;
        let (o, c) = (&self.options, &s.config);
        let (h, i) = (c.hidden_size as f64, c.intermediate_size as f64);
        let layers = c.num_hidden_layers as f64;
        let trained_layers = (c.num_hidden_layers.saturating_sub(o.freeze_layers)) as f64;
        let embeddings_train = !o.freeze_embeddings;
        let trained = trained_layers * s.layer + if embeddings_train { s.embeddings } else { 0.0 };
        let largest = match (embeddings_train, trained_layers > 0.0) {
            (true, _) => c.vocab_size as f64 * h,
            (false, true) => h * i,
            (false, false) => 0.0,
        };
        let (hv, iv) = ENCODE_VECTORS;
        // An inference call lays the layers' weights out anew, then runs batches of at
        // most `batch_tokens` tokens.
        let encode = layers * s.layer + o.batch_tokens as f64 * (hv * h + iv * i);
        Some(Footprint {
            weights: s.file,
            trained: trained * F32,
            dense_gradient: trained * F32,
            largest: largest * F32,
            largest_dense: largest * F32,
            load: s.file,
            encode: encode * F32,
        })
    }

    /// Per token, each layer from the lowest trained one up keeps [`TAPE_VECTORS`]; per
    /// forward call, the layers' weights packed in one tensor, and the trained ones'
    /// gradient of it.
    fn tape(&self, texts: usize, text_bytes: f64) -> f64 {
        let Some(s) = self.shape() else {
            return 0.0;
        };
        let (o, c) = (&self.options, &s.config);
        let longest = o
            .max_length
            .or(s.max_length)
            .unwrap_or(c.max_position_embeddings) as f64;
        let tokens = (text_bytes / BYTES_PER_PIECE + SPECIAL_PIECES).min(longest);
        let all = c.num_hidden_layers;
        let trained = all.saturating_sub(o.freeze_layers);
        let taped = if o.freeze_embeddings { trained } else { all };
        let rows = texts as f64 * tokens * taped as f64 * TAPE_VECTORS * c.hidden_size as f64;
        let packed = (all + trained) as f64 * s.layer;
        (rows + packed) * F32
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

/// A folder's architecture, for the memory estimate.
struct Shape {
    config: freshen_operators::encoder::bert::BertConfig,
    /// `max_seq_length` of the folder, if it says.
    max_length: Option<usize>,
    /// Parameters of one layer.
    layer: f64,
    /// Parameters of the embeddings (word, position and segment tables, their norm).
    embeddings: f64,
    /// Bytes of the weight file.
    file: f64,
}

impl Bert {
    /// The folder's shape, if its config.json and weights can be read.
    fn shape(&self) -> Option<Shape> {
        let folder = FolderConfig::read(&self.path).ok()?;
        let file = std::fs::metadata(self.path.join("model.safetensors")).ok()?;
        let c = folder.bert;
        let (h, i) = (c.hidden_size as f64, c.intermediate_size as f64);
        let tables = (c.vocab_size + c.max_position_embeddings + c.type_vocab_size) as f64;
        Some(Shape {
            // Four h × h projections, two h × i; their biases and two norms' h + h.
            layer: 4.0 * h * h + 2.0 * h * i + 9.0 * h + i,
            embeddings: tables * h + 2.0 * h,
            max_length: folder.max_seq_length,
            file: file.len() as f64,
            config: c,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder with MiniLM's config.json and a weight file of its size (sparse: only its
    /// length is read).
    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({
            "vocab_size": 30522, "hidden_size": 384, "num_hidden_layers": 6,
            "num_attention_heads": 12, "intermediate_size": 1536,
            "max_position_embeddings": 512, "type_vocab_size": 2, "model_type": "bert"
        });
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let st = serde_json::json!({"max_seq_length": 128});
        std::fs::write(dir.path().join("sentence_bert_config.json"), st.to_string()).unwrap();
        let weights = std::fs::File::create(dir.path().join("model.safetensors")).unwrap();
        weights.set_len(90_868_376).unwrap();
        dir
    }

    fn bert(dir: &tempfile::TempDir, options: BertOptions) -> Bert {
        Bert {
            path: dir.path().to_path_buf(),
            options,
            common: ModelCommon::default(),
        }
    }

    #[test]
    fn the_footprint_counts_what_trains() {
        let dir = folder();
        let all = bert(&dir, BertOptions::default()).footprint(0).unwrap();
        let (h, i) = (384.0, 1536.0);
        let layer = 4.0 * h * h + 2.0 * h * i + 9.0 * h + i;
        let embeddings = (30522.0 + 512.0 + 2.0) * h + 2.0 * h;
        assert_eq!(all.weights, 90_868_376.0);
        assert_eq!(all.load, all.weights);
        assert_eq!(all.trained, (6.0 * layer + embeddings) * F32);
        assert_eq!(all.largest, 30522.0 * h * F32, "the word table");
        let top = BertOptions {
            freeze_embeddings: true,
            freeze_layers: 3,
            ..BertOptions::default()
        };
        let top = bert(&dir, top).footprint(0).unwrap();
        assert_eq!(top.trained, 3.0 * layer * F32);
        assert_eq!(top.largest, h * i * F32);
        assert_eq!(top.weights, all.weights);
    }

    #[test]
    fn the_tape_grows_with_the_texts_their_length_and_the_layers_it_runs_back_through() {
        let dir = folder();
        let all = bert(&dir, BertOptions::default());
        let per_text = all.tape(64, 35.0) - all.tape(32, 35.0);
        // 35 bytes are 10 pieces and [CLS], [SEP]; 6 layers keep 11 vectors of 384 floats.
        assert_eq!(per_text, 32.0 * 12.0 * 6.0 * 11.0 * 384.0 * F32);
        assert!(all.tape(32, 70.0) > all.tape(32, 35.0));
        // Texts longer than max_seq_length are cut.
        assert_eq!(all.tape(32, 1e6), all.tape(32, 2e6));
        let top = BertOptions {
            freeze_embeddings: true,
            freeze_layers: 3,
            ..BertOptions::default()
        };
        let top = bert(&dir, top);
        assert_eq!(top.tape(64, 35.0) - top.tape(32, 35.0), per_text / 2.0);
        // With trained embeddings the backward runs through every layer.
        let low = bert(
            &dir,
            BertOptions {
                freeze_layers: 3,
                ..BertOptions::default()
            },
        );
        assert_eq!(low.tape(64, 35.0) - low.tape(32, 35.0), per_text);
    }
}
