//! Exact maximum-inner-product search over an embedding cache, and hard-negative sampling.
//!
//! [`top_k`] scores a batch of queries against every row of a cache and returns, per
//! query, the `k` best `(index, score)` pairs. It is exact (brute force): the cache is
//! small enough (about 117k × 128 when training, 200k × 384 in the benchmark) that a
//! matmul beats any approximate index, and training must see the true top-k of the
//! (corrected) cache. [`NegativeSampler`] builds the training negatives on top of it.
//!
//! # How it is computed
//!
//! * The cache is walked in chunks of `chunk` rows (default [`DEFAULT_CHUNK`]). Each chunk
//!   is scored with one candle matmul `queries.matmul(&chunk.t())`: the chunk stays a
//!   contiguous `(rows, d)` view and `.t()` is a strided view, which gemm handles without a
//!   copy. That layout measured faster than a pre-transposed `(d, N)` copy (see the top-k
//!   section of `notes/stack.md`).
//! * The `(b, rows)` score block is read in place as a flat `&[f32]` (no copy on the CPU)
//!   and each query's row is fed to a bounded selector (`select.rs`): a threshold and a
//!   small buffer, never a sort of the whole row. Rows are scanned in parallel on scoped
//!   threads (the matmul itself is parallelised by gemm).
//! * Memory is bounded by one score block, `b × chunk` f32, whatever `N`.
//! * On a GPU the block stays on the device: only per-group maxima and the groups that can
//!   hold a winner are copied to the host (`grouped.rs`, exact, ties included).
//!
//! # Order and ties
//!
//! Results are sorted by score descending, ties by lower index, exactly as a full sort of
//! the row by `(−score, index)` would give (tested against one). Scores are compared as
//! f32 (other float dtypes are converted after the matmul). NaN scores are never returned.
//! Note that gemm's summation order depends on the matrix shapes, so the same pair can get
//! scores differing in the last bit with another `chunk` or batch size; near-ties may then
//! swap. Integer-valued data (exact in any order) has no such effect.

mod grouped;
mod sampler;
mod select;
#[cfg(test)]
mod tests;

pub use sampler::{merge_top, NegativeSampler, Strategy};

use crate::host::HostRead;
use candle_core::{DType, Tensor};

use crate::host::with_cpu_f32;
use crate::{Error, Result};
use select::Selector;

/// Default cache rows scored per matmul: 65,536. With a batch of 64 queries a score block
/// is 64 × 65,536 f32 = 16 MiB, small next to the cache itself (117k × 128 f32 = 57 MiB,
/// 200k × 384 = 293 MiB), and large enough that gemm runs at full speed and the per-chunk
/// overhead (thread spawns, one matmul call) is negligible. Larger batches may want a
/// smaller chunk to keep `b × chunk` bounded.
pub const DEFAULT_CHUNK: usize = 65_536;

/// Below this many scores in a block, rows are scanned on the calling thread (spawning
/// threads would cost more than the scan).
const PARALLEL_MIN_SCORES: usize = 1 << 15;

/// Scores of `queries` `(b, d)` against `cache` `(N, d)` by inner product, computed `chunk`
/// cache rows at a time (never a full `b × N` matrix unless it fits in `chunk`), returning
/// per query the top `k` `(index, score)` sorted by score descending, ties by lower index.
///
/// `exclude[i]` lists indices never returned for query `i` (its positives; order,
/// duplicates and out-of-range indices do not matter); an empty `exclude` slice excludes
/// nothing for every query. A query gets fewer than `k` results when fewer than `k`
/// indices remain after exclusion. `k = 0` returns empty lists without scoring.
///
/// # Errors
/// If the tensors are not two-dimensional with the same width, dtype (a float) and device,
/// if `exclude` is neither empty nor `b` long, if `chunk` is 0, if `N` does not fit in a
/// `u32` index, or if a tensor operation fails.
pub fn top_k(
    queries: &Tensor,
    cache: &Tensor,
    k: usize,
    exclude: &[Vec<u32>],
    chunk: usize,
) -> Result<Vec<Vec<(u32, f32)>>> {
    #[cfg(feature = "cuda")]
    if cache.device().is_cuda()
        && queries.dtype() == DType::F32
        && cache.dtype() == DType::F32
        && k <= crate::backend::cuda::MAX_K
    {
        check_inputs(queries, cache, exclude, chunk)?;
        return crate::backend::cuda::top_k(&queries.contiguous()?, cache, k, exclude, chunk);
    }
    top_k_as(queries, cache, k, exclude, chunk, !cache.device().is_cpu())
}

