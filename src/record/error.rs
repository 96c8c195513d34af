//! How can building, reading, encoding or decoding a replay record fail?
//!
//! Every failure of the record layer is one variant of [`Error`]. Variants carry the field
//! name, version, sequence or line number involved, so callers can report the problem
//! precisely without matching on message text. Messages are lowercase without a trailing
//! period and never repeat the text of their `source()`.

use serde_json::Value;
use time::OffsetDateTime;

/// An error from the record layer: validation, timestamps, NDJSON, the binary codec,
/// cursors and criteria.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A text field that must hold a non-blank string is blank (empty after PHP `trim`).
    #[error("field `{field}` must not be blank")]
    BlankField {
        /// Name of the field, as in the NDJSON layout (`artifact_name`, `id`, ...).
        field: &'static str,
    },

    /// An append sequence outside `1..=i64::MAX` (the range the reference and SQLite can hold).
    #[error("append sequence {sequence} is out of range (must be between 1 and {max})", max = i64::MAX)]
    SequenceOutOfRange {
        /// The rejected sequence (wide enough for negative and oversized input).
        sequence: i128,
    },

    /// A JSON value nests deeper than [`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH) levels.
    #[error("json value is nested deeper than {max} levels")]
    NestingTooDeep {
        /// The maximum depth allowed; a record's map field itself is level 1.
        max: usize,
    },

    /// An NDJSON line holds more JSON values than a record may
    /// ([`MAX_JSON_VALUES`](super::MAX_JSON_VALUES)).
    #[error("json text holds more than {max} values")]
    TooManyValues {
        /// The most values allowed.
        max: usize,
    },

    /// A timestamp text that the importer cannot parse.
    #[error("invalid timestamp {text:?} (expected rfc 3339 such as 2024-01-15T10:00:00.000+00:00)")]
    InvalidTimestamp {
        /// The rejected text, cut to at most 64 characters.
        text: String,
    },

    /// A field of an NDJSON line holds a value that is present and typed right but invalid.
    #[error("field `{field}` is invalid")]
    InvalidField {
        /// Name of the field.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: Box<Error>,
    },

    /// An NDJSON line is not valid JSON (or holds a number out of the `f64` range).
    #[error("invalid json")]
    InvalidJson {
        /// The parser's error, with its column.
        #[source]
        source: serde_json::Error,
    },

    /// An NDJSON line is valid JSON but not a JSON object.
    #[error("ndjson line is not a json object")]
    NotAnObject,

    /// An NDJSON line has no `schema_version` key.
    #[error("missing field: schema_version (supported: {supported})")]
    MissingSchemaVersion {
        /// The schema version this build reads and writes.
        supported: u8,
    },

    /// An NDJSON line has a `schema_version` other than the integer this build supports.
    #[error("unsupported schema_version {found} (supported: {supported})")]
    UnsupportedSchemaVersion {
        /// The value found, as JSON (a string `"1"` is shown quoted).
        found: Value,
        /// The schema version this build reads and writes.
        supported: u8,
    },

    /// A required string field of an NDJSON line is missing or not a JSON string.
    #[error("missing or non-string field: {field}")]
    FieldNotString {
        /// Name of the field.
        field: &'static str,
    },

    /// A required integer field of an NDJSON line is missing or not a JSON integer.
    #[error("missing or non-integer field: {field}")]
    FieldNotInteger {
        /// Name of the field.
        field: &'static str,
    },

    /// A required map field of an NDJSON line is missing or neither a JSON object nor a list.
    #[error("missing or non-object field: {field}")]
    FieldNotObject {
        /// Name of the field.
        field: &'static str,
    },

    /// A line of an NDJSON stream could not be turned into a record.
    #[error("line {line} is not a valid record")]
    AtLine {
        /// 1-based line number in the input.
        line: u64,
        /// Why the line was rejected.
        #[source]
        source: Box<Error>,
    },

    /// An NDJSON line is longer than the reader's limit (it was read past, not buffered).
    #[error("the line is longer than {max} bytes, the most an NDJSON line may hold")]
    LineTooLong {
        /// The limit in bytes (not counting the line end).
        max: u64,
    },

    /// Reading an NDJSON stream failed.
    #[error("failed to read ndjson input at line {line}")]
    Io {
        /// 1-based number of the line being read.
        line: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },

    /// A binary record frame is empty, so it has no format-version byte.
    #[error("record frame is empty")]
    EmptyFrame,

    /// A binary record frame starts with a format version this build does not know.
    #[error(
        "unsupported record format version {found} (this build reads versions 1 to {supported})"
    )]
    UnsupportedFormatVersion {
        /// The version byte found.
        found: u8,
        /// The format version this build reads and writes.
        supported: u8,
    },

    /// The MessagePack body of a binary record frame is malformed.
    #[error("malformed record frame")]
    Decode {
        /// The decoder's error.
        #[source]
        source: rmp_serde::decode::Error,
    },

    /// A version 2 record frame breaks its layout (format/record.md).
    #[error("malformed record frame: {reason}")]
    MalformedFrame {
        /// What is wrong, naming the field.
        reason: String,
    },

    /// A version 2 record frame's derived identity disagrees with its maps.
    #[error("record frame's `{field}` disagrees with the record's maps")]
    InconsistentFrame {
        /// The derived field.
        field: &'static str,
    },

    /// A record field is longer than a record frame can describe.
    #[error("field `{field}` is too long to store ({bytes} bytes)")]
    FieldTooLong {
        /// Name of the field.
        field: &'static str,
        /// Its length.
        bytes: usize,
    },

    /// A binary record frame has bytes after the record.
    #[error("record frame has {count} trailing bytes")]
    TrailingBytes {
        /// How many bytes follow the record.
        count: usize,
    },

    /// A timestamp in a binary record frame has out-of-range components.
    #[error("timestamp in field `{field}` is out of range")]
    TimestampOutOfRange {
        /// Name of the field.
        field: &'static str,
    },

    /// A cursor was asked to advance to a sequence that is not after its current one.
    #[error("cursor can only advance: sequence {requested} is not greater than {current}")]
    CursorNotAdvanced {
        /// The cursor's last consumed sequence.
        current: u64,
        /// The sequence that was passed.
        requested: u64,
    },

    /// Read criteria whose time window starts after it ends.
    #[error("time window is inverted: captured_from {from} is after captured_until {until}")]
    InvertedTimeWindow {
        /// The lower bound.
        from: OffsetDateTime,
        /// The upper bound.
        until: OffsetDateTime,
    },
}
