//! Tests on a tiny randomly initialised BERT that the tests write as a
//! sentence-transformers folder, and (when fetched) parity of all-MiniLM-L6-v2 with
//! sentence-transformers.

use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor, Var};

use super::model::expected_shapes;
use super::{BertEncoder, BertOptions, Pooling};
use crate::device::Precision;
use crate::random::SplitMix64;
use crate::train::{AdamW, AdamWConfig, Grad, Trainable, TrainableEncoder};
use crate::Encoder;

const WORDS: &[&str] = &[
    "the", "a", "dog", "cat", "ran", "quick", "brown", "fox", "jumps", "over", "lazy", "of",
    "animal", "small", "large", "water", "tree", "with", "and", "to", ".", ",",
];

fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(WORDS.iter().map(|s| s.to_string()));
    for c in 'a'..='z' {
        for piece in [c.to_string(), format!("##{c}")] {
            if !v.contains(&piece) {
                v.push(piece);
            }
        }
    }
    v
}

/// Writes a tiny BERT folder: `tokenizer.json` deliberately pads to 16 and truncates at 8
/// (as MiniLM's fixes 128), which the encoder must override.
pub(crate) fn write_tiny_bert(dir: &Path, seed: u64, pooling: &str) {
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    let vocab = vocab();
    let cfg = serde_json::json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab.len(),
        "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
        "intermediate_size": 32, "hidden_act": "gelu", "max_position_embeddings": 64,
        "type_vocab_size": 2, "layer_norm_eps": 1e-12, "position_embedding_type": "absolute"
    });
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    let vocab_map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), serde_json::json!(i)))
        .collect();
    let tok = serde_json::json!({
        "version": "1.0",
        "truncation": {"direction": "Right", "max_length": 8, "strategy": "LongestFirst", "stride": 0},
        "padding": {"strategy": {"Fixed": 16}, "direction": "Right", "pad_to_multiple_of": null,
                    "pad_id": 0, "pad_type_id": 0, "pad_token": "[PAD]"},
        "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": true, "handle_chinese_chars": true,
                       "strip_accents": null, "lowercase": true},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]},
        "decoder": null,
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": vocab_map}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    let pool = serde_json::json!({
        "word_embedding_dimension": 16,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": pooling == "max",
        "pooling_mode_mean_sqrt_len_tokens": false
    });
    std::fs::write(dir.join("1_Pooling/config.json"), pool.to_string()).unwrap();
    let modules = serde_json::json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}
    ]);
    std::fs::write(dir.join("modules.json"), modules.to_string()).unwrap();
    std::fs::write(
        dir.join("sentence_bert_config.json"),
        r#"{"max_seq_length": 32, "do_lower_case": false}"#,
    )
    .unwrap();
    let bert: super::BertConfig = serde_json::from_value(cfg).unwrap();
    let mut rng = SplitMix64::new(seed);
    let mut tensors = std::collections::HashMap::new();
    let mut shapes = expected_shapes(&bert);
    shapes.push(("pooler.dense.weight".into(), vec![16, 16]));
    shapes.push(("pooler.dense.bias".into(), vec![16]));
    for (name, shape) in shapes {
        let n: usize = shape.iter().product();
        let ln_weight = name.contains("LayerNorm.weight");
        let v: Vec<f32> = (0..n)
            .map(|_| if ln_weight { 1.0 } else { 0.0 } + 0.3 * rng.normal())
            .collect();
        tensors.insert(
            name,
            Tensor::from_vec(v, shape, &crate::device::cpu()).unwrap(),
        );
    }
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
}

fn tiny(name: &str, options: BertOptions) -> (tempfile::TempDir, BertEncoder) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    write_tiny_bert(&dir, 11, "mean");
    let enc = BertEncoder::load(&dir, options).unwrap();
    (tmp, enc)
}

const TEXTS: &[&str] = &[
    "the quick brown fox jumps over the lazy dog",
    "a cat",
    "small animal of the tree",
    "water",
    "the large dog ran with a small cat and the brown fox to the water",
    "Zebra-like; unknown wordz!",
];

