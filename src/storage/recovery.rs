//! Opening is recovery: finding where the active segment's valid frames end and cutting off a
//! torn tail (format/recovery.md).
//!
//! After a clean close the clean-shutdown marker names the end, so nothing is scanned; it is
//! a promise, so frames below that end that do not decode are corruption, refused in every
//! mode but `PointInTime`, never a torn tail [REC-01]. Otherwise the scan starts at the last
//! index entry (written only for durable frames) and runs to the first position that holds
//! no valid frame [REC-02]. What lies
//! beyond decides the outcome [REC-03]: if no valid frame follows anywhere in the rest of the
//! segment, the damage is a torn tail, which is zeroed (never truncated: readers may have the
//! file mapped) and reported; if a valid frame follows, the damage is before the tail and is
//! an error unless the recovery mode is `PointInTime`.

use std::fs::File;
use std::ops::Range;
use std::path::Path;

use super::error::{CorruptKind, Error, IoOp, Result};
use super::frame::{self, Decoded, FrameKind};
use super::header::HEADER_LEN;
use super::id::SegmentId;
use super::index::IndexEntry;
use super::io::{Io, write_all_at};
use super::meta::CleanMark;
use super::options::RecoveryMode;
use super::segment::{self, FileWindow, Parts, ScanFile, Stop};

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
    /// The last segment ends in a seal without a successor (a roll that was interrupted or
    /// failed, for example for lack of space); the first append creates the successor
    /// [REC-06], so opening never needs room for a new segment.
    pub pending_roll: bool,
    /// A roll that had not finished when the previous writer stopped: its successor, removed
    /// with every later segment and the records in them, none of which had been acknowledged
    /// as durable [REC-08].
    pub unfinished_roll: Option<UnfinishedRoll>,
    /// The last segment is recycled [SEG-10] and was not closed cleanly: what follows its
    /// frames cannot be told from a torn frame, so they were ended with a seal where they stop
    /// and the first append continues in a new segment (as [`RecoveryReport::pending_roll`]),
    /// or, if it held no record, everything after its header was zeroed.
    pub recycled_end: bool,
    /// The logical start found above the recovered end of the log, which was lowered to that
    /// end [REC-11]: a truncation had made it durable before the records below it, and a
    /// power loss lost them. Left as it was, it would hide the records appended from now on.
    pub start_beyond_end: Option<u64>,
    /// Sequences from the start to the first segment's base, which no segment file holds
    /// (files deleted or lost from outside the log): the open moved the start to the first
    /// segment [REC-12]. Only in `PointInTime`; the other modes refuse to open.
    pub missing_head: Option<Range<u64>>,
    /// Sequences acknowledged as durable (by the watermark file or a clean close's marker)
    /// beyond the recovered end, which no segment file holds [REC-12] or the last segment's
    /// damaged frames held [REC-03]: appends give them again. Only in `PointInTime`; the
    /// other modes refuse to open.
    pub missing_tail: Option<Range<u64>>,
}

/// The error of an open or a read that finds the records `missing` in no segment file,
/// named at the segment and offset next to them [REC-12].
pub(crate) fn missing_error(segment: SegmentId, offset: u64, missing: &Range<u64>) -> Error {
    Error::Corrupt {
        segment,
        offset,
        kind: CorruptKind::MissingSegments {
            from: missing.start,
            to: missing.end,
        },
    }
}

/// The successor of a roll that had not finished, which recovery removed with every segment
/// after it [REC-08].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnfinishedRoll {
    /// The removed successor.
    pub segment: SegmentId,
    /// How many segments were removed: the successor and every later one.
    pub removed: usize,
    /// Why the roll could not have finished: what the sealed segment's check found (its
    /// frames stop before the seal), or the successor's damaged header.
    pub kind: CorruptKind,
}

/// A damaged end of the active segment that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    /// The segment.
    pub segment: SegmentId,
    /// Where the first invalid frame started.
    pub offset: u64,
    /// How many bytes were cut off: zeroed up to the last non-zero byte, or, in a recycled
    /// segment ended where its frames stop [REC-09], every byte after `offset`.
    pub bytes_dropped: u64,
    /// What was wrong at `offset`.
    pub kind: CorruptKind,
}

