//! Readers: cursors over records, point reads, live tail, and prefix truncation.
//!
//! A [`Reader`] is cheap to clone, `Send + Sync`, and reads while the writer appends. It is
//! either attached to a writer in this process ([`Log::reader`]) or opened read-only with
//! [`Reader::open`], which takes no lock and works beside a writer in another process.
//!
//! [`Cursor::next`] is a lending iterator: the payload it returns borrows from a memory map
//! or from the cursor's own buffer, so it lives until the next call. [`Reader::iter`] adapts
//! it to an ordinary `Iterator` of owned records.
//!
//! [`Log::reader`]: super::Log::reader

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::dir;
use super::durable;
use super::error::{CorruptKind, Error, Result, error_chain};
use super::frame::{self, FRAME_PAYLOAD_LIMIT as READ_PAYLOAD_LIMIT};
use super::header::HEADER_LEN;
use super::id::{SegmentId, Seq};
use super::options::{LogOptions, ReadStrategy};
use super::pack::Inflater;
use super::readahead;
use super::segment::{self, FileWindow, SegmentData};
use super::shared::{self, Shared, Slot};
use super::unpack_ahead::Unpacking;

/// A record as a cursor yields it: its sequence and a borrowed payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The record's sequence.
    pub seq: Seq,
    /// The payload, decompressed if it was stored compressed.
    pub payload: &'a [u8],
    /// Bytes the record's frame takes in its segment: its header and its payload as stored
    /// (compressed in a packed segment).
    pub stored_bytes: u64,
}

/// What a prefix truncation did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TruncateReport {
    /// The first sequence readers can see now.
    pub start: Seq,
    /// Whether the start moved.
    pub moved: bool,
    /// Segment files deleted.
    pub segments_removed: usize,
    /// Bytes of segment and index files deleted.
    pub bytes_reclaimed: u64,
    /// How many of the segments removed kept their files for the writer's next segments
    /// ([TRUNC-05]); they are counted in `segments_removed` and `bytes_reclaimed`.
    pub recycled: usize,
}

/// A cheap, cloneable handle for reading a log.
#[derive(Clone, Debug)]
pub struct Reader {
    shared: Arc<Shared>,
}

impl Reader {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Reader {
        Reader { shared }
    }

    pub(crate) fn shared(&self) -> &Shared {
        &self.shared
    }

    /// Opens a log read-only, without the writer lock, beside a writer in any process [RD-01].
    ///
    /// Only `read_strategy` and `io` of the options are used. Frames are checked against the
    /// format's own payload limit, not `max_payload_bytes`, which only bounds new appends.
    ///
    /// # Errors
    ///
    /// [`Error::NotALog`] if the directory holds no segments, corruption of the last segment's
    /// header, and I/O errors.
    pub fn open(dir: impl AsRef<Path>, options: &LogOptions) -> Result<Reader> {
        Reader::open_at(dir.as_ref(), options)
    }

    fn open_at(dir: &Path, options: &LogOptions) -> Result<Reader> {
        // The last segment listed can be gone by the time it is opened (the writer rolled and
        // a truncation removed it): list again, a few times.
        let mut tries = 0;
        let (listing, tail) = loop {
            let listing = dir::list(dir)?;
            let Some(&last) = listing.segments.last() else {
                return Err(Error::NotALog {
                    dir: dir.to_path_buf(),
                });
            };
            match shared::open_tail(dir, last, options.read_strategy, READ_PAYLOAD_LIMIT) {
                Ok(tail) => break (listing, tail),
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound && tries < 3 =>
                {
                    tries += 1;
                }
                Err(error) => return Err(error),
            }
        };
        let shared = Shared::new(
            dir,
            options.io.clone(),
            options.read_strategy,
            READ_PAYLOAD_LIMIT,
            true,
        );
        let next = tail.end_seq();
        {
            let mut slots = shared.slots.write();
            for base in listing.segments.iter().take(listing.segments.len() - 1) {
                slots.push(Slot::unloaded(*base));
            }
            slots.push(Slot::loaded(Arc::new(tail)));
        }
        // Not raised to the first segment's base: records between the two are missing, and
        // reads report them [REC-12].
        let start = shared::read_start(dir)?.unwrap_or(1).max(1);
        shared.start.store(start, Ordering::Release);
        shared.next.store(next, Ordering::Release);
        let reader = Reader {
            shared: Arc::new(shared),
        };
        // The last segment may already be sealed with a successor created since the listing.
        reader.shared.refresh()?;
        reader.shared.follow_watermark();
        Ok(reader)
    }

