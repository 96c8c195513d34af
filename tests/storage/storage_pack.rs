//! Packed segments [SEG-09]: sealed segments rewritten with each record compressed against a
//! dictionary trained on the segment, by `Log::pack_sealed` and by the background packer.
//!
//! Every record must read back byte for byte, through the writer's readers (also ones reading
//! a segment while it is packed), followers, point reads and `verify`; damaged segments stay
//! as written; damage in a packed segment is reported where it is; and an interrupted packing
//! ([PACK-01] to [PACK-05]) leaves a log that opens with every record, whichever of its renames
//! reached the disk.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use esl_replay::storage::codec::{
    FileHeader, PACKED_VERSION, PLAIN_VERSION, RECYCLED_VERSION, SEGMENT_MAGIC, TRAILER_OVERHEAD,
    index_path, recycle_path, segment_path,
};
use esl_replay::storage::{
    CorruptKind, Error, LogOptions, PackOutcome, ReadStrategy, Reader, RecoveryMode, Seq,
};

use crate::support::process::open_log;
use crate::support::storage::{
    FaultyIo, FrameSpan, NoSyncIo, Plan, Rng, fast_options, flip_byte, frames_of, read_all,
    read_range, segment_bases, temp_dir, with_io, with_strategy,
};

/// Record `seq`: mostly an ESL event in plain format (fields repeat across records, values
/// vary), every tenth pseudo-random bytes that do not compress, every 25th a long repetitive
/// one that the log compresses on its own when appending.
/// Fast options with background packing at level 3.
fn packing() -> LogOptions {
    LogOptions {
        pack_level: Some(3),
        ..fast_options()
    }
}

fn record(seq: u64) -> Vec<u8> {
    if seq % 10 == 3 {
        let mut rng = Rng::new(seq);
        return (0..900).map(|_| rng.next_u64() as u8).collect();
    }
    let names = [
        "CHANNEL_CREATE",
        "CHANNEL_ANSWER",
        "CHANNEL_EXECUTE",
        "CHANNEL_HANGUP",
        "HEARTBEAT",
    ];
    let name = names[(seq % 5) as usize];
    let mut text = format!(
        "Event-Name: {name}\nCore-UUID: 0c6a9c2e-8f1e-4d55-9a83-5b0e6f1d2a77\n\
         FreeSWITCH-Hostname: vm\nFreeSWITCH-Switchname: vm\nFreeSWITCH-IPv4: 10.0.0.5\n\
         Event-Date-Local: 2026-12-05 15:{:02}:{:02}\nEvent-Date-Timestamp: {}\n\
         Event-Calling-File: switch_core_state_machine.c\nEvent-Sequence: {seq}\n\
         Channel-State: CS_EXECUTE\nChannel-Call-State: ACTIVE\n\
         Unique-ID: {:08x}-1d2e-4f5a-8b9c-{:012x}\nCall-Direction: inbound\n\
         Caller-Caller-ID-Number: 10{:02}\nCaller-Destination-Number: 9{:03}\n\
         variable_sip_user_agent: FreeSWITCH-mod_sofia/1.10.12\n",
        seq / 60 % 60,
        seq % 60,
        1_733_412_000_000_000 + seq * 1_337,
        seq * 7,
        seq * 13,
        seq % 97,
        seq % 1000,
    );
    if seq.is_multiple_of(25) {
        text.push_str(&"variable_long_value: 0123456789abcdef\n".repeat(60));
    }
    text.into_bytes()
}

/// A log of `count` records over several sealed 64 KiB segments, closed.
fn written_log(dir: &Path, options: &LogOptions, count: u64) {
    let (mut log, _) = open_log(dir, options.clone()).unwrap();
    for seq in 1..=count {
        assert_eq!(log.append(&record(seq)).unwrap(), Seq(seq));
    }
    log.close().unwrap();
}

/// Bytes of these segments' files.
fn segment_bytes(dir: &Path, bases: &[u64]) -> u64 {
    bases
        .iter()
        .map(|b| std::fs::metadata(segment_path(dir, *b)).unwrap().len())
        .sum()
}

fn header_of(dir: &Path, base: u64) -> FileHeader {
    let bytes = std::fs::read(segment_path(dir, base)).unwrap();
    FileHeader::decode(&bytes, SEGMENT_MAGIC).unwrap()
}

fn assert_every_record(reader: &Reader, count: u64) {
    let all = read_all(reader);
    assert_eq!(all.len() as u64, count);
    for (seq, payload) in all {
        assert_eq!(payload, record(seq), "record {seq}");
    }
}

fn packed_count(outcomes: &[(esl_replay::storage::SegmentId, PackOutcome)]) -> usize {
    outcomes
        .iter()
        .filter(|(_, o)| matches!(o, PackOutcome::Packed { .. }))
        .count()
}

