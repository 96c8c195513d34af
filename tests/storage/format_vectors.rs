//! The annotated hex vectors of `format/vectors/` are test vectors.
//!
//! Every `*.hex` file is parsed (bytes, plus the `#@ key: value` parameters), decoded with
//! the public codecs of `esl_replay::storage::codec` (`esl_replay::store::meta` for the
//! store's metadata, `esl_replay::store::id_files` for its id index files), checked against
//! its parameters, and re-encoded byte for byte. Every vector must also appear verbatim in a
//! document of `format/`, so the examples in the specification cannot drift from the bytes
//! tested here. The log's vectors fit together as the start of one segment, which is checked
//! as well.

use std::path::{Path, PathBuf};

use esl_replay::storage::codec::{
    CLEAN_LEN, CleanMark, DURABLE_LEN, Decoded, DurableWatermark, FRAME_HEADER_LEN,
    FRAME_PAYLOAD_LIMIT, FileHeader, FrameKind, HEADER_LEN, INDEX_MAGIC, IndexEntry, IndexFile,
    IndexFooter, PACKED_VERSION, SEGMENT_MAGIC, START_LEN, StartMark, TRAILER_OVERHEAD, Trailer,
    decode_frame, decode_index_file, encode_frame, seq_tag,
};
use esl_replay::store::meta::{self, Layout, Run, SequenceMap};

/// One parsed vector file.
#[derive(Debug)]
struct Vector {
    name: String,
    text: String,
    params: Vec<(String, String)>,
    bytes: Vec<u8>,
}

impl Vector {
    fn param(&self, key: &str) -> &str {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("{}: missing parameter {key}", self.name))
    }

    fn params(&self, key: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    fn number(&self, key: &str) -> u64 {
        number(self.param(key))
    }
}

fn number(text: &str) -> u64 {
    let text = text.trim();
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .unwrap_or_else(|e| panic!("bad number {text:?}: {e}"))
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Parses the vector format of `format/README.md`: `#@ key: value` parameters, `#`
/// comments, and hexadecimal byte pairs separated by spaces.
fn parse(name: &str, text: &str) -> Vector {
    let mut params = Vec::new();
    let mut bytes = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if let Some(param) = line.strip_prefix("#@") {
            let (key, value) = param
                .split_once(':')
                .unwrap_or_else(|| panic!("{name}:{}: parameter without ':'", number + 1));
            params.push((key.trim().to_owned(), value.trim().to_owned()));
            continue;
        }
        let data = line.split('#').next().unwrap_or_default();
        let mut on_line = 0;
        for token in data.split_whitespace() {
            assert!(
                token.len() == 2,
                "{name}:{}: {token:?} is not one byte in hexadecimal",
                number + 1
            );
            let byte = u8::from_str_radix(token, 16)
                .unwrap_or_else(|e| panic!("{name}:{}: {token:?}: {e}", number + 1));
            bytes.push(byte);
            on_line += 1;
        }
        assert!(
            on_line <= 8,
            "{name}:{}: more than eight bytes on a line",
            number + 1
        );
    }
    Vector {
        name: name.to_owned(),
        text: text.to_owned(),
        params,
        bytes,
    }
}

fn vectors() -> Vec<Vector> {
    let dir = root().join("format/vectors");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "hex"))
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            parse(&name, &std::fs::read_to_string(path).unwrap())
        })
        .collect()
}

fn vectors_of(kind: &str) -> Vec<Vector> {
    let found: Vec<Vector> = vectors()
        .into_iter()
        .filter(|v| v.param("kind") == kind)
        .collect();
    assert!(!found.is_empty(), "no vector of kind {kind}");
    found
}

fn vector(name: &str) -> Vector {
    vectors()
        .into_iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("format/vectors/{name} is missing"))
}

