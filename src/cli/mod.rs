//! The command-line interface: argument parsing, output and exit codes.
#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "the CLI is the only module that prints"
)]

use std::process::ExitCode;

/// Runs the command line and maps the outcome to an exit code.
#[must_use]
pub fn main() -> ExitCode {
    println!("esl-replay: under construction");
    ExitCode::SUCCESS
}
