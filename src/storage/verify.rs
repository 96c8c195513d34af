//! Verification: every frame of every segment checked, continuing past damage [VER-01].
//!
//! Unlike a cursor, which stops at the first damaged frame, verification reads each segment
//! from its header (index files are not trusted), notes each damaged region with its
//! segment, offset and kind, looks for the next valid frame as recovery's classifier does
//! [REC-03], and goes on from there, or from the next segment. The last segment is checked
//! against a valid clean-shutdown file: frames that stop short of the end it records are
//! damage, not a torn tail [REC-01]. Nothing is written.

use std::fmt;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::dir;
use super::error::{CorruptKind, Error, Result};
use super::frame::{self, Decoded};
use super::header::HEADER_LEN;
use super::id::{SegmentId, Seq};
use super::meta::CleanMark;
use super::pack::{Dictionary, Inflater};
use super::reader::Reader;
use super::segment::{self, FileWindow};
use super::shared::Shared;
use super::watermark::WatermarkReader;

/// What [`Reader::verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Segment files checked.
    pub segments: usize,
    /// Records at or above the logical start whose frames are intact, in every segment.
    pub records: u64,
    /// Every damaged region, in log order.
    pub problems: Vec<Damage>,
    /// Bytes after the end of the last segment's frames that an unclean stop (a crash, or a
    /// writer still writing) left; the next writer open cuts them as a torn tail [REC-03].
    /// Not a problem: no record there was ever durable.
    pub unclean_tail: Option<(SegmentId, u64)>,
}

impl VerifyReport {
    /// Whether every frame is intact.
    #[must_use]
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// One damaged region of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Damage {
    /// The segment.
    pub segment: SegmentId,
    /// Where the first damaged byte region starts (a frame's offset).
    pub offset: u64,
    /// What is wrong there.
    pub kind: CorruptKind,
    /// The sequence the frame at `offset` should hold.
    pub first_seq: Seq,
    /// The first sequence readable again after the damage, when known: the sequences
    /// `first_seq..resumes_at` cannot be read.
    pub resumes_at: Option<Seq>,
}

impl Damage {
    /// The error a reader meets at this damage.
    #[must_use]
    pub fn to_error(&self) -> Error {
        Error::Corrupt {
            segment: self.segment,
            offset: self.offset,
            kind: self.kind.clone(),
        }
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "segment {} at offset {}: {}",
            self.segment, self.offset, self.kind
        )?;
        match self.resumes_at {
            Some(end) if end.0 > self.first_seq.0 + 1 => {
                write!(
                    f,
                    " (sequences {}..={} unreadable)",
                    self.first_seq,
                    end.0 - 1
                )
            }
            Some(end) if end.0 > self.first_seq.0 => {
                write!(f, " (sequence {} unreadable)", self.first_seq)
            }
            Some(_) => Ok(()),
            None => write!(f, " (sequences from {} unreadable)", self.first_seq),
        }
    }
}

/// The segment being verified.
struct Target<'a> {
    file: &'a File,
    path: &'a Path,
    id: SegmentId,
    salt: u64,
    /// The base of the next segment, if there is one.
    successor: Option<u64>,
    /// Where the frames of this segment may end (the file length, or the writer's published
    /// end for its active segment).
    limit: u64,
    /// The clean-shutdown promise, for the last segment.
    clean: Option<CleanMark>,
    /// For the last segment, the watermark file's value, read before its frames: every
    /// sequence below it was durable then, so its frames were in a file [META-04].
    durable: Option<u64>,
    /// Whether the file is a recycled segment [SEG-10].
    recycled: bool,
    /// Whether the segment is packed [SEG-09]: its frames end in its seal, the last
    /// segment's too [REC-13].
    packed: bool,
}

