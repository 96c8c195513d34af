//! The capture node against switches that misbehave on purpose (a hostile-peer review).
//!
//! Each test plays one misbehaving FreeSWITCH on a tokio `TcpListener`: one that completes
//! the handshake and then stops reading our commands while it keeps sending events; one
//! that keeps talking after an auth `-ERR` or a disconnect notice; one that greets in HTTP;
//! one that sends events larger than the store takes between normal ones. The tests check
//! what the node does (it keeps reading, closes, reconnects, stops) and what the store holds
//! afterwards. Every wait is on observable state (telemetry, the node's exit) with
//! [`support::PATIENCE`] as the deadline, never on time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use esl_replay::capture::{
    Capture, CaptureOptions, GatewayCommand, NodeExit, NodeLabel, NodeSpec, Telemetry,
};
use esl_replay::esl::session::Subscriptions;
use esl_replay::record::Record;
use esl_replay::storage::LogOptions;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::io::{AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::oneshot;

use super::capture::{fixture, frames, frames_read, names, node, payload_str, read_command};
use crate::support;
use crate::support::capture::{all_records, new_store};
use crate::support::process::open_store_with;

const CORE_UUID: &str = "8a5f3c2e-1b7d-4c9e-a6f0-3d2b1e9c7a41";

/// A plain event frame with `Event-Sequence: sequence` and a `Pad` header of `pad` bytes.
fn event(sequence: u64, pad: usize) -> Vec<u8> {
    let body = format!(
        "Event-Name: HEARTBEAT\nCore-UUID: {CORE_UUID}\nEvent-Sequence: {sequence}\nPad: {}\n\n",
        "x".repeat(pad)
    );
    format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A listener whose accepted sockets have a small receive buffer, so that a switch that
/// does not read fills up after little data; each connection is handed to `play` with its
/// number (0 for the first).
async fn switch<F, Fut>(play: F) -> String
where
    F: Fn(TcpStream, usize) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(16).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut index = 0;
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(play(socket, index));
            index += 1;
        }
    });
    address
}

/// Greets, accepts `auth` and answers the restore command (`event plain ALL`).
async fn handshake(socket: TcpStream) -> (BufReader<OwnedReadHalf>, OwnedWriteHalf) {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(&fixture("01-auth-request.esl"))
        .await
        .unwrap();
    read_command(&mut reader).await.unwrap();
    write
        .write_all(&fixture("02-command-reply-auth-ok.esl"))
        .await
        .unwrap();
    read_command(&mut reader).await.unwrap();
    write
        .write_all(&fixture("04-command-reply-event-plain-ok.esl"))
        .await
        .unwrap();
    (reader, write)
}

/// Sends a small event every 5 ms until the capture hangs up (pacing, not synchronisation).
async fn chatter(write: &mut OwnedWriteHalf, from_sequence: u64) {
    for sequence in from_sequence.. {
        if write.write_all(&event(sequence, 0)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `done` until it holds; fails naming `what` after [`support::PATIENCE`].
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let give_up = tokio::time::Instant::now() + support::PATIENCE;
    while !done() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `pbx-a`'s session is ready (`/health`'s view).
fn is_ready(telemetry: &Telemetry) -> bool {
    telemetry
        .health()
        .get("pbx-a")
        .is_some_and(|h| h.connection == "ready")
}

/// [`Capture::shutdown`], failing the test if it has not ended after [`support::PATIENCE`].
async fn shut_down(capture: Capture) -> (Vec<Record>, Vec<(String, NodeExit)>) {
    let (store, exits) = tokio::time::timeout(support::PATIENCE, capture.shutdown())
        .await
        .expect("the capture did not stop")
        .unwrap();
    (all_records(store.as_ref()), exits)
}

/// `pbx-a`'s value of a per-node counter.
fn counter(family: &Family<NodeLabel, Counter>) -> u64 {
    family.get_or_create(&Telemetry::node("pbx-a")).get()
}

fn fact<'a>(record: &'a Record, key: &str) -> &'a str {
    record.payload()["protocol_facts"][key]
        .as_str()
        .unwrap_or_default()
}

