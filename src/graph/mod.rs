//! A validated graph of typed nodes, built from a loaded pipeline.
//!
//! Building a [`Graph`] runs every check that needs no data: ids, edges, arity,
//! references to inputs and outputs, cycles, and whether each edge's Arrow schema
//! gives the consumer the columns it needs. [`Graph::check_inputs`] then looks at the
//! input files' presence and columns, and [`Graph::check_data`] scans their rows. The
//! runtime only ever receives a graph that passed all three.

mod ports;
mod render;
mod training;

use std::collections::{BTreeMap, HashMap};

use arrow::datatypes::SchemaRef;

use crate::error::{Error, Result};
use crate::spec::{InputFormat, LoadedSpec, NodeSpec, OperatorSpec, TableName};
use crate::store::beir::{Dataset, Format, Table};

pub use ports::{model_dim, MAIN, STATS, STEPS};
pub use render::{to_dot, to_mermaid};
pub use training::Training;

/// One input of a node: the producing node and which of its output ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// Index of the producing node.
    pub node: usize,
    /// The producer's port ([`MAIN`] for its main output).
    pub port: String,
}

/// A pipeline whose graph is known to be well formed.
#[derive(Debug, Clone)]
pub struct Graph {
    /// The loaded pipeline (kept for pointing errors at its text).
    pub spec: LoadedSpec,
    /// Node indices in an order where every node comes after its inputs.
    pub order: Vec<usize>,
    /// The output ports of each node with their Arrow schemas, main port first (none
    /// for sinks).
    pub ports: Vec<Vec<(String, SchemaRef)>>,
    /// What training the graph does, if it has an `update` node.
    pub training: Option<Training>,
    index: HashMap<String, usize>,
    consumers: Vec<Vec<usize>>,
    edges: Vec<Vec<Edge>>,
}

impl Graph {
    /// Checks the graph of `spec` and computes every node's output schema.
    pub fn build(spec: LoadedSpec) -> Result<Self> {
        let nodes = &spec.pipeline.nodes;
        let mut index = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            if let Some(&first) = index.get(&n.id) {
                let first_path = format!("{}.id", LoadedSpec::node_path(first));
                let at = spec
                    .span_of(&first_path)
                    .map(|s| format!(" at line {}", s.line))
                    .unwrap_or_default();
                return Err(spec.error(
                    &format!("{}.id", LoadedSpec::node_path(i)),
                    Some(&n.id),
                    format!(
                        "duplicate id `{}` (first defined{at}; ids must be unique)",
                        n.id
                    ),
                ));
            }
            index.insert(n.id.clone(), i);
        }
        let mut consumers = vec![Vec::new(); nodes.len()];
        let mut edges = vec![Vec::new(); nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            check_arity(&spec, i, n)?;
            for (j, input) in n.inputs.iter().enumerate() {
                match resolve(&index, input) {
                    Some(edge) => {
                        consumers[edge.node].push(i);
                        edges[i].push(edge);
                    }
                    None => {
                        let known: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
                        return Err(spec.error(
                            &format!("{}.inputs.{j}", LoadedSpec::node_path(i)),
                            Some(&n.id),
                            format!(
                                "input `{input}` names no node (expected one of {})",
                                known.join(", ")
                            ),
                        ));
                    }
                }
            }
            check_references(&spec, i, n)?;
        }
        check_outputs(&spec)?;
        let order = topological_order(&spec, &edges)?;
        let count = nodes.len();
        let mut graph = Graph {
            spec,
            order,
            ports: vec![Vec::new(); count],
            training: None,
            index,
            consumers,
            edges,
        };
        for &i in &graph.order.clone() {
            let mut inputs: Vec<(String, Option<SchemaRef>)> = Vec::new();
            for (j, edge) in graph.edges[i].iter().enumerate() {
                let name = graph.spec.pipeline.nodes[i].inputs[j].clone();
                let schema = graph.schema(edge);
                if schema.is_none() && !graph.ports[edge.node].is_empty() {
                    let have: Vec<&str> = graph.ports[edge.node]
                        .iter()
                        .map(|(p, _)| p.as_str())
                        .filter(|p| !p.is_empty())
                        .collect();
                    return Err(graph.spec.error(
                        &format!("{}.inputs.{j}", LoadedSpec::node_path(i)),
                        Some(&graph.spec.pipeline.nodes[i].id),
                        format!(
                            "`{}` has no port `{}` (expected one of: {})",
                            graph.spec.pipeline.nodes[edge.node].id,
                            edge.port,
                            if have.is_empty() {
                                "none".to_string()
                            } else {
                                have.join(", ")
                            }
                        ),
                    ));
                }
                inputs.push((name, schema));
            }
            graph.ports[i] = ports::output_ports(&graph.spec, i, &inputs)?;
        }
        graph.training = training::check(&graph)?;
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

    /// The nodes, in file order.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.spec.pipeline.nodes
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

