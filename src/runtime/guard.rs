//! What a run holds while it runs: the locks on its folder and its stores, taken after
//! the leftovers of dead runs are cleared.

use std::path::PathBuf;

use crate::error::Result;
use crate::graph::paths::{self, absolute};
use crate::graph::{Access, Graph};
use crate::store::commit;
use crate::store::lock::Lock;

/// The run's folder and its locks (released when dropped).
pub struct RunGuard {
    /// The run's folder: where its outputs, journal and resumable state are.
    pub run_dir: Option<PathBuf>,
    _locks: Vec<Lock>,
}

impl RunGuard {
    /// Locks the run's folder and every store the graph uses, rolls back a commit a killed
    /// run left unfinished, and deletes the temporary files of dead runs.
    pub fn acquire(graph: &Graph) -> Result<Self> {
        let run_dir = paths::run_folder(graph);
        let mut locks = Vec::new();
        let mut folders = Vec::new();
        if let Some(dir) = &run_dir {
            let what = format!("the out folder {}", dir.display());
            locks.push(Lock::acquire(&dir.join(".freshen").join("lock"), &what)?);
            if let Some(message) = commit::recover(dir)?.message() {
                tracing::warn!(folder = %dir.display(), "{message}");
            }
            folders.push(dir.join(".freshen"));
            folders.push(dir.join(".freshen").join("resume"));
        }
        for (_, f) in paths::uses(graph) {
            let path = absolute(&f.path);
            match f.access {
                Access::Store => {
                    let what = format!("the store {}", f.path.display());
                    locks.push(Lock::acquire(&path.join(".lock"), &what)?);
                    folders.push(path);
                }
                Access::Write | Access::WriteFolder => {
                    if let Some(parent) = path.parent() {
                        folders.push(parent.to_path_buf());
                    }
                }
                Access::Read => {}
            }
        }
        folders.sort();
        folders.dedup();
        for removed in commit::sweep(&folders) {
            tracing::info!(path = %removed.display(), "removed what a dead run left");
        }
        Ok(Self {
            run_dir,
            _locks: locks,
        })
    }
}
