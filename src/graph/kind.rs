//! The interface of a node type: what the graph asks of each node's settings.
//!
//! Every node type is one module of `crate::nodes` holding a settings struct that
//! implements [`NodeKind`]: its inputs and outputs (checked before anything runs), the
//! models, datasets and outputs it names, the files it reads (checked by `freshen
//! check`), and its [`plan`](NodeKind::plan): the operator it becomes at run time. The
//! graph and the runtime only ever see this trait; [`NodeEntry`] registers a type under
//! its `type` name.

use std::any::Any;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use serde_yaml::Value;

use super::needs::Need;
use super::peers::{Cadence, DataSource, Picks, TableName, TrainingLoss};
use super::{Graph, GraphNode};
use crate::dataflow::{Operator, ProcessModels};
use crate::error::{Error, Result};
use crate::models::{Model, ModelRef, Role};
use crate::spec::LoadedSpec;

/// What a node names that the pipeline must define, with the settings key naming it.
#[derive(Debug, Clone, Default)]
pub struct References {
    /// `(key, name)` of a dataset of `inputs:`.
    pub dataset: Option<(&'static str, String)>,
    /// `(key, name)` of an output of `outputs:` it writes.
    pub output: Option<(&'static str, String)>,
    /// `(key, name, role)` of each model of `models:` it uses.
    pub models: Vec<(&'static str, String, Role)>,
}

/// How a node uses a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// An input file it reads.
    Read,
    /// An output file it writes (replaced when the run commits).
    Write,
    /// An output folder it writes (replaced when the run commits).
    WriteFolder,
    /// A store folder it reads and updates.
    Store,
}

/// A path a node reads or writes, with the setting that names it.
#[derive(Debug, Clone)]
pub struct FileUse {
    /// The dotted path of the setting (`outputs.metrics.path`, `nodes.3.trec`).
    pub at: String,
    /// The path.
    pub path: std::path::PathBuf,
    /// How it is used.
    pub access: Access,
}

/// A persistent store of embeddings that a node keeps ([`NodeKind::store`]).
#[derive(Debug, Clone, Copy)]
pub struct Store<'a> {
    /// The store's folder.
    pub path: &'a std::path::Path,
    /// When training: re-embed the whole corpus every this many steps.
    pub refresh_every: Option<usize>,
}

/// The run-time form of a node, and what planning it learnt.
pub struct Planned {
    /// The operator every worker builds.
    pub operator: Box<dyn Operator>,
    /// For the source of training pairs: the run's training steps.
    pub steps: Option<usize>,
}

impl Planned {
    /// An operator with nothing else learnt.
    pub fn operator(op: impl Operator + 'static) -> Self {
        Self {
            operator: Box::new(op),
            steps: None,
        }
    }
}

/// The settings of one node, and everything the graph and the runtime ask of its type.
///
/// A new node type implements it in its own module and adds one [`NodeEntry`] to the
/// registry (freshen's own are `freshen::nodes::KINDS`). Here, a type `passthrough`
/// with one required input whose rows it hands on as they are:
///
/// ```
/// use freshen::dataflow::{BatchStream, BuildCx, Operator};
/// use freshen::graph::needs::{self, Need};
/// use freshen::graph::{CheckCx, Graph, InputRole, NodeEntry, NodeKind, PlanCx, Planned, MAIN};
/// use freshen::spec::LoadedSpec;
///
/// #[derive(Debug)]
/// struct Passthrough;
///
/// const ROLES: &[InputRole] = &[InputRole::required("rows", "the rows to hand on")];
///
/// impl NodeKind for Passthrough {
///     fn type_name(&self) -> &'static str {
///         "passthrough"
///     }
///     fn roles(&self) -> &'static [InputRole] {
///         ROLES
///     }
///     fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
///         vec![("rows", vec![needs::text("id")])]
///     }
///     fn outputs(&self, cx: &CheckCx) -> freshen::Result<Vec<(String, arrow::datatypes::SchemaRef)>> {
///         Ok(vec![(MAIN.to_string(), cx.input_schema("rows").expect("checked"))])
///     }
///     fn plan(&self, _cx: &PlanCx) -> freshen::Result<Planned> {
///         Ok(Planned::operator(Pass))
///     }
///     fn settings_json(&self) -> serde_json::Value {
///         serde_json::json!({})
///     }
/// }
///
/// /// At run time: the input stream is the output stream.
/// struct Pass;
///
/// impl Operator for Pass {
///     fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> freshen::Result<Vec<(String, BatchStream<'s>)>> {
///         Ok(vec![(MAIN.to_string(), cx.input("rows")?)])
///     }
/// }
///
/// let mut kinds: Vec<NodeEntry> = freshen::nodes::KINDS.to_vec();
/// kinds.push(NodeEntry {
///     name: "passthrough",
///     parse: |_cx, _settings| Ok(Box::new(Passthrough)),
///     schema: || serde_json::json!({"type": "object"}),
///     roles: ROLES,
/// });
/// let yaml = |inputs: &str| format!("
/// inputs: {{d: {{path: data/wordnet-sample}}}}
/// nodes:
///   - {{id: corpus, type: source, dataset: d}}
///   - {{id: same, type: passthrough, inputs: {inputs}}}
///   - {{id: write, type: sink, inputs: [same], output: rows}}
/// outputs: {{rows: {{path: /tmp/rows.parquet}}}}
/// ");
/// let spec = LoadedSpec::from_str("p.yaml".as_ref(), &yaml("{rows: corpus}"), &[])?;
/// let graph = Graph::build(spec, &kinds)?;
/// assert_eq!(graph.main_schema(1), graph.main_schema(0));
///
/// // Its roles are checked like any other type's.
/// let spec = LoadedSpec::from_str("p.yaml".as_ref(), &yaml("{row: corpus}"), &[])?;
/// let err = Graph::build(spec, &kinds).unwrap_err().to_string();
/// assert!(err.contains("`passthrough` has no input `row`"), "{err}");
/// # Ok::<(), freshen::Error>(())
/// ```
pub trait NodeKind: Any + fmt::Debug + Send + Sync {
    /// The `type` as written.
    fn type_name(&self) -> &'static str;

