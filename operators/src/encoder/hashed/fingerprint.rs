//! The fingerprint: a hash of the settings, the Unicode version and every weight (see
//! the module docs of the encoder).

use crate::host::HostRead;
use candle_core::{DType, Tensor, Var};

use super::parallel::par_for_each;
use super::{with_cpu_f32, HashedEncoder, HashedEncoderConfig, FINGERPRINT_BLOCK};
use crate::hashing::{hash64, hash64_x4, Hasher64};
use crate::{Error, Result};

/// Tag hashed first into every fingerprint; bump it if the computation ever changes.
const FINGERPRINT_TAG: &[u8] = b"hashed-v1";

impl HashedEncoder {
    /// The fingerprint of the settings and the current weights, as 16 hex digits.
    pub(super) fn compute_fingerprint(&self) -> Result<String> {
        let mut h = Hasher64::new();
        h.update_framed(FINGERPRINT_TAG);
        // The seed only chooses the initial weights, which are hashed below: it is left out
        // so that loaded weights fingerprint the same whatever seed the encoder was built with.
        let settings = HashedEncoderConfig {
            seed: 0,
            ..self.cfg.clone()
        };
        let json = serde_json::to_vec(&settings)
            .map_err(|e| Error::Setting(format!("hashed encoder config: {e}")))?;
        h.update_framed(&json);
        let (ua, ub, uc) = std::char::UNICODE_VERSION;
        h.update(&[ua, ub, uc]);
        // Every variable of the VarMap, in name order (not just the three we know of, so
        // that anything a later change adds is covered too).
        let mut vars: Vec<(String, Var)> = {
            let data = self
                .varmap
                .data()
                .lock()
                .map_err(|_| Error::Setting("VarMap lock poisoned".into()))?;
            data.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        h.update_u64(vars.len() as u64);
        for (name, var) in vars {
            h.update_framed(name.as_bytes());
            h.update_framed(var.dtype().as_str().as_bytes());
            h.update_u64(var.rank() as u64);
            for &d in var.dims() {
                h.update_u64(d as u64);
            }
            let digests = tensor_digests(var.as_tensor())?;
            for digest in digests {
                h.update_u64(digest);
            }
        }
        Ok(format!("{:016x}", h.finish()))
    }
}

/// The digests of a weight tensor's values as f32, one per block of
/// [`FINGERPRINT_BLOCK`] values, read in place when the tensor is a contiguous f32 CPU
/// tensor. Every encoder fingerprints its weights with it.
pub(crate) fn tensor_digests(t: &Tensor) -> Result<Vec<u64>> {
    Ok(match with_cpu_f32(t, block_digests) {
        Some(digests) => digests,
        None => {
            let values: Vec<f32> = t
                .detach()
                .to_dtype(DType::F32)?
                .flatten_all()?
                .host_vec1()?;
            block_digests(&values)
        }
    })
}

/// `hash64` of the little-endian bytes of each block of [`FINGERPRINT_BLOCK`] values, in
/// order. Blocks are hashed four at a time ([`hash64_x4`]) and groups spread over threads;
/// neither changes the digests.
fn block_digests(values: &[f32]) -> Vec<u64> {
    let blocks: Vec<&[f32]> = values.chunks(FINGERPRINT_BLOCK).collect();
    let mut groups: Vec<(&[&[f32]], [u64; 4])> = blocks.chunks(4).map(|g| (g, [0; 4])).collect();
    par_for_each(&mut groups, |_, (group, out)| {
        let bytes: Vec<Vec<u8>> = group
            .iter()
            .map(|b| b.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        if bytes.len() == 4 && bytes.iter().all(|b| b.len() == bytes[0].len()) {
            *out = hash64_x4([&bytes[0], &bytes[1], &bytes[2], &bytes[3]]);
        } else {
            for (o, b) in out.iter_mut().zip(&bytes) {
                *o = hash64(b);
            }
        }
    });
    groups
        .into_iter()
        .flat_map(|(g, out)| out.into_iter().take(g.len()))
        .collect()
}
