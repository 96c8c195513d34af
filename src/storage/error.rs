//! The storage layer's one error type.
//!
//! Variants are structured (path, segment, offset, expected and found values) so callers can
//! act on them without matching message text. Messages are lowercase, name the identifiers
//! and, where there is something to do, say what.

use std::io;
use std::path::PathBuf;

use super::id::{SegmentId, Seq};

/// What was wrong with bytes that failed validation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CorruptKind {
    /// The file does not start with the expected magic number.
    #[error("bad magic number")]
    BadMagic,
    /// The file's read version is newer than this build understands.
    #[error("unsupported format version {found} (this build reads up to {supported})")]
    UnsupportedVersion {
        /// The version in the file.
        found: u16,
        /// The newest version this build reads.
        supported: u16,
    },
    /// A stored checksum does not match the bytes it covers.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        /// The checksum in the file.
        stored: u32,
        /// The checksum of the bytes read.
        computed: u32,
    },
    /// A length field is larger than the limit or than the bytes available.
    #[error("length {len} out of bounds (at most {max})")]
    LengthOutOfBounds {
        /// The length read.
        len: u64,
        /// The largest acceptable length here.
        max: u64,
    },
    /// A reserved field or flag bit is not zero.
    #[error("reserved bits set ({bits:#x})")]
    ReservedBits {
        /// The offending bits.
        bits: u64,
    },
    /// A header names a different segment than its file name.
    #[error("header names segment {found}, file name says {expected}")]
    WrongSegment {
        /// The base sequence from the file name.
        expected: u64,
        /// The base sequence in the header.
        found: u64,
    },
    /// A frame is damaged but valid frames follow it, so it is not a torn tail.
    #[error("damaged frame followed by valid frames (next valid frame at offset {next_valid})")]
    DamagedBeforeTail {
        /// Where the first valid frame after the damage starts.
        next_valid: u64,
    },
    /// The bytes end in the middle of a record (torn tail refused by the recovery mode).
    #[error("torn tail of {bytes} bytes")]
    TornTail {
        /// How many bytes the torn tail spans.
        bytes: u64,
    },
    /// Sequences do not continue where the previous segment ended.
    #[error("sequence gap: expected {expected}, found {found}")]
    SequenceGap {
        /// The sequence that should come next.
        expected: u64,
        /// The sequence found.
        found: u64,
    },
    /// A segment that has a successor ends without a seal.
    #[error("segment ends without a seal although a later segment exists")]
    MissingSeal,
    /// Records the log acknowledged are in no segment file: segment files were deleted or
    /// lost from outside the log [REC-12].
    #[error(
        "records {from} to {} are in no segment file: segment files are missing",
        to.saturating_sub(1)
    )]
    MissingSegments {
        /// The first missing sequence.
        from: u64,
        /// The sequence after the last missing one.
        to: u64,
    },
    /// The start file names a start beyond the log's end [REC-11]: it hides every record the
    /// segments hold (a start file changed or copied from outside, or left by an old build).
    #[error(
        "the start file's start {start} is beyond the log's end {end}: it hides every record the segments hold"
    )]
    StartBeyondEnd {
        /// The start the start file names.
        start: u64,
        /// The log's next sequence.
        end: u64,
    },
    /// A compressed frame did not decompress.
    #[error("compressed payload does not decompress")]
    Decompress,
    /// The frames of the last segment do not reach the end that the clean shutdown recorded:
    /// durable records are damaged (this is never a torn tail).
    #[error(
        "{}, below offset {clean_end} where the clean shutdown recorded the end of durable frames: durable records are damaged",
        fault.as_deref().map_or_else(|| "frames end early".to_owned(), ToString::to_string)
    )]
    BelowCleanEnd {
        /// Where the clean shutdown recorded the end of the segment's frames.
        clean_end: u64,
        /// What is wrong at the offset where valid frames stop (`None`: zeroed space or the
        /// end of the file).
        fault: Option<Box<CorruptKind>>,
    },
    /// The frames of the last segment stop at sequence `found`, below the end the log
    /// acknowledged as durable: durable records are damaged, not torn [REC-03].
    #[error(
        "{}, at sequence {found}, where records up to {} were acknowledged as durable: durable records are damaged",
        fault.as_deref().map_or_else(|| "frames end early".to_owned(), ToString::to_string),
        durable.saturating_sub(1)
    )]
    BelowDurable {
        /// The sequence of the first frame that is not there.
        found: u64,
        /// The end the watermark file or the clean shutdown named: every sequence below it
        /// was acknowledged as durable.
        durable: u64,
        /// What is wrong where valid frames stop (`None`: zeroed space or the end of the
        /// file).
        fault: Option<Box<CorruptKind>>,
    },
}

