//! The artifact-store contract, one suite run unchanged against every backend.
//!
//! Each test is a function over a [`Harness`] (how to open a store, where it lives, and the
//! optional backend hooks a test needs); the `contract_tests!` macro instantiates the whole
//! suite once per backend, as the modules `sqlite` and `log`. Test names follow the
//! reference package's tests (`ReplayArtifactStoreContractTest`, the backend-neutral tests
//! of `AppendReadResumeTest` and `FilesystemChaosTest`, `LargeStreamAdapterTest`,
//! `SqliteChaosTest`) where one exists; the others pin our decisions: instants in time
//! windows (C8), advisory cursor hints (C5), sequences never reused (C1), read-only
//! handles beside a writer (C6), imports and live tail. Record-level behaviour (checksum
//! vectors, NDJSON, the binary codec) is tested in `tests/record_*.rs`.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use esl_replay::record::{
    Criteria, CriteriaFields, EncodedRecord, Envelope, JsonMap, MapTexts, ReadCursor, Record,
    RecordFields, RecordId, timestamp::to_reference_text,
};
use esl_replay::store::{ArtifactReader, ArtifactStore, Error, LogStore, Tail};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use crate::support::map;
use crate::support::process::open_store;
use crate::support::record::{fixture_envelope, fixture_named};

/// How the suite reaches one backend.
struct Harness {
    /// The backend name [`ArtifactStore::stats`] reports.
    backend: &'static str,
    /// Opens (creating if needed) a writable store; panics on failure.
    open: fn(&Path) -> Box<dyn ArtifactStore>,
    /// Opens an existing store read-only; panics on failure.
    open_read_only: fn(&Path) -> Box<dyn ArtifactReader>,
    /// Where the store lives inside a fresh temporary directory.
    path_for: fn(&Path) -> PathBuf,
    /// Deletes every record of a closed store the way pruning would, if the backend can.
    delete_all: Option<fn(&Path)>,
}

/// The SQLite backend (the `sqlite` feature).
#[cfg(feature = "sqlite")]
mod sqlite_backend {
    use std::path::{Path, PathBuf};

    use esl_replay::store::{ArtifactReader, ArtifactStore, SqliteStore};

    use super::Harness;

    pub(super) const SQLITE: Harness = Harness {
        backend: "sqlite",
        open: open_sqlite,
        open_read_only: open_sqlite_read_only,
        path_for: sqlite_path,
        delete_all: Some(delete_all_sqlite),
    };

    fn open_sqlite(path: &Path) -> Box<dyn ArtifactStore> {
        Box::new(SqliteStore::open(path).unwrap())
    }

    fn open_sqlite_read_only(path: &Path) -> Box<dyn ArtifactReader> {
        Box::new(SqliteStore::open_read_only(path).unwrap())
    }

    fn sqlite_path(dir: &Path) -> PathBuf {
        dir.join("store.sqlite")
    }

    fn delete_all_sqlite(path: &Path) {
        let connection = rusqlite::Connection::open(path).unwrap();
        connection
            .execute("DELETE FROM replay_records", [])
            .unwrap();
    }
}

const LOG: Harness = Harness {
    backend: "log",
    open: open_log,
    open_read_only: open_log_read_only,
    path_for: log_path,
    delete_all: Some(delete_all_log),
};

/// Deletes every record the way retention does: a prune of everything.
fn delete_all_log(path: &Path) {
    let store = open_store(path).unwrap();
    let policy = esl_replay::retention::PrunePolicy {
        max_stream_bytes: Some(0),
        ..Default::default()
    };
    esl_replay::retention::prune(&store, &[], &policy, time::OffsetDateTime::now_utc()).unwrap();
}

fn open_log(path: &Path) -> Box<dyn ArtifactStore> {
    Box::new(open_store(path).unwrap())
}

fn open_log_read_only(path: &Path) -> Box<dyn ArtifactReader> {
    Box::new(LogStore::open_read_only(path).unwrap())
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("store")
}

macro_rules! contract_tests {
    ($module:ident, $harness:expr, [$($attribute:tt)*]) => {
        mod $module {
            contract_tests!(@each $harness, [$($attribute)*]
                append_order_and_bounded_filters_match_across_adapters
                restart_safe_sequence_recovery_matches_across_adapters
                operator_identity_filters_match_across_adapters
                enriched_runtime_truth_roundtrips_through_storage
                write_single_artifact_and_read_it_back_by_id
                multiple_artifacts_are_ordered_by_append_sequence
                write_batch_assigns_consecutive_sequences_in_order
                cursor_resumes_after_last_consumed_record
                open_cursor_at_start_returns_all_records
                read_from_cursor_returns_empty_for_empty_store
                cursor_past_the_end_returns_empty
                read_by_id_returns_none_for_nonexistent_id
                restart_store_continues_sequence_from_last_written
                restart_can_read_all_previously_written_records
                sequences_never_restart_after_every_record_is_deleted
                stored_records_pass_checksum_verification
                normal_reads_return_tampered_records_and_checksum_verification_is_consumer_invoked
                payload_is_preserved_exactly_through_storage
                timestamps_keep_their_offset_and_reference_precision
                limit_parameter_restricts_returned_records
                limit_zero_is_rejected
                artifact_version_is_preserved
                unknown_artifact_names_are_stored_transparently
                writing_the_same_envelope_twice_yields_two_records
                read_from_cursor_can_filter_by_artifact_name
                read_from_cursor_can_filter_by_job_uuid
                read_from_cursor_can_filter_by_session_id
                read_from_cursor_can_filter_by_connection_generation
                read_from_cursor_can_filter_by_replay_session_id
                read_from_cursor_can_filter_by_runtime_metadata_fields
                read_from_cursor_can_filter_by_pbx_node_slug
                read_from_cursor_can_filter_by_worker_session_id
                read_from_cursor_can_filter_by_captured_from
                read_from_cursor_can_filter_by_captured_until
                operator_identity_derivation_rules_apply_to_filters
                read_from_cursor_can_filter_by_inclusive_time_window
                time_window_bounds_in_another_utc_offset_compare_instants
                time_window_compares_the_stored_millisecond_instant
                read_from_cursor_can_apply_combined_bounded_filters
                filtered_reads_preserve_append_order
                filtered_reads_return_empty_array_when_no_records_match
                filtered_chunked_reads_remain_deterministic_for_export_style_streaming
                stale_byte_offset_hint_past_end_of_file_does_not_hide_valid_records
                byte_offset_hint_into_the_middle_never_hides_records
                large_stream_reads_remain_ordered_and_complete
                chunked_bounded_reads_over_large_stream_remain_ordered
                invalid_input_is_rejected_without_consuming_a_sequence
                invalid_batch_is_rejected_whole
                read_only_handle_reads_while_the_writer_writes
                read_only_lookups_see_records_written_and_deleted_since_earlier_lookups
                append_records_keeps_imported_records_exactly
                append_records_rejects_non_increasing_sequences
                append_records_refuses_ids_already_stored_or_repeated
                append_encoded_stores_records_as_append_records_does
                stats_report_records_and_sequences
                wait_for_records_reports_new_records_or_times_out
                live_tail_follows_a_writer_thread
                live_tail_applies_criteria
                live_tail_views_are_the_records_it_yields
                huge_timeouts_wait_without_a_deadline
                a_live_tail_passes_sequences_never_stored
                a_cursor_at_the_largest_sequence_reads_nothing
                sequences_exhausted_is_refused_clearly_at_the_boundary
            );
        }
    };
    (@each $harness:expr, [$($attribute:tt)*]) => {};
    (@each $harness:expr, [$($attribute:tt)*] $test:ident $($rest:ident)*) => {
        #[test]
        $($attribute)*
        fn $test() {
            super::$test(&$harness);
        }
        contract_tests!(@each $harness, [$($attribute)*] $($rest)*);
    };
}