    /// The error for records this reader's log acknowledged that no segment file holds
    /// [REC-12]: below the first segment, or, for a follower, after a last segment that
    /// ends in its seal; or that damage at the end of the last segment hides ([REC-01],
    /// [REC-03]). Lookups that find nothing must report it rather than "absent".
    ///
    /// # Errors
    ///
    /// I/O errors reading the start, watermark or clean-shutdown file.
    pub fn missing_records(&self) -> Result<Option<Error>> {
        let shared = &self.shared;
        shared.refresh()?;
        let first = shared.slots.read().first().map(|s| s.base);
        if let Some(first) = first {
            let start = shared.start.load(Ordering::Acquire);
            if first > start {
                let missing = start..first;
                return Ok(Some(super::recovery::missing_error(
                    SegmentId(first),
                    0,
                    &missing,
                )));
            }
        }
        let last = shared.slots.read().last().and_then(|s| s.get().cloned());
        let Some(last) = last else {
            return Ok(None);
        };
        if let Some((offset, kind)) = last.damaged_end.get() {
            return Ok(Some(last.corrupt(*offset, kind.clone())));
        }
        Ok(shared
            .missing_tail()?
            .map(|missing| super::recovery::missing_error(last.id, last.end(), &missing)))
    }

    /// Re-reads the start file, which a truncation in another handle or process may have
    /// moved, and returns the first sequence readers can see.
    ///
    /// # Errors
    ///
    /// A damaged start file; I/O errors.
    pub fn reload_start(&self) -> Result<Seq> {
        self.shared.reload_start()?;
        Ok(self.first_seq())
    }

    /// The first sequence readers can see (equal to [`Reader::next_seq`] when empty).
    #[must_use]
    pub fn first_seq(&self) -> Seq {
        Seq(self.shared.first_seq())
    }

    /// The sequence the next record will get; every sequence below it that is not below
    /// [`Reader::first_seq`] can be read. Followers look for new records first.
    ///
    /// # Errors
    ///
    /// I/O or corruption met while a follower looks for new records.
    pub fn next_seq(&self) -> Result<Seq> {
        self.shared.refresh()?;
        Ok(Seq(self.shared.next.load(Ordering::Acquire)))
    }

    /// A cursor yielding records from `from` on (or from the first sequence, if `from` is
    /// below it) [RD-02].
    ///
    /// # Errors
    ///
    /// Corruption or I/O met while seeking.
    pub fn cursor(&self, from: Seq) -> Result<Cursor> {
        if self.shared.follower {
            // Another process may have truncated: a new cursor never starts below the start.
            // (Cheap unless the start file was replaced since this reader last read it.)
            let start = self.shared.reload_start()?;
            if start > self.shared.next.load(Ordering::Acquire) {
                // The truncation is past the end this reader knows: look for the records
                // before the start too, or the cursor would begin below it.
                self.shared.refresh()?;
            }
        }
        let mut cursor = Cursor::new(self.shared.clone(), from.0);
        match cursor.seek(from.0.max(self.shared.first_seq())) {
            // Records missing below the first segment: `next` reports them, and
            // `skip_damage` moves past them [REC-12].
            Ok(())
            | Err(Error::Corrupt {
                kind: CorruptKind::MissingSegments { .. },
                ..
            }) => Ok(cursor),
            Err(error) => Err(error),
        }
    }

    /// Reads one record by sequence; `None` if it is below the start or not yet written.
    ///
    /// The only allocation is the returned payload's (reading with `pread`, cursors reuse
    /// the read buffers of cursors dropped before).
    ///
    /// # Errors
    ///
    /// Corruption or I/O.
    pub fn get(&self, seq: Seq) -> Result<Option<Vec<u8>>> {
        if seq.0 < self.shared.first_seq() {
            return Ok(None);
        }
        let mut cursor = self.cursor(seq)?;
        Ok(cursor
            .next()?
            .filter(|r| r.seq == seq)
            .map(|r| r.payload.to_vec()))
    }

    /// Owned records from `from` to the current end.
    ///
    /// # Errors
    ///
    /// Corruption or I/O met while seeking; later errors are yielded as items.
    pub fn iter(&self, from: Seq) -> Result<Records> {
        Ok(Records {
            cursor: self.cursor(from)?,
            done: false,
        })
    }

    /// Blocks until a record with sequence `seq` exists (or `timeout` passes); returns whether
    /// it exists [TAIL-01].
    ///
    /// Readers attached to a writer in this process are woken by the writer. Followers check
    /// the end of the active segment with a backoff from 1 ms to 20 ms, reading only the
    /// page cache while nothing changes.
    ///
    /// # Errors
    ///
    /// I/O or corruption met while a follower looks for new records.
    pub fn wait_for(&self, seq: Seq, timeout: Duration) -> Result<bool> {
        // A timeout too large for the clock waits without a deadline.
        let deadline = super::deadline_after(timeout);
        let mut pause = Duration::from_millis(1);
        loop {
            if self.next_seq()? > seq {
                return Ok(true);
            }
            if self.shared.follower {
                let left = super::time_left(deadline).unwrap_or(pause);
                if left.is_zero() {
                    return Ok(false);
                }
                std::thread::sleep(pause.min(left));
                pause = (pause * 2).min(Duration::from_millis(20));
                continue;
            }
            let listener = self.shared.appended.listen();
            if self.shared.next.load(Ordering::Acquire) > seq.0 {
                return Ok(true);
            }
            match deadline {
                Some(deadline) => {
                    if !listener.wait_deadline(deadline) {
                        return Ok(self.shared.next.load(Ordering::Acquire) > seq.0);
                    }
                }
                None => listener.wait(),
            }
        }
    }

