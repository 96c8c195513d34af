//! The id index and capture-time ranges of a log store, per segment.
//!
//! Every record's id is hashed (FNV-1a, 64 bits) and kept with its log sequence: for the
//! active segment in a hash map that the writer extends as it writes (followers extend it by
//! scanning), and for each sealed segment in a sorted array persisted beside the log as
//! `ids/{base:020}.ids`, loaded on first use and rebuilt by scanning when missing or damaged.
//! Each segment also keeps the range of its records' capture times (truncated to
//! milliseconds, as criteria compare them) so time-window reads can skip whole segments.
//!
//! Each segment (and each chunk of the active one) also keeps a [`Summary`] of its records:
//! how many, their bytes, and counts per artifact name and per event name, so `stats` reads
//! summaries instead of records.
//!
//! The `.ids` layout is `format/store.md` [STORE-07]: a header, a checksum per window of
//! 1,024 pairs (version 3), the (hash, log sequence) pairs sorted, the summary, a CRC-32 of
//! everything before it. Versions 1 (no summary) and 2 (no window checksums) are still read.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::id_filter::{FilterRows, SegmentFilter};
use super::{Error, Result};
use crate::record::{DecodeBuffer, RecordView};
use crate::storage::error_chain;
use crate::storage::{CorruptKind, Cursor, Reader, SegmentId, Seq};
use crate::storage::{Io, IoOp};

const MAGIC: [u8; 8] = *b"\x89ESLIDS\n";
const VERSION: u16 = 3;
/// The version before window checksums, still read.
const VERSION_2: u16 = 2;
/// The version before summaries, still read for its ids.
const VERSION_1: u16 = 1;
const HEADER_LEN: usize = 56;
/// Pairs per window of a version 3 file, each window with its own checksum in the table
/// after the header: an id is proved absent by checking the windows it would be in.
const WINDOW_PAIRS: usize = 1024;

/// Records per chunk file of the active segment's index ([STORE-06]): a one-shot lookup
/// scans fewer than this many records.
const CHUNK_RECORDS: u64 = 4096;
/// [`CHUNK_RECORDS`] as a length.
const CHUNK_PAIRS: usize = CHUNK_RECORDS as usize;

/// Lookups after which a handle folds the active segment's loaded chunks into its map.
const FOLD_CHUNKS_AFTER: u32 = 16;

/// The bytes of the id file at `path` for at most `records` records; `None` if it cannot be
/// read or is longer than such a file can be (its header and window table, 16 bytes a pair,
/// a summary of at most [`SUMMARY_LIMIT`]): the caller rebuilds it, as for any damaged file,
/// instead of reading a sparse or runaway file whole.
fn read_ids_file(path: &Path, records: u64) -> Option<Vec<u8>> {
    let windows = records.div_ceil(WINDOW_PAIRS as u64);
    let limit = (HEADER_LEN as u64 + 8)
        .saturating_add(windows.saturating_mul(4))
        .saturating_add(records.saturating_mul(16))
        .saturating_add(SUMMARY_LIMIT);
    crate::storage::read_regular_file_limited(path, limit).ok()
}

/// The CRC-32 of the payload of the record at log sequence `seq`, if it is readable.
fn payload_crc(reader: &Reader, seq: u64) -> Result<Option<u32>> {
    let mut cursor = reader.cursor(Seq(seq))?;
    match cursor.next() {
        Ok(found) => Ok(found
            .filter(|found| found.seq.0 == seq)
            .map(|found| crc32fast::hash(found.payload))),
        Err(error) if error.is_corruption() => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// The chunk files in `dir` of the segment at `base` ([STORE-06]), by first log sequence.
fn chunk_files(dir: &Path, base: u64) -> BTreeMap<u64, PathBuf> {
    let prefix = format!("{base:020}-");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return BTreeMap::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name();
            let from = name
                .to_str()?
                .strip_prefix(&prefix)?
                .strip_suffix(".part")?
                .parse::<u64>()
                .ok()?;
            Some((from, entry.path()))
        })
        .collect()
}

/// The file at `path` and its header, if it starts as a `.ids` (or chunk) file of a version
/// this reads; nothing after the header is checked.
fn open_head(path: &Path) -> Option<(std::fs::File, FileHead)> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).ok()?;
    let mut head = [0u8; HEADER_LEN];
    file.read_exact(&mut head).ok()?;
    Some((file, FileHead::parse(&head)?))
}

/// Where the chunk file at `path`, whose name says it starts at `first`, says it ends; not
/// checked beyond its header.
fn chunk_end(path: &Path, first: u64) -> Option<u64> {
    let (_, head) = open_head(path)?;
    (head.base == first && head.end > first).then_some(head.end)
}

/// Adds the log sequences in `[from, until)` of the records whose id may hash like `hash`;
/// returns whether every record there could be read (`false` when damage stopped the read).
fn scan_records(
    reader: &Reader,
    from: u64,
    until: u64,
    hash: u64,
    out: &mut Vec<u64>,
) -> Result<bool> {
    let mut cursor = reader.cursor(Seq(from))?;
    let mut buffer = DecodeBuffer::default();
    loop {
        let found = match cursor.next() {
            Ok(Some(found)) if found.seq.0 < until => found,
            Ok(_) => return Ok(true),
            Err(error) if error.is_corruption() => return Ok(false),
            Err(error) => return Err(error.into()),
        };
        // A record that does not decode is left out, as the index leaves it out.
        let matches = match RecordView::stored_id(found.payload) {
            Some(id) => hash_id_bytes(id) == hash,
            None => RecordView::decode(found.payload, &mut buffer)
                .is_ok_and(|view| hash_id(view.id()) == hash),
        };
        if matches {
            out.push(found.seq.0);
        }
    }
}

/// A sealed segment's index on its way to its `.ids` file.
#[derive(Clone)]
struct SealedFile {
    io: Arc<dyn Io>,
    dir: PathBuf,
    path: PathBuf,
    ids: Arc<SegmentIds>,
}

impl SealedFile {
    /// Writes the file atomically, then removes the segment's chunk files, which it
    /// replaces. A failure is logged: the index is rebuilt from the log where it is missing.
    fn write(self) {
        let written = std::fs::create_dir_all(&self.dir)
            .map_err(|source| crate::storage::Error::io(IoOp::Create, &self.dir, source))
            .and_then(|()| {
                crate::storage::write_atomic_with(&*self.io, &self.path, &self.ids.encode(0))
            });
        if let Err(error) = written {
            tracing::warn!(path = %self.path.display(), error = %error_chain(&error), "could not write an id index file");
            return;
        }
        // A chunk file left by a crash before this is never read again (only the active
        // segment's are) and `forget_below` removes it with the segment.
        for path in chunk_files(&self.dir, self.ids.base).into_values() {
            let _ = self.io.remove_file(&path);
        }
    }
}

/// The 64-bit FNV-1a hash of an id; stable across builds, so it can live on disk.
pub(crate) fn hash_id(id: &str) -> u64 {
    hash_id_bytes(id.as_bytes())
}

fn hash_id_bytes(id: &[u8]) -> u64 {
    id.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Nanoseconds since the Unix epoch as whole milliseconds (floored, as criteria truncate).
pub(crate) fn millis(nanos: i128) -> i64 {
    i64::try_from(nanos.div_euclid(1_000_000)).unwrap_or(i64::MAX)
}

/// What a segment's records add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Records.
    pub records: u64,
    /// Bytes of their stored bodies.
    pub bytes: u64,
    /// Records per artifact name.
    pub artifacts: BTreeMap<String, u64>,
    /// Records per event name (records without one are not counted here).
    pub events: BTreeMap<String, u64>,
    /// The earliest and latest capture instant, in milliseconds since the Unix epoch.
    pub captured_ms: Option<(i64, i64)>,
}

impl Summary {
    fn add(&mut self, entry: &Entry<'_>) {
        self.records += 1;
        self.bytes += entry.bytes;
        self.add_captured(entry.ms, entry.ms);
        add_count(&mut self.artifacts, entry.artifact, 1);
        if let Some(event) = entry.event {
            add_count(&mut self.events, event, 1);
        }
    }

    /// Counts a viewed record (its body's length is not known here: it counts its fields).
    pub(crate) fn add_view(&mut self, view: &RecordView<'_>) {
        let bytes = [
            view.id(),
            view.artifact_version(),
            view.artifact_name(),
            view.checksum(),
            view.correlation_ids_json(),
            view.runtime_flags_json(),
            view.payload_json(),
            view.tags_json(),
        ]
        .iter()
        .map(|text| text.len() as u64)
        .sum();
        self.add(&Entry {
            seq: view.append_sequence(),
            hash: 0,
            ms: millis(view.capture_unix_nanos()),
            artifact: view.artifact_name(),
            event: view.event_name(),
            bytes,
        });
    }

    /// Adds another summary's figures to this one.
    pub fn merge(&mut self, other: &Summary) {
        self.records += other.records;
        self.bytes += other.bytes;
        if let Some((first, last)) = other.captured_ms {
            self.add_captured(first, last);
        }
        for (name, count) in &other.artifacts {
            add_count(&mut self.artifacts, name, *count);
        }
        for (name, count) in &other.events {
            add_count(&mut self.events, name, *count);
        }
    }

    fn add_captured(&mut self, first: i64, last: i64) {
        self.captured_ms = Some(match self.captured_ms {
            Some((low, high)) => (low.min(first), high.max(last)),
            None => (first, last),
        });
    }

    /// How many bytes [`Summary::encode`] writes.
    fn encoded_len(&self) -> usize {
        let names = |counts: &BTreeMap<String, u64>| {
            4 + counts.keys().map(|name| 4 + name.len() + 8).sum::<usize>()
        };
        16 + names(&self.artifacts) + names(&self.events)
    }

    /// Writes the summary; its capture range is the file header's.
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.records.to_le_bytes());
        out.extend_from_slice(&self.bytes.to_le_bytes());
        for counts in [&self.artifacts, &self.events] {
            // Names and their number are bounded by the records of one segment.
            out.extend_from_slice(&(counts.len() as u32).to_le_bytes());
            for (name, count) in counts {
                out.extend_from_slice(&(name.len() as u32).to_le_bytes());
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
        }
    }

    /// Reads a summary that fills `bytes` exactly.
    fn decode(bytes: &[u8]) -> Option<Summary> {
        let mut rest = bytes;
        let mut take = |n: usize| -> Option<&[u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            rest = tail;
            Some(head)
        };
        let mut summary = Summary {
            records: u64::from_le_bytes(take(8)?.try_into().ok()?),
            bytes: u64::from_le_bytes(take(8)?.try_into().ok()?),
            ..Summary::default()
        };
        for index in 0..2 {
            let names = u32::from_le_bytes(take(4)?.try_into().ok()?);
            for _ in 0..names {
                let length = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                let name = std::str::from_utf8(take(length)?).ok()?.to_owned();
                let count = u64::from_le_bytes(take(8)?.try_into().ok()?);
                let counts = if index == 0 {
                    &mut summary.artifacts
                } else {
                    &mut summary.events
                };
                counts.insert(name, count);
            }
        }
        rest.is_empty().then_some(summary)
    }
}

