//! `freshen data distractors`: a real retrieval set grown to millions of targets by
//! adding generated distractor targets, its queries and qrels unchanged.
//!
//! Why: the corrector's saving is the refresh forwards, N per refresh, against the
//! b·(k+1) targets a step touches; it pays only when the corpus is much larger than a
//! batch. Real sets with millions of passages cannot be fetched here, so the real
//! WordNet set keeps its real queries and judgements while its ranking gets harder as
//! distractors are added.
//!
//! The generator (documented so that anyone can rebuild the same set): distractor `i`
//! draws, from a seeded splitmix64 stream keyed by `(seed, i)`, one real target text as
//! a *template* and replaces each of its words by a word drawn from the unigram
//! distribution of all words of the real targets, keeping the template's punctuation
//! and its part-of-speech tags (`(noun)`). So a distractor looks like a target ("lemma,
//! lemma (noun); hypernym, hypernym"), shares the real vocabulary (a bag-of-words or
//! hashed encoder cannot tell it apart by its words alone) and says nothing about any
//! query: its words are independent draws. A generated text identical to a real target's
//! text (which would be an unlabelled positive) or to an earlier distractor is drawn
//! again; the number of such draws is reported.
//!
//! Distractor ids are `x` followed by a zero-padded counter; the builder refuses a real
//! set that already has an id starting with `x`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use arrow::array::StringArray;
use arrow::record_batch::RecordBatch;

use super::tables::{below, copy_tables, corpus_batch, stream};
use crate::error::{Error, Result};
use crate::store::batch;
use crate::store::parquet_io::{read_batches, AtomicParquetWriter};
use crate::store::tables::{col, corpus_schema};

/// Rows per written batch (the writer cuts row groups of its own size).
const BATCH_ROWS: usize = 65_536;

/// What to build: the real set, the output folder, the total corpus size and the seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistractorOptions {
    /// A BEIR-layout Parquet folder (`corpus.parquet`, `queries.parquet`, `qrels/`).
    pub from: PathBuf,
    /// Output folder; created if missing, its tables replaced.
    pub out: PathBuf,
    /// Corpus rows wanted in all, real targets included.
    pub targets: usize,
    /// Seed of the generator.
    pub seed: u64,
}

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DistractorStats {
    /// Real targets copied.
    pub real: usize,
    /// Distractors generated.
    pub distractors: usize,
    /// Generated texts thrown away because they equalled a real or earlier text.
    pub redrawn: usize,
}

/// The real targets' texts and their word distribution.
struct Vocabulary {
    texts: Vec<String>,
    /// Every word occurrence of the real texts, in order: a uniform draw from it is a
    /// draw from the unigram distribution.
    words: Vec<String>,
}

