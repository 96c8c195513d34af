//! What does the capture report about itself: Prometheus metrics and per-node health?
//!
//! [`Telemetry`] is shared by the socket tasks, the writer and the HTTP endpoints. Counters
//! are labelled by node slug; the queue gauges and the append-latency histogram are global
//! because one writer serves every node. [`NodeHealth`] is the `/health` view of one node.
//!
//! Our metrics are named `esl_capture_*`. The fs-esl-gateway ADR's names (`fs_esl_*`) are
//! served beside them: where a figure is one we already keep (reconnects, gateway commands
//! and their errors) the same series is registered under both names, so the two cannot
//! disagree; the ADR's command latency, connection uptime and publish lag exist only under
//! its names, in its units. A forwarder running in the capture process ([`Forwarding`])
//! adds its state to `/health` and its `esl_replay_forward_*` series to `/metrics`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

/// The node label of per-node metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    /// The node's slug.
    pub node: String,
}

/// Health of one node, as `/health` shows it.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct NodeHealth {
    /// The FreeSWITCH address.
    pub address: String,
    /// `connecting`, `connected`, `ready`, `closing` (closed, keeping what the switch
    /// still sends), `backing_off`, `stopped`.
    pub connection: String,
    /// The session phase (`esl::session::Phase::as_str`).
    pub session: String,
    /// `live`, `degraded`, `dead` while connected; `down` while backing off.
    pub liveness: String,
    /// The current connection generation.
    pub connection_generation: u64,
    /// Whether a session of this node has ever become ready (connected, authenticated,
    /// subscribed): a switch that accepts the connection but never completes the
    /// handshake has been connected to, yet nothing of it was captured.
    pub ever_ready: bool,
    /// Connections tried since the last stable one (ready for `STABLE_AFTER`) that failed
    /// or did not last, whatever ended them.
    pub reconnect_attempts: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// A forwarder running in the capture process, as `/health` and `/metrics` show it. The
/// capture does not know the forwarding layer; the CLI joins the two.
pub trait Forwarding: Send + Sync + fmt::Debug {
    /// `ok`; `retrying` while its target fails (the store keeps the records); `stopped` once
    /// it stopped on an error (it forwards nothing more until the capture restarts).
    fn status(&self) -> &'static str;
    /// The error it stopped with, or else its last failed delivery.
    fn last_error(&self) -> Option<String>;
    /// Its series, in the text exposition (ending in `# EOF`).
    fn encode(&self) -> String;
}

/// Metrics and health shared across the capture.
#[derive(Debug)]
pub struct Telemetry {
    registry: Registry,
    /// Frames read from FreeSWITCH.
    pub frames: Family<NodeLabel, Counter>,
    /// Bytes of frames read.
    pub bytes: Family<NodeLabel, Counter>,
    /// Artifacts written to the store.
    pub artifacts: Family<NodeLabel, Counter>,
    /// Artifacts dropped because the write queue was full.
    pub drops: Family<NodeLabel, Counter>,
    /// TCP connects after the first.
    pub reconnects: Family<NodeLabel, Counter>,
    /// Items waiting in the write queue.
    pub queue_depth: Gauge<i64, AtomicI64>,
    /// Bytes waiting in the write queue.
    pub queue_bytes: Gauge<i64, AtomicI64>,
    /// Failed store batch writes (each recorded as a gap).
    pub write_errors: Counter<u64, AtomicU64>,
    /// 1 once the writer stopped on a persistent store failure (the capture then stops).
    pub writer_failed: Gauge<i64, AtomicI64>,
    /// Periodic retention runs that failed (each retried next period).
    pub retention_failures: Counter<u64, AtomicU64>,
    /// Seconds per store batch append.
    pub append_latency: Histogram,
    /// Seconds from a frame's arrival (queued right after it was read and decoded) until
    /// the group commit that covers its record returned (T15).
    pub durable_latency: Histogram,
    /// Commands sent through the gateway (`fs_esl_commands_total` too).
    pub commands: Family<NodeLabel, Counter>,
    /// Gateway commands that failed: `-ERR` replies, timeouts, connections lost before the
    /// reply (`fs_esl_errors_total` too).
    pub command_errors: Family<NodeLabel, Counter>,
    /// Milliseconds from sending a gateway command to its reply (`fs_esl_command_latency_ms`).
    pub command_latency_ms: Histogram,
    /// Milliseconds from a record's capture (its frame read from ESL) until the in-process
    /// forwarder's target acknowledged it (`fs_esl_event_publish_lag_ms`); the forwarder
    /// observes it.
    pub event_publish_lag_ms: Histogram,
    /// Seconds each node's current session has been ready; refreshed when encoded.
    connection_uptime: Family<NodeLabel, Gauge<f64, AtomicU64>>,
    ready_since: Mutex<BTreeMap<String, Instant>>,
    health: Mutex<BTreeMap<String, NodeHealth>>,
    writer_error: Mutex<Option<String>>,
    retention_error: Mutex<Option<String>>,
    forwarding: Mutex<Option<Arc<dyn Forwarding>>>,
    /// When the store append in progress began, if one is.
    append_started_at: Mutex<Option<Instant>>,
    /// When an item was last dropped (queue full, batch lost, record too large).
    last_drop_at: Mutex<Option<Instant>>,
    /// When the last frame arrived from any node, in milliseconds since the Unix epoch
    /// (0: none yet).
    last_frame_unix_ms: AtomicU64,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self::new()
    }
}

