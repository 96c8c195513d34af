//! Concurrency: readers in other threads and in another process read while the writer
//! appends (rolling through many segments) and while the prefix is truncated; writers lock
//! each other out across threads and processes.
//!
//! Every record's payload is a function of its sequence, so any reader can check what it
//! reads on its own. The in-process test runs a lending tail cursor, point reads, freshly
//! created cursors, an async tail, a durability waiter and a truncating thread against one
//! writer. The cross-process tests re-execute this test binary as a child (the ignored test
//! `child_process_role`, selected with `--exact` and told its role through an environment
//! variable): a read-only follower that tails the log and, told of each truncation on its
//! stdin, checks that new cursors and point reads no longer return anything below the new
//! start; a writer holding the lock; a writer trying to take it; and a truncating reader.
//! Everywhere the readers must see only complete records, in order, with contiguous
//! sequences except for a jump forward to the start when a truncation passed them.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use esl_replay::storage::codec::segment_path;
use esl_replay::storage::{
    Error, Log, LogOptions, ReadStrategy, Reader, RecoveryReport, Seq, StdIo, SyncPolicy,
    WATERMARK_PATIENCE,
};

use crate::support;
use crate::support::process::SpawnSafely as _;
use crate::support::process::open_log;
use crate::support::storage::{
    FaultyIo, Plan, Rng, block_on, fast_options, read_all, segment_bases, temp_dir, with_io,
    with_policy,
};

const ROLE_ENV: &str = "ESL_REPLAY_CONCURRENCY_ROLE";
const DIR_ENV: &str = "ESL_REPLAY_CONCURRENCY_DIR";
const SEED_ENV: &str = "ESL_REPLAY_CONCURRENCY_SEED";
const LAST_ENV: &str = "ESL_REPLAY_CONCURRENCY_LAST";
const STRATEGY_ENV: &str = "ESL_REPLAY_CONCURRENCY_STRATEGY";
const BEFORE_ENV: &str = "ESL_REPLAY_CONCURRENCY_BEFORE";

/// The payload of record `seq`: up to 1200 bytes, so tens of thousands of records roll
/// through hundreds of 64 KiB segments.
fn payload(seed: u64, seq: u64) -> Vec<u8> {
    support::storage::payload(seed, seq, 1200)
}

fn options(strategy: ReadStrategy) -> LogOptions {
    LogOptions {
        read_strategy: strategy,
        ..fast_options()
    }
}

fn strategy_name(strategy: ReadStrategy) -> &'static str {
    match strategy {
        ReadStrategy::Mmap => "mmap",
        ReadStrategy::Pread => "pread",
    }
}

/// Checks one record a reader yielded after `last`: it is the record generated for its
/// sequence, it comes after `last`, and any skipped sequences lie below the start (a
/// truncation passed the reader). Returns the record's sequence.
fn check_next(reader: &Reader, seed: u64, last: u64, seq: Seq, bytes: &[u8], who: &str) -> u64 {
    let seq = seq.0;
    assert!(seq > last, "{who}: {seq} after {last}: out of order");
    if seq != last + 1 {
        // A follower learns of truncations when it looks for new records.
        let _ = reader.next_seq();
        let first = reader.first_seq().0;
        assert!(
            first >= seq,
            "{who}: skipped from {last} to {seq} but the start is {first}"
        );
    }
    assert!(
        bytes == payload(seed, seq),
        "{who}: record {seq} is not the record appended"
    );
    seq
}

/// Tails the log with a lending cursor until `last` has been read, waiting for records at
/// the end; returns how many records were read.
fn tail(reader: &Reader, seed: u64, last: u64, who: &str) -> u64 {
    let mut cursor = reader.cursor(Seq(1)).unwrap();
    let (mut at, mut count) = (0, 0);
    while at < last {
        let record = cursor
            .next()
            .unwrap_or_else(|e| panic!("{who}: after {at}: {e}"));
        match record {
            Some(record) => {
                at = check_next(reader, seed, at, record.seq, record.payload, who);
                count += 1;
            }
            None => assert!(
                reader
                    .wait_for(Seq(at + 1), Duration::from_secs(30))
                    .unwrap(),
                "{who}: stalled after {at}"
            ),
        }
    }
    count
}

