//! Packed segments read in order on two cores.
//!
//! Reading a packed segment [SEG-09] is mostly decompressing it: about 0.3 µs a record, most
//! of a replay's time (benches/README.md). A cursor reading a mapped packed segment in order
//! therefore splits the frames ahead of it into pieces of at least [`PIECE_FRAMES`] and offers
//! them to the process's unpacking thread. The cursor takes the pieces from the first on and reads
//! their frames itself, as it would without the thread; the thread takes them from the last
//! back, checks and decompresses each into a buffer, and the cursor reads those pieces'
//! records from their buffers when it gets there. The two meet once a batch.
//!
//! The thread runs at the lowest priority, so it only uses a core that nothing else wants (a
//! capture beside a replay keeps both), and a cursor never depends on it: a piece the thread
//! took but has not finished within [`PATIENCE`] the cursor reads itself. When the thread
//! keeps a cursor waiting, falls [`QUEUE`] batches behind or decodes under a quarter of a
//! batch, it has little time, and cursors read alone for [`STARVED_PAUSE`].
//!
//! Pieces start and end where the segment's sparse index says frames start (the index is a
//! hint, never trusted): the thread decodes a frame exactly as the cursor does (checksum with
//! the expected sequence, then decompression), the cursor reads a piece only where its own
//! position continues it, and it stops at the first frame that fails, with the error it would
//! have met reading alone.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::error::{CorruptKind, Result};
use super::frame;
use super::pack::Inflater;
use super::segment::SegmentData;

/// The fewest frames in a piece (about 15 µs of decompression: long enough that offering it
/// costs little, short enough that waiting for the thread to finish one costs little); a
/// piece ends at the first index entry past them.
const PIECE_FRAMES: usize = 32;
/// Frames a cursor splits at once, up to the end of the piece that reaches them. It keeps one
/// batch ahead of the one it reads.
const BATCH_FRAMES: u64 = 16 * PIECE_FRAMES as u64;
/// Records a cursor reads in order, one at a time, before it splits the frames ahead: a
/// point read never does.
const IN_ORDER_RECORDS: u64 = 16;
/// How long a cursor waits for a piece the thread is decompressing (several times what a
/// piece takes) before it reads the frames itself: the thread may not be running.
const PATIENCE: Duration = Duration::from_micros(100);
/// How long cursors read alone after one found the thread had little time for it: on a
/// busy machine, offering it pieces only costs.
const STARVED_PAUSE: Duration = Duration::from_millis(5);
/// Batches waiting for the thread; a batch offered beyond them is left to its cursor.
const QUEUE: usize = 8;

/// Frames of a packed segment, split into pieces for the cursor and the thread.
struct Batch {
    segment: Arc<SegmentData>,
    /// The cursor's published end of the segment when it split the batch.
    end: u64,
    max_payload: u32,
    pieces: Vec<Piece>,
    /// Where the frame after the last piece starts, and its sequence, when the split
    /// stopped only because the batch was full.
    next: Option<(u64, u64)>,
    /// Set when its cursor no longer reads it: the thread leaves its pieces.
    dropped: AtomicBool,
}

/// Consecutive frames: `[offset, end)` as the segment's index places them, from sequence
/// `seq`.
struct Piece {
    offset: u64,
    end: u64,
    seq: u64,
    frames: usize,
    /// Set by whichever of the thread and the cursor takes the piece.
    taken: AtomicBool,
    /// The thread's work on it.
    unpacked: OnceLock<Unpacked>,
}

/// A piece's records, checked and decompressed by the thread.
#[derive(Default)]
struct Unpacked {
    /// The payloads, one after the other.
    bytes: Vec<u8>,
    /// For each record: where its payload ends in `bytes`, and the length of its frame.
    records: Vec<(usize, usize)>,
    /// The frame that stopped the piece early and what is wrong with it.
    failure: Option<(u64, CorruptKind)>,
}

