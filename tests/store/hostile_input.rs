//! Absurd flags and hostile inputs get a clear error, never a panic or unbounded memory
//! (issue 16, items 3, 8 and 9): ages beyond the date range, import failures told apart
//! (bad line, oversize record, store failure), over-long NDJSON lines and endless inputs.

use std::path::{Path, PathBuf};

use esl_replay::record::{Criteria, ReadCursor, Record, RecordId};
use esl_replay::storage::error_chain;
use esl_replay::store::{
    ArtifactReader, ArtifactStore, BadLine, ImportError, ImportOptions, LogStore, SqliteStore,
    import,
};
use time::macros::datetime;

use crate::support::cli::{error_output, run, stderr};
use crate::support::process::open_store;
use crate::support::record::fixture_envelope;
use crate::support::refusing_store::RefusingStore;

/// Runs the binary expecting an error (exit 2, no panic); returns its stderr.
fn fails(args: &[&str]) -> String {
    error_output(&run(args))
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A reference NDJSON line with this sequence and a payload string of `payload_bytes`.
fn line(sequence: u64, payload_bytes: usize) -> String {
    let body = "x".repeat(payload_bytes);
    let checksum = esl_replay::record::checksum::compute(
        "api.dispatch",
        "1",
        &datetime!(2024-01-15 10:00:00 UTC),
        &crate::support::map(serde_json::json!({"body": body})),
    )
    .unwrap();
    format!(
        r#"{{"schema_version":1,"id":"id-{sequence}","artifact_version":"1","artifact_name":"api.dispatch","capture_timestamp":"2024-01-15T10:00:00.000+00:00","stored_at":"2024-01-15T10:00:01.250+00:00","append_sequence":{sequence},"connection_generation":null,"session_id":null,"job_uuid":null,"event_name":null,"capture_path":null,"correlation_ids":[],"runtime_flags":[],"payload":{{"body":"{body}"}},"checksum":"{checksum}","tags":[]}}"#
    )
}

/// Makes `path` a sparse file of `len` bytes (created if missing).
#[expect(
    clippy::disallowed_methods,
    reason = "a test file nobody maps, grown (not truncated) to an oversize length"
)]
fn grow_sparse(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Runs `import --skip-malformed` on input with bad lines: it imports the rest and exits 1
/// (problems found), saying so; its standard error.
fn import_skipping(store: &Path, input: &Path) -> String {
    let output = run(&[
        "import",
        "--store",
        path(store),
        "--skip-malformed",
        path(input),
    ]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("exit 1: lines were skipped, their records are not in the store"),
        "{text}"
    );
    text
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    file
}

fn sequences(store: &Path) -> Vec<u64> {
    LogStore::open_read_only(store)
        .unwrap()
        .read_from_cursor(&ReadCursor::start(), 100, &Criteria::any())
        .unwrap()
        .iter()
        .map(Record::append_sequence)
        .collect()
}

/// The sequences of the records with ids `id-<sequence>` for these sequences, looked up by
/// id (a skipped line leaves a sequence gap; reads across gaps are tested elsewhere).
fn stored_of(store: &Path, candidates: &[u64]) -> Vec<u64> {
    let store = LogStore::open_read_only(store).unwrap();
    candidates
        .iter()
        .filter_map(|s| {
            let id = esl_replay::record::RecordId::new(format!("id-{s}")).unwrap();
            store.read_by_id(&id).unwrap().map(|r| r.append_sequence())
        })
        .collect()
}

/// Item 3: `prune --max-age` values beyond the date range used to panic with "overflow
/// subtracting duration from date"; they are refused at parse time (exit 2).
#[test]
fn prune_refuses_ages_beyond_the_date_range_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let input = write_lines(dir.path(), "in.ndjson", &[line(1, 10)]);
    assert!(
        run(&["import", "--store", path(&store), path(&input)])
            .status
            .success()
    );
    for age in ["9999999999d", "106751991167300d", "18446744073709551615s"] {
        let text = fails(&["prune", "--store", path(&store), "--plan", "--max-age", age]);
        assert!(text.contains("--max-age"), "{text}");
        assert!(
            text.contains(&format!("{age} is beyond the representable date range")),
            "{text}"
        );
    }
    // The longest age that fits plans a prune of nothing.
    let output = run(&[
        "prune",
        "--store",
        path(&store),
        "--plan",
        "--max-age",
        "7300000d",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(sequences(&store), [1]);
}

/// `prune` of a SQLite store says that prune works on segment-log stores, for a plan and
/// an apply, instead of failing on the log directory it looked for; the rows stay.
#[test]
fn prune_of_a_sqlite_store_says_what_it_prunes() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.sqlite");
    let input = write_lines(dir.path(), "in.ndjson", &[line(1, 10)]);
    assert!(
        run(&["import", "--store", path(&store), path(&input)])
            .status
            .success()
    );
    for mode in ["--plan", "--apply"] {
        let text = fails(&["prune", "--store", path(&store), mode, "--max-bytes", "1"]);
        assert!(
            text.contains("prune works on segment-log stores only"),
            "{text}"
        );
    }
    let records = SqliteStore::open_read_only(&store)
        .unwrap()
        .read_from_cursor(&ReadCursor::start(), 10, &Criteria::any())
        .unwrap();
    assert_eq!(records.len(), 1);
}

/// `capture --retain-for` into a SQLite store is refused before anything starts: no store
/// is created and no node is connected to.
#[test]
fn capture_retention_into_a_sqlite_store_is_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("capture.sqlite");
    let text = fails(&[
        "capture",
        "--esl",
        "127.0.0.1:9",
        "--store",
        path(&store),
        "--retain-for",
        "1d",
    ]);
    assert!(
        text.contains("--retain-for needs a segment-log store"),
        "{text}"
    );
    assert!(!store.exists());
}

