//! Opening is recovery: finding where the active segment's valid frames end and cutting off a
//! torn tail (format/recovery.md).
//!
//! After a clean close the clean-shutdown marker names the end, so nothing is scanned
//! [REC-01]. Otherwise the scan starts at the last index entry (written only for durable
//! frames) and runs to the first position that holds no valid frame [REC-02]. What lies
//! beyond decides the outcome [REC-03]: if no valid frame follows anywhere in the rest of the
//! segment, the damage is a torn tail, which is zeroed (never truncated: readers may have the
//! file mapped) and reported; if a valid frame follows, the damage is before the tail and is
//! an error unless the recovery mode is `PointInTime`.

use std::fs::File;
use std::path::Path;

use super::error::{CorruptKind, Error, IoOp, Result};
use super::frame::{self, Decoded};
use super::header::{FileHeader, HEADER_LEN};
use super::id::SegmentId;
use super::io::{Io, read_at, write_all_at};
use super::meta::CleanMark;
use super::options::RecoveryMode;
use super::segment::{self, FileWindow, Parts, Stop};

/// What opening found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// The previous writer closed cleanly, so nothing was scanned.
    pub clean_shutdown: bool,
    /// Segment files in the log after opening.
    pub segments: usize,
    /// The first sequence readers can see.
    pub first_seq: u64,
    /// The sequence the next append gets.
    pub next_seq: u64,
    /// Bytes of frames scanned to find the end of the log.
    pub scanned_bytes: u64,
    /// The damaged end that was cut off, if any.
    pub torn_tail: Option<TornTail>,
    /// Temporary files of interrupted operations that were removed.
    pub removed_temporaries: usize,
    /// Segments wholly below the logical start that were removed (an interrupted truncation).
    pub removed_segments: usize,
    /// The last segment was sealed without a successor (an interrupted roll), so a new one was
    /// created.
    pub completed_roll: bool,
}

/// A damaged end of the active segment that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub segment: SegmentId,
    /// Where the first invalid frame started.
    pub offset: u64,
    /// How many bytes (up to the last non-zero byte) were zeroed.
    pub bytes_dropped: u64,
    /// What was wrong at `offset`.
    pub kind: CorruptKind,
}

/// The active segment after recovery.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) parts: Parts,
}

/// Limit on bytes checksummed while looking for valid frames after damage; past it the damage
/// is treated as not being a torn tail (the conservative answer).
const SEARCH_BUDGET: u64 = 256 << 20;

/// Recovers the last segment of a log for writing.
pub(crate) fn recover_active(
    io: &dyn Io,
    dir: &Path,
    base: u64,
    clean: Option<CleanMark>,
    mode: RecoveryMode,
    max_payload: u32,
    report: &mut RecoveryReport,
) -> Result<Recovered> {
    let (file, path, header, file_len) = segment::open_file(dir, base, true)?;
    if !header.writable() {
        return Err(Error::ReadOnlyVersion {
            segment: SegmentId(base),
            found: header.write_version,
            supported: super::header::FORMAT_VERSION,
        });
    }
    let mut window = FileWindow::default();
    let mut entries = segment::read_index(dir, base, header.salt)
        .map(|i| i.entries)
        .unwrap_or_default();

    if let Some(mark) =
        clean.filter(|m| m.segment == base && m.salt == header.salt && m.end_offset <= file_len)
    {
        let mut clean_entries = entries.clone();
        let (_, found) = segment::scan_from_index(
            &mut window,
            &file,
            &path,
            &header,
            &mut clean_entries,
            mark.end_offset,
            file_len,
            max_payload,
        )?;
        let beyond = window.frame(&file, &path, mark.end_offset, file_len, max_payload)?;
        let tail = frame::decode(beyond, header.salt, mark.next_seq, max_payload);
        if found.stop == Stop::Limit
            && found.end_seq == mark.next_seq
            && matches!(tail, Decoded::Empty | Decoded::Seal)
        {
            report.clean_shutdown = true;
            let sealed = tail == Decoded::Seal;
            let parts = Parts {
                file,
                path,
                header,
                file_len,
                end: mark.end_offset,
                end_seq: mark.next_seq,
                sealed,
                entries: clean_entries,
            };
            return Ok(Recovered { parts });
        }
        tracing::warn!(
            segment = base,
            "clean-shutdown marker does not match the segment; scanning"
        );
    }

    let (offset, found) = segment::scan_from_index(
        &mut window,
        &file,
        &path,
        &header,
        &mut entries,
        file_len,
        file_len,
        max_payload,
    )?;
    report.scanned_bytes += found.end - offset;
    let damage_from = match found.stop {
        Stop::Limit => file_len,
        Stop::Seal => found.end + frame::FRAME_HEADER_LEN as u64,
        Stop::Empty | Stop::Invalid(_) => found.end,
    };
    let kind = match &found.stop {
        Stop::Invalid(kind) => Some(kind.clone()),
        _ => None,
    };
    cut_damage(
        io,
        &file,
        &path,
        &header,
        damage_from,
        found.end_seq,
        file_len,
        kind,
        mode,
        max_payload,
        report,
    )?;
    let sealed = found.stop == Stop::Seal;
    let parts = Parts {
        file,
        path,
        header,
        file_len,
        end: found.end,
        end_seq: found.end_seq,
        sealed,
        entries,
    };
    Ok(Recovered { parts })
}

