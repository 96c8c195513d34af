//! Recycled segments [SEG-10]: beside the writer, a truncation keeps the files of the newest
//! segments it removes [TRUNC-05], later rolls write the next segments into them [ROLL-04],
//! and after an unclean shutdown recovery ends such a segment where its frames stop [REC-09].

#![allow(
    clippy::disallowed_methods,
    reason = "tests delete index files with std::fs::remove_file, so that recovery scans the damage"
)]

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use esl_replay::storage::codec::{
    DURABLE_FILE, DurableWatermark, FileHeader, HEADER_LEN, RECYCLE_POOL, RECYCLED_VERSION,
    SEGMENT_MAGIC, index_path, recycle_path,
};
use esl_replay::storage::{CorruptKind, Error, Log, LogOptions, Reader, RecoveryMode, Seq};

use crate::support::process::open_log;
use crate::support::storage::{
    copy_dir, fast_options, flip_byte, frames_of, payload_of_len, read_all, read_range,
    scratch_dir, segment_bases, segment_file, zero_range,
};

/// A log whose last segment is recycled, as a writer left it.
struct Recycled {
    dir: tempfile::TempDir,
    log: Log,
    /// The payload of every sequence appended, from 1.
    payloads: Vec<Vec<u8>>,
    /// The first sequence kept by the truncation.
    start: u64,
    /// The recycled segment's base.
    base: u64,
}

/// [`fast_options`] with recycling on (the default), whatever the default becomes.
fn recycling() -> LogOptions {
    LogOptions {
        recycle_segments: true,
        ..fast_options()
    }
}

fn append(log: &mut Log, payloads: &mut Vec<Vec<u8>>) {
    let payload = payload_of_len(payloads.len() as u64 + 1, 1000);
    let seq = log.append(&payload).unwrap();
    assert_eq!(seq, Seq(payloads.len() as u64 + 1));
    payloads.push(payload);
}

fn header(dir: &Path, base: u64) -> FileHeader {
    let bytes = read_range(&segment_file(dir, base), 0, HEADER_LEN as u64);
    FileHeader::decode(&bytes, SEGMENT_MAGIC).unwrap()
}

/// Removes a segment's index file, if it has one, so that recovery scans the whole segment
/// [REC-02].
fn forget_index(dir: &Path, base: u64) {
    if let Err(error) = std::fs::remove_file(index_path(dir, base)) {
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "{error}");
    }
}

/// The removed segments' files kept for reuse, by name.
fn kept_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut kept: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("recycle."))
        })
        .collect();
    kept.sort();
    kept
}

