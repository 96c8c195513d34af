//! The fs-esl-gateway REST contract on the capture's HTTP server (`docs/capture.md`,
//! "fs-esl-gateway REST contract"), end to end: the real `esl-replay capture` binary in
//! front of a scripted switch that answers as FreeSWITCH 1.10.12 does. The switch's frames
//! are taken from the real recordings in `../shared/fixtures/freeswitch-1.10.12/` (greeting,
//! `auth` and `event` replies, the bgapi acknowledgement, a BACKGROUND_JOB of an
//! `originate`); the replies of `uuid_kill`, `uuid_broadcast`, `uuid_transfer` and
//! `show channels as json` carry the texts of FreeSWITCH's `mod_commands.c`. The switch logs
//! every command it receives, so each test checks what reached it: the `bgapi originate`
//! with our Job-UUID, `uuid_kill` with its cause, nothing at all for a refused request.
//! Waits are on observable state (a log entry, `/health`, a job's status), never on time.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::BytesMut;
use esl_replay::esl::{EslCodec, Frame};
use esl_replay::record::{Criteria, ReadCursor};
use esl_replay::server::CommandDecoder;
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::codec::Decoder as _;

use crate::support::forward::free_port;

const TOKEN: &str = "t0ken";
const JWT_SECRET: &str = "shared-with-the-backend";
/// A channel the scripted switch has from the start (a real one of the recordings).
const CALL: &str = "34fe0fef-0da1-4be0-8920-2cf9b184269b";

// ---------------------------------------------------------------------------------------
// The recordings

/// The recordings directory; `None` (saying so) when absent, a failure under `CI=true`.
fn recordings() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/freeswitch-1.10.12");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but the FreeSWITCH recordings are missing at {}",
        dir.display()
    );
    eprintln!("SKIPPED: {} is absent", dir.display());
    None
}

/// Every frame FreeSWITCH sent in one recording.
fn switch_frames(dir: &Path, name: &str) -> Vec<Frame> {
    let text = std::fs::read_to_string(dir.join(name)).unwrap();
    let mut bytes = BytesMut::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let chunk: Value = serde_json::from_str(line).unwrap();
        if chunk["dir"] == "s2c" {
            let data = base64::engine::general_purpose::STANDARD
                .decode(chunk["data"].as_str().unwrap())
                .unwrap();
            bytes.extend_from_slice(&data);
        }
    }
    let mut codec = EslCodec::new();
    let mut frames = Vec::new();
    while let Some(frame) = codec.decode_eof(&mut bytes).unwrap() {
        frames.push(frame);
    }
    frames
}

/// What the scripted switch sends, taken from the recordings.
struct Wire {
    greeting: Vec<u8>,
    auth_accepted: Vec<u8>,
    events_enabled: Vec<u8>,
    /// The plain body of a recorded BACKGROUND_JOB of an `originate`, before its
    /// `Job-UUID` header (the common headers and `Event-Sequence`).
    job_headers: String,
}

impl Wire {
    fn load(dir: &Path) -> Wire {
        let commands = switch_frames(dir, "inbound-commands.jsonl");
        let reply = |text: &str| {
            commands
                .iter()
                .find(|f| f.header("Reply-Text") == Some(text))
                .unwrap_or_else(|| panic!("no {text:?} reply recorded"))
                .to_bytes()
                .to_vec()
        };
        let events = switch_frames(dir, "events-plain.jsonl");
        let job = events
            .iter()
            .map(|f| String::from_utf8_lossy(f.body()).into_owned())
            .find(|body| {
                body.starts_with("Event-Name: BACKGROUND_JOB\n")
                    && body.contains("\nJob-Command: originate\n")
            })
            .expect("a recorded BACKGROUND_JOB of an originate");
        Wire {
            greeting: commands[0].to_bytes().to_vec(),
            auth_accepted: reply("+OK accepted"),
            events_enabled: reply("+OK event listener enabled plain"),
            job_headers: job[..job.find("Job-UUID: ").unwrap()].to_owned(),
        }
    }

