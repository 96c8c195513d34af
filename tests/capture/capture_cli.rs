//! `esl-replay capture` as a process: a scripted FreeSWITCH on 127.0.0.1, the binary
//! capturing into a store, SIGTERM for a graceful stop (queue flushed, store synced, exit 0),
//! the TOML config file, and exit 2 when the password is rejected.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use esl_replay::record::{Criteria, ReadCursor, Record};
use esl_replay::store::open_read_only;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;

use crate::support::process::SpawnSafely as _;
use crate::support::{self, cli};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/esl/synthetic")
            .join(name),
    )
    .unwrap()
}

/// One FreeSWITCH connection on a thread: greeting, auth, restore replies, `events`, then
/// hold the socket open until the client leaves.
fn fake_freeswitch(password: &'static str, events: Vec<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let mut socket = socket.unwrap();
            let events = events.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(socket.try_clone().unwrap());
                socket.write_all(&fixture("01-auth-request.esl")).unwrap();
                let mut next_command = || {
                    let mut lines = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return None;
                        }
                        match line.trim_end() {
                            "" if lines.is_empty() => {}
                            "" => return Some(lines.join("|")),
                            text => lines.push(text.to_owned()),
                        }
                    }
                };
                let Some(auth) = next_command() else { return };
                if auth != format!("auth {password}") {
                    let _ =
                        socket.write_all(&fixture("03-command-reply-auth-err-then-disconnect.esl"));
                    return;
                }
                socket
                    .write_all(&fixture("02-command-reply-auth-ok.esl"))
                    .unwrap();
                let Some(_event) = next_command() else { return };
                socket
                    .write_all(&fixture("04-command-reply-event-plain-ok.esl"))
                    .unwrap();
                for event in &events {
                    socket.write_all(&fixture(event)).unwrap();
                }
                while next_command().is_some() {}
            });
        }
    });
    address
}

fn records(store: &Path) -> Vec<Record> {
    match open_read_only(store, None) {
        Ok(store) => store
            .read_from_cursor(&ReadCursor::start(), 100_000, &Criteria::default())
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

fn binary() -> Command {
    let mut command = cli::command();
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    command
}

#[test]
fn sigterm_flushes_the_store_and_exits_zero() {
    let events = vec![
        "09-event-plain-channel-create.esl",
        "10-event-plain-channel-answer.esl",
        "12-event-plain-heartbeat.esl",
    ];
    let address = fake_freeswitch("env-secret", events);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let child = binary()
        .env("ESL_PASSWORD", "env-secret")
        .args(["capture", "--esl", &format!("pbx-a={address}"), "--store"])
        .arg(&store)
        .spawn_safely()
        .unwrap();
    support::wait_until("three events stored", || {
        records(&store)
            .iter()
            .filter(|r| r.artifact_name() == "event.raw")
            .count()
            >= 3
    });
    assert_eq!(send_sigterm(child.id()), 0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("env-secret"));
    let stored = records(&store);
    let last = stored.last().unwrap();
    assert_eq!(last.artifact_name(), "connection.closed");
    assert_eq!(last.payload()["protocol_facts"]["close-reason"], "local");
    assert!(
        stored
            .iter()
            .all(|r| r.runtime_flags()["pbx_node_slug"] == "pbx-a")
    );
    assert!(
        stored
            .iter()
            .all(|r| !esl_replay::record::to_ndjson_line(r).contains("env-secret"))
    );
}

/// Sends SIGTERM to our own child through the `kill` command (no unsafe code needed).
fn send_sigterm(pid: u32) -> i32 {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status_safely()
        .unwrap()
        .code()
        .unwrap_or(-1)
}

#[test]
fn config_file_nodes_and_a_rejected_password_exit_two() {
    let good = fake_freeswitch("file-pw", vec!["12-event-plain-heartbeat.esl"]);
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "file-pw\n").unwrap();
    let store = dir.path().join("store");
    let config = dir.path().join("capture.toml");
    std::fs::write(
        &config,
        format!(
            "store = {store:?}\nworker_session_id = \"ws-9\"\n\n[[node]]\nslug = \"pbx-b\"\nesl = \"{good}\"\npassword_file = {password:?}\nevents = [\"HEARTBEAT\"]\n"
        ),
    )
    .unwrap();
    let output = binary()
        .args(["capture", "--duration", "1500ms", "--config"])
        .arg(&config)
        .output_safely()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = records(&store);
    let heartbeat = stored
        .iter()
        .find(|r| r.artifact_name() == "event.raw")
        .expect("heartbeat stored");
    assert_eq!(heartbeat.runtime_flags()["pbx_node_slug"], "pbx-b");
    assert_eq!(heartbeat.runtime_flags()["worker_session_id"], "ws-9");
    let dispatch = stored
        .iter()
        .find(|r| r.artifact_name() == "wire.command")
        .unwrap();
    assert_eq!(dispatch.payload()["raw_payload"], "event plain HEARTBEAT");

    // Default password ClueCon against a server expecting another: auth -ERR, exit 2.
    let bad = fake_freeswitch("other", vec![]);
    let output = binary()
        .args(["capture", "--duration", "10s", "--esl", &bad, "--store"])
        .arg(dir.path().join("store2"))
        .output_safely()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("auth rejected"));
}

