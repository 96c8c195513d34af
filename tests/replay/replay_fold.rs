//! Fold replay: the state at any sequence is the same folded from the start or from any
//! snapshot, in memory or on disk; snapshot files are durable, listed, cleaned up, and
//! damaged ones are reported. A quickcheck property covers random streams, batch sizes,
//! snapshot intervals and targets.

use std::collections::BTreeMap;

use esl_replay::record::{Criteria, CriteriaFields, Envelope, Record};
use esl_replay::replay::{
    DirSnapshots, Error, FoldOptions, Folded, MemorySnapshots, SnapshotStore, Stream, fold,
};
use esl_replay::store::{ArtifactReader, ArtifactStore, LogStore};
use quickcheck::{QuickCheck, TestResult};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::map;
use crate::support::process::open_store;
use crate::support::record::fixture_named;

/// An order-sensitive summary of the records applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Tally {
    count: u64,
    by_name: BTreeMap<String, u64>,
    digest: u64,
    last: u64,
}

fn apply(mut state: Tally, record: &Record) -> Tally {
    state.count += 1;
    *state
        .by_name
        .entry(record.artifact_name().to_owned())
        .or_default() += 1;
    state.digest = state
        .digest
        .wrapping_mul(1_000_003)
        .wrapping_add(record.append_sequence() * 31 + record.artifact_name().len() as u64);
    state.last = record.append_sequence();
    state
}

const NAMES: [&str; 4] = [
    "api.dispatch",
    "event.raw",
    "bgapi.complete",
    "command.reply",
];

fn envelope(name: &str, session: &str) -> Envelope {
    fixture_named(name).with_correlation_ids(map(json!({"replay_session_id": session})))
}

/// A store with `count` records: names cycle through [`NAMES`], sessions alternate `a`/`b`.
fn store(count: u64) -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path().join("store")).unwrap();
    let envelopes = (0..count)
        .map(|i| envelope(NAMES[(i % 4) as usize], if i % 2 == 0 { "a" } else { "b" }))
        .collect::<Vec<_>>();
    if !envelopes.is_empty() {
        store.write_batch(envelopes).unwrap();
    }
    (dir, store)
}

fn session(id: &str) -> Stream {
    Stream::from_criteria(
        Criteria::new(CriteriaFields {
            replay_session_id: Some(id.into()),
            ..CriteriaFields::default()
        })
        .unwrap(),
    )
}

fn options(read_batch: usize, snapshot_every: u64) -> FoldOptions {
    FoldOptions {
        read_batch,
        snapshot_every,
    }
}

/// The fold without any snapshot: the reference result.
fn plain(store: &dyn ArtifactReader, stream: &Stream, target: u64) -> Folded<Tally> {
    let mut none = MemorySnapshots::new();
    fold(
        store,
        &mut none,
        stream,
        target,
        apply,
        Tally::default(),
        &options(7, 0),
    )
    .unwrap()
}

#[test]
fn folds_every_stream_record_up_to_the_target() {
    let (_dir, store) = store(20);
    let folded = plain(&store, &Stream::all(), 13);
    assert_eq!(folded.state.count, 13);
    assert_eq!(folded.sequence, 13);
    assert_eq!(folded.applied, 13);
    assert_eq!(folded.from_snapshot, None);
    let a = plain(&store, &session("a"), 13);
    assert_eq!(a.state.count, 7, "odd sequences 1, 3, ..., 13");
    assert_eq!(a.sequence, 13);
    let b = plain(&store, &session("b"), 13);
    assert_eq!(b.state.count, 6);
    assert_eq!(b.sequence, 12);
    assert_eq!(plain(&store, &Stream::all(), 0).state, Tally::default());
    assert_eq!(plain(&store, &Stream::all(), 500).state.count, 20);
}

#[test]
fn same_result_with_and_without_snapshots_for_every_target() {
    let (_dir, store) = store(40);
    for stream in [Stream::all(), session("a"), session("b")] {
        let mut snapshots = MemorySnapshots::new();
        // Build snapshots every 3 applied records across the whole stream first.
        fold(
            &store,
            &mut snapshots,
            &stream,
            40,
            apply,
            Tally::default(),
            &options(5, 3),
        )
        .unwrap();
        assert!(!snapshots.sequences(stream.key()).unwrap().is_empty());
        for target in 0..=42 {
            let with = fold(
                &store,
                &mut snapshots,
                &stream,
                target,
                apply,
                Tally::default(),
                &options(4, 0),
            )
            .unwrap();
            let without = plain(&store, &stream, target);
            assert_eq!(with.state, without.state, "{} at {target}", stream.key());
            assert_eq!(with.sequence, without.sequence);
        }
    }
}

