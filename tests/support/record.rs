//! Shared fixtures and generators for the record integration tests.
//!
//! Fixtures mirror the reference package's test fixtures (§1.1: version "1", name
//! `api.dispatch`, capture 2024-01-15T10:00:00Z, payload originate). The quickcheck
//! generators produce records whose JSON exercises every corner the PHP-compatible writers
//! care about: every JSON type, integer extremes, integers beyond `i64`, floats needing the
//! exponent form, `-0.0`, numeric-looking keys, maps keyed "0".."n-1", escapes, U+2028 and
//! non-ASCII text, and timestamps with sub-millisecond precision and odd offsets.

use esl_replay::record::{Envelope, JsonMap, Record, RecordFields, RecordId};
use quickcheck::{Arbitrary, Gen};
use serde_json::{Number, Value, json};
use time::macros::datetime;
use time::{OffsetDateTime, UtcOffset};

use super::map;

/// When the reference fixture was captured.
pub(crate) const FIXTURE_CAPTURE: OffsetDateTime = datetime!(2024-01-15 10:00:00 UTC);

/// The reference fixture's envelope (§1.1): version "1", `api.dispatch`, captured at
/// [`FIXTURE_CAPTURE`], payload `originate sofia/internal/1000`, nothing else set.
pub(crate) fn fixture_envelope() -> Envelope {
    fixture_named("api.dispatch")
}

/// [`fixture_envelope`] under another artifact name.
pub(crate) fn fixture_named(artifact_name: &str) -> Envelope {
    Envelope::new("1", artifact_name, FIXTURE_CAPTURE).with_payload(map(json!({
        "command": "originate",
        "args": "sofia/internal/1000"
    })))
}

/// A record built from `envelope` with a fresh id, fixed storage time and sequence 1.
pub(crate) fn record_from(envelope: Envelope) -> Record {
    Record::from_envelope(
        envelope,
        RecordId::generate(),
        datetime!(2024-01-15 10:00:01.250 UTC),
        1,
    )
    .unwrap()
}

/// Asserts that two JSON values are identical down to number kinds and float bits.
pub(crate) fn assert_bit_identical(left: &Value, right: &Value) {
    match (left, right) {
        (Value::Number(left), Value::Number(right)) => assert_same_number(left, right),
        (Value::Array(left), Value::Array(right)) => {
            assert_eq!(left.len(), right.len());
            left.iter()
                .zip(right)
                .for_each(|(left, right)| assert_bit_identical(left, right));
        }
        (Value::Object(left), Value::Object(right)) => assert_maps_bit_identical(left, right),
        _ => assert_eq!(left, right),
    }
}

/// Asserts that two maps have the same keys in the same order and bit-identical values.
pub(crate) fn assert_maps_bit_identical(left: &JsonMap, right: &JsonMap) {
    let left_keys: Vec<_> = left.keys().collect();
    let right_keys: Vec<_> = right.keys().collect();
    assert_eq!(left_keys, right_keys);
    left.values()
        .zip(right.values())
        .for_each(|(left, right)| assert_bit_identical(left, right));
}

fn assert_same_number(left: &Number, right: &Number) {
    assert_eq!(
        (left.is_u64(), left.is_i64(), left.is_f64()),
        (right.is_u64(), right.is_i64(), right.is_f64())
    );
    if left.is_f64() {
        assert_eq!(
            left.as_f64().map(f64::to_bits),
            right.as_f64().map(f64::to_bits)
        );
    } else {
        assert_eq!(left, right);
    }
}

/// Asserts that two records are identical, including timestamp offsets and float bits.
pub(crate) fn assert_records_identical(left: &Record, right: &Record) {
    assert_eq!(left, right);
    assert_eq!(
        left.capture_timestamp().offset(),
        right.capture_timestamp().offset()
    );
    assert_eq!(
        left.capture_timestamp().nanosecond(),
        right.capture_timestamp().nanosecond()
    );
    assert_eq!(left.stored_at().offset(), right.stored_at().offset());
    for (left, right) in [
        (left.correlation_ids(), right.correlation_ids()),
        (left.runtime_flags(), right.runtime_flags()),
        (left.payload(), right.payload()),
        (left.tags(), right.tags()),
    ] {
        assert_maps_bit_identical(left, right);
    }
}

/// Keys that stress PHP `ksort`, including ties (" 1" and "01" equal 1) and numeric strings.
const KEYS: &[&str] = &[
    "0",
    "1",
    "2",
    "9",
    "10",
    "-1",
    "01",
    "-0",
    " 1",
    "1.5",
    "1e3",
    "a",
    "B",
    "_",
    "é",
    "",
    "Event-Name",
    "x/y",
    "\u{2028}",
    "9a",
];

/// Keys on which PHP's key comparison is a strict total order (no ties, no cycles), so the
/// sorted order cannot depend on insertion order.
const TOTALLY_ORDERED_KEYS: &[&str] = &[
    "0",
    "1",
    "2",
    "9",
    "10",
    "-1",
    "1.5",
    "1e3",
    "a",
    "B",
    "_",
    "é",
    "",
    "Event-Name",
    "x/y",
    "\u{2028}",
    "9a",
];

