//! Codec-level rules of the format (format/segment.md, format/index.md,
//! format/directory.md), checked through the public codecs of `esl_replay::storage::codec`
//! on hand-made bytes: what is empty space, what is a frame, what every decoder must
//! refuse, and how versions are treated. Each test names the requirement it checks.

use std::path::Path;

use esl_replay::storage::codec::{
    CLEAN_FILE, CLEAN_LEN, CleanMark, Decoded, FORMAT_VERSION, FRAME_HEADER_LEN,
    FRAME_PAYLOAD_LIMIT, FileHeader, FrameKind, HEADER_LEN, INDEX_MAGIC, IndexEntry, IndexFile,
    IndexFooter, PLAIN_VERSION, RETENTION_LOCK, SEGMENT_MAGIC, SPARE_FILE, START_FILE, START_LEN,
    StartMark, WRITER_LOCK, decode_frame, decode_index_file, encode_frame, index_path,
    segment_path, seq_tag,
};
use esl_replay::storage::{
    CorruptKind, Error, LogOptions, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SyncPolicy,
};

/// A format version newer than this build knows.
const NEWER_VERSION: u16 = FORMAT_VERSION + 1;

const SALT: u64 = 0x0123_4567_89ab_cdef;
const MAX: u32 = 1 << 20;

