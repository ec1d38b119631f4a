//! `${NAME}` interpolation in strings: the pipeline's `vars` first, then the environment.
//! A var may use the vars written before it.
//!
//! `${NAME:-default}` gives a fallback; `$${` writes a literal `${`. An unknown name is
//! an error at the string that uses it, never an empty substitution.

use serde_yaml::{Mapping, Value};

use super::paths::{child, key_str};

/// What went wrong where: the dotted path of the value, and the message.
pub(crate) type Misplaced = (String, String);

/// Replaces every `${NAME}` in the string values of `root`.
pub(crate) fn interpolate(root: &mut Value) -> Result<(), Misplaced> {
    let resolved = resolve_vars(root)?;
    walk(root, "", &|name: &str| var_or_env(&resolved, name))
}

/// The value of var `name` among `vars`, else of the environment variable.
fn var_or_env(vars: &[(String, String)], name: &str) -> Option<String> {
    vars.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .or_else(|| std::env::var(name).ok())
}

/// The pipeline's `vars` as text, in file order, each interpolated with the vars before
/// it and the environment: `out: "${base}/y"` may use a `base` written above it. A var
/// that uses itself or one written after it (which is how any cycle shows) is an error
/// at that var saying so.
fn resolve_vars(root: &Value) -> Result<Vec<(String, String)>, Misplaced> {
    let Some(Value::Mapping(m)) = root.get("vars") else {
        return Ok(Vec::new());
    };
    let names: Vec<String> = m.keys().map(key_str).collect();
    let mut resolved: Vec<(String, String)> = Vec::new();
    for (i, (name, v)) in names.iter().zip(m.values()).enumerate() {
        let at = format!("vars.{name}");
        let value = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err((at, "a variable must be a string, number or boolean".into())),
        };
        for used in references(&value).map_err(|e| (at.clone(), e))? {
            if let Some(j) = names.iter().position(|n| *n == used).filter(|&j| j >= i) {
                return Err((at, later_use(m, &names, i, j)));
            }
        }
        let value = expand(&value, &|n: &str| var_or_env(&resolved, n)).map_err(|e| (at, e))?;
        resolved.push((name.clone(), value));
    }
    Ok(resolved)
}

/// The message for var `i` using var `j`, itself or one written after it.
fn later_use(m: &Mapping, names: &[String], i: usize, j: usize) -> String {
    let (name, used) = (&names[i], &names[j]);
    if i == j {
        return format!(
            "variable `{name}` uses itself (expected a value, or variables written before it)"
        );
    }
    let cycle = match uses_of(m, names, j).contains(name) {
        true => format!("; `{used}` uses `{name}` in turn, a cycle"),
        false => String::new(),
    };
    format!(
        "variable `{name}` uses `{used}`, written after it (expected only variables written before it: vars are read in file order{cycle})"
    )
}

/// The vars that var `j` uses, directly or through the vars it uses.
fn uses_of(m: &Mapping, names: &[String], j: usize) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut todo = vec![j];
    while let Some(j) = todo.pop() {
        let Some(Value::String(text)) = m.values().nth(j) else {
            continue;
        };
        for used in references(text).unwrap_or_default() {
            if let Some(k) = names.iter().position(|n| *n == used) {
                if !seen.contains(&used) {
                    seen.push(used);
                    todo.push(k);
                }
            }
        }
    }
    seen
}

/// The names `s` uses (`${NAME}` and `${NAME:-default}`), read as [`expand`] reads them.
fn references(s: &str) -> Result<Vec<String>, String> {
    let used = std::cell::RefCell::new(Vec::new());
    expand(s, &|name: &str| {
        used.borrow_mut().push(name.to_string());
        Some(String::new())
    })?;
    Ok(used.into_inner())
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

    fn resolved(yaml: &str) -> Result<String, Misplaced> {
        let mut v: Value = serde_yaml::from_str(yaml).unwrap();
        interpolate(&mut v)?;
        Ok(v["path"].as_str().unwrap_or_default().to_string())
    }

    #[test]
    fn vars_use_the_vars_written_before_them() {
        let chain = "vars: {base: x, out: \"${base}/y\", deep: \"${out}/z\"}\npath: ${deep}";
        assert_eq!(resolved(chain).unwrap(), "x/y/z");
        let (at, m) = resolved("vars: {out: \"${base}/y\", base: x}\npath: a").unwrap_err();
        assert_eq!(at, "vars.out");
        assert!(
            m.contains("uses `base`, written after it") && !m.contains("cycle"),
            "{m}"
        );
        let (at, m) =
            resolved("vars: {a: \"${b}\", b: \"${c}\", c: \"${a}\"}\npath: a").unwrap_err();
        assert_eq!(at, "vars.a");
        assert!(m.contains("`b` uses `a` in turn, a cycle"), "{m}");
        let (_, m) = resolved("vars: {a: \"${a:-x}\"}\npath: a").unwrap_err();
        assert!(m.contains("`a` uses itself"), "{m}");
    }
}
