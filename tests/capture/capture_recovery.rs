//! How capture behaves when the switch goes away, comes back, or misbehaves (issue 15
//! items 4-7, issue 16 item 10): the backoff after a short outage stays short, `/health`
//! tells the truth while backing off and after recovery, a shutdown close is recorded as
//! not retryable (as the log line says), gateway errors read as text, a switch that
//! authenticates and then sends garbage is backed off with counted attempts and a capped
//! `wire.malformed`, and a node that never connected fails the command with exit code 2.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use esl_replay::capture::{
    Backoff, Capture, CaptureOptions, GatewayCommand, GatewayError, MALFORMED_KEEP, NodeConfig,
    NodeHealth, NodeSpec,
};
use esl_replay::record::Record;
use esl_replay::server::CommandDecoder;
use esl_replay::server::{RunningServer, ServerConfig, Simulator, SimulatorConfig};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::support::capture::{all_records, new_store};
use crate::support::cli;
use crate::support::process::SpawnSafely as _;
use crate::support::server::refusing_address;

fn node(address: &str) -> NodeSpec {
    NodeSpec {
        slug: "pbx-a".into(),
        config: NodeConfig::new(address),
    }
}

fn health(capture: &Capture) -> NodeHealth {
    capture
        .telemetry()
        .health()
        .get("pbx-a")
        .cloned()
        .unwrap_or_default()
}

/// Polls `condition` every 10 ms for at most `limit`.
async fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn simulator_on(listener: TcpListener) -> RunningServer {
    Simulator::start(
        listener,
        ServerConfig::default(),
        SimulatorConfig {
            rate: Some(50.0),
            ..SimulatorConfig::default()
        },
    )
    .unwrap()
}

/// Item 5: full jitter, but never longer than a quarter of the outage so far; a long
/// outage still backs off to the cap (10 s, as telephony-event-sync).
#[test]
fn the_backoff_after_a_short_outage_stays_short() {
    let backoff = Backoff::default();
    assert_eq!(backoff.max, Duration::from_secs(10));
    for attempt in 1..=40 {
        assert!(backoff.ceiling(attempt, Duration::from_secs(12)) <= Duration::from_secs(3));
        assert!(backoff.ceiling(attempt, Duration::from_secs(18)) < Duration::from_secs(5));
        assert!(backoff.ceiling(attempt, Duration::ZERO) <= backoff.initial);
    }
    assert_eq!(
        backoff.ceiling(40, Duration::from_secs(3600)),
        Duration::from_secs(10)
    );
    assert_eq!(
        backoff.ceiling(1, Duration::from_secs(3600)),
        Duration::from_millis(500),
        "still exponential from the first attempt"
    );
    let mut rng = rand::rng();
    for _ in 0..1000 {
        assert!(backoff.delay(30, Duration::from_secs(12), &mut rng) <= Duration::from_secs(3));
    }
}

/// Item 5: while backing off `/health` does not say live; after recovery the old error is
/// gone; and the switch coming back is connected again (here within the generous wait
/// bound; the policy above is what keeps it within seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_not_live_while_backing_off_and_clears_the_error_on_recovery() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let switch = simulator_on(listener).await;
    let (_dir, store) = new_store();
    let capture = Capture::start(
        vec![node(&address.to_string())],
        store,
        CaptureOptions::default(),
    )
    .unwrap();
    wait_until("ready", Duration::from_secs(20), || {
        health(&capture).connection == "ready"
    })
    .await;
    switch.abort().await;
    wait_until("a few refused reconnects", Duration::from_secs(30), || {
        health(&capture).reconnect_attempts >= 2
    })
    .await;
    let during = health(&capture);
    assert_ne!(during.liveness, "live", "{during:?}");
    assert!(during.last_error.is_some(), "{during:?}");

    let back = std::time::Instant::now();
    let switch = simulator_on(TcpListener::bind(address).await.unwrap()).await;
    wait_until("ready again", Duration::from_secs(30), || {
        health(&capture).connection == "ready"
    })
    .await;
    println!("switch back: capture ready again in {:?}", back.elapsed());
    let after = health(&capture);
    assert_eq!(after.liveness, "live");
    assert_eq!(after.last_error, None, "{after:?}");
    assert_eq!(after.connection_generation, 2);
    let (store, _) = capture.shutdown().await.unwrap();
    switch.abort().await;

    // Item 4: the shutdown's close is recorded as not retryable, as its log line says.
    let records = all_records(store.as_ref());
    let closes: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| r.artifact_name() == "connection.closed")
        .map(|r| serde_json::from_str(r.payload()["raw_payload"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(closes.len(), 2, "{closes:?}");
    assert_eq!(closes[0]["retryable"], true, "the switch went away");
    assert_eq!(closes[1]["reason"], "local");
    assert_eq!(closes[1]["retryable"], false, "our own shutdown");
}

/// Item 7: a gateway refusal reads as text, naming the node and the known ones.
#[tokio::test]
async fn gateway_errors_name_the_node_without_rust_formatting() {
    let (_dir, store) = new_store();
    let capture =
        Capture::start(vec![node("127.0.0.1:9")], store, CaptureOptions::default()).unwrap();
    let error = capture
        .gateway()
        .dispatch(Some("nope"), GatewayCommand::Api("status".into()))
        .await
        .unwrap_err();
    assert_eq!(
        error,
        GatewayError::Refused("unknown node \"nope\" (nodes: pbx-a)".into())
    );
    assert_eq!(
        error.to_string(),
        "command refused: unknown node \"nope\" (nodes: pbx-a)"
    );
    let _ = capture.shutdown().await;
}

/// A switch that accepts auth and the subscription, then sends 1.5 MB of garbage.
async fn garbage_switch(connections: Arc<AtomicUsize>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            connections.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = socket.write_all(b"Content-Type: auth/request\n\n").await;
                let mut decoder = CommandDecoder::default();
                let mut input = BytesMut::new();
                let mut answered = 0;
                while answered < 2 {
                    if let Ok(Some(_)) = decoder.decode(&mut input) {
                        let reply = if answered == 0 {
                            "+OK accepted"
                        } else {
                            "+OK event listener enabled plain"
                        };
                        let frame = format!("Content-Type: command/reply\nReply-Text: {reply}\n\n");
                        let _ = socket.write_all(frame.as_bytes()).await;
                        answered += 1;
                        continue;
                    }
                    if socket.read_buf(&mut input).await.unwrap_or(0) == 0 {
                        return;
                    }
                }
                let _ = socket.write_all(&vec![b'x'; 1_500_000]).await;
                let mut sink = [0u8; 1024];
                while socket.read(&mut sink).await.unwrap_or(0) > 0 {}
            });
        }
    });
    address
}

