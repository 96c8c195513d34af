//! Forwarder metrics: counters and gauges kept in a `prometheus-client` registry, a snapshot
//! for log lines and tests, and an axum endpoint serving `/metrics` and `/health`.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::watch;

/// The live figures of one forwarder. Shared (`Arc`) between the forwarding loop, the
/// metrics endpoint and whoever shows progress.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    forwarded: Counter,
    skipped: Counter,
    batches: Counter,
    retries: Counter,
    duplicates: Counter,
    maybe_lost: Counter,
    acked_sequence: Gauge,
    checkpoint_sequence: Gauge,
    store_last_sequence: Gauge,
    lag_records: Gauge,
    lag_seconds: Gauge<f64, AtomicU64>,
    connected: Gauge,
    last_error_time: Gauge<f64, AtomicU64>,
    last_error: Mutex<Option<String>>,
    stopped: Gauge,
    stopped_error: Mutex<Option<String>>,
    publish_lag_ms: Histogram,
}

/// A copy of the figures at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Records the target acknowledged since start.
    pub forwarded: u64,
    /// Records read but left out by the criteria.
    pub skipped: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Failed delivery attempts that were retried.
    pub retries: u64,
    /// Records JetStream reported as duplicates (already stored, so not stored again).
    pub duplicates: u64,
    /// Records sent by core NATS whose flush failed (at-most-once mode: never resent).
    pub maybe_lost: u64,
    /// The last append sequence the target acknowledged (everything up to it is delivered).
    pub acked_sequence: u64,
    /// The append sequence the saved checkpoint holds (at or behind `acked_sequence`; a
    /// restart resumes after it).
    pub checkpoint_sequence: u64,
    /// The last append sequence in the store when last looked.
    pub store_last_sequence: u64,
    /// Records between the last acknowledged one and the store's end.
    pub lag_records: u64,
    /// How long the oldest undelivered record has been in the store (0 when caught up).
    pub lag_seconds: f64,
    /// Whether the last delivery attempt succeeded.
    pub connected: bool,
    /// The last delivery error, if any.
    pub last_error: Option<String>,
    /// The error the forwarder stopped with, once it has (it forwards nothing more).
    pub stopped: Option<String>,
}

impl MetricsSnapshot {
    /// `ok`; `retrying` while deliveries fail (they are retried); `stopped` once the
    /// forwarder stopped on an error.
    #[must_use]
    pub fn status(&self) -> &'static str {
        if self.stopped.is_some() {
            "stopped"
        } else if !self.connected && self.retries > 0 {
            "retrying"
        } else {
            "ok"
        }
    }
}

impl Metrics {
    /// New metrics whose series carry the label `target` (e.g. `redis`).
    #[must_use]
    pub fn new(target: &str) -> Metrics {
        // Steps of 50 % from 1 ms to about a minute.
        Metrics::with_publish_lag(target, Histogram::new(exponential_buckets(1.0, 1.5, 28)))
    }

