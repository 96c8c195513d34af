//! Nothing lost, nothing hidden in a log store (format/store.md):
//!
//! - imports whose append sequences leave gaps: every stored record stays visible to every
//!   reader command (`export`, `read`, `tail`, `replay plan`, `verify`, `stats`, `get`),
//!   whether the gap comes from two imports, from one file, or from an import that continues
//!   past a torn tail cut on open;
//! - `store.meta` is checksummed and validated: a damaged, edited or inconsistent file is a
//!   clear error naming the file, `verify` reports it, and old unchecksummed files still open;
//! - a new store directory is synced into its parent, and `store.meta` is written through
//!   the atomic replacement, both through the log's `Io` seam.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use esl_replay::record::{
    Envelope, ReadCursor, Record, RecordId, append_ndjson_line, from_ndjson_line,
};
use esl_replay::storage::{Io, StdIo};
use esl_replay::store::meta::{self, Run, SequenceMap};
use esl_replay::store::{ArtifactReader, ArtifactStore, Error, LogStore};
use serde_json::{Value, json};
use time::macros::datetime;

use crate::support;
use crate::support::cli::{run, run_ok as ok};
use crate::support::map;
use crate::support::process::{open_store, open_store_with};

/// One record of the NDJSON files: sequence `sequence`, id `gen-<sequence>`, a valid checksum.
fn record(sequence: u64) -> Record {
    let envelope = Envelope::new("1", "event.raw", datetime!(2024-01-15 10:00:00 UTC))
        .with_event_name("HEARTBEAT")
        .with_payload(map(json!({"n": sequence})));
    let id = RecordId::new(format!("gen-{sequence}")).unwrap();
    Record::from_envelope(envelope, id, datetime!(2024-01-15 10:00:01 UTC), sequence).unwrap()
}

