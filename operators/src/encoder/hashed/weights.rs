//! The weights: seeded initialisation of the embedding table, and saving and loading
//! them as safetensors.

use std::path::Path;

use candle_core::{DType, Var};

use super::parallel::par_for_each;
use super::{HashedEncoder, HashedEncoderConfig, INIT_BLOCK_ROWS, PROJ_BIAS, PROJ_WEIGHT, TABLE};
use crate::hashing::hash64_seeded;
use crate::random::SplitMix64;
use crate::weights_file;
use crate::Result;

/// Extra tensor of saved files: the config as JSON bytes (u8), checked on load.
const CONFIG_TENSOR: &str = "hashed_encoder.config_json";

impl HashedEncoder {
    /// Saves the weights (safetensors, the [`VarMap`] names) plus the config as a u8
    /// tensor `hashed_encoder.config_json`. Written to a temporary file and renamed, so a
    /// crash never leaves a truncated file at `path`.
    ///
    /// [`VarMap`]: candle_nn::VarMap
    pub fn save(&self, path: &Path) -> Result<()> {
        weights_file::save(path, &self.named_vars(), CONFIG_TENSOR, &self.cfg)
    }

    /// Loads weights saved by [`HashedEncoder::save`] (or any safetensors file with the
    /// three variables as f32 of the right shapes) and recomputes the fingerprint. If the
    /// file holds a config, its featurisation and shapes must equal this encoder's (`seed`
    /// and `normalize` may differ). Nothing is changed unless the whole file checks out.
    pub fn load_weights(&mut self, path: &Path) -> Result<()> {
        let loaded = weights_file::read::<HashedEncoderConfig>(path, CONFIG_TENSOR)?;
        if let Some(msg) = loaded
            .config
            .as_ref()
            .and_then(|c| self.cfg.weight_mismatch(c))
        {
            return Err(weights_file::mismatch(path, msg));
        }
        loaded.apply(path, &self.named_vars(), &[DType::F32])?;
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
