//! Packed segments: a sealed segment rewritten with each record compressed against a
//! dictionary trained on that segment's own records (format/segment.md [SEG-09], the steps in
//! format/recovery.md [PACK-01] to [PACK-05]).
//!
//! ESL events repeat the same header names and most of their values, so each record alone
//! compresses poorly but against a dictionary of its neighbours it shrinks about 13-fold, and
//! stays readable on its own: a point read decompresses one record, not a block. Only sealed
//! segments are packed, in the background, so appends never wait for compression.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use zstd::zstd_safe::{self, CCtx, CParameter, DCtx, DDict, ParamSwitch};

use super::dir;
use super::error::{CorruptKind, Error, IoOp, Result, error_chain};
use super::frame::{self, Decoded, FRAME_HEADER_LEN, FRAME_PAYLOAD_LIMIT, FrameCrc, FrameKind};
use super::header::{FileHeader, HEADER_LEN, INDEX_MAGIC, SEGMENT_MAGIC};
use super::id::SegmentId;
use super::index::{INDEX_INTERVAL, IndexEntry, IndexFooter};
use super::io::Io;
use super::io::mmap::SegmentMap;
use super::shared::{self, Shared};

/// Magic number of the dictionary trailer after a packed segment's seal.
pub const TRAILER_MAGIC: [u8; 8] = *b"\x89ESLDCT\n";
/// Bytes of a trailer besides its dictionary.
pub const TRAILER_OVERHEAD: usize = 28;
/// The largest dictionary a trailer may hold [SEG-09].
pub const DICTIONARY_LIMIT: u32 = 1 << 20;

/// Bytes of dictionary trained for each segment. zstd's trainer sometimes returns far less
/// than asked (seen on the recorded FreeSWITCH traffic, whose events repeat): a dictionary
/// under half the size is trained again at half the size, which it fills.
const DICTIONARY_BYTES: usize = 32 << 10;
/// Bytes of records the dictionary is trained on, spread evenly over the segment: more
/// trains slower without packing smaller (measured on simulator and recorded traffic).
const SAMPLE_BYTES: usize = 2 << 20;
/// Fewer records than this train no useful dictionary: they are compressed without one.
const SAMPLE_RECORDS_MIN: usize = 16;
/// The most bytes of records a dictionary is trained on, whatever the segment holds. Records
/// spread evenly over a segment come to at most twice [`SAMPLE_BYTES`] when they are of
/// similar sizes; a sample that would take them past this (only when the records at the
/// sampled places are far larger than the rest) is left out.
const SAMPLE_LIMIT: usize = 4 * SAMPLE_BYTES;

/// The dictionary trailer that follows a packed segment's seal and ends its file [SEG-09]:
/// the dictionary, then a fixed part, so that a reader finds it from the end of the file
/// whatever the frames before it hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer<'a> {
    /// Bytes of the segment's header, frames and seal before it was packed.
    pub unpacked_len: u64,
    /// The zstd dictionary of the segment's compressed frames (empty: none).
    pub dictionary: &'a [u8],
}

impl Trailer<'_> {
    /// Bytes the trailer takes in the file.
    #[must_use]
    pub fn len(&self) -> usize {
        self.dictionary.len() + TRAILER_OVERHEAD
    }

    /// Whether the trailer holds no dictionary.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.dictionary.is_empty()
    }

    /// Encodes the trailer of a segment with `salt`; `None` if the dictionary exceeds
    /// [`DICTIONARY_LIMIT`] (the packer never trains one that large).
    #[must_use]
    pub fn encode(&self, salt: u64) -> Option<Vec<u8>> {
        let len = u32::try_from(self.dictionary.len())
            .ok()
            .filter(|len| *len <= DICTIONARY_LIMIT)?;
        let mut out = Vec::with_capacity(self.len());
        out.extend_from_slice(self.dictionary);
        out.extend_from_slice(&self.unpacked_len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&TRAILER_MAGIC);
        let crc = trailer_crc(salt, &out);
        out.extend_from_slice(&crc.to_le_bytes());
        Some(out)
    }

    /// Decodes the trailer at the end of `bytes` (a file's last bytes, at least the trailer).
    ///
    /// # Errors
    ///
    /// What is wrong, checked in this order: fewer bytes than the fixed part, or than the
    /// dictionary length says, or a length past [`DICTIONARY_LIMIT`] (`LengthOutOfBounds`);
    /// the magic (`BadMagic`); the checksum (`ChecksumMismatch`); the reserved bytes
    /// (`ReservedBits`).
    pub fn decode_end(bytes: &[u8], salt: u64) -> Result<Trailer<'_>, CorruptKind> {
        let short = |max: usize| CorruptKind::LengthOutOfBounds {
            len: bytes.len() as u64,
            max: max as u64,
        };
        let fixed_at = bytes
            .len()
            .checked_sub(TRAILER_OVERHEAD)
            .ok_or_else(|| short(TRAILER_OVERHEAD))?;
        let fixed = bytes
            .get(fixed_at..)
            .ok_or_else(|| short(TRAILER_OVERHEAD))?;
        let word = |at: usize| -> u32 {
            fixed
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        let dictionary_len = word(8);
        if dictionary_len > DICTIONARY_LIMIT {
            return Err(CorruptKind::LengthOutOfBounds {
                len: u64::from(dictionary_len),
                max: u64::from(DICTIONARY_LIMIT),
            });
        }
        let start = fixed_at
            .checked_sub(dictionary_len as usize)
            .ok_or_else(|| short(TRAILER_OVERHEAD + dictionary_len as usize))?;
        if fixed.get(16..24) != Some(TRAILER_MAGIC.as_slice()) {
            return Err(CorruptKind::BadMagic);
        }
        let body = bytes.get(start..bytes.len() - 4).unwrap_or_default();
        let (stored, computed) = (word(24), trailer_crc(salt, body));
        if stored != computed {
            return Err(CorruptKind::ChecksumMismatch { stored, computed });
        }
        let reserved = word(12);
        if reserved != 0 {
            return Err(CorruptKind::ReservedBits {
                bits: reserved.into(),
            });
        }
        let unpacked_len = fixed
            .get(0..8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        Ok(Trailer {
            unpacked_len,
            dictionary: bytes.get(start..fixed_at).unwrap_or_default(),
        })
    }
}

