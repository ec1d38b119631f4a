//! Weight files: safetensors with the model's settings beside the weights, written
//! atomically and checked whole before anything is changed.
//!
//! A saved model is its variables under their names, plus one extra u8 tensor holding its
//! config as JSON, so a file can be refused when it was saved for another shape. Plain
//! `VarMap::load` still reads such files (it ignores the extra tensor).

use crate::host::HostRead;
use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor, Var};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

fn file_err(path: &Path, message: String) -> Error {
    Error::ModelFile {
        path: path.to_path_buf(),
        message,
    }
}

/// Writes `vars` and `config` (as the u8 tensor `config_tensor`) to `path`, through a
/// temporary file that is renamed into place, so a crash never leaves half a file.
pub(crate) fn save<C: Serialize>(
    path: &Path,
    vars: &[(&str, &Var)],
    config_tensor: &str,
    config: &C,
) -> Result<()> {
    let mut tensors: HashMap<String, Tensor> = vars
        .iter()
        .map(|(name, v)| (name.to_string(), v.as_tensor().detach()))
        .collect();
    let json = serde_json::to_vec(config)
        .map_err(|e| file_err(path, format!("cannot serialise config: {e}")))?;
    let len = json.len();
    tensors.insert(
        config_tensor.to_string(),
        Tensor::from_vec(json, len, &crate::device::cpu())?,
    );
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".partial");
    let tmp = std::path::PathBuf::from(tmp);
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| file_err(path, format!("cannot write: {e}")))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        file_err(
            path,
            format!("cannot move {} into place: {e}", tmp.display()),
        )
    })
}

/// A weight file read but not yet applied: its tensors and the config it was saved with.
pub(crate) struct Loaded<C> {
    tensors: HashMap<String, Tensor>,
    /// The config saved in the file, if it has one.
    pub config: Option<C>,
}

/// Reads `path`, with the config from the u8 tensor `config_tensor` if present.
pub(crate) fn read<C: DeserializeOwned>(path: &Path, config_tensor: &str) -> Result<Loaded<C>> {
    let tensors = candle_core::safetensors::load(path, &crate::device::cpu())
        .map_err(|e| file_err(path, format!("cannot read: {e}")))?;
    let config = match tensors.get(config_tensor) {
        Some(t) => {
            let bytes: Vec<u8> = t
                .flatten_all()
                .and_then(|t| t.host_vec1())
                .map_err(|e| file_err(path, format!("bad {config_tensor}: {e}")))?;
            Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| file_err(path, format!("bad {config_tensor}: {e}")))?,
            )
        }
        None => None,
    };
    Ok(Loaded { tensors, config })
}

/// An error about the file `path` (for config mismatches found by the caller).
pub(crate) fn mismatch(path: &Path, message: String) -> Error {
    file_err(path, message)
}

impl<C> Loaded<C> {
    /// Sets every variable of `vars` from the file, converted to the variable's dtype and
    /// device, after checking that each is present, of an `accepted` dtype and of the
    /// variable's shape: nothing is changed unless all of them check out.
    pub(crate) fn apply(
        &self,
        path: &Path,
        vars: &[(&str, &Var)],
        accepted: &[DType],
    ) -> Result<()> {
        let mut checked = Vec::with_capacity(vars.len());
        for (name, var) in vars {
            let t = self
                .tensors
                .get(*name)
                .ok_or_else(|| file_err(path, format!("no tensor named {name}")))?;
            if !accepted.contains(&t.dtype()) {
                return Err(file_err(
                    path,
                    format!("{name} is {:?}, expected F32", t.dtype()),
                ));
            }
            if t.dims() != var.dims() {
                return Err(file_err(
                    path,
                    format!("{name} has shape {:?}, expected {:?}", t.dims(), var.dims()),
                ));
            }
            checked.push((var, t.to_dtype(var.dtype())?.to_device(var.device())?));
        }
        for (var, t) in checked {
            var.set(&t)?;
        }
        Ok(())
    }
}