    /// Waits until a record with sequence `seq` exists; for async code (any executor) [TAIL-02].
    ///
    /// Followers are served by a background thread that checks for new records with the same
    /// backoff as [`Reader::wait_for`] and wakes waiting tasks.
    ///
    /// # Errors
    ///
    /// I/O or corruption met while a follower looks for new records.
    pub async fn wait_for_async(&self, seq: Seq) -> Result<()> {
        if self.shared.follower {
            self.start_watcher();
        }
        loop {
            if self.shared.next.load(Ordering::Acquire) > seq.0 {
                return Ok(());
            }
            let listener = self.shared.appended.listen();
            if self.shared.next.load(Ordering::Acquire) > seq.0 {
                return Ok(());
            }
            listener.notified().await;
        }
    }

    /// Every sequence below this is durable, as far as this handle knows: beside a writer
    /// in this process, its watermark [DUR-01]; in a follower, after looking for new
    /// records, what the writer's watermark file says ([META-04]) or what this follower made
    /// durable itself ([`Reader::sync`]). A follower of a writer that wrote no watermark
    /// file knows of nothing durable until it syncs.
    ///
    /// # Errors
    ///
    /// I/O or corruption met while a follower looks for new records.
    pub fn durable_seq(&self) -> Result<Seq> {
        if self.shared.follower {
            self.shared.refresh()?;
            self.shared.follow_watermark();
        }
        Ok(Seq(self.shared.durable.load(Ordering::Acquire)))
    }

    /// Makes every record this handle sees durable and returns [`Reader::durable_seq`]:
    /// beside a writer in this process, the writer's sync [DUR-02]; in a follower, syncs
    /// through its own descriptors of the segments no finished roll covers, then the
    /// directory (as a follower's truncation does, [TRUNC-01]). For a consumer that must
    /// not wait on a writer that does not sync (`OsOnly`) or that died.
    ///
    /// # Errors
    ///
    /// I/O errors; [`Error::Poisoned`] beside a writer whose sync failed.
    pub fn sync(&self) -> Result<Seq> {
        self.shared.refresh()?;
        self.shared.sync_published()?;
        Ok(Seq(self.shared.durable.load(Ordering::Acquire)))
    }

