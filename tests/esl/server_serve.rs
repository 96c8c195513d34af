//! `serve`: a store's `event.raw` records streamed to ESL clients byte for byte, api and
//! bgapi answered from recorded replies, pacing by original times with a speed factor,
//! looping, and resuming from a serving checkpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use esl_replay::checkpoint::{CheckpointService, CheckpointStore};
use esl_replay::record::Envelope;
use esl_replay::server::{self, ReplayOptions, RunningServer, ServerConfig, StoreReplay};
use esl_replay::store;

use crate::support::server::{
    Client, DISCONNECT_BODY, captured_at, dispatch_envelope, event_envelope, event_name,
    fixture_bytes, fixture_frame, fixture_frames, header, reply_envelope, write_store,
};

const PLAIN_FIXTURES: [&str; 6] = [
    "09-event-plain-channel-create.esl",
    "10-event-plain-channel-answer.esl",
    "13-event-plain-dtmf.esl",
    "14-event-plain-custom-sofia-register.esl",
    "12-event-plain-heartbeat.esl",
    "11-event-plain-channel-hangup-complete.esl",
];

async fn serve(dir: &std::path::Path, options: ReplayOptions) -> RunningServer {
    let store = store::open_read_only(dir, None).unwrap();
    let replay = StoreReplay::load(store, options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    server::spawn(listener, ServerConfig::default(), Arc::new(replay)).unwrap()
}

/// Serves the plain fixture events as fast as possible (keep the directory alive).
async fn serve_plain_fixtures() -> (tempfile::TempDir, RunningServer) {
    let dir = tempfile::tempdir().unwrap();
    let envelopes = PLAIN_FIXTURES
        .iter()
        .enumerate()
        .map(|(i, f)| event_envelope(&fixture_frame(f), captured_at(i as i64)))
        .collect();
    write_store(dir.path(), envelopes);
    let server = serve(dir.path(), fast()).await;
    (dir, server)
}

fn fast() -> ReplayOptions {
    ReplayOptions::default()
}

#[tokio::test]
async fn stored_events_are_served_byte_for_byte_in_their_captured_format() {
    let (_dir, server) = serve_plain_fixtures().await;
    let mut c = Client::authenticated(server.local_addr(), "ClueCon").await;
    assert_eq!(
        c.command("event plain ALL").await,
        "+OK event listener enabled plain"
    );
    let (events, notice) = c.events_until_notice().await;
    assert_eq!(&notice.body()[..], DISCONNECT_BODY);
    c.expect_closed().await;
    assert_eq!(events.len(), PLAIN_FIXTURES.len());
    for (event, fixture) in events.iter().zip(PLAIN_FIXTURES) {
        assert_eq!(
            event.to_bytes().to_vec(),
            fixture_bytes(fixture),
            "{fixture}"
        );
    }
}

#[tokio::test]
async fn json_captures_are_exact_in_json_and_converted_for_plain_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let json = [
        "12b-event-json-heartbeat.esl",
        "16-event-json-background-job.esl",
        "23b-event-json-array-header.esl",
    ];
    let envelopes = json
        .iter()
        .enumerate()
        .map(|(i, f)| event_envelope(&fixture_frame(f), captured_at(i as i64)))
        .collect();
    write_store(dir.path(), envelopes);
    let server = serve(dir.path(), fast()).await;

    let mut j = Client::authenticated(server.local_addr(), "ClueCon").await;
    j.command("event json ALL").await;
    let (events, _) = j.events_until_notice().await;
    for (event, fixture) in events.iter().zip(json) {
        assert_eq!(
            event.to_bytes().to_vec(),
            fixture_bytes(fixture),
            "{fixture}"
        );
    }

    // The same events for a plain listener: what FreeSWITCH would have sent in plain.
    let mut p = Client::authenticated(server.local_addr(), "ClueCon").await;
    p.command("event plain ALL").await;
    let (events, _) = p.events_until_notice().await;
    assert_eq!(events.len(), 3);
    let heartbeat = &events[0];
    assert_eq!(heartbeat.content_type(), Some("text/event-plain"));
    assert_eq!(
        heartbeat.body(),
        fixture_frame("12-event-plain-heartbeat.esl").body(),
        "the JSON heartbeat converts to the plain fixture exactly"
    );
    let job = esl_replay::esl::event::PlainEvent::parse(events[1].body()).unwrap();
    assert_eq!(job.body(), b"+OK b7e2a1c4-3d5f-4e6a-8b9c-0d1e2f3a4b5c\n");
    let array = esl_replay::esl::event::PlainEvent::parse(events[2].body()).unwrap();
    assert_eq!(
        array.header("variable_sip_multipart").unwrap(),
        b"ARRAY::application/sdp:v=0|:application/pidf+xml:<presence/>"
    );
}

