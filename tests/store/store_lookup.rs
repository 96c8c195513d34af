//! Lookups by id on both backends after batched writes of the benchmark dataset.

use esl_replay::store::{ArtifactReader, ArtifactStore, LogStore, dataset};

use crate::support::process::{open_store, open_store_with};

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
    check(&mut open_store(dir.path().join("store")).unwrap());
}

#[test]
#[cfg(feature = "sqlite")]
fn lookups_find_every_record_in_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check(&mut esl_replay::store::SqliteStore::open(&dir.path().join("store.sqlite")).unwrap());
}

/// A handle's first lookups read the id files in place, unverified, and only the verified
/// indexes may answer "absent": whatever state the id files are in, a fresh handle finds
/// every record and no absent one.
#[test]
fn fresh_handles_find_every_record_whatever_the_id_files_hold() {
    use esl_replay::record::RecordId;
    use esl_replay::storage::LogOptions;

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let options = LogOptions {
        segment_bytes: 4 << 20,
        max_payload_bytes: 1 << 20,
        ..LogOptions::default()
    };
    let mut ids = Vec::new();
    {
        let mut store = open_store_with(&root, options.clone()).unwrap();
        for chunk in (0..24_000u64).collect::<Vec<_>>().chunks(1000) {
            ids.extend(
                store
                    .write_batch(chunk.iter().map(|n| dataset::envelope(*n)).collect())
                    .unwrap(),
            );
        }
    }
    let files: Vec<_> = std::fs::read_dir(root.join("ids"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    let names = |ending: &str| {
        files
            .iter()
            .filter(|p| p.to_string_lossy().ends_with(ending))
            .count()
    };
    assert!(names(".ids") >= 2, "sealed segments' id files: {files:?}");
    assert!(
        names(".part") >= 1,
        "the active segment's chunk files: {files:?}"
    );
    let check = |state: &str| {
        for (i, id) in ids
            .iter()
            .enumerate()
            .step_by(997)
            .chain([(23_999, &ids[23_999])])
        {
            let store = LogStore::open_read_only(&root).unwrap();
            let found = store.read_by_id(id).unwrap().map(|r| r.append_sequence());
            assert_eq!(found, Some(i as u64 + 1), "{state}: record {}", i + 1);
        }
        let store = LogStore::open_read_only(&root).unwrap();
        assert!(
            store.read_by_id(&RecordId::generate()).unwrap().is_none(),
            "{state}"
        );
    };
    check("intact");
    // Every pair of every id file replaced by garbage that still looks sorted, headers kept.
    for path in &files {
        let mut bytes = std::fs::read(path).unwrap();
        for (i, byte) in bytes.iter_mut().enumerate().skip(56) {
            *byte = (i / 16) as u8;
        }
        std::fs::write(path, bytes).unwrap();
    }
    check("garbage pairs");
    // Each id file swapped for another's.
    let contents: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for (path, bytes) in files.iter().zip(contents.iter().cycle().skip(1)) {
        std::fs::write(path, bytes).unwrap();
    }
    check("swapped");
}

/// One writer handle looks every id up while its segments roll and while retention deletes
/// the oldest: the sealed segments are searched through their filters side by side, built
/// again after each change, and never miss a stored record or find a deleted one.
#[test]
fn one_handle_finds_every_record_as_segments_roll_and_go() {
    use esl_replay::record::RecordId;
    use esl_replay::retention::{self, PrunePolicy};
    use esl_replay::storage::LogOptions;

    let dir = tempfile::tempdir().unwrap();
    let options = LogOptions {
        segment_bytes: 256 << 10,
        max_payload_bytes: 64 << 10,
        ..LogOptions::default()
    };
    let mut store = open_store_with(dir.path().join("store"), options).unwrap();
    let mut ids = Vec::new();
    let mut write = |store: &mut LogStore, from: u64, to: u64| {
        for chunk in (from..to).collect::<Vec<_>>().chunks(500) {
            ids.extend(
                store
                    .write_batch(chunk.iter().map(|n| dataset::envelope(*n)).collect())
                    .unwrap(),
            );
        }
        ids.clone()
    };
    let check = |store: &LogStore, ids: &[RecordId], first_kept: usize, state: &str| {
        for (i, id) in ids.iter().enumerate() {
            let found = store.read_by_id(id).unwrap().map(|r| r.append_sequence());
            let expected = (i >= first_kept).then_some(i as u64 + 1);
            assert_eq!(found, expected, "{state}: record {}", i + 1);
        }
        assert!(store.read_by_id(&RecordId::generate()).unwrap().is_none());
    };

    let written = write(&mut store, 0, 6_000);
    let segments = store.log_reader().segments().len();
    assert!(segments >= 8, "{segments} segments");
    check(&store, &written, 0, "written");
    let written = write(&mut store, 6_000, 9_000);
    assert!(store.log_reader().segments().len() > segments, "no roll");
    check(&store, &written, 0, "after more rolls");

    let policy = PrunePolicy {
        max_stream_bytes: Some(0),
        protected_record_count: 2_000,
        ..PrunePolicy::default()
    };
    let pruned = retention::prune(&store, &[], &policy, time::OffsetDateTime::now_utc()).unwrap();
    assert!(pruned.segments_removed > 0);
    let first_kept = usize::try_from(store.log_reader().first_seq().0 - 1).unwrap();
    assert!(first_kept > 0);
    check(&store, &written, first_kept, "after pruning");
}

/// [STORE-06] step 2: a sealed segment's `.ids` file is advisory and written off the append
/// path. When it cannot be written, every append still succeeds, the writer finds every
/// record from the index it keeps, and a later handle rebuilds the index from the log.
#[test]
fn appends_go_on_when_an_id_file_cannot_be_written() {
    use std::sync::Arc;

    use esl_replay::storage::{LogOptions, StdIo};

    use crate::support::storage::{FaultyIo, OpKind, Plan};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let io = FaultyIo::new(Arc::new(StdIo));
    io.set_plan(Plan {
        fail_write: Some(1),
        target: Some(".ids".into()),
        sticky: true,
        ..Plan::default()
    });
    let options = LogOptions {
        segment_bytes: 1 << 20,
        max_payload_bytes: 64 << 10,
        io: io.clone(),
        ..LogOptions::default()
    };
    let mut ids = Vec::new();
    let mut store = open_store_with(&root, options).unwrap();
    for batch in 0..8u64 {
        let envelopes = (0..1000)
            .map(|n| dataset::envelope(batch * 1000 + n))
            .collect();
        ids.extend(store.write_batch(envelopes).unwrap());
    }
    let sealed = store.log_reader().segments().len() - 1;
    assert!(sealed >= 3, "{sealed} sealed segments");
    let found = |store: &dyn ArtifactReader, state: &str| {
        for (i, id) in ids.iter().enumerate().step_by(331) {
            let record = store.read_by_id(id).unwrap();
            assert_eq!(
                record.map(|r| r.append_sequence()),
                Some(i as u64 + 1),
                "{state}"
            );
        }
    };
    found(&store, "the writer");
    store.close().unwrap();
    let failed = io.injected();
    assert!(
        failed.iter().any(|f| f.kind == OpKind::Write),
        "no id file write failed: {failed:?}"
    );
    let files: Vec<_> = std::fs::read_dir(root.join("ids"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".ids"))
        .collect();
    assert_eq!(files, Vec::<String>::new());
    found(&LogStore::open_read_only(&root).unwrap(), "a new handle");
}
