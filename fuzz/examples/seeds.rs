//! Writes seed corpora for every fuzz target, derived from valid encodings made with the
//! public codecs (so they track the format), into `fuzz/corpus/<target>/seed-*`.
//!
//! Run from the repository root: `cargo run --manifest-path fuzz/Cargo.toml --example seeds`
//! (an optional argument names another corpus root).

use std::path::{Path, PathBuf};

use esl_replay::storage::codec::{
    self, CleanMark, FileHeader, FrameKind, INDEX_MAGIC, IndexEntry, IndexFooter, SEGMENT_MAGIC,
    StartMark,
};
use esl_replay_fuzz::{
    BASE, CLEAN, FOOTER, INDEX, MAX_PAYLOAD, PAD, PREAD, SALT, SegmentCase, frame_input,
    index_input,
};

fn esl_event(i: u64) -> Vec<u8> {
    format!(
        "Event-Name: CHANNEL_STATE\nUnique-ID: 5f1e3a52-1c1b-4f43-9a0e-{i:012x}\n\
         Channel-State: CS_EXECUTE\nEvent-Sequence: {i}\n"
    )
    .into_bytes()
}

/// Frames for sequences `first..first + count`, with their offsets in the segment.
fn frames(first: u64, count: u64) -> (Vec<u8>, Vec<(u64, u32)>) {
    let mut body = Vec::new();
    let mut offsets = Vec::new();
    for seq in first..first + count {
        let offset = codec::HEADER_LEN + body.len();
        offsets.push((seq, u32::try_from(offset).expect("small")));
        body.extend_from_slice(&codec::encode_frame(
            SALT,
            seq,
            FrameKind::Plain,
            &esl_event(seq),
        ));
    }
    (body, offsets)
}

