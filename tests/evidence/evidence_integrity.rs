//! A bundle is checked against itself when it is read: a bundle changed after it was
//! written is refused, never compared under the id of the bundle it was made from.

use esl_replay::evidence::{
    Engine, Error, ReconstructionWindow, ReconstructionWindowFields, compare_scenario,
    export_bundle, parse_bundle, verify_bundle,
};
use esl_replay::record::MAX_JSON_DEPTH;
use serde_json::{Value, json};

use crate::support::evidence::{Spec, records, worked_example, worked_window};
use crate::support::map;

/// The worked example's bundle, exported (its checkpoint metadata was given unsorted).
fn worked_bundle_json() -> String {
    export_bundle(
        &Engine::new()
            .reconstruct_records(&worked_example(), &worked_window())
            .unwrap(),
    )
}

/// Every scalar of `value` with its JSON pointer.
fn leaves(value: &Value, pointer: String, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                leaves(value, format!("{pointer}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (index, value) in items.iter().enumerate() {
                leaves(value, format!("{pointer}/{index}"), out);
            }
        }
        scalar => out.push((pointer, scalar.clone())),
    }
}

/// Every list element of `value`, by the pointer of its list and its index.
fn elements(value: &Value, pointer: &str, out: &mut Vec<(String, usize)>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                elements(value, &format!("{pointer}/{key}"), out);
            }
        }
        Value::Array(items) => {
            for (index, value) in items.iter().enumerate() {
                out.push((pointer.to_owned(), index));
                elements(value, &format!("{pointer}/{index}"), out);
            }
        }
        _ => {}
    }
}

/// A different value of the same JSON type where there is one.
fn changed(value: &Value) -> Value {
    match value {
        Value::String(text) => Value::String(format!("{text}x")),
        Value::Number(number) => json!(number.as_u64().unwrap() + 1),
        Value::Bool(flag) => Value::Bool(!flag),
        Value::Null => json!(7),
        _ => unreachable!("only scalars are changed"),
    }
}

#[test]
fn an_unchanged_bundle_reads_back_and_verifies() {
    let json = worked_bundle_json();
    let bundle = parse_bundle(&json).unwrap();
    verify_bundle(&bundle).unwrap();
    assert_eq!(export_bundle(&bundle), json);
}

/// Change each value of a valid bundle in turn, and remove each list element in turn:
/// every change is refused.
#[test]
fn every_changed_value_and_every_removed_element_is_refused() {
    let json = worked_bundle_json();
    let original: Value = serde_json::from_str(&json).unwrap();
    let mut scalars = Vec::new();
    leaves(&original, String::new(), &mut scalars);
    assert!(scalars.len() > 80, "{}", scalars.len());
    for (pointer, value) in &scalars {
        let mut tampered = original.clone();
        *tampered.pointer_mut(pointer).unwrap() = changed(value);
        let result = parse_bundle(&tampered.to_string());
        assert!(
            result.is_err(),
            "{pointer} changed to {:?} was accepted",
            changed(value)
        );
    }
    let mut lists = Vec::new();
    elements(&original, "", &mut lists);
    assert!(lists.len() > 10, "{}", lists.len());
    for (pointer, index) in &lists {
        let mut tampered = original.clone();
        match tampered.pointer_mut(pointer).unwrap() {
            Value::Array(items) => {
                items.remove(*index);
            }
            _ => unreachable!(),
        }
        let result = parse_bundle(&tampered.to_string());
        assert!(result.is_err(), "{pointer}/{index} removed was accepted");
    }
}

fn tampered(json: &str, edit: impl FnOnce(&mut Value)) -> Result<(), Error> {
    let mut bundle: Value = serde_json::from_str(json).unwrap();
    edit(&mut bundle);
    parse_bundle(&bundle.to_string()).map(|_| ())
}

fn inconsistent_at(result: Result<(), Error>) -> String {
    match result {
        Err(Error::InconsistentBundle { path, reason }) => {
            assert!(!reason.is_empty());
            path
        }
        other => panic!("expected an inconsistent bundle, got {other:?}"),
    }
}

