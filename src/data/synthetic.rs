//! `freshen data synthetic`: a purely synthetic retrieval set of any size, for measuring
//! time and memory at corpus sizes no real set here reaches (4,000,000 rows and more).
//!
//! The generator, seeded and the same on every platform: a vocabulary of `vocab`
//! pronounceable pseudo-words (word `j` is `j` written in a bijective base-60 numeration
//! of consonant-vowel syllables, so every word is distinct); word ranks drawn log-uniformly
//! (`floor(vocab^u)`, a Zipf law of exponent 1, as natural text roughly follows).
//! Target `i` (id `s` + zero-padded `i`) has 8-16 words from the stream keyed by
//! `(seed, i)`. One target in `every` (by a seeded hash of `i`) gets a query: 4 of its
//! words in random order plus 2 other random words, so the query is answerable but not a
//! copy; queries are split 8/1/1 into train/dev/test by another seeded hash. The numbers
//! it yields measure speed and memory, not accuracy: nothing about them is real text.

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use freshen_operators::hashing::hash64_seeded;
use freshen_operators::random::SplitMix64;

use super::tables::{below, corpus_batch, stream, write_qrels};
use crate::error::{Error, Result};
use crate::store::parquet_io::{write_parquet, AtomicParquetWriter};
use crate::store::tables::queries_schema;

