//! What each worker holds of the sharded tables, and each process's peak memory: the
//! figures the summary reports so that a user can see a shard is about N/W rows and how
//! much of a process's memory the cache is.
//!
//! Operators record the rows and bytes of their shard whenever a new version replaces
//! the last ([`Held::hold`]); the largest seen per (worker, table) is kept. Peak memory
//! is the process's high-water mark of resident memory (`VmHWM` of
//! `/proc/self/status`), so it covers every worker thread of the process; on systems
//! without `/proc` it is absent.

use std::collections::BTreeMap;

/// Rows and bytes held per (worker, table), and peak resident bytes per process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// `(worker, table) → (rows, bytes)`, the largest seen.
    pub tables: BTreeMap<(usize, String), (u64, u64)>,
    /// `process → peak resident bytes`.
    pub peaks: BTreeMap<usize, u64>,
}

impl Held {
    /// Records that `worker` holds `rows` rows taking `bytes` of `table`.
    pub fn hold(&mut self, worker: usize, table: &str, rows: u64, bytes: u64) {
        let e = self.tables.entry((worker, table.to_string())).or_default();
        e.0 = e.0.max(rows);
        e.1 = e.1.max(bytes);
    }

    /// Records a process's peak resident bytes.
    pub fn peak(&mut self, process: usize, bytes: u64) {
        let e = self.peaks.entry(process).or_default();
        *e = (*e).max(bytes);
    }

    /// Adds another process's records.
    pub fn merge(&mut self, other: &Held) {
        for ((w, t), &(rows, bytes)) in &other.tables {
            self.hold(*w, t, rows, bytes);
        }
        for (&p, &b) in &other.peaks {
            self.peak(p, b);
        }
    }

    /// Per worker `0..workers`, the rows of its largest table (about N/W: every table is
    /// a shard), 0 where it held none.
    pub fn shard_rows(&self, workers: usize) -> Vec<u64> {
        let mut out = vec![0; workers];
        for ((w, _), &(rows, _)) in &self.tables {
            if let Some(o) = out.get_mut(*w) {
                *o = (*o).max(rows);
            }
        }
        out
    }

    /// Bytes of every table per worker `0..workers`.
    pub fn bytes_per_worker(&self, workers: usize) -> Vec<u64> {
        let mut out = vec![0; workers];
        for ((w, _), &(_, bytes)) in &self.tables {
            if let Some(o) = out.get_mut(*w) {
                *o += bytes;
            }
        }
        out
    }
}

/// This process's peak resident memory in bytes, if the system reports it.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_version_is_kept_and_processes_merge() {
        let mut a = Held::default();
        a.hold(0, "searched", 10, 40);
        a.hold(0, "searched", 8, 32);
        a.hold(0, "texts", 10, 100);
        a.hold(0, "evaluate: corpus", 9, 500);
        a.peak(0, 1000);
        let mut b = Held::default();
        b.hold(1, "searched", 12, 48);
        b.peak(1, 900);
        a.merge(&b);
        assert_eq!(a.shard_rows(3), vec![10, 12, 0]);
        assert_eq!(a.bytes_per_worker(2), vec![640, 48]);
        assert_eq!(
            a.peaks.values().copied().collect::<Vec<_>>(),
            vec![1000, 900]
        );
    }

    #[test]
    fn peak_memory_is_read_on_linux() {
        let peak = peak_rss_bytes().expect("/proc/self/status has VmHWM on Linux");
        assert!(
            peak > 1 << 20,
            "a test process holds more than 1 MiB: {peak}"
        );
    }
}
