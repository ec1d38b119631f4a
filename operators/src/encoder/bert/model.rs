//! The BERT network on candle: embeddings, `num_hidden_layers` post-norm transformer
//! layers, and the pooling of token vectors into one vector per text.
//!
//! Written here rather than taken from candle-transformers because that model cannot be
//! trained: its layer norm is candle-nn's fused kernel, which records no backward, so a
//! loss gives none of its weights a gradient and no error is raised. Here every operation
//! of a training forward is differentiable (the kernels of [`crate::backend`] carry their
//! own backward), and a test checks that every weight receives a gradient.
//!
//! Weight names are Hugging Face's (`embeddings.word_embeddings.weight`,
//! `encoder.layer.3.attention.self.query.weight`, ...), so files load and save unchanged.

use candle_core::{DType, Tensor, D};

use super::config::{BertConfig, Pooling};
use crate::backend::{self, Activation, AttentionShape, EncoderBatch, Kernels, LayerWeights};
use crate::Result;

/// Every tensor the network reads, by name, with its shape: what a weight file must hold.
pub fn expected_shapes(cfg: &BertConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let mut out = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![cfg.vocab_size, h],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![cfg.max_position_embeddings, h],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![cfg.type_vocab_size, h],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![h]),
        ("embeddings.LayerNorm.bias".into(), vec![h]),
    ];
    for l in 0..cfg.num_hidden_layers {
        let p = format!("encoder.layer.{l}");
        for (name, shape) in [
            ("attention.self.query.weight", vec![h, h]),
            ("attention.self.query.bias", vec![h]),
            ("attention.self.key.weight", vec![h, h]),
            ("attention.self.key.bias", vec![h]),
            ("attention.self.value.weight", vec![h, h]),
            ("attention.self.value.bias", vec![h]),
            ("attention.output.dense.weight", vec![h, h]),
            ("attention.output.dense.bias", vec![h]),
            ("attention.output.LayerNorm.weight", vec![h]),
            ("attention.output.LayerNorm.bias", vec![h]),
            ("intermediate.dense.weight", vec![i, h]),
            ("intermediate.dense.bias", vec![i]),
            ("output.dense.weight", vec![h, i]),
            ("output.dense.bias", vec![h]),
            ("output.LayerNorm.weight", vec![h]),
            ("output.LayerNorm.bias", vec![h]),
        ] {
            out.push((format!("{p}.{name}"), shape));
        }
    }
    out
}

