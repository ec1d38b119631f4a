//! `freshen data split`: a held-out split carved out of another, by query, seeded, for a
//! dataset that has no dev split to pick the best training step on.
//!
//! The dataset is not touched: the result is a new dataset folder. Its `qrels/<into>`
//! holds a fraction of the queries of `qrels/<split>` and its `qrels/<split>` the rest;
//! every other file (corpus, queries, the other splits, licences) is a symbolic link to
//! the original, so a large corpus is never copied. All judgements of a query stay on one
//! side, so no query is trained on and selected on. A query moves when it ranks among the
//! first by a seeded hash of its id ([`hash64_seeded`]): the same queries on every
//! platform and whatever the row order, and the same seed gives the same split again.
//! Only queries with a relevant document (a score above 0) move, since a dev split of
//! unjudged queries would score 0 on every metric.
//!
//! The folder holds `SPLIT.txt`, saying how it was made and the command that remakes it;
//! `--force` replaces only a folder that has one.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use freshen_operators::hashing::hash64_seeded;

use crate::error::{Error, Result};
use crate::store::beir::{Dataset, Format, Table};
use crate::store::pairs::judgements;
use crate::store::parquet_io::{write_parquet, PendingFile};
use crate::store::tables::qrels_schema;

/// The file in a split folder that says how it was made (and marks it as replaceable).
pub const MARKER: &str = "SPLIT.txt";

/// What `freshen data split` builds.
#[derive(Debug, Clone)]
pub struct SplitOptions {
    /// The dataset (BEIR layout, Parquet or JSONL).
    pub from: PathBuf,
    /// The split whose queries are divided (`train`).
    pub split: String,
    /// The name of the new split (`dev`).
    pub into: String,
    /// Fraction of the split's queries that move to the new one, in (0, 1).
    pub fraction: f64,
    /// Seed of the hash that picks them.
    pub seed: u64,
    /// The new dataset folder.
    pub out: PathBuf,
    /// Replace `out` if it is a folder this command wrote.
    pub force: bool,
}

/// What the split wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SplitStats {
    /// Queries left in the split.
    pub kept: usize,
    /// Queries moved to the new split.
    pub moved: usize,
    /// Judgements left in the split.
    pub kept_rows: usize,
    /// Judgements moved with their queries.
    pub moved_rows: usize,
}

/// One judgement: query id, corpus id, score.
type Qrel = (String, String, i32);

/// Opens a dataset folder, a missing or unreadable one being bad input (exit 2) named by
/// its path rather than an I/O failure.
pub fn open_dataset(root: &Path) -> Result<Dataset> {
    if !root.is_dir() {
        return Err(Error::data(
            root,
            None,
            "no such folder (expected a dataset in the BEIR layout)",
        ));
    }
    Dataset::open(root, None)
}

/// Writes the dataset `opts.out`: `opts.from` with `opts.into` carved out of `opts.split`.
pub fn build(opts: &SplitOptions) -> Result<SplitStats> {
    check_options(opts)?;
    let ds = open_dataset(&opts.from)?;
    let splits = ds.splits()?;
    if !splits.contains(&opts.split) {
        return Err(Error::data(
            ds.path(&Table::Qrels(opts.split.clone())),
            None,
            format!(
                "no such split (expected one of: {})",
                listed(&splits, "none, the dataset has no qrels")
            ),
        ));
    }
    if splits.contains(&opts.into) {
        return Err(Error::Usage(format!(
            "{} already has a split `{}` (expected a new name, or use it as it is)",
            opts.from.display(),
            opts.into
        )));
    }
    make_room(&opts.out, opts.force)?;
    let rows = judgements(&ds, &opts.split)?;
    let moving = chosen(&rows, opts.fraction, opts.seed)
        .map_err(|m| Error::data(ds.path(&Table::Qrels(opts.split.clone())), None, m))?;
    let (moved, kept): (Vec<Qrel>, Vec<Qrel>) =
        rows.into_iter().partition(|r| moving.contains(&r.0));
    let pending = PendingFile::folder(&opts.out)?;
    let tmp = pending.tmp_path();
    link_others(&ds, &opts.split, tmp)?;
    write_split(ds.format(), &tmp.join("qrels"), &opts.split, &kept)?;
    write_split(ds.format(), &tmp.join("qrels"), &opts.into, &moved)?;
    let stats = SplitStats {
        kept: distinct(&kept),
        moved: moving.len(),
        kept_rows: kept.len(),
        moved_rows: moved.len(),
    };
    write_marker(opts, &stats, &tmp.join(MARKER))?;
    if opts.out.exists() {
        std::fs::remove_dir_all(&opts.out).map_err(|e| Error::io(&opts.out, e))?;
    }
    pending.commit()?;
    Ok(stats)
}

