//! Capture against the real FreeSWITCH 1.10.12 recordings: a scripted peer plays the
//! recorded switch side of `events-plain`, `events-json`, `events-xml` (757 events each,
//! a 24 KB event, a UTF-8 caller name, events out of `Event-Sequence` order, the shutdown
//! notice at the end) and `auth-rejected`, chunk by chunk as the proxy read them, answering
//! each command our node sends in the recorded order. The store must hold every frame the
//! switch sent byte for byte in arrival order, with the right lifecycle, gap and evidence
//! records. Skips without `../shared` (outside CI).

use std::time::Duration;

use base64::Engine as _;
use bytes::BytesMut;
use esl_replay::capture::{
    Backoff, Capture, CaptureOptions, NodeConfig, NodeExit, NodeSpec, Password, Telemetry,
};
use esl_replay::esl::Frame;
use esl_replay::record::Record;
use esl_replay::server::CommandDecoder;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

use crate::support;
use crate::support::capture::{all_records, evidence, generation_ids};
use crate::support::fs_recordings::{Chunk, Dir};
use crate::support::process::open_store;

/// Plays the switch side of `chunks` to the first client: writes each recorded server
/// chunk, and at each recorded client chunk reads as many commands from our client as the
/// recording holds there. Later connects are refused (the listener is closed). Returns the
/// address and, when the client leaves, the command lines it sent.
async fn scripted_switch(chunks: Vec<Chunk>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        drop(listener);
        let mut ours = CommandDecoder::default();
        let mut input = BytesMut::new();
        let mut lines = Vec::new();
        for chunk in &chunks {
            match chunk.dir {
                Dir::ServerToClient => socket.write_all(&chunk.data).await.unwrap(),
                Dir::ClientToServer => {
                    let mut recorded = CommandDecoder::default();
                    let mut buf = BytesMut::from(&chunk.data[..]);
                    while recorded.decode(&mut buf).unwrap().is_some() {
                        let command = loop {
                            if let Some(command) = ours.decode(&mut input).unwrap() {
                                break command;
                            }
                            let read = tokio::time::timeout(
                                Duration::from_secs(10),
                                socket.read_buf(&mut input),
                            )
                            .await
                            .expect("our client's next command")
                            .unwrap();
                            assert!(read > 0, "our client left early");
                        };
                        lines.push(command.line);
                    }
                }
            }
        }
        // The switch is gone after its last words; wait for the client to hang up.
        let _ = socket.shutdown().await;
        let mut sink = [0u8; 4096];
        while socket.read(&mut sink).await.unwrap_or(0) > 0 {}
        lines
    });
    (address, task)
}

fn node(address: &str, password: &str) -> NodeSpec {
    let mut config = NodeConfig::new(address);
    config.password = Password::new(password);
    config.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(200),
    };
    NodeSpec {
        slug: "fs-vm".into(),
        config,
    }
}

