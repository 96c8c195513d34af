//! The `esl-replay` command-line tool. The command line lives here, in the binary, and uses
//! only the library's public API, as any program embedding the engine would.

mod cli;

// Replay decodes millions of small JSON maps; glibc's allocator fragments under that churn
// (decoded replay ran 3x slower beside long-lived allocations), mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    cli::main()
}
