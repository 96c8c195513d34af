//! Proves that the binary record codec round-trips every field exactly and rejects what it
//! must.
//!
//! Encoding then decoding gives back the identical record: nanoseconds and offsets of both
//! timestamps, every JSON type with its number kind and float bits (`-0.0`, `u64::MAX`,
//! `i64::MIN`, subnormals), and map key order; a quickcheck property checks this for
//! arbitrary records. This also shows that the chosen `serde_json` features (no
//! `arbitrary_precision`) work with `rmp-serde`. Frames with unknown versions, trailing
//! bytes, truncation, non-finite floats, excess nesting or forged lengths are rejected
//! without panicking.

mod record_support;

use esl_replay::record::codec::FORMAT_VERSION;
use esl_replay::record::{Envelope, Error, MAX_JSON_DEPTH, Record, RecordId};
use quickcheck::QuickCheck;
use record_support::{
    ArbitraryRecord, assert_records_identical, fixture_envelope, map, record_from,
};
use serde_json::{Value, json};
use time::macros::datetime;

fn every_json_type() -> Record {
    let payload: Value = serde_json::from_str(
        r#"{"z":null,"t":true,"f":false,"small":7,"neg":-7,"i64min":-9223372036854775808,"i64max":9223372036854775807,
            "u64max":18446744073709551615,"float":0.1,"one":1.0,"negzero":-0.0,"huge":1e300,"tiny":5e-324,
            "text":"é 😀 \u2028 \u0000","list":[1,"two",[3],{"b":1,"a":2},[]],"map":{"y":{},"x":[]},"0":"zero"}"#,
    )
    .unwrap();
    let envelope = Envelope {
        capture_timestamp: datetime!(2024-01-15 12:00:00.123456789 +05:45),
        capture_path: Some("path".into()),
        connection_generation: Some("gen".into()),
        session_id: Some("sess".into()),
        job_uuid: Some("job".into()),
        event_name: Some("CHANNEL_CREATE".into()),
        correlation_ids: map(json!({"replay_session_id": "r"})),
        runtime_flags: map(json!({"b": 1, "a": [true]})),
        payload: map(payload),
        ..fixture_envelope()
    };
    let record = Record::from_envelope(
        envelope,
        RecordId::generate(),
        datetime!(2024-01-15 10:00:01.000001 -03:30),
        99,
    )
    .unwrap();
    let mut fields = record.into_fields();
    fields.tags = map(json!({"tag": "v", "n": -1.5}));
    Record::new(fields).unwrap()
}

fn decode(bytes: &[u8]) -> Result<Record, Error> {
    Record::decode(bytes)
}

#[test]
fn every_field_and_json_type_round_trips_exactly() {
    let record = every_json_type();
    let decoded = decode(&record.encode().unwrap()).unwrap();
    assert_records_identical(&record, &decoded);
    assert_eq!(decoded.capture_timestamp().nanosecond(), 123_456_789);
    assert_eq!(
        decoded.capture_timestamp().offset().whole_minutes(),
        5 * 60 + 45
    );
    assert_eq!(decoded.stored_at().nanosecond(), 1_000);
    assert_eq!(decoded.stored_at().offset().whole_minutes(), -(3 * 60 + 30));
    let negative_zero = decoded.payload()["negzero"].as_f64().unwrap();
    assert!(negative_zero == 0.0 && negative_zero.is_sign_negative());
    assert_eq!(decoded.payload()["u64max"].as_u64(), Some(u64::MAX));
    assert!(decoded.verify_checksum());
}