#[cfg(feature = "sqlite")]
contract_tests!(sqlite, super::sqlite_backend::SQLITE, []);
contract_tests!(log, super::LOG, []);

// ---------------------------------------------------------------------------------------
// Fixtures

/// A fresh store of the harness's backend in its own temporary directory.
struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new(harness: &Harness) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = (harness.path_for)(dir.path());
        Self { _dir: dir, path }
    }
}

fn envelope_with(change: impl FnOnce(&mut Envelope)) -> Envelope {
    let mut envelope = fixture_envelope();
    change(&mut envelope);
    envelope
}

fn captured_at(capture: OffsetDateTime) -> Envelope {
    envelope_with(|envelope| envelope.capture_timestamp = capture)
}

fn criteria(change: impl FnOnce(&mut CriteriaFields)) -> Criteria {
    let mut fields = CriteriaFields::default();
    change(&mut fields);
    Criteria::new(fields).unwrap()
}

fn text(value: &str) -> Option<String> {
    Some(value.to_owned())
}

fn sequences(records: &[Record]) -> Vec<u64> {
    records.iter().map(Record::append_sequence).collect()
}

fn write_all(store: &mut dyn ArtifactStore, envelopes: impl IntoIterator<Item = Envelope>) {
    for envelope in envelopes {
        store.write(envelope).unwrap();
    }
}

fn read_all(store: &dyn ArtifactReader, criteria: &Criteria) -> Vec<Record> {
    store
        .read_from_cursor(&store.open_cursor(), 100_000, criteria)
        .unwrap()
}

/// Reads in pages of `batch`, advancing the cursor to the last record of each page.
fn read_chunked(store: &dyn ArtifactReader, batch: usize, criteria: &Criteria) -> Vec<Record> {
    let mut cursor = store.open_cursor();
    let mut all = Vec::new();
    loop {
        let page = store.read_from_cursor(&cursor, batch, criteria).unwrap();
        assert!(page.len() <= batch);
        let Some(last) = page.last() else {
            return all;
        };
        cursor = cursor.advance(last.append_sequence(), None).unwrap();
        all.extend(page);
    }
}

/// Three records where 1 and 3 carry every identity, 2 carries others.
fn identity_stream() -> [Envelope; 3] {
    let matching = |minute| {
        envelope_with(|envelope| {
            envelope.capture_timestamp =
                datetime!(2024-01-15 10:00 UTC) + time::Duration::minutes(minute);
            envelope.session_id = text("sess-1");
            envelope.job_uuid = text("job-1");
            envelope.connection_generation = text("gen-1");
            envelope.correlation_ids = map(json!({"replay_session_id": "replay-1"}));
            envelope.runtime_flags =
                map(json!({"pbx_node_slug": "node-a", "worker_session_id": "worker-1"}));
        })
    };
    let other = envelope_with(|envelope| {
        envelope.artifact_name = "event.raw".into();
        envelope.capture_timestamp = datetime!(2024-01-15 10:05 UTC);
        envelope.session_id = text("sess-2");
        envelope.job_uuid = text("job-2");
        envelope.connection_generation = text("gen-2");
        envelope.correlation_ids = map(json!({"replay_session_id": "replay-2"}));
        envelope.runtime_flags =
            map(json!({"pbx_node_slug": "node-b", "worker_session_id": "worker-2"}));
    });
    [matching(0), other, matching(10)]
}

/// Writes [`identity_stream`] and returns the sequences `filter` selects.
fn filtered_identity_stream(harness: &Harness, filter: &Criteria) -> Vec<u64> {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), identity_stream());
    sequences(&read_all(store.as_ref(), filter))
}

// ---------------------------------------------------------------------------------------
// ReplayArtifactStoreContractTest

fn append_order_and_bounded_filters_match_across_adapters(harness: &Harness) {
    let filter = criteria(|fields| {
        fields.captured_from = Some(datetime!(2024-01-15 10:00 UTC));
        fields.captured_until = Some(datetime!(2024-01-15 10:10 UTC));
        fields.artifact_name = text("api.dispatch");
        fields.session_id = text("sess-1");
        fields.connection_generation = text("gen-1");
        fields.replay_session_id = text("replay-1");
        fields.pbx_node_slug = text("node-a");
        fields.worker_session_id = text("worker-1");
    });
    assert_eq!(filtered_identity_stream(harness, &filter), [1, 3]);
}

fn restart_safe_sequence_recovery_matches_across_adapters(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), [fixture_envelope(), fixture_envelope()]);
    drop(store);
    let mut store = (harness.open)(&fixture.path);
    let id = store.write(fixture_envelope()).unwrap();
    assert_eq!(store.read_by_id(&id).unwrap().unwrap().append_sequence(), 3);
}

fn operator_identity_filters_match_across_adapters(harness: &Harness) {
    let filter = criteria(|fields| {
        fields.replay_session_id = text("replay-1");
        fields.pbx_node_slug = text("node-a");
        fields.worker_session_id = text("worker-1");
    });
    assert_eq!(filtered_identity_stream(harness, &filter), [1, 3]);
}

fn enriched_runtime_truth_roundtrips_through_storage(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let enriched = envelope_with(|envelope| {
        envelope.artifact_name = "bgapi.complete".into();
        envelope.job_uuid = text("job-1");
        envelope.connection_generation = text("gen-1");
        envelope.correlation_ids = map(json!({
            "replay_session_id": "replay-1",
            "operation_id": "op-1",
            "bgapi_job_uuid": "job-1",
        }));
        envelope.runtime_flags = map(json!({
            "pbx_node_slug": "node-a",
            "worker_session_id": "worker-1",
            "runtime_recovery_snapshot": {"generation_id": "gen-1", "state": "completed"},
            "runtime_operation_snapshot": {"operation_id": "op-1", "state": "completed"},
            "publication": {"publication_id": "pub-1", "sequence": 3, "ok": true},
        }));
        envelope.payload = map(json!({"Job-UUID": "job-1", "body": "+OK done\n"}));
    });
    let id = store.write(enriched.clone()).unwrap();
    let record = store.read_by_id(&id).unwrap().unwrap();
    assert_eq!(record.correlation_ids(), &enriched.correlation_ids);
    assert_eq!(record.runtime_flags(), &enriched.runtime_flags);
    assert_eq!(record.payload(), &enriched.payload);
    assert_eq!(record.replay_session_id(), Some("replay-1"));
    assert!(record.verify_checksum());
}

// ---------------------------------------------------------------------------------------
// AppendReadResumeTest (backend-neutral parts)