/// The vectors the specification promises exist, each of a kind this file checks.
#[test]
fn every_promised_vector_exists_with_a_known_kind() {
    let known = [
        "segment-header",
        "frame",
        "index-file",
        "start-file",
        "clean-file",
        "durable-file",
        "store-meta",
        "ids-file",
        "record-body",
        "packed-segment",
    ];
    for vector in vectors() {
        assert!(
            known.contains(&vector.param("kind")),
            "{}: unknown kind {}",
            vector.name,
            vector.param("kind")
        );
        assert!(!vector.bytes.is_empty(), "{} has no bytes", vector.name);
    }
    for name in [
        "segment-header.hex",
        "recycled-segment-header.hex",
        "record-frame.hex",
        "compressed-frame.hex",
        "seal-frame.hex",
        "index-file.hex",
        "start-file.hex",
        "clean-file.hex",
        "durable-file.hex",
        "store-meta.hex",
        "ids-file.hex",
        "record-body-v2.hex",
        "packed-segment.hex",
    ] {
        vector(name);
    }
}

/// Every vector is embedded verbatim in a `format/*.md` document, so the documents' hex
/// examples are exactly the bytes these tests decode.
#[test]
fn every_vector_appears_verbatim_in_the_specification() {
    let docs: Vec<(PathBuf, String)> = std::fs::read_dir(root().join("format"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (path, text)
        })
        .collect();
    for vector in vectors() {
        let wanted = vector.text.trim_end();
        assert!(
            docs.iter().any(|(_, text)| text.contains(wanted)),
            "format/vectors/{} is not embedded verbatim in any of {:?}",
            vector.name,
            docs.iter()
                .map(|(p, _)| p.file_name().unwrap().to_owned())
                .collect::<Vec<_>>()
        );
    }
}

/// [HDR-01] [HDR-02] [SEG-10] The segment header vectors decode to their base and salt at
/// their version (1, or 3 for a recycled segment) and re-encode byte for byte; the same bytes
/// are not an index header.
#[test]
fn segment_header_vector_round_trips() {
    for vector in vectors_of("segment-header") {
        assert_eq!(vector.bytes.len(), HEADER_LEN, "{}", vector.name);
        let header = FileHeader::decode(&vector.bytes, SEGMENT_MAGIC).unwrap();
        let version = vector
            .params("version")
            .first()
            .map_or(1, |v| u16::try_from(number(v)).unwrap());
        assert_eq!(header.is_recycled(), version == 3, "{}", vector.name);
        assert_eq!(
            header,
            FileHeader {
                read_version: version,
                write_version: version,
                base: vector.number("base"),
                salt: vector.number("salt"),
            }
        );
        assert_eq!(header.encode(SEGMENT_MAGIC).as_slice(), vector.bytes);
        assert!(FileHeader::decode(&vector.bytes, INDEX_MAGIC).is_err());
        assert_eq!(
            crc32fast::hash(&vector.bytes[..36]).to_le_bytes(),
            vector.bytes[36..40]
        );
    }
}

/// The sequence tag of [FRM-03], computed here independently of the library.
fn tag(seq: u64) -> u32 {
    let folded = (seq & 0xFFFF_FFFF) ^ (seq >> 32);
    u32::try_from(folded).unwrap().wrapping_mul(0x9E37_79B1)
}