/// `prune --apply --checkpoint-dir` refuses what would protect nothing: a directory that
/// does not exist (opening it would have created it), one that holds no checkpoint, and a
/// checkpoint beyond the store's last sequence (from another store). Nothing is pruned, and
/// the explicit opt-ins prune.
#[test]
fn prune_refuses_checkpoint_directories_that_protect_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let lines: Vec<String> = (1..=5).map(|s| line(s, 10)).collect();
    let input = write_lines(dir.path(), "in.ndjson", &lines);
    assert!(
        run(&["import", "--store", path(&store), path(&input)])
            .status
            .success()
    );
    let prune = |checkpoints: &Path, extra: &[&str]| {
        let mut args = vec![
            "prune",
            "--store",
            path(&store),
            "--apply",
            "--max-age",
            "1d",
            "--checkpoint-dir",
            path(checkpoints),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };

    let mistyped = dir.path().join("checkpoints-typo");
    let text = error_output(&prune(&mistyped, &[]));
    assert!(text.contains("does not exist"), "{text}");
    assert!(!mistyped.exists(), "the directory was created");

    let empty = dir.path().join("checkpoints");
    std::fs::create_dir(&empty).unwrap();
    let text = error_output(&prune(&empty, &[]));
    assert!(text.contains("holds no checkpoint"), "{text}");

    let save = |sequence: &str| {
        let saved = run(&[
            "checkpoint",
            "save",
            "--checkpoint-dir",
            path(&empty),
            "--key",
            "elsewhere",
            "--sequence",
            sequence,
        ]);
        assert!(saved.status.success(), "{}", stderr(&saved));
    };
    save("999999");
    let text = error_output(&prune(&empty, &[]));
    assert!(
        text.contains(
            r#"checkpoint "elsewhere" names sequence 999999, beyond the store's last sequence 5"#
        ),
        "{text}"
    );
    assert_eq!(sequences(&store), [1, 2, 3, 4, 5], "nothing was pruned");

    let opted = prune(&empty, &["--allow-checkpoint-beyond-end"]);
    assert!(opted.status.success(), "{}", stderr(&opted));
    assert!(sequences(&store).is_empty());
}

