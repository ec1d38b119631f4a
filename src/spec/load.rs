//! Reading a pipeline file: YAML → `${VAR}` interpolation → `--set` overrides → typed structs.
//!
//! Every failure becomes one [`Error::Spec`] line that points at the text the user wrote
//! (or at the `--set` that changed it), with the node id when the problem is in a node.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::format::{Inputs, NodeSpec, Pipeline, FORMAT_VERSION};
use super::position::PositionIndex;
use crate::error::{Error, Result, Span};

/// A parsed pipeline with what is needed to point errors back at its text.
#[derive(Debug, Clone)]
pub struct LoadedSpec {
    /// The pipeline file as given.
    pub file: PathBuf,
    /// The typed pipeline, after interpolation and overrides.
    pub pipeline: Pipeline,
    positions: PositionIndex,
    /// `(path, "--set expr")` for every overridden path.
    overrides: Vec<(String, String)>,
    /// The id of each node as written, so an error at `nodes.N...` names its node.
    node_ids: Vec<Option<String>>,
}

impl LoadedSpec {
    /// Reads `file`, interpolates `${VAR}`, applies `--set path=value` overrides and
    /// deserialises the pipeline, checking every key, type and range on the way.
    pub fn load(file: &Path, sets: &[String]) -> Result<Self> {
        let unreadable = |message: String| Error::Spec {
            file: file.to_path_buf(),
            span: None,
            node: None,
            message,
        };
        if file.is_dir() {
            return Err(unreadable(
                "is a folder (expected a pipeline file such as pipelines/quickstart.yaml)".into(),
            ));
        }
        let bytes = std::fs::read(file).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => unreadable(
                "no such pipeline file (expected a YAML file, e.g. pipelines/quickstart.yaml)"
                    .into(),
            ),
            _ => unreadable(format!("cannot read the pipeline ({e})")),
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let before = String::from_utf8_lossy(&bytes[..at]);
            let line = before.matches('\n').count() + 1;
            let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Error::Spec {
                file: file.to_path_buf(),
                span: Some(Span { line, col }),
                node: None,
                message: format!(
                    "not UTF-8 text (byte 0x{:02x}; expected a UTF-8 YAML file)",
                    bytes[at]
                ),
            }
        })?;
        Self::from_str(file, &text, sets)
    }

    /// As [`LoadedSpec::load`], from text already read (`file` names it in errors).
    pub fn from_str(file: &Path, text: &str, sets: &[String]) -> Result<Self> {
        let mut spec = LoadedSpec {
            file: file.to_path_buf(),
            pipeline: empty_pipeline(),
            positions: PositionIndex::build(text),
            overrides: Vec::new(),
            node_ids: Vec::new(),
        };
        if let Some((span, c)) = unprintable(text) {
            return Err(Error::Spec {
                file: file.to_path_buf(),
                span: Some(span),
                node: None,
                message: format!(
                    "YAML syntax: control character U+{:04X} is not allowed (expected printable text)",
                    u32::from(c)
                ),
            });
        }
        let mut value: Value = serde_yaml::from_str(text).map_err(|e| spec.syntax_error(&e))?;
        if !value.is_mapping() {
            return Err(spec.error("", None, "the file is not a YAML mapping (expected keys such as `nodes`, `inputs`, `outputs`)"));
        }
        // YAML merge keys (`<<: *defaults`) are resolved before anything reads the tree.
        value
            .apply_merge()
            .map_err(|e| spec.error("", None, format!("YAML merge key: {e}")))?;
        spec.node_ids = node_ids(&value);
        // Overrides first, so `--set vars.x=...` reaches every `${x}`.
        for set in sets {
            let path = super::overrides::apply(&mut value, set).map_err(|m| Error::Spec {
                file: PathBuf::from(format!("--set {set}")),
                span: None,
                node: None,
                message: m,
            })?;
            spec.overrides.push((path, set.clone()));
        }
        super::interpolate::interpolate(&mut value)
            .map_err(|(path, message)| spec.error(&path, None, message))?;
        spec.pipeline = spec.typed(value)?;
        Ok(spec)
    }

    fn syntax_error(&self, e: &serde_yaml::Error) -> Error {
        let span = e.location().map(|l| Span {
            line: l.line(),
            col: l.column(),
        });
        let mut message = e.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        Error::Spec {
            file: self.file.clone(),
            span,
            node: None,
            message: format!("YAML syntax: {message}"),
        }
    }

    /// An error about the value at `path` (dotted, items by index), in node `node`.
    pub fn error(&self, path: &str, node: Option<&str>, message: impl Into<String>) -> Error {
        self.error_with(path, node, message, false)
    }

    /// An error about the key at `path` (points at the key rather than its value).
    pub fn key_error(&self, path: &str, node: Option<&str>, message: impl Into<String>) -> Error {
        self.error_with(path, node, message, true)
    }

    fn error_with(
        &self,
        path: &str,
        node: Option<&str>,
        message: impl Into<String>,
        key: bool,
    ) -> Error {
        let node = node.or_else(|| self.node_of(path));
        if let Some((_, set)) = self
            .overrides
            .iter()
            .rev()
            .find(|(p, _)| path == p || path.starts_with(&format!("{p}.")))
        {
            return Error::Spec {
                file: PathBuf::from(format!("--set {set}")),
                span: None,
                node: node.map(str::to_string),
                message: message.into(),
            };
        }
        let span = if key {
            self.positions.key(path)
        } else {
            self.positions.value(path)
        };
        Error::Spec {
            file: self.file.clone(),
            span,
            node: node.map(str::to_string),
            message: message.into(),
        }
    }

    /// The id of the node whose settings `path` (`nodes.N...`) is in, if it has one.
    fn node_of(&self, path: &str) -> Option<&str> {
        let index: usize = path
            .strip_prefix("nodes.")?
            .split('.')
            .next()?
            .parse()
            .ok()?;
        self.node_ids.get(index)?.as_deref()
    }

    /// Where the value at `path` was written, if it was written in the file.
    pub fn span_of(&self, path: &str) -> Option<Span> {
        self.positions.value(path)
    }

    /// The span of the key at `path` (the value's, where the key is not written).
    pub fn key_span_of(&self, path: &str) -> Option<Span> {
        self.positions.key(path)
    }

    /// The dotted path of node number `index`.
    pub fn node_path(index: usize) -> String {
        format!("nodes.{index}")
    }

    fn typed(&self, mut value: Value) -> Result<Pipeline> {
        let nodes = match value.as_mapping_mut().and_then(|m| m.remove("nodes")) {
            Some(Value::Sequence(items)) => items,
            Some(_) => {
                return Err(self.error(
                    "nodes",
                    None,
                    "`nodes` must be a list (expected a list of nodes with `id` and `type`)",
                ))
            }
            None => {
                return Err(self.error(
                    "",
                    None,
                    "missing key `nodes` (expected a list of nodes with `id` and `type`)",
                ))
            }
        };
        let mut pipeline: Pipeline = self.deserialize_at("", None, value)?;
        if pipeline.version != FORMAT_VERSION {
            return Err(self.error(
                "version",
                None,
                format!(
                    "`version` is {} (expected {FORMAT_VERSION}, the only version of the format)",
                    pipeline.version
                ),
            ));
        }
        for (i, node) in nodes.into_iter().enumerate() {
            pipeline.nodes.push(self.node(i, node)?);
        }
        Ok(pipeline)
    }

    fn node(&self, index: usize, value: Value) -> Result<NodeSpec> {
        let path = Self::node_path(index);
        let Value::Mapping(mut map) = value else {
            return Err(self.error(
                &path,
                None,
                "a node must be a mapping (expected `id`, `type`, `inputs` and settings)",
            ));
        };
        let id = match map.remove("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s,
            Some(_) => {
                return Err(self.error(
                    &format!("{path}.id"),
                    None,
                    "`id` must be a non-empty string",
                ))
            }
            None => {
                return Err(self.error(
                    &path,
                    None,
                    "missing key `id` (every node needs a unique id)",
                ))
            }
        };
        let node = Some(id.as_str());
        if let Err(message) = check_node_id(&id) {
            return Err(self.error(&format!("{path}.id"), node, message));
        }
        let ty = match map.remove("type") {
            Some(Value::String(s)) => s,
            Some(_) => {
                return Err(self.error(&format!("{path}.type"), node, "`type` must be a string"))
            }
            // Reported by the graph, which knows the types there are.
            None => String::new(),
        };
        let inputs = self.inputs(&path, node, map.remove("inputs"))?;
        Ok(NodeSpec {
            id,
            inputs,
            type_name: ty,
            settings: Value::Mapping(map),
        })
    }

    /// A node's `inputs`: a map from role to node id (`id.port`), or a list of ids.
    fn inputs(&self, path: &str, node: Option<&str>, value: Option<Value>) -> Result<Inputs> {
        let id = |v: Value, at: String| match v {
            Value::String(s) => Ok(s),
            _ => Err(self.error(&at, node, "an input must be a node id (a string)")),
        };
        Ok(match value {
            None | Some(Value::Null) => Inputs::default(),
            Some(Value::String(s)) => Inputs::Listed(vec![s]),
            Some(Value::Sequence(items)) => Inputs::Listed(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(j, v)| id(v, format!("{path}.inputs.{j}")))
                    .collect::<Result<_>>()?,
            ),
            Some(Value::Mapping(map)) => {
                let mut named = Vec::with_capacity(map.len());
                // A role set to null is not given (`--set nodes.x.inputs.stale=null`).
                for (k, v) in map.into_iter().filter(|(_, v)| !v.is_null()) {
                    let Value::String(role) = k else {
                        return Err(self.error(
                            &format!("{path}.inputs"),
                            node,
                            "an input's role must be a name (`inputs: {role: node_id}`)",
                        ));
                    };
                    let at = format!("{path}.inputs.{role}");
                    named.push((role, id(v, at)?));
                }
                Inputs::Named(named)
            }
            Some(_) => {
                return Err(self.error(
                    &format!("{path}.inputs"),
                    node,
                    "`inputs` must be a map from role to node id (`{queries: q, search: cache}`) or a list of node ids",
                ))
            }
        })
    }

    /// Deserialises `value` found at `base` (a dotted path) in node `node`, turning
    /// serde's error into one that points at the key or value it names.
    pub fn deserialize_at<T: DeserializeOwned>(
        &self,
        base: &str,
        node: Option<&str>,
        value: Value,
    ) -> Result<T> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let mut path = base.to_string();
            for seg in e.path().iter() {
                use serde_path_to_error::Segment;
                let s = match seg {
                    Segment::Seq { index } => index.to_string(),
                    Segment::Map { key } => key.clone(),
                    Segment::Enum { .. } | Segment::Unknown => continue,
                };
                path = if path.is_empty() {
                    s
                } else {
                    format!("{path}.{s}")
                };
            }
            let raw = e.inner().to_string();
            if let Some(field) = quoted_after(&raw, "unknown field `") {
                let key = if path.is_empty() || path == field {
                    field
                } else if path.ends_with(&format!(".{field}")) {
                    path
                } else {
                    format!("{path}.{field}")
                };
                return self.key_error(&key, node, tidy(&raw));
            }
            self.error(&path, node, tidy(&raw))
        })
    }
}

