//! `freshen data wordnet`: a reverse-dictionary retrieval set built from WordNet 3.0.
//!
//! Why this data set: it is real, licensed for redistribution, installed by one
//! `apt-get install wordnet-base`, and small enough to train a retriever on a laptop.
//! The task is a reverse dictionary: the query is a definition ("a member of the genus
//! Canis") and the relevant document is the synset it defines, written as its lemma
//! names, part of speech and hypernyms ("dog, domestic dog, Canis familiaris (noun);
//! canine, canid; domestic animal, domesticated animal"). The gloss never appears in
//! the corpus, so the pair cannot be matched by copying words.
//!
//! The files read are WordNet's own database files, `data.{noun,verb,adj,adv}`, in the
//! format of wndb(5). The output is a BEIR-layout folder of Parquet tables
//! (`corpus.parquet`, `queries.parquet`, `qrels/{train,dev,test}.parquet`) using the
//! schemas of [`crate::store::tables`], plus WordNet's licence as `LICENSE-WORDNET`.
//!
//! Everything is deterministic: rows are sorted by id, and the split and the sample are
//! chosen by a seeded FNV-1a/splitmix64 hash of the synset id that is the same on every
//! platform, so a sample's splits are subsets of the full set's splits.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, StringArray};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::store::parquet_io::{write_parquet, PendingFile};
use crate::store::tables::{corpus_schema, qrels_schema, queries_schema};

/// Where Debian's `wordnet-base` package installs the WordNet database files; the
/// default input so that `freshen data wordnet` works right after the package install.
pub const DEFAULT_WORDNET_DIR: &str = "/usr/share/wordnet";

/// Debian's copyright file for `wordnet-base`, which carries the WordNet 3.0 licence.
/// Used as the licence source only when reading Debian's own WordNet folder, because it
/// describes that installation and no other.
pub const DEBIAN_COPYRIGHT: &str = "/usr/share/doc/wordnet-base/copyright";

/// Name of the licence file written beside the tables: WordNet's licence requires its
/// notice to appear on all copies of the database, and the output is such a copy.
pub const LICENSE_FILE: &str = "LICENSE-WORDNET";

/// Seed of the split and sample hashes unless told otherwise; fixed so that everybody
/// who builds the set gets the same splits.
pub const DEFAULT_SEED: u64 = 13;

/// Salt of the hash that assigns a synset to train/dev/test.
const SPLIT_SALT: &[u8] = b"split";
/// Salt of the hash that ranks synsets for `sample`; distinct from the split salt so the
/// sample is not biased towards one split.
const SAMPLE_SALT: &[u8] = b"sample";

/// What to build and where: the input folder, the output folder, an optional sample size
/// and the seed of the split. Kept as a struct so the CLI and tests fill the same thing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordnetOptions {
    /// Folder holding `data.noun`, `data.verb`, `data.adj`, `data.adv` (a WordNet `dict`).
    pub wordnet_dir: PathBuf,
    /// Output folder; created if missing, its tables replaced.
    pub out: PathBuf,
    /// Keep only this many synsets (those with the smallest seeded hash), for a small
    /// committed sample; `None` keeps all of them.
    pub sample: Option<usize>,
    /// Seed of the split and sample hashes.
    pub seed: u64,
}

impl Default for WordnetOptions {
    /// Debian's WordNet in, `data/wordnet` out, the full set, seed 13: the values that
    /// make `freshen data wordnet` with no flags build the standard set.
    fn default() -> Self {
        Self {
            wordnet_dir: PathBuf::from(DEFAULT_WORDNET_DIR),
            out: PathBuf::from("data/wordnet"),
            sample: None,
            seed: DEFAULT_SEED,
        }
    }
}

/// Counts of what was written, so the caller can report them and tests can check them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WordnetStats {
    /// Corpus rows written (synsets kept, after sampling).
    pub synsets: usize,
    /// Queries written (kept synsets whose gloss has a definition).
    pub queries: usize,
    /// Qrels in the train split.
    pub train: usize,
    /// Qrels in the dev split.
    pub dev: usize,
    /// Qrels in the test split.
    pub test: usize,
    /// Kept synsets without a query because their gloss held only examples.
    pub skipped_empty_gloss: usize,
}

