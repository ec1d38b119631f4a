//! `freshen new`: a starting training pipeline for a dataset folder, ready for `check`
//! and `run` as written.
//!
//! It reads only the folder's file names and the corpus's row count: the splits fill in
//! the pipeline, the rows bound its negatives, and `check` reads the rest. A dataset with
//! no dev split gets one carved out of train by [`crate::data::split`] into a folder
//! beside it (the dataset itself is never written to), and the pipeline reads that
//! folder; the file's header and stderr both say so, with the command that remakes it.
//! Nothing is written when a check fails, and an existing file or split folder is only
//! replaced with `--force`.

use std::path::{Path, PathBuf};

use super::args::NewArgs;
use crate::data::split::{self, SplitOptions, SplitStats};
use crate::error::{Error, Result};
use crate::spec::scaffold::{self, Scaffold, Splits};
use crate::store::beir::{Dataset, Table};

/// Fraction of train's queries that a carved dev split holds.
const DEV_FRACTION: f64 = 0.1;
/// Seed of a carved dev split (the written pipeline's seed).
const DEV_SEED: u64 = 7;
/// Names a dev split goes by, in the order they are looked for.
const DEV_NAMES: [&str; 3] = ["dev", "validation", "val"];

/// Where the pipeline goes.
enum Target {
    /// Standard output (`--out -`).
    Stdout,
    /// A file.
    File(PathBuf),
}

/// Writes the pipeline for `args.dataset`, carving a dev split first when it has none.
pub(super) fn new(args: &NewArgs) -> Result<()> {
    let ds = split::open_dataset(&args.dataset)?;
    let queries = ds.path(&Table::Queries);
    if !queries.is_file() {
        return Err(Error::data(
            &queries,
            None,
            "no such file (expected the queries beside the corpus)",
        ));
    }
    let present = ds.splits()?;
    let train = required(&ds, &present, "train")?;
    let test = required(&ds, &present, "test")?;
    if let Some(model) = &args.model {
        check_model(model)?;
    }
    let name = dataset_name(&args.dataset);
    let target = target(args, &name)?;
    let mut notes = vec![format!("Written by `{}`.", invocation(args))];
    let dev = DEV_NAMES.iter().find(|n| present.iter().any(|p| p == *n));
    let (data, dev) = match dev {
        Some(dev) => (args.dataset.clone(), dev.to_string()),
        None => {
            let opts = carve(args, &ds)?;
            notes.extend(carved_notes(&opts));
            (opts.out, opts.into)
        }
    };
    let file = match &target {
        Target::File(path) => path.display().to_string(),
        Target::Stdout => format!("{name}.yaml"),
    };
    let s = Scaffold {
        name,
        file,
        data: data.display().to_string(),
        model: args.model.as_ref().map(|m| m.display().to_string()),
        splits: Splits { train, dev, test },
        corpus_rows: ds.row_count(&Table::Corpus)?,
        notes,
    };
    write(&target, &scaffold::render(&s))?;
    if let Target::File(path) = &target {
        report(path, &s);
    }
    Ok(())
}

/// What was written and what to do next, on stdout.
fn report(path: &Path, s: &Scaffold) {
    let towers = match &s.model {
        Some(m) => format!("towers from {m}"),
        None => "hashed towers".to_string(),
    };
    let (p, sp) = (path.display(), &s.splits);
    println!(
        "wrote {p}: {towers}, trained on `{}`, best step by `{}`, reported on `{}`",
        sp.train, sp.dev, sp.test
    );
    println!("next: `freshen check {p}`, then `freshen run {p}`");
}

/// The split `name`, or an error at its missing file naming the splits there are.
fn required(ds: &Dataset, present: &[String], name: &str) -> Result<String> {
    if present.iter().any(|p| p == name) {
        return Ok(name.to_string());
    }
    let why = match name {
        "train" => "the judgements the pipeline trains on".to_string(),
        _ => format!(
            "held-out judgements, reported at the best dev step; `freshen data split --from {} --into {name} --out DIR` carves them out of train",
            ds.root().display()
        ),
    };
    let there = match present.is_empty() {
        true => "none".to_string(),
        false => present.join(", "),
    };
    Err(Error::data(
        ds.path(&Table::Qrels(name.to_string())),
        None,
        format!("no {name} split (expected {why}; the dataset's splits: {there})"),
    ))
}

