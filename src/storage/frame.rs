//! Record frames: the CRC-protected envelope of every record in a segment (format/segment.md).
//!
//! A frame is an 8-byte header (checksum, then length-and-flags) followed by the payload.
//! The checksum covers the segment's salt, the length-and-flags word and the payload, and is
//! then mixed with the frame's sequence number, which is implicit (base sequence plus
//! position). A frame copied from another segment or another position therefore never
//! validates [FRM-03], and zeroed space never validates because the PRESENT bit is clear
//! [FRM-02]. Decoders work on `&[u8]` and never know where the bytes came from.

use super::error::CorruptKind;

/// Bytes in a frame header.
pub const FRAME_HEADER_LEN: usize = 8;
/// The largest payload length the length field can express (2^28 - 1 bytes).
pub const FRAME_PAYLOAD_LIMIT: u32 = (1 << 28) - 1;

const LEN_MASK: u32 = FRAME_PAYLOAD_LIMIT;
/// The payload is zstd-compressed.
const FLAG_COMPRESSED: u32 = 1 << 28;
/// The frame is the seal that ends a segment; its payload is empty.
const FLAG_SEAL: u32 = 1 << 29;
/// Reserved; must be zero [FRM-04].
const FLAG_RESERVED: u32 = 1 << 30;
/// Set in every frame, so that zeroed space never parses as a frame [FRM-02].
const FLAG_PRESENT: u32 = 1 << 31;

const SEQ_TAG_MULTIPLIER: u32 = 0x9E37_79B1;
/// The multiplicative inverse of `SEQ_TAG_MULTIPLIER` modulo 2^32.
const SEQ_TAG_INVERSE: u32 = inverse_mod_2_32(SEQ_TAG_MULTIPLIER);

const fn inverse_mod_2_32(odd: u32) -> u32 {
    // Newton's iteration doubles the number of correct low bits each step: 5 steps give 32.
    let mut x = odd;
    let mut i = 0;
    while i < 5 {
        x = x.wrapping_mul(2u32.wrapping_sub(odd.wrapping_mul(x)));
        i += 1;
    }
    x
}
const _: () = assert!(SEQ_TAG_MULTIPLIER.wrapping_mul(SEQ_TAG_INVERSE) == 1);
const _: () = assert!(FRAME_HEADER_LEN == 8);

/// The 32-bit tag a sequence contributes to its frame's checksum [FRM-03].
#[must_use]
pub fn seq_tag(seq: u64) -> u32 {
    let folded = (seq as u32) ^ ((seq >> 32) as u32);
    folded.wrapping_mul(SEQ_TAG_MULTIPLIER)
}

/// What kind of frame a header announces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameKind {
    /// A record whose payload is stored as is.
    Plain,
    /// A record whose payload is zstd-compressed.
    Compressed,
    /// The seal ending a segment.
    Seal,
}

impl FrameKind {
    fn flags(self) -> u32 {
        match self {
            FrameKind::Plain => FLAG_PRESENT,
            FrameKind::Compressed => FLAG_PRESENT | FLAG_COMPRESSED,
            FrameKind::Seal => FLAG_PRESENT | FLAG_SEAL,
        }
    }
}

/// The result of decoding the bytes at a frame position.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record frame.
    Record {
        /// Whether the payload is compressed.
        compressed: bool,
        /// The stored payload bytes.
        payload: &'a [u8],
        /// Total bytes of the frame, header included.
        frame_len: usize,
    },
    /// A valid seal: the segment ends here.
    Seal,
    /// The header is all zero: nothing was written here.
    Empty,
    /// The bytes are not a valid frame for this position.
    Invalid(CorruptKind),
}

/// The checksum state after a segment's salt, which every frame checksum of the segment
/// starts from [FRM-03]: computed once per segment, so checking a frame is one pass over its
/// length-and-flags word and payload, which lie next to each other in the frame.
#[derive(Clone)]
pub(crate) struct FrameCrc(crc32fast::Hasher);

