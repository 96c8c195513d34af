//! Helpers shared by the integration test binaries. Each binary (`tests/<layer>/main.rs`,
//! and the `harness = false` binaries `storage_crash` and `storage_power_loss`) mounts this
//! module once as `crate::support`; a submodule that needs a cargo feature is compiled
//! only with it.

// Each binary uses a different subset of the helpers, and the rest is dead code there.
#![allow(
    dead_code,
    reason = "each test binary uses a different subset of the helpers"
)]

pub(crate) mod capture;
pub(crate) mod checkpoint;
#[cfg(feature = "cli")]
pub(crate) mod cli;
pub(crate) mod evidence;
pub(crate) mod fake_esl;
#[cfg(feature = "forward")]
pub(crate) mod forward;
#[cfg(feature = "server")]
pub(crate) mod fs_recordings;
pub(crate) mod process;
pub(crate) mod record;
pub(crate) mod refusing_store;
pub(crate) mod replay;
#[cfg(feature = "cli")]
pub(crate) mod routing;
#[cfg(feature = "server")]
pub(crate) mod server;
pub(crate) mod storage;

use std::time::{Duration, Instant};

use esl_replay::record::JsonMap;
use serde_json::Value;

/// How long [`wait_until`] waits for a state before the test fails: a guard against a test
/// that would otherwise hang, far beyond what any awaited state takes to come about, and
/// never a measure of speed.
pub(crate) const PATIENCE: Duration = Duration::from_secs(120);

/// Polls `done` until it holds; panics naming `what` if it still does not after
/// [`PATIENCE`].
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < give_up, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The map of a `json!({...})` literal (an empty map for any other value).
pub(crate) fn map(value: Value) -> JsonMap {
    match value {
        Value::Object(map) => map,
        _ => JsonMap::new(),
    }
}

/// The name libtest gives the test function `name` declared in the module `module_path`
/// (the caller's `module_path!()`): its path without the crate's name. A test that runs its
/// own binary again passes it with `--exact`, so the child runs that test and no other
/// whatever module the test file is mounted as.
pub(crate) fn test_name(module_path: &str, name: &str) -> String {
    match module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{name}"),
        None => name.to_owned(),
    }
}

/// Makes a FIFO at `path`, as a hostile user could where a store or checkpoint file belongs.
pub(crate) fn mkfifo(path: &std::path::Path) {
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        path,
        rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
    )
    .unwrap();
}

/// Runs `work` on a thread and fails the test if it has not returned within a minute: a
/// reader that blocks on a FIFO would otherwise hang the suite.
pub(crate) fn within_a_minute<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(work()).unwrap());
    result
        .recv_timeout(Duration::from_secs(60))
        .expect("blocked on a FIFO")
}
