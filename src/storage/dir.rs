//! The files of a log directory: naming, listing and locks (format/directory.md).

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use super::error::{Error, IoOp, Result};

/// The writer lock file: held (flock-style, exclusive) by the one writer [DIR-03].
pub const WRITER_LOCK: &str = "writer.lock";
/// The retention lock file: serialises prefix truncations across processes [DIR-04].
pub const RETENTION_LOCK: &str = "retention.lock";
/// The logical-start file.
pub const START_FILE: &str = "start.meta";
/// The clean-shutdown marker.
pub const CLEAN_FILE: &str = "clean.meta";
/// The watermark file: the writer's durable watermark, for followers [META-04].
pub const DURABLE_FILE: &str = "durable.meta";
/// The preallocated spare segment, renamed into place at the next roll.
pub const SPARE_FILE: &str = "spare.seg.tmp";
/// How many removed segments' files the writer keeps for its next segments at most
/// ([TRUNC-05]).
pub const RECYCLE_POOL: usize = 4;

/// The name of the removed segment `base`'s file while it is kept for one of the writer's
/// next segments [TRUNC-05] (a temporary): `recycle.` and its base as in [DIR-01], `.seg.tmp`.
#[must_use]
pub fn recycle_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("recycle.{base:020}.seg.tmp"))
}

/// The segment file of the segment starting at `base` [DIR-01].
#[must_use]
pub fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The index file of the segment starting at `base`.
#[must_use]
pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.idx"))
}

/// The base sequence a segment file's name gives [DIR-01] (`None` for any other name).
#[must_use]
pub fn segment_base(name: &str) -> Option<u64> {
    parse_base(name, ".seg")
}

/// The base sequence an index file's name gives [DIR-01] (`None` for any other name).
#[must_use]
pub fn index_base(name: &str) -> Option<u64> {
    parse_base(name, ".idx")
}

fn parse_base(name: &str, extension: &str) -> Option<u64> {
    let digits = name.strip_suffix(extension)?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// What a log directory holds.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    /// Base sequences of segment files, ascending.
    pub(crate) segments: Vec<u64>,
    /// Base sequences of index files, ascending.
    pub(crate) indexes: Vec<u64>,
    /// Temporary files left by an interrupted operation [DIR-02].
    pub(crate) temporaries: Vec<PathBuf>,
}

/// Lists the log files in `dir`, ignoring files that are not the log's.
pub(crate) fn list(dir: &Path) -> Result<Listing> {
    let mut listing = Listing::default();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(IoOp::List, dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(IoOp::List, dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_base(name, ".seg") {
            listing.segments.push(base);
        } else if let Some(base) = parse_base(name, ".idx") {
            listing.indexes.push(base);
        } else if name.ends_with(".tmp") {
            listing.temporaries.push(entry.path());
        }
    }
    listing.segments.sort_unstable();
    listing.indexes.sort_unstable();
    Ok(listing)
}

fn open_lock_file(path: &Path) -> Result<File> {
    super::bounded::open_regular_with(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false),
        path,
    )
    .map_err(|e| Error::io(IoOp::Lock, path, e))
}

/// A held lock file, released when dropped; for the writer, also its lock on the log
/// directory itself [DIR-03].
///
/// An `flock` belongs to the open file description, and a child process forked meanwhile by
/// any thread holds a copy of the descriptor until its `exec` closes it: closing our
/// descriptor alone would leave the lock held by that copy, and a writer reopening the log
/// at once would find it locked. Unlocking releases it whatever copies exist.
#[derive(Debug)]
pub(crate) struct HeldLock {
    file: File,
    /// The writer's exclusive lock on the log directory's own descriptor (`None` for the
    /// retention lock, and where the file system cannot lock a directory).
    directory: Option<File>,
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        // Nothing to report to: closing the file releases the lock in the end anyway.
        let _ = self.file.unlock();
        if let Some(directory) = &self.directory {
            let _ = directory.unlock();
        }
    }
}