/// A frame header with an arbitrary `len_flags` and a checksum that matches it, so that
/// only the rule under test can reject it.
fn frame_with_flags(seq: u64, len_flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&SALT.to_le_bytes());
    crc.update(&len_flags.to_le_bytes());
    crc.update(payload);
    let mut bytes = (crc.finalize() ^ seq_tag(seq)).to_le_bytes().to_vec();
    bytes.extend_from_slice(&len_flags.to_le_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// [FRM-01] A frame is the 8-byte header and the payload, with no padding; an empty payload
/// is a valid record of eight bytes whose `len_flags` is PRESENT alone.
#[test]
fn frame_is_header_then_payload_without_padding() {
    assert_eq!(FRAME_HEADER_LEN, 8);
    for len in [0usize, 1, 7, 8, 9, 1000] {
        let payload = vec![0xA5; len];
        let bytes = encode_frame(SALT, 9, FrameKind::Plain, &payload);
        assert_eq!(bytes.len(), 8 + len);
        assert_eq!(&bytes[8..], payload.as_slice());
        let len_flags = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        assert_eq!(len_flags, 0x8000_0000 | u32::try_from(len).unwrap());
    }
    let empty = encode_frame(SALT, 9, FrameKind::Plain, b"");
    assert_eq!(&empty[4..8], &[0, 0, 0, 0x80]);
    assert_eq!(
        decode_frame(&empty, SALT, 9, MAX),
        Decoded::Record {
            compressed: false,
            payload: b"",
            frame_len: 8
        }
    );
}

/// [FRM-02] Zeroed space is empty, never a frame, whatever follows its eight zero bytes;
/// non-zero bytes without PRESENT are an invalid frame, not empty space.
#[test]
fn zeroed_space_is_never_a_frame() {
    for len in 0..=24 {
        assert_eq!(
            decode_frame(&vec![0; len], SALT, 1, MAX),
            Decoded::Empty,
            "{len}"
        );
    }
    let mut zero_header_then_data = vec![0u8; 8];
    zero_header_then_data.extend_from_slice(b"payload bytes");
    assert_eq!(
        decode_frame(&zero_header_then_data, SALT, 1, MAX),
        Decoded::Empty
    );
    // A checksum with a zero len_flags word lacks PRESENT.
    assert!(matches!(
        decode_frame(&[1, 0, 0, 0, 0, 0, 0, 0], SALT, 1, MAX),
        Decoded::Invalid(CorruptKind::ReservedBits { .. })
    ));
    // A length without PRESENT, even with a matching checksum.
    let no_present = frame_with_flags(1, 3, b"abc");
    assert!(matches!(
        decode_frame(&no_present, SALT, 1, MAX),
        Decoded::Invalid(CorruptKind::ReservedBits { .. })
    ));
    // Fewer than eight bytes that are not all zero.
    assert!(matches!(
        decode_frame(&[0, 0, 0, 0, 0, 1], SALT, 1, MAX),
        Decoded::Invalid(CorruptKind::LengthOutOfBounds { .. })
    ));
}

/// [FRM-03] The checksum binds a frame to its sequence and salt: any other position or
/// segment fails it, the tag of a sequence follows the formula of the specification, and
/// any single bit flip anywhere in a frame is detected.
#[test]
fn checksum_binds_salt_and_sequence() {
    assert_eq!(seq_tag(0), 0);
    for seq in [1u64, 1024, 0xFFFF_FFFF, 1 << 32, (7 << 32) | 5, u64::MAX] {
        let folded = u32::try_from((seq & 0xFFFF_FFFF) ^ (seq >> 32)).unwrap();
        assert_eq!(seq_tag(seq), folded.wrapping_mul(0x9E37_79B1), "{seq}");
    }
    // Sequences sharing their high half have distinct tags.
    let high = 3u64 << 32;
    let tags: std::collections::HashSet<u32> = (0..10_000).map(|i| seq_tag(high | i)).collect();
    assert_eq!(tags.len(), 10_000);

    let bytes = encode_frame(SALT, 1_000, FrameKind::Plain, b"Event-Name: CHANNEL_ANSWER");
    for seq in [999, 1_001, 1_000 + (1 << 32)] {
        assert!(matches!(
            decode_frame(&bytes, SALT, seq, MAX),
            Decoded::Invalid(CorruptKind::ChecksumMismatch { .. })
        ));
    }
    assert!(matches!(
        decode_frame(&bytes, SALT.rotate_left(1), 1_000, MAX),
        Decoded::Invalid(CorruptKind::ChecksumMismatch { .. })
    ));
    for bit in 0..bytes.len() * 8 {
        let mut damaged = bytes.clone();
        damaged[bit / 8] ^= 1 << (bit % 8);
        assert!(
            !matches!(
                decode_frame(&damaged, SALT, 1_000, MAX),
                Decoded::Record { .. }
            ),
            "bit {bit}"
        );
    }
}

/// [FRM-04] The reserved bit makes a frame invalid even when its checksum matches.
#[test]
fn reserved_flag_is_refused() {
    for flags in [0xC000_0000u32, 0xD000_0000, 0xE000_0000] {
        let bytes = frame_with_flags(5, flags | 2, b"ok");
        assert!(matches!(
            decode_frame(&bytes, SALT, 5, MAX),
            Decoded::Invalid(CorruptKind::ReservedBits { .. })
        ));
    }
}

/// [FRM-05] The length is checked against the reader's limit and the bytes available
/// before any payload byte is read: a header alone, claiming more, is refused.
#[test]
fn length_is_bounded_before_the_payload_is_read() {
    let header_only = frame_with_flags(5, 0x8000_0000 | 5_000, &[])[..8].to_vec();
    assert_eq!(
        decode_frame(&header_only, SALT, 5, 4_096),
        Decoded::Invalid(CorruptKind::LengthOutOfBounds { len: 5_000, max: 0 })
    );
    let full = frame_with_flags(5, 0x8000_0000 | 5_000, &[7; 5_000]);
    assert!(matches!(
        decode_frame(&full, SALT, 5, 4_999),
        Decoded::Invalid(CorruptKind::LengthOutOfBounds { len: 5_000, .. })
    ));
    assert!(matches!(
        decode_frame(&full, SALT, 5, 5_000),
        Decoded::Record { .. }
    ));
    assert!(matches!(
        decode_frame(&full[..full.len() - 1], SALT, 5, 5_000),
        Decoded::Invalid(CorruptKind::LengthOutOfBounds { .. })
    ));
    // The 28-bit field caps every limit, however large the configured one.
    assert_eq!(FRAME_PAYLOAD_LIMIT, (1 << 28) - 1);
    let huge = frame_with_flags(5, 0x8FFF_FFFF, &[])[..8].to_vec();
    assert!(matches!(
        decode_frame(&huge, SALT, 5, u32::MAX),
        Decoded::Invalid(CorruptKind::LengthOutOfBounds { .. })
    ));
}

/// [FRM-06] The COMPRESSED flag is carried by the frame; the frame's length and checksum
/// cover the stored bytes, and the decoder hands those bytes out unchanged.
#[test]
fn compressed_flag_covers_the_stored_bytes() {
    let stored = zstd::bulk::compress(&[b'x'; 4096], 3).unwrap();
    let bytes = encode_frame(SALT, 11, FrameKind::Compressed, &stored);
    assert_eq!(bytes[7] >> 4, 0x9);
    assert_eq!(
        decode_frame(&bytes, SALT, 11, MAX),
        Decoded::Record {
            compressed: true,
            payload: &stored,
            frame_len: 8 + stored.len()
        }
    );
}

/// [FRM-07] A seal has PRESENT and SEAL, no payload and no COMPRESSED flag; anything else
/// with SEAL set is invalid even with a matching checksum, and a seal validates only for
/// the next sequence.
#[test]
fn seal_has_no_payload_and_no_compression() {
    let seal = encode_frame(SALT, 77, FrameKind::Seal, b"");
    assert_eq!(&seal[4..8], &[0, 0, 0, 0xA0]);
    assert_eq!(decode_frame(&seal, SALT, 77, MAX), Decoded::Seal);
    assert!(matches!(
        decode_frame(&seal, SALT, 76, MAX),
        Decoded::Invalid(CorruptKind::ChecksumMismatch { .. })
    ));
    let with_payload = frame_with_flags(77, 0xA000_0001, b"x");
    assert!(matches!(
        decode_frame(&with_payload, SALT, 77, MAX),
        Decoded::Invalid(CorruptKind::ReservedBits { .. })
    ));
    let compressed = frame_with_flags(77, 0xB000_0000, b"");
    assert!(matches!(
        decode_frame(&compressed, SALT, 77, MAX),
        Decoded::Invalid(CorruptKind::ReservedBits { .. })
    ));
}

/// [HDR-01] [HDR-02] A header is 40 bytes; the wrong magic, any damaged byte, a non-zero
/// reserved byte (even under a matching CRC) and a short header are all refused.
#[test]
fn header_damage_is_refused() {
    let header = FileHeader::new(1024, SALT);
    assert_eq!(header.read_version, PLAIN_VERSION);
    assert_eq!(header.write_version, PLAIN_VERSION);
    let bytes = header.encode(SEGMENT_MAGIC);
    assert_eq!(bytes.len(), HEADER_LEN);
    assert_eq!(
        FileHeader::decode(&bytes, INDEX_MAGIC),
        Err(CorruptKind::BadMagic)
    );
    for i in 0..HEADER_LEN {
        let mut damaged = bytes;
        damaged[i] ^= 0x01;
        assert!(
            FileHeader::decode(&damaged, SEGMENT_MAGIC).is_err(),
            "byte {i}"
        );
    }
    for reserved in [12, 15, 32, 35] {
        let mut damaged = bytes;
        damaged[reserved] = 1;
        let crc = crc32fast::hash(&damaged[..36]);
        damaged[36..].copy_from_slice(&crc.to_le_bytes());
        assert!(
            matches!(
                FileHeader::decode(&damaged, SEGMENT_MAGIC),
                Err(CorruptKind::ReservedBits { .. })
            ),
            "reserved byte {reserved}"
        );
    }
    assert!(matches!(
        FileHeader::decode(&bytes[..39], SEGMENT_MAGIC),
        Err(CorruptKind::LengthOutOfBounds { .. })
    ));
}

/// [HDR-03] A newer read version is refused, and the error names both versions.
#[test]
fn unknown_read_version_is_refused_naming_both_versions() {
    for magic in [SEGMENT_MAGIC, INDEX_MAGIC] {
        let header = FileHeader {
            read_version: NEWER_VERSION,
            ..FileHeader::new(1, SALT)
        };
        let error = FileHeader::decode(&header.encode(magic), magic).unwrap_err();
        assert_eq!(
            error,
            CorruptKind::UnsupportedVersion {
                found: NEWER_VERSION,
                supported: FORMAT_VERSION
            }
        );
        let message = error.to_string();
        assert!(
            message.contains(&format!("version {NEWER_VERSION}"))
                && message.contains(&format!("up to {FORMAT_VERSION}")),
            "{message}"
        );
    }
}

/// [HDR-04] A newer write version still reads, but the file is not writable.
#[test]
fn unknown_write_version_reads_but_is_not_writable() {
    let header = FileHeader {
        write_version: NEWER_VERSION,
        ..FileHeader::new(1, SALT)
    };
    let decoded = FileHeader::decode(&header.encode(SEGMENT_MAGIC), SEGMENT_MAGIC).unwrap();
    assert_eq!(decoded, header);
    assert!(!decoded.writable());
    assert!(FileHeader::new(1, SALT).writable());
}

fn index_bytes(base: u64, slots: &[[u8; 16]]) -> Vec<u8> {
    let mut bytes = FileHeader::new(base, SALT).encode(INDEX_MAGIC).to_vec();
    for slot in slots {
        bytes.extend_from_slice(slot);
    }
    bytes
}

/// [IDX-02] [IDX-03] Entries and footers differ only in their checksum's domain byte and
/// are bound to the segment's salt.
#[test]
fn entry_and_footer_checksums_use_domains_and_the_salt() {
    let entry = IndexEntry {
        seq: 1030,
        offset: 500,
    };
    let footer = IndexFooter {
        end_seq: 1030,
        seal_offset: 500,
    };
    let entry_bytes = entry.encode(SALT);
    let footer_bytes = footer.encode(SALT);
    assert_eq!(entry_bytes[..12], footer_bytes[..12]);
    assert_ne!(entry_bytes[12..], footer_bytes[12..]);
    let crc = |domain: u8| {
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&SALT.to_le_bytes());
        hasher.update(&[domain]);
        hasher.update(&1030u64.to_le_bytes());
        hasher.update(&500u32.to_le_bytes());
        hasher.finalize().to_le_bytes()
    };
    assert_eq!(entry_bytes[12..], crc(0));
    assert_eq!(footer_bytes[12..], crc(1));
    assert_eq!(
        decode_index_file(&index_bytes(1024, &[entry_bytes]), 1024, SALT),
        Some(IndexFile {
            entries: vec![entry],
            footer: None
        })
    );
    assert_eq!(
        decode_index_file(&index_bytes(1024, &[footer_bytes]), 1024, SALT),
        Some(IndexFile {
            entries: vec![],
            footer: Some(footer)
        })
    );
    assert_eq!(
        decode_index_file(&index_bytes(1024, &[entry.encode(SALT ^ 1)]), 1024, SALT),
        Some(IndexFile::default())
    );
}

