//! Regression tests for the deviations between `format/` and the first implementation that
//! review found (see `format/changelog.md`): each test failed before its fix.

#![allow(
    clippy::disallowed_methods,
    reason = "tests damage and remove log files on purpose"
)]

use esl_replay::storage::codec::{
    CLEAN_FILE, CleanMark, FileHeader, SEGMENT_MAGIC, START_FILE, StartMark, segment_path,
};
use esl_replay::storage::{CorruptKind, LogOptions, Reader, RecoveryMode, Seq};

use crate::support::process::open_log;

fn options(max_payload: u32) -> LogOptions {
    LogOptions {
        segment_bytes: 1 << 20,
        max_payload_bytes: max_payload,
        compress_min_bytes: None,
        ..LogOptions::default()
    }
}

/// [FRM-05] [SEG-07] Reopening with a smaller `max_payload_bytes` keeps large records: the
/// setting limits appends, not what readers and recovery accept.
#[test]
fn a_smaller_max_payload_never_cuts_valid_records() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), options(64 << 10)).unwrap();
    log.append(&[7u8; 40_000]).unwrap();
    log.flush().unwrap();
    log.simulate_crash();
    let (log, report) = open_log(dir.path(), options(1 << 10)).unwrap();
    assert!(report.torn_tail.is_none(), "{report:?}");
    assert_eq!(log.reader().get(Seq(1)).unwrap().unwrap().len(), 40_000);
    assert_eq!(
        Reader::open(dir.path(), &options(16))
            .unwrap()
            .get(Seq(1))
            .unwrap()
            .unwrap()
            .len(),
        40_000
    );
}

/// [REC-03] A large torn tail of random-looking bytes is cut as a torn tail, not refused as
/// damage before the tail (the search budget is only charged for plausible candidates, and a
/// candidate must be followed by a frame, a seal or zeros).
#[test]
fn a_large_random_torn_tail_is_cut() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), options(64 << 10)).unwrap();
    for i in 0..10u32 {
        log.append(&i.to_le_bytes()).unwrap();
    }
    log.close().unwrap();
    let path = segment_path(dir.path(), 1);
    let mut bytes = std::fs::read(&path).unwrap();
    let end = 40 + 10 * 12;
    let mut state = 0x1234_5678_9abc_def0_u64;
    for byte in bytes.iter_mut().skip(end).take(60_000) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    std::fs::write(&path, &bytes).unwrap();
    std::fs::remove_file(dir.path().join(CLEAN_FILE)).unwrap();
    let (log, report) = open_log(dir.path(), options(64 << 10)).unwrap();
    let torn = report.torn_tail.expect("a torn tail");
    assert_eq!((torn.offset, torn.bytes_dropped), (end as u64, 60_000));
    assert_eq!(log.next_seq(), Seq(11));
}

/// [META-03] Metadata files with reserved bytes set or read version 0 are refused.
#[test]
fn metadata_reserved_bytes_and_version_zero_are_refused() {
    let mut start = StartMark { start: 5 }.encode();
    start[14] = 1;
    let crc = crc32fast::hash(&start[..28]);
    start[28..].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        StartMark::decode(&start),
        Err(CorruptKind::ReservedBits { .. })
    ));
    let mut clean = CleanMark {
        segment: 1,
        salt: 2,
        end_offset: 3,
        next_seq: 4,
    }
    .encode();
    clean[8] = 0;
    clean[9] = 0;
    let crc = crc32fast::hash(&clean[..52]);
    clean[52..].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        CleanMark::decode(&clean),
        Err(CorruptKind::UnsupportedVersion { found: 0, .. })
    ));
    let header = FileHeader {
        read_version: 0,
        ..FileHeader::new(1, 1)
    };
    assert!(FileHeader::decode(&header.encode(SEGMENT_MAGIC), SEGMENT_MAGIC).is_err());
}

/// [META-02] A damaged clean-shutdown marker is ignored (the tail is scanned) and removed.
#[test]
fn a_damaged_clean_marker_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), options(1 << 10)).unwrap();
    log.append(b"x").unwrap();
    log.close().unwrap();
    std::fs::write(dir.path().join(CLEAN_FILE), b"garbage").unwrap();
    let (log, report) = open_log(dir.path(), options(1 << 10)).unwrap();
    assert!(!report.clean_shutdown);
    assert!(!dir.path().join(CLEAN_FILE).exists());
    assert_eq!(log.next_seq(), Seq(2));
}

