//! Helpers shared by the capture test binaries: a fresh store, everything in it, and the
//! evidence the engine rebuilds from it.

use esl_replay::evidence::{
    Engine, EvidenceBundle, ReconstructionWindow, ReconstructionWindowFields,
};
use esl_replay::record::{Criteria, ReadCursor, Record};
use esl_replay::store::{ArtifactReader, ArtifactStore};

use super::process::open_store;

/// A new segment-log store in a temporary directory (kept alive by the returned guard).
pub(crate) fn new_store() -> (tempfile::TempDir, Box<dyn ArtifactStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path().join("store")).unwrap();
    (dir, Box::new(store))
}

/// Every record of `store`, in order.
///
/// Capture writes records' texts and checksums directly (not from maps): each record read
/// back (which checks its map texts and identity) must also match its own checksum.
pub(crate) fn all_records(store: &dyn ArtifactReader) -> Vec<Record> {
    let records = store
        .read_from_cursor(&ReadCursor::start(), 100_000, &Criteria::default())
        .unwrap();
    for record in &records {
        assert!(
            record.verify_checksum(),
            "record {} does not match its checksum",
            record.append_sequence()
        );
    }
    records
}

/// The evidence the engine rebuilds from `records` (all of them, in order).
pub(crate) fn evidence(records: &[Record]) -> EvidenceBundle {
    let window = ReconstructionWindow::new(ReconstructionWindowFields {
        from: ReadCursor::start(),
        until_append_sequence: None,
        criteria: None,
        batch_limit: 500,
        checkpoint_key: None,
        checkpoint_metadata: Default::default(),
    })
    .unwrap();
    Engine::new().reconstruct_records(records, &window).unwrap()
}

/// The recovery generations of `bundle`, in order.
pub(crate) fn generation_ids(bundle: &EvidenceBundle) -> Vec<&str> {
    bundle
        .continuity_snapshot
        .recovery_generations
        .iter()
        .map(|g| g.generation_id.as_str())
        .collect()
}
