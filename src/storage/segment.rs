//! Open segments: their handles, the frame scanner, and lazy loading (format/segment.md).
//!
//! A [`SegmentData`] is what readers need to read a segment: the file, an optional memory
//! map, the published end of its frames, whether it is sealed, and its sparse index. Scans
//! (recovery, lazy validation of sealed segments, and followers discovering new frames)
//! always read with `pread` through a [`FileWindow`]; memory maps are only used for bytes
//! whose frames were already validated (docs/SAFETY.md).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};

use super::bounded::{open_regular, open_regular_with};
use super::dir;
use super::error::{CorruptKind, Error, IoOp, Result, error_chain};
use super::frame::{self, Decoded, FRAME_HEADER_LEN, FrameCrc};
use super::header::{FileHeader, HEADER_LEN, INDEX_MAGIC, SEGMENT_MAGIC};
use super::id::SegmentId;
use super::index::{self, IndexEntry, IndexFooter, SparseIndex};
use super::io::mmap::SegmentMap;
use super::io::{Io, read_at, write_all_at};
use super::meta::CleanMark;
use super::options::ReadStrategy;
use super::pack::{DICTIONARY_LIMIT, Dictionary, TRAILER_OVERHEAD, Trailer};
use super::watermark::WatermarkReader;

/// Bytes `pread` fetches after a jump when nothing better is known (a cursor's seek reads
/// just the index interval holding its target instead).
pub(crate) const WINDOW_BYTES_MIN: usize = 64 << 10;
/// Bytes `pread` fetches at a time once reading runs on sequentially (the window doubles
/// on each sequential refill up to this). Small enough to stay in a core's cache between
/// the copy and the checksum that reads it.
const WINDOW_BYTES_MAX: usize = 256 << 10;

/// An open segment.
#[derive(Debug)]
pub(crate) struct SegmentData {
    pub(crate) id: SegmentId,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) salt: u64,
    /// The checksum state after `salt`, which every frame checksum starts from.
    pub(crate) crc: FrameCrc,
    pub(crate) file_len: u64,
    pub(crate) map: Option<Arc<SegmentMap>>,
    /// Where the published frames end; bytes below never change.
    pub(crate) end: AtomicU64,
    /// The sequence of the first frame at or after `end`.
    pub(crate) end_seq: AtomicU64,
    /// Whether a seal frame sits at `end`.
    pub(crate) sealed: AtomicBool,
    pub(crate) index: RwLock<SparseIndex>,
    /// How many index entries are in the index file, and the file once created.
    pub(crate) index_file: Mutex<IndexFileState>,
    /// For a follower's last segment: damage where its frames stop, below the end a clean
    /// shutdown recorded [REC-01] or records the watermark file named durable [REC-03], or
    /// before a packed segment's seal [SEG-09], so reads that reach it fail instead of
    /// finding the end.
    pub(crate) damaged_end: std::sync::OnceLock<(u64, CorruptKind)>,
    /// For a packed segment [SEG-09]: its dictionary and its bytes before packing.
    pub(crate) packed: Option<Packed>,
    /// For a packed last segment whose trailer is damaged [REC-13]: where and how. Its
    /// frames end where the scan found them, but none of its records can be read.
    pub(crate) unreadable: Option<(u64, CorruptKind)>,
    /// How far into the mapping read-ahead has been asked for (`readahead.rs`).
    pub(crate) read_ahead: AtomicU64,
    /// Where the zeros the writer wrote ahead of its frames end ([`zero_ahead`]).
    pub(crate) zeroed: AtomicU64,
    /// Whether the file is a recycled segment [SEG-10]: bytes past its frames are not zeros.
    pub(crate) recycled: bool,
}

/// What a packed segment's trailer says [SEG-09].
#[derive(Debug)]
pub(crate) struct Packed {
    /// The dictionary its compressed frames need (`None`: compressed without one).
    pub(crate) dictionary: Option<Dictionary>,
    /// Bytes of its header, frames and seal before it was packed.
    pub(crate) unpacked_len: u64,
    /// Bytes of its trailer.
    pub(crate) trailer_len: u64,
}

impl SegmentData {
    /// The dictionary of the segment's compressed frames, if it has one.
    pub(crate) fn dictionary(&self) -> Option<&Dictionary> {
        self.packed.as_ref().and_then(|p| p.dictionary.as_ref())
    }
}

#[derive(Debug, Default)]
pub(crate) struct IndexFileState {
    file: Option<File>,
    persisted: usize,
    complete: bool,
}

impl SegmentData {
    pub(crate) fn end(&self) -> u64 {
        self.end.load(Ordering::Acquire)
    }

    /// The published end, made readable through the segment's map as well (readers borrow
    /// from a map only below the map's own published end).
    pub(crate) fn load_end(&self) -> u64 {
        let end = self.end();
        if let Some(map) = &self.map {
            map.publish(end);
        }
        end
    }

