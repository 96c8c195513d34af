//! The one module with `unsafe` code: memory maps of segment files (docs/SAFETY.md).
//!
//! A [`SegmentMap`] maps a whole preallocated segment file. Two rules make the slices it
//! hands out sound, and every caller keeps them:
//!
//! 1. **Readers only see published bytes.** [`SegmentMap::published`] returns `[0, end)`,
//!    where `end` was published (with release ordering) by the writer after the bytes below
//!    it were written, or was established by validating the frames below it with `pread`.
//!    Bytes below a published end are never written again while the file is mapped.
//! 2. **The writer only writes beyond the published end.** [`SegmentMap::write`] hands out a
//!    mutable slice of `[offset, offset + len)` with `offset >= end`, under the log's single
//!    writer, so it never overlaps a slice a reader holds.
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
    /// Maps the file for reading and writing (the writer's active segment).
    pub(crate) fn writable(file: &File, path: &Path) -> Result<SegmentMap> {
        let raw = MmapOptions::new()
            .map_raw(file)
            .map_err(|e| Error::io(IoOp::Map, path, e))?;
        Ok(SegmentMap { raw })
    }

    /// Maps the file for reading only.
    pub(crate) fn read_only(file: &File, path: &Path) -> Result<SegmentMap> {
        let raw = MmapOptions::new()
            .map_raw_read_only(file)
            .map_err(|e| Error::io(IoOp::Map, path, e))?;
        Ok(SegmentMap { raw })
    }

    /// The mapped length.
    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }

    /// The published bytes `[0, end)`, clamped to the mapping.
    pub(crate) fn published(&self, end: u64) -> &[u8] {
        let len = usize::try_from(end)
            .unwrap_or(usize::MAX)
            .min(self.raw.len());
        #[expect(unsafe_code, reason = "reading a shared file mapping (docs/SAFETY.md)")]
        // SAFETY: the pointer is valid for `raw.len()` bytes for as long as `self` lives, and
        // `len` is clamped to that. By rule 1 of the module docs, nothing writes `[0, end)`
        // while this borrow of `self` lives.
        unsafe {
            std::slice::from_raw_parts(self.raw.as_ptr(), len)
        }
    }

    /// Lets the writer fill `[offset, offset + len)`, which lies beyond every published end.
    ///
    /// Returns `None` if the range does not fit in the mapping.
    pub(crate) fn write<R>(
        &self,
        offset: u64,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Option<R> {
        let start = usize::try_from(offset).ok()?;
        if start.checked_add(len)? > self.raw.len() {
            return None;
        }
        let target = self.raw.as_mut_ptr().wrapping_add(start);
        #[expect(
            unsafe_code,
            reason = "writing the unpublished tail of the active segment"
        )]
        // SAFETY: `start + len <= raw.len()` was checked, so `target` is valid for `len`
        // bytes, and the map was created writable (only the writer calls this, on its own
        // active segment). By rule 2 of the module docs the range lies beyond every published
        // end, so no shared slice overlaps it, and the single writer holds `&mut Log`, so no
        // other mutable slice exists either.
        let bytes = unsafe { std::slice::from_raw_parts_mut(target, len) };
        Some(fill(bytes))
    }
}
