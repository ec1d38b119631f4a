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
    /// Every relevant corpus id of a training query.
    pub const POSITIVES: &str = "positives";
    /// The chosen negatives of a query.
    pub const NEGATIVES: &str = "negatives";
    /// The answer of a question (the retrieval-augmented model's target).
    pub const ANSWER: &str = "answer";
    /// The scores of the chosen negatives.
    pub const SCORES: &str = "scores";
    /// The score of a query's positive against the searched cache.
    pub const POSITIVE_SCORE: &str = "positive_score";
    /// The stale cache row a corrected row came from.
    pub const STALE: &str = "stale";
    /// The node that computed an embedding row.
    pub const NODE: &str = "node";
    /// The gradient of the loss with respect to an embedding row.
    pub const GRAD: &str = "grad";
    /// The training step.
    pub const STEP: &str = "step";
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

/// Keys of stored embeddings: `id`, `text_hash` (uint64).
pub fn keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::TEXT_HASH, DataType::UInt64, false),
    ]))
}

/// Ids alone (`id`): a request for rows, a set of targets.
pub fn ids_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        col::ID,
        DataType::Utf8,
        false,
    )]))
}

/// String types that cast to Utf8 without loss, as other tools write strings: Utf8,
/// LargeUtf8, Utf8View, dictionary-encoded strings. `Null` is what pandas writes for a
/// column of nothing but `None` (typically an unused title); it reads as all nulls.
pub fn is_string(dt: &DataType) -> bool {
    match dt {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => true,
        DataType::Dictionary(_, values) => is_string(values),
        _ => false,
    }
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

/// The Arrow type of a list of strings (ids).
pub fn id_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
}

/// The Arrow type of a list of float32 (scores).
pub fn score_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Float32, true)))
}

/// Training pairs: `id` (query), `text`, `corpus_id` (the positive trained on) and
/// `positives` (every relevant corpus id of the query, never used as its negatives).
pub fn pairs_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::TEXT, DataType::Utf8, false),
        Field::new(col::CORPUS_ID, DataType::Utf8, false),
        Field::new(col::POSITIVES, id_list_type(), false),
    ]))
}

/// Training questions, one batch per step: `id`, `text`, `answer`; no passage label.
pub fn answers_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::TEXT, DataType::Utf8, false),
        Field::new(col::ANSWER, DataType::Utf8, false),
    ]))
}

/// Chosen negatives, one row per query and step: `step`, `id`, `corpus_id` (its
/// positive), `positive_score`, `negatives` and their `scores` against the searched cache.
pub fn negatives_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::STEP, DataType::UInt64, false),
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::CORPUS_ID, DataType::Utf8, false),
        Field::new(col::POSITIVE_SCORE, DataType::Float32, false),
        Field::new(col::NEGATIVES, id_list_type(), false),
        Field::new(col::SCORES, score_list_type(), false),
    ]))
}

/// Corrected embeddings of touched targets: `id`, `embedding` = h(B[y]) and `stale` = B[y].
pub fn corrected_rows_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::EMBEDDING, embedding_type(dim), false),
        Field::new(col::STALE, embedding_type(dim), false),
    ]))
}

/// Gradients of the loss with respect to embedding rows: `node` (the node that computed
/// the row), `id`, `grad`.
pub fn grads_schema(dim: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::NODE, DataType::Utf8, false),
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(col::GRAD, embedding_type(dim), false),
    ]))
}

/// The loss of one step: `step`, `queries`, `candidates` (query-candidate pairs scored
/// with fresh embeddings), `retriever_loss`, `corrector_loss` (null without a corrector),
/// and the relative `staleness` of the cache and `corrected_staleness` of h(cache) on the
/// touched targets (null without corrected rows).
pub fn loss_stats_schema() -> SchemaRef {
    let f = |name: &str, nullable| Field::new(name, DataType::Float64, nullable);
    Arc::new(Schema::new(vec![
        Field::new(col::STEP, DataType::UInt64, false),
        Field::new("queries", DataType::UInt64, false),
        Field::new("candidates", DataType::UInt64, false),
        f("retriever_loss", false),
        f("corrector_loss", true),
        f("staleness", true),
        f("corrected_staleness", true),
    ]))
}

