//! Training: what a differentiable forward records, the gradients it gives back, and the
//! optimiser that applies them.
//!
//! # Why backward is split from the loss
//!
//! In freshen the forward pass of a model and the loss that judges its output run in
//! different operators of the dataflow: `encode` embeds, `loss` scores, `update` steps. Only
//! embedding *values* travel between them. So the loss computes the gradient of the loss
//! with respect to each embedding row (`grad_out`), and the model's parameters get theirs
//! from the forward's [`Recorded`] graph as a vector-Jacobian product:
//! `∂/∂θ Σ output ⊙ grad_out`, which is exactly `∂ loss/∂θ` by the chain rule
//! ([`Trainable::backward`]). Stop-gradients are then structural: a loss term can only
//! reach the models whose outputs it was given.
//!
//! # Sparse rows
//!
//! An embedding table (the hashed encoder's 2^18 × 256 bag) is touched in a few thousand
//! rows per step. A dense gradient of it would cost a quarter of a gigabyte of zeros per
//! step, and a dense Adam step over it far more than the rest of training. Such a
//! parameter's gradient is therefore [`Grad::Rows`]: the touched row ids and their
//! gradients, and [`AdamW`] updates only those rows ("lazy" Adam, as PyTorch's SparseAdam).

mod adamw;
mod fused;
mod grads;
mod moments;
mod schedule;

pub use adamw::{AdamW, AdamWConfig, NamedMoments};
#[cfg(feature = "cuda")]
pub(crate) use fused::Step as FusedStep;
pub use grads::{Grad, Gradients, HostGrad};
pub use schedule::{Decay, Schedule};

use candle_core::{Tensor, Var};

use crate::Result;

/// A forward pass kept for its backward: the output with its autograd graph, and, for a
/// model with a row-sparse table, the leaf that stands for the gathered table rows.
pub struct Recorded {
    /// The output, `(rows, dim)`, whose graph reaches the dense parameters.
    pub output: Tensor,
    /// The gathered-rows leaf of a row-sparse table, if the model has one.
    pub rows: Option<RowLeaf>,
}

/// The table rows a forward gathered, as a leaf of the graph: row `owner[j]` of `leaf`
/// received table row `ids[j]`, so its gradient flows back to that table row.
pub struct RowLeaf {
    /// Name of the table parameter.
    pub param: String,
    /// `(rows, width)`: per output row, the sum of its gathered table rows.
    pub leaf: Var,
    /// Table row of each gathered feature.
    pub ids: Vec<u32>,
    /// Output row each gathered feature was added into.
    pub owner: Vec<u32>,
}

/// A model whose parameters a training step updates.
pub trait Trainable {
    /// The parameters by name (the names of saved files), in a fixed order.
    fn params(&self) -> Vec<(String, Var)>;

    /// Names of the parameters whose gradients come as [`Grad::Rows`].
    fn sparse_params(&self) -> Vec<String> {
        Vec::new()
    }

    /// Gradients of `Σ recorded.output ⊙ grad_out` with respect to the parameters: the
    /// parameters' share of a loss whose gradient with respect to the output is
    /// `grad_out` (the chain rule).
    fn backward(&self, recorded: &Recorded, grad_out: &Tensor) -> Result<Gradients> {
        backward_recorded(&self.params(), recorded, grad_out)
    }

    /// A copy of every parameter's current value (for keeping the best step).
    fn snapshot(&self) -> Result<Vec<(String, Tensor)>> {
        self.params()
            .into_iter()
            .map(|(name, v)| Ok((name, v.as_tensor().copy()?)))
            .collect()
    }

    /// Sets the parameters to a [`Trainable::snapshot`] of the same model.
    fn restore(&self, snapshot: &[(String, Tensor)]) -> Result<()> {
        for ((name, var), (saved, value)) in self.params().iter().zip(snapshot) {
            if name != saved {
                return Err(crate::Error::Setting(format!(
                    "snapshot holds {saved} where the model has {name}"
                )));
            }
            var.set(value)?;
        }
        Ok(())
    }
}

/// A text encoder that trains: what `encode` nodes of a training pipeline run.
pub trait TrainableEncoder: crate::Encoder + Trainable {
    /// Differentiable forward of `texts`: the same vectors as `encode`, kept for
    /// [`Trainable::backward`].
    fn forward_train(&self, texts: &[&str]) -> Result<Recorded>;

    /// An independent copy with the same weights (another worker's replica).
    fn replica(&self) -> Result<Box<dyn TrainableEncoder>>;

    /// Writes the weights as safetensors (atomically).
    fn save(&self, path: &std::path::Path) -> Result<()>;

    /// Writes a checkpoint named `name` into the folder `dir` and returns its path: by
    /// default the file `dir/name.safetensors`; a model with a folder layout of its own
    /// (sentence-transformers) writes that folder instead.
    fn save_checkpoint(&self, dir: &std::path::Path, name: &str) -> Result<std::path::PathBuf> {
        let path = dir.join(format!("{name}.safetensors"));
        self.save(&path)?;
        Ok(path)
    }

    /// Recomputes the fingerprint after the weights changed.
    fn refresh_fingerprint(&mut self) -> Result<()>;
}

/// The vector-Jacobian product of [`Trainable::backward`] for any recorded forward.
pub fn backward_recorded(
    params: &[(String, Var)],
    recorded: &Recorded,
    grad_out: &Tensor,
) -> Result<Gradients> {
    if recorded.output.elem_count() == 0 {
        return Ok(Gradients::default());
    }
    let surrogate = recorded.output.mul(&grad_out.detach())?.sum_all()?;
    let store = surrogate.backward()?;
    let mut out = Gradients::of_vars(params, &store);
    if let Some(rows) = &recorded.rows {
        if let Some(g) = store.get(rows.leaf.as_tensor()) {
            out.insert(
                rows.param.clone(),
                Grad::rows_from_leaf(&rows.ids, &rows.owner, g)?,
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
