//! `store.meta`: the runs that map a log store's log sequences to append sequences
//! (format/store.md, [STORE-01] to [STORE-05]).
//!
//! Native writes give each record the append sequence after the last, so the two numberings
//! move in step. Imported reference data may start above 1 or leave gaps (the reference
//! leaves one for every failed write); each place where the append sequence jumps is a
//! *run*. The codec here is public so that format vectors and tools can use it.

use std::fmt;

/// The file's name inside a store directory.
pub const FILE_NAME: &str = "store.meta";
/// The first eight bytes of a current file: `\x89ESLRUN\n`.
pub const MAGIC: [u8; 8] = *b"\x89ESLRUN\n";
/// The layout this build writes (version 1 was the unchecksummed text layout).
pub const VERSION: u16 = 2;
/// The largest `store.meta` a store reads (four million runs): a larger file is refused
/// before it is read into memory.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Bytes before the first run: magic, versions, run count.
const HEADER_LEN: usize = 16;
/// Bytes of one run: log sequence, append sequence.
const RUN_LEN: usize = 16;
/// Bytes of the trailing checksum.
const CRC_LEN: usize = 4;

/// The most runs a `store.meta` within [`MAX_FILE_BYTES`] holds: an append that would need
/// more is refused, since no open could read the file it writes.
pub const MAX_RUNS: usize = (MAX_FILE_BYTES as usize - HEADER_LEN - CRC_LEN) / RUN_LEN;
/// The first line of a version 1 (text) file.
const LEGACY_MAGIC: &str = "esl-replay store";
/// The largest append sequence a record can have (records are numbered like the reference's
/// signed 64-bit column).
const MAX_APPEND: u64 = i64::MAX as u64;

/// One run: from log sequence `log_seq` on (up to the next run), the record at log sequence
/// `l` has append sequence `append_seq + (l - log_seq)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Run {
    /// The first log sequence of the run.
    pub log_seq: u64,
    /// The append sequence of the record at `log_seq`.
    pub append_seq: u64,
}

impl Run {
    /// How far append sequences are ahead of log sequences in this run.
    fn offset(self) -> i128 {
        i128::from(self.append_seq) - i128::from(self.log_seq)
    }
}

/// The mapping between log sequences and append sequences.
///
/// Invariants, checked whenever a map is built from stored runs ([STORE-02]):
///
/// 1. The first run starts at log sequence 1 (a file without one means the identity up to
///    its first run), and every append sequence is at least 1.
/// 2. Runs are strictly increasing in log sequence, so each covers the contiguous log
///    sequences up to the next run's first (the last run covers everything after it).
/// 3. Each run's offset (append minus log sequence) is strictly greater than the previous
///    run's: a run exists only where the append sequence jumps forward. Hence append
///    sequences strictly increase with log sequences across runs, and both directions of
///    the mapping are monotone and found by binary search.
///
/// A run may start at or after the log's next sequence: the writer makes a run durable
/// before the records that need it, and a crash can lose those records. Such a run is
/// *stale*; its append sequence is above every stored record's, so it maps no stored
/// record, and the writer's open forgets it ([STORE-04]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SequenceMap {
    /// Never empty; `runs[0].log_seq == 1`.
    runs: Vec<Run>,
}

impl Default for SequenceMap {
    fn default() -> SequenceMap {
        SequenceMap {
            runs: vec![Run {
                log_seq: 1,
                append_seq: 1,
            }],
        }
    }
}

/// Which layout a decoded file had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Version 1: text, no checksum (read for old stores, never written).
    LegacyText,
    /// The current binary layout with its CRC-32.
    Current,
}

