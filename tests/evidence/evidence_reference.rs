//! The evidence engine against the reference: the worked example of reference §7.9 and
//! every evidence test of §10 (named after the reference test), plus the rules the
//! reference pins in prose (§7.2-7.8) and our decision C9.

use esl_replay::checkpoint::{Checkpoint, CheckpointStore};
use esl_replay::evidence::{
    Engine, Error, ExpectedLifecycleSemantic, ExpectedLifecycleSemanticFields,
    ExpectedOperationLifecycle, ExpectedOperationLifecycleFields, ExpectedTerminalPublication,
    ExpectedTerminalPublicationFields, IssueCode, IssueFields, IssueKind, ReconstructionWindow,
    ReconstructionWindowFields, ScenarioExpectation, ScenarioExpectationFields, VerdictPosture,
    bundle_id, compare_scenario, export_bundle, export_comparison, parse_bundle,
    resolve_checkpoint_window,
};
use esl_replay::record::{Criteria, CriteriaFields, ReadCursor};
use serde_json::{Value, json};
use time::macros::datetime;

use crate::support::evidence::{Backend, Spec, records, store_with, worked_example, worked_window};
use crate::support::map;

/// The upstream wording of the two issues of the worked example, recorded in §7.9 so that
/// the bundle id derivation can be checked against the reference's id.
const REFERENCE_MESSAGES: [(IssueCode, &str); 2] = [
    (
        IssueCode::RetryPostureChanged,
        "Observed posture changed from stable to retrying within one reconstruction window.",
    ),
    (
        IssueCode::TerminalPublicationSnapshotIncomplete,
        "Stored artifacts exposed terminal-publication evidence without a stable publication id and status.",
    ),
];

const REFERENCE_BUNDLE_ID: &str =
    "b6c8128766d7c2c8f62f5b7380bd6e973c2dbe03f1c96c19a85060482c205341";

fn worked_expectation() -> ScenarioExpectation {
    let operation = |id: &str, states: &[&str], final_state: Option<&str>| {
        ExpectedOperationLifecycle::new(ExpectedOperationLifecycleFields {
            operation_id: id.into(),
            states: states.iter().map(|s| (*s).to_owned()).collect(),
            final_state: final_state.map(str::to_owned),
            retry_posture: None,
            drain_posture: None,
        })
        .unwrap()
    };
    let semantic = |operation_id: Option<&str>| {
        ExpectedLifecycleSemantic::new(ExpectedLifecycleSemanticFields {
            semantic: "runtime_terminal".into(),
            posture: "observed".into(),
            operation_id: operation_id.map(str::to_owned),
        })
        .unwrap()
    };
    ScenarioExpectation::new(ScenarioExpectationFields {
        scenario_name: "sc19-example".into(),
        expected_recovery_generations: vec!["gen-1".into(), "gen-2".into()],
        expected_replay_continuity_posture: Some("continuous".into()),
        expected_retry_posture: Some("stable".into()),
        expected_reconstruction_posture: Some("bounded".into()),
        expected_operations: vec![
            operation("op-1", &["accepted", "completed"], Some("completed")),
            operation("op-9", &["accepted"], None),
        ],
        expected_terminal_publications: vec![
            ExpectedTerminalPublication::new(ExpectedTerminalPublicationFields {
                publication_id: "pub-1".into(),
                status: "published".into(),
                operation_id: Some("op-1".into()),
            })
            .unwrap(),
        ],
        expected_lifecycle_semantics: vec![semantic(Some("op-1")), semantic(None)],
        ..ScenarioExpectationFields::default()
    })
    .unwrap()
}

fn codes(issues: &[esl_replay::evidence::Issue]) -> Vec<&'static str> {
    issues.iter().map(|issue| issue.code.as_str()).collect()
}

