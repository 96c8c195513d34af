//! The capture node against scripted FreeSWITCH conversations.
//!
//! A tokio `TcpListener` plays FreeSWITCH from the synthetic fixtures: greeting, auth
//! (`+OK accepted` or `-ERR invalid` + disconnect notice), replies to the restore commands,
//! scripted events, then a disconnect notice, a dropped socket, or a command loop answering
//! `api` and `bgapi` (ack + BACKGROUND_JOB carrying our Job-UUID). The tests check what the
//! store holds afterwards: names, order, fields, payload layout, generations, restored
//! subscriptions and the gap markers; and the queue's exact drop accounting.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use esl_replay::capture::{
    Backoff, Capture, CaptureArtifact, CaptureOptions, CaptureQueue, Captured, CommandConnection,
    GatewayCommand, HealthForm, HttpState, Mapper, NodeConfig, NodeExit, NodeIdentity, NodeSpec,
    Password, Pushed, Stamp, Telemetry, WriterOptions, router, spawn_writer,
};
use esl_replay::esl::session::{Inbound, ReplyStatus, Subscriptions};
use esl_replay::esl::{EslCodec, Frame};
use esl_replay::evidence::EvidenceBundle;
use esl_replay::http_server::Limits;
use esl_replay::record::{CapturePayload, Record};
use esl_replay::store::{ArtifactStore, LogStore, SqliteStore};
use parking_lot::Mutex;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

use crate::support;
use crate::support::capture::{all_records, evidence, generation_ids, new_store};
use crate::support::process::open_store;
use crate::support::refusing_store::RefusingStore;

const FIXTURE_JOB: &str = "d1b9f2a6-7c3e-4b5d-9e8f-0a1b2c3d4e5f";

pub(crate) fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/esl/synthetic")
        .join(name);
    std::fs::read(path).unwrap()
}

pub(crate) fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut buf = bytes::BytesMut::from(bytes);
    let mut codec = EslCodec::new();
    std::iter::from_fn(|| codec.decode_eof(&mut buf).unwrap()).collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum End {
    /// Send the inbound disconnect notice, then close.
    Notice,
    /// Answer api/bgapi/exit until the client goes away.
    Serve,
}

#[derive(Clone, Debug)]
struct Script {
    password: &'static str,
    events: Vec<&'static str>,
    end: End,
}

/// The commands each connection received (auth lines included).
type CommandLog = Arc<Mutex<Vec<Vec<String>>>>;

pub(crate) async fn read_command(
    reader: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
) -> Option<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let line = line.trim_end_matches('\n').to_owned();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            return Some(lines);
        }
        lines.push(line);
    }
}

/// Plays one FreeSWITCH connection.
async fn play(socket: TcpStream, script: Script, log: CommandLog, index: usize) {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    log.lock().push(Vec::new());
    let record = |lines: &Vec<String>| log.lock()[index].push(lines.join("|"));
    write
        .write_all(&fixture("01-auth-request.esl"))
        .await
        .unwrap();
    let Some(auth) = read_command(&mut reader).await else {
        return;
    };
    record(&auth);
    if auth[0] != format!("auth {}", script.password) {
        write
            .write_all(&fixture("03-command-reply-auth-err-then-disconnect.esl"))
            .await
            .unwrap();
        return;
    }
    write
        .write_all(&fixture("02-command-reply-auth-ok.esl"))
        .await
        .unwrap();
    let filter_ok = frames(&fixture("20-command-replies-misc.esl"))[0].to_bytes();
    let mut events_sent = false;
    loop {
        // Restore commands arrive right after the auth reply; once they stop for 100 ms the
        // scripted events go out.
        let command = if events_sent {
            read_command(&mut reader).await
        } else {
            match tokio::time::timeout(Duration::from_millis(100), read_command(&mut reader)).await
            {
                Ok(command) => command,
                Err(_) => {
                    for event in &script.events {
                        write.write_all(&fixture(event)).await.unwrap();
                    }
                    events_sent = true;
                    if script.end == End::Notice {
                        write
                            .write_all(&fixture("15-disconnect-notice-inbound.esl"))
                            .await
                            .unwrap();
                        return;
                    }
                    continue;
                }
            }
        };
        let Some(command) = command else { return };
        record(&command);
        if command[0].starts_with("event ") {
            write
                .write_all(&fixture("04-command-reply-event-plain-ok.esl"))
                .await
                .unwrap();
        } else if command[0].starts_with("filter ") {
            write.write_all(&filter_ok).await.unwrap();
        } else if command[0].starts_with("api ") {
            write
                .write_all(&fixture("06-api-response-version.esl"))
                .await
                .unwrap();
        } else if command[0].starts_with("bgapi ") {
            let job = command
                .iter()
                .find_map(|l| l.strip_prefix("Job-UUID: "))
                .unwrap()
                .to_owned();
            let ack = String::from_utf8(fixture("07-command-reply-bgapi-accepted.esl"))
                .unwrap()
                .replace(FIXTURE_JOB, &job);
            write.write_all(ack.as_bytes()).await.unwrap();
            let event = String::from_utf8(fixture("08-event-plain-background-job.esl"))
                .unwrap()
                .replace(FIXTURE_JOB, &job);
            write.write_all(event.as_bytes()).await.unwrap();
        } else if command[0] == "exit" {
            write
                .write_all(b"Content-Type: command/reply\nReply-Text: +OK bye\n\n")
                .await
                .unwrap();
            write
                .write_all(&fixture("15-disconnect-notice-inbound.esl"))
                .await
                .unwrap();
            return;
        }
    }
}

/// A fake FreeSWITCH playing `scripts`, one per connection, in order; later connects are
/// accepted and closed at once (a dead listener).
async fn fake_freeswitch(scripts: Vec<Script>) -> (String, CommandLog) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let log: CommandLog = Arc::default();
    let shared = Arc::clone(&log);
    tokio::spawn(async move {
        let mut index = 0;
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            match scripts.get(index) {
                Some(script) => {
                    tokio::spawn(play(socket, script.clone(), Arc::clone(&shared), index));
                    index += 1;
                }
                None => drop(socket),
            }
        }
    });
    (address, log)
}

pub(crate) fn node(address: &str, password: &str, subscriptions: Subscriptions) -> NodeSpec {
    let mut config = NodeConfig::new(address);
    config.password = Password::new(password);
    config.subscriptions = subscriptions;
    config.backoff = Backoff {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(50),
    };
    NodeSpec {
        slug: "pbx-a".into(),
        config,
    }
}

pub(crate) fn names(records: &[Record]) -> Vec<&str> {
    records.iter().map(Record::artifact_name).collect()
}

pub(crate) fn payload_str<'a>(record: &'a Record, key: &str) -> &'a str {
    record.payload()[key].as_str().unwrap_or_default()
}

