//! How does one capture node stay connected to FreeSWITCH and hand every frame to the queue?
//!
//! [`run_node`] drives an [`esl::session::Session`](crate::esl::session::Session) over a
//! tokio TCP stream: connect (with a timeout), authenticate when greeted, restore the desired
//! subscriptions and filters, then read frames until the session closes. Each TCP connect
//! gets the next `connection_generation`; after a retryable close the node waits a capped
//! exponential backoff with full jitter ([`Backoff`]), never longer than a quarter of how
//! long the node has been down, and reconnects (handshake timeouts included). Attempts are
//! counted from the last connection that stayed ready for [`STABLE_AFTER`], whatever
//! ended the ones since (refused connects, rejected auth, garbage after auth), so a flapping
//! switch is backed off too. The first artifacts of the new connection are
//! `connection.opened` and a `capture.gap` saying how long the node was down. Every frame,
//! dispatch and lifecycle change is pushed to the [`CaptureQueue`], which never blocks the
//! socket task. Nor does the socket itself: the connection reads in every turn, while our
//! commands wait in a bounded buffer until the socket takes them; a write that makes no
//! progress for [`NodeConfig::write_timeout`] closes the connection as dead, and the drain
//! after a close is bounded ([`DRAIN_MAX`]). At any close, complete frames already read (at a
//! shutdown also those the switch has already sent, [`CLOSE_READ_IDLE`]) are stored as
//! frames; only the bytes after the last complete frame are stored as `wire.malformed`.
//!
//! Gateway requests ([`GatewayRequest`]) dispatch `api`/`bgapi` through this connection;
//! their replies are sent back when the session matches them. A gateway `bgapi` is
//! registered in [`Jobs`] as it is sent and settled by its BACKGROUND_JOB. Gateway commands
//! are counted, timed and their failures counted in [`Telemetry`].

use std::collections::HashMap;
use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes, BytesMut};
use futures_util::StreamExt as _;
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot, watch};
use tokio_util::codec::FramedRead;

use super::artifact::{Captured, GapKind, filter_document, subscription_document};
use super::jobs::{JobOutcome, Jobs};
use super::queue::CaptureQueue;
use super::telemetry::{NodeLabel, Telemetry};
use crate::esl::event::PlainEvent;
use crate::esl::session::{
    CloseReason, Command, CommandId, Inbound, Output, Phase, ReplyStatus, Session, SessionConfig,
    Subscriptions,
};
use crate::esl::{EslCodec, could_start_frame, header_ci};

/// A password kept out of `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    #[must_use]
    pub fn new(password: impl Into<String>) -> Password {
        Password(password.into())
    }

    /// The password text (only for the `auth` line).
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Default for Password {
    /// FreeSWITCH's default, `ClueCon`.
    fn default() -> Self {
        Password("ClueCon".into())
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(***)")
    }
}

/// Capped exponential backoff with full jitter: the delay before retry `n` (1-based) is
/// uniform in `[0, min(max, initial × 2^(n-1), max(initial, down / 4))]`, where `down` is
/// how long the node has been without a stable connection. Jitter keeps many nodes
/// restarting together out of step; the outage cap keeps the wait after a short outage
/// short (a switch back after 12 s is retried within 3 s), while a long outage still
/// backs off to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The cap of the first retry's delay.
    pub initial: Duration,
    /// The cap of every delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The upper bound of the delay before retry `attempt` (1-based) of an outage that
    /// began `down` ago.
    #[must_use]
    pub fn ceiling(&self, attempt: u64, down: Duration) -> Duration {
        let shift = attempt.saturating_sub(1).min(30) as u32;
        self.initial
            .saturating_mul(1u32 << shift)
            .min(self.max)
            .min((down / 4).max(self.initial))
    }

    /// A random delay in `[0, ceiling(attempt, down)]`.
    #[must_use]
    pub fn delay(&self, attempt: u64, down: Duration, rng: &mut impl rand::Rng) -> Duration {
        let ceiling = self.ceiling(attempt, down).as_micros() as u64;
        Duration::from_micros(rng.random_range(0..=ceiling))
    }
}

/// A connection that stayed ready this long ends an outage: the attempt count and the
/// outage clock start over at its close.
pub(crate) const STABLE_AFTER: Duration = Duration::from_secs(10);

