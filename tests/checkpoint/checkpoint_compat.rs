//! The compatibility validator (reference §4.7, decisions C1 and C7) against a real
//! segment-log store and a fake store: a checkpoint whose next needed sequence (cursor + 1)
//! is below the first retained sequence is incompatible, naming the key and both sequences;
//! checkpoints at or past the end are compatible but reported as beyond the end; a store
//! whose records were all pruned still knows its last sequence, so checkpoints left behind
//! by the full prune are incompatible.

use std::time::Duration;

use esl_replay::checkpoint::{Checkpoint, Compatibility, CompatibilityValidator, Error};
use esl_replay::record::{Criteria, JsonMap, ReadCursor, Record, RecordId};
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
    // The stream starts at 5, as after pruning 1..=4.
    store.append_records(&[record(5), record(6)]).unwrap();
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
