//! `kind: hashed`: the built-in hashed n-gram encoder (no download). Its settings are
//! [`HashedEncoderConfig`]'s; `seed` defaults to the pipeline's.

use std::sync::Arc;

use freshen_operators::{HashedEncoder, HashedEncoderConfig};
use serde_yaml::Value;

use super::{Built, Footprint, KindEntry, Model, ModelCommon, ModelCx, ModelKind, Role, F32};
use crate::error::Result;

/// The kind's entry in [`super::KINDS`].
pub const KIND: KindEntry = KindEntry {
    name: "hashed",
    parse,
    schema: super::schema_of::<HashedEncoderConfig>,
    about: "An encoder that needs no download: hashed word and character n-grams feed an embedding bag and a linear projection, initialised from the seed. A text's vector does not depend on its batch.",
};

/// A hashed encoder's settings.
#[derive(Debug, Clone)]
pub struct Hashed {
    /// The encoder's own settings.
    pub config: HashedEncoderConfig,
    /// `frozen`, `lr_scale`, `device`.
    pub common: ModelCommon,
}

fn parse(cx: &ModelCx, value: Value, common: ModelCommon) -> Result<Model> {
    let config: HashedEncoderConfig = cx.settings(cx.with_seed(value))?;
    config.validate().map_err(|e| cx.located(e))?;
    Ok(Arc::new(Hashed { config, common }))
}

impl ModelKind for Hashed {
    fn kind(&self) -> &'static str {
        KIND.name
    }

    fn role(&self) -> Role {
        Role::Encoder
    }

    fn common(&self) -> &ModelCommon {
        &self.common
    }

    fn output_dim(&self) -> Option<usize> {
        Some(self.config.dim)
    }

    fn parameters(&self, _input_dim: usize) -> Option<u64> {
        let c = &self.config;
        Some((c.buckets * c.bag_dim + c.bag_dim * c.dim + c.dim) as u64)
    }

    /// The table trains by rows (its gradient and its update touch only the rows a step's
    /// texts hash to); the projection has a dense gradient.
    fn footprint(&self, _input_dim: usize) -> Option<Footprint> {
        let c = &self.config;
        let table = (c.buckets * c.bag_dim) as f64 * F32;
        let projection = (c.bag_dim * c.dim + c.dim) as f64 * F32;
        Some(Footprint {
            weights: table + projection,
            trained: table + projection,
            dense_gradient: projection,
            largest: table,
            largest_dense: projection,
            ..Footprint::default()
        })
    }

    fn build(&self, _input_dim: usize) -> freshen_operators::Result<Built> {
        let device = self.common.device.open()?;
        Ok(Built::Encoder(Box::new(HashedEncoder::new(
            self.config.clone(),
            &device,
        )?)))
    }

    fn settings_json(&self) -> serde_json::Value {
        super::settings_json(KIND.name, &self.config, &self.common)
    }
}
