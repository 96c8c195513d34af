//! `esl-replay forward redis` routing and trimming, against a real `redis-server` (skipped,
//! saying so, when absent; required under `CI=true`) and stores captured from the built-in
//! simulator with bgapi jobs sent through the capture's gateway: a consumer of both streams
//! sees exactly the configured events (by `Event-Sequence`, in order, once) and the
//! `BACKGROUND_JOB` results only on the jobs stream, across resumed runs; records that are
//! not events follow the main stream's list; `MAXLEN ~` bounds each stream on its own; and
//! the age limit removes, on a timer, exactly the entries older than each stream's expiry
//! (time is driven by the entry ids the test adds and by a short expiry).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::forward::checkpoint_sequence;
use crate::support::routing::{
    Entry, Redis, Running, StoredEvent, capture, expect_refusal, read_stream, run_cli, simulator,
    stored_events, stored_records, wait_until,
};
use esl_replay::server::RunningServer;

/// A `redis-server`, the simulator, and a temporary directory for the store and the
/// checkpoints.
struct Setup {
    redis: Redis,
    dir: tempfile::TempDir,
    esl: String,
    /// Dropped before its runtime.
    _switch: RunningServer,
    _runtime: tokio::runtime::Runtime,
}

impl Setup {
    /// Everything started, with the simulator generating `rate` events/s; `None` (the test
    /// skips) without `redis-server`.
    fn start(rate: f64) -> Option<Setup> {
        Setup::start_with(rate, None)
    }

    /// As [`Setup::start`], Redis requiring `password`.
    fn start_with(rate: f64, password: Option<&str>) -> Option<Setup> {
        let redis = Redis::start_with(password)?;
        let (runtime, switch) = simulator(rate);
        Some(Setup {
            redis,
            dir: tempfile::tempdir().unwrap(),
            esl: switch.local_addr().to_string(),
            _switch: switch,
            _runtime: runtime,
        })
    }

    /// Captures at least `events` more events and `jobs` job results; their Job-UUIDs.
    fn capture(&self, events: usize, jobs: usize) -> Vec<String> {
        capture(&self.dir.path().join("store"), &self.esl, events, jobs)
    }

    fn records(&self) -> Vec<esl_replay::record::Record> {
        stored_records(&self.dir.path().join("store"))
    }

    /// Runs a forwarder to the store's end; the number of records it says it forwarded.
    fn forward(&self, extra: &[&str]) -> u64 {
        forward(self.dir.path(), &self.redis, extra)
    }
}

/// `forward redis` over the store in `dir` to `redis`, with `extra` flags.
fn forward_args(dir: &Path, redis: &Redis, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["forward", "redis", "--store"].map(str::to_owned).to_vec();
    args.push(dir.join("store").display().to_string());
    args.push("--checkpoint-dir".into());
    args.push(dir.join("checkpoints").display().to_string());
    args.extend(["--url".into(), redis.url()]);
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    args
}

/// Runs a forwarder to the store's end; the number of records it says it forwarded.
fn forward(dir: &Path, redis: &Redis, extra: &[&str]) -> u64 {
    let args = forward_args(dir, redis, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (code, stdout, stderr) = run_cli(&args, &[]);
    assert_eq!(code, Some(0), "{stderr}");
    stdout
        .strip_prefix("forwarded ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {stdout:?}"))
}

/// The `event_sequence` of every `fs-events-v1` entry.
fn event_sequences(entries: &[Entry]) -> Vec<u64> {
    entries
        .iter()
        .map(|entry| {
            let body: serde_json::Value = serde_json::from_str(entry.field("record")).unwrap();
            body["event_sequence"].as_u64().unwrap()
        })
        .collect()
}

fn sequences_of<'a>(events: impl Iterator<Item = &'a StoredEvent>) -> Vec<u64> {
    events.map(|event| event.event_sequence).collect()
}

