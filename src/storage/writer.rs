//! The writer: append, batch append, segment roll, durability policies and clean close.
//!
//! Appends encode the frame into a staging buffer that is written to the preallocated active
//! segment with one `pwrite` when it fills, or sooner when the sync thread or a reader needs
//! the records (format/recovery.md, "Append"); no system call is made on the append path
//! unless the policy is `EveryAppend` or the buffer is full. Syncs run on a dedicated thread
//! that publishes a durable-sequence watermark, and a roll's syncs run there too, so under
//! `OsOnly` and `GroupCommit` the appending thread never waits for a sync. See
//! format/recovery.md for the numbered steps of a roll and a close and what recovery does
//! after a crash at each.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::dir;
use super::durable;
use super::error::{Error, IoOp, Result, error_chain};
use super::frame::{self, FRAME_HEADER_LEN, FRAME_PAYLOAD_LIMIT, FrameKind};
use super::header::{FileHeader, HEADER_LEN, SEGMENT_MAGIC};
use super::id::{SegmentId, Seq};
use super::index::{INDEX_INTERVAL, IndexEntry};
use super::io::write_all_at;
use super::meta::{CleanMark, StartMark};
use super::options::{LogOptions, RecoveryMode, SyncPolicy};
use super::pack::{self, DEFAULT_PACK_LEVEL, PackOutcome, Packer};
use super::reader::{Durability, Reader, TruncateReport};
use super::recovery::{self, RecoveryReport};
use super::segment::{self, Parts, SegmentData};
use super::shared::{self, PendingRoll, Shared, Slot};
use super::watermark::{WatermarkReader, WatermarkWriter};

/// Staged bytes written at once: large enough that the `pwrite` costs little per record,
/// small enough to stay in the CPU's caches.
const STAGE_BYTES: usize = 1 << 20;
/// Staged bytes at which the appending thread writes them itself, the flusher thread having
/// fallen behind.
const STAGE_BYTES_MAX: usize = 8 << 20;

/// The single writer of a log directory.
///
/// Opening takes the directory's writer lock and recovers the log; [`Log::reader`] hands out
/// readers that share the writer's view. Dropping the log closes it cleanly (errors are
/// logged); call [`Log::close`] to see them.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    options: LogOptions,
    active: Arc<SegmentData>,
    /// Where the next frame goes in the active segment (staged frames included).
    end: u64,
    next_seq: u64,
    /// The offset from which the next frame gets an index entry [IDX-01].
    next_index_at: u64,
    /// The active segment carries a seal but its successor could not be created yet.
    sealed_without_successor: bool,
    spare: Spare,
    syncer: Option<JoinHandle<()>>,
    /// Writes full staging buffers, so that the appending thread only encodes.
    flusher: Option<JoinHandle<()>>,
    /// Packs sealed segments, with its thread when `pack_level` is set.
    packer: Arc<Packer>,
    packer_thread: Option<JoinHandle<()>>,
    scratch: Vec<u8>,
    /// The frame being written with `pwrite` under `EveryAppend`.
    frame: Vec<u8>,
    _lock: dir::HeldLock,
    closed: bool,
}

impl Log {
    /// Opens (creating if needed) the log in `dir` for writing; opening is recovery.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another writer holds the directory, [`Error::InvalidOption`],
    /// [`Error::Corrupt`] for damage the recovery mode refuses, and I/O errors with paths.
    pub fn open(dir: impl AsRef<Path>, options: LogOptions) -> Result<(Log, RecoveryReport)> {
        // The body is not generic, so that it is compiled once, here, and not in every
        // crate that opens a log.
        Log::open_at(dir.as_ref(), options)
    }