#[test]
fn worked_example_reproduces_the_reference_bundle_in_reference_mode() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), Backend::Log, &worked_example());
    let bundle = Engine::reference()
        .reconstruct(&*store, &worked_window())
        .unwrap();

    let manifest = &bundle.manifest;
    assert_eq!(manifest.record_count, 5);
    assert_eq!(manifest.first_append_sequence, Some(1));
    assert_eq!(manifest.last_append_sequence, Some(5));
    assert_eq!(manifest.verdict.posture, VerdictPosture::Insufficient);
    let issues = &manifest.verdict.issues;
    assert_eq!(
        codes(issues),
        [
            "retry_posture_changed",
            "terminal_publication_snapshot_incomplete"
        ]
    );
    assert_eq!(issues[0].kind, IssueKind::Ambiguity);
    assert_eq!(
        (
            issues[0].append_sequence,
            issues[0].artifact_name.as_deref()
        ),
        (Some(4), Some("bgapi.complete"))
    );
    assert_eq!(issues[1].kind, IssueKind::Insufficient);
    assert_eq!(
        (
            issues[1].append_sequence,
            issues[1].artifact_name.as_deref()
        ),
        (Some(5), Some("event.raw"))
    );

    let snapshot = &bundle.continuity_snapshot;
    let generations: Vec<_> = snapshot
        .recovery_generations
        .iter()
        .map(|g| {
            (
                g.generation_id.as_str(),
                g.append_sequence,
                g.artifact_name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        generations,
        [("gen-1", 1, "bgapi.dispatch"), ("gen-2", 3, "event.raw")]
    );
    assert_eq!(
        snapshot.replay_continuity_posture.as_deref(),
        Some("continuous")
    );
    assert_eq!(snapshot.retry_posture.as_deref(), Some("retrying"));
    assert_eq!(snapshot.drain_posture.as_deref(), Some("not_draining"));
    assert_eq!(snapshot.reconstruction_posture.as_deref(), Some("bounded"));
    assert_eq!(snapshot.last_observed_append_sequence, Some(5));

    // The reference splits job-1 from op-1 (its operation identity falls back to job_uuid).
    let ids: Vec<_> = bundle
        .operations
        .iter()
        .map(|o| o.operation_id.as_str())
        .collect();
    assert_eq!(ids, ["job-1", "op-1"]);
    let job = &bundle.operations[0];
    assert_eq!(job.operation_kind, None);
    assert_eq!(job.bgapi_job_uuid.as_deref(), Some("job-1"));
    assert_eq!(job.accepted_append_sequence, Some(2));
    assert_eq!(job.final_state.as_deref(), Some("accepted"));
    let op = &bundle.operations[1];
    assert_eq!(op.operation_kind.as_deref(), Some("bgapi"));
    assert_eq!(op.accepted_append_sequence, Some(1));
    let states: Vec<_> = op
        .observed_states
        .iter()
        .map(|s| (s.state.as_str(), s.append_sequence))
        .collect();
    assert_eq!(states, [("accepted", 1), ("completed", 4)]);
    assert_eq!(op.retry_posture.as_deref(), Some("retrying"));
    assert_eq!(op.drain_posture.as_deref(), Some("not_draining"));

    let json = export_bundle(&bundle);
    assert!(json.contains(
        r#""facts":{"a_fact":{"x":1,"y":2},"terminal_publication_id":"pub-1","terminal_publication_status":"published","z_fact":1}"#
    ), "{json}");
    assert!(json.contains(
        r#""checkpoint_metadata":{"recovery_generation_id":"gen-1","replay_session_id":"replay-1"}"#
    ));
    assert!(json.contains(
        r#"{"record_id":"rec-1","append_sequence":1,"artifact_name":"bgapi.dispatch","capture_timestamp":"2024-01-15T10:00:01.000+00:00"}"#
    ));
    assert!(json.contains(
        r#""observed_states":[{"append_sequence":2,"artifact_name":"bgapi.ack","state":"accepted"}]"#
    ));
    assert!(
        json.contains(r#""facts":{"lifecycle_semantic":"runtime_terminal","posture":"observed"}"#)
    );

    // With the upstream wording of the two issues, the bundle id is the reference's own:
    // every byte of the hashed bundle and window matches.
    let mut with_reference_wording = bundle.clone();
    let mut manifest = with_reference_wording.manifest.into_fields();
    manifest.verdict.issues = manifest
        .verdict
        .issues
        .into_iter()
        .map(|issue| {
            let message = REFERENCE_MESSAGES
                .iter()
                .find(|(code, _)| *code == issue.code)
                .unwrap()
                .1;
            let fields = IssueFields {
                message: message.into(),
                ..issue.into_fields()
            };
            esl_replay::evidence::Issue::new(fields).unwrap()
        })
        .collect();
    with_reference_wording.manifest = esl_replay::evidence::Manifest::new(manifest).unwrap();
    // The reference hashes the checkpoint metadata in the order it was given (here replay
    // session, then generation) and we hash it sorted, as both export it, so that the id can
    // be checked from the bundle alone. Apart from that order, the hashed bytes are the
    // reference's own: with its order they give its id.
    let mut pending = with_reference_wording.clone();
    let mut fields = pending.manifest.into_fields();
    fields.bundle_id = "pending".into();
    pending.manifest = esl_replay::evidence::Manifest::new(fields).unwrap();
    let body = export_bundle(&pending);
    let hash_of = |metadata: &str| -> String {
        use sha2::{Digest as _, Sha256};
        let input = format!(
            r#"{{"window":{{"from_last_consumed_sequence":0,"from_byte_offset_hint":0,"until_append_sequence":5,"checkpoint_key":"worker-a","checkpoint_metadata":{metadata}}},"continuity_snapshot":{body}}}"#
        );
        Sha256::digest(input.as_bytes())
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    };
    assert_eq!(
        hash_of(r#"{"replay_session_id":"replay-1","recovery_generation_id":"gen-1"}"#),
        REFERENCE_BUNDLE_ID
    );
    assert_eq!(
        bundle_id(&with_reference_wording),
        hash_of(r#"{"recovery_generation_id":"gen-1","replay_session_id":"replay-1"}"#)
    );
    // Our own wording gives our own, equally deterministic, id.
    assert_eq!(bundle.manifest.bundle_id, bundle_id(&bundle));
    assert_ne!(bundle.manifest.bundle_id, REFERENCE_BUNDLE_ID);
}

#[test]
fn worked_example_comparison_matches_the_reference_export() {
    let records = worked_example();
    let bundle = Engine::reference()
        .reconstruct_records(&records, &worked_window())
        .unwrap();
    let result = compare_scenario(&bundle, &worked_expectation()).unwrap();
    assert!(!result.passed);
    assert_eq!(
        codes(&result.issues),
        [
            "retry_posture_mismatch",
            "missing_operation_lifecycle",
            "lifecycle_semantic_mismatch"
        ]
    );
    // The reference export with our messages and our bundle id put in is byte-identical.
    let reference = r#"{"scenario_name":"sc19-example","passed":false,"bundle_id":"ID","issues":[{"kind":"mismatch","code":"retry_posture_mismatch","message":"M0","append_sequence":null,"artifact_name":null,"details":{"actual":"retrying","expected":"stable"}},{"kind":"mismatch","code":"missing_operation_lifecycle","message":"M1","append_sequence":null,"artifact_name":null,"details":[]},{"kind":"mismatch","code":"lifecycle_semantic_mismatch","message":"M2","append_sequence":null,"artifact_name":null,"details":{"actual_posture":null,"expected_posture":"observed","operation_id":null,"semantic":"runtime_terminal"}}]}"#;
    let mut expected = reference.replace("ID", &bundle.manifest.bundle_id);
    for (index, issue) in result.issues.iter().enumerate() {
        let message_json = serde_json::to_string(&issue.message).unwrap();
        expected = expected.replace(&format!("\"M{index}\""), &message_json);
    }
    assert_eq!(export_comparison(&result), expected);
}

#[test]
fn worked_example_with_decision_c9_keeps_job_1_in_op_1() {
    let records = worked_example();
    let bundle = Engine::new()
        .reconstruct_records(&records, &worked_window())
        .unwrap();
    // Same verdict, issues, generations and postures as the reference ...
    assert_eq!(
        bundle.manifest.verdict.posture,
        VerdictPosture::Insufficient
    );
    assert_eq!(
        codes(&bundle.manifest.verdict.issues),
        [
            "retry_posture_changed",
            "terminal_publication_snapshot_incomplete"
        ]
    );
    // ... but the acknowledgement (job-1, no operation_id) joins op-1, whose background
    // job UUID it carries, instead of opening an operation of its own.
    assert_eq!(bundle.operations.len(), 1);
    let op = &bundle.operations[0];
    assert_eq!(op.operation_id, "op-1");
    let states: Vec<_> = op
        .observed_states
        .iter()
        .map(|s| {
            (
                s.state.as_str(),
                s.append_sequence,
                s.artifact_name.as_str(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("accepted", 1, "bgapi.dispatch"),
            ("accepted", 2, "bgapi.ack"),
            ("completed", 4, "bgapi.complete")
        ]
    );
    assert_eq!(op.accepted_append_sequence, Some(1));
    assert_eq!(
        bundle.terminal_publications[0].operation_id.as_deref(),
        Some("op-1")
    );

    let result = compare_scenario(&bundle, &worked_expectation()).unwrap();
    assert_eq!(
        codes(&result.issues),
        [
            "retry_posture_mismatch",
            "operation_state_sequence_mismatch",
            "missing_operation_lifecycle",
            "lifecycle_semantic_mismatch"
        ]
    );
    assert_eq!(
        Value::Object(result.issues[1].details.clone()),
        json!({"operation_id": "op-1", "expected": ["accepted", "completed"], "actual": ["accepted", "accepted", "completed"]})
    );
}

#[test]
fn empty_window_exports_the_reference_layout() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), Backend::Log, &[]);
    let bundle = Engine::new()
        .reconstruct(&*store, &ReconstructionWindow::default())
        .unwrap();
    assert_eq!(bundle.manifest.record_count, 0);
    assert_eq!(
        bundle.manifest.verdict.posture,
        VerdictPosture::Insufficient
    );
    assert_eq!(
        codes(&bundle.manifest.verdict.issues),
        [
            "no_records_in_window",
            "missing_recovery_generation_evidence"
        ]
    );
    let json = export_bundle(&bundle);
    let prefix = format!(
        r#"{{"manifest":{{"bundle_version":1,"bundle_id":"{}","window":{{"from_last_consumed_sequence":0,"from_byte_offset_hint":0,"until_append_sequence":null,"criteria":null,"batch_limit":100,"checkpoint_key":null,"checkpoint_metadata":[]}},"record_count":0,"first_append_sequence":null,"last_append_sequence":null,"verdict":{{"posture":"insufficient","issues":[{{"kind":"insufficient","code":"no_records_in_window","message":"#,
        bundle.manifest.bundle_id
    );
    assert!(json.starts_with(&prefix), "{json}");
    assert!(json.ends_with(r#""continuity_snapshot":{"recovery_generations":[],"replay_continuity_posture":null,"retry_posture":null,"drain_posture":null,"reconstruction_posture":null,"last_observed_append_sequence":null},"record_references":[],"operations":[],"terminal_publications":[],"lifecycle_semantics":[]}"#), "{json}");
    assert!(!json.ends_with('\n'));
}

/// EvidenceBundleSerializerTest: two exports are identical; metadata `{b, a}` is written
/// sorted.
#[test]
fn bundle_serialization_is_deterministic() {
    let records =
        records(&[Spec::new("event.raw").flags(json!({"recovery_generation_id": "gen-1"}))]);
    let window = ReconstructionWindow::new(ReconstructionWindowFields {
        checkpoint_key: Some("k".into()),
        checkpoint_metadata: map(json!({"b": 2, "a": 1})),
        ..ReconstructionWindowFields::default()
    })
    .unwrap();
    let first = Engine::new()
        .reconstruct_records(&records, &window)
        .unwrap();
    let second = Engine::new()
        .reconstruct_records(&records, &window)
        .unwrap();
    let json = export_bundle(&first);
    assert_eq!(json, export_bundle(&second));
    assert_eq!(json, export_bundle(&first));
    assert!(
        json.contains(r#""checkpoint_metadata":{"a":1,"b":2}"#),
        "{json}"
    );
    // The id hashes the metadata sorted, as the bundle writes it (the reference hashes it in
    // insertion order), so {a, b} is the same window with the same id and bytes.
    let reordered = ReconstructionWindow::new(ReconstructionWindowFields {
        checkpoint_metadata: map(json!({"a": 1, "b": 2})),
        ..window.into_fields()
    })
    .unwrap();
    let third = Engine::new()
        .reconstruct_records(&records, &reordered)
        .unwrap();
    assert_eq!(third.manifest.bundle_id, first.manifest.bundle_id);
    assert_eq!(export_bundle(&third), json);
}

/// Two records carrying full runtime snapshots, as the reference's engine test builds them.
fn enriched_records() -> Vec<esl_replay::record::Record> {
    records(&[
        Spec::new("bgapi.dispatch").job("job-1").payload(json!({
            "prepared_recovery_context": {"recovery_generation_id": "gen-1"},
            "runtime_recovery_snapshot": {
                "replay_continuity_posture": "continuous",
                "retry_posture": "stable",
                "drain_posture": "not_draining",
                "reconstruction_posture": "bounded"
            },
            "runtime_operation_snapshot": {
                "operation_id": "op-1", "operation_kind": "bgapi",
                "operation_state": "accepted", "bgapi_job_uuid": "job-1"
            }
        })),
        Spec::new("bgapi.complete").job("job-1").payload(json!({
            "prepared_recovery_context": {"recovery_generation_id": "gen-1"},
            "runtime_operation_snapshot": {"operation_id": "op-1", "operation_state": "completed"},
            "runtime_terminal_publication_snapshot": {
                "terminal_publication_id": "pub-1", "terminal_publication_status": "published"
            },
            "runtime_lifecycle_semantic_snapshot": {
                "lifecycle_semantic": "runtime_terminal", "posture": "observed"
            }
        })),
    ])
}

fn full_expectation() -> ScenarioExpectation {
    ScenarioExpectation::new(ScenarioExpectationFields {
        scenario_name: "enriched".into(),
        expected_recovery_generations: vec!["gen-1".into()],
        expected_replay_continuity_posture: Some("continuous".into()),
        expected_retry_posture: Some("stable".into()),
        expected_drain_posture: Some("not_draining".into()),
        expected_reconstruction_posture: Some("bounded".into()),
        expected_operations: vec![
            ExpectedOperationLifecycle::new(ExpectedOperationLifecycleFields {
                operation_id: "op-1".into(),
                states: vec!["accepted".into(), "completed".into()],
                final_state: Some("completed".into()),
                retry_posture: Some("stable".into()),
                drain_posture: Some("not_draining".into()),
            })
            .unwrap(),
        ],
        expected_terminal_publications: vec![
            ExpectedTerminalPublication::new(ExpectedTerminalPublicationFields {
                publication_id: "pub-1".into(),
                status: "published".into(),
                operation_id: Some("op-1".into()),
            })
            .unwrap(),
        ],
        expected_lifecycle_semantics: vec![
            ExpectedLifecycleSemantic::new(ExpectedLifecycleSemanticFields {
                semantic: "runtime_terminal".into(),
                posture: "observed".into(),
                operation_id: Some("op-1".into()),
            })
            .unwrap(),
        ],
    })
    .unwrap()
}

/// RecoveryEvidenceEngineTest.
#[test]
fn reconstructs_bounded_runtime_truth_from_stored_records() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), Backend::Log, &enriched_records());
    let bundle = Engine::new()
        .reconstruct(&*store, &ReconstructionWindow::default())
        .unwrap();
    assert_eq!(bundle.manifest.verdict.posture, VerdictPosture::Complete);
    assert!(bundle.manifest.verdict.issues.is_empty());
    let generations: Vec<_> = bundle
        .continuity_snapshot
        .recovery_generations
        .iter()
        .map(|g| g.generation_id.as_str())
        .collect();
    assert_eq!(generations, ["gen-1"]);
    assert_eq!(
        bundle
            .continuity_snapshot
            .replay_continuity_posture
            .as_deref(),
        Some("continuous")
    );
    assert_eq!(bundle.operations.len(), 1);
    let states: Vec<_> = bundle.operations[0]
        .observed_states
        .iter()
        .map(|s| s.state.as_str())
        .collect();
    assert_eq!(states, ["accepted", "completed"]);
    assert_eq!(bundle.terminal_publications.len(), 1);
    assert_eq!(bundle.lifecycle_semantics.len(), 1);
}

/// RecoveryEvidenceEngineTest.
#[test]
fn reconstruct_fails_closed_when_operation_identity_is_missing() {
    let records = records(&[Spec::new("event.raw").payload(json!({
        "prepared_recovery_context": {"recovery_generation_id": "gen-1"},
        "runtime_operation_snapshot": {"operation_state": "accepted"}
    }))]);
    let bundle = Engine::new()
        .reconstruct_records(&records, &ReconstructionWindow::default())
        .unwrap();
    assert_eq!(
        bundle.manifest.verdict.posture,
        VerdictPosture::Insufficient
    );
    assert_eq!(
        bundle.manifest.verdict.issues[0].code,
        IssueCode::OperationStateWithoutIdentity
    );
    assert!(bundle.operations.is_empty());
}

/// RecoveryEvidenceEngineTest.
#[test]
fn compare_scenario_produces_machine_readable_result() {
    let bundle = Engine::new()
        .reconstruct_records(&enriched_records(), &ReconstructionWindow::default())
        .unwrap();
    let result = compare_scenario(&bundle, &full_expectation()).unwrap();
    assert!(result.passed, "{:?}", result.issues);
    assert!(result.issues.is_empty());
    assert_eq!(result.bundle_id, bundle.manifest.bundle_id);
    assert_eq!(result.scenario_name, "enriched");
    let json: Value = serde_json::from_str(&export_comparison(&result)).unwrap();
    assert_eq!(json["passed"], json!(true));
    assert_eq!(json["issues"], json!([]));
}

fn checkpoint(metadata: Value) -> Checkpoint {
    Checkpoint::new(
        "worker-a",
        ReadCursor::new(0, None),
        datetime!(2024-01-15 10:00 UTC),
        map(metadata),
    )
    .unwrap()
}

/// RecoveryEvidenceEngineTest.
#[test]
fn checkpoint_window_resolver_rejects_contradictory_generation_identity() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(
        dir.path(),
        Backend::Log,
        &records(&[Spec::new("event.raw").flags(json!({"recovery_generation_id": "gen-2"}))]),
    );
    let error = resolve_checkpoint_window(
        &*store,
        &checkpoint(json!({"recovery_generation_id": "gen-1"})),
        None,
        None,
        100,
    )
    .unwrap_err();
    assert!(matches!(
        error,
        Error::CheckpointContradiction {
            field: "recovery_generation_id",
            sequence: 1,
            ..
        }
    ));
    assert!(
        error
            .to_string()
            .contains("expected recovery_generation_id gen-1, observed gen-2"),
        "{error}"
    );
}

#[test]
#[cfg(feature = "sqlite")]
fn checkpoint_window_resolver_rejects_contradictory_replay_session() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(
        dir.path(),
        Backend::Sqlite,
        &records(&[Spec::new("event.raw").correlation(json!({"replay_session_id": "replay-2"}))]),
    );
    let error = resolve_checkpoint_window(
        &*store,
        &checkpoint(json!({"replay_session_id": "replay-1"})),
        None,
        None,
        100,
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("expected replay_session_id replay-1, observed replay-2"),
        "{error}"
    );
}

#[test]
fn checkpoint_window_resolver_checks_only_the_first_visible_record_and_present_values() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(
        dir.path(),
        Backend::Log,
        &records(&[
            Spec::new("event.raw").flags(json!({"recovery_generation_id": "gen-0"})),
            Spec::new("event.raw"),
            Spec::new("event.raw").flags(json!({"recovery_generation_id": "gen-2"})),
        ]),
    );
    // From sequence 1 the first visible record (2) has no generation: nothing to contradict.
    let resumed = Checkpoint::new(
        "worker-a",
        ReadCursor::new(1, None),
        datetime!(2024-01-15 10:00 UTC),
        map(json!({"recovery_generation_id": "gen-1", "replay_session_id": 7})),
    )
    .unwrap();
    let window = resolve_checkpoint_window(&*store, &resumed, None, None, 10).unwrap();
    assert_eq!(window.from.last_consumed_sequence(), 1);
    // A metadata value that is not a string is not checked.
    assert_eq!(window.checkpoint_metadata["replay_session_id"], json!(7));
}