#[test]
fn each_stream_holds_exactly_its_events_once_in_order_across_resumed_runs() {
    let Some(setup) = Setup::start(2_000.0) else {
        return;
    };
    let flags = [
        "--stream",
        "ev",
        "--stream-events",
        "CHANNEL_ANSWER,DTMF,CUSTOM",
        "--jobs-stream",
        "jobs",
        "--message-format",
        "fs-events-v1",
        "--batch-size",
        "50",
    ];
    // Two captures, each forwarded by a run that resumes after the other's checkpoint.
    let mut jobs = setup.capture(300, 3);
    let first = setup.forward(&flags);
    jobs.extend(setup.capture(300, 2));
    let second = setup.forward(&flags);

    let records = setup.records();
    let events = stored_events(&records);
    let listed = ["CHANNEL_ANSWER", "DTMF", "CUSTOM"];
    let expected_ev = sequences_of(events.iter().filter(|e| listed.contains(&e.name.as_str())));
    let expected_jobs = sequences_of(events.iter().filter(|e| e.name == "BACKGROUND_JOB"));
    assert!(
        expected_ev.len() > 100,
        "{} listed events",
        expected_ev.len()
    );
    assert_eq!(expected_jobs.len(), 5);

    let mut connection = setup.redis.connection(0);
    let ev = read_stream(&mut connection, "ev");
    let job_entries = read_stream(&mut connection, "jobs");
    assert_eq!(event_sequences(&ev), expected_ev);
    assert_eq!(event_sequences(&job_entries), expected_jobs);
    let job_uuids: BTreeSet<&str> = job_entries.iter().map(|e| e.field("job_uuid")).collect();
    assert_eq!(job_uuids, jobs.iter().map(String::as_str).collect());
    assert!(ev.iter().all(|e| e.field("event_name") != "BACKGROUND_JOB"));
    // What each run says it forwarded is what it routed; the rest was skipped, and the
    // checkpoint still moved to the store's end.
    assert_eq!(first + second, (ev.len() + job_entries.len()) as u64);
    assert!(first > 0 && second > 0);
    assert_eq!(
        checkpoint_sequence(&setup.dir.path().join("checkpoints"), "forward.redis.ev"),
        records.last().map(|r| r.append_sequence())
    );
}

#[test]
fn records_that_are_not_events_go_to_the_main_stream_unless_it_lists_events() {
    let Some(setup) = Setup::start(2_000.0) else {
        return;
    };
    setup.capture(100, 2);
    let records = setup.records();
    let job_events: Vec<u64> = records
        .iter()
        .filter(|r| r.artifact_name() == "event.raw" && r.event_name() == Some("BACKGROUND_JOB"))
        .map(|r| r.append_sequence())
        .collect();
    assert_eq!(job_events.len(), 2);

    // No list on the main stream: every record but the BACKGROUND_JOB events, including
    // the capture's commands, replies and its bgapi.complete twins of the job results.
    setup.forward(&["--stream", "all", "--jobs-stream", "all:jobs"]);
    let mut connection = setup.redis.connection(0);
    let all: Vec<u64> = read_stream(&mut connection, "all")
        .iter()
        .map(Entry::sequence)
        .collect();
    let others: Vec<u64> = records
        .iter()
        .map(|r| r.append_sequence())
        .filter(|s| !job_events.contains(s))
        .collect();
    assert_eq!(all, others);
    let artifacts: BTreeSet<String> = read_stream(&mut connection, "all")
        .iter()
        .map(|e| e.field("artifact_name").to_owned())
        .collect();
    for kind in [
        "bgapi.dispatch",
        "command.reply",
        "bgapi.complete",
        "event.raw",
    ] {
        assert!(
            artifacts.contains(kind),
            "{kind} missing from {artifacts:?}"
        );
    }
    let jobs: Vec<u64> = read_stream(&mut connection, "all:jobs")
        .iter()
        .map(Entry::sequence)
        .collect();
    assert_eq!(jobs, job_events);

    // A list on the main stream: only the events it names, no other record.
    setup.forward(&[
        "--stream",
        "listed",
        "--stream-events",
        "HEARTBEAT,CHANNEL_CREATE",
    ]);
    let listed = read_stream(&mut connection, "listed");
    let expected: Vec<u64> = records
        .iter()
        .filter(|r| {
            r.artifact_name() == "event.raw"
                && matches!(r.event_name(), Some("HEARTBEAT" | "CHANNEL_CREATE"))
        })
        .map(|r| r.append_sequence())
        .collect();
    assert!(!expected.is_empty());
    assert_eq!(
        listed.iter().map(Entry::sequence).collect::<Vec<_>>(),
        expected
    );
}