#[tokio::test]
async fn subscriptions_and_filters_apply_to_stored_events() {
    let (_dir, server) = serve_plain_fixtures().await;
    let mut c = Client::authenticated(server.local_addr(), "ClueCon").await;
    // Filters first: the stream starts with the first subscription.
    c.command("filter Unique-ID 4f1c2d9a-6b3e-4a7f-9c2d-1e8b7a6f5c30")
        .await;
    c.command("event plain CHANNEL_CREATE CHANNEL_ANSWER DTMF HEARTBEAT")
        .await;
    let (events, _) = c.events_until_notice().await;
    let names: Vec<String> = events.iter().map(event_name).collect();
    assert_eq!(
        names,
        ["CHANNEL_CREATE", "CHANNEL_ANSWER", "DTMF"],
        "HEARTBEAT has no Unique-ID"
    );
}

#[tokio::test]
async fn api_and_bgapi_are_answered_from_recorded_replies() {
    let dir = tempfile::tempdir().unwrap();
    let version = fixture_frame("06-api-response-version.esl");
    let ack = fixture_frame("07-command-reply-bgapi-accepted.esl");
    let job = fixture_frame("08-event-plain-background-job.esl");
    let command = "originate {origination_uuid=b7e2a1c4-3d5f-4e6a-8b9c-0d1e2f3a4b5c,origination_caller_id_number=3000}sofia/internal/1002@192.0.2.10 &park()";
    write_store(
        dir.path(),
        vec![
            dispatch_envelope("api.dispatch", "api version", captured_at(0)),
            reply_envelope("api.reply", &version, captured_at(1)),
            dispatch_envelope(
                "bgapi.dispatch",
                &format!("bgapi {command}"),
                captured_at(2),
            ),
            reply_envelope("command.reply", &ack, captured_at(3)),
            reply_envelope("bgapi.ack", &ack, captured_at(3)),
            event_envelope(&job, captured_at(4)),
            // An hour later: keeps the paced stream (and the connection) open meanwhile.
            timed_event(
                "HEARTBEAT",
                2,
                header(&job, "Event-Date-Timestamp")
                    .unwrap()
                    .parse::<i64>()
                    .unwrap()
                    + 3_600_000_000,
            ),
        ],
    );
    let store = store::open_read_only(dir.path(), None).unwrap();
    let paced = ReplayOptions {
        speed: Some(1.0),
        ..ReplayOptions::default()
    };
    let replay = StoreReplay::load(store, paced).unwrap();
    let summary = replay.summary();
    assert_eq!((summary.api_commands, summary.bgapi_commands), (1, 1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = server::spawn(listener, ServerConfig::default(), Arc::new(replay)).unwrap();
    let mut c = Client::authenticated(server.local_addr(), "ClueCon").await;

    let reply = c.api("api version").await;
    assert_eq!(
        reply.to_bytes().to_vec(),
        fixture_bytes("06-api-response-version.esl")
    );
    // Not recorded, but a core command: answered from the served switch.
    let reply = c.api("api status").await;
    assert!(reply.body().starts_with(b"UP 0 years, "), "{reply:?}");
    let reply = c.api("api no_such_command").await;
    assert_eq!(
        &reply.body()[..],
        b"-ERR no_such_command Command not found!\n"
    );

    c.command("filter Event-Name BACKGROUND_JOB").await;
    c.command("event plain ALL").await;
    let (stream, _) = {
        // The recorded BACKGROUND_JOB is also part of the stream; read it first.
        let first = c.frame().await.unwrap();
        (first, ())
    };
    assert_eq!(
        stream.to_bytes().to_vec(),
        fixture_bytes("08-event-plain-background-job.esl")
    );
    let new_job = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    c.send(&format!("bgapi {command}\nJob-UUID: {new_job}"))
        .await;
    let ack = c.reply_frame().await;
    assert_eq!(
        ack.header("Reply-Text"),
        Some(format!("+OK Job-UUID: {new_job}").as_str())
    );
    let event = c.frame().await.unwrap();
    assert_eq!(header(&event, "Job-UUID").unwrap(), new_job);
    assert_eq!(header(&event, "Job-Command").unwrap(), "originate");
    let parsed = esl_replay::esl::event::PlainEvent::parse(event.body()).unwrap();
    assert_eq!(parsed.body(), b"+OK b7e2a1c4-3d5f-4e6a-8b9c-0d1e2f3a4b5c\n");

    c.send("bgapi show channels").await;
    let ack = c.reply_frame().await;
    let made = ack.header("Job-UUID").unwrap().to_owned();
    let event = c.frame().await.unwrap();
    assert_eq!(header(&event, "Job-UUID").unwrap(), made);
    let parsed = esl_replay::esl::event::PlainEvent::parse(event.body()).unwrap();
    assert_eq!(parsed.body(), b"\n0 total.\n", "a core command, as a job");

    c.send("bgapi frobnicate now").await;
    c.reply_frame().await;
    let event = c.frame().await.unwrap();
    let parsed = esl_replay::esl::event::PlainEvent::parse(event.body()).unwrap();
    assert_eq!(parsed.body(), b"-ERR frobnicate Command not found!\n");
}

/// Issue 15 item 2: after `event plain ALL` then `nixevent CHANNEL_STATE CODEC`,
/// FreeSWITCH stops CUSTOM events whose subclass was never named (fixture
/// inbound-commands); other events keep coming.
#[tokio::test]
async fn nixevent_after_all_stops_custom_subclasses_not_named() {
    let (_dir, server) = serve_plain_fixtures().await;
    let mut c = Client::authenticated(server.local_addr(), "ClueCon").await;
    c.command("filter Event-Name /^(CUSTOM|HEARTBEAT|DTMF)$/")
        .await;
    // One write: both commands are handled before the first event is sent.
    c.send("event plain ALL\n\nnixevent CHANNEL_STATE CODEC")
        .await;
    let replies = [c.reply_frame().await, c.reply_frame().await];
    assert_eq!(
        replies.map(|r| r.header("Reply-Text").unwrap_or_default().to_owned()),
        ["+OK event listener enabled plain", "+OK events nixed"]
    );
    let (events, _) = c.events_until_notice().await;
    let names: Vec<String> = events.iter().map(event_name).collect();
    assert_eq!(names, ["DTMF", "HEARTBEAT"], "no CUSTOM sofia::register");
}

/// A plain event named `name` with the given `Event-Date-Timestamp`.
fn timed_event(name: &str, sequence: u64, timestamp_us: i64) -> Envelope {
    let body = format!(
        "Event-Name: {name}\nEvent-Date-Timestamp: {timestamp_us}\nEvent-Sequence: {sequence}\n\n"
    );
    let wire = format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
        body.len()
    );
    let mut codec = esl_replay::esl::EslCodec::new();
    let mut buf = bytes::BytesMut::from(wire.as_bytes());
    let frame = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
        .unwrap()
        .unwrap();
    event_envelope(&frame, captured_at(0))
}

fn sequences(events: &[esl_replay::esl::Frame]) -> Vec<u64> {
    events
        .iter()
        .map(|e| header(e, "Event-Sequence").unwrap().parse().unwrap())
        .collect()
}

#[tokio::test]
async fn pacing_follows_original_times_scaled_and_never_reorders() {
    let dir = tempfile::tempdir().unwrap();
    // 2 s of original time; the third event's clock went backwards (delivery order wins).
    let base = 1_767_261_600_000_000;
    write_store(
        dir.path(),
        vec![
            timed_event("HEARTBEAT", 1, base),
            timed_event("HEARTBEAT", 2, base + 1_000_000),
            timed_event("HEARTBEAT", 3, base + 500_000),
            timed_event("HEARTBEAT", 4, base + 2_000_000),
        ],
    );
    let options = ReplayOptions {
        speed: Some(8.0),
        ..ReplayOptions::default()
    };
    let server = serve(dir.path(), options).await;
    let mut c = Client::authenticated(server.local_addr(), "ClueCon").await;
    let started = Instant::now();
    c.command("event plain ALL").await;
    let (events, _) = c.events_until_notice().await;
    let elapsed = started.elapsed();
    assert_eq!(sequences(&events), [1, 2, 3, 4]);
    // 2 s at 8x is 250 ms; only a lower bound, so a slow machine cannot fail it.
    assert!(
        elapsed >= Duration::from_millis(240),
        "paced, took {elapsed:?}"
    );
}

#[tokio::test]
async fn looping_starts_over_and_from_sequence_skips_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let base = 1_767_261_600_000_000;
    write_store(
        dir.path(),
        (1..=3)
            .map(|n| timed_event("HEARTBEAT", n, base + n as i64))
            .collect(),
    );
    let options = ReplayOptions {
        looping: true,
        from_sequence: 2,
        ..ReplayOptions::default()
    };
    let server = serve(dir.path(), options).await;
    let mut c = Client::authenticated(server.local_addr(), "ClueCon").await;
    c.command("event plain ALL").await;
    let mut seen = Vec::new();
    for _ in 0..7 {
        seen.push(header(&c.frame().await.unwrap(), "Event-Sequence").unwrap());
    }
    assert_eq!(seen, ["2", "3", "2", "3", "2", "3", "2"]);
}

