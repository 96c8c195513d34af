//! A real third-party ESL client against `esl-replay serve`: the Python `greenswitch`
//! library (installed by `.ci/run`) connects to the command-line server, authenticates with
//! the password from `ESL_PASSWORD`, asks a recorded `api` command, subscribes and receives
//! every stored event with the same headers its own parser reads from the stored bytes;
//! and runs the real `fs_cli`'s recorded scenario (start-up `switchname`/`hostname`, tab
//! completion, `version`, `status`, `show calls count`, an event subscription) against a
//! store of the recorded FreeSWITCH events, getting the recorded switch's answers.
//! Skips (with a message) when `python3` or `greenswitch` is not available, or the
//! recordings are absent outside CI.

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};

use crate::support;
use crate::support::cli;
use crate::support::process::SpawnSafely as _;
use crate::support::server::{dispatch_envelope, event_envelope, fixture_frame, reply_envelope};

const EVENTS: [&str; 7] = [
    "09-event-plain-channel-create.esl",
    "10-event-plain-channel-answer.esl",
    "13-event-plain-dtmf.esl",
    "14-event-plain-custom-sofia-register.esl",
    "12-event-plain-heartbeat.esl",
    "08-event-plain-background-job.esl",
    "11-event-plain-channel-hangup-complete.esl",
];

const CLIENT: &str = r#"
import json, sys, gevent, greenswitch
from greenswitch.esl import ESLEvent

port, password, expected_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
expected = json.load(open(expected_path))
received = []
fs = greenswitch.InboundESL(host="127.0.0.1", port=port, password=password)
fs.connect()
fs.register_handle("*", lambda event: "Event-Name" in event.headers and received.append(event.headers))
version = fs.send("api version").data
assert version.startswith("FreeSWITCH Version 1.10.12"), version
reply = fs.send("event plain ALL")
assert reply.headers["Reply-Text"] == "+OK event listener enabled plain", reply.headers
deadline = 100
while len(received) < len(expected) and deadline > 0:
    gevent.sleep(0.1)
    deadline -= 1
assert len(received) == len(expected), (len(received), len(expected))
for got, raw in zip(received, expected):
    want = ESLEvent(raw).headers
    want["Content-Type"] = "text/event-plain"
    want["Content-Length"] = str(len(raw.encode()))
    got = {k: v for k, v in got.items()}
    for key in ("Content-Type", "Content-Length"):
        assert key in got, (key, got)
    body_keys = set(want) - set(got)
    assert not body_keys, ("missing headers", body_keys)
    for key, value in want.items():
        if key in ("Content-Length",) and got.get("Event-Name") == "BACKGROUND_JOB":
            continue
        assert got[key] == value, (key, got[key], value)
print("OK", len(received))
"#;

