//! Placeholder for the sqlite backend (being written).

use std::path::Path;
use std::time::Duration;

use super::{ArtifactStore, Error, Result, StoreStats};
use crate::record::{Criteria, Envelope, ReadCursor, Record, RecordId};

/// The sqlite backend.
#[derive(Debug)]
pub struct SqliteStore {
    path: std::path::PathBuf,
}

impl SqliteStore {
    /// Opens for writing.
    ///
    /// # Errors
    ///
    /// Not yet implemented.
    pub fn open(path: &Path) -> Result<Self> {
        Err(Error::ReadOnly {
            path: path.to_path_buf(),
        })
    }

    /// Opens with `synchronous=FULL`.
    ///
    /// # Errors
    ///
    /// Not yet implemented.
    pub fn open_durable(path: &Path) -> Result<Self> {
        Err(Error::ReadOnly {
            path: path.to_path_buf(),
        })
    }

    /// Opens read-only.
    ///
    /// # Errors
    ///
    /// Not yet implemented.
    pub fn open_read_only(path: &Path) -> Result<Self> {
        Err(Error::ReadOnly {
            path: path.to_path_buf(),
        })
    }
}

impl ArtifactStore for SqliteStore {
    fn write_batch(&mut self, _envelopes: Vec<Envelope>) -> Result<Vec<RecordId>> {
        Err(Error::ReadOnly {
            path: self.path.clone(),
        })
    }
    fn append_records(&mut self, _records: &[Record]) -> Result<()> {
        Err(Error::ReadOnly {
            path: self.path.clone(),
        })
    }
    fn read_from_cursor(
        &self,
        _cursor: &ReadCursor,
        _limit: usize,
        _criteria: &Criteria,
    ) -> Result<Vec<Record>> {
        Ok(Vec::new())
    }
    fn read_by_id(&self, _id: &RecordId) -> Result<Option<Record>> {
        Ok(None)
    }
    fn stats(&self) -> Result<StoreStats> {
        Ok(StoreStats::default())
    }
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
    fn wait_for_records(&self, _after: u64, _timeout: Duration) -> Result<bool> {
        Ok(false)
    }
}
