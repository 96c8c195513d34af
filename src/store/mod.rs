//! The artifact store: replay records on a durable backend behind one contract.
//!
//! [`ArtifactStore`] is the contract (reference semantics §2-3, decisions K4, C1, C5, C6,
//! C8, C10); its reading half is [`ArtifactReader`], all that a [`ReadOnly`] handle has.
//! Two backends implement it: [`LogStore`] on the segment log (the product) and
//! `SqliteStore` (feature `sqlite`) on SQLite with the reference schema (for migration and
//! side-by-side benchmarks). One contract test suite runs unchanged against both.
//!
//! [`import`] and [`export`] exchange reference NDJSON with the reference package (K3, C4,
//! C10); [`Tail`] follows a store as it grows. [`dataset`] is a deterministic dataset for
//! benchmarks and tests, and [`meta`] the codec of a log store's `store.meta` file.
//!
//! Sequences are assigned by the store: a write builds and validates the whole record before
//! it consumes a sequence, so invalid input never leaves a gap.

pub mod dataset;
mod encode;
mod error;
mod id_filter;
mod ids;
mod interchange;
mod log_store;
pub mod meta;
mod read_only;

/// The codec of the id index files beside a log store's segments (`format/store.md`
/// [STORE-07]), over bytes and paths: for the fuzz targets. The store reads and writes these
/// files itself.
#[doc(hidden)]
pub mod id_files {
    pub use super::ids::{decode_pairs, encode_pairs, probe_pairs};
}
#[cfg(feature = "sqlite")]
mod sqlite;
mod tail;

use std::path::Path;
use std::time::Duration;

use crate::record::{
    Criteria, EncodedRecord, Envelope, MapTexts, ReadCursor, Record, RecordId, RecordView,
};

pub use error::Error;
pub use ids::Summary;
pub use interchange::{BadLine, ImportError, ImportOptions, ImportReport, export, import};
pub use log_store::LogStore;
pub use read_only::ReadOnly;
#[cfg(feature = "sqlite")]
pub use sqlite::{RowCheck, SqliteOptions, SqliteStore, SqliteSync};
pub use tail::Tail;

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Summary figures of a store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Which backend holds the records (`"log"` or `"sqlite"`).
    pub backend: &'static str,
    /// Records currently readable.
    pub records: u64,
    /// The append sequence of the first readable record, if any.
    pub first_sequence: Option<u64>,
    /// The last append sequence ever assigned (0 for a new store); survives pruning (C1).
    pub last_sequence: u64,
    /// The append sequence of the last record pruned away (0 if none was), so that a
    /// consumer whose next sequence is at or below it lost records it never read, and one
    /// above it lost none, whatever gaps imports left in the sequences. `None` when the
    /// backend cannot tell (SQLite, whose rows the reference's own retention may delete).
    pub pruned_through: Option<u64>,
    /// Bytes the backend holds: for the log, each segment's frames (not the zero-filled
    /// space preallocated past them) plus its indexes; for SQLite, the database files.
    pub bytes: u64,
    /// `bytes` as they would be uncompressed: for the log, with each packed segment counted
    /// at its size before packing (format/segment.md [SEG-09]); for SQLite, `bytes`.
    pub unpacked_bytes: u64,
}

/// Reading a store: what every handle can do, a read-only one ([`ReadOnly`]) included.
pub trait ArtifactReader: Send {
    /// Up to `limit` records after the cursor's last consumed sequence that match
    /// `criteria`, in append order (§2.2). A byte-offset hint in the cursor is advisory and
    /// can never hide a record (C5).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidLimit`] when `limit` is 0; damaged stored data, naming where.
    fn read_from_cursor(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
    ) -> Result<Vec<Record>>;