/// Repeatedly opens new cursors: none may yield a record below the start it saw before
/// creating it [META-01].
fn new_cursors(reader: &Reader, seed: u64, done: &AtomicBool, who: &str) -> u64 {
    let mut opened = 0;
    while !done.load(Ordering::Relaxed) {
        let _ = reader.next_seq();
        let start = reader.first_seq().0;
        let mut cursor = reader.cursor(Seq(1)).unwrap();
        let mut at = 0;
        for _ in 0..40 {
            let Some(record) = cursor.next().unwrap() else {
                break;
            };
            if at == 0 {
                assert!(
                    record.seq.0 >= start,
                    "{who}: a new cursor yielded {} below the start {start}",
                    record.seq
                );
                assert!(record.payload == payload(seed, record.seq.0), "{who}");
                at = record.seq.0;
            } else {
                at = check_next(reader, seed, at, record.seq, record.payload, who);
            }
        }
        opened += 1;
    }
    opened
}

/// Point reads at random sequences in range: the record appended, or `None` only if a
/// truncation moved the start past it meanwhile.
fn point_reads(reader: &Reader, seed: u64, done: &AtomicBool, who: &str) -> u64 {
    let mut rng = Rng::new(seed ^ 0xF00D);
    let mut reads = 0;
    while !done.load(Ordering::Relaxed) {
        let next = reader.next_seq().unwrap().0;
        let first = reader.first_seq().0;
        if next <= first {
            std::thread::yield_now();
            continue;
        }
        let seq = rng.range(first, next);
        match reader.get(Seq(seq)).unwrap() {
            Some(bytes) => assert!(bytes == payload(seed, seq), "{who}: get({seq})"),
            None => {
                let _ = reader.next_seq();
                assert!(
                    reader.first_seq().0 > seq,
                    "{who}: get({seq}) found nothing above the start {}",
                    reader.first_seq()
                );
            }
        }
        reads += 1;
    }
    reads
}

fn spawn<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .unwrap()
}

/// [RD-02] [RD-03] [TAIL-01] [TAIL-02] [DUR-03] [TRUNC-01] [META-01] Readers in other threads
/// (a tail cursor, point reads, new cursors, an async tail, a durability waiter) see only
/// complete records in order while the writer appends through many rolls and another
/// thread truncates the prefix; new cursors never start below the start.
#[test]
fn readers_in_other_threads_see_complete_records_in_order_while_appending_and_truncating() {
    for strategy in [ReadStrategy::Mmap, ReadStrategy::Pread] {
        let seed = Rng::seed_from_env("ESL_REPLAY_CONCURRENCY_SEED");
        let total: u64 = 25_000;
        let dir = temp_dir();
        let (mut log, _) = open_log(dir.path(), options(strategy)).unwrap();
        let reader = log.reader();
        let done = Arc::new(AtomicBool::new(false));
        let who = strategy_name(strategy);

        let tail_reader = reader.clone();
        let tailer = spawn("tail", move || tail(&tail_reader, seed, total, who));
        let (r, d) = (reader.clone(), done.clone());
        let points = spawn("get", move || point_reads(&r, seed, &d, who));
        let (r, d) = (reader.clone(), done.clone());
        let cursors = spawn("cursors", move || new_cursors(&r, seed, &d, who));
        let r = reader.clone();
        let waiter = spawn("async", move || {
            for target in (1_000..=total).step_by(1_000) {
                block_on(r.wait_for_async(Seq(target))).unwrap();
                assert!(r.next_seq().unwrap() > Seq(target));
            }
        });
        let durability = log.durability();
        let durable = spawn("durable", move || {
            for target in (500..=total).step_by(500) {
                durability.wait(Seq(target)).unwrap();
                assert!(durability.durable_seq() > Seq(target));
            }
        });
        let (r, d) = (reader.clone(), done.clone());
        let truncator = spawn("truncate", move || {
            let mut rng = Rng::new(seed ^ 0x7275);
            let mut truncations = 0;
            while !d.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(rng.range(1, 6)));
                let next = r.next_seq().unwrap().0;
                let Some(before) = next.checked_sub(rng.range(200, 4_000)) else {
                    continue;
                };
                let report = r.truncate_prefix(Seq(before)).unwrap();
                assert!(report.start >= Seq(before), "{report:?}");
                assert!(r.first_seq() >= Seq(before));
                assert_eq!(r.get(Seq(before - 1)).unwrap(), None);
                let first = r.iter(Seq(1)).unwrap().next().unwrap().unwrap().0;
                assert!(
                    first >= Seq(before),
                    "iter started at {first} below {before}"
                );
                truncations += 1;
            }
            truncations
        });

        let mut rng = Rng::new(seed);
        let mut next = 1;
        while next <= total {
            let count = rng.range(1, 9).min(total + 1 - next);
            let payloads: Vec<Vec<u8>> = (next..next + count).map(|s| payload(seed, s)).collect();
            let range = log.append_batch(&payloads).unwrap();
            assert_eq!(range, Seq(next)..Seq(next + count));
            next += count;
            if rng.chance(1, 200) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        let read = tailer.join().unwrap();
        waiter.join().unwrap();
        durable.join().unwrap();
        done.store(true, Ordering::Relaxed);
        let reads = points.join().unwrap();
        let opened = cursors.join().unwrap();
        let truncations = truncator.join().unwrap();
        assert!(truncations > 5, "{who}: only {truncations} truncations ran");
        assert!(read > 0 && reads > 0 && opened > 0);
        eprintln!(
            "{who}: tail read {read}, {reads} point reads, {opened} new cursors, \
             {truncations} truncations, {} segments left",
            segment_bases(dir.path()).len()
        );
        let first = reader.first_seq().0;
        log.close().unwrap();
        let (log, report) = open_log(dir.path(), options(strategy)).unwrap();
        assert_eq!((report.first_seq, report.next_seq), (first, total + 1));
        let all = read_all(&log.reader());
        assert_eq!(all.len() as u64, total + 1 - first);
        assert!(all.iter().all(|(seq, bytes)| *bytes == payload(seed, *seq)));
    }
}

