//! Options of a log: sizes, the durability policy, the recovery mode and the read strategy.

use std::sync::Arc;
use std::time::Duration;

use super::error::{Error, Result};
use super::frame::{FRAME_HEADER_LEN, FRAME_PAYLOAD_LIMIT};
use super::header::HEADER_LEN;
use super::io::{Io, StdIo};

/// When appended records become durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncPolicy {
    /// `fdatasync` before `append` returns; a record is visible to readers only once it is
    /// durable.
    EveryAppend,
    /// A dedicated sync thread makes records durable in batches: after the first unsynced
    /// append it waits at most `max_delay` (or until `max_bytes` are pending), syncs, and
    /// publishes a durable-sequence watermark that [`Log::wait_durable`] waits on. Syncs never
    /// happen under the append path, so appenders are not blocked by them.
    ///
    /// [`Log::wait_durable`]: super::Log::wait_durable
    GroupCommit {
        /// How long to gather appends before syncing. Default: zero: a thread waiting for
        /// durability ([`Log::wait_durable`](super::Log::wait_durable), [`Durability::wait`])
        /// syncs itself as soon as its record is appended and no other thread is syncing
        /// (appends that arrive during a sync form the next batch), and the sync thread syncs
        /// what nobody waits for within 250 µs.
        ///
        /// [`Durability::wait`]: super::Durability::wait
        max_delay: Duration,
        /// Sync early once this many bytes are pending. Default: 4 MiB.
        max_bytes: u64,
    },
    /// The sync thread syncs every `interval` when anything is pending.
    Periodic {
        /// How often to sync.
        interval: Duration,
    },
    /// Never sync on its own; only [`Log::sync`] and a clean close make records durable.
    ///
    /// [`Log::sync`]: super::Log::sync
    OsOnly,
}

impl Default for SyncPolicy {
    fn default() -> SyncPolicy {
        SyncPolicy::GroupCommit {
            max_delay: Duration::ZERO,
            max_bytes: 4 << 20,
        }
    }
}

/// What opening does with damage it finds at the end of the log (format/recovery.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RecoveryMode {
    /// Cut off an incomplete or corrupt final frame (a torn tail) and report it; damage that
    /// valid frames follow is an error. The default.
    #[default]
    TolerateTornTail,
    /// Any damage, even a torn tail, is an error; nothing is cut.
    AbsoluteConsistency,
    /// Cut the active segment at the first damaged frame even if valid frames follow, and
    /// report what was dropped. For logs damaged by a power loss that reordered writes.
    PointInTime,
}

/// How readers get at segment bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadStrategy {
    /// Borrow payloads straight from memory maps (docs/SAFETY.md). The default.
    #[default]
    Mmap,
    /// Read with `pread` into a buffer; payloads borrow from that buffer.
    Pread,
}

/// Options for opening a log. Construct with `..LogOptions::default()`.
#[derive(Clone, Debug)]
pub struct LogOptions {
    /// Size of each segment file. Default: 64 MiB. Minimum: 64 KiB. Maximum: 4 GiB - 1.
    pub segment_bytes: u64,
    /// Largest payload accepted. Default: 16 MiB. At most 256 MiB - 1 and small enough that
    /// one record fits an empty segment.
    pub max_payload_bytes: u32,
    /// When appends become durable. Default: group commit with no added delay.
    pub sync_policy: SyncPolicy,
    /// What opening does with damage at the end of the log. Default: tolerate a torn tail.
    pub recovery_mode: RecoveryMode,
    /// How readers get at bytes. Default: memory maps.
    pub read_strategy: ReadStrategy,
    /// Payloads at least this long are zstd-compressed when that saves at least an eighth.
    /// `None` disables compression. Default: 64 KiB; small records are never compressed.
    pub compress_min_bytes: Option<u32>,
    /// Packs sealed segments in the background at this zstd level (1 to 19): each record is
    /// compressed against a dictionary trained on its own segment ([SEG-09]), about 13 times
    /// smaller for ESL events, and stays readable on its own. `None`, the default, leaves
    /// segments as written ([`Log::pack_sealed`](super::Log::pack_sealed) packs on demand).
    pub pack_level: Option<i32>,
    /// Reuses the files of segments a prefix truncation removes (in the writer's process, up
    /// to 4 waiting at a time) for the next segments, instead of creating files filled with
    /// zeros ([SEG-10]).
    /// Appends then overwrite blocks that are already written, which costs the file system
    /// no block allocation and no journal commit per sync. What follows the frames of such a
    /// segment is what the file held before, so a torn frame there cannot be told apart:
    /// after an unclean shutdown the writer's open ends the segment where its frames stop,
    /// and `AbsoluteConsistency`, which must refuse any torn frame, refuses it (a writer
    /// opened with `AbsoluteConsistency` never recycles). Default: on (benches/README.md,
    /// "Recycled segments": raw appends 1.5-2.5x, group-commit throughput 1.5-2x).
    pub recycle_segments: bool,
    /// The I/O seam. Default: the real file system.
    pub io: Arc<dyn Io>,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            segment_bytes: 64 << 20,
            max_payload_bytes: 16 << 20,
            sync_policy: SyncPolicy::default(),
            recovery_mode: RecoveryMode::default(),
            read_strategy: ReadStrategy::default(),
            compress_min_bytes: Some(64 << 10),
            pack_level: None,
            recycle_segments: true,
            io: Arc::new(StdIo),
        }
    }
}

/// The smallest segment size accepted.
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// The largest segment size accepted (offsets are 32-bit).
pub const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;

impl LogOptions {
    /// Checks the options against their bounds.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] naming the first option out of bounds.
    pub fn validate(&self) -> Result<()> {
        let invalid = |name, reason: String| Err(Error::InvalidOption { name, reason });
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return invalid(
                "segment_bytes",
                format!(
                    "{} is outside {SEGMENT_BYTES_MIN}..={SEGMENT_BYTES_MAX}",
                    self.segment_bytes
                ),
            );
        }
        let overhead = (HEADER_LEN + 2 * FRAME_HEADER_LEN) as u64;
        let fits = self.segment_bytes - overhead;
        if self.max_payload_bytes > FRAME_PAYLOAD_LIMIT || u64::from(self.max_payload_bytes) > fits
        {
            return invalid(
                "max_payload_bytes",
                format!(
                    "{} exceeds {} (the frame limit and what fits one segment)",
                    self.max_payload_bytes,
                    fits.min(u64::from(FRAME_PAYLOAD_LIMIT))
                ),
            );
        }
        if let Some(level) = self.pack_level
            && !(1..=19).contains(&level)
        {
            return invalid("pack_level", format!("{level} is outside 1..=19"));
        }
        if let SyncPolicy::Periodic { interval } = self.sync_policy
            && interval.is_zero()
        {
            return invalid(
                "sync_policy",
                "a periodic sync interval must be positive".into(),
            );
        }
        Ok(())
    }
}
