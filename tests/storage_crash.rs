//! Process-kill crash test: a writer killed with `SIGKILL` at random moments never loses a
//! record it acknowledged as durable, and never leaves a corrupt or out-of-order one.
//!
//! This binary has no test harness (`harness = false`). Run normally it is the parent: for
//! each round it re-executes itself (`std::env::current_exe()`) as a child, with
//! `ESL_REPLAY_CRASH_CHILD` set. The child opens the log (recovering whatever the previous
//! kill left), appends single records and batches under a durable policy (`EveryAppend`, or
//! group commit with and without a gathering delay), waits until they are durable, and only
//! then prints `ACK <seq> <crc32 of the payload>`; now and then it truncates the prefix and
//! prints `TRUNC <start>` once that returned. The parent kills the child after a random
//! delay (sometimes during its open and recovery), then checks the directory: first as a
//! read-only follower on the unrecovered log, then by opening it as the writer. Every
//! acknowledged record at or above the start must be present with the acknowledged
//! checksum; every present record must be exactly the payload generated for its sequence;
//! sequences must be contiguous; the start must not go below an acknowledged truncation;
//! and sequences never restart. One directory is used for all rounds, so each round also
//! recovers from the previous kill and the parent's own clean close or simulated crash.
//!
//! 50 rounds run by default; `ESL_REPLAY_CRASH_ROUNDS=N` sets another number (a long
//! mode), as does `--ignored` (500 rounds). `ESL_REPLAY_CRASH_SEED` repeats a run. The
//! binary prints the closing line `N passed, M failed` and exits non-zero on failure.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use esl_replay::storage::{Log, LogOptions, ReadStrategy, Reader, Seq, SyncPolicy};

use crate::support::process::SpawnSafely as _;
use crate::support::storage::{MAX_PAYLOAD, Rng, checksum, small_options};

const TEST_NAME: &str = "process_kill_crash_rounds";
const CHILD_ENV: &str = "ESL_REPLAY_CRASH_CHILD";
const DIR_ENV: &str = "ESL_REPLAY_CRASH_DIR";
const SEED_ENV: &str = "ESL_REPLAY_CRASH_SEED";
const POLICY_ENV: &str = "ESL_REPLAY_CRASH_POLICY";
const ROUNDS_ENV: &str = "ESL_REPLAY_CRASH_ROUNDS";
const DEFAULT_ROUNDS: u64 = 50;
const LONG_ROUNDS: u64 = 500;
/// A child that was never killed gives up after this long (a safety net, not a test).
const CHILD_LIFETIME: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    if std::env::var_os(CHILD_ENV).is_some() {
        return child();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{TEST_NAME}: test");
        return ExitCode::SUCCESS;
    }
    // Like libtest: positional arguments are name filters.
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    if !filters.is_empty() && !filters.iter().any(|f| TEST_NAME.contains(f.as_str())) {
        println!("0 passed, 0 failed; 1 filtered out");
        return ExitCode::SUCCESS;
    }
    let long = args
        .iter()
        .any(|a| a == "--ignored" || a == "--include-ignored");
    let rounds = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if long { LONG_ROUNDS } else { DEFAULT_ROUNDS });
    parent(rounds)
}

/// The sync policies the child appends under, chosen per round.
fn policy(name: &str) -> SyncPolicy {
    match name {
        "every-append" => SyncPolicy::EveryAppend,
        "group-commit-delay" => SyncPolicy::GroupCommit {
            max_delay: Duration::from_millis(2),
            max_bytes: 64 << 10,
        },
        _ => SyncPolicy::default(),
    }
}

const POLICIES: [&str; 3] = ["every-append", "group-commit", "group-commit-delay"];

fn payload(seed: u64, seq: u64) -> Vec<u8> {
    support::storage::payload(seed, seq, MAX_PAYLOAD as usize)
}

