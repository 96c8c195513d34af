//! The 40-byte file header shared by segment and index files (format/segment.md, format/index.md).
//!
//! Both start with an 8-byte magic number, a read version and a write version (SQLite's
//! split: an unknown read version refuses the file, an unknown write version only refuses
//! writing), the segment's base sequence and salt, and a CRC-32 of the preceding bytes.

use super::error::CorruptKind;

/// Bytes in a file header.
pub const HEADER_LEN: usize = 40;
/// The newest format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 3;
/// The version of every file except packed segments: they need nothing newer, so readers of
/// version 1 keep reading them.
pub const PLAIN_VERSION: u16 = 1;
/// The version of packed segments ([SEG-09]), whose compressed frames need the dictionary
/// after their seal.
pub const PACKED_VERSION: u16 = 2;
/// The version of recycled segments ([SEG-10]), whose frames may be followed by bytes an
/// earlier segment left rather than by zeros.
pub const RECYCLED_VERSION: u16 = 3;

/// Magic number of segment files.
pub const SEGMENT_MAGIC: [u8; 8] = *b"\x89ESLSEG\n";
/// Magic number of index files.
pub const INDEX_MAGIC: [u8; 8] = *b"\x89ESLIDX\n";

const CRC_OFFSET: usize = 36;
const _: () = assert!(CRC_OFFSET + 4 == HEADER_LEN);

/// A decoded file header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// Oldest format version a reader must understand to read the file.
    pub read_version: u16,
    /// Oldest format version a writer must understand to append to the file.
    pub write_version: u16,
    /// The first sequence the segment holds.
    pub base: u64,
    /// Random per-segment value mixed into every checksum of the segment.
    pub salt: u64,
}

impl FileHeader {
    /// A header of a segment or index file as appends write it ([`PLAIN_VERSION`]).
    #[must_use]
    pub fn new(base: u64, salt: u64) -> FileHeader {
        FileHeader {
            read_version: PLAIN_VERSION,
            write_version: PLAIN_VERSION,
            base,
            salt,
        }
    }

    /// A header of a packed segment ([`PACKED_VERSION`], [SEG-09]).
    #[must_use]
    pub fn packed(base: u64, salt: u64) -> FileHeader {
        FileHeader {
            read_version: PACKED_VERSION,
            write_version: PACKED_VERSION,
            base,
            salt,
        }
    }

    /// A header of a segment written into a removed segment's file ([`RECYCLED_VERSION`],
    /// [SEG-10]).
    #[must_use]
    pub fn recycled(base: u64, salt: u64) -> FileHeader {
        FileHeader {
            read_version: RECYCLED_VERSION,
            write_version: RECYCLED_VERSION,
            base,
            salt,
        }
    }

    /// Whether the file is a packed segment ([SEG-09]).
    #[must_use]
    pub fn is_packed(&self) -> bool {
        self.read_version == PACKED_VERSION
    }

    /// Whether the file is a recycled segment ([SEG-10]): what follows its frames is not
    /// necessarily zeros.
    #[must_use]
    pub fn is_recycled(&self) -> bool {
        self.read_version == RECYCLED_VERSION
    }

    /// Encodes the header with the given magic [HDR-01].
    #[must_use]
    pub fn encode(&self, magic: [u8; 8]) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..8].copy_from_slice(&magic);
        out[8..10].copy_from_slice(&self.read_version.to_le_bytes());
        out[10..12].copy_from_slice(&self.write_version.to_le_bytes());
        // 12..16 reserved, zero.
        out[16..24].copy_from_slice(&self.base.to_le_bytes());
        out[24..32].copy_from_slice(&self.salt.to_le_bytes());
        // 32..36 reserved, zero.
        let crc = crc32fast::hash(&out[..CRC_OFFSET]);
        out[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes and validates a header [HDR-02] [HDR-03] [HDR-04].
    ///
    /// # Errors
    ///
    /// The kind of damage: wrong magic, checksum mismatch, reserved bytes set, or a read
    /// version newer than [`FORMAT_VERSION`].
    pub fn decode(bytes: &[u8], magic: [u8; 8]) -> Result<FileHeader, CorruptKind> {
        let Some(bytes) = bytes.get(..HEADER_LEN) else {
            return Err(CorruptKind::LengthOutOfBounds {
                len: bytes.len() as u64,
                max: HEADER_LEN as u64,
            });
        };
        let field = |range: std::ops::Range<usize>| -> u64 {
            bytes.get(range).map_or(0, |b| {
                b.iter()
                    .rev()
                    .fold(0u64, |acc, x| (acc << 8) | u64::from(*x))
            })
        };
        if bytes.get(0..8) != Some(magic.as_slice()) {
            return Err(CorruptKind::BadMagic);
        }
        let stored = field(CRC_OFFSET..HEADER_LEN) as u32;
        let computed = crc32fast::hash(bytes.get(..CRC_OFFSET).unwrap_or_default());
        if stored != computed {
            return Err(CorruptKind::ChecksumMismatch { stored, computed });
        }
        let reserved = field(12..16) | field(32..36);
        if reserved != 0 {
            return Err(CorruptKind::ReservedBits { bits: reserved });
        }
        let read_version = field(8..10) as u16;
        if read_version == 0 || read_version > FORMAT_VERSION {
            return Err(CorruptKind::UnsupportedVersion {
                found: read_version,
                supported: FORMAT_VERSION,
            });
        }
        Ok(FileHeader {
            read_version,
            write_version: field(10..12) as u16,
            base: field(16..24),
            salt: field(24..32),
        })
    }

    /// Whether this build may append to a file with this header [HDR-04].
    #[must_use]
    pub fn writable(&self) -> bool {
        self.write_version <= FORMAT_VERSION
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let header = FileHeader::new(1024, 0xdead_beef);
        let bytes = header.encode(SEGMENT_MAGIC);
        assert_eq!(FileHeader::decode(&bytes, SEGMENT_MAGIC), Ok(header));
        assert_eq!(
            FileHeader::decode(&bytes, INDEX_MAGIC),
            Err(CorruptKind::BadMagic)
        );
    }

    /// [HDR-03] a newer read version is refused with both versions named.
    #[test]
    fn newer_read_version_is_refused() {
        let header = FileHeader {
            read_version: FORMAT_VERSION + 1,
            ..FileHeader::new(1, 1)
        };
        let bytes = header.encode(SEGMENT_MAGIC);
        assert_eq!(
            FileHeader::decode(&bytes, SEGMENT_MAGIC),
            Err(CorruptKind::UnsupportedVersion {
                found: FORMAT_VERSION + 1,
                supported: FORMAT_VERSION
            })
        );
    }

    /// [HDR-04] a newer write version reads but is not writable.
    #[test]
    fn newer_write_version_reads_but_is_not_writable() {
        let header = FileHeader {
            write_version: FORMAT_VERSION + 1,
            ..FileHeader::new(1, 1)
        };
        let decoded = FileHeader::decode(&header.encode(SEGMENT_MAGIC), SEGMENT_MAGIC).unwrap();
        assert!(!decoded.writable());
    }

    #[test]
    fn any_damage_is_detected() {
        let bytes = FileHeader::new(5, 9).encode(INDEX_MAGIC);
        for i in 0..bytes.len() {
            let mut damaged = bytes;
            damaged[i] ^= 0x10;
            assert!(
                FileHeader::decode(&damaged, INDEX_MAGIC).is_err(),
                "byte {i}"
            );
        }
    }
}
