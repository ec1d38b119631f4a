//! What a resumable checkpoint asks of the operators, and the files it is made of.
//!
//! A checkpoint is a folder written between two steps (`runtime`'s checkpoint operator
//! writes it once every operator has finished step `t - 1` and none has started `t`). It
//! holds the models' weights, the run's counters, and a folder per node for the state an
//! operator carries across steps (the optimisers' moments, the best dev step's weights):
//! each such operator registers a [`Checkpointable`] with its worker's models at build
//! time, and reads its folder back from the [`ResumePoint`] of a resumed run.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// Where a resumed run starts: the step its checkpoint was taken before, and the folder.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    /// The first step the resumed run trains.
    pub step: usize,
    /// The checkpoint's folder.
    pub dir: PathBuf,
}

impl ResumePoint {
    /// The folder of node `node`'s state.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        node_dir(&self.dir, node)
    }
}

/// The folder of node `node`'s state in the checkpoint folder `dir`.
pub fn node_dir(dir: &Path, node: &str) -> PathBuf {
    dir.join("nodes").join(node)
}

/// State an operator carries from one step to the next that a checkpoint must keep.
pub trait Checkpointable {
    /// Writes the state into `dir` (the node's own folder, created).
    fn save(&self, dir: &Path) -> Result<()>;
}

/// Writes named tensors as one safetensors file.
pub fn save_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let map: HashMap<String, Tensor> = tensors.iter().cloned().collect();
    candle_core::safetensors::save(&map, path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(e.to_string()),
    })
}

/// Reads a safetensors file of [`save_tensors`] onto `device`, by name.
pub fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device)
        .map_err(|e| Error::data(path, None, format!("unreadable checkpoint file ({e})")))
}

/// Writes `value` as JSON.
pub fn save_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::invariant(format!("checkpoint JSON: {e}")))?;
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// Reads JSON written by [`save_json`].
pub fn load_json(path: &Path) -> Result<serde_json::Value> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::data(path, None, format!("unreadable checkpoint file ({e})")))
}
