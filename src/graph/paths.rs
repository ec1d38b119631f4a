//! The paths a run reads and writes: outputs never replace an input, never collide, and
//! can be written; stores are folders. Checked before anything runs.

use std::path::{Component, Path, PathBuf};

use super::kind::{Access, CheckCx, FileUse};
use super::Graph;
use crate::error::Result;

/// Every path use of the graph's nodes, with the node that has it.
pub fn uses(g: &Graph) -> Vec<(usize, FileUse)> {
    let mut out = Vec::new();
    for i in 0..g.nodes().len() {
        let cx = CheckCx { graph: g, node: i };
        out.extend(g.nodes()[i].kind.files(&cx).into_iter().map(|f| (i, f)));
    }
    out
}

/// The checks of the module docs.
pub(super) fn check(g: &Graph) -> Result<()> {
    let uses = uses(g);
    let error = |i: usize, f: &FileUse, message: String| {
        g.spec.error(&f.at, Some(&g.nodes()[i].id), message)
    };
    let mut written: Vec<(PathBuf, usize, &FileUse)> = Vec::new();
    for (i, f) in &uses {
        let canon = absolute(&f.path);
        let shown = f.path.display();
        match f.access {
            Access::Read => continue,
            Access::Store => {
                if f.path.is_file() {
                    return Err(error(
                        *i,
                        f,
                        format!("`{shown}` is a file (expected the store's folder)"),
                    ));
                }
                writable(&f.path).map_err(|m| error(*i, f, m))?;
                continue;
            }
            Access::Write | Access::WriteFolder => {}
        }
        if let Some((j, _)) = uses
            .iter()
            .find(|(_, r)| r.access == Access::Read && absolute(&r.path) == canon)
        {
            return Err(error(
                *i,
                f,
                format!(
                    "`{shown}` is an input file that node {} reads (expected a new path: the output would replace it)",
                    g.nodes()[*j].id
                ),
            ));
        }
        if let Some((_, j, other)) = written.iter().find(|(p, _, _)| *p == canon) {
            let key = match other.at.strip_prefix("nodes.") {
                Some(rest) => rest.split_once('.').map_or(rest, |(_, k)| k).to_string(),
                None => other.at.clone(),
            };
            return Err(error(
                *i,
                f,
                format!(
                    "`{shown}` is also written by node {} (its `{key}`; expected one path per output)",
                    g.nodes()[*j].id,
                ),
            ));
        }
        match f.access {
            Access::Write if f.path.is_dir() => {
                return Err(error(
                    *i,
                    f,
                    format!("`{shown}` is a folder (expected a file path)"),
                ))
            }
            Access::WriteFolder if f.path.is_file() => {
                return Err(error(
                    *i,
                    f,
                    format!("`{shown}` is a file (expected a folder path)"),
                ))
            }
            _ => {}
        }
        let parent = match f.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        writable(&parent).map_err(|m| error(*i, f, m))?;
        written.push((canon, *i, f));
    }
    Ok(())
}

/// The run's folder: the deepest folder holding every output the graph writes (its lock,
/// commit journal and resumable state live in its `.freshen/`). `None` when nothing is
/// written.
pub fn run_folder(g: &Graph) -> Option<PathBuf> {
    let mut common: Option<PathBuf> = None;
    for (_, f) in uses(g) {
        if !matches!(f.access, Access::Write | Access::WriteFolder) {
            continue;
        }
        let p = absolute(&f.path);
        let dir = match f.access {
            Access::WriteFolder => p.parent().map(Path::to_path_buf).unwrap_or(p),
            _ => p.parent().map(Path::to_path_buf).unwrap_or(p),
        };
        common = Some(match common {
            None => dir,
            Some(c) => {
                let mut shared = PathBuf::new();
                for (a, b) in c.components().zip(dir.components()) {
                    if a != b {
                        break;
                    }
                    shared.push(a);
                }
                shared
            }
        });
    }
    common
}

/// `path` made absolute and lexically normal, its longest existing prefix resolved
/// (symlinks included, but for a last component that is itself a link), so that two
/// spellings of one file compare equal.
pub fn absolute(path: &Path) -> PathBuf {
    let joined = match path.is_absolute() {
        true => path.to_path_buf(),
        false => std::env::current_dir().unwrap_or_default().join(path),
    };
    let mut normal = PathBuf::new();
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                normal.pop();
            }
            Component::CurDir => {}
            other => normal.push(other),
        }
    }
    let mut existing = normal.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(name) => rest.push(name.to_os_string()),
            None => break,
        }
        if !existing.pop() {
            break;
        }
    }
    // An output committed earlier is a link into its version folder (`store::commit`):
    // the link itself is the path, so a last component that is a link is not resolved.
    let is_link = std::fs::symlink_metadata(&existing).is_ok_and(|m| m.is_symlink());
    let mut out = match (is_link, existing.parent(), existing.file_name()) {
        (true, Some(parent), Some(name)) => parent
            .canonicalize()
            .unwrap_or_else(|_| parent.to_path_buf())
            .join(name),
        _ => existing.canonicalize().unwrap_or(existing),
    };
    for name in rest.into_iter().rev() {
        out.push(name);
    }
    out
}

/// Whether a folder can be created at `dir` (or is there) and written: its nearest
/// existing ancestor must be a folder in which a file can be created.
fn writable(dir: &Path) -> std::result::Result<(), String> {
    let mut existing = dir.to_path_buf();
    while !existing.exists() {
        if !existing.pop() || existing.as_os_str().is_empty() {
            existing = PathBuf::from(".");
            break;
        }
    }
    if !existing.is_dir() {
        return Err(format!(
            "`{}` is a file, so `{}` cannot be created (expected a folder)",
            existing.display(),
            dir.display()
        ));
    }
    let probe = existing.join(format!(".freshen-write-check-{}", std::process::id()));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(format!(
            "cannot write in `{}` ({e}; expected a folder this user can write)",
            existing.display()
        )),
    }
}