    fn open_at(dir: &Path, options: LogOptions) -> Result<(Log, RecoveryReport)> {
        options.validate()?;
        // A new directory is made durable in its parent before anything in it is acknowledged.
        durable::create_dir_durable_with(&*options.io, dir)?;
        let lock = dir::lock_writer(dir)?;
        let retention = dir::lock_retention(dir)?;
        let io = options.io.clone();
        let mut report = RecoveryReport::default();

        let listing = dir::list(dir)?;
        report.removed_temporaries = listing.temporaries.len();
        durable::remove_files(&*io, dir, &listing.temporaries)?;
        let start = shared::read_start(dir)?.unwrap_or(1).max(1);
        let clean_path = dir.join(dir::CLEAN_FILE);
        let clean_bytes = super::meta::read_file(&clean_path).ok();
        let clean = clean_bytes.as_deref().and_then(|b| match CleanMark::decode(b) {
            Ok(mark) => Some(mark),
            Err(kind) => {
                tracing::warn!(path = %clean_path.display(), %kind, "ignoring a damaged clean-shutdown marker; scanning the tail");
                None
            }
        });

        // Segments wholly below the start belong to an interrupted truncation [TRUNC-03].
        let mut segments = listing.segments;
        let doomed = segments
            .windows(2)
            .take_while(|w| w.get(1).is_some_and(|next| *next <= start))
            .count();
        let mut stale = Vec::new();
        for base in segments.drain(..doomed) {
            stale.push(dir::segment_path(dir, base));
            stale.push(dir::index_path(dir, base));
        }
        for base in listing
            .indexes
            .iter()
            .filter(|b| segments.binary_search(b).is_err())
        {
            stale.push(dir::index_path(dir, *base));
        }
        report.removed_segments = doomed;
        durable::remove_files(&*io, dir, &stale)?;

        // Read before this writer rewrites the file.
        let durable = WatermarkReader::new(dir).read();
        if clean.is_none() {
            recovery::drop_headerless_segment(&*io, dir, &mut segments, &mut report)?;
            recovery::check_rolls(
                &*io,
                dir,
                &mut segments,
                FRAME_PAYLOAD_LIMIT,
                durable,
                &mut report,
            )?;
        }
        let acknowledged = durable.into_iter().chain(clean.map(|m| m.next_seq)).max();
        let accept = options.recovery_mode == RecoveryMode::PointInTime;
        let recovered = match segments.last() {
            Some(&last) => recovery::recover_active(
                &*io,
                dir,
                last,
                (clean, acknowledged),
                options.recovery_mode,
                FRAME_PAYLOAD_LIMIT,
                &mut report,
            )?,
            None => {
                // Refused before anything is created: a log that held acknowledged records
                // and has no segment file left lost them all [REC-12].
                if let Some(end) = acknowledged.filter(|end| *end > start)
                    && !accept
                {
                    return Err(recovery::missing_error(SegmentId(start), 0, &(start..end)));
                }
                segments.push(start);
                let parts = create_segment(&*io, dir, start, options.segment_bytes, None, true)?;
                durable::sync_dir(&*io, dir)?;
                recovery::Recovered {
                    parts,
                    packed: None,
                    unreadable: None,
                }
            }
        };
        let next = recovered.parts.end_seq;
        // Records the log acknowledged that no segment file holds: refused, unless the mode
        // accepts losing them [REC-12].
        let first = segments.first().copied().unwrap_or(start);
        if first > start {
            let missing = start..first;
            if !accept {
                return Err(recovery::missing_error(SegmentId(first), 0, &missing));
            }
            tracing::warn!(
                from = start,
                to = first,
                "records below the first segment are in no segment file; the start moves to the first segment"
            );
            write_start(&*io, dir, first)?;
            report.missing_head = Some(missing);
        }
        let start = start.max(first);
        // A last segment that ends in its seal had a successor if records after it were
        // acknowledged, and an empty directory held them all. (Acknowledged records missing
        // from the frames of the last segment are its damage, which recovery refused unless
        // the mode accepts the loss [REC-03].)
        if let Some(end) = acknowledged.filter(|end| *end > next) {
            let missing = next..end;
            if !accept {
                let parts = &recovered.parts;
                return Err(recovery::missing_error(
                    SegmentId(parts.header.base),
                    parts.end,
                    &missing,
                ));
            }
            tracing::warn!(
                from = next,
                to = end,
                "acknowledged records after the recovered end are lost; their sequences will be given again"
            );
            report.missing_tail = Some(missing);
        }
        // A start above the recovered end would hide the records appended from here on
        // below it; it is lowered to the end, and reported [REC-11].
        let start = if start > next {
            tracing::warn!(
                start,
                next,
                "the log's start was beyond its recovered end; lowered to the end"
            );
            write_start(&*io, dir, next)?;
            report.start_beyond_end = Some(start);
            next
        } else {
            start
        };
        // Valid or not, the marker must not outlive this open: a crash from here on is unclean.
        if clean_bytes.is_some() {
            durable::remove_files(&*io, dir, &[clean_path])?;
        }
        drop(retention);

        let (mut parts, packed, unreadable) =
            (recovered.parts, recovered.packed, recovered.unreadable);
        // After a process crash the frames recovery found may exist only in the page cache;
        // they are declared durable below, so make them durable first [REC-07]. (A clean
        // close synced them before writing its marker.) This also covers a seal whose roll
        // the next step completes: the old segment must be durable before its successor.
        if !report.clean_shutdown {
            io.sync_data(&parts.file)
                .map_err(|e| Error::io(IoOp::Sync, &parts.path, e))?;
        }
        // The active segment must leave room for its seal after its last frame (a file cut
        // short from outside may not), and an empty one is grown to the configured size, so
        // that a record which fits a fresh segment fits it too: an empty segment is never
        // rolled, since its successor would have its very name. Growing only appends zeros,
        // which existing maps never cover.
        let empty = parts.end_seq == parts.header.base && !parts.sealed;
        let wanted = if empty {
            parts.file_len.max(options.segment_bytes)
        } else {
            parts.file_len
        };
        let wanted = wanted.max(parts.end + FRAME_HEADER_LEN as u64);
        if wanted > parts.file_len {
            recovery::zero_range(&*io, &parts.file, &parts.path, parts.file_len, wanted)?;
            io.sync_all(&parts.file)
                .map_err(|e| Error::io(IoOp::Sync, &parts.path, e))?;
            parts.file_len = wanted;
        }
        let sealed = parts.sealed;
        let (end, next_seq) = (parts.end, parts.end_seq);
        let next_index_at = parts
            .entries
            .last()
            .map_or(0, |e| u64::from(e.offset) + INDEX_INTERVAL);
        let map = segment::map_for_reading(options.read_strategy, &parts.file, &parts.path)?;
        let mut active = parts.into_data(map);
        active.packed = packed;
        active.unreadable = unreadable;
        let active = Arc::new(active);
        let shared = Shared::new(dir, io, options.read_strategy, FRAME_PAYLOAD_LIMIT, false);
        shared.waiters_sync.store(
            matches!(options.sync_policy, SyncPolicy::GroupCommit { .. }),
            Ordering::Release,
        );
        shared.writes_staged.store(
            options.sync_policy != SyncPolicy::EveryAppend,
            Ordering::Release,
        );
        // A recycled segment cannot show that its end was not torn [SEG-10], which
        // `AbsoluteConsistency` must.
        if options.recycle_segments && options.recovery_mode != RecoveryMode::AbsoluteConsistency {
            shared
                .recycle_len
                .store(options.segment_bytes, Ordering::Relaxed);
        }
        {
            let mut slots = shared.slots.write();
            for base in segments.iter().take(segments.len().saturating_sub(1)) {
                slots.push(Slot::unloaded(*base));
            }
            slots.push(Slot::loaded(active.clone()));
        }
        let first = segments.first().copied().unwrap_or(start);
        shared.start.store(start.max(first), Ordering::Release);
        shared.next.store(next_seq, Ordering::Release);
        shared.durable.store(next_seq, Ordering::Release);
        // Recovery made every record found durable ([REC-07]): followers may forward them.
        *shared.watermark_writer.lock() = WatermarkWriter::open(&*shared.io, dir, next_seq)?;
        *shared.active.lock() = Some(active.clone());
        *shared.writer_lock.lock() = Some(lock.watch(dir)?);
        restage(&shared, &active, end, next_seq);
        warm_staging(&shared);
        report.segments = segments.len();
        report.first_seq = shared.first_seq();
        report.next_seq = next_seq;

        let mut log = Log {
            shared: Arc::new(shared),
            options,
            active,
            end,
            next_seq,
            next_index_at,
            sealed_without_successor: sealed,
            spare: Spare::None,
            syncer: None,
            flusher: None,
            packer: Arc::new(Packer::default()),
            packer_thread: None,
            scratch: Vec::new(),
            frame: Vec::new(),
            _lock: lock,
            closed: false,
        };
        // The successor of a sealed last segment is created by the first append, not here:
        // opening (to prune, say) must work on a disk without room for a segment [REC-06].
        report.pending_roll = sealed;
        log.syncer = spawn_syncer(&log.shared, log.options.sync_policy);
        if log.options.sync_policy != SyncPolicy::EveryAppend {
            log.flusher = spawn_flusher(&log.shared);
        }
        if let Some(level) = log.options.pack_level {
            log.packer_thread = spawn_packer(&log.shared, &log.packer, level);
        }
        spawn_watermark(&log.shared);
        tracing::debug!(dir = %dir.display(), ?report, "log opened");
        Ok((log, report))
    }

