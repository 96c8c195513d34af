//! Proves that record checksums are byte-compatible with the reference (§1.7, decision K2).
//!
//! Every verified test vector of §1.7 is reproduced as a named test, both as the exact
//! canonical text and as the SHA-256 hex. The reference's own checksum unit tests are
//! mirrored, and a quickcheck property shows that permuting the key order of any map level
//! never changes a checksum.

use esl_replay::record::{Envelope, Record, checksum};
use quickcheck::{Gen, QuickCheck, TestResult};
use serde_json::json;
use time::macros::datetime;

use crate::support::map;
use crate::support::record::{
    ArbitraryEnvelope, FIXTURE_CAPTURE, TotallyOrderedEnvelope, fixture_envelope, fixture_named,
    permute_keys, record_from,
};

fn canonical(envelope: &Envelope) -> String {
    checksum::canonical_json(
        &envelope.artifact_name,
        &envelope.artifact_version,
        &envelope.capture_timestamp,
        &envelope.payload,
    )
    .unwrap()
}

#[test]
fn vector_fixture_default_api_dispatch() {
    let envelope = fixture_envelope();
    assert_eq!(
        canonical(&envelope),
        r#"{"artifact_name":"api.dispatch","artifact_version":"1","capture_timestamp":"2024-01-15T10:00:00.000+00:00","payload":{"args":"sofia/internal/1000","command":"originate"}}"#
    );
    assert_eq!(
        envelope.checksum().unwrap(),
        "353a1621b83b5bf2d2357f86e0b7c35adff2750052fb09291211ba7d97493754"
    );
}

