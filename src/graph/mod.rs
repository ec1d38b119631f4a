//! A validated graph of typed nodes, built from a loaded pipeline.
//!
//! [`Graph::build`] reads every model and every node's settings (each by its kind),
//! then runs every check that needs no data: ids, edges, input roles, references to inputs,
//! outputs and models, cycles, whether each edge's Arrow schema gives the consumer the
//! columns it needs, the node types' own checks, and the training analysis.
//! [`Graph::check_files`] then looks at the input files (presence and columns, and with
//! `rows` every row). The runtime only ever receives a graph that passed all of them.
//!
//! ```
//! use freshen::graph::Graph;
//! use freshen::spec::LoadedSpec;
//!
//! let yaml = "
//! inputs: {d: {path: data/wordnet-sample}}
//! nodes:
//!   - {id: corpus, type: source, dataset: d}
//!   - {id: embed, type: encode, inputs: [corpus], model: {kind: hashed, dim: 8}}
//!   - {id: write, type: sink, inputs: [embed], output: vectors}
//! outputs: {vectors: {path: /tmp/vectors.parquet}}
//! ";
//! let spec = LoadedSpec::from_str("p.yaml".as_ref(), yaml, &[])?;
//! let graph = Graph::build(spec, freshen::nodes::KINDS)?;
//! assert_eq!(graph.nodes()[1].kind.type_name(), "encode");
//! assert_eq!(graph.main_schema(1).unwrap().field(2).name(), "embedding");
//!
//! // A typo is one line that points at it.
//! let bad = yaml.replace("dim: 8", "dmi: 8");
//! let err = Graph::build(LoadedSpec::from_str("p.yaml".as_ref(), &bad, &[])?, freshen::nodes::KINDS)
//!     .unwrap_err()
//!     .to_string();
//! assert!(err.starts_with("p.yaml:5:"), "{err}");
//! assert!(err.contains("node embed: unknown key `dmi`"), "{err}");
//! # Ok::<(), freshen::Error>(())
//! ```

mod kind;
pub mod memory;
pub mod needs;
pub mod paths;
pub mod peers;
pub mod ports;
mod render;
pub mod rewrite;
mod structure;
mod training;

use std::collections::{BTreeMap, HashMap};

use arrow::datatypes::SchemaRef;

use crate::error::Result;
use crate::models::{Model, ModelCx};
use crate::spec::LoadedSpec;

pub use kind::{
    by_position, Access, CheckCx, Cost, Facts, FileUse, InputRole, NodeEntry, NodeKind, ParseCx,
    Per, Phase, PlanCx, Planned, References, Registry, Slot, Store,
};
pub use needs::{Need, MAIN};
pub use peers::{Cadence, Context, DataSource, Picks, TableName, TrainingLoss};
pub use render::{to_dot, to_mermaid};
pub use training::{Resumable, Training};

/// One input of a node: the producing node and which of its output ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Index of the producing node.
    pub node: usize,
    /// The producer's port ([`MAIN`] for its main output).
    pub port: String,
    /// The role the reading node gives it.
    pub role: &'static str,
}

/// One node: its id, its inputs as written, and its settings, read by its kind.
#[derive(Debug)]
pub struct GraphNode {
    /// The node's id.
    pub id: String,
    /// Its inputs as written (`id` or `id.port`), in its type's role order.
    pub inputs: Vec<String>,
    /// The role of each input.
    pub roles: Vec<&'static str>,
    /// Where each input is written under `inputs:` (its role, or its position in an
    /// older pipeline's list), for messages.
    pub keys: Vec<String>,
    /// Its settings: what its type says about it.
    pub kind: Box<dyn NodeKind>,
}

impl GraphNode {
    /// The settings, if the node is of type `T`.
    pub fn settings<T: NodeKind>(&self) -> Option<&T> {
        let any: &dyn std::any::Any = self.kind.as_ref();
        any.downcast_ref::<T>()
    }

    /// Whether the node is of type `T`.
    pub fn is<T: NodeKind>(&self) -> bool {
        self.settings::<T>().is_some()
    }
}

/// A pipeline whose graph is known to be well formed.
#[derive(Debug)]
pub struct Graph {
    /// The loaded pipeline (kept for pointing errors at its text).
    pub spec: LoadedSpec,
    /// The models of `models:`, by name.
    pub models: BTreeMap<String, Model>,
    /// Node indices in an order where every node comes after its inputs.
    pub order: Vec<usize>,
    /// The output ports of each node with their Arrow schemas, main port first (none
    /// for sinks).
    pub ports: Vec<Vec<(String, SchemaRef)>>,
    /// What training the graph does, if it has a node that trains.
    pub training: Option<Training>,
    /// What the pipeline should change though it loads (inputs by position): one line
    /// each, for the commands to print.
    pub warnings: Vec<String>,
    nodes: Vec<GraphNode>,
    index: HashMap<String, usize>,
    consumers: Vec<Vec<usize>>,
    edges: Vec<Vec<Edge>>,
}

