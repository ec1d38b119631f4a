//! Reading WordNet's data files, `data.{noun,verb,adj,adv}`: synset lines in the format
//! of wndb(5), parsed strictly so that a malformed line is reported, not skipped.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A part of speech as WordNet's data files name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pos {
    Noun,
    Verb,
    Adj,
    Adv,
}

impl Pos {
    /// The data files, in the order they are read.
    const ALL: [Pos; 4] = [Pos::Noun, Pos::Verb, Pos::Adj, Pos::Adv];

    /// The data file of this part of speech.
    fn file_name(self) -> &'static str {
        match self {
            Pos::Noun => "data.noun",
            Pos::Verb => "data.verb",
            Pos::Adj => "data.adj",
            Pos::Adv => "data.adv",
        }
    }

    /// The letter of synset ids (satellites share `a` with head adjectives).
    fn letter(self) -> char {
        match self {
            Pos::Noun => 'n',
            Pos::Verb => 'v',
            Pos::Adj => 'a',
            Pos::Adv => 'r',
        }
    }

    /// The word written in the corpus text.
    pub(super) fn word(self) -> &'static str {
        match self {
            Pos::Noun => "noun",
            Pos::Verb => "verb",
            Pos::Adj => "adjective",
            Pos::Adv => "adverb",
        }
    }

    /// The part of speech of an `ss_type` or pointer `pos` letter (`s`, satellite, is an
    /// adjective).
    fn from_letter(s: &str) -> Option<Pos> {
        match s {
            "n" => Some(Pos::Noun),
            "v" => Some(Pos::Verb),
            "a" | "s" => Some(Pos::Adj),
            "r" => Some(Pos::Adv),
            _ => None,
        }
    }
}

/// One synset as read from a data file.
#[derive(Debug)]
pub(super) struct Synset {
    /// `{pos letter}{offset:08}`, e.g. `n02084071`.
    pub(super) id: String,
    pub(super) pos: Pos,
    /// Lemma names, underscores turned to spaces, adjective markers stripped, in file order.
    pub(super) lemmas: Vec<String>,
    /// Ids of hypernyms and instance hypernyms, in pointer order, without repeats.
    pub(super) hypernyms: Vec<String>,
    /// The raw gloss (text after `|`).
    pub(super) gloss: String,
    /// Where it was read, for errors found after parsing.
    pub(super) file: PathBuf,
    pub(super) line: usize,
}

/// Reads the four data files of `dir`, in noun, verb, adj, adv order.
pub(super) fn read_all_synsets(dir: &Path) -> Result<Vec<Synset>> {
    let mut all = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for pos in Pos::ALL {
        let path = dir.join(pos.file_name());
        let text = std::fs::read_to_string(&path).map_err(|e| missing_file_error(&path, e))?;
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            if line.starts_with("  ") || line.trim().is_empty() {
                continue; // licence header, or a blank line at the end
            }
            let synset = parse_synset_line(line, pos)
                .map_err(|msg| Error::data(&path, Some(line_no), msg))?
                .with_place(&path, line_no);
            if !seen.insert(synset.id.clone()) {
                return Err(Error::data(
                    &path,
                    Some(line_no),
                    format!("duplicate synset offset ({} was already read)", synset.id),
                ));
            }
            all.push(synset);
        }
    }
    Ok(all)
}

/// An I/O error on a data file; a missing one says how to get WordNet.
fn missing_file_error(path: &Path, e: std::io::Error) -> Error {
    let source = if e.kind() == std::io::ErrorKind::NotFound {
        std::io::Error::new(
            e.kind(),
            format!(
                "{e} (WordNet data file missing: install it with `apt-get install wordnet-base`, \
                 or point the WordNet folder at a WordNet 3.0 `dict` directory)"
            ),
        )
    } else {
        e
    };
    Error::io(path, source)
}

impl Synset {
    /// Records where the synset was read, for errors found after parsing.
    fn with_place(mut self, file: &Path, line: usize) -> Self {
        self.file = file.to_path_buf();
        self.line = line;
        self
    }
}

/// Whitespace tokens of a synset line's head, with the field being read named in errors.
struct Tokens<'a> {
    iter: std::str::SplitWhitespace<'a>,
}

impl<'a> Tokens<'a> {
    /// The next token; `what` names it when the line ends first.
    fn next(&mut self, what: &str) -> std::result::Result<&'a str, String> {
        self.iter
            .next()
            .ok_or_else(|| format!("line ends before {what}"))
    }

    /// A decimal number of at most `max_digits` digits.
    fn decimal(&mut self, what: &str, max_digits: usize) -> std::result::Result<usize, String> {
        let tok = self.next(what)?;
        parse_digits(tok, 10, max_digits).ok_or_else(|| {
            format!("{what} `{tok}` is not a decimal number of at most {max_digits} digits")
        })
    }

    /// A hexadecimal number of at most `max_digits` digits.
    fn hex(&mut self, what: &str, max_digits: usize) -> std::result::Result<usize, String> {
        let tok = self.next(what)?;
        parse_digits(tok, 16, max_digits).ok_or_else(|| {
            format!("{what} `{tok}` is not a hexadecimal number of at most {max_digits} digits")
        })
    }
}