/// [IDX-04] Decoding keeps the longest valid, strictly increasing prefix at or above the
/// base, stops at a footer, ignores a partial slot, and treats a foreign, damaged or newer
/// header as an absent index.
#[test]
fn index_decoding_keeps_the_longest_valid_prefix() {
    let e = |seq, offset| IndexEntry { seq, offset }.encode(SALT);
    let good = [e(1024, 40), e(1100, 4200), e(1200, 8400)];
    let all = decode_index_file(&index_bytes(1024, &good), 1024, SALT).unwrap();
    assert_eq!(all.entries.len(), 3);

    let prefix = |slots: &[[u8; 16]]| {
        decode_index_file(&index_bytes(1024, slots), 1024, SALT)
            .unwrap()
            .entries
            .len()
    };
    assert_eq!(
        prefix(&[e(1024, 40), e(1024, 4200)]),
        1,
        "sequence must grow"
    );
    assert_eq!(prefix(&[e(1024, 40), e(1100, 40)]), 1, "offset must grow");
    assert_eq!(prefix(&[e(1000, 40)]), 0, "below the base");
    let mut torn = good[1];
    torn[3] ^= 0x20;
    assert_eq!(prefix(&[good[0], torn, good[2]]), 1, "damaged slot");
    let footer = IndexFooter {
        end_seq: 1300,
        seal_offset: 9000,
    }
    .encode(SALT);
    let with_footer =
        decode_index_file(&index_bytes(1024, &[good[0], footer, good[1]]), 1024, SALT).unwrap();
    assert_eq!(with_footer.entries.len(), 1, "nothing after the footer");
    assert!(with_footer.footer.is_some());
    let mut partial = index_bytes(1024, &good);
    partial.extend_from_slice(&e(1300, 9000)[..15]);
    assert_eq!(
        decode_index_file(&partial, 1024, SALT)
            .unwrap()
            .entries
            .len(),
        3
    );

    let bytes = index_bytes(1024, &good);
    assert_eq!(decode_index_file(&bytes, 1025, SALT), None, "foreign base");
    assert_eq!(
        decode_index_file(&bytes, 1024, SALT ^ 1),
        None,
        "foreign salt"
    );
    assert_eq!(
        decode_index_file(&bytes[..30], 1024, SALT),
        None,
        "torn header"
    );
    let mut newer = FileHeader {
        read_version: NEWER_VERSION,
        ..FileHeader::new(1024, SALT)
    }
    .encode(INDEX_MAGIC)
    .to_vec();
    newer.extend_from_slice(&good[0]);
    assert_eq!(decode_index_file(&newer, 1024, SALT), None, "newer version");
    let segment_header = FileHeader::new(1024, SALT).encode(SEGMENT_MAGIC);
    assert_eq!(
        decode_index_file(&segment_header, 1024, SALT),
        None,
        "segment magic"
    );
}