fn rows(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn tiny_bert_loads_and_overrides_the_tokenizer_settings() {
    let (_tmp, enc) = tiny("m", BertOptions::default());
    assert_eq!(enc.dim(), 16);
    assert_eq!(enc.pooling(), Pooling::Mean);
    assert_eq!(enc.max_length(), 32); // sentence_bert_config, not the tokenizer's 8
    let ids = enc.tokenize(&["a cat", TEXTS[4]]).unwrap();
    assert_eq!(ids[0], vec![1, 5, 7, 2]); // no padding to 16
    assert!(ids[1].len() > 8, "truncation at 8 was not overridden");
    let v = enc.encode(TEXTS).unwrap();
    assert_eq!(v.dims(), &[TEXTS.len(), 16]);
    for r in rows(&v) {
        let norm: f32 = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not normalised: {norm}");
    }
    let again = BertEncoder::load(enc.dir(), BertOptions::default()).unwrap();
    assert_eq!(rows(&again.encode(TEXTS).unwrap()), rows(&v));
    assert_eq!(again.fingerprint(), enc.fingerprint());
    let cls = BertEncoder::load(
        enc.dir(),
        BertOptions {
            pooling: Some(Pooling::Cls),
            ..BertOptions::default()
        },
    )
    .unwrap();
    assert_ne!(cls.fingerprint(), enc.fingerprint());
    assert!(max_abs(&rows(&cls.encode(TEXTS).unwrap())[0], &rows(&v)[0]) > 1e-3);
}

/// The stated tolerance: 1e-5 absolute per component between any two batchings.
#[test]
fn a_text_embeds_the_same_alone_and_in_a_padded_batch() {
    let small = BertOptions {
        batch_tokens: 40,
        max_batch: 3,
        ..BertOptions::default()
    };
    let (_tmp, enc) = tiny("m", BertOptions::default());
    let batched = rows(&enc.encode(TEXTS).unwrap());
    let split = BertEncoder::load(enc.dir(), small).unwrap();
    let resplit = rows(&split.encode(TEXTS).unwrap());
    for (i, text) in TEXTS.iter().enumerate() {
        let alone = rows(&enc.encode(&[text]).unwrap()).remove(0);
        assert!(
            max_abs(&alone, &batched[i]) <= 1e-5,
            "text {i}: {}",
            max_abs(&alone, &batched[i])
        );
        assert!(max_abs(&resplit[i], &batched[i]) <= 1e-5);
    }
    // The training forward (fused kernels with a backward) gives the same vectors.
    let train = rows(&enc.forward_train(TEXTS).unwrap().output);
    for (a, b) in train.iter().zip(&batched) {
        assert!(
            max_abs(a, b) <= 1e-5,
            "train vs inference: {}",
            max_abs(a, b)
        );
    }
}

/// The same tolerance for a call long enough to lay the weights out for inference and to
/// cut each batch into parts, one a thread: the vectors match the short calls'.
#[test]
fn a_long_call_embeds_as_short_calls_do() {
    let (_tmp, enc) = tiny("m", BertOptions::default());
    let batched = rows(&enc.encode(TEXTS).unwrap());
    let many: Vec<&str> = TEXTS.iter().copied().cycle().take(600).collect();
    let tokens: usize = enc.tokenize(&many).unwrap().iter().map(Vec::len).sum();
    assert!(
        tokens >= crate::backend::fused::LAYOUT_FROM_TOKENS,
        "{tokens} tokens"
    );
    for (i, v) in rows(&enc.encode(&many).unwrap()).iter().enumerate() {
        let d = max_abs(v, &batched[i % TEXTS.len()]);
        assert!(d <= 1e-5, "text {i} in a long call: {d}");
    }
}

fn random_like(t: &Tensor, seed: u64) -> Tensor {
    let mut rng = SplitMix64::new(seed);
    let v: Vec<f32> = (0..t.elem_count()).map(|_| rng.normal()).collect();
    Tensor::from_vec(v, t.shape(), &crate::device::cpu()).unwrap()
}

#[test]
fn every_trainable_weight_gets_a_gradient() {
    let (_tmp, enc) = tiny("m", BertOptions::default());
    let cfg = enc.config().clone();
    assert_eq!(enc.params().len(), expected_shapes(&cfg).len());
    let rec = enc.forward_train(TEXTS).unwrap();
    let grads = enc.backward(&rec, &random_like(&rec.output, 5)).unwrap();
    for (name, _) in enc.params() {
        let Some(Grad::Dense(g)) = grads.get(&name) else {
            panic!("{name} got no gradient");
        };
        let size: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(size > 0.0 && size.is_finite(), "{name}: gradient {size}");
    }
}

/// bf16 and f16 compute on the CPU (candle's ops; the fused kernels are f32): vectors
/// close to f32's, returned as f32, another fingerprint, and f32 gradients for every
/// f32 master weight.
#[test]
fn mixed_precision_stays_close_and_trains_the_f32_master_weights() {
    let (tmp, enc) = tiny("m", BertOptions::default());
    let want = rows(&enc.encode(TEXTS).unwrap());
    for dtype in [Precision::Bf16, Precision::F16] {
        let half = BertEncoder::load(
            tmp.path().join("m").as_path(),
            BertOptions {
                dtype,
                ..BertOptions::default()
            },
        )
        .unwrap();
        assert_ne!(half.fingerprint(), enc.fingerprint(), "{dtype}");
        let got = half.encode(TEXTS).unwrap();
        assert_eq!(got.dtype(), DType::F32);
        for (a, b) in rows(&got).iter().zip(&want) {
            let cos = a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
                / (a.iter().map(|x| x * x).sum::<f32>() * b.iter().map(|y| y * y).sum::<f32>())
                    .sqrt();
            assert!(cos > 0.99, "{dtype}: cosine {cos}");
        }
        let rec = half.forward_train(TEXTS).unwrap();
        let grads = half.backward(&rec, &random_like(&rec.output, 5)).unwrap();
        for (name, var) in half.params() {
            assert_eq!(var.dtype(), DType::F32, "{name} master weight");
            let Some(Grad::Dense(g)) = grads.get(&name) else {
                panic!("{dtype}: {name} got no gradient");
            };
            assert_eq!(g.dtype(), DType::F32, "{name}");
            let size: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(
                size > 0.0 && size.is_finite(),
                "{dtype}: {name}: gradient {size}"
            );
        }
    }
}

/// Contrastive loss of queries against their passages (in-batch softmax, scale 20), with
/// the gradient of each side's vectors: what the `loss` operator hands back.
fn contrastive(q: &Tensor, p: &Tensor) -> (f32, Tensor, Tensor) {
    let (qv, pv) = (Var::from_tensor(q).unwrap(), Var::from_tensor(p).unwrap());
    let scores = (qv.matmul(&pv.t().unwrap()).unwrap() * 20.0).unwrap();
    let labels = Tensor::arange(0u32, q.dim(0).unwrap() as u32, &crate::device::cpu()).unwrap();
    let loss = candle_nn::loss::cross_entropy(&scores, &labels).unwrap();
    let g = loss.backward().unwrap();
    (
        loss.to_scalar().unwrap(),
        g.get(qv.as_tensor()).unwrap().clone(),
        g.get(pv.as_tensor()).unwrap().clone(),
    )
}

fn train_step(enc: &BertEncoder, opt: &mut AdamW, queries: &[&str], passages: &[&str]) -> f32 {
    let (rq, rp) = (
        enc.forward_train(queries).unwrap(),
        enc.forward_train(passages).unwrap(),
    );
    let (loss, gq, gp) = contrastive(&rq.output.detach(), &rp.output.detach());
    let mut grads = enc.backward(&rq, &gq).unwrap();
    grads.accumulate(enc.backward(&rp, &gp).unwrap()).unwrap();
    opt.step(&enc.params(), &grads, &|_| 1e-2).unwrap();
    loss
}

#[test]
fn a_fine_tuning_step_lowers_the_loss_and_frozen_layers_stay_bit_identical() {
    let options = BertOptions {
        freeze_embeddings: true,
        freeze_layers: 1,
        ..BertOptions::default()
    };
    let (tmp, enc) = tiny("m", options.clone());
    let trainable = enc.trainable_names();
    assert_eq!(trainable.len(), 16, "only layer 1 trains: {trainable:?}");
    assert!(trainable.iter().all(|n| n.starts_with("encoder.layer.1.")));
    let queries = ["dog", "cat", "tree", "water"];
    let passages = [
        "a small animal that ran",
        "a lazy animal",
        "a large tree",
        "water with the fox",
    ];
    let mut opt = AdamW::new(AdamWConfig::default());
    let before = train_step(&enc, &mut opt, &queries, &passages);
    let after = contrastive(
        &enc.forward_train(&queries).unwrap().output,
        &enc.forward_train(&passages).unwrap().output,
    )
    .0;
    assert!(after < before, "loss {before} -> {after}");

    // The checkpoint is a sentence-transformers folder: frozen tensors are bit-identical
    // to the original file, trained ones moved, the pooler kept, and it loads back.
    let out = tmp.path().join("ckpt").join("f");
    enc.save_checkpoint(&tmp.path().join("ckpt"), "f").unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "1_Pooling/config.json",
    ] {
        assert!(out.join(f).exists(), "{f} not copied");
    }
    let original =
        candle_core::safetensors::load(enc.dir().join("model.safetensors"), &crate::device::cpu())
            .unwrap();
    let saved =
        candle_core::safetensors::load(out.join("model.safetensors"), &crate::device::cpu())
            .unwrap();
    assert_eq!(original.len(), saved.len());
    for (name, t) in &original {
        let bits = |t: &Tensor| -> Vec<u32> {
            t.flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let same = bits(t) == bits(&saved[name]);
        let trained = trainable.contains(name);
        assert_eq!(same, !trained, "{name}: same={same}, trained={trained}");
    }
    let reloaded = BertEncoder::load(&out, BertOptions::default()).unwrap();
    assert_eq!(
        rows(&reloaded.encode(TEXTS).unwrap()),
        rows(&enc.encode(TEXTS).unwrap())
    );
    let dtype_ok = saved.values().all(|t| t.dtype() == DType::F32);
    assert!(dtype_ok);
}

fn load_err(dir: &Path) -> String {
    match BertEncoder::load(dir, BertOptions::default()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_bad_model_folder_gets_a_one_line_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let fresh = |name: &str, pooling: &str| -> PathBuf {
        let d = tmp.path().join(name);
        write_tiny_bert(&d, 3, pooling);
        d
    };
    let d = fresh("no-tokenizer", "mean");
    std::fs::remove_file(d.join("tokenizer.json")).unwrap();
    let e = load_err(&d);
    assert!(e.contains("tokenizer.json") && e.contains("missing"), "{e}");

    let d = fresh("bad-shape", "mean");
    let mut t =
        candle_core::safetensors::load(d.join("model.safetensors"), &crate::device::cpu()).unwrap();
    t.insert(
        "encoder.layer.1.attention.self.key.weight".into(),
        Tensor::zeros((16, 8), DType::F32, &crate::device::cpu()).unwrap(),
    );
    candle_core::safetensors::save(&t, d.join("model.safetensors")).unwrap();
    let e = load_err(&d);
    assert!(
        e.contains("model.safetensors")
            && e.contains("encoder.layer.1.attention.self.key.weight")
            && e.contains("[16, 8]"),
        "{e}"
    );

    let d = fresh("max-pooling", "max");
    let e = load_err(&d);
    assert!(
        e.contains("1_Pooling/config.json") && e.contains("unknown pooling"),
        "{e}"
    );

    let d = fresh("no-weights", "mean");
    std::fs::remove_file(d.join("model.safetensors")).unwrap();
    assert!(load_err(&d).contains("model.safetensors"));
    let e = load_err(&tmp.path().join("absent"));
    assert!(e.contains("absent") && e.contains("fetch-model"), "{e}");
    for e in [load_err(&d), load_err(&tmp.path().join("absent"))] {
        assert!(!e.contains('\n'), "not one line: {e}");
    }
}

/// all-MiniLM-L6-v2 against vectors sentence-transformers computed
/// (`scripts/parity_fixture.py`): cosine ≥ 0.9999 on every sentence. The model is fetched
/// by `scripts/fetch-model.sh all-MiniLM-L6-v2` (CI does so first).
#[test]
fn minilm_matches_sentence_transformers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let model = root.join("models/all-MiniLM-L6-v2");
    assert!(
        model.join("model.safetensors").exists(),
        "{} is missing: run scripts/fetch-model.sh all-MiniLM-L6-v2",
        model.display()
    );
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/minilm-parity.json")).unwrap(),
    )
    .unwrap();
    let sentences: Vec<String> = serde_json::from_value(fixture["sentences"].clone()).unwrap();
    let reference: Vec<Vec<f32>> = serde_json::from_value(fixture["embeddings"].clone()).unwrap();
    let tokens: Vec<usize> = serde_json::from_value(fixture["tokens"].clone()).unwrap();
    let enc = BertEncoder::load(&model, BertOptions::default()).unwrap();
    let refs: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let ids = enc.tokenize(&refs).unwrap();
    assert_eq!(ids.iter().map(Vec::len).collect::<Vec<_>>(), tokens);
    let ours = rows(&enc.encode(&refs).unwrap());
    let mut lowest = 1f32;
    for (i, (a, b)) in ours.iter().zip(&reference).enumerate() {
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
        let cos = dot / (na * nb);
        assert!(
            cos >= 0.9999,
            "sentence {i} {:?}: cosine {cos}",
            sentences[i]
        );
        lowest = lowest.min(cos);
    }
    eprintln!("lowest cosine with sentence-transformers: {lowest}");
}