impl Target<'_> {
    /// The damage when the frames of the last segment stop at `seq`, if they stop below
    /// what the clean shutdown promised or (not at a seal) what the watermark file named
    /// durable [REC-01] [REC-03], with the sequence reads resume at. (Records acknowledged
    /// after a seal are in no segment file, [REC-12], which the caller checks.)
    fn early_end(
        &self,
        (offset, seq): (u64, u64),
        sealed: bool,
        fault: Option<CorruptKind>,
    ) -> Option<(CorruptKind, u64)> {
        if self.successor.is_some() {
            return None;
        }
        if let Some(mark) = self
            .clean
            .filter(|_| promise_broken(self.clean, offset, seq))
        {
            let kind = CorruptKind::BelowCleanEnd {
                clean_end: mark.end_offset,
                fault: fault.map(Box::new),
            };
            return Some((kind, mark.next_seq));
        }
        let durable = self.durable.filter(|durable| !sealed && seq < *durable)?;
        let kind = CorruptKind::BelowDurable {
            found: seq,
            durable,
            fault: fault.map(Box::new),
        };
        Some((kind, durable))
    }

    /// Damage at `offset`, where the frame of `seq` should be.
    fn damage(&self, offset: u64, seq: u64, kind: CorruptKind, resumes_at: Option<u64>) -> Damage {
        Damage {
            segment: self.id,
            offset,
            kind,
            first_seq: Seq(seq),
            resumes_at: resumes_at.map(Seq),
        }
    }
}

impl Reader {
    /// Checks every frame of every segment, and the last segment against a clean shutdown's
    /// recorded end, continuing past damage; returns every problem and the number of intact
    /// records [VER-01].
    ///
    /// # Errors
    ///
    /// I/O errors only: damage is reported in the [`VerifyReport`].
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_each(&mut |_, _| {})
    }

    /// As [`Reader::verify`], handing each intact record at or above the start (decompressed)
    /// to `visit`, in sequence order.
    ///
    /// # Errors
    ///
    /// As [`Reader::verify`].
    pub fn verify_each(&self, visit: &mut dyn FnMut(Seq, &[u8])) -> Result<VerifyReport> {
        let shared = self.shared();
        // Read before the segments and their published ends: every record it names durable
        // is then below the end verification reads to.
        let durable = WatermarkReader::new(&shared.dir).read();
        shared.refresh()?;
        let max_payload = shared.max_payload;
        let slots: Vec<(u64, Option<(u64, bool)>)> = shared
            .slots
            .read()
            .iter()
            .map(|s| (s.base, s.get().map(|d| (d.end(), d.is_sealed()))))
            .collect();
        // Read after the segments: a truncation raises the start before it forgets any, so
        // the first segment listed is never above the start unless records are missing.
        let start = shared.reload_start()?.max(self.first_seq().0);
        let clean = super::meta::read_file(&shared.dir.join(dir::CLEAN_FILE))
            .ok()
            .and_then(|bytes| CleanMark::decode(&bytes).ok());
        let mut report = VerifyReport::default();
        if let Some(&(first, _)) = slots.first()
            && first > start
        {
            report.problems.push(missing(first, 0, start..first));
        }
        // The start was read after the ends: a writer may have appended and truncated
        // past them since. Only a start beyond an end read after it hides records.
        let mut end = shared.next.load(Ordering::Acquire);
        if start > end {
            shared.refresh()?;
            end = shared.next.load(Ordering::Acquire);
        }
        if let Some(&(first, _)) = slots.first()
            && start > end
            && end > first
        {
            report.problems.push(Damage {
                segment: SegmentId(first),
                offset: 0,
                kind: CorruptKind::StartBeyondEnd { start, end },
                first_seq: Seq(first),
                resumes_at: None,
            });
        }
        let mut inflater = Inflater::default();
        for (i, (base, published)) in slots.iter().enumerate() {
            let successor = slots.get(i + 1).map(|s| s.0);
            // A packed segment's frames end where its trailer starts [SEG-09]; a damaged
            // trailer fails the segment, as a damaged header does: without its dictionary
            // its compressed records cannot be read.
            let opened = segment::open_frames(&shared.dir, *base, false);
            let (file, path, header, file_len, packed) = match opened {
                Ok(opened) => opened,
                Err(Error::Corrupt {
                    segment,
                    offset,
                    kind,
                }) => {
                    // The last segment's records end at its seal, which readers find
                    // by scanning its frames [REC-13].
                    let next = shared.next.load(Ordering::Acquire);
                    let resumes_at = successor.or_else(|| (next > *base).then_some(next));
                    report.problems.push(Damage {
                        segment,
                        offset,
                        kind,
                        first_seq: Seq(*base),
                        resumes_at: resumes_at.map(Seq),
                    });
                    continue;
                }
                // Deleted by a truncation since the listing: nothing readable was there.
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && truncated_away(shared, *base)? =>
                {
                    continue;
                }
                Err(error) => return Err(error),
            };
            report.segments += 1;
            let is_packed = packed.is_some();
            let dictionary = packed.and_then(|p| p.dictionary);
            // The writer's own readers check its active segment up to what it published.
            let limit = match published {
                Some((end, sealed)) if !shared.follower && successor.is_none() => {
                    end + if *sealed {
                        frame::FRAME_HEADER_LEN as u64
                    } else {
                        0
                    }
                }
                _ => file_len,
            };
            let target = Target {
                file: &file,
                path: &path,
                id: SegmentId(*base),
                salt: header.salt,
                successor,
                limit: limit.min(file_len),
                clean: clean
                    .filter(|m| successor.is_none() && m.segment == *base && m.salt == header.salt),
                durable: durable.filter(|_| successor.is_none()),
                recycled: header.is_recycled(),
                packed: is_packed,
            };
            let mut reading = Reading {
                inflater: &mut inflater,
                dictionary: dictionary.as_ref(),
                visit,
            };
            verify_segment(&target, start, max_payload, &mut report, &mut reading)?;
        }
        // Only after a last segment that ends in its seal: what is missing from the frames of
        // an unsealed one is its tail, classified above.
        if let Some(&(last, Some((offset, true)))) = slots.last()
            && let Some(records) = shared.missing_tail()?
        {
            report.problems.push(missing(last, offset, records));
        }
        Ok(report)
    }
}

