//! What each subcommand does.

use std::io::IsTerminal;
use std::path::Path;

use super::args::{
    CheckArgs, Cli, Command, DataCommand, FmtArgs, GraphFormat, LogFormat, RunArgs, SpecArgs,
    SplitArgs,
};
use crate::data::wordnet::{self, WordnetOptions};
use crate::data::{distractors, synthetic};
use crate::error::Result;
use crate::graph::{self, CheckCx, Graph};
use crate::runtime::{self, RunOptions};
use crate::{nodes, report};

/// Runs the command `cli` names.
pub(super) fn dispatch(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::New(args) => super::new::new(args),
        Command::Check(args) => check(args),
        Command::Graph(args) => {
            let graph = load(&args.spec)?;
            if matches!(args.format, GraphFormat::Mermaid | GraphFormat::Both) {
                print!("{}", graph::to_mermaid(&graph));
            }
            if args.format == GraphFormat::Both {
                println!();
            }
            if matches!(args.format, GraphFormat::Dot | GraphFormat::Both) {
                print!("{}", graph::to_dot(&graph));
            }
            Ok(())
        }
        Command::Fmt(args) => fmt(args),
        Command::Schema(args) if args.markdown => {
            print!("{}", crate::spec::reference::markdown(&nodes::schema()));
            Ok(())
        }
        Command::Schema(_) => {
            let schema = serde_json::to_string_pretty(&nodes::schema()).unwrap_or_default();
            println!("{schema}");
            Ok(())
        }
        Command::Run(args) => run(cli, args),
        Command::Bench(cmd) => {
            println!("{}", crate::speed::run(cmd)?);
            Ok(())
        }
        Command::Study(args) => {
            let toy = args.picture.as_deref().zip(args.picture_out.as_deref());
            if args.runs.is_empty() && (args.plot.is_some() || toy.is_none()) {
                return Err(crate::Error::Usage(
                    "study: name run folders (for the table and --plot) or --picture DIR --picture-out PNG".into(),
                ));
            }
            let table = report::study::study(&args.runs, &args.out, args.plot.as_deref(), toy)?;
            print!("{table}");
            if !args.runs.is_empty() {
                println!("wrote {}", args.out.display());
            }
            let written = [args.plot.as_deref(), toy.map(|(_, png)| png)];
            for p in written.into_iter().flatten() {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Command::Compare(args) => {
            let table = report::compare(
                &args.runs,
                &args.out,
                args.plot.as_deref(),
                args.curves.as_deref(),
            )?;
            print!("{table}");
            println!("wrote {}", args.out.display());
            for p in [&args.plot, &args.curves].into_iter().flatten() {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Command::Data(DataCommand::Wordnet(args)) => {
            let opts = WordnetOptions {
                wordnet_dir: args.wordnet_dir.clone(),
                out: args.out.clone(),
                sample: args.sample,
                seed: args.seed,
            };
            let stats = wordnet::build(&opts)?;
            println!(
                "{}: {} synsets, {} queries (train {}, dev {}, test {}), {} without a gloss",
                args.out.display(),
                stats.synsets,
                stats.queries,
                stats.train,
                stats.dev,
                stats.test,
                stats.skipped_empty_gloss
            );
            Ok(())
        }
        Command::Data(DataCommand::Distractors(args)) => {
            let stats = distractors::build(&distractors::DistractorOptions {
                from: args.from.clone(),
                out: args.out.clone(),
                targets: args.targets,
                seed: args.seed,
            })?;
            println!(
                "{}: {} real targets, {} distractors ({} redrawn as duplicates)",
                args.out.display(),
                stats.real,
                stats.distractors,
                stats.redrawn
            );
            Ok(())
        }
        Command::Data(DataCommand::Rlm(args)) => {
            let stats = crate::data::rlm::build(&crate::data::rlm::RlmOptions {
                from: args.from.clone(),
                out: args.out.clone(),
            })?;
            println!(
                "{}: {} passages, {} queries with an answer ({} without, left out)",
                args.out.display(),
                stats.passages,
                stats.queries,
                stats.dropped
            );
            Ok(())
        }
        Command::Data(DataCommand::Split(args)) => data_split(args),
        Command::Data(DataCommand::Synthetic(args)) => {
            let stats = synthetic::build(&synthetic::SyntheticOptions {
                out: args.out.clone(),
                targets: args.targets,
                every: args.every,
                vocab: args.vocab,
                seed: args.seed,
            })?;
            let [train, dev, test] = stats.splits;
            println!(
                "{}: {} targets, {} queries (train {train}, dev {dev}, test {test})",
                args.out.display(),
                stats.targets,
                stats.queries
            );
            Ok(())
        }
    }
}

/// `freshen data split`: the new dataset folder, and what moved.
fn data_split(args: &SplitArgs) -> Result<()> {
    let stats = crate::data::split::build(&crate::data::split::SplitOptions {
        from: args.from.clone(),
        split: args.split.clone(),
        into: args.into.clone(),
        fraction: args.fraction,
        seed: args.seed,
        out: args.out.clone(),
        force: args.force,
    })?;
    println!(
        "{}: {} {} queries ({} judgements), {} {} queries ({} judgements); the other files link to {}",
        args.out.display(),
        args.into,
        stats.moved,
        stats.moved_rows,
        args.split,
        stats.kept,
        stats.kept_rows,
        args.from.display()
    );
    Ok(())
}

/// `freshen fmt`: each file's inputs by role, written back (or, with `--check`, a
/// line per file that would change and exit code 2).
fn fmt(args: &FmtArgs) -> Result<()> {
    let mut stale = Vec::new();
    for file in &args.files {
        let graph = nodes::load(file, &[])?;
        let text = std::fs::read_to_string(file).map_err(|e| crate::Error::io(file, e))?;
        let (out, changed) = graph::rewrite::inputs_by_role(&text, &graph)?;
        match (changed, args.check) {
            (0, _) => eprintln!("{}: inputs already by role", file.display()),
            (n, true) => {
                eprintln!("{}: {n} node(s) list inputs by position", file.display());
                stale.push(file.display().to_string());
            }
            (n, false) => {
                let staged = file.with_extension("yaml.fmt");
                std::fs::write(&staged, out).map_err(|e| crate::Error::io(&staged, e))?;
                std::fs::rename(&staged, file).map_err(|e| crate::Error::io(file, e))?;
                eprintln!(
                    "{}: {n} nodes rewritten with inputs by role",
                    file.display()
                );
            }
        }
    }
    match stale.is_empty() {
        true => Ok(()),
        false => Err(crate::Error::Usage(format!(
            "{} would change (run `freshen fmt` on them)",
            stale.join(", ")
        ))),
    }
}

/// Loads and checks the graph, printing what the file should change (one line each).
fn load(spec: &SpecArgs) -> Result<Graph> {
    let graph = nodes::load(&spec.file, &spec.sets)?;
    for w in &graph.warnings {
        eprintln!("warning: {w}");
    }
    Ok(graph)
}

/// Loads and checks the graph, its files and their rows, and its memory for `processes`
/// processes of `workers` workers: everything `run` needs first.
fn checked(spec: &SpecArgs, workers: usize, processes: usize) -> Result<Graph> {
    let graph = load(spec)?;
    graph.check_files(true)?;
    let max = spec
        .max_memory
        .as_deref()
        .map(graph::memory::parse_size)
        .transpose()?;
    graph::memory::check(&graph, workers, processes, max)?;
    Ok(graph)
}

fn check(args: &CheckArgs) -> Result<()> {
    let (w, n) = (args.workers.max(1), args.processes.max(1));
    let graph = checked(&args.spec, w, n)?;
    let layout = match (w, n) {
        (1, 1) => "on one worker".to_string(),
        (w, 1) => format!("with {w} workers"),
        (1, n) => format!("per process, {n} processes of one worker"),
        (w, n) => format!("per process, {n} processes of {w} workers"),
    };
    println!(
        "{}: ok ({} nodes; peak memory about {} {layout})",
        args.spec.file.display(),
        graph.nodes().len(),
        graph::memory::shown(graph::memory::estimate(&graph, w, n))
    );
    if args.costs {
        print_costs(&graph, w, n);
    }
    Ok(())
}

/// The memory estimate's costs, largest first, and their total in bytes.
fn print_costs(graph: &Graph, workers: usize, processes: usize) {
    let mut costs = graph::memory::costs(graph, workers, processes);
    costs.sort_by(|a, b| b.1.bytes.total_cmp(&a.1.bytes));
    let total = graph::memory::estimate(graph, workers, processes);
    println!("memory estimate: {total:.0} bytes (held for the run, plus the largest phase)");
    for (_, c) in &costs {
        let phase = format!("{:?}", c.phase).to_lowercase();
        println!(
            "  {:>8}  {phase:<10}  {}",
            graph::memory::shown(c.bytes),
            c.what
        );
    }
}

/// Ids of the nodes whose counters a user asks about (caches, encoders without one).
fn counted_nodes(graph: &Graph) -> Vec<String> {
    (0..graph.nodes().len())
        .filter(|&i| {
            graph.nodes()[i]
                .kind
                .prints_counts(&CheckCx { graph, node: i })
        })
        .map(|i| graph.nodes()[i].id.clone())
        .collect()
}

/// A run's name for its result table: the pipeline file's stem.
fn graph_name(file: &Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn run(cli: &Cli, args: &RunArgs) -> Result<()> {
    let graph = checked(&args.spec, args.workers, args.processes)?;
    let opts = RunOptions {
        workers: args.workers,
        processes: args.processes,
        process: args.process,
        hostfile: args.hostfile.clone(),
        report: args.report,
        progress: cli.log == LogFormat::Text && std::io::stderr().is_terminal(),
        resume: args.resume,
        progress_every: (args.progress_every > 0.0).then_some(args.progress_every),
    };
    let counted = counted_nodes(&graph);
    let report = runtime::run(graph, &opts)?;
    for (node, s) in report.stats.iter().filter(|_| cli.log == LogFormat::Json) {
        tracing::info!(
            seconds = report.seconds,
            node = node.as_str(),
            rows_out = s.rows_out,
            encoded = s.encoded,
            reused = s.reused,
            dropped = s.dropped,
            replaced = s.replaced,
            "node finished"
        );
    }
    for (node, s) in &report.stats {
        if counted.contains(node) {
            if args.processes > 1 {
                print!("process {}: ", args.process);
            }
            println!(
                "{node}: encoded {}, reused {}, dropped {}, replaced {}",
                s.encoded, s.reused, s.dropped, s.replaced
            );
        }
    }
    for out in &report.outputs {
        println!("wrote {}", out.display());
    }
    if let Some(summary) = &report.summary {
        let s = report::RunSummary::from_batch(&graph_name(&args.spec.file), summary)?;
        print!("{}", report::result_table(&s));
    }
    println!("done in {:.1}s", report.seconds);
    Ok(())
}
