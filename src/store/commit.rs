//! Committing a run's outputs as one version: readers see the earlier run's outputs or
//! this run's, never a mix, even when the commit is killed part-way.
//!
//! The outputs live in numbered version folders inside the run's folder; one symlink,
//! `current`, names the version readers see, and each output's own path is a symlink
//! through it:
//!
//! ```text
//! out/quickstart/
//! ├── current -> .versions/7                  the one pointer a commit switches
//! ├── metrics.parquet -> current/metrics.parquet
//! ├── summary.parquet -> current/summary.parquet
//! ├── checkpoint -> current/checkpoint
//! └── .versions/
//!     ├── 6/ …                                the version before, kept for readers on it
//!     └── 7/ {metrics.parquet, summary.parquet, checkpoint/, .outputs.json}
//! ```
//!
//! A commit moves every staged output into a new staging folder
//! (`.versions/.<v>.<pid>.tmp`), hard-links in the previous version's outputs that this
//! run does not write (so a folder shared by several pipelines keeps them all), renames the
//! folder to `.versions/<v>` (complete from then on), switches `current` with one rename,
//! makes each output's path a link through `current`, and deletes versions older than the
//! one before. A kill while staging leaves the earlier outputs in place (the next run
//! sweeps the staging folder: "rolled back"); a kill after the folder is complete and
//! before every link is made is finished by the next run on the folder ("completed").
//!
//! Reading while runs commit: each file opened through its path is one run's whole
//! file; a reader that wants several files of one run resolves `current` once
//! (`readlink`) and reads inside that folder, which stays until two commits later.
//!
//! [`sweep`] deletes what dead runs left behind (staged files and folders, earlier
//! versions of the older design), recognised by the pid in their names.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::parquet_io::{sibling, PendingFile};
use crate::error::{Error, Result};

/// The folder of the versions inside a run's folder.
pub const VERSIONS: &str = ".versions";
/// The symlink naming the version readers see.
pub const CURRENT: &str = "current";
/// A version's list of its outputs.
const MANIFEST: &str = ".outputs.json";

/// One output of a version: its path under the run's folder, and whether it is a folder.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
struct Output {
    path: PathBuf,
    folder: bool,
}

/// What [`recover`] found of a commit a killed run left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovered {
    /// Nothing to do.
    Nothing,
    /// The commit had not completed its version: it was removed, the earlier outputs
    /// stand.
    RolledBack,
    /// The version was complete: the switch and the links were finished.
    Completed,
}

impl Recovered {
    /// The line a run logs when it found one.
    pub fn message(self) -> Option<&'static str> {
        match self {
            Recovered::Nothing => None,
            Recovered::RolledBack => Some(
                "rolled back the outputs of a run killed while committing them: the earlier outputs stand",
            ),
            Recovered::Completed => Some(
                "completed the commit of a run killed while committing its outputs: they are now current",
            ),
        }
    }
}

/// Replaces every destination of `staged` by its staged version, all at once for readers
/// (see the module docs); every destination lies inside `run_dir`.
pub fn commit_all(staged: Vec<PendingFile>, run_dir: &Path) -> Result<Vec<PathBuf>> {
    check_kinds(&staged)?;
    let root = run_dir.join(VERSIONS);
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    let previous = current_version(run_dir);
    let v = versions(&root).last().map_or(1, |v| v + 1);
    let stage = root.join(format!(".{v}.{}.tmp", std::process::id()));
    std::fs::create_dir(&stage).map_err(|e| Error::io(&stage, e))?;
    let staged_outputs = match stage_outputs(staged, run_dir, &stage, previous) {
        Ok(o) => o,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&stage);
            return Err(e);
        }
    };
    crash_point("commit");
    let done = root.join(v.to_string());
    std::fs::rename(&stage, &done).map_err(|e| Error::io(&done, e))?;
    crash_point("commit-complete");
    let previous = switch(run_dir, v)?;
    crash_point("commit-switched");
    settle(run_dir, v, previous)?;
    Ok(staged_outputs
        .into_iter()
        .map(|o| run_dir.join(o.path))
        .collect())
}