/// A capture of one node (`pbx-a`, logging in with `password`) of a fake switch playing
/// `script` on its first connection (later ones are dropped), into a new store.
async fn capture_of(script: Script, password: &str) -> (tempfile::TempDir, Capture, CommandLog) {
    let (address, log) = fake_freeswitch(vec![script]).await;
    let (dir, store) = new_store();
    let capture = Capture::start(
        vec![node(&address, password, Subscriptions::all())],
        store,
        CaptureOptions::default(),
    )
    .unwrap();
    (dir, capture, log)
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    for _ in 0..500 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Each operation's id and its states in order.
fn operation_states(bundle: &EvidenceBundle) -> Vec<(String, Vec<String>)> {
    bundle
        .operations
        .iter()
        .map(|op| {
            let states = op.observed_states.iter().map(|s| s.state.clone()).collect();
            (op.operation_id.clone(), states)
        })
        .collect()
}

pub(crate) fn frames_read(capture: &Capture) -> u64 {
    capture
        .telemetry()
        .frames
        .get_or_create(&Telemetry::node("pbx-a"))
        .get()
}

#[tokio::test]
async fn capture_writes_a_complete_wire_log_and_restores_subscriptions_after_reconnect() {
    let events = vec![
        "09-event-plain-channel-create.esl",
        "10-event-plain-channel-answer.esl",
        "18-log-data.esl",
        "12-event-plain-heartbeat.esl",
    ];
    let (address, log) = fake_freeswitch(vec![
        Script {
            password: "s3cret-pw",
            events: events.clone(),
            end: End::Notice,
        },
        Script {
            password: "s3cret-pw",
            events: vec!["13-event-plain-dtmf.esl"],
            end: End::Serve,
        },
    ])
    .await;
    let subs = Subscriptions {
        events: vec!["ALL".into()],
        filters: vec![("Event-Name".into(), "HEARTBEAT".into())],
    };
    let (_dir, store) = new_store();
    let capture = Capture::start(
        vec![node(&address, "s3cret-pw", subs)],
        store,
        CaptureOptions::default(),
    )
    .unwrap();
    let session_id = capture.session_id().to_owned();
    // Connection 1: greeting, 2 replies (auth, event), filter reply, 4 frames, notice = 9;
    // connection 2: greeting, 3 replies, 1 event = 5.
    wait_until("both connections' frames", || frames_read(&capture) >= 14).await;
    let telemetry = capture.telemetry();
    let (store, exits) = capture.shutdown().await.unwrap();
    assert_eq!(exits, vec![("pbx-a".to_owned(), NodeExit::Shutdown)]);
    // T15: every frame's capture-to-durable latency was observed once its sync returned.
    let metrics = telemetry.encode();
    let durable_count = metrics
        .lines()
        .find_map(|line| line.strip_prefix("esl_capture_durable_latency_seconds_count "))
        .map(|count| count.parse::<u64>().unwrap());
    assert_eq!(durable_count, Some(14), "{metrics}");
    let records = all_records(store.as_ref());

    // Subscriptions and filters were restored on the second connection.
    let commands = log.lock().clone();
    assert_eq!(commands.len(), 2);
    for connection in &commands {
        assert_eq!(
            connection[..3],
            [
                "auth s3cret-pw",
                "event plain ALL",
                "filter Event-Name HEARTBEAT"
            ]
        );
    }
    // The password never reaches the store.
    for record in &records {
        let line = esl_replay::record::to_ndjson_line(record);
        assert!(!line.contains("s3cret-pw"), "password stored in {line}");
    }
    let first_connection = [
        "subscription.mutate",
        "filter.mutate",
        "connection.opened",
        "wire.greeting",
        "wire.auth",
        "command.reply",
        "wire.command",
        "wire.command",
        "command.reply",
        "command.reply",
        "event.raw",
        "event.raw",
        "wire.log",
        "event.raw",
        "wire.disconnect",
        "connection.closed",
        "connection.opened",
        "capture.gap",
        "wire.greeting",
        "wire.auth",
        "command.reply",
        "wire.command",
        "wire.command",
        "command.reply",
        "command.reply",
        "event.raw",
        "connection.closed",
    ];
    assert_eq!(names(&records), first_connection);

    // Generations: 1 on the first TCP connection, 2 on the second.
    let generation = |i: usize| records[i].connection_generation().unwrap();
    assert_eq!(generation(3), "1");
    assert_eq!(generation(15), "1");
    assert_eq!(generation(16), "2");
    // Every record: one session id, the node slug, capture sequences 1..=n in order.
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record.session_id(), Some(session_id.as_str()));
        assert_eq!(record.capture_path(), Some(record.artifact_name()));
        let flags = record.runtime_flags();
        assert_eq!(flags["pbx_node_slug"], "pbx-a");
        assert_eq!(flags["replay_capture_sequence"], Value::from(i as u64 + 1));
        assert_eq!(
            record.payload()["derived_metadata"]["replay-artifact-name"],
            record.artifact_name()
        );
    }

    // event.raw: the outer body as raw_payload, outer headers kept, facts from the body.
    let create = &records[10];
    let create_frame = &frames(&fixture("09-event-plain-channel-create.esl"))[0];
    assert_eq!(
        payload_str(create, "raw_payload").as_bytes(),
        &create_frame.body()[..]
    );
    assert_eq!(create.event_name(), Some("CHANNEL_CREATE"));
    assert_eq!(payload_str(create, "captured_name"), "CHANNEL_CREATE");
    let facts = &create.payload()["protocol_facts"];
    assert_eq!(facts["content-type"], "text/event-plain");
    assert_eq!(facts["event-sequence"], "48201");
    assert_eq!(facts["unique-id"], "4f1c2d9a-6b3e-4a7f-9c2d-1e8b7a6f5c30");
    assert_eq!(create.runtime_flags()["replay_protocol_sequence"], "48201");
    assert_eq!(
        create.payload()["frame_headers"],
        serde_json::json!([
            ["Content-Length", "2711"],
            ["Content-Type", "text/event-plain"]
        ])
    );
    assert!(create.payload().get("raw_payload_base64").is_none());

    // Replies: header lines + blank line + body.
    let auth_reply = &records[5];
    assert_eq!(
        payload_str(auth_reply, "captured_name"),
        "AuthAcceptedReply"
    );
    assert_eq!(
        payload_str(auth_reply, "raw_payload").as_bytes(),
        &fixture("02-command-reply-auth-ok.esl")[..]
    );
    assert_eq!(payload_str(&records[4], "raw_payload"), "auth");
    assert_eq!(
        payload_str(&records[12], "raw_payload").as_bytes(),
        &fixture("18-log-data.esl")[..]
    );

    // The gap names the last event stored before the drop and the down time.
    let gap = &records[17].payload()["gap"];
    assert_eq!(gap["kind"], "reconnect");
    assert_eq!(gap["reason"], "disconnect_notice");
    assert_eq!(
        gap["last_seen"]["core_uuid"],
        "8a5f3c2e-1b7d-4c9e-a6f0-3d2b1e9c7a41"
    );
    assert_eq!(gap["last_seen"]["event_sequence"], "48230");
    assert!(gap["down_micros"].as_u64().is_some());
    assert_eq!(
        records[15].payload()["protocol_facts"]["close-reason"],
        "disconnect_notice"
    );

    // Evidence: the second auth starts recovery generation 2; the gap changes the
    // continuity posture, so the window is partial with that one issue at the gap.
    let bundle = evidence(&records);
    let generations = generation_ids(&bundle);
    assert_eq!(generations, ["1", "2"]);
    let issues = &bundle.manifest.verdict.issues;
    assert_eq!(issues.len(), 1, "{issues:?}");
    assert_eq!(issues[0].code.as_str(), "replay_continuity_posture_changed");
    assert_eq!(
        issues[0].append_sequence,
        Some(records[17].append_sequence())
    );
    assert_eq!(bundle.manifest.verdict.posture.as_str(), "partial");
    let auths: Vec<_> = operation_states(&bundle)
        .into_iter()
        .filter(|(id, _)| id.starts_with("auth-"))
        .collect();
    assert_eq!(
        auths,
        [
            (
                "auth-g1-1".to_owned(),
                vec!["accepted".to_owned(), "completed".to_owned()]
            ),
            (
                "auth-g2-1".to_owned(),
                vec!["accepted".to_owned(), "completed".to_owned()]
            ),
        ]
    );
}

#[tokio::test]
async fn a_rejected_password_stops_the_node_and_is_recorded() {
    let script = Script {
        password: "right",
        events: vec![],
        end: End::Notice,
    };
    let (_dir, capture, _log) = capture_of(script, "wrong").await;
    wait_until("the node to stop", || capture.all_nodes_stopped()).await;
    let (store, exits) = capture.shutdown().await.unwrap();
    assert!(
        matches!(&exits[0].1, NodeExit::Terminal(r) if r.contains("auth rejected")),
        "{exits:?}"
    );
    let records = all_records(store.as_ref());
    assert_eq!(
        names(&records),
        [
            "subscription.mutate",
            "connection.opened",
            "wire.greeting",
            "wire.auth",
            "command.reply",
            "wire.disconnect",
            "connection.closed"
        ]
    );
    assert_eq!(payload_str(&records[4], "captured_name"), "ErrorReply");
    assert_eq!(
        records[4].payload()["protocol_facts"]["reply-text"],
        "-ERR invalid"
    );
    assert_eq!(
        records[6].payload()["protocol_facts"]["close-reason"],
        "auth_rejected"
    );
}

#[tokio::test]
async fn a_rude_rejection_is_stored_and_terminal() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        socket
            .write_all(&fixture("19-rude-rejection-then-disconnect.esl"))
            .await
            .unwrap();
    });
    let (_dir, store) = new_store();
    let capture = Capture::start(
        vec![node(&address, "x", Subscriptions::all())],
        store,
        CaptureOptions::default(),
    )
    .unwrap();
    wait_until("the node to stop", || capture.all_nodes_stopped()).await;
    let (store, exits) = capture.shutdown().await.unwrap();
    assert!(
        matches!(&exits[0].1, NodeExit::Terminal(r) if r == "rude_rejection"),
        "{exits:?}"
    );
    let records = all_records(store.as_ref());
    assert_eq!(
        names(&records)[1..],
        [
            "connection.opened",
            "wire.rejection",
            "wire.disconnect",
            "connection.closed"
        ]
    );
}