/// Node ids are letters, digits, `_` and `-`, not digits alone: what `--set
/// nodes.ID.key=...` can address (a dot would split the id, digits alone read as the
/// node's index) and what `inputs: [ID.port]` can name.
fn check_node_id(id: &str) -> std::result::Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if let Some(c) = id.chars().find(|&c| !allowed(c)) {
        return Err(format!(
            "id `{id}` holds `{}` (expected letters, digits, `_` and `-`, so that `--set nodes.ID.key=...` can name the node)",
            c.escape_default()
        ));
    }
    if id.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "id `{id}` is a number (expected at least one letter, `_` or `-`: `--set nodes.{id}...` means the node at index {id})"
        ));
    }
    Ok(())
}

/// The first character YAML does not allow in a file (its printable set: tab, line
/// breaks, and everything from space on but DEL, the C1 controls other than NEL, and
/// U+FFFE/U+FFFF), with its line and column. The YAML parser refuses these too, but at
/// the start of the file, whatever line they are on.
fn unprintable(text: &str) -> Option<(Span, char)> {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r' | ' '..='~' | '\u{85}' | '\u{a0}'..='\u{fffd}')
            || c >= '\u{10000}'
    };
    text.split('\n').enumerate().find_map(|(i, line)| {
        let (j, c) = line.chars().enumerate().find(|&(_, c)| !allowed(c))?;
        Some((
            Span {
                line: i + 1,
                col: j + 1,
            },
            c,
        ))
    })
}

