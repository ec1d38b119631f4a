//! Learning-rate schedules: linear warm-up, then constant, linear or cosine decay.

use serde::{Deserialize, Serialize};

/// How the learning rate falls after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// Stays at the peak (the default: decay is asked for, not assumed).
    #[default]
    Constant,
    /// Falls linearly to zero at the last step (BERT's and DPR's schedule).
    Linear,
    /// Half a cosine down to zero at the last step.
    Cosine,
}

/// A multiplier of the peak learning rate for each step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    /// Steps of linear warm-up from 0 to the peak.
    pub warmup: usize,
    /// Total steps of the run.
    pub total: usize,
    /// Decay after warm-up.
    pub decay: Decay,
}

impl Schedule {
    /// The multiplier at `step` (0-based): `(step + 1) / warmup` during warm-up, then the
    /// decay over the remaining steps.
    pub fn factor(&self, step: usize) -> f64 {
        if step < self.warmup {
            return (step + 1) as f64 / self.warmup as f64;
        }
        let span = self.total.saturating_sub(self.warmup).max(1) as f64;
        let done = ((step - self.warmup) as f64 / span).min(1.0);
        match self.decay {
            Decay::Constant => 1.0,
            Decay::Linear => 1.0 - done,
            Decay::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * done).cos()),
        }
    }
}
