//! What each node needs at run time, prepared once per process before the dataflow starts.
//!
//! Models are built here (once, shared by the process's workers), datasets opened and
//! store paths resolved, so that a problem surfaces before any worker starts and so that
//! every worker reads the same, immutable plan.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use arrow::datatypes::SchemaRef;
use candle_core::Device;
use freshen_operators::corrector::{Corrector, CorrectorConfig};
use freshen_operators::encoder::bert::Pooling;
use freshen_operators::train::TrainableEncoder;
use freshen_operators::{BertEncoder, BertOptions, Encoder, HashedEncoder, HashedEncoderConfig};

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::spec::{
    Activation, BertModelSpec, CorrectSpec, EvalSpec, HashedModelSpec, LoadedSpec, LossSpec,
    ModelRef, ModelSpec, OperatorSpec, PoolingSpec, SampleSpec, TableName, UpdateSpec,
    VectorLayout,
};
use crate::store::beir::{Dataset, Table};
use crate::store::cache::EmbeddingStore;
use crate::store::pairs::TrainingPairs;
use crate::store::tables::col;

/// A shareable encoder.
pub type SharedEncoder = Arc<dyn Encoder + Send + Sync>;

/// An inline encoder as a worker sees it (the process's one instance).
pub struct Inline(pub SharedEncoder);

impl Encoder for Inline {
    fn dim(&self) -> usize {
        self.0.dim()
    }

    fn encode(&self, texts: &[&str]) -> freshen_operators::Result<candle_core::Tensor> {
        self.0.encode(texts)
    }

    fn fingerprint(&self) -> &str {
        self.0.fingerprint()
    }
}

/// The encoder an `encode` node runs.
pub enum EncoderUse {
    /// Written in the node: one instance shared by the process's workers, never trained.
    Inline(SharedEncoder),
    /// A model of `models:`: each worker has its own replica (see [`Plan::take_model`]).
    Named(String),
}

/// One worker's instance of a model of `models:`.
pub enum ModelInstance {
    /// A text encoder.
    Encoder(Box<dyn TrainableEncoder>),
    /// A corrector.
    Corrector(Corrector),
}

/// The training pairs a `table: pairs` source feeds, one batch per step.
pub struct PairsPlan {
    /// The examples.
    pub pairs: TrainingPairs,
    /// Training steps.
    pub steps: usize,
    /// Queries per step.
    pub batch_size: usize,
    /// Reshuffle each epoch.
    pub shuffle: bool,
    /// The pipeline's seed.
    pub seed: u64,
}

/// The run-time form of one node.
pub enum NodePlan {
    /// Reads `table` of `dataset`.
    Source {
        /// The dataset.
        dataset: Dataset,
        /// The table.
        table: Table,
        /// Rows per batch.
        batch_size: usize,
        /// Rows in the table (for progress).
        rows: usize,
        /// For `table: pairs`: the examples and how to batch them.
        pairs: Option<PairsPlan>,
    },
    /// Embeds the joined `fields` of its input rows.
    Encode {
        /// The encoder.
        encoder: EncoderUse,
        /// Columns joined into the embedded text.
        fields: Vec<String>,
        /// Texts per forward pass.
        batch_size: usize,
        /// The cache node that reads this encoder, if any: then only rows missing from
        /// its store are encoded.
        cache: Option<usize>,
    },
    /// Merges fresh embeddings into the persistent store.
    Cache {
        /// The store for the producing encoder's fingerprint.
        store: EmbeddingStore,
        /// Re-embed the corpus every this many training steps.
        refresh_every: Option<usize>,
    },
    /// Applies a corrector to the cache.
    Correct(CorrectSpec),
    /// Picks negatives.
    Sample(SampleSpec),
    /// Computes the losses' gradients.
    Loss(LossSpec),
    /// Applies the gradients.
    Update {
        /// The settings.
        spec: UpdateSpec,
        /// Steps of the run (for the schedule and progress).
        steps: usize,
    },
    /// Ranks targets for queries and scores the ranking.
    Eval {
        /// The settings.
        spec: EvalSpec,
    },
    /// Writes rows to a Parquet output.
    Sink {
        /// Destination file.
        path: PathBuf,
        /// How vectors are stored.
        layout: VectorLayout,
        /// The schema of the rows it receives.
        schema: SchemaRef,
    },
}

