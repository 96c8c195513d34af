//! What only the SQLite backend promises: the reference schema and row encoding (K8),
//! opening databases the reference package wrote (read-only as they are, and migrated for
//! writing: `capture_us`, derived columns, the sequence high-water mark), stale writers
//! that fail instead of leapfrogging (C1), corrupt rows that fail every read touching them
//! (`SqliteChaosTest`, `SqliteCorruptionHandlingTest`), concurrent writers, read-only
//! handles, WAL mode and the entry points (`SqliteReplayArtifactStoreTest`).
//!
//! Reference databases are built here by hand with the exact reference DDL and rows as the
//! reference writes them (§9), in its default rollback-journal mode.

use std::path::{Path, PathBuf};

use esl_replay::record::{
    self, Criteria, CriteriaFields, JsonMap, ReadCursor, Record, RecordId, checksum, timestamp,
};
use esl_replay::store::{
    self, ArtifactReader, ArtifactStore, Backend, Error, SqliteOptions, SqliteStore, SqliteSync,
};
use rusqlite::{Connection, params};
use serde_json::{Value, json};
use time::macros::datetime;

use crate::support::map;
use crate::support::record::{fixture_envelope, fixture_named};

/// The reference's table, verbatim in structure.
const REFERENCE_TABLE: &str = "CREATE TABLE IF NOT EXISTS replay_records (
    id TEXT PRIMARY KEY,
    artifact_version TEXT NOT NULL,
    artifact_name TEXT NOT NULL,
    capture_timestamp TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    append_sequence INTEGER NOT NULL UNIQUE,
    connection_generation TEXT NULL,
    session_id TEXT NULL,
    job_uuid TEXT NULL,
    replay_session_id TEXT NULL,
    pbx_node_slug TEXT NULL,
    worker_session_id TEXT NULL,
    event_name TEXT NULL,
    capture_path TEXT NULL,
    correlation_ids TEXT NOT NULL,
    runtime_flags TEXT NOT NULL,
    payload TEXT NOT NULL,
    checksum TEXT NOT NULL,
    tags TEXT NOT NULL
)";

/// An older reference table, before the derived identity columns existed.
const OLDER_REFERENCE_TABLE: &str = "CREATE TABLE replay_records (
    id TEXT PRIMARY KEY,
    artifact_version TEXT NOT NULL,
    artifact_name TEXT NOT NULL,
    capture_timestamp TEXT NOT NULL,
    stored_at TEXT NOT NULL,
    append_sequence INTEGER NOT NULL UNIQUE,
    connection_generation TEXT NULL,
    session_id TEXT NULL,
    job_uuid TEXT NULL,
    event_name TEXT NULL,
    capture_path TEXT NULL,
    correlation_ids TEXT NOT NULL,
    runtime_flags TEXT NOT NULL,
    payload TEXT NOT NULL,
    checksum TEXT NOT NULL,
    tags TEXT NOT NULL
)";

const REFERENCE_INDEXED: [&str; 9] = [
    "append_sequence",
    "capture_timestamp",
    "artifact_name",
    "job_uuid",
    "replay_session_id",
    "pbx_node_slug",
    "worker_session_id",
    "session_id",
    "connection_generation",
];

/// One row as the reference writes it (text columns as stored).
struct ReferenceRow {
    id: &'static str,
    artifact_name: &'static str,
    capture_timestamp: &'static str,
    append_sequence: i64,
    session_id: Option<&'static str>,
    correlation_ids: &'static str,
    runtime_flags: &'static str,
    payload: &'static str,
}

impl ReferenceRow {
    fn checksum(&self) -> String {
        checksum::compute(
            self.artifact_name,
            "1",
            &timestamp::parse(self.capture_timestamp).unwrap(),
            &map(serde_json::from_str(self.payload).unwrap()),
        )
        .unwrap()
    }

    fn correlation_ids(&self) -> JsonMap {
        json_map(self.correlation_ids)
    }

    fn runtime_flags(&self) -> JsonMap {
        json_map(self.runtime_flags)
    }
}

fn json_map(text: &str) -> JsonMap {
    match serde_json::from_str(text).unwrap() {
        Value::Object(map) => map,
        _ => JsonMap::new(),
    }
}

fn reference_rows() -> [ReferenceRow; 3] {
    [
        ReferenceRow {
            id: "3f1c2b9e-8a4d-4c1e-9b7a-2d5e6f708192",
            artifact_name: "api.dispatch",
            capture_timestamp: "2024-01-15T10:00:00.000+00:00",
            append_sequence: 1,
            session_id: Some("sess-001"),
            correlation_ids: "[]",
            runtime_flags: "[]",
            payload: r#"{"command":"originate","args":"sofia/internal/1000"}"#,
        },
        ReferenceRow {
            id: "7d0e5c1a-3b2f-4e6d-8c9b-0a1b2c3d4e5f",
            artifact_name: "event.raw",
            capture_timestamp: "2024-01-15T12:30:00.000+02:00",
            append_sequence: 2,
            session_id: None,
            correlation_ids: r#"{"replay_session_id":"replay-1"}"#,
            runtime_flags: r#"{"pbx_node_slug":"node-a","worker_session_id":"worker-1"}"#,
            payload: r#"{"Event-Name":"CHANNEL_CREATE","Core-UUID":"core-uuid-001"}"#,
        },
        ReferenceRow {
            id: "c2d3e4f5-a6b7-4c8d-9e0f-1a2b3c4d5e6f",
            artifact_name: "bgapi.dispatch",
            capture_timestamp: "2024-01-15T11:00:00.000+00:00",
            append_sequence: 3,
            session_id: None,
            correlation_ids: "[]",
            runtime_flags: r#"{"replay_session_id":"replay-1","pbx_node_slug":"node-b"}"#,
            payload: r#"{"command":"show","args":"channels"}"#,
        },
    ]
}

/// Creates a database exactly as the reference package would have written `rows`.
fn write_reference_database(path: &Path, rows: &[ReferenceRow]) {
    let connection = Connection::open(path).unwrap();
    connection.execute_batch(REFERENCE_TABLE).unwrap();
    for column in REFERENCE_INDEXED {
        connection
            .execute_batch(&format!(
                "CREATE INDEX IF NOT EXISTS replay_records_{column}_idx ON replay_records ({column})"
            ))
            .unwrap();
    }
    for row in rows {
        insert_reference_row(&connection, row);
    }
}