fn trailer_crc(salt: u64, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// A packed segment's dictionary, digested once for every read of the segment.
pub(crate) struct Dictionary(DDict<'static>);

impl Dictionary {
    /// `None` for an empty dictionary (frames compressed without one) or one zstd refuses.
    pub(crate) fn digest(bytes: &[u8]) -> Option<Dictionary> {
        if bytes.is_empty() {
            return None;
        }
        DDict::try_create(bytes).map(Dictionary)
    }
}

impl std::fmt::Debug for Dictionary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dictionary")
    }
}

/// The largest buffer a kept [`Inflater`] may hold (a rare huge record's buffer is freed).
const WARM_BUFFER_MAX: usize = 1 << 20;

/// Decompresses compressed frames into a buffer it keeps, with one zstd context for all of
/// them [FRM-06] [SEG-09].
#[derive(Default)]
pub(crate) struct Inflater {
    context: Option<DCtx<'static>>,
    out: Vec<u8>,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Inflater {
    /// Whether it holds a zstd context worth keeping for the next reader.
    pub(crate) fn is_warm(&self) -> bool {
        self.context.is_some() && self.out.capacity() <= WARM_BUFFER_MAX
    }

    /// The content of the zstd frame `compressed`, sized from its declared content size
    /// (bounded by the format's payload limit). `None` if it does not decompress to exactly
    /// that size.
    pub(crate) fn inflate(
        &mut self,
        compressed: &[u8],
        dictionary: Option<&Dictionary>,
    ) -> Option<&[u8]> {
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let inflated = self.inflate_onto(compressed, dictionary, &mut out);
        self.out = out;
        inflated.then_some(self.out.as_slice())
    }

    /// Appends the content of the zstd frame `compressed` to `out`, as
    /// [`Inflater::inflate`] returns it, without copying it through this inflater's own
    /// buffer. `false`, with `out` as it was, if it does not decompress to exactly its
    /// declared size.
    pub(crate) fn inflate_onto(
        &mut self,
        compressed: &[u8],
        dictionary: Option<&Dictionary>,
        out: &mut Vec<u8>,
    ) -> bool {
        let Some(size) = declared_size(compressed) else {
            return false;
        };
        if self.context.is_none() {
            self.context = DCtx::try_create();
        }
        let Some(context) = self.context.as_mut() else {
            return false;
        };
        let start = out.len();
        out.reserve(size);
        // zstd writes after the cursor's position, into the vector's spare capacity.
        let mut after = std::io::Cursor::new(&mut *out);
        after.set_position(start as u64);
        let written = match dictionary {
            Some(Dictionary(ddict)) => {
                context.decompress_using_ddict(&mut after, compressed, ddict)
            }
            None => context.decompress(&mut after, compressed),
        };
        if written.ok() == Some(size) && out.len() == start + size {
            return true;
        }
        out.truncate(start);
        false
    }
}

/// The content size a zstd frame declares, if it declares one within the format's payload
/// limit.
fn declared_size(compressed: &[u8]) -> Option<usize> {
    let size = zstd_safe::get_frame_content_size(compressed).ok()??;
    if size > u64::from(FRAME_PAYLOAD_LIMIT) {
        return None;
    }
    usize::try_from(size).ok()
}

/// The zstd level packing uses unless told otherwise.
pub const DEFAULT_PACK_LEVEL: i32 = 3;

/// The writer's packer: packs sealed segments whose roll is durable, oldest first, on a
/// background thread of low priority, one at a time.
#[derive(Debug, Default)]
pub(crate) struct Packer {
    /// Set when the log closes: a packing in progress stops and leaves the segment as it is.
    stop: AtomicBool,
    /// Set by a roll, so that the thread looks for work at once.
    wake: Mutex<bool>,
    woken: Condvar,
    /// The bases that need no packing (packed, damaged or gone), under the lock that
    /// serialises packings.
    settled: Mutex<BTreeSet<u64>>,
}

/// How long the packer thread waits between looks when nothing wakes it, and after an error.
const PACK_IDLE: Duration = Duration::from_secs(1);
const PACK_RETRY: Duration = Duration::from_secs(30);

impl Packer {
    /// Asks the thread to look for segments to pack.
    pub(crate) fn wake(&self) {
        *self.wake.lock() = true;
        self.woken.notify_one();
    }

    /// Asks the thread to stop, abandoning a packing in progress.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake();
    }

