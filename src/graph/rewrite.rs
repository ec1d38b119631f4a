//! `freshen fmt`: a pipeline file rewritten with every node's inputs by role, the rest
//! of the text (comments, order, spacing) left as written.
//!
//! An older pipeline lists a node's inputs by position (`inputs: [queries, corrected,
//! pairs]`); the graph knows each one's role, so the list becomes the map to write
//! (`inputs: {queries: queries, search: corrected, pairs: pairs}`). A one-element list
//! stays: a node with one input may keep it.

use super::Graph;
use crate::error::{Error, Result};
use crate::spec::{Inputs, LoadedSpec};

/// `text` (the file `graph` was loaded from, without `--set`) with every list of more
/// than one input rewritten as a map, and how many nodes changed.
pub fn inputs_by_role(text: &str, graph: &Graph) -> Result<(String, usize)> {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut changed = 0;
    // From the last node up, so the lines of the nodes before stay where they were.
    for (i, node) in graph.nodes().iter().enumerate().rev() {
        let Inputs::Listed(list) = &graph.spec.pipeline.nodes[i].inputs else {
            continue;
        };
        if list.len() < 2 {
            continue;
        }
        let map: Vec<String> = node
            .roles
            .iter()
            .zip(&node.inputs)
            .map(|(r, s)| format!("{r}: {s}"))
            .collect();
        let map = format!("{{{}}}", map.join(", "));
        rewrite_list(&mut lines, &graph.spec, i, list.len(), &map)?;
        changed += 1;
    }
    let mut out = lines.join("\n");
    if text.ends_with('\n') {
        out.push('\n');
    }
    Ok((out, changed))
}

/// Replaces node `i`'s list of `n` inputs by `map`: a flow list `[a, b]` in place; a
/// block list (`- a` lines) moves onto the `inputs:` line, its items' comments kept above.
fn rewrite_list(
    lines: &mut Vec<String>,
    spec: &LoadedSpec,
    i: usize,
    n: usize,
    map: &str,
) -> Result<()> {
    let path = format!("{}.inputs", LoadedSpec::node_path(i));
    let unplaced = || Error::invariant(format!("{path}: the list's place in the file"));
    let at = spec.span_of(&path).ok_or_else(unplaced)?;
    let line = lines.get_mut(at.line - 1).ok_or_else(unplaced)?;
    let from = byte_at(line, at.col).ok_or_else(unplaced)?;
    if line[from..].starts_with('[') {
        let to = line[from..].find(']').ok_or_else(unplaced)? + from;
        line.replace_range(from..=to, map);
        return Ok(());
    }
    let key = spec.key_span_of(&path).ok_or_else(unplaced)?;
    let mut comments = Vec::new();
    let items: Vec<usize> = (0..n)
        .filter_map(|j| spec.span_of(&format!("{path}.{j}")).map(|s| s.line - 1))
        .collect();
    for &l in items.iter().rev() {
        let removed = lines.remove(l);
        if let Some(c) = removed.find(" #") {
            comments.push(removed[c..].trim_start().to_string());
        }
    }
    let key_line = lines.get_mut(key.line - 1).ok_or_else(unplaced)?;
    let indent = " ".repeat(key_line.len() - key_line.trim_start().len());
    let end = key_line.find(':').ok_or_else(unplaced)? + 1;
    key_line.replace_range(end.., &format!(" {map}"));
    for c in comments {
        lines.insert(key.line, format!("{indent}{c}"));
    }
    Ok(())
}

