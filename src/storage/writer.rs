//! The writer: append, batch append, segment roll, durability policies and clean close.
//!
//! Appends copy the frame into the mapped, preallocated active segment and publish its end;
//! no system call is made on the append path unless the policy is `EveryAppend` or the
//! segment is full. Syncs run on a dedicated thread (group commit and periodic policies) that
//! publishes a durable-sequence watermark. See format/recovery.md for the numbered steps of
//! a roll and a close and what recovery does after a crash at each.

use std::fs::File;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::dir;
use super::durable;
use super::error::{Error, IoOp, Result};
use super::frame::{self, FRAME_HEADER_LEN, FRAME_PAYLOAD_LIMIT, FrameKind};
use super::header::{FileHeader, HEADER_LEN, SEGMENT_MAGIC};
use super::id::{SegmentId, Seq};
use super::index::{IndexEntry, IndexFooter};
use super::io::mmap::SegmentMap;
use super::io::write_all_at;
use super::meta::{CleanMark, StartMark};
use super::options::{LogOptions, ReadStrategy, SyncPolicy};
use super::reader::{Durability, Reader, TruncateReport};
use super::recovery::{self, RecoveryReport};
use super::segment::{Parts, SegmentData};
use super::shared::{self, Shared, Slot};

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
    map: Arc<SegmentMap>,
    end: u64,
    next_seq: u64,
    /// The active segment carries a seal but its successor could not be created yet.
    sealed_without_successor: bool,
    spare: Spare,
    syncer: Option<JoinHandle<()>>,
    scratch: Vec<u8>,
    /// The frame being written with `pwrite` under `EveryAppend`.
    frame: Vec<u8>,
    _lock: File,
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
        options.validate()?;
        let dir = dir.as_ref();
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
        let clean_bytes = std::fs::read(&clean_path).ok();
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

        let recovered = match segments.last() {
            Some(&last) => recovery::recover_active(
                &*io,
                dir,
                last,
                clean,
                options.recovery_mode,
                FRAME_PAYLOAD_LIMIT,
                &mut report,
            )?,
            None => {
                segments.push(start);
                recovery::Recovered {
                    parts: create_segment(&*io, dir, start, options.segment_bytes, None)?,
                }
            }
        };
        // Valid or not, the marker must not outlive this open: a crash from here on is unclean.
        if clean_bytes.is_some() {
            durable::remove_files(&*io, dir, &[clean_path])?;
        }
        drop(retention);

        let mut parts = recovered.parts;
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
        let map = Arc::new(SegmentMap::writable(&parts.file, &parts.path)?);
        let active = Arc::new(parts.into_data(shared_map(options.read_strategy, &map)));
        let shared = Shared::new(dir, io, options.read_strategy, FRAME_PAYLOAD_LIMIT, false);
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
        *shared.active.lock() = Some(active.clone());
        report.segments = segments.len();
        report.first_seq = shared.first_seq();
        report.next_seq = next_seq;

        let mut log = Log {
            shared: Arc::new(shared),
            options,
            active,
            map,
            end,
            next_seq,
            sealed_without_successor: sealed,
            spare: Spare::None,
            syncer: None,
            scratch: Vec::new(),
            frame: Vec::new(),
            _lock: lock,
            closed: false,
        };
        // The successor of a sealed last segment is created by the first append, not here:
        // opening (to prune, say) must work on a disk without room for a segment [REC-06].
        report.pending_roll = sealed;
        log.syncer = spawn_syncer(&log.shared, log.options.sync_policy);
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
    /// released, but nothing is synced and no clean-shutdown marker is written. Bytes already
    /// copied into the mapped segment stay in the page cache, exactly as after `SIGKILL`.
    /// For crash tests.
    #[doc(hidden)]
    pub fn simulate_crash(mut self) {
        self.closed = true;
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        {
            let mut state = self.shared.sync.lock();
            state.shutdown = true;
            self.shared.sync_wake.notify_all();
        }
        if let Some(handle) = self.syncer.take() {
            let _ = handle.join();
        }
        if let Spare::Preparing(handle) = std::mem::replace(&mut self.spare, Spare::None) {
            let _ = handle.join();
        }
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
            let salt = self.active.salt;
            if self.options.sync_policy == SyncPolicy::EveryAppend {
                // Written through the file, not the map: a sync of pages dirtied with `pwrite`
                // is much cheaper than one of pages dirtied through a shared mapping, and each
                // append syncs. Readers see the bytes through their maps all the same.
                let mut frame = std::mem::take(&mut self.frame);
                frame.clear();
                frame.resize(len, 0);
                frame::encode_into(&mut frame, salt, seq, kind, body);
                let written = write_all_at(
                    &*self.options.io,
                    &self.active.file,
                    &frame,
                    offset,
                    &self.active.path,
                );
                self.frame = frame;
                written?;
            } else {
                let written = self.map.write(offset, len, |out| {
                    frame::encode_into(out, salt, seq, kind, body)
                });
                debug_assert!(written.is_some(), "place() guarantees the frame fits");
            }
            let mut index = self.active.index.write();
            if index.wants(offset) {
                index.push(IndexEntry {
                    seq,
                    offset: u32::try_from(offset).unwrap_or(u32::MAX),
                });
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
        if self.sealed_without_successor || (!empty && self.end + needed > self.map.len() as u64) {
            self.roll()?;
        }
        if self.end + needed > self.map.len() as u64 {
            return Err(Error::PayloadTooLarge {
                len: len as u64,
                max: self.map.len() as u64,
            });
        }
        // Prepare the next segment's file once this one is half full: off the append path,
        // and only for logs that will actually roll.
        if self.end * 2 >= self.map.len() as u64 {
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
                    error = shared::error_chain(&error),
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

    /// Publishes written frames to readers (and, under `EveryAppend`, syncs first).
    fn publish(&mut self) -> Result<()> {
        if self.active.end() == self.end && !self.sealed_without_successor {
            return Ok(());
        }
        // After a failed sync, a later sync that succeeds proves nothing about the frames the
        // failed one covered (fsyncgate): never publish them or move the durable watermark.
        self.shared.check_poison()?;
        if self.options.sync_policy == SyncPolicy::EveryAppend {
            if let Err(source) = self.options.io.sync_data(&self.active.file) {
                let error = Error::io(IoOp::Sync, &self.active.path, source);
                self.shared.poison(&error);
                self.discard_unpublished();
                return Err(error);
            }
            self.shared.durable.store(self.next_seq, Ordering::Release);
        }
        self.active.end_seq.store(self.next_seq, Ordering::Release);
        self.active.end.store(self.end, Ordering::Release);
        self.shared.next.store(self.next_seq, Ordering::SeqCst);
        self.shared.appended.notify(usize::MAX);
        if self.shared.sync_idle.load(Ordering::SeqCst) {
            let _state = self.shared.sync.lock();
            self.shared.sync_wake.notify_one();
        }
        if self.options.sync_policy == SyncPolicy::EveryAppend {
            self.shared.notify_durable();
        }
        Ok(())
    }

    /// Forgets frames written but not published (their append failed): zeroes them in the
    /// page cache, so that a reopen in this boot does not bring back a record whose append
    /// reported an error, and moves the write position back. Best effort: after a failed
    /// sync nothing about those pages is certain, and the log is poisoned anyway.
    fn discard_unpublished(&mut self) {
        let published = self.active.end();
        if let Ok(len) = usize::try_from(self.end.saturating_sub(published)) {
            let _ = self.map.write(published, len, |bytes| bytes.fill(0));
        }
        self.end = published;
        self.next_seq = self.active.end_seq();
        self.active.index.write().truncate_from(published);
    }

    /// Seals the active segment and continues in a new one [ROLL-01..06].
    fn roll(&mut self) -> Result<()> {
        self.publish()?;
        let old = self.active.clone();
        if !self.sealed_without_successor {
            // 1. The seal frame, after the last record.
            let (salt, seq) = (old.salt, self.next_seq);
            let written = self.map.write(self.end, FRAME_HEADER_LEN, |out| {
                frame::encode_into(out, salt, seq, FrameKind::Seal, &[])
            });
            debug_assert!(
                written.is_some(),
                "a seal always fits: place() reserves room for it"
            );
            // 2. Every record and the seal durable.
            if let Err(source) = self.options.io.sync_data(&old.file) {
                let error = Error::io(IoOp::Sync, &old.path, source);
                self.shared.poison(&error);
                return Err(error);
            }
            self.sealed_without_successor = true;
            self.shared
                .durable
                .fetch_max(self.next_seq, Ordering::AcqRel);
            self.shared.notify_durable();
            // 3. The complete index; it can be rebuilt, so failing here is not fatal.
            let footer = IndexFooter {
                end_seq: seq,
                seal_offset: u32::try_from(self.end).unwrap_or(u32::MAX),
            };
            if let Err(error) =
                old.persist_index(&*self.options.io, &self.shared.dir, u64::MAX, Some(footer))
            {
                tracing::warn!(%error, segment = %old.id, "could not write the index of a sealed segment");
            }
        }
        // 4-5. The successor: header durable, then renamed into place and the directory synced.
        if matches!(self.spare, Spare::Preparing(_)) {
            self.spare = self.collect_spare();
        }
        let spare = match std::mem::replace(&mut self.spare, Spare::None) {
            Spare::Ready(file) => Some(file),
            Spare::None | Spare::Preparing(_) | Spare::Failed => None,
        };
        let parts = create_segment(
            &*self.options.io,
            &self.shared.dir,
            self.next_seq,
            self.options.segment_bytes,
            spare,
        )?;
        let map = Arc::new(SegmentMap::writable(&parts.file, &parts.path)?);
        let new = Arc::new(parts.into_data(shared_map(self.options.read_strategy, &map)));
        // 6. Publish: readers find the successor before they see the old segment sealed.
        self.shared.slots.write().push(Slot::loaded(new.clone()));
        *self.shared.active.lock() = Some(new.clone());
        old.sealed.store(true, Ordering::Release);
        self.active = new;
        self.map = map;
        self.end = HEADER_LEN as u64;
        self.sealed_without_successor = false;
        tracing::debug!(segment = %self.active.id, "rolled to a new segment");
        Ok(())
    }

    fn shutdown(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        self.stop_threads();
        self.publish()?;
        self.shared.sync_now()?;
        let io = &*self.options.io;
        self.active
            .persist_index(io, &self.shared.dir, u64::MAX, None)?;
        self.active.sync_index(io, &self.shared.dir)?;
        let mark = CleanMark {
            segment: self.active.id.0,
            salt: self.active.salt,
            end_offset: self.end,
            next_seq: self.next_seq,
        };
        durable::replace_file(io, &self.shared.dir.join(dir::CLEAN_FILE), &mark.encode())?;
        tracing::debug!(dir = %self.shared.dir.display(), next_seq = self.next_seq, "log closed cleanly");
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::warn!(%error, "log was not closed cleanly; the next open will scan its tail");
        }
    }
}

/// Creates the segment starting at `base` [ROLL-04] [ROLL-05]:
///
/// 1. a zeroed, synced file (the spare, if one was prepared in the background);
/// 2. its header written and synced;
/// 3. renamed to its segment name, and the directory synced.
fn create_segment(
    io: &dyn super::io::Io,
    dir: &Path,
    base: u64,
    segment_bytes: u64,
    spare: Option<File>,
) -> Result<Parts> {
    let spare_path = dir.join(dir::SPARE_FILE);
    let file = match spare {
        Some(file) if file.metadata().is_ok_and(|m| m.len() == segment_bytes) => file,
        _ => durable::create_zeroed(io, &spare_path, segment_bytes)?,
    };
    let header = FileHeader::new(base, rand::random());
    write_all_at(io, &file, &header.encode(SEGMENT_MAGIC), 0, &spare_path)?;
    io.sync_data(&file)
        .map_err(|e| Error::io(IoOp::Sync, &spare_path, e))?;
    let path = dir::segment_path(dir, base);
    durable::rename(io, dir, &spare_path, &path)?;
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
    Preparing(JoinHandle<Result<File>>),
    Ready(File),
    /// Preparation failed (already reported); the roll creates the file itself.
    Failed,
}

/// Readers in this process read the writer's map of a segment when they read through maps.
fn shared_map(strategy: ReadStrategy, map: &Arc<SegmentMap>) -> Option<Arc<SegmentMap>> {
    (strategy == ReadStrategy::Mmap).then(|| map.clone())
}

/// Prepares the next segment's file in the background, off the append path [SEG-08].
fn spawn_spare(shared: &Arc<Shared>, segment_bytes: u64) -> JoinHandle<Result<File>> {
    let io = shared.io.clone();
    let path = shared.dir.join(dir::SPARE_FILE);
    std::thread::spawn(move || durable::create_zeroed(&*io, &path, segment_bytes))
}

fn spawn_syncer(shared: &Arc<Shared>, policy: SyncPolicy) -> Option<JoinHandle<()>> {
    if matches!(policy, SyncPolicy::EveryAppend | SyncPolicy::OsOnly) {
        return None;
    }
    let shared = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("esl-replay-sync".into())
        .spawn(move || sync_loop(&shared, policy));
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            tracing::error!(%error, "cannot start the sync thread; appends stay durable only through sync()");
            None
        }
    }
}