    /// Calls `visit` with up to `limit` records after the cursor's last consumed sequence
    /// that match `criteria`, in append order, as borrowed views (the same records
    /// [`ArtifactReader::read_from_cursor`] returns); returns how many it visited. The segment
    /// log views each record where it is stored, so nothing is copied or parsed; a backend
    /// without stored views lends views of records it read.
    ///
    /// # Errors
    ///
    /// As [`ArtifactReader::read_from_cursor`].
    fn visit_from_cursor(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
        visit: &mut dyn FnMut(&RecordView<'_>),
    ) -> Result<usize> {
        let records = self.read_from_cursor(cursor, limit, criteria)?;
        for record in &records {
            visit(&record.view(&MapTexts::of(record)));
        }
        Ok(records.len())
    }

    /// The record with this id, found without scanning the store (§2.3).
    ///
    /// # Errors
    ///
    /// Damaged stored data; backend errors.
    fn read_by_id(&self, id: &RecordId) -> Result<Option<Record>>;

    /// A cursor at the start of the stream (§2.4).
    fn open_cursor(&self) -> ReadCursor {
        ReadCursor::start()
    }

    /// Figures about the store.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn stats(&self) -> Result<StoreStats>;

    /// What the readable records add up to: counts per artifact and event name, their
    /// bytes and capture-time range. The segment log reads each sealed segment's summary,
    /// written when it was sealed, and only the newest records of the active segment; this
    /// default reads every record.
    ///
    /// # Errors
    ///
    /// As [`ArtifactReader::read_from_cursor`].
    fn summary(&self) -> Result<Summary> {
        let mut summary = Summary::default();
        let mut cursor = ReadCursor::start();
        loop {
            let mut last = None;
            self.visit_from_cursor(&cursor, 1000, &Criteria::any(), &mut |record| {
                summary.add_view(record);
                last = Some(record.append_sequence());
            })?;
            let Some(last) = last else {
                return Ok(summary);
            };
            cursor = cursor.advance(last, None)?;
        }
    }

    /// Blocks until a record with an append sequence above `after` exists or `timeout`
    /// passes; returns whether one exists. The basis of live tail.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn wait_for_records(&self, after: u64, timeout: Duration) -> Result<bool>;

    /// Makes every record this handle can read durable and returns the append sequence
    /// through which every record is (0 if there is none): the bound for a consumer that
    /// must not deliver or checkpoint past a record a power loss could take back. The
    /// segment log syncs what its writer has not ([`Reader::sync`](crate::storage::Reader::sync));
    /// SQLite syncs its write-ahead log, which under `synchronous=NORMAL` a commit leaves
    /// for the next checkpoint to sync.
    ///
    /// # Errors
    ///
    /// Backend errors, a failed sync among them.
    fn sync_readable(&self) -> Result<u64>;
}

/// The contract every artifact store backend keeps: reading ([`ArtifactReader`]) and
/// writing. Only a handle opened for writing implements it; a read-only handle has no way
/// to write, so a write through one does not compile.
pub trait ArtifactStore: ArtifactReader {
    /// Stores one captured artifact and returns its new id (§2.5). The store assigns the id
    /// (a UUIDv4), `stored_at` (now, UTC), the next append sequence and the checksum.
    ///
    /// # Errors
    ///
    /// Invalid input ([`Error::Record`]) before any sequence is consumed; backend errors.
    fn write(&mut self, envelope: Envelope) -> Result<RecordId> {
        let mut ids = self.write_batch(vec![envelope])?;
        ids.pop().ok_or(Error::EmptyBatch)
    }

    /// Stores artifacts in order, in one backend transaction or batch; all-or-nothing for
    /// validation (every envelope is validated before anything is written).
    ///
    /// # Errors
    ///
    /// As [`ArtifactStore::write`].
    fn write_batch(&mut self, envelopes: Vec<Envelope>) -> Result<Vec<RecordId>>;

    /// Appends complete records as they are (import): ids, sequences, `stored_at`, checksums
    /// and tags are kept. Sequences must be strictly increasing and above the last one, and
    /// ids unique: a record whose id a stored record (or an earlier one of the batch) has is
    /// refused, so that an import can never shadow a stored record's id.
    ///
    /// # Errors
    ///
    /// [`Error::SequenceNotIncreasing`] naming the offending sequence; [`Error::DuplicateId`];
    /// backend errors. Nothing of the batch is written.
    fn append_records(&mut self, records: &[Record]) -> Result<()>;

    /// The largest encoded record ([`EncodedRecord::as_bytes`]) this store accepts, if it
    /// has a limit: a writer that must not lose a batch to one record (capture) checks it
    /// first. The default has none.
    fn max_record_bytes(&self) -> Option<u64> {
        None
    }

