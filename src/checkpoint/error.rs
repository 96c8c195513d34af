//! How can building, saving, loading or checking a checkpoint fail?
//!
//! Every failure of the checkpoint layer is one variant of [`Error`]; a damaged checkpoint
//! file is [`Error::Corrupt`] with the file's path and a structured [`CorruptKind`], so
//! callers can act without matching message text (decision C10). Messages are lowercase,
//! name the key or path involved and never repeat the text of their `source()`.

use std::path::PathBuf;

/// What is wrong with a checkpoint file that cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The file has no bytes at all (for example a crash of a writer without atomic saves).
    #[error("the file is empty")]
    Empty,
    /// The JSON text ends early.
    #[error("the json ends early at line {line}, column {column} (truncated file)")]
    Truncated {
        /// 1-based line of the end of the input.
        line: usize,
        /// 1-based column of the end of the input.
        column: usize,
    },
    /// The bytes are not valid JSON.
    #[error("invalid json at line {line}, column {column}")]
    InvalidJson {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// The JSON document is not an object.
    #[error("the json document is not an object")]
    NotAnObject,
    /// The JSON nests deeper than the reference can decode (its depth limit is 32).
    #[error("the json nests deeper than {max} levels")]
    NestingTooDeep {
        /// The deepest nesting allowed; the document object itself is level 1.
        max: usize,
    },
    /// `key` holds a value that is not text (nor a number PHP would turn into text).
    #[error("field `key` is not a string")]
    KeyNotString,
    /// `key` is blank.
    #[error("field `key` is blank")]
    BlankKey,
    /// `last_consumed_sequence` is negative.
    #[error("field `last_consumed_sequence` is negative ({value})")]
    NegativeSequence {
        /// The value read.
        value: i64,
    },
    /// `last_consumed_sequence` is a number PHP cannot hold as an integer (beyond 64 bits,
    /// or not finite).
    #[error("field `last_consumed_sequence` is out of the integer range")]
    SequenceOutOfRange,
    /// `byte_offset_hint` is a negative integer.
    #[error("field `byte_offset_hint` is negative ({value})")]
    NegativeHint {
        /// The value read.
        value: i64,
    },
    /// `saved_at` is present but not a string.
    #[error("field `saved_at` is not a string")]
    SavedAtNotString,
    /// `saved_at` is not a timestamp this build can parse.
    #[error("field `saved_at` is not an rfc 3339 timestamp: {text:?}")]
    InvalidSavedAt {
        /// The text, cut to at most 64 characters.
        text: String,
    },
}

