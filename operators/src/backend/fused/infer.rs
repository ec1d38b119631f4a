//! The inference forward of the whole-layer op ([`super::layer`]): no tape, and shaped
//! for speed where the training forward is shaped for memory.
//!
//! - A batch of several texts is cut into one part per thread ([`parts`]), and each part
//!   runs on its own thread with single-threaded products, so nothing waits on the other
//!   thread between a layer's passes and the element-wise passes run on both threads as
//!   the products do; one thread's product on half the rows runs faster than two threads
//!   sharing one product (`cargo bench -p freshen-operators --bench gemm`).
//! - A call long enough ([`super::LAYOUT_FROM_TOKENS`]) lays each layer's weights out
//!   once ([`pack_transposed`]): the projections transposed to `(n_in, n_out)`, which
//!   gemm reads as they lie instead of packing them every call, and all the layers then
//!   run in one op ([`infer_stack`]), each part from the first layer to the last in the
//!   unpadded layout.
//! - The feed-forward's first product takes its bias and GELU in one pass in place
//!   ([`EncoderLayer::forward_rows`] without its tape).
//!
//! BENCHMARKS.md ("A batch in parts, one a thread") has the before and after.

use candle_core::{Layout, Storage, Tensor};
use gemm::Parallelism;
use rayon::prelude::*;

use super::layer::{
    pack, EncoderLayer, Offsets, Weights, ATTN_OUT, INTER, KEY, OUTPUT, QUERY, VALUE,
};
use super::rows::{pad_into, parallelism, unpad, with_values};
use crate::backend::AttentionShape;

/// The six projections among the sixteen weights.
const PROJECTIONS: [usize; 6] = [QUERY, KEY, VALUE, ATTN_OUT, INTER, OUTPUT];

/// The sixteen weights of one layer packed for inference ([`infer_stack`]): as
/// [`pack`], with the six projections' weights transposed to `(n_in, n_out)`.
pub(crate) fn pack_transposed(weights: &[Tensor]) -> candle_core::Result<Tensor> {
    let laid: Vec<Tensor> = weights
        .iter()
        .enumerate()
        .map(|(k, w)| match PROJECTIONS.contains(&k) {
            true => w.t()?.contiguous(),
            false => Ok(w.clone()),
        })
        .collect::<candle_core::Result<_>>()?;
    pack(&laid)
}

/// The layer's inference forward over the weights as stored (nothing packed, nothing
/// kept): the same arithmetic as the training op, without its tape.
///
/// The batch runs in parts, one a thread (the module's notes).
pub(crate) fn infer(
    x: &Tensor,
    weights: &[Tensor],
    shape: &AttentionShape,
    sizes: (usize, usize, f64),
) -> candle_core::Result<Tensor> {
    let guards: Vec<_> = weights.iter().map(Tensor::storage_and_layout).collect();
    let slices = cpu_slices(&guards)?;
    let Ok(w) = <[&[f32]; 16]>::try_from(slices) else {
        candle_core::bail!("encoder layer: {} weights, not 16", weights.len());
    };
    let (hidden, inter, _) = sizes;
    let offsets = Offsets::new(hidden, inter);
    if w.iter()
        .zip(0..16)
        .any(|(s, k)| s.len() != offsets.at[k + 1] - offsets.at[k])
    {
        candle_core::bail!(
            "encoder layer: weight shapes do not fit hidden {hidden}, intermediate {inter}"
        );
    }
    let w = Weights {
        w,
        transposed: false,
    };
    infer_in_parts(x, &[w], shape, sizes, rayon::current_num_threads())
}

/// Every layer of an inference forward, over each layer's weights as [`pack_transposed`]
/// laid them out: each part of the batch ([`parts`]) goes through all the layers on its
/// thread, in the layers' unpadded layout from the first to the last.
pub(crate) fn infer_stack(
    x: &Tensor,
    packed: &[Tensor],
    shape: &AttentionShape,
    sizes: (usize, usize, f64),
) -> candle_core::Result<Tensor> {
    let offsets = Offsets::new(sizes.0, sizes.1);
    let guards: Vec<_> = packed.iter().map(Tensor::storage_and_layout).collect();
    let mut layers = Vec::with_capacity(packed.len());
    for p in cpu_slices(&guards)? {
        if p.len() != offsets.at[16] {
            candle_core::bail!(
                "encoder layer: {} packed weights do not fit hidden {}, intermediate {}",
                p.len(),
                sizes.0,
                sizes.1
            );
        }
        layers.push(Weights::packed(p, &offsets, true));
    }
    infer_in_parts(x, &layers, shape, sizes, rayon::current_num_threads())
}