/// The serving checkpoint the tests save under, in `dir`.
fn serving_checkpoint(dir: &std::path::Path) -> CheckpointService {
    CheckpointService::new(CheckpointStore::open(dir).unwrap(), "serve-test").unwrap()
}

/// Review item: a serving checkpoint whose position is not an integer was read as PHP
/// casts it (`"garbage"` is 0), so the next client got the whole stream again. Such a file
/// is refused: the client is told goodbye before any event.
#[tokio::test]
async fn a_serving_checkpoint_that_does_not_say_where_to_resume_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_store(
        dir.path(),
        (1..=3)
            .map(|n| timed_event("HEARTBEAT", n, 1_767_261_600_000_000 + n as i64))
            .collect(),
    );
    let checkpoints = tempfile::tempdir().unwrap();
    serving_checkpoint(checkpoints.path())
        .save(
            esl_replay::record::ReadCursor::new(2, None),
            Default::default(),
        )
        .unwrap();
    let file = std::fs::read_dir(checkpoints.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.to_string_lossy().ends_with(".json"))
        .expect("the checkpoint file");
    let text = std::fs::read_to_string(&file).unwrap();
    let garbled = text.replace(
        r#""last_consumed_sequence": 2"#,
        r#""last_consumed_sequence": "garbage""#,
    );
    assert_ne!(garbled, text, "{text}");
    std::fs::write(&file, garbled).unwrap();
    let options = ReplayOptions {
        checkpoint: Some(serving_checkpoint(checkpoints.path())),
        ..fast()
    };
    let server = serve(dir.path(), options).await;
    let mut client = Client::authenticated(server.local_addr(), "ClueCon").await;
    client.command("event plain ALL").await;
    let (events, _) = client.events_until_notice().await;
    assert!(events.is_empty(), "{} events served", events.len());
}

