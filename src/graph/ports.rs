//! What each operator reads and writes, as Arrow schemas.
//!
//! An edge is valid when the producer's output schema has every column the consumer
//! needs, with a usable type. Checking this before running turns a crash deep inside
//! a dataflow into a one-line error at the `inputs` entry that made the edge.
//!
//! Most operators have one output. `loss` also has a `stats` port (its per-step numbers)
//! and a training `eval` a `steps` port (one row per step); inputs name them `node.port`.

use arrow::datatypes::{DataType, SchemaRef};

use crate::error::Result;
use crate::spec::{LoadedSpec, ModelRef, ModelSpec, OperatorSpec, TableName};
use crate::store::tables::{self, col};

/// The name of a node's main output port.
pub const MAIN: &str = "";
/// The per-step statistics port of `loss`.
pub const STATS: &str = "stats";
/// The per-step metrics port of a training `eval`.
pub const STEPS: &str = "steps";

/// A column a consumer needs: its name and a test of its type, described for messages.
struct Need {
    name: String,
    ok: fn(&DataType) -> bool,
    what: &'static str,
}

fn is_text(t: &DataType) -> bool {
    matches!(t, DataType::Utf8 | DataType::LargeUtf8)
}

fn is_u64(t: &DataType) -> bool {
    matches!(t, DataType::UInt64)
}

fn is_int(t: &DataType) -> bool {
    t.is_integer()
}

fn is_vector(t: &DataType) -> bool {
    matches!(t, DataType::FixedSizeList(f, _) if f.data_type() == &DataType::Float32)
}

fn is_id_list(t: &DataType) -> bool {
    matches!(t, DataType::List(f) if f.data_type() == &DataType::Utf8)
}

fn text(name: &str) -> Need {
    Need {
        name: name.to_string(),
        ok: is_text,
        what: "a string column",
    }
}

fn vector(name: &str) -> Need {
    Need {
        name: name.into(),
        ok: is_vector,
        what: "a fixed-size list of float32, as `encode` writes",
    }
}

fn id_list(name: &str) -> Need {
    Need {
        name: name.into(),
        ok: is_id_list,
        what: "a list of ids",
    }
}

fn step() -> Need {
    Need {
        name: col::STEP.into(),
        ok: is_u64,
        what: "uint64, as `update` writes",
    }
}

fn embeddings() -> Vec<Need> {
    vec![text(col::ID), vector(col::EMBEDDING)]
}

fn qrels() -> Vec<Need> {
    vec![
        text(col::QUERY_ID),
        text(col::CORPUS_ID),
        Need {
            name: col::SCORE.into(),
            ok: is_int,
            what: "an integer relevance grade, as a qrels source writes",
        },
    ]
}

fn rows(fields: &[String]) -> Vec<Need> {
    std::iter::once(col::ID)
        .chain(fields.iter().map(String::as_str))
        .map(text)
        .collect()
}

/// The width of the vectors a model writes, if `model` is an encoder.
pub fn model_dim(spec: &LoadedSpec, model: &ModelRef) -> Option<usize> {
    let m = match model {
        ModelRef::Inline(m) => m,
        ModelRef::Named(name) => spec.pipeline.models.get(name)?,
    };
    match m {
        ModelSpec::Hashed(h) => Some(h.dim),
        // Read from the folder's config.json; a bad folder is reported when it loads.
        ModelSpec::Bert(b) => freshen_operators::encoder::bert::FolderConfig::read(&b.path)
            .ok()
            .map(|f| f.bert.hidden_size),
        ModelSpec::Corrector(_) => None,
    }
}

/// The width of the `embedding` column of `schema`.
fn vector_dim(schema: &SchemaRef) -> Option<usize> {
    match schema.field_with_name(col::EMBEDDING).ok()?.data_type() {
        DataType::FixedSizeList(_, n) => Some(*n as usize),
        _ => None,
    }
}