/// The active segment after recovery.
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) parts: Parts,
    /// The trailer of a packed last segment (sealed by a close that packed it [SEG-09]).
    pub(crate) packed: Option<segment::Packed>,
    /// Where and how the trailer of a packed last segment is damaged, which leaves its
    /// records unreadable [REC-13].
    pub(crate) unreadable: Option<(u64, CorruptKind)>,
}

/// Checks the unfinished rolls of a log whose writer did not close cleanly [REC-08].
///
/// A roll's syncs run after its successor is renamed into place ([ROLL-07]), so a power loss
/// can leave successors beside sealed segments whose last frames or seal never reached the
/// disk, or successors whose header never did. Rolls finish in order, and each writes its
/// sealed segment's index footer last, so the last footer proves every roll before it
/// finished. The rolls after it are checked oldest first: if the sealed segment's frames run
/// to a seal for the successor's base and the successor's header is intact, the roll's writes
/// all landed, and its syncs are made now. Otherwise no record at or after that seal was
/// acknowledged as durable, and every later segment is removed; the sealed segment is then
/// the last one, recovered as such (its damaged tail cut by the recovery mode's rules, or its
/// roll completed by the first append, [REC-06]).
///
/// The watermark file the last writer left (`durable`, [META-04]) proves a roll finished too:
/// a record at or after a successor's base is durable only once its roll's syncs returned
/// [ROLL-07]. A sealed segment such a roll left without its seal or frames is damage, which
/// verification reports (and reads, unless only the seal is lost, [RD-04]), never a roll to
/// undo.
pub(crate) fn check_rolls(
    io: &dyn Io,
    dir: &Path,
    segments: &mut Vec<u64>,
    max_payload: u32,
    durable: Option<u64>,
    report: &mut RecoveryReport,
) -> Result<()> {
    let proven = durable.map_or(0, |durable| {
        segments
            .iter()
            .skip(1)
            .take_while(|successor| **successor < durable)
            .count()
    });
    let first = segment::first_unproven_roll(dir, segments, max_payload)?.max(proven);
    for i in first..segments.len().saturating_sub(1) {
        let (Some(&sealed), Some(&successor)) = (segments.get(i), segments.get(i + 1)) else {
            break;
        };
        let Some(kind) = check_roll(io, dir, sealed, successor, max_payload, report)? else {
            continue;
        };
        let removed: Vec<u64> = segments.drain(i + 1..).collect();
        let segment = SegmentId(successor);
        tracing::warn!(%segment, sealed = %SegmentId(sealed), %kind, removed = removed.len(), "removing the segments after a roll that had not finished");
        let paths: Vec<_> = removed
            .iter()
            .flat_map(|base| {
                [
                    super::dir::segment_path(dir, *base),
                    super::dir::index_path(dir, *base),
                ]
            })
            .collect();
        super::durable::remove_files(io, dir, &paths)?;
        report.unfinished_roll = Some(UnfinishedRoll {
            segment,
            removed: removed.len(),
            kind,
        });
        break;
    }
    Ok(())
}

/// Removes the log's only segment if it holds no header of its own [REC-10]: the successor
/// of a roll whose header never reached the disk, left alone by a truncation to its base that
/// removed the segment before it. No record in it was acknowledged, since a sync of the
/// segment covers its header, written before any of its records; the open then makes the
/// segment again, empty, at the log's start.
pub(crate) fn drop_headerless_segment(
    io: &dyn Io,
    dir: &Path,
    segments: &mut Vec<u64>,
    report: &mut RecoveryReport,
) -> Result<()> {
    let [only] = segments[..] else {
        return Ok(());
    };
    let Some(kind) = segment::missing_header(dir, only)? else {
        return Ok(());
    };
    let segment = SegmentId(only);
    tracing::warn!(%segment, %kind, "removing the only segment: its header never reached the disk, so none of its records was acknowledged");
    let paths = [
        super::dir::segment_path(dir, only),
        super::dir::index_path(dir, only),
    ];
    super::durable::remove_files(io, dir, &paths)?;
    report.unfinished_roll = Some(UnfinishedRoll {
        segment,
        removed: 1,
        kind,
    });
    segments.clear();
    Ok(())
}

