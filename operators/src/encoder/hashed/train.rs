//! Training the hashed encoder: a forward whose table gradient comes back as rows.
//!
//! [`HashedEncoder::forward`] gathers table rows with `index_select`, whose backward is a
//! dense `(buckets, bag_dim)` gradient: 256 MiB of mostly zeros per step at the default
//! size. [`HashedEncoder::forward_train`] instead sums each text's rows outside the graph
//! (the same additions as `encode`, so the same bits) and makes the sums a leaf; the
//! gradient of a sum is the gradient of each of its rows, so [`Trainable::backward`]
//! returns the table's gradient as the touched rows only, and [`AdamW`] updates just those.
//!
//! [`AdamW`]: crate::train::AdamW

use candle_core::{DType, Tensor, Var};

use super::embed::bag_sums_cpu;
use super::{HashedEncoder, TABLE};
use crate::train::{Recorded, RowLeaf, Trainable, TrainableEncoder};
use crate::Result;

impl HashedEncoder {
    /// Differentiable forward for training: the same vectors as
    /// [`Encoder::encode`](crate::Encoder::encode), with a graph that reaches
    /// `proj.weight`, `proj.bias` and (as rows) `bag.weight`.
    pub fn forward_train(&self, texts: &[&str]) -> Result<Recorded> {
        let (b, bag_dim, dim) = (texts.len(), self.cfg.bag_dim, self.cfg.dim);
        if b == 0 {
            return Ok(Recorded {
                output: Tensor::zeros((0, dim), DType::F32, &self.device)?,
                rows: None,
            });
        }
        let (ids, owner, counts) = self.batch_features(texts);
        let table = self.table.as_tensor();
        let sums = match bag_sums_cpu(table, &ids, &owner, b, bag_dim) {
            Some(sums) => Tensor::from_vec(sums, (b, bag_dim), &self.device)?,
            None => {
                let idx = Tensor::from_slice(&ids, ids.len(), &self.device)?;
                let own = Tensor::from_slice(&owner, owner.len(), &self.device)?;
                let rows = table.detach().index_select(&idx, 0)?;
                Tensor::zeros((b, bag_dim), DType::F32, &self.device)?.index_add(&own, &rows, 0)?
            }
        };
        let leaf = Var::from_tensor(&sums)?;
        let counts = Tensor::from_vec(counts, (b, 1), &self.device)?;
        let output = self.head(
            leaf.as_tensor(),
            &counts,
            self.weight.as_tensor(),
            self.bias.as_tensor(),
        )?;
        Ok(Recorded {
            output,
            rows: Some(RowLeaf {
                param: TABLE.to_string(),
                leaf,
                ids,
                owner,
            }),
        })
    }
}

impl Trainable for HashedEncoder {
    fn params(&self) -> Vec<(String, Var)> {
        self.named_vars()
            .into_iter()
            .map(|(name, v)| (name.to_string(), v.clone()))
            .collect()
    }

    fn sparse_params(&self) -> Vec<String> {
        vec![TABLE.to_string()]
    }
}

impl TrainableEncoder for HashedEncoder {
    fn forward_train(&self, texts: &[&str]) -> Result<Recorded> {
        HashedEncoder::forward_train(self, texts)
    }

    fn replica(&self) -> Result<Box<dyn TrainableEncoder>> {
        Ok(Box::new(self.deep_copy()?))
    }

    fn save(&self, path: &std::path::Path) -> Result<()> {
        HashedEncoder::save(self, path)
    }

    fn refresh_fingerprint(&mut self) -> Result<()> {
        HashedEncoder::refresh_fingerprint(self)
    }
}

impl HashedEncoder {
    /// An independent copy: the same settings, weights and fingerprint, in new storage.
    pub fn deep_copy(&self) -> Result<Self> {
        let copy = |v: &Var| -> Result<Var> { Ok(Var::from_tensor(&v.as_tensor().copy()?)?) };
        let (table, weight, bias) = (copy(&self.table)?, copy(&self.weight)?, copy(&self.bias)?);
        Self::from_vars(
            self.cfg.clone(),
            &self.device,
            table,
            weight,
            bias,
            self.fingerprint.clone(),
        )
    }
}