fn inode(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// A new log appended to until it has `segments` segments, and the payloads appended.
fn filled(options: LogOptions, segments: usize) -> (tempfile::TempDir, Log, Vec<Vec<u8>>) {
    let dir = scratch_dir();
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    let mut payloads = Vec::new();
    while segment_bases(dir.path()).len() < segments {
        append(&mut log, &mut payloads);
    }
    (dir, log, payloads)
}

/// Fills three segments, truncates the first away, and appends until a roll reuses its file;
/// a few records then go into the recycled segment.
fn recycled_log() -> Recycled {
    let (dir, mut log, mut payloads) = filled(recycling(), 3);
    let bases = segment_bases(dir.path());
    let removed = inode(&segment_file(dir.path(), bases[0]));
    let report = log.truncate_prefix(Seq(bases[1])).unwrap();
    assert_eq!(
        (report.recycled, report.segments_removed),
        (1, 1),
        "{report:?}"
    );
    assert_eq!(inode(&recycle_path(dir.path(), bases[0])), removed);
    let base = loop {
        append(&mut log, &mut payloads);
        let last = *segment_bases(dir.path()).last().unwrap();
        if header(dir.path(), last).read_version == RECYCLED_VERSION {
            break last;
        }
        assert!(payloads.len() < 2_000, "no roll reused the kept file");
    };
    assert_eq!(inode(&segment_file(dir.path(), base)), removed);
    assert!(kept_files(dir.path()).is_empty());
    for _ in 0..5 {
        append(&mut log, &mut payloads);
    }
    Recycled {
        dir,
        log,
        payloads,
        start: bases[1],
        base,
    }
}

/// [`recycled_log`] stopped as a killed process stops, its frames written: the directory,
/// the payloads, the first sequence kept and the recycled segment's base.
fn crashed_recycled_log() -> (tempfile::TempDir, Vec<Vec<u8>>, u64, u64) {
    let recycled = recycled_log();
    recycled.log.flush().unwrap();
    recycled.log.simulate_crash();
    (
        recycled.dir,
        recycled.payloads,
        recycled.start,
        recycled.base,
    )
}

fn expected(payloads: &[Vec<u8>], start: u64) -> Vec<(u64, Vec<u8>)> {
    (start..=payloads.len() as u64)
        .map(|seq| (seq, payloads[seq as usize - 1].clone()))
        .collect()
}

/// [TRUNC-05] [ROLL-04] [SEG-10] The newest segment a truncation removes keeps its file, and
/// a later roll writes the next segment into it: a version 3 header with its own base, in the
/// same inode. Its records read back in the writer's process, by a follower and after a clean
/// reopen, and verification finds neither damage nor an unclean tail in the bytes the file
/// held before.
#[test]
fn a_removed_segment_file_becomes_the_next_segment() {
    let Recycled {
        dir,
        log,
        payloads,
        start,
        base,
    } = recycled_log();
    let want = expected(&payloads, start);
    assert_eq!(header(dir.path(), base).base, base);
    assert_eq!(read_all(&log.reader()), want);
    let follower = Reader::open(dir.path(), &recycling()).unwrap();
    assert_eq!(read_all(&follower), want);
    let report = follower.verify().unwrap();
    assert!(report.problems.is_empty(), "{report:?}");
    assert_eq!(report.unclean_tail, None);
    log.close().unwrap();
    assert!(kept_files(dir.path()).is_empty());
    let (log, report) = open_log(dir.path(), recycling()).unwrap();
    assert!(report.clean_shutdown && !report.recycled_end, "{report:?}");
    assert_eq!(read_all(&log.reader()), want);
    let verified = log.reader().verify().unwrap();
    assert!(verified.problems.is_empty(), "{verified:?}");
}

/// [TRUNC-05] [TRUNC-04] A segment that a reader still has open is removed, not kept; a kept
/// file waits as `recycle.seg.tmp`, and a clean close removes it.
#[test]
fn a_segment_a_reader_holds_is_not_kept() {
    let (dir, log, _) = filled(recycling(), 4);
    let bases = segment_bases(dir.path());
    let follower = Reader::open(dir.path(), &recycling()).unwrap();
    let mut held = follower.iter(Seq(1)).unwrap();
    assert!(held.next().is_some());
    let report = log.truncate_prefix(Seq(bases[1])).unwrap();
    assert_eq!(report.segments_removed, 1);
    assert_eq!(report.recycled, 0, "{report:?}");
    assert!(kept_files(dir.path()).is_empty());
    drop(held);
    let report = log.truncate_prefix(Seq(bases[2])).unwrap();
    assert_eq!(report.recycled, 1, "{report:?}");
    assert_eq!(kept_files(dir.path()), [recycle_path(dir.path(), bases[1])]);
    log.close().unwrap();
    assert!(kept_files(dir.path()).is_empty());
}

/// [TRUNC-05] A writer opened with `AbsoluteConsistency`, or with recycling off, removes
/// segments as before.
#[test]
fn recycling_is_off_when_asked_and_under_absolute_consistency() {
    for options in [
        LogOptions {
            recycle_segments: false,
            ..recycling()
        },
        LogOptions {
            recovery_mode: RecoveryMode::AbsoluteConsistency,
            ..recycling()
        },
    ] {
        let (dir, log, _) = filled(options, 3);
        let bases = segment_bases(dir.path());
        let report = log.truncate_prefix(Seq(bases[1])).unwrap();
        assert!(
            report.recycled == 0 && report.segments_removed == 1,
            "{report:?}"
        );
        assert!(kept_files(dir.path()).is_empty());
    }
}

/// [REC-09] [REC-06] [REC-07] After a crash, an unclean open ends a recycled last segment with
/// a seal where its frames stop: every record is kept, the report says `recycled_end` with a
/// pending roll, and the next append starts a new segment at the next sequence.
#[test]
fn an_unclean_open_seals_a_recycled_segment_where_its_frames_stop() {
    let (dir, payloads, start, base) = crashed_recycled_log();
    let (_, before) = frames_of(&segment_file(dir.path(), base));
    let end = before.last().unwrap().end();
    let next = payloads.len() as u64 + 1;

    let (mut log, report) = open_log(dir.path(), recycling()).unwrap();
    assert!(report.recycled_end && report.pending_roll, "{report:?}");
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.next_seq, next);
    assert_eq!(read_all(&log.reader()), expected(&payloads, start));
    let (_, after) = frames_of(&segment_file(dir.path(), base));
    let seal = after.last().unwrap();
    assert!(
        seal.seal && seal.offset == end && seal.seq == next,
        "{after:?}"
    );
    assert_eq!(log.append(b"after the crash").unwrap(), Seq(next));
    assert_eq!(*segment_bases(dir.path()).last().unwrap(), next);
    log.close().unwrap();
}

