//! Checkpoint files byte for byte and file by file (reference §4.2-4.3, decisions K5, C10):
//! saved files are compared with the exact text and name the reference writes; files the
//! reference writes (and its legacy names and variants) load as it loads them; no key can
//! reach outside the directory; `find`, `find_all`, `list` and `scan` select, order, limit
//! and report damaged files as specified; stray temporaries are ignored and removable.

use std::time::Duration;

use esl_replay::checkpoint::{
    Checkpoint, CheckpointCriteria, CheckpointStore, CorruptKind, Error, IdentityAnchors, file,
};
use esl_replay::record::{JsonMap, ReadCursor};
use serde_json::json;
use tempfile::tempdir;
use time::macros::datetime;

use crate::support::checkpoint::{NOW, file_names, fixed_store};
use crate::support::{map, mkfifo, within_a_minute};

const K2_FILE: &str =
    "k2-015f7e6bc5aeaf483724089e9252cc13b50951a6b69412522765cff4d780306e.checkpoint.json";

#[test]
fn saved_file_matches_the_reference_example_byte_for_byte() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    store
        .save(&Checkpoint::new("k2", ReadCursor::new(1, None), NOW, JsonMap::new()).unwrap())
        .unwrap();
    assert_eq!(file_names(dir.path()), [K2_FILE]);
    let text = std::fs::read_to_string(dir.path().join(K2_FILE)).unwrap();
    assert_eq!(
        text,
        r#"{
    "key": "k2",
    "last_consumed_sequence": 1,
    "byte_offset_hint": null,
    "saved_at": "2024-06-01T12:00:00.000+00:00",
    "metadata": []
}"#
    );
}

#[test]
fn saved_file_with_rich_metadata_matches_php_pretty_print_byte_for_byte() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let metadata = map(json!({
        "attempt": 2,
        "ratio": 0.5,
        "whole": 1.0,
        "big": 1e20,
        "path": "a/b",
        "text": "é\u{2028}\t\"q\"",
        "empty": {},
        "list": [1, [], {"z": null}],
        "nested": {"b": true, "a": false},
        "indexed": {"0": "x", "1": "y"},
        "replay_session_id": "r-1"
    }));
    let checkpoint = Checkpoint::new(
        "worker/α",
        ReadCursor::new(42, Some(4096)),
        datetime!(2024-06-01 14:30:15.123456 +02:00),
        metadata,
    )
    .unwrap();
    store.save(&checkpoint).unwrap();
    let name =
        "worker_-73048fca1f0ba49c7d0c76813d57adeb9db50f337cefb7c3edcd2413c7c75659.checkpoint.json";
    assert_eq!(file_names(dir.path()), [name]);
    let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
    assert_eq!(
        text,
        r#"{
    "key": "worker/α",
    "last_consumed_sequence": 42,
    "byte_offset_hint": 4096,
    "saved_at": "2024-06-01T14:30:15.123+02:00",
    "metadata": {
        "attempt": 2,
        "ratio": 0.5,
        "whole": 1,
        "big": 1.0e+20,
        "path": "a/b",
        "text": "é\u2028\t\"q\"",
        "empty": [],
        "list": [
            1,
            [],
            {
                "z": null
            }
        ],
        "nested": {
            "b": true,
            "a": false
        },
        "indexed": [
            "x",
            "y"
        ],
        "replay_session_id": "r-1"
    }
}"#
    );
    // Loading keeps the offset, truncates to milliseconds and writes the same bytes again.
    let loaded = store.load("worker/α").unwrap().unwrap();
    assert_eq!(
        loaded.saved_at(),
        &datetime!(2024-06-01 14:30:15.123 +02:00)
    );
    assert_eq!(file::encode(&loaded).unwrap(), text);
}

