//! The SQLite backend: replay records in the reference package's `replay_records` table.
//!
//! [`SqliteStore`] keeps the reference schema of §9 (decision K8) column for column, with
//! the nine `replay_records_<col>_idx` indexes and the three derived operator-identity
//! columns, so a database written by the reference package opens and reads here, and a
//! database written here has every column the reference reads. On top of it, opening for
//! writing adds (if missing) and backfills:
//!
//! - `capture_us`, the capture instant in microseconds since the Unix epoch (truncated to
//!   the stored millisecond precision), with `replay_records_capture_us_idx`, so time
//!   windows compare instants whatever the offset a capture was written in (C8; the
//!   reference compares text and disagrees with itself);
//! - the one-row table `esl_replay_meta(id, last_sequence)`, the last sequence ever
//!   assigned, so sequences survive deleting every row (C1; the reference restarts at 1). A
//!   reference database without it starts from `MAX(append_sequence)`.
//!
//! A table whose keys are weaker than the reference's (`append_sequence` not `NOT NULL
//! UNIQUE`, `id` not unique) is refused by every open: reads page by sequence, and would
//! pass over a second row of a sequence, or one without any.
//!
//! Rows not written by this backend (no `capture_us` yet) are backfilled once: `capture_us`
//! from the `capture_timestamp` text and each derived column that is NULL, with the record
//! module's identity rules. Rows that cannot be decoded are left as they are; reads that
//! reach them fail.
//!
//! The database runs in WAL mode, `synchronous=NORMAL` unless [`SqliteSync::Full`] is
//! chosen. Each `write_batch` or `append_records` call is one `BEGIN IMMEDIATE`
//! transaction. There is no writer lock: any number of handles may write, but a handle
//! whose view of the stream is stale (another handle appended since) fails with
//! [`Error::StaleWriter`] inside the transaction and consumes no sequence, so writers never
//! leave gaps (the reference reports the unique-constraint failure and then skips a
//! number). The failed handle takes the stream's new end, so its next write follows the
//! other writer's records, as after a reopen.
//!
//! Reads page through `append_sequence > ? AND <criteria> ORDER BY append_sequence LIMIT ?`.
//! Every criterion the schema can answer is pushed into SQL; every returned row is decoded
//! strictly and checked once more with [`Criteria::matches`], so a handle on a database
//! that lacks the added columns (a read-only handle on a reference database) still filters
//! exactly. A row that does not decode fails the read with [`Error::CorruptRecord`] naming
//! its sequence ([`Error::CorruptRow`] naming its `rowid` if the sequence is unreadable);
//! nothing is skipped.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{
    Connection, OpenFlags, OptionalExtension, Row, Transaction, TransactionBehavior, params,
    params_from_iter,
};
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;

use super::{
    ArtifactReader, ArtifactStore, Error, ReadOnly, Result, StoreStats, check_limit, next_sequences,
};
use crate::record::canonical;
use crate::record::{
    self, Criteria, Envelope, JsonMap, MAX_JSON_DEPTH, MapTexts, ReadCursor, Record, RecordFields,
    RecordId, RecordView, identity, is_blank, timestamp,
};
use crate::storage::{Io, StdIo};

/// The error for an insert that failed because a row (stored, or inserted earlier in the
/// same transaction) already has the record's id; `None` for any other failure.
fn duplicate_id(
    transaction: &Transaction<'_>,
    record: &Record,
    source: &rusqlite::Error,
) -> Option<Error> {
    if source.sqlite_error_code() != Some(rusqlite::ErrorCode::ConstraintViolation) {
        return None;
    }
    let holder: i64 = transaction
        .query_row(
            "SELECT append_sequence FROM replay_records WHERE id = ?1",
            [record.id().as_str()],
            |row| row.get(0),
        )
        .ok()?;
    Some(Error::DuplicateId {
        id: record.id().to_string(),
        sequence: record.append_sequence(),
        holder: u64::try_from(holder).ok()?,
    })
}

/// The reference table, column for column (§9). `IF NOT EXISTS` leaves an existing table,
/// possibly of an older reference version, as it is; missing columns are added afterwards.
const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS replay_records (
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

/// The reference's indexed columns; each gets `replay_records_<col>_idx`.
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

/// The derived operator-identity columns (§3), which older reference databases lack.
const DERIVED: [&str; 3] = ["replay_session_id", "pbx_node_slug", "worker_session_id"];

/// Our capture-instant column (C8).
const CAPTURE_US: &str = "capture_us";

/// The high-water mark of assigned sequences (C1).
const CREATE_META: &str = "CREATE TABLE IF NOT EXISTS esl_replay_meta (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    last_sequence INTEGER NOT NULL
)";

/// The columns a record is decoded from, in the order [`decode_row`] reads them, then the
/// `rowid` that names a row whose sequence is unreadable.
const SELECT_COLUMNS: &str = "SELECT id, artifact_version, artifact_name, capture_timestamp, \
    stored_at, append_sequence, connection_generation, session_id, job_uuid, event_name, \
    capture_path, correlation_ids, runtime_flags, payload, checksum, tags, rowid \
    FROM replay_records";
/// The index of `rowid` in [`SELECT_COLUMNS`].
const ROWID_COLUMN: usize = 16;

const INSERT: &str = "INSERT INTO replay_records (id, artifact_version, artifact_name, \
    capture_timestamp, stored_at, append_sequence, connection_generation, session_id, \
    job_uuid, replay_session_id, pbx_node_slug, worker_session_id, event_name, capture_path, \
    correlation_ids, runtime_flags, payload, checksum, tags, capture_us) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
    ?19, ?20)";

/// The highest integer sequence (text or blob values sort above integers and are excluded;
/// the range keeps the query on the `append_sequence` index).
const MAX_SEQUENCE: &str = "SELECT append_sequence, rowid FROM replay_records \
    WHERE append_sequence <= 9223372036854775807 ORDER BY append_sequence DESC LIMIT 1";

const META_SEQUENCE: &str = "SELECT last_sequence FROM esl_replay_meta WHERE id = 1";

const UPSERT_META: &str = "INSERT INTO esl_replay_meta (id, last_sequence) VALUES (1, ?1) \
    ON CONFLICT (id) DO UPDATE SET last_sequence = excluded.last_sequence";

/// Rows examined per backfill step.
const BACKFILL_BATCH: i64 = 1000;

/// Smallest page fetched again after the SQL-side filter let rows through that the exact
/// filter rejected.
const REFILL_PAGE_MIN: usize = 256;

/// Records one page of [`ArtifactReader::visit_from_cursor`] holds, at most.
const VISIT_PAGE: usize = 1000;

/// Bytes of row values after which a page of [`ArtifactReader::visit_from_cursor`] ends
/// early: rows of a few megabytes each would otherwise make a page of 1,000 take gigabytes.
const VISIT_PAGE_BYTES: usize = 8 << 20;

/// Longest pause between two polls of [`ArtifactReader::wait_for_records`].
const WAIT_POLL_MAX: Duration = Duration::from_millis(50);