impl Telemetry {
    /// Registers every metric: ours under the `esl_capture` prefix, the ADR's under `fs_esl`.
    #[must_use]
    pub fn new() -> Telemetry {
        let mut root = Registry::default();
        let t = Telemetry {
            frames: Family::default(),
            bytes: Family::default(),
            artifacts: Family::default(),
            drops: Family::default(),
            reconnects: Family::default(),
            queue_depth: Gauge::default(),
            queue_bytes: Gauge::default(),
            write_errors: Counter::default(),
            writer_failed: Gauge::default(),
            retention_failures: Counter::default(),
            append_latency: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            // Steps of 25 % from 25 µs to about 1 s: fine enough to read p50 and p99 from.
            durable_latency: Histogram::new(exponential_buckets(0.000_025, 1.25, 48)),
            commands: Family::default(),
            command_errors: Family::default(),
            // Steps of 50 % from 0.25 ms to about 4 s: enough to read a p95 against 50 ms.
            command_latency_ms: Histogram::new(exponential_buckets(0.25, 1.5, 24)),
            // Steps of 50 % from 1 ms to about a minute (an outage of the target).
            event_publish_lag_ms: Histogram::new(exponential_buckets(1.0, 1.5, 28)),
            connection_uptime: Family::default(),
            ready_since: Mutex::new(BTreeMap::new()),
            health: Mutex::new(BTreeMap::new()),
            writer_error: Mutex::new(None),
            retention_error: Mutex::new(None),
            forwarding: Mutex::new(None),
            append_started_at: Mutex::new(None),
            last_drop_at: Mutex::new(None),
            last_frame_unix_ms: AtomicU64::new(0),
            registry: Registry::default(),
        };
        let registry = root.sub_registry_with_prefix("esl_capture");
        registry.register("frames", "Frames read from FreeSWITCH", t.frames.clone());
        registry.register("bytes", "Bytes of frames read", t.bytes.clone());
        registry.register(
            "artifacts",
            "Artifacts written to the store",
            t.artifacts.clone(),
        );
        registry.register(
            "dropped_artifacts",
            "Artifacts dropped because the write queue was full",
            t.drops.clone(),
        );
        registry.register(
            "reconnects",
            "TCP connects after the first",
            t.reconnects.clone(),
        );
        registry.register(
            "queue_depth",
            "Items in the write queue",
            t.queue_depth.clone(),
        );
        registry.register(
            "queue_bytes",
            "Bytes in the write queue",
            t.queue_bytes.clone(),
        );
        registry.register(
            "write_errors",
            "Failed store batch writes",
            t.write_errors.clone(),
        );
        registry.register(
            "writer_failed",
            "1 once the writer stopped on a persistent store failure",
            t.writer_failed.clone(),
        );
        registry.register(
            "retention_failures",
            "Periodic retention runs that failed",
            t.retention_failures.clone(),
        );
        registry.register(
            "append_latency_seconds",
            "Store batch append latency",
            t.append_latency.clone(),
        );
        registry.register(
            "durable_latency_seconds",
            "From a frame's arrival until the group commit covering its record returned",
            t.durable_latency.clone(),
        );
        registry.register(
            "commands",
            "Commands sent through the gateway",
            t.commands.clone(),
        );
        registry.register(
            "command_errors",
            "Gateway commands answered -ERR, timed out or lost with their connection",
            t.command_errors.clone(),
        );
        let adr = root.sub_registry_with_prefix("fs_esl");
        adr.register(
            "commands",
            "Commands sent through the gateway (esl_capture_commands_total)",
            t.commands.clone(),
        );
        adr.register(
            "errors",
            "Gateway commands that failed (esl_capture_command_errors_total)",
            t.command_errors.clone(),
        );
        adr.register(
            "command_latency_ms",
            "Milliseconds from sending a gateway command to its reply",
            t.command_latency_ms.clone(),
        );
        adr.register(
            "connection_uptime_seconds",
            "Seconds the node's current ESL session has been ready (0 when not ready)",
            t.connection_uptime.clone(),
        );
        adr.register(
            "reconnects",
            "TCP connects after the first (esl_capture_reconnects_total)",
            t.reconnects.clone(),
        );
        adr.register(
            "event_publish_lag_ms",
            "Milliseconds from ESL receive until the forwarder's target acknowledged the record",
            t.event_publish_lag_ms.clone(),
        );
        Telemetry {
            registry: root,
            ..t
        }
    }