/// Builds the reverse-dictionary set described in the module docs from
/// `opts.wordnet_dir` into `opts.out`.
///
/// Errors: a missing data file is [`Error::Io`] naming it (with a hint to install
/// `wordnet-base`); a malformed synset line, a duplicate offset or a hypernym pointer to
/// a synset that does not exist is [`Error::Data`] naming the file and 1-based line.
pub fn build(opts: &WordnetOptions) -> Result<WordnetStats> {
    if opts.sample == Some(0) {
        return Err(Error::Other(
            "wordnet: sample must be at least 1 synset (leave it out to keep all)".into(),
        ));
    }
    let synsets = read_all_synsets(&opts.wordnet_dir)?;
    let by_id: HashMap<&str, usize> = synsets
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();

    // Which synsets to write: all, or the `n` smallest by the sample hash.
    let mut kept: Vec<usize> = (0..synsets.len()).collect();
    if let Some(n) = opts.sample {
        kept.sort_by_cached_key(|&i| {
            (
                seeded_hash(opts.seed, SAMPLE_SALT, &synsets[i].id),
                synsets[i].id.clone(),
            )
        });
        kept.truncate(n);
    }
    kept.sort_by(|&a, &b| synsets[a].id.cmp(&synsets[b].id));

    let mut stats = WordnetStats::default();
    let mut corpus = Columns::default();
    let mut queries = Columns::default();
    let mut qrels: [Vec<(String, String)>; 3] = Default::default();
    for &i in &kept {
        let s = &synsets[i];
        corpus.push(s.id.clone(), corpus_text(s, &synsets, &by_id)?);
        stats.synsets += 1;
        let definition = gloss_definition(&s.gloss);
        if definition.is_empty() {
            stats.skipped_empty_gloss += 1;
            continue;
        }
        let qid = format!("q{}", s.id);
        queries.push(qid.clone(), definition);
        stats.queries += 1;
        qrels[split_of(opts.seed, &s.id) as usize].push((qid, s.id.clone()));
    }
    stats.train = qrels[Split::Train as usize].len();
    stats.dev = qrels[Split::Dev as usize].len();
    stats.test = qrels[Split::Test as usize].len();

    let out = &opts.out;
    let titles = vec![""; corpus.ids.len()];
    let corpus_batch = RecordBatch::try_new(
        corpus_schema(),
        vec![
            string_array(&corpus.ids),
            Arc::new(StringArray::from(titles)) as ArrayRef,
            string_array(&corpus.texts),
        ],
    )?;
    write_parquet(
        &out.join("corpus.parquet"),
        corpus_schema(),
        &[corpus_batch],
    )?;
    let queries_batch = RecordBatch::try_new(
        queries_schema(),
        vec![string_array(&queries.ids), string_array(&queries.texts)],
    )?;
    write_parquet(
        &out.join("queries.parquet"),
        queries_schema(),
        &[queries_batch],
    )?;
    for split in [Split::Train, Split::Dev, Split::Test] {
        let rows = &qrels[split as usize];
        let qids: Vec<&str> = rows.iter().map(|(q, _)| q.as_str()).collect();
        let cids: Vec<&str> = rows.iter().map(|(_, c)| c.as_str()).collect();
        let batch = RecordBatch::try_new(
            qrels_schema(),
            vec![
                Arc::new(StringArray::from(qids)) as ArrayRef,
                Arc::new(StringArray::from(cids)) as ArrayRef,
                Arc::new(Int32Array::from(vec![1; rows.len()])) as ArrayRef,
            ],
        )?;
        let path = out.join("qrels").join(format!("{}.parquet", split.name()));
        write_parquet(&path, qrels_schema(), &[batch])?;
    }
    copy_licence(&opts.wordnet_dir, out)?;
    tracing::info!(
        synsets = stats.synsets,
        queries = stats.queries,
        train = stats.train,
        dev = stats.dev,
        test = stats.test,
        skipped_empty_gloss = stats.skipped_empty_gloss,
        out = %out.display(),
        "wordnet set written"
    );
    Ok(stats)
}

/// The three qrels splits, numbered as the hash assigns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    Train = 0,
    Dev = 1,
    Test = 2,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Dev => "dev",
            Split::Test => "test",
        }
    }
}

