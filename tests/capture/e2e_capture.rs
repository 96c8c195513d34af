//! End to end on 127.0.0.1: the built-in simulator (or `serve` of a store) → the capture
//! node → a segment-log store, checked by sequence accounting.
//!
//! The simulators here are rate-limited: an event is written to the socket in the same step
//! as it is released, so aborting one (a crashed switch) loses nothing it sent. The
//! simulator draws each event's `Event-Sequence` one step ahead and holds that event until
//! it is due, so every connection that ends leaves exactly one drawn sequence unsent: the
//! one after the last event it sent. The accounting is exact: the store must hold every
//! drawn sequence except exactly those, once each, in order.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use esl_replay::capture::{
    Backoff, Capture, CaptureOptions, NodeConfig, NodeExit, NodeSpec, Telemetry,
};
use esl_replay::record::{Criteria, ReadCursor, Record};
use esl_replay::server::{self, ServerConfig, Simulator, SimulatorConfig, StoreReplay};
use esl_replay::store::{self, ArtifactReader};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::net::TcpListener;

use crate::support::forward::free_port;
use crate::support::process::SpawnSafely as _;
use crate::support::process::open_store;
use crate::support::{self, cli};

const SLUG: &str = "pbx-e2e";

fn node(address: &str) -> NodeSpec {
    let mut config = NodeConfig::new(address);
    config.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    NodeSpec {
        slug: SLUG.into(),
        config,
    }
}

fn start_capture(address: &str, dir: &Path) -> Capture {
    let store = open_store(dir).unwrap();
    Capture::start(
        vec![node(address)],
        Box::new(store),
        CaptureOptions::default(),
    )
    .unwrap()
}

fn simulator(rate: f64) -> Arc<Simulator> {
    Arc::new(
        Simulator::new(SimulatorConfig {
            rate: Some(rate),
            heartbeat_interval: Duration::from_millis(250),
            ..SimulatorConfig::default()
        })
        .unwrap(),
    )
}

/// Binds `address` again after a server on it stopped (retrying while the port is busy).
async fn rebind(address: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return listener,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot bind {address} again: {e}"),
        }
    }
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn frames_read(capture: &Capture) -> u64 {
    capture
        .telemetry()
        .frames
        .get_or_create(&Telemetry::node(SLUG))
        .get()
}

/// Waits until the capture has seen its connection end, after a server stopped: it has
/// then read (and queued for the store) everything the server sent before the end.
async fn settle(capture: &Capture) {
    wait_until("the capture to see its connection end", || {
        capture
            .telemetry()
            .health()
            .get(SLUG)
            .is_some_and(|health| health.session == "closed")
    })
    .await;
}

async fn stop(capture: Capture) -> Vec<Record> {
    let (store, exits) = capture.shutdown().await.unwrap();
    assert_eq!(exits, vec![(SLUG.to_owned(), NodeExit::Shutdown)]);
    all_records(store.as_ref())
}

fn all_records(store: &dyn ArtifactReader) -> Vec<Record> {
    store
        .read_from_cursor(&ReadCursor::start(), 1_000_000, &Criteria::default())
        .unwrap()
}

fn raw(record: &Record) -> &str {
    record.payload()["raw_payload"].as_str().unwrap_or_default()
}

fn fact<'a>(record: &'a Record, name: &str) -> &'a str {
    record.payload()["protocol_facts"][name]
        .as_str()
        .unwrap_or_default()
}

/// One stored event: Core-UUID, Event-Sequence, connection generation.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    core: String,
    sequence: u64,
    generation: String,
}

fn events(records: &[Record]) -> Vec<Seen> {
    records
        .iter()
        .filter(|r| r.artifact_name() == "event.raw")
        .map(|r| {
            let sequence: u64 = fact(r, "event-sequence").parse().unwrap();
            assert_eq!(
                r.runtime_flags()["replay_protocol_sequence"],
                Value::String(sequence.to_string())
            );
            Seen {
                core: fact(r, "core-uuid").to_owned(),
                sequence,
                generation: r.connection_generation().unwrap().to_owned(),
            }
        })
        .collect()
}

/// The sequences stored for one Core-UUID, in store order.
fn sequences_of(events: &[Seen], core: &str) -> Vec<u64> {
    events
        .iter()
        .filter(|e| e.core == core)
        .map(|e| e.sequence)
        .collect()
}