/// When a commit reaches the disk (SQLite's `synchronous` pragma, in WAL mode).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SqliteSync {
    /// `synchronous=NORMAL`: commits are durable at the next WAL checkpoint or
    /// [`ArtifactStore::sync`]; a power loss may drop the latest commits, never corrupt.
    #[default]
    Normal,
    /// `synchronous=FULL`: every commit is fsynced before it returns.
    Full,
}

impl SqliteSync {
    fn pragma_value(self) -> &'static str {
        match self {
            SqliteSync::Normal => "NORMAL",
            SqliteSync::Full => "FULL",
        }
    }
}

/// How a [`SqliteStore`] opens its database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteOptions {
    /// Commit durability; [`SqliteSync::Normal`] by default.
    pub synchronous: SqliteSync,
    /// How long a statement waits for another connection's lock; 5 s by default.
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: SqliteSync::Normal,
            busy_timeout: Duration::from_secs(5),
        }
    }
}

impl SqliteOptions {
    /// The defaults: `synchronous=NORMAL`, a 5 s busy timeout.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Chooses the commit durability.
    #[must_use]
    pub fn synchronous(mut self, synchronous: SqliteSync) -> Self {
        self.synchronous = synchronous;
        self
    }

    /// Chooses how long to wait for another connection's lock.
    #[must_use]
    pub fn busy_timeout(mut self, busy_timeout: Duration) -> Self {
        self.busy_timeout = busy_timeout;
        self
    }
}

/// Which of the columns this backend adds the open database has; reads push only those
/// criteria into SQL.
#[derive(Clone, Copy, Debug)]
struct Schema {
    capture_us: bool,
    derived: bool,
}

/// An artifact store in a SQLite database file with the reference schema.
#[derive(Debug)]
pub struct SqliteStore {
    path: PathBuf,
    connection: Connection,
    schema: Schema,
    read_only: bool,
    synchronous: SqliteSync,
    /// The last sequence of the stream as this handle knows it; a write expects the
    /// database to agree.
    last_sequence: u64,
    /// Where [`ArtifactReader::sync_readable`] syncs the database's files (a seam for tests).
    io: Arc<dyn Io>,
}