/// `bench --dir` on a directory an earlier run left stores in is refused before anything is
/// written there: the figures would count the old records too.
#[test]
fn a_bench_refuses_a_directory_that_is_not_empty() {
    let dir = tempfile::tempdir().unwrap();
    let earlier = write_lines(dir.path(), "earlier.ndjson", &[line(1, 10)]);
    for bench in ["compare", "retention"] {
        let text = fails(&["bench", bench, "--records", "10", "--dir", path(dir.path())]);
        assert!(text.contains("is not empty"), "{text}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1);
    assert!(earlier.exists());
}

/// Item 8: a malformed line names its line and what was committed, and suggests the fix.
#[test]
fn a_malformed_line_names_its_line_and_what_was_imported_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let input = write_lines(
        dir.path(),
        "in.ndjson",
        &[line(1, 10), "{not json".into(), line(3, 10)],
    );
    let text = fails(&["import", "--store", path(&store), path(&input)]);
    assert!(text.contains("stopped at line 2: invalid json"), "{text}");
    assert!(
        text.contains("1 records were imported before it, sequences 1..=1"),
        "{text}"
    );
    assert!(
        text.contains("fix the line, or pass --skip-malformed"),
        "{text}"
    );
    assert_eq!(sequences(&store), [1]);
}

/// Item 8: an oversize record used to fail its whole batch with no line number, even with
/// `--skip-malformed`. It is a bad line: named, and skipped (and reported) on request.
#[test]
fn an_oversize_record_names_its_line_and_is_skipped_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [line(1, 10), line(2, 17 << 20), line(3, 10)];
    let input = write_lines(dir.path(), "in.ndjson", &lines);

    let store = dir.path().join("strict");
    let text = fails(&["import", "--store", path(&store), path(&input)]);
    assert!(text.contains("stopped at line 2"), "{text}");
    assert!(
        text.contains("more than the store's limit of 16777216 bytes"),
        "{text}"
    );
    assert!(text.contains("1 records were imported before it"), "{text}");
    assert_eq!(sequences(&store), [1]);

    let store = dir.path().join("skipping");
    let text = import_skipping(&store, &input);
    assert!(text.contains("skipped line 2: the record takes"), "{text}");
    assert!(
        text.contains("imported 2 records, sequences 1..=3; skipped 1 bad lines"),
        "{text}"
    );
    assert_eq!(stored_of(&store, &[1, 2, 3]), [1, 3]);
}

