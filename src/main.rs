//! The `esl-replay` command-line tool; all logic lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    esl_replay::cli::main()
}