/// [SEG-09] [PACK-01] Packing every sealed segment keeps every record byte for byte, for the
/// writer's readers, followers (mmap and pread), point reads and `verify`; packed files are
/// version 2 and much smaller, and the active segment stays as written.
#[test]
fn packed_segments_read_back_every_record() {
    let dir = temp_dir();
    let count = 1500;
    written_log(dir.path(), &fast_options(), count);
    let bases = segment_bases(dir.path());
    assert!(bases.len() > 5, "{bases:?}");
    let before = segment_bytes(dir.path(), &bases);

    let (log, _) = open_log(dir.path(), fast_options()).unwrap();
    let outcomes = log.pack_sealed().unwrap();
    assert_eq!(packed_count(&outcomes), bases.len() - 1, "{outcomes:?}");
    for (_, outcome) in &outcomes {
        if let PackOutcome::Packed {
            records,
            unpacked,
            packed,
        } = outcome
        {
            assert!(*records > 0);
            assert!(packed * 4 < *unpacked * 3, "{packed} of {unpacked}");
        }
    }
    assert_every_record(&log.reader(), count);
    for seq in [1, 2, 3, 250, 777, 1499] {
        assert_eq!(log.reader().get(Seq(seq)).unwrap(), Some(record(seq)));
    }
    assert!(
        log.pack_sealed().unwrap().is_empty(),
        "nothing left to pack"
    );
    log.close().unwrap();

    let last = *bases.last().unwrap();
    for base in &bases {
        let header = header_of(dir.path(), *base);
        let expected = if *base == last {
            PLAIN_VERSION
        } else {
            PACKED_VERSION
        };
        assert_eq!(header.read_version, expected, "segment {base}");
    }
    let after = segment_bytes(dir.path(), &bases);
    assert!(after < before, "{after} of {before}");

    for strategy in [ReadStrategy::Mmap, ReadStrategy::Pread] {
        let reader = Reader::open(dir.path(), &with_strategy(fast_options(), strategy)).unwrap();
        assert_every_record(&reader, count);
        assert_eq!(reader.get(Seq(1000)).unwrap(), Some(record(1000)));
        let report = reader.verify().unwrap();
        assert!(report.is_ok(), "{report:?}");
        assert_eq!(report.records, count);
    }
    // The log goes on: appends after packing, another open, every record.
    let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
    for seq in count + 1..=count + 200 {
        assert_eq!(log.append(&record(seq)).unwrap(), Seq(seq));
    }
    assert_every_record(&log.reader(), count + 200);
    log.close().unwrap();
}

/// [PACK-05] A cursor halfway through a segment when it is packed reads on in the file it
/// started with, and the records after it come from the packed files.
#[test]
fn a_cursor_reads_on_while_its_segment_is_packed() {
    let dir = temp_dir();
    let count = 800;
    written_log(dir.path(), &fast_options(), count);
    let (log, _) = open_log(dir.path(), fast_options()).unwrap();
    let reader = log.reader();
    let mut cursor = reader.cursor(Seq(1)).unwrap();
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = cursor.next().unwrap().unwrap();
        seen.push((r.seq.0, r.payload.to_vec()));
    }
    assert!(packed_count(&log.pack_sealed().unwrap()) > 2);
    // The segment the cursor holds is not kept for reuse [PACK-05]; the others are.
    assert!(!recycle_path(dir.path(), 1).exists());
    assert!(!recycled_names(dir.path()).is_empty());
    while let Some(r) = cursor.next().unwrap() {
        seen.push((r.seq.0, r.payload.to_vec()));
    }
    assert_eq!(seen.len() as u64, count);
    for (seq, payload) in seen {
        assert_eq!(payload, record(seq), "record {seq}");
    }
    log.close().unwrap();
}

/// [PACK-04] [PACK-05] [SEG-10] A packed segment's original file, held by no reader, waits
/// under its recycle name and becomes one of the writer's next segments: every record reads
/// back, from the writer and a follower, and a clean close leaves no kept file.
#[test]
fn a_packed_segments_original_becomes_a_next_segment() {
    let dir = temp_dir();
    let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
    let mut count = 0;
    while segment_bases(dir.path()).len() < 3 {
        count += 1;
        log.append(&record(count)).unwrap();
    }
    let first = segment_path(dir.path(), 1);
    let original = std::fs::metadata(&first).unwrap().ino();
    // Packing takes only segments whose roll is durable [PACK-01]: the sync thread may not
    // have finished the last roll yet on a loaded machine.
    log.sync().unwrap();
    assert!(packed_count(&log.pack_sealed().unwrap()) >= 2);
    assert_eq!(header_of(dir.path(), 1).read_version, PACKED_VERSION);
    let kept = recycle_path(dir.path(), 1);
    assert_eq!(std::fs::metadata(&kept).unwrap().ino(), original);
    let reused = loop {
        count += 1;
        log.append(&record(count)).unwrap();
        let last = *segment_bases(dir.path()).last().unwrap();
        if std::fs::metadata(segment_path(dir.path(), last))
            .unwrap()
            .ino()
            == original
        {
            break last;
        }
        assert!(
            count < 5_000,
            "no roll reused the packed segment's original"
        );
    };
    assert_eq!(header_of(dir.path(), reused).read_version, RECYCLED_VERSION);
    assert!(!kept.exists());
    for _ in 0..20 {
        count += 1;
        log.append(&record(count)).unwrap();
    }
    assert_every_record(&log.reader(), count);
    log.close().unwrap();
    assert!(recycled_names(dir.path()).is_empty());
    let follower = Reader::open(dir.path(), &fast_options()).unwrap();
    assert_every_record(&follower, count);
    assert!(follower.verify().unwrap().is_ok());
}

