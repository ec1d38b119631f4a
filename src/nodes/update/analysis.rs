//! The training analysis: what a graph with an `update` node trains, and what each node
//! of the training loop does about it. Computed once, when the graph is checked; every
//! operator reads its decisions from [`Training`].

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::graph::{CheckCx, Resumable, Training};
use crate::nodes::correct::Correct;
use crate::nodes::encode::Encode;
use crate::nodes::loss::Loss;
use crate::nodes::read::Read;
use crate::nodes::update::Update;

/// The training of the graph whose `update` node is `cx`'s.
pub(super) fn analyse(cx: &CheckCx) -> Result<Training> {
    let g = cx.graph;
    let update = cx.node;
    let input = |node: usize, j: usize| {
        g.inputs(node)
            .get(j)
            .map(|e| e.node)
            .ok_or_else(|| Error::invariant(format!("node {} lacks input {j}", g.nodes()[node].id)))
    };
    let loss = input(update, 0)?;
    let sample = input(loss, 2)?;
    let pairs = input(sample, 2)?;
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
    let mut recorded = BTreeSet::new();
    for (j, e) in g.inputs(loss).iter().enumerate() {
        let n = &g.nodes()[e.node];
        let trains = |name: &str| trained.contains(name);
        let records = match (j, n.settings::<Encode>(), n.settings::<Correct>()) {
            (0 | 1, Some(enc), _) => enc.model_name().is_some_and(trains),
            (3, _, Some(c)) => {
                let cache = input(e.node, 0)?;
                trains(&c.model) && !refresh_every.contains_key(&cache)
            }
            _ => n.settings::<Read>().is_some_and(|r| trains(&r.model)),
        };
        if records {
            recorded.insert(e.node);
        }
    }
    let corrector_trains = g.input(loss, "drift").is_some_and(|e| {
        recorded.contains(&e.node) && g.nodes()[e.node].settings::<Correct>().is_some()
    });
    let mut cadences: Vec<(usize, usize)> = refresh_every.values().map(|&e| (0, e)).collect();
    for (i, n) in g.nodes().iter().enumerate() {
        let Some(c) = n.settings::<Correct>() else {
            continue;
        };
        let cache = g.input(i, "cache").map(|e| e.node);
        let refreshing = cache.is_some_and(|c| refresh_every.contains_key(&c));
        let whole = g.input(i, "sample").is_none();
        if whole && trained.contains(&c.model) && !refreshing {
            cadences.push((c.warmup, c.apply_every));
        }
    }
    let update_settings = g.nodes()[update]
        .settings::<Update>()
        .ok_or_else(|| Error::invariant("the training analysis of a node that is no update"))?;
    let resumable = Resumable {
        every: update_settings.resume_every,
        minutes: (update_settings.resume_minutes > 0.0).then_some(update_settings.resume_minutes),
        cadences,
    };
    let beta = g.nodes()[loss]
        .settings::<Loss>()
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