/// Which keys generated maps use.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Keys {
    /// Stress keys plus random strings.
    Any,
    /// Only [`TOTALLY_ORDERED_KEYS`].
    TotallyOrdered,
}

const STRINGS: &[&str] = &[
    "",
    " ",
    "plain",
    "sofia/internal/1000",
    "é 😀",
    "\u{2028}\u{2029}",
    "\"quoted\" \\ back",
    "\u{0}\u{1}\u{1f}\u{7f}",
    "\n\r\t\u{8}\u{c}",
    "<>&'",
    "\u{85}",
    "1.0",
    "-0",
];

const FLOATS: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.1,
    0.5,
    1.5,
    1e16,
    1e17,
    1.5e20,
    1e100,
    1e-4,
    1e-5,
    1.5e-7,
    5e-324,
    f64::MAX,
    f64::MIN_POSITIVE,
    123_456.789,
    0.30000000000000004,
    12_345_678_901_234_567_890.0,
];

fn pick<T: Copy>(g: &mut Gen, items: &[T]) -> T {
    *g.choose(items).unwrap()
}

fn below(g: &mut Gen, bound: usize) -> usize {
    usize::arbitrary(g) % bound.max(1)
}

fn arbitrary_string(g: &mut Gen) -> String {
    if bool::arbitrary(g) {
        pick(g, STRINGS).to_owned()
    } else {
        String::arbitrary(g)
    }
}

fn arbitrary_key(g: &mut Gen, keys: Keys) -> String {
    match keys {
        Keys::TotallyOrdered => pick(g, TOTALLY_ORDERED_KEYS).to_owned(),
        Keys::Any if below(g, 3) < 2 => pick(g, KEYS).to_owned(),
        Keys::Any => String::arbitrary(g),
    }
}

fn arbitrary_number(g: &mut Gen) -> Value {
    match below(g, 7) {
        0 => json!(i64::arbitrary(g)),
        1 => json!(pick(
            g,
            &[0i64, 1, -1, i64::MAX, i64::MIN, 9_007_199_254_740_993]
        )),
        2 => json!(pick(
            g,
            &[i64::MAX as u64 + 1, u64::MAX, 12_345_678_901_234_567_890]
        )),
        3 | 4 => json!(pick(g, FLOATS)),
        5 => {
            let value = f64::arbitrary(g);
            if value.is_finite() {
                json!(value)
            } else {
                json!(0.25)
            }
        }
        _ => json!(u8::arbitrary(g)),
    }
}

/// A JSON value at `level` (a record map is level 1), bounded in size and depth.
pub(crate) fn arbitrary_value(g: &mut Gen, level: usize, keys: Keys) -> Value {
    let container_allowed = level < 5;
    match below(g, if container_allowed { 8 } else { 5 }) {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(g)),
        2 => arbitrary_number(g),
        3 | 4 => Value::String(arbitrary_string(g)),
        5 => Value::Array(
            (0..below(g, 4))
                .map(|_| arbitrary_value(g, level + 1, keys))
                .collect(),
        ),
        _ => Value::Object(arbitrary_map(g, level + 1, keys)),
    }
}

/// A JSON map at `level`; sometimes keyed "0".."n-1" in order, which PHP writes as a list.
pub(crate) fn arbitrary_map(g: &mut Gen, level: usize, keys: Keys) -> JsonMap {
    let length = below(g, 5);
    if below(g, 5) == 0 {
        return (0..length)
            .map(|index| (index.to_string(), arbitrary_value(g, level + 1, keys)))
            .collect();
    }
    (0..length)
        .map(|_| (arbitrary_key(g, keys), arbitrary_value(g, level + 1, keys)))
        .collect()
}

fn arbitrary_optional(g: &mut Gen) -> Option<String> {
    if bool::arbitrary(g) {
        Some(arbitrary_string(g))
    } else {
        None
    }
}

fn arbitrary_non_blank(g: &mut Gen) -> String {
    let text = arbitrary_string(g);
    if esl_replay::record::is_blank(&text) {
        format!("v{text}")
    } else {
        text
    }
}

/// A timestamp between years 1 and 9999 with nanoseconds and an arbitrary offset.
pub(crate) fn arbitrary_timestamp(g: &mut Gen) -> OffsetDateTime {
    const FIRST: i64 = -62_135_596_800 + 2 * 86_400;
    const LAST: i64 = 253_402_300_799 - 2 * 86_400;
    let seconds = FIRST + (i64::arbitrary(g).rem_euclid(LAST - FIRST));
    let nanosecond = u32::arbitrary(g) % 1_000_000_000;
    let offset_seconds = match below(g, 4) {
        0 => 0,
        1 => (i32::arbitrary(g) % 24) * 3600,
        2 => (i32::arbitrary(g) % (24 * 60)) * 60,
        _ => i32::arbitrary(g) % 86_400,
    };
    let offset = UtcOffset::from_whole_seconds(offset_seconds).unwrap_or(UtcOffset::UTC);
    OffsetDateTime::from_unix_timestamp(seconds)
        .unwrap()
        .replace_nanosecond(nanosecond)
        .unwrap()
        .to_offset(offset)
}

