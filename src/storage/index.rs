//! The sparse sequence index of a segment (format/index.md).
//!
//! One entry at most every [`INDEX_INTERVAL`] bytes of frames maps a sequence to the offset
//! of its frame, so a seek costs a binary search plus at most one interval of scanning.
//! Index files are append-only: a 40-byte header, 16-byte entries each with its own
//! checksum, and a 16-byte footer when the segment is sealed. Entries are written only after
//! the frames they point to are durable, so any entry that survives a crash points at
//! durable data. A missing or damaged index is rebuilt from the segment; it is never
//! authoritative.

use super::header::{FileHeader, HEADER_LEN, INDEX_MAGIC};

/// Bytes of frames between index entries (at most).
pub const INDEX_INTERVAL: u64 = 4096;
/// Bytes in one index entry or footer.
pub const ENTRY_LEN: usize = 16;

const DOMAIN_ENTRY: u8 = 0;
const DOMAIN_FOOTER: u8 = 1;

/// One index entry: the frame of `seq` starts at `offset` in the segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    /// The record's sequence.
    pub seq: u64,
    /// The frame's byte offset in the segment file.
    pub offset: u32,
}

/// The footer that completes the index of a sealed segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexFooter {
    /// The sequence after the segment's last record (the seal's sequence).
    pub end_seq: u64,
    /// The offset of the seal frame.
    pub seal_offset: u32,
}

/// The checksum of a segment's index slots of one domain, CRC-32(`salt` || domain || `seq`
/// || `offset`) [IDX-02], with its first nine bytes hashed once per file rather than once per
/// slot (a decode checks thousands).
#[derive(Clone)]
struct SlotCrc(crc32fast::Hasher);

impl SlotCrc {
    fn new(salt: u64, domain: u8) -> SlotCrc {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&salt.to_le_bytes());
        hasher.update(&[domain]);
        SlotCrc(hasher)
    }

    fn of(&self, seq: u64, offset: u32) -> u32 {
        let mut bytes = [0u8; 12];
        bytes[..8].copy_from_slice(&seq.to_le_bytes());
        bytes[8..].copy_from_slice(&offset.to_le_bytes());
        let mut hasher = self.0.clone();
        hasher.update(&bytes);
        hasher.finalize()
    }
}

fn encode_slot(salt: u64, domain: u8, seq: u64, offset: u32) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[0..8].copy_from_slice(&seq.to_le_bytes());
    out[8..12].copy_from_slice(&offset.to_le_bytes());
    out[12..16].copy_from_slice(&SlotCrc::new(salt, domain).of(seq, offset).to_le_bytes());
    out
}

impl IndexEntry {
    /// Encodes the entry [IDX-02].
    #[must_use]
    pub fn encode(&self, salt: u64) -> [u8; ENTRY_LEN] {
        encode_slot(salt, DOMAIN_ENTRY, self.seq, self.offset)
    }
}

impl IndexFooter {
    /// Encodes the footer [IDX-03].
    #[must_use]
    pub fn encode(&self, salt: u64) -> [u8; ENTRY_LEN] {
        encode_slot(salt, DOMAIN_FOOTER, self.end_seq, self.seal_offset)
    }
}

/// An index file's valid content.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IndexFile {
    /// Entries in file order, up to the first invalid slot.
    pub entries: Vec<IndexEntry>,
    /// The footer, if the file is complete.
    pub footer: Option<IndexFooter>,
}

/// Decodes an index file for the segment with this base and salt [IDX-04].
///
/// Returns `None` when the header does not belong to that segment; otherwise the longest
/// valid prefix of entries, stopping at the first damaged slot (a torn index tail loses only
/// entries, which a scan replaces). Entries must increase in sequence and offset.
#[must_use]
pub fn decode_file(bytes: &[u8], base: u64, salt: u64) -> Option<IndexFile> {
    let header = bytes.get(..HEADER_LEN)?;
    let slots = bytes.get(HEADER_LEN..).unwrap_or_default();
    let mut decoder = SlotDecoder::new(header, base, salt, slots.len())?;
    decoder.decode(slots);
    Some(decoder.file)
}

/// Bytes of slots [`read_file`] reads at a time.
const READ_STEP: usize = 4096 * ENTRY_LEN;

