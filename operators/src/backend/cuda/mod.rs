//! freshen's own CUDA kernels (`operators/kernels/train.cu`, compiled to PTX by the
//! crate's build script) and the CUDA backend built on them.
//!
//! ```text
//!   kernels/train.cu ──nvcc --ptx (build.rs)──▶ OUT_DIR/train.ptx ──include_str!──▶ PTX
//!                                                                                  │
//!        loaded once per device (candle's get_or_load_custom_func) ◀───────────────┘
//!        ├─ CudaOps (Kernels): layer norm, GELU and the attention's masked softmax as
//!        │  custom ops with their own backward; the layer composed around them
//!        ├─ train: one AdamW launch for every dense parameter, moments in flat
//!        │  buffers; the gradients' norm in one launch and one read
//!        └─ topk: each query's best k per chunk of scores, merged on the device
//! ```
//!
//! Everything here is f32 (half precision takes candle's ops, [`super::CandleOps`]). The
//! CUDA test binary holds each kernel to the CPU's (f32 to 1e-5) before any benchmark.

mod ops;
mod topk;
mod train;

pub use ops::CudaOps;
pub use topk::{top_k, MAX_K};
pub(crate) use train::{adamw_multi, applies, sq_norm};

use candle_core::cuda_backend::cudarc::driver::{sys, CudaView, LaunchConfig};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::Layout;

/// The kernels' PTX, for the architecture the build named (`CUDA_COMPUTE_CAP`).
pub const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/train.ptx"));

/// The name candle caches the loaded module under.
const MODULE: &str = "freshen-train";

/// Sets `device`'s default memory pool (where candle's stream-ordered allocations come
/// from) to keep freed memory for reuse instead of returning it to the driver.
pub fn keep_freed_memory(device: &CudaDevice) -> candle_core::Result<()> {
    let stream = device.cuda_stream();
    let ctx = stream.context();
    ctx.bind_to_thread().w()?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = u64::MAX;
    // SAFETY: plain driver calls on the bound context's device, with valid out-pointers.
    let status = unsafe {
        match sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) {
            sys::CUresult::CUDA_SUCCESS => sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast(),
            ),
            failed => failed,
        }
    };
    match status {
        sys::CUresult::CUDA_SUCCESS => Ok(()),
        failed => candle_core::bail!("cannot keep the CUDA memory pool's freed memory: {failed:?}"),
    }
}

/// One-dimensional launch settings.
fn launch(grid: usize, block: u32, shared_floats: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (grid as u32, 1, 1),
        block_dim: (block, 1, 1),
        shared_mem_bytes: shared_floats * 4,
    }
}

/// Threads of a one-block-a-row kernel over rows of `n`: a power of two, 32 to 1024.
fn row_threads(n: usize) -> u32 {
    (n.next_power_of_two() as u32).clamp(32, 1024)
}

/// The contiguous f32 elements of a CUDA storage under `layout`.
fn view<'a>(s: &'a CudaStorage, l: &Layout, what: &str) -> candle_core::Result<CudaView<'a, f32>> {
    let slice = s.as_cuda_slice::<f32>()?;
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(slice.slice(a..b)),
        None => candle_core::bail!("{what}: a contiguous f32 tensor expected"),
    }
}

#[cfg(test)]
mod tests;
