//! Forwarding to Redis Streams against a real `redis-server` started by the test (skipped,
//! saying so, when the binary is absent): records survive forwarder kills and a server
//! outage at least once and in append order, filters send only what they select, and the
//! checkpoint and metrics say where delivery got to.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use esl_replay::record::from_ndjson_line;
use rand::{Rng as _, SeedableRng as _};

use crate::support::forward::{
    Kind, Server, append_in_background, caught_up, check_in_order_at_least_once,
    checkpoint_sequence, expect_refusal, expect_success, fill_store, following_forwarder,
    free_port, health, http_get, outage, signal, spawn_forwarder, stdout_of, wait_exit,
};
use crate::support::wait_until;

const STREAM: &str = "fs:events";

/// Every entry of the stream as (sequence, artifact name, record body), in stream order.
fn read_stream(url: &str, stream: &str) -> Vec<(u64, String, String)> {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_connection().unwrap();
    let mut entries = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(10_000)
            .query(&mut connection)
            .unwrap();
        let Some(last) = reply.ids.last() else { break };
        start = format!("({}", last.id);
        for entry in &reply.ids {
            let sequence: String = entry.get("sequence").unwrap();
            let artifact: String = entry.get("artifact_name").unwrap();
            let body: String = entry.get("record").unwrap();
            entries.push((sequence.parse().unwrap(), artifact, body));
        }
    }
    entries
}

fn common_args(store: &Path, checkpoints: &Path, server: &Server) -> Vec<String> {
    args_for_stream(store, checkpoints, server, STREAM)
}