/// [PACK-05] An original that is not kept (the writer does not recycle) has its blocks
/// released once it is packed; a descriptor that takes no lock sees them gone.
#[test]
fn a_packed_segments_original_is_released_when_not_kept() {
    let dir = temp_dir();
    let options = LogOptions {
        recycle_segments: false,
        ..fast_options()
    };
    let count = 600;
    written_log(dir.path(), &options, count);
    let original = std::fs::File::open(segment_path(dir.path(), 1)).unwrap();
    assert!(original.metadata().unwrap().blocks() > 0);
    let (log, _) = open_log(dir.path(), options.clone()).unwrap();
    assert!(packed_count(&log.pack_sealed().unwrap()) > 2);
    assert!(recycled_names(dir.path()).is_empty());
    assert_eq!(original.metadata().unwrap().blocks(), 0);
    assert_every_record(&log.reader(), count);
    log.close().unwrap();
}

/// The names of files kept for reuse in `dir`.
fn recycled_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("recycle."))
        .collect()
}

/// [SEG-09] With `pack_level` set, the writer packs sealed segments in the background while
/// appends go on.
#[test]
fn the_background_packer_packs_sealed_segments() {
    let dir = temp_dir();
    let options = packing();
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    let count = 1200;
    for seq in 1..=count {
        log.append(&record(seq)).unwrap();
    }
    log.sync().unwrap();
    let bases = segment_bases(dir.path());
    let sealed = &bases[..bases.len() - 1];
    let deadline = Instant::now() + Duration::from_secs(30);
    while sealed
        .iter()
        .any(|b| header_of(dir.path(), *b).read_version != PACKED_VERSION)
    {
        assert!(Instant::now() < deadline, "not packed within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_every_record(&log.reader(), count);
    log.close().unwrap();
    let reader = Reader::open(dir.path(), &fast_options()).unwrap();
    assert_every_record(&reader, count);
    assert!(reader.verify().unwrap().is_ok());
}

/// [RD-04] A segment holding damage is not packed: packing would hide where the damage is.
#[test]
fn a_damaged_segment_stays_as_written() {
    let dir = temp_dir();
    written_log(dir.path(), &fast_options(), 600);
    let bases = segment_bases(dir.path());
    let damaged = bases[1];
    let path = segment_path(dir.path(), damaged);
    let (_, frames) = frames_of(&path);
    let frame = frames[3];
    flip_byte(&path, frame.offset + 12, 0x20);
    let original = std::fs::read(&path).unwrap();

    let (log, _) = open_log(dir.path(), fast_options()).unwrap();
    let outcomes = log.pack_sealed().unwrap();
    let outcome = outcomes.iter().find(|(id, _)| id.0 == damaged).unwrap();
    assert!(
        matches!(&outcome.1, PackOutcome::Damaged { offset, .. } if *offset == frame.offset),
        "{outcome:?}"
    );
    assert_eq!(packed_count(&outcomes), bases.len() - 2);
    log.close().unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), original);
    let report = Reader::open(dir.path(), &fast_options())
        .unwrap()
        .verify()
        .unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].segment.0, damaged);
    assert_eq!(report.problems[0].offset, frame.offset);
}

/// [SEG-09] [RD-04] Damage in a packed segment is reported where it is: a damaged frame by
/// its offset (the records around it still read), a damaged dictionary at the trailer, which
/// fails that segment's reads and no other's.
#[test]
fn damage_in_a_packed_segment_is_reported_where_it_is() {
    let dir = temp_dir();
    let count = 900;
    written_log(dir.path(), &fast_options(), count);
    let (log, _) = open_log(dir.path(), fast_options()).unwrap();
    log.pack_sealed().unwrap();
    log.close().unwrap();
    let bases = segment_bases(dir.path());

    // A frame's payload.
    let path = segment_path(dir.path(), bases[1]);
    let (_, frames) = frames_of(&path);
    let frame = frames[5];
    flip_byte(&path, frame.offset + frame.len - 1, 0x20);
    let reader = Reader::open(dir.path(), &fast_options()).unwrap();
    let report = reader.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(
        (report.problems[0].segment.0, report.problems[0].offset),
        (bases[1], frame.offset)
    );
    let damaged_seq = bases[1] + 5;
    assert!(matches!(
        reader.get(Seq(damaged_seq)),
        Err(Error::Corrupt { offset, .. }) if offset == frame.offset
    ));
    assert_eq!(
        reader.get(Seq(damaged_seq + 1)).unwrap(),
        Some(record(damaged_seq + 1))
    );
    assert_eq!(
        reader.get(Seq(damaged_seq - 1)).unwrap(),
        Some(record(damaged_seq - 1))
    );
    flip_byte(&path, frame.offset + frame.len - 1, 0x20);

    // The dictionary, in the trailer at the end of the file.
    let path = segment_path(dir.path(), bases[2]);
    let len = std::fs::metadata(&path).unwrap().len();
    flip_byte(&path, len - TRAILER_OVERHEAD as u64 - 100, 0x20);
    let reader = Reader::open(dir.path(), &fast_options()).unwrap();
    let report = reader.verify().unwrap();
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].segment.0, bases[2]);
    assert!(matches!(
        report.problems[0].kind,
        CorruptKind::ChecksumMismatch { .. }
    ));
    assert!(matches!(
        reader.get(Seq(bases[2] + 1)),
        Err(Error::Corrupt { segment, .. }) if segment.0 == bases[2]
    ));
    assert_eq!(reader.get(Seq(bases[3])).unwrap(), Some(record(bases[3])));
    assert_eq!(reader.get(Seq(bases[1])).unwrap(), Some(record(bases[1])));
}

