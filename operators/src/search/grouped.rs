//! Exact top-k on a device that is not the host: only group maxima and the groups that can
//! hold a winner cross to the host.
//!
//! On the CPU the score block is read in place ([`super::top_k`]). On a GPU, copying every
//! `b × chunk` block to the host costs more than the matmul that made it (a million-row
//! cache and 1,024 queries are 4 GB of scores). So each block is cut into groups of
//! [`GROUP`] consecutive columns and reduced on the device to one maximum per group; the
//! host picks, per query, the groups that can hold one of its top `k`, and only those
//! groups' scores are gathered on the device and copied back, to the same selector the
//! CPU path uses.
//!
//! Why it is exact, ties included: order candidates by (score desc, index asc) and groups
//! by (maximum desc, group asc). If a top-`k` candidate `e` lies in group `G` and `G` is
//! not among the `k` best groups, each of those `k` groups has a maximum element that
//! ranks before `e` (a higher score, or an equal score at a lower index, since an earlier
//! group's indices are all lower), so `e` would not be in the top `k`. Excluded indices
//! can be a group's maximum, so each takes one more group; a NaN maximum (which may hide
//! real scores) takes one more too.

use crate::host::HostRead;
use candle_core::{DType, Tensor};

use super::select::{rank_order, Selector};
use crate::Result;

/// Columns reduced to one maximum. About √(chunk / k) balances the two copies (maxima:
/// `b × chunk / GROUP`; gathered groups: `b × k × GROUP`): 64 for a 65,536-row chunk.
pub(crate) const GROUP: usize = 64;

/// Feeds the top-`k` candidates of the `(b, rows)` f32 `scores` (columns `base..`) to
/// `selectors`, copying to the host only group maxima and the winning groups.
pub(crate) fn scan_block(
    selectors: &mut [Selector],
    scores: &Tensor,
    k: usize,
    exclude: &[Vec<u32>],
    base: u32,
) -> Result<()> {
    let (b, rows) = scores.dims2()?;
    let groups = rows / GROUP;
    let full = groups * GROUP;
    if groups > 0 {
        // A view (no copy) unless the block ends in a partial group.
        let body = scores.narrow(1, 0, full)?.contiguous()?;
        let maxima = body
            .reshape((b, groups, GROUP))?
            .max(2)?
            .to_dtype(DType::F32)?
            .host_vec2::<f32>()?;
        let chosen: Vec<Vec<u32>> = maxima
            .iter()
            .enumerate()
            .map(|(i, m)| best_groups(m, k + exclude.get(i).map_or(0, Vec::len)))
            .collect();
        let width = chosen.iter().map(Vec::len).max().unwrap_or(0);
        if width > 0 {
            // Column indices of each query's chosen groups, padded with group 0 (skipped
            // on the host below).
            let mut index = Vec::with_capacity(b * width * GROUP);
            for c in &chosen {
                for slot in 0..width {
                    let g = c.get(slot).copied().unwrap_or(0) as usize;
                    index.extend((g * GROUP..(g + 1) * GROUP).map(|j| j as u32));
                }
            }
            let index = Tensor::from_vec(index, (b, width * GROUP), scores.device())?;
            let gathered = body
                .gather(&index, 1)?
                .to_dtype(DType::F32)?
                .host_vec2::<f32>()?;
            for ((sel, c), row) in selectors.iter_mut().zip(&chosen).zip(&gathered) {
                // Groups in increasing order, so indices reach the selector increasing.
                for (slot, &g) in c.iter().enumerate() {
                    let values = &row[slot * GROUP..(slot + 1) * GROUP];
                    sel.scan(values, base + g * GROUP as u32);
                }
            }
        }
    }
    if full < rows {
        let rest = scores
            .narrow(1, full, rows - full)?
            .to_dtype(DType::F32)?
            .host_vec2::<f32>()?;
        for (sel, row) in selectors.iter_mut().zip(&rest) {
            sel.scan(row, base + full as u32);
        }
    }
    Ok(())
}

/// The groups that can hold a query's top `k` (`k` already counts its exclusions), in
/// increasing order: the `k` best by (maximum desc, group asc), plus every group whose
/// maximum is NaN.
fn best_groups(maxima: &[f32], k: usize) -> Vec<u32> {
    let mut nan = Vec::new();
    let mut ranked: Vec<(u32, f32)> = Vec::with_capacity(maxima.len());
    for (g, &m) in maxima.iter().enumerate() {
        match m.is_nan() {
            true => nan.push(g as u32),
            false => ranked.push((g as u32, m)),
        }
    }
    if ranked.len() > k && k > 0 {
        ranked.select_nth_unstable_by(k - 1, rank_order);
    }
    ranked.truncate(k);
    let mut out: Vec<u32> = ranked.into_iter().map(|(g, _)| g).chain(nan).collect();
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_groups_keeps_ties_at_the_lower_group_and_every_nan() {
        let m = [1.0, 3.0, 3.0, f32::NAN, 2.0, 3.0];
        assert_eq!(best_groups(&m, 2), vec![1, 2, 3]);
        assert_eq!(best_groups(&m, 0), vec![3]);
        assert_eq!(best_groups(&m, 9), vec![0, 1, 2, 3, 4, 5]);
    }
}
