//! The `esl-replay` binary as the command-line tests run it: without a store or checkpoint
//! directory taken from the environment, so only the arguments count.

/// Runs the `esl-replay` binary with `args`, without a store or checkpoint directory taken
/// from the environment.
pub(crate) fn cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_esl-replay"))
        .args(args)
        .env_remove("ESL_REPLAY_STORE")
        .env_remove("ESL_REPLAY_CHECKPOINT_DIR")
        .output()
        .unwrap()
}

/// Runs a command that must succeed ([`cli`]) and returns its standard output.
pub(crate) fn cli_ok(args: &[&str]) -> String {
    let output = cli(args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}