/// The `id` of every node as written (none where it is missing or not a string).
fn node_ids(value: &Value) -> Vec<Option<String>> {
    match value.get("nodes") {
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|n| n.get("id").and_then(Value::as_str).map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn empty_pipeline() -> Pipeline {
    Pipeline {
        version: FORMAT_VERSION,
        name: None,
        description: None,
        seed: 0,
        vars: Default::default(),
        inputs: Default::default(),
        models: Default::default(),
        nodes: Vec::new(),
        outputs: Default::default(),
    }
}

fn quoted_after(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let end = text[start..].find('`')?;
    Some(text[start..start + end].to_string())
}

/// Turns serde's wording into ours: `key` rather than `field`, and what was expected in parentheses.
pub(crate) fn tidy(raw: &str) -> String {
    let mut s = raw
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing key");
    s = s.replace("unknown variant", "unknown value");
    if let Some(i) = s.find(", there are no fields") {
        s.truncate(i);
        s.push_str(" (this takes no settings)");
    } else if let Some(i) = s.find(", expected ") {
        let expected = s[i + ", expected ".len()..].to_string();
        s.truncate(i);
        s.push_str(&format!(" (expected {expected})"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidies_serde_messages() {
        assert_eq!(
            tidy("unknown field `batch_szie`, expected one of `dataset`, `table`"),
            "unknown key `batch_szie` (expected one of `dataset`, `table`)"
        );
        assert_eq!(
            tidy("invalid type: string \"x\", expected usize"),
            "invalid type: string \"x\" (expected usize)"
        );
    }
}
