//! The reference's `CheckpointStressTest` (§10) plus concurrency: 250 consecutive saves
//! keep exactly the latest; many threads saving one key at once never produce a torn or
//! unreadable checkpoint (each save has its own temporary file), while readers load it
//! concurrently.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use esl_replay::checkpoint::{Checkpoint, CheckpointService, ResumeState};
use esl_replay::record::{JsonMap, ReadCursor};
use serde_json::json;
use tempfile::tempdir;

use crate::support;
use crate::support::checkpoint::{file_names, fixed_store};

#[test]
fn repeated_checkpoint_saves_remain_restart_safe() {
    let dir = tempdir().unwrap();
    let service = CheckpointService::new(fixed_store(dir.path()), "stress").unwrap();
    for sequence in 1..=250u64 {
        let mut metadata = JsonMap::new();
        metadata.insert("iteration".into(), sequence.into());
        service
            .save(ReadCursor::new(sequence, Some(sequence * 10)), metadata)
            .unwrap();
    }
    // A fresh store instance, as after a restart.
    let state = ResumeState::resolve(&fixed_store(dir.path()), "stress").unwrap();
    assert!(state.is_resuming());
    assert_eq!(state.cursor().last_consumed_sequence(), 250);
    assert_eq!(state.cursor().byte_offset_hint(), Some(2500));
    assert_eq!(
        state.checkpoint().unwrap().metadata()["iteration"],
        json!(250)
    );
    assert_eq!(file_names(dir.path()).len(), 1);
}

/// The metadata of save `sequence` by `thread`: its fields all derive from the sequence, so
/// a checkpoint mixing two saves would be detected.
fn metadata(thread: u64, sequence: u64) -> JsonMap {
    let mut metadata = JsonMap::new();
    metadata.insert("thread".into(), thread.into());
    metadata.insert("sequence".into(), sequence.into());
    metadata.insert(
        "pad".into(),
        "x".repeat(usize::try_from(sequence % 97 * 50).unwrap())
            .into(),
    );
    metadata
}

fn assert_consistent(checkpoint: &Checkpoint) {
    let sequence = checkpoint.cursor().last_consumed_sequence();
    let thread = checkpoint.metadata()["thread"].as_u64().unwrap();
    assert_eq!(checkpoint.metadata(), &metadata(thread, sequence));
    assert_eq!(checkpoint.cursor().byte_offset_hint(), Some(sequence * 7));
}

#[test]
fn concurrent_saves_of_one_key_never_tear_the_checkpoint() {
    const THREADS: u64 = 6;
    const SAVES: u64 = 40;
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let store = store.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut loads = 0u64;
            while !done.load(Ordering::Relaxed) {
                if let Some(checkpoint) = store.load("shared").unwrap() {
                    assert_consistent(&checkpoint);
                    loads += 1;
                }
            }
            loads
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                for n in 1..=SAVES {
                    let sequence = thread * 1000 + n;
                    let checkpoint = Checkpoint::new(
                        "shared",
                        ReadCursor::new(sequence, Some(sequence * 7)),
                        support::checkpoint::NOW,
                        metadata(thread, sequence),
                    )
                    .unwrap();
                    store.save(&checkpoint).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let loads = reader.join().unwrap();
    assert!(loads > 0);
    let last = store.load("shared").unwrap().unwrap();
    assert_consistent(&last);
    assert_eq!(last.cursor().last_consumed_sequence() % 1000, SAVES);
    // Only the checkpoint file is left: no temporary survives a successful save.
    assert_eq!(
        file_names(dir.path()),
        [store
            .path_for("shared")
            .file_name()
            .unwrap()
            .to_string_lossy()]
    );
}

#[test]
fn concurrent_saves_of_different_keys_are_independent() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let writers: Vec<_> = (0..4u64)
        .map(|thread| {
            let store = store.clone();
            std::thread::spawn(move || {
                let key = format!("worker-{thread}");
                for sequence in 1..=25 {
                    let checkpoint = Checkpoint::new(
                        key.as_str(),
                        ReadCursor::new(sequence, Some(sequence * 7)),
                        support::checkpoint::NOW,
                        metadata(thread, sequence),
                    )
                    .unwrap();
                    store.save(&checkpoint).unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let all = store.list().unwrap();
    assert_eq!(all.len(), 4);
    for checkpoint in &all {
        assert_consistent(checkpoint);
        assert_eq!(checkpoint.cursor().last_consumed_sequence(), 25);
    }
}