/// A record of a piece the thread decoded, as [`Unpacking::next`] hands it to the cursor.
#[derive(Debug)]
pub(crate) struct NextRecord {
    payload: Range<usize>,
    /// The length of its frame, by which the cursor moves on.
    pub(crate) frame_len: usize,
}

/// How the cursor reads the piece it is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reading {
    /// It has not looked at it yet.
    NotStarted,
    /// It took the piece and decodes its frames itself.
    Itself,
    /// The thread decoded it; the cursor is at this record of it.
    Decoded(usize),
}

/// A cursor's pieces: the batch it reads and the next one, and where it is in them.
pub(crate) struct Unpacking {
    batches: VecDeque<Arc<Batch>>,
    /// The piece of the first batch the cursor is in, and how it reads it.
    piece: usize,
    reading: Reading,
    /// The end of the piece the cursor reads itself (0 when it reads none).
    itself_until: u64,
    /// Where the next record the cursor reads from a decoded piece starts.
    decoded_at: u64,
    /// Records the cursor read itself, in order, since it last moved elsewhere.
    in_order: u64,
    /// How many it reads that way before it splits the frames ahead (again).
    split_after: u64,
    /// The sequence below which the cursor's reader means to read (a hint).
    wanted_until: Option<u64>,
}

impl Default for Unpacking {
    fn default() -> Unpacking {
        Unpacking {
            batches: VecDeque::new(),
            piece: 0,
            reading: Reading::NotStarted,
            itself_until: 0,
            decoded_at: 0,
            in_order: 0,
            split_after: IN_ORDER_RECORDS,
            wanted_until: None,
        }
    }
}

impl std::fmt::Debug for Unpacking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unpacking")
            .field("batches", &self.batches.len())
            .field("piece", &self.piece)
            .field("reading", &self.reading)
            .finish_non_exhaustive()
    }
}

impl Unpacking {
    /// Notes that the cursor's reader means to read the records below `seq`; no frame at or
    /// past it is decompressed ahead of the cursor.
    pub(crate) fn want_until(&mut self, seq: u64) {
        self.wanted_until = Some(seq);
    }

    /// Notes that the cursor read a record itself, in order.
    #[inline]
    pub(crate) fn read_in_order(&mut self) {
        self.in_order = self.in_order.saturating_add(1);
    }

    /// Forgets the pieces: the cursor moved elsewhere.
    pub(crate) fn reset(&mut self) {
        for batch in self.batches.drain(..) {
            batch.dropped.store(true, Ordering::Relaxed);
        }
        self.piece = 0;
        self.reading = Reading::NotStarted;
        self.itself_until = 0;
        self.in_order = 0;
        self.split_after = IN_ORDER_RECORDS;
    }

    /// The record of the frame at `(offset, seq)` of `segment`, if the thread decoded it;
    /// `None` if the cursor decodes the frame itself. `end` is the cursor's published end of
    /// the segment.
    ///
    /// # Errors
    ///
    /// The damage at `offset` that stopped the thread's piece, as the cursor reading that
    /// frame alone reports it.
    #[inline]
    pub(crate) fn next(
        &mut self,
        segment: &Arc<SegmentData>,
        at: (u64, u64),
        end: u64,
        max_payload: u32,
    ) -> Result<Option<NextRecord>> {
        if segment.packed.is_none()
            || at.0 < self.itself_until
            || (self.batches.is_empty() && self.in_order < self.split_after)
        {
            return Ok(None);
        }
        self.next_in_pieces(segment, at, end, max_payload)
    }