/// Starts this test binary again as a child process in `role`.
fn spawn_role(role: &str, dir: &Path, env: &[(&str, String)]) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            &support::test_name(module_path!(), "child_process_role"),
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn_safely().unwrap()
}

/// The child's stdout, line by line, from a thread.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    receive
}

/// Waits for a line holding `prefix` and returns it from there (libtest may have printed
/// `test child_process_role ... ` before it on the same line).
fn expect_line(lines: &std::sync::mpsc::Receiver<String>, prefix: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => match line.find(prefix) {
                Some(at) => return line[at..].to_string(),
                None => seen.push(line),
            },
            Err(_) => break,
        }
    }
    panic!(
        "the child never said {prefix:?}; it said:\n{}",
        seen.join("\n")
    );
}

/// Waits for the child to exit; panics with its stderr unless it succeeded.
fn expect_success(mut child: Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            if let Some(mut pipe) = child.stderr.take() {
                use std::io::Read;
                let _ = pipe.read_to_string(&mut stderr);
            }
            assert!(status.success(), "the child failed ({status}):\n{stderr}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the child did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// [RD-01] [RD-03] [TAIL-01] [TAIL-02] [TRUNC-01] [META-01] A follower in another process
/// (`Reader::open`, no lock) tails the log while the writer appends through many rolls and
/// truncates: it reads every record it reaches complete and in order, and once told of a
/// truncation its new cursors and point reads never return anything below the new start.
#[test]
fn follower_in_another_process_sees_complete_records_in_order() {
    for strategy in [ReadStrategy::Mmap, ReadStrategy::Pread] {
        let seed = Rng::seed_from_env("ESL_REPLAY_CONCURRENCY_SEED");
        let total: u64 = 20_000;
        let dir = temp_dir();
        let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
        log.append(&payload(seed, 1)).unwrap();
        let mut child = spawn_role(
            "follower",
            dir.path(),
            &[
                (SEED_ENV, seed.to_string()),
                (LAST_ENV, total.to_string()),
                (STRATEGY_ENV, strategy_name(strategy).into()),
            ],
        );
        let lines = lines_of(&mut child);
        let mut stdin: ChildStdin = child.stdin.take().unwrap();
        expect_line(&lines, "READY");
        let mut rng = Rng::new(seed);
        for seq in 2..=total {
            log.append(&payload(seed, seq)).unwrap();
            if seq % 2_000 == 0 {
                let before = seq - rng.range(500, 1_500);
                let report = log.truncate_prefix(Seq(before)).unwrap();
                if writeln!(stdin, "TRUNC {}", report.start).is_err() {
                    // The child is gone: report why.
                    drop(stdin);
                    expect_success(child);
                    panic!("the follower exited early");
                }
            }
            if rng.chance(1, 500) {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        log.sync().unwrap();
        drop(stdin);
        expect_success(child);
        let summary = expect_line(&lines, "FOLLOWER OK");
        eprintln!("{}: {summary}", strategy_name(strategy));
    }
}

/// [RD-01] [TRUNC-01] A follower that did not look for new records while the writer rolled
/// on and truncated past the follower's last known segment (so that segment's successor no
/// longer exists) catches up: it finds the newest records, and its old and new cursors
/// continue from the start.
#[test]
fn follower_that_slept_through_rolls_and_a_truncation_catches_up() {
    for strategy in [ReadStrategy::Mmap, ReadStrategy::Pread] {
        let seed = 5;
        let dir = temp_dir();
        let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
        for seq in 1..=10 {
            log.append(&payload(seed, seq)).unwrap();
        }
        log.flush().unwrap();
        let follower = Reader::open(dir.path(), &options(strategy)).unwrap();
        let mut old_cursor = follower.cursor(Seq(1)).unwrap();
        assert_eq!(old_cursor.next().unwrap().map(|r| r.seq), Some(Seq(1)));
        let mut seq = 11;
        while segment_bases(dir.path()).len() < 5 {
            log.append(&payload(seed, seq)).unwrap();
            seq += 1;
        }
        let start = segment_bases(dir.path())[3] + 2;
        log.truncate_prefix(Seq(start)).unwrap();
        assert_eq!(
            follower.next_seq().unwrap(),
            Seq(seq),
            "the follower is stuck"
        );
        assert_eq!(follower.first_seq(), Seq(start));
        let all = read_all(&follower);
        assert_eq!(all.first().map(|r| r.0), Some(start));
        assert_eq!(all.len() as u64, seq - start);
        let mut at = 1;
        while let Some(record) = old_cursor.next().unwrap() {
            at = check_next(
                &follower,
                seed,
                at,
                record.seq,
                record.payload,
                "old cursor",
            );
        }
        assert_eq!(at, seq - 1);
    }
}

/// [RD-02] [TRUNC-01] A follower whose known end is below a truncation's new start (the
/// writer appended and truncated while the follower looked away) starts a new cursor at the
/// new start, not at its stale end, and then reports that start as its first sequence.
/// (CI found this race in `follower_in_another_process_sees_complete_records_in_order`.)
#[test]
fn follower_behind_a_truncation_starts_new_cursors_at_the_new_start() {
    for strategy in [ReadStrategy::Mmap, ReadStrategy::Pread] {
        let seed = 7;
        let dir = temp_dir();
        let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
        for seq in 1..=10 {
            log.append(&payload(seed, seq)).unwrap();
        }
        log.flush().unwrap();
        let follower = Reader::open(dir.path(), &options(strategy)).unwrap();
        let mut seq = 11;
        while segment_bases(dir.path()).len() < 4 {
            log.append(&payload(seed, seq)).unwrap();
            seq += 1;
        }
        let start = segment_bases(dir.path())[2] + 1;
        log.truncate_prefix(Seq(start)).unwrap();
        let mut cursor = follower.cursor(Seq(1)).unwrap();
        assert_eq!(cursor.next().unwrap().map(|r| r.seq), Some(Seq(start)));
        assert_eq!(follower.first_seq(), Seq(start));
        assert_eq!(follower.get(Seq(start - 1)).unwrap(), None);
    }
}

/// Segment files under `dir` that were deleted but that this process still maps or holds
/// open (Linux `/proc`), which keeps their disk space allocated.
fn deleted_segments_held(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let is_deleted_segment =
        |text: &str| text.contains(&dir) && text.contains(".seg") && text.ends_with("(deleted)");
    let mut held: Vec<String> = std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter(|line| is_deleted_segment(line))
        .map(|line| format!("mapped: {line}"))
        .collect();
    for entry in std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.display().to_string();
            if is_deleted_segment(&target) {
                held.push(format!("open: {target}"));
            }
        }
    }
    held
}

/// Waits up to 10 s until this process holds no deleted segment file of `dir` but the
/// `watching` descriptors (opened without a lock), and those files' blocks are freed: the
/// last holder frees them in steps on a thread of its own [TRUNC-04].
fn assert_released(dir: &Path, watching: &[std::fs::File], who: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let held = deleted_segments_held(dir);
        let blocks: u64 = watching
            .iter()
            .map(|f| f.metadata().unwrap().blocks())
            .sum();
        if held.len() == watching.len() && held.iter().all(|h| h.starts_with("open")) && blocks == 0
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{who} still holds deleted segments ({blocks} blocks):\n{}",
            held.join("\n")
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// [TRUNC-01] A long-lived follower lets go of the segments a truncation by another process
/// deleted (their maps and file handles) once it has moved past them, so their disk space
/// is reclaimed while it keeps running.
#[test]
fn follower_releases_segments_truncated_by_another_process() {
    if !Path::new("/proc/self/maps").exists() {
        return;
    }
    for strategy in [ReadStrategy::Mmap, ReadStrategy::Pread] {
        let seed = 11;
        let dir = temp_dir();
        let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
        let mut seq = 1;
        while segment_bases(dir.path()).len() < 6 {
            log.append(&payload(seed, seq)).unwrap();
            seq += 1;
        }
        log.flush().unwrap();
        let follower = Reader::open(dir.path(), &options(strategy)).unwrap();
        assert_eq!(read_all(&follower).len() as u64, seq - 1);
        let start = segment_bases(dir.path())[4];
        log.truncate_prefix(Seq(start)).unwrap();
        log.append(&payload(seed, seq)).unwrap();
        log.flush().unwrap();
        assert_eq!(follower.next_seq().unwrap(), Seq(seq + 1));
        assert_eq!(read_all(&follower).len() as u64, seq + 1 - start);
        assert_released(dir.path(), &[], &format!("{strategy:?}: the follower"));
    }
}

/// [TRUNC-01] [TRUNC-04] A writer lets go of the segments a truncation by another handle or
/// process deleted, and frees their blocks in steps, while it keeps running: within a second
/// when idle, and at its next roll. (It used to hold them, maps and descriptors, until it
/// closed, so a prune beside a running capture freed no space.)
#[test]
fn the_writer_frees_segments_truncated_by_another_process() {
    if !Path::new("/proc/self/maps").exists() {
        return;
    }
    let seed = 12;
    let dir = temp_dir();
    let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
    let mut seq = 1;
    let mut fill = |log: &mut Log, segments: usize| {
        while segment_bases(dir.path()).len() < segments {
            log.append(&payload(seed, seq)).unwrap();
            seq += 1;
        }
        log.sync().unwrap();
    };
    fill(&mut log, 6);
    // Both phases: the writer idle (its sync thread looks), then rolling.
    for (phase, segments) in [("idle", 6), ("rolling", 9)] {
        fill(&mut log, segments);
        let bases = segment_bases(dir.path());
        // Descriptors without a lock, to see the blocks go.
        let watched: Vec<std::fs::File> = bases[..3]
            .iter()
            .map(|base| std::fs::File::open(segment_path(dir.path(), *base)).unwrap())
            .collect();
        let other = Reader::open(dir.path(), &fast_options()).unwrap();
        other.truncate_prefix(Seq(bases[3])).unwrap();
        drop(other);
        if phase == "rolling" {
            fill(&mut log, 7);
        }
        assert_released(dir.path(), &watched, &format!("{phase}: the writer"));
    }
    log.close().unwrap();
}

/// Descriptors this process holds open on segment files of `dir`.
fn segments_held_open(dir: &Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|target| target.starts_with(dir) && target.to_string_lossy().contains(".seg"))
        .count()
}

/// A writer that has rolled through hundreds of segments, and a follower that has read
/// them all, each hold a bounded number of them open (the oldest loaded are let go of), so a
/// long-running writer or a reader of a large store stays within the default limit of 1,024
/// open files; every record still reads back, from both.
#[test]
fn handles_hold_a_bounded_number_of_segments_open() {
    if !Path::new("/proc/self/fd").exists() {
        return;
    }
    let dir = temp_dir();
    let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
    let mut seq = 1;
    while log.reader().segments().len() < 400 {
        log.append(&payload(5, seq)).unwrap();
        seq += 1;
        if seq % 8 == 0 {
            log.sync().unwrap();
        }
    }
    log.sync().unwrap();
    assert!(segments_held_open(dir.path()) < 200, "the writer");
    let follower = Reader::open(dir.path(), &fast_options()).unwrap();
    for reader in [log.reader(), follower] {
        let all = read_all(&reader);
        assert_eq!(all.len() as u64, seq - 1);
        for (at, (got, bytes)) in all.iter().enumerate().step_by(101) {
            assert_eq!(*got, at as u64 + 1);
            assert_eq!(*bytes, payload(5, *got));
        }
        assert!(segments_held_open(dir.path()) < 400, "after reading");
    }
    log.close().unwrap();
}

/// [DIR-03] [RD-01] A second writer gets `Error::Locked` naming the directory, whether the
/// first writer is in this process or another; readers need no lock; the lock is released
/// when the holder closes or exits.
#[test]
fn a_second_writer_is_locked_out_in_this_process_and_from_another() {
    let dir = temp_dir();
    let expect_locked = |result: Result<(Log, RecoveryReport), Error>| {
        let Err(error) = result else {
            panic!("the second writer was let in");
        };
        let message = error.to_string();
        match error {
            Error::Locked { dir: named } => {
                assert_eq!(named, dir.path());
                assert!(
                    message.contains(&dir.path().display().to_string()),
                    "{message}"
                );
            }
            other => panic!("expected Locked, got {other:?}"),
        }
    };

    let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
    log.append(b"first").unwrap();
    // Another handle sees records once they are written to the file [LOG-02].
    log.flush().unwrap();
    expect_locked(open_log(dir.path(), fast_options()));
    let follower = Reader::open(dir.path(), &fast_options()).unwrap();
    assert_eq!(
        follower.get(Seq(1)).unwrap().as_deref(),
        Some(&b"first"[..])
    );

    let mut child = spawn_role("try-lock", dir.path(), &[]);
    let lines = lines_of(&mut child);
    let answer = expect_line(&lines, "TRY-LOCK");
    assert_eq!(answer, format!("TRY-LOCK locked {}", dir.path().display()));
    expect_success(child);
    log.close().unwrap();

    let mut child = spawn_role("hold-lock", dir.path(), &[]);
    let lines = lines_of(&mut child);
    let stdin = child.stdin.take().unwrap();
    expect_line(&lines, "HOLDING");
    expect_locked(open_log(dir.path(), fast_options()));
    let follower = Reader::open(dir.path(), &fast_options()).unwrap();
    assert_eq!(
        follower.next_seq().unwrap(),
        Seq(12),
        "the holder appended ten"
    );
    drop(stdin);
    expect_success(child);
    let (log, report) = open_log(dir.path(), fast_options()).unwrap();
    assert!(report.clean_shutdown);
    assert_eq!(read_all(&log.reader()).len(), 11);
}

/// [TRUNC-01] [DIR-04] A truncation made by a reader in another process, beside a live
/// writer, is durable and honoured: the writer keeps appending, its own later truncation
/// sees the moved start, and a reopen holds exactly the records from the new start on.
#[test]
fn truncation_from_another_process_is_honoured_by_the_writer() {
    let seed = 99;
    let dir = temp_dir();
    let (mut log, _) = open_log(dir.path(), fast_options()).unwrap();
    for seq in 1..=3_000 {
        log.append(&payload(seed, seq)).unwrap();
    }
    let segments = segment_bases(dir.path()).len();
    let before = 2_000;
    let mut child = spawn_role("truncate", dir.path(), &[(BEFORE_ENV, before.to_string())]);
    let lines = lines_of(&mut child);
    let line = expect_line(&lines, "TRUNCATED");
    expect_success(child);
    assert_eq!(line, format!("TRUNCATED {before}"));
    assert!(segment_bases(dir.path()).len() < segments);
    for seq in 3_001..=3_100 {
        log.append(&payload(seed, seq)).unwrap();
    }
    let report = log.truncate_prefix(Seq(before - 500)).unwrap();
    assert_eq!(report.start, Seq(before));
    assert!(!report.moved);
    let reader = log.reader();
    assert_eq!(reader.first_seq(), Seq(before));
    assert_eq!(reader.get(Seq(before - 1)).unwrap(), None);
    log.close().unwrap();
    let (log, report) = open_log(dir.path(), fast_options()).unwrap();
    assert_eq!((report.first_seq, report.next_seq), (before, 3_101));
    let all = read_all(&log.reader());
    assert_eq!(all.len(), 3_101 - before as usize);
    assert!(all.iter().all(|(seq, bytes)| *bytes == payload(seed, *seq)));
}

/// Not a test on its own: the entry point of the child processes the tests above start.
/// Without the role variable it does nothing.
#[test]
#[ignore = "child-process entry point, run by the cross-process tests"]
fn child_process_role() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let dir = std::env::var(DIR_ENV).unwrap();
    let dir = Path::new(&dir);
    match role.as_str() {
        "follower" => follower_role(dir),
        "try-lock" => match open_log(dir, fast_options()) {
            Err(Error::Locked { dir }) => println!("TRY-LOCK locked {}", dir.display()),
            Err(other) => println!("TRY-LOCK error {other}"),
            Ok(_) => println!("TRY-LOCK opened"),
        },
        "hold-lock" => {
            let (mut log, _) = open_log(
                dir,
                LogOptions {
                    sync_policy: SyncPolicy::EveryAppend,
                    ..fast_options()
                },
            )
            .unwrap();
            for i in 0..10 {
                log.append(format!("held {i}").as_bytes()).unwrap();
            }
            println!("HOLDING");
            // Hold the lock until the parent closes our stdin.
            let _ = std::io::stdin().lines().count();
            log.close().unwrap();
        }
        "truncate" => {
            let before: u64 = std::env::var(BEFORE_ENV).unwrap().parse().unwrap();
            let reader = Reader::open(dir, &fast_options()).unwrap();
            let report = reader.truncate_prefix(Seq(before)).unwrap();
            assert!(report.moved && report.segments_removed > 0, "{report:?}");
            println!("TRUNCATED {}", report.start);
        }
        other => panic!("unknown role {other}"),
    }
}

/// The follower child: tails until the last record while checking every truncation the
/// parent announces on stdin.
fn follower_role(dir: &Path) {
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let last: u64 = std::env::var(LAST_ENV).unwrap().parse().unwrap();
    let strategy = match std::env::var(STRATEGY_ENV).unwrap().as_str() {
        "pread" => ReadStrategy::Pread,
        _ => ReadStrategy::Mmap,
    };
    let reader = Reader::open(dir, &options(strategy)).unwrap();
    println!("READY");

    let r = reader.clone();
    let tailer = spawn("tail", move || tail(&r, seed, last, "follower tail"));
    let r = reader.clone();
    let waiter = spawn("async", move || {
        block_on(r.wait_for_async(Seq(last))).unwrap();
        assert!(r.next_seq().unwrap() > Seq(last));
    });
    let r = reader.clone();
    let truncations = spawn("truncations", move || {
        let mut checked = 0;
        for line in std::io::stdin().lines() {
            let line = line.unwrap();
            let Some(start) = line.strip_prefix("TRUNC ") else {
                continue;
            };
            let start: u64 = start.parse().unwrap();
            let mut cursor = r.cursor(Seq(1)).unwrap();
            let first = cursor.next().unwrap().map(|record| record.seq);
            assert!(
                first.is_none_or(|seq| seq >= Seq(start)),
                "after a truncation to {start} a new cursor began at {first:?}"
            );
            assert_eq!(
                r.get(Seq(start - 1)).unwrap(),
                None,
                "after a truncation to {start}, get({}) still found it",
                start - 1
            );
            assert!(r.first_seq() >= Seq(start), "first_seq {}", r.first_seq());
            checked += 1;
        }
        checked
    });
    let read = tailer.join().unwrap();
    waiter.join().unwrap();
    let checked = truncations.join().unwrap();
    assert!(checked > 0, "no truncation was announced");
    println!("FOLLOWER OK read {read} records, checked {checked} truncations");
}

/// [META-04] A follower counts as durable what the writer's watermark file says: records the
/// writer wrote but has not synced are visible and not durable, and become durable with the
/// writer's sync; the writer's own readers see its watermark.
#[test]
fn a_follower_counts_records_durable_once_the_writer_syncs_them() {
    let seed = 7;
    let dir = temp_dir();
    let options = with_policy(fast_options(), SyncPolicy::OsOnly);
    let (mut log, _) = open_log(dir.path(), options.clone()).unwrap();
    for seq in 1..=10 {
        log.append(&payload(seed, seq)).unwrap();
    }
    log.flush().unwrap();
    let follower = Reader::open(dir.path(), &options).unwrap();
    assert_eq!(follower.next_seq().unwrap(), Seq(11));
    assert_eq!(
        follower.durable_seq().unwrap(),
        Seq(1),
        "nothing is synced yet"
    );
    assert_eq!(log.reader().durable_seq().unwrap(), Seq(1));
    log.sync().unwrap();
    // The writer's watermark thread writes the file within milliseconds.
    support::wait_until("the follower sees the sync", || {
        follower.durable_seq().unwrap() == Seq(11)
    });
    log.append(&payload(seed, 11)).unwrap();
    log.flush().unwrap();
    assert_eq!(follower.next_seq().unwrap(), Seq(12));
    assert_eq!(follower.durable_seq().unwrap(), Seq(11));
    log.close().unwrap();
    assert_eq!(
        follower.durable_seq().unwrap(),
        Seq(12),
        "a clean close syncs"
    );
    // A new follower, with no writer at all, reads the last mark.
    let late = Reader::open(dir.path(), &options).unwrap();
    assert_eq!(late.durable_seq().unwrap(), Seq(12));
}

/// [META-04] A follower waiting for records that no writer syncs (`OsOnly`, or a writer that
/// died) syncs them itself after `WATERMARK_PATIENCE`, through its own descriptors; a follower that waits for records the writer syncs does not sync.
#[test]
fn a_follower_syncs_the_records_it_waits_for_when_the_writer_does_not() {
    let seed = 8;
    let dir = temp_dir();
    let options = with_policy(fast_options(), SyncPolicy::OsOnly);
    let (mut log, _) = open_log(dir.path(), options.clone()).unwrap();
    let mut seq = 1;
    while segment_bases(dir.path()).len() < 3 {
        log.append(&payload(seed, seq)).unwrap();
        seq += 1;
    }
    log.flush().unwrap();
    let io = FaultyIo::new(Arc::new(StdIo));
    let follower = Reader::open(dir.path(), &with_io(options.clone(), io.clone())).unwrap();
    // The writer syncs its rolls even under `OsOnly`, not the records after the last one.
    assert!(follower.durable_seq().unwrap() < Seq(seq));
    let waiting = Instant::now();
    block_on(follower.wait_durable_async(Seq(seq - 1))).unwrap();
    assert!(
        waiting.elapsed() >= WATERMARK_PATIENCE,
        "it did not wait for the writer"
    );
    assert_eq!(follower.durable_seq().unwrap(), Seq(seq));
    assert!(io.counts().1 > 0, "the follower did not sync");

    // Once the writer syncs, its mark answers and the follower does not sync.
    io.set_plan(Plan::default());
    log.append(&payload(seed, seq)).unwrap();
    log.sync().unwrap();
    block_on(follower.wait_durable_async(Seq(seq))).unwrap();
    assert_eq!(
        io.counts().1,
        0,
        "the follower synced although the writer had"
    );
    drop(log);
}

/// [META-04] A follower that cannot sync the records it waits for (a failing disk) reports
/// the error to the waiter instead of waiting forever.
#[test]
fn a_follower_whose_own_sync_fails_returns_the_error() {
    let dir = temp_dir();
    let options = with_policy(fast_options(), SyncPolicy::OsOnly);
    let (mut log, _) = open_log(dir.path(), options.clone()).unwrap();
    log.append(&payload(9, 1)).unwrap();
    log.flush().unwrap();
    let io = FaultyIo::new(Arc::new(StdIo));
    io.set_plan(Plan {
        fail_sync: Some(1),
        sticky: true,
        ..Plan::default()
    });
    let follower = Reader::open(dir.path(), &with_io(options, io.clone())).unwrap();
    let error = block_on(follower.wait_durable_async(Seq(1))).unwrap_err();
    assert!(matches!(error, Error::Io { .. }), "{error}");
    assert!(!io.injected().is_empty());
    drop(log);
}

/// [TRUNC-01] [RD-01] [VER-01] Followers opened, syncing and verifying while the writer rolls
/// and truncates its prefix up to its end: a segment a truncation removed after the follower
/// listed it is one whose records are below the start, never an error. (Opening lists again;
/// a follower's sync skips it; verification asks whether a truncation removed it.)
#[test]
fn followers_open_sync_and_verify_while_the_prefix_is_truncated_to_the_end() {
    let dir = temp_dir();
    let (mut log, _) = open_log(dir.path(), options(ReadStrategy::Mmap)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let path = dir.path().to_path_buf();
    let follower = {
        let done = done.clone();
        spawn("follower", move || {
            let mut rounds = 0u64;
            while !done.load(Ordering::Acquire) || rounds == 0 {
                let reader = Reader::open(&path, &LogOptions::default()).expect("open a follower");
                reader.sync().expect("a follower's sync");
                let report = reader.verify().expect("verify");
                assert!(report.is_ok(), "{:?}", report.problems);
                rounds += 1;
            }
            rounds
        })
    };
    let mut seq = 1;
    for _ in 0..300 {
        let first = log.active_segment();
        while log.active_segment() == first {
            log.append(&payload(1, seq)).unwrap();
            seq += 1;
        }
        log.flush().unwrap();
        log.truncate_prefix(log.next_seq()).unwrap();
    }
    done.store(true, Ordering::Release);
    assert!(follower.join().unwrap() > 0);
}
