//! How is a checkpoint written to and read from its file?
//!
//! The layout is the reference's (§4.2, decision K5): PHP `JSON_PRETTY_PRINT` output (four
//! spaces per level, `"key": value`, `\n` line breaks, no trailing newline) of an object
//! with the keys `key`, `last_consumed_sequence` (integer), `byte_offset_hint` (integer or
//! `null`), `saved_at` (the millisecond reference text of §1.5) and `metadata` (insertion
//! order, PHP escaping and number forms, an empty map written `[]`):
//!
//! ```text
//! {
//!     "key": "k2",
//!     "last_consumed_sequence": 1,
//!     "byte_offset_hint": null,
//!     "saved_at": "2024-06-01T12:00:00.000+00:00",
//!     "metadata": []
//! }
//! ```
//!
//! The format has no version field, so there is no unknown version to reject (C4); unknown
//! keys are ignored. [`decode`] reads every file the reference reads, as it reads it:
//!
//! - the document must be JSON nesting at most [`FILE_DEPTH_MAX`] levels, and an object
//!   (an empty file, truncated JSON, other invalid JSON, deeper nesting and any other top
//!   level are [`CorruptKind`]s);
//! - `key` is the file's `key` when present, even if it differs from the key asked for (an
//!   integer or `true` is turned into text as PHP does), else the fallback key (the key
//!   asked for, or the file name's stem in a directory listing); a blank key is corrupt;
//! - `last_consumed_sequence` is PHP's integer cast of the field: 0 when missing or `null`,
//!   integers as they are, floats truncated, numeric strings by their numeric prefix (`"12"`
//!   is 12, `"abc"` is 0), booleans 0 or 1, lists and maps 0 when empty and 1 otherwise;
//!   a negative result is corrupt, and so is a number PHP cannot hold as an integer (the
//!   reference converts those in platform-defined ways);
//! - `byte_offset_hint` is the field when it is a JSON integer, otherwise `None`
//!   (`"5"` is `None`); a negative integer is corrupt;
//! - `saved_at` is parsed (RFC 3339, see [`crate::record::timestamp::parse`]); when missing
//!   or `null` it is the current time, as in the reference; a non-string or an unparseable
//!   text is corrupt (the reference also accepts free-form text such as `tomorrow`);
//! - `metadata` is the field when it is a map or a list (a list becomes a map keyed "0",
//!   "1", ... and is written back as the same list), otherwise empty.

use serde_json::Value;
use time::OffsetDateTime;

use super::{Checkpoint, CorruptKind, Error};
use crate::record::canonical::{self, KeyOrder};
use crate::record::{JsonMap, ReadCursor, php_map, timestamp};

/// How deep a checkpoint file may nest: the reference decodes checkpoint files with PHP's
/// default depth limit of 32, the document object being level 1.
pub const FILE_DEPTH_MAX: usize = 32;

/// How many characters of a bad `saved_at` text an error keeps.
const ERROR_TEXT_CHARS_MAX: usize = 64;

/// Writes a checkpoint in the reference file layout (see the module docs), without a
/// trailing newline.
///
/// # Errors
///
/// [`Error::MetadataTooDeep`] only if the metadata is deeper than the JSON writer allows,
/// which a validated [`Checkpoint`] never is.
pub fn encode(checkpoint: &Checkpoint) -> Result<String, Error> {
    let cursor = checkpoint.cursor();
    let mut document = JsonMap::new();
    document.insert("key".into(), checkpoint.key().into());
    document.insert(
        "last_consumed_sequence".into(),
        cursor.last_consumed_sequence().into(),
    );
    document.insert(
        "byte_offset_hint".into(),
        cursor.byte_offset_hint().map_or(Value::Null, Value::from),
    );
    document.insert(
        "saved_at".into(),
        timestamp::to_reference_text(checkpoint.saved_at()).into(),
    );
    document.insert(
        "metadata".into(),
        Value::Object(checkpoint.metadata().clone()),
    );
    canonical::to_json_pretty(&Value::Object(document), KeyOrder::Insertion).map_err(|_| {
        Error::MetadataTooDeep {
            max: super::METADATA_DEPTH_MAX,
        }
    })
}

