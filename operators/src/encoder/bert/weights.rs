//! Reading `model.safetensors` against the config, and writing checkpoints as
//! sentence-transformers folders.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};

use super::config::{file_err, FolderConfig};
use super::model::{expected_shapes, layer_of};
use super::{BertEncoder, BertOptions, Param};
use crate::Result;

/// The weight file of a folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";

/// Tensors of a file that the network does not read, by name (kept for saving).
pub(super) type Extra = Vec<(String, Tensor)>;

/// Reads every tensor the config calls for, checked for presence, dtype and shape before
/// any is used; trainable ones become variables on `device`.
pub(super) fn load(
    folder: &FolderConfig,
    options: &BertOptions,
    device: &Device,
) -> Result<(Vec<Param>, Extra)> {
    let path = folder.dir.join(WEIGHTS_FILE);
    if !path.exists() {
        return Err(file_err(
            &path,
            "missing (every model folder needs its weights)",
        ));
    }
    let raw = candle_core::safetensors::load(&path, &crate::device::cpu())
        .map_err(|e| file_err(&path, format!("cannot read safetensors: {e}")))?;
    // Some checkpoints (BertForMaskedLM and friends) prefix every name with `bert.`.
    let mut tensors: HashMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, v)| (k.strip_prefix("bert.").map(str::to_string).unwrap_or(k), v))
        .collect();
    let layers = folder.bert.num_hidden_layers;
    if options.freeze_layers > layers {
        return Err(crate::Error::Setting(format!(
            "freeze_layers {} is more than the model's {layers} layers",
            options.freeze_layers
        )));
    }
    let mut params = Vec::new();
    for (name, shape) in expected_shapes(&folder.bert) {
        let t = tensors.remove(&name).ok_or_else(|| {
            file_err(
                &path,
                format!("no tensor named {name} (config.json calls for it)"),
            )
        })?;
        if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
            return Err(file_err(
                &path,
                format!("{name} is {:?}, expected a float type", t.dtype()),
            ));
        }
        if t.dims() != shape.as_slice() {
            return Err(file_err(
                &path,
                format!(
                    "{name} has shape {:?}, but config.json implies {:?}",
                    t.dims(),
                    shape
                ),
            ));
        }
        let t = t.to_dtype(DType::F32)?.to_device(device)?;
        let frozen = match layer_of(&name) {
            None => options.freeze_embeddings,
            Some(l) => l < options.freeze_layers,
        };
        params.push(if frozen {
            Param {
                name,
                tensor: t,
                var: None,
            }
        } else {
            let var = Var::from_tensor(&t)?;
            Param {
                name,
                tensor: var.as_tensor().clone(),
                var: Some(var),
            }
        });
    }
    let mut extra: Vec<(String, Tensor)> = tensors.into_iter().collect();
    extra.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((params, extra))
}

/// Checks `model.safetensors` against the config from its header alone (names, shapes,
/// dtypes; no weights read), so that `freshen check` finds a wrong file in milliseconds.
pub fn check_header(folder: &FolderConfig) -> Result<()> {
    let path = folder.dir.join(WEIGHTS_FILE);
    if !path.exists() {
        return Err(file_err(
            &path,
            "missing (every model folder needs its weights)",
        ));
    }
    // SAFETY: the file is only read; a concurrent writer could at worst yield an error.
    let file = unsafe { candle_core::safetensors::MmapedSafetensors::new(&path) }
        .map_err(|e| file_err(&path, format!("cannot read safetensors: {e}")))?;
    let names: HashMap<String, (Vec<usize>, String)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let name = name
                .strip_prefix("bert.")
                .map(str::to_string)
                .unwrap_or(name);
            (name, (view.shape().to_vec(), format!("{:?}", view.dtype())))
        })
        .collect();
    for (name, shape) in expected_shapes(&folder.bert) {
        let (have, dtype) = names.get(&name).ok_or_else(|| {
            file_err(
                &path,
                format!("no tensor named {name} (config.json calls for it)"),
            )
        })?;
        if !matches!(dtype.as_str(), "F32" | "F16" | "BF16") {
            return Err(file_err(
                &path,
                format!("{name} is {dtype}, expected a float type"),
            ));
        }
        if *have != shape {
            return Err(file_err(
                &path,
                format!("{name} has shape {have:?}, but config.json implies {shape:?}"),
            ));
        }
    }
    Ok(())
}

/// See [`BertEncoder::save_folder`].
pub(super) fn save_folder(enc: &BertEncoder, dir: &Path) -> Result<PathBuf> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    let name = dir
        .file_name()
        .ok_or_else(|| file_err(dir, "checkpoint folder needs a name"))?
        .to_string_lossy()
        .to_string();
    let io = |p: &Path, e: std::io::Error| file_err(p, e.to_string());
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let tmp = parent.join(format!(".{name}.partial"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
    }
    copy_tree(&enc.folder.dir, &tmp, &[WEIGHTS_FILE])?;
    let mut tensors: HashMap<String, Tensor> = enc
        .extra
        .iter()
        .map(|(n, t)| (n.clone(), t.clone()))
        .collect();
    for p in &enc.params {
        tensors.insert(
            p.name.clone(),
            p.tensor.detach().to_device(&crate::device::cpu())?,
        );
    }
    let weights = tmp.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights)
        .map_err(|e| file_err(&weights, format!("cannot write: {e}")))?;
    // Replace an older checkpoint only once the new one is complete.
    if dir.exists() {
        let old = parent.join(format!(".{name}.old"));
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
        }
        std::fs::rename(dir, &old).map_err(|e| io(dir, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| io(dir, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| io(dir, e))?;
    }
    Ok(dir.to_path_buf())
}

/// Copies the files of `from` into `to` (recursively), skipping top-level `skip` names.
fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> Result<()> {
    let io = |p: &Path, e: std::io::Error| file_err(p, e.to_string());
    std::fs::create_dir_all(to).map_err(|e| io(to, e))?;
    for entry in std::fs::read_dir(from).map_err(|e| io(from, e))? {
        let entry = entry.map_err(|e| io(from, e))?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let src = entry.path();
        let dst = to.join(&name);
        if src.is_dir() {
            copy_tree(&src, &dst, &[])?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| io(&src, e))?;
        }
    }
    Ok(())
}