#[test]
fn reference_written_files_load_as_the_reference_loads_them() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    // The reference's own layout, with `{}` metadata and a zero-offset timestamp.
    std::fs::write(
        dir.path().join(K2_FILE),
        "{\n    \"key\": \"k2\",\n    \"last_consumed_sequence\": 3,\n    \"byte_offset_hint\": 128,\n    \"saved_at\": \"2024-06-01T12:00:00.250+00:00\",\n    \"metadata\": {}\n}",
    )
    .unwrap();
    let loaded = store.load("k2").unwrap().unwrap();
    assert_eq!(loaded.cursor(), &ReadCursor::new(3, Some(128)));
    assert_eq!(loaded.saved_at(), &datetime!(2024-06-01 12:00:00.250 UTC));
    assert!(loaded.metadata().is_empty());

    // An old legacy-named file without `key` or `saved_at`, with a string sequence.
    std::fs::write(
        dir.path().join("legacy-key.checkpoint.json"),
        r#"{"last_consumed_sequence":"12","byte_offset_hint":"5","metadata":{"a":1}}"#,
    )
    .unwrap();
    let legacy = store.load("legacy-key").unwrap().unwrap();
    assert_eq!(legacy.key(), "legacy-key");
    assert_eq!(legacy.cursor(), &ReadCursor::new(12, None));
    assert_eq!(legacy.saved_at(), &NOW);
    assert_eq!(legacy.metadata(), &map(json!({"a": 1})));
}

#[test]
fn legacy_files_are_found_by_load_exists_and_delete() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let legacy = dir.path().join("my_key.checkpoint.json");
    std::fs::write(&legacy, r#"{"key":"my/key","last_consumed_sequence":4}"#).unwrap();
    assert!(store.exists("my/key").unwrap());
    assert_eq!(
        store
            .load("my/key")
            .unwrap()
            .unwrap()
            .cursor()
            .last_consumed_sequence(),
        4
    );
    // A legacy file names whatever key it holds, even another one.
    std::fs::write(&legacy, r#"{"key":"other","last_consumed_sequence":4}"#).unwrap();
    assert_eq!(store.load("my key").unwrap().unwrap().key(), "other");
    assert!(store.delete("my/key").unwrap());
    assert!(!legacy.exists());
    assert!(!store.exists("my/key").unwrap());

    // Keys with nothing printable use the MD5 of the key as legacy name.
    let md5_name = dir
        .path()
        .join("66ddcd97cfdeabb2f6fb8a999b4bc76f.checkpoint.json");
    assert_eq!(store.legacy_path_for("é").unwrap(), md5_name);
    std::fs::write(&md5_name, r#"{"key":"é","last_consumed_sequence":8}"#).unwrap();
    assert_eq!(
        store
            .load("é")
            .unwrap()
            .unwrap()
            .cursor()
            .last_consumed_sequence(),
        8
    );
    assert!(store.delete("é").unwrap());
    assert!(file_names(dir.path()).is_empty());
}

#[test]
fn a_key_equal_to_another_keys_file_stem_never_touches_that_file() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    store
        .save(&Checkpoint::new("k2", ReadCursor::new(1, None), NOW, JsonMap::new()).unwrap())
        .unwrap();
    let stem = K2_FILE.strip_suffix(".checkpoint.json").unwrap();
    assert!(!store.exists(stem).unwrap());
    assert_eq!(store.load(stem).unwrap(), None);
    assert!(!store.delete(stem).unwrap());
    assert!(store.exists("k2").unwrap());
}

#[test]
fn the_current_file_wins_over_the_legacy_file_and_both_are_deleted() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    std::fs::write(
        dir.path().join("dup.checkpoint.json"),
        r#"{"key":"dup","last_consumed_sequence":1,"saved_at":"2024-01-01T00:00:00.000+00:00","metadata":{"job_uuid":"j"}}"#,
    )
    .unwrap();
    let current = Checkpoint::new(
        "dup",
        ReadCursor::new(2, None),
        NOW,
        map(json!({"job_uuid": "j"})),
    )
    .unwrap();
    store.save(&current).unwrap();
    assert_eq!(store.load("dup").unwrap().unwrap(), current);
    // As in the reference, a lookup sees both files of the key.
    let criteria = CheckpointCriteria::new(
        IdentityAnchors {
            job_uuid: Some("j".into()),
            ..IdentityAnchors::default()
        },
        10,
    )
    .unwrap();
    let found: Vec<u64> = store
        .find(&criteria)
        .unwrap()
        .iter()
        .map(|c| c.cursor().last_consumed_sequence())
        .collect();
    assert_eq!(found, [2, 1]);
    assert!(store.delete("dup").unwrap());
    assert!(file_names(dir.path()).is_empty());
}

