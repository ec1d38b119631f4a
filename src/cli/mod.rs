//! The command line: `new`, `run`, `check`, `graph`, `fmt`, `schema`, `data`, `compare`,
//! `study` and `bench`.
//!
//! [`run`] is the whole program: it tunes the process, parses the arguments, sets up
//! logging, runs the command and turns its error into one line and an exit code.

mod args;
mod commands;
mod new;
mod process;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

pub use args::*;

/// Runs the `freshen` command with the process's arguments.
pub fn run() -> ExitCode {
    process::tune();
    let cli = Cli::parse();
    init_logging(cli.log);
    match commands::dispatch(&cli) {
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