/// Checks one roll without its proof: `None` if its writes all landed (and are now synced),
/// otherwise what shows it had not finished.
fn check_roll(
    io: &dyn Io,
    dir: &Path,
    sealed: u64,
    successor: u64,
    max_payload: u32,
    report: &mut RecoveryReport,
) -> Result<Option<CorruptKind>> {
    let (file, path, header, file_len) = segment::open_file(dir, sealed, false)?;
    let source = ScanFile::opened(&file, &path, &header, file_len, max_payload);
    let mut entries = segment::read_index(dir, sealed, header.salt)
        .map(|i| i.entries)
        .unwrap_or_default();
    let (offset, found) =
        segment::scan_from_index(&mut FileWindow::default(), source, &mut entries, file_len)?;
    report.scanned_bytes += found.end - offset;
    Ok(match found.stop {
        Stop::Seal if found.end_seq == successor => {
            match segment::open_file(dir, successor, false) {
                Ok((next, next_path, ..)) => {
                    // After a process crash the roll's writes are all in the page cache but
                    // may not be durable: finish its syncs before anything after it is
                    // declared durable [REC-07] [ROLL-07].
                    io.sync_data(&file)
                        .map_err(|e| Error::io(IoOp::Sync, &path, e))?;
                    io.sync_data(&next)
                        .map_err(|e| Error::io(IoOp::Sync, &next_path, e))?;
                    super::durable::sync_dir(io, dir)?;
                    None
                }
                Err(Error::Corrupt { kind, .. }) => Some(kind),
                Err(error) => return Err(error),
            }
        }
        Stop::Invalid(kind) => Some(kind),
        Stop::Seal | Stop::Empty | Stop::Limit => Some(CorruptKind::MissingSeal),
    })
}

