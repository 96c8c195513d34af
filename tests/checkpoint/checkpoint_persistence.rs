//! The reference's `CheckpointPersistenceTest` (§10), one test per reference test with the
//! same name: the filesystem store's save, load, exists, delete and overwrite; metadata and
//! hint round trips; key sanitising without collisions; the config factory; lookup by
//! operational identity; the fixed-key service; the reference repository; resume state;
//! and resuming after a restart with new store instances.

use esl_replay::checkpoint::{
    Checkpoint, CheckpointConfig, CheckpointCriteria, CheckpointReference, CheckpointRepository,
    CheckpointService, CheckpointStore, IdentityAnchors, ResumeState,
};
use esl_replay::record::{JsonMap, ReadCursor};
use serde_json::json;
use tempfile::tempdir;

use crate::support::checkpoint::{NOW, file_names, fixed_store};
use crate::support::map;

fn checkpoint(key: &str, sequence: u64) -> Checkpoint {
    Checkpoint::new(key, ReadCursor::new(sequence, None), NOW, JsonMap::new()).unwrap()
}

#[test]
fn save_and_load_roundtrip() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    store.save(&checkpoint("my-key", 7)).unwrap();
    let loaded = store.load("my-key").unwrap().unwrap();
    assert_eq!(loaded.key(), "my-key");
    assert_eq!(loaded.cursor().last_consumed_sequence(), 7);
    assert_eq!(loaded, checkpoint("my-key", 7));
}

#[test]
fn load_returns_null_when_no_checkpoint_exists() {
    let dir = tempdir().unwrap();
    assert_eq!(fixed_store(dir.path()).load("missing").unwrap(), None);
}

#[test]
fn exists_returns_false_before_save() {
    let dir = tempdir().unwrap();
    assert!(!fixed_store(dir.path()).exists("k").unwrap());
}

#[test]
fn exists_returns_true_after_save() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    store.save(&checkpoint("k", 1)).unwrap();
    assert!(store.exists("k").unwrap());
}

#[test]
fn delete_removes_checkpoint() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    store.save(&checkpoint("k", 1)).unwrap();
    assert!(store.delete("k").unwrap());
    assert!(!store.exists("k").unwrap());
    assert_eq!(store.load("k").unwrap(), None);
    assert!(file_names(dir.path()).is_empty());
}

#[test]
fn delete_is_no_op_for_nonexistent_key() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    assert!(!store.delete("never-saved").unwrap());
}

#[test]
fn overwrite_updates_cursor() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    store.save(&checkpoint("k", 3)).unwrap();
    store.save(&checkpoint("k", 9)).unwrap();
    assert_eq!(
        store
            .load("k")
            .unwrap()
            .unwrap()
            .cursor()
            .last_consumed_sequence(),
        9
    );
    assert_eq!(file_names(dir.path()).len(), 1);
}

#[test]
fn metadata_survives_roundtrip() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    let metadata = map(json!({"worker": "w-1", "attempt": 3}));
    store
        .save(&Checkpoint::new("k", ReadCursor::new(1, None), NOW, metadata.clone()).unwrap())
        .unwrap();
    let loaded = store.load("k").unwrap().unwrap();
    assert_eq!(loaded.metadata(), &metadata);
    assert_eq!(loaded.metadata()["worker"], json!("w-1"));
    assert_eq!(loaded.metadata()["attempt"], json!(3));
    assert!(loaded.metadata()["attempt"].is_i64());
}

#[test]
fn byte_offset_hint_survives_roundtrip() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    store
        .save(&Checkpoint::new("k", ReadCursor::new(5, Some(4096)), NOW, JsonMap::new()).unwrap())
        .unwrap();
    assert_eq!(
        store
            .load("k")
            .unwrap()
            .unwrap()
            .cursor()
            .byte_offset_hint(),
        Some(4096)
    );
}

