//! Tests of the WordNet builder on small fixture data files.

use std::path::Path;

use arrow::array::{Array, Int32Array, StringArray};
use arrow::record_batch::RecordBatch;

use super::gloss::gloss_definition;
use super::split::{
    fnv1a64, seeded_hash, split_of, splitmix64, Split, FNV_OFFSET, SAMPLE_SALT, SPLIT_SALT,
};
use super::{build, WordnetOptions, DEFAULT_SEED, LICENSE_FILE};
use crate::error::Error;
use crate::store::parquet_io::read_all;

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

    let licence = std::fs::read_to_string(out.path().join(LICENSE_FILE)).expect("licence copied");
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
