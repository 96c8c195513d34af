//! Fault injection through the `Io` seam: failed writes and syncs, dead disks, `ENOSPC`,
//! short, interrupted and zero-length writes, and failed removals.
//!
//! `support::storage::FaultyIo` wraps the real file system and fails the N-th write, sync or removal
//! (once, or from then on), or answers writes to a chosen file with `ENOSPC`. The
//! enumeration tests run one workload (appends and batches across several segment rolls, a
//! wait for durability, a sync, a prefix truncation and a clean close) once per possible
//! failure point. Whatever fails, the error must surface, a failed data sync must poison
//! the log, and reopening on a healthy disk must recover every record acknowledged as
//! durable, intact and with contiguous sequences, and nothing that was never appended. Since
//! the process survives, the page cache does too, so even records not yet durable must
//! survive a reopen; only a record whose own append failed may or may not be there. The
//! targeted tests check each failure mode's specific promise: poisoning until reopen,
//! `ENOSPC` on the next segment's preallocation consuming no sequence, short writes being
//! completed, an interrupted truncation being finished on reopen, and a roll that waited
//! for a failing write of the flusher thread writing no seal past the hole it left.

use std::path::Path;
use std::sync::Arc;

use esl_replay::storage::codec::{DURABLE_FILE, SPARE_FILE, decode_index_file, index_path};
use esl_replay::storage::{
    Error, IoOp, Log, LogOptions, Reader, SegmentId, Seq, StdIo, SyncPolicy,
};

use crate::support;
use crate::support::process::open_log;
use crate::support::storage::{
    FaultyIo, NoSyncIo, OpKind, Plan, SEGMENT_BYTES, fast_options, frames_of, read_all,
    scratch_dir, segment_bases, segment_file, small_options, temp_dir, with_io, with_policy,
};

/// The payload of record `seq` in every log of this file: long enough that a few dozen
/// records fill a 64 KiB segment.
fn payload(seq: u64) -> Vec<u8> {
    support::storage::payload_of_len(seq, 1400 + (seq as usize * 37) % 1200)
}

/// What the workload got acknowledged before it stopped.
#[derive(Debug)]
struct Outcome {
    /// Every sequence below this was acknowledged durable.
    durable: u64,
    /// Every sequence below this was appended successfully.
    appended: u64,
    /// The log's next sequence when the workload stopped (a failed append may have written
    /// its record without acknowledging it).
    attempted: u64,
    /// The start after the last truncation that succeeded.
    truncated: u64,
    /// The largest start a truncation was asked for (a failed one may have moved it).
    requested: u64,
    /// The first error, from the workload or from the close.
    error: Option<Error>,
    /// Whether an append after the error was refused as poisoned.
    poisoned_after: Option<bool>,
    /// The most segments the log had at once.
    segments: usize,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            durable: 1,
            appended: 1,
            attempted: 1,
            truncated: 1,
            requested: 1,
            error: None,
            poisoned_after: None,
            segments: 0,
        }
    }
}

const STEPS: u64 = 90;

fn drive(log: &mut Log, out: &mut Outcome, policy: SyncPolicy) -> Result<(), Error> {
    let every_append = policy == SyncPolicy::EveryAppend;
    for step in 0..STEPS {
        let next = log.next_seq().0;
        match step % 5 {
            0..=2 => {
                let seq = log.append(&payload(next))?;
                assert_eq!(seq, Seq(next));
                out.appended = next + 1;
            }
            3 => {
                let payloads: Vec<Vec<u8>> = (next..next + 3).map(payload).collect();
                let range = log.append_batch(&payloads)?;
                assert_eq!(range, Seq(next)..Seq(next + 3));
                out.appended = next + 3;
            }
            _ => {
                log.wait_durable(Seq(next - 1))?;
                out.durable = next;
            }
        }
        if every_append {
            out.durable = out.appended;
        }
        if step == 50 {
            log.sync()?;
            out.durable = out.appended;
        }
        out.segments = out.segments.max(log.reader().segments().len());
        if step == 60 {
            let before = log.next_seq().0 - 12;
            out.requested = before;
            let report = log.truncate_prefix(Seq(before))?;
            assert_eq!(report.start, Seq(before));
            out.truncated = before;
        }
    }
    Ok(())
}

