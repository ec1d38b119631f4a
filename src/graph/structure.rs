//! The checks every graph gets, whatever its node types: ids, edges and arity, what the
//! nodes name, cycles, the columns of every edge, and the training analysis.

use std::collections::{BTreeMap, HashMap};

use arrow::datatypes::SchemaRef;

use super::kind::{CheckCx, ParseCx, Registry};
use super::needs::{self, MAIN};
use super::{Edge, Graph, GraphNode, Training};
use crate::error::Result;
use crate::models::{self, Model};
use crate::spec::{Inputs, LoadedSpec};

/// Reads every model of `models:`.
pub(super) fn parse_models(spec: &LoadedSpec) -> Result<BTreeMap<String, Model>> {
    spec.pipeline
        .models
        .iter()
        .map(|(name, value)| {
            let m = models::parse(spec, &format!("models.{name}"), None, value)?;
            Ok((name.clone(), m))
        })
        .collect()
}

/// Reads every node's settings by its type.
pub(super) fn parse_nodes(spec: &LoadedSpec, registry: &Registry) -> Result<Vec<GraphNode>> {
    let types = || {
        registry
            .iter()
            .map(|e| e.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut nodes = Vec::with_capacity(spec.pipeline.nodes.len());
    for (i, n) in spec.pipeline.nodes.iter().enumerate() {
        let path = LoadedSpec::node_path(i);
        if n.type_name.is_empty() {
            return Err(spec.error(
                &path,
                Some(&n.id),
                format!("missing key `type` (expected one of {})", types()),
            ));
        }
        let Some(entry) = registry.iter().find(|e| e.name == n.type_name) else {
            return Err(spec.error(
                &format!("{path}.type"),
                Some(&n.id),
                format!(
                    "unknown operator type `{}` (expected one of {})",
                    n.type_name,
                    types()
                ),
            ));
        };
        let cx = ParseCx {
            spec,
            index: i,
            id: &n.id,
        };
        nodes.push(GraphNode {
            id: n.id.clone(),
            inputs: Vec::new(),
            roles: Vec::new(),
            keys: Vec::new(),
            kind: (entry.parse)(&cx, n.settings.clone())?,
        });
    }
    Ok(nodes)
}

/// The index of each id; a repeated id is an error at its second definition.
pub(super) fn check_ids(spec: &LoadedSpec, nodes: &[GraphNode]) -> Result<HashMap<String, usize>> {
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
    Ok(index)
}

/// Each node's inputs as edges, and each node's readers.
pub(super) struct Wiring {
    /// Per node, its inputs.
    pub edges: Vec<Vec<Edge>>,
    /// Per node, the nodes that read it.
    pub consumers: Vec<Vec<usize>>,
}

/// Each node's inputs resolved to edges (arity checked first), and each node's readers.
pub(super) fn edges(
    spec: &LoadedSpec,
    nodes: &[GraphNode],
    index: &HashMap<String, usize>,
) -> Result<Wiring> {
    let mut consumers = vec![Vec::new(); nodes.len()];
    let mut edges = vec![Vec::new(); nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        for (j, input) in n.inputs.iter().enumerate() {
            let Some(mut edge) = resolve(index, input) else {
                let known: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
                return Err(spec.error(
                    &format!("{}.inputs.{}", LoadedSpec::node_path(i), n.keys[j]),
                    Some(&n.id),
                    format!(
                        "input `{input}` names no node (expected one of {})",
                        known.join(", ")
                    ),
                ));
            };
            edge.role = n.roles[j];
            consumers[edge.node].push(i);
            edges[i].push(edge);
        }
    }
    Ok(Wiring { edges, consumers })
}

/// `id` or `id.port`: the node a written input names, with its port.
fn resolve(index: &HashMap<String, usize>, input: &str) -> Option<Edge> {
    if let Some(&node) = index.get(input) {
        return Some(Edge {
            node,
            port: MAIN.to_string(),
            role: "",
        });
    }
    let (id, port) = input.rsplit_once('.')?;
    index.get(id).map(|&node| Edge {
        node,
        port: port.to_string(),
        role: "",
    })
}

/// Each node's inputs put in its type's role order, with their roles: a map is checked
/// against the roles, a list (older pipelines) read by position. Returns a warning line
/// per node whose list has more than one input, giving the map to write instead.
pub(super) fn assign_roles(
    spec: &LoadedSpec,
    nodes: &mut [GraphNode],
    index: &HashMap<String, usize>,
) -> Result<Vec<String>> {
    let types: Vec<&'static str> = nodes.iter().map(|n| n.kind.type_name()).collect();
    let mut warnings = Vec::new();
    for (i, n) in nodes.iter_mut().enumerate() {
        let written: Vec<(String, String, String)> = match &spec.pipeline.nodes[i].inputs {
            Inputs::Named(pairs) => named(spec, i, n, pairs)?,
            Inputs::Listed(list) => {
                let of = |input: &String| resolve(index, input).map_or("?", |e| types[e.node]);
                let producers: Vec<&str> = list.iter().map(of).collect();
                let Some(roles) = n.kind.positional(&producers) else {
                    return Err(arity_error(spec, i, n, list.len()));
                };
                let pairs: Vec<(String, String, String)> = roles
                    .iter()
                    .zip(list)
                    .enumerate()
                    .map(|(j, (r, src))| (r.to_string(), src.clone(), j.to_string()))
                    .collect();
                if list.len() > 1 {
                    warnings.push(positional_warning(spec, i, n, &pairs));
                }
                pairs
            }
        };
        for role in n.kind.roles() {
            if let Some((_, src, key)) = written.iter().find(|(r, ..)| r == role.name) {
                n.inputs.push(src.clone());
                n.roles.push(role.name);
                n.keys.push(key.clone());
            }
        }
    }
    Ok(warnings)
}

/// A map of inputs checked against the node's roles: each role known, each required one
/// given. Returns `(role, source, key)` in the order written.
fn named(
    spec: &LoadedSpec,
    i: usize,
    n: &GraphNode,
    pairs: &[(String, String)],
) -> Result<Vec<(String, String, String)>> {
    let path = LoadedSpec::node_path(i);
    let roles = n.kind.roles();
    let names = || {
        let written = roles.iter().filter(|r| r.implied.is_none());
        written.map(|r| r.name).collect::<Vec<_>>().join(", ")
    };
    for (role, _) in pairs {
        if let Some((from, port)) = roles
            .iter()
            .find(|r| r.name == role)
            .and_then(|r| r.implied)
        {
            return Err(spec.error(
                &format!("{path}.inputs.{role}"),
                Some(&n.id),
                format!("input `{role}` is wired by freshen: the `{port}` port of input `{from}` (expected it left out)"),
            ));
        }
        if !roles.iter().any(|r| r.name == role) {
            let expected = match roles.is_empty() {
                true => "none: it reads no node".to_string(),
                false => format!("one of: {}", names()),
            };
            return Err(spec.error(
                &format!("{path}.inputs.{role}"),
                Some(&n.id),
                format!(
                    "`{}` has no input `{role}` (expected {expected})",
                    n.kind.type_name()
                ),
            ));
        }
    }
    if let Some(missing) = roles
        .iter()
        .find(|r| r.required && !pairs.iter().any(|(p, _)| p == r.name))
    {
        let at = match pairs.is_empty() {
            true => path.clone(),
            false => format!("{path}.inputs"),
        };
        return Err(spec.error(
            &at,
            Some(&n.id),
            format!("missing input `{}`: {}", missing.name, missing.about),
        ));
    }
    Ok(pairs
        .iter()
        .map(|(r, s)| (r.clone(), s.clone(), r.clone()))
        .collect())
}

/// Adds the inputs freshen wires itself ([`InputRole::implied`]) once every node's ports
/// are known: each implied role not written, whose `from` input's node has the port.
pub(super) fn implied_edges(g: &mut Graph) {
    for i in 0..g.nodes.len() {
        for role in g.nodes[i].kind.roles() {
            let Some((from, port)) = role.implied else {
                continue;
            };
            let Some(producer) = g.input(i, from).map(|e| e.node) else {
                continue;
            };
            if g.nodes[i].roles.contains(&role.name)
                || !g.ports[producer].iter().any(|(p, _)| p == port)
            {
                continue;
            }
            let source = format!("{}.{port}", g.nodes[producer].id);
            let n = &mut g.nodes[i];
            n.inputs.push(source);
            n.roles.push(role.name);
            n.keys.push(role.name.to_string());
            g.edges[i].push(Edge {
                node: producer,
                port: port.to_string(),
                role: role.name,
            });
            g.consumers[producer].push(i);
        }
    }
}

/// The error of a positional list that no reading of the node's roles fits.
fn arity_error(spec: &LoadedSpec, i: usize, n: &GraphNode, found: usize) -> crate::Error {
    let roles = n.kind.roles();
    let list = |required: bool| {
        roles
            .iter()
            .filter(|r| r.required == required && r.implied.is_none())
            .map(|r| r.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (needed, optional) = (list(true), list(false));
    let mut want = match roles.is_empty() {
        true => "no inputs".to_string(),
        false => format!("inputs {needed}"),
    };
    if !optional.is_empty() {
        want.push_str(&format!(" (and optionally {optional})"));
    }
    let path = match found {
        0 => LoadedSpec::node_path(i),
        _ => format!("{}.inputs", LoadedSpec::node_path(i)),
    };
    spec.error(
        &path,
        Some(&n.id),
        format!("`{}` takes {want} (found {found})", n.kind.type_name()),
    )
}

/// The warning for a list of inputs: the map to write instead.
fn positional_warning(
    spec: &LoadedSpec,
    i: usize,
    n: &GraphNode,
    pairs: &[(String, String, String)],
) -> String {
    let map: Vec<String> = pairs.iter().map(|(r, s, _)| format!("{r}: {s}")).collect();
    let file = spec.file.display();
    spec.error(
        &format!("{}.inputs", LoadedSpec::node_path(i)),
        Some(&n.id),
        format!(
            "inputs by position; write them by role: `inputs: {{{}}}` (`freshen fmt {file}` rewrites the file)",
            map.join(", ")
        ),
    )
    .to_string()
}

/// Every dataset and output a node names exists, and every output has one writer.
pub(super) fn check_references(spec: &LoadedSpec, nodes: &[GraphNode]) -> Result<()> {
    let p = &spec.pipeline;
    let mut writers: BTreeMap<String, &str> = BTreeMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let path = LoadedSpec::node_path(i);
        let refs = n.kind.references();
        if let Some((key, name)) = &refs.dataset {
            if !p.inputs.contains_key(name) {
                let known: Vec<&str> = p.inputs.keys().map(String::as_str).collect();
                return Err(spec.error(
                    &format!("{path}.{key}"),
                    Some(&n.id),
                    format!(
                        "dataset `{name}` is not among the pipeline's inputs (expected one of: {})",
                        known.join(", ")
                    ),
                ));
            }
        }
        if let Some((key, name)) = &refs.output {
            if !p.outputs.contains_key(name) {
                let known: Vec<&str> = p.outputs.keys().map(String::as_str).collect();
                return Err(spec.error(
                    &format!("{path}.{key}"),
                    Some(&n.id),
                    format!(
                        "output `{name}` is not among the pipeline's outputs (expected one of: {})",
                        known.join(", ")
                    ),
                ));
            }
            if let Some(other) = writers.insert(name.clone(), &n.id) {
                return Err(spec.error(
                    &format!("{path}.{key}"),
                    Some(&n.id),
                    format!("output `{name}` is already written by node `{other}` (expected one sink per output)"),
                ));
            }
        }
    }
    for name in p.outputs.keys() {
        if !writers.contains_key(name) {
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

/// Every model a node names exists and has the role it is used in.
pub(super) fn check_models(g: &Graph, i: usize) -> Result<()> {
    let n = &g.nodes()[i];
    let path = LoadedSpec::node_path(i);
    for (key, name, role) in n.kind.references().models {
        let Some(model) = g.models.get(&name) else {
            let known: Vec<&str> = g.models.keys().map(String::as_str).collect();
            return Err(g.spec.error(
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
        if model.role() != role {
            return Err(g.spec.error(
                &format!("{path}.{key}"),
                Some(&n.id),
                format!(
                    "model `{name}` is of kind `{}` (expected {})",
                    model.kind(),
                    role.expected()
                ),
            ));
        }
    }
    Ok(())
}

/// Kahn's algorithm; a cycle is reported at the first node on it, with the whole loop.
pub(super) fn topological_order(
    spec: &LoadedSpec,
    nodes: &[GraphNode],
    edges: &[Vec<Edge>],
) -> Result<Vec<usize>> {
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

/// The output ports of node `i`, once its inputs' are known: the ports they read exist,
/// carry what the node needs, and the node's type gives its outputs.
pub(super) fn ports(g: &Graph, i: usize) -> Result<Vec<(String, SchemaRef)>> {
    let cx = CheckCx { graph: g, node: i };
    let n = cx.this();
    for (j, edge) in g.inputs(i).iter().enumerate() {
        if g.schema(edge).is_none() && !g.ports[edge.node].is_empty() {
            let have: Vec<&str> = g.ports[edge.node]
                .iter()
                .map(|(p, _)| p.as_str())
                .filter(|p| !p.is_empty())
                .collect();
            return Err(cx.input_error(
                j,
                format!(
                    "`{}` has no port `{}` (expected one of: {})",
                    g.nodes()[edge.node].id,
                    edge.port,
                    if have.is_empty() {
                        "none".to_string()
                    } else {
                        have.join(", ")
                    }
                ),
            ));
        }
    }
    let needs = n.kind.needs(&cx);
    for (j, name) in n.inputs.iter().enumerate() {
        let Some(schema) = cx.input_schema(j) else {
            return Err(cx.input_error(
                j,
                format!(
                    "input `{name}` is a sink and has no output (expected a node that produces rows)"
                ),
            ));
        };
        let role = n.roles[j];
        let need = needs
            .iter()
            .filter(|(r, _)| *r == role)
            .flat_map(|(_, n)| n);
        for need in need {
            needs::check(&schema, name, need).map_err(|m| cx.input_error(j, m))?;
        }
    }
    n.kind.outputs(&cx)
}

/// The training analysis of the one node that trains, if any.
pub(super) fn training(g: &Graph) -> Result<Option<Training>> {
    let mut found: Option<(usize, Training)> = None;
    for i in 0..g.nodes().len() {
        let cx = CheckCx { graph: g, node: i };
        let Some(t) = g.nodes()[i].kind.training(&cx)? else {
            continue;
        };
        if let Some((first, _)) = &found {
            return Err(cx.error(
                "",
                format!(
                    "a second `{}` node (expected one per pipeline; `{}` is the first)",
                    g.nodes()[i].kind.type_name(),
                    g.nodes()[*first].id
                ),
            ));
        }
        found = Some((i, t));
    }
    Ok(found.map(|(_, t)| t))
}