    /// Packs the oldest sealed segment that needs it; `None` when none does. `stop` abandons
    /// the packing when set.
    ///
    /// # Errors
    ///
    /// As [`pack_segment`].
    pub(crate) fn pack_next(
        &self,
        shared: &Shared,
        level: i32,
        stop: &AtomicBool,
    ) -> Result<Option<(SegmentId, PackOutcome)>> {
        let mut settled = self.settled.lock();
        let durable = shared.durable.load(Ordering::Acquire);
        let bases: Vec<u64> = shared.slots.read().iter().map(|s| s.base).collect();
        // A segment whose successor's base is durable has a finished roll [ROLL-07].
        let candidate = bases
            .windows(2)
            .filter_map(|pair| match *pair {
                [base, successor] if successor <= durable => Some(base),
                _ => None,
            })
            .find(|base| !settled.contains(base));
        let Some(base) = candidate else {
            return Ok(None);
        };
        let reuse_len = shared.recycle_len.load(Ordering::Relaxed);
        let (outcome, replaced) =
            pack_segment(&*shared.io, &shared.dir, base, level, stop, reuse_len)?;
        let segment = SegmentId(base);
        match &outcome {
            PackOutcome::Packed {
                records,
                unpacked,
                packed,
            } => {
                // Readers load the packed file from now on; those reading the old one go
                // on reading it, and its blocks are freed when the last of them is done.
                shared.unload(base);
                let original = replaced.map(|replaced| replaced.retire(shared));
                tracing::debug!(%segment, records, unpacked, packed, ?original, "packed a sealed segment");
            }
            PackOutcome::Damaged { offset, kind } => {
                tracing::warn!(%segment, offset, %kind, "not packing a damaged segment; it stays as written");
            }
            PackOutcome::AlreadyPacked | PackOutcome::Gone | PackOutcome::Stopped => {}
        }
        if outcome != PackOutcome::Stopped {
            settled.insert(base);
        }
        Ok(Some((segment, outcome)))
    }

    /// The thread's loop: pack while there is work, then wait for a roll.
    pub(crate) fn run(&self, shared: &Shared, level: i32) {
        // Packing is work that can wait: appends and readers come first.
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
        while !self.stop.load(Ordering::Acquire) {
            let idle = match self.pack_next(shared, level, &self.stop) {
                Ok(Some(_)) => continue,
                Ok(None) => PACK_IDLE,
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "packing a sealed segment failed; it stays as written and is tried again later");
                    PACK_RETRY
                }
            };
            let mut wake = self.wake.lock();
            if !*wake {
                self.woken.wait_for(&mut wake, idle);
            }
            *wake = false;
        }
    }
}

/// What packing one segment did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PackOutcome {
    /// The segment was packed.
    Packed {
        /// Records in it.
        records: u64,
        /// Bytes of its header, frames and seal before.
        unpacked: u64,
        /// Bytes of its file now.
        packed: u64,
    },
    /// It was packed already.
    AlreadyPacked,
    /// It holds damage, which packing must not hide: it stays as it is, and reads and
    /// `verify` keep reporting the damage where it is.
    Damaged {
        /// The offset of the first frame that does not decode.
        offset: u64,
        /// What is wrong there.
        kind: CorruptKind,
    },
    /// A truncation removed it meanwhile.
    Gone,
    /// The log is closing.
    Stopped,
}

/// Packs the sealed segment `base` ([PACK-01] to [PACK-04]). The caller holds the writer lock
/// (only the writer changes segment files) and knows the segment's roll is durable. An
/// original of `reuse_len` bytes (the writer's segment size when it recycles, else 0) also
/// gets its [`dir::recycle_path`] name. Returns the original's file once packed, for the
/// caller to retire ([`Replaced::retire`], [PACK-05]) when it holds the segment no more.
///
/// # Errors
///
/// I/O errors with paths, and [`Error::Corrupt`] naming the temporary file's segment if the
/// packed copy does not read back as the original (nothing is replaced then).
pub(crate) fn pack_segment(
    io: &dyn Io,
    dir: &Path,
    base: u64,
    level: i32,
    stop: &AtomicBool,
    reuse_len: u64,
) -> Result<(PackOutcome, Option<Replaced>)> {
    let unchanged = |outcome| Ok((outcome, None));
    let source = match read_source(dir, base) {
        Ok(Source::Frames(source)) => source,
        Ok(Source::Packed) => return unchanged(PackOutcome::AlreadyPacked),
        Ok(Source::Damaged { offset, kind }) => {
            return unchanged(PackOutcome::Damaged { offset, kind });
        }
        Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return unchanged(PackOutcome::Gone);
        }
        Err(error) => return Err(error),
    };
    // Steps 1-2 [PACK-02]: the frames read and checked (above), the packed copy built in memory.
    let segment_path = dir::segment_path(dir, base);
    let index_path = dir::index_path(dir, base);
    let salt = rand::random::<u64>();
    let dictionary = train(&source)?;
    let Some(packed) = encode_packed(&source, salt, &dictionary, level, stop, &segment_path)?
    else {
        return unchanged(PackOutcome::Stopped);
    };
    // Step 3 [PACK-03]: written to a temporary, synced, and read back against the original.
    let mut temps = Temporaries {
        io,
        made: Vec::new(),
    };
    let segment_temp = temps.create(&segment_path, &packed.segment)?;
    check_read_back(&segment_temp, &source, salt, packed.seal_offset)?;
    // Step 4: its index, written to a temporary and synced.
    temps.create(&index_path, &packed.index)?;
    // Step 5 [PACK-04]: under the retention lock, unless a truncation took the segment, the
    // original named for reuse, both temporaries renamed into place, the directory synced.
    let retention = dir::lock_retention(dir)?;
    let start = shared::read_start(dir)?.unwrap_or(1);
    let original =
        super::bounded::open_regular_with(OpenOptions::new().read(true).write(true), &segment_path);
    let original = match original {
        Ok(file) if start < source.end_seq => file,
        Ok(_) => return unchanged(PackOutcome::Gone),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return unchanged(PackOutcome::Gone);
        }
        Err(e) => return Err(Error::io(IoOp::Open, &segment_path, e)),
    };
    let kept = keep_for_reuse(io, &original, &segment_path, base, reuse_len);
    if let Err(error) = temps.commit(dir) {
        if let Some(kept) = &kept {
            let _ = io.remove_file(kept);
        }
        return Err(error);
    }
    drop(retention);
    let outcome = PackOutcome::Packed {
        records: source.end_seq - base,
        unpacked: source.unpacked_len,
        packed: packed.segment.len() as u64,
    };
    // Its descriptor's shared lock would refuse step 6 the exclusive one.
    drop(source);
    Ok((
        outcome,
        Some(Replaced {
            file: original,
            kept,
        }),
    ))
}