/// [REC-09] [REC-04] In a recycled last segment, damage that valid frames follow is refused
/// by the default mode and cut by `PointInTime` with a seal at the damage;
/// `AbsoluteConsistency` refuses even an undamaged one, since it cannot show that nothing was
/// torn.
#[test]
fn recovery_modes_decide_a_recycled_segment_with_damage() {
    let (template, payloads, start, base) = crashed_recycled_log();

    let absolute = scratch_dir();
    copy_dir(template.path(), absolute.path());
    let options = LogOptions {
        recovery_mode: RecoveryMode::AbsoluteConsistency,
        ..recycling()
    };
    match open_log(absolute.path(), options) {
        Err(Error::Corrupt {
            kind: CorruptKind::TornTail { .. },
            ..
        }) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }

    // Damage the third frame from the end: two valid frames follow it. Without the index,
    // recovery scans the segment from its first frame [REC-02].
    forget_index(template.path(), base);
    let (_, frames) = frames_of(&segment_file(template.path(), base));
    let damaged = frames[frames.len() - 3];
    flip_byte(
        &segment_file(template.path(), base),
        damaged.offset + 12,
        0x40,
    );
    let default = scratch_dir();
    copy_dir(template.path(), default.path());
    match open_log(default.path(), recycling()) {
        Err(Error::Corrupt {
            offset,
            kind: CorruptKind::DamagedBeforeTail { next_valid },
            ..
        }) => assert_eq!((offset, next_valid), (damaged.offset, damaged.end())),
        other => panic!("expected damage before the tail, got {other:?}"),
    }

    let options = LogOptions {
        recovery_mode: RecoveryMode::PointInTime,
        ..recycling()
    };
    let (mut log, report) = open_log(template.path(), options).unwrap();
    let cut = report.torn_tail.clone().expect("a cut");
    assert_eq!(cut.offset, damaged.offset);
    assert!(matches!(cut.kind, CorruptKind::DamagedBeforeTail { .. }));
    assert!(report.recycled_end && report.pending_roll, "{report:?}");
    assert_eq!(report.next_seq, damaged.seq);
    assert_eq!(
        read_all(&log.reader()),
        expected(&payloads[..damaged.seq as usize - 1], start)
    );
    assert_eq!(log.append(b"after the cut").unwrap(), Seq(damaged.seq));
}