/// The sync thread: waits for unsynced appends, then syncs and publishes the watermark.
fn sync_loop(shared: &Shared, policy: SyncPolicy) {
    let pending = || shared.next.load(Ordering::SeqCst) > shared.durable.load(Ordering::SeqCst);
    loop {
        {
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
                            break;
                        }
                    }
                    _ => {
                        if pending() {
                            break;
                        }
                        // Announce idleness, then look again: an appender either sees the flag
                        // and wakes us (under the lock we hold until we wait) or published
                        // before our second look.
                        shared.sync_idle.store(true, Ordering::SeqCst);
                        if !pending() {
                            shared.sync_wake.wait(&mut state);
                        }
                        shared.sync_idle.store(false, Ordering::SeqCst);
                    }
                }
            }
        }
        if let SyncPolicy::GroupCommit {
            max_delay,
            max_bytes,
        } = policy
            && !max_delay.is_zero()
        {
            gather(shared, max_delay, max_bytes);
        }
        if shared.sync_now().is_err() {
            return;
        }
    }
}

/// Waits up to `max_delay` for more appends, or until `max_bytes` are pending.
fn gather(shared: &Shared, max_delay: Duration, max_bytes: u64) {
    // A delay too large for the clock gathers until `max_bytes` are pending.
    let deadline = super::deadline_after(max_delay);
    let Some(active) = shared.active.lock().clone() else {
        return;
    };
    let started_at = active.end();
    while deadline.is_none_or(|deadline| Instant::now() < deadline) {
        if active.end().saturating_sub(started_at) >= max_bytes {
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
