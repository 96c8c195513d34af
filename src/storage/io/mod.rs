//! The I/O seam: every write, sync, rename and removal the log performs goes through [`Io`].
//!
//! Production uses [`StdIo`]. Tests substitute an implementation that fails the N-th write
//! or sync, writes short, or reports `ENOSPC`, to prove that errors surface, that nothing
//! acknowledged as durable is lost, and that the log poisons itself after a failed sync.
//! Record bytes are written with `pwrite` into the active segment, which was preallocated
//! through this seam ([`Io::allocate`]), so a write fails only on a failing disk.

pub(crate) mod mmap;

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::{Error, IoOp, Result};

/// The file-system operations the log performs, as a seam for fault injection.
pub trait Io: Send + Sync + fmt::Debug {
    /// Writes `buf` at `offset`; may write fewer bytes (the caller loops).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
        file.write_at(buf, offset)
    }

    /// Makes the file's data durable (`fdatasync`); this also covers pages written through a
    /// shared mapping of the file.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn sync_data(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }

    /// Reserves blocks for `[0, len)` of the file and extends it to at least `len`, reading
    /// as zeros (`fallocate`). Returns `Ok(false)` when the file system cannot, and the
    /// caller then writes zeros instead.
    ///
    /// # Errors
    ///
    /// The operating system's error (`ENOSPC` above all).
    fn allocate(&self, file: &File, len: u64) -> io::Result<bool> {
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, len) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::NOSYS) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }

    /// Makes the file's data and metadata durable (`fsync`).
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn sync_all(&self, file: &File) -> io::Result<()> {
        file.sync_all()
    }

    /// Makes a directory's entries durable.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    /// Renames a file within one directory, replacing the target.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        #[expect(
            clippy::disallowed_methods,
            reason = "this is the seam the lint points to"
        )]
        std::fs::rename(source, target)
    }

    /// Gives a file a second name in its directory (`link`).
    ///
    /// # Errors
    ///
    /// The operating system's error (`EEXIST` if the name is taken, `EPERM` where the file
    /// system has no hard links).
    fn hard_link(&self, original: &Path, link: &Path) -> io::Result<()> {
        std::fs::hard_link(original, link)
    }

    /// Removes a file.
    ///
    /// # Errors
    ///
    /// The operating system's error.
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        #[expect(
            clippy::disallowed_methods,
            reason = "this is the seam the lint points to"
        )]
        std::fs::remove_file(path)
    }
}

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdIo;

impl Io for StdIo {}

/// Writes all of `buf` at `offset`, looping over short writes.
pub(crate) fn write_all_at(
    io: &dyn Io,
    file: &File,
    mut buf: &[u8],
    mut offset: u64,
    path: &Path,
) -> Result<()> {
    while !buf.is_empty() {
        match io.write_at(file, buf, offset) {
            Ok(0) => {
                return Err(Error::io(
                    IoOp::Write,
                    path,
                    io::ErrorKind::WriteZero.into(),
                ));
            }
            Ok(n) => {
                buf = buf.get(n..).unwrap_or_default();
                offset += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(IoOp::Write, path, e)),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes at `offset` (pread), or fewer at end of file.
pub(crate) fn read_at(file: &File, buf: &mut [u8], offset: u64, path: &Path) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let Some(rest) = buf.get_mut(done..) else {
            break;
        };
        match file.read_at(rest, offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(IoOp::Read, path, e)),
        }
    }
    Ok(done)
}
