//! The `esl-replay` command-line tool; all logic lives in the library's `cli` module.

// Replay decodes millions of small JSON maps; glibc's allocator fragments under that churn
// (decoded replay ran 3x slower beside long-lived allocations), mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    esl_replay::cli::main()
}
