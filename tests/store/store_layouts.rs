//! Record frame layouts in a store (format/record.md, decision K3):
//!
//! - `tests/fixtures/store-v1/store` was written by a build that stored records as format
//!   version 1 (MessagePack). It opens, verifies and exports byte-identical to the NDJSON it
//!   was imported from, including payloads holding `{}` and `[]` at every depth, list-shaped
//!   maps, a gap in the append sequences, unicode and escapes.
//! - Records appended to it now are version 2; the mixed store verifies, reads by cursor and
//!   by id, and exports byte-identical.
//! - The same file imported into a new log store and into SQLite exports byte-identical on
//!   both backends.

use std::path::{Path, PathBuf};

use esl_replay::record::{Criteria, ReadCursor, RecordId};
use esl_replay::storage::LogOptions;
use esl_replay::store::{ArtifactReader, ArtifactStore, LogStore};

use crate::support;
use crate::support::cli::run_ok as ok;
use crate::support::process::{open_store, open_store_with};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/store-v1")
}

/// The NDJSON lines the fixture store was imported from.
fn input() -> String {
    std::fs::read_to_string(fixture().join("input.ndjson")).unwrap()
}

/// A copy of the version 1 fixture store in `dir`.
fn copy_fixture_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    for sub in ["", "log"] {
        std::fs::create_dir_all(store.join(sub)).unwrap();
        for entry in std::fs::read_dir(fixture().join("store").join(sub)).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_file() {
                std::fs::copy(entry.path(), store.join(sub).join(entry.file_name())).unwrap();
            }
        }
    }
    store
}

/// The input's lines again with ids `v2-N` and sequences 41..; every other byte as written.
fn more_lines() -> String {
    input()
        .lines()
        .zip(41u64..)
        .map(|(line, sequence)| {
            let object: serde_json::Value = serde_json::from_str(line).unwrap();
            let (id, old_sequence) = (&object["id"], &object["append_sequence"]);
            line.replacen(
                &format!("\"id\":{id}"),
                &format!("\"id\":\"v2-{sequence}\""),
                1,
            )
            .replacen(
                &format!("\"append_sequence\":{old_sequence},"),
                &format!("\"append_sequence\":{sequence},"),
                1,
            ) + "\n"
        })
        .collect()
}

#[test]
fn a_version_1_store_exports_byte_identical_to_what_it_was_imported_from() {
    let dir = support::storage::temp_dir();
    let store = copy_fixture_store(dir.path());
    let store = store.to_str().unwrap();
    assert_eq!(ok(&["export", "--store", store]), input());
    assert!(ok(&["verify", "--store", store]).contains("0 problems"));
}

