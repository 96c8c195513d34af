//! Input layouts shared by the fuzz targets and the seed writer (`examples/seeds.rs`), so a
//! seed is always encoded the way its target parses it.
//!
//! Every parser here accepts any byte string: missing bytes read as zero.

use std::path::Path;

use esl_replay::storage::codec::{
    self, CleanMark, FileHeader, INDEX_MAGIC, IndexEntry, IndexFooter, SEGMENT_MAGIC,
};

/// The salt of the fuzzed segment (seeds encode their frames with it).
pub const SALT: u64 = 0x5eed_0123_4567_89ab;
/// The base sequence of the fuzzed segment, which is also its file name.
pub const BASE: u64 = 1;
/// `LogOptions::max_payload_bytes` used by the segment target.
pub const MAX_PAYLOAD: u32 = 4096;
/// `LogOptions::segment_bytes` used by the segment target (the minimum).
pub const SEGMENT_BYTES: u64 = 64 << 10;

/// Reads little-endian fields off the front of the input; missing bytes are zero.
#[derive(Debug)]
pub struct Bytes<'a>(pub &'a [u8]);

impl<'a> Bytes<'a> {
    /// The next `n` bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// The next little-endian u32.
    pub fn u32(&mut self) -> u32 {
        let mut raw = [0u8; 4];
        let head = self.take(4);
        raw[..head.len()].copy_from_slice(head);
        u32::from_le_bytes(raw)
    }

    /// The next little-endian u64.
    pub fn u64(&mut self) -> u64 {
        let mut raw = [0u8; 8];
        let head = self.take(8);
        raw[..head.len()].copy_from_slice(head);
        u64::from_le_bytes(raw)
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.0.len())
    }
}

/// Flag: zero-pad the segment file to `SEGMENT_BYTES`, as the writer preallocates it.
pub const PAD: u8 = 1;
/// Flag: write a clean-shutdown marker.
pub const CLEAN: u8 = 2;
/// Flag: write an index file for the segment.
pub const INDEX: u8 = 4;
/// Flag: the index file ends with a footer.
pub const FOOTER: u8 = 8;
/// Flag: read with `ReadStrategy::Pread` instead of memory maps.
pub const PREAD: u8 = 16;

/// One `segment_scan` case: a log directory holding one segment (`BASE`, `SALT`) whose
/// bytes after the valid header are fuzzed, plus optional, validly checksummed metadata whose
/// fields are fuzzed.
///
/// Layout: `[flags u8]`, then if `CLEAN` `[end_offset u32][next_seq u32]`, then if `INDEX`
/// `[count u8]` and `count % 8` entries `[seq u32][offset u32]`, then if `FOOTER`
/// `[end_seq u32][seal_offset u32]`, then the segment body.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentCase {
    /// `PAD`, `CLEAN`, `INDEX`, `FOOTER`, `PREAD`.
    pub flags: u8,
    /// The clean marker's end offset and next sequence.
    pub clean: (u32, u32),
    /// Index entries as (sequence, offset).
    pub entries: Vec<(u32, u32)>,
    /// The index footer as (end sequence, seal offset).
    pub footer: (u32, u32),
    /// The segment's bytes after its header.
    pub body: Vec<u8>,
}

impl SegmentCase {
    /// Parses any input.
    #[must_use]
    pub fn parse(data: &[u8]) -> SegmentCase {
        let mut input = Bytes(data);
        let mut case = SegmentCase {
            flags: input.u8(),
            ..SegmentCase::default()
        };
        if case.flags & CLEAN != 0 {
            case.clean = (input.u32(), input.u32());
        }
        if case.flags & INDEX != 0 {
            let count = input.u8() % 8;
            for _ in 0..count {
                case.entries.push((input.u32(), input.u32()));
            }
            if case.flags & FOOTER != 0 {
                case.footer = (input.u32(), input.u32());
            }
        }
        case.body = input.rest().to_vec();
        case
    }

    /// Encodes the case in the layout [`SegmentCase::parse`] reads.
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.flags];
        if self.flags & CLEAN != 0 {
            out.extend_from_slice(&self.clean.0.to_le_bytes());
            out.extend_from_slice(&self.clean.1.to_le_bytes());
        }
        if self.flags & INDEX != 0 {
            let count = u8::try_from(self.entries.len().min(7)).unwrap_or(7);
            out.push(count);
            for (seq, offset) in self.entries.iter().take(7) {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
            }
            if self.flags & FOOTER != 0 {
                out.extend_from_slice(&self.footer.0.to_le_bytes());
                out.extend_from_slice(&self.footer.1.to_le_bytes());
            }
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// The segment file's bytes: a valid header, then the body (padded if asked).
    #[must_use]
    pub fn segment_bytes(&self) -> Vec<u8> {
        let mut bytes = FileHeader::new(BASE, SALT).encode(SEGMENT_MAGIC).to_vec();
        bytes.extend_from_slice(&self.body);
        if self.flags & PAD != 0 && (bytes.len() as u64) < SEGMENT_BYTES {
            bytes.resize(SEGMENT_BYTES as usize, 0);
        }
        bytes
    }

    /// Writes the log directory this case describes into `dir` (which must exist).
    ///
    /// # Panics
    ///
    /// If the scratch files cannot be written.
    pub fn write_to(&self, dir: &Path) {
        std::fs::write(codec::segment_path(dir, BASE), self.segment_bytes())
            .expect("write segment");
        if self.flags & CLEAN != 0 {
            let mark = CleanMark {
                segment: BASE,
                salt: SALT,
                end_offset: u64::from(self.clean.0),
                next_seq: u64::from(self.clean.1),
            };
            std::fs::write(dir.join(codec::CLEAN_FILE), mark.encode()).expect("write clean");
        }
        if self.flags & INDEX != 0 {
            let mut index = FileHeader::new(BASE, SALT).encode(INDEX_MAGIC).to_vec();
            for (seq, offset) in &self.entries {
                let entry = IndexEntry {
                    seq: u64::from(*seq),
                    offset: *offset,
                };
                index.extend_from_slice(&entry.encode(SALT));
            }
            if self.flags & FOOTER != 0 {
                let footer = IndexFooter {
                    end_seq: u64::from(self.footer.0),
                    seal_offset: self.footer.1,
                };
                index.extend_from_slice(&footer.encode(SALT));
            }
            std::fs::write(codec::index_path(dir, BASE), index).expect("write index");
        }
    }
}

/// `frame_decode` input: `[salt u64][seq u64][max_payload u32]`, then the frame bytes.
#[must_use]
pub fn frame_input(salt: u64, seq: u64, max_payload: u32, frame: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&salt.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&max_payload.to_le_bytes());
    out.extend_from_slice(frame);
    out
}

/// `index_decode` input: `[mode u8][base u64][salt u64]`, then the index file. With mode bit
/// 0 set, the base and salt are instead those the file's own header claims.
#[must_use]
pub fn index_input(mode: u8, base: u64, salt: u64, file: &[u8]) -> Vec<u8> {
    let mut out = vec![mode];
    out.extend_from_slice(&base.to_le_bytes());
    out.extend_from_slice(&salt.to_le_bytes());
    out.extend_from_slice(file);
    out
}