/// The child: append, wait durable, acknowledge on stdout, until killed.
fn child() -> ExitCode {
    let run = || -> Result<(), String> {
        let dir = std::env::var(DIR_ENV).map_err(|e| e.to_string())?;
        let seed: u64 = std::env::var(SEED_ENV)
            .map_err(|e| e.to_string())?
            .parse()
            .map_err(|e| format!("{e}"))?;
        let policy = policy(&std::env::var(POLICY_ENV).unwrap_or_default());
        let options = LogOptions {
            sync_policy: policy,
            ..small_options()
        };
        let (mut log, report) = Log::open(&dir, options).map_err(|e| format!("open: {e}"))?;
        let mut out = std::io::stdout().lock();
        let say = |out: &mut std::io::StdoutLock<'_>, line: String| {
            writeln!(out, "{line}").and_then(|()| out.flush())
        };
        say(
            &mut out,
            format!("OPEN {} {}", report.first_seq, report.next_seq),
        )
        .map_err(|e| e.to_string())?;
        let mut rng = Rng::new(seed ^ report.next_seq.wrapping_mul(0x9E37));
        let started = Instant::now();
        while started.elapsed() < CHILD_LIFETIME {
            let next = log.next_seq().0;
            let count = if rng.chance(1, 2) { 1 } else { rng.range(2, 9) };
            let payloads: Vec<Vec<u8>> = (next..next + count).map(|s| payload(seed, s)).collect();
            let range = if count == 1 {
                let seq = log
                    .append(&payloads[0])
                    .map_err(|e| format!("append: {e}"))?;
                seq..seq.next()
            } else {
                log.append_batch(&payloads)
                    .map_err(|e| format!("append_batch: {e}"))?
            };
            if range != (Seq(next)..Seq(next + count)) {
                return Err(format!(
                    "appended {range:?}, expected {next}..{}",
                    next + count
                ));
            }
            log.wait_durable(Seq(next + count - 1))
                .map_err(|e| format!("wait_durable: {e}"))?;
            for (seq, bytes) in (next..).zip(&payloads) {
                say(&mut out, format!("ACK {seq} {:08x}", checksum(bytes)))
                    .map_err(|e| e.to_string())?;
            }
            if rng.chance(1, 30) {
                let before = (next + count).saturating_sub(rng.range(50, 400)).max(1);
                let report = log
                    .truncate_prefix(Seq(before))
                    .map_err(|e| format!("truncate_prefix: {e}"))?;
                say(&mut out, format!("TRUNC {}", report.start)).map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("crash child failed: {message}");
            ExitCode::from(3)
        }
    }
}

/// What one child said before it died.
#[derive(Debug, Default)]
struct Transcript {
    opened: Option<(u64, u64)>,
    acked: BTreeMap<u64, u32>,
    truncated: u64,
}

fn parse(lines: &[String]) -> Result<Transcript, String> {
    let mut transcript = Transcript::default();
    let mut expected = None;
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| -> Result<u64, String> {
            fields
                .get(i)
                .and_then(|f| f.parse().ok())
                .ok_or_else(|| format!("bad line {line:?}"))
        };
        match fields.first().copied() {
            Some("OPEN") => {
                transcript.opened = Some((number(1)?, number(2)?));
                expected = Some(number(2)?);
            }
            Some("ACK") => {
                let seq = number(1)?;
                if expected != Some(seq) {
                    return Err(format!("acknowledged {seq}, expected {expected:?}"));
                }
                expected = Some(seq + 1);
                let crc = fields
                    .get(2)
                    .and_then(|f| u32::from_str_radix(f, 16).ok())
                    .ok_or_else(|| format!("bad line {line:?}"))?;
                transcript.acked.insert(seq, crc);
            }
            Some("TRUNC") => transcript.truncated = transcript.truncated.max(number(1)?),
            // A line cut short by the kill is not an acknowledgement.
            _ => {}
        }
    }
    Ok(transcript)
}

/// State carried from round to round.
struct History {
    seed: u64,
    /// The next sequence the last verified open reported: never goes back.
    next: u64,
    /// The start the last verified open reported: never goes back.
    first: u64,
}

fn kill_after(child: &mut Child, delay: Duration) {
    std::thread::sleep(delay);
    // SIGKILL; the child may already have exited on its own (an error we report below).
    let _ = child.kill();
}