    /// Its inputs, by role, in the order an older pipeline's positional list gives them.
    fn roles(&self) -> &'static [InputRole];

    /// The roles of a positional list of inputs whose producers have types `types`
    /// (older pipelines): by default the first roles in order, if that leaves no required
    /// role out (`None`: no reading fits).
    fn positional(&self, types: &[&str]) -> Option<Vec<&'static str>> {
        by_position(self.roles(), types.len())
    }

    /// The datasets, outputs and models it names.
    fn references(&self) -> References {
        References::default()
    }

    /// What the input of each role must carry (a role not listed: any rows).
    fn needs(&self, cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)>;

    /// Its output ports with their schemas, main port first (none for a sink), given its
    /// inputs' schemas (already checked against [`NodeKind::needs`]).
    fn outputs(&self, cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>>;

    /// For a node that reads a dataset's table (`source`): what its readers may ask of it.
    fn data_source(&self) -> Option<&dyn DataSource> {
        None
    }

    /// For a node that picks targets for each query (`sample`): what it picks.
    fn picks(&self) -> Option<Picks> {
        None
    }

    /// For a `correct` node: when it applies its corrector, if it reads the whole cache.
    fn cadence(&self) -> Option<Cadence> {
        None
    }

    /// For a training `loss` node: its softmax's β and the corrector's objective.
    fn training_loss(&self) -> Option<TrainingLoss> {
        None
    }

    /// For a `synthetic` node: the world it generates.
    fn world(&self) -> Option<&freshen_operators::synthetic::WorldConfig> {
        None
    }

    /// Checks that need the whole graph: the types of the nodes it reads, who reads it.
    fn check(&self, cx: &CheckCx) -> Result<()> {
        let _ = cx;
        Ok(())
    }

    /// The persistent store this node keeps of the vectors it reads, if it keeps one (a
    /// `cache`): the node that feeds it then embeds only the rows the store lacks.
    fn store(&self) -> Option<Store<'_>> {
        None
    }

    /// Whether `freshen run` prints this node's counters (encoded, reused, ...).
    fn prints_counts(&self, cx: &CheckCx) -> bool {
        let _ = cx;
        false
    }

    /// For the node that trains (`update`): the training the graph does.
    fn training(&self, cx: &CheckCx) -> Result<Option<super::Training>> {
        let _ = cx;
        Ok(None)
    }

    /// Checks the files it reads: presence and columns, and with `rows`, every row.
    /// `seen` lists what earlier nodes checked already (keys of the node's choosing).
    fn check_files(&self, cx: &CheckCx, rows: bool, seen: &mut Vec<String>) -> Result<()> {
        let _ = (cx, rows, seen);
        Ok(())
    }

