//! `esl-replay evidence reconstruct` and `esl-replay evidence compare`, run as a user runs
//! them: flags, outputs, exit codes.

use std::path::Path;

use esl_replay::checkpoint::{Checkpoint, CheckpointStore};
use esl_replay::evidence::{
    Engine, ReconstructionWindow, ReconstructionWindowFields, export_bundle,
};
use esl_replay::record::ReadCursor;
use serde_json::{Value, json};
use time::macros::datetime;

use crate::support::cli::{run, stderr, stdout};
use crate::support::evidence::{Backend, store_path, store_with, worked_example, worked_window};
use crate::support::map;

/// A store of the backend holding the worked example; returns its path.
fn worked_store(dir: &Path, backend: Backend) -> String {
    drop(store_with(dir, backend, &worked_example()));
    store_path(dir, backend).to_str().unwrap().to_owned()
}

const METADATA: &str = r#"{"replay_session_id":"replay-1","recovery_generation_id":"gen-1"}"#;

fn library_bundle() -> String {
    export_bundle(
        &Engine::new()
            .reconstruct_records(&worked_example(), &worked_window())
            .unwrap(),
    )
}

fn reconstruct_args<'a>(store: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "evidence",
        "reconstruct",
        "--store",
        store,
        "--until",
        "5",
        "--batch-limit",
        "2",
        "--checkpoint-key",
        "worker-a",
        "--checkpoint-metadata",
        METADATA,
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn reconstruct_prints_the_bundle_json_on_both_backends() {
    let expected = library_bundle();
    for backend in [Backend::Log, Backend::Sqlite] {
        let dir = tempfile::tempdir().unwrap();
        let store = worked_store(dir.path(), backend);
        let output = run(&reconstruct_args(&store, &[]));
        assert!(output.status.success(), "{}", stderr(&output));
        assert_eq!(stdout(&output), format!("{expected}\n"), "{backend:?}");
    }
}

#[test]
fn reconstruct_can_use_the_reference_operation_identity() {
    let dir = tempfile::tempdir().unwrap();
    let store = worked_store(dir.path(), Backend::Log);
    let output = run(&reconstruct_args(
        &store,
        &["--reference-operation-identity"],
    ));
    assert!(output.status.success(), "{}", stderr(&output));
    let window = ReconstructionWindow::new(ReconstructionWindowFields {
        until_append_sequence: Some(5),
        batch_limit: 2,
        checkpoint_key: Some("worker-a".into()),
        checkpoint_metadata: map(serde_json::from_str(METADATA).unwrap()),
        ..ReconstructionWindowFields::default()
    })
    .unwrap();
    let expected = export_bundle(
        &Engine::reference()
            .reconstruct_records(&worked_example(), &window)
            .unwrap(),
    );
    assert_eq!(stdout(&output), format!("{expected}\n"));
    let bundle: Value = serde_json::from_str(&expected).unwrap();
    let ids: Vec<_> = bundle["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|operation| operation["operation_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["job-1", "op-1"]);
}

#[test]
fn reconstruct_writes_exact_bytes_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = worked_store(dir.path(), Backend::Log);
    let file = dir.path().join("bundle.json");
    let output = run(&reconstruct_args(&store, &["-o", file.to_str().unwrap()]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).is_empty());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), library_bundle());
}