/// The split of a synset: `h % 10` of its seeded hash, 0-7 train, 8 dev, 9 test.
fn split_of(seed: u64, synset_id: &str) -> Split {
    match seeded_hash(seed, SPLIT_SALT, synset_id) % 10 {
        0..=7 => Split::Train,
        8 => Split::Dev,
        _ => Split::Test,
    }
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 over `bytes`, continuing from `h` (start with [`FNV_OFFSET`]).
fn fnv1a64(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// The splitmix64 output function applied to one state: a strong 64-bit finaliser that
/// spreads FNV's weak low bits before `% 10`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Hash of `(seed, salt, id)`: FNV-1a over the seed's little-endian bytes, the salt and
/// the id, then splitmix64. Plain integer arithmetic, so it is the same everywhere.
fn seeded_hash(seed: u64, salt: &[u8], id: &str) -> u64 {
    let h = fnv1a64(FNV_OFFSET, &seed.to_le_bytes());
    let h = fnv1a64(h, salt);
    let h = fnv1a64(h, id.as_bytes());
    splitmix64(h)
}

/// Id and text columns being gathered for one table.
#[derive(Default)]
struct Columns {
    ids: Vec<String>,
    texts: Vec<String>,
}

impl Columns {
    fn push(&mut self, id: String, text: String) {
        self.ids.push(id);
        self.texts.push(text);
    }
}

fn string_array(values: &[String]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values.iter()))
}

/// A part of speech as WordNet's data files name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pos {
    Noun,
    Verb,
    Adj,
    Adv,
}