#[test]
fn no_key_reaches_outside_the_directory() {
    let root = tempdir().unwrap();
    let dir = root.path().join("checkpoints");
    let store = fixed_store(&dir);
    // Decoys outside the directory that a path-traversing key would hit.
    std::fs::write(root.path().join("escape.checkpoint.json"), "{}").unwrap();
    std::fs::write(root.path().join("_escape.checkpoint.json"), "{}").unwrap();
    let long = "x".repeat(10_000);
    let long_traversal = "../".repeat(1_000);
    let keys = [
        "../escape",
        "../../escape",
        "/etc/passwd",
        "/",
        "a\0b",
        "\0/\0",
        "..",
        ".",
        "./.",
        "..\\..\\escape",
        "ключ/../..",
        "😀",
        long.as_str(),
        long_traversal.as_str(),
        "-",
    ];
    for (index, key) in keys.iter().enumerate() {
        let sequence = u64::try_from(index).unwrap() + 1;
        store
            .save(
                &Checkpoint::new(*key, ReadCursor::new(sequence, None), NOW, JsonMap::new())
                    .unwrap(),
            )
            .unwrap();
        let path = store.path_for(key);
        assert_eq!(path.parent(), Some(dir.as_path()), "{key:?}");
        if let Some(legacy) = store.legacy_path_for(key) {
            assert_eq!(legacy.parent(), Some(dir.as_path()), "{key:?}");
        }
        let loaded = store.load(key).unwrap().unwrap();
        assert_eq!(loaded.key(), *key);
        assert_eq!(loaded.cursor().last_consumed_sequence(), sequence);
    }
    assert_eq!(file_names(&dir).len(), keys.len());
    assert_eq!(
        file_names(root.path()),
        [
            "_escape.checkpoint.json",
            "checkpoints",
            "escape.checkpoint.json"
        ]
    );
    for key in keys {
        assert!(store.delete(key).unwrap(), "{key:?}");
    }
    assert!(file_names(&dir).is_empty());
    assert_eq!(
        file_names(root.path()),
        [
            "_escape.checkpoint.json",
            "checkpoints",
            "escape.checkpoint.json"
        ]
    );
}

/// Writes a checkpoint file directly (fast, no fsync), as another process would.
fn write_checkpoint(store: &CheckpointStore, checkpoint: &Checkpoint) {
    std::fs::write(
        store.path_for(checkpoint.key()),
        file::encode(checkpoint).unwrap(),
    )
    .unwrap();
}

fn with_worker(
    key: &str,
    sequence: u64,
    saved_at: time::OffsetDateTime,
    worker: &str,
) -> Checkpoint {
    Checkpoint::new(
        key,
        ReadCursor::new(sequence, None),
        saved_at,
        map(json!({"replay_session_id": "r", "worker_session_id": worker})),
    )
    .unwrap()
}

fn criteria(limit: usize) -> CheckpointCriteria {
    CheckpointCriteria::new(
        IdentityAnchors {
            replay_session_id: Some("r".into()),
            ..IdentityAnchors::default()
        },
        limit,
    )
    .unwrap()
}

#[test]
fn find_orders_newest_saved_first_then_by_key_and_applies_the_limit() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    write_checkpoint(
        &store,
        &with_worker("old", 1, datetime!(2024-01-01 0:00 UTC), "a"),
    );
    write_checkpoint(
        &store,
        &with_worker("b-tie", 2, datetime!(2024-03-01 0:00 UTC), "a"),
    );
    write_checkpoint(
        &store,
        &with_worker("a-tie", 3, datetime!(2024-03-01 2:00 +02:00), "a"),
    );
    write_checkpoint(
        &store,
        &with_worker("new", 4, datetime!(2024-05-01 0:00 UTC), "b"),
    );
    let keys =
        |found: Vec<Checkpoint>| found.iter().map(|c| c.key().to_owned()).collect::<Vec<_>>();
    assert_eq!(
        keys(store.find(&criteria(10)).unwrap()),
        ["new", "a-tie", "b-tie", "old"]
    );
    assert_eq!(keys(store.find(&criteria(2)).unwrap()), ["new", "a-tie"]);
    assert_eq!(
        keys(store.list().unwrap()),
        ["new", "a-tie", "b-tie", "old"]
    );
    let worker_a = CheckpointCriteria::new(
        IdentityAnchors {
            replay_session_id: Some("r".into()),
            worker_session_id: Some("a".into()),
            ..IdentityAnchors::default()
        },
        1,
    )
    .unwrap();
    assert_eq!(keys(store.find(&worker_a).unwrap()), ["a-tie"]);
    assert_eq!(
        keys(store.find_all(&worker_a).unwrap()),
        ["a-tie", "b-tie", "old"]
    );
}