    #[inline(never)]
    fn next_in_pieces(
        &mut self,
        segment: &Arc<SegmentData>,
        (offset, seq): (u64, u64),
        end: u64,
        max_payload: u32,
    ) -> Result<Option<NextRecord>> {
        loop {
            if self.batches.is_empty() {
                let Some(batch) = self.split(segment, (offset, seq), end, max_payload) else {
                    // Nothing to split, or the thread is starved: look again a batch later.
                    self.split_after = self.in_order.saturating_add(BATCH_FRAMES);
                    return Ok(None);
                };
                self.batches.push_back(batch);
                (self.piece, self.reading) = (0, Reading::NotStarted);
            }
            let Some(batch) = self.batches.front() else {
                return Ok(None);
            };
            let Some(piece) = batch.pieces.get(self.piece) else {
                // The batch is read: go on with the next one, or split anew. A thread that
                // decoded under a quarter of it gets little time: read alone for a while.
                let helped = batch.pieces.iter().filter(|p| p.unpacked.get().is_some());
                let starved = batch.pieces.len() >= 4 && helped.count() * 4 < batch.pieces.len();
                self.batches.pop_front();
                (self.piece, self.reading) = (0, Reading::NotStarted);
                if starved {
                    starving();
                    self.reset();
                    return Ok(None);
                }
                continue;
            };
            match self.reading {
                Reading::NotStarted => {
                    if (offset, seq) != (piece.offset, piece.seq)
                        || !Arc::ptr_eq(&batch.segment, segment)
                    {
                        self.reset();
                        return Ok(None);
                    }
                    let (taken_here, piece_offset, piece_end) = (
                        !piece.taken.swap(true, Ordering::AcqRel),
                        piece.offset,
                        piece.end,
                    );
                    let decoded = taken_here || piece.wait_for_thread();
                    if self.piece == 0 {
                        self.split_next();
                    }
                    if taken_here {
                        self.reading = Reading::Itself;
                        self.itself_until = piece_end;
                        return Ok(None);
                    }
                    if !decoded {
                        // The thread took it and keeps the cursor waiting.
                        starving();
                        self.reset();
                        return Ok(None);
                    }
                    self.reading = Reading::Decoded(0);
                    self.decoded_at = piece_offset;
                }
                Reading::Itself => {
                    // The cursor read its piece up to `itself_until`.
                    self.itself_until = 0;
                    if offset != piece.end {
                        self.reset();
                        return Ok(None);
                    }
                    (self.piece, self.reading) = (self.piece + 1, Reading::NotStarted);
                }
                Reading::Decoded(record) => {
                    let Some(unpacked) = piece.unpacked.get().filter(|_| offset == self.decoded_at)
                    else {
                        self.reset();
                        return Ok(None);
                    };
                    let Some(&(payload_end, frame_len)) = unpacked.records.get(record) else {
                        if let Some((at, kind)) = &unpacked.failure {
                            return Err(segment.corrupt(*at, kind.clone()));
                        }
                        (self.piece, self.reading) = (self.piece + 1, Reading::NotStarted);
                        continue;
                    };
                    let payload_start = match record.checked_sub(1) {
                        Some(before) => unpacked.records.get(before).map_or(0, |r| r.0),
                        None => 0,
                    };
                    self.reading = Reading::Decoded(record + 1);
                    self.decoded_at = offset + frame_len as u64;
                    #[cfg(test)]
                    tests::FROM_PIECES.set(tests::FROM_PIECES.get() + 1);
                    return Ok(Some(NextRecord {
                        payload: payload_start..payload_end,
                        frame_len,
                    }));
                }
            }
        }
    }

    /// The payload of the record [`Unpacking::next`] returned last (empty if the pieces
    /// changed since, which the cursor never lets happen).
    pub(crate) fn payload(&self, record: &NextRecord) -> &[u8] {
        self.batches
            .front()
            .and_then(|b| b.pieces.get(self.piece))
            .and_then(|p| p.unpacked.get())
            .and_then(|u| u.bytes.get(record.payload.clone()))
            .unwrap_or_default()
    }

