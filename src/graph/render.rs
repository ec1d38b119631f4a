//! Drawing the graph: Mermaid (renders on GitHub and in most Markdown viewers) and DOT.

use super::Graph;

fn label(g: &Graph, i: usize) -> String {
    let n = &g.nodes()[i];
    format!("{}\\n({})", n.id, n.kind.type_name())
}

fn edge_label(g: &Graph, edge: &super::Edge) -> String {
    let cols = g
        .schema(edge)
        .map(|s| {
            s.fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let from = match edge.port.is_empty() {
        true => cols,
        false => format!("{}: {cols}", edge.port),
    };
    match edge.role {
        "" => from,
        role => format!("{role} ← {from}"),
    }
}

/// `(update node, gated node)` pairs: the feedback edges that carry "step t is done".
fn feedback(g: &Graph) -> Vec<(usize, usize)> {
    g.training
        .iter()
        .flat_map(|t| t.gated.iter().map(move |&n| (t.update, n)))
        .collect()
}

/// The graph as a Mermaid flowchart; each edge is labelled with the role its reader
/// gives it and the columns it carries (`search ← id, text_hash, embedding`).
pub fn to_mermaid(g: &Graph) -> String {
    let mut s = String::from("flowchart LR\n");
    for &i in &g.order {
        let n = &g.nodes()[i];
        s.push_str(&format!(
            "    {}[\"{}<br/>({})\"]\n",
            mermaid_id(&n.id),
            n.id,
            n.kind.type_name()
        ));
    }
    for &i in &g.order {
        for e in g.inputs(i) {
            s.push_str(&format!(
                "    {} -->|{}| {}\n",
                mermaid_id(&g.nodes()[e.node].id),
                edge_label(g, e),
                mermaid_id(&g.nodes()[i].id)
            ));
        }
    }
    for (u, n) in feedback(g) {
        s.push_str(&format!(
            "    {} -.->|step t done| {}\n",
            mermaid_id(&g.nodes()[u].id),
            mermaid_id(&g.nodes()[n].id)
        ));
    }
    s
}

fn mermaid_id(id: &str) -> String {
    id.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The graph in Graphviz DOT; edges are labelled as in [`to_mermaid`].
pub fn to_dot(g: &Graph) -> String {
    let mut s = String::from("digraph pipeline {\n    rankdir=LR;\n    node [shape=box];\n");
    for &i in &g.order {
        s.push_str(&format!(
            "    \"{}\" [label=\"{}\"];\n",
            g.nodes()[i].id,
            label(g, i)
        ));
    }
    for &i in &g.order {
        for e in g.inputs(i) {
            s.push_str(&format!(
                "    \"{}\" -> \"{}\" [label=\"{}\"];\n",
                g.nodes()[e.node].id,
                g.nodes()[i].id,
                edge_label(g, e)
            ));
        }
    }
    for (u, n) in feedback(g) {
        s.push_str(&format!(
            "    \"{}\" -> \"{}\" [label=\"step t done\", style=dashed];\n",
            g.nodes()[u].id,
            g.nodes()[n].id
        ));
    }
    s.push_str("}\n");
    s
}