/// Why stored bytes are not a valid `store.meta`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MetaError {
    /// The length does not fit the layout or the run count.
    Length {
        /// The file's length.
        len: usize,
        /// What the header implies, if it could be read.
        expected: Option<usize>,
    },
    /// Neither the current magic nor the version 1 text header.
    BadMagic,
    /// The stored CRC-32 does not match the bytes.
    Checksum {
        /// The stored value.
        stored: u32,
        /// The CRC-32 of the bytes before it.
        computed: u32,
    },
    /// A layout version this build cannot read.
    UnsupportedVersion {
        /// The file's version.
        found: u32,
        /// The newest version this build reads.
        supported: u16,
    },
    /// A version 1 line that is not two decimal numbers.
    BadLine {
        /// The line number (1-based).
        line: usize,
        /// Its text.
        text: String,
    },
    /// A run breaks an invariant of [`SequenceMap`].
    BadRun {
        /// The run's position in the file (0-based).
        index: usize,
        /// The run.
        run: Run,
        /// Which invariant.
        reason: String,
    },
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::Length {
                len,
                expected: Some(expected),
            } => write!(
                f,
                "{len} bytes, but its header says {expected} (truncated or extended)"
            ),
            MetaError::Length {
                len,
                expected: None,
            } => write!(f, "{len} bytes, too short for the header and checksum"),
            MetaError::BadMagic => write!(f, "not an esl-replay store metadata file (bad magic)"),
            MetaError::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is damaged"
            ),
            MetaError::UnsupportedVersion { found, supported } => write!(
                f,
                "layout version {found} is newer than this build reads ({supported}); upgrade esl-replay"
            ),
            MetaError::BadLine { line, text } => {
                write!(f, "line {line} {text:?} is not a run (two decimal numbers)")
            }
            MetaError::BadRun { index, run, reason } => write!(
                f,
                "run {index} (log sequence {}, append sequence {}) {reason}",
                run.log_seq, run.append_seq
            ),
        }
    }
}

impl std::error::Error for MetaError {}

impl SequenceMap {
    /// Builds a map from stored runs, checking every invariant ([STORE-02]). A first run
    /// after log sequence 1 means the identity before it.
    ///
    /// # Errors
    ///
    /// [`MetaError::BadRun`] naming the first run that breaks an invariant.
    pub fn from_runs(stored: &[Run]) -> Result<SequenceMap, MetaError> {
        let mut map = SequenceMap { runs: Vec::new() };
        for (index, &run) in stored.iter().enumerate() {
            let bad = |reason: String| MetaError::BadRun { index, run, reason };
            if run.log_seq == 0 || run.append_seq == 0 {
                return Err(bad("has a zero sequence (sequences start at 1)".into()));
            }
            if run.append_seq > MAX_APPEND {
                return Err(bad(format!(
                    "is above the largest append sequence {MAX_APPEND}"
                )));
            }
            if map.runs.is_empty() && run.log_seq > 1 {
                map.runs = SequenceMap::default().runs;
            }
            if let Some(&previous) = map.runs.last() {
                if run.log_seq <= previous.log_seq {
                    return Err(bad(format!(
                        "does not start after the previous run (log sequence {})",
                        previous.log_seq
                    )));
                }
                if run.offset() <= previous.offset() {
                    return Err(bad(format!(
                        "does not move append sequences forward: log sequence {} already maps to {}",
                        run.log_seq - 1,
                        map.append_seq(run.log_seq - 1)
                    )));
                }
            }
            map.runs.push(run);
        }
        if map.runs.is_empty() {
            return Ok(SequenceMap::default());
        }
        Ok(map)
    }

    /// The runs as stored: all of them but a leading identity run.
    #[must_use]
    pub fn runs(&self) -> &[Run] {
        match self.runs.split_first() {
            Some((first, rest)) if first.append_seq == 1 => rest,
            _ => &self.runs,
        }
    }

    /// The run covering `log_seq` (log sequence 0 counts as 1).
    fn run_for_log(&self, log_seq: u64) -> Run {
        let after = self.runs.partition_point(|r| r.log_seq <= log_seq);
        self.runs
            .get(after.saturating_sub(1))
            .copied()
            .unwrap_or(Run {
                log_seq: 1,
                append_seq: 1,
            })
    }

    /// The append sequence the record at `log_seq` has (or gets, if it is not written yet).
    #[must_use]
    pub fn append_seq(&self, log_seq: u64) -> u64 {
        let run = self.run_for_log(log_seq);
        run.append_seq
            .saturating_add(log_seq.saturating_sub(run.log_seq))
    }

    /// The first log sequence whose append sequence is above `after`.
    #[must_use]
    pub fn log_seq_after(&self, after: u64) -> u64 {
        let want = after.saturating_add(1);
        // Append sequences increase with log sequences, so the runs are sorted by both.
        let next = self.runs.partition_point(|r| r.append_seq <= want);
        let Some(run) = next.checked_sub(1).and_then(|i| self.runs.get(i)) else {
            return 1; // below the first record's append sequence
        };
        let candidate = run.log_seq.saturating_add(want - run.append_seq);
        match self.runs.get(next) {
            // `want` falls in the gap before the next run: its first record is the answer.
            Some(following) if candidate >= following.log_seq => following.log_seq,
            _ => candidate,
        }
    }

