//! A scripted ESL client for the server tests, built on the crate's own frame codec.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use esl_replay::esl::{EslCodec, Frame};
use esl_replay::record::{Envelope, JsonMap};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder as _;

/// An address on 127.0.0.1 that refuses every connection for as long as the returned
/// socket lives: the port is bound but never listened on, so no other test can claim it
/// the way it could a port that was merely free a moment ago.
pub(crate) fn refusing_address() -> (tokio::net::TcpSocket, SocketAddr) {
    let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind a port on 127.0.0.1");
    let address = socket.local_addr().expect("the bound address");
    (socket, address)
}

/// How long any single expected frame may take.
pub(crate) const FRAME_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Client {
    stream: TcpStream,
    codec: EslCodec,
    buf: BytesMut,
    eof: bool,
}

impl Client {
    pub(crate) async fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Client::from_stream(stream)
    }

    /// A client on an already connected `stream` (for socket options set before connect).
    pub(crate) fn from_stream(stream: TcpStream) -> Client {
        Client {
            stream,
            codec: EslCodec::new(),
            buf: BytesMut::new(),
            eof: false,
        }
    }

    /// Connects, checks the greeting and authenticates with `password`.
    pub(crate) async fn authenticated(addr: SocketAddr, password: &str) -> Client {
        let mut client = Client::connect(addr).await;
        let greeting = client.frame().await.expect("greeting");
        assert_eq!(greeting.content_type(), Some("auth/request"));
        assert_eq!(
            client.command(&format!("auth {password}")).await,
            "+OK accepted"
        );
        client
    }

    /// Writes `bytes` as they are.
    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// Closes the connection with a reset (`SO_LINGER` 0), as a client that crashes or
    /// drops off the network abruptly.
    pub(crate) fn reset(self) {
        self.stream.set_zero_linger().expect("SO_LINGER 0");
        drop(self.stream);
    }

    pub(crate) async fn send(&mut self, command: &str) {
        let mut wire = command.as_bytes().to_vec();
        wire.extend_from_slice(b"\n\n");
        self.stream.write_all(&wire).await.expect("send");
    }

    /// The next frame, `None` at end of stream.
    pub(crate) async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).expect("valid frame") {
                return Some(frame);
            }
            if self.eof {
                return self.codec.decode_eof(&mut self.buf).expect("clean end");
            }
            let read = tokio::time::timeout(FRAME_TIMEOUT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("frame within the timeout")
                .unwrap_or(0);
            if read == 0 {
                self.eof = true;
            }
        }
    }

    /// The next frame that is not an event.
    pub(crate) async fn reply_frame(&mut self) -> Frame {
        loop {
            let frame = self.frame().await.expect("a reply before the end");
            if !is_event(&frame) {
                return frame;
            }
        }
    }

    /// Sends a command and returns its `Reply-Text` (skipping interleaved events).
    pub(crate) async fn command(&mut self, command: &str) -> String {
        self.send(command).await;
        let reply = self.reply_frame().await;
        assert_eq!(reply.content_type(), Some("command/reply"), "{reply:?}");
        reply.header("Reply-Text").unwrap_or_default().to_owned()
    }

    /// Sends `api ...` and returns the `api/response` frame.
    pub(crate) async fn api(&mut self, command: &str) -> Frame {
        self.send(command).await;
        let reply = self.reply_frame().await;
        assert_eq!(reply.content_type(), Some("api/response"), "{reply:?}");
        reply
    }

    /// Every event until the disconnect notice; returns (events, notice).
    pub(crate) async fn events_until_notice(&mut self) -> (Vec<Frame>, Frame) {
        let mut events = Vec::new();
        loop {
            let frame = self
                .frame()
                .await
                .expect("a disconnect notice before the end");
            if frame.content_type() == Some("text/disconnect-notice") {
                return (events, frame);
            }
            assert!(is_event(&frame), "unexpected frame {frame:?}");
            events.push(frame);
        }
    }

    /// Asserts the server closed the connection with nothing more to read.
    pub(crate) async fn expect_closed(&mut self) {
        assert!(self.frame().await.is_none(), "connection should be closed");
    }
}

pub(crate) fn is_event(frame: &Frame) -> bool {
    frame
        .content_type()
        .is_some_and(|t| t.starts_with("text/event-"))
}

/// The `Event-Name` of an event frame (plain or JSON).
pub(crate) fn event_name(frame: &Frame) -> String {
    header(frame, "Event-Name").unwrap_or_default()
}

/// A decoded header of an event frame (plain or JSON).
pub(crate) fn header(frame: &Frame, name: &str) -> Option<String> {
    match frame.content_type() {
        Some("text/event-json") => esl_replay::esl::event::json_event(frame.body())
            .ok()?
            .get(name)?
            .as_str()
            .map(str::to_owned),
        _ => esl_replay::esl::event::PlainEvent::parse(frame.body())
            .ok()?
            .header_str(name)
            .map(|v| v.into_owned()),
    }
}

pub(crate) const DISCONNECT_BODY: &[u8] =
    b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