/// Gives the original segment file at `path` its [`dir::recycle_path`] name, if it has the
/// length of the files the writer reuses [PACK-04]. A file that cannot be linked is not kept.
fn keep_for_reuse(
    io: &dyn Io,
    original: &File,
    path: &Path,
    base: u64,
    reuse_len: u64,
) -> Option<PathBuf> {
    if reuse_len == 0 || original.metadata().map_or(true, |m| m.len() != reuse_len) {
        return None;
    }
    let kept = dir::recycle_path(path.parent()?, base);
    match io.hard_link(path, &kept) {
        Ok(()) => Some(kept),
        Err(error) => {
            tracing::debug!(error = %error_chain(&error), segment = %SegmentId(base), "cannot keep a packed segment's original for reuse");
            None
        }
    }
}

/// How many kept files may wait when a packing offers its original ([PACK-05]). Packing
/// frees a file per roll and a roll takes one, but the next segment's file is prepared once
/// the active one is half full, which a packing can finish after: one more absorbs that. More
/// would only hold a segment's worth of disk each.
const KEPT_ORIGINALS: usize = 2;

/// The original file of a segment that packing replaced, and its name for reuse if it got one
/// ([PACK-04]).
#[derive(Debug)]
pub(crate) struct Replaced {
    file: File,
    kept: Option<PathBuf>,
}

/// What became of a packed segment's original file [PACK-05].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Retired {
    /// Kept for one of the writer's next segments.
    Kept,
    /// Its blocks were released in steps.
    Released,
    /// A reader holds it: its blocks are freed when the last reader closes it.
    Held,
}

impl Replaced {
    /// Step 6 [PACK-05], for a caller that holds the segment no more (its loaded segment
    /// forgotten): unless a reader in any process still holds the original, keeps it for the
    /// writer's next segments if it was named for that and fewer than [`KEPT_ORIGINALS`]
    /// kept files wait, else releases its blocks in steps. A name for reuse that is not used is removed.
    pub(crate) fn retire(self, shared: &Shared) -> Retired {
        let Replaced { file, kept } = self;
        let held = !super::segment::lock_exclusive(&file);
        if let Some(kept) = kept {
            if !held {
                let mut pool = shared.recycled.lock();
                if pool.len() < KEPT_ORIGINALS {
                    pool.push((kept, file));
                    return Retired::Kept;
                }
            }
            // Not durable: the next open removes a name left behind [DIR-02].
            if let Err(error) = shared.io.remove_file(&kept) {
                tracing::warn!(error = %error_chain(&error), file = %kept.display(), "could not remove a packed segment's original; the next open will");
            }
        }
        if held {
            return Retired::Held;
        }
        super::segment::release_blocks(&file);
        Retired::Released
    }
}

/// A sealed segment's verified records.
///
/// What packing it holds in memory, whatever the segment holds and however well its records
/// compress: besides the packed segment it builds (about the size of the original or less)
/// and the mapped pages [`RESIDENT_BEHIND`] bounds, the content of at most
/// [`SAMPLE_LIMIT`] bytes of records while it trains the dictionary, then of at most two
/// records at a time (one, and its packed form read back) while it encodes and checks. A
/// record stored compressed ([FRM-06]) is inflated only when it is read, into a buffer
/// reused for the next, so that a segment whose records compress a hundredfold costs no
/// more than one holding them as they are.
struct Frames {
    base: u64,
    end_seq: u64,
    /// Bytes of its header, frames and seal.
    unpacked_len: u64,
    /// The segment, mapped: payloads are read where they are stored, so packing a segment
    /// holds no copy of it in memory. The file stays open meanwhile, which keeps a
    /// truncation from freeing its blocks under the map [TRUNC-04].
    map: SegmentMap,
    _file: File,
    payloads: Vec<Payload>,
}

/// Where a record's payload is.
enum Payload {
    /// Stored as is, at this range of the map.
    Mapped(std::ops::Range<usize>),
    /// Stored compressed (a large record, [FRM-06]): its zstd frame at this range of the
    /// map, which [`read_source`] found to inflate to `len` bytes.
    Compressed {
        frame: std::ops::Range<usize>,
        len: usize,
    },
}

impl Payload {
    /// Bytes of the record's content, known without inflating it.
    fn len(&self) -> usize {
        match self {
            Payload::Mapped(range) => range.len(),
            Payload::Compressed { len, .. } => *len,
        }
    }

    /// Where it starts in the map.
    fn start(&self) -> usize {
        match self {
            Payload::Mapped(range) | Payload::Compressed { frame: range, .. } => range.start,
        }
    }
}

impl Frames {
    /// A pass over the records' contents, in sequence order.
    fn contents(&self) -> Contents<'_> {
        Contents {
            frames: self,
            next: 0,
            resident_from: 0,
            inflater: Inflater::default(),
        }
    }

    /// Appends the content of `payload` to `out`, inflating it if it is stored compressed;
    /// `resident_from` is where a pass has let the map's pages go up to ([`forget_behind`]).
    ///
    /// # Errors
    ///
    /// As [`Contents::next_content`].
    fn append_content(
        &self,
        payload: &Payload,
        inflater: &mut Inflater,
        out: &mut Vec<u8>,
        resident_from: &mut usize,
    ) -> Result<()> {
        forget_behind(&self.map, resident_from, payload.start());
        let bytes = self.map.published();
        match payload {
            Payload::Mapped(range) => {
                out.extend_from_slice(bytes.get(range.clone()).unwrap_or_default());
                Ok(())
            }
            Payload::Compressed { frame, .. } => {
                let compressed = bytes.get(frame.clone()).unwrap_or_default();
                if inflater.inflate_onto(compressed, None, out) {
                    Ok(())
                } else {
                    Err(self.changed(frame.start))
                }
            }
        }
    }

    /// The error for the record whose payload starts at `payload_at`, which [`read_source`]
    /// found intact and which no longer inflates: its file changed under the packing.
    fn changed(&self, payload_at: usize) -> Error {
        Error::Corrupt {
            segment: SegmentId(self.base),
            offset: payload_at.saturating_sub(FRAME_HEADER_LEN) as u64,
            kind: CorruptKind::Decompress,
        }
    }
}