    /// The bytes of the frame at `offset`, bounded by `end` (a published end): borrowed from
    /// the map when the segment is read through one, else read into `window` with `pread`.
    /// Either way they are the header and, if its length is plausible, the payload.
    ///
    /// # Errors
    ///
    /// I/O errors; a map shorter than `end` (the file is shorter than its frames).
    #[inline]
    pub(crate) fn frame_at<'a>(
        &'a self,
        window: &'a mut FileWindow,
        offset: u64,
        end: u64,
        max_payload: u32,
    ) -> Result<&'a [u8]> {
        let Some(map) = &self.map else {
            return window.frame(&self.file, &self.path, offset, end, max_payload);
        };
        let published = map.published();
        let range = usize::try_from(offset).ok().zip(usize::try_from(end).ok());
        range
            .and_then(|(from, to)| published.get(from..to))
            .ok_or_else(|| {
                self.corrupt(
                    offset,
                    CorruptKind::LengthOutOfBounds {
                        len: end,
                        max: published.len() as u64,
                    },
                )
            })
    }

    /// The segment's file as a scan reads it.
    pub(crate) fn scan_file(&self, max_payload: u32) -> ScanFile<'_> {
        ScanFile {
            file: &self.file,
            path: &self.path,
            base: self.id.0,
            salt: self.salt,
            len: self.file_len,
            max_payload,
            recycled: self.recycled,
        }
    }

    pub(crate) fn end_seq(&self) -> u64 {
        self.end_seq.load(Ordering::Acquire)
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    pub(crate) fn corrupt(&self, offset: u64, kind: CorruptKind) -> Error {
        Error::Corrupt {
            segment: self.id,
            offset,
            kind,
        }
    }

    /// Appends index entries for frames below `durable_end` to the index file (no sync).
    ///
    /// Entries are only written for frames already durable, so any entry found after a crash
    /// points at durable data [IDX-05]. With `footer`, the index is completed and synced.
    pub(crate) fn persist_index(
        &self,
        io: &dyn Io,
        dir: &Path,
        durable_end: u64,
        footer: Option<IndexFooter>,
    ) -> Result<()> {
        let mut state = self.index_file.lock();
        if state.complete {
            return Ok(());
        }
        let path = dir::index_path(dir, self.id.0);
        if state.file.is_none() {
            let file = open_regular_with(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true),
                &path,
            )
            .map_err(|e| Error::io(IoOp::Create, &path, e))?;
            let header = FileHeader::new(self.id.0, self.salt).encode(INDEX_MAGIC);
            write_all_at(io, &file, &header, 0, &path)?;
            state.file = Some(file);
            state.persisted = 0;
        }
        let mut bytes = Vec::new();
        let mut count = state.persisted;
        {
            let index = self.index.read();
            for entry in index.entries().iter().skip(state.persisted) {
                if u64::from(entry.offset) >= durable_end {
                    break;
                }
                bytes.extend_from_slice(&entry.encode(self.salt));
                count += 1;
            }
        }
        if let Some(footer) = footer {
            bytes.extend_from_slice(&footer.encode(self.salt));
        }
        let Some(file) = state.file.as_ref() else {
            return Ok(());
        };
        let offset = (HEADER_LEN + state.persisted * index::ENTRY_LEN) as u64;
        write_all_at(io, file, &bytes, offset, &path)?;
        if footer.is_some() {
            io.sync_data(file)
                .map_err(|e| Error::io(IoOp::Sync, &path, e))?;
            state.complete = true;
            // A complete index is never written again: release its descriptor, so a long-lived
            // writer holds one descriptor per sealed segment, not two.
            state.file = None;
        }
        state.persisted = count;
        Ok(())
    }

    /// Completes the index of this segment, sealed at `seal_offset` for successor `end_seq`,
    /// with its footer [ROLL-03]. The index can be rebuilt, so a failure is logged, not
    /// returned (the next open after a crash then checks the segment by scanning it).
    pub(crate) fn complete_index(&self, io: &dyn Io, dir: &Path, seal_offset: u64, end_seq: u64) {
        let footer = IndexFooter {
            end_seq,
            seal_offset: u32::try_from(seal_offset).unwrap_or(u32::MAX),
        };
        if let Err(error) = self.persist_index(io, dir, u64::MAX, Some(footer)) {
            tracing::warn!(error = %error_chain(&error), segment = %self.id, "could not write the index of a sealed segment");
        }
    }

    /// Syncs the index file (the clean-close path, which writes no footer).
    pub(crate) fn sync_index(&self, io: &dyn Io, dir: &Path) -> Result<()> {
        let state = self.index_file.lock();
        if let Some(file) = state.file.as_ref() {
            let path = dir::index_path(dir, self.id.0);
            io.sync_data(file)
                .map_err(|e| Error::io(IoOp::Sync, path, e))?;
        }
        Ok(())
    }
}

/// A `pread` buffer over part of a file.
#[derive(Debug, Default)]
pub(crate) struct FileWindow {
    /// Allocated (and zeroed) once as it grows; only `[..filled]` holds file bytes.
    buf: Vec<u8>,
    filled: usize,
    start: u64,
    /// The next refill's size (0 before the first read, unless a caller planned it).
    size: usize,
}

impl FileWindow {
    /// The bytes `[offset, min(offset + want, limit))`, reading as needed.
    pub(crate) fn get(
        &mut self,
        file: &File,
        path: &Path,
        offset: u64,
        want: usize,
        limit: u64,
    ) -> Result<&[u8]> {
        let stop = offset.saturating_add(want as u64).min(limit);
        let have_end = self.start + self.filled as u64;
        if offset < self.start || stop > have_end {
            let sequential = self.filled > 0 && offset >= self.start && offset <= have_end;
            self.size = if sequential {
                (self.size * 2).clamp(WINDOW_BYTES_MIN, WINDOW_BYTES_MAX)
            } else if self.filled == 0 && self.size > 0 {
                self.size // planned by the caller
            } else {
                WINDOW_BYTES_MIN
            };
            let read_len = usize::try_from(limit.saturating_sub(offset))
                .unwrap_or(usize::MAX)
                .min(self.size.max(want));
            if self.buf.len() < read_len {
                self.buf.resize(read_len, 0);
            }
            self.filled = 0;
            let n = match self.buf.get_mut(..read_len) {
                Some(target) => read_at(file, target, offset, path)?,
                None => 0,
            };
            self.filled = n;
            self.start = offset;
        }
        let from = usize::try_from(offset - self.start).unwrap_or(usize::MAX);
        let to = usize::try_from(stop.saturating_sub(self.start))
            .unwrap_or(usize::MAX)
            .min(self.filled);
        Ok(self.buf.get(from..to).unwrap_or_default())
    }

    /// Forgets the buffered bytes (the cursor moved to another file, or they may be stale).
    pub(crate) fn reset(&mut self) {
        self.filled = 0;
        self.start = 0;
        self.size = 0;
    }

    /// Forgets the buffered bytes and makes the next read fetch `bytes` (at least a header):
    /// a seek knows how far the frames it must scan reach.
    pub(crate) fn plan(&mut self, bytes: usize) {
        self.reset();
        self.size = bytes.clamp(FRAME_HEADER_LEN, WINDOW_BYTES_MAX);
    }

    /// Where the frame at `offset` lies in the buffer, if the buffer holds its header and
    /// every byte [`FileWindow::frame`] would return for it.
    #[inline]
    fn buffered(&self, offset: u64, limit: u64, max_payload: u32) -> Option<(usize, usize)> {
        let from = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        let head = self
            .buf
            .get(from..from.checked_add(FRAME_HEADER_LEN)?.min(self.filled))?;
        let len_flags = frame::len_flags(head)?;
        let len = (len_flags & frame::FRAME_PAYLOAD_LIMIT).min(max_payload);
        let stop = offset
            .checked_add((FRAME_HEADER_LEN + len as usize) as u64)?
            .min(limit);
        if stop < offset + FRAME_HEADER_LEN as u64 {
            return None;
        }
        let to = usize::try_from(stop - self.start).ok()?;
        (to <= self.filled).then_some((from, to))
    }

    /// The bytes of the frame at `offset`: its header, and its payload if the header's length
    /// is plausible, bounded by `limit`.
    #[inline]
    pub(crate) fn frame(
        &mut self,
        file: &File,
        path: &Path,
        offset: u64,
        limit: u64,
        max_payload: u32,
    ) -> Result<&[u8]> {
        if let Some((from, to)) = self.buffered(offset, limit, max_payload) {
            return Ok(self.buf.get(from..to).unwrap_or_default());
        }
        let want = match self.get(file, path, offset, FRAME_HEADER_LEN, limit)? {
            head if head.len() == FRAME_HEADER_LEN => {
                let len_flags = frame::len_flags(head).unwrap_or_default();
                let len = len_flags & frame::FRAME_PAYLOAD_LIMIT;
                FRAME_HEADER_LEN + len.min(max_payload) as usize
            }
            head => head.len(),
        };
        self.get(file, path, offset, want, limit)
    }
}

