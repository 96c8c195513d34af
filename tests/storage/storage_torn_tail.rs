//! Recovery from damaged bytes: torn tails, damage before the tail, damaged or missing
//! indexes and headers, and the clean-shutdown fast path.
//!
//! The exhaustive tests build a small log, stop it as a killed process would
//! (`simulate_crash`), and keep the directory as a template. For every byte offset inside
//! the last few frames they then "truncate" a copy there (zero from that offset on: segment
//! files are preallocated, so a torn write leaves zeros, and the engine never shrinks a file
//! readers may have mapped), and separately flip every byte of those frames, and reopen in
//! each recovery mode. The expected outcome is computed independently from the frame map of
//! the template: exactly the valid prefix (with the torn tail reported and zeroed), or, for
//! damage followed by valid frames, a `Corrupt` error naming the segment and the damaged
//! frame's offset unless the mode is `PointInTime`. No case may panic or yield a corrupt
//! record. The remaining tests damage sealed segments, index files and headers, and check
//! the recovery report of clean and unclean shutdowns. The copies live in memory
//! (`/dev/shm`) when possible, since the tests reopen thousands of them.

#![allow(
    clippy::disallowed_methods,
    reason = "tests delete index files with std::fs::remove_file to simulate their loss"
)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use esl_replay::storage::codec::{
    CLEAN_FILE, DURABLE_FILE, FORMAT_VERSION, FileHeader, FrameKind, HEADER_LEN, SEGMENT_MAGIC,
    SPARE_FILE, START_FILE, StartMark, decode_index_file, encode_frame, index_path,
};
use esl_replay::storage::{
    CorruptKind, Error, Io, Log, LogOptions, Reader, RecoveryMode, SegmentId, Seq, SyncPolicy,
    write_atomic,
};

use crate::support;
use crate::support::process::open_log;
use crate::support::storage::{
    FrameSpan, copy_dir, fast_options, file_path, flip_byte, frames_of, payload_of_len, read_all,
    read_range, scratch_dir, segment_bases, segment_file, small_options, zero_range,
};

/// A format version newer than this build knows.
const NEWER_VERSION: u16 = FORMAT_VERSION + 1;

/// How many frames at the end of the log the exhaustive tests damage.
const LAST_FRAMES: usize = 4;

/// A crashed log kept as a template: its records and the frames of its last segment.
struct Template {
    dir: tempfile::TempDir,
    payloads: Vec<Vec<u8>>,
    base: u64,
    frames: Vec<FrameSpan>,
    file_len: u64,
}

impl Template {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn segment(&self, dir: &Path) -> std::path::PathBuf {
        segment_file(dir, self.base)
    }

    /// The frames the exhaustive tests damage.
    fn tail(&self) -> &[FrameSpan] {
        &self.frames[self.frames.len() - LAST_FRAMES..]
    }

    fn tail_start(&self) -> u64 {
        self.tail()[0].offset
    }

    fn tail_end(&self) -> u64 {
        self.frames.last().map_or(HEADER_LEN as u64, FrameSpan::end)
    }

    /// A fresh copy of the template.
    fn copy(&self) -> tempfile::TempDir {
        let dir = scratch_dir();
        copy_dir(self.path(), dir.path());
        dir
    }
}

fn options(mode: RecoveryMode) -> LogOptions {
    LogOptions {
        recovery_mode: mode,
        compress_min_bytes: None,
        ..fast_options()
    }
}

/// Builds a crashed log with `filler` records and then four records whose frames are 8, 45,
/// 268 and 98 bytes long, all in the last segment.
fn build(filler: u64) -> Template {
    let dir = scratch_dir();
    let (mut log, _) = open_log(dir.path(), options(RecoveryMode::default())).unwrap();
    let mut payloads = Vec::new();
    let mut push = |log: &mut Log, payload: Vec<u8>| {
        let seq = log.append(&payload).unwrap();
        assert_eq!(seq.0, payloads.len() as u64 + 1);
        payloads.push(payload);
    };
    for i in 0..filler {
        push(&mut log, payload_of_len(i, (i as usize * 37) % 1500));
    }
    // Make sure the damaged frames share the last segment with some undamaged ones: roll
    // early if the active segment is nearly full.
    let active = segment_file(dir.path(), log.active_segment().0);
    let used = frames_of(&active).1.last().map_or(0, FrameSpan::end);
    if support::storage::SEGMENT_BYTES - used < 2048 {
        push(&mut log, payload_of_len(999, 4000));
    }
    let segment = log.active_segment();
    for i in 0..6 {
        push(&mut log, payload_of_len(1000 + i, 20));
    }
    for (i, len) in [0, 37, 260, 90].into_iter().enumerate() {
        push(&mut log, payload_of_len(2000 + i as u64, len));
    }
    assert_eq!(
        log.active_segment(),
        segment,
        "the tail must not straddle a roll"
    );
    log.sync().unwrap();
    log.flush().unwrap();
    log.simulate_crash();
    // The tests tear the last frames, as a crash before their sync can: the watermark file
    // then names none of them durable, or the open refuses the damage [REC-03].
    esl_replay::storage::remove_durable(&dir.path().join(DURABLE_FILE)).unwrap();
    let base = *segment_bases(dir.path()).last().unwrap();
    let (_, frames) = frames_of(&segment_file(dir.path(), base));
    assert!(frames.len() >= LAST_FRAMES + 2 && !frames.iter().any(|f| f.seal));
    assert_eq!(frames.last().unwrap().seq, payloads.len() as u64);
    let file_len = std::fs::metadata(segment_file(dir.path(), base))
        .unwrap()
        .len();
    Template {
        dir,
        payloads,
        base,
        frames,
        file_len,
    }
}