    /// A BACKGROUND_JOB event frame for `job_uuid` of `originate <args>` with `result`.
    fn background_job(&self, job_uuid: &str, args: &str, result: &str) -> Vec<u8> {
        let body = format!(
            "{}Job-UUID: {job_uuid}\nJob-Command: originate\nJob-Command-Arg: {}\nContent-Length: {}\n\n{result}",
            self.job_headers,
            url_encode(args),
            result.len()
        );
        format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n{body}",
            body.len()
        )
        .into_bytes()
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn api_response(body: &str) -> Vec<u8> {
    format!(
        "Content-Type: api/response\nContent-Length: {}\n\n{body}",
        body.len()
    )
    .into_bytes()
}

fn command_reply(text: &str) -> Vec<u8> {
    format!("Content-Type: command/reply\nReply-Text: {text}\n\n").into_bytes()
}

// ---------------------------------------------------------------------------------------
// The scripted switch

/// How the scripted switch behaves; the test flips these while it runs.
struct Controls {
    /// Send the greeting only once true (a node connected but never ready until then).
    greet: watch::Sender<bool>,
    /// Answer `api` commands only while true (FreeSWITCH answers in order, so the rest
    /// wait behind the first).
    answer_api: watch::Sender<bool>,
    /// Fire BACKGROUND_JOBs only while true.
    finish_jobs: watch::Sender<bool>,
}

/// One command as the switch received it.
#[derive(Clone, Debug)]
struct Received {
    line: String,
    /// The `Job-UUID` header of a bgapi.
    job_uuid: Option<String>,
}

/// A switch on 127.0.0.1 that answers as FreeSWITCH 1.10.12 does and logs what it gets.
struct Switch {
    address: String,
    wire: Wire,
    /// Every command received, in order.
    log: Mutex<Vec<Received>>,
    /// The UUID of the channel each completed originate made, with its Job-UUID.
    calls: Mutex<Vec<(String, String)>>,
    controls: Controls,
    /// `show channels as json`'s answer: the row of [`CALL`], as FreeSWITCH prints it.
    channels_json: String,
}

impl Switch {
    async fn start(wire: Wire) -> Arc<Switch> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let channels_json = json!({
            "row_count": 1,
            "rows": [{
                "uuid": CALL, "direction": "outbound", "created": "2026-12-04 23:16:55",
                "created_epoch": "1796426215", "name": "loopback/9664-a", "state": "CS_EXECUTE",
                "cid_name": "", "cid_num": "5001", "ip_addr": "", "dest": "9664",
                "application": "park", "application_data": "", "dialplan": "XML",
                "context": "default", "read_codec": "L16", "read_rate": "8000",
                "read_bit_rate": "128000", "write_codec": "L16", "write_rate": "8000",
                "write_bit_rate": "128000", "secure": "", "hostname": "vm", "presence_id": "",
                "presence_data": "", "accountcode": "", "callstate": "ACTIVE",
                "callee_name": "", "callee_num": "", "callee_direction": "",
                "call_uuid": CALL, "sent_callee_name": "", "sent_callee_num": "",
                "initial_cid_name": "", "initial_cid_num": "5001", "initial_ip_addr": "",
                "initial_dest": "9664", "initial_dialplan": "XML", "initial_context": "default"
            }]
        })
        .to_string();
        let switch = Arc::new(Switch {
            address,
            wire,
            log: Mutex::default(),
            calls: Mutex::default(),
            controls: Controls {
                greet: watch::channel(true).0,
                answer_api: watch::channel(true).0,
                finish_jobs: watch::channel(true).0,
            },
            channels_json,
        });
        let serving = Arc::clone(&switch);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, Arc::clone(&serving)));
            }
        });
        switch
    }

    /// The commands received so far whose line starts with `prefix`, with their Job-UUIDs.
    fn received(&self, prefix: &str) -> Vec<(String, Option<String>)> {
        self.log
            .lock()
            .iter()
            .filter(|r| r.line.starts_with(prefix))
            .map(|r| (r.line.clone(), r.job_uuid.clone()))
            .collect()
    }

    /// Waits until `count` commands starting with `prefix` have arrived.
    async fn wait_received(&self, prefix: &str, count: usize) {
        wait_for(&format!("{count} × {prefix:?} at the switch"), || {
            self.received(prefix).len() >= count
        })
        .await;
    }
}