/// Whether segment `base`, gone from the directory, was removed by a truncation: the segment
/// after it now, which the truncation kept, begins at or below the start. (A snapshot of
/// the segments may not know that segment yet: the writer rolled to it since.)
fn truncated_away(shared: &Shared, base: u64) -> Result<bool> {
    // Listed before the start is read: a truncation writes the start before it removes a
    // segment, so one that removed the segments before the first listed after `base` has
    // raised the start to at least that segment's base by then.
    let listing = dir::list(&shared.dir)?;
    let start = shared.reload_start()?;
    Ok(listing
        .segments
        .iter()
        .find(|b| **b > base)
        .is_some_and(|next| *next <= start))
}

/// Records in no segment file, reported at the segment and offset next to them [REC-12].
fn missing(segment: u64, offset: u64, records: std::ops::Range<u64>) -> Damage {
    Damage {
        segment: SegmentId(segment),
        offset,
        kind: CorruptKind::MissingSegments {
            from: records.start,
            to: records.end,
        },
        first_seq: Seq(records.start),
        resumes_at: Some(Seq(records.end)),
    }
}

/// What verification does with the records it reads.
struct Reading<'a, 'v> {
    inflater: &'a mut Inflater,
    /// The segment's dictionary, if it is packed with one.
    dictionary: Option<&'a Dictionary>,
    visit: &'a mut (dyn FnMut(Seq, &[u8]) + 'v),
}

