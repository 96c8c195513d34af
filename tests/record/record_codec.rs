//! Proves that the binary record codec round-trips every field and rejects what it must.
//!
//! Version 2 (written): encoding then decoding gives back the record an NDJSON export and
//! import gives, with the same NDJSON bytes and the same frame bytes when encoded again:
//! nanoseconds and offsets of both timestamps, every JSON type (`-0.0`, `i64::MIN`,
//! subnormals, `{}` and `[]` at any depth), map key order; a quickcheck property checks this
//! for arbitrary records. Version 1 (read): frames an earlier build wrote decode to the
//! identical record, number kinds and float bits included. Frames with unknown versions,
//! trailing bytes, truncation, broken lengths, non-UTF-8 text, non-finite floats, excess
//! nesting or forged lengths are rejected without panicking.

use esl_replay::record::{Envelope, Error, FORMAT_VERSION, MAX_JSON_DEPTH, Record, RecordId};
use quickcheck::QuickCheck;
use serde_json::{Value, json};
use time::macros::datetime;

use crate::support::map;
use crate::support::record::{
    ArbitraryEnvelope, ArbitraryRecord, as_stored, assert_records_identical, encode_v1,
    fixture_envelope, fixture_named, record_from,
};

fn every_json_type() -> Record {
    let payload: Value = serde_json::from_str(
        r#"{"z":null,"t":true,"f":false,"small":7,"neg":-7,"i64min":-9223372036854775808,"i64max":9223372036854775807,
            "u64max":18446744073709551615,"float":0.1,"one":1.0,"negzero":-0.0,"huge":1e300,"tiny":5e-324,
            "text":"é 😀 \u2028 \u0000","list":[1,"two",[3],{"b":1,"a":2},[]],"map":{"y":{},"x":[]},"0":"zero"}"#,
    )
    .unwrap();
    let envelope = Envelope::new(
        "1",
        "api.dispatch",
        datetime!(2024-01-15 12:00:00.123456789 +05:45),
    )
    .with_capture_path("path")
    .with_connection_generation("gen")
    .with_session_id("sess")
    .with_job_uuid("job")
    .with_event_name("CHANNEL_CREATE")
    .with_correlation_ids(map(json!({"replay_session_id": "r"})))
    .with_runtime_flags(map(json!({"b": 1, "a": [true]})))
    .with_payload(map(payload));
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
    let bytes = record.encode().unwrap();
    let decoded = decode(&bytes).unwrap();
    assert_records_identical(&as_stored(&record), &decoded);
    assert_eq!(decoded.encode().unwrap(), bytes);
    assert_eq!(
        esl_replay::record::to_ndjson_line(&decoded),
        esl_replay::record::to_ndjson_line(&record)
    );
    assert_eq!(decoded.capture_timestamp().nanosecond(), 123_456_789);
    assert_eq!(
        decoded.capture_timestamp().offset().whole_minutes(),
        5 * 60 + 45
    );
    assert_eq!(decoded.stored_at().nanosecond(), 1_000);
    assert_eq!(decoded.stored_at().offset().whole_minutes(), -(3 * 60 + 30));
    let negative_zero = decoded.payload()["negzero"].as_f64().unwrap();
    assert!(negative_zero == 0.0 && negative_zero.is_sign_negative());
    assert_eq!(decoded.payload()["map"], json!({"y": {}, "x": []}));
    assert!(decoded.verify_checksum());
}

#[test]
fn version_1_frames_decode_to_the_identical_record() {
    let record = every_json_type();
    let decoded = decode(&encode_v1(&record)).unwrap();
    assert_records_identical(&record, &decoded);
    assert_eq!(decoded.payload()["u64max"].as_u64(), Some(u64::MAX));
    assert!(decoded.verify_checksum());
}

