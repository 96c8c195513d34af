//! `serve` and `simulate` held to what a real FreeSWITCH 1.10.12 answered.
//!
//! Each recorded conversation in `../shared/fixtures/freeswitch-1.10.12/` (the scripted
//! inbound commands, a rejected auth, a command before auth then a shutdown, and the real
//! `fs_cli`'s `-x status`, `-x show calls count` and interactive session) is replayed
//! against our server: the recorded client bytes are sent command by command and every
//! frame the switch answered is compared with ours, in order. Frames are compared byte
//! for byte, except where a field legitimately differs; those fields are masked on both
//! sides by the named rules in [`MASKS`] (each says why), and the rest of the frame is
//! still compared exactly. Event frames are not part of these conversations (they depend
//! on the served traffic and its pacing; `server_serve.rs` and `capture_recordings.rs`
//! compare events byte for byte) and are skipped on both sides.
//!
//! `serve` serves a store holding the 757 recorded plain events (so its identity, `vm`, and
//! its sessions come from them); `simulate` runs with the switch name `vm`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use esl_replay::esl::{EslCodec, Frame};
use esl_replay::server::{
    self, ReplayOptions, RunningServer, ServerConfig, Simulator, SimulatorConfig, StoreReplay,
};
use regex::Regex;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_util::codec::Decoder as _;

use crate::support;
use crate::support::fs_recordings::{Conversation, Dir};

const CONVERSATIONS: [&str; 6] = [
    "inbound-commands.jsonl",
    "auth-rejected.jsonl",
    "unauthenticated-command-then-shutdown.jsonl",
    "fs_cli-x-status.jsonl",
    "fs_cli-x-show-calls.jsonl",
    "fs_cli-interactive.jsonl",
];

const SHUTDOWN_BODY: &[u8] = b"The system is being shut down.\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Serve,
    Simulate,
}

/// A field that legitimately differs between two switches: masked on both sides.
struct Mask {
    name: &'static str,
    why: &'static str,
    pattern: &'static str,
    replacement: &'static str,
    only: Option<Target>,
}

/// Every field excluded from the exact comparison, and why.
const MASKS: &[Mask] = &[
    Mask {
        name: "status uptime",
        why: "time since the switch started",
        pattern: r"(?m)^UP \d+ years?, \d+ days?, \d+ hours?, \d+ minutes?, \d+ seconds?, \d+ milliseconds?, \d+ microseconds?$",
        replacement: "UP <uptime>",
        only: None,
    },
    Mask {
        name: "status session counts",
        why: "the served switch had calls (757 recorded events); the recorded one was fresh",
        pattern: r"(?m)^\d+ session\(s\) since startup\n\d+ session\(s\) - peak \d+, last 5min \d+ \n\d+ session\(s\) per Sec out of max \d+, peak \d+, last 5min \d+ $",
        replacement: "<session counts>",
        only: None,
    },
    Mask {
        name: "status idle cpu",
        why: "a measurement of the recording machine",
        pattern: r"(?m)^min idle cpu \d+\.\d\d/\d+\.\d\d$",
        replacement: "min idle cpu <cpu>",
        only: None,
    },
    Mask {
        name: "Job-UUID",
        why: "a random UUID per bgapi job",
        pattern: r"Job-UUID: [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
        replacement: "Job-UUID: <uuid>",
        only: None,
    },
    Mask {
        name: "sendevent Event-UUID",
        why: "sendevent's reply names the new event's random UUID",
        pattern: r"Reply-Text: \+OK [0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\n",
        replacement: "Reply-Text: +OK <event uuid>\n",
        only: None,
    },
    Mask {
        name: "simulator version",
        why: "simulate names itself in its version (1.10.12-release+esl-replay~simulator~64bit)",
        pattern: r"(?m)^FreeSWITCH Version \S+ \(.*\)$|^FreeSWITCH \(Version .*\) is ready$",
        replacement: "<version>",
        only: Some(Target::Simulate),
    },
];

/// What the comparisons found.
#[derive(Debug, Default)]
struct Tally {
    frames: usize,
    exact: usize,
    masked: BTreeMap<&'static str, usize>,
    recorded_events_skipped: usize,
    our_events_skipped: usize,
}

/// A frame as text for a masked comparison: head lines (without `Content-Length`, which
/// follows the body), a blank line, the body.
fn text(frame: &Frame) -> String {
    let mut out = String::new();
    for (name, value) in frame.headers() {
        if !name.eq_ignore_ascii_case("Content-Length") {
            out.push_str(&format!("{name}: {value}\n"));
        }
    }
    out.push('\n');
    out.push_str(&String::from_utf8_lossy(frame.body()));
    out
}