fn round(dir: &Path, round: u64, rng: &mut Rng, history: &mut History) -> Result<String, String> {
    let policy = POLICIES[(round % 3) as usize];
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .env(CHILD_ENV, "1")
        .env(DIR_ENV, dir)
        .env(SEED_ENV, history.seed.to_string())
        .env(POLICY_ENV, policy)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn_safely()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let lines = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    // Mostly mid-append, sometimes during the child's open and recovery.
    let delay = if rng.chance(1, 8) {
        rng.range(0, 15)
    } else {
        rng.range(15, 160)
    };
    kill_after(&mut child, Duration::from_millis(delay));
    let status = child.wait().map_err(|e| format!("wait: {e}"))?;
    let lines = lines.join().map_err(|_| "stdout reader panicked")?;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    if status.code().is_some() {
        return Err(format!(
            "the child exited by itself ({status}) instead of being killed: {stderr}"
        ));
    }
    let transcript = parse(&lines)?;
    if let Some((_, next)) = transcript.opened
        && next < history.next
    {
        return Err(format!(
            "the child reopened at {next}, below the verified {}: sequences restarted",
            history.next
        ));
    }

    // The unrecovered log, read-only, as a follower in another process would see it.
    if support::storage::segment_bases(dir).is_empty() {
        if !transcript.acked.is_empty() {
            return Err("acknowledged records but no segment file".into());
        }
    } else {
        let follower = Reader::open(dir, &small_options()).map_err(|e| format!("follower: {e}"))?;
        check_log(&follower, &transcript, history, "follower")?;
    }

    let strategy = if rng.chance(1, 2) {
        ReadStrategy::Mmap
    } else {
        ReadStrategy::Pread
    };
    let options = LogOptions {
        read_strategy: strategy,
        ..small_options()
    };
    let (log, report) = Log::open(dir, options).map_err(|e| format!("recovery: {e}"))?;
    let reader = log.reader();
    let (first, next) = check_log(&reader, &transcript, history, "writer")?;
    if (report.first_seq, report.next_seq) != (first, next) {
        return Err(format!("report {report:?} disagrees with the reader"));
    }
    history.next = next;
    history.first = first;
    // Alternate how the next child finds the log: cleanly closed, or crashed again.
    if rng.chance(1, 2) {
        log.close().map_err(|e| format!("close: {e}"))?;
    } else {
        log.flush().unwrap();
        log.simulate_crash();
    }
    Ok(format!(
        "round {round}: {policy}, killed after {delay} ms, {} acknowledged, log {first}..{next}, {:?}",
        transcript.acked.len(),
        report.torn_tail.map(|t| t.bytes_dropped)
    ))
}

/// Checks a view of the log against what was acknowledged; returns its bounds.
fn check_log(
    reader: &Reader,
    transcript: &Transcript,
    history: &History,
    who: &str,
) -> Result<(u64, u64), String> {
    let next = reader.next_seq().map_err(|e| format!("{who}: {e}"))?.0;
    let first = reader.first_seq().0;
    let last_acked = transcript.acked.keys().next_back().copied();
    if let Some(last) = last_acked
        && next <= last
    {
        return Err(format!(
            "{who}: acknowledged {last} but the log ends before it (next {next})"
        ));
    }
    if next < history.next {
        return Err(format!(
            "{who}: next {next} is below the verified {}",
            history.next
        ));
    }
    if first < transcript.truncated.max(history.first) {
        return Err(format!(
            "{who}: start {first} is below an acknowledged truncation to {}",
            transcript.truncated.max(history.first)
        ));
    }
    if let Some(last) = last_acked
        && first > last + 1
    {
        return Err(format!(
            "{who}: start {first} is past every acknowledged record (last {last})"
        ));
    }
    let mut expected = first;
    for item in reader.iter(Seq(1)).map_err(|e| format!("{who}: {e}"))? {
        let (seq, bytes) = item.map_err(|e| format!("{who}: reading: {e}"))?;
        if seq.0 != expected {
            return Err(format!("{who}: read {seq}, expected {expected}"));
        }
        let crc = checksum(&bytes);
        if bytes != payload(history.seed, seq.0) {
            return Err(format!("{who}: record {seq} is corrupt (crc {crc:08x})"));
        }
        if let Some(acked) = transcript.acked.get(&seq.0)
            && *acked != crc
        {
            return Err(format!(
                "{who}: record {seq} has crc {crc:08x}, acknowledged {acked:08x}"
            ));
        }
        expected += 1;
    }
    if expected != next {
        return Err(format!(
            "{who}: records end at {expected}, next_seq is {next}"
        ));
    }
    Ok((first, next))
}

fn parent(rounds: u64) -> ExitCode {
    let seed = Rng::seed_from_env(SEED_ENV);
    let mut rng = Rng::new(seed);
    let dir = support::storage::temp_dir();
    let mut history = History {
        seed,
        next: 1,
        first: 1,
    };
    let verbose = std::env::var_os("ESL_REPLAY_CRASH_VERBOSE").is_some();
    println!("running {rounds} crash rounds in {}", dir.path().display());
    let started = Instant::now();
    let mut passed = 0;
    let mut failed = 0;
    for i in 0..rounds {
        match round(dir.path(), i, &mut rng, &mut history) {
            Ok(summary) => {
                passed += 1;
                if verbose {
                    println!("{summary}");
                }
            }
            Err(message) => {
                failed += 1;
                println!("round {i} FAILED (seed {seed}): {message}");
                // Later rounds would start from a log already known to be wrong.
                break;
            }
        }
    }
    println!(
        "{TEST_NAME}: {} records verified at the end, {:.1} s",
        history.next - history.first,
        started.elapsed().as_secs_f64()
    );
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        // Keep the directory for inspection.
        let kept = dir.keep();
        println!("log kept at {}", kept.display());
        ExitCode::FAILURE
    }
}