/// At most this many bytes of a malformed read buffer are stored per connection (the
/// `wire.malformed` artifact says how many there were).
pub const MALFORMED_KEEP: usize = 64 * 1024;

/// Default of [`NodeConfig::write_timeout`]: 10 s.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// After a close FreeSWITCH announced (a disconnect notice, an auth `-ERR`, a rude
/// rejection), what it still sends is kept for at most this long in all: 2 s.
pub const DRAIN_MAX: Duration = Duration::from_secs(2);

/// The drain after a close also ends after this long without a frame: 250 ms.
pub const DRAIN_IDLE: Duration = Duration::from_millis(250);

/// At a shutdown, what FreeSWITCH has already sent is still read and stored as frames
/// until this long passes without a frame (50 ms), [`CLOSE_READ_MAX`] bytes were read, or
/// [`DRAIN_IDLE`] passed in all.
pub const CLOSE_READ_IDLE: Duration = Duration::from_millis(50);

/// The most frame bytes read after a close (4 MiB): a switch that keeps sending cannot
/// hold a closing connection open.
pub const CLOSE_READ_MAX: usize = 4 << 20;

/// While this many command bytes wait for the socket (4 MiB), gateway requests wait in
/// their channel: the commands a connection holds are bounded however slowly the switch
/// reads.
pub const UNSENT_MAX: usize = 4 << 20;

/// One FreeSWITCH node to capture.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// `host:port` of the event socket.
    pub address: String,
    /// The password for `auth`.
    pub password: Password,
    /// The desired subscriptions and filters, restored after every auth.
    pub subscriptions: Subscriptions,
    /// Session timeouts and liveness.
    pub session: SessionConfig,
    /// Reconnect backoff.
    pub backoff: Backoff,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// The codec's `Content-Length` cap.
    pub max_content_length: usize,
    /// Stop after this many failed connects in a row (`None`: never).
    pub max_attempts: Option<u64>,
    /// A write that makes no progress this long (the switch stopped reading our commands)
    /// closes the connection as dead (`write_timeout`) and the node reconnects. Default:
    /// [`DEFAULT_WRITE_TIMEOUT`] (10 s).
    pub write_timeout: Duration,
}

impl NodeConfig {
    /// Defaults for a node at `address`: password `ClueCon`, `event plain ALL`.
    #[must_use]
    pub fn new(address: impl Into<String>) -> NodeConfig {
        NodeConfig {
            address: address.into(),
            password: Password::default(),
            subscriptions: Subscriptions::all(),
            session: SessionConfig::default(),
            backoff: Backoff::default(),
            connect_timeout: Duration::from_secs(5),
            max_content_length: crate::esl::DEFAULT_MAX_CONTENT_LENGTH,
            max_attempts: None,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
        }
    }
}

/// A command the gateway dispatches through a capture connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayCommand {
    /// `api <command>`.
    Api(String),
    /// `bgapi <command>` (the node supplies the Job-UUID).
    BgApi(String),
}

/// The reply handed back to the gateway.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GatewayReply {
    /// `ok`, `err` or `other` (api bodies are not read as success or failure).
    pub status: &'static str,
    /// `Reply-Text` of a command/reply; empty for api/response.
    pub reply_text: String,
    /// The api/response body (lossy text).
    pub body: String,
    /// The bgapi job's UUID.
    pub job_uuid: Option<String>,
}

/// Why the gateway got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// The node's session is not ready (connecting, restoring, backing off).
    #[error("the esl connection is not ready")]
    NotReady,
    /// The command was refused before sending.
    #[error("command refused: {0}")]
    Refused(String),
    /// The connection closed before the reply arrived; the outcome is unknown.
    #[error("the connection closed before the reply arrived (outcome unknown)")]
    ConnectionLost,
    /// The reply did not arrive in time; the connection was closed.
    #[error("the reply did not arrive in time (outcome unknown)")]
    TimedOut,
    /// The node is not running.
    #[error("the capture node is not running")]
    NodeStopped,
    /// As many commands as allowed already await their replies.
    #[error("{limit} commands are already awaiting their replies; retry later")]
    Busy {
        /// The bound ([`CaptureOptions::max_commands_in_flight`](super::CaptureOptions)).
        limit: usize,
    },
}

