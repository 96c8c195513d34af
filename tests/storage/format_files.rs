//! The format as the engine writes and reads it: logs are written through the public API,
//! then their files are read back byte by byte with the public codecs, or damaged on
//! purpose, and reopened. This checks the layout rules of format/segment.md and
//! format/index.md on real files, the directory rules of format/directory.md, and the
//! premises of the crash analyses in format/recovery.md: the order of the durable steps of
//! a roll, an atomic replacement and a truncation (observed through a recording `Io`), and
//! what open does with a torn tail, damage before the tail, an interrupted roll and an
//! interrupted truncation.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use esl_replay::storage::codec::{
    CLEAN_FILE, CleanMark, DURABLE_FILE, Decoded, DurableWatermark, FORMAT_VERSION,
    FRAME_HEADER_LEN, FRAME_PAYLOAD_LIMIT, FileHeader, FrameKind, HEADER_LEN, INDEX_INTERVAL,
    IndexEntry, IndexFile, IndexFooter, RETENTION_LOCK, SEGMENT_MAGIC, SPARE_FILE, START_FILE,
    StartMark, decode_frame, decode_index_file, encode_frame, index_path, recycle_path,
    segment_path,
};
use esl_replay::storage::{
    CorruptKind, Damage, Error, Io, Log, LogOptions, Reader, RecoveryMode, SegmentId, Seq, StdIo,
    SyncPolicy,
};

use crate::support::process::open_log;

/// A format version newer than this build knows.
const NEWER_VERSION: u16 = FORMAT_VERSION + 1;

fn options(segment_bytes: u64, max_payload_bytes: u32, sync_policy: SyncPolicy) -> LogOptions {
    LogOptions {
        segment_bytes,
        max_payload_bytes,
        sync_policy,
        compress_min_bytes: None,
        ..LogOptions::default()
    }
}

/// Small segments that roll often; records durable on return.
fn small() -> LogOptions {
    options(64 << 10, 8 << 10, SyncPolicy::EveryAppend)
}

/// A deterministic payload of `len` bytes for record `i`.
fn payload(i: u64, len: usize) -> Vec<u8> {
    format!("Event-Sequence: {i}\nEvent-Name: CUSTOM\n")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(len)
        .collect()
}

/// Pseudo-random bytes that do not compress.
fn noise(len: usize, mut state: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn header(path: &Path) -> FileHeader {
    FileHeader::decode(&read(path), SEGMENT_MAGIC).unwrap()
}

fn ino(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().ino()
}

/// The base sequences of the segment files in `dir`, ascending.
fn bases(dir: &Path) -> Vec<u64> {
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    found.sort_unstable();
    found
}

#[derive(Debug, PartialEq)]
enum Stop {
    Seal,
    Empty,
    Invalid(CorruptKind),
    EndOfFile,
}

#[derive(Debug)]
struct Frame {
    offset: u64,
    seq: u64,
    len: usize,
    compressed: bool,
    payload: Vec<u8>,
}

/// The frames of a segment file, decoded with the public codec from offset 40.
#[derive(Debug)]
struct Walk {
    salt: u64,
    frames: Vec<Frame>,
    end: u64,
    next: u64,
    stop: Stop,
}

fn walk(path: &Path) -> Walk {
    let bytes = read(path);
    let header = FileHeader::decode(&bytes, SEGMENT_MAGIC).unwrap();
    let mut frames = Vec::new();
    let mut at = HEADER_LEN;
    let mut seq = header.base;
    let stop = loop {
        if at >= bytes.len() {
            break Stop::EndOfFile;
        }
        match decode_frame(&bytes[at..], header.salt, seq, FRAME_PAYLOAD_LIMIT) {
            Decoded::Record {
                compressed,
                payload,
                frame_len,
            } => {
                frames.push(Frame {
                    offset: at as u64,
                    seq,
                    len: frame_len,
                    compressed,
                    payload: payload.to_vec(),
                });
                at += frame_len;
                seq += 1;
            }
            Decoded::Seal => break Stop::Seal,
            Decoded::Empty => break Stop::Empty,
            Decoded::Invalid(kind) => break Stop::Invalid(kind),
        }
    };
    Walk {
        salt: header.salt,
        frames,
        end: at as u64,
        next: seq,
        stop,
    }
}

/// The entries [IDX-01] asks for, from the frames of a segment.
fn sparse_entries<'a>(frames: impl IntoIterator<Item = &'a Frame>) -> Vec<IndexEntry> {
    let mut entries: Vec<IndexEntry> = Vec::new();
    for frame in frames {
        if entries
            .last()
            .is_none_or(|last| frame.offset >= u64::from(last.offset) + INDEX_INTERVAL)
        {
            entries.push(IndexEntry {
                seq: frame.seq,
                offset: u32::try_from(frame.offset).unwrap(),
            });
        }
    }
    entries
}

fn read_index(dir: &Path, base: u64, salt: u64) -> Option<IndexFile> {
    decode_index_file(&std::fs::read(index_path(dir, base)).ok()?, base, salt)
}

/// Appends `count` records of about 1 KiB; returns their payloads by sequence.
fn fill(log: &mut Log, count: u64) -> Vec<(Seq, Vec<u8>)> {
    (0..count)
        .map(|i| {
            let bytes = payload(i, 600 + (i as usize * 97) % 900);
            (log.append(&bytes).unwrap(), bytes)
        })
        .collect()
}

fn all_records(reader: &Reader) -> Vec<(Seq, Vec<u8>)> {
    reader.iter(Seq(1)).unwrap().map(Result::unwrap).collect()
}

/// [SEG-03] [SEG-04] [LOG-01] Frames start at offset 40 and follow each other without gaps;
/// the k-th holds sequence base + k; the written frames end in empty space; and sequences
/// continue after a reopen.
#[test]
fn frames_follow_the_header_back_to_back_with_implied_sequences() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = open_log(dir.path(), small()).unwrap();
    assert_eq!(report.next_seq, 1);
    let payloads: Vec<Vec<u8>> = (0..60)
        .map(|i| payload(i, (i as usize * 37) % 300))
        .collect();
    for (i, bytes) in payloads.iter().enumerate() {
        assert_eq!(log.append(bytes).unwrap(), Seq(i as u64 + 1));
    }
    log.close().unwrap();

    let path = segment_path(dir.path(), 1);
    let walk = walk(&path);
    assert_eq!(walk.stop, Stop::Empty);
    let mut offset = HEADER_LEN as u64;
    for (k, frame) in walk.frames.iter().enumerate() {
        assert_eq!(frame.offset, offset, "frame {k}");
        assert_eq!(frame.seq, 1 + k as u64);
        assert!(!frame.compressed);
        assert_eq!(frame.payload, payloads[k]);
        offset += frame.len as u64;
    }
    assert_eq!(walk.frames.len(), payloads.len());
    assert!(read(&path)[walk.end as usize..].iter().all(|b| *b == 0));

    let (mut log, report) = open_log(dir.path(), small()).unwrap();
    assert_eq!(report.next_seq, 61);
    assert_eq!(log.append(b"after reopen").unwrap(), Seq(61));
}

/// [SEG-08] Segment files are created at their full length, zero beyond their frames, and
/// keep that length; the spare, a temporary, is gone after a clean close; segments written
/// under another size option keep theirs.
#[test]
fn segment_files_are_preallocated_and_never_change_length() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 300);
    log.close().unwrap();
    let first = bases(dir.path());
    assert!(first.len() >= 3, "{first:?}");
    for base in &first {
        let path = segment_path(dir.path(), *base);
        let bytes = read(&path);
        assert_eq!(bytes.len(), 64 << 10, "{}", path.display());
        let walk = walk(&path);
        let zero_from = walk.end as usize + if walk.stop == Stop::Seal { 8 } else { 0 };
        assert!(bytes[zero_from..].iter().all(|b| *b == 0));
    }
    // The spare is a temporary: a clean close removes it [DIR-02].
    assert!(!dir.path().join(SPARE_FILE).exists());

    let larger = options(128 << 10, 8 << 10, SyncPolicy::EveryAppend);
    let (mut log, _) = open_log(dir.path(), larger).unwrap();
    let more = fill(&mut log, 300);
    let records = all_records(&log.reader());
    log.close().unwrap();
    assert_eq!(records.len(), 600);
    assert_eq!(records.last().unwrap().1, more.last().unwrap().1);
    let last_old = *first.last().unwrap();
    let now = bases(dir.path());
    assert!(now.iter().any(|base| *base > last_old));
    for base in now {
        let len = read(&segment_path(dir.path(), base)).len() as u64;
        let expected = if base <= last_old {
            64 << 10
        } else {
            128 << 10
        };
        assert_eq!(len, expected, "segment {base}");
    }
}

