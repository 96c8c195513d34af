//! The only place that renames, removes, preallocates and syncs directories (format/recovery.md).
//!
//! Every durable multi-step operation is built from these steps, each of which goes through
//! the [`Io`] seam so tests can fail it.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::error::{Error, IoOp, Result};
use super::io::{Io, StdIo, write_all_at};

/// Makes a directory's entries durable.
pub(crate) fn sync_dir(io: &dyn Io, dir: &Path) -> Result<()> {
    io.sync_dir(dir)
        .map_err(|e| Error::io(IoOp::SyncDir, dir, e))
}

/// Replaces `target` with `bytes` atomically and durably [ATOM-01]:
///
/// 1. write a uniquely named temporary file in the same directory;
/// 2. `fsync` it;
/// 3. rename it over `target`;
/// 4. `fsync` the directory.
///
/// A crash before step 3 leaves the old file (and a stray temporary, removed on open); after
/// step 3 the new file, durable once step 4 returns. Concurrent replacements of one target
/// never mix bytes: each has its own temporary and the last rename wins.
pub(crate) fn replace_file(io: &dyn Io, target: &Path, bytes: &[u8]) -> Result<()> {
    let temp = write_temporary(io, target, bytes)?;
    if let Err(source) = io.rename(&temp, target) {
        let _ = io.remove_file(&temp);
        return Err(Error::io(IoOp::Rename, target, source));
    }
    sync_dir(io, target.parent().unwrap_or(Path::new(".")))
}

/// Steps 1 and 2 of [`replace_file`]: `bytes` written to a new temporary beside `target`,
/// named `.NAME.XXXXXXXXXXXXXXXX.tmp` [ATOM-01], and synced; returns its path. On failure
/// the temporary is removed (best effort).
pub(crate) fn write_temporary(io: &dyn Io, target: &Path, bytes: &[u8]) -> Result<PathBuf> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let written = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io(IoOp::Create, &temp, e))?;
        write_all_at(io, &file, bytes, 0, &temp)?;
        io.sync_all(&file)
            .map_err(|e| Error::io(IoOp::Sync, &temp, e))
    })();
    match written {
        Ok(()) => Ok(temp),
        Err(error) => {
            let _ = io.remove_file(&temp);
            Err(error)
        }
    }
}

/// Replaces a small file atomically and durably on the real file system.
///
/// This is the helper checkpoints and other metadata use. The steps: write a uniquely named
/// temporary file in the same directory, `fsync` it, rename it over `target`, `fsync` the
/// directory [ATOM-01].
///
/// # Errors
///
/// The first file-system operation that failed, with its path.
pub fn write_atomic(target: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(&StdIo, target, bytes)
}

/// [`write_atomic`] through another I/O seam (for crash and fault tests of the layers that
/// keep metadata in small files).
///
/// # Errors
///
/// As [`write_atomic`].
pub fn write_atomic_with(io: &dyn Io, target: &Path, bytes: &[u8]) -> Result<()> {
    replace_file(io, target, bytes)
}

/// Removes one file durably: unlinks it, then syncs its directory. Returns whether the file
/// existed; a missing file is not an error.
///
/// This is the helper checkpoints and other metadata use to delete a small file.
///
/// # Errors
///
/// The removal or the directory sync failed, with its path.
pub fn remove_durable(path: &Path) -> Result<bool> {
    remove_durable_with(&StdIo, path)
}

/// [`remove_durable`] through another I/O seam.
///
/// # Errors
///
/// As [`remove_durable`].
pub fn remove_durable_with(io: &dyn Io, path: &Path) -> Result<bool> {
    match io.remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(IoOp::Remove, path, e)),
    }
    sync_dir(io, path.parent().unwrap_or(Path::new(".")))?;
    Ok(true)
}

/// Creates a directory and any missing ancestors, durably: each directory created is made
/// durable by syncing its parent, so a crash cannot lose a directory that a later durable
/// write put files in. An existing directory is left as it is.
///
/// # Errors
///
/// The creation or a directory sync failed, with its path.
pub fn create_dir_durable(dir: &Path) -> Result<()> {
    create_dir_durable_with(&StdIo, dir)
}

/// [`create_dir_durable`] through another I/O seam.
///
/// # Errors
///
/// As [`create_dir_durable`].
pub fn create_dir_durable_with(io: &dyn Io, dir: &Path) -> Result<()> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|ancestor| !ancestor.as_os_str().is_empty() && !ancestor.is_dir())
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(IoOp::Create, dir, e))?;
    for created in missing.iter().rev() {
        let parent = match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        sync_dir(io, parent)?;
    }
    Ok(())
}

/// Removes files and then makes the removals durable with one directory sync.
pub(crate) fn remove_files(io: &dyn Io, dir: &Path, paths: &[PathBuf]) -> Result<()> {
    for path in paths {
        match io.remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(IoOp::Remove, path, e)),
        }
    }
    if paths.is_empty() {
        Ok(())
    } else {
        sync_dir(io, dir)
    }
}

/// Creates (or recreates) `path` as `len` bytes that read as zeros, with their blocks
/// reserved and the size durable, so that an `ENOSPC` surfaces here and never on a later
/// write, and `fdatasync` of the segment has no size change to record [SEG-08].
///
/// The blocks are reserved with `fallocate`: they read as zeros without being written, so a
/// segment costs the device its records' bytes and not a second pass of zeros that an
/// `fdatasync` of the active segment would queue behind. Where the file system cannot
/// allocate, zeros are written instead, flushed as they go.
///
/// On failure the partial file is removed (best effort), so that a disk that ran out of space
/// is not left full of zeros that hold nothing.
pub(crate) fn create_zeroed(io: &dyn Io, path: &Path, len: u64) -> Result<File> {
    let created = fill_zeroed(io, path, len);
    if created.is_err() {
        let _ = io.remove_file(path);
    }
    created
}

fn fill_zeroed(io: &dyn Io, path: &Path, len: u64) -> Result<File> {
    let file = super::bounded::open_regular_with(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true),
        path,
    )
    .map_err(|e| Error::io(IoOp::Create, path, e))?;
    let allocated = io
        .allocate(&file, len)
        .map_err(|e| Error::io(IoOp::Allocate, path, e))?;
    if !allocated {
        write_zeros(io, &file, path, len)?;
    }
    io.sync_all(&file)
        .map_err(|e| Error::io(IoOp::Sync, path, e))?;
    Ok(file)
}

/// Writes `[0, len)` as zeros, flushing every few MiB so that a foreground `fdatasync` of
/// the active segment never queues behind a whole segment's worth of writeback.
fn write_zeros(io: &dyn Io, file: &File, path: &Path, len: u64) -> Result<()> {
    const CHUNK: usize = 1 << 20;
    const FLUSH_EVERY: u64 = 4 << 20;
    let zeros = vec![0u8; CHUNK];
    let mut offset = 0u64;
    while offset < len {
        let n = usize::try_from(len - offset).unwrap_or(CHUNK).min(CHUNK);
        write_all_at(io, file, zeros.get(..n).unwrap_or_default(), offset, path)?;
        offset += n as u64;
        if offset.is_multiple_of(FLUSH_EVERY) && offset < len {
            io.sync_data(file)
                .map_err(|e| Error::io(IoOp::Sync, path, e))?;
        }
    }
    Ok(())
}