/// Checks one segment's frames from its header on, continuing past damage.
fn verify_segment(
    target: &Target<'_>,
    start: u64,
    max_payload: u32,
    report: &mut VerifyReport,
    reading: &mut Reading<'_, '_>,
) -> Result<()> {
    let mut window = FileWindow::default();
    let mut offset = HEADER_LEN as u64;
    let mut seq = target.id.0;
    // Where the frames of the last segment stopped when read again afresh (below), and
    // where they stopped before valid frames: a writer may be appending beside us.
    let (mut fresh_at, mut rechecked_at) = (None, None);
    let problem = |report: &mut VerifyReport, damage: Damage| {
        // Damage wholly below the start hides nothing a reader could ask for.
        if damage.resumes_at.is_none_or(|end| end.0 > start) {
            report.problems.push(damage);
        }
    };
    loop {
        let stop = if offset >= target.limit {
            None
        } else {
            let bytes =
                window.frame(target.file, target.path, offset, target.limit, max_payload)?;
            match frame::decode(bytes, target.salt, seq, max_payload) {
                Decoded::Record {
                    compressed,
                    payload,
                    frame_len,
                } => {
                    let payload = if compressed {
                        reading.inflater.inflate(payload, reading.dictionary)
                    } else {
                        Some(payload)
                    };
                    match payload {
                        Some(payload) if seq >= start => {
                            (reading.visit)(Seq(seq), payload);
                            report.records += 1;
                        }
                        Some(_) => {}
                        None => problem(
                            report,
                            target.damage(offset, seq, CorruptKind::Decompress, Some(seq + 1)),
                        ),
                    }
                    offset += frame_len as u64;
                    seq += 1;
                    continue;
                }
                Decoded::Seal => {
                    check_end(target, offset, seq, true, report, &problem);
                    return Ok(());
                }
                Decoded::Empty => Some(None),
                Decoded::Invalid(kind) => Some(Some(kind)),
            }
        };
        // The frames stop at `offset`: the end of the log, or damage.
        let Some(fault) = stop else {
            check_end(target, offset, seq, false, report, &problem);
            return Ok(());
        };
        // The window may hold bytes of the last segment read before a writer beside us
        // wrote there: read the frame at `offset` again before looking beyond it.
        if target.successor.is_none() && fresh_at != Some(offset) {
            fresh_at = Some(offset);
            window.reset();
            continue;
        }
        let source = segment::ScanFile {
            file: target.file,
            path: target.path,
            base: target.id.0,
            salt: target.salt,
            len: target.limit,
            max_payload,
            recycled: target.recycled,
        };
        let last = segment::damage_end(source, offset, target.limit)?;
        let resync = match last {
            Some(last) => segment::find_valid_frame(source, offset, last, seq)?,
            None => None,
        };
        // Bytes after a recycled segment's frames are left from before [SEG-10]: no sign of
        // an unclean end.
        let unclean = last.is_some() && !target.recycled;
        match resync {
            // Valid frames after the stop, in the last segment: if a writer wrote them after
            // our read at `offset`, it wrote the frame there first. Read it once more.
            Some(_) if target.successor.is_none() && rechecked_at != Some(offset) => {
                rechecked_at = Some(offset);
                window.reset();
            }
            Some(segment::Resync {
                offset: next,
                seq: next_seq,
            }) => {
                let kind = fault.unwrap_or(CorruptKind::DamagedBeforeTail { next_valid: next });
                problem(report, target.damage(offset, seq, kind, next_seq));
                let Some(next_seq) = next_seq else {
                    // The search gave up: the rest of this segment is not examined.
                    return Ok(());
                };
                offset = next;
                seq = next_seq;
            }
            None => {
                let (kind, resumes_at) = match (target.successor, fault) {
                    (Some(successor), Some(kind)) => (kind, successor),
                    (Some(successor), None) => (CorruptKind::MissingSeal, successor),
                    // Only a promise makes the end of the last segment damage; without one
                    // it is what a crash (or a writer still writing) leaves.
                    (None, fault) => match target.early_end((offset, seq), false, fault.clone()) {
                        Some(found) => found,
                        // A packed last segment ends in its seal: its frames that stop
                        // elsewhere are damage, a damaged seal losing no record [REC-13].
                        None if target.packed => (fault.unwrap_or(CorruptKind::MissingSeal), seq),
                        None => {
                            if unclean {
                                report.unclean_tail = Some((target.id, offset));
                            }
                            return Ok(());
                        }
                    },
                };
                problem(report, target.damage(offset, seq, kind, Some(resumes_at)));
                return Ok(());
            }
        }
    }
}

/// Checks where a segment's frames end (at a seal, or at empty space or the end of the
/// file) against its successor and the clean-shutdown promise.
fn check_end(
    target: &Target<'_>,
    offset: u64,
    seq: u64,
    sealed: bool,
    report: &mut VerifyReport,
    problem: &dyn Fn(&mut VerifyReport, Damage),
) {
    let kind = match target.successor {
        Some(successor) if !sealed => Some((CorruptKind::MissingSeal, successor)),
        Some(successor) if seq != successor => Some((
            CorruptKind::SequenceGap {
                expected: seq,
                found: successor,
            },
            successor,
        )),
        Some(_) => None,
        None => target
            .early_end((offset, seq), sealed, None)
            .or_else(|| (target.packed && !sealed).then_some((CorruptKind::MissingSeal, seq))),
    };
    if let Some((kind, resumes_at)) = kind {
        problem(report, target.damage(offset, seq, kind, Some(resumes_at)));
    }
}

/// Whether frames of the last segment that stop at `offset` with sequence `seq` break the
/// clean shutdown's promise: they stop below its recorded end before its next sequence, so
/// promised records are missing. (Frames that reach either break nothing that was promised.)
fn promise_broken(clean: Option<CleanMark>, offset: u64, seq: u64) -> bool {
    clean.is_some_and(|m| offset < m.end_offset && seq < m.next_seq)
}