/// Refuses, before anything moves, a folder output over a file or a file over a folder.
fn check_kinds(staged: &[PendingFile]) -> Result<()> {
    for p in staged {
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
    Ok(())
}

/// Moves the staged outputs into `stage`, links in the outputs of version `previous`
/// that they do not replace, and writes the manifest. Returns this run's outputs.
fn stage_outputs(
    staged: Vec<PendingFile>,
    run_dir: &Path,
    stage: &Path,
    previous: Option<u64>,
) -> Result<Vec<Output>> {
    let mut mine = Vec::new();
    for mut p in staged {
        let rel = relative(p.dest(), run_dir)?;
        let to = stage.join(&rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        std::fs::rename(p.tmp_path(), &to).map_err(|e| Error::io(p.dest(), e))?;
        p.mark_committed();
        mine.push(Output {
            path: rel,
            folder: p.is_folder(),
        });
    }
    let mut all: BTreeSet<Output> = mine.iter().cloned().collect();
    if let Some(prev) = previous {
        let from = run_dir.join(VERSIONS).join(prev.to_string());
        for o in read_manifest(&from) {
            let replaced = mine
                .iter()
                .any(|m| o.path.starts_with(&m.path) || m.path.starts_with(&o.path));
            if replaced || !from.join(&o.path).exists() {
                continue;
            }
            hard_link_tree(&from.join(&o.path), &stage.join(&o.path))?;
            all.insert(o);
        }
    }
    let text = serde_json::to_vec_pretty(&all.into_iter().collect::<Vec<_>>())
        .map_err(|e| Error::invariant(format!("outputs manifest: {e}")))?;
    let manifest = stage.join(MANIFEST);
    std::fs::write(&manifest, text).map_err(|e| Error::io(&manifest, e))?;
    Ok(mine)
}

/// `dest` as a path under `run_dir` (its folder resolved as the run's folder was).
fn relative(dest: &Path, run_dir: &Path) -> Result<PathBuf> {
    let name = dest
        .file_name()
        .ok_or_else(|| Error::invariant(format!("output {} has no name", dest.display())))?;
    let parent = match dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    let parent = parent.canonicalize().map_err(|e| Error::io(&parent, e))?;
    let rel = parent
        .join(name)
        .strip_prefix(run_dir)
        .map(Path::to_path_buf)
        .map_err(|_| {
            Error::invariant(format!(
                "output {} lies outside the run's folder {}",
                dest.display(),
                run_dir.display()
            ))
        })?;
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::invariant(format!("output path {}", rel.display())));
    }
    Ok(rel)
}

/// Recreates the file or folder `from` at `to` with hard links to its files (no bytes
/// copied; the versions share them).
fn hard_link_tree(from: &Path, to: &Path) -> Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to).map_err(|e| Error::io(to, e))?;
        for entry in std::fs::read_dir(from).map_err(|e| Error::io(from, e))? {
            let entry = entry.map_err(|e| Error::io(from, e))?;
            hard_link_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::hard_link(from, to).map_err(|e| Error::io(to, e))
}

/// Makes version `v` (complete in `.versions/<v>`) the one readers see: `current`
/// switched ([`switch`]), then each of its outputs linked through it ([`settle`]).
fn finish(run_dir: &Path, v: u64) -> Result<()> {
    let previous = switch(run_dir, v)?;
    settle(run_dir, v, previous)
}

/// Points `current` at version `v` with one rename; returns the version it named before.
fn switch(run_dir: &Path, v: u64) -> Result<Option<u64>> {
    let previous = current_version(run_dir);
    if previous != Some(v) {
        let current = run_dir.join(CURRENT);
        let link = sibling(&current, "tmp");
        let _ = std::fs::remove_file(&link);
        let target = Path::new(VERSIONS).join(v.to_string());
        std::os::unix::fs::symlink(&target, &link).map_err(|e| Error::io(&link, e))?;
        std::fs::rename(&link, &current).map_err(|e| Error::io(&current, e))?;
    }
    Ok(previous)
}

/// After the switch to `v` from `previous`: each output of `v` linked through `current`,
/// links of outputs it no longer has removed, versions older than the one before deleted.
fn settle(run_dir: &Path, v: u64, previous: Option<u64>) -> Result<()> {
    let root = run_dir.join(VERSIONS);
    let now = read_manifest(&root.join(v.to_string()));
    for o in &now {
        link_output(run_dir, &o.path)?;
    }
    if let Some(p) = previous.filter(|&p| p != v) {
        for o in read_manifest(&root.join(p.to_string())) {
            if !now.iter().any(|n| n.path == o.path) && is_output_link(run_dir, &o.path) {
                let _ = std::fs::remove_file(run_dir.join(&o.path));
            }
        }
    }
    let keep = match previous {
        Some(p) if p < v => p,
        _ => v.saturating_sub(1),
    };
    for old in versions(&root).into_iter().filter(|&n| n < keep) {
        let _ = std::fs::remove_dir_all(root.join(old.to_string()));
    }
    Ok(())
}

/// Where an output's link points: through `current`, relative to the link's folder.
fn link_target(rel: &Path) -> PathBuf {
    let depth = rel.components().count().saturating_sub(1);
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.join(CURRENT).join(rel)
}

/// Whether the output `rel`'s path is the link a commit made.
fn is_output_link(run_dir: &Path, rel: &Path) -> bool {
    std::fs::read_link(run_dir.join(rel)).is_ok_and(|t| t == link_target(rel))
}

/// Makes the path of output `rel` a link through `current` (one rename over whatever was
/// there: an older design's file, or nothing).
fn link_output(run_dir: &Path, rel: &Path) -> Result<()> {
    if is_output_link(run_dir, rel) {
        return Ok(());
    }
    let dest = run_dir.join(rel);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    if dest.is_dir() && !dest.is_symlink() {
        std::fs::remove_dir_all(&dest).map_err(|e| Error::io(&dest, e))?;
    }
    let link = sibling(&dest, "tmp");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(link_target(rel), &link).map_err(|e| Error::io(&link, e))?;
    std::fs::rename(&link, &dest).map_err(|e| Error::io(&dest, e))
}

