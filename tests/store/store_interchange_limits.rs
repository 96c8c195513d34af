//! Every record a store accepts exports and imports again, byte for byte, on both
//! backends: one JSON depth limit (`record::MAX_JSON_DEPTH`) holds wherever records enter
//! or are decoded; the import's bound on a line's values (`record::MAX_JSON_VALUES`) lies
//! far above what records hold.

use std::io::Cursor;

use esl_replay::record::{Criteria, MAX_JSON_DEPTH, Record};
use esl_replay::store::{ArtifactStore, ImportOptions, SqliteStore, export, import};
use serde_json::{Value, json};

use crate::support::map;
use crate::support::process::open_store;
use crate::support::record::fixture_envelope;

/// A list nested `containers` deep around a leaf.
fn nested(containers: usize) -> Value {
    let mut value = json!("leaf");
    for _ in 0..containers {
        value = json!([value]);
    }
    value
}

#[derive(Clone, Copy, Debug)]
enum Backend {
    Log,
    Sqlite,
}

fn open(dir: &std::path::Path, backend: Backend) -> Box<dyn ArtifactStore> {
    match backend {
        Backend::Log => Box::new(open_store(dir.join("store")).unwrap()),
        Backend::Sqlite => Box::new(SqliteStore::open(&dir.join("store.sqlite")).unwrap()),
    }
}

fn export_all(store: &dyn ArtifactStore) -> Vec<u8> {
    let mut out = Vec::new();
    export(store, &mut out, 0, &Criteria::any(), &mut |_| {}).unwrap();
    out
}

fn all_records(store: &dyn ArtifactStore) -> Vec<Record> {
    let mut records = Vec::new();
    store
        .visit_from_cursor(
            &esl_replay::record::ReadCursor::start(),
            100,
            &Criteria::any(),
            &mut |view| records.push(view.to_record().unwrap()),
        )
        .unwrap();
    records
}

/// Runs `test` on a thread with a 1 MiB stack, half of a spawned thread's default: the
/// recursive readers and writers keep a margin at the depth limit.
fn on_a_small_stack(test: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(test)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn records_at_the_limits_round_trip_through_export_and_import_on_both_backends() {
    on_a_small_stack(|| {
        for backend in [Backend::Log, Backend::Sqlite] {
            let source_dir = tempfile::tempdir().unwrap();
            let mut source = open(source_dir.path(), backend);
            // The payload is level 1, so its value at `deep` may hold MAX - 1 containers.
            let payloads = [
                json!({"list": vec![0; 200_000]}),
                json!({"deep": nested(MAX_JSON_DEPTH - 1)}),
                json!({"deep": {"list": nested(MAX_JSON_DEPTH - 3), "many": vec![1; 100_000]}}),
            ];
            for payload in &payloads {
                let mut envelope = fixture_envelope();
                envelope.payload = map(payload.clone());
                source.write(envelope).unwrap();
            }
            // One level more is refused where it enters.
            let mut too_deep = fixture_envelope();
            too_deep.payload = map(json!({"deep": nested(MAX_JSON_DEPTH)}));
            assert!(source.write(too_deep).is_err(), "{backend:?}");
            source.sync().unwrap();

            let exported = export_all(&*source);
            let target_dir = tempfile::tempdir().unwrap();
            let mut target = open(target_dir.path(), backend);
            let report = import(
                &mut *target,
                Cursor::new(&exported),
                ImportOptions::default(),
                &mut |_| {},
            )
            .unwrap_or_else(|error| panic!("{backend:?}: {error}"));
            assert_eq!(report.imported, 3, "{backend:?}");
            assert!(report.skipped.is_empty(), "{backend:?}");
            target.sync().unwrap();
            assert_eq!(export_all(&*target), exported, "{backend:?}");
            // Stored times are exported to the millisecond; everything else is kept.
            let (before, after) = (all_records(&*source), all_records(&*target));
            assert_eq!(after.len(), payloads.len(), "{backend:?}");
            for ((old, new), payload) in before.iter().zip(&after).zip(&payloads) {
                assert!(new.id() == old.id() && new.checksum() == old.checksum());
                assert!(new.payload() == &map(payload.clone()), "{backend:?}");
                assert!(new.verify_checksum(), "{backend:?}");
            }
        }
    });
}