/// Why a scan stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    /// It reached the limit it was given.
    Limit,
    /// Zeroed space: nothing was written here.
    Empty,
    /// A seal: the segment is complete.
    Seal,
    /// Bytes that are not a valid frame for this position.
    Invalid(CorruptKind),
}

/// The result of scanning frames.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Where the valid frames end (the seal's offset if sealed).
    pub(crate) end: u64,
    /// The sequence after the last valid frame.
    pub(crate) end_seq: u64,
    pub(crate) stop: Stop,
    /// Index entries for the frames scanned.
    pub(crate) entries: Vec<IndexEntry>,
}

/// One segment file as a scan reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ScanFile<'a> {
    pub(crate) file: &'a File,
    /// For errors.
    pub(crate) path: &'a Path,
    /// The segment's base sequence and salt ([HDR-01]).
    pub(crate) base: u64,
    pub(crate) salt: u64,
    /// The file's length: no frame reaches past it.
    pub(crate) len: u64,
    /// The payload bound frames are checked against ([FRM-05]).
    pub(crate) max_payload: u32,
    /// Whether the file is a recycled segment [SEG-10].
    pub(crate) recycled: bool,
}

impl<'a> ScanFile<'a> {
    /// A file [`open_file`] opened, with its header.
    pub(crate) fn opened(
        file: &'a File,
        path: &'a Path,
        header: &FileHeader,
        len: u64,
        max_payload: u32,
    ) -> ScanFile<'a> {
        ScanFile {
            file,
            path,
            base: header.base,
            salt: header.salt,
            len,
            max_payload,
            recycled: header.is_recycled(),
        }
    }

    /// Decodes the frame at `offset`, expected to hold `seq`, reading no further than `limit`.
    pub(crate) fn decode_at<'w>(
        &self,
        window: &'w mut FileWindow,
        offset: u64,
        seq: u64,
        limit: u64,
    ) -> Result<Decoded<'w>> {
        let bytes = window.frame(self.file, self.path, offset, limit, self.max_payload)?;
        Ok(frame::decode(bytes, self.salt, seq, self.max_payload))
    }
}

/// Scans the frames of `source` from `offset` (holding `seq`) until something other than a
/// record frame or until `limit`, collecting index entries after `last_indexed`.
pub(crate) fn scan(
    window: &mut FileWindow,
    source: ScanFile<'_>,
    (mut offset, mut seq): (u64, u64),
    limit: u64,
    mut last_indexed: Option<u64>,
) -> Result<Scan> {
    let mut entries = Vec::new();
    loop {
        if offset >= limit {
            return Ok(Scan {
                end: offset,
                end_seq: seq,
                stop: Stop::Limit,
                entries,
            });
        }
        match source.decode_at(window, offset, seq, limit)? {
            Decoded::Record { frame_len, .. } => {
                if last_indexed.is_none_or(|last| offset >= last + index::INDEX_INTERVAL) {
                    let offset32 = u32::try_from(offset).unwrap_or(u32::MAX);
                    entries.push(IndexEntry {
                        seq,
                        offset: offset32,
                    });
                    last_indexed = Some(offset);
                }
                offset += frame_len as u64;
                seq += 1;
            }
            Decoded::Seal => {
                return Ok(Scan {
                    end: offset,
                    end_seq: seq,
                    stop: Stop::Seal,
                    entries,
                });
            }
            Decoded::Empty => {
                return Ok(Scan {
                    end: offset,
                    end_seq: seq,
                    stop: Stop::Empty,
                    entries,
                });
            }
            Decoded::Invalid(kind) => {
                return Ok(Scan {
                    end: offset,
                    end_seq: seq,
                    stop: Stop::Invalid(kind),
                    entries,
                });
            }
        }
    }
}

/// Says, for as long as `file` stays open, that this process reads it: a shared `flock`,
/// which keeps a truncation from freeing the blocks of the file once removed [TRUNC-04].
/// `false` if a truncation is freeing them already. Where `flock` is not supported there is
/// nothing to coordinate with, and truncations never free blocks in steps.
pub(crate) fn hold_open(file: &File) -> bool {
    use rustix::fs::{FlockOperation, flock};
    flock(file, FlockOperation::NonBlockingLockShared) != Err(rustix::io::Errno::WOULDBLOCK)
}

/// Whether `path` still names the file `metadata` describes. Checked after [`hold_open`]: a
/// file that is still named then cannot be recycled while this reader holds it [SEG-10].
fn still_named(metadata: &std::fs::Metadata, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .is_ok_and(|named| (named.dev(), named.ino()) == (metadata.dev(), metadata.ino()))
}

