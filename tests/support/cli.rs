//! The `esl-replay` binary as the command-line tests run it: with none of the environment
//! variables it reads settings from, so only what a test passes counts.

use std::process::{Command, Output};

use super::process::SpawnSafely as _;

/// The environment variables the binary takes settings from.
const SETTINGS: [&str; 5] = [
    "ESL_REPLAY_STORE",
    "ESL_REPLAY_CHECKPOINT_DIR",
    "ESL_REPLAY_TOKEN",
    "ESL_REPLAY_JWT_SECRET",
    "ESL_PASSWORD",
];

/// The `esl-replay` binary, with none of [`SETTINGS`] inherited (a test sets what it needs).
pub(crate) fn command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_esl-replay"));
    for name in SETTINGS {
        command.env_remove(name);
    }
    command
}

/// Runs the binary with `args` and waits for it.
pub(crate) fn run(args: &[&str]) -> Output {
    command().args(args).output_safely().unwrap()
}

/// Runs a command that must succeed ([`run`]) and returns its standard output.
pub(crate) fn run_ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// The standard output of a run, which must be UTF-8.
pub(crate) fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// The standard error of a run (invalid UTF-8 replaced).
pub(crate) fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The standard error of a run that ended in an error: exit code 2 (`cli/mod.rs`), not a
/// panic.
pub(crate) fn error_output(output: &Output) -> String {
    let text = stderr(output);
    assert_eq!(output.status.code(), Some(2), "{text}");
    assert!(!text.contains("panicked"), "{text}");
    text
}
