//! What each node needs at run time, prepared once per process before the dataflow starts.
//!
//! The models of `models:` are built here (once, with a replica per worker), and every
//! node is planned by its kind (datasets opened, stores resolved, its training decisions
//! read), so that a problem surfaces before any worker starts and every worker reads the
//! same, immutable plan.

use std::collections::BTreeMap;

use std::sync::Arc;

use super::checkpoint::CheckpointPlan;
use super::resume;
use crate::dataflow::{Operator, ProcessModels, ResumePoint};
use crate::error::{Error, Result};
use crate::graph::{paths, Facts, Graph, PlanCx};
use crate::models::{Built, Role};

/// The graph plus the run-time form of each node.
pub struct Plan {
    /// The validated graph.
    pub graph: Graph,
    /// One operator per node, in file order.
    pub operators: Vec<Box<dyn Operator>>,
    /// The models of `models:`, an instance per worker of this process.
    pub models: ProcessModels,
    /// Training steps (0 without training).
    pub steps: usize,
    /// A resumed run's checkpoint.
    pub resume: Option<Arc<ResumePoint>>,
    /// Where and when a training run writes its checkpoints.
    pub checkpoints: Option<Arc<CheckpointPlan>>,
    workers: usize,
}

impl Plan {
    /// Prepares every node of `graph` for `workers` workers per process; a resumed run
    /// starts at `resume`'s step with its models' weights.
    pub fn new(
        graph: Graph,
        workers: usize,
        all_workers: usize,
        resume: Option<ResumePoint>,
    ) -> Result<Self> {
        let workers = workers.max(1);
        let models = build_models(&graph, workers, resume.as_ref())?;
        let start = resume.as_ref().map_or(0, |r| r.step);
        let facts = Facts::default();
        let mut operators: Vec<Option<Box<dyn Operator>>> =
            (0..graph.nodes().len()).map(|_| None).collect();
        // The pairs source first: it knows the run's steps, which others plan by.
        let pairs = graph.training.as_ref().map(|t| t.pairs);
        let order: Vec<usize> = pairs
            .into_iter()
            .chain(graph.order.iter().copied().filter(|&i| Some(i) != pairs))
            .collect();
        let mut steps = 0;
        for i in order {
            let cx = PlanCx {
                graph: &graph,
                node: i,
                workers,
                steps,
                start,
                models: &models,
                facts: &facts,
            };
            let planned = graph.nodes()[i].kind.plan(&cx)?;
            if Some(i) == pairs {
                steps = planned.steps.unwrap_or(0);
            }
            operators[i] = Some(planned.operator);
        }
        let operators = operators
            .into_iter()
            .map(|o| o.ok_or_else(|| Error::invariant("a node left unplanned")))
            .collect::<Result<_>>()?;
        let checkpoints = match (&graph.training, paths::run_folder(&graph)) {
            (Some(t), Some(run_dir)) => Some(Arc::new(CheckpointPlan {
                run_dir,
                steps,
                when: t.resumable.clone(),
                settings: resume::comparable(&graph),
                inputs: resume::input_files(&graph),
                resumed: resume.as_ref().map(|r| r.step),
                workers: all_workers,
            })),
            _ => None,
        };
        Ok(Plan {
            graph,
            operators,
            models,
            steps,
            resume: resume.map(Arc::new),
            checkpoints,
            workers,
        })
    }

    /// Worker threads per process.
    pub fn workers(&self) -> usize {
        self.workers
    }
}

/// Builds the models of `models:` that nodes use, with a replica per worker. A corrector
/// corrects vectors as wide as the cache its nodes read.
fn build_models(
    graph: &Graph,
    workers: usize,
    resume: Option<&ResumePoint>,
) -> Result<ProcessModels> {
    let dims = corrector_dims(graph);
    let mut built = BTreeMap::new();
    for (name, model) in &graph.models {
        let dim = match model.role() {
            Role::Corrector => match dims.get(name) {
                Some(&d) => d,
                None => continue, // used by no node
            },
            Role::Encoder | Role::Reader => 0,
        };
        let m = model.build(dim).map_err(|e| {
            graph
                .spec
                .error(&format!("models.{name}"), None, e.to_string())
        })?;
        // Each model's device, where it was opened: nothing falls back unannounced.
        let device = match &m {
            Built::Encoder(e) => e.device().clone(),
            Built::Corrector(h) => h.device().clone(),
            Built::Reader(r) => r.device().clone(),
        };
        tracing::info!(
            model = %name,
            kind = %model.kind(),
            device = %freshen_operators::device::name(&device),
            setting = %model.common().device,
            "model"
        );
        built.insert(name.clone(), m);
    }
    ProcessModels::new(built, workers, &|name, model| match resume {
        Some(point) => resume::restore_model(point, name, model),
        None => Ok(()),
    })
}

/// The width of the cache each corrector corrects: that of the vectors read by a node
/// naming it (its first input carrying embeddings).
fn corrector_dims(graph: &Graph) -> BTreeMap<String, usize> {
    let mut dims = BTreeMap::new();
    for (i, n) in graph.nodes().iter().enumerate() {
        for (_, name, role) in n.kind.references().models {
            if role != Role::Corrector {
                continue;
            }
            let dim = graph.inputs(i).iter().find_map(|e| {
                graph
                    .schema(e)
                    .as_ref()
                    .and_then(crate::graph::needs::vector_dim)
            });
            if let Some(dim) = dim {
                dims.insert(name, dim);
            }
        }
    }
    dims
}
