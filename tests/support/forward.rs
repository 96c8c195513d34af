//! Helpers for the forwarding tests: real `redis-server` / `nats-server` processes on free
//! 127.0.0.1 ports in temporary directories (stopped on drop), a store that is appended to
//! in the background, forwarder child processes of the CLI binary, and a tiny HTTP getter
//! for the metrics endpoint.

use std::collections::BTreeSet;
use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use esl_replay::store::{ArtifactStore, dataset};

use super::process::{SpawnSafely as _, open_store};

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it soon after) that no
/// other caller in this process was given: the tests of a binary run at once, and a server
/// stopped for an outage must find its port unclaimed when it restarts.
pub(crate) fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if GIVEN
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(port)
        {
            return port;
        }
    }
}

/// The path of a server binary, looked up in PATH and the usual sbin directories.
pub(crate) fn find_binary(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Which server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Redis,
    Nats,
}

/// A server process on a fixed port and data directory; `stop` and `start` keep both, so
/// data survives a restart (Redis with an fsync-always AOF, NATS with its JetStream store).
#[derive(Debug)]
pub(crate) struct Server {
    kind: Kind,
    binary: PathBuf,
    pub(crate) port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Redis only: append-only file synced on every write (survives any stop).
    durable: bool,
}

impl Server {
    /// Starts a server, or returns `None` (after saying so) when its binary is missing.
    pub(crate) fn start(kind: Kind) -> Option<Server> {
        Server::start_with(kind, true)
    }

    /// As [`Server::start`]; `durable: false` runs Redis without persistence (benchmarks).
    pub(crate) fn start_with(kind: Kind, durable: bool) -> Option<Server> {
        let name = match kind {
            Kind::Redis => "redis-server",
            Kind::Nats => "nats-server",
        };
        let Some(binary) = find_binary(name) else {
            eprintln!(
                "SKIPPED: {name} is not installed (apt-get install -y redis-server nats-server)"
            );
            return None;
        };
        let mut server = Server {
            kind,
            binary,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
            durable,
        };
        server.restart();
        Some(server)
    }

    pub(crate) fn url(&self) -> String {
        match self.kind {
            Kind::Redis => format!("redis://127.0.0.1:{}", self.port),
            Kind::Nats => format!("nats://127.0.0.1:{}", self.port),
        }
    }

    /// Starts the process again (same port, same data) and waits until it accepts.
    pub(crate) fn restart(&mut self) {
        assert!(self.child.is_none(), "server already running");
        let port = self.port.to_string();
        let dir = self.dir.path();
        let mut command = Command::new(&self.binary);
        match self.kind {
            Kind::Redis => {
                command.args([
                    "--port",
                    &port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    if self.durable { "yes" } else { "no" },
                    "--appendfsync",
                    "always",
                    "--protected-mode",
                    "no",
                    "--daemonize",
                    "no",
                ]);
                command.arg("--dir").arg(dir);
                command.arg("--logfile").arg(dir.join("redis.log"));
            }
            Kind::Nats => {
                command.args(["-js", "-a", "127.0.0.1", "-p", &port]);
                command.arg("-sd").arg(dir.join("jetstream"));
                command.arg("-l").arg(dir.join("nats.log"));
            }
        }
        command.stdout(Stdio::null()).stderr(Stdio::null());
        let child = self.child.insert(command.spawn_safely().unwrap());
        let deadline = Instant::now() + Duration::from_secs(15);
        // Accepting is not enough: what accepts must be this process, not something else
        // that took the port.
        while TcpStream::connect(("127.0.0.1", self.port)).is_err()
            || child.try_wait().unwrap().is_some()
        {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{:?} on port {} exited ({status}); its log is in {}",
                    self.kind,
                    self.port,
                    dir.display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{:?} did not start on port {}",
                self.kind,
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the process gracefully (SIGTERM) and waits for it.
    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a signal (`TERM`, `INT`, ...) to a child process with kill(1).
pub(crate) fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status_safely()
        .unwrap();
    assert!(status.success(), "kill -{name} {} failed", child.id());
}

/// Appends `total` dataset records to a new log store at `dir` in batches of `batch`,
/// pausing `pause` between batches, on a background thread.
pub(crate) fn append_in_background(
    dir: &Path,
    total: u64,
    batch: u64,
    pause: Duration,
) -> JoinHandle<()> {
    let mut store = open_store(dir).unwrap();
    std::thread::spawn(move || {
        let mut n = 0;
        while n < total {
            let end = (n + batch).min(total);
            let envelopes = (n..end).map(dataset::envelope).collect();
            store.write_batch(envelopes).unwrap();
            n = end;
            std::thread::sleep(pause);
        }
        store.close().unwrap();
    })
}

/// Writes `total` dataset records to a new log store at `dir` at once.
pub(crate) fn fill_store(dir: &Path, total: u64) {
    let mut store = open_store(dir).unwrap();
    let mut n = 0;
    while n < total {
        let end = (n + 5000).min(total);
        store
            .write_batch((n..end).map(dataset::envelope).collect())
            .unwrap();
        n = end;
    }
    store.close().unwrap();
}

/// A forwarder child process: `esl-replay forward <args>`, stderr in `log`.
pub(crate) fn spawn_forwarder(args: &[String], log: &Path) -> Child {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(env!("CARGO_BIN_EXE_esl-replay"))
        .arg("forward")
        .args(args)
        .env("ESL_REPLAY_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn_safely()
        .unwrap()
}

/// Waits for a child to exit, killing it after `limit`.
pub(crate) fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("forwarder did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits for a child to exit and asserts it succeeded, showing its log otherwise.
pub(crate) fn expect_success(child: &mut Child, log: &Path) {
    let status = wait_exit(child, Duration::from_secs(90));
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        panic!("forwarder failed: {status}\n--- {}\n{text}", log.display());
    }
}

/// Runs a forwarder that must refuse to work: it exits with code 2 and says `reason`.
pub(crate) fn expect_refusal(args: &[String], log: &Path, reason: &str) {
    let mut child = spawn_forwarder(args, log);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));
    let stderr = std::fs::read_to_string(log).unwrap();
    assert!(stderr.contains(reason), "{stderr}");
}

/// The stdout of an exited child.
pub(crate) fn stdout_of(child: &mut Child) -> String {
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut text).unwrap();
    }
    text
}

