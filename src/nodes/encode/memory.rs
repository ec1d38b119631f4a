//! What an `encode` node states to the memory estimate (`graph::memory`): a model written
//! in the node (its weights, loading it, an inference batch), and in training the tape of
//! each step's forwards.

use crate::graph::{CheckCx, Cost, Per, Phase};
use crate::models::Model;
use crate::spec::LoadedSpec;

/// A model of the node alone: its weights, its weight file while it loads, an inference
/// batch (models of `models:` are counted once, with the graph's).
pub(super) fn inline(cx: &CheckCx, m: &Model) -> Vec<Cost> {
    let Some(f) = m.footprint(0) else {
        return Vec::new();
    };
    let at = Some(format!("{}.model", LoadedSpec::node_path(cx.node)));
    let cost = |what: &str, bytes: f64, per: Per, phase: Phase| Cost {
        what: format!("node {}: {what}", cx.this().id),
        bytes,
        at: at.clone(),
        per,
        phase,
    };
    [
        cost("its model's weights", f.weights, Per::Worker, Phase::Run),
        cost(
            "loading its model, the weight file read whole",
            f.load,
            Per::Leader,
            Phase::Run,
        ),
        cost("an inference batch", f.encode, Per::Worker, Phase::Encode),
    ]
    .into_iter()
    .filter(|c| c.bytes > 0.0)
    .collect()
}

/// In training, the tape of a step's forwards of model `name`: the texts a step embeds
/// (a query tower its queries; a target tower the positive and negatives of each, or the
/// retrieved passages), of the mean length of their table's first rows.
pub(super) fn tape(cx: &CheckCx, name: &str, fields: &[String]) -> Option<Cost> {
    let training = cx.graph.training.as_ref()?;
    if !training.trains(name) || !training.records(cx.node) {
        return None;
    }
    let (texts, at, texts_from) = texts_per_step(cx)?;
    let source_cx = CheckCx {
        graph: cx.graph,
        node: texts_from,
    };
    let bytes = source_cx
        .this()
        .kind
        .data_source()?
        .text_bytes(&source_cx, fields)?;
    Some(Cost {
        what: format!(
            "node {}: the tape of a step's {texts} texts of about {bytes:.0} bytes",
            cx.this().id
        ),
        bytes: cx.graph.models.get(name)?.tape(texts, bytes),
        at: Some(at),
        per: Per::Worker,
        phase: Phase::Step,
    })
}

/// Texts a step embeds, the setting that sizes them, and the source node of their texts.
fn texts_per_step(cx: &CheckCx) -> Option<(usize, String, usize)> {
    if let Some(rows) = cx.producer_index("rows") {
        let (b, at) = super::super::pairs_per_step(cx.graph, rows)?;
        return Some((b, at, rows));
    }
    let per_query = cx.producer("sample")?.kind.picks()?.per_query();
    // The sample node's `pairs` input: the source of the step's queries.
    let sample_cx = CheckCx {
        graph: cx.graph,
        node: cx.producer_index("sample")?,
    };
    let pairs = sample_cx.producer_index("pairs")?;
    let (b, at) = super::super::pairs_per_step(cx.graph, pairs)?;
    cx.producer("corpus")?.kind.data_source()?;
    Some((b * per_query, at, cx.producer_index("corpus")?))
}