/// [SEG-02] Every segment gets its own salt, and recovery keeps the active segment's.
#[test]
fn every_segment_has_its_own_salt_which_recovery_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 300);
    log.flush().unwrap();
    log.simulate_crash();
    let all = bases(dir.path());
    let salts: HashSet<u64> = all
        .iter()
        .map(|b| header(&segment_path(dir.path(), *b)).salt)
        .collect();
    assert_eq!(salts.len(), all.len());
    let last = segment_path(dir.path(), *all.last().unwrap());
    let before = header(&last);
    let (log, _) = open_log(dir.path(), small()).unwrap();
    drop(log);
    assert_eq!(header(&last), before);
}

/// [SEG-05] [FRM-07] [ROLL-01] [LOG-01] A payload of the maximum size fills an empty segment
/// exactly, leaving the 8 bytes the seal needs; a larger payload is refused without
/// consuming a sequence; the next record rolls, and the seal carries the next sequence.
#[test]
fn a_seal_always_fits_after_the_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let max = (64 << 10) - 56;
    let (mut log, _) =
        open_log(dir.path(), options(64 << 10, max, SyncPolicy::EveryAppend)).unwrap();
    assert_eq!(log.append(&vec![1; max as usize]).unwrap(), Seq(1));
    assert!(matches!(
        log.append(&vec![2; max as usize + 1]),
        Err(Error::PayloadTooLarge { .. })
    ));
    assert_eq!(log.next_seq(), Seq(2));
    assert_eq!(log.append(b"next").unwrap(), Seq(2));
    assert_eq!(log.active_segment(), SegmentId(2));
    log.close().unwrap();

    let path = segment_path(dir.path(), 1);
    let walk = walk(&path);
    assert_eq!(walk.frames.len(), 1);
    assert_eq!(walk.stop, Stop::Seal);
    assert_eq!(walk.end, (64 << 10) - 8);
    assert_eq!(walk.next, 2);
    assert_eq!(header(&segment_path(dir.path(), 2)).base, 2);
}

/// [SEG-06] [IDX-01] [IDX-03] [ROLL-03] Every segment with a successor ends in a seal whose
/// sequence is the successor's base; its index holds the entries of the sparse rule and a
/// footer naming the seal. A segment whose seal is gone still reads, and verification
/// reports the seal.
#[test]
fn sealed_segments_end_in_a_seal_naming_their_successor() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 300);
    log.close().unwrap();
    let all = bases(dir.path());
    assert!(all.len() >= 3);
    for pair in all.windows(2) {
        let (base, successor) = (pair[0], pair[1]);
        let walk = walk(&segment_path(dir.path(), base));
        assert_eq!(walk.stop, Stop::Seal, "segment {base}");
        assert_eq!(walk.next, successor);
        let index = read_index(dir.path(), base, walk.salt).unwrap();
        assert_eq!(index.entries, sparse_entries(&walk.frames));
        assert_eq!(
            index.footer,
            Some(IndexFooter {
                end_seq: successor,
                seal_offset: u32::try_from(walk.end).unwrap(),
            })
        );
    }

    // A seal gone from a segment whose records run to the successor's base hides nothing
    // [RD-04]: every record reads, and verification reports the seal.
    let first = walk(&segment_path(dir.path(), all[0]));
    write_at(&segment_path(dir.path(), all[0]), first.end, &[0; 8]);
    let reader = Reader::open(dir.path(), &small()).unwrap();
    let read = reader
        .iter(Seq(1))
        .and_then(|records| records.collect::<Result<Vec<_>, _>>())
        .map(|records| records.len());
    assert!(
        matches!(read, Ok(300)),
        "{:?}",
        read.map_err(|e| e.to_string())
    );
    let problems = reader.verify().unwrap().problems;
    assert!(
        matches!(
            &problems[..],
            [Damage { segment, offset, kind: CorruptKind::MissingSeal, .. }]
                if *segment == SegmentId(all[0]) && *offset == first.end
        ),
        "{problems:?}"
    );
}

/// [SEG-01] A segment whose header names another base than its file name is refused.
#[test]
fn header_base_must_match_the_file_name() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 3);
    log.close().unwrap();
    StdIo
        .rename(&segment_path(dir.path(), 1), &segment_path(dir.path(), 5))
        .unwrap();
    let wrong = |result: Result<(), Error>| {
        assert!(
            matches!(
                result,
                Err(Error::Corrupt {
                    segment: SegmentId(5),
                    offset: 16,
                    kind: CorruptKind::WrongSegment {
                        expected: 5,
                        found: 1
                    },
                })
            ),
            "{result:?}"
        );
    };
    wrong(Reader::open(dir.path(), &small()).map(drop));
    wrong(open_log(dir.path(), small()).map(drop));
}

/// [HDR-03] [HDR-04] A log whose last segment has a newer write version opens read-only
/// only; a newer read version is refused by every reader, naming both versions.
#[test]
fn newer_versions_are_refused_or_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    let written = fill(&mut log, 5);
    log.close().unwrap();
    let path = segment_path(dir.path(), 1);
    let original = header(&path);

    let newer_write = FileHeader {
        write_version: NEWER_VERSION,
        ..original
    };
    write_at(&path, 0, &newer_write.encode(SEGMENT_MAGIC));
    assert!(matches!(
        open_log(dir.path(), small()),
        Err(Error::ReadOnlyVersion {
            segment: SegmentId(1),
            found: NEWER_VERSION,
            supported: FORMAT_VERSION
        })
    ));
    let reader = Reader::open(dir.path(), &small()).unwrap();
    assert_eq!(all_records(&reader), written);

    let newer_read = FileHeader {
        read_version: NEWER_VERSION,
        ..original
    };
    write_at(&path, 0, &newer_read.encode(SEGMENT_MAGIC));
    let refused = |result: Result<(), Error>| {
        assert!(
            matches!(
                result,
                Err(Error::Corrupt {
                    kind: CorruptKind::UnsupportedVersion {
                        found: NEWER_VERSION,
                        supported: FORMAT_VERSION
                    },
                    ..
                })
            ),
            "{result:?}"
        );
    };
    refused(open_log(dir.path(), small()).map(drop));
    refused(Reader::open(dir.path(), &small()).map(drop));
}

/// [FRM-06] Payloads at least `compress_min_bytes` long are stored compressed when that
/// saves an eighth, and readers get the original bytes back, also from a compressed frame
/// that another writer produced (the frame of `format/vectors/compressed-frame.hex`).
#[test]
fn large_compressible_payloads_are_stored_compressed() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        compress_min_bytes: Some(1024),
        ..options(1 << 20, 64 << 10, SyncPolicy::EveryAppend)
    };
    let text = payload(0, 8192);
    let (mut log, _) = open_log(dir.path(), options.clone()).unwrap();
    log.append(&text).unwrap();
    log.append(&[b'A'; 100]).unwrap();
    log.close().unwrap();

    let path = segment_path(dir.path(), 1);
    let walk = walk(&path);
    let frames = &walk.frames;
    assert!(frames[0].compressed);
    assert!(frames[0].payload.len() <= 8192 - 1024);
    assert_eq!(
        zstd::bulk::decompress(&frames[0].payload, 8192).unwrap(),
        text
    );
    assert!(!frames[1].compressed, "below the threshold");

    // The second record, rewritten as the 10-byte zstd frame of the vector.
    let zstd_frame = [0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x64, 0x23, 0x03, 0x00, 0x41];
    write_at(
        &path,
        frames[1].offset,
        &encode_frame(walk.salt, 2, FrameKind::Compressed, &zstd_frame),
    );
    let reader = Reader::open(dir.path(), &options).unwrap();
    assert_eq!(
        all_records(&reader),
        [(Seq(1), text), (Seq(2), vec![b'A'; 100])]
    );
}

