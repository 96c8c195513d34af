//! Evidence bundles are byte-stable: the same records give the same bytes on every run, on
//! both backends, and whatever order the keys of their stored maps are in.

use esl_replay::evidence::{
    Engine, ExpectedLifecycleSemantic, ExpectedLifecycleSemanticFields, ExpectedOperationLifecycle,
    ExpectedOperationLifecycleFields, ExpectedTerminalPublication,
    ExpectedTerminalPublicationFields, ReconstructionWindow, ReconstructionWindowFields,
    ScenarioExpectation, ScenarioExpectationFields, VerdictPosture, bundle_id, compare_scenario,
    export_bundle, export_comparison,
};
use esl_replay::record::{JsonMap, Record};
use quickcheck::{Arbitrary, Gen, QuickCheck};
use rand::seq::SliceRandom as _;
use rand::{SeedableRng as _, rngs::StdRng};
use serde_json::{Value, json};

use crate::support::evidence::{
    BACKENDS, Spec, record, records, store_with, worked_example, worked_window,
};
use crate::support::map;

fn complete_records() -> Vec<Record> {
    records(&[
        Spec::new("bgapi.dispatch").job("job-7").payload(json!({
            "prepared_recovery_context": {"recovery_generation_id": "gen-1"},
            "runtime_recovery_snapshot": {"replay_continuity_posture": "continuous", "retry_posture": "stable"},
            "runtime_operation_snapshot": {"operation_id": "op-7", "operation_state": "accepted"}
        })),
        Spec::new("bgapi.ack").job("job-7"),
        Spec::new("bgapi.complete").job("job-7").payload(json!({
            "runtime_operation_snapshot": {"operation_id": "op-7", "operation_state": "completed"},
            "runtime_terminal_publication_snapshot": {"publication_id": "pub-7", "status": "published", "extra": {"b": [1, {"d": 1, "c": 2}], "a": "é/x"}},
            "runtime_lifecycle_semantic_snapshot": {"semantic": "runtime_terminal", "posture": "observed"}
        })),
    ])
}

fn complete_expectation() -> ScenarioExpectation {
    ScenarioExpectation::new(ScenarioExpectationFields {
        scenario_name: "adapters".into(),
        expected_recovery_generations: vec!["gen-1".into()],
        expected_replay_continuity_posture: Some("continuous".into()),
        expected_retry_posture: Some("stable".into()),
        expected_operations: vec![
            ExpectedOperationLifecycle::new(ExpectedOperationLifecycleFields {
                operation_id: "op-7".into(),
                // The acknowledgement joins op-7 through its job UUID (decision C9).
                states: vec!["accepted".into(), "accepted".into(), "completed".into()],
                final_state: Some("completed".into()),
                retry_posture: Some("stable".into()),
                drain_posture: None,
            })
            .unwrap(),
        ],
        expected_terminal_publications: vec![
            ExpectedTerminalPublication::new(ExpectedTerminalPublicationFields {
                publication_id: "pub-7".into(),
                status: "published".into(),
                operation_id: Some("op-7".into()),
            })
            .unwrap(),
        ],
        expected_lifecycle_semantics: vec![
            ExpectedLifecycleSemantic::new(ExpectedLifecycleSemanticFields {
                semantic: "runtime_terminal".into(),
                posture: "observed".into(),
                operation_id: Some("op-7".into()),
            })
            .unwrap(),
        ],
        ..ScenarioExpectationFields::default()
    })
    .unwrap()
}

/// RecoveryEvidenceEngineIntegrationTest: both adapters give a complete verdict, a passing
/// comparison, the same bundle id on every reconstruction, and byte-stable exports.
#[test]
fn reconstruction_and_comparison_are_deterministic_across_adapters() {
    let records = complete_records();
    let window = ReconstructionWindow::default();
    let mut exports = Vec::new();
    for &backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), backend, &records);
        let bundle = Engine::new().reconstruct(&*store, &window).unwrap();
        assert_eq!(
            bundle.manifest.verdict.posture,
            VerdictPosture::Complete,
            "{backend:?}: {:?}",
            bundle.manifest.verdict.issues
        );
        let result = compare_scenario(&bundle, &complete_expectation()).unwrap();
        assert!(result.passed, "{backend:?}: {:?}", result.issues);
        let again = Engine::new().reconstruct(&*store, &window).unwrap();
        assert_eq!(again.manifest.bundle_id, bundle.manifest.bundle_id);
        let json = export_bundle(&bundle);
        assert_eq!(export_bundle(&again), json);
        assert_eq!(
            export_comparison(&result),
            export_comparison(&compare_scenario(&again, &complete_expectation()).unwrap())
        );
        exports.push(json);
    }
    assert!(
        exports.windows(2).all(|pair| pair[0] == pair[1]),
        "log and sqlite bundles differ"
    );
}

