//! The BERT network on candle: embeddings, `num_hidden_layers` post-norm transformer
//! layers, and the pooling of token vectors into one vector per text.
//!
//! Written here rather than taken from candle-transformers because that model cannot be
//! trained: its layer norm is candle-nn's fused kernel, which records no backward, so a
//! loss gives none of its weights a gradient and no error is raised. Here every operation
//! of a training forward is differentiable ([`super::kernels`] holds fused layer-norm and
//! softmax kernels that carry their own backward), and a test checks that every weight
//! receives a gradient.
//!
//! Weight names are Hugging Face's (`embeddings.word_embeddings.weight`,
//! `encoder.layer.3.attention.self.query.weight`, ...), so files load and save unchanged.

use candle_core::{DType, Tensor, D};

use super::config::{BertConfig, Pooling};
use crate::backend::{self, AttentionShape, EncoderLayerShape, Kernels, LayerWeights};
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

struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    /// `x (rows, in) · Wᵀ + b` in `x`'s dtype; gemm reads the transposed weight through
    /// its strides. The f32 weights are cast for a half-precision `x` (a no-op for f32),
    /// so gradients reach the f32 master weights through the cast.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dt = x.dtype();
        Ok(x.matmul(&self.weight.to_dtype(dt)?.t()?)?
            .broadcast_add(&self.bias.to_dtype(dt)?)?)
    }
}

struct Norm {
    weight: Tensor,
    bias: Tensor,
    eps: f64,
}

struct Layer {
    /// The sixteen weights in checkpoint order (what [`Kernels::pack_layer`] takes).
    weights: Vec<Tensor>,
    query: Linear,
    key: Linear,
    value: Linear,
    attn_out: Linear,
    attn_norm: Norm,
    intermediate: Linear,
    output: Linear,
    out_norm: Norm,
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
    layers: Vec<Layer>,
    /// Whether forwards must be differentiable (chooses the kernels' training paths).
    train: bool,
    /// The compute type (the weights stay as they are; see [`crate::device::Precision`]).
    dtype: DType,
    /// The device's kernels, chosen from where the weights live.
    kernels: &'static dyn Kernels,
}

/// Per-call state of [`BertNet::forward`] ([`BertNet::prepare`]).
pub struct Prepared {
    /// Per layer: its packed weights, when the kernels run it as one training op.
    packed: Vec<Option<Tensor>>,
    /// Every layer's weights laid out for the kernels' inference op over all the
    /// layers ([`Kernels::encoder_stack`]), when the call is long enough and they have one.
    stack: Option<Vec<Tensor>>,
}

