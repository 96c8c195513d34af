//! Recovery and reading of a segment whose bytes after a valid header are arbitrary (with
//! optional, validly checksummed index and clean-shutdown files whose fields are arbitrary).
//!
//! For a read-only follower and for `Log::open` in each recovery mode:
//! - nothing panics, and every error is a structured corruption error;
//! - every record a cursor yields is a frame that passes its CRC at its sequence somewhere in
//!   the segment files, and sequences are consecutive;
//! - after a successful open, an append gets the next sequence and reads back; after a clean
//!   close the log reopens cleanly and reads what it read before, plus the appended record.

#![no_main]

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Arc;

use esl_replay::storage::codec::{self, Decoded, FileHeader, SEGMENT_MAGIC};
use esl_replay::storage::{
    Error, Io, Log, LogOptions, ReadStrategy, Reader, RecoveryMode, Seq, SyncPolicy,
};
use esl_replay_fuzz::{MAX_PAYLOAD, PREAD, SEGMENT_BYTES, SegmentCase};
use libfuzzer_sys::fuzz_target;

/// The real file system without syncs: the scratch directory is thrown away, and syncs would
/// only slow the fuzzer down.
#[derive(Debug)]
struct NoSync;

impl Io for NoSync {
    fn sync_data(&self, _file: &File) -> io::Result<()> {
        Ok(())
    }
    fn sync_all(&self, _file: &File) -> io::Result<()> {
        Ok(())
    }
    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

fn options(case: &SegmentCase, recovery_mode: RecoveryMode) -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES,
        max_payload_bytes: MAX_PAYLOAD,
        sync_policy: SyncPolicy::OsOnly,
        recovery_mode,
        read_strategy: if case.flags & PREAD != 0 {
            ReadStrategy::Pread
        } else {
            ReadStrategy::Mmap
        },
        io: Arc::new(NoSync),
        ..LogOptions::default()
    }
}

/// A scratch directory, in memory when `/dev/shm` exists.
fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let builder = tempfile::Builder::new();
    if shm.is_dir() {
        builder.tempdir_in(shm)
    } else {
        builder.tempdir()
    }
    .expect("scratch directory")
}

/// Checks that records are valid frames of the segment files: each record is looked for
/// right after the previous one's frame, then at the start of every segment, and only then
/// at every offset, so a normal read costs one decode per record.
struct Oracle {
    /// (salt, bytes) of every segment file with a valid header.
    files: Vec<(u64, Vec<u8>)>,
    /// The file and offset after the last record found.
    next: Option<(usize, usize)>,
}

impl Oracle {
    fn new(dir: &Path) -> Oracle {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).expect("list").flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "seg") {
                let bytes = std::fs::read(&path).expect("read segment");
                if let Ok(header) = FileHeader::decode(&bytes, SEGMENT_MAGIC) {
                    files.push((header.salt, bytes));
                }
            }
        }
        Oracle { files, next: None }
    }

    /// The length of the frame at `at` in file `file` if it passes its CRC as `seq` and
    /// carries `payload` (decompressed if the frame is compressed).
    fn frame_at(&self, file: usize, at: usize, seq: u64, payload: &[u8]) -> Option<usize> {
        let (salt, bytes) = self.files.get(file)?;
        match codec::decode_frame(bytes.get(at..)?, *salt, seq, MAX_PAYLOAD) {
            Decoded::Record {
                compressed,
                payload: stored,
                frame_len,
            } => {
                let same = if compressed {
                    zstd::bulk::decompress(stored, MAX_PAYLOAD as usize)
                        .is_ok_and(|inflated| inflated == payload)
                } else {
                    stored == payload
                };
                same.then_some(frame_len)
            }
            _ => None,
        }
    }

    fn check(&mut self, seq: u64, payload: &[u8]) -> bool {
        let likely = self
            .next
            .into_iter()
            .chain((0..self.files.len()).map(|file| (file, codec::HEADER_LEN)));
        let everywhere = (0..self.files.len()).flat_map(|file| {
            (codec::HEADER_LEN..self.files[file].1.len()).map(move |at| (file, at))
        });
        for (file, at) in likely.chain(everywhere) {
            if let Some(len) = self.frame_at(file, at, seq, payload) {
                self.next = Some((file, at + len));
                return true;
            }
        }
        false
    }
}

fn structured(error: &Error) {
    assert!(
        error.is_corruption(),
        "damaged input must give a corruption error, got: {error:?}"
    );
}

/// Reads every record from the first sequence, checking each against the segment files.
fn read_all(reader: &Reader, dir: &Path) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    let mut oracle = Oracle::new(dir);
    let mut cursor = reader.cursor(Seq(1))?;
    let mut records: Vec<(u64, Vec<u8>)> = Vec::new();
    while let Some(record) = cursor.next()? {
        let seq = record.seq.get();
        if let Some((last, _)) = records.last() {
            assert_eq!(seq, last + 1, "sequences are consecutive");
        }
        assert!(
            oracle.check(seq, record.payload),
            "record {seq} is not a valid frame in the segment files"
        );
        records.push((seq, record.payload.to_vec()));
        assert!(
            records.len() <= 1 << 16,
            "more records than bytes: a cursor loop"
        );
    }
    Ok(records)
}

fuzz_target!(|data: &[u8]| {
    let case = SegmentCase::parse(data);
    let root = scratch();

    // A read-only follower of the pristine directory (it never modifies files).
    let dir = root.path().join("follower");
    std::fs::create_dir(&dir).expect("mkdir");
    case.write_to(&dir);
    match Reader::open(&dir, &options(&case, RecoveryMode::default())) {
        Ok(reader) => {
            if let Err(error) = read_all(&reader, &dir) {
                structured(&error);
            }
        }
        Err(error) => structured(&error),
    }

    for mode in [
        RecoveryMode::TolerateTornTail,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::PointInTime,
    ] {
        let dir = root.path().join(format!("{mode:?}"));
        std::fs::create_dir(&dir).expect("mkdir");
        case.write_to(&dir);
        let (mut log, report) = match Log::open(&dir, options(&case, mode)) {
            Ok(opened) => opened,
            Err(error) => {
                structured(&error);
                continue;
            }
        };
        let before = read_all(&log.reader(), &dir);
        if let Err(error) = &before {
            structured(error);
        }

        let payload = b"appended after recovery";
        let seq = log.append(payload).expect("append after a successful open");
        assert_eq!(
            seq.get(),
            report.next_seq,
            "the append gets the next sequence"
        );
        let read = log.reader().get(seq).expect("read the appended record");
        assert_eq!(read.as_deref(), Some(&payload[..]));
        log.close().expect("clean close");

        let (log, again) =
            Log::open(&dir, options(&case, mode)).expect("reopen after a clean close");
        assert!(
            again.clean_shutdown,
            "a clean close is seen as clean: {again:?}"
        );
        assert_eq!(again.next_seq, seq.get() + 1);
        let read = log
            .reader()
            .get(seq)
            .expect("read the appended record after reopening");
        assert_eq!(read.as_deref(), Some(&payload[..]));
        if let Ok(mut before) = before {
            before.push((seq.get(), payload.to_vec()));
            let after =
                read_all(&log.reader(), &dir).expect("what read before reads after reopening");
            // Records before the append are the same ones, and the appended one follows.
            assert_eq!(after, before, "reopening changes nothing that was readable");
        }
        drop(log);
    }
});