/// The offset of the last non-zero byte of `bytes` (which start at `from`), if any.
fn last_nonzero(bytes: &[u8], from: u64) -> Option<u64> {
    bytes.iter().rposition(|b| *b != 0).map(|i| from + i as u64)
}

/// The log in `dir` holds exactly records `1..next` of the template, each intact, read
/// through the writer's reader and through a read-only follower.
fn assert_prefix(template: &Template, log: &Log, next: u64, case: &str) {
    assert_eq!(log.next_seq(), Seq(next), "{case}");
    let expected: Vec<(u64, Vec<u8>)> = (1..next)
        .map(|seq| (seq, template.payloads[seq as usize - 1].clone()))
        .collect();
    assert!(
        read_all(&log.reader()) == expected,
        "{case}: records differ"
    );
    let follower = Reader::open(log.dir(), &fast_options()).unwrap();
    assert!(read_all(&follower) == expected, "{case}: follower differs");
}

/// [REC-02] [REC-03] [FRM-02] Zeroing the log from every byte offset inside its last frames
/// reopens to exactly the frames that end before the cut. A partial frame is a torn tail: it
/// is reported, zeroed in place (the file keeps its size), and new appends continue after
/// the prefix; `AbsoluteConsistency` refuses it, naming the segment and offset.
#[test]
fn truncating_the_tail_at_every_byte_offset_recovers_exactly_the_valid_prefix() {
    for template in [build(30), build(160)] {
        let segment = template.segment(template.path());
        let original = read_range(&segment, 0, template.tail_end());
        for cut in template.tail_start()..=template.tail_end() {
            // The first frame the cut damages, if any.
            let hit = template.frames.iter().find(|f| f.end() > cut);
            let next = hit.map_or(template.payloads.len() as u64 + 1, |f| f.seq);
            let torn = hit.and_then(|f| {
                let kept = &original[f.offset as usize..cut as usize];
                last_nonzero(kept, f.offset).map(|last| (f.offset, last + 1 - f.offset))
            });
            for mode in [
                RecoveryMode::TolerateTornTail,
                RecoveryMode::PointInTime,
                RecoveryMode::AbsoluteConsistency,
            ] {
                let case = format!("cut at {cut}, {mode:?}, segment {}", template.base);
                let copy = template.copy();
                let segment = template.segment(copy.path());
                zero_range(&segment, cut, template.tail_end());
                let opened = open_log(copy.path(), options(mode));
                if mode == RecoveryMode::AbsoluteConsistency
                    && let Some((offset, bytes)) = torn
                {
                    match opened {
                        Err(Error::Corrupt {
                            segment: SegmentId(s),
                            offset: o,
                            kind: CorruptKind::TornTail { bytes: b },
                        }) => assert_eq!((s, o, b), (template.base, offset, bytes), "{case}"),
                        other => panic!("{case}: expected a refused torn tail, got {other:?}"),
                    }
                    continue;
                }
                let (mut log, report) = opened.unwrap_or_else(|e| panic!("{case}: {e}"));
                assert_eq!(report.next_seq, next, "{case}");
                match (torn, &report.torn_tail) {
                    (None, None) => {}
                    (Some((offset, bytes)), Some(tail)) => {
                        assert_eq!(tail.segment, SegmentId(template.base), "{case}");
                        assert_eq!((tail.offset, tail.bytes_dropped), (offset, bytes), "{case}");
                        assert!(
                            !matches!(tail.kind, CorruptKind::DamagedBeforeTail { .. }),
                            "{case}"
                        );
                        let after = read_range(&segment, offset, template.tail_end());
                        assert!(after.iter().all(|b| *b == 0), "{case}: tail not zeroed");
                    }
                    (expected, got) => panic!("{case}: torn tail {expected:?}, report {got:?}"),
                }
                let len = std::fs::metadata(&segment).unwrap().len();
                assert_eq!(len, template.file_len, "{case}: the segment changed size");
                assert_prefix(&template, &log, next, &case);
                if mode == RecoveryMode::TolerateTornTail {
                    assert_eq!(log.append(b"appended after recovery").unwrap(), Seq(next));
                    assert_eq!(
                        log.reader().get(Seq(next)).unwrap().as_deref(),
                        Some(&b"appended after recovery"[..]),
                        "{case}"
                    );
                }
                log.flush().unwrap();
                log.simulate_crash();
            }
        }
    }
}