/// [SEG-09] The packed segment vector: a version 2 header, one compressed frame that
/// decompresses against the trailer's dictionary (and not without it) to the stated record,
/// the seal right before the trailer, and the trailer found from the end of the bytes; every
/// part re-encodes byte for byte.
#[test]
fn packed_segment_vector_round_trips() {
    let vector = vector("packed-segment.hex");
    let (salt, base) = (vector.number("salt"), vector.number("base"));
    let bytes = &vector.bytes;
    let header = FileHeader::decode(bytes, SEGMENT_MAGIC).unwrap();
    assert_eq!((header.base, header.salt), (base, salt));
    assert_eq!(header.read_version, PACKED_VERSION);
    assert!(header.is_packed());
    assert_eq!(
        header.encode(SEGMENT_MAGIC),
        FileHeader::packed(base, salt).encode(SEGMENT_MAGIC)
    );

    let trailer = Trailer::decode_end(bytes, salt).unwrap();
    assert_eq!(trailer.unpacked_len, vector.number("unpacked-len"));
    let trailer_at = bytes.len() - trailer.len();
    assert_eq!(
        trailer.len(),
        TRAILER_OVERHEAD + trailer.dictionary.len(),
        "dictionary and fixed part"
    );
    assert_eq!(&trailer.encode(salt).unwrap()[..], &bytes[trailer_at..]);

    let Decoded::Record {
        compressed: true,
        payload,
        frame_len,
    } = decode_frame(
        &bytes[HEADER_LEN..trailer_at],
        salt,
        base,
        FRAME_PAYLOAD_LIMIT,
    )
    else {
        panic!("a compressed record at offset 40");
    };
    let expected = vector.param("payload-text").replace("\\n", "\n");
    let mut context = zstd::zstd_safe::DCtx::create();
    let ddict = zstd::zstd_safe::DDict::create(trailer.dictionary);
    let mut out = Vec::with_capacity(expected.len());
    context
        .decompress_using_ddict(&mut out, payload, &ddict)
        .unwrap();
    assert_eq!(out, expected.as_bytes());
    assert!(
        zstd::bulk::decompress(payload, 1 << 20).ok().as_deref() != Some(expected.as_bytes()),
        "the frame needs the dictionary"
    );
    assert_eq!(
        encode_frame(salt, base, FrameKind::Compressed, payload),
        &bytes[HEADER_LEN..HEADER_LEN + frame_len]
    );
    let seal_at = HEADER_LEN + frame_len;
    assert_eq!(
        seal_at + FRAME_HEADER_LEN,
        trailer_at,
        "the trailer follows the seal"
    );
    assert_eq!(
        decode_frame(
            &bytes[seal_at..trailer_at],
            salt,
            base + 1,
            FRAME_PAYLOAD_LIMIT
        ),
        Decoded::Seal
    );
    assert_eq!(
        trailer.unpacked_len as usize,
        HEADER_LEN + FRAME_HEADER_LEN + expected.len() + FRAME_HEADER_LEN
    );
}

/// [FRM-01] [FRM-03] [FRM-06] [FRM-07] Every frame vector decodes, at its sequence and salt,
/// to what its parameters say; its checksum is CRC-32 over salt, `len_flags` and payload,
/// XOR the sequence tag; and it re-encodes byte for byte. A compressed payload
/// decompresses with zstd to the stated content.
#[test]
fn frame_vectors_round_trip() {
    for vector in vectors_of("frame") {
        let name = &vector.name;
        let salt = vector.number("salt");
        let seq = vector.number("seq");
        let bytes = &vector.bytes;
        let stored = u32::from_le_bytes(bytes[0..4].try_into().unwrap());
        let len_flags = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        let payload = &bytes[8..];
        assert_eq!(
            (len_flags & 0x0FFF_FFFF) as usize,
            payload.len(),
            "{name}: length field"
        );
        let mut crc = crc32fast::Hasher::new();
        crc.update(&salt.to_le_bytes());
        crc.update(&len_flags.to_le_bytes());
        crc.update(payload);
        assert_eq!(seq_tag(seq), tag(seq), "{name}: sequence tag");
        assert_eq!(stored, crc.finalize() ^ tag(seq), "{name}: checksum");

        let decoded = decode_frame(bytes, salt, seq, FRAME_PAYLOAD_LIMIT);
        let kind = match vector.param("frame") {
            "plain" => {
                assert_eq!(len_flags >> 28, 0x8, "{name}: PRESENT only");
                let text = vector.param("payload-text");
                assert_eq!(
                    decoded,
                    Decoded::Record {
                        compressed: false,
                        payload: text.as_bytes(),
                        frame_len: bytes.len(),
                    },
                    "{name}"
                );
                FrameKind::Plain
            }
            "compressed" => {
                assert_eq!(len_flags >> 28, 0x9, "{name}: PRESENT | COMPRESSED");
                assert_eq!(
                    decoded,
                    Decoded::Record {
                        compressed: true,
                        payload,
                        frame_len: bytes.len(),
                    },
                    "{name}"
                );
                let (count, byte) = vector.param("decompressed").split_once(" x ").unwrap();
                let expected = vec![
                    u8::from_str_radix(byte.trim(), 16).unwrap();
                    usize::try_from(number(count)).unwrap()
                ];
                let inflated = zstd::bulk::decompress(payload, 1 << 20).unwrap();
                assert_eq!(inflated, expected, "{name}: decompressed payload");
                assert!(
                    payload.len() <= expected.len() - expected.len() / 8,
                    "{name}: compression saves an eighth"
                );
                FrameKind::Compressed
            }
            "seal" => {
                assert_eq!(len_flags, 0xA000_0000, "{name}: PRESENT | SEAL, length 0");
                assert_eq!(decoded, Decoded::Seal, "{name}");
                FrameKind::Seal
            }
            other => panic!("{name}: unknown frame kind {other}"),
        };
        assert_eq!(&encode_frame(salt, seq, kind, payload), bytes, "{name}");
        // The frame is bound to its sequence and its segment.
        assert!(matches!(
            decode_frame(bytes, salt, seq + 1, FRAME_PAYLOAD_LIMIT),
            Decoded::Invalid(_)
        ));
        assert!(matches!(
            decode_frame(bytes, salt ^ 1, seq, FRAME_PAYLOAD_LIMIT),
            Decoded::Invalid(_)
        ));
    }
}