/// Refuses a fraction outside (0, 1), split names that are not plain file stems, and an
/// output folder that is the dataset itself.
fn check_options(opts: &SplitOptions) -> Result<()> {
    if !(opts.fraction > 0.0 && opts.fraction < 1.0) {
        return Err(Error::Usage(format!(
            "--fraction is {} (expected a number between 0 and 1, such as 0.1)",
            opts.fraction
        )));
    }
    for name in [&opts.split, &opts.into] {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && !name.contains(['/', '\\'])
            && !name.chars().any(char::is_whitespace);
        if !plain {
            return Err(Error::Usage(format!(
                "split name `{name}` (expected a plain name such as train or dev)"
            )));
        }
    }
    if opts.split == opts.into {
        return Err(Error::Usage(format!(
            "--split and --into are both `{}` (expected two names)",
            opts.split
        )));
    }
    let same = match (opts.from.canonicalize(), opts.out.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        return Err(Error::Usage(format!(
            "--out {} is the dataset itself (expected a new folder)",
            opts.out.display()
        )));
    }
    Ok(())
}

/// An existing `out` is refused, unless `force` and it is a split folder (it has
/// [`MARKER`]), which is then replaced once the new one is complete.
fn make_room(out: &Path, force: bool) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    if !force {
        return Err(Error::Usage(format!(
            "{} exists (expected a new folder; --force replaces a folder `freshen data split` wrote)",
            out.display()
        )));
    }
    if !out.join(MARKER).is_file() {
        return Err(Error::Usage(format!(
            "{} exists and has no {MARKER}, so `freshen data split` did not write it (expected a new folder; not replaced)",
            out.display()
        )));
    }
    Ok(())
}

/// The queries that move: `fraction` of those with a relevant document (at least one,
/// and never all of a split's queries), the first by the seeded hash of their id.
fn chosen(rows: &[Qrel], fraction: f64, seed: u64) -> Result<HashSet<String>, String> {
    let all = distinct(rows);
    let mut judged: Vec<&str> = rows
        .iter()
        .filter(|r| r.2 > 0)
        .map(|r| r.0.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    if judged.is_empty() || all < 2 {
        return Err(format!(
            "{all} queries, {} with a relevant document (expected at least 2 queries, one relevant, to split)",
            judged.len()
        ));
    }
    let n = ((judged.len() as f64 * fraction).round() as usize).clamp(1, all - 1);
    let n = n.min(judged.len());
    judged.sort_by_key(|q| (hash64_seeded(seed, q.as_bytes()), *q));
    Ok(judged[..n].iter().map(|q| q.to_string()).collect())
}

/// Distinct query ids among `rows`.
fn distinct(rows: &[Qrel]) -> usize {
    rows.iter()
        .map(|r| r.0.as_str())
        .collect::<HashSet<_>>()
        .len()
}

/// Links every file of the dataset but `split`'s qrels into `out`, in the dataset's
/// format: the corpus, the queries, the other splits and any licence.
fn link_others(ds: &Dataset, split: &str, out: &Path) -> Result<()> {
    let qrels = out.join("qrels");
    std::fs::create_dir_all(&qrels).map_err(|e| Error::io(&qrels, e))?;
    let mut tables = vec![Table::Corpus, Table::Queries];
    for s in ds.splits()? {
        if s != split {
            tables.push(Table::Qrels(s));
        }
    }
    let mut files: Vec<PathBuf> = tables.iter().map(|t| ds.path(t)).collect();
    for entry in std::fs::read_dir(ds.root()).map_err(|e| Error::io(ds.root(), e))? {
        let path = entry.map_err(|e| Error::io(ds.root(), e))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("LICENSE") && path.is_file() {
            files.push(path);
        }
    }
    for src in files {
        let rel = src.strip_prefix(ds.root()).unwrap_or(&src);
        let target = src.canonicalize().map_err(|e| Error::io(&src, e))?;
        let link = out.join(rel);
        std::os::unix::fs::symlink(&target, &link).map_err(|e| Error::io(&link, e))?;
    }
    Ok(())
}

/// Writes `rows` as the qrels of `split` under `dir`, in the dataset's format.
fn write_split(format: Format, dir: &Path, split: &str, rows: &[Qrel]) -> Result<()> {
    match format {
        Format::Parquet => {
            let columns = vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.0))) as ArrayRef,
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.1))),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
            ];
            let b = RecordBatch::try_new(qrels_schema(), columns)?;
            write_parquet(&dir.join(format!("{split}.parquet")), qrels_schema(), &[b])
        }
        Format::Jsonl => {
            let path = dir.join(format!("{split}.tsv"));
            let mut text = String::from("query-id\tcorpus-id\tscore\n");
            for (q, d, s) in rows {
                text.push_str(&format!("{q}\t{d}\t{s}\n"));
            }
            std::fs::write(&path, text).map_err(|e| Error::io(&path, e))
        }
    }
}