    /// Waits until the record with sequence `seq` exists and is durable; for async code (any
    /// executor). Beside a writer in this process, the writer's watermark says so [DUR-03].
    /// A follower's background thread reads the writer's watermark file ([META-04]) every
    /// millisecond while a task waits; when the file has not moved for
    /// [`WATERMARK_PATIENCE`] with records beyond it (a writer under `OsOnly`, one that died,
    /// or one too old to write the file), it syncs them itself ([`Reader::sync`]).
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] beside a writer whose sync failed; in a follower, the error of
    /// its own sync.
    pub async fn wait_durable_async(&self, seq: Seq) -> Result<()> {
        let shared = &*self.shared;
        let _wanting = Wanting::new(shared);
        if shared.follower {
            self.start_watcher();
        }
        loop {
            // Listening first: whatever is announced after the checks below wakes it.
            let listener = shared.durable_moved.listen();
            if shared.durable.load(Ordering::Acquire) > seq.0 {
                return Ok(());
            }
            shared.check_poison()?;
            if let Some(error) = shared.sync_failure.lock().take() {
                return Err(error);
            }
            listener.notified().await;
        }
    }

    fn start_watcher(&self) {
        let weak = Arc::downgrade(&self.shared);
        self.shared.watcher.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("esl-replay-follow".into())
                .spawn(move || {
                    let mut pause = Duration::from_millis(1);
                    let mut stalled = None;
                    while let Some(shared) = weak.upgrade() {
                        let grew = match shared.refresh() {
                            Ok(grew) => grew,
                            Err(error) => {
                                tracing::warn!(error = %error_chain(&error), "follower could not look for new records");
                                false
                            }
                        };
                        let settled = shared.durable_wanted.load(Ordering::Acquire) == 0
                            || follow_durable(&shared, &mut stalled);
                        drop(shared);
                        pause = if grew || !settled {
                            Duration::from_millis(1)
                        } else {
                            (pause * 2).min(Duration::from_millis(20))
                        };
                        std::thread::sleep(pause);
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(error = %error_chain(&error), "cannot start the follower thread");
            }
        });
    }

    /// Makes `before` the new first sequence, then deletes whole segments below it [TRUNC-01].
    ///
    /// The steps (format/recovery.md): take the retention lock (serialising truncations across
    /// processes); write the new start durably; publish it to this process's readers; delete
    /// every segment whose successor starts at or below the new start; sync the directory.
    /// The active segment is never deleted, so the next sequence is never lost and numbering
    /// continues even when everything is truncated. This works from any process, beside a
    /// writer in another: the writer never reads the start file and never touches sealed
    /// segments, and deleted files stay readable through existing mappings and handles.
    ///
    /// # Errors
    ///
    /// [`Error::OutOfRange`] if `before` is beyond the next sequence; I/O errors with paths.
    pub fn truncate_prefix(&self, before: Seq) -> Result<TruncateReport> {
        let shared = &*self.shared;
        let lock = dir::lock_retention(&shared.dir)?;
        shared.refresh()?;
        let next = shared.next.load(Ordering::Acquire);
        if before.0 > next {
            return Err(Error::OutOfRange {
                requested: before,
                first: Seq(shared.first_seq()),
                next: Seq(next),
            });
        }
        let current = shared.reload_start()?;
        let mut report = TruncateReport {
            start: Seq(current.max(before.0)),
            ..TruncateReport::default()
        };
        if before.0 > current {
            // Everything below the new start must be durable before the start is: otherwise a
            // power loss could leave the start above the recovered end [TRUNC-01]. Beside the
            // writer, its watermark says whether it already is (retention's usual case), and
            // a sync that would compete with the appenders' is not needed.
            if shared.follower || before.0 > shared.durable.load(Ordering::Acquire) {
                shared.sync_tail()?;
            }
            super::writer::write_start(&*shared.io, &shared.dir, before.0)?;
            shared.start.fetch_max(before.0, Ordering::AcqRel);
            report.moved = true;
        }
        let start = shared.start.load(Ordering::Acquire);
        let doomed: Vec<u64> = {
            let slots = shared.slots.read();
            slots
                .windows(2)
                .filter(|w| w.get(1).is_some_and(|next| next.base <= start))
                .filter_map(|w| w.first().map(|s| s.base))
                .collect()
        };
        // Forgotten first, so that this process holds none of their files unless a cursor
        // is reading one.
        shared
            .slots
            .write()
            .retain(|slot| doomed.binary_search(&slot.base).is_err());
        let mut recycled = shared.recycled.lock();
        let room = dir::RECYCLE_POOL.saturating_sub(recycled.len());
        let kept: Vec<(u64, PathBuf, std::fs::File)> = doomed
            .iter()
            .rev()
            .filter_map(|base| self.recycle(*base))
            .take(room)
            .collect();
        let is_kept = |base: &u64| kept.iter().any(|(b, ..)| b == base);
        // Opened before their names go, to free their blocks in steps afterwards [TRUNC-04].
        let releases: Vec<std::fs::File> = doomed
            .iter()
            .filter(|base| !is_kept(base))
            .filter_map(|base| {
                let path = dir::segment_path(&shared.dir, *base);
                std::fs::File::options().write(true).open(path).ok()
            })
            .collect();
        let mut paths = Vec::new();
        for base in &doomed {
            if is_kept(base) {
                report.bytes_reclaimed += shared.recycle_len.load(Ordering::Relaxed);
            } else {
                let path = dir::segment_path(&shared.dir, *base);
                report.bytes_reclaimed += std::fs::metadata(&path).map_or(0, |m| m.len());
                paths.push(path);
            }
            let path = dir::index_path(&shared.dir, *base);
            report.bytes_reclaimed += std::fs::metadata(&path).map_or(0, |m| m.len());
            paths.push(path);
        }
        // Also makes the kept files' new names durable before the writer reuses them.
        durable::remove_files(&*shared.io, &shared.dir, &paths)?;
        report.recycled = kept.len();
        recycled.extend(kept.into_iter().map(|(_, path, file)| (path, file)));
        drop(recycled);
        report.segments_removed = doomed.len();
        // The files are out of the directory: freeing their blocks, which takes a while by
        // design, holds up no other truncation and no writer's open.
        drop(lock);
        for file in &releases {
            segment::release_blocks(file);
        }
        Ok(report)
    }

    /// Moves the file of segment `base`, which a truncation is removing, to its
    /// [`dir::recycle_path`] for one of the writer's next segments, if the writer recycles, the
    /// file fits (its length is the writer's segment size, and it is not packed) and no reader
    /// in any process holds it: the exclusive lock taken here, kept until the file is reused,
    /// makes every later reader take it for deleted [TRUNC-05]. `None` if it stays to be
    /// removed.
    fn recycle(&self, base: u64) -> Option<(u64, PathBuf, std::fs::File)> {
        let shared = &*self.shared;
        let len = shared.recycle_len.load(Ordering::Relaxed);
        if shared.follower || len == 0 {
            return None;
        }
        let (file, path, header, file_len) = segment::open_file(&shared.dir, base, true).ok()?;
        // Its shared lock becomes the exclusive one unless another reader holds the file.
        if file_len != len || header.is_packed() || !segment::lock_exclusive(&file) {
            return None;
        }
        let target = dir::recycle_path(&shared.dir, base);
        match shared.io.rename(&path, &target) {
            Ok(()) => Some((base, target, file)),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), segment = %SegmentId(base), "could not keep a removed segment's file for reuse; removing it");
                None
            }
        }
    }

    /// The log's directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Bytes the log's segments hold: each segment's header, frames and seal, without the
    /// zero-filled space preallocated past its end (nor the spare segment). Loads every
    /// sealed segment.
    ///
    /// # Errors
    ///
    /// Loading a segment failed.
    pub fn used_bytes(&self) -> Result<u64> {
        Ok(self.space()?.used)
    }

    /// Bytes the log's segments hold, as [`Reader::used_bytes`] counts them, and what they
    /// held before packing ([SEG-09]). Loads every sealed segment.
    ///
    /// # Errors
    ///
    /// Loading a segment failed.
    pub fn space(&self) -> Result<Space> {
        let bases: Vec<u64> = self.shared.slots.read().iter().map(|s| s.base).collect();
        let mut space = Space::default();
        for base in bases {
            if let Some(data) = self.shared.segment_for(base)? {
                let seal = if data.is_sealed() {
                    frame::FRAME_HEADER_LEN as u64
                } else {
                    0
                };
                let used = data.end() + seal;
                space.used += used + data.packed.as_ref().map_or(0, |p| p.trailer_len);
                space.unpacked += data.packed.as_ref().map_or(used, |p| p.unpacked_len);
            }
        }
        Ok(space)
    }

    /// Segment ids currently known, oldest first.
    #[must_use]
    pub fn segments(&self) -> Vec<SegmentId> {
        self.shared
            .slots
            .read()
            .iter()
            .map(|s| SegmentId(s.base))
            .collect()
    }
}