fn add_count(counts: &mut BTreeMap<String, u64>, name: &str, count: u64) {
    match counts.get_mut(name) {
        Some(total) => *total += count,
        None => {
            counts.insert(name.to_owned(), count);
        }
    }
}

/// One record as the index takes it.
pub(crate) struct Entry<'a> {
    pub(crate) seq: u64,
    pub(crate) hash: u64,
    pub(crate) ms: i64,
    pub(crate) artifact: &'a str,
    pub(crate) event: Option<&'a str>,
    pub(crate) bytes: u64,
}

/// The entry of a frame's record, read from its view; a damaged record is left out of the
/// index (reads of it fail on their own, naming it) rather than failing unrelated writes and
/// lookups.
fn indexable<'a>(
    found: &crate::storage::RecordRef<'a>,
    buffer: &'a mut DecodeBuffer,
) -> Option<Entry<'a>> {
    match RecordView::decode(found.payload, buffer) {
        Ok(view) => Some(Entry {
            seq: found.seq.0,
            hash: hash_id(view.id()),
            ms: millis(view.capture_unix_nanos()),
            artifact: view.artifact_name(),
            event: view.event_name(),
            bytes: found.payload.len() as u64,
        }),
        Err(error) => {
            tracing::warn!(log_sequence = found.seq.0, error = %error_chain(&error), "record left out of the id index: it does not decode");
            None
        }
    }
}

/// A segment's (id hash, log sequence) pairs, sorted, with the index where each range of
/// hashes (a bucket) starts. A lookup reads one bucket start and the few pairs in its bucket,
/// where a binary search of a large, cold array misses the cache at nearly every step.
#[derive(Debug)]
struct HashPairs {
    sorted: Vec<(u64, u64)>,
    /// `starts[b]` is the index of the first pair whose hash has top bits `b`; one more
    /// entry holds the length. Indexes fit `u32`: a segment holds fewer frames than that.
    starts: Vec<u32>,
    /// `64 - bits` for `2^bits` buckets, about eight pairs each.
    shift: u32,
    /// Which hashes the pairs may hold, for searching many segments at once: built when a
    /// lookup first needs it (not on the append path).
    filter: std::sync::OnceLock<SegmentFilter>,
}

impl HashPairs {
    fn new(mut sorted: Vec<(u64, u64)>) -> HashPairs {
        // In place: the pairs are distinct (each has its own sequence), so the order is the
        // stable sort's, without its scratch buffer, whose fresh pages would fault on the
        // appending thread at every roll. Nearly free when they are sorted already, as a
        // file's are.
        sorted.sort_unstable();
        let bits = (sorted.len() / 8).max(2).ilog2().min(16);
        let shift = 64 - bits;
        // Count each bucket's pairs one slot along, then sum: each slot becomes the number
        // of pairs in the buckets before it.
        let mut starts = vec![0u32; (1 << bits) + 1];
        for (hash, _) in &sorted {
            let slot = usize::try_from(hash >> shift).map_or(usize::MAX, |b| b + 1);
            if let Some(count) = starts.get_mut(slot) {
                *count += 1;
            }
        }
        let mut total = 0;
        for slot in &mut starts {
            total += *slot;
            *slot = total;
        }
        HashPairs {
            sorted,
            starts,
            shift,
            filter: std::sync::OnceLock::new(),
        }
    }

    fn as_slice(&self) -> &[(u64, u64)] {
        &self.sorted
    }

    /// Bytes of memory the pairs and their bucket starts take.
    fn bytes(&self) -> usize {
        self.sorted.capacity() * 16 + self.starts.capacity() * 4
    }

    fn filter(&self) -> &SegmentFilter {
        self.filter
            .get_or_init(|| SegmentFilter::new(self.sorted.iter().map(|p| p.0)))
    }

    fn candidates(&self, hash: u64, out: &mut Vec<u64>) {
        let bucket = usize::try_from(hash >> self.shift).unwrap_or(usize::MAX);
        let start = |b: usize| {
            self.starts
                .get(b)
                .map_or(self.sorted.len(), |s| *s as usize)
        };
        let pairs = self
            .sorted
            .get(start(bucket)..start(bucket + 1))
            .unwrap_or_default();
        let from = pairs.partition_point(|p| p.0 < hash);
        out.extend(
            pairs
                .iter()
                .skip(from)
                .take_while(|p| p.0 == hash)
                .map(|p| p.1),
        );
    }
}

/// The index of one sealed segment.
#[derive(Debug)]
pub(crate) struct SegmentIds {
    pub(crate) base: u64,
    pub(crate) end: u64,
    pub(crate) min_ms: i64,
    pub(crate) max_ms: i64,
    pairs: HashPairs,
    /// The records' summary; `None` from a version 1 file.
    summary: Option<Summary>,
}

impl SegmentIds {
    fn candidates(&self, hash: u64, out: &mut Vec<u64>) {
        self.pairs.candidates(hash, out);
    }

    /// The file's bytes; `token` fills the header's last four bytes (zero in a `.ids`
    /// file, the last record's payload CRC in a chunk file).
    fn encode(&self, token: u32) -> Vec<u8> {
        let summary = self.summary.clone().unwrap_or_default();
        let pairs = self.pairs.as_slice();
        let windows = pairs.len().div_ceil(WINDOW_PAIRS);
        let pairs_start = HEADER_LEN + 4 * windows + 4;
        let mut out =
            Vec::with_capacity(pairs_start + pairs.len() * 16 + summary.encoded_len() + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(&token.to_le_bytes());
        out.extend_from_slice(&self.base.to_le_bytes());
        out.extend_from_slice(&self.end.to_le_bytes());
        out.extend_from_slice(&self.min_ms.to_le_bytes());
        out.extend_from_slice(&self.max_ms.to_le_bytes());
        out.extend_from_slice(&(pairs.len() as u64).to_le_bytes());
        // The window table and its checksum are written after the pairs they cover.
        out.resize(pairs_start, 0);
        for (hash, seq) in pairs {
            out.extend_from_slice(&hash.to_le_bytes());
            out.extend_from_slice(&seq.to_le_bytes());
        }
        let table: Vec<u32> = out[pairs_start..]
            .chunks(WINDOW_PAIRS * 16)
            .map(crc32fast::hash)
            .collect();
        for (slot, crc) in out[HEADER_LEN..].chunks_exact_mut(4).zip(&table) {
            slot.copy_from_slice(&crc.to_le_bytes());
        }
        let head_crc = crc32fast::hash(&out[..pairs_start - 4]);
        out[pairs_start - 4..pairs_start].copy_from_slice(&head_crc.to_le_bytes());
        summary.encode(&mut out);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a file made by [`SegmentIds::encode`] for records `[base, end)`; `end: None`
    /// takes the file's own end. Returns the index and the token.
    fn decode(bytes: &[u8], base: u64, end: Option<u64>) -> Option<(SegmentIds, u32)> {
        let (body, crc) = bytes.split_at_checked(bytes.len().checked_sub(4)?)?;
        if crc32fast::hash(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let header = FileHead::parse(body)?;
        if !header.fits(body.len(), base, end) || !header.table_holds(body) {
            return None;
        }
        let summary = header.summary(body.get(header.pairs_end..)?)?;
        let pairs = pairs_of(body.get(header.pairs_start..header.pairs_end)?);
        let ids = SegmentIds {
            base,
            end: header.end,
            min_ms: header.min_ms,
            max_ms: header.max_ms,
            pairs: HashPairs::new(pairs),
            summary,
        };
        Some((ids, header.token))
    }
}

/// The header of a `.ids` (or chunk) file.
struct FileHead {
    version: u16,
    token: u32,
    base: u64,
    end: u64,
    min_ms: i64,
    max_ms: i64,
    /// Windows in the table after the header (none before version 3).
    windows: usize,
    /// Where the pairs begin and end (the summary begins at their end).
    pairs_start: usize,
    pairs_end: usize,
}

impl FileHead {
    /// The header at the start of `bytes`; `None` if it is not that of a `.ids` file of a
    /// version this reads.
    fn parse(bytes: &[u8]) -> Option<FileHead> {
        if bytes.get(..8)? != MAGIC {
            return None;
        }
        let version = u16::from_le_bytes(bytes.get(8..10)?.try_into().ok()?);
        let u64_at = |at: usize| {
            bytes
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
        };
        let count = usize::try_from(u64_at(48)?).ok()?;
        let windows = match version {
            VERSION => count.div_ceil(WINDOW_PAIRS),
            VERSION_1 | VERSION_2 => 0,
            _ => return None,
        };
        let pairs_start = match version {
            VERSION => HEADER_LEN
                .checked_add(windows.checked_mul(4)?)?
                .checked_add(4)?,
            _ => HEADER_LEN,
        };
        Some(FileHead {
            version,
            token: u32::from_le_bytes(bytes.get(12..16)?.try_into().ok()?),
            base: u64_at(16)?,
            end: u64_at(24)?,
            min_ms: u64_at(32)?.cast_signed(),
            max_ms: u64_at(40)?.cast_signed(),
            windows,
            pairs_start,
            pairs_end: pairs_start.checked_add(count.checked_mul(16)?)?,
        })
    }

    /// Whether this is the file of records `[base, end)` (`end: None`: its own end) and
    /// `body_len` long before its CRC.
    fn fits(&self, body_len: usize, base: u64, end: Option<u64>) -> bool {
        self.base == base
            && end.is_none_or(|end| end == self.end)
            && self.end >= base
            && body_len >= self.pairs_end
            && (self.version != VERSION_1 || body_len == self.pairs_end)
    }

    /// Whether the window table at the start of `head` (the file from its first byte, at
    /// least up to its pairs) holds its checksum; a file without one (version 1 or 2) holds.
    fn table_holds(&self, head: &[u8]) -> bool {
        if self.version != VERSION {
            return true;
        }
        let Some((table, crc)) = head
            .get(..self.pairs_start)
            .and_then(|head| head.split_at_checked(self.pairs_start - 4))
        else {
            return false;
        };
        crc.try_into()
            .is_ok_and(|crc| crc32fast::hash(table) == u32::from_le_bytes(crc))
    }

    /// The checksum of window `window`, from a `head` whose table [`Self::table_holds`].
    fn window_crc(&self, head: &[u8], window: usize) -> Option<u32> {
        let at = HEADER_LEN.checked_add(window.checked_mul(4)?)?;
        Some(u32::from_le_bytes(head.get(at..at + 4)?.try_into().ok()?))
    }

    /// The summary in the bytes after the pairs (`Some(None)` for a version 1 file, which
    /// has none); `None` if they do not hold one exactly.
    fn summary(&self, after_pairs: &[u8]) -> Option<Option<Summary>> {
        if self.version == VERSION_1 {
            return Some(None);
        }
        let mut summary = Summary::decode(after_pairs)?;
        summary.captured_ms = (summary.records > 0).then_some((self.min_ms, self.max_ms));
        Some(Some(summary))
    }
}

/// Bytes of a `.ids` file [`verified_probe`] reads at a time.
const PROBE_STEP: usize = 64 << 10;
/// The most bytes after the pairs (the summary) [`verified_probe`] accepts; more is not a
/// file this writer made (its summary counts the names of one segment's records).
const SUMMARY_LIMIT: u64 = 64 << 20;

/// What [`verified_probe`] does with a file without window checksums (version 1 or 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OlderFiles {
    /// Reads it through, checking it whole.
    ReadThrough,
    /// Reads the pairs near where the hash falls, unchecked: a hint (the answer's header
    /// tells its version).
    Hint,
}

/// The log sequences paired with `hash` in the `.ids` (or chunk) file at `path` of the
/// records from `base` (to `end`, when given), and its header, checked without loading and
/// keeping the index: for a handle's first lookups, which must prove an id absent without
/// loading every segment's index. A version 3 file is read where the hash would be, each
/// window read checked against the header's table; an older one is read through and
/// checked whole as [`SegmentIds::decode`] checks it, or read for a hint, as `older` says.
/// `None` if the file is missing, damaged or not that segment's (the caller then loads or
/// rebuilds it).
fn verified_probe(
    path: &Path,
    base: u64,
    end: Option<u64>,
    hash: u64,
    older: OlderFiles,
) -> Option<(Vec<u64>, FileHead)> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).ok()?;
    let body_len = usize::try_from(file.metadata().ok()?.len().checked_sub(4)?).ok()?;
    let mut head = vec![0u8; HEADER_LEN];
    file.read_exact(&mut head).ok()?;
    let header = FileHead::parse(&head)?;
    if !header.fits(body_len, base, end) {
        return None;
    }
    head.resize(header.pairs_start, 0);
    file.read_exact(head.get_mut(HEADER_LEN..)?).ok()?;
    if !header.table_holds(&head) {
        return None;
    }
    let mut found = match (header.version, older) {
        (VERSION, _) => probe_windows(&file, &header, &head, hash)?,
        (_, OlderFiles::ReadThrough) => read_through(file, &header, &head, body_len, hash)?,
        (_, OlderFiles::Hint) => {
            let mut hinted = Vec::new();
            search_pairs(&file, &header, hash, &mut hinted);
            hinted
        }
    };
    found.sort_unstable();
    Some((found, header))
}

