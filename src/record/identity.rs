//! Which operator identity does a record carry?
//!
//! Three identity values are derived from a record's maps, with the exact rules of the
//! reference (§3), and used by read filters, checkpoint checks and derived index columns:
//!
//! - `replay_session_id`: `correlation_ids.replay_session_id` if it is a non-blank string,
//!   otherwise `runtime_flags.replay_session_id` if that is a non-blank string;
//! - `pbx_node_slug`: only `runtime_flags.pbx_node_slug` (a value in `correlation_ids` is
//!   ignored);
//! - `worker_session_id`: only `runtime_flags.worker_session_id`.
//!
//! Non-string values (an integer 7, a list) and blank strings count as absent.

use serde_json::Value;

use super::keys::{PBX_NODE_SLUG, REPLAY_SESSION_ID, WORKER_SESSION_ID};
use super::{JsonMap, is_blank};

/// The replay session id: from `correlation_ids`, falling back to `runtime_flags`.
#[must_use]
pub fn replay_session_id<'a>(
    correlation_ids: &'a JsonMap,
    runtime_flags: &'a JsonMap,
) -> Option<&'a str> {
    non_blank_string(correlation_ids, REPLAY_SESSION_ID)
        .or_else(|| non_blank_string(runtime_flags, REPLAY_SESSION_ID))
}

/// The PBX node slug, from `runtime_flags` only.
#[must_use]
pub fn pbx_node_slug(runtime_flags: &JsonMap) -> Option<&str> {
    non_blank_string(runtime_flags, PBX_NODE_SLUG)
}

/// The worker session id, from `runtime_flags` only.
#[must_use]
pub fn worker_session_id(runtime_flags: &JsonMap) -> Option<&str> {
    non_blank_string(runtime_flags, WORKER_SESSION_ID)
}

fn non_blank_string<'a>(map: &'a JsonMap, key: &str) -> Option<&'a str> {
    match map.get(key) {
        Some(Value::String(text)) if !is_blank(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn map(value: Value) -> JsonMap {
        match value {
            Value::Object(map) => map,
            _ => JsonMap::new(),
        }
    }

    #[test]
    fn correlation_value_wins_over_runtime_flags() {
        let correlation = map(json!({"replay_session_id": "from-correlation"}));
        let flags = map(json!({"replay_session_id": "from-flags"}));
        assert_eq!(
            replay_session_id(&correlation, &flags),
            Some("from-correlation")
        );
    }

    #[test]
    fn blank_or_non_string_correlation_value_falls_through_to_runtime_flags() {
        let flags = map(json!({"replay_session_id": "from-flags"}));
        for correlation in [
            json!({"replay_session_id": "  "}),
            json!({"replay_session_id": 7}),
            json!({}),
        ] {
            assert_eq!(
                replay_session_id(&map(correlation), &flags),
                Some("from-flags")
            );
        }
        assert_eq!(
            replay_session_id(&JsonMap::new(), &map(json!({"replay_session_id": 7}))),
            None
        );
    }

    #[test]
    fn node_slug_and_worker_session_come_only_from_runtime_flags() {
        let flags = map(json!({"pbx_node_slug": "node-a", "worker_session_id": "worker-1"}));
        assert_eq!(pbx_node_slug(&flags), Some("node-a"));
        assert_eq!(worker_session_id(&flags), Some("worker-1"));
        assert_eq!(
            pbx_node_slug(&map(json!({"pbx_node_slug": ["node-a"]}))),
            None
        );
        assert_eq!(
            worker_session_id(&map(json!({"worker_session_id": ""}))),
            None
        );
    }
}
