//! The reference's `CheckpointChaosTest` (§10), same test names: damaged checkpoint files
//! (zero bytes, truncated JSON, a negative sequence) fail clearly, naming the file, instead
//! of resuming from a made-up position; a checkpoint past the end of the stream resumes and
//! reads nothing; rapid save/load/clear cycles never leave a misleading position behind.

use esl_replay::checkpoint::{Checkpoint, CheckpointService, CorruptKind, Error, ResumeState};
use esl_replay::record::{Criteria, JsonMap, ReadCursor};
use esl_replay::store::{ArtifactReader, ArtifactStore};
use serde_json::json;
use tempfile::tempdir;

use crate::support::checkpoint::{NOW, envelope, fixed_store};
use crate::support::process::open_store;

#[test]
fn zero_byte_checkpoint_file_fails_clearly() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let legacy = dir.path().join("chaos-key.checkpoint.json");
    assert_eq!(store.legacy_path_for("chaos-key").unwrap(), legacy);
    std::fs::write(&legacy, b"").unwrap();
    let error = store.load("chaos-key").unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt { path, kind: CorruptKind::Empty } if *path == legacy),
        "{error:?}"
    );
    assert!(error.to_string().contains("chaos-key.checkpoint.json"));
    assert!(error.to_string().contains("empty"));
}

#[test]
fn truncated_checkpoint_json_fails_clearly_on_resume_resolution() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let path = store.path_for("resume-key");
    std::fs::write(
        &path,
        "{\n    \"key\": \"resume-key\",\n    \"last_consumed_seq",
    )
    .unwrap();
    let error = ResumeState::resolve(&store, "resume-key").unwrap_err();
    assert!(
        matches!(&error, Error::Corrupt { path: found, kind: CorruptKind::Truncated { .. } } if *found == path),
        "{error:?}"
    );
    assert!(error.to_string().contains(&path.display().to_string()));
}

#[test]
fn semantically_invalid_checkpoint_data_fails_clearly() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let path = store.path_for("bad-seq");
    let text = json!({
        "key": "bad-seq",
        "last_consumed_sequence": -5,
        "byte_offset_hint": null,
        "saved_at": "2024-06-01T12:00:00.000+00:00",
        "metadata": []
    })
    .to_string();
    std::fs::write(&path, text).unwrap();
    let error = store.load("bad-seq").unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Corrupt {
                kind: CorruptKind::NegativeSequence { value: -5 },
                ..
            }
        ),
        "{error:?}"
    );
    assert!(ResumeState::resolve(&store, "bad-seq").is_err());
}

#[test]
fn checkpoint_pointing_past_end_of_stream_returns_empty_future_read_without_fake_resume_data() {
    let dir = tempdir().unwrap();
    let mut artifacts = open_store(dir.path().join("artifacts")).unwrap();
    artifacts.write(envelope(1)).unwrap();
    artifacts.write(envelope(2)).unwrap();
    let store = fixed_store(&dir.path().join("checkpoints"));
    store
        .save(&Checkpoint::new("past-end", ReadCursor::new(99, None), NOW, JsonMap::new()).unwrap())
        .unwrap();
    let state = ResumeState::resolve(&store, "past-end").unwrap();
    assert!(state.is_resuming());
    assert_eq!(state.cursor().last_consumed_sequence(), 99);
    let records = artifacts
        .read_from_cursor(state.cursor(), 100, &Criteria::any())
        .unwrap();
    assert!(records.is_empty());
}

#[test]
fn rapid_save_load_clear_cycles_do_not_leave_misleading_resume_positions() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let service = CheckpointService::new(store.clone(), "rapid").unwrap();
    for sequence in 1..=50 {
        let mut metadata = JsonMap::new();
        metadata.insert("cycle".into(), sequence.into());
        service
            .save(ReadCursor::new(sequence, None), metadata)
            .unwrap();
        let loaded = service.load().unwrap().unwrap();
        assert_eq!(loaded.cursor().last_consumed_sequence(), sequence);
        assert_eq!(loaded.metadata()["cycle"], json!(sequence));
    }
    service.clear().unwrap();
    let state = ResumeState::resolve(&store, "rapid").unwrap();
    assert!(!state.is_resuming());
    assert!(state.cursor().is_at_start());
}