/// Which layer the parameter `name` belongs to: `None` for the embeddings, `Some(l)` for
/// transformer layer `l` (what the freeze options go by).
pub fn layer_of(name: &str) -> Option<usize> {
    let rest = name.strip_prefix("encoder.layer.")?;
    rest.split('.').next()?.parse().ok()
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

/// The network over a set of weight tensors. Two instances share the same storage: one
/// over the trainable variables (forwards record their graph), one over detached copies
/// (inference records nothing).
pub struct BertNet {
    cfg: BertConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    emb_norm: Norm,
    /// Each layer's sixteen weights in checkpoint order ([`LayerWeights`]).
    layers: Vec<Vec<Tensor>>,
    /// The feed-forward blocks' activation.
    activation: Activation,
    /// Whether forwards must be differentiable (chooses the kernels' training paths).
    train: bool,
    /// The compute type (the weights stay as they are; see [`crate::device::Precision`]).
    dtype: DType,
    /// The device's kernels, chosen from where the weights live.
    kernels: &'static dyn Kernels,
}

/// Per-call state of [`BertNet::forward`] ([`BertNet::prepare`]): each layer's weights
/// as the kernels laid them out for the call ([`Kernels::prepare_layer`]).
pub struct Prepared {
    layers: Vec<LayerWeights>,
}

/// One padded batch of token ids.
pub struct TokenBatch {
    /// `(b, t)` u32 word-piece ids, padded with the pad id.
    pub ids: Tensor,
    /// `(b, t)` f32: 1 for a real token, 0 for padding.
    pub mask: Tensor,
    /// Real tokens of each text (padding is on the right).
    pub lengths: Vec<usize>,
}

impl BertNet {
    /// Builds the network from `get(name)`, which must yield every tensor of
    /// [`expected_shapes`] (the caller has checked names and shapes).
    pub fn new(
        cfg: &BertConfig,
        train: bool,
        dtype: DType,
        get: &dyn Fn(&str) -> Result<Tensor>,
    ) -> Result<Self> {
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}.");
            let weights = expected_shapes(cfg)
                .into_iter()
                .filter(|(name, _)| name.starts_with(&p))
                .map(|(name, _)| get(&name))
                .collect::<Result<Vec<_>>>()?;
            layers.push(weights);
        }
        let activation = match cfg.hidden_act.as_str() {
            "relu" => Activation::Relu,
            "gelu_new" => Activation::GeluTanh,
            _ => Activation::Gelu,
        };
        let word = get("embeddings.word_embeddings.weight")?;
        let kernels = backend::for_device(word.device(), dtype);
        Ok(Self {
            cfg: cfg.clone(),
            word,
            position: get("embeddings.position_embeddings.weight")?,
            token_type: get("embeddings.token_type_embeddings.weight")?,
            emb_norm: Norm {
                weight: get("embeddings.LayerNorm.weight")?,
                bias: get("embeddings.LayerNorm.bias")?,
                eps: cfg.layer_norm_eps,
            },
            layers,
            activation,
            train,
            dtype,
            kernels,
        })
    }

    fn norm(&self, x: &Tensor, n: &Norm) -> Result<Tensor> {
        let (w, b) = (n.weight.to_dtype(self.dtype)?, n.bias.to_dtype(self.dtype)?);
        self.kernels.layer_norm(x, &w, &b, n.eps, self.train)
    }

    /// What the forwards of one call over `tokens` tokens share: each layer's weights as
    /// the kernels lay them out ([`Kernels::prepare_layer`]), once, not per batch.
    pub fn prepare(&self, tokens: usize) -> Result<Prepared> {
        let layers = self
            .layers
            .iter()
            .map(|w| {
                self.kernels
                    .prepare_layer(w, self.activation, self.train, tokens)
            })
            .collect::<Result<_>>()?;
        Ok(Prepared { layers })
    }

    /// The parts the kernels cut each batch of this net's forwards into, one a thread,
    /// which the token budget's batches keep a multiple of ([`super::plan_batches`]).
    pub fn parts_per_batch(&self) -> usize {
        self.kernels.parts_per_batch(self.activation, self.train)
    }

    /// Token vectors `(b, t, hidden)` of one padded batch.
    pub fn forward(&self, batch: &TokenBatch, prepared: &Prepared) -> Result<Tensor> {
        let (b, t) = batch.ids.dims2()?;
        let h = self.cfg.hidden_size;
        let flat_ids = batch.ids.flatten_all()?;
        let words = self.word.index_select(&flat_ids, 0)?;
        let positions = self.position.narrow(0, 0, t)?;
        // Segment 0 for every token: one text per input.
        let segment = self.token_type.narrow(0, 0, 1)?;
        let x = words
            .reshape((b, t, h))?
            .broadcast_add(&positions)?
            .broadcast_add(&segment)?
            .reshape((b * t, h))?
            .to_dtype(self.dtype)?;
        let x = self.norm(&x, &self.emb_norm)?;
        let one = EncoderBatch {
            attention: AttentionShape {
                batch: b,
                tokens: t,
                heads: self.cfg.num_attention_heads,
                head_dim: self.cfg.head_dim(),
                lengths: batch.lengths.clone(),
            },
            hidden: h,
            intermediate: self.cfg.intermediate_size,
            eps: self.cfg.layer_norm_eps,
            activation: self.activation,
            bias: self.kernels.attention_bias(&batch.mask)?,
        };
        let y = self
            .kernels
            .encoder_stack(&x, &one, &prepared.layers, self.train)?;
        Ok(y.reshape((b, t, h))?)
    }
}

/// One vector per text from token vectors `(b, t, h)` and the mask `(b, t)`.
pub fn pool(tokens: &Tensor, mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
    Ok(match pooling {
        Pooling::Cls => tokens.narrow(1, 0, 1)?.squeeze(1)?,
        Pooling::Mean => {
            let m = mask.unsqueeze(2)?;
            let sum = tokens.broadcast_mul(&m)?.sum(1)?;
            let count = mask.sum_keepdim(1)?.clamp(1e-9, f64::MAX)?;
            sum.broadcast_div(&count)?
        }
    })
}

/// Rows scaled to unit length (`x / max(‖x‖, 1e-12)`, as torch's `F.normalize`).
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x
        .sqr()?
        .sum_keepdim(D::Minus1)?
        .sqrt()?
        .clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}