    /// The paths it reads and writes, for the checks that outputs never replace inputs,
    /// never collide and can be written.
    fn files(&self, cx: &CheckCx) -> Vec<FileUse> {
        let _ = cx;
        Vec::new()
    }

    /// The large allocations it makes per worker (see `graph::memory`).
    fn memory(&self, cx: &CheckCx) -> Vec<Cost> {
        let _ = cx;
        Vec::new()
    }

    /// Its operator for this process: datasets opened, models looked up, decisions made.
    fn plan(&self, cx: &PlanCx) -> Result<Planned>;

    /// The settings in effect, defaults included, as JSON (for the run's record).
    fn settings_json(&self) -> serde_json::Value;
}

/// One input a node type reads: the role a pipeline names it by, whether it must be
/// given, and what it must be (one line, for messages and the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputRole {
    /// The key under `inputs:` (`queries`, `search`).
    pub name: &'static str,
    /// Whether the node needs it.
    pub required: bool,
    /// What it carries and which node gives it.
    pub about: &'static str,
    /// For an input freshen wires itself: `(role, port)`, the port it reads of the node
    /// given as `role`, when that node has the port (an `encode`'s stored keys for its
    /// `cache`). A pipeline does not write it; `freshen graph` draws it.
    pub implied: Option<(&'static str, &'static str)>,
}

impl InputRole {
    /// An input the node needs.
    pub const fn required(name: &'static str, about: &'static str) -> Self {
        Self {
            name,
            required: true,
            about,
            implied: None,
        }
    }

    /// An input the node may take.
    pub const fn optional(name: &'static str, about: &'static str) -> Self {
        Self {
            name,
            required: false,
            about,
            implied: None,
        }
    }

    /// An input freshen wires itself: port `port` of the node given as `from`.
    pub const fn implied(
        name: &'static str,
        (from, port): (&'static str, &'static str),
        about: &'static str,
    ) -> Self {
        Self {
            name,
            required: false,
            about,
            implied: Some((from, port)),
        }
    }
}

/// The first `n` of `roles` a pipeline writes, if they include every required one.
pub fn by_position(roles: &[InputRole], n: usize) -> Option<Vec<&'static str>> {
    let written: Vec<&InputRole> = roles.iter().filter(|r| r.implied.is_none()).collect();
    let taken = written.get(..n)?;
    let left_out = written[n..].iter().any(|r| r.required);
    (!left_out).then(|| taken.iter().map(|r| r.name).collect())
}

/// A node type: its `type` name, how its settings are read, and their schema.
#[derive(Clone, Copy)]
pub struct NodeEntry {
    /// The `type` as written.
    pub name: &'static str,
    /// Reads a node's settings (the node's mapping without `id`, `type` and `inputs`).
    pub parse: fn(&ParseCx, Value) -> Result<Box<dyn NodeKind>>,
    /// The JSON Schema of its settings.
    pub schema: fn() -> serde_json::Value,
    /// Every input role it may take, whatever its settings (for the schema and the
    /// reference).
    pub roles: &'static [InputRole],
}

/// The node types there are, by name: what a pipeline's `type`s are looked up in.
pub type Registry = [NodeEntry];

/// Where a node's settings are written, for reading them.
pub struct ParseCx<'a> {
    /// The loaded pipeline.
    pub spec: &'a LoadedSpec,
    /// The node's index in the file.
    pub index: usize,
    /// Its id.
    pub id: &'a str,
}

impl ParseCx<'_> {
    /// The node's dotted path (`nodes.3`).
    pub fn path(&self) -> String {
        LoadedSpec::node_path(self.index)
    }

    /// Deserialises the node's settings, with located errors.
    pub fn settings<T: serde::de::DeserializeOwned>(&self, value: Value) -> Result<T> {
        self.spec.deserialize_at(&self.path(), Some(self.id), value)
    }

    /// An error at `key` of the node.
    pub fn error(&self, key: &str, message: impl Into<String>) -> Error {
        self.spec
            .error(&join(&self.path(), key), Some(self.id), message)
    }

    /// A compute error located at the setting it names, or at the node.
    pub fn located(&self, e: freshen_operators::Error) -> Error {
        match e {
            freshen_operators::Error::Field { field, message } => self.error(&field, message),
            other => self.error("", other.to_string()),
        }
    }

    /// Reads the model written under `key` (a name, a model, or nothing: the default).
    pub fn model(&self, key: &str, value: &Value) -> Result<ModelRef> {
        ModelRef::parse(self.spec, &join(&self.path(), key), Some(self.id), value)
    }
}

