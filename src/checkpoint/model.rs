//! What is a checkpoint?
//!
//! A [`Checkpoint`] (§4.1) records how far a consumer got through one stream: a key naming
//! the consumer, the [`ReadCursor`] it reached, when it was saved and free-form metadata. It
//! is progress only and restores nothing live: on resume, records after the cursor's last
//! consumed sequence are read, so the checkpointed record is not processed again.
//!
//! Checkpoints are immutable and always valid: the key is non-blank, the cursor's sequence
//! and hint fit the reference's integers (`i64`), and the metadata nests at most
//! [`METADATA_DEPTH_MAX`] levels, so every checkpoint can be written to a file the reference
//! can read back (its decoder stops at 32 levels; it would save deeper metadata that it
//! then cannot load).

use serde_json::Value;
use time::OffsetDateTime;

use super::Error;
use crate::record::keys::{
    JOB_UUID, PBX_NODE_SLUG, RECOVERY_GENERATION_ID, REPLAY_SESSION_ID, WORKER_SESSION_ID,
};
use crate::record::{JsonMap, ReadCursor, is_blank};

/// How deep checkpoint metadata may nest: the metadata map itself is level 1 and every
/// nested map or list adds one. With the file object and the metadata map this keeps a
/// checkpoint file within the reference's JSON depth limit of 32.
pub const METADATA_DEPTH_MAX: usize = 31;

/// The metadata keys that carry a checkpoint's operational identity, in the order the
/// reference writes them (§4.4) and the order [`super::CheckpointCriteria`] matches them.
pub const IDENTITY_KEYS: [&str; 5] = [
    REPLAY_SESSION_ID,
    JOB_UUID,
    PBX_NODE_SLUG,
    WORKER_SESSION_ID,
    RECOVERY_GENERATION_ID,
];

/// A saved position of one consumer in one stream.
///
/// Equality compares every field; `saved_at` must agree on the instant and the offset.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    key: String,
    cursor: ReadCursor,
    saved_at: OffsetDateTime,
    metadata: JsonMap,
}

impl Checkpoint {
    /// Builds a checkpoint.
    ///
    /// `saved_at` keeps its precision in memory; files hold whole milliseconds (§1.5), so a
    /// checkpoint loaded back has its `saved_at` truncated to milliseconds.
    ///
    /// # Errors
    ///
    /// - [`Error::BlankKey`] if `key` is blank (empty after PHP `trim`);
    /// - [`Error::OutOfRange`] if the cursor's sequence or hint exceeds `i64::MAX`;
    /// - [`Error::MetadataTooDeep`] if the metadata nests deeper than [`METADATA_DEPTH_MAX`].
    pub fn new(
        key: impl Into<String>,
        cursor: ReadCursor,
        saved_at: OffsetDateTime,
        metadata: JsonMap,
    ) -> Result<Self, Error> {
        let key = key.into();
        if is_blank(&key) {
            return Err(Error::BlankKey);
        }
        check_position("last_consumed_sequence", cursor.last_consumed_sequence())?;
        if let Some(hint) = cursor.byte_offset_hint() {
            check_position("byte_offset_hint", hint)?;
        }
        if map_depth(&metadata) > METADATA_DEPTH_MAX {
            return Err(Error::MetadataTooDeep {
                max: METADATA_DEPTH_MAX,
            });
        }
        Ok(Self {
            key,
            cursor,
            saved_at,
            metadata,
        })
    }

    /// The key naming the consumer.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The position reached: the last consumed sequence and an advisory byte-offset hint.
    #[must_use]
    pub fn cursor(&self) -> &ReadCursor {
        &self.cursor
    }

    /// When the checkpoint was saved.
    #[must_use]
    pub fn saved_at(&self) -> &OffsetDateTime {
        &self.saved_at
    }

    /// Free-form metadata in insertion order (identity anchors among it, see
    /// [`IDENTITY_KEYS`]).
    #[must_use]
    pub fn metadata(&self) -> &JsonMap {
        &self.metadata
    }

    /// The next sequence the consumer needs: the last consumed sequence plus one.
    #[must_use]
    pub fn next_sequence(&self) -> u64 {
        self.cursor.last_consumed_sequence().saturating_add(1)
    }