#[test]
fn the_worked_example_gives_the_same_bytes_on_both_backends_and_in_memory() {
    let records = worked_example();
    let in_memory = export_bundle(
        &Engine::new()
            .reconstruct_records(&records, &worked_window())
            .unwrap(),
    );
    for &backend in BACKENDS {
        let dir = tempfile::tempdir().unwrap();
        let store = store_with(dir.path(), backend, &records);
        for _ in 0..2 {
            let bundle = Engine::new()
                .reconstruct(&*store, &worked_window())
                .unwrap();
            assert_eq!(export_bundle(&bundle), in_memory, "{backend:?}");
        }
    }
}

#[test]
fn batch_limit_is_part_of_the_bundle_id() {
    let records = complete_records();
    let bundle = |batch_limit| {
        let window = ReconstructionWindow::new(ReconstructionWindowFields {
            batch_limit,
            ..ReconstructionWindowFields::default()
        })
        .unwrap();
        Engine::new()
            .reconstruct_records(&records, &window)
            .unwrap()
    };
    let (small, large) = (bundle(1), bundle(100));
    assert_ne!(small.manifest.bundle_id, large.manifest.bundle_id);
    // Only the window differs: the evidence is the same.
    assert_eq!(small.operations, large.operations);
    assert_eq!(small.record_references, large.record_references);
}

/// Keys the generator draws from: every metadata key and alias, plus plain facts.
const KEYS: &[&str] = &[
    "recovery_generation_id",
    "generation_id",
    "retry_posture",
    "drain_posture",
    "reconstruction_posture",
    "replay_continuity_posture",
    "operation_id",
    "operation_kind",
    "kind",
    "operation_state",
    "state",
    "bgapi_job_uuid",
    "job_uuid",
    "terminal_publication_id",
    "publication_id",
    "terminal_publication_status",
    "status",
    "lifecycle_semantic",
    "semantic",
    "posture",
    "z_fact",
    "a_fact",
    "Event-Name",
    "0",
    "1",
    "10",
    "9",
];

const VALUES: &[&str] = &["a", "b", "gen-1", "gen-2", "op-1", "job-1", " ", ""];

const CONTEXTS: &[&str] = &[
    "prepared_recovery_context",
    "runtime_recovery_snapshot",
    "runtime_operation_snapshot",
    "runtime_terminal_publication_snapshot",
    "runtime_lifecycle_semantic_snapshot",
    "replay_metadata",
];

const NAMES: &[&str] = &[
    "api.dispatch",
    "bgapi.dispatch",
    "bgapi.ack",
    "bgapi.complete",
    "api.reply",
    "event.raw",
];

