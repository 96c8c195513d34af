//! Model-based tests: the log must always agree with a plain in-memory model.
//!
//! quickcheck generates random sequences of operations (append, batch append, rejected
//! oversized appends, sync, wait for durability, roll, prefix truncation in and beyond
//! range, clean reopen, simulated process crash, read-only followers, cursors and point
//! reads from random positions) and runs each against a real log in a temporary directory
//! and against the model: a `Vec` of payloads indexed by sequence plus the logical start.
//! After every operation the first and next sequences, every record (through `iter`, `get`
//! and a long-lived lending cursor) and the segment files present must match the model. A
//! simulated crash keeps the page cache, as a killed process does, so nothing appended may
//! be lost across it. Reopens pick a random read strategy. Logs use 64 KiB segments so rolls
//! happen every few dozen records, skip syncs and live in memory (`/dev/shm`) when possible:
//! page-cache semantics are all a process-level model can observe, and `storage_faults.rs`
//! and `storage_crash.rs` cover syncs. `ESL_REPLAY_MODEL_TESTS` sets the number of cases.
//!
//! The plain tests below the property pin down individual guarantees: sequences never
//! restart, and the mmap and pread read strategies return identical records.

use std::path::Path;
use std::time::Duration;

use esl_replay::storage::{
    Cursor, Error, Log, LogOptions, ReadStrategy, Reader, RecoveryReport, Seq, SyncPolicy,
};
use quickcheck::{Arbitrary, Gen, QuickCheck, TestResult};

use crate::support;
use crate::support::process::open_log;
use crate::support::storage::{
    MAX_PAYLOAD, fast_options, payload_of_len, scratch_dir, segment_bases,
};

/// Fails the property with a message naming what disagreed.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Converts a storage result into the property's error type, naming the operation.
trait Context<T> {
    fn context(self, what: &str) -> Result<T, String>;
}

impl<T> Context<T> for Result<T, Error> {
    fn context(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e} ({e:?})"))
    }
}

/// A payload length: mostly small, sometimes zero, sometimes up to the maximum.
#[derive(Clone, Copy, Debug)]
struct Len(u16);