    /// Opens the dataset a source node reads.
    pub fn dataset(&self, i: usize) -> Result<Dataset> {
        let node = &self.nodes()[i];
        let OperatorSpec::Source(s) = &node.op else {
            return Err(Error::Other(format!("node {} is not a source", node.id)));
        };
        let input = &self.spec.pipeline.inputs[&s.dataset];
        let format = match input.format {
            InputFormat::Auto => None,
            InputFormat::Parquet => Some(Format::Parquet),
            InputFormat::Beir => Some(Format::Jsonl),
        };
        Dataset::open(&input.path, format).map_err(|e| {
            self.spec.error(
                &format!("inputs.{}.path", s.dataset),
                Some(&node.id),
                e.to_string(),
            )
        })
    }

    /// The table a source node reads.
    pub fn table(&self, i: usize) -> Option<Table> {
        match &self.nodes()[i].op {
            OperatorSpec::Source(s) => Some(match s.table {
                TableName::Corpus => Table::Corpus,
                TableName::Queries => Table::Queries,
                TableName::Qrels | TableName::Pairs => {
                    Table::Qrels(s.split.clone().unwrap_or_default())
                }
            }),
            _ => None,
        }
    }

    /// Checks that every source's files exist and hold the columns it needs (no rows read).
    pub fn check_inputs(&self) -> Result<()> {
        for &i in &self.order {
            let Some(table) = self.table(i) else { continue };
            let ds = self.dataset(i)?;
            let OperatorSpec::Source(s) = &self.nodes()[i].op else {
                continue;
            };
            let mut tables = vec![table];
            if s.table == TableName::Pairs {
                tables.push(Table::Queries);
            }
            for table in tables {
                ds.check_columns(&table).map_err(|e| {
                    self.spec.error(
                        &format!("inputs.{}.path", s.dataset),
                        Some(&self.nodes()[i].id),
                        e.to_string(),
                    )
                })?;
            }
        }
        Ok(())
    }

    /// Checks every pretrained model folder the pipeline names (config, tokenizer, the
    /// weight file's header) without loading weights. Errors point at the model's `path`.
    pub fn check_models(&self) -> Result<()> {
        use crate::spec::{ModelRef, ModelSpec};
        let check = |m: &ModelSpec, key: String, node: Option<&str>| -> Result<()> {
            if let ModelSpec::Bert(b) = m {
                freshen_operators::BertEncoder::check_folder(&b.path)
                    .map_err(|e| self.spec.error(&key, node, e.to_string()))?;
            }
            Ok(())
        };
        for (name, m) in &self.spec.pipeline.models {
            check(m, format!("models.{name}.path"), None)?;
        }
        for (i, n) in self.nodes().iter().enumerate() {
            if let OperatorSpec::Encode(e) = &n.op {
                if let ModelRef::Inline(m) = &e.model {
                    check(m, format!("nodes.{i}.model.path"), Some(&n.id))?;
                }
            }
        }
        Ok(())
    }

    /// Scans every dataset the sources read, row by row (nulls, empty texts, duplicate ids,
    /// qrels naming unknown ids). Errors name the data file and row, and the node.
    pub fn check_data(&self) -> Result<()> {
        let mut seen = BTreeMap::new();
        for &i in &self.order {
            let OperatorSpec::Source(s) = &self.nodes()[i].op else {
                continue;
            };
            if seen.insert(s.dataset.clone(), ()).is_some() {
                continue;
            }
            self.dataset(i)?
                .validate()
                .map_err(|e| e.with_node(&self.nodes()[i].id))?;
        }
        Ok(())
    }
}

/// `id` or `id.port`: the node a written input names, with its port.
fn resolve(index: &HashMap<String, usize>, input: &str) -> Option<Edge> {
    if let Some(&node) = index.get(input) {
        return Some(Edge {
            node,
            port: MAIN.to_string(),
        });
    }
    let (id, port) = input.rsplit_once('.')?;
    index.get(id).map(|&node| Edge {
        node,
        port: port.to_string(),
    })
}

fn check_arity(spec: &LoadedSpec, i: usize, n: &NodeSpec) -> Result<()> {
    let allowed: &[usize] = match &n.op {
        OperatorSpec::Source(_) => &[0],
        OperatorSpec::Cache(_) | OperatorSpec::Sink(_) => &[1],
        OperatorSpec::Encode(_) | OperatorSpec::Correct(_) => &[1, 2],
        OperatorSpec::Sample(_) => &[3],
        OperatorSpec::Loss(_) => &[3, 4],
        OperatorSpec::Update(_) => &[2],
        OperatorSpec::Eval(e) if e.models.is_some() => &[6],
        OperatorSpec::Eval(_) => &[3],
    };
    if !allowed.contains(&n.inputs.len()) {
        let want = allowed
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(" or ");
        let path = if n.inputs.is_empty() {
            LoadedSpec::node_path(i)
        } else {
            format!("{}.inputs", LoadedSpec::node_path(i))
        };
        return Err(spec.error(
            &path,
            Some(&n.id),
            format!(
                "`{}` takes {want} input{} (found {})",
                n.op.type_name(),
                if allowed == [1] { "" } else { "s" },
                n.inputs.len()
            ),
        ));
    }
    Ok(())
}