/// [REC-03] [FRM-03] Flipping any byte of the last frames never yields a corrupt record.
/// Damage to the final frame is a torn tail (cut in the tolerant modes, refused by
/// `AbsoluteConsistency`); damage followed by valid frames is an error naming the segment,
/// the damaged frame's offset and where the next valid frame starts, except in
/// `PointInTime`, which keeps the prefix before the damage.
#[test]
fn flipping_any_byte_of_the_last_frames_never_yields_a_corrupt_record() {
    for template in [build(30), build(160)] {
        let tail: Vec<FrameSpan> = template.tail().to_vec();
        let last = *tail.last().unwrap();
        for at in template.tail_start()..template.tail_end() {
            let mask = if at % 2 == 0 { 0xFF } else { 1 << (at % 8) };
            let (index, frame) = tail
                .iter()
                .enumerate()
                .find(|(_, f)| f.offset <= at && at < f.end())
                .map(|(i, f)| (i, *f))
                .unwrap();
            let next_valid = tail.get(index + 1).map(|f| f.offset);
            for mode in [
                RecoveryMode::TolerateTornTail,
                RecoveryMode::PointInTime,
                RecoveryMode::AbsoluteConsistency,
            ] {
                let case = format!("byte {at} ^ {mask:#04x} in frame {}, {mode:?}", frame.seq);
                let copy = template.copy();
                let segment = template.segment(copy.path());
                flip_byte(&segment, at, mask);
                let damaged = read_range(&segment, frame.offset, last.end());
                let dropped = last_nonzero(&damaged, frame.offset).unwrap() + 1 - frame.offset;
                let refused = mode == RecoveryMode::AbsoluteConsistency
                    || (mode == RecoveryMode::TolerateTornTail && next_valid.is_some());
                let opened = open_log(copy.path(), options(mode));
                if refused {
                    let Err(error) = opened else {
                        panic!("{case}: damage was accepted");
                    };
                    let Error::Corrupt {
                        segment: SegmentId(s),
                        offset,
                        ref kind,
                    } = error
                    else {
                        panic!("{case}: expected Corrupt, got {error:?}");
                    };
                    assert_eq!((s, offset), (template.base, frame.offset), "{case}");
                    match next_valid {
                        Some(n) => assert_eq!(
                            kind,
                            &CorruptKind::DamagedBeforeTail { next_valid: n },
                            "{case}"
                        ),
                        None => {
                            assert_eq!(kind, &CorruptKind::TornTail { bytes: dropped }, "{case}")
                        }
                    }
                    let message = error.to_string();
                    assert!(
                        message.contains(&SegmentId(template.base).to_string())
                            && message.contains(&frame.offset.to_string()),
                        "{case}: message does not name segment and offset: {message}"
                    );
                    // A follower never recovers; it reads the valid prefix only.
                    let follower = Reader::open(copy.path(), &fast_options()).unwrap();
                    let seen = read_all(&follower);
                    assert_eq!(seen.len() as u64, frame.seq - 1, "{case}");
                    continue;
                }
                let (log, report) = opened.unwrap_or_else(|e| panic!("{case}: {e}"));
                let tail_report = report.torn_tail.clone().expect("damage is reported");
                assert_eq!(
                    (
                        tail_report.segment,
                        tail_report.offset,
                        tail_report.bytes_dropped
                    ),
                    (SegmentId(template.base), frame.offset, dropped),
                    "{case}"
                );
                match next_valid {
                    Some(n) => assert_eq!(
                        tail_report.kind,
                        CorruptKind::DamagedBeforeTail { next_valid: n },
                        "{case}"
                    ),
                    None => assert!(
                        !matches!(tail_report.kind, CorruptKind::DamagedBeforeTail { .. }),
                        "{case}"
                    ),
                }
                assert_prefix(&template, &log, frame.seq, &case);
                log.flush().unwrap();
                log.simulate_crash();
            }
        }
    }
}

/// A cleanly closed log of several segments (so the first ones are sealed with complete
/// indexes), with its records.
fn sealed_log() -> (tempfile::TempDir, Vec<Vec<u8>>) {
    let dir = scratch_dir();
    let (mut log, _) = open_log(dir.path(), options(RecoveryMode::default())).unwrap();
    let mut payloads = Vec::new();
    while segment_bases(dir.path()).len() < 4 {
        let payload = support::storage::payload(7, payloads.len() as u64 + 1, 3000);
        log.append(&payload).unwrap();
        payloads.push(payload);
    }
    log.close().unwrap();
    (dir, payloads)
}

fn expect_records(log_or_reader: &Reader, payloads: &[Vec<u8>], case: &str) {
    let got = read_all(log_or_reader);
    assert_eq!(got.len(), payloads.len(), "{case}");
    for (seq, payload) in got {
        assert!(
            payload == payloads[seq as usize - 1],
            "{case}: record {seq}"
        );
    }
}

/// Reads every record of `reader` until the first error, which must be `Corrupt` naming
/// `segment` and `offset`; the records before it must be intact and in order.
fn expect_corrupt_at(reader: &Reader, payloads: &[Vec<u8>], segment: u64, offset: u64, case: &str) {
    let mut next = 1;
    for item in reader.iter(Seq(1)).unwrap() {
        match item {
            Ok((seq, payload)) => {
                assert_eq!(seq, Seq(next), "{case}");
                assert!(payload == payloads[next as usize - 1], "{case}");
                next += 1;
            }
            Err(Error::Corrupt {
                segment: SegmentId(s),
                offset: o,
                ..
            }) => {
                assert_eq!((s, o), (segment, offset), "{case}");
                return;
            }
            Err(other) => panic!("{case}: expected Corrupt, got {other:?}"),
        }
    }
    panic!("{case}: the damage went unnoticed");
}