/// Recovers the last segment of a log for writing.
pub(crate) fn recover_active(
    io: &dyn Io,
    dir: &Path,
    base: u64,
    (clean, acknowledged): (Option<CleanMark>, Option<u64>),
    mode: RecoveryMode,
    max_payload: u32,
    report: &mut RecoveryReport,
) -> Result<Recovered> {
    let segment::FramesFile {
        file,
        path,
        header,
        frames_end: file_len,
        packed,
        trailer_damage,
    } = segment::open_frames_or_damage(dir, base, true)?;
    if !header.writable() {
        return Err(Error::ReadOnlyVersion {
            segment: SegmentId(base),
            found: header.write_version,
            supported: super::header::FORMAT_VERSION,
        });
    }
    let source = ScanFile::opened(&file, &path, &header, file_len, max_payload);
    let mut window = FileWindow::default();
    let mut entries = segment::read_index(dir, base, header.salt)
        .map(|i| i.entries)
        .unwrap_or_default();

    if packed.is_some() {
        // A packed segment was written whole, synced and read back before it replaced the
        // original [PACK-03]: nothing in it is a torn tail, and nothing may be appended to it.
        // It must end in its seal; anything else is damage, refused in every mode [SEG-09],
        // except a damaged seal alone or a damaged trailer after an intact seal [REC-13].
        let (_, found) = segment::scan_from_index(&mut window, source, &mut entries, file_len)?;
        let id = SegmentId(base);
        let seal_damaged = trailer_damage.is_none()
            && matches!(found.stop, Stop::Invalid(_))
            && found.end + frame::FRAME_HEADER_LEN as u64 == file_len;
        if found.stop != Stop::Seal && !seal_damaged {
            // Without the seal nothing tells where the segment's records end: the damage
            // that hides it is refused, the trailer's first if it is damaged too.
            let (offset, kind) = match (trailer_damage, found.stop) {
                (Some(damage), _) => damage,
                (None, Stop::Invalid(kind)) => (found.end, kind),
                (None, Stop::Seal | Stop::Empty | Stop::Limit) => {
                    (found.end, CorruptKind::MissingSeal)
                }
            };
            return Err(Error::Corrupt {
                segment: id,
                offset,
                kind,
            });
        }
        if seal_damaged {
            tracing::warn!(segment = %id, offset = found.end, "the seal of the packed last segment is damaged; each of its records is intact, and the next append starts a new segment after them");
        }
        if let Some((offset, kind)) = &trailer_damage {
            tracing::warn!(segment = %id, offset, %kind, next_seq = found.end_seq, "the trailer of the packed last segment is damaged: its records cannot be read; the next append starts a new segment after its seal");
        }
        report.clean_shutdown = clean.is_some_and(|m| {
            (m.segment, m.salt, m.end_offset, m.next_seq)
                == (base, header.salt, found.end, found.end_seq)
        });
        // Its frames' region ends with its seal: nothing after it (its trailer, damaged or
        // not) is ever written, not even the zeros a writer writes ahead of its frames.
        let parts = Parts {
            file,
            path,
            header,
            file_len: found.end + frame::FRAME_HEADER_LEN as u64,
            end: found.end,
            end_seq: found.end_seq,
            sealed: true,
            entries,
        };
        return Ok(Recovered {
            parts,
            packed,
            unreadable: trailer_damage,
        });
    }
    match clean {
        Some(mark) if mark.segment == base && mark.salt == header.salt => {
            let promise = check_clean_end(&mut window, source, &mut entries, &mark)?;
            match promise {
                CleanEnd::Kept {
                    sealed: Some(sealed),
                } => {
                    report.clean_shutdown = true;
                    let parts = Parts {
                        file,
                        path,
                        header,
                        file_len,
                        end: mark.end_offset,
                        end_seq: mark.next_seq,
                        sealed,
                        entries,
                    };
                    return Ok(Recovered {
                        parts,
                        packed,
                        unreadable: None,
                    });
                }
                // Every promised frame is intact, but the space after them is not empty: no
                // durable record is at stake there, so it is scanned as an unclean tail.
                CleanEnd::Kept { sealed: None } => {
                    tracing::warn!(
                        segment = base,
                        offset = mark.end_offset,
                        "bytes after the end recorded by the clean shutdown; scanning from there"
                    );
                }
                CleanEnd::Broken {
                    offset,
                    end_seq,
                    kind,
                } => {
                    if mode != RecoveryMode::PointInTime {
                        return Err(Error::Corrupt {
                            segment: SegmentId(base),
                            offset,
                            kind,
                        });
                    }
                    // The one explicit repair: cut the promised frames from the damage on.
                    let sealed = if source.recycled {
                        close_recycled(io, source, (offset, end_seq), Some(kind), report)?
                    } else {
                        if let Some(last) =
                            segment::last_nonzero_byte(&file, &path, offset, file_len)?
                        {
                            cut(io, source, offset..last + 1, kind, report)?;
                        }
                        false
                    };
                    let parts = Parts {
                        file,
                        path,
                        header,
                        file_len,
                        end: offset,
                        end_seq,
                        sealed,
                        entries,
                    };
                    return Ok(Recovered {
                        parts,
                        packed,
                        unreadable: None,
                    });
                }
            }
        }
        Some(mark) => {
            tracing::warn!(
                segment = base,
                marker_segment = mark.segment,
                "the clean-shutdown marker describes another segment; ignoring it and scanning"
            );
        }
        None => {}
    }

    let (offset, found) = segment::scan_from_index(&mut window, source, &mut entries, file_len)?;
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
    // Frames that stop below what the log acknowledged as durable are durable records
    // damaged, never a torn tail [REC-03]. (A seal that ends them early is a missing tail,
    // [REC-12], which the caller checks.)
    let below_durable = acknowledged
        .filter(|durable| found.stop != Stop::Seal && *durable > found.end_seq)
        .map(|durable| CorruptKind::BelowDurable {
            found: found.end_seq,
            durable,
            fault: kind.clone().map(Box::new),
        });
    let sealed = if source.recycled {
        end_recycled(io, source, &found, below_durable, mode, report)?
    } else {
        let invalid = below_durable.or(kind);
        cut_damage(
            io,
            source,
            (damage_from, found.end_seq),
            invalid,
            mode,
            report,
        )?;
        found.stop == Stop::Seal
    };
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
    Ok(Recovered {
        parts,
        packed,
        unreadable: None,
    })
}

/// What checking a clean-shutdown marker's promise found [REC-01].
#[derive(Debug)]
pub(crate) enum CleanEnd {
    /// Every frame below the recorded end decodes. `sealed` says whether a seal follows
    /// (`Some(true)`) or empty space (`Some(false)`); `None` if anything else follows (bytes
    /// written after the end) or the sequences disagree with the marker: no promised record
    /// is at stake then, and the segment is scanned.
    Kept { sealed: Option<bool> },
    /// Durable frames are damaged: valid frames stop at `offset` (sequence `end_seq`), below
    /// the recorded end.
    Broken {
        offset: u64,
        end_seq: u64,
        kind: CorruptKind,
    },
}

