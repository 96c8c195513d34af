//! The one module with `unsafe` code: memory maps of segment files (docs/SAFETY.md).
//!
//! A [`SegmentMap`] maps a whole preallocated segment file, read-only, and keeps its own
//! published end: the length of the prefix that readers may borrow. Two rules make the
//! slices it hands out sound:
//!
//! 1. **Readers only see published bytes.** [`SegmentMap::published`] returns `[0, end)` for
//!    the map's own published end, which only grows ([`SegmentMap::publish`]), so no caller
//!    can ask for more; nothing else in this module reads the mapping ([`SegmentMap::populate`]
//!    only has the kernel map pages below the published end, ahead of readers, and
//!    [`SegmentMap::forget`] only has it drop pages from the page tables).
//! 2. **Nothing writes below the published end.** Segment files are never mapped writable:
//!    the writer writes them with `pwrite`, only beyond the published end, and publishes a
//!    range only after writing it (format/recovery.md [LOG-02]).
//!
//! Publishing states that the bytes below the new end are complete and never change again:
//! the writer's end after it wrote them, or an end established by validating the frames
//! below it with `pread` (followers).
//!
//! Files are never truncated while mapped: recovery zeroes a torn tail instead, and
//! retention only unlinks whole files (a mapping outlives the unlink); it frees a removed
//! file's blocks only when no reader holds the file open ([TRUNC-04]), and a map never
//! outlives the file handle beside it. The remaining hazard
//! is another program truncating or rewriting segment files, which we cannot prevent; the
//! writer lock and the docs make that a misuse, and it would raise `SIGBUS`.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use crate::storage::error::{Error, IoOp, Result};

/// A mapping of one whole segment file.
#[derive(Debug)]
pub(crate) struct SegmentMap {
    raw: MmapRaw,
    /// Bytes below this are published: readers may borrow them, and nothing writes them
    /// again. Only grows, and never exceeds `raw.len()`.
    published: AtomicUsize,
}

impl SegmentMap {
    fn new(raw: MmapRaw) -> SegmentMap {
        SegmentMap {
            raw,
            published: AtomicUsize::new(0),
        }
    }

    /// Maps the file for reading only.
    pub(crate) fn read_only(file: &File, path: &Path) -> Result<SegmentMap> {
        let raw = MmapOptions::new()
            .map_raw_read_only(file)
            .map_err(|e| Error::io(IoOp::Map, path, e))?;
        Ok(SegmentMap::new(raw))
    }

    /// Publishes `[0, end)` (clamped to the mapping): its bytes are complete and never
    /// change again (rule 2 of the module docs). A smaller end than the current one changes
    /// nothing.
    pub(crate) fn publish(&self, end: u64) {
        let end = usize::try_from(end)
            .unwrap_or(usize::MAX)
            .min(self.raw.len());
        if end > self.published.load(Ordering::Relaxed) {
            self.published.fetch_max(end, Ordering::Release);
        }
    }

    /// Has the kernel map the published pages of `[from, to)` into this process's page
    /// tables now (reading them from the file if the page cache does not hold them), so that
    /// reading them later takes no page fault. Creates no slice.
    pub(crate) fn populate(&self, from: usize, to: usize) -> std::io::Result<()> {
        let to = to.min(self.published.load(Ordering::Acquire));
        if from >= to {
            return Ok(());
        }
        self.raw
            .advise_range(memmap2::Advice::PopulateRead, from, to - from)
    }

    /// Drops the pages of `[from, to)` from this process's page tables (`MADV_DONTNEED`),
    /// so that they stop counting in its resident memory; the next read of them maps them
    /// again from the page cache, or reads the file. Slices of the map stay valid and read
    /// the same bytes. Creates no slice.
    pub(crate) fn forget(&self, from: usize, to: usize) -> std::io::Result<()> {
        let to = to.min(self.raw.len());
        if from >= to {
            return Ok(());
        }
        #[expect(
            unsafe_code,
            reason = "dropping pages of a shared file mapping (docs/SAFETY.md)"
        )]
        // SAFETY: the mapping is shared, read-only and of a file: after `MADV_DONTNEED` a read
        // of these pages maps them again from the file's current contents. Published bytes
        // never change (rule 2 of the module docs) and unpublished ones are never read, so
        // every slice of the map, including those alive now, reads the same bytes before and
        // after; the range is inside the mapping.
        unsafe {
            self.raw
                .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, from, to - from)
        }
    }

    /// The published bytes: `[0, end)` for the end last published.
    #[inline]
    pub(crate) fn published(&self) -> &[u8] {
        // Acquire pairs with the release in `publish`: the bytes below the end loaded are
        // visible to this thread.
        let len = self.published.load(Ordering::Acquire);
        debug_assert!(len <= self.raw.len());
        #[expect(unsafe_code, reason = "reading a shared file mapping (docs/SAFETY.md)")]
        // SAFETY: the pointer is valid for `raw.len()` bytes for as long as `self` lives, and
        // `len <= raw.len()` (`publish` clamps it). The published end only grows, so `[0, len)`
        // stays published while this borrow of `self` lives, and by rule 2 of the module docs
        // nothing writes published bytes.
        unsafe {
            std::slice::from_raw_parts(self.raw.as_ptr(), len)
        }
    }
}
