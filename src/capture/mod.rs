//! How is live FreeSWITCH traffic captured into the artifact store?
//!
//! The capture layer sits on `esl` (codec and session), `record` and `store`
//! (`docs/capture.md` is the operator's view and the artifact table).
//!
//! - [`Mapper`] maps frames, dispatches and connection changes to replay envelopes with
//!   the apntalk names and fields, plus our own wire-log artifacts ([`CaptureArtifact`]).
//! - [`run_node`] keeps one node connected (auth, restore, [`Backoff`] with full jitter,
//!   generations, gap markers) and feeds the queue.
//! - [`CaptureQueue`] is the byte-bounded queue to the batch writer thread
//!   ([`spawn_writer`]); when full it drops and records exactly what it dropped.
//! - [`Telemetry`] holds the Prometheus metrics and per-node health; [`router`] serves
//!   `/health`, `/metrics` and the command gateway, with the fs-esl-gateway REST contract
//!   ([`rest`]) on it; callers present a bearer token or an HS256 JWT ([`JwtKey`]), and the
//!   background jobs the gateway started are remembered with how they ended
//!   ([`JobStatus`]).
//! - [`CommandConnection`] is a small client for one-off `api`/`bgapi` commands;
//!   [`EslInjector`] builds the replay executor's ESL injector on it
//!   (`replay run --reinject-to`).
//!
//! [`Capture`] wires them together for any number of nodes sharing one store.

mod artifact;
mod auth;
mod client;
mod command;
mod http;
mod inject;
mod jobs;
mod queue;
pub mod rest;
mod telemetry;

pub use artifact::{
    ARTIFACT_VERSION, CaptureArtifact, Captured, EncodeBuffers, GapKind, Mapper, NodeIdentity,
    Stamp, filter_document, subscription_document,
};
pub use auth::{JwtKey, KeyError};
pub use client::{
    Backoff, CLOSE_READ_IDLE, CLOSE_READ_MAX, DEFAULT_WRITE_TIMEOUT, DRAIN_IDLE, DRAIN_MAX,
    GatewayCommand, GatewayError, GatewayReply, GatewayRequest, MALFORMED_KEEP, NodeConfig,
    NodeExit, Password, UNSENT_MAX, run_node,
};
pub use command::{CommandConnection, CommandError, CommandReply};
pub use http::{HealthForm, HttpState, RECENT_DROPS, WRITER_STALL_AFTER, router};
pub use inject::{
    DEFAULT_INJECT_TIMEOUT, EslInjector, INJECTED, InjectError, InjectorConfig, command_line,
};
pub use jobs::{JobOutcome, JobStatus};
pub use queue::{CaptureQueue, Pushed, WriterOptions, spawn_writer};
pub use telemetry::{Forwarding, NodeHealth, NodeLabel, Telemetry};

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use jobs::Jobs;

use crate::store::ArtifactStore;

/// Default write-queue bound: 64 MiB.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

/// Default bound of gateway commands awaiting their reply at once, over every node.
/// FreeSWITCH answers one connection's commands one at a time, so more than this would
/// only queue behind each other.
pub const DEFAULT_MAX_COMMANDS_IN_FLIGHT: usize = 32;

/// How long [`Capture::shutdown`] waits for the node tasks to stop (10 s, all together)
/// before it aborts the rest and reports each as [`NodeExit::Terminal`].
pub const NODE_STOP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// One node to capture and its slug.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// `runtime_flags.pbx_node_slug` of its artifacts; unique within the process.
    pub slug: String,
    /// Connection settings.
    pub config: NodeConfig,
}

/// Capture-wide options.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Bound of the write queue in bytes.
    pub queue_bytes: usize,
    /// Writer batching.
    pub writer: WriterOptions,
    /// `runtime_flags.worker_session_id` of every artifact, if set.
    pub worker_session_id: Option<String>,
    /// The process session id; a new UUIDv4 when `None`.
    pub session_id: Option<String>,
    /// Gateway commands that may await their reply at once; one more is refused with
    /// [`GatewayError::Busy`]. Default: [`DEFAULT_MAX_COMMANDS_IN_FLIGHT`]. 0 refuses every
    /// command.
    pub max_commands_in_flight: usize,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            queue_bytes: DEFAULT_QUEUE_BYTES,
            writer: WriterOptions::default(),
            worker_session_id: None,
            session_id: None,
            max_commands_in_flight: DEFAULT_MAX_COMMANDS_IN_FLIGHT,
        }
    }
}