/// `GET path` over HTTP/1.0; (status, body), or `None` if nothing listens yet.
pub(crate) fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The `/health` JSON of a forwarder's metrics endpoint.
pub(crate) fn health(port: u16) -> Option<(u16, serde_json::Value)> {
    let (status, body) = http_get(port, "/health")?;
    Some((status, serde_json::from_str(&body).ok()?))
}

/// Checks the delivery order of sequences as a target holds them, where `expected` records
/// (1..=expected) were forwarded: every sequence is present, and an entry either repeats an
/// already delivered sequence (a re-sent batch) or is the next new one, so first
/// deliveries are in append order with no gaps. Returns how many entries were repeats.
pub(crate) fn check_in_order_at_least_once(sequences: &[u64], expected: u64) -> u64 {
    let mut highest = 0;
    let mut repeats = 0;
    for (position, &sequence) in sequences.iter().enumerate() {
        if sequence <= highest {
            repeats += 1;
        } else {
            assert_eq!(
                sequence,
                highest + 1,
                "entry {position} delivers sequence {sequence} before {}",
                highest + 1
            );
            highest = sequence;
        }
    }
    assert_eq!(highest, expected, "the target ends at sequence {highest}");
    repeats
}

/// The sequence saved in a forwarder's checkpoint.
pub(crate) fn checkpoint_sequence(dir: &Path, key: &str) -> Option<u64> {
    let store = esl_replay::checkpoint::CheckpointStore::open(dir).unwrap();
    store
        .load(key)
        .unwrap()
        .map(|checkpoint| checkpoint.cursor().last_consumed_sequence())
}

/// What a forwarder's `/health` showed while its target was down.
#[derive(Debug)]
pub(crate) struct Outage {
    /// Whether `/health` answered 503 (the target failing).
    pub(crate) saw_503: bool,
    /// The most records waiting that `/health` reported.
    pub(crate) worst_lag_records: u64,
    /// The oldest waiting record's age at its worst, in seconds.
    pub(crate) worst_lag_seconds: f64,
    /// The last `/health` document of the outage.
    pub(crate) during: serde_json::Value,
}

/// Stops `server` and keeps it down until the forwarder's `/health` (on `metrics_port`)
/// shows the outage: failing, after `retries` retries, with records waiting for two seconds
/// and more. The caller starts the server again.
pub(crate) fn outage(server: &mut Server, metrics_port: u16, retries: u64) -> Outage {
    server.stop();
    let mut outage = Outage {
        saw_503: false,
        worst_lag_records: 0,
        worst_lag_seconds: 0.0,
        during: serde_json::Value::Null,
    };
    super::wait_until("the outage to show in /health", || {
        let Some((status, body)) = health(metrics_port) else {
            return false;
        };
        outage.saw_503 |= status == 503;
        let lag_records = body["lag_records"].as_u64().unwrap();
        outage.worst_lag_records = outage.worst_lag_records.max(lag_records);
        let lag_seconds = body["lag_seconds"].as_f64().unwrap();
        outage.worst_lag_seconds = outage.worst_lag_seconds.max(lag_seconds);
        let retried = body["retries"].as_u64().unwrap() >= retries;
        outage.during = body;
        outage.saw_503 && retried && outage.worst_lag_records > 0 && outage.worst_lag_seconds >= 2.0
    });
    outage
}

/// Waits until the forwarder on `metrics_port` has acknowledged `total` records and has
/// none waiting; returns that `/health` answer.
pub(crate) fn caught_up(metrics_port: u16, total: u64) -> (u16, serde_json::Value) {
    let mut last = None;
    super::wait_until("the forwarder to catch up", || {
        let (status, body) = health(metrics_port).unwrap();
        let done = body["acked_sequence"] == total && body["lag_records"] == 0;
        last = Some((status, body));
        done
    });
    last.unwrap()
}

/// A forwarder (`esl-replay forward <args> --follow`) serving `/health` and `/metrics` on a
/// free port, once it has acknowledged `records` records; with that port.
pub(crate) fn following_forwarder(args: &[String], log: &Path, records: u64) -> (Child, u16) {
    let metrics_port = free_port();
    let mut args = args.to_vec();
    args.extend([
        "--follow".to_owned(),
        "--metrics-listen".to_owned(),
        format!("127.0.0.1:{metrics_port}"),
    ]);
    let child = spawn_forwarder(&args, log);
    acknowledged(metrics_port, records);
    (child, metrics_port)
}

/// Waits until the forwarder on `metrics_port` has acknowledged `records` records.
pub(crate) fn acknowledged(metrics_port: u16, records: u64) {
    super::wait_until("records acknowledged", || {
        health(metrics_port)
            .is_some_and(|(_, body)| body["acked_sequence"].as_u64().unwrap_or(0) >= records)
    });
}
