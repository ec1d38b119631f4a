//! The `freshen` command.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use freshen::cli::{Cli, Command, DataCommand, GraphFormat, LogFormat};
use freshen::data::wordnet::{self, WordnetOptions};
use freshen::graph::{self, Graph};
use freshen::report;
use freshen::runtime::{self, RunOptions};
use freshen::spec::{self, LoadedSpec};
use freshen::Result;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log);
    match dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match cli.log {
                LogFormat::Json => tracing::error!(exit_code = e.exit_code(), "{e}"),
                LogFormat::Text => eprintln!("error: {e}"),
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FRESHEN_LOG_LEVEL")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.without_time().with_target(false).init(),
    }
}

/// Loads, checks the graph, the input files and their rows: everything `run` needs first.
fn checked(file: &std::path::Path, sets: &[String]) -> Result<Graph> {
    let graph = Graph::build(LoadedSpec::load(file, sets)?)?;
    graph.check_inputs()?;
    graph.check_data()?;
    Ok(graph)
}

/// Ids of the nodes whose counters a user asks about: caches, and encoders without one.
fn counted_nodes(graph: &Graph) -> Vec<String> {
    (0..graph.nodes().len())
        .filter(|&i| match graph.nodes()[i].op.type_name() {
            "cache" => true,
            "encode" => !graph
                .consumers(i)
                .iter()
                .any(|&c| graph.nodes()[c].op.type_name() == "cache"),
            _ => false,
        })
        .map(|i| graph.nodes()[i].id.clone())
        .collect()
}

/// A run's name for its result table: the pipeline file's stem.
fn graph_name(file: &std::path::Path) -> String {
    file.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn dispatch(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Check(args) => {
            let graph = checked(&args.file, &args.sets)?;
            println!(
                "{}: ok ({} nodes)",
                args.file.display(),
                graph.nodes().len()
            );
            Ok(())
        }
        Command::Graph(args) => {
            let graph = Graph::build(LoadedSpec::load(&args.spec.file, &args.spec.sets)?)?;
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
        Command::Schema => {
            let schema = serde_json::to_string_pretty(&spec::json_schema()).unwrap_or_default();
            println!("{schema}");
            Ok(())
        }
        Command::Run(args) => {
            let graph = checked(&args.spec.file, &args.spec.sets)?;
            let opts = RunOptions {
                workers: args.workers,
                processes: args.processes,
                process: args.process,
                hostfile: args.hostfile.clone(),
                report: args.report,
                progress: cli.log == LogFormat::Text && std::io::stderr().is_terminal(),
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
                let name = graph_name(&args.spec.file);
                let s = report::RunSummary::from_batch(&name, summary)?;
                print!("{}", report::result_table(&s));
            }
            println!("done in {:.1}s", report.seconds);
            Ok(())
        }
        Command::Compare(args) => {
            let table = report::compare(&args.runs, &args.out, args.plot.as_deref())?;
            print!("{table}");
            println!("wrote {}", args.out.display());
            if let Some(p) = &args.plot {
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
    }
}
