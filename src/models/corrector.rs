//! `kind: corrector`: the corrector network h (a residual MLP that starts as the
//! identity). Its settings are [`CorrectorConfig`]'s but `dim`, which is the width of the
//! cache it corrects; `seed` defaults to the pipeline's.

use std::sync::Arc;

use freshen_operators::corrector::{Corrector, CorrectorConfig};
use serde_yaml::Value;

use super::{Built, KindEntry, Model, ModelCommon, ModelCx, ModelKind, Role};
use crate::error::Result;

/// The kind's entry in [`super::KINDS`].
pub const KIND: KindEntry = KindEntry {
    name: "corrector",
    parse,
    schema,
    about: "The corrector h: a residual MLP trained so that h(stale) ≈ fresh; its input width is the cache's. `depth: 0` makes it linear.",
};

/// A corrector's settings.
#[derive(Debug, Clone)]
pub struct CorrectorModel {
    /// The network's settings; `dim` is set when it is built.
    pub config: CorrectorConfig,
    /// `frozen`, `lr_scale`, `device`.
    pub common: ModelCommon,
}

fn schema() -> serde_json::Value {
    let mut s = super::schema_of::<CorrectorConfig>();
    if let Some(o) = s.as_object_mut() {
        if let Some(p) = o.get_mut("properties").and_then(|p| p.as_object_mut()) {
            p.remove("dim");
        }
        o.remove("required");
    }
    s
}

fn parse(cx: &ModelCx, value: Value, common: ModelCommon) -> Result<Model> {
    let mut value = cx.with_seed(value);
    if let Value::Mapping(m) = &mut value {
        if m.contains_key("dim") {
            return Err(cx.key_error(
                "dim",
                "unknown key `dim` (a corrector's width is that of the cache it corrects)",
            ));
        }
        // Any width passes here; the real one is the cache's, checked when it is built.
        m.insert(Value::from("dim"), Value::from(1));
    }
    let config: CorrectorConfig = cx.settings(value)?;
    config.validate().map_err(|e| cx.located(e))?;
    Ok(Arc::new(CorrectorModel { config, common }))
}

impl ModelKind for CorrectorModel {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    fn role(&self) -> Role {
        Role::Corrector
    }

    fn common(&self) -> &ModelCommon {
        &self.common
    }

    fn linear(&self) -> bool {
        self.config.depth == 0 && self.config.norm == freshen_operators::corrector::Norm::None
    }

    fn output_dim(&self) -> Option<usize> {
        None
    }

    fn parameters(&self, input_dim: usize) -> Option<u64> {
        let c = CorrectorConfig {
            dim: input_dim.max(1),
            ..self.config.clone()
        };
        Some(c.param_count() as u64)
    }

    fn build(&self, input_dim: usize) -> freshen_operators::Result<Built> {
        let device = self.common.device.open()?;
        let config = CorrectorConfig {
            dim: input_dim,
            ..self.config.clone()
        };
        Ok(Built::Corrector(Corrector::new(config, &device)?))
    }

    fn settings_json(&self) -> serde_json::Value {
        let mut v = super::settings_json(KIND.name, &self.config, &self.common);
        if let Some(o) = v.as_object_mut() {
            o.remove("dim");
        }
        v
    }
}