/// One row per training step, as `update` writes it: the step (the number of updates
/// done, from 1), the loss statistics, the learning rates, gradient norms (before
/// clipping), touched target forwards and seconds. Every column but `step` is nullable:
/// the training evaluation's row of the starting model (step 0) has only dev metrics.
pub fn step_schema() -> SchemaRef {
    let mut fields: Vec<Field> = loss_stats_schema()
        .fields()
        .iter()
        .map(|f| {
            let nullable = f.name() != col::STEP;
            f.as_ref().clone().with_nullable(nullable)
        })
        .collect();
    let f = |name: &str| Field::new(name, DataType::Float64, true);
    fields.extend([
        f("lr"),
        f("corrector_lr"),
        f("grad_norm"),
        f("corrector_grad_norm"),
        Field::new("touched_forwards", DataType::UInt64, true),
        f("seconds"),
        // Tensor copies to the host during the step (with one worker, the step's own).
        Field::new("host_reads", DataType::UInt64, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// One row per training step, as a training `eval` writes it: [`step_schema`] plus, at the
/// steps it evaluated on dev, `dev_recall_at_K`, `dev_mrr_at_10`, `dev_ndcg_at_10`, and
/// with diagnostics the top-k overlap of the stale and corrected caches with the fresh one
/// and the softmax KL(P‖P_stale), KL(P‖P_h) (null elsewhere).
pub fn eval_steps_schema(recall_at: &[usize]) -> SchemaRef {
    let mut fields: Vec<Field> = step_schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let f = |name: String| Field::new(name, DataType::Float64, true);
    fields.extend(recall_at.iter().map(|k| f(format!("dev_recall_at_{k}"))));
    fields.extend(
        [
            "dev_mrr_at_10",
            "dev_ndcg_at_10",
            "overlap_stale",
            "overlap_corrected",
            "kl_stale",
            "kl_corrected",
            "dev_exact_match",
            "dev_answer_nll",
        ]
        .map(|n| f(n.to_string())),
    );
    Arc::new(Schema::new(fields))
}

/// A list of uint64, one per worker or process.
fn u64_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt64, true)))
}

/// The ledger's reasons for a target-encoder forward pass: the starting cache, full
/// refreshes, the targets a step touches, the corrector's training subset, evaluation.
pub const LEDGER_REASONS: [&str; 5] = ["initial", "refresh", "touched", "subset", "eval"];

/// The reasons that re-embed targets every step (the totals "without touched targets"
/// leave them out).
pub const PER_STEP_REASONS: [&str; 2] = ["touched", "subset"];

/// The summary of a training run, one row: the steps and the best (dev-selected) step,
/// test metrics at that step with the corpus re-embedded (`test_*`) and against the
/// corrected cache with no re-embedding (`corrected_*`, null without a corrector), the
/// best dev value, the ledger of target-encoder forwards and seconds by reason with totals
/// with and without the touched targets, the wall seconds, the memory held per worker
/// and process, and the settings as JSON.
pub fn summary_schema(recall_at: &[usize]) -> SchemaRef {
    let mut fields = vec![
        Field::new("run", DataType::Utf8, false),
        Field::new("steps", DataType::UInt64, false),
        Field::new("best_step", DataType::UInt64, false),
        Field::new("select_by", DataType::Utf8, false),
        Field::new("best_dev", DataType::Float64, false),
        Field::new("test_queries", DataType::UInt64, false),
    ];
    for prefix in ["test", "corrected"] {
        let nullable = prefix == "corrected";
        for k in recall_at {
            fields.push(Field::new(
                format!("{prefix}_recall_at_{k}"),
                DataType::Float64,
                nullable,
            ));
        }
        fields.push(Field::new(
            format!("{prefix}_mrr_at_10"),
            DataType::Float64,
            nullable,
        ));
        fields.push(Field::new(
            format!("{prefix}_ndcg_at_10"),
            DataType::Float64,
            nullable,
        ));
    }
    // The answer metrics of a retrieval-augmented model (null without a reader).
    for name in ["test_exact_match", "test_answer_nll"] {
        fields.push(Field::new(name, DataType::Float64, true));
    }
    for reason in LEDGER_REASONS {
        fields.push(Field::new(
            format!("forwards_{reason}"),
            DataType::UInt64,
            false,
        ));
        fields.push(Field::new(
            format!("seconds_{reason}"),
            DataType::Float64,
            false,
        ));
    }
    fields.extend([
        Field::new("candidates", DataType::UInt64, false),
        Field::new("forwards_total", DataType::UInt64, false),
        Field::new("forwards_without_touched", DataType::UInt64, false),
        Field::new("seconds", DataType::Float64, false),
        // Steps whose update `on_nonfinite: skip` skipped.
        Field::new("skipped_steps", DataType::UInt64, false),
        // Memory: the timely workers over all processes; per worker the rows of its
        // largest sharded table (about N/W) and the bytes of everything it holds in
        // tables (shards, and on worker 0 the evaluation's whole corpus and cache); per
        // process its peak resident bytes.
        Field::new("workers", DataType::UInt64, false),
        Field::new("shard_rows", u64_list(), false),
        Field::new("held_bytes", u64_list(), false),
        Field::new("peak_bytes", u64_list(), false),
        Field::new("settings", DataType::Utf8, false),
    ]);
    Arc::new(Schema::new(fields))
}
