//! Persisted fold states: the snapshot stores [`fold`](super::fold) resumes from.
//!
//! A snapshot is the state of one stream after every stream record up to a sequence was
//! applied. [`MemorySnapshots`] keeps them in memory; [`DirSnapshots`] keeps one file per
//! snapshot under a directory per stream:
//!
//! ```text
//! <root>/<stream prefix>-<sha256 of the stream key, 32 hex>/<sequence, 20 digits>.snapshot
//! ```
//!
//! Each file is a MessagePack (rmp-serde, named fields) map `{format, stream, sequence,
//! state}`, written atomically and durably through [`storage::write_atomic`]; a file whose
//! stream or sequence does not match its place, or that does not decode, is reported as
//! damaged, never skipped.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest as _, Sha256};

use super::Error;
use crate::storage;

/// The snapshot file format version.
pub const SNAPSHOT_FORMAT: u32 = 1;

/// The largest snapshot file read: 1 GiB. A larger file is reported as unreadable rather
/// than read into memory.
pub const MAX_SNAPSHOT_FILE_BYTES: u64 = 1 << 30;

/// A stored state: the stream it belongs to, the sequence it reflects, the state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot<S> {
    /// The stream key.
    pub stream: String,
    /// The append sequence of the last record applied to the state.
    pub sequence: u64,
    /// The state.
    pub state: S,
}

/// Where fold states are kept, by stream key and sequence.
pub trait SnapshotStore<S> {
    /// Keeps `state` as the state of `stream` at `sequence`, replacing one kept there.
    ///
    /// # Errors
    ///
    /// Encoding or storage failures.
    fn save(&mut self, stream: &str, sequence: u64, state: &S) -> Result<(), Error>;

    /// The snapshot of `stream` with the highest sequence at or below `sequence`.
    ///
    /// # Errors
    ///
    /// Storage failures; a damaged snapshot.
    fn latest_at_or_before(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<Option<Snapshot<S>>, Error>;

    /// The sequences kept for `stream`, ascending.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn sequences(&self, stream: &str) -> Result<Vec<u64>, Error>;

    /// Removes the snapshot of `stream` at `sequence`; returns whether there was one.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn remove(&mut self, stream: &str, sequence: u64) -> Result<bool, Error>;

    /// Keeps only the newest `keep` snapshots of `stream`; returns how many were removed.
    ///
    /// # Errors
    ///
    /// Storage failures.
    fn retain_latest(&mut self, stream: &str, keep: usize) -> Result<usize, Error> {
        let sequences = self.sequences(stream)?;
        let excess = sequences.len().saturating_sub(keep);
        let mut removed = 0;
        for sequence in sequences.into_iter().take(excess) {
            if self.remove(stream, sequence)? {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// Snapshots in memory (for tests and short-lived processes).
#[derive(Clone, Debug)]
pub struct MemorySnapshots<S> {
    states: BTreeMap<String, BTreeMap<u64, S>>,
}

impl<S> Default for MemorySnapshots<S> {
    fn default() -> Self {
        Self {
            states: BTreeMap::new(),
        }
    }
}

impl<S> MemorySnapshots<S> {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S: Clone> SnapshotStore<S> for MemorySnapshots<S> {
    fn save(&mut self, stream: &str, sequence: u64, state: &S) -> Result<(), Error> {
        self.states
            .entry(stream.to_owned())
            .or_default()
            .insert(sequence, state.clone());
        Ok(())
    }

    fn latest_at_or_before(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<Option<Snapshot<S>>, Error> {
        Ok(self
            .states
            .get(stream)
            .and_then(|states| states.range(..=sequence).next_back())
            .map(|(&at, state)| Snapshot {
                stream: stream.to_owned(),
                sequence: at,
                state: state.clone(),
            }))
    }

    fn sequences(&self, stream: &str) -> Result<Vec<u64>, Error> {
        Ok(self
            .states
            .get(stream)
            .map(|states| states.keys().copied().collect())
            .unwrap_or_default())
    }

    fn remove(&mut self, stream: &str, sequence: u64) -> Result<bool, Error> {
        Ok(self
            .states
            .get_mut(stream)
            .is_some_and(|states| states.remove(&sequence).is_some()))
    }
}

/// Snapshots as durable files under a directory, one subdirectory per stream.
#[derive(Debug)]
pub struct DirSnapshots<S> {
    root: PathBuf,
    state: PhantomData<fn() -> S>,
}

impl<S> Clone for DirSnapshots<S> {
    fn clone(&self) -> Self {
        Self {
            root: self.root.clone(),
            state: PhantomData,
        }
    }
}

const SUFFIX: &str = ".snapshot";

/// The on-disk form of a snapshot.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotFile<S> {
    format: u32,
    stream: String,
    sequence: u64,
    state: S,
}

impl<S> DirSnapshots<S> {
    /// A store rooted at `root`, created (durably) if missing.
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotIo`] if the directory cannot be created.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        storage::create_dir_durable(&root).map_err(|e| io_error("create", &root, e))?;
        Ok(Self {
            root,
            state: PhantomData,
        })
    }

    /// The root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the snapshots of `stream`.
    #[must_use]
    pub fn stream_dir(&self, stream: &str) -> PathBuf {
        let prefix: String = stream
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(48)
            .collect();
        let digest = Sha256::digest(stream.as_bytes());
        let hash: String = digest
            .iter()
            .take(16)
            .map(|byte| format!("{byte:02x}"))
            .collect();
        self.root.join(format!("{prefix}-{hash}"))
    }

    /// The file of the snapshot of `stream` at `sequence`.
    #[must_use]
    pub fn path_for(&self, stream: &str, sequence: u64) -> PathBuf {
        self.stream_dir(stream)
            .join(format!("{sequence:020}{SUFFIX}"))
    }

    /// Stream directories under the root (every stream that has or had snapshots).
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotIo`] if the root cannot be listed.
    pub fn stream_dirs(&self) -> Result<Vec<PathBuf>, Error> {
        let entries = std::fs::read_dir(&self.root).map_err(|e| io_error("list", &self.root, e))?;
        let mut dirs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &self.root, e))?;
            if entry.path().is_dir() {
                dirs.push(entry.path());
            }
        }
        dirs.sort();
        Ok(dirs)
    }
}

fn io_error(
    op: &'static str,
    path: &Path,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    Error::SnapshotIo {
        op,
        path: path.to_owned(),
        source: Box::new(source),
    }
}

impl<S: Serialize + DeserializeOwned> DirSnapshots<S> {
    /// Loads the snapshot of `stream` at `sequence`, if a file exists.
    ///
    /// # Errors
    ///
    /// [`Error::SnapshotIo`] if it cannot be read; [`Error::CorruptSnapshot`] if it does
    /// not decode or does not belong to this stream and sequence.
    pub fn load(&self, stream: &str, sequence: u64) -> Result<Option<Snapshot<S>>, Error> {
        let path = self.path_for(stream, sequence);
        let bytes = match storage::read_regular_file_limited(&path, MAX_SNAPSHOT_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &path, e)),
        };
        let corrupt = |reason: String| Error::CorruptSnapshot {
            path: path.clone(),
            reason,
        };
        let file: SnapshotFile<S> =
            rmp_serde::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.format != SNAPSHOT_FORMAT {
            return Err(corrupt(format!(
                "unknown snapshot format {} (this build reads {SNAPSHOT_FORMAT})",
                file.format
            )));
        }
        if file.stream != stream || file.sequence != sequence {
            return Err(corrupt(format!(
                "it holds stream `{}` at sequence {}, expected `{stream}` at {sequence}",
                file.stream, file.sequence
            )));
        }
        Ok(Some(Snapshot {
            stream: file.stream,
            sequence: file.sequence,
            state: file.state,
        }))
    }
}