#[tokio::test]
async fn gateway_commands_are_dispatched_and_every_reply_is_captured() {
    let script = Script {
        password: "ClueCon",
        events: vec![],
        end: End::Serve,
    };
    let (_dir, capture, log) = capture_of(script, "ClueCon").await;
    let gateway = capture.gateway();
    let telemetry = capture.telemetry();
    wait_until("ready", || {
        telemetry
            .health()
            .get("pbx-a")
            .is_some_and(|h| h.connection == "ready")
    })
    .await;
    let version = gateway
        .dispatch(None, GatewayCommand::Api("version".into()))
        .await
        .unwrap();
    assert_eq!(version.status, "other");
    assert!(version.body.starts_with("FreeSWITCH Version"));
    let job = gateway
        .dispatch(
            Some("pbx-a"),
            GatewayCommand::BgApi("originate sofia/x &park()".into()),
        )
        .await
        .unwrap();
    assert_eq!(job.status, "ok");
    let job_uuid = job.job_uuid.clone().unwrap();
    assert!(
        log.lock()[0]
            .iter()
            .any(|c| c == &format!("bgapi originate sofia/x &park()|Job-UUID: {job_uuid}"))
    );
    wait_until("the BACKGROUND_JOB", || frames_read(&capture) >= 6).await;
    let (store, _) = capture.shutdown().await.unwrap();
    let records = all_records(store.as_ref());
    let tail: Vec<_> = names(&records).into_iter().skip(7).collect();
    assert_eq!(
        tail,
        [
            "api.dispatch",
            "api.reply",
            "bgapi.dispatch",
            "command.reply",
            "bgapi.ack",
            "event.raw",
            "bgapi.complete",
            "connection.closed"
        ]
    );
    let by_name = |name: &str| records.iter().find(|r| r.artifact_name() == name).unwrap();
    assert_eq!(
        payload_str(by_name("api.dispatch"), "raw_payload"),
        "api version"
    );
    assert_eq!(
        by_name("api.dispatch").payload()["protocol_facts"]["command-name"],
        "version"
    );
    assert_eq!(
        payload_str(by_name("api.reply"), "captured_name"),
        "ApiReply"
    );
    for name in ["bgapi.dispatch", "bgapi.ack", "bgapi.complete"] {
        assert_eq!(by_name(name).job_uuid(), Some(job_uuid.as_str()), "{name}");
    }
    let complete = by_name("bgapi.complete");
    assert_eq!(
        complete.payload()["derived_metadata"]["runtime-command-name"],
        "originate"
    );
    assert_eq!(complete.event_name(), Some("BACKGROUND_JOB"));

    // Evidence: the api and the bgapi are operations; the bgapi's completion joins it by
    // job UUID (decision C9), so nothing is left without identity.
    let bundle = evidence(&records);
    assert!(
        bundle.manifest.verdict.issues.is_empty(),
        "{:?}",
        bundle.manifest.verdict
    );
    let operations = operation_states(&bundle);
    let of = |prefix: &str| {
        operations
            .iter()
            .find(|(id, _)| id.starts_with(prefix))
            .map(|(_, states)| states.join(" "))
            .unwrap()
    };
    assert_eq!(of("api-g1-"), "accepted completed");
    assert_eq!(of("bgapi-g1-"), "accepted accepted accepted completed");
    let bgapi = bundle
        .operations
        .iter()
        .find(|op| op.operation_id.starts_with("bgapi-"))
        .unwrap();
    assert_eq!(bgapi.bgapi_job_uuid.as_deref(), Some(job_uuid.as_str()));
}

#[tokio::test]
async fn command_connection_sends_api_and_bgapi_and_awaits_the_job() {
    let (address, log) = fake_freeswitch(vec![Script {
        password: "pw",
        events: vec![],
        end: End::Serve,
    }])
    .await;
    let timeout = Duration::from_secs(5);
    let mut conn = CommandConnection::connect(&address, &Password::new("pw"), timeout)
        .await
        .unwrap();
    let reply = conn.api("version", timeout).await.unwrap();
    assert!(reply.text().starts_with("FreeSWITCH Version"), "{reply:?}");
    let ack = conn.bgapi("status", timeout).await.unwrap();
    assert_eq!(ack.status, ReplyStatus::Ok);
    let job = ack.job_uuid.unwrap();
    let done = conn.background_job(&job, timeout).await.unwrap();
    assert!(String::from_utf8_lossy(done.body()).contains(&job));
    conn.close().await.unwrap();
    wait_until("exit to arrive", || {
        log.lock()[0].last().is_some_and(|c| c == "exit")
    })
    .await;
    let commands = log.lock()[0].clone();
    assert_eq!(commands[..2], ["auth pw", "event plain BACKGROUND_JOB"]);
    assert_eq!(commands[2], "api version");
    assert!(commands[3].starts_with("bgapi status|Job-UUID: "));
    assert_eq!(commands.last().unwrap(), "exit");
    // A wrong password is a clear error.
    let (address, _) = fake_freeswitch(vec![Script {
        password: "pw",
        events: vec![],
        end: End::Serve,
    }])
    .await;
    let error = CommandConnection::connect(&address, &Password::new("no"), timeout)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("auth rejected"), "{error}");
}

fn identity() -> Arc<NodeIdentity> {
    Arc::new(NodeIdentity {
        session_id: "3b0d6f1e-8c2a-4f5b-9d7e-1a2b3c4d5e6f".into(),
        pbx_node_slug: "pbx-a".into(),
        worker_session_id: Some("ws-01".into()),
    })
}

/// Frames whose records are larger than the store takes (a hostile peer's) are dropped
/// one by one and named in gap records: the frames batched with them are stored, no batch
/// fails, and however many there are, the writer goes on.
#[test]
fn records_too_large_for_the_store_become_gaps_and_the_rest_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let event = frames(&fixture("12-event-plain-heartbeat.esl")).remove(0);
    let mut raw = b"Content-Length: 100000\nContent-Type: text/event-plain\n\n".to_vec();
    raw.resize(raw.len() + 100_000, b'x');
    let too_large = frames(&raw).remove(0);
    let item = |frame: &Frame| Captured::Frame {
        frame: frame.clone(),
        inbound: Inbound::Event {
            event_name: None,
            completes: None,
        },
    };
    let queue = Arc::new(CaptureQueue::new(
        64 << 20,
        vec![identity()],
        Arc::clone(&telemetry),
    ));
    let now = OffsetDateTime::now_utc();
    // 1, then twenty too large (2..=21) each between two events, then 42.
    queue.push(0, 1, now, item(&event));
    for _ in 0..20 {
        queue.push(0, 1, now, item(&too_large));
        queue.push(0, 1, now, item(&event));
    }
    let options = esl_replay::storage::LogOptions {
        max_payload_bytes: 64 << 10,
        ..Default::default()
    };
    let store = LogStore::open_with(dir.path().join("s"), options).unwrap();
    let writer = spawn_writer(
        Arc::clone(&queue),
        Box::new(store),
        WriterOptions::default(),
    )
    .unwrap();
    support::wait_until("the queue to drain", || queue.depth().0 == 0);
    // The drops are named by the gap record before the next item.
    queue.push(0, 1, now, item(&event));
    queue.close();
    let records = all_records(writer.join().unwrap().unwrap().as_ref());
    assert_eq!(telemetry.write_errors.get(), 0, "no batch failed");
    let mut stored = Vec::new();
    let mut gaps = Vec::new();
    for record in &records {
        let sequence = record.runtime_flags()["replay_capture_sequence"]
            .as_u64()
            .unwrap();
        stored.push(sequence);
        if let Some(gap) = record.payload().get("gap") {
            let first = gap["first_capture_sequence"].as_u64().unwrap();
            let last = gap["last_capture_sequence"].as_u64().unwrap();
            gaps.extend(first..=last);
        }
    }
    let events: Vec<u64> = std::iter::once(1)
        .chain((1..=20).map(|n| 2 * n + 1))
        .collect();
    assert!(events.iter().all(|e| stored.contains(e)), "{stored:?}");
    let dropped: u64 = records
        .iter()
        .filter_map(|r| r.payload().get("gap"))
        .map(|gap| gap["dropped"].as_u64().unwrap())
        .sum();
    assert_eq!(dropped, 20);
    // Every too-large frame is inside a gap's range; every sequence is stored or inside one.
    assert!((1..=20).all(|n| gaps.contains(&(2 * n))), "{gaps:?}");
    let mut covered = [stored, gaps].concat();
    covered.sort_unstable();
    covered.dedup();
    assert_eq!(covered, (1..=covered.len() as u64).collect::<Vec<_>>());
}

/// A batch the store refuses loses its gap marker too: the drops the marker named go into
/// the next marker with the batch's own items, so every capture sequence is still either
/// stored or inside a gap's range.
#[test]
fn a_refused_batch_keeps_the_range_of_its_gap_marker() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let event = frames(&fixture("12-event-plain-heartbeat.esl")).remove(0);
    let item = || Captured::Frame {
        frame: event.clone(),
        inbound: Inbound::Event {
            event_name: None,
            completes: None,
        },
    };
    // A queue of one item: 1 is queued, 2..=4 dropped.
    let queue = Arc::new(CaptureQueue::new(
        1,
        vec![identity()],
        Arc::clone(&telemetry),
    ));
    let now = OffsetDateTime::now_utc();
    for _ in 0..4 {
        queue.push(0, 1, now, item());
    }
    let refuse = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refuse_next = Arc::clone(&refuse);
    let store = RefusingStore::new(open_store(dir.path().join("s")).unwrap(), move || {
        refuse_next.swap(false, std::sync::atomic::Ordering::AcqRel)
    });
    let writer = spawn_writer(
        Arc::clone(&queue),
        Box::new(store),
        WriterOptions::default(),
    )
    .unwrap();
    support::wait_until("the queue to drain", || queue.depth().0 == 0);
    // The marker for 2..=4 (5) and an event (6), in one batch the store refuses.
    refuse.store(true, std::sync::atomic::Ordering::Release);
    queue.push(0, 1, now, item());
    support::wait_until("the refusal", || telemetry.write_errors.get() == 1);
    queue.push(0, 1, now, item());
    queue.close();
    let records = all_records(writer.join().unwrap().unwrap().as_ref());
    let mut covered = Vec::new();
    for record in &records {
        covered.push(
            record.runtime_flags()["replay_capture_sequence"]
                .as_u64()
                .unwrap(),
        );
        if let Some(gap) = record.payload().get("gap") {
            let first = gap["first_capture_sequence"].as_u64().unwrap();
            let last = gap["last_capture_sequence"].as_u64().unwrap();
            covered.extend(first..=last);
        }
    }
    covered.sort_unstable();
    assert_eq!(covered, (1..=8).collect::<Vec<_>>(), "{records:#?}");
}