/// Runs the workload on a fresh log in `dir` through `io`.
fn workload(dir: &Path, io: Arc<FaultyIo>, policy: SyncPolicy) -> Outcome {
    let mut out = Outcome::new();
    // Plain frames keep the workload's byte volume (and so its rolls) fixed.
    let options = LogOptions {
        compress_min_bytes: None,
        // Truncations keep segment files for reuse, so failures meet that path too [SEG-10].
        recycle_segments: true,
        ..with_policy(with_io(small_options(), io.clone()), policy)
    };
    let (mut log, _) = match open_log(dir, options) {
        Ok(opened) => opened,
        Err(error) => {
            out.error = Some(error);
            return out;
        }
    };
    match drive(&mut log, &mut out, policy) {
        Ok(()) => match log.close() {
            Ok(()) => {
                out.durable = out.appended;
                out.attempted = out.appended;
            }
            Err(error) => {
                out.attempted = out.appended;
                out.error = Some(error);
            }
        },
        Err(error) => {
            out.attempted = log.next_seq().0;
            out.error = Some(error);
            // Once a segment sync has failed, appends must be refused as poisoned [DUR-04]. A
            // retry may itself meet the first such failure (a dead disk), so retry twice.
            for _ in 0..2 {
                let failed_sync = io
                    .injected()
                    .iter()
                    .any(support::storage::Injected::is_segment_sync);
                if failed_sync {
                    // The sync thread records the failure just before it poisons the log.
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                    while log.durability().check().is_ok() && std::time::Instant::now() < deadline {
                        std::thread::yield_now();
                    }
                }
                let retry = log.append(b"after the failure");
                out.attempted = log.next_seq().0;
                if failed_sync {
                    out.poisoned_after = Some(matches!(retry, Err(Error::Poisoned { .. })));
                    break;
                }
            }
            drop(log);
        }
    }
    out
}

/// Reopens `dir` on a healthy disk and checks it against what the workload was told.
fn check_recovery(dir: &Path, out: &Outcome, case: &str) {
    let (mut log, report) = open_log(dir, fast_options())
        .unwrap_or_else(|e| panic!("{case}: reopening on a healthy disk failed: {e}; {out:?}"));
    let (first, next) = (report.first_seq, report.next_seq);
    // Sequences written in the tolerated after-failure append are not part of the payload
    // scheme, so only compare those the workload wrote. Records appended but never synced
    // may be gone, as after a crash: a failed write of staged frames poisons the log before
    // they reach the file [LOG-02].
    assert!(
        next >= out.durable && next <= out.attempted.max(out.appended),
        "{case}: reopened with next {next}; {out:?}"
    );
    assert!(
        first >= out.truncated && first <= out.requested.max(out.truncated),
        "{case}: reopened with first {first}; {out:?}"
    );
    let mut expected = first;
    for item in log.reader().iter(Seq(1)).unwrap() {
        let (seq, bytes) = item.unwrap_or_else(|e| panic!("{case}: reading failed: {e}"));
        assert_eq!(seq, Seq(expected), "{case}: sequences are not contiguous");
        if seq.0 < out.appended || bytes != b"after the failure" {
            assert!(
                bytes == payload(seq.0),
                "{case}: record {seq} is not what was appended"
            );
        }
        expected += 1;
    }
    assert_eq!(expected, next, "{case}: records end before next_seq");
    assert_eq!(log.append(b"after recovery").unwrap(), Seq(next), "{case}");
    log.close().unwrap();
}

/// Checks what a run with injected failures must show beyond recovery: a failed segment
/// sync surfaces as an error and poisons the log [DUR-04].
fn check_surfaced(io: &FaultyIo, out: &Outcome, case: &str) {
    let injected = io.injected();
    if injected
        .first()
        .is_some_and(support::storage::Injected::is_segment_sync)
    {
        // With a dead disk (sticky), the workload's own next sync (of a file or of the
        // directory) may fail before it sees the poisoning the sync thread is recording.
        assert!(
            matches!(
                out.error,
                Some(
                    Error::Poisoned { .. }
                        | Error::Io {
                            op: IoOp::Sync | IoOp::SyncDir,
                            ..
                        }
                )
            ),
            "{case}: a failed segment sync surfaced as {:?}",
            out.error
        );
    }
    if injected
        .iter()
        .any(support::storage::Injected::is_segment_sync)
    {
        assert!(
            out.error.is_some(),
            "{case}: a failed segment sync went unreported"
        );
        assert_ne!(
            out.poisoned_after,
            Some(false),
            "{case}: appends continued after a failed segment sync"
        );
    }
    if injected.is_empty() {
        assert!(
            out.error.is_none(),
            "{case}: error without a fault: {out:?}"
        );
    }
}