#[test]
fn key_order_is_preserved() {
    let record = record_from(
        fixture_envelope().with_payload(map(json!({"z": 1, "a": {"y": 1, "b": 2}, "m": 3}))),
    );
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
    for version in [0u8, 3, 255] {
        bytes[0] = version;
        let error = decode(&bytes).unwrap_err();
        assert!(
            matches!(error, Error::UnsupportedFormatVersion { found, supported: FORMAT_VERSION } if found == version)
        );
        assert_eq!(
            error.to_string(),
            format!(
                "unsupported record format version {version} (this build reads versions 1 to 2)"
            )
        );
    }
}

#[test]
fn empty_frames_are_rejected() {
    assert!(matches!(decode(&[]), Err(Error::EmptyFrame)));
}

#[test]
fn trailing_bytes_are_rejected() {
    for mut bytes in [
        every_json_type().encode().unwrap(),
        encode_v1(&every_json_type()),
    ] {
        bytes.extend_from_slice(&[0xc0, 0xc0]);
        assert!(matches!(
            decode(&bytes),
            Err(Error::TrailingBytes { count: 2 })
        ));
    }
}

#[test]
fn every_truncation_is_an_error() {
    for bytes in [
        every_json_type().encode().unwrap(),
        encode_v1(&every_json_type()),
    ] {
        for length in 0..bytes.len() {
            assert!(
                decode(&bytes[..length]).is_err(),
                "prefix of {length} bytes decoded"
            );
        }
    }
}