impl SqliteStore {
    /// Opens the database at `path` for writing with the default options, creating the
    /// file, its parent directory and the schema as needed.
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the parent directory cannot be created; [`Error::Sqlite`] if the
    /// database cannot be opened or migrated.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens the database at `path` for writing with `options` (see [`SqliteStore::open`]).
    ///
    /// Switches the database to WAL mode, creates the reference table and indexes if
    /// absent, adds missing derived columns and `capture_us`, backfills rows written
    /// elsewhere and recovers the last sequence, all in one transaction.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    pub fn open_with(path: &Path, options: SqliteOptions) -> Result<Self> {
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            std::fs::create_dir_all(parent).map_err(|source| Error::Io {
                op: "create the directory of",
                path: path.to_path_buf(),
                source,
            })?;
        }
        refuse_irregular(path)?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(path, flags)
            .map_err(sqlite_error(path, "open the database"))?;
        connection
            .busy_timeout(options.busy_timeout)
            .map_err(sqlite_error(path, "set the busy timeout"))?;
        // The journal mode is stored in the file; an in-memory or exotic VFS may refuse WAL
        // and report its own mode, which is harmless.
        connection
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
            .map_err(sqlite_error(path, "switch to WAL mode"))?;
        connection
            .pragma_update(None, "synchronous", options.synchronous.pragma_value())
            .map_err(sqlite_error(path, "set the synchronous mode"))?;
        let mut store = Self {
            path: path.to_path_buf(),
            connection,
            schema: Schema {
                capture_us: true,
                derived: true,
            },
            read_only: false,
            synchronous: options.synchronous,
            last_sequence: 0,
            io: Arc::new(StdIo),
        };
        store.last_sequence = store.migrate()?;
        Ok(store)
    }

    /// Opens an existing database read-only (`SQLITE_OPEN_READ_ONLY`): nothing is created,
    /// migrated or locked for writing, and writers may append meanwhile (C6). Databases the
    /// reference wrote and this backend never migrated read correctly too. A database in a
    /// directory this process cannot write to, with no `-shm` file and no write-ahead log
    /// holding commits beside it, is opened immutable (no writer can change it there).
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] if the file is missing or not a database; [`Error::Metadata`] if it
    /// has no `replay_records` table.
    pub fn open_read_only(path: &Path) -> Result<ReadOnly<Self>> {
        Self::open_reader(path).map(ReadOnly::new)
    }

    /// [`SqliteStore::open_read_only`]'s handle, before it is wrapped.
    fn open_reader(path: &Path) -> Result<Self> {
        refuse_irregular(path)?;
        let (connection, columns) = match Self::connect_reader(path, false) {
            // A WAL database in a directory this process cannot write to (permissions, or
            // a read-only mount) with no `-shm` file: SQLite cannot create the shared-memory
            // file a reader needs, and no writer can have created a log since, so the file
            // cannot change while the directory stays so, and it is read as immutable. A
            // log with commits in it would be ignored: then the error stands.
            Err(rusqlite::Error::SqliteFailure(failure, _))
                if [
                    rusqlite::ffi::SQLITE_READONLY_DIRECTORY,
                    rusqlite::ffi::SQLITE_CANTOPEN,
                ]
                .contains(&failure.extended_code)
                    && frozen_directory(path) =>
            {
                tracing::debug!(path = %path.display(), "read-only directory: the database is opened immutable");
                Self::connect_reader(path, true)
            }
            other => other,
        }
        .map_err(sqlite_error(path, "open the database read-only"))?;
        if columns.is_empty() {
            return Err(Error::Metadata {
                path: path.to_path_buf(),
                reason: "not a replay store: table replay_records is missing".into(),
            });
        }
        check_keys(&connection, path)?;
        let has = |name: &str| columns.iter().any(|column| column == name);
        let schema = Schema {
            capture_us: has(CAPTURE_US),
            derived: DERIVED.iter().all(|column| has(column)),
        };
        let mut store = Self {
            path: path.to_path_buf(),
            connection,
            schema,
            read_only: true,
            synchronous: SqliteSync::Normal,
            last_sequence: 0,
            io: Arc::new(StdIo),
        };
        store.last_sequence = store.stored_last_sequence()?;
        Ok(store)
    }

    /// A read-only connection to `path` with `replay_records`' column names (empty if the
    /// table is missing); with `immutable`, one that assumes nothing changes the file.
    fn connect_reader(path: &Path, immutable: bool) -> rusqlite::Result<(Connection, Vec<String>)> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = if immutable {
            Connection::open_with_flags(
                format!("file:{}?immutable=1", uri_path(path)),
                flags | OpenFlags::SQLITE_OPEN_URI,
            )?
        } else {
            Connection::open_with_flags(path, flags)?
        };
        connection.busy_timeout(SqliteOptions::default().busy_timeout)?;
        let columns = table_columns(&connection)?;
        Ok((connection, columns))
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last sequence this handle has seen assigned: at open, or by its own writes.
    #[must_use]
    pub fn last_sequence(&self) -> u64 {
        self.last_sequence
    }

    /// Creates and upgrades the schema, backfills foreign rows and returns the last
    /// sequence; one immediate transaction.
    fn migrate(&mut self) -> Result<u64> {
        let path = &self.path;
        let error = |context| sqlite_error(path, context);
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(error("begin the schema migration"))?;
        transaction
            .execute_batch(CREATE_TABLE)
            .map_err(error("create table replay_records"))?;
        check_keys(&transaction, path)?;
        let columns = table_columns(&transaction).map_err(error("read the table schema"))?;
        let has = |name: &str| columns.iter().any(|column| column == name);
        for column in DERIVED.iter().filter(|column| !has(column)) {
            tracing::info!(path = %path.display(), column, "adding derived column");
            transaction
                .execute_batch(&format!(
                    "ALTER TABLE replay_records ADD COLUMN {column} TEXT NULL"
                ))
                .map_err(error("add a derived column"))?;
        }
        if !has(CAPTURE_US) {
            tracing::info!(path = %path.display(), "adding column capture_us");
            transaction
                .execute_batch("ALTER TABLE replay_records ADD COLUMN capture_us INTEGER NULL")
                .map_err(error("add column capture_us"))?;
        }
        for column in REFERENCE_INDEXED.iter().chain(&[CAPTURE_US]) {
            transaction
                .execute_batch(&format!(
                    "CREATE INDEX IF NOT EXISTS replay_records_{column}_idx \
                     ON replay_records ({column})"
                ))
                .map_err(error("create an index"))?;
        }
        transaction
            .execute_batch(CREATE_META)
            .map_err(error("create table esl_replay_meta"))?;
        let backfilled = backfill(&transaction).map_err(error("backfill derived columns"))?;
        if backfilled > 0 {
            tracing::info!(path = %path.display(), rows = backfilled, "backfilled rows");
        }
        let last = current_last_sequence(&transaction, path)?;
        transaction
            .execute(UPSERT_META, [sql_sequence(last)])
            .map_err(error("record the last sequence"))?;
        transaction
            .commit()
            .map_err(error("commit the schema migration"))?;
        Ok(last)
    }

    /// The last sequence ever assigned, as the database records it now.
    fn stored_last_sequence(&self) -> Result<u64> {
        let meta_exists = self
            .connection
            .prepare_cached(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'esl_replay_meta'",
            )
            .and_then(|mut statement| statement.exists([]))
            .map_err(self.error("look for table esl_replay_meta"))?;
        let max = max_sequence(&self.connection, &self.path)?;
        if !meta_exists {
            return Ok(max);
        }
        let meta = meta_sequence(&self.connection, &self.path)?;
        Ok(max.max(meta))
    }

    /// Fails on a read-only handle.
    fn check_writable(&self) -> Result<()> {
        if self.read_only {
            Err(Error::ReadOnly {
                path: self.path.clone(),
            })
        } else {
            Ok(())
        }
    }

    /// Inserts records whose sequences follow this handle's last one, in one immediate
    /// transaction that first checks that no other handle advanced the stream.
    fn insert(&mut self, records: &[Record]) -> Result<()> {
        let (Some(first), Some(last)) = (records.first(), records.last()) else {
            return Ok(());
        };
        let path = &self.path;
        let error = |context| sqlite_error(path, context);
        let transaction = self
            .connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(error("begin a write transaction"))?;
        let current = current_last_sequence(&transaction, path)?;
        if current != self.last_sequence {
            // Dropping the transaction rolls it back; nothing was written. The next write
            // follows the stream's end, as a reopened handle's would.
            drop(transaction);
            self.last_sequence = current;
            return Err(Error::StaleWriter {
                sequence: first.append_sequence(),
            });
        }
        {
            let mut statement = transaction
                .prepare_cached(INSERT)
                .map_err(error("prepare the insert"))?;
            for record in records {
                let row = EncodedRow::new(record);
                statement
                    .execute(params![
                        record.id().as_str(),
                        record.artifact_version(),
                        record.artifact_name(),
                        row.capture_timestamp,
                        row.stored_at,
                        sql_sequence(record.append_sequence()),
                        record.connection_generation(),
                        record.session_id(),
                        record.job_uuid(),
                        record.replay_session_id(),
                        record.pbx_node_slug(),
                        record.worker_session_id(),
                        record.event_name(),
                        record.capture_path(),
                        row.correlation_ids,
                        row.runtime_flags,
                        row.payload,
                        record.checksum(),
                        row.tags,
                        capture_micros(record.capture_timestamp()),
                    ])
                    .map_err(|source| match duplicate_id(&transaction, record, &source) {
                        Some(duplicate) => duplicate,
                        None => Error::Sqlite {
                            path: path.to_path_buf(),
                            context: format!(
                                "failed to persist record at append_sequence {}",
                                record.append_sequence()
                            ),
                            source,
                        },
                    })?;
            }
            transaction
                .execute(UPSERT_META, [sql_sequence(last.append_sequence())])
                .map_err(error("record the last sequence"))?;
        }
        transaction
            .commit()
            .map_err(error("commit a write transaction"))?;
        self.last_sequence = last.append_sequence();
        Ok(())
    }

    /// One page of rows after `after`, filtered in SQL as far as the schema allows, decoded.
    ///
    /// Filter columns carry the unary `+`, which keeps SQLite from answering them through
    /// their own indexes: every page then walks the `append_sequence` index from the cursor
    /// and stops after `limit` matches, so a chunked export costs one pass over the stream
    /// instead of a sort of every remaining match per page.
    /// Up to `limit` rows after `after` that the SQL side of `criteria` lets through, ending
    /// early once their values reach `budget` bytes; with whether more rows may follow.
    fn query_page(
        &self,
        after: u64,
        limit: usize,
        criteria: &Criteria,
        budget: usize,
    ) -> Result<(Vec<(Record, usize)>, bool)> {
        let fields = criteria.fields();
        let mut sql = String::from(SELECT_COLUMNS);
        // From the start, every row, so that a row whose sequence is not positive is met
        // (and fails to decode) rather than passed over. (Text and blob values sort after
        // every number, so the last page meets those.)
        let lower = if after == 0 {
            sql.push_str(" WHERE append_sequence >= ?1");
            i64::MIN
        } else {
            sql.push_str(" WHERE append_sequence > ?1");
            sql_sequence(after)
        };
        let mut values = vec![SqlValue::Integer(lower)];
        // Appends ` AND <before>?N<after>` with the next parameter number.
        let mut push = |before: &str, after: &str, value: SqlValue| {
            values.push(value);
            sql.push_str(&format!(" AND {before}?{}{after}", values.len()));
        };
        for (column, wanted) in [
            ("artifact_name", &fields.artifact_name),
            ("job_uuid", &fields.job_uuid),
            ("session_id", &fields.session_id),
            ("connection_generation", &fields.connection_generation),
        ] {
            if let Some(wanted) = wanted {
                push(&format!("+{column} = "), "", SqlValue::Text(wanted.clone()));
            }
        }
        // Rows without `capture_us` were written by another program after this database
        // was migrated: SQL lets them through and the exact filter decides.
        let unmigrated = if self.schema.capture_us {
            " OR +capture_us IS NULL)"
        } else {
            ")"
        };
        if self.schema.derived {
            for (column, wanted) in [
                ("replay_session_id", &fields.replay_session_id),
                ("pbx_node_slug", &fields.pbx_node_slug),
                ("worker_session_id", &fields.worker_session_id),
            ] {
                if let Some(wanted) = wanted {
                    push(
                        &format!("(+{column} = "),
                        unmigrated,
                        SqlValue::Text(wanted.clone()),
                    );
                }
            }
        }
        if self.schema.capture_us {
            if let Some(from) = fields.captured_from {
                push(
                    "(+capture_us >= ",
                    unmigrated,
                    SqlValue::Integer(lower_bound_micros(&from)),
                );
            }
            if let Some(until) = fields.captured_until {
                push(
                    "(+capture_us <= ",
                    unmigrated,
                    SqlValue::Integer(upper_bound_micros(&until)),
                );
            }
        }
        values.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        sql.push_str(&format!(
            " ORDER BY append_sequence LIMIT ?{}",
            values.len()
        ));
        let mut statement = self
            .connection
            .prepare_cached(&sql)
            .map_err(self.error("prepare a read"))?;
        let mut rows = statement
            .query(params_from_iter(values))
            .map_err(self.error("read records"))?;
        let mut records = Vec::new();
        let mut bytes = 0;
        while let Some(row) = rows.next().map_err(self.error("read records"))? {
            let size = row_bytes(row);
            records.push((decode_row(row)?, size));
            bytes += size;
            if bytes >= budget {
                return Ok((records, true));
            }
        }
        let more = records.len() == limit;
        Ok((records, more))
    }

    /// Up to `limit` records after `after` that match `criteria`, ending early once the rows
    /// read reach `budget` bytes.
    fn read_matching(
        &self,
        after: u64,
        limit: usize,
        criteria: &Criteria,
        budget: usize,
    ) -> Result<Page> {
        let mut page = Page {
            records: Vec::new(),
            after,
            more: true,
        };
        let mut bytes = 0;
        let mut page_size = limit;
        while page.more && page.records.len() < limit && bytes < budget {
            let (rows, more) = self.query_page(page.after, page_size, criteria, budget - bytes)?;
            page.more = more;
            for (record, size) in rows {
                if page.records.len() == limit {
                    page.more = true;
                    break;
                }
                page.after = record.append_sequence();
                bytes += size;
                if criteria.matches(&record) {
                    page.records.push(record);
                }
            }
            // SQL let rows through that the exact filter rejected (rows this backend has
            // not migrated, or a database it may not migrate): fetch on.
            page_size = (limit - page.records.len()).max(REFILL_PAGE_MIN);
        }
        Ok(page)
    }

    fn error(&self, context: &'static str) -> impl FnOnce(rusqlite::Error) -> Error + '_ {
        sqlite_error(&self.path, context)
    }

    /// The database's path as SQLite resolved it, which it names its companion files after
    /// (a symlinked path's log is beside the link's target).
    fn resolved_path(&self) -> PathBuf {
        self.connection
            .path()
            .filter(|path| !path.is_empty())
            .map_or_else(|| self.path.clone(), PathBuf::from)
    }

    /// Bytes of the database file and its WAL and shared-memory files.
    fn bytes_on_disk(&self) -> u64 {
        let database = self.resolved_path();
        ["", "-wal", "-shm"]
            .iter()
            .map(|suffix| std::fs::metadata(beside(&database, suffix)).map_or(0, |m| m.len()))
            .sum()
    }
}