/// [IDX-02] [IDX-03] [IDX-04] The index vector decodes to its entries and footer and is
/// rebuilt byte for byte from the header, the entries and the footer.
#[test]
fn index_file_vector_round_trips() {
    for vector in vectors_of("index-file") {
        let base = vector.number("base");
        let salt = vector.number("salt");
        let pair = |text: &str| {
            let (a, b) = text.split_once(' ').unwrap();
            (number(a), u32::try_from(number(b)).unwrap())
        };
        let entries: Vec<IndexEntry> = vector
            .params("entry")
            .into_iter()
            .map(|text| {
                let (seq, offset) = pair(text);
                IndexEntry { seq, offset }
            })
            .collect();
        let (end_seq, seal_offset) = pair(vector.param("footer"));
        let footer = IndexFooter {
            end_seq,
            seal_offset,
        };
        assert_eq!(
            decode_index_file(&vector.bytes, base, salt),
            Some(IndexFile {
                entries: entries.clone(),
                footer: Some(footer),
            }),
            "{}",
            vector.name
        );
        let mut encoded = FileHeader::new(base, salt).encode(INDEX_MAGIC).to_vec();
        for entry in &entries {
            encoded.extend_from_slice(&entry.encode(salt));
        }
        encoded.extend_from_slice(&footer.encode(salt));
        assert_eq!(encoded, vector.bytes, "{}", vector.name);
        // The index belongs to one segment: another base or salt makes it absent.
        assert_eq!(decode_index_file(&vector.bytes, base + 1, salt), None);
        assert_eq!(decode_index_file(&vector.bytes, base, salt ^ 1), None);
    }
}

/// [META-01] [META-03] The start-file vector decodes to its start and re-encodes.
#[test]
fn start_file_vector_round_trips() {
    for vector in vectors_of("start-file") {
        assert_eq!(vector.bytes.len(), START_LEN);
        let mark = StartMark::decode(&vector.bytes).unwrap();
        assert_eq!(mark.start, vector.number("start"));
        assert_eq!(mark.encode().as_slice(), vector.bytes);
    }
}

/// [META-04] [META-03] The durable-mark vector decodes to its watermark and re-encodes.
#[test]
fn durable_file_vector_round_trips() {
    for vector in vectors_of("durable-file") {
        assert_eq!(vector.bytes.len(), DURABLE_LEN);
        let mark = DurableWatermark::decode(&vector.bytes).unwrap();
        assert_eq!(mark.durable, vector.number("durable"));
        assert_eq!(mark.encode().as_slice(), vector.bytes);
    }
}

