//! `${NAME}` interpolation in strings: the pipeline's `vars` first, then the environment.
//!
//! `${NAME:-default}` gives a fallback; `$${` writes a literal `${`. An unknown name is
//! an error at the string that uses it, never an empty substitution.

use serde_yaml::Value;

use super::paths::{child, key_str};

/// What went wrong where: the dotted path of the value, and the message.
pub(crate) type Misplaced = (String, String);

/// Replaces every `${NAME}` in the string values of `root`.
pub(crate) fn interpolate(root: &mut Value) -> Result<(), Misplaced> {
    let mut vars = std::collections::BTreeMap::new();
    if let Some(Value::Mapping(m)) = root.get("vars") {
        for (k, v) in m {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err((
                        format!("vars.{}", key_str(k)),
                        "a variable must be a string, number or boolean".into(),
                    ))
                }
            };
            vars.insert(key_str(k), value);
        }
    }
    // Variables may use the environment, not each other: one pass, no ordering puzzles.
    let lookup = |name: &str| std::env::var(name).ok();
    let mut resolved = std::collections::BTreeMap::new();
    for (k, v) in &vars {
        let s = expand(v, &lookup).map_err(|m| (format!("vars.{k}"), m))?;
        resolved.insert(k.clone(), s);
    }
    let lookup = |name: &str| {
        resolved
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    };
    walk(root, "", &lookup)
}

fn walk(
    v: &mut Value,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Misplaced> {
    match v {
        Value::String(s) if s.contains('$') => {
            *s = expand(s, lookup).map_err(|m| (path.to_string(), m))?;
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, &child(path, &i.to_string()), lookup)?;
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = key_str(k);
                if path.is_empty() && key == "vars" {
                    continue;
                }
                walk(item, &child(path, &key), lookup)?;
            }
        }
        Value::Tagged(t) => walk(&mut t.value, path, lookup)?,
        _ => {}
    }
    Ok(())
}

/// Expands `${NAME}` and `${NAME:-default}` in `s`.
pub(crate) fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{s}` (expected `${{NAME}}`)"))?;
            let inner = &tail[..end];
            let (name, default) = match inner.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (inner, None),
            };
            match lookup(name).or_else(|| default.map(str::to_string)) {
                Some(v) => out.push_str(&v),
                None => {
                    return Err(format!(
                        "undefined variable `{name}` (expected it in `vars` or the environment)"
                    ))
                }
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_vars_defaults_and_escapes() {
        let look = |n: &str| (n == "A").then(|| "x".to_string());
        assert_eq!(expand("a/${A}/b", &look).unwrap(), "a/x/b");
        assert_eq!(expand("${B:-d}", &look).unwrap(), "d");
        assert_eq!(expand("$${A} $5", &look).unwrap(), "${A} $5");
        assert!(expand("${B}", &look)
            .unwrap_err()
            .contains("undefined variable `B`"));
        assert!(expand("${A", &look).unwrap_err().contains("unclosed"));
    }
}
