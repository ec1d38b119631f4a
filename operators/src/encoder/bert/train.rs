//! Fine-tuning: the BERT encoder as a [`TrainableEncoder`].

use std::path::{Path, PathBuf};

use candle_core::{Tensor, Var};

use super::{BertEncoder, Param};
use crate::train::{backward_recorded, Gradients, Recorded, Trainable, TrainableEncoder};
use crate::Result;

impl Trainable for BertEncoder {
    /// The weights that train, in file order (frozen ones are left out).
    fn params(&self) -> Vec<(String, Var)> {
        self.params
            .iter()
            .filter_map(|p| p.var.as_ref().map(|v| (p.name.clone(), v.clone())))
            .collect()
    }

    /// The output may live on a GPU while the loss ran on the CPU: `grad_out` follows it.
    fn backward(&self, recorded: &Recorded, grad_out: &Tensor) -> Result<Gradients> {
        let grad_out = grad_out.to_device(recorded.output.device())?;
        backward_recorded(&self.params(), recorded, &grad_out)
    }
}

impl TrainableEncoder for BertEncoder {
    /// The same vectors as `encode`, through the variables, with the graph kept.
    fn forward_train(&self, texts: &[&str]) -> Result<Recorded> {
        Ok(Recorded {
            output: self.embed(&self.train_net, texts)?,
            rows: None,
        })
    }

    /// Trainable weights copied; frozen ones shared (they never change).
    fn replica(&self) -> Result<Box<dyn TrainableEncoder>> {
        let params = self
            .params
            .iter()
            .map(|p| -> Result<Param> {
                Ok(match &p.var {
                    None => p.clone(),
                    Some(v) => {
                        let var = Var::from_tensor(&v.as_tensor().copy()?)?;
                        Param {
                            name: p.name.clone(),
                            tensor: var.as_tensor().clone(),
                            var: Some(var),
                        }
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Self::assemble(
            self.folder.clone(),
            self.options.clone(),
            self.tokenizer.clone(),
            self.device.clone(),
            params,
            self.extra.clone(),
        )?))
    }

    /// Writes a sentence-transformers folder at `path` (see [`BertEncoder::save_folder`]).
    fn save(&self, path: &Path) -> Result<()> {
        self.save_folder(path).map(|_| ())
    }

    /// A folder `dir/name`, loadable by sentence-transformers.
    fn save_checkpoint(&self, dir: &Path, name: &str) -> Result<PathBuf> {
        self.save_folder(&dir.join(name))
    }

    fn refresh_fingerprint(&mut self) -> Result<()> {
        self.fingerprint = self.compute_fingerprint()?;
        Ok(())
    }
}
