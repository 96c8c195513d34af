//! State shared by a log's writer, its readers and its sync thread.
//!
//! The writer publishes each segment's frame end and the log's next sequence with release
//! stores; readers load them with acquire and read only below them. A follower (a read-only
//! open, possibly in another process than the writer) has no writer to publish for it, so it
//! discovers new frames itself by scanning past the end it knows with `pread`.

use std::collections::VecDeque;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex, RwLock};

use super::dir;
use super::error::{CorruptKind, Error, IoOp, Result, error_chain};
use super::header::HEADER_LEN;
use super::index::IndexEntry;
use super::io::{Io, write_all_at};
use super::meta::{CleanMark, START_LEN, StartMark};
use super::options::ReadStrategy;
use super::pack::Inflater;
use super::segment::{self, FileWindow, SegmentData, Stop};
use super::signal::Signal;
use super::watermark::{WatermarkReader, WatermarkWriter};

/// The most sealed segments one handle keeps loaded (a descriptor and a map each): an eighth
/// of the usual default limit of 1,024 open files.
const LOADED_SEALED_MAX: usize = 128;

/// How often a follower looks for sealed segments replaced by packed ones.
const REPLACED_CHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// A segment known by name, loaded on first use.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) base: u64,
    data: OnceLock<Arc<SegmentData>>,
}

impl Slot {
    pub(crate) fn unloaded(base: u64) -> Arc<Slot> {
        Arc::new(Slot {
            base,
            data: OnceLock::new(),
        })
    }

    pub(crate) fn loaded(data: Arc<SegmentData>) -> Arc<Slot> {
        let slot = Slot {
            base: data.id.0,
            data: OnceLock::new(),
        };
        let _ = slot.data.set(data);
        Arc::new(slot)
    }

    pub(crate) fn get(&self) -> Option<&Arc<SegmentData>> {
        self.data.get()
    }
}

/// Group-commit signalling between appenders and the sync thread.
#[derive(Debug, Default)]
pub(crate) struct SyncState {
    pub(crate) shutdown: bool,
}

/// The largest staging buffer kept for reuse after a flush (the appender forces a flush at
/// 8 MiB staged; a frame may take it a little past that).
const KEPT_BUFFER_MAX: usize = 16 << 20;

/// Frames appended but not yet written to the active segment's file ([LOG-02] in
/// format/recovery.md). The flusher thread writes them with one `pwrite` when the buffer
/// fills; the sync thread and readers that reach the written end write them sooner
/// ([`Shared::flush`]). Records become visible to readers when written.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    /// The segment the staged frames belong to.
    pub(crate) segment: Option<Arc<SegmentData>>,
    /// The staged frames, which go at `offset` in the segment's file.
    pub(crate) bytes: Vec<u8>,
    pub(crate) offset: u64,
    /// The sequence after the last staged frame.
    pub(crate) next_seq: u64,
    /// Index entries of the staged frames.
    pub(crate) entries: Vec<IndexEntry>,
    /// An empty buffer for the next flush to swap in.
    pub(crate) spare: Vec<u8>,
}

/// What the flusher thread is asked to do.
#[derive(Debug, Default)]
pub(crate) struct FlushRequest {
    pub(crate) flush: bool,
    pub(crate) shutdown: bool,
}