/// What a log's segments take ([`Reader::space`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Space {
    /// Bytes of the segments' headers, frames and seals (and packed segments' trailers),
    /// without the zeros preallocated past them.
    pub used: u64,
    /// The same, with each packed segment counted at its size before packing.
    pub unpacked: u64,
}

/// A position in the log that yields records in order.
///
/// Reading runs in stretches: the cursor loads its segment's published end once and decodes
/// frames up to it without looking at shared state again; only at that end does it look for
/// more (a new end, the next segment, a follower's refresh, damage recorded there).
#[derive(Debug)]
pub struct Cursor {
    shared: Arc<Shared>,
    segment: Option<Arc<SegmentData>>,
    /// The published end of `segment` as last loaded: frames below it can be read.
    end: u64,
    offset: u64,
    /// The sequence of the frame at `offset`.
    seq: u64,
    /// Records below this are skipped.
    target: u64,
    window: FileWindow,
    inflater: Inflater,
    /// The offset in `segment` at which the cursor next asks for read-ahead.
    read_ahead_at: u64,
    /// Packed frames ahead of the cursor, decompressed on two cores.
    unpacking: Unpacking,
}

impl Cursor {
    fn new(shared: Arc<Shared>, target: u64) -> Cursor {
        let window = match shared.strategy {
            ReadStrategy::Pread => shared.take_window(),
            ReadStrategy::Mmap => FileWindow::default(),
        };
        let inflater = shared.take_inflater();
        Cursor {
            shared,
            segment: None,
            end: 0,
            offset: 0,
            seq: 0,
            target,
            window,
            inflater,
            read_ahead_at: u64::MAX,
            unpacking: Unpacking::default(),
        }
    }

    /// Tells the cursor that its reader means to read about `records` more records. Only a
    /// hint, for reading fewer or more is fine: a cursor reading a packed segment in order
    /// decompresses no further ahead than that.
    pub fn will_read(&mut self, records: u64) {
        let until = self.position().0.saturating_add(records);
        self.unpacking.want_until(until);
    }

