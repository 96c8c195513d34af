//! The reference's checkpoint unit tests (§10: `ReplayCheckpointCriteriaTest`,
//! `ReplayCheckpointReferenceTest`, `ReplayCheckpointTest`, `CheckpointConfigTest`), one
//! module per reference test class and one test per reference test, same names.

use esl_replay::checkpoint::{
    Checkpoint, CheckpointConfig, CheckpointCriteria, CheckpointReference, Error, IdentityAnchors,
};
use esl_replay::record::{JsonMap, ReadCursor};
use serde_json::json;
use time::macros::datetime;

use crate::support::map;

fn all_anchors() -> IdentityAnchors {
    IdentityAnchors {
        replay_session_id: Some("replay-1".into()),
        job_uuid: Some("job-1".into()),
        pbx_node_slug: Some("pbx-a".into()),
        worker_session_id: Some("worker-a".into()),
        recovery_generation_id: Some("gen-1".into()),
    }
}

mod replay_checkpoint_criteria_test {
    use super::*;

    #[test]
    fn constructs_with_valid_fields() {
        let criteria = CheckpointCriteria::new(all_anchors(), 25).unwrap();
        assert_eq!(criteria.anchors(), &all_anchors());
        assert_eq!(criteria.limit(), 25);
        assert_eq!(
            criteria.anchors().given().collect::<Vec<_>>(),
            [
                ("replay_session_id", "replay-1"),
                ("job_uuid", "job-1"),
                ("pbx_node_slug", "pbx-a"),
                ("worker_session_id", "worker-a"),
                ("recovery_generation_id", "gen-1"),
            ]
        );
        assert_eq!(CheckpointCriteria::DEFAULT_LIMIT, 100);
    }

    #[test]
    fn rejects_missing_identity_fields() {
        assert!(matches!(
            CheckpointCriteria::new(IdentityAnchors::default(), 10),
            Err(Error::NoCriteria)
        ));
    }

    #[test]
    fn rejects_invalid_limit() {
        assert!(matches!(
            CheckpointCriteria::new(all_anchors(), 0),
            Err(Error::InvalidLimit)
        ));
    }
}

mod replay_checkpoint_reference_test {
    use super::*;

    #[test]
    fn metadata_with_identity_anchors_merges_reference_fields() {
        let reference =
            CheckpointReference::new("worker-a", all_anchors(), map(json!({"attempt": 2})))
                .unwrap();
        let merged = reference.metadata_with_identity_anchors();
        assert_eq!(
            serde_json::to_string(&merged).unwrap(),
            r#"{"attempt":2,"replay_session_id":"replay-1","job_uuid":"job-1","pbx_node_slug":"pbx-a","worker_session_id":"worker-a","recovery_generation_id":"gen-1"}"#
        );
        // The caller's metadata itself is kept apart from the anchors.
        assert_eq!(reference.metadata(), &map(json!({"attempt": 2})));
    }

    #[test]
    fn rejects_empty_key() {
        assert!(matches!(
            CheckpointReference::new("   ", IdentityAnchors::default(), JsonMap::new()),
            Err(Error::BlankKey)
        ));
    }

    #[test]
    fn anchors_override_caller_keys_in_place() {
        let reference = CheckpointReference::new(
            "k",
            IdentityAnchors {
                replay_session_id: Some("r-anchor".into()),
                ..IdentityAnchors::default()
            },
            map(json!({"replay_session_id": "r-meta", "attempt": 1})),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&reference.metadata_with_identity_anchors()).unwrap(),
            r#"{"replay_session_id":"r-anchor","attempt":1}"#
        );
    }

    #[test]
    fn rejects_blank_anchors() {
        assert!(matches!(
            CheckpointReference::new(
                "k",
                IdentityAnchors {
                    worker_session_id: Some("".into()),
                    ..IdentityAnchors::default()
                },
                JsonMap::new()
            ),
            Err(Error::BlankField {
                field: "worker_session_id"
            })
        ));
    }
}

mod replay_checkpoint_test {
    use super::*;

    #[test]
    fn constructs_with_valid_fields() {
        let saved_at = datetime!(2024-06-01 12:00 UTC);
        let checkpoint =
            Checkpoint::new("k", ReadCursor::new(5, Some(10)), saved_at, JsonMap::new()).unwrap();
        assert_eq!(checkpoint.key(), "k");
        assert_eq!(checkpoint.cursor(), &ReadCursor::new(5, Some(10)));
        assert_eq!(checkpoint.saved_at(), &saved_at);
        assert!(checkpoint.metadata().is_empty());
    }