/// [PACK-02] [PACK-03] [PACK-04] A packing that fails at any write, sync or removal returns
/// the error and changes nothing a reader sees: every record reads back, the next open
/// removes its temporaries, and packing again succeeds.
#[test]
fn a_failed_packing_leaves_every_record() {
    let count = 300;
    let plans: [(&str, PlanFor); 2] = [
        ("write", |point| Plan {
            fail_write: Some(point),
            target: Some(".tmp".into()),
            ..Plan::default()
        }),
        ("sync", |point| Plan {
            fail_sync: Some(point),
            target: Some(".tmp".into()),
            ..Plan::default()
        }),
    ];
    for (what, plan) in plans {
        let dir = temp_dir();
        written_log(dir.path(), &fast_options(), count);
        let bases = segment_bases(dir.path());
        let failures = fail_each_point(dir.path(), count, plan);
        assert!(failures > 0, "no {what} failed");
        for base in &bases[..bases.len() - 1] {
            assert_eq!(header_of(dir.path(), *base).read_version, PACKED_VERSION);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".tmp") && n != "spare.seg.tmp")
            .collect();
        assert!(leftovers.is_empty(), "{what}: {leftovers:?}");
        assert_every_record(&Reader::open(dir.path(), &fast_options()).unwrap(), count);
    }
}

/// The fault plan of failure point `n` (1-based).
type PlanFor = fn(u64) -> Plan;

/// Packs the log in `dir` once per failure point that `plan` injects, until a packing meets
/// none: each failed packing must return its error and leave every record readable, by the
/// writer and by a follower. Returns how many points failed.
fn fail_each_point(dir: &Path, count: u64, plan: PlanFor) -> u64 {
    let mut point = 0;
    loop {
        point += 1;
        let io = FaultyIo::new(Arc::new(NoSyncIo));
        io.set_plan(plan(point));
        let (log, _) = open_log(dir, with_io(fast_options(), io.clone())).unwrap();
        let result = log.pack_sealed();
        assert_every_record(&log.reader(), count);
        log.close().unwrap();
        if io.injected().is_empty() {
            result.unwrap();
            return point - 1;
        }
        assert!(result.is_err(), "failure {point} went unreported");
        let reader = Reader::open(dir, &fast_options()).unwrap();
        assert_every_record(&reader, count);
        assert!(reader.verify().unwrap().is_ok());
    }
}

/// [PACK-04] After a power loss the two renames of a packing may have reached the disk in
/// any combination, and its temporaries may remain: each combination opens (writer and
/// follower) with every record, and the writer's open removes the temporaries.
#[test]
fn every_combination_of_a_packings_renames_opens_with_every_record() {
    let count = 500;
    let template = temp_dir();
    written_log(template.path(), &fast_options(), count);
    let bases = segment_bases(template.path());
    let base = bases[1];
    let old_segment = std::fs::read(segment_path(template.path(), base)).unwrap();
    let old_index = std::fs::read(index_path(template.path(), base)).unwrap();
    let packed = temp_dir();
    copy_dir(template.path(), packed.path());
    let (log, _) = open_log(packed.path(), fast_options()).unwrap();
    log.pack_sealed().unwrap();
    log.close().unwrap();
    let new_segment = std::fs::read(segment_path(packed.path(), base)).unwrap();
    let new_index = std::fs::read(index_path(packed.path(), base)).unwrap();

    for (segment, index) in [
        (&old_segment, &old_index),
        (&old_segment, &new_index),
        (&new_segment, &old_index),
        (&new_segment, &new_index),
    ] {
        let dir = temp_dir();
        copy_dir(template.path(), dir.path());
        std::fs::write(segment_path(dir.path(), base), segment).unwrap();
        std::fs::write(index_path(dir.path(), base), index).unwrap();
        let seg_name = format!(".{base:020}.seg.00000000000000aa.tmp");
        std::fs::write(dir.path().join(&seg_name), &new_segment).unwrap();
        let follower = Reader::open(dir.path(), &fast_options()).unwrap();
        assert_every_record(&follower, count);
        assert!(follower.verify().unwrap().is_ok());
        let (log, _) = open_log(dir.path(), fast_options()).unwrap();
        assert!(!dir.path().join(&seg_name).exists());
        assert_every_record(&log.reader(), count);
        log.pack_sealed().unwrap();
        log.close().unwrap();
        assert_every_record(&Reader::open(dir.path(), &fast_options()).unwrap(), count);
    }
}