/// Sends six 1.9 MB `api` commands through the gateway, each in its own task.
fn large_commands(capture: &Capture) -> Vec<tokio::task::JoinHandle<bool>> {
    (0..6)
        .map(|_| {
            let gateway = capture.gateway();
            tokio::spawn(async move {
                let command = GatewayCommand::Api(format!("echo {}", "y".repeat(1_900_000)));
                gateway.dispatch(None, command).await.is_ok()
            })
        })
        .collect()
}

/// A capture of `spec` into a new store (kept until the returned guard drops).
fn start(spec: NodeSpec) -> (tempfile::TempDir, Capture) {
    let (dir, store) = new_store();
    let capture = Capture::start(vec![spec], store, CaptureOptions::default()).unwrap();
    (dir, capture)
}

/// A switch that stops reading our commands (its receive window shut) while it keeps
/// sending events: the node still reads every event while megabytes of commands wait, and
/// a shutdown ends the capture, recording the close.
#[tokio::test]
async fn a_switch_that_stops_reading_is_still_read_and_a_shutdown_ends_the_capture() {
    let address = switch(|socket, _| async move {
        let (_reader, mut write) = handshake(socket).await;
        // From here on nothing is read.
        chatter(&mut write, 1).await;
    })
    .await;
    let mut spec = node(&address, "ClueCon", Subscriptions::all());
    spec.config.write_timeout = Duration::from_secs(3600);
    spec.config.session.api_timeout = Duration::from_secs(3600);
    let (_dir, capture) = start(spec);
    let telemetry = capture.telemetry();
    wait_for("the session to be ready", || is_ready(&telemetry)).await;
    let commands = large_commands(&capture);
    wait_for("a command to be sent", || counter(&telemetry.commands) >= 1).await;
    // More than fits the kernel's buffers waits to be written: events are still read.
    let before = frames_read(&capture);
    wait_for("events read while the commands wait", || {
        frames_read(&capture) >= before + 200
    })
    .await;
    let (records, exits) = shut_down(capture).await;
    assert_eq!(exits, [("pbx-a".to_owned(), NodeExit::Shutdown)]);
    for command in commands {
        assert!(!command.await.unwrap(), "no command can have been answered");
    }
    let closed = records.last().unwrap();
    assert_eq!(closed.artifact_name(), "connection.closed");
    assert_eq!(fact(closed, "close-reason"), "local");
    assert!(names(&records).contains(&"api.dispatch"));
}

/// A write that makes no progress for the write timeout closes the connection as dead
/// (`write_timeout`, recorded like every close) and the node reconnects.
#[tokio::test]
async fn a_write_that_makes_no_progress_closes_the_connection_as_dead_and_reconnects() {
    let address = switch(|socket, index| async move {
        let (_reader, mut write) = handshake(socket).await;
        chatter(&mut write, 1000 * index as u64 + 1).await;
    })
    .await;
    let mut spec = node(&address, "ClueCon", Subscriptions::all());
    spec.config.write_timeout = Duration::from_millis(300);
    spec.config.session.api_timeout = Duration::from_secs(3600);
    let (_dir, capture) = start(spec);
    let telemetry = capture.telemetry();
    wait_for("the session to be ready", || is_ready(&telemetry)).await;
    let commands = large_commands(&capture);
    wait_for("a reconnect", || counter(&telemetry.reconnects) >= 1).await;
    wait_for("the new session to be ready", || is_ready(&telemetry)).await;
    for command in commands {
        assert!(!command.await.unwrap(), "no command can have been answered");
    }
    let (records, _) = shut_down(capture).await;
    let closed = records
        .iter()
        .position(|r| r.artifact_name() == "connection.closed")
        .unwrap();
    assert_eq!(fact(&records[closed], "close-reason"), "write_timeout");
    assert_eq!(
        records[closed].payload()["derived_metadata"]["close-retryable"],
        "true"
    );
    assert_eq!(
        names(&records[closed + 1..closed + 3]),
        ["connection.opened", "capture.gap"]
    );
    assert_eq!(
        records[closed + 2].payload()["gap"]["reason"],
        "write_timeout"
    );
}