/// A fixture file's frames.
pub(crate) fn fixture_frames(name: &str) -> Vec<Frame> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/esl/synthetic")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut codec = EslCodec::new();
    let mut buf = BytesMut::from(&bytes[..]);
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode_eof(&mut buf).expect("fixture decodes") {
        frames.push(frame);
    }
    frames
}

/// The one frame of a fixture file.
pub(crate) fn fixture_frame(name: &str) -> Frame {
    fixture_frames(name).remove(0)
}

/// The raw bytes of a fixture file.
pub(crate) fn fixture_bytes(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/esl/synthetic")
        .join(name);
    std::fs::read(path).unwrap()
}

fn base_envelope(artifact_name: &str, at: time::OffsetDateTime, payload: JsonMap) -> Envelope {
    Envelope::new("1", artifact_name, at)
        .with_capture_path(artifact_name)
        .with_connection_generation("1")
        .with_session_id("capture-session-1")
        .with_payload(payload)
}

/// An `event.raw` envelope as the capture side writes it for `frame` (see the contract in
/// `src/server/replay.rs`).
pub(crate) fn event_envelope(frame: &Frame, at: time::OffsetDateTime) -> Envelope {
    let name = event_name(frame);
    let mut facts = JsonMap::new();
    facts.insert(
        "content-type".into(),
        frame.content_type().unwrap_or_default().into(),
    );
    facts.insert("event-name".into(), name.clone().into());
    let mut payload = JsonMap::new();
    payload.insert("captured_type".into(), "event".into());
    payload.insert("captured_name".into(), name.clone().into());
    payload.insert(
        "raw_payload".into(),
        String::from_utf8(frame.body().to_vec())
            .expect("UTF-8 fixture")
            .into(),
    );
    payload.insert("protocol_facts".into(), facts.into());
    let headers: Vec<serde_json::Value> = frame
        .headers()
        .iter()
        .map(|(n, v)| serde_json::json!([n, v]))
        .collect();
    payload.insert("frame_headers".into(), headers.into());
    base_envelope("event.raw", at, payload).with_event_name(name)
}

/// A dispatch (`api.dispatch`, `bgapi.dispatch`) with `raw_payload` = the command text.
pub(crate) fn dispatch_envelope(
    artifact_name: &str,
    command: &str,
    at: time::OffsetDateTime,
) -> Envelope {
    let mut payload = JsonMap::new();
    payload.insert("captured_type".into(), "dispatch".into());
    payload.insert("raw_payload".into(), command.into());
    base_envelope(artifact_name, at, payload)
}

/// A reply (`api.reply`, `command.reply`) whose raw payload is the frame's header lines,
/// a blank line and the body.
pub(crate) fn reply_envelope(
    artifact_name: &str,
    frame: &Frame,
    at: time::OffsetDateTime,
) -> Envelope {
    let mut facts = JsonMap::new();
    facts.insert(
        "content-type".into(),
        frame.content_type().unwrap_or_default().into(),
    );
    if let Some(text) = frame.header("Reply-Text") {
        facts.insert("reply-text".into(), text.into());
    }
    if let Some(job) = frame.header("Job-UUID") {
        facts.insert("job-uuid".into(), job.into());
    }
    let mut payload = JsonMap::new();
    payload.insert("captured_type".into(), "reply".into());
    payload.insert(
        "raw_payload".into(),
        String::from_utf8(frame.to_bytes().to_vec()).unwrap().into(),
    );
    payload.insert("protocol_facts".into(), facts.into());
    let mut envelope = base_envelope(artifact_name, at, payload);
    envelope.job_uuid = frame.header("Job-UUID").map(str::to_owned);
    envelope
}

/// Writes `frames`' events into a new store at `path` as capture stores them, one
/// millisecond apart from `start`; returns how many were written.
pub(crate) fn write_event_store(
    frames: &[Frame],
    start: time::OffsetDateTime,
    path: &std::path::Path,
) -> usize {
    let envelopes: Vec<_> = frames
        .iter()
        .filter(|f| is_event(f))
        .enumerate()
        .map(|(i, f)| event_envelope(f, start + time::Duration::milliseconds(i as i64)))
        .collect();
    let count = envelopes.len();
    let mut store = esl_replay::store::open(path, None).unwrap();
    store.write_batch(envelopes).unwrap();
    store.sync().unwrap();
    count
}

/// `ms` milliseconds after 2026-01-01T10:00:00Z, when the stores served in the tests were
/// captured.
pub(crate) fn captured_at(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::UNIX_EPOCH
        + time::Duration::seconds(1_767_261_600)
        + time::Duration::milliseconds(ms)
}

/// Writes `envelopes` into a new store at `dir` (a log store, or SQLite for a `.sqlite`
/// path).
pub(crate) fn write_store(dir: &std::path::Path, envelopes: Vec<Envelope>) {
    let mut store = esl_replay::store::open(dir, None).unwrap();
    store.write_batch(envelopes).unwrap();
    store.sync().unwrap();
}