#[test]
fn vector_empty_payload_is_written_as_a_list() {
    let envelope = fixture_envelope().with_payload(map(json!({})));
    assert!(canonical(&envelope).ends_with(r#""payload":[]}"#));
    assert_eq!(
        envelope.checksum().unwrap(),
        "64c48bacc47bfbffab5a459580686b999e1954171f913f1b21e8038e7a9afa37"
    );
}

#[test]
fn vector_fixture_event_raw() {
    let envelope = Envelope::new("1", "event.raw", FIXTURE_CAPTURE).with_payload(map(json!({
        "Event-Name": "CHANNEL_CREATE",
        "Core-UUID": "core-uuid-001"
    })));
    assert_eq!(
        envelope.checksum().unwrap(),
        "48cf0b3e7704e3cab8031b5732d83ffc196cf119b5a01e4d8429e854c78a6374"
    );
}

#[test]
fn vector_fixture_bgapi_dispatch() {
    let envelope = Envelope::new("1", "bgapi.dispatch", FIXTURE_CAPTURE)
        .with_payload(map(json!({"command": "show", "args": "channels"})));
    assert_eq!(
        envelope.checksum().unwrap(),
        "769301beb989e7574386484642a19814c070ba3cf3c45b72d6d882dcd22d020d"
    );
}

#[test]
fn vector_artifact_version_two() {
    let envelope = Envelope {
        artifact_version: "2".into(),
        ..fixture_envelope()
    };
    assert_eq!(
        envelope.checksum().unwrap(),
        "b0b4a0720c78736749cc4fdd598013b67bbc24f469290633681cbd133e59b020"
    );
}

#[test]
fn vector_mixed_payload_is_deep_sorted_with_php_encoding() {
    let envelope = fixture_envelope().with_payload(map(json!({
        "z": {"b": 1, "a": [3, 1, 2]},
        "a": "x/y",
        "u": "é\u{2028}\t\u{1}",
        "f": 1.0,
        "g": 0.1,
        "n": null,
        "e": [],
        "t": true
    })));
    let expected_payload = r#"{"a":"x/y","e":[],"f":1,"g":0.1,"n":null,"t":true,"u":"é\u2028\t\u0001","z":{"a":[3,1,2],"b":1}}"#;
    assert!(canonical(&envelope).ends_with(&format!("\"payload\":{expected_payload}}}")));
    assert_eq!(
        envelope.checksum().unwrap(),
        "9a0f3f34015e1ea5d00df3fce64ddee91690d0b03d64e1503b787d8ba48a927e"
    );
}

#[test]
fn vector_capture_offset_is_kept_and_truncated_to_milliseconds() {
    let envelope = Envelope::new(
        "1",
        "api.dispatch",
        datetime!(2024-01-15 12:00:00.123456 +02:00),
    )
    .with_payload(map(json!({"k": "v"})));
    assert!(
        canonical(&envelope).contains(r#""capture_timestamp":"2024-01-15T12:00:00.123+02:00""#)
    );
    assert_eq!(
        envelope.checksum().unwrap(),
        "0f443b2b3e2a1cc1d7805e598e152551c0fa3bbad8f9733e0f2b2872d3234ed9"
    );
}

#[test]
fn php_ksort_orders_integer_keys_numerically_before_words() {
    let envelope =
        fixture_envelope().with_payload(map(json!({"a": 1, "_": 2, "B": 3, "10": 4, "9": 5})));
    assert!(canonical(&envelope).ends_with(r#""payload":{"9":5,"10":4,"B":3,"_":2,"a":1}}"#));
}

#[test]
fn index_keyed_payload_canonicalises_to_a_list() {
    let envelope = fixture_envelope().with_payload(map(json!({"1": "b", "0": "a"})));
    assert!(canonical(&envelope).ends_with(r#""payload":["a","b"]}"#));
}

#[test]
fn compute_returns_64_lowercase_hex_characters() {
    let checksum = fixture_envelope().checksum().unwrap();
    assert_eq!(checksum.len(), 64);
    assert!(
        checksum
            .bytes()
            .all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    );
}

#[test]
fn compute_is_deterministic_for_the_same_input() {
    assert_eq!(
        fixture_envelope().checksum().unwrap(),
        fixture_envelope().checksum().unwrap()
    );
}

#[test]
fn different_artifact_names_produce_different_checksums() {
    let other = fixture_named("api.reply");
    assert_ne!(
        fixture_envelope().checksum().unwrap(),
        other.checksum().unwrap()
    );
}

#[test]
fn different_payloads_produce_different_checksums() {
    let other = fixture_envelope().with_payload(map(json!({"command": "status"})));
    assert_ne!(
        fixture_envelope().checksum().unwrap(),
        other.checksum().unwrap()
    );
}

#[test]
fn payload_key_order_does_not_affect_checksum() {
    let ab = fixture_envelope().with_payload(map(json!({"a": 1, "b": 2})));
    let ba = fixture_envelope().with_payload(map(json!({"b": 2, "a": 1})));
    assert_eq!(ab.checksum().unwrap(), ba.checksum().unwrap());
}

#[test]
fn fields_outside_the_checksum_do_not_affect_it() {
    let plain = record_from(fixture_envelope());
    let decorated = record_from(
        fixture_envelope()
            .with_capture_path("/x")
            .with_connection_generation("gen-1")
            .with_session_id("sess")
            .with_job_uuid("job")
            .with_event_name("CHANNEL_CREATE")
            .with_correlation_ids(map(json!({"replay_session_id": "r"})))
            .with_runtime_flags(map(json!({"pbx_node_slug": "n"}))),
    );
    assert_eq!(plain.checksum(), decorated.checksum());
}

#[test]
fn verify_returns_true_for_a_valid_record() {
    let record = record_from(fixture_envelope());
    assert!(checksum::verify(&record));
    assert!(record.verify_checksum());
}

#[test]
fn verify_returns_false_when_the_payload_is_tampered() {
    let mut fields = record_from(fixture_envelope()).into_fields();
    fields.payload.insert("command".into(), json!("hangup"));
    assert!(!checksum::verify(&Record::new(fields).unwrap()));
}

#[test]
fn verify_returns_false_for_a_corrupted_checksum() {
    let mut fields = record_from(fixture_envelope()).into_fields();
    fields.checksum = "0".repeat(64);
    assert!(!checksum::verify(&Record::new(fields.clone()).unwrap()));
    fields.checksum = "short".into();
    assert!(!checksum::verify(&Record::new(fields).unwrap()));
}

#[test]
fn verify_is_false_when_the_capture_offset_changes_the_text() {
    let mut fields = record_from(fixture_envelope()).into_fields();
    // Same instant, different offset: the checksum text changes, so the record no longer verifies.
    fields.capture_timestamp = datetime!(2024-01-15 12:00:00 +02:00);
    assert!(!checksum::verify(&Record::new(fields).unwrap()));
}

#[test]
fn deep_payloads_are_rejected_not_overflowed() {
    let mut value = json!(1);
    for _ in 0..10_000 {
        // `json!([value])` would serialize `value` again, recursively; wrap it directly.
        value = serde_json::Value::Array(vec![value]);
    }
    let mut payload = esl_replay::record::JsonMap::new();
    payload.insert("deep".into(), value);
    let envelope = fixture_envelope().with_payload(payload);
    assert!(matches!(
        envelope.checksum(),
        Err(esl_replay::record::Error::NestingTooDeep {
            max: esl_replay::record::MAX_JSON_DEPTH
        })
    ));
    // Dropping a 10 000-level `Value` recurses inside serde_json; leak it instead.
    std::mem::forget(envelope);
}

/// Holds whenever PHP's key comparison is a strict total order on every map level, which
/// the generator guarantees; see `equal_php_keys_keep_insertion_order` for the exception.
#[test]
fn permuting_map_key_order_never_changes_the_checksum() {
    fn property(envelope: TotallyOrderedEnvelope, seed: u64) -> TestResult {
        let TotallyOrderedEnvelope(envelope) = envelope;
        let mut g = Gen::from_size_and_seed(8, seed);
        let permuted = envelope
            .clone()
            .with_payload(permute_keys(&envelope.payload, &mut g));
        TestResult::from_bool(envelope.checksum().unwrap() == permuted.checksum().unwrap())
    }
    QuickCheck::new()
        .tests(1000)
        .quickcheck(property as fn(TotallyOrderedEnvelope, u64) -> TestResult);
}

/// PHP sorts stably and "01" compares equal to the integer key 1, so their insertion order
/// survives the sort; we reproduce that rather than inventing a tie-break.
#[test]
fn equal_php_keys_keep_insertion_order() {
    let first = fixture_envelope().with_payload(map(json!({"01": "x", "1": "y"})));
    let second = fixture_envelope().with_payload(map(json!({"1": "y", "01": "x"})));
    assert!(canonical(&first).ends_with(r#""payload":{"01":"x","1":"y"}}"#));
    assert!(canonical(&second).ends_with(r#""payload":{"1":"y","01":"x"}}"#));
}

#[test]
fn records_built_from_envelopes_always_verify() {
    fn property(envelope: ArbitraryEnvelope) -> bool {
        record_from(envelope.0).verify_checksum()
    }
    QuickCheck::new()
        .tests(300)
        .quickcheck(property as fn(ArbitraryEnvelope) -> bool);
}
