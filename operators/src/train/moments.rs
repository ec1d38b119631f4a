//! AdamW's moments: those of dense f32 CPU parameters in two flat buffers, every other
//! parameter's as tensors of its own shape.
//!
//! ```text
//!  first moments  m: [ w0 ......... | w1 ... | w2 ............... ]
//!  second moments v: [ w0 ......... | w1 ... | w2 ............... ]
//!                      ^ slot(w0)     ^ slot(w1) (offset, shape), in the order first seen
//! ```
//!
//! A step walks the parameters once and updates each one's weights and both its moment
//! slices in one pass; the buffers grow when a parameter gets its first gradient. A
//! checkpoint sees no difference: [`Moments::export`] cuts the buffers into one tensor pair
//! per name, and [`Moments::import`] places them back.

use std::collections::HashMap;

use candle_core::{Device, Tensor};

use super::adamw::NamedMoments;
use crate::host::with_cpu_f32;
use crate::Result;

/// Where a parameter's moments sit in the flat buffers.
#[derive(Debug, Clone)]
struct Slot {
    offset: usize,
    shape: Vec<usize>,
}

impl Slot {
    fn range(&self) -> std::ops::Range<usize> {
        self.offset..self.offset + self.shape.iter().product::<usize>()
    }
}

/// The moments of every parameter an optimiser has stepped.
#[derive(Default)]
pub(super) struct Moments {
    slots: HashMap<String, Slot>,
    m: Vec<f32>,
    v: Vec<f32>,
    /// Moments kept as tensors: row-sparse tables, other dtypes and devices, and every
    /// parameter of the composed reference path.
    tensors: HashMap<String, (Tensor, Tensor)>,
    /// The flat buffers of dense f32 parameters on a CUDA device.
    #[cfg(feature = "cuda")]
    device: DeviceFlat,
}

/// Flat moment buffers on a CUDA device: 1-D f32 tensors the optimiser's kernel writes in
/// place, grown by concatenation when parameters join.
#[cfg(feature = "cuda")]
#[derive(Default)]
struct DeviceFlat {
    slots: HashMap<String, Slot>,
    buffers: Option<(Tensor, Tensor)>,
}

impl Moments {
    /// The flat slices of `name`'s moments, made (zero) with `shape` on first use; `None`
    /// when its moments are tensors.
    pub fn flat(&mut self, name: &str, shape: &[usize]) -> Option<(&mut [f32], &mut [f32])> {
        if self.tensors.contains_key(name) {
            return None;
        }
        let slot = self.slots.entry(name.to_string()).or_insert_with(|| {
            let offset = self.m.len();
            let n: usize = shape.iter().product();
            self.m.resize(offset + n, 0.0);
            self.v.resize(offset + n, 0.0);
            Slot {
                offset,
                shape: shape.to_vec(),
            }
        });
        let r = slot.range();
        Some((&mut self.m[r.clone()], &mut self.v[r]))
    }