/// Writes an NDJSON file of the records with these sequences (`gen N START` of the issue).
fn ndjson_file(dir: &Path, name: &str, sequences: impl IntoIterator<Item = u64>) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::new();
    for sequence in sequences {
        append_ndjson_line(&record(sequence), &mut text);
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn import(store: &Path, file: &Path) {
    ok(&["import", "-s", path(store), path(file)]);
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The sequences of NDJSON lines.
fn ndjson_sequences(text: &str) -> Vec<u64> {
    text.lines()
        .map(|line| from_ndjson_line(line).unwrap().append_sequence())
        .collect()
}

/// Every reader command sees exactly `expected`, in order.
fn assert_all_visible(dir: &Path, store: &Path, expected: &[u64]) {
    let s = path(store);
    let exported = dir.join("export.ndjson");
    ok(&["export", "-s", s, "-o", path(&exported)]);
    let text = std::fs::read_to_string(&exported).unwrap();
    assert_eq!(ndjson_sequences(&text), expected, "export");

    let read = ok(&["read", "-s", s, "--limit", "100000"]);
    assert_eq!(ndjson_sequences(&read), expected, "read");

    let tail = ok(&["tail", "-s", s, "--after", "0"]);
    assert_eq!(ndjson_sequences(&tail), expected, "tail");

    let plan = ok(&[
        "replay", "plan", "-s", s, "--batch", "100000", "--format", "ndjson",
    ]);
    let plan: Value = serde_json::from_str(plan.trim()).unwrap();
    let planned: Vec<u64> = plan["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["append_sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(planned, expected, "replay plan");

    let verify = ok(&["verify", "-s", s]);
    assert!(
        verify.contains(&format!("checked {} records: 0 problems", expected.len())),
        "verify: {verify}"
    );

    let stats = ok(&["stats", "-s", s]);
    for line in [
        format!("records     {}\n", expected.len()),
        format!("  {:>10}  event.raw\n", expected.len()),
    ] {
        assert!(stats.contains(&line), "stats: {stats}");
    }

    for sequence in [expected[0], expected[expected.len() - 1]] {
        let got = ok(&["get", "-s", s, &format!("gen-{sequence}")]);
        assert_eq!(ndjson_sequences(&got), [sequence], "get gen-{sequence}");
    }
}

/// `import` of 1..=100 and then of 200..=299: all 200 records are visible, not just the
/// last 100.
#[test]
fn import_then_import_past_a_gap_keeps_every_record_visible() {
    let dir = support::storage::temp_dir();
    let store = dir.path().join("store");
    import(&store, &ndjson_file(dir.path(), "a.ndjson", 1..=100));
    import(&store, &ndjson_file(dir.path(), "b.ndjson", 200..=299));
    let expected: Vec<u64> = (1..=100).chain(200..=299).collect();
    assert_all_visible(dir.path(), &store, &expected);
}

/// One file holding both 1..=100 and 200..=299.
#[test]
fn one_import_with_a_gap_keeps_every_record_visible() {
    let dir = support::storage::temp_dir();
    let store = dir.path().join("store");
    import(
        &store,
        &ndjson_file(dir.path(), "ab.ndjson", (1..=100).chain(200..=299)),
    );
    let expected: Vec<u64> = (1..=100).chain(200..=299).collect();
    assert_all_visible(dir.path(), &store, &expected);
}

/// Zeroes every frame of the store's single segment from log sequence `from` on, as a
/// power loss before those frames were synced would leave it, and removes the files that
/// would let open skip the scan (the clean-shutdown file and the index) or name the frames
/// durable (the watermark file).
fn tear_log_from(store: &Path, from: u64) {
    let log = store.join("log");
    let segment = support::storage::segment_file(&log, 1);
    let (_, frames) = support::storage::frames_of(&segment);
    let first = frames.iter().find(|f| f.seq == from).unwrap();
    let end = frames.last().unwrap().end();
    support::storage::zero_range(&segment, first.offset, end);
    for name in ["clean.meta", "durable.meta", "00000000000000000001.idx"] {
        esl_replay::storage::remove_durable(&log.join(name)).unwrap();
    }
}

/// A torn tail cut inside the imported run 200..=299 (log sequences 101..=200), then an
/// import that continues past the gap: the 120 surviving records and the 50 new ones are
/// all visible.
#[test]
fn import_past_a_gap_after_a_torn_tail_cut_keeps_every_record_visible() {
    let dir = support::storage::temp_dir();
    let store = dir.path().join("store");
    import(&store, &ndjson_file(dir.path(), "a.ndjson", 1..=100));
    import(&store, &ndjson_file(dir.path(), "b.ndjson", 200..=299));
    tear_log_from(&store, 121);
    import(&store, &ndjson_file(dir.path(), "c.ndjson", 400..=449));
    let expected: Vec<u64> = (1..=100).chain(200..=219).chain(400..=449).collect();
    assert_all_visible(dir.path(), &store, &expected);
}

/// A torn tail that removes every record of a run the metadata already holds (the run of
/// 200..=299 starts at log sequence 101, and the log is cut back to 90): the next import
/// continues after the surviving 89 records and nothing is hidden or mis-numbered.
#[test]
fn import_after_a_torn_tail_removed_a_whole_run_keeps_every_record_visible() {
    let dir = support::storage::temp_dir();
    let store = dir.path().join("store");
    import(&store, &ndjson_file(dir.path(), "a.ndjson", 1..=100));
    import(&store, &ndjson_file(dir.path(), "b.ndjson", 200..=299));
    tear_log_from(&store, 90);
    // The cut left the store's last sequence at 89, so 95 follows it.
    import(&store, &ndjson_file(dir.path(), "c.ndjson", 95..=144));
    let expected: Vec<u64> = (1..=89).chain(95..=144).collect();
    assert_all_visible(dir.path(), &store, &expected);
}

/// [REC-03] Frames zeroed below what the watermark file names durable (the clean-shutdown
/// file and the index gone, as files damaged from outside leave them) are not the end of
/// the store: reads fail at the damage, `stats` lists it (exit 1), `verify` reports it, and
/// an import refuses to open the store rather than give the lost sequences again.
#[test]
fn damage_below_the_durable_end_is_reported_not_taken_for_the_end() {
    let dir = support::storage::temp_dir();
    let store = dir.path().join("store");
    import(&store, &ndjson_file(dir.path(), "a.ndjson", 1..=100));
    let log = store.join("log");
    let segment = support::storage::segment_file(&log, 1);
    let (_, frames) = support::storage::frames_of(&segment);
    let first = frames.iter().find(|f| f.seq == 90).unwrap();
    support::storage::zero_range(&segment, first.offset, frames.last().unwrap().end());
    for name in ["clean.meta", "00000000000000000001.idx"] {
        esl_replay::storage::remove_durable(&log.join(name)).unwrap();
    }
    let s = path(&store);
    let durable = "where records up to 100 were acknowledged as durable";
    for args in [
        vec!["read", "-s", s, "--after", "80"],
        vec!["export", "-s", s],
    ] {
        let output = fails(&args, 2);
        assert!(output.contains(durable), "{args:?}: {output}");
    }
    assert!(fails(&["stats", "-s", s], 1).contains(durable));
    assert!(fails(&["verify", "-s", s], 1).contains(durable));
    let again = ndjson_file(dir.path(), "b.ndjson", 200..=210);
    assert!(fails(&["import", "-s", s, path(&again)], 2).contains(durable));
}

/// `tail` without `--after` prints the newest ten records, across a gap in the append
/// sequences and under criteria that skip records: not whatever lies in the last ten
/// sequence numbers.
#[test]
fn tail_prints_the_newest_ten_records_across_gaps_and_criteria() {
    let dir = support::storage::temp_dir();
    let store = dir.path().join("store");
    import(&store, &ndjson_file(dir.path(), "a.ndjson", 1..=100));
    import(&store, &ndjson_file(dir.path(), "b.ndjson", 200..=204));
    let s = path(&store);
    let newest: Vec<u64> = (96..=100).chain(200..=204).collect();
    assert_eq!(ndjson_sequences(&ok(&["tail", "-s", s])), newest);
    // Every record matches the artifact name; one that none matches prints nothing.
    let named = ok(&["tail", "-s", s, "--artifact-name", "event.raw"]);
    assert_eq!(ndjson_sequences(&named), newest);
    assert!(ok(&["tail", "-s", s, "--artifact-name", "absent"]).is_empty());
}

/// A store holding 1..=100 and 200..=299 (one run, `101 200`), written by `import`.
fn gapped_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    import(&store, &ndjson_file(dir, "a.ndjson", 1..=100));
    import(&store, &ndjson_file(dir, "b.ndjson", 200..=299));
    store
}

/// `store.meta` in the version 1 text layout (no checksum) that earlier builds wrote.
fn write_legacy_meta(store: &Path, runs: &str) {
    let text = format!("esl-replay store\nversion 1\n{runs}");
    std::fs::write(store.join(meta::FILE_NAME), text).unwrap();
}

/// Runs a command that must fail and returns its standard output and error together.
fn fails(args: &[&str], code: i32) -> String {
    let output = run(args);
    assert_eq!(output.status.code(), Some(code), "{args:?}: {output:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// [STORE-02] [STORE-05] The edit of an old store's `store.meta` (`101 200` to
/// `101 100`): `verify` reports the file and what is wrong instead of passing, reads refuse
/// it, and an import is refused instead of creating duplicate append sequences.
#[test]
fn edited_legacy_meta_is_reported_and_refused() {
    let dir = support::storage::temp_dir();
    let store = gapped_store(dir.path());
    write_legacy_meta(&store, "101 100\n");
    let s = path(&store);
    let verify = fails(&["verify", "-s", s], 1);
    assert!(verify.contains("store.meta"), "{verify}");
    assert!(
        verify.contains("does not move append sequences forward"),
        "{verify}"
    );
    let read = fails(&["read", "-s", s], 2);
    assert!(read.contains("store.meta"), "{read}");
    let again = ndjson_file(dir.path(), "c.ndjson", 250..=260);
    let import = fails(&["import", "-s", s, path(&again)], 2);
    assert!(import.contains("store.meta"), "{import}");
    // Nothing was written: the old file and the 200 records are as they were.
    write_legacy_meta(&store, "101 200\n");
    assert_all_visible(
        dir.path(),
        &store,
        &(1..=100).chain(200..=299).collect::<Vec<_>>(),
    );
}

/// [STORE-01] One changed digit in a current (checksummed) file is caught by the checksum
/// everywhere: `verify`, reads and imports all name the file.
#[test]
fn damaged_meta_is_reported_by_verify_and_refused_by_every_open() {
    let dir = support::storage::temp_dir();
    let store = gapped_store(dir.path());
    let file = store.join(meta::FILE_NAME);
    let bytes = std::fs::read(&file).unwrap();
    assert!(
        bytes.starts_with(&meta::MAGIC),
        "import writes the current layout"
    );
    let mut damaged = bytes.clone();
    damaged[24] ^= 0x01; // the run's append sequence: 200 -> 201
    std::fs::write(&file, &damaged).unwrap();
    let s = path(&store);
    let verify = fails(&["verify", "-s", s], 1);
    assert!(verify.contains("checksum mismatch"), "{verify}");
    assert!(verify.contains(path(&file)), "{verify}");
    for args in [
        vec!["read", "-s", s],
        vec!["export", "-s", s],
        vec!["stats", "-s", s],
    ] {
        let output = fails(&args, 2);
        assert!(output.contains("checksum mismatch"), "{args:?}: {output}");
    }
    assert!(matches!(
        open_store(&store),
        Err(Error::Metadata { path, .. }) if path == file
    ));
    std::fs::write(&file, &bytes).unwrap();
    assert!(ok(&["verify", "-s", s]).contains("checked 200 records: 0 problems"));
}

/// [STORE-02] A well-formed file that does not describe the log (`101 150` where the records
/// say `101 200`): the writer's open refuses it, since the next append sequence would collide
/// with stored ones, reads refuse it rather than number records wrongly, and `verify` names
/// the record that disagrees.
#[test]
fn meta_that_disagrees_with_the_records_is_refused() {
    let dir = support::storage::temp_dir();
    let store = gapped_store(dir.path());
    write_legacy_meta(&store, "101 150\n");
    let s = path(&store);
    let disagrees = "maps log sequence 200 to append sequence 249, but the record there has 299";
    let verify = fails(&["verify", "-s", s], 1);
    assert!(verify.contains(disagrees), "{verify}");
    let read = fails(&["read", "-s", s, "--after", "120"], 2);
    assert!(read.contains(disagrees), "{read}");
    let again = ndjson_file(dir.path(), "c.ndjson", 250..=260);
    let import = fails(&["import", "-s", s, path(&again)], 2);
    assert!(
        import
            .contains("maps log sequence 200 to append sequence 249, but the record there has 299"),
        "{import}"
    );
    // A run that is right at the last record but wrong elsewhere is caught by `verify`.
    write_legacy_meta(&store, "101 190\n150 249\n");
    let verify = fails(&["verify", "-s", s], 1);
    assert!(
        verify.contains("log sequence 101 to append sequence 190, but the record there has 200"),
        "{verify}"
    );
}

/// [STORE-02] A deleted `store.meta` of a store with a gap in its append sequences: reads
/// by append sequence refuse the store, naming the record that disagrees, instead of
/// numbering records as if there were no gap and passing over some of them.
#[test]
fn a_deleted_meta_file_is_refused_by_reads() {
    let dir = support::storage::temp_dir();
    let store = gapped_store(dir.path());
    esl_replay::storage::remove_durable(&store.join(meta::FILE_NAME)).unwrap();
    let s = path(&store);
    let disagrees = "maps log sequence 200 to append sequence 200, but the record there has 299";
    for args in [
        vec!["read", "-s", s, "--after", "500", "--limit", "3"],
        vec!["stats", "-s", s],
        vec!["export", "-s", s],
    ] {
        let output = fails(&args, 2);
        assert!(output.contains(disagrees), "{args:?}: {output}");
    }
    assert!(fails(&["verify", "-s", s], 1).contains(disagrees));
}

/// [STORE-02] A run `1 0` on an empty log (which made the last sequence underflow) is
/// refused when the store opens, naming the file; nothing panics.
#[test]
fn zero_run_on_an_empty_store_is_refused() {
    let dir = support::storage::temp_dir();
    let store = dir.path().join("store");
    open_store(&store).unwrap().close().unwrap();
    write_legacy_meta(&store, "1 0\n");
    let errors = [
        open_store(&store).unwrap_err(),
        LogStore::open_read_only(&store).unwrap_err(),
    ];
    for error in errors {
        assert!(
            matches!(&error, Error::Metadata { path, reason }
                if path.ends_with(meta::FILE_NAME) && reason.contains("zero sequence")),
            "{error}"
        );
    }
    let output = fails(&["import", "-s", path(&store), "/dev/null"], 2);
    assert!(output.contains("zero sequence"), "{output}");
}

/// [STORE-05] An old store (version 1 text `store.meta`) opens for reading as it is and shows
/// every record; the writer's open rewrites the file in the current layout with the same
/// runs.
#[test]
fn legacy_meta_is_read_and_rewritten_in_the_current_layout() {
    let dir = support::storage::temp_dir();
    let store = gapped_store(dir.path());
    write_legacy_meta(&store, "101 200\n");
    let expected: Vec<u64> = (1..=100).chain(200..=299).collect();
    let reader = LogStore::open_read_only(&store).unwrap();
    let all = reader
        .read_from_cursor(&ReadCursor::start(), 1000, &Default::default())
        .unwrap();
    assert_eq!(
        all.iter().map(Record::append_sequence).collect::<Vec<_>>(),
        expected
    );
    assert!(
        std::fs::read(store.join(meta::FILE_NAME))
            .unwrap()
            .starts_with(b"esl-replay store")
    );
    open_store(&store).unwrap().close().unwrap();
    let bytes = std::fs::read(store.join(meta::FILE_NAME)).unwrap();
    let (map, layout) = SequenceMap::decode(&bytes).unwrap();
    assert_eq!(layout, meta::Layout::Current);
    assert_eq!(
        map.runs(),
        [Run {
            log_seq: 101,
            append_seq: 200
        }]
    );
    assert_all_visible(dir.path(), &store, &expected);
}

/// [STORE-04] Runs whose records a torn tail removed are forgotten, durably, by the writer's
/// open: the file then describes exactly the surviving records.
#[test]
fn writer_open_forgets_runs_of_records_lost_in_a_crash() {
    let dir = support::storage::temp_dir();
    let store = gapped_store(dir.path());
    tear_log_from(&store, 90);
    open_store(&store).unwrap().close().unwrap();
    let (map, _) =
        SequenceMap::decode(&std::fs::read(store.join(meta::FILE_NAME)).unwrap()).unwrap();
    assert_eq!(map.runs(), []);
    assert_all_visible(dir.path(), &store, &(1..=89).collect::<Vec<_>>());
}

/// An operation the recording seam saw.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    SyncDir(PathBuf),
    Rename(PathBuf, PathBuf),
    SyncFile(PathBuf),
}

/// An `Io` that records directory syncs, file syncs and renames, then performs them.
#[derive(Debug, Default)]
struct Recorder {
    ops: Mutex<Vec<Op>>,
}

impl Recorder {
    fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    fn push(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }
}

impl Io for Recorder {
    fn sync_data(&self, file: &File) -> io::Result<()> {
        self.push(Op::SyncFile(support::storage::file_path(file)));
        StdIo.sync_data(file)
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        self.push(Op::SyncFile(support::storage::file_path(file)));
        StdIo.sync_all(file)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.push(Op::SyncDir(dir.to_path_buf()));
        StdIo.sync_dir(dir)
    }

    fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        self.push(Op::Rename(source.to_path_buf(), target.to_path_buf()));
        StdIo.rename(source, target)
    }
}

/// [STORE-04] Opening a new store creates its directory (and missing ancestors) durably:
/// each is synced into its parent through the log's seam, so a power loss cannot lose the
/// store. Then the first import that needs a run replaces `store.meta` by temporary, sync,
/// rename and directory sync ([STORE-03], [ATOM-01]) before the record is appended.
#[test]
fn new_store_directory_is_synced_into_its_parent() {
    let dir = support::storage::temp_dir();
    let parent = dir.path().join("stores");
    let root = parent.join("a");
    let recorder = Arc::new(Recorder::default());
    let options = support::storage::with_io(support::storage::small_options(), recorder.clone());
    let mut store = open_store_with(&root, options).unwrap();
    let ops = recorder.ops();
    for synced in [dir.path(), parent.as_path(), root.as_path()] {
        assert!(
            ops.contains(&Op::SyncDir(synced.to_path_buf())),
            "{} not synced: {ops:#?}",
            synced.display()
        );
    }
    // The store directory is synced into its parent before anything is created in it.
    let parent_sync = ops.iter().position(|op| *op == Op::SyncDir(parent.clone()));
    let root_sync = ops.iter().position(|op| *op == Op::SyncDir(root.clone()));
    assert!(parent_sync < root_sync, "{ops:#?}");

    let before = recorder.ops().len();
    store.append_records(&[record(1), record(5)]).unwrap();
    store.sync().unwrap();
    let ops = recorder.ops().split_off(before);
    let target = root.join(meta::FILE_NAME);
    let rename = ops
        .iter()
        .position(|op| matches!(op, Op::Rename(_, t) if *t == target))
        .unwrap_or_else(|| panic!("store.meta not replaced: {ops:#?}"));
    let Op::Rename(temp, _) = &ops[rename] else {
        unreachable!()
    };
    assert!(
        ops[..rename].contains(&Op::SyncFile(temp.clone())),
        "{ops:#?}"
    );
    assert_eq!(
        ops.get(rename + 1),
        Some(&Op::SyncDir(root.clone())),
        "{ops:#?}"
    );
    store.close().unwrap();
}
