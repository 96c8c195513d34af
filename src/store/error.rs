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
    /// A stored record could not be decoded.
    #[error("stored record at append sequence {sequence} is damaged: {source}")]
    CorruptRecord {
        /// Its append sequence (or log position).
        sequence: u64,
        /// Why it does not decode.
        #[source]
        source: crate::record::Error,
    },
    /// A read asked for zero records.
    #[error("limit must be >= 1")]
    InvalidLimit,
    /// A write on a read-only handle.
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
    /// Another writer advanced the SQLite stream since this handle opened; reopen.
    #[error(
        "failed to persist record at append_sequence {sequence}: another writer advanced the stream; reopen the store"
    )]
    StaleWriter {
        /// The sequence this handle tried to use.
        sequence: u64,
    },
    /// A batch with nothing in it produced no id.
    #[error("empty batch")]
    EmptyBatch,
    /// A store-level metadata file is damaged or of an unknown version.
    #[error("store metadata {path} is invalid: {reason}")]
    Metadata {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An import stopped part-way. The records it committed before the failure stay in the
    /// store: `committed` of them, the last with append sequence `last_committed`.
    #[error("import stopped after committing {committed} records{}", last_committed.map_or_else(String::new, |last| format!(" (through append sequence {last})")))]
    ImportStopped {
        /// Records of this import now in the store.
        committed: u64,
        /// The append sequence of the last of them.
        last_committed: Option<u64>,
        /// Why it stopped.
        #[source]
        source: Box<Error>,
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
