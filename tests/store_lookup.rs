//! Lookups by id on both backends after batched writes of the benchmark dataset.

use esl_replay::store::{ArtifactStore, LogStore, dataset};

fn check(store: &mut dyn ArtifactStore) {
    let mut ids = Vec::new();
    for chunk in (0..20_000u64).collect::<Vec<_>>().chunks(1000) {
        ids.extend(
            store
                .write_batch(chunk.iter().map(|n| dataset::envelope(*n)).collect())
                .unwrap(),
        );
    }
    for (i, id) in ids.iter().enumerate().step_by(7) {
        let found = store.read_by_id(id).unwrap();
        assert_eq!(
            found.map(|r| r.append_sequence()),
            Some(i as u64 + 1),
            "lookup {i} of {id}"
        );
    }
}

#[test]
fn lookups_find_every_record_in_the_log_store() {
    let dir = tempfile::tempdir().unwrap();
    check(&mut LogStore::open(dir.path().join("store")).unwrap());
}

#[test]
#[cfg(feature = "sqlite")]
fn lookups_find_every_record_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check(&mut esl_replay::store::SqliteStore::open(&dir.path().join("store.sqlite")).unwrap());
}