/// The values of tensors held by `guards` ([`Tensor::storage_and_layout`]), each of
/// which must be contiguous f32 on the CPU.
fn cpu_slices<'a, G: std::ops::Deref<Target = Storage>>(
    guards: &'a [(G, &Layout)],
) -> candle_core::Result<Vec<&'a [f32]>> {
    let mut slices = Vec::with_capacity(guards.len());
    for (storage, layout) in guards {
        match (&**storage, layout.contiguous_offsets()) {
            (Storage::Cpu(cpu), Some((a, b))) => slices.push(&cpu.as_slice::<f32>()?[a..b]),
            _ => candle_core::bail!("encoder layer: weights must be contiguous on the CPU"),
        }
    }
    Ok(slices)
}

/// The inference forward of `layers` in turn, with the batch cut into at most `threads`
/// parts.
pub(super) fn infer_in_parts(
    x: &Tensor,
    layers: &[Weights],
    shape: &AttentionShape,
    (hidden, inter, eps): (usize, usize, f64),
    threads: usize,
) -> candle_core::Result<Tensor> {
    let x = x.contiguous()?;
    let parts = parts(
        &shape.lengths[..shape.batch.min(shape.lengths.len())],
        threads,
    );
    let text = shape.tokens * hidden;
    let y = with_values(&x, |xs| -> candle_core::Result<Vec<f32>> {
        if xs.len() != shape.batch * text {
            candle_core::bail!(
                "encoder layer: input {:?} does not fit {shape:?}",
                x.shape()
            );
        }
        let mut out = vec![0f32; xs.len()];
        let mut rest = out.as_mut_slice();
        let mut jobs = Vec::with_capacity(parts.len());
        for texts in &parts {
            let (o, tail) = std::mem::take(&mut rest).split_at_mut(texts.len() * text);
            rest = tail;
            jobs.push((texts.clone(), o));
        }
        let par = if parts.len() > 1 {
            Parallelism::None
        } else {
            parallelism()
        };
        jobs.into_par_iter()
            .try_for_each(|(texts, o)| -> candle_core::Result<()> {
                let part = AttentionShape {
                    batch: texts.len(),
                    lengths: shape.lengths[texts.clone()].to_vec(),
                    ..shape.clone()
                };
                let op = EncoderLayer::new(&part, hidden, inter, eps).with_parallelism(par);
                let real = part.real_rows();
                let xs = &xs[texts.start * text..texts.end * text];
                let mut y = unpad(xs, &real, shape.tokens, hidden);
                for w in layers {
                    y = op.forward_rows(&y, w, false)?.0;
                }
                pad_into(o, &y, &real, shape.tokens, hidden);
                Ok(())
            })?;
        Ok(out)
    })??;
    Tensor::from_vec(y, x.shape(), x.device())
}

/// The texts of a batch cut into at most `threads` runs of about equal tokens (its texts
/// are sorted by length, so runs of neighbours are alike); one run when there are fewer
/// texts than threads.
fn parts(lengths: &[usize], threads: usize) -> Vec<std::ops::Range<usize>> {
    let n = lengths.len();
    if threads <= 1 || n < threads {
        return std::iter::once(0..n).collect();
    }
    // prefix[b]: the tokens of texts 0..b.
    let prefix: Vec<usize> = std::iter::once(0)
        .chain(lengths.iter().scan(0, |s, &l| {
            *s += l.max(1);
            Some(*s)
        }))
        .collect();
    let mut out = Vec::with_capacity(threads);
    let mut start = 0;
    for cut in 1..threads {
        // The end nearest the cut's share of the tokens, leaving a text for each later part.
        let share = prefix[n] * cut / threads;
        let end = (start + 1..=n - (threads - cut))
            .min_by_key(|&b| prefix[b].abs_diff(share))
            .unwrap_or(start + 1);
        out.push(start..end);
        start = end;
    }
    out.push(start..n);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch's parts: contiguous, in order, none empty, about equal in tokens, and one
    /// part when the texts are fewer than the threads.
    #[test]
    fn a_batch_is_cut_into_contiguous_parts_of_about_equal_tokens() {
        assert_eq!(parts(&[5, 5, 5, 5], 2), vec![0..2, 2..4]);
        assert_eq!(parts(&[9, 1, 1, 1], 2), vec![0..1, 1..4]);
        assert_eq!(parts(&[1, 1, 1, 9], 2), vec![0..3, 3..4]);
        assert_eq!(parts(&[4, 4, 4], 4), vec![0..3]);
        assert_eq!(parts(&[4, 4, 4], 1), vec![0..3]);
        assert_eq!(parts(&[], 2), vec![0..0]);
        let lengths: Vec<usize> = (0..37).map(|i| 10 + (i * 7) % 50).collect();
        let cut = parts(&lengths, 3);
        assert_eq!(cut.len(), 3);
        assert!(cut
            .windows(2)
            .all(|p| p[0].end == p[1].start && !p[0].is_empty()));
        assert_eq!((cut[0].start, cut[2].end), (0, 37));
        let tokens: Vec<usize> = cut
            .iter()
            .map(|r| lengths[r.clone()].iter().sum())
            .collect();
        let (lo, hi) = (tokens.iter().min().unwrap(), tokens.iter().max().unwrap());
        assert!(hi - lo <= 2 * 59, "{tokens:?}");
    }
}
