//! What a training graph does, decided once when the graph is checked.
//!
//! A training graph has one `update` node. It trains the models whose outputs its `loss`
//! reads (the query tower, the target tower, the corrector), and every node that uses one
//! of those models must wait, at step `t + 1`, until `update` has finished step `t`: the
//! runtime closes that loop with a feedback edge (drawn dashed by `freshen graph`). The
//! node that trains computes this analysis ([`super::NodeKind::training`]); every
//! operator reads its decisions here rather than making its own.

use std::collections::{BTreeMap, BTreeSet};

/// The decisions of a training graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Training {
    /// The `update` node.
    pub update: usize,
    /// The `loss` node it reads.
    pub loss: usize,
    /// The `source` of training pairs (one batch per step).
    pub pairs: usize,
    /// Models the update node trains (named, not frozen).
    pub trained: BTreeSet<String>,
    /// Nodes that use a trained model, hence wait for the previous step's update.
    pub gated: BTreeSet<usize>,
    /// Nodes whose forwards `update` differentiates (they keep them on the tape).
    pub recorded: BTreeSet<usize>,
    /// Cache nodes that re-embed the corpus, with their period in steps.
    pub refresh_every: BTreeMap<usize, usize>,
    /// Whether the loss trains a corrector (it does not when the cache it corrects
    /// refreshes: a refreshed cache is fresh).
    pub corrector_trains: bool,
    /// β of the loss (also the temperature of the evaluation's diagnostics).
    pub beta: f64,
    /// When resumable checkpoints are written (see [`Resumable`]).
    pub resumable: Resumable,
}

/// When a training run writes resumable checkpoints: every `every` steps, or the first
/// step past `minutes` since the last one, and after the last step (by time alone, only
/// past a minute since the last one); only at steps where a resumed run computes what
/// the uninterrupted run does (see [`Resumable::at`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Resumable {
    /// Steps between checkpoints (`None`: by time only).
    pub every: Option<usize>,
    /// Minutes between checkpoints (`None`: by steps only).
    pub minutes: Option<f64>,
    /// `(from, every)`: a step `s` is resumable only if `s < from` or `(s - from)` is a
    /// multiple of `every` for each entry: the steps where a corrector is applied to the
    /// whole cache, and where a cache refreshes, so that the state at `s` is computed
    /// again from the checkpoint rather than carried.
    pub cadences: Vec<(usize, usize)>,
}

impl Resumable {
    /// Whether a run can resume at step `s` (before it is trained).
    pub fn at(&self, s: usize) -> bool {
        self.cadences
            .iter()
            .all(|&(from, every)| s < from || (s - from).is_multiple_of(every.max(1)))
    }
}

impl Training {
    /// Whether `update` trains model `name`.
    pub fn trains(&self, name: &str) -> bool {
        self.trained.contains(name)
    }

    /// Whether node `i` keeps its forwards for `update`.
    pub fn records(&self, i: usize) -> bool {
        self.recorded.contains(&i)
    }

    /// Whether node `i` waits for the previous step's update.
    pub fn is_gated(&self, i: usize) -> bool {
        self.gated.contains(&i)
    }

    /// The refresh period of cache node `i`, if it refreshes.
    pub fn refresh(&self, i: usize) -> Option<usize> {
        self.refresh_every.get(&i).copied()
    }
}
