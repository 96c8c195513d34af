//! Nothing lost, nothing hidden (issue 16, items 2, 6 and 7).
//!
//! * A clean shutdown's recorded end is a promise: a damaged frame below it is corruption,
//!   reported by `verify` with its segment and offset and refused by the writer's open, never
//!   cut as a torn tail; only `RecoveryMode::PointInTime` cuts it, and reports the cut
//!   [REC-01].
//! * `verify` checks every segment, continues past damage, lists every damaged region and
//!   counts every intact record [VER-01]; reads of undamaged records keep working beside a
//!   damaged segment, and a cursor can move past damage [RD-04].
//! * A full disk is recovered with the log's own operations: opening needs no room for a new
//!   segment, so verification and prefix truncation work, a failed spare is removed, and an
//!   import says how many records it committed [REC-06] [SEG-08].

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use esl_replay::record::{Criteria, Record};
use esl_replay::storage::codec::{CLEAN_FILE, CleanMark, SPARE_FILE, index_path};
use esl_replay::storage::{
    CorruptKind, Error, IoOp, Log, LogOptions, ReadStrategy, Reader, RecoveryMode, SegmentId, Seq,
    StdIo,
};
use esl_replay::store::{self, ArtifactReader as _, ArtifactStore as _, LogStore, dataset};

use crate::support;
#[cfg(feature = "cli")]
use crate::support::process::SpawnSafely as _;
#[cfg(feature = "cli")]
use crate::support::process::open_store;
use crate::support::process::{open_log, open_store_with};
use crate::support::storage::{
    FaultyIo, Plan, flip_byte, frames_of, read_all, segment_bases, segment_file, small_options,
    temp_dir, with_io, zero_range,
};

fn payload(seq: u64) -> Vec<u8> {
    support::storage::payload_of_len(seq, 300 + (seq as usize * 37) % 900)
}

/// A cleanly closed log of `count` records in 64 KiB segments.
fn closed_log(count: u64) -> tempfile::TempDir {
    let (dir, log) = open_log_of(count);
    log.close().unwrap();
    dir
}

/// An open log of `count` records in 64 KiB segments.
fn open_log_of(count: u64) -> (tempfile::TempDir, Log) {
    let dir = temp_dir();
    let (mut log, _) = open_log(dir.path(), small_options()).unwrap();
    for seq in 1..=count {
        assert_eq!(log.append(&payload(seq)).unwrap(), Seq(seq));
    }
    (dir, log)
}

/// A cleanly closed log of at least `count` records whose last segment holds at least
/// `in_last` of them (so that it has index entries after its first frames).
fn closed_log_with_full_tail(count: u64, in_last: u64) -> tempfile::TempDir {
    let dir = temp_dir();
    let (mut log, _) = open_log(dir.path(), small_options()).unwrap();
    let mut seq = 1;
    while seq <= count || seq - log.active_segment().0 < in_last {
        assert_eq!(log.append(&payload(seq)).unwrap(), Seq(seq));
        seq += 1;
    }
    log.close().unwrap();
    dir
}

/// An empty log in `dir` (its first segment is created without faults).
fn create_log(dir: &Path) {
    open_log(dir, small_options()).unwrap().0.close().unwrap();
}

fn clean_mark(dir: &Path) -> CleanMark {
    CleanMark::decode(&std::fs::read(dir.join(CLEAN_FILE)).unwrap()).unwrap()
}

fn with_mode(recovery_mode: RecoveryMode) -> LogOptions {
    LogOptions {
        recovery_mode,
        ..small_options()
    }
}

/// Log options of 64 KiB segments for stores of dataset records (about 370 bytes each).
fn store_options() -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        max_payload_bytes: 8 << 10,
        ..LogOptions::default()
    }
}