impl Pos {
    /// The data files, in the order they are read.
    const ALL: [Pos; 4] = [Pos::Noun, Pos::Verb, Pos::Adj, Pos::Adv];

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
    fn word(self) -> &'static str {
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
struct Synset {
    /// `{pos letter}{offset:08}`, e.g. `n02084071`.
    id: String,
    pos: Pos,
    /// Lemma names, underscores turned to spaces, adjective markers stripped, in file order.
    lemmas: Vec<String>,
    /// Ids of hypernyms and instance hypernyms, in pointer order, without repeats.
    hypernyms: Vec<String>,
    /// The raw gloss (text after `|`).
    gloss: String,
    /// Where it was read, for errors found after parsing.
    file: PathBuf,
    line: usize,
}

/// Reads the four data files of `dir`, in noun, verb, adj, adv order.
fn read_all_synsets(dir: &Path) -> Result<Vec<Synset>> {
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

/// The corpus text of a synset: `lemmas (pos); hypernym lemmas; ...`.
fn corpus_text(s: &Synset, all: &[Synset], by_id: &HashMap<&str, usize>) -> Result<String> {
    let mut text = format!("{} ({})", s.lemmas.join(", "), s.pos.word());
    for h in &s.hypernyms {
        let target = by_id.get(h.as_str()).ok_or_else(|| {
            Error::data(
                &s.file,
                Some(s.line),
                format!("hypernym pointer to {h}, which no data file defines"),
            )
        })?;
        text.push_str("; ");
        text.push_str(&all[*target].lemmas.join(", "));
    }
    Ok(text)
}

/// The definition part of a gloss, which becomes the query.
///
/// A gloss is `definition; definition; "example"; "example"- Author`. Parts are split at
/// `;` outside double quotes; the definition is every part before the first one that
/// starts with `"`. What follows the first example in WordNet is more examples, broken
/// examples missing their opening quote, or usage notes that name the lemma itself (which
/// would leak the answer), so all of it is dropped. Examples glued to a definition with
/// `:` or `,` (`connect to a vehicle: "hitch the trailer to the car"`) are cut off for
/// the same reason. A later part with an odd number of `"` is a broken example
/// (`close in; darkness enclosed him"`) and is dropped; in the first part an odd `"` is a
/// typo at its end (`post office`: `...are available"`), removed. Empty parts and stray
/// `;` vanish. An empty result means the gloss had no definition.
fn gloss_definition(gloss: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    let mut start = 0;
    let mut in_quote = false;
    for (i, c) in gloss.char_indices() {
        match c {
            '"' => in_quote = !in_quote,
            ';' if !in_quote => {
                parts.push(&gloss[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&gloss[start..]);
    let mut kept: Vec<&str> = Vec::new();
    for (k, part) in parts.into_iter().enumerate() {
        let mut part = part.trim();
        if part.starts_with('"') {
            break;
        }
        if part.matches('"').count() % 2 == 1 {
            if k > 0 {
                continue;
            }
            part = part.trim_end_matches('"').trim_end();
        }
        let part = strip_glued_example(part);
        if !part.is_empty() {
            kept.push(part);
        }
    }
    kept.join("; ")
}

/// `text: "example"` or `text, e.g., "example"` → `text`; any other part unchanged.
///
/// Only a quotation that ends the part and follows `:` or `,` is cut: a quotation after
/// a plain space is usually part of the definition (`promise of reward as in "carrot
/// and stick"`).
fn strip_glued_example(part: &str) -> &str {
    let Some(body) = part.strip_suffix('"') else {
        return part;
    };
    let Some(open) = body.rfind('"') else {
        return part;
    };
    let before = part[..open].trim_end();
    let Some(rest) = before
        .strip_suffix(':')
        .or_else(|| before.strip_suffix(','))
    else {
        return part;
    };
    let rest = rest.trim_end();
    let rest = rest.strip_suffix("e.g.").unwrap_or(rest);
    rest.trim_end().trim_end_matches(',').trim_end()
}

/// Copies WordNet's licence to `out/LICENSE-WORDNET`: the folder's own `LICENSE` if it
/// has one, else Debian's copyright file when `dir` is Debian's WordNet folder. Without
/// either, nothing is written and a stale copy from an earlier build is removed, so the
/// output never carries a licence that is not the input's.
fn copy_licence(dir: &Path, out: &Path) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::parquet_io::read_all;
    use arrow::array::Array;

    /// data.noun: a licence header, a hypernym chain animal ← canine ← dog, a second
    /// hypernym (domestic animal), an instance hypernym (Lassie @i dog) and a gloss that
    /// is only an example. Pointers of other kinds (~, +, !) are present and ignored.
    const NOUN: &str = concat!(
        "  1 This software and database is being provided to you, the LICENSEE, by  \n",
        "  2 Princeton University under the following license.  \n",
        "00000100 03 n 02 animal 0 beast 0 002 ~ 00000200 n 0000 ~ 00000400 n 0000 | a living organism that moves; \"the animal kingdom\"  \n",
        "00000200 05 n 02 canine 0 canid 0 002 @ 00000100 n 0000 ~ 00000300 n 0000 | (zoology) a mammal of the family Canidae;  \n",
        "00000300 05 n 03 dog 0 domestic_dog 0 Canis_familiaris 0 004 @ 00000200 n 0000 @ 00000400 n 0000 + 00000100 v 0101 ~i 00000500 n 0000 | a member of the genus Canis; \"the dog barked all night\"; \"dogs are loyal\";  \n",
        "00000400 05 n 02 domestic_animal 0 domesticated_animal 0 002 @ 00000100 n 0000 @ 00000100 n 0000 | an animal \"tamed\" by people; \"the cow is a domestic animal\"  \n",
        "00000500 18 n 01 Lassie 0 001 @i 00000300 n 0000 | \"Lassie come home\"  \n",
    );

    /// data.verb: pointers, then frames (`f_cnt + f_num w_num`) before the gloss; an
    /// example containing `;`, and a broken example missing its opening quote.
    const VERB: &str = concat!(
        "  1 This software and database is being provided to you  \n",
        "00000100 38 v 02 run 0 go_running 1 002 @ 00000200 v 0000 + 00000300 n 0101 02 + 01 00 + 02 01 | move fast by using one's feet; \"run; don't walk\"  \n",
        "00000200 38 v 02 travel_rapidly 0 speed 2 001 ~ 00000100 v 0000 01 + 01 00 | move fast; he sped down the road\"  \n",
    );

    /// data.adj: a head adjective, a satellite with markers `(a)` and `(ip)` pointing to
    /// its head with pos `a`, and an antonym pointing with pos `s`.
    const ADJ: &str = concat!(
        "  1 licence  \n",
        "00000100 00 a 01 fast 0 002 & 00000200 s 0000 ! 00000300 a 0101 | acting or moving quickly; \"fast cars\"  \n",
        "00000200 00 s 02 speedy(a) 0 galore(ip) 0 001 & 00000100 a 0000 | characterized by speed; moving quickly; \"a speedy car\"  \n",
        "00000300 00 a 01 slow 0 001 ! 00000100 a 0101 | not moving quickly; taking a long time  \n",
    );

    /// data.adv: ten words, so w_cnt is the hex `0a` (read as decimal it would be wrong).
    const ADV: &str = concat!(
        "  1 licence  \n",
        "00000100 02 r 0a quickly 0 rapidly 0 speedily 0 chop-chop 0 apace 0 fast 0 swiftly 0 hastily 0 hurriedly 0 briskly 0 000 | with rapid movements; \"he works quickly\"  \n",
    );

    fn write_fixture(dir: &Path, noun: &str) {
        for (name, text) in [
            ("data.noun", noun),
            ("data.verb", VERB),
            ("data.adj", ADJ),
            ("data.adv", ADV),
        ] {
            std::fs::write(dir.join(name), text).expect("write fixture");
        }
    }

    fn opts(dir: &Path, out: &Path, sample: Option<usize>) -> WordnetOptions {
        WordnetOptions {
            wordnet_dir: dir.to_path_buf(),
            out: out.to_path_buf(),
            sample,
            seed: DEFAULT_SEED,
        }
    }

    fn strings(batches: &[RecordBatch], col: usize) -> Vec<String> {
        let mut v = Vec::new();
        for b in batches {
            let a = b
                .column(col)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("utf8 column");
            v.extend((0..a.len()).map(|i| a.value(i).to_string()));
        }
        v
    }

    fn pairs(path: &Path) -> Vec<(String, String)> {
        let b = read_all(path).expect("read parquet");
        strings(&b, 0).into_iter().zip(strings(&b, 1)).collect()
    }

    fn qrels(out: &Path, split: &str) -> Vec<(String, String, i32)> {
        let b = read_all(&out.join("qrels").join(format!("{split}.parquet"))).expect("qrels");
        let mut scores = Vec::new();
        for batch in &b {
            let a = batch
                .column(2)
                .as_any()
                .downcast_ref::<Int32Array>()
                .expect("int32 score");
            scores.extend(a.values().iter().copied());
        }
        strings(&b, 0)
            .into_iter()
            .zip(strings(&b, 1))
            .zip(scores)
            .map(|((q, c), s)| (q, c, s))
            .collect()
    }

    fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn hash_functions_match_reference_values() {
        // FNV-1a 64 test vectors and splitmix64's first output from state 0.
        assert_eq!(fnv1a64(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(FNV_OFFSET, b"foobar"), 0x8594_4171_f739_67e8);
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        // The seed and the salt both change the hash.
        let h = seeded_hash(13, SPLIT_SALT, "n02084071");
        assert_ne!(h, seeded_hash(14, SPLIT_SALT, "n02084071"));
        assert_ne!(h, seeded_hash(13, SAMPLE_SALT, "n02084071"));
    }

    #[test]
    fn split_is_about_80_10_10() {
        let mut counts = [0usize; 3];
        for i in 0..10_000 {
            counts[split_of(DEFAULT_SEED, &format!("n{i:08}")) as usize] += 1;
        }
        assert!((7_700..=8_300).contains(&counts[0]), "{counts:?}");
        assert!((850..=1_150).contains(&counts[1]), "{counts:?}");
        assert!((850..=1_150).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn gloss_definition_drops_examples() {
        assert_eq!(gloss_definition("a b; \"c; d\"; e"), "a b");
        assert_eq!(
            gloss_definition("close in; darkness enclosed him\""),
            "close in"
        );
        assert_eq!(gloss_definition("x \"y\" z;;  ; "), "x \"y\" z");
        assert_eq!(gloss_definition("\"only an example\""), "");
        assert_eq!(gloss_definition(""), "");
        // A stray closing quote at the end of the first part is a typo, not an example.
        assert_eq!(gloss_definition("a local branch\""), "a local branch");
        // Examples glued on with `:` or `,` are cut; a quotation after a space is kept.
        assert_eq!(
            gloss_definition("connect to a vehicle: \"hitch the trailer\""),
            "connect to a vehicle"
        );
        assert_eq!(gloss_definition("propel, \"Carry the ball\""), "propel");
        assert_eq!(
            gloss_definition("reach a goal, e.g., \"make the first team\""),
            "reach a goal"
        );
        assert_eq!(gloss_definition("x; e.g., \"keep clean\""), "x");
        assert_eq!(
            gloss_definition("promise of reward as in \"carrot and stick\""),
            "promise of reward as in \"carrot and stick\""
        );
    }

    #[test]
    fn builds_exact_tables_from_fixture() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        write_fixture(dir.path(), NOUN);
        std::fs::write(dir.path().join("LICENSE"), "WordNet 3.0 licence text\n").expect("licence");

        let stats = build(&opts(dir.path(), out.path(), None)).expect("build");

        let corpus_batches = read_all(&out.path().join("corpus.parquet")).expect("corpus");
        let ids = strings(&corpus_batches, 0);
        let titles = strings(&corpus_batches, 1);
        let texts = strings(&corpus_batches, 2);
        assert!(titles.iter().all(|t| t.is_empty()));
        let corpus: Vec<(String, String)> = ids.into_iter().zip(texts).collect();
        assert_eq!(
            corpus,
            owned(&[
                ("a00000100", "fast (adjective)"),
                ("a00000200", "speedy, galore (adjective)"),
                ("a00000300", "slow (adjective)"),
                ("n00000100", "animal, beast (noun)"),
                ("n00000200", "canine, canid (noun); animal, beast"),
                (
                    "n00000300",
                    "dog, domestic dog, Canis familiaris (noun); canine, canid; \
                     domestic animal, domesticated animal"
                ),
                (
                    "n00000400",
                    "domestic animal, domesticated animal (noun); animal, beast"
                ),
                (
                    "n00000500",
                    "Lassie (noun); dog, domestic dog, Canis familiaris"
                ),
                (
                    "r00000100",
                    "quickly, rapidly, speedily, chop-chop, apace, fast, swiftly, hastily, \
                     hurriedly, briskly (adverb)"
                ),
                ("v00000100", "run, go running (verb); travel rapidly, speed"),
                ("v00000200", "travel rapidly, speed (verb)"),
            ])
        );

        let queries = pairs(&out.path().join("queries.parquet"));
        assert_eq!(
            queries,
            owned(&[
                ("qa00000100", "acting or moving quickly"),
                ("qa00000200", "characterized by speed; moving quickly"),
                ("qa00000300", "not moving quickly; taking a long time"),
                ("qn00000100", "a living organism that moves"),
                ("qn00000200", "(zoology) a mammal of the family Canidae"),
                ("qn00000300", "a member of the genus Canis"),
                ("qn00000400", "an animal \"tamed\" by people"),
                ("qr00000100", "with rapid movements"),
                ("qv00000100", "move fast by using one's feet"),
                ("qv00000200", "move fast"),
            ])
        );

        // Every query is in exactly one split, judged relevant to its own synset, in the
        // split its hash assigns, and each split file is sorted by query id.
        let mut seen = Vec::new();
        for split in [Split::Train, Split::Dev, Split::Test] {
            let rows = qrels(out.path(), split.name());
            let mut sorted = rows.clone();
            sorted.sort();
            assert_eq!(rows, sorted, "{} not sorted", split.name());
            for (q, c, score) in rows {
                assert_eq!(q, format!("q{c}"));
                assert_eq!(score, 1);
                assert_eq!(split_of(DEFAULT_SEED, &c), split, "{c}");
                seen.push(q);
            }
        }
        seen.sort();
        let query_ids: Vec<String> = queries.iter().map(|(q, _)| q.clone()).collect();
        assert_eq!(seen, query_ids);

        assert_eq!(stats.synsets, 11);
        assert_eq!(stats.queries, 10);
        assert_eq!(stats.skipped_empty_gloss, 1);
        assert_eq!(stats.train + stats.dev + stats.test, 10);
        assert_eq!(stats.train, qrels(out.path(), "train").len());
        assert_eq!(stats.dev, qrels(out.path(), "dev").len());

        let licence =
            std::fs::read_to_string(out.path().join(LICENSE_FILE)).expect("licence copied");
        assert_eq!(licence, "WordNet 3.0 licence text\n");
    }

    #[test]
    fn no_licence_writes_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        write_fixture(dir.path(), NOUN);
        std::fs::write(out.path().join(LICENSE_FILE), "stale").expect("stale licence");
        build(&opts(dir.path(), out.path(), None)).expect("build");
        assert!(!out.path().join(LICENSE_FILE).exists());
    }

    #[test]
    fn sample_keeps_n_smallest_with_full_texts_and_splits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let full_out = tempfile::tempdir().expect("tempdir");
        let sample_out = tempfile::tempdir().expect("tempdir");
        write_fixture(dir.path(), NOUN);
        build(&opts(dir.path(), full_out.path(), None)).expect("full");
        let stats = build(&opts(dir.path(), sample_out.path(), Some(4))).expect("sample");

        let full = pairs(&full_out.path().join("corpus.parquet"));
        let sample = pairs(&sample_out.path().join("corpus.parquet"));
        assert_eq!(sample.len(), 4);
        assert_eq!(stats.synsets, 4);

        // Exactly the four smallest sample hashes, sorted by id.
        let mut ranked: Vec<&String> = full.iter().map(|(id, _)| id).collect();
        ranked.sort_by_key(|id| (seeded_hash(DEFAULT_SEED, SAMPLE_SALT, id), (*id).clone()));
        let mut expected: Vec<String> = ranked[..4].iter().map(|s| (*s).clone()).collect();
        expected.sort();
        let got: Vec<String> = sample.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(got, expected);

        // Same corpus text as in the full set (hypernyms come from all of WordNet).
        for row in &sample {
            assert!(full.contains(row), "{row:?} differs from the full set");
        }
        // Each sample split is a subset of the full split.
        for split in ["train", "dev", "test"] {
            let full_rows = qrels(full_out.path(), split);
            for row in qrels(sample_out.path(), split) {
                assert!(full_rows.contains(&row), "{row:?} not in full {split}");
            }
        }
        let queries = pairs(&sample_out.path().join("queries.parquet"));
        assert_eq!(queries.len() + stats.skipped_empty_gloss, 4);

        // A sample larger than WordNet keeps everything.
        let all = build(&opts(dir.path(), sample_out.path(), Some(1000))).expect("big sample");
        assert_eq!(all.synsets, full.len());
        assert!(build(&opts(dir.path(), sample_out.path(), Some(0))).is_err());
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        // Line 4 claims w_cnt `zz`, which is not hexadecimal.
        let bad = NOUN.replacen("00000200 05 n 02 canine", "00000200 05 n zz canine", 1);
        write_fixture(dir.path(), &bad);
        let err = build(&opts(dir.path(), out.path(), None)).expect_err("malformed");
        match &err {
            Error::Data { file, row, .. } => {
                assert_eq!(file, &dir.path().join("data.noun"));
                assert_eq!(*row, Some(4));
            }
            other => panic!("expected a data error, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("data.noun: row 4:"), "{msg}");
        assert!(msg.contains("w_cnt `zz`"), "{msg}");

        // A p_cnt that leaves tokens over is caught too.
        let bad = NOUN.replacen(
            "002 @ 00000100 n 0000 ~ 00000300",
            "001 @ 00000100 n 0000 ~ 00000300",
            1,
        );
        write_fixture(dir.path(), &bad);
        let err = build(&opts(dir.path(), out.path(), None)).expect_err("malformed");
        assert!(
            err.to_string().contains("data.noun: row 4: unexpected `~`"),
            "{err}"
        );

        // A hypernym pointing nowhere names the line of the pointing synset.
        let bad = NOUN.replacen("@i 00000300 n", "@i 00000999 n", 1);
        write_fixture(dir.path(), &bad);
        let err = build(&opts(dir.path(), out.path(), None)).expect_err("dangling");
        assert!(
            err.to_string()
                .contains("data.noun: row 7: hypernym pointer to n00000999"),
            "{err}"
        );
        assert!(!out.path().join("corpus.parquet").exists());
    }

    #[test]
    fn missing_file_is_io_error_with_install_hint() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        write_fixture(dir.path(), NOUN);
        std::fs::remove_file(dir.path().join("data.verb")).expect("remove");
        let err = build(&opts(dir.path(), out.path(), None)).expect_err("missing");
        assert!(matches!(&err, Error::Io { path, .. } if path == &dir.path().join("data.verb")));
        assert!(
            err.to_string().contains("apt-get install wordnet-base"),
            "{err}"
        );
    }
}