/// An error of the checkpoint layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A checkpoint key is blank (empty after PHP `trim`).
    #[error("checkpoint key must not be blank")]
    BlankKey,

    /// A text field that must be non-blank when given is blank.
    #[error("field `{field}` must not be blank")]
    BlankField {
        /// The field's name (`replay_session_id`, `storage_path`, ...).
        field: &'static str,
    },

    /// Checkpoint criteria without any identity field.
    #[error(
        "checkpoint criteria need at least one of replay_session_id, job_uuid, pbx_node_slug, worker_session_id, recovery_generation_id"
    )]
    NoCriteria,

    /// A lookup limit of zero.
    #[error("limit must be >= 1")]
    InvalidLimit,

    /// A cursor position the reference cannot store (it holds integers as `i64`).
    #[error("checkpoint {field} {value} is out of range (must be at most {max})", max = i64::MAX)]
    OutOfRange {
        /// `last_consumed_sequence` or `byte_offset_hint`.
        field: &'static str,
        /// The value given.
        value: u64,
    },

    /// Checkpoint metadata nests deeper than a checkpoint file may.
    #[error("checkpoint metadata nests deeper than {max} levels")]
    MetadataTooDeep {
        /// The deepest nesting allowed; the metadata map itself is level 1.
        max: usize,
    },

    /// The checkpoint directory's path names something else (a regular file, say).
    #[error("{} is not a directory", path.display())]
    NotADirectory {
        /// The path given as the checkpoint directory.
        path: PathBuf,
    },

    /// The checkpoint directory could not be created or listed.
    #[error("cannot {op} checkpoint directory {path}")]
    Directory {
        /// What was being done (`create`, `list`).
        op: &'static str,
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// A checkpoint file exists but could not be read.
    #[error("cannot read checkpoint file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint file exists but does not hold a valid checkpoint.
    #[error("checkpoint file {path} is corrupt: {kind}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        kind: CorruptKind,
    },

    /// A checkpoint could not be saved (nothing was replaced: the old file, if any, is intact).
    #[error("cannot save checkpoint {key:?} to {path}")]
    Save {
        /// The checkpoint's key.
        key: String,
        /// The checkpoint file.
        path: PathBuf,
        /// The failed step.
        #[source]
        source: crate::storage::Error,
    },

    /// A checkpoint file could not be deleted.
    #[error("cannot delete checkpoint file {path}")]
    Delete {
        /// The file.
        path: PathBuf,
        /// The failed step.
        #[source]
        source: crate::storage::Error,
    },

    /// A checkpoint needs records the store no longer holds (they were pruned).
    #[error(
        "checkpoint {key:?} is incompatible with the retained stream: it resumes at sequence {required_next}, but records from there on were pruned before it read them (the first retained sequence is {first_retained}); to go on without them, save the checkpoint at {first_retained} minus one (`esl-replay checkpoint save`) or delete it"
    )]
    Incompatible {
        /// The checkpoint's key.
        key: String,
        /// The first sequence the store still holds (or will assign next, when empty).
        first_retained: u64,
        /// The next sequence the checkpoint needs (its last consumed sequence + 1).
        required_next: u64,
    },

    /// A checkpoint past the store's last sequence, which resuming would follow by skipping
    /// every record until the store passed it.
    #[error(
        "checkpoint {key:?} has consumed up to sequence {last_consumed}, beyond the store's last sequence {last_sequence}: either it was taken on another store, or on one since replaced at this path (delete it, `esl-replay checkpoint delete`, to start from the beginning), or a power loss took records from this store after they were consumed (save it at {last_sequence}, `esl-replay checkpoint save`, to go on with the records stored since)"
    )]
    BeyondEnd {
        /// The checkpoint's key.
        key: String,
        /// The checkpoint's last consumed sequence.
        last_consumed: u64,
        /// The last sequence the store ever assigned.
        last_sequence: u64,
    },

    /// A save would move a checkpoint back: the file already holds a later position,
    /// saved by another run of the same key.
    #[error(
        "checkpoint {key:?} in {path} is already at sequence {on_disk}, past the sequence {saving} this run would save: another run of the same key got further; not saving, so that neither run repeats the other's records (stop the other run, then resume)"
    )]
    WouldGoBack {
        /// The checkpoint's key.
        key: String,
        /// The checkpoint file.
        path: PathBuf,
        /// The last consumed sequence in the file.
        on_disk: u64,
        /// The last consumed sequence this save would have written.
        saving: u64,
    },

    /// Another process holds the key's run lock ([`CheckpointStore::lock`](super::CheckpointStore::lock)).
    #[error(
        "checkpoint key {key:?} is in use by another run (it holds the lock {path}); two runs of one key would both act on every record and move its checkpoint back and forth: wait for it to finish or stop it, or use another --checkpoint-key"
    )]
    KeyInUse {
        /// The key.
        key: String,
        /// The lock file.
        path: PathBuf,
    },

    /// The key's lock file could not be created or locked.
    #[error("cannot lock checkpoint key {key:?} with {path}")]
    Lock {
        /// The key.
        key: String,
        /// The lock file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint file a consumer would resume from reads (as the reference reads it)
    /// but does not say where to resume: its position is not an integer, or it belongs to
    /// another key.
    #[error(
        "checkpoint file {path} cannot be resumed from as key {key:?}: {reason}; fix the file or delete it (`esl-replay checkpoint delete`) to start from the beginning"
    )]
    NotResumable {
        /// The file.
        path: PathBuf,
        /// The key asked for.
        key: String,
        /// What is wrong.
        reason: String,
    },

    /// The artifact store could not be read.
    #[error("cannot read the artifact store")]
    Store(#[source] crate::store::Error),
}

impl Error {
    /// Whether this error reports a damaged checkpoint file.
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }
}