impl Arbitrary for Len {
    fn arbitrary(g: &mut Gen) -> Len {
        let pick = u8::arbitrary(g) % 20;
        let len = match pick {
            0 => 0,
            1..=13 => u16::arbitrary(g) % 200,
            14..=17 => 200 + u16::arbitrary(g) % 1800,
            _ => u16::arbitrary(g) % (MAX_PAYLOAD as u16 + 1),
        };
        Len(len)
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Len>> {
        Box::new(self.0.shrink().map(Len))
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append(Len),
    Batch(Vec<Len>),
    /// An append of `max_payload_bytes + 1` bytes: refused, consumes no sequence.
    RejectedAppend,
    /// A batch with one oversized payload at this position: refused as a whole.
    RejectedBatch(Vec<Len>, u8),
    Sync,
    WaitDurable,
    /// Appends large records until the log rolls to a new segment.
    Roll,
    /// Truncates to a point this fraction (of 255) into the visible range.
    Truncate(u8),
    /// Truncates to beyond the next sequence: refused.
    TruncateBeyondEnd(u8),
    /// Closes cleanly and reopens.
    Reopen(Strategy),
    /// Simulates a process crash and reopens.
    Crash(Strategy),
    /// Opens a read-only follower beside the writer and compares its view.
    Follower(Strategy),
    /// Reads with a new cursor and `get` from this fraction of the range.
    ReadFrom(u8),
}

#[derive(Clone, Copy, Debug)]
struct Strategy(ReadStrategy);

impl Arbitrary for Strategy {
    fn arbitrary(g: &mut Gen) -> Strategy {
        Strategy(if bool::arbitrary(g) {
            ReadStrategy::Mmap
        } else {
            ReadStrategy::Pread
        })
    }
}

fn small_vec<T: Arbitrary>(g: &mut Gen, max: usize) -> Vec<T> {
    let n = 1 + usize::arbitrary(g) % max;
    (0..n).map(|_| T::arbitrary(g)).collect()
}

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        match u8::arbitrary(g) % 100 {
            0..=29 => Op::Append(Len::arbitrary(g)),
            30..=44 => Op::Batch(small_vec(g, 8)),
            45..=47 => Op::RejectedAppend,
            48..=50 => Op::RejectedBatch(small_vec(g, 4), u8::arbitrary(g)),
            51..=55 => Op::Sync,
            56..=59 => Op::WaitDurable,
            60..=67 => Op::Roll,
            68..=75 => Op::Truncate(u8::arbitrary(g)),
            76..=77 => Op::TruncateBeyondEnd(u8::arbitrary(g)),
            78..=83 => Op::Reopen(Strategy::arbitrary(g)),
            84..=89 => Op::Crash(Strategy::arbitrary(g)),
            90..=93 => Op::Follower(Strategy::arbitrary(g)),
            _ => Op::ReadFrom(u8::arbitrary(g)),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Op>> {
        match self {
            Op::Batch(lens) => Box::new(lens.shrink().filter(|l| !l.is_empty()).map(Op::Batch)),
            Op::Append(len) => Box::new(len.shrink().map(Op::Append)),
            _ => Box::new(std::iter::empty()),
        }
    }
}

/// One generated case: the sync policy the log is opened with, and the operations.
#[derive(Clone, Debug)]
struct Case {
    policy: u8,
    strategy: Strategy,
    ops: Vec<Op>,
}

impl Arbitrary for Case {
    fn arbitrary(g: &mut Gen) -> Case {
        Case {
            policy: u8::arbitrary(g) % 5,
            strategy: Strategy::arbitrary(g),
            ops: Vec::arbitrary(g),
        }
    }

    fn shrink(&self) -> Box<dyn Iterator<Item = Case>> {
        let (policy, strategy) = (self.policy, self.strategy);
        Box::new(self.ops.shrink().map(move |ops| Case {
            policy,
            strategy,
            ops,
        }))
    }
}

fn policy(choice: u8) -> SyncPolicy {
    match choice {
        0 => SyncPolicy::EveryAppend,
        1 => SyncPolicy::default(),
        2 => SyncPolicy::GroupCommit {
            max_delay: Duration::from_micros(200),
            max_bytes: 16 << 10,
        },
        3 => SyncPolicy::Periodic {
            interval: Duration::from_millis(2),
        },
        _ => SyncPolicy::OsOnly,
    }
}

/// The reference: payloads by sequence (sequence `s` at index `s - 1`) and the logical start.
#[derive(Debug, Default)]
struct Model {
    records: Vec<Vec<u8>>,
    start: u64,
}

impl Model {
    fn next(&self) -> u64 {
        self.records.len() as u64 + 1
    }

    fn first(&self) -> u64 {
        self.start.max(1).min(self.next())
    }

    fn get(&self, seq: u64) -> Option<&[u8]> {
        if seq < self.first() || seq == 0 {
            return None;
        }
        self.records.get((seq - 1) as usize).map(Vec::as_slice)
    }

    /// The payload the next append gets: derived from its sequence and length, so a printed
    /// counterexample reproduces exactly.
    fn payload(&self, len: Len) -> Vec<u8> {
        payload_of_len(self.next(), usize::from(len.0))
    }

    /// A sequence `fraction / 255` of the way from 0 to two past the end.
    fn point(&self, fraction: u8) -> u64 {
        (self.next() + 2) * u64::from(fraction) / 255
    }
}

/// The state one case runs against.
struct Harness<'a> {
    dir: &'a Path,
    options: LogOptions,
    log: Option<Log>,
    reader: Reader,
    model: Model,
    /// A cursor kept across operations and the sequence it should yield next.
    cursor: Cursor,
    cursor_at: u64,
}

impl Harness<'_> {
    fn log(&mut self) -> &mut Log {
        self.log
            .as_mut()
            .expect("the harness always holds an open log")
    }

