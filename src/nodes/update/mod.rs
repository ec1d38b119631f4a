//! `update`: applies the loss's gradients with AdamW, for the encoders and the corrector,
//! the same on every worker; and owns the training analysis of its graph
//! ([`analysis`]): what trains, who waits for whom, who keeps forwards.

mod analysis;
mod apply;
mod grads;

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;
use freshen_operators::ranges::{finite_non_negative, finite_positive};
use freshen_operators::train::Decay;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Settings;
use crate::dataflow::{BatchStream, BuildCx, Operator};
use crate::error::{Error, Result};
use crate::graph::needs::{self, Need};
use crate::graph::ports::STATS;
use crate::graph::{CheckCx, InputRole, NodeKind, PlanCx, Planned, Training, MAIN};
use crate::models::Role;
use crate::store::tables::{self, col};

/// Settings of `update`: AdamW for the encoders and another for the corrector.
///
/// Writes one row per step: its losses, learning rates, gradient norms and counts.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Update {
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
    /// Write a resumable checkpoint every this many steps (at the first step after it
    /// where the run can resume exactly: docs/long-runs.md), and after the last step.
    #[serde(default)]
    #[schemars(range(min = 1))]
    pub resume_every: Option<usize>,
    /// Also write one when this many minutes passed since the last (0: never by time): a
    /// kill loses at most about this much training. By time alone, the checkpoint after
    /// the last step is written only when over a minute of training preceded it.
    #[serde(default = "default_resume_minutes")]
    pub resume_minutes: f64,
    /// What a step whose loss or gradient norm is not finite (NaN or infinite) does:
    /// `stop` the run there with an error, committing nothing, or `skip` its update
    /// (the weights stay; counted in the summary's `skipped_steps`).
    #[serde(default)]
    pub on_nonfinite: OnNonfinite,
}

/// What `update` does with a step whose loss or gradient norm is not finite.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnNonfinite {
    /// Stop the run at that step with one line naming the step, the loss and the setting
    /// to lower (exit 2); the outputs of earlier runs stay as they were, and so does the
    /// newest resumable checkpoint.
    #[default]
    Stop,
    /// Leave the weights and the optimiser as they were and go on to the next step.
    Skip,
}

fn default_resume_minutes() -> f64 {
    10.0
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

impl Settings for Update {
    const TYPE: &'static str = "update";
    const ROLES: &'static [InputRole] = ROLES;

    fn validate(&self) -> freshen_operators::Result<()> {
        for (key, v) in [
            ("lr", self.lr),
            ("embedding_lr", self.embedding_lr),
            ("corrector_lr", self.corrector_lr),
            ("weight_decay", self.weight_decay),
            ("corrector_weight_decay", self.corrector_weight_decay),
        ] {
            finite_non_negative(key, v)?;
        }
        if let Some(c) = self.clip {
            finite_positive("clip", c)?;
        }
        if let Some(n) = self.resume_every {
            freshen_operators::ranges::at_least("resume_every", n, 1)?;
        }
        finite_non_negative("resume_minutes", self.resume_minutes)
    }
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] = &[
    InputRole::required("grads", "the `loss` node: its gradients"),
    InputRole::required(
        "stats",
        "the loss's `stats` port (`loss.stats`): the step's losses",
    ),
];

impl NodeKind for Update {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        vec![
            (
                "grads",
                vec![
                    needs::text(col::NODE),
                    needs::text(col::ID),
                    needs::vector(col::GRAD),
                ],
            ),
            ("stats", vec![needs::step()]),
        ]
    }

    fn outputs(&self, _cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        Ok(vec![(MAIN.to_string(), tables::step_schema())])
    }

    fn check(&self, cx: &CheckCx) -> Result<()> {
        let loss = |role: &str| cx.producer_is(role, "loss");
        super::want(
            cx,
            "grads",
            loss("grads") && cx.port("grads") == MAIN,
            "a `loss` node",
        )?;
        let same = cx.producer_index("stats") == cx.producer_index("grads");
        super::want(
            cx,
            "stats",
            loss("stats") && cx.port("stats") == STATS && same,
            "the same loss node's `stats` port, as `<loss>.stats`",
        )
    }

    fn training(&self, cx: &CheckCx) -> Result<Option<Training>> {
        analysis::analyse(cx).map(Some)
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let g = cx.graph;
        let t = g
            .training
            .as_ref()
            .ok_or_else(|| Error::invariant("an update node outside a training graph"))?;
        let taped = g
            .inputs(t.loss)
            .iter()
            .map(|e| g.nodes()[e.node].id.clone())
            .collect();
        let models = t
            .trained
            .iter()
            .filter_map(|m| {
                let model = g.models.get(m)?;
                Some((
                    m.clone(),
                    (model.common().lr_scale, model.role() == Role::Corrector),
                ))
            })
            .collect();
        let procrustes = match g.nodes()[t.loss].kind.training_loss().map(|l| l.corrector) {
            Some(freshen_operators::loss::CorrectorLoss::Procrustes { decay }) => Some(decay),
            _ => None,
        };
        Ok(Planned::operator(UpdateOp {
            spec: self.clone(),
            plan: UpdatePlan {
                taped,
                models,
                steps: cx.steps,
                procrustes,
            },
        }))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// What `update` needs beyond its settings.
#[derive(Clone)]
struct UpdatePlan {
    /// Nodes whose forwards are on the tape.
    taped: Vec<String>,
    /// Models that train, with their `lr_scale`, and whether each is a corrector.
    models: BTreeMap<String, (f64, bool)>,
    /// Steps of the run.
    steps: usize,
    /// With the corrector's Procrustes objective, the decay of its cross-covariance: the
    /// correctors are then set in closed form, not stepped.
    procrustes: Option<f64>,
}

/// An update node at run time.
struct UpdateOp {
    spec: Update,
    plan: UpdatePlan,
}

impl Operator for UpdateOp {
    /// Port main: one metrics row per step (worker 0); the step's ticks start the
    /// training loop's "step done" stream.
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let (rows, ticks) = apply::update(cx, self.spec.clone(), self.plan.clone())?;
        cx.assembly.ticks = Some(ticks);
        Ok(vec![(MAIN.to_string(), rows)])
    }
}
