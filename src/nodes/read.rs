//! `read`: the reader of a retrieval-augmented model on each step's retrieved passages:
//! `log p(a | q, z)` for every question and each of its passages, the forward kept on the
//! tape so that `update` trains the reader through the marginal likelihood that `loss`
//! (`objective: marginal`) computes.
//!
//! Inputs: a `sample` node with `latent: true` (each question's retrieved passages: its
//! `corpus_id` and `negatives`, in that order), the questions (`source` with
//! `table: answers`: the query text and the answer), and the corpus (the passages'
//! texts, fetched from the workers that own them, as the touched `encode` fetches them).
//! The output has one row per question: `id`, and `log_lik`, a vector of the sample's `k`
//! values in the order of its passages (a question with fewer passages pads with the
//! floor `log ε`, which the loss masks out).

use freshen_operators::host::HostRead;
use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use freshen_operators::reader::Example;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::text::joined_rows;
use super::touched::touched_requests;
use super::Settings;
use crate::dataflow::shard::fetch;
use crate::dataflow::{
    rows_of, BatchStream, BuildCx, Operator, StepInputs, Stepwise, TapeEntry, Time,
};
use crate::error::{Error, Result};
use crate::graph::needs::{self, Need};
use crate::graph::{
    CheckCx, Context, InputRole, NodeKind, PlanCx, Planned, References, TableName, MAIN,
};
use crate::models::Role;
use crate::store::batch::{self, Batch};
use crate::store::pairs::string_lists;
use crate::store::tables::{col, embedding_type};

pub use crate::graph::ports::LOG_LIK;

/// Settings of `read`: the reader of a retrieval-augmented model.
///
/// Writes per question `id`, `log_lik`: the reader's log p(a | q, z) of each retrieved
/// passage.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Read {
    /// A reader of the pipeline's `models:`.
    pub model: String,
    /// The corpus columns a passage's text joins. Default `[title, text]`.
    #[serde(default = "default_fields")]
    pub fields: Vec<String>,
    /// What the reader reads: the `retrieved` passages (the default), or the `question`
    /// itself in place of every passage: the no-retrieval baseline, whose marginal
    /// likelihood gives retrieval no gradient.
    #[serde(default)]
    pub context: Context,
}

/// What the `retrieved` input's `sample` node picks per question.
fn picks(cx: &CheckCx) -> Option<crate::graph::Picks> {
    cx.producer("retrieved")?.kind.picks()
}

fn default_fields() -> Vec<String> {
    vec![col::TITLE.to_string(), col::TEXT.to_string()]
}

impl Settings for Read {
    const TYPE: &'static str = "read";
    const ROLES: &'static [InputRole] = ROLES;
}

/// The output's schema for `k` passages per question.
pub fn read_schema(k: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new(col::ID, DataType::Utf8, false),
        Field::new(LOG_LIK, embedding_type(k), false),
    ]))
}

/// Its inputs, by role.
pub(crate) const ROLES: &[InputRole] = &[
    InputRole::required(
        "retrieved",
        "the `sample` node with `latent: true`: the passages retrieved for each question",
    ),
    InputRole::required("answers", "the `source` with `table: answers`"),
    InputRole::required(
        "corpus",
        "the `source` with `table: corpus`: the passages' texts",
    ),
];

impl NodeKind for Read {
    fn type_name(&self) -> &'static str {
        Self::TYPE
    }

    fn roles(&self) -> &'static [InputRole] {
        ROLES
    }

    fn references(&self) -> References {
        References {
            models: vec![("model", self.model.clone(), Role::Reader)],
            ..References::default()
        }
    }

    fn needs(&self, _cx: &CheckCx) -> Vec<(&'static str, Vec<Need>)> {
        vec![
            (
                "retrieved",
                vec![
                    needs::text(col::ID),
                    needs::text(col::CORPUS_ID),
                    needs::id_list(col::NEGATIVES),
                ],
            ),
            (
                "answers",
                vec![
                    needs::text(col::ID),
                    needs::text(col::TEXT),
                    needs::text(col::ANSWER),
                ],
            ),
            ("corpus", needs::rows(&self.fields)),
        ]
    }

    fn outputs(&self, cx: &CheckCx) -> Result<Vec<(String, SchemaRef)>> {
        let k = picks(cx).map_or(1, |p| p.k.max(1));
        Ok(vec![(MAIN.to_string(), read_schema(k))])
    }

    fn check(&self, cx: &CheckCx) -> Result<()> {
        let latent = picks(cx).is_some_and(|p| p.latent);
        super::want(
            cx,
            "retrieved",
            latent,
            "a `sample` node with `latent: true`",
        )?;
        super::want(
            cx,
            "answers",
            cx.producer_reads("answers", TableName::Answers),
            "a `source` with `table: answers`",
        )?;
        super::want(
            cx,
            "corpus",
            cx.producer_reads("corpus", TableName::Corpus),
            "a `source` with `table: corpus`",
        )
    }

    fn plan(&self, cx: &PlanCx) -> Result<Planned> {
        let k = picks(&cx.check()).map_or(1, |p| p.k.max(1));
        let record = cx
            .graph
            .training
            .as_ref()
            .is_some_and(|t| t.records(cx.node));
        Ok(Planned::operator(ReadOp {
            spec: self.clone(),
            k,
            record,
        }))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::json(self)
    }
}

