//! The store a forwarder follows, opened read-only beside the writer.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::store::{self, ArtifactReader, Backend, LogStore, ReadOnly};

/// A followed store: the segment log wakes the forwarder as soon as records are durable;
/// other backends are polled.
pub enum Source {
    /// A segment-log store (woken as records become durable). Shared, so that the forwarder
    /// can read the next batch on another thread.
    Log(Arc<ReadOnly<LogStore>>),
    /// Any other backend (polled every [`Source::POLL`]).
    Other(Box<dyn ArtifactReader>),
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Log(store) => f.debug_tuple("Log").field(&store.root()).finish(),
            Source::Other(_) => f.write_str("Other"),
        }
    }
}

impl Source {
    /// How often a non-log store is polled for new records.
    pub const POLL: Duration = Duration::from_millis(100);

    /// Opens the store at `path` read-only (no writer lock; a capture may be appending).
    ///
    /// # Errors
    ///
    /// Store errors, including a missing store.
    pub fn open_read_only(path: &Path, backend: Option<Backend>) -> store::Result<Source> {
        Ok(match backend.unwrap_or_else(|| Backend::for_path(path)) {
            Backend::Log => Source::Log(Arc::new(LogStore::open_read_only(path)?)),
            Backend::Sqlite => Source::Other(store::open_read_only(path, Some(Backend::Sqlite))?),
        })
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &dyn ArtifactReader {
        match self {
            Source::Log(store) => store.as_ref(),
            Source::Other(store) => store.as_ref(),
        }
    }

    /// The last append sequence a forwarder may read: the last record a power loss cannot
    /// take back. A segment log's writer says so in its watermark file
    /// ([`LogStore::durable_through`]); other backends sync what this handle can read
    /// ([`ArtifactReader::sync_readable`]).
    ///
    /// # Errors
    ///
    /// Store errors met while looking for new records, or a failed sync.
    pub fn durable_through(&self) -> store::Result<u64> {
        match self {
            Source::Log(store) => store.durable_through(),
            Source::Other(store) => store.sync_readable(),
        }
    }

    /// Returns once a durable record with an append sequence above `after` exists (a
    /// segment log's follower syncs records itself that its writer leaves unsynced for
    /// [`WATERMARK_PATIENCE`](crate::storage::WATERMARK_PATIENCE)).
    ///
    /// # Errors
    ///
    /// Store errors met while looking for new records.
    pub async fn wait_after(&self, after: u64) -> store::Result<()> {
        match self {
            Source::Log(store) => store.wait_for_durable_records_async(after).await,
            Source::Other(store) => loop {
                if store.wait_for_records(after, Duration::ZERO)? {
                    return Ok(());
                }
                tokio::time::sleep(Self::POLL).await;
            },
        }
    }
}

impl From<ReadOnly<LogStore>> for Source {
    fn from(store: ReadOnly<LogStore>) -> Source {
        Source::Log(Arc::new(store))
    }
}