    /// Splits the frames from `at` on, within what the reader wants, and offers the batch
    /// to the thread.
    fn split(
        &self,
        segment: &Arc<SegmentData>,
        at: (u64, u64),
        end: u64,
        max_payload: u32,
    ) -> Option<Arc<Batch>> {
        if starved() {
            return None;
        }
        let frames = self.wanted_from(at.1)?;
        let batch = Arc::new(Batch::split(segment, at, end, max_payload, frames)?);
        #[cfg(test)]
        if tests::played_thread(&batch) {
            return Some(batch);
        }
        offer(&batch);
        Some(batch)
    }

    /// When the cursor starts on a full batch, splits the next one, so that the thread has
    /// work while the cursor reads.
    fn split_next(&mut self) {
        let Some(batch) = self.batches.front().filter(|_| self.batches.len() == 1) else {
            return;
        };
        let Some(at) = batch.next else {
            return;
        };
        let (segment, end, max_payload) =
            (Arc::clone(&batch.segment), batch.end, batch.max_payload);
        if let Some(next) = self.split(&segment, at, end, max_payload) {
            self.batches.push_back(next);
        }
    }

    /// How many frames from sequence `seq` on to split: what the reader still wants, at
    /// least a piece and at most a batch; `None` if it wants none.
    fn wanted_from(&self, seq: u64) -> Option<u64> {
        let wanted = match self.wanted_until {
            Some(until) => until.checked_sub(seq).filter(|n| *n > 0)?,
            None => BATCH_FRAMES,
        };
        Some(wanted.clamp(PIECE_FRAMES as u64, BATCH_FRAMES))
    }
}

impl Drop for Unpacking {
    fn drop(&mut self) {
        self.reset();
    }
}

impl Batch {
    /// Splits about `frames` frames of `segment` from `(offset, seq)` into pieces of at least
    /// [`PIECE_FRAMES`] frames that start and end where the segment's sparse index says
    /// frames start; `None` if its bytes are not mapped or the index has no entry ahead.
    fn split(
        segment: &Arc<SegmentData>,
        (offset, seq): (u64, u64),
        end: u64,
        max_payload: u32,
        frames: u64,
    ) -> Option<Batch> {
        segment.map.as_ref()?;
        let index = segment.index.read();
        let entries = index.entries();
        let ahead = entries.partition_point(|e| e.seq <= seq);
        let mut pieces = Vec::new();
        let (mut start, mut count) = ((offset, seq), 0u64);
        for entry in entries.get(ahead..).unwrap_or_default() {
            let at = (u64::from(entry.offset), entry.seq);
            if at.0 <= start.0 || at.0 >= end {
                break;
            }
            let Some(len) =
                at.1.checked_sub(start.1)
                    .filter(|n| *n >= PIECE_FRAMES as u64)
            else {
                continue;
            };
            if len > (at.0 - start.0) / frame::FRAME_HEADER_LEN as u64 {
                // More frames than the bytes can hold: the index is damaged.
                break;
            }
            pieces.push(Piece::new(start, len, at.0));
            (start, count) = (at, count + len);
            if count >= frames {
                break;
            }
        }
        drop(index);
        (!pieces.is_empty()).then(|| Batch {
            segment: Arc::clone(segment),
            end,
            max_payload,
            pieces,
            next: (count >= frames).then_some(start),
            dropped: AtomicBool::new(false),
        })
    }
}

impl Piece {
    fn new((offset, seq): (u64, u64), frames: u64, end: u64) -> Piece {
        Piece {
            offset,
            end,
            seq,
            frames: usize::try_from(frames).unwrap_or(usize::MAX),
            taken: AtomicBool::new(false),
            unpacked: OnceLock::new(),
        }
    }

    /// The thread decodes the piece if the cursor has not taken it.
    fn unpack_if_free(&self, batch: &Batch, inflater: &mut Inflater) {
        if !self.taken.swap(true, Ordering::AcqRel) {
            let _ = self.unpacked.set(self.unpack(batch, inflater));
        }
    }

