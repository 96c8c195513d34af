//! The command-line interface: argument parsing, output and exit codes.
//!
//! This is the only module that prints, reads the environment or uses `anyhow`. Exit codes:
//! 0 success, 1 a check found problems (`verify`), 2 an error (bad flags, I/O, corruption).
//! A closed output pipe (for example `| head`) exits 0.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI is the only module that prints"
)]

mod demo;
mod log;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// esl-replay: durable capture, ordered replay and audit evidence for FreeSWITCH ESL traffic.
#[derive(Debug, Parser)]
#[command(name = "esl-replay", version, about, propagate_version = true)]
struct Cli {
    /// Log more detail to stderr (repeat for more).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Demonstrate the storage engine: append, crash, recover, read back, truncate.
    Demo(demo::DemoArgs),
    /// Show a log's segments, sequences and sizes.
    Inspect(log::InspectArgs),
    /// Check every frame of a log; exit 1 if any is damaged.
    Verify(log::VerifyArgs),
}

/// What a command reports back to `main`.
pub(crate) enum Outcome {
    Success,
    ProblemsFound,
}

/// Runs the command line and maps the outcome to an exit code.
#[must_use]
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        Command::Inspect(args) => log::inspect(&args),
        Command::Verify(args) => log::verify(&args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::ProblemsFound) => ExitCode::from(1),
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ESL_REPLAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