fn write_single_artifact_and_read_it_back_by_id(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let id = store
        .write(envelope_with(|envelope| {
            envelope.session_id = text("sess-001")
        }))
        .unwrap();
    let record = store.read_by_id(&id).unwrap().unwrap();
    assert_eq!(record.id(), &id);
    assert_eq!(record.append_sequence(), 1);
    assert_eq!(record.artifact_name(), "api.dispatch");
    assert_eq!(record.session_id(), Some("sess-001"));
    assert_eq!(record.payload(), &fixture_envelope().payload);
    assert!(record.tags().is_empty());
    let listed = read_all(store.as_ref(), &Criteria::any());
    assert_eq!(listed, [record]);
}

fn multiple_artifacts_are_ordered_by_append_sequence(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let names = ["api.dispatch", "api.reply", "event.raw", "bgapi.dispatch"];
    write_all(store.as_mut(), names.map(fixture_named));
    let records = read_all(store.as_ref(), &Criteria::any());
    assert_eq!(sequences(&records), [1, 2, 3, 4]);
    let read_names: Vec<_> = records.iter().map(Record::artifact_name).collect();
    assert_eq!(read_names, names);
}

fn write_batch_assigns_consecutive_sequences_in_order(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    store.write(fixture_envelope()).unwrap();
    let ids = store
        .write_batch(
            (0..5)
                .map(|index| fixture_named(&format!("batch.{index}")))
                .collect(),
        )
        .unwrap();
    assert!(store.write_batch(Vec::new()).unwrap().is_empty());
    let records = read_all(store.as_ref(), &Criteria::any());
    assert_eq!(sequences(&records), [1, 2, 3, 4, 5, 6]);
    let read_ids: Vec<_> = records
        .iter()
        .skip(1)
        .map(|record| record.id().clone())
        .collect();
    assert_eq!(read_ids, ids);
    assert_eq!(records.get(3).unwrap().artifact_name(), "batch.2");
}

fn cursor_resumes_after_last_consumed_record(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), (0..5).map(|_| fixture_envelope()));
    let first = store
        .read_from_cursor(&store.open_cursor(), 2, &Criteria::any())
        .unwrap();
    assert_eq!(sequences(&first), [1, 2]);
    let cursor = store.open_cursor().advance(2, None).unwrap();
    let rest = store
        .read_from_cursor(&cursor, 100, &Criteria::any())
        .unwrap();
    assert_eq!(sequences(&rest), [3, 4, 5]);
}

fn open_cursor_at_start_returns_all_records(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), (0..3).map(|_| fixture_envelope()));
    let cursor = store.open_cursor();
    assert!(cursor.is_at_start());
    assert_eq!(cursor, ReadCursor::start());
    let records = store
        .read_from_cursor(&cursor, 100, &Criteria::any())
        .unwrap();
    assert_eq!(sequences(&records), [1, 2, 3]);
}

fn read_from_cursor_returns_empty_for_empty_store(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let store = (harness.open)(&fixture.path);
    assert!(read_all(store.as_ref(), &Criteria::any()).is_empty());
}

fn cursor_past_the_end_returns_empty(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), [fixture_envelope(), fixture_envelope()]);
    let records = store
        .read_from_cursor(&ReadCursor::new(99, None), 10, &Criteria::any())
        .unwrap();
    assert!(records.is_empty());
}

fn read_by_id_returns_none_for_nonexistent_id(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    assert!(store.read_by_id(&RecordId::generate()).unwrap().is_none());
    store.write(fixture_envelope()).unwrap();
    assert!(store.read_by_id(&RecordId::generate()).unwrap().is_none());
    let odd = RecordId::new("not-a-uuid").unwrap();
    assert!(store.read_by_id(&odd).unwrap().is_none());
}

fn restart_store_continues_sequence_from_last_written(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), (0..3).map(|_| fixture_envelope()));
    drop(store);
    let mut store = (harness.open)(&fixture.path);
    store.write(fixture_envelope()).unwrap();
    let records = read_all(store.as_ref(), &Criteria::any());
    assert_eq!(sequences(&records), [1, 2, 3, 4]);
}

fn restart_can_read_all_previously_written_records(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let ids: Vec<_> = (0..3)
        .map(|_| store.write(fixture_envelope()).unwrap())
        .collect();
    let before = read_all(store.as_ref(), &Criteria::any());
    drop(store);
    let store = (harness.open)(&fixture.path);
    let after = read_all(store.as_ref(), &Criteria::any());
    assert_eq!(after, before);
    for (id, record) in ids.iter().zip(&before) {
        assert_eq!(store.read_by_id(id).unwrap().as_ref(), Some(record));
    }
}

fn sequences_never_restart_after_every_record_is_deleted(harness: &Harness) {
    let Some(delete_all) = harness.delete_all else {
        eprintln!(
            "skipped: the {} harness cannot delete records",
            harness.backend
        );
        return;
    };
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), (0..3).map(|_| fixture_envelope()));
    drop(store);
    delete_all(&fixture.path);
    let mut store = (harness.open)(&fixture.path);
    assert!(read_all(store.as_ref(), &Criteria::any()).is_empty());
    assert_eq!(store.stats().unwrap().last_sequence, 3);
    let id = store.write(fixture_envelope()).unwrap();
    assert_eq!(store.read_by_id(&id).unwrap().unwrap().append_sequence(), 4);
    drop(store);
    let store = (harness.open)(&fixture.path);
    assert_eq!(sequences(&read_all(store.as_ref(), &Criteria::any())), [4]);
}

fn stored_records_pass_checksum_verification(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(
        store.as_mut(),
        [
            fixture_envelope(),
            fixture_named("event.raw"),
            captured_at(datetime!(2024-01-15 12:00:00.123456 +02:00)),
            envelope_with(|envelope| {
                envelope.payload = map(json!({"z": 1, "a": [3, 1, 2], "u": "é\u{2028}/"}));
            }),
            envelope_with(|envelope| envelope.payload = JsonMap::new()),
        ],
    );
    let records = read_all(store.as_ref(), &Criteria::any());
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(Record::verify_checksum));
    assert_eq!(
        records.first().unwrap().checksum(),
        "353a1621b83b5bf2d2357f86e0b7c35adff2750052fb09291211ba7d97493754"
    );
}

fn normal_reads_return_tampered_records_and_checksum_verification_is_consumer_invoked(
    harness: &Harness,
) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let genuine = Record::from_envelope(
        fixture_envelope(),
        RecordId::generate(),
        datetime!(2024-01-15 10:00:01 UTC),
        1,
    )
    .unwrap();
    let mut fields = genuine.into_fields();
    fields.payload = map(json!({"command": "originate", "args": "sofia/internal/6666"}));
    let tampered = Record::new(fields).unwrap();
    store
        .append_records(std::slice::from_ref(&tampered))
        .unwrap();
    let read = store.read_by_id(tampered.id()).unwrap().unwrap();
    assert_eq!(read.payload(), tampered.payload());
    assert!(!read.verify_checksum());
    let listed = read_all(store.as_ref(), &Criteria::any());
    assert_eq!(listed, [tampered]);
}