/// The (hash, log sequence) pairs of the id index file `bytes` of the records from `base`
/// (to `end`, when given), in file order, if loading accepts the file ([STORE-07]).
#[must_use]
pub fn decode_pairs(bytes: &[u8], base: u64, end: Option<u64>) -> Option<Vec<(u64, u64)>> {
    SegmentIds::decode(bytes, base, end)?;
    let header = FileHead::parse(bytes)?;
    Some(pairs_of(bytes.get(header.pairs_start..header.pairs_end)?))
}

/// The log sequences paired with `hash` in the id index file at `path` of the records from
/// `base` (to `end`, when given), sorted, as a handle's first lookups read them in place (a
/// version 1 or 2 file read through); `None` if that read refuses the file.
#[must_use]
pub fn probe_pairs(path: &Path, base: u64, end: Option<u64>, hash: u64) -> Option<Vec<u64>> {
    verified_probe(path, base, end, hash, OlderFiles::ReadThrough).map(|(seqs, _)| seqs)
}

/// The id index file, in the layout a writer writes ([STORE-07]), of `pairs` (sorted here)
/// for the records `[base, end)`, with a summary of nothing.
#[must_use]
pub fn encode_pairs(base: u64, end: u64, pairs: Vec<(u64, u64)>) -> Vec<u8> {
    let ids = SegmentIds {
        base,
        end,
        min_ms: 0,
        max_ms: 0,
        pairs: HashPairs::new(pairs),
        summary: Some(Summary::default()),
    };
    ids.encode(0)
}

/// The log sequences paired with `hash` in a version 3 file whose checked `head` (header
/// and window table) is `header`: a search over its windows by their first hashes (from the
/// window where `hash` would fall, then by halves), each window read checked against its
/// checksum and its order. The pairs are sorted across the file, so the pairs with `hash`
/// lie in the last window that starts at or below it and, if that one starts with it, the
/// windows before it that end with it.
fn probe_windows(
    file: &std::fs::File,
    header: &FileHead,
    head: &[u8],
    hash: u64,
) -> Option<Vec<u64>> {
    let window = |index: usize| -> Option<Vec<(u64, u64)>> {
        let count = (header.pairs_end - header.pairs_start) / 16;
        let first = index.checked_mul(WINDOW_PAIRS)?;
        let last = first.checked_add(WINDOW_PAIRS)?.min(count);
        let bytes = read_bytes_at(file, header.pairs_start, first, last)?;
        if crc32fast::hash(&bytes) != header.window_crc(head, index)? {
            return None;
        }
        let pairs = pairs_of(&bytes);
        pairs.is_sorted_by_key(|pair| pair.0).then_some(pairs)
    };
    // The window to search is in `[low, high)`. Hashes spread evenly, so the first probes
    // are the window where `hash` would fall and the one after it; then halves.
    let (mut low, mut high) = (0, header.windows);
    let guess = usize::try_from((u128::from(hash) * header.windows as u128) >> 64).unwrap_or(0);
    let mut guesses = [guess, guess + 1].into_iter();
    let mut last_read: Option<(usize, Vec<(u64, u64)>)> = None;
    while high - low > 1 {
        let middle = guesses
            .find(|g| low < *g && *g < high)
            .unwrap_or(low + (high - low) / 2);
        let pairs = window(middle)?;
        if pairs.first()?.0 <= hash {
            low = middle;
        } else {
            high = middle;
        }
        last_read = Some((middle, pairs));
    }
    let mut found = Vec::new();
    // After the search `high` is `low + 1` (or 0, for a file without pairs).
    for index in (0..high).rev() {
        let pairs = match last_read.take() {
            Some((read, pairs)) if read == index => pairs,
            _ => window(index)?,
        };
        found.extend(pairs.iter().filter(|p| p.0 == hash).map(|p| p.1));
        if pairs.first().is_none_or(|p| p.0 != hash) {
            break;
        }
    }
    Some(found)
}

/// The log sequences paired with `hash` in a version 1 or 2 file whose `header` was read,
/// read through a step at a time and checked whole.
fn read_through(
    mut file: std::fs::File,
    header: &FileHead,
    head: &[u8],
    body_len: usize,
    hash: u64,
) -> Option<Vec<u64>> {
    use std::io::Read as _;
    let mut crc = crc32fast::Hasher::new();
    crc.update(head);
    let mut found = Vec::new();
    let mut left = header.pairs_end - header.pairs_start;
    let mut step = vec![0u8; PROBE_STEP.min(left).max(16)];
    while left > 0 {
        let chunk = step.get_mut(..left.min(PROBE_STEP))?;
        file.read_exact(chunk).ok()?;
        crc.update(chunk);
        found.extend(
            chunk
                .chunks_exact(16)
                .filter(|pair| u64_at_slice(pair, 0) == hash)
                .map(|pair| u64_at_slice(pair, 8)),
        );
        left -= chunk.len();
    }
    let rest = u64::try_from(body_len - header.pairs_end).ok()?;
    if rest > SUMMARY_LIMIT {
        return None;
    }
    let mut tail = Vec::new();
    file.take(rest + 4).read_to_end(&mut tail).ok()?;
    let (after_pairs, stored) = tail.split_at_checked(tail.len().checked_sub(4)?)?;
    crc.update(after_pairs);
    if after_pairs.len() as u64 != rest
        || crc.finalize() != u32::from_le_bytes(stored.try_into().ok()?)
    {
        return None;
    }
    header.summary(after_pairs)?;
    Some(found)
}

fn u64_at_slice(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

/// The index of the segment being filled.
///
/// A writer's records go to `recent` and, a chunk at a time, to `chunks` (the chunk files
/// it writes); its hash map is filled only once the handle looks ids up
/// ([`Building::candidates`]), so appends pay no hash-map inserts. A handle that writes no
/// chunk files indexes every record in the map as it adds it.
#[derive(Debug)]
struct Building {
    base: u64,
    /// Every record below this log sequence is indexed: in `map`, a chunk, or `recent`.
    until: u64,
    /// Whether `map` (with `collisions`) holds every record added, `recent` included.
    indexed: bool,
    map: HashMap<u64, u64>,
    collisions: Vec<(u64, u64)>,
    min_ms: i64,
    max_ms: i64,
    /// Chunk files loaded for the segment's first records, and those written since while
    /// the map is not `indexed`; searched in place.
    chunks: Vec<SegmentIds>,
    /// Every record below this log sequence is in a chunk file ([STORE-06]).
    chunked_until: u64,
    /// The entries from `chunked_until` on, for the next chunk file.
    recent: Vec<(u64, u64)>,
    /// Capture-time range of `recent`.
    recent_ms: (i64, i64),
    /// The summary of the records in chunks, and of those in `recent` (each record is
    /// counted once, in `recent_summary`, and moves with its chunk).
    summary: Summary,
    recent_summary: Summary,
    /// Lookups answered so far (see [`Building::candidates`]).
    lookups: u32,
}

impl Building {
    fn new(base: u64, indexed: bool) -> Building {
        Building {
            base,
            until: base,
            indexed,
            map: HashMap::new(),
            collisions: Vec::new(),
            min_ms: i64::MAX,
            max_ms: i64::MIN,
            chunks: Vec::new(),
            chunked_until: base,
            recent: Vec::with_capacity(CHUNK_PAIRS),
            recent_ms: (i64::MAX, i64::MIN),
            summary: Summary::default(),
            recent_summary: Summary::default(),
            lookups: 0,
        }
    }

    fn add(&mut self, entry: &Entry<'_>) {
        let Entry { seq, hash, ms, .. } = *entry;
        if self.indexed {
            self.insert(hash, seq);
        }
        self.min_ms = self.min_ms.min(ms);
        self.max_ms = self.max_ms.max(ms);
        self.until = self.until.max(seq + 1);
        self.recent.push((hash, seq));
        self.recent_ms = (self.recent_ms.0.min(ms), self.recent_ms.1.max(ms));
        self.recent_summary.add(entry);
    }

    fn insert(&mut self, hash: u64, seq: u64) {
        if let Some(previous) = self.map.insert(hash, seq) {
            self.collisions.push((hash, previous));
        }
    }

    /// Takes a loaded chunk: its records follow what the building holds.
    fn add_chunk(&mut self, chunk: SegmentIds) {
        if let Some(summary) = &chunk.summary {
            self.summary.merge(summary);
        }
        if !chunk.pairs.as_slice().is_empty() {
            self.min_ms = self.min_ms.min(chunk.min_ms);
            self.max_ms = self.max_ms.max(chunk.max_ms);
        }
        self.until = chunk.end;
        self.chunked_until = chunk.end;
        self.chunks.push(chunk);
    }

    /// The entries since the last chunk as a chunk `[chunked_until, until)`, and starts the
    /// next one.
    fn take_chunk(&mut self) -> SegmentIds {
        // The next chunk's pairs get their room at once, not page by fresh page.
        let pairs = HashPairs::new(std::mem::replace(
            &mut self.recent,
            Vec::with_capacity(CHUNK_PAIRS),
        ));
        let (min_ms, max_ms) = std::mem::replace(&mut self.recent_ms, (i64::MAX, i64::MIN));
        let chunk = SegmentIds {
            base: self.chunked_until,
            end: self.until,
            min_ms,
            max_ms,
            pairs,
            summary: Some(self.take_recent_summary()),
        };
        self.chunked_until = self.until;
        chunk
    }

    /// The summary of `recent`, now counted in `summary`, and a new one for what follows.
    fn take_recent_summary(&mut self) -> Summary {
        let recent = std::mem::take(&mut self.recent_summary);
        self.summary.merge(&recent);
        recent
    }

    /// Keeps a chunk taken by [`Building::take_chunk`] for lookups, unless the map holds its
    /// records already.
    fn keep_chunk(&mut self, chunk: SegmentIds) {
        if !self.indexed {
            self.chunks.push(chunk);
        }
    }

    fn candidates(&mut self, hash: u64, out: &mut Vec<u64>) {
        // A one-shot lookup searches the loaded chunks in place; a handle that keeps looking
        // things up folds them into the map once, so each lookup is one probe again.
        self.lookups += 1;
        if self.lookups == FOLD_CHUNKS_AFTER {
            let chunks = std::mem::take(&mut self.chunks);
            for (hash, seq) in chunks.iter().flat_map(|chunk| chunk.pairs.as_slice()) {
                self.insert(*hash, *seq);
            }
            if !self.indexed {
                let recent = std::mem::take(&mut self.recent);
                for &(hash, seq) in &recent {
                    self.insert(hash, seq);
                }
                self.recent = recent;
                self.indexed = true;
            }
        }
        out.extend(self.map.get(&hash));
        out.extend(self.collisions.iter().filter(|p| p.0 == hash).map(|p| p.1));
        for chunk in &self.chunks {
            chunk.candidates(hash, out);
        }
        if !self.indexed {
            out.extend(self.recent.iter().filter(|p| p.0 == hash).map(|p| p.1));
        }
    }

    fn seal(mut self, end: u64) -> SegmentIds {
        self.take_recent_summary();
        // `recent` is in the map when the map is indexed.
        let recent = if self.indexed {
            Vec::new()
        } else {
            self.recent
        };
        let chunked: usize = self.chunks.iter().map(|c| c.pairs.as_slice().len()).sum();
        let mut pairs =
            Vec::with_capacity(self.map.len() + self.collisions.len() + chunked + recent.len());
        pairs.extend(self.map);
        pairs.extend(self.collisions);
        for chunk in self.chunks {
            pairs.extend(chunk.pairs.sorted);
        }
        pairs.extend(recent);
        SegmentIds {
            base: self.base,
            end,
            min_ms: self.min_ms,
            max_ms: self.max_ms,
            pairs: HashPairs::new(pairs),
            summary: Some(self.summary),
        }
    }
}

/// How far a lookup by id searches ([`IdIndex::candidates`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Search {
    /// Only what the index has already seen and loaded: no read of the log's end or of any
    /// file. A match is the answer (ids are unique); a miss proves nothing.
    Known,
    /// Every record, with the index files not loaded yet read in place and only the parts
    /// read checked ([STORE-07]): for a one-shot lookup, which would otherwise load every
    /// `.ids` file whole. A miss means absent, unless a file could not be checked so (an
    /// older or damaged one, then read without checks, as a hint) or damage stopped a read
    /// of records: [`Candidates::exact`] says which.
    Hinted,
    /// Every record, through verified (or rebuilt) indexes: a miss means absent.
    Verified,
}