/// Checks that the frames of the last segment reach the end its clean-shutdown marker
/// recorded, decoding from the resume point of `entries` (which it extends) [REC-01].
pub(crate) fn check_clean_end(
    window: &mut FileWindow,
    source: ScanFile<'_>,
    entries: &mut Vec<IndexEntry>,
    mark: &CleanMark,
) -> Result<CleanEnd> {
    let limit = mark.end_offset.min(source.len);
    let (_, found) = segment::scan_from_index(window, source, entries, limit)?;
    if found.stop == Stop::Limit && found.end == mark.end_offset && found.end_seq == mark.next_seq {
        let sealed = match source.decode_at(window, mark.end_offset, mark.next_seq, source.len)? {
            Decoded::Empty => Some(false),
            Decoded::Seal => Some(true),
            // In a recycled segment the bytes after the frames are left from before [SEG-10].
            Decoded::Invalid(_) if source.recycled => Some(false),
            Decoded::Record { .. } | Decoded::Invalid(_) => None,
        };
        return Ok(CleanEnd::Kept { sealed });
    }
    if found.end >= mark.end_offset || found.end_seq >= mark.next_seq {
        // The frames reach the recorded end, or every promised sequence: the marker does not
        // describe this segment (a stale or rewritten one), and no promised record is missing.
        return Ok(CleanEnd::Kept { sealed: None });
    }
    let fault = match found.stop {
        // The file ends before the recorded end.
        Stop::Limit => None,
        Stop::Invalid(kind) => Some(Box::new(kind)),
        // Zeroed space, or a seal, below the recorded end: frames after it were promised.
        Stop::Empty | Stop::Seal => None,
    };
    Ok(CleanEnd::Broken {
        offset: found.end,
        end_seq: found.end_seq,
        kind: CorruptKind::BelowCleanEnd {
            clean_end: mark.end_offset,
            fault,
        },
    })
}