/// [REC-01] [VER-01] Item 2: XOR one byte inside the last frame of a cleanly closed log.
/// `verify` reports it with its segment and offset; the writer's open refuses it in the
/// default and strict modes and zeroes nothing; only `PointInTime` cuts it, and says so.
#[test]
fn a_damaged_final_frame_after_a_clean_close_is_reported_and_not_cut() {
    let dir = closed_log(200);
    let mark = clean_mark(dir.path());
    let base = *segment_bases(dir.path()).last().unwrap();
    assert_eq!(mark.segment, base);
    let path = segment_file(dir.path(), base);
    let last = *frames_of(&path).1.last().unwrap();
    assert_eq!((last.end(), last.seq), (mark.end_offset, 200));
    flip_byte(&path, last.offset + last.len - 3, 0x5a);
    let damaged = std::fs::read(&path).unwrap();

    let report = Reader::open(dir.path(), &small_options())
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!(report.records, 199, "{report:?}");
    assert_eq!(report.problems.len(), 1, "{report:?}");
    let damage = &report.problems[0];
    assert_eq!(
        (
            damage.segment,
            damage.offset,
            damage.first_seq,
            damage.resumes_at
        ),
        (SegmentId(base), last.offset, Seq(200), Some(Seq(201)))
    );
    match &damage.kind {
        CorruptKind::BelowCleanEnd {
            clean_end,
            fault: Some(fault),
        } => {
            assert_eq!(*clean_end, mark.end_offset);
            assert!(
                matches!(**fault, CorruptKind::ChecksumMismatch { .. }),
                "{fault:?}"
            );
        }
        other => panic!("expected damage below the clean end, got {other:?}"),
    }

    // A reader meets the damage where the records stop, rather than finding the end.
    let follower = Reader::open(dir.path(), &small_options()).unwrap();
    assert_eq!(follower.get(Seq(199)).unwrap(), Some(payload(199)));
    match follower.get(Seq(200)) {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => assert_eq!((segment, offset), (SegmentId(base), last.offset)),
        other => panic!("record 200 must not be hidden: {other:?}"),
    }

    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        match open_log(dir.path(), with_mode(mode)) {
            Err(Error::Corrupt {
                segment,
                offset,
                kind: CorruptKind::BelowCleanEnd { clean_end, .. },
            }) => {
                assert_eq!(
                    (segment, offset, clean_end),
                    (SegmentId(base), last.offset, mark.end_offset)
                );
            }
            other => panic!("{mode:?}: expected a refusal, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            damaged,
            "{mode:?} zeroed bytes"
        );
        assert!(
            dir.path().join(CLEAN_FILE).exists(),
            "the promise stays for the next look"
        );
    }

    let (log, report) = open_log(dir.path(), with_mode(RecoveryMode::PointInTime)).unwrap();
    let cut = report.torn_tail.expect("the repair reports its cut");
    assert_eq!((cut.segment, cut.offset), (SegmentId(base), last.offset));
    assert!(
        matches!(cut.kind, CorruptKind::BelowCleanEnd { .. }),
        "{cut:?}"
    );
    assert_eq!(report.next_seq, 200);
    assert_eq!(read_all(&log.reader()).len(), 199);
}

/// [REC-01] [VER-01] Frames zeroed below a clean shutdown's end (durable records gone, as a
/// misdirected write would leave) are refused too, not taken for the end of the log.
#[test]
fn frames_zeroed_below_a_clean_end_are_damage() {
    let dir = closed_log(120);
    let mark = clean_mark(dir.path());
    let path = segment_file(dir.path(), mark.segment);
    let frames = frames_of(&path).1;
    let cut = frames[frames.len() - 3];
    zero_range(&path, cut.offset, mark.end_offset);
    let report = Reader::open(dir.path(), &small_options())
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    let damage = &report.problems[0];
    assert_eq!(
        (damage.offset, damage.first_seq),
        (cut.offset, Seq(cut.seq))
    );
    assert_eq!(
        damage.resumes_at,
        Some(Seq(121)),
        "three records unreadable"
    );
    assert!(matches!(
        damage.kind,
        CorruptKind::BelowCleanEnd { fault: None, .. }
    ));
    match open_log(dir.path(), small_options()) {
        Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, cut.offset),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// [REC-01] Item 2 as the issue reports it: a store of 60,000 records closed cleanly, one byte
/// XORed inside its last frame. `verify` of the log reports it (it used to say "59,999 records,
/// ok"), and the next writer (an import) refuses to open instead of cutting a "torn tail".
#[test]
#[cfg(feature = "cli")] // runs the esl-replay binary
fn the_reported_store_of_sixty_thousand_records_is_not_cut() {
    let dir = temp_dir();
    let root = dir.path().join("store");
    let mut store = open_store(&root).unwrap();
    for chunk in (0..60_000u64).collect::<Vec<_>>().chunks(5_000) {
        store
            .write_batch(chunk.iter().map(|n| dataset::envelope(*n)).collect())
            .unwrap();
    }
    store.close().unwrap();
    let log_dir = root.join("log");
    let mark = clean_mark(&log_dir);
    assert_eq!(mark.next_seq, 60_001);
    let path = segment_file(&log_dir, mark.segment);
    let last = *frames_of(&path).1.last().unwrap();
    flip_byte(&path, last.offset + last.len / 2, 0xff);
    let damaged = std::fs::read(&path).unwrap();

    let report = LogStore::open_read_only(&root)
        .unwrap()
        .log_reader()
        .verify()
        .unwrap();
    assert_eq!(report.records, 59_999);
    assert_eq!(
        report
            .problems
            .iter()
            .map(|d| (d.segment, d.offset))
            .collect::<Vec<_>>(),
        [(SegmentId(mark.segment), last.offset)]
    );
    let output = support::cli::command()
        .args(["log", "verify"])
        .arg(&log_dir)
        .output_safely()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!("at offset {}", last.offset)) && stdout.contains("sequence 60000"),
        "{stdout}"
    );

    match open_store(&root) {
        Err(store::Error::Storage(Error::Corrupt { offset, .. })) => {
            assert_eq!(offset, last.offset)
        }
        Err(other) => panic!("expected the damage, got {other}"),
        Ok(_) => panic!("the writer opened over damaged durable records"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), damaged, "nothing was zeroed");
}

