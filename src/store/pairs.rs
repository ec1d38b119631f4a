//! Training pairs: the qrels of a split joined with the query texts, cut into one batch per
//! training step.
//!
//! Each query with at least one relevant document (grade > 0) is one training example: its
//! text, the positive it trains on and every relevant id (which `sample` never returns as
//! a negative). A query with several positives trains on each in turn, one per epoch.
//! Steps walk through the examples in epochs; with `shuffle`, every epoch has its own
//! seeded order, so a seed gives the same batches on every machine.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, AsArray};
use arrow::array::{ArrayRef, ListBuilder, RecordBatch, StringArray, StringBuilder};
use arrow::datatypes::Int32Type;
use freshen_operators::hashing::hash64_seeded;
use freshen_operators::random::SplitMix64;

use crate::error::{Error, Result};
use crate::store::batch;
use crate::store::beir::{Dataset, Table};
use crate::store::tables::{self, col};

/// One training query.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Query id.
    pub id: String,
    /// Query text.
    pub text: String,
    /// Every relevant corpus id, in qrels order.
    pub positives: Vec<String>,
    /// The answer, for questions (read by [`TrainingPairs::with_answers`]).
    pub answer: Option<String>,
}

/// Every judgement `(query_id, corpus_id, score)` of `split`, in file order.
pub fn judgements(dataset: &Dataset, split: &str) -> Result<Vec<(String, String, i32)>> {
    let mut rows = Vec::new();
    for b in dataset.read(&Table::Qrels(split.to_string()), 65_536)? {
        let b = b?;
        let queries = batch::strings(&b, col::QUERY_ID)?;
        let docs = batch::strings(&b, col::CORPUS_ID)?;
        let scores = b
            .column_by_name(col::SCORE)
            .and_then(|c| c.as_primitive_opt::<Int32Type>())
            .ok_or_else(|| Error::Column {
                column: col::SCORE.to_string(),
                expected: "an int32",
            })?;
        for r in 0..b.num_rows() {
            let (q, d) = (queries.value(r).to_string(), docs.value(r).to_string());
            rows.push((q, d, scores.value(r)));
        }
    }
    Ok(rows)
}

/// The training examples of one split, in query-id order.
#[derive(Debug, Clone)]
pub struct TrainingPairs {
    examples: Vec<Example>,
}

impl TrainingPairs {
    /// Reads the qrels of `split` and the queries of `dataset`.
    pub fn load(dataset: &Dataset, split: &str) -> Result<Self> {
        let mut positives: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (q, c, score) in judgements(dataset, split)? {
            if score > 0 {
                positives.entry(q).or_default().push(c);
            }
        }
        let mut texts: HashMap<String, String> = HashMap::new();
        for b in dataset.read(&Table::Queries, 8192)? {
            let b = b?;
            let ids = batch::strings(&b, col::ID)?;
            let text = batch::strings(&b, col::TEXT)?;
            for r in 0..b.num_rows() {
                if positives.contains_key(ids.value(r)) {
                    texts.insert(ids.value(r).to_string(), text.value(r).to_string());
                }
            }
        }
        let examples = positives
            .into_iter()
            .filter_map(|(id, positives)| {
                texts.remove(&id).map(|text| Example {
                    id,
                    text,
                    positives,
                    answer: None,
                })
            })
            .collect();
        Ok(Self { examples })
    }

    /// The same examples with their answers: the `answer` column of the dataset's
    /// queries (Parquet only). A missing column, or an example without an answer, is an
    /// error naming the queries file.
    pub fn with_answers(mut self, dataset: &Dataset) -> Result<Self> {
        let path = dataset.path(&Table::Queries);
        let mut answers = read_answers(dataset)?;
        for e in &mut self.examples {
            let a = answers.remove(&e.id).filter(|a| !a.trim().is_empty());
            e.answer = Some(a.ok_or_else(|| {
                Error::data(&path, None, format!("query `{}` has no answer", e.id))
            })?);
        }
        Ok(self)
    }

    /// Examples from memory (tests, synthetic data).
    pub fn from_examples(examples: Vec<Example>) -> Self {
        Self { examples }
    }

    /// Number of training queries.
    pub fn len(&self) -> usize {
        self.examples.len()
    }

    /// Whether there is no training query.
    pub fn is_empty(&self) -> bool {
        self.examples.is_empty()
    }

    /// Steps of one epoch at `batch_size` queries per step.
    pub fn steps_per_epoch(&self, batch_size: usize) -> usize {
        self.examples.len().div_ceil(batch_size.max(1))
    }

    /// The batch of `step`: `batch_size` queries taken in order from the epoch's order
    /// (the last batch of an epoch is shorter). Epoch `e` trains each query on its
    /// `e mod n`-th positive.
    pub fn batch(
        &self,
        step: usize,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
    ) -> Vec<(&Example, &str)> {
        let per_epoch = self.steps_per_epoch(batch_size).max(1);
        let (epoch, within) = (step / per_epoch, step % per_epoch);
        let order = self.order(epoch, shuffle, seed);
        order
            .iter()
            .skip(within * batch_size)
            .take(batch_size)
            .map(|&i| {
                let e = &self.examples[i];
                (e, e.positives[epoch % e.positives.len()].as_str())
            })
            .collect()
    }

    /// The example order of `epoch`: a seeded Fisher–Yates shuffle, or id order.
    fn order(&self, epoch: usize, shuffle: bool, seed: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.examples.len()).collect();
        if shuffle {
            let mut rng = SplitMix64::new(hash64_seeded(
                seed,
                format!("pairs/epoch/{epoch}").as_bytes(),
            ));
            for i in (1..order.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                order.swap(i, j);
            }
        }
        order
    }
}

