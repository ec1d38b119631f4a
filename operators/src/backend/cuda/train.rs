//! Training's optimiser kernels on CUDA: one AdamW launch for every dense f32 parameter of
//! a model, and the squared norm of every gradient in one launch and one read.
//!
//! Each parameter is a segment (its weights, its gradient, where its moments start in the
//! flat buffers, its rate); the launch's blocks each take `BLOCK_ELEMS` elements of one
//! segment, so one launch covers tensors of any sizes.

use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DeviceRepr, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{DType, Device, Storage, Tensor};

use super::{launch, MODULE, PTX};
use crate::host::HostRead;
use crate::train::FusedStep;
use crate::{Error, Result};

/// Elements a block takes (the kernel's `BLOCK_ELEMS`).
const BLOCK_ELEMS: usize = 4096;
/// Threads of a block (the norm kernel's shared array is this long).
const THREADS: u32 = 256;

/// One parameter as the kernel reads it (`struct Seg` in train.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Seg {
    w: u64,
    g: u64,
    offset: u64,
    len: u64,
    lr: f32,
    decay: f32,
}

// SAFETY: plain data with the C layout the kernel declares.
unsafe impl DeviceRepr for Seg {}

/// A block's share (`struct Blk` in train.cu).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Blk {
    seg: u32,
    start: u64,
}

// SAFETY: plain data with the C layout the kernel declares.
unsafe impl DeviceRepr for Blk {}

/// Whether the CUDA kernels take these tensors: f32, contiguous, on one CUDA device.
pub(crate) fn applies(tensors: &[&Tensor]) -> bool {
    tensors
        .iter()
        .all(|t| t.device().is_cuda() && t.dtype() == DType::F32 && t.is_contiguous())
}

/// The device address of a contiguous f32 CUDA tensor's first element.
fn address(t: &Tensor) -> Result<u64> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        return Err(Error::Setting(
            "CUDA kernels: a CUDA tensor expected".into(),
        ));
    };
    let slice = s.as_cuda_slice::<f32>()?;
    let stream = s.device.cuda_stream();
    let (ptr, _sync) = slice.device_ptr(&stream);
    Ok(ptr + (layout.start_offset() * 4) as u64)
}

/// The blocks that cover segments of `lens` elements.
fn blocks(lens: &[usize]) -> Vec<Blk> {
    let mut out = Vec::new();
    for (seg, &len) in lens.iter().enumerate() {
        for start in (0..len).step_by(BLOCK_ELEMS) {
            out.push(Blk {
                seg: seg as u32,
                start: start as u64,
            });
        }
    }
    out
}

/// One AdamW step of dense parameters `(weights, gradient, lr)`, each at `offset` in the
/// flat moment buffers `m` and `v` (f32, on the parameters' device), in one launch. The
/// arithmetic is the CPU's fused pass ([`FusedStep`]).
pub(crate) fn adamw_multi(
    params: &[(&Tensor, &Tensor, f64, usize)],
    m: &Tensor,
    v: &Tensor,
    s: &FusedStep,
) -> Result<()> {
    let Some((first, ..)) = params.first() else {
        return Ok(());
    };
    let Device::Cuda(dev) = first.device() else {
        return Err(Error::Setting(
            "CUDA AdamW: CUDA parameters expected".into(),
        ));
    };
    let mut segs = Vec::with_capacity(params.len());
    for &(w, g, lr, offset) in params {
        segs.push(Seg {
            w: address(w)?,
            g: address(g)?,
            offset: offset as u64,
            len: w.elem_count() as u64,
            lr: lr as f32,
            decay: (1.0 - lr * s.weight_decay) as f32,
        });
    }
    let lens: Vec<usize> = segs.iter().map(|s| s.len as usize).collect();
    let blks = blocks(&lens);
    let stream = dev.cuda_stream();
    let segs_d = stream.clone_htod(&segs).w()?;
    let blks_d = stream.clone_htod(&blks).w()?;
    let f = dev.get_or_load_custom_func("adamw_multi_f32", MODULE, PTX)?;
    let (m_ptr, v_ptr) = (address(m)?, address(v)?);
    let (b1, r1) = (s.beta1 as f32, (1.0 - s.beta1) as f32);
    let (b2, r2) = (s.beta2 as f32, (1.0 - s.beta2) as f32);
    let (ic1, ic2, eps) = ((1.0 / s.c1) as f32, (1.0 / s.c2) as f32, s.eps as f32);
    let scale_d = stream.clone_htod(&[s.grad_scale]).w()?;
    let mut a = f.builder();
    a.arg(&segs_d).arg(&blks_d).arg(&m_ptr).arg(&v_ptr);
    a.arg(&b1)
        .arg(&r1)
        .arg(&b2)
        .arg(&r2)
        .arg(&ic1)
        .arg(&ic2)
        .arg(&eps);
    a.arg(&scale_d);
    // SAFETY: the arguments match the kernel's signature; every segment lies inside its
    // tensors and the moment buffers.
    unsafe { a.launch(launch(blks.len(), THREADS, 0)) }.w()?;
    Ok(())
}

/// The squared L2 norm of contiguous f32 CUDA tensors together: one launch for the
/// blocks' f64 partials, one that adds them in block order, and one read.
pub(crate) fn sq_norm(tensors: &[&Tensor]) -> Result<f64> {
    let Some(first) = tensors.first() else {
        return Ok(0.0);
    };
    let Device::Cuda(dev) = first.device() else {
        return Err(Error::Setting("CUDA norm: CUDA tensors expected".into()));
    };
    let mut segs = Vec::with_capacity(tensors.len());
    for t in tensors {
        segs.push(Seg {
            w: 0,
            g: address(t)?,
            offset: 0,
            len: t.elem_count() as u64,
            lr: 0.0,
            decay: 0.0,
        });
    }
    let lens: Vec<usize> = segs.iter().map(|s| s.len as usize).collect();
    let blks = blocks(&lens);
    if blks.is_empty() {
        return Ok(0.0);
    }
    let stream = dev.cuda_stream();
    let segs_d = stream.clone_htod(&segs).w()?;
    let blks_d = stream.clone_htod(&blks).w()?;
    let partial = stream.alloc_zeros::<f64>(blks.len()).w()?;
    let out = stream.alloc_zeros::<f64>(2).w()?;
    let f = dev.get_or_load_custom_func("sq_norm_multi_f32", MODULE, PTX)?;
    let mut a = f.builder();
    a.arg(&segs_d).arg(&blks_d).arg(&partial);
    // SAFETY: the arguments match the kernel's signature.
    unsafe { a.launch(launch(blks.len(), THREADS, 0)) }.w()?;
    let f = dev.get_or_load_custom_func("finish_norm", MODULE, PTX)?;
    let (n, no_clip) = (blks.len() as u32, 0f64);
    let mut a = f.builder();
    a.arg(&partial).arg(&n).arg(&no_clip).arg(&out);
    // SAFETY: the arguments match the kernel's signature.
    unsafe { a.launch(launch(1, 1, 0)) }.w()?;
    let out = Tensor::from_storage(
        Storage::Cuda(candle_core::cuda_backend::CudaStorage::wrap_cuda_slice(
            out,
            dev.clone(),
        )),
        2,
        candle_core::op::BackpropOp::none(),
        false,
    );
    Ok(out.host_vec1::<f64>()?[0])
}