fn check_references(spec: &LoadedSpec, i: usize, n: &NodeSpec) -> Result<()> {
    let p = &spec.pipeline;
    let path = LoadedSpec::node_path(i);
    match &n.op {
        OperatorSpec::Source(s) => {
            if !p.inputs.contains_key(&s.dataset) {
                let known: Vec<&str> = p.inputs.keys().map(String::as_str).collect();
                return Err(spec.error(
                    &format!("{path}.dataset"),
                    Some(&n.id),
                    format!(
                        "dataset `{}` is not among the pipeline's inputs (expected one of: {})",
                        s.dataset,
                        known.join(", ")
                    ),
                ));
            }
            if matches!(s.table, TableName::Qrels | TableName::Pairs) && s.split.is_none() {
                return Err(spec.error(
                    &format!("{path}.table"),
                    Some(&n.id),
                    format!(
                        "`table: {}` needs a `split` (expected e.g. split: {})",
                        if s.table == TableName::Pairs {
                            "pairs"
                        } else {
                            "qrels"
                        },
                        if s.table == TableName::Pairs {
                            "train"
                        } else {
                            "test"
                        }
                    ),
                ));
            }
        }
        OperatorSpec::Sink(s) if !p.outputs.contains_key(&s.output) => {
            let known: Vec<&str> = p.outputs.keys().map(String::as_str).collect();
            return Err(spec.error(
                &format!("{path}.output"),
                Some(&n.id),
                format!(
                    "output `{}` is not among the pipeline's outputs (expected one of: {})",
                    s.output,
                    known.join(", ")
                ),
            ));
        }
        _ => {}
    }
    Ok(())
}

fn check_outputs(spec: &LoadedSpec) -> Result<()> {
    let mut writers: BTreeMap<&str, &str> = BTreeMap::new();
    for (i, n) in spec.pipeline.nodes.iter().enumerate() {
        if let OperatorSpec::Sink(s) = &n.op {
            if let Some(other) = writers.insert(&s.output, &n.id) {
                return Err(spec.error(
                    &format!("{}.output", LoadedSpec::node_path(i)),
                    Some(&n.id),
                    format!("output `{}` is already written by node `{other}` (expected one sink per output)", s.output),
                ));
            }
        }
    }
    for name in spec.pipeline.outputs.keys() {
        if !writers.contains_key(name.as_str()) {
            return Err(spec.key_error(
                &format!("outputs.{name}"),
                None,
                format!(
                    "output `{name}` is written by no sink (expected a sink with `output: {name}`)"
                ),
            ));
        }
    }
    Ok(())
}

/// Kahn's algorithm; a cycle is reported at the first node on it, with the whole loop.
fn topological_order(spec: &LoadedSpec, edges: &[Vec<Edge>]) -> Result<Vec<usize>> {
    let nodes = &spec.pipeline.nodes;
    let mut indegree: Vec<usize> = edges.iter().map(Vec::len).collect();
    let mut ready: Vec<usize> = (0..nodes.len())
        .rev()
        .filter(|&i| indegree[i] == 0)
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for (j, inputs) in edges.iter().enumerate().rev() {
            for input in inputs {
                if input.node == i {
                    indegree[j] -= 1;
                    if indegree[j] == 0 {
                        ready.push(j);
                    }
                }
            }
        }
    }
    if order.len() == nodes.len() {
        return Ok(order);
    }
    // Walk back along inputs from a node left over until a node repeats: that is the loop.
    let start = (0..nodes.len()).find(|&i| indegree[i] > 0).unwrap_or(0);
    let mut path = vec![start];
    let mut cur = start;
    loop {
        let next = edges[cur]
            .iter()
            .map(|e| e.node)
            .find(|&p| indegree[p] > 0)
            .unwrap_or(start);
        if let Some(pos) = path.iter().position(|&p| p == next) {
            // `path` follows inputs backwards; data flows the other way round.
            let mut cycle: Vec<usize> = path[pos..].iter().rev().copied().collect();
            let first = *cycle.iter().min().unwrap_or(&start);
            let at = cycle.iter().position(|&c| c == first).unwrap_or(0);
            cycle.rotate_left(at);
            cycle.push(first);
            let names: Vec<&str> = cycle.iter().map(|&c| nodes[c].id.as_str()).collect();
            return Err(spec.error(
                &format!("{}.inputs", LoadedSpec::node_path(first)),
                Some(&nodes[first].id),
                format!("cycle: {} (expected an acyclic graph)", names.join(" -> ")),
            ));
        }
        path.push(next);
        cur = next;
    }
}