/// A pass over a segment's records that yields each one's content in turn: a record stored
/// compressed is inflated into one buffer, reused for the next, so that the pass holds one
/// record's content at a time. The pages of the map it has read are let go behind it
/// ([`forget_behind`]).
struct Contents<'a> {
    frames: &'a Frames,
    next: usize,
    resident_from: usize,
    inflater: Inflater,
}

impl Contents<'_> {
    /// The next record's content, `None` after the last.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a compressed record that no longer inflates.
    fn next_content(&mut self) -> Option<Result<&[u8]>> {
        let payload = self.frames.payloads.get(self.next)?;
        self.next += 1;
        forget_behind(&self.frames.map, &mut self.resident_from, payload.start());
        let bytes = self.frames.map.published();
        Some(match payload {
            Payload::Mapped(range) => Ok(bytes.get(range.clone()).unwrap_or_default()),
            Payload::Compressed { frame, .. } => {
                let compressed = bytes.get(frame.clone()).unwrap_or_default();
                let inflated = self.inflater.inflate(compressed, None).is_some();
                note_inflated(self.held());
                if inflated {
                    Ok(self.inflater.out.as_slice())
                } else {
                    Err(self.frames.changed(frame.start))
                }
            }
        })
    }

    /// Bytes of inflated content it holds.
    fn held(&self) -> usize {
        self.inflater.out.capacity()
    }
}

/// Bytes of the map a pass over it keeps mapped behind where it reads: packing a segment
/// then adds about this much to the process's resident memory, not the whole segment (T14's
/// burst, benches/README.md). Records stored compressed are inflated one at a time besides
/// (see [`Frames`]).
const RESIDENT_BEHIND: usize = 4 << 20;

