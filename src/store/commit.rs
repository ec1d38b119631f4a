//! Committing a run's outputs together: all of them replace the earlier ones, or none do.
//!
//! Every output (files and the checkpoint folder) is staged under a temporary name beside
//! its destination. The commit writes a journal into the run's folder (`.freshen/commit.json`,
//! atomically), then per output moves the earlier version aside (`.<name>.<pid>.old`) and
//! the staged one into place, then marks the journal done and deletes the earlier
//! versions. A rename that fails rolls every earlier one back; a run killed in the
//! middle is rolled back by the next run on the same folder ([`recover`]), so a failed or
//! killed run leaves the earlier outputs exactly as they were. Readers never see half a
//! file: each output is replaced by one rename.
//!
//! [`sweep`] deletes what dead runs left behind (staged files and folders, earlier
//! versions), recognised by the pid in their names.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::parquet_io::{sibling, PendingFile};
use crate::error::{Error, Result};

/// One output in the journal.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    tmp: PathBuf,
    dest: PathBuf,
    backup: PathBuf,
    folder: bool,
}

/// The journal of a commit in progress.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Journal {
    /// `renaming` while outputs move, `done` once every one is in place.
    state: String,
    entries: Vec<Entry>,
}

/// Where the journal of the run folder `dir` lives.
fn journal_path(dir: &Path) -> PathBuf {
    dir.join(".freshen").join("commit.json")
}