/// Enumerates every write and sync failure point of the workload, once or (a dead disk)
/// from then on.
fn enumerate(policy: SyncPolicy, sticky_every: u64) {
    let baseline = FaultyIo::new(Arc::new(NoSyncIo));
    let dir = scratch_dir();
    let out = workload(dir.path(), baseline.clone(), policy);
    assert!(out.error.is_none(), "baseline failed: {out:?}");
    let (writes, syncs, _) = baseline.counts();
    assert!(out.segments >= 3, "the workload must roll: {out:?}");
    let mut runs = 0;
    for kind in [OpKind::Write, OpKind::Sync] {
        let count = if kind == OpKind::Write { writes } else { syncs };
        for n in 1..=count + 2 {
            for sticky in [false, true] {
                if sticky && n % sticky_every != 0 {
                    continue;
                }
                let plan = Plan {
                    fail_write: (kind == OpKind::Write).then_some(n),
                    fail_sync: (kind == OpKind::Sync).then_some(n),
                    sticky,
                    ..Plan::default()
                };
                let case = format!("{policy:?}, {kind:?} #{n} fails, sticky: {sticky}");
                let io = FaultyIo::new(Arc::new(NoSyncIo));
                io.set_plan(plan);
                let dir = scratch_dir();
                let out = workload(dir.path(), io.clone(), policy);
                check_surfaced(&io, &out, &case);
                check_recovery(dir.path(), &out, &case);
                runs += 1;
            }
        }
    }
    eprintln!("{policy:?}: {runs} failure points ({writes} writes, {syncs} syncs)");
    assert!(runs > 100, "only {runs} failure points");
}

/// [DUR-02] [DUR-03] [DUR-04] With a sync per append, no single failed write or sync, and no
/// dead disk from any point on, loses an acknowledged record or invents one.
#[test]
fn any_failed_write_or_sync_loses_nothing_acknowledged_with_every_append() {
    enumerate(SyncPolicy::EveryAppend, 3);
}

/// [DUR-02] [DUR-03] [DUR-04] The same under group commit, where the sync thread meets the
/// failures and waiters must learn of them.
#[test]
fn any_failed_write_or_sync_loses_nothing_acknowledged_with_group_commit() {
    enumerate(SyncPolicy::default(), 3);
}

/// A crashed log whose last frame is torn, as a template for recovery under faults.
fn torn_template() -> (tempfile::TempDir, u64) {
    let dir = scratch_dir();
    let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
    for seq in 1..=100 {
        log.append(&payload(seq)).unwrap();
    }
    log.flush().unwrap();
    log.simulate_crash();
    let base = *segment_bases(dir.path()).last().unwrap();
    let (_, frames) = frames_of(&segment_file(dir.path(), base));
    let last = frames.last().unwrap();
    support::storage::flip_byte(&segment_file(dir.path(), base), last.offset + 20, 0x55);
    // A torn frame was never synced: the watermark file cannot name it [REC-03].
    esl_replay::storage::remove_durable(&dir.path().join(DURABLE_FILE)).unwrap();
    (dir, last.seq)
}

/// [REC-02] [REC-03] Recovery itself can fail at any write or sync (zeroing the torn tail,
/// creating the spare, writing the index); the error surfaces, and a later open on a healthy
/// disk still recovers exactly the valid prefix.
#[test]
fn recovery_interrupted_by_any_failure_can_be_retried() {
    let (template, torn_seq) = torn_template();
    let count = |plan: Plan| {
        let dir = scratch_dir();
        support::storage::copy_dir(template.path(), dir.path());
        let io = FaultyIo::new(Arc::new(NoSyncIo));
        io.set_plan(plan);
        let result = open_log(dir.path(), with_io(small_options(), io.clone()));
        if let Ok((log, report)) = result {
            assert_eq!(report.next_seq, torn_seq);
            assert!(report.torn_tail.is_some());
            drop(log);
        }
        let (log, report) = open_log(dir.path(), fast_options()).unwrap();
        assert_eq!(report.next_seq, torn_seq, "{:?}", io.injected());
        let all = read_all(&log.reader());
        assert_eq!(all.len() as u64, torn_seq - 1);
        assert!(all.iter().all(|(seq, bytes)| *bytes == payload(*seq)));
        io.counts()
    };
    let (writes, syncs, removes) = count(Plan::default());
    for n in 1..=writes + 1 {
        count(Plan {
            fail_write: Some(n),
            ..Plan::default()
        });
    }
    for n in 1..=syncs + 1 {
        count(Plan {
            fail_sync: Some(n),
            ..Plan::default()
        });
    }
    for n in 1..=removes + 1 {
        count(Plan {
            fail_remove: Some(n),
            ..Plan::default()
        });
    }
}