/// [TRUNC-01] Prefix truncation removes packed segments as it removes any other.
#[test]
fn truncation_removes_packed_segments() {
    let dir = temp_dir();
    let count = 700;
    written_log(dir.path(), &fast_options(), count);
    let (log, _) = open_log(dir.path(), fast_options()).unwrap();
    log.pack_sealed().unwrap();
    let bases = segment_bases(dir.path());
    let report = log.truncate_prefix(Seq(bases[3])).unwrap();
    assert_eq!(report.segments_removed, 3, "{report:?}");
    let all = read_all(&log.reader());
    assert_eq!(all.first().map(|r| r.0), Some(bases[3]));
    for (seq, payload) in all {
        assert_eq!(payload, record(seq));
    }
    log.close().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

/// [SEG-09] [REC-06] With packing on, a clean close seals and packs the last segment: the
/// closed log keeps no unpacked records and no spare, reopens cleanly (writer and
/// follower) with every record, and the next append starts a new segment.
#[test]
fn a_clean_close_packs_the_last_segment() {
    let dir = temp_dir();
    let options = packing();
    let count = 400;
    written_log(dir.path(), &options, count);
    let bases = segment_bases(dir.path());
    for base in &bases {
        assert_eq!(
            header_of(dir.path(), *base).read_version,
            PACKED_VERSION,
            "{base}"
        );
    }
    assert!(
        !dir.path()
            .join(esl_replay::storage::codec::SPARE_FILE)
            .exists()
    );
    assert_every_record(&Reader::open(dir.path(), &fast_options()).unwrap(), count);

    let (mut log, report) = open_log(dir.path(), options.clone()).unwrap();
    assert!(report.clean_shutdown, "{report:?}");
    assert_every_record(&log.reader(), count);
    assert_eq!(log.reader().get(Seq(count)).unwrap(), Some(record(count)));
    assert_eq!(log.append(&record(count + 1)).unwrap(), Seq(count + 1));
    log.close().unwrap();
    let after = segment_bases(dir.path());
    assert_eq!(after.len(), bases.len() + 1);
    assert_eq!(*after.last().unwrap(), count + 1);
    // Open and close with nothing appended: nothing changes.
    let (log, report) = open_log(dir.path(), options.clone()).unwrap();
    assert!(report.clean_shutdown);
    log.close().unwrap();
    assert_eq!(segment_bases(dir.path()), after);
    // An unclean stop after a packing close: recovery scans the packed last segment and
    // must not take its trailer for a torn tail.
    esl_replay::storage::remove_durable(&dir.path().join(esl_replay::storage::codec::CLEAN_FILE))
        .unwrap();
    let (log, report) = open_log(dir.path(), options).unwrap();
    assert!(!report.clean_shutdown);
    assert!(report.torn_tail.is_none(), "{report:?}");
    assert_every_record(&log.reader(), count + 1);
    log.simulate_crash();
    let reader = Reader::open(dir.path(), &fast_options()).unwrap();
    assert_every_record(&reader, count + 1);
    assert!(reader.verify().unwrap().is_ok());
}

/// [SEG-09] A packed last segment is never cut or appended to: damage in the frames the
/// writer's open scans (after the last index entry, as for any last segment) makes it fail,
/// naming where, in every recovery mode; followers still read the records before the damage.
#[test]
fn damage_in_a_packed_last_segment_is_refused_not_cut() {
    let dir = temp_dir();
    let options = packing();
    written_log(dir.path(), &options, 300);
    let last = *segment_bases(dir.path()).last().unwrap();
    let path = segment_path(dir.path(), last);
    let (_, frames) = frames_of(&path);
    // The last record's frame (the list ends with the seal).
    let records = frames.len() - 1;
    let frame = frames[records - 1];
    flip_byte(&path, frame.offset + 9, 0x20);
    let before = std::fs::read(&path).unwrap();
    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::PointInTime,
    ] {
        let options = LogOptions {
            recovery_mode: mode,
            ..options.clone()
        };
        match open_log(dir.path(), options) {
            Err(Error::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!((segment.0, offset), (last, frame.offset), "{mode:?}");
            }
            other => panic!("{mode:?}: expected the damage, got {other:?}"),
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "{mode:?}: nothing cut"
        );
    }
    let reader = Reader::open(dir.path(), &fast_options()).unwrap();
    let damaged = last + (records - 1) as u64;
    assert_eq!(
        reader.get(Seq(damaged - 1)).unwrap(),
        Some(record(damaged - 1))
    );
    assert!(!reader.verify().unwrap().is_ok());
}

/// Damages the middle frame of the packed segment at `base` and removes what else proves
/// where the log ends (the clean marker, the watermark file, the segment's index), as a
/// crash followed by damage from outside could leave it; returns the damaged frame.
fn damage_and_forget_proofs(dir: &Path, base: u64) -> FrameSpan {
    use esl_replay::storage::codec::{CLEAN_FILE, DURABLE_FILE};
    let path = segment_path(dir, base);
    let (_, frames) = frames_of(&path);
    let frame = frames[frames.len() / 2];
    flip_byte(&path, frame.offset + 9, 0x20);
    for file in [
        dir.join(CLEAN_FILE),
        dir.join(DURABLE_FILE),
        index_path(dir, base),
    ] {
        esl_replay::storage::remove_durable(&file).unwrap();
    }
    frame
}