/// [FRM-06] Payloads below the threshold, or that do not compress by an eighth, are stored
/// as they are; a compressed frame whose payload does not decompress is reported as
/// corrupt, not returned.
#[test]
fn payloads_that_do_not_qualify_are_stored_plain_and_bad_compression_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        compress_min_bytes: Some(1024),
        ..options(1 << 20, 64 << 10, SyncPolicy::EveryAppend)
    };
    let random = noise(8192, 0x9E37_79B9_7F4A_7C15);
    let short = vec![b'a'; 512];
    let (mut log, _) = open_log(dir.path(), options.clone()).unwrap();
    log.append(&random).unwrap();
    log.append(&short).unwrap();
    log.close().unwrap();

    let path = segment_path(dir.path(), 1);
    let walk = walk(&path);
    assert!(!walk.frames[0].compressed && walk.frames[0].payload == random);
    assert!(!walk.frames[1].compressed && walk.frames[1].payload == short);

    // A frame that validates but whose payload is not a zstd frame.
    write_at(
        &path,
        walk.frames[0].offset,
        &encode_frame(walk.salt, 1, FrameKind::Compressed, &random),
    );
    let reader = Reader::open(dir.path(), &options).unwrap();
    assert!(matches!(
        reader.get(Seq(1)),
        Err(Error::Corrupt {
            kind: CorruptKind::Decompress,
            ..
        })
    ));
    assert_eq!(reader.get(Seq(2)).unwrap(), Some(short));
}

/// [IDX-01] [IDX-02] [IDX-04] After a clean close, the active segment's index holds exactly
/// the entries of the sparse rule, each pointing at the frame of its sequence, and no
/// footer.
#[test]
fn index_entries_follow_the_sparse_rule() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(1 << 20, 8 << 10, SyncPolicy::EveryAppend);
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    fill(&mut log, 200);
    log.close().unwrap();
    let walk = walk(&segment_path(dir.path(), 1));
    let index = read_index(dir.path(), 1, walk.salt).unwrap();
    assert!(index.entries.len() > 10);
    assert_eq!(index.entries, sparse_entries(&walk.frames));
    assert_eq!(index.footer, None);
    assert_eq!(index.entries[0], IndexEntry { seq: 1, offset: 40 });
}

/// [IDX-05] [REC-02] [DUR-02] Index entries reach the file only for frames that were made
/// durable by a sync; after a crash, open scans from the last entry to the end.
#[test]
fn index_entries_point_only_at_durable_frames() {
    let dir = tempfile::tempdir().unwrap();
    let options = options(1 << 20, 8 << 10, SyncPolicy::OsOnly);
    let (mut log, _) = open_log(dir.path(), options.clone()).unwrap();
    fill(&mut log, 40);
    log.sync().unwrap();
    assert_eq!(log.durability().durable_seq(), Seq(41));
    fill(&mut log, 40);
    // Written to the file (a process crash keeps them) but not synced [LOG-02].
    log.flush().unwrap();
    log.simulate_crash();

    let walk = walk(&segment_path(dir.path(), 1));
    assert_eq!(walk.frames.len(), 80);
    let synced_end = walk.frames[40].offset;
    let index = read_index(dir.path(), 1, walk.salt).unwrap();
    let durable: Vec<&Frame> = walk.frames.iter().take(40).collect();
    assert_eq!(index.entries, sparse_entries(durable));
    assert!(
        index
            .entries
            .iter()
            .all(|e| u64::from(e.offset) < synced_end)
    );
    assert!(index.entries.len() >= 2);

    let last = index.entries.last().unwrap();
    let (log, report) = open_log(dir.path(), options).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(report.next_seq, 81);
    assert_eq!(report.scanned_bytes, walk.end - u64::from(last.offset));
    assert_eq!(report.torn_tail, None);
    drop(log);
}

/// [IDX-06] [IDX-04] A missing or damaged index is rebuilt from its segment (and rewritten
/// by the writer's process with a footer); a wrong but well-formed entry can make a read
/// fail, never return a wrong record.
#[test]
fn indexes_are_advisory_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    let written = fill(&mut log, 300);
    log.close().unwrap();
    let all = bases(dir.path());
    assert!(all.len() >= 4);
    let walks: Vec<Walk> = all
        .iter()
        .map(|b| walk(&segment_path(dir.path(), *b)))
        .collect();

    StdIo.remove_file(&index_path(dir.path(), all[0])).unwrap();
    write_at(
        &index_path(dir.path(), all[1]),
        HEADER_LEN as u64 + 3,
        &[0xEE],
    );
    let third = read_index(dir.path(), all[2], walks[2].salt).unwrap();
    assert!(third.entries.len() >= 2, "{third:?}");
    let target = third.entries[0];
    let next_frame = walks[2]
        .frames
        .iter()
        .find(|f| f.offset > u64::from(target.offset))
        .unwrap();
    let wrong = IndexEntry {
        seq: target.seq,
        offset: u32::try_from(next_frame.offset).unwrap(),
    };
    write_at(
        &index_path(dir.path(), all[2]),
        HEADER_LEN as u64,
        &wrong.encode(walks[2].salt),
    );

    let (log, _) = open_log(dir.path(), small()).unwrap();
    let reader = log.reader();
    assert_eq!(all_records(&reader), written);
    for (base, walk) in all.iter().zip(&walks).take(2) {
        let index = read_index(dir.path(), *base, walk.salt).unwrap();
        assert_eq!(
            index.entries,
            sparse_entries(&walk.frames),
            "segment {base}"
        );
        assert_eq!(
            index.footer,
            Some(IndexFooter {
                end_seq: walk.next,
                seal_offset: u32::try_from(walk.end).unwrap()
            })
        );
    }
    let read = reader.get(Seq(target.seq));
    assert!(
        matches!(&read, Err(e) if e.is_corruption()),
        "a wrong entry must not yield a record: {read:?}"
    );
}

/// [META-02] [REC-01] A clean close leaves a clean-shutdown file naming the active
/// segment's end; the next open trusts it after checking it, scans nothing and removes it;
/// a file that does not match the segment is ignored.
#[test]
fn clean_close_lets_the_next_open_skip_the_scan() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 40);
    log.close().unwrap();
    let last = *bases(dir.path()).last().unwrap();
    let walk = walk(&segment_path(dir.path(), last));
    let clean_path = dir.path().join(CLEAN_FILE);
    let mark = CleanMark::decode(&read(&clean_path)).unwrap();
    assert_eq!(
        mark,
        CleanMark {
            segment: last,
            salt: walk.salt,
            end_offset: walk.end,
            next_seq: walk.next,
        }
    );

    let (log, report) = open_log(dir.path(), small()).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(report.scanned_bytes, 0);
    assert_eq!(report.next_seq, 41);
    assert!(!clean_path.exists());
    log.close().unwrap();

    // A marker that promises less than the segment holds (as one restored from an earlier
    // close would) is not trusted: the segment is scanned.
    let stale = CleanMark {
        next_seq: mark.next_seq - 1,
        ..mark
    };
    std::fs::write(&clean_path, stale.encode()).unwrap();
    let (log, report) = open_log(dir.path(), small()).unwrap();
    assert!(!report.clean_shutdown);
    assert!(report.scanned_bytes > 0);
    assert_eq!(report.next_seq, 41);
    assert!(!clean_path.exists());
    log.close().unwrap();

    std::fs::write(&clean_path, b"not a clean-shutdown file").unwrap();
    let (_log, report) = open_log(dir.path(), small()).unwrap();
    assert!(!report.clean_shutdown);
    assert_eq!(report.next_seq, 41);
}

/// Writes five records durably, crashes, and returns the directory and the frames.
fn crashed_log() -> (tempfile::TempDir, Walk) {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(
        dir.path(),
        options(256 << 10, 64 << 10, SyncPolicy::EveryAppend),
    )
    .unwrap();
    for i in 0..5 {
        log.append(&payload(i, 200)).unwrap();
    }
    log.flush().unwrap();
    log.simulate_crash();
    let walk = walk(&segment_path(dir.path(), 1));
    assert_eq!(walk.frames.len(), 5);
    (dir, walk)
}

fn reopen(
    dir: &Path,
    mode: RecoveryMode,
) -> Result<(Log, esl_replay::storage::RecoveryReport), Error> {
    open_log(
        dir,
        LogOptions {
            recovery_mode: mode,
            ..options(256 << 10, 64 << 10, SyncPolicy::EveryAppend)
        },
    )
}