/// The review's repro: each edit is refused with what is wrong and where.
#[test]
fn edits_that_contradict_the_rest_of_the_bundle_name_the_field() {
    let json = worked_bundle_json();
    let id = parse_bundle(&json).unwrap().manifest.bundle_id.clone();

    // The posture its issues force is insufficient.
    assert_eq!(
        inconsistent_at(tampered(&json, |b| {
            b["manifest"]["verdict"]["posture"] = json!("complete");
        })),
        "manifest.verdict.posture"
    );
    assert_eq!(
        inconsistent_at(tampered(&json, |b| {
            b["manifest"]["record_count"] = json!(4);
        })),
        "manifest.record_count"
    );
    for (pointer, path) in [
        (
            "/manifest/first_append_sequence",
            "manifest.first_append_sequence",
        ),
        (
            "/manifest/last_append_sequence",
            "manifest.last_append_sequence",
        ),
        (
            "/continuity_snapshot/last_observed_append_sequence",
            "continuity_snapshot.last_observed_append_sequence",
        ),
    ] {
        assert_eq!(
            inconsistent_at(tampered(&json, |b| {
                *b.pointer_mut(pointer).unwrap() = json!(3);
            })),
            path
        );
    }
    let op = |b: &Value, id: &str| {
        b["operations"]
            .as_array()
            .unwrap()
            .iter()
            .position(|o| o["operation_id"] == json!(id))
            .unwrap()
    };
    assert_eq!(
        inconsistent_at(tampered(&json, |b| {
            let index = op(b, "op-1");
            b["operations"][index]["final_state"] = json!("failed");
        })),
        "operations[0].final_state"
    );
    assert_eq!(
        inconsistent_at(tampered(&json, |b| {
            let index = op(b, "op-1");
            b["operations"][index]["accepted_append_sequence"] = json!(2);
        })),
        "operations[0].accepted_append_sequence"
    );
    assert_eq!(
        inconsistent_at(tampered(&json, |b| {
            let copy = b["operations"][0].clone();
            b["operations"].as_array_mut().unwrap().push(copy);
        })),
        "operations[1].operation_id"
    );

    // An edit the rest of the bundle cannot contradict (one of two issues removed, leaving
    // the posture it forces) is caught by the id, and both ids are named.
    let result = tampered(&json, |b| {
        let issues = b["manifest"]["verdict"]["issues"].as_array_mut().unwrap();
        assert_eq!(issues[0]["code"], json!("retry_posture_changed"));
        issues.remove(0);
    });
    match result {
        Err(Error::BundleIdMismatch { found, expected }) => {
            assert_eq!(found, id);
            assert_ne!(expected, id);
            let text = Error::BundleIdMismatch { found, expected }.to_string();
            assert!(text.contains(&id), "{text}");
        }
        other => panic!("expected an id mismatch, got {other:?}"),
    }
}

/// Comparing refuses a bundle built in memory that does not carry its own id, so a result
/// never names an id its bundle's content does not give.
#[test]
fn compare_refuses_a_bundle_that_does_not_carry_its_own_id() {
    let bundle = parse_bundle(&worked_bundle_json()).unwrap();
    let mut fields = bundle.manifest.clone().into_fields();
    fields.bundle_id = "0".repeat(64);
    let mut forged = bundle.clone();
    forged.manifest = esl_replay::evidence::Manifest::new(fields).unwrap();
    let expectation = serde_json::from_value(json!({"scenario_name": "s"})).unwrap();
    assert!(compare_scenario(&bundle, &expectation).is_ok());
    assert!(matches!(
        compare_scenario(&forged, &expectation),
        Err(Error::BundleIdMismatch { .. })
    ));
}