/// An arbitrary envelope whose maps use [`Keys::Any`].
#[derive(Clone, Debug)]
pub(crate) struct ArbitraryEnvelope(pub(crate) Envelope);

impl Arbitrary for ArbitraryEnvelope {
    fn arbitrary(g: &mut Gen) -> Self {
        Self(arbitrary_envelope(g, Keys::Any))
    }
}

/// An arbitrary envelope whose maps use [`Keys::TotallyOrdered`].
#[derive(Clone, Debug)]
pub(crate) struct TotallyOrderedEnvelope(pub(crate) Envelope);

impl Arbitrary for TotallyOrderedEnvelope {
    fn arbitrary(g: &mut Gen) -> Self {
        Self(arbitrary_envelope(g, Keys::TotallyOrdered))
    }
}

fn arbitrary_envelope(g: &mut Gen, keys: Keys) -> Envelope {
    Envelope {
        artifact_version: arbitrary_non_blank(g),
        artifact_name: arbitrary_non_blank(g),
        capture_timestamp: arbitrary_timestamp(g),
        capture_path: arbitrary_optional(g),
        connection_generation: arbitrary_optional(g),
        session_id: arbitrary_optional(g),
        job_uuid: arbitrary_optional(g),
        event_name: arbitrary_optional(g),
        correlation_ids: arbitrary_map(g, 1, keys),
        runtime_flags: arbitrary_map(g, 1, keys),
        payload: arbitrary_map(g, 1, keys),
    }
}

/// An arbitrary valid record, checksum included, with arbitrary tags.
#[derive(Clone, Debug)]
pub(crate) struct ArbitraryRecord(pub(crate) Record);

impl Arbitrary for ArbitraryRecord {
    fn arbitrary(g: &mut Gen) -> Self {
        let ArbitraryEnvelope(envelope) = ArbitraryEnvelope::arbitrary(g);
        let sequence = u64::arbitrary(g) % (i64::MAX as u64) + 1;
        let id = if bool::arbitrary(g) {
            RecordId::generate()
        } else {
            RecordId::new(arbitrary_non_blank(g)).unwrap()
        };
        let record = Record::from_envelope(envelope, id, arbitrary_timestamp(g), sequence).unwrap();
        let mut fields: RecordFields = record.into_fields();
        fields.tags = arbitrary_map(g, 1, Keys::Any);
        Self(Record::new(fields).unwrap())
    }
}

/// Returns a copy of `map` with the keys of every map level in a permuted order.
pub(crate) fn permute_keys(map: &JsonMap, g: &mut Gen) -> JsonMap {
    let mut entries: Vec<(String, Value)> = map
        .iter()
        .map(|(key, value)| (key.clone(), permute_value(value, g)))
        .collect();
    for index in (1..entries.len()).rev() {
        entries.swap(index, below(g, index + 1));
    }
    entries.into_iter().collect()
}

fn permute_value(value: &Value, g: &mut Gen) -> Value {
    match value {
        Value::Object(map) => Value::Object(permute_keys(map, g)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|item| permute_value(item, g)).collect())
        }
        other => other.clone(),
    }
}

/// The frame body an earlier build wrote for `record`: format version 1, the record as a
/// MessagePack array (`src/record/codec.rs` documents the layout). This build only reads
/// version 1, so tests make such frames here.
pub(crate) fn encode_v1(record: &Record) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Timestamp(i32, u16, u8, u8, u8, u32, i32);
    fn timestamp(at: &OffsetDateTime) -> Timestamp {
        let (hour, minute, second, nanosecond) = at.to_hms_nano();
        Timestamp(
            at.year(),
            at.ordinal(),
            hour,
            minute,
            second,
            nanosecond,
            at.offset().whole_seconds(),
        )
    }
    let wire = (
        record.id().as_str(),
        record.artifact_version(),
        record.artifact_name(),
        timestamp(record.capture_timestamp()),
        timestamp(record.stored_at()),
        record.append_sequence(),
        record.connection_generation(),
        record.session_id(),
        record.job_uuid(),
        record.event_name(),
        record.capture_path(),
        record.correlation_ids(),
        record.runtime_flags(),
        record.payload(),
        record.checksum(),
        record.tags(),
    );
    let mut out = vec![1u8];
    rmp_serde::encode::write(&mut out, &wire).unwrap();
    out
}

/// `record` as it reads back from a version 2 frame: its maps go through the JSON text an
/// NDJSON export writes, so integers beyond `i64` come back as floats and integral floats as
/// integers (the same bytes either way); every other field is unchanged.
pub(crate) fn as_stored(record: &Record) -> Record {
    let texts = esl_replay::record::MapTexts::of(record);
    record.view(&texts).to_record().unwrap()
}