/// Inserts a row as the reference's writer does (derived columns computed, no
/// `capture_us`).
fn insert_reference_row(connection: &Connection, row: &ReferenceRow) {
    let correlation_ids = row.correlation_ids();
    let runtime_flags = row.runtime_flags();
    connection
        .execute(
            "INSERT INTO replay_records (id, artifact_version, artifact_name, capture_timestamp, \
             stored_at, append_sequence, connection_generation, session_id, job_uuid, \
             replay_session_id, pbx_node_slug, worker_session_id, event_name, capture_path, \
             correlation_ids, runtime_flags, payload, checksum, tags) VALUES (?1, '1', ?2, ?3, \
             '2024-01-15T10:00:01.250+00:00', ?4, NULL, ?5, NULL, ?6, ?7, ?8, NULL, NULL, ?9, \
             ?10, ?11, ?12, '[]')",
            params![
                row.id,
                row.artifact_name,
                row.capture_timestamp,
                row.append_sequence,
                row.session_id,
                record::identity::replay_session_id(&correlation_ids, &runtime_flags),
                record::identity::pbx_node_slug(&runtime_flags),
                record::identity::worker_session_id(&runtime_flags),
                row.correlation_ids,
                row.runtime_flags,
                row.payload,
                row.checksum(),
            ],
        )
        .unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay.sqlite");
        Self { _dir: dir, path }
    }

    fn connection(&self) -> Connection {
        Connection::open(&self.path).unwrap()
    }

    fn columns(&self) -> Vec<String> {
        let connection = self.connection();
        let mut statement = connection
            .prepare("PRAGMA table_info(replay_records)")
            .unwrap();
        statement
            .query_map([], |row| row.get(1))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }
}

fn criteria(change: impl FnOnce(&mut CriteriaFields)) -> Criteria {
    let mut fields = CriteriaFields::default();
    change(&mut fields);
    Criteria::new(fields).unwrap()
}

fn read_all(store: &dyn ArtifactReader, criteria: &Criteria) -> store::Result<Vec<Record>> {
    store.read_from_cursor(&ReadCursor::start(), 10_000, criteria)
}

fn sequences(records: &[Record]) -> Vec<u64> {
    records.iter().map(Record::append_sequence).collect()
}

fn sequences_of(store: &dyn ArtifactReader, filter: &Criteria) -> Vec<u64> {
    sequences(&read_all(store, filter).unwrap())
}

/// The filters every reference-database test applies, with what they select from
/// [`reference_rows`] (row 2 is captured at 12:30+02:00 = 10:30Z).
fn assert_reference_filters(store: &dyn ArtifactReader) {
    let window = criteria(|fields| {
        fields.captured_from = Some(datetime!(2024-01-15 12:30 +02:00));
        fields.captured_until = Some(datetime!(2024-01-15 06:00 -05:00));
    });
    assert_eq!(sequences_of(store, &window), [2, 3]);
    let before = criteria(|fields| {
        fields.captured_until = Some(datetime!(2024-01-15 10:29:59.999 UTC));
    });
    assert_eq!(sequences_of(store, &before), [1]);
    let replay = criteria(|fields| fields.replay_session_id = Some("replay-1".into()));
    assert_eq!(sequences_of(store, &replay), [2, 3]);
    let node = criteria(|fields| fields.pbx_node_slug = Some("node-a".into()));
    assert_eq!(sequences_of(store, &node), [2]);
    let session = criteria(|fields| fields.session_id = Some("sess-001".into()));
    assert_eq!(sequences_of(store, &session), [1]);
}

