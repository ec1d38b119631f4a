//! State every worker of a process shares: the first error, outputs waiting to be
//! committed, per-node counters, the ledger of target-encoder forwards, and progress.
//!
//! Operators cannot return errors through timely, so they record the first one here and
//! stop producing; the run then fails as a whole and commits nothing.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::held::{peak_rss_bytes, Held};
use super::progress::Progress;
use crate::error::Error;
use crate::store::parquet_io::PendingFile;

/// What a node did in a run; printed at the end and returned to callers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// Training steps whose update was skipped (a non-finite loss or gradient norm, with
    /// `on_nonfinite: skip`).
    #[serde(default)]
    pub skipped: usize,
}

/// Per-process state shared by the workers.
pub struct RunState {
    error: Mutex<Option<Error>>,
    pending: Mutex<Vec<PendingFile>>,
    stats: Mutex<BTreeMap<String, NodeStats>>,
    ledger: Mutex<BTreeMap<String, (u64, f64)>>,
    /// The part of the ledger this process has already sent to the leader's.
    sent: Mutex<BTreeMap<String, (u64, f64)>>,
    /// Whether this process holds worker 0 (whose ledger is the run's).
    leads: bool,
    /// This process's index among the run's processes.
    process: usize,
    /// Shard sizes per worker and peak memory per process (this one's, and the others'
    /// as they sent them).
    held: Mutex<Held>,
    /// Seconds of earlier runs this one resumes.
    offset: Mutex<f64>,
    summary: Mutex<Option<arrow::array::RecordBatch>>,
    started: std::time::Instant,
    progress: Progress,
}

impl RunState {
    /// New shared state; `bars` draws progress bars (on a terminal), otherwise `every`
    /// seconds a progress line is logged.
    pub fn new(bars: bool, every: Option<f64>) -> Self {
        Self {
            error: Mutex::new(None),
            pending: Mutex::new(Vec::new()),
            stats: Mutex::new(BTreeMap::new()),
            ledger: Mutex::new(BTreeMap::new()),
            sent: Mutex::new(BTreeMap::new()),
            leads: true,
            process: 0,
            held: Mutex::new(Held::default()),
            summary: Mutex::new(None),
            started: std::time::Instant::now(),
            offset: Mutex::new(0.0),
            progress: Progress::new(bars, every),
        }
    }

    /// Progress reporting.
    pub fn progress(&self) -> &Progress {
        &self.progress
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

    /// Adds `n` target-encoder forward passes taking `seconds` to the ledger under
    /// `reason` (`initial`, `refresh`, `touched`, `eval`).
    pub fn forwards(&self, reason: &'static str, n: u64, seconds: f64) {
        self.add_sent(reason, n, seconds);
    }

    /// The state of process `process` of a run over several: a process other than 0
    /// sends its ledger to process 0's ([`RunState::take_unsent`]).
    pub fn in_process(mut self, process: usize) -> Self {
        self.leads = process == 0;
        self.process = process;
        self
    }

    /// Whether this process holds worker 0 and writes the run's summary.
    pub fn leads(&self) -> bool {
        self.leads
    }

    /// Records that `worker` now holds `rows` rows (`bytes`) of the sharded `table`.
    pub fn hold(&self, worker: usize, table: &str, rows: u64, bytes: u64) {
        if let Ok(mut h) = self.held.lock() {
            h.hold(worker, table, rows, bytes);
        }
    }

    /// Adds what another process holds ([`RunState::held`] there).
    pub fn merge_held(&self, other: &Held) {
        if let Ok(mut h) = self.held.lock() {
            h.merge(other);
        }
    }

    /// What the workers known here hold, with this process's peak memory read now.
    pub fn held(&self) -> Held {
        let Ok(mut h) = self.held.lock() else {
            return Held::default();
        };
        if let Some(peak) = peak_rss_bytes() {
            h.peak(self.process, peak);
        }
        h.clone()
    }

    /// What this process counted since the last call, to add to the leader's ledger:
    /// empty on the leader's own process (its ledger is the run's already).
    pub fn take_unsent(&self) -> BTreeMap<String, (u64, f64)> {
        let (Ok(ledger), Ok(mut sent)) = (self.ledger.lock(), self.sent.lock()) else {
            return BTreeMap::new();
        };
        if self.leads {
            return BTreeMap::new();
        }
        let mut delta = BTreeMap::new();
        for (reason, &(n, secs)) in ledger.iter() {
            let (n0, s0) = sent.get(reason).copied().unwrap_or((0, 0.0));
            if n > n0 || secs > s0 {
                delta.insert(reason.clone(), (n - n0, secs - s0));
            }
        }
        *sent = ledger.clone();
        delta
    }

    /// Adds another process's counts ([`RunState::take_unsent`]) to this ledger.
    pub fn add_sent(&self, reason: &str, n: u64, seconds: f64) {
        if let Ok(mut l) = self.ledger.lock() {
            let e = l.entry(reason.to_string()).or_default();
            e.0 += n;
            e.1 += seconds;
        }
    }

    /// The ledger: forwards and seconds by reason.
    pub fn ledger(&self) -> BTreeMap<String, (u64, f64)> {
        self.ledger.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Seconds since the run started.
    pub fn elapsed(&self) -> f64 {
        let offset = self.offset.lock().map(|o| *o).unwrap_or(0.0);
        offset + self.started.elapsed().as_secs_f64()
    }

    /// Continues the counters of a run this one resumes: its ledger, node counters and
    /// seconds.
    pub fn resume_from(
        &self,
        ledger: BTreeMap<String, (u64, f64)>,
        stats: BTreeMap<String, NodeStats>,
        seconds: f64,
    ) {
        // What the checkpoint counted was sent already (it is the run's ledger).
        if let Ok(mut sent) = self.sent.lock() {
            *sent = ledger.clone();
        }
        if let Ok(mut l) = self.ledger.lock() {
            *l = ledger;
        }
        if let Ok(mut s) = self.stats.lock() {
            *s = stats;
        }
        if let Ok(mut o) = self.offset.lock() {
            *o = seconds;
        }
    }

    /// Keeps a training run's summary row for the command line to print.
    pub fn set_summary(&self, b: arrow::array::RecordBatch) {
        if let Ok(mut s) = self.summary.lock() {
            *s = Some(b);
        }
    }

    /// The training run's summary row, if there was one.
    pub fn summary(&self) -> Option<arrow::array::RecordBatch> {
        self.summary.lock().ok().and_then(|s| s.clone())
    }

    /// A snapshot of every node's counters.
    pub fn stats(&self) -> BTreeMap<String, NodeStats> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