fn payload_is_preserved_exactly_through_storage(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let payload = map(json!({
        "z": {"nested": {"deeper": ["a", 2, 2.5, null, true, {"k": "v"}]}},
        "path": "/usr/local/freeswitch/scripts/a.lua",
        "url": "http://example.com/a/b?c=d&e=<f>",
        "unicode": "é ü 日本 \u{2028} \u{7f}",
        "controls": "tab\there\nline \u{1}",
        "quote": "\"quoted\" \\ back",
        "numbers": [0, -1, 9_007_199_254_740_993_i64, 0.1, -2.5e-7, 1.5e300],
        "a": "last key written last",
    }));
    let id = store
        .write(envelope_with(|envelope| envelope.payload = payload.clone()))
        .unwrap();
    let record = store.read_by_id(&id).unwrap().unwrap();
    assert_eq!(record.payload(), &payload);
    let keys: Vec<_> = record.payload().keys().collect();
    let expected: Vec<_> = payload.keys().collect();
    assert_eq!(keys, expected);
    assert!(record.verify_checksum());
}

fn timestamps_keep_their_offset_and_reference_precision(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let capture = datetime!(2024-01-15 12:00:00.123456 +02:00);
    let id = store.write(captured_at(capture)).unwrap();
    let record = store.read_by_id(&id).unwrap().unwrap();
    assert_eq!(record.capture_timestamp().offset(), capture.offset());
    assert_eq!(
        to_reference_text(record.capture_timestamp()),
        "2024-01-15T12:00:00.123+02:00"
    );
    assert!(record.verify_checksum());
    assert!(record.stored_at().offset().is_utc());
}

fn limit_parameter_restricts_returned_records(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), (0..10).map(|_| fixture_envelope()));
    let records = store
        .read_from_cursor(&store.open_cursor(), 3, &Criteria::any())
        .unwrap();
    assert_eq!(sequences(&records), [1, 2, 3]);
}

fn limit_zero_is_rejected(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    store.write(fixture_envelope()).unwrap();
    let result = store.read_from_cursor(&store.open_cursor(), 0, &Criteria::any());
    assert!(matches!(result, Err(Error::InvalidLimit)), "{result:?}");
}

fn artifact_version_is_preserved(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let id = store
        .write(envelope_with(|envelope| {
            envelope.artifact_version = "42".into()
        }))
        .unwrap();
    let record = store.read_by_id(&id).unwrap().unwrap();
    assert_eq!(record.artifact_version(), "42");
}

fn unknown_artifact_names_are_stored_transparently(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let id = store
        .write(fixture_named("vendor.custom/unknown ✓"))
        .unwrap();
    let record = store.read_by_id(&id).unwrap().unwrap();
    assert_eq!(record.artifact_name(), "vendor.custom/unknown ✓");
}

fn writing_the_same_envelope_twice_yields_two_records(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let first = store.write(fixture_envelope()).unwrap();
    let second = store.write(fixture_envelope()).unwrap();
    assert_ne!(first, second);
    let records = read_all(store.as_ref(), &Criteria::any());
    assert_eq!(sequences(&records), [1, 2]);
    assert_eq!(
        records.first().unwrap().checksum(),
        records.get(1).unwrap().checksum()
    );
}

// ---------------------------------------------------------------------------------------
// Criteria (ReplayReadCriteriaTest at store level, AppendReadResumeTest filters)

fn read_from_cursor_can_filter_by_artifact_name(harness: &Harness) {
    let filter = criteria(|fields| fields.artifact_name = text("api.dispatch"));
    assert_eq!(filtered_identity_stream(harness, &filter), [1, 3]);
}

fn read_from_cursor_can_filter_by_job_uuid(harness: &Harness) {
    let filter = criteria(|fields| fields.job_uuid = text("job-1"));
    assert_eq!(filtered_identity_stream(harness, &filter), [1, 3]);
}

fn read_from_cursor_can_filter_by_session_id(harness: &Harness) {
    let filter = criteria(|fields| fields.session_id = text("sess-1"));
    assert_eq!(filtered_identity_stream(harness, &filter), [1, 3]);
}

fn read_from_cursor_can_filter_by_connection_generation(harness: &Harness) {
    let filter = criteria(|fields| fields.connection_generation = text("gen-1"));
    assert_eq!(filtered_identity_stream(harness, &filter), [1, 3]);
}

fn read_from_cursor_can_filter_by_replay_session_id(harness: &Harness) {
    let filter = criteria(|fields| fields.replay_session_id = text("replay-1"));
    assert_eq!(filtered_identity_stream(harness, &filter), [1, 3]);
}

fn read_from_cursor_can_filter_by_runtime_metadata_fields(harness: &Harness) {
    let filter = criteria(|fields| {
        fields.pbx_node_slug = text("node-a");
        fields.worker_session_id = text("worker-1");
    });
    assert_eq!(filtered_identity_stream(harness, &filter), [1, 3]);
}

fn read_from_cursor_can_filter_by_pbx_node_slug(harness: &Harness) {
    let filter = criteria(|fields| fields.pbx_node_slug = text("node-b"));
    assert_eq!(filtered_identity_stream(harness, &filter), [2]);
}

fn read_from_cursor_can_filter_by_worker_session_id(harness: &Harness) {
    let filter = criteria(|fields| fields.worker_session_id = text("worker-1"));
    assert_eq!(filtered_identity_stream(harness, &filter), [1, 3]);
}

fn read_from_cursor_can_filter_by_captured_from(harness: &Harness) {
    let filter = criteria(|fields| fields.captured_from = Some(datetime!(2024-01-15 10:05 UTC)));
    assert_eq!(filtered_identity_stream(harness, &filter), [2, 3]);
}

fn read_from_cursor_can_filter_by_captured_until(harness: &Harness) {
    let filter = criteria(|fields| fields.captured_until = Some(datetime!(2024-01-15 10:05 UTC)));
    assert_eq!(filtered_identity_stream(harness, &filter), [1, 2]);
}

fn operator_identity_derivation_rules_apply_to_filters(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let with = |correlation_ids: Value, runtime_flags: Value| {
        envelope_with(|envelope| {
            envelope.correlation_ids = map(correlation_ids);
            envelope.runtime_flags = map(runtime_flags);
        })
    };
    write_all(
        store.as_mut(),
        [
            // 1: replay id only in runtime flags: the fallback applies.
            with(json!({}), json!({"replay_session_id": "r"})),
            // 2: a blank correlation value falls through to runtime flags.
            with(
                json!({"replay_session_id": "  "}),
                json!({"replay_session_id": "r"}),
            ),
            // 3: a non-blank correlation value wins over runtime flags.
            with(
                json!({"replay_session_id": "other"}),
                json!({"replay_session_id": "r"}),
            ),
            // 4: node slug and worker session in correlation ids are ignored.
            with(
                json!({"pbx_node_slug": "n", "worker_session_id": "w"}),
                json!({}),
            ),
            // 5: non-string values are absent.
            with(
                json!({"replay_session_id": 7}),
                json!({"pbx_node_slug": 7, "worker_session_id": ["w"]}),
            ),
            // 6: the real thing.
            with(
                json!({}),
                json!({"pbx_node_slug": "n", "worker_session_id": "w"}),
            ),
        ],
    );
    let select = |filter: Criteria| sequences(&read_all(store.as_ref(), &filter));
    assert_eq!(
        select(criteria(|fields| fields.replay_session_id = text("r"))),
        [1, 2]
    );
    assert_eq!(
        select(criteria(|fields| fields.replay_session_id = text("other"))),
        [3]
    );
    assert_eq!(
        select(criteria(|fields| fields.replay_session_id = text("7"))),
        [] as [u64; 0]
    );
    assert_eq!(
        select(criteria(|fields| fields.pbx_node_slug = text("n"))),
        [6]
    );
    assert_eq!(
        select(criteria(|fields| fields.worker_session_id = text("w"))),
        [6]
    );
}