/// [META-03] Metadata files must have their exact length, magic and checksum, and a newer
/// read version is refused naming both versions.
#[test]
fn metadata_files_are_validated() {
    let start = StartMark { start: 7500 }.encode();
    let clean = CleanMark {
        segment: 1024,
        salt: SALT,
        end_offset: 87,
        next_seq: 1026,
    }
    .encode();
    assert_eq!((start.len(), clean.len()), (START_LEN, CLEAN_LEN));
    assert_eq!((START_LEN, CLEAN_LEN), (32, 56));
    for i in 0..START_LEN {
        let mut damaged = start;
        damaged[i] ^= 0x80;
        assert!(StartMark::decode(&damaged).is_err(), "start byte {i}");
    }
    for i in 0..CLEAN_LEN {
        let mut damaged = clean;
        damaged[i] ^= 0x80;
        assert!(CleanMark::decode(&damaged).is_err(), "clean byte {i}");
    }
    assert!(matches!(
        StartMark::decode(&start[..31]),
        Err(CorruptKind::LengthOutOfBounds { .. })
    ));
    let mut longer = start.to_vec();
    longer.push(0);
    assert!(StartMark::decode(&longer).is_err());
    assert_eq!(
        CleanMark::decode(&start),
        Err(CorruptKind::LengthOutOfBounds { len: 32, max: 56 })
    );
    let mut newer = start;
    newer[8] = u8::try_from(NEWER_VERSION).unwrap();
    let crc = crc32fast::hash(&newer[..28]);
    newer[28..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        StartMark::decode(&newer),
        Err(CorruptKind::UnsupportedVersion {
            found: NEWER_VERSION,
            supported: FORMAT_VERSION
        })
    );
    let mut wrong_magic = clean;
    wrong_magic[5] = b'X';
    let crc = crc32fast::hash(&wrong_magic[..52]);
    wrong_magic[52..].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(CleanMark::decode(&wrong_magic), Err(CorruptKind::BadMagic));
}