    /// Appends one record and returns its sequence [LOG-01].
    ///
    /// A failed append consumes no sequence. Under `EveryAppend` the record is durable (and
    /// only then visible) when this returns; otherwise see [`Log::wait_durable`].
    ///
    /// # Errors
    ///
    /// [`Error::PayloadTooLarge`], [`Error::Poisoned`] after a failed sync, and I/O errors
    /// from creating the next segment (for example `ENOSPC`).
    pub fn append(&mut self, payload: &[u8]) -> Result<Seq> {
        let seq = self.write_frame(payload)?;
        self.publish()?;
        Ok(Seq(seq))
    }

    /// Appends records in order and publishes them together; returns their sequences.
    ///
    /// Sizes are checked before anything is written, so an oversized payload fails the batch
    /// without consuming a sequence. An I/O error part-way (when a segment roll fails)
    /// publishes the records before it; [`Reader::next_seq`] tells where the batch stopped.
    ///
    /// # Errors
    ///
    /// As [`Log::append`].
    pub fn append_batch<P: AsRef<[u8]>>(&mut self, payloads: &[P]) -> Result<Range<Seq>> {
        for payload in payloads {
            self.check_size(payload.as_ref())?;
        }
        let first = self.next_seq;
        for payload in payloads {
            if let Err(error) = self.write_frame(payload.as_ref()) {
                self.publish()?;
                return Err(error);
            }
        }
        self.publish()?;
        Ok(Seq(first)..Seq(self.next_seq))
    }

    /// Writes the records appended so far to the operating system, without syncing: after
    /// this returns they survive a crash of this process (not a power loss) and readers in
    /// other processes see them. Appends are staged in memory until the staging buffer fills,
    /// a sync, or a reader in this process reaches them [LOG-02].
    ///
    /// # Errors
    ///
    /// The write error; the log is poisoned afterwards, and the staged records are lost as
    /// in a crash.
    pub fn flush(&self) -> Result<()> {
        self.shared.flush().map(|_| ())
    }

    /// Makes every appended record durable now.
    ///
    /// # Errors
    ///
    /// The sync error; the log is poisoned afterwards [DUR-04].
    pub fn sync(&self) -> Result<()> {
        self.shared.sync_now()
    }

    /// Blocks until `seq` is durable.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if a sync failed before `seq` became durable.
    pub fn wait_durable(&self, seq: Seq) -> Result<()> {
        if self.options.sync_policy == SyncPolicy::OsOnly
            && self.shared.durable.load(Ordering::Acquire) <= seq.0
        {
            return self.sync();
        }
        self.durability().wait(seq)
    }

    /// The policy that makes appends durable.
    #[must_use]
    pub fn sync_policy(&self) -> SyncPolicy {
        self.options.sync_policy
    }

    /// A handle other threads can use to wait for durability.
    #[must_use]
    pub fn durability(&self) -> Durability {
        Durability::new(self.shared.clone())
    }

    /// A reader sharing this writer's view of the log.
    #[must_use]
    pub fn reader(&self) -> Reader {
        Reader::from_shared(self.shared.clone())
    }

    /// The sequence the next append gets.
    #[must_use]
    pub fn next_seq(&self) -> Seq {
        Seq(self.next_seq)
    }

    /// Makes `before` the new first sequence and deletes whole segments below it.
    ///
    /// See [`Reader::truncate_prefix`]; this is the same operation.
    ///
    /// # Errors
    ///
    /// As [`Reader::truncate_prefix`].
    pub fn truncate_prefix(&self, before: Seq) -> Result<TruncateReport> {
        self.reader().truncate_prefix(before)
    }

    /// Closes the log cleanly: final sync, index, and the clean-shutdown marker, so that the
    /// next open does not scan [REC-01].
    ///
    /// # Errors
    ///
    /// The first step that failed; the marker is then not written and the next open recovers
    /// by scanning.
    pub fn close(mut self) -> Result<()> {
        self.shutdown()
    }

    /// Stops the writer as a killed process would: background threads stop and the lock is
    /// released, but nothing is synced and no clean-shutdown marker is written. Records
    /// already written to the file ([`Log::flush`]) stay in the page cache and staged ones
    /// are lost, exactly as after `SIGKILL`. For crash tests.
    #[doc(hidden)]
    pub fn simulate_crash(mut self) {
        self.closed = true;
        self.stop_threads();
        // The file stays as the crash leaves it; a reopened writer's thread must be its only one.
        self.shared.close_watermark(false);
    }

    fn stop_threads(&mut self) {
        self.packer.stop();
        if let Some(handle) = self.packer_thread.take() {
            let _ = handle.join();
        }
        {
            let mut state = self.shared.sync.lock();
            state.shutdown = true;
            self.shared.sync_wake.notify_all();
        }
        if let Some(handle) = self.syncer.take() {
            let _ = handle.join();
        }
        {
            let mut wanted = self.shared.flush_wanted.lock();
            wanted.shutdown = true;
            self.shared.flush_wake.notify_all();
        }
        if let Some(handle) = self.flusher.take() {
            let _ = handle.join();
        }
        if let Spare::Preparing(handle) = std::mem::replace(&mut self.spare, Spare::None) {
            let _ = handle.join();
        }
    }

    /// Packs every sealed segment whose roll is durable and that is not packed yet, on this
    /// thread, at the configured `pack_level` (or [`DEFAULT_PACK_LEVEL`]) [SEG-09]. Segments
    /// that hold damage stay as written. Returns what was done to each segment looked at.
    ///
    /// # Errors
    ///
    /// The first packing that failed (I/O, or a packed copy that did not read back); the
    /// segment then stays as written.
    pub fn pack_sealed(&self) -> Result<Vec<(SegmentId, PackOutcome)>> {
        let level = self.options.pack_level.unwrap_or(DEFAULT_PACK_LEVEL);
        let mut done = Vec::new();
        while let Some(step) = self.pack_next_sealed(level)? {
            done.push(step);
        }
        Ok(done)
    }

