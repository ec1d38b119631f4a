//! WordNet's licence beside the tables: its notice must appear on all copies of the
//! database, and the output is such a copy.

use std::path::{Path, PathBuf};

use super::{DEBIAN_COPYRIGHT, DEFAULT_WORDNET_DIR, LICENSE_FILE};
use crate::error::{Error, Result};
use crate::store::parquet_io::PendingFile;

/// Copies WordNet's licence to `out/LICENSE-WORDNET`: the folder's own `LICENSE` if it
/// has one, else Debian's copyright file when `dir` is Debian's WordNet folder. Without
/// either, nothing is written and a stale copy from an earlier build is removed, so the
/// output never carries a licence that is not the input's.
pub(super) fn copy_licence(dir: &Path, out: &Path) -> Result<()> {
    let dest = out.join(LICENSE_FILE);
    let Some(source) = licence_source(dir) else {
        tracing::warn!(dir = %dir.display(), "no WordNet licence found; {LICENSE_FILE} not written");
        match std::fs::remove_file(&dest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&dest, e)),
        }
        return Ok(());
    };
    let text = std::fs::read(&source).map_err(|e| Error::io(&source, e))?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let pending = PendingFile::new(&dest);
    std::fs::write(pending.tmp_path(), text).map_err(|e| Error::io(pending.tmp_path(), e))?;
    pending.commit()
}

/// Where the licence is copied from, if anywhere (see [`copy_licence`]).
fn licence_source(dir: &Path) -> Option<PathBuf> {
    let own = dir.join("LICENSE");
    if own.is_file() {
        return Some(own);
    }
    let debian = Path::new(DEBIAN_COPYRIGHT);
    let is_debian_dir = match (
        std::fs::canonicalize(dir),
        std::fs::canonicalize(DEFAULT_WORDNET_DIR),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    (is_debian_dir && debian.is_file()).then(|| debian.to_path_buf())
}
