//! How does one consumer save its progress under a fixed key, and where does it resume?
//!
//! - [`CheckpointConfig`] names the checkpoint directory and the consumer's key (§1.9);
//!   both must be non-blank. Unlike the reference, whose factory ignores the key, the
//!   config opens the [`CheckpointService`] for that key.
//! - [`CheckpointService`] (§4.5) saves, loads, checks and clears the checkpoint of one
//!   fixed key; each save replaces the previous one.
//! - [`ResumeState`] (§4.6) says where a consumer starts: at a saved checkpoint's cursor
//!   (hint included), or fresh at the start of the stream. A cursor past the end of the
//!   stream still resumes there and simply reads nothing until the stream grows (§4.1).

use std::path::{Path, PathBuf};

use super::{Checkpoint, CheckpointStore, Error};
use crate::record::{JsonMap, ReadCursor, is_blank, timestamp};

/// Where checkpoints live and which key a consumer saves under. Immutable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointConfig {
    storage_path: PathBuf,
    checkpoint_key: String,
}

impl CheckpointConfig {
    /// Validates a config.
    ///
    /// # Errors
    ///
    /// [`Error::BlankField`] naming `storage_path` or `checkpoint_key` if it is blank.
    pub fn new(
        storage_path: impl Into<PathBuf>,
        checkpoint_key: impl Into<String>,
    ) -> Result<Self, Error> {
        let storage_path = storage_path.into();
        let checkpoint_key = checkpoint_key.into();
        if is_blank(&storage_path.to_string_lossy()) {
            return Err(Error::BlankField {
                field: "storage_path",
            });
        }
        if is_blank(&checkpoint_key) {
            return Err(Error::BlankField {
                field: "checkpoint_key",
            });
        }
        Ok(Self {
            storage_path,
            checkpoint_key,
        })
    }

    /// The checkpoint directory.
    #[must_use]
    pub fn storage_path(&self) -> &Path {
        &self.storage_path
    }

    /// The consumer's checkpoint key.
    #[must_use]
    pub fn checkpoint_key(&self) -> &str {
        &self.checkpoint_key
    }

    /// Opens the checkpoint directory (the reference's store factory).
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::open`].
    pub fn open_store(&self) -> Result<CheckpointStore, Error> {
        CheckpointStore::open(&self.storage_path)
    }

    /// Opens the service for the configured key.
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::open`].
    pub fn open_service(&self) -> Result<CheckpointService, Error> {
        CheckpointService::new(self.open_store()?, self.checkpoint_key.clone())
    }
}

/// The checkpoint of one fixed key.
#[derive(Clone, Debug)]
pub struct CheckpointService {
    store: CheckpointStore,
    key: String,
}

impl CheckpointService {
    /// A service for `key` in `store`.
    ///
    /// # Errors
    ///
    /// [`Error::BlankKey`] if the key is blank.
    pub fn new(store: CheckpointStore, key: impl Into<String>) -> Result<Self, Error> {
        let key = key.into();
        if is_blank(&key) {
            return Err(Error::BlankKey);
        }
        Ok(Self { store, key })
    }

    /// The fixed key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// Saves the cursor with metadata, saved now (the store's clock, in whole milliseconds
    /// as the file keeps it), replacing the previous checkpoint; returns the checkpoint.
    ///
    /// # Errors
    ///
    /// Checkpoint validation ([`Checkpoint::new`]); [`Error::Save`].
    pub fn save(&self, cursor: ReadCursor, metadata: JsonMap) -> Result<Checkpoint, Error> {
        let checkpoint = Checkpoint::new(
            self.key.clone(),
            cursor,
            timestamp::truncate_to_millis(self.store.now()),
            metadata,
        )?;
        self.store.save(&checkpoint)?;
        Ok(checkpoint)
    }

    /// Saves as [`CheckpointService::save`] does, unless the file already holds a later
    /// position (another run of the key got further): moving it back would make a resume
    /// repeat that run's records.
    ///
    /// # Errors
    ///
    /// [`Error::WouldGoBack`]; as [`CheckpointService::save`] and
    /// [`CheckpointStore::load`].
    pub fn save_advancing(
        &self,
        cursor: ReadCursor,
        metadata: JsonMap,
    ) -> Result<Checkpoint, Error> {
        if let Some(on_disk) = self.store.load(&self.key)? {
            let on_disk = on_disk.cursor().last_consumed_sequence();
            if on_disk > cursor.last_consumed_sequence() {
                return Err(Error::WouldGoBack {
                    key: self.key.clone(),
                    path: self.store.path_for(&self.key),
                    on_disk,
                    saving: cursor.last_consumed_sequence(),
                });
            }
        }
        self.save(cursor, metadata)
    }

    /// The saved checkpoint, if any.
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::load`].
    pub fn load(&self) -> Result<Option<Checkpoint>, Error> {
        self.store.load(&self.key)
    }

    /// Whether a checkpoint is saved.
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::exists`].
    pub fn exists(&self) -> Result<bool, Error> {
        self.store.exists(&self.key)
    }

    /// Deletes the checkpoint; returns whether there was one.
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::delete`].
    pub fn clear(&self) -> Result<bool, Error> {
        self.store.delete(&self.key)
    }

    /// Where this consumer starts (see [`ResumeState::resolve_for_resume`]): a file that
    /// does not say exactly where is refused, never read as a guessed position.
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::load_for_resume`].
    pub fn resume_state(&self) -> Result<ResumeState, Error> {
        ResumeState::resolve_for_resume(&self.store, &self.key)
    }
}

/// Where a consumer starts reading: at a checkpoint, or fresh at the start.
#[derive(Clone, Debug, PartialEq)]
pub struct ResumeState {
    cursor: ReadCursor,
    checkpoint: Option<Checkpoint>,
}

impl ResumeState {
    /// Resumes from the checkpoint of `key` if one is saved, else starts fresh.
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::load`]: a damaged checkpoint is an error, never a silent
    /// fresh start.
    pub fn resolve(store: &CheckpointStore, key: &str) -> Result<Self, Error> {
        Ok(match store.load(key)? {
            Some(checkpoint) => Self::from_checkpoint(checkpoint),
            None => Self::fresh(),
        })
    }

    /// As [`ResumeState::resolve`], for a consumer that resumes: the file must say exactly
    /// where ([`CheckpointStore::load_for_resume`]).
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::load_for_resume`].
    pub fn resolve_for_resume(store: &CheckpointStore, key: &str) -> Result<Self, Error> {
        Ok(match store.load_for_resume(key)? {
            Some(checkpoint) => Self::from_checkpoint(checkpoint),
            None => Self::fresh(),
        })
    }

    /// Resumes from this checkpoint: its cursor, hint included.
    #[must_use]
    pub fn from_checkpoint(checkpoint: Checkpoint) -> Self {
        Self {
            cursor: *checkpoint.cursor(),
            checkpoint: Some(checkpoint),
        }
    }

    /// Starts fresh at [`ReadCursor::start`], without looking anything up.
    #[must_use]
    pub fn fresh() -> Self {
        Self {
            cursor: ReadCursor::start(),
            checkpoint: None,
        }
    }

    /// The cursor to read from.
    #[must_use]
    pub fn cursor(&self) -> &ReadCursor {
        &self.cursor
    }

    /// Whether this resumes from a checkpoint.
    #[must_use]
    pub fn is_resuming(&self) -> bool {
        self.checkpoint.is_some()
    }

    /// The checkpoint resumed from, if any.
    #[must_use]
    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref()
    }
}