impl ArtifactStore for SqliteStore {
    fn write_batch(&mut self, envelopes: Vec<Envelope>) -> Result<Vec<RecordId>> {
        self.check_writable()?;
        if envelopes.is_empty() {
            return Ok(Vec::new());
        }
        let records = build_records(envelopes, self.last_sequence, OffsetDateTime::now_utc())?;
        self.insert(&records)?;
        Ok(records
            .into_iter()
            .map(|record| record.id().clone())
            .collect())
    }

    fn append_records(&mut self, records: &[Record]) -> Result<()> {
        self.check_writable()?;
        let mut last = self.last_sequence;
        for record in records {
            if record.append_sequence() <= last {
                return Err(Error::SequenceNotIncreasing {
                    last,
                    found: record.append_sequence(),
                });
            }
            last = record.append_sequence();
        }
        self.insert(records)
    }

    fn sync(&mut self) -> Result<()> {
        if self.read_only || self.synchronous == SqliteSync::Full {
            return Ok(());
        }
        // Under synchronous=NORMAL a WAL commit is not fsynced. A commit made under FULL
        // fsyncs the WAL file, which makes every earlier commit in it durable too.
        let error = |context| sqlite_error(&self.path, context);
        self.connection
            .pragma_update(None, "synchronous", SqliteSync::Full.pragma_value())
            .map_err(error("raise the synchronous mode"))?;
        let barrier = self
            .connection
            .execute(
                "UPDATE esl_replay_meta SET last_sequence = last_sequence WHERE id = 1",
                [],
            )
            .map_err(error("write the durability barrier"));
        let restore = self
            .connection
            .pragma_update(None, "synchronous", self.synchronous.pragma_value())
            .map_err(error("restore the synchronous mode"));
        barrier?;
        restore
    }
}

impl ArtifactReader for SqliteStore {
    fn read_from_cursor(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
    ) -> Result<Vec<Record>> {
        check_limit(limit)?;
        // The byte-offset hint means nothing to SQLite and is ignored (C5).
        let after = cursor.last_consumed_sequence();
        Ok(self
            .read_matching(after, limit, criteria, usize::MAX)?
            .records)
    }