/// Builds the grown set described in the module docs.
///
/// Errors: a missing or unreadable table is [`Error::Io`] or [`Error::Parquet`] naming
/// it; fewer wanted targets than real ones, or a real id that starts with `x`, is
/// [`Error::Usage`].
pub fn build(opts: &DistractorOptions) -> Result<DistractorStats> {
    let corpus = opts.from.join("corpus.parquet");
    let (ids, titles, vocab) = read_corpus(&corpus)?;
    if opts.targets < ids.len() {
        return Err(Error::Usage(format!(
            "distractors: --targets {} is below the {} real targets of {}",
            opts.targets,
            ids.len(),
            corpus.display()
        )));
    }
    if let Some(id) = ids.iter().find(|id| id.starts_with('x')) {
        return Err(Error::data(
            &corpus,
            None,
            format!("id {id:?} starts with 'x', the prefix of the distractors' ids"),
        ));
    }
    let mut stats = DistractorStats {
        real: ids.len(),
        ..Default::default()
    };
    let wanted = opts.targets - ids.len();
    let width = wanted.max(1).to_string().len();
    let mut seen: HashSet<u64> = vocab.texts.iter().map(|t| text_key(t)).collect();
    let mut writer =
        AtomicParquetWriter::create(&opts.out.join("corpus.parquet"), corpus_schema())?;
    for start in (0..ids.len()).step_by(BATCH_ROWS) {
        let rows = start..(start + BATCH_ROWS).min(ids.len());
        let part = corpus_batch(
            &ids[rows.clone()],
            Some(&titles[rows.clone()]),
            &vocab.texts[rows],
        )?;
        writer.write(&part)?;
    }
    let (mut out_ids, mut out_texts) = (Vec::new(), Vec::new());
    let mut draw = 0u64;
    // A vocabulary too small for `wanted` distinct texts would draw for ever.
    let max_draws = 64 * wanted as u64 + 10_000;
    while stats.distractors < wanted {
        if draw == max_draws {
            return Err(Error::Usage(format!(
                "distractors: {} draws made only {} distinct texts of the {wanted} wanted; \
                 the vocabulary of {} is too small",
                draw,
                stats.distractors,
                corpus.display()
            )));
        }
        let text = distractor(&vocab, opts.seed, draw);
        draw += 1;
        if !seen.insert(text_key(&text)) {
            stats.redrawn += 1;
            continue;
        }
        out_ids.push(format!("x{:0width$}", stats.distractors));
        out_texts.push(text);
        stats.distractors += 1;
        if out_ids.len() == BATCH_ROWS || stats.distractors == wanted {
            writer.write(&corpus_batch(&out_ids, None, &out_texts)?)?;
            out_ids.clear();
            out_texts.clear();
        }
    }
    copy_tables(&opts.from, &opts.out, &["queries.parquet"])?;
    writer.finish()?.commit()?;
    tracing::info!(
        real = stats.real,
        distractors = stats.distractors,
        redrawn = stats.redrawn,
        out = %opts.out.display(),
        "distractor set written"
    );
    Ok(stats)
}

/// The text of draw `draw`: a real template with each word replaced by a unigram draw.
fn distractor(vocab: &Vocabulary, seed: u64, draw: u64) -> String {
    let mut rng = stream(seed, draw);
    let template = &vocab.texts[below(&mut rng, vocab.texts.len())];
    let mut out = String::with_capacity(template.len() + 8);
    for (i, token) in template.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if token.starts_with('(') {
            out.push_str(token); // a part-of-speech tag: kept
            continue;
        }
        let core = token.trim_end_matches([',', ';']);
        out.push_str(&vocab.words[below(&mut rng, vocab.words.len())]);
        out.push_str(&token[core.len()..]);
    }
    out
}

/// Key of a text for the duplicate check (a 64-bit hash: a collision only costs one
/// extra draw).
fn text_key(text: &str) -> u64 {
    freshen_operators::hashing::text_hash(text)
}

/// Reads the real corpus: its ids, and its texts as templates and as the word pool.
fn read_corpus(path: &Path) -> Result<(Vec<String>, Vec<String>, Vocabulary)> {
    let mut ids = Vec::new();
    let mut titles = Vec::new();
    let mut texts = Vec::new();
    for batch in read_batches(path, BATCH_ROWS)? {
        let batch = batch.map_err(|e| Error::data(path, None, e.to_string()))?;
        let id = string_column(&batch, col::ID, path)?;
        let title = string_column(&batch, col::TITLE, path)?;
        let text = string_column(&batch, col::TEXT, path)?;
        for row in 0..batch.num_rows() {
            ids.push(id.value(row).to_string());
            titles.push(title.value(row).to_string());
            texts.push(text.value(row).to_string());
        }
    }
    if texts.is_empty() {
        return Err(Error::data(
            path,
            None,
            "the corpus has no rows to template",
        ));
    }
    let mut words = Vec::new();
    for text in &texts {
        for token in text.split(' ') {
            let core = token.trim_end_matches([',', ';']);
            if core.is_empty() || core.starts_with('(') {
                continue;
            }
            words.push(core.to_string());
        }
    }
    if words.is_empty() {
        return Err(Error::data(path, None, "the corpus texts have no words"));
    }
    Ok((ids, titles, Vocabulary { texts, words }))
}

