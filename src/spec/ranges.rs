//! Range checks that types alone cannot express (a batch of zero rows, an empty n-gram range).

use super::types::{ModelRef, ModelSpec, OperatorSpec};

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
        OperatorSpec::Source(s) => {
            positive(&mut out, "batch_size", s.batch_size);
            if let Some(steps) = s.steps {
                positive(&mut out, "steps", steps);
            }
        }
        OperatorSpec::Encode(e) => {
            positive(&mut out, "batch_size", e.batch_size);
            if let ModelRef::Inline(model) = &e.model {
                out.extend(model_ranges(model, "model."));
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
            if let Some(every) = e.every {
                positive(&mut out, "every", every);
            }
            let known = e.select_by == "mrr_at_10"
                || e.select_by == "ndcg_at_10"
                || e.select_by
                    .strip_prefix("recall_at_")
                    .and_then(|k| k.parse::<usize>().ok())
                    .is_some_and(|k| e.recall_at.contains(&k));
            if !known {
                out.push((
                    "select_by".into(),
                    format!(
                        "`select_by` is `{}` (expected mrr_at_10, ndcg_at_10 or recall_at_K for a K of recall_at)",
                        e.select_by
                    ),
                ));
            }
        }
        OperatorSpec::Cache(c) => {
            if let Some(r) = c.refresh_every {
                positive(&mut out, "refresh_every", r);
            }
        }
        OperatorSpec::Correct(c) => {
            positive(&mut out, "apply_every", c.apply_every);
            positive(&mut out, "chunk", c.chunk);
        }
        OperatorSpec::Sample(s) => {
            positive(&mut out, "chunk", s.chunk);
            if let Some(pool) = s.pool {
                if pool < s.k + s.skip_top {
                    out.push((
                        "pool".into(),
                        format!(
                            "`pool` is {pool} (expected at least k + skip_top = {})",
                            s.k + s.skip_top
                        ),
                    ));
                }
            }
            if !(s.beta.is_finite() && s.beta >= 0.0) {
                out.push((
                    "beta".into(),
                    format!("`beta` is {} (expected a finite number >= 0)", s.beta),
                ));
            }
            if s.margin.is_some_and(|m| !m.is_finite()) {
                out.push(("margin".into(), "`margin` must be a finite number".into()));
            }
        }
        OperatorSpec::Loss(l) => {
            if !(l.beta.is_finite() && l.beta > 0.0) {
                out.push((
                    "beta".into(),
                    format!("`beta` is {} (expected a finite number > 0)", l.beta),
                ));
            }
            if !(l.task_weight.is_finite() && l.task_weight >= 0.0) {
                out.push((
                    "task_weight".into(),
                    format!(
                        "`task_weight` is {} (expected a finite number >= 0)",
                        l.task_weight
                    ),
                ));
            }
        }
        OperatorSpec::Update(u) => {
            for (key, v) in [
                ("lr", u.lr),
                ("embedding_lr", u.embedding_lr),
                ("corrector_lr", u.corrector_lr),
                ("weight_decay", u.weight_decay),
                ("corrector_weight_decay", u.corrector_weight_decay),
            ] {
                if !(v.is_finite() && v >= 0.0) {
                    out.push((
                        key.into(),
                        format!("`{key}` is {v} (expected a finite number >= 0)"),
                    ));
                }
            }
            if u.clip.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
                out.push(("clip".into(), "`clip` must be a finite number > 0".into()));
            }
        }
        OperatorSpec::Sink(_) => {}
    }
    out
}

/// Problems with a model's settings, as (key path, message); keys and messages name the
/// setting as `{prefix}{key}`.
pub(crate) fn model_ranges(model: &ModelSpec, prefix: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let positive = |out: &mut Vec<(String, String)>, key: &str, v: usize| {
        if v == 0 {
            out.push((
                format!("{prefix}{key}"),
                format!("`{prefix}{key}` is 0 (expected at least 1)"),
            ));
        }
    };
    if !(model.lr_scale().is_finite() && model.lr_scale() >= 0.0) {
        out.push((
            format!("{prefix}lr_scale"),
            format!(
                "`lr_scale` is {} (expected a finite number >= 0)",
                model.lr_scale()
            ),
        ));
    }
    match model {
        ModelSpec::Corrector(c) => positive(&mut out, "width", c.width),
        ModelSpec::Bert(b) => {
            positive(&mut out, "batch_tokens", b.batch_tokens);
            positive(&mut out, "max_batch", b.max_batch);
            if b.max_length == Some(0) {
                positive(&mut out, "max_length", 0);
            }
        }
        ModelSpec::Hashed(h) => {
            positive(&mut out, "buckets", h.buckets);
            positive(&mut out, "bag_dim", h.bag_dim);
            positive(&mut out, "dim", h.dim);
            positive(&mut out, "word_ngrams", h.word_ngrams);
            let [lo, hi] = h.char_ngrams;
            if lo > hi {
                out.push((
                    format!("{prefix}char_ngrams"),
                    format!("`char_ngrams` is [{lo}, {hi}] (expected [min, max] with min <= max)"),
                ));
            }
            if h.buckets > u32::MAX as usize {
                out.push((
                    format!("{prefix}buckets"),
                    format!("`buckets` is {} (expected at most {})", h.buckets, u32::MAX),
                ));
            }
        }
    }
    out
}