/// [REC-03] [REC-04] [REC-05] A frame cut short by a crash is a torn tail:
/// `AbsoluteConsistency` refuses it and changes nothing; the default mode zeroes it in place
/// (the file keeps its length), reports it, and the next append takes its place.
#[test]
fn a_torn_tail_is_zeroed_in_place_and_reported() {
    let (dir, walk) = crashed_log();
    let path = segment_path(dir.path(), 1);
    let torn = encode_frame(walk.salt, 6, FrameKind::Plain, &[b'z'; 3000]);
    write_at(&path, walk.end, &torn[..1500]);
    let before = read(&path);

    let refused = reopen(dir.path(), RecoveryMode::AbsoluteConsistency).map(drop);
    assert!(
        matches!(
            refused,
            Err(Error::Corrupt {
                kind: CorruptKind::TornTail { bytes: 1500 },
                ..
            })
        ),
        "{refused:?}"
    );
    assert_eq!(read(&path), before);

    let (mut log, report) = reopen(dir.path(), RecoveryMode::TolerateTornTail).unwrap();
    let tail = report.torn_tail.clone().unwrap();
    assert_eq!(tail.segment, SegmentId(1));
    assert_eq!(tail.offset, walk.end);
    assert_eq!(tail.bytes_dropped, 1500);
    assert!(matches!(tail.kind, CorruptKind::ChecksumMismatch { .. }));
    assert_eq!(report.next_seq, 6);
    let after = read(&path);
    assert_eq!(after.len(), before.len());
    assert!(after[walk.end as usize..].iter().all(|b| *b == 0));
    assert_eq!(log.append(b"sixth").unwrap(), Seq(6));
    log.close().unwrap();
    let rewalk = self::walk(&path);
    assert_eq!(rewalk.frames[5].offset, walk.end);
    assert_eq!(rewalk.frames[5].payload, b"sixth");

    // A payload that reached the disk without its header is a torn tail as well.
    let (dir, walk) = crashed_log();
    let path = segment_path(dir.path(), 1);
    write_at(&path, walk.end + 8, &[b'q'; 1000]);
    let (_log, report) = reopen(dir.path(), RecoveryMode::TolerateTornTail).unwrap();
    let tail = report.torn_tail.unwrap();
    assert_eq!((tail.offset, tail.bytes_dropped), (walk.end, 1008));
    assert_eq!(tail.kind, CorruptKind::TornTail { bytes: 1008 });
}

/// [REC-03] [REC-04] [REC-05] Damage followed by valid frames is not a torn tail: the default
/// mode and `AbsoluteConsistency` refuse it and change nothing, naming the next valid frame;
/// `PointInTime` cuts the log at the damage, valid frames after it included.
#[test]
fn damage_before_the_tail_is_refused_unless_point_in_time() {
    let (dir, walk) = crashed_log();
    let path = segment_path(dir.path(), 1);
    let third = &walk.frames[2];
    let fourth = &walk.frames[3];
    write_at(&path, third.offset + 20, &[0xFF]);
    let before = read(&path);

    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let refused = reopen(dir.path(), mode).map(drop);
        assert!(
            matches!(
                &refused,
                Err(Error::Corrupt { offset, kind: CorruptKind::DamagedBeforeTail { next_valid }, .. })
                    if *offset == third.offset && *next_valid == fourth.offset
            ),
            "{mode:?}: {refused:?}"
        );
        assert_eq!(read(&path), before);
    }

    let (log, report) = reopen(dir.path(), RecoveryMode::PointInTime).unwrap();
    assert_eq!(report.next_seq, 3);
    let tail = report.torn_tail.clone().unwrap();
    assert_eq!(tail.offset, third.offset);
    assert_eq!(tail.bytes_dropped, walk.end - third.offset);
    assert_eq!(
        tail.kind,
        CorruptKind::DamagedBeforeTail {
            next_valid: fourth.offset
        }
    );
    assert!(read(&path)[third.offset as usize..].iter().all(|b| *b == 0));
    assert_eq!(all_records(&log.reader()).len(), 2);
}

/// [REC-03] [REC-04] [VER-01] Frames of the last segment that stop below what the watermark
/// file names durable are durable records damaged, never a torn tail: whether zeroed or
/// garbled, the default mode and `AbsoluteConsistency` refuse them and change nothing, a
/// follower meets the damage at the end of its reads and in `verify`, and `PointInTime` cuts
/// them and reports the acknowledged records it lost.
#[test]
fn frames_that_stop_below_the_watermark_are_durable_damage() {
    for garbled in [false, true] {
        let (dir, walk) = crashed_log();
        let path = segment_path(dir.path(), 1);
        write_watermark(dir.path(), walk.next);
        let third = &walk.frames[2];
        let damage = if garbled { 0x5A } else { 0 };
        write_at(
            &path,
            third.offset,
            &vec![damage; (walk.end - third.offset) as usize],
        );
        let before = read(&path);

        for mode in [
            RecoveryMode::TolerateTornTail,
            RecoveryMode::AbsoluteConsistency,
        ] {
            match reopen(dir.path(), mode).map(drop) {
                Err(Error::Corrupt {
                    segment: SegmentId(1),
                    offset,
                    kind: CorruptKind::BelowDurable { found, durable, .. },
                }) => assert_eq!((offset, found, durable), (third.offset, 3, 6), "{mode:?}"),
                other => panic!("garbled {garbled}, {mode:?}: {other:?}"),
            }
            assert_eq!(read(&path), before, "{mode:?}: nothing changed");
        }

        let reader = Reader::open(dir.path(), &small()).unwrap();
        let mut cursor = reader.cursor(Seq(1)).unwrap();
        for seq in 1..=2 {
            assert_eq!(cursor.next().unwrap().map(|f| f.seq), Some(Seq(seq)));
        }
        assert!(
            matches!(cursor.next(), Err(Error::Corrupt { offset, .. }) if offset == third.offset),
            "garbled {garbled}"
        );
        assert!(reader.missing_records().unwrap().is_some());
        let problems = reader.verify().unwrap().problems;
        assert!(
            matches!(
                problems.as_slice(),
                [problem] if problem.offset == third.offset
                    && matches!(problem.kind, CorruptKind::BelowDurable { found: 3, durable: 6, .. })
            ),
            "garbled {garbled}: {problems:?}"
        );
        drop(reader);

        let (mut log, report) = reopen(dir.path(), RecoveryMode::PointInTime).unwrap();
        assert_eq!(report.next_seq, 3);
        assert_eq!(report.missing_tail, Some(3..6), "{report:?}");
        assert_eq!(log.append(b"after the repair").unwrap(), Seq(3));
        log.close().unwrap();
    }
}

/// [REC-06] [ROLL-04] [ROLL-05] A last segment that ends in a seal (a roll interrupted after
/// its seal) gets its successor from the first append after the open, not from the open.
#[test]
fn an_interrupted_roll_is_completed_by_the_first_append() {
    let (dir, walk) = crashed_log();
    let path = segment_path(dir.path(), 1);
    write_at(
        &path,
        walk.end,
        &encode_frame(walk.salt, 6, FrameKind::Seal, b""),
    );
    let (mut log, report) = reopen(dir.path(), RecoveryMode::AbsoluteConsistency).unwrap();
    assert!(report.pending_roll);
    assert_eq!(report.segments, 1);
    assert_eq!(report.next_seq, 6);
    assert_eq!(log.active_segment(), SegmentId(1));
    assert!(
        !segment_path(dir.path(), 6).exists(),
        "opening creates no segment"
    );
    assert_eq!(log.append(b"sixth").unwrap(), Seq(6));
    assert_eq!(log.active_segment(), SegmentId(6));
    assert_eq!(header(&segment_path(dir.path(), 6)).base, 6);
    let records = all_records(&log.reader());
    assert_eq!(records.len(), 6);
    assert_eq!(records[5], (Seq(6), b"sixth".to_vec()));
}

/// [TRUNC-03] [META-01] Open finishes a truncation that a crash interrupted after the new
/// start was durable: segments wholly below the start and orphaned index files are
/// deleted, and nothing below the start is returned.
#[test]
fn an_interrupted_truncation_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 300);
    log.close().unwrap();
    let all = bases(dir.path());
    assert!(all.len() >= 4);
    let start = all[2] + 1;
    std::fs::write(dir.path().join(START_FILE), StartMark { start }.encode()).unwrap();
    let orphan = index_path(dir.path(), all[all.len() - 1] + 1_000_000);
    std::fs::copy(index_path(dir.path(), all[0]), &orphan).unwrap();

    let (log, report) = open_log(dir.path(), small()).unwrap();
    assert_eq!(report.removed_segments, 2);
    assert_eq!(report.first_seq, start);
    assert_eq!(bases(dir.path()), all[2..]);
    for base in &all[..2] {
        assert!(!index_path(dir.path(), *base).exists());
    }
    assert!(!orphan.exists());
    let reader = log.reader();
    assert_eq!(reader.get(Seq(start - 1)).unwrap(), None);
    assert_eq!(all_records(&reader)[0].0, Seq(start));
}

