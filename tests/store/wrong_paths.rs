//! Paths that name the wrong thing: an output file that is the store being read, a demo or
//! repair pointed at a real store or at no log at all, a store directory inside a raw log,
//! another program's SQLite database. Each is refused with an error that names it, and the
//! store is left as it was.

use std::path::{Path, PathBuf};

use esl_replay::store::{ArtifactStore as _, SqliteStore};

use crate::support::cli::{error_output, run, run_ok};
use crate::support::process::open_store;
use crate::support::record::fixture_envelope;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A segment-log store and a SQLite store of 5 records each, in `dir`.
fn stores(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("store");
    let mut store = open_store(&log).unwrap();
    store
        .write_batch((0..5).map(|_| fixture_envelope()).collect())
        .unwrap();
    store.close().unwrap();
    let sqlite = dir.join("store.sqlite");
    let mut store = SqliteStore::open(&sqlite).unwrap();
    store
        .write_batch((0..5).map(|_| fixture_envelope()).collect())
        .unwrap();
    drop(store);
    (log, sqlite)
}

fn exported(store: &Path) -> String {
    run_ok(&["export", "-s", path(store)])
}

#[test]
fn an_output_file_that_is_the_store_or_inside_it_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (log, sqlite) = stores(dir.path());
    let segment = std::fs::read_dir(log.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "seg"))
        .unwrap();
    let linked = dir.path().join("linked.seg");
    std::fs::hard_link(&segment, &linked).unwrap();
    let (log_before, sqlite_before) = (exported(&log), exported(&sqlite));
    let wal = dir.path().join("store.sqlite-wal");
    let inside = log.join("log").join("new.ndjson");
    let through_dots = log.join("log").join("..").join("export.ndjson");
    let cases: [(&Path, &Path); 6] = [
        (&sqlite, &sqlite),
        (&sqlite, &wal),
        (&log, &segment),
        (&log, &linked),
        (&log, &inside),
        (&log, &through_dots),
    ];
    for (store, output) in cases {
        for command in [
            vec!["export", "-s", path(store), "-o", path(output)],
            vec![
                "evidence",
                "reconstruct",
                "-s",
                path(store),
                "-o",
                path(output),
            ],
        ] {
            let error = error_output(&run(&command));
            assert!(error.contains("is the store"), "{command:?}: {error}");
        }
    }
    assert!(!inside.exists() && !through_dots.exists());
    assert_eq!(exported(&log), log_before);
    assert_eq!(exported(&sqlite), sqlite_before);
    run_ok(&["verify", "-s", path(&log)]);
    // Beside the store is fine.
    let beside = dir.path().join("export.ndjson");
    run_ok(&["export", "-s", path(&log), "-o", path(&beside)]);
    assert_eq!(std::fs::read_to_string(&beside).unwrap(), log_before);
}

#[test]
fn a_demo_refuses_a_directory_that_holds_anything() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = stores(dir.path());
    let before = exported(&log);
    let log_dir = log.join("log");
    for command in [
        vec!["demo", "--dir", path(dir.path()), "--seconds", "1"],
        vec![
            "demo",
            "storage",
            "--dir",
            path(&log_dir),
            "--records",
            "10",
        ],
    ] {
        let error = error_output(&run(&command));
        assert!(error.contains("is not empty"), "{command:?}: {error}");
    }
    assert_eq!(exported(&log), before);
    run_ok(&["verify", "-s", path(&log)]);
    let error = error_output(&run(&["demo", "storage", "--records", "0"]));
    assert!(error.contains("--records"), "{error}");
}

#[test]
fn repair_and_pack_refuse_a_directory_without_a_log_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = stores(dir.path());
    let missing = dir.path().join("missing");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let listing = |dir: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        names
    };
    let store_files = listing(&log);
    for action in ["repair", "pack"] {
        let error = error_output(&run(&["log", action, path(&log)]));
        assert!(
            error.contains("give its log subdirectory"),
            "{action}: {error}"
        );
        let error = error_output(&run(&["log", action, path(&empty)]));
        assert!(error.contains("holds no segment log"), "{action}: {error}");
        error_output(&run(&["log", action, path(&missing)]));
    }
    assert_eq!(listing(&log), store_files);
    assert!(listing(&empty).is_empty());
    assert!(!missing.exists());
    run_ok(&["log", "repair", path(&log.join("log"))]);
}

#[test]
fn a_store_is_not_opened_inside_its_own_log() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = stores(dir.path());
    let ndjson = dir.path().join("records.ndjson");
    std::fs::write(&ndjson, exported(&log)).unwrap();
    let log_dir = log.join("log");
    let error = error_output(&run(&["import", "-s", path(&log_dir), path(&ndjson)]));
    assert!(error.contains("is not a store"), "{error}");
    assert!(!log_dir.join("log").exists());
}

#[test]
fn an_import_whose_input_cannot_be_opened_creates_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("new-store");
    let missing = dir.path().join("missing.ndjson");
    let error = error_output(&run(&["import", "-s", path(&store), path(&missing)]));
    assert!(error.contains("cannot open"), "{error}");
    assert!(!store.exists());
}

/// `prune --apply` truncates through a read-only handle and never opens the store's writer,
/// so a capture that starts meanwhile is never refused for the lock. Shown with a lock file
/// no writer can open (a directory in its place), on which a writer's open fails.
#[test]
fn prune_never_opens_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = stores(dir.path());
    let lock = log.join("log").join("writer.lock");
    esl_replay::storage::remove_durable(&lock).unwrap();
    std::fs::create_dir(&lock).unwrap();
    let refused = run(&["import", "-s", path(&log), "/dev/null"]);
    assert!(
        !refused.status.success(),
        "a writer opened beside the lock directory"
    );
    let output = run(&["prune", "-s", path(&log), "--apply", "--max-bytes", "0"]);
    assert!(
        output.status.success(),
        "{}",
        crate::support::cli::stderr(&output)
    );
    assert_eq!(exported(&log), "");
}
