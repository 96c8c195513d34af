//! A FreeSWITCH-compatible inbound ESL server: replay a store, or simulate FreeSWITCH.
//!
//! The server speaks FreeSWITCH's side of the inbound Event Socket protocol
//! (esl-protocol.md §1), so any ESL client library connects to it as to a real switch:
//!
//! - `command`: the client's commands, cut from the byte stream ([`CommandDecoder`]) and
//!   classified ([`Command`]);
//! - `wire`: the frames FreeSWITCH writes, with its exact reply texts and encodings;
//! - `event`: one deliverable event ([`ServedEvent`]) and its plain/JSON/XML renderings;
//! - `subscription`: a listener's `event`/`nixevent`/`noevents`/`myevents`/`filter` state;
//! - [`Traffic`] and [`Feed`]: where events and api answers come from; two implementations:
//!   [`StoreReplay`] streams a store's `event.raw` records (paced or as fast as possible,
//!   looping, resumable from a checkpoint) and answers `api`/`bgapi` from recorded
//!   replies; [`Simulator`] generates realistic FreeSWITCH traffic from pre-rendered
//!   templates;
//! - `core_api`: the core API commands clients send on their own (`status`, `switchname`,
//!   `show channels`, `console_complete`, ...), answered from the served switch.
//!
//! [`spawn`] runs a server on a bound listener and returns a [`RunningServer`] handle
//! (address, figures, graceful shutdown with the FreeSWITCH shutdown notice, or an abrupt
//! abort that simulates a crash). Every connection is served by its own task; each
//! listener gets its own feed, started at its first subscription.
//!
//! The server uses `esl` (event decoding), `record`, `store` and `checkpoint`.

mod command;
mod connection;
mod core_api;
mod error;
mod event;
mod replay;
mod simulator;
mod subscription;
mod traffic;
mod wire;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::storage::error_chain;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use command::{
    ClientCommand, Command, CommandDecoder, EventFormat, MAX_UNAUTHENTICATED_COMMAND,
};
pub use error::Error;
pub use event::ServedEvent;
pub use replay::{ReplayOptions, ReplaySummary, StoreReplay};
pub use simulator::{Simulator, SimulatorConfig};
pub use traffic::{ApiAnswer, Feed, FeedItem, Traffic};

/// FreeSWITCH's default event-socket password.
pub const DEFAULT_PASSWORD: &str = "ClueCon";

/// How long an unauthenticated connection may stay silent (FreeSWITCH: 25 s).
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(25);

/// How long a wrong `auth` waits before `-ERR invalid` and the close: one guess per
/// connection and second, so a password cannot be guessed at network speed.
pub const DEFAULT_AUTH_FAILURE_DELAY: Duration = Duration::from_secs(1);

/// How many connections a server serves at once by default; one more is refused with a
/// `text/rude-rejection` frame naming the limit, then the disconnect notice.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// How long a graceful shutdown waits for connections to finish writing.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings shared by every connection of a server. `Debug` never shows the password.
#[derive(Clone)]
pub struct ServerConfig {
    password: String,
    auth_timeout: Duration,
    auth_failure_delay: Duration,
    max_connections: usize,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("password", &"<redacted>")
            .field("auth_timeout", &self.auth_timeout)
            .field("auth_failure_delay", &self.auth_failure_delay)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self::new(DEFAULT_PASSWORD)
    }
}

impl ServerConfig {
    /// A configuration expecting `password` in `auth`.
    #[must_use]
    pub fn new(password: impl Into<String>) -> Self {
        Self {
            password: password.into(),
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            auth_failure_delay: DEFAULT_AUTH_FAILURE_DELAY,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    /// Sets how long a wrong password waits before its `-ERR invalid` and the close.
    #[must_use]
    pub fn with_auth_failure_delay(mut self, delay: Duration) -> Self {
        self.auth_failure_delay = delay;
        self
    }

    /// Sets how long a connection may stay unauthenticated (default
    /// [`DEFAULT_AUTH_TIMEOUT`]): it is closed, with the disconnect notice, if it has not
    /// authenticated that long after it was accepted, whatever it sent meanwhile.
    #[must_use]
    pub fn with_auth_timeout(mut self, timeout: Duration) -> Self {
        self.auth_timeout = timeout;
        self
    }

    /// Sets how many connections are served at once (default [`DEFAULT_MAX_CONNECTIONS`];
    /// 0 is taken as 1). A connection accepted beyond it gets a `text/rude-rejection` frame
    /// naming the limit and the disconnect notice, and is closed.
    #[must_use]
    pub fn with_max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }
}

/// Counters of a running server.
#[derive(Debug, Default)]
pub(crate) struct ServerStats {
    pub(crate) connections: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    /// Connections being served now (accepted, task not yet ended).
    pub(crate) connections_open: AtomicU64,
    pub(crate) events_sent: AtomicU64,
    pub(crate) bytes_written: AtomicU64,
    pub(crate) auth_failures: AtomicU64,
}

/// A snapshot of a server's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerFigures {
    /// Connections accepted and served.
    pub connections: u64,
    /// Connections refused because the server already served its maximum.
    pub connections_refused: u64,
    /// Connections being served now.
    pub connections_open: u64,
    /// Event frames written to client sockets (all connections).
    pub events_sent: u64,
    /// Bytes written (all connections).
    pub bytes_written: u64,
    /// Failed authentications.
    pub auth_failures: u64,
}