/// Errors starting or stopping a capture.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// No node was configured.
    #[error("no esl node to capture")]
    NoNodes,
    /// Two nodes share a slug.
    #[error("node slug {0:?} is used twice")]
    DuplicateSlug(String),
    /// The writer thread could not start.
    #[error("could not start the writer thread")]
    Spawn(#[source] std::io::Error),
    /// The writer thread panicked.
    #[error("the writer thread panicked")]
    WriterPanicked,
    /// The store failed: persistently while capturing (the writer stopped; see
    /// [`queue::spawn_writer`]), or at shutdown (final write or sync).
    #[error("the store failed")]
    Store(#[from] crate::store::Error),
}

/// Dispatches commands through the capture connections; cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway {
    nodes: Arc<BTreeMap<String, mpsc::Sender<GatewayRequest>>>,
    /// One permit per command awaiting its reply.
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    jobs: Arc<Jobs>,
}

impl Gateway {
    /// The node slugs.
    pub fn nodes(&self) -> impl Iterator<Item = &str> {
        self.nodes.keys().map(String::as_str)
    }

    /// The background jobs sent through the gateway.
    #[must_use]
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }

    /// The slug of `node`, or of the only node when `None`.
    ///
    /// # Errors
    ///
    /// [`GatewayError::Refused`] for an unknown node, or for `None` with several nodes.
    pub fn node(&self, node: Option<&str>) -> Result<&str, GatewayError> {
        let found = match node {
            Some(slug) => self.nodes.get_key_value(slug),
            None if self.nodes.len() == 1 => self.nodes.iter().next(),
            None => return Err(GatewayError::Refused("several nodes: name one".into())),
        };
        found.map(|(slug, _)| slug.as_str()).ok_or_else(|| {
            let known: Vec<&str> = self.nodes().collect();
            GatewayError::Refused(format!(
                "unknown node \"{}\" (nodes: {})",
                node.unwrap_or_default(),
                known.join(", ")
            ))
        })
    }

    /// Sends a command through `node` (the only node when `None`) and awaits its reply.
    ///
    /// # Errors
    ///
    /// [`GatewayError`]; an unknown node or several nodes without a choice are
    /// [`GatewayError::Refused`], and a command beyond the in-flight bound is
    /// [`GatewayError::Busy`].
    pub async fn dispatch(
        &self,
        node: Option<&str>,
        command: GatewayCommand,
    ) -> Result<GatewayReply, GatewayError> {
        let slug = self.node(node)?;
        let sender = self.nodes.get(slug).ok_or(GatewayError::NodeStopped)?;
        // Travels with the command; the node releases it when the reply (or the error) is
        // sent, not when this future is dropped.
        let permit = Arc::clone(&self.in_flight)
            .try_acquire_owned()
            .map_err(|_| GatewayError::Busy {
                limit: self.max_in_flight,
            })?;
        let (reply, wait) = oneshot::channel();
        sender
            .send(GatewayRequest {
                command,
                reply,
                permit,
            })
            .await
            .map_err(|_| GatewayError::NodeStopped)?;
        wait.await.map_err(|_| GatewayError::NodeStopped)?
    }
}

/// A running capture: node tasks, the queue and the writer thread.
#[derive(Debug)]
pub struct Capture {
    session_id: String,
    queue: Arc<CaptureQueue>,
    telemetry: Arc<Telemetry>,
    shutdown: watch::Sender<bool>,
    nodes: Vec<(String, JoinHandle<NodeExit>)>,
    gateway: Gateway,
    writer: std::thread::JoinHandle<crate::store::Result<Box<dyn ArtifactStore>>>,
}

impl Capture {
    /// Starts capturing every node into `store`. Must be called inside a tokio runtime.
    ///
    /// # Errors
    ///
    /// No nodes, duplicate slugs, or the writer thread could not start.
    pub fn start(
        nodes: Vec<NodeSpec>,
        store: Box<dyn ArtifactStore>,
        options: CaptureOptions,
    ) -> Result<Capture, CaptureError> {
        if nodes.is_empty() {
            return Err(CaptureError::NoNodes);
        }
        let mut seen = std::collections::BTreeSet::new();
        for node in &nodes {
            if !seen.insert(node.slug.clone()) {
                return Err(CaptureError::DuplicateSlug(node.slug.clone()));
            }
        }
        let session_id = options
            .session_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let identities: Vec<Arc<NodeIdentity>> = nodes
            .iter()
            .map(|n| {
                Arc::new(NodeIdentity {
                    session_id: session_id.clone(),
                    pbx_node_slug: n.slug.clone(),
                    worker_session_id: options.worker_session_id.clone(),
                })
            })
            .collect();
        let telemetry = Arc::new(Telemetry::new());
        let jobs = Arc::new(Jobs::default());
        let queue = Arc::new(CaptureQueue::new(
            options.queue_bytes,
            identities,
            Arc::clone(&telemetry),
        ));
        let writer = queue::spawn_writer(Arc::clone(&queue), store, options.writer)
            .map_err(CaptureError::Spawn)?;
        let (shutdown, watch) = watch::channel(false);
        let mut senders = BTreeMap::new();
        let mut tasks = Vec::new();
        for (index, node) in nodes.into_iter().enumerate() {
            let (tx, rx) = mpsc::channel(64);
            senders.insert(node.slug.clone(), tx);
            let task = tokio::spawn(client::run_node(
                index,
                node.config,
                Arc::clone(&queue),
                Arc::clone(&telemetry),
                Arc::clone(&jobs),
                rx,
                watch.clone(),
            ));
            tasks.push((node.slug, task));
        }
        Ok(Capture {
            session_id,
            queue,
            telemetry,
            shutdown,
            nodes: tasks,
            gateway: Gateway {
                nodes: Arc::new(senders),
                in_flight: Arc::new(Semaphore::new(
                    options.max_commands_in_flight.min(Semaphore::MAX_PERMITS),
                )),
                max_in_flight: options.max_commands_in_flight,
                jobs,
            },
            writer,
        })
    }

