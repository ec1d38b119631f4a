//! The computation of the vectors: bag sums, mean, projection in fixed-size row blocks,
//! bias and normalisation (see the module docs of the encoder on determinism).

use candle_core::{DType, Tensor};

use super::{HashedEncoder, PROJECTION_BLOCK_ROWS};
use crate::host::with_cpu_f32;
use crate::Result;

/// Epsilon of the normalisation: `x / sqrt(|x|² + EPS²)`.
const NORM_EPS_SQ: f64 = 1e-24;

impl HashedEncoder {
    /// The whole computation with candle ops, on whichever tensors are given (tracked vars
    /// for [`HashedEncoder::forward`], detached ones for [`Encoder::encode`] off the CPU).
    ///
    /// [`Encoder::encode`]: crate::encoder::Encoder::encode
    pub(super) fn embed(
        &self,
        texts: &[&str],
        table: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> Result<Tensor> {
        let (b, bag_dim, dim) = (texts.len(), self.cfg.bag_dim, self.cfg.dim);
        if b == 0 {
            return Ok(Tensor::zeros((0, dim), DType::F32, &self.device)?);
        }
        let (ids, owner, counts) = self.batch_features(texts);
        let total = ids.len();
        let dev = &self.device;
        let ids = Tensor::from_vec(ids, total, dev)?;
        let owner = Tensor::from_vec(owner, total, dev)?;
        let rows = table.index_select(&ids, 0)?; // (total, bag_dim)
                                                 // Per text: 0 + row_1 + row_2 + ... in feature order (candle's CPU index_add).
        let sums = Tensor::zeros((b, bag_dim), DType::F32, dev)?.index_add(&owner, &rows, 0)?;
        let counts = Tensor::from_vec(counts, (b, 1), dev)?;
        self.head(&sums, &counts, weight, bias)
    }

    /// [`HashedEncoder::embed`] without autograd on a CPU table: the bag sums are read
    /// straight from the table's storage instead of gathering a `(features, bag_dim)`
    /// copy, with exactly the additions of candle's CPU `index_add` (a zeroed row, then
    /// each feature row added in feature order), so the bits are the same. `None` when
    /// the batch is empty or the table is not a contiguous f32 CPU tensor.
    fn embed_cpu(
        &self,
        texts: &[&str],
        table: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> Option<Result<Tensor>> {
        let (b, bag_dim) = (texts.len(), self.cfg.bag_dim);
        if b == 0 {
            return None;
        }
        let (ids, owner, counts) = self.batch_features(texts);
        let sums = bag_sums_cpu(table, &ids, &owner, b, bag_dim)?;
        let run = || {
            let sums = Tensor::from_vec(sums, (b, bag_dim), &self.device)?;
            let counts = Tensor::from_vec(counts, (b, 1), &self.device)?;
            self.head(&sums, &counts, weight, bias)
        };
        Some(run())
    }

    /// Mean, projection in fixed-size row blocks, bias, normalisation.
    pub(super) fn head(
        &self,
        sums: &Tensor,
        counts: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> Result<Tensor> {
        let b = sums.dim(0)?;
        let bag = sums.broadcast_div(counts)?;
        // Projection in fixed-size row blocks (see the module docs on determinism).
        let wt = weight.t()?; // (bag_dim, dim) view
        let mut blocks = Vec::with_capacity(b.div_ceil(PROJECTION_BLOCK_ROWS));
        for start in (0..b).step_by(PROJECTION_BLOCK_ROWS) {
            let len = PROJECTION_BLOCK_ROWS.min(b - start);
            let block = bag.narrow(0, start, len)?;
            if len == PROJECTION_BLOCK_ROWS {
                blocks.push(block.matmul(&wt)?);
            } else {
                let padded = block.pad_with_zeros(0, 0, PROJECTION_BLOCK_ROWS - len)?;
                blocks.push(padded.matmul(&wt)?.narrow(0, 0, len)?);
            }
        }
        let projected = if blocks.len() == 1 {
            blocks.pop().expect("one block")
        } else {
            Tensor::cat(&blocks, 0)?
        };
        let out = projected.broadcast_add(bias)?;
        if !self.cfg.normalize {
            return Ok(out);
        }
        let norm = out
            .sqr()?
            .sum_keepdim(1)?
            .affine(1.0, NORM_EPS_SQ)?
            .sqrt()?;
        Ok(out.broadcast_div(&norm)?)
    }

    /// One chunk of [`Encoder::encode`].
    ///
    /// [`Encoder::encode`]: crate::encoder::Encoder::encode
    pub(super) fn encode_chunk(
        &self,
        texts: &[&str],
        table: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
    ) -> Result<Tensor> {
        match self.embed_cpu(texts, table, weight, bias) {
            Some(result) => result,
            None => self.embed(texts, table, weight, bias),
        }
    }
}

/// Per text, the sum of its features' table rows, read straight from a contiguous f32 CPU
/// table with exactly the additions of candle's CPU `index_add` (a zeroed row, then each
/// feature row in feature order). `None` when the table is elsewhere.
pub(super) fn bag_sums_cpu(
    table: &Tensor,
    ids: &[u32],
    owner: &[u32],
    texts: usize,
    bag_dim: usize,
) -> Option<Vec<f32>> {
    with_cpu_f32(table, |data| {
        let mut sums = vec![0f32; texts * bag_dim];
        for (&id, &text) in ids.iter().zip(owner) {
            let row = &data[id as usize * bag_dim..(id as usize + 1) * bag_dim];
            let acc = &mut sums[text as usize * bag_dim..(text as usize + 1) * bag_dim];
            for (a, &x) in acc.iter_mut().zip(row) {
                *a += x;
            }
        }
        sums
    })
}