#[test]
fn reconstruct_applies_after_and_criteria_flags() {
    let dir = tempfile::tempdir().unwrap();
    let store = worked_store(dir.path(), Backend::Log);
    let output = run(&[
        "evidence",
        "reconstruct",
        "--store",
        &store,
        "--after",
        "1",
        "--artifact-name",
        "event.raw",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let bundle: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let sequences: Vec<_> = bundle["record_references"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["append_sequence"].as_u64().unwrap())
        .collect();
    assert_eq!(sequences, [3, 5]);
    let window = &bundle["manifest"]["window"];
    assert_eq!(window["from_last_consumed_sequence"], json!(1));
    assert_eq!(window["from_byte_offset_hint"], Value::Null);
    assert_eq!(window["criteria"]["artifact_name"], json!("event.raw"));
}

#[test]
fn reconstruct_text_format_summarises_for_people() {
    let dir = tempfile::tempdir().unwrap();
    let store = worked_store(dir.path(), Backend::Log);
    let output = run(&reconstruct_args(&store, &["--format", "text"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for expected in [
        "verdict  insufficient",
        "[ambiguity] retry_posture_changed at #4 bgapi.complete",
        "[insufficient] terminal_publication_snapshot_incomplete at #5 event.raw",
        "#1 gen-1 (bgapi.dispatch)",
        "#3 gen-2 (event.raw)",
        "op-1 (kind bgapi, job job-1): accepted #1 -> accepted #2 -> completed #4",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn reconstruct_resolves_the_window_from_a_stored_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = worked_store(dir.path(), Backend::Log);
    let checkpoints_dir = dir.path().join("checkpoints");
    let checkpoints = CheckpointStore::open(&checkpoints_dir).unwrap();
    let save = |key: &str, sequence: u64| {
        checkpoints
            .save(
                &Checkpoint::new(
                    key,
                    ReadCursor::new(sequence, None),
                    datetime!(2024-01-15 10:00 UTC),
                    map(
                        json!({"recovery_generation_id": "gen-1", "replay_session_id": "replay-1"}),
                    ),
                )
                .unwrap(),
            )
            .unwrap();
    };
    // After sequence 1 the next record has no generation: the checkpoint holds.
    save("worker-ok", 1);
    let output = run(&[
        "evidence",
        "reconstruct",
        "--store",
        &store,
        "--checkpoint-dir",
        checkpoints_dir.to_str().unwrap(),
        "--checkpoint-key",
        "worker-ok",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let bundle: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let window = &bundle["manifest"]["window"];
    assert_eq!(window["from_last_consumed_sequence"], json!(1));
    assert_eq!(window["checkpoint_key"], json!("worker-ok"));
    assert_eq!(
        window["checkpoint_metadata"],
        json!({"recovery_generation_id": "gen-1", "replay_session_id": "replay-1"})
    );

    // After sequence 2 the next record names gen-2: resuming there is refused.
    save("worker-stale", 2);
    let output = run(&[
        "evidence",
        "reconstruct",
        "--store",
        &store,
        "--checkpoint-dir",
        checkpoints_dir.to_str().unwrap(),
        "--checkpoint-key",
        "worker-stale",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("expected recovery_generation_id gen-1, observed gen-2"),
        "{}",
        stderr(&output)
    );

    let output = run(&[
        "evidence",
        "reconstruct",
        "--store",
        &store,
        "--checkpoint-dir",
        checkpoints_dir.to_str().unwrap(),
        "--checkpoint-key",
        "missing",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("no checkpoint missing"),
        "{}",
        stderr(&output)
    );
}

fn write_json(dir: &Path, name: &str, value: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, value.to_string()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn compare_exits_0_on_a_match_and_1_on_a_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.json");
    std::fs::write(&bundle, library_bundle()).unwrap();
    let bundle = bundle.to_str().unwrap();

    let matching = write_json(
        dir.path(),
        "match.json",
        &json!({
            "scenario_name": "worked",
            "expected_recovery_generations": ["gen-1", "gen-2"],
            "expected_replay_continuity_posture": "continuous",
            "expected_retry_posture": "retrying",
            "expected_drain_posture": "not_draining",
            "expected_reconstruction_posture": "bounded",
            "expected_operations": [{
                "operation_id": "op-1",
                "states": ["accepted", "accepted", "completed"],
                "final_state": "completed",
                "retry_posture": "retrying",
                "drain_posture": "not_draining"
            }],
            "expected_terminal_publications": [
                {"publication_id": "pub-1", "status": "published", "operation_id": "op-1"}
            ],
            "expected_lifecycle_semantics": [
                {"semantic": "runtime_terminal", "posture": "observed", "operation_id": "op-1"}
            ]
        }),
    );
    let output = run(&[
        "evidence", "compare", "--bundle", bundle, "--expect", &matching,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let result: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(result["passed"], json!(true));
    assert_eq!(result["issues"], json!([]));
    assert_eq!(result["scenario_name"], json!("worked"));

    let mismatching = write_json(
        dir.path(),
        "mismatch.json",
        &json!({
            "scenario_name": "worked",
            "expected_retry_posture": "stable",
            "expected_operations": [{"operation_id": "op-9", "states": ["accepted"]}]
        }),
    );
    let output = run(&[
        "evidence",
        "compare",
        "--bundle",
        bundle,
        "--expect",
        &mismatching,
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    let result: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(result["passed"], json!(false));
    let codes: Vec<_> = result["issues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|issue| issue["code"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        codes,
        ["retry_posture_mismatch", "missing_operation_lifecycle"]
    );

    let output = run(&[
        "evidence",
        "compare",
        "--bundle",
        bundle,
        "--expect",
        &mismatching,
        "--format",
        "text",
    ]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.contains("scenario worked: FAIL"), "{text}");
    assert!(
        text.contains(r#"[mismatch] retry_posture_mismatch at window"#),
        "{text}"
    );
}

#[test]
fn compare_rejects_malformed_inputs_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle.json");
    std::fs::write(&bundle, library_bundle()).unwrap();
    let bundle = bundle.to_str().unwrap();
    let typo = write_json(
        dir.path(),
        "typo.json",
        &json!({"scenario_name": "x", "expected_retry_postures": "stable"}),
    );
    let output = run(&["evidence", "compare", "--bundle", bundle, "--expect", &typo]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("expected_retry_postures"),
        "{}",
        stderr(&output)
    );

    let empty_states = write_json(
        dir.path(),
        "empty.json",
        &json!({"scenario_name": "x", "expected_operations": [{"operation_id": "op-1", "states": []}]}),
    );
    let output = run(&[
        "evidence",
        "compare",
        "--bundle",
        bundle,
        "--expect",
        &empty_states,
    ]);
    assert_eq!(output.status.code(), Some(2));

    let not_a_bundle = write_json(dir.path(), "not.json", &json!({"manifest": {}}));
    let output = run(&[
        "evidence",
        "compare",
        "--bundle",
        &not_a_bundle,
        "--expect",
        &typo,
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("manifest.bundle_version"),
        "{}",
        stderr(&output)
    );
}

/// A window whose first records were pruned is refused, from `--after` and from a
/// checkpoint alike: the bundle would prove something about records it never saw.
#[test]
fn a_window_whose_start_was_pruned_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = worked_store(dir.path(), Backend::Log);
    let total = worked_example().len() as u64;
    let pruned = run(&[
        "prune",
        "--store",
        &store,
        "--apply",
        "--max-age",
        "1s",
        "--protect",
        "2",
        "--now",
        "2030-01-01T00:00:00Z",
    ]);
    assert!(pruned.status.success(), "{}", stderr(&pruned));
    let through = total - 2;

    let output = run(&["evidence", "reconstruct", "--store", &store, "--after", "1"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains(&format!("records 2 to {through} were pruned")),
        "{}",
        stderr(&output)
    );

    let checkpoints = dir.path().join("checkpoints");
    CheckpointStore::open(&checkpoints)
        .unwrap()
        .save(
            &Checkpoint::new(
                "worker-a",
                ReadCursor::new(1, None),
                datetime!(2026-01-01 00:00 UTC),
                esl_replay::record::JsonMap::new(),
            )
            .unwrap(),
        )
        .unwrap();
    let output = run(&[
        "evidence",
        "reconstruct",
        "--store",
        &store,
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
        "--checkpoint-key",
        "worker-a",
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("cannot resume from checkpoint worker-a"),
        "{}",
        stderr(&output)
    );
    // From the start, the window covers what is stored.
    let output = run(&["evidence", "reconstruct", "--store", &store]);
    assert!(output.status.success(), "{}", stderr(&output));
}

/// A bundle edited after `reconstruct` wrote it is refused by `compare` (exit 2), naming
/// what contradicts what; an edit nothing else contradicts is caught by the id, and both
/// ids are named. A bundle written with its checkpoint metadata in any key order verifies.
#[test]
fn compare_refuses_a_tampered_bundle_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let store = worked_store(dir.path(), Backend::Log);
    let expect = write_json(dir.path(), "expect.json", &json!({"scenario_name": "s"}));
    let mut written = Vec::new();
    for (name, metadata) in [
        ("unsorted.json", r#"{"b":1,"a":{"y":2,"x":1}}"#),
        ("sorted.json", r#"{"a":{"x":1,"y":2},"b":1}"#),
    ] {
        let path = dir.path().join(name);
        let output = run(&[
            "evidence",
            "reconstruct",
            "--store",
            &store,
            "--checkpoint-metadata",
            metadata,
            "-o",
            path.to_str().unwrap(),
        ]);
        assert!(output.status.success(), "{}", stderr(&output));
        let output = run(&[
            "evidence",
            "compare",
            "--bundle",
            path.to_str().unwrap(),
            "--expect",
            &expect,
        ]);
        assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
        written.push(std::fs::read(&path).unwrap());
    }
    assert_eq!(written[0], written[1]);

    let genuine: Value = serde_json::from_str(&library_bundle()).unwrap();
    let id = genuine["manifest"]["bundle_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let compare = |name: &str, bundle: &Value| {
        let path = write_json(dir.path(), name, bundle);
        run(&[
            "evidence", "compare", "--bundle", &path, "--expect", &expect,
        ])
    };

    let mut posture = genuine.clone();
    posture["manifest"]["verdict"]["posture"] = json!("complete");
    let output = compare("posture.json", &posture);
    assert_eq!(output.status.code(), Some(2));
    assert!(stdout(&output).is_empty());
    assert!(
        stderr(&output).contains("manifest.verdict.posture"),
        "{}",
        stderr(&output)
    );

    let mut count = genuine.clone();
    count["manifest"]["record_count"] = json!(5 + 1);
    let output = compare("count.json", &count);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("manifest.record_count is 6, but the bundle lists 5"),
        "{}",
        stderr(&output)
    );

    let mut issue = genuine.clone();
    issue["manifest"]["verdict"]["issues"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    let output = compare("issue.json", &issue);
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(
        text.contains(&format!("manifest.bundle_id is {id}, but")),
        "{text}"
    );
}

/// `reconstruct` fails (exit 2) on a record altered after it was written, naming it,
/// instead of building evidence from it.
#[test]
fn reconstruct_refuses_an_altered_record_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let store = worked_store(dir.path(), Backend::Sqlite);
    rusqlite::Connection::open(&store)
        .unwrap()
        .execute(
            "UPDATE replay_records SET payload = replace(payload, '\"completed\"', '\"failed\"') \
             WHERE append_sequence = 4",
            [],
        )
        .unwrap();
    let output = run(&reconstruct_args(&store, &[]));
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(stdout(&output).is_empty());
    let text = stderr(&output);
    assert!(
        text.contains("record rec-4 at append sequence 4") && text.contains("checksum"),
        "{text}"
    );
}