fn join(path: &str, key: &str) -> String {
    match key.is_empty() {
        true => path.to_string(),
        false => format!("{path}.{key}"),
    }
}

/// Where a node's input is: its role (`"search"`), or its slot among the inputs given
/// (in the roles' declared order).
pub trait Slot: Copy {
    /// The slot in `node`'s inputs, if that input is given.
    fn slot(self, node: &GraphNode) -> Option<usize>;
}

/// An input by its index among the node's inputs: for the graph's own walks over every
/// input of a node (a node's checks name roles).
impl Slot for usize {
    fn slot(self, node: &GraphNode) -> Option<usize> {
        (self < node.inputs.len()).then_some(self)
    }
}

impl Slot for &str {
    fn slot(self, node: &GraphNode) -> Option<usize> {
        node.roles.iter().position(|r| *r == self)
    }
}

/// One node of a graph being checked, and the graph around it.
pub struct CheckCx<'a> {
    /// The graph (its ports filled up to this node's inputs while outputs are computed).
    pub graph: &'a Graph,
    /// The node's index.
    pub node: usize,
}

impl<'a> CheckCx<'a> {
    /// The node.
    pub fn this(&self) -> &'a GraphNode {
        &self.graph.nodes()[self.node]
    }

    /// The loaded pipeline.
    pub fn spec(&self) -> &'a LoadedSpec {
        &self.graph.spec
    }

    /// An error at `key` of the node (`""`: the node itself).
    pub fn error(&self, key: &str, message: impl Into<String>) -> Error {
        let path = join(&LoadedSpec::node_path(self.node), key);
        self.spec().error(&path, Some(&self.this().id), message)
    }

    /// An error at the node's input `at` (as written: under its role, or its position).
    pub fn input_error(&self, at: impl Slot, message: impl Into<String>) -> Error {
        let key = at
            .slot(self.this())
            .and_then(|j| self.this().keys.get(j))
            .map_or_else(|| "inputs".to_string(), |k| format!("inputs.{k}"));
        self.error(&key, message)
    }

    /// Number of inputs.
    pub fn inputs(&self) -> usize {
        self.graph.inputs(self.node).len()
    }

    /// Whether the input of role `role` is given.
    pub fn has(&self, role: &str) -> bool {
        role.slot(self.this()).is_some()
    }

    /// The edge of input `at`.
    fn edge(&self, at: impl Slot) -> Option<&'a super::Edge> {
        self.graph.inputs(self.node).get(at.slot(self.this())?)
    }

    /// The node that input `at` reads.
    pub fn producer(&self, at: impl Slot) -> Option<&'a GraphNode> {
        Some(&self.graph.nodes()[self.edge(at)?.node])
    }

    /// The index of the node that input `at` reads.
    pub fn producer_index(&self, at: impl Slot) -> Option<usize> {
        self.edge(at).map(|e| e.node)
    }

    /// The port input `at` reads.
    pub fn port(&self, at: impl Slot) -> &'a str {
        self.edge(at).map_or("", |e| e.port.as_str())
    }

    /// Whether input `at`'s node is of type `type_name` (`"cache"`): what a node checks
    /// of the nodes it reads, without importing their modules.
    pub fn producer_is(&self, at: impl Slot, type_name: &str) -> bool {
        self.producer(at)
            .is_some_and(|p| p.kind.type_name() == type_name)
    }

    /// The name of the model of `models:` that input `at`'s node uses as `role` (an
    /// `encode` node's encoder, a `correct` node's corrector), if it names one.
    pub fn producer_model(&self, at: impl Slot, role: Role) -> Option<String> {
        self.graph.model_of(self.producer_index(at)?, role)
    }

    /// Input `at`'s node if it reads a dataset's table, with that node's own context (to
    /// open the dataset or count its rows).
    pub fn producer_source(&self, at: impl Slot) -> Option<(&'a dyn DataSource, CheckCx<'a>)> {
        let node = self.producer_index(at)?;
        let source = self.graph.nodes()[node].kind.data_source()?;
        let cx = CheckCx {
            graph: self.graph,
            node,
        };
        Some((source, cx))
    }

    /// Whether input `at`'s node reads table `table` of a dataset.
    pub fn producer_reads(&self, at: impl Slot, table: TableName) -> bool {
        self.producer(at)
            .and_then(|p| p.kind.data_source())
            .is_some_and(|s| s.table() == table)
    }

    /// Whether input `at`'s node has an input of role `role`.
    pub fn producer_has(&self, at: impl Slot, role: &str) -> bool {
        self.producer(at).is_some_and(|p| p.roles.contains(&role))
    }

    /// The schema input `at` carries.
    pub fn input_schema(&self, at: impl Slot) -> Option<SchemaRef> {
        self.graph.schema(self.edge(at)?)
    }

    /// The width of input `at`'s `embedding` column (0 if it has none).
    pub fn input_dim(&self, at: impl Slot) -> usize {
        self.input_schema(at)
            .as_ref()
            .and_then(super::needs::vector_dim)
            .unwrap_or(0)
    }

    /// The model `r` names or holds (`None` for an unknown name: reported by the
    /// reference checks).
    pub fn model(&self, r: &'a ModelRef) -> Option<&'a Model> {
        match r {
            ModelRef::Named(n) => self.graph.models.get(n),
            ModelRef::Inline(m) => Some(m),
        }
    }

    /// The nodes that read this one.
    pub fn consumers(&self) -> &'a [usize] {
        self.graph.consumers(self.node)
    }
}