/// A reference NDJSON line with append sequence `sequence` and the checksum of its content
/// (import reports, and exits 1 for, a record that does not match its checksum).
fn ndjson_line(sequence: u64) -> String {
    format!(
        r#"{{"schema_version":1,"id":"3f1c2b9e-8a4d-4c1e-9b7a-2d5e6f708192","artifact_version":"1","artifact_name":"api.dispatch","capture_timestamp":"2024-01-15T10:00:00.000+00:00","stored_at":"2024-01-15T10:00:01.250+00:00","append_sequence":{sequence},"connection_generation":null,"session_id":"sess-001","job_uuid":null,"event_name":null,"capture_path":null,"correlation_ids":[],"runtime_flags":[],"payload":{{"command":"originate"}},"checksum":"4104ad28dbe09cf9fccbfc87f158c1b83946ca4229afb9ef024eb64777b42bdc","tags":[]}}"#
    )
}

/// Issue 16 item 11: a capture into a store whose last sequence is near `i64::MAX` (here
/// imported) stops by itself with exit 2 and says why, instead of failing batch after
/// batch until shutdown.
#[test]
fn a_store_at_the_sequence_limit_stops_the_capture_with_exit_two() {
    let address = fake_freeswitch("ClueCon", vec!["12-event-plain-heartbeat.esl"]);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let input = dir.path().join("near-limit.ndjson");
    std::fs::write(&input, ndjson_line(i64::MAX as u64) + "\n").unwrap();
    let import = binary()
        .arg("import")
        .arg("--store")
        .arg(&store)
        .arg(&input)
        .output_safely()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let mut child = binary()
        .args(["capture", "--esl", &address, "--store"])
        .arg(&store)
        .spawn_safely()
        .unwrap();
    let give_up = Instant::now() + support::PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > give_up {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "capture kept running on a store that cannot take a record: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("sequences are exhausted"), "{stderr}");
    assert!(stderr.contains("the capture stopped"), "{stderr}");
    let stored = records(&store);
    assert_eq!(stored.len(), 1, "the imported record is intact and alone");
    assert_eq!(stored[0].append_sequence(), i64::MAX as u64);
}

/// Issue 16 item 3: an absurd `--retain-for` is refused at start-up with exit 2 (it used to
/// kill the retention thread while capture went on without retention and exited 0).
#[test]
fn an_absurd_retention_age_is_refused_at_start_up() {
    let dir = tempfile::tempdir().unwrap();
    for age in ["9999999999d", "106751991167300d", "18446744073709551615s"] {
        let output = binary()
            .args([
                "capture",
                "--duration",
                "2s",
                "--esl",
                "127.0.0.1:9",
                "--retain-for",
                age,
            ])
            .arg("--store")
            .arg(dir.path().join("store"))
            .output_safely()
            .unwrap();
        let stderr = cli::error_output(&output);
        assert!(
            stderr.contains("beyond the representable date range"),
            "{stderr}"
        );
        assert!(stderr.contains("--retain-for"), "{stderr}");
    }
}

/// `--password-file` is read as `serve`, `simulate` and `replay` read it: the first line.
/// A file `ClueCon\nsecond line\n` used to be sent whole, rejected, and retried forever.
#[test]
fn the_password_file_s_first_line_is_the_password() {
    let events = vec![
        "09-event-plain-channel-create.esl",
        "10-event-plain-channel-answer.esl",
    ];
    let address = fake_freeswitch("ClueCon", events);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let password = dir.path().join("password");
    std::fs::write(&password, "ClueCon\r\nsecond line\n").unwrap();
    let child = binary()
        .args(["capture", "--esl", &address, "--password-file"])
        .arg(&password)
        .arg("--store")
        .arg(&store)
        .spawn_safely()
        .unwrap();
    support::wait_until("two events stored", || {
        records(&store)
            .iter()
            .filter(|r| r.artifact_name() == "event.raw")
            .count()
            >= 2
    });
    assert_eq!(send_sigterm(child.id()), 0);
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("second line"), "{stderr}");
}

