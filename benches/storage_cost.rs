//! T13b: what a capture store costs on disk, against the raw ESL bytes it received.
//!
//! Two captures, each through the full node (session, queue, batch writer, segment-log store
//! with the background packer on, as `esl-replay capture` runs it):
//!
//! - the real FreeSWITCH 1.10.12 plain event stream of `../shared/fixtures/freeswitch-1.10.12/
//!   events-plain.jsonl` (757 events), played by a one-connection peer over and over
//!   (`ESL_BENCH_T13B_LOOPS`, default 200), so that the store spans many segments;
//! - the built-in simulator at `ESL_BENCH_T13B_RATE` events/s (default 10 000) for
//!   `ESL_BENCH_T13B_SECONDS` (default 60).
//!
//! Raw bytes are the capture's own count of ESL frame bytes read from the socket. Stored
//! bytes are the whole store directory as the file system allocates it (`du`: segments,
//! indexes, id files, metadata), measured when the capture has stopped, and again once the
//! packer has caught up with the last sealed segments (what the next start does first). The
//! active segment is preallocated (64 MiB) and not packed; the line says how much of the
//! store it is. Run with `cargo bench --bench storage_cost`; `cargo test --benches` runs a
//! small smoke version.

mod common;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use esl_replay::capture::{Capture, CaptureOptions, NodeConfig, NodeSpec, Password, Telemetry};
use esl_replay::esl::session::Subscriptions;
use esl_replay::server::ServerConfig;
use esl_replay::server::{Simulator, SimulatorConfig};
use esl_replay::storage::{DEFAULT_PACK_LEVEL, Log, LogOptions};
use esl_replay::store::LogStore;

fn main() {
    let full = common::bench_mode();
    match recorded_events() {
        Some(events) => {
            let loops = if full {
                env_or("ESL_BENCH_T13B_LOOPS", 200)
            } else {
                3
            };
            let address = recording_peer(events, loops);
            report(
                &format!("recorded FreeSWITCH 1.10.12 plain events x {loops}"),
                &capture_into_store(&address, None),
            );
        }
        None => println!("skipped the recorded traffic: ../shared is absent"),
    }
    let rate = if full {
        env_or("ESL_BENCH_T13B_RATE", 10_000)
    } else {
        500
    };
    let seconds = if full {
        env_or("ESL_BENCH_T13B_SECONDS", 60)
    } else {
        2
    };
    let runtime = runtime();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let config = SimulatorConfig {
        rate: Some(rate as f64),
        max_events: Some(rate * seconds),
        ..SimulatorConfig::default()
    };
    let _server = runtime
        .block_on(async { Simulator::start(listener, ServerConfig::default(), config).unwrap() });
    report(
        &format!("simulator at {rate} events/s for {seconds} s"),
        &capture_into_store(&address, Some(rate * seconds)),
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The recorded switch's event frames: everything it sent after its reply to `event plain
/// ALL`, up to its disconnect notice.
fn recorded_events() -> Option<Vec<u8>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/freeswitch-1.10.12/events-plain.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but {} is missing",
            path.display()
        );
        return None;
    };
    let mut stream = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let chunk: serde_json::Value = serde_json::from_str(line).unwrap();
        if chunk["dir"] == "s2c" {
            let data = chunk["data"].as_str().unwrap();
            stream.extend(
                base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .unwrap(),
            );
        }
    }
    let find = |needle: &[u8]| stream.windows(needle.len()).position(|w| w == needle);
    let enabled = b"+OK event listener enabled plain\n\n";
    let start = find(enabled).unwrap() + enabled.len();
    let end = find(b"Content-Type: text/disconnect-notice").unwrap();
    Some(stream[start..end].to_vec())
}

/// A one-connection FreeSWITCH: greeting, auth, the `event` reply, then `events` sent
/// `loops` times, then it closes the connection.
fn recording_peer(events: Vec<u8>, loops: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let mut command = || {
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                if line.ends_with("\n\n") {
                    return true;
                }
            }
            false
        };
        socket.write_all(b"Content-Type: auth/request\n\n").unwrap();
        assert!(command());
        socket
            .write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
            .unwrap();
        assert!(command());
        socket
            .write_all(
                b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n",
            )
            .unwrap();
        // Paced (about 15 000 events/s), so that the capture stores every event rather than
        // recording drops: stored bytes are compared with what was stored.
        let per_loop = Duration::from_millis(50);
        let started = Instant::now();
        for i in 0..loops {
            if socket.write_all(&events).is_err() {
                return;
            }
            let due = started + per_loop * u32::try_from(i + 1).unwrap_or(u32::MAX);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    });
    address
}