#[test]
#[expect(
    clippy::big_endian_bytes,
    reason = "MessagePack stores float 64 big-endian"
)]
fn non_finite_floats_in_version_1_frames_are_rejected() {
    let record = record_from(fixture_envelope().with_payload(map(json!({"x": 1.5}))));
    let bytes = encode_v1(&record);
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
fn excess_nesting_in_version_1_frames_is_rejected() {
    // Payload map (level 1) -> "x" -> MAX - 1 nested lists holding 1: the deepest valid value.
    let mut value = json!(1);
    for _ in 1..MAX_JSON_DEPTH {
        value = json!([value]);
    }
    let record = record_from(fixture_envelope().with_payload(map(json!({"x": value}))));
    let bytes = encode_v1(&record);
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
fn forged_lengths_in_version_1_frames_do_not_allocate_or_panic() {
    let record = record_from(fixture_envelope().with_payload(map(json!({}))));
    let bytes = encode_v1(&record);
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
    let record = record_from(fixture_envelope());
    for mut bytes in [record.encode().unwrap(), encode_v1(&record)] {
        // Overwrite the artifact name with spaces of the same length: a well-formed frame
        // holding a blank field.
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
}

#[test]
fn arbitrary_bytes_never_panic() {
    fn property(version: bool, body: Vec<u8>) -> bool {
        let mut frame = vec![if version { FORMAT_VERSION } else { 1 }];
        frame.extend(body);
        let _ = Record::decode(&frame);
        true
    }
    QuickCheck::new()
        .tests(2000)
        .quickcheck(property as fn(bool, Vec<u8>) -> bool);
}

#[test]
fn arbitrary_records_round_trip_exactly() {
    fn property(record: ArbitraryRecord) -> bool {
        let mut bytes = Vec::new();
        record.0.encode_into(&mut bytes).unwrap();
        let decoded = Record::decode(&bytes).unwrap();
        assert_records_identical(&as_stored(&record.0), &decoded);
        assert_eq!(decoded.encode().unwrap(), bytes);
        let from_v1 = Record::decode(&encode_v1(&record.0)).unwrap();
        assert_records_identical(&record.0, &from_v1);
        true
    }
    QuickCheck::new()
        .tests(1000)
        .quickcheck(property as fn(ArbitraryRecord) -> bool);
}

/// The offset of field `index`'s length in a version 2 frame (format/record.md).
fn length_at(index: usize) -> usize {
    48 + 4 * index
}

/// [BODY-03] A view refuses a body whose layout is broken, naming the field and problem.
#[test]
fn version_2_frames_that_break_their_layout_are_rejected_naming_the_problem() {
    let bytes = every_json_type().encode().unwrap();
    let malformed = |forged: &[u8], needle: &str| match decode(forged) {
        Err(Error::MalformedFrame { reason }) => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected a malformed frame ({needle}), got {other:?}"),
    };
    // A reserved byte set.
    let mut forged = bytes.clone();
    forged[2] = 1;
    malformed(&forged, "reserved");
    // The id's length runs past the end.
    let mut forged = bytes.clone();
    forged[length_at(0)..length_at(0) + 4].copy_from_slice(&(u32::MAX - 1).to_le_bytes());
    malformed(&forged, "`id` runs past");
    // A required field marked absent.
    let mut forged = bytes.clone();
    forged[length_at(2)..length_at(2) + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    malformed(&forged, "`artifact_name` is absent");
    // Invalid UTF-8 inside the checksum.
    let checksum = every_json_type().checksum().to_owned();
    let at = bytes
        .windows(checksum.len())
        .position(|window| window == checksum.as_bytes())
        .unwrap();
    let mut forged = bytes.clone();
    forged[at] = 0xff;
    malformed(&forged, "`checksum` is not UTF-8");
    // A payload text that is not a map.
    let record = record_from(fixture_envelope().with_payload(map(json!({"k": "v"}))));
    let mut forged = record.encode().unwrap();
    let at = forged
        .windows(9)
        .position(|window| window == br#"{"k":"v"}"#)
        .unwrap();
    forged[at] = b' ';
    malformed(&forged, "`payload` is not a json map");
    // Valid UTF-8 as a whole, but a field ends inside a character: the artifact name's `é`
    // split between it and the connection generation.
    let record = record_from(fixture_named("api.é").with_connection_generation("3"));
    let mut forged = record.encode().unwrap();
    let mut shift = |index: usize, by: i64| {
        let at = length_at(index);
        let length = u32::from_le_bytes(forged[at..at + 4].try_into().unwrap());
        let length = u32::try_from(i64::from(length) + by).unwrap();
        forged[at..at + 4].copy_from_slice(&length.to_le_bytes());
    };
    shift(2, -1);
    shift(3, 1);
    malformed(&forged, "is not UTF-8");
    // Blank required text.
    let mut forged = record_from(fixture_named("api")).encode().unwrap();
    let at = forged
        .windows(3)
        .position(|window| window == b"api")
        .unwrap();
    forged[at..at + 3].copy_from_slice(b" \t ");
    assert!(
        matches!(
            decode(&forged),
            Err(Error::BlankField {
                field: "artifact_name"
            })
        ),
        "{:?}",
        decode(&forged)
    );
}

/// [BODY-03] Map texts are parsed (and their depth bounded) when a record is built.
#[test]
fn version_2_map_texts_are_checked_when_the_record_is_built() {
    let record = record_from(fixture_envelope().with_payload(map(json!({"k": "v"}))));
    let bytes = record.encode().unwrap();
    let at = bytes
        .windows(9)
        .position(|window| window == br#"{"k":"v"}"#)
        .unwrap();
    // Same length, broken JSON: the view reads it, the owned record refuses it.
    let mut forged = bytes.clone();
    forged[at..at + 9].copy_from_slice(br#"{"k":"v"]"#);
    let mut buffer = esl_replay::record::DecodeBuffer::default();
    let view = esl_replay::record::RecordView::decode(&forged, &mut buffer).unwrap();
    assert_eq!(view.payload_json(), r#"{"k":"v"]"#);
    assert!(matches!(
        decode(&forged),
        Err(Error::InvalidField {
            field: "payload",
            ..
        })
    ));
    // Too deep: rejected before any recursive parse.
    let deep = format!(
        "{}{}",
        "[".repeat(MAX_JSON_DEPTH + 1),
        "]".repeat(MAX_JSON_DEPTH + 1)
    );
    let mut forged = bytes[..at].to_vec();
    forged.extend_from_slice(deep.as_bytes());
    forged.extend_from_slice(&bytes[at + 9..]);
    let payload = length_at(14);
    forged[payload..payload + 4].copy_from_slice(&(deep.len() as u32).to_le_bytes());
    assert!(matches!(decode(&forged), Err(Error::NestingTooDeep { .. })));
}

#[test]
fn a_derived_identity_that_disagrees_with_the_maps_is_reported() {
    let record =
        record_from(fixture_envelope().with_runtime_flags(map(json!({"pbx_node_slug": "node-a"}))));
    let mut bytes = record.encode().unwrap();
    let at = bytes
        .windows(6)
        .position(|window| window == b"node-a")
        .unwrap();
    // The first "node-a" is the derived slug (field 10), before the maps' text.
    bytes[at + 5] = b'b';
    assert!(matches!(
        decode(&bytes),
        Err(Error::InconsistentFrame {
            field: "pbx_node_slug"
        })
    ));
}

/// [BODY-03] A map text that parses but is not the writer's text for that map (here a
/// duplicate key, which a map would silently collapse) is refused when the record is built,
/// so a view and its record can never export different lines.
#[test]
fn version_2_map_texts_must_be_the_writers_text() {
    let record = record_from(fixture_envelope().with_payload(map(json!({"a": "1", "b": "2"}))));
    let mut bytes = record.encode().unwrap();
    let at = bytes
        .windows(17)
        .position(|window| window == br#"{"a":"1","b":"2"}"#)
        .unwrap();
    bytes[at + 10] = b'a';
    match decode(&bytes) {
        Err(Error::MalformedFrame { reason }) => {
            assert!(reason.contains("`payload` is not the text"), "{reason}");
        }
        other => panic!("expected a malformed frame, got {other:?}"),
    }
}

/// A batch is encoded straight from its envelopes (`Envelope::encode_record_into`): the
/// bytes are those of the record built from the envelope and then encoded, for arbitrary
/// envelopes, and an envelope the record would refuse is refused with the same error,
/// leaving the buffer as it was.
#[test]
fn envelopes_encode_to_the_bytes_of_the_records_they_become() {
    fn property(envelope: ArbitraryEnvelope, sequence: u64) -> bool {
        let ArbitraryEnvelope(envelope) = envelope;
        let sequence = sequence % 1_000_000 + 1;
        let id = RecordId::generate();
        let stored_at = datetime!(2024-01-15 10:00:01.000001 -03:30);
        let mut direct = b"kept".to_vec();
        envelope
            .encode_record_into(&id, &stored_at, sequence, &mut direct)
            .unwrap();
        let record = Record::from_envelope(envelope, id, stored_at, sequence).unwrap();
        direct[4..] == record.encode().unwrap()[..] && direct.starts_with(b"kept")
    }
    QuickCheck::new()
        .tests(500)
        .quickcheck(property as fn(ArbitraryEnvelope, u64) -> bool);

    let stored_at = datetime!(2024-01-15 10:00:01 UTC);
    for (envelope, sequence) in [
        (fixture_envelope(), 0),
        (fixture_envelope(), u64::MAX),
        (Envelope::new(" ", "api.dispatch", stored_at), 1),
        (Envelope::new("1", "", stored_at), 1),
        (deep_envelope(), 1),
    ] {
        let id = RecordId::generate();
        let mut out = b"kept".to_vec();
        let direct = envelope.encode_record_into(&id, &stored_at, sequence, &mut out);
        let built = Record::from_envelope(envelope, id, stored_at, sequence);
        assert_eq!(
            direct.unwrap_err().to_string(),
            built.unwrap_err().to_string()
        );
        assert_eq!(out, b"kept");
    }
}

/// An envelope whose runtime flags nest deeper than a record may.
fn deep_envelope() -> Envelope {
    let mut value = json!(1);
    for _ in 0..=MAX_JSON_DEPTH {
        value = json!({ "a": value });
    }
    fixture_envelope().with_runtime_flags(map(value))
}
