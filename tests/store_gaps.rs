//! Imports whose append sequences leave gaps (issue 16, item 1): every stored record stays
//! visible to every reader command (`export`, `read`, `tail`, `replay plan`, `verify`,
//! `stats`, `get`), whether the gap comes from two imports, from one file, or from an import
//! that continues past a torn tail cut on open.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use esl_replay::record::{Envelope, JsonMap, Record, RecordId, ndjson};
use serde_json::{Value, json};
use time::macros::datetime;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_esl-replay"))
        .args(args)
        .env_remove("ESL_REPLAY_STORE")
        .env_remove("ESL_REPLAY_CHECKPOINTS")
        .output()
        .unwrap()
}

/// Runs a command that must succeed and returns its standard output.
fn ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// One record of the NDJSON files: sequence `sequence`, id `gen-<sequence>`, a valid checksum.
fn record(sequence: u64) -> Record {
    let mut payload = JsonMap::new();
    payload.insert("n".into(), json!(sequence));
    let envelope = Envelope {
        artifact_version: "1".into(),
        artifact_name: "event.raw".into(),
        capture_timestamp: datetime!(2024-01-15 10:00:00 UTC),
        capture_path: None,
        connection_generation: None,
        session_id: None,
        job_uuid: None,
        event_name: Some("HEARTBEAT".into()),
        correlation_ids: JsonMap::new(),
        runtime_flags: JsonMap::new(),
        payload,
    };
    let id = RecordId::new(format!("gen-{sequence}")).unwrap();
    Record::from_envelope(envelope, id, datetime!(2024-01-15 10:00:01 UTC), sequence).unwrap()
}

/// Writes an NDJSON file of the records with these sequences (`gen N START` of the issue).
fn ndjson_file(dir: &Path, name: &str, sequences: impl IntoIterator<Item = u64>) -> PathBuf {
    let path = dir.join(name);
    let mut text = String::new();
    for sequence in sequences {
        ndjson::append_ndjson_line(&record(sequence), &mut text);
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
        .map(|line| ndjson::from_ndjson_line(line).unwrap().append_sequence())
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

    let plan = ok(&["replay", "plan", "-s", s, "--batch", "100000", "--json"]);
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
    let dir = common::temp_dir();
    let store = dir.path().join("store");
    import(&store, &ndjson_file(dir.path(), "a.ndjson", 1..=100));
    import(&store, &ndjson_file(dir.path(), "b.ndjson", 200..=299));
    let expected: Vec<u64> = (1..=100).chain(200..=299).collect();
    assert_all_visible(dir.path(), &store, &expected);
}

/// One file holding both 1..=100 and 200..=299.
#[test]
fn one_import_with_a_gap_keeps_every_record_visible() {
    let dir = common::temp_dir();
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
/// would let open skip the scan (the clean-shutdown file and the index).
fn tear_log_from(store: &Path, from: u64) {
    let log = store.join("log");
    let segment = common::segment_file(&log, 1);
    let (_, frames) = common::frames_of(&segment);
    let first = frames.iter().find(|f| f.seq == from).unwrap();
    let end = frames.last().unwrap().end();
    common::zero_range(&segment, first.offset, end);
    for name in ["clean.meta", "00000000000000000001.idx"] {
        let _ = std::fs::remove_file(log.join(name));
    }
}

/// A torn tail cut inside the imported run 200..=299 (log sequences 101..=200), then an
/// import that continues past the gap: the 120 surviving records and the 50 new ones are
/// all visible.
#[test]
fn import_past_a_gap_after_a_torn_tail_cut_keeps_every_record_visible() {
    let dir = common::temp_dir();
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
    let dir = common::temp_dir();
    let store = dir.path().join("store");
    import(&store, &ndjson_file(dir.path(), "a.ndjson", 1..=100));
    import(&store, &ndjson_file(dir.path(), "b.ndjson", 200..=299));
    tear_log_from(&store, 90);
    // The cut left the store's last sequence at 89, so 95 follows it.
    import(&store, &ndjson_file(dir.path(), "c.ndjson", 95..=144));
    let expected: Vec<u64> = (1..=89).chain(95..=144).collect();
    assert_all_visible(dir.path(), &store, &expected);
}