/// Rows per written corpus batch.
const BATCH_ROWS: usize = 65_536;
/// Consonants and vowels of the pseudo-words' syllables (12 × 5 = 60 syllables).
const CONSONANTS: &[u8] = b"bdfgklmnprst";
const VOWELS: &[u8] = b"aeiou";

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntheticOptions {
    /// Output folder; created if missing, its tables replaced.
    pub out: PathBuf,
    /// Corpus rows.
    pub targets: usize,
    /// One target in this many gets a query.
    pub every: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Seed of the generator.
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SyntheticStats {
    /// Corpus rows.
    pub targets: usize,
    /// Queries (train, dev, test together).
    pub queries: usize,
    /// Queries per split: train, dev, test.
    pub splits: [usize; 3],
}

/// Pseudo-word `j`: `j + 1` in bijective base 60 over consonant-vowel syllables.
pub(crate) fn word(j: usize) -> String {
    let mut n = j + 1;
    let mut out = String::new();
    while n > 0 {
        let d = (n - 1) % 60;
        out.push(CONSONANTS[d / VOWELS.len()] as char);
        out.push(VOWELS[d % VOWELS.len()] as char);
        n = (n - 1) / 60;
    }
    out
}

/// A word rank drawn log-uniformly below `vocab`.
fn rank(rng: &mut SplitMix64, vocab: usize) -> usize {
    let u = rng.next_f64();
    ((vocab as f64).powf(u) as usize)
        .saturating_sub(1)
        .min(vocab - 1)
}

/// The words of target `i`.
fn target_words(seed: u64, i: usize, vocab: usize) -> Vec<usize> {
    let mut rng = stream(seed, i as u64);
    let len = 8 + below(&mut rng, 9);
    (0..len).map(|_| rank(&mut rng, vocab)).collect()
}

/// Builds the set described in the module docs.
pub fn build(opts: &SyntheticOptions) -> Result<SyntheticStats> {
    if opts.targets == 0 || opts.every == 0 || opts.vocab < 2 {
        return Err(Error::Usage(
            "synthetic: --targets and --every must be at least 1 and --vocab at least 2".into(),
        ));
    }
    let width = opts.targets.to_string().len();
    let text = |words: &[usize]| words.iter().map(|&w| word(w)).collect::<Vec<_>>().join(" ");
    let mut stats = SyntheticStats {
        targets: opts.targets,
        ..Default::default()
    };
    let mut writer = AtomicParquetWriter::create(
        &opts.out.join("corpus.parquet"),
        crate::store::tables::corpus_schema(),
    )?;
    let (mut qids, mut qtexts) = (Vec::new(), Vec::new());
    let mut qrels: [Vec<(String, String)>; 3] = Default::default();
    for start in (0..opts.targets).step_by(BATCH_ROWS) {
        let end = (start + BATCH_ROWS).min(opts.targets);
        let (mut ids, mut texts) = (Vec::new(), Vec::new());
        for i in start..end {
            let id = format!("s{i:0width$}");
            let words = target_words(opts.seed, i, opts.vocab);
            texts.push(text(&words));
            let key = (i as u64).to_le_bytes();
            if hash64_seeded(opts.seed ^ 0x5157, &key).is_multiple_of(opts.every as u64) {
                let mut rng = stream(opts.seed ^ 0x9e37, i as u64);
                let mut q: Vec<usize> = (0..4)
                    .map(|_| words[below(&mut rng, words.len())])
                    .collect();
                q.push(rank(&mut rng, opts.vocab));
                q.push(rank(&mut rng, opts.vocab));
                for k in (1..q.len()).rev() {
                    q.swap(k, below(&mut rng, k + 1));
                }
                let qid = format!("q{id}");
                qids.push(qid.clone());
                qtexts.push(text(&q));
                let split = match hash64_seeded(opts.seed ^ 0x5917, &key) % 10 {
                    0..=7 => 0,
                    8 => 1,
                    _ => 2,
                };
                qrels[split].push((qid, id.clone()));
            }
            ids.push(id);
        }
        writer.write(&corpus_batch(&ids, None, &texts)?)?;
    }
    stats.queries = qids.len();
    let queries = RecordBatch::try_new(
        queries_schema(),
        vec![
            Arc::new(StringArray::from_iter_values(&qids)) as ArrayRef,
            Arc::new(StringArray::from_iter_values(&qtexts)) as ArrayRef,
        ],
    )?;
    write_parquet(
        &opts.out.join("queries.parquet"),
        queries_schema(),
        &[queries],
    )?;
    stats.splits = qrels.each_ref().map(Vec::len);
    let [train, dev, test] = &qrels;
    write_qrels(&opts.out, &[("train", train), ("dev", dev), ("test", test)])?;
    writer.finish()?.commit()?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::parquet_io::read_all;

    #[test]
    fn words_are_distinct_and_pronounceable() {
        let words: std::collections::HashSet<String> = (0..5000).map(word).collect();
        assert_eq!(words.len(), 5000);
        assert_eq!(word(0), "ba");
        assert_eq!(word(60), "baba");
    }

    #[test]
    fn the_set_is_deterministic_and_its_queries_come_from_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let opts = |out: &str| SyntheticOptions {
            out: dir.path().join(out),
            targets: 3000,
            every: 10,
            vocab: 500,
            seed: 4,
        };
        let a = build(&opts("a")).unwrap();
        let b = build(&opts("b")).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.targets, 3000);
        assert!((200..400).contains(&a.queries), "{a:?}");
        assert_eq!(a.splits.iter().sum::<usize>(), a.queries);
        let read = |out: &str, file: &str| {
            let batches = read_all(&dir.path().join(out).join(file)).unwrap();
            arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
        };
        assert_eq!(read("a", "corpus.parquet"), read("b", "corpus.parquet"));
        let corpus = read("a", "corpus.parquet");
        let queries = read("a", "queries.parquet");
        let texts = corpus
            .column(2)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let qids = queries
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        let qtexts = queries
            .column(1)
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        for q in 0..queries.num_rows() {
            let row: usize = qids.value(q)[2..].parse().unwrap();
            let target: std::collections::HashSet<&str> = texts.value(row).split(' ').collect();
            let shared = qtexts
                .value(q)
                .split(' ')
                .filter(|w| target.contains(w))
                .count();
            assert!(
                shared >= 4,
                "query {q} shares {shared} words with its target"
            );
        }
    }
}
