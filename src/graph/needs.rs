//! What an input must carry, as Arrow columns: the vocabulary node types describe their
//! inputs in.
//!
//! An edge is valid when the producer's output schema has every column the consumer
//! needs, with a usable type. Checking this before running turns a crash deep inside
//! a dataflow into a one-line error at the `inputs` entry that made the edge.

use arrow::datatypes::{DataType, SchemaRef};

use crate::error::Result;
use crate::store::tables::col;

/// The name of a node's main output port.
pub const MAIN: &str = "";

/// A column a consumer needs: its name and a test of its type, described for messages.
#[derive(Debug, Clone)]
pub struct Need {
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

/// A string column.
pub fn text(name: &str) -> Need {
    Need {
        name: name.to_string(),
        ok: is_text,
        what: "a string column",
    }
}

/// A uint64 column, as `encode` writes (`text_hash`).
pub fn hash(name: &str) -> Need {
    Need {
        name: name.into(),
        ok: is_u64,
        what: "uint64, as `encode` writes",
    }
}

/// A vector column: a fixed-size list of float32.
pub fn vector(name: &str) -> Need {
    Need {
        name: name.into(),
        ok: is_vector,
        what: "a fixed-size list of float32, as `encode` writes",
    }
}

/// A list of ids.
pub fn id_list(name: &str) -> Need {
    Need {
        name: name.into(),
        ok: is_id_list,
        what: "a list of ids",
    }
}

/// The training step, as `update` writes it.
pub fn step() -> Need {
    Need {
        name: col::STEP.into(),
        ok: is_u64,
        what: "uint64, as `update` writes",
    }
}

/// Embeddings: `id` and `embedding`.
pub fn embeddings() -> Vec<Need> {
    vec![text(col::ID), vector(col::EMBEDDING)]
}

/// Relevance judgements: `query_id`, `corpus_id` and an integer `score`.
pub fn qrels() -> Vec<Need> {
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

/// Rows with an `id` and the text columns `fields`.
pub fn rows(fields: &[String]) -> Vec<Need> {
    std::iter::once(col::ID)
        .chain(fields.iter().map(String::as_str))
        .map(text)
        .collect()
}

/// The width of the `embedding` column of `schema`.
pub fn vector_dim(schema: &SchemaRef) -> Option<usize> {
    match schema.field_with_name(col::EMBEDDING).ok()?.data_type() {
        DataType::FixedSizeList(_, n) => Some(*n as usize),
        _ => None,
    }
}

/// Checks that `schema` (of the input written as `id`) has the column `need` describes;
/// the message says what is missing or wrong, for an error at the input.
pub(super) fn check(schema: &SchemaRef, id: &str, need: &Need) -> Result<(), String> {
    match schema.field_with_name(&need.name) {
        Ok(f) if (need.ok)(f.data_type()) => Ok(()),
        Ok(f) => Err(format!(
            "input `{id}` has column `{}` of type {} (expected {})",
            need.name,
            f.data_type(),
            need.what
        )),
        Err(_) => {
            let have: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            Err(format!(
                "input `{id}` lacks column `{}` ({}; it has {})",
                need.name,
                need.what,
                have.join(", ")
            ))
        }
    }
}