/// [VER-01] [RD-04] [SEG-06] Item 7: with damaged frames in two sealed segments (one of which
/// lost its index) and a damaged seal in a third, `verify` lists every one with its segment
/// and offset and counts every other record, instead of stopping at the first; every other
/// record of those segments still reads, all of the one with the damaged seal.
#[test]
fn verify_lists_every_damaged_segment_and_counts_the_rest() {
    let dir = closed_log(600);
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 6, "{bases:?}");
    let mut expected = Vec::new();
    for (i, base) in bases.iter().copied().enumerate().skip(1).take(3) {
        let path = segment_file(dir.path(), base);
        let frames = frames_of(&path).1;
        let frame = if i == 2 {
            *frames.last().unwrap() // the seal
        } else {
            frames[frames.len() / 2]
        };
        flip_byte(&path, frame.offset + 5, 0x01);
        let resumes = if frame.seal { frame.seq } else { frame.seq + 1 };
        expected.push((
            SegmentId(base),
            frame.offset,
            Seq(frame.seq),
            Some(Seq(resumes)),
        ));
    }
    // One damaged segment has lost its index too: it is rebuilt by scanning, past the damage.
    #[expect(
        clippy::disallowed_methods,
        reason = "surgery on a test log: the removal need not be durable"
    )]
    std::fs::remove_file(index_path(dir.path(), bases[1])).unwrap();
    let follower = Reader::open(dir.path(), &small_options()).unwrap();
    let (log, _) = open_log(dir.path(), small_options()).unwrap();
    for reader in [follower, log.reader()] {
        // [RD-04] Every record but the damaged ones reads, in the segments with a damaged
        // record too, and in the one with a damaged seal: its records run to its
        // successor's base, so none is missing.
        for base in &bases {
            assert_eq!(reader.get(Seq(*base)).unwrap(), Some(payload(*base)));
        }
        let last_of_sealed = bases[3] - 1;
        assert_eq!(
            reader.get(Seq(last_of_sealed)).unwrap(),
            Some(payload(last_of_sealed))
        );
        for (_, _, Seq(seq), resumes) in &expected {
            if let Some(Seq(after)) = resumes {
                assert_eq!(reader.get(Seq(*after)).unwrap(), Some(payload(*after)));
            }
            if resumes != &Some(Seq(*seq)) {
                assert!(reader.get(Seq(*seq)).is_err(), "record {seq} is damaged");
            }
        }
        let report = reader.verify().unwrap();
        let found: Vec<_> = report
            .problems
            .iter()
            .map(|d| (d.segment, d.offset, d.first_seq, d.resumes_at))
            .collect();
        assert_eq!(found, expected);
        assert_eq!(report.records, 598, "every intact record is counted");
        assert_eq!(report.segments, bases.len());
        let mut seen = Vec::new();
        reader
            .verify_each(&mut |seq, bytes| {
                assert_eq!(bytes, payload(seq.0));
                seen.push(seq.0);
            })
            .unwrap();
        assert_eq!(seen.len(), 598);
    }
}

/// [RD-04] Item 7: a damaged frame in the middle of the last segment fails only reads that
/// reach it; records in other segments, and after the damage, are read; a cursor moves past
/// the damage and names where reading resumes.
#[test]
fn reads_beside_a_damaged_frame_keep_working() {
    let dir = closed_log_with_full_tail(300, 40);
    let bases = segment_bases(dir.path());
    let base = *bases.last().unwrap();
    let path = segment_file(dir.path(), base);
    let frames = frames_of(&path).1;
    let hit = frames[2];
    flip_byte(&path, hit.offset + 9, 0x10);
    let follower = Reader::open(dir.path(), &small_options()).unwrap();
    let (log, _) = open_log(dir.path(), small_options()).unwrap();
    for reader in [follower, log.reader()] {
        assert_eq!(reader.get(Seq(1)).unwrap(), Some(payload(1)));
        assert_eq!(reader.get(Seq(base - 1)).unwrap(), Some(payload(base - 1)));
        match reader.get(Seq(hit.seq)) {
            Err(Error::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!((segment, offset), (SegmentId(base), hit.offset));
            }
            other => panic!("expected the damage, got {other:?}"),
        }
        let mut cursor = reader.cursor(Seq(1)).unwrap();
        let mut read = Vec::new();
        loop {
            match cursor.next() {
                Ok(Some(record)) => {
                    assert_eq!(record.payload, payload(record.seq.0));
                    read.push(record.seq.0);
                }
                Ok(None) => break,
                Err(Error::Corrupt { offset, .. }) => {
                    assert_eq!(offset, hit.offset);
                    assert_eq!(cursor.skip_damage().unwrap(), Some(Seq(hit.seq + 1)));
                }
                Err(other) => panic!("{other:?}"),
            }
        }
        let total = reader.next_seq().unwrap().0 - 1;
        assert_eq!(read.len() as u64, total - 1);
        assert!(!read.contains(&hit.seq));
    }
}