impl Graph {
    /// The name of the model of `models:` that node `i` uses as `role` (an `encode`
    /// node's encoder, a `correct` node's corrector), if it names one.
    pub fn model_of(&self, i: usize, role: crate::models::Role) -> Option<String> {
        self.nodes()[i]
            .kind
            .references()
            .models
            .into_iter()
            .find(|(_, _, r)| *r == role)
            .map(|(_, name, _)| name)
    }

    /// Reads the models and nodes of `spec` (node types looked up in `registry`), checks
    /// the graph and computes every node's output schema.
    pub fn build(spec: LoadedSpec, registry: &Registry) -> Result<Self> {
        let models = structure::parse_models(&spec)?;
        let nodes = structure::parse_nodes(&spec, registry)?;
        let index = structure::check_ids(&spec, &nodes)?;
        let mut nodes = nodes;
        let warnings = structure::assign_roles(&spec, &mut nodes, &index)?;
        let structure::Wiring { edges, consumers } = structure::edges(&spec, &nodes, &index)?;
        structure::check_references(&spec, &nodes)?;
        let order = structure::topological_order(&spec, &nodes, &edges)?;
        let count = nodes.len();
        let mut graph = Graph {
            spec,
            models,
            order,
            ports: vec![Vec::new(); count],
            training: None,
            warnings,
            nodes,
            index,
            consumers,
            edges,
        };
        for i in graph.order.clone() {
            graph.ports[i] = structure::ports(&graph, i)?;
        }
        structure::implied_edges(&mut graph);
        for i in 0..count {
            structure::check_models(&graph, i)?;
            graph.nodes[i].kind.check(&CheckCx {
                graph: &graph,
                node: i,
            })?;
        }
        graph.training = structure::training(&graph)?;
        Ok(graph)
    }

    /// The schema an edge carries (`None` for a sink's missing output or an unknown port).
    pub fn schema(&self, edge: &Edge) -> Option<SchemaRef> {
        self.ports[edge.node]
            .iter()
            .find(|(p, _)| *p == edge.port)
            .map(|(_, s)| s.clone())
    }

    /// The main output schema of node `i` (`None` for sinks).
    pub fn main_schema(&self, i: usize) -> Option<SchemaRef> {
        self.ports[i].first().map(|(_, s)| s.clone())
    }

    /// The inputs of node `i`, in order.
    pub fn inputs(&self, i: usize) -> &[Edge] {
        &self.edges[i]
    }

    /// The input of node `i` that has role `role`, if it is given.
    pub fn input(&self, i: usize, role: &str) -> Option<&Edge> {
        self.edges[i].iter().find(|e| e.role == role)
    }

    /// The nodes, in file order.
    pub fn nodes(&self) -> &[GraphNode] {
        &self.nodes
    }

    /// The index of the node with id `id`.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    /// Indices of the nodes that read node `i`.
    pub fn consumers(&self, i: usize) -> &[usize] {
        &self.consumers[i]
    }

    /// Indices of the nodes node `i` reads.
    pub fn producers(&self, i: usize) -> Vec<usize> {
        self.edges[i].iter().map(|e| e.node).collect()
    }

    /// Checks the files every model and node reads: model folders, the datasets'
    /// presence and columns; with `rows`, every row of every dataset (what `check` and
    /// `run` do first).
    pub fn check_files(&self, rows: bool) -> Result<()> {
        paths::check(self)?;
        for (name, m) in &self.models {
            m.check_files(&ModelCx {
                spec: &self.spec,
                path: format!("models.{name}"),
                node: None,
            })?;
        }
        let passes: &[bool] = if rows { &[false, true] } else { &[false] };
        for &rows in passes {
            let mut seen = Vec::new();
            for &i in &self.order {
                let cx = CheckCx {
                    graph: self,
                    node: i,
                };
                self.nodes[i].kind.check_files(&cx, rows, &mut seen)?;
            }
        }
        Ok(())
    }

    /// The settings in effect, as JSON: the pipeline with every node's and model's
    /// settings, defaults included (recorded with a run's results).
    pub fn settings_json(&self) -> serde_json::Value {
        let p = &self.spec.pipeline;
        let nodes: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| {
                let mut v = n.kind.settings_json();
                if let Some(o) = v.as_object_mut() {
                    o.insert("id".into(), n.id.clone().into());
                    // By role, however the file wrote them.
                    let inputs: serde_json::Map<String, serde_json::Value> = n
                        .roles
                        .iter()
                        .zip(&n.inputs)
                        .map(|(r, s)| (r.to_string(), s.clone().into()))
                        .collect();
                    o.insert("inputs".into(), inputs.into());
                    o.insert("type".into(), n.kind.type_name().into());
                }
                v
            })
            .collect();
        let models: serde_json::Map<String, serde_json::Value> = self
            .models
            .iter()
            .map(|(k, m)| (k.clone(), m.settings_json()))
            .collect();
        serde_json::json!({
            "version": p.version,
            "name": p.name,
            "description": p.description,
            "seed": p.seed,
            "vars": p.vars,
            "inputs": p.inputs,
            "models": models,
            "nodes": nodes,
            "outputs": p.outputs,
        })
    }
}
