//! How to run: workers, processes and their addresses, progress.

use std::path::PathBuf;

use timely::CommunicationConfig;

use crate::error::{Error, Result};

/// How to run: workers, processes, and whether to draw progress bars.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Worker threads per process (`-w`).
    pub workers: usize,
    /// Number of processes (`-n`).
    pub processes: usize,
    /// This process's index (`-p`).
    pub process: usize,
    /// File of `host:port` lines, one per process (`-H`, `--hostfile`); localhost:2101+i when absent.
    pub hostfile: Option<PathBuf>,
    /// Report connection progress between processes (`-r`).
    pub report: bool,
    /// Draw progress bars on stderr (only on a terminal).
    pub progress: bool,
    /// Continue from the last checkpoint of the run's folder (`--resume`).
    pub resume: bool,
    /// Seconds between progress lines when there are no bars (`None`: none).
    pub progress_every: Option<f64>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
            report: false,
            progress: false,
            resume: false,
            progress_every: None,
        }
    }
}

impl RunOptions {
    /// Timely's communication settings for these options.
    pub(super) fn communication(&self) -> Result<CommunicationConfig> {
        if self.processes <= 1 {
            return Ok(match self.workers <= 1 {
                true => CommunicationConfig::Thread,
                false => CommunicationConfig::Process(self.workers),
            });
        }
        if self.process >= self.processes {
            return Err(Error::Usage(format!(
                "process index {} is out of range (expected 0..{})",
                self.process, self.processes
            )));
        }
        let addresses = match &self.hostfile {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                let lines: Vec<String> = text
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect();
                if lines.len() < self.processes {
                    return Err(Error::Usage(format!(
                        "{}: {} addresses for {} processes (expected one host:port line per process)",
                        path.display(),
                        lines.len(),
                        self.processes
                    )));
                }
                lines.into_iter().take(self.processes).collect()
            }
            None => (0..self.processes)
                .map(|i| format!("localhost:{}", 2101 + i))
                .collect(),
        };
        Ok(CommunicationConfig::Cluster {
            threads: self.workers.max(1),
            process: self.process,
            addresses,
            report: self.report,
            zerocopy: false,
        })
    }
}