/// The graph plus the run-time form of each node.
pub struct Plan {
    /// The validated graph.
    pub graph: Graph,
    /// One entry per node, in file order.
    pub nodes: Vec<NodePlan>,
    /// Per model of `models:`, one instance per worker of this process, taken by each
    /// worker as it builds its dataflow.
    models: BTreeMap<String, Mutex<Vec<Option<ModelInstance>>>>,
    workers: usize,
}

impl Plan {
    /// Prepares every node of `graph` for `workers` workers per process.
    pub fn new(graph: Graph, workers: usize) -> Result<Self> {
        let seed = graph.spec.pipeline.seed;
        let mut models = BTreeMap::new();
        let mut fingerprints = BTreeMap::new();
        let dims = corrector_dims(&graph);
        for (name, spec) in &graph.spec.pipeline.models {
            if matches!(spec, ModelSpec::Corrector(_)) && !dims.contains_key(name) {
                continue; // used by no node
            }
            let dim = dims.get(name).copied().unwrap_or(0);
            let first = build_model(spec, seed, dim).map_err(|e| {
                graph
                    .spec
                    .error(&format!("models.{name}"), None, e.to_string())
            })?;
            if let ModelInstance::Encoder(e) = &first {
                fingerprints.insert(name.clone(), (e.fingerprint().to_string(), e.dim()));
            }
            let mut instances = Vec::with_capacity(workers.max(1));
            for _ in 1..workers.max(1) {
                instances.push(Some(match &first {
                    ModelInstance::Encoder(e) => ModelInstance::Encoder(e.replica()?),
                    ModelInstance::Corrector(c) => ModelInstance::Corrector(c.replica()?),
                }));
            }
            instances.insert(0, Some(first));
            models.insert(name.clone(), Mutex::new(instances));
        }
        let mut nodes: Vec<Option<NodePlan>> = (0..graph.nodes().len()).map(|_| None).collect();
        for &i in &graph.order {
            let node = &graph.nodes()[i];
            let plan = match &node.op {
                OperatorSpec::Source(s) => {
                    let dataset = graph.dataset(i)?;
                    let table = graph
                        .table(i)
                        .ok_or_else(|| Error::Other("source without table".into()))?;
                    let rows = dataset
                        .row_count(&table)
                        .map_err(|e| e.with_node(&node.id))?;
                    let pairs = match s.table {
                        TableName::Pairs => {
                            let split = s.split.clone().unwrap_or_default();
                            let pairs = TrainingPairs::load(&dataset, &split)
                                .map_err(|e| e.with_node(&node.id))?;
                            if pairs.is_empty() {
                                return Err(graph.spec.error(
                                    &format!("{}.split", LoadedSpec::node_path(i)),
                                    Some(&node.id),
                                    format!("split `{split}` has no query with a relevant document (expected training pairs)"),
                                ));
                            }
                            Some(PairsPlan {
                                steps: s
                                    .steps
                                    .unwrap_or_else(|| pairs.steps_per_epoch(s.batch_size)),
                                pairs,
                                batch_size: s.batch_size,
                                shuffle: s.shuffle,
                                seed,
                            })
                        }
                        _ => None,
                    };
                    NodePlan::Source {
                        dataset,
                        table,
                        batch_size: s.batch_size,
                        rows,
                        pairs,
                    }
                }
                OperatorSpec::Encode(e) => {
                    let encoder = match &e.model {
                        ModelRef::Inline(m) => {
                            EncoderUse::Inline(build_encoder(m, seed).map_err(|err| {
                                Error::Operator {
                                    node: node.id.clone(),
                                    message: err.to_string(),
                                }
                            })?)
                        }
                        ModelRef::Named(name) => EncoderUse::Named(name.clone()),
                    };
                    let cache = graph
                        .consumers(i)
                        .iter()
                        .copied()
                        .find(|&c| matches!(graph.nodes()[c].op, OperatorSpec::Cache(_)));
                    NodePlan::Encode {
                        encoder,
                        fields: e.fields.clone(),
                        batch_size: e.batch_size,
                        cache,
                    }
                }
                OperatorSpec::Cache(c) => {
                    let producer = graph.producers(i)[0];
                    let (fingerprint, dim) = match &nodes[producer] {
                        Some(NodePlan::Encode { encoder: EncoderUse::Inline(e), .. }) => {
                            (e.fingerprint().to_string(), e.dim())
                        }
                        Some(NodePlan::Encode { encoder: EncoderUse::Named(name), .. }) => {
                            fingerprints[name].clone()
                        }
                        _ => {
                            return Err(graph.spec.error(
                                &format!("{}.inputs.0", LoadedSpec::node_path(i)),
                                Some(&node.id),
                                "a cache must read an `encode` node directly (expected inputs: [<encode id>])",
                            ))
                        }
                    };
                    NodePlan::Cache {
                        store: EmbeddingStore::new(&c.path, &fingerprint, dim),
                        refresh_every: c.refresh_every,
                    }
                }
                OperatorSpec::Correct(c) => NodePlan::Correct(c.clone()),
                OperatorSpec::Sample(s) => NodePlan::Sample(s.clone()),
                OperatorSpec::Loss(l) => NodePlan::Loss(l.clone()),
                OperatorSpec::Update(u) => {
                    let steps = graph
                        .training
                        .as_ref()
                        .and_then(|t| match &nodes[t.pairs] {
                            Some(NodePlan::Source { pairs: Some(p), .. }) => Some(p.steps),
                            _ => None,
                        })
                        .unwrap_or(0);
                    NodePlan::Update {
                        spec: u.clone(),
                        steps,
                    }
                }
                OperatorSpec::Eval(e) => NodePlan::Eval { spec: e.clone() },
                OperatorSpec::Sink(s) => {
                    let out = &graph.spec.pipeline.outputs[&s.output];
                    let schema = graph
                        .schema(&graph.inputs(i)[0])
                        .ok_or_else(|| Error::Other("sink input has no schema".into()))?;
                    NodePlan::Sink {
                        path: out.path.clone(),
                        layout: out.vectors,
                        schema,
                    }
                }
            };
            nodes[i] = Some(plan);
        }
        let nodes = nodes
            .into_iter()
            .map(|n| n.ok_or_else(|| Error::Other("node left unplanned".into())))
            .collect::<Result<_>>()?;
        Ok(Plan {
            graph,
            nodes,
            models,
            workers: workers.max(1),
        })
    }

