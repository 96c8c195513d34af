//! The one module with `unsafe` code: memory maps of segment files (docs/SAFETY.md).
//!
//! A [`SegmentMap`] maps a whole preallocated segment file, read-only. One rule makes the
//! slices it hands out sound, and every caller keeps it: **readers only see published
//! bytes.** [`SegmentMap::published`] returns `[0, end)`, where `end` was published (with
//! release ordering) by the writer after `pwrite` put the bytes below it in the file, or was
//! established by validating the frames below it with `pread`. Bytes below a published end
//! are never written again while the file exists: the writer writes files only with
//! `pwrite`, only beyond the published end, and never maps them writable.
//!
//! Files are never truncated while mapped: recovery zeroes a torn tail instead, and
//! retention only unlinks whole files (a mapping outlives the unlink). The remaining hazard
//! is another program truncating or rewriting segment files, which we cannot prevent; the
//! writer lock and the docs make that a misuse, and it would raise `SIGBUS`.

use std::fs::File;
use std::path::Path;

use memmap2::{MmapOptions, MmapRaw};

use crate::storage::error::{Error, IoOp, Result};

/// A mapping of one whole segment file.
#[derive(Debug)]
pub(crate) struct SegmentMap {
    raw: MmapRaw,
}

impl SegmentMap {
    /// Maps the file for reading only.
    pub(crate) fn read_only(file: &File, path: &Path) -> Result<SegmentMap> {
        let raw = MmapOptions::new()
            .map_raw_read_only(file)
            .map_err(|e| Error::io(IoOp::Map, path, e))?;
        Ok(SegmentMap { raw })
    }

    /// The published bytes `[0, end)`, clamped to the mapping.
    pub(crate) fn published(&self, end: u64) -> &[u8] {
        let len = usize::try_from(end)
            .unwrap_or(usize::MAX)
            .min(self.raw.len());
        #[expect(unsafe_code, reason = "reading a shared file mapping (docs/SAFETY.md)")]
        // SAFETY: the pointer is valid for `raw.len()` bytes for as long as `self` lives, and
        // `len` is clamped to that. By the rule of the module docs, nothing writes `[0, end)`
        // while this borrow of `self` lives.
        unsafe {
            std::slice::from_raw_parts(self.raw.as_ptr(), len)
        }
    }
}