fn args_for_stream(store: &Path, checkpoints: &Path, server: &Server, stream: &str) -> Vec<String> {
    [
        "redis",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
        "--url",
        &server.url(),
        "--stream",
        stream,
        "--retry-max",
        "500ms",
        "--log-interval",
        "1s",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[test]
fn killed_and_restarted_forwarders_deliver_every_record_at_least_once_in_order() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    let log = dir.path().join("forwarder.log");
    const TOTAL: u64 = 100_000;
    let writer = append_in_background(&store, TOTAL, 1000, Duration::from_millis(25));
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut args = common_args(&store, &checkpoints, &server);
    args.extend(["--batch-size", "500"].map(str::to_owned));
    let mut kills = 0;
    let mut saved = Vec::new();
    for run in 0..6 {
        let mut following = args.clone();
        following.push("--follow".into());
        // Checkpoints saved after every batch, or coalesced: a kill then re-sends what was
        // acknowledged since the last save.
        let interval = ["0", "50ms", "300ms"][run % 3];
        following.extend(["--checkpoint-interval".to_owned(), interval.to_owned()]);
        let mut child = spawn_forwarder(&following, &log);
        std::thread::sleep(Duration::from_millis(rng.random_range(150..900)));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        saved.push(checkpoint_sequence(&checkpoints, "forward.redis.fs:events").unwrap_or(0));
    }
    writer.join().unwrap();
    // A last run without --follow delivers up to the store's end and exits.
    let mut child = spawn_forwarder(&args, &log);
    let status = wait_exit(&mut child, Duration::from_secs(90));
    let summary = stdout_of(&mut child);
    assert!(
        status.success(),
        "final run failed: {status}; see {}",
        log.display()
    );
    assert!(summary.contains("at sequence 100000"), "{summary}");
    eprintln!("checkpoints after {kills} kills: {saved:?}");
    assert!(
        saved.windows(2).all(|pair| pair[0] <= pair[1]),
        "checkpoints never go back: {saved:?}"
    );
    // At least one kill interrupted delivery mid-stream (later ones may find it caught up).
    assert!(
        saved.iter().any(|&s| s > 0 && s < TOTAL),
        "kills should land mid-stream: {saved:?}"
    );

    let entries = read_stream(&server.url(), STREAM);
    let sequences: Vec<u64> = entries.iter().map(|(sequence, _, _)| *sequence).collect();
    let repeats = check_in_order_at_least_once(&sequences, TOTAL);
    eprintln!("{} entries, {repeats} re-sent", entries.len());
    // Bodies are the reference NDJSON of the record they claim to be.
    for (sequence, artifact, body) in entries.iter().step_by(997) {
        let record = from_ndjson_line(body).unwrap();
        assert_eq!(record.append_sequence(), *sequence);
        assert_eq!(record.artifact_name(), artifact);
        assert!(record.verify_checksum());
    }
    assert_eq!(
        checkpoint_sequence(&checkpoints, "forward.redis.fs:events"),
        Some(TOTAL)
    );
}

#[test]
fn a_server_outage_is_retried_with_backoff_and_shows_as_lag() {
    let Some(mut server) = Server::start(Kind::Redis) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    let log = dir.path().join("forwarder.log");
    const TOTAL: u64 = 20_000;
    let writer = append_in_background(&store, TOTAL, 100, Duration::from_millis(25));
    let args = common_args(&store, &checkpoints, &server);
    let (mut child, metrics_port) = following_forwarder(&args, &log, 2000);

    let outage = outage(&mut server, metrics_port, 2);
    let (_, exposition) = http_get(metrics_port, "/metrics").unwrap();
    server.restart();

    let during = &outage.during;
    assert!(outage.saw_503, "/health reports the failing target");
    assert!(during["retries"].as_u64().unwrap() >= 2, "{during}");
    assert!(!during["last_error"].is_null(), "{during}");
    assert!(
        outage.worst_lag_records > 0,
        "lag in records during the outage"
    );
    assert!(
        outage.worst_lag_seconds >= 2.0,
        "lag in seconds grows through the outage: {}",
        outage.worst_lag_seconds
    );
    assert!(
        exposition.contains("esl_replay_forward_lag_seconds{target=\"redis\"}")
            && exposition.contains("esl_replay_forward_retries_total{target=\"redis\"}"),
        "{exposition}"
    );

    writer.join().unwrap();
    let (status, body) = caught_up(metrics_port, TOTAL);
    assert_eq!(status, 200);
    assert_eq!(body["lag_seconds"], 0.0);
    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(
        status.success(),
        "SIGTERM ends the forwarder cleanly: {status}"
    );
    assert!(stdout_of(&mut child).contains("stopped by signal"));
    assert_eq!(
        checkpoint_sequence(&checkpoints, "forward.redis.fs:events"),
        Some(TOTAL)
    );
    let sequences: Vec<u64> = read_stream(&server.url(), STREAM)
        .iter()
        .map(|(sequence, _, _)| *sequence)
        .collect();
    check_in_order_at_least_once(&sequences, TOTAL);
}

#[test]
fn criteria_select_what_is_sent_and_trimming_bounds_the_stream() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    fill_store(&store, 5000);
    let mut args = common_args(&store, &checkpoints, &server);
    args.extend(["--artifact-name", "bgapi.complete"].map(str::to_owned));
    let log = dir.path().join("a.log");
    let mut child = spawn_forwarder(&args, &log);
    expect_success(&mut child, &log);
    let entries = read_stream(&server.url(), STREAM);
    // Every fifth dataset record is a bgapi.complete.
    assert_eq!(entries.len(), 1000);
    assert!(
        entries
            .iter()
            .all(|(_, artifact, _)| artifact == "bgapi.complete")
    );
    let sequences: HashSet<u64> = entries.iter().map(|(sequence, _, _)| *sequence).collect();
    assert_eq!(sequences, (1..=5000).filter(|s| (s - 1) % 5 == 0).collect());
    // The checkpoint moves past the records the filter left out.
    assert_eq!(
        checkpoint_sequence(&checkpoints, "forward.redis.fs:events"),
        Some(5000)
    );

    // A second stream, trimmed to about 1000 entries, with its own checkpoint key.
    let mut args = args_for_stream(&store, &checkpoints, &server, "fs:trimmed");
    args.extend(["--maxlen", "1000", "--checkpoint-key", "trimmed"].map(str::to_owned));
    let log = dir.path().join("b.log");
    let mut child = spawn_forwarder(&args, &log);
    expect_success(&mut child, &log);
    let trimmed = read_stream(&server.url(), "fs:trimmed");
    assert!(
        (1000..2000).contains(&trimmed.len()),
        "MAXLEN ~ 1000 keeps about 1000: {}",
        trimmed.len()
    );
    assert_eq!(trimmed.last().map(|entry| entry.0), Some(5000));
    assert_eq!(checkpoint_sequence(&checkpoints, "trimmed"), Some(5000));

    // Nothing new: a rerun sends nothing and keeps the checkpoint.
    let log = dir.path().join("c.log");
    let mut child = spawn_forwarder(&args, &log);
    expect_success(&mut child, &log);
    assert!(stdout_of(&mut child).starts_with("forwarded 0 records"));

    // A key of another type: every XADD inside EXEC fails, which retrying cannot fix.
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let _: () = redis::cmd("SET")
        .arg("fs:string")
        .arg("not a stream")
        .query(&mut connection)
        .unwrap();
    let mut args = args_for_stream(&store, &checkpoints, &server, "fs:string");
    args.extend(["--checkpoint-key", "string"].map(str::to_owned));
    let log = dir.path().join("d.log");
    expect_refusal(&args, &log, "WRONGTYPE");
    // One failed command and the count, not one line per command of the batch.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("1000 of its commands failed, the first with: WRONGTYPE"),
        "{text}"
    );
    assert_eq!(text.matches("WRONGTYPE").count(), 1, "{text}");
    // Saved before the first read, the checkpoint says that nothing was delivered.
    assert_eq!(checkpoint_sequence(&checkpoints, "string"), Some(0));
}