/// Runs `capture` with `extra` flags against an address that never answers; the store is
/// in `dir`.
fn capture_with(dir: &Path, extra: &[&str]) -> std::process::Output {
    binary()
        .args(["capture", "--duration", "1s", "--store"])
        .arg(dir.join("store"))
        .args(extra)
        .output_safely()
        .unwrap()
}

/// Flags that cannot work are refused when the command line is read, exit 2, naming the
/// flag and what it accepts; nothing is stored. They used to busy-loop retention (a zero
/// interval), drop every frame (a zero queue), retry an impossible port forever, or store
/// an empty node slug.
#[test]
fn impossible_capture_flags_are_refused_when_read() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 10] = [
        (&["--retention-interval", "0s"], "--retention-interval"),
        (&["--retention-interval", "500ms"], "minimum of 1s"),
        (&["--queue-bytes", "0"], "--queue-bytes"),
        (&["--queue-bytes", "512KiB"], "minimum of 1MiB"),
        (&["--esl", "127.0.0.1:99999"], "a port is 1-65535"),
        (&["--esl", "127.0.0.1:0"], "a port is 1-65535"),
        (&["--esl", "notahost"], "is not HOST:PORT"),
        (&["--esl", "=127.0.0.1:18022"], "empty slug"),
        (&["--http", "99999"], "a port is 0-65535"),
        (&["--http", "notanaddr"], "is not IP:PORT"),
    ];
    for (flags, expected) in cases {
        let mut args = flags.to_vec();
        if !flags.contains(&"--esl") {
            args.extend(["--esl", "127.0.0.1:9"]);
        }
        let output = capture_with(dir.path(), &args);
        let text = cli::error_output(&output);
        assert!(text.contains(expected), "{flags:?}: {text}");
        assert!(text.contains(flags[0]), "{flags:?}: {text}");
        assert!(
            !dir.path().join("store").exists(),
            "{flags:?}: nothing stored"
        );
    }
    // The documented forms still start (and stop at --duration: the node never answers).
    for esl in ["pbx-a=127.0.0.1:9", "localhost:9", "[::1]:9"] {
        let output = capture_with(dir.path(), &["--esl", esl]);
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(!text.contains("invalid value"), "{esl}: {text}");
        assert!(text.contains("capturing"), "{esl}: {text}");
    }
}

/// `--http` is bound before the capture starts: an address in use stops the command before
/// it connects or stores anything (it used to capture, then exit 2 without a clean stop);
/// port 0 prints the port it bound.
#[test]
fn the_http_address_is_bound_before_the_capture_starts() {
    let address = fake_freeswitch("ClueCon", vec!["09-event-plain-channel-create.esl"]);
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let output = capture_with(dir.path(), &["--esl", &address, "--http", &port]);
    let text = cli::error_output(&output);
    assert!(
        text.contains("--http: cannot listen on 127.0.0.1:"),
        "{text}"
    );
    assert!(!text.contains("capturing"), "{text}");
    assert!(!dir.path().join("store").exists(), "nothing stored");

    let output = capture_with(dir.path(), &["--esl", &address, "--http", "127.0.0.1:0"]);
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{text}");
    let bound = text
        .lines()
        .find_map(|line| line.strip_prefix("http: ")?.rsplit_once(" on "))
        .map(|(_, address)| address.to_owned())
        .unwrap_or_else(|| panic!("no http line: {text}"));
    assert!(bound.starts_with("127.0.0.1:"), "{text}");
    assert_ne!(bound, "127.0.0.1:0", "{text}");
}
/// Review finding 2: `--events`/`--filter` text that would break the command line (a line
/// break smuggling `api global_setvar …`, an empty event list, an empty filter value) is
/// refused at start-up with exit 2, before any connection.
#[test]
fn event_and_filter_values_that_would_break_the_command_line_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [&[&str]; 5] = [
        &[
            "--filter",
            "Event-Name=HEARTBEAT\n\napi global_setvar pwned=1",
        ],
        &["--filter", "Event-Name="],
        &["--filter", "=HEARTBEAT"],
        &["--events", ""],
        &["--events", "HEARTBEAT\r\napi status"],
    ];
    for flags in cases {
        let output = binary()
            .args(["capture", "--duration", "2s", "--esl", "127.0.0.1:9"])
            .args(flags)
            .arg("--store")
            .arg(dir.path().join("store"))
            .output_safely()
            .unwrap();
        let stderr = cli::error_output(&output);
        assert!(stderr.contains("--events/--filter"), "{flags:?}: {stderr}");
    }
}