/// Classifies what lies in `[from, file_len)` and zeroes it if the mode allows.
#[expect(clippy::too_many_arguments, reason = "the whole recovery position")]
fn cut_damage(
    io: &dyn Io,
    file: &File,
    path: &Path,
    header: &FileHeader,
    from: u64,
    expected_seq: u64,
    file_len: u64,
    invalid: Option<CorruptKind>,
    mode: RecoveryMode,
    max_payload: u32,
    report: &mut RecoveryReport,
) -> Result<()> {
    let segment = SegmentId(header.base);
    let Some(last_nonzero) = last_nonzero_byte(file, path, from, file_len)? else {
        return Ok(());
    };
    let bytes_dropped = last_nonzero + 1 - from;
    let follows = valid_frame_follows(
        file,
        path,
        header.salt,
        from,
        last_nonzero,
        expected_seq,
        max_payload,
    )?;
    let kind = match follows {
        Some(next_valid) => CorruptKind::DamagedBeforeTail { next_valid },
        None => invalid.unwrap_or(CorruptKind::TornTail {
            bytes: bytes_dropped,
        }),
    };
    let refuse = match mode {
        RecoveryMode::AbsoluteConsistency => true,
        RecoveryMode::TolerateTornTail => follows.is_some(),
        RecoveryMode::PointInTime => false,
    };
    if refuse {
        let kind = if follows.is_none() {
            CorruptKind::TornTail {
                bytes: bytes_dropped,
            }
        } else {
            kind
        };
        return Err(Error::Corrupt {
            segment,
            offset: from,
            kind,
        });
    }
    tracing::warn!(%segment, offset = from, bytes = bytes_dropped, "cutting off a damaged tail");
    zero_range(io, file, path, from, last_nonzero + 1)?;
    io.sync_data(file)
        .map_err(|e| Error::io(IoOp::Sync, path, e))?;
    report.torn_tail = Some(TornTail {
        segment,
        offset: from,
        bytes_dropped,
        kind,
    });
    Ok(())
}

/// The offset of the last non-zero byte in `[from, to)`, if any.
fn last_nonzero_byte(file: &File, path: &Path, from: u64, to: u64) -> Result<Option<u64>> {
    const CHUNK: u64 = 1 << 20;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut last = None;
    let mut offset = from;
    while offset < to {
        let len = (to - offset).min(CHUNK) as usize;
        let Some(chunk) = buf.get_mut(..len) else {
            break;
        };
        let n = read_at(file, chunk, offset, path)?;
        if let Some(i) = chunk.get(..n).and_then(|c| c.iter().rposition(|b| *b != 0)) {
            last = Some(offset + i as u64);
        }
        if n < len {
            break;
        }
        offset += len as u64;
    }
    Ok(last)
}

/// Bytes past the last non-zero byte that a candidate frame may still cover (a payload can
/// end in zero bytes).
const SEARCH_SLACK: u64 = 1 << 20;

/// The offset of a valid frame of a later sequence in `(from, last]`, if there is one.
///
/// A candidate counts only if its header is plausible, its checksum validates for a
/// sequence no further from `expected_seq` than the frames that could fit in between, and
/// what follows it is the next frame, a seal or zeroed space. The chain check makes random
/// bytes that happen to pass one checksum (about one in 2^32 per position, times the window)
/// count as nothing. Checksum work is bounded: past [`SEARCH_BUDGET`] bytes the answer is
/// the conservative one (damage before the tail).
fn valid_frame_follows(
    file: &File,
    path: &Path,
    salt: u64,
    from: u64,
    last: u64,
    expected_seq: u64,
    max_payload: u32,
) -> Result<Option<u64>> {
    let file_len = file
        .metadata()
        .map_err(|e| Error::io(IoOp::Read, path, e))?
        .len();
    let end = (last + 1 + SEARCH_SLACK).min(file_len.max(last + 1));
    let mut bytes = vec![0u8; usize::try_from(end - from).unwrap_or(usize::MAX)];
    let n = read_at(file, &mut bytes, from, path)?;
    bytes.truncate(n);
    let scan_end = usize::try_from(last + 1 - from)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    let mut budget = SEARCH_BUDGET;
    for start in 1..scan_end {
        let Some(candidate) = bytes.get(start..) else {
            break;
        };
        let Some(len_flags) = frame::len_flags(candidate) else {
            break;
        };
        if !frame::plausible(len_flags, max_payload) {
            continue;
        }
        let frame_len = frame::FRAME_HEADER_LEN + frame::payload_len(len_flags);
        if frame_len > candidate.len() {
            continue; // it claims more bytes than there are: it cannot validate
        }
        budget = budget.saturating_sub(frame_len as u64);
        if budget == 0 {
            return Ok(Some(from + start as u64));
        }
        // At most one frame per 8 bytes fits between the damage and the candidate.
        let window = start as u64 / frame::FRAME_HEADER_LEN as u64 + 1;
        let Some(seq) = frame::valid_frame_after(
            candidate,
            salt,
            expected_seq.saturating_sub(1),
            window,
            max_payload,
        ) else {
            continue;
        };
        let next = candidate.get(frame_len..).unwrap_or_default();
        let chained = match frame::decode(next, salt, seq + 1, max_payload) {
            Decoded::Record { .. } | Decoded::Seal | Decoded::Empty => true,
            Decoded::Invalid(_) => next.is_empty(),
        };
        if chained {
            return Ok(Some(from + start as u64));
        }
    }
    Ok(None)
}

/// Overwrites `[from, to)` with zeros.
pub(crate) fn zero_range(io: &dyn Io, file: &File, path: &Path, from: u64, to: u64) -> Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; CHUNK as usize];
    let mut offset = from;
    while offset < to {
        let len = (to - offset).min(CHUNK) as usize;
        write_all_at(io, file, zeros.get(..len).unwrap_or_default(), offset, path)?;
        offset += len as u64;
    }
    Ok(())
}

const _: () = assert!(HEADER_LEN == 40);