/// [META-02] [META-03] The clean-shutdown vector decodes to its fields and re-encodes.
#[test]
fn clean_file_vector_round_trips() {
    for vector in vectors_of("clean-file") {
        assert_eq!(vector.bytes.len(), CLEAN_LEN);
        let mark = CleanMark::decode(&vector.bytes).unwrap();
        assert_eq!(
            mark,
            CleanMark {
                segment: vector.number("segment"),
                salt: vector.number("salt"),
                end_offset: vector.number("end-offset"),
                next_seq: vector.number("next-seq"),
            }
        );
        assert_eq!(mark.encode().as_slice(), vector.bytes);
    }
}

/// [STORE-01] [STORE-02] The store metadata vector decodes to its runs in the current
/// layout, its checksum is the CRC-32 of the bytes before it, and it re-encodes byte for
/// byte.
#[test]
fn store_meta_vector_round_trips() {
    for vector in vectors_of("store-meta") {
        let runs: Vec<Run> = vector
            .params("run")
            .iter()
            .map(|run| {
                let (log_seq, append_seq) = run.split_once(' ').unwrap();
                Run {
                    log_seq: number(log_seq),
                    append_seq: number(append_seq),
                }
            })
            .collect();
        let bytes = &vector.bytes;
        assert_eq!(bytes.len(), 20 + 16 * runs.len(), "{}", vector.name);
        assert_eq!(bytes[..8], meta::MAGIC);
        let len = bytes.len();
        assert_eq!(
            crc32fast::hash(&bytes[..len - 4]).to_le_bytes(),
            bytes[len - 4..]
        );
        let (map, layout) = SequenceMap::decode(bytes).unwrap();
        assert_eq!(layout, Layout::Current);
        assert_eq!(map.runs(), runs.as_slice());
        assert_eq!(SequenceMap::from_runs(&runs).unwrap().encode(), *bytes);
    }
}

/// [STORE-07] The id index file vector loads to the pairs its parameters give, in file
/// order, each hash the FNV-1a hash of its id; a lookup reading it in place finds each
/// sequence, and the pairs re-encode byte for byte.
#[test]
fn ids_file_vector_round_trips() {
    use esl_replay::store::id_files::{decode_pairs, encode_pairs, probe_pairs};
    for vector in vectors_of("ids-file") {
        let (base, end) = (vector.number("base"), vector.number("end"));
        let pairs: Vec<(u64, u64)> = vector
            .params("pair")
            .iter()
            .map(|pair| {
                let (hash, seq) = pair.split_once(' ').unwrap();
                (number(hash), number(seq))
            })
            .collect();
        let bytes = &vector.bytes;
        assert_eq!(decode_pairs(bytes, base, Some(end)), Some(pairs.clone()));
        assert_eq!(encode_pairs(base, end, pairs.clone()), *bytes);
        let fnv = |id: &str| {
            id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
            })
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids");
        std::fs::write(&path, bytes).unwrap();
        for (hash, seq) in &pairs {
            assert_eq!(*hash, fnv(&format!("record-{seq}")), "{}", vector.name);
            assert_eq!(probe_pairs(&path, base, Some(end), *hash), Some(vec![*seq]));
        }
    }
}

/// [BODY-01] [BODY-02] The record body vector decodes, as an owned record and as a view, to
/// the fields its parameters give (absent optional fields are `None`), and the record
/// re-encodes byte for byte.
#[test]
fn record_body_vector_round_trips() {
    use esl_replay::record::{DecodeBuffer, Record, RecordView, timestamp};
    for vector in vectors_of("record-body") {
        let bytes = &vector.bytes;
        let optional = |key: &str| {
            vector
                .params
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
        };
        let record = Record::decode(bytes).unwrap();
        let mut buffer = DecodeBuffer::default();
        let view = RecordView::decode(bytes, &mut buffer).unwrap();
        assert_eq!(record.id().as_str(), vector.param("id"));
        assert_eq!(view.id(), vector.param("id"));
        assert_eq!(view.artifact_version(), vector.param("artifact_version"));
        assert_eq!(view.artifact_name(), vector.param("artifact_name"));
        for (key, time) in [
            ("capture_timestamp", view.capture_timestamp()),
            ("stored_at", view.stored_at()),
        ] {
            let expected = timestamp::parse(vector.param(key)).unwrap();
            assert_eq!(time, expected, "{key}");
            assert_eq!(time.offset(), expected.offset(), "{key}");
        }
        assert_eq!(view.append_sequence(), vector.number("append_sequence"));
        for (key, value) in [
            ("connection_generation", view.connection_generation()),
            ("session_id", view.session_id()),
            ("job_uuid", view.job_uuid()),
            ("event_name", view.event_name()),
            ("capture_path", view.capture_path()),
            ("replay_session_id", view.replay_session_id()),
            ("pbx_node_slug", view.pbx_node_slug()),
            ("worker_session_id", view.worker_session_id()),
        ] {
            assert_eq!(value, optional(key), "{key}");
        }
        assert_eq!(view.checksum(), vector.param("checksum"));
        assert_eq!(view.correlation_ids_json(), vector.param("correlation_ids"));
        assert_eq!(view.runtime_flags_json(), vector.param("runtime_flags"));
        assert_eq!(view.payload_json(), vector.param("payload"));
        assert_eq!(view.tags_json(), vector.param("tags"));
        assert_eq!(&view.to_record().unwrap(), &record);
        assert_eq!(&record.encode().unwrap(), bytes, "{}", vector.name);
    }
}