#[test]
fn same_result_from_every_snapshot_point() {
    let (dir, store) = store(30);
    let stream = session("a");
    let mut all = DirSnapshots::<Tally>::open(dir.path().join("snapshots")).unwrap();
    fold(
        &store,
        &mut all,
        &stream,
        30,
        apply,
        Tally::default(),
        &options(4, 1),
    )
    .unwrap();
    let points = all.sequences(stream.key()).unwrap();
    assert_eq!(points, (1..=29).step_by(2).collect::<Vec<_>>());
    let expected = plain(&store, &stream, 30);
    for point in points {
        // A store holding only this one snapshot: the fold must start there.
        let mut only = MemorySnapshots::new();
        let snapshot = all.load(stream.key(), point).unwrap().unwrap();
        only.save(stream.key(), point, &snapshot.state).unwrap();
        assert_eq!(snapshot.state, plain(&store, &stream, point).state);
        let folded = fold(
            &store,
            &mut only,
            &stream,
            30,
            apply,
            Tally::default(),
            &options(3, 0),
        )
        .unwrap();
        assert_eq!(folded.from_snapshot, Some(point));
        assert_eq!(folded.state, expected.state, "from snapshot {point}");
        assert_eq!(folded.applied, expected.state.count - snapshot.state.count);
    }
}

/// A snapshot stands for the records folded into it, so it is saved only once they are
/// durable: here their writer never syncs (`OsOnly`) and the fold reads a read-only handle.
#[test]
fn a_snapshot_is_saved_only_after_its_records_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let writer = crate::support::process::unsynced_store(
        &root,
        (0..10).map(|_| envelope("event.raw", "a")).collect(),
    );
    let store = LogStore::open_read_only(&root).unwrap();
    assert_eq!(store.durable_through().unwrap(), 0);
    let mut snapshots = MemorySnapshots::new();
    let folded = fold(
        &*store,
        &mut snapshots,
        &Stream::all(),
        6,
        apply,
        Tally::default(),
        &options(3, 5),
    )
    .unwrap();
    assert_eq!(snapshots.sequences("all").unwrap(), [5]);
    assert_eq!(folded.sequence, 6);
    assert!(store.durable_through().unwrap() >= 5);
    drop(writer);
}

#[test]
fn snapshot_interval_counts_applied_records() {
    let (_dir, store) = store(10);
    let mut snapshots = MemorySnapshots::new();
    let folded = fold(
        &store,
        &mut snapshots,
        &Stream::all(),
        10,
        apply,
        Tally::default(),
        &options(3, 4),
    )
    .unwrap();
    assert_eq!(folded.snapshots_saved, 2);
    assert_eq!(snapshots.sequences("all").unwrap(), [4, 8]);
    // A later fold starts from the snapshot at 8 and applies only 9 and 10.
    let again = fold(
        &store,
        &mut snapshots,
        &Stream::all(),
        10,
        apply,
        Tally::default(),
        &options(3, 0),
    )
    .unwrap();
    assert_eq!(again.from_snapshot, Some(8));
    assert_eq!(again.applied, 2);
    assert_eq!(again.state, folded.state);
}