    /// The Prometheus text exposition of every metric.
    #[must_use]
    pub fn encode(&self) -> String {
        self.refresh_uptime();
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        if let Some(forwarding) = self.forwarding() {
            // One exposition: a single `# EOF`, the forwarder's.
            if out.ends_with("# EOF\n") {
                out.truncate(out.len() - "# EOF\n".len());
            }
            out.push_str(&forwarding.encode());
        }
        out
    }

    /// Adds the in-process forwarder to `/health` and `/metrics`.
    pub fn attach_forwarding(&self, forwarding: Arc<dyn Forwarding>) {
        *self.forwarding.lock() = Some(forwarding);
    }

    /// The in-process forwarder, if one is attached.
    #[must_use]
    pub fn forwarding(&self) -> Option<Arc<dyn Forwarding>> {
        self.forwarding.lock().clone()
    }

    /// Updates one node's health.
    pub fn update_health(&self, slug: &str, update: impl FnOnce(&mut NodeHealth)) {
        update(self.health.lock().entry(slug.to_owned()).or_default());
    }

    /// Notes that `slug`'s session became ready now (`true`) or is no longer ready.
    pub fn set_ready(&self, slug: &str, ready: bool) {
        let mut since = self.ready_since.lock();
        if ready {
            since.insert(slug.to_owned(), Instant::now());
        } else {
            since.remove(slug);
        }
    }

    /// Sets each known node's uptime gauge from when its session became ready.
    fn refresh_uptime(&self) {
        let since = self.ready_since.lock();
        for slug in self.health.lock().keys() {
            let seconds = since.get(slug).map_or(0.0, |at| at.elapsed().as_secs_f64());
            self.connection_uptime
                .get_or_create(&Telemetry::node(slug))
                .set(seconds);
        }
    }

    /// Notes that a frame arrived from a node just now.
    pub fn note_frame(&self) {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        self.last_frame_unix_ms.store(ms, Ordering::Relaxed);
    }

    /// When the last frame arrived from any node (the switch's latest sign of life), if any
    /// has.
    #[must_use]
    pub fn last_frame_at(&self) -> Option<SystemTime> {
        let ms = self.last_frame_unix_ms.load(Ordering::Relaxed);
        (ms != 0).then(|| UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// Every node's health, by slug.
    #[must_use]
    pub fn health(&self) -> BTreeMap<String, NodeHealth> {
        self.health.lock().clone()
    }

    /// Records (or clears) the writer's last error.
    pub fn set_writer_error(&self, error: Option<String>) {
        *self.writer_error.lock() = error;
    }

    /// The writer's last error.
    #[must_use]
    pub fn writer_error(&self) -> Option<String> {
        self.writer_error.lock().clone()
    }

    /// Counts `n` items of `slug` dropped, now.
    pub fn count_drops(&self, slug: &str, n: u64) {
        self.drops.get_or_create(&Telemetry::node(slug)).inc_by(n);
        *self.last_drop_at.lock() = Some(Instant::now());
    }

    /// How long ago an item was last dropped, if ever.
    #[must_use]
    pub fn since_last_drop(&self) -> Option<Duration> {
        self.last_drop_at.lock().map(|at| at.elapsed())
    }

    /// Notes that a store append begins (`true`) or has returned.
    pub fn note_append(&self, begins: bool) {
        *self.append_started_at.lock() = begins.then(Instant::now);
    }

    /// How long the store append in progress has taken so far, if one is.
    #[must_use]
    pub fn append_in_progress(&self) -> Option<Duration> {
        self.append_started_at.lock().map(|at| at.elapsed())
    }

    /// Records (or clears) the last periodic retention error.
    pub fn set_retention_error(&self, error: Option<String>) {
        *self.retention_error.lock() = error;
    }

    /// The last periodic retention error, until a run succeeds.
    #[must_use]
    pub fn retention_error(&self) -> Option<String> {
        self.retention_error.lock().clone()
    }

    /// The label for a node.
    #[must_use]
    pub fn node(slug: &str) -> NodeLabel {
        NodeLabel {
            node: slug.to_owned(),
        }
    }
}