/// [TRUNC-01] [TRUNC-02] [META-01] [LOG-01] A truncation writes the start file, deletes only
/// whole segments below it, never moves the start back, refuses to pass the next sequence,
/// and keeps the last segment so numbering continues when nothing is left.
#[test]
fn truncation_deletes_whole_segments_below_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 300);
    let all = bases(dir.path());
    assert!(all.len() >= 4);

    let before = all[1] + 2;
    let report = log.truncate_prefix(Seq(before)).unwrap();
    assert!(report.moved);
    assert_eq!(report.start, Seq(before));
    assert_eq!(report.segments_removed, 1);
    assert_eq!(bases(dir.path()), all[1..]);
    let start = StartMark::decode(&read(&dir.path().join(START_FILE))).unwrap();
    assert_eq!(start.start, before);
    let reader = log.reader();
    assert_eq!(reader.first_seq(), Seq(before));
    assert_eq!(reader.get(Seq(before - 1)).unwrap(), None);
    assert!(reader.get(Seq(before)).unwrap().is_some());

    let report = log.truncate_prefix(Seq(5)).unwrap();
    assert!(!report.moved);
    assert_eq!((report.start, report.segments_removed), (Seq(before), 0));

    let next = log.next_seq();
    assert!(matches!(
        log.truncate_prefix(next.next()),
        Err(Error::OutOfRange { .. })
    ));
    let report = log.truncate_prefix(next).unwrap();
    assert_eq!(report.segments_removed, all.len() - 2);
    assert_eq!(bases(dir.path()), [*all.last().unwrap()]);
    assert_eq!(reader.first_seq(), next);
    assert_eq!(log.append(b"after everything").unwrap(), next);
    log.close().unwrap();
    let (log, report) = open_log(dir.path(), small()).unwrap();
    assert_eq!(report.first_seq, next.get());
    assert_eq!(log.next_seq(), next.next());
}

/// [DIR-02] Temporaries are removed on open; other files are left alone.
#[test]
fn temporaries_are_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 3);
    log.close().unwrap();
    let stray = [
        dir.path().join("x.tmp"),
        dir.path().join(".start.meta.0123456789abcdef.tmp"),
    ];
    for path in &stray {
        std::fs::write(path, b"left by a crash").unwrap();
    }
    let foreign = dir.path().join("notes.txt");
    std::fs::write(&foreign, b"not the log's").unwrap();
    let (log, report) = open_log(dir.path(), small()).unwrap();
    assert!(report.removed_temporaries >= stray.len());
    for path in &stray {
        assert!(!path.exists(), "{}", path.display());
    }
    assert!(foreign.exists());
    assert_eq!(all_records(&log.reader()).len(), 3);
}

/// [DIR-03] [RD-01] A second writer is refused at once, in the same process too, while a
/// reader opens without any lock and reads beside the writer.
#[test]
fn one_writer_per_directory_and_lock_free_readers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    let written = fill(&mut log, 10);
    assert!(matches!(
        open_log(dir.path(), small()),
        Err(Error::Locked { .. })
    ));
    let reader = Reader::open(dir.path(), &small()).unwrap();
    assert_eq!(all_records(&reader), written);
    log.close().unwrap();
    let (log, _) = open_log(dir.path(), small()).unwrap();
    drop(log);
}

/// [TRUNC-04] A follower in the middle of a segment keeps reading it intact after another
/// handle truncates it away: a truncation frees the blocks of removed segments only when no
/// reader holds them open. (Freed blocks read as zeros: the follower would meet damage.)
#[test]
fn a_reader_in_a_removed_segment_reads_on_intact() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    let written = fill(&mut log, 400);
    let segments = log.reader().segments();
    assert!(segments.len() >= 4, "{segments:?}");
    let follower = Reader::open(dir.path(), &small()).unwrap();
    let mut cursor = follower.cursor(Seq(1)).unwrap();
    assert_eq!(cursor.next().unwrap().unwrap().payload, &written[0].1[..]);

    let report = log.reader().truncate_prefix(segments[2].base()).unwrap();
    assert_eq!(report.segments_removed, 2);
    assert!(!segment_path(dir.path(), 1).exists());
    let mut read = 1;
    while let Some(record) = cursor.next().unwrap() {
        if record.seq >= segments[1].base() {
            break;
        }
        assert_eq!(record.payload, &written[read].1[..], "seq {}", record.seq);
        read += 1;
    }
    assert_eq!(
        read as u64,
        segments[1].base().0 - 1,
        "the cursor stopped early"
    );
}

/// [DIR-04] Truncations and the writer's open wait for the retention lock.
#[test]
fn truncation_and_open_wait_for_the_retention_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 10);
    let holder = File::options()
        .read(true)
        .write(true)
        .open(dir.path().join(RETENTION_LOCK))
        .unwrap();
    holder.lock().unwrap();
    let reader = log.reader();
    let (sender, receiver) = mpsc::channel();
    let truncation = std::thread::spawn(move || {
        sender.send(reader.truncate_prefix(Seq(2)).is_ok()).unwrap();
    });
    // Nothing can show a thread blocked on a lock; what can fail is finishing while it is held.
    assert!(
        receiver.recv_timeout(Duration::from_millis(300)).is_err(),
        "truncation did not wait"
    );
    holder.unlock().unwrap();
    assert!(receiver.recv_timeout(Duration::from_secs(30)).unwrap());
    truncation.join().unwrap();
    log.close().unwrap();

    holder.lock().unwrap();
    let path = dir.path().to_path_buf();
    let (sender, receiver) = mpsc::channel();
    let opener = std::thread::spawn(move || {
        sender.send(open_log(&path, small()).is_ok()).unwrap();
    });
    // Nothing can show a thread blocked on a lock; what can fail is finishing while it is held.
    assert!(
        receiver.recv_timeout(Duration::from_millis(300)).is_err(),
        "open did not wait"
    );
    holder.unlock().unwrap();
    assert!(receiver.recv_timeout(Duration::from_secs(30)).unwrap());
    opener.join().unwrap();
}

/// One file-system operation, as the recording `Io` saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    Write { ino: u64, offset: u64, len: usize },
    SyncData(u64),
    SyncAll(u64),
    SyncDir(PathBuf),
    Rename(PathBuf, PathBuf),
    Remove(PathBuf),
}

/// An `Io` that records every operation and then performs it; while `full` is set, it
/// refuses preallocations with `ENOSPC`.
#[derive(Debug, Default)]
struct Recorder {
    ops: Mutex<Vec<Op>>,
    full: AtomicBool,
}

impl Recorder {
    fn push(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }
}

fn file_ino(file: &File) -> u64 {
    file.metadata().unwrap().ino()
}

impl Io for Recorder {
    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
        self.push(Op::Write {
            ino: file_ino(file),
            offset,
            len: buf.len(),
        });
        StdIo.write_at(file, buf, offset)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.push(Op::SyncData(file_ino(file)));
        StdIo.sync_data(file)
    }

    fn allocate(&self, file: &File, len: u64) -> io::Result<bool> {
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        StdIo.allocate(file, len)
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.push(Op::SyncAll(file_ino(file)));
        StdIo.sync_all(file)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.push(Op::SyncDir(dir.to_path_buf()));
        StdIo.sync_dir(dir)
    }

    fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        self.push(Op::Rename(source.to_path_buf(), target.to_path_buf()));
        StdIo.rename(source, target)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.push(Op::Remove(path.to_path_buf()));
        StdIo.remove_file(path)
    }
}

/// The index of the first operation at or after `from` that matches.
fn find(ops: &[Op], from: usize, what: &str, matches: impl Fn(&Op) -> bool) -> usize {
    ops.iter()
        .skip(from)
        .position(matches)
        .map(|i| i + from)
        .unwrap_or_else(|| panic!("no {what} after operation {from} in {ops:#?}"))
}