#[test]
fn streams_keep_separate_snapshots() {
    let (dir, store) = store(12);
    let mut snapshots = DirSnapshots::<Tally>::open(dir.path().join("snapshots")).unwrap();
    for id in ["a", "b"] {
        fold(
            &store,
            &mut snapshots,
            &session(id),
            12,
            apply,
            Tally::default(),
            &options(5, 2),
        )
        .unwrap();
    }
    assert_eq!(snapshots.sequences(session("a").key()).unwrap(), [3, 7, 11]);
    assert_eq!(snapshots.sequences(session("b").key()).unwrap(), [4, 8, 12]);
    assert_eq!(snapshots.stream_dirs().unwrap().len(), 2);
    assert_ne!(session("a").key(), session("b").key());
    assert_eq!(session("a").key(), r#"{"replay_session_id":"a"}"#);
}

#[test]
fn directory_snapshots_survive_reopen_and_clean_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("snapshots");
    let tally = |count| Tally {
        count,
        ..Tally::default()
    };
    {
        let mut snapshots = DirSnapshots::<Tally>::open(&root).unwrap();
        for sequence in [5, 10, 15, 20] {
            snapshots.save("s/1", sequence, &tally(sequence)).unwrap();
        }
    }
    let mut snapshots = DirSnapshots::<Tally>::open(&root).unwrap();
    assert_eq!(snapshots.sequences("s/1").unwrap(), [5, 10, 15, 20]);
    let found = snapshots.latest_at_or_before("s/1", 14).unwrap().unwrap();
    assert_eq!((found.sequence, found.state), (10, tally(10)));
    assert!(snapshots.latest_at_or_before("s/1", 4).unwrap().is_none());
    assert!(
        snapshots
            .latest_at_or_before("other", 100)
            .unwrap()
            .is_none()
    );
    assert_eq!(snapshots.retain_latest("s/1", 2).unwrap(), 2);
    assert_eq!(snapshots.sequences("s/1").unwrap(), [15, 20]);
    assert!(snapshots.remove("s/1", 20).unwrap());
    assert!(!snapshots.remove("s/1", 20).unwrap());
    assert_eq!(snapshots.sequences("s/1").unwrap(), [15]);
    // Nothing but final snapshot files is left behind (no temporaries).
    let names: Vec<String> = std::fs::read_dir(snapshots.stream_dir("s/1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["00000000000000000015.snapshot"]);
}

#[test]
fn damaged_or_misplaced_snapshot_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut snapshots = DirSnapshots::<Tally>::open(dir.path().join("snapshots")).unwrap();
    snapshots.save("s", 3, &Tally::default()).unwrap();
    snapshots.save("t", 4, &Tally::default()).unwrap();
    // A file copied to another stream's place.
    std::fs::copy(snapshots.path_for("t", 4), snapshots.path_for("s", 4)).unwrap();
    assert!(matches!(
        snapshots.latest_at_or_before("s", 10),
        Err(Error::CorruptSnapshot { .. })
    ));
    std::fs::write(snapshots.path_for("s", 4), b"\xc1 not msgpack").unwrap();
    let error = snapshots.latest_at_or_before("s", 10).unwrap_err();
    assert!(matches!(error, Error::CorruptSnapshot { .. }), "{error}");
    assert!(error.to_string().contains("00000000000000000004.snapshot"));
    // Below the damage, the intact snapshot still loads.
    assert_eq!(
        snapshots
            .latest_at_or_before("s", 3)
            .unwrap()
            .unwrap()
            .sequence,
        3
    );
}

#[test]
fn zero_read_batch_is_rejected() {
    let (_dir, store) = store(1);
    let mut snapshots = MemorySnapshots::new();
    let result = fold(
        &store,
        &mut snapshots,
        &Stream::all(),
        1,
        apply,
        Tally::default(),
        &options(0, 0),
    );
    assert!(matches!(
        result,
        Err(Error::InvalidFoldOption {
            option: "read_batch"
        })
    ));
}

/// For random streams, read batches, snapshot intervals and targets: a fold that uses
/// the snapshots an earlier fold left (in memory or on disk) equals a fold over the
/// in-memory record list.
#[test]
fn fold_with_snapshots_matches_a_plain_fold_property() {
    fn property(
        kinds: Vec<(u8, bool)>,
        read_batch: u8,
        every: u8,
        first_target: u8,
        target: u8,
        on_disk: bool,
    ) -> TestResult {
        let kinds: Vec<(u8, bool)> = kinds.into_iter().take(40).collect();
        let dir = tempfile::tempdir().unwrap();
        let mut store = open_store(dir.path().join("store")).unwrap();
        if !kinds.is_empty() {
            store
                .write_batch(
                    kinds
                        .iter()
                        .map(|(name, in_a)| {
                            envelope(NAMES[usize::from(name % 4)], if *in_a { "a" } else { "b" })
                        })
                        .collect(),
                )
                .unwrap();
        }
        let stream = session("a");
        let records = store
            .read_from_cursor(&Default::default(), 1000, &Criteria::any())
            .unwrap();
        let expected = records
            .iter()
            .filter(|r| r.append_sequence() <= u64::from(target) && stream.criteria().matches(r))
            .fold(Tally::default(), apply);
        let options = FoldOptions {
            read_batch: usize::from(read_batch % 8) + 1,
            snapshot_every: u64::from(every % 5),
        };
        let mut memory = MemorySnapshots::new();
        let mut disk = DirSnapshots::<Tally>::open(dir.path().join("snapshots")).unwrap();
        let snapshots: &mut dyn SnapshotStore<Tally> =
            if on_disk { &mut disk } else { &mut memory };
        for at in [u64::from(first_target), u64::from(target)] {
            fold(
                &store,
                snapshots,
                &stream,
                at,
                apply,
                Tally::default(),
                &options,
            )
            .unwrap();
        }
        let folded = fold(
            &store,
            snapshots,
            &stream,
            u64::from(target),
            apply,
            Tally::default(),
            &options,
        )
        .unwrap();
        TestResult::from_bool(folded.state == expected)
    }
    QuickCheck::new()
        .tests(40)
        .quickcheck(property as fn(Vec<(u8, bool)>, u8, u8, u8, u8, bool) -> TestResult);
}