    /// Forgets the runs starting at or after `log_seq`: the records they described are gone
    /// (a torn tail) or were never written.
    pub(crate) fn forget_from(&mut self, log_seq: u64) {
        if self.runs.last().is_none_or(|r| r.log_seq < log_seq) {
            return; // the common case, once per appended record
        }
        // Runs are sorted by log sequence: cut at the first forgotten one (a scan of every
        // run here would make replaying a version 1 file quadratic).
        let kept = self.runs.partition_point(|r| r.log_seq < log_seq);
        self.runs.truncate(kept);
        if self.runs.is_empty() {
            *self = SequenceMap::default();
        }
    }

    /// Records that the record at `log_seq`, the next one the log will write, has
    /// `append_seq`; it must be above the append sequence of the record before it. A changed
    /// map must be made durable before the record is appended.
    pub(crate) fn continue_at(&mut self, log_seq: u64, append_seq: u64) {
        self.forget_from(log_seq);
        if self.append_seq(log_seq) == append_seq {
            return;
        }
        let run = Run {
            log_seq,
            append_seq,
        };
        match self.runs.last_mut() {
            Some(last) if last.log_seq == log_seq => *last = run,
            _ => self.runs.push(run),
        }
    }

    /// The current layout ([STORE-01]).
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        let runs = self.runs();
        let mut bytes = Vec::with_capacity(HEADER_LEN + runs.len() * RUN_LEN + CRC_LEN);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        let count = u32::try_from(runs.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&count.to_le_bytes());
        for run in runs {
            bytes.extend_from_slice(&run.log_seq.to_le_bytes());
            bytes.extend_from_slice(&run.append_seq.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        bytes
    }

    /// Decodes and validates a file in the current layout or the version 1 text layout
    /// ([STORE-02], [STORE-05]).
    ///
    /// # Errors
    ///
    /// A [`MetaError`] saying what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<(SequenceMap, Layout), MetaError> {
        if bytes.starts_with(LEGACY_MAGIC.as_bytes()) {
            return SequenceMap::decode_legacy(bytes).map(|map| (map, Layout::LegacyText));
        }
        if bytes.len() < HEADER_LEN + CRC_LEN {
            let magic_len = bytes.len().min(MAGIC.len());
            if bytes.get(..magic_len) != MAGIC.get(..magic_len) {
                return Err(MetaError::BadMagic);
            }
            return Err(MetaError::Length {
                len: bytes.len(),
                expected: None,
            });
        }
        let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
        let field = |at: usize, len: usize| body.get(at..at + len).unwrap_or_default();
        if field(0, 8) != MAGIC {
            return Err(MetaError::BadMagic);
        }
        let u16_at = |at| u16::from_le_bytes(field(at, 2).try_into().unwrap_or_default());
        let u32_at = |at| u32::from_le_bytes(field(at, 4).try_into().unwrap_or_default());
        let u64_at = |at| u64::from_le_bytes(field(at, 8).try_into().unwrap_or_default());
        let count = u32_at(12) as usize;
        let expected = count
            .checked_mul(RUN_LEN)
            .and_then(|n| n.checked_add(HEADER_LEN + CRC_LEN));
        if expected != Some(bytes.len()) {
            return Err(MetaError::Length {
                len: bytes.len(),
                expected: Some(expected.unwrap_or(usize::MAX)),
            });
        }
        let stored = u32::from_le_bytes(crc.try_into().unwrap_or_default());
        let computed = crc32fast::hash(body);
        if stored != computed {
            return Err(MetaError::Checksum { stored, computed });
        }
        let read_version = u16_at(8);
        if read_version != VERSION {
            return Err(MetaError::UnsupportedVersion {
                found: u32::from(read_version),
                supported: VERSION,
            });
        }
        let runs: Vec<Run> = (0..count)
            .map(|i| {
                let at = HEADER_LEN + i * RUN_LEN;
                Run {
                    log_seq: u64_at(at),
                    append_seq: u64_at(at + 8),
                }
            })
            .collect();
        SequenceMap::from_runs(&runs).map(|map| (map, Layout::Current))
    }