/// [REC-09] [REC-03] [VER-01] A recycled last segment whose frames stop below what the
/// watermark file names durable is refused, not sealed where they stop, even with nothing
/// valid after the damage; `verify` by a follower reports it.
#[test]
fn a_recycled_segment_that_lost_durable_frames_is_refused() {
    let (dir, payloads, _, base) = crashed_recycled_log();
    let next = payloads.len() as u64 + 1;
    std::fs::write(
        dir.path().join(DURABLE_FILE),
        DurableWatermark { durable: next }.encode(),
    )
    .unwrap();
    forget_index(dir.path(), base);
    let path = segment_file(dir.path(), base);
    let (_, frames) = frames_of(&path);
    let damaged = frames[frames.len() - 3];
    let end = frames.last().unwrap().end();
    zero_range(&path, damaged.offset, end);
    let before = std::fs::read(&path).unwrap();

    match open_log(dir.path(), recycling()) {
        Err(Error::Corrupt {
            offset,
            kind: CorruptKind::BelowDurable { found, durable, .. },
            ..
        }) => assert_eq!(
            (offset, found, durable),
            (damaged.offset, damaged.seq, next)
        ),
        other => panic!("expected durable damage, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "nothing sealed or cut"
    );
    let report = Reader::open(dir.path(), &recycling())
        .unwrap()
        .verify()
        .unwrap();
    assert!(
        matches!(
            report.problems.as_slice(),
            [problem] if problem.offset == damaged.offset
                && matches!(problem.kind, CorruptKind::BelowDurable { .. })
        ),
        "{report:?}"
    );
}

/// [REC-09] A recycled last segment left without a record is zeroed past its header rather
/// than sealed (its seal would name its own base), and appends go on in it.
#[test]
fn a_recycled_segment_without_records_is_zeroed() {
    let (dir, _, _, base) = crashed_recycled_log();
    // Lose every frame, as a power loss before its first sync could.
    let path = segment_file(dir.path(), base);
    for frame in frames_of(&path).1 {
        flip_byte(&path, frame.offset + 12, 0x40);
    }
    forget_index(dir.path(), base);
    // Nor can the watermark file name them [REC-03].
    esl_replay::storage::remove_durable(&dir.path().join(DURABLE_FILE)).unwrap();

    let (mut log, report) = open_log(dir.path(), recycling()).unwrap();
    assert!(report.recycled_end && !report.pending_roll, "{report:?}");
    assert_eq!(report.next_seq, base);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(
        read_range(&path, HEADER_LEN as u64, len)
            .iter()
            .all(|b| *b == 0)
    );
    assert_eq!(log.append(b"first").unwrap(), Seq(base));
    assert_eq!(*segment_bases(dir.path()).last().unwrap(), base);
}

/// [TRUNC-05] A truncation that removes several segments keeps the newest ones' files, up to
/// the pool's bound in all, and removes the rest; later rolls use every kept file.
#[test]
fn a_truncation_keeps_at_most_a_pool_of_files() {
    let (dir, mut log, mut payloads) = filled(recycling(), RECYCLE_POOL + 3);
    let bases = segment_bases(dir.path());
    let last_sealed = bases[bases.len() - 2];
    let report = log.truncate_prefix(Seq(*bases.last().unwrap())).unwrap();
    assert_eq!(report.segments_removed, bases.len() - 1);
    assert_eq!(report.recycled, RECYCLE_POOL, "{report:?}");
    let newest: Vec<_> = bases[bases.len() - 1 - RECYCLE_POOL..bases.len() - 1]
        .iter()
        .map(|base| recycle_path(dir.path(), *base))
        .collect();
    assert_eq!(kept_files(dir.path()), newest);
    assert!(newest.contains(&recycle_path(dir.path(), last_sealed)));
    let rolled = segment_bases(dir.path()).len();
    while segment_bases(dir.path()).len() < rolled + RECYCLE_POOL + 1 {
        append(&mut log, &mut payloads);
    }
    assert!(kept_files(dir.path()).is_empty());
    let recycled = segment_bases(dir.path())
        .into_iter()
        .filter(|base| header(dir.path(), *base).read_version == RECYCLED_VERSION)
        .count();
    assert_eq!(recycled, RECYCLE_POOL);
}
