//! Space benchmark (T13): framing and index overhead of ~370-byte records.
//!
//! Writes records to our log, closes it, and walks every segment with the public codecs
//! (`codec::FileHeader::decode`, `codec::decode_frame`) to count the bytes the frames use:
//! the file header, every record frame and the seal. Index files are counted whole. The
//! preallocated, still-zero tail of the active segment is disk space reserved, not used by
//! frames; it is printed separately. The naive log's overhead (8 bytes per record) is printed
//! for comparison. Run with `cargo bench --bench space`.

mod common;

use std::path::Path;

use common::{NaiveLog, ours, payloads, print_note, print_ratio, print_section, scratch_dir};
use esl_replay::storage::Log;
use esl_replay::storage::SyncPolicy;
use esl_replay::storage::codec::{self, Decoded, FileHeader, SEGMENT_MAGIC};

/// Bytes used by frames in one segment file: header, record frames and the seal if any.
fn used_bytes(path: &Path, max_payload: u32) -> (u64, u64) {
    let bytes = std::fs::read(path).expect("read segment");
    let header = FileHeader::decode(&bytes, SEGMENT_MAGIC).expect("segment header");
    let mut at = codec::HEADER_LEN;
    let mut seq = header.base;
    let mut payload = 0u64;
    loop {
        match codec::decode_frame(&bytes[at..], header.salt, seq, max_payload) {
            Decoded::Record {
                payload: p,
                frame_len,
                ..
            } => {
                payload += p.len() as u64;
                at += frame_len;
                seq += 1;
            }
            Decoded::Seal => {
                at += codec::FRAME_HEADER_LEN;
                break;
            }
            Decoded::Empty => break,
            Decoded::Invalid(kind) => panic!("invalid frame at {at} in {}: {kind}", path.display()),
        }
    }
    (at as u64, payload)
}

fn main() {
    let count = common::size(1_000_000, 10_000);
    let pool = payloads(4096, 13);
    let dir = scratch_dir("space");
    let options = ours(SyncPolicy::OsOnly);
    let max_payload = options.max_payload_bytes;
    let (mut log, _) = Log::open(dir.path().join("ours"), options).expect("open");
    std::fs::create_dir_all(dir.path().join("naive")).expect("naive dir");
    let mut naive = NaiveLog::create(&dir.path().join("naive")).expect("naive");
    let mut payload_bytes = 0u64;
    for i in 0..count {
        let payload = &pool[i % pool.len()];
        log.append(payload).expect("append");
        naive.append(payload).expect("naive append");
        payload_bytes += payload.len() as u64;
    }
    log.close().expect("close");
    naive.sync().expect("naive sync");

    let (mut frames, mut index, mut reserved, mut seen_payload, mut segments) = (0, 0, 0, 0, 0);
    let mut naive_bytes = 0;
    for entry in std::fs::read_dir(dir.path().join("ours"))
        .expect("list")
        .flatten()
    {
        let path = entry.path();
        let len = entry.metadata().expect("metadata").len();
        match path.extension().and_then(|e| e.to_str()) {
            Some("seg") => {
                let (used, payload) = used_bytes(&path, max_payload);
                frames += used;
                seen_payload += payload;
                reserved += len - used;
                segments += 1;
            }
            Some("idx") => index += len,
            _ => {}
        }
    }
    for entry in std::fs::read_dir(dir.path().join("naive"))
        .expect("list")
        .flatten()
    {
        naive_bytes += entry.metadata().expect("metadata").len();
    }
    assert_eq!(
        seen_payload, payload_bytes,
        "every payload byte is accounted for"
    );

    if common::selected("t13_space") {
        let mean = payload_bytes as f64 / count as f64;
        let overhead = (frames + index) as f64 / payload_bytes as f64 - 1.0;
        let naive_overhead = naive_bytes as f64 / payload_bytes as f64 - 1.0;
        print_section("t13_space: (segment bytes used by frames + index bytes) / payload bytes");
        print_note(&format!(
            "{count} records, mean payload {mean:.1} B, {payload_bytes} payload bytes, {segments} segments (default LogOptions)"
        ));
        print_note(&format!(
            "frames (headers + frame headers + seals) {frames} B, index {index} B, preallocated unused tail {reserved} B (not counted)"
        ));
        print_note(&format!(
            "breakdown: frame headers {:.3} %, index {:.3} %, file headers and seals {:.4} %",
            (count * codec::FRAME_HEADER_LEN) as f64 / payload_bytes as f64 * 100.0,
            index as f64 / payload_bytes as f64 * 100.0,
            (frames - payload_bytes - (count * codec::FRAME_HEADER_LEN) as u64) as f64
                / payload_bytes as f64
                * 100.0,
        ));
        print_ratio(
            "T13 space overhead",
            &format!("{:.3} %", overhead * 100.0),
            &format!("naive {:.3} %", naive_overhead * 100.0),
            1.0 + overhead,
            "<= 3 % overhead",
            overhead <= 0.03,
        );
    }
}