#[test]
fn find_all_returns_every_match_beyond_the_default_limit() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    for n in 0..150u64 {
        let saved_at =
            datetime!(2024-01-01 0:00 UTC) + time::Duration::minutes(i64::try_from(n).unwrap());
        write_checkpoint(&store, &with_worker(&format!("w-{n:03}"), n, saved_at, "a"));
    }
    let bounded = store
        .find(&criteria(CheckpointCriteria::DEFAULT_LIMIT))
        .unwrap();
    assert_eq!(bounded.len(), 100);
    assert_eq!(bounded.first().unwrap().key(), "w-149");
    let all = store
        .find_all(&criteria(CheckpointCriteria::DEFAULT_LIMIT))
        .unwrap();
    assert_eq!(all.len(), 150);
    // The oldest-saved (lowest) checkpoints, which retention must see, are included.
    assert_eq!(all.last().unwrap().cursor().last_consumed_sequence(), 0);
}

#[test]
fn find_matches_types_strictly() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    write_checkpoint(
        &store,
        &Checkpoint::new(
            "int",
            ReadCursor::new(1, None),
            NOW,
            map(json!({"job_uuid": 5})),
        )
        .unwrap(),
    );
    write_checkpoint(
        &store,
        &Checkpoint::new(
            "text",
            ReadCursor::new(1, None),
            NOW,
            map(json!({"job_uuid": "5"})),
        )
        .unwrap(),
    );
    let by_job = CheckpointCriteria::new(
        IdentityAnchors {
            job_uuid: Some("5".into()),
            ..IdentityAnchors::default()
        },
        10,
    )
    .unwrap();
    let found = store.find(&by_job).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found.first().unwrap().key(), "text");
}

#[test]
fn a_corrupt_file_fails_lookups_naming_it_and_scan_reports_it_alone() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    write_checkpoint(&store, &with_worker("good", 1, NOW, "a"));
    let bad = dir.path().join("bad.checkpoint.json");
    std::fs::write(&bad, "{\"key\": \"bad\", \"last_consumed_sequence\": ").unwrap();
    for result in [
        store.find(&criteria(10)),
        store.find_all(&criteria(10)),
        store.list(),
    ] {
        let error = result.unwrap_err();
        assert!(
            matches!(&error, Error::Corrupt { path, kind: CorruptKind::Truncated { .. } } if *path == bad),
            "{error:?}"
        );
        assert!(error.is_corruption());
        assert!(error.to_string().contains("bad.checkpoint.json"), "{error}");
    }
    let scanned = store.scan().unwrap();
    assert_eq!(scanned.len(), 2);
    let (bad_files, good_files): (Vec<_>, Vec<_>) = scanned
        .into_iter()
        .partition(|file| file.checkpoint.is_err());
    assert_eq!(bad_files.first().unwrap().path, bad);
    assert_eq!(
        good_files
            .first()
            .unwrap()
            .checkpoint
            .as_ref()
            .unwrap()
            .key(),
        "good"
    );
}

#[test]
fn files_without_a_key_are_named_by_their_stem_in_listings() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    std::fs::write(
        dir.path().join("anonymous.checkpoint.json"),
        r#"{"last_consumed_sequence":3,"metadata":{"replay_session_id":"r"}}"#,
    )
    .unwrap();
    let found = store.find(&criteria(10)).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found.first().unwrap().key(), "anonymous");
    assert_eq!(found.first().unwrap().saved_at(), &NOW);
}

#[test]
fn temporaries_hidden_files_and_subdirectories_are_not_checkpoints() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    write_checkpoint(&store, &with_worker("real", 1, NOW, "a"));
    let garbage = "{\"key\": \"torn";
    std::fs::write(
        dir.path().join(format!(".{K2_FILE}.0123456789abcdef.tmp")),
        garbage,
    )
    .unwrap();
    std::fs::write(dir.path().join(format!("{K2_FILE}.tmp")), garbage).unwrap();
    std::fs::write(dir.path().join(".hidden.checkpoint.json"), garbage).unwrap();
    std::fs::create_dir(dir.path().join("sub.checkpoint.json")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), garbage).unwrap();
    let keys: Vec<_> = store
        .list()
        .unwrap()
        .iter()
        .map(|c| c.key().to_owned())
        .collect();
    assert_eq!(keys, ["real"]);
    assert_eq!(store.scan().unwrap().len(), 1);
    assert_eq!(store.load("k2").unwrap(), None);
}