#[test]
fn maxlen_keeps_each_stream_near_its_own_bound() {
    // The server wants a password, read from a file.
    let Some(setup) = Setup::start_with(5_000.0, Some("routing-secret")) else {
        return;
    };
    let password = setup.dir.path().join("redis.password");
    std::fs::write(&password, "routing-secret\n").unwrap();
    setup.capture(1_500, 0);
    setup.forward(&[
        "--password-file",
        password.to_str().unwrap(),
        "--stream",
        "ev",
        "--maxlen",
        "200",
        "--jobs-stream",
        "dtmf",
        "--jobs-events",
        "DTMF",
        "--jobs-maxlen",
        "50",
    ]);
    let records = setup.records();
    let dtmf: Vec<u64> = stored_events(&records)
        .iter()
        .filter(|e| e.name == "DTMF")
        .map(|e| e.append_sequence)
        .collect();
    let rest: Vec<u64> = records
        .iter()
        .map(|r| r.append_sequence())
        .filter(|s| !dtmf.contains(s))
        .collect();
    assert!(
        dtmf.len() > 150 && rest.len() > 300,
        "{} {}",
        dtmf.len(),
        rest.len()
    );
    let mut connection = setup.redis.connection(0);
    // `~` trims whole macro nodes (at most 100 entries each): at least the bound is kept,
    // and fewer than one node more; what is kept is the newest.
    for (key, bound, routed) in [("ev", 200, &rest), ("dtmf", 50, &dtmf)] {
        let kept: Vec<u64> = read_stream(&mut connection, key)
            .iter()
            .map(Entry::sequence)
            .collect();
        assert!(
            (bound..bound + 100).contains(&kept.len()),
            "{key}: {} entries",
            kept.len()
        );
        assert_eq!(kept[..], routed[routed.len() - kept.len()..], "{key}");
    }
}

#[test]
fn entries_older_than_each_streams_age_are_trimmed_on_a_timer() {
    let Some(setup) = Setup::start(2_000.0) else {
        return;
    };
    let mut connection = setup.redis.connection(0);
    // `~` removes whole macro nodes only; one entry per node makes it exact, so that the
    // cut-off itself is checked.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stream-node-max-entries")
        .arg(1)
        .query(&mut connection)
        .unwrap();
    let (seconds, _): (u64, u64) = redis::cmd("TIME").query(&mut connection).unwrap();
    let now_ms = seconds * 1000;
    let hour_ms = 3_600_000;
    // Entries the test dates by their ids: two hours and half an hour old.
    for (key, age_ms) in [
        ("ev", 2 * hour_ms),
        ("ev", hour_ms / 2),
        ("jobs", hour_ms / 2),
    ] {
        for n in 0..20 {
            let _: String = redis::cmd("XADD")
                .arg(key)
                .arg(format!("{}-{n}", now_ms - age_ms))
                .arg("dated")
                .arg(age_ms)
                .query(&mut connection)
                .unwrap();
        }
    }

    setup.capture(100, 2);
    let last = setup.records().last().map(|r| r.append_sequence());
    // Events expire after an hour; job results after two seconds, which only a later
    // round of trimming can see, while the forwarder has nothing left to send.
    let args = forward_args(
        setup.dir.path(),
        &setup.redis,
        &[
            "--follow",
            "--stream",
            "ev",
            "--max-age",
            "1h",
            "--jobs-stream",
            "jobs",
            "--jobs-max-age",
            "2s",
            "--trim-interval",
            "100ms",
        ],
    );
    let child = Command::new(env!("CARGO_BIN_EXE_esl-replay"))
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Running::new(child);
    let checkpoints = setup.dir.path().join("checkpoints");
    wait_until("delivery of the whole store", || {
        checkpoint_sequence(&checkpoints, "forward.redis.ev") == last
    });
    wait_until("the job results to expire", || {
        read_stream(&mut connection, "jobs").is_empty()
    });
    wait_until("the two-hour-old events to go", || {
        read_stream(&mut connection, "ev")
            .first()
            .is_some_and(|e| e.millis() == now_ms - hour_ms / 2)
    });
    let output = child.terminate();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);

    let ev = read_stream(&mut connection, "ev");
    let dated: Vec<&Entry> = ev
        .iter()
        .filter(|e| e.fields.contains_key("dated"))
        .collect();
    assert_eq!(dated.len(), 20, "the half-hour-old events stay");
    assert!(dated.iter().all(|e| e.millis() == now_ms - hour_ms / 2));
    let forwarded = ev.len() - dated.len();
    // Both job results were delivered (counted, checkpointed) before they expired.
    assert!(
        stdout.starts_with(&format!("forwarded {} records", forwarded + 2)),
        "{stdout} ({forwarded} events kept)"
    );
}

#[test]
fn layouts_that_cannot_work_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let checkpoints = dir.path().join("checkpoints").display().to_string();
    let base = [
        "forward",
        "redis",
        "--store",
        &store,
        "--checkpoint-dir",
        &checkpoints,
    ];
    for (extra, reason) in [
        (
            &["--jobs-events", "DTMF"][..],
            "--jobs-stream <JOBS_STREAM>",
        ),
        (&["--stream-events", ","][..], "names no event"),
        (
            &["--jobs-stream", "fs:events"][..],
            "both \"fs:events\": name two streams",
        ),
        (&["--maxlen", "0"][..], "--maxlen"),
        (&["--trim-interval", "0s"][..], "longer than zero"),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        expect_refusal(&args, &[], reason);
    }
}
