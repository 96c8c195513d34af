//! The replay layer's error type.

use std::path::PathBuf;

/// An error of the replay layer: invalid configuration or DTO values (the reference's
/// `InvalidArgumentException`s), store and checkpoint failures, and snapshot I/O.
///
/// Handler and injector failures are not errors of `execute`: they end the batch with a
/// failed [`ExecutionResult`](super::ExecutionResult) carrying the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Re-injection was enabled without naming the artifacts it may re-inject.
    #[error(
        "reinjection_artifact_allowlist must name at least one artifact when reinjection is enabled"
    )]
    AllowlistRequired,
    /// An injection guard was built from an empty allowlist.
    #[error("injection guard allowlist must not be empty")]
    EmptyAllowlist,
    /// An allowlist entry is blank.
    #[error(
        "reinjection_artifact_allowlist entries must be non-blank strings (entry {index} is blank)"
    )]
    BlankAllowlistEntry {
        /// Its position in the allowlist.
        index: usize,
    },
    /// A batch limit of zero.
    #[error("batch_limit must be >= 1")]
    InvalidBatchLimit,
    /// Re-injection is enabled but no injector was supplied.
    #[error("reinjection is enabled but no injector was supplied")]
    InjectorRequired,
    /// A text value that must be non-blank is blank.
    #[error("{field} must not be blank")]
    BlankField {
        /// Which value (`action`, `artifact_name`, handler registry key, ...).
        field: &'static str,
    },
    /// A count that must not be negative is negative.
    #[error("{field} must be >= 0 (got {value})")]
    NegativeCount {
        /// `record_count`, `processed_count` or `skipped_count`.
        field: &'static str,
        /// The value given.
        value: i64,
    },
    /// A plan's record count differs from the number of records it carries.
    #[error("record_count {count} does not match the {records} records of the plan")]
    RecordCountMismatch {
        /// The count given.
        count: i64,
        /// The records carried.
        records: usize,
    },
    /// Two handlers were registered for one artifact name.
    #[error("a handler is already registered for artifact name `{artifact_name}`")]
    DuplicateHandler {
        /// The artifact name.
        artifact_name: String,
    },
    /// A range was asked to stop before its starting cursor.
    #[error("until sequence {until} is before the starting cursor {from}")]
    UntilBeforeStart {
        /// The cursor's last consumed sequence.
        from: u64,
        /// The requested last sequence.
        until: u64,
    },
    /// Records the range needed were pruned while it ran (by a prune that did not honour
    /// this consumer); going on would skip them unseen.
    #[error(
        "records were pruned while the replay ran: it needs sequence {required_next} next, but the first retained sequence is {first_retained}; the records in between are gone (start again with --after {first_retained} minus one to go on without them)"
    )]
    PrunedWhileReplaying {
        /// The next sequence the replay needed.
        required_next: u64,
        /// The first sequence the store retains (or assigns next, when it holds none).
        first_retained: u64,
    },
    /// A fold option is out of range.
    #[error("fold option {option} must be >= 1")]
    InvalidFoldOption {
        /// `read_batch`.
        option: &'static str,
    },
    /// Reading the artifact store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A cursor could not be advanced (a store returned records out of order).
    #[error(transparent)]
    Record(#[from] crate::record::Error),
    /// Loading or saving a checkpoint failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::Error),
    /// A snapshot directory or file could not be read, written or removed.
    #[error("cannot {op} snapshot {path}")]
    SnapshotIo {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A snapshot file exists but does not decode, or belongs to another stream.
    #[error("snapshot {path} is damaged: {reason}")]
    CorruptSnapshot {
        /// The file.
        path: PathBuf,
        /// Why it is rejected.
        reason: String,
    },
    /// A state could not be encoded for a snapshot.
    #[error("cannot encode the state of stream `{stream}` at sequence {sequence}: {reason}")]
    EncodeSnapshot {
        /// The stream key.
        stream: String,
        /// The sequence of the snapshot.
        sequence: u64,
        /// The encoder's message.
        reason: String,
    },
}