/// Records captured at 10:00, 10:30 and 11:00 UTC.
fn half_hour_stream() -> [Envelope; 3] {
    [
        captured_at(datetime!(2024-01-15 10:00 UTC)),
        captured_at(datetime!(2024-01-15 10:30 UTC)),
        captured_at(datetime!(2024-01-15 11:00 UTC)),
    ]
}

fn read_from_cursor_can_filter_by_inclusive_time_window(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), half_hour_stream());
    let filter = criteria(|fields| {
        fields.captured_from = Some(datetime!(2024-01-15 10:15 UTC));
        fields.captured_until = Some(datetime!(2024-01-15 11:00 UTC));
    });
    assert_eq!(sequences(&read_all(store.as_ref(), &filter)), [2, 3]);
    let exact = criteria(|fields| {
        fields.captured_from = Some(datetime!(2024-01-15 10:30 UTC));
        fields.captured_until = Some(datetime!(2024-01-15 10:30 UTC));
    });
    assert_eq!(sequences(&read_all(store.as_ref(), &exact)), [2]);
}

/// C8: bounds and captures in other offsets compare as instants (the reference SQLite
/// adapter compared text and returned nothing here).
fn time_window_bounds_in_another_utc_offset_compare_instants(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(
        store.as_mut(),
        [
            captured_at(datetime!(2024-01-15 10:00 UTC)),
            captured_at(datetime!(2024-01-15 12:30 +02:00)),
            captured_at(datetime!(2024-01-15 05:00 -06:00)),
        ],
    );
    let filter = criteria(|fields| {
        fields.captured_from = Some(datetime!(2024-01-15 12:30 +02:00));
        fields.captured_until = Some(datetime!(2024-01-15 06:00 -05:00));
    });
    assert_eq!(sequences(&read_all(store.as_ref(), &filter)), [2, 3]);
    let utc = criteria(|fields| {
        fields.captured_from = Some(datetime!(2024-01-15 10:30 UTC));
        fields.captured_until = Some(datetime!(2024-01-15 10:30 UTC));
    });
    assert_eq!(sequences(&read_all(store.as_ref(), &utc)), [2]);
    let east = criteria(|fields| {
        fields.captured_from = Some(datetime!(2024-01-15 15:00 +05:00));
    });
    assert_eq!(sequences(&read_all(store.as_ref(), &east)), [1, 2, 3]);
}

/// The record side of a time window is the stored capture instant (milliseconds): a
/// capture at 10:00:00.000500 matches `captured_until = 10:00:00.000` (§3), and bounds keep
/// their full precision.
fn time_window_compares_the_stored_millisecond_instant(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(
        store.as_mut(),
        [
            captured_at(datetime!(2024-01-15 10:00:00.000500 UTC)),
            captured_at(datetime!(2024-01-15 10:00:00.001 UTC)),
        ],
    );
    let select = |filter: Criteria| sequences(&read_all(store.as_ref(), &filter));
    let until = |until| criteria(|fields| fields.captured_until = Some(until));
    let from = |from| criteria(|fields| fields.captured_from = Some(from));
    assert_eq!(select(until(datetime!(2024-01-15 10:00:00.000 UTC))), [1]);
    assert_eq!(
        select(until(datetime!(2024-01-15 10:00:00.000999999 UTC))),
        [1]
    );
    assert_eq!(
        select(until(datetime!(2024-01-15 10:00:00.001 UTC))),
        [1, 2]
    );
    assert_eq!(
        select(from(datetime!(2024-01-15 10:00:00.000000001 UTC))),
        [2]
    );
    assert_eq!(select(from(datetime!(2024-01-15 10:00:00.001 UTC))), [2]);
    assert_eq!(
        select(from(datetime!(2024-01-15 10:00:00.001000001 UTC))),
        [] as [u64; 0]
    );
    assert_eq!(
        select(from(datetime!(2024-01-15 12:00:00.000999 +02:00))),
        [2]
    );
}

fn read_from_cursor_can_apply_combined_bounded_filters(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let with = |name: &str, session: &str, capture| {
        envelope_with(|envelope| {
            envelope.artifact_name = name.into();
            envelope.session_id = text(session);
            envelope.capture_timestamp = capture;
        })
    };
    write_all(
        store.as_mut(),
        [
            with("api.dispatch", "sess-1", datetime!(2024-01-15 10:00 UTC)),
            with("api.dispatch", "sess-1", datetime!(2024-01-15 10:30 UTC)),
            with("event.raw", "sess-1", datetime!(2024-01-15 10:45 UTC)),
            with("api.dispatch", "sess-2", datetime!(2024-01-15 10:50 UTC)),
            with("api.dispatch", "sess-1", datetime!(2024-01-15 11:30 UTC)),
        ],
    );
    let filter = criteria(|fields| {
        fields.artifact_name = text("api.dispatch");
        fields.session_id = text("sess-1");
        fields.captured_from = Some(datetime!(2024-01-15 10:15 UTC));
        fields.captured_until = Some(datetime!(2024-01-15 11:00 UTC));
    });
    assert_eq!(sequences(&read_all(store.as_ref(), &filter)), [2]);
}

fn filtered_reads_preserve_append_order(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(
        store.as_mut(),
        [
            "event.raw",
            "api.dispatch",
            "bgapi.dispatch",
            "api.dispatch",
        ]
        .map(fixture_named),
    );
    let filter = criteria(|fields| fields.artifact_name = text("api.dispatch"));
    assert_eq!(sequences(&read_all(store.as_ref(), &filter)), [2, 4]);
}

fn filtered_reads_return_empty_array_when_no_records_match(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), identity_stream());
    let filter = criteria(|fields| fields.artifact_name = text("no.such.artifact"));
    assert!(read_all(store.as_ref(), &filter).is_empty());
    let contradictory = criteria(|fields| {
        fields.session_id = text("sess-1");
        fields.job_uuid = text("job-2");
    });
    assert!(read_all(store.as_ref(), &contradictory).is_empty());
}

fn filtered_chunked_reads_remain_deterministic_for_export_style_streaming(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(
        store.as_mut(),
        (0..12).map(|index| {
            fixture_named(if index % 3 == 1 {
                "event.raw"
            } else {
                "api.dispatch"
            })
        }),
    );
    for filter in [
        Criteria::any(),
        criteria(|fields| fields.artifact_name = text("api.dispatch")),
        criteria(|fields| fields.artifact_name = text("event.raw")),
    ] {
        let whole = read_all(store.as_ref(), &filter);
        assert!(!whole.is_empty());
        assert_eq!(read_chunked(store.as_ref(), 1, &filter), whole);
        assert_eq!(read_chunked(store.as_ref(), 5, &filter), whole);
    }
}

// ---------------------------------------------------------------------------------------
// Cursor hints (FilesystemChaosTest, C5)

fn stale_byte_offset_hint_past_end_of_file_does_not_hide_valid_records(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), (0..3).map(|_| fixture_envelope()));
    let records = store
        .read_from_cursor(&ReadCursor::new(1, Some(999_999)), 100, &Criteria::any())
        .unwrap();
    assert_eq!(sequences(&records), [2, 3]);
}