/// How many times a lock is taken again when the lock file it locked lost its name
/// meanwhile (removed from outside, and created anew by the next locker).
const LOCK_TRIES: usize = 3;

/// Locks the lock file at `path` with `lock` (waiting or not), and checks that the path
/// still names the file locked (device and inode): a lock on a file whose name was removed
/// excludes nobody, since the next locker creates and locks a new file [DIR-03] [DIR-04].
/// Takes the lock again on the new file, up to [`LOCK_TRIES`] times.
fn lock_named(
    path: &Path,
    lock: impl Fn(&File) -> std::result::Result<(), TryLockError>,
    held: impl Fn() -> Error,
) -> Result<File> {
    for _ in 0..LOCK_TRIES {
        let file = open_lock_file(path)?;
        match lock(&file) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(held()),
            Err(TryLockError::Error(e)) => return Err(Error::io(IoOp::Lock, path, e)),
        }
        let named = super::segment::file_still_named(&file, path)
            .map_err(|e| Error::io(IoOp::Lock, path, e))?;
        if named {
            return Ok(file);
        }
        tracing::warn!(path = %path.display(), "a lock file was removed from outside as it was locked; locking the new one");
        let _ = file.unlock();
    }
    Err(Error::io(
        IoOp::Lock,
        path,
        std::io::Error::other("the lock file was removed or replaced each time it was locked"),
    ))
}

/// Takes the writer lock, failing at once if anyone holds it [DIR-03]: first an exclusive
/// `flock` on the log directory's own descriptor (a directory holding files cannot be
/// removed, so this lock cannot be sidestepped by deleting a name), then the lock on
/// `writer.lock`, which older builds take alone, checked to be still named by its path.
///
/// The locks belong to the open file descriptions, so a second writer in the same process is
/// refused just like one in another process; they are released when the returned lock
/// drops. A file system that cannot lock a directory (some network file systems) leaves
/// the lock file alone, with a warning.
pub(crate) fn lock_writer(dir: &Path) -> Result<HeldLock> {
    let locked = || Error::Locked {
        dir: dir.to_path_buf(),
    };
    let directory = File::open(dir).map_err(|e| Error::io(IoOp::Lock, dir, e))?;
    let directory = match directory.try_lock() {
        Ok(()) => Some(directory),
        Err(TryLockError::WouldBlock) => return Err(locked()),
        Err(TryLockError::Error(error)) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot lock the log directory itself; only writer.lock keeps a second writer out, and it must not be removed");
            None
        }
    };
    let path = dir.join(WRITER_LOCK);
    match lock_named(&path, File::try_lock, locked) {
        Ok(file) => Ok(HeldLock { file, directory }),
        Err(error) => {
            if let Some(directory) = &directory {
                let _ = directory.unlock();
            }
            Err(error)
        }
    }
}

/// Takes the retention lock, waiting for a concurrent truncation to finish [DIR-04]; a lock
/// file that lost its name while this waited on it is locked again under its new file.
pub(crate) fn lock_retention(dir: &Path) -> Result<HeldLock> {
    let path = dir.join(RETENTION_LOCK);
    let file = lock_named(
        &path,
        |file| file.lock().map_err(TryLockError::Error),
        || Error::Locked {
            dir: dir.to_path_buf(),
        },
    )?;
    Ok(HeldLock {
        file,
        directory: None,
    })
}

impl HeldLock {
    /// A watch over this lock file's name, for the running writer [DIR-06].
    pub(crate) fn watch(&self, dir: &Path) -> Result<LockWatch> {
        let path = dir.join(WRITER_LOCK);
        let file = self
            .file
            .try_clone()
            .map_err(|e| Error::io(IoOp::Lock, &path, e))?;
        Ok(LockWatch {
            path,
            file,
            restored: false,
        })
    }
}

