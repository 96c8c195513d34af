//! Child processes of the test binaries, and the one hazard they bring to the others' logs.
//!
//! A log's writer lock is an `flock` on an open file description [DIR-03], and a child
//! process holds a copy of every descriptor of this process from `fork` until its `exec`
//! closes them: in that moment it holds every writer lock of the process too. A test that
//! closes a log and opens it again within that moment (another test's child being spawned)
//! would find the log locked, and so would a child spawned to open it. So every child is
//! spawned through [`SpawnSafely`], which holds the fork lock until no lock of this process
//! lives on in the child, and the tests open writers through [`open_log`],
//! [`open_store`] and [`open_store_with`], which first wait for any spawn under way.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use esl_replay::storage::{Log, LogOptions, RecoveryReport};
use esl_replay::store::LogStore;

/// Held for writing while a child is spawned.
static FORK: RwLock<()> = RwLock::new(());

/// Returns once no child is being spawned: from then on, no child holds a writer lock this
/// process has released.
pub(crate) fn wait_for_spawns() {
    drop(FORK.read().unwrap_or_else(PoisonError::into_inner));
}

/// [`Log::open`], once no child is being spawned.
pub(crate) fn open_log(
    dir: impl AsRef<Path>,
    options: LogOptions,
) -> esl_replay::storage::Result<(Log, RecoveryReport)> {
    wait_for_spawns();
    Log::open(dir, options)
}

/// [`LogStore::open`], once no child is being spawned.
pub(crate) fn open_store(root: impl AsRef<Path>) -> esl_replay::store::Result<LogStore> {
    wait_for_spawns();
    LogStore::open(root)
}

/// [`LogStore::open_with`], once no child is being spawned.
pub(crate) fn open_store_with(
    root: impl AsRef<Path>,
    options: LogOptions,
) -> esl_replay::store::Result<LogStore> {
    wait_for_spawns();
    LogStore::open_with(root, options)
}

/// A store at `root` whose writer syncs only when told (`SyncPolicy::OsOnly`), holding
/// `envelopes` in its files, none of them synced: what a consumer that must not run ahead of
/// the disk meets beside a writer that has not synced yet.
pub(crate) fn unsynced_store(
    root: impl AsRef<Path>,
    envelopes: Vec<esl_replay::record::Envelope>,
) -> LogStore {
    use esl_replay::store::ArtifactStore as _;
    let never_syncs = LogOptions {
        sync_policy: esl_replay::storage::SyncPolicy::OsOnly,
        ..LogOptions::default()
    };
    let mut writer = open_store_with(root, never_syncs).unwrap();
    writer.write_batch(envelopes).unwrap();
    writer
}

/// [`Command`]'s `spawn`, `output` and `status`, each spawning the child under the fork lock.
pub(crate) trait SpawnSafely {
    /// As [`Command::spawn`].
    fn spawn_safely(&mut self) -> io::Result<Child>;
    /// As [`Command::output`] (standard input empty, output and error captured).
    fn output_safely(&mut self) -> io::Result<Output>;
    /// As [`Command::status`].
    fn status_safely(&mut self) -> io::Result<ExitStatus>;
}

impl SpawnSafely for Command {
    fn spawn_safely(&mut self) -> io::Result<Child> {
        let _forking = FORK.write().unwrap_or_else(PoisonError::into_inner);
        let child = self.spawn()?;
        // `spawn` returns once the child runs `exec`, which closes the descriptors it
        // inherited a moment later (a lock goes when the child first returns from `exec`).
        // A lock that outlives that by far is someone else's doing: stop waiting for it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(lock) = a_lock_held_only_elsewhere() {
            if Instant::now() > deadline {
                eprintln!("lock {lock} of this process lives on without a descriptor");
                break;
            }
            std::thread::yield_now();
        }
        Ok(child)
    }

    fn output_safely(&mut self) -> io::Result<Output> {
        self.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn_safely()?
            .wait_with_output()
    }

    fn status_safely(&mut self) -> io::Result<ExitStatus> {
        self.spawn_safely()?.wait()
    }
}

/// A lock this process took (an `flock`, as the logs' writer and retention locks are) that
/// no descriptor of this process refers to any more: its file is open only in a child that
/// has not finished `exec` yet. Read from `/proc/locks` (`N: FLOCK ADVISORY WRITE <pid>
/// <major>:<minor>:<inode> 0 EOF`, with lines for blocked waiters starting `N: ->`).
fn a_lock_held_only_elsewhere() -> Option<String> {
    let pid = std::process::id().to_string();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let ours: Vec<&str> = locks
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&"FLOCK") && fields.get(4) == Some(&pid.as_str()))
                .then(|| fields.get(5).copied())
                .flatten()
        })
        .collect();
    if ours.is_empty() {
        return None;
    }
    let open: BTreeSet<String> = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .flatten()
        .filter_map(|entry| std::fs::metadata(entry.path()).ok())
        .map(|metadata| {
            let dev = metadata.dev();
            let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
            let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
            format!("{major:02x}:{minor:02x}:{}", metadata.ino())
        })
        .collect();
    ours.into_iter()
        .find(|lock| !open.contains(*lock))
        .map(str::to_owned)
}
