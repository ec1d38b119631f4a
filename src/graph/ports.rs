//! What each operator reads and writes, as Arrow schemas.
//!
//! An edge is valid when the producer's output schema has every column the consumer
//! needs, with a usable type. Checking this before running turns a crash deep inside
//! a dataflow into a one-line error at the `inputs` entry that made the edge.

use arrow::datatypes::{DataType, SchemaRef};

use crate::error::Result;
use crate::spec::{LoadedSpec, ModelSpec, OperatorSpec, TableName};
use crate::store::tables::{self, col};

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

/// The output schema of node `i`, given its inputs' `(id, schema)`; checks the inputs fit.
pub(super) fn output_schema(
    spec: &LoadedSpec,
    i: usize,
    inputs: &[(String, Option<SchemaRef>)],
) -> Result<Option<SchemaRef>> {
    let node = &spec.pipeline.nodes[i];
    let text = |name: &str| Need {
        name: name.to_string(),
        ok: is_text,
        what: "a string column",
    };
    let vector = || Need {
        name: col::EMBEDDING.into(),
        ok: is_vector,
        what: "a fixed-size list of float32, as `encode` writes",
    };
    // What each input (by position) must carry; the last entry applies to later inputs.
    let needs: Vec<Vec<Need>> = match &node.op {
        OperatorSpec::Source(_) | OperatorSpec::Sink(_) => vec![Vec::new()],
        OperatorSpec::Encode(e) => vec![std::iter::once(col::ID)
            .chain(e.fields.iter().map(String::as_str))
            .map(text)
            .collect()],
        OperatorSpec::Cache(_) => vec![vec![
            text(col::ID),
            Need {
                name: col::TEXT_HASH.into(),
                ok: is_u64,
                what: "uint64, as `encode` writes",
            },
            vector(),
        ]],
        OperatorSpec::Eval(_) => vec![
            vec![text(col::ID), vector()],
            vec![text(col::ID), vector()],
            vec![
                text(col::QUERY_ID),
                text(col::CORPUS_ID),
                Need {
                    name: col::SCORE.into(),
                    ok: is_int,
                    what: "an integer relevance grade, as a qrels source writes",
                },
            ],
        ],
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
            match schema.field_with_name(&need.name) {
                Ok(f) if (need.ok)(f.data_type()) => {}
                Ok(f) => {
                    return Err(spec.error(
                        &path,
                        Some(&node.id),
                        format!(
                            "input `{id}` has column `{}` of type {} (expected {})",
                            need.name,
                            f.data_type(),
                            need.what
                        ),
                    ))
                }
                Err(_) => {
                    let have: Vec<&str> =
                        schema.fields().iter().map(|f| f.name().as_str()).collect();
                    return Err(spec.error(
                        &path,
                        Some(&node.id),
                        format!(
                            "input `{id}` lacks column `{}` ({}; it has {})",
                            need.name,
                            need.what,
                            have.join(", ")
                        ),
                    ));
                }
            }
        }
    }
    Ok(match &node.op {
        OperatorSpec::Source(s) => Some(match s.table {
            TableName::Corpus => tables::corpus_schema(),
            TableName::Queries => tables::queries_schema(),
            TableName::Qrels => tables::qrels_schema(),
        }),
        OperatorSpec::Encode(e) => Some(tables::embeddings_schema(match &e.model {
            ModelSpec::Hashed(h) => h.dim,
        })),
        OperatorSpec::Cache(_) => inputs.first().and_then(|(_, s)| s.clone()),
        OperatorSpec::Sink(_) => None,
        OperatorSpec::Eval(e) => Some(tables::metrics_schema(&e.recall_at)),
    })
}
