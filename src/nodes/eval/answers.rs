//! The retrieval-augmented model's answer accuracy, for a training `eval` with
//! `models.reader`: each judged question reads its top `answer_k` passages of the
//! ranking (the freshly re-embedded corpus, as the retrieval metrics use), with
//! `p(z | q) = softmax_z(β · score)` over them. The prediction is the answer string
//! `a` that maximises `Σ_z p(z | q) p(a | q, z)` among the reader's best span of each
//! passage; `exact_match` is the share of questions whose prediction equals the answer
//! (as lower-case words), `answer_nll` the mean `−log Σ_z p(z | q) p(a* | q, z)` of the
//! true answer `a*`.

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

/// The answer metrics of `ranked` (its questions with an answer).
pub(super) fn answer_metrics(cx: &AnswerCx, ranked: &Ranked) -> Result<Option<AnswerMetrics>> {
    let (mut hits, mut nll, mut n) = (0usize, 0.0, 0usize);
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
        let log_prior: Vec<f64> = logits.iter().map(|l| l - norm).collect();
        let passages: Vec<&str> = docs[..k].iter().map(|&d| cx.passages[d as usize]).collect();
        let spans: Vec<Example> = passages
            .iter()
            .map(|&passage| Example {
                query,
                passage,
                answer: "",
            })
            .collect();
        // The candidates: each passage's best span, distinct, then the true answer.
        let mut candidates: Vec<String> = Vec::new();
        for (span, _) in cx.reader.predict(&spans)? {
            if !span.is_empty() && !candidates.contains(&span) {
                candidates.push(span);
            }
        }
        let gold = words(answer).join(" ");
        candidates.push(gold.clone());
        let examples: Vec<Example> = candidates
            .iter()
            .flat_map(|a| {
                passages.iter().map(move |&passage| Example {
                    query,
                    passage,
                    answer: a,
                })
            })
            .collect();
        let ll: Vec<f32> = cx.reader.log_likelihood(&examples)?.to_vec1()?;
        let marginal: Vec<f64> = ll
            .chunks(k)
            .map(|row| {
                let joint: Vec<f64> = row
                    .iter()
                    .zip(&log_prior)
                    .map(|(l, p)| f64::from(*l) + p)
                    .collect();
                log_sum_exp(&joint)
            })
            .collect();
        // The prediction among the read spans (not the appended true answer).
        let read = candidates.len() - 1;
        let best = (0..read).max_by(|&a, &b| marginal[a].total_cmp(&marginal[b]));
        if best.is_some_and(|b| candidates[b] == gold) {
            hits += 1;
        }
        nll -= marginal[read];
        n += 1;
    }
    Ok((n > 0).then(|| AnswerMetrics {
        exact_match: hits as f64 / n as f64,
        answer_nll: nll / n as f64,
    }))
}