/// Whether `path` still names the open `file`: the file has a link (`fstat`), and the path
/// leads to the same device and inode (`stat`). A path that no longer exists is `Ok(false)`;
/// other failures to look are errors.
pub(crate) fn file_still_named(file: &File, path: &Path) -> std::io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let held = file.metadata()?;
    if held.nlink() == 0 {
        return Ok(false);
    }
    match std::fs::metadata(path) {
        Ok(named) => Ok((named.dev(), named.ino()) == (held.dev(), held.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The zeros the writer keeps written ahead of its frames in the active segment [SEG-08].
const ZERO_AHEAD_BYTES: u64 = 256 << 10;
/// The block size zeros are aligned to: a file system converts reserved space a block at a time.
const ZERO_BLOCK: u64 = 4096;
static ZEROS: [u8; ZERO_AHEAD_BYTES as usize] = [0; ZERO_AHEAD_BYTES as usize];

/// Writes zeros over the reserved blocks just past `end`, where the writer's next frames go,
/// once those frames are about to reach blocks not yet written [SEG-08].
///
/// The first write into a reserved block also changes the file's extent map (ext4 converts
/// an unwritten extent), which makes the `fdatasync` covering it commit the file system's
/// journal as well as flush the data: most syncs of small records would pay for a journal
/// commit. Zeros written a window ahead, within the sync that already pays for one, leave
/// the syncs of the next frames only data to flush. The bytes are the zeros the space
/// already reads as, so readers, recovery and the format see no change.
///
/// Only the thread that writes frames may call this, serialised with those writes (the
/// `EveryAppend` appender; otherwise under the flush order): zeros start past `end` plus a
/// seal frame, so they never cover a frame written before or a seal written at `end`. A
/// failure only stops zeroing this segment: nothing depends on the zeros.
pub(crate) fn zero_ahead(io: &dyn Io, segment: &SegmentData, end: u64) {
    let zeroed = segment.zeroed.load(Ordering::Relaxed);
    if end.saturating_add(ZERO_BLOCK) <= zeroed {
        return;
    }
    let from = (end + FRAME_HEADER_LEN as u64)
        .next_multiple_of(ZERO_BLOCK)
        .max(zeroed);
    let to = from.saturating_add(ZERO_AHEAD_BYTES).min(segment.file_len);
    let Some(zeros) = usize::try_from(to.saturating_sub(from))
        .ok()
        .and_then(|len| ZEROS.get(..len))
    else {
        return;
    };
    let next = match write_all_at(io, &segment.file, zeros, from, &segment.path) {
        Ok(()) => to,
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "could not write zeros ahead of the frames; syncs of new blocks will commit the journal");
            u64::MAX
        }
    };
    segment.zeroed.store(next, Ordering::Relaxed);
}

/// Takes the exclusive `flock` on a removed segment file if no reader in any process holds
/// it, which makes every reader that opens it later take it for deleted ([`hold_open`]).
pub(crate) fn lock_exclusive(file: &File) -> bool {
    use rustix::fs::{FlockOperation, flock};
    flock(file, FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// Bytes freed per step when a removed segment's blocks are released [TRUNC-04].
const RELEASE_STEP: u64 = 256 << 10;
/// The pause after each step: a file system that discards freed blocks (ext4 `-o discard`)
/// sends the device one small discard at a time, and syncs queued between them wait for
/// one step rather than for the whole segment.
const RELEASE_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Frees the blocks of a removed segment file, opened for writing before its removal, in
/// steps, if no reader in any process still has it open [TRUNC-04]. Returns whether it did.
///
/// Best effort: a file system that cannot punch holes, or a reader that holds the file,
/// leaves the blocks to be freed whole when the last descriptor closes.
pub(crate) fn release_blocks(file: &File) -> bool {
    use rustix::fs::{FallocateFlags, fallocate};
    if !lock_exclusive(file) {
        return false;
    }
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let punch = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    let mut offset = 0;
    while offset < len {
        let step = RELEASE_STEP.min(len - offset);
        if fallocate(file, punch, offset, step).is_err() {
            return false;
        }
        offset += step;
        std::thread::sleep(RELEASE_PAUSE);
    }
    true
}

/// Opens a segment file and validates its header against its name [SEG-01].
pub(crate) fn open_file(
    dir: &Path,
    base: u64,
    writable: bool,
) -> Result<(File, PathBuf, FileHeader, u64)> {
    let path = dir::segment_path(dir, base);
    // The file opened may leave its name before this reader holds it: a truncation removed
    // it and is freeing its blocks [TRUNC-04] or keeping it for reuse [TRUNC-05], or packing
    // replaced it [PACK-04]. The name is opened again: gone after a truncation, the packed
    // file after a packing. (A packing replaces a segment once, so two tries suffice.)
    let mut tries = 0;
    let (file, metadata) = loop {
        let file = open_regular_with(OpenOptions::new().read(true).write(writable), &path)
            .map_err(|e| Error::io(IoOp::Open, &path, e))?;
        let metadata = file
            .metadata()
            .map_err(|e| Error::io(IoOp::Open, &path, e))?;
        if hold_open(&file) && still_named(&metadata, &path) {
            break (file, metadata);
        }
        tries += 1;
        if tries == 3 {
            let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
            return Err(Error::io(IoOp::Open, &path, gone));
        }
    };
    let file_len = metadata.len();
    let mut bytes = [0u8; HEADER_LEN];
    let n = read_at(&file, &mut bytes, 0, &path)?;
    let segment = SegmentId(base);
    let header =
        FileHeader::decode(bytes.get(..n).unwrap_or_default(), SEGMENT_MAGIC).map_err(|kind| {
            Error::Corrupt {
                segment,
                offset: 0,
                kind,
            }
        })?;
    if header.base != base {
        return Err(Error::Corrupt {
            segment,
            offset: 16,
            kind: CorruptKind::WrongSegment {
                expected: base,
                found: header.base,
            },
        });
    }
    Ok((file, path, header, file_len))
}

/// Why the segment file at `base` holds no header of its own, if it does not: its first
/// bytes read as zeros (a file made at its full length before its header was written,
/// [ROLL-04]), or as the valid header of another segment (a file a truncation kept, before
/// its new header was written, [TRUNC-05]). `None` if it holds any other bytes there.
pub(crate) fn missing_header(dir: &Path, base: u64) -> Result<Option<CorruptKind>> {
    let path = dir::segment_path(dir, base);
    let file = open_regular(&path).map_err(|e| Error::io(IoOp::Open, &path, e))?;
    let mut bytes = [0u8; HEADER_LEN];
    let n = read_at(&file, &mut bytes, 0, &path)?;
    let bytes = bytes.get(..n).unwrap_or_default();
    if bytes.iter().all(|b| *b == 0) {
        return Ok(Some(CorruptKind::BadMagic));
    }
    Ok(FileHeader::decode(bytes, SEGMENT_MAGIC)
        .ok()
        .filter(|header| header.base != base)
        .map(|header| CorruptKind::WrongSegment {
            expected: base,
            found: header.base,
        }))
}

/// Reads a segment's index file; `None` when missing or belonging to another segment.
pub(crate) fn read_index(dir: &Path, base: u64, salt: u64) -> Option<index::IndexFile> {
    let file = open_regular(&dir::index_path(dir, base)).ok()?;
    let len = file.metadata().ok()?.len();
    index::read_file(file, len, base, salt)
}

/// Where to start scanning: the last index entry whose frame validates, else the first frame.
pub(crate) fn resume_point(
    window: &mut FileWindow,
    source: ScanFile<'_>,
    entries: &mut Vec<IndexEntry>,
) -> Result<(u64, u64)> {
    while let Some(entry) = entries.last().copied() {
        let offset = u64::from(entry.offset);
        if let Decoded::Record { .. } = source.decode_at(window, offset, entry.seq, source.len)? {
            return Ok((offset, entry.seq));
        }
        entries.pop();
    }
    Ok((HEADER_LEN as u64, source.base))
}

/// Scans from the resume point of `entries` (see [`resume_point`]) up to `limit`, appending
/// the index entries it finds; returns where the scan started and what it found.
pub(crate) fn scan_from_index(
    window: &mut FileWindow,
    source: ScanFile<'_>,
    entries: &mut Vec<IndexEntry>,
    limit: u64,
) -> Result<(u64, Scan)> {
    let (offset, seq) = resume_point(window, source, entries)?;
    let last = entries.last().map(|e| u64::from(e.offset));
    let mut found = scan(window, source, (offset, seq), limit, last)?;
    entries.append(&mut found.entries);
    Ok((offset, found))
}

/// What a segment handle is built from.
#[derive(Debug)]
pub(crate) struct Parts {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) header: FileHeader,
    pub(crate) file_len: u64,
    pub(crate) end: u64,
    pub(crate) end_seq: u64,
    pub(crate) sealed: bool,
    pub(crate) entries: Vec<IndexEntry>,
}

impl Parts {
    pub(crate) fn into_data(self, map: Option<Arc<SegmentMap>>) -> SegmentData {
        SegmentData {
            id: SegmentId(self.header.base),
            path: self.path,
            file: self.file,
            salt: self.header.salt,
            crc: FrameCrc::new(self.header.salt),
            file_len: self.file_len,
            map,
            end: AtomicU64::new(self.end),
            end_seq: AtomicU64::new(self.end_seq),
            sealed: AtomicBool::new(self.sealed),
            index: RwLock::new(SparseIndex::from_entries(self.entries)),
            index_file: Mutex::new(IndexFileState {
                file: None,
                persisted: 0,
                complete: self.sealed,
            }),
            damaged_end: std::sync::OnceLock::new(),
            read_ahead: AtomicU64::new(0),
            // A recycled file's blocks are written already: zeros ahead would only cost
            // writes [SEG-10].
            zeroed: AtomicU64::new(if self.header.is_recycled() {
                u64::MAX
            } else {
                0
            }),
            recycled: self.header.is_recycled(),
            packed: None,
            unreadable: None,
        }
    }
}

/// Maps a segment for readers when the strategy asks for it.
pub(crate) fn map_for_reading(
    strategy: ReadStrategy,
    file: &File,
    path: &Path,
) -> Result<Option<Arc<SegmentMap>>> {
    match strategy {
        ReadStrategy::Mmap => SegmentMap::read_only(file, path).map(|m| Some(Arc::new(m))),
        ReadStrategy::Pread => Ok(None),
    }
}

/// Where the rolls no index footer proves finished begin [REC-08]: the index in `segments`
/// of the sealed segment of the oldest such roll, or of the last segment if every roll is
/// proven. Walking back from the last segment, the newest proven roll proves every earlier
/// one, since rolls finish in order and each writes its footer last.
pub(crate) fn first_unproven_roll(dir: &Path, segments: &[u64], max_payload: u32) -> Result<usize> {
    let mut first = segments.len().saturating_sub(1);
    while let Some(i) = first.checked_sub(1) {
        let (Some(&sealed), Some(&successor)) = (segments.get(i), segments.get(i + 1)) else {
            break;
        };
        match roll_proven(dir, sealed, successor, max_payload) {
            Ok(true) => break,
            Ok(false) => first = i,
            // Removed by a truncation (in another process, for a follower): so is every
            // segment before it, and its records are below a start made durable first.
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                break;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(first)
}

/// Whether the roll from `sealed` to `successor` is proven finished: the sealed segment is
/// packed, which only a durable roll allows [PACK-01], or its index footer names the
/// successor and its seal decodes [ROLL-03] [REC-08].
pub(crate) fn roll_proven(
    dir: &Path,
    sealed: u64,
    successor: u64,
    max_payload: u32,
) -> Result<bool> {
    let (file, path, header, file_len) = open_file(dir, sealed, false)?;
    if header.is_packed() {
        return Ok(true);
    }
    let Some(footer) = read_index(dir, sealed, header.salt).and_then(|i| i.footer) else {
        return Ok(false);
    };
    if footer.end_seq != successor {
        return Ok(false);
    }
    let mut window = FileWindow::default();
    let bytes = window
        .frame(
            &file,
            &path,
            u64::from(footer.seal_offset),
            file_len,
            max_payload,
        )?
        .to_vec();
    Ok(frame::decode(&bytes, header.salt, footer.end_seq, max_payload) == Decoded::Seal)
}

/// Whether what the writer recorded proves that the roll to the segment at `successor`
/// finished, whatever the sealed segment now holds: a clean close finished every roll
/// [REC-01], and a watermark file that names a record of the successor durable was written
/// after the roll's syncs [META-04] [ROLL-07].
fn roll_finished_by_record(dir: &Path, successor: u64) -> bool {
    let clean = super::meta::read_file(&dir.join(dir::CLEAN_FILE))
        .is_ok_and(|bytes| CleanMark::decode(&bytes).is_ok());
    clean
        || WatermarkReader::new(dir)
            .read()
            .is_some_and(|durable| successor < durable)
}

/// Loads a sealed segment (one with a successor) for reading [SEG-06].
///
/// The index footer and the seal it names are checked; if either is missing or damaged the
/// segment is scanned and the index rebuilt (and rewritten when `rewrite_index` is set, that
/// is, by the writer, if the scan found the seal). A scan that does not end in a seal is
/// damage unless it reached the successor's base, where only the seal is lost [RD-04].
pub(crate) fn load_sealed(
    dir: &Path,
    base: u64,
    successor: u64,
    strategy: ReadStrategy,
    max_payload: u32,
    rewrite_index: Option<&dyn Io>,
    later: Option<&[u64]>,
) -> Result<SegmentData> {
    let (file, path, header, file_len, packed) = open_frames(dir, base, false)?;
    let segment = SegmentId(base);
    let source = ScanFile::opened(&file, &path, &header, file_len, max_payload);
    let mut window = FileWindow::default();
    let index = read_index(dir, base, header.salt).unwrap_or_default();
    let mut entries = index.entries;
    let footer_ok = index.footer.filter(|footer| {
        let offset = u64::from(footer.seal_offset);
        window
            .frame(&file, &path, offset, file_len, max_payload)
            .is_ok_and(|bytes| {
                frame::decode(bytes, header.salt, footer.end_seq, max_payload) == Decoded::Seal
            })
            && entries
                .last()
                .is_none_or(|e| u64::from(e.offset) < offset && e.seq < footer.end_seq)
    });
    let (end, end_seq) = if let Some(footer) = footer_ok {
        (u64::from(footer.seal_offset), footer.end_seq)
    } else {
        tracing::info!(segment = %segment, "rebuilding the index of a sealed segment");
        let (_, mut found) = scan_from_index(&mut window, source, &mut entries, file_len)?;
        // A follower may see a segment whose roll had not finished: after a power loss its
        // last frames and seal may be missing, and no later record was acknowledged. If no
        // later roll proves it finished, its frames end the log, as the writer's next open
        // decides [REC-08]. (`later`: the bases after this one, for followers.)
        let unfinished = || -> Result<bool> {
            let Some(later) = later else {
                return Ok(false);
            };
            if packed.is_some() || roll_finished_by_record(dir, successor) {
                return Ok(false);
            }
            for pair in later.windows(2) {
                if let [sealed, successor] = *pair
                    && roll_proven(dir, sealed, successor, max_payload)?
                {
                    return Ok(false);
                }
            }
            Ok(true)
        };
        if found.stop != Stop::Seal && unfinished()? {
            tracing::warn!(%segment, offset = found.end, "a roll did not finish; the log ends in this segment until the writer recovers it");
            let map = map_for_reading(strategy, &file, &path)?;
            let parts = Parts {
                file,
                path,
                header,
                file_len,
                end: found.end,
                end_seq: found.end_seq,
                sealed: false,
                entries,
            };
            return Ok(parts.into_data(map));
        }
        // Damage hides only itself [RD-04]: past a damaged frame the scan resumes at the next
        // valid one, so that reads of the records around it work.
        let mut seal_damaged = false;
        loop {
            let fault = match found.stop {
                Stop::Seal => break,
                Stop::Limit => CorruptKind::MissingSeal,
                Stop::Invalid(kind) => kind,
                Stop::Empty => CorruptKind::MissingSeal,
            };
            if found.end_seq == successor {
                // Every record up to the successor's base is here: only the seal is damaged,
                // which verification reports. (Its index is not rewritten with a footer
                // that names a damaged seal.)
                tracing::warn!(%segment, offset = found.end, %fault, "the seal of a sealed segment is damaged; each of its records is intact");
                seal_damaged = true;
                break;
            }
            let resync = match damage_end(source, found.end, file_len)? {
                Some(last) => find_valid_frame(source, found.end, last, found.end_seq)?,
                None => None,
            };
            let Some(Resync {
                offset,
                seq: Some(seq),
            }) = resync
            else {
                return Err(Error::Corrupt {
                    segment,
                    offset: found.end,
                    kind: fault,
                });
            };
            tracing::warn!(%segment, offset = found.end, %fault, resumes_at = offset, "damaged frames in a sealed segment; reading on after them");
            found = scan(&mut window, source, (offset, seq), file_len, None)?;
            entries.append(&mut found.entries);
        }
        if let Some(io) = rewrite_index.filter(|_| !seal_damaged) {
            let mut bytes = FileHeader::new(base, header.salt)
                .encode(INDEX_MAGIC)
                .to_vec();
            for entry in &entries {
                bytes.extend_from_slice(&entry.encode(header.salt));
            }
            let footer = IndexFooter {
                end_seq: found.end_seq,
                seal_offset: u32::try_from(found.end).unwrap_or(u32::MAX),
            };
            bytes.extend_from_slice(&footer.encode(header.salt));
            // The index is only a shortcut: a full disk must not make the segment unreadable.
            if let Err(error) =
                super::durable::replace_file(io, &dir::index_path(dir, base), &bytes)
            {
                tracing::warn!(error = %error_chain(&error), %segment, "could not rewrite the index of a sealed segment; it will be rebuilt again");
            }
        }
        (found.end, found.end_seq)
    };
    if packed.is_some() && end + FRAME_HEADER_LEN as u64 != file_len {
        // The trailer must follow the seal: anything else means one of them is not what it
        // claims to be.
        return Err(Error::Corrupt {
            segment,
            offset: end,
            kind: CorruptKind::MissingSeal,
        });
    }
    if end_seq != successor {
        // The records this segment holds are intact: they stay readable, and a cursor meets
        // the gap (a successor missing or out of place) at the seal [RD-04].
        tracing::warn!(%segment, expected = end_seq, found = successor, "the next segment does not start where this one ends");
    }
    let map = map_for_reading(strategy, &file, &path)?;
    let parts = Parts {
        file,
        path,
        header,
        file_len,
        end,
        end_seq,
        sealed: true,
        entries,
    };
    let mut data = parts.into_data(map);
    data.packed = packed;
    Ok(data)
}

/// Opens a segment file as [`open_file`] does, for its frames: the length returned is where
/// its frames' region ends. For a packed segment [SEG-09] that is where its trailer starts,
/// read and checked here: its bytes are never frames, nor a torn tail to cut.
///
/// # Errors
///
/// As [`open_file`] and [`read_trailer`].
pub(crate) fn open_frames(
    dir: &Path,
    base: u64,
    writable: bool,
) -> Result<(File, PathBuf, FileHeader, u64, Option<Packed>)> {
    let (file, path, header, file_len) = open_file(dir, base, writable)?;
    if !header.is_packed() {
        return Ok((file, path, header, file_len, None));
    }
    let (packed, trailer_at) = read_trailer(&file, &path, SegmentId(base), header.salt, file_len)?;
    Ok((file, path, header, trailer_at, Some(packed)))
}

/// A segment file opened for its frames by [`open_frames_or_damage`].
#[derive(Debug)]
pub(crate) struct FramesFile {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) header: FileHeader,
    /// Where its frames' region ends: where a packed segment's trailer starts, or the file's
    /// length (also for a packed segment whose trailer is damaged).
    pub(crate) frames_end: u64,
    /// A packed segment's trailer; for one whose trailer is damaged, a stand-in without a
    /// dictionary (nothing may be appended to it, nor packed again).
    pub(crate) packed: Option<Packed>,
    /// Where and how a packed segment's trailer is damaged [REC-13].
    pub(crate) trailer_damage: Option<(u64, CorruptKind)>,
}

/// Opens a segment file as [`open_frames`] does, but for the last segment: a damaged
/// trailer is returned as `trailer_damage` rather than failing the open, so that its frames
/// can still be scanned for where they end, and the segments before it read [REC-13].
///
/// # Errors
///
/// As [`open_file`]; I/O errors reading the trailer.
pub(crate) fn open_frames_or_damage(dir: &Path, base: u64, writable: bool) -> Result<FramesFile> {
    let (file, path, header, file_len) = open_file(dir, base, writable)?;
    if !header.is_packed() {
        return Ok(FramesFile {
            file,
            path,
            header,
            frames_end: file_len,
            packed: None,
            trailer_damage: None,
        });
    }
    let (frames_end, packed, trailer_damage) =
        match read_trailer(&file, &path, SegmentId(base), header.salt, file_len) {
            Ok((packed, trailer_at)) => (trailer_at, packed, None),
            Err(Error::Corrupt { offset, kind, .. }) => {
                let stand_in = Packed {
                    dictionary: None,
                    unpacked_len: 0,
                    trailer_len: 0,
                };
                (file_len, stand_in, Some((offset, kind)))
            }
            Err(error) => return Err(error),
        };
    Ok(FramesFile {
        file,
        path,
        header,
        frames_end,
        packed: Some(packed),
        trailer_damage,
    })
}

/// Reads and checks a packed segment's trailer from the end of its file [SEG-09]; returns
/// it with the offset where it starts (where the seal ends).
///
/// # Errors
///
/// [`Error::Corrupt`] at the trailer's start (or the file's last bytes) if it is damaged or
/// its dictionary is one zstd refuses; I/O errors.
pub(crate) fn read_trailer(
    file: &File,
    path: &Path,
    segment: SegmentId,
    salt: u64,
    file_len: u64,
) -> Result<(Packed, u64)> {
    // The fixed part first, for the dictionary's length (bounded before anything is read
    // for it), then the whole trailer.
    let fixed_at = file_len.saturating_sub(TRAILER_OVERHEAD as u64);
    let mut fixed = [0u8; TRAILER_OVERHEAD];
    let read = read_at(file, &mut fixed, fixed_at.max(HEADER_LEN as u64), path)?;
    let dictionary_len = fixed
        .get(8..12)
        .filter(|_| read == TRAILER_OVERHEAD)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
        .min(DICTIONARY_LIMIT);
    let wanted = u64::from(dictionary_len) + TRAILER_OVERHEAD as u64;
    let from = file_len.saturating_sub(wanted).max(HEADER_LEN as u64);
    let mut bytes = vec![0u8; usize::try_from(file_len.saturating_sub(from)).unwrap_or(0)];
    let read = read_at(file, &mut bytes, from, path)?;
    bytes.truncate(read);
    let damaged = |offset: u64, kind| Error::Corrupt {
        segment,
        offset,
        kind,
    };
    let trailer = Trailer::decode_end(&bytes, salt).map_err(|kind| damaged(fixed_at, kind))?;
    let trailer_at = file_len - trailer.len() as u64;
    let dictionary = Dictionary::digest(trailer.dictionary);
    if dictionary.is_none() && !trailer.is_empty() {
        return Err(damaged(trailer_at, CorruptKind::Decompress));
    }
    let packed = Packed {
        dictionary,
        unpacked_len: trailer.unpacked_len,
        trailer_len: trailer.len() as u64,
    };
    Ok((packed, trailer_at))
}

/// Limit on bytes checksummed while looking for a valid frame after damage; past it the search
/// gives up with the conservative answer (something valid may follow) [REC-03].
const SEARCH_BUDGET: u64 = 256 << 20;

/// Bytes past the last non-zero byte that a candidate frame may still cover (a payload can
/// end in zero bytes).
const SEARCH_SLACK: u64 = 1 << 20;

/// The offset of the last non-zero byte in `[from, to)`, if any.
pub(crate) fn last_nonzero_byte(
    file: &File,
    path: &Path,
    from: u64,
    to: u64,
) -> Result<Option<u64>> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut last = None;
    let mut offset = from;
    while offset < to {
        let len = (to - offset).min(CHUNK) as usize;
        let Some(chunk) = buf.get_mut(..len) else {
            break;
        };
        let n = read_at(file, chunk, offset, path)?;
        if let Some(i) = chunk.get(..n).and_then(|c| c.iter().rposition(|b| *b != 0)) {
            last = Some(offset + i as u64);
        }
        if n < len {
            break;
        }
        offset += len as u64;
    }
    Ok(last)
}

/// How far past the end of a recycled segment's frames a valid frame is looked for [SEG-10]:
/// the bytes there are what the file held before, never zeros, and a search to the end of
/// the file would checksum megabytes of them.
pub(crate) const RECYCLED_SEARCH_SPAN: u64 = 4 << 20;

/// The last byte of `[from, to)` that damage found at `from` may reach: the last non-zero
/// byte, or in a recycled segment [SEG-10], whose later bytes are left from before, the end
/// of [`RECYCLED_SEARCH_SPAN`].
pub(crate) fn damage_end(source: ScanFile<'_>, from: u64, to: u64) -> Result<Option<u64>> {
    if source.recycled {
        let end = to.min(from.saturating_add(RECYCLED_SEARCH_SPAN));
        return Ok((from < end).then(|| end - 1));
    }
    last_nonzero_byte(source.file, source.path, from, to)
}

/// A valid frame found after damage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Resync {
    /// Where it starts.
    pub(crate) offset: u64,
    /// Its sequence (a seal's is the successor's base); `None` when the search budget ran out
    /// at `offset` before a frame was proven valid.
    pub(crate) seq: Option<u64>,
}

/// The first valid frame of a later sequence in `(from, last]` [REC-03], if there is one.
///
/// A candidate counts only if its header is plausible, its checksum validates for a
/// sequence no further from `expected_seq` than the frames that could fit in between, and
/// what follows it is the next frame, a seal or zeroed space. The chain check makes random
/// bytes that happen to pass one checksum (about one in 2^32 per position, times the window)
/// count as nothing. Checksum work is bounded: past [`SEARCH_BUDGET`] bytes the answer is
/// the conservative one, a `Resync` without a sequence.
pub(crate) fn find_valid_frame(
    source: ScanFile<'_>,
    from: u64,
    last: u64,
    expected_seq: u64,
) -> Result<Option<Resync>> {
    let ScanFile {
        file,
        path,
        salt,
        max_payload,
        ..
    } = source;
    let file_len = file
        .metadata()
        .map_err(|e| Error::io(IoOp::Read, path, e))?
        .len();
    let end = (last + 1 + SEARCH_SLACK).min(file_len.max(last + 1));
    let mut bytes = vec![0u8; usize::try_from(end.saturating_sub(from)).unwrap_or(usize::MAX)];
    let n = read_at(file, &mut bytes, from, path)?;
    bytes.truncate(n);
    let scan_end = usize::try_from((last + 1).saturating_sub(from))
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let mut budget = SEARCH_BUDGET;
    for start in 1..scan_end {
        let Some(candidate) = bytes.get(start..) else {
            break;
        };
        let Some(len_flags) = frame::len_flags(candidate) else {
            break;
        };
        if !frame::plausible(len_flags, max_payload) {
            continue;
        }
        let frame_len = FRAME_HEADER_LEN + frame::payload_len(len_flags);
        if frame_len > candidate.len() {
            continue; // it claims more bytes than there are: it cannot validate
        }
        budget = budget.saturating_sub(frame_len as u64);
        if budget == 0 {
            return Ok(Some(Resync {
                offset: from + start as u64,
                seq: None,
            }));
        }
        // At most one frame per 8 bytes fits between the damage and the candidate.
        let window = start as u64 / FRAME_HEADER_LEN as u64 + 1;
        let Some(seq) = frame::valid_frame_after(
            candidate,
            salt,
            expected_seq.saturating_sub(1),
            window,
            max_payload,
        ) else {
            continue;
        };
        let next = candidate.get(frame_len..).unwrap_or_default();
        let chained = match frame::decode(next, salt, seq + 1, max_payload) {
            Decoded::Record { .. } | Decoded::Seal | Decoded::Empty => true,
            Decoded::Invalid(_) => next.is_empty(),
        };
        if chained {
            return Ok(Some(Resync {
                offset: from + start as u64,
                seq: Some(seq),
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [TRUNC-05] A segment file kept for reuse is moved from its name while locked; a reader
    /// that opened it by that name, and gets its shared lock only once the file has become
    /// the next segment, finds the name no longer names it and takes it for deleted.
    #[test]
    #[expect(
        clippy::disallowed_methods,
        reason = "the test moves a file as a truncation keeping it would; nothing here must be durable"
    )]
    fn a_file_moved_from_its_name_is_taken_for_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0u8; 4096];
        bytes[..HEADER_LEN].copy_from_slice(&FileHeader::new(1, 7).encode(SEGMENT_MAGIC));
        let path = dir::segment_path(dir.path(), 1);
        std::fs::write(&path, &bytes).unwrap();
        let opened = File::open(&path).unwrap();
        let metadata = opened.metadata().unwrap();
        assert!(still_named(&metadata, &path));
        assert!(open_file(dir.path(), 1, false).is_ok());
        let kept = dir::recycle_path(dir.path(), 1);
        std::fs::rename(&path, &kept).unwrap();
        assert!(!still_named(&metadata, &path));
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            !still_named(&metadata, &path),
            "another file under the name"
        );
        assert!(still_named(&metadata, &kept));
    }

    /// [TRUNC-04] A removed segment's blocks are freed in steps unless a reader, in any
    /// process (here: another open file description), still holds it open; a reader that
    /// opens the file while its blocks are being freed is told it is gone.
    #[test]
    fn blocks_are_freed_only_when_no_reader_holds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = vec![0x5a_u8; 3 << 20];
        bytes[..HEADER_LEN].copy_from_slice(&FileHeader::new(1, 7).encode(SEGMENT_MAGIC));
        let path = dir::segment_path(dir.path(), 1);
        std::fs::write(&path, &bytes).unwrap();
        let allocated = |file: &File| {
            use std::os::unix::fs::MetadataExt as _;
            file.metadata().unwrap().blocks()
        };

        let (reader, ..) = open_file(dir.path(), 1, false).unwrap();
        let truncator = File::options().write(true).open(&path).unwrap();
        assert!(!release_blocks(&truncator), "freed under a reader");
        assert!(allocated(&truncator) > 0);
        let mut kept = vec![0u8; bytes.len()];
        assert_eq!(read_at(&reader, &mut kept, 0, &path).unwrap(), bytes.len());
        assert!(kept == bytes, "a reader's file changed");
        drop(reader);

        let truncator = File::options().write(true).open(&path).unwrap();
        assert!(release_blocks(&truncator), "not freed with no reader");
        assert_eq!(allocated(&truncator), 0, "blocks left allocated");
        assert_eq!(truncator.metadata().unwrap().len(), bytes.len() as u64);
        let opened = open_file(dir.path(), 1, false).map(|_| ());
        assert!(
            matches!(&opened, Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound),
            "a file being freed opened: {opened:?}"
        );
    }

    /// Zeros go a window ahead of the frames, a block at a time, never over the frame
    /// header's worth of bytes at `end` (where a seal may be written meanwhile), never
    /// again over what they covered, never past the file; a failed write stops them.
    #[test]
    fn zeros_go_ahead_of_the_frames_and_never_over_them() {
        #[derive(Debug, Default)]
        struct Recorder {
            writes: parking_lot::Mutex<Vec<(u64, usize)>>,
            fail: std::sync::atomic::AtomicBool,
        }
        impl Io for Recorder {
            fn write_at(&self, _: &File, buf: &[u8], offset: u64) -> std::io::Result<usize> {
                if self.fail.load(Ordering::Relaxed) {
                    return Err(std::io::Error::from_raw_os_error(5));
                }
                assert!(buf.iter().all(|b| *b == 0), "only zeros are written");
                self.writes.lock().push((offset, buf.len()));
                Ok(buf.len())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let file_len = 2 * ZERO_AHEAD_BYTES as usize + 3 * 4096;
        let data = segment_claiming(dir.path(), file_len, 0, ReadStrategy::Pread);
        let io = Recorder::default();
        let window = ZERO_AHEAD_BYTES as usize;
        let mut expected = Vec::new();
        // The first frames: zeros from the next block on.
        zero_ahead(&io, &data, HEADER_LEN as u64 + 100);
        expected.push((4096, window));
        // Frames still a block or more short of the zeros' end: nothing.
        zero_ahead(&io, &data, 4096 + ZERO_AHEAD_BYTES - 4096);
        // Within a block of it: the next window, from where the last one ended.
        zero_ahead(&io, &data, 4096 + ZERO_AHEAD_BYTES - 100);
        expected.push((4096 + ZERO_AHEAD_BYTES, window));
        // Frames that end on a block boundary past the zeros: the block a seal would go in
        // is skipped; and the window stops at the end of the file.
        let end = 4 * 4096 + 2 * ZERO_AHEAD_BYTES - 4096 * 3;
        zero_ahead(&io, &data, end);
        expected.push((end + 4096, file_len - (end + 4096) as usize));
        assert_eq!(*io.writes.lock(), expected);
        for (offset, _) in &expected {
            assert!(*offset >= HEADER_LEN as u64 + FRAME_HEADER_LEN as u64);
        }
        // A failed write stops the zeros for this segment.
        let data = segment_claiming(dir.path(), file_len, 0, ReadStrategy::Pread);
        io.fail.store(true, Ordering::Relaxed);
        zero_ahead(&io, &data, HEADER_LEN as u64);
        io.fail.store(false, Ordering::Relaxed);
        zero_ahead(&io, &data, HEADER_LEN as u64 + 5000);
        assert_eq!(io.writes.lock().len(), expected.len());
    }

    /// A segment file of `file_len` bytes whose handle claims frames up to `end`.
    fn segment_claiming(
        dir: &Path,
        file_len: usize,
        end: u64,
        strategy: ReadStrategy,
    ) -> SegmentData {
        let mut bytes = vec![0u8; file_len];
        bytes[..HEADER_LEN].copy_from_slice(&FileHeader::new(1, 7).encode(SEGMENT_MAGIC));
        std::fs::write(dir::segment_path(dir, 1), &bytes).unwrap();
        let data = super::super::shared::open_tail(dir, 1, strategy, 1 << 20).unwrap();
        data.end.store(end, Ordering::Release);
        data
    }

    /// A map never lends bytes past its own published end, which cannot pass the mapping:
    /// a segment whose end lies past its file (shortened from outside) fails with an error
    /// naming the segment, never an empty or partial frame.
    #[test]
    fn a_map_shorter_than_the_end_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let data = segment_claiming(dir.path(), 4096, 8192, ReadStrategy::Mmap);
        assert_eq!(data.load_end(), 8192);
        let mut window = FileWindow::default();
        let error = data
            .frame_at(&mut window, HEADER_LEN as u64, 8192, 1 << 20)
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Corrupt {
                    segment: SegmentId(1),
                    offset,
                    kind: CorruptKind::LengthOutOfBounds { len: 8192, max: 4096 },
                } if offset == HEADER_LEN as u64
            ),
            "{error:?}"
        );
        // Below the mapping's length the same segment reads (zeroed space here).
        let bytes = data
            .frame_at(&mut window, HEADER_LEN as u64, 4096, 1 << 20)
            .unwrap();
        assert_eq!(frame::decode(bytes, 7, 1, 1 << 20), Decoded::Empty);
    }

    /// A `pread` window returns the frame at an offset in one piece whether it was buffered
    /// already or not, and never more than the limit.
    #[test]
    fn the_window_returns_whole_frames_within_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let data = segment_claiming(dir.path(), 64 << 10, 64 << 10, ReadStrategy::Pread);
        let frames: Vec<Vec<u8>> = (0..50u64)
            .map(|i| frame::encode(7, 1 + i, frame::FrameKind::Plain, &vec![i as u8; 700]))
            .collect();
        let rw = OpenOptions::new().write(true).open(&data.path).unwrap();
        let mut offset = HEADER_LEN as u64;
        for bytes in &frames {
            std::os::unix::fs::FileExt::write_all_at(&rw, bytes, offset).unwrap();
            offset += bytes.len() as u64;
        }
        let mut window = FileWindow::default();
        window.plan(1000);
        let mut at = HEADER_LEN as u64;
        for (i, bytes) in frames.iter().enumerate() {
            let got = data.frame_at(&mut window, at, offset, 1 << 20).unwrap();
            assert_eq!(got, bytes.as_slice(), "frame {i}");
            at += bytes.len() as u64;
        }
        let cut = window.frame(&data.file, &data.path, HEADER_LEN as u64, 100, 1 << 20);
        assert_eq!(cut.unwrap().len(), 100 - HEADER_LEN);
    }
}
