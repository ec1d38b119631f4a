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
    let needs: Vec<Need> = match &node.op {
        OperatorSpec::Source(_) | OperatorSpec::Sink(_) => Vec::new(),
        OperatorSpec::Encode(e) => std::iter::once(col::ID.to_string())
            .chain(e.fields.iter().cloned())
            .map(|name| Need {
                name,
                ok: is_text,
                what: "a string column",
            })
            .collect(),
        OperatorSpec::Cache(_) => vec![
            Need {
                name: col::ID.into(),
                ok: is_text,
                what: "a string column",
            },
            Need {
                name: col::TEXT_HASH.into(),
                ok: is_u64,
                what: "uint64, as `encode` writes",
            },
            Need {
                name: col::EMBEDDING.into(),
                ok: is_vector,
                what: "a fixed-size list of float32, as `encode` writes",
            },
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
        for need in &needs {
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
    })
}
