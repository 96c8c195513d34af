//! Shared helpers for the checkpoint integration tests: stores with a fixed clock and
//! envelopes for artifact stores.

use std::path::Path;

use esl_replay::checkpoint::CheckpointStore;
use esl_replay::record::Envelope;
use serde_json::json;
use time::OffsetDateTime;
use time::macros::datetime;

use super::map;
use super::record::FIXTURE_CAPTURE;

/// The time the fixed-clock stores report.
pub(crate) const NOW: OffsetDateTime = datetime!(2024-06-01 12:00 UTC);

/// A store in `dir` whose clock always says [`NOW`].
pub(crate) fn fixed_store(dir: &Path) -> CheckpointStore {
    CheckpointStore::open(dir).unwrap().with_clock(|| NOW)
}

/// A small captured artifact, the `n`-th of a stream.
pub(crate) fn envelope(n: u64) -> Envelope {
    Envelope::new("1", "api.dispatch", FIXTURE_CAPTURE)
        .with_session_id("sess-001")
        .with_payload(map(json!({"command": "originate", "n": n})))
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
