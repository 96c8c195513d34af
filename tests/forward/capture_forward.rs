//! `esl-replay capture --forward-redis` and `--forward-nats`: one process captures from the
//! built-in simulator and forwards what it stores to a real `redis-server` or `nats-server -js`
//! (started by the test; skipped, saying so, when the binary is absent). Every stored record reaches the stream in append order, even
//! when Redis is down for part of the capture: the store is the buffer, and the checkpoint
//! (shared with `esl-replay forward redis`) says where delivery got to.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::forward::{
    Kind, Server, check_in_order_at_least_once, checkpoint_sequence, free_port, http_get, signal,
    wait_exit,
};
use crate::support::process::SpawnSafely as _;
use crate::support::{self, cli};

const STREAM: &str = "fs:events";

/// The simulator on a free port, ending its stream after `events` events at `rate`/s.
fn simulator(events: u64, rate: u64) -> (Child, String) {
    let address = format!("127.0.0.1:{}", free_port());
    let child = cli::command()
        .args(["simulate", "--listen", &address, "--rate"])
        .arg(rate.to_string())
        .arg("--max-events")
        .arg(events.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_safely()
        .unwrap();
    support::wait_until("the simulator to listen", || {
        std::net::TcpStream::connect(&address).is_ok()
    });
    (child, address)
}

fn capture(esl: &str, dir: &Path, redis: &str, duration: &str) -> Child {
    capture_forwarding(
        esl,
        dir,
        duration,
        &["--forward-redis", redis, "--forward-stream", STREAM],
    )
}

fn capture_forwarding(esl: &str, dir: &Path, duration: &str, forward: &[&str]) -> Child {
    cli::command()
        .args(["capture", "--esl", esl, "--duration", duration])
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--checkpoint-dir")
        .arg(dir.join("checkpoints"))
        .args(forward)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("capture.log")).unwrap())
        .spawn_safely()
        .unwrap()
}

/// The `sequence` field of every entry of the stream, in stream order.
/// Captures `events` events of the simulator at `rate`/s for `duration`, forwarding as the
/// `forward` flags say, and checks that the capture exited 0.
fn run_capture(dir: &Path, events: u64, rate: u64, duration: &str, forward: &[&str]) {
    let (mut simulator, esl) = simulator(events, rate);
    let mut child = capture_forwarding(&esl, dir, duration, forward);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let _ = simulator.kill();
    assert!(status.success(), "{}", log_of(dir));
}

fn stream_sequences(url: &str) -> Vec<u64> {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_connection().unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(STREAM)
        .arg("-")
        .arg("+")
        .query(&mut connection)
        .unwrap();
    reply
        .ids
        .iter()
        .map(|entry| {
            let sequence: String = entry.get("sequence").unwrap();
            sequence.parse().unwrap()
        })
        .collect()
}

fn stored_records(store: &Path) -> u64 {
    let store = esl_replay::store::open_read_only(store, None).unwrap();
    store.stats().unwrap().last_sequence
}

fn log_of(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("capture.log")).unwrap_or_default()
}

#[test]
fn captured_records_are_forwarded_to_redis_in_one_process() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let forward = ["--forward-redis", url.as_str(), "--forward-stream", STREAM];
    run_capture(dir.path(), 2_000, 20_000, "1500ms", &forward);
    let stored = stored_records(&dir.path().join("store"));
    assert!(stored > 1_000, "{stored} records stored");
    let sequences = stream_sequences(&server.url());
    assert_eq!(check_in_order_at_least_once(&sequences, stored), 0);
    assert_eq!(
        checkpoint_sequence(&dir.path().join("checkpoints"), "forward.redis.fs:events"),
        Some(stored),
        "{}",
        log_of(dir.path())
    );
}

#[test]
fn records_captured_while_redis_is_down_are_delivered_when_it_is_back() {
    let Some(mut server) = Server::start(Kind::Redis) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut simulator, esl) = simulator(20_000, 2_000);
    let mut child = capture(&esl, dir.path(), &server.url(), "6s");
    support::wait_until("records forwarded before the outage", || {
        !stream_sequences(&server.url()).is_empty()
    });
    server.stop();
    let store = dir.path().join("store");
    let before = stored_records(&store);
    support::wait_until("records captured while Redis is down", || {
        stored_records(&store) > before + 1_000
    });
    server.restart();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let _ = simulator.kill();
    assert!(status.success(), "{}", log_of(dir.path()));
    let stored = stored_records(&dir.path().join("store"));
    assert!(stored > 5_000, "{stored} records stored");
    let sequences = stream_sequences(&server.url());
    let repeats = check_in_order_at_least_once(&sequences, stored);
    eprintln!("{repeats} entries re-sent after the outage");
}