/// A batch the store fails part-way (a segment log whose roll found the disk full) keeps
/// the records written before the failure: the gap names only the items not stored, so no
/// capture sequence is both stored and reported lost.
#[test]
fn a_batch_stored_in_part_reports_only_its_unstored_items_as_lost() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let event = frames(&fixture("12-event-plain-heartbeat.esl")).remove(0);
    let item = || Captured::Frame {
        frame: event.clone(),
        inbound: Inbound::Event {
            event_name: None,
            completes: None,
        },
    };
    let queue = Arc::new(CaptureQueue::new(
        64 << 20,
        vec![identity()],
        Arc::clone(&telemetry),
    ));
    let now = OffsetDateTime::now_utc();
    for _ in 0..5 {
        queue.push(0, 1, now, item());
    }
    let mut first = true;
    let store = RefusingStore::new(open_store(dir.path().join("s")).unwrap(), move || {
        std::mem::take(&mut first)
    })
    .storing_first(2);
    let writer = spawn_writer(
        Arc::clone(&queue),
        Box::new(store),
        WriterOptions::default(),
    )
    .unwrap();
    support::wait_until("the refusal", || telemetry.write_errors.get() == 1);
    queue.push(0, 1, now, item());
    queue.close();
    let records = all_records(writer.join().unwrap().unwrap().as_ref());
    let (mut stored, mut lost) = (Vec::new(), Vec::new());
    for record in &records {
        match record.payload().get("gap") {
            Some(gap) => lost.extend(
                gap["first_capture_sequence"].as_u64().unwrap()
                    ..=gap["last_capture_sequence"].as_u64().unwrap(),
            ),
            None => stored.push(
                record.runtime_flags()["replay_capture_sequence"]
                    .as_u64()
                    .unwrap(),
            ),
        }
    }
    assert_eq!(stored[..2], [1, 2], "{records:#?}");
    assert_eq!(lost, [3, 4, 5], "{records:#?}");
    assert!(stored.iter().all(|n| !lost.contains(n)), "{records:#?}");
}

/// A record another program writes into the capture's SQLite store fails one batch (recorded
/// as a gap); the batches after it follow that record, instead of failing until the writer
/// stops.
#[test]
fn a_foreign_write_into_a_sqlite_store_fails_one_batch_not_the_capture() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("capture.sqlite");
    let telemetry = Arc::new(Telemetry::new());
    let event = frames(&fixture("12-event-plain-heartbeat.esl")).remove(0);
    let item = || Captured::Frame {
        frame: event.clone(),
        inbound: Inbound::Event {
            event_name: None,
            completes: None,
        },
    };
    let queue = Arc::new(CaptureQueue::new(
        64 << 20,
        vec![identity()],
        Arc::clone(&telemetry),
    ));
    let now = OffsetDateTime::now_utc();
    let writer = spawn_writer(
        Arc::clone(&queue),
        Box::new(SqliteStore::open(&path).unwrap()),
        WriterOptions::default(),
    )
    .unwrap();
    let reader = SqliteStore::open_read_only(&path).unwrap();
    queue.push(0, 1, now, item());
    support::wait_until("the first record", || all_records(&reader).len() == 1);
    SqliteStore::open(&path)
        .unwrap()
        .write(support::record::fixture_envelope())
        .unwrap();
    queue.push(0, 1, now, item());
    support::wait_until("the refusal", || telemetry.write_errors.get() == 1);
    for _ in 0..3 {
        queue.push(0, 1, now, item());
    }
    queue.close();
    let records = all_records(writer.join().unwrap().unwrap().as_ref());
    let names: Vec<&str> = records.iter().map(Record::artifact_name).collect();
    let event_raw = "event.raw";
    assert_eq!(
        names,
        [
            event_raw,
            "api.dispatch",
            "capture.gap",
            event_raw,
            event_raw,
            event_raw
        ]
    );
    assert_eq!(telemetry.write_errors.get(), 1);
    let gap = &records[2].payload()["gap"];
    assert_eq!(
        (
            &gap["first_capture_sequence"],
            &gap["last_capture_sequence"]
        ),
        (&Value::from(2), &Value::from(2))
    );
    let sequences: Vec<u64> = records.iter().map(Record::append_sequence).collect();
    assert_eq!(sequences, (1..=6).collect::<Vec<_>>());
}

/// A frame of many tiny headers is charged what it holds, not its wire bytes: its parsed
/// headers take many times more memory, and the queue's bound must bound them too.
#[test]
fn a_frame_of_tiny_headers_is_charged_what_its_headers_hold() {
    let mut wire = b"Content-Type: text/event-plain\n".to_vec();
    for i in 0..20_000 {
        wire.extend_from_slice(format!("h{}: v\n", i % 10).as_bytes());
    }
    wire.push(b'\n');
    // A clone, as pushed below: the decoded list's spare capacity is not copied.
    let frame = frames(&wire).remove(0).clone();
    let (held, on_the_wire) = (frame.held_bytes(), frame.to_bytes().len());
    assert!(
        held > 10 * on_the_wire,
        "{held} bytes held for {on_the_wire} on the wire"
    );
    // Room for 3 such items by what they hold (for 60 by their wire bytes).
    let bound = 3 * (512 + held);
    let queue = CaptureQueue::new(bound, vec![identity()], Arc::new(Telemetry::new()));
    let now = OffsetDateTime::now_utc();
    let queued = (0..10)
        .map(|_| {
            let captured = Captured::Frame {
                frame: frame.clone(),
                inbound: Inbound::Event {
                    event_name: Some("CUSTOM".into()),
                    completes: None,
                },
            };
            queue.push(0, 1, now, captured)
        })
        .filter(|pushed| matches!(pushed, Pushed::Queued(_)))
        .count();
    assert_eq!(queued, 3);
    assert!(queue.depth().1 <= bound, "memory stays bounded");
}

#[test]
fn a_full_queue_drops_and_the_gap_accounts_for_every_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let event = frames(&fixture("12-event-plain-heartbeat.esl")).remove(0);
    let item_bytes = 512 + event.held_bytes();
    // Room for 10 items: a burst of 100 drops 90, then the writer catches up.
    let queue = Arc::new(CaptureQueue::new(
        item_bytes * 10,
        vec![identity()],
        Arc::clone(&telemetry),
    ));
    let captured = || Captured::Frame {
        frame: event.clone(),
        inbound: Inbound::Event {
            event_name: Some("HEARTBEAT".into()),
            completes: None,
        },
    };
    let now = OffsetDateTime::now_utc();
    let mut outcomes = Vec::new();
    for _ in 0..100 {
        outcomes.push(queue.push(0, 1, now, captured()));
    }
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Pushed::Queued(_)))
            .count(),
        10
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, Pushed::Dropped(_)))
            .count(),
        90
    );
    assert!(queue.depth().1 <= item_bytes * 10, "memory stays bounded");
    let store = open_store(dir.path().join("s")).unwrap();
    let writer = spawn_writer(
        Arc::clone(&queue),
        Box::new(store),
        WriterOptions::default(),
    )
    .unwrap();
    support::wait_until("the queue to drain", || queue.depth().0 == 0);
    // An idle queue: the mapping thread's wait for items times out (200 ms) and it waits
    // again; the writer is still there. The idle time is the scenario, not a
    // synchronisation.
    std::thread::sleep(Duration::from_millis(450));
    assert!(!writer.is_finished(), "the writer stopped while idle");
    // After the burst: 5 more items, the first preceded by the gap marker.
    for _ in 0..5 {
        assert!(matches!(
            queue.push(0, 1, now, captured()),
            Pushed::Queued(_)
        ));
    }
    queue.close();
    let store = writer.join().unwrap().unwrap();
    let records = all_records(store.as_ref());
    assert_eq!(records.len(), 10 + 1 + 5);
    let gap = records
        .iter()
        .find(|r| r.artifact_name() == "capture.gap")
        .unwrap();
    let g = &gap.payload()["gap"];
    assert_eq!(g["kind"], "local_drop");
    assert_eq!(g["dropped"], 90);
    assert_eq!(g["first_capture_sequence"], 11);
    assert_eq!(g["last_capture_sequence"], 100);
    // Stored sequences plus the gap range cover 1..=106 exactly once.
    let mut covered: Vec<u64> = records
        .iter()
        .map(|r| {
            r.runtime_flags()["replay_capture_sequence"]
                .as_u64()
                .unwrap()
        })
        .collect();
    covered.extend(11..=100);
    covered.sort_unstable();
    assert_eq!(covered, (1..=106).collect::<Vec<_>>());
    assert_eq!(
        telemetry
            .drops
            .get_or_create(&Telemetry::node("pbx-a"))
            .get(),
        90,
        "the drop counter matches"
    );
}