#[tokio::test]
async fn serving_resumes_after_the_checkpoint_of_an_earlier_client() {
    let dir = tempfile::tempdir().unwrap();
    let base = 1_767_261_600_000_000;
    write_store(
        dir.path(),
        (1..=6)
            .map(|n| timed_event("HEARTBEAT", n, base + n as i64 * 1_000_000))
            .collect(),
    );
    let checkpoints = tempfile::tempdir().unwrap();
    let service = || serving_checkpoint(checkpoints.path());
    // Metadata a retention query finds this consumer by, which saves keep.
    let mut held = esl_replay::record::JsonMap::new();
    held.insert("recovery_generation_id".into(), "g1".into());
    service()
        .save(esl_replay::record::ReadCursor::new(0, None), held)
        .unwrap();
    // One event every 100 ms: the first client reads two and leaves.
    let options = ReplayOptions {
        speed: Some(10.0),
        checkpoint: Some(service()),
        ..ReplayOptions::default()
    };
    let server = serve(dir.path(), options).await;
    let mut first = Client::authenticated(server.local_addr(), "ClueCon").await;
    first.command("event plain ALL").await;
    assert_eq!(
        header(&first.frame().await.unwrap(), "Event-Sequence").unwrap(),
        "1"
    );
    assert_eq!(
        header(&first.frame().await.unwrap(), "Event-Sequence").unwrap(),
        "2"
    );
    drop(first);
    // The feed saves its progress when the connection goes away.
    let mut saved = None;
    for _ in 0..100 {
        saved = service()
            .load()
            .unwrap()
            .filter(|c| c.cursor().last_consumed_sequence() > 0);
        if saved.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let consumed = saved
        .expect("checkpoint saved")
        .cursor()
        .last_consumed_sequence();
    assert!((2..=3).contains(&consumed), "consumed {consumed}");

    let mut second = Client::authenticated(server.local_addr(), "ClueCon").await;
    second.command("event plain ALL").await;
    let (events, _) = second.events_until_notice().await;
    let expected: Vec<u64> = (consumed + 1..=6).collect();
    assert_eq!(sequences(&events), expected);
    let done = service().load().unwrap().unwrap();
    assert_eq!(done.cursor().last_consumed_sequence(), 6);
    assert_eq!(
        done.metadata().get("recovery_generation_id"),
        Some(&"g1".into())
    );
}

/// A read-only store that remembers through which sequence its `sync_readable` last made
/// the records durable.
struct RemembersSyncs {
    store: Box<dyn store::ArtifactReader>,
    synced_through: Arc<std::sync::atomic::AtomicU64>,
}

impl store::ArtifactReader for RemembersSyncs {
    fn read_from_cursor(
        &self,
        cursor: &esl_replay::record::ReadCursor,
        limit: usize,
        criteria: &esl_replay::record::Criteria,
    ) -> store::Result<Vec<esl_replay::record::Record>> {
        self.store.read_from_cursor(cursor, limit, criteria)
    }

    fn read_by_id(
        &self,
        id: &esl_replay::record::RecordId,
    ) -> store::Result<Option<esl_replay::record::Record>> {
        self.store.read_by_id(id)
    }

    fn stats(&self) -> store::Result<store::StoreStats> {
        self.store.stats()
    }

    fn wait_for_records(&self, after: u64, timeout: Duration) -> store::Result<bool> {
        self.store.wait_for_records(after, timeout)
    }

    fn sync_readable(&self) -> store::Result<u64> {
        let through = self.store.sync_readable()?;
        self.synced_through
            .store(through, std::sync::atomic::Ordering::SeqCst);
        Ok(through)
    }
}

/// A serving checkpoint says records were consumed, so it is saved only once they are
/// durable: here their writer never syncs (`OsOnly`) and stays open while they are served.
#[tokio::test]
async fn a_serving_checkpoint_is_saved_only_after_its_records_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let writer = crate::support::process::unsynced_store(
        dir.path(),
        (1..=4).map(|n| timed_event("HEARTBEAT", n, 0)).collect(),
    );
    let synced_through = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let store = RemembersSyncs {
        store: store::open_read_only(dir.path(), None).unwrap(),
        synced_through: Arc::clone(&synced_through),
    };
    let checkpoints = tempfile::tempdir().unwrap();
    let service = || serving_checkpoint(checkpoints.path());
    let options = ReplayOptions {
        checkpoint: Some(service()),
        ..ReplayOptions::default()
    };
    let replay = StoreReplay::load(Box::new(store), options).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = server::spawn(listener, ServerConfig::default(), Arc::new(replay)).unwrap();
    let mut client = Client::authenticated(server.local_addr(), "ClueCon").await;
    client.command("event plain ALL").await;
    let (events, _) = client.events_until_notice().await;
    assert_eq!(sequences(&events), [1, 2, 3, 4]);
    let saved = service().load().unwrap().expect("checkpoint saved");
    assert_eq!(saved.cursor().last_consumed_sequence(), 4);
    assert_eq!(
        synced_through.load(std::sync::atomic::Ordering::SeqCst),
        4,
        "the checkpoint was saved before its records were synced"
    );
    drop(writer);
}

