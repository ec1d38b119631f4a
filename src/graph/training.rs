//! The checks of a training graph, and what the runtime needs to know about it.
//!
//! A training graph has one `update` node. It trains the models whose outputs its `loss`
//! reads (the query tower, the target tower, the corrector), and every node that uses one
//! of those models must wait, at step `t + 1`, until `update` has finished step `t`: the
//! runtime closes that loop with a feedback edge (drawn dashed by `freshen graph`).

use std::collections::BTreeSet;

use super::{Graph, MAIN, STATS};
use crate::error::Result;
use crate::spec::{LoadedSpec, ModelRef, ModelSpec, OperatorSpec, TableName};

/// What the runtime needs to know about the training in a graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Training {
    /// The `update` node.
    pub update: usize,
    /// The `loss` node it reads.
    pub loss: usize,
    /// The `source` of training pairs (one batch per step).
    pub pairs: usize,
    /// Models the update node trains (named, not frozen).
    pub trained: BTreeSet<String>,
    /// Nodes that use a trained model, hence wait for the previous step's update.
    pub gated: BTreeSet<usize>,
}

/// The model a node uses, if it names one from `models:`.
pub(crate) fn model_of(op: &OperatorSpec) -> Vec<&str> {
    match op {
        OperatorSpec::Encode(e) => match &e.model {
            ModelRef::Named(n) => vec![n.as_str()],
            ModelRef::Inline(_) => Vec::new(),
        },
        OperatorSpec::Correct(c) => vec![c.model.as_str()],
        OperatorSpec::Eval(e) => e
            .models
            .iter()
            .flat_map(|m| {
                [
                    Some(m.query.as_str()),
                    Some(m.target.as_str()),
                    m.corrector.as_deref(),
                ]
            })
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks model references and the kinds of node each training operator reads; returns
/// the training, if the graph has an `update` node.
pub(super) fn check(g: &Graph) -> Result<Option<Training>> {
    let spec = &g.spec;
    for (i, n) in g.nodes().iter().enumerate() {
        check_models(spec, i, n)?;
        check_producers(g, i)?;
    }
    let updates: Vec<usize> = (0..g.nodes().len())
        .filter(|&i| matches!(g.nodes()[i].op, OperatorSpec::Update(_)))
        .collect();
    let losses: Vec<usize> = (0..g.nodes().len())
        .filter(|&i| matches!(g.nodes()[i].op, OperatorSpec::Loss(_)))
        .collect();
    if updates.len() > 1 {
        let i = updates[1];
        return Err(spec.error(
            &LoadedSpec::node_path(i),
            Some(&g.nodes()[i].id),
            format!(
                "a second `update` node (expected one per pipeline; `{}` is the first)",
                g.nodes()[updates[0]].id
            ),
        ));
    }
    if let Some(&l) = losses.iter().find(|&&l| {
        !g.consumers(l)
            .iter()
            .any(|&c| matches!(g.nodes()[c].op, OperatorSpec::Update(_)))
    }) {
        return Err(spec.error(
            &LoadedSpec::node_path(l),
            Some(&g.nodes()[l].id),
            "no `update` node reads this loss (expected an update with inputs: [<loss>, <loss>.stats])",
        ));
    }
    let Some(&update) = updates.first() else {
        return Ok(None);
    };
    let loss = g.inputs(update)[0].node;
    let sample = g.inputs(loss)[2].node;
    let pairs = g.inputs(sample)[2].node;
    let mut trained = BTreeSet::new();
    for e in g.inputs(loss) {
        for name in model_of(&g.nodes()[e.node].op) {
            if !spec.pipeline.models[name].frozen() {
                trained.insert(name.to_string());
            }
        }
    }
    let gated = (0..g.nodes().len())
        .filter(|&i| {
            model_of(&g.nodes()[i].op)
                .iter()
                .any(|m| trained.contains(*m))
        })
        .collect();
    Ok(Some(Training {
        update,
        loss,
        pairs,
        trained,
        gated,
    }))
}

fn check_models(spec: &LoadedSpec, i: usize, n: &crate::spec::NodeSpec) -> Result<()> {
    let path = LoadedSpec::node_path(i);
    let lookup = |key: &str, name: &str, want: &str| -> Result<()> {
        let Some(model) = spec.pipeline.models.get(name) else {
            let known: Vec<&str> = spec.pipeline.models.keys().map(String::as_str).collect();
            return Err(spec.error(
                &format!("{path}.{key}"),
                Some(&n.id),
                format!(
                    "model `{name}` is not among the pipeline's models (expected one of: {})",
                    if known.is_empty() {
                        "none defined".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        };
        let ok = match want {
            "a corrector" => matches!(model, ModelSpec::Corrector(_)),
            _ => !matches!(model, ModelSpec::Corrector(_)),
        };
        if !ok {
            return Err(spec.error(
                &format!("{path}.{key}"),
                Some(&n.id),
                format!(
                    "model `{name}` is of kind `{}` (expected {want})",
                    model.kind()
                ),
            ));
        }
        Ok(())
    };
    match &n.op {
        OperatorSpec::Encode(e) => {
            match &e.model {
                ModelRef::Named(name) => lookup("model", name, "an encoder")?,
                ModelRef::Inline(ModelSpec::Corrector(_)) => return Err(spec.error(
                    &format!("{path}.model"),
                    Some(&n.id),
                    "a corrector cannot embed text (expected an encoder such as {kind: hashed})",
                )),
                ModelRef::Inline(_) => {}
            }
        }
        OperatorSpec::Correct(c) => lookup("model", &c.model, "a corrector")?,
        OperatorSpec::Eval(e) => {
            if let Some(m) = &e.models {
                lookup("models.query", &m.query, "an encoder")?;
                lookup("models.target", &m.target, "an encoder")?;
                if let Some(h) = &m.corrector {
                    lookup("models.corrector", h, "a corrector")?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// What kind of node each input of a training operator must be.
fn check_producers(g: &Graph, i: usize) -> Result<()> {
    let n = &g.nodes()[i];
    let kind = |j: usize| -> (&'static str, Option<TableName>, bool, &str) {
        let e = &g.inputs(i)[j];
        let p = &g.nodes()[e.node];
        let (table, lookup) = match &p.op {
            OperatorSpec::Source(s) => (Some(s.table), false),
            OperatorSpec::Encode(_) | OperatorSpec::Correct(_) => {
                (None, g.inputs(e.node).len() == 2)
            }
            _ => (None, false),
        };
        (p.op.type_name(), table, lookup, e.port.as_str())
    };
    let want = |j: usize, ok: bool, what: &str| -> Result<()> {
        if ok {
            return Ok(());
        }
        Err(g.spec.error(
            &format!("{}.inputs.{j}", LoadedSpec::node_path(i)),
            Some(&n.id),
            format!(
                "input `{}` is a node of type `{}` (expected {what})",
                n.inputs[j],
                g.nodes()[g.inputs(i)[j].node].op.type_name()
            ),
        ))
    };
    let named = |j: usize| {
        let p = g.inputs(i)[j].node;
        matches!(&g.nodes()[p].op, OperatorSpec::Encode(e) if matches!(e.model, ModelRef::Named(_)))
    };
    let inputs = g.inputs(i).len();
    match &n.op {
        OperatorSpec::Encode(_) if inputs == 2 => {
            want(
                0,
                kind(0).0 == "sample",
                "a `sample` node, whose chosen targets it embeds",
            )?;
            want(
                1,
                kind(1).1 == Some(TableName::Corpus),
                "a corpus `source`, where it finds their texts",
            )?;
        }
        OperatorSpec::Correct(_) => {
            want(
                0,
                kind(0).0 == "cache",
                "a `cache` node: the stale embeddings",
            )?;
            if inputs == 2 {
                want(
                    1,
                    kind(1).0 == "sample",
                    "a `sample` node, whose chosen targets it corrects",
                )?;
            }
        }
        OperatorSpec::Sample(_) => {
            want(
                0,
                kind(0).0 == "encode" && named(0),
                "an `encode` node with a model from `models:`: the query tower",
            )?;
            let (t, _, lookup, _) = kind(1);
            want(
                1,
                t == "cache" || (t == "correct" && !lookup),
                "a `cache` or a one-input `correct` node: the cache to search",
            )?;
            want(
                2,
                kind(2).1 == Some(TableName::Pairs),
                "a `source` with `table: pairs`",
            )?;
        }
        OperatorSpec::Loss(_) => {
            want(
                0,
                kind(0).0 == "encode" && named(0) && !kind(0).2,
                "the query tower's `encode` node",
            )?;
            want(
                1,
                kind(1).0 == "encode" && named(1) && kind(1).2,
                "the two-input `encode` node of the chosen targets",
            )?;
            want(2, kind(2).0 == "sample", "the `sample` node")?;
            if inputs == 4 {
                want(
                    3,
                    kind(3).0 == "correct" && kind(3).2,
                    "the two-input `correct` node of the chosen targets",
                )?;
            }
        }
        OperatorSpec::Update(_) => {
            let (t0, _, _, p0) = kind(0);
            let (t1, _, _, p1) = kind(1);
            want(0, t0 == "loss" && p0 == MAIN, "a `loss` node")?;
            want(
                1,
                t1 == "loss" && p1 == STATS && g.inputs(i)[1].node == g.inputs(i)[0].node,
                "the same loss node's `stats` port, as `<loss>.stats`",
            )?;
        }
        OperatorSpec::Eval(e) if e.models.is_some() => {
            want(0, kind(0).0 == "update", "the `update` node")?;
            want(1, kind(1).1 == Some(TableName::Corpus), "a corpus `source`")?;
            want(
                2,
                kind(2).1 == Some(TableName::Queries),
                "a queries `source`",
            )?;
            want(
                3,
                kind(3).1 == Some(TableName::Qrels),
                "a qrels `source` of the dev split",
            )?;
            want(
                4,
                kind(4).1 == Some(TableName::Qrels),
                "a qrels `source` of the test split",
            )?;
            want(
                5,
                kind(5).0 == "cache",
                "the `cache` node: the stale embeddings",
            )?;
        }
        _ => {}
    }
    Ok(())
}