fn write_journal(path: &Path, journal: &Journal) -> Result<()> {
    let text = serde_json::to_vec_pretty(journal)
        .map_err(|e| Error::invariant(format!("commit journal: {e}")))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = sibling(path, "tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    let f = std::fs::File::open(&tmp).map_err(|e| Error::io(&tmp, e))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

fn remove(path: &Path, folder: bool) -> std::io::Result<()> {
    match folder {
        true => std::fs::remove_dir_all(path),
        false => std::fs::remove_file(path),
    }
}

/// Replaces every destination of `staged` by its staged version, all or none (see the
/// module docs); `run_dir` holds the journal.
pub fn commit_all(staged: Vec<PendingFile>, run_dir: &Path) -> Result<Vec<PathBuf>> {
    for p in &staged {
        let dest = p.dest();
        if p.is_folder() && dest.is_file() {
            return Err(Error::Usage(format!(
                "{}: is a file (expected a folder for the checkpoint); nothing was replaced",
                dest.display()
            )));
        }
        if !p.is_folder() && dest.is_dir() {
            return Err(Error::Usage(format!(
                "{}: is a folder (expected a file); nothing was replaced",
                dest.display()
            )));
        }
    }
    let entries: Vec<Entry> = staged
        .iter()
        .map(|p| Entry {
            tmp: p.tmp_path().to_path_buf(),
            dest: p.dest().to_path_buf(),
            backup: sibling(p.dest(), "old"),
            folder: p.is_folder(),
        })
        .collect();
    let path = journal_path(run_dir);
    let mut journal = Journal {
        state: "renaming".into(),
        entries,
    };
    write_journal(&path, &journal)?;
    for (i, e) in journal.entries.iter().enumerate() {
        if let Err(err) = swap_in(e) {
            roll_back(&journal.entries[..=i]);
            let _ = std::fs::remove_file(&path);
            return Err(err);
        }
        crash_point("commit");
    }
    let mut staged = staged;
    for p in &mut staged {
        p.mark_committed();
    }
    journal.state = "done".into();
    write_journal(&path, &journal)?;
    for e in &journal.entries {
        let _ = remove(&e.backup, e.folder);
    }
    let _ = std::fs::remove_file(&path);
    Ok(journal.entries.into_iter().map(|e| e.dest).collect())
}

/// Ends the process here, as `kill -9` would, when the environment variable
/// `FRESHEN_CRASH_AT` names this point: how the tests kill a run in the middle of writing
/// a checkpoint or committing its outputs.
pub fn crash_point(name: &str) {
    if std::env::var("FRESHEN_CRASH_AT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// Moves the earlier version of one output aside and the staged one into place.
fn swap_in(e: &Entry) -> Result<()> {
    if e.dest.exists() {
        std::fs::rename(&e.dest, &e.backup).map_err(|err| Error::io(&e.dest, err))?;
    }
    std::fs::rename(&e.tmp, &e.dest).map_err(|err| Error::io(&e.dest, err))
}

/// Puts the earlier versions of `entries` back, and the staged ones out of the way.
fn roll_back(entries: &[Entry]) {
    for e in entries.iter().rev() {
        if e.backup.exists() {
            if e.dest.exists() {
                let _ = std::fs::rename(&e.dest, &e.tmp);
            }
            let _ = std::fs::rename(&e.backup, &e.dest);
        } else if e.dest.exists() && !e.tmp.exists() {
            // The output is new: its staged version was moved in; take it out again.
            let _ = std::fs::rename(&e.dest, &e.tmp);
        }
        let _ = remove(&e.tmp, e.folder);
    }
}

/// Finishes or undoes a commit that a killed run left in `run_dir`: one that had not
/// finished moving its outputs is rolled back; one that had is cleaned up. Returns
/// whether there was one.
pub fn recover(run_dir: &Path) -> Result<bool> {
    let path = journal_path(run_dir);
    let Ok(text) = std::fs::read(&path) else {
        return Ok(false);
    };
    let journal: Journal = serde_json::from_slice(&text).map_err(|e| {
        Error::data(
            &path,
            None,
            format!("unreadable commit journal ({e}); check the outputs beside it and delete it"),
        )
    })?;
    match journal.state.as_str() {
        "done" => {
            for e in &journal.entries {
                let _ = remove(&e.backup, e.folder);
            }
        }
        _ => roll_back(&journal.entries),
    }
    std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    Ok(true)
}

/// Whether process `pid` is alive (on Linux: has an entry in `/proc`).
fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// Deletes in each of `folders` what dead freshen runs left: `.<name>.<pid>.tmp` and
/// `.<name>.<pid>.old` files and folders whose pid is no longer running. Returns them.
pub fn sweep(folders: &[PathBuf]) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for dir in folders {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = leftover_pid(&name) else {
                continue;
            };
            if alive(pid) {
                continue;
            }
            let path = entry.path();
            if remove(&path, path.is_dir()).is_ok() {
                removed.push(path);
            }
        }
    }
    removed
}

/// The pid in a name of the form `.<name>.<pid>.tmp` or `.<name>.<pid>.old`.
fn leftover_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix('.')?;
    let rest = rest
        .strip_suffix(".tmp")
        .or_else(|| rest.strip_suffix(".old"))?;
    let (_, pid) = rest.rsplit_once('.')?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dir: &Path, name: &str, text: &str) -> PendingFile {
        let p = PendingFile::new(&dir.join(name));
        std::fs::write(p.tmp_path(), text).unwrap();
        p
    }

    #[test]
    fn all_outputs_or_none_replace_the_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), "old a").unwrap();
        std::fs::write(d.join("b"), "old b").unwrap();
        let done = commit_all(vec![staged(d, "a", "new a"), staged(d, "b", "new b")], d).unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "new a");
        assert_eq!(std::fs::read_to_string(d.join("b")).unwrap(), "new b");
        // A destination that is a folder fails before anything moves.
        std::fs::create_dir(d.join("c")).unwrap();
        let e = commit_all(vec![staged(d, "a", "newer a"), staged(d, "c", "c")], d);
        assert!(e.is_err());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "new a");
        // A rename that fails midway rolls the earlier ones back.
        let a = staged(d, "a", "third a");
        let gone = staged(d, "x", "x");
        std::fs::remove_file(gone.tmp_path()).unwrap();
        assert!(commit_all(vec![a, gone], d).is_err());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "new a");
        assert!(!d.join("x").exists());
        assert!(!journal_path(d).exists());
        assert!(
            sweep(&[d.to_path_buf()]).is_empty(),
            "nothing may be left over"
        );
    }

    #[test]
    fn a_commit_killed_midway_is_rolled_back_by_the_next_run() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("a"), "old a").unwrap();
        // As a killed run leaves it: `a` moved aside and replaced, the journal not done.
        let e = Entry {
            tmp: d.join(".a.1.tmp"),
            dest: d.join("a"),
            backup: d.join(".a.1.old"),
            folder: false,
        };
        std::fs::write(&e.tmp, "new a").unwrap();
        let journal = Journal {
            state: "renaming".into(),
            entries: vec![e.clone()],
        };
        write_journal(&journal_path(d), &journal).unwrap();
        swap_in(&e).unwrap();
        assert!(recover(d).unwrap());
        assert_eq!(std::fs::read_to_string(d.join("a")).unwrap(), "old a");
        assert!(!e.backup.exists() && !e.tmp.exists());
        assert!(!recover(d).unwrap());
    }

    #[test]
    fn leftovers_of_dead_runs_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // pid 4194304 is above Linux's pid_max: never alive.
        std::fs::write(d.join(".metrics.parquet.4194304.tmp"), "").unwrap();
        std::fs::create_dir(d.join(".checkpoint.4194304.old")).unwrap();
        let mine = sibling(&d.join("summary.parquet"), "tmp");
        std::fs::write(&mine, "").unwrap();
        std::fs::write(d.join("keep.parquet"), "").unwrap();
        let removed = sweep(&[d.to_path_buf()]);
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(mine.exists() && d.join("keep.parquet").exists());
    }
}