    /// Reads in pages of at most 1,000 records and about 8 MiB, so that a large `limit` (a
    /// `read` of everything) holds one page of rows in memory, not all of them.
    fn visit_from_cursor(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
        visit: &mut dyn FnMut(&RecordView<'_>),
    ) -> Result<usize> {
        check_limit(limit)?;
        let mut after = cursor.last_consumed_sequence();
        let mut visited = 0;
        while visited < limit {
            let size = (limit - visited).min(VISIT_PAGE);
            let page = self.read_matching(after, size, criteria, VISIT_PAGE_BYTES)?;
            for record in &page.records {
                visit(&record.view(&MapTexts::of(record)));
            }
            visited += page.records.len();
            if !page.more {
                break;
            }
            after = page.after;
        }
        Ok(visited)
    }

    fn read_by_id(&self, id: &RecordId) -> Result<Option<Record>> {
        let mut statement = self
            .connection
            .prepare_cached(&format!("{SELECT_COLUMNS} WHERE id = ?1"))
            .map_err(self.error("prepare a read by id"))?;
        let mut rows = statement
            .query([id.as_str()])
            .map_err(self.error("read a record by id"))?;
        match rows.next().map_err(self.error("read a record by id"))? {
            Some(row) => decode_row(row).map(Some),
            None => Ok(None),
        }
    }

    fn stats(&self) -> Result<StoreStats> {
        let (records, first) = self
            .connection
            .prepare_cached("SELECT COUNT(*), MIN(append_sequence) FROM replay_records")
            .and_then(|mut statement| {
                statement.query_row([], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, Option<i64>>(1)?))
                })
            })
            .map_err(self.error("count records"))?;
        let bytes = self.bytes_on_disk();
        Ok(StoreStats {
            backend: "sqlite",
            records: u64::try_from(records).unwrap_or(0),
            first_sequence: first.and_then(|first| u64::try_from(first).ok()),
            last_sequence: self.stored_last_sequence()?,
            pruned_through: None,
            bytes,
            unpacked_bytes: bytes,
        })
    }

    fn wait_for_records(&self, after: u64, timeout: Duration) -> Result<bool> {
        // A timeout too large for the clock waits without a deadline.
        let deadline = crate::storage::deadline_after(timeout);
        let mut pause = Duration::from_millis(1);
        loop {
            if max_sequence(&self.connection, &self.path)? > after {
                return Ok(true);
            }
            let left = crate::storage::time_left(deadline).unwrap_or(pause);
            if left.is_zero() {
                return Ok(false);
            }
            std::thread::sleep(pause.min(left));
            pause = (pause * 2).min(WAIT_POLL_MAX);
        }
    }

    fn sync_readable(&self) -> Result<u64> {
        // Every row read here is committed, so it is in the write-ahead log, or in the
        // database file if a checkpoint has copied it there. A checkpoint syncs the log
        // before it copies and the database file before the log is reused, so syncing the
        // log (then the database file and the directory, which holds the log's name) makes
        // each of these rows durable, whichever connection committed it. The last sequence
        // ever assigned, not the last row's: rows may have been deleted since, and the
        // sequence is written in the same commit as its rows.
        let last = self.stored_last_sequence()?;
        let database = self.resolved_path();
        let dir = database
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        // Nothing can be written on a read-only mount (where some file systems refuse a
        // sync): what is read there is what is on the device.
        if rustix::fs::statvfs(dir)
            .is_ok_and(|fs| fs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY))
        {
            return Ok(last);
        }
        // The write-ahead log, or the rollback journal of a database not in WAL mode (whose
        // truncation or zeroed header `synchronous=NORMAL` leaves unsynced), then the
        // database file.
        for suffix in ["-wal", "-journal", ""] {
            let path = beside(&database, suffix);
            let file = match sync_handle(&path) {
                Ok(None) if !suffix.is_empty() => continue,
                opened => opened.and_then(|file| file.ok_or(std::io::ErrorKind::NotFound.into())),
            };
            let file = file.map_err(|source| Error::Io {
                op: "open",
                path: path.clone(),
                source,
            })?;
            self.io.sync_data(&file).map_err(|source| Error::Io {
                op: "sync",
                path,
                source,
            })?;
        }
        self.io.sync_dir(dir).map_err(|source| Error::Io {
            op: "sync the directory of",
            path: database.clone(),
            source,
        })?;
        Ok(last)
    }
}

/// The descriptors through which this process syncs SQLite's files, by path. Each is opened
/// once and closed only when its file has no name left: closing any descriptor of a file
/// releases every POSIX lock the process holds on it, SQLite's included, and a writer in
/// another process would then take itself for the last connection and remove the
/// write-ahead log under this process's readers, which would never see another commit.
static SYNC_HANDLES: LazyLock<Mutex<HashMap<PathBuf, Vec<Arc<File>>>>> =
    LazyLock::new(Mutex::default);

/// The descriptor to sync the file now at `path` through; `None` if there is none.
fn sync_handle(path: &Path) -> std::io::Result<Option<Arc<File>>> {
    let now = match std::fs::metadata(path) {
        Ok(metadata) => (metadata.dev(), metadata.ino()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let mut handles = SYNC_HANDLES.lock();
    let held = handles.entry(path.to_path_buf()).or_default();
    // A file without a name cannot be opened again: no lock on it guards anything now.
    held.retain(|file| file.metadata().is_ok_and(|m| m.nlink() > 0));
    let same = |file: &&Arc<File>| file.metadata().is_ok_and(|m| (m.dev(), m.ino()) == now);
    if let Some(file) = held.iter().find(same) {
        return Ok(Some(Arc::clone(file)));
    }
    let file = match File::open(path) {
        Ok(file) => Arc::new(file),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    held.push(Arc::clone(&file));
    Ok(Some(file))
}

/// Refuses a path that names something other than a file (a directory, or a FIFO whose
/// open would wait for a writer forever); a missing file is SQLite's to create or refuse.
/// By `stat`, not by opening it as `storage::bounded::open_regular` does: closing a
/// descriptor of a database drops this process's SQLite locks on it ([`SYNC_HANDLES`]).
fn refuse_irregular(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(metadata) if !metadata.is_file() => Err(Error::Io {
            op: "open the SQLite database",
            path: path.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a regular file (a SQLite store is one database file)",
            ),
        }),
        _ => Ok(()),
    }
}

/// Maps a driver error to [`Error::Sqlite`] with the database path and what was done.
fn sqlite_error<'a>(
    path: &'a Path,
    context: &'static str,
) -> impl FnOnce(rusqlite::Error) -> Error + 'a {
    move |source| Error::Sqlite {
        path: path.to_path_buf(),
        context: context.to_owned(),
        source,
    }
}

/// The file SQLite keeps beside `database` under the name with `suffix` added (`-wal`,
/// `-shm`, `-journal`; `""` is the database itself).
fn beside(database: &Path, suffix: &str) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Whether the database at `path` is alone in a directory this process cannot write to: no
/// `-shm` file, no write-ahead log with anything in it, the directory not writable.
fn frozen_directory(path: &Path) -> bool {
    let wal_empty = match std::fs::metadata(beside(path, "-wal")) {
        Ok(metadata) => metadata.len() == 0,
        Err(error) => error.kind() == std::io::ErrorKind::NotFound,
    };
    let no_shm = std::fs::metadata(beside(path, "-shm"))
        .is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound);
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let unwritable = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_err();
    wal_empty && no_shm && unwritable
}

/// `path` as the path of a `file:` URI: every byte but unreserved ones and `/`
/// percent-encoded, so that `?`, `#` and `%` in a name stay part of it.
fn uri_path(path: &Path) -> String {
    use std::fmt::Write as _;
    use std::os::unix::ffi::OsStrExt as _;
    let mut uri = String::new();
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(char::from(byte));
        } else {
            let _ = write!(uri, "%{byte:02X}");
        }
    }
    uri
}

/// The column names of `replay_records`; empty if the table does not exist.
fn table_columns(connection: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut statement = connection.prepare("PRAGMA table_info(replay_records)")?;
    let names = statement.query_map([], |row| row.get::<_, String>(1))?;
    names.collect()
}

/// Refuses a `replay_records` table whose keys are not unique as the reference schema
/// declares them (`append_sequence INTEGER NOT NULL UNIQUE`, `id TEXT PRIMARY KEY`): reads
/// page by sequence, and would pass over a second row of a sequence, or one without any.
fn check_keys(connection: &Connection, path: &Path) -> Result<()> {
    let keys = unique_keys(connection).map_err(sqlite_error(path, "read the table's keys"))?;
    if keys.sequence_not_null
        && keys.unique.iter().any(|c| c == "append_sequence")
        && keys.unique.iter().any(|c| c == "id")
    {
        return Ok(());
    }
    Err(Error::Metadata {
        path: path.to_path_buf(),
        reason: "table replay_records does not declare append_sequence NOT NULL UNIQUE and id \
                 PRIMARY KEY, as the reference schema does: rows sharing a sequence or without \
                 one could be passed over; copy the rows into a table with that schema"
            .into(),
    })
}

