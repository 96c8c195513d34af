//! Regression tests for inputs the `segment_scan` fuzz target found (see `fuzz/README.md`).
//!
//! Each input under `tests/fuzz_inputs/` is in the target's layout: a flags byte (bit 0:
//! zero-pad the segment to 64 KiB), then the bytes of segment `1` after a valid header with
//! the fuzz salt. The test replays what the target checks: the log opens, reads, appends,
//! closes cleanly, reopens cleanly and reads the same records plus the appended one.

use esl_replay::storage::codec::{self, Decoded, FileHeader, SEGMENT_MAGIC};
use esl_replay::storage::{Log, LogOptions, Seq, SyncPolicy};

use crate::support::process::open_log;

/// The salt `fuzz/src/lib.rs` gives the fuzzed segment.
const SALT: u64 = 0x5eed_0123_4567_89ab;
const SEGMENT_BYTES: u64 = 64 << 10;

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES,
        max_payload_bytes: 4096,
        sync_policy: SyncPolicy::OsOnly,
        ..LogOptions::default()
    }
}

fn read_all(log: &Log) -> Vec<(u64, Vec<u8>)> {
    log.reader()
        .iter(Seq(1))
        .expect("cursor")
        .map(|r| {
            r.map(|(seq, payload)| (seq.get(), payload))
                .expect("record")
        })
        .collect()
}

/// Replays a `segment_scan` input that the log must accept; returns the records read.
fn replay(input: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let (flags, body) = input.split_first().map_or((0, &[][..]), |(f, b)| (*f, b));
    assert_eq!(flags & !1, 0, "these inputs only use the padding flag");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut segment = FileHeader::new(1, SALT).encode(SEGMENT_MAGIC).to_vec();
    segment.extend_from_slice(body);
    if flags & 1 != 0 && (segment.len() as u64) < SEGMENT_BYTES {
        segment.resize(SEGMENT_BYTES as usize, 0);
    }
    std::fs::write(codec::segment_path(dir.path(), 1), segment).expect("write segment");

    let (mut log, report) = open_log(dir.path(), options()).expect("open");
    let mut before = read_all(&log);
    let payload = b"appended after recovery";
    let seq = log.append(payload).expect("append");
    assert_eq!(seq.get(), report.next_seq);
    assert_eq!(
        log.reader().get(seq).expect("get").as_deref(),
        Some(&payload[..])
    );
    log.close().expect("close");

    let (log, again) = open_log(dir.path(), options()).expect("reopen");
    assert!(again.clean_shutdown, "{again:?}");
    before.push((seq.get(), payload.to_vec()));
    let after = read_all(&log);
    assert_eq!(after, before, "reopening changes nothing that was readable");
    after
}

/// An active segment whose last frame ends exactly at the end of its file (a file cut short
/// by something other than the writer) left no room for the seal: the roll skipped it (a
/// debug assertion in debug builds), and after a reopen the earlier records failed with
/// `MissingSeal`. The writer now zero-extends such a file at open.
#[test]
fn unpadded_segment_keeps_room_for_its_seal() {
    let records = replay(include_bytes!(
        "../fuzz_inputs/segment_scan-unpadded-frames.bin"
    ));
    assert_eq!(records.len(), 11);
    assert_eq!(records.first().map(|r| r.0), Some(1));
}

/// The same with a segment file that holds nothing but its header (the empty fuzz input).
#[test]
fn header_only_segment_keeps_room_for_its_seal() {
    let records = replay(include_bytes!("../fuzz_inputs/segment_scan-empty.bin"));
    assert_eq!(records.len(), 1);
}

/// A valid compressed frame was reported as corrupt (`Decompress`): the reader decompressed
/// into an empty slice. It now reads back decompressed.
#[test]
fn compressed_frame_reads_back() {
    let records = replay(include_bytes!(
        "../fuzz_inputs/segment_scan-compressed-frame.bin"
    ));
    assert_eq!(records.first(), Some(&(1, vec![b'e'; 2000])));
}

/// Found while minimising the previous input: the writer never compressed anything (the same
/// empty-slice mistake). A large compressible payload is now stored compressed and reads back.
#[test]
fn large_compressible_payload_is_stored_compressed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut log, _) = open_log(dir.path(), LogOptions::default()).expect("open");
    let payload: Vec<u8> = (0..200_000u32)
        .map(|i| b"ESL event "[i as usize % 10])
        .collect();
    let seq = log.append(&payload).expect("append");
    assert_eq!(log.reader().get(seq).expect("get"), Some(payload.clone()));
    log.close().expect("close");

    let bytes = std::fs::read(codec::segment_path(dir.path(), 1)).expect("read segment");
    let header = FileHeader::decode(&bytes, SEGMENT_MAGIC).expect("header");
    match codec::decode_frame(&bytes[codec::HEADER_LEN..], header.salt, 1, 16 << 20) {
        Decoded::Record {
            compressed,
            payload: stored,
            ..
        } => {
            assert!(compressed, "the frame is compressed");
            assert!(stored.len() < payload.len() / 8);
        }
        other => panic!("expected a record frame, found {other:?}"),
    }
    let (log, _) = open_log(dir.path(), LogOptions::default()).expect("reopen");
    assert_eq!(log.reader().get(seq).expect("get"), Some(payload));
}