    /// The next record, or `None` at the current end of the log [RD-03].
    ///
    /// After `None`, later calls return records appended since.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming the segment and offset of a damaged frame; I/O errors.
    #[expect(
        clippy::should_implement_trait,
        reason = "a lending cursor cannot implement Iterator: each record borrows the cursor"
    )]
    #[inline]
    pub fn next(&mut self) -> Result<Option<RecordRef<'_>>> {
        let start = self.shared.start.load(Ordering::Acquire);
        if (self.offset >= self.end || self.seq < self.target || self.seq < start)
            && !self.find_next()?
        {
            return Ok(None);
        }
        // `find_next` left the cursor before a frame of its segment that it should yield.
        if self.offset >= self.read_ahead_at {
            self.read_ahead();
        }
        let Some(segment) = self.segment.as_ref() else {
            return Ok(None);
        };
        // A packed last segment whose trailer is damaged: none of its records can be read,
        // and each read of one names the damage [REC-13].
        if let Some((offset, kind)) = &segment.unreadable {
            return Err(segment.corrupt(*offset, kind.clone()));
        }
        let max = self.shared.max_payload;
        let at = (self.offset, self.seq);
        if let Some(record) = self.unpacking.next(segment, at, self.end, max)? {
            self.offset += record.frame_len as u64;
            self.seq += 1;
            return Ok(Some(RecordRef {
                seq: Seq(at.1),
                payload: self.unpacking.payload(&record),
                stored_bytes: record.frame_len as u64,
            }));
        }
        let bytes = segment.frame_at(&mut self.window, self.offset, self.end, max)?;
        let available = self.end - self.offset;
        let (compressed, payload, frame_len) =
            frame::decode_record(bytes, &segment.crc, self.seq, max, available)
                .map_err(|kind| segment.corrupt(self.offset, kind))?;
        let payload = if compressed {
            match self.inflater.inflate(payload, segment.dictionary()) {
                Some(inflated) => inflated,
                None => return Err(segment.corrupt(self.offset, CorruptKind::Decompress)),
            }
        } else {
            payload
        };
        let seq = self.seq;
        self.offset += frame_len as u64;
        self.seq += 1;
        self.unpacking.read_in_order();
        Ok(Some(RecordRef {
            seq: Seq(seq),
            payload,
            stored_bytes: frame_len as u64,
        }))
    }

    /// Asks for the mapping ahead of the cursor to be populated, and when to ask again: a
    /// cursor that has read [`readahead::SEQUENTIAL_BYTES`] of a mapped segment is reading
    /// it in order, unless it is near the segment's end ([`readahead::NEAR_END_BYTES`]).
    #[inline(never)]
    fn read_ahead(&mut self) {
        self.read_ahead_at = u64::MAX;
        let Some(segment) = self.segment.as_ref().filter(|s| s.map.is_some()) else {
            return;
        };
        self.read_ahead_at = self.offset.saturating_add(readahead::STEP_BYTES);
        // The end of an active segment moves on: a cursor near it asks again a step later.
        if self.end.saturating_sub(self.offset) < readahead::NEAR_END_BYTES {
            return;
        }
        // Requests go out a step at a time (each wakes the read-ahead thread), however
        // short the cursors reading in order are.
        let to = self
            .offset
            .saturating_add(readahead::AHEAD_BYTES)
            .min(self.end);
        let asked = segment.read_ahead.load(Ordering::Acquire);
        if asked < to.saturating_sub(readahead::STEP_BYTES) || (asked < to && to == self.end) {
            let before = segment.read_ahead.fetch_max(to, Ordering::AcqRel);
            if before < to {
                readahead::request(segment, before.max(self.offset), to);
            }
        }
    }

    /// Moves the cursor to the next frame it should yield: below its segment's published
    /// end, at or past the target and the start. `false` at the current end of the log.
    ///
    /// Every turn of the loop moves forward (to a later offset or segment) or returns.
    #[inline(never)]
    fn find_next(&mut self) -> Result<bool> {
        loop {
            let start = self.shared.start.load(Ordering::Acquire);
            if self.seq < start && self.target < start {
                self.seek(start)?;
            }
            let Some(segment) = self.segment.clone() else {
                if self.seq < self.shared.next.load(Ordering::Acquire) || self.shared.refresh()? {
                    let seq = self.seq.max(self.target);
                    self.seek(seq)?;
                    if self.segment.is_some() {
                        continue;
                    }
                }
                return Ok(false);
            };
            if self.offset < self.end {
                if self.seq >= self.target && self.seq >= start {
                    return Ok(true);
                }
                self.step_over(&segment)?;
                continue;
            }
            // At the end known: look again. `sealed` before `end`: the seal is published
            // after the frames before it, so a cursor that sees the seal also sees every
            // frame before it.
            let sealed = segment.is_sealed();
            self.end = segment.load_end();
            if self.offset < self.end {
                continue;
            }
            if sealed {
                if self.next_segment(&segment)? {
                    continue;
                }
                return Ok(false);
            }
            // A follower looks for frames the writer added; in the writer's process, this
            // writes the frames the writer has staged [LOG-02] (or waits for the thread that
            // is writing them).
            if self.shared.refresh()? || segment.load_end() > self.offset {
                self.end = segment.load_end();
                continue;
            }
            if let Some((offset, kind)) = segment.damaged_end.get()
                && *offset == self.offset
            {
                return Err(segment.corrupt(*offset, kind.clone()));
            }
            return Ok(false);
        }
    }

    /// Checks the frame at the cursor (one below the target) and moves past it. Damage
    /// before the record asked for is not in the way of it: reading goes on from the next
    /// valid frame, if that is not past the record [RD-04]; otherwise the damage is the
    /// error.
    fn step_over(&mut self, segment: &SegmentData) -> Result<()> {
        let max = self.shared.max_payload;
        let bytes = segment.frame_at(&mut self.window, self.offset, self.end, max)?;
        let available = self.end - self.offset;
        let kind = match frame::decode_record(bytes, &segment.crc, self.seq, max, available) {
            Ok((_, _, frame_len)) => {
                self.offset += frame_len as u64;
                self.seq += 1;
                return Ok(());
            }
            Err(kind) => kind,
        };
        let error = segment.corrupt(self.offset, kind);
        if self.seq < self.target
            && let Some((offset, seq)) = self.resync_point()?
            && seq <= self.target
        {
            // `resync_point` lies past the damaged frame: the cursor moves forward.
            self.unpacking.reset();
            self.offset = offset;
            self.seq = seq;
            self.window.reset();
            return Ok(());
        }
        Err(error)
    }

    /// At the seal of `segment` (the cursor's): moves to the segment that follows. `false`
    /// if there is none yet; an error if the next segment does not start where this one
    /// ends.
    fn next_segment(&mut self, segment: &SegmentData) -> Result<bool> {
        let id = segment.id;
        let seq = self.seq;
        if let Some(next) = self.shared.segment_for(seq)?.filter(|n| n.id.0 == seq) {
            // A segment boundary is where a truncation made by another process (which only
            // deletes whole segments) becomes visible to readers of this one.
            self.shared.reload_start()?;
            self.unpacking.reset();
            self.offset = HEADER_LEN as u64;
            self.end = next.load_end();
            self.segment = Some(next);
            self.read_ahead_at = self.offset + readahead::SEQUENTIAL_BYTES;
            self.window.reset();
            return Ok(true);
        }
        // The successor is not in this reader's view: a follower looks for it (and another
        // thread may have just found it, so look at the view again after).
        self.shared.refresh()?;
        // Reading goes on at the successor or, if a truncation passed it, at the new start:
        // in a later segment, so that every turn of the caller's loop moves forward.
        let want = seq.max(self.shared.start.load(Ordering::Acquire));
        if self
            .shared
            .segment_for(want)?
            .is_some_and(|found| found.id != id)
        {
            self.seek(want)?;
            return Ok(true);
        }
        // Looking may have found a truncation made by another process; then go on at its
        // new start.
        if self.shared.start.load(Ordering::Acquire) > want {
            return Ok(true);
        }
        let next = {
            let slots = self.shared.slots.read();
            slots.iter().find(|s| s.base > id.0).map(|s| s.base)
        };
        let Some(found) = next else {
            // A follower sees the seal before the writer has renamed the successor into
            // place (a roll in progress, or a writer killed mid-roll, whose next open
            // completes the roll): the log simply has nothing more yet. Unless records
            // after the seal were acknowledged: then their segment files are gone [REC-12].
            if let Some(missing) = self.shared.missing_tail()? {
                return Err(super::recovery::missing_error(id, self.end, &missing));
            }
            return Ok(false);
        };
        // The next segment does not start where this one ends: the records between are gone
        // (a segment deleted from outside). `skip_damage` goes on at `found`.
        Err(Error::Corrupt {
            segment: id,
            offset: self.end,
            kind: CorruptKind::SequenceGap {
                expected: want,
                found,
            },
        })
    }

    /// After [`Cursor::next`] failed on a damaged frame, moves past the damage: to the next
    /// valid frame of the same segment (found as recovery's classifier finds one [REC-03]),
    /// or to the next segment. Returns the sequence reading resumes at; the sequences
    /// between the damaged frame's and it cannot be read. `None` if nothing readable follows
    /// the damage in the log as known (the cursor stays at the damage, so the next call to
    /// [`Cursor::next`] fails again) [RD-04].
    ///
    /// # Errors
    ///
    /// I/O errors.
    pub fn skip_damage(&mut self) -> Result<Option<Seq>> {
        if let Some(next) = self.segment_past_gap() {
            self.seek(next)?;
            return Ok(Some(Seq(next.max(self.target))));
        }
        let Some((offset, seq)) = self.resync_point()? else {
            return Ok(None);
        };
        self.unpacking.reset();
        self.offset = offset;
        self.seq = seq;
        self.window.reset();
        Ok(Some(Seq(seq.max(self.target))))
    }

    /// At the seal of a segment whose successor is missing, or before the first segment
    /// [REC-12], the next segment there is.
    fn segment_past_gap(&self) -> Option<u64> {
        let Some(segment) = self.segment.as_deref() else {
            let first = self.shared.slots.read().first().map(|s| s.base);
            return first.filter(|first| *first > self.seq);
        };
        if !segment.is_sealed() || self.offset < segment.end() {
            return None;
        }
        let slots = self.shared.slots.read();
        slots
            .iter()
            .find(|s| s.base > segment.id.0)
            .map(|s| s.base)
            .filter(|next| *next != self.seq)
    }

    /// Where reading resumes after the damaged frame at the cursor's position: the next valid
    /// frame of the segment, or (for a sealed segment) its seal, which leads to the next.
    fn resync_point(&self) -> Result<Option<(u64, u64)>> {
        let Some(segment) = self.segment.as_deref() else {
            return Ok(None);
        };
        let end = segment.end();
        let sealed = segment.is_sealed();
        let limit = end
            + if sealed {
                frame::FRAME_HEADER_LEN as u64
            } else {
                0
            };
        if self.offset >= end {
            return Ok(None);
        }
        // Nothing of a segment whose trailer is damaged can be read [REC-13]: go on at the
        // end of its frames (its seal, which leads to the next segment).
        if segment.unreadable.is_some() {
            return Ok(Some((end, segment.end_seq())));
        }
        let found =
            match segment::last_nonzero_byte(&segment.file, &segment.path, self.offset, limit)? {
                Some(last) => segment::find_valid_frame(
                    segment.scan_file(self.shared.max_payload),
                    self.offset,
                    last,
                    self.seq,
                )?,
                None => None,
            };
        Ok(match found {
            Some(segment::Resync {
                offset,
                seq: Some(seq),
            }) => Some((offset, seq)),
            // Nothing valid in the rest of a sealed segment: go on at its seal.
            _ if sealed => Some((end, segment.end_seq())),
            _ => None,
        })
    }

    /// The sequence the next call to [`Cursor::next`] looks for.
    #[must_use]
    pub fn position(&self) -> Seq {
        Seq(self.seq.max(self.target))
    }

    /// Moves to the frame of `seq`'s segment where the index says to start scanning for it.
    /// Reading through `pread`, the first read fetches just the index interval to scan.
    fn seek(&mut self, seq: u64) -> Result<()> {
        self.unpacking.reset();
        self.target = self.target.max(seq);
        let found = self.shared.segment_for(seq);
        let Ok(Some(segment)) = found else {
            self.segment = None;
            self.end = 0;
            self.seq = seq;
            return found.map(|_| ());
        };
        let (floor, interval_end) = segment.index.read().interval(seq);
        let (offset, at) = floor.map_or((HEADER_LEN as u64, segment.id.0), |e| {
            (u64::from(e.offset), e.seq)
        });
        self.end = segment.load_end();
        let reach = interval_end
            .unwrap_or(self.end)
            .min(self.end)
            .saturating_sub(offset);
        self.window.plan(
            usize::try_from(reach)
                .unwrap_or(usize::MAX)
                .min(segment::WINDOW_BYTES_MIN),
        );
        self.offset = offset;
        self.seq = at;
        self.segment = Some(segment);
        self.read_ahead_at = offset + readahead::SEQUENTIAL_BYTES;
        Ok(())
    }
}

