//! Errors of the forwarding layer.

use std::fmt;

/// Why a forwarder stopped with an error (retryable sink failures never end up here: they
/// are retried with backoff).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading the store failed.
    #[error("cannot read the store")]
    Store(#[from] crate::store::Error),
    /// Loading or saving the checkpoint failed, or records after it were pruned.
    #[error("the forwarder's checkpoint cannot be loaded, saved or resumed from")]
    Checkpoint(#[from] crate::checkpoint::Error),
    /// A record could not be turned into a cursor position (an invalid sequence).
    #[error("invalid cursor position")]
    Record(#[from] crate::record::Error),
    /// The target refused the batch in a way retrying cannot fix (for example a Redis key of
    /// the wrong type, or a missing JetStream stream).
    #[error("{target} refused the records: {message}")]
    Rejected {
        /// `redis`, `jetstream` or `nats`.
        target: &'static str,
        /// What the server or client said.
        message: String,
    },
    /// The thread reading the next batch ahead failed (it panicked, or the runtime shut
    /// down under it).
    #[error("the store read running ahead of the sink failed")]
    ReadAhead(#[source] tokio::task::JoinError),
    /// The options are inconsistent (for example a batch size of 0).
    #[error("invalid forwarder option: {0}")]
    InvalidOption(String),
}

/// How a sink failed to deliver a batch.
#[derive(Debug)]
pub enum SinkError {
    /// The server is unreachable or did not confirm in time; the batch is retried after a
    /// backoff. Nothing is known about which records arrived.
    Unavailable(String),
    /// Retrying cannot help; the forwarder stops with [`Error::Rejected`].
    Rejected(String),
}

impl SinkError {
    /// The message, whatever the kind.
    #[must_use]
    pub fn message(&self) -> &str {
        match self {
            SinkError::Unavailable(message) | SinkError::Rejected(message) => message,
        }
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Unavailable(message) => write!(f, "unavailable: {message}"),
            SinkError::Rejected(message) => write!(f, "rejected: {message}"),
        }
    }
}

impl std::error::Error for SinkError {}