fn pick<'a>(g: &mut Gen, from: &'a [&'a str]) -> &'a str {
    g.choose(from).copied().unwrap_or("a")
}

fn leaf(g: &mut Gen) -> Value {
    match u8::arbitrary(g) % 6 {
        0 => json!(i64::from(i8::arbitrary(g))),
        1 => json!(bool::arbitrary(g)),
        2 => Value::Null,
        _ => json!(pick(g, VALUES)),
    }
}

fn object(g: &mut Gen, depth: u8) -> JsonMap {
    let mut map = JsonMap::new();
    for _ in 0..u8::arbitrary(g) % 6 {
        let value = if depth > 0 && u8::arbitrary(g) % 4 == 0 {
            if bool::arbitrary(g) {
                Value::Object(object(g, depth - 1))
            } else {
                Value::Array(vec![Value::Object(object(g, depth - 1)), leaf(g)])
            }
        } else {
            leaf(g)
        };
        map.insert(pick(g, KEYS).to_owned(), value);
    }
    map
}

/// A stream of records whose maps carry recovery metadata in random places.
#[derive(Clone, Debug)]
struct Stream {
    specs: Vec<(String, Option<String>, JsonMap, JsonMap, JsonMap)>,
    shuffle_seed: u64,
}

impl Arbitrary for Stream {
    fn arbitrary(g: &mut Gen) -> Self {
        let count = 1 + usize::from(u8::arbitrary(g) % 8);
        let specs = (0..count)
            .map(|_| {
                let name = pick(g, NAMES).to_owned();
                let job = match u8::arbitrary(g) % 4 {
                    0 => None,
                    1 => Some("  ".to_owned()),
                    _ => Some(pick(g, &["job-1", "job-2", "op-1"]).to_owned()),
                };
                let mut payload = object(g, 2);
                for _ in 0..u8::arbitrary(g) % 4 {
                    payload.insert(pick(g, CONTEXTS).to_owned(), Value::Object(object(g, 2)));
                }
                (name, job, object(g, 1), object(g, 1), payload)
            })
            .collect();
        Stream {
            specs,
            shuffle_seed: u64::arbitrary(g),
        }
    }
}

/// The same value with the keys of every map, at every level, in another order.
fn shuffled(value: &Value, rng: &mut StdRng) -> Value {
    match value {
        Value::Object(map) => Value::Object(shuffled_map(map, rng)),
        Value::Array(items) => Value::Array(items.iter().map(|item| shuffled(item, rng)).collect()),
        other => other.clone(),
    }
}

fn shuffled_map(map: &JsonMap, rng: &mut StdRng) -> JsonMap {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.shuffle(rng);
    entries
        .into_iter()
        .map(|(key, value)| (key.clone(), shuffled(value, rng)))
        .collect()
}

fn build(stream: &Stream, rng: Option<&mut StdRng>) -> Vec<Record> {
    let mut rng = rng;
    stream
        .specs
        .iter()
        .zip(1..)
        .map(|((name, job, correlation, flags, payload), sequence)| {
            let mut reorder = |map: &JsonMap| match rng.as_deref_mut() {
                Some(rng) => Value::Object(shuffled_map(map, rng)),
                None => Value::Object(map.clone()),
            };
            let spec = Spec {
                name: NAMES
                    .iter()
                    .find(|n| **n == name.as_str())
                    .copied()
                    .unwrap_or("event.raw"),
                job_uuid: None,
                event_name: None,
                correlation_ids: reorder(correlation),
                runtime_flags: reorder(flags),
                payload: reorder(payload),
            };
            let built = record(sequence, &spec);
            // Put the job UUID in (the builder takes only static strings).
            let mut fields = built.into_fields();
            fields.job_uuid = job.clone();
            Record::new(fields).unwrap()
        })
        .collect()
}

fn shuffling_keeps_the_bundle(stream: Stream) -> bool {
    let window = ReconstructionWindow::new(ReconstructionWindowFields {
        checkpoint_key: Some("k".into()),
        checkpoint_metadata: map(json!({"x": {"b": 1, "a": 2}})),
        ..ReconstructionWindowFields::default()
    })
    .unwrap();
    let original = build(&stream, None);
    let mut rng = StdRng::seed_from_u64(stream.shuffle_seed);
    let reordered = build(&stream, Some(&mut rng));
    for engine in [Engine::new(), Engine::reference()] {
        let a = export_bundle(&engine.reconstruct_records(&original, &window).unwrap());
        let b = export_bundle(&engine.reconstruct_records(&reordered, &window).unwrap());
        if a != b {
            eprintln!("original: {a}\nreordered: {b}");
            return false;
        }
    }
    true
}

#[test]
fn shuffling_map_key_order_in_stored_payloads_never_changes_a_bundle() {
    QuickCheck::new()
        .tests(300)
        .quickcheck(shuffling_keeps_the_bundle as fn(Stream) -> bool);
}

#[test]
fn shuffled_records_stored_on_either_backend_give_the_original_bundle() {
    let mut g = Gen::new(20);
    for round in 0..5u64 {
        let stream = Stream::arbitrary(&mut g);
        let original = build(&stream, None);
        let expected = export_bundle(
            &Engine::new()
                .reconstruct_records(&original, &ReconstructionWindow::default())
                .unwrap(),
        );
        let mut rng = StdRng::seed_from_u64(round);
        let reordered = build(&stream, Some(&mut rng));
        for &backend in BACKENDS {
            let dir = tempfile::tempdir().unwrap();
            let store = store_with(dir.path(), backend, &reordered);
            let bundle = Engine::new()
                .reconstruct(&*store, &ReconstructionWindow::default())
                .unwrap();
            assert_eq!(export_bundle(&bundle), expected, "{backend:?}");
        }
    }
}

/// The id is the SHA-256 of `{"window":W,"continuity_snapshot":B}` (reference §7.6), also
/// for bundles far larger than the chunks the hash input is streamed in. `W` carries the
/// checkpoint metadata sorted, as the bundle writes it (given here as `{"b":1,"a":2}`).
#[test]
fn bundle_id_is_the_sha256_of_the_window_and_the_pending_bundle() {
    use sha2::{Digest as _, Sha256};

    let specs: Vec<Spec> = (0..3000)
        .map(|n| {
            Spec::new(if n % 3 == 0 {
                "bgapi.dispatch"
            } else {
                "event.raw"
            })
            .job("job-1")
            .flags(json!({"recovery_generation_id": "gen-1"}))
        })
        .collect();
    let records = records(&specs);
    let window = ReconstructionWindow::new(ReconstructionWindowFields {
        checkpoint_key: Some("k".into()),
        checkpoint_metadata: map(json!({"b": 1, "a": 2})),
        ..ReconstructionWindowFields::default()
    })
    .unwrap();
    let bundle = Engine::new()
        .reconstruct_records(&records, &window)
        .unwrap();
    let mut pending = bundle.clone();
    let mut manifest = pending.manifest.into_fields();
    manifest.bundle_id = "pending".into();
    pending.manifest = esl_replay::evidence::Manifest::new(manifest).unwrap();
    let body = export_bundle(&pending);
    assert!(body.len() > 256 * 1024, "{}", body.len());
    let input = format!(
        r#"{{"window":{{"from_last_consumed_sequence":0,"from_byte_offset_hint":0,"until_append_sequence":null,"checkpoint_key":"k","checkpoint_metadata":{{"a":2,"b":1}}}},"continuity_snapshot":{body}}}"#
    );
    let expected: String = Sha256::digest(input.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(bundle.manifest.bundle_id, expected);
    assert_eq!(bundle_id(&bundle), expected);
}