/// A gateway request and where to send its reply.
#[derive(Debug)]
pub struct GatewayRequest {
    /// What to dispatch.
    pub command: GatewayCommand,
    /// Where the reply goes.
    pub reply: oneshot::Sender<Result<GatewayReply, GatewayError>>,
    /// The command's place in the in-flight bound, held until its reply or failure is sent:
    /// a caller that goes away does not take the command off the connection.
    pub permit: OwnedSemaphorePermit,
}

/// A sent command's reply channel and its in-flight permit.
type Waiter = (
    oneshot::Sender<Result<GatewayReply, GatewayError>>,
    OwnedSemaphorePermit,
);

/// How a node stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeExit {
    /// Shutdown was requested.
    Shutdown,
    /// A terminal close (auth or ACL rejection).
    Terminal(String),
    /// `max_attempts` failed connects in a row.
    GaveUp(String),
}

struct Node {
    index: usize,
    slug: String,
    label: NodeLabel,
    config: NodeConfig,
    queue: Arc<CaptureQueue>,
    telemetry: Arc<Telemetry>,
    jobs: Arc<Jobs>,
    origin: Instant,
    generation: u64,
    subscriptions: Subscriptions,
    waiting: HashMap<CommandId, Waiter>,
}

/// Runs one capture node until shutdown or a terminal failure.
pub async fn run_node(
    index: usize,
    config: NodeConfig,
    queue: Arc<CaptureQueue>,
    telemetry: Arc<Telemetry>,
    jobs: Arc<Jobs>,
    mut requests: mpsc::Receiver<GatewayRequest>,
    mut shutdown: watch::Receiver<bool>,
) -> NodeExit {
    let slug = queue
        .nodes()
        .get(index)
        .map(|n| n.pbx_node_slug.clone())
        .unwrap_or_default();
    let mut node = Node {
        index,
        label: Telemetry::node(&slug),
        slug,
        subscriptions: config.subscriptions.clone(),
        config,
        queue,
        telemetry,
        jobs,
        origin: Instant::now(),
        generation: 0,
        waiting: HashMap::new(),
    };
    node.telemetry.update_health(&node.slug, |h| {
        h.address = node.config.address.clone();
        h.connection = "connecting".into();
    });
    // Series that may stay at zero are shown from the start, so a dashboard sees 0.
    for family in [
        &node.telemetry.reconnects,
        &node.telemetry.drops,
        &node.telemetry.commands,
        &node.telemetry.command_errors,
    ] {
        drop(family.get_or_create(&node.label));
    }
    // The configured state is the node's first (and only) mutation of the desired state.
    let empty = Subscriptions::default();
    if !node.subscriptions.events.is_empty() {
        let all = node
            .subscriptions
            .events
            .iter()
            .any(|e| e.eq_ignore_ascii_case("ALL"));
        let kind = if all { "subscribe_all" } else { "subscribe" };
        let after = Subscriptions {
            events: node.subscriptions.events.clone(),
            filters: Vec::new(),
        };
        let document = subscription_document(kind, &node.subscriptions.events, &empty, &after);
        node.push(Captured::Mutation {
            filter: false,
            document,
        });
    }
    let mut before = Subscriptions {
        events: node.subscriptions.events.clone(),
        filters: Vec::new(),
    };
    for (header, value) in node.subscriptions.filters.clone() {
        let mut after = before.clone();
        after.filters.push((header.clone(), value.clone()));
        let document = filter_document("add", &header, &value, &before, &after);
        node.push(Captured::Mutation {
            filter: true,
            document,
        });
        before = after;
    }
    let mut attempt: u64 = 0;
    let mut jobs = Vec::new();
    let mut down: Option<(OffsetDateTime, Instant, String)> = None;
    // When the node last lost a stable connection (or started): the outage's age.
    let mut outage_since = Instant::now();
    loop {
        if *shutdown.borrow() {
            return node.stopped(NodeExit::Shutdown);
        }
        attempt += 1;
        node.telemetry.update_health(&node.slug, |h| {
            h.connection = "connecting".into();
            h.reconnect_attempts = attempt - 1;
        });
        let connect = tokio::time::timeout(
            node.config.connect_timeout,
            TcpStream::connect(&node.config.address),
        );
        let result = tokio::select! {
            r = connect => r,
            _ = shutdown.changed() => return node.stopped(NodeExit::Shutdown),
        };
        let error = match result {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                node.generation += 1;
                if node.generation > 1 {
                    node.telemetry.reconnects.get_or_create(&node.label).inc();
                }
                let peer = stream
                    .peer_addr()
                    .map_or_else(|_| node.config.address.clone(), |a| a.to_string());
                tracing::info!(node = %node.slug, %peer, generation = node.generation, "connected");
                node.push(Captured::ConnectionOpened { peer, attempt });
                if let Some((since, instant, reason)) = down.take() {
                    let down_micros = instant.elapsed().as_micros() as u64;
                    node.push(Captured::Gap(GapKind::Reconnect {
                        down_since: since,
                        down_micros,
                        reason,
                    }));
                }
                let (reason, ready_for, carried) = node
                    .connection(
                        stream,
                        std::mem::take(&mut jobs),
                        &mut requests,
                        &mut shutdown,
                    )
                    .await;
                jobs = carried;
                down = Some((
                    OffsetDateTime::now_utc(),
                    Instant::now(),
                    reason.to_string(),
                ));
                if ready_for.is_some_and(|d| d >= STABLE_AFTER) {
                    attempt = 0;
                    outage_since = Instant::now();
                }
                node.telemetry.update_health(&node.slug, |h| {
                    h.last_error = Some(reason.to_string());
                    h.session = Phase::Closed.as_str().into();
                });
                // A rejection stopped the node on its own, even if a shutdown came while
                // its connection was closing: it is reported as terminal.
                if !reason.is_retryable() {
                    return node.stopped(NodeExit::Terminal(reason.to_string()));
                }
                if *shutdown.borrow() {
                    return node.stopped(NodeExit::Shutdown);
                }
                reason.to_string()
            }
            Ok(Err(error)) => format!("connect to {}: {error}", node.config.address),
            Err(_) => format!("connect to {} timed out", node.config.address),
        };
        if node.config.max_attempts.is_some_and(|max| attempt >= max) {
            return node.stopped(NodeExit::GaveUp(error));
        }
        let delay =
            node.config
                .backoff
                .delay(attempt.max(1), outage_since.elapsed(), &mut rand::rng());
        tracing::info!(node = %node.slug, attempt, ?delay, %error, "reconnecting after backoff");
        node.telemetry.update_health(&node.slug, |h| {
            h.connection = "backing_off".into();
            // No connection, no liveness signal: not live until the next session is ready.
            h.liveness = "down".into();
            h.session = Phase::Closed.as_str().into();
            h.last_error = Some(error.clone());
        });
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                _ = shutdown.changed() => return node.stopped(NodeExit::Shutdown),
                Some(request) = requests.recv() => {
                    let _ = request.reply.send(Err(GatewayError::NotReady));
                }
            }
        }
    }
}