    fn append(&mut self, len: Len) -> Result<(), String> {
        let payload = self.model.payload(len);
        let expected = self.model.next();
        let seq = self.log().append(&payload).context("append")?;
        ensure!(
            seq == Seq(expected),
            "append got {seq}, model says {expected}"
        );
        self.model.records.push(payload);
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Append(len) => self.append(*len)?,
            Op::Batch(lens) => {
                let first = self.model.next();
                let mut payloads = Vec::new();
                for (i, len) in lens.iter().enumerate() {
                    payloads.push(payload_of_len(first + i as u64, usize::from(len.0)));
                }
                let range = self.log().append_batch(&payloads).context("append_batch")?;
                let end = first + payloads.len() as u64;
                ensure!(
                    range == (Seq(first)..Seq(end)),
                    "batch got {range:?}, model says {first}..{end}"
                );
                self.model.records.extend(payloads);
            }
            Op::RejectedAppend => {
                let payload = vec![7u8; MAX_PAYLOAD as usize + 1];
                match self.log().append(&payload) {
                    Err(Error::PayloadTooLarge { len, max }) => {
                        ensure!(
                            len == u64::from(MAX_PAYLOAD) + 1 && max == u64::from(MAX_PAYLOAD),
                            "PayloadTooLarge names {len} and {max}"
                        );
                    }
                    other => return Err(format!("oversized append gave {other:?}")),
                }
            }
            Op::RejectedBatch(lens, at) => {
                let mut payloads: Vec<Vec<u8>> = lens
                    .iter()
                    .map(|l| payload_of_len(99, usize::from(l.0)))
                    .collect();
                let at = usize::from(*at) % (payloads.len() + 1);
                payloads.insert(at, vec![1u8; MAX_PAYLOAD as usize + 1]);
                let result = self.log().append_batch(&payloads);
                ensure!(
                    matches!(result, Err(Error::PayloadTooLarge { .. })),
                    "batch with an oversized payload gave {result:?}"
                );
            }
            Op::Sync => {
                self.log().sync().context("sync")?;
                let durable = self.log().durability().durable_seq();
                let next = self.model.next();
                ensure!(
                    durable == Seq(next),
                    "after sync durable_seq is {durable}, next is {next}"
                );
            }
            Op::WaitDurable => {
                let next = self.model.next();
                if next > 1 {
                    self.log()
                        .wait_durable(Seq(next - 1))
                        .context("wait_durable")?;
                    let durable = self.log().durability().durable_seq();
                    ensure!(
                        durable >= Seq(next),
                        "after wait_durable({}) durable_seq is {durable}",
                        next - 1
                    );
                }
            }
            Op::Roll => {
                let segment = self.log().active_segment();
                let mut appended = 0;
                while self.log().active_segment() == segment {
                    ensure!(
                        appended < 64,
                        "64 large appends did not roll a 64 KiB segment"
                    );
                    let len = 4000 + (self.model.next() * 97 % 4000) as u16;
                    self.append(Len(len))?;
                    appended += 1;
                }
                let bases = self.reader.segments();
                ensure!(
                    bases.last().map(|s| s.0) == Some(self.model.next() - 1),
                    "after a roll the last segment starts at {:?}, expected the rolled record {}",
                    bases.last(),
                    self.model.next() - 1
                );
            }
            Op::Truncate(fraction) => {
                let before = self.model.point(*fraction).min(self.model.next());
                let old = self.model.start.max(1);
                let report = self
                    .log()
                    .truncate_prefix(Seq(before))
                    .context("truncate_prefix")?;
                self.model.start = old.max(before);
                ensure!(
                    report.start == Seq(self.model.start) && report.moved == (before > old),
                    "truncate_prefix({before}) from {old} reported {report:?}"
                );
                self.check_segments_after_truncation()?;
            }
            Op::TruncateBeyondEnd(extra) => {
                let next = self.model.next();
                let before = next + 1 + u64::from(*extra);
                match self.log().truncate_prefix(Seq(before)) {
                    Err(Error::OutOfRange {
                        requested,
                        first,
                        next: reported,
                    }) => {
                        ensure!(
                            requested == Seq(before)
                                && first == Seq(self.model.first())
                                && reported == Seq(next),
                            "OutOfRange names {requested}, {first}, {reported}"
                        );
                    }
                    other => return Err(format!("truncate_prefix({before}) gave {other:?}")),
                }
            }
            Op::Reopen(strategy) => {
                let log = self.log.take().expect("an open log");
                log.close().context("close")?;
                let report = self.reopen(*strategy)?;
                ensure!(
                    report.clean_shutdown && report.scanned_bytes == 0,
                    "a clean close must reopen without a scan [REC-01]: {report:?}"
                );
            }
            Op::Crash(strategy) => {
                let log = self.log.take().expect("an open log");
                log.flush().unwrap();
                log.simulate_crash();
                let report = self.reopen(*strategy)?;
                ensure!(
                    !report.clean_shutdown && report.torn_tail.is_none(),
                    "a crash that kept the page cache reopened as {report:?}"
                );
            }
            Op::Follower(strategy) => {
                let options = LogOptions {
                    read_strategy: strategy.0,
                    ..self.options.clone()
                };
                let follower = Reader::open(self.dir, &options).context("Reader::open")?;
                self.compare("follower", &follower)?;
            }
            Op::ReadFrom(fraction) => {
                let from = self.model.point(*fraction);
                let mut cursor = self.reader.cursor(Seq(from)).context("cursor")?;
                let mut expected = from.max(self.model.first());
                while let Some(record) = cursor.next().context("cursor.next")? {
                    ensure!(
                        record.seq == Seq(expected)
                            && Some(record.payload) == self.model.get(expected),
                        "cursor from {from} yielded {} where the model has {expected}",
                        record.seq
                    );
                    expected += 1;
                }
                ensure!(
                    expected == self.model.next().max(from.max(self.model.first())),
                    "cursor from {from} stopped at {expected}"
                );
                let got = self.reader.get(Seq(from)).context("get")?;
                ensure!(
                    got.as_deref() == self.model.get(from),
                    "get({from}) disagrees with the model"
                );
            }
        }
        Ok(())
    }

    fn reopen(&mut self, strategy: Strategy) -> Result<RecoveryReport, String> {
        self.options.read_strategy = strategy.0;
        let (log, report) = open_log(self.dir, self.options.clone()).context("reopen")?;
        ensure!(
            report.next_seq == self.model.next() && report.first_seq == self.model.first(),
            "reopened at {}..{}, model has {}..{}",
            report.first_seq,
            report.next_seq,
            self.model.first(),
            self.model.next()
        );
        self.reader = log.reader();
        self.log = Some(log);
        // Below the start the model has nothing, so start the long-lived cursor anywhere.
        self.cursor_at = self.model.first().saturating_sub(3).max(1);
        self.cursor = self.reader.cursor(Seq(self.cursor_at)).context("cursor")?;
        self.check_segments_after_truncation()?;
        Ok(report)
    }

    /// No segment file lies wholly below the start, and the segment holding the start (or
    /// the last one) is kept [TRUNC-01] [TRUNC-03].
    fn check_segments_after_truncation(&self) -> Result<(), String> {
        let known: Vec<u64> = self.reader.segments().iter().map(|s| s.0).collect();
        let files = segment_bases(self.dir);
        ensure!(
            known == files,
            "reader knows segments {known:?}, directory holds {files:?}"
        );
        let start = self.model.first();
        ensure!(
            known.first().is_some_and(|first| *first <= start),
            "first segment {:?} starts after the start {start}",
            known.first()
        );
        ensure!(
            known.get(1).is_none_or(|second| *second > start),
            "segment {:?} lies wholly below the start {start}",
            known.first()
        );
        Ok(())
    }

    /// The reader's view equals the model: bounds, every record, and point reads at the
    /// edges.
    fn compare(&self, who: &str, reader: &Reader) -> Result<(), String> {
        let (first, next) = (self.model.first(), self.model.next());
        let got_next = reader.next_seq().context("next_seq")?;
        ensure!(
            reader.first_seq() == Seq(first) && got_next == Seq(next),
            "{who} holds {}..{got_next}, model has {first}..{next}",
            reader.first_seq()
        );
        let mut expected = first;
        for item in reader.iter(Seq(1)).context("iter")? {
            let (seq, payload) = item.context("iter item")?;
            ensure!(
                seq == Seq(expected) && Some(payload.as_slice()) == self.model.get(expected),
                "{who} iter yielded {seq} where the model has {expected}"
            );
            expected += 1;
        }
        ensure!(
            expected == next,
            "{who} iter stopped at {expected}, model next {next}"
        );
        for seq in [first.saturating_sub(1), first, next - 1, next, next + 1] {
            let got = reader.get(Seq(seq)).context("get")?;
            ensure!(
                got.as_deref() == self.model.get(seq),
                "{who} get({seq}) disagrees with the model"
            );
        }
        Ok(())
    }

    /// After every operation: the writer, its reader and the long-lived cursor agree with
    /// the model. The cursor yields every record from where it stood, or jumps to the start
    /// when a truncation passed it [RD-03].
    fn check(&mut self) -> Result<(), String> {
        let next = self.model.next();
        ensure!(
            self.log().next_seq() == Seq(next),
            "log.next_seq {} but model next {next}",
            self.log().next_seq()
        );
        self.compare("writer's reader", &self.reader)?;
        loop {
            let expected = self.cursor_at.max(self.model.first());
            let Some(record) = self.cursor.next().context("long-lived cursor")? else {
                ensure!(
                    expected == next,
                    "long-lived cursor ended at {expected}, model next {next}"
                );
                return Ok(());
            };
            ensure!(
                record.seq == Seq(expected) && Some(record.payload) == self.model.get(expected),
                "long-lived cursor yielded {} where the model has {expected}",
                record.seq
            );
            self.cursor_at = expected + 1;
        }
    }
}