/// Tokens from which an inference call lays its weights out for the kernels
/// ([`Kernels::inference_layer`]) and runs the layers as one op rather than one by one on
/// the weights as stored. The copy costs a small part of one full batch of the default
/// budget, which the faster products repay within the call (measured on
/// `pipelines/embed-minilm.yaml`: BENCHMARKS.md, "A batch in parts, one a thread").
pub const LAYOUT_FROM_TOKENS: usize = 4096;

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
        let eps = cfg.layer_norm_eps;
        let linear = |p: &str| -> Result<Linear> {
            Ok(Linear {
                weight: get(&format!("{p}.weight"))?,
                bias: get(&format!("{p}.bias"))?,
            })
        };
        let norm = |p: &str| -> Result<Norm> {
            Ok(Norm {
                weight: get(&format!("{p}.weight"))?,
                bias: get(&format!("{p}.bias"))?,
                eps,
            })
        };
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let weights = expected_shapes(cfg)
                .into_iter()
                .filter(|(name, _)| name.starts_with(&format!("{p}.")))
                .map(|(name, _)| get(&name))
                .collect::<Result<Vec<_>>>()?;
            layers.push(Layer {
                weights,
                query: linear(&format!("{p}.attention.self.query"))?,
                key: linear(&format!("{p}.attention.self.key"))?,
                value: linear(&format!("{p}.attention.self.value"))?,
                attn_out: linear(&format!("{p}.attention.output.dense"))?,
                attn_norm: norm(&format!("{p}.attention.output.LayerNorm"))?,
                intermediate: linear(&format!("{p}.intermediate.dense"))?,
                output: linear(&format!("{p}.output.dense"))?,
                out_norm: norm(&format!("{p}.output.LayerNorm"))?,
            });
        }
        let word = get("embeddings.word_embeddings.weight")?;
        let kernels = backend::for_device(word.device(), dtype);
        Ok(Self {
            cfg: cfg.clone(),
            word,
            position: get("embeddings.position_embeddings.weight")?,
            token_type: get("embeddings.token_type_embeddings.weight")?,
            emb_norm: norm("embeddings.LayerNorm")?,
            layers,
            train,
            dtype,
            kernels,
        })
    }

    fn norm(&self, x: &Tensor, n: &Norm) -> Result<Tensor> {
        let (w, b) = (n.weight.to_dtype(self.dtype)?, n.bias.to_dtype(self.dtype)?);
        self.kernels.layer_norm(x, &w, &b, n.eps, self.train)
    }

    /// What the forwards of one call over `tokens` tokens share: each layer's weights
    /// packed for the kernels' whole-layer op when they have one, packed once, not per
    /// batch (every batch's training graph would keep its own copy), and for inference
    /// only from [`LAYOUT_FROM_TOKENS`] (a short call runs on the weights as stored).
    pub fn prepare(&self, tokens: usize) -> Result<Prepared> {
        let mut packed = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            packed.push(match self.train && self.whole_layers() {
                true => self.kernels.pack_layer(&l.weights)?,
                false => None,
            });
        }
        let mut stack = None;
        if !self.train && self.whole_layers() && tokens >= LAYOUT_FROM_TOKENS {
            let laid = self
                .layers
                .iter()
                .map(|l| self.kernels.inference_layer(&l.weights))
                .collect::<Result<Vec<_>>>()?;
            stack = laid.into_iter().collect();
        }
        Ok(Prepared { packed, stack })
    }

    /// The parts the kernels cut each batch of this net's forwards into, one a thread, which
    /// the token budget's batches keep a multiple of ([`super::plan_batches`]): only an
    /// inference forward of whole layers is cut; a training forward runs each batch whole,
    /// so its batches, and so its numbers, do not depend on the thread count.
    pub fn parts_per_batch(&self, device: &candle_core::Device) -> usize {
        match !self.train && self.whole_layers() {
            true => backend::parts_per_batch(device),
            false => 1,
        }
    }

    /// Whether layers may run as one op: f32 with the exact GELU (what the op computes).
    fn whole_layers(&self) -> bool {
        self.dtype == DType::F32 && !matches!(self.cfg.hidden_act.as_str(), "relu" | "gelu_new")
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
        let mut x = self.norm(&x, &self.emb_norm)?;
        let bias = self.kernels.attention_bias(&batch.mask)?;
        let shape = AttentionShape {
            batch: b,
            tokens: t,
            heads: self.cfg.num_attention_heads,
            head_dim: self.cfg.head_dim(),
            lengths: batch.lengths.clone(),
        };
        let one = EncoderLayerShape {
            attention: shape.clone(),
            hidden: h,
            intermediate: self.cfg.intermediate_size,
            eps: self.cfg.layer_norm_eps,
        };
        if let Some(stack) = &prepared.stack {
            if let Some(y) = self.kernels.encoder_stack(&x, &one, stack)? {
                return Ok(y.reshape((b, t, h))?);
            }
        }
        for (layer, packed) in self.layers.iter().zip(&prepared.packed) {
            let weights = match (packed, self.train) {
                (Some(p), _) => Some(LayerWeights::Packed(p)),
                (None, false) if self.whole_layers() => Some(LayerWeights::Stored(&layer.weights)),
                (None, _) => None,
            };
            if let Some(weights) = weights {
                if let Some(y) = self.kernels.encoder_layer(&x, &one, weights)? {
                    x = y;
                    continue;
                }
            }
            let ctx = self.kernels.attention(
                &layer.query.forward(&x)?,
                &layer.key.forward(&x)?,
                &layer.value.forward(&x)?,
                &shape,
                bias.as_ref(),
                self.train,
            )?;
            x = self.layer(layer, &x, &ctx)?;
        }
        Ok(x.reshape((b, t, h))?)
    }

    /// The rest of a layer after attention: output projection, residual and norm, then
    /// the feed-forward block with its residual and norm.
    fn layer(&self, l: &Layer, x: &Tensor, ctx: &Tensor) -> Result<Tensor> {
        let attn = self.norm(&(l.attn_out.forward(ctx)? + x)?, &l.attn_norm)?;
        let inter = l.intermediate.forward(&attn)?;
        let inter = match self.cfg.hidden_act.as_str() {
            "relu" => inter.relu()?,
            "gelu_new" => inter.gelu()?,
            _ => self.kernels.gelu(&inter)?,
        };
        self.norm(&(l.output.forward(&inter)? + attn)?, &l.out_norm)
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