    /// As [`Metrics::new`], observing the publish lag into `publish_lag_ms` (a histogram
    /// someone else serves too, such as the capture's `fs_esl_event_publish_lag_ms`).
    #[must_use]
    pub fn with_publish_lag(target: &str, publish_lag_ms: Histogram) -> Metrics {
        let mut registry = Registry::with_prefix_and_labels(
            "esl_replay_forward",
            [(
                std::borrow::Cow::Borrowed("target"),
                std::borrow::Cow::Owned(target.to_owned()),
            )]
            .into_iter(),
        );
        let metrics = Metrics {
            registry: Registry::default(),
            forwarded: Counter::default(),
            skipped: Counter::default(),
            batches: Counter::default(),
            retries: Counter::default(),
            duplicates: Counter::default(),
            maybe_lost: Counter::default(),
            acked_sequence: Gauge::default(),
            checkpoint_sequence: Gauge::default(),
            store_last_sequence: Gauge::default(),
            lag_records: Gauge::default(),
            lag_seconds: Gauge::default(),
            connected: Gauge::default(),
            last_error_time: Gauge::default(),
            last_error: Mutex::new(None),
            stopped: Gauge::default(),
            stopped_error: Mutex::new(None),
            publish_lag_ms,
        };
        registry.register(
            "records",
            "Records acknowledged by the target",
            metrics.forwarded.clone(),
        );
        registry.register(
            "skipped_records",
            "Records left out by the criteria",
            metrics.skipped.clone(),
        );
        registry.register(
            "batches",
            "Batches acknowledged by the target",
            metrics.batches.clone(),
        );
        registry.register(
            "retries",
            "Failed delivery attempts that were retried",
            metrics.retries.clone(),
        );
        registry.register(
            "duplicates",
            "Records JetStream reported as already stored",
            metrics.duplicates.clone(),
        );
        registry.register(
            "maybe_lost_records",
            "Core NATS records whose flush failed (at-most-once, not resent)",
            metrics.maybe_lost.clone(),
        );
        registry.register(
            "acked_sequence",
            "Last append sequence acknowledged by the target",
            metrics.acked_sequence.clone(),
        );
        registry.register(
            "checkpoint_sequence",
            "Append sequence saved in the checkpoint (a restart resumes after it)",
            metrics.checkpoint_sequence.clone(),
        );
        registry.register(
            "store_last_sequence",
            "Last append sequence in the store",
            metrics.store_last_sequence.clone(),
        );
        registry.register(
            "lag_records",
            "Records between the last acknowledged one and the store's end",
            metrics.lag_records.clone(),
        );
        registry.register(
            "lag_seconds",
            "Age of the oldest undelivered record (0 when caught up)",
            metrics.lag_seconds.clone(),
        );
        registry.register(
            "connected",
            "1 if the last delivery attempt succeeded",
            metrics.connected.clone(),
        );
        registry.register(
            "last_error_timestamp_seconds",
            "Unix time of the last delivery error",
            metrics.last_error_time.clone(),
        );
        registry.register(
            "stopped",
            "1 once the forwarder stopped on an error (it forwards nothing more)",
            metrics.stopped.clone(),
        );
        registry.register(
            "publish_lag_ms",
            "Milliseconds from a record's capture until the target acknowledged it",
            metrics.publish_lag_ms.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The figures now.
    #[must_use]
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            forwarded: self.forwarded.get(),
            skipped: self.skipped.get(),
            batches: self.batches.get(),
            retries: self.retries.get(),
            duplicates: self.duplicates.get(),
            maybe_lost: self.maybe_lost.get(),
            acked_sequence: gauge_u64(&self.acked_sequence),
            checkpoint_sequence: gauge_u64(&self.checkpoint_sequence),
            store_last_sequence: gauge_u64(&self.store_last_sequence),
            lag_records: gauge_u64(&self.lag_records),
            lag_seconds: self.lag_seconds.get(),
            connected: self.connected.get() == 1,
            last_error: self.last_error.lock().clone(),
            stopped: self.stopped_error.lock().clone(),
        }
    }

    /// The Prometheus (OpenMetrics) text exposition.
    ///
    /// # Errors
    ///
    /// Only if formatting fails, which writing to a `String` does not.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    pub(crate) fn record_batch(&self, delivered: u64, skipped: u64, duplicates: u64, lost: u64) {
        self.forwarded.inc_by(delivered);
        self.skipped.inc_by(skipped);
        self.duplicates.inc_by(duplicates);
        self.maybe_lost.inc_by(lost);
        self.batches.inc();
        self.connected.set(1);
    }

    /// Observes, for each record the target just acknowledged, how long ago it was
    /// captured (`captured`: Unix nanoseconds).
    pub(crate) fn record_publish_lag(&self, captured: &[i128]) {
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
        for at in captured {
            self.publish_lag_ms
                .observe(((now - at) as f64 / 1e6).max(0.0));
        }
    }

    pub(crate) fn record_failure(&self, error: &str) {
        self.retries.inc();
        self.connected.set(0);
        self.last_error_time
            .set(time::OffsetDateTime::now_utc().unix_timestamp_nanos() as f64 / 1e9);
        *self.last_error.lock() = Some(error.to_owned());
    }

    pub(crate) fn record_stopped(&self, error: String) {
        self.stopped.set(1);
        *self.stopped_error.lock() = Some(error);
    }

    pub(crate) fn record_checkpoint(&self, saved: u64) {
        self.checkpoint_sequence.set(gauge_i64(saved));
    }

    pub(crate) fn record_position(&self, acked: u64, store_last: u64, lag_seconds: f64) {
        self.acked_sequence.set(gauge_i64(acked));
        self.store_last_sequence.set(gauge_i64(store_last));
        self.lag_records
            .set(gauge_i64(store_last.saturating_sub(acked)));
        self.lag_seconds.set(lag_seconds.max(0.0));
    }
}