/// The output ports of node `i`, main port first (none for sinks), given its inputs'
/// `(name as written, schema)`; checks that the inputs give what the node needs.
pub(super) fn output_ports(
    spec: &LoadedSpec,
    i: usize,
    inputs: &[(String, Option<SchemaRef>)],
) -> Result<Vec<(String, SchemaRef)>> {
    let node = &spec.pipeline.nodes[i];
    // What each input (by position) must carry; the last entry applies to later inputs.
    let needs: Vec<Vec<Need>> = match &node.op {
        OperatorSpec::Source(_) | OperatorSpec::Sink(_) => vec![Vec::new()],
        OperatorSpec::Encode(e) if inputs.len() == 2 => vec![
            vec![text(col::CORPUS_ID), id_list(col::NEGATIVES)],
            rows(&e.fields),
        ],
        OperatorSpec::Encode(e) => vec![rows(&e.fields)],
        OperatorSpec::Cache(_) => vec![vec![
            text(col::ID),
            Need {
                name: col::TEXT_HASH.into(),
                ok: is_u64,
                what: "uint64, as `encode` writes",
            },
            vector(col::EMBEDDING),
        ]],
        OperatorSpec::Correct(_) => vec![
            embeddings(),
            vec![text(col::CORPUS_ID), id_list(col::NEGATIVES)],
        ],
        OperatorSpec::Sample(_) => vec![
            embeddings(),
            embeddings(),
            vec![text(col::ID), text(col::CORPUS_ID), id_list(col::POSITIVES)],
        ],
        OperatorSpec::Loss(_) => vec![
            embeddings(),
            embeddings(),
            vec![text(col::ID), text(col::CORPUS_ID), id_list(col::NEGATIVES)],
            vec![text(col::ID), vector(col::EMBEDDING), vector(col::STALE)],
        ],
        OperatorSpec::Update(_) => vec![
            vec![text(col::NODE), text(col::ID), vector(col::GRAD)],
            vec![step()],
        ],
        OperatorSpec::Eval(e) if e.models.is_some() => vec![
            vec![step()],
            rows(&e.fields),
            rows(&e.query_fields),
            qrels(),
            qrels(),
            embeddings(),
        ],
        OperatorSpec::Eval(_) => vec![embeddings(), embeddings(), qrels()],
    };
    for (j, (id, schema)) in inputs.iter().enumerate() {
        let path = format!("{}.inputs.{j}", LoadedSpec::node_path(i));
        let Some(schema) = schema else {
            return Err(spec.error(
                &path,
                Some(&node.id),
                format!(
                    "input `{id}` is a sink and has no output (expected a node that produces rows)"
                ),
            ));
        };
        for need in needs.get(j).or(needs.last()).into_iter().flatten() {
            check_need(spec, &path, &node.id, id, schema, need)?;
        }
    }
    let input_dim = |j: usize| {
        inputs
            .get(j)
            .and_then(|(_, s)| s.as_ref())
            .and_then(vector_dim)
            .unwrap_or(0)
    };
    let main = |s: SchemaRef| vec![(MAIN.to_string(), s)];
    Ok(match &node.op {
        OperatorSpec::Source(s) => main(match s.table {
            TableName::Corpus => tables::corpus_schema(),
            TableName::Queries => tables::queries_schema(),
            TableName::Qrels => tables::qrels_schema(),
            TableName::Pairs => tables::pairs_schema(),
        }),
        OperatorSpec::Encode(e) => {
            let dim = model_dim(spec, &e.model).unwrap_or(0);
            main(tables::embeddings_schema(dim))
        }
        OperatorSpec::Cache(_) => main(tables::embeddings_schema(input_dim(0))),
        OperatorSpec::Correct(_) if inputs.len() == 2 => {
            main(tables::corrected_rows_schema(input_dim(0)))
        }
        OperatorSpec::Correct(_) => main(tables::embeddings_schema(input_dim(0))),
        OperatorSpec::Sample(_) => main(tables::negatives_schema()),
        OperatorSpec::Loss(_) => vec![
            (MAIN.to_string(), tables::grads_schema(input_dim(0))),
            (STATS.to_string(), tables::loss_stats_schema()),
        ],
        OperatorSpec::Update(_) => main(tables::step_schema()),
        OperatorSpec::Eval(e) if e.models.is_some() => vec![
            (MAIN.to_string(), tables::summary_schema(&e.recall_at)),
            (STEPS.to_string(), tables::eval_steps_schema(&e.recall_at)),
        ],
        OperatorSpec::Eval(e) => main(tables::metrics_schema(&e.recall_at)),
        OperatorSpec::Sink(_) => Vec::new(),
    })
}

fn check_need(
    spec: &LoadedSpec,
    path: &str,
    node: &str,
    id: &str,
    schema: &SchemaRef,
    need: &Need,
) -> Result<()> {
    match schema.field_with_name(&need.name) {
        Ok(f) if (need.ok)(f.data_type()) => Ok(()),
        Ok(f) => Err(spec.error(
            path,
            Some(node),
            format!(
                "input `{id}` has column `{}` of type {} (expected {})",
                need.name,
                f.data_type(),
                need.what
            ),
        )),
        Err(_) => {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Err(spec.error(
                path,
                Some(node),
                format!(
                    "input `{id}` lacks column `{}` ({}; it has {})",
                    need.name,
                    need.what,
                    have.join(", ")
                ),
            ))
        }
    }
}