impl<S: Serialize + DeserializeOwned> SnapshotStore<S> for DirSnapshots<S> {
    fn save(&mut self, stream: &str, sequence: u64, state: &S) -> Result<(), Error> {
        let file = SnapshotFile {
            format: SNAPSHOT_FORMAT,
            stream: stream.to_owned(),
            sequence,
            state,
        };
        let bytes = rmp_serde::to_vec_named(&file).map_err(|e| Error::EncodeSnapshot {
            stream: stream.to_owned(),
            sequence,
            reason: e.to_string(),
        })?;
        let dir = self.stream_dir(stream);
        storage::create_dir_durable(&dir).map_err(|e| io_error("create", &dir, e))?;
        let path = self.path_for(stream, sequence);
        storage::write_atomic(&path, &bytes).map_err(|e| io_error("write", &path, e))
    }

    fn latest_at_or_before(
        &self,
        stream: &str,
        sequence: u64,
    ) -> Result<Option<Snapshot<S>>, Error> {
        match self
            .sequences(stream)?
            .into_iter()
            .rev()
            .find(|&at| at <= sequence)
        {
            Some(at) => self.load(stream, at),
            None => Ok(None),
        }
    }

    fn sequences(&self, stream: &str) -> Result<Vec<u64>, Error> {
        let dir = self.stream_dir(stream);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("list", &dir, e)),
        };
        let mut sequences = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &dir, e))?;
            let name = entry.file_name();
            // Only final names count; atomic-write temporaries start with a dot.
            if let Some(sequence) = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .filter(|digits| digits.len() == 20)
                .and_then(|digits| digits.parse::<u64>().ok())
            {
                sequences.push(sequence);
            }
        }
        sequences.sort_unstable();
        Ok(sequences)
    }

    fn remove(&mut self, stream: &str, sequence: u64) -> Result<bool, Error> {
        let path = self.path_for(stream, sequence);
        storage::remove_durable(&path).map_err(|e| io_error("remove", &path, e))
    }
}
