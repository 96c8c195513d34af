//! The compatibility validator (reference §4.7, decisions C1 and C7) against a real
//! segment-log store and a fake store: a checkpoint whose next needed sequence (cursor + 1)
//! was pruned is incompatible, naming the key and both sequences, while a gap an import
//! left is not taken for pruned records; checkpoints at or past the end are compatible but
//! reported as beyond the end, and a consumer does not resume from beyond it; a store whose
//! records were all pruned still knows its last sequence, so checkpoints left behind by the
//! full prune are incompatible.

use std::time::Duration;

use esl_replay::checkpoint::{Checkpoint, Compatibility, CompatibilityValidator, Error};
use esl_replay::record::{Criteria, JsonMap, ReadCursor, Record, RecordId};
use esl_replay::retention::{self, ActiveCheckpoint, PrunePolicy};
use esl_replay::store::{self, ArtifactReader, ArtifactStore, StoreStats};
use tempfile::tempdir;
use time::macros::datetime;

use crate::support::checkpoint::{NOW, envelope};
use crate::support::process::open_store;

fn at(key: &str, sequence: u64) -> Checkpoint {
    Checkpoint::new(key, ReadCursor::new(sequence, None), NOW, JsonMap::new()).unwrap()
}

#[test]
fn a_new_empty_store_is_compatible_with_every_checkpoint() {
    let dir = tempdir().unwrap();
    let store = open_store(dir.path()).unwrap();
    let checkpoints = [at("start", 0), at("ahead", 5)];
    let report = CompatibilityValidator.check(&store, &checkpoints).unwrap();
    assert_eq!(report.first_retained, 1);
    assert_eq!(report.last_sequence, 0);
    assert_eq!(
        report.checkpoints,
        [
            ("start".to_owned(), Compatibility::Compatible),
            (
                "ahead".to_owned(),
                Compatibility::BeyondEnd {
                    last_consumed: 5,
                    last_sequence: 0
                }
            ),
        ]
    );
    CompatibilityValidator
        .assert_compatible(&store, &checkpoints)
        .unwrap();
}

#[test]
fn checkpoints_within_and_past_the_stream_are_compatible() {
    let dir = tempdir().unwrap();
    let mut store = open_store(dir.path()).unwrap();
    for n in 1..=5 {
        store.write(envelope(n)).unwrap();
    }
    let checkpoints = [at("zero", 0), at("mid", 3), at("end", 5), at("past", 99)];
    let report = CompatibilityValidator.check(&store, &checkpoints).unwrap();
    assert!(report.is_compatible());
    let statuses: Vec<_> = report.checkpoints.iter().map(|(_, s)| *s).collect();
    assert_eq!(
        statuses,
        [
            Compatibility::Compatible,
            Compatibility::Compatible,
            Compatibility::Compatible,
            Compatibility::BeyondEnd {
                last_consumed: 99,
                last_sequence: 5
            },
        ]
    );
    // Also through a trait object, as the CLI and retention hold stores.
    let boxed: Box<dyn ArtifactStore> = Box::new(store);
    CompatibilityValidator
        .assert_compatible(boxed.as_ref(), &checkpoints)
        .unwrap();
}

fn record(sequence: u64) -> Record {
    Record::from_envelope(
        envelope(sequence),
        RecordId::generate(),
        datetime!(2024-01-15 10:00:01 UTC),
        sequence,
    )
    .unwrap()
}

#[test]
fn a_checkpoint_needing_pruned_records_is_incompatible() {
    let dir = tempdir().unwrap();
    let mut store = open_store(dir.path()).unwrap();
    // Records 1..=6, then a prune that keeps the last two: the stream starts at 5.
    store
        .append_records(&(1..=6).map(record).collect::<Vec<_>>())
        .unwrap();
    retention::prune(&store, &[], &keep_last(2), NOW).unwrap();
    assert_eq!(store.stats().unwrap().first_sequence, Some(5));
    // Cursor 4 needs 5 next, which is retained: compatible (the prune boundary).
    CompatibilityValidator
        .assert_compatible(&store, &[at("boundary", 4)])
        .unwrap();
    // Cursor 1 needs 2 next, which is gone.
    let error = CompatibilityValidator
        .assert_compatible(&store, &[at("boundary", 4), at("behind", 1)])
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Incompatible { key, first_retained: 5, required_next: 2 } if key == "behind"
        ),
        "{error:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("\"behind\"") && text.contains('5') && text.contains('2'),
        "{text}"
    );
    let report = CompatibilityValidator
        .check(&store, &[at("behind", 1)])
        .unwrap();
    assert_eq!(
        report.checkpoints,
        [(
            "behind".to_owned(),
            Compatibility::Pruned {
                required_next: 2,
                first_retained: 5
            }
        )]
    );
    assert!(!report.is_compatible());
}