    /// Packs the oldest sealed segment that is not packed yet (or not left as written for
    /// its damage), at zstd `level`; `None` when there is none. For callers that report
    /// progress segment by segment; see [`Log::pack_sealed`].
    ///
    /// # Errors
    ///
    /// As [`Log::pack_sealed`].
    pub fn pack_next_sealed(&self, level: i32) -> Result<Option<(SegmentId, PackOutcome)>> {
        self.packer
            .pack_next(&self.shared, level, &AtomicBool::new(false))
    }

    fn check_size(&self, payload: &[u8]) -> Result<()> {
        let max = self.options.max_payload_bytes;
        if payload.len() as u64 > u64::from(max) {
            return Err(Error::PayloadTooLarge {
                len: payload.len() as u64,
                max: u64::from(max),
            });
        }
        Ok(())
    }

    /// Writes one frame beyond the published end; returns its sequence.
    fn write_frame(&mut self, payload: &[u8]) -> Result<u64> {
        self.shared.check_poison()?;
        if self.closed {
            return Err(Error::Closed {
                dir: self.shared.dir.clone(),
            });
        }
        self.check_size(payload)?;
        let mut scratch = std::mem::take(&mut self.scratch);
        let compressed = self.compress(payload, &mut scratch);
        let (kind, body) = if compressed {
            (FrameKind::Compressed, scratch.as_slice())
        } else {
            (FrameKind::Plain, payload)
        };
        let len = frame::frame_len(body.len());
        let result = self.place(len).and_then(|offset| {
            let seq = self.next_seq;
            let indexed = offset >= self.next_index_at;
            let entry = IndexEntry {
                seq,
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
            };
            if self.options.sync_policy == SyncPolicy::EveryAppend {
                // Written at once: each append syncs, and a record is visible only once durable.
                let mut frame = std::mem::take(&mut self.frame);
                frame.clear();
                frame::encode_append(&mut frame, &self.active.crc, seq, kind, body);
                let written = write_all_at(
                    &*self.options.io,
                    &self.active.file,
                    &frame,
                    offset,
                    &self.active.path,
                );
                self.frame = frame;
                written?;
                if indexed {
                    self.active.index.write().push(entry);
                }
            } else {
                let staged = {
                    let mut staging = self.shared.staging.lock();
                    frame::encode_append(&mut staging.bytes, &self.active.crc, seq, kind, body);
                    staging.next_seq = seq + 1;
                    if indexed {
                        staging.entries.push(entry);
                    }
                    staging.bytes.len()
                };
                // A full buffer goes to the flusher thread; if it falls far behind (or is
                // not running), this thread writes, which bounds the memory staged.
                if staged >= STAGE_BYTES_MAX || (staged >= STAGE_BYTES && self.flusher.is_none()) {
                    self.shared.flush()?;
                } else if staged >= STAGE_BYTES {
                    self.shared.request_flush();
                }
            }
            if indexed {
                self.next_index_at = offset + INDEX_INTERVAL;
            }
            self.end = offset + len as u64;
            self.next_seq = seq + 1;
            Ok(seq)
        });
        self.scratch = scratch;
        result
    }

    /// Compresses large payloads into `scratch` when that saves at least an eighth [FRM-06].
    fn compress(&self, payload: &[u8], scratch: &mut Vec<u8>) -> bool {
        let Some(threshold) = self.options.compress_min_bytes else {
            return false;
        };
        if payload.len() < threshold as usize {
            return false;
        }
        scratch.clear();
        scratch.resize(zstd::zstd_safe::compress_bound(payload.len()), 0);
        match zstd::bulk::compress_to_buffer(payload, scratch.as_mut_slice(), 3) {
            Ok(n) if n <= payload.len() - payload.len() / 8 => {
                scratch.truncate(n);
                true
            }
            _ => false,
        }
    }

    /// The offset where a frame of `len` bytes goes, rolling to a new segment if needed.
    fn place(&mut self, len: usize) -> Result<u64> {
        let needed = (len + FRAME_HEADER_LEN) as u64;
        let empty = self.end == HEADER_LEN as u64;
        let capacity = self.active.file_len;
        if self.sealed_without_successor || (!empty && self.end + needed > capacity) {
            self.roll()?;
        }
        let capacity = self.active.file_len;
        if self.end + needed > capacity {
            return Err(Error::PayloadTooLarge {
                len: len as u64,
                max: capacity,
            });
        }
        // Prepare the next segment's file once this one is half full: off the append path,
        // and only for logs that will actually roll.
        if self.end * 2 >= capacity {
            match &self.spare {
                Spare::None => {
                    self.spare =
                        Spare::Preparing(spawn_spare(&self.shared, self.options.segment_bytes));
                }
                Spare::Preparing(handle) if handle.is_finished() => {
                    self.spare = self.collect_spare();
                }
                Spare::Preparing(_) | Spare::Ready(_) | Spare::Failed => {}
            }
        }
        Ok(self.end)
    }

    /// Takes the result of the background preparation of the next segment's file. A failure
    /// is reported at once (appends go on in the active segment, and the roll tries again),
    /// rather than discovered only when the segment is full.
    fn collect_spare(&mut self) -> Spare {
        let Spare::Preparing(handle) = std::mem::replace(&mut self.spare, Spare::None) else {
            return Spare::None;
        };
        match handle.join() {
            Ok(Ok(file)) => Spare::Ready(file),
            Ok(Err(error)) => {
                tracing::warn!(
                    error = error_chain(&error),
                    dir = %self.shared.dir.display(),
                    segment_bytes = self.options.segment_bytes,
                    next_seq = self.next_seq,
                    "cannot prepare the next segment file; appends continue in the active segment, and rolling to a new segment will fail the same way unless space is freed"
                );
                Spare::Failed
            }
            Err(_) => Spare::Failed,
        }
    }