impl Drop for Cursor {
    fn drop(&mut self) {
        if self.shared.strategy == ReadStrategy::Pread {
            self.shared.return_window(std::mem::take(&mut self.window));
        }
        self.shared
            .return_inflater(std::mem::take(&mut self.inflater));
    }
}

/// Owned records, as an ordinary iterator over a [`Cursor`].
#[derive(Debug)]
pub struct Records {
    cursor: Cursor,
    done: bool,
}

impl Iterator for Records {
    type Item = Result<(Seq, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.cursor.next() {
            Ok(Some(record)) => Some(Ok((record.seq, record.payload.to_vec()))),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(error) => {
                self.done = true;
                Some(Err(error))
            }
        }
    }
}

/// How long a follower waits for the writer's watermark file to cover records before it
/// syncs them itself ([`Reader::wait_durable_async`]). A writer that syncs acknowledges
/// within milliseconds; one under `OsOnly` never does.
pub const WATERMARK_PATIENCE: Duration = Duration::from_secs(1);

/// For a follower's background thread while tasks wait for durability: follows the
/// writer's watermark file, and syncs itself once the file has not moved for
/// [`WATERMARK_PATIENCE`] with records beyond it. Returns whether every published record is
/// durable.
fn follow_durable(shared: &Shared, stalled: &mut Option<(u64, Instant)>) -> bool {
    shared.follow_watermark();
    let durable = shared.durable.load(Ordering::Acquire);
    if durable >= shared.next.load(Ordering::Acquire) {
        *stalled = None;
        return true;
    }
    match *stalled {
        Some((at, since)) if at == durable => {
            if since.elapsed() >= WATERMARK_PATIENCE {
                if let Err(error) = shared.sync_published() {
                    tracing::warn!(error = %error_chain(&error), "follower could not make the records it waits for durable");
                    *shared.sync_failure.lock() = Some(error);
                    shared.durable_moved.notify_all();
                }
                *stalled = None;
            }
        }
        _ => *stalled = Some((durable, Instant::now())),
    }
    false
}