/// A roll whose durable steps run in the background ([ROLL-07]): until they
/// finish, no record at or after `end_seq` is acknowledged as durable.
#[derive(Clone, Debug)]
pub(crate) struct PendingRoll {
    /// The sealed segment.
    pub(crate) sealed: Arc<SegmentData>,
    /// Where its seal frame is.
    pub(crate) seal_offset: u64,
    /// The successor's base: the sequence after the sealed segment's last record.
    pub(crate) end_seq: u64,
    /// The successor, renamed into place but not yet durable.
    pub(crate) successor: Arc<SegmentData>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) io: Arc<dyn Io>,
    pub(crate) strategy: ReadStrategy,
    pub(crate) max_payload: u32,
    /// Whether this handle discovers frames itself (no writer in this process).
    pub(crate) follower: bool,
    pub(crate) slots: RwLock<Vec<Arc<Slot>>>,
    /// The sealed segments loaded in `slots`, oldest load first: beyond
    /// [`LOADED_SEALED_MAX`] the oldest is let go of ([`Shared::note_loaded`]).
    loaded: Mutex<VecDeque<u64>>,
    /// No sequence below this is returned.
    pub(crate) start: AtomicU64,
    /// Every sequence below this is published.
    pub(crate) next: AtomicU64,
    /// Every sequence below this is durable: the writer's watermark, or in a follower what
    /// the writer's watermark file said and what the follower synced itself ([META-04]).
    pub(crate) durable: AtomicU64,
    /// Notified whenever records are published.
    pub(crate) appended: Signal,
    /// Notified whenever `durable` moves, a sync fails, or a follower's own sync fails.
    pub(crate) durable_moved: Signal,
    /// The writer's watermark file, rewritten as `durable` moves (`None` in followers).
    pub(crate) watermark_writer: Mutex<Option<WatermarkWriter>>,
    /// A follower's view of the writer's watermark file.
    watermark_reader: Mutex<WatermarkReader>,
    /// In a follower: every sequence below this was made durable by its own syncs.
    synced_here: AtomicU64,
    /// Tasks waiting for durability, for a follower's background thread to serve.
    pub(crate) durable_wanted: AtomicUsize,
    /// Why a follower's background thread could not sync the records tasks wait for, for
    /// the next waiter to return.
    pub(crate) sync_failure: Mutex<Option<Error>>,
    pub(crate) durable_lock: Mutex<()>,
    pub(crate) durable_changed: Condvar,
    pub(crate) poisoned: AtomicBool,
    pub(crate) poison_cause: Mutex<Option<String>>,
    pub(crate) sync: Mutex<SyncState>,
    pub(crate) sync_wake: Condvar,
    pub(crate) sync_idle: AtomicBool,
    /// Held by the thread syncing for group commit: a waiting thread leads a sync itself
    /// when no other thread is syncing ([`Shared::try_lead_sync`]).
    pub(crate) sync_leader: Mutex<()>,
    /// Whether threads waiting for durability sync themselves (group commit).
    pub(crate) waiters_sync: AtomicBool,
    /// Whether frames reach the file through the staging buffer (every policy but
    /// `EveryAppend`), so that a sync may write zeros ahead of them ([`Shared::sync_now`]).
    pub(crate) writes_staged: AtomicBool,
    /// The writer's active segment, for the sync thread.
    pub(crate) active: Mutex<Option<Arc<SegmentData>>>,
    /// The writer's watch over its lock file's name, checked at each sync [DIR-06] (`None`
    /// in followers and once the writer closed).
    pub(crate) writer_lock: Mutex<Option<dir::LockWatch>>,
    /// The length of the segment files the writer recycles (its segment size), or 0 if it
    /// does not [SEG-10]. Always 0 for followers.
    pub(crate) recycle_len: AtomicU64,
    /// Segment files truncations removed, each renamed to its [`dir::recycle_path`] and
    /// locked exclusively, waiting to become the writer's next segments [TRUNC-05].
    pub(crate) recycled: Mutex<Vec<(PathBuf, std::fs::File)>>,
    /// Frames appended but not yet written.
    pub(crate) staging: Mutex<Staging>,
    /// Serialises writing staged frames, so that they reach the file in order.
    pub(crate) flush_order: Mutex<()>,
    /// Whether the flusher thread should write the staging buffer (or stop).
    pub(crate) flush_wanted: Mutex<FlushRequest>,
    pub(crate) flush_wake: Condvar,
    /// Rolls whose durable steps have not run yet, oldest first.
    pub(crate) pending_rolls: Mutex<VecDeque<PendingRoll>>,
    /// Serialises finishing rolls, so that they finish in order.
    pub(crate) roll_order: Mutex<()>,
    /// Serialises follower refreshes and holds their scan buffer.
    pub(crate) refresh_window: Mutex<FileWindow>,
    /// When a follower last looked for sealed segments replaced by packed ones.
    replaced_checked: Mutex<Option<std::time::Instant>>,
    pub(crate) watcher: OnceLock<()>,
    /// `pread` buffers of dropped cursors, for the next ones.
    windows: Mutex<Vec<FileWindow>>,
    /// Decompression contexts of dropped cursors, for the next ones: a point read through a
    /// new cursor must not pay for a fresh zstd context.
    inflaters: Mutex<Vec<Inflater>>,
    /// The start file as last read, kept open to tell whether it was replaced since.
    start_file: Mutex<Option<StartFile>>,
    start_path: PathBuf,
    /// The directory, to look for a start file cheaply (`None` if it could not be opened:
    /// then the start file's path is looked up).
    dir_handle: Option<dir::DirHandle>,
}

/// An open start file and what it said. A truncation replaces the file by renaming a new one
/// over it ([TRUNC-01]), which drops the link count of the one held here to zero.
#[derive(Debug)]
struct StartFile {
    file: std::fs::File,
    len: u64,
    modified: Option<std::time::SystemTime>,
    start: u64,
}

/// Cursor buffers kept for reuse.
const SPARE_WINDOWS: usize = 4;

impl Shared {
    pub(crate) fn new(
        dir: &Path,
        io: Arc<dyn Io>,
        strategy: ReadStrategy,
        max_payload: u32,
        follower: bool,
    ) -> Shared {
        Shared {
            dir: dir.to_path_buf(),
            io,
            strategy,
            max_payload,
            follower,
            slots: RwLock::new(Vec::new()),
            loaded: Mutex::new(VecDeque::new()),
            start: AtomicU64::new(1),
            next: AtomicU64::new(1),
            durable: AtomicU64::new(1),
            appended: Signal::default(),
            durable_moved: Signal::default(),
            watermark_writer: Mutex::new(None),
            watermark_reader: Mutex::new(WatermarkReader::new(dir)),
            synced_here: AtomicU64::new(1),
            durable_wanted: AtomicUsize::new(0),
            sync_failure: Mutex::new(None),
            durable_lock: Mutex::new(()),
            durable_changed: Condvar::new(),
            poisoned: AtomicBool::new(false),
            poison_cause: Mutex::new(None),
            sync: Mutex::new(SyncState::default()),
            sync_wake: Condvar::new(),
            sync_idle: AtomicBool::new(false),
            sync_leader: Mutex::new(()),
            waiters_sync: AtomicBool::new(false),
            writes_staged: AtomicBool::new(false),
            active: Mutex::new(None),
            writer_lock: Mutex::new(None),
            recycle_len: AtomicU64::new(0),
            recycled: Mutex::new(Vec::new()),
            staging: Mutex::new(Staging::default()),
            flush_order: Mutex::new(()),
            flush_wanted: Mutex::new(FlushRequest::default()),
            flush_wake: Condvar::new(),
            pending_rolls: Mutex::new(VecDeque::new()),
            roll_order: Mutex::new(()),
            refresh_window: Mutex::new(FileWindow::default()),
            replaced_checked: Mutex::new(None),
            watcher: OnceLock::new(),
            windows: Mutex::new(Vec::new()),
            inflaters: Mutex::new(Vec::new()),
            start_file: Mutex::new(None),
            start_path: dir.join(dir::START_FILE),
            dir_handle: dir::DirHandle::open(dir).ok(),
        }
    }