#[test]
fn a_store_holding_both_layouts_verifies_reads_and_exports_byte_identical() {
    let dir = support::storage::temp_dir();
    let store = copy_fixture_store(dir.path());
    let more = dir.path().join("more.ndjson");
    std::fs::write(&more, more_lines()).unwrap();
    let store_arg = store.to_str().unwrap();
    ok(&["import", "--store", store_arg, more.to_str().unwrap()]);
    let expected = input() + &more_lines();
    assert_eq!(ok(&["export", "--store", store_arg]), expected);
    assert!(ok(&["verify", "--store", store_arg]).contains("0 problems"));

    // Frames of both versions are in the log: the first bytes of the record bodies.
    let opened = LogStore::open_read_only(&store).unwrap();
    let mut cursor = opened
        .log_reader()
        .cursor(esl_replay::storage::Seq::FIRST)
        .unwrap();
    let mut versions = Vec::new();
    while let Some(frame) = cursor.next().unwrap() {
        versions.push(frame.payload[0]);
    }
    assert_eq!(versions, [[1u8; 9], [2u8; 9]].concat());

    // Owned reads, views and lookups agree across the two layouts.
    let records = opened
        .read_from_cursor(&ReadCursor::start(), 100, &Criteria::any())
        .unwrap();
    let mut lines = String::new();
    let visited = opened
        .visit_from_cursor(&ReadCursor::start(), 100, &Criteria::any(), &mut |view| {
            view.append_ndjson_line(&mut lines);
        })
        .unwrap();
    assert_eq!((records.len(), visited), (18, 18));
    assert_eq!(lines, expected);
    for record in &records {
        assert!(record.verify_checksum(), "{}", record.id().as_str());
        let found = opened.read_by_id(record.id()).unwrap().unwrap();
        assert_eq!(&found, record);
    }
    let v2 = opened
        .read_by_id(&RecordId::new("v2-47").unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(v2.payload()["obj"], serde_json::json!({}));
    assert_eq!(v2.payload()["list"], serde_json::json!([]));
}

#[test]
fn an_import_exports_byte_identical_on_both_backends() {
    let dir = support::storage::temp_dir();
    let file = fixture().join("input.ndjson");
    for store in ["log-store", "store.sqlite"] {
        let store = dir.path().join(store);
        let store = store.to_str().unwrap();
        ok(&["import", "--store", store, file.to_str().unwrap()]);
        assert_eq!(ok(&["export", "--store", store]), input(), "{store}");
        assert!(ok(&["verify", "--store", store]).contains("0 problems"));
    }
}

/// [STORE-06] A one-shot lookup uses the active segment's chunk files, and a chunk that no
/// longer describes the log (here: taken from another store whose records have the same
/// sequences) is read around, never trusted.
#[test]
fn id_index_chunks_are_used_only_while_they_describe_the_log() {
    use esl_replay::store::dataset;
    let dir = support::storage::temp_dir();
    let write = |name: &str, salt: &str| {
        let path = dir.path().join(name);
        let mut store = open_store(&path).unwrap();
        let mut ids = Vec::new();
        for batch in 0..10u64 {
            let envelopes = (0..1000)
                .map(|n| {
                    let mut envelope = dataset::envelope(batch * 1000 + n);
                    envelope.payload.insert("salt".into(), salt.into());
                    envelope
                })
                .collect();
            ids.extend(store.write_batch(envelopes).unwrap());
        }
        store.close().unwrap();
        (path, ids)
    };
    let (first, first_ids) = write("first", "a");
    let (second, second_ids) = write("second", "b");
    let chunks = |store: &Path| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(store.join("ids"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "part"))
            .collect();
        found.sort();
        found
    };
    assert!(chunks(&first).len() >= 2, "{:?}", chunks(&first));
    for id in [&first_ids[0], &first_ids[5_000], &first_ids[9_999]] {
        let store = LogStore::open_read_only(&first).unwrap();
        assert_eq!(store.read_by_id(id).unwrap().unwrap().id(), id);
    }
    // The second store's chunks are replaced by the first's: same names, same sequences,
    // other records. Every record of the second store is still found, none of the first.
    for (theirs, ours) in chunks(&first).iter().zip(chunks(&second)) {
        std::fs::copy(theirs, ours).unwrap();
    }
    let store = LogStore::open_read_only(&second).unwrap();
    for (n, id) in second_ids.iter().enumerate().step_by(997) {
        assert_eq!(
            store
                .read_by_id(id)
                .unwrap()
                .map(|r| r.id().clone())
                .as_ref(),
            Some(id),
            "{n}"
        );
    }
    for id in first_ids.iter().step_by(997) {
        assert!(store.read_by_id(id).unwrap().is_none());
    }
}

/// [STORE-06] step 3: the writer's open after an unclean shutdown removes every chunk.
#[test]
fn an_unclean_open_removes_the_chunks() {
    use esl_replay::store::dataset;
    let dir = support::storage::temp_dir();
    let path = dir.path().join("store");
    let mut store = open_store(&path).unwrap();
    for batch in 0..6u64 {
        let envelopes = (0..1000)
            .map(|n| dataset::envelope(batch * 1000 + n))
            .collect();
        store.write_batch(envelopes).unwrap();
    }
    store.close().unwrap();
    let parts = || {
        std::fs::read_dir(path.join("ids"))
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".part")
            })
            .count()
    };
    assert!(parts() > 0);
    // A clean open keeps them; without the clean-shutdown file the open is unclean.
    open_store(&path).unwrap().close().unwrap();
    assert!(parts() > 0);
    esl_replay::storage::remove_durable(&path.join("log/clean.meta")).unwrap();
    let store = open_store(&path).unwrap();
    assert_eq!(parts(), 0);
    assert_eq!(
        store
            .read_from_cursor(&ReadCursor::new(5_990, None), 100, &Criteria::any())
            .unwrap()
            .len(),
        10
    );
}

