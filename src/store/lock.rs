//! Exclusive locks on a run's folder and on a store: a second concurrent run on either is
//! refused with the holder's pid, instead of two runs silently overwriting each other.
//!
//! The lock is the operating system's (`flock` on Linux) on a lock file, so it is released
//! when the holder exits, however it exits (`kill -9` included): a dead run never leaves
//! a folder locked.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A held lock; released when dropped.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock file `file` (creating its folder), or fails naming `what` is in use
    /// and the holder's pid.
    ///
    /// A refused run removes the lock files it created (see `RunGuard`): a file locked
    /// just after its removal is no longer the one at `file`, so it is opened again.
    pub fn acquire(file: &Path, what: &str) -> Result<Self> {
        loop {
            if let Some(f) = Self::try_acquire(file, what)? {
                return Ok(Self {
                    _file: f,
                    path: file.to_path_buf(),
                });
            }
        }
    }

    /// One try: the locked file, or `None` when it was removed before it was locked.
    fn try_acquire(file: &Path, what: &str) -> Result<Option<File>> {
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(file)
            .map_err(|e| Error::io(file, e))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = f.read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Usage(format!(
                    "{what} is in use by another freshen run (pid {}) (expected one run at a time; wait for it or use another folder)",
                    if holder.is_empty() { "unknown" } else { holder }
                )));
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(file, e)),
        }
        if !same_file(&f, file) {
            return Ok(None);
        }
        f.set_len(0).map_err(|e| Error::io(file, e))?;
        f.seek(SeekFrom::Start(0)).map_err(|e| Error::io(file, e))?;
        writeln!(f, "{}", std::process::id()).map_err(|e| Error::io(file, e))?;
        Ok(Some(f))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether the open file `f` is still the file at `path` (not removed or replaced).
#[cfg(unix)]
fn same_file(f: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (f.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        (_, Err(e)) if e.kind() == std::io::ErrorKind::NotFound => false,
        _ => true,
    }
}

/// Whether the open file `f` is still the file at `path`: assumed where it cannot be told.
#[cfg(not(unix))]
fn same_file(_: &File, _: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".freshen/lock");
        let held = Lock::acquire(&file, "the folder").unwrap();
        let e = Lock::acquire(&file, "the folder").unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(held);
        Lock::acquire(&file, "the folder").unwrap();
    }
}