/// Refuses a model path that is not a sentence-transformers folder.
fn check_model(model: &Path) -> Result<()> {
    let expected =
        "expected a sentence-transformers folder: config.json, tokenizer.json, model.safetensors";
    match (model.is_dir(), model.join("config.json").is_file()) {
        (true, true) => Ok(()),
        (false, _) => Err(Error::data(
            model,
            None,
            format!("no such folder ({expected})"),
        )),
        (true, false) => Err(Error::data(
            model,
            None,
            format!("not a model folder, no config.json ({expected})"),
        )),
    }
}

/// The dataset folder's name, made fit for a pipeline name and an out folder.
fn dataset_name(dataset: &Path) -> String {
    let base = match dataset.file_name() {
        Some(n) => Some(n.to_os_string()),
        None => dataset
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_os_string())),
    };
    let name: String = base
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .map(|c| match c.is_ascii_alphanumeric() || "-_.".contains(c) {
            true => c,
            false => '-',
        })
        .collect();
    match name.trim_matches(['-', '.']).is_empty() {
        true => "pipeline".to_string(),
        false => name,
    }
}

/// Where the pipeline goes: `--out`, `-` for stdout, `<name>.yaml` by default; an
/// existing file is refused without `--force`.
fn target(args: &NewArgs, name: &str) -> Result<Target> {
    let path = match &args.out {
        Some(p) if p.as_os_str() == "-" => return Ok(Target::Stdout),
        Some(p) => p.clone(),
        None => PathBuf::from(format!("{name}.yaml")),
    };
    if path.exists() && !args.force {
        return Err(Error::Usage(format!(
            "{} exists (expected a new file; --force replaces it)",
            path.display()
        )));
    }
    Ok(Target::File(path))
}

/// The command line, as the file's header quotes it.
fn invocation(args: &NewArgs) -> String {
    let mut line = format!("freshen new {}", args.dataset.display());
    if let Some(m) = &args.model {
        line.push_str(&format!(" --model {}", m.display()));
    }
    line
}

/// Carves a dev split out of train into `--split-out` (default: beside the dataset,
/// `<dataset>-with-dev`), saying so on stderr; returns what it did.
fn carve(args: &NewArgs, ds: &Dataset) -> Result<SplitOptions> {
    let out = match &args.split_out {
        Some(out) => out.clone(),
        None => beside(&args.dataset, "-with-dev"),
    };
    let opts = SplitOptions {
        from: args.dataset.clone(),
        split: "train".to_string(),
        into: "dev".to_string(),
        fraction: DEV_FRACTION,
        seed: DEV_SEED,
        out,
        force: args.force,
    };
    let stats: SplitStats = split::build(&opts)?;
    eprintln!(
        "note: {} has no dev split: wrote {}, where qrels/dev holds {} of train's {} queries \
         (fraction {}, seed {}) and qrels/train the other {}; the pipeline reads it",
        ds.root().display(),
        opts.out.display(),
        stats.moved,
        stats.moved + stats.kept,
        opts.fraction,
        opts.seed,
        stats.kept
    );
    Ok(opts)
}

/// The header lines that say how the dev split was made.
fn carved_notes(opts: &SplitOptions) -> Vec<String> {
    vec![
        String::new(),
        format!(
            "{} has no dev split, so this pipeline reads {}, where qrels/dev holds",
            opts.from.display(),
            opts.out.display()
        ),
        format!(
            "a fraction {} of train's queries (seed {}) and qrels/train the rest ({} there).",
            opts.fraction,
            opts.seed,
            split::MARKER
        ),
        "This command made it, and makes it again:".to_string(),
        format!("  {}", split::command(opts)),
    ]
}

/// `dataset`'s sibling named by its name and `suffix` (resolved first when the path
/// has no name of its own, such as `.`).
fn beside(dataset: &Path, suffix: &str) -> PathBuf {
    let base = match dataset.file_name() {
        Some(_) => dataset.to_path_buf(),
        None => dataset
            .canonicalize()
            .unwrap_or_else(|_| dataset.to_path_buf()),
    };
    let name = base
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".to_string());
    base.with_file_name(format!("{name}{suffix}"))
}

/// Writes the text to its target, creating the file's folder.
fn write(target: &Target, text: &str) -> Result<()> {
    match target {
        Target::Stdout => {
            print!("{text}");
            Ok(())
        }
        Target::File(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
            }
            std::fs::write(path, text).map_err(|e| Error::io(path, e))
        }
    }
}