/// The byte offset of 1-based character column `col` in `line`.
fn byte_at(line: &str, col: usize) -> Option<usize> {
    line.char_indices()
        .map(|(b, _)| b)
        .chain(std::iter::once(line.len()))
        .nth(col - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PIPELINE: &str = "
inputs: {d: {path: data/wordnet-sample}}
models:
  f: {kind: hashed, dim: 8}
nodes:
  - {id: corpus, type: source, dataset: d}
  - id: embed   # the corpus, embedded
    type: encode
    inputs: [corpus]
    model: f
  - id: queries
    type: source
    dataset: d
    table: queries
  - id: embed_queries
    type: encode
    inputs: [queries]
    model: f
  - id: judgements
    type: source
    dataset: d
    table: qrels
    split: test
  - id: evaluate
    type: eval
    # queries, targets, judgements
    inputs: [embed_queries, embed, judgements]   # by position
  - id: write
    type: sink
    inputs:
      - evaluate   # the metrics
    output: metrics
outputs: {metrics: {path: /tmp/freshen-fmt-test.parquet}}
";

    fn graph(text: &str) -> Graph {
        let spec = LoadedSpec::from_str("p.yaml".as_ref(), text, &[]).unwrap();
        Graph::build(spec, crate::nodes::KINDS).unwrap()
    }

    #[test]
    fn a_list_becomes_the_map_of_its_roles_and_the_comments_stay() {
        let g = graph(PIPELINE);
        assert_eq!(g.warnings.len(), 1, "{:?}", g.warnings);
        assert!(
            g.warnings[0].contains(
                "node evaluate: inputs by position; write them by role: `inputs: {queries: embed_queries, targets: embed, judgements: judgements}`"
            ),
            "{}",
            g.warnings[0]
        );
        let (out, changed) = inputs_by_role(PIPELINE, &g).unwrap();
        assert_eq!(changed, 1);
        assert!(out.contains(
            "    # queries, targets, judgements\n    inputs: {queries: embed_queries, targets: embed, judgements: judgements}   # by position\n"
        ), "{out}");
        assert!(out.contains("  - id: embed   # the corpus, embedded\n"));
        assert!(
            out.contains("    inputs:\n      - evaluate   # the metrics\n"),
            "one input stays a list"
        );
        // The rewritten file loads to the same graph, with nothing left to warn about.
        let again = graph(&out);
        assert!(again.warnings.is_empty(), "{:?}", again.warnings);
        for (a, b) in g.nodes().iter().zip(again.nodes()) {
            assert_eq!((&a.inputs, &a.roles), (&b.inputs, &b.roles));
        }
        assert_eq!(inputs_by_role(&out, &again).unwrap().1, 0);
    }

    #[test]
    fn a_block_list_moves_onto_the_inputs_line() {
        let text = PIPELINE.replace(
            "    inputs: [embed_queries, embed, judgements]   # by position\n",
            "    inputs:\n      - embed_queries  # the questions\n      - embed\n      - judgements\n",
        );
        let (out, changed) = inputs_by_role(&text, &graph(&text)).unwrap();
        assert_eq!(changed, 1);
        assert!(out.contains(
            "    inputs: {queries: embed_queries, targets: embed, judgements: judgements}\n    # the questions\n  - id: write"
        ), "{out}");
        assert!(graph(&out).warnings.is_empty());
    }

    /// `text` with every flow map of inputs (`inputs: {queries: q, search: c}`) written
    /// as the list an older pipeline had (`inputs: [q, c]`), comments kept, and how many
    /// changed. The shipped pipelines write their roles in role order, so a wrong
    /// reading of a list shows as a different graph.
    fn by_position(text: &str) -> (String, usize) {
        let mut changed = 0;
        let lines: Vec<String> = text
            .lines()
            .map(|line| {
                let Some(at) = line.find("inputs: {") else {
                    return line.to_string();
                };
                let from = at + "inputs: ".len();
                let to = from + line[from..].find('}').expect("one-line map");
                let values: Vec<&str> = line[from + 1..to]
                    .split(',')
                    .map(|kv| kv.split_once(':').expect("role: input").1.trim())
                    .collect();
                changed += 1;
                format!(
                    "{}[{}]{}",
                    &line[..from],
                    values.join(", "),
                    &line[to + 1..]
                )
            })
            .collect();
        (lines.join("\n") + "\n", changed)
    }

    /// Ids, types, inputs with their roles and producers, and settings: what must not
    /// change between two ways of writing a pipeline.
    fn shape(g: &Graph) -> Vec<String> {
        (0..g.nodes().len())
            .map(|i| {
                let n = &g.nodes()[i];
                let edges: Vec<_> = g
                    .inputs(i)
                    .iter()
                    .map(|e| (e.node, &e.port, e.role))
                    .collect();
                let settings = n.kind.settings_json();
                format!(
                    "{} {} {:?} {:?} {edges:?} {settings}",
                    n.id,
                    n.kind.type_name(),
                    n.inputs,
                    n.roles
                )
            })
            .collect()
    }

    #[test]
    fn every_shipped_pipeline_reads_the_same_by_position_and_fmt_restores_it() {
        let load = |path: &std::path::Path, text: &str| {
            let spec = LoadedSpec::from_str(path, text, &[]).unwrap();
            Graph::build(spec, crate::nodes::KINDS)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        let mut files: Vec<_> = std::fs::read_dir("pipelines")
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        files.sort();
        assert!(files.len() >= 8, "{files:?}");
        let mut lists = 0;
        for path in &files {
            let text = std::fs::read_to_string(path).unwrap();
            let named = load(path, &text);
            assert!(
                named.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                named.warnings
            );
            let (old, n) = by_position(&text);
            let listed = load(path, &old);
            assert_eq!(
                listed.warnings.len(),
                n,
                "{}: one warning a list",
                path.display()
            );
            assert_eq!(shape(&listed), shape(&named), "{}", path.display());
            // `freshen fmt` on the old form: no warning left, the same graph, every
            // comment kept.
            let (new, changed) = inputs_by_role(&old, &listed).unwrap();
            assert_eq!(changed, n, "{}", path.display());
            let formatted = load(path, &new);
            // What `freshen check` runs after the graph: the files, read whole (where
            // they are shipped: `rlm.yaml`'s dataset is made by `freshen data rlm`).
            let inputs = &formatted.spec.pipeline.inputs;
            if inputs
                .values()
                .all(|i| std::path::Path::new(&i.path).exists())
            {
                formatted
                    .check_files(true)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            }
            assert!(
                formatted.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                formatted.warnings
            );
            assert_eq!(shape(&formatted), shape(&named), "{}", path.display());
            for comment in old.lines().filter_map(|l| l.find('#').map(|at| &l[at..])) {
                assert!(new.contains(comment), "{}: lost {comment}", path.display());
            }
            lists += n;
        }
        assert!(
            lists >= 20,
            "only {lists} inputs written by name in the shipped pipelines"
        );
    }
}
