//! Crash safety of checkpoint saves (decision C3). A save is: write a uniquely named
//! temporary file in the directory, fsync it, rename it over the checkpoint file, fsync
//! the directory. These tests show that `load` returns either the old or the new
//! checkpoint, never a torn one, whatever step a crash interrupts:
//!
//! - in process, by leaving the exact on-disk state of a crash after each step (an empty
//!   temporary, a half-written one, a complete one not yet renamed, the rename done) and
//!   loading, listing and saving again;
//! - out of process, by killing (SIGKILL) a child process that saves as fast as it can, at
//!   random moments, and loading after every kill. The child is this test binary re-run
//!   with an environment variable that turns `crash_child_saves_in_a_loop` into the loop.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use esl_replay::checkpoint::{Checkpoint, CheckpointStore, file};
use esl_replay::record::ReadCursor;
use serde_json::json;
use tempfile::tempdir;

use crate::support;
use crate::support::checkpoint::{NOW, file_names, fixed_store};
use crate::support::map;
use crate::support::process::SpawnSafely as _;

const CHILD_DIR_ENV: &str = "ESL_REPLAY_CHECKPOINT_CRASH_CHILD_DIR";
const KEY: &str = "crash-key";

/// The checkpoint saved at `sequence`: every field derives from the sequence (and the pad
/// is large, so writes take long enough to be interrupted), so a mix of two saves is seen.
fn checkpoint_at(sequence: u64) -> Checkpoint {
    let pad_len = usize::try_from(sequence % 13).unwrap() * 4096 + 1024;
    Checkpoint::new(
        KEY,
        ReadCursor::new(sequence, Some(sequence * 3)),
        NOW,
        map(json!({"sequence": sequence, "pad": "p".repeat(pad_len)})),
    )
    .unwrap()
}

fn assert_whole(checkpoint: &Checkpoint) {
    let sequence = checkpoint.cursor().last_consumed_sequence();
    assert_eq!(checkpoint, &checkpoint_at(sequence));
}

/// The temporary file name a save uses (`.<file name>.<16 hex>.tmp`).
fn temporary_for(store: &CheckpointStore, suffix: &str) -> std::path::PathBuf {
    let name = store.path_for(KEY);
    let name = name.file_name().unwrap().to_string_lossy();
    store.dir().join(format!(".{name}.{suffix}.tmp"))
}

#[test]
fn a_crash_at_any_step_of_a_save_leaves_the_old_or_the_new_checkpoint() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let old = checkpoint_at(1);
    store.save(&old).unwrap();
    let new = checkpoint_at(2);
    let new_bytes = file::encode(&new).unwrap().into_bytes();

    // Crash after creating the temporary, before writing: an empty temporary.
    std::fs::write(temporary_for(&store, "00000000000000a1"), b"").unwrap();
    // Crash while writing: half of the new content.
    let half = new_bytes.get(..new_bytes.len() / 2).unwrap();
    std::fs::write(temporary_for(&store, "00000000000000a2"), half).unwrap();
    // Crash after writing and syncing, before the rename: the whole new content.
    std::fs::write(temporary_for(&store, "00000000000000a3"), &new_bytes).unwrap();
    // The reference's fixed temporary name, left by a crashed reference process.
    let mut reference_tmp = store.path_for(KEY).into_os_string();
    reference_tmp.push(".tmp");
    std::fs::write(&reference_tmp, half).unwrap();

    // In every one of those states the old checkpoint is what loads and lists.
    assert_eq!(store.load(KEY).unwrap().as_ref(), Some(&old));
    assert_eq!(store.list().unwrap(), std::slice::from_ref(&old));
    assert!(store.exists(KEY).unwrap());

    // Crash after the rename (before or after the directory sync): the new checkpoint.
    #[expect(
        clippy::disallowed_methods,
        reason = "the test reproduces the crash state by hand, durability is not the point"
    )]
    std::fs::rename(
        temporary_for(&store, "00000000000000a3"),
        store.path_for(KEY),
    )
    .unwrap();
    assert_eq!(store.load(KEY).unwrap().as_ref(), Some(&new));

    // Saving again works beside the stray temporaries, which never become checkpoints.
    let newer = checkpoint_at(3);
    store.save(&newer).unwrap();
    assert_eq!(store.load(KEY).unwrap().as_ref(), Some(&newer));
    assert_eq!(store.list().unwrap(), [newer]);
    let removed = store.remove_stray_temporaries(Duration::ZERO).unwrap();
    assert_eq!(removed.len(), 3);
    assert_eq!(file_names(dir.path()).len(), 1);
}

#[test]
fn a_crash_before_the_first_save_completes_leaves_no_checkpoint() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let bytes = file::encode(&checkpoint_at(5)).unwrap();
    std::fs::write(temporary_for(&store, "00000000000000b1"), &bytes[..10]).unwrap();
    assert_eq!(store.load(KEY).unwrap(), None);
    assert!(!store.exists(KEY).unwrap());
    assert_eq!(store.list().unwrap(), []);
}

/// Not a test of its own: the child process of
/// `killing_a_saving_process_never_leaves_a_torn_checkpoint`. Without the environment
/// variable it returns at once; with it, it saves increasing checkpoints until killed.
#[test]
fn crash_child_saves_in_a_loop() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let store = fixed_store(Path::new(&dir));
    let mut sequence = store
        .load(KEY)
        .unwrap()
        .map_or(0, |checkpoint| checkpoint.cursor().last_consumed_sequence());
    loop {
        sequence += 1;
        store.save(&checkpoint_at(sequence)).unwrap();
    }
}

#[test]
fn killing_a_saving_process_never_leaves_a_torn_checkpoint() {
    const ROUNDS: u64 = 12;
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let mut last_seen = 0;
    let child_test = support::test_name(module_path!(), "crash_child_saves_in_a_loop");
    for _ in 0..ROUNDS {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &child_test, "--test-threads=1"])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn_safely()
            .unwrap();
        std::thread::sleep(Duration::from_millis(100 + rand::random::<u64>() % 150));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            !status.success(),
            "the child must have been killed, not finished"
        );
        match store.load(KEY).unwrap() {
            Some(checkpoint) => {
                assert_whole(&checkpoint);
                let sequence = checkpoint.cursor().last_consumed_sequence();
                assert!(
                    sequence >= last_seen,
                    "went back from {last_seen} to {sequence}"
                );
                last_seen = sequence;
            }
            None => assert_eq!(last_seen, 0, "a saved checkpoint disappeared"),
        }
    }
    assert!(last_seen > 0, "the child never completed a save");
    // Killed saves may leave temporaries; they are never checkpoints.
    assert_eq!(store.list().unwrap().len(), 1);
}
