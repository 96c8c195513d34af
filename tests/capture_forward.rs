//! `esl-replay capture --forward-redis` and `--forward-nats`: one process captures from the
//! built-in simulator and forwards what it stores to a real `redis-server` or `nats-server -js`
//! (started by the test; skipped, saying so, when the binary is absent). Every stored record reaches the stream in append order, even
//! when Redis is down for part of the capture: the store is the buffer, and the checkpoint
//! (shared with `esl-replay forward redis`) says where delivery got to.
#![cfg(all(feature = "cli", feature = "forward"))]

mod forward_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use forward_support::{
    Kind, Server, check_in_order_at_least_once, checkpoint_sequence, free_port, wait_exit,
};

const STREAM: &str = "fs:events";

/// The simulator on a free port, ending its stream after `events` events at `rate`/s.
fn simulator(events: u64, rate: u64) -> (Child, String) {
    let address = format!("127.0.0.1:{}", free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_esl-replay"))
        .args(["simulate", "--listen", &address, "--rate"])
        .arg(rate.to_string())
        .arg("--max-events")
        .arg(events.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&address).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "the simulator did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
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
    Command::new(env!("CARGO_BIN_EXE_esl-replay"))
        .args(["capture", "--esl", esl, "--duration", duration])
        .arg("--store")
        .arg(dir.join("store"))
        .arg("--checkpoint-dir")
        .arg(dir.join("checkpoints"))
        .args(forward)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("capture.log")).unwrap())
        .spawn()
        .unwrap()
}

/// The `sequence` field of every entry of the stream, in stream order.
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
    let (mut simulator, esl) = simulator(2_000, 2_000);
    let mut child = capture(&esl, dir.path(), &server.url(), "3s");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let _ = simulator.kill();
    assert!(status.success(), "{}", log_of(dir.path()));
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
    std::thread::sleep(Duration::from_secs(1));
    server.stop();
    std::thread::sleep(Duration::from_secs(2));
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
    let (mut simulator, esl) = simulator(2_000, 2_000);
    let url = server.url();
    let forward = [
        "--forward-nats",
        url.as_str(),
        "--forward-subject",
        "fs.events",
        "--forward-jetstream-stream",
        "FS_EVENTS",
    ];
    let mut child = capture_forwarding(&esl, dir.path(), "3s", &forward);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    let _ = simulator.kill();
    assert!(status.success(), "{}", log_of(dir.path()));
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
    let (mut simulator, esl) = simulator(1_000, 1_000);
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_esl-replay"))
        .args(["capture", "--duration", "3s", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("capture.log")).unwrap())
        .spawn()
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

    let refused = Command::new(env!("CARGO_BIN_EXE_esl-replay"))
        .args(["capture", "--esl", "127.0.0.1:1", "--forward-redis"])
        .arg(server.url())
        .arg("--store")
        .arg(dir.path().join("other"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("--checkpoint-dir"), "{message}");
    assert!(!dir.path().join("other").exists(), "nothing was started");
}