    /// Worker threads per process.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Takes this worker's instance of model `name` (`local` is the worker's index within
    /// its process). Each instance is taken once.
    pub fn take_model(&self, name: &str, local: usize) -> Result<ModelInstance> {
        let slot = self
            .models
            .get(name)
            .ok_or_else(|| Error::Other(format!("no model named `{name}`")))?;
        let mut instances = slot
            .lock()
            .map_err(|_| Error::Other("model lock poisoned".into()))?;
        instances
            .get_mut(local)
            .and_then(Option::take)
            .ok_or_else(|| {
                Error::Other(format!(
                    "model `{name}` of worker {local} was already taken"
                ))
            })
    }

    /// Names of the models of `models:`.
    pub fn model_names(&self) -> Vec<String> {
        self.models.keys().cloned().collect()
    }

    /// Steps of the training run (0 without training).
    pub fn steps(&self) -> usize {
        self.graph
            .training
            .as_ref()
            .and_then(|t| match &self.nodes[t.update] {
                NodePlan::Update { steps, .. } => Some(*steps),
                _ => None,
            })
            .unwrap_or(0)
    }
}

/// Builds a model of `models:`; `seed` is the pipeline's, `dim` the width of the cache a
/// corrector corrects.
fn build_model(
    model: &ModelSpec,
    seed: u64,
    dim: usize,
) -> freshen_operators::Result<ModelInstance> {
    Ok(match model {
        ModelSpec::Hashed(h) => ModelInstance::Encoder(Box::new(hashed(h, seed)?)),
        ModelSpec::Bert(b) => ModelInstance::Encoder(Box::new(bert(b)?)),
        ModelSpec::Corrector(c) => ModelInstance::Corrector(Corrector::new(
            CorrectorConfig {
                dim,
                width: c.width,
                depth: c.depth,
                activation: match c.activation {
                    Activation::Gelu => freshen_operators::corrector::Activation::Gelu,
                    Activation::Relu => freshen_operators::corrector::Activation::Relu,
                    Activation::Tanh => freshen_operators::corrector::Activation::Tanh,
                    Activation::Silu => freshen_operators::corrector::Activation::Silu,
                },
                seed: c.seed.unwrap_or(seed),
            },
            &Device::Cpu,
        )?),
    })
}

