//! Embeddings gathered from batches into one row-major matrix in memory, for operators
//! that need a whole set at once (a cache to search, targets to look up) and turn it into
//! tensors on a model's device.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use candle_core::{Device, Tensor};

use crate::error::{Error, Result};
use crate::store::batch;
use crate::store::tables::col;

/// Ids, text hashes and row-major vectors of one width.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingRows {
    /// Row ids.
    pub ids: Vec<String>,
    /// Text hash of each row (0 where the batches had none).
    pub hashes: Vec<u64>,
    /// Row-major values, `ids.len() × dim`.
    pub values: Vec<f32>,
    /// Width of a vector (0 until the first row).
    pub dim: usize,
}

impl EmbeddingRows {
    /// Bytes held: the vectors, the hashes and the ids (with their `String` headers).
    pub fn bytes(&self) -> u64 {
        let ids: usize = self
            .ids
            .iter()
            .map(|i| i.len() + std::mem::size_of::<String>())
            .sum();
        (self.values.len() * 4 + self.hashes.len() * 8 + ids) as u64
    }

    /// A whole table sent as `batches` (a cache version), in id order; empty when they
    /// hold no rows.
    pub fn table(batches: &[crate::store::batch::Batch]) -> Result<Self> {
        let mut rows = Self::default();
        for b in super::rows_of(batches) {
            rows.push(b)?;
        }
        Ok(rows.sorted_by_id())
    }

    /// The rows sorted by id: the order they arrived in depends on how many workers sent
    /// them, and a search or ranking breaks ties of score by row, so in id order every
    /// worker count picks the same.
    pub fn sorted_by_id(self) -> Self {
        let mut order: Vec<usize> = (0..self.ids.len()).collect();
        order.sort_by(|&a, &b| self.ids[a].cmp(&self.ids[b]));
        if order.iter().enumerate().all(|(i, &j)| i == j) {
            return self;
        }
        let d = self.dim;
        Self {
            ids: order.iter().map(|&i| self.ids[i].clone()).collect(),
            hashes: order
                .iter()
                .map(|&i| self.hashes.get(i).copied().unwrap_or(0))
                .collect(),
            values: order
                .iter()
                .flat_map(|&i| self.values[i * d..(i + 1) * d].iter().copied())
                .collect(),
            dim: d,
        }
    }

    /// Appends the rows of an embeddings batch (`id`, `embedding`, and `text_hash` if any).
    pub fn push(&mut self, b: &RecordBatch) -> Result<()> {
        self.push_column(b, col::EMBEDDING)
    }

    /// Appends the rows of `b`, taking the vectors from column `name`.
    pub fn push_column(&mut self, b: &RecordBatch, name: &str) -> Result<()> {
        if b.num_rows() == 0 {
            return Ok(());
        }
        let ids = batch::strings(b, col::ID)?;
        let (values, dim) = batch::vectors_of(b, name)?;
        if self.dim != 0 && dim != self.dim {
            return Err(Error::invariant(format!(
                "vectors of width {dim} among vectors of width {} (expected one width)",
                self.dim
            )));
        }
        self.dim = dim;
        self.ids
            .extend(ids.iter().map(|s| s.unwrap_or_default().to_string()));
        match b
            .column_by_name(col::TEXT_HASH)
            .filter(|c| c.data_type() == &arrow::datatypes::DataType::UInt64)
        {
            Some(_) => self
                .hashes
                .extend(batch::hashes(b)?.values().iter().copied()),
            None => self.hashes.resize(self.ids.len(), 0),
        }
        self.values.extend_from_slice(values);
        Ok(())
    }

    /// The ids and hashes alone (no vectors).
    pub fn clone_keys(&self) -> Self {
        Self {
            ids: self.ids.clone(),
            hashes: self.hashes.clone(),
            values: Vec::new(),
            dim: self.dim,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Row `i`'s vector.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }

    /// The row index of each id (the first, if an id repeats).
    pub fn index(&self) -> HashMap<String, usize> {
        let mut m = HashMap::with_capacity(self.ids.len());
        for (i, id) in self.ids.iter().enumerate() {
            m.entry(id.clone()).or_insert(i);
        }
        m
    }

    /// Rows `rows` as an embeddings batch, with `values` (`rows.len() × dim`, row-major)
    /// in place of the stored vectors when given.
    pub fn batch_of(
        &self,
        rows: std::ops::Range<usize>,
        values: Option<Vec<f32>>,
    ) -> Result<RecordBatch> {
        let d = self.dim;
        let values = values.unwrap_or_else(|| self.values[rows.start * d..rows.end * d].to_vec());
        batch::embeddings_batch(
            self.ids[rows.clone()].to_vec(),
            self.hashes[rows].to_vec(),
            values,
            d,
        )
    }

    /// The table as a `(rows, dim)` tensor.
    pub fn tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(
            &self.values,
            (self.ids.len(), self.dim),
            device,
        )?)
    }

    /// Rows `rows` (by index) as a `(rows.len(), dim)` tensor.
    pub fn gather(&self, rows: &[usize], device: &Device) -> Result<Tensor> {
        let mut v = Vec::with_capacity(rows.len() * self.dim);
        for &r in rows {
            v.extend_from_slice(self.row(r));
        }
        Ok(Tensor::from_vec(v, (rows.len(), self.dim), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::EmbeddingRows;

    #[test]
    fn rows_sort_by_id_with_their_vectors_and_hashes() {
        let rows = EmbeddingRows {
            ids: vec!["b".into(), "c".into(), "a".into()],
            hashes: vec![2, 3, 1],
            values: vec![2.0, 2.5, 3.0, 3.5, 1.0, 1.5],
            dim: 2,
        };
        let sorted = rows.sorted_by_id();
        assert_eq!(sorted.ids, ["a", "b", "c"]);
        assert_eq!(sorted.hashes, [1, 2, 3]);
        assert_eq!(sorted.values, [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]);
        assert_eq!(sorted.dim, 2);
    }
}