/// Issue 16 item 10: drops after a successful auth are counted and backed off like any
/// other, and each connection stores at most `MALFORMED_KEEP` bytes of garbage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_auth_is_backed_off_and_its_storage_capped() {
    let connections = Arc::new(AtomicUsize::new(0));
    let address = garbage_switch(Arc::clone(&connections)).await;
    let (_dir, store) = new_store();
    let mut spec = node(&address);
    spec.config.backoff = Backoff {
        initial: Duration::from_millis(20),
        max: Duration::from_millis(200),
    };
    let capture = Capture::start(vec![spec], store, CaptureOptions::default()).unwrap();
    // A snapshot taken while the node backs off after its third drop (between drops it may
    // briefly be ready and live again, before the garbage arrives).
    let mut during = health(&capture);
    wait_until("counted reconnects", Duration::from_secs(30), || {
        during = health(&capture);
        during.reconnect_attempts >= 3 && during.connection == "backing_off"
    })
    .await;
    assert_ne!(during.liveness, "live", "{during:?}");
    let (store, _) = capture.shutdown().await.unwrap();
    let records = all_records(store.as_ref());
    let malformed: Vec<&Record> = records
        .iter()
        .filter(|r| r.artifact_name() == "wire.malformed")
        .collect();
    assert!(malformed.len() >= 3, "{}", malformed.len());
    for record in malformed {
        let raw = record.payload()["raw_payload"].as_str().unwrap_or_default();
        assert!(raw.len() <= MALFORMED_KEEP, "{} bytes stored", raw.len());
        assert!(raw.len() >= 1024, "the start of the garbage is kept");
    }
    // Each connection is opened.
    let opened = records
        .iter()
        .filter(|r| r.artifact_name() == "connection.opened")
        .count();
    assert!(opened >= 3 && opened <= connections.load(Ordering::SeqCst));
}

/// Item 6: nothing listening for the whole `--duration` is an error naming the address.
#[test]
fn a_node_that_never_connected_fails_the_capture_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let (_reserved, address) = refusing_address();
    let output = cli::command()
        .args(["-v", "capture", "--duration", "1500ms", "--esl"])
        .arg(format!("pbx-a={address}"))
        .arg("--store")
        .arg(dir.path().join("store"))
        .output_safely()
        .unwrap();
    let stderr = cli::error_output(&output);
    assert!(
        stderr.contains(&format!("node pbx-a never connected to {address}")),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "no colour escapes in a pipe: {stderr}"
    );

    // With a start-up timeout the capture gives up early instead of running on.
    let output = cli::command()
        .args(["capture", "--startup-timeout", "500ms", "--esl"])
        .arg(format!("pbx-a={address}"))
        .arg("--store")
        .arg(dir.path().join("store2"))
        .output_safely()
        .unwrap();
    let stderr = cli::error_output(&output);
    assert!(stderr.contains("never connected"), "{stderr}");
}

/// Hostile review: a peer that accepted the connection but never sent the greeting ended
/// the capture with exit 0 and nothing but connection records stored, and
/// `--startup-timeout` never fired, because both counted TCP connects. Both count
/// sessions that became ready now.
#[test]
fn a_peer_that_never_completes_the_handshake_fails_the_capture_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    // The kernel completes the connections; nothing is ever sent on them.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = silent.local_addr().unwrap();
    for (flag, value, store) in [
        ("--startup-timeout", "500ms", "timed-out"),
        ("--duration", "1500ms", "ran-out"),
    ] {
        let output = cli::command()
            .args(["capture", flag, value, "--esl"])
            .arg(format!("pbx-a={address}"))
            .arg("--store")
            .arg(dir.path().join(store))
            .output_safely()
            .unwrap();
        let stderr = cli::error_output(&output);
        assert!(
            stderr.contains(&format!(
                "node pbx-a connected to {address} but no session became ready"
            )),
            "{flag}: {stderr}"
        );
    }
    drop(silent);
}
