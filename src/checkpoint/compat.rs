//! Can every checkpoint still resume from what the artifact store retains?
//!
//! A checkpoint needs the records after its cursor: its next sequence is the last consumed
//! sequence plus one (§4.7). The [`CompatibilityValidator`] compares that with the store's
//! first retained sequence, read through [`ArtifactReader::stats`]:
//!
//! - next sequence at or after the first retained one: [`Compatibility::Compatible`];
//! - next sequence below it: the records it needs were pruned,
//!   [`Compatibility::Pruned`], and [`CompatibilityValidator::assert_compatible`] fails with
//!   [`Error::Incompatible`] naming the checkpoint, the first retained sequence and the
//!   sequence it needs (the reference raises its retention error).
//!
//! Because sequences are never reused (decision C1), a store whose records were all pruned
//! still knows its last sequence: its first retained sequence is the next one it will
//! assign, so a checkpoint left behind by a full prune is reported as pruned. (The
//! reference calls every checkpoint compatible with an empty stream, because its sequences
//! restart at 1 after a full prune.)
//!
//! A checkpoint beyond the end (last consumed sequence above the store's last sequence) is
//! compatible, as in the reference, so retention treats it like a checkpoint at the end: it
//! protects nothing. Under C1 such a checkpoint cannot have been taken on this store's
//! stream (a cursor can only reach sequences the store assigned), so the report marks it
//! [`Compatibility::BeyondEnd`] for callers that want to refuse it: resuming from it
//! skips every record until the stream passes its cursor.
//!
//! Only the head of the stream is inspected; the log store keeps sequences contiguous, so
//! there are no gaps in the middle to find.

use super::{Checkpoint, Error};
use crate::store::ArtifactReader;

/// How one checkpoint relates to the retained stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compatibility {
    /// The records the checkpoint needs are all retained.
    Compatible,
    /// The checkpoint needs records that were pruned.
    Pruned {
        /// The next sequence the checkpoint needs.
        required_next: u64,
        /// The first sequence the store retains (or assigns next, when it holds none).
        first_retained: u64,
    },
    /// The checkpoint is past the store's last sequence (compatible, but suspicious).
    BeyondEnd {
        /// The checkpoint's last consumed sequence.
        last_consumed: u64,
        /// The last sequence the store ever assigned.
        last_sequence: u64,
    },
}

impl Compatibility {
    /// Whether the checkpoint can resume from the retained stream.
    #[must_use]
    pub fn is_compatible(&self) -> bool {
        !matches!(self, Compatibility::Pruned { .. })
    }
}

/// The outcome of checking checkpoints against a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompatibilityReport {
    /// The first sequence the store retains, or the next one it assigns when it holds none.
    pub first_retained: u64,
    /// The last sequence the store ever assigned (0 for a new store).
    pub last_sequence: u64,
    /// Each checkpoint's key with its status, in the order given.
    pub checkpoints: Vec<(String, Compatibility)>,
}

impl CompatibilityReport {
    /// Whether every checkpoint can resume.
    #[must_use]
    pub fn is_compatible(&self) -> bool {
        self.checkpoints
            .iter()
            .all(|(_, status)| status.is_compatible())
    }
}

/// Checks checkpoints against the records an artifact store retains.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompatibilityValidator;

impl CompatibilityValidator {
    /// Reports how each checkpoint relates to the store's retained stream.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if the store's figures cannot be read.
    pub fn check<S: ArtifactReader + ?Sized>(
        &self,
        store: &S,
        checkpoints: &[Checkpoint],
    ) -> Result<CompatibilityReport, Error> {
        let stats = store.stats().map_err(Error::Store)?;
        let first_retained = stats
            .first_sequence
            .unwrap_or_else(|| stats.last_sequence.saturating_add(1));
        let statuses = checkpoints
            .iter()
            .map(|checkpoint| {
                let last_consumed = checkpoint.cursor().last_consumed_sequence();
                let required_next = checkpoint.next_sequence();
                let status = if required_next < first_retained {
                    Compatibility::Pruned {
                        required_next,
                        first_retained,
                    }
                } else if last_consumed > stats.last_sequence {
                    Compatibility::BeyondEnd {
                        last_consumed,
                        last_sequence: stats.last_sequence,
                    }
                } else {
                    Compatibility::Compatible
                };
                (checkpoint.key().to_owned(), status)
            })
            .collect();
        Ok(CompatibilityReport {
            first_retained,
            last_sequence: stats.last_sequence,
            checkpoints: statuses,
        })
    }

    /// Fails if any checkpoint needs records the store no longer retains.
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`] for the first such checkpoint; [`Error::Store`].
    pub fn assert_compatible<S: ArtifactReader + ?Sized>(
        &self,
        store: &S,
        checkpoints: &[Checkpoint],
    ) -> Result<(), Error> {
        let report = self.check(store, checkpoints)?;
        for (key, status) in report.checkpoints {
            if let Compatibility::Pruned {
                required_next,
                first_retained,
            } = status
            {
                return Err(Error::Incompatible {
                    key,
                    first_retained,
                    required_next,
                });
            }
        }
        Ok(())
    }
}