/// An imported record cannot shadow a stored one: a line whose id is already taken (here in
/// the same file, and in a second import) is a bad line, named and skippable, and the id
/// keeps finding the record that had it first.
#[test]
fn an_imported_record_with_a_taken_id_is_a_bad_line() {
    let dir = tempfile::tempdir().unwrap();
    let forged = line(3, 10).replace(r#""id":"id-3""#, r#""id":"id-1""#);
    let input = write_lines(
        dir.path(),
        "in.ndjson",
        &[line(1, 10), line(2, 10), forged, line(4, 10)],
    );

    let store = dir.path().join("strict");
    let text = fails(&["import", "--store", path(&store), path(&input)]);
    assert!(text.contains("stopped at line 3"), "{text}");
    assert!(
        text.contains("id id-1 is already taken by the record with append sequence 1"),
        "{text}"
    );
    assert_eq!(sequences(&store), [1, 2]);

    let store = dir.path().join("skipping");
    let text = import_skipping(&store, &input);
    assert!(
        text.contains("skipped line 3: id id-1 is already taken"),
        "{text}"
    );
    assert_eq!(sequences(&store), [1, 2, 4]);
    assert_eq!(stored_of(&store, &[1]), [1]);

    // A later import cannot take a stored id either.
    let later = line(5, 10).replace(r#""id":"id-5""#, r#""id":"id-2""#);
    let input = write_lines(dir.path(), "later.ndjson", &[later]);
    let text = fails(&["import", "--store", path(&store), path(&input)]);
    assert!(
        text.contains("taken by the record with append sequence 2"),
        "{text}"
    );
    assert_eq!(stored_of(&store, &[2]), [2]);

    // Many bad lines in one batch, between good ones: each good record is stored once, in
    // order, and each bad line reported.
    let lines: Vec<String> = (6..=40)
        .map(|n| {
            let good = line(n, 10);
            if n % 3 == 0 {
                good.replace(&format!(r#""id":"id-{n}""#), r#""id":"id-1""#)
            } else {
                good
            }
        })
        .collect();
    let input = write_lines(dir.path(), "mixed.ndjson", &lines);
    let text = import_skipping(&store, &input);
    assert_eq!(
        text.matches("taken by the record with append sequence 1\n")
            .count(),
        12,
        "{text}"
    );
    let kept: Vec<u64> = (6..=40).filter(|n| n % 3 != 0).collect();
    assert_eq!(stored_of(&store, &kept), kept);
}

/// Item 9: a line longer than the limit is refused with its line number and the limit,
/// and with `--skip-malformed` it is read past without being held in memory.
#[test]
fn an_over_long_line_is_refused_at_the_limit_or_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let endless_line = "y".repeat(3 << 20);
    let input = write_lines(
        dir.path(),
        "in.ndjson",
        &[line(1, 10), endless_line, line(3, 10)],
    );
    let store = dir.path().join("strict");
    let text = fails(&[
        "import",
        "--store",
        path(&store),
        "--max-line-bytes",
        "1048576",
        path(&input),
    ]);
    assert!(
        text.contains("stopped at line 2: the line is longer than 1048576 bytes"),
        "{text}"
    );
    assert!(text.contains("raise --max-line-bytes"), "{text}");

    let store = dir.path().join("skipping");
    let output = run(&[
        "import",
        "--store",
        path(&store),
        "--max-line-bytes",
        "1048576",
        "--skip-malformed",
        path(&input),
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(stderr(&output).contains("skipped line 2: the line is longer than"));
    assert_eq!(stored_of(&store, &[1, 2, 3]), [1, 3]);
}

/// Item 9: an endless input without a newline (`/dev/zero`) stops at the line limit.
#[cfg(unix)]
#[test]
fn an_endless_input_stops_at_the_line_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let text = fails(&[
        "import",
        "--store",
        path(&store),
        "--max-line-bytes",
        "65536",
        "/dev/zero",
    ]);
    assert!(
        text.contains("line 1: the line is longer than 65536 bytes"),
        "{text}"
    );
    // A limit that would let one line take the memory of the machine is refused.
    for absurd in ["18446744073709551615", "268435457", "0"] {
        let text = fails(&[
            "import",
            "--store",
            path(&store),
            "--max-line-bytes",
            absurd,
            "/dev/zero",
        ]);
        assert!(
            text.contains("is not a line length from 1 to 268435456 bytes"),
            "{text}"
        );
    }
}

/// Item 9: `evidence compare --bundle /dev/zero` used to read until memory ran out.
#[cfg(unix)]
#[test]
fn evidence_compare_reads_a_bundle_only_up_to_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let expect = dir.path().join("expect.json");
    std::fs::write(&expect, "{}").unwrap();
    let text = fails(&[
        "evidence",
        "compare",
        "--bundle",
        "/dev/zero",
        "--expect",
        path(&expect),
    ]);
    assert!(text.contains("cannot read the bundle /dev/zero"), "{text}");
    assert!(
        text.contains("larger than the limit of 268435456 bytes"),
        "{text}"
    );
    // A regular file above the limit is refused without reading it.
    let big = dir.path().join("big.json");
    grow_sparse(&big, 300 << 20);
    let text = fails(&[
        "evidence",
        "compare",
        "--bundle",
        path(&big),
        "--expect",
        path(&expect),
    ]);
    assert!(
        text.contains("larger than the limit of 268435456 bytes"),
        "{text}"
    );
}

/// Item 8: a store failure (here "no space left on device") is not a bad line: it is never
/// skipped, and it says how many records were committed and from which line to resume.
#[test]
fn a_store_failure_is_told_apart_from_a_bad_line_and_never_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let input: String = (1..=5).map(|s| line(s, 10) + "\n").collect();
    for skip_malformed in [false, true] {
        // Appends fail from the second call on.
        let mut calls = 0;
        let mut store = RefusingStore::new(
            open_store(dir.path().join(format!("store-{skip_malformed}"))).unwrap(),
            move || {
                calls += 1;
                calls >= 2
            },
        );
        let options = ImportOptions {
            skip_malformed,
            batch: 2,
            ..ImportOptions::default()
        };
        let error = import(&mut store, input.as_bytes(), options, &mut |_| {}).unwrap_err();
        let ImportError::Store {
            line,
            source,
            report,
        } = &error
        else {
            panic!("not a store failure: {error:?}");
        };
        assert_eq!(*line, 3, "lines 1 and 2 were committed");
        assert_eq!(report.imported, 2);
        assert_eq!(report.sequences, Some((1, 2)));
        assert!(report.skipped.is_empty());
        assert!(
            error_chain(source).contains("No space left on device"),
            "{source:?}"
        );
        assert_eq!(store.stats().unwrap().last_sequence, 2);
    }
}

/// A store failure after another writer's records went past the batch (a second SQLite
/// writer) counts as committed only the records the store holds, found by id: the report
/// and the line to resume from are true.
#[test]
fn a_store_failure_counts_only_the_records_the_store_holds() {
    /// Appends a record far ahead through another handle when first read.
    use std::io::Read as _;

    struct WriteAhead(Option<PathBuf>);
    impl std::io::Read for WriteAhead {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            if let Some(path) = self.0.take() {
                let far = Record::from_envelope(
                    fixture_envelope(),
                    RecordId::generate(),
                    datetime!(2024-01-15 10:00:01 UTC),
                    1_000_000,
                )
                .unwrap();
                let mut other = SqliteStore::open(&path).unwrap();
                other.append_records(&[far]).unwrap();
            }
            Ok(0)
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    let mut store = SqliteStore::open(&path).unwrap();
    // Lines 1 and 2 are one batch; the other writer appends before lines 3 and 4 are read.
    let lines = |range: std::ops::RangeInclusive<u64>| -> String {
        range.map(|s| line(s, 10) + "\n").collect()
    };
    let (first, rest) = (lines(1..=2).into_bytes(), lines(3..=4).into_bytes());
    let input = first
        .as_slice()
        .chain(WriteAhead(Some(path)))
        .chain(rest.as_slice());
    let options = ImportOptions {
        batch: 2,
        ..ImportOptions::default()
    };
    let error = import(
        &mut store,
        std::io::BufReader::new(input),
        options,
        &mut |_| {},
    )
    .unwrap_err();
    let ImportError::Store { line, report, .. } = &error else {
        panic!("not a store failure: {error:?}");
    };
    assert_eq!(*line, 3, "{error:?}");
    assert_eq!((report.imported, report.sequences), (2, Some((1, 2))));
}

/// Item 8: each kind of bad line is reported as such, with its line.
#[test]
fn bad_lines_are_classified() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path().join("store")).unwrap();
    let input = [line(5, 10), line(4, 10), "[]".into(), line(6, 10)].join("\n");
    let options = ImportOptions {
        skip_malformed: true,
        ..ImportOptions::default()
    };
    let report = import(&mut store, input.as_bytes(), options, &mut |_| {}).unwrap();
    assert_eq!(report.imported, 2);
    assert_eq!(report.skipped.len(), 2);
    assert_eq!(report.skipped[0].0, 2);
    assert!(
        report.skipped[0]
            .1
            .contains("append sequence 4 does not follow 5")
    );
    assert_eq!(report.skipped[1].0, 3);
    let error = import(
        &mut store,
        line(6, 10).as_bytes(),
        ImportOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            ImportError::BadLine {
                line: 1,
                reason: BadLine::OutOfOrder { last: 6, found: 6 },
                ..
            }
        ),
        "{error:?}"
    );
}

