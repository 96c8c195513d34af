//! A store handle that can only read.

use std::ops::Deref;
use std::time::Duration;

use super::{ArtifactReader, Result, StoreStats, Summary};
use crate::record::{Criteria, ReadCursor, Record, RecordId, RecordView};

/// A store opened read-only ([`super::open_read_only`], [`super::LogStore::open_read_only`]):
/// it reads as its backend does, beside a writer in any process (C6), and lends the backend
/// only by shared reference. Every write takes `&mut self`, so a write through a read-only
/// handle is a compile error, not a runtime one.
///
/// It reads, and the backend's own read-only methods are reached through it:
///
/// ```
/// use esl_replay::store::{ArtifactReader as _, ArtifactStore as _, LogStore, dataset};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let mut writer = LogStore::open(dir.path())?;
/// writer.write(dataset::envelope(1))?;
///
/// let reader = LogStore::open_read_only(dir.path())?;
/// assert_eq!(reader.stats()?.records, 1);
/// reader.verify_metadata()?;
/// # Ok(())
/// # }
/// ```
///
/// but it does not write, not even through a `mut` binding:
///
/// ```compile_fail,E0596
/// use esl_replay::store::{ArtifactReader as _, ArtifactStore as _, LogStore, dataset};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let dir = tempfile::tempdir()?;
/// let mut writer = LogStore::open(dir.path())?;
/// writer.write(dataset::envelope(1))?;
///
/// let mut reader = LogStore::open_read_only(dir.path())?;
/// reader.write(dataset::envelope(2))?; // no `&mut LogStore` to be had
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ReadOnly<S>(S);

impl<S> ReadOnly<S> {
    /// Wraps a backend handle that was opened without a writer.
    pub(crate) fn new(store: S) -> Self {
        ReadOnly(store)
    }
}

impl<S> Deref for ReadOnly<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.0
    }
}

impl<S: ArtifactReader> ArtifactReader for ReadOnly<S> {
    fn read_from_cursor(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
    ) -> Result<Vec<Record>> {
        self.0.read_from_cursor(cursor, limit, criteria)
    }

    fn visit_from_cursor(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
        visit: &mut dyn FnMut(&RecordView<'_>),
    ) -> Result<usize> {
        self.0.visit_from_cursor(cursor, limit, criteria, visit)
    }

    fn read_by_id(&self, id: &RecordId) -> Result<Option<Record>> {
        self.0.read_by_id(id)
    }

    fn open_cursor(&self) -> ReadCursor {
        self.0.open_cursor()
    }

    fn stats(&self) -> Result<StoreStats> {
        self.0.stats()
    }

    fn summary(&self) -> Result<Summary> {
        self.0.summary()
    }

    fn wait_for_records(&self, after: u64, timeout: Duration) -> Result<bool> {
        self.0.wait_for_records(after, timeout)
    }

    fn sync_readable(&self) -> Result<u64> {
        self.0.sync_readable()
    }
}