/// As [`decode_file`], reading the `len` bytes of `file` a step at a time, so that the
/// file is never held whole (a one-shot lookup reads two indexes of about 240 KB); `None`
/// also when the file cannot be read.
pub(crate) fn read_file(
    mut file: impl std::io::Read,
    len: u64,
    base: u64,
    salt: u64,
) -> Option<IndexFile> {
    let mut header = [0u8; HEADER_LEN];
    file.read_exact(&mut header).ok()?;
    let slots_len = usize::try_from(len.saturating_sub(HEADER_LEN as u64)).unwrap_or(usize::MAX);
    let mut decoder = SlotDecoder::new(&header, base, salt, slots_len)?;
    // Whole slots, so that only the file's end can cut one.
    let step_len = slots_len
        .min(READ_STEP)
        .next_multiple_of(ENTRY_LEN)
        .max(ENTRY_LEN);
    let mut step = vec![0u8; step_len];
    loop {
        let filled = fill(&mut file, &mut step).ok()?;
        // A torn last slot is left out, as by `decode_file`.
        let whole = filled - filled % ENTRY_LEN;
        if !decoder.decode(step.get(..whole).unwrap_or_default()) || filled < step.len() {
            return Some(decoder.file);
        }
    }
}

/// Reads until `buffer` is full or the file ends; returns the bytes read.
fn fill(file: &mut impl std::io::Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buffer.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match file.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// A slot's sequence, offset and checksum.
fn parse_slot(slot: &[u8]) -> Option<(u64, u32, u32)> {
    Some((
        u64::from_le_bytes(slot.get(0..8)?.try_into().ok()?),
        u32::from_le_bytes(slot.get(8..12)?.try_into().ok()?),
        u32::from_le_bytes(slot.get(12..16)?.try_into().ok()?),
    ))
}

/// Decodes an index file's slots in file order, up to the first invalid one or the footer.
struct SlotDecoder {
    base: u64,
    entry_crc: SlotCrc,
    footer_crc: SlotCrc,
    file: IndexFile,
}

impl SlotDecoder {
    /// A decoder for the slots after `header`, if it is that of this segment's index;
    /// `slots_len` sizes the entries (an entry per slot at most).
    fn new(header: &[u8], base: u64, salt: u64, slots_len: usize) -> Option<SlotDecoder> {
        let header = FileHeader::decode(header, INDEX_MAGIC).ok()?;
        if header.base != base || header.salt != salt {
            return None;
        }
        // Bounded, so that a file claiming a huge length cannot reserve huge memory: an
        // index of a 4 GiB segment has a million entries.
        let capacity = (slots_len / ENTRY_LEN).min(1 << 20);
        Some(SlotDecoder {
            base,
            entry_crc: SlotCrc::new(salt, DOMAIN_ENTRY),
            footer_crc: SlotCrc::new(salt, DOMAIN_FOOTER),
            file: IndexFile {
                entries: Vec::with_capacity(capacity),
                footer: None,
            },
        })
    }

    /// Decodes the whole slots of `slots`; `false` once the file has ended (a footer or an
    /// invalid slot), when no later slot counts.
    fn decode(&mut self, slots: &[u8]) -> bool {
        for slot in slots.chunks_exact(ENTRY_LEN) {
            let Some((seq, offset, crc)) = parse_slot(slot) else {
                return false;
            };
            let ordered = self
                .file
                .entries
                .last()
                .is_none_or(|last| seq > last.seq && offset > last.offset);
            if crc == self.entry_crc.of(seq, offset) && ordered && seq >= self.base {
                self.file.entries.push(IndexEntry { seq, offset });
            } else {
                if crc == self.footer_crc.of(seq, offset) {
                    self.file.footer = Some(IndexFooter {
                        end_seq: seq,
                        seal_offset: offset,
                    });
                }
                return false;
            }
        }
        true
    }
}

/// The in-memory sparse index of one segment.
#[derive(Clone, Debug, Default)]
pub(crate) struct SparseIndex {
    entries: Vec<IndexEntry>,
}

impl SparseIndex {
    /// An index over these entries, which must be sorted by sequence.
    #[must_use]
    pub(crate) fn from_entries(entries: Vec<IndexEntry>) -> SparseIndex {
        SparseIndex { entries }
    }

    /// Adds an entry after the last one.
    pub(crate) fn push(&mut self, entry: IndexEntry) {
        debug_assert!(self.entries.last().is_none_or(|last| last.seq < entry.seq));
        self.entries.push(entry);
    }

    /// Drops the entries at or after `offset` (their frames were discarded).
    pub(crate) fn truncate_from(&mut self, offset: u64) {
        self.entries.retain(|e| u64::from(e.offset) < offset);
    }

    /// The entry with the greatest sequence at or below `seq`, and the offset of the entry after it: the frames of every sequence before that
    /// entry's lie below that offset.
    #[must_use]
    pub(crate) fn interval(&self, seq: u64) -> (Option<IndexEntry>, Option<u64>) {
        let after = self.count_at_or_below(seq);
        let floor = after
            .checked_sub(1)
            .and_then(|i| self.entries.get(i))
            .copied();
        (floor, self.entries.get(after).map(|e| u64::from(e.offset)))
    }

    /// How many entries have a sequence at or below `seq`.
    fn count_at_or_below(&self, seq: u64) -> usize {
        match seq.checked_add(1) {
            Some(above) => count_below(&self.entries, above, |e| e.seq),
            None => self.entries.len(),
        }
    }

    /// All entries.
    #[must_use]
    pub(crate) fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// The last entry.
    #[must_use]
    pub(crate) fn last(&self) -> Option<IndexEntry> {
        self.entries.last().copied()
    }
}

/// How many of `items`, sorted by `key_of`, have a key below `key`: `partition_point`, for
/// keys spread about evenly (index entries lie at about even byte intervals).
///
/// A guess interpolated between the first and last keys lands near the answer, and the
/// search gallops outward from it, touching a few cache lines where a binary search over a
/// cold array of thousands of items misses at each step.
fn count_below<T>(items: &[T], key: u64, key_of: impl Fn(&T) -> u64) -> usize {
    let (Some(first), Some(last)) = (items.first(), items.last()) else {
        return 0;
    };
    let (low_key, high_key) = (key_of(first), key_of(last));
    if key <= low_key {
        return 0;
    }
    if key > high_key {
        return items.len();
    }
    // From here low_key < key <= high_key: the first item is below `key` and the last one
    // is not, so there are at least two and both gallops below stop.
    let below = |i: usize| items.get(i).is_some_and(|item| key_of(item) < key);
    let top = items.len() - 1;
    let guess = u128::from(key - low_key) * top as u128 / u128::from(high_key - low_key);
    let guess = usize::try_from(guess).unwrap_or(top).min(top);
    // Bracket the answer: `low` below `key`, `high` not.
    let (mut low, mut high) = (guess, guess);
    let mut step = 1;
    if below(guess) {
        loop {
            high = low.saturating_add(step).min(top);
            if !below(high) {
                break;
            }
            low = high;
            step *= 2;
        }
    } else {
        loop {
            low = high.saturating_sub(step);
            if below(low) {
                break;
            }
            high = low;
            step *= 2;
        }
    }
    let between = items.get(low + 1..high).unwrap_or_default();
    low + 1 + between.partition_point(|item| key_of(item) < key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with(entries: &[IndexEntry], footer: Option<IndexFooter>) -> Vec<u8> {
        let mut bytes = FileHeader::new(10, 77).encode(INDEX_MAGIC).to_vec();
        for e in entries {
            bytes.extend_from_slice(&e.encode(77));
        }
        if let Some(f) = footer {
            bytes.extend_from_slice(&f.encode(77));
        }
        bytes
    }

    #[test]
    fn decodes_entries_and_footer() {
        let entries = [
            IndexEntry {
                seq: 10,
                offset: 40,
            },
            IndexEntry {
                seq: 20,
                offset: 4200,
            },
        ];
        let footer = IndexFooter {
            end_seq: 25,
            seal_offset: 6000,
        };
        let decoded = decode_file(&file_with(&entries, Some(footer)), 10, 77).unwrap();
        assert_eq!(decoded.entries, entries);
        assert_eq!(decoded.footer, Some(footer));
    }

    /// [IDX-04] a torn or damaged tail keeps the valid prefix; a foreign header is refused.
    #[test]
    fn damaged_slot_ends_the_valid_prefix() {
        let entries = [
            IndexEntry {
                seq: 10,
                offset: 40,
            },
            IndexEntry {
                seq: 20,
                offset: 4200,
            },
        ];
        let mut bytes = file_with(&entries, None);
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert_eq!(decode_file(&bytes, 10, 77).unwrap().entries, entries[..1]);
        bytes.truncate(bytes.len() - 3);
        assert_eq!(decode_file(&bytes, 10, 77).unwrap().entries, entries[..1]);
        assert!(decode_file(&bytes, 11, 77).is_none());
        assert!(decode_file(&bytes, 10, 78).is_none());
    }

    /// Hands out a file a few bytes at a time, as a reader may.
    struct Trickle<'a> {
        bytes: &'a [u8],
        sizes: std::iter::Cycle<std::vec::IntoIter<usize>>,
    }

    impl std::io::Read for Trickle<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            let n = self
                .sizes
                .next()
                .unwrap_or(usize::MAX)
                .min(buffer.len())
                .min(self.bytes.len());
            buffer[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    /// Reading a file in steps decodes what decoding it whole does, whatever its damage,
    /// its length (longer than told: an index being appended to) and the reads' sizes.
    #[test]
    fn reading_in_steps_agrees_with_decoding_whole() {
        quickcheck::QuickCheck::new()
            .tests(300)
            .quickcheck(read_agrees as fn(u16, Option<u16>, u16, bool, Vec<u16>) -> bool);
    }

    fn read_agrees(
        count: u16,
        damage_at: Option<u16>,
        cut: u16,
        footer: bool,
        read_sizes: Vec<u16>,
    ) -> bool {
        let count = u64::from(count) % 10_000;
        let entries: Vec<IndexEntry> = (0..count)
            .map(|i| IndexEntry {
                seq: 10 + i * 7,
                offset: 40 + u32::try_from(i).expect("small") * 4096,
            })
            .collect();
        let footer = footer.then_some(IndexFooter {
            end_seq: 10 + count * 7,
            seal_offset: 40 + u32::try_from(count).expect("small") * 4096,
        });
        let mut bytes = file_with(&entries, footer);
        if let Some(at) = damage_at {
            let at = usize::from(at) % bytes.len();
            bytes[at] ^= 0x5a;
        }
        bytes.truncate(bytes.len() - usize::from(cut) % 40.min(bytes.len()));
        let mut sizes: Vec<usize> = read_sizes.iter().map(|s| usize::from(*s) + 1).collect();
        if sizes.is_empty() {
            sizes.push(usize::MAX);
        }
        let told = (bytes.len() as u64).saturating_sub(u64::from(cut) % 100);
        let reader = Trickle {
            bytes: &bytes,
            sizes: sizes.into_iter().cycle(),
        };
        read_file(reader, told, 10, 77) == decode_file(&bytes, 10, 77)
    }

    #[test]
    fn the_interpolated_search_agrees_with_a_binary_search() {
        quickcheck::QuickCheck::new()
            .tests(2_000)
            .quickcheck(interpolated_agrees as fn(Vec<u16>, Vec<u64>));
    }

    fn interpolated_agrees(gaps: Vec<u16>, probes: Vec<u64>) {
        let mut seq = 5u64;
        let entries: Vec<IndexEntry> = gaps
            .iter()
            .enumerate()
            .map(|(i, gap)| {
                seq += u64::from(*gap) + 1;
                IndexEntry {
                    seq,
                    offset: u32::try_from(i).expect("small") * 64,
                }
            })
            .collect();
        let index = SparseIndex::from_entries(entries.clone());
        let last = entries.last().map_or(0, |e| e.seq);
        for probe in probes
            .iter()
            .map(|p| p % (last + 10))
            .chain([0, 5, 6, last, last + 1])
        {
            let expected = entries.partition_point(|e| e.seq <= probe);
            assert_eq!(index.count_at_or_below(probe), expected, "probe {probe}");
        }
    }

    #[test]
    fn count_below_agrees_with_partition_point_for_any_sorted_keys() {
        quickcheck::QuickCheck::new()
            .tests(2_000)
            .quickcheck(count_below_agrees as fn(Vec<u64>, Vec<u64>, bool));
    }

    /// Any keys: repeated, skewed (the `small` half squeezes them into a few values), and
    /// probes at the extremes.
    fn count_below_agrees(mut keys: Vec<u64>, probes: Vec<u64>, small: bool) {
        if small {
            keys.iter_mut().for_each(|k| *k %= 8);
        }
        keys.sort_unstable();
        let extremes = [0, 1, u64::MAX - 1, u64::MAX];
        let neighbours = keys
            .iter()
            .flat_map(|k| [k.saturating_sub(1), *k, k.saturating_add(1)]);
        for probe in probes.into_iter().chain(extremes).chain(neighbours) {
            let expected = keys.partition_point(|k| *k < probe);
            assert_eq!(
                count_below(&keys, probe, |k| *k),
                expected,
                "probe {probe} in {keys:?}"
            );
        }
    }

    #[test]
    fn interval_finds_the_nearest_entry_at_or_below_and_the_next() {
        let index = SparseIndex::from_entries(vec![
            IndexEntry {
                seq: 10,
                offset: 40,
            },
            IndexEntry {
                seq: 20,
                offset: 4200,
            },
        ]);
        let floor = |seq| index.interval(seq).0.map(|e| e.seq);
        assert_eq!(floor(9), None);
        assert_eq!(floor(10), Some(10));
        assert_eq!(floor(19), Some(10));
        assert_eq!(floor(99), Some(20));
        // Where the interval holding the sequence ends: the next entry's frame.
        assert_eq!(index.interval(9).1, Some(40));
        assert_eq!(index.interval(19).1, Some(4200));
        assert_eq!(index.interval(20).1, None);
    }
}