fn write(root: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = root.join(target);
    std::fs::create_dir_all(&dir).expect("corpus dir");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn frame_seeds(root: &Path) {
    let t = "frame_decode";
    let event = esl_event(7);
    let compressed = zstd::bulk::compress(&[b'x'; 600], 3).expect("zstd");
    let cases: Vec<(&str, u64, u64, u32, Vec<u8>)> = vec![
        (
            "plain",
            SALT,
            7,
            MAX_PAYLOAD,
            codec::encode_frame(SALT, 7, FrameKind::Plain, &event),
        ),
        (
            "empty-payload",
            SALT,
            1,
            MAX_PAYLOAD,
            codec::encode_frame(SALT, 1, FrameKind::Plain, b""),
        ),
        (
            "high-seq",
            9,
            (1 << 32) + 3,
            1 << 20,
            codec::encode_frame(9, (1 << 32) + 3, FrameKind::Plain, &event),
        ),
        (
            "compressed",
            SALT,
            3,
            MAX_PAYLOAD,
            codec::encode_frame(SALT, 3, FrameKind::Compressed, &compressed),
        ),
        (
            "seal",
            SALT,
            11,
            MAX_PAYLOAD,
            codec::encode_frame(SALT, 11, FrameKind::Seal, b""),
        ),
        ("zeroed", SALT, 1, MAX_PAYLOAD, vec![0; 64]),
        (
            "max-payload",
            SALT,
            2,
            MAX_PAYLOAD,
            codec::encode_frame(SALT, 2, FrameKind::Plain, &[0xab; MAX_PAYLOAD as usize]),
        ),
    ];
    for (name, salt, seq, max, frame) in cases {
        write(root, t, name, &frame_input(salt, seq, max, &frame));
        if name == "plain" {
            write(
                root,
                t,
                "torn",
                &frame_input(salt, seq, max, &frame[..frame.len() - 1]),
            );
            let mut reserved = frame.clone();
            reserved[7] |= 0x40;
            write(
                root,
                t,
                "reserved-bit",
                &frame_input(salt, seq, max, &reserved),
            );
            let mut two = frame.clone();
            two.extend_from_slice(&codec::encode_frame(
                salt,
                seq + 1,
                FrameKind::Plain,
                b"next",
            ));
            write(root, t, "two-frames", &frame_input(salt, seq, max, &two));
        }
    }
}

fn segment_seeds(root: &Path) {
    let t = "segment_scan";
    let (body, offsets) = frames(BASE, 10);
    let end = u32::try_from(codec::HEADER_LEN + body.len()).expect("small");
    let seal = codec::encode_frame(SALT, BASE + 10, FrameKind::Seal, b"");
    let sealed = [body.clone(), seal].concat();
    let next = codec::encode_frame(SALT, BASE + 10, FrameKind::Plain, &esl_event(99));
    let torn = [body.clone(), next[..next.len() / 2].to_vec()].concat();
    let mut damaged = body.clone();
    let third = offsets[2].1 as usize - codec::HEADER_LEN;
    damaged[third + 12] ^= 0x20;
    let entries: Vec<(u32, u32)> = [offsets[0], offsets[5]]
        .iter()
        .map(|(seq, offset)| (u32::try_from(*seq).expect("small"), *offset))
        .collect();
    let compressed = zstd::bulk::compress(&[b'e'; 2000], 3).expect("zstd");
    let with_compressed = [
        body.clone(),
        codec::encode_frame(SALT, BASE + 10, FrameKind::Compressed, &compressed),
    ]
    .concat();
    let only_compressed = codec::encode_frame(SALT, BASE, FrameKind::Compressed, &compressed);
    let max = codec::encode_frame(SALT, BASE, FrameKind::Plain, &[0x55; MAX_PAYLOAD as usize]);

    let cases = [
        (
            "frames",
            SegmentCase {
                body: body.clone(),
                ..SegmentCase::default()
            },
        ),
        (
            "frames-padded",
            SegmentCase {
                flags: PAD,
                body: body.clone(),
                ..SegmentCase::default()
            },
        ),
        (
            "frames-pread",
            SegmentCase {
                flags: PAD | PREAD,
                body: body.clone(),
                ..SegmentCase::default()
            },
        ),
        (
            "sealed",
            SegmentCase {
                flags: PAD,
                body: sealed.clone(),
                ..SegmentCase::default()
            },
        ),
        (
            "sealed-unpadded",
            SegmentCase {
                body: sealed.clone(),
                ..SegmentCase::default()
            },
        ),
        (
            "torn-tail",
            SegmentCase {
                flags: PAD,
                body: torn,
                ..SegmentCase::default()
            },
        ),
        (
            "damaged-before-tail",
            SegmentCase {
                flags: PAD,
                body: damaged,
                ..SegmentCase::default()
            },
        ),
        (
            "clean",
            SegmentCase {
                flags: PAD | CLEAN,
                clean: (end, 11),
                body: body.clone(),
                ..SegmentCase::default()
            },
        ),
        (
            "clean-wrong",
            SegmentCase {
                flags: PAD | CLEAN,
                clean: (end - 5, 9),
                body: body.clone(),
                ..SegmentCase::default()
            },
        ),
        (
            "indexed",
            SegmentCase {
                flags: PAD | INDEX,
                entries: entries.clone(),
                body: body.clone(),
                ..SegmentCase::default()
            },
        ),
        (
            "indexed-sealed",
            SegmentCase {
                flags: PAD | INDEX | FOOTER | PREAD,
                entries: entries.clone(),
                footer: (11, end),
                body: sealed,
                ..SegmentCase::default()
            },
        ),
        (
            "compressed",
            SegmentCase {
                flags: PAD,
                body: with_compressed,
                ..SegmentCase::default()
            },
        ),
        (
            "compressed-only",
            SegmentCase {
                flags: PAD,
                body: only_compressed,
                ..SegmentCase::default()
            },
        ),
        (
            "max-payload",
            SegmentCase {
                flags: PAD,
                body: max,
                ..SegmentCase::default()
            },
        ),
        ("empty", SegmentCase::default()),
        (
            "empty-padded",
            SegmentCase {
                flags: PAD,
                ..SegmentCase::default()
            },
        ),
    ];
    for (name, case) in cases {
        write(root, t, name, &case.encode());
    }
}

fn index_seeds(root: &Path) {
    let t = "index_decode";
    let mut file = FileHeader::new(BASE, SALT).encode(INDEX_MAGIC).to_vec();
    for (seq, offset) in [(1, 40), (12, 4140), (23, 8300)] {
        file.extend_from_slice(&IndexEntry { seq, offset }.encode(SALT));
    }
    let open = file.clone();
    file.extend_from_slice(
        &IndexFooter {
            end_seq: 30,
            seal_offset: 11000,
        }
        .encode(SALT),
    );
    write(root, t, "complete", &index_input(0, BASE, SALT, &file));
    write(root, t, "complete-own-header", &index_input(1, 0, 0, &file));
    write(root, t, "open", &index_input(0, BASE, SALT, &open));
    write(
        root,
        t,
        "torn",
        &index_input(0, BASE, SALT, &open[..open.len() - 5]),
    );
    write(
        root,
        t,
        "header-only",
        &index_input(1, 0, 0, &open[..codec::HEADER_LEN]),
    );
    write(root, t, "foreign", &index_input(0, BASE + 1, SALT, &file));
}

fn meta_seeds(root: &Path) {
    let t = "meta_decode";
    write(root, t, "start", &StartMark { start: 4242 }.encode());
    let clean = CleanMark {
        segment: 1,
        salt: SALT,
        end_offset: 4096,
        next_seq: 77,
    };
    write(root, t, "clean", &clean.encode());
    write(
        root,
        t,
        "segment-header",
        &FileHeader::new(BASE, SALT).encode(SEGMENT_MAGIC),
    );
    write(
        root,
        t,
        "index-header",
        &FileHeader::new(BASE, SALT).encode(INDEX_MAGIC),
    );
    let newer = FileHeader {
        read_version: 2,
        ..FileHeader::new(BASE, SALT)
    };
    write(root, t, "newer-read-version", &newer.encode(SEGMENT_MAGIC));
    let newer = FileHeader {
        write_version: 2,
        ..FileHeader::new(BASE, SALT)
    };
    write(root, t, "newer-write-version", &newer.encode(SEGMENT_MAGIC));
}

/// Version 2 record bodies of a few dataset records and of the K3 shapes.
fn record_seeds(root: &Path) {
    use esl_replay::record::{Record, RecordId, from_ndjson_line};
    use esl_replay::store::dataset;
    let stored_at = esl_replay::record::timestamp::parse("2024-01-15T10:00:00Z").expect("time");
    for n in 1..=5u64 {
        let record = Record::from_envelope(
            dataset::envelope(n),
            RecordId::new(format!("seed-{n}")).expect("id"),
            stored_at,
            n,
        )
        .expect("record");
        write(root, "record_decode", &format!("dataset-{n}"), &record.encode().expect("encode"));
    }
    let line = r#"{"schema_version":1,"id":"k3","artifact_version":"1","artifact_name":"event.raw","capture_timestamp":"2024-01-15T12:00:00.123+02:00","stored_at":"2024-01-15T10:00:03.000+00:00","append_sequence":10,"connection_generation":"3","session_id":null,"job_uuid":"j","event_name":"CUSTOM","capture_path":null,"correlation_ids":{"replay_session_id":"r"},"runtime_flags":{"pbx_node_slug":"n","worker_session_id":"w"},"payload":{"obj":{},"list":[],"nested":[{},[],{"a":{}}],"indexed":{"0":"a"},"f":0.1},"checksum":"c","tags":[]}"#;
    let record = from_ndjson_line(line).expect("line");
    write(root, "record_decode", "k3", &record.encode().expect("encode"));
}

/// Packed segments written by the engine: a log of ESL events closed with packing on, whose
/// close packs its last segment; each seed is `[salt]` and the file after its header.
fn packed_seeds(root: &Path) {
    for (name, count) in [("few", 3u64), ("many", 60)] {
        let dir = tempfile::tempdir().expect("scratch directory");
        let options = esl_replay::storage::LogOptions {
            segment_bytes: esl_replay_fuzz::SEGMENT_BYTES,
            max_payload_bytes: MAX_PAYLOAD,
            pack_level: Some(esl_replay::storage::DEFAULT_PACK_LEVEL),
            ..esl_replay::storage::LogOptions::default()
        };
        let (mut log, _) = esl_replay::storage::Log::open(dir.path(), options).expect("open");
        for i in 0..count {
            log.append(&esl_event(i)).expect("append");
        }
        log.close().expect("close");
        let bytes = std::fs::read(codec::segment_path(dir.path(), 1)).expect("read");
        let header = FileHeader::decode(&bytes, SEGMENT_MAGIC).expect("header");
        let mut seed = header.salt.to_le_bytes().to_vec();
        seed.extend_from_slice(&bytes[codec::HEADER_LEN..]);
        write(root, "packed_segment", name, &seed);
    }
}

/// Id index files as a writer writes them: empty, a few pairs, and pairs over several
/// windows with a hash shared across a window's edge; each after the hash to look up.
fn ids_seeds(root: &Path) {
    let t = "ids_probe";
    let base = 1_000;
    let spread = |n: u64| -> Vec<(u64, u64)> {
        (0..n)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), base + i))
            .collect()
    };
    let mut shared = spread(3_000);
    for (i, pair) in shared.iter_mut().enumerate().step_by(3) {
        pair.0 = 0x8000_0000_0000_0000 + i as u64 % 2;
    }
    let cases = [
        ("empty", Vec::new(), 7),
        ("few", spread(3), 0x9e37_79b9_7f4a_7c15),
        ("windows", spread(5_000), 42),
        ("shared", shared, 0x8000_0000_0000_0000),
    ];
    for (name, pairs, hash) in cases {
        let end = base + pairs.len() as u64;
        let mut input = u64::to_le_bytes(hash).to_vec();
        input.extend_from_slice(&esl_replay::store::id_files::encode_pairs(base, end, pairs));
        write(root, t, name, &input);
    }
}

fn main() {
    let root = std::env::args_os().nth(1).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"),
        PathBuf::from,
    );
    frame_seeds(&root);
    segment_seeds(&root);
    index_seeds(&root);
    meta_seeds(&root);
    record_seeds(&root);
    packed_seeds(&root);
    ids_seeds(&root);
    println!("seeds written under {}", root.display());
}