fn gauge_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn gauge_u64(gauge: &Gauge) -> u64 {
    u64::try_from(gauge.get()).unwrap_or(0)
}

/// Serves `/metrics` (Prometheus text) and `/health` (JSON; 200 while deliveries succeed,
/// 503 while the target is failing) on `listener` until `shutdown` turns true, within the
/// default [`Limits`](crate::http_server::Limits) (connections, header timeout and size).
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let router = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .with_state(metrics);
    let stop = async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    };
    crate::http_server::serve(
        listener,
        router,
        crate::http_server::Limits::default(),
        stop,
    )
    .await;
}

async fn metrics_text(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
) -> impl IntoResponse {
    match metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cannot encode metrics".to_owned(),
        ),
    }
}

async fn health(
    axum::extract::State(metrics): axum::extract::State<Arc<Metrics>>,
) -> impl IntoResponse {
    let snapshot = metrics.snapshot();
    let failing = snapshot.status() != "ok";
    let body = serde_json::json!({
        "status": snapshot.status(),
        "acked_sequence": snapshot.acked_sequence,
        "checkpoint_sequence": snapshot.checkpoint_sequence,
        "store_last_sequence": snapshot.store_last_sequence,
        "lag_records": snapshot.lag_records,
        "lag_seconds": snapshot.lag_seconds,
        "forwarded": snapshot.forwarded,
        "retries": snapshot.retries,
        "last_error": snapshot.stopped.or(snapshot.last_error),
    });
    let status = if failing {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_figure_with_its_target() {
        let metrics = Metrics::new("redis");
        metrics.record_batch(10, 2, 0, 0);
        metrics.record_failure("connection refused");
        metrics.record_position(12, 20, 1.5);
        metrics.record_checkpoint(9);
        let captured = time::OffsetDateTime::now_utc().unix_timestamp_nanos() - 2_000_000_000;
        metrics.record_publish_lag(&[captured]);
        let text = metrics.encode().unwrap();
        assert!(text.contains("esl_replay_forward_publish_lag_ms_count{target=\"redis\"} 1"));
        // Captured two seconds ago: the lag observed is two seconds and a little more.
        let sum: f64 = text
            .lines()
            .find_map(|l| {
                l.strip_prefix("esl_replay_forward_publish_lag_ms_sum{target=\"redis\"} ")
            })
            .unwrap()
            .parse()
            .unwrap();
        assert!((2000.0..60_000.0).contains(&sum), "{sum}");
        assert!(text.contains("esl_replay_forward_records_total{target=\"redis\"} 10"));
        assert!(text.contains("esl_replay_forward_retries_total{target=\"redis\"} 1"));
        assert!(text.contains("esl_replay_forward_lag_records{target=\"redis\"} 8"));
        assert!(text.contains("esl_replay_forward_lag_seconds{target=\"redis\"} 1.5"));
        assert!(text.contains("esl_replay_forward_acked_sequence{target=\"redis\"} 12"));
        assert!(text.contains("esl_replay_forward_checkpoint_sequence{target=\"redis\"} 9"));
        let snapshot = metrics.snapshot();
        assert_eq!(snapshot.acked_sequence, 12);
        assert_eq!(snapshot.checkpoint_sequence, 9);
        assert!(!snapshot.connected);
        assert_eq!(snapshot.last_error.as_deref(), Some("connection refused"));
    }
}