#[tokio::test]
async fn records_without_a_raw_payload_are_counted_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut envelopes: Vec<Envelope> = (0..4).map(esl_replay::store::dataset::envelope).collect();
    envelopes.push(event_envelope(
        &fixture_frame("12-event-plain-heartbeat.esl"),
        captured_at(9),
    ));
    envelopes
        .iter_mut()
        .for_each(|e| e.artifact_name = "event.raw".into());
    write_store(dir.path(), envelopes);
    let store = store::open_read_only(dir.path(), None).unwrap();
    let replay = StoreReplay::load(store, fast()).unwrap();
    assert_eq!(replay.summary().events, 1);
    assert_eq!(replay.summary().events_without_payload, 4);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = server::spawn(listener, ServerConfig::default(), Arc::new(replay)).unwrap();
    let mut c = Client::authenticated(server.local_addr(), "ClueCon").await;
    c.command("event plain ALL").await;
    let (events, _) = c.events_until_notice().await;
    assert_eq!(events.len(), 1);
    assert_eq!(fixture_frames("12-event-plain-heartbeat.esl")[0], events[0]);
}

#[tokio::test]
async fn a_full_page_of_records_without_payload_does_not_end_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let mut envelopes: Vec<Envelope> = (0..600).map(esl_replay::store::dataset::envelope).collect();
    envelopes
        .iter_mut()
        .for_each(|e| e.artifact_name = "event.raw".into());
    envelopes.push(event_envelope(
        &fixture_frame("12-event-plain-heartbeat.esl"),
        captured_at(0),
    ));
    write_store(dir.path(), envelopes);
    let server = serve(dir.path(), fast()).await;
    let mut c = Client::authenticated(server.local_addr(), "ClueCon").await;
    c.command("event plain ALL").await;
    let (events, _) = c.events_until_notice().await;
    assert_eq!(
        events.len(),
        1,
        "the event after 600 payload-less records arrives"
    );
}