fn python_with_greenswitch() -> bool {
    Command::new("python3")
        .args(["-c", "import greenswitch"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status_safely()
        .is_ok_and(|s| s.success())
}

#[test]
fn greenswitch_receives_the_stored_events_intact() {
    if !python_with_greenswitch() {
        eprintln!(
            "skipped: python3 with the greenswitch package is not available (pip install greenswitch)"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let start = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_767_261_600);
    let mut envelopes = vec![
        dispatch_envelope("api.dispatch", "api version", start),
        reply_envelope(
            "api.reply",
            &fixture_frame("06-api-response-version.esl"),
            start,
        ),
    ];
    let mut expected = Vec::new();
    for (i, name) in EVENTS.iter().enumerate() {
        let frame = fixture_frame(name);
        expected.push(String::from_utf8(frame.body().to_vec()).unwrap());
        envelopes.push(event_envelope(
            &frame,
            start + time::Duration::milliseconds(i as i64),
        ));
    }
    {
        let mut store = esl_replay::store::open(&store_dir, None).unwrap();
        store.write_batch(envelopes).unwrap();
        store.sync().unwrap();
    }
    let expected_path = dir.path().join("expected.json");
    std::fs::write(&expected_path, serde_json::to_vec(&expected).unwrap()).unwrap();

    let (mut server, port) = serve_cli(&store_dir, &["--as-fast-as-possible"]);

    let expected_arg = expected_path.to_string_lossy();
    let output = run_client(&mut server, CLIENT, port, &[&expected_arg]);
    assert!(String::from_utf8_lossy(&output.stdout).starts_with(&format!("OK {}", EVENTS.len())));
}

/// `esl-replay serve` on a free port with the password `not-the-default`; returns the
/// process and its port (read from its banner, which never shows the password).
fn serve_cli(store_dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, u16) {
    let mut server = cli::command()
        .args(["serve", "--store"])
        .arg(store_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env("ESL_PASSWORD", "not-the-default")
        .stderr(Stdio::piped())
        .spawn_safely()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(
        !banner.contains("not-the-default"),
        "the password is never printed"
    );
    let port = banner
        .rsplit_once(" on 127.0.0.1:")
        .and_then(|(_, rest)| rest.split(';').next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in {banner:?}"));
    (server, port)
}

/// Runs a Python client against the server on `port`, then stops the server; the client
/// must succeed.
fn run_client(
    server: &mut std::process::Child,
    script: &str,
    port: u16,
    extra: &[&str],
) -> std::process::Output {
    let output = Command::new("python3")
        .args(["-c", script])
        .arg(port.to_string())
        .arg("not-the-default")
        .args(extra)
        .output_safely()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        output.status.success(),
        "greenswitch client failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

const FS_CLI_SCENARIO: &str = r#"
import json, sys, gevent, greenswitch

port, password = int(sys.argv[1]), sys.argv[2]
fs = greenswitch.InboundESL(host="127.0.0.1", port=port, password=password)
fs.connect()
creates = []
fs.register_handle("CHANNEL_CREATE", lambda event: creates.append(event.headers.get("Unique-ID")))
out = {}
for command in ["api switchname", "api hostname", "api console_complete sta", "api version",
                "api status", "api show calls count"]:
    out[command] = fs.send(command).data
out["event"] = fs.send("event plain CHANNEL_CREATE").headers["Reply-Text"]
deadline = 100
while len(creates) < 30 and deadline > 0:
    gevent.sleep(0.1)
    deadline -= 1
out["creates"] = len(creates)
print(json.dumps(out))
"#;

/// The body FreeSWITCH answered to `command` in a recorded conversation.
fn recorded_answer(dir: &std::path::Path, recording: &str, command: &str) -> String {
    let conversation =
        support::fs_recordings::conversation(&support::fs_recordings::load(dir, recording));
    let turn = conversation
        .turns
        .iter()
        .find(|t| String::from_utf8_lossy(&t.command).lines().next() == Some(command))
        .unwrap_or_else(|| panic!("{command} in {recording}"));
    String::from_utf8(turn.replies[0].body().to_vec()).unwrap()
}

#[test]
fn greenswitch_runs_the_recorded_fs_cli_scenario_against_serve() {
    if !python_with_greenswitch() {
        eprintln!(
            "skipped: python3 with the greenswitch package is not available (pip install greenswitch)"
        );
        return;
    }
    let Some(recordings) = support::fs_recordings::dir() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let chunks = support::fs_recordings::load(&recordings, "events-plain.jsonl");
    let frames = support::fs_recordings::frames(&support::fs_recordings::stream(
        &chunks,
        support::fs_recordings::Dir::ServerToClient,
    ));
    let start = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_796_426_200);
    support::server::write_event_store(&frames, start, &store_dir);
    let creates = frames
        .iter()
        .filter(|f| support::server::event_name(f) == "CHANNEL_CREATE")
        .count();

    let (mut server, port) = serve_cli(&store_dir, &["--as-fast-as-possible"]);
    let output = run_client(&mut server, FS_CLI_SCENARIO, port, &[]);
    let out: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let interactive = "fs_cli-interactive.jsonl";
    for command in ["api switchname", "api hostname", "api console_complete sta"] {
        assert_eq!(
            out[command],
            recorded_answer(&recordings, interactive, command),
            "{command}"
        );
    }
    assert_eq!(
        out["api version"],
        recorded_answer(&recordings, "inbound-commands.jsonl", "api version")
    );
    assert_eq!(
        out["api show calls count"],
        recorded_answer(
            &recordings,
            "fs_cli-x-show-calls.jsonl",
            "api show calls count"
        )
    );
    // `status`: the lines that do not depend on time or on the calls served.
    let recorded = recorded_answer(&recordings, "fs_cli-x-status.jsonl", "api status");
    let ours = out["api status"].as_str().unwrap();
    for line in [1, 5, 7] {
        assert_eq!(ours.lines().nth(line), recorded.lines().nth(line), "{ours}");
    }
    assert_eq!(out["event"], "+OK event listener enabled plain");
    assert_eq!(
        out["creates"], creates,
        "every recorded CHANNEL_CREATE delivered"
    );
}
