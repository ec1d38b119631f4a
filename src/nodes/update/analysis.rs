//! The training analysis: what a graph with an `update` node trains, and what each node
//! of the training loop does about it. Computed once, when the graph is checked; every
//! operator reads its decisions from [`Training`].

use std::collections::{BTreeMap, BTreeSet};

use super::Update;
use crate::error::{Error, Result};
use crate::graph::{CheckCx, Resumable, Training};
use crate::models::Role;

/// The training of the graph whose `update` node is `cx`'s.
pub(super) fn analyse(cx: &CheckCx) -> Result<Training> {
    let g = cx.graph;
    let update = cx.node;
    let input = |node: usize, role: &str| {
        g.input(node, role).map(|e| e.node).ok_or_else(|| {
            Error::invariant(format!("node {} lacks input `{role}`", g.nodes()[node].id))
        })
    };
    let loss = input(update, "grads")?;
    let sample = input(loss, "sample")?;
    let pairs = input(sample, "pairs")?;
    let models_of = |i: usize| -> Vec<String> {
        g.nodes()[i]
            .kind
            .references()
            .models
            .into_iter()
            .map(|(_, name, _)| name)
            .collect()
    };
    let mut trained = BTreeSet::new();
    for e in g.inputs(loss) {
        for name in models_of(e.node) {
            if g.models.get(&name).is_some_and(|m| !m.common().frozen) {
                trained.insert(name);
            }
        }
    }
    let gated = (0..g.nodes().len())
        .filter(|&i| models_of(i).iter().any(|m| trained.contains(m)))
        .collect();
    let refresh_every: BTreeMap<usize, usize> = (0..g.nodes().len())
        .filter_map(|i| {
            let every = g.nodes()[i].kind.store()?.refresh_every?;
            Some((i, every))
        })
        .collect();
    let trains = |i: usize, role: Role| g.model_of(i, role).is_some_and(|m| trained.contains(&m));
    let mut recorded = BTreeSet::new();
    for e in g.inputs(loss) {
        let records = match e.role {
            "queries" | "targets" => trains(e.node, Role::Encoder),
            "drift" => {
                let cache = input(e.node, "cache")?;
                trains(e.node, Role::Corrector) && !refresh_every.contains_key(&cache)
            }
            "reader" => trains(e.node, Role::Reader),
            _ => false,
        };
        if records {
            recorded.insert(e.node);
        }
    }
    let corrector_trains = g
        .input(loss, "drift")
        .is_some_and(|e| recorded.contains(&e.node));
    let cadences = cadences(g, &refresh_every, &trains);
    let update_settings = g.nodes()[update]
        .settings::<Update>()
        .ok_or_else(|| Error::invariant("the training analysis of a node that is no update"))?;
    let resumable = Resumable {
        every: update_settings.resume_every,
        minutes: (update_settings.resume_minutes > 0.0).then_some(update_settings.resume_minutes),
        cadences,
    };
    let beta = g.nodes()[loss]
        .kind
        .training_loss()
        .map(|l| l.beta)
        .ok_or_else(|| Error::invariant("an update node that reads no loss"))?;
    Ok(Training {
        update,
        loss,
        pairs,
        trained,
        gated,
        recorded,
        refresh_every,
        corrector_trains,
        beta,
        resumable,
    })
}

/// The cadences a resumable step must fall on ([`Resumable::cadences`]): each refreshing
/// cache's refreshes, and the applications of each trained corrector of a whole cache
/// that does not refresh.
fn cadences(
    g: &crate::graph::Graph,
    refresh_every: &BTreeMap<usize, usize>,
    trains: &dyn Fn(usize, Role) -> bool,
) -> Vec<(usize, usize)> {
    let mut cadences: Vec<(usize, usize)> = refresh_every.values().map(|&e| (0, e)).collect();
    for (i, n) in g.nodes().iter().enumerate() {
        let Some(c) = n.kind.cadence() else {
            continue;
        };
        let cache = g.input(i, "cache").map(|e| e.node);
        let refreshing = cache.is_some_and(|c| refresh_every.contains_key(&c));
        let whole = g.input(i, "sample").is_none();
        if whole && trains(i, Role::Corrector) && !refreshing {
            cadences.push((c.warmup, c.apply_every));
        }
    }
    cadences
}