/// [DUR-04] A failed sync poisons the log, whatever the policy: the failure surfaces (from
/// the append, from `wait_durable` or from `sync`), every later append, batch, sync and wait
/// is refused with `Poisoned` naming the directory (even after the disk recovers), readers
/// still read, and a reopen recovers every record acknowledged before, after which appends
/// continue with the next sequence.
#[test]
fn failed_sync_poisons_the_log_until_reopen() {
    for policy in [
        SyncPolicy::EveryAppend,
        SyncPolicy::default(),
        SyncPolicy::OsOnly,
    ] {
        let dir = temp_dir();
        let io = FaultyIo::new(Arc::new(StdIo));
        let options = with_policy(with_io(small_options(), io.clone()), policy);
        let (mut log, _) = open_log(dir.path(), options).unwrap();
        for seq in 1..=20 {
            log.append(&payload(seq)).unwrap();
        }
        log.wait_durable(Seq(20)).unwrap();
        io.set_plan(Plan {
            fail_sync: Some(1),
            target: Some("00000000000000000001.seg".into()),
            ..Plan::default()
        });
        let failed = match policy {
            SyncPolicy::EveryAppend => log.append(&payload(21)).map(|_| ()),
            SyncPolicy::OsOnly => {
                assert_eq!(log.append(&payload(21)).unwrap(), Seq(21));
                log.sync()
            }
            _ => {
                assert_eq!(log.append(&payload(21)).unwrap(), Seq(21));
                log.wait_durable(Seq(21))
            }
        };
        match failed {
            Err(Error::Io {
                op: IoOp::Sync,
                ref path,
                ref source,
            }) => {
                assert_eq!(path, &segment_file(dir.path(), 1), "{policy:?}");
                assert_eq!(source.raw_os_error(), Some(libc::EIO), "{policy:?}");
            }
            Err(Error::Poisoned { ref dir, ref cause }) => {
                assert_eq!(dir, log.dir(), "{policy:?}");
                assert!(cause.contains("sync"), "{policy:?}: {cause}");
            }
            ref other => panic!("{policy:?}: the failed sync surfaced as {other:?}"),
        }
        assert!(io.injected()[0].is_segment_sync(), "{policy:?}");
        io.heal();
        let poisoned = |result: Result<(), Error>| match result {
            Err(Error::Poisoned { dir: named, .. }) => assert_eq!(named, dir.path()),
            other => panic!("{policy:?}: expected Poisoned, got {other:?}"),
        };
        poisoned(log.append(b"refused").map(|_| ()));
        poisoned(log.append_batch(&[b"a", b"b"]).map(|_| ()));
        poisoned(log.sync());
        poisoned(log.wait_durable(Seq(21)));
        // The record whose sync failed is never acknowledged durable before a reopen, even
        // by a later sync that succeeds (fsyncgate).
        assert_eq!(log.durability().durable_seq(), Seq(21), "{policy:?}");
        let reader = log.reader();
        assert_eq!(reader.get(Seq(20)).unwrap(), Some(payload(20)));
        if policy == SyncPolicy::EveryAppend {
            assert_eq!(
                reader.next_seq().unwrap(),
                Seq(21),
                "under EveryAppend a record is visible only once durable"
            );
        }
        let attempted = log.next_seq().0;
        drop(log);

        let (mut log, report) = open_log(dir.path(), small_options()).unwrap();
        assert!(
            (21..=attempted).contains(&report.next_seq),
            "{policy:?}: {report:?}"
        );
        let all = read_all(&log.reader());
        assert_eq!(all.len() as u64, report.next_seq - 1);
        assert!(all.iter().all(|(seq, bytes)| *bytes == payload(*seq)));
        let next = report.next_seq;
        assert_eq!(log.append(b"continues").unwrap(), Seq(next), "{policy:?}");
        log.wait_durable(Seq(next)).unwrap();
    }
}