fn byte_offset_hint_into_the_middle_never_hides_records(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), (0..5).map(|_| fixture_envelope()));
    for hint in [0, 1, 10, 100, 200, 333, 4096, u64::MAX] {
        let all = store
            .read_from_cursor(&ReadCursor::new(0, Some(hint)), 100, &Criteria::any())
            .unwrap();
        assert_eq!(sequences(&all), [1, 2, 3, 4, 5], "hint {hint}");
        let rest = store
            .read_from_cursor(&ReadCursor::new(2, Some(hint)), 100, &Criteria::any())
            .unwrap();
        assert_eq!(sequences(&rest), [3, 4, 5], "hint {hint}");
    }
}

// ---------------------------------------------------------------------------------------
// LargeStreamAdapterTest, SqliteChaosTest (backend-neutral part)

fn large_stream_reads_remain_ordered_and_complete(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), (0..1000).map(|_| fixture_envelope()));
    let records = read_chunked(store.as_ref(), 137, &Criteria::any());
    assert_eq!(sequences(&records), (1..=1000).collect::<Vec<_>>());
}

fn chunked_bounded_reads_over_large_stream_remain_ordered(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(
        store.as_mut(),
        (0..200).map(|index| {
            if index % 2 == 0 {
                envelope_with(|envelope| envelope.session_id = text("sess-odd"))
            } else {
                envelope_with(|envelope| {
                    envelope.artifact_name = "event.raw".into();
                    envelope.session_id = text("sess-even");
                })
            }
        }),
    );
    let filter = criteria(|fields| {
        fields.artifact_name = text("api.dispatch");
        fields.session_id = text("sess-odd");
    });
    let records = read_chunked(store.as_ref(), 17, &filter);
    assert_eq!(
        sequences(&records),
        (1..=199).step_by(2).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// Writes: validation before sequencing (C1), imports

fn invalid_input_is_rejected_without_consuming_a_sequence(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    store.write(fixture_envelope()).unwrap();
    for invalid in [
        fixture_named("   "),
        fixture_named(""),
        envelope_with(|envelope| envelope.artifact_version = "\t".into()),
    ] {
        let result = store.write(invalid);
        assert!(matches!(result, Err(Error::Record(_))), "{result:?}");
    }
    let id = store.write(fixture_envelope()).unwrap();
    assert_eq!(store.read_by_id(&id).unwrap().unwrap().append_sequence(), 2);
    assert_eq!(store.stats().unwrap().last_sequence, 2);
}

fn invalid_batch_is_rejected_whole(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let result = store.write_batch(vec![
        fixture_envelope(),
        fixture_named(" "),
        fixture_envelope(),
    ]);
    assert!(matches!(result, Err(Error::Record(_))), "{result:?}");
    assert!(read_all(store.as_ref(), &Criteria::any()).is_empty());
    // A batch long enough to be encoded in parts, the bad envelope in a later part.
    let mut long: Vec<_> = (0..1500).map(|_| fixture_envelope()).collect();
    long[1200] = fixture_named(" ");
    let result = store.write_batch(long);
    assert!(matches!(result, Err(Error::Record(_))), "{result:?}");
    assert!(read_all(store.as_ref(), &Criteria::any()).is_empty());
    let ids = store
        .write_batch(vec![fixture_envelope(), fixture_envelope()])
        .unwrap();
    let records = read_all(store.as_ref(), &Criteria::any());
    assert_eq!(sequences(&records), [1, 2]);
    assert_eq!(records.first().unwrap().id(), ids.first().unwrap());
    // A long batch keeps its order: each record has the id returned for its place.
    let names: Vec<String> = (0..1500).map(|n| format!("event.{n}")).collect();
    let ids = store
        .write_batch(names.iter().map(|name| fixture_named(name)).collect())
        .unwrap();
    let records = read_all(store.as_ref(), &Criteria::any());
    let long = records.get(2..).unwrap();
    assert_eq!(sequences(long), (3..=1502).collect::<Vec<u64>>());
    for ((record, id), name) in long.iter().zip(&ids).zip(&names) {
        assert_eq!((record.id(), record.artifact_name()), (id, name.as_str()));
    }
}

fn read_only_handle_reads_while_the_writer_writes(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut writer = (harness.open)(&fixture.path);
    write_all(writer.as_mut(), [fixture_envelope(), fixture_envelope()]);
    let reader = (harness.open_read_only)(&fixture.path);
    assert_eq!(
        sequences(&read_all(reader.as_ref(), &Criteria::any())),
        [1, 2]
    );
    write_all(writer.as_mut(), (0..3).map(|_| fixture_named("event.raw")));
    writer.sync().unwrap();
    let records = read_all(reader.as_ref(), &Criteria::any());
    assert_eq!(sequences(&records), [1, 2, 3, 4, 5]);
    assert_eq!(records, read_all(writer.as_ref(), &Criteria::any()));
    let id = records.get(3).unwrap().id().clone();
    assert_eq!(
        reader.read_by_id(&id).unwrap().unwrap().artifact_name(),
        "event.raw"
    );
    let stats = reader.stats().unwrap();
    assert_eq!((stats.records, stats.last_sequence), (5, 5));
    // A second reader beside the first.
    let second = (harness.open_read_only)(&fixture.path);
    assert_eq!(read_all(second.as_ref(), &Criteria::any()).len(), 5);
}

/// A read-only handle answers a lookup from what it has already indexed when it can, so
/// this checks that it still finds records written after its earlier lookups, and does not
/// return records deleted since.
fn read_only_lookups_see_records_written_and_deleted_since_earlier_lookups(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut writer = (harness.open)(&fixture.path);
    let first = writer
        .write_batch(vec![fixture_envelope(), fixture_envelope()])
        .unwrap();
    writer.sync().unwrap();
    let reader = (harness.open_read_only)(&fixture.path);
    let sequence_of = |id: &RecordId| reader.read_by_id(id).unwrap().map(|r| r.append_sequence());
    assert_eq!(sequence_of(&first[0]), Some(1));
    let later = writer
        .write_batch((0..3).map(|_| fixture_named("event.raw")).collect())
        .unwrap();
    writer.sync().unwrap();
    assert_eq!(sequence_of(&later[2]), Some(5));
    assert_eq!(sequence_of(&first[1]), Some(2));
    assert_eq!(sequence_of(&RecordId::generate()), None);
    let Some(delete_all) = harness.delete_all else {
        return;
    };
    drop(writer);
    delete_all(&fixture.path);
    for id in first.iter().chain(&later) {
        assert_eq!(sequence_of(id), None, "{id} was deleted");
    }
}

/// An imported record with every field set, timestamps at millisecond precision.
fn imported(sequence: u64) -> Record {
    Record::new(RecordFields {
        id: RecordId::new(format!("import-{sequence}")).unwrap(),
        artifact_version: "3".into(),
        artifact_name: "bgapi.complete".into(),
        capture_timestamp: datetime!(2023-06-01 08:15:30.250 +02:00),
        stored_at: datetime!(2023-06-01 06:15:31.999 UTC),
        append_sequence: sequence,
        connection_generation: text("gen-7"),
        session_id: None,
        job_uuid: text("job-7"),
        event_name: text("BACKGROUND_JOB"),
        capture_path: text("esl/inbound"),
        correlation_ids: map(json!({"replay_session_id": "replay-7"})),
        runtime_flags: JsonMap::new(),
        payload: map(json!({"Job-UUID": "job-7", "body": "+OK"})),
        checksum: "imported-checksum-kept-verbatim".into(),
        tags: map(json!({"source": "import", "batch": 2})),
    })
    .unwrap()
}

fn append_records_keeps_imported_records_exactly(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let records = [imported(5), imported(9)];
    store.append_records(&records).unwrap();
    assert_eq!(read_all(store.as_ref(), &Criteria::any()), records);
    let first = store.read_by_id(records[0].id()).unwrap().unwrap();
    assert_eq!(first, records[0]);
    assert_eq!(first.session_id(), None);
    assert_eq!(first.tags(), records[0].tags());
    // Written records continue after the imported ones.
    let id = store.write(fixture_envelope()).unwrap();
    assert_eq!(
        store.read_by_id(&id).unwrap().unwrap().append_sequence(),
        10
    );
    drop(store);
    let store = (harness.open)(&fixture.path);
    let all = read_all(store.as_ref(), &Criteria::any());
    assert_eq!(sequences(&all), [5, 9, 10]);
    assert_eq!(all.first(), records.first());
}

/// Encoded records (what capture appends) are stored and read back as the records they
/// encode, after the store's last sequence and nowhere else.
fn append_encoded_stores_records_as_append_records_does(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let records = [imported(5), imported(9)];
    let encoded: Vec<EncodedRecord> = records
        .iter()
        .map(|r| EncodedRecord::of(r).unwrap())
        .collect();
    store.append_encoded(&encoded).unwrap();
    assert_eq!(read_all(store.as_ref(), &Criteria::any()), records);
    assert_eq!(
        store.read_by_id(records[1].id()).unwrap().as_ref(),
        Some(&records[1])
    );
    let mut later = EncodedRecord::of(&imported(12)).unwrap();
    later.set_append_sequence(8).unwrap();
    let result = store.append_encoded(std::slice::from_ref(&later));
    assert!(
        matches!(
            result,
            Err(Error::SequenceNotIncreasing { last: 9, found: 8 })
        ),
        "{result:?}"
    );
    later.set_append_sequence(11).unwrap();
    store.append_encoded(&[later]).unwrap();
    assert_eq!(
        sequences(&read_all(store.as_ref(), &Criteria::any())),
        [5, 9, 11]
    );
    assert_eq!(store.summary().unwrap().records, 3);
}

/// An import cannot shadow a stored record: a record whose id a stored record, or an
/// earlier record of its batch, has is refused, with nothing of the batch written.
fn append_records_refuses_ids_already_stored_or_repeated(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let stored = store
        .write_batch(vec![fixture_envelope(), fixture_envelope()])
        .unwrap();
    let with_id = |sequence: u64, id: &RecordId| {
        let mut fields = imported(sequence).into_fields();
        fields.id = id.clone();
        Record::new(fields).unwrap()
    };
    let result = store.append_records(&[imported(3), with_id(4, &stored[0])]);
    match &result {
        Err(Error::DuplicateId {
            id,
            sequence: 4,
            holder: 1,
        }) => assert_eq!(id, stored[0].as_str()),
        other => panic!("{other:?}"),
    }
    let fresh = RecordId::generate();
    let result = store.append_records(&[with_id(3, &fresh), imported(4), with_id(5, &fresh)]);
    match &result {
        Err(Error::DuplicateId {
            sequence: 5,
            holder: 3,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    // Nothing of either batch was stored, and the ids still find their records.
    assert_eq!(
        sequences(&read_all(store.as_ref(), &Criteria::any())),
        [1, 2]
    );
    assert_eq!(
        store
            .read_by_id(&stored[0])
            .unwrap()
            .unwrap()
            .append_sequence(),
        1
    );
    assert!(store.read_by_id(&fresh).unwrap().is_none());
    // After a reopen too (the segment log then checks the ids of records it did not write).
    drop(store);
    let mut store = (harness.open)(&fixture.path);
    assert!(matches!(
        store.append_records(&[with_id(3, &stored[1])]),
        Err(Error::DuplicateId { sequence: 3, .. })
    ));
    store
        .append_records(&[with_id(3, &fresh), imported(4)])
        .unwrap();
    assert_eq!(
        store.read_by_id(&fresh).unwrap().unwrap().append_sequence(),
        3
    );
}

fn append_records_rejects_non_increasing_sequences(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    write_all(store.as_mut(), [fixture_envelope(), fixture_envelope()]);
    let result = store.append_records(&[imported(2)]);
    assert!(
        matches!(
            result,
            Err(Error::SequenceNotIncreasing { last: 2, found: 2 })
        ),
        "{result:?}"
    );
    let result = store.append_records(&[imported(1)]);
    assert!(
        matches!(result, Err(Error::SequenceNotIncreasing { found: 1, .. })),
        "{result:?}"
    );
    let result = store.append_records(&[imported(6), imported(4)]);
    assert!(
        matches!(result, Err(Error::SequenceNotIncreasing { found: 4, .. })),
        "{result:?}"
    );
    let result = store.append_records(&[imported(7), imported(7)]);
    assert!(
        matches!(result, Err(Error::SequenceNotIncreasing { found: 7, .. })),
        "{result:?}"
    );
    // Nothing of a rejected batch was stored.
    assert_eq!(
        sequences(&read_all(store.as_ref(), &Criteria::any())),
        [1, 2]
    );
    store.append_records(&[]).unwrap();
    store.append_records(&[imported(3), imported(8)]).unwrap();
    let id = store.write(fixture_envelope()).unwrap();
    assert_eq!(store.read_by_id(&id).unwrap().unwrap().append_sequence(), 9);
}

// ---------------------------------------------------------------------------------------
// Stats, waiting, live tail

fn stats_report_records_and_sequences(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let stats = store.stats().unwrap();
    assert_eq!(stats.backend, harness.backend);
    assert_eq!(
        (stats.records, stats.first_sequence, stats.last_sequence),
        (0, None, 0)
    );
    write_all(store.as_mut(), (0..3).map(|_| fixture_envelope()));
    store.sync().unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.records, stats.first_sequence, stats.last_sequence),
        (3, Some(1), 3)
    );
    assert!(stats.bytes > 0);
}

fn wait_for_records_reports_new_records_or_times_out(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    assert!(
        !store
            .wait_for_records(0, Duration::from_millis(20))
            .unwrap()
    );
    store.write(fixture_envelope()).unwrap();
    assert!(store.wait_for_records(0, Duration::from_secs(5)).unwrap());
    assert!(
        !store
            .wait_for_records(1, Duration::from_millis(20))
            .unwrap()
    );
    let reader = (harness.open_read_only)(&fixture.path);
    let writer = thread::spawn(move || {
        // Likely to write while the reader waits, to exercise the wake-up; the test holds
        // whichever comes first.
        thread::sleep(Duration::from_millis(50));
        store.write(fixture_envelope()).unwrap();
        store
    });
    assert!(reader.wait_for_records(1, Duration::from_secs(10)).unwrap());
    drop(writer.join().unwrap());
}

fn live_tail_follows_a_writer_thread(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut writer = (harness.open)(&fixture.path);
    writer.write(fixture_envelope()).unwrap();
    let reader = (harness.open_read_only)(&fixture.path);
    let producer = thread::spawn(move || {
        for index in 0..40 {
            writer
                .write(fixture_named(&format!("live.{index}")))
                .unwrap();
            if index % 4 == 0 {
                thread::sleep(Duration::from_millis(2));
            }
        }
    });
    let mut tail = Tail::new(reader.as_ref(), ReadCursor::start(), Criteria::any());
    let mut seen = Vec::new();
    while seen.len() < 41 {
        let record = tail
            .next_within(Duration::from_secs(10))
            .unwrap()
            .expect("the writer keeps writing");
        seen.push(record);
    }
    producer.join().unwrap();
    assert_eq!(sequences(&seen), (1..=41).collect::<Vec<_>>());
    assert_eq!(seen.last().unwrap().artifact_name(), "live.39");
    assert_eq!(tail.cursor().last_consumed_sequence(), 41);
    assert!(
        tail.next_within(Duration::from_millis(20))
            .unwrap()
            .is_none()
    );
}

fn live_tail_applies_criteria(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut writer = (harness.open)(&fixture.path);
    let reader = (harness.open_read_only)(&fixture.path);
    let producer = thread::spawn(move || {
        for index in 0..30 {
            let name = if index % 3 == 0 {
                "api.dispatch"
            } else {
                "event.raw"
            };
            writer.write(fixture_named(name)).unwrap();
        }
    });
    let filter = criteria(|fields| fields.artifact_name = text("api.dispatch"));
    let mut tail = Tail::new(reader.as_ref(), ReadCursor::start(), filter);
    let seen: Vec<_> = (0..10)
        .map(|_| {
            tail.next_within(Duration::from_secs(10))
                .unwrap()
                .expect("ten matching records are written")
        })
        .collect();
    producer.join().unwrap();
    assert_eq!(sequences(&seen), (1..=28).step_by(3).collect::<Vec<_>>());
    assert!(
        tail.next_within(Duration::from_millis(20))
            .unwrap()
            .is_none()
    );
    assert_eq!(tail.cursor().last_consumed_sequence(), 30);
}

/// `Tail::visit_within` lends the records `next_within` yields, as views, in the same
/// order and with the same filter, and the two mix without losing or repeating a record.
fn live_tail_views_are_the_records_it_yields(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut writer = (harness.open)(&fixture.path);
    let reader = (harness.open_read_only)(&fixture.path);
    let producer = thread::spawn(move || {
        for index in 0..1_200 {
            let name = if index % 3 == 0 {
                "api.dispatch"
            } else {
                "event.raw"
            };
            writer.write(fixture_named(name)).unwrap();
        }
    });
    let filter = || criteria(|fields| fields.artifact_name = text("api.dispatch"));
    let line = |record: &Record| {
        let mut line = String::new();
        record
            .view(&MapTexts::of(record))
            .append_ndjson_line(&mut line);
        line
    };
    let mut records = Tail::new(reader.as_ref(), ReadCursor::start(), filter());
    let expected: Vec<String> = (0..400)
        .map(|_| {
            line(
                &records
                    .next_within(Duration::from_secs(10))
                    .unwrap()
                    .unwrap(),
            )
        })
        .collect();
    producer.join().unwrap();
    let mut views = Tail::new(reader.as_ref(), ReadCursor::start(), filter());
    let mut seen = Vec::new();
    // A few records as owned ones first, then views from where they stopped.
    for _ in 0..3 {
        seen.push(line(&views.next_within(Duration::ZERO).unwrap().unwrap()));
    }
    while views
        .visit_within(Duration::ZERO, &mut |view| {
            let mut line = String::new();
            view.append_ndjson_line(&mut line);
            seen.push(line);
        })
        .unwrap()
        > 0
    {}
    assert_eq!(seen, expected);
    assert_eq!(views.cursor().last_consumed_sequence(), 1_200);
}

/// Issue 16 item 3: a timeout too large for the clock (`Duration::MAX`) waits without a
/// deadline instead of panicking on `Instant::now() + timeout`.
fn huge_timeouts_wait_without_a_deadline(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    store.write(fixture_envelope()).unwrap();
    assert!(store.wait_for_records(0, Duration::MAX).unwrap());
    let reader = (harness.open_read_only)(&fixture.path);
    assert!(reader.wait_for_records(0, Duration::MAX).unwrap());
    let mut tail = Tail::new(reader.as_ref(), ReadCursor::start(), Criteria::any());
    assert!(tail.next_within(Duration::MAX).unwrap().is_some());
    // A wait with no deadline still ends when the record arrives.
    let writer = thread::spawn(move || {
        store.write(fixture_envelope()).unwrap();
        store
    });
    assert!(reader.wait_for_records(1, Duration::MAX).unwrap());
    drop(writer.join().unwrap());
}

/// Sequences that were never stored (imported records with gaps) are no pruned records: a
/// live tail passes them, as records and as views.
fn a_live_tail_passes_sequences_never_stored(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    store.append_records(&[imported(5), imported(9)]).unwrap();
    let reader = (harness.open_read_only)(&fixture.path);
    let mut records = Tail::new(reader.as_ref(), ReadCursor::new(2, None), Criteria::any());
    let mut seen = Vec::new();
    while let Some(record) = records.next_within(Duration::ZERO).unwrap() {
        seen.push(record.append_sequence());
    }
    assert_eq!(seen, [5, 9]);
    let mut views = Tail::new(reader.as_ref(), ReadCursor::new(5, None), Criteria::any());
    let mut seen = Vec::new();
    views
        .visit_within(Duration::ZERO, &mut |view| {
            seen.push(view.append_sequence())
        })
        .unwrap();
    assert_eq!(seen, [9]);
}

/// Issue 16 item 3: `--after 18446744073709551615` reads nothing (no `after + 1` wrap).
fn a_cursor_at_the_largest_sequence_reads_nothing(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    store.append_records(&[imported(5), imported(9)]).unwrap();
    for after in [u64::MAX, u64::MAX - 1, i64::MAX as u64] {
        let page = store
            .read_from_cursor(&ReadCursor::new(after, None), 10, &Criteria::any())
            .unwrap();
        assert!(page.is_empty(), "after {after}: {page:?}");
        assert!(
            !store
                .wait_for_records(after, Duration::from_millis(1))
                .unwrap()
        );
    }
}

/// Issue 16 item 11: a store whose last sequence is at the record model's limit refuses a
/// write with one clear, permanent error, and consumes nothing.
fn sequences_exhausted_is_refused_clearly_at_the_boundary(harness: &Harness) {
    let fixture = Fixture::new(harness);
    let mut store = (harness.open)(&fixture.path);
    let max = i64::MAX as u64;
    store.append_records(&[imported(max - 1)]).unwrap();
    let result = store.write_batch(vec![fixture_envelope(), fixture_envelope()]);
    assert!(
        matches!(result, Err(Error::SequencesExhausted { last, count: 2 }) if last == max - 1),
        "{result:?}"
    );
    let message = result.unwrap_err().to_string();
    assert!(message.contains("sequences are exhausted"), "{message}");
    // The one sequence left is still usable, then nothing more.
    store.write(fixture_envelope()).unwrap();
    assert_eq!(store.stats().unwrap().last_sequence, max);
    assert!(matches!(
        store.write(fixture_envelope()),
        Err(Error::SequencesExhausted { count: 1, .. })
    ));
    assert_eq!(store.stats().unwrap().records, 2);
}