/// Counts a task waiting for durability while it lives.
struct Wanting<'a>(&'a Shared);

impl<'a> Wanting<'a> {
    fn new(shared: &'a Shared) -> Wanting<'a> {
        shared.durable_wanted.fetch_add(1, Ordering::AcqRel);
        Wanting(shared)
    }
}

impl Drop for Wanting<'_> {
    fn drop(&mut self) {
        self.0.durable_wanted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A handle for waiting until records are durable, usable from any thread.
#[derive(Clone, Debug)]
pub struct Durability {
    shared: Arc<Shared>,
}

impl Durability {
    pub(crate) fn new(shared: Arc<Shared>) -> Durability {
        Durability { shared }
    }

    /// Every sequence below this is durable.
    #[must_use]
    pub fn durable_seq(&self) -> Seq {
        Seq(self.shared.durable.load(Ordering::Acquire))
    }

    /// Whether the log still accepts writes, without waiting: [`Error::Poisoned`] once a
    /// failed sync has poisoned it [DUR-04]. For health checks.
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`], naming the failed sync.
    pub fn check(&self) -> Result<()> {
        self.shared.check_poison()
    }

    /// Blocks until `seq` is durable [DUR-03].
    ///
    /// # Errors
    ///
    /// [`Error::Poisoned`] if a sync failed first.
    pub fn wait(&self, seq: Seq) -> Result<()> {
        let shared = &*self.shared;
        let lead = shared.waiters_sync.load(Ordering::Acquire);
        loop {
            if shared.durable.load(Ordering::Acquire) > seq.0 {
                return Ok(());
            }
            shared.check_poison()?;
            if lead {
                // Group commit: a waiting thread syncs itself when nobody else is syncing,
                // once its record is appended [DUR-01].
                if seq.0 < shared.next.load(Ordering::Acquire) {
                    if shared.try_lead_sync(seq.0)? {
                        continue;
                    }
                } else {
                    let listener = shared.appended.listen();
                    if seq.0 >= shared.next.load(Ordering::Acquire) {
                        let _ = listener.wait_timeout(Duration::from_millis(100));
                    }
                    continue;
                }
            }
            let mut guard = shared.durable_lock.lock();
            if shared.durable.load(Ordering::Acquire) <= seq.0
                && !shared.poisoned.load(Ordering::Acquire)
            {
                shared
                    .durable_changed
                    .wait_for(&mut guard, Duration::from_millis(100));
            }
        }
    }
}
