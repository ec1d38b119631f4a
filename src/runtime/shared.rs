//! State every worker of a process shares: the first error, outputs waiting to be
//! committed, per-node counters and progress bars.
//!
//! Operators cannot return errors through timely, so they record the first one here and
//! stop producing; the run then fails as a whole and commits nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::error::Error;
use crate::store::parquet_io::PendingFile;

/// What a node did in a run; printed at the end and returned to callers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Rows the node produced.
    pub rows_out: usize,
    /// Target-encoder forward passes (rows embedded).
    pub encoded: usize,
    /// Rows served from the embedding store without encoding.
    pub reused: usize,
    /// Stored rows whose id is no longer in the corpus.
    pub dropped: usize,
    /// Rows in the store before the run.
    pub stored: usize,
    /// Stored rows whose id is still there with a different text (re-encoded).
    pub replaced: usize,
}

/// Per-process state shared by the workers.
pub struct Shared {
    error: Mutex<Option<Error>>,
    pending: Mutex<Vec<PendingFile>>,
    stats: Mutex<BTreeMap<String, NodeStats>>,
    bars: Option<MultiProgress>,
}

impl Shared {
    /// New shared state; `progress` turns progress bars on (they draw only on a terminal).
    pub fn new(progress: bool) -> Self {
        let bars = progress.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Self {
            error: Mutex::new(None),
            pending: Mutex::new(Vec::new()),
            stats: Mutex::new(BTreeMap::new()),
            bars,
        }
    }

    /// Records `e` unless an earlier error is already recorded.
    pub fn fail(&self, e: Error) {
        if let Ok(mut slot) = self.error.lock() {
            slot.get_or_insert(e);
        }
    }

    /// Whether any operator has failed; operators stop producing once it is true.
    pub fn failed(&self) -> bool {
        self.error.lock().map(|e| e.is_some()).unwrap_or(true)
    }

    /// Takes the recorded error, if any.
    pub fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }

    /// Queues a finished output to be committed if the whole run succeeds.
    pub fn add_pending(&self, p: PendingFile) {
        if let Ok(mut v) = self.pending.lock() {
            v.push(p);
        }
    }

    /// Takes the queued outputs.
    pub fn take_pending(&self) -> Vec<PendingFile> {
        self.pending
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    /// Updates the counters of `node`.
    pub fn count(&self, node: &str, f: impl FnOnce(&mut NodeStats)) {
        if let Ok(mut s) = self.stats.lock() {
            f(s.entry(node.to_string()).or_default());
        }
    }

    /// A snapshot of every node's counters.
    pub fn stats(&self) -> BTreeMap<String, NodeStats> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A progress bar with a rate and an ETA (hidden when bars are off or stderr is no terminal).
    pub fn bar(&self, label: &str, len: u64) -> ProgressBar {
        let Some(multi) = &self.bars else {
            return ProgressBar::hidden();
        };
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:30}] {human_pos}/{human_len} rows, {rate}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.0} rows/s", state.per_sec());
            },
        )
        .progress_chars("=> ");
        let bar = multi.add(ProgressBar::new(len).with_style(style));
        bar.set_prefix(label.to_string());
        bar
    }
}