/// [SEG-08] [LOG-01] `ENOSPC` while preallocating the next segment fails the append that
/// needed it, with the path and the OS error; no sequence is consumed, earlier records stay
/// readable and durable, and once space returns the same sequence is assigned in the new
/// segment. A crash in that state is recovered by completing the roll.
#[test]
fn enospc_preallocating_the_next_segment_fails_the_append_without_consuming_a_sequence() {
    for crash in [false, true] {
        let dir = temp_dir();
        open_log(dir.path(), small_options())
            .unwrap()
            .0
            .close()
            .unwrap();
        let io = FaultyIo::new(Arc::new(StdIo));
        io.set_plan(Plan {
            enospc_path: Some(SPARE_FILE.into()),
            ..Plan::default()
        });
        let options = with_policy(
            with_io(small_options(), io.clone()),
            SyncPolicy::EveryAppend,
        );
        let (mut log, _) = open_log(dir.path(), options).unwrap();
        let mut seq = 1;
        let error = loop {
            match log.append(&payload(seq)) {
                Ok(got) => assert_eq!(got, Seq(seq)),
                Err(error) => break error,
            }
            seq += 1;
            assert!(seq < 200, "no roll happened");
        };
        match &error {
            Error::Io {
                op: IoOp::Allocate,
                path,
                source,
            } => {
                assert_eq!(path, &dir.path().join(SPARE_FILE));
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
            }
            other => panic!("expected ENOSPC from the preallocation, got {other:?}"),
        }
        assert!(
            io.injected().iter().any(|i| i.len as u64 == SEGMENT_BYTES),
            "the preallocation itself must have failed: {:?}",
            io.injected()
        );
        assert_eq!(
            log.next_seq(),
            Seq(seq),
            "the failed append consumed a sequence"
        );
        assert!(log.append(&payload(seq)).is_err(), "still no space");
        assert_eq!(log.next_seq(), Seq(seq));
        log.wait_durable(Seq(seq - 1)).unwrap();
        let reader = log.reader();
        assert_eq!(reader.next_seq().unwrap(), Seq(seq));
        assert_eq!(read_all(&reader).len() as u64, seq - 1);
        if crash {
            log.flush().unwrap();
            log.simulate_crash();
            let (mut log, report) = open_log(dir.path(), small_options()).unwrap();
            assert!(report.pending_roll, "{report:?}");
            assert_eq!(report.next_seq, seq);
            assert_eq!(log.append(&payload(seq)).unwrap(), Seq(seq));
            assert_eq!(log.active_segment(), SegmentId(seq));
            continue;
        }
        io.heal();
        assert_eq!(log.append(&payload(seq)).unwrap(), Seq(seq));
        assert_eq!(log.active_segment(), SegmentId(seq));
        log.close().unwrap();
        let (log, report) = open_log(dir.path(), small_options()).unwrap();
        assert!(report.clean_shutdown);
        let all = read_all(&log.reader());
        assert_eq!(all.len() as u64, seq);
        assert!(all.iter().all(|(s, bytes)| *bytes == payload(*s)));
    }
}

/// [ATOM-01] [IDX-02] [IDX-03] Short and interrupted writes are completed: a log written
/// entirely through them (preallocation, headers, indexes, the start and clean-shutdown
/// files) reopens cleanly with every record and complete indexes.
#[test]
fn short_and_interrupted_writes_are_completed() {
    let dir = temp_dir();
    let io = FaultyIo::new(Arc::new(NoSyncIo));
    io.set_plan(Plan {
        short_writes: true,
        interrupt_writes: true,
        ..Plan::default()
    });
    let options = with_io(small_options(), io.clone());
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    for seq in 1..=200 {
        log.append(&payload(seq)).unwrap();
    }
    log.truncate_prefix(Seq(30)).unwrap();
    log.close().unwrap();
    assert!(io.injected().is_empty());
    assert!(
        io.counts().0 > 100,
        "writes were not split: {:?}",
        io.counts()
    );

    let (log, report) = open_log(dir.path(), small_options()).unwrap();
    assert!(report.clean_shutdown, "{report:?}");
    assert_eq!((report.first_seq, report.next_seq), (30, 201));
    let all = read_all(&log.reader());
    assert_eq!(all.len(), 171);
    assert!(all.iter().all(|(seq, bytes)| *bytes == payload(*seq)));
    let bases = segment_bases(dir.path());
    for base in &bases[..bases.len() - 1] {
        let index = std::fs::read(index_path(dir.path(), *base)).unwrap();
        let salt = frames_of(&segment_file(dir.path(), *base)).0.salt;
        let decoded = decode_index_file(&index, *base, salt).unwrap();
        assert!(decoded.footer.is_some(), "index of {base} incomplete");
    }
}

/// A write that reports success having written nothing surfaces as an error instead of
/// looping forever.
#[test]
fn zero_length_writes_surface_as_errors() {
    let dir = temp_dir();
    let io = FaultyIo::new(Arc::new(StdIo));
    io.set_plan(Plan {
        zero_writes: true,
        ..Plan::default()
    });
    match open_log(dir.path(), with_io(small_options(), io)) {
        Err(Error::Io {
            op: IoOp::Write,
            source,
            ..
        }) => assert_eq!(source.kind(), std::io::ErrorKind::WriteZero),
        other => panic!("expected a WriteZero error, got {:?}", other.map(|_| ())),
    }
    let (log, report) = open_log(dir.path(), small_options()).unwrap();
    assert_eq!(report.next_seq, 1);
    drop(log);
}