/// Sends `CONFIG SET name value` to the server.
fn config_set(server: &Server, name: &str, value: &str) {
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let (): () = redis::cmd("CONFIG")
        .arg("SET")
        .arg(name)
        .arg(value)
        .query(&mut connection)
        .unwrap();
}

/// A full Redis (`maxmemory` reached under `noeviction`: "OOM command not allowed") is a
/// state that passes: the forwarder retries with backoff, `/health` says so with the
/// first failed command and their count, and once memory is raised everything arrives.
#[test]
fn a_full_redis_is_retried_until_memory_is_raised() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    config_set(&server, "maxmemory-policy", "noeviction");
    config_set(&server, "maxmemory", "1");
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    fill_store(&store, 500);
    let metrics_port = free_port();
    let mut args = common_args(&store, &checkpoints, &server);
    args.extend(
        [
            "--batch-size",
            "100",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ]
        .map(str::to_owned),
    );
    let log = dir.path().join("oom.log");
    let mut child = spawn_forwarder(&args, &log);
    let mut during = serde_json::Value::Null;
    wait_until("the full server to show in /health", || {
        let Some((status, body)) = health(metrics_port) else {
            return false;
        };
        let retrying = status == 503 && body["retries"].as_u64().unwrap_or(0) >= 3;
        during = body;
        retrying
    });
    assert_eq!(during["status"], "retrying", "{during}");
    let error = during["last_error"].as_str().unwrap();
    assert!(
        error.contains("100 of its commands failed") && error.matches("OOM").count() == 1,
        "{error}"
    );
    config_set(&server, "maxmemory", "0");
    expect_success(&mut child, &log);
    let sequences: Vec<u64> = read_stream(&server.url(), STREAM)
        .iter()
        .map(|entry| entry.0)
        .collect();
    assert_eq!(sequences, (1..=500).collect::<Vec<_>>());
}

/// A server that requires a password refuses a forwarder without one or with a wrong one
/// at once (exit 2, saying which), not as a broken pipe retried forever, even with
/// batches of one record.
#[test]
fn a_missing_or_wrong_redis_password_is_refused() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    config_set(&server, "requirepass", "right");
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    fill_store(&store, 50);
    let mut args = common_args(&store, &checkpoints, &server);
    args.extend(["--batch-size", "1"].map(str::to_owned));
    expect_refusal(
        &args,
        &dir.path().join("none.log"),
        "authentication required: the server needs a password and none was given",
    );
    let password = dir.path().join("password");
    std::fs::write(&password, "wrong\n").unwrap();
    args.extend(["--password-file", password.to_str().unwrap()].map(str::to_owned));
    expect_refusal(
        &args,
        &dir.path().join("wrong.log"),
        "authentication failed: the server refused the password",
    );
    std::fs::write(&password, "right\n").unwrap();
    let log = dir.path().join("right.log");
    let mut child = spawn_forwarder(&args, &log);
    expect_success(&mut child, &log);
}