/// The running writer's watch over `writer.lock` [DIR-06]: the file it locked, to tell
/// whether the name still names it, and the lock file it created again if it did not.
#[derive(Debug)]
pub(crate) struct LockWatch {
    path: PathBuf,
    /// The locked file: a copy of the writer's descriptor, or the file this watch created
    /// and locked in place of a removed one.
    file: File,
    /// Whether `file` is this watch's own lock, to release when the writer closes.
    restored: bool,
}

impl LockWatch {
    /// Checks that `writer.lock` still names the locked file. If it does not (removed or
    /// replaced from outside), locks the file now named so (creating it), so that a writer of
    /// an older build, which locks only that file, stays refused; fails with
    /// [`Error::LockReplaced`] if another process holds that file's lock already.
    pub(crate) fn check(&mut self) -> Result<()> {
        let named = super::segment::file_still_named(&self.file, &self.path)
            .map_err(|e| Error::io(IoOp::Lock, &self.path, e))?;
        if named {
            return Ok(());
        }
        tracing::warn!(path = %self.path.display(), "the writer lock file was removed or replaced from outside; the writer locks it again");
        let file = open_lock_file(&self.path)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::LockReplaced {
                    path: self.path.clone(),
                });
            }
            Err(TryLockError::Error(e)) => return Err(Error::io(IoOp::Lock, &self.path, e)),
        }
        self.release();
        self.file = file;
        self.restored = true;
        Ok(())
    }

    /// Releases the lock this watch took in place of a removed lock file, if any.
    pub(crate) fn release(&mut self) {
        if self.restored {
            let _ = self.file.unlock();
            self.restored = false;
        }
    }
}

/// An open handle on a log directory (`O_PATH`), to ask whether a file exists there with a
/// lookup of its one name rather than of the directory's whole path: readers ask on every
/// cursor whether a start file has appeared.
#[derive(Debug)]
pub(crate) struct DirHandle(rustix::fd::OwnedFd);

impl DirHandle {
    pub(crate) fn open(dir: &Path) -> std::io::Result<DirHandle> {
        use rustix::fs::{Mode, OFlags};
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(DirHandle(rustix::fs::open(dir, flags, Mode::empty())?))
    }

    /// Whether `name` exists in the directory (a symbolic link is not followed).
    pub(crate) fn contains(&self, name: &str) -> std::io::Result<bool> {
        match rustix::fs::statat(&self.0, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_sort_and_parse() {
        let dir = Path::new("/x");
        let path = segment_path(dir, 1024);
        assert_eq!(path, Path::new("/x/00000000000000001024.seg"));
        assert_eq!(parse_base("00000000000000001024.seg", ".seg"), Some(1024));
        assert_eq!(parse_base("1024.seg", ".seg"), None);
        assert_eq!(parse_base("0000000000000000102x.seg", ".seg"), None);
        assert!(segment_path(dir, 9) < segment_path(dir, 10));
    }

    /// A copy of the lock's descriptor outliving it (as a forked child's does until its
    /// `exec`) does not keep the lock: the next writer gets it at once.
    #[test]
    fn a_released_writer_lock_is_free_while_a_copy_of_its_descriptor_lives() {
        let dir = tempfile::tempdir().expect("tempdir");
        let held = lock_writer(dir.path()).expect("first lock");
        let copy = held.file.try_clone().expect("dup");
        assert!(matches!(lock_writer(dir.path()), Err(Error::Locked { .. })));
        drop(held);
        let again = lock_writer(dir.path()).expect("the lock is free once released");
        drop((again, copy));
    }

    #[test]
    fn a_directory_handle_sees_files_come_and_go() {
        let dir = tempfile::tempdir().expect("tempdir");
        let handle = DirHandle::open(dir.path()).expect("open");
        assert!(!handle.contains(START_FILE).expect("lookup"));
        std::fs::write(dir.path().join(START_FILE), b"x").expect("write");
        assert!(handle.contains(START_FILE).expect("lookup"));
        crate::storage::durable::remove_durable(&dir.path().join(START_FILE)).expect("remove");
        assert!(!handle.contains(START_FILE).expect("lookup"));
    }
}