/// [STORE-06] step 3: a crash can lose a roll's seal after the sealed segment's `.ids` file
/// was written; recovery then ends the log in that segment, and the records appended after
/// it may fill it to the same end with other ids. The unclean open removes such files, so
/// every record appended after the crash is found by id and none of the lost ones.
#[test]
fn an_unclean_open_removes_the_id_files_of_segments_the_crash_made_active_again() {
    use esl_replay::store::dataset;
    let options = support::storage::small_options();
    let dir = support::storage::temp_dir();
    let ids_files = |root: &Path| -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(root.join("ids")) else {
            return Vec::new();
        };
        entries
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "ids"))
            .collect()
    };
    // Before the crash: sealed segments, each with its `.ids` file.
    let before = dir.path().join("before");
    let mut store = open_store_with(&before, options.clone()).unwrap();
    let mut lost = Vec::new();
    for batch in 0..30 {
        lost.extend(
            store
                .write_batch(
                    (batch * 10..batch * 10 + 10)
                        .map(dataset::envelope)
                        .collect(),
                )
                .unwrap(),
        );
    }
    store.close().unwrap();
    assert!(ids_files(&before).len() >= 2, "{:?}", ids_files(&before));
    // After it: the first records survive in the first segment, active again, and the files
    // written before the crash are still there.
    let path = dir.path().join("store");
    let mut store = open_store_with(&path, options.clone()).unwrap();
    let mut kept = store
        .write_batch((0..5).map(dataset::envelope).collect())
        .unwrap();
    store.close().unwrap();
    std::fs::create_dir_all(path.join("ids")).unwrap();
    for file in ids_files(&before) {
        std::fs::copy(&file, path.join("ids").join(file.file_name().unwrap())).unwrap();
    }
    esl_replay::storage::remove_durable(&path.join("log/clean.meta")).unwrap();
    // The unclean open, then records of the same sizes, so the segments end where they did.
    let mut store = open_store_with(&path, options).unwrap();
    kept.extend(
        store
            .write_batch((5..300).map(dataset::envelope).collect())
            .unwrap(),
    );
    let check = |store: &dyn ArtifactReader, handle: &str| {
        for (n, id) in kept.iter().enumerate() {
            let found = store.read_by_id(id).unwrap().map(|r| r.append_sequence());
            assert_eq!(found, Some(n as u64 + 1), "{handle}: record {}", n + 1);
        }
        for id in lost.iter().step_by(7) {
            assert!(
                store.read_by_id(id).unwrap().is_none(),
                "{handle}: lost {id}"
            );
        }
    };
    check(&store, "writer");
    check(&*LogStore::open_read_only(&path).unwrap(), "reader");
    store.close().unwrap();
    assert_eq!(
        ids_files(&path).len(),
        ids_files(&before).len(),
        "the segments end where they did before the crash"
    );
    check(
        &*LogStore::open_read_only(&path).unwrap(),
        "reader after close",
    );
}

/// Summaries: a store's [`ArtifactStore::summary`] (sealed segments' summaries, the active
/// segment's chunks and newest records) equals the sum over every record read, on the
/// writer, on a reader, and after the index files are lost and rebuilt.
#[test]
fn summaries_add_up_to_what_the_records_hold() {
    // Many small segments, and one segment whose index is in chunks and newest records.
    summaries_add_up(support::storage::small_options(), 6, |segments| {
        segments > 10
    });
    summaries_add_up(LogOptions::default(), 10, |segments| segments == 1);
}

fn summaries_add_up(options: LogOptions, batches: u64, segments: fn(usize) -> bool) {
    use esl_replay::store::{Summary, dataset};
    let dir = support::storage::temp_dir();
    let path = dir.path().join("store");
    let mut store = open_store_with(&path, options).unwrap();
    for batch in 0..batches {
        let envelopes = (0..1000)
            .map(|n| dataset::envelope(batch * 1000 + n))
            .collect();
        store.write_batch(envelopes).unwrap();
    }
    assert!(segments(store.log_reader().segments().len()));
    // The sum over every record, read one by one.
    let mut expected = Summary::default();
    let (mut artifacts, mut events, mut records) = (
        std::collections::BTreeMap::<String, u64>::new(),
        std::collections::BTreeMap::<String, u64>::new(),
        0u64,
    );
    let mut cursor = ReadCursor::start();
    loop {
        let page = store
            .read_from_cursor(&cursor, 1000, &Criteria::any())
            .unwrap();
        let Some(last) = page.last() else { break };
        cursor = cursor.advance(last.append_sequence(), None).unwrap();
        for record in &page {
            records += 1;
            *artifacts.entry(record.artifact_name().into()).or_default() += 1;
            *events
                .entry(record.event_name().unwrap().into())
                .or_default() += 1;
        }
    }
    expected.records = records;
    let check = |summary: Summary| {
        assert_eq!(summary.records, expected.records);
        assert_eq!(summary.artifacts, artifacts);
        assert_eq!(summary.events, events);
        let (first, last) = summary.captured_ms.unwrap();
        let last_ms = 1_700_000_000_000 + i64::try_from(batches * 1000).unwrap() - 1;
        assert_eq!((first, last), (1_700_000_000_000, last_ms));
        assert!(summary.bytes > 400 * records);
        summary.bytes
    };
    let bytes = check(store.summary().unwrap());
    assert_eq!(
        check(LogStore::open_read_only(&path).unwrap().summary().unwrap()),
        bytes
    );
    store.close().unwrap();
    for entry in std::fs::read_dir(path.join("ids")).unwrap() {
        esl_replay::storage::remove_durable(&entry.unwrap().path()).unwrap();
    }
    assert_eq!(
        check(LogStore::open_read_only(&path).unwrap().summary().unwrap()),
        bytes
    );
}
