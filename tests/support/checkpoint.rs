//! Shared helpers for the checkpoint integration tests: stores with a fixed clock, JSON
//! maps from `json!` literals, and envelopes for artifact stores.

use std::path::Path;

use esl_replay::checkpoint::CheckpointStore;
use esl_replay::record::{Envelope, JsonMap};
use serde_json::Value;
use time::OffsetDateTime;
use time::macros::datetime;

/// The time the fixed-clock stores report.
pub(crate) const NOW: OffsetDateTime = datetime!(2024-06-01 12:00 UTC);

/// A store in `dir` whose clock always says [`NOW`].
pub(crate) fn fixed_store(dir: &Path) -> CheckpointStore {
    CheckpointStore::open(dir).unwrap().with_clock(|| NOW)
}

/// The map of a `json!({...})` literal (empty for anything else).
pub(crate) fn map(value: Value) -> JsonMap {
    match value {
        Value::Object(map) => map,
        _ => JsonMap::new(),
    }
}

/// A small captured artifact, the `n`-th of a stream.
pub(crate) fn envelope(n: u64) -> Envelope {
    let mut payload = JsonMap::new();
    payload.insert("command".into(), "originate".into());
    payload.insert("n".into(), n.into());
    Envelope {
        artifact_version: "1".into(),
        artifact_name: "api.dispatch".into(),
        capture_timestamp: datetime!(2024-01-15 10:00:00 UTC),
        capture_path: None,
        connection_generation: None,
        session_id: Some("sess-001".into()),
        job_uuid: None,
        event_name: None,
        correlation_ids: JsonMap::new(),
        runtime_flags: JsonMap::new(),
        payload,
    }
}

/// The names of the files in `dir`, sorted.
pub(crate) fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
