//! Line-by-line reading of the text formats (JSONL, TSV): 1-based line numbers for
//! messages, blank lines skipped, one reused buffer.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Reads a text file one line at a time, reusing one buffer, counting line numbers.
pub(super) struct Lines {
    /// The file, for messages.
    pub(super) path: PathBuf,
    reader: BufReader<File>,
    buf: String,
    line: usize,
}

impl Lines {
    pub(super) fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            reader: BufReader::new(file),
            buf: String::new(),
            line: 0,
        })
    }

    /// The next line with something other than whitespace, without its line ending (and
    /// without a byte-order mark on line 1), with its 1-based line number.
    pub(super) fn next_nonblank(&mut self) -> Result<Option<(usize, &str)>> {
        let (start, end) = loop {
            self.buf.clear();
            match self.reader.read_line(&mut self.buf) {
                Ok(0) => return Ok(None),
                Ok(_) => self.line += 1,
                Err(e) if e.kind() == ErrorKind::InvalidData => {
                    return Err(Error::data(
                        &self.path,
                        Some(self.line + 1),
                        "invalid UTF-8 (expected UTF-8 text)",
                    ))
                }
                Err(e) => return Err(Error::io(&self.path, e)),
            }
            let mut s = self.buf.as_str();
            let start = if self.line == 1 && s.starts_with('\u{feff}') {
                '\u{feff}'.len_utf8()
            } else {
                0
            };
            s = &s[start..];
            let s = s.strip_suffix('\n').unwrap_or(s);
            let s = s.strip_suffix('\r').unwrap_or(s);
            if !s.trim().is_empty() {
                break (start, start + s.len());
            }
        };
        Ok(Some((self.line, &self.buf[start..end])))
    }
}

/// Counts lines with something other than whitespace, in fixed-size chunks so that a
/// huge line costs no memory.
pub(super) fn count_nonblank_lines(path: &Path) -> Result<usize> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut chunk = vec![0u8; 1 << 16];
    let (mut count, mut nonblank) = (0, false);
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(path, e)),
        };
        for &b in &chunk[..n] {
            if b == b'\n' {
                count += usize::from(nonblank);
                nonblank = false;
            } else if !b.is_ascii_whitespace() {
                nonblank = true;
            }
        }
    }
    Ok(count + usize::from(nonblank))
}