/// RecoveryEvidenceEngineTest.
#[test]
fn checkpoint_window_resolver_preserves_lookup_metadata_and_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let checkpoints = CheckpointStore::open(dir.path().join("checkpoints")).unwrap();
    let saved = Checkpoint::new(
        "worker-a",
        ReadCursor::new(3, Some(128)),
        datetime!(2024-01-15 10:00 UTC),
        map(json!({"replay_session_id": "replay-1", "recovery_generation_id": "gen-1", "attempt": 2})),
    )
    .unwrap();
    checkpoints.save(&saved).unwrap();
    let loaded = checkpoints.load("worker-a").unwrap().unwrap();
    let store = store_with(dir.path(), Backend::Log, &[]);
    let criteria = Criteria::new(CriteriaFields {
        replay_session_id: Some("replay-1".into()),
        ..CriteriaFields::default()
    })
    .unwrap();
    let window =
        resolve_checkpoint_window(&*store, &loaded, Some(criteria.clone()), Some(10), 25).unwrap();
    assert_eq!(window.checkpoint_key.as_deref(), Some("worker-a"));
    assert_eq!(&window.checkpoint_metadata, loaded.metadata());
    assert_eq!(window.until_append_sequence, Some(10));
    assert_eq!(window.batch_limit, 25);
    assert_eq!(window.criteria, Some(criteria));
    assert_eq!(window.from, ReadCursor::new(3, Some(128)));
}

