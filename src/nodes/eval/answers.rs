//! The retrieval-augmented model's answer accuracy, for a training `eval` with
//! `models.reader`: each judged question reads its top `answer_k` passages of the
//! ranking (the freshly re-embedded corpus, as the retrieval metrics use), with
//! `p(z | q) = softmax_z(β · score)` over them. The prediction is the answer string
//! `a` that maximises `Σ_z p(z | q) p(a | q, z)` among the reader's best span of each
//! passage; `exact_match` is the share of questions whose prediction equals the answer
//! (as lower-case words), `answer_nll` the mean `−log Σ_z p(z | q) p(a* | q, z)` of the
//! true answer `a*`. With `answer_context: question` the reader reads the question in
//! place of each passage: the no-retrieval baseline.

use freshen_operators::host::HostRead;
use std::collections::HashMap;

use freshen_operators::reader::{words, Example, Reader};

use super::rank::Ranked;
use crate::error::Result;

/// Answer metrics of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct AnswerMetrics {
    /// Share of questions answered exactly.
    pub exact_match: f64,
    /// Mean negative log marginal likelihood of the true answer.
    pub answer_nll: f64,
}

/// What the answer evaluation reads.
pub(super) struct AnswerCx<'a> {
    /// Whether the reader reads the question in place of each passage (no retrieval).
    pub alone: bool,
    /// The reader.
    pub reader: &'a Reader,
    /// Passages read per question.
    pub k: usize,
    /// β of `p(z | q)`.
    pub beta: f64,
    /// Every corpus row's text, in the ranking's row order.
    pub passages: &'a [&'a str],
    /// Question texts and answers, by id.
    pub questions: &'a HashMap<String, String>,
    /// The answers, by question id.
    pub answers: &'a HashMap<String, String>,
}

/// `log Σ_j exp(x_j)`.
fn log_sum_exp(x: &[f64]) -> f64 {
    let max = x.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + x.iter().map(|v| (v - max).exp()).sum::<f64>().ln()
}

/// Questions read per reader call (the reader's batches stay small: questions × passages
/// × candidates examples).
const CHUNK: usize = 32;

/// One question being answered: its text, its passages and their log-priors.
struct Question<'a> {
    query: &'a str,
    gold: String,
    passages: Vec<&'a str>,
    log_prior: Vec<f64>,
}

/// The answer metrics of `ranked` (its questions with an answer).
pub(super) fn answer_metrics(cx: &AnswerCx, ranked: &Ranked) -> Result<Option<AnswerMetrics>> {
    let mut questions = Vec::new();
    for ((id, docs), scores) in ranked.rankings.iter().zip(&ranked.scores) {
        let (Some(query), Some(answer)) = (cx.questions.get(id), cx.answers.get(id)) else {
            continue;
        };
        let k = cx.k.min(docs.len());
        if k == 0 {
            continue;
        }
        let logits: Vec<f64> = scores[..k]
            .iter()
            .map(|&s| cx.beta * f64::from(s))
            .collect();
        let norm = log_sum_exp(&logits);
        questions.push(Question {
            query,
            gold: words(answer).join(" "),
            passages: docs[..k]
                .iter()
                .map(|&d| match cx.alone {
                    true => query.as_str(),
                    false => cx.passages[d as usize],
                })
                .collect(),
            log_prior: logits.iter().map(|l| l - norm).collect(),
        });
    }
    let (mut hits, mut nll) = (0usize, 0.0);
    for chunk in questions.chunks(CHUNK) {
        let (h, l) = answer_chunk(cx.reader, chunk)?;
        hits += h;
        nll += l;
    }
    let n = questions.len();
    Ok((n > 0).then(|| AnswerMetrics {
        exact_match: hits as f64 / n as f64,
        answer_nll: nll / n as f64,
    }))
}

/// Exact matches and summed NLL of a chunk of questions, in two reader calls.
fn answer_chunk(reader: &Reader, chunk: &[Question]) -> Result<(usize, f64)> {
    // The candidates of each question: each passage's best span, distinct, then the true
    // answer (scored for the NLL, never predicted).
    let spans: Vec<Example> = chunk
        .iter()
        .flat_map(|q| {
            q.passages.iter().map(|&passage| Example {
                query: q.query,
                passage,
                answer: "",
            })
        })
        .collect();
    let mut best = reader.predict(&spans)?.into_iter();
    let mut candidates: Vec<Vec<String>> = Vec::with_capacity(chunk.len());
    for q in chunk {
        let mut c: Vec<String> = Vec::new();
        for (span, _) in best.by_ref().take(q.passages.len()) {
            if !span.is_empty() && !c.contains(&span) {
                c.push(span);
            }
        }
        c.push(q.gold.clone());
        candidates.push(c);
    }
    let examples: Vec<Example> = chunk
        .iter()
        .zip(&candidates)
        .flat_map(|(q, cands)| {
            cands.iter().flat_map(move |a| {
                q.passages.iter().map(move |&passage| Example {
                    query: q.query,
                    passage,
                    answer: a,
                })
            })
        })
        .collect();
    let ll: Vec<f32> = reader.log_likelihood(&examples)?.host_vec1()?;
    let (mut hits, mut nll, mut at) = (0usize, 0.0, 0usize);
    for (q, cands) in chunk.iter().zip(&candidates) {
        let k = q.passages.len();
        let marginal: Vec<f64> = (0..cands.len())
            .map(|c| {
                let row = &ll[at + c * k..at + (c + 1) * k];
                let joint: Vec<f64> = row
                    .iter()
                    .zip(&q.log_prior)
                    .map(|(l, p)| f64::from(*l) + p)
                    .collect();
                log_sum_exp(&joint)
            })
            .collect();
        at += cands.len() * k;
        let read = cands.len() - 1;
        let pick = (0..read).max_by(|&a, &b| marginal[a].total_cmp(&marginal[b]));
        if pick.is_some_and(|b| cands[b] == q.gold) {
            hits += 1;
        }
        nll -= marginal[read];
    }
    Ok((hits, nll))
}