/// A batch of pairs in [`tables::pairs_schema`].
pub fn pairs_batch(rows: &[(&Example, &str)]) -> Result<RecordBatch> {
    let mut positives = ListBuilder::new(StringBuilder::new());
    for (e, _) in rows {
        for p in &e.positives {
            positives.values().append_value(p);
        }
        positives.append(true);
    }
    let positives = positives.finish();
    let field = Arc::new(arrow::datatypes::Field::new(
        "item",
        arrow::datatypes::DataType::Utf8,
        true,
    ));
    let positives = arrow::array::ListArray::new(
        field,
        positives.offsets().clone(),
        positives.values().clone(),
        positives.nulls().cloned(),
    );
    let [id, text] = id_and_text(rows);
    Ok(RecordBatch::try_new(
        tables::pairs_schema(),
        vec![
            id,
            text,
            Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, p)| *p))),
            Arc::new(positives),
        ],
    )?)
}

/// The query ids and texts of `rows`, as the first two columns of a step's batch.
fn id_and_text(rows: &[(&Example, &str)]) -> [ArrayRef; 2] {
    [
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(e, _)| e.id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(e, _)| e.text.as_str()),
        )),
    ]
}

/// Checks that the dataset's queries carry answers; returns the queries file.
pub fn check_answers(dataset: &Dataset) -> Result<std::path::PathBuf> {
    let path = dataset.path(&Table::Queries);
    let (schema, _) = crate::store::parquet_io::read_schema(&path)?;
    if schema.field_with_name(col::ANSWER).is_err() {
        return Err(Error::data(
            &path,
            None,
            "no `answer` column (expected a question set, e.g. from `freshen data rlm`)",
        ));
    }
    Ok(path)
}

/// Every query's answer, by id: the `answer` column of the dataset's queries (Parquet
/// only); a missing column is an error naming the file.
pub fn read_answers(dataset: &Dataset) -> Result<HashMap<String, String>> {
    let path = check_answers(dataset)?;
    let mut answers = HashMap::new();
    for b in crate::store::parquet_io::read_batches(&path, 8192)? {
        let b = b.map_err(|e| Error::data(&path, None, e.to_string()))?;
        let ids = batch::strings(&b, col::ID)?;
        let a = batch::strings(&b, col::ANSWER)?;
        for r in 0..b.num_rows() {
            answers.insert(ids.value(r).to_string(), a.value(r).to_string());
        }
    }
    Ok(answers)
}

/// A batch of questions in [`tables::answers_schema`] (no passage label).
pub fn answers_batch(rows: &[(&Example, &str)]) -> Result<RecordBatch> {
    let [id, text] = id_and_text(rows);
    Ok(RecordBatch::try_new(
        tables::answers_schema(),
        vec![
            id,
            text,
            Arc::new(StringArray::from_iter_values(
                rows.iter()
                    .map(|(e, _)| e.answer.as_deref().unwrap_or_default()),
            )),
        ],
    )?)
}

/// The values of a list-of-strings column, row by row.
pub fn string_lists(b: &RecordBatch, name: &str) -> Result<Vec<Vec<String>>> {
    let list = b
        .column_by_name(name)
        .and_then(|c| c.as_list_opt::<i32>())
        .ok_or_else(|| Error::Column {
            column: name.to_string(),
            expected: "a list",
        })?;
    (0..list.len())
        .map(|r| {
            let v = list.value(r);
            let s = v.as_string_opt::<i32>().ok_or_else(|| Error::Column {
                column: name.to_string(),
                expected: "a list-of-strings",
            })?;
            Ok(s.iter()
                .map(|x| x.unwrap_or_default().to_string())
                .collect())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn examples(n: usize) -> TrainingPairs {
        TrainingPairs::from_examples(
            (0..n)
                .map(|i| Example {
                    id: format!("q{i}"),
                    text: format!("query {i}"),
                    positives: if i == 0 {
                        vec!["a".into(), "b".into()]
                    } else {
                        vec![format!("d{i}")]
                    },
                    answer: None,
                })
                .collect(),
        )
    }

    #[test]
    fn epochs_cover_every_query_once_in_a_seeded_order() {
        let p = examples(10);
        assert_eq!(p.steps_per_epoch(4), 3);
        let ids = |step| -> Vec<String> {
            p.batch(step, 4, true, 7)
                .iter()
                .map(|(e, _)| e.id.clone())
                .collect()
        };
        let mut epoch0: Vec<String> = (0..3).flat_map(ids).collect();
        assert_eq!(epoch0.len(), 10);
        let shuffled = epoch0.clone();
        epoch0.sort();
        epoch0.dedup();
        assert_eq!(epoch0.len(), 10);
        let epoch1: Vec<String> = (3..6).flat_map(ids).collect();
        assert_ne!(shuffled, epoch1, "each epoch has its own order");
        assert_eq!(ids(1), ids(1));
        // The first query cycles through its positives, one per epoch.
        let pos = |step: usize| p.batch(step, 10, false, 0)[0].1.to_string();
        assert_eq!(
            (pos(0), pos(1), pos(2)),
            ("a".into(), "b".into(), "a".into())
        );
        let b = pairs_batch(&p.batch(0, 10, false, 0)).unwrap();
        assert_eq!(b.num_rows(), 10);
        assert_eq!(string_lists(&b, col::POSITIVES).unwrap()[0], vec!["a", "b"]);
    }
}