/// [`top_k`], with the score blocks read through group maxima ([`grouped`]) or in place
/// on the host. The tests run the device path on the CPU through this.
fn top_k_as(
    queries: &Tensor,
    cache: &Tensor,
    k: usize,
    exclude: &[Vec<u32>],
    chunk: usize,
    by_groups: bool,
) -> Result<Vec<Vec<(u32, f32)>>> {
    let (b, n) = check_inputs(queries, cache, exclude, chunk)?;
    let k = k.min(n);
    if k == 0 || b == 0 {
        return Ok(vec![Vec::new(); b]);
    }
    let mut selectors: Vec<Selector> = (0..b)
        .map(|i| Selector::new(k, exclude.get(i).map_or(&[][..], Vec::as_slice)))
        .collect();
    let queries = queries.contiguous()?;
    let mut start = 0;
    while start < n {
        let rows = chunk.min(n - start);
        // `contiguous` is free for a contiguous cache; otherwise it copies only this chunk.
        let block = cache.narrow(0, start, rows)?.contiguous()?;
        let scores = queries.matmul(&block.t()?)?;
        let scores = if scores.dtype() == DType::F32 {
            scores
        } else {
            scores.to_dtype(DType::F32)?
        };
        let base = start as u32;
        if by_groups {
            grouped::scan_block(&mut selectors, &scores, k, exclude, base)?;
        } else {
            let scanned = with_cpu_f32(&scores, |flat| scan_rows(&mut selectors, flat, rows, base));
            if scanned.is_none() {
                // Not reachable for a fresh matmul output, but stay correct if candle changes.
                let flat = scores.flatten_all()?.host_vec1::<f32>()?;
                scan_rows(&mut selectors, &flat, rows, base);
            }
        }
        start += rows;
    }
    Ok(selectors.into_iter().map(Selector::finish).collect())
}

/// Validates the arguments of [`top_k`]; returns `(b, N)`.
fn check_inputs(
    queries: &Tensor,
    cache: &Tensor,
    exclude: &[Vec<u32>],
    chunk: usize,
) -> Result<(usize, usize)> {
    let setting = |m: String| Err(Error::Setting(m));
    let (Ok((b, d)), Ok((n, dc))) = (queries.dims2(), cache.dims2()) else {
        return setting(format!(
            "search needs queries (b, d) and a cache (N, d), got {:?} and {:?}",
            queries.dims(),
            cache.dims()
        ));
    };
    if d != dc {
        return setting(format!("queries are {d} wide but the cache is {dc} wide"));
    }
    if queries.dtype() != cache.dtype() || !queries.dtype().is_float() {
        return setting(format!(
            "queries ({:?}) and cache ({:?}) must share one float dtype",
            queries.dtype(),
            cache.dtype()
        ));
    }
    if !queries.device().same_device(cache.device()) {
        return setting("queries and cache are on different devices".into());
    }
    if !exclude.is_empty() && exclude.len() != b {
        return setting(format!(
            "{} exclusion lists for {b} queries (give one per query, or none)",
            exclude.len()
        ));
    }
    if chunk == 0 {
        return setting("the search chunk must be at least 1 row".into());
    }
    if n > u32::MAX as usize {
        return setting(format!("a cache of {n} rows does not fit u32 indices"));
    }
    Ok((b, n))
}

/// Feeds row `i` of the flat `(selectors.len(), rows)` block `flat` to `selectors[i]`,
/// spreading rows over threads when the block is large.
fn scan_rows(selectors: &mut [Selector], flat: &[f32], rows: usize, base: u32) {
    debug_assert_eq!(flat.len(), selectors.len() * rows);
    let threads = threads().min(selectors.len());
    if threads <= 1 || flat.len() < PARALLEL_MIN_SCORES {
        for (sel, row) in selectors.iter_mut().zip(flat.chunks_exact(rows)) {
            sel.scan(row, base);
        }
        return;
    }
    let per = selectors.len().div_ceil(threads);
    std::thread::scope(|s| {
        for (group, block) in selectors.chunks_mut(per).zip(flat.chunks(per * rows)) {
            s.spawn(move || {
                for (sel, row) in group.iter_mut().zip(block.chunks_exact(rows)) {
                    sel.scan(row, base);
                }
            });
        }
    });
}

/// Worker threads for the row scan.
fn threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(16)
}
