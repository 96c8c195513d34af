//! Which operational identity does a checkpoint carry, and which checkpoints does a lookup
//! select?
//!
//! [`IdentityAnchors`] are the five optional identity fields of §4.3-4.4
//! (`replay_session_id`, `job_uuid`, `pbx_node_slug`, `worker_session_id`,
//! `recovery_generation_id`). A checkpoint carries them as metadata entries under the same
//! names. [`CheckpointCriteria`] selects checkpoints whose metadata holds every given anchor
//! as a JSON string equal to it; matching is type-strict like the reference's `===`, so a
//! metadata integer `5` does not match the text `"5"`.

use serde_json::Value;

use super::{Checkpoint, Error};
use crate::record::is_blank;
use crate::record::keys::{
    JOB_UUID, PBX_NODE_SLUG, RECOVERY_GENERATION_ID, REPLAY_SESSION_ID, WORKER_SESSION_ID,
};

/// The five optional identity anchors of a checkpoint. Any given anchor must be non-blank
/// where it is validated ([`CheckpointCriteria::new`], [`super::CheckpointReference::new`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityAnchors {
    /// The replay session id.
    pub replay_session_id: Option<String>,
    /// The background job UUID.
    pub job_uuid: Option<String>,
    /// The PBX node slug.
    pub pbx_node_slug: Option<String>,
    /// The worker session id.
    pub worker_session_id: Option<String>,
    /// The recovery generation id.
    pub recovery_generation_id: Option<String>,
}

impl IdentityAnchors {
    /// Every anchor with its metadata key, in the reference order, given or not.
    pub fn entries(&self) -> [(&'static str, Option<&str>); 5] {
        [
            (REPLAY_SESSION_ID, self.replay_session_id.as_deref()),
            (JOB_UUID, self.job_uuid.as_deref()),
            (PBX_NODE_SLUG, self.pbx_node_slug.as_deref()),
            (WORKER_SESSION_ID, self.worker_session_id.as_deref()),
            (
                RECOVERY_GENERATION_ID,
                self.recovery_generation_id.as_deref(),
            ),
        ]
    }

    /// The given anchors with their metadata keys, in the reference order.
    pub fn given(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.entries()
            .into_iter()
            .filter_map(|(key, value)| value.map(|value| (key, value)))
    }

    /// Whether no anchor is given.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.given().next().is_none()
    }

    /// Checks that every given anchor is non-blank.
    pub(crate) fn validate(&self) -> Result<(), Error> {
        match self.given().find(|(_, value)| is_blank(value)) {
            Some((field, _)) => Err(Error::BlankField { field }),
            None => Ok(()),
        }
    }
}

/// A bounded checkpoint lookup (§4.3): at least one identity anchor, all of which must
/// match, and how many checkpoints to return at most.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointCriteria {
    anchors: IdentityAnchors,
    limit: usize,
}

impl CheckpointCriteria {
    /// The reference's default limit.
    pub const DEFAULT_LIMIT: usize = 100;

    /// Validates a lookup.
    ///
    /// # Errors
    ///
    /// - [`Error::BlankField`] if a given anchor is blank;
    /// - [`Error::NoCriteria`] if no anchor is given;
    /// - [`Error::InvalidLimit`] if `limit` is 0.
    pub fn new(anchors: IdentityAnchors, limit: usize) -> Result<Self, Error> {
        anchors.validate()?;
        if anchors.is_empty() {
            return Err(Error::NoCriteria);
        }
        if limit == 0 {
            return Err(Error::InvalidLimit);
        }
        Ok(Self { anchors, limit })
    }

    /// The anchors that must match.
    #[must_use]
    pub fn anchors(&self) -> &IdentityAnchors {
        &self.anchors
    }

    /// How many checkpoints a bounded lookup returns at most (ignored by
    /// [`super::CheckpointStore::find_all`]).
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Whether the checkpoint's metadata holds every given anchor as an equal JSON string.
    #[must_use]
    pub fn matches(&self, checkpoint: &Checkpoint) -> bool {
        self.anchors.given().all(|(key, expected)| {
            matches!(checkpoint.metadata().get(key), Some(Value::String(actual)) if actual == expected)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::record::{JsonMap, ReadCursor};

    fn checkpoint(metadata: Value) -> Checkpoint {
        let Value::Object(metadata) = metadata else {
            return Checkpoint::new(
                "k",
                ReadCursor::start(),
                datetime!(2024-06-01 0:00 UTC),
                JsonMap::new(),
            )
            .unwrap();
        };
        Checkpoint::new(
            "k",
            ReadCursor::start(),
            datetime!(2024-06-01 0:00 UTC),
            metadata,
        )
        .unwrap()
    }

    fn criteria(anchors: IdentityAnchors) -> CheckpointCriteria {
        CheckpointCriteria::new(anchors, 10).unwrap()
    }

    #[test]
    fn matching_is_conjunctive_and_type_strict() {
        let worker_a =
            checkpoint(json!({"replay_session_id": "r1", "worker_session_id": "a", "job_uuid": 5}));
        let by_replay = criteria(IdentityAnchors {
            replay_session_id: Some("r1".into()),
            ..IdentityAnchors::default()
        });
        assert!(by_replay.matches(&worker_a));
        let by_both = criteria(IdentityAnchors {
            replay_session_id: Some("r1".into()),
            worker_session_id: Some("b".into()),
            ..IdentityAnchors::default()
        });
        assert!(!by_both.matches(&worker_a));
        let by_job = criteria(IdentityAnchors {
            job_uuid: Some("5".into()),
            ..IdentityAnchors::default()
        });
        assert!(!by_job.matches(&worker_a));
        assert!(!by_replay.matches(&checkpoint(json!({}))));
    }

    #[test]
    fn blank_anchors_are_named() {
        let result = CheckpointCriteria::new(
            IdentityAnchors {
                job_uuid: Some("j".into()),
                pbx_node_slug: Some(" \t".into()),
                ..IdentityAnchors::default()
            },
            1,
        );
        assert!(matches!(
            result,
            Err(Error::BlankField {
                field: "pbx_node_slug"
            })
        ));
    }
}