fn run(case: &Case) -> Result<(), String> {
    let dir = scratch_dir();
    let options = LogOptions {
        sync_policy: policy(case.policy),
        read_strategy: case.strategy.0,
        ..fast_options()
    };
    let (log, report) = open_log(dir.path(), options.clone()).context("open")?;
    ensure!(
        report.next_seq == 1 && report.first_seq == 1,
        "a new log opened as {report:?} [LOG-01]"
    );
    let reader = log.reader();
    let cursor = reader.cursor(Seq(1)).context("cursor")?;
    let mut harness = Harness {
        dir: dir.path(),
        options,
        log: Some(log),
        reader,
        model: Model::default(),
        cursor,
        cursor_at: 1,
    };
    for (i, op) in case.ops.iter().enumerate() {
        harness
            .apply(op)
            .and_then(|()| harness.check())
            .map_err(|e| format!("operation {i} ({op:?}): {e}"))?;
    }
    let log = harness.log.take().expect("an open log");
    log.close().context("final close")?;
    Ok(())
}

fn property(case: Case) -> TestResult {
    match run(&case) {
        Ok(()) => TestResult::passed(),
        Err(message) => TestResult::error(message),
    }
}

/// [LOG-01] [RD-02] [RD-03] [REC-01] [TRUNC-01] [TRUNC-03] [DUR-02] [DUR-03] Random
/// operation sequences (append, batch, rejected appends, sync, roll, truncation, reopen,
/// crash, followers, reads) always leave the log agreeing with the in-memory model.
#[test]
fn log_agrees_with_model_under_random_operation_sequences() {
    let tests = std::env::var("ESL_REPLAY_MODEL_TESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000);
    QuickCheck::new()
        .tests(tests)
        .max_tests(tests * 10)
        .rng(Gen::new(48))
        .quickcheck(property as fn(Case) -> TestResult);
}

/// [LOG-01] Sequences never restart: not after a clean reopen, not after a crash, not after
/// truncating everything (even across a reopen), and a refused append consumes none.
#[test]
fn sequences_never_restart_after_reopen_truncation_or_failed_append() {
    let dir = scratch_dir();
    let options = fast_options();
    let (mut log, _) = open_log(dir.path(), options.clone()).unwrap();
    for i in 0..100u64 {
        assert_eq!(log.append(&payload_of_len(i, 900)).unwrap(), Seq(i + 1));
    }
    assert!(matches!(
        log.append(&vec![0; MAX_PAYLOAD as usize + 1]),
        Err(Error::PayloadTooLarge { .. })
    ));
    assert!(matches!(
        log.append_batch(&[vec![1u8; 10], vec![0; MAX_PAYLOAD as usize + 1]]),
        Err(Error::PayloadTooLarge { .. })
    ));
    assert_eq!(
        log.next_seq(),
        Seq(101),
        "refused appends consumed a sequence"
    );
    assert_eq!(log.append(b"after refusal").unwrap(), Seq(101));

    let report = log.truncate_prefix(Seq(102)).unwrap();
    assert_eq!(report.start, Seq(102));
    assert!(report.segments_removed > 0, "{report:?}");
    let reader = log.reader();
    assert_eq!(reader.first_seq(), Seq(102));
    assert_eq!(reader.next_seq().unwrap(), Seq(102));
    assert_eq!(reader.iter(Seq(1)).unwrap().count(), 0);
    assert_eq!(
        log.append(b"after truncating everything").unwrap(),
        Seq(102)
    );

    log.close().unwrap();
    let (log, report) = open_log(dir.path(), options.clone()).unwrap();
    assert_eq!((report.first_seq, report.next_seq), (102, 103));
    assert!(log.truncate_prefix(Seq(103)).unwrap().moved);
    log.flush().unwrap();
    log.simulate_crash();

    let (mut log, report) = open_log(dir.path(), options.clone()).unwrap();
    assert_eq!(
        (report.first_seq, report.next_seq),
        (103, 103),
        "{report:?}"
    );
    assert_eq!(log.append(b"after a crash").unwrap(), Seq(103));
    assert_eq!(log.reader().get(Seq(102)).unwrap(), None);
    assert_eq!(
        log.reader().get(Seq(103)).unwrap().as_deref(),
        Some(&b"after a crash"[..])
    );
}

/// [RD-01] [RD-02] The mmap and pread read strategies return identical records, plain and
/// compressed, through the writer's readers and through read-only followers, from every
/// starting sequence.
#[test]
fn mmap_and_pread_read_strategies_return_identical_records() {
    let dir = scratch_dir();
    let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
    let seed = 0x5eed;
    for seq in 1..=600u64 {
        log.append(&support::storage::payload(seed, seq, MAX_PAYLOAD as usize))
            .unwrap();
    }
    log.truncate_prefix(Seq(40)).unwrap();
    let with = |strategy| LogOptions {
        read_strategy: strategy,
        ..fast_options()
    };
    let followers = [
        Reader::open(dir.path(), &with(ReadStrategy::Mmap)).unwrap(),
        Reader::open(dir.path(), &with(ReadStrategy::Pread)).unwrap(),
    ];
    let writer_view = support::storage::read_all(&log.reader());
    assert_eq!(writer_view.len(), 561);
    for (seq, payload) in &writer_view {
        assert_eq!(
            payload,
            &support::storage::payload(seed, *seq, MAX_PAYLOAD as usize),
            "record {seq}"
        );
    }
    for follower in &followers {
        assert_eq!(support::storage::read_all(follower), writer_view);
    }
    log.close().unwrap();

    let mut views = Vec::new();
    for strategy in [ReadStrategy::Mmap, ReadStrategy::Pread] {
        let (log, _) = open_log(dir.path(), with(strategy)).unwrap();
        let reader = log.reader();
        assert_eq!(
            support::storage::read_all(&reader),
            writer_view,
            "{strategy:?}"
        );
        let mut per_start = Vec::new();
        for from in (1..=601).step_by(7) {
            let mut cursor = reader.cursor(Seq(from)).unwrap();
            let mut seen = Vec::new();
            while let Some(record) = cursor.next().unwrap() {
                seen.push((record.seq, support::storage::checksum(record.payload)));
            }
            per_start.push((from, seen, reader.get(Seq(from)).unwrap()));
        }
        views.push(per_start);
        log.close().unwrap();
    }
    assert_eq!(views[0], views[1], "mmap and pread disagree");
    for follower in &followers {
        assert_eq!(support::storage::read_all(follower), writer_view);
    }
}

/// [RD-01] A read-only open of a directory without segments is refused as not a log.
#[test]
fn read_only_open_of_an_empty_directory_is_not_a_log() {
    let dir = scratch_dir();
    match Reader::open(dir.path(), &fast_options()) {
        Err(Error::NotALog { dir: named }) => assert_eq!(named, dir.path()),
        other => panic!("expected NotALog, got {other:?}"),
    }
}
