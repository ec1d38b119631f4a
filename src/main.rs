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

/// Keeps candle's element-wise thread pool to the calling thread unless the user chose
/// otherwise (`CANDLE_NUM_THREADS`).
///
/// candle runs element-wise ops on its own pool, whose threads spin for 25,000 iterations
/// after each op before parking. Matrix products run on rayon's pool, one thread per core.
/// So between ops the spinning threads take the cores the matrix products need: on 2
/// cores, MiniLM encoding ran at 367 sentences/s with the pool and 474 without it
/// (BENCHMARKS.md). Must run before any thread starts (the variable is read once).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn single_threaded_candle_pool() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// mimalloc's `mi_option_purge_delay` (index 15 of `mi_option_e` in the vendored v2
/// header; libmimalloc-sys names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never hands freed memory back to the OS. A training step allocates and frees the same
/// large tensors every step; returned pages come back as page faults and zeroing, which
/// took a fifth of a MiniLM step (BENCHMARKS.md). Peak memory is unchanged: it is reused.
fn keep_freed_memory() {
    // SAFETY: sets a process-wide allocator option; called before any other thread runs.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    keep_freed_memory();
    single_threaded_candle_pool();
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
    graph.check_models()?;
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
        Command::Bench(cmd) => {
            println!("{}", freshen::bench::run(cmd)?);
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