/// What planning one node may look at.
pub struct PlanCx<'a> {
    /// The checked graph.
    pub graph: &'a Graph,
    /// The node's index.
    pub node: usize,
    /// Worker threads per process.
    pub workers: usize,
    /// Training steps of the run (0 when it does not train, or before the pairs source is
    /// planned: that source is planned first).
    pub steps: usize,
    /// The first step this run trains: a resumed run's checkpoint step, else 0. Every
    /// source starts sending at this time.
    pub start: usize,
    /// The process's instances of the models of `models:`.
    pub models: &'a ProcessModels,
    /// What nodes planned earlier (in topological order) published for later ones.
    pub facts: &'a Facts,
}

/// What planning a node publishes for the nodes after it (an encoder's fingerprint for
/// the cache that stores its vectors, say), by node.
#[derive(Default)]
pub struct Facts(RefCell<BTreeMap<usize, Arc<dyn Any + Send + Sync>>>);

impl Facts {
    /// Publishes `fact` as node `node`'s.
    pub fn publish(&self, node: usize, fact: impl Any + Send + Sync) {
        self.0.borrow_mut().insert(node, Arc::new(fact));
    }

    /// Node `node`'s fact, if it published one of type `T`.
    pub fn of<T: Any + Send + Sync>(&self, node: usize) -> Option<Arc<T>> {
        let fact = self.0.borrow().get(&node)?.clone();
        fact.downcast::<T>().ok()
    }
}

impl<'a> PlanCx<'a> {
    /// The node.
    pub fn this(&self) -> &'a GraphNode {
        &self.graph.nodes()[self.node]
    }

    /// A check-phase view of the same node.
    pub fn check(&self) -> CheckCx<'a> {
        CheckCx {
            graph: self.graph,
            node: self.node,
        }
    }

    /// An error of this node, found while planning.
    pub fn error(&self, key: &str, message: impl Into<String>) -> Error {
        self.check().error(key, message)
    }
}

/// What part of a run needs memory, how much, and the setting that sizes it.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    /// What it is, for the message (`8,000 queries × 8,016 candidates × 128 floats`).
    pub what: String,
    /// Bytes.
    pub bytes: f64,
    /// The dotted path of the setting to change (`nodes.1.batch_size`), if one decides it.
    pub at: Option<String>,
    /// Who holds it: every worker a copy, the workers a shard each, or the leader alone.
    pub per: Per,
    /// When it is held: for the whole run, or during one phase of it.
    pub phase: Phase,
}

/// When a [`Cost`] is held. The allocator keeps freed memory for reuse and never hands it
/// back (`cli::process`): what a phase frees stays resident, and the next phase reuses it.
/// So the peak is what is held for the run plus the largest phase, whichever came first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// From when it is made to the end (weights, moments, copies of the cache).
    #[default]
    Run,
    /// While an encoder embeds a batch without a tape: the cache's first embedding, the
    /// evaluation's re-embedding.
    Encode,
    /// While a training step runs: its forwards' tapes, the backward and the update.
    Step,
    /// While a checkpoint is written: the copies of the weights and moments it saves.
    Checkpoint,
}

/// How a [`Cost`] scales with workers and processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Per {
    /// Each worker holds its own copy (models, a step's score blocks).
    #[default]
    Worker,
    /// The workers hold disjoint shards of about `1/W` each (the sharded cache).
    Shard,
    /// Worker 0 alone holds it (the training evaluation's corpus and caches).
    Leader,
}
