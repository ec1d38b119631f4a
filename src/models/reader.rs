//! `kind: reader`: the retrieval-augmented model's reader, a span reader that scores
//! `log p(a | q, z)` (`freshen_operators::reader`). Its settings are
//! [`ReaderConfig`]'s; `seed` defaults to the pipeline's.

use std::sync::Arc;

use freshen_operators::reader::{Reader, ReaderConfig};
use serde_yaml::Value;

use super::{Built, KindEntry, Model, ModelCommon, ModelCx, ModelKind, Role};
use crate::error::Result;

/// The kind's entry in [`super::KINDS`].
pub const KIND: KindEntry = KindEntry {
    name: "reader",
    parse,
    schema: super::schema_of::<ReaderConfig>,
    about: "The span reader of a retrieval-augmented model, trained from scratch: hashed word vectors, a start and an end score per word, and `epsilon` for a passage without the answer.",
};

/// A reader's settings.
#[derive(Debug, Clone)]
pub struct ReaderModel {
    /// The reader's settings.
    pub config: ReaderConfig,
    /// `frozen`, `lr_scale`, `device`.
    pub common: ModelCommon,
}

fn parse(cx: &ModelCx, value: Value, common: ModelCommon) -> Result<Model> {
    let config: ReaderConfig = cx.settings(cx.with_seed(value))?;
    config.validate().map_err(|e| cx.located(e))?;
    Ok(Arc::new(ReaderModel { config, common }))
}

impl ModelKind for ReaderModel {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    fn role(&self) -> Role {
        Role::Reader
    }

    fn common(&self) -> &ModelCommon {
        &self.common
    }

    fn output_dim(&self) -> Option<usize> {
        None
    }

    fn parameters(&self, _input_dim: usize) -> Option<u64> {
        Some(self.config.param_count() as u64)
    }

    fn build(&self, _input_dim: usize) -> freshen_operators::Result<Built> {
        let device = self.common.device.open()?;
        Ok(Built::Reader(Reader::new(self.config.clone(), &device)?))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::settings_json(KIND.name, &self.config, &self.common)
    }
}