#[cfg(test)]
thread_local! {
    /// The most bytes of inflated record content this thread's packings held at once.
    static INFLATED_PEAK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Notes that a packing holds `held` bytes of inflated record content, for the tests that
/// bound it.
#[cfg(test)]
fn note_inflated(held: usize) {
    INFLATED_PEAK.set(INFLATED_PEAK.get().max(held));
}

#[cfg(not(test))]
fn note_inflated(_held: usize) {}

/// Lets the pages of the map below `at` go once they span [`RESIDENT_BEHIND`] from
/// `resident_from`; they stay in the page cache for the next pass. Best effort: a failure
/// only keeps them resident.
fn forget_behind(map: &SegmentMap, resident_from: &mut usize, at: usize) {
    if at >= resident_from.saturating_add(RESIDENT_BEHIND) {
        let _ = map.forget(*resident_from, at);
        *resident_from = at;
    }
}

enum Source {
    Frames(Frames),
    Packed,
    Damaged { offset: u64, kind: CorruptKind },
}

/// Reads and checks every frame of sealed segment `base` up to its seal.
fn read_source(dir: &Path, base: u64) -> Result<Source> {
    let (file, path, header, file_len) = super::segment::open_file(dir, base, false)?;
    if header.is_packed() {
        return Ok(Source::Packed);
    }
    // The segment is sealed and its roll durable (the caller's promise): no byte of it is
    // ever written again [SEG-03], so the whole file may be published (docs/SAFETY.md).
    let map = SegmentMap::read_only(&file, &path)?;
    map.publish(file_len);
    let bytes = map.published();
    let crc = FrameCrc::new(header.salt);
    let mut inflater = Inflater::default();
    let (mut at, mut seq) = (HEADER_LEN, base);
    let mut payloads = Vec::new();
    let mut resident_from = 0;
    let found = loop {
        forget_behind(&map, &mut resident_from, at);
        let rest = bytes.get(at..).unwrap_or_default();
        match frame::decode_with(rest, &crc, seq, FRAME_PAYLOAD_LIMIT) {
            Decoded::Record {
                compressed,
                payload,
                frame_len,
            } => {
                let range = at + FRAME_HEADER_LEN..at + frame_len;
                payloads.push(if compressed {
                    // Checked here, held only while checked: the passes that need the
                    // content inflate it again, one record at a time.
                    let len = inflater.inflate(payload, None).map(<[u8]>::len);
                    note_inflated(inflater.out.capacity());
                    match len {
                        Some(len) => Payload::Compressed { frame: range, len },
                        None => break Err((at, CorruptKind::Decompress)),
                    }
                } else {
                    Payload::Mapped(range)
                });
                at += frame_len;
                seq += 1;
            }
            Decoded::Seal => break Ok(()),
            Decoded::Empty => break Err((at, CorruptKind::MissingSeal)),
            Decoded::Invalid(kind) => break Err((at, kind)),
        }
    };
    Ok(match found {
        Ok(()) => Source::Frames(Frames {
            base,
            end_seq: seq,
            unpacked_len: (at + FRAME_HEADER_LEN) as u64,
            map,
            _file: file,
            payloads,
        }),
        Err((offset, kind)) => Source::Damaged {
            offset: offset as u64,
            kind,
        },
    })
}

/// A dictionary trained on records spread evenly over the segment (empty if there are too
/// few, or zstd cannot train one from them). At most [`SAMPLE_LIMIT`] bytes of records are
/// held, the records stored compressed among them inflated straight into the samples.
///
/// # Errors
///
/// [`Error::Corrupt`] for a compressed record that no longer inflates.
fn train(source: &Frames) -> Result<Vec<u8>> {
    let total: usize = source.payloads.iter().map(Payload::len).sum();
    let step = (total / SAMPLE_BYTES).max(1);
    let mut sizes = Vec::new();
    let mut sampled = 0usize;
    let picked: Vec<&Payload> = source
        .payloads
        .iter()
        .step_by(step)
        .filter(|payload| {
            let len = payload.len();
            let fits = len != 0 && sampled + len <= SAMPLE_LIMIT;
            if fits {
                sampled += len;
                sizes.push(len);
            }
            fits
        })
        .collect();
    if sizes.len() < SAMPLE_RECORDS_MIN {
        return Ok(Vec::new());
    }
    // Copied out as they are read, so that the pass lets the map's pages go behind it.
    let mut samples = Vec::with_capacity(sampled);
    let (mut inflater, mut resident_from) = (Inflater::default(), 0);
    for payload in picked {
        source.append_content(payload, &mut inflater, &mut samples, &mut resident_from)?;
    }
    note_inflated(samples.capacity());
    let dictionary_of =
        |max| zstd::dict::from_continuous(&samples, &sizes, max).unwrap_or_default();
    let trained = dictionary_of(DICTIONARY_BYTES);
    if trained.len() >= DICTIONARY_BYTES / 2 {
        return Ok(trained);
    }
    let smaller = dictionary_of(DICTIONARY_BYTES / 2);
    Ok(if smaller.len() > trained.len() {
        smaller
    } else {
        trained
    })
}

struct PackedFiles {
    segment: Vec<u8>,
    seal_offset: usize,
    index: Vec<u8>,
}

/// The packed segment's bytes and its index ([SEG-09], [IDX-01]). `None` if `stop` was set.
fn encode_packed(
    source: &Frames,
    salt: u64,
    dictionary: &[u8],
    level: i32,
    stop: &AtomicBool,
    path: &Path,
) -> Result<Option<PackedFiles>> {
    let failed = |code: usize| {
        let reason = std::io::Error::other(zstd_safe::get_error_name(code));
        Error::io(IoOp::Write, path, reason)
    };
    let mut context = CCtx::try_create()
        .ok_or_else(|| Error::io(IoOp::Write, path, std::io::ErrorKind::OutOfMemory.into()))?;
    context
        .set_parameter(CParameter::CompressionLevel(level))
        .map_err(failed)?;
    // Each frame declares its size [FRM-06]; the dictionary is the segment's, so naming it
    // in every frame would only cost four bytes each.
    context
        .set_parameter(CParameter::ContentSizeFlag(true))
        .map_err(failed)?;
    context
        .set_parameter(CParameter::DictIdFlag(false))
        .map_err(failed)?;
    // Literals stored raw rather than Huffman-coded: against the dictionary little is left to
    // code, and decoding it was half of a packed read (measured in benches/README.md).
    context
        .set_parameter(CParameter::LiteralCompressionMode(ParamSwitch::Disable))
        .map_err(failed)?;
    if !dictionary.is_empty() {
        context.load_dictionary(dictionary).map_err(failed)?;
    }
    let crc = FrameCrc::new(salt);
    let mut segment = FileHeader::packed(source.base, salt)
        .encode(SEGMENT_MAGIC)
        .to_vec();
    let mut index = FileHeader::new(source.base, salt)
        .encode(INDEX_MAGIC)
        .to_vec();
    let mut next_index_at = 0;
    let mut scratch = Vec::new();
    // One record at a time: its content (inflated into the pass's buffer, if stored
    // compressed), compressed into `scratch`, appended, before the next is read.
    let mut contents = source.contents();
    let mut i = 0;
    while let Some(payload) = contents.next_content() {
        let payload = payload?;
        if i % 1024 == 0 && stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let seq = source.base + i as u64;
        let offset = segment.len() as u64;
        if offset >= next_index_at {
            let entry = IndexEntry {
                seq,
                offset: u32::try_from(offset).unwrap_or(u32::MAX),
            };
            index.extend_from_slice(&entry.encode(salt));
            next_index_at = offset + INDEX_INTERVAL;
        }
        scratch.clear();
        scratch.reserve(zstd_safe::compress_bound(payload.len()));
        context.compress2(&mut scratch, payload).map_err(failed)?;
        // Compressed only when that saves an eighth, as for any frame [FRM-06].
        if scratch.len() <= payload.len() - payload.len() / 8 {
            frame::encode_append(&mut segment, &crc, seq, FrameKind::Compressed, &scratch);
        } else {
            frame::encode_append(&mut segment, &crc, seq, FrameKind::Plain, payload);
        }
        i += 1;
    }
    let seal_offset = segment.len();
    frame::encode_append(&mut segment, &crc, source.end_seq, FrameKind::Seal, &[]);
    let trailer = Trailer {
        unpacked_len: source.unpacked_len,
        dictionary,
    };
    let trailer = trailer.encode(salt).ok_or_else(|| {
        let reason = std::io::Error::other("the dictionary exceeds the format's limit");
        Error::io(IoOp::Write, path, reason)
    })?;
    segment.extend_from_slice(&trailer);
    let footer = IndexFooter {
        end_seq: source.end_seq,
        seal_offset: u32::try_from(seal_offset).unwrap_or(u32::MAX),
    };
    index.extend_from_slice(&footer.encode(salt));
    Ok(Some(PackedFiles {
        segment,
        seal_offset,
        index,
    }))
}

/// Reads the synced temporary back and checks that every record decompresses to the
/// original's payload, and that the seal and trailer follow, before the original is replaced.
fn check_read_back(path: &Path, source: &Frames, salt: u64, seal_offset: usize) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(IoOp::Read, path, e))?;
    let differs = |offset: usize, kind| Error::Corrupt {
        segment: SegmentId(source.base),
        offset: offset as u64,
        kind,
    };
    let crc = FrameCrc::new(salt);
    let at_seal = bytes.get(seal_offset..).unwrap_or_default();
    if frame::decode_with(at_seal, &crc, source.end_seq, FRAME_PAYLOAD_LIMIT) != Decoded::Seal {
        return Err(differs(seal_offset, CorruptKind::MissingSeal));
    }
    let trailer_at = seal_offset + FRAME_HEADER_LEN;
    let trailer = Trailer::decode_end(&bytes, salt).map_err(|kind| differs(trailer_at, kind))?;
    if bytes.len() - trailer.len() != trailer_at {
        return Err(differs(trailer_at, CorruptKind::MissingSeal));
    }
    let dictionary = Dictionary::digest(trailer.dictionary);
    let mut inflater = Inflater::default();
    let mut at = HEADER_LEN;
    let mut originals = source.contents();
    let mut seq = source.base;
    while let Some(original) = originals.next_content() {
        let original = original?;
        let rest = bytes.get(at..seal_offset).unwrap_or_default();
        let Decoded::Record {
            compressed,
            payload,
            frame_len,
        } = frame::decode_with(rest, &crc, seq, FRAME_PAYLOAD_LIMIT)
        else {
            return Err(differs(at, CorruptKind::MissingSeal));
        };
        let read = if compressed {
            inflater.inflate(payload, dictionary.as_ref())
        } else {
            Some(payload)
        };
        let same = read == Some(original);
        note_inflated(originals.held() + inflater.out.capacity());
        if !same {
            return Err(differs(at, CorruptKind::Decompress));
        }
        at += frame_len;
        seq += 1;
    }
    if at == seal_offset {
        Ok(())
    } else {
        Err(differs(at, CorruptKind::MissingSeal))
    }
}