/// The log sequences a lookup by id must check.
#[derive(Debug)]
pub(crate) struct Candidates {
    pub(crate) seqs: Vec<u64>,
    /// Whether every index searched was verified, so that a miss means absent.
    pub(crate) exact: bool,
    /// The base of the active segment when a [`Search::Hinted`] lookup left it for later
    /// ([`IdIndex::active_candidates`]).
    pub(crate) active_left: Option<u64>,
}

/// The active segment's newest records as a lookup read them first
/// ([`IdIndex::newest_candidates`]).
#[derive(Debug, Default)]
pub(crate) struct Newest {
    /// The log sequences read whose record id may hash like the one looked up.
    pub(crate) seqs: Vec<u64>,
    /// The records read, `[from, until)`, and whether every one of them could be.
    read: Option<(u64, u64, bool)>,
}

/// Lookups a handle answers with [`Search::Hinted`] before it loads the indexes whole.
const HINTED_LOOKUPS: u32 = 4;

/// The most memory the pairs of loaded sealed segments take in one handle (16 M records):
/// beyond it the oldest are let go of, keeping only their filters, their files read in
/// place when a lookup needs them, so a writer that runs for weeks does not hold every id
/// it ever wrote.
const LOADED_PAIRS_BYTES: usize = 256 << 20;

/// The most memory the filters of let-go segments take in one handle (those of about 50 M
/// records, unfolded): beyond it the largest are folded, so that a writer's memory stays
/// bounded however long it runs, at the cost of reading more let-go files for absent ids.
const LET_GO_FILTERS_BYTES: usize = 64 << 20;

/// Pairs read on each side of where a hash should be in a `.ids` file: for uniform hashes
/// its place is within a few hundred pairs of the interpolated one.
const PROBE_PAIRS: u64 = 512;
/// Reads of a `.ids` file one probe makes at most before it gives up (skewed hashes).
const PROBE_READS: usize = 8;

/// Adds to `out` the log sequences paired with `hash` in the `.ids` (or chunk) file at `path`
/// of the records from `base` (to `end`, when given), reading its header and windows of pairs
/// around where `hash` should be; adds nothing if it is not such a file.
///
/// Nothing here is verified (the file's checksum covers all of it), so the result is only a
/// hint: the caller checks each candidate's record, and a file that is damaged, of another
/// layout, or does not bracket `hash` in that window adds nothing.
fn probe_file(path: &Path, base: u64, end: Option<u64>, hash: u64, out: &mut Vec<u64>) {
    let Some((file, header)) = open_head(path) else {
        return;
    };
    if header.base == base && end.is_none_or(|end| end == header.end) {
        search_pairs(&file, &header, hash, out);
    }
}

/// Adds to `out` the log sequences paired with `hash` among the `count` sorted pairs of an
/// open `.ids` file whose header is `header`, or nothing if the windows it reads do not
/// bracket `hash`.
fn search_pairs(file: &std::fs::File, header: &FileHead, hash: u64, out: &mut Vec<u64>) {
    let count = ((header.pairs_end - header.pairs_start) / 16) as u64;
    // An interpolation search by windows: the pairs equal to `hash` lie in `[low, high)`,
    // whose neighbours' hashes bound `hash` at `low_hash` and `high_hash`.
    let (mut low, mut high) = (0u64, count);
    let (mut low_hash, mut high_hash) = (0u64, u64::MAX);
    for _ in 0..PROBE_READS {
        let span = u128::from(high - low);
        let share = u128::from(hash - low_hash) * span / (u128::from(high_hash - low_hash) + 1);
        let guess = low + u64::try_from(share).unwrap_or(0);
        let first = guess.saturating_sub(PROBE_PAIRS).max(low);
        let last = guess.saturating_add(PROBE_PAIRS).min(high);
        let (Ok(from), Ok(to)) = (usize::try_from(first), usize::try_from(last)) else {
            return;
        };
        let Some(pairs) = read_bytes_at(file, header.pairs_start, from, to).map(|b| pairs_of(&b))
        else {
            return;
        };
        let (Some(head), Some(tail)) = (pairs.first(), pairs.last()) else {
            return; // nothing between the bounds: no pair has this hash
        };
        // The window holds every pair with `hash` if it starts below it (or at the bound)
        // and ends above it (or at the bound).
        let starts_below = first == low || head.0 < hash;
        let ends_above = last == high || tail.0 > hash;
        if starts_below && ends_above {
            out.extend(pairs.iter().filter(|p| p.0 == hash).map(|p| p.1));
            return;
        }
        if tail.0 < hash && tail.0 >= low_hash {
            (low, low_hash) = (last, tail.0);
        } else if head.0 > hash && head.0 <= high_hash {
            (high, high_hash) = (first, head.0);
        } else {
            return; // equal hashes across the window's edge, or pairs out of order
        }
    }
}

/// The bytes of the pairs `[first, last)` of an open `.ids` file whose pairs begin at byte
/// `pairs_start`; `None` if they cannot be read.
fn read_bytes_at(
    file: &std::fs::File,
    pairs_start: usize,
    first: usize,
    last: usize,
) -> Option<Vec<u8>> {
    use std::os::unix::fs::FileExt as _;
    let len = last.checked_sub(first)?.checked_mul(16)?;
    let mut bytes = vec![0u8; len];
    let offset = pairs_start.checked_add(first.checked_mul(16)?)?;
    file.read_exact_at(&mut bytes, u64::try_from(offset).ok()?)
        .ok()?;
    Some(bytes)
}

/// The (hash, log sequence) pairs in `bytes`.
fn pairs_of(bytes: &[u8]) -> Vec<(u64, u64)> {
    bytes
        .chunks_exact(16)
        .map(|c| (u64_at_slice(c, 0), u64_at_slice(c, 8)))
        .collect()
}

/// The filters of the sealed segments side by side, and the indexes they answer for.
#[derive(Debug)]
struct SealedFilter {
    /// The log's segments when it was built, oldest first (the last is the active one).
    segments: Vec<u64>,
    /// The index of each sealed segment, in the same order.
    members: Vec<Arc<SegmentIds>>,
    rows: FilterRows,
}

/// Id index and time ranges of every segment of one store.
#[derive(Debug)]
pub(crate) struct IdIndex {
    dir: PathBuf,
    /// Whether this handle may write `.ids` files (the writer).
    persist: bool,
    /// The seam `.ids` files are written through.
    io: Arc<dyn Io>,
    sealed: BTreeMap<u64, Arc<SegmentIds>>,
    /// The filters of `sealed` side by side, once every sealed segment is loaded; dropped
    /// whenever `sealed` changes.
    filter: Option<SealedFilter>,
    building: Option<Building>,
    /// Damaged frames met while indexing (segment, offset, what): their records are not in
    /// the index, so a lookup that finds nothing must report them rather than say "absent".
    damage: Vec<(SegmentId, u64, CorruptKind)>,
    /// Lookups searched with [`Search::Hinted`] so far.
    hinted_lookups: u32,
    /// The thread writing the last sealed segment's `.ids` file: the file is advisory, so
    /// appends do not wait for it ([STORE-06]).
    writing: Option<std::thread::JoinHandle<()>>,
    /// [`LOADED_PAIRS_BYTES`] (smaller in tests).
    loaded_budget: usize,
    /// Whether sealed segments' pairs were let go of to stay within the budget: lookups
    /// then read those segments' files in place rather than load them whole again.
    trimmed: bool,
    /// The Bloom filters of the sealed segments let go of (by base, with their ends): a
    /// lookup reads the file of such a segment only when its filter may hold the id.
    let_go: BTreeMap<u64, (u64, SegmentFilter)>,
    /// [`LET_GO_FILTERS_BYTES`] (smaller in tests).
    let_go_budget: usize,
}

impl Drop for IdIndex {
    fn drop(&mut self) {
        self.wait_for_files();
    }
}