impl FrameCrc {
    /// The state after hashing `salt`.
    #[must_use]
    pub(crate) fn new(salt: u64) -> FrameCrc {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&salt.to_le_bytes());
        FrameCrc(hasher)
    }

    /// The checksum of a frame whose length-and-flags word and payload are `tail` (the frame
    /// from its byte 4 on), for sequence `seq`.
    #[inline]
    fn of(&self, tail: &[u8], seq: u64) -> u32 {
        let mut hasher = self.0.clone();
        hasher.update(tail);
        hasher.finalize() ^ seq_tag(seq)
    }
}

impl std::fmt::Debug for FrameCrc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrameCrc").finish_non_exhaustive()
    }
}

fn checksum(salt: u64, len_flags: u32, payload: &[u8], seq: u64) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(&len_flags.to_le_bytes());
    hasher.update(payload);
    hasher.finalize() ^ seq_tag(seq)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(raw))
}

/// Bytes a frame with this payload length occupies.
#[must_use]
pub(crate) fn frame_len(payload_len: usize) -> usize {
    FRAME_HEADER_LEN + payload_len
}

/// Appends the frame for `payload` to `out`, checksummed from the segment's state `crc`.
///
/// # Panics
///
/// Panics if the payload exceeds [`FRAME_PAYLOAD_LIMIT`], a caller bug (the writer validates
/// lengths first).
pub(crate) fn encode_append(
    out: &mut Vec<u8>,
    crc: &FrameCrc,
    seq: u64,
    kind: FrameKind,
    payload: &[u8],
) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    assert!(
        len <= FRAME_PAYLOAD_LIMIT,
        "payload exceeds the frame limit"
    );
    let len_flags = len | kind.flags();
    let start = out.len();
    out.reserve(frame_len(payload.len()));
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&len_flags.to_le_bytes());
    out.extend_from_slice(payload);
    // The length-and-flags word and the payload, checksummed in one pass.
    let sum = crc.of(out.get(start + 4..).unwrap_or_default(), seq);
    if let Some(slot) = out.get_mut(start..start + 4) {
        slot.copy_from_slice(&sum.to_le_bytes());
    }
}

/// Encodes one frame (for format vectors and tests).
#[must_use]
pub fn encode(salt: u64, seq: u64, kind: FrameKind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_append(&mut out, &FrameCrc::new(salt), seq, kind, payload);
    out
}

/// Decodes the frame at the start of `bytes`, expected to carry sequence `seq`.
///
/// `bytes` extends to the end of the readable region; `max_payload` bounds the length field
/// before anything is read past the header [FRM-05].
#[must_use]
pub fn decode(bytes: &[u8], salt: u64, seq: u64, max_payload: u32) -> Decoded<'_> {
    decode_with(bytes, &FrameCrc::new(salt), seq, max_payload)
}

/// A record frame as readers take it: whether its payload is compressed, the payload, and
/// the frame's length.
pub(crate) type RecordFrame<'a> = (bool, &'a [u8], usize);

/// Decodes the frame at the start of `bytes`, which should hold the record of `seq`,
/// `available` bytes before the published end; an error says what is wrong with it. A seal
/// or zeroed space there means the bytes are not the frame that was published.
#[inline]
pub(crate) fn decode_record<'a>(
    bytes: &'a [u8],
    crc: &FrameCrc,
    seq: u64,
    max_payload: u32,
    available: u64,
) -> Result<RecordFrame<'a>, CorruptKind> {
    match decode_with(bytes, crc, seq, max_payload) {
        Decoded::Record {
            compressed,
            payload,
            frame_len,
        } => Ok((compressed, payload, frame_len)),
        Decoded::Invalid(kind) => Err(kind),
        Decoded::Seal | Decoded::Empty => Err(CorruptKind::LengthOutOfBounds {
            len: 0,
            max: available,
        }),
    }
}