/// [REC-08] [PACK-01] A packed segment proves its roll finished: damage in it after an
/// unclean shutdown, with its index, the watermark file and the clean marker gone, makes the
/// writer's open remove nothing after it. The damage is reported where it is, and every
/// record of the segments after it stays readable.
#[test]
fn a_damaged_packed_segment_is_never_taken_for_an_unfinished_roll() {
    let dir = temp_dir();
    let count = 1500;
    written_log(dir.path(), &fast_options(), count);
    let (log, _) = open_log(dir.path(), fast_options()).unwrap();
    log.pack_sealed().unwrap();
    log.close().unwrap();
    let bases = segment_bases(dir.path());
    let (damaged, successor) = (bases[bases.len() - 2], bases[bases.len() - 1]);
    assert_eq!(header_of(dir.path(), damaged).read_version, PACKED_VERSION);
    let frame = damage_and_forget_proofs(dir.path(), damaged);

    let (log, report) = open_log(dir.path(), fast_options()).unwrap();
    assert_eq!(report.unfinished_roll, None, "{report:?}");
    assert_eq!(report.next_seq, count + 1);
    assert_eq!(segment_bases(dir.path()), bases);
    let reader = log.reader();
    assert_eq!(reader.get(Seq(successor)).unwrap(), Some(record(successor)));
    assert_eq!(reader.get(Seq(count)).unwrap(), Some(record(count)));
    let problems = reader.verify().unwrap().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        (problems[0].segment.0, problems[0].offset),
        (damaged, frame.offset)
    );
    log.close().unwrap();
}

/// [SEG-09] [RD-04] A follower of a packed last segment whose frames stop before its seal
/// (no writer ran since, no clean marker or watermark file) meets the damage at the end of
/// its reads, in lookups that find nothing, and in `verify`, instead of taking it for the
/// end of the log.
#[test]
fn a_follower_meets_damage_before_a_packed_last_segments_seal() {
    let dir = temp_dir();
    written_log(dir.path(), &packing(), 300);
    let last = *segment_bases(dir.path()).last().unwrap();
    assert_eq!(header_of(dir.path(), last).read_version, PACKED_VERSION);
    let frame = damage_and_forget_proofs(dir.path(), last);

    let reader = Reader::open(dir.path(), &fast_options()).unwrap();
    let mut cursor = reader.cursor(Seq(frame.seq - 1)).unwrap();
    assert_eq!(
        cursor.next().unwrap().map(|f| f.seq),
        Some(Seq(frame.seq - 1))
    );
    match cursor.next() {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => assert_eq!((segment.0, offset), (last, frame.offset)),
        other => panic!("expected the damage, got {other:?}"),
    }
    let hidden = reader.missing_records().unwrap();
    assert!(
        matches!(&hidden, Some(Error::Corrupt { offset, .. }) if *offset == frame.offset),
        "{hidden:?}"
    );
    assert!(!reader.verify().unwrap().is_ok());
}

/// [PACK-05] A follower that loaded a sealed segment before it was packed moves to the packed
/// file once it looks for new records, and lets the original go.
#[test]
fn a_follower_moves_to_packed_files() {
    let dir = temp_dir();
    let count = 600;
    written_log(dir.path(), &fast_options(), count);
    let follower = Reader::open(dir.path(), &fast_options()).unwrap();
    assert_every_record(&follower, count);
    let first = segment_path(dir.path(), 1);
    let held_before = open_handles_to(&first);
    assert!(held_before > 0, "the follower holds segment 1");
    let (log, _) = open_log(dir.path(), fast_options()).unwrap();
    log.pack_sealed().unwrap();
    log.close().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert_every_record(&follower, count);
        if deleted_handles(dir.path()) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the follower still holds replaced files"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Descriptors of this process open on `path`.
fn open_handles_to(path: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|target| target == path))
        .count()
}

/// Descriptors of this process open on deleted segment files of `dir` (tests run in
/// parallel threads: other tests' files are not counted).
fn deleted_handles(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| {
            let text = target.to_string_lossy();
            target.starts_with(dir) && text.contains(".seg") && text.ends_with("(deleted)")
        })
        .count()
}

/// `esl-replay log pack` packs every sealed segment and says so per segment; `log inspect`
/// then shows each packed segment with its size before packing, and `log verify` passes.
#[cfg(feature = "cli")]
#[test]
fn the_pack_and_inspect_commands_show_what_was_packed() {
    let dir = temp_dir();
    written_log(dir.path(), &fast_options(), 600);
    let sealed = segment_bases(dir.path()).len() - 1;
    let log = dir.path().to_str().unwrap();
    let run = |command: &str| crate::support::cli::run_ok(&["log", command, log]);
    let packed = run("pack");
    assert_eq!(packed.matches("packed 0").count(), sealed, "{packed}");
    assert!(packed.contains("done:"), "{packed}");
    let inspected = run("inspect");
    assert_eq!(
        inspected.matches("packed from").count(),
        sealed,
        "{inspected}"
    );
    assert!(run("verify").starts_with("ok:"));
    assert!(
        run("pack").contains("done: 0 -> 0 bytes"),
        "nothing left to pack"
    );
}