/// Rejects `auth`, then sends an event every 5 ms until the capture hangs up.
async fn reject_and_chatter(socket: TcpStream, _index: usize) {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    write
        .write_all(&fixture("01-auth-request.esl"))
        .await
        .unwrap();
    read_command(&mut reader).await.unwrap();
    let reject = frames(&fixture("03-command-reply-auth-err-then-disconnect.esl"))[0].to_bytes();
    write.write_all(&reject).await.unwrap();
    chatter(&mut write, 1).await;
}

/// A switch that keeps talking after rejecting the password cannot keep the node: the
/// drain after the close is bounded, and the rejection is terminal.
#[tokio::test]
async fn an_auth_rejection_followed_by_endless_chatter_stops_the_node() {
    let address = switch(reject_and_chatter).await;
    let (_dir, capture) = start(node(&address, "wrong", Subscriptions::all()));
    wait_for("the node to stop", || capture.all_nodes_stopped()).await;
    assert_eq!(capture.telemetry().health()["pbx-a"].connection, "stopped");
    let (records, exits) = shut_down(capture).await;
    assert!(
        matches!(&exits[0].1, NodeExit::Terminal(r) if r.contains("auth rejected")),
        "{exits:?}"
    );
    let closed = records.last().unwrap();
    assert_eq!(fact(closed, "close-reason"), "auth_rejected");
    // What it said after the rejection is kept, up to the bound.
    assert!(
        names(&records).contains(&"event.raw"),
        "{:?}",
        names(&records)
    );
}

/// A shutdown while the node drains a rejected connection ends the drain at once, and the
/// node still reports the rejection (so the capture exits 2).
#[tokio::test]
async fn a_shutdown_while_a_rejected_connection_drains_still_reports_the_rejection() {
    let address = switch(reject_and_chatter).await;
    let (_dir, capture) = start(node(&address, "wrong", Subscriptions::all()));
    // Greeting, the -ERR and three events: the node is draining.
    wait_for("the drain to read", || frames_read(&capture) >= 5).await;
    let (records, exits) = shut_down(capture).await;
    assert!(
        matches!(&exits[0].1, NodeExit::Terminal(r) if r.contains("auth rejected")),
        "{exits:?}"
    );
    assert_eq!(
        fact(records.last().unwrap(), "close-reason"),
        "auth_rejected"
    );
}

/// A switch that keeps talking after its disconnect notice cannot keep the connection: the
/// node closes it within the drain bound, not ready from the notice on, and reconnects.
#[tokio::test]
async fn a_disconnect_notice_followed_by_endless_chatter_ends_the_connection() {
    let address = switch(|socket, index| async move {
        let (_reader, mut write) = handshake(socket).await;
        if index == 0 {
            write
                .write_all(&fixture("15-disconnect-notice-inbound.esl"))
                .await
                .unwrap();
        }
        chatter(&mut write, 1000 * index as u64 + 1).await;
    })
    .await;
    let (_dir, capture) = start(node(&address, "ClueCon", Subscriptions::all()));
    let telemetry = capture.telemetry();
    wait_for("a reconnect", || counter(&telemetry.reconnects) >= 1).await;
    let (records, _) = shut_down(capture).await;
    let closed = records
        .iter()
        .position(|r| r.artifact_name() == "connection.closed")
        .unwrap();
    assert_eq!(fact(&records[closed], "close-reason"), "disconnect_notice");
    assert_eq!(records[closed + 1].artifact_name(), "connection.opened");
}

/// Bytes that never made a frame are stored at the close: an HTTP server's greeting is
/// `wire.malformed` ("peer sent non-ESL data"), before the handshake timeout's close.
#[tokio::test]
async fn a_peer_that_greets_in_http_has_its_bytes_stored_at_the_handshake_timeout() {
    const GREETING: &str = "HTTP/1.1 200 OK\r\nServer: x\r\n\r\n<html>";
    let address = switch(|mut socket, _| async move {
        socket.write_all(GREETING.as_bytes()).await.unwrap();
        // Holds the connection until the capture hangs up.
        let mut sink = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut socket, &mut sink).await;
    })
    .await;
    let mut spec = node(&address, "ClueCon", Subscriptions::all());
    spec.config.session.handshake_timeout = Duration::from_millis(200);
    spec.config.max_attempts = Some(1);
    let (_dir, capture) = start(spec);
    wait_for("the node to give up", || capture.all_nodes_stopped()).await;
    let (records, exits) = shut_down(capture).await;
    assert!(matches!(exits[0].1, NodeExit::GaveUp(_)), "{exits:?}");
    assert_eq!(
        names(&records)[1..],
        ["connection.opened", "wire.malformed", "connection.closed"]
    );
    let malformed = &records[2];
    assert_eq!(payload_str(malformed, "raw_payload"), GREETING);
    assert_eq!(
        malformed.payload()["derived_metadata"]["malformed-error"],
        "peer sent non-ESL data (handshake_timeout)"
    );
    assert_eq!(fact(&records[3], "close-reason"), "handshake_timeout");
}