fn assert_reference_records(store: &dyn ArtifactReader) {
    let records = read_all(store, &Criteria::any()).unwrap();
    assert_eq!(sequences(&records), [1, 2, 3]);
    for (record, row) in records.iter().zip(reference_rows()) {
        assert_eq!(record.id().as_str(), row.id);
        assert_eq!(record.artifact_name(), row.artifact_name);
        assert_eq!(
            timestamp::to_reference_text(record.capture_timestamp()),
            row.capture_timestamp
        );
        assert_eq!(
            timestamp::to_reference_text(record.stored_at()),
            "2024-01-15T10:00:01.250+00:00"
        );
        assert_eq!(record.session_id(), row.session_id);
        assert_eq!(record.correlation_ids(), &row.correlation_ids());
        assert_eq!(record.runtime_flags(), &row.runtime_flags());
        assert!(record.tags().is_empty());
        assert!(record.verify_checksum(), "{}", row.id);
    }
    let first = records.first().unwrap();
    assert_eq!(
        first.checksum(),
        "353a1621b83b5bf2d2357f86e0b7c35adff2750052fb09291211ba7d97493754"
    );
    let keys: Vec<_> = first.payload().keys().collect();
    assert_eq!(keys, ["command", "args"]);
    let by_id = store
        .read_by_id(&RecordId::new("7d0e5c1a-3b2f-4e6d-8c9b-0a1b2c3d4e5f").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(&by_id, records.get(1).unwrap());
}

// ---------------------------------------------------------------------------------------
// Reference databases (K8)

#[test]
fn reference_written_database_reads_read_only_without_being_changed() {
    let fixture = Fixture::new();
    write_reference_database(&fixture.path, &reference_rows());
    let columns_before = fixture.columns();
    let reader = SqliteStore::open_read_only(&fixture.path).unwrap();
    assert_reference_records(&reader);
    assert_reference_filters(&reader);
    let stats = reader.stats().unwrap();
    assert_eq!(
        (stats.records, stats.first_sequence, stats.last_sequence),
        (3, Some(1), 3)
    );
    drop(reader);
    assert_eq!(fixture.columns(), columns_before);
    assert!(!fixture.columns().contains(&"capture_us".to_owned()));
}

#[test]
fn reference_written_database_opens_for_writing_and_continues_its_stream() {
    let fixture = Fixture::new();
    write_reference_database(&fixture.path, &reference_rows());
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    assert_eq!(store.last_sequence(), 3);
    assert_reference_records(&store);
    assert_reference_filters(&store);
    let mut later = fixture_envelope();
    later.capture_timestamp = datetime!(2024-01-16 10:00 UTC);
    let id = store.write(later).unwrap();
    assert_eq!(store.read_by_id(&id).unwrap().unwrap().append_sequence(), 4);
    drop(store);
    let reader = SqliteStore::open_read_only(&fixture.path).unwrap();
    assert_eq!(sequences_of(&reader, &Criteria::any()), [1, 2, 3, 4]);
    assert_reference_filters(&reader);
}

#[test]
fn migration_adds_capture_us_and_backfills_it_from_the_text() {
    let fixture = Fixture::new();
    write_reference_database(&fixture.path, &reference_rows());
    drop(SqliteStore::open(&fixture.path).unwrap());
    let columns = fixture.columns();
    assert_eq!(columns.last().map(String::as_str), Some("capture_us"));
    let connection = fixture.connection();
    let captures: Vec<(i64, i64)> = connection
        .prepare("SELECT append_sequence, capture_us FROM replay_records ORDER BY 1")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    // 2024-01-15T10:00:00Z is 1705312800 s after the epoch.
    assert_eq!(
        captures,
        [
            (1, 1_705_312_800_000_000),
            (2, 1_705_314_600_000_000),
            (3, 1_705_316_400_000_000)
        ]
    );
    let index: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' \
             AND name = 'replay_records_capture_us_idx'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(index, 1);
    let meta: i64 = connection
        .query_row("SELECT last_sequence FROM esl_replay_meta", [], |row| {
            row.get(0)
        })
        .unwrap();
    assert_eq!(meta, 3);
}

#[test]
fn migration_adds_missing_derived_columns_of_older_reference_databases() {
    let fixture = Fixture::new();
    let connection = fixture.connection();
    connection.execute_batch(OLDER_REFERENCE_TABLE).unwrap();
    for row in reference_rows() {
        connection
            .execute(
                "INSERT INTO replay_records (id, artifact_version, artifact_name, \
                 capture_timestamp, stored_at, append_sequence, session_id, correlation_ids, \
                 runtime_flags, payload, checksum, tags) VALUES (?1, '1', ?2, ?3, \
                 '2024-01-15T10:00:01.250+00:00', ?4, ?5, ?6, ?7, ?8, ?9, '[]')",
                params![
                    row.id,
                    row.artifact_name,
                    row.capture_timestamp,
                    row.append_sequence,
                    row.session_id,
                    row.correlation_ids,
                    row.runtime_flags,
                    row.payload,
                    row.checksum(),
                ],
            )
            .unwrap();
    }
    drop(connection);
    // Read-only, the missing columns are filtered in memory.
    let reader = SqliteStore::open_read_only(&fixture.path).unwrap();
    assert_reference_filters(&reader);
    drop(reader);
    let store = SqliteStore::open(&fixture.path).unwrap();
    assert_reference_records(&store);
    assert_reference_filters(&store);
    drop(store);
    let columns = fixture.columns();
    for column in ["replay_session_id", "pbx_node_slug", "worker_session_id"] {
        assert!(columns.contains(&column.to_owned()), "{column}");
    }
    let derived: Vec<(Option<String>, Option<String>, Option<String>)> = fixture
        .connection()
        .prepare(
            "SELECT replay_session_id, pbx_node_slug, worker_session_id FROM replay_records \
             ORDER BY append_sequence",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let text = |value: &str| Some(value.to_owned());
    assert_eq!(
        derived,
        [
            (None, None, None),
            (text("replay-1"), text("node-a"), text("worker-1")),
            (text("replay-1"), text("node-b"), None),
        ]
    );
}

#[test]
fn backfill_fills_only_null_derived_columns() {
    let fixture = Fixture::new();
    write_reference_database(&fixture.path, &reference_rows());
    fixture
        .connection()
        .execute_batch(
            "UPDATE replay_records SET pbx_node_slug = 'kept' WHERE append_sequence = 2;
             UPDATE replay_records SET replay_session_id = NULL WHERE append_sequence = 3;",
        )
        .unwrap();
    drop(SqliteStore::open(&fixture.path).unwrap());
    let derived: Vec<(Option<String>, Option<String>)> = fixture
        .connection()
        .prepare(
            "SELECT replay_session_id, pbx_node_slug FROM replay_records \
             ORDER BY append_sequence",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let text = |value: &str| Some(value.to_owned());
    assert_eq!(
        derived,
        [
            (None, None),
            (text("replay-1"), text("kept")),
            (text("replay-1"), text("node-b")),
        ]
    );
}

#[test]
fn rows_appended_by_another_program_after_migration_are_read_and_filtered() {
    let fixture = Fixture::new();
    let rows = reference_rows();
    write_reference_database(&fixture.path, rows.get(..2).unwrap());
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    let reader = SqliteStore::open_read_only(&fixture.path).unwrap();
    // The reference package appends row 3 (no `capture_us`) while both handles are open.
    insert_reference_row(&fixture.connection(), rows.get(2).unwrap());
    assert_reference_records(&reader);
    assert_reference_filters(&reader);
    assert_reference_filters(&store);
    // The writer's view is stale now: it fails instead of reusing or skipping a number.
    assert!(matches!(
        store.write(fixture_envelope()),
        Err(Error::StaleWriter { sequence: 3 })
    ));
    drop(store);
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    let id = store.write(fixture_envelope()).unwrap();
    assert_eq!(store.read_by_id(&id).unwrap().unwrap().append_sequence(), 4);
}

// ---------------------------------------------------------------------------------------
// Schema and row encoding

#[test]
fn schema_is_the_reference_schema_plus_capture_us() {
    let fixture = Fixture::new();
    drop(SqliteStore::open(&fixture.path).unwrap());
    let connection = fixture.connection();
    let columns: Vec<(String, String, bool, bool)> = connection
        .prepare("PRAGMA table_info(replay_records)")
        .unwrap()
        .query_map([], |row| {
            Ok((
                row.get(1)?,
                row.get(2)?,
                row.get::<_, i64>(3)? == 1,
                row.get::<_, i64>(5)? == 1,
            ))
        })
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let expected = [
        ("id", "TEXT", false, true),
        ("artifact_version", "TEXT", true, false),
        ("artifact_name", "TEXT", true, false),
        ("capture_timestamp", "TEXT", true, false),
        ("stored_at", "TEXT", true, false),
        ("append_sequence", "INTEGER", true, false),
        ("connection_generation", "TEXT", false, false),
        ("session_id", "TEXT", false, false),
        ("job_uuid", "TEXT", false, false),
        ("replay_session_id", "TEXT", false, false),
        ("pbx_node_slug", "TEXT", false, false),
        ("worker_session_id", "TEXT", false, false),
        ("event_name", "TEXT", false, false),
        ("capture_path", "TEXT", false, false),
        ("correlation_ids", "TEXT", true, false),
        ("runtime_flags", "TEXT", true, false),
        ("payload", "TEXT", true, false),
        ("checksum", "TEXT", true, false),
        ("tags", "TEXT", true, false),
        ("capture_us", "INTEGER", false, false),
    ]
    .map(|(name, kind, not_null, key)| (name.to_owned(), kind.to_owned(), not_null, key));
    assert_eq!(columns, expected);
    let mut indexes: Vec<String> = connection
        .prepare(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'replay_records' \
             AND name NOT LIKE 'sqlite_autoindex%' ORDER BY name",
        )
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    let mut expected: Vec<String> = REFERENCE_INDEXED
        .iter()
        .chain(&["capture_us"])
        .map(|column| format!("replay_records_{column}_idx"))
        .collect();
    indexes.sort();
    expected.sort();
    assert_eq!(indexes, expected);
    let unique: i64 = connection
        .query_row(
            "SELECT COUNT(*) FROM pragma_index_list('replay_records') WHERE \"unique\" = 1",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(unique, 2, "primary key on id and UNIQUE append_sequence");
    let mode: String = connection
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[test]
fn rows_are_encoded_as_the_reference_writes_them() {
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    let mut envelope = fixture_envelope();
    envelope.capture_timestamp = datetime!(2024-01-15 12:00:00.123456 +02:00);
    envelope.session_id = Some("sess-001".into());
    envelope.runtime_flags = map(json!({"worker_session_id": "w-1", "pbx_node_slug": "node-a"}));
    envelope.payload = map(json!({"z": 1, "a": {"b": [], "url": "a/b"}, "f": 2.5, "u": "é"}));
    let id = store.write(envelope).unwrap();
    let row: Vec<Option<String>> = fixture
        .connection()
        .query_row(
            "SELECT id, artifact_version, artifact_name, capture_timestamp, stored_at, \
             CAST(append_sequence AS TEXT), connection_generation, session_id, job_uuid, \
             replay_session_id, pbx_node_slug, worker_session_id, event_name, capture_path, \
             correlation_ids, runtime_flags, payload, checksum, tags, \
             CAST(capture_us AS TEXT) FROM replay_records",
            [],
            |row| (0..20).map(|index| row.get(index)).collect(),
        )
        .unwrap();
    let text = |value: &str| Some(value.to_owned());
    let stored_at = row.get(4).cloned().flatten().unwrap();
    assert_eq!(
        timestamp::parse(&stored_at)
            .unwrap()
            .offset()
            .whole_seconds(),
        0
    );
    assert!(
        stored_at.ends_with("+00:00") && stored_at.len() == 29,
        "{stored_at}"
    );
    let checksum = row.get(17).cloned().flatten().unwrap();
    assert_eq!(
        row,
        [
            text(id.as_str()),
            text("1"),
            text("api.dispatch"),
            text("2024-01-15T12:00:00.123+02:00"),
            Some(stored_at),
            text("1"),
            None,
            text("sess-001"),
            None,
            None,
            text("node-a"),
            text("w-1"),
            None,
            None,
            text("[]"),
            text(r#"{"worker_session_id":"w-1","pbx_node_slug":"node-a"}"#),
            text(r#"{"z":1,"a":{"b":[],"url":"a/b"},"f":2.5,"u":"é"}"#),
            Some(checksum.clone()),
            text("[]"),
            text("1705312800123000"),
        ]
    );
    assert_eq!(checksum.len(), 64);
}

// ---------------------------------------------------------------------------------------
// Writers (SqliteReplayArtifactStoreTest, C1)

#[test]
fn write_read_restart_and_filter_behavior_matches_contract() {
    let fixture = Fixture::new();
    let mut first = SqliteStore::open(&fixture.path).unwrap();
    for session in ["sess-1", "sess-2", "sess-1"] {
        let mut envelope = fixture_envelope();
        envelope.session_id = Some(session.into());
        first.write(envelope).unwrap();
    }
    let filter = criteria(|fields| fields.session_id = Some("sess-1".into()));
    assert_eq!(sequences_of(&first, &filter), [1, 3]);
    let mut second = SqliteStore::open(&fixture.path).unwrap();
    let id = second.write(fixture_envelope()).unwrap();
    assert_eq!(
        second.read_by_id(&id).unwrap().unwrap().append_sequence(),
        4
    );
    assert_eq!(sequences_of(&first, &Criteria::any()), [1, 2, 3, 4]);
}

#[test]
fn sqlite_writer_model_requires_reopen_between_writer_epochs() {
    let fixture = Fixture::new();
    let mut first = SqliteStore::open(&fixture.path).unwrap();
    let mut second = SqliteStore::open(&fixture.path).unwrap();
    first.write(fixture_envelope()).unwrap();
    let error = second.write(fixture_envelope()).unwrap_err();
    assert!(
        matches!(error, Error::StaleWriter { sequence: 1 }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("failed to persist record at append_sequence 1"),
        "{error}"
    );
    // The failure consumed no sequence and the stale handle took the stream's end, as a
    // reopened one would: its next write follows the first writer's record, in every form.
    assert_eq!(second.last_sequence(), 1);
    let import = |sequence| {
        Record::from_envelope(
            fixture_envelope(),
            RecordId::generate(),
            datetime!(2024-01-15 10:00:01 UTC),
            sequence,
        )
        .unwrap()
    };
    second.append_records(&[import(2)]).unwrap();
    // Now the first handle is the stale one, once; then it writes a batch after it.
    assert!(matches!(
        first.write_batch(vec![fixture_envelope(), fixture_envelope()]),
        Err(Error::StaleWriter { sequence: 2 })
    ));
    first
        .write_batch(vec![fixture_envelope(), fixture_envelope()])
        .unwrap();
    assert!(matches!(
        second.append_records(&[import(3)]),
        Err(Error::StaleWriter { sequence: 3 })
    ));
    assert!(matches!(
        second.append_records(&[import(3)]),
        Err(Error::SequenceNotIncreasing { last: 4, found: 3 })
    ));
    let id = second.write(fixture_envelope()).unwrap();
    assert_eq!(
        second.read_by_id(&id).unwrap().unwrap().append_sequence(),
        5
    );
    assert_eq!(sequences_of(&first, &Criteria::any()), [1, 2, 3, 4, 5]);
}

#[test]
fn concurrent_writers_that_reopen_on_staleness_leave_no_gaps() {
    let fixture = Fixture::new();
    drop(SqliteStore::open(&fixture.path).unwrap());
    let writers: Vec<_> = (0..2)
        .map(|writer| {
            let path = fixture.path.clone();
            std::thread::spawn(move || {
                let mut store = SqliteStore::open(&path).unwrap();
                let mut stale = 0;
                let mut written = 0;
                while written < 50 {
                    let mut envelope = fixture_envelope();
                    envelope.artifact_name = format!("writer.{writer}");
                    match store.write(envelope) {
                        Ok(_) => written += 1,
                        Err(Error::StaleWriter { .. }) => {
                            stale += 1;
                            store = SqliteStore::open(&path).unwrap();
                        }
                        Err(error) => panic!("{error}"),
                    }
                }
                stale
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let store = SqliteStore::open_read_only(&fixture.path).unwrap();
    let records = read_all(&store, &Criteria::any()).unwrap();
    assert_eq!(sequences(&records), (1..=100).collect::<Vec<_>>());
    for writer in 0..2 {
        let name = format!("writer.{writer}");
        let own = criteria(|fields| fields.artifact_name = Some(name));
        assert_eq!(read_all(&store, &own).unwrap().len(), 50);
    }
}

#[test]
fn existing_unreadable_database_fails_to_open() {
    use std::os::unix::fs::PermissionsExt;
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    store.write(fixture_envelope()).unwrap();
    drop(store);
    let permissions = |mode| std::fs::Permissions::from_mode(mode);
    std::fs::set_permissions(&fixture.path, permissions(0o000)).unwrap();
    if std::fs::read(&fixture.path).is_ok() {
        // This user (root) reads the file regardless of its mode.
        std::fs::set_permissions(&fixture.path, permissions(0o644)).unwrap();
        return;
    }
    assert!(matches!(
        SqliteStore::open(&fixture.path),
        Err(Error::Sqlite { .. })
    ));
    assert!(matches!(
        SqliteStore::open_read_only(&fixture.path),
        Err(Error::Sqlite { .. })
    ));
    std::fs::set_permissions(&fixture.path, permissions(0o644)).unwrap();
    let store = SqliteStore::open_read_only(&fixture.path).unwrap();
    assert_eq!(sequences_of(&store, &Criteria::any()), [1]);
}

#[test]
fn a_failed_batch_stores_nothing_and_consumes_no_sequence() {
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    let id = store.write(fixture_envelope()).unwrap();
    let existing = store.read_by_id(&id).unwrap().unwrap();
    let fresh = Record::from_envelope(
        fixture_envelope(),
        RecordId::generate(),
        datetime!(2024-01-15 10:00:01 UTC),
        2,
    )
    .unwrap();
    let mut duplicate = existing.into_fields();
    duplicate.append_sequence = 3;
    let duplicate = Record::new(duplicate).unwrap();
    let error = store.append_records(&[fresh, duplicate]).unwrap_err();
    assert!(
        matches!(
            &error,
            Error::DuplicateId {
                sequence: 3,
                holder: 1,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(sequences_of(&store, &Criteria::any()), [1]);
    assert_eq!(store.last_sequence(), 1);
    let id = store.write(fixture_envelope()).unwrap();
    assert_eq!(store.read_by_id(&id).unwrap().unwrap().append_sequence(), 2);
}

#[test]
fn a_database_without_the_meta_table_starts_from_max_and_deletion_never_rewinds() {
    let fixture = Fixture::new();
    write_reference_database(&fixture.path, &reference_rows());
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    fixture
        .connection()
        .execute("DELETE FROM replay_records", [])
        .unwrap();
    // Deleting rows under an open writer does not make it stale or rewind it.
    let id = store.write(fixture_envelope()).unwrap();
    assert_eq!(store.read_by_id(&id).unwrap().unwrap().append_sequence(), 4);
    let stats = store.stats().unwrap();
    assert_eq!(
        (stats.records, stats.first_sequence, stats.last_sequence),
        (1, Some(4), 4)
    );
}

// ---------------------------------------------------------------------------------------
// Corrupt rows (SqliteChaosTest, SqliteCorruptionHandlingTest)

fn assert_corrupt_at(result: store::Result<impl std::fmt::Debug>, sequence: u64) {
    match result {
        Err(error @ Error::CorruptRecord { .. }) => {
            let Error::CorruptRecord {
                sequence: found, ..
            } = &error
            else {
                unreachable!()
            };
            assert_eq!(*found, sequence, "{error}");
            assert!(
                error
                    .to_string()
                    .contains(&format!("append sequence {sequence}")),
                "{error}"
            );
        }
        other => panic!("expected a corrupt record at {sequence}, got {other:?}"),
    }
}

#[test]
fn corrupt_row_after_valid_rows_fails_clearly_and_repeated_reopen_keeps_failure_explicit() {
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    for _ in 0..3 {
        store.write(fixture_envelope()).unwrap();
    }
    fixture
        .connection()
        .execute(
            "UPDATE replay_records SET payload = '{broken' WHERE append_sequence = 2",
            [],
        )
        .unwrap();
    for attempt in 0..3 {
        let store: Box<dyn ArtifactReader> = if attempt == 1 {
            Box::new(SqliteStore::open_read_only(&fixture.path).unwrap())
        } else {
            Box::new(SqliteStore::open(&fixture.path).unwrap())
        };
        let error = read_all(store.as_ref(), &Criteria::any()).unwrap_err();
        assert!(
            matches!(
                &error,
                Error::CorruptRecord {
                    sequence: 2,
                    source: record::Error::InvalidField {
                        field: "payload",
                        ..
                    }
                }
            ),
            "{error:?}"
        );
        // Reads that do not reach the row still work; reads that do all fail.
        let first = store
            .read_from_cursor(&ReadCursor::start(), 1, &Criteria::any())
            .unwrap();
        assert_eq!(sequences(&first), [1]);
        let after = store
            .read_from_cursor(&ReadCursor::new(2, None), 10, &Criteria::any())
            .unwrap();
        assert_eq!(sequences(&after), [3]);
        assert_corrupt_at(
            store.read_from_cursor(&ReadCursor::new(1, None), 1, &Criteria::any()),
            2,
        );
    }
}

#[test]
fn corrupt_json_columns_fail_clearly_on_read() {
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    let id = store.write(fixture_envelope()).unwrap();
    fixture
        .connection()
        .execute("UPDATE replay_records SET payload = 'not json at all'", [])
        .unwrap();
    assert_corrupt_at(store.read_by_id(&id), 1);
    assert!(store.read_by_id(&RecordId::generate()).unwrap().is_none());
}

#[test]
fn every_kind_of_damaged_row_is_reported_with_its_sequence() {
    let damage = [
        "UPDATE replay_records SET artifact_name = '  '",
        "UPDATE replay_records SET artifact_version = ''",
        "UPDATE replay_records SET checksum = ''",
        "UPDATE replay_records SET id = ' '",
        "UPDATE replay_records SET capture_timestamp = 'tomorrow'",
        "UPDATE replay_records SET stored_at = '2024-13-01T00:00:00.000+00:00'",
        "UPDATE replay_records SET correlation_ids = '\"text\"'",
        "UPDATE replay_records SET runtime_flags = ''",
        "UPDATE replay_records SET tags = '{\"a\":1} trailing'",
        "UPDATE replay_records SET payload = 42",
        "UPDATE replay_records SET payload = X'7B7D'",
        "UPDATE replay_records SET payload = '[' || replace(hex(zeroblob(200)), '00', '[')",
    ];
    for statement in damage {
        let fixture = Fixture::new();
        let mut store = SqliteStore::open(&fixture.path).unwrap();
        let id = store.write(fixture_envelope()).unwrap();
        fixture.connection().execute(statement, []).unwrap();
        assert_corrupt_at(read_all(&store, &Criteria::any()), 1);
        if !statement.contains("SET id") {
            assert_corrupt_at(store.read_by_id(&id), 1);
        }
        // The damage survives reopening, and opening still succeeds.
        drop(store);
        let store = SqliteStore::open(&fixture.path).unwrap();
        assert_corrupt_at(read_all(&store, &Criteria::any()), 1);
    }
}

/// A row whose append sequence is damaged (text, a blob, a fraction, zero, negative) is
/// met by reads from the start, which fail on it naming its rowid, instead of being passed
/// over (a sequence at or below zero sorts before every cursor), and the row check that
/// verification uses names it by rowid and id, once, beside every other row.
#[test]
fn a_row_whose_sequence_is_damaged_is_never_passed_over() {
    use esl_replay::store::RowCheck;
    for value in ["'abc'", "x'00'", "2.5", "0", "-1"] {
        let fixture = Fixture::new();
        let mut store = SqliteStore::open(&fixture.path).unwrap();
        let ids: Vec<RecordId> = (0..3)
            .map(|_| store.write(fixture_envelope()).unwrap())
            .collect();
        drop(store);
        let statement = format!(
            "UPDATE replay_records SET append_sequence = {value} WHERE append_sequence = 2"
        );
        fixture.connection().execute(&statement, []).unwrap();

        let store = SqliteStore::open_read_only(&fixture.path).unwrap();
        // A sequence that is no positive integer cannot name the row: its rowid does.
        match read_all(&store, &Criteria::any()).unwrap_err() {
            Error::CorruptRecord { sequence: 0, .. } => assert_eq!(value, "0"),
            error @ Error::CorruptRow { rowid: 2, .. } => {
                assert_ne!(value, "0");
                assert!(error.to_string().contains("row 2 "), "{error}");
            }
            error => panic!("{value}: {error:?}"),
        }
        let (mut records, mut damaged) = (Vec::new(), Vec::new());
        let rows = store
            .check_rows(&mut |row| match row {
                RowCheck::Record(record) => records.push(record.append_sequence()),
                RowCheck::Damaged { rowid, id, .. } => damaged.push((rowid, id)),
            })
            .unwrap();
        assert_eq!(rows, 3, "{value}");
        assert_eq!(records, [1, 3], "{value}");
        assert_eq!(damaged, [(2, Some(ids[1].as_str().to_owned()))], "{value}");
    }
}

/// The command line on the same damage: `read` fails naming the row whose sequence is
/// unreadable by rowid, with the cause once; `verify` lists it by rowid and id beside a row
/// with a broken payload (with the parser's reason) and exits 1.
#[test]
fn verify_and_read_name_damaged_sqlite_rows_on_the_command_line() {
    use crate::support::cli::{error_output, run};
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    let ids: Vec<RecordId> = (0..3)
        .map(|_| store.write(fixture_envelope()).unwrap())
        .collect();
    drop(store);
    let store_path = fixture.path.to_str().unwrap();
    let connection = fixture.connection();
    connection
        .execute(
            "UPDATE replay_records SET append_sequence = 'abc' WHERE append_sequence = 2",
            [],
        )
        .unwrap();
    // A text sequence sorts after every number: the read meets it last.
    let read = error_output(&run(&["read", "-s", store_path]));
    assert!(
        read.contains("row 2 of the SQLite store is damaged (its append sequence is unreadable)"),
        "{read}"
    );
    let cause = "missing or non-integer field: append_sequence";
    assert_eq!(read.matches(cause).count(), 1, "{read}");

    connection
        .execute(
            "UPDATE replay_records SET payload = '{broken' WHERE append_sequence = 3",
            [],
        )
        .unwrap();
    drop(connection);
    let verify = run(&["verify", "-s", store_path]);
    let text = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{text}");
    assert!(text.contains("checked 3 records: 2 problems"), "{text}");
    let second = format!(
        "row 2 (id {}): record does not decode: {cause}",
        ids[1].as_str()
    );
    assert!(text.contains(&second), "{text}");
    let third = format!("row 3 (id {}): record does not decode: ", ids[2].as_str());
    assert!(text.contains(&third), "{text}");
    // The parser's own words, not only "invalid json".
    assert!(
        text.contains("invalid json: key must be a string"),
        "{text}"
    );
}

#[test]
fn maps_stored_as_lists_or_nested_to_the_limit_read_back() {
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    let mut deep = json!("leaf");
    for _ in 0..record::MAX_JSON_DEPTH - 1 {
        deep = json!([deep]);
    }
    let mut envelope = fixture_envelope();
    envelope.payload = map(json!({"deep": deep}));
    let id = store.write(envelope.clone()).unwrap();
    let record = store.read_by_id(&id).unwrap().unwrap();
    assert_eq!(record.payload(), &envelope.payload);
    fixture
        .connection()
        .execute(
            "UPDATE replay_records SET tags = '[\"a\",\"b\"]', correlation_ids = '{}'",
            [],
        )
        .unwrap();
    let record = store.read_by_id(&id).unwrap().unwrap();
    assert_eq!(record.tags(), &map(json!({"0": "a", "1": "b"})));
    assert!(record.correlation_ids().is_empty());
}

// ---------------------------------------------------------------------------------------
// Read-only handles, options, entry points

#[test]
fn read_only_open_needs_an_existing_replay_database() {
    let fixture = Fixture::new();
    let result = SqliteStore::open_read_only(&fixture.path);
    assert!(matches!(result, Err(Error::Sqlite { .. })), "{result:?}");
    assert!(!fixture.path.exists());
    fixture
        .connection()
        .execute_batch("CREATE TABLE unrelated (x INTEGER)")
        .unwrap();
    let result = SqliteStore::open_read_only(&fixture.path);
    assert!(matches!(result, Err(Error::Metadata { .. })), "{result:?}");
}

#[test]
fn read_only_handle_opens_after_the_writer_closed() {
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    store.write(fixture_envelope()).unwrap();
    drop(store);
    let reader = SqliteStore::open_read_only(&fixture.path).unwrap();
    assert_eq!(sequences_of(&reader, &Criteria::any()), [1]);
    assert_eq!(reader.last_sequence(), 1);
}

/// Syncing what a reader read opens none of SQLite's files anew for each sync: closing
/// such a descriptor would drop the reader's locks, and a writer in another process would
/// then take itself for the last connection on closing and remove the write-ahead log
/// under the reader, which would never see another commit.
#[test]
fn a_reader_that_syncs_keeps_seeing_what_writers_in_other_processes_commit() {
    use crate::support::cli::run_ok;
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    store.write(fixture_envelope()).unwrap();
    drop(store);
    let source = fixture._dir.path().join("source.sqlite");
    let mut other = SqliteStore::open(&source).unwrap();
    other
        .write_batch((0..5).map(|_| fixture_envelope()).collect())
        .unwrap();
    drop(other);
    let exported = fixture._dir.path().join("exported.ndjson");
    let (source, path) = (source.to_str().unwrap(), fixture.path.to_str().unwrap());
    run_ok(&[
        "export",
        "-s",
        source,
        "--after",
        "1",
        "-o",
        exported.to_str().unwrap(),
    ]);
    let lines: Vec<String> = std::fs::read_to_string(&exported)
        .unwrap()
        .lines()
        .map(|line| format!("{line}\n"))
        .collect();

    let reader = SqliteStore::open_read_only(&fixture.path).unwrap();
    for (round, pair) in lines.chunks(2).enumerate() {
        let readable = 1 + 2 * round as u64;
        let expected: Vec<u64> = (1..=readable).collect();
        assert_eq!(sequences_of(&reader, &Criteria::any()), expected);
        assert_eq!(reader.sync_readable().unwrap(), readable);
        // Two more records, from another process that then closes the store.
        let ndjson = fixture._dir.path().join(format!("round-{round}.ndjson"));
        std::fs::write(&ndjson, pair.concat()).unwrap();
        run_ok(&["import", "-s", path, ndjson.to_str().unwrap()]);
    }
    assert_eq!(sequences_of(&reader, &Criteria::any()), [1, 2, 3, 4, 5]);
}

#[test]
fn synchronous_full_option_writes_and_syncs() {
    let fixture = Fixture::new();
    let options = SqliteOptions::new()
        .synchronous(SqliteSync::Full)
        .busy_timeout(std::time::Duration::from_secs(1));
    let mut store = SqliteStore::open_with(&fixture.path, options).unwrap();
    store
        .write_batch((0..10).map(|_| fixture_envelope()).collect())
        .unwrap();
    store.sync().unwrap();
    assert_eq!(store.stats().unwrap().records, 10);
    let mut normal = SqliteStore::open(&fixture.path).unwrap();
    normal.write(fixture_envelope()).unwrap();
    normal.sync().unwrap();
    let id = normal.write(fixture_envelope()).unwrap();
    assert_eq!(
        normal.read_by_id(&id).unwrap().unwrap().append_sequence(),
        12
    );
}

/// A path that names a directory or a FIFO is refused before SQLite opens it: a FIFO
/// would make every read wait for a writer forever.
#[test]
fn a_directory_or_fifo_is_refused_as_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.db");
    crate::support::mkfifo(&fifo);
    let folder = dir.path().join("folder.db");
    std::fs::create_dir(&folder).unwrap();
    for path in [fifo, folder] {
        let opened = crate::support::within_a_minute(move || {
            let read = SqliteStore::open_read_only(&path).map(|_| ());
            let write = SqliteStore::open(&path).map(|_| ());
            (read, write)
        });
        for error in [opened.0.unwrap_err(), opened.1.unwrap_err()] {
            let text = esl_replay::storage::error_chain(&error);
            assert!(text.contains("not a regular file"), "{text}");
        }
    }
}

/// Through a symlink, the bytes counted are those of the target's files, where SQLite keeps
/// the write-ahead log.
#[test]
fn bytes_through_a_symlink_count_the_targets_files() {
    let fixture = Fixture::new();
    let link = fixture._dir.path().join("link.sqlite");
    std::os::unix::fs::symlink(&fixture.path, &link).unwrap();
    let mut store = SqliteStore::open(&link).unwrap();
    store
        .write_batch((0..50).map(|_| fixture_envelope()).collect())
        .unwrap();
    let real = SqliteStore::open_read_only(&fixture.path).unwrap();
    let wal = std::fs::metadata(fixture.path.with_extension("sqlite-wal")).unwrap();
    assert!(wal.len() > 0);
    assert_eq!(store.stats().unwrap().bytes, real.stats().unwrap().bytes);
}

/// A table whose sequences or ids are not declared unique (hand-made, not the reference's)
/// is refused by both opens: reads page by sequence and would pass over a second row of a
/// sequence, or one without any, while verify found nothing wrong.
#[test]
fn a_table_without_the_reference_keys_is_refused() {
    let weakened = [
        (
            "append_sequence INTEGER NOT NULL UNIQUE",
            "append_sequence INTEGER NOT NULL",
        ),
        (
            "append_sequence INTEGER NOT NULL UNIQUE",
            "append_sequence INTEGER UNIQUE",
        ),
        ("id TEXT PRIMARY KEY", "id TEXT"),
    ];
    for (declared, instead) in weakened {
        let fixture = Fixture::new();
        let connection = fixture.connection();
        connection
            .execute_batch(&REFERENCE_TABLE.replace(declared, instead))
            .unwrap();
        insert_reference_row(&connection, &reference_rows()[0]);
        drop(connection);
        let read = SqliteStore::open_read_only(&fixture.path).map(|_| ());
        let write = SqliteStore::open(&fixture.path).map(|_| ());
        for error in [read.unwrap_err(), write.unwrap_err()] {
            assert!(
                matches!(error, Error::Metadata { .. }),
                "{instead}: {error:?}"
            );
            assert!(error.to_string().contains("NOT NULL UNIQUE"), "{error}");
        }
    }
}

#[test]
fn open_creates_missing_parent_directories() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a").join("b").join("replay.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store.write(fixture_envelope()).unwrap();
    assert!(path.is_file());
    assert_eq!(store.path(), path);
}

#[test]
fn entry_points_choose_sqlite_for_sqlite_and_db_paths() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["replay.sqlite", "replay.db"] {
        let path = dir.path().join(name);
        assert_eq!(Backend::for_path(&path), Backend::Sqlite);
        let mut store = store::open(&path, None).unwrap();
        store.write(fixture_envelope()).unwrap();
        assert_eq!(store.stats().unwrap().backend, "sqlite");
        let reader = store::open_read_only(&path, None).unwrap();
        assert_eq!(sequences_of(reader.as_ref(), &Criteria::any()), [1]);
    }
    let path = dir.path().join("explicit");
    let store = store::open(&path, Some(Backend::Sqlite)).unwrap();
    assert_eq!(store.stats().unwrap().backend, "sqlite");
}

/// A visit of more records than one page (a `read` of everything) goes page by page,
/// holding one page of rows: every record once, in order, up to the limit.
#[test]
fn a_visit_larger_than_a_page_sees_every_record_once_in_order() {
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    store
        .write_batch((0..2500).map(|_| fixture_envelope()).collect())
        .unwrap();
    for (limit, expected) in [(usize::MAX, 2500u64), (1500, 1500), (1000, 1000)] {
        let mut seen = Vec::new();
        let visited = store
            .visit_from_cursor(&ReadCursor::start(), limit, &Criteria::any(), &mut |view| {
                seen.push(view.append_sequence());
            })
            .unwrap();
        assert_eq!(visited as u64, expected);
        assert_eq!(seen, (1..=expected).collect::<Vec<_>>());
    }
}

/// A page of a visit also ends after about 8 MiB of rows (rows of megabytes would make 1,000
/// of them gigabytes); the pages still see every record once, in order, filtered.
#[test]
fn a_visit_of_large_rows_sees_every_record_once_in_order() {
    let fixture = Fixture::new();
    let mut store = SqliteStore::open(&fixture.path).unwrap();
    let large = |name| fixture_named(name).with_payload(map(json!({ "raw": "x".repeat(1 << 20) })));
    store
        .write_batch(
            (0..30)
                .map(|n| large(if n % 3 == 0 { "a" } else { "b" }))
                .collect(),
        )
        .unwrap();
    let only_a = criteria(|fields| fields.artifact_name = Some("a".to_owned()));
    for (filter, expected) in [
        (Criteria::any(), (1..=30).collect::<Vec<u64>>()),
        (only_a, (1..=30).step_by(3).collect()),
    ] {
        let mut seen = Vec::new();
        let visited = store
            .visit_from_cursor(&ReadCursor::start(), usize::MAX, &filter, &mut |view| {
                seen.push(view.append_sequence());
            })
            .unwrap();
        assert_eq!(visited, expected.len());
        assert_eq!(seen, expected);
    }
}

/// Runs the binary as a user who cannot write to what `dir` holds once it is read-only
/// (`nobody` when the tests run as root, who writes anywhere, from a copy in `dir`, which
/// `nobody` can run wherever the checkout is).
fn run_as_reader(dir: &Path, args: &[&str]) -> std::process::Output {
    use std::os::unix::process::CommandExt as _;

    use crate::support::process::SpawnSafely as _;
    let mut command = crate::support::cli::command();
    if rustix::process::geteuid().is_root() {
        let copy = dir.join("esl-replay");
        if !copy.exists() {
            std::fs::copy(command.get_program(), &copy).unwrap();
            set_mode(&copy, 0o755);
        }
        command = std::process::Command::new(&copy);
        command.env_clear().uid(65534).gid(65534);
    }
    command.args(args).output_safely().unwrap()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A directory `archive` in a fresh temporary directory, holding a SQLite store of 7
/// records named with characters a URI must escape, and nothing else.
fn archived_store() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    set_mode(dir.path(), 0o755);
    let store_dir = dir.path().join("archive");
    std::fs::create_dir(&store_dir).unwrap();
    let path = store_dir.join("replay?#%.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .write_batch((0..7).map(|_| fixture_envelope()).collect())
        .unwrap();
    drop(store);
    let leftovers: Vec<_> = std::fs::read_dir(&store_dir).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "only the database file: {leftovers:?}");
    (dir, path)
}

/// A store on read-only media (an archive handed to an auditor): its directory cannot hold
/// SQLite's shared-memory file, and reads work all the same.
#[test]
fn a_store_in_a_directory_nobody_may_write_to_is_read() {
    let (dir, path) = archived_store();
    let store_dir = path.parent().unwrap();
    set_mode(&path, 0o444);
    set_mode(store_dir, 0o555);
    let as_reader = |args: &[&str]| {
        let output = run_as_reader(dir.path(), args);
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let store = path.to_str().unwrap();
    let stats = as_reader(&["stats", "-s", store]);
    assert!(
        stats
            .lines()
            .any(|line| line.split_whitespace().eq(["records", "7"])),
        "{stats}"
    );
    assert_eq!(as_reader(&["export", "-s", store]).lines().count(), 7);
    assert_eq!(std::fs::read_dir(store_dir).unwrap().count(), 1);
    set_mode(store_dir, 0o755);
}

/// The same archive with commits still in its write-ahead log (copied without its `-shm`
/// file): reading the database as immutable would hide them, so it is refused.
#[test]
fn a_read_only_store_whose_log_holds_commits_is_refused_not_read_without_them() {
    let (dir, path) = archived_store();
    let store_dir = path.parent().unwrap();
    let copy = store_dir.join("copy.sqlite");
    std::fs::copy(&path, &copy).unwrap();
    // A writer that never closes leaves its commits in the log.
    let mut writer = SqliteStore::open(&copy).unwrap();
    writer
        .write_batch((0..3).map(|_| fixture_envelope()).collect())
        .unwrap();
    let with_suffix = |suffix: &str| {
        let mut name = copy.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let archived = store_dir.join("logged.sqlite");
    std::fs::copy(&copy, &archived).unwrap();
    std::fs::copy(with_suffix("-wal"), store_dir.join("logged.sqlite-wal")).unwrap();
    drop(writer);
    set_mode(store_dir, 0o555);
    let output = run_as_reader(dir.path(), &["stats", "-s", archived.to_str().unwrap()]);
    let error = crate::support::cli::error_output(&output);
    assert!(
        error.contains("readonly") || error.contains("read-only"),
        "{error}"
    );
    set_mode(store_dir, 0o755);
}