    /// Version 1: `esl-replay store`, `version 1`, then one `LOG APPEND` line per run in the
    /// order they were added. A later run replaced every run at or after its log sequence
    /// (a torn tail had removed their records), so the runs are replayed in that order,
    /// dropping those that changed nothing, and then validated.
    fn decode_legacy(bytes: &[u8]) -> Result<SequenceMap, MetaError> {
        let text = std::str::from_utf8(bytes).map_err(|_| MetaError::BadMagic)?;
        let mut lines = text.lines();
        if lines.next() != Some(LEGACY_MAGIC) {
            return Err(MetaError::BadMagic);
        }
        match lines.next().and_then(|l| l.strip_prefix("version ")) {
            Some("1") => {}
            other => {
                return Err(MetaError::UnsupportedVersion {
                    found: other.and_then(|v| v.parse().ok()).unwrap_or(u32::MAX),
                    supported: VERSION,
                });
            }
        }
        let mut map = SequenceMap::default();
        let mut replayed = Vec::new();
        for (number, line) in (3..).zip(lines) {
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split(' ').map(str::parse::<u64>);
            let (Some(Ok(log_seq)), Some(Ok(append_seq)), None) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(MetaError::BadLine {
                    line: number,
                    text: line.to_owned(),
                });
            };
            let run = Run {
                log_seq,
                append_seq,
            };
            if log_seq == 0 || append_seq == 0 {
                return Err(MetaError::BadRun {
                    index: replayed.len(),
                    run,
                    reason: "has a zero sequence (sequences start at 1)".into(),
                });
            }
            map.continue_at(log_seq, append_seq);
            replayed.push(run);
        }
        // The replay above builds a map in whatever shape; validation decides.
        SequenceMap::from_runs(&map.runs)
    }
}

#[cfg(test)]
mod tests {
    use quickcheck::{QuickCheck, TestResult};

    use super::*;

    fn run(log_seq: u64, append_seq: u64) -> Run {
        Run {
            log_seq,
            append_seq,
        }
    }

    /// The naive model: the stored (log sequence, append sequence) pairs, in order.
    struct Model {
        pairs: Vec<(u64, u64)>,
    }

    impl Model {
        /// The first log sequence whose record's append sequence is above `after`, or the
        /// next log sequence if none is.
        fn log_seq_after(&self, after: u64) -> u64 {
            self.pairs
                .iter()
                .find(|(_, a)| *a > after)
                .map_or(self.pairs.len() as u64 + 1, |(l, _)| *l)
        }
    }

    /// Builds a log of appends with these gaps (0 = the next sequence), cutting a torn tail
    /// back to `keep` records before append number `cut_at` (or after the last) if asked.
    /// The map is built the way the writer builds it; without `writer_open` the stale runs
    /// of the lost records stay, as a follower may see them.
    fn build(gaps: &[u8], cut: Option<(usize, usize)>, writer_open: bool) -> (SequenceMap, Model) {
        let mut map = SequenceMap::default();
        let mut model = Model { pairs: Vec::new() };
        let cut_now = |map: &mut SequenceMap, model: &mut Model, keep: usize| {
            model.pairs.truncate(keep);
            if writer_open {
                map.forget_from(model.pairs.len() as u64 + 1);
            }
        };
        for (i, gap) in gaps.iter().enumerate() {
            if let Some((cut_at, keep)) = cut
                && i == cut_at
            {
                cut_now(&mut map, &mut model, keep);
            }
            let log_seq = model.pairs.len() as u64 + 1;
            let last = model.pairs.last().map_or(0, |(_, a)| *a);
            // Some gaps are large, to reach far-apart runs.
            let jump = if gap % 7 == 6 {
                u64::from(*gap) * 1000
            } else {
                u64::from(*gap % 4)
            };
            let append_seq = last + 1 + jump;
            map.continue_at(log_seq, append_seq);
            model.pairs.push((log_seq, append_seq));
        }
        if let Some((cut_at, keep)) = cut
            && cut_at == gaps.len()
        {
            cut_now(&mut map, &mut model, keep);
        }
        (map, model)
    }

    fn agrees(map: &SequenceMap, model: &Model) -> bool {
        let next = model.pairs.len() as u64 + 1;
        for &(l, a) in &model.pairs {
            if map.append_seq(l) != a {
                return false;
            }
        }
        let last = model.pairs.last().map_or(0, |(_, a)| *a);
        for &(_, a) in &model.pairs {
            for after in [a.saturating_sub(1), a, a + 1] {
                let expected = model.log_seq_after(after);
                let got = map.log_seq_after(after);
                // Past the last record any position at or after the end is as good.
                let fine = if after >= last {
                    got >= next
                } else {
                    got == expected
                };
                if !fine {
                    return false;
                }
            }
        }
        model.pairs.is_empty() || map.log_seq_after(0) == 1
    }