    /// Publishes appended frames: under `EveryAppend`, syncs the frames written and makes them
    /// visible; otherwise announces the staged records, which readers write out when they
    /// reach them ([`Shared::flush`]), and wakes the sync thread.
    fn publish(&mut self) -> Result<()> {
        if self.shared.next.load(Ordering::Acquire) == self.next_seq {
            return Ok(());
        }
        if self.options.sync_policy == SyncPolicy::EveryAppend {
            // After a failed sync, a later sync that succeeds proves nothing about the frames
            // the failed one covered (fsyncgate): never publish them or move the watermark.
            self.shared.check_poison()?;
            segment::zero_ahead(&*self.options.io, &self.active, self.end);
            if let Err(source) = self.options.io.sync_data(&self.active.file) {
                let error = Error::io(IoOp::Sync, &self.active.path, source);
                self.shared.poison(&error);
                self.discard_unwritten();
                return Err(error);
            }
            // A record synced into a file that lost its name is in no segment file [DUR-05].
            if let Err(error) = self.shared.check_named(&self.active) {
                self.discard_unwritten();
                return Err(error);
            }
            self.shared.durable.store(self.next_seq, Ordering::Release);
            self.active.end_seq.store(self.next_seq, Ordering::Release);
            self.active.end.store(self.end, Ordering::Release);
        }
        self.shared.next.store(self.next_seq, Ordering::SeqCst);
        self.shared.appended.notify_all();
        // Only group commit syncs as soon as anything is pending; the sync thread of the
        // other policies wakes on its own clock or for rolls.
        if matches!(self.options.sync_policy, SyncPolicy::GroupCommit { .. })
            && self.shared.sync_idle.load(Ordering::SeqCst)
        {
            let _state = self.shared.sync.lock();
            self.shared.sync_wake.notify_one();
        }
        if self.options.sync_policy == SyncPolicy::EveryAppend {
            self.shared.notify_durable();
        }
        Ok(())
    }

    /// Forgets frames written under `EveryAppend` whose sync failed: zeroes them in the file
    /// (best effort), so that a reopen in this boot does not bring back a record whose append
    /// reported an error, and moves the write position back. After a failed sync nothing
    /// about those pages is certain, and the log is poisoned anyway.
    fn discard_unwritten(&mut self) {
        let published = self.active.end();
        if let Ok(len) = usize::try_from(self.end.saturating_sub(published)) {
            let _ = write_all_at(
                &*self.options.io,
                &self.active.file,
                &vec![0; len],
                published,
                &self.active.path,
            );
        }
        self.end = published;
        self.next_seq = self.active.end_seq();
        self.active.index.write().truncate_from(published);
        self.next_index_at = self
            .active
            .index
            .read()
            .last()
            .map_or(0, |e| u64::from(e.offset) + INDEX_INTERVAL);
    }

    /// Seals the active segment and continues in a new one [ROLL-01] to [ROLL-07].
    ///
    /// Under `EveryAppend` every step runs here, in order. Otherwise the steps that write run
    /// here and the syncs run on the sync thread ([`Shared::finish_rolls`]), rolls in order;
    /// the durable watermark does not pass a seal until they have [REC-08].
    fn roll(&mut self) -> Result<()> {
        self.publish()?;
        let inline = self.options.sync_policy == SyncPolicy::EveryAppend;
        // 1. Every staged frame written, then the seal frame after the last record. A write
        // that failed on the flusher thread took its frames with it and left a hole: the
        // flush then finds nothing staged, so the seal must check for it (never written past
        // the hole).
        self.shared.flush()?;
        self.shared.check_poison()?;
        // Sealing a file that lost its name and going on in a successor would hide the loss
        // of its records behind a clean roll [DUR-05].
        self.shared.check_named(&self.active)?;
        let old = self.active.clone();
        let (seal_offset, end_seq) = (self.end, self.next_seq);
        // A segment sealed before this roll (by a roll that stopped before its successor
        // existed, or found sealed at open) may already hold the index footer that proves the
        // roll finished [ROLL-03]: its successor must be durable before its name is.
        let durable_successor = inline || self.sealed_without_successor;
        if !self.sealed_without_successor {
            let seal = frame::encode(old.salt, end_seq, FrameKind::Seal, &[]);
            write_all_at(&*self.options.io, &old.file, &seal, seal_offset, &old.path)?;
            self.sealed_without_successor = true;
            // 2-3. Under `EveryAppend`, the sealed segment durable and its index complete now.
            if inline {
                self.sync_sealed(&old, seal_offset, end_seq)?;
            }
        }
        // 4-5. The successor: its header, then its name.
        if matches!(self.spare, Spare::Preparing(_)) {
            self.spare = self.collect_spare();
        }
        let spare = match std::mem::replace(&mut self.spare, Spare::None) {
            Spare::Ready(spare) => Some(spare),
            Spare::None | Spare::Preparing(_) | Spare::Failed => None,
        }
        .or_else(|| take_recycled(&self.shared, false));
        let created = create_segment(
            &*self.options.io,
            &self.shared.dir,
            end_seq,
            self.options.segment_bytes,
            spare,
            durable_successor,
        );
        let parts = match created {
            // The successor's name made durable (step 5). Once the name is out, a failed sync
            // leaves it unknown whether the name survives, and followers may already read the
            // file: the roll is never repeated over it, the log is poisoned [DUR-04].
            Ok(parts) if durable_successor => {
                match durable::sync_dir(&*self.options.io, &self.shared.dir) {
                    Ok(()) => parts,
                    Err(error) => {
                        self.shared.poison(&error);
                        return Err(error);
                    }
                }
            }
            Ok(parts) => parts,
            Err(error) => {
                // The roll stops here: the sealed segment is made durable now, so that every
                // record before the failure is committed ([ROLL-02] of the failed roll), after
                // the rolls before it, which the watermark must not pass unfinished.
                if !inline {
                    self.shared.finish_rolls()?;
                    self.sync_sealed(&old, seal_offset, end_seq)?;
                }
                return Err(error);
            }
        };
        let map = segment::map_for_reading(self.options.read_strategy, &parts.file, &parts.path)?;
        let new = Arc::new(parts.into_data(map));
        // 6. Publish. First the durable steps for the sync thread [ROLL-07], before it can see
        // the successor as the active segment; then readers find the successor before they
        // see the old segment sealed.
        if !inline {
            self.shared.pending_rolls.lock().push_back(PendingRoll {
                sealed: old.clone(),
                seal_offset,
                end_seq,
                successor: new.clone(),
            });
        }
        self.shared.slots.write().push(Slot::loaded(new.clone()));
        self.shared.note_loaded(old.id.0);
        *self.shared.active.lock() = Some(new.clone());
        restage(&self.shared, &new, HEADER_LEN as u64, end_seq);
        old.sealed.store(true, Ordering::Release);
        self.active = new;
        self.end = HEADER_LEN as u64;
        self.next_index_at = 0;
        self.sealed_without_successor = false;
        if !inline {
            let _state = self.shared.sync.lock();
            self.shared.sync_wake.notify_one();
        }
        self.packer.wake();
        self.shared.forget_truncated_elsewhere();
        tracing::debug!(segment = %self.active.id, "rolled to a new segment");
        Ok(())
    }