/// The declared keys of `replay_records`.
struct Keys {
    /// Whether `append_sequence` is declared `NOT NULL`.
    sequence_not_null: bool,
    /// The columns with a unique index of their own.
    unique: Vec<String>,
}

fn unique_keys(connection: &Connection) -> rusqlite::Result<Keys> {
    let sequence_not_null = connection
        .prepare("SELECT \"notnull\" FROM pragma_table_info('replay_records') WHERE name = 'append_sequence'")?
        .query_row([], |row| row.get::<_, bool>(0))
        .optional()?
        .unwrap_or(false);
    let mut statement = connection.prepare(
        "SELECT MIN(info.name) FROM pragma_index_list('replay_records') AS list, \
         pragma_index_info(list.name) AS info \
         WHERE list.\"unique\" AND NOT list.partial GROUP BY list.name HAVING COUNT(*) = 1",
    )?;
    let unique = statement
        .query_map([], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Keys {
        sequence_not_null,
        unique,
    })
}

/// A sequence as SQLite stores it; sequences beyond `i64::MAX` (only possible in a cursor)
/// saturate, which no stored sequence exceeds.
fn sql_sequence(sequence: u64) -> i64 {
    i64::try_from(sequence).unwrap_or(i64::MAX)
}

/// The highest append sequence stored, 0 when the table is empty.
fn max_sequence(connection: &Connection, path: &Path) -> Result<u64> {
    let top = connection
        .prepare_cached(MAX_SEQUENCE)
        .and_then(|mut statement| {
            statement
                .query_row([], |row| {
                    Ok((integer(row.get_ref(0)?), row.get::<_, i64>(1)?))
                })
                .optional()
        })
        .map_err(sqlite_error(path, "read the last append sequence"))?;
    match top {
        None => Ok(0),
        Some((Some(sequence), _)) => Ok(u64::try_from(sequence).unwrap_or(0)),
        Some((None, rowid)) => Err(Error::CorruptRow {
            rowid,
            source: record::Error::FieldNotInteger {
                field: "append_sequence",
            },
        }),
    }
}

/// The high-water mark in `esl_replay_meta`, 0 when it holds no row.
fn meta_sequence(connection: &Connection, path: &Path) -> Result<u64> {
    let meta = connection
        .prepare_cached(META_SEQUENCE)
        .and_then(|mut statement| {
            statement
                .query_row([], |row| Ok(integer(row.get_ref(0)?)))
                .optional()
        })
        .map_err(sqlite_error(path, "read the recorded last sequence"))?;
    Ok(meta
        .flatten()
        .and_then(|sequence| u64::try_from(sequence).ok())
        .unwrap_or(0))
}

/// The last sequence ever assigned: the recorded high-water mark or the highest stored
/// sequence, whichever is higher (a reference writer may have appended past the mark).
/// Needs `esl_replay_meta` to exist.
fn current_last_sequence(connection: &Connection, path: &Path) -> Result<u64> {
    Ok(max_sequence(connection, path)?.max(meta_sequence(connection, path)?))
}

/// The integer a column holds, if it holds one.
fn integer(value: ValueRef<'_>) -> Option<i64> {
    match value {
        ValueRef::Integer(value) => Some(value),
        _ => None,
    }
}

/// The capture instant stored in `capture_us`: microseconds since the Unix epoch of the
/// capture time truncated to the milliseconds the text column keeps.
fn capture_micros(capture: &OffsetDateTime) -> i64 {
    let nanos = timestamp::truncate_to_millis(*capture).unix_timestamp_nanos();
    clamp_micros(nanos.div_euclid(1000))
}

/// The smallest `capture_us` at or after `from` (rounds up).
fn lower_bound_micros(from: &OffsetDateTime) -> i64 {
    let nanos = from.unix_timestamp_nanos();
    let micros = nanos.div_euclid(1000) + i128::from(nanos.rem_euclid(1000) != 0);
    clamp_micros(micros)
}

/// The largest `capture_us` at or before `until` (rounds down).
fn upper_bound_micros(until: &OffsetDateTime) -> i64 {
    clamp_micros(until.unix_timestamp_nanos().div_euclid(1000))
}