impl Node {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn push(&self, captured: Captured) {
        self.queue.push(
            self.index,
            self.generation,
            OffsetDateTime::now_utc(),
            captured,
        );
    }

    fn stopped(&mut self, exit: NodeExit) -> NodeExit {
        for (_, waiter) in std::mem::take(&mut self.waiting) {
            self.fail(waiter, GatewayError::NodeStopped);
        }
        self.telemetry
            .update_health(&self.slug, |h| h.connection = "stopped".into());
        exit
    }

    /// One TCP connection: returns why it closed, how long it was ready (`None`: never),
    /// and the bgapi jobs still tracked (their results may arrive on the next connection).
    ///
    /// The socket is read in every turn of the loop, whatever is being written: commands
    /// wait in [`Outgoing`] and are written as the socket takes them, in the same `select!`
    /// as the frames, the timers, shutdown and the gateway. A switch that stops reading
    /// therefore cannot stop the capture of its events, its timeouts or a shutdown; a write
    /// that makes no progress for [`NodeConfig::write_timeout`] closes the connection as
    /// dead ([`CloseReason::WriteTimeout`]).
    async fn connection(
        &mut self,
        stream: TcpStream,
        jobs: Vec<crate::esl::session::Job>,
        requests: &mut mpsc::Receiver<GatewayRequest>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> (CloseReason, Option<Duration>, Vec<crate::esl::session::Job>) {
        let codec = EslCodec::new().with_max_content_length(self.config.max_content_length);
        let (reader, mut writer) = stream.into_split();
        let reader = Noting {
            inner: reader,
            last_read: None,
        };
        let mut framed = FramedRead::with_capacity(reader, codec, 64 * 1024);
        let mut outgoing = Outgoing::default();
        // When the pending write times out: set while bytes wait, moved on by every byte
        // the socket takes.
        let mut write_deadline: Option<tokio::time::Instant> = None;
        let mut session = Session::new(
            self.config.session.clone(),
            self.subscriptions.clone(),
            self.now(),
        );
        session.adopt_jobs(jobs);
        let generation = self.generation;
        self.telemetry.update_health(&self.slug, |h| {
            h.connection = "connected".into();
            h.connection_generation = generation;
        });
        let mut recorded = CommandId(0);
        let mut ready: Option<Instant> = None;
        let mut frames = 0u64;
        // Set once the codec failed: what follows in the stream cannot be framed.
        let mut misframed = false;
        let reason = loop {
            // Settle what the session wants: record new requests, queue bytes, act on outputs.
            let mut closed = None;
            loop {
                for pending in session.pending() {
                    if pending.id > recorded {
                        recorded = pending.id;
                        self.push(Captured::Dispatch {
                            pending: pending.clone(),
                        });
                    }
                }
                let mut progressed = false;
                while let Some(bytes) = session.poll_transmit() {
                    progressed = true;
                    if outgoing.is_empty() {
                        write_deadline =
                            Some(tokio::time::Instant::now() + self.config.write_timeout);
                    }
                    outgoing.push(bytes);
                }
                while let Some(output) = session.poll_output() {
                    progressed = true;
                    match output {
                        Output::AuthRequested => {
                            let now = self.now();
                            if let Err(error) =
                                session.authenticate(self.config.password.expose(), now)
                            {
                                session.close_locally(error.to_string());
                            }
                        }
                        Output::Authenticated => {
                            self.telemetry.update_health(&self.slug, |h| {
                                h.session = Phase::Restoring.as_str().into()
                            });
                        }
                        Output::Ready => {
                            ready = Some(Instant::now());
                            self.telemetry.set_ready(&self.slug, true);
                            tracing::info!(node = %self.slug, generation, "session ready");
                            self.telemetry.update_health(&self.slug, |h| {
                                h.connection = "ready".into();
                                h.ever_ready = true;
                                h.session = Phase::Ready.as_str().into();
                                h.liveness = "live".into();
                                // Recovered: the outage's error is history (in the store).
                                h.last_error = None;
                            });
                        }
                        Output::Liveness(l) => {
                            tracing::info!(node = %self.slug, liveness = l.as_str(), "liveness changed");
                            self.telemetry
                                .update_health(&self.slug, |h| h.liveness = l.as_str().into());
                        }
                        Output::TimedOut(p) => {
                            if let Some(w) = self.waiting.remove(&p.id) {
                                self.fail(w, GatewayError::TimedOut);
                            }
                        }
                        Output::Abandoned(p) => {
                            if let Some(w) = self.waiting.remove(&p.id) {
                                self.fail(w, GatewayError::ConnectionLost);
                            }
                        }
                        Output::JobOrphaned(job) => {
                            tracing::warn!(node = %self.slug, job_uuid = %job.job_uuid, "bgapi job orphaned");
                            self.jobs.settle(&job.job_uuid, JobOutcome::Unknown);
                        }
                        Output::Closed(reason) => closed = Some(reason),
                    }
                }
                if !progressed {
                    break;
                }
            }
            if let Some(reason) = closed {
                break reason;
            }
            // Deadlines and gateway requests come first in every turn: a switch sending
            // faster than we read (a frame ready in every turn) cannot starve them.
            let now = self.now();
            if session.poll_timeout().is_some_and(|at| at <= now) {
                // Bytes of a frame still arriving count for liveness.
                if let Some(at) = framed.get_mut().last_read.take() {
                    session.note_activity(at.saturating_duration_since(self.origin));
                }
                session.handle_timeout(now);
                continue;
            }
            if write_deadline.is_some_and(|at| at <= tokio::time::Instant::now()) {
                self.write_stalled(outgoing.len());
                session.handle_write_timeout(now);
                continue;
            }
            if outgoing.len() < UNSENT_MAX
                && let Ok(request) = requests.try_recv()
            {
                self.gateway(&mut session, request);
                continue;
            }
            let deadline = session
                .poll_timeout()
                .map(|at| tokio::time::Instant::from_std(self.origin + at));
            tokio::select! {
                biased;
                _ = shutdown.changed() => {
                    session.close_locally("shutdown");
                }
                // Only ready when the socket takes bytes: a peer that does not read leaves
                // this pending and the branches below are served.
                written = writer.write(outgoing.front()), if !outgoing.is_empty() => match written {
                    Ok(0) => session.close_locally("write: the socket took no bytes"),
                    Ok(n) => {
                        outgoing.advance(n);
                        write_deadline = (!outgoing.is_empty())
                            .then(|| tokio::time::Instant::now() + self.config.write_timeout);
                    }
                    Err(error) => session.close_locally(format!("write: {error}")),
                },
                frame = framed.next() => match frame {
                    Some(Ok(frame)) => self.on_frame(&mut session, frame, &mut frames),
                    Some(Err(error)) => {
                        // One per connection (the session closes), and capped: a peer
                        // sending garbage cannot fill the store.
                        misframed = true;
                        self.keep_unread(framed.read_buffer_mut(), error.to_string());
                        session.close_locally(format!("codec: {error}"));
                    }
                    None => session.handle_eof(self.now()),
                },
                _ = sleep_until(deadline) => {
                    // Bytes of a frame still arriving count for liveness.
                    if let Some(at) = framed.get_mut().last_read.take() {
                        session.note_activity(at.saturating_duration_since(self.origin));
                    }
                    session.handle_timeout(self.now());
                }
                _ = sleep_until(write_deadline) => {
                    self.write_stalled(outgoing.len());
                    session.handle_write_timeout(self.now());
                }
                // Gateway commands wait in their channel while the socket is behind.
                Some(request) = requests.recv(), if outgoing.len() < UNSENT_MAX => {
                    self.gateway(&mut session, request);
                }
            }
        };
        // Not ready from the close on, whatever the drain still reads.
        self.telemetry.set_ready(&self.slug, false);
        self.telemetry.update_health(&self.slug, |h| {
            h.connection = "closing".into();
            h.session = Phase::Closed.as_str().into();
        });
        if !misframed && !matches!(reason, CloseReason::Local { .. } | CloseReason::Eof) {
            misframed = self
                .drain(&mut framed, &mut session, &mut frames, shutdown)
                .await;
        }
        // Every complete frame already read is stored as a frame, not as unread bytes; at a
        // shutdown, so is what the switch has already sent.
        if !misframed {
            let (idle, total) = if *shutdown.borrow() {
                (CLOSE_READ_IDLE, DRAIN_IDLE)
            } else {
                (Duration::ZERO, DRAIN_MAX)
            };
            self.read_arrived(&mut framed, &mut session, &mut frames, idle, total)
                .await;
        }
        // Bytes read but never made into a frame (a partial frame, or a peer that does not
        // speak ESL) are evidence too.
        let buffered = framed.read_buffer_mut();
        if buffered.iter().any(|&b| b != b'\n' && b != b'\r') {
            let what = if could_start_frame(buffered) {
                "partial frame at close"
            } else {
                "peer sent non-ESL data"
            };
            self.keep_unread(buffered, format!("{what} ({})", reason.as_str()));
        }
        self.subscriptions = session.subscriptions().clone();
        let jobs = session.take_jobs();
        for (_, waiter) in std::mem::take(&mut self.waiting) {
            self.fail(waiter, GatewayError::ConnectionLost);
        }
        // One verdict for the record and the log line: a close we asked for (shutdown)
        // is not retried, whatever the reason's kind says.
        let retryable = reason.is_retryable() && !*shutdown.borrow();
        tracing::warn!(node = %self.slug, reason = %reason, retryable, "connection closed");
        self.push(Captured::ConnectionClosed {
            reason: reason.as_str().into(),
            retryable,
            frames,
        });
        // Best effort: a polite goodbye is not needed, FreeSWITCH handles a dropped socket.
        // Shutting down the write side does not wait for the peer to read.
        let _ = writer.shutdown().await;
        (reason, ready.map(|at| at.elapsed()), jobs)
    }

    /// Keeps what FreeSWITCH sends after a close it announced (the notice after an auth
    /// `-ERR` or a rude rejection) until it hangs up, at most [`DRAIN_MAX`] in all and
    /// [`DRAIN_IDLE`] without a frame, and never past a shutdown: a switch that keeps
    /// talking cannot hold a closed connection open. Returns whether the codec failed.
    async fn drain(
        &mut self,
        framed: &mut FramedRead<Noting, EslCodec>,
        session: &mut Session,
        frames: &mut u64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let until = tokio::time::Instant::now() + DRAIN_MAX;
        while !*shutdown.borrow() {
            let idle = tokio::time::Instant::now() + DRAIN_IDLE;
            // The deadline before the frames: a switch that keeps talking cannot hold it off.
            if tokio::time::Instant::now() >= until {
                break;
            }
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                frame = framed.next() => match frame {
                    Some(Ok(frame)) => self.on_frame(session, frame, frames),
                    Some(Err(error)) => {
                        self.keep_unread(framed.read_buffer_mut(), error.to_string());
                        return true;
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(until.min(idle)) => break,
            }
        }
        false
    }

    /// Stores as frames every complete frame left in the read buffer, then what the socket
    /// yields without waiting longer than `idle` for a frame (zero: only what is already
    /// there), at most [`CLOSE_READ_MAX`] bytes and `total` time. Only a trailing
    /// partial frame is left in the buffer; a codec error stores the bytes as
    /// `wire.malformed` (and empties the buffer).
    async fn read_arrived(
        &mut self,
        framed: &mut FramedRead<Noting, EslCodec>,
        session: &mut Session,
        frames: &mut u64,
        idle: Duration,
        total: Duration,
    ) {
        let until = tokio::time::Instant::now() + total;
        let mut read = 0usize;
        while read < CLOSE_READ_MAX {
            let wait = (tokio::time::Instant::now() + idle).min(until);
            match tokio::time::timeout_at(wait, framed.next()).await {
                Ok(Some(Ok(frame))) => {
                    read = read.saturating_add(frame.raw_head().len() + frame.body().len());
                    self.on_frame(session, frame, frames);
                }
                Ok(Some(Err(error))) => {
                    self.keep_unread(framed.read_buffer_mut(), error.to_string());
                    break;
                }
                Ok(None) | Err(_) => break,
            }
        }
    }

    fn write_stalled(&self, unsent: usize) {
        tracing::warn!(
            node = %self.slug,
            unsent,
            timeout = ?self.config.write_timeout,
            "the switch stopped reading our commands"
        );
    }

    /// Counts, classifies, answers and queues one inbound frame.
    fn on_frame(&mut self, session: &mut Session, frame: crate::esl::Frame, frames: &mut u64) {
        *frames += 1;
        self.telemetry.frames.get_or_create(&self.label).inc();
        self.telemetry.note_frame();
        self.telemetry
            .bytes
            .get_or_create(&self.label)
            .inc_by((frame.raw_head().len() + frame.body().len()) as u64);
        let inbound = session.handle_frame(&frame, self.now());
        self.answer(&frame, &inbound);
        self.push(Captured::Frame { frame, inbound });
    }

    /// Stores the read buffer (its first [`MALFORMED_KEEP`] bytes) as `wire.malformed`
    /// saying why (and, when cut, how much was kept of how much), and empties it so that it
    /// is stored once.
    fn keep_unread(&self, buffered: &mut BytesMut, mut error: String) {
        let kept = buffered.get(..MALFORMED_KEEP).unwrap_or(buffered);
        if kept.len() < buffered.len() {
            error.push_str(&format!(
                " (the first {} of {} bytes are kept)",
                kept.len(),
                buffered.len()
            ));
        }
        self.push(Captured::Malformed {
            bytes: Bytes::copy_from_slice(kept),
            buffered: buffered.len(),
            error,
        });
        buffered.clear();
    }

    fn gateway(&mut self, session: &mut Session, request: GatewayRequest) {
        if session.phase() != Phase::Ready {
            let _ = request.reply.send(Err(GatewayError::NotReady));
            return;
        }
        let command = match request.command {
            GatewayCommand::Api(command) => Command::Api { command },
            GatewayCommand::BgApi(command) => Command::BgApi {
                command,
                job_uuid: uuid::Uuid::new_v4().to_string(),
            },
        };
        let job = match &command {
            Command::BgApi { command, job_uuid } => Some((job_uuid.clone(), command.clone())),
            _ => None,
        };
        match session.send(command, self.now()) {
            Ok(id) => {
                self.telemetry.commands.get_or_create(&self.label).inc();
                // Registered before the bytes leave: its BACKGROUND_JOB cannot be missed.
                if let Some((job_uuid, command)) = job {
                    self.jobs.register(&job_uuid, &self.slug, &command);
                }
                self.waiting.insert(id, (request.reply, request.permit));
            }
            Err(error) => {
                let _ = request
                    .reply
                    .send(Err(GatewayError::Refused(error.to_string())));
            }
        }
    }
}

impl Node {
    /// Hands a reply to the gateway command it answers (timed and, if `-ERR`, counted as
    /// an error), and settles the gateway job a BACKGROUND_JOB completes.
    fn answer(&mut self, frame: &crate::esl::Frame, inbound: &Inbound) {
        match inbound {
            Inbound::Reply {
                pending,
                status,
                job_uuid,
            } => {
                let Some((waiter, _permit)) = self.waiting.remove(&pending.id) else {
                    return;
                };
                let took = self.now().saturating_sub(pending.sent_at);
                self.telemetry
                    .command_latency_ms
                    .observe(took.as_secs_f64() * 1000.0);
                if *status == ReplyStatus::Err {
                    self.telemetry
                        .command_errors
                        .get_or_create(&self.label)
                        .inc();
                }
                let _ = waiter.send(Ok(gateway_reply(frame, *status, job_uuid.clone())));
            }
            Inbound::Event {
                completes: Some(job),
                ..
            } => {
                // The job's result is the event's own body (`+OK <uuid>`, `-ERR …`).
                let outcome = PlainEvent::parse(frame.body()).map_or(JobOutcome::Unknown, |e| {
                    JobOutcome::Done(String::from_utf8_lossy(e.body()).into_owned())
                });
                self.jobs.settle(&job.job_uuid, outcome);
            }
            _ => {}
        }
    }

    /// Tells a gateway command it failed, and counts the failure.
    fn fail(&self, (waiter, _permit): Waiter, error: GatewayError) {
        self.telemetry
            .command_errors
            .get_or_create(&self.label)
            .inc();
        let _ = waiter.send(Err(error));
    }
}

fn gateway_reply(
    frame: &crate::esl::Frame,
    status: ReplyStatus,
    job_uuid: Option<String>,
) -> GatewayReply {
    GatewayReply {
        status: match status {
            ReplyStatus::Ok => "ok",
            ReplyStatus::Err => "err",
            ReplyStatus::Other => "other",
        },
        reply_text: header_ci(frame, "Reply-Text")
            .unwrap_or_default()
            .to_owned(),
        body: String::from_utf8_lossy(frame.body()).into_owned(),
        job_uuid,
    }
}

/// The socket's read half, noting when bytes last arrived (a frame still arriving is
/// activity for liveness).
struct Noting {
    inner: OwnedReadHalf,
    last_read: Option<Instant>,
}

impl tokio::io::AsyncRead for Noting {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.last_read = Some(Instant::now());
        }
        polled
    }
}

/// Command bytes waiting for the socket, oldest first.
#[derive(Default)]
struct Outgoing {
    chunks: VecDeque<Bytes>,
    len: usize,
}

impl Outgoing {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The bytes waiting.
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.len += bytes.len();
            self.chunks.push_back(bytes);
        }
    }

    /// The oldest chunk's unwritten bytes (empty when nothing waits).
    fn front(&self) -> &[u8] {
        self.chunks.front().map_or(&[], |b| b.as_ref())
    }

    /// `written` bytes of the oldest chunk left.
    fn advance(&mut self, written: usize) {
        if let Some(front) = self.chunks.front_mut() {
            let written = written.min(front.len());
            front.advance(written);
            self.len -= written;
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