/// The file-system operation that failed, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
#[allow(missing_docs, reason = "the names are the operations")]
pub enum IoOp {
    Open,
    Create,
    Read,
    Write,
    Allocate,
    Sync,
    SyncDir,
    Rename,
    Remove,
    List,
    Map,
    Lock,
}

impl std::fmt::Display for IoOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            IoOp::Open => "open",
            IoOp::Create => "create",
            IoOp::Read => "read",
            IoOp::Write => "write",
            IoOp::Allocate => "allocate space for",
            IoOp::Sync => "sync",
            IoOp::SyncDir => "sync directory",
            IoOp::Rename => "rename",
            IoOp::Remove => "remove",
            IoOp::List => "list",
            IoOp::Map => "map",
            IoOp::Lock => "lock",
        };
        f.write_str(name)
    }
}

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file-system operation failed.
    #[error("cannot {op} {path}")]
    Io {
        /// What was being done.
        op: IoOp,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A segment holds damaged bytes.
    #[error("segment {segment} is corrupt at offset {offset}: {kind}")]
    Corrupt {
        /// The segment.
        segment: SegmentId,
        /// The byte offset inside the segment file.
        offset: u64,
        /// What is wrong.
        kind: CorruptKind,
    },
    /// A metadata or index file is damaged.
    #[error("{path} is corrupt: {kind}")]
    CorruptFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        kind: CorruptKind,
    },
    /// Another writer holds the log's lock.
    #[error(
        "log {dir} is locked by another writer (in this or another process): stop that writer, or open the log read-only"
    )]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
    /// A durability operation failed earlier (a sync, or the check that the active segment's
    /// file is still named, [DUR-05]); the log refuses writes until reopened.
    #[error("log {dir} refuses writes after a failure ({cause}); reopen it to recover")]
    Poisoned {
        /// The log directory.
        dir: PathBuf,
        /// The failure that poisoned the log.
        cause: String,
    },
    /// The writer's active segment file was removed or replaced from outside the log while
    /// the writer ran [DUR-05]: the records in it are in no segment file any more.
    #[error(
        "segment file {path} of the active segment {segment} was removed or replaced from outside the log: its records are lost to readers and to the next open; stop whatever removes log files, then reopen the log"
    )]
    SegmentRemoved {
        /// The active segment.
        segment: SegmentId,
        /// The path that no longer names its file.
        path: PathBuf,
    },
    /// The writer's lock file was removed or replaced from outside while the writer ran, and
    /// another process holds the lock of the file now named so [DIR-06].
    #[error(
        "writer lock file {path} was removed or replaced from outside the log and another process locked the new one: a second writer (of an older build) may be writing the log; stop both writers, then verify the log"
    )]
    LockReplaced {
        /// The writer lock file.
        path: PathBuf,
    },
    /// A payload is larger than the configured maximum.
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes")]
    PayloadTooLarge {
        /// The payload's length.
        len: u64,
        /// The configured maximum.
        max: u64,
    },
    /// A sequence outside the log's range was requested.
    #[error("sequence {requested} is out of range (log holds {first}..{next})")]
    OutOfRange {
        /// The requested sequence.
        requested: Seq,
        /// The first sequence held.
        first: Seq,
        /// The next sequence to be assigned.
        next: Seq,
    },
    /// A log option is invalid.
    #[error("invalid log option {name}: {reason}")]
    InvalidOption {
        /// The option's name.
        name: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// The log was written by a newer version that this build may read but not write.
    #[error(
        "segment {segment} has write version {found}; this build writes version {supported}, so the log can only be opened read-only"
    )]
    ReadOnlyVersion {
        /// The segment.
        segment: SegmentId,
        /// The version in the file.
        found: u16,
        /// The version this build writes.
        supported: u16,
    },
    /// The directory is not a log (for example, a read-only open of an empty directory).
    #[error("{dir} holds no log segments")]
    NotALog {
        /// The directory.
        dir: PathBuf,
    },
    /// The writer was closed or its background thread stopped.
    #[error("log {dir} is closed")]
    Closed {
        /// The log directory.
        dir: PathBuf,
    },
}

/// The storage layer's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: IoOp, path: impl Into<PathBuf>, source: io::Error) -> Error {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether this error reports damaged data (as opposed to I/O or usage).
    #[must_use]
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::CorruptFile { .. })
    }
}

/// An error and its causes on one line, `: `-separated, for logs and messages: tracing's
/// `%error` prints only the outermost text (a cause already in the text is not repeated).
#[must_use]
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        cause = inner.source();
    }
    text
}