#[test]
fn posture_changes_are_ambiguous_and_the_last_value_wins() {
    let records = records(&[
        Spec::new("event.raw").flags(json!({"recovery_generation_id": "g", "drain_posture": "not_draining"})),
        Spec::new("event.raw").flags(json!({"drain_posture": "draining", "replay_continuity_posture": "gap"})),
        Spec::new("event.raw").flags(json!({"drain_posture": "draining", "replay_continuity_posture": "continuous", "reconstruction_posture": "bounded"})),
        Spec::new("event.raw").flags(json!({"reconstruction_posture": "unbounded"})),
    ]);
    let bundle = Engine::new()
        .reconstruct_records(&records, &ReconstructionWindow::default())
        .unwrap();
    assert_eq!(bundle.manifest.verdict.posture, VerdictPosture::Partial);
    let found: Vec<_> = bundle
        .manifest
        .verdict
        .issues
        .iter()
        .map(|i| (i.code.as_str(), i.append_sequence))
        .collect();
    assert_eq!(
        found,
        [
            ("drain_posture_changed", Some(2)),
            ("replay_continuity_posture_changed", Some(3)),
            ("reconstruction_posture_changed", Some(4))
        ]
    );
    let snapshot = &bundle.continuity_snapshot;
    assert_eq!(snapshot.drain_posture.as_deref(), Some("draining"));
    assert_eq!(
        snapshot.reconstruction_posture.as_deref(),
        Some("unbounded")
    );
}