/// A plain event frame of about `padding` bytes more than a bare one.
fn padded_event(sequence: u64, padding: usize) -> Envelope {
    let body = format!(
        "Event-Name: HEARTBEAT\nEvent-Sequence: {sequence}\nPadding: {}\n\n",
        "x".repeat(padding)
    );
    let wire = format!(
        "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
        body.len()
    );
    let mut codec = esl_replay::esl::EslCodec::new();
    let mut buf = bytes::BytesMut::from(wire.as_bytes());
    let frame = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)
        .unwrap()
        .unwrap();
    event_envelope(&frame, captured_at(0))
}

/// Review item: the serving checkpoint moved past events the client never received (it
/// covered every event rendered for the socket, even a batch whose write then failed). A
/// client with a tiny receive buffer reads one event of a 12 MiB store, more than the
/// socket buffers hold, and resets: the checkpoint covers at most the events whose bytes
/// the server wrote whole, and the next client receives every event after it.
#[tokio::test]
async fn a_client_that_resets_mid_stream_leaves_the_checkpoint_at_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let count = 384;
    let envelopes: Vec<Envelope> = (1..=count).map(|n| padded_event(n, 32 * 1024)).collect();
    let frame_bytes: Vec<u64> = envelopes
        .iter()
        .map(|e| {
            let body = e.payload["raw_payload"].as_str().unwrap().len();
            format!("Content-Length: {body}\nContent-Type: text/event-plain\n\n").len() as u64
                + body as u64
        })
        .collect();
    write_store(dir.path(), envelopes);
    let checkpoints = tempfile::tempdir().unwrap();
    let service = || serving_checkpoint(checkpoints.path());
    let options = ReplayOptions {
        checkpoint: Some(service()),
        ..ReplayOptions::default()
    };
    let server = serve(dir.path(), options).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(server.local_addr()).await.unwrap();
    let mut first = Client::from_stream(stream);
    assert_eq!(
        first.frame().await.unwrap().content_type(),
        Some("auth/request")
    );
    assert_eq!(first.command("auth ClueCon").await, "+OK accepted");
    first.command("event plain ALL").await;
    let event = first.frame().await.unwrap();
    assert_eq!(header(&event, "Event-Sequence").as_deref(), Some("1"));
    first.reset();

    // The feed saves what was delivered when the connection ends.
    let give_up = Instant::now() + crate::support::PATIENCE;
    while server.figures().connections_open > 0 {
        assert!(Instant::now() < give_up, "the connection never ended");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let consumed = service()
        .load()
        .unwrap()
        .map_or(0, |c| c.cursor().last_consumed_sequence());
    let replies = [
        "Content-Type: auth/request\n\n".len(),
        "Content-Type: command/reply\nReply-Text: +OK accepted\n\n".len(),
        "Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n".len(),
    ];
    let mut events_bytes = server
        .figures()
        .bytes_written
        .saturating_sub(replies.iter().sum::<usize>() as u64);
    let written_whole = frame_bytes
        .iter()
        .take_while(|&&size| {
            let whole = events_bytes >= size;
            events_bytes = events_bytes.saturating_sub(size);
            whole
        })
        .count() as u64;
    assert!(
        consumed <= written_whole,
        "the checkpoint covers {consumed} events, the server wrote {written_whole} whole"
    );
    assert!(
        written_whole < count,
        "the store must outgrow the socket buffers"
    );

    let mut second = Client::authenticated(server.local_addr(), "ClueCon").await;
    second.command("event plain ALL").await;
    let (events, _) = second.events_until_notice().await;
    let expected: Vec<u64> = (consumed + 1..=count).collect();
    assert_eq!(sequences(&events), expected);
}