/// [ROLL-01] [ROLL-02] [ROLL-03] [ROLL-04] [ROLL-05] [ROLL-06] [ROLL-07] [LOG-02] [DUR-01]
/// [ATOM-01] [TRUNC-01] The durable steps happen in the order the crash analyses of
/// format/recovery.md assume. Under `OsOnly` nothing syncs the active segment until the
/// roll; the appending thread writes the seal, writes the successor's header in the
/// preallocated, synced spare and renames it into place, syncing nothing; the sync thread
/// then syncs the sealed segment, the successor and the directory, and writes and syncs the
/// index footer last; readers see the successor. A truncation then writes a temporary start
/// file, syncs it, renames it over `start.meta` and syncs the directory before it removes
/// anything, and syncs the directory after the removals.
#[test]
fn durable_steps_happen_in_the_specified_order() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let options = LogOptions {
        io: recorder.clone(),
        ..options(64 << 10, 8 << 10, SyncPolicy::OsOnly)
    };
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    let reader = log.reader();
    let opened = recorder.ops().len();
    let mut written = Vec::new();
    while log.active_segment() == SegmentId(1) {
        let bytes = payload(written.len() as u64, 1000);
        written.push((log.append(&bytes).unwrap(), bytes));
    }
    let successor = log.active_segment().0;
    // [ROLL-07] the roll's syncs run on the sync thread, which raises the watermark to the
    // successor's base once the directory is synced.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while log.durability().durable_seq() < Seq(successor) {
        assert!(
            std::time::Instant::now() < deadline,
            "the roll never finished"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    log.durability().wait(Seq(successor - 1)).unwrap();
    let d = dir.path().to_path_buf();
    let seg1 = ino(&segment_path(&d, 1));
    let seg2 = ino(&segment_path(&d, successor));
    let idx1 = ino(&index_path(&d, 1));
    // The footer is written after the watermark moves; wait for its sync.
    while !recorder.ops().contains(&Op::SyncData(idx1)) {
        assert!(
            std::time::Instant::now() < deadline,
            "the footer was never synced"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let ops = recorder.ops();

    // [DUR-01] under OsOnly the roll's sync is the only sync of the segment after open.
    let syncs: Vec<usize> = (opened..ops.len())
        .filter(|i| ops[*i] == Op::SyncData(seg1))
        .collect();
    assert_eq!(syncs.len(), 1, "{ops:#?}");
    let seal = find(
        &ops,
        opened,
        "seal write",
        |op| matches!(op, Op::Write { ino, len, .. } if *ino == seg1 && *len == FRAME_HEADER_LEN),
    );
    let spare_synced = find(&ops, 0, "spare sync", |op| *op == Op::SyncAll(seg2));
    let header = find(&ops, seal, "successor header", |op| {
        *op == Op::Write {
            ino: seg2,
            offset: 0,
            len: HEADER_LEN,
        }
    });
    let rename = find(&ops, header, "rename", |op| {
        *op == Op::Rename(d.join(SPARE_FILE), segment_path(&d, successor))
    });
    // [ROLL-01] [ROLL-04] [ROLL-05] the appending thread syncs nothing in the roll.
    assert!(
        !ops[seal..rename].iter().any(|op| matches!(op,
            Op::SyncData(ino) if *ino == seg1 || *ino == seg2)
            || matches!(op, Op::SyncDir(_))),
        "{ops:#?}"
    );
    let sealed_sync = syncs[0];
    assert!(rename < sealed_sync, "{ops:#?}");
    let successor_sync = find(&ops, sealed_sync, "successor sync", |op| {
        *op == Op::SyncData(seg2)
    });
    let directory = find(&ops, successor_sync, "directory sync", |op| {
        *op == Op::SyncDir(d.clone())
    });
    let footer = find(
        &ops,
        directory,
        "index write",
        |op| matches!(op, Op::Write { ino, .. } if *ino == idx1),
    );
    let footer_sync = find(&ops, footer, "index sync", |op| *op == Op::SyncData(idx1));
    assert!(spare_synced < header && footer < footer_sync);

    // [ROLL-01] the seal carries the successor's base; [ROLL-03] the footer names it.
    let sealed = walk(&segment_path(&d, 1));
    assert_eq!((sealed.stop, sealed.next), (Stop::Seal, successor));
    assert_eq!(
        read_index(&d, 1, sealed.salt).unwrap().footer,
        Some(IndexFooter {
            end_seq: successor,
            seal_offset: u32::try_from(sealed.end).unwrap()
        })
    );
    // [ROLL-06] a reader created before the roll sees the successor and every record.
    assert_eq!(reader.segments(), [SegmentId(1), SegmentId(successor)]);
    assert_eq!(all_records(&reader), written);

    // [TRUNC-01] [ATOM-01] the start is durable before anything is removed.
    let mark = recorder.ops().len();
    let report = log.truncate_prefix(Seq(successor)).unwrap();
    assert_eq!(report.segments_removed, 1);
    let start_ino = ino(&d.join(START_FILE));
    let ops: Vec<Op> = recorder.ops()[mark..]
        .iter()
        .filter(|op| match op {
            Op::Write { ino, .. } | Op::SyncData(ino) | Op::SyncAll(ino) => *ino == start_ino,
            _ => true,
        })
        .cloned()
        .collect();
    let Op::Rename(temporary, _) = &ops[2] else {
        panic!("{ops:#?}")
    };
    let name = temporary.file_name().unwrap().to_str().unwrap();
    let random = name
        .strip_prefix(".start.meta.")
        .and_then(|rest| rest.strip_suffix(".tmp"))
        .unwrap();
    assert_eq!(temporary.parent(), Some(d.as_path()));
    assert!(random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(
        ops,
        [
            Op::Write {
                ino: start_ino,
                offset: 0,
                len: 32
            },
            Op::SyncAll(start_ino),
            Op::Rename(temporary.clone(), d.join(START_FILE)),
            Op::SyncDir(d.clone()),
            // [TRUNC-05] the writer keeps the removed segment's file for a next segment.
            Op::Rename(segment_path(&d, 1), recycle_path(&d, 1)),
            Op::Remove(index_path(&d, 1)),
            Op::SyncDir(d.clone()),
        ]
    );
    assert_eq!(report.recycled, 1);
}

/// [ROLL-04] [ROLL-05] [ROLL-03] A roll that stopped for want of space left its sealed
/// segment durable with the index footer that proves the roll. The roll that repeats it, once
/// there is room, must make the successor durable before its name, under every policy:
/// otherwise a power loss could keep the name and lose the header, and the footer would make
/// that damage rather than an unfinished roll.
#[test]
fn a_repeated_roll_makes_its_successor_durable_before_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let recorder = Arc::new(Recorder::default());
    let options = LogOptions {
        io: recorder.clone(),
        ..options(64 << 10, 8 << 10, SyncPolicy::OsOnly)
    };
    let (mut log, _) = open_log(&d, options.clone()).unwrap();
    recorder.full.store(true, Ordering::SeqCst);
    let mut written = Vec::new();
    let next = loop {
        let next = log.next_seq();
        let bytes = payload(written.len() as u64, 1000);
        match log.append(&bytes) {
            Ok(seq) => written.push((seq, bytes)),
            Err(Error::Io { source, .. }) if source.raw_os_error() == Some(libc::ENOSPC) => {
                break next;
            }
            Err(error) => panic!("{error}"),
        }
        assert_eq!(
            log.active_segment(),
            SegmentId(1),
            "the roll needed no space"
        );
    };
    let sealed = walk(&segment_path(&d, 1));
    assert_eq!((sealed.stop, sealed.next), (Stop::Seal, next.0));
    assert_eq!(
        read_index(&d, 1, sealed.salt).unwrap().footer,
        Some(IndexFooter {
            end_seq: next.0,
            seal_offset: u32::try_from(sealed.end).unwrap()
        }),
        "the stopped roll's footer already names the successor"
    );

    recorder.full.store(false, Ordering::SeqCst);
    let mark = recorder.ops().len();
    let bytes = payload(written.len() as u64, 1000);
    written.push((log.append(&bytes).unwrap(), bytes));
    let ops = recorder.ops();
    let successor = ino(&segment_path(&d, next.0));
    let header = find(&ops, mark, "successor header", |op| {
        *op == Op::Write {
            ino: successor,
            offset: 0,
            len: HEADER_LEN,
        }
    });
    let synced = find(&ops, header, "successor sync", |op| {
        *op == Op::SyncData(successor)
    });
    let rename = find(&ops, synced, "rename", |op| {
        *op == Op::Rename(d.join(SPARE_FILE), segment_path(&d, next.0))
    });
    find(&ops, rename, "directory sync", |op| {
        *op == Op::SyncDir(d.clone())
    });
    log.close().unwrap();
    let (log, _) = open_log(&d, options).unwrap();
    assert_eq!(all_records(&log.reader()), written);
}

/// [DUR-01] Under `EveryAppend` every append syncs the segment before it returns, and the
/// record is durable when it does.
#[test]
fn every_append_syncs_before_returning() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let options = LogOptions {
        io: recorder.clone(),
        ..small()
    };
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    let segment = ino(&segment_path(dir.path(), 1));
    let mark = recorder.ops().len();
    for i in 0..5 {
        let seq = log.append(&payload(i, 100)).unwrap();
        assert!(log.durability().durable_seq() > seq);
    }
    let syncs = recorder.ops()[mark..]
        .iter()
        .filter(|op| **op == Op::SyncData(segment))
        .count();
    assert_eq!(syncs, 5);
    drop(log);
}

/// [REC-08] [ROLL-07] [REC-06] An unclean open checks the rolls after the last proven one.
/// Without the sealed segment's index footer (the proof the roll finished), a seal or a
/// successor header that never reached the disk means the roll had not finished: the
/// successor and every later segment, whose records were never acknowledged, are removed and
/// reported, and every record of the sealed segment stays. A roll whose writes all landed is
/// kept, and the check goes on with the next. With the footer, a damaged successor header is
/// damage, refused.
#[test]
fn an_unfinished_roll_loses_only_the_segments_after_it() {
    for damage in [
        "seal",
        "successor header",
        "successor header after the footer",
        "seal, two rolls unfinished",
        "second seal, two rolls unfinished",
    ] {
        let two = damage.ends_with("two rolls unfinished");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let opts = options(64 << 10, 8 << 10, SyncPolicy::OsOnly);
        let (mut log, _) = open_log(&d, opts.clone()).unwrap();
        let mut written = Vec::new();
        while log.active_segment() == SegmentId(1) {
            written.extend(fill(&mut log, 1));
        }
        let mut successor = log.active_segment().0;
        if two {
            while log.active_segment() == SegmentId(successor) {
                written.extend(fill(&mut log, 1));
            }
        }
        let last = log.active_segment().0;
        let in_successor = fill(&mut log, 3);
        log.sync().unwrap();
        log.flush().unwrap();
        log.simulate_crash();
        // The records were synced here, so the watermark file names the successor's records
        // durable, which would prove the roll finished [META-04]: after a real unfinished
        // roll it names none of them. Remove it, as left by a writer that wrote none.
        esl_replay::storage::remove_durable(&d.join(DURABLE_FILE)).unwrap();
        if damage != "successor header after the footer" {
            esl_replay::storage::remove_durable(&index_path(&d, 1)).unwrap();
            esl_replay::storage::remove_durable(&index_path(&d, successor)).unwrap();
        }
        if damage == "second seal, two rolls unfinished" {
            // The first roll landed: only the second is unfinished.
            let sealed = walk(&segment_path(&d, successor));
            write_at(
                &segment_path(&d, successor),
                sealed.end,
                &[0; FRAME_HEADER_LEN],
            );
            successor = last;
        } else if damage.starts_with("seal") {
            let sealed = walk(&segment_path(&d, 1));
            write_at(&segment_path(&d, 1), sealed.end, &[0; FRAME_HEADER_LEN]);
        } else {
            write_at(&segment_path(&d, successor), 0, &[0; HEADER_LEN]);
        }

        let opened = open_log(&d, opts.clone());
        if damage == "successor header after the footer" {
            match opened {
                Err(Error::Corrupt { segment, .. }) => {
                    assert_eq!(segment, SegmentId(successor), "{damage}");
                }
                other => panic!(
                    "{damage}: expected the damage refused, got {:?}",
                    other.map(|o| o.1)
                ),
            }
            assert!(segment_path(&d, successor).exists(), "{damage}");
            continue;
        }
        let (mut log, report) = opened.unwrap_or_else(|e| panic!("{damage}: {e}"));
        let removed = report
            .unfinished_roll
            .clone()
            .expect("the roll is found unfinished");
        assert_eq!(removed.segment, SegmentId(successor), "{damage}");
        let expected_removed = if damage == "seal, two rolls unfinished" {
            2
        } else {
            1
        };
        assert_eq!(removed.removed, expected_removed, "{damage}");
        assert!(!segment_path(&d, successor).exists(), "{damage}");
        assert!(!segment_path(&d, last).exists(), "{damage}");
        written.retain(|(seq, _)| seq.0 < successor);
        assert_eq!(report.next_seq, successor, "{damage}: {report:?}");
        assert_eq!(
            report.pending_roll,
            damage == "successor header",
            "{damage}"
        );
        assert!(
            all_records(&log.reader()) == written,
            "{damage}: records of the sealed segment"
        );
        let (_, lost) = &in_successor[0];
        assert_eq!(log.append(lost).unwrap(), Seq(successor), "{damage}");
        log.close().unwrap();
    }
}

/// [REC-08] [META-04] [RD-04] A roll whose successor holds records the watermark file names
/// durable had finished, whatever its sealed segment now holds: a damaged seal there is
/// damage, which verification reports, not an unfinished roll whose successors recovery
/// removes; and as every record before it is intact, reads go on past it. Here the index
/// footers (the other proof) are gone too.
#[test]
fn a_damaged_seal_below_the_watermark_is_damage_not_an_unfinished_roll() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let opts = options(64 << 10, 8 << 10, SyncPolicy::OsOnly);
    let (mut log, mut written, successor) = rolled_once(&d, &opts);
    let in_successor = fill(&mut log, 3);
    written.extend(in_successor.clone());
    log.sync().unwrap();
    let next = log.reader().next_seq().unwrap().0;
    log.flush().unwrap();
    log.simulate_crash();
    // What the writer's watermark thread writes after that sync (it may not have run yet).
    write_watermark(&d, next);
    esl_replay::storage::remove_durable(&index_path(&d, 1)).unwrap();
    esl_replay::storage::remove_durable(&index_path(&d, successor)).unwrap();
    let sealed = walk(&segment_path(&d, 1));
    assert_eq!(sealed.stop, Stop::Seal);
    write_at(&segment_path(&d, 1), sealed.end + 4, &[0xff]);

    let (log, report) = open_log(&d, opts).unwrap();
    assert_eq!(report.unfinished_roll, None);
    assert_eq!(report.next_seq, next);
    // Every record is intact, the seal's own included neighbours: reads go on into the
    // successor [RD-04], and verification reports the seal.
    let reader = log.reader();
    assert_eq!(all_records(&reader), written);
    assert!(written.ends_with(&in_successor));
    let verified = reader.verify().unwrap();
    assert_eq!(verified.records, next - 1);
    assert_eq!(
        verified
            .problems
            .iter()
            .map(|p| (p.segment, p.offset, p.first_seq))
            .collect::<Vec<_>>(),
        [(SegmentId(1), sealed.end, Seq(successor))]
    );
    log.close().unwrap();
}

