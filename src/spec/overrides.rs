//! `--set path.to.key=value` overrides, applied to the YAML tree before typing.
//!
//! A path walks mappings by key and lists by index or, friendlier, by a node's `id`
//! (`nodes.embed.batch_size=64`). The value is read as YAML, so `64` is a number and
//! `[3, 5]` a list. Missing keys are created, and then checked like any other key.

use serde_yaml::Value;

use super::paths::key_str;

/// Applies one `PATH=VALUE`; returns the index-based dotted path it changed.
pub(crate) fn apply(root: &mut Value, set: &str) -> Result<String, String> {
    let (path, raw) = set.split_once('=').ok_or_else(|| {
        format!("`{set}` is not PATH=VALUE (expected e.g. nodes.embed.batch_size=64)")
    })?;
    let value: Value =
        serde_yaml::from_str(raw).map_err(|e| format!("value `{raw}` is not valid YAML ({e})"))?;
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(format!("path `{path}` has an empty segment"));
    }
    if let [first, name, ..] = segments.as_slice() {
        if *first == "vars" {
            check_var(root, name)?;
        }
    }
    let mut cur = root;
    let mut canonical = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        cur = match cur {
            Value::Mapping(m) => {
                canonical.push(seg.to_string());
                if !m.contains_key(*seg) {
                    let fresh = if last {
                        Value::Null
                    } else {
                        Value::Mapping(Default::default())
                    };
                    m.insert(Value::from(*seg), fresh);
                }
                m.get_mut(*seg)
                    .ok_or_else(|| format!("cannot set `{path}`"))?
            }
            Value::Sequence(items) => {
                let index = match seg.parse::<usize>() {
                    Ok(n) if n < items.len() => n,
                    Ok(n) => {
                        return Err(format!(
                            "`{path}`: index {n} is past the end of a list of {}",
                            items.len()
                        ))
                    }
                    Err(_) => items
                        .iter()
                        .position(|it| it.get("id").map(key_str).as_deref() == Some(*seg))
                        .ok_or_else(|| format!("`{path}`: no node with id `{seg}`"))?,
                };
                canonical.push(index.to_string());
                &mut items[index]
            }
            _ => {
                let done = segments[..i].join(".");
                return Err(format!("`{path}`: `{done}` is not a mapping or list"));
            }
        };
    }
    *cur = value;
    Ok(canonical.join("."))
}

/// A `--set vars.NAME` must name a var the pipeline has: a typo would otherwise be
/// silently ignored while the run writes where the real var points.
fn check_var(root: &Value, name: &str) -> Result<(), String> {
    let known: Vec<String> = match root.get("vars") {
        Some(Value::Mapping(m)) => m.keys().map(key_str).collect(),
        _ => Vec::new(),
    };
    if known.iter().any(|k| k == name) {
        return Ok(());
    }
    Err(format!(
        "`vars.{name}` is not a var of this pipeline (expected one of: {})",
        if known.is_empty() {
            "none defined".to_string()
        } else {
            known.join(", ")
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_by_key_index_and_node_id() {
        let mut v: Value =
            serde_yaml::from_str("seed: 1\nnodes:\n  - id: a\n    n: 1\n  - id: b\n").unwrap();
        assert_eq!(apply(&mut v, "seed=7").unwrap(), "seed");
        assert_eq!(apply(&mut v, "nodes.b.n=3").unwrap(), "nodes.1.n");
        assert_eq!(apply(&mut v, "nodes.0.n=[1, 2]").unwrap(), "nodes.0.n");
        assert_eq!(v["seed"].as_u64(), Some(7));
        assert_eq!(v["nodes"][1]["n"].as_u64(), Some(3));
        assert!(apply(&mut v, "nodes.zz.n=1")
            .unwrap_err()
            .contains("no node with id `zz`"));
        assert!(apply(&mut v, "seed").unwrap_err().contains("PATH=VALUE"));
        let mut v: Value = serde_yaml::from_str("vars: {out: a, data: b}").unwrap();
        assert_eq!(apply(&mut v, "vars.out=2024").unwrap(), "vars.out");
        let e = apply(&mut v, "vars.outt=x").unwrap_err();
        assert!(
            e.contains("`vars.outt` is not a var") && e.contains("out"),
            "{e}"
        );
    }
}