/// [RD-04] Damage in one frame, in its payload or in its length (which would send a walk by
/// lengths astray), fails only the point read of that record, with an error naming its own
/// offset: a point read of every other record of the segment, before or after it, returns
/// that record, with either read strategy.
#[test]
fn point_reads_beside_damage_return_every_other_record() {
    let dir = closed_log_with_full_tail(300, 60);
    let base = *segment_bases(dir.path()).last().unwrap();
    let path = segment_file(dir.path(), base);
    let frames = frames_of(&path).1;
    let last = frames.last().unwrap().seq;
    // Bytes 4..8 of a frame are its length and flags; byte 9 is in its payload.
    for (at, mask) in [(4, 0x08), (5, 0x01), (9, 0x10)] {
        for hit in frames.iter().skip(1).step_by(7).take(6) {
            flip_byte(&path, hit.offset + at, mask);
            for strategy in [ReadStrategy::Mmap, ReadStrategy::Pread] {
                let options = LogOptions {
                    read_strategy: strategy,
                    ..small_options()
                };
                let reader = Reader::open(dir.path(), &options).unwrap();
                for seq in base..=last {
                    let read = reader.get(Seq(seq));
                    if seq == hit.seq {
                        match read {
                            Err(Error::Corrupt {
                                segment, offset, ..
                            }) => assert_eq!((segment, offset), (SegmentId(base), hit.offset)),
                            other => panic!("seq {seq}: expected the damage, got {other:?}"),
                        }
                    } else {
                        let got = read.unwrap_or_else(|e| panic!("seq {seq} ({hit:?}): {e}"));
                        assert_eq!(got, Some(payload(seq)), "seq {seq}, damage at {hit:?}");
                    }
                }
            }
            flip_byte(&path, hit.offset + at, mask);
        }
    }
}

/// A store of at least `count` dataset records in 64 KiB segments, the last of which holds
/// at least `in_last` records; closed.
fn small_store(count: u64, in_last: u64) -> (tempfile::TempDir, std::path::PathBuf, Vec<Record>) {
    let dir = temp_dir();
    let root = dir.path().join("store");
    let mut store = open_store_with(&root, store_options()).unwrap();
    let mut n = 0;
    loop {
        let next = store.log_reader().next_seq().unwrap().0;
        let last = store.log_reader().segments().last().map_or(1, |s| s.0);
        if n >= count && next - last >= in_last {
            break;
        }
        store
            .write_batch((n..n + 10).map(dataset::envelope).collect())
            .unwrap();
        n += 10;
    }
    let records = store
        .read_from_cursor(
            &esl_replay::record::ReadCursor::start(),
            10_000,
            &Criteria::any(),
        )
        .unwrap();
    store.close().unwrap();
    (dir, root, records)
}

/// Hostile review: `export` threw away the page of up to 999 records it had read before a
/// damaged one, though export is how records are salvaged from a damaged store. Every
/// record before the damage is written, then the damage is reported.
#[test]
fn an_export_writes_every_record_before_the_damage_it_stops_at() {
    let (_dir, root, records) = small_store(1_000, 60);
    let log_dir = root.join("log");
    let base = *segment_bases(&log_dir).last().unwrap();
    let path = segment_file(&log_dir, base);
    let frames = frames_of(&path).1;
    let hit = frames[frames.len() / 2];
    flip_byte(&path, hit.offset + 12, 0x04);

    let store = LogStore::open_read_only(&root).unwrap();
    let mut ndjson = Vec::new();
    let error = store::export(&store, &mut ndjson, 0, &Criteria::any(), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&error, store::Error::Storage(Error::Corrupt { offset, .. }) if *offset == hit.offset),
        "{error}"
    );
    let lines = String::from_utf8(ndjson).unwrap();
    let exported: Vec<&str> = lines.lines().collect();
    assert_eq!(exported.len() as u64, hit.seq - 1);
    let before = esl_replay::record::to_ndjson_line(&records[hit.seq as usize - 2]);
    assert_eq!(exported.last().copied(), Some(before.trim_end()));
}