fn clamp_micros(micros: i128) -> i64 {
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// The text columns of a record as the reference writes them: timestamps in the reference
/// text form (§1.5), maps as compact PHP-style JSON in insertion order (empty map `[]`).
struct EncodedRow {
    capture_timestamp: String,
    stored_at: String,
    correlation_ids: String,
    runtime_flags: String,
    payload: String,
    tags: String,
}

impl EncodedRow {
    fn new(record: &Record) -> Self {
        Self {
            capture_timestamp: timestamp::to_reference_text(record.capture_timestamp()),
            stored_at: timestamp::to_reference_text(record.stored_at()),
            correlation_ids: map_json(record.correlation_ids()),
            runtime_flags: map_json(record.runtime_flags()),
            payload: map_json(record.payload()),
            tags: map_json(record.tags()),
        }
    }
}

/// A record map as compact PHP-style JSON. Record maps are depth-checked when the record
/// is built, so the recursive writer is bounded.
fn map_json(map: &JsonMap) -> String {
    let mut out = String::new();
    canonical::write_record_map(&mut out, map);
    out
}

/// What [`SqliteStore::check_rows`] found in one row.
#[derive(Debug)]
pub enum RowCheck {
    /// The row decodes as a record.
    Record(Box<Record>),
    /// It does not: where it is (SQLite's `rowid`, and its `id` if that reads as text) and
    /// why.
    Damaged {
        /// The row's `rowid`.
        rowid: i64,
        /// Its `id` column, if text.
        id: Option<String>,
        /// What is wrong with it.
        error: record::Error,
    },
}

/// Rows per query of [`SqliteStore::check_rows`].
const CHECK_PAGE: i64 = 1000;

impl SqliteStore {
    /// Hands every row of the table, in `rowid` order, to `visit`, decoded or as damage;
    /// returns how many rows there were. Unlike reads by cursor, which follow append
    /// sequences, this meets a row whose sequence is damaged (text, a fraction, zero or
    /// negative) exactly once, so verification can name it and go on.
    ///
    /// # Errors
    ///
    /// [`Error::Sqlite`] if a query fails.
    pub fn check_rows(&self, visit: &mut dyn FnMut(RowCheck)) -> Result<u64> {
        let mut statement = self
            .connection
            .prepare(&format!(
                "{SELECT_COLUMNS} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
            ))
            .map_err(self.error("prepare a check of every row"))?;
        let (mut after, mut rows_seen) = (i64::MIN, 0u64);
        loop {
            let mut rows = statement
                .query(rusqlite::params![after, CHECK_PAGE])
                .map_err(self.error("read rows"))?;
            let mut in_page = 0;
            while let Some(row) = rows.next().map_err(self.error("read rows"))? {
                let rowid: i64 = row.get(ROWID_COLUMN).map_err(self.error("read a rowid"))?;
                after = rowid;
                in_page += 1;
                visit(match decode_fields(row) {
                    Ok(record) => RowCheck::Record(Box::new(record)),
                    Err(error) => RowCheck::Damaged {
                        rowid,
                        id: optional_text(row, 0),
                        error,
                    },
                });
            }
            rows_seen += in_page;
            if in_page < CHECK_PAGE as u64 {
                return Ok(rows_seen);
            }
        }
    }
}

/// Decodes a row selected with [`SELECT_COLUMNS`]; any failure is
/// [`Error::CorruptRecord`] naming the row's sequence, or [`Error::CorruptRow`] naming its
/// `rowid` if that column is damaged too.
/// Records read from SQLite, and where the next read goes on.
struct Page {
    records: Vec<Record>,
    /// The last sequence read, matching or not.
    after: u64,
    /// Whether rows may follow `after`.
    more: bool,
}

/// The bytes a row's values take, about: what decoding it holds in memory.
fn row_bytes(row: &Row<'_>) -> usize {
    (0..ROWID_COLUMN)
        .map(|column| match row.get_ref(column) {
            Ok(ValueRef::Text(bytes) | ValueRef::Blob(bytes)) => bytes.len(),
            _ => 8,
        })
        .sum()
}

fn decode_row(row: &Row<'_>) -> Result<Record> {
    decode_fields(row).map_err(|source| match sequence(row, 5) {
        Ok(sequence) => Error::CorruptRecord { sequence, source },
        Err(_) => Error::CorruptRow {
            rowid: row.get(ROWID_COLUMN).unwrap_or(0),
            source,
        },
    })
}

fn decode_fields(row: &Row<'_>) -> Result<Record, record::Error> {
    Record::new(RecordFields {
        id: RecordId::new(text(row, 0, "id")?)?,
        artifact_version: text(row, 1, "artifact_version")?.to_owned(),
        artifact_name: text(row, 2, "artifact_name")?.to_owned(),
        capture_timestamp: parse_timestamp(row, 3, "capture_timestamp")?,
        stored_at: parse_timestamp(row, 4, "stored_at")?,
        append_sequence: sequence(row, 5)?,
        connection_generation: optional_text(row, 6),
        session_id: optional_text(row, 7),
        job_uuid: optional_text(row, 8),
        event_name: optional_text(row, 9),
        capture_path: optional_text(row, 10),
        correlation_ids: decode_map("correlation_ids", text(row, 11, "correlation_ids")?)?,
        runtime_flags: decode_map("runtime_flags", text(row, 12, "runtime_flags")?)?,
        payload: decode_map("payload", text(row, 13, "payload")?)?,
        checksum: text(row, 14, "checksum")?.to_owned(),
        tags: decode_map("tags", text(row, 15, "tags")?)?,
    })
}

/// A required text column; anything but valid UTF-8 text is an error naming the column.
fn text<'r>(row: &'r Row<'_>, index: usize, field: &'static str) -> Result<&'r str, record::Error> {
    match row.get_ref(index) {
        Ok(ValueRef::Text(bytes)) => {
            std::str::from_utf8(bytes).map_err(|_| record::Error::FieldNotString { field })
        }
        _ => Err(record::Error::FieldNotString { field }),
    }
}

/// A nullable text column. As for NDJSON, a value that is not text reads as absent.
fn optional_text(row: &Row<'_>, index: usize) -> Option<String> {
    match row.get_ref(index) {
        Ok(ValueRef::Text(bytes)) => std::str::from_utf8(bytes).ok().map(str::to_owned),
        _ => None,
    }
}

fn sequence(row: &Row<'_>, index: usize) -> Result<u64, record::Error> {
    let field = "append_sequence";
    let value = row
        .get_ref(index)
        .ok()
        .and_then(integer)
        .ok_or(record::Error::FieldNotInteger { field })?;
    u64::try_from(value).map_err(|_| record::Error::SequenceOutOfRange {
        sequence: i128::from(value),
    })
}

fn parse_timestamp(
    row: &Row<'_>,
    index: usize,
    field: &'static str,
) -> Result<OffsetDateTime, record::Error> {
    timestamp::parse(text(row, index, field)?).map_err(|source| record::Error::InvalidField {
        field,
        source: Box::new(source),
    })
}

/// Decodes a JSON map column strictly: an object, or a list (PHP's form of an empty map
/// and of maps keyed "0".."n-1"), nested no deeper than [`MAX_JSON_DEPTH`].
fn decode_map(field: &'static str, text: &str) -> Result<JsonMap, record::Error> {
    let invalid = |source| record::Error::InvalidField {
        field,
        source: Box::new(source),
    };
    if record::json_nesting_exceeds(text.as_bytes(), MAX_JSON_DEPTH) {
        return Err(invalid(record::Error::NestingTooDeep {
            max: MAX_JSON_DEPTH,
        }));
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // Safe to lift serde_json's own limit: the depth was bounded above.
    deserializer.disable_recursion_limit();
    let value = Value::deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|source| invalid(record::Error::InvalidJson { source }))?;
    record::php_map(value).map_err(|_| record::Error::FieldNotObject { field })
}

/// What the backfill writes into one row.
struct Backfill {
    rowid: i64,
    capture_us: Option<i64>,
    replay_session_id: Option<String>,
    pbx_node_slug: Option<String>,
    worker_session_id: Option<String>,
}

