//! The settings of the training operators: `correct`, `sample`, `loss`, `update`, and the
//! models they share by name.
//!
//! A model written under the pipeline's `models:` is shared by every node that names it:
//! two `encode` nodes naming `g` embed with the same weights, which the `update` node
//! trains. That is how the starting cache and the touched targets come from one target
//! tower, and how a tied (shared) tower is written: point the query and target `encode`
//! nodes at the same model.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::types::ModelSpec;

/// The `model` of an `encode` node: a name from the pipeline's `models:`, or a model
/// written in place (which is never trained).
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum ModelRef {
    /// A model of the pipeline's `models:` map, shared with every node that names it.
    Named(String),
    /// A model of this node alone.
    Inline(ModelSpec),
}

impl Default for ModelRef {
    fn default() -> Self {
        ModelRef::Inline(ModelSpec::default())
    }
}

impl<'de> Deserialize<'de> for ModelRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a model name from `models:` or a model such as {kind: hashed}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ModelRef, E> {
                Ok(ModelRef::Named(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelRef, A::Error> {
                ModelSpec::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ModelRef::Inline)
            }
        }
        d.deserialize_any(V)
    }
}

/// A corrector network h (a residual MLP that starts as the identity), for `models:`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CorrectorModelSpec {
    /// Units of each hidden layer.
    pub width: usize,
    /// Hidden layers (0: a linear residual map).
    pub depth: usize,
    /// Non-linearity: `gelu`, `relu`, `tanh` or `silu`.
    pub activation: Activation,
    /// Never trained: h stays the identity, which gives the stale-cache baseline.
    pub frozen: bool,
    /// Multiplies the update node's corrector learning rate.
    pub lr_scale: f64,
    /// Seed of the initial weights; the pipeline's seed when absent.
    pub seed: Option<u64>,
}

impl Default for CorrectorModelSpec {
    fn default() -> Self {
        Self {
            width: 512,
            depth: 1,
            activation: Activation::Gelu,
            frozen: false,
            lr_scale: 1.0,
            seed: None,
        }
    }
}

/// The corrector's non-linearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// GELU (erf form).
    #[default]
    Gelu,
    /// max(0, x).
    Relu,
    /// tanh.
    Tanh,
    /// x·sigmoid(x).
    Silu,
}

/// Settings of `correct`: applies the corrector h to the stale cache.
///
/// With one input (a `cache`) it emits the corrected cache h(B) that `sample` searches,
/// recomputed every `apply_every` steps. With two inputs (`cache`, then a `sample` node) it
/// emits h(B[y]) for the targets each step touches, which the corrector's loss trains.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CorrectSpec {
    /// A corrector of the pipeline's `models:`.
    pub model: String,
    /// Recompute h(B) over the whole cache every this many steps (it costs N MLP passes).
    #[serde(default = "default_apply_every")]
    pub apply_every: usize,
    /// Steps during which h trains but `sample` still sees the stale cache (h overshoots
    /// in its first steps).
    #[serde(default)]
    pub warmup: usize,
    /// Cache rows per MLP pass (memory: chunk × width floats).
    #[serde(default = "default_correct_chunk")]
    pub chunk: usize,
}

fn default_apply_every() -> usize {
    10
}

fn default_correct_chunk() -> usize {
    8192
}

/// How `sample` picks negatives from the candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SampleStrategy {
    /// The k best-scoring candidates.
    #[default]
    TopK,
    /// k drawn without replacement from softmax(β·score) over the top `pool`.
    Gumbel,
}

