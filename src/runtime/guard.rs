//! What a run holds while it runs: the locks on its folder and its stores, taken after
//! the leftovers of dead runs are cleared.

use std::path::{Path, PathBuf};

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

/// A lock taken, with the lock file and folders that did not exist before it was taken
/// (the deepest first): what taking it created.
struct Taken {
    lock: Lock,
    created: Vec<PathBuf>,
}

/// `file` and those of its folders that do not exist, the deepest first.
fn missing(file: &Path) -> Vec<PathBuf> {
    file.ancestors()
        .take_while(|p| !p.as_os_str().is_empty() && !p.exists())
        .map(Path::to_path_buf)
        .collect()
}

/// Takes the locks `(lock file, what it guards)` in order. When one is refused, the locks
/// already taken are released and what taking them created is removed, so a refused run
/// leaves no folder or file behind: each lock file is removed while still held (a run
/// that opened it meanwhile finds it gone and opens the new one, see [`Lock::acquire`]),
/// then each folder only if it is empty (another run may have created files in it).
fn take_all(wanted: &[(PathBuf, String)]) -> Result<Vec<Lock>> {
    let mut taken: Vec<Taken> = Vec::new();
    for (file, what) in wanted {
        let created = missing(file);
        match Lock::acquire(file, what) {
            Ok(lock) => taken.push(Taken { lock, created }),
            Err(e) => {
                for t in taken.into_iter().rev() {
                    for (i, p) in t.created.iter().enumerate() {
                        let _ = match i == 0 {
                            true => std::fs::remove_file(p),
                            false => std::fs::remove_dir(p),
                        };
                    }
                    drop(t.lock);
                }
                return Err(e);
            }
        }
    }
    Ok(taken.into_iter().map(|t| t.lock).collect())
}

impl RunGuard {
    /// Locks the run's folder and every store the graph uses, then rolls back a commit a
    /// killed run left unfinished and deletes the temporary files of dead runs. A run
    /// refused a lock changes nothing (see [`take_all`]).
    pub fn acquire(graph: &Graph) -> Result<Self> {
        let run_dir = paths::run_folder(graph);
        let mut wanted = Vec::new();
        let mut folders = Vec::new();
        if let Some(dir) = &run_dir {
            let what = format!("the out folder {}", dir.display());
            wanted.push((dir.join(".freshen").join("lock"), what));
            folders.push(dir.join(".freshen"));
            folders.push(dir.join(".freshen").join("resume"));
        }
        for (_, f) in paths::uses(graph) {
            let path = absolute(&f.path);
            match f.access {
                Access::Store => {
                    let what = format!("the store {}", f.path.display());
                    wanted.push((path.join(".lock"), what));
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
        let locks = take_all(&wanted)?;
        if let Some(dir) = &run_dir {
            if let Some(message) = commit::recover(dir)?.message() {
                tracing::warn!(folder = %dir.display(), "{message}");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_lock_removes_what_the_locks_before_it_created_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store/.lock");
        let held = Lock::acquire(&store, "x").unwrap();
        let kept = tmp.path().join("kept");
        std::fs::create_dir_all(kept.join("a")).unwrap();
        std::fs::write(kept.join("a/other"), b"").unwrap();
        let wanted = [
            (tmp.path().join("new/out/.freshen/lock"), "a".to_string()),
            (kept.join("a/b/lock"), "b".to_string()),
            (store.clone(), "the store".to_string()),
        ];
        let e = take_all(&wanted).err().unwrap().to_string();
        assert!(e.contains("the store is in use"), "{e}");
        assert!(!tmp.path().join("new").exists());
        assert!(!kept.join("a/b").exists());
        assert!(kept.join("a/other").exists() && store.exists());
        drop(held);
        assert_eq!(take_all(&wanted).unwrap().len(), 3);
    }
}