/// [REC-08] [REC-01] [META-04] A follower takes a sealed segment whose frames stop before
/// its seal for the end of the log only while a roll may be unfinished. After a clean close,
/// or once the watermark file names a record of the successor durable, the roll had
/// finished: the cut is damage, which its reads meet, and the successor's records stay
/// readable.
#[test]
fn a_follower_reports_a_cut_sealed_segment_after_a_finished_roll_as_damage() {
    for proof in ["clean close", "watermark"] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let opts = options(64 << 10, 8 << 10, SyncPolicy::OsOnly);
        let (mut log, mut written, successor) = rolled_once(&d, &opts);
        written.extend(fill(&mut log, 3));
        written.retain(|(seq, _)| seq.0 >= successor);
        if proof == "clean close" {
            log.close().unwrap();
            esl_replay::storage::remove_durable(&d.join(DURABLE_FILE)).unwrap();
        } else {
            log.sync().unwrap();
            let next = log.reader().next_seq().unwrap().0;
            log.simulate_crash();
            write_watermark(&d, next);
        }
        // Cut segment 1 in the middle of its frames; its index (and footer) stay.
        let cut = walk(&segment_path(&d, 1)).frames[5].offset + 3;
        cut_file(&segment_path(&d, 1), cut);

        let reader = Reader::open(&d, &opts).unwrap();
        let kept: Vec<_> = reader
            .iter(Seq(successor))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(kept, written, "{proof}");
        match first_error(&reader) {
            Some(Error::Corrupt { segment, .. }) => assert_eq!(segment, SegmentId(1), "{proof}"),
            other => panic!("{proof}: expected the cut reported, got {other:?}"),
        }
    }
}