/// Reads a checkpoint from the bytes of its file (see the module docs for the rules).
/// `fallback_key` is used when the file has no `key`; `now` when it has no `saved_at`.
///
/// # Errors
///
/// The [`CorruptKind`] describing what is wrong; the caller adds the file's path.
pub fn decode(
    bytes: &[u8],
    fallback_key: &str,
    now: OffsetDateTime,
) -> Result<Checkpoint, CorruptKind> {
    if bytes.is_empty() {
        return Err(CorruptKind::Empty);
    }
    if crate::record::json_nesting_exceeds(bytes, FILE_DEPTH_MAX) {
        return Err(CorruptKind::NestingTooDeep {
            max: FILE_DEPTH_MAX,
        });
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|error| {
        let (line, column) = (error.line(), error.column());
        if error.is_eof() {
            CorruptKind::Truncated { line, column }
        } else {
            CorruptKind::InvalidJson { line, column }
        }
    })?;
    let Value::Object(mut object) = value else {
        return Err(CorruptKind::NotAnObject);
    };
    let key = match object.get("key") {
        None | Some(Value::Null) => fallback_key.to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Number(number)) if number.is_i64() => number.to_string(),
        Some(Value::Bool(true)) => "1".to_owned(),
        Some(Value::Bool(false)) => String::new(),
        Some(_) => return Err(CorruptKind::KeyNotString),
    };
    let sequence = php_int_cast(object.get("last_consumed_sequence").unwrap_or(&Value::Null))?;
    let sequence =
        u64::try_from(sequence).map_err(|_| CorruptKind::NegativeSequence { value: sequence })?;
    let hint = match object.get("byte_offset_hint").and_then(Value::as_i64) {
        Some(hint) => {
            Some(u64::try_from(hint).map_err(|_| CorruptKind::NegativeHint { value: hint })?)
        }
        None => None,
    };
    let saved_at = match object.get("saved_at") {
        None | Some(Value::Null) => now,
        Some(Value::String(text)) => {
            timestamp::parse(text).map_err(|_| CorruptKind::InvalidSavedAt {
                text: text.chars().take(ERROR_TEXT_CHARS_MAX).collect(),
            })?
        }
        Some(_) => return Err(CorruptKind::SavedAtNotString),
    };
    let metadata = object
        .swap_remove("metadata")
        .and_then(|value| php_map(value).ok())
        .unwrap_or_default();
    Checkpoint::new(key, ReadCursor::new(sequence, hint), saved_at, metadata).map_err(|error| {
        match error {
            Error::BlankKey => CorruptKind::BlankKey,
            Error::MetadataTooDeep { .. } => CorruptKind::NestingTooDeep {
                max: FILE_DEPTH_MAX,
            },
            _ => CorruptKind::SequenceOutOfRange,
        }
    })
}

/// Whether a file that [`decode`] reads says exactly where consumer `key` resumes: its
/// `last_consumed_sequence` is a JSON integer (not a value PHP's cast turns into one, such
/// as `null`, `"garbage"` or `[5]`, nor a missing field) and its `key` is `key` itself (a
/// file of another consumer, found under a legacy name, is not this consumer's progress).
/// Listings and the reference read such files leniently; a consumer that resumes must not
/// start from a guessed position.
///
/// # Errors
///
/// What is wrong, as a phrase for [`Error::NotResumable`].
pub fn check_resumable(bytes: &[u8], key: &str) -> Result<(), String> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| format!("invalid json: {e}"))?;
    let Value::Object(object) = value else {
        return Err("the json document is not an object".to_owned());
    };
    match object.get("last_consumed_sequence") {
        Some(Value::Number(number)) if number.as_u64().is_some() => {}
        None => return Err("it has no `last_consumed_sequence`".to_owned()),
        Some(other) => {
            return Err(format!(
                "`last_consumed_sequence` is {}, not an integer",
                abbreviate(&other.to_string())
            ));
        }
    }
    match object.get("key") {
        Some(Value::String(found)) if found == key => Ok(()),
        Some(Value::String(found)) => Err(format!(
            "its `key` is {:?}: it holds another consumer's progress",
            abbreviate(found)
        )),
        None => Err("it has no `key`".to_owned()),
        Some(other) => Err(format!(
            "its `key` is {}, not a string",
            abbreviate(&other.to_string())
        )),
    }
}

