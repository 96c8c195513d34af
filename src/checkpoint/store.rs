//! Where are checkpoints kept, and how are they saved so that a crash never tears one?
//!
//! A [`CheckpointStore`] is a directory of independent checkpoint files (§4.2, decision K5),
//! one per key, named by [`super::name`] and laid out by
//! [`super::file`](mod@super::file); there is no index. The directory can be shared with
//! the reference package.
//!
//! Saving is atomic and durable (decision C3): the new content is written to a uniquely
//! named temporary file in the same directory (`.<name>.<random>.tmp`), synced, renamed
//! over the checkpoint file, and the directory is synced ([`crate::storage::write_atomic`]).
//! A crash at any step leaves either the old or the new checkpoint, never a torn one, and
//! concurrent saves of one key (threads or processes) never mix bytes: the last rename
//! wins. The reference instead uses one fixed `.tmp` name per key and no fsync, so its
//! concurrent saves of one key race. A crash may leave a stray temporary; it is ignored by
//! every read and can be removed with [`CheckpointStore::remove_stray_temporaries`].
//!
//! Loading tries the current file name, then the legacy name; the first file that exists
//! wins, even if it is damaged (then the load fails, naming the file). Listing and lookup
//! read every `*.checkpoint.json` file of the directory, not its subdirectories nor hidden
//! files (the reference lists with a glob that skips them too). A damaged file makes
//! [`CheckpointStore::find`], [`CheckpointStore::find_all`] and [`CheckpointStore::list`]
//! fail with [`Error::Corrupt`] naming the file, as the reference aborts its lookup (C10:
//! reported, never skipped, so retention can never overlook a checkpoint);
//! [`CheckpointStore::scan`] instead returns every file with its own outcome.

use std::cmp::Ordering;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use super::name::{self, FILE_SUFFIX};
use super::{Checkpoint, CheckpointCriteria, Error, file};
use crate::storage;
use crate::storage::{Io, StdIo};

/// The largest checkpoint file read (its metadata included): 16 MiB. A larger file is
/// reported as unreadable rather than read into memory.
pub const MAX_CHECKPOINT_FILE_BYTES: u64 = 16 << 20;

/// The time source of a store: when a file has no `saved_at`, and for checkpoints the
/// service and repository save.
pub type Clock = Arc<dyn Fn() -> OffsetDateTime + Send + Sync>;

/// A directory of checkpoint files. Cheap to clone; clones share the directory.
#[derive(Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
    clock: Clock,
    io: Arc<dyn Io>,
}

impl fmt::Debug for CheckpointStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointStore")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// A checkpoint with the file it was loaded from.
#[derive(Clone, Debug, PartialEq)]
pub struct LocatedCheckpoint {
    /// The file.
    pub path: PathBuf,
    /// The checkpoint it holds.
    pub checkpoint: Checkpoint,
}

/// The order of every listing and lookup: newest saved first (by instant), ties by key,
/// then by file name (the reference's glob order).
#[must_use]
pub fn newest_first(a: &LocatedCheckpoint, b: &LocatedCheckpoint) -> Ordering {
    b.checkpoint
        .saved_at()
        .cmp(a.checkpoint.saved_at())
        .then_with(|| a.checkpoint.key().cmp(b.checkpoint.key()))
        .then_with(|| a.path.cmp(&b.path))
}

/// One checkpoint file found by [`CheckpointStore::scan`], with the outcome of loading it.
#[derive(Debug)]
pub struct ScannedFile {
    /// The file.
    pub path: PathBuf,
    /// The checkpoint it holds, or why it cannot be loaded.
    pub checkpoint: Result<Checkpoint, Error>,
}

