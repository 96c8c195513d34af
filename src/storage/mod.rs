//! The segment log engine: an append-only log of byte records in CRC-framed segment files.
//!
//! It knows only bytes; it never imports the record model, ESL, replay or CLI code. The byte
//! layout is normative in `format/`; this module's files cite its requirement IDs.
//!
//! - [`Log`] is the single writer: [`Log::open`] takes the directory's lock and recovers the
//!   log (opening *is* recovery), then appends with the [`SyncPolicy`] chosen.
//! - [`Reader`] reads (cursor, point reads, live tail) beside the writer, in this process
//!   ([`Log::reader`]) or in another ([`Reader::open`], no lock needed), and truncates the
//!   prefix for retention.
//! - [`write_atomic`] replaces a small file atomically and durably; [`remove_durable`] and
//!   [`create_dir_durable`] remove a file and create a directory durably. Their `_with`
//!   forms go through another [`Io`] seam, for the layers above that take one ([`StdIo`]
//!   is the real one; tests inject faults through their own).
//!
//! ```
//! use esl_replay::storage::{Log, LogOptions, Seq};
//! # fn main() -> Result<(), esl_replay::storage::Error> {
//! let dir = tempfile::tempdir().map_err(|e| esl_replay::storage::Error::NotALog { dir: e.to_string().into() })?;
//! let (mut log, _report) = Log::open(dir.path(), LogOptions::default())?;
//! let seq = log.append(b"hello")?;
//! log.wait_durable(seq)?;
//! let reader = log.reader();
//! assert_eq!(reader.get(seq)?.as_deref(), Some(&b"hello"[..]));
//! assert_eq!(seq, Seq::FIRST);
//! # Ok(()) }
//! ```

mod bounded;
mod dir;
mod durable;
mod error;
mod frame;
mod header;
mod id;
mod index;
mod io;
mod meta;
mod options;
mod pack;
mod readahead;
mod reader;
mod recovery;
mod segment;
mod shared;
mod signal;
mod unpack_ahead;
mod verify;
mod watermark;
mod writer;

pub use bounded::{
    deadline_after, open_regular_with, read_file_limited, read_regular_file_limited,
    read_text_limited, read_to_end_limited, time_left,
};
pub use durable::{
    create_dir_durable, create_dir_durable_with, remove_durable, remove_durable_with, write_atomic,
    write_atomic_with,
};
pub use error::{CorruptKind, Error, IoOp, Result, error_chain};
pub use id::{SegmentId, Seq};
pub use io::{Io, StdIo};
pub use options::{
    LogOptions, ReadStrategy, RecoveryMode, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SyncPolicy,
};
pub use pack::{DEFAULT_PACK_LEVEL, PackOutcome};
pub use reader::{
    Cursor, Durability, Reader, RecordRef, Records, Space, TruncateReport, WATERMARK_PATIENCE,
};
pub use recovery::{RecoveryReport, TornTail, UnfinishedRoll};
pub use verify::{Damage, VerifyReport};
pub use writer::Log;

/// Bytes a record's frame adds to its payload on disk (the frame header).
pub const FRAME_OVERHEAD: u64 = frame::FRAME_HEADER_LEN as u64;

/// The byte codecs of the format, exposed for format vectors, fuzzing and tools.
///
/// These are pure functions over `&[u8]` and the constants of the layouts in `format/`
/// (file names, magics, versions, lengths). They describe the bytes on disk rather than the
/// log's API, so they stay in this namespace instead of the module root.
pub mod codec {
    pub use super::dir::{
        CLEAN_FILE, DURABLE_FILE, RECYCLE_POOL, RETENTION_LOCK, SPARE_FILE, START_FILE,
        WRITER_LOCK, index_base, index_path, recycle_path, segment_base, segment_path,
    };
    pub use super::frame::{
        Decoded, FRAME_HEADER_LEN, FRAME_PAYLOAD_LIMIT, FrameKind, decode as decode_frame,
        encode as encode_frame, seq_tag,
    };
    pub use super::header::{
        FORMAT_VERSION, FileHeader, HEADER_LEN, INDEX_MAGIC, PACKED_VERSION, PLAIN_VERSION,
        RECYCLED_VERSION, SEGMENT_MAGIC,
    };
    pub use super::index::{
        ENTRY_LEN, INDEX_INTERVAL, IndexEntry, IndexFile, IndexFooter,
        decode_file as decode_index_file,
    };
    pub use super::meta::{
        CLEAN_LEN, CLEAN_MAGIC, CleanMark, DURABLE_LEN, DURABLE_MAGIC, DurableWatermark, START_LEN,
        START_MAGIC, StartMark,
    };
    pub use super::pack::{DICTIONARY_LIMIT, TRAILER_MAGIC, TRAILER_OVERHEAD, Trailer};
}