    /// A `pread` buffer for a new cursor.
    pub(crate) fn take_window(&self) -> FileWindow {
        self.windows.lock().pop().unwrap_or_default()
    }

    /// Keeps a dropped cursor's buffer for the next cursor.
    pub(crate) fn return_window(&self, window: FileWindow) {
        let mut windows = self.windows.lock();
        if windows.len() < SPARE_WINDOWS {
            windows.push(window);
        }
    }

    /// A decompression context for a new cursor (one that has decompressed before, if any).
    pub(crate) fn take_inflater(&self) -> Inflater {
        self.inflaters.lock().pop().unwrap_or_default()
    }

    /// Keeps a dropped cursor's decompression context for the next cursor, if it made one.
    pub(crate) fn return_inflater(&self, inflater: Inflater) {
        if inflater.is_warm() {
            let mut inflaters = self.inflaters.lock();
            if inflaters.len() < SPARE_WINDOWS {
                inflaters.push(inflater);
            }
        }
    }

    pub(crate) fn first_seq(&self) -> u64 {
        self.start
            .load(Ordering::Acquire)
            .min(self.next.load(Ordering::Acquire))
    }

    pub(crate) fn check_poison(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Acquire) {
            let cause = self.poison_cause.lock().clone().unwrap_or_default();
            return Err(Error::Poisoned {
                dir: self.dir.clone(),
                cause,
            });
        }
        Ok(())
    }

    /// Refuses further writes after a failed sync (fsyncgate) [DUR-04], or once the active
    /// segment's file lost its name [DUR-05].
    pub(crate) fn poison(&self, cause: &Error) {
        tracing::error!(dir = %self.dir.display(), error = %error_chain(cause), "the log refuses writes until reopened");
        let mut slot = self.poison_cause.lock();
        if slot.is_none() {
            *slot = Some(error_chain(cause));
        }
        self.poisoned.store(true, Ordering::Release);
        drop(slot);
        self.notify_durable();
    }

    /// Fails, poisoning the log, if the writer's active segment `segment` is no longer named
    /// by its path: removed (or replaced) from outside the log, its records are in no
    /// segment file, and acknowledging them or writing on would lose them silently
    /// [DUR-05]. One `fstat` and one `stat`.
    pub(crate) fn check_named(&self, segment: &SegmentData) -> Result<()> {
        let error = match segment::file_still_named(&segment.file, &segment.path) {
            Ok(true) => return Ok(()),
            Ok(false) => Error::SegmentRemoved {
                segment: segment.id,
                path: segment.path.clone(),
            },
            Err(source) => Error::io(IoOp::Open, &segment.path, source),
        };
        self.poison(&error);
        Err(error)
    }

    /// Checks that the writer's lock file is still named, locking it again if not; fails,
    /// poisoning the log, if another process holds the new file's lock [DIR-06].
    fn check_writer_lock(&self) -> Result<()> {
        let mut watch = self.writer_lock.lock();
        let Some(watch) = watch.as_mut() else {
            return Ok(());
        };
        watch.check().inspect_err(|error| self.poison(error))
    }

    pub(crate) fn notify_durable(&self) {
        {
            let _guard = self.durable_lock.lock();
            self.durable_changed.notify_all();
        }
        self.durable_moved.notify_all();
    }

    /// For the writer's watermark thread: writes the durable watermark to the watermark file
    /// for followers ([META-04]). Returns whether it wrote a new value, or `None` once there
    /// is no file to write (the log is closed).
    pub(crate) fn publish_watermark(&self) -> Option<bool> {
        let mut file = self.watermark_writer.lock();
        // Read under the lock, so that a write never replaces a newer value with an older.
        let durable = self.durable.load(Ordering::Acquire);
        file.as_mut().map(|file| file.publish(&*self.io, durable))
    }

    /// For a close (`publish` once its last sync worked) or a simulated crash: stops the
    /// watermark thread, writing the file a last time first if asked.
    pub(crate) fn close_watermark(&self, publish: bool) {
        let mut file = self.watermark_writer.lock();
        if let Some(file) = file.as_mut().filter(|_| publish) {
            file.publish(&*self.io, self.durable.load(Ordering::Acquire));
        }
        *file = None;
    }

    /// For followers: learns from the writer's watermark file which records are durable
    /// ([META-04]), never beyond those published here, and never below those this follower
    /// synced itself. A file that is missing or being rewritten changes nothing.
    pub(crate) fn follow_watermark(&self) {
        // Held throughout, as `sync_published` holds it: neither undoes the other's rise.
        let mut reader = self.watermark_reader.lock();
        let Some(published) = reader.read() else {
            return;
        };
        let known = published
            .min(self.next.load(Ordering::Acquire))
            .max(self.synced_here.load(Ordering::Acquire));
        // A writer reopened after a recovery that cut damaged records may lower the file.
        if self.durable.swap(known, Ordering::AcqRel) < known {
            // A failure of this follower's own sync is moot once the writer moves on.
            *self.sync_failure.lock() = None;
            self.durable_moved.notify_all();
        }
    }

    /// For followers: makes every published record durable through this follower's own
    /// syncs ([`Shared::sync_tail`]), for a writer that does not sync (`OsOnly`, or one that
    /// died), and raises `durable` to match.
    pub(crate) fn sync_published(&self) -> Result<()> {
        let next = self.next.load(Ordering::Acquire);
        self.sync_tail()?;
        if self.follower {
            let _reader = self.watermark_reader.lock();
            *self.sync_failure.lock() = None;
            self.synced_here.fetch_max(next, Ordering::AcqRel);
            if self.durable.fetch_max(next, Ordering::AcqRel) < next {
                self.durable_moved.notify_all();
            }
        }
        Ok(())
    }

    /// Writes the staged frames to the active segment's file and publishes them to readers
    /// [LOG-02]. Returns whether anything was written.
    ///
    /// A failed write poisons the log: those records were acknowledged as appended, and a
    /// later write cannot be trusted to land where they should have ([LOG-02], [DUR-04]).
    pub(crate) fn flush(&self) -> Result<bool> {
        let _order = self.flush_order.lock();
        let (segment, mut bytes, offset, next_seq, entries) = {
            let mut staging = self.staging.lock();
            if staging.bytes.is_empty() || staging.segment.is_none() {
                return Ok(false);
            }
            let spare = std::mem::take(&mut staging.spare);
            let bytes = std::mem::replace(&mut staging.bytes, spare);
            let offset = staging.offset;
            staging.offset += bytes.len() as u64;
            let entries = std::mem::take(&mut staging.entries);
            (
                staging.segment.clone(),
                bytes,
                offset,
                staging.next_seq,
                entries,
            )
        };
        let Some(segment) = segment else {
            return Ok(false);
        };
        self.check_poison()?;
        if let Err(error) = write_all_at(&*self.io, &segment.file, &bytes, offset, &segment.path) {
            self.poison(&error);
            return Err(error);
        }
        if !entries.is_empty() {
            let mut index = segment.index.write();
            for entry in entries {
                index.push(entry);
            }
        }
        segment.end_seq.store(next_seq, Ordering::Release);
        segment
            .end
            .store(offset + bytes.len() as u64, Ordering::Release);
        self.appended.notify_all();
        bytes.clear();
        let mut staging = self.staging.lock();
        // Keep the larger buffer (up to a bound): a staging buffer that had to grow while the
        // flusher was behind would otherwise be dropped and grown again, page by fresh page.
        let capacity = bytes.capacity();
        if capacity > staging.spare.capacity() && capacity <= KEPT_BUFFER_MAX {
            staging.spare = bytes;
        }
        Ok(true)
    }

    /// For a thread waiting for `seq` under group commit: if no other thread is syncing, syncs
    /// now (everything appended so far) and returns `true`; `false` if another thread is
    /// syncing, whose sync may cover `seq` [DUR-01].
    pub(crate) fn try_lead_sync(&self, seq: u64) -> Result<bool> {
        let Some(_leader) = self.sync_leader.try_lock() else {
            return Ok(false);
        };
        if self.durable.load(Ordering::Acquire) <= seq {
            self.sync_now()?;
        }
        Ok(true)
    }

    /// For the sync thread: syncs what is still pending once no other thread is syncing.
    pub(crate) fn sync_pending(&self) -> Result<()> {
        let _leader = self.sync_leader.lock();
        let pending = self.next.load(Ordering::Acquire) > self.durable.load(Ordering::Acquire)
            || !self.pending_rolls.lock().is_empty();
        if pending { self.sync_now() } else { Ok(()) }
    }

    /// Asks the flusher thread to write the staging buffer.
    pub(crate) fn request_flush(&self) {
        let mut wanted = self.flush_wanted.lock();
        if !wanted.flush {
            wanted.flush = true;
            self.flush_wake.notify_one();
        }
    }

    /// For the flusher thread: waits for a request; `false` once it should stop.
    pub(crate) fn wait_flush_request(&self) -> bool {
        let mut wanted = self.flush_wanted.lock();
        while !wanted.flush && !wanted.shutdown {
            self.flush_wake.wait(&mut wanted);
        }
        wanted.flush = false;
        !wanted.shutdown
    }

    /// Makes everything appended so far durable, from any thread [DUR-02].
    pub(crate) fn sync_now(&self) -> Result<()> {
        self.check_poison()?;
        self.flush()?;
        self.zero_ahead();
        let Some(active) = self.active.lock().clone() else {
            return Ok(());
        };
        // What is written before the sync starts is what it covers.
        let target = active.end_seq();
        let end = active.end();
        // A roll that made `active` the active segment must finish first: its sealed segment,
        // the successor's header and its name are durable before any record after them.
        self.finish_rolls()?;
        if let Err(source) = self.io.sync_data(&active.file) {
            let error = Error::io(IoOp::Sync, &active.path, source);
            self.poison(&error);
            return Err(error);
        }
        // Synced records of a file that lost its name are not durable in the log [DUR-05].
        self.check_named(&active)?;
        self.check_writer_lock()?;
        self.durable.fetch_max(target, Ordering::AcqRel);
        self.notify_durable();
        if let Err(error) = active.persist_index(&*self.io, &self.dir, end, None) {
            tracing::warn!(error = %error_chain(&error), "could not extend the index file; it will be rebuilt if needed");
        }
        Ok(())
    }

    /// Writes zeros ahead of the staged frames' place in the file, for the sync about to run
    /// to flush with them ([`segment::zero_ahead`]); under the flush order, so no frame is
    /// being written meanwhile.
    fn zero_ahead(&self) {
        if !self.writes_staged.load(Ordering::Acquire) {
            return;
        }
        let _order = self.flush_order.lock();
        let (segment, end) = {
            let staging = self.staging.lock();
            (staging.segment.clone(), staging.offset)
        };
        if let Some(segment) = segment {
            segment::zero_ahead(&*self.io, &segment, end);
        }
    }

    /// Runs the durable steps of every pending roll, oldest first [ROLL-07]: the sealed
    /// segment's records and seal, then the successor's header and name, then the sealed
    /// segment's index footer, which is the proof that the roll finished [REC-08]. A failure
    /// poisons the log.
    pub(crate) fn finish_rolls(&self) -> Result<()> {
        let _order = self.roll_order.lock();
        loop {
            // The guard must not live through the loop body, which pops the roll at its end.
            let next = self.pending_rolls.lock().front().cloned();
            let Some(roll) = next else {
                break;
            };
            self.check_poison()?;
            let fail = |error: Error| {
                self.poison(&error);
                Err(error)
            };
            for segment in [&roll.sealed, &roll.successor] {
                if let Err(source) = self.io.sync_data(&segment.file) {
                    return fail(Error::io(IoOp::Sync, &segment.path, source));
                }
            }
            if let Err(error) = super::durable::sync_dir(&*self.io, &self.dir) {
                return fail(error);
            }
            // The footer last: it is the proof that the roll finished [REC-08].
            roll.sealed
                .complete_index(&*self.io, &self.dir, roll.seal_offset, roll.end_seq);
            self.durable.fetch_max(roll.end_seq, Ordering::AcqRel);
            self.notify_durable();
            self.pending_rolls.lock().pop_front();
        }
        Ok(())
    }

    /// Makes every published record durable from any handle: the writer's sync in the
    /// writer's process. A follower makes, through descriptors of its own (which flush a
    /// file's pages whoever wrote them), the syncs of every roll that no index footer proves
    /// finished ([REC-08], [ROLL-07]): each segment from the first such roll's sealed one to
    /// the last, then the directory. Syncing the last segment alone would leave a sealed
    /// segment's records to a writer's sync thread that may not have reached them, and a
    /// power loss could then end the log below a start made durable after this [TRUNC-01].
    pub(crate) fn sync_tail(&self) -> Result<()> {
        if !self.follower {
            return self.sync_now();
        }
        let bases: Vec<u64> = self.slots.read().iter().map(|slot| slot.base).collect();
        let first = segment::first_unproven_roll(&self.dir, &bases, self.max_payload)?;
        for base in bases.iter().skip(first) {
            let path = dir::segment_path(&self.dir, *base);
            let file = match super::bounded::open_regular(&path) {
                Ok(file) => file,
                // Removed by a truncation since the list was taken: its records are below a
                // start made durable after they were [TRUNC-01].
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io(IoOp::Open, &path, e)),
            };
            self.io
                .sync_data(&file)
                .map_err(|e| Error::io(IoOp::Sync, &path, e))?;
        }
        if first + 1 < bases.len() {
            super::durable::sync_dir(&*self.io, &self.dir)?;
        }
        Ok(())
    }

    /// For followers: forgets the loaded sealed segments whose files the writer has replaced
    /// with packed ones since ([PACK-05]), so that the next read loads the packed file and the
    /// original's blocks are freed once no cursor reads it. At most once a second: it costs
    /// a `stat` per loaded segment.
    fn forget_replaced(&self) {
        use std::os::unix::fs::MetadataExt as _;
        {
            let mut checked = self.replaced_checked.lock();
            if checked.is_some_and(|at| at.elapsed() < REPLACED_CHECK) {
                return;
            }
            *checked = Some(std::time::Instant::now());
        }
        let loaded: Vec<Arc<SegmentData>> = {
            let slots = self.slots.read();
            let sealed = slots.len().saturating_sub(1);
            slots
                .iter()
                .take(sealed)
                .filter_map(|s| s.get().cloned())
                .collect()
        };
        for data in loaded {
            let held = data.file.metadata().map(|m| (m.dev(), m.ino()));
            let named = std::fs::metadata(&data.path).map(|m| (m.dev(), m.ino()));
            if let (Ok(held), Ok(named)) = (held, named)
                && held != named
            {
                self.unload(data.id.0);
            }
        }
    }

    /// Forgets what was loaded of sealed segment `base`, whose file was replaced ([PACK-04]),
    /// or which was loaded longest ago: the next read loads the file. Handles to the old one
    /// stay valid.
    pub(crate) fn unload(&self, base: u64) {
        let mut slots = self.slots.write();
        let last = slots.len().saturating_sub(1);
        if let Some(slot) = slots.iter_mut().take(last).find(|s| s.base == base) {
            *slot = Slot::unloaded(base);
        }
    }

    /// Notes that sealed segment `base` is loaded (read, or sealed by a roll) and lets go of
    /// the one loaded longest ago beyond [`LOADED_SEALED_MAX`], so that a handle that reads a
    /// whole store, or a writer that runs for weeks, holds a bounded number of descriptors
    /// and maps. Cursors keep the segment they are reading.
    pub(crate) fn note_loaded(&self, base: u64) {
        let evicted = {
            let mut loaded = self.loaded.lock();
            loaded.push_back(base);
            if loaded.len() > LOADED_SEALED_MAX {
                loaded.pop_front()
            } else {
                None
            }
        };
        let Some(evicted) = evicted.filter(|evicted| *evicted != base) else {
            return;
        };
        // A segment whose roll is still being made durable stays as the roll sees it.
        let rolling = self
            .pending_rolls
            .lock()
            .iter()
            .any(|roll| roll.sealed.id.0 == evicted);
        if rolling {
            self.loaded.lock().push_back(evicted);
        } else {
            self.unload(evicted);
        }
    }

    /// The segment holding `seq` (or, past the end, the last segment), loading it if needed.
    pub(crate) fn segment_for(&self, seq: u64) -> Result<Option<Arc<SegmentData>>> {
        let (slot, later) = {
            let slots = self.slots.read();
            let after = slots.partition_point(|s| s.base <= seq);
            let Some(slot) = after.checked_sub(1).and_then(|i| slots.get(i)) else {
                let first = slots.first().map(|s| s.base);
                drop(slots);
                return self.below_first_segment(seq, first);
            };
            if let Some(data) = slot.get() {
                return Ok(Some(data.clone()));
            }
            let later: Vec<u64> = slots.iter().skip(after).map(|s| s.base).collect();
            (slot.clone(), later)
        };
        let successor = later.first().copied();
        let Some(successor) = successor else {
            // Only the last segment can lack a successor, and it is always loaded.
            return Ok(None);
        };
        let rewrite = if self.follower { None } else { Some(&*self.io) };
        let data = match segment::load_sealed(
            &self.dir,
            slot.base,
            successor,
            self.strategy,
            self.max_payload,
            rewrite,
            self.follower.then_some(later.as_slice()),
        ) {
            Ok(data) => data,
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                // Deleted by a truncation in another process: the start has moved past it.
                self.reload_start()?;
                return Ok(None);
            }
            Err(error) => return Err(error),
        };
        if slot.data.set(Arc::new(data)).is_ok() {
            self.note_loaded(slot.base);
        }
        Ok(slot.get().cloned())
    }

    /// For a follower whose last segment ends in its seal with no successor: the records
    /// after it that the writer acknowledged (by the watermark file or a clean close's
    /// marker), which no segment file holds [REC-12]. The claims are read before the
    /// successor is looked for: a writer names records after a seal durable only once the
    /// successor exists.
    pub(crate) fn missing_tail(&self) -> Result<Option<Range<u64>>> {
        if !self.follower {
            return Ok(None);
        }
        let claimed = WatermarkReader::new(&self.dir).read().into_iter().chain(
            super::meta::read_file(&self.dir.join(dir::CLEAN_FILE))
                .ok()
                .and_then(|bytes| CleanMark::decode(&bytes).ok())
                .map(|mark| mark.next_seq),
        );
        let Some(claimed) = claimed.max() else {
            return Ok(None);
        };
        let Some(last) = self.slots.read().last().and_then(|s| s.get().cloned()) else {
            return Ok(None);
        };
        let end = last.end_seq();
        if !last.is_sealed() || claimed <= end || dir::segment_path(&self.dir, end).exists() {
            return Ok(None);
        }
        // A truncation removes the successor only once the start has passed it [TRUNC-02].
        if self.reload_start()? > end {
            return Ok(None);
        }
        Ok(Some(end..claimed))
    }

    /// A sequence below every segment this handle knows: below the start (truncated, perhaps
    /// by another process, whose start file is then read again), or in no segment file at all
    /// [REC-12]. A truncation makes its start durable before it removes a segment, so a
    /// segment that is gone with its records at or above the start was lost.
    fn below_first_segment(
        &self,
        seq: u64,
        first: Option<u64>,
    ) -> Result<Option<Arc<SegmentData>>> {
        let Some(first) = first else {
            return Ok(None);
        };
        let start = self.reload_start()?;
        if seq < start {
            return Ok(None);
        }
        Err(super::recovery::missing_error(
            super::SegmentId(first),
            0,
            &(start..first),
        ))
    }

    /// Re-reads the start file, which another process may have advanced.
    ///
    /// The file read last is kept open: while it is still linked (a truncation replaces it
    /// by a rename, which unlinks the old one) and unchanged, what it said still holds and
    /// checking costs one `fstat`. Otherwise it is opened and read again.
    pub(crate) fn reload_start(&self) -> Result<u64> {
        let start = self.read_start_cached()?.unwrap_or(0);
        Ok(self.start.fetch_max(start, Ordering::AcqRel).max(start))
    }

    fn read_start_cached(&self) -> Result<Option<u64>> {
        use std::os::unix::fs::MetadataExt as _;
        let mut held = self.start_file.lock();
        if let Some(known) = held.as_ref()
            && let Ok(meta) = known.file.metadata()
            && meta.nlink() > 0
            && meta.len() == known.len
            && meta.modified().ok() == known.modified
        {
            return Ok(Some(known.start));
        }
        let path = &self.start_path;
        if held.is_none() {
            // Nothing to open yet (no truncation so far) is the common case: a lookup says so
            // without creating an open file.
            let exists = match &self.dir_handle {
                Some(handle) => handle.contains(dir::START_FILE),
                None => std::fs::symlink_metadata(path).map(|_| true).or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(false)
                    } else {
                        Err(e)
                    }
                }),
            };
            if !exists.map_err(|e| Error::io(IoOp::Read, path, e))? {
                return Ok(None);
            }
        }
        let file = match super::bounded::open_regular(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                *held = None;
                return Ok(None);
            }
            Err(e) => return Err(Error::io(IoOp::Read, path, e)),
        };
        let meta = file
            .metadata()
            .map_err(|e| Error::io(IoOp::Read, path, e))?;
        let mut bytes = [0u8; START_LEN];
        let n = super::io::read_at(&file, &mut bytes, 0, path)?;
        let decoded = if meta.len() > n as u64 {
            Err(CorruptKind::LengthOutOfBounds {
                len: meta.len(),
                max: START_LEN as u64,
            })
        } else {
            StartMark::decode(bytes.get(..n).unwrap_or_default())
        };
        let start = decoded
            .map_err(|kind| Error::CorruptFile {
                path: path.clone(),
                kind,
            })?
            .start;
        *held = Some(StartFile {
            file,
            len: meta.len(),
            modified: meta.modified().ok(),
            start,
        });
        Ok(Some(start))
    }

    /// Forgets the segments that a truncation by another handle or process deleted, as
    /// `truncate_prefix` does for its own, so that their maps and descriptors close and their
    /// space is freed once no cursor reads them [TRUNC-01]. Files still present (an
    /// interrupted truncation) stay known, for `truncate_prefix`. Returns the forgotten
    /// segments that were loaded, for [`release_forgotten`].
    pub(crate) fn forget_truncated(&self) -> Result<Vec<Arc<SegmentData>>> {
        let start = self.reload_start()?;
        let mut slots = self.slots.write();
        let deleted = slots
            .windows(2)
            .take_while(|w| {
                w.get(1).is_some_and(|next| next.base <= start)
                    && w.first()
                        .is_some_and(|s| !dir::segment_path(&self.dir, s.base).exists())
            })
            .count();
        Ok(slots
            .drain(..deleted)
            .filter_map(|slot| slot.get().cloned())
            .collect())
    }

    /// For the writer: forgets and frees the segments another process truncated away
    /// ([`Shared::forget_truncated`], [`release_forgotten`]). Never fails an append: a start
    /// file that cannot be read now is read at the next look.
    pub(crate) fn forget_truncated_elsewhere(&self) {
        match self.forget_truncated() {
            Ok(forgotten) => release_forgotten(forgotten),
            Err(error) => {
                tracing::warn!(
                    error = error_chain(&error),
                    "cannot read the start file to look for truncations by other processes"
                );
            }
        }
    }

    /// For followers: discovers frames and segments the writer added since the last look.
    /// Returns whether anything new was found.
    ///
    /// In the writer's process, this writes the writer's staged frames instead, so that
    /// every record below [`Shared::next`] can be read.
    pub(crate) fn refresh(&self) -> Result<bool> {
        if !self.follower {
            return self.flush();
        }
        let mut window = self.refresh_window.lock();
        release_forgotten(self.forget_truncated()?);
        self.forget_replaced();
        // The bytes past the end change under us: never trust an earlier read of them.
        window.reset();
        let before = self.next.load(Ordering::Acquire);
        loop {
            let Some(last) = self.slots.read().last().and_then(|s| s.get().cloned()) else {
                break;
            };
            if !last.is_sealed() {
                window.reset();
                let last_indexed = last.index.read().last().map(|e| u64::from(e.offset));
                let source = last.scan_file(self.max_payload);
                let from = (last.end(), last.end_seq());
                let found = segment::scan(&mut window, source, from, last.file_len, last_indexed)?;
                {
                    let mut index = last.index.write();
                    for entry in found.entries {
                        index.push(entry);
                    }
                }
                last.end_seq.store(found.end_seq, Ordering::Release);
                last.end.store(found.end, Ordering::Release);
                if found.stop == Stop::Seal {
                    last.sealed.store(true, Ordering::Release);
                }
            }
            // Also for a successor adopted sealed (its own successor not made yet): its
            // frames end at its seal.
            self.next.fetch_max(last.end_seq(), Ordering::AcqRel);
            if !last.is_sealed() || !self.adopt_successor(&last)? {
                break;
            }
        }
        let grew = self.next.load(Ordering::Acquire) > before;
        if grew {
            self.appended.notify_all();
        }
        Ok(grew)
    }

    /// After a sealed last segment, opens the segment the writer rolled to, if it exists yet.
    fn adopt_successor(&self, last: &SegmentData) -> Result<bool> {
        let mut base = last.end_seq();
        loop {
            match open_tail(&self.dir, base, self.strategy, self.max_payload) {
                Ok(data) => {
                    self.slots.write().push(Slot::loaded(Arc::new(data)));
                    self.note_loaded(last.id.0);
                    return Ok(true);
                }
                // Either the writer is still creating it, or a truncation removed it (and
                // maybe more) or is removing it [TRUNC-04] since this follower looked: then
                // go on with the oldest segment after it that is still there.
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                    if self.reload_start()? <= base {
                        return Ok(false);
                    }
                    let listing = dir::list(&self.dir)?;
                    let Some(&next) = listing.segments.iter().find(|b| **b > base) else {
                        return Ok(false);
                    };
                    base = next;
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Frees the blocks of segments that another process truncated and this one held (from
/// [`Shared::forget_truncated`]) in steps, as that truncation would have had this process
/// not held them ([TRUNC-04]), on a thread of its own: the steps take a while by design.
/// A segment a cursor still reads, or another process holds, is left to its last reader.
pub(crate) fn release_forgotten(forgotten: Vec<Arc<SegmentData>>) {
    let owned: Vec<SegmentData> = forgotten.into_iter().filter_map(Arc::into_inner).collect();
    if owned.is_empty() {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("esl-replay-release".into())
        .spawn(move || {
            for data in owned {
                segment::release_blocks(&data.file);
            }
        });
    if let Err(error) = spawned {
        tracing::debug!(error = %error_chain(&error), "cannot start a thread to free truncated segments in steps; they are freed whole");
    }
}

/// Opens the last segment for a follower: its frames are found by scanning with `pread`.
pub(crate) fn open_tail(
    dir: &Path,
    base: u64,
    strategy: ReadStrategy,
    max_payload: u32,
) -> Result<SegmentData> {
    // Read before the frames: every record it names durable was in the file by then.
    let durable = WatermarkReader::new(dir).read();
    // A damaged trailer fails only this segment's records [REC-13]: its frames still tell
    // where the log ends, and the segments before it read.
    let segment::FramesFile {
        file,
        path,
        header,
        frames_end: file_len,
        packed,
        trailer_damage,
    } = segment::open_frames_or_damage(dir, base, false)?;
    let source = segment::ScanFile::opened(&file, &path, &header, file_len, max_payload);
    let mut window = FileWindow::default();
    let mut entries = segment::read_index(dir, base, header.salt)
        .map(|i| i.entries)
        .unwrap_or_default();
    let (_, found) = segment::scan_from_index(&mut window, source, &mut entries, file_len)?;
    // Frames that stop below what was promised are damage, which reads must meet rather
    // than take for the end of the log: a clean shutdown's recorded end [REC-01], records
    // the watermark file names durable [REC-03], and a packed segment's seal [SEG-09].
    let fault = match &found.stop {
        Stop::Invalid(kind) => Some(Box::new(kind.clone())),
        _ => None,
    };
    // A packed segment's frames that run to the last 8 bytes before its intact trailer stop
    // only at its seal: every record is there, and only the seal is damaged [RD-04] [REC-13].
    let seal_damaged = packed.is_some()
        && trailer_damage.is_none()
        && fault.is_some()
        && found.end + super::frame::FRAME_HEADER_LEN as u64 == file_len;
    let sealed = found.stop == Stop::Seal || seal_damaged;
    if seal_damaged {
        tracing::warn!(segment = %super::SegmentId(base), offset = found.end, "the seal of a packed last segment is damaged; each of its records is intact");
    }
    let promised = super::meta::read_file(&dir.join(dir::CLEAN_FILE))
        .ok()
        .and_then(|bytes| CleanMark::decode(&bytes).ok())
        .filter(|m| {
            m.segment == base
                && m.salt == header.salt
                && found.end < m.end_offset
                && found.end_seq < m.next_seq
        });
    let acknowledged = durable.filter(|d| !sealed && found.end_seq < *d);
    let kind = match (promised, acknowledged) {
        (Some(mark), _) => Some(CorruptKind::BelowCleanEnd {
            clean_end: mark.end_offset,
            fault,
        }),
        (None, Some(durable)) => Some(CorruptKind::BelowDurable {
            found: found.end_seq,
            durable,
            fault,
        }),
        (None, None) if packed.is_some() && !sealed => {
            Some(fault.map_or(CorruptKind::MissingSeal, |fault| *fault))
        }
        (None, None) => None,
    };
    let damage = kind.map(|kind| (found.end, kind));
    let map = segment::map_for_reading(strategy, &file, &path)?;
    let parts = segment::Parts {
        file,
        path,
        header,
        file_len,
        end: found.end.max(HEADER_LEN as u64),
        end_seq: found.end_seq,
        sealed,
        entries,
    };
    let mut data = parts.into_data(map);
    data.packed = packed;
    data.unreadable = trailer_damage;
    if let Some(damage) = damage {
        let _ = data.damaged_end.set(damage);
    }
    Ok(data)
}

/// Reads the start file; `None` if there is none.
pub(crate) fn read_start(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(dir::START_FILE);
    match super::meta::read_file(&path) {
        Ok(bytes) => StartMark::decode(&bytes)
            .map(|mark| Some(mark.start))
            .map_err(|kind| Error::CorruptFile { path, kind }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(IoOp::Read, path, e)),
    }
}
