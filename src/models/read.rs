//! Reading a model's mapping: its `kind`, the common settings, then the kind's own.

use serde::de::DeserializeOwned;
use serde_yaml::{Mapping, Value};

use super::{ModelCommon, KINDS};
use crate::error::{Error, Result};
use crate::spec::LoadedSpec;

/// Where a model is written, for reading it and pointing errors at it.
pub struct ModelCx<'a> {
    /// The loaded pipeline.
    pub spec: &'a LoadedSpec,
    /// The model's dotted path (`models.g`, `nodes.3.model`).
    pub path: String,
    /// The node it is written in, for an inline model.
    pub node: Option<&'a str>,
}

impl ModelCx<'_> {
    /// Reads the model: its `kind`, the common settings, then the kind's own.
    pub fn parse(&self, value: &Value) -> Result<super::Model> {
        let known = || {
            KINDS
                .iter()
                .map(|k| format!("`{}`", k.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Value::Mapping(map) = value else {
            return Err(self.error(
                "",
                format!(
                    "a model must be a mapping with a `kind` (expected one of {})",
                    known()
                ),
            ));
        };
        let mut map = map.clone();
        let kind = match map.remove("kind") {
            Some(Value::String(k)) => k,
            Some(_) => return Err(self.error("kind", "`kind` must be a string")),
            None => {
                return Err(self.error(
                    "",
                    format!("missing key `kind` (expected one of {})", known()),
                ))
            }
        };
        let Some(entry) = KINDS.iter().find(|k| k.name == kind) else {
            return Err(self.error(
                "kind",
                format!("unknown value `{kind}` (expected one of {})", known()),
            ));
        };
        let mut common = Mapping::new();
        for key in ModelCommon::KEYS {
            if let Some(v) = map.remove(*key) {
                common.insert(Value::from(*key), v);
            }
        }
        let common: ModelCommon = self.settings(Value::Mapping(common))?;
        common.validate().map_err(|e| self.located(e))?;
        (entry.parse)(self, Value::Mapping(map), common)
    }

    /// Deserialises a kind's own settings; an unknown key's message lists the common
    /// settings too.
    pub fn settings<T: DeserializeOwned>(&self, value: Value) -> Result<T> {
        self.spec
            .deserialize_at(&self.path, self.node, value)
            .map_err(|e| match e {
                Error::Spec {
                    file,
                    span,
                    node,
                    message,
                } if message.starts_with("unknown key") && message.ends_with(')') => {
                    let common: Vec<String> =
                        ModelCommon::KEYS.iter().map(|k| format!("`{k}`")).collect();
                    let message =
                        format!("{}, {})", &message[..message.len() - 1], common.join(", "));
                    Error::Spec {
                        file,
                        span,
                        node,
                        message,
                    }
                }
                other => other,
            })
    }

    /// The pipeline's seed, written into `map` as `seed` unless the model has its own.
    pub fn with_seed(&self, mut map: Value) -> Value {
        if let Value::Mapping(m) = &mut map {
            if !m.contains_key("seed") {
                m.insert(Value::from("seed"), Value::from(self.spec.pipeline.seed));
            }
        }
        map
    }

    /// An error at `key` of the model (`""`: the model itself).
    pub fn error(&self, key: &str, message: impl Into<String>) -> Error {
        self.spec.error(&self.key(key), self.node, message)
    }

    /// An error about the key `key` itself (an unknown key).
    pub fn key_error(&self, key: &str, message: impl Into<String>) -> Error {
        self.spec.key_error(&self.key(key), self.node, message)
    }

    /// A compute error located at the setting it names, or at the model.
    pub fn located(&self, e: freshen_operators::Error) -> Error {
        match e {
            freshen_operators::Error::Field { field, message } => self.error(&field, message),
            other => self.error("", other.to_string()),
        }
    }

    fn key(&self, key: &str) -> String {
        match key.is_empty() {
            true => self.path.clone(),
            false => format!("{}.{key}", self.path),
        }
    }
}
