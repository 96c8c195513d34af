//! Can every checkpoint still resume from what the artifact store retains?
//!
//! A checkpoint needs the records after its cursor: its next sequence is the last consumed
//! sequence plus one (§4.7). The [`CompatibilityValidator`] compares that with what the
//! store pruned, read through [`ArtifactReader::stats`]:
//!
//! - next sequence above the last pruned record's ([`StoreStats::pruned_through`]):
//!   [`Compatibility::Compatible`], whatever gaps imports left between it and the first
//!   retained record;
//! - next sequence at or below it: a record it needs was pruned, [`Compatibility::Pruned`],
//!   and [`CompatibilityValidator::assert_compatible`] fails with [`Error::Incompatible`]
//!   naming the checkpoint, the first retained sequence and the sequence it needs (the
//!   reference raises its retention error).
//!
//! A backend that cannot tell what it pruned (SQLite) is judged as the reference judges
//! it: a next sequence below the first retained one counts as pruned.
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
//! Resuming consumers (`forward`, `replay`) refuse both: a pruned checkpoint would skip the
//! pruned records, and one beyond the end every record until the stream passes it.

use super::{Checkpoint, Error};
use crate::store::ArtifactReader;
#[cfg(doc)]
use crate::store::StoreStats;

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
                let pruned = match stats.pruned_through {
                    Some(through) => required_next <= through,
                    None => required_next < first_retained,
                };
                let status = if pruned {
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

    /// Fails unless a consumer can resume from `checkpoint` without skipping a record: no
    /// record it needs was pruned, and it is not beyond the store's end (a checkpoint taken
    /// on another store, or on an earlier one at this path).
    ///
    /// # Errors
    ///
    /// [`Error::Incompatible`], [`Error::BeyondEnd`]; [`Error::Store`].
    pub fn assert_resumable<S: ArtifactReader + ?Sized>(
        &self,
        store: &S,
        checkpoint: &Checkpoint,
    ) -> Result<(), Error> {
        let report = self.check(store, std::slice::from_ref(checkpoint))?;
        let key = checkpoint.key().to_owned();
        match report
            .checkpoints
            .into_iter()
            .next()
            .map(|(_, status)| status)
        {
            Some(Compatibility::Pruned {
                required_next,
                first_retained,
            }) => Err(Error::Incompatible {
                key,
                first_retained,
                required_next,
            }),
            Some(Compatibility::BeyondEnd {
                last_consumed,
                last_sequence,
            }) => Err(Error::BeyondEnd {
                key,
                last_consumed,
                last_sequence,
            }),
            _ => Ok(()),
        }
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
