//! Forwarding: ship the store's records to Redis Streams or NATS (JetStream or core) with
//! resumable delivery.
//!
//! One loop ([`forward`]) serves every target: it reads records after the checkpoint of a
//! [`CheckpointService`](crate::checkpoint::CheckpointService), leaves out those the
//! [`Criteria`](crate::record::Criteria) do not select, hands each batch to a [`Sink`] and
//! saves the checkpoint after the sink acknowledged the batch. A restart therefore resumes
//! exactly after the last confirmed batch: records are never skipped, and at most the batch
//! in flight at a crash is sent again.
//!
//! - [`RedisSink`]: pipelined `XADD` batches in one `MULTI`/`EXEC`, each record to the first
//!   of its [`RedisStream`]s that [`Takes`] it (a separate stream for `BACKGROUND_JOB`
//!   results, lists of event names), per-stream `MAXLEN ~` on every `XADD` and a periodic
//!   `XTRIM MINID ~` for an age limit; at-least-once.
//! - [`NatsSink`]: JetStream publish with every acknowledgement awaited and `Nats-Msg-Id`
//!   set to the record id, so re-sent records are dropped by the server's deduplication
//!   (exactly once within the stream's duplicate window); or core NATS, at-most-once.
//! - [`Message`] is the wire form: the reference NDJSON line as the body, plus the record
//!   id, append sequence, artifact name, event name and job UUID as fields or headers.
//! - [`Metrics`] counts records, retries and lag, and [`serve_metrics`] exposes them at
//!   `/metrics` (Prometheus) and `/health`.
//!
//! The module uses `record`, `store` and `checkpoint`; it never prints (it logs with
//! `tracing`).

mod backoff;
mod error;
mod forwarder;
pub mod message;
mod metrics;
mod nats;
mod normalise;
mod redis;
mod routing;
mod source;

use std::future::Future;

pub use backoff::Backoff;
pub use error::{Error, SinkError};
pub use forwarder::{Delivery, ForwardOptions, ForwardReport, Stopped, forward};
pub use message::Message;
pub use metrics::{Metrics, MetricsSnapshot, serve as serve_metrics};
pub use nats::{NatsMode, NatsOptions, NatsSink, check_subject};
pub use normalise::{MessageFormat, SCHEMA as FS_EVENTS_SCHEMA, fs_event_v1};
pub use redis::{RedisOptions, RedisSink, RedisStream};
pub use routing::Takes;
pub use source::Source;

/// A forwarding target: publishes a batch and returns once the target confirmed it.
pub trait Sink {
    /// A short name for logs and errors (`redis`, `jetstream`, `nats`).
    fn target(&self) -> &'static str;

    /// Publishes `batch` in order. `Ok` means the target confirmed every record (or, for an
    /// unconfirmed mode, that the records were handed over and will not be resent); the
    /// forwarder then saves its checkpoint. [`SinkError::Unavailable`] makes the forwarder
    /// retry the whole batch after a backoff.
    fn publish(&mut self, batch: &[Message]) -> impl Future<Output = Result<Delivery, SinkError>>;

    /// The records this target takes; the forwarder skips the others before encoding them
    /// (counted as skipped, the checkpoint moves past them). Default: every record.
    fn takes(&self) -> Takes {
        Takes::Everything
    }

    /// Housekeeping the target needs while the forwarder runs (Redis: trimming streams by
    /// age), polled beside the forwarding loop and dropped when it stops; it must not borrow
    /// the sink. Default: none.
    fn maintain(&self) -> impl Future<Output = ()> + 'static {
        std::future::pending()
    }
}