/// [RD-04] Item 7 at the store: one damaged frame in the middle of the last segment used to
/// make every lookup by id and `stats` fail. Lookups of records in other segments now work; a
/// lookup that finds nothing reports the damage (the id may be in it) rather than "absent";
/// `stats` and `verify` read past it and list it.
#[test]
#[cfg(feature = "cli")] // runs the esl-replay binary
fn a_damaged_last_segment_leaves_lookups_and_stats_of_other_records_working() {
    let (_dir, root, records) = small_store(1_000, 60);
    let total = records.len() as u64;
    let log_dir = root.join("log");
    let bases = segment_bases(&log_dir);
    assert!(bases.len() >= 4, "{bases:?}");
    let base = *bases.last().unwrap();
    let path = segment_file(&log_dir, base);
    let frames = frames_of(&path).1;
    let hit = frames[frames.len() / 2];
    flip_byte(&path, hit.offset + 12, 0x04);

    let store = LogStore::open_read_only(&root).unwrap();
    assert_eq!(store.stats().unwrap().records, total);
    let damaged = &records[hit.seq as usize - 1];
    for (i, record) in records.iter().enumerate() {
        if i as u64 + 1 == hit.seq || i % 97 != 0 {
            continue;
        }
        assert_eq!(
            store.read_by_id(record.id()).unwrap().as_ref(),
            Some(record)
        );
    }
    match store.read_by_id(damaged.id()) {
        Err(store::Error::Storage(Error::Corrupt {
            segment, offset, ..
        })) => {
            assert_eq!((segment, offset), (SegmentId(base), hit.offset));
        }
        other => panic!("expected the damage, got {other:?}"),
    }

    let stats = support::cli::command()
        .args(["stats", "-s"])
        .arg(&root)
        .output_safely()
        .unwrap();
    let stdout = String::from_utf8_lossy(&stats.stdout);
    assert_eq!(stats.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("records     {total}")), "{stdout}");
    assert!(
        stdout.contains(&format!("at offset {}", hit.offset)),
        "{stdout}"
    );
    let first = records[0].id().as_str();
    let get = support::cli::command()
        .args(["get", "-s"])
        .arg(&root)
        .arg(first)
        .output_safely()
        .unwrap();
    assert!(
        get.status.success(),
        "{}",
        String::from_utf8_lossy(&get.stderr)
    );
    assert!(String::from_utf8_lossy(&get.stdout).contains(first));

    // Two damaged sealed segments: `verify` lists both and counts every other record.
    for base in &bases[1..3] {
        let path = segment_file(&log_dir, *base);
        let frame = frames_of(&path).1[3];
        flip_byte(&path, frame.offset + 20, 0x02);
    }
    let verify = support::cli::command()
        .args(["verify", "-s"])
        .arg(&root)
        .output_safely()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verify.stdout);
    assert_eq!(verify.status.code(), Some(1), "{stdout}");
    assert_eq!(
        stdout.matches("damaged frame: segment").count(),
        3,
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("checked {} records: 3 problems", total - 3)),
        "{stdout}"
    );
}

/// [REC-06] [SEG-08] Item 6: the disk fills. The background spare fails and is removed (not
/// left holding the space); the roll fails with `ENOSPC` after every earlier record is
/// durable; opening again needs no room for a segment, so `verify` and prefix truncation
/// work on the full disk; once truncation frees space the next append rolls.
#[test]
fn a_full_disk_is_recovered_with_the_logs_own_operations() {
    let dir = temp_dir();
    let io = FaultyIo::new(Arc::new(StdIo));
    io.set_plan(Plan {
        enospc_path: Some(SPARE_FILE.into()),
        ..Plan::default()
    });
    let options = with_io(small_options(), io.clone());
    create_log(dir.path());
    let (mut log, _) = open_log(dir.path(), options.clone()).unwrap();
    let spare = dir.path().join(SPARE_FILE);
    let mut seq = 1;
    let error = loop {
        match log.append(&payload(seq)) {
            Ok(got) => assert_eq!(got, Seq(seq)),
            Err(error) => break error,
        }
        if !io.injected().is_empty() {
            // The preparation failed in the background: its partial file goes at once.
            let deadline = Instant::now() + Duration::from_secs(10);
            while spare.exists() {
                assert!(
                    Instant::now() < deadline,
                    "the failed spare was left behind"
                );
                std::thread::yield_now();
            }
        }
        seq += 1;
        assert!(seq < 500, "no roll happened");
    };
    match &error {
        Error::Io {
            op: IoOp::Allocate,
            source,
            ..
        } => assert_eq!(source.raw_os_error(), Some(libc::ENOSPC)),
        other => panic!("expected ENOSPC, got {other:?}"),
    }
    assert!(!spare.exists());
    let committed = seq - 1;
    log.close().unwrap();

    // Still full: opening, verifying and truncating need no new segment.
    let (log, report) = open_log(dir.path(), options.clone()).unwrap();
    assert!(report.pending_roll, "{report:?}");
    assert_eq!(report.next_seq, seq);
    let bases = segment_bases(dir.path());
    assert_eq!(bases.len(), 1, "{bases:?}");
    let verified = Reader::open(dir.path(), &options)
        .unwrap()
        .verify()
        .unwrap();
    assert!(
        verified.is_ok() && verified.records == committed,
        "{verified:?}"
    );
    log.close().unwrap();

    // A log of several segments: the roll that fails is the third.
    let dir = temp_dir();
    io.heal();
    let (mut log, _) = open_log(dir.path(), options.clone()).unwrap();
    let mut seq = 1;
    while segment_bases(dir.path()).len() < 3 {
        log.append(&payload(seq)).unwrap();
        seq += 1;
    }
    io.set_plan(Plan {
        enospc_path: Some(SPARE_FILE.into()),
        ..Plan::default()
    });
    let failed_at = loop {
        if log.append(&payload(seq)).is_err() {
            break seq;
        }
        seq += 1;
    };
    drop(log);
    let (mut log, report) = open_log(dir.path(), options.clone()).unwrap();
    assert!(report.pending_roll);
    assert!(log.append(&payload(failed_at)).is_err(), "still no space");
    let last = *segment_bases(dir.path()).last().unwrap();
    let before = segment_bases(dir.path()).len();
    let truncated = log.truncate_prefix(Seq(last)).unwrap();
    assert_eq!(truncated.segments_removed, before - 1);
    io.heal(); // the space the truncation freed
    assert_eq!(log.append(&payload(failed_at)).unwrap(), Seq(failed_at));
    assert_eq!(log.active_segment(), SegmentId(failed_at));
    let all = read_all(&log.reader());
    assert_eq!(all.first().map(|r| r.0), Some(last));
    assert_eq!(all.last().map(|r| r.0), Some(failed_at));
}

