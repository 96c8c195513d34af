//! The command-line interface: argument parsing, output and exit codes.
//!
//! This is the only module that prints, reads the environment or uses `anyhow`. Exit codes:
//! 0 success, 1 a check found problems (`verify`, `evidence compare`), 2 an error (bad flags, I/O, corruption).
//! A closed output pipe (for example `| head`) exits 0.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI is the only module that prints"
)]

mod bench;
mod capture;
mod checkpoint;
mod compat;
mod demo;
mod evidence;
mod forward;
mod input;
mod log;
mod prune;
mod replay;
mod serve;
mod store;

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The environment variable every `--checkpoint-dir` reads when the flag is not given.
const CHECKPOINT_DIR_ENV: &str = "ESL_REPLAY_CHECKPOINT_DIR";

/// `--format` of a command that prints one result: text for people or JSON for scripts.
/// Commands that print records also offer NDJSON (`store::Format`); `replay run` prints
/// NDJSON (`replay::Format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Text for people.
    #[default]
    Text,
    /// Compact JSON for scripts.
    Json,
}

impl Output {
    fn is_json(self) -> bool {
        self == Output::Json
    }
}

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
    /// Capture FreeSWITCH event-socket traffic into a store (until SIGINT/SIGTERM).
    Capture(Box<capture::CaptureArgs>),
    /// Demonstrate the pipeline with no FreeSWITCH: simulate, capture (with a dropped
    /// connection), then dry-run replay and evidence; `demo storage` shows crash recovery.
    Demo(demo::DemoArgs),
    /// Import a reference `artifacts.ndjson` file into a store.
    Import(store::ImportArgs),
    /// Export a store (or part of it) as reference NDJSON.
    Export(store::ExportArgs),
    /// Read records after a sequence, filtered by criteria.
    Read(store::ReadArgs),
    /// Print one record by id.
    Get(store::GetArgs),
    /// Print the newest records; with -f, keep printing new ones as they are appended.
    Tail(store::TailArgs),
    /// Show a store's records, sequences, bytes, capture-time range and artifact counts.
    #[command(alias = "inspect")]
    Stats(store::StatsArgs),
    /// Check every frame and every record checksum of a store, listing every problem; exit 1
    /// if any is damaged.
    Verify(VerifyArgs),
    /// Plan or apply checkpoint-aware retention on a segment-log store.
    Prune(prune::PruneArgs),
    /// Benchmarks that compare engines on the same data.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Tools for a raw segment log directory.
    #[command(subcommand)]
    Log(LogCommand),
    /// Save, show, list, find and delete consumer checkpoints in a checkpoint directory.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// Replay stored records offline: plan a batch, or run a range (dry-run by default)
    /// through a handler or guarded re-injection, resuming from a checkpoint.
    #[command(subcommand)]
    Replay(Box<replay::ReplayCommand>),
    /// Rebuild recovery evidence from stored records and compare it with scenarios.
    #[command(subcommand)]
    Evidence(evidence::EvidenceCommand),
    /// Forward records to Redis Streams or NATS with checkpointed, resumable delivery.
    #[command(subcommand)]
    Forward(forward::ForwardCommand),
    /// Serve a store's events to ESL clients as a FreeSWITCH inbound event socket would.
    Serve(serve::ServeArgs),
    /// Run a built-in FreeSWITCH simulator on an inbound event socket.
    Simulate(serve::SimulateArgs),
}

#[derive(Debug, clap::Args)]
struct VerifyArgs {
    #[command(flatten)]
    store: store::StoreArg,
}

#[derive(Debug, Subcommand)]
enum LogCommand {
    /// Show a log's segments, sequences and sizes.
    Inspect(log::InspectArgs),
    /// Check every frame of a log and list every damaged one; exit 1 if any is damaged.
    Verify(log::VerifyArgs),
    /// Cut a damaged end of the last segment that opening refuses, or accept records whose
    /// segment files are missing (recovery mode PointInTime): the records from the first
    /// damaged frame on, or the missing ones, are lost. Run `verify` first.
    Repair(log::RepairArgs),
    /// Pack every sealed segment now: each record compressed against a dictionary trained on
    /// its segment (what capture stores do in the background). Needs the writer lock.
    Pack(log::PackArgs),
}

/// What a command reports back to `main`.
pub(crate) enum Outcome {
    Success,
    ProblemsFound,
}

/// Runs the command line and maps the outcome to an exit code.
#[must_use]
pub(crate) fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let result = match cli.command {
        Command::Capture(args) => capture::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Import(args) => store::import(&args),
        Command::Export(args) => store::export(&args),
        Command::Read(args) => store::read(&args),
        Command::Get(args) => store::get(&args),
        Command::Tail(args) => store::tail(&args),
        Command::Stats(args) => store::stats(&args),
        Command::Verify(args) => match store::verify_store(&args.store) {
            Ok(0) => Ok(Outcome::Success),
            Ok(_) => Ok(Outcome::ProblemsFound),
            Err(error) => Err(error),
        },
        Command::Bench(command) => bench::run(&command),
        Command::Prune(args) => prune::run(&args),
        Command::Log(LogCommand::Inspect(args)) => log::inspect(&args),
        Command::Log(LogCommand::Verify(args)) => log::verify(&args),
        Command::Log(LogCommand::Repair(args)) => log::repair(&args),
        Command::Log(LogCommand::Pack(args)) => log::pack(&args),
        Command::Checkpoint(command) => checkpoint::run(&command),
        Command::Replay(command) => replay::run(&command),
        Command::Evidence(command) => evidence::run(&command),
        Command::Forward(command) => forward::run(&command),
        Command::Serve(args) => serve::serve(&args),
        Command::Simulate(args) => serve::simulate(&args),
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
    // Colour only for a person at a terminal: files, pipes and CI logs get plain text.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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
