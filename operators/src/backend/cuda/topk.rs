//! Exact top-k on CUDA: each chunk of the corpus is scored by one product (cuBLAS), a
//! kernel keeps each query's best k of it, and a second merges that into the running
//! best k; the host reads the result once at the end.
//!
//! The order is the CPU search's (`search::select`): higher score first, ties to the
//! lower row, NaN never kept, a query's excluded rows skipped.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, CudaStorage, WrapErr};
use candle_core::{Device, Storage, Tensor};

use super::{launch, view, MODULE, PTX};
use crate::host::HostRead;
use crate::{Error, Result};

/// The largest k the kernel keeps (`TOPK_MAX` in train.cu).
pub const MAX_K: usize = 128;
/// Threads of the selection kernel's block (`TOPK_THREADS`).
const THREADS: u32 = 128;

/// A running best k: rows and scores, `(queries, k)` each.
struct Best {
    idx: CudaSlice<u32>,
    score: CudaSlice<f32>,
}

/// Each query's best `k` rows of `corpus` by inner product, as `(row, score)` best first:
/// `queries` is `(b, d)`, `corpus` `(n, d)`, both f32 on one CUDA device; `exclude[q]`
/// are rows query `q` never gets; the corpus is scored `chunk` rows at a time.
pub fn top_k(
    queries: &Tensor,
    corpus: &Tensor,
    k: usize,
    exclude: &[Vec<u32>],
    chunk: usize,
) -> Result<Vec<Vec<(u32, f32)>>> {
    let (b, _) = queries.dims2()?;
    let (n, _) = corpus.dims2()?;
    let k = k.min(n);
    if b == 0 || k == 0 {
        return Ok(vec![Vec::new(); b]);
    }
    if k > MAX_K {
        return Err(Error::Setting(format!(
            "CUDA top-k: k is at most {MAX_K}, got {k}"
        )));
    }
    let Device::Cuda(dev) = queries.device() else {
        return Err(Error::Setting("CUDA top-k: CUDA tensors expected".into()));
    };
    let (ex, ex_off) = exclusions(dev, exclude, b)?;
    let mut best: Option<Best> = None;
    for start in (0..n).step_by(chunk.max(1)) {
        let rows = chunk.min(n - start);
        let scores = queries
            .matmul(&corpus.narrow(0, start, rows)?.t()?)?
            .contiguous()?;
        let part = select(dev, &scores, start, k, (&ex, &ex_off))?;
        best = Some(match best {
            None => part,
            Some(run) => merge(dev, &run, &part, b, k)?,
        });
    }
    let best = best.expect("the corpus has rows");
    let wrap = |s: CudaStorage| {
        Tensor::from_storage(
            Storage::Cuda(s),
            b * k,
            candle_core::op::BackpropOp::none(),
            false,
        )
    };
    let idx = wrap(CudaStorage::wrap_cuda_slice(best.idx, dev.clone())).host_vec1::<u32>()?;
    let score = wrap(CudaStorage::wrap_cuda_slice(best.score, dev.clone())).host_vec1::<f32>()?;
    Ok((0..b)
        .map(|q| {
            (q * k..(q + 1) * k)
                .filter(|&i| idx[i] != u32::MAX)
                .map(|i| (idx[i], score[i]))
                .collect()
        })
        .collect())
}

/// Every query's excluded rows, sorted, end to end, and where each query's start (`b + 1`
/// offsets), on the device.
fn exclusions(
    dev: &CudaDevice,
    exclude: &[Vec<u32>],
    b: usize,
) -> Result<(CudaSlice<u32>, CudaSlice<u32>)> {
    let mut flat = Vec::new();
    let mut offsets = vec![0u32];
    for q in 0..b {
        let mut rows = exclude.get(q).cloned().unwrap_or_default();
        rows.sort_unstable();
        rows.dedup();
        flat.extend(rows);
        offsets.push(flat.len() as u32);
    }
    // A zero-length upload has no address: the kernel reads nothing past the offsets.
    if flat.is_empty() {
        flat.push(u32::MAX);
    }
    let stream = dev.cuda_stream();
    Ok((
        stream.clone_htod(&flat).w()?,
        stream.clone_htod(&offsets).w()?,
    ))
}

/// The best `k` of one chunk's scores `(b, rows)`, rows numbered from `base`.
fn select(
    dev: &CudaDevice,
    scores: &Tensor,
    base: usize,
    k: usize,
    (ex, ex_off): (&CudaSlice<u32>, &CudaSlice<u32>),
) -> Result<Best> {
    let (b, cols) = scores.dims2()?;
    let (storage, layout) = scores.storage_and_layout();
    let Storage::Cuda(s) = &*storage else {
        return Err(Error::Setting("CUDA top-k: CUDA scores expected".into()));
    };
    let scores = view(s, layout, "scores")?;
    let stream = dev.cuda_stream();
    // SAFETY: the kernel writes every one of the b × k places.
    let (idx, score) = unsafe {
        (
            stream.alloc::<u32>(b * k).w()?,
            stream.alloc::<f32>(b * k).w()?,
        )
    };
    let f = dev.get_or_load_custom_func("topk_rows_f32", MODULE, PTX)?;
    let (cols32, base32, k32) = (cols as u32, base as u32, k as u32);
    let mut a = f.builder();
    a.arg(&scores)
        .arg(&cols32)
        .arg(&base32)
        .arg(&k32)
        .arg(ex)
        .arg(ex_off);
    a.arg(&idx).arg(&score);
    // SAFETY: the arguments match the kernel's signature.
    unsafe { a.launch(launch(b, THREADS, 0)) }.w()?;
    Ok(Best { idx, score })
}

/// Two sorted best-k lists per query merged into one.
fn merge(dev: &CudaDevice, a: &Best, b: &Best, queries: usize, k: usize) -> Result<Best> {
    let stream = dev.cuda_stream();
    // SAFETY: the kernel writes every one of the queries × k places.
    let (idx, score) = unsafe {
        (
            stream.alloc::<u32>(queries * k).w()?,
            stream.alloc::<f32>(queries * k).w()?,
        )
    };
    let f = dev.get_or_load_custom_func("topk_merge_f32", MODULE, PTX)?;
    let (q32, k32) = (queries as u32, k as u32);
    let mut l = f.builder();
    l.arg(&a.idx)
        .arg(&a.score)
        .arg(&b.idx)
        .arg(&b.score)
        .arg(&q32)
        .arg(&k32);
    l.arg(&idx).arg(&score);
    // SAFETY: the arguments match the kernel's signature.
    unsafe { l.launch(launch(queries.div_ceil(128), 128, 0)) }.w()?;
    Ok(Best { idx, score })
}
