//! Checkpoint-aware retention (reference §6 with decisions C7, C1): each reference retention
//! test as a named test (adapted where C7 changes the outcome, saying why), plus the size
//! pass, prunes of everything, damaged records and whole-segment space reclaim.

use std::path::Path;
use std::time::Duration;

use esl_replay::record::{Criteria, Envelope, JsonMap, ReadCursor, Record};
use esl_replay::retention::{self, ActiveCheckpoint, Error, PrunePolicy};
use esl_replay::storage::LogOptions;
use esl_replay::store::{ArtifactReader, ArtifactStore, LogStore, Tail};
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

use crate::support::map;
use crate::support::process::{open_log, open_store, open_store_with};
use crate::support::storage::{flip_byte, frames_of, segment_bases, segment_file};

const DAY: Duration = Duration::from_secs(86_400);

fn envelope(at: OffsetDateTime) -> Envelope {
    Envelope::new("1", "event.raw", at).with_payload(map(json!({"k": "v".repeat(100)})))
}

/// A store with one record per day from 2024-01-01.
fn store_with(days: u32) -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path().join("store")).unwrap();
    for day in 0..days {
        store
            .write(envelope(
                datetime!(2024-01-01 00:00 UTC) + time::Duration::days(i64::from(day)),
            ))
            .unwrap();
    }
    (dir, store)
}

fn checkpoint(at: u64) -> ActiveCheckpoint {
    ActiveCheckpoint {
        key: format!("cp-{at}"),
        last_consumed: at,
    }
}

fn sequences(store: &LogStore) -> Vec<u64> {
    store
        .read_from_cursor(&ReadCursor::start(), 1000, &Criteria::any())
        .unwrap()
        .iter()
        .map(Record::append_sequence)
        .collect()
}

fn now() -> OffsetDateTime {
    datetime!(2024-01-10 00:00 UTC)
}

#[test]
fn prune_by_age_does_not_prune_beyond_oldest_active_checkpoint() {
    let (_dir, store) = store_with(3);
    let policy = PrunePolicy {
        max_record_age: Some(DAY),
        ..PrunePolicy::default()
    };
    let result = retention::prune(&store, &[checkpoint(1)], &policy, now()).unwrap();
    assert_eq!(result.plan.pruned_sequences, vec![1]);
    assert_eq!(sequences(&store), vec![2, 3]);
}

#[test]
fn prune_respects_protected_record_window() {
    let (_dir, store) = store_with(5);
    let policy = PrunePolicy {
        max_stream_bytes: Some(0),
        protected_record_count: 2,
        ..PrunePolicy::default()
    };
    let result = retention::prune(&store, &[], &policy, now()).unwrap();
    assert_eq!(result.plan.pruned_sequences, vec![1, 2, 3]);
    assert_eq!(result.plan.retained_first_sequence, Some(4));
    assert_eq!(result.plan.protected_window_start_sequence, Some(4));
}