/// [META-01] [META-02] The start and clean-shutdown files round-trip their fields.
#[test]
fn metadata_fields_round_trip() {
    for start in [1, 7500, u64::MAX] {
        let mark = StartMark { start };
        assert_eq!(StartMark::decode(&mark.encode()), Ok(mark));
    }
    let mark = CleanMark {
        segment: u64::MAX - 1,
        salt: 0,
        end_offset: u64::from(u32::MAX),
        next_seq: u64::MAX,
    };
    assert_eq!(CleanMark::decode(&mark.encode()), Ok(mark));
}

/// [DIR-01] Segment and index names are the base in twenty zero-padded digits; they sort
/// in sequence order; the fixed names are those of format/directory.md.
#[test]
fn file_names_follow_the_directory_layout() {
    let dir = Path::new("/log");
    assert_eq!(
        segment_path(dir, 1024),
        Path::new("/log/00000000000000001024.seg")
    );
    assert_eq!(
        index_path(dir, 1024),
        Path::new("/log/00000000000000001024.idx")
    );
    assert_eq!(
        segment_path(dir, u64::MAX),
        Path::new("/log/18446744073709551615.seg")
    );
    let mut names: Vec<_> = [10u64, 9, 100, 1, u64::MAX]
        .iter()
        .map(|b| segment_path(dir, *b))
        .collect();
    names.sort();
    let bases: Vec<u64> = names
        .iter()
        .map(|p| {
            p.file_stem()
                .unwrap()
                .to_str()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .collect();
    assert_eq!(bases, [1, 9, 10, 100, u64::MAX]);
    assert_eq!(
        [
            WRITER_LOCK,
            RETENTION_LOCK,
            START_FILE,
            CLEAN_FILE,
            SPARE_FILE
        ],
        [
            "writer.lock",
            "retention.lock",
            "start.meta",
            "clean.meta",
            "spare.seg.tmp"
        ]
    );
}

/// [SEG-07] The limits on segment and payload sizes: a segment is 64 KiB to 2^32 - 1
/// bytes, and one payload of the maximum size must fit an empty segment with its seal.
#[test]
fn option_limits_follow_the_format() {
    assert_eq!(SEGMENT_BYTES_MIN, 65_536);
    assert_eq!(SEGMENT_BYTES_MAX, u64::from(u32::MAX));
    let with = |segment_bytes: u64, max_payload_bytes: u32| LogOptions {
        segment_bytes,
        max_payload_bytes,
        sync_policy: SyncPolicy::OsOnly,
        ..LogOptions::default()
    };
    let invalid = |options: LogOptions, name: &str| {
        assert!(
            matches!(options.validate(), Err(Error::InvalidOption { name: n, .. }) if n == name),
            "{name}"
        );
    };
    assert!(with(65_536, 65_536 - 56).validate().is_ok());
    invalid(with(65_536, 65_536 - 55), "max_payload_bytes");
    invalid(with(65_535, 1_000), "segment_bytes");
    invalid(with(u64::from(u32::MAX) + 1, 1_000), "segment_bytes");
    assert!(
        with(u64::from(u32::MAX), FRAME_PAYLOAD_LIMIT)
            .validate()
            .is_ok()
    );
    invalid(
        with(u64::from(u32::MAX), FRAME_PAYLOAD_LIMIT + 1),
        "max_payload_bytes",
    );
}