struct Cost {
    raw: u64,
    artifacts: u64,
    drops: u64,
    elapsed: Duration,
    at_stop: Usage,
    caught_up: Usage,
}

/// Allocated bytes of a store directory: in all, its segments, and its last segment.
#[derive(Clone, Copy)]
struct Usage {
    total: u64,
    segments: u64,
    active: u64,
}

/// Captures from `address` into a fresh store until the node stops (or, with `events`, until
/// that many events are stored), then measures the store.
fn capture_into_store(address: &str, events: Option<u64>) -> Cost {
    let dir = common::scratch_dir("t13b");
    let root = dir.path().join("store");
    let options = LogOptions {
        pack_level: Some(DEFAULT_PACK_LEVEL),
        ..LogOptions::default()
    };
    let store = LogStore::open_with(&root, options).unwrap();
    let runtime = runtime();
    let (raw, artifacts, drops, elapsed) = runtime.block_on(async {
        let mut config = NodeConfig::new(address.to_owned());
        config.password = Password::default();
        config.subscriptions = Subscriptions::all();
        let spec = NodeSpec {
            slug: "bench".into(),
            config,
        };
        let started = Instant::now();
        let capture =
            Capture::start(vec![spec], Box::new(store), CaptureOptions::default()).unwrap();
        let telemetry = capture.telemetry();
        let label = Telemetry::node("bench");
        let mut last = (0, Instant::now());
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let read = telemetry.bytes.get_or_create(&label).get();
            let stored = telemetry.artifacts.get_or_create(&label).get();
            if events.is_some_and(|n| stored >= n) {
                break;
            }
            // The recording's peer closes when done; the node then keeps reconnecting.
            if read != last.0 {
                last = (read, Instant::now());
            } else if read > 0 && last.1.elapsed() > Duration::from_secs(2) {
                break;
            }
        }
        let elapsed = started.elapsed();
        let raw = telemetry.bytes.get_or_create(&label).get();
        let artifacts = telemetry.artifacts.get_or_create(&label).get();
        let drops = telemetry.drops.get_or_create(&label).get();
        capture.shutdown().await.unwrap();
        (raw, artifacts, drops, elapsed)
    });
    let at_stop = usage(&root);
    let (log, _) = Log::open(root.join("log"), LogOptions::default()).unwrap();
    log.pack_sealed().unwrap();
    log.close().unwrap();
    Cost {
        raw,
        artifacts,
        drops,
        elapsed,
        at_stop,
        caught_up: usage(&root),
    }
}

fn usage(root: &Path) -> Usage {
    let (mut total, mut segments) = (0, 0);
    let mut last_segment = (String::new(), 0);
    for sub in ["", "log", "ids"] {
        let Ok(entries) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        for entry in entries.flatten() {
            let meta = entry.metadata().unwrap();
            if !meta.is_file() {
                continue;
            }
            let allocated = meta.blocks() * 512;
            total += allocated;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".seg") {
                segments += allocated;
                if name > last_segment.0 {
                    last_segment = (name, allocated);
                }
            }
        }
    }
    Usage {
        total,
        segments,
        active: last_segment.1,
    }
}

fn report(what: &str, cost: &Cost) {
    let ratio = |bytes: u64| bytes as f64 / cost.raw.max(1) as f64;
    let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
    println!(
        "RESULT t13b {what}: {} artifacts ({} dropped) in {:.1}s, raw ESL {:.1} MiB; store at stop {:.1} MiB = {:.3} of raw, packer caught up {:.1} MiB = {:.3} of raw (target <= 0.2): segments {:.1} MiB (the last {:.1} MiB), indexes and ids {:.1} MiB",
        cost.artifacts,
        cost.drops,
        cost.elapsed.as_secs_f64(),
        mib(cost.raw),
        mib(cost.at_stop.total),
        ratio(cost.at_stop.total),
        mib(cost.caught_up.total),
        ratio(cost.caught_up.total),
        mib(cost.caught_up.segments),
        mib(cost.caught_up.active),
        mib(cost.caught_up.total - cost.caught_up.segments),
    );
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