    /// The process session id stamped on every artifact.
    #[must_use]
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Metrics and health.
    #[must_use]
    pub fn telemetry(&self) -> Arc<Telemetry> {
        Arc::clone(&self.telemetry)
    }

    /// The command gateway.
    #[must_use]
    pub fn gateway(&self) -> Gateway {
        self.gateway.clone()
    }

    /// The write queue.
    #[must_use]
    pub fn queue(&self) -> Arc<CaptureQueue> {
        Arc::clone(&self.queue)
    }

    /// Items and bytes waiting in the write queue.
    #[must_use]
    pub fn queue_depth(&self) -> (usize, usize) {
        self.queue.depth()
    }

    /// Whether every node task has ended (terminal failures or gave up).
    #[must_use]
    pub fn all_nodes_stopped(&self) -> bool {
        self.nodes.iter().all(|(_, t)| t.is_finished())
    }

    /// Whether the writer stopped on its own: the store failed persistently (the error is
    /// the telemetry's writer error and what [`Capture::shutdown`] returns). The caller
    /// should shut the capture down: nothing more is stored.
    #[must_use]
    pub fn writer_stopped(&self) -> bool {
        self.writer.is_finished()
    }

    /// Stops every node, drains the queue into the store, syncs it and hands it back with
    /// each node's exit. A node ends its connection at once (recording its close), whatever
    /// its switch does; one that has not stopped within [`NODE_STOP_TIMEOUT`] is aborted.
    ///
    /// # Errors
    ///
    /// The writer failed or panicked.
    pub async fn shutdown(
        self,
    ) -> Result<(Box<dyn ArtifactStore>, Vec<(String, NodeExit)>), CaptureError> {
        let _ = self.shutdown.send(true);
        let mut exits = Vec::new();
        // Every node task watches shutdown wherever it waits; the bound is a second line
        // of defence, so that a stop always ends.
        let give_up = tokio::time::Instant::now() + NODE_STOP_TIMEOUT;
        for (slug, mut task) in self.nodes {
            let exit = match tokio::time::timeout_at(give_up, &mut task).await {
                Ok(exit) => {
                    exit.unwrap_or_else(|e| NodeExit::Terminal(format!("node task failed: {e}")))
                }
                Err(_) => {
                    task.abort();
                    tracing::error!(node = %slug, timeout = ?NODE_STOP_TIMEOUT, "node did not stop in time; aborted");
                    NodeExit::Terminal(format!(
                        "the node did not stop within {NODE_STOP_TIMEOUT:?} of shutdown; aborted"
                    ))
                }
            };
            exits.push((slug, exit));
        }
        self.queue.close();
        let writer = self.writer;
        let store = tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(|_| CaptureError::WriterPanicked)?
            .map_err(|_| CaptureError::WriterPanicked)??;
        Ok((store, exits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP client that disconnects drops the handler's future; its command stays on the
    /// connection, and so must its place in the in-flight bound, until the node answers.
    #[tokio::test]
    async fn a_caller_that_goes_away_leaves_its_command_in_the_in_flight_bound() {
        let (sender, mut node) = mpsc::channel(4);
        let gateway = Gateway {
            nodes: Arc::new(BTreeMap::from([("pbx-a".to_owned(), sender)])),
            in_flight: Arc::new(Semaphore::new(1)),
            max_in_flight: 1,
            jobs: Arc::default(),
        };
        let caller = {
            let gateway = gateway.clone();
            tokio::spawn(async move {
                let command = GatewayCommand::Api("msleep 25000".into());
                gateway.dispatch(None, command).await
            })
        };
        let queued = node.recv().await.unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        assert_eq!(gateway.in_flight.available_permits(), 0);
        let refused = gateway.dispatch(None, GatewayCommand::Api("status".into()));
        assert_eq!(refused.await, Err(GatewayError::Busy { limit: 1 }));
        // The node answers (or fails) the command: the place is free again.
        drop(queued);
        assert_eq!(gateway.in_flight.available_permits(), 1);
    }
}