#[test]
fn sanitized_checkpoint_keys_do_not_collide_on_filesystem() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    for (key, sequence) in [("my/key", 1), ("my key", 2), ("my_key", 3)] {
        store.save(&checkpoint(key, sequence)).unwrap();
    }
    assert_eq!(
        file_names(dir.path()),
        [
            "my_key-7c7c2ec989acc9c7320197f8c025145f5476e5f2e73671e419e9eba397712dba.checkpoint.json",
            "my_key-7d4c144301af71a908e50a263437f2968e5955e980cdeb5f83310b7d85c9c60d.checkpoint.json",
            "my_key-a0e12d601e10154fe5743fd6d2ba37492365077b485f06c131ef495420005253.checkpoint.json",
        ]
    );
    for (key, sequence) in [("my/key", 1), ("my key", 2), ("my_key", 3)] {
        let loaded = store.load(key).unwrap().unwrap();
        assert_eq!(loaded.key(), key);
        assert_eq!(loaded.cursor().last_consumed_sequence(), sequence);
    }
}

#[test]
fn make_factory_method_creates_store() {
    let dir = tempdir().unwrap();
    let path = dir.path().join("nested").join("checkpoints");
    let config = CheckpointConfig::new(&path, "worker-1").unwrap();
    let store = config.open_store().unwrap();
    assert!(path.is_dir());
    assert_eq!(store.dir(), path);
    store.save(&checkpoint("k", 4)).unwrap();
    assert_eq!(
        store
            .load("k")
            .unwrap()
            .unwrap()
            .cursor()
            .last_consumed_sequence(),
        4
    );
    // The configured key is used by the service the config opens.
    let service = config.open_service().unwrap();
    assert_eq!(service.key(), "worker-1");
}

#[test]
fn find_returns_matching_checkpoints_by_operational_identity() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    for (key, replay, pbx) in [
        ("worker-a", "replay-1", "pbx-a"),
        ("worker-b", "replay-1", "pbx-b"),
        ("worker-c", "replay-2", "pbx-a"),
    ] {
        let metadata = map(json!({"replay_session_id": replay, "pbx_node_slug": pbx}));
        store
            .save(&Checkpoint::new(key, ReadCursor::new(1, None), NOW, metadata).unwrap())
            .unwrap();
    }
    let criteria = CheckpointCriteria::new(
        IdentityAnchors {
            replay_session_id: Some("replay-1".into()),
            pbx_node_slug: Some("pbx-a".into()),
            ..IdentityAnchors::default()
        },
        CheckpointCriteria::DEFAULT_LIMIT,
    )
    .unwrap();
    let found = store.find(&criteria).unwrap();
    assert_eq!(
        found.iter().map(Checkpoint::key).collect::<Vec<_>>(),
        ["worker-a"]
    );
}

#[test]
fn service_save_and_load() {
    let dir = tempdir().unwrap();
    let service = CheckpointService::new(fixed_store(dir.path()), "svc").unwrap();
    let saved = service
        .save(ReadCursor::new(15, None), JsonMap::new())
        .unwrap();
    assert_eq!(saved.key(), "svc");
    let loaded = service.load().unwrap().unwrap();
    assert_eq!(loaded.cursor().last_consumed_sequence(), 15);
    assert_eq!(loaded, saved);
}

#[test]
fn service_exists_and_clear() {
    let dir = tempdir().unwrap();
    let service = CheckpointService::new(fixed_store(dir.path()), "svc").unwrap();
    assert!(!service.exists().unwrap());
    service
        .save(ReadCursor::new(1, None), JsonMap::new())
        .unwrap();
    assert!(service.exists().unwrap());
    assert!(service.clear().unwrap());
    assert!(!service.exists().unwrap());
    assert_eq!(service.load().unwrap(), None);
}

#[test]
fn service_load_returns_null_when_no_checkpoint() {
    let dir = tempdir().unwrap();
    let service = CheckpointService::new(fixed_store(dir.path()), "svc").unwrap();
    assert_eq!(service.load().unwrap(), None);
}