/// [TRUNC-03] [META-01] A truncation whose segment removals fail still moved the start
/// durably: the error surfaces naming the file, readers never return a record below the new
/// start, and reopening finishes the removals.
#[test]
fn truncation_with_failed_removals_is_finished_on_reopen() {
    let dir = temp_dir();
    let io = FaultyIo::new(Arc::new(StdIo));
    let options = with_io(small_options(), io.clone());
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    let mut seq = 1;
    while segment_bases(dir.path()).len() < 5 {
        log.append(&payload(seq)).unwrap();
        seq += 1;
    }
    let bases = segment_bases(dir.path());
    let start = bases[3] + 1;
    io.set_plan(Plan {
        fail_remove: Some(2),
        ..Plan::default()
    });
    match log.truncate_prefix(Seq(start)) {
        Err(Error::Io {
            op: IoOp::Remove,
            path,
            ..
        }) => assert!(path.starts_with(dir.path()), "{path:?}"),
        other => panic!("expected a failed removal, got {other:?}"),
    }
    let reader = log.reader();
    assert_eq!(reader.first_seq(), Seq(start));
    assert_eq!(reader.get(Seq(start - 1)).unwrap(), None);
    assert_eq!(
        reader.iter(Seq(1)).unwrap().next().unwrap().unwrap().0,
        Seq(start)
    );
    let follower = Reader::open(dir.path(), &small_options()).unwrap();
    assert_eq!(follower.first_seq(), Seq(start));
    io.heal();
    drop(log);

    let (log, report) = open_log(dir.path(), small_options()).unwrap();
    assert_eq!(report.first_seq, start);
    // Left as segments, or as files kept for reuse [TRUNC-05], which are temporaries.
    assert!(
        report.removed_segments + report.removed_temporaries >= 1,
        "{report:?}"
    );
    assert_eq!(segment_bases(dir.path()), bases[3..].to_vec());
    let all = read_all(&log.reader());
    assert_eq!(all.first().map(|r| r.0), Some(start));
    assert_eq!(all.len() as u64, seq - start);
}

/// Holds the first write of a whole staging buffer (1 MiB or more) to a segment file until
/// released, then fails it with `EIO`; every other operation goes to the file system.
#[derive(Debug, Default)]
struct GatedWrite {
    state: std::sync::Mutex<Gate>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct Gate {
    holding: bool,
    released: bool,
    failed: bool,
}

impl GatedWrite {
    /// Waits until `ready` holds; panics after a minute rather than hang a broken test.
    fn wait_until(&self, ready: impl Fn(&Gate) -> bool) {
        let state = self.state.lock().unwrap();
        let limit = std::time::Duration::from_secs(60);
        let (state, waited) = self
            .changed
            .wait_timeout_while(state, limit, |gate| !ready(gate))
            .unwrap();
        drop(state);
        assert!(!waited.timed_out(), "the gated write never came to that");
    }