#[test]
fn prune_throws_when_checkpoint_is_already_incompatible_with_retained_stream() {
    let (_dir, store) = store_with(5);
    let policy = PrunePolicy {
        max_stream_bytes: Some(0),
        protected_record_count: 1,
        ..PrunePolicy::default()
    };
    retention::prune(&store, &[], &policy, now()).unwrap();
    assert_eq!(sequences(&store), vec![5]);
    let error = retention::plan(&store, &[checkpoint(1)], &policy, now(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(
            error,
            Error::IncompatibleCheckpoint {
                needed: 2,
                first: 5,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn plan_reports_unsatisfied_size_target_when_checkpoint_blocks_more_pruning() {
    let (_dir, store) = store_with(3);
    let policy = PrunePolicy {
        max_stream_bytes: Some(1),
        ..PrunePolicy::default()
    };
    let plan = retention::plan(&store, &[checkpoint(1)], &policy, now(), &mut |_| {}).unwrap();
    assert_eq!(plan.pruned_sequences, vec![1]);
    assert!(!plan.size_target_satisfied);
    assert_eq!(plan.checkpoint_floor_sequence, Some(1));
}

#[test]
fn plan_reports_truthful_empty_result_for_empty_stream() {
    let (_dir, store) = store_with(0);
    let plan = retention::plan(&store, &[], &PrunePolicy::default(), now(), &mut |_| {}).unwrap();
    assert_eq!(
        (
            plan.pruned_count,
            plan.retained_count,
            plan.stream_bytes_before
        ),
        (0, 0, 0)
    );
    assert!(plan.size_target_satisfied);
}

#[test]
fn checkpoint_exactly_on_prune_boundary_can_resume_from_retained_suffix() {
    let (_dir, store) = store_with(4);
    let policy = PrunePolicy {
        max_stream_bytes: Some(1),
        ..PrunePolicy::default()
    };
    let result = retention::prune(&store, &[checkpoint(2)], &policy, now()).unwrap();
    assert_eq!(result.plan.pruned_sequences, vec![1, 2]);
    let resumed = store
        .read_from_cursor(&ReadCursor::new(2, None), 10, &Criteria::any())
        .unwrap();
    assert_eq!(
        resumed
            .iter()
            .map(Record::append_sequence)
            .collect::<Vec<_>>(),
        vec![3, 4]
    );
}

#[test]
fn repeated_prune_runs_become_no_op_once_minimal_eligible_set_is_reached() {
    let (_dir, store) = store_with(4);
    let policy = PrunePolicy {
        max_stream_bytes: Some(1),
        ..PrunePolicy::default()
    };
    assert!(
        retention::prune(&store, &[checkpoint(2)], &policy, now())
            .unwrap()
            .changed
    );
    let again = retention::prune(&store, &[checkpoint(2)], &policy, now()).unwrap();
    assert!(!again.changed);
    assert!(again.plan.pruned_sequences.is_empty());
}

/// C7: an empty policy prunes nothing. The reference prunes everything up to the floor
/// because its age pass without an age limit takes the whole prunable prefix (§11.1).
#[test]
fn empty_policy_prunes_nothing() {
    let (_dir, store) = store_with(5);
    let plan = retention::plan(&store, &[], &PrunePolicy::default(), now(), &mut |_| {}).unwrap();
    assert_eq!(plan.pruned_count, 0);
    assert!(plan.size_target_satisfied);
}

/// C7: a size limit alone prunes only while the stream is above it. The reference prunes the
/// whole prefix (§6.2: "maxStreamBytes = 1e9 alone prunes [1..5]").
#[test]
fn size_limit_prunes_only_down_to_the_target() {
    let (_dir, store) = store_with(5);
    let before = retention::plan(&store, &[], &PrunePolicy::default(), now(), &mut |_| {})
        .unwrap()
        .stream_bytes_before;
    let one = before / 5;
    let big = PrunePolicy {
        max_stream_bytes: Some(1_000_000_000),
        ..PrunePolicy::default()
    };
    assert_eq!(
        retention::plan(&store, &[], &big, now(), &mut |_| {})
            .unwrap()
            .pruned_count,
        0
    );
    let half = PrunePolicy {
        max_stream_bytes: Some(one * 5 / 2),
        ..PrunePolicy::default()
    };
    let plan = retention::plan(&store, &[], &half, now(), &mut |_| {}).unwrap();
    assert_eq!(plan.pruned_sequences, vec![1, 2, 3]);
    assert_eq!(plan.stream_bytes_after, before - 3 * one);
    assert!(plan.size_target_satisfied);
}

/// The age pass is inclusive and prefix-only; the size pass continues from where it stopped.
#[test]
fn age_pass_then_size_pass() {
    let (_dir, store) = store_with(5);
    let age = PrunePolicy {
        max_record_age: Some(2 * DAY),
        ..PrunePolicy::default()
    };
    let plan = retention::plan(
        &store,
        &[],
        &age,
        datetime!(2024-01-05 00:00 UTC),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(
        plan.pruned_sequences,
        vec![1, 2, 3],
        "captured at or before 01-03 are pruned"
    );
    let one = plan.stream_bytes_before / 5;
    let both = PrunePolicy {
        max_record_age: Some(10 * DAY),
        max_stream_bytes: Some(one + one / 3),
        ..PrunePolicy::default()
    };
    let plan = retention::plan(
        &store,
        &[],
        &both,
        datetime!(2024-01-05 00:00 UTC),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(plan.pruned_sequences, vec![1, 2, 3, 4]);
}

/// C1: numbering continues after pruning everything, across a reopen.
#[test]
fn prune_of_everything_keeps_numbering() {
    let (dir, store) = store_with(3);
    let policy = PrunePolicy {
        max_stream_bytes: Some(0),
        ..PrunePolicy::default()
    };
    let result = retention::prune(&store, &[], &policy, now()).unwrap();
    assert_eq!(result.plan.pruned_sequences, vec![1, 2, 3]);
    assert!(sequences(&store).is_empty());
    drop(store);
    let mut store = open_store(dir.path().join("store")).unwrap();
    assert_eq!(store.stats().unwrap().last_sequence, 3);
    store.write(envelope(now())).unwrap();
    assert_eq!(sequences(&store), vec![4]);
}

/// A record that does not decode inside the range to prune fails the plan; reads of the
/// records after it still work.
#[test]
fn damaged_record_in_the_prune_range_fails_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    drop(open_store(&root).unwrap());
    let (mut log, _) = open_log(root.join("log"), LogOptions::default()).unwrap();
    log.append(b"not a record").unwrap();
    log.close().unwrap();
    let mut store = open_store(&root).unwrap();
    store
        .write(envelope(datetime!(2024-01-02 00:00 UTC)))
        .unwrap();
    let policy = PrunePolicy {
        max_stream_bytes: Some(0),
        ..PrunePolicy::default()
    };
    let error = retention::plan(&store, &[], &policy, now(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(error, Error::DamagedRecord { sequence: 1, .. }),
        "{error}"
    );
    let after = store
        .read_from_cursor(&ReadCursor::new(1, None), 10, &Criteria::any())
        .unwrap();
    assert_eq!(
        after
            .iter()
            .map(Record::append_sequence)
            .collect::<Vec<_>>(),
        vec![2]
    );
}

/// A store at `root` of `records` records a minute apart from 2024-01-01, on 64 KiB
/// segments, packed at `pack_level` if given.
fn minute_store(root: &Path, records: i64, pack_level: Option<i32>) -> LogStore {
    let options = LogOptions {
        segment_bytes: 64 << 10,
        max_payload_bytes: 16 << 10,
        pack_level,
        ..LogOptions::default()
    };
    let mut store = open_store_with(root, options).unwrap();
    for minute in 0..records {
        store
            .write(envelope(
                datetime!(2024-01-01 00:00 UTC) + time::Duration::minutes(minute),
            ))
            .unwrap();
    }
    store
}

/// A [`minute_store`] whose sealed segments are all packed.
fn packed_store(records: i64) -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = minute_store(&dir.path().join("store"), records, Some(3));
    let packed = store.pack_sealed().unwrap();
    assert!(packed.len() > 2, "{packed:?}");
    (dir, store)
}

/// Hostile review: on packed segments the size pass counted records at their unpacked
/// size, so `--max-bytes 5MB` pruned half of a store taking 1.1 MB of disk. It counts the
/// bytes stored: a cap above what the store takes prunes nothing.
#[test]
fn on_packed_segments_the_size_pass_counts_the_bytes_stored() {
    let (_dir, store) = packed_store(3000);
    let stats = store.stats().unwrap();
    assert!(stats.unpacked_bytes > stats.bytes, "{stats:?}");
    let policy = PrunePolicy {
        max_stream_bytes: Some(stats.bytes),
        ..PrunePolicy::default()
    };
    let plan = retention::plan(&store, &[], &policy, now(), &mut |_| {}).unwrap();
    assert!(
        plan.stream_bytes_before <= stats.bytes,
        "{plan:?} {stats:?}"
    );
    assert_eq!(plan.pruned_count, 0, "{plan:?}");
    assert!(plan.size_target_satisfied);
}

/// Hostile review: a damaged frame anywhere failed every plan (and so stopped capture's
/// periodic retention for good), though only damage inside the range to prune should. A
/// frame damaged in the last segment no longer stops a prune of the first records.
#[test]
fn damage_beyond_the_range_to_prune_does_not_fail_the_plan() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    minute_store(&root, 2000, None).close().unwrap();
    let log = root.join("log");
    let last = *segment_bases(&log).last().unwrap();
    let path = segment_file(&log, last);
    let frames = frames_of(&path).1;
    flip_byte(&path, frames[frames.len() / 2].offset + 12, 0x04);

    let store = LogStore::open_read_only(&root).unwrap();
    let policy = PrunePolicy {
        max_record_age: Some(Duration::from_secs(60 * 99)),
        ..PrunePolicy::default()
    };
    // Captured 99 minutes or more before the last record's minute: the first records only.
    let now = datetime!(2024-01-01 00:00 UTC) + time::Duration::minutes(99 + 9);
    let plan = retention::plan(&store, &[], &policy, now, &mut |_| {}).unwrap();
    assert_eq!(plan.pruned_sequences, (1..=10).collect::<Vec<_>>());
}

/// Space comes back a whole segment at a time, and the pruned records are gone for readers
/// in other handles too.
#[test]
fn pruning_deletes_whole_segments() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let store = minute_store(&root, 2000, None);
    let policy = PrunePolicy {
        max_stream_bytes: Some(0),
        protected_record_count: 100,
        ..PrunePolicy::default()
    };
    let result = retention::prune(&store, &[], &policy, now()).unwrap();
    assert_eq!(result.plan.pruned_count, 1900);
    assert!(result.segments_removed > 0 && result.bytes_reclaimed > 0);
    let follower = LogStore::open_read_only(&root).unwrap();
    let seen = follower
        .read_from_cursor(&ReadCursor::start(), 5000, &Criteria::any())
        .unwrap();
    assert_eq!(seen.first().map(Record::append_sequence), Some(1901));
    assert_eq!(seen.len(), 100);
}

fn checkpoints_dir(
    entries: &[(&str, u64, Option<&str>, Option<&str>)],
) -> (tempfile::TempDir, esl_replay::checkpoint::CheckpointStore) {
    use esl_replay::checkpoint::{Checkpoint, CheckpointStore};
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path().join("checkpoints")).unwrap();
    for (key, at, replay, worker) in entries {
        let mut metadata = JsonMap::new();
        if let Some(replay) = replay {
            metadata.insert("replay_session_id".into(), (*replay).into());
        }
        if let Some(worker) = worker {
            metadata.insert("worker_session_id".into(), (*worker).into());
        }
        store
            .save(&Checkpoint::new(*key, ReadCursor::new(*at, None), now(), metadata).unwrap())
            .unwrap();
    }
    (dir, store)
}

fn query(replay: &str, worker: &str) -> esl_replay::checkpoint::CheckpointCriteria {
    use esl_replay::checkpoint::{CheckpointCriteria, IdentityAnchors};
    let anchors = IdentityAnchors {
        replay_session_id: Some(replay.into()),
        worker_session_id: Some(worker.into()),
        ..IdentityAnchors::default()
    };
    CheckpointCriteria::new(anchors, CheckpointCriteria::DEFAULT_LIMIT).unwrap()
}

#[test]
fn plan_for_checkpoint_query_resolves_active_checkpoints_from_store_metadata() {
    let (_dir, store) = store_with(4);
    let (_cp_dir, checkpoints) = checkpoints_dir(&[
        ("a", 2, Some("replay-1"), Some("worker-1")),
        ("b", 0, Some("other"), None),
    ]);
    let active =
        retention::active_checkpoints(&checkpoints, Some(&query("replay-1", "worker-1")), false)
            .unwrap();
    let policy = PrunePolicy {
        max_stream_bytes: Some(1),
        protected_record_count: 1,
        ..PrunePolicy::default()
    };
    let plan = retention::plan(&store, &active, &policy, now(), &mut |_| {}).unwrap();
    assert_eq!(plan.pruned_sequences, vec![1, 2]);
    assert_eq!(plan.checkpoint_floor_sequence, Some(2));
}

#[test]
fn plan_for_checkpoint_query_fails_closed_when_query_matches_no_checkpoints() {
    let (_cp_dir, checkpoints) = checkpoints_dir(&[("a", 2, Some("replay-1"), Some("worker-1"))]);
    let error =
        retention::active_checkpoints(&checkpoints, Some(&query("nobody", "worker-1")), false)
            .unwrap_err();
    assert!(matches!(error, Error::NoActiveCheckpoints));
    assert!(error.to_string().contains("matched no active checkpoints"));
}

#[test]
fn prune_for_checkpoint_query_requires_explicit_empty_query_opt_in_and_keeps_protected_window() {
    let (_dir, store) = store_with(5);
    let (_cp_dir, checkpoints) = checkpoints_dir(&[]);
    let active =
        retention::active_checkpoints(&checkpoints, Some(&query("nobody", "none")), true).unwrap();
    assert!(active.is_empty());
    let policy = PrunePolicy {
        max_stream_bytes: Some(0),
        protected_record_count: 2,
        ..PrunePolicy::default()
    };
    let result = retention::prune(&store, &active, &policy, now()).unwrap();
    assert_eq!(result.plan.pruned_sequences, vec![1, 2, 3]);
    assert_eq!(result.plan.retained_first_sequence, Some(4));
    assert_eq!(result.plan.checkpoint_floor_sequence, None);
}

/// C7: a checkpoint query considers every matching checkpoint, not the newest 100.
#[test]
fn checkpoint_query_has_no_silent_limit() {
    let (_dir, store) = store_with(3);
    let entries: Vec<(String, u64)> = (0..150)
        .map(|i| (format!("reader-{i}"), if i == 0 { 1 } else { 3 }))
        .collect();
    let borrowed: Vec<(&str, u64, Option<&str>, Option<&str>)> = entries
        .iter()
        .map(|(k, at)| (k.as_str(), *at, Some("replay-1"), Some("worker-1")))
        .collect();
    let (_cp_dir, checkpoints) = checkpoints_dir(&borrowed);
    let active =
        retention::active_checkpoints(&checkpoints, Some(&query("replay-1", "worker-1")), false)
            .unwrap();
    assert_eq!(active.len(), 150);
    let policy = PrunePolicy {
        max_stream_bytes: Some(0),
        ..PrunePolicy::default()
    };
    let plan = retention::plan(&store, &active, &policy, now(), &mut |_| {}).unwrap();
    assert_eq!(
        plan.pruned_sequences,
        vec![1],
        "the oldest-saved checkpoint at 1 caps the prune"
    );
}

/// Long-running writers can run a policy periodically beside their appends.
#[test]
fn periodic_retention_prunes_beside_a_running_writer() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let options = LogOptions {
        segment_bytes: 64 << 10,
        max_payload_bytes: 16 << 10,
        ..LogOptions::default()
    };
    let mut writer = open_store_with(&root, options).unwrap();
    let policy = PrunePolicy {
        max_stream_bytes: Some(0),
        protected_record_count: 50,
        ..PrunePolicy::default()
    };
    let schedule = retention::PeriodicPrune::start(
        root.clone(),
        None,
        policy,
        Duration::from_millis(20),
        Box::new(|_| {}),
    )
    .unwrap();
    for i in 0..3000 {
        writer
            .write(envelope(
                datetime!(2024-01-01 00:00 UTC) + time::Duration::seconds(i),
            ))
            .unwrap();
    }
    // The schedule runs every 20 ms: wait until it has pruned.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while writer.stats().unwrap().first_sequence == Some(1) {
        assert!(std::time::Instant::now() < deadline, "nothing was pruned");
        std::thread::sleep(Duration::from_millis(5));
    }
    schedule.stop();
    writer.write(envelope(now())).unwrap();
    assert_eq!(writer.stats().unwrap().last_sequence, 3001);
}

/// Issue 16 item 3: an age reaching before the earliest representable date (the CLI's
/// `--max-age 9999999999d`, `106751991167300d`, `18446744073709551615s`) makes no record
/// old enough: the plan prunes nothing instead of panicking on `now - age`.
#[test]
fn an_age_beyond_the_date_range_prunes_nothing() {
    let (_dir, store) = store_with(3);
    for age in [
        Duration::from_secs(9_999_999_999 * 86_400),
        Duration::from_secs(106_751_991_167_300 * 86_400),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ] {
        assert_eq!(retention::age_cutoff(now(), age), None, "{age:?}");
        let policy = PrunePolicy {
            max_record_age: Some(age),
            ..PrunePolicy::default()
        };
        let plan = retention::plan(&store, &[], &policy, now(), &mut |_| {}).unwrap();
        assert_eq!(plan.pruned_count, 0);
        assert_eq!(plan.retained_count, 3);
    }
    // An age that still fits prunes as usual.
    let policy = PrunePolicy {
        max_record_age: Some(Duration::from_secs(8 * 86_400)),
        ..PrunePolicy::default()
    };
    let plan = retention::plan(&store, &[], &policy, now(), &mut |_| {}).unwrap();
    assert_eq!(plan.pruned_sequences, [1, 2]);
}

/// Issue 16 item 3: a periodic prune that fails reports each failure to its owner (the
/// capture turns it into `/health` and a metric) and keeps running.
#[test]
fn periodic_retention_reports_each_failure_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let (sender, failures) = std::sync::mpsc::channel();
    let schedule = retention::PeriodicPrune::start(
        dir.path().join("no-store-here"),
        None,
        PrunePolicy {
            max_record_age: Some(Duration::from_secs(60)),
            ..PrunePolicy::default()
        },
        Duration::from_millis(5),
        Box::new(move |result| {
            let _ = sender.send(result.err().map(ToString::to_string));
        }),
    )
    .unwrap();
    for _ in 0..2 {
        let failure = failures.recv_timeout(Duration::from_secs(30)).unwrap();
        assert!(
            failure.is_some(),
            "a store that does not exist is a failure"
        );
    }
    assert!(schedule.is_running());
    schedule.stop();
}