/// [RD-01] [SEG-09] A follower that finds its last segment sealed adopts the successor even
/// when that one is sealed too, with no successor yet (a clean close with packing on seals
/// the last segment): its next sequence, what it waits for and what it may truncate are
/// the log's end, not the adopted segment's base.
#[test]
fn a_follower_that_adopts_a_sealed_last_segment_sees_the_end_of_the_log() {
    let dir = temp_dir();
    let options = packing();
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    log.append(&record(1)).unwrap();
    log.flush().unwrap();
    let follower = Reader::open(dir.path(), &LogOptions::default()).unwrap();
    assert_eq!(follower.next_seq().unwrap(), Seq(2));
    let first = log.active_segment();
    let mut seq = 2;
    while log.active_segment() == first {
        log.append(&record(seq)).unwrap();
        seq += 1;
    }
    for _ in 0..5 {
        log.append(&record(seq)).unwrap();
        seq += 1;
    }
    log.close().unwrap();
    assert_eq!(follower.next_seq().unwrap(), Seq(seq));
    assert!(follower.wait_for(Seq(seq - 1), Duration::ZERO).unwrap());
    assert_eq!(read_all(&follower).len() as u64, seq - 1);
    follower.truncate_prefix(Seq(seq)).unwrap();
}

/// [REC-12] [TRUNC-02] A follower whose last segment ended in its seal (a clean close with
/// packing) while the writer went on, rolled and truncated past it: the successor it never
/// saw was removed by the truncation, not lost, so no records are reported missing.
#[test]
fn a_successor_truncated_away_is_not_missing_to_a_follower() {
    let dir = temp_dir();
    let options = packing();
    let (mut log, _) = open_log(dir.path(), options.clone()).unwrap();
    for seq in 1..=5 {
        log.append(&record(seq)).unwrap();
    }
    log.close().unwrap();
    let follower = Reader::open(dir.path(), &LogOptions::default()).unwrap();
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    let mut seq = 6;
    for _ in 0..3 {
        let active = log.active_segment();
        while log.active_segment() == active {
            log.append(&record(seq)).unwrap();
            seq += 1;
        }
    }
    log.sync().unwrap();
    log.truncate_prefix(Seq(log.active_segment().0)).unwrap();
    assert!(follower.missing_records().unwrap().is_none());
    assert_eq!(follower.next_seq().unwrap(), Seq(seq));
}