/// A prune by size that keeps the newest `records`.
fn keep_last(records: u64) -> PrunePolicy {
    PrunePolicy {
        max_record_age: None,
        max_stream_bytes: Some(1),
        protected_record_count: records,
    }
}

/// A gap an import left in the append sequences is not taken for pruned records: with
/// records 1..=10, then 100..=109 imported, and 1..=10 pruned, a checkpoint at 10 has lost
/// nothing. The validator calls it compatible, a consumer resumes from it, and retention,
/// which pruned up to it, can prune again.
#[test]
fn a_gap_an_import_left_is_not_taken_for_pruned_records() {
    let dir = tempdir().unwrap();
    let mut store = open_store(dir.path()).unwrap();
    let records: Vec<Record> = (1..=10).chain(100..=109).map(record).collect();
    store.append_records(&records).unwrap();
    let consumer = [ActiveCheckpoint {
        key: "consumer".into(),
        last_consumed: 10,
    }];
    let first = retention::prune(&store, &consumer, &keep_last(0), NOW).unwrap();
    assert_eq!(first.plan.pruned_count, 10);
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.first_sequence, stats.pruned_through),
        (Some(100), Some(10))
    );
    CompatibilityValidator
        .assert_resumable(&store, &at("consumer", 10))
        .unwrap();
    retention::prune(&store, &consumer, &keep_last(0), NOW).unwrap();
    // One record further back did need a pruned record.
    let error = CompatibilityValidator
        .assert_resumable(&store, &at("behind", 9))
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Incompatible {
                required_next: 10,
                first_retained: 100,
                ..
            }
        ),
        "{error:?}"
    );
}

/// A checkpoint beyond the store's last sequence is compatible for retention, but a
/// consumer must not resume from it: it would skip every record until the store passed it.
#[test]
fn a_consumer_does_not_resume_from_beyond_the_end() {
    let dir = tempdir().unwrap();
    let mut store = open_store(dir.path()).unwrap();
    store
        .append_records(&(1..=5).map(record).collect::<Vec<_>>())
        .unwrap();
    CompatibilityValidator
        .assert_compatible(&store, &[at("elsewhere", 1_000)])
        .unwrap();
    CompatibilityValidator
        .assert_resumable(&store, &at("caught-up", 5))
        .unwrap();
    let error = CompatibilityValidator
        .assert_resumable(&store, &at("elsewhere", 1_000))
        .unwrap_err();
    assert!(
        matches!(&error, Error::BeyondEnd { key, last_consumed: 1_000, last_sequence: 5 } if key == "elsewhere"),
        "{error:?}"
    );
    assert!(error.to_string().contains("checkpoint delete"), "{error}");
}

/// A store that reports fixed figures, as one whose records were all pruned.
#[derive(Debug)]
struct FullyPruned {
    last_sequence: u64,
}

impl ArtifactReader for FullyPruned {
    fn read_from_cursor(
        &self,
        _cursor: &ReadCursor,
        _limit: usize,
        _criteria: &Criteria,
    ) -> store::Result<Vec<Record>> {
        Ok(Vec::new())
    }
    fn read_by_id(&self, _id: &RecordId) -> store::Result<Option<Record>> {
        Ok(None)
    }
    fn stats(&self) -> store::Result<StoreStats> {
        let mut stats = StoreStats::default();
        stats.backend = "fake";
        stats.first_sequence = None;
        stats.last_sequence = self.last_sequence;
        Ok(stats)
    }
    fn wait_for_records(&self, _after: u64, _timeout: Duration) -> store::Result<bool> {
        Ok(false)
    }
    fn sync_readable(&self) -> store::Result<u64> {
        Ok(self.last_sequence)
    }
}

#[test]
fn after_a_full_prune_checkpoints_behind_the_last_sequence_are_incompatible() {
    let store = FullyPruned { last_sequence: 10 };
    CompatibilityValidator
        .assert_compatible(&store, &[at("caught-up", 10)])
        .unwrap();
    let error = CompatibilityValidator
        .assert_compatible(&store, &[at("caught-up", 10), at("lagging", 3)])
        .unwrap_err();
    assert!(
        matches!(
            &error,
            Error::Incompatible { key, first_retained: 11, required_next: 4 } if key == "lagging"
        ),
        "{error:?}"
    );
}