#[test]
fn stray_temporaries_are_removed_only_when_old_enough() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let ours = dir.path().join(format!(".{K2_FILE}.0123456789abcdef.tmp"));
    let reference = dir.path().join(format!("{K2_FILE}.tmp"));
    let unrelated = dir.path().join("notes.tmp");
    for path in [&ours, &reference, &unrelated] {
        std::fs::write(path, "partial").unwrap();
    }
    assert!(
        store
            .remove_stray_temporaries(Duration::from_secs(3600))
            .unwrap()
            .is_empty()
    );
    let mut removed = store.remove_stray_temporaries(Duration::ZERO).unwrap();
    removed.sort();
    let mut expected = vec![ours, reference];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(file_names(dir.path()), ["notes.tmp"]);
}

#[test]
fn opening_creates_missing_directories() {
    let root = tempdir().unwrap();
    let dir = root.path().join("a").join("b").join("c");
    let store = CheckpointStore::open(&dir).unwrap();
    assert!(dir.is_dir());
    assert_eq!(store.list().unwrap(), []);
    // A file in the way is reported with the directory's path.
    let blocked = root.path().join("file");
    std::fs::write(&blocked, "").unwrap();
    let error = CheckpointStore::open(blocked.join("sub")).unwrap_err();
    assert!(
        matches!(error, Error::Directory { op: "create", .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("file/sub"), "{error}");
}

/// A FIFO named like a checkpoint file is reported as unreadable, naming it, instead of
/// blocking `list`, `load` and the readers of the log beside it (the clean-shutdown file
/// and the start file of a log, opened without blocking too).
#[test]
fn a_fifo_in_place_of_a_file_is_refused_not_waited_on() {
    let dir = tempdir().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let store = fixed_store(&checkpoints);
    store
        .save(&Checkpoint::new("good", ReadCursor::new(3, None), NOW, JsonMap::new()).unwrap())
        .unwrap();
    let fifo = checkpoints.join("evil.checkpoint.json");
    mkfifo(&fifo);
    let listed = within_a_minute(move || store.list().map(|found| found.len()));
    match listed {
        Err(Error::Read { path, source }) => {
            assert_eq!(path, fifo);
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidInput, "{source}");
        }
        other => panic!("expected the FIFO to be refused, got {other:?}"),
    }

    let log = dir.path().join("log");
    drop(
        crate::support::process::open_log(&log, esl_replay::storage::LogOptions::default())
            .unwrap(),
    );
    for name in ["clean.meta", "start.meta"] {
        let path = log.join(name);
        esl_replay::storage::remove_durable(&path).ok();
        mkfifo(&path);
        let log = log.clone();
        let opened = within_a_minute(move || {
            esl_replay::storage::Reader::open(&log, &esl_replay::storage::LogOptions::default())
                .map(drop)
        });
        assert!(
            name == "clean.meta" && opened.is_ok() || name == "start.meta" && opened.is_err(),
            "{name}: {opened:?}"
        );
        esl_replay::storage::remove_durable(&path).unwrap();
    }
}

/// Lenient reading (listings, the reference's casts) stays, but a consumer that resumes
/// (`resume_state`: the forwarder; `load_for_resume`: replay and evidence) gets
/// `NotResumable` naming the file for a position that is not an integer or a file of
/// another key, never a guessed sequence 0 or 1. A file our own save wrote resumes.
#[test]
fn resuming_needs_an_integer_sequence_and_the_consumers_own_key() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let service = esl_replay::checkpoint::CheckpointService::new(store.clone(), "k").unwrap();
    let file = store.path_for("k");
    for content in [
        "{}",
        r#"{"key":"k","last_consumed_sequence":"garbage"}"#,
        r#"{"key":"k","last_consumed_sequence":null}"#,
        r#"{"key":"k","last_consumed_sequence":[5]}"#,
        r#"{"key":"k","last_consumed_sequence":7.0}"#,
        r#"{"last_consumed_sequence":7}"#,
        r#"{"key":"other","last_consumed_sequence":7}"#,
    ] {
        std::fs::write(&file, content).unwrap();
        assert!(store.load("k").unwrap().is_some(), "{content}");
        let error = service.resume_state().unwrap_err();
        assert!(
            matches!(&error, Error::NotResumable { path, key, .. } if *path == file && key == "k"),
            "{content}: {error:?}"
        );
        assert!(store.load_for_resume("k").is_err(), "{content}");
    }
    service
        .save(ReadCursor::new(7, None), JsonMap::new())
        .unwrap();
    let state = service.resume_state().unwrap();
    assert_eq!(state.cursor().last_consumed_sequence(), 7);
}
