//! What each node needs at run time, prepared once per process before the dataflow starts.
//!
//! Models are built here (once, shared by the process's workers), datasets opened and
//! store paths resolved, so that a problem surfaces before any worker starts and so that
//! every worker reads the same, immutable plan.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use candle_core::Device;
use freshen_operators::{Encoder, HashedEncoder, HashedEncoderConfig};

use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::spec::{EvalSpec, ModelSpec, OperatorSpec, VectorLayout};
use crate::store::beir::{Dataset, Table};
use crate::store::cache::EmbeddingStore;

/// A shareable encoder.
pub type SharedEncoder = Arc<dyn Encoder + Send + Sync>;

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
    },
    /// Embeds the joined `fields` of its input rows.
    Encode {
        /// The encoder.
        encoder: SharedEncoder,
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
}

impl Plan {
    /// Prepares every node of `graph`.
    pub fn new(graph: Graph) -> Result<Self> {
        let mut nodes: Vec<Option<NodePlan>> = (0..graph.nodes().len()).map(|_| None).collect();
        let seed = graph.spec.pipeline.seed;
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
                    NodePlan::Source {
                        dataset,
                        table,
                        batch_size: s.batch_size,
                        rows,
                    }
                }
                OperatorSpec::Encode(e) => {
                    let encoder = build_encoder(&e.model, seed).map_err(|err| Error::Operator {
                        node: node.id.clone(),
                        message: err.to_string(),
                    })?;
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
                    let Some(NodePlan::Encode { encoder, .. }) = &nodes[producer] else {
                        return Err(graph.spec.error(
                            &format!("{}.inputs.0", crate::spec::LoadedSpec::node_path(i)),
                            Some(&node.id),
                            "a cache must read an `encode` node directly (expected inputs: [<encode id>])",
                        ));
                    };
                    NodePlan::Cache {
                        store: EmbeddingStore::new(&c.path, encoder.fingerprint(), encoder.dim()),
                    }
                }
                OperatorSpec::Eval(e) => NodePlan::Eval { spec: e.clone() },
                OperatorSpec::Sink(s) => {
                    let out = &graph.spec.pipeline.outputs[&s.output];
                    let producer = graph.producers(i)[0];
                    let schema = graph.schemas[producer]
                        .clone()
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
        Ok(Plan { graph, nodes })
    }
}

/// Builds the encoder a `model` setting describes; `seed` is the pipeline's.
pub fn build_encoder(model: &ModelSpec, seed: u64) -> freshen_operators::Result<SharedEncoder> {
    match model {
        ModelSpec::Hashed(h) => {
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
            Ok(Arc::new(HashedEncoder::new(cfg, &Device::Cpu)?))
        }
    }
}