    fn update(&self, change: impl FnOnce(&mut Gate)) {
        change(&mut self.state.lock().unwrap());
        self.changed.notify_all();
    }
}

impl esl_replay::storage::Io for GatedWrite {
    fn write_at(&self, file: &std::fs::File, buf: &[u8], offset: u64) -> std::io::Result<usize> {
        let segment = support::storage::file_path(file)
            .extension()
            .is_some_and(|e| e == "seg");
        if segment && buf.len() >= 1 << 20 && !self.state.lock().unwrap().failed {
            self.update(|gate| gate.holding = true);
            self.wait_until(|gate| gate.released);
            self.update(|gate| gate.failed = true);
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        NoSyncIo.write_at(file, buf, offset)
    }

    fn sync_data(&self, file: &std::fs::File) -> std::io::Result<()> {
        NoSyncIo.sync_data(file)
    }

    fn sync_all(&self, file: &std::fs::File) -> std::io::Result<()> {
        NoSyncIo.sync_all(file)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        NoSyncIo.sync_dir(dir)
    }
}

/// Whether thread `tid` of this process is asleep (blocked), as `/proc` shows it.
fn asleep(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
        .ok()
        .and_then(|stat| {
            let after_name = stat.rsplit_once(')')?.1;
            after_name
                .split_whitespace()
                .next()
                .map(|state| state == "S")
        })
        .unwrap_or(false)
}

/// [LOG-02] [ROLL-07] The flusher thread takes every staged frame and its write fails while a
/// roll waits for it: the roll then finds nothing staged, and must still refuse to write the
/// seal, which would lie past the hole the failed write left. The append that rolled fails
/// as poisoned, and a reopen finds no record and no damage (the lost records were never
/// acknowledged as durable).
#[test]
fn a_roll_behind_a_failed_flusher_write_writes_no_seal_past_the_hole() {
    let gate = Arc::new(GatedWrite::default());
    let dir = scratch_dir();
    // Two records fill the segment and, staged together, pass the 1 MiB the flusher writes
    // at; a third does not fit, so its append rolls.
    let options = LogOptions {
        segment_bytes: 1_300_000,
        max_payload_bytes: 700_000,
        compress_min_bytes: None,
        sync_policy: SyncPolicy::OsOnly,
        ..with_io(small_options(), gate.clone())
    };
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    let record = vec![0x5a; 600_000];
    log.append(&record).unwrap();
    log.append(&record).unwrap();
    gate.wait_until(|gate| gate.holding);
    // Release the flusher's write once this thread is blocked inside the rolling append,
    // waiting for that write to finish (or, should it not wait, once the append returned).
    use std::sync::atomic::{AtomicU8, Ordering};
    const BEFORE: u8 = 0;
    const ROLLING: u8 = 1;
    const RETURNED: u8 = 2;
    let step = Arc::new(AtomicU8::new(BEFORE));
    let tid = rustix::thread::gettid().as_raw_nonzero().get();
    let releaser = {
        let (gate, step) = (gate.clone(), step.clone());
        std::thread::spawn(move || {
            loop {
                match step.load(Ordering::SeqCst) {
                    ROLLING if asleep(tid) => break,
                    RETURNED => break,
                    _ => std::thread::yield_now(),
                }
            }
            gate.update(|gate| gate.released = true);
        })
    };
    step.store(ROLLING, Ordering::SeqCst);
    let rolled = log.append(&record);
    step.store(RETURNED, Ordering::SeqCst);
    releaser.join().unwrap();
    assert!(
        matches!(rolled, Err(Error::Poisoned { .. })),
        "the rolling append returned {rolled:?}"
    );
    drop(log);
    let (log, report) = open_log(dir.path(), fast_options()).unwrap();
    assert_eq!(report.next_seq, 1, "{report:?}");
    assert_eq!(segment_bases(dir.path()), [1], "no segment after the hole");
    assert!(read_all(&log.reader()).is_empty());
}

/// Fails the next directory sync after a segment file is renamed into place, once armed.
#[derive(Debug, Default)]
struct FailDirSyncAfterRename {
    armed: std::sync::atomic::AtomicBool,
    renamed: std::sync::atomic::AtomicBool,
}

impl esl_replay::storage::Io for FailDirSyncAfterRename {
    fn rename(&self, source: &Path, target: &Path) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        if target.extension().is_some_and(|e| e == "seg") && self.armed.load(Ordering::SeqCst) {
            self.renamed.store(true, Ordering::SeqCst);
        }
        StdIo.rename(source, target)
    }

    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        if self.renamed.swap(false, Ordering::SeqCst) {
            self.armed.store(false, Ordering::SeqCst);
            return Err(std::io::Error::from_raw_os_error(libc::EIO));
        }
        StdIo.sync_dir(dir)
    }
}

/// [ROLL-05] [DUR-04] A roll whose directory sync fails after the successor's name is out
/// poisons the log: whether the name survives is unknown and followers may already read the
/// file, so no later roll renames another file over it. Reopened, the writer goes on in
/// that successor, and a follower that found it before reads every record after.
#[test]
fn a_failed_directory_sync_in_a_roll_poisons_and_the_successor_stays() {
    let dir = temp_dir();
    let io = Arc::new(FailDirSyncAfterRename::default());
    let options = with_policy(
        with_io(small_options(), io.clone()),
        SyncPolicy::EveryAppend,
    );
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    log.append(&payload(1)).unwrap();
    let follower = Reader::open(dir.path(), &LogOptions::default()).unwrap();
    io.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut seq = 2;
    let error = loop {
        match log.append(&payload(seq)) {
            Ok(_) => seq += 1,
            Err(error) => break error,
        }
    };
    assert!(
        matches!(
            error,
            Error::Io {
                op: IoOp::SyncDir,
                ..
            }
        ),
        "{error:?}"
    );
    // The follower finds the successor by its name.
    assert_eq!(follower.next_seq().unwrap(), Seq(seq));
    assert!(matches!(
        log.append(&payload(seq)),
        Err(Error::Poisoned { .. })
    ));
    log.simulate_crash();

    let (mut log, _) = open_log(dir.path(), small_options()).unwrap();
    assert_eq!(log.active_segment(), SegmentId(seq));
    for s in seq..seq + 5 {
        assert_eq!(log.append(&payload(s)).unwrap(), Seq(s));
    }
    log.flush().unwrap();
    assert_eq!(follower.next_seq().unwrap(), Seq(seq + 5));
    let all = read_all(&follower);
    assert_eq!(all.len() as u64, seq + 4);
    assert!(all.iter().all(|(s, bytes)| *bytes == payload(*s)));
}