/// A step's inputs, gathered: the retrieved passages' texts, each question's text and
/// answer, and each question's retrieved set (its best passage first).
struct Step {
    passages: HashMap<String, String>,
    questions: HashMap<String, (String, String)>,
    ids: Vec<String>,
    sets: Vec<Vec<String>>,
}

impl Step {
    fn gather(inputs: &StepInputs, fields: &[String]) -> Result<Self> {
        let mut passages: HashMap<String, String> = HashMap::new();
        for b in rows_of(&inputs["passages"]) {
            for ((id, _), text) in joined_rows(b, fields)? {
                passages.insert(id, text);
            }
        }
        let mut questions: HashMap<String, (String, String)> = HashMap::new();
        for b in rows_of(&inputs["answers"]) {
            let (ids, texts) = (batch::strings(b, col::ID)?, batch::strings(b, col::TEXT)?);
            let answers = batch::strings(b, col::ANSWER)?;
            for r in 0..b.num_rows() {
                questions.insert(
                    ids.value(r).to_string(),
                    (texts.value(r).to_string(), answers.value(r).to_string()),
                );
            }
        }
        let (mut ids, mut sets) = (Vec::new(), Vec::new());
        for b in rows_of(&inputs["retrieved"]) {
            let q = batch::strings(b, col::ID)?;
            let best = batch::strings(b, col::CORPUS_ID)?;
            for (r, rest) in string_lists(b, col::NEGATIVES)?.into_iter().enumerate() {
                ids.push(q.value(r).to_string());
                sets.push(
                    std::iter::once(best.value(r).to_string())
                        .chain(rest)
                        .collect::<Vec<_>>(),
                );
            }
        }
        Ok(Self {
            passages,
            questions,
            ids,
            sets,
        })
    }
}

/// A read node at run time.
struct ReadOp {
    spec: Read,
    k: usize,
    record: bool,
}

impl Operator for ReadOp {
    fn build<'s>(&self, cx: &mut BuildCx<'_, 's>) -> Result<Vec<(String, BatchStream<'s>)>> {
        let state = cx.models()?;
        let reader = state.reader(&self.spec.model)?;
        let (spec, k, record) = (self.spec.clone(), self.k, self.record);
        let alone = spec.context == Context::Question;
        let (counter, node) = (cx.run.clone(), cx.node.clone());
        let sample = cx.input("retrieved")?;
        let corpus = cx.sharded_input("corpus")?;
        let fetched = fetch(
            cx,
            "corpus",
            touched_requests(cx, sample.clone(), None),
            corpus,
        );
        let floor = reader.config().epsilon.ln() as f32;
        let logic = move |t: Time, inputs: StepInputs| {
            let Step {
                passages,
                questions,
                ids,
                sets,
            } = Step::gather(&inputs, &spec.fields)?;
            if ids.is_empty() {
                return Ok(Vec::new());
            }
            let mut examples = Vec::with_capacity(ids.len() * k);
            let mut present = Vec::with_capacity(ids.len() * k);
            for (id, set) in ids.iter().zip(&sets) {
                let (query, answer) = questions.get(id).ok_or_else(|| {
                    Error::invariant(format!("question `{id}` has no text at step {t}"))
                })?;
                for j in 0..k {
                    // A missing passage is scored on an empty text (the floor) and masked.
                    let passage = match set.get(j) {
                        Some(_) if alone => query.as_str(),
                        Some(z) => passages.get(z).map(String::as_str).ok_or_else(|| {
                            Error::invariant(format!("passage `{z}` is not in the corpus input"))
                        })?,
                        None => "",
                    };
                    present.push(j < set.len());
                    examples.push(Example {
                        query,
                        passage,
                        answer,
                    });
                }
            }
            let n = ids.len();
            let lp = match record {
                true => {
                    let lp = reader.log_likelihood(&examples)?.reshape((n, k))?;
                    let values = lp.detach();
                    state.record(
                        &node,
                        t,
                        TapeEntry {
                            model: spec.model.clone(),
                            ids: ids.clone(),
                            recorded: freshen_operators::train::Recorded {
                                output: lp,
                                rows: None,
                            },
                        },
                    );
                    values
                }
                false => reader.log_likelihood(&examples)?.reshape((n, k))?.detach(),
            };
            let mut values: Vec<f32> = lp.flatten_all()?.host_vec1()?;
            for (v, p) in values.iter_mut().zip(&present) {
                if !p {
                    *v = floor;
                }
            }
            counter.count(&node, |s| s.rows_out += n);
            let out = RecordBatch::try_new(
                read_schema(k),
                vec![
                    Arc::new(StringArray::from(ids)) as ArrayRef,
                    batch::vector_column(values, k)?,
                ],
            )?;
            Ok(vec![(0, Batch(out))])
        };
        let out = Stepwise::new("Read")
            .input("retrieved", sample)
            .input("passages", fetched)
            .input("answers", cx.input("answers")?)
            .input("feedback", cx.feedback()?)
            .build(cx, logic)
            .remove(0);
        Ok(vec![(MAIN.to_string(), out)])
    }
}
