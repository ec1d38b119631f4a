//! The command line: `new`, `run`, `check`, `graph`, `fmt`, `schema`, `data`, `compare`,
//! `study` and `bench`.
//!
//! Every flag has an environment fallback (`FRESHEN_*`), the way services configure
//! tools in CI. Timely's process options (`-w`, `-n`, `-p`, and `-H` for its `-h`) pass straight through,
//! so the same pipeline runs on one core, many threads or a cluster.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Dense-retriever training as a YAML dataflow graph.
#[derive(Debug, Parser)]
#[command(name = "freshen", version, about)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "FRESHEN_LOG", global = true)]
    pub log: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, with progress bars on a terminal.
    Text,
    /// One JSON object per line, no progress bars.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a starting training pipeline for a dataset folder (BEIR layout).
    ///
    /// It passes `check` and runs as written. A dataset with no dev split gets one carved
    /// out of train, into a new folder beside it.
    New(NewArgs),
    /// Check a pipeline, then run it.
    Run(RunArgs),
    /// Check a pipeline (syntax, types, graph, schemas, input files) without running it.
    Check(CheckArgs),
    /// Print a pipeline's graph as Mermaid and DOT.
    Graph(GraphArgs),
    /// Rewrite pipeline files with every node's inputs by role (comments kept).
    Fmt(FmtArgs),
    /// Print the JSON Schema of the pipeline format (or, with `--markdown`, its reference).
    Schema(SchemaArgs),
    /// Build datasets.
    #[command(subcommand)]
    Data(DataCommand),
    /// Compare finished training runs: one table (seeds of an arm averaged), as Parquet.
    Compare(CompareArgs),
    /// Summarise synthetic-study runs (pipelines/synthetic.yaml): KL(P‖P_h) against
    /// KL(P‖P_stale) by setting, seeds averaged, as Parquet and PNG; draw the toy picture.
    Study(StudyArgs),
    /// Time the compute kernels on the peer benchmarks' inputs (benches/speed.sh).
    #[command(subcommand)]
    Bench(crate::speed::BenchCommand),
}

/// `freshen new`.
#[derive(Debug, Args)]
pub struct NewArgs {
    /// The dataset folder, in the BEIR layout: the corpus, the queries, and qrels for
    /// the splits train and test (and dev, else one is carved out of train).
    pub dataset: PathBuf,
    /// A sentence-transformers folder (BERT family) that both towers fine-tune from,
    /// such as models/all-MiniLM-L6-v2; without it, hashed towers.
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Where to write the pipeline; `-` prints it. Default: `<dataset name>.yaml`.
    #[arg(short, long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Where to write the dataset with a carved dev split, when the dataset has none.
    /// Default: beside the dataset, `<dataset>-with-dev`.
    #[arg(long, value_name = "DIR")]
    pub split_out: Option<PathBuf>,
    /// Replace the pipeline file, and a dev split folder `freshen data split` wrote,
    /// when they exist.
    #[arg(long)]
    pub force: bool,
}

/// `freshen fmt`.
#[derive(Debug, Args)]
pub struct FmtArgs {
    /// The pipeline files to rewrite in place.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Change nothing; exit with code 2 if a file would change.
    #[arg(long)]
    pub check: bool,
}

/// `freshen schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Print the reference in Markdown instead: every node type and model kind with its
    /// settings (what docs/reference.md holds).
    #[arg(long)]
    pub markdown: bool,
}

/// `freshen compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Output folders of training runs (each holds a summary.parquet). Folders named
    /// `<arm>-seed<N>` or `<arm>-s<N>` are averaged into one arm.
    #[arg(required = true)]
    pub runs: Vec<PathBuf>,
    /// Where to write the table as Parquet.
    #[arg(long, default_value = "out/compare.parquet")]
    pub out: PathBuf,
    /// Also draw test Recall@20 against training forwards and against wall seconds as a
    /// PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Also draw each arm's dev Recall@20 over the training steps as a PNG.
    #[arg(long)]
    pub curves: Option<PathBuf>,
}

/// `freshen study`.
#[derive(Debug, Args)]
pub struct StudyArgs {
    /// Output folders of synthetic-study runs (each holds the `fit` node's
    /// metrics.parquet). Runs differing only in their seed are averaged.
    pub runs: Vec<PathBuf>,
    /// Where to write the table as Parquet.
    #[arg(long, default_value = "out/study.parquet")]
    pub out: PathBuf,
    /// Also draw KL(P‖P_h) against the training fraction, per h size and staleness, as a
    /// PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// A run folder (with targets.parquet and softmax.parquet) to draw the toy picture
    /// of.
    #[arg(long, requires = "picture_out")]
    pub picture: Option<PathBuf>,
    /// Where to write the toy picture (PNG).
    #[arg(long, requires = "picture")]
    pub picture_out: Option<PathBuf>,
}

/// A pipeline file and its overrides.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The pipeline file.
    pub file: PathBuf,
    /// Override a setting: `--set nodes.embed.batch_size=64` (repeatable).
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub sets: Vec<String>,
    /// The most memory the run may need (for `check` and `run`), e.g. `16G` or `900M`; default: what the machine
    /// has available. `check` and `run` refuse a plan estimated to need more.
    #[arg(long, value_name = "SIZE", env = "FRESHEN_MAX_MEMORY")]
    pub max_memory: Option<String>,
}

/// `freshen check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The pipeline and overrides.
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Worker threads per process the memory estimate is for.
    #[arg(
        short = 'w',
        long = "workers",
        default_value_t = 1,
        env = "FRESHEN_WORKERS"
    )]
    pub workers: usize,
    /// Processes the memory estimate is for (the sharded cache splits over all workers).
    #[arg(
        short = 'n',
        long = "processes",
        default_value_t = 1,
        env = "FRESHEN_PROCESSES"
    )]
    pub processes: usize,
    /// Also list what the memory estimate counts, largest first, and its total in bytes.
    #[arg(long)]
    pub costs: bool,
}