#[test]
fn generations_are_recorded_on_every_change() {
    let records = records(&[
        Spec::new("event.raw").flags(json!({"recovery_generation_id": "A"})),
        Spec::new("event.raw").flags(json!({"recovery_generation_id": "A"})),
        Spec::new("event.raw").payload(json!({"replay_metadata": {"generation_id": "B"}})),
        Spec::new("event.raw").correlation(json!({"recovery_generation_id": "A"})),
    ]);
    let bundle = Engine::new()
        .reconstruct_records(&records, &ReconstructionWindow::default())
        .unwrap();
    let generations: Vec<_> = bundle
        .continuity_snapshot
        .recovery_generations
        .iter()
        .map(|g| (g.generation_id.as_str(), g.append_sequence))
        .collect();
    assert_eq!(generations, [("A", 1), ("B", 3), ("A", 4)]);
    assert_eq!(bundle.manifest.verdict.posture, VerdictPosture::Complete);
}

#[test]
fn incomplete_and_empty_snapshots_are_insufficient() {
    let records = records(&[
        Spec::new("event.raw")
            .flags(json!({"recovery_generation_id": "g"}))
            .payload(json!({"runtime_lifecycle_semantic_snapshot": {"semantic": "s"}})),
        Spec::new("event.raw").payload(json!({"runtime_terminal_publication_snapshot": {}})),
        Spec::new("event.raw").payload(
            json!({"runtime_lifecycle_semantic_snapshot": {"semantic": "s", "state": "via-alias"}}),
        ),
    ]);
    let bundle = Engine::new()
        .reconstruct_records(&records, &ReconstructionWindow::default())
        .unwrap();
    assert_eq!(
        codes(&bundle.manifest.verdict.issues),
        [
            "lifecycle_semantic_snapshot_incomplete",
            "terminal_publication_snapshot_incomplete"
        ]
    );
    assert_eq!(bundle.lifecycle_semantics.len(), 1);
    assert_eq!(bundle.lifecycle_semantics[0].posture, "via-alias");
}