/// A named damage to a segment file and the offset where reading must report it.
type Damage = (&'static str, u64, Box<dyn Fn(&Path)>);

/// [SEG-06] Damage inside a sealed segment (a record, or its tail zeroed) is never skipped:
/// reading reaches it and fails with `Corrupt` naming the segment and the offset, with or
/// without the segment's index, and for followers as well.
#[test]
fn damage_in_a_sealed_segment_is_an_error_naming_segment_and_offset() {
    let (template, payloads) = sealed_log();
    let base = segment_bases(template.path())[1];
    let (_, frames) = frames_of(&segment_file(template.path(), base));
    let records: Vec<&FrameSpan> = frames.iter().filter(|f| !f.seal && f.len > 16).collect();
    let record = *records[records.len() / 2];
    let seal = *frames.last().unwrap();
    assert!(seal.seal);
    for drop_index in [false, true] {
        // (A flipped seal alone hides no record: `damaged_seal_hides_no_record` below.)
        let damages: [Damage; 2] = [
            (
                "payload byte flipped",
                record.offset,
                Box::new(move |p: &Path| flip_byte(p, record.offset + 9, 0x20)),
            ),
            (
                "zeroed from a record on",
                record.offset,
                Box::new(move |p: &Path| zero_range(p, record.offset, seal.end())),
            ),
        ];
        for (what, offset, damage) in &damages {
            let case = format!("{what}, index dropped: {drop_index}");
            let copy = scratch_dir();
            copy_dir(template.path(), copy.path());
            damage(&segment_file(copy.path(), base));
            if drop_index {
                std::fs::remove_file(index_path(copy.path(), base)).unwrap();
            }
            let follower = Reader::open(copy.path(), &fast_options()).unwrap();
            expect_corrupt_at(&follower, &payloads, base, *offset, &case);
            let (log, _) = open_log(copy.path(), options(RecoveryMode::default())).unwrap();
            let reader = log.reader();
            expect_corrupt_at(&reader, &payloads, base, *offset, &case);
            // [VER-01] verify names the damage and reads on past it.
            let report = reader.verify().unwrap();
            match report.problems.first() {
                Some(damage) => {
                    assert_eq!(
                        (damage.segment, damage.offset),
                        (SegmentId(base), *offset),
                        "{case}"
                    );
                }
                None => panic!("{case}: verify found nothing: {report:?}"),
            }
        }
    }
}

/// [RD-04] [VER-01] A damaged seal hides no record when the segment's records run to its
/// successor's base: every record reads, for the writer and followers, with or without the
/// segment's index, and verification names the seal.
#[test]
fn damaged_seal_hides_no_record() {
    let (template, payloads) = sealed_log();
    let base = segment_bases(template.path())[1];
    let (_, frames) = frames_of(&segment_file(template.path(), base));
    let seal = *frames.last().unwrap();
    assert!(seal.seal);
    for drop_index in [false, true] {
        let case = format!("index dropped: {drop_index}");
        let copy = scratch_dir();
        copy_dir(template.path(), copy.path());
        flip_byte(&segment_file(copy.path(), base), seal.offset + 2, 0x01);
        if drop_index {
            std::fs::remove_file(index_path(copy.path(), base)).unwrap();
        }
        let follower = Reader::open(copy.path(), &fast_options()).unwrap();
        expect_records(&follower, &payloads, &case);
        let (log, _) = open_log(copy.path(), options(RecoveryMode::default())).unwrap();
        let reader = log.reader();
        expect_records(&reader, &payloads, &case);
        let report = reader.verify().unwrap();
        let found: Vec<_> = report
            .problems
            .iter()
            .map(|d| (d.segment, d.offset))
            .collect();
        assert_eq!(found, [(SegmentId(base), seal.offset)], "{case}");
    }
}

/// [SEG-06] [IDX-01] [IDX-02] [IDX-03] [IDX-04] When the index files are lost, followers read
/// everything by scanning (and write nothing), and the writer rebuilds each sealed segment's
/// index byte for byte as it was.
#[test]
fn missing_index_of_a_sealed_segment_is_rebuilt_byte_for_byte() {
    let (dir, payloads) = sealed_log();
    let bases = segment_bases(dir.path());
    let sealed = &bases[..bases.len() - 1];
    let originals: Vec<Vec<u8>> = sealed
        .iter()
        .map(|b| std::fs::read(index_path(dir.path(), *b)).unwrap())
        .collect();
    for base in &bases {
        std::fs::remove_file(index_path(dir.path(), *base)).unwrap();
    }
    let follower = Reader::open(dir.path(), &fast_options()).unwrap();
    expect_records(&follower, &payloads, "follower without indexes");
    for base in &bases {
        assert!(!index_path(dir.path(), *base).exists(), "a follower wrote");
    }
    let (log, report) = open_log(dir.path(), options(RecoveryMode::default())).unwrap();
    assert!(report.clean_shutdown, "{report:?}");
    expect_records(&log.reader(), &payloads, "writer without indexes");
    for (base, original) in sealed.iter().zip(&originals) {
        let rebuilt = std::fs::read(index_path(dir.path(), *base)).unwrap();
        assert!(&rebuilt == original, "index of {base} rebuilt differently");
        let decoded = decode_index_file(&rebuilt, *base, salt_of(dir.path(), *base)).unwrap();
        assert!(decoded.footer.is_some() && !decoded.entries.is_empty());
    }
}

fn salt_of(dir: &Path, base: u64) -> u64 {
    frames_of(&segment_file(dir, base)).0.salt
}

/// [IDX-04] [SEG-06] Every damaged byte and every truncated length of a sealed segment's
/// index file is rebuilt transparently: all records read back, and the index is rewritten
/// as it was.
#[test]
fn every_damaged_byte_or_truncation_of_a_sealed_index_is_rebuilt_transparently() {
    let (template, payloads) = sealed_log();
    let base = segment_bases(template.path())[1];
    let original = std::fs::read(index_path(template.path(), base)).unwrap();
    let damages = (0..original.len())
        .map(|at| {
            let mut bytes = original.clone();
            bytes[at] ^= if at % 2 == 0 { 0xFF } else { 0x04 };
            (format!("byte {at} flipped"), bytes)
        })
        .chain((0..original.len()).map(|len| (format!("cut to {len}"), original[..len].to_vec())));
    for (case, bytes) in damages {
        let copy = scratch_dir();
        copy_dir(template.path(), copy.path());
        std::fs::write(index_path(copy.path(), base), &bytes).unwrap();
        let (log, _) = open_log(copy.path(), options(RecoveryMode::default())).unwrap();
        expect_records(&log.reader(), &payloads, &case);
        let rebuilt = std::fs::read(index_path(copy.path(), base)).unwrap();
        assert!(rebuilt == original, "{case}: index not rebuilt as it was");
        log.flush().unwrap();
        log.simulate_crash();
    }
}

/// [IDX-05] [REC-02] A damaged or missing index of the active segment after a crash only
/// means a longer scan: every record is recovered.
#[test]
fn damaged_index_of_the_active_segment_only_lengthens_the_scan() {
    let dir = scratch_dir();
    let (mut log, _) = open_log(dir.path(), options(RecoveryMode::default())).unwrap();
    let mut payloads = Vec::new();
    for seq in 1..=40u64 {
        let payload = payload_of_len(seq, 1400);
        log.append(&payload).unwrap();
        payloads.push(payload);
    }
    log.sync().unwrap();
    log.flush().unwrap();
    log.simulate_crash();
    let base = *segment_bases(dir.path()).last().unwrap();
    let index = std::fs::read(index_path(dir.path(), base)).unwrap();
    assert!(
        index.len() > HEADER_LEN + 16,
        "the sync wrote index entries"
    );
    let mut cases: Vec<(String, Option<Vec<u8>>)> = vec![("missing".into(), None)];
    for at in 0..index.len() {
        let mut bytes = index.clone();
        bytes[at] ^= 0x81;
        cases.push((format!("byte {at} flipped"), Some(bytes)));
    }
    for (case, bytes) in cases {
        let copy = scratch_dir();
        copy_dir(dir.path(), copy.path());
        match bytes {
            Some(bytes) => std::fs::write(index_path(copy.path(), base), bytes).unwrap(),
            None => std::fs::remove_file(index_path(copy.path(), base)).unwrap(),
        }
        let (log, report) = open_log(copy.path(), options(RecoveryMode::default())).unwrap();
        assert_eq!(report.next_seq, 41, "{case}");
        assert!(report.torn_tail.is_none(), "{case}: {report:?}");
        expect_records(&log.reader(), &payloads, &case);
        log.flush().unwrap();
        log.simulate_crash();
    }
}

/// [HDR-02] [SEG-01] Any damaged byte of a segment header is refused with `Corrupt` naming
/// the segment: at open for the active segment (writer and follower), on first read for a
/// sealed one.
#[test]
fn damaged_segment_header_is_an_error_naming_the_segment() {
    let (template, payloads) = sealed_log();
    let bases = segment_bases(template.path());
    let (sealed, active) = (bases[1], *bases.last().unwrap());
    for at in 0..HEADER_LEN as u64 {
        for mask in [0x01, 0xFF] {
            let case = format!("header byte {at} ^ {mask:#04x}");
            let copy = scratch_dir();
            copy_dir(template.path(), copy.path());
            flip_byte(&segment_file(copy.path(), active), at, mask);
            let expect_header_error = |result: Result<(), Error>, segment: u64| match result {
                Err(Error::Corrupt {
                    segment: SegmentId(s),
                    offset: 0,
                    kind: CorruptKind::BadMagic | CorruptKind::ChecksumMismatch { .. },
                }) => assert_eq!(s, segment, "{case}"),
                other => panic!("{case}: expected a header error, got {other:?}"),
            };
            let opened = open_log(copy.path(), options(RecoveryMode::default()));
            expect_header_error(opened.map(|_| ()), active);
            let followed = Reader::open(copy.path(), &fast_options());
            expect_header_error(followed.map(|_| ()), active);

            let copy = scratch_dir();
            copy_dir(template.path(), copy.path());
            flip_byte(&segment_file(copy.path(), sealed), at, mask);
            let (log, _) = open_log(copy.path(), options(RecoveryMode::default())).unwrap();
            let report = log.reader().verify().unwrap();
            let first = report
                .problems
                .first()
                .map_or(Ok(()), |d| Err(d.to_error()));
            expect_header_error(first, sealed);
            let mut before = log.reader().iter(Seq(1)).unwrap();
            for seq in 1..sealed {
                let (got, payload) = before.next().unwrap().unwrap();
                assert!(got == Seq(seq) && payload == payloads[seq as usize - 1]);
            }
            assert!(before.next().unwrap().is_err(), "{case}");
        }
    }
}

fn rewrite_header(dir: &Path, base: u64, change: impl FnOnce(&mut FileHeader)) {
    let path = segment_file(dir, base);
    let mut header = frames_of(&path).0;
    change(&mut header);
    support::storage::write_bytes(&path, 0, &header.encode(SEGMENT_MAGIC));
}

/// [SEG-01] A well-formed header that names another segment than its file name is refused
/// at the base field's offset.
#[test]
fn header_naming_another_segment_is_refused() {
    let (dir, _) = sealed_log();
    let active = *segment_bases(dir.path()).last().unwrap();
    rewrite_header(dir.path(), active, |h| h.base += 1);
    match open_log(dir.path(), options(RecoveryMode::default())) {
        Err(Error::Corrupt {
            segment,
            offset: 16,
            kind: CorruptKind::WrongSegment { expected, found },
        }) => {
            assert_eq!(segment, SegmentId(active));
            assert_eq!((expected, found), (active, active + 1));
        }
        other => panic!("expected WrongSegment, got {other:?}"),
    }
}

/// [HDR-03] [HDR-04] A newer read version is refused naming both versions; a newer write
/// version opens read-only: the writer refuses it, followers read everything.
#[test]
fn newer_read_version_is_refused_and_newer_write_version_opens_read_only() {
    let (dir, payloads) = sealed_log();
    let active = *segment_bases(dir.path()).last().unwrap();
    rewrite_header(dir.path(), active, |h| h.write_version = NEWER_VERSION);
    match open_log(dir.path(), options(RecoveryMode::default())) {
        Err(Error::ReadOnlyVersion {
            segment,
            found: NEWER_VERSION,
            supported: FORMAT_VERSION,
        }) => assert_eq!(segment, SegmentId(active)),
        other => panic!("expected ReadOnlyVersion, got {other:?}"),
    }
    let follower = Reader::open(dir.path(), &fast_options()).unwrap();
    expect_records(&follower, &payloads, "newer write version");

    rewrite_header(dir.path(), active, |h| h.read_version = NEWER_VERSION);
    for result in [
        open_log(dir.path(), options(RecoveryMode::default())).map(|_| ()),
        Reader::open(dir.path(), &fast_options()).map(|_| ()),
    ] {
        match result {
            Err(Error::Corrupt {
                kind:
                    CorruptKind::UnsupportedVersion {
                        found: NEWER_VERSION,
                        supported: FORMAT_VERSION,
                    },
                ..
            }) => {}
            other => panic!("expected UnsupportedVersion, got {other:?}"),
        }
    }
}

/// [REC-01] [META-02] After a clean close the next open scans nothing and removes the
/// marker (so a later crash is not mistaken for a clean shutdown); after a crash it scans.
#[test]
fn clean_shutdown_reopens_without_scanning_and_a_crash_scans() {
    let dir = scratch_dir();
    let opts = options(RecoveryMode::AbsoluteConsistency);
    let (mut log, _) = open_log(dir.path(), opts.clone()).unwrap();
    for seq in 1..=300u64 {
        log.append(&payload_of_len(seq, 500)).unwrap();
    }
    log.close().unwrap();
    assert!(dir.path().join(CLEAN_FILE).exists());

    let (mut log, report) = open_log(dir.path(), opts.clone()).unwrap();
    assert!(report.clean_shutdown, "{report:?}");
    assert_eq!(report.scanned_bytes, 0, "{report:?}");
    assert_eq!(report.next_seq, 301);
    assert!(
        !dir.path().join(CLEAN_FILE).exists(),
        "the marker must not outlive the open"
    );
    for seq in 301..=320u64 {
        log.append(&payload_of_len(seq, 500)).unwrap();
    }
    log.flush().unwrap();
    log.simulate_crash();

    let (log, report) = open_log(dir.path(), opts).unwrap();
    assert!(!report.clean_shutdown, "{report:?}");
    assert!(report.scanned_bytes > 0, "{report:?}");
    assert_eq!(report.next_seq, 321);
    drop(log);
}

/// [META-02] A stale clean-shutdown marker (restored after more records were appended and
/// the writer crashed) does not match the segment, so the open scans and keeps every record.
#[test]
fn stale_clean_shutdown_marker_is_not_trusted() {
    let dir = scratch_dir();
    let opts = options(RecoveryMode::default());
    let (mut log, _) = open_log(dir.path(), opts.clone()).unwrap();
    for seq in 1..=50u64 {
        log.append(&payload_of_len(seq, 100)).unwrap();
    }
    log.close().unwrap();
    let marker = std::fs::read(dir.path().join(CLEAN_FILE)).unwrap();
    let (mut log, _) = open_log(dir.path(), opts.clone()).unwrap();
    for seq in 51..=80u64 {
        log.append(&payload_of_len(seq, 100)).unwrap();
    }
    log.flush().unwrap();
    log.simulate_crash();
    write_atomic(&dir.path().join(CLEAN_FILE), &marker).unwrap();
    let (log, report) = open_log(dir.path(), opts).unwrap();
    assert!(!report.clean_shutdown, "{report:?}");
    assert_eq!(report.next_seq, 81);
    let all = read_all(&log.reader());
    assert_eq!(all.len(), 80);
    assert_eq!(all[79].1, payload_of_len(80, 100));
}

/// [REC-06] A segment that ends in a seal with no successor (a crash in the middle of a roll)
/// is completed by the first append after the open: the successor is created and numbering
/// continues.
#[test]
fn interrupted_roll_is_completed_by_the_first_append() {
    let template = build(10);
    let dir = template.copy();
    let last = template.frames.last().unwrap();
    let (header, _) = frames_of(&template.segment(dir.path()));
    let seal = encode_frame(header.salt, last.seq + 1, FrameKind::Seal, &[]);
    support::storage::write_bytes(&template.segment(dir.path()), last.end(), &seal);
    let (mut log, report) = open_log(dir.path(), options(RecoveryMode::default())).unwrap();
    assert!(report.pending_roll, "{report:?}");
    assert!(report.torn_tail.is_none(), "{report:?}");
    assert_eq!(report.next_seq, last.seq + 1);
    assert_eq!(log.append(b"next").unwrap(), Seq(last.seq + 1));
    assert_eq!(log.active_segment(), SegmentId(last.seq + 1));
    let all = read_all(&log.reader());
    assert_eq!(all.len() as u64, last.seq + 1);
    for (seq, payload) in &all[..template.payloads.len()] {
        assert!(
            payload == &template.payloads[*seq as usize - 1],
            "record {seq}"
        );
    }
    assert_eq!(all[template.payloads.len()].1, b"next");
}

/// [RD-01] [RD-03] A follower reading a log whose last segment is sealed but has no successor
/// yet (a roll in progress, or a writer killed mid-roll) reads every record and then finds
/// the end of the log, not corruption; it continues once the successor appears.
#[test]
fn follower_at_a_seal_without_successor_sees_the_end_not_corruption() {
    let template = build(10);
    let dir = template.copy();
    let last = *template.frames.last().unwrap();
    let (header, _) = frames_of(&template.segment(dir.path()));
    let seal = encode_frame(header.salt, last.seq + 1, FrameKind::Seal, &[]);
    support::storage::write_bytes(&template.segment(dir.path()), last.end(), &seal);
    let follower = Reader::open(dir.path(), &fast_options()).unwrap();
    assert_eq!(follower.next_seq().unwrap(), Seq(last.seq + 1));
    let mut cursor = follower.cursor(Seq(1)).unwrap();
    let mut count = 0;
    while let Some(record) = cursor.next().unwrap() {
        assert!(record.payload == template.payloads[record.seq.0 as usize - 1]);
        count += 1;
    }
    assert_eq!(count, last.seq);
    assert!(cursor.next().unwrap().is_none(), "the end stays the end");

    let (mut log, report) = open_log(dir.path(), options(RecoveryMode::default())).unwrap();
    assert!(report.pending_roll);
    log.append(b"in the successor").unwrap();
    log.flush().unwrap();
    let record = cursor.next().unwrap().expect("the follower moves on");
    assert_eq!(
        (record.seq, record.payload),
        (Seq(last.seq + 1), &b"in the successor"[..])
    );
    assert_eq!(read_all(&follower).len() as u64, last.seq + 1);
}

/// [DIR-02] Temporary files of interrupted operations (the spare segment, a half-written
/// metadata replacement) are removed on open and counted.
#[test]
fn stray_temporaries_are_removed_on_open() {
    let template = build(10);
    let dir = template.copy();
    std::fs::write(dir.path().join(SPARE_FILE), b"half a segment").unwrap();
    let partial = dir
        .path()
        .join(format!(".{START_FILE}.00000000deadbeef.tmp"));
    std::fs::write(&partial, b"half a start mark").unwrap();
    let (log, report) = open_log(dir.path(), options(RecoveryMode::default())).unwrap();
    assert_eq!(report.removed_temporaries, 2, "{report:?}");
    assert!(!partial.exists());
    assert_eq!(report.next_seq, template.payloads.len() as u64 + 1);
    drop(log);
}

/// [TRUNC-03] [META-01] A truncation interrupted after writing the new start but before
/// deleting the segments below it is finished on open: those segments and orphaned index
/// files go, and no record below the start is readable.
#[test]
fn interrupted_truncation_is_finished_on_open() {
    let (dir, payloads) = sealed_log();
    let bases = segment_bases(dir.path());
    let start = bases[2] + 3;
    write_atomic(&dir.path().join(START_FILE), &StartMark { start }.encode()).unwrap();
    let orphan = index_path(dir.path(), 999_999);
    std::fs::copy(index_path(dir.path(), bases[0]), &orphan).unwrap();
    let (log, report) = open_log(dir.path(), options(RecoveryMode::default())).unwrap();
    assert_eq!(report.removed_segments, 2, "{report:?}");
    assert_eq!(report.first_seq, start);
    assert_eq!(segment_bases(dir.path()), bases[2..].to_vec());
    assert!(!orphan.exists(), "an orphaned index survived");
    assert!(!index_path(dir.path(), bases[0]).exists());
    let reader = log.reader();
    assert_eq!(reader.get(Seq(start - 1)).unwrap(), None);
    let all = read_all(&reader);
    assert_eq!(all.first().map(|r| r.0), Some(start));
    assert_eq!(all.len() as u64, payloads.len() as u64 + 1 - start);
}

/// [REC-11] A start file beyond the log's end (a truncation made it durable before the
/// records below it, which a power loss then lost) is lowered to the end on open, and
/// reported: left as it was, it would hide the records appended from then on. Before that,
/// verification reports it.
#[test]
fn a_start_beyond_the_end_is_lowered_to_it() {
    let dir = scratch_dir();
    let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
    for tag in 0..10 {
        log.append(&payload_of_len(tag, 300)).unwrap();
    }
    log.close().unwrap();
    let start_file = dir.path().join(START_FILE);
    write_atomic(&start_file, &StartMark { start: 50 }.encode()).unwrap();
    // Before a writer lowers it, verification reports what it hides [VER-01].
    let problems = Reader::open(dir.path(), &fast_options())
        .unwrap()
        .verify()
        .unwrap()
        .problems;
    assert!(
        matches!(
            problems.as_slice(),
            [problem] if problem.kind == CorruptKind::StartBeyondEnd { start: 50, end: 11 }
        ),
        "{problems:?}"
    );

    let (mut log, report) = open_log(dir.path(), fast_options()).unwrap();
    assert_eq!(report.start_beyond_end, Some(50), "{report:?}");
    assert_eq!((report.first_seq, report.next_seq), (11, 11));
    let stored = StartMark::decode(&std::fs::read(&start_file).unwrap()).unwrap();
    assert_eq!(stored.start, 11);
    for tag in 0..5 {
        log.append(&payload_of_len(100 + tag, 300)).unwrap();
    }
    let seen: Vec<u64> = read_all(&log.reader()).iter().map(|r| r.0).collect();
    assert_eq!(seen, (11..16).collect::<Vec<_>>());
    log.close().unwrap();
    let (_, report) = open_log(dir.path(), fast_options()).unwrap();
    assert_eq!(report.start_beyond_end, None);
}

/// Records the files synced through it, and while `held` is set makes every `fdatasync`
/// wait: a writer's sync thread that has not reached its rolls yet.
#[derive(Debug, Default)]
struct HeldSyncs {
    held: Mutex<bool>,
    released: Condvar,
    synced: Mutex<Vec<PathBuf>>,
    directory_syncs: Mutex<usize>,
}

impl HeldSyncs {
    fn hold(&self, held: bool) {
        *self.held.lock() = held;
        self.released.notify_all();
    }

    fn synced(&self, segment: &Path) -> bool {
        self.synced
            .lock()
            .iter()
            .any(|path| path.file_name() == segment.file_name())
    }
}

impl Io for HeldSyncs {
    fn sync_data(&self, file: &File) -> std::io::Result<()> {
        let mut held = self.held.lock();
        while *held {
            self.released.wait(&mut held);
        }
        drop(held);
        self.synced.lock().push(file_path(file));
        file.sync_data()
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        *self.directory_syncs.lock() += 1;
        File::open(dir)?.sync_all()
    }
}

/// [TRUNC-01] A truncation from a follower makes every record below its new start durable
/// before the start, even while the writer's sync thread has not finished the roll that
/// sealed them ([ROLL-07]): it syncs the sealed segment and its successor, then the
/// directory. Syncing the last segment alone let a power loss end the log below the start.
#[test]
fn a_followers_truncation_syncs_the_rolls_the_writer_has_not_finished() {
    let dir = scratch_dir();
    let writer_io = Arc::new(HeldSyncs::default());
    let options = LogOptions {
        sync_policy: SyncPolicy::OsOnly,
        io: writer_io.clone(),
        ..small_options()
    };
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    writer_io.hold(true);
    writer_io.synced.lock().clear();
    let first = log.active_segment();
    let mut tag = 0;
    while log.active_segment() == first {
        tag += 1;
        log.append(&payload_of_len(tag, 900)).unwrap();
    }
    log.flush().unwrap();
    let second = log.active_segment();
    let writer_synced = writer_io.synced(&segment_file(dir.path(), first.base().0));

    let follower_io = Arc::new(HeldSyncs::default());
    let follower = Reader::open(
        dir.path(),
        &LogOptions {
            io: follower_io.clone(),
            ..small_options()
        },
    )
    .unwrap();
    let truncated = follower.truncate_prefix(Seq(first.base().0 + 5));
    // Released before any assertion, so that a failure does not leave the writer waiting.
    writer_io.hold(false);
    log.close().unwrap();
    assert!(!writer_synced, "the writer synced the sealed segment");
    truncated.unwrap();
    for segment in [first, second] {
        assert!(
            follower_io.synced(&segment_file(dir.path(), segment.base().0)),
            "the follower did not sync {segment}: {:?}",
            follower_io.synced.lock()
        );
    }
    assert!(
        *follower_io.directory_syncs.lock() >= 2,
        "the segments' names, then the start"
    );
}

/// [REC-10] A log left with one segment that never got its own header opens empty at its
/// start, with the segment made again and named in the report: a roll's successor whose
/// header a power loss lost after a truncation to its base removed the segment before it
/// (zeros there, or the header of another segment, as a kept file holds). Any other damage to
/// the header is still refused.
#[test]
fn an_only_segment_without_its_own_header_is_made_again() {
    let template = scratch_dir();
    let (mut log, _) = open_log(template.path(), fast_options()).unwrap();
    let mut tag = 0;
    while segment_bases(template.path()).len() < 2 {
        tag += 1;
        log.append(&payload_of_len(tag, 900)).unwrap();
    }
    log.flush().unwrap();
    let bases = segment_bases(template.path());
    let (first, last) = (bases[0], bases[1]);
    let other_header = read_range(&segment_file(template.path(), first), 0, HEADER_LEN as u64);
    log.truncate_prefix(Seq(last)).unwrap();
    log.simulate_crash();
    // A power loss that lost the header lost every record after it unacknowledged: the
    // watermark file cannot name them (the sync thread here may have written it after
    // syncing them), or the open would report them missing [REC-12].
    esl_replay::storage::remove_durable(&template.path().join(DURABLE_FILE)).unwrap();

    for header in [vec![0; HEADER_LEN], other_header] {
        let dir = scratch_dir();
        copy_dir(template.path(), dir.path());
        let segment = segment_file(dir.path(), last);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .and_then(|file| std::os::unix::fs::FileExt::write_all_at(&file, &header, 0))
            .unwrap();
        let (log, report) = open_log(dir.path(), fast_options()).unwrap();
        let removed = report.unfinished_roll.as_ref().unwrap();
        assert_eq!((removed.segment, removed.removed), (SegmentId(last), 1));
        assert_eq!(log.next_seq(), Seq(last));
        assert!(read_all(&log.reader()).is_empty());
        let made = read_range(&segment, 0, HEADER_LEN as u64);
        assert_eq!(FileHeader::decode(&made, SEGMENT_MAGIC).unwrap().base, last);
        log.close().unwrap();
    }

    // Damage that is neither stays an error naming the segment.
    let dir = scratch_dir();
    copy_dir(template.path(), dir.path());
    flip_byte(&segment_file(dir.path(), last), 3, 0x40);
    match open_log(dir.path(), fast_options()) {
        Err(Error::Corrupt { segment, .. }) => assert_eq!(segment, SegmentId(last)),
        other => panic!("expected a corrupt header, got {other:?}"),
    }
}
