//! The log's small metadata files (format/directory.md): the logical start, the
//! clean-shutdown marker and the watermark file. The first two are replaced atomically
//! through `durable::replace_file`; the watermark file is rewritten in place. Each carries its
//! own magic, versions and checksum.

use super::error::CorruptKind;
use super::header::{FORMAT_VERSION, PLAIN_VERSION};

/// Magic number of the start file.
pub const START_MAGIC: [u8; 8] = *b"\x89ESLSTA\n";
/// Magic number of the clean-shutdown file.
pub const CLEAN_MAGIC: [u8; 8] = *b"\x89ESLCLN\n";
/// Magic number of the watermark file.
pub const DURABLE_MAGIC: [u8; 8] = *b"\x89ESLDUR\n";

/// Bytes in the start file.
pub const START_LEN: usize = 32;
/// Bytes in the clean-shutdown file.
pub const CLEAN_LEN: usize = 56;
/// Bytes in the watermark file.
pub const DURABLE_LEN: usize = 32;

/// Reads a metadata file of the log ([META-03]): a regular file, of which more than a page
/// is read by no one (a longer file fails to decode, as any damaged one does).
pub(crate) fn read_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    super::bounded::read_regular_file_limited(path, 4096)
}

fn seal_crc(out: &mut [u8]) {
    let split = out.len() - 4;
    let crc = crc32fast::hash(&out[..split]);
    out[split..].copy_from_slice(&crc.to_le_bytes());
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

fn check(
    bytes: &[u8],
    magic: [u8; 8],
    len: usize,
    reserved_from: usize,
) -> Result<(), CorruptKind> {
    if bytes.len() != len {
        return Err(CorruptKind::LengthOutOfBounds {
            len: bytes.len() as u64,
            max: len as u64,
        });
    }
    if bytes.get(0..8) != Some(magic.as_slice()) {
        return Err(CorruptKind::BadMagic);
    }
    let split = len - 4;
    let stored = bytes
        .get(split..)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes);
    let computed = crc32fast::hash(bytes.get(..split).unwrap_or_default());
    if stored != computed {
        return Err(CorruptKind::ChecksumMismatch { stored, computed });
    }
    let read_version = bytes
        .get(8..10)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u16::from_le_bytes);
    if read_version == 0 || read_version > FORMAT_VERSION {
        return Err(CorruptKind::UnsupportedVersion {
            found: read_version,
            supported: FORMAT_VERSION,
        });
    }
    // Reserved: bytes 12..16 and everything between the last field and the checksum.
    let reserved = bytes
        .get(12..16)
        .into_iter()
        .chain(bytes.get(reserved_from..split))
        .flatten()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    if reserved != 0 {
        return Err(CorruptKind::ReservedBits { bits: reserved });
    }
    Ok(())
}

fn prologue(out: &mut [u8], magic: [u8; 8]) {
    out[0..8].copy_from_slice(&magic);
    out[8..10].copy_from_slice(&PLAIN_VERSION.to_le_bytes());
    out[10..12].copy_from_slice(&PLAIN_VERSION.to_le_bytes());
}

/// The logical start: no sequence below it is ever returned again [META-01].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartMark {
    /// The first sequence readers may see.
    pub start: u64,
}

impl StartMark {
    /// Encodes the start file.
    #[must_use]
    pub fn encode(&self) -> [u8; START_LEN] {
        let mut out = [0u8; START_LEN];
        prologue(&mut out, START_MAGIC);
        out[16..24].copy_from_slice(&self.start.to_le_bytes());
        seal_crc(&mut out);
        out
    }

    /// Decodes the start file.
    ///
    /// # Errors
    ///
    /// The kind of damage.
    pub fn decode(bytes: &[u8]) -> Result<StartMark, CorruptKind> {
        check(bytes, START_MAGIC, START_LEN, 24)?;
        Ok(StartMark {
            start: u64_at(bytes, 16),
        })
    }
}

/// Written at clean shutdown so the next open need not scan [META-02].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CleanMark {
    /// The last segment's base sequence.
    pub segment: u64,
    /// The last segment's salt.
    pub salt: u64,
    /// Where the last segment's frames end.
    pub end_offset: u64,
    /// The next sequence to assign.
    pub next_seq: u64,
}

impl CleanMark {
    /// Encodes the clean-shutdown file.
    #[must_use]
    pub fn encode(&self) -> [u8; CLEAN_LEN] {
        let mut out = [0u8; CLEAN_LEN];
        prologue(&mut out, CLEAN_MAGIC);
        out[16..24].copy_from_slice(&self.segment.to_le_bytes());
        out[24..32].copy_from_slice(&self.salt.to_le_bytes());
        out[32..40].copy_from_slice(&self.end_offset.to_le_bytes());
        out[40..48].copy_from_slice(&self.next_seq.to_le_bytes());
        seal_crc(&mut out);
        out
    }

    /// Decodes the clean-shutdown file.
    ///
    /// # Errors
    ///
    /// The kind of damage.
    pub fn decode(bytes: &[u8]) -> Result<CleanMark, CorruptKind> {
        check(bytes, CLEAN_MAGIC, CLEAN_LEN, 48)?;
        Ok(CleanMark {
            segment: u64_at(bytes, 16),
            salt: u64_at(bytes, 24),
            end_offset: u64_at(bytes, 32),
            next_seq: u64_at(bytes, 40),
        })
    }
}

/// The writer's durable watermark, for followers in any process [META-04].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DurableWatermark {
    /// Every sequence below this was durable when the file was written.
    pub durable: u64,
}

impl DurableWatermark {
    /// Encodes the watermark file.
    #[must_use]
    pub fn encode(&self) -> [u8; DURABLE_LEN] {
        let mut out = [0u8; DURABLE_LEN];
        prologue(&mut out, DURABLE_MAGIC);
        out[16..24].copy_from_slice(&self.durable.to_le_bytes());
        seal_crc(&mut out);
        out
    }

    /// Decodes the watermark file.
    ///
    /// # Errors
    ///
    /// The kind of damage.
    pub fn decode(bytes: &[u8]) -> Result<DurableWatermark, CorruptKind> {
        check(bytes, DURABLE_MAGIC, DURABLE_LEN, 24)?;
        Ok(DurableWatermark {
            durable: u64_at(bytes, 16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_damage() {
        let start = StartMark { start: 4242 };
        assert_eq!(StartMark::decode(&start.encode()), Ok(start));
        let clean = CleanMark {
            segment: 1,
            salt: 2,
            end_offset: 3,
            next_seq: 4,
        };
        let bytes = clean.encode();
        assert_eq!(CleanMark::decode(&bytes), Ok(clean));
        for i in 0..bytes.len() {
            let mut damaged = bytes;
            damaged[i] ^= 4;
            assert!(CleanMark::decode(&damaged).is_err(), "byte {i}");
        }
        assert!(StartMark::decode(&bytes).is_err());
        let mark = DurableWatermark { durable: 77 };
        let bytes = mark.encode();
        assert_eq!(DurableWatermark::decode(&bytes), Ok(mark));
        assert!(StartMark::decode(&bytes).is_err());
        for i in 0..bytes.len() {
            let mut damaged = bytes;
            damaged[i] ^= 0x10;
            assert!(DurableWatermark::decode(&damaged).is_err(), "byte {i}");
        }
    }
}
