//! `esl-replay replay plan` and `replay run` end to end: dry-run by default, human and
//! JSON output under the reference outcome keys, `--until`, criteria, the built-in
//! handlers (`print`, `count`, `exec`), checkpoints resumed and saved, and the guarded
//! re-injection flags.

use std::path::{Path, PathBuf};
use std::process::Output;

use esl_replay::checkpoint::CheckpointStore;
use esl_replay::store::ArtifactStore;
use serde_json::Value;

use crate::support::cli::{run, stderr, stdout};
use crate::support::process::open_store;
use crate::support::record::fixture_named;

fn json_lines(output: &Output) -> Vec<Value> {
    stdout(output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// A store of these artifact names (event names `E<sequence>` on `event.raw` records).
fn store(dir: &Path, names: &[&str]) -> PathBuf {
    let path = dir.join("store");
    let mut store = open_store(&path).unwrap();
    let envelopes = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let envelope = fixture_named(name);
            if *name == "event.raw" {
                envelope.with_event_name(if i % 2 == 0 { "HEARTBEAT" } else { "DTMF" })
            } else {
                envelope
            }
        })
        .collect();
    store.write_batch(envelopes).unwrap();
    store.sync().unwrap();
    path
}

const STREAM: [&str; 5] = [
    "api.dispatch",
    "event.raw",
    "bgapi.dispatch",
    "event.raw",
    "event.raw",
];

#[test]
fn run_is_a_dry_run_by_default_with_one_line_per_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let output = run(&[
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--handler",
        "count",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(
        lines
            .iter()
            .all(|l| l.contains("dry_run_skip") && l.contains("would run count"))
    );
    assert!(stderr(&output).contains("dry-run: 5 records in 1 batch: 0 processed, 5 skipped"));
}

#[test]
fn json_prints_plan_result_and_reference_outcome_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let output = run(&[
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--format",
        "ndjson",
        "--batch",
        "2",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&output);
    assert_eq!(lines.len(), 4, "three batches and a summary");
    let first = &lines[0];
    assert_eq!(first["plan"]["from"]["last_consumed_sequence"], 0);
    assert_eq!(first["plan"]["record_count"], 2);
    assert_eq!(first["plan"]["is_dry_run"], true);
    assert_eq!(first["result"]["success"], true);
    assert_eq!(first["result"]["skipped_count"], 2);
    let outcome = first["result"]["outcomes"][0].as_object().unwrap();
    let keys: Vec<&str> = outcome.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "record_id",
            "artifact_name",
            "append_sequence",
            "action",
            "would_dispatch_handler",
            "handler",
            "would_reinject",
            "reinjection_reason"
        ]
    );
    assert_eq!(outcome["artifact_name"], "api.dispatch");
    assert_eq!(outcome["action"], "dry_run_skip");
    assert_eq!(lines[1]["plan"]["from"]["last_consumed_sequence"], 2);
    let summary = &lines[3]["summary"];
    assert_eq!(summary["records"], 5);
    assert_eq!(summary["batches"], 3);
    assert_eq!(summary["last_consumed_sequence"], 5);
}