/// The bytes of the frame a record stores: events keep their header list and body;
/// every other frame is stored whole.
fn stored_frame(record: &Record) -> Option<Vec<u8>> {
    let payload = record.payload();
    let headers = payload.get("frame_headers")?.as_array()?;
    let raw = match payload.get("raw_payload_base64").and_then(|v| v.as_str()) {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        None => payload["raw_payload"].as_str()?.as_bytes().to_vec(),
    };
    if record.artifact_name() != "event.raw" {
        return Some(raw);
    }
    let mut bytes = Vec::new();
    for pair in headers {
        let name = pair[0].as_str().unwrap();
        let value = pair[1].as_str().unwrap();
        bytes.extend_from_slice(format!("{name}: {value}\n").as_bytes());
    }
    bytes.push(b'\n');
    bytes.extend_from_slice(&raw);
    Some(bytes)
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn frames_read(capture: &Capture) -> u64 {
    capture
        .telemetry()
        .frames
        .get_or_create(&Telemetry::node("fs-vm"))
        .get()
}

/// Captures one recording; returns the recorded frames and the store's records.
async fn capture_recording(
    name: &str,
    password: &str,
) -> Option<(Vec<Frame>, Vec<Record>, Vec<String>, NodeExit)> {
    let dir = support::fs_recordings::dir()?;
    let chunks = support::fs_recordings::load(&dir, name);
    let recorded = support::fs_recordings::frames(&support::fs_recordings::stream(
        &chunks,
        Dir::ServerToClient,
    ));
    let (address, switch) = scripted_switch(chunks).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = open_store(tmp.path().join("store")).unwrap();
    let capture = Capture::start(
        vec![node(&address, password)],
        Box::new(store),
        CaptureOptions::default(),
    )
    .unwrap();
    let expected = recorded.len() as u64;
    wait_until(&format!("{name}: {expected} frames read"), || {
        frames_read(&capture) >= expected
    })
    .await;
    // The connection's end is recorded before the node backs off or stops; a shutdown
    // before then would record the close as one we asked for (not retryable).
    wait_until(&format!("{name}: the connection closed"), || {
        capture
            .telemetry()
            .health()
            .get("fs-vm")
            .is_some_and(|node| matches!(node.connection.as_str(), "backing_off" | "stopped"))
    })
    .await;
    let (store, exits) = capture.shutdown().await.unwrap();
    let commands = switch.await.unwrap();
    let records = all_records(store.as_ref());
    let exit = exits.into_iter().next().unwrap().1;
    Some((recorded, records, commands, exit))
}

fn assert_every_frame_stored(name: &str, recorded: &[Frame], records: &[Record]) -> usize {
    let stored: Vec<(String, Vec<u8>)> = records
        .iter()
        .filter_map(|r| Some((r.artifact_name().to_owned(), stored_frame(r)?)))
        .collect();
    assert_eq!(stored.len(), recorded.len(), "{name}: one record per frame");
    for (i, ((artifact, bytes), frame)) in stored.iter().zip(recorded).enumerate() {
        assert!(
            bytes[..] == frame.to_bytes()[..],
            "{name}: frame {i} ({artifact}) differs:\nstored:   {:?}\nrecorded: {:?}",
            String::from_utf8_lossy(bytes),
            String::from_utf8_lossy(&frame.to_bytes())
        );
    }
    stored.len()
}

async fn events_are_stored_byte_for_byte(name: &str) {
    let Some((recorded, records, commands, exit)) = capture_recording(name, "ClueCon").await else {
        return;
    };
    assert_eq!(commands, ["auth ClueCon", "event plain ALL"], "{name}");
    let compared = assert_every_frame_stored(name, &recorded, &records);
    let events: Vec<&Record> = records
        .iter()
        .filter(|r| r.artifact_name() == "event.raw")
        .collect();
    assert_eq!(events.len(), 757, "{name}: the README's event count");
    let largest = events
        .iter()
        .map(|r| stored_frame(r).unwrap().len())
        .max()
        .unwrap();
    assert!(
        largest > 20_000,
        "{name}: the 24 KB event is whole ({largest})"
    );
    let last_frame = records
        .iter()
        .rev()
        .find(|r| stored_frame(r).is_some())
        .unwrap();
    assert_eq!(last_frame.artifact_name(), "wire.disconnect");
    assert!(
        stored_frame(last_frame)
            .unwrap()
            .ends_with(b"The system is being shut down.\n")
    );
    // One connection, closed by the switch's notice (retryable), then refused reconnects:
    // no second connection, so no gap record.
    let count = |artifact: &str| {
        records
            .iter()
            .filter(|r| r.artifact_name() == artifact)
            .count()
    };
    assert_eq!(count("connection.opened"), 1, "{name}");
    assert_eq!(count("capture.gap"), 0, "{name}");
    let closed = records
        .iter()
        .find(|r| r.artifact_name() == "connection.closed")
        .unwrap();
    let closed: serde_json::Value =
        serde_json::from_str(closed.payload()["raw_payload"].as_str().unwrap()).unwrap();
    assert_eq!(closed["reason"], "disconnect_notice", "{name}");
    assert_eq!(closed["retryable"], true, "{name}");
    assert_eq!(exit, NodeExit::Shutdown);

    let bundle = evidence(&records);
    let generations = generation_ids(&bundle);
    assert_eq!(generations, ["1"], "{name}");
    assert!(
        bundle.manifest.verdict.issues.is_empty(),
        "{name}: {:?}",
        bundle.manifest.verdict.issues
    );
    println!("{name}: {compared} frames stored byte for byte in arrival order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_events_are_stored_byte_for_byte_in_arrival_order() {
    events_are_stored_byte_for_byte("events-plain.jsonl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_events_are_stored_byte_for_byte_in_arrival_order() {
    events_are_stored_byte_for_byte("events-json.jsonl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xml_events_are_stored_byte_for_byte_in_arrival_order() {
    events_are_stored_byte_for_byte("events-xml.jsonl").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_auth_is_stored_and_stops_the_node() {
    let Some((recorded, records, commands, exit)) =
        capture_recording("auth-rejected.jsonl", "WrongPassword").await
    else {
        return;
    };
    assert_eq!(commands, ["auth WrongPassword"]);
    let compared = assert_every_frame_stored("auth-rejected", &recorded, &records);
    assert_eq!(compared, 3, "greeting, -ERR invalid, notice");
    assert!(
        matches!(&exit, NodeExit::Terminal(reason) if reason.contains("auth")),
        "{exit:?}"
    );
    assert!(
        records.iter().all(|r| !serde_json::to_string(r.payload())
            .unwrap()
            .contains("WrongPassword")),
        "the password is never stored"
    );
}
