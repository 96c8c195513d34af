//! The artifact store's error type.

use std::path::PathBuf;

/// Errors of the artifact store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input is not a valid record (nothing was written, no sequence consumed).
    #[error(transparent)]
    Record(#[from] crate::record::Error),
    /// The segment log failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// SQLite failed.
    #[cfg(feature = "sqlite")]
    #[error("sqlite store {path}: {context}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The path names a SQLite store, and this build has no `sqlite` feature.
    #[error(
        "store {path} is a SQLite database, and this build of esl-replay has no SQLite support (enable the `sqlite` feature, or use a segment-log store directory)"
    )]
    SqliteDisabled {
        /// The database file.
        path: PathBuf,
    },
    /// A stored record could not be decoded.
    #[error("stored record at append sequence {sequence} is damaged")]
    CorruptRecord {
        /// Its append sequence (or log position).
        sequence: u64,
        /// Why it does not decode.
        #[source]
        source: crate::record::Error,
    },
    /// A SQLite row could not be decoded, and its append sequence cannot be read either.
    #[cfg(feature = "sqlite")]
    #[error("row {rowid} of the SQLite store is damaged (its append sequence is unreadable)")]
    CorruptRow {
        /// The row's SQLite `rowid`.
        rowid: i64,
        /// Why it does not decode.
        #[source]
        source: crate::record::Error,
    },
    /// A live tail's next records were pruned before it read them.
    #[error(
        "records {} to {pruned_through} were pruned before this reader read them (it had read up to {after}); resume after {pruned_through} to go on from the first record kept",
        after + 1
    )]
    PrunedUnread {
        /// The last sequence the reader had read.
        after: u64,
        /// The last sequence retention removed.
        pruned_through: u64,
    },
    /// A read asked for zero records.
    #[error("limit must be >= 1")]
    InvalidLimit,
    /// A write reached a handle opened without a writer. The public API cannot make one:
    /// read-only handles are [`super::ReadOnly`], which has no way to write.
    #[error("store {path} is open read-only")]
    ReadOnly {
        /// The store.
        path: PathBuf,
    },
    /// Imported records must have strictly increasing sequences above the store's last.
    #[error("append sequence {found} does not follow {last} (sequences must strictly increase)")]
    SequenceNotIncreasing {
        /// The store's last sequence.
        last: u64,
        /// The sequence offered.
        found: u64,
    },
    /// A record is larger than the backend can store in one piece (the segment log's
    /// `max_payload_bytes`); nothing of its batch was written.
    #[error(
        "the record with append sequence {sequence} takes {bytes} bytes stored, more than the store's limit of {max} bytes"
    )]
    RecordTooLarge {
        /// The record's append sequence.
        sequence: u64,
        /// Its stored size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// The records' append sequences jump too often: the sequence map would need more runs
    /// (one per jump) than a store can read back ([STORE-02]); nothing of the batch was
    /// written.
    #[error(
        "these records' append sequences would give the store's sequence map {runs} runs (one for each jump in the sequences), more than the {max} a store can read; import records whose sequences follow each other, or into several stores"
    )]
    TooManyRuns {
        /// The runs the map would hold.
        runs: usize,
        /// The most a store can read.
        max: usize,
    },
    /// The next records would need append sequences beyond the largest one a record can
    /// hold (`i64::MAX`, the reference's and SQLite's limit); nothing was written. This is
    /// permanent for the store: retrying cannot succeed.
    #[error(
        "the store's sequences are exhausted: its last append sequence is {last}, and {count} more records would pass the largest sequence a record can hold ({max}); nothing was written; capture into a new store",
        max = super::MAX_SEQUENCE
    )]
    SequencesExhausted {
        /// The store's last append sequence.
        last: u64,
        /// How many records were to be appended.
        count: u64,
    },
    /// Another writer advanced the SQLite stream since this handle last wrote or read its
    /// end; nothing was written, and the handle now follows the stream's new end.
    #[error(
        "failed to persist record at append_sequence {sequence}: another writer advanced the stream; nothing was written, and the next write follows the other writer's records"
    )]
    StaleWriter {
        /// The sequence this handle tried to use.
        sequence: u64,
    },
    /// A record offered for appending has the id of a stored record, or of an earlier record
    /// of its batch; nothing of the batch was written. Ids are unique, so that a lookup by
    /// id finds the one record that has it.
    #[error(
        "the record with append sequence {sequence} has id {id}, which the record with append sequence {holder} already has; ids are unique, and nothing of the batch was written"
    )]
    DuplicateId {
        /// The duplicated id.
        id: String,
        /// The append sequence of the record offered.
        sequence: u64,
        /// The append sequence of the record that has the id (stored, or earlier in the
        /// batch).
        holder: u64,
    },
    /// A batch with nothing in it produced no id.
    #[error("empty batch")]
    EmptyBatch,
    /// The path given as a store's is something else (a segment log, say).
    #[error("{path} is not a store: {reason}")]
    NotAStore {
        /// The path.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// A store-level metadata file is damaged or of an unknown version.
    #[error("store metadata {path} is invalid: {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An I/O error outside the log engine.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
}