/// Temporaries of one packing, with their targets: removed on drop unless renamed into
/// place (best effort: the next writer open removes any left [DIR-02]).
struct Temporaries<'a> {
    io: &'a dyn Io,
    made: Vec<(PathBuf, PathBuf)>,
}

impl Temporaries<'_> {
    /// Writes `bytes` to a new temporary for `target` and syncs it; returns its path.
    fn create(&mut self, target: &Path, bytes: &[u8]) -> Result<PathBuf> {
        let temp = super::durable::write_temporary(self.io, target, bytes)?;
        self.made.push((temp.clone(), target.to_path_buf()));
        Ok(temp)
    }

    /// Renames every temporary over its target, in the order made, then syncs the directory.
    fn commit(&mut self, dir: &Path) -> Result<()> {
        let io = self.io;
        while let Some((temp, target)) = self.made.first() {
            io.rename(temp, target)
                .map_err(|e| Error::io(IoOp::Rename, target, e))?;
            self.made.remove(0);
        }
        super::durable::sync_dir(io, dir)
    }
}

impl Drop for Temporaries<'_> {
    fn drop(&mut self) {
        for (temp, _) in &self.made {
            let _ = self.io.remove_file(temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Log, LogOptions, Seq};

    /// Record `seq` of the packing tests: mostly a small ESL event (stored as is), every
    /// seventh a large repetitive one (stored compressed, [FRM-06]), every eleventh large
    /// pseudo-random bytes (stored as is: they do not compress).
    fn mixed_record(seq: u64) -> Vec<u8> {
        let event = format!(
            "Event-Name: CHANNEL_EXECUTE\nEvent-Sequence: {seq}\nUnique-ID: {:016x}\n\
             Channel-State: CS_EXECUTE\nCaller-Destination-Number: 9{:03}\n",
            seq.wrapping_mul(0x9E37_79B9_7F4A_7C15),
            seq % 1000
        );
        if seq.is_multiple_of(11) {
            let mut state = seq.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
            return (0..70 << 10)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
        }
        if seq.is_multiple_of(7) {
            return event.repeat(300 << 10 >> 7).into_bytes();
        }
        event.into_bytes()
    }

    /// A closed log of `count` of `record` in segments of `segment_bytes` (fewer once it has
    /// three segments), every sealed one with a durable roll; returns its segments' bases.
    fn written_log(
        dir: &Path,
        segment_bytes: u64,
        count: u64,
        record: fn(u64) -> Vec<u8>,
    ) -> Vec<u64> {
        let options = LogOptions {
            segment_bytes,
            max_payload_bytes: u32::try_from(segment_bytes / 2).unwrap(),
            ..LogOptions::default()
        };
        let (mut log, _) = Log::open(dir, options).unwrap();
        for seq in 1..=count {
            assert_eq!(log.append(&record(seq)).unwrap(), Seq(seq));
            if seq % 16 == 0 && segment_bases(dir).len() > 2 {
                break;
            }
        }
        log.sync().unwrap();
        drop(log);
        segment_bases(dir)
    }

    /// The bases of the segment files in `dir`, in order.
    fn segment_bases(dir: &Path) -> Vec<u64> {
        let mut bases: Vec<u64> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        bases.sort_unstable();
        bases
    }

    /// The packed segment and index the packer encodes for segment `base` with salt 7;
    /// `None` if the segment is not an intact plain one.
    fn packed_files(dir: &Path, base: u64) -> Option<(Vec<u8>, Vec<u8>)> {
        let Ok(Source::Frames(source)) = read_source(dir, base) else {
            return None;
        };
        let dictionary = train(&source).unwrap();
        let path = dir::segment_path(dir, base);
        let stop = AtomicBool::new(false);
        let packed = encode_packed(&source, 7, &dictionary, 3, &stop, &path)
            .unwrap()
            .unwrap();
        Some((packed.segment, packed.index))
    }

    /// The packer writes the same bytes for the same segment and salt as it did before it
    /// inflated records one at a time: CRCs of its output for a log of small, large
    /// compressed and large incompressible records, taken from the packer that held every
    /// record's content at once.
    #[test]
    fn packed_bytes_are_those_of_the_packer_that_inflated_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let bases = written_log(dir.path(), 1 << 20, 600, mixed_record);
        let sealed = &bases[..bases.len() - 1];
        let sums: Vec<(u64, usize, u32, usize, u32)> = sealed
            .iter()
            .map(|&base| {
                let (segment, index) = packed_files(dir.path(), base).unwrap();
                let crc = crc32fast::hash;
                (base, segment.len(), crc(&segment), index.len(), crc(&index))
            })
            .collect();
        let old_packer = [
            (1, 1_012_330, 1_503_415_109, 296, 403_253_940),
            (165, 1_013_903, 3_758_352_435, 296, 403_253_940),
        ];
        assert_eq!(sums, old_packer);
    }

    /// Decompressing onto a buffer appends what `inflate` returns, and leaves the buffer as
    /// it was when `inflate` refuses the frame.
    #[test]
    fn inflating_onto_a_buffer_appends_what_inflate_returns() {
        let content = b"Event-Name: CHANNEL_ANSWER\n".repeat(40);
        let frame = zstd::bulk::compress(&content, 3).unwrap();
        let mut inflater = Inflater::default();
        assert_eq!(inflater.inflate(&frame, None), Some(content.as_slice()));
        let mut out = b"before".to_vec();
        assert!(inflater.inflate_onto(&frame, None, &mut out));
        assert!(inflater.inflate_onto(&frame, None, &mut out));
        assert_eq!(out, [b"before".as_slice(), &content, &content].concat());

        let mut damaged = frame.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x55;
        for bad in [&damaged[..], &frame[..frame.len() / 2], b"not zstd"] {
            assert_eq!(inflater.inflate(bad, None), None);
            let mut out = b"before".to_vec();
            assert!(!inflater.inflate_onto(bad, None, &mut out));
            assert_eq!(out, b"before");
        }
    }

    /// Bytes of each record of [`compressible_record`].
    const LARGE_RECORD: usize = 256 << 10;

    /// Record `seq` of the memory test: an ESL event of [`LARGE_RECORD`] bytes, one header
    /// numbered in every KiB, that the log stores compressed about a hundredfold ([FRM-06]).
    fn compressible_record(seq: u64) -> Vec<u8> {
        let filler = "variable_sip_user_agent: FreeSWITCH-mod_sofia/1.10.12\n".repeat(17);
        let mut text = String::with_capacity(LARGE_RECORD + 8192);
        let mut block = 0u64;
        while text.len() < LARGE_RECORD {
            text.push_str(&format!("Event-Sequence: {seq}\nBlock: {block}\n"));
            text.push_str(&filler);
            block += 1;
        }
        text.truncate(LARGE_RECORD);
        text.into_bytes()
    }

    /// A packing holds no more inflated content than [`Frames`] says, however well the
    /// segment's records compress: at most [`SAMPLE_LIMIT`] for training and two records
    /// while encoding and checking, not every record of the segment (a segment of 1 MiB here
    /// holds tens of MiB of them).
    #[test]
    fn packing_holds_a_bounded_part_of_a_segments_records_inflated() {
        let dir = tempfile::tempdir().unwrap();
        let bases = written_log(dir.path(), 1 << 20, 4000, compressible_record);
        assert!(bases.len() >= 2, "{bases:?}");
        let records = bases[1] - bases[0];
        let inflated = records as usize * LARGE_RECORD;
        let bound = SAMPLE_LIMIT + 2 * LARGE_RECORD;
        assert!(inflated > 2 * bound, "{records} records in the segment");

        INFLATED_PEAK.set(0);
        let (outcome, replaced) = pack_segment(
            &crate::storage::io::StdIo,
            dir.path(),
            bases[0],
            3,
            &AtomicBool::new(false),
            0,
        )
        .unwrap();
        assert!(matches!(outcome, PackOutcome::Packed { .. }), "{outcome:?}");
        assert!(replaced.is_some());
        let peak = INFLATED_PEAK.get();
        assert!(peak >= LARGE_RECORD, "a record was inflated: {peak}");
        assert!(
            peak <= bound,
            "{peak} bytes inflated at once, over the bound of {bound} ({inflated} in the segment)"
        );
    }

    /// [SEG-09] a trailer round-trips from the end of a file, and any damaged byte, a
    /// missing byte or a dictionary length past the limit is refused.
    #[test]
    fn trailer_round_trips_and_refuses_damage() {
        let trailer = Trailer {
            unpacked_len: 67_108_864,
            dictionary: b"Event-Name: CHANNEL_",
        };
        let bytes = trailer.encode(7).unwrap();
        assert_eq!(bytes.len(), TRAILER_OVERHEAD + 20);
        assert_eq!(Trailer::decode_end(&bytes, 7), Ok(trailer));
        let mut in_file = b"frames and a seal".to_vec();
        in_file.extend_from_slice(&bytes);
        assert_eq!(Trailer::decode_end(&in_file, 7), Ok(trailer));
        assert!(Trailer::decode_end(&bytes, 8).is_err(), "bound to the salt");
        for i in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[i] ^= 0x04;
            assert!(Trailer::decode_end(&damaged, 7).is_err(), "byte {i}");
        }
        assert!(Trailer::decode_end(&bytes[1..], 7).is_err());
        let mut huge = bytes;
        let at = huge.len() - 20;
        huge[at..at + 4].copy_from_slice(&(DICTIONARY_LIMIT + 1).to_le_bytes());
        assert!(matches!(
            Trailer::decode_end(&huge, 7),
            Err(CorruptKind::LengthOutOfBounds { .. })
        ));
    }
}