/// Fills `capture_us`, and each derived column that is NULL, in rows this backend did not
/// write (those without `capture_us`). Returns how many rows were examined. Values that do
/// not decode leave their columns NULL; reads that reach such a row fail.
fn backfill(transaction: &Transaction<'_>) -> rusqlite::Result<u64> {
    let mut select = transaction.prepare(
        "SELECT rowid, capture_timestamp, correlation_ids, runtime_flags FROM replay_records \
         WHERE capture_us IS NULL AND rowid > ?1 ORDER BY rowid LIMIT ?2",
    )?;
    let mut update = transaction.prepare(
        "UPDATE replay_records SET capture_us = ?2, \
         replay_session_id = COALESCE(replay_session_id, ?3), \
         pbx_node_slug = COALESCE(pbx_node_slug, ?4), \
         worker_session_id = COALESCE(worker_session_id, ?5) WHERE rowid = ?1",
    )?;
    let mut after = i64::MIN;
    let mut examined = 0u64;
    loop {
        let batch = select
            .query_map(params![after, BACKFILL_BATCH], |row| {
                Ok(backfill_values(row.get(0)?, row))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for values in &batch {
            update.execute(params![
                values.rowid,
                values.capture_us,
                values.replay_session_id,
                values.pbx_node_slug,
                values.worker_session_id,
            ])?;
        }
        examined += batch.len() as u64;
        match batch.last() {
            Some(last) if batch.len() as i64 == BACKFILL_BATCH => after = last.rowid,
            _ => return Ok(examined),
        }
    }
}

fn backfill_values(rowid: i64, row: &Row<'_>) -> Backfill {
    let capture_us = text(row, 1, "capture_timestamp")
        .ok()
        .and_then(|text| timestamp::parse(text).ok())
        .map(|capture| capture_micros(&capture));
    // As the reference backfill does, blank JSON text counts as an empty map.
    let lenient_map = |index, field| {
        let text = text(row, index, field).ok()?;
        if is_blank(text) {
            Some(JsonMap::new())
        } else {
            decode_map(field, text).ok()
        }
    };
    let maps = lenient_map(2, "correlation_ids").zip(lenient_map(3, "runtime_flags"));
    let derive = |derive: for<'m> fn(&'m JsonMap, &'m JsonMap) -> Option<&'m str>| {
        maps.as_ref()
            .and_then(|(correlation_ids, runtime_flags)| derive(correlation_ids, runtime_flags))
            .map(str::to_owned)
    };
    Backfill {
        rowid,
        capture_us,
        replay_session_id: derive(|correlation_ids, runtime_flags| {
            identity::replay_session_id(correlation_ids, runtime_flags)
        }),
        pbx_node_slug: derive(|_, runtime_flags| identity::pbx_node_slug(runtime_flags)),
        worker_session_id: derive(|_, runtime_flags| identity::worker_session_id(runtime_flags)),
    }
}

/// Builds the records for a batch of envelopes: validates everything first, then assigns
/// ids, `stored_at` and consecutive sequences after `last`.
fn build_records(envelopes: Vec<Envelope>, last: u64, now: OffsetDateTime) -> Result<Vec<Record>> {
    let first = next_sequences(last, envelopes.len())?;
    envelopes
        .into_iter()
        .zip(first..)
        .map(|(envelope, sequence)| {
            Ok(Record::from_envelope(
                envelope,
                RecordId::generate(),
                now,
                sequence,
            )?)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::store::dataset;

    /// Records the files (device, inode) and directories it syncs; fails file syncs when
    /// `fail` is set.
    #[derive(Debug, Default)]
    struct Syncs {
        files: Mutex<Vec<(u64, u64)>>,
        dirs: Mutex<Vec<PathBuf>>,
        fail: bool,
    }

    impl Io for Syncs {
        fn sync_data(&self, file: &File) -> std::io::Result<()> {
            if self.fail {
                return Err(std::io::Error::other("injected sync failure"));
            }
            let metadata = file.metadata()?;
            self.files.lock().push((metadata.dev(), metadata.ino()));
            file.sync_data()
        }

        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            self.dirs.lock().push(dir.to_path_buf());
            File::open(dir)?.sync_all()
        }
    }

    fn file_id(path: &Path) -> (u64, u64) {
        let metadata = std::fs::metadata(path).unwrap();
        (metadata.dev(), metadata.ino())
    }

    /// Commits under `synchronous=NORMAL` are not synced until a WAL checkpoint; a reader
    /// that must not run ahead of the disk syncs the write-ahead log itself, then the
    /// database file and the directory, and is bounded by the rows it saw before.
    #[test]
    fn a_reader_syncs_the_write_ahead_log_of_the_rows_it_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let mut writer = SqliteStore::open(&path).unwrap();
        writer
            .write_batch((0..5).map(dataset::envelope).collect())
            .unwrap();
        let mut reader = SqliteStore::open_reader(&path).unwrap();
        let syncs = Arc::new(Syncs::default());
        reader.io = syncs.clone();
        assert_eq!(reader.sync_readable().unwrap(), 5);
        let wal = dir.path().join("store.sqlite-wal");
        assert_eq!(*syncs.files.lock(), [file_id(&wal), file_id(&path)]);
        assert_eq!(*syncs.dirs.lock(), [dir.path().to_path_buf()]);

        reader.io = Arc::new(Syncs {
            fail: true,
            ..Syncs::default()
        });
        let error = reader.sync_readable().unwrap_err();
        assert!(
            matches!(&error, Error::Io { op: "sync", path, .. } if *path == wal),
            "{error:?}"
        );
    }

    /// A page of a visit ends once its rows reach the byte budget, and says more follow.
    #[test]
    fn a_page_of_large_rows_ends_at_the_byte_budget() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("store.sqlite")).unwrap();
        let large = |n| {
            let mut payload = JsonMap::new();
            payload.insert("raw".into(), Value::String("x".repeat(1 << 20)));
            dataset::envelope(n).with_payload(payload)
        };
        store.write_batch((0..20).map(large).collect()).unwrap();
        let page = store
            .read_matching(0, VISIT_PAGE, &Criteria::any(), VISIT_PAGE_BYTES)
            .unwrap();
        assert_eq!(page.records.len(), VISIT_PAGE_BYTES >> 20);
        assert_eq!(page.after, page.records.len() as u64);
        assert!(page.more);
        let rest = store
            .read_matching(page.after, VISIT_PAGE, &Criteria::any(), usize::MAX)
            .unwrap();
        assert_eq!(rest.records.len(), 20 - page.records.len());
        assert!(!rest.more);
    }

    #[test]
    fn capture_micros_keep_the_stored_milliseconds() {
        assert_eq!(
            capture_micros(&datetime!(2024-01-15 10:00:00.123999 UTC)),
            1_705_312_800_123_000
        );
        assert_eq!(
            capture_micros(&datetime!(2024-01-15 12:00:00.123 +02:00)),
            1_705_312_800_123_000
        );
        assert_eq!(
            capture_micros(&datetime!(1969-12-31 23:59:59.9995 UTC)),
            -1_000
        );
    }

    #[test]
    fn bounds_round_towards_the_inside_of_the_window() {
        let instant = datetime!(2024-01-15 10:00:00.000001 UTC);
        assert_eq!(lower_bound_micros(&instant), 1_705_312_800_000_001);
        assert_eq!(upper_bound_micros(&instant), 1_705_312_800_000_001);
        let between = datetime!(2024-01-15 10:00:00.0000015 UTC);
        assert_eq!(lower_bound_micros(&between), 1_705_312_800_000_002);
        assert_eq!(upper_bound_micros(&between), 1_705_312_800_000_001);
        let before_epoch = datetime!(1969-12-31 23:59:59.9999995 UTC);
        assert_eq!(lower_bound_micros(&before_epoch), 0);
        assert_eq!(upper_bound_micros(&before_epoch), -1);
    }

    #[test]
    fn nesting_check_ignores_brackets_in_strings() {
        let deep = "[".repeat(MAX_JSON_DEPTH);
        assert!(!record::json_nesting_exceeds(
            deep.as_bytes(),
            MAX_JSON_DEPTH
        ));
        assert!(record::json_nesting_exceeds(
            format!("[{deep}").as_bytes(),
            MAX_JSON_DEPTH
        ));
        let quoted = format!(r#"{{"k":"{deep}\"{deep}"}}"#);
        assert!(!record::json_nesting_exceeds(
            quoted.as_bytes(),
            MAX_JSON_DEPTH
        ));
    }

    #[test]
    fn map_columns_decode_objects_and_lists_only() {
        assert_eq!(decode_map("tags", "[]").unwrap(), JsonMap::new());
        assert_eq!(decode_map("tags", "{}").unwrap(), JsonMap::new());
        let list = decode_map("tags", r#"["a",{"b":[]}]"#).unwrap();
        assert_eq!(list.keys().collect::<Vec<_>>(), ["0", "1"]);
        assert!(matches!(
            decode_map("tags", r#""x""#),
            Err(record::Error::FieldNotObject { field: "tags" })
        ));
        assert!(matches!(
            decode_map("payload", "{} {}"),
            Err(record::Error::InvalidField {
                field: "payload",
                ..
            })
        ));
    }
}