/// A frame the codec refuses while the node drains a closed connection is stored with its
/// bytes, as it is on an open one.
#[tokio::test]
async fn a_codec_error_while_draining_is_stored_with_its_bytes() {
    const GARBAGE: &str = "Content-Length: nope\n\n";
    let address = switch(|socket, index| async move {
        let (mut reader, mut write) = handshake(socket).await;
        if index == 0 {
            write
                .write_all(&fixture("15-disconnect-notice-inbound.esl"))
                .await
                .unwrap();
            write.write_all(GARBAGE.as_bytes()).await.unwrap();
        }
        while read_command(&mut reader).await.is_some() {}
    })
    .await;
    let (_dir, capture) = start(node(&address, "ClueCon", Subscriptions::all()));
    let telemetry = capture.telemetry();
    wait_for("a reconnect", || counter(&telemetry.reconnects) >= 1).await;
    let (records, _) = shut_down(capture).await;
    let closed = records
        .iter()
        .position(|r| r.artifact_name() == "connection.closed")
        .unwrap();
    assert_eq!(
        names(&records[closed - 2..=closed]),
        ["wire.disconnect", "wire.malformed", "connection.closed"]
    );
    assert_eq!(payload_str(&records[closed - 1], "raw_payload"), GARBAGE);
    assert_eq!(fact(&records[closed], "close-reason"), "disconnect_notice");
}