/// The width of the cache each corrector of `models:` corrects, from the nodes using it.
fn corrector_dims(graph: &Graph) -> BTreeMap<String, usize> {
    let mut dims = BTreeMap::new();
    for (i, n) in graph.nodes().iter().enumerate() {
        let (name, input) = match &n.op {
            OperatorSpec::Correct(c) => (Some(c.model.clone()), 0),
            OperatorSpec::Eval(e) => (e.models.as_ref().and_then(|m| m.corrector.clone()), 5),
            _ => (None, 0),
        };
        let dim = graph
            .inputs(i)
            .get(input)
            .and_then(|e| graph.schema(e))
            .and_then(
                |s| match s.field_with_name(col::EMBEDDING).ok()?.data_type() {
                    arrow::datatypes::DataType::FixedSizeList(_, d) => Some(*d as usize),
                    _ => None,
                },
            );
        if let (Some(name), Some(dim)) = (name, dim) {
            dims.insert(name, dim);
        }
    }
    dims
}

fn hashed(h: &HashedModelSpec, seed: u64) -> freshen_operators::Result<HashedEncoder> {
    let cfg = HashedEncoderConfig {
        buckets: h.buckets,
        bag_dim: h.bag_dim,
        dim: h.dim,
        word_ngrams: h.word_ngrams,
        char_ngrams: (h.char_ngrams[0], h.char_ngrams[1]),
        lowercase: h.lowercase,
        normalize: h.normalize,
        seed: h.seed.unwrap_or(seed),
    };
    HashedEncoder::new(cfg, &Device::Cpu)
}

fn bert(b: &BertModelSpec) -> freshen_operators::Result<BertEncoder> {
    let options = BertOptions {
        pooling: b.pooling.map(|p| match p {
            PoolingSpec::Mean => Pooling::Mean,
            PoolingSpec::Cls => Pooling::Cls,
        }),
        normalize: b.normalize,
        max_length: b.max_length,
        prefix: b.prefix.clone(),
        batch_tokens: b.batch_tokens,
        max_batch: b.max_batch,
        freeze_embeddings: b.freeze_embeddings,
        freeze_layers: b.freeze_layers,
        device: b.device.clone(),
    };
    BertEncoder::load(&b.path, options)
}

/// Builds the encoder a `model` setting describes; `seed` is the pipeline's.
pub fn build_encoder(model: &ModelSpec, seed: u64) -> freshen_operators::Result<SharedEncoder> {
    match model {
        ModelSpec::Hashed(h) => Ok(Arc::new(hashed(h, seed)?)),
        ModelSpec::Bert(b) => Ok(Arc::new(bert(b)?)),
        ModelSpec::Corrector(_) => Err(freshen_operators::Error::Setting(
            "a corrector cannot embed text".into(),
        )),
    }
}
