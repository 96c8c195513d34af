//! Offline replay: the executor, fold replay and the `replay` commands. Each module is one
//! former test file.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "cli")]
mod replay_cli;
mod replay_executor;
mod replay_fold;
#[cfg(feature = "cli")]
mod replay_resume;