/// An event whose record is larger than the store takes is dropped and named by a gap; the
/// gap's `last_seen` names the last event stored before it, not the dropped one.
#[tokio::test]
async fn a_gap_after_an_oversized_event_names_the_last_event_stored() {
    let (go_on, wait) = oneshot::channel::<()>();
    let wait = Arc::new(parking_lot::Mutex::new(Some(wait)));
    let address = switch(move |socket, _| {
        let wait = wait.lock().take();
        async move {
            let (mut reader, mut write) = handshake(socket).await;
            write.write_all(&event(101, 0)).await.unwrap();
            write.write_all(&event(102, 100_000)).await.unwrap();
            if let Some(wait) = wait {
                let _ = wait.await;
            }
            write.write_all(&event(103, 0)).await.unwrap();
            while read_command(&mut reader).await.is_some() {}
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        max_payload_bytes: 64 << 10,
        ..LogOptions::default()
    };
    let store = open_store_with(dir.path().join("store"), options).unwrap();
    let capture = Capture::start(
        vec![node(&address, "ClueCon", Subscriptions::all())],
        Box::new(store),
        CaptureOptions::default(),
    )
    .unwrap();
    let telemetry = capture.telemetry();
    wait_for("the oversized event to be dropped", || {
        counter(&telemetry.drops) >= 1
    })
    .await;
    go_on.send(()).unwrap();
    // Greeting, two replies, three events.
    wait_for("the last event", || frames_read(&capture) >= 6).await;
    let (records, _) = shut_down(capture).await;
    let gap = records
        .iter()
        .find_map(|r| r.payload().get("gap").filter(|g| g["kind"] == "local_drop"))
        .unwrap();
    assert_eq!(gap["dropped"], 1);
    assert_eq!(gap["last_seen"]["event_sequence"], "101");
    assert_eq!(gap["last_seen"]["core_uuid"], CORE_UUID);
    let sequences: Vec<&str> = records
        .iter()
        .filter(|r| r.artifact_name() == "event.raw")
        .map(|r| fact(r, "event-sequence"))
        .collect();
    assert_eq!(sequences, ["101", "103"]);
}

/// Review finding 1: at a shutdown, complete frames already read (or already in the
/// kernel's receive buffer) are stored as events, and only the true trailing fragment is
/// stored as `wire.malformed`. The switch's last bytes are written by the test itself, on
/// a blocking socket, without yielding to the node, so the shutdown reaches the node while
/// they wait unread.
#[tokio::test]
async fn complete_frames_still_unread_at_a_shutdown_are_stored_as_events() {
    const LAST: u64 = 100;
    let (give, take) = oneshot::channel::<std::net::TcpStream>();
    let give = Arc::new(parking_lot::Mutex::new(Some(give)));
    let address = switch(move |socket, _| {
        let give = give.lock().take();
        async move {
            let (reader, mut write) = handshake(socket).await;
            let second = event(2, 0);
            write.write_all(&event(1, 0)).await.unwrap();
            write.write_all(&second[..second.len() / 2]).await.unwrap();
            let socket = reader.into_inner().reunite(write).unwrap();
            if let Some(give) = give {
                let _ = give.send(socket.into_std().unwrap());
            }
        }
    })
    .await;
    let (_dir, capture) = start(node(&address, "ClueCon", Subscriptions::all()));
    let mut socket = take.await.unwrap();
    // Greeting, two replies, event 1.
    wait_for("event 1", || frames_read(&capture) >= 4).await;
    let mut rest = event(2, 0).split_off(event(2, 0).len() / 2);
    for sequence in 3..=LAST {
        rest.extend(event(sequence, 0));
    }
    let next = event(LAST + 1, 0);
    let fragment = next[..next.len() / 2].to_vec();
    rest.extend(&fragment);
    socket.set_nonblocking(false).unwrap();
    std::io::Write::write_all(&mut socket, &rest).unwrap();
    let (records, exits) = shut_down(capture).await;
    assert_eq!(exits, [("pbx-a".to_owned(), NodeExit::Shutdown)]);
    let sequences: Vec<u64> = records
        .iter()
        .filter(|r| r.artifact_name() == "event.raw")
        .map(|r| fact(r, "event-sequence").parse().unwrap())
        .collect();
    assert_eq!(sequences, (1..=LAST).collect::<Vec<_>>());
    let malformed: Vec<&Record> = records
        .iter()
        .filter(|r| r.artifact_name() == "wire.malformed")
        .collect();
    assert_eq!(malformed.len(), 1, "{:?}", names(&records));
    assert_eq!(
        payload_str(malformed[0], "raw_payload").as_bytes(),
        &fragment[..]
    );
    drop(socket);
}

/// Review finding 3: a switch that sends events faster than the node reads them (a frame
/// is ready in every turn) and never greets cannot hold off the handshake timeout: the
/// node closes the connection (`handshake_timeout`) and reconnects.
#[tokio::test]
async fn a_flood_faster_than_the_node_reads_cannot_hold_off_the_handshake_timeout() {
    let address = switch(|socket, index| async move {
        if index > 0 {
            // Later connections hold the socket until the node leaves.
            let (mut reader, _write) = socket.into_split();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut reader, &mut Vec::new()).await;
            return;
        }
        let mut socket = socket.into_std().unwrap();
        socket.set_nonblocking(false).unwrap();
        let burst: Vec<u8> = (1..=5000).flat_map(|sequence| event(sequence, 0)).collect();
        // A blocking writer of its own: it keeps the node's socket full until the node
        // hangs up.
        std::thread::spawn(
            move || {
                while std::io::Write::write_all(&mut socket, &burst).is_ok() {}
            },
        );
    })
    .await;
    let mut spec = node(&address, "ClueCon", Subscriptions::all());
    spec.config.session.handshake_timeout = Duration::from_secs(1);
    let (_dir, capture) = start(spec);
    let telemetry = capture.telemetry();
    wait_for("the handshake timeout and a reconnect", || {
        counter(&telemetry.reconnects) >= 1
    })
    .await;
    // The flood fills the queue (its records may be dropped): the node's health says why
    // the first connection closed.
    let last_error = telemetry.health().get("pbx-a").unwrap().last_error.clone();
    assert_eq!(last_error.as_deref(), Some("handshake_timeout"));
    shut_down(capture).await;
}