    #[test]
    fn metadata_is_stored() {
        let metadata = map(json!({"worker": "a", "attempt": 3}));
        let checkpoint = Checkpoint::new(
            "k",
            ReadCursor::start(),
            datetime!(2024-06-01 12:00 UTC),
            metadata.clone(),
        )
        .unwrap();
        assert_eq!(checkpoint.metadata(), &metadata);
    }

    #[test]
    fn rejects_empty_key() {
        assert!(matches!(
            Checkpoint::new(
                "",
                ReadCursor::start(),
                datetime!(2024-06-01 12:00 UTC),
                JsonMap::new()
            ),
            Err(Error::BlankKey)
        ));
    }

    #[test]
    fn rejects_whitespace_only_key() {
        assert!(matches!(
            Checkpoint::new(
                "   ",
                ReadCursor::start(),
                datetime!(2024-06-01 12:00 UTC),
                JsonMap::new()
            ),
            Err(Error::BlankKey)
        ));
        // PHP `trim` does not strip Unicode spaces, so U+00A0 is a key.
        assert!(
            Checkpoint::new(
                "\u{a0}",
                ReadCursor::start(),
                datetime!(2024-06-01 12:00 UTC),
                JsonMap::new()
            )
            .is_ok()
        );
    }

    #[test]
    fn cursor_sequence_is_preserved() {
        let checkpoint = Checkpoint::new(
            "k",
            ReadCursor::new(42, None),
            datetime!(2024-06-01 12:00 UTC),
            JsonMap::new(),
        )
        .unwrap();
        assert_eq!(checkpoint.cursor().last_consumed_sequence(), 42);
    }

    #[test]
    fn checkpoint_is_immutable() {
        // Fields are private and there are no setters: changing anything means building a
        // new checkpoint, which leaves the original as it was.
        let original = Checkpoint::new(
            "k",
            ReadCursor::new(1, None),
            datetime!(2024-06-01 12:00 UTC),
            map(json!({"a": 1})),
        )
        .unwrap();
        let (key, _, saved_at, mut metadata) = original.clone().into_parts();
        metadata.insert("b".into(), 2.into());
        let changed = Checkpoint::new(key, ReadCursor::new(2, None), saved_at, metadata).unwrap();
        assert_ne!(changed, original);
        assert_eq!(original.cursor().last_consumed_sequence(), 1);
        assert_eq!(original.metadata(), &map(json!({"a": 1})));
    }
}

mod checkpoint_config_test {
    use super::*;

    #[test]
    fn constructs_with_valid_values() {
        let config = CheckpointConfig::new("/var/lib/checkpoints", "worker-1").unwrap();
        assert_eq!(
            config.storage_path(),
            std::path::Path::new("/var/lib/checkpoints")
        );
        assert_eq!(config.checkpoint_key(), "worker-1");
    }

    #[test]
    fn rejects_empty_storage_path() {
        assert!(matches!(
            CheckpointConfig::new("", "worker-1"),
            Err(Error::BlankField {
                field: "storage_path"
            })
        ));
    }

    #[test]
    fn rejects_empty_checkpoint_key() {
        assert!(matches!(
            CheckpointConfig::new("/tmp/x", ""),
            Err(Error::BlankField {
                field: "checkpoint_key"
            })
        ));
    }

    #[test]
    fn rejects_whitespace_only_path() {
        assert!(matches!(
            CheckpointConfig::new("  \t", "worker-1"),
            Err(Error::BlankField {
                field: "storage_path"
            })
        ));
    }

    #[test]
    fn rejects_whitespace_only_key() {
        assert!(matches!(
            CheckpointConfig::new("/tmp/x", "   "),
            Err(Error::BlankField {
                field: "checkpoint_key"
            })
        ));
    }

    #[test]
    fn config_is_immutable() {
        // Private fields, read-only accessors; a clone is an independent equal value.
        let config = CheckpointConfig::new("/tmp/x", "k").unwrap();
        let copy = config.clone();
        assert_eq!(config, copy);
        assert_eq!(copy.checkpoint_key(), "k");
    }
}