/// Settings of `sample`: hard negatives per query by exact search of the (corrected) cache.
/// Inputs, in order: query embeddings, the cache to search, the training pairs.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SampleSpec {
    /// Hard negatives per query (0: in-batch negatives only).
    #[serde(default = "default_k")]
    pub k: usize,
    /// `top_k` or `gumbel`.
    #[serde(default)]
    pub strategy: SampleStrategy,
    /// Inverse temperature of `gumbel` sampling.
    #[serde(default = "default_beta")]
    pub beta: f32,
    /// Skip the best `skip_top` non-positive candidates (likely unlabelled positives).
    #[serde(default)]
    pub skip_top: usize,
    /// Candidates considered before skipping and filtering (at least k + skip_top);
    /// default: 4 × (k + skip_top).
    #[serde(default)]
    pub pool: Option<usize>,
    /// Drop candidates scoring above `positive score − margin` (0 drops those that beat
    /// the positive: likely false negatives). Absent: no filter.
    #[serde(default)]
    pub margin: Option<f32>,
    /// Add the other queries' positives of the batch as negatives.
    #[serde(default = "default_true")]
    pub in_batch: bool,
    /// Cache rows scored per matmul (memory: batch × chunk scores).
    #[serde(default = "default_search_chunk")]
    pub chunk: usize,
}

fn default_k() -> usize {
    16
}

fn default_beta() -> f32 {
    20.0
}

fn default_true() -> bool {
    true
}

fn default_search_chunk() -> usize {
    65_536
}

/// The corrector's objective in `loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CorrectorObjective {
    /// Drift MSE to the stop-gradient fresh embeddings (the paper's).
    #[default]
    Mse,
    /// Truncated softmax of stop-gradient queries against the corrected candidates.
    Task,
    /// `mse + task_weight · task`.
    Both,
}

/// Settings of `loss`. Inputs, in order: query embeddings, fresh target embeddings, the
/// `sample` node, and optionally the `correct` node of the touched targets.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LossSpec {
    /// Inverse temperature β of the softmax.
    #[serde(default = "default_loss_beta")]
    pub beta: f64,
    /// The corrector's objective.
    #[serde(default)]
    pub corrector: CorrectorObjective,
    /// Weight of the task term with `corrector: both`.
    #[serde(default = "default_task_weight")]
    pub task_weight: f64,
}

fn default_loss_beta() -> f64 {
    20.0
}

fn default_task_weight() -> f64 {
    1.0
}

/// Settings of `update`: AdamW for the encoders and another for the corrector. Inputs: a
/// `loss` node and its `stats` port.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSpec {
    /// Peak learning rate of the encoders' dense weights.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Peak learning rate of embedding tables (updated row by row). The hashed encoder's
    /// table starts with entries of standard deviation 1/16 (√(1/bag_dim)), so 2e-4 moves
    /// it as fast, relative to its scale, as 3e-3 moves a N(0, 1) `nn.EmbeddingBag`; 3e-3
    /// here made the target tower drift so far that staleness passed 1 (measured).
    #[serde(default = "default_embedding_lr")]
    pub embedding_lr: f64,
    /// Peak learning rate of the corrector.
    #[serde(default = "default_lr")]
    pub corrector_lr: f64,
    /// Decoupled weight decay of the encoders' dense weights.
    #[serde(default = "default_weight_decay")]
    pub weight_decay: f64,
    /// Decoupled weight decay of the corrector.
    #[serde(default)]
    pub corrector_weight_decay: f64,
    /// Steps of linear learning-rate warm-up.
    #[serde(default)]
    pub warmup: usize,
    /// `constant`, `linear` or `cosine` decay after warm-up.
    #[serde(default)]
    pub decay: Decay,
    /// Clip each optimiser's gradients to this global L2 norm.
    #[serde(default)]
    pub clip: Option<f64>,
}

fn default_lr() -> f64 {
    1e-3
}

fn default_embedding_lr() -> f64 {
    2e-4
}

fn default_weight_decay() -> f64 {
    0.01
}

/// Learning-rate decay after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Stay at the peak.
    #[default]
    Constant,
    /// Linearly to zero at the last step.
    Linear,
    /// Half a cosine to zero at the last step.
    Cosine,
}

/// The models a training-time `eval` node evaluates, by name.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EvalModels {
    /// The query tower.
    pub query: String,
    /// The target tower.
    pub target: String,
    /// The corrector, for evaluating against the corrected cache with no re-embedding.
    #[serde(default)]
    pub corrector: Option<String>,
}