impl IdIndex {
    pub(crate) fn new(dir: PathBuf, persist: bool, io: Arc<dyn Io>) -> IdIndex {
        IdIndex {
            dir,
            persist,
            io,
            sealed: BTreeMap::new(),
            filter: None,
            building: None,
            damage: Vec::new(),
            hinted_lookups: 0,
            writing: None,
            loaded_budget: LOADED_PAIRS_BYTES,
            trimmed: false,
            let_go: BTreeMap::new(),
            let_go_budget: LET_GO_FILTERS_BYTES,
        }
    }

    /// Sets the memory budget of loaded sealed segments' pairs, for tests.
    #[cfg(test)]
    pub(crate) fn set_loaded_budget(&mut self, bytes: usize) {
        self.loaded_budget = bytes;
    }

    /// Sets the memory budget of let-go segments' filters, for tests.
    #[cfg(test)]
    pub(crate) fn set_let_go_budget(&mut self, bytes: usize) {
        self.let_go_budget = bytes;
    }

    /// The memory the let-go segments' filters take, and how many there are, for tests.
    #[cfg(test)]
    pub(crate) fn let_go_filters(&self) -> (usize, usize) {
        let bytes = self.let_go.values().map(|(_, f)| f.bytes()).sum();
        (bytes, self.let_go.len())
    }

    /// How many sealed segments' pairs are loaded, for tests.
    #[cfg(test)]
    pub(crate) fn loaded_sealed(&self) -> usize {
        self.sealed.len()
    }

    /// Waits until the last sealed segment's `.ids` file is written (or its write failed).
    fn wait_for_files(&mut self) {
        if let Some(thread) = self.writing.take()
            && thread.join().is_err()
        {
            tracing::warn!(dir = %self.dir.display(), "the thread writing an id index file panicked");
        }
    }

    /// Keeps a sealed segment's index (the filters side by side are built again), then lets
    /// go of the oldest others while the loaded ones exceed the budget
    /// ([`LOADED_PAIRS_BYTES`]).
    fn keep_sealed(&mut self, ids: Arc<SegmentIds>) {
        let kept = ids.base;
        self.sealed.insert(kept, ids);
        self.let_go.remove(&kept);
        self.filter = None;
        let mut loaded: usize = self.sealed.values().map(|ids| ids.pairs.bytes()).sum();
        while loaded > self.loaded_budget {
            // Never the one just kept, nor the newest, whose file may still be being written.
            let newest = self.sealed.keys().next_back().copied();
            let Some(oldest) = self
                .sealed
                .keys()
                .copied()
                .find(|base| *base != kept && Some(*base) != newest)
            else {
                break;
            };
            if let Some(ids) = self.sealed.remove(&oldest) {
                loaded = loaded.saturating_sub(ids.pairs.bytes());
                self.let_go
                    .insert(oldest, (ids.end, ids.pairs.filter().clone()));
            }
            self.trimmed = true;
        }
        self.fold_let_go();
    }

    /// Folds the let-go segments' filters, the largest first and the oldest of those, while
    /// they take more than their budget ([`LET_GO_FILTERS_BYTES`]): they fold evenly, each
    /// still holding every id of its segment.
    fn fold_let_go(&mut self) {
        let mut bytes: usize = self.let_go.values().map(|(_, f)| f.bytes()).sum();
        while bytes > self.let_go_budget {
            let largest = self.let_go.values().map(|(_, f)| f.bits()).max();
            let Some((_, filter)) = self
                .let_go
                .values_mut()
                .find(|(_, f)| Some(f.bits()) == largest)
            else {
                break;
            };
            let before = filter.bytes();
            if !filter.fold() {
                break;
            }
            bytes -= before - filter.bytes();
        }
    }

    fn forget_sealed(&mut self, base: u64) {
        self.sealed.remove(&base);
        self.let_go.remove(&base);
        self.filter = None;
    }

    fn path(&self, base: u64) -> PathBuf {
        self.dir.join(format!("{base:020}.ids"))
    }