/// Classifies what lies in `[from, end of file)`, where a frame holding `expected_seq` was
/// due, and zeroes it if the mode allows. `invalid` is what is wrong at `from`; if it is
/// [`CorruptKind::BelowDurable`], nothing there is a torn tail.
fn cut_damage(
    io: &dyn Io,
    source: ScanFile<'_>,
    (from, expected_seq): (u64, u64),
    invalid: Option<CorruptKind>,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<()> {
    let segment = SegmentId(source.base);
    let durable_lost = matches!(invalid, Some(CorruptKind::BelowDurable { .. }));
    let Some(last_nonzero) =
        segment::last_nonzero_byte(source.file, source.path, from, source.len)?
    else {
        return match invalid {
            Some(kind) if durable_lost && mode != RecoveryMode::PointInTime => {
                Err(Error::Corrupt {
                    segment,
                    offset: from,
                    kind,
                })
            }
            _ => Ok(()),
        };
    };
    let bytes_dropped = last_nonzero + 1 - from;
    let follows = segment::find_valid_frame(source, from, last_nonzero, expected_seq)?
        .map(|found| found.offset);
    let kind = match follows {
        Some(next_valid) => CorruptKind::DamagedBeforeTail { next_valid },
        None => invalid.unwrap_or(CorruptKind::TornTail {
            bytes: bytes_dropped,
        }),
    };
    let refuse = match mode {
        RecoveryMode::AbsoluteConsistency => true,
        RecoveryMode::TolerateTornTail => follows.is_some() || durable_lost,
        RecoveryMode::PointInTime => false,
    };
    if refuse {
        let kind = if follows.is_none() && !durable_lost {
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
    cut(io, source, from..last_nonzero + 1, kind, report)
}

/// Ends the frames of a recycled last segment [SEG-10] that an unclean shutdown left, where
/// the scan `found` they stop, and returns whether the segment is sealed.
///
/// What follows the frames is what the file held before, so a torn frame there looks like
/// any other leftover bytes, and frames of this segment written after a lost one may survive
/// a power loss unseen. The segment is therefore sealed where its frames stop, so that
/// nothing is ever appended after those bytes, unless a valid frame follows within
/// [`segment::RECYCLED_SEARCH_SPAN`]: that is damage before the tail, refused as in a plain
/// segment (cut, by the same seal, only in `PointInTime`). So are frames that stop
/// `below_durable` ([`CorruptKind::BelowDurable`]), whatever follows them.
/// `AbsoluteConsistency` refuses the segment, since it cannot show that nothing was torn.
fn end_recycled(
    io: &dyn Io,
    source: ScanFile<'_>,
    found: &segment::Scan,
    below_durable: Option<CorruptKind>,
    mode: RecoveryMode,
    report: &mut RecoveryReport,
) -> Result<bool> {
    let (from, expected_seq) = (found.end, found.end_seq);
    let segment = SegmentId(source.base);
    match (&found.stop, &below_durable) {
        (Stop::Seal, _) => return Ok(true),
        (Stop::Limit, Some(kind)) if mode != RecoveryMode::PointInTime => {
            return Err(Error::Corrupt {
                segment,
                offset: from,
                kind: kind.clone(),
            });
        }
        (Stop::Limit, _) => return Ok(false),
        (Stop::Empty | Stop::Invalid(_), _) => {}
    }
    let follows = match segment::damage_end(source, from, source.len)? {
        Some(last) => segment::find_valid_frame(source, from, last, expected_seq)?,
        None => None,
    };
    let damage = follows
        .map(|found| CorruptKind::DamagedBeforeTail {
            next_valid: found.offset,
        })
        .or(below_durable);
    let refuse = match (mode, &damage) {
        (RecoveryMode::AbsoluteConsistency, None) => Some(CorruptKind::TornTail {
            bytes: source.len - from,
        }),
        (RecoveryMode::PointInTime, _) | (RecoveryMode::TolerateTornTail, None) => None,
        (_, Some(kind)) => Some(kind.clone()),
    };
    if let Some(kind) = refuse {
        return Err(Error::Corrupt {
            segment,
            offset: from,
            kind,
        });
    }
    close_recycled(io, source, (from, expected_seq), damage, report)
}

/// Ends the frames of a recycled segment at `offset`, where `seq` was due, so that nothing is
/// appended after bytes that may hide frames of its own (with `damage`, reported as a cut of
/// what is left behind), syncs it, and returns whether it is now sealed.
///
/// A seal ends it, and its first append rolls. A segment without records cannot be sealed
/// (the seal would name its own base, [SEG-06]): everything after its header is zeroed
/// instead, a segment's worth of writes only after a crash before its first record.
fn close_recycled(
    io: &dyn Io,
    source: ScanFile<'_>,
    (offset, seq): (u64, u64),
    damage: Option<CorruptKind>,
    report: &mut RecoveryReport,
) -> Result<bool> {
    let segment = SegmentId(source.base);
    if offset + frame::FRAME_HEADER_LEN as u64 > source.len {
        // No frame fits either: the first append rolls, sealing the segment there [SEG-05].
        return Ok(false);
    }
    let sealed = seq != source.base;
    if sealed {
        tracing::warn!(%segment, offset, "ending a recycled segment where its frames stop");
        let seal = frame::encode(source.salt, seq, FrameKind::Seal, &[]);
        write_all_at(io, source.file, &seal, offset, source.path)?;
    } else {
        tracing::warn!(%segment, "zeroing a recycled segment that holds no record");
        zero_range(io, source.file, source.path, offset, source.len)?;
    }
    io.sync_data(source.file)
        .map_err(|e| Error::io(IoOp::Sync, source.path, e))?;
    report.recycled_end = true;
    if let Some(kind) = damage {
        report.torn_tail = Some(TornTail {
            segment,
            offset,
            bytes_dropped: source.len - offset,
            kind,
        });
    }
    Ok(sealed)
}

/// Zeroes `range` (damage up to its last non-zero byte) of the segment, syncs it and reports
/// the cut [REC-05].
fn cut(
    io: &dyn Io,
    source: ScanFile<'_>,
    range: std::ops::Range<u64>,
    kind: CorruptKind,
    report: &mut RecoveryReport,
) -> Result<()> {
    let (file, path) = (source.file, source.path);
    let segment = SegmentId(source.base);
    let bytes_dropped = range.end - range.start;
    tracing::warn!(%segment, offset = range.start, bytes = bytes_dropped, %kind, "cutting off a damaged tail");
    zero_range(io, file, path, range.start, range.end)?;
    io.sync_data(file)
        .map_err(|e| Error::io(IoOp::Sync, path, e))?;
    report.torn_tail = Some(TornTail {
        segment,
        offset: range.start,
        bytes_dropped,
        kind,
    });
    Ok(())
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
