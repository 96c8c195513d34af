//! How does a caller save a checkpoint under a first-class operational identity?
//!
//! A [`CheckpointReference`] (§4.4) is a key plus [`IdentityAnchors`] plus caller metadata.
//! The metadata it saves is the caller's metadata followed by the given anchors under their
//! keys, in the fixed order `replay_session_id`, `job_uuid`, `pbx_node_slug`,
//! `worker_session_id`, `recovery_generation_id`. An anchor overrides a caller entry of the
//! same name, which keeps the caller entry's position (as PHP array assignment does).
//!
//! A [`CheckpointRepository`] saves references with the current time, and loads, checks,
//! deletes and looks up checkpoints in a [`CheckpointStore`].

use serde_json::Value;

use super::{Checkpoint, CheckpointCriteria, CheckpointStore, Error, IdentityAnchors};
use crate::record::{JsonMap, ReadCursor, is_blank, timestamp};

/// A checkpoint key with its identity anchors and caller metadata.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointReference {
    key: String,
    anchors: IdentityAnchors,
    metadata: JsonMap,
}

impl CheckpointReference {
    /// Validates a reference.
    ///
    /// # Errors
    ///
    /// [`Error::BlankKey`] if the key is blank; [`Error::BlankField`] if a given anchor is.
    pub fn new(
        key: impl Into<String>,
        anchors: IdentityAnchors,
        metadata: JsonMap,
    ) -> Result<Self, Error> {
        let key = key.into();
        if is_blank(&key) {
            return Err(Error::BlankKey);
        }
        anchors.validate()?;
        Ok(Self {
            key,
            anchors,
            metadata,
        })
    }

    /// The checkpoint key.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The identity anchors.
    #[must_use]
    pub fn anchors(&self) -> &IdentityAnchors {
        &self.anchors
    }

    /// The caller's metadata, without the anchors.
    #[must_use]
    pub fn metadata(&self) -> &JsonMap {
        &self.metadata
    }

    /// The metadata a checkpoint of this reference carries: the caller's entries, then the
    /// given anchors in the fixed order, anchors overriding same-named caller entries.
    #[must_use]
    pub fn metadata_with_identity_anchors(&self) -> JsonMap {
        let mut metadata = self.metadata.clone();
        for (key, value) in self.anchors.given() {
            metadata.insert(key.to_owned(), Value::String(value.to_owned()));
        }
        metadata
    }
}

/// Saves, loads and looks up checkpoints by [`CheckpointReference`].
#[derive(Clone, Debug)]
pub struct CheckpointRepository {
    store: CheckpointStore,
}

impl CheckpointRepository {
    /// A repository over a store.
    #[must_use]
    pub fn new(store: CheckpointStore) -> Self {
        Self { store }
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &CheckpointStore {
        &self.store
    }

    /// Saves a checkpoint of the reference at `cursor`, saved now (the store's clock, in
    /// whole milliseconds as the file keeps it), and returns it.
    ///
    /// # Errors
    ///
    /// Checkpoint validation ([`Checkpoint::new`]); [`Error::Save`].
    pub fn save(
        &self,
        reference: &CheckpointReference,
        cursor: ReadCursor,
    ) -> Result<Checkpoint, Error> {
        let checkpoint = Checkpoint::new(
            reference.key(),
            cursor,
            timestamp::truncate_to_millis(self.store.now()),
            reference.metadata_with_identity_anchors(),
        )?;
        self.store.save(&checkpoint)?;
        Ok(checkpoint)
    }

    /// See [`CheckpointStore::load`].
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::load`].
    pub fn load(&self, key: &str) -> Result<Option<Checkpoint>, Error> {
        self.store.load(key)
    }

    /// See [`CheckpointStore::exists`].
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::exists`].
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        self.store.exists(key)
    }

    /// See [`CheckpointStore::delete`].
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::delete`].
    pub fn delete(&self, key: &str) -> Result<bool, Error> {
        self.store.delete(key)
    }

    /// See [`CheckpointStore::find`].
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::find`].
    pub fn find(&self, criteria: &CheckpointCriteria) -> Result<Vec<Checkpoint>, Error> {
        self.store.find(criteria)
    }

    /// See [`CheckpointStore::find_all`].
    ///
    /// # Errors
    ///
    /// As [`CheckpointStore::find_all`].
    pub fn find_all(&self, criteria: &CheckpointCriteria) -> Result<Vec<Checkpoint>, Error> {
        self.store.find_all(criteria)
    }
}