    /// Appends records already encoded ([`EncodedRecord`]), as [`ArtifactStore::append_records`]
    /// does, for a writer that generates their ids ([`crate::record::RecordId::generate`], as
    /// capture does): the segment log stores their bytes as they are and does not look for
    /// the ids among the stored records (SQLite still refuses a duplicate). Imports of
    /// records from elsewhere go through [`ArtifactStore::append_records`]. The default builds
    /// each record and appends those.
    ///
    /// # Errors
    ///
    /// As [`ArtifactStore::append_records`]; [`Error::CorruptRecord`] if an encoded record
    /// does not hold a valid record.
    fn append_encoded(&mut self, records: &[EncodedRecord]) -> Result<()> {
        let records = records
            .iter()
            .map(|encoded| {
                encoded
                    .view()
                    .and_then(|view| view.to_record())
                    .map_err(|source| Error::CorruptRecord {
                        sequence: encoded.append_sequence(),
                        source,
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        self.append_records(&records)
    }

    /// What to wait for until everything appended so far is durable, for code that
    /// measures durability on another thread (capture's T15 latency). `None` when appends
    /// are as durable as they will be once they return (SQLite commits, or a log that syncs
    /// only when asked).
    fn durable_mark(&self) -> Option<DurableMark> {
        None
    }

    /// Makes every stored record durable.
    ///
    /// # Errors
    ///
    /// Backend errors.
    fn sync(&mut self) -> Result<()>;
}

/// The last record a segment-log store had written when the mark was taken, and the
/// log's durability handle ([`ArtifactStore::durable_mark`]).
#[derive(Clone, Debug)]
pub struct DurableMark {
    durability: crate::storage::Durability,
    seq: crate::storage::Seq,
}

impl DurableMark {
    pub(crate) fn new(durability: crate::storage::Durability, seq: crate::storage::Seq) -> Self {
        DurableMark { durability, seq }
    }

    /// Blocks until the marked record is durable (the group commit that covers it returned).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if a sync failed first (the log is then poisoned).
    pub fn wait(&self) -> Result<()> {
        Ok(self.durability.wait(self.seq)?)
    }
}

/// Which backend a path selects: a path ending in `.sqlite` or `.db` is a SQLite database
/// file; anything else is a segment-log store directory. Opening a SQLite store needs the
/// `sqlite` feature; without it [`open`] and [`open_read_only`] refuse one with
/// [`Error::SqliteDisabled`] rather than create a log directory in its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// The segment log.
    Log,
    /// SQLite with the reference schema.
    Sqlite,
}

impl Backend {
    /// The backend a path selects.
    #[must_use]
    pub fn for_path(path: &Path) -> Backend {
        match path.extension().and_then(|e| e.to_str()) {
            Some("sqlite" | "db") => Backend::Sqlite,
            _ => Backend::Log,
        }
    }
}

/// Opens the store at `path` for writing (creating it if needed), choosing the backend by
/// the path ([`Backend::for_path`]) unless one is given.
///
/// # Errors
///
/// Backend errors, including [`Error::Storage`] when another writer holds a log store.
pub fn open(path: &Path, backend: Option<Backend>) -> Result<Box<dyn ArtifactStore>> {
    Ok(match backend.unwrap_or_else(|| Backend::for_path(path)) {
        Backend::Log => Box::new(LogStore::open(path)?),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => Box::new(SqliteStore::open(path)?),
        #[cfg(not(feature = "sqlite"))]
        Backend::Sqlite => {
            return Err(Error::SqliteDisabled {
                path: path.to_owned(),
            });
        }
    })
}

/// Opens the store at `path` read-only: no writer lock is taken, and a writer may be
/// appending in this or another process (C6).
///
/// # Errors
///
/// Backend errors; a missing store.
pub fn open_read_only(path: &Path, backend: Option<Backend>) -> Result<Box<dyn ArtifactReader>> {
    Ok(match backend.unwrap_or_else(|| Backend::for_path(path)) {
        Backend::Log => Box::new(LogStore::open_read_only(path)?),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => Box::new(SqliteStore::open_read_only(path)?),
        #[cfg(not(feature = "sqlite"))]
        Backend::Sqlite => {
            return Err(Error::SqliteDisabled {
                path: path.to_owned(),
            });
        }
    })
}

/// The largest append sequence a record can hold (the reference's and SQLite's `i64::MAX`).
pub const MAX_SEQUENCE: u64 = i64::MAX as u64;

/// The first of `count` consecutive sequences after `last`, or
/// [`Error::SequencesExhausted`] when the last of them would pass [`MAX_SEQUENCE`].
///
/// # Errors
///
/// [`Error::SequencesExhausted`].
pub fn next_sequences(last: u64, count: usize) -> Result<u64> {
    let count = count as u64;
    match last.checked_add(count) {
        Some(end) if end <= MAX_SEQUENCE => Ok(last + 1),
        _ => Err(Error::SequencesExhausted { last, count }),
    }
}

/// Checks the `limit` argument of a read (§2.2).
pub(crate) fn check_limit(limit: usize) -> Result<()> {
    if limit == 0 {
        Err(Error::InvalidLimit)
    } else {
        Ok(())
    }
}