    /// Notes records the writer just appended (log sequence, hash, capture ms), which must
    /// directly follow what the index has seen.
    pub(crate) fn written(&mut self, reader: &Reader, entries: &[Entry<'_>]) -> Result<()> {
        self.catch_up_to(reader, entries.first().map_or(0, |e| e.seq))?;
        let segments = reader.segments();
        for entry in entries {
            let seq = entry.seq;
            let base = segments
                .iter()
                .rev()
                .map(|s| s.0)
                .find(|b| *b <= seq)
                .unwrap_or(seq);
            self.roll_to(base)?;
            // A batch may start in a segment sealed before the index first saw the log;
            // that segment's index is built from its file when first needed.
            if let Some(building) = self.building.as_mut().filter(|b| b.base == base) {
                building.add(entry);
            }
        }
        self.write_chunk(reader)
    }

    /// Seals the segment being built when `base` starts a later one.
    fn roll_to(&mut self, base: u64) -> Result<()> {
        match self.building.take() {
            Some(building) if building.base < base => {
                self.store(building.seal(base));
                self.building = Some(Building::new(base, !self.persist));
            }
            Some(building) => self.building = Some(building),
            None => self.building = Some(Building::new(base, !self.persist)),
        }
        Ok(())
    }

    /// Notes a damaged frame met by `cursor` and moves past it; returns where reading resumes
    /// (`None`: nothing readable follows). Other errors are returned.
    fn skip_damage(
        &mut self,
        cursor: &mut Cursor,
        error: crate::storage::Error,
    ) -> Result<Option<u64>> {
        let crate::storage::Error::Corrupt {
            segment,
            offset,
            kind,
        } = error
        else {
            return Err(error.into());
        };
        if !self.damage.iter().any(|d| d.0 == segment && d.1 == offset) {
            tracing::warn!(%segment, offset, %kind, "damaged records left out of the id index; lookups that do not find their id report the damage");
            self.damage.push((segment, offset, kind));
        }
        Ok(cursor.skip_damage()?.map(|seq| seq.0))
    }

    /// The first damaged frame met while indexing, as the error a lookup that found nothing
    /// returns: the id may be in the records it hides.
    pub(crate) fn damage(&self) -> Option<crate::storage::Error> {
        self.damage
            .first()
            .map(|(segment, offset, kind)| crate::storage::Error::Corrupt {
                segment: *segment,
                offset: *offset,
                kind: kind.clone(),
            })
    }

    /// Every damaged frame met while indexing, in the order met.
    pub(crate) fn damage_met(&self) -> Vec<crate::storage::Error> {
        self.damage
            .iter()
            .map(|(segment, offset, kind)| crate::storage::Error::Corrupt {
                segment: *segment,
                offset: *offset,
                kind: kind.clone(),
            })
            .collect()
    }

    /// Keeps a sealed segment's index and, for the writer, writes it to its `.ids` file on a
    /// thread of its own ([STORE-06] step 2); lookups use the index in memory meanwhile.
    fn store(&mut self, ids: SegmentIds) {
        let ids = Arc::new(ids);
        if self.persist {
            // One file at a time, in order of sealing.
            self.wait_for_files();
            let file = SealedFile {
                io: self.io.clone(),
                dir: self.dir.clone(),
                path: self.path(ids.base),
                ids: ids.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name("esl-replay-ids".into())
                .spawn({
                    let file = file.clone();
                    move || file.write()
                });
            match spawned {
                Ok(thread) => self.writing = Some(thread),
                Err(_) => file.write(),
            }
        }
        self.keep_sealed(ids);
    }

    /// Writes the records the writer added since the last chunk file as the next one, once
    /// there are [`CHUNK_RECORDS`] of them ([STORE-06]). Not synced: a chunk is a cache
    /// that readers check before they use it.
    fn write_chunk(&mut self, reader: &Reader) -> Result<()> {
        let Some(building) = self.building.as_mut() else {
            return Ok(());
        };
        if !self.persist || building.until - building.chunked_until < CHUNK_RECORDS {
            return Ok(());
        }
        let Some(token) = payload_crc(reader, building.until - 1)? else {
            return Ok(());
        };
        let segment = building.base;
        let chunk = building.take_chunk();
        let path = self
            .dir
            .join(format!("{segment:020}-{:020}.part", chunk.base));
        let temporary = path.with_extension("part.tmp");
        let written = std::fs::create_dir_all(&self.dir)
            .and_then(|()| std::fs::write(&temporary, chunk.encode(token)))
            .and_then(|()| self.io.rename(&temporary, &path));
        if let Err(error) = written {
            // Readers then scan these records instead; appends go on.
            tracing::warn!(path = %path.display(), error = %error_chain(&error), "could not write an id index chunk");
        }
        building.keep_chunk(chunk);
        Ok(())
    }

    /// Loads the active segment's chunk files that tile it from its base and still describe
    /// the log: each must end at or below the log's end, and its last record's payload must
    /// have the CRC-32 the chunk recorded ([STORE-06]). Stops at the first that does not.
    fn load_chunks(&mut self, reader: &Reader, building: &mut Building) -> Result<()> {
        let next = reader.next_seq()?.0;
        for (from, path) in chunk_files(&self.dir, building.base) {
            if from != building.until {
                break;
            }
            let Some((chunk, token)) = read_ids_file(&path, CHUNK_RECORDS)
                .and_then(|bytes| SegmentIds::decode(&bytes, from, None))
            else {
                break;
            };
            if chunk.end <= from
                || chunk.summary.is_none()
                || chunk.end > next
                || payload_crc(reader, chunk.end - 1)? != Some(token)
            {
                break;
            }
            building.add_chunk(chunk);
        }
        Ok(())
    }

    /// Indexes records below `until` (or the log's end if 0) that the index has not seen.
    fn catch_up_to(&mut self, reader: &Reader, until: u64) -> Result<()> {
        // The end first: for a follower, finding it picks up the segments the writer added,
        // so the list then holds the segment of every record below it (a record filed under
        // the segment before its own would be missing from its own segment's index).
        let mut listed_until = reader.next_seq()?.0;
        let mut segments: Vec<u64> = reader.segments().iter().map(|s| s.0).collect();
        let Some(&active) = segments.last() else {
            return Ok(());
        };
        let until = if until == 0 { listed_until } else { until };
        if self
            .building
            .as_ref()
            .is_some_and(|b| b.base < active && segments.binary_search(&b.base).is_err())
        {
            self.building = None; // its segment was truncated away
        }
        let mut from = match &self.building {
            Some(building) => building.until,
            None => active,
        };
        if self.building.is_none() {
            let mut building = Building::new(active, !self.persist);
            self.load_chunks(reader, &mut building)?;
            from = building.until;
            self.building = Some(building);
        }
        if from >= until {
            return Ok(());
        }
        let mut cursor = reader.cursor(Seq(from))?;
        let mut buffer = DecodeBuffer::default();
        while from < until {
            let found = match cursor.next() {
                Ok(Some(found)) => found,
                Ok(None) => break,
                Err(error) if error.is_corruption() => {
                    match self.skip_damage(&mut cursor, error)? {
                        Some(resumed) => {
                            from = resumed;
                            continue;
                        }
                        None => break,
                    }
                }
                Err(error) => return Err(error.into()),
            };
            if found.seq.0 >= listed_until {
                listed_until = reader.next_seq()?.0;
                segments = reader.segments().iter().map(|s| s.0).collect();
            }
            let base = segments
                .iter()
                .rev()
                .copied()
                .find(|b| *b <= found.seq.0)
                .unwrap_or(active);
            self.roll_to(base)?;
            if let (Some(entry), Some(building)) =
                (indexable(&found, &mut buffer), self.building.as_mut())
            {
                building.add(&entry);
            }
            from = found.seq.0 + 1;
        }
        Ok(())
    }

    /// The index of a sealed segment `[base, end)`: cached, loaded, or rebuilt by scanning.
    fn sealed_ids(&mut self, reader: &Reader, base: u64, end: u64) -> Result<Arc<SegmentIds>> {
        if let Some(ids) = self.sealed.get(&base) {
            return Ok(ids.clone());
        }
        if let Some((ids, _)) = read_ids_file(&self.path(base), end.saturating_sub(base))
            .and_then(|b| SegmentIds::decode(&b, base, Some(end)))
        {
            let ids = Arc::new(ids);
            self.keep_sealed(ids.clone());
            return Ok(ids);
        }
        self.rebuild_sealed(reader, base, end)
    }

    /// Indexes the sealed segment `[base, end)` by reading it, and keeps the index (in a file
    /// too, unless damage was met).
    fn rebuild_sealed(&mut self, reader: &Reader, base: u64, end: u64) -> Result<Arc<SegmentIds>> {
        // Sealed at once: nothing looks ids up in it before, so no map.
        let mut building = Building::new(base, false);
        let damaged_before = self.damage.len();
        self.read_entries(reader, base, Some(end), &mut |entry| building.add(entry))?;
        if self.damage.len() > damaged_before {
            // Built around damage: kept in memory only, so every process meets the damage.
            self.keep_sealed(Arc::new(building.seal(end)));
        } else {
            self.store(building.seal(end));
        }
        self.sealed.get(&base).cloned().ok_or(Error::EmptyBatch)
    }

    /// The summary of every record in the log: sealed segments' from their index files
    /// (rebuilt by reading the segment when a file lacks one), the active segment's from its
    /// chunks and the records after them.
    pub(crate) fn summary(&mut self, reader: &Reader) -> Result<Summary> {
        self.catch_up_to(reader, 0)?;
        // Records before the start (a truncation inside a segment) are not readable: a
        // segment that holds some is summed by reading the readable part.
        let start = reader.first_seq().0;
        let segments: Vec<u64> = reader.segments().iter().map(|s| s.0).collect();
        let mut total = Summary::default();
        for (index, &base) in segments.iter().enumerate() {
            let end = segments.get(index + 1).copied();
            if end.is_some_and(|end| end <= start) {
                continue;
            }
            if start > base {
                total.merge(&self.read_summary(reader, start, end)?);
                continue;
            }
            // The segment being built is the newest with records; one after it is empty.
            if let Some(building) = self.building.as_ref().filter(|b| b.base == base) {
                total.merge(&building.summary);
                total.merge(&building.recent_summary);
                continue;
            }
            let Some(end) = end else {
                continue;
            };
            let mut ids = self.sealed_ids(reader, base, end)?;
            if ids.summary.is_none() {
                // A version 1 file: read the segment once and keep the summary.
                self.forget_sealed(base);
                ids = self.rebuild_sealed(reader, base, end)?;
            }
            if let Some(summary) = &ids.summary {
                total.merge(summary);
            }
        }
        Ok(total)
    }

    /// The summary of the readable records from `from` up to `end` (or the log's end).
    fn read_summary(&mut self, reader: &Reader, from: u64, end: Option<u64>) -> Result<Summary> {
        let mut summary = Summary::default();
        self.read_entries(reader, from, end, &mut |entry| summary.add(entry))?;
        Ok(summary)
    }

    /// Reads the records from `from` up to `end` (or the log's end), handing each readable
    /// one's entry to `each` and noting damage as it goes.
    fn read_entries(
        &mut self,
        reader: &Reader,
        from: u64,
        end: Option<u64>,
        each: &mut dyn FnMut(&Entry<'_>),
    ) -> Result<()> {
        let mut cursor = reader.cursor(Seq(from))?;
        let mut buffer = DecodeBuffer::default();
        loop {
            let found = match cursor.next() {
                Ok(Some(found)) => found,
                Ok(None) => return Ok(()),
                Err(error) if error.is_corruption() => {
                    match self.skip_damage(&mut cursor, error)? {
                        Some(_) => continue,
                        None => return Ok(()),
                    }
                }
                Err(error) => return Err(error.into()),
            };
            if end.is_some_and(|end| found.seq.0 >= end) {
                return Ok(());
            }
            if let Some(entry) = indexable(&found, &mut buffer) {
                each(&entry);
            }
        }
    }

    /// Log sequences whose record id may hash like `id`, newest segment first, searched as
    /// `search` says; `None` when [`Search::Known`] cannot answer yet.
    pub(crate) fn candidates(
        &mut self,
        reader: &Reader,
        id: &str,
        search: Search,
    ) -> Result<Option<Candidates>> {
        let hash = hash_id(id);
        // A handle that keeps looking ids up loads the indexes once instead; its first
        // lookups read the sealed segments' files without keeping them.
        let loads_whole = self.hinted_lookups >= HINTED_LOOKUPS && !self.trimmed;
        let search = if search == Search::Hinted && loads_whole {
            Search::Verified
        } else {
            search
        };
        if search == Search::Hinted {
            self.hinted_lookups += 1;
        }
        let mut found = Candidates {
            seqs: Vec::new(),
            exact: true,
            active_left: None,
        };
        let in_place = match (search, self.building.as_mut()) {
            (Search::Known, None) => return Ok(None),
            (Search::Known, Some(building)) => {
                building.candidates(hash, &mut found.seqs);
                false
            }
            (Search::Hinted, None) => true,
            (Search::Hinted | Search::Verified, _) => {
                self.catch_up_to(reader, 0)?;
                if let Some(building) = self.building.as_mut() {
                    building.candidates(hash, &mut found.seqs);
                }
                false
            }
        };
        let segments: Vec<u64> = reader.segments().iter().map(|s| s.0).collect();
        if in_place {
            // Nothing loaded yet. The active segment's newest records have to be read, so it
            // is searched last, and only if the sealed ones do not hold the id.
            found.active_left = segments.last().copied();
        }
        if let Some(filter) = self.sealed_filter(&segments) {
            for at in filter.rows.matches(hash).rev() {
                if let Some(ids) = filter.members.get(at) {
                    ids.candidates(hash, &mut found.seqs);
                }
            }
            return Ok(Some(found));
        }
        for pair in segments.windows(2).rev() {
            let [base, end] = *pair else { continue };
            if let Some(ids) = self.sealed.get(&base).filter(|ids| ids.end == end) {
                ids.candidates(hash, &mut found.seqs);
                continue;
            }
            if self.let_go_excludes(base, end, hash) {
                continue;
            }
            match search {
                Search::Known => return Ok(None),
                Search::Hinted => {
                    let path = self.path(base);
                    match verified_probe(&path, base, Some(end), hash, OlderFiles::Hint) {
                        Some((seqs, head)) => {
                            found.seqs.extend(seqs);
                            // An older file gives a hint, and the lookup goes on.
                            found.exact &= head.version == VERSION;
                        }
                        // A damaged file: a hint from the pairs near the hash.
                        None => {
                            probe_file(&path, base, Some(end), hash, &mut found.seqs);
                            found.exact = false;
                        }
                    }
                }
                Search::Verified => {
                    let path = self.path(base);
                    let probed = if loads_whole {
                        None
                    } else {
                        verified_probe(&path, base, Some(end), hash, OlderFiles::ReadThrough)
                    };
                    match probed {
                        Some((seqs, _)) => found.seqs.extend(seqs),
                        None => self
                            .sealed_ids(reader, base, end)?
                            .candidates(hash, &mut found.seqs),
                    }
                }
            }
        }
        Ok(Some(found))
    }

    /// The filters of the sealed segments of `segments` (the log's, oldest first) side by
    /// side, if the index holds every one of them; built when first needed after a change.
    fn sealed_filter(&mut self, segments: &[u64]) -> Option<&SealedFilter> {
        if self.filter.as_ref().is_none_or(|f| f.segments != segments) {
            self.filter = None;
            let members = segments
                .windows(2)
                .map(|pair| {
                    let [base, end] = *pair else { return None };
                    self.sealed.get(&base).filter(|ids| ids.end == end).cloned()
                })
                .collect::<Option<Vec<_>>>()?;
            let filters: Vec<&SegmentFilter> =
                members.iter().map(|ids| ids.pairs.filter()).collect();
            let rows = FilterRows::new(&filters);
            self.filter = Some(SealedFilter {
                segments: segments.to_vec(),
                members,
                rows,
            });
        }
        self.filter.as_ref()
    }

    /// For each of `hashes`, the log sequences of every stored record whose id may hash like
    /// it, through verified indexes (a miss means absent).
    pub(crate) fn stored_candidates(
        &mut self,
        reader: &Reader,
        hashes: &[u64],
    ) -> Result<Vec<Vec<u64>>> {
        self.catch_up_to(reader, 0)?;
        let mut found = vec![Vec::new(); hashes.len()];
        if let Some(building) = self.building.as_mut() {
            for (hash, out) in hashes.iter().zip(&mut found) {
                building.candidates(*hash, out);
            }
        }
        let segments: Vec<u64> = reader.segments().iter().map(|s| s.0).collect();
        for pair in segments.windows(2) {
            let [base, end] = *pair else { continue };
            if let Some(probed) = self.probe_let_go(base, end, hashes) {
                for (at, seqs) in probed {
                    if let Some(out) = found.get_mut(at) {
                        out.extend(seqs);
                    }
                }
                continue;
            }
            let ids = self.sealed_ids(reader, base, end)?;
            for (hash, out) in hashes.iter().zip(&mut found) {
                ids.candidates(*hash, out);
            }
        }
        Ok(found)
    }

    /// Whether the filter of let-go segment `[base, end)` proves `hash` absent from it.
    fn let_go_excludes(&self, base: u64, end: u64, hash: u64) -> bool {
        self.let_go
            .get(&base)
            .is_some_and(|(known_end, filter)| *known_end == end && !filter.may_hold(hash))
    }

    /// For a let-go segment `[base, end)`: the candidates of each of `hashes` (by index)
    /// that its filter may hold, read from its file in place. `None` if the segment is loaded
    /// or not let go of, or its file cannot be read so (the caller loads it).
    fn probe_let_go(&self, base: u64, end: u64, hashes: &[u64]) -> Option<Vec<(usize, Vec<u64>)>> {
        if self.sealed.contains_key(&base) {
            return None;
        }
        let (known_end, filter) = self.let_go.get(&base)?;
        if *known_end != end {
            return None;
        }
        let path = self.path(base);
        let mut probed = Vec::new();
        for (at, hash) in hashes.iter().enumerate() {
            if filter.may_hold(*hash) {
                let (seqs, _) =
                    verified_probe(&path, base, Some(end), *hash, OlderFiles::ReadThrough)?;
                probed.push((at, seqs));
            }
        }
        Some(probed)
    }

    /// The first step of a [`Search::Hinted`] lookup that left the active segment for
    /// later ([`Candidates::active_left`]): the records after the newest of its chunk files,
    /// read before any chunk is checked, so that a recent record is found without opening
    /// every chunk. That chunk is not checked, so a miss here proves nothing: then
    /// [`IdIndex::active_candidates`] searches the segment, without reading these again.
    pub(crate) fn newest_candidates(
        &self,
        reader: &Reader,
        id: &str,
        active: u64,
    ) -> Result<Newest> {
        let until = reader.next_seq()?.0;
        let newest_end = chunk_files(&self.dir, active)
            .pop_last()
            .and_then(|(first, path)| chunk_end(&path, first));
        // A claimed end further back than two chunks is not the writer's newest chunk.
        let Some(from) = newest_end.filter(|end| *end <= until && until - end <= 2 * CHUNK_RECORDS)
        else {
            return Ok(Newest::default());
        };
        let mut seqs = Vec::new();
        let whole = scan_records(reader, from, until, hash_id(id), &mut seqs)?;
        Ok(Newest {
            seqs,
            read: Some((from, until, whole)),
        })
    }

    /// The rest of a [`Search::Hinted`] lookup that left the active segment for later
    /// ([`Candidates::active_left`]): the log sequences, from the segment based at `active`
    /// on, of the records whose id may hash like `id`, leaving out those `newest` read.
    pub(crate) fn active_candidates(
        &self,
        reader: &Reader,
        id: &str,
        active: u64,
        newest: &Newest,
    ) -> Result<Candidates> {
        let mut seqs = Vec::new();
        let exact = self.probe_active(reader, active, hash_id(id), newest.read, &mut seqs)?;
        Ok(Candidates {
            seqs,
            exact,
            active_left: None,
        })
    }

    /// For a handle's first lookups: adds the log sequences, from the segment based at
    /// `active` on, of the records whose id may hash like `hash`: from its chunk files
    /// checked in place as loading checks them ([`verified_probe`], and each chunk's token,
    /// [STORE-06]) and from the records after them (into later segments, if it was sealed
    /// since), except those of `read` when the chunks end where it begins. Returns whether
    /// that is exact; it is not when damage stopped a read of records: the lookup then loads
    /// the index, which notes the damage.
    fn probe_active(
        &self,
        reader: &Reader,
        active: u64,
        hash: u64,
        read: Option<(u64, u64, bool)>,
        out: &mut Vec<u64>,
    ) -> Result<bool> {
        let until = reader.next_seq()?.0;
        let mut from = active;
        // Chunks in order from the segment's base, each starting where the last one ended;
        // the records after the first that fails a check are read instead.
        for (first, path) in chunk_files(&self.dir, active) {
            if first != from {
                break;
            }
            let Some((seqs, head)) =
                verified_probe(&path, first, None, hash, OlderFiles::ReadThrough)
            else {
                break;
            };
            if head.end <= first
                || head.end > until
                || head.version == VERSION_1
                || payload_crc(reader, head.end - 1)? != Some(head.token)
            {
                break;
            }
            out.extend(seqs);
            from = head.end;
        }
        match read {
            // Those records were read already; only those appended since are read now.
            Some((read_from, read_until, whole)) if read_from == from => {
                Ok(scan_records(reader, read_until, until, hash, out)? && whole)
            }
            _ => scan_records(reader, from, until, hash, out),
        }
    }

    /// Whether the segment `[base, end)` may hold records captured in `[from_ms, until_ms]`:
    /// also when damage left records out of its index, whose times are then unknown, so
    /// that a read of the window meets the damage and reports it.
    pub(crate) fn may_overlap(
        &mut self,
        reader: &Reader,
        base: u64,
        end: u64,
        from_ms: i64,
        until_ms: i64,
    ) -> Result<bool> {
        let ids = self.sealed_ids(reader, base, end)?;
        let damaged = self.damage.iter().any(|(segment, ..)| segment.0 == base);
        Ok(damaged
            || ids.pairs.as_slice().is_empty()
            || !(ids.max_ms < from_ms || ids.min_ms > until_ms))
    }

    /// Removes, durably, every chunk file and the `.ids` files of the segment based at
    /// `active_base` and of any after it: the writer's open does this after an unclean
    /// shutdown, before it appends, because records a crash lost may be appended again with
    /// other contents under the same sequences, and a crash that lost a roll's seal leaves
    /// the segment active again beside the `.ids` file already written for it ([STORE-06]).
    pub(crate) fn remove_after_crash(&mut self, active_base: u64) -> Result<()> {
        self.wait_for_files();
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Ok(());
        };
        let mut removed = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let stale = name.to_str().is_some_and(|n| {
                let n = n.strip_suffix(".tmp").unwrap_or(n);
                n.ends_with(".part")
                    || n.strip_suffix(".ids")
                        .and_then(|base| base.parse::<u64>().ok())
                        .is_some_and(|base| base >= active_base)
            });
            if stale {
                let path = entry.path();
                self.io.remove_file(&path).map_err(|source| Error::Io {
                    op: "remove",
                    path,
                    source,
                })?;
                removed = true;
            }
        }
        // One directory sync makes every removal durable.
        if removed {
            self.io.sync_dir(&self.dir).map_err(|source| Error::Io {
                op: "sync",
                path: self.dir.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Forgets (and, for the writer, deletes) the index files of segments no longer in the log.
    pub(crate) fn forget_below(&mut self, first_base: u64) {
        // A file still being written for a segment removed here would outlive it.
        self.wait_for_files();
        let doomed: Vec<u64> = self.sealed.range(..first_base).map(|(b, _)| *b).collect();
        for base in doomed {
            self.forget_sealed(base);
        }
        self.let_go.retain(|base, _| *base >= first_base);
        if self.persist
            && let Ok(entries) = std::fs::read_dir(&self.dir)
        {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let base = name.to_str().and_then(|n| {
                    let n = n.strip_suffix(".tmp").unwrap_or(n);
                    n.strip_suffix(".ids")
                        .or_else(|| n.strip_suffix(".part").and_then(|n| n.split('-').next()))
                        .and_then(|n| n.parse::<u64>().ok())
                });
                if base.is_some_and(|b| b < first_base) {
                    #[expect(
                        clippy::disallowed_methods,
                        reason = "a rebuildable cache file; losing the removal is harmless"
                    )]
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_writes_as_many_bytes_as_it_says() {
        fn property(artifacts: Vec<(String, u64)>, events: Vec<(String, u64)>) -> bool {
            let summary = Summary {
                records: 3,
                bytes: 9,
                artifacts: artifacts.into_iter().collect(),
                events: events.into_iter().collect(),
                ..Summary::default()
            };
            let mut out = Vec::new();
            summary.encode(&mut out);
            out.len() == summary.encoded_len() && Summary::decode(&out) == Some(summary)
        }
        quickcheck::QuickCheck::new()
            .quickcheck(property as fn(Vec<(String, u64)>, Vec<(String, u64)>) -> bool);
    }

    #[test]
    fn bucketed_lookups_find_exactly_the_pairs_with_the_hash() {
        quickcheck::QuickCheck::new()
            .tests(1_000)
            .quickcheck(bucketed_agrees as fn(Vec<(u64, u64)>, Vec<u64>, u8));
        // A segment's worth, so that every bucket width is used (16 bits at 600 k pairs).
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for len in [1_000, 40_000, 600_000] {
            let pairs: Vec<(u64, u64)> = (0..len).map(|seq| (next(), seq)).collect();
            let probes: Vec<u64> = pairs.iter().step_by(97).map(|p| p.0).collect();
            bucketed_agrees(pairs, probes, 2);
        }
    }

    /// Any pairs, with hashes squeezed into few values (`squeeze`) or at the extremes.
    fn bucketed_agrees(mut pairs: Vec<(u64, u64)>, probes: Vec<u64>, squeeze: u8) {
        match squeeze % 3 {
            0 => pairs.iter_mut().for_each(|p| p.0 %= 5),
            1 => pairs.iter_mut().for_each(|p| p.0 = u64::MAX - p.0 % 5),
            _ => {}
        }
        let buckets = HashPairs::new(pairs.clone());
        pairs.sort_unstable();
        let hashes = pairs.iter().step_by(7).map(|p| p.0);
        for probe in probes.iter().copied().chain(hashes).chain([0, u64::MAX]) {
            let mut found = Vec::new();
            buckets.candidates(probe, &mut found);
            // The plain answer: a binary search of the sorted pairs.
            let from = pairs.partition_point(|p| p.0 < probe);
            let expected: Vec<u64> = pairs
                .iter()
                .skip(from)
                .take_while(|p| p.0 == probe)
                .map(|p| p.1)
                .collect();
            assert_eq!(found, expected, "hash {probe}");
        }
    }

    /// The sealed index of records `[base, end)`, record `seq` with id `id-{id_of(seq)}`.
    fn sealed_of(base: u64, end: u64, id_of: impl Fn(u64) -> u64) -> SegmentIds {
        let mut building = Building::new(base, false);
        for seq in base..end {
            building.add(&Entry {
                seq,
                hash: hash_id(&format!("id-{}", id_of(seq))),
                ms: 0,
                artifact: "event.raw",
                event: Some("HEARTBEAT"),
                bytes: 1,
            });
        }
        building.seal(end)
    }

    #[test]
    fn probing_a_file_in_place_finds_what_loading_it_finds_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids");
        let (base, end) = (1_000, 1_000 + 50_000);
        let ids = sealed_of(base, end, |seq| seq);
        let probe = |path: &std::path::Path, base: u64, hash: u64| {
            let mut out = Vec::new();
            probe_file(path, base, Some(end), hash, &mut out);
            out
        };
        for bytes in [ids.encode(0), encode_v2(&ids, 0)] {
            std::fs::write(&path, &bytes).unwrap();
            for seq in (base..end).step_by(37).chain([base, end - 1]) {
                let hash = hash_id(&format!("id-{seq}"));
                let mut loaded = Vec::new();
                ids.candidates(hash, &mut loaded);
                assert_eq!(probe(&path, base, hash), loaded, "record {seq}");
                assert!(loaded.contains(&seq));
            }
            for hash in [0, u64::MAX, hash_id("absent")] {
                assert_eq!(probe(&path, base, hash), Vec::<u64>::new());
            }
            // Another segment's file, a cut file, a missing file: no answer, and no panic.
            let hash = hash_id(&format!("id-{}", base + 5));
            assert!(probe(&path, base + 1, hash).is_empty());
            std::fs::write(&path, &bytes[..HEADER_LEN + 100]).unwrap();
            assert!(probe(&path, base, hash).is_empty());
            assert!(probe(&dir.path().join("missing"), base, hash).is_empty());
        }
    }

    /// An id file is read only while it is no longer than a file of its records can be
    /// (header, window table, pairs, the largest summary): a valid file is read whole, one
    /// lengthened past that bound is not read at all, so a sparse or runaway file never
    /// fills memory before it is found damaged.
    #[test]
    fn an_id_file_longer_than_its_records_allow_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids");
        let (base, end) = (1, 5_000);
        let bytes = sealed_of(base, end, |seq| seq).encode(0);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_ids_file(&path, end - base), Some(bytes.clone()));
        let limit = (HEADER_LEN as u64 + 8) + (end - base).div_ceil(1024) * 4 + (end - base) * 16;
        let mut longer = bytes;
        longer.resize(usize::try_from(limit + SUMMARY_LIMIT).unwrap(), 0);
        std::fs::write(&path, &longer).unwrap();
        assert!(read_ids_file(&path, end - base).is_some());
        longer.push(0);
        std::fs::write(&path, &longer).unwrap();
        assert_eq!(read_ids_file(&path, end - base), None);
    }

    /// A file in the layout before version 3 (no window table), as older writers left them.
    fn encode_v2(ids: &SegmentIds, token: u32) -> Vec<u8> {
        let v3 = ids.encode(token);
        let header = FileHead::parse(&v3).unwrap();
        let mut out = v3[..HEADER_LEN].to_vec();
        out[8..10].copy_from_slice(&VERSION_2.to_le_bytes());
        out.extend_from_slice(&v3[header.pairs_start..v3.len() - 4]);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// A probe that checks what it reads answers exactly what loading the file answers, for
    /// ids present, absent and shared by records across several windows, in both layouts;
    /// for damage, a cut or lengthened file, another segment's file or a missing one, it
    /// answers nothing, or (damage a version 3 probe does not read) what it answers undamaged.
    #[test]
    fn a_verified_probe_answers_as_loading_does_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids");
        // More pairs than one step of the version 2 read and than several windows; every
        // third record has the id `id-0`, so its pairs fill three windows.
        let (base, end) = (1_000, 1_000 + 9_000);
        let ids = sealed_of(base, end, |seq| if seq % 3 == 0 { 0 } else { seq });
        let hashes: Vec<u64> = (base..end)
            .step_by(97)
            .map(|seq| hash_id(&format!("id-{seq}")))
            .chain([0, u64::MAX, hash_id("absent"), hash_id("id-0")])
            .collect();
        let loaded = |hash: u64| {
            let mut seqs = Vec::new();
            ids.candidates(hash, &mut seqs);
            seqs.sort_unstable();
            seqs
        };
        assert_eq!(loaded(hash_id("id-0")).len(), 3_000);
        let v3 = ids.encode(0);
        let v2 = encode_v2(&ids, 0);
        assert!(v2.len() > PROBE_STEP);
        for bytes in [&v3, &v2] {
            std::fs::write(&path, bytes).unwrap();
            for hash in &hashes {
                assert_eq!(
                    verified_probe(&path, base, Some(end), *hash, OlderFiles::ReadThrough)
                        .map(|f| f.0),
                    Some(loaded(*hash))
                );
                // Asked for a hint, an older file gives what it holds for the hash near
                // where it falls (not the 3,000 pairs of `id-0`, which reach past that), and
                // its header says it was not checked; a version 3 file still answers exactly.
                let (hinted, head) =
                    verified_probe(&path, base, Some(end), *hash, OlderFiles::Hint).unwrap();
                assert_eq!(head.version == VERSION, *bytes == v3);
                if *bytes == v3 || *hash != hash_id("id-0") {
                    assert_eq!(hinted, loaded(*hash));
                } else {
                    assert!(hinted.iter().all(|seq| loaded(*hash).contains(seq)));
                }
            }
            let hash = hashes[3];
            assert!(
                verified_probe(&path, base + 1, Some(end), hash, OlderFiles::ReadThrough).is_none()
            );
            assert!(
                verified_probe(&path, base, Some(end + 1), hash, OlderFiles::ReadThrough).is_none()
            );
            // A cut or lengthened file: a version 3 probe may still answer, from the parts
            // it checks, and then as the whole file would.
            let whole = bytes.len();
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0; 8]);
            for (changed, always_refused) in [
                (bytes[..HEADER_LEN + 3].to_vec(), true),
                (bytes[..2].to_vec(), true),
                (bytes[..whole - 1].to_vec(), *bytes == v2),
                (bytes[..whole - 20].to_vec(), *bytes == v2),
                (longer, *bytes == v2),
            ] {
                std::fs::write(&path, &changed).unwrap();
                let probed = verified_probe(&path, base, Some(end), hash, OlderFiles::ReadThrough)
                    .map(|f| f.0);
                let len = changed.len();
                assert!(probed.is_none() || !always_refused, "{len} bytes");
                assert!(
                    probed.is_none() || probed == Some(loaded(hash)),
                    "{len} bytes"
                );
            }
        }
        assert!(
            verified_probe(
                &dir.path().join("missing"),
                base,
                Some(end),
                0,
                OlderFiles::ReadThrough
            )
            .is_none()
        );

        // Damage: loading refuses it wherever it is. A version 2 probe refuses it too; a
        // version 3 probe refuses damage to the header, the window table or a window it
        // reads, and otherwise answers as it does undamaged.
        let header = FileHead::parse(&v3).unwrap();
        let hash = hash_id("id-0");
        // Writes `bytes` with byte `at` changed, which loading refuses.
        let write_damaged = |bytes: &[u8], at: usize| {
            let mut damaged = bytes.to_vec();
            damaged[at] ^= 0x10;
            std::fs::write(&path, &damaged).unwrap();
            let decoded = SegmentIds::decode(&damaged, base, Some(end));
            assert!(decoded.is_none(), "byte {at}");
        };
        let pairs = ids.pairs.as_slice();
        let first = pairs.partition_point(|p| p.0 < hash);
        let in_window = header.pairs_start + (first + 10) * 16;
        for (bytes, refused) in [
            (
                &v2,
                vec![
                    0,
                    9,
                    20,
                    50,
                    HEADER_LEN + 5,
                    v2.len() / 2,
                    v2.len() - 30,
                    v2.len() - 1,
                ],
            ),
            (
                &v3,
                vec![
                    0,
                    9,
                    20,
                    50,
                    HEADER_LEN + 1,
                    header.pairs_start - 2,
                    in_window,
                ],
            ),
        ] {
            for at in refused {
                write_damaged(bytes, at);
                assert!(
                    verified_probe(&path, base, Some(end), hash, OlderFiles::ReadThrough)
                        .map(|f| f.0)
                        .is_none(),
                    "byte {at}"
                );
            }
        }
        for at in (header.pairs_start..v3.len())
            .step_by(4_099)
            .chain([v3.len() - 30, v3.len() - 1])
        {
            write_damaged(&v3, at);
            for hash in &hashes {
                let probed = verified_probe(&path, base, Some(end), *hash, OlderFiles::ReadThrough)
                    .map(|f| f.0);
                assert!(
                    probed.is_none() || probed == Some(loaded(*hash)),
                    "byte {at}"
                );
            }
        }
    }

    /// A writer's building keeps its records in chunks and `recent` until lookups fold them
    /// into the map; either way every record is found, and the sealed index is the same.
    #[test]
    fn a_building_finds_every_record_before_and_after_its_map_is_filled() {
        let entry = |seq: u64| Entry {
            seq,
            // Every tenth record shares its hash with the one before (a hash collision).
            hash: hash_id(&format!("id-{}", seq - u64::from(seq.is_multiple_of(10)))),
            ms: 0,
            artifact: "event.raw",
            event: None,
            bytes: 1,
        };
        let (base, end) = (100, 100 + 3 * CHUNK_RECORDS + 123);
        let found = |building: &mut Building, seq: u64| {
            let mut out = Vec::new();
            building.candidates(entry(seq).hash, &mut out);
            out.sort_unstable();
            out
        };
        let mut sealed = Vec::new();
        for indexed in [true, false] {
            let mut building = Building::new(base, indexed);
            for seq in base..end {
                building.add(&entry(seq));
                if building.until - building.chunked_until == CHUNK_RECORDS {
                    let chunk = building.take_chunk();
                    building.keep_chunk(chunk);
                }
            }
            // Lookups before and after the map is filled (the fold after a few).
            for round in 0..2 * FOLD_CHUNKS_AFTER as u64 {
                let seq = base + (round * 977) % (end - base);
                let expected: Vec<u64> = match seq % 10 {
                    0 if seq > base => vec![seq - 1, seq],
                    9 if seq + 1 < end => vec![seq, seq + 1],
                    _ => vec![seq],
                };
                assert_eq!(
                    found(&mut building, seq),
                    expected,
                    "{indexed} {round} {seq}"
                );
            }
            assert!(building.indexed);
            let ids = building.seal(end);
            sealed.push(ids.pairs.as_slice().to_vec());
        }
        assert_eq!(sealed[0], sealed[1]);
        assert_eq!(sealed[0].len() as u64, end - base);
    }

    #[test]
    fn ids_file_round_trips_and_rejects_damage() {
        let mut building = Building::new(10, false);
        let entry = |seq: u64, id: &str, ms: i64| Entry {
            seq,
            hash: hash_id(id),
            ms,
            artifact: "event.raw",
            event: (seq != 11).then_some("HEARTBEAT"),
            bytes: 100,
        };
        building.add(&entry(10, "a", 5));
        building.add(&entry(11, "b", 7));
        building.add(&entry(12, "a", 6));
        let ids = building.seal(13);
        let bytes = ids.encode(0);
        let (back, token) = SegmentIds::decode(&bytes, 10, Some(13)).unwrap();
        assert_eq!(token, 0);
        let mut out = Vec::new();
        back.candidates(hash_id("a"), &mut out);
        out.sort_unstable();
        assert_eq!(out, vec![10, 12]);
        assert_eq!((back.min_ms, back.max_ms), (5, 7));
        let summary = back.summary.clone().unwrap();
        assert_eq!((summary.records, summary.bytes), (3, 300));
        assert_eq!(summary.artifacts.get("event.raw"), Some(&3));
        assert_eq!(summary.events.get("HEARTBEAT"), Some(&2));
        // Version 2 (no window table) and version 1 (no summary either) files are still
        // read for their ids.
        let v2 = encode_v2(&ids, 0);
        let (back_v2, _) = SegmentIds::decode(&v2, 10, Some(13)).unwrap();
        assert_eq!(back_v2.pairs.as_slice(), back.pairs.as_slice());
        assert_eq!(back_v2.summary, back.summary);
        let mut old = v2;
        let summary_len = old.len() - 4 - (HEADER_LEN + 3 * 16);
        old.truncate(old.len() - 4 - summary_len);
        old[8..10].copy_from_slice(&VERSION_1.to_le_bytes());
        let crc = crc32fast::hash(&old);
        old.extend_from_slice(&crc.to_le_bytes());
        let (v1, _) = SegmentIds::decode(&old, 10, Some(13)).unwrap();
        assert!(v1.summary.is_none());
        assert_eq!(v1.pairs.as_slice(), back.pairs.as_slice());
        assert!(SegmentIds::decode(&bytes, 10, Some(14)).is_none());
        assert_eq!(SegmentIds::decode(&bytes, 10, None).unwrap().0.end, 13);
        let mut damaged = bytes.clone();
        damaged[60] ^= 1;
        assert!(SegmentIds::decode(&damaged, 10, Some(13)).is_none());
        let chunk = SegmentIds::decode(&ids.encode(0xfeed), 10, None).unwrap();
        assert_eq!(chunk.1, 0xfeed);
    }
}