/// The complete versions in `root`, ascending.
fn versions(root: &Path) -> Vec<u64> {
    let mut v: Vec<u64> = std::fs::read_dir(root)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_unstable();
    v
}

/// The version `current` names, if any.
pub fn current_version(run_dir: &Path) -> Option<u64> {
    let target = std::fs::read_link(run_dir.join(CURRENT)).ok()?;
    target.file_name()?.to_str()?.parse().ok()
}

fn read_manifest(version: &Path) -> Vec<Output> {
    std::fs::read(version.join(MANIFEST))
        .ok()
        .and_then(|text| serde_json::from_slice(&text).ok())
        .unwrap_or_default()
}

/// Ends the process here, as `kill -9` would, when the environment variable
/// `FRESHEN_CRASH_AT` names this point: how the tests kill a run in the middle of writing
/// a checkpoint or committing its outputs.
pub fn crash_point(name: &str) {
    if std::env::var("FRESHEN_CRASH_AT").is_ok_and(|v| v == name) {
        std::process::abort();
    }
}

/// Finishes or undoes a commit that a killed run left in `run_dir`: a version that was
/// still being staged is removed (the earlier outputs stand), a complete one that was
/// not yet current, or not yet linked, is made current. Also undoes a commit of the older
/// design (a journal in `.freshen/commit.json`).
pub fn recover(run_dir: &Path) -> Result<Recovered> {
    if let Some(done) = legacy::recover(run_dir)? {
        return Ok(match done {
            true => Recovered::Completed,
            false => Recovered::RolledBack,
        });
    }
    let root = run_dir.join(VERSIONS);
    let mut found = Recovered::Nothing;
    for p in sweep(std::slice::from_ref(&root)) {
        tracing::debug!(path = %p.display(), "removed a version a killed run was staging");
        found = Recovered::RolledBack;
    }
    let Some(&newest) = versions(&root).last() else {
        return Ok(found);
    };
    let linked = read_manifest(&root.join(newest.to_string()))
        .iter()
        .all(|o| is_output_link(run_dir, &o.path));
    if current_version(run_dir) != Some(newest) || !linked {
        finish(run_dir, newest)?;
        found = Recovered::Completed;
    } else {
        // Killed after the links, before the oldest version was deleted: readers saw
        // nothing amiss, and the deletion is finished quietly.
        finish(run_dir, newest)?;
    }
    Ok(found)
}

fn remove(path: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    match meta.is_dir() {
        true => std::fs::remove_dir_all(path),
        false => std::fs::remove_file(path),
    }
}

/// Whether process `pid` is alive (on Linux: has an entry in `/proc`).
fn alive(pid: u32) -> bool {
    pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists()
}

/// Deletes in each of `folders` what dead freshen runs left: `.<name>.<pid>.tmp` and
/// `.<name>.<pid>.old` files, folders and links whose pid is no longer running. Returns
/// them.
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
            if remove(&path).is_ok() {
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

/// The commit of the older design: outputs renamed one by one beside their destinations
/// under a journal. Only its recovery is kept, for a folder a killed older run left.
mod legacy {
    use std::path::{Path, PathBuf};

    use serde::Deserialize;

    use crate::error::{Error, Result};

    #[derive(Deserialize)]
    struct Entry {
        tmp: PathBuf,
        dest: PathBuf,
        backup: PathBuf,
        folder: bool,
    }

    #[derive(Deserialize)]
    struct Journal {
        state: String,
        entries: Vec<Entry>,
    }

    fn remove(path: &Path, folder: bool) -> std::io::Result<()> {
        match folder {
            true => std::fs::remove_dir_all(path),
            false => std::fs::remove_file(path),
        }
    }

    /// Rolls back (or, when its journal says done, cleans up) an older commit; returns
    /// whether there was one, and whether it was done.
    pub(super) fn recover(run_dir: &Path) -> Result<Option<bool>> {
        let path = run_dir.join(".freshen").join("commit.json");
        let Ok(text) = std::fs::read(&path) else {
            return Ok(None);
        };
        let journal: Journal = serde_json::from_slice(&text).map_err(|e| {
            Error::data(
                &path,
                None,
                format!(
                    "unreadable commit journal ({e}); check the outputs beside it and delete it"
                ),
            )
        })?;
        for e in journal.entries.iter().rev() {
            if journal.state == "done" {
                let _ = remove(&e.backup, e.folder);
                continue;
            }
            if e.backup.exists() {
                if e.dest.exists() {
                    let _ = std::fs::rename(&e.dest, &e.tmp);
                }
                let _ = std::fs::rename(&e.backup, &e.dest);
            } else if e.dest.exists() && !e.tmp.exists() {
                let _ = std::fs::rename(&e.dest, &e.tmp);
            }
            let _ = remove(&e.tmp, e.folder);
        }
        std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Some(journal.state == "done"))
    }
}

#[cfg(test)]
mod tests;
