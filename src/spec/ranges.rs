//! Range checks that types alone cannot express (a batch of zero rows, an empty n-gram range).

use super::types::{ModelSpec, OperatorSpec};

/// Problems with the settings of `op`, as (key path within the node, message).
pub(crate) fn check(op: &OperatorSpec) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let positive = |out: &mut Vec<(String, String)>, key: &str, v: usize| {
        if v == 0 {
            out.push((
                key.to_string(),
                format!("`{key}` is 0 (expected at least 1)"),
            ));
        }
    };
    match op {
        OperatorSpec::Source(s) => positive(&mut out, "batch_size", s.batch_size),
        OperatorSpec::Encode(e) => {
            positive(&mut out, "batch_size", e.batch_size);
            match &e.model {
                ModelSpec::Hashed(h) => {
                    positive(&mut out, "model.buckets", h.buckets);
                    positive(&mut out, "model.bag_dim", h.bag_dim);
                    positive(&mut out, "model.dim", h.dim);
                    positive(&mut out, "model.word_ngrams", h.word_ngrams);
                    let [lo, hi] = h.char_ngrams;
                    if lo > hi {
                        out.push((
                            "model.char_ngrams".into(),
                            format!("`char_ngrams` is [{lo}, {hi}] (expected [min, max] with min <= max)"),
                        ));
                    }
                    if h.buckets > u32::MAX as usize {
                        out.push((
                            "model.buckets".into(),
                            format!("`buckets` is {} (expected at most {})", h.buckets, u32::MAX),
                        ));
                    }
                }
            }
            if e.fields.is_empty() {
                out.push((
                    "fields".into(),
                    "`fields` is empty (expected at least one column name)".into(),
                ));
            }
        }
        OperatorSpec::Eval(e) => {
            positive(&mut out, "depth", e.depth);
            positive(&mut out, "batch_size", e.batch_size);
            if e.recall_at.is_empty() || e.recall_at.contains(&0) {
                out.push((
                    "recall_at".into(),
                    format!(
                        "`recall_at` is {:?} (expected cut-offs of at least 1)",
                        e.recall_at
                    ),
                ));
            }
        }
        OperatorSpec::Cache(_) | OperatorSpec::Sink(_) => {}
    }
    out
}