/// Item 6: an import that the disk stops says how many records it committed (part of the
/// failed batch included), and they are in the store.
#[test]
fn an_import_stopped_by_a_full_disk_counts_what_it_committed() {
    let (_source_dir, source_root, _) = small_store(800, 0);
    let source = LogStore::open_read_only(&source_root).unwrap();
    let mut ndjson = Vec::new();
    store::export(&source, &mut ndjson, 0, &Criteria::any(), &mut |_| {}).unwrap();

    let dir = temp_dir();
    let io = FaultyIo::new(Arc::new(StdIo));
    io.set_plan(Plan {
        enospc_path: Some(SPARE_FILE.into()),
        ..Plan::default()
    });
    let root = dir.path().join("store");
    open_store_with(&root, store_options())
        .unwrap()
        .close()
        .unwrap();
    let mut store = open_store_with(&root, with_io(store_options(), io)).unwrap();
    let options = store::ImportOptions {
        batch: 64,
        ..store::ImportOptions::default()
    };
    let error = store::import(&mut store, ndjson.as_slice(), options, &mut |_| {})
        .expect_err("the disk is full");
    let stats = store.stats().unwrap();
    match &error {
        store::ImportError::Store { source, report, .. } => {
            assert!(report.imported > 0);
            assert_eq!(report.imported, stats.records);
            assert_eq!(report.sequences.map(|s| s.1), Some(stats.last_sequence));
            assert!(
                report.imported % 64 != 0,
                "part of the failed batch counts: {}",
                report.imported
            );
            assert!(
                matches!(source, store::Error::Storage(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC)),
                "{source:?}"
            );
        }
        other => panic!("expected a store failure, got {other:?}"),
    }
}

/// Item 6 on a real small file system, when one is offered (`ESL_REPLAY_SMALL_FS` names an
/// empty directory on a file system of at most a few hundred MiB, e.g. a 200 MiB tmpfs);
/// skipped otherwise. Stores of 64 MiB segments are filled until a roll fails, then the
/// store is opened, verified and pruned with no room for a segment, and takes records again.
#[test]
#[cfg(feature = "cli")] // runs the esl-replay binary
fn a_real_full_disk_is_recovered_when_one_is_available() {
    let Some(dir) = std::env::var_os("ESL_REPLAY_SMALL_FS") else {
        eprintln!("skipped: set ESL_REPLAY_SMALL_FS to a directory on a small file system");
        return;
    };
    let root = Path::new(&dir).join(format!("store-{}", std::process::id()));
    let mut store = open_store(&root).unwrap();
    let mut n = 0u64;
    let error = loop {
        let batch = (n..n + 1000).map(dataset::envelope).collect();
        match store.write_batch(batch) {
            Ok(ids) => n += ids.len() as u64,
            Err(error) => break error,
        }
        assert!(n < 10_000_000, "the file system never filled");
    };
    assert!(
        matches!(&error, store::Error::Storage(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC)),
        "{error:?}"
    );
    assert!(!root.join("log").join(SPARE_FILE).exists());
    let records = store.stats().unwrap().records;
    drop(store);

    let verify = support::cli::command()
        .args(["verify", "-s"])
        .arg(&root)
        .output_safely()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let store = open_store(&root).expect("opening needs no room for a segment");
    assert_eq!(store.stats().unwrap().records, records);
    drop(store);
    let prune = support::cli::command()
        .args(["prune", "--apply", "--max-bytes", "1", "-s"])
        .arg(&root)
        .output_safely()
        .unwrap();
    assert!(
        prune.status.success(),
        "{}",
        String::from_utf8_lossy(&prune.stderr)
    );
    let mut store = open_store(&root).unwrap();
    store
        .write_batch((n..n + 1000).map(dataset::envelope).collect())
        .expect("pruning freed room for a segment");
    drop(store);
    let _ = std::fs::remove_dir_all(&root);
}