#[test]
fn drops_still_pending_at_shutdown_are_written_as_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let event = frames(&fixture("12-event-plain-heartbeat.esl")).remove(0);
    let queue = Arc::new(CaptureQueue::new(
        1,
        vec![identity()],
        Arc::clone(&telemetry),
    ));
    let captured = || Captured::Frame {
        frame: event.clone(),
        inbound: Inbound::Event {
            event_name: None,
            completes: None,
        },
    };
    let now = OffsetDateTime::now_utc();
    // The first item always fits an empty queue; the next three are dropped.
    for _ in 0..4 {
        queue.push(0, 1, now, captured());
    }
    queue.close();
    assert_eq!(queue.push(0, 1, now, captured()), Pushed::Closed);
    let store = open_store(dir.path().join("s")).unwrap();
    let writer = spawn_writer(
        Arc::clone(&queue),
        Box::new(store),
        WriterOptions::default(),
    )
    .unwrap();
    let records = all_records(writer.join().unwrap().unwrap().as_ref());
    assert_eq!(names(&records), ["event.raw", "capture.gap"]);
    let g = &records[1].payload()["gap"];
    assert_eq!(
        (
            g["dropped"].as_u64(),
            g["first_capture_sequence"].as_u64(),
            g["last_capture_sequence"].as_u64()
        ),
        (Some(3), Some(2), Some(4))
    );
}

/// Review finding 7: a burst that overflows the queue, followed by silence, is stored as a
/// gap as soon as the writer has emptied the queue, not only when the node's next item
/// comes or at shutdown.
#[test]
fn drops_followed_by_silence_are_written_as_a_gap_once_the_queue_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let telemetry = Arc::new(Telemetry::new());
    let event = frames(&fixture("12-event-plain-heartbeat.esl")).remove(0);
    let queue = Arc::new(CaptureQueue::new(
        1,
        vec![identity()],
        Arc::clone(&telemetry),
    ));
    let captured = || Captured::Frame {
        frame: event.clone(),
        inbound: Inbound::Event {
            event_name: None,
            completes: None,
        },
    };
    let now = OffsetDateTime::now_utc();
    // The first item always fits an empty queue; the next three are dropped.
    for _ in 0..4 {
        queue.push(0, 1, now, captured());
    }
    let store = open_store(dir.path().join("s")).unwrap();
    let writer = spawn_writer(
        Arc::clone(&queue),
        Box::new(store),
        WriterOptions::default(),
    )
    .unwrap();
    let written = || {
        telemetry
            .artifacts
            .get_or_create(&Telemetry::node("pbx-a"))
            .get()
    };
    support::wait_until("the event and the gap to be written", || written() >= 2);
    queue.close();
    let records = all_records(writer.join().unwrap().unwrap().as_ref());
    assert_eq!(names(&records), ["event.raw", "capture.gap"]);
    let g = &records[1].payload()["gap"];
    assert_eq!(
        (
            g["dropped"].as_u64(),
            g["first_capture_sequence"].as_u64(),
            g["last_capture_sequence"].as_u64()
        ),
        (Some(3), Some(2), Some(4))
    );
}

