//! Helpers for the Redis routing tests: a real `redis-server` on a free 127.0.0.1 port
//! (skipped, saying so, when absent; required when `CI=true`), the built-in simulator on a
//! runtime of its own, a library capture that sends bgapi jobs through its gateway, and
//! readers for the streams and for the events a store holds.

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use esl_replay::capture::{Capture, CaptureOptions, GatewayCommand, NodeConfig, NodeSpec};
use esl_replay::record::{Criteria, ReadCursor, Record};
use esl_replay::server::{RunningServer, ServerConfig, Simulator, SimulatorConfig};
use esl_replay::store;

pub(crate) use super::forward::free_port;

pub(crate) use super::wait_until;

/// A `redis-server` without persistence in a temporary directory, killed on drop.
pub(crate) struct Redis {
    child: Child,
    pub(crate) port: u16,
    /// What clients must authenticate with, if anything.
    password: Option<String>,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one, or returns `None` (after saying so) when the binary is missing, unless
    /// `CI=true`, where the tests must run.
    pub(crate) fn start() -> Option<Redis> {
        Redis::start_with(None)
    }

    /// As [`Redis::start`], requiring clients to authenticate with `password`.
    pub(crate) fn start_with(password: Option<&str>) -> Option<Redis> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let binary = std::env::split_paths(&path)
            .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin"].map(PathBuf::from))
            .map(|dir| dir.join("redis-server"))
            .find(|candidate| candidate.is_file());
        let Some(binary) = binary else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "redis-server is required under CI=true"
            );
            eprintln!("SKIPPED: redis-server is not installed (apt-get install -y redis-server)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut command = Command::new(binary);
        command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir.path());
        if let Some(password) = password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let redis = Redis {
            child,
            port,
            password: password.map(str::to_owned),
            _dir: dir,
        };
        wait_until("redis-server to accept connections", || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(redis)
    }

    /// Its URL, without the password.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// An authenticated connection to database `db`.
    pub(crate) fn connection(&self, db: u8) -> redis::Connection {
        let secret = self
            .password
            .as_ref()
            .map_or_else(String::new, |password| format!(":{password}@"));
        let url = format!("redis://{secret}127.0.0.1:{}/{db}", self.port);
        redis::Client::open(url).unwrap().get_connection().unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One stream entry: its id and its fields.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) fields: HashMap<String, String>,
}

impl Entry {
    /// The millisecond part of the entry id.
    pub(crate) fn millis(&self) -> u64 {
        self.id.split('-').next().unwrap().parse().unwrap()
    }

    pub(crate) fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }

    /// The append sequence of the forwarded record.
    pub(crate) fn sequence(&self) -> u64 {
        self.field("sequence").parse().unwrap()
    }
}

/// Every entry of a stream, in stream order (none if it does not exist).
pub(crate) fn read_stream(connection: &mut redis::Connection, key: &str) -> Vec<Entry> {
    let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(connection)
        .unwrap();
    reply
        .ids
        .into_iter()
        .map(|entry| Entry {
            fields: entry
                .map
                .iter()
                .map(|(k, v)| (k.clone(), redis::from_redis_value_ref(v).unwrap()))
                .collect(),
            id: entry.id,
        })
        .collect()
}

/// A captured event as the store holds it, read from its raw text (not through the
/// forwarder's code).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEvent {
    pub(crate) append_sequence: u64,
    pub(crate) name: String,
    pub(crate) event_sequence: u64,
    pub(crate) job_uuid: Option<String>,
}

/// Every record of the store at `path`.
pub(crate) fn stored_records(path: &Path) -> Vec<Record> {
    let store = store::open_read_only(path, None).unwrap();
    store
        .read_from_cursor(&ReadCursor::start(), usize::MAX, &Criteria::any())
        .unwrap()
}