#[test]
fn execute_observes_records_and_until_and_after_bound_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let output = run(&[
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--execute",
        "--after",
        "1",
        "--until",
        "3",
        "--format",
        "ndjson",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&output);
    let outcomes = lines[0]["result"]["outcomes"].as_array().unwrap();
    let seen: Vec<(u64, &str)> = outcomes
        .iter()
        .map(|o| {
            (
                o["append_sequence"].as_u64().unwrap(),
                o["action"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [(2, "observed"), (3, "observed")]);
    assert_eq!(outcomes[0]["artifact_version"], "1");
    assert_eq!(lines.last().unwrap()["summary"]["processed"], 2);
}

#[test]
fn criteria_select_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let output = run(&[
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--artifact-name",
        "event.raw",
        "--format",
        "ndjson",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&output);
    let sequences: Vec<u64> = lines[0]["result"]["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["append_sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [2, 4, 5]);
}

#[test]
fn count_handler_counts_by_artifact_and_by_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let path = store.to_str().unwrap();
    let output = run(&[
        "replay",
        "run",
        "--store",
        path,
        "--execute",
        "--handler",
        "count",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let counts: Vec<(u64, String)> = stdout(&output)
        .lines()
        .map(|line| {
            let mut parts = line.split_whitespace();
            (
                parts.next().unwrap().parse().unwrap(),
                parts.next().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            (1, "api.dispatch".to_owned()),
            (1, "bgapi.dispatch".to_owned()),
            (3, "event.raw".to_owned())
        ]
    );
    let output = run(&[
        "replay",
        "run",
        "--store",
        path,
        "--execute",
        "--handler",
        "count",
        "--count-by",
        "event",
        "--format",
        "ndjson",
    ]);
    let lines = json_lines(&output);
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(
        summary["counts"],
        serde_json::json!({"-": 2, "DTMF": 2, "HEARTBEAT": 1})
    );
    assert_eq!(lines[0]["result"]["outcomes"][0]["action"], "counted");
    assert_eq!(lines[0]["result"]["outcomes"][0]["handler"], "count");
}

#[test]
fn print_handler_prints_reference_ndjson_for_selected_artifacts() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let output = run(&[
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--execute",
        "--handler",
        "print",
        "--handle-artifact",
        "api.dispatch",
        "--handle-artifact",
        "bgapi.dispatch",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let records = json_lines(&output);
    let names: Vec<&str> = records
        .iter()
        .map(|r| r["artifact_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api.dispatch", "bgapi.dispatch"]);
    assert_eq!(records[0]["append_sequence"], 1);
    assert!(stderr(&output).contains("5 records in 1 batch: 5 processed"));
}

#[test]
fn exec_handler_pipes_each_record_and_stops_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let path = store.to_str().unwrap();
    let sink = dir.path().join("sink");
    let script = format!("cat >> {}", sink.display());
    let output = run(&[
        "replay",
        "run",
        "--store",
        path,
        "--execute",
        "--handler",
        "exec",
        "--summary",
        "--",
        "sh",
        "-c",
        &script,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let piped = std::fs::read_to_string(&sink).unwrap();
    let sequences: Vec<u64> = piped
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["append_sequence"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(sequences, [1, 2, 3, 4, 5]);

    // A command that fails on the third record stops the replay there (exit 1) and
    // saves the progress before it.
    let checkpoints = dir.path().join("cp");
    let failing = r#"grep -q '"append_sequence":3' && exit 7; cat >/dev/null; exit 0"#;
    let output = run(&[
        "replay",
        "run",
        "--store",
        path,
        "--execute",
        "--handler",
        "exec",
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
        "--checkpoint-key",
        "w",
        "--batch",
        "2",
        "--",
        "sh",
        "-c",
        failing,
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("replay stopped at sequence 3"),
        "{}",
        stderr(&output)
    );
    assert!(
        stderr(&output).contains("exit status: 7"),
        "{}",
        stderr(&output)
    );
    let saved = CheckpointStore::open(&checkpoints)
        .unwrap()
        .load("w")
        .unwrap()
        .unwrap();
    assert_eq!(saved.cursor().last_consumed_sequence(), 2);
}

#[test]
fn checkpoint_resumes_and_saves_progress_only_when_executing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let path = store.to_str().unwrap();
    let checkpoints = dir.path().join("cp");
    let cp = checkpoints.to_str().unwrap();
    let base = [
        "replay",
        "run",
        "--store",
        path,
        "--checkpoint-dir",
        cp,
        "--checkpoint-key",
        "k",
    ];

    let dry = run(&[&base[..], &["--until", "2"]].concat());
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(
        !checkpoints.exists(),
        "a dry-run creates no checkpoint directory"
    );
    assert!(
        CheckpointStore::open(&checkpoints)
            .unwrap()
            .load("k")
            .unwrap()
            .is_none()
    );

    let first = run(&[
        &base[..],
        &["--until", "2", "--execute", "--format", "ndjson"],
    ]
    .concat());
    assert!(first.status.success(), "{}", stderr(&first));
    let saved = CheckpointStore::open(&checkpoints)
        .unwrap()
        .load("k")
        .unwrap()
        .unwrap();
    assert_eq!(saved.cursor().last_consumed_sequence(), 2);

    let second = run(&[&base[..], &["--execute", "--format", "ndjson"]].concat());
    let lines = json_lines(&second);
    let sequences: Vec<u64> = lines[0]["result"]["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["append_sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [3, 4, 5]);
    let saved = CheckpointStore::open(&checkpoints)
        .unwrap()
        .load("k")
        .unwrap()
        .unwrap();
    assert_eq!(saved.cursor().last_consumed_sequence(), 5);

    // `plan` reads from the checkpoint and plans nothing more.
    let plan = run(&[
        "replay",
        "plan",
        "--store",
        path,
        "--checkpoint-dir",
        cp,
        "--checkpoint-key",
        "k",
        "--format",
        "ndjson",
    ]);
    let plan = &json_lines(&plan)[0];
    assert_eq!(plan["from"]["last_consumed_sequence"], 5);
    assert_eq!(plan["record_count"], 0);
}

/// SIGINT stops a live run after the record in hand and saves its progress: a resume
/// executes every record exactly once (a repeated `exec` or re-injection is a side effect
/// done twice).
#[test]
fn a_signal_stops_a_run_between_records_and_saves_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let path = store.to_str().unwrap();
    let checkpoints = dir.path().join("cp");
    let executed = dir.path().join("executed");
    // Logs each record's sequence; the third interrupts the replay (its parent).
    let handler = format!(
        r#"s=$(cat); echo "$s" | grep -o '"append_sequence":[0-9]*' >> {}; case "$s" in *'"append_sequence":3,'*) kill -INT $PPID;; esac"#,
        executed.display()
    );
    let replay = || {
        run(&[
            "replay",
            "run",
            "--store",
            path,
            "--execute",
            "--handler",
            "exec",
            "--checkpoint-dir",
            checkpoints.to_str().unwrap(),
            "--checkpoint-key",
            "w",
            "--batch",
            "100",
            "--",
            "sh",
            "-c",
            &handler,
        ])
    };
    let first = replay();
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert!(
        stderr(&first).contains(
            "replay stopped by a signal; a resume from the checkpoint starts at sequence 4"
        ),
        "{}",
        stderr(&first)
    );
    let saved = CheckpointStore::open(&checkpoints)
        .unwrap()
        .load("w")
        .unwrap()
        .unwrap();
    assert_eq!(saved.cursor().last_consumed_sequence(), 3);
    let second = replay();
    assert!(second.status.success(), "{}", stderr(&second));
    let log = std::fs::read_to_string(&executed).unwrap();
    let sequences: Vec<&str> = log.lines().collect();
    assert_eq!(
        sequences,
        (1..=STREAM.len())
            .map(|s| format!("\"append_sequence\":{s}"))
            .collect::<Vec<_>>()
    );
}

/// A run that saves keeps what the checkpoint held: metadata a retention query finds the
/// consumer by survives (the criteria's anchors are added), so a prune by that query still
/// protects the records the consumer has not read. A missing checkpoint is said.
#[test]
fn a_run_keeps_the_checkpoints_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let path = store.to_str().unwrap();
    let checkpoints = dir.path().join("cp");
    let cp = checkpoints.to_str().unwrap();
    let saved = run(&[
        "checkpoint",
        "save",
        "--checkpoint-dir",
        cp,
        "--key",
        "worker",
        "--sequence",
        "1",
        "--recovery-generation-id",
        "g1",
    ]);
    assert!(saved.status.success(), "{}", stderr(&saved));
    let output = run(&[
        "replay",
        "run",
        "--store",
        path,
        "--execute",
        "--checkpoint-dir",
        cp,
        "--checkpoint-key",
        "worker",
        "--until",
        "3",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let checkpoint = CheckpointStore::open(&checkpoints)
        .unwrap()
        .load("worker")
        .unwrap()
        .unwrap();
    assert_eq!(checkpoint.cursor().last_consumed_sequence(), 3);
    assert_eq!(
        checkpoint.metadata().get("recovery_generation_id"),
        Some(&Value::from("g1")),
        "{:?}",
        checkpoint.metadata()
    );

    let fresh = run(&[
        "replay",
        "plan",
        "--store",
        path,
        "--checkpoint-dir",
        cp,
        "--checkpoint-key",
        "typo",
    ]);
    assert!(fresh.status.success(), "{}", stderr(&fresh));
    assert!(
        stderr(&fresh).contains("no checkpoint `typo`"),
        "{}",
        stderr(&fresh)
    );
}

#[test]
fn plan_prints_the_next_batch_with_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let path = store.to_str().unwrap();
    let output = run(&[
        "replay", "plan", "--store", path, "--batch", "3", "--format", "ndjson",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let plan = &json_lines(&output)[0];
    assert_eq!(plan["record_count"], 3);
    assert_eq!(plan["is_dry_run"], true);
    let records = plan["records"].as_array().unwrap();
    let sequences: Vec<u64> = records
        .iter()
        .map(|r| r["append_sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [1, 2, 3]);
    assert!(records[0]["checksum"].is_string());

    // Each record as `export` writes it, byte for byte, numbers included.
    let numbers = dir.path().join("numbers");
    let input = dir.path().join("numbers.ndjson");
    std::fs::write(
        &input,
        r#"{"schema_version":1,"id":"n-1","artifact_version":"1","artifact_name":"event.raw","capture_timestamp":"2024-01-15T10:00:00.000+00:00","stored_at":"2024-01-15T10:00:01.250+00:00","append_sequence":1,"connection_generation":null,"session_id":null,"job_uuid":null,"event_name":null,"capture_path":null,"correlation_ids":[],"runtime_flags":[],"payload":{"neg":-0,"small":1.0e-7,"line":"\u2028"},"checksum":"4931c8e72475a21f85b20cbb62e17557fa8ef2a736d8aa65152f64b8e7df529b","tags":[]}"#,
    )
    .unwrap();
    let numbers = numbers.to_str().unwrap();
    assert!(
        run(&["import", "--store", numbers, input.to_str().unwrap()])
            .status
            .success()
    );
    let exported = stdout(&run(&["export", "--store", numbers]));
    let planned = stdout(&run(&[
        "replay", "plan", "--store", numbers, "--format", "ndjson",
    ]));
    let line = exported.lines().next().unwrap();
    assert!(planned.contains(line), "{line} not in {planned}");

    let human = run(&["replay", "plan", "--store", path, "--after", "3"]);
    let text = stdout(&human);
    assert!(
        text.starts_with("plan: 2 records after sequence 3"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 3);
}

#[test]
fn reinjection_dry_run_reports_reasons_and_live_needs_a_target() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let path = store.to_str().unwrap();
    let output = run(&[
        "replay",
        "run",
        "--store",
        path,
        "--reinject",
        "--allowlist",
        "api.dispatch,event.raw",
        "--format",
        "ndjson",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = json_lines(&output);
    let reasons: Vec<(bool, &str)> = lines[0]["result"]["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["would_reinject"].as_bool().unwrap(),
                o["reinjection_reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        reasons[..3],
        [
            (true, "eligible"),
            (false, "artifact type is observational and not injectable"),
            (false, "artifact type is not allowlisted for reinjection"),
        ]
    );

    let live = run(&[
        "replay",
        "run",
        "--store",
        path,
        "--reinject",
        "--allowlist",
        "api.dispatch",
        "--execute",
    ]);
    assert_eq!(live.status.code(), Some(2));
    assert!(
        stderr(&live).contains("needs an injector target"),
        "{}",
        stderr(&live)
    );

    let no_allowlist = run(&["replay", "run", "--store", path, "--reinject"]);
    assert_eq!(no_allowlist.status.code(), Some(2));
    assert!(
        stderr(&no_allowlist).contains("--allowlist"),
        "{}",
        stderr(&no_allowlist)
    );
}

#[test]
fn conflicting_or_incomplete_flags_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let path = store.to_str().unwrap();
    for args in [
        vec!["replay", "run", "--store", path, "--dry-run", "--execute"],
        vec!["replay", "run", "--store", path, "--handler", "exec"],
        vec![
            "replay",
            "run",
            "--store",
            path,
            "--handler",
            "print",
            "--format",
            "ndjson",
        ],
        vec!["replay", "run", "--store", path, "--checkpoint-key", "k"],
        vec!["replay", "run", "--store", path, "--batch", "0"],
        // A batch is held in memory whole: its size is bounded.
        vec!["replay", "run", "--store", path, "--batch", "100001"],
        vec![
            "replay",
            "plan",
            "--store",
            path,
            "--batch",
            "18446744073709551615",
        ],
        vec![
            "replay", "run", "--store", path, "--after", "4", "--until", "2",
        ],
    ] {
        let output = run(&args);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

/// `replay plan` refuses an inverted range as `replay run` does (it used to plan 0 records
/// and exit 0); an empty range (`--until` at the start) still plans nothing.
#[test]
fn plan_refuses_an_until_before_the_start_as_run_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let path = store.to_str().unwrap();
    for command in ["plan", "run"] {
        let output = run(&[
            "replay", command, "--store", path, "--after", "4", "--until", "2",
        ]);
        let text = crate::support::cli::error_output(&output);
        assert!(
            text.contains("until sequence 2 is before the starting cursor 4"),
            "{command}: {text}"
        );
    }
    let output = run(&[
        "replay", "plan", "--store", path, "--after", "4", "--until", "4",
    ]);
    assert!(
        stdout(&output).starts_with("plan: 0 records after sequence 4"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn exec_handler_reports_a_command_that_cannot_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), &STREAM);
    let output = run(&[
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--execute",
        "--handler",
        "exec",
        "--",
        "/nonexistent/esl-replay-handler",
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains("replay stopped at sequence 1"), "{text}");
    assert!(
        text.contains("cannot run `/nonexistent/esl-replay-handler`"),
        "{text}"
    );
}