    /// Makes a sealed segment durable with its index footer, on this thread ([ROLL-02] under
    /// `EveryAppend`, and when a roll stops before its successor exists).
    fn sync_sealed(&self, old: &SegmentData, seal_offset: u64, end_seq: u64) -> Result<()> {
        if let Err(source) = self.options.io.sync_data(&old.file) {
            let error = Error::io(IoOp::Sync, &old.path, source);
            self.shared.poison(&error);
            return Err(error);
        }
        self.shared.durable.fetch_max(end_seq, Ordering::AcqRel);
        self.shared.notify_durable();
        old.complete_index(&*self.options.io, &self.shared.dir, seal_offset, end_seq);
        Ok(())
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.stop_threads();
        // Writes the staged frames and finishes a pending roll before syncing.
        let synced = self.publish().and_then(|()| self.shared.sync_now());
        // The last write of the watermark file, and its thread stops, whether or not the
        // sync worked: a thread left running could write over a later writer's file.
        self.shared.close_watermark(synced.is_ok());
        synced?;
        let io = Arc::clone(&self.options.io);
        let io = &*io;
        self.active
            .persist_index(io, &self.shared.dir, u64::MAX, None)?;
        self.active.sync_index(io, &self.shared.dir)?;
        let (salt, end_offset) = match self.options.pack_level {
            Some(level) => self.pack_active(level)?,
            None => (self.active.salt, self.end),
        };
        let mark = CleanMark {
            segment: self.active.id.0,
            salt,
            end_offset,
            next_seq: self.next_seq,
        };
        // The spare, and removed segments' files kept for reuse, are temporaries that only a
        // running writer needs: a closed log does not keep segments' worth of reserved blocks
        // (the next open would remove them anyway). Their removal is made durable by the
        // marker's directory sync. Readers may outlive the writer: their truncations keep
        // nothing for it any more.
        self.shared.recycle_len.store(0, Ordering::Relaxed);
        let kept = std::mem::take(&mut *self.shared.recycled.lock());
        let temporaries = kept
            .into_iter()
            .map(|(path, _)| path)
            .chain([self.shared.dir.join(dir::SPARE_FILE)]);
        for path in temporaries {
            if let Err(error) = io.remove_file(&path)
                && error.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(error = %error_chain(&error), file = %path.display(), "could not remove a temporary segment file; the next open will");
            }
        }
        durable::replace_file(io, &self.shared.dir.join(dir::CLEAN_FILE), &mark.encode())?;
        tracing::debug!(dir = %self.shared.dir.display(), next_seq = self.next_seq, "log closed cleanly");
        Ok(())
    }

    /// With packing on, a clean close packs the sealed segments the packer thread had not
    /// reached, then seals the active segment and packs it, so that a stopped log keeps no
    /// unpacked records and no preallocated space [SEG-09]; the next append creates its
    /// successor, as after a roll that stopped before it [REC-06]. Returns the salt and frame
    /// end that the clean-shutdown marker records for the active segment.
    ///
    /// Sealing is durable before this returns; packing only saves space, so a packing that
    /// fails is logged and the segment stays as written.
    fn pack_active(&mut self, level: i32) -> Result<(u64, u64)> {
        // First what the packer thread had not done yet.
        if let Err(error) = self.pack_sealed() {
            tracing::warn!(error = %error_chain(&error), "could not pack every sealed segment at close; the next open's packer will");
        }
        let active = self.active.clone();
        if self.next_seq == active.id.0 || active.packed.is_some() {
            return Ok((active.salt, self.end));
        }
        let (seal_offset, end_seq) = (self.end, self.next_seq);
        if !self.sealed_without_successor {
            let seal = frame::encode(active.salt, end_seq, FrameKind::Seal, &[]);
            write_all_at(
                &*self.options.io,
                &active.file,
                &seal,
                seal_offset,
                &active.path,
            )?;
            self.sealed_without_successor = true;
            self.sync_sealed(&active, seal_offset, end_seq)?;
            active.sealed.store(true, Ordering::Release);
        }
        let dir = &self.shared.dir;
        let base = active.id.0;
        let unpacked = (active.salt, seal_offset);
        // Not kept for reuse: the log is closing. The original's blocks are freed when the log
        // lets go of its active segment.
        let packing = pack::pack_segment(
            &*self.options.io,
            dir,
            base,
            level,
            &AtomicBool::new(false),
            0,
        );
        match packing.map(|(outcome, _)| outcome) {
            Ok(PackOutcome::Packed { .. }) => {
                let (_, _, header, frames_end, _) = segment::open_frames(dir, base, false)?;
                Ok((header.salt, frames_end - FRAME_HEADER_LEN as u64))
            }
            Ok(outcome) => {
                tracing::warn!(segment = %active.id, ?outcome, "the last segment was not packed at close");
                Ok(unpacked)
            }
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), segment = %active.id, "could not pack the last segment at close; it stays as written");
                Ok(unpacked)
            }
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(error = %error_chain(&error), "log was not closed cleanly; the next open will scan its tail");
        }
        // Readers may outlive the writer: the lock file it locked again must not [DIR-06].
        if let Some(mut watch) = self.shared.writer_lock.lock().take() {
            watch.release();
        }
    }
}