/// [`decode`] with the segment's checksum state computed beforehand (readers decode many
/// frames of one segment).
#[must_use]
#[inline]
pub(crate) fn decode_with<'a>(
    bytes: &'a [u8],
    crc: &FrameCrc,
    seq: u64,
    max_payload: u32,
) -> Decoded<'a> {
    let (Some(stored), Some(len_flags)) = (read_u32(bytes, 0), read_u32(bytes, 4)) else {
        return if bytes.iter().all(|b| *b == 0) {
            Decoded::Empty
        } else {
            Decoded::Invalid(CorruptKind::LengthOutOfBounds {
                len: FRAME_HEADER_LEN as u64,
                max: bytes.len() as u64,
            })
        };
    };
    if stored == 0 && len_flags == 0 {
        return Decoded::Empty;
    }
    if len_flags & FLAG_PRESENT == 0 || len_flags & FLAG_RESERVED != 0 {
        return Decoded::Invalid(CorruptKind::ReservedBits {
            bits: u64::from(len_flags & !(LEN_MASK | FLAG_COMPRESSED | FLAG_SEAL)),
        });
    }
    let len = len_flags & LEN_MASK;
    let available = bytes.len().saturating_sub(FRAME_HEADER_LEN);
    let limit = max_payload.min(FRAME_PAYLOAD_LIMIT);
    if len > limit || len as usize > available {
        return Decoded::Invalid(CorruptKind::LengthOutOfBounds {
            len: u64::from(len),
            max: u64::from(limit).min(available as u64),
        });
    }
    // The length-and-flags word and the payload, checksummed in one pass.
    let Some(tail) = bytes.get(4..FRAME_HEADER_LEN + len as usize) else {
        return Decoded::Invalid(CorruptKind::LengthOutOfBounds {
            len: u64::from(len),
            max: 0,
        });
    };
    let payload = tail.get(4..).unwrap_or_default();
    let computed = crc.of(tail, seq);
    if computed != stored {
        return Decoded::Invalid(CorruptKind::ChecksumMismatch { stored, computed });
    }
    let seal = len_flags & FLAG_SEAL != 0;
    let compressed = len_flags & FLAG_COMPRESSED != 0;
    if seal {
        if len != 0 || compressed {
            return Decoded::Invalid(CorruptKind::ReservedBits {
                bits: u64::from(len_flags),
            });
        }
        return Decoded::Seal;
    }
    Decoded::Record {
        compressed,
        payload,
        frame_len: frame_len(len as usize),
    }
}

/// The sequence of the valid frame at the start of `bytes`, if its sequence is in
/// `(after, after + window]`.
///
/// Recovery uses this to tell a torn tail (nothing valid follows the damage) from damage
/// before the tail (valid frames follow) [REC-03]. The checksum is computed once and the
/// sequence recovered by inverting its tag, so each candidate position costs one CRC.
#[must_use]
pub(crate) fn valid_frame_after(
    bytes: &[u8],
    salt: u64,
    after: u64,
    window: u64,
    max_payload: u32,
) -> Option<u64> {
    let (stored, len_flags) = (read_u32(bytes, 0)?, read_u32(bytes, 4)?);
    if !plausible(len_flags, max_payload) {
        return None;
    }
    let payload =
        bytes.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + (len_flags & LEN_MASK) as usize)?;
    // seq_tag(0) is 0, so this leaves the candidate's own tag.
    let tag = stored ^ checksum(salt, len_flags, payload, 0);
    let folded = tag.wrapping_mul(SEQ_TAG_INVERSE);
    // Candidates share the high half of `after` (or the next one, across a 2^32 boundary).
    [after >> 32, (after >> 32) + 1]
        .into_iter()
        .find_map(|high| {
            let seq = (high << 32) | u64::from(folded ^ (high as u32));
            (seq > after && seq - after <= window).then_some(seq)
        })
}

/// Whether a length-and-flags word could belong to a record or seal frame: the PRESENT bit
/// set, the reserved bit clear and the length within the limit. Cheap, so recovery checks it
/// before spending a checksum on a candidate.
#[must_use]
pub(crate) fn plausible(len_flags: u32, max_payload: u32) -> bool {
    len_flags & FLAG_PRESENT != 0
        && len_flags & FLAG_RESERVED == 0
        && len_flags & LEN_MASK <= max_payload.min(FRAME_PAYLOAD_LIMIT)
}

/// The length-and-flags word of the frame header at the start of `bytes`.
#[must_use]
pub(crate) fn len_flags(bytes: &[u8]) -> Option<u32> {
    read_u32(bytes, 4)
}