/// `freshen run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The pipeline and overrides.
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Worker threads per process.
    #[arg(
        short = 'w',
        long = "workers",
        alias = "threads",
        default_value_t = 1,
        env = "FRESHEN_WORKERS"
    )]
    pub workers: usize,
    /// Number of processes.
    #[arg(
        short = 'n',
        long = "processes",
        default_value_t = 1,
        env = "FRESHEN_PROCESSES"
    )]
    pub processes: usize,
    /// Index of this process.
    #[arg(
        short = 'p',
        long = "process",
        default_value_t = 0,
        env = "FRESHEN_PROCESS"
    )]
    pub process: usize,
    /// File of host:port lines, one per process, in process order (`-p`); every process
    /// reads the same file. `-h` is help, as in every command.
    #[arg(short = 'H', long = "hostfile", env = "FRESHEN_HOSTFILE")]
    pub hostfile: Option<PathBuf>,
    /// Report connection progress between processes.
    #[arg(short = 'r', long = "report")]
    pub report: bool,
    /// Continue a training run from the last checkpoint in its out folder (refused when
    /// its settings or inputs changed; from step 0 when there is none yet).
    #[arg(long, env = "FRESHEN_RESUME")]
    pub resume: bool,
    /// Seconds between progress lines when stderr is not a terminal (0: none).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30.0,
        env = "FRESHEN_PROGRESS_EVERY"
    )]
    pub progress_every: f64,
    /// Print help.
    #[arg(long = "help", action = ArgAction::Help)]
    pub help: Option<bool>,
}

/// `freshen graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// The pipeline and overrides.
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Which drawing to print.
    #[arg(long, value_enum, default_value_t = GraphFormat::Both)]
    pub format: GraphFormat,
}

/// Graph drawings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Mermaid flowchart.
    Mermaid,
    /// Graphviz DOT.
    Dot,
    /// Both, Mermaid first.
    Both,
}

/// `freshen data ...`.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// A reverse-dictionary retrieval set (gloss → synset) from Debian's wordnet-base.
    Wordnet(WordnetArgs),
    /// A real set grown to `--targets` rows with generated distractor targets, its
    /// queries and qrels unchanged (seeded; deduplicated against the real texts).
    Distractors(DistractorArgs),
    /// A purely synthetic set of any size, for time and memory measurements.
    Synthetic(SyntheticArgs),
    /// The retrieval-augmented LM's task from a reverse-dictionary set: definition →
    /// the word it defines, the dictionary's entries as passages.
    Rlm(RlmArgs),
    /// A new split carved out of another, by query (seeded), into a new dataset folder.
    ///
    /// Its qrels/<into> holds a fraction of qrels/<split>'s queries and qrels/<split> the
    /// rest; its other files link to the dataset's, which is left as it is.
    Split(SplitArgs),
}

/// `freshen data split`.
#[derive(Debug, Args)]
pub struct SplitArgs {
    /// The dataset (BEIR layout, Parquet or JSONL).
    #[arg(long)]
    pub from: PathBuf,
    /// The split whose queries are divided.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// The new split's name.
    #[arg(long, default_value = "dev")]
    pub into: String,
    /// Fraction of the split's queries (those with a relevant document) that move.
    #[arg(long, default_value_t = 0.1)]
    pub fraction: f64,
    /// Seed of the hash of the query ids that picks them.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Output folder (a new one; `--force` replaces one this command wrote).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace `--out` if this command wrote it.
    #[arg(long)]
    pub force: bool,
}

/// `freshen data rlm`.
#[derive(Debug, Args)]
pub struct RlmArgs {
    /// The reverse-dictionary set (BEIR layout, Parquet).
    #[arg(long, default_value = "data/wordnet-sample")]
    pub from: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "data/rlm-sample")]
    pub out: PathBuf,
}

/// `freshen data distractors`.
#[derive(Debug, Args)]
pub struct DistractorArgs {
    /// The real set (BEIR layout, Parquet).
    #[arg(long, default_value = "data/full/wordnet")]
    pub from: PathBuf,
    /// Output folder.
    #[arg(long, default_value = "data/full/wordnet-1m")]
    pub out: PathBuf,
    /// Corpus rows in all, the real ones included.
    #[arg(long, default_value_t = 1_000_000)]
    pub targets: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
}

/// `freshen data synthetic`.
#[derive(Debug, Args)]
pub struct SyntheticArgs {
    /// Output folder.
    #[arg(long, default_value = "data/full/synthetic-4m")]
    pub out: PathBuf,
    /// Corpus rows.
    #[arg(long, default_value_t = 4_000_000)]
    pub targets: usize,
    /// One target in this many gets a query.
    #[arg(long, default_value_t = 40)]
    pub every: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 50_000)]
    pub vocab: usize,
    /// Seed of the generator.
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
}

/// `freshen data wordnet`.
#[derive(Debug, Args)]
pub struct WordnetArgs {
    /// Folder with WordNet's data.noun, data.verb, data.adj, data.adv.
    #[arg(long, default_value = crate::data::wordnet::DEFAULT_WORDNET_DIR, env = "FRESHEN_WORDNET_DIR")]
    pub wordnet_dir: PathBuf,
    /// Output folder (BEIR layout, Parquet).
    #[arg(long, default_value = "data/full/wordnet")]
    pub out: PathBuf,
    /// Keep only this many synsets (a seeded sample).
    #[arg(long)]
    pub sample: Option<usize>,
    /// Seed of the split and the sample.
    #[arg(long, default_value_t = 13)]
    pub seed: u64,
}