/// Writes [`MARKER`]: what the folder holds, and the command that makes it again.
fn write_marker(opts: &SplitOptions, stats: &SplitStats, path: &Path) -> Result<()> {
    let (from, split, into) = (opts.from.display(), &opts.split, &opts.into);
    let text = format!(
        "Written by `freshen data split`.\n\n\
         qrels/{into} holds {moved} of the {all} queries of {from}/qrels/{split}, with all\n\
         their judgements: the fraction {fraction} of those with a relevant document, the\n\
         first by a hash of the query id with seed {seed}. qrels/{split} holds the other\n\
         {kept}. The corpus, the queries and the other splits link to the files in {from}.\n\n\
         To make it again:\n  {command} --force\n",
        moved = stats.moved,
        kept = stats.kept,
        all = stats.moved + stats.kept,
        fraction = opts.fraction,
        seed = opts.seed,
        command = command(opts),
    );
    std::fs::write(path, text).map_err(|e| Error::io(path, e))
}

/// The `freshen data split` command line that makes the folder `opts` describes.
pub fn command(opts: &SplitOptions) -> String {
    format!(
        "freshen data split --from {} --split {} --into {} --fraction {} --seed {} --out {}",
        opts.from.display(),
        opts.split,
        opts.into,
        opts.fraction,
        opts.seed,
        opts.out.display()
    )
}

/// `names` joined by commas, or `none` when there are none.
fn listed(names: &[String], none: &str) -> String {
    match names.is_empty() {
        true => none.to_string(),
        false => names.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<Qrel> {
        (0..n)
            .flat_map(|q| {
                // Two judgements per query; every fifth query has only a zero score.
                let score = if q % 5 == 4 { 0 } else { 1 };
                [
                    (format!("q{q}"), format!("d{q}"), score),
                    (format!("q{q}"), format!("e{q}"), 0),
                ]
            })
            .collect()
    }

    #[test]
    fn the_same_seed_moves_the_same_judged_queries_whatever_the_row_order() {
        let r = rows(100);
        let a = chosen(&r, 0.1, 7).unwrap();
        let mut reversed = r.clone();
        reversed.reverse();
        assert_eq!(a, chosen(&reversed, 0.1, 7).unwrap());
        // A tenth of the 80 queries with a relevant document, none of the unjudged.
        assert_eq!(a.len(), 8);
        assert!(a.iter().all(|q| q[1..].parse::<usize>().unwrap() % 5 != 4));
        assert_ne!(a, chosen(&r, 0.1, 8).unwrap());
    }

    #[test]
    fn a_split_keeps_at_least_one_query_on_each_side() {
        assert_eq!(chosen(&rows(2), 0.01, 1).unwrap().len(), 1);
        assert_eq!(chosen(&rows(2), 0.99, 1).unwrap().len(), 1);
        assert!(chosen(&rows(1), 0.5, 1).is_err());
    }
}