/// Checkpoint metadata given in any key order (at any depth) gives the same bundle, bytes
/// and id, and that bundle verifies.
#[test]
fn checkpoint_metadata_order_does_not_change_the_bundle_or_its_id() {
    let bundle_with = |metadata: Value| {
        let window = ReconstructionWindow::new(ReconstructionWindowFields {
            checkpoint_key: Some("k".into()),
            checkpoint_metadata: map(metadata),
            ..ReconstructionWindowFields::default()
        })
        .unwrap();
        export_bundle(
            &Engine::new()
                .reconstruct_records(&worked_example(), &window)
                .unwrap(),
        )
    };
    let unsorted = bundle_with(json!({"b": 1, "a": {"y": 2, "x": 1}}));
    let sorted = bundle_with(json!({"a": {"x": 1, "y": 2}, "b": 1}));
    assert_eq!(unsorted, sorted);
    assert!(unsorted.contains(r#""checkpoint_metadata":{"a":{"x":1,"y":2},"b":1}"#));
    parse_bundle(&unsorted).unwrap();
}

/// A snapshot nested as deep as a record may nest is written into `facts` three levels
/// inside the bundle; that bundle reads back (on half a spawned thread's default stack),
/// and a deeper text is refused before it is parsed.
#[test]
fn a_bundle_with_facts_nested_to_the_record_limit_reads_back() {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(|| {
            let mut deep = json!("leaf");
            // payload (level 1) > snapshot (2) > `deep` (3) > ... the last at MAX_JSON_DEPTH.
            for _ in 0..MAX_JSON_DEPTH - 2 {
                deep = json!([deep]);
            }
            let records = records(&[Spec::new("event.raw")
                .flags(json!({"recovery_generation_id": "gen-1"}))
                .payload(json!({"runtime_terminal_publication_snapshot": {
                    "terminal_publication_id": "pub-1",
                    "terminal_publication_status": "published",
                    "deep": deep,
                }}))]);
            let bundle = Engine::new()
                .reconstruct_records(&records, &ReconstructionWindow::default())
                .unwrap();
            let json = export_bundle(&bundle);
            assert!(json.contains(&"[".repeat(MAX_JSON_DEPTH - 2)));
            assert_eq!(parse_bundle(&json).unwrap(), bundle);

            let deeper = json.replacen("\"leaf\"", "[[[[\"leaf\"]]]]", 1);
            match parse_bundle(&deeper) {
                Err(Error::Malformed { path, reason, .. }) => {
                    assert_eq!(path, "$");
                    assert!(reason.contains("nested deeper than"), "{reason}");
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        })
        .unwrap()
        .join()
        .unwrap();
}

/// A stored record whose content no longer matches its checksum (here a SQLite row whose
/// operation state was edited) is not evidence: reconstruction stops and names it.
#[cfg(feature = "sqlite")]
#[test]
fn reconstruction_refuses_a_record_changed_after_it_was_written() {
    use crate::support::evidence::{Backend, store_path, store_with};
    use esl_replay::store::SqliteStore;

    let dir = tempfile::tempdir().unwrap();
    drop(store_with(dir.path(), Backend::Sqlite, &worked_example()));
    let path = store_path(dir.path(), Backend::Sqlite);
    let genuine = Engine::new()
        .reconstruct(
            &SqliteStore::open_read_only(&path).unwrap(),
            &worked_window(),
        )
        .unwrap();
    assert_eq!(
        genuine.operations[0].final_state.as_deref(),
        Some("completed")
    );
    let changed = rusqlite::Connection::open(&path)
        .unwrap()
        .execute(
            "UPDATE replay_records SET payload = replace(payload, '\"completed\"', '\"failed\"') \
             WHERE append_sequence = 4",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let store = SqliteStore::open_read_only(&path).unwrap();
    match Engine::new().reconstruct(&store, &worked_window()) {
        Err(error @ Error::ChecksumMismatch { sequence: 4, .. }) => {
            let text = error.to_string();
            assert!(text.contains("rec-4"), "{text}");
            assert!(text.contains("append sequence 4"), "{text}");
        }
        other => panic!("expected a checksum mismatch, got {other:?}"),
    }
}