/// The string column `name` of `batch`, or an error naming the file.
fn string_column<'a>(batch: &'a RecordBatch, name: &str, path: &Path) -> Result<&'a StringArray> {
    batch::strings(batch, name).map_err(|e| Error::data(path, None, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::parquet_io::{read_all, write_parquet};

    /// A real set of `texts` with one query and its qrels, written under `dir`.
    fn real_set(dir: &Path, texts: &[&str]) -> PathBuf {
        let root = dir.join("real");
        let ids: Vec<String> = (0..texts.len()).map(|i| format!("r{i}")).collect();
        let texts: Vec<String> = texts.iter().map(|t| t.to_string()).collect();
        let batch = corpus_batch(&ids, None, &texts).unwrap();
        write_parquet(&root.join("corpus.parquet"), corpus_schema(), &[batch]).unwrap();
        for file in ["queries.parquet", "qrels/train.parquet", "LICENSE-TEST"] {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("bytes of {file}")).unwrap();
        }
        root
    }

    fn texts(path: &Path) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for batch in read_all(path).unwrap() {
            let id = string_column(&batch, col::ID, path).unwrap();
            let text = string_column(&batch, col::TEXT, path).unwrap();
            out.extend((0..batch.num_rows()).map(|r| (id.value(r).into(), text.value(r).into())));
        }
        out
    }

    #[test]
    fn distractors_are_distinct_from_the_real_texts_and_each_other() {
        let dir = tempfile::tempdir().unwrap();
        // Four words and one template shape: only 16 texts exist, 2 of them real, so
        // reaching 16 targets needs every remaining text once and many redraws.
        let from = real_set(dir.path(), &["a b,", "c d,"]);
        let opts = DistractorOptions {
            from,
            out: dir.path().join("grown"),
            targets: 16,
            seed: 3,
        };
        let stats = build(&opts).unwrap();
        assert_eq!((stats.real, stats.distractors), (2, 14));
        assert!(stats.redrawn > 0);
        let rows = texts(&opts.out.join("corpus.parquet"));
        assert_eq!(rows.len(), 16);
        let distinct: HashSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        assert_eq!(distinct.len(), 16);
        assert_eq!(rows[0], ("r0".into(), "a b,".into()));
        assert!(rows[2..]
            .iter()
            .all(|(id, t)| id.starts_with('x') && t.ends_with(',')));
        for file in ["queries.parquet", "qrels/train.parquet", "LICENSE-TEST"] {
            let got = std::fs::read_to_string(opts.out.join(file)).unwrap();
            assert_eq!(got, format!("bytes of {file}"));
        }
        // One more target than texts exist: refused, not an endless loop.
        let err = build(&DistractorOptions {
            targets: 17,
            ..opts
        })
        .unwrap_err();
        assert!(err.to_string().contains("too small"), "{err}");
    }

    #[test]
    fn distractors_follow_their_template_and_the_seed() {
        let dir = tempfile::tempdir().unwrap();
        let from = real_set(
            dir.path(),
            &["dog, hound (noun); canine", "run (verb); move, go"],
        );
        let build_to = |out: &str, seed: u64| {
            let out = dir.path().join(out);
            let opts = DistractorOptions {
                from: from.clone(),
                out: out.clone(),
                targets: 200,
                seed,
            };
            build(&opts).unwrap();
            texts(&out.join("corpus.parquet"))
        };
        let (a, b, c) = (build_to("a", 1), build_to("b", 1), build_to("c", 2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        let vocab: HashSet<&str> = ["dog", "hound", "canine", "run", "move", "go"].into();
        for (_, text) in &a[2..] {
            let shape: Vec<String> = text
                .split(' ')
                .map(|t| {
                    let core = t.trim_end_matches([',', ';']);
                    assert!(core.starts_with('(') || vocab.contains(core), "{text}");
                    if core.starts_with('(') {
                        t.to_string()
                    } else {
                        format!("w{}", &t[core.len()..])
                    }
                })
                .collect();
            let shape = shape.join(" ");
            assert!(
                shape == "w, w (noun); w" || shape == "w (verb); w, w",
                "{text} has the shape {shape}"
            );
        }
    }
}