/// The captured events (`event.raw` records) among `records`.
pub(crate) fn stored_events(records: &[Record]) -> Vec<StoredEvent> {
    records
        .iter()
        .filter(|record| record.artifact_name() == "event.raw")
        .map(|record| {
            let raw = record.payload()["raw_payload"].as_str().unwrap();
            let header = |name: &str| {
                raw.lines()
                    .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
                    .map(str::to_owned)
            };
            StoredEvent {
                append_sequence: record.append_sequence(),
                name: header("Event-Name").unwrap(),
                event_sequence: header("Event-Sequence").unwrap().parse().unwrap(),
                job_uuid: header("Job-UUID"),
            }
        })
        .collect()
}

/// The simulator (calls at `rate` events/s, `BACKGROUND_JOB` for every bgapi) on a runtime
/// of its own; the runtime is returned so that it lives as long as the caller needs.
pub(crate) fn simulator(rate: f64) -> (tokio::runtime::Runtime, RunningServer) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let running = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = SimulatorConfig {
            rate: Some(rate),
            ..SimulatorConfig::default()
        };
        Simulator::start(listener, ServerConfig::new("ClueCon"), config).unwrap()
    });
    (runtime, running)
}

/// Captures the switch at `esl` into the store at `path` (appending to what it holds) until
/// it holds at least `events` more captured events and the `BACKGROUND_JOB`s of `jobs`
/// bgapi commands sent through the capture's gateway; returns their Job-UUIDs.
pub(crate) fn capture(path: &Path, esl: &str, events: usize, jobs: usize) -> Vec<String> {
    let before = stored_events(&stored_records_or_none(path)).len();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = store::open(path, None).unwrap();
        let node = NodeSpec {
            slug: "pbx".into(),
            config: NodeConfig::new(esl.to_owned()),
        };
        let capture = Capture::start(vec![node], store, CaptureOptions::default()).unwrap();
        let gateway = capture.gateway();
        let mut job_uuids = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while job_uuids.len() < jobs {
            // Refused until the session is ready.
            match gateway
                .dispatch(None, GatewayCommand::BgApi("status".into()))
                .await
            {
                Ok(reply) => job_uuids.push(reply.job_uuid.unwrap()),
                Err(error) => {
                    assert!(Instant::now() < deadline, "bgapi never accepted: {error}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        loop {
            let stored = stored_events(&stored_records_or_none(path));
            let finished = job_uuids.iter().all(|job| {
                stored
                    .iter()
                    .any(|e| e.name == "BACKGROUND_JOB" && e.job_uuid.as_ref() == Some(job))
            });
            if finished && stored.len() >= before + events {
                break;
            }
            assert!(Instant::now() < deadline, "the capture stored too little");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        capture.shutdown().await.unwrap();
        job_uuids
    })
}

/// Every record of the store at `path`, or none before it exists.
fn stored_records_or_none(path: &Path) -> Vec<Record> {
    if path.exists() {
        stored_records(path)
    } else {
        Vec::new()
    }
}

/// A child process that a failing test does not leave behind: killed on drop.
pub(crate) struct Running(Option<Child>);

impl Running {
    pub(crate) fn new(child: Child) -> Running {
        Running(Some(child))
    }

    /// Stops it with SIGTERM (a graceful stop) and returns its output once it exited.
    pub(crate) fn terminate(mut self) -> std::process::Output {
        let child = self.0.take().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM {}", child.id());
        child.wait_with_output().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `esl-replay ARGS` with `envs` to its end; (exit code, stdout, stderr).
pub(crate) fn run_cli(args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_esl-replay"))
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `esl-replay ARGS` with `envs` and checks that it refuses to work: exit code 2, and
/// `reason` in what it says.
pub(crate) fn expect_refusal(args: &[&str], envs: &[(&str, &str)], reason: &str) {
    let (code, _, stderr) = run_cli(args, envs);
    assert_eq!(code, Some(2), "{args:?} {envs:?}: {stderr}");
    assert!(stderr.contains(reason), "{args:?} {envs:?}: {stderr}");
}