#[test]
fn key_order_is_preserved() {
    let record = record_from(Envelope {
        payload: map(json!({"z": 1, "a": {"y": 1, "b": 2}, "m": 3})),
        ..fixture_envelope()
    });
    let decoded = decode(&record.encode().unwrap()).unwrap();
    assert_eq!(
        decoded.payload().keys().collect::<Vec<_>>(),
        ["z", "a", "m"]
    );
    assert_eq!(
        decoded.payload()["a"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["y", "b"]
    );
}

#[test]
fn unknown_format_versions_are_rejected_naming_the_version() {
    let mut bytes = every_json_type().encode().unwrap();
    for version in [0u8, 2, 255] {
        bytes[0] = version;
        let error = decode(&bytes).unwrap_err();
        assert!(
            matches!(error, Error::UnsupportedFormatVersion { found, supported: FORMAT_VERSION } if found == version)
        );
        assert_eq!(
            error.to_string(),
            format!("unsupported record format version {version} (supported: 1)")
        );
    }
}

#[test]
fn empty_frames_are_rejected() {
    assert!(matches!(decode(&[]), Err(Error::EmptyFrame)));
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut bytes = every_json_type().encode().unwrap();
    bytes.extend_from_slice(&[0xc0, 0xc0]);
    assert!(matches!(
        decode(&bytes),
        Err(Error::TrailingBytes { count: 2 })
    ));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = every_json_type().encode().unwrap();
    for length in 0..bytes.len() {
        assert!(
            decode(&bytes[..length]).is_err(),
            "prefix of {length} bytes decoded"
        );
    }
}

#[test]
#[expect(
    clippy::big_endian_bytes,
    reason = "MessagePack stores float 64 big-endian"
)]
fn non_finite_floats_are_rejected() {
    let record = record_from(Envelope {
        payload: map(json!({"x": 1.5})),
        ..fixture_envelope()
    });
    let bytes = record.encode().unwrap();
    let mut pattern = vec![0xcb];
    pattern.extend_from_slice(&1.5f64.to_be_bytes());
    let position = bytes
        .windows(pattern.len())
        .position(|window| window == pattern)
        .unwrap();
    for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let mut forged = bytes.clone();
        forged[position + 1..position + 9].copy_from_slice(&bad.to_be_bytes());
        assert!(
            matches!(decode(&forged), Err(Error::Decode { .. })),
            "{bad}"
        );
    }
}

#[test]
fn excess_nesting_is_rejected() {
    // Payload map (level 1) -> "x" -> MAX - 1 nested lists holding 1: the deepest valid value.
    let mut value = json!(1);
    for _ in 1..MAX_JSON_DEPTH {
        value = json!([value]);
    }
    let record = record_from(Envelope {
        payload: map(json!({"x": value})),
        ..fixture_envelope()
    });
    let bytes = record.encode().unwrap();
    assert!(decode(&bytes).is_ok());
    // MessagePack arrays count elements, not bytes, so one more 0x91 adds a level in place.
    let run = vec![0x91u8; MAX_JSON_DEPTH - 1];
    let position = bytes
        .windows(run.len())
        .position(|window| window == run)
        .unwrap();
    let mut forged = bytes.clone();
    forged.insert(position, 0x91);
    assert!(matches!(decode(&forged), Err(Error::Decode { .. })));
}

#[test]
fn forged_lengths_do_not_allocate_or_panic() {
    let record = record_from(Envelope {
        payload: map(json!({})),
        ..fixture_envelope()
    });
    let bytes = record.encode().unwrap();
    // The empty payload map is the fixmap 0x80 right after runtime_flags (also 0x80) and
    // correlation_ids (0x80); replace the third one with a map32 claiming u32::MAX entries.
    let position = bytes
        .windows(3)
        .position(|window| window == [0x80, 0x80, 0x80])
        .unwrap()
        + 2;
    let mut forged = bytes[..position].to_vec();
    forged.extend_from_slice(&[0xdf, 0xff, 0xff, 0xff, 0xff]);
    forged.extend_from_slice(&bytes[position + 1..]);
    assert!(decode(&forged).is_err());
    let mut forged = bytes[..position].to_vec();
    forged.extend_from_slice(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
    forged.extend_from_slice(&bytes[position + 1..]);
    assert!(decode(&forged).is_err());
}

#[test]
fn invalid_records_inside_valid_frames_are_rejected() {
    let mut bytes = record_from(fixture_envelope()).encode().unwrap();
    // Overwrite the artifact name with spaces of the same length: valid MessagePack, blank field.
    let name = b"api.dispatch";
    let position = bytes
        .windows(name.len())
        .position(|window| window == name)
        .unwrap();
    bytes[position..position + name.len()].fill(b' ');
    assert!(matches!(
        decode(&bytes),
        Err(Error::BlankField {
            field: "artifact_name"
        })
    ));
}

#[test]
fn arbitrary_bytes_never_panic() {
    fn property(body: Vec<u8>) -> bool {
        let mut frame = vec![FORMAT_VERSION];
        frame.extend(body);
        let _ = Record::decode(&frame);
        true
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(property as fn(Vec<u8>) -> bool);
}

#[test]
fn arbitrary_records_round_trip_exactly() {
    fn property(record: ArbitraryRecord) -> bool {
        let mut bytes = Vec::new();
        record.0.encode_into(&mut bytes).unwrap();
        let decoded = Record::decode(&bytes).unwrap();
        assert_records_identical(&record.0, &decoded);
        true
    }
    QuickCheck::new()
        .tests(1000)
        .quickcheck(property as fn(ArbitraryRecord) -> bool);
}