/// The sequences `1..next` of one simulator minus the one held back (drawn, never sent)
/// at the end of each of its connections, given the stored events.
fn expected_sequences(events: &[Seen], core: &str, next: u64) -> Vec<u64> {
    let mut held_back = BTreeSet::new();
    let mut previous: Option<&Seen> = None;
    for event in events.iter().filter(|e| e.core == core) {
        if let Some(last) = previous
            && last.generation != event.generation
        {
            held_back.insert(last.sequence + 1);
        }
        previous = Some(event);
    }
    if let Some(last) = previous {
        held_back.insert(last.sequence + 1);
    }
    assert!(held_back.contains(&(next - 1)), "the last drawn was sent");
    (1..next).filter(|s| !held_back.contains(s)).collect()
}

/// Checks that one connection restored the subscription: `event plain ALL` was sent and
/// accepted on it.
fn assert_subscription_restored(records: &[Record], generation: &str) {
    let on: Vec<&Record> = records
        .iter()
        .filter(|r| r.connection_generation() == Some(generation))
        .collect();
    let sent = on
        .iter()
        .position(|r| r.artifact_name() == "wire.command" && raw(r) == "event plain ALL")
        .unwrap_or_else(|| panic!("no `event plain ALL` on generation {generation}"));
    let reply = on[sent..]
        .iter()
        .find(|r| r.artifact_name() == "command.reply")
        .unwrap_or_else(|| panic!("no reply to `event plain ALL` on generation {generation}"));
    assert!(
        raw(reply).contains("Reply-Text: +OK event listener enabled plain"),
        "{}",
        raw(reply)
    );
    let first_event = on.iter().position(|r| r.artifact_name() == "event.raw");
    assert!(
        first_event.is_none_or(|at| at > sent),
        "an event arrived before the subscription on generation {generation}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_simulated_event_is_captured_once_in_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let sim = simulator(2000.0);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = sim.serve(listener, ServerConfig::default()).unwrap();
    let capture = start_capture(&running.local_addr().to_string(), dir.path());
    wait_until("1000 simulated events", || sim.next_sequence() > 1000).await;
    // A graceful stop: what was rendered is flushed, then the disconnect notice.
    running.shutdown().await;
    settle(&capture).await;
    let records = stop(capture).await;

    let seen = events(&records);
    let sent = expected_sequences(&seen, sim.core_uuid(), sim.next_sequence());
    assert_eq!(sent.len() as u64, sim.next_sequence() - 2);
    assert_eq!(sequences_of(&seen, sim.core_uuid()), sent);
    assert_eq!(seen.len(), sent.len(), "events of another Core-UUID");
    assert!(seen.iter().all(|e| e.generation == "1"));
    // The traffic is the simulator's mix, heartbeats included.
    let names: BTreeSet<&str> = records.iter().filter_map(Record::event_name).collect();
    for name in [
        "CHANNEL_CREATE",
        "CHANNEL_ANSWER",
        "DTMF",
        "CHANNEL_BRIDGE",
        "CHANNEL_HANGUP_COMPLETE",
        "CUSTOM",
        "HEARTBEAT",
    ] {
        assert!(names.contains(name), "no {name} in {names:?}");
    }
    // The subscription was recorded, sent and accepted before any event.
    assert_eq!(records[0].artifact_name(), "subscription.mutate");
    assert_subscription_restored(&records, "1");
    // The stream ended with the shutdown notice and nothing was dropped locally.
    let closed = records
        .iter()
        .find(|r| r.artifact_name() == "connection.closed")
        .unwrap();
    assert_eq!(fact(closed, "close-reason"), "disconnect_notice");
    assert!(records.iter().all(|r| r.artifact_name() != "capture.gap"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_switch_is_reconnected_with_the_gap_recorded_and_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let sim_a = simulator(1000.0);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let running = sim_a.serve(listener, ServerConfig::default()).unwrap();
    let capture = start_capture(&address.to_string(), dir.path());

    // 1. The listener dies mid-stream (switch still up: same Core-UUID, sequence goes on).
    // Each outage lasts a while (the scenario, not a synchronisation): the gaps must say so.
    wait_until("200 events", || sim_a.next_sequence() > 200).await;
    running.abort().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let running = sim_a
        .serve(rebind(address).await, ServerConfig::default())
        .unwrap();

    // 2. The switch crashes and restarts: a new Core-UUID, sequences from 1.
    wait_until("400 events", || sim_a.next_sequence() > 400).await;
    running.abort().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sim_b = simulator(1000.0);
    let running = sim_b
        .serve(rebind(address).await, ServerConfig::default())
        .unwrap();
    wait_until("200 events after the restart", || {
        sim_b.next_sequence() > 200
    })
    .await;
    running.shutdown().await;
    settle(&capture).await;
    let records = stop(capture).await;

    // Nothing the switch sent was lost, nothing is stored twice.
    let seen = events(&records);
    assert_ne!(sim_a.core_uuid(), sim_b.core_uuid());
    let sent_a = expected_sequences(&seen, sim_a.core_uuid(), sim_a.next_sequence());
    let sent_b = expected_sequences(&seen, sim_b.core_uuid(), sim_b.next_sequence());
    // Two connections to the first switch, one to the second: three held back.
    assert_eq!(sent_a.len() as u64, sim_a.next_sequence() - 1 - 2);
    assert_eq!(sent_b.len() as u64, sim_b.next_sequence() - 1 - 1);
    assert_eq!(sequences_of(&seen, sim_a.core_uuid()), sent_a);
    assert_eq!(sequences_of(&seen, sim_b.core_uuid()), sent_b);
    assert_eq!(seen.len(), sent_a.len() + sent_b.len());

    // Three connections, each carrying events and each restoring the subscription.
    let generations: Vec<&str> = records
        .iter()
        .filter(|r| r.artifact_name() == "connection.opened")
        .map(|r| r.connection_generation().unwrap())
        .collect();
    assert_eq!(generations, ["1", "2", "3"]);
    for generation in &generations {
        assert_subscription_restored(&records, generation);
        assert!(seen.iter().any(|e| e.generation == *generation));
    }
    let last_of = |generation: &str| {
        seen.iter()
            .rev()
            .find(|e| e.generation == generation)
            .unwrap()
            .clone()
    };
    let first_of = |generation: &str| {
        seen.iter()
            .find(|e| e.generation == generation)
            .unwrap()
            .clone()
    };
    // The first restart continues the sequence (after the one held back at the kill), the
    // second starts a new switch at 1.
    assert_eq!(first_of("2").sequence, last_of("1").sequence + 2);
    assert_eq!(first_of("2").core, sim_a.core_uuid());
    assert_eq!(first_of("3").sequence, 1);
    assert_eq!(first_of("3").core, sim_b.core_uuid());

    // One gap per reconnect, naming the last event stored before it.
    let gaps: Vec<&Record> = records
        .iter()
        .filter(|r| r.artifact_name() == "capture.gap")
        .collect();
    assert_eq!(gaps.len(), 2);
    for (gap, (before, after)) in gaps.iter().zip([("1", "2"), ("2", "3")]) {
        assert_eq!(gap.connection_generation(), Some(after));
        let doc = &gap.payload()["gap"];
        assert_eq!(doc["kind"], "reconnect");
        let last = last_of(before);
        assert_eq!(doc["last_seen"]["core_uuid"], last.core.as_str());
        assert_eq!(
            doc["last_seen"]["event_sequence"],
            last.sequence.to_string().as_str()
        );
        let down = Duration::from_micros(doc["down_micros"].as_u64().unwrap());
        assert!(down >= Duration::from_millis(50), "{doc}");
        // The gap is this outage: it starts once the connection before it closed and ends
        // before the gap is recorded (stored times are cut to the millisecond).
        let closed = records
            .iter()
            .find(|r| {
                r.artifact_name() == "connection.closed"
                    && r.connection_generation() == Some(before)
            })
            .unwrap();
        let since = OffsetDateTime::parse(doc["down_since"].as_str().unwrap(), &Rfc3339).unwrap();
        assert!(since >= *closed.capture_timestamp(), "{doc}");
        assert!(
            since + down <= *gap.capture_timestamp() + time::Duration::milliseconds(1),
            "{doc} recorded at {}",
            gap.capture_timestamp()
        );
    }
    // The gap comes right after its connection opened, before any traffic on it.
    for gap in &gaps {
        let at = records.iter().position(|r| r.id() == gap.id()).unwrap();
        assert_eq!(records[at - 1].artifact_name(), "connection.opened");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_a_capture_and_capturing_it_again_gives_identical_event_payloads() {
    let original_dir = tempfile::tempdir().unwrap();
    let sim = simulator(5000.0);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = sim.serve(listener, ServerConfig::default()).unwrap();
    let capture = start_capture(&running.local_addr().to_string(), original_dir.path());
    wait_until("1500 simulated events", || sim.next_sequence() > 1500).await;
    running.shutdown().await;
    settle(&capture).await;
    let originals: Vec<Record> = stop(capture)
        .await
        .into_iter()
        .filter(|r| r.artifact_name() == "event.raw")
        .collect();
    // Everything drawn but the one held back at the end.
    assert_eq!(originals.len() as u64, sim.next_sequence() - 2);

    // Serve the capture as fast as possible and capture it into a second store.
    let replay = StoreReplay::load(
        store::open_read_only(original_dir.path(), None).unwrap(),
        server::ReplayOptions::default(),
    )
    .unwrap();
    assert_eq!(replay.summary().events, originals.len() as u64);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running = server::spawn(listener, ServerConfig::default(), Arc::new(replay)).unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let capture = start_capture(&running.local_addr().to_string(), second_dir.path());
    // Greeting, two replies, the events and the end-of-store disconnect notice.
    let expected_frames = originals.len() as u64 + 4;
    wait_until("the whole store served", || {
        frames_read(&capture) >= expected_frames
    })
    .await;
    running.abort().await;
    settle(&capture).await;
    let records = stop(capture).await;

    // The first connection got the whole store, then the end-of-store notice; a reconnect
    // starts over, so only that connection is compared.
    let first: Vec<&Record> = records
        .iter()
        .filter(|r| r.connection_generation() == Some("1"))
        .collect();
    let copies: Vec<&&Record> = first
        .iter()
        .filter(|r| r.artifact_name() == "event.raw")
        .collect();
    let last_copy = first
        .iter()
        .rposition(|r| r.artifact_name() == "event.raw")
        .unwrap();
    assert!(
        first[last_copy..]
            .iter()
            .any(|r| r.artifact_name() == "wire.disconnect"),
        "the first connection did not reach the end of the store"
    );
    assert_eq!(copies.len(), originals.len());
    for (original, copy) in originals.iter().zip(&copies) {
        assert_eq!(
            raw(copy),
            raw(original),
            "at {}",
            original.append_sequence()
        );
        assert_eq!(copy.event_name(), original.event_name());
        assert_eq!(
            copy.payload()["frame_headers"],
            original.payload()["frame_headers"]
        );
        assert!(copy.payload().get("raw_payload_base64").is_none());
    }
}

/// The binaries as an operator runs them: `simulate`, `capture` until SIGTERM, then
/// `stats` and `verify` on the store.
#[test]
fn the_binaries_simulate_capture_stop_on_sigterm_and_leave_a_verified_store() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let address = format!("127.0.0.1:{}", free_port());
    let mut simulate = cli::command()
        .args(["simulate", "--listen", &address, "--rate", "500"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn_safely()
        .unwrap();
    let mut capture = cli::command()
        .args(["capture", "--esl", &format!("{SLUG}={address}"), "--store"])
        .arg(&store_dir)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn_safely()
        .unwrap();
    // Stop once the store holds well over a hundred events (about a second at 500/s).
    support::wait_until("300 events stored", || {
        store::open_read_only(&store_dir, None)
            .is_ok_and(|store| events(&all_records(store.as_ref())).len() > 300)
    });
    let status = Command::new("kill")
        .args(["-TERM", &capture.id().to_string()])
        .status_safely()
        .unwrap();
    assert!(status.success());
    let exit = capture.wait().unwrap();
    let _ = simulate.kill();
    let _ = simulate.wait();
    assert!(exit.success(), "capture exited with {exit}");

    let records = all_records(store::open_read_only(&store_dir, None).unwrap().as_ref());
    let seen = events(&records);
    assert!(seen.len() > 100, "only {} events stored", seen.len());
    // One connection; its events are the simulator's sequence from 1 without holes.
    assert_eq!(
        seen.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        (1..=seen.len() as u64).collect::<Vec<_>>()
    );
    assert!(records.iter().all(|r| r.pbx_node_slug() == Some(SLUG)));

    let stats = cli::command()
        .args(["stats", "--store"])
        .arg(&store_dir)
        .output_safely()
        .unwrap();
    assert!(stats.status.success());
    let text = String::from_utf8_lossy(&stats.stdout);
    // `  <count>  <artifact>` lines under `artifacts`.
    let count_of = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
                [count, artifact] if artifact == name => count.parse().ok(),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no {name} in stats:\n{text}"))
    };
    assert_eq!(count_of("event.raw"), seen.len() as u64);
    assert!(
        text.contains(&format!("records     {}", records.len())),
        "{text}"
    );
    let verify = cli::command()
        .args(["verify", "--store"])
        .arg(&store_dir)
        .output_safely()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}