/// One connection: a reader logs each command as it arrives and queues it; the answers
/// go out in order, each waiting for the controls that gate it.
async fn serve(socket: TcpStream, switch: Arc<Switch>) {
    let (mut reader, mut writer) = socket.into_split();
    let wire = &switch.wire;
    let mut greet = switch.controls.greet.subscribe();
    if greet.wait_for(|go| *go).await.is_err() || writer.write_all(&wire.greeting).await.is_err() {
        return;
    }
    let (queue, mut commands) = tokio::sync::mpsc::unbounded_channel();
    let logging = Arc::clone(&switch);
    tokio::spawn(async move {
        let mut decoder = CommandDecoder::default();
        let mut buffer = BytesMut::new();
        loop {
            while let Ok(Some(command)) = decoder.decode(&mut buffer) {
                let received = Received {
                    line: command.line.clone(),
                    job_uuid: command.header("Job-UUID").map(str::to_owned),
                };
                logging.log.lock().push(received.clone());
                if queue.send(received).is_err() {
                    return;
                }
            }
            match reader.read_buf(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    });
    let mut answer_api = switch.controls.answer_api.subscribe();
    let mut finish_jobs = switch.controls.finish_jobs.subscribe();
    while let Some(Received { line, job_uuid }) = commands.recv().await {
        let (word, args) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let mut out: Vec<Vec<u8>> = Vec::new();
        match word {
            "auth" => out.push(wire.auth_accepted.clone()),
            "event" => out.push(wire.events_enabled.clone()),
            "filter" => out.push(command_reply("+OK filter added.")),
            "api" => {
                if answer_api.wait_for(|go| *go).await.is_err() {
                    return;
                }
                out.push(api_response(&api_answer(args, &switch.channels_json)));
            }
            "bgapi" => {
                let job = job_uuid.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
                let ack = format!(
                    "Content-Type: command/reply\nReply-Text: +OK Job-UUID: {job}\nJob-UUID: {job}\n\n"
                );
                if writer.write_all(ack.as_bytes()).await.is_err()
                    || finish_jobs.wait_for(|go| *go).await.is_err()
                {
                    return;
                }
                let originate = args.strip_prefix("originate ").unwrap_or(args);
                // What mod_commands' originate answers: `+OK <uuid>` once the leg answers,
                // `-ERR <cause>` when it cannot.
                let result = if originate.contains("nowhere") {
                    "-ERR NO_ROUTE_DESTINATION\n".to_owned()
                } else {
                    let call = uuid::Uuid::new_v4().to_string();
                    switch.calls.lock().push((job.clone(), call.clone()));
                    format!("+OK {call}\n")
                };
                out.push(wire.background_job(&job, originate, &result));
            }
            "exit" => out.push(command_reply("+OK bye")),
            _ => out.push(command_reply("-ERR command not found")),
        }
        if writer.write_all(&out.concat()).await.is_err() {
            return;
        }
    }
}

/// The body FreeSWITCH's `api` gives for these commands (texts of `mod_commands.c`).
fn api_answer(command: &str, channels_json: &str) -> String {
    let args: Vec<&str> = command.split(' ').collect();
    let known = |uuid: Option<&&str>| uuid == Some(&CALL);
    match args.first().copied() {
        Some("show") if command == "show channels as json" => channels_json.to_owned(),
        Some("status") => {
            "UP 0 years, 0 days\nFreeSWITCH (Version 1.10.12-release  64bit) is ready\n".into()
        }
        Some("uuid_kill") if known(args.get(1)) => "+OK\n".into(),
        Some("uuid_kill") => "-ERR No such channel!\n".into(),
        Some("uuid_broadcast") if args.len() < 3 => {
            "-USAGE: <uuid> <path> [aleg|bleg|holdb|both]\n".into()
        }
        Some("uuid_broadcast") if known(args.get(1)) => "+OK Message sent\n".into(),
        Some("uuid_broadcast") => "-ERR invalid uuid\n".into(),
        Some("uuid_transfer") if known(args.get(1)) => "+OK\n".into(),
        Some("uuid_transfer") => "-ERR No such channel!\n".into(),
        Some(other) => format!("-ERR {other} Command not found!\n"),
        None => "-ERR no reply\n".into(),
    }
}

// ---------------------------------------------------------------------------------------
// The capture

/// `esl-replay capture` in front of a switch, with its HTTP server on a free port of
/// 127.0.0.1.
struct Capture {
    child: Child,
    http: String,
    dir: tempfile::TempDir,
}

impl Capture {
    fn start(switch: &Switch, extra: &[&str], env: &[(&str, &str)]) -> Capture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        // A bare port: the capture binds it on 127.0.0.1.
        let port = free_port().to_string();
        let http = format!("127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_esl-replay"));
        command
            .args(["capture", "--no-pack", "--esl"])
            .arg(format!("pbx-a={}", switch.address))
            .arg("--store")
            .arg(dir.path().join("store"))
            .args(["--http", &port, "--token-file"])
            .arg(dir.path().join("token"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("capture.log")).unwrap());
        for name in [
            "ESL_PASSWORD",
            "ESL_REPLAY_TOKEN",
            "ESL_REPLAY_JWT_SECRET",
            "ESL_REPLAY_STORE",
            "ESL_REPLAY_CHECKPOINT_DIR",
        ] {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let child = command.spawn().unwrap();
        Capture { child, http, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("capture.log")).unwrap_or_default()
    }

    /// Waits until the HTTP server answers.
    async fn wait_http(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(&self.http).await.is_err() {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "the capture exited: {}",
                self.log()
            );
            assert!(Instant::now() < deadline, "no HTTP server: {}", self.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `/health` says every node is ready.
    async fn wait_ready(&mut self) {
        self.wait_http().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.get("/health", None).await.0 != 200 {
            assert!(Instant::now() < deadline, "never ready: {}", self.log());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn get(&self, path: &str, auth: Option<&str>) -> (u16, String) {
        http(&self.http, "GET", path, auth, None).await
    }

    async fn post(&self, path: &str, auth: Option<&str>, body: &str) -> (u16, String) {
        http(&self.http, "POST", path, auth, Some(body)).await
    }

    /// Stops the capture (SIGTERM: it drains and syncs its store) and reads the store.
    fn stop(mut self) -> Vec<esl_replay::record::Record> {
        let signalled = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(signalled.success());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{}", self.log());
        let store =
            esl_replay::store::open_read_only(&self.dir.path().join("store"), None).unwrap();
        store
            .read_from_cursor(&ReadCursor::new(0, None), 100_000, &Criteria::any())
            .unwrap()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request (`Connection: close`); the status and the body.
async fn http(
    address: &str,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    if let Some(credential) = auth {
        request.push_str(&format!("Authorization: Bearer {credential}\r\n"));
    }
    let body = body.unwrap_or_default();
    request.push_str(&format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    ));
    let mut socket = TcpStream::connect(address).await.unwrap();
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    socket.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// Polls `done` until it holds (a minute at most: a hang fails instead of blocking).
async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn jwt(secret: &str, expires_in: i64) -> String {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + expires_in;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "backend", "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A started switch and a ready capture in front of it, or `None` without the recordings.
async fn ready_pair(extra: &[&str]) -> Option<(Arc<Switch>, Capture)> {
    let wire = Wire::load(&recordings()?);
    let switch = Switch::start(wire).await;
    let mut capture = Capture::start(&switch, extra, &[]);
    capture.wait_ready().await;
    Some((switch, capture))
}

// ---------------------------------------------------------------------------------------
// The tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn originate_goes_out_as_bgapi_and_its_job_brings_the_call_uuid() {
    let Some((switch, capture)) = ready_pair(&[]).await else {
        return;
    };
    switch.controls.finish_jobs.send_replace(false);
    let request = json!({
        "endpoint": "loopback/9664",
        "application": "park",
        "caller_id_number": "5001",
        "timeout_seconds": 30,
    })
    .to_string();
    let (status, body) = capture
        .post("/api/v1/fs/originate", Some(TOKEN), &request)
        .await;
    assert_eq!(status, 202, "{body}");
    let accepted = json_of(&body);
    let job = accepted["job_uuid"].as_str().unwrap().to_owned();
    assert_eq!(accepted["status"], "pending");
    assert_eq!(accepted["node"], "pbx-a");
    let sent = switch.received("bgapi ");
    assert_eq!(
        sent,
        vec![(
            "bgapi originate {origination_caller_id_number=5001,originate_timeout=30}loopback/9664 &park()"
                .to_owned(),
            Some(job.clone())
        )]
    );
    let (status, body) = capture
        .get(&format!("/api/v1/fs/jobs/{job}"), Some(TOKEN))
        .await;
    assert_eq!(
        (status, json_of(&body)["status"].clone()),
        (200, json!("pending"))
    );

    // The switch answers the call: the BACKGROUND_JOB settles the job.
    switch.controls.finish_jobs.send_replace(true);
    let mut document = Value::Null;
    let deadline = Instant::now() + Duration::from_secs(60);
    while document["status"] != "completed" {
        assert!(
            Instant::now() < deadline,
            "the job never completed: {document}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (status, body) = capture
            .get(&format!("/api/v1/fs/jobs/{job}"), Some(TOKEN))
            .await;
        assert_eq!(status, 200, "{body}");
        document = json_of(&body);
    }
    let call = switch.calls.lock()[0].clone();
    assert_eq!(call.0, job);
    assert_eq!(document["call_uuid"], json!(call.1));
    assert_eq!(document["result"], json!(format!("+OK {}", call.1)));

    // `?wait=true` answers once the job is done; a failed originate says why.
    let (status, body) = capture
        .post(
            "/api/v1/fs/originate?wait=true",
            Some(TOKEN),
            r#"{"destination": "loopback/9665", "extension": "1000", "context": "default"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let waited = json_of(&body);
    assert_eq!(waited["status"], "completed");
    let made = switch.calls.lock()[1].clone();
    assert_eq!(waited["call_uuid"], json!(made.1));
    assert_eq!(
        switch.received("bgapi ")[1].0,
        "bgapi originate loopback/9665 1000 XML default"
    );
    let (status, body) = capture
        .post(
            "/api/v1/fs/originate?wait=true",
            Some(TOKEN),
            r#"{"endpoint": "loopback/nowhere", "application": "park"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let failed = json_of(&body);
    assert_eq!(
        (
            failed["status"].clone(),
            failed["error"].clone(),
            failed["call_uuid"].clone()
        ),
        (json!("failed"), json!("NO_ROUTE_DESTINATION"), Value::Null)
    );
    let (status, _) = capture
        .get(
            &format!("/api/v1/fs/jobs/{}", uuid::Uuid::new_v4()),
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, 404);

    // The command and its outcome are in the store, as the capture records every frame.
    let records = capture.stop();
    let with = |artifact: &str, text: &str| {
        records.iter().any(|r| {
            r.artifact_name() == artifact
                && r.payload()["raw_payload"]
                    .as_str()
                    .is_some_and(|raw| raw.contains(text))
        })
    };
    assert!(with(
        "bgapi.dispatch",
        "bgapi originate {origination_caller_id_number=5001"
    ));
    assert!(with("bgapi.complete", &format!("+OK {}", call.1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_hangup_play_and_transfer_send_the_matching_api_commands() {
    let Some((switch, capture)) = ready_pair(&[]).await else {
        return;
    };
    let (status, body) = capture.get("/api/v1/fs/channels", Some(TOKEN)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, switch.channels_json, "the switch's JSON as it is");
    assert_eq!(
        switch.received("api show")[0].0,
        "api show channels as json"
    );

    let (status, body) = capture
        .post(
            &format!("/api/v1/fs/hangup/{CALL}"),
            Some(TOKEN),
            r#"{"cause": "user_busy"}"#,
        )
        .await;
    assert_eq!(
        (status, json_of(&body)["reply"].clone()),
        (200, json!("+OK")),
        "{body}"
    );
    let other = uuid::Uuid::new_v4().to_string();
    let (status, body) = capture
        .post(&format!("/api/v1/fs/hangup/{other}"), Some(TOKEN), "")
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(json_of(&body)["reply"], "-ERR No such channel!");
    assert_eq!(
        switch.received("api uuid_kill"),
        vec![
            (format!("api uuid_kill {CALL} USER_BUSY"), None),
            (format!("api uuid_kill {other}"), None)
        ]
    );

    let (status, body) = capture
        .post(
            &format!("/api/v1/fs/play/{CALL}"),
            Some(TOKEN),
            r#"{"path": "/usr/share/freeswitch/sounds/hello.wav", "leg": "both"}"#,
        )
        .await;
    assert_eq!(
        (status, json_of(&body)["reply"].clone()),
        (200, json!("+OK Message sent")),
        "{body}"
    );
    assert_eq!(
        switch.received("api uuid_broadcast")[0].0,
        format!("api uuid_broadcast {CALL} /usr/share/freeswitch/sounds/hello.wav both")
    );

    let (status, body) = capture
        .post(
            &format!("/api/v1/fs/transfer/{CALL}"),
            Some(TOKEN),
            r#"{"destination": "1000", "dialplan": "XML", "context": "default", "leg": "bleg"}"#,
        )
        .await;
    assert_eq!(
        (status, json_of(&body)["reply"].clone()),
        (200, json!("+OK")),
        "{body}"
    );
    assert_eq!(
        switch.received("api uuid_transfer")[0].0,
        format!("api uuid_transfer {CALL} -bleg 1000 XML default")
    );

    // The ADR's metric names, beside ours, with the commands counted once under both.
    let (status, metrics) = capture.get("/metrics", None).await;
    assert_eq!(status, 200);
    for name in [
        "fs_esl_commands_total{node=\"pbx-a\"} 5",
        "esl_capture_commands_total{node=\"pbx-a\"} 5",
        // `-ERR No such channel!` is the one error.
        "fs_esl_errors_total{node=\"pbx-a\"} 1",
        "fs_esl_command_latency_ms_count 5",
        "fs_esl_command_latency_ms_bucket{le=",
        "fs_esl_connection_uptime_seconds{node=\"pbx-a\"}",
        "fs_esl_reconnects_total{node=\"pbx-a\"} 0",
        "esl_capture_reconnects_total{node=\"pbx-a\"} 0",
        "fs_esl_event_publish_lag_ms_bucket{le=",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    let uptime: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fs_esl_connection_uptime_seconds{node=\"pbx-a\"} "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(uptime > 0.0, "{uptime}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_with_400_and_nothing_reaches_the_switch() {
    let Some((switch, capture)) = ready_pair(&[]).await else {
        return;
    };
    let before = switch.log.lock().len();
    let refused = [
        (
            "/api/v1/fs/originate",
            r#"{"endpoint": "loopback/1\napi fsctl shutdown", "application": "park"}"#,
            "endpoint",
        ),
        (
            "/api/v1/fs/originate",
            r#"{"endpoint": "loopback/1 &park()", "application": "park"}"#,
            "endpoint",
        ),
        (
            "/api/v1/fs/originate",
            r#"{"endpoint": "loopback/1", "application": "park", "caller_id_name": "x',y='z"}"#,
            "caller_id_name",
        ),
        (
            "/api/v1/fs/originate",
            r#"{"endpoint": "loopback/1", "application": "park", "variables": {"a": "1,origination_uuid=x"}}"#,
            "variables.a",
        ),
        (
            "/api/v1/fs/originate",
            r#"{"endpoint": "loopback/1", "application": "park", "colour": "blue"}"#,
            "body",
        ),
        (
            "/api/v1/fs/originate",
            r#"{"endpoint": "loopback/1"}"#,
            "application",
        ),
        ("/api/v1/fs/originate", "not json", "body"),
        (
            "/api/v1/fs/originate?wait=soon",
            r#"{"endpoint": "loopback/1", "application": "park"}"#,
            "wait",
        ),
        (
            "/api/v1/fs/originate?verbose=1",
            r#"{"endpoint": "loopback/1", "application": "park"}"#,
            "query",
        ),
        ("/api/v1/fs/hangup/not-a-uuid", "", "call_uuid"),
        (
            "/api/v1/fs/hangup/34fe0fef-0da1-4be0-8920-2cf9b184269b%0Aapi%20fsctl",
            "",
            "call_uuid",
        ),
        (
            &format!("/api/v1/fs/hangup/{CALL}"),
            r#"{"cause": "BUSY"}"#,
            "cause",
        ),
        (
            &format!("/api/v1/fs/play/{CALL}"),
            r#"{"path": "/tmp/a.wav\r\nexit"}"#,
            "path",
        ),
        (
            &format!("/api/v1/fs/play/{CALL}"),
            r#"{"path": "/tmp/a.wav", "leg": "third"}"#,
            "body",
        ),
        (
            &format!("/api/v1/fs/transfer/{CALL}"),
            r#"{"destination": "1000 XML evil"}"#,
            "destination",
        ),
        (
            &format!("/api/v1/fs/transfer/{CALL}"),
            r#"{"destination": "-both"}"#,
            "destination",
        ),
    ];
    for (path, body, field) in refused {
        let (status, answer) = capture.post(path, Some(TOKEN), body).await;
        assert_eq!(status, 400, "{path} {body}: {answer}");
        let answer = json_of(&answer);
        assert_eq!(answer["field"], field, "{path} {body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().starts_with(field),
            "{answer}"
        );
    }
    let huge = format!(
        r#"{{"endpoint": "loopback/1", "application": "park", "caller_id_name": "{}"}}"#,
        "x".repeat(70_000)
    );
    let (status, answer) = capture
        .post("/api/v1/fs/originate", Some(TOKEN), &huge)
        .await;
    assert_eq!(status, 413, "{answer}");
    assert!(json_of(&answer)["error"].is_string());
    let (status, answer) = capture
        .get("/api/v1/fs/channels?node=nope", Some(TOKEN))
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer.contains("unknown node"), "{answer}");
    // A good request after them is the first command the switch gets since the handshake.
    let (status, _) = capture
        .post(&format!("/api/v1/fs/hangup/{CALL}"), Some(TOKEN), "")
        .await;
    assert_eq!(status, 200);
    let log = switch.log.lock().clone();
    assert_eq!(log[before..].len(), 1, "{log:?}");
    assert_eq!(log[before].line, format!("api uuid_kill {CALL}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_the_token_or_a_valid_jwt_get_401() {
    let Some(dir) = recordings() else {
        return;
    };
    let switch = Switch::start(Wire::load(&dir)).await;
    let mut capture = Capture::start(&switch, &[], &[("ESL_REPLAY_JWT_SECRET", JWT_SECRET)]);
    capture.wait_ready().await;
    let channels = "/api/v1/fs/channels";
    let refused = [
        None,
        Some("wrong".to_owned()),
        Some(jwt("another-secret", 600)),
        Some(jwt(JWT_SECRET, -3600)),
    ];
    for credential in &refused {
        let (status, body) = capture.get(channels, credential.as_deref()).await;
        assert_eq!(status, 401, "{credential:?}: {body}");
        assert!(json_of(&body)["error"].is_string());
        let (status, _) = capture
            .post(
                &format!("/api/v1/fs/hangup/{CALL}"),
                credential.as_deref(),
                "",
            )
            .await;
        assert_eq!(status, 401);
    }
    assert!(switch.received("api").is_empty());
    assert_eq!(capture.get(channels, Some(TOKEN)).await.0, 200);
    assert_eq!(
        capture.get(channels, Some(&jwt(JWT_SECRET, 600))).await.0,
        200
    );
    // The older gateway routes take the JWT too.
    let (status, body) = capture
        .post(
            "/v1/api",
            Some(&jwt(JWT_SECRET, 600)),
            r#"{"command": "status"}"#,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jwt_secret_file_alone_authorises_jwts() {
    let Some(dir) = recordings() else {
        return;
    };
    let switch = Switch::start(Wire::load(&dir)).await;
    let secrets = tempfile::tempdir().unwrap();
    let secret_file = secrets.path().join("jwt.secret");
    std::fs::write(&secret_file, format!("{JWT_SECRET}\n")).unwrap();
    let mut capture = Capture::start(
        &switch,
        &["--jwt-secret-file", secret_file.to_str().unwrap()],
        &[],
    );
    capture.wait_ready().await;
    let (status, body) = capture
        .get("/api/v1/fs/channels", Some(&jwt(JWT_SECRET, 600)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        capture
            .get("/api/v1/fs/channels", Some(&jwt("x", 600)))
            .await
            .0,
        401
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_get_503_until_the_node_is_ready() {
    let Some(dir) = recordings() else {
        return;
    };
    let switch = Switch::start(Wire::load(&dir)).await;
    // The switch accepts the connection but does not greet: the session is not ready.
    switch.controls.greet.send_replace(false);
    let mut capture = Capture::start(&switch, &[], &[]);
    capture.wait_http().await;
    let (status, body) = capture.get("/health", None).await;
    assert_eq!(status, 503, "{body}");
    for _ in 0..2 {
        let (status, body) = capture.get("/api/v1/fs/channels", Some(TOKEN)).await;
        assert_eq!(status, 503, "{body}");
        assert!(
            json_of(&body)["error"]
                .as_str()
                .unwrap()
                .contains("not ready"),
            "{body}"
        );
        let (status, _) = capture
            .post(
                "/api/v1/fs/originate",
                Some(TOKEN),
                r#"{"endpoint": "loopback/9664", "application": "park"}"#,
            )
            .await;
        assert_eq!(status, 503);
    }
    assert!(switch.received("auth").is_empty());
    switch.controls.greet.send_replace(true);
    capture.wait_ready().await;
    assert_eq!(capture.get("/api/v1/fs/channels", Some(TOKEN)).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_beyond_the_in_flight_bound_get_429() {
    let Some((switch, capture)) = ready_pair(&["--max-commands-in-flight", "2"]).await else {
        return;
    };
    switch.controls.answer_api.send_replace(false);
    let held: Vec<_> = (0..2)
        .map(|_| {
            let address = capture.http.clone();
            tokio::spawn(async move {
                http(&address, "GET", "/api/v1/fs/channels", Some(TOKEN), None)
                    .await
                    .0
            })
        })
        .collect();
    switch.wait_received("api show channels", 2).await;
    let (status, body) = capture.get("/api/v1/fs/channels", Some(TOKEN)).await;
    assert_eq!(status, 429, "{body}");
    assert!(
        json_of(&body)["error"]
            .as_str()
            .unwrap()
            .contains("2 commands"),
        "{body}"
    );
    assert_eq!(
        switch.received("api show channels").len(),
        2,
        "the third was not sent"
    );
    switch.controls.answer_api.send_replace(true);
    for request in held {
        assert_eq!(request.await.unwrap(), 200);
    }
    assert_eq!(capture.get("/api/v1/fs/channels", Some(TOKEN)).await.0, 200);
}

/// The command latency through the whole REST path (HTTP, the capture, the switch and
/// back) against the scripted switch, printed (`--nocapture`), not asserted; beside it the
/// p95 of `fs_esl_command_latency_ms` (the ESL round trip alone) read from its buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_latency_through_the_rest_path_is_measured() {
    let Some((_switch, capture)) = ready_pair(&[]).await else {
        return;
    };
    let mut took = Vec::new();
    for n in 0..600 {
        let started = Instant::now();
        let (status, body) = if n % 2 == 0 {
            capture.get("/api/v1/fs/channels", Some(TOKEN)).await
        } else {
            capture
                .post(
                    &format!("/api/v1/fs/hangup/{CALL}"),
                    Some(TOKEN),
                    r#"{"cause": "NORMAL_CLEARING"}"#,
                )
                .await
        };
        took.push(started.elapsed());
        assert_eq!(status, 200, "{body}");
    }
    took.sort();
    let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
    let (_, metrics) = capture.get("/metrics", None).await;
    eprintln!(
        "REST command latency over {} calls: p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms; fs_esl_command_latency_ms p95 ≤ {} ms",
        took.len(),
        at(0.50).as_secs_f64() * 1e3,
        at(0.95).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        took[took.len() - 1].as_secs_f64() * 1e3,
        histogram_quantile(&metrics, "fs_esl_command_latency_ms", 0.95)
    );
}

/// The upper bound of the bucket holding quantile `q` of a histogram in an exposition.
fn histogram_quantile(metrics: &str, name: &str, q: f64) -> String {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(String, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0.0, |(_, c)| *c);
    buckets
        .iter()
        .find(|(_, count)| *count >= total * q)
        .map_or_else(|| "?".into(), |(le, _)| le.clone())
}

/// The publish lag is observed for what the in-process forwarder delivers to a real
/// `redis-server` (skipped when it is not installed, except under `CI=true`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_lag_is_observed_for_records_forwarded_to_redis() {
    let Some(dir) = recordings() else {
        return;
    };
    let Some(redis) = Redis::start() else {
        return;
    };
    let switch = Switch::start(Wire::load(&dir)).await;
    let checkpoints = tempfile::tempdir().unwrap();
    let url = redis.url();
    let mut capture = Capture::start(
        &switch,
        &[
            "--forward-redis",
            &url,
            "--checkpoint-dir",
            checkpoints.path().to_str().unwrap(),
        ],
        &[],
    );
    capture.wait_ready().await;
    assert_eq!(capture.get("/api/v1/fs/channels", Some(TOKEN)).await.0, 200);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, metrics) = capture.get("/metrics", None).await;
        let count: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("fs_esl_event_publish_lag_ms_count "))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        // The handshake, the command and its reply: at least six records delivered.
        if count >= 6.0 {
            eprintln!(
                "fs_esl_event_publish_lag_ms over {count} records: p95 ≤ {} ms",
                histogram_quantile(&metrics, "fs_esl_event_publish_lag_ms", 0.95)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no publish lag observed:\n{metrics}\n{}",
            capture.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `redis-server` on a free port in a temporary directory, stopped on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Option<Redis> {
        let binary = [
            "/usr/bin/redis-server",
            "/usr/local/bin/redis-server",
            "/usr/sbin/redis-server",
        ]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
        let Some(binary) = binary else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but redis-server is not installed"
            );
            eprintln!("SKIPPED: redis-server is not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis {
            child,
            port,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
