//! A log store whose appends fail with "no space left on device" whenever its `refuse`
//! closure says so, for the failure paths of the code that appends (import, capture); a
//! closure that blocks makes appends wait (a frozen file system).

use std::time::Duration;

use esl_replay::record::{Criteria, Envelope, ReadCursor, Record, RecordId};
use esl_replay::store::{self, ArtifactReader, ArtifactStore, LogStore, StoreStats};

pub(crate) struct RefusingStore {
    inner: LogStore,
    /// Asked before each `append_records`: `true` fails it.
    refuse: Box<dyn FnMut() -> bool + Send>,
    /// How many records of a refused call are stored before it fails (as a segment log
    /// stores a batch's records up to a roll that finds the disk full).
    stored_before_refusal: usize,
}

impl RefusingStore {
    pub(crate) fn new(inner: LogStore, refuse: impl FnMut() -> bool + Send + 'static) -> Self {
        RefusingStore {
            inner,
            refuse: Box::new(refuse),
            stored_before_refusal: 0,
        }
    }

    /// Stores the first `records` of each refused call before failing it.
    pub(crate) fn storing_first(mut self, records: usize) -> Self {
        self.stored_before_refusal = records;
        self
    }
}

impl ArtifactStore for RefusingStore {
    fn write_batch(&mut self, envelopes: Vec<Envelope>) -> store::Result<Vec<RecordId>> {
        self.inner.write_batch(envelopes)
    }

    fn append_records(&mut self, records: &[Record]) -> store::Result<()> {
        if (self.refuse)() {
            let stored = records.len().min(self.stored_before_refusal);
            if stored > 0 {
                self.inner.append_records(&records[..stored])?;
            }
            return Err(store::Error::Io {
                op: "write",
                path: "log/00000000000000000001.seg".into(),
                source: std::io::Error::from_raw_os_error(28),
            });
        }
        self.inner.append_records(records)
    }

    fn sync(&mut self) -> store::Result<()> {
        self.inner.sync()
    }
}

impl ArtifactReader for RefusingStore {
    fn read_from_cursor(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
    ) -> store::Result<Vec<Record>> {
        self.inner.read_from_cursor(cursor, limit, criteria)
    }

    fn read_by_id(&self, id: &RecordId) -> store::Result<Option<Record>> {
        self.inner.read_by_id(id)
    }

    fn stats(&self) -> store::Result<StoreStats> {
        self.inner.stats()
    }

    fn wait_for_records(&self, after: u64, timeout: Duration) -> store::Result<bool> {
        self.inner.wait_for_records(after, timeout)
    }

    fn sync_readable(&self) -> store::Result<u64> {
        self.inner.sync_readable()
    }
}