/// FreeSWITCH answers `myevents <uuid> <format>` with `-ERR invalid uuid` when no session
/// has that UUID (esl-protocol.md §1.5). A served store knows its sessions: the channels
/// its events name. Without a format FreeSWITCH binds anyway, and so does serve.
#[tokio::test]
async fn myevents_with_a_format_refuses_a_uuid_no_stored_event_names() {
    let (_dir, server) = serve_plain_fixtures().await;
    let mut c = Client::authenticated(server.local_addr(), "ClueCon").await;
    assert_eq!(
        c.command("myevents 00000000-0000-4000-8000-000000000000 json")
            .await,
        "-ERR invalid uuid"
    );
    assert_eq!(
        c.command("myevents 4f1c2d9a-6b3e-4a7f-9c2d-1e8b7a6f5c30 json")
            .await,
        "+OK Events Enabled"
    );
    let (events, _) = c.events_until_notice().await;
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| e.content_type() == Some("text/event-json")
                && header(e, "Unique-ID").as_deref()
                    == Some("4f1c2d9a-6b3e-4a7f-9c2d-1e8b7a6f5c30"))
    );
    let mut unbound = Client::authenticated(server.local_addr(), "ClueCon").await;
    assert_eq!(
        unbound
            .command("myevents 00000000-0000-4000-8000-000000000000")
            .await,
        "+OK Events Enabled"
    );
}