    /// The map agrees with the naive model for arbitrary gap patterns, with and without a
    /// torn tail cut followed by appends that continue past a gap; it survives an encode and
    /// decode, and what it stores is valid.
    #[test]
    fn map_agrees_with_a_naive_model_for_any_gaps() {
        fn property(gaps: Vec<u8>, cut_after: usize, keep: usize, writer_open: bool) -> TestResult {
            if gaps.is_empty() {
                return TestResult::discard();
            }
            let cut = Some((cut_after % (gaps.len() + 1), keep % (gaps.len() + 1)));
            for cut in [None, cut] {
                let (map, model) = build(&gaps, cut, writer_open);
                if !agrees(&map, &model) {
                    return TestResult::error(format!("{map:?} disagrees with {:?}", model.pairs));
                }
                let decoded = SequenceMap::decode(&map.encode());
                if decoded != Ok((map.clone(), Layout::Current)) {
                    return TestResult::error(format!("{map:?} decodes as {decoded:?}"));
                }
            }
            TestResult::passed()
        }
        QuickCheck::new()
            .tests(2000)
            .quickcheck(property as fn(Vec<u8>, usize, usize, bool) -> TestResult);
    }

    /// [STORE-02] The mapping across gaps, including before the first stored run: an import
    /// of 1..=100 and then 200..=299 stores one run, and records 1..=100 stay reachable.
    #[test]
    fn map_reaches_records_before_the_first_run() {
        let map = SequenceMap::from_runs(&[run(101, 200)]).unwrap();
        assert_eq!(map.append_seq(1), 1);
        assert_eq!(map.append_seq(100), 100);
        assert_eq!(map.append_seq(101), 200);
        assert_eq!(map.log_seq_after(0), 1);
        assert_eq!(map.log_seq_after(99), 100);
        assert_eq!(map.log_seq_after(100), 101);
        assert_eq!(map.log_seq_after(150), 101);
        assert_eq!(map.log_seq_after(200), 102);

        let map = SequenceMap::from_runs(&[run(1, 57), run(4, 70)]).unwrap();
        assert_eq!([1, 3, 4, 6].map(|l| map.append_seq(l)), [57, 59, 70, 72]);
        assert_eq!(
            [0, 56, 57, 59, 65, 70].map(|a| map.log_seq_after(a)),
            [1, 1, 2, 4, 4, 5]
        );
        assert_eq!(SequenceMap::default().log_seq_after(9), 10);
        assert_eq!(SequenceMap::default().log_seq_after(u64::MAX), u64::MAX);
    }

    /// [STORE-02] Runs that break an invariant are refused, naming the run: a zero
    /// sequence, a log sequence that does not increase, an append sequence that does not
    /// jump forward (`101 200` edited to `101 100`).
    #[test]
    fn invalid_runs_are_refused() {
        for (runs, what) in [
            (vec![run(1, 0)], "zero sequence"),
            (vec![run(0, 5)], "zero sequence"),
            (
                vec![run(101, 100)],
                "does not move append sequences forward",
            ),
            (
                vec![run(101, 101)],
                "does not move append sequences forward",
            ),
            (vec![run(5, 10), run(5, 20)], "does not start after"),
            (vec![run(5, 10), run(3, 20)], "does not start after"),
            (
                vec![run(5, 10), run(8, 12)],
                "does not move append sequences forward",
            ),
            (vec![run(5, u64::MAX)], "largest append sequence"),
        ] {
            let error = SequenceMap::from_runs(&runs).unwrap_err().to_string();
            assert!(error.contains(what), "{runs:?}: {error}");
        }
        assert!(SequenceMap::from_runs(&[run(1, 1)]).is_ok());
        assert!(SequenceMap::from_runs(&[run(1, 57), run(2, 99)]).is_ok());
    }