impl CheckpointStore {
    /// Opens the checkpoint directory, creating it and any missing parents durably.
    ///
    /// # Errors
    ///
    /// [`Error::NotADirectory`] if the path names something that is not a directory;
    /// [`Error::Directory`] if the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, Error> {
        Self::open_with_io(dir, Arc::new(StdIo))
    }

    /// Opens the checkpoint directory with every write, sync, rename and removal going
    /// through `io` (crash and fault tests; [`CheckpointStore::open`] uses the real file
    /// system).
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::open`].
    pub fn open_with_io(dir: impl Into<PathBuf>, io: Arc<dyn Io>) -> Result<Self, Error> {
        let dir = dir.into();
        if dir.exists() && !dir.is_dir() {
            return Err(Error::NotADirectory { path: dir });
        }
        storage::create_dir_durable_with(&*io, &dir).map_err(|source| Error::Directory {
            op: "create",
            path: dir.clone(),
            source: Box::new(source),
        })?;
        Ok(Self {
            dir,
            clock: Arc::new(OffsetDateTime::now_utc),
            io,
        })
    }

    /// Replaces the time source (the default is the system clock in UTC).
    #[must_use]
    pub fn with_clock(
        mut self,
        clock: impl Fn() -> OffsetDateTime + Send + Sync + 'static,
    ) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// The current time from the store's clock.
    #[must_use]
    pub fn now(&self) -> OffsetDateTime {
        (self.clock)()
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a checkpoint with this key is saved to.
    #[must_use]
    pub fn path_for(&self, key: &str) -> PathBuf {
        self.dir.join(name::file_name(key))
    }

    /// The legacy file of this key (read, checked and deleted, never written), if such a
    /// name can exist.
    #[must_use]
    pub fn legacy_path_for(&self, key: &str) -> Option<PathBuf> {
        name::legacy_file_name(key).map(|name| self.dir.join(name))
    }

    /// Saves a checkpoint atomically and durably, replacing any earlier one of its key.
    ///
    /// # Errors
    ///
    /// [`Error::Save`] naming the file if a step fails; the old checkpoint is then intact.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<(), Error> {
        let path = self.path_for(checkpoint.key());
        let text = file::encode(checkpoint)?;
        storage::write_atomic_with(&*self.io, &path, text.as_bytes()).map_err(|source| {
            Error::Save {
                key: checkpoint.key().to_owned(),
                path,
                source,
            }
        })
    }

    /// Loads the checkpoint of a key: from its file, else from its legacy file, else `None`.
    /// A file's own `key` wins over the key asked for (a legacy file may name another key).
    ///
    /// # Errors
    ///
    /// [`Error::Read`] if the file exists but cannot be read; [`Error::Corrupt`] naming the
    /// file if it does not hold a valid checkpoint.
    pub fn load(&self, key: &str) -> Result<Option<Checkpoint>, Error> {
        for path in self.candidate_paths(key) {
            if let Some(checkpoint) = self.read_file(&path, key)? {
                return Ok(Some(checkpoint));
            }
        }
        Ok(None)
    }

    /// Loads the checkpoint of a key as a consumer that resumes from it must: as
    /// [`CheckpointStore::load`], and the file must also say exactly where the consumer
    /// resumes ([`file::check_resumable`]: an integer `last_consumed_sequence` and the
    /// consumer's own `key`).
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::load`]; [`Error::NotResumable`] naming the file and what is
    /// wrong.
    pub fn load_for_resume(&self, key: &str) -> Result<Option<Checkpoint>, Error> {
        for path in self.candidate_paths(key) {
            let Some(bytes) = self.read_bytes(&path)? else {
                continue;
            };
            let checkpoint =
                file::decode(&bytes, key, self.now()).map_err(|kind| Error::Corrupt {
                    path: path.clone(),
                    kind,
                })?;
            file::check_resumable(&bytes, key).map_err(|reason| Error::NotResumable {
                path: path.clone(),
                key: key.to_owned(),
                reason,
            })?;
            return Ok(Some(checkpoint));
        }
        Ok(None)
    }

    /// Takes the run lock of a key: an exclusive advisory lock (`flock`) on the hidden
    /// file `.<checkpoint file name>.lock` in the directory, held until the returned
    /// guard is dropped (or the process ends, however it ends). A consumer that executes
    /// records and saves the key's checkpoint holds it, so that two runs of one key never
    /// both execute the same records. The lock file is left in place (removing it would
    /// let a third run lock a new file while the second still holds the old one).
    ///
    /// # Errors
    ///
    /// [`Error::KeyInUse`] if another process (or another guard of this one) holds it;
    /// [`Error::Lock`] if the file cannot be created or locked.
    pub fn lock(&self, key: &str) -> Result<KeyLock, Error> {
        use rustix::fs::{FlockOperation, flock};
        let path = self.dir.join(format!(".{}.lock", name::file_name(key)));
        let lock_error = |source: std::io::Error| Error::Lock {
            key: key.to_owned(),
            path: path.clone(),
            source,
        };
        let file = storage::open_regular_with(
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true),
            &path,
        )
        .map_err(lock_error)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(KeyLock { _file: file, path }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::KeyInUse {
                key: key.to_owned(),
                path,
            }),
            Err(errno) => Err(lock_error(errno.into())),
        }
    }

    /// Whether a file (current or legacy name) exists for the key; its content is not checked.
    ///
    /// # Errors
    ///
    /// [`Error::Read`] if the file system cannot tell.
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        for path in self.candidate_paths(key) {
            if path.try_exists().map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes the key's files (current and legacy name) durably; returns whether any
    /// existed. Deleting a missing checkpoint is not an error.
    ///
    /// # Errors
    ///
    /// [`Error::Delete`] naming the file that could not be removed.
    pub fn delete(&self, key: &str) -> Result<bool, Error> {
        let mut removed = false;
        for path in self.candidate_paths(key) {
            removed |=
                storage::remove_durable_with(&*self.io, &path).map_err(|source| Error::Delete {
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(removed)
    }

    /// Every checkpoint file in the directory with the outcome of loading it, in file-name
    /// order. A file without a `key` is given its file name's stem as key. Files deleted
    /// while the scan runs are left out.
    ///
    /// # Errors
    ///
    /// [`Error::Directory`] if the directory cannot be listed.
    pub fn scan(&self) -> Result<Vec<ScannedFile>, Error> {
        let mut scanned = Vec::new();
        for path in self.checkpoint_files()? {
            let stem = path
                .file_name()
                .map(OsStr::to_string_lossy)
                .unwrap_or_default()
                .strip_suffix(FILE_SUFFIX)
                .unwrap_or_default()
                .to_owned();
            match self.read_file(&path, &stem) {
                Ok(None) => {}
                Ok(Some(checkpoint)) => scanned.push(ScannedFile {
                    path,
                    checkpoint: Ok(checkpoint),
                }),
                Err(error) => scanned.push(ScannedFile {
                    path,
                    checkpoint: Err(error),
                }),
            }
        }
        Ok(scanned)
    }

    /// Every checkpoint in the directory, newest saved first ([`newest_first`]).
    ///
    /// # Errors
    ///
    /// [`Error::Directory`]; the first damaged or unreadable file ([`Error::Corrupt`],
    /// [`Error::Read`]), naming it.
    pub fn list(&self) -> Result<Vec<Checkpoint>, Error> {
        Ok(strip_paths(self.locate_all(None)?))
    }

    /// The checkpoints matching the criteria, newest saved first ([`newest_first`]), at
    /// most `criteria.limit()` of them (§4.3). A key saved under both its current and its
    /// legacy name appears twice, as in the reference.
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::list`]: a damaged file anywhere in the directory fails the
    /// lookup, naming the file, as the reference does.
    pub fn find(&self, criteria: &CheckpointCriteria) -> Result<Vec<Checkpoint>, Error> {
        let mut found = self.locate_all(Some(criteria))?;
        found.truncate(criteria.limit());
        Ok(strip_paths(found))
    }

    /// Every checkpoint matching the criteria, newest saved first, ignoring the limit. This
    /// is the lookup retention uses (decision C7): no matching checkpoint may be left out.
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::find`].
    pub fn find_all(&self, criteria: &CheckpointCriteria) -> Result<Vec<Checkpoint>, Error> {
        Ok(strip_paths(self.locate_all(Some(criteria))?))
    }

    /// Every checkpoint matching the criteria (all of them for `None`) with its file,
    /// newest saved first, ignoring any limit.
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::find`].
    pub fn locate_all(
        &self,
        criteria: Option<&CheckpointCriteria>,
    ) -> Result<Vec<LocatedCheckpoint>, Error> {
        let mut kept = Vec::new();
        for scanned in self.scan()? {
            let checkpoint = scanned.checkpoint?;
            if criteria.is_none_or(|criteria| criteria.matches(&checkpoint)) {
                kept.push(LocatedCheckpoint {
                    path: scanned.path,
                    checkpoint,
                });
            }
        }
        kept.sort_by(newest_first);
        Ok(kept)
    }

    /// Removes temporary files left by saves that crashed (ours and the reference's), if
    /// they were last modified at least `older_than` ago; returns the files removed. The age
    /// keeps saves still running in other processes from losing their temporary file.
    ///
    /// # Errors
    ///
    /// [`Error::Directory`] if the directory cannot be listed; [`Error::Delete`] naming a
    /// file that could not be removed.
    pub fn remove_stray_temporaries(&self, older_than: Duration) -> Result<Vec<PathBuf>, Error> {
        let mut removed = Vec::new();
        for entry in self.entries()? {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let ours = name.starts_with('.') && name.contains(".checkpoint.json.");
            let reference = name.ends_with(".checkpoint.json.tmp");
            if !name.ends_with(".tmp") || !(ours || reference) {
                continue;
            }
            let old_enough = entry
                .metadata()
                .and_then(|metadata| metadata.modified())
                .ok()
                .and_then(|modified| modified.elapsed().ok())
                .is_some_and(|age| age >= older_than);
            if old_enough {
                let path = entry.path();
                if storage::remove_durable_with(&*self.io, &path).map_err(|source| {
                    Error::Delete {
                        path: path.clone(),
                        source,
                    }
                })? {
                    removed.push(path);
                }
            }
        }
        Ok(removed)
    }

    fn candidate_paths(&self, key: &str) -> impl Iterator<Item = PathBuf> {
        std::iter::once(self.path_for(key)).chain(self.legacy_path_for(key))
    }

    /// Reads and decodes one file; `None` if it does not exist.
    fn read_file(&self, path: &Path, fallback_key: &str) -> Result<Option<Checkpoint>, Error> {
        let Some(bytes) = self.read_bytes(path)? else {
            return Ok(None);
        };
        file::decode(&bytes, fallback_key, self.now())
            .map(Some)
            .map_err(|kind| Error::Corrupt {
                path: path.to_path_buf(),
                kind,
            })
    }

    /// The bytes of one file; `None` if it does not exist.
    fn read_bytes(&self, path: &Path) -> Result<Option<Vec<u8>>, Error> {
        match storage::read_regular_file_limited(path, MAX_CHECKPOINT_FILE_BYTES) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(Error::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn entries(&self) -> Result<Vec<std::fs::DirEntry>, Error> {
        let list_error = |source: std::io::Error| Error::Directory {
            op: "list",
            path: self.dir.clone(),
            source: Box::new(source),
        };
        std::fs::read_dir(&self.dir)
            .map_err(list_error)?
            .map(|entry| entry.map_err(list_error))
            .collect()
    }

    /// The checkpoint files of the directory (`*.checkpoint.json`, not hidden, not
    /// directories), sorted by file name.
    fn checkpoint_files(&self) -> Result<Vec<PathBuf>, Error> {
        let mut files: Vec<PathBuf> = self
            .entries()?
            .into_iter()
            .filter(|entry| {
                let name = entry.file_name();
                let bytes = name.as_encoded_bytes();
                bytes.ends_with(FILE_SUFFIX.as_bytes())
                    && !bytes.starts_with(b".")
                    && !entry.path().is_dir()
            })
            .map(|entry| entry.path())
            .collect();
        files.sort();
        Ok(files)
    }
}

/// The run lock of a checkpoint key ([`CheckpointStore::lock`]); released when dropped.
#[derive(Debug)]
pub struct KeyLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl KeyLock {
    /// The lock file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn strip_paths(located: Vec<LocatedCheckpoint>) -> Vec<Checkpoint> {
    located
        .into_iter()
        .map(|located| located.checkpoint)
        .collect()
}