    /// The CUDA flat buffers and each of `params`' offsets in them (`params`: a name and
    /// the parameter), made for the parameters not there yet: moved from the host's flat
    /// buffers or from tensors where they were, zero otherwise.
    #[cfg(feature = "cuda")]
    pub fn device_flat(
        &mut self,
        params: &[(&str, &Tensor)],
    ) -> Result<(Tensor, Tensor, Vec<usize>)> {
        let mut parts: (Vec<Tensor>, Vec<Tensor>) = (Vec::new(), Vec::new());
        let mut len = self
            .device
            .buffers
            .as_ref()
            .map_or(0, |(m, _)| m.elem_count());
        for &(name, like) in params {
            if self.device.slots.contains_key(name) {
                continue;
            }
            let (m, v) = match (self.slots.remove(name), self.tensors.remove(name)) {
                (Some(slot), _) => self.cut(&slot, &Device::Cpu)?,
                (None, Some(pair)) => pair,
                (None, None) => (like.zeros_like()?, like.zeros_like()?),
            };
            let shape = like.dims().to_vec();
            parts.0.push(m.flatten_all()?.to_device(like.device())?);
            parts.1.push(v.flatten_all()?.to_device(like.device())?);
            self.device
                .slots
                .insert(name.to_string(), Slot { offset: len, shape });
            len += like.elem_count();
        }
        if !parts.0.is_empty() {
            if let Some((m, v)) = self.device.buffers.take() {
                parts.0.insert(0, m);
                parts.1.insert(0, v);
            }
            let m = Tensor::cat(&parts.0, 0)?.contiguous()?;
            let v = Tensor::cat(&parts.1, 0)?.contiguous()?;
            self.device.buffers = Some((m, v));
        }
        let Some((m, v)) = self.device.buffers.clone() else {
            return Err(crate::Error::Setting("CUDA AdamW: no parameters".into()));
        };
        let offsets = params
            .iter()
            .map(|(name, _)| self.device.slots[*name].offset)
            .collect();
        Ok((m, v, offsets))
    }

    /// `name`'s moments as tensors, made (zeros like `like`) on first use; a parameter
    /// whose moments were flat moves them to tensors on `like`'s device.
    pub fn tensors(&mut self, name: &str, like: &Tensor) -> Result<&mut (Tensor, Tensor)> {
        if !self.tensors.contains_key(name) {
            let pair = match self.slots.remove(name) {
                Some(slot) => {
                    let (m, v) = self.cut(&slot, &Device::Cpu)?;
                    (m.to_device(like.device())?, v.to_device(like.device())?)
                }
                None => (like.zeros_like()?, like.zeros_like()?),
            };
            self.tensors.insert(name.to_string(), pair);
        }
        Ok(self.tensors.get_mut(name).expect("inserted above"))
    }

    fn cut(&self, slot: &Slot, device: &Device) -> Result<(Tensor, Tensor)> {
        let r = slot.range();
        Ok((
            Tensor::from_slice(&self.m[r.clone()], slot.shape.as_slice(), device)?,
            Tensor::from_slice(&self.v[r], slot.shape.as_slice(), device)?,
        ))
    }

    /// Every parameter's moments, as tensors, sorted by name.
    pub fn export(&self) -> Result<NamedMoments> {
        let mut out = Vec::with_capacity(self.slots.len() + self.tensors.len());
        for (name, slot) in &self.slots {
            let (m, v) = self.cut(slot, &Device::Cpu)?;
            out.push((name.clone(), m, v));
        }
        for (name, (m, v)) in &self.tensors {
            out.push((name.clone(), m.copy()?, v.copy()?));
        }
        #[cfg(feature = "cuda")]
        if let Some((m, v)) = &self.device.buffers {
            for (name, slot) in &self.device.slots {
                let r = slot.range();
                let cut = |t: &Tensor| -> Result<Tensor> {
                    Ok(t.narrow(0, r.start, r.len())?
                        .reshape(slot.shape.as_slice())?
                        .copy()?)
                };
                out.push((name.clone(), cut(m)?, cut(v)?));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Moments from [`Moments::export`]: contiguous f32 CPU ones go to the flat buffers
    /// (in name order), the others stay tensors.
    pub fn import(moments: NamedMoments) -> Self {
        let mut out = Self::default();
        for (name, m, v) in moments {
            let shape = m.dims().to_vec();
            let flat = with_cpu_f32(&m, |m| m.to_vec()).zip(with_cpu_f32(&v, |v| v.to_vec()));
            match flat {
                Some((m_vals, v_vals)) if m_vals.len() == v_vals.len() => {
                    let offset = out.m.len();
                    out.m.extend(m_vals);
                    out.v.extend(v_vals);
                    out.slots.insert(name, Slot { offset, shape });
                }
                _ => {
                    out.tensors.insert(name, (m, v));
                }
            }
        }
        out
    }
}