    /// [STORE-01] [STORE-02] One changed byte anywhere is refused: the checksum, the length
    /// or the magic catches it.
    #[test]
    fn damaged_files_are_refused() {
        let bytes = SequenceMap::from_runs(&[run(101, 200), run(150, 400)])
            .unwrap()
            .encode();
        assert_eq!(bytes.len(), 16 + 2 * 16 + 4);
        for at in 0..bytes.len() {
            for mask in [0x01, 0x80] {
                let mut damaged = bytes.clone();
                damaged[at] ^= mask;
                assert!(
                    SequenceMap::decode(&damaged).is_err(),
                    "byte {at} ^ {mask:#x}"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(SequenceMap::decode(&bytes[..len]).is_err(), "length {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            SequenceMap::decode(&longer),
            Err(MetaError::Length { .. })
        ));
    }

    /// [STORE-01] A newer layout version is refused naming both versions, even with a valid
    /// checksum.
    #[test]
    fn newer_versions_are_refused() {
        let mut bytes = SequenceMap::default().encode();
        bytes[8] = 3;
        let len = bytes.len();
        let crc = crc32fast::hash(&bytes[..len - 4]);
        bytes[len - 4..].copy_from_slice(&crc.to_le_bytes());
        let error = SequenceMap::decode(&bytes).unwrap_err();
        assert_eq!(
            error,
            MetaError::UnsupportedVersion {
                found: 3,
                supported: 2
            }
        );
        assert!(error.to_string().contains("version 3"));
    }

    /// [STORE-05] Version 1 text files still open, validated: a run list in the order the
    /// old writer added it (including a run that replaced stale ones after a torn tail) is
    /// replayed; a hand-edited run that moves append sequences backwards, a zero sequence
    /// or a malformed line is refused.
    #[test]
    fn version_1_text_files_are_read_and_validated() {
        let decode = |text: &str| SequenceMap::decode(text.as_bytes());
        let (map, layout) = decode("esl-replay store\nversion 1\n101 200\n").unwrap();
        assert_eq!(layout, Layout::LegacyText);
        assert_eq!(map.runs(), [run(101, 200)]);
        let (map, _) = decode("esl-replay store\nversion 1\n\n").unwrap();
        assert_eq!(map, SequenceMap::default());
        // A stale run (150) replaced by one at 120, and one (160 -> 171) that the old writer
        // added although it only continued the previous run.
        let (map, _) =
            decode("esl-replay store\nversion 1\n101 200\n150 500\n120 600\n160 640\n").unwrap();
        assert_eq!(map.runs(), [run(101, 200), run(120, 600)]);
        for (text, what) in [
            ("esl-replay store\nversion 1\n101 100\n", "forward"),
            ("esl-replay store\nversion 1\n1 0\n", "zero"),
            ("esl-replay store\nversion 1\n101 x\n", "line 3"),
            ("esl-replay store\nversion 7\n", "version 7"),
            ("esl-replay stor\nversion 1\n", "magic"),
        ] {
            let error = decode(text).unwrap_err().to_string();
            assert!(error.contains(what), "{text:?}: {error}");
        }
    }

    /// Appends that follow the mapping add no run; a jump adds one; continuing where a
    /// torn tail cut the log forgets the runs of the lost records.
    #[test]
    fn continuing_adds_runs_only_at_jumps() {
        let mut map = SequenceMap::default();
        for (log_seq, append_seq) in [(1, 1), (2, 10), (3, 11), (4, 20)] {
            map.continue_at(log_seq, append_seq);
        }
        assert_eq!(map.runs(), [run(2, 10), run(4, 20)]);
        // The record at 4 was lost; 4 now gets 12, following the run at 2.
        map.continue_at(4, 12);
        assert_eq!(map.runs(), [run(2, 10)]);
        let mut map = SequenceMap::default();
        map.continue_at(1, 57);
        assert_eq!(map.runs(), [run(1, 57)]);
        map.continue_at(1, 3);
        assert_eq!(map.runs(), [run(1, 3)]);
        map.continue_at(1, 1);
        assert_eq!(map, SequenceMap::default());
    }

    /// A map of [`MAX_RUNS`] runs is the largest whose file a store reads back.
    #[test]
    fn the_most_runs_a_writer_keeps_fit_the_file_a_reader_accepts() {
        let mut map = SequenceMap::default();
        for log_seq in 1..=MAX_RUNS as u64 {
            map.continue_at(log_seq, 2 * log_seq);
        }
        assert_eq!(map.runs().len(), MAX_RUNS);
        assert!(map.encode().len() as u64 <= MAX_FILE_BYTES);
        map.continue_at(MAX_RUNS as u64 + 1, 2 * MAX_RUNS as u64 + 2);
        assert!(map.encode().len() as u64 > MAX_FILE_BYTES);
    }
}
