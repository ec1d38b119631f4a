//! The weights: seeded initialisation of the embedding table, and saving and loading
//! them as safetensors.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};

use super::parallel::par_for_each;
use super::{HashedEncoder, HashedEncoderConfig, INIT_BLOCK_ROWS, PROJ_BIAS, PROJ_WEIGHT, TABLE};
use crate::hashing::{hash64_seeded, SplitMix64};
use crate::{Error, Result};

/// Extra tensor of saved files: the config as JSON bytes (u8), checked on load.
const CONFIG_TENSOR: &str = "hashed_encoder.config_json";

impl HashedEncoder {
    /// Saves the weights (safetensors, the [`VarMap`] names) plus the config as a u8
    /// tensor `hashed_encoder.config_json`. Written to a temporary file and renamed, so a
    /// crash never leaves a truncated file at `path`.
    ///
    /// [`VarMap`]: candle_nn::VarMap
    pub fn save(&self, path: &Path) -> Result<()> {
        let file_err = |message: String| Error::ModelFile {
            path: path.to_path_buf(),
            message,
        };
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (name, var) in self.named_vars() {
            tensors.insert(name.to_string(), var.as_tensor().detach());
        }
        let json = serde_json::to_vec(&self.cfg)
            .map_err(|e| file_err(format!("cannot serialise config: {e}")))?;
        let len = json.len();
        tensors.insert(
            CONFIG_TENSOR.to_string(),
            Tensor::from_vec(json, len, &Device::Cpu)?,
        );
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = std::path::PathBuf::from(tmp);
        candle_core::safetensors::save(&tensors, &tmp)
            .map_err(|e| file_err(format!("cannot write: {e}")))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| file_err(format!("cannot move {} into place: {e}", tmp.display())))
    }

    /// Loads weights saved by [`HashedEncoder::save`] (or any safetensors file with the
    /// three variables as f32 of the right shapes) and recomputes the fingerprint. If the
    /// file holds a config, its featurisation and shapes must equal this encoder's (`seed`
    /// and `normalize` may differ). Nothing is changed unless the whole file checks out.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let file_err = |message: String| Error::ModelFile {
            path: path.to_path_buf(),
            message,
        };
        let tensors = candle_core::safetensors::load(path, &Device::Cpu)
            .map_err(|e| file_err(format!("cannot read: {e}")))?;
        if let Some(t) = tensors.get(CONFIG_TENSOR) {
            let bytes: Vec<u8> = t
                .flatten_all()
                .and_then(|t| t.to_vec1())
                .map_err(|e| file_err(format!("bad {CONFIG_TENSOR}: {e}")))?;
            let saved: HashedEncoderConfig = serde_json::from_slice(&bytes)
                .map_err(|e| file_err(format!("bad {CONFIG_TENSOR}: {e}")))?;
            if let Some(msg) = self.cfg.weight_mismatch(&saved) {
                return Err(file_err(msg));
            }
        }
        let mut checked = Vec::new();
        for (name, var) in self.named_vars() {
            let t = tensors
                .get(name)
                .ok_or_else(|| file_err(format!("no tensor named {name}")))?;
            if t.dtype() != DType::F32 {
                return Err(file_err(format!("{name} is {:?}, expected F32", t.dtype())));
            }
            if t.dims() != var.dims() {
                return Err(file_err(format!(
                    "{name} has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )));
            }
            checked.push((var, t.to_device(&self.device)?));
        }
        for (var, t) in checked {
            var.set(&t)?;
        }
        self.refresh_fingerprint()
    }

    /// The three variables, with their names in the [`VarMap`](candle_nn::VarMap) and in
    /// saved files.
    pub(super) fn named_vars(&self) -> [(&'static str, &Var); 3] {
        [
            (TABLE, &self.table),
            (PROJ_WEIGHT, &self.weight),
            (PROJ_BIAS, &self.bias),
        ]
    }
}

/// The embedding table, U(-√(3/bag_dim), √(3/bag_dim)), from per-block streams (see the
/// module docs).
pub(super) fn init_table(seed: u64, buckets: usize, bag_dim: usize) -> Vec<f32> {
    let mut table = vec![0f32; buckets * bag_dim];
    let bound = (3.0 / bag_dim as f32).sqrt();
    let mut blocks: Vec<&mut [f32]> = table.chunks_mut(INIT_BLOCK_ROWS * bag_dim).collect();
    par_for_each(&mut blocks, |j, block| {
        let mut rng = SplitMix64::new(hash64_seeded(
            seed,
            format!("hashed-v1/bag.weight/{j}").as_bytes(),
        ));
        for x in block.iter_mut() {
            *x = rng.uniform(-bound, bound);
        }
    });
    table
}