#[expect(
    clippy::disallowed_methods,
    reason = "damage made while no reader has the file mapped"
)]
fn cut_file(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// The first error a read of every record meets, when the cursor opens or later.
fn first_error(reader: &Reader) -> Option<Error> {
    match reader.iter(Seq(1)) {
        Ok(mut records) => records.find_map(Result::err),
        Err(error) => Some(error),
    }
}

/// A log at `dir` whose first segment just rolled: the writer, the records written, and the
/// successor's base.
fn rolled_once(dir: &Path, options: &LogOptions) -> (Log, Vec<(Seq, Vec<u8>)>, u64) {
    let (mut log, _) = open_log(dir, options.clone()).unwrap();
    let mut written = Vec::new();
    while log.active_segment() == SegmentId(1) {
        written.extend(fill(&mut log, 1));
    }
    let successor = log.active_segment().0;
    (log, written, successor)
}

/// Writes the watermark file [META-04] as the writer's thread would: every sequence below
/// `durable` is durable.
fn write_watermark(dir: &Path, durable: u64) {
    std::fs::write(
        dir.join(DURABLE_FILE),
        DurableWatermark { durable }.encode(),
    )
    .unwrap();
}

/// [META-04] A writer whose end is below the watermark file's value (a recovery cut damaged
/// records) syncs its lower value before it goes on: the higher one must not come back after
/// a power loss, since recovery and followers take it as proof of durable records. A value
/// it only raises is written without a sync.
#[test]
fn a_writer_syncs_the_watermark_file_when_it_lowers_it() {
    for (recorded, synced) in [(1_000, true), (2, false)] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let (mut log, _) = open_log(&d, small()).unwrap();
        fill(&mut log, 5);
        log.close().unwrap();
        write_watermark(&d, recorded);
        let recorder = Arc::new(Recorder::default());
        // Records acknowledged and gone: only `PointInTime` opens [REC-12].
        let options = LogOptions {
            io: recorder.clone(),
            recovery_mode: RecoveryMode::PointInTime,
            ..small()
        };
        let (log, _) = open_log(&d, options).unwrap();
        let file = ino(&d.join(DURABLE_FILE));
        let ops = recorder.ops();
        let wrote = ops
            .iter()
            .position(|op| matches!(op, Op::Write { ino, .. } if *ino == file))
            .expect("the watermark file is written at open");
        assert_eq!(
            ops[wrote..].contains(&Op::SyncData(file)),
            synced,
            "recorded {recorded}: {ops:?}"
        );
        drop(log);
    }
}

/// Fails syncs of one file (by inode) and, when `refuse_removal`, removals of it.
#[derive(Debug)]
struct FailsOneFile {
    ino: u64,
    path: PathBuf,
    refuse_removal: bool,
}

impl Io for FailsOneFile {
    fn sync_data(&self, file: &File) -> io::Result<()> {
        if file_ino(file) == self.ino {
            return Err(io::Error::other("injected sync failure"));
        }
        StdIo.sync_data(file)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if self.refuse_removal && path == self.path {
            return Err(io::Error::other("injected removal failure"));
        }
        StdIo.remove_file(path)
    }
}

/// [META-04] A watermark file whose value is above the writer's end, which the writer can
/// neither lower durably nor update, is removed (a proof that could come back after a power
/// loss is worse than none); if it cannot be removed either, the writer refuses to open,
/// naming the file, rather than leave a false proof for recovery [REC-08].
#[test]
fn a_watermark_file_the_writer_cannot_lower_is_removed_or_the_open_fails() {
    for refuse_removal in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_path_buf();
        let (mut log, _) = open_log(&d, small()).unwrap();
        fill(&mut log, 5);
        log.close().unwrap();
        write_watermark(&d, 1_000);
        let path = d.join(DURABLE_FILE);
        let options = LogOptions {
            io: Arc::new(FailsOneFile {
                ino: ino(&path),
                path: path.clone(),
                refuse_removal,
            }),
            recovery_mode: RecoveryMode::PointInTime,
            ..small()
        };
        match open_log(&d, options) {
            Ok((log, _)) => {
                assert!(!refuse_removal);
                assert!(!path.exists(), "the stale watermark file was left");
                drop(log);
            }
            Err(Error::Io { path: named, .. }) => {
                assert!(refuse_removal);
                assert_eq!(named, path);
            }
            Err(other) => panic!("refuse_removal {refuse_removal}: {other:?}"),
        }
    }
}

/// Whether `/proc/locks` shows a process waiting for an `flock` on the file `metadata`
/// describes (a line `N: -> FLOCK ... <major>:<minor>:<inode> ...`).
fn someone_waits_on(metadata: &std::fs::Metadata) -> bool {
    let inode = format!(":{}", metadata.ino());
    std::fs::read_to_string("/proc/locks").is_ok_and(|locks| {
        locks.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&"->")
                && fields.get(2) == Some(&"FLOCK")
                && fields.get(6).is_some_and(|file| file.ends_with(&inode))
        })
    })
}

/// Opens and locks (exclusively, at once) the file at `path`, creating it: what a writer of
/// an older build does with `writer.lock`, and a truncation with `retention.lock`.
fn lock_file_at(path: &Path) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    file.try_lock().unwrap();
    file
}

/// [DIR-03] Removing `writer.lock` under a running writer lets no second writer in: the
/// writer also holds a lock on the log directory itself, which no removal of a name undoes.
#[test]
fn a_removed_writer_lock_file_lets_no_second_writer_in() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 3);
    esl_replay::storage::remove_durable(&dir.path().join("writer.lock")).unwrap();
    match open_log(dir.path(), small()) {
        Err(Error::Locked { dir: named }) => assert_eq!(named, dir.path()),
        Err(other) => panic!("expected Locked, got {other:?}"),
        Ok(_) => panic!("a second writer opened the log"),
    }
    log.close().unwrap();
    let (log, _) = open_log(dir.path(), small()).unwrap();
    drop(log);
}

/// [DIR-06] A writer whose `writer.lock` was removed locks the file of that name again at
/// its next sync, so that a writer of an older build (which locks only that file) stays
/// refused; the lock is released when the writer closes.
#[test]
fn the_writer_locks_its_removed_lock_file_again() {
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("writer.lock");
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 3);
    esl_replay::storage::remove_durable(&lock_path).unwrap();
    log.append(b"after the removal").unwrap();
    log.sync().unwrap();
    let older_writer = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&lock_path)
        .expect("the writer created its lock file again");
    assert!(
        matches!(
            older_writer.try_lock(),
            Err(std::fs::TryLockError::WouldBlock)
        ),
        "the lock file was not locked again"
    );
    log.close().unwrap();
    older_writer
        .try_lock()
        .expect("the writer released the lock it took again");
}

/// [DIR-06] A writer whose `writer.lock` was removed and then locked by another process (a
/// writer of an older build) fails at its next sync naming the lock file, poisoned: it may
/// no longer be the log's only writer.
#[test]
fn a_writer_whose_lock_file_another_process_took_fails() {
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join("writer.lock");
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 3);
    esl_replay::storage::remove_durable(&lock_path).unwrap();
    let older_writer = lock_file_at(&lock_path);
    log.append(b"after the removal").unwrap();
    let replaced = |error: &Error| match error {
        Error::LockReplaced { path } => *path == lock_path,
        Error::Poisoned { cause, .. } => cause.contains(&lock_path.display().to_string()),
        _ => false,
    };
    let error = log.sync().expect_err("the sync succeeded");
    assert!(replaced(&error), "{error:?}");
    let error = log.append(b"refused").expect_err("the append succeeded");
    assert!(replaced(&error), "{error:?}");
    assert!(log.close().is_err());
    drop(older_writer);
}

/// [DIR-04] A truncation waiting for `retention.lock` when the file is removed and created
/// anew (and locked by another truncation) does not take the removed file's lock for the
/// lock: it checks that the name still names the file it locked and waits on the new one.
#[test]
fn a_truncation_waiting_on_a_removed_retention_lock_waits_on_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let lock_path = dir.path().join(RETENTION_LOCK);
    let (mut log, _) = open_log(dir.path(), small()).unwrap();
    fill(&mut log, 10);
    let first = lock_file_at(&lock_path);
    let reader = log.reader();
    let (sender, receiver) = mpsc::channel();
    let truncation = std::thread::spawn(move || {
        sender.send(reader.truncate_prefix(Seq(2)).is_ok()).unwrap();
    });
    let metadata = first.metadata().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !someone_waits_on(&metadata) {
        assert!(
            std::time::Instant::now() < deadline,
            "the truncation never waited"
        );
        std::thread::yield_now();
    }
    esl_replay::storage::remove_durable(&lock_path).unwrap();
    let second = lock_file_at(&lock_path);
    first.unlock().unwrap();
    // Nothing can show a thread blocked on a lock; what can fail is finishing while it is held.
    assert!(
        receiver.recv_timeout(Duration::from_millis(300)).is_err(),
        "the truncation ran while another held the retention lock"
    );
    second.unlock().unwrap();
    assert!(receiver.recv_timeout(Duration::from_secs(30)).unwrap());
    truncation.join().unwrap();
    log.close().unwrap();
}