/// A live tail whose next records are pruned before it reads them stops with an error that
/// names them, by record and by view, instead of jumping silently to the first kept record.
#[test]
fn a_tail_stops_at_records_pruned_before_it_read_them() {
    let (_dir, store) = store_with(5);
    let policy = PrunePolicy {
        max_record_age: Some(DAY * 6 + DAY / 2),
        ..PrunePolicy::default()
    };
    retention::prune(&store, &[], &policy, now()).unwrap();
    assert_eq!(sequences(&store), [4, 5]);
    let unread = |error: esl_replay::store::Error| match error {
        esl_replay::store::Error::PrunedUnread {
            after,
            pruned_through,
        } => (after, pruned_through),
        other => panic!("{other}"),
    };
    let mut records = Tail::new(&store, ReadCursor::new(1, None), Criteria::any());
    let error = records.next_within(Duration::ZERO).unwrap_err();
    assert_eq!(unread(error), (1, 3));
    let mut views = Tail::new(&store, ReadCursor::new(1, None), Criteria::any());
    let mut seen = Vec::new();
    let error = views
        .visit_within(Duration::ZERO, &mut |view| {
            seen.push(view.append_sequence())
        })
        .unwrap_err();
    assert_eq!(unread(error), (1, 3));
    assert!(seen.is_empty());
    // From the last pruned record on, nothing is missing.
    let mut views = Tail::new(&store, ReadCursor::new(3, None), Criteria::any());
    views
        .visit_within(Duration::ZERO, &mut |view| {
            seen.push(view.append_sequence())
        })
        .unwrap();
    assert_eq!(seen, [4, 5]);
}

/// A zero interval is refused: the schedule's thread would prune without pause.
#[test]
fn periodic_retention_refuses_a_zero_interval() {
    let dir = tempfile::tempdir().unwrap();
    let refused = retention::PeriodicPrune::start(
        dir.path().join("store"),
        None,
        PrunePolicy::default(),
        Duration::ZERO,
        Box::new(|_| {}),
    )
    .unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::InvalidInput,
        "{refused}"
    );
}