#[test]
fn non_utf8_bytes_are_stored_losslessly_in_base64() {
    let body: &[u8] = b"Event-Name: CUSTOM\nCaller-Caller-ID-Name: Zo\xEB\n\n";
    let raw = format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n",
        body.len()
    );
    let mut bytes = raw.into_bytes();
    bytes.extend_from_slice(body);
    let frame = frames(&bytes).remove(0);
    let mut mapper = Mapper::new(identity());
    let stamp = Stamp {
        capture_sequence: 1,
        captured_at: OffsetDateTime::now_utc(),
        connection_generation: 1,
    };
    let envelopes = mapper.map(
        &stamp,
        Captured::Frame {
            frame,
            inbound: Inbound::Event {
                event_name: None,
                completes: None,
            },
        },
    );
    let envelopes: Vec<_> = envelopes.iter().map(CaptureArtifact::envelope).collect();
    let payload = &envelopes[0].payload;
    let exact = base64::engine::general_purpose::STANDARD
        .decode(payload["raw_payload_base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(exact, body);
    assert!(
        payload["raw_payload"]
            .as_str()
            .unwrap()
            .contains('\u{FFFD}')
    );
    assert_eq!(envelopes[0].correlation_ids["worker_session_id"], "ws-01");
    // What serve and injection read back: the exact bytes, the content type, the headers.
    let read = CapturePayload::of(payload);
    assert_eq!(read.raw_bytes().as_deref(), Some(body));
    assert_eq!(read.fact("content-type"), Some("text/event-plain"));
    let headers = read.frame_headers().unwrap();
    assert!(
        headers.contains(&("Content-Length", body.len().to_string().as_str())),
        "{headers:?}"
    );
}

/// Serves the capture's HTTP endpoints (token `t0ken`) on a free port.
async fn serve_http(capture: &Capture) -> (String, tokio::task::JoinHandle<()>) {
    serve_http_as(capture, HealthForm::EslReplay).await
}

/// As [`serve_http`], with `/health` in the given shape.
async fn serve_http_as(
    capture: &Capture,
    health: HealthForm,
) -> (String, tokio::task::JoinHandle<()>) {
    serve_http_within(capture, health, Limits::default()).await
}

/// As [`serve_http_as`], within `limits`.
async fn serve_http_within(
    capture: &Capture,
    health: HealthForm,
    limits: Limits,
) -> (String, tokio::task::JoinHandle<()>) {
    let state = HttpState {
        telemetry: capture.telemetry(),
        gateway: capture.gateway(),
        token: Arc::from("t0ken"),
        jwt: None,
        queue: Some(capture.queue()),
        health,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = listener.local_addr().unwrap().to_string();
    let serve =
        esl_replay::http_server::serve(listener, router(state), limits, std::future::pending());
    (http, tokio::spawn(serve))
}

async fn http_request(address: &str, request: String) -> (u16, String) {
    let mut socket = TcpStream::connect(address).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test]
async fn http_serves_health_metrics_and_a_token_guarded_gateway() {
    let script = Script {
        password: "ClueCon",
        events: vec![],
        end: End::Serve,
    };
    let (_dir, capture, _log) = capture_of(script, "ClueCon").await;
    let (http, server) = serve_http(&capture).await;
    let telemetry = capture.telemetry();
    wait_until("ready", || {
        telemetry
            .health()
            .get("pbx-a")
            .is_some_and(|h| h.connection == "ready")
    })
    .await;

    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, body) = http_request(&http, get("/health")).await;
    assert_eq!(status, 200, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["nodes"]["pbx-a"]["session"], "ready");
    assert_eq!(health["nodes"]["pbx-a"]["liveness"], "live");
    assert_eq!(health["nodes"]["pbx-a"]["connection_generation"], 1);

    let post = |token: &str| {
        let body = r#"{"command":"version"}"#;
        format!(
            "POST /v1/api HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n{token}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let (status, _) = http_request(&http, post("")).await;
    assert_eq!(status, 401);
    let (status, _) = http_request(&http, post("Authorization: Bearer wrong\r\n")).await;
    assert_eq!(status, 401);
    let (status, body) = http_request(&http, post("Authorization: Bearer t0ken\r\n")).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("FreeSWITCH Version"));

    let (status, metrics) = http_request(&http, get("/metrics")).await;
    assert_eq!(status, 200);
    for name in [
        "esl_capture_frames_total{node=\"pbx-a\"}",
        // Shown before the first drop, so rate() sees the first burst.
        "esl_capture_dropped_artifacts_total{node=\"pbx-a\"} 0",
        "esl_capture_queue_depth",
        "esl_capture_append_latency_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    server.abort();
    capture.shutdown().await.unwrap();
}

/// telephony-event-sync's `/health` shape: a node whose switch went away is `unhealthy`
/// (503) with the error, its reconnect attempts and the last frame the switch sent; our
/// fields stay.
#[tokio::test]
async fn health_in_telephony_event_sync_form_reports_a_node_that_lost_its_switch() {
    // One session that ends with the disconnect notice; every later connection is dropped.
    let script = Script {
        password: "ClueCon",
        events: vec!["12-event-plain-heartbeat.esl"],
        end: End::Notice,
    };
    let (_dir, capture, _log) = capture_of(script, "ClueCon").await;
    let (http, server) = serve_http_as(&capture, HealthForm::TelephonyEventSync).await;
    let telemetry = capture.telemetry();
    wait_until("two failed reconnects", || {
        telemetry
            .health()
            .get("pbx-a")
            .is_some_and(|h| h.reconnect_attempts >= 2 && h.connection != "ready")
    })
    .await;

    let get = "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned();
    let (status, body) = http_request(&http, get).await;
    assert_eq!(status, 503, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "unhealthy", "{body}");
    let data = &health["data"];
    assert_eq!(data["is_healthy"], false, "{body}");
    assert!(data["recovery_attempts"].as_u64().unwrap() >= 2, "{body}");
    assert!(data["last_error"].is_string(), "{body}");
    for field in ["last_heartbeat", "last_check"] {
        let at = data[field].as_str().unwrap();
        assert!(
            OffsetDateTime::parse(at, &Rfc3339).is_ok(),
            "{field}: {body}"
        );
    }
    assert!(health["nodes"]["pbx-a"].is_object(), "{body}");
    server.abort();
    capture.shutdown().await.unwrap();
}

#[tokio::test]
async fn several_nodes_share_one_store_each_tagged_with_its_slug() {
    let (a, _) = fake_freeswitch(vec![Script {
        password: "ClueCon",
        events: vec!["12-event-plain-heartbeat.esl"],
        end: End::Serve,
    }])
    .await;
    let (b, _) = fake_freeswitch(vec![Script {
        password: "other",
        events: vec![
            "13-event-plain-dtmf.esl",
            "14-event-plain-custom-sofia-register.esl",
        ],
        end: End::Serve,
    }])
    .await;
    let mut node_a = node(&a, "ClueCon", Subscriptions::all());
    node_a.slug = "pbx-a".into();
    let mut node_b = node(&b, "other", Subscriptions::all());
    node_b.slug = "pbx-b".into();
    let (_dir, store) = new_store();
    let capture = Capture::start(
        vec![node_a, node_b.clone()],
        store,
        CaptureOptions::default(),
    )
    .unwrap();
    let telemetry = capture.telemetry();
    let frames = |slug: &str| telemetry.frames.get_or_create(&Telemetry::node(slug)).get();
    wait_until("both nodes' events", || {
        frames("pbx-a") >= 4 && frames("pbx-b") >= 5
    })
    .await;
    // Both nodes answer through the gateway; naming no node is refused with two.
    assert!(
        capture
            .gateway()
            .dispatch(None, GatewayCommand::Api("status".into()))
            .await
            .is_err()
    );
    let (store, _) = capture.shutdown().await.unwrap();
    let records = all_records(store.as_ref());
    let events = |slug: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| {
                r.runtime_flags()["pbx_node_slug"] == slug && r.artifact_name() == "event.raw"
            })
            .map(|r| r.event_name().unwrap().to_owned())
            .collect()
    };
    assert_eq!(events("pbx-a"), ["HEARTBEAT"]);
    assert_eq!(events("pbx-b"), ["DTMF", "CUSTOM"]);
    // One session id for the process; each node numbers its own capture sequences.
    let session = records[0].session_id().unwrap();
    assert!(records.iter().all(|r| r.session_id() == Some(session)));
    for slug in ["pbx-a", "pbx-b"] {
        let sequences: Vec<u64> = records
            .iter()
            .filter(|r| r.runtime_flags()["pbx_node_slug"] == slug)
            .map(|r| {
                r.runtime_flags()["replay_capture_sequence"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            sequences,
            (1..=sequences.len() as u64).collect::<Vec<_>>(),
            "{slug}"
        );
    }
    // Duplicate slugs are refused.
    let (_dir2, store2) = new_store();
    assert!(
        Capture::start(
            vec![node_b.clone(), node_b],
            store2,
            CaptureOptions::default()
        )
        .is_err()
    );
}

/// Issue 16 item 11: capturing into a store whose last sequence is at the record
/// model's limit (`i64::MAX`) fails at once and for good: the writer stops, the error is on
/// `/health` (503, `failed`) and in `/metrics`, and shutdown returns it. Records already
/// stored stay untouched.
#[tokio::test]
async fn a_store_at_the_sequence_limit_stops_the_writer_and_says_so_at_once() {
    let (address, _log) = fake_freeswitch(vec![Script {
        password: "ClueCon",
        events: vec!["12-event-plain-heartbeat.esl"],
        end: End::Serve,
    }])
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path().join("store")).unwrap();
    let last = i64::MAX as u64;
    let envelope = esl_replay::capture::Mapper::new(Arc::new(NodeIdentity {
        session_id: "s".into(),
        pbx_node_slug: "pbx-a".into(),
        worker_session_id: None,
    }))
    .map(
        &Stamp {
            capture_sequence: 1,
            captured_at: OffsetDateTime::now_utc(),
            connection_generation: 1,
        },
        Captured::ConnectionOpened {
            peer: "127.0.0.1:8021".into(),
            attempt: 1,
        },
    )
    .remove(0);
    let near_the_limit = Record::from_envelope(
        envelope.envelope(),
        esl_replay::record::RecordId::generate(),
        OffsetDateTime::now_utc(),
        last,
    )
    .unwrap();
    store
        .append_records(std::slice::from_ref(&near_the_limit))
        .unwrap();
    let capture = Capture::start(
        vec![node(&address, "ClueCon", Subscriptions::all())],
        Box::new(store),
        CaptureOptions::default(),
    )
    .unwrap();
    let (http, server) = serve_http(&capture).await;
    wait_until("the writer to stop", || capture.writer_stopped()).await;

    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let (status, body) = http_request(&http, get("/health")).await;
    assert_eq!(status, 503, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "failed");
    let error = health["writer_error"].as_str().unwrap();
    assert!(error.contains("sequences are exhausted"), "{error}");
    let (_, metrics) = http_request(&http, get("/metrics")).await;
    assert!(metrics.contains("esl_capture_writer_failed 1"), "{metrics}");
    assert!(
        metrics.contains("esl_capture_write_errors_total 1"),
        "{metrics}"
    );
    // The refused batch is accounted for as dropped, not silently lost.
    assert!(
        metrics
            .lines()
            .filter(|l| l.starts_with("esl_capture_dropped_artifacts_total"))
            .any(|l| !l.ends_with(" 0")),
        "{metrics}"
    );
    server.abort();

    let result = capture.shutdown().await.map(|_| ());
    assert!(
        matches!(
            result,
            Err(esl_replay::capture::CaptureError::Store(
                esl_replay::store::Error::SequencesExhausted { .. }
            ))
        ),
        "{result:?}"
    );
    let store = LogStore::open_read_only(dir.path().join("store")).unwrap();
    assert_eq!(all_records(&store), [near_the_limit]);
}

/// Checks that each artifact gives the same record whether its texts are written directly
/// (`encode`, what capture stores) or its maps are built and encoded (`envelope`), and that
/// the direct record reads back as that record. Returns how many were checked.
fn assert_builders_agree(artifacts: &[CaptureArtifact]) -> usize {
    use esl_replay::capture::EncodeBuffers;
    use esl_replay::record::RecordId;
    let mut buffers = EncodeBuffers::default();
    for artifact in artifacts {
        let id = RecordId::generate();
        let stored_at = OffsetDateTime::now_utc();
        let direct = artifact.encode(&id, &stored_at, &mut buffers).unwrap();
        let built = Record::from_envelope(artifact.envelope(), id, stored_at, 1).unwrap();
        let expected = built.encode().unwrap();
        assert!(
            direct.as_bytes() == expected,
            "{} built directly:\n{}\nbuilt from maps:\n{}",
            artifact.name(),
            String::from_utf8_lossy(direct.as_bytes()),
            String::from_utf8_lossy(&expected)
        );
        assert_eq!(direct.view().unwrap().to_record().unwrap(), built);
        assert!(built.verify_checksum());
    }
    artifacts.len()
}

/// Issue 14: capture writes a record's JSON texts and checksum input directly instead of
/// building maps. Over every kind of artifact (a session's dispatches, replies, bgapi
/// completion, the synthetic fixtures' frames, all 2,271 events of the real FreeSWITCH
/// 1.10.12 recordings, malformed bytes, mutations, connection changes and both gap kinds),
/// with and without a worker session, the records are byte-identical to the map-built ones.
#[test]
fn records_written_directly_are_byte_identical_to_map_built_records() {
    use esl_replay::capture::{GapKind, filter_document, subscription_document};
    use esl_replay::esl::session::{Command, Session, SessionConfig};
    let worker_less = Arc::new(NodeIdentity {
        session_id: "6f1e3b0d-8c2a-4f5b-9d7e-1a2b3c4d5e6f".into(),
        pbx_node_slug: "pbx-b".into(),
        worker_session_id: None,
    });
    let recordings = support::fs_recordings::dir();
    for identity in [identity(), worker_less] {
        let mut mapper = Mapper::new(identity);
        let mut artifacts = Vec::new();
        let sequence = std::cell::Cell::new(0);
        let stamp = || {
            sequence.set(sequence.get() + 1);
            Stamp {
                capture_sequence: sequence.get(),
                captured_at: OffsetDateTime::from_unix_timestamp_nanos(
                    1_767_261_600_123_456_789 + i128::from(sequence.get()) * 1_000,
                )
                .unwrap(),
                connection_generation: 2,
            }
        };
        // A session's conversation: greeting, auth, restore, api, bgapi and its job.
        let now = Duration::ZERO;
        let mut session = Session::new(SessionConfig::default(), Subscriptions::all(), now);
        let mut dispatched = std::collections::HashSet::new();
        let play = |name: &str, session: &mut Session, mapper: &mut Mapper| {
            let mut out = Vec::new();
            for frame in frames(&fixture(name)) {
                let inbound = session.handle_frame(&frame, now);
                out.extend(mapper.map(&stamp(), Captured::Frame { frame, inbound }));
            }
            out
        };
        let mut dispatch = |session: &Session, mapper: &mut Mapper, stamp: Stamp| {
            let mut out = Vec::new();
            for pending in session.pending() {
                if dispatched.insert(pending.id.0) {
                    let pending = pending.clone();
                    out.extend(mapper.map(&stamp, Captured::Dispatch { pending }));
                }
            }
            out
        };
        artifacts.extend(play("01-auth-request.esl", &mut session, &mut mapper));
        session.authenticate("ClueCon", now).unwrap();
        artifacts.extend(dispatch(&session, &mut mapper, stamp()));
        artifacts.extend(play(
            "02-command-reply-auth-ok.esl",
            &mut session,
            &mut mapper,
        ));
        artifacts.extend(dispatch(&session, &mut mapper, stamp()));
        artifacts.extend(play(
            "04-command-reply-event-plain-ok.esl",
            &mut session,
            &mut mapper,
        ));
        session
            .send(
                Command::Api {
                    command: "version".into(),
                },
                now,
            )
            .unwrap();
        artifacts.extend(dispatch(&session, &mut mapper, stamp()));
        artifacts.extend(play(
            "06-api-response-version.esl",
            &mut session,
            &mut mapper,
        ));
        session
            .send(
                Command::BgApi {
                    command: "status".into(),
                    job_uuid: FIXTURE_JOB.into(),
                },
                now,
            )
            .unwrap();
        artifacts.extend(dispatch(&session, &mut mapper, stamp()));
        for name in [
            "07-command-reply-bgapi-accepted.esl",
            "08-event-plain-background-job.esl",
            "05-command-reply-err-no-keywords.esl",
            "20-command-replies-misc.esl",
        ] {
            artifacts.extend(play(name, &mut session, &mut mapper));
        }
        let names: Vec<&str> = artifacts.iter().map(CaptureArtifact::name).collect();
        for expected in [
            "wire.greeting",
            "wire.auth",
            "command.reply",
            "api.dispatch",
            "api.reply",
            "bgapi.dispatch",
            "bgapi.ack",
            "bgapi.complete",
        ] {
            assert!(names.contains(&expected), "no {expected} in {names:?}");
        }
        // Every synthetic frame, as the events and wire frames capture stores.
        let mut names: Vec<_> = std::fs::read_dir(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/esl/synthetic"),
        )
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
        names.sort();
        for name in &names {
            let mut session = Session::new(SessionConfig::default(), Subscriptions::all(), now);
            artifacts.extend(play(name, &mut session, &mut mapper));
        }
        // The real switch's events, in its three formats.
        if let Some(dir) = &recordings {
            for name in [
                "events-plain.jsonl",
                "events-json.jsonl",
                "events-xml.jsonl",
            ] {
                let chunks = support::fs_recordings::load(dir, name);
                let stream = support::fs_recordings::stream(
                    &chunks,
                    support::fs_recordings::Dir::ServerToClient,
                );
                for frame in support::fs_recordings::frames(&stream) {
                    let inbound = Inbound::Event {
                        event_name: None,
                        completes: None,
                    };
                    artifacts.extend(mapper.map(&stamp(), Captured::Frame { frame, inbound }));
                }
            }
        }
        // What the client side adds.
        let before = Subscriptions::default();
        let after = Subscriptions::all();
        let quoted = "say \"hi\"\\\u{2028}\t/é".to_string();
        for captured in [
            Captured::Malformed {
                bytes: bytes::Bytes::from_static(b"Content-Length: x\n\n\xff\xfe"),
                buffered: 4096,
                error: quoted.clone(),
            },
            Captured::Mutation {
                filter: false,
                document: subscription_document("subscribe", &["ALL".into()], &before, &after),
            },
            Captured::Mutation {
                filter: true,
                document: filter_document("add", "Unique-ID", &quoted, &before, &after),
            },
            Captured::ConnectionOpened {
                peer: "127.0.0.1:8021".into(),
                attempt: 3,
            },
            Captured::ConnectionClosed {
                reason: quoted.clone(),
                retryable: true,
                frames: 42,
            },
            Captured::Gap(GapKind::Reconnect {
                down_since: OffsetDateTime::UNIX_EPOCH,
                down_micros: 1_500_000,
                reason: quoted.clone(),
            }),
            Captured::Gap(GapKind::LocalDrop {
                dropped: 7,
                dropped_bytes: 4_321,
                first_capture_sequence: 10,
                last_capture_sequence: 16,
            }),
        ] {
            artifacts.extend(mapper.map(&stamp(), captured));
        }
        // After a gap the continuity posture changes: one more event after it.
        artifacts.extend(play(
            "09-event-plain-channel-create.esl",
            &mut session,
            &mut mapper,
        ));
        let checked = assert_builders_agree(&artifacts);
        let floor = if recordings.is_some() { 2_271 } else { 40 };
        assert!(checked > floor, "only {checked} artifacts checked");
    }
}

/// Reads `stream` until the server closes it (end of stream or reset); what it sent first.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(support::PATIENCE, read)
        .await
        .expect("the server to close the connection");
    got
}

/// Whether the server still holds `stream` (non-blocking) open: nothing to read, not
/// closed.
fn still_open(stream: &std::net::TcpStream) -> bool {
    let peeked = stream.peek(&mut [0u8; 1]);
    matches!(peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A connection to `address` that sends nothing, polled with [`still_open`].
fn silent_connection(address: &str) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(address).unwrap();
    stream.set_nonblocking(true).unwrap();
    stream
}

/// `GET path` on a fresh connection, retried while the server closes it unanswered (all
/// its connections taken); the status and body.
async fn get_when_served(address: &str, path: &str) -> (u16, String) {
    let give_up = std::time::Instant::now() + support::PATIENCE;
    loop {
        let mut socket = TcpStream::connect(address).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let _ = socket.write_all(request.as_bytes()).await;
        let response = String::from_utf8(read_until_closed(&mut socket).await).unwrap();
        if let Some(status) = response.get(9..12) {
            let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
            return (status.parse().unwrap(), body.unwrap_or_default());
        }
        assert!(
            std::time::Instant::now() < give_up,
            "{path} was never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Stores a gateway command's dispatch and reply while the HTTP port is flooded: the
/// capture goes on whatever its HTTP clients do.
async fn stores_while_flooded(capture: &Capture) {
    let telemetry = capture.telemetry();
    let stored = || {
        telemetry
            .artifacts
            .get_or_create(&Telemetry::node("pbx-a"))
            .get()
    };
    let before = stored();
    capture
        .gateway()
        .dispatch(None, GatewayCommand::Api("status".into()))
        .await
        .unwrap();
    wait_until("the command's records to be stored", || stored() > before).await;
}

/// Waits for the capture to be ready, through its telemetry.
async fn wait_ready(capture: &Capture) {
    let telemetry = capture.telemetry();
    wait_until("ready", || {
        telemetry
            .health()
            .get("pbx-a")
            .is_some_and(|h| h.connection == "ready")
    })
    .await;
}

fn serving_script() -> Script {
    Script {
        password: "ClueCon",
        events: vec![],
        end: End::Serve,
    }
}

/// Hostile review: a connection beyond the cap was kept (1100 idle ones ran the capture
/// out of descriptors). It is closed as soon as accepted, while those holding the slots
/// stay open, and the capture stores all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connections_beyond_the_cap_are_closed_at_once() {
    let (_dir, capture, _log) = capture_of(serving_script(), "ClueCon").await;
    wait_ready(&capture).await;
    // No header timeout to speak of: only the cap can close a connection here.
    let limits = Limits {
        max_connections: 4,
        header_timeout: Duration::from_secs(3600),
        ..Limits::default()
    };
    let (http, server) = serve_http_within(&capture, HealthForm::EslReplay, limits).await;
    let held: Vec<_> = (0..4).map(|_| silent_connection(&http)).collect();
    for _ in 0..20 {
        let mut over = TcpStream::connect(&http).await.unwrap();
        assert!(read_until_closed(&mut over).await.is_empty());
    }
    assert!(held.iter().all(still_open));
    stores_while_flooded(&capture).await;
    drop(held);
    assert_eq!(get_when_served(&http, "/metrics").await.0, 200);
    server.abort();
    capture.shutdown().await.unwrap();
}

/// Hostile review: idle, half-sent and drip-fed header blocks were kept open for good, each
/// buffering up to ~400 KB. The header timeout closes them all, kept-alive ones too, a
/// header block over the bound is refused (431), and `/health` answers from a fresh
/// connection once the connections holding every slot have timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_oversized_http_headers_are_cut_off() {
    let (_dir, capture, _log) = capture_of(serving_script(), "ClueCon").await;
    wait_ready(&capture).await;
    let limits = Limits {
        max_connections: 4,
        header_timeout: Duration::from_millis(500),
        ..Limits::default()
    };
    let (http, server) = serve_http_within(&capture, HealthForm::EslReplay, limits).await;

    let mut oversized = TcpStream::connect(&http).await.unwrap();
    let mut header = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: ".to_vec();
    header.resize(
        header.len() + 2 * esl_replay::http_server::DEFAULT_MAX_HEADER_BYTES,
        b'a',
    );
    // The server may stop reading once the bound is reached.
    let _ = oversized.write_all(&header).await;
    let answer = String::from_utf8(read_until_closed(&mut oversized).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let mut idle = TcpStream::connect(&http).await.unwrap();
    let mut partial = TcpStream::connect(&http).await.unwrap();
    partial
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (mut drip_read, mut drip_write) = TcpStream::connect(&http).await.unwrap().into_split();
    // A header line every 100 ms, until the server has closed the connection.
    let dripping = tokio::spawn(async move {
        let _ = drip_write.write_all(b"GET /health HTTP/1.1\r\n").await;
        while drip_write.write_all(b"X-a: b\r\n").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut kept_alive = TcpStream::connect(&http).await.unwrap();
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    stores_while_flooded(&capture).await;

    // Each ends unanswered (the kept-alive one after its one answer).
    for stream in [&mut idle, &mut partial] {
        assert!(read_until_closed(stream).await.is_empty());
    }
    let mut dripped = Vec::new();
    let _ = tokio::time::timeout(support::PATIENCE, drip_read.read_to_end(&mut dripped)).await;
    tokio::time::timeout(support::PATIENCE, dripping)
        .await
        .expect("the drip to be cut off")
        .unwrap();
    let answered = String::from_utf8(read_until_closed(&mut kept_alive).await).unwrap();
    assert_eq!(answered.matches("HTTP/1.1 200").count(), 1, "{answered}");
    assert_eq!(get_when_served(&http, "/health").await.0, 200);
    server.abort();
    capture.shutdown().await.unwrap();
}

/// Hostile review: without a credential `/v1/api` answered 415, 422 or 413, having read and
/// parsed the body first. The credential is checked first (401), and what reading the body
/// refuses is answered in JSON too.
#[tokio::test]
async fn the_gateway_checks_the_credential_before_it_reads_the_body() {
    let (_dir, capture, _log) = capture_of(serving_script(), "ClueCon").await;
    let (http, server) = serve_http(&capture).await;
    let post = |path: &str, credential: &str, content_type: &str, body: &str| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{credential}Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for path in ["/v1/api", "/v1/bgapi"] {
        for (content_type, body) in [
            ("text/plain", "status"),
            ("application/json", "{"),
            ("application/json", r#"{"cmd": 1}"#),
        ] {
            let (status, answer) = http_request(&http, post(path, "", content_type, body)).await;
            assert_eq!(status, 401, "{path} {body}: {answer}");
            let answer: Value = serde_json::from_str(&answer).unwrap();
            assert!(answer["error"].is_string(), "{answer}");
            let credential = "Authorization: Bearer t0ken\r\n";
            let (status, answer) =
                http_request(&http, post(path, credential, content_type, body)).await;
            assert!([400, 415, 422].contains(&status), "{path} {body}: {status}");
            let answer: Value = serde_json::from_str(&answer).unwrap();
            assert!(answer["error"].is_string(), "{answer}");
        }
    }
    server.abort();
    capture.shutdown().await.unwrap();
}

/// Hostile review: the REST routes read their body before the credential, so a caller
/// without one could hold a connection by announcing a body it never sends. Every gateway
/// route answers 401 at once (the body timeout here is an hour: waiting would be seen).
#[tokio::test]
async fn every_gateway_route_refuses_a_missing_credential_without_waiting_for_the_body() {
    let (_dir, capture, _log) = capture_of(serving_script(), "ClueCon").await;
    let limits = Limits {
        body_timeout: Duration::from_secs(3600),
        ..Limits::default()
    };
    let (http, server) = serve_http_within(&capture, HealthForm::EslReplay, limits).await;
    let call = "2b7e1a4c-9d3f-4e2a-8b1c-5f6e7d8c9b0a";
    for (method, path) in [
        ("POST", "/v1/api".to_owned()),
        ("POST", "/v1/bgapi".to_owned()),
        ("POST", "/api/v1/fs/originate".to_owned()),
        ("POST", format!("/api/v1/fs/hangup/{call}")),
        ("POST", format!("/api/v1/fs/play/{call}")),
        ("POST", format!("/api/v1/fs/transfer/{call}")),
        ("GET", format!("/api/v1/fs/jobs/{call}")),
        ("GET", "/api/v1/fs/channels".to_owned()),
    ] {
        let mut socket = TcpStream::connect(&http).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        );
        socket.write_all(head.as_bytes()).await.unwrap();
        let answer = String::from_utf8(read_until_closed(&mut socket).await).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "{method} {path}: {answer}"
        );
    }
    server.abort();
    capture.shutdown().await.unwrap();
}

/// Hostile review: a body announced but never sent, and a response never read, each held
/// a connection slot for good. A late body is answered 400 naming the timeout, and a
/// connection whose responses go unread is closed, which frees the only slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_body_and_an_unread_response_give_up_their_connection() {
    let (_dir, capture, _log) = capture_of(serving_script(), "ClueCon").await;
    wait_ready(&capture).await;
    let limits = Limits {
        max_connections: 1,
        body_timeout: Duration::from_millis(300),
        send_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let (http, server) = serve_http_within(&capture, HealthForm::EslReplay, limits).await;

    let mut late = TcpStream::connect(&http).await.unwrap();
    late.write_all(
        b"POST /v1/api HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"command\"",
    )
    .await
    .unwrap();
    let answer = String::from_utf8(read_until_closed(&mut late).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("did not arrive within"), "{answer}");

    // Pipelined requests whose answers far outgrow the sockets' buffers, never read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let unread = socket.connect(http.parse().unwrap()).await.unwrap();
    let (_unread_half, mut requests) = unread.into_split();
    let sending = tokio::spawn(async move {
        let request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        for _ in 0..5000 {
            if requests.write_all(request).await.is_err() {
                return;
            }
        }
    });
    // The only slot comes free once the server gives up on the unread connection.
    assert_eq!(get_when_served(&http, "/health").await.0, 200);
    sending.abort();
    server.abort();
    capture.shutdown().await.unwrap();
}

/// `/health` on a fresh connection, polled until `predicate` holds.
async fn health_when(http: &str, predicate: impl Fn(&Value) -> bool) -> Value {
    let give_up = std::time::Instant::now() + support::PATIENCE;
    loop {
        let (_, body) = get_when_served(http, "/health").await;
        let health: Value = serde_json::from_str(&body).unwrap();
        if predicate(&health) {
            return health;
        }
        assert!(std::time::Instant::now() < give_up, "{health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether one of `/health`'s reasons mentions `what`.
fn has_reason(health: &Value, what: &str) -> bool {
    health["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r.as_str().unwrap().contains(what))
}

/// Hostile review: with the store's file system frozen, `/health` said ok while thousands
/// of items were dropped. A drop makes it degraded at once, an append that has not
/// returned for `WRITER_STALL_AFTER` too, each with its reason; the stall clears once the
/// append returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_the_store_blocks_and_items_are_dropped() {
    let (address, _log) = fake_freeswitch(vec![serving_script()]).await;
    let dir = tempfile::tempdir().unwrap();
    // Appends wait while the test holds the gate's write lock.
    let gate = Arc::new(tokio::sync::RwLock::new(()));
    let waits = Arc::clone(&gate);
    let store = RefusingStore::new(open_store(dir.path().join("s")).unwrap(), move || {
        drop(waits.blocking_read());
        false
    });
    let event = frames(&fixture("12-event-plain-heartbeat.esl")).remove(0);
    let options = CaptureOptions {
        queue_bytes: 20 * (512 + event.held_bytes()),
        ..CaptureOptions::default()
    };
    let capture = Capture::start(
        vec![node(&address, "ClueCon", Subscriptions::all())],
        Box::new(store),
        options,
    )
    .unwrap();
    let (http, server) = serve_http(&capture).await;
    health_when(&http, |h| h["status"] == "ok").await;

    let frozen = gate.write().await;
    let queue = capture.queue();
    let item = || Captured::Frame {
        frame: event.clone(),
        inbound: Inbound::Event {
            event_name: Some("HEARTBEAT".into()),
            completes: None,
        },
    };
    // Appends wait at the gate, so the queue fills up until one is dropped.
    while !matches!(
        queue.push(0, 1, OffsetDateTime::now_utc(), item()),
        Pushed::Dropped(_)
    ) {}
    let dropped = health_when(&http, |h| h["status"] != "ok").await;
    assert_eq!(dropped["status"], "degraded", "{dropped}");
    assert!(has_reason(&dropped, "dropped"), "{dropped}");
    let stalled = health_when(&http, |h| has_reason(h, "has not returned")).await;
    assert_eq!(stalled["status"], "degraded", "{stalled}");

    drop(frozen);
    let going = health_when(&http, |h| !has_reason(h, "has not returned")).await;
    assert!(has_reason(&going, "dropped"), "{going}");
    server.abort();
    capture.shutdown().await.unwrap();
}