#[test]
fn repository_save_load_and_find_use_first_class_reference() {
    let dir = tempdir().unwrap();
    let repository = CheckpointRepository::new(fixed_store(dir.path()));
    let anchors = IdentityAnchors {
        replay_session_id: Some("replay-9".into()),
        job_uuid: Some("job-9".into()),
        worker_session_id: Some("worker-9".into()),
        ..IdentityAnchors::default()
    };
    let reference =
        CheckpointReference::new("ref-key", anchors, map(json!({"attempt": 1}))).unwrap();
    let saved = repository
        .save(&reference, ReadCursor::new(12, None))
        .unwrap();
    assert_eq!(saved.key(), "ref-key");
    assert_eq!(saved.cursor().last_consumed_sequence(), 12);
    assert_eq!(saved.saved_at(), &NOW);

    let loaded = repository.load("ref-key").unwrap().unwrap();
    assert_eq!(
        serde_json::to_string(loaded.metadata()).unwrap(),
        r#"{"attempt":1,"replay_session_id":"replay-9","job_uuid":"job-9","worker_session_id":"worker-9"}"#
    );
    assert!(repository.exists("ref-key").unwrap());

    let criteria = CheckpointCriteria::new(
        IdentityAnchors {
            replay_session_id: Some("replay-9".into()),
            worker_session_id: Some("worker-9".into()),
            ..IdentityAnchors::default()
        },
        10,
    )
    .unwrap();
    assert_eq!(
        repository.find(&criteria).unwrap(),
        std::slice::from_ref(&saved)
    );
    assert_eq!(repository.find_all(&criteria).unwrap(), [saved]);
    assert!(repository.delete("ref-key").unwrap());
    assert!(repository.find(&criteria).unwrap().is_empty());
}

#[test]
fn resolve_returns_fresh_start_when_no_checkpoint() {
    let dir = tempdir().unwrap();
    let state = ResumeState::resolve(&fixed_store(dir.path()), "k").unwrap();
    assert!(!state.is_resuming());
    assert_eq!(state.cursor(), &ReadCursor::start());
    assert!(state.cursor().is_at_start());
    assert_eq!(state.checkpoint(), None);
}

#[test]
fn resolve_returns_resume_state_when_checkpoint_exists() {
    let dir = tempdir().unwrap();
    let store = fixed_store(dir.path());
    store
        .save(&Checkpoint::new("k", ReadCursor::new(20, Some(640)), NOW, JsonMap::new()).unwrap())
        .unwrap();
    let state = ResumeState::resolve(&store, "k").unwrap();
    assert!(state.is_resuming());
    assert_eq!(state.cursor(), &ReadCursor::new(20, Some(640)));
    assert_eq!(state.checkpoint().unwrap().key(), "k");
}

#[test]
fn fresh_always_returns_start_cursor() {
    let state = ResumeState::fresh();
    assert!(!state.is_resuming());
    assert_eq!(state.cursor(), &ReadCursor::start());
    assert_eq!(state.cursor().byte_offset_hint(), Some(0));
    assert_eq!(state.checkpoint(), None);
}

#[test]
fn restart_safe_resume_from_saved_cursor() {
    let dir = tempdir().unwrap();
    {
        let service =
            CheckpointService::new(CheckpointStore::open(dir.path()).unwrap(), "job").unwrap();
        service
            .save(ReadCursor::new(5, None), JsonMap::new())
            .unwrap();
    }
    // New store and service instances, as after a process restart.
    let store = CheckpointStore::open(dir.path()).unwrap();
    let service = CheckpointService::new(store.clone(), "job").unwrap();
    assert_eq!(
        service
            .load()
            .unwrap()
            .unwrap()
            .cursor()
            .last_consumed_sequence(),
        5
    );
    let state = service.resume_state().unwrap();
    assert!(state.is_resuming());
    assert_eq!(state.cursor().last_consumed_sequence(), 5);
}