/// At most [`ERROR_TEXT_CHARS_MAX`] characters of a text, for an error message.
fn abbreviate(text: &str) -> String {
    text.chars().take(ERROR_TEXT_CHARS_MAX).collect()
}

/// PHP's `(int)` cast of a decoded JSON value (see the module docs). Numbers PHP cannot
/// hold as an integer are [`CorruptKind::SequenceOutOfRange`].
fn php_int_cast(value: &Value) -> Result<i64, CorruptKind> {
    match value {
        Value::Null | Value::Bool(false) => Ok(0),
        Value::Bool(true) => Ok(1),
        Value::Number(number) => match number.as_i64() {
            Some(integer) => Ok(integer),
            // Beyond i64 PHP holds the number as a float; floats are truncated.
            None => float_to_int(number.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(text) => Ok(php_string_to_int(text)),
        Value::Array(items) => Ok(i64::from(!items.is_empty())),
        Value::Object(map) => Ok(i64::from(!map.is_empty())),
    }
}

/// Truncates a float toward zero, or fails when it is outside the `i64` range or not finite.
fn float_to_int(value: f64) -> Result<i64, CorruptKind> {
    // -2^63 is exactly representable; 2^63 is the first value beyond i64::MAX.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if value.is_finite() && (-LIMIT..LIMIT).contains(&value) {
        #[expect(
            clippy::cast_possible_truncation,
            reason = "the range check above makes the truncating cast exact"
        )]
        Ok(value.trunc() as i64)
    } else {
        Err(CorruptKind::SequenceOutOfRange)
    }
}

