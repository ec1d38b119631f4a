//! Dotted paths into a YAML value tree (`nodes.2.model.dim`): how positions, overrides
//! and interpolation name the place of a value.

use serde_yaml::Value;

/// The dotted path of `Mapping` key `k` under `base`.
pub(crate) fn child(base: &str, k: &str) -> String {
    if base.is_empty() {
        k.to_string()
    } else {
        format!("{base}.{k}")
    }
}

/// A mapping's string keys, for walking values.
pub(crate) fn key_str(k: &Value) -> String {
    match k {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other)
            .unwrap_or_default()
            .trim()
            .to_string(),
    }
}
