//! A packed segment ([SEG-09]) whose bytes after a valid version 2 header are arbitrary, as
//! the only segment of a log: `[salt u64]` then the bytes after the header.
//!
//! - `Trailer::decode_end` never panics, and a trailer it accepts re-encodes to exactly the
//!   file's last bytes;
//! - a follower (`Reader::open`) reads and verifies without panicking, every error is a
//!   structured corruption error, and every record it yields is a frame of the file at its
//!   sequence whose payload is the record (decompressed with the trailer's dictionary);
//! - the writer's open, in every recovery mode, either fails with a corruption error or
//!   opens; either way the packed file is never changed: not cut, not appended to, even by
//!   an append and a clean close after the open.

#![no_main]


use esl_replay::storage::codec::{self, Decoded, FileHeader, SEGMENT_MAGIC, Trailer};
use esl_replay::storage::{Error, Log, LogOptions, Reader, RecoveryMode, Seq, SyncPolicy};
use esl_replay_fuzz::{Bytes, MAX_PAYLOAD};
use libfuzzer_sys::fuzz_target;
use zstd::zstd_safe::{DCtx, DDict};

fn structured(error: &Error) {
    assert!(
        error.is_corruption(),
        "damaged input must give a corruption error, got: {error:?}"
    );
}

/// Whether `payload` is the record of the frame at some offset of `bytes` for `seq`.
fn is_frame_of(bytes: &[u8], salt: u64, seq: u64, payload: &[u8], dictionary: &[u8]) -> bool {
    (codec::HEADER_LEN..bytes.len()).any(|at| {
        match codec::decode_frame(&bytes[at..], salt, seq, codec::FRAME_PAYLOAD_LIMIT) {
            Decoded::Record {
                compressed: false,
                payload: stored,
                ..
            } => stored == payload,
            Decoded::Record {
                compressed: true,
                payload: stored,
                ..
            } => {
                let mut out = Vec::with_capacity(payload.len());
                let mut context = DCtx::create();
                let done = if dictionary.is_empty() {
                    context.decompress(&mut out, stored)
                } else {
                    context.decompress_using_ddict(&mut out, stored, &DDict::create(dictionary))
                };
                done.is_ok() && out == payload
            }
            _ => false,
        }
    })
}

fn options(mode: RecoveryMode) -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        max_payload_bytes: MAX_PAYLOAD,
        sync_policy: SyncPolicy::OsOnly,
        recovery_mode: mode,
        ..LogOptions::default()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let salt = input.u64();
    let mut file = FileHeader::packed(1, salt).encode(SEGMENT_MAGIC).to_vec();
    file.extend_from_slice(input.rest());
    let dictionary = match Trailer::decode_end(&file, salt) {
        Ok(trailer) => {
            let encoded = trailer.encode(salt).expect("a decoded trailer is within limits");
            assert_eq!(&file[file.len() - trailer.len()..], &encoded[..]);
            trailer.dictionary.to_vec()
        }
        Err(_) => Vec::new(),
    };

    let root = tempfile::tempdir().expect("scratch directory");
    let dir = root.path();
    let path = codec::segment_path(dir, 1);
    std::fs::write(&path, &file).expect("write the segment");

    match Reader::open(dir, &options(RecoveryMode::default())) {
        Ok(reader) => {
            match reader.cursor(Seq(1)) {
                Ok(mut cursor) => loop {
                    match cursor.next() {
                        Ok(Some(record)) => assert!(
                            is_frame_of(&file, salt, record.seq.get(), record.payload, &dictionary),
                            "record {} is not a frame of the file",
                            record.seq.get()
                        ),
                        Ok(None) => break,
                        Err(error) => {
                            structured(&error);
                            break;
                        }
                    }
                },
                Err(error) => structured(&error),
            }
            if let Err(error) = reader.verify() {
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
        match Log::open(dir, options(mode)) {
            Ok((mut log, _)) => {
                if log.append(b"appended after the packed segment").is_ok() {
                    let _ = log.close();
                }
            }
            Err(error) => structured(&error),
        }
        assert_eq!(
            std::fs::read(&path).expect("the packed segment is still there"),
            file,
            "{mode:?}: the packed segment changed"
        );
    }
});