#[test]
fn a_blank_job_uuid_is_absent_instead_of_aborting() {
    let records = records(&[Spec::new("api.dispatch")
        .job("  ")
        .flags(json!({"recovery_generation_id": "g"}))]);
    let bundle = Engine::new()
        .reconstruct_records(&records, &ReconstructionWindow::default())
        .unwrap();
    assert!(bundle.operations.is_empty());
    assert_eq!(
        codes(&bundle.manifest.verdict.issues),
        ["operation_state_without_identity"]
    );
}

#[test]
fn operations_sort_numeric_ids_numerically() {
    let records = records(&[
        Spec::new("api.dispatch")
            .job("10")
            .flags(json!({"recovery_generation_id": "g"})),
        Spec::new("api.dispatch").job("9"),
        Spec::new("api.dispatch").job("b"),
        Spec::new("api.dispatch").job("A"),
    ]);
    let bundle = Engine::new()
        .reconstruct_records(&records, &ReconstructionWindow::default())
        .unwrap();
    let ids: Vec<_> = bundle
        .operations
        .iter()
        .map(|o| o.operation_id.as_str())
        .collect();
    assert_eq!(ids, ["9", "10", "A", "b"]);
}

#[test]
#[cfg(feature = "sqlite")]
fn the_window_bounds_and_criteria_select_the_records() {
    let specs: Vec<Spec> = (0..10)
        .map(|n| {
            Spec::new(if n % 2 == 0 { "event.raw" } else { "bgapi.ack" })
                .flags(json!({"recovery_generation_id": "g"}))
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let store = store_with(dir.path(), Backend::Sqlite, &records(&specs));
    let window = ReconstructionWindow::new(ReconstructionWindowFields {
        from: ReadCursor::new(2, None),
        until_append_sequence: Some(8),
        criteria: Some(
            Criteria::new(CriteriaFields {
                artifact_name: Some("event.raw".into()),
                ..CriteriaFields::default()
            })
            .unwrap(),
        ),
        batch_limit: 1,
        ..ReconstructionWindowFields::default()
    })
    .unwrap();
    let bundle = Engine::new().reconstruct(&*store, &window).unwrap();
    let sequences: Vec<_> = bundle
        .record_references
        .iter()
        .map(|r| r.append_sequence)
        .collect();
    assert_eq!(sequences, [3, 5, 7]);
    assert_eq!(bundle.manifest.first_append_sequence, Some(3));
    assert_eq!(bundle.manifest.last_append_sequence, Some(7));
}

#[test]
fn evidence_types_reject_invalid_values() {
    let window = |fields: ReconstructionWindowFields| ReconstructionWindow::new(fields);
    assert!(matches!(
        window(ReconstructionWindowFields {
            batch_limit: 0,
            ..ReconstructionWindowFields::default()
        }),
        Err(Error::InvalidBatchLimit)
    ));
    assert!(matches!(
        window(ReconstructionWindowFields {
            from: ReadCursor::new(5, None),
            until_append_sequence: Some(5),
            ..ReconstructionWindowFields::default()
        }),
        Err(Error::UntilNotAfterFrom { until: 5, from: 5 })
    ));
    assert!(matches!(
        window(ReconstructionWindowFields {
            until_append_sequence: Some(0),
            ..ReconstructionWindowFields::default()
        }),
        Err(Error::SequenceOutOfRange { .. })
    ));
    assert!(matches!(
        window(ReconstructionWindowFields {
            checkpoint_key: Some(" \t".into()),
            ..ReconstructionWindowFields::default()
        }),
        Err(Error::BlankField {
            field: "checkpoint_key",
            ..
        })
    ));
    assert!(matches!(
        ExpectedOperationLifecycle::new(ExpectedOperationLifecycleFields {
            operation_id: "op".into(),
            states: vec![],
            final_state: None,
            retry_posture: None,
            drain_posture: None,
        }),
        Err(Error::EmptyExpectedStates { .. })
    ));
    assert!(matches!(
        ScenarioExpectation::new(ScenarioExpectationFields::default()),
        Err(Error::BlankField {
            field: "scenario_name",
            ..
        })
    ));
    assert!(matches!(
        esl_replay::evidence::Issue::new(IssueFields {
            kind: IssueKind::Insufficient,
            code: IssueCode::NoRecordsInWindow,
            message: "m".into(),
            append_sequence: Some(0),
            artifact_name: None,
            details: Default::default(),
        }),
        Err(Error::SequenceOutOfRange { .. })
    ));
}

/// The worked example's bundle, exported.
fn worked_bundle_json() -> String {
    let bundle = Engine::new()
        .reconstruct_records(&worked_example(), &worked_window())
        .unwrap();
    export_bundle(&bundle)
}

#[test]
fn exported_bundles_read_back_identically() {
    let bundle = Engine::new()
        .reconstruct_records(&worked_example(), &worked_window())
        .unwrap();
    let json = export_bundle(&bundle);
    let parsed = parse_bundle(&json).unwrap();
    assert_eq!(export_bundle(&parsed), json);
    assert_eq!(parsed.manifest.bundle_id, bundle.manifest.bundle_id);
    assert!(matches!(
        parse_bundle(&json.replace("\"bundle_version\":1", "\"bundle_version\":2")),
        Err(Error::UnsupportedBundleVersion { version: 2 })
    ));
    // Readers accept an empty map written `{}` as well as PHP's `[]`.
    assert!(json.contains(r#""details":[]"#));
    let with_objects = json.replace(r#""details":[]"#, r#""details":{}"#);
    assert_eq!(export_bundle(&parse_bundle(&with_objects).unwrap()), json);
    let error =
        parse_bundle(&json.replace("\"record_count\":5", "\"record_count\":\"5\"")).unwrap_err();
    assert!(
        error.to_string().contains("manifest.record_count"),
        "{error}"
    );
}

/// Reads `json` with one value replaced (or removed, for `None`) at a `/`-separated pointer.
fn parse_changed(json: &str, pointer: &str, value: Option<Value>) -> Result<(), Error> {
    let mut bundle: Value = serde_json::from_str(json).unwrap();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = bundle.pointer_mut(parent).unwrap();
    match (parent, value) {
        (Value::Object(map), Some(value)) => {
            map.insert(key.to_owned(), value);
        }
        (Value::Object(map), None) => {
            map.shift_remove(key);
        }
        (Value::Array(items), Some(value)) => items[key.parse::<usize>().unwrap()] = value,
        (Value::Array(items), None) => {
            items.remove(key.parse::<usize>().unwrap());
        }
        _ => panic!("{pointer} is not inside an object or a list"),
    }
    parse_bundle(&bundle.to_string()).map(|_| ())
}

fn malformed_at(result: Result<(), Error>) -> (String, String) {
    match result {
        Err(Error::Malformed { path, reason, .. }) => (path, reason),
        other => panic!("expected a malformed bundle, got {other:?}"),
    }
}

/// The bundle reader keeps every rule of the hand-written reader it replaced where serde's
/// derive alone would differ: `null` is accepted but a missing key is not (the derive reads
/// a missing `Option` as `None`), PHP's `{}` for an empty list and lists for maps are read,
/// and a list where an object belongs is refused (the derive reads a struct from a list of
/// its fields in order). Every failure names the path and what is wrong there.
#[test]
fn bundle_reader_keeps_the_reference_reading_rules() {
    let json = worked_bundle_json();

    // `null` is an absent value (read, then refused here because the references give a
    // first sequence); a missing key is an error naming the key.
    assert!(matches!(
        parse_changed(&json, "/manifest/first_append_sequence", Some(Value::Null)),
        Err(Error::InconsistentBundle { path, .. }) if path == "manifest.first_append_sequence"
    ));
    assert_eq!(
        malformed_at(parse_changed(
            &json,
            "/manifest/first_append_sequence",
            None
        )),
        ("manifest.first_append_sequence".into(), "missing".into())
    );
    assert_eq!(
        malformed_at(parse_changed(
            &json,
            "/manifest/window/from_byte_offset_hint",
            None
        )),
        (
            "manifest.window.from_byte_offset_hint".into(),
            "missing".into()
        )
    );
    let (path, reason) = malformed_at(parse_changed(
        &json,
        "/manifest/window/from_last_consumed_sequence",
        Some(json!("0")),
    ));
    assert_eq!(path, "manifest.window");
    assert!(
        reason.starts_with("from_last_consumed_sequence: "),
        "{reason}"
    );

    // Unknown keys are ignored.
    assert!(parse_changed(&json, "/manifest/verdict/extra", Some(json!({"a": 1}))).is_ok());

    // An empty list may be written `{}`, but a non-empty object is not a list.
    assert!(json.contains(r#""issues":[]"#));
    let parsed = parse_bundle(&json.replace(r#""issues":[]"#, r#""issues":{}"#)).unwrap();
    assert_eq!(parsed, parse_bundle(&json).unwrap());
    let (path, _) = malformed_at(parse_changed(
        &json,
        "/terminal_publications",
        Some(json!({"a": 1})),
    ));
    assert_eq!(path, "terminal_publications");

    // A map written as a list is keyed "0", "1", ... (PHP writes a map so keyed as a list,
    // and either form reads as the same map, with the same id).
    let window = ReconstructionWindow::new(ReconstructionWindowFields {
        checkpoint_metadata: map(json!({"0": "a", "1": "b"})),
        ..ReconstructionWindowFields::default()
    })
    .unwrap();
    let with_list = export_bundle(
        &Engine::new()
            .reconstruct_records(&worked_example(), &window)
            .unwrap(),
    );
    assert!(with_list.contains(r#""checkpoint_metadata":["a","b"]"#));
    for text in [
        with_list.clone(),
        with_list.replace(
            r#""checkpoint_metadata":["a","b"]"#,
            r#""checkpoint_metadata":{"0":"a","1":"b"}"#,
        ),
    ] {
        let parsed = parse_bundle(&text).unwrap();
        assert_eq!(
            parsed.manifest.window.checkpoint_metadata,
            map(json!({"0": "a", "1": "b"}))
        );
    }
    let (path, reason) = malformed_at(parse_changed(
        &json,
        "/manifest/verdict/issues/0/details",
        Some(json!("x")),
    ));
    assert_eq!(path, "manifest.verdict.issues[0].details");
    assert!(reason.contains("expected an object or a list"), "{reason}");

    // An object written as the list of its values is refused.
    let mut reference: Value = serde_json::from_str(&json).unwrap();
    let fields: Vec<Value> = reference["record_references"][0]
        .as_object()
        .unwrap()
        .values()
        .cloned()
        .collect();
    reference["record_references"][0] = Value::Array(fields);
    let (path, _) = malformed_at(parse_bundle(&reference.to_string()).map(|_| ()));
    assert_eq!(path, "record_references[0]");

    // Names, timestamps, numbers and the rules of the evidence types are checked where
    // they stand.
    for (pointer, value, path, fragment) in [
        (
            "/manifest/verdict/posture",
            json!("done"),
            "manifest.verdict.posture",
            "unknown verdict posture \"done\"",
        ),
        (
            "/record_references/1/capture_timestamp",
            json!("yesterday"),
            "record_references[1].capture_timestamp",
            "yesterday",
        ),
        (
            "/record_references/0/record_id",
            json!(" "),
            "record_references[0]",
            "`record_id` must not be blank",
        ),
        (
            "/manifest/record_count",
            json!(1.0),
            "manifest.record_count",
            "expected u64",
        ),
    ] {
        let (at, reason) = malformed_at(parse_changed(&json, pointer, Some(value)));
        assert_eq!(at, path);
        assert!(reason.contains(fragment), "{reason}");
    }
}