/// Whether `error` is the writer's refusal to go on in the active segment `base` of `dir`
/// after its file was removed: the removal itself, or the poisoning it caused naming it
/// [DUR-05].
fn is_removed_segment(error: &Error, dir: &Path, base: u64) -> bool {
    let path = segment_file(dir, base);
    match error {
        Error::SegmentRemoved {
            segment,
            path: named,
        } => *segment == SegmentId(base) && *named == path,
        Error::Poisoned { cause, .. } => {
            cause.contains(&path.display().to_string()) && cause.contains("removed")
        }
        _ => false,
    }
}

/// [DUR-05] The active segment's file removed from outside under a running writer fails
/// the log, whatever the policy: the next sync (a wait for durability, an explicit sync, an
/// `EveryAppend` append) returns the error naming the file instead of acknowledging
/// records that are in no segment file, every later append, sync and wait is refused, and
/// the close fails (no clean-shutdown file promises the lost records).
#[test]
fn a_removed_active_segment_fails_the_next_sync() {
    for policy in [
        SyncPolicy::EveryAppend,
        SyncPolicy::default(),
        SyncPolicy::OsOnly,
    ] {
        let dir = temp_dir();
        let options = with_policy(small_options(), policy);
        let (mut log, _) = open_log(dir.path(), options).unwrap();
        for seq in 1..=5 {
            log.append(&payload(seq)).unwrap();
        }
        log.wait_durable(Seq(5)).unwrap();
        esl_replay::storage::remove_durable(&segment_file(dir.path(), 1)).unwrap();
        let failed = match policy {
            SyncPolicy::EveryAppend => log.append(&payload(6)).map(|_| ()),
            SyncPolicy::OsOnly => {
                assert_eq!(log.append(&payload(6)).unwrap(), Seq(6));
                log.sync()
            }
            _ => {
                assert_eq!(log.append(&payload(6)).unwrap(), Seq(6));
                log.wait_durable(Seq(6))
            }
        };
        let error = failed.expect_err("a sync into a removed file succeeded");
        assert!(
            is_removed_segment(&error, dir.path(), 1),
            "{policy:?}: {error:?}"
        );
        let refused = |result: Result<(), Error>| match result {
            Err(error) => assert!(
                is_removed_segment(&error, dir.path(), 1),
                "{policy:?}: {error:?}"
            ),
            Ok(()) => panic!("{policy:?}: the log went on after its segment was removed"),
        };
        refused(log.append(b"refused").map(|_| ()));
        refused(log.sync());
        refused(log.wait_durable(Seq(6)));
        assert!(log.durability().durable_seq() <= Seq(6), "{policy:?}");
        assert!(log.close().is_err(), "{policy:?}");
        assert!(
            !dir.path().join("clean.meta").exists(),
            "{policy:?}: a clean-shutdown file promises records in no segment file"
        );
    }
}

/// [DUR-05] A roll checks that the active segment's file is still named before it seals it:
/// a removed file is not sealed and followed by a successor as though its records were
/// there; the append that needed the roll fails naming the file, and no successor appears.
#[test]
fn a_roll_refuses_to_seal_a_removed_active_segment() {
    let dir = temp_dir();
    let options = with_policy(small_options(), SyncPolicy::OsOnly);
    let (mut log, _) = open_log(dir.path(), options).unwrap();
    log.append(&payload(1)).unwrap();
    esl_replay::storage::remove_durable(&segment_file(dir.path(), 1)).unwrap();
    let mut seq = 2;
    let error = loop {
        match log.append(&payload(seq)) {
            Ok(_) => seq += 1,
            Err(error) => break error,
        }
        assert!(seq < 1000, "no roll came");
    };
    assert!(is_removed_segment(&error, dir.path(), 1), "{error:?}");
    assert_eq!(segment_bases(dir.path()), Vec::<u64>::new());
    assert!(log.close().is_err());
}

/// [DUR-05] A clean close checks the active segment's file too: a file removed while the
/// writer had nothing left to sync fails the close, which writes no clean-shutdown file.
#[test]
fn a_close_after_the_active_segment_was_removed_fails() {
    let dir = temp_dir();
    let (mut log, _) = open_log(dir.path(), small_options()).unwrap();
    for seq in 1..=5 {
        log.append(&payload(seq)).unwrap();
    }
    log.wait_durable(Seq(5)).unwrap();
    esl_replay::storage::remove_durable(&segment_file(dir.path(), 1)).unwrap();
    let error = log.close().expect_err("the close succeeded");
    assert!(is_removed_segment(&error, dir.path(), 1), "{error:?}");
    assert!(!dir.path().join("clean.meta").exists());
}