/// `tok` as a number in `radix`, when it has 1 to `max_digits` digits and nothing else.
fn parse_digits(tok: &str, radix: u32, max_digits: usize) -> Option<usize> {
    if tok.is_empty() || tok.len() > max_digits || !tok.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    usize::from_str_radix(tok, radix).ok()
}

/// Parses one synset line of `data.{pos}` (wndb(5)):
/// `offset lex_filenum ss_type w_cnt (word lex_id)* p_cnt (ptr)* [frames] | gloss`.
/// Returns a message saying what is wrong; the caller adds file and line.
fn parse_synset_line(line: &str, file_pos: Pos) -> std::result::Result<Synset, String> {
    let (head, gloss) = line
        .split_once('|')
        .ok_or("no `|` before the gloss (expected a wndb(5) synset line)")?;
    let mut t = Tokens {
        iter: head.split_whitespace(),
    };
    let offset = t.decimal("synset_offset", 8)?;
    t.decimal("lex_filenum", 2)?;
    let ss_type = t.next("ss_type")?;
    let pos = Pos::from_letter(ss_type)
        .ok_or_else(|| format!("ss_type `{ss_type}` is not one of n, v, a, s, r"))?;
    if pos != file_pos {
        return Err(format!(
            "ss_type `{ss_type}` does not belong in {}",
            file_pos.file_name()
        ));
    }
    let w_cnt = t.hex("w_cnt", 2)?;
    if w_cnt == 0 {
        return Err("w_cnt is 0 (a synset has at least one word)".into());
    }
    let mut lemmas: Vec<String> = Vec::with_capacity(w_cnt);
    for k in 0..w_cnt {
        let word = t.next(&format!("word {} of {w_cnt}", k + 1))?;
        t.hex(&format!("lex_id of `{word}`"), 1)?;
        let name = lemma_name(word);
        if name.is_empty() {
            return Err(format!("word `{word}` is empty once its marker is removed"));
        }
        if !lemmas.contains(&name) {
            lemmas.push(name);
        }
    }
    let p_cnt = t.decimal("p_cnt", 3)?;
    let mut hypernyms: Vec<String> = Vec::new();
    for k in 0..p_cnt {
        let what = format!("pointer {} of {p_cnt}", k + 1);
        let symbol = t.next(&format!("{what}: pointer_symbol"))?;
        let target = t.decimal(&format!("{what}: synset_offset"), 8)?;
        let target_pos_tok = t.next(&format!("{what}: pos"))?;
        let target_pos = Pos::from_letter(target_pos_tok)
            .ok_or_else(|| format!("{what}: pos `{target_pos_tok}` is not one of n, v, a, s, r"))?;
        t.hex(&format!("{what}: source/target"), 4)?;
        if symbol == "@" || symbol == "@i" {
            let id = synset_id(target_pos, target);
            if !hypernyms.contains(&id) {
                hypernyms.push(id);
            }
        }
    }
    if pos == Pos::Verb {
        let f_cnt = t.decimal("f_cnt", 2)?;
        for k in 0..f_cnt {
            let what = format!("frame {} of {f_cnt}", k + 1);
            let plus = t.next(&what)?;
            if plus != "+" {
                return Err(format!("{what} starts with `{plus}`, not `+`"));
            }
            t.decimal(&format!("{what}: f_num"), 2)?;
            t.hex(&format!("{what}: w_num"), 2)?;
        }
    }
    if let Some(extra) = t.iter.next() {
        return Err(format!(
            "unexpected `{extra}` after the pointers{} (w_cnt or p_cnt does not match the line)",
            if pos == Pos::Verb { " and frames" } else { "" }
        ));
    }
    Ok(Synset {
        id: synset_id(pos, offset),
        pos,
        lemmas,
        hypernyms,
        gloss: gloss.trim().to_string(),
        file: PathBuf::new(),
        line: 0,
    })
}

/// A synset id: the part of speech letter and the 8-digit offset, e.g. `n02084071`.
fn synset_id(pos: Pos, offset: usize) -> String {
    format!("{}{offset:08}", pos.letter())
}

/// A data-file word as a lemma name: the adjective markers `(a)`, `(p)`, `(ip)` removed
/// and underscores turned into spaces.
fn lemma_name(word: &str) -> String {
    let word = ["(a)", "(p)", "(ip)"]
        .iter()
        .find_map(|m| word.strip_suffix(m))
        .unwrap_or(word);
    word.replace('_', " ")
}