fn compare(expected: &Frame, ours: &Frame, target: Target, context: &str, tally: &mut Tally) {
    tally.frames += 1;
    let (expected_bytes, our_bytes) = (expected.to_bytes(), ours.to_bytes());
    if expected_bytes == our_bytes {
        tally.exact += 1;
        return;
    }
    let (mut want, mut got) = (text(expected), text(ours));
    let mut applied = Vec::new();
    for mask in MASKS.iter().filter(|m| m.only.is_none_or(|t| t == target)) {
        let re = Regex::new(mask.pattern).unwrap();
        let (w, g) = (
            re.replace_all(&want, mask.replacement).into_owned(),
            re.replace_all(&got, mask.replacement).into_owned(),
        );
        if w != want || g != got {
            applied.push(mask.name);
        }
        (want, got) = (w, g);
    }
    assert_eq!(
        got, want,
        "{context}: our frame differs from FreeSWITCH's beyond the masked fields {applied:?}\n\
         ours:     {our_bytes:?}\nrecorded: {expected_bytes:?}"
    );
    assert!(!applied.is_empty(), "{context}: differs only in framing");
    for name in applied {
        *tally.masked.entry(name).or_default() += 1;
    }
}

fn is_event(frame: &Frame) -> bool {
    frame
        .content_type()
        .is_some_and(|t| t.starts_with("text/event-"))
}

struct Peer {
    stream: TcpStream,
    codec: EslCodec,
    buf: BytesMut,
    eof: bool,
}

impl Peer {
    /// Our next frame that is not an event, `None` once the server closed.
    async fn reply(&mut self, tally: &mut Tally) -> Option<Frame> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.buf).unwrap() {
                if is_event(&frame) {
                    tally.our_events_skipped += 1;
                    continue;
                }
                return Some(frame);
            }
            if self.eof {
                return self.codec.decode_eof(&mut self.buf).unwrap();
            }
            let read = tokio::time::timeout(
                support::server::FRAME_TIMEOUT,
                self.stream.read_buf(&mut self.buf),
            )
            .await
            .expect("a frame within the timeout")
            .unwrap_or(0);
            self.eof = read == 0;
        }
    }
}

async fn start(target: Target, store: &std::path::Path) -> RunningServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    match target {
        Target::Serve => {
            let store = esl_replay::store::open_read_only(store, None).unwrap();
            let options = ReplayOptions {
                speed: Some(1.0),
                ..ReplayOptions::default()
            };
            let replay = StoreReplay::load(store, options).unwrap();
            server::spawn(listener, ServerConfig::default(), Arc::new(replay)).unwrap()
        }
        Target::Simulate => Simulator::start(
            listener,
            ServerConfig::default(),
            SimulatorConfig {
                hostname: "vm".into(),
                ..SimulatorConfig::default()
            },
        )
        .unwrap(),
    }
}

/// Replays one recorded conversation against a fresh server.
async fn replay(
    name: &str,
    conversation: &Conversation,
    target: Target,
    store: &std::path::Path,
    tally: &mut Tally,
) {
    let mut server = Some(start(target, store).await);
    let addr = server.as_ref().unwrap().local_addr();
    let mut peer = Peer {
        stream: TcpStream::connect(addr).await.unwrap(),
        codec: EslCodec::new(),
        buf: BytesMut::new(),
        eof: false,
    };
    for (i, expected) in conversation.opening.iter().enumerate() {
        let ours = peer.reply(tally).await.expect("the greeting");
        compare(
            expected,
            &ours,
            target,
            &format!("{name} opening {i}"),
            tally,
        );
    }
    for (t, turn) in conversation.turns.iter().enumerate() {
        peer.stream.write_all(&turn.command).await.unwrap();
        let command = String::from_utf8_lossy(&turn.command);
        let command = command.lines().next().unwrap_or_default().trim().to_owned();
        for (i, expected) in turn.replies.iter().enumerate() {
            if is_event(expected) {
                tally.recorded_events_skipped += 1;
                continue;
            }
            if expected.content_type() == Some("text/disconnect-notice") {
                if expected.body()[..] == *SHUTDOWN_BODY {
                    // The recorded switch was shut down here (`fsctl shutdown`).
                    server.take().unwrap().shutdown().await;
                } else {
                    // The recorded client hung up (or was about to): FreeSWITCH says
                    // goodbye whenever a listener ends.
                    let _ = peer.stream.shutdown().await;
                }
            }
            let context = format!("{name} ({target:?}) turn {t} `{command}` frame {i}");
            let ours = peer
                .reply(tally)
                .await
                .unwrap_or_else(|| panic!("{context}: the server closed early"));
            compare(expected, &ours, target, &context, tally);
        }
    }
    let last = conversation
        .turns
        .last()
        .and_then(|t| t.replies.last())
        .and_then(Frame::content_type);
    if last == Some("text/disconnect-notice") {
        assert!(
            peer.reply(tally).await.is_none(),
            "{name}: closed after the notice"
        );
    }
    if let Some(server) = server {
        server.abort().await;
    }
}