/// A segment missing from the middle of a log (deleted from outside, or lost by a lying disk)
/// is reported by a follower's cursor and by `verify` with where the gap is; reading never
/// spins, and the records after the gap stay reachable by skipping it.
#[test]
fn a_missing_middle_segment_is_reported_not_spun_on() {
    let dir = closed_log(400);
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 4, "{bases:?}");
    let missing = bases[bases.len() / 2];
    esl_replay::storage::remove_durable(&segment_file(dir.path(), missing)).unwrap();
    esl_replay::storage::remove_durable(&index_path(dir.path(), missing)).unwrap();

    let after = bases[bases.len() / 2 + 1];
    let (done, outcome) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let reader = Reader::open(&path, &LogOptions::default()).unwrap();
        let mut cursor = reader.cursor(Seq(1)).unwrap();
        let (mut read, mut errors) = (Vec::new(), Vec::new());
        loop {
            match cursor.next() {
                Ok(Some(record)) => read.push(record.seq.0),
                Ok(None) => break,
                Err(error) => {
                    errors.push(error.to_string());
                    if errors.len() > 3 || cursor.skip_damage().unwrap().is_none() {
                        break;
                    }
                }
            }
        }
        let verified = reader.verify().unwrap();
        let _ = done.send((read, errors, verified));
    });
    let (read, errors, verified) = outcome
        .recv_timeout(Duration::from_secs(60))
        .expect("the cursor spun on the missing segment");
    let expected: Vec<u64> = (1..missing).chain(after..=400).collect();
    assert_eq!(read, expected, "{bases:?} {errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains(&format!("expected {missing}, found {after}")),
        "{errors:?}"
    );
    assert!(!verified.is_ok(), "{verified:?}");
    assert_eq!(verified.records, expected.len() as u64, "{verified:?}");
}

/// A start (a truncation's) that lies in the gap a missing segment left: the cursor used to
/// seek back into the segment before the gap again and again; now it reports the gap.
#[test]
fn a_start_inside_a_missing_segment_is_reported_not_spun_on() {
    use esl_replay::storage::codec::{START_FILE, StartMark};
    let dir = closed_log(400);
    let bases = segment_bases(dir.path());
    let (missing, after) = (bases[2], bases[3]);
    esl_replay::storage::remove_durable(&segment_file(dir.path(), missing)).unwrap();
    esl_replay::storage::remove_durable(&index_path(dir.path(), missing)).unwrap();
    let start = missing + 3;
    std::fs::write(dir.path().join(START_FILE), StartMark { start }.encode()).unwrap();

    let (done, outcome) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let reader = Reader::open(&path, &LogOptions::default()).unwrap();
        let mut cursor = reader.cursor(Seq(start)).unwrap();
        let first = cursor
            .next()
            .map(|r| r.map(|r| r.seq.0))
            .map_err(|e| e.to_string());
        let skipped = cursor.skip_damage().unwrap();
        let next = cursor.next().unwrap().map(|r| r.seq.0);
        let _ = done.send((first, skipped, next));
    });
    let (first, skipped, next) = outcome
        .recv_timeout(Duration::from_secs(60))
        .expect("the cursor spun between the start and the gap");
    let error = first.expect_err("the records from the start on are missing");
    assert!(
        error.contains(&format!("expected {start}, found {after}")),
        "{error}"
    );
    assert_eq!(skipped, Some(Seq(after)));
    assert_eq!(next, Some(after));
}

/// The error a read or an open gives for records in no segment file.
fn missing_records(error: &Error) -> Option<(SegmentId, u64, u64)> {
    match error {
        Error::Corrupt {
            segment,
            kind: CorruptKind::MissingSegments { from, to },
            ..
        } => Some((*segment, *from, *to)),
        _ => None,
    }
}

/// [REC-12] [VER-01] [RD-04] The first segment file deleted from outside the log hides none
/// of its records: the start file still says where the log begins, so a follower's reads from
/// there fail naming the missing sequences (and `skip_damage` moves past them), `verify`
/// reports them, and the writer refuses to open. Only `PointInTime` (`log repair`) accepts
/// the loss, moving the start to the first segment, and says so.
#[test]
fn a_missing_first_segment_is_reported_never_skipped() {
    let dir = closed_log(400);
    let bases = segment_bases(dir.path());
    assert!(bases.len() >= 3, "{bases:?}");
    let first = bases[1];
    esl_replay::storage::remove_durable(&segment_file(dir.path(), bases[0])).unwrap();

    let reader = Reader::open(dir.path(), &LogOptions::default()).unwrap();
    assert_eq!(reader.first_seq(), Seq(1));
    let mut cursor = reader.cursor(Seq(1)).unwrap();
    let error = cursor.next().map(|r| r.map(|r| r.seq)).unwrap_err();
    assert_eq!(
        missing_records(&error),
        Some((SegmentId(first), 1, first)),
        "{error}"
    );
    assert_eq!(cursor.skip_damage().unwrap(), Some(Seq(first)));
    assert_eq!(cursor.next().unwrap().map(|r| r.seq), Some(Seq(first)));
    let error = reader.get(Seq(2)).unwrap_err();
    assert!(missing_records(&error).is_some(), "{error}");
    assert_eq!(reader.get(Seq(first)).unwrap(), Some(payload(first)));
    let report = reader.verify().unwrap();
    let found: Vec<_> = report
        .problems
        .iter()
        .map(|d| (d.segment, d.first_seq, d.resumes_at, d.kind.clone()))
        .collect();
    assert_eq!(
        found,
        [(
            SegmentId(first),
            Seq(1),
            Some(Seq(first)),
            CorruptKind::MissingSegments { from: 1, to: first }
        )]
    );
    assert_eq!(report.records, 400 - (first - 1));
    drop((cursor, reader));

    let error = open_log(dir.path(), small_options()).unwrap_err();
    assert_eq!(
        missing_records(&error),
        Some((SegmentId(first), 1, first)),
        "{error}"
    );
    let (log, report) = open_log(dir.path(), with_mode(RecoveryMode::PointInTime)).unwrap();
    assert_eq!(report.missing_head, Some(1..first));
    assert_eq!(report.first_seq, first);
    log.close().unwrap();
    let (log, report) = open_log(dir.path(), small_options()).unwrap();
    assert_eq!((report.first_seq, report.next_seq), (first, 401));
    assert!(log.reader().verify().unwrap().is_ok());
}