/// Creates the segment starting at `base` [ROLL-04] [ROLL-05]:
///
/// 1. a preallocated, synced file that reads as zeros, or a removed segment's file kept for
///    reuse [SEG-10] (the spare, if one was prepared in the background);
/// 2. its header written (and, with `sync`, synced);
/// 3. renamed to its segment name.
///
/// The caller makes the name durable (with `sync`, by syncing the directory at once), and
/// without `sync` the header too, before any record of the segment is acknowledged
/// ([ROLL-07]).
fn create_segment(
    io: &dyn super::io::Io,
    dir: &Path,
    base: u64,
    segment_bytes: u64,
    spare: Option<SpareFile>,
    sync: bool,
) -> Result<Parts> {
    let spare_path = dir.join(dir::SPARE_FILE);
    let (file, recycled) = match spare {
        Some(spare)
            if spare
                .file
                .metadata()
                .is_ok_and(|m| m.len() == segment_bytes) =>
        {
            (spare.file, spare.recycled)
        }
        _ => (
            durable::create_zeroed(io, &spare_path, segment_bytes)?,
            false,
        ),
    };
    // Nobody else knows the spare's name, so nothing can be freeing it. (A recycled file's
    // exclusive lock becomes the shared one its readers hold.)
    let _ = segment::hold_open(&file);
    let header = if recycled {
        FileHeader::recycled(base, rand::random())
    } else {
        FileHeader::new(base, rand::random())
    };
    write_all_at(io, &file, &header.encode(SEGMENT_MAGIC), 0, &spare_path)?;
    let path = dir::segment_path(dir, base);
    if sync {
        io.sync_data(&file)
            .map_err(|e| Error::io(IoOp::Sync, &spare_path, e))?;
    }
    io.rename(&spare_path, &path)
        .map_err(|e| Error::io(IoOp::Rename, &path, e))?;
    Ok(Parts {
        file,
        path,
        header,
        file_len: segment_bytes,
        end: HEADER_LEN as u64,
        end_seq: base,
        sealed: false,
        entries: Vec::new(),
    })
}

/// The next segment's file, prepared in the background [SEG-08].
#[derive(Debug)]
enum Spare {
    /// Not started: the active segment is less than half full, or a roll just consumed it.
    None,
    Preparing(JoinHandle<Result<SpareFile>>),
    Ready(SpareFile),
    /// Preparation failed (already reported); the roll creates the file itself.
    Failed,
}

/// The file of the next segment, named [`dir::SPARE_FILE`].
#[derive(Debug)]
struct SpareFile {
    file: File,
    /// A removed segment's file [SEG-10], not one filled with zeros.
    recycled: bool,
}

/// Takes a removed segment's file that a truncation kept for reuse, if there is one, and names
/// it [`dir::SPARE_FILE`] [TRUNC-05]; `wait` says whether to wait for a truncation that is
/// adding to them.
fn take_recycled(shared: &Shared, wait: bool) -> Option<SpareFile> {
    let mut recycled = if wait {
        shared.recycled.lock()
    } else {
        shared.recycled.try_lock()?
    };
    let (from, file) = recycled.pop()?;
    drop(recycled);
    let to = shared.dir.join(dir::SPARE_FILE);
    match shared.io.rename(&from, &to) {
        Ok(()) => Some(SpareFile {
            file,
            recycled: true,
        }),
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "could not reuse a removed segment's file; creating a new one");
            let _ = shared.io.remove_file(&from);
            None
        }
    }
}

/// Points the staging buffer at `segment`, whose frames end at `end` before `next_seq`.
fn restage(shared: &Shared, segment: &Arc<SegmentData>, end: u64, next_seq: u64) {
    let mut staging = shared.staging.lock();
    debug_assert!(staging.bytes.is_empty(), "staged frames of another segment");
    staging.segment = Some(segment.clone());
    staging.offset = end;
    staging.next_seq = next_seq;
}

/// Gives both staging buffers their full size, every page touched, once at open. Grown
/// while appending, a buffer would take fresh pages on the appending thread, a page fault
/// each, and on a virtual machine that hands free memory back to its host such a fault can
/// take milliseconds (benches/README.md, T15).
fn warm_staging(shared: &Shared) {
    #[expect(
        clippy::slow_vector_initialization,
        reason = "the point is to write every page: `vec![0; n]` takes zeroed pages untouched"
    )]
    let warm = || {
        let mut buffer = Vec::with_capacity(STAGE_BYTES);
        buffer.resize(STAGE_BYTES, 0u8);
        buffer.clear();
        buffer
    };
    let (bytes, spare) = (warm(), warm());
    // The log was just opened: nothing is staged yet.
    let mut staging = shared.staging.lock();
    staging.bytes = bytes;
    staging.spare = spare;
}

/// Prepares the next segment's file in the background, off the append path [SEG-08].
fn spawn_spare(shared: &Arc<Shared>, segment_bytes: u64) -> JoinHandle<Result<SpareFile>> {
    let shared = shared.clone();
    std::thread::spawn(move || {
        if let Some(spare) = take_recycled(&shared, true) {
            return Ok(spare);
        }
        let path = shared.dir.join(dir::SPARE_FILE);
        let file = durable::create_zeroed(&*shared.io, &path, segment_bytes)?;
        Ok(SpareFile {
            file,
            recycled: false,
        })
    })
}

/// Starts the packer thread, which packs sealed segments [PACK-01].
fn spawn_packer(shared: &Arc<Shared>, packer: &Arc<Packer>, level: i32) -> Option<JoinHandle<()>> {
    let (shared, packer) = (shared.clone(), packer.clone());
    let spawned = std::thread::Builder::new()
        .name("esl-log-pack".into())
        .spawn(move || packer.run(&shared, level));
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            // Packing only saves space: the log works without it.
            tracing::warn!(error = %error_chain(&error), "could not start the packer thread; sealed segments stay as written");
            None
        }
    }
}

/// Starts the flusher thread, which writes full staging buffers [LOG-02].
fn spawn_flusher(shared: &Arc<Shared>) -> Option<JoinHandle<()>> {
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("esl-replay-flush".into())
        .spawn(move || {
            while shared.wait_flush_request() {
                // A failed write poisons the log, and the next append reports it.
                if let Err(error) = shared.flush() {
                    tracing::error!(error = %error_chain(&error), "could not write appended records");
                    return;
                }
            }
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "cannot start the flusher thread; appends write their own buffers");
            None
        }
    }
}

/// How often the watermark thread looks for a moved watermark while it moves, and at most
/// while it does not ([META-04]): a follower learns of a sync within a millisecond under
/// load, and an idle writer's thread wakes 50 times a second.
const WATERMARK_POLL: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(20));