/// JetStream from the capture process: every stored record once in the stream (re-sent
/// batches are deduplicated by record id), and the checkpoint at the store's end.
#[test]
fn captured_records_are_forwarded_to_jetstream_in_one_process() {
    let Some(server) = Server::start(Kind::Nats) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let forward = [
        "--forward-nats",
        url.as_str(),
        "--forward-subject",
        "fs.events",
        "--forward-jetstream-stream",
        "FS_EVENTS",
    ];
    run_capture(dir.path(), 2_000, 20_000, "1500ms", &forward);
    let stored = stored_records(&dir.path().join("store"));
    assert!(stored > 1_000, "{stored} records stored");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (messages, last) = runtime.block_on(async {
        let client = async_nats::connect(url.as_str()).await.unwrap();
        let context = async_nats::jetstream::new(client);
        let mut stream = context.get_stream("FS_EVENTS").await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        (state.messages, state.last_sequence)
    });
    assert_eq!((messages, last), (stored, stored), "{}", log_of(dir.path()));
    assert_eq!(
        checkpoint_sequence(&dir.path().join("checkpoints"), "forward.nats.fs.events"),
        Some(stored)
    );
}

/// The `[forward]` table of the configuration file sets up the same forwarder, and
/// forwarding without a checkpoint directory is refused before anything starts.
#[test]
fn forwarding_is_configured_by_the_config_file_and_needs_a_checkpoint_dir() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mut simulator, esl) = simulator(1_000, 10_000);
    let config = dir.path().join("capture.toml");
    std::fs::write(
        &config,
        format!(
            "store = {store:?}\ncheckpoint_dir = {checkpoints:?}\n\n[forward]\nredis = {url:?}\nstream = \"fs:configured\"\n\n[[node]]\nesl = {esl:?}\n",
            store = dir.path().join("store"),
            checkpoints = dir.path().join("checkpoints"),
            url = server.url(),
        ),
    )
    .unwrap();
    let mut child = cli::command()
        .args(["capture", "--duration", "1500ms", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("capture.log")).unwrap())
        .spawn_safely()
        .unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let _ = simulator.kill();
    assert!(status.success(), "{}", log_of(dir.path()));
    let stored = stored_records(&dir.path().join("store"));
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let length: u64 = redis::cmd("XLEN")
        .arg("fs:configured")
        .query(&mut connection)
        .unwrap();
    assert_eq!(length, stored, "{}", log_of(dir.path()));

    let refused = cli::command()
        .args(["capture", "--esl", "127.0.0.1:1", "--forward-redis"])
        .arg(server.url())
        .arg("--store")
        .arg(dir.path().join("other"))
        .output_safely()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("--checkpoint-dir"), "{message}");
    assert!(!dir.path().join("other").exists(), "nothing was started");
}