    /// Whether the thread, which took the piece, finishes it within [`PATIENCE`].
    fn wait_for_thread(&self) -> bool {
        if self.unpacked.get().is_some() {
            return true;
        }
        let since = Instant::now();
        while since.elapsed() < PATIENCE {
            std::thread::yield_now();
            if self.unpacked.get().is_some() {
                return true;
            }
        }
        false
    }

    /// Checks and decompresses the piece's frames, as a cursor reads them one by one, up to
    /// the first that fails.
    fn unpack(&self, batch: &Batch, inflater: &mut Inflater) -> Unpacked {
        let segment = &batch.segment;
        let bytes = segment
            .map
            .as_ref()
            .map(|map| map.published())
            .unwrap_or_default();
        let mut unpacked = Unpacked {
            records: Vec::with_capacity(self.frames.min(4 * PIECE_FRAMES)),
            ..Unpacked::default()
        };
        let (mut offset, mut seq) = (self.offset, self.seq);
        // Within the piece's bytes, whatever count the index gives: the cursor reads on from
        // the piece's end only if its frames end exactly there.
        while unpacked.records.len() < self.frames && offset < self.end {
            let available = batch.end.saturating_sub(offset);
            let frame = usize::try_from(offset)
                .ok()
                .zip(usize::try_from(batch.end).ok())
                .and_then(|(from, to)| bytes.get(from..to))
                .unwrap_or_default();
            let (compressed, payload, frame_len) = match frame::decode_record(
                frame,
                &segment.crc,
                seq,
                batch.max_payload,
                available,
            ) {
                Ok(record) => record,
                Err(kind) => {
                    unpacked.failure = Some((offset, kind));
                    break;
                }
            };
            if !compressed {
                unpacked.bytes.extend_from_slice(payload);
            } else if !inflater.inflate_onto(payload, segment.dictionary(), &mut unpacked.bytes) {
                unpacked.failure = Some((offset, CorruptKind::Decompress));
                break;
            }
            unpacked.records.push((unpacked.bytes.len(), frame_len));
            offset += frame_len as u64;
            seq += 1;
        }
        unpacked
    }
}

/// When a cursor last found the thread starved of time.
static STARVED_AT: parking_lot::Mutex<Option<Instant>> = parking_lot::Mutex::new(None);

/// Notes that the thread has little time: cursors read alone for [`STARVED_PAUSE`].
fn starving() {
    *STARVED_AT.lock() = Some(Instant::now());
}

/// Whether cursors read alone for now, after [`starving`].
fn starved() -> bool {
    // Tests that play the thread's part are not paused by other tests' cursors.
    #[cfg(test)]
    if tests::playing_thread() {
        return false;
    }
    STARVED_AT
        .lock()
        .is_some_and(|at| at.elapsed() < STARVED_PAUSE)
}

/// The thread's queue, started by the first batch offered.
static SENDER: OnceLock<Option<SyncSender<Arc<Batch>>>> = OnceLock::new();

/// Offers the pieces of `batch` after its first to the thread; returns at once.
fn offer(batch: &Arc<Batch>) {
    if batch.pieces.len() < 2 {
        return;
    }
    if let Some(sender) = SENDER.get_or_init(spawn_thread).as_ref()
        && let Err(TrySendError::Full(_)) = sender.try_send(Arc::clone(batch))
    {
        // The thread is behind: its cursors read their pieces themselves meanwhile.
        starving();
    }
}

