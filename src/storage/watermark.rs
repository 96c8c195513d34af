//! The watermark file ([META-04]): how a writer tells followers in any process which records
//! are durable. A thread of the writer's rewrites it in place after the watermark moves,
//! without syncing it: every value it ever holds was true when written, so whatever a crash
//! leaves of it names no record beyond the durable end. Not on the sync path: a write that
//! changes a file's modification time may wait for the file system's journal, and the
//! thread that leads a sync is an appender waiting for its acknowledgement.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::bounded::{open_regular, open_regular_with};
use super::dir::DURABLE_FILE;
use super::error::{Error, IoOp, Result, error_chain};
use super::io::{Io, read_at, write_all_at};
use super::meta::{DURABLE_LEN, DurableWatermark};

/// The writer's side: the open file and the value last written to it.
#[derive(Debug)]
pub(crate) struct WatermarkWriter {
    file: File,
    path: PathBuf,
    written: u64,
    /// Whether a failed write was logged (once: followers then sync for themselves).
    failed: bool,
}

impl WatermarkWriter {
    /// Opens (or creates) the watermark file of the log in `dir` and writes `durable` to it.
    /// `None`, logged, when it cannot be written: followers then make records durable
    /// themselves.
    ///
    /// # Errors
    ///
    /// When the file holds a value above `durable` (a recovery that cut damaged records)
    /// that this writer can neither lower durably nor remove: recovery and followers take it
    /// as proof that records up to it are durable [REC-08], so the writer does not go on.
    pub(crate) fn open(io: &dyn Io, dir: &Path, durable: u64) -> Result<Option<WatermarkWriter>> {
        let path = dir.join(DURABLE_FILE);
        let opened = open_regular_with(
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false),
            &path,
        );
        // The path of a file that holds a value above this writer's end, which no file at
        // all is safer than.
        let stale = match opened {
            Ok(file) => {
                let previous = read_value(&file, &path);
                let mut writer = WatermarkWriter {
                    file,
                    path,
                    written: 0,
                    failed: false,
                };
                // A lower value than the last writer's must not be undone by a power loss.
                let lowered = previous.is_some_and(|previous| previous > durable);
                if writer.publish(io, durable) && (!lowered || io.sync_data(&writer.file).is_ok()) {
                    return Ok(Some(writer));
                }
                if !lowered {
                    // What the file holds (if anything) is still true.
                    return Ok(None);
                }
                writer.path
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), error = %error_chain(&error), "cannot open the watermark file; followers will sync for themselves");
                let above = open_regular(&path)
                    .ok()
                    .and_then(|file| read_value(&file, &path))
                    .is_some_and(|previous| previous > durable);
                if !above {
                    return Ok(None);
                }
                path
            }
        };
        io.remove_file(&stale)
            .and_then(|()| io.sync_dir(dir))
            .map_err(|source| Error::io(IoOp::Remove, &stale, source))?;
        Ok(None)
    }

    /// Writes `durable` unless it was written already; returns whether it wrote. A failure
    /// is logged (once), not returned: the records are durable either way, and followers
    /// that cannot read the file sync.
    pub(crate) fn publish(&mut self, io: &dyn Io, durable: u64) -> bool {
        if durable == self.written {
            return false;
        }
        let bytes = DurableWatermark { durable }.encode();
        match write_all_at(io, &self.file, &bytes, 0, &self.path) {
            Ok(()) => {
                self.written = durable;
                self.failed = false;
                true
            }
            Err(error) => {
                if !self.failed {
                    self.failed = true;
                    tracing::warn!(error = %error_chain(&error), "cannot update the watermark file; followers will sync for themselves");
                }
                false
            }
        }
    }
}

/// A follower's side: the file, opened once it exists.
#[derive(Debug)]
pub(crate) struct WatermarkReader {
    path: PathBuf,
    file: Option<File>,
}

impl WatermarkReader {
    pub(crate) fn new(dir: &Path) -> WatermarkReader {
        WatermarkReader {
            path: dir.join(DURABLE_FILE),
            file: None,
        }
    }

    /// What the file says: `None` while there is none (no writer wrote one yet) or while
    /// what is read does not decode (a read racing the writer's rewrite sees a mix).
    pub(crate) fn read(&mut self) -> Option<u64> {
        if self.file.is_none() {
            self.file = super::bounded::open_regular(&self.path).ok();
        }
        read_value(self.file.as_ref()?, &self.path)
    }
}

/// The value in a watermark file, if it decodes.
fn read_value(file: &File, path: &Path) -> Option<u64> {
    let mut bytes = [0u8; DURABLE_LEN];
    let len = read_at(file, &mut bytes, 0, path).ok()?;
    let watermark = DurableWatermark::decode(bytes.get(..len)?).ok()?;
    Some(watermark.durable)
}