/// The JSON types a schema property allows (`type` as a string or a list).
fn allowed_types(property: &serde_json::Value) -> Vec<String> {
    match &property["type"] {
        serde_json::Value::String(one) => vec![one.clone()],
        serde_json::Value::Array(many) => many
            .iter()
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn type_of(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "boolean",
        serde_json::Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// Checks `message` against docs/schemas/fs-events-v1.json: every required property, each
/// property's type or constant, and the headers' values.
fn check_against_schema(schema: &serde_json::Value, message: &serde_json::Value) {
    let object = message.as_object().expect("an object");
    for name in schema["required"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        assert!(object.contains_key(name), "{name} missing in {message}");
    }
    for (name, property) in schema["properties"].as_object().unwrap() {
        let Some(value) = object.get(name) else {
            continue;
        };
        if let Some(constant) = property.get("const") {
            assert_eq!(value, constant, "{name}");
        }
        let types = allowed_types(property);
        if !types.is_empty() {
            let found = type_of(value);
            assert!(
                types
                    .iter()
                    .any(|t| t == found || (t == "number" && found == "integer")),
                "{name} is {found}, the schema allows {types:?}: {message}"
            );
        }
    }
    for (name, value) in object["headers"].as_object().unwrap() {
        let fine = value.is_string()
            || value
                .as_array()
                .is_some_and(|items| items.iter().all(serde_json::Value::is_string));
        assert!(fine, "header {name}: {value}");
    }
}

/// `--forward-format fs-events-v1`: every captured event, and nothing else, reaches the
/// stream as an object that passes docs/schemas/fs-events-v1.json, with the event's own
/// fields (type, call, host, sequence) and the stored record's id and sequence.
#[test]
fn events_are_forwarded_in_the_fs_events_v1_form() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let forward = [
        "--forward-redis",
        url.as_str(),
        "--forward-format",
        "fs-events-v1",
    ];
    run_capture(dir.path(), 1_500, 15_000, "1500ms", &forward);

    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schemas/fs-events-v1.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let store = esl_replay::store::open_read_only(&dir.path().join("store"), None).unwrap();
    let records = store
        .read_from_cursor(
            &esl_replay::record::ReadCursor::start(),
            100_000,
            &esl_replay::record::Criteria::default(),
        )
        .unwrap();
    let events: Vec<_> = records
        .iter()
        .filter(|r| r.artifact_name() == "event.raw")
        .collect();
    assert!(events.len() > 1_000, "{} events stored", events.len());
    assert!(
        events.len() < records.len(),
        "other records exist and are left out"
    );

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(STREAM)
        .arg("-")
        .arg("+")
        .query(&mut connection)
        .unwrap();
    assert_eq!(reply.ids.len(), events.len(), "{}", log_of(dir.path()));
    for (entry, record) in reply.ids.iter().zip(&events) {
        let body: String = entry.get("record").unwrap();
        let message: serde_json::Value = serde_json::from_str(&body).unwrap();
        check_against_schema(&schema, &message);
        assert_eq!(message["record_id"].as_str(), Some(record.id().as_str()));
        assert_eq!(message["append_sequence"], record.append_sequence());
        assert_eq!(message["event_type"].as_str(), record.event_name());
        assert_eq!(
            message["headers"]["Event-Name"].as_str(),
            record.event_name()
        );
        assert_eq!(message["source_host"], "fs-sim");
        assert!(message["event_sequence"].as_u64().is_some(), "{message}");
        assert!(message["core_uuid"].as_str().is_some(), "{message}");
    }
    let with_call = reply
        .ids
        .iter()
        .filter(|entry| {
            let body: String = entry.get("record").unwrap();
            body.contains("\"call_uuid\":\"")
        })
        .count();
    assert!(
        with_call > events.len() / 2,
        "{with_call} of {} name a call",
        events.len()
    );
}

/// A target that refuses the records for good (the stream's key holds a string) stops the
/// forwarder, not the capture: every record is still stored, the log says so at once,
/// `/health` says the capture is degraded with the forwarder's error, `/metrics` has the
/// forwarder's series, and the capture exits 2 at its stop, naming the target.
#[test]
fn a_forwarder_refused_for_good_stops_without_stopping_the_capture() {
    let Some(server) = Server::start(Kind::Redis) else {
        return;
    };
    let client = redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_connection().unwrap();
    let (): () = redis::cmd("SET")
        .arg(STREAM)
        .arg("not a stream")
        .query(&mut connection)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (mut simulator, esl) = simulator(100_000, 1_000);
    let http = free_port();
    let address = format!("127.0.0.1:{http}");
    let url = server.url();
    let mut child = capture_forwarding(
        &esl,
        dir.path(),
        "120s",
        &[
            "--forward-redis",
            &url,
            "--forward-stream",
            STREAM,
            "--http",
            &address,
        ],
    );
    let mut health = serde_json::Value::Null;
    support::wait_until("the stopped forwarder to show in /health", || {
        let Some((status, body)) = http_get(http, "/health") else {
            return false;
        };
        health = serde_json::from_str(&body).unwrap();
        status == 503 && health["forwarder"]["status"] == "stopped"
    });
    assert_eq!(health["status"], "degraded", "{health}");
    let error = health["forwarder"]["last_error"].as_str().unwrap();
    assert!(error.contains("WRONGTYPE"), "{health}");
    let (_, metrics) = http_get(http, "/metrics").unwrap();
    assert!(
        metrics.contains("esl_replay_forward_stopped{target=\"redis\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("esl_capture_frames_total"), "{metrics}");
    assert_eq!(metrics.matches("# EOF").count(), 1, "{metrics}");
    let store = dir.path().join("store");
    support::wait_until("the capture to go on storing", || {
        stored_records(&store) > 500
    });
    signal(&child, "TERM");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let _ = simulator.kill();
    let log = log_of(dir.path());
    assert_eq!(status.code(), Some(2), "{log}");
    assert!(log.contains("the forwarder stopped"), "{log}");
    assert!(log.contains(&server.url()), "{log}");
}
