//! The Arrow schemas of the tables freshen reads and writes.
//!
//! Datasets follow the BEIR layout (corpus, queries, qrels per split); these are the
//! normalised in-memory schemas every reader produces, whatever the file format.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// Column names, shared by readers, writers and validation messages.
pub mod col {
    /// Row identifier of a corpus entry or query.
    pub const ID: &str = "id";
    /// Title of a corpus entry (may be empty).
    pub const TITLE: &str = "title";
    /// Text of a corpus entry or query.
    pub const TEXT: &str = "text";
    /// Query id of a relevance judgement.
    pub const QUERY_ID: &str = "query_id";
    /// Corpus id of a relevance judgement.
    pub const CORPUS_ID: &str = "corpus_id";
    /// Relevance grade of a judgement.
    pub const SCORE: &str = "score";
    /// Stable hash of the text an embedding was computed from.
    pub const TEXT_HASH: &str = "text_hash";
    /// The embedding vector.
    pub const EMBEDDING: &str = "embedding";
}

/// Corpus: `id`, `title`, `text`, all UTF-8 (title may be empty, never null).
pub fn corpus_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::TITLE, DataType::Utf8, false),
        Field::new(col::TEXT, DataType::Utf8, false),
    ]))
}

/// Queries: `id`, `text`.
pub fn queries_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::TEXT, DataType::Utf8, false),
    ]))
}

/// Relevance judgements of one split: `query_id`, `corpus_id`, `score` (int32).
pub fn qrels_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::QUERY_ID, DataType::Utf8, false),
        Field::new(col::CORPUS_ID, DataType::Utf8, false),
        Field::new(col::SCORE, DataType::Int32, false),
    ]))
}

/// Embeddings: `id`, `text_hash` (uint64), `embedding` as a fixed-size list of float32.
pub fn embeddings_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::TEXT_HASH, DataType::UInt64, false),
        Field::new(col::EMBEDDING, embedding_type(dim), false),
    ]))
}

/// The Arrow type of an embedding column of width `dim`.
pub fn embedding_type(dim: usize) -> DataType {
    DataType::FixedSizeList(
        Arc::new(Field::new("item", DataType::Float32, false)),
        dim as i32,
    )
}

/// Evaluation metrics, one row per evaluation: `queries`, `recall_at_K` for each cut-off,
/// `mrr_at_10`, `ndcg_at_10` (float64, fractions in [0, 1]).
pub fn metrics_schema(recall_at: &[usize]) -> SchemaRef {
    let mut fields = vec![Field::new("queries", DataType::UInt64, false)];
    fields.extend(
        recall_at
            .iter()
            .map(|k| Field::new(format!("recall_at_{k}"), DataType::Float64, false)),
    );
    fields.push(Field::new("mrr_at_10", DataType::Float64, false));
    fields.push(Field::new("ndcg_at_10", DataType::Float64, false));
    Arc::new(Schema::new(fields))
}

/// A ranking: `query_id`, `rank` (1-based), `corpus_id`, `score`.
pub fn rankings_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::QUERY_ID, DataType::Utf8, false),
        Field::new("rank", DataType::UInt32, false),
        Field::new(col::CORPUS_ID, DataType::Utf8, false),
        Field::new(col::SCORE, DataType::Float32, false),
    ]))
}