/// PHP's `(int)` cast of a string: the value of its leading numeric text after optional
/// whitespace, 0 when there is none. Integer text that overflows, and text with a fraction
/// or exponent, is read as a float and saturated to the `i64` range (non-finite is 0).
fn php_string_to_int(text: &str) -> i64 {
    let bytes = text.as_bytes();
    let mut position = bytes
        .iter()
        .take_while(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c))
        .count();
    let start = position;
    if matches!(bytes.get(position), Some(b'+' | b'-')) {
        position += 1;
    }
    let digits = |from: usize| {
        bytes
            .iter()
            .skip(from)
            .take_while(|byte| byte.is_ascii_digit())
            .count()
    };
    let whole = digits(position);
    position += whole;
    let mut is_float = false;
    let mut fraction = 0;
    if bytes.get(position) == Some(&b'.') {
        fraction = digits(position + 1);
        if whole + fraction > 0 {
            is_float = true;
            position += 1 + fraction;
        }
    }
    if whole + fraction == 0 {
        return 0;
    }
    if matches!(bytes.get(position), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(position + 1), Some(b'+' | b'-')));
        let exponent = digits(position + 1 + sign);
        if exponent > 0 {
            is_float = true;
            position += 1 + sign + exponent;
        }
    }
    let numeric = text.get(start..position).unwrap_or("0");
    if !is_float && let Ok(integer) = numeric.parse::<i64>() {
        return integer;
    }
    let float: f64 = numeric.parse().unwrap_or(0.0);
    if !float.is_finite() {
        0
    } else {
        float_to_int(float).unwrap_or(if float > 0.0 { i64::MAX } else { i64::MIN })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2030-01-01 00:00 UTC);

    fn decode_text(text: &str) -> Result<Checkpoint, CorruptKind> {
        decode(text.as_bytes(), "fallback", NOW)
    }

    fn with_field(field: &str, value: &Value) -> Result<Checkpoint, CorruptKind> {
        let mut document = json!({
            "key": "k",
            "last_consumed_sequence": 1,
            "byte_offset_hint": null,
            "saved_at": "2024-06-01T12:00:00.000+00:00",
            "metadata": []
        });
        document[field] = value.clone();
        decode_text(&document.to_string())
    }

    #[test]
    fn encodes_the_reference_example_exactly() {
        let checkpoint = Checkpoint::new(
            "k2",
            ReadCursor::new(1, None),
            datetime!(2024-06-01 12:00 UTC),
            JsonMap::new(),
        )
        .unwrap();
        assert_eq!(
            encode(&checkpoint).unwrap(),
            "{\n    \"key\": \"k2\",\n    \"last_consumed_sequence\": 1,\n    \"byte_offset_hint\": null,\n    \"saved_at\": \"2024-06-01T12:00:00.000+00:00\",\n    \"metadata\": []\n}"
        );
    }

    #[test]
    fn round_trips_through_the_file_form() {
        let metadata = match json!({"attempt": 2, "tags": ["a", "b"], "nested": {"x": 1.5}, "empty": {}})
        {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let checkpoint = Checkpoint::new(
            "a/b é",
            ReadCursor::new(42, Some(4096)),
            datetime!(2024-06-01 12:00:00.123 +02:00),
            metadata,
        )
        .unwrap();
        let text = encode(&checkpoint).unwrap();
        let back = decode_text(&text).unwrap();
        assert_eq!(back.key(), "a/b é");
        assert_eq!(back.cursor(), checkpoint.cursor());
        assert_eq!(back.saved_at(), checkpoint.saved_at());
        assert_eq!(back.saved_at().offset(), checkpoint.saved_at().offset());
        assert_eq!(encode(&back).unwrap(), text);
    }

    #[test]
    fn missing_fields_take_reference_defaults() {
        let checkpoint = decode_text("{}").unwrap();
        assert_eq!(checkpoint.key(), "fallback");
        assert_eq!(checkpoint.cursor(), &ReadCursor::new(0, None));
        assert_eq!(checkpoint.saved_at(), &NOW);
        assert!(checkpoint.metadata().is_empty());
        let checkpoint = decode_text(r#"{"key":null,"saved_at":null,"metadata":"x"}"#).unwrap();
        assert_eq!(checkpoint.key(), "fallback");
        assert_eq!(checkpoint.saved_at(), &NOW);
        assert!(checkpoint.metadata().is_empty());
    }

    #[test]
    fn the_files_key_wins_over_the_requested_one() {
        assert_eq!(with_field("key", &json!("other")).unwrap().key(), "other");
        assert_eq!(with_field("key", &json!(5)).unwrap().key(), "5");
        assert_eq!(with_field("key", &json!(true)).unwrap().key(), "1");
        assert_eq!(with_field("key", &json!(false)), Err(CorruptKind::BlankKey));
        assert_eq!(with_field("key", &json!("  ")), Err(CorruptKind::BlankKey));
        assert_eq!(
            with_field("key", &json!(["a"])),
            Err(CorruptKind::KeyNotString)
        );
        assert_eq!(
            with_field("key", &json!(1.5)),
            Err(CorruptKind::KeyNotString)
        );
    }

    #[test]
    fn the_sequence_is_php_integer_cast() {
        for (value, expected) in [
            (json!(7), 7),
            (json!("12"), 12),
            (json!(" 12abc"), 12),
            (json!("abc"), 0),
            (json!("1e3"), 1000),
            (json!("1.9"), 1),
            (json!(".5"), 0),
            (json!("0x1A"), 0),
            (json!("+4"), 4),
            (json!("99999999999999999999"), i64::MAX),
            (json!("1e999"), 0),
            (json!(7.9), 7),
            (json!(true), 1),
            (json!(false), 0),
            (json!(null), 0),
            (json!([]), 0),
            (json!([0]), 1),
            (json!({"a": 1}), 1),
        ] {
            let checkpoint = with_field("last_consumed_sequence", &value).unwrap();
            assert_eq!(
                checkpoint.cursor().last_consumed_sequence(),
                u64::try_from(expected).unwrap(),
                "{value}"
            );
        }
    }

    #[test]
    fn negative_and_unrepresentable_sequences_are_corrupt() {
        assert_eq!(
            with_field("last_consumed_sequence", &json!(-1)),
            Err(CorruptKind::NegativeSequence { value: -1 })
        );
        assert_eq!(
            with_field("last_consumed_sequence", &json!("-3")),
            Err(CorruptKind::NegativeSequence { value: -3 })
        );
        assert_eq!(
            with_field("last_consumed_sequence", &json!(1e300)),
            Err(CorruptKind::SequenceOutOfRange)
        );
        assert_eq!(
            with_field("last_consumed_sequence", &json!(u64::MAX)),
            Err(CorruptKind::SequenceOutOfRange)
        );
    }

    #[test]
    fn the_hint_must_be_a_json_integer() {
        assert_eq!(
            with_field("byte_offset_hint", &json!(4096))
                .unwrap()
                .cursor()
                .byte_offset_hint(),
            Some(4096)
        );
        for value in [json!("5"), json!(5.5), json!(null), json!(u64::MAX)] {
            assert_eq!(
                with_field("byte_offset_hint", &value)
                    .unwrap()
                    .cursor()
                    .byte_offset_hint(),
                None,
                "{value}"
            );
        }
        assert_eq!(
            with_field("byte_offset_hint", &json!(-2)),
            Err(CorruptKind::NegativeHint { value: -2 })
        );
    }

    #[test]
    fn saved_at_must_parse() {
        assert_eq!(
            with_field("saved_at", &json!("2024-06-01T12:00:00Z"))
                .unwrap()
                .saved_at(),
            &datetime!(2024-06-01 12:00 UTC)
        );
        assert!(matches!(
            with_field("saved_at", &json!("not a time")),
            Err(CorruptKind::InvalidSavedAt { text }) if text == "not a time"
        ));
        assert_eq!(
            with_field("saved_at", &json!(5)),
            Err(CorruptKind::SavedAtNotString)
        );
    }

    #[test]
    fn metadata_lists_become_index_maps_and_are_written_back_as_lists() {
        let checkpoint = with_field("metadata", &json!(["a", {"b": {}}])).unwrap();
        assert_eq!(checkpoint.metadata().keys().collect::<Vec<_>>(), ["0", "1"]);
        assert!(encode(&checkpoint).unwrap().ends_with(
            "\"metadata\": [\n        \"a\",\n        {\n            \"b\": []\n        }\n    ]\n}"
        ));
    }

    #[test]
    fn broken_documents_are_classified() {
        assert_eq!(decode_text(""), Err(CorruptKind::Empty));
        assert!(matches!(
            decode_text("{\n    \"key\": \"k\",\n    \"last_con"),
            Err(CorruptKind::Truncated { line: 3, .. })
        ));
        assert!(matches!(
            decode_text("   "),
            Err(CorruptKind::Truncated { .. })
        ));
        assert!(matches!(
            decode_text("{\"key\": \"k\"} trailing"),
            Err(CorruptKind::InvalidJson { line: 1, .. })
        ));
        assert!(matches!(
            decode(b"{\"key\": \"\xff\"}", "k", NOW),
            Err(CorruptKind::InvalidJson { .. })
        ));
        for text in ["[]", "[1]", "\"x\"", "5", "null"] {
            assert_eq!(decode_text(text), Err(CorruptKind::NotAnObject), "{text}");
        }
    }

    #[test]
    fn nesting_is_limited_like_the_reference_decoder() {
        let nested = |levels: usize| {
            format!(
                "{{\"metadata\":{{\"m\":{}1{}}}}}",
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        // Document (1) + metadata (2) + 30 lists = 32 levels: accepted.
        assert!(decode_text(&nested(30)).is_ok());
        assert_eq!(
            decode_text(&nested(31)),
            Err(CorruptKind::NestingTooDeep { max: 32 })
        );
        assert_eq!(
            decode_text(&nested(100_000)),
            Err(CorruptKind::NestingTooDeep { max: 32 })
        );
        // Brackets inside strings do not count.
        let in_string = format!("{{\"metadata\":{{\"m\":\"{}\"}}}}", "[".repeat(100));
        assert!(decode_text(&in_string).is_ok());
    }
}