/// Starts the unpacking thread; `None` if it cannot be started (cursors then decode alone).
fn spawn_thread() -> Option<SyncSender<Arc<Batch>>> {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Arc<Batch>>(QUEUE);
    std::thread::Builder::new()
        .name("esl-replay-unpack".into())
        .spawn(move || {
            // Work a cursor can do itself: anything else on the machine comes first.
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
            let mut inflater = Inflater::default();
            for batch in receiver {
                // From the last piece back: the cursor takes them from the first on, and the
                // two meet once, instead of the cursor waiting at every piece for the one the
                // thread took just before it.
                for piece in batch.pieces.iter().skip(1).rev() {
                    if batch.dropped.load(Ordering::Relaxed) {
                        break;
                    }
                    piece.unpack_if_free(&batch, &mut inflater);
                }
            }
        })
        .ok()?;
    Some(sender)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::storage::frame::Decoded;
    use crate::storage::index::{IndexEntry, SparseIndex};
    use crate::storage::{Error, Log, LogOptions, PackOutcome, ReadStrategy, Reader, Seq};

    /// What plays the thread's part for batches split on this test's thread.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Thread {
        /// The real thread.
        Real,
        /// None: batches are not offered, so the cursor reads every piece itself.
        Absent,
        /// This thread, at once: it decodes every piece after the first.
        Here,
        /// As `Here`, but the piece at this index is taken and never finished.
        Stalled(usize),
    }

    thread_local! {
        static THREAD: Cell<Thread> = const { Cell::new(Thread::Real) };
        /// Records this thread's cursors read from decoded pieces.
        pub(super) static FROM_PIECES: Cell<u64> = const { Cell::new(0) };
    }

    /// Whether this test's thread plays the thread's part.
    pub(super) fn playing_thread() -> bool {
        THREAD.get() != Thread::Real
    }

    /// Plays the thread's part for `batch` as this test's thread asks; `false` for the
    /// real thread.
    pub(super) fn played_thread(batch: &Batch) -> bool {
        let stalled = match THREAD.get() {
            Thread::Real => return false,
            Thread::Absent => return true,
            Thread::Here => None,
            Thread::Stalled(index) => Some(index),
        };
        let mut inflater = Inflater::default();
        for (index, piece) in batch.pieces.iter().enumerate().skip(1).rev() {
            if Some(index) == stalled {
                piece.taken.store(true, Ordering::Release);
            } else {
                piece.unpack_if_free(batch, &mut inflater);
            }
        }
        true
    }

    /// Record `seq`: an ESL-like event of 300-600 bytes that compresses.
    fn record(seq: u64) -> Vec<u8> {
        let mut text = format!(
            "Event-Name: CHANNEL_EXECUTE\nEvent-Sequence: {seq}\nUnique-ID: {:016x}\n",
            seq.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        );
        for line in 0..(seq % 8) {
            text.push_str(&format!("variable_{line}: value {}\n", seq * line));
        }
        text.push_str(&"Channel-State: CS_EXECUTE\n".repeat(10));
        text.into_bytes()
    }

    fn options(strategy: ReadStrategy) -> LogOptions {
        LogOptions {
            segment_bytes: 512 << 10,
            max_payload_bytes: 64 << 10,
            read_strategy: strategy,
            ..LogOptions::default()
        }
    }

    /// A closed log of `count` records whose sealed segments are packed.
    fn packed_log(dir: &std::path::Path, count: u64) {
        let (mut log, _) = Log::open(dir, options(ReadStrategy::Mmap)).unwrap();
        for seq in 1..=count {
            assert_eq!(log.append(&record(seq)).unwrap(), Seq(seq));
        }
        // Only segments whose roll is durable are packed.
        log.sync().unwrap();
        let packed = log.pack_sealed().unwrap();
        assert!(
            packed
                .iter()
                .filter(|(_, outcome)| matches!(outcome, PackOutcome::Packed { .. }))
                .count()
                > 2,
            "{packed:?}"
        );
        log.close().unwrap();
    }

    /// Reads from `from` to the end, or to the first error, with `thread` playing the
    /// thread's part; the records read, and the error.
    fn read_with(
        reader: &Reader,
        from: u64,
        thread: Thread,
    ) -> (Vec<(u64, Vec<u8>)>, Option<Error>) {
        THREAD.set(thread);
        let mut cursor = reader.cursor(Seq(from)).unwrap();
        let mut read = Vec::new();
        loop {
            match cursor.next() {
                Ok(Some(record)) => read.push((record.seq.0, record.payload.to_vec())),
                Ok(None) => break (read, None),
                Err(error) => break (read, Some(error)),
            }
        }
    }

    #[test]
    fn records_read_through_pieces_are_the_records_written_whoever_decodes_them() {
        let dir = tempfile::tempdir().unwrap();
        let count = 5000;
        packed_log(dir.path(), count);
        let reader = Reader::open(dir.path(), &options(ReadStrategy::Mmap)).unwrap();
        for thread in [
            Thread::Here,
            Thread::Absent,
            Thread::Stalled(3),
            Thread::Real,
        ] {
            FROM_PIECES.set(0);
            let (read, error) = read_with(&reader, 1, thread);
            assert!(error.is_none(), "{thread:?}: {error:?}");
            assert_eq!(read.len() as u64, count, "{thread:?}");
            for (seq, payload) in read {
                assert_eq!(payload, record(seq), "{thread:?}: record {seq}");
            }
            let from_pieces = FROM_PIECES.get();
            match thread {
                // Most of each batch comes from the pieces the thread decoded.
                Thread::Here => assert!(from_pieces > count / 2, "{from_pieces}"),
                Thread::Absent => assert_eq!(from_pieces, 0),
                // The cursor waited for the stalled piece, then read on alone, and cursors
                // read alone for a while.
                Thread::Stalled(_) => assert!(STARVED_AT.lock().is_some()),
                Thread::Real => {}
            }
        }
    }

    /// Damage in a frame's payload, and in a frame's length, is reported as a cursor
    /// reading alone reports it, after the same records, and reading resumes at the same
    /// record after it.
    #[test]
    fn damage_is_reported_where_a_cursor_reading_alone_finds_it() {
        for (name, at) in [("payload", 40u64), ("length", 5)] {
            let dir = tempfile::tempdir().unwrap();
            packed_log(dir.path(), 5000);
            let second = Reader::open(dir.path(), &options(ReadStrategy::Mmap))
                .unwrap()
                .segments()[1]
                .0;
            // A frame well into the segment's second batch.
            let seq = second + 700;
            let path = crate::storage::codec::segment_path(dir.path(), second);
            let bytes = std::fs::read(&path).unwrap();
            let header = crate::storage::codec::FileHeader::decode(
                &bytes,
                crate::storage::codec::SEGMENT_MAGIC,
            )
            .unwrap();
            let mut offset = crate::storage::header::HEADER_LEN;
            for seq in header.base..seq {
                let rest = &bytes[offset..];
                let Decoded::Record { frame_len, .. } =
                    frame::decode(rest, header.salt, seq, u32::MAX)
                else {
                    unreachable!("record {seq} is a frame");
                };
                offset += frame_len;
            }
            let mut damaged = bytes.clone();
            damaged[offset + at as usize] ^= 0x10;
            std::fs::write(&path, &damaged).unwrap();

            let alone = Reader::open(dir.path(), &options(ReadStrategy::Pread)).unwrap();
            let (expected, expected_error) = read_with(&alone, second, Thread::Absent);
            assert!(
                matches!(
                    &expected_error,
                    Some(Error::Corrupt { segment, offset: at, .. })
                        if (segment.0, *at) == (second, offset as u64)
                ),
                "{name}: {expected_error:?}"
            );
            let resumed = alone.cursor(Seq(second)).map(|mut c| {
                while c.next().is_ok() {}
                c.skip_damage().unwrap()
            });

            let mapped = Reader::open(dir.path(), &options(ReadStrategy::Mmap)).unwrap();
            for thread in [Thread::Here, Thread::Absent, Thread::Stalled(2)] {
                FROM_PIECES.set(0);
                let (read, error) = read_with(&mapped, second, thread);
                assert_eq!(read, expected, "{name}, {thread:?}");
                assert_eq!(
                    format!("{error:?}"),
                    format!("{expected_error:?}"),
                    "{name}, {thread:?}"
                );
                if thread == Thread::Here {
                    assert!(FROM_PIECES.get() > 0, "{name}");
                }
                let mut cursor = mapped.cursor(Seq(second)).unwrap();
                while cursor.next().is_ok() {}
                assert_eq!(
                    Some(cursor.skip_damage().unwrap()),
                    resumed.as_ref().ok().cloned(),
                    "{name}, {thread:?}"
                );
                let next = cursor.next().unwrap().unwrap();
                assert_eq!(next.payload, record(next.seq.0).as_slice(), "{name}");
            }
        }
    }

    /// A sparse index that places frames wrongly (offsets off by one, sequences off by
    /// one, more frames than the bytes hold, a last entry that claims more frames before it
    /// than there are before the segment's end) changes nothing a cursor reads.
    #[test]
    fn pieces_placed_by_a_wrong_index_read_the_records_written() {
        let dir = tempfile::tempdir().unwrap();
        let count = 5000;
        packed_log(dir.path(), count);
        type Lie = fn(&mut Vec<IndexEntry>);
        let lies: [(&str, Lie); 4] = [
            ("offsets", |entries| {
                entries.iter_mut().for_each(|e| e.offset += 1);
            }),
            ("sequences", |entries| {
                entries.iter_mut().for_each(|e| e.seq += 1);
            }),
            ("more frames than bytes", |entries| {
                entries.iter_mut().for_each(|e| e.seq *= 3);
            }),
            ("frames past the end", |entries| {
                if let Some(last) = entries.last_mut() {
                    last.seq += 40;
                }
            }),
        ];
        for (name, lie) in lies {
            let reader = Reader::open(dir.path(), &options(ReadStrategy::Mmap)).unwrap();
            for base in reader.segments() {
                let Some(segment) = reader.shared().segment_for(base.0).unwrap() else {
                    continue;
                };
                let mut index = segment.index.write();
                // The first entry, where seeks start, stays true.
                let mut entries = index.entries().to_vec();
                let (_, after_first) = entries.split_first_mut().unwrap();
                let mut lied = after_first.to_vec();
                lie(&mut lied);
                after_first.copy_from_slice(&lied);
                *index = SparseIndex::from_entries(entries);
            }
            FROM_PIECES.set(0);
            let (read, error) = read_with(&reader, 1, Thread::Here);
            assert!(error.is_none(), "{name}: {error:?}");
            assert_eq!(read.len() as u64, count, "{name}");
            for (seq, payload) in read {
                assert_eq!(payload, record(seq), "{name}: record {seq}");
            }
            if name == "frames past the end" {
                assert!(FROM_PIECES.get() > count / 2, "{name}");
            }
        }
    }

    #[test]
    fn a_cursor_decompresses_no_further_ahead_than_its_reader_wants() {
        let mut unpacking = Unpacking::default();
        assert_eq!(unpacking.wanted_from(100), Some(BATCH_FRAMES));
        unpacking.want_until(100 + 3 * PIECE_FRAMES as u64 + 5);
        assert_eq!(
            unpacking.wanted_from(100),
            Some(3 * PIECE_FRAMES as u64 + 5)
        );
        // At least a piece while it wants any, nothing once it wants none.
        assert_eq!(
            unpacking.wanted_from(100 + 3 * PIECE_FRAMES as u64),
            Some(PIECE_FRAMES as u64)
        );
        assert_eq!(
            unpacking.wanted_from(100 + 3 * PIECE_FRAMES as u64 + 5),
            None
        );
        unpacking.want_until(u64::MAX);
        assert_eq!(unpacking.wanted_from(100), Some(BATCH_FRAMES));
    }
}