/// Starts the thread that writes the durable watermark to the watermark file ([META-04]). It
/// holds no reference to the log, and stops once the log is closed or gone.
fn spawn_watermark(shared: &Arc<Shared>) {
    let weak = Arc::downgrade(shared);
    let spawned = std::thread::Builder::new()
        .name("esl-replay-watermark".into())
        .spawn(move || {
            let (busy, idle) = WATERMARK_POLL;
            let mut pause = busy;
            // The closure takes the log and drops it: nothing holds it while asleep.
            while let Some(moved) = weak.upgrade().and_then(|shared| shared.publish_watermark()) {
                pause = if moved { busy } else { (pause * 2).min(idle) };
                std::thread::sleep(pause);
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(error = %error_chain(&error), "cannot start the watermark thread; followers will sync for themselves");
    }
}

/// Starts the sync thread: it syncs appends under the group-commit and periodic policies,
/// and finishes rolls under every policy but `EveryAppend` (which rolls on its own thread).
fn spawn_syncer(shared: &Arc<Shared>, policy: SyncPolicy) -> Option<JoinHandle<()>> {
    if policy == SyncPolicy::EveryAppend {
        return None;
    }
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("esl-replay-sync".into())
        .spawn(move || sync_loop(&shared, policy));
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::error!(error = %error_chain(&error), "cannot start the sync thread; appends stay durable only through sync()");
            None
        }
    }
}

/// The sync thread: waits for unsynced appends (or a roll to finish), then syncs and
/// publishes the watermark.
fn sync_loop(shared: &Shared, policy: SyncPolicy) {
    let mut looked_for_truncations = Instant::now();
    let roll = || !shared.pending_rolls.lock().is_empty();
    let pending = || {
        roll()
            || (policy != SyncPolicy::OsOnly
                && shared.next.load(Ordering::SeqCst) > shared.durable.load(Ordering::SeqCst))
    };
    loop {
        // Whether a sync is due (`false`: idle for a while, time to look for truncations).
        let due = {
            let mut state = shared.sync.lock();
            loop {
                if state.shutdown {
                    return;
                }
                match policy {
                    SyncPolicy::Periodic { interval } => {
                        shared.sync_wake.wait_for(&mut state, interval);
                        if state.shutdown {
                            return;
                        }
                        if pending() {
                            break true;
                        }
                    }
                    _ => {
                        if pending() {
                            if let SyncPolicy::GroupCommit { max_delay, .. } = policy
                                && max_delay.is_zero()
                                && !roll()
                            {
                                linger(shared, &mut state);
                            }
                            break true;
                        }
                        // Announce idleness, then look again: an appender either sees the flag
                        // and wakes us (under the lock we hold until we wait) or published
                        // before our second look.
                        shared.sync_idle.store(true, Ordering::SeqCst);
                        let idle = !pending()
                            && shared
                                .sync_wake
                                .wait_for(&mut state, TRUNCATION_CHECK)
                                .timed_out();
                        shared.sync_idle.store(false, Ordering::SeqCst);
                        if idle {
                            break false;
                        }
                    }
                }
            }
        };
        if due {
            if let SyncPolicy::GroupCommit {
                max_delay,
                max_bytes,
            } = policy
                && !max_delay.is_zero()
            {
                gather(shared, max_delay, max_bytes);
            }
            let synced = if policy == SyncPolicy::OsOnly {
                shared.finish_rolls()
            } else {
                shared.sync_pending()
            };
            if synced.is_err() {
                return;
            }
        }
        if looked_for_truncations.elapsed() >= TRUNCATION_CHECK {
            looked_for_truncations = Instant::now();
            shared.forget_truncated_elsewhere();
        }
    }
}

/// How often the sync thread looks for segments that a truncation in another process deleted
/// (at most; also at each roll), so that their space is freed while the writer runs.
const TRUNCATION_CHECK: Duration = Duration::from_secs(1);

/// How long the group-commit sync thread leaves appends to the threads waiting for them
/// before it syncs them itself. A waiting thread syncs at once ([`Shared::try_lead_sync`]):
/// no thread hand-off on its way to durability. Records nobody waits for are durable within
/// this, plus a sync.
const LINGER: Duration = Duration::from_micros(250);

/// Waits on the sync state until `LINGER` passes or the log shuts down [DUR-01].
fn linger(shared: &Shared, state: &mut parking_lot::MutexGuard<'_, shared::SyncState>) {
    let deadline = Instant::now() + LINGER;
    while !state.shutdown {
        if shared.sync_wake.wait_until(state, deadline).timed_out() {
            return;
        }
    }
}

/// Waits up to `max_delay` for more appends, or until `max_bytes` are pending.
fn gather(shared: &Shared, max_delay: Duration, max_bytes: u64) {
    // A delay too large for the clock gathers until `max_bytes` are pending.
    let deadline = super::deadline_after(max_delay);
    let staged_end = || {
        let staging = shared.staging.lock();
        staging.offset + staging.bytes.len() as u64
    };
    let started_at = staged_end();
    while deadline.is_none_or(|deadline| Instant::now() < deadline) {
        if staged_end().saturating_sub(started_at) >= max_bytes {
            return;
        }
        std::thread::sleep(Duration::from_micros(50).min(max_delay));
    }
}

impl Log {
    /// The log's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The segment currently appended to.
    #[must_use]
    pub fn active_segment(&self) -> SegmentId {
        self.active.id
    }
}

pub(crate) fn write_start(io: &dyn super::io::Io, dir: &Path, start: u64) -> Result<()> {
    durable::replace_file(
        io,
        &dir.join(dir::START_FILE),
        &StartMark { start }.encode(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appends that stay below a staging buffer's size write into the buffer made at open:
    /// it is never reallocated, so the appending thread takes no fresh pages.
    #[test]
    fn appends_below_a_staging_buffer_take_no_fresh_memory() {
        let dir = tempfile::tempdir().unwrap();
        let options = LogOptions {
            sync_policy: SyncPolicy::OsOnly,
            ..LogOptions::default()
        };
        let (mut log, _) = Log::open(dir.path(), options).unwrap();
        let buffer = |log: &Log| {
            let staging = log.shared.staging.lock();
            (
                staging.bytes.as_ptr(),
                staging.bytes.capacity(),
                staging.bytes.len(),
            )
        };
        let (at_open, capacity, _) = buffer(&log);
        assert!(capacity >= STAGE_BYTES, "{capacity} bytes at open");
        let payload = [7u8; 1000];
        for _ in 0..(STAGE_BYTES / 2 / payload.len()) {
            log.append(&payload).unwrap();
        }
        let (now, now_capacity, staged) = buffer(&log);
        assert!(staged >= STAGE_BYTES / 2, "{staged} bytes staged");
        assert_eq!((now, now_capacity), (at_open, capacity));
        log.close().unwrap();
    }
}