/// The payload length a length-and-flags word announces.
#[must_use]
pub(crate) fn payload_len(len_flags: u32) -> usize {
    (len_flags & LEN_MASK) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    const SALT: u64 = 0x0123_4567_89ab_cdef;

    #[test]
    fn round_trip_record_and_seal() {
        let bytes = encode(SALT, 7, FrameKind::Plain, b"hello");
        assert_eq!(
            decode(&bytes, SALT, 7, 1 << 20),
            Decoded::Record {
                compressed: false,
                payload: b"hello",
                frame_len: 13
            }
        );
        let seal = encode(SALT, 8, FrameKind::Seal, b"");
        assert_eq!(decode(&seal, SALT, 8, 1 << 20), Decoded::Seal);
    }

    /// [FRM-02] zeroed space is Empty, never a frame.
    #[test]
    fn zeroed_space_is_empty() {
        assert_eq!(decode(&[0; 64], SALT, 1, 1 << 20), Decoded::Empty);
        assert_eq!(decode(&[0; 3], SALT, 1, 1 << 20), Decoded::Empty);
    }

    /// [FRM-03] a frame does not validate at another sequence or under another salt.
    #[test]
    fn frame_is_bound_to_sequence_and_salt() {
        let bytes = encode(SALT, 7, FrameKind::Plain, b"hello");
        assert!(matches!(
            decode(&bytes, SALT, 8, 1 << 20),
            Decoded::Invalid(_)
        ));
        assert!(matches!(
            decode(&bytes, SALT ^ 1, 7, 1 << 20),
            Decoded::Invalid(_)
        ));
    }

    /// [FRM-04] reserved bits must be zero.
    #[test]
    fn reserved_bit_is_rejected() {
        let mut bytes = encode(SALT, 7, FrameKind::Plain, b"x");
        bytes[7] |= 0x40;
        assert!(matches!(
            decode(&bytes, SALT, 7, 1 << 20),
            Decoded::Invalid(CorruptKind::ReservedBits { .. })
        ));
    }

    /// [FRM-05] the length is bounded before the payload is touched.
    #[test]
    fn oversized_length_is_rejected() {
        let bytes = encode(SALT, 7, FrameKind::Plain, &[1; 100]);
        assert!(matches!(
            decode(&bytes, SALT, 7, 50),
            Decoded::Invalid(CorruptKind::LengthOutOfBounds { .. })
        ));
        assert!(matches!(
            decode(&bytes[..50], SALT, 7, 1 << 20),
            Decoded::Invalid(CorruptKind::LengthOutOfBounds { .. })
        ));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let bytes = encode(SALT, 42, FrameKind::Plain, b"some payload");
        for i in 0..bytes.len() * 8 {
            let mut damaged = bytes.clone();
            damaged[i / 8] ^= 1 << (i % 8);
            assert!(
                !matches!(decode(&damaged, SALT, 42, 1 << 20), Decoded::Record { .. }),
                "bit {i} flip went unnoticed"
            );
        }
    }

    /// The one-pass checksum from the salt's precomputed state equals the checksum over
    /// salt, length-and-flags and payload.
    #[test]
    fn precomputed_salt_state_gives_the_same_checksum() {
        for len in [
            0usize, 1, 7, 15, 16, 63, 64, 127, 128, 255, 256, 370, 1000, 5000,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
            let bytes = encode(SALT, 9, FrameKind::Plain, &payload);
            let len_flags = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
            assert_eq!(
                FrameCrc::new(SALT).of(&bytes[4..], 9),
                checksum(SALT, len_flags, &payload, 9),
                "len {len}"
            );
        }
    }

    #[test]
    fn valid_frame_after_recovers_the_sequence() {
        let bytes = encode(SALT, 1_000, FrameKind::Plain, b"abc");
        assert_eq!(
            valid_frame_after(&bytes, SALT, 999, 1, 1 << 20),
            Some(1_000)
        );
        assert_eq!(
            valid_frame_after(&bytes, SALT, 990, 64, 1 << 20),
            Some(1_000)
        );
        assert_eq!(valid_frame_after(&bytes, SALT, 1_000, 64, 1 << 20), None);
        assert_eq!(valid_frame_after(&bytes, SALT, 900, 64, 1 << 20), None);
        let high = encode(SALT, (1 << 32) + 3, FrameKind::Plain, b"abc");
        assert_eq!(
            valid_frame_after(&high, SALT, (1 << 32) - 2, 8, 1 << 20),
            Some((1 << 32) + 3)
        );
    }
}