/// Item 9: a checkpoint file is read only up to its limit (a runaway file is reported as
/// unreadable, naming it, instead of being read into memory).
#[test]
fn an_oversize_checkpoint_file_is_refused_without_reading_it() {
    use esl_replay::checkpoint::{Checkpoint, CheckpointStore, Error as CheckpointError};
    let dir = tempfile::tempdir().unwrap();
    let store = CheckpointStore::open(dir.path().join("checkpoints")).unwrap();
    let checkpoint = Checkpoint::new(
        "serve",
        ReadCursor::new(7, None),
        time::OffsetDateTime::now_utc(),
        esl_replay::record::JsonMap::new(),
    )
    .unwrap();
    store.save(&checkpoint).unwrap();
    assert!(store.load("serve").unwrap().is_some());
    let file = store.path_for("serve");
    grow_sparse(&file, esl_replay::checkpoint::MAX_CHECKPOINT_FILE_BYTES + 1);
    let error = store.load("serve").unwrap_err();
    let CheckpointError::Read { path, source } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(path, &file);
    assert_eq!(source.kind(), std::io::ErrorKind::FileTooLarge);
}

/// Id index files ([STORE-07]) lengthened to 64 GiB (sparse) are taken for damaged and
/// rebuilt by scanning: statistics, and lookups from a read-only and a writer handle, still
/// answer. (That such a file is not read at all is `store::ids`'s unit test.)
#[test]
fn oversize_id_files_are_rebuilt() {
    use esl_replay::record::RecordId;
    use esl_replay::store::{ArtifactStore as _, dataset};

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let options = esl_replay::storage::LogOptions {
        segment_bytes: 4 << 20,
        max_payload_bytes: 1 << 20,
        ..esl_replay::storage::LogOptions::default()
    };
    let mut ids = Vec::new();
    {
        let mut store = crate::support::process::open_store_with(&root, options.clone()).unwrap();
        for chunk in (0..16_000u64).collect::<Vec<_>>().chunks(1000) {
            let envelopes = chunk.iter().map(|n| dataset::envelope(*n)).collect();
            ids.extend(store.write_batch(envelopes).unwrap());
        }
    }
    let files: Vec<PathBuf> = std::fs::read_dir(root.join("ids"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect();
    let named = |ending: &str| files.iter().any(|p| p.to_string_lossy().ends_with(ending));
    assert!(named(".ids") && named(".part"), "{files:?}");
    for file in &files {
        grow_sparse(file, 64 << 30);
    }
    assert_eq!(
        LogStore::open_read_only(&root)
            .unwrap()
            .stats()
            .unwrap()
            .records,
        16_000
    );
    let check = |store: &dyn ArtifactReader| {
        for (i, id) in ids
            .iter()
            .enumerate()
            .step_by(599)
            .chain([(15_999, &ids[15_999])])
        {
            let found = store.read_by_id(id).unwrap().map(|r| r.append_sequence());
            assert_eq!(found, Some(i as u64 + 1));
        }
        assert!(store.read_by_id(&RecordId::generate()).unwrap().is_none());
    };
    check(&LogStore::open_read_only(&root).unwrap());
    check(&crate::support::process::open_store_with(&root, options).unwrap());
}

/// A line whose record does not match its own checksum is imported as it is (an export of
/// a store holding such a record must import to the same store, decision K3) and reported
/// with its line, sequence and id; the import exits 1, as `verify` does for the store.
#[test]
fn a_record_that_does_not_match_its_checksum_is_imported_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let altered = line(2, 10).replace(r#""body":"xxxxxxxxxx""#, r#""body":"xxxxxxxxxy""#);
    assert_ne!(altered, line(2, 10));
    let input = write_lines(
        dir.path(),
        "in.ndjson",
        &[line(1, 10), altered, line(3, 10)],
    );
    let store = dir.path().join("store");
    let output = run(&["import", "--store", path(&store), path(&input)]);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("line 2: record id-2 at append sequence 2 does not match its checksum"),
        "{text}"
    );
    assert!(
        text.contains("imported 3 records, sequences 1..=3; skipped 0 bad lines; 1 records imported do not match their checksum"),
        "{text}"
    );
    assert_eq!(stored_of(&store, &[1, 2, 3]), [1, 2, 3]);
    let exported = crate::support::cli::stdout(&run(&["export", "--store", path(&store)]));
    assert_eq!(exported, std::fs::read_to_string(&input).unwrap());

    // Lines that all match import with exit 0.
    let clean = write_lines(dir.path(), "clean.ndjson", &[line(1, 10), line(2, 10)]);
    let output = run(&[
        "import",
        "--store",
        path(&dir.path().join("clean")),
        path(&clean),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// A store of three records imported by the binary; its path.
fn three_record_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    let input = write_lines(
        dir,
        "three.ndjson",
        &[line(1, 10), line(2, 10), line(3, 10)],
    );
    let output = run(&["import", "--store", path(&store), path(&input)]);
    assert!(output.status.success(), "{}", stderr(&output));
    store
}

/// Runs the binary with `args` on a thread, failing the test if it has not exited within a
/// minute (it would be blocked opening a FIFO); its output.
fn run_unblocked(args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    crate::support::within_a_minute(move || {
        run(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
}

/// [DIR-05] A FIFO named like a segment file, after the log's last segment or in the place
/// of its only one, is refused by every reader and by the writer, naming the file ("not a
/// regular file"), instead of opening it and waiting forever for a writer to the FIFO.
#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "surgery on a test store: files are swapped for FIFOs; removals need not be durable"
)]
fn a_fifo_named_like_a_segment_file_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_record_store(dir.path());
    let log = store.join("log");
    let beyond = log.join("00000000000000000519.seg");
    crate::support::mkfifo(&beyond);
    let log_dir = path(&log).to_owned();
    let store_dir = path(&store).to_owned();
    let more = write_lines(dir.path(), "more.ndjson", &[line(4, 10)]);
    for args in [
        vec!["stats", "--store", &store_dir],
        vec!["verify", "--store", &store_dir],
        vec!["read", "--store", &store_dir],
        vec!["log", "inspect", &log_dir],
        vec!["log", "verify", &log_dir],
        vec!["import", "--store", &store_dir, path(&more)],
    ] {
        let output = run_unblocked(&args);
        let text = error_output(&output);
        assert!(
            text.contains("00000000000000000519.seg") && text.contains("not a regular file"),
            "{args:?}: {text}"
        );
    }
    // In the place of the log's only segment.
    std::fs::remove_file(&beyond).unwrap();
    let first = log.join("00000000000000000001.seg");
    std::fs::remove_file(&first).unwrap();
    crate::support::mkfifo(&first);
    for args in [
        vec!["stats", "--store", &store_dir],
        vec!["read", "--store", &store_dir],
        vec!["log", "verify", &log_dir],
    ] {
        let text = error_output(&run_unblocked(&args));
        assert!(
            text.contains("00000000000000000001.seg") && text.contains("not a regular file"),
            "{args:?}: {text}"
        );
    }
}

/// [DIR-05] A FIFO in the place of a segment's index file is not read: readers find the
/// segment's records by scanning it, as when the index is missing. A symbolic link to a
/// regular segment file is followed, as before.
#[test]
#[expect(
    clippy::disallowed_methods,
    reason = "surgery on a test store: files are swapped for FIFOs; removals need not be durable"
)]
fn a_fifo_named_like_an_index_file_is_passed_over_and_a_symlink_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = three_record_store(dir.path());
    let log = store.join("log");
    let index = log.join("00000000000000000001.idx");
    if index.exists() {
        std::fs::remove_file(&index).unwrap();
    }
    crate::support::mkfifo(&index);
    let store_dir = path(&store).to_owned();
    let log_dir = path(&log).to_owned();
    for args in [
        vec!["stats", "--store", &store_dir],
        vec!["verify", "--store", &store_dir],
        vec!["read", "--store", &store_dir],
        vec!["log", "inspect", &log_dir],
        vec!["log", "verify", &log_dir],
    ] {
        let output = run_unblocked(&args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
    }
    assert_eq!(sequences(&store), [1, 2, 3]);
    // A symbolic link to the segment file, moved elsewhere, reads as the file.
    std::fs::remove_file(&index).unwrap();
    let segment = log.join("00000000000000000001.seg");
    let moved = dir.path().join("moved.seg");
    std::fs::copy(&segment, &moved).unwrap();
    std::fs::remove_file(&segment).unwrap();
    std::os::unix::fs::symlink(&moved, &segment).unwrap();
    assert_eq!(sequences(&store), [1, 2, 3]);
}

/// `bench compare` counts beyond what a machine can hold are refused by the flag parser
/// (they panicked with "capacity overflow" or aborted allocating), and so are counts of 0
/// (the paged read failed, the ratios were NaN).
#[test]
fn bench_counts_are_bounded_and_at_least_one() {
    for (flag, value) in [
        ("--lookups", "18446744073709551615"),
        ("--lookups", "1000000000000"),
        ("--lookups", "0"),
        ("--records", "0"),
        ("--records", "100000000"),
        ("--durable-records", "0"),
        ("--durable-records", "1000000000"),
    ] {
        let text = fails(&["bench", "compare", flag, value]);
        assert!(
            text.contains(flag) && text.contains("not in 1.."),
            "{flag} {value}: {text}"
        );
    }
    for value in ["0", "100000000"] {
        let text = fails(&["bench", "retention", "--records", value]);
        assert!(text.contains("not in 1.."), "{value}: {text}");
    }
}

/// A tiny `bench compare` runs: one record, one durable append, one lookup.
#[test]
fn a_bench_of_one_record_and_one_lookup_runs() {
    let dir = tempfile::tempdir().unwrap();
    let bench = dir.path().join("bench");
    let output = run(&[
        "bench",
        "compare",
        "--records",
        "1",
        "--durable-records",
        "1",
        "--lookups",
        "1",
        "--dir",
        path(&bench),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stdout_text(&output).contains("NaN"));
}

fn stdout_text(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// SIGTERM, like SIGINT, ends a bench with its temporary directory removed (SIGTERM left
/// `esl-replay-bench-PID` behind); the exit code is the signal's (128 + its number).
#[test]
fn a_bench_ended_by_a_signal_removes_its_temporary_directory() {
    use crate::support::process::SpawnSafely as _;
    for (name, code) in [("TERM", 143), ("INT", 130)] {
        let temp = tempfile::tempdir().unwrap();
        let mut child = crate::support::cli::command()
            .args(["bench", "compare", "--records", "10000000"])
            .env("TMPDIR", temp.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn_safely()
            .unwrap();
        let bench = temp.path().join(format!("esl-replay-bench-{}", child.id()));
        // Its stores are being written.
        crate::support::wait_until("the bench's stores", || {
            std::fs::read_dir(&bench).is_ok_and(|mut entries| entries.next().is_some())
        });
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.id().to_string())
            .status_safely()
            .unwrap();
        assert!(status.success());
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{name}: {status:?}");
        assert!(!bench.exists(), "{name}: {} left behind", bench.display());
    }
}

/// `--max-bytes` beyond what 64 bits hold is said to be too large, with the limit; it was
/// "not a byte size" when the digits alone overflowed.
#[test]
fn prune_says_a_byte_size_is_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for size in ["20000000000000000000", "20000000000000000TB"] {
        let text = fails(&["prune", "--store", path(&store), "--max-bytes", size]);
        assert!(
            text.contains("is too large (at most 18446744073709551615 bytes"),
            "{size}: {text}"
        );
    }
    let text = fails(&["prune", "--store", path(&store), "--max-bytes", "ten"]);
    assert!(text.contains("is not a byte size"), "{text}");
}