/// How connections are told to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stop {
    Running,
    /// Send the shutdown disconnect notice, then close.
    Graceful,
    /// Close at once, without a notice (a crash, as far as clients can tell).
    Abort,
}

/// A server running on the tokio runtime; dropping it aborts the server.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    stop: watch::Sender<Stop>,
    stats: Arc<ServerStats>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl RunningServer {
    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's counters so far.
    #[must_use]
    pub fn figures(&self) -> ServerFigures {
        ServerFigures {
            connections: self.stats.connections.load(Ordering::Relaxed),
            connections_refused: self.stats.connections_refused.load(Ordering::Relaxed),
            connections_open: self.stats.connections_open.load(Ordering::Relaxed),
            events_sent: self.stats.events_sent.load(Ordering::Relaxed),
            bytes_written: self.stats.bytes_written.load(Ordering::Relaxed),
            auth_failures: self.stats.auth_failures.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, sends every client FreeSWITCH's shutdown disconnect notice, and
    /// waits until every connection is closed; connections still busy writing to a client
    /// that does not read after [`SHUTDOWN_GRACE`] are closed at once.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(Stop::Graceful);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
            let _ = task.await;
        }
    }

    /// Stops at once: the listener and every connection are closed without a notice, as
    /// if the switch had crashed.
    pub async fn abort(mut self) {
        let _ = self.stop.send(Stop::Abort);
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Waits until the server stops (it runs until [`RunningServer::shutdown`] or
    /// [`RunningServer::abort`] is called from another handle-owning task).
    pub async fn wait(&mut self) {
        if let Some(task) = self.task.as_mut() {
            let _ = task.await;
            self.task = None;
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Serves `traffic` on `listener` until the returned handle stops it. Must be called from
/// within a tokio runtime.
///
/// # Errors
///
/// [`Error::Io`] if the listener's address cannot be read.
pub fn spawn(
    listener: TcpListener,
    config: ServerConfig,
    traffic: Arc<dyn Traffic>,
) -> Result<RunningServer, Error> {
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(Stop::Running);
    let stats = Arc::new(ServerStats::default());
    let config = Arc::new(config);
    let task = tokio::spawn(accept_loop(
        listener,
        config,
        traffic,
        Arc::clone(&stats),
        stop_rx,
    ));
    Ok(RunningServer {
        addr,
        stop: stop_tx,
        stats,
        task: Some(task),
    })
}

async fn accept_loop(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    traffic: Arc<dyn Traffic>,
    stats: Arc<ServerStats>,
    mut stop: watch::Receiver<Stop>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() != Stop::Running {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, peer))
                    if stats.connections_open.load(Ordering::Relaxed)
                        >= config.max_connections as u64 =>
                {
                    stats.connections_refused.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%peer, limit = config.max_connections, "esl connection refused: the server already serves its maximum number of connections");
                    refuse(&stream, config.max_connections);
                }
                Ok((stream, peer)) => {
                    stats.connections.fetch_add(1, Ordering::Relaxed);
                    let open = OpenConnection::new(Arc::clone(&stats));
                    let _ = stream.set_nodelay(true);
                    tracing::info!(%peer, "esl client connected");
                    let task = connection::serve_connection(
                        stream,
                        Arc::clone(&config),
                        Arc::clone(&traffic),
                        Arc::clone(&stats),
                        stop.clone(),
                    );
                    connections.spawn(async move {
                        let _open = open;
                        if let Err(error) = task.await {
                            tracing::info!(%peer, error = %error_chain(&error), "esl connection ended with an error");
                        } else {
                            tracing::info!(%peer, "esl client disconnected");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    if *stop.borrow() == Stop::Abort {
        connections.abort_all();
    }
    while connections.join_next().await.is_some() {}
}

/// Counts a connection as open from its accept until its task ends (or is aborted).
struct OpenConnection(Arc<ServerStats>);

impl OpenConnection {
    fn new(stats: Arc<ServerStats>) -> Self {
        stats.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(stats)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Tells a connection beyond the limit why it is closed: a `text/rude-rejection` frame
/// naming the limit, then the disconnect notice (as FreeSWITCH answers a peer its ACL
/// refuses). Written without waiting: what the socket does not take at once is dropped, so
/// a refused client never holds the accept loop.
fn refuse(stream: &tokio::net::TcpStream, limit: usize) {
    let mut out = bytes::BytesMut::new();
    wire::rude_rejection(&mut out, &wire::too_many_connections_body(limit));
    wire::disconnect_notice(&mut out, wire::DISCONNECT_BODY);
    let _ = stream.try_write(&out);
}