/// A store holding the recorded plain events as capture stores them.
fn recorded_store(dir: &std::path::Path, target: &std::path::Path) {
    let chunks = support::fs_recordings::load(dir, "events-plain.jsonl");
    let frames = support::fs_recordings::frames(&support::fs_recordings::stream(
        &chunks,
        Dir::ServerToClient,
    ));
    let start = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_796_426_200);
    let written = support::server::write_event_store(&frames, start, target);
    assert_eq!(written, 757, "the README's event count");
}

async fn hold_to_recordings(target: Target) -> Option<Tally> {
    let dir = support::fs_recordings::dir()?;
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    recorded_store(&dir, &store);
    let mut total = Tally::default();
    let mut recorded = 0;
    for name in CONVERSATIONS {
        let conversation =
            support::fs_recordings::conversation(&support::fs_recordings::load(&dir, name));
        recorded += conversation.opening.len()
            + conversation
                .turns
                .iter()
                .flat_map(|t| &t.replies)
                .filter(|f| !is_event(f))
                .count();
        let mut tally = Tally::default();
        tokio::time::timeout(
            Duration::from_secs(60),
            replay(name, &conversation, target, &store, &mut tally),
        )
        .await
        .unwrap_or_else(|_| panic!("{name} finished in time"));
        println!(
            "{target:?} {name}: {} frames, {} exact, masked {:?}, events skipped (recorded {}, ours {})",
            tally.frames,
            tally.exact,
            tally.masked,
            tally.recorded_events_skipped,
            tally.our_events_skipped
        );
        total.frames += tally.frames;
        total.exact += tally.exact;
        for (mask, n) in tally.masked {
            *total.masked.entry(mask).or_default() += n;
        }
    }
    println!(
        "{target:?} total: {} frames compared, {} byte for byte, masked {:?}",
        total.frames, total.exact, total.masked
    );
    for mask in MASKS {
        println!("  mask {:?}: {}", mask.name, mask.why);
    }
    assert_eq!(
        total.frames, recorded,
        "every recorded reply frame compared"
    );
    Some(total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_every_recorded_conversation_as_freeswitch_did() {
    let Some(tally) = hold_to_recordings(Target::Serve).await else {
        return;
    };
    // Masked: the two status bodies (uptime, sessions, cpu), the bgapi Job-UUID and the
    // sendevent UUID; every other frame is FreeSWITCH's, byte for byte.
    assert_eq!(tally.frames - tally.exact, 4, "{tally:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_answers_every_recorded_conversation_as_freeswitch_did() {
    let Some(tally) = hold_to_recordings(Target::Simulate).await else {
        return;
    };
    // As for serve, plus the two `version` replies naming the simulator.
    assert_eq!(tally.frames - tally.exact, 6, "{tally:?}");
}

/// Hostile review: served as XML, the recorded plain events came back as FreeSWITCH sent
/// them as XML but for one: `'` was escaped as `&apos;` (FreeSWITCH's XML writer leaves
/// quotes alone). Each of the 757 events, asked for as XML from a store of the plain
/// recording, is the recorded XML frame byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_converts_the_recorded_plain_events_to_the_recorded_xml_byte_for_byte() {
    let Some(dir) = support::fs_recordings::dir() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    recorded_store(&dir, &store);
    let recorded: Vec<Frame> = support::fs_recordings::frames(&support::fs_recordings::stream(
        &support::fs_recordings::load(&dir, "events-xml.jsonl"),
        Dir::ServerToClient,
    ))
    .into_iter()
    .filter(|frame| frame.content_type() == Some("text/event-xml"))
    .collect();
    assert_eq!(recorded.len(), 757, "the README's event count");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replay = StoreReplay::load(
        esl_replay::store::open_read_only(&store, None).unwrap(),
        ReplayOptions::default(),
    )
    .unwrap();
    let server = server::spawn(listener, ServerConfig::default(), Arc::new(replay)).unwrap();
    let mut client = support::server::Client::authenticated(server.local_addr(), "ClueCon").await;
    assert_eq!(
        client.command("event xml ALL").await,
        "+OK event listener enabled xml"
    );
    let (served, _notice) = client.events_until_notice().await;
    assert_eq!(served.len(), recorded.len());
    let differing: Vec<usize> = (0..served.len())
        .filter(|&i| served[i].to_bytes() != recorded[i].to_bytes())
        .collect();
    assert!(differing.is_empty(), "events differing: {differing:?}");
    server.abort().await;
}
