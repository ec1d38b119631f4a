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

mod gloss;
mod licence;
mod parse;
mod split;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::store::parquet_io::write_parquet;
use crate::store::tables::{corpus_schema, queries_schema};

use self::gloss::gloss_definition;
use self::licence::copy_licence;
use self::parse::{read_all_synsets, Synset};
use self::split::{seeded_hash, split_of, Split, SAMPLE_SALT};
use super::tables::{corpus_batch, write_qrels};

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
        return Err(Error::Usage(
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
    let corpus_rows = corpus_batch(&corpus.ids, None, &corpus.texts)?;
    write_parquet(&out.join("corpus.parquet"), corpus_schema(), &[corpus_rows])?;
    let queries_batch = RecordBatch::try_new(
        queries_schema(),
        vec![string_array(&queries.ids), string_array(&queries.texts)],
    )?;
    write_parquet(
        &out.join("queries.parquet"),
        queries_schema(),
        &[queries_batch],
    )?;
    let splits = [Split::Train, Split::Dev, Split::Test];
    let splits = splits.map(|split| (split.name(), qrels[split as usize].as_slice()));
    write_qrels(out, &splits)?;
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

/// An Arrow string column of `values`.
fn string_array(values: &[String]) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values.iter()))
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