/// [REC-12] [META-04] [REC-01] The last segment file deleted from outside the log: the
/// records the writer acknowledged (its watermark file after a crash, its clean-shutdown
/// marker after a clean close) are in no segment file, so opening a writer, which would give
/// their sequences to new records, is refused, and `verify` reports them. `PointInTime`
/// accepts the loss and says which sequences will be given again.
#[test]
fn a_missing_last_segment_is_refused_before_its_sequences_are_given_again() {
    for crash in [false, true] {
        let (dir, log) = open_log_of(200);
        log.sync().unwrap();
        let last = log.active_segment().0;
        if crash {
            // The watermark file names every record durable once its thread has looked.
            let follower = Reader::open(dir.path(), &LogOptions::default()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while follower.durable_seq().unwrap() < Seq(201) {
                assert!(Instant::now() < deadline, "the watermark file never rose");
                std::thread::sleep(Duration::from_millis(1));
            }
            log.simulate_crash();
        } else {
            log.close().unwrap();
        }
        esl_replay::storage::remove_durable(&segment_file(dir.path(), last)).unwrap();

        let report = Reader::open(dir.path(), &LogOptions::default())
            .unwrap()
            .verify()
            .unwrap();
        let kinds: Vec<_> = report.problems.iter().map(|d| d.kind.clone()).collect();
        assert_eq!(
            kinds,
            [CorruptKind::MissingSegments {
                from: last,
                to: 201
            }],
            "crash: {crash}"
        );
        let error = open_log(dir.path(), small_options()).unwrap_err();
        assert_eq!(
            missing_records(&error).map(|m| (m.1, m.2)),
            Some((last, 201)),
            "{error}"
        );
        let (mut log, report) = open_log(dir.path(), with_mode(RecoveryMode::PointInTime)).unwrap();
        assert_eq!(report.missing_tail, Some(last..201), "crash: {crash}");
        assert_eq!(log.append(b"again").unwrap(), Seq(last));
        log.close().unwrap();
        let (log, _) = open_log(dir.path(), small_options()).unwrap();
        assert!(log.reader().verify().unwrap().is_ok(), "crash: {crash}");
    }
}

/// [VER-01] [RD-01] Verification from a follower while the writer appends, and rolls, past
/// what the follower had read: bytes it read before the writer wrote there are read again
/// before anything is called damage, so a healthy log verifies clean.
#[test]
fn a_follower_verifies_clean_beside_an_appending_writer() {
    for roll in [false, true] {
        let (dir, mut log) = open_log_of(5);
        log.flush().unwrap();
        let follower = Reader::open(dir.path(), &LogOptions::default()).unwrap();
        let mut seen = 0;
        let report = follower
            .verify_each(&mut |seq, _| {
                seen += 1;
                if seq != Seq(5) {
                    return;
                }
                let first = log.active_segment();
                let mut next = 6;
                while next <= 8 || (roll && log.active_segment() == first) {
                    log.append(&payload(next)).unwrap();
                    next += 1;
                }
                log.flush().unwrap();
            })
            .unwrap();
        assert!(report.is_ok(), "roll: {roll}: {:?}", report.problems);
        assert!(seen >= 5, "roll: {roll}");
    }
}

/// [REC-12] Every segment file deleted after a clean close: the clean marker says records
/// were acknowledged, so the writer's open refuses before it creates a segment (which would
/// give their sequences again, and hide the loss from every later open); `PointInTime`
/// accepts it and says so.
#[test]
fn a_log_without_any_segment_file_is_refused_if_it_held_records() {
    let dir = closed_log(50);
    for base in segment_bases(dir.path()) {
        esl_replay::storage::remove_durable(&segment_file(dir.path(), base)).unwrap();
    }
    for _ in 0..2 {
        let error = open_log(dir.path(), small_options()).unwrap_err();
        assert_eq!(
            missing_records(&error),
            Some((SegmentId(1), 1, 51)),
            "{error}"
        );
        assert!(segment_bases(dir.path()).is_empty());
    }
    let (mut log, report) = open_log(dir.path(), with_mode(RecoveryMode::PointInTime)).unwrap();
    assert_eq!(report.missing_tail, Some(1..51));
    assert_eq!(log.append(b"again").unwrap(), Seq(1));
    log.close().unwrap();
    open_log(dir.path(), small_options()).unwrap();
}