#[expect(
    clippy::disallowed_methods,
    reason = "damage made while no reader has the file mapped"
)]
fn cut_file(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Fails, saying where, if the file at `path` no longer holds `before`.
fn assert_unchanged(path: &Path, before: &[u8], what: &str) {
    let after = std::fs::read(path).unwrap();
    let differ: Vec<usize> = (0..after.len().min(before.len()))
        .filter(|i| after[*i] != before[*i])
        .collect();
    assert!(
        after == before,
        "{what}: {} bytes, {} before, {} differ, first {:?} last {:?}",
        after.len(),
        before.len(),
        differ.len(),
        differ.first().map(|i| (i, before[*i], after[*i])),
        differ.last().map(|i| (i, before[*i], after[*i])),
    );
}

/// A closed log whose clean close packed every segment, the last one included; returns its
/// bases and how many records it holds.
fn packed_at_close(dir: &Path) -> (Vec<u64>, u64) {
    let count = 600;
    written_log(dir, &packing(), count);
    let bases = segment_bases(dir);
    assert!(bases.len() >= 3, "{bases:?}");
    for base in &bases {
        assert_eq!(header_of(dir, *base).read_version, PACKED_VERSION, "{base}");
    }
    (bases, count)
}

/// [SEG-09] [REC-13] A packed last segment whose trailer is damaged (a flipped bit, or the
/// file cut short into it) hides only its own records: followers open, read every record
/// before it, meet the damage at its segment and trailer offset for each of its records,
/// and `skip_damage` moves past it; `verify` reports its records unreadable; the writer
/// opens, in every mode, and gives the next record the sequence after its seal, in a new
/// segment, changing nothing in the damaged file.
#[test]
fn a_damaged_trailer_of_a_packed_last_segment_hides_only_its_records() {
    for cut in [false, true] {
        let dir = temp_dir();
        let (bases, count) = packed_at_close(dir.path());
        let last = *bases.last().unwrap();
        let path = segment_path(dir.path(), last);
        let len = std::fs::metadata(&path).unwrap().len();
        if cut {
            // By 1000 bytes, or less if the trailer is shorter: the seal stays.
            let fixed = read_range(&path, len - TRAILER_OVERHEAD as u64, len);
            let dict_len = u32::from_le_bytes(fixed[8..12].try_into().unwrap());
            let trailer_len = u64::from(dict_len) + TRAILER_OVERHEAD as u64;
            cut_file(&path, len - 1000.min(trailer_len));
        } else {
            flip_byte(&path, len - TRAILER_OVERHEAD as u64 - 100, 0x20);
        }
        let before = std::fs::read(&path).unwrap();

        let reader = Reader::open(dir.path(), &fast_options()).unwrap();
        assert_eq!(reader.next_seq().unwrap(), Seq(count + 1), "cut {cut}");
        assert_eq!(reader.get(Seq(1)).unwrap(), Some(record(1)));
        assert_eq!(reader.get(Seq(last - 1)).unwrap(), Some(record(last - 1)));
        for seq in [last, count] {
            assert!(
                matches!(reader.get(Seq(seq)), Err(Error::Corrupt { segment, .. }) if segment.0 == last),
                "cut {cut}: {seq}"
            );
        }
        let mut cursor = reader.cursor(Seq(1)).unwrap();
        for seq in 1..last {
            assert_eq!(cursor.next().unwrap().map(|r| r.seq), Some(Seq(seq)));
        }
        let offset = match cursor.next() {
            Err(Error::Corrupt {
                segment, offset, ..
            }) => {
                assert_eq!(segment.0, last);
                offset
            }
            other => panic!("cut {cut}: expected the damage, got {other:?}"),
        };
        assert!(offset > 0, "the damage is named where it is");
        assert_eq!(cursor.skip_damage().unwrap(), Some(Seq(count + 1)));
        assert!(cursor.next().unwrap().is_none());
        let problems = reader.verify().unwrap().problems;
        assert_eq!(problems.len(), 1, "cut {cut}: {problems:?}");
        assert_eq!(
            (
                problems[0].segment.0,
                problems[0].offset,
                problems[0].first_seq
            ),
            (last, offset, Seq(last))
        );
        assert_eq!(problems[0].resumes_at, Some(Seq(count + 1)));

        for mode in [
            RecoveryMode::AbsoluteConsistency,
            RecoveryMode::PointInTime,
            RecoveryMode::TolerateTornTail,
        ] {
            let options = LogOptions {
                recovery_mode: mode,
                ..packing()
            };
            let (log, report) = open_log(dir.path(), options).unwrap();
            assert_unchanged(&path, &before, &format!("{mode:?} open"));
            assert_eq!(report.next_seq, count + 1, "{mode:?}");
            assert_eq!(log.reader().get(Seq(1)).unwrap(), Some(record(1)));
            assert!(log.reader().get(Seq(last)).is_err(), "{mode:?}");
            log.close().unwrap();
            assert_unchanged(&path, &before, &format!("{mode:?}"));
        }
        let (mut log, _) = open_log(dir.path(), packing()).unwrap();
        assert_eq!(log.append(&record(count + 1)).unwrap(), Seq(count + 1));
        log.close().unwrap();
        assert_eq!(*segment_bases(dir.path()).last().unwrap(), count + 1);
        assert_unchanged(&path, &before, "after an append");
        let reader = Reader::open(dir.path(), &fast_options()).unwrap();
        assert_eq!(reader.get(Seq(count + 1)).unwrap(), Some(record(count + 1)));
        assert_eq!(reader.get(Seq(last - 1)).unwrap(), Some(record(last - 1)));
        let problems = reader.verify().unwrap().problems;
        assert_eq!(problems.len(), 1, "cut {cut}: {problems:?}");
        assert_eq!(problems[0].segment.0, last);
    }
}

/// [SEG-09] [RD-04] [REC-13] A packed last segment whose seal alone is damaged (its frames
/// run exactly to the trailer) is read as a middle segment's would be: every record reads,
/// `verify` reports the seal at its offset with no record lost, and the writer opens and
/// appends after it.
#[test]
fn a_damaged_seal_of_a_packed_last_segment_loses_no_record() {
    let dir = temp_dir();
    let (bases, count) = packed_at_close(dir.path());
    let last = *bases.last().unwrap();
    let path = segment_path(dir.path(), last);
    let (_, frames) = frames_of(&path);
    let seal = *frames.last().unwrap();
    assert!(seal.seal);
    flip_byte(&path, seal.offset + 1, 0x20);

    let reader = Reader::open(dir.path(), &fast_options()).unwrap();
    assert_every_record(&reader, count);
    assert_eq!(reader.get(Seq(count)).unwrap(), Some(record(count)));
    assert_eq!(
        reader.missing_records().unwrap().map(|e| e.to_string()),
        None
    );
    let problems = reader.verify().unwrap().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(
        (
            problems[0].segment.0,
            problems[0].offset,
            problems[0].first_seq
        ),
        (last, seal.offset, Seq(count + 1))
    );
    assert_eq!(problems[0].resumes_at, Some(Seq(count + 1)));

    let (mut log, report) = open_log(dir.path(), packing()).unwrap();
    assert_eq!(report.next_seq, count + 1);
    assert_every_record(&log.reader(), count);
    assert_eq!(log.append(&record(count + 1)).unwrap(), Seq(count + 1));
    log.close().unwrap();
    assert_eq!(*segment_bases(dir.path()).last().unwrap(), count + 1);
    let reader = Reader::open(dir.path(), &fast_options()).unwrap();
    assert_every_record(&reader, count + 1);
    assert_eq!(reader.verify().unwrap().problems.len(), 1);
}
