//! The pipeline format: what a YAML pipeline may say, and how it is read.
//!
//! [`LoadedSpec::load`] turns a file into a typed [`Pipeline`], remembering where each
//! value was written so that the graph checks later on can point at it.

mod interpolate;
mod load;
mod overrides;
pub mod position;
mod ranges;
mod training;
pub mod types;

pub use load::LoadedSpec;
pub use types::*;

/// The JSON Schema of the pipeline format, derived from the same structs the loader uses.
pub fn json_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Pipeline)).unwrap_or_default()
}