/// [SEG-03] [SEG-04] [FRM-02] [FRM-07] The vectors fit together: the segment header, then
/// the two records back to back from offset 40 with sequences base and base + 1, then
/// empty space exactly where the clean-shutdown vector says the frames end; with the seal
/// vector written there, the segment ends in a seal for the clean file's next sequence.
#[test]
fn vectors_form_the_start_of_one_segment() {
    let header_vector = vector("segment-header.hex");
    let header = FileHeader::decode(&header_vector.bytes, SEGMENT_MAGIC).unwrap();
    let clean = CleanMark::decode(&vector("clean-file.hex").bytes).unwrap();
    assert_eq!((clean.segment, clean.salt), (header.base, header.salt));

    let mut segment = vec![0u8; 256];
    let mut offset = 0;
    for name in [
        "segment-header.hex",
        "record-frame.hex",
        "compressed-frame.hex",
    ] {
        let bytes = vector(name).bytes;
        segment[offset..offset + bytes.len()].copy_from_slice(&bytes);
        offset += bytes.len();
    }
    let mut at = HEADER_LEN;
    let mut seq = header.base;
    while let Decoded::Record { frame_len, .. } =
        decode_frame(&segment[at..], header.salt, seq, FRAME_PAYLOAD_LIMIT)
    {
        at += frame_len;
        seq += 1;
    }
    assert_eq!(at as u64, clean.end_offset);
    assert_eq!(seq, clean.next_seq);
    assert_eq!(
        decode_frame(&segment[at..], header.salt, seq, FRAME_PAYLOAD_LIMIT),
        Decoded::Empty
    );

    let seal = vector("seal-frame.hex");
    assert_eq!(seal.number("seq"), clean.next_seq);
    segment[at..at + seal.bytes.len()].copy_from_slice(&seal.bytes);
    assert_eq!(
        decode_frame(&segment[at..], header.salt, seq, FRAME_PAYLOAD_LIMIT),
        Decoded::Seal
    );
}

/// [FRM-03] "CRC-32" is CRC-32/ISO-HDLC, whose check value is `0xCBF43926` (format/README.md).
#[test]
fn crc32_is_the_iso_hdlc_crc() {
    assert_eq!(crc32fast::hash(b"123456789"), 0xCBF4_3926);
}

/// The vector parser rejects what the vector format does not allow.
#[test]
fn parser_reads_parameters_comments_and_bytes() {
    let vector = parse(
        "t.hex",
        "# comment 00 11\n#@ kind: x\n#@ k: 1\n#@ k: 2\n0a ff # c\n",
    );
    assert_eq!(vector.bytes, [0x0a, 0xff]);
    assert_eq!(vector.params("k"), ["1", "2"]);
    assert_eq!(vector.param("kind"), "x");
    assert!(std::panic::catch_unwind(|| parse("t.hex", "0a0b\n")).is_err());
    assert!(Path::new(&root().join("format/vectors")).is_dir());
}