    /// Takes the checkpoint apart into key, cursor, `saved_at` and metadata.
    #[must_use]
    pub fn into_parts(self) -> (String, ReadCursor, OffsetDateTime, JsonMap) {
        (self.key, self.cursor, self.saved_at, self.metadata)
    }
}

fn check_position(field: &'static str, value: u64) -> Result<(), Error> {
    if i64::try_from(value).is_ok() {
        Ok(())
    } else {
        Err(Error::OutOfRange { field, value })
    }
}

/// The nesting depth of a map (the map itself is level 1), computed without recursion so
/// that arbitrarily deep values built in code cannot exhaust the stack.
pub(crate) fn map_depth(map: &JsonMap) -> usize {
    let mut deepest = 1;
    let mut pending: Vec<(&Value, usize)> = map.values().map(|value| (value, 2)).collect();
    while let Some((value, level)) = pending.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match value {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => continue,
        };
        deepest = deepest.max(level);
        pending.extend(children.map(|child| (child, level + 1)));
    }
    deepest
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    fn map(value: Value) -> JsonMap {
        match value {
            Value::Object(map) => map,
            _ => JsonMap::new(),
        }
    }

    #[test]
    fn identity_keys_are_distinct_and_in_reference_order() {
        let distinct: std::collections::HashSet<_> = IDENTITY_KEYS.iter().collect();
        assert_eq!(distinct.len(), IDENTITY_KEYS.len());
        assert_eq!(
            IDENTITY_KEYS,
            [
                "replay_session_id",
                "job_uuid",
                "pbx_node_slug",
                "worker_session_id",
                "recovery_generation_id"
            ]
        );
    }

    #[test]
    fn positions_beyond_i64_are_rejected() {
        let at = datetime!(2024-06-01 12:00 UTC);
        let too_far = u64::try_from(i64::MAX).unwrap() + 1;
        assert!(matches!(
            Checkpoint::new("k", ReadCursor::new(too_far, None), at, JsonMap::new()),
            Err(Error::OutOfRange {
                field: "last_consumed_sequence",
                ..
            })
        ));
        assert!(matches!(
            Checkpoint::new("k", ReadCursor::new(1, Some(too_far)), at, JsonMap::new()),
            Err(Error::OutOfRange {
                field: "byte_offset_hint",
                ..
            })
        ));
        let max = u64::try_from(i64::MAX).unwrap();
        assert!(Checkpoint::new("k", ReadCursor::new(max, Some(max)), at, JsonMap::new()).is_ok());
    }

    #[test]
    fn metadata_depth_is_bounded() {
        let at = datetime!(2024-06-01 12:00 UTC);
        let mut value = json!(1);
        for _ in 0..METADATA_DEPTH_MAX - 1 {
            value = json!([value]);
        }
        let ok = map(json!({ "deep": value }));
        assert_eq!(map_depth(&ok), METADATA_DEPTH_MAX);
        assert!(Checkpoint::new("k", ReadCursor::start(), at, ok).is_ok());
        let too_deep = map(json!({ "deeper": [value] }));
        assert!(matches!(
            Checkpoint::new("k", ReadCursor::start(), at, too_deep),
            Err(Error::MetadataTooDeep { max: 31 })
        ));
    }

    #[test]
    fn deep_metadata_depth_is_measured_without_recursion() {
        let mut value = json!(null);
        for _ in 0..2_000 {
            value = json!([value]);
        }
        let metadata = map(json!({ "deep": value }));
        assert_eq!(map_depth(&metadata), 2_001);
        let result = Checkpoint::new(
            "k",
            ReadCursor::start(),
            datetime!(2024-06-01 12:00 UTC),
            metadata,
        );
        assert!(matches!(result, Err(Error::MetadataTooDeep { .. })));
    }

    #[test]
    fn next_sequence_is_one_past_the_cursor() {
        let checkpoint = Checkpoint::new(
            "k",
            ReadCursor::new(41, None),
            datetime!(2024-06-01 12:00 UTC),
            JsonMap::new(),
        )
        .unwrap();
        assert_eq!(checkpoint.next_sequence(), 42);
    }
}
