//! The pipeline format: what every pipeline file says, and how it is read.
//!
//! [`LoadedSpec::load`] turns a file into a [`Pipeline`] (the `${VAR}`s interpolated and
//! the `--set` overrides applied), remembering where each value was written so that
//! every later check, the node kinds' included, can point at it. Each node's and model's
//! own settings stay as written here; their kinds read them with
//! [`LoadedSpec::deserialize_at`].

mod format;
mod interpolate;
mod load;
mod overrides;
mod paths;
pub mod position;
pub mod reference;
pub mod scaffold;
pub mod schema;

pub use format::*;
pub use load::LoadedSpec;