/// [TRUNC-01] A start written by a truncation never exceeds what recovery finds: the start
/// file is only written after the tail below it was synced, so after any crash the log
/// reopens with `first <= next`.
#[test]
fn truncating_everything_then_crashing_reopens_consistently() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), options(1 << 10)).unwrap();
    for _ in 0..5 {
        log.append(b"record").unwrap();
    }
    log.truncate_prefix(Seq(6)).unwrap();
    log.flush().unwrap();
    log.simulate_crash();
    let start = StartMark::decode(&std::fs::read(dir.path().join(START_FILE)).unwrap())
        .unwrap()
        .start;
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let (log, report) = open_log(
            dir.path(),
            LogOptions {
                recovery_mode: mode,
                ..options(1 << 10)
            },
        )
        .unwrap();
        assert!(
            report.first_seq <= report.next_seq && start <= report.next_seq,
            "{report:?}"
        );
        drop(log);
    }
}

/// [SEG-07] [ROLL-05] Reopening an empty log with larger segments, then appending a record
/// that did not fit the old segment, never replaces the active segment with a successor of
/// the same name (which a later truncation then deleted, losing the record).
#[test]
fn an_empty_segment_grows_instead_of_rolling_onto_its_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let small = LogOptions {
        segment_bytes: 64 << 10,
        max_payload_bytes: 32 << 10,
        compress_min_bytes: None,
        ..LogOptions::default()
    };
    let (log, _) = open_log(dir.path(), small).unwrap();
    log.close().unwrap();
    let big = LogOptions {
        segment_bytes: 1 << 20,
        max_payload_bytes: 512 << 10,
        compress_min_bytes: None,
        ..LogOptions::default()
    };
    let (mut log, _) = open_log(dir.path(), big.clone()).unwrap();
    assert_eq!(log.append(&[3u8; 200 << 10]).unwrap(), Seq(1));
    log.truncate_prefix(Seq(1)).unwrap();
    assert_eq!(
        log.reader().get(Seq(1)).unwrap().map(|p| p.len()),
        Some(200 << 10)
    );
    drop(log);
    let (log, report) = open_log(dir.path(), big).unwrap();
    assert_eq!(report.next_seq, 2);
    assert_eq!(
        log.reader().get(Seq(1)).unwrap().map(|p| p.len()),
        Some(200 << 10)
    );
}

/// [TRUNC-01] [RD-02] A follower keeps the start file it read open and reads it again only
/// once it was replaced: each truncation made through another handle (as another process
/// would make it) is seen by the follower's next cursor and point read, the first truncation
/// and every later one, reading through maps or with `pread`.
#[test]
fn a_follower_sees_every_truncation_made_through_another_handle() {
    use esl_replay::storage::ReadStrategy;
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), options(1 << 10)).unwrap();
    for i in 0..3000u32 {
        log.append(&i.to_le_bytes()).unwrap();
    }
    log.sync().unwrap();
    let record = |seq: u64| Some(u32::try_from(seq - 1).unwrap().to_le_bytes().to_vec());
    let other = Reader::open(dir.path(), &LogOptions::default()).unwrap();
    let followers = [ReadStrategy::Mmap, ReadStrategy::Pread].map(|read_strategy| {
        let options = LogOptions {
            read_strategy,
            ..LogOptions::default()
        };
        Reader::open(dir.path(), &options).unwrap()
    });
    for start in [10u64, 11, 500, 2999] {
        for follower in &followers {
            // The follower reads (and holds) the start file as it is before the truncation.
            assert!(follower.get(Seq(start - 1)).unwrap().is_some());
        }
        other.truncate_prefix(Seq(start)).unwrap();
        for follower in &followers {
            let first = follower
                .cursor(Seq(1))
                .unwrap()
                .next()
                .unwrap()
                .map(|r| r.seq);
            assert_eq!(first, Some(Seq(start)));
            assert_eq!(follower.get(Seq(start - 1)).unwrap(), None);
            assert_eq!(follower.get(Seq(start)).unwrap(), record(start));
            assert_eq!(follower.first_seq(), Seq(start));
        }
    }
}
