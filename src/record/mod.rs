//! What is a replay record, and how is it checked, compared, filtered and encoded?
//!
//! This module is pure data and codecs; it uses nothing else from the crate.
//!
//! - [`Envelope`] is a captured ESL artifact as the capture side hands it over (§1.1 of the
//!   reference semantics); [`Record`] is the stored form with the storage-layer fields added
//!   (§1.2), built by [`Record::from_envelope`] or [`Record::new`]. Records are immutable and
//!   always valid: sequence in `1..=i64::MAX`, non-blank artifact version, artifact name and
//!   checksum, and JSON maps no deeper than [`MAX_JSON_DEPTH`].
//! - [`RecordId`] identifies a record; [`timestamp`] holds the reference text form of
//!   timestamps, which keep their original offset and full precision in memory.
//! - [`checksum`] computes and verifies the reference-compatible integrity marker (K2), on
//!   top of [`canonical`], a writer that reproduces PHP `json_encode` byte for byte.
//! - [`to_ndjson_line`] and [`from_ndjson_line`] write and read the reference's NDJSON
//!   interchange lines (K3, C4); [`NdjsonReader`] reads a whole stream (C10).
//! - [`Record::encode`] and [`Record::decode`] give the versioned binary form stored inside
//!   log frames ([`FORMAT_VERSION`]); [`RecordView`] reads a stored record in place,
//!   without allocating.
//! - [`ReadCursor`] and [`Criteria`] are the read contract's position and bounded filter
//!   (§2.1, §3, K4, C8); [`identity`] derives operator identity from a record.
//! - [`keys`] names every key that layers write into and read from a record's maps and a
//!   checkpoint's metadata, once for the whole crate.
//!
//! JSON maps (`payload`, `correlation_ids`, `runtime_flags`, `tags`) are [`JsonMap`]s that
//! keep insertion order. Numbers keep the reference's meaning: integers are exact in the
//! `i64` range (larger ones are written as PHP floats), floats are finite `f64`s; non-finite
//! floats cannot be represented.
//!
//! # Examples
//!
//! ```
//! use esl_replay::record::{Envelope, JsonMap, Record, RecordId, from_ndjson_line, to_ndjson_line};
//! use time::macros::datetime;
//!
//! let mut payload = JsonMap::new();
//! payload.insert("command".into(), "originate".into());
//! payload.insert("args".into(), "sofia/internal/1000".into());
//! let envelope = Envelope::new("1", "api.dispatch", datetime!(2024-01-15 10:00:00 UTC))
//!     .with_payload(payload);
//! let record = Record::from_envelope(
//!     envelope,
//!     RecordId::generate(),
//!     datetime!(2024-01-15 10:00:01 UTC),
//!     1,
//! )?;
//! assert_eq!(
//!     record.checksum(),
//!     "353a1621b83b5bf2d2357f86e0b7c35adff2750052fb09291211ba7d97493754"
//! );
//!
//! // Reference NDJSON interchange and the binary log-frame form both round-trip.
//! let line = to_ndjson_line(&record);
//! assert_eq!(from_ndjson_line(&line)?, record);
//! assert_eq!(Record::decode(&record.encode()?)?, record);
//! # Ok::<(), esl_replay::record::Error>(())
//! ```

pub mod canonical;
#[cfg(any(feature = "capture", feature = "server", feature = "forward"))]
mod capture_payload;
pub mod checksum;
mod codec;
mod criteria;
mod cursor;
mod error;
mod id;
pub mod identity;
pub mod keys;
pub(crate) mod ksort;
mod ndjson;
pub mod timestamp;
mod view;

use serde_json::Value;
use time::OffsetDateTime;

#[cfg(any(feature = "capture", feature = "server", feature = "forward"))]
pub use capture_payload::CapturePayload;
#[cfg(feature = "capture")]
pub(crate) use codec::RecordText;
pub use codec::{DecodeBuffer, EncodedRecord, FORMAT_VERSION};
pub use criteria::{Criteria, CriteriaFields};
pub use cursor::ReadCursor;
pub use error::Error;
pub use id::RecordId;
pub use ndjson::{
    DEFAULT_MAX_LINE_BYTES, NdjsonReader, append_ndjson_line, from_ndjson_line, to_ndjson_line,
};
pub use view::{MapTexts, RecordView};

/// A JSON object that keeps the insertion order of its keys.
pub type JsonMap = serde_json::Map<String, Value>;

/// How deep a record's JSON maps may nest. The map itself is level 1 and every nested
/// object or list adds a level, so a payload `{"a":{"b":[1]}}` has depth 3. Deeper input is
/// rejected with [`Error::NestingTooDeep`] wherever a record enters or is decoded
/// (construction and append, NDJSON import, SQLite rows, the binary codec), so every record
/// a store holds can be exported and imported again. 512 is the depth PHP's `json_decode`
/// allows, so every row the reference's SQLite adapter can read is read here too. The
/// recursive readers and writers use a few hundred bytes of stack per level, far below a
/// thread's 2 MiB at this depth (a test runs a round trip at the limit on a 1 MiB stack).
pub const MAX_JSON_DEPTH: usize = 512;

/// The most JSON values one NDJSON record line may hold. A record in memory takes about a
/// hundred times the bytes of a small value (a list becomes a map of string keys), so a line
/// above this is refused before it is parsed, with [`Error::TooManyValues`]: a line of
/// tiny values within the line limit would otherwise take gigabytes. Real ESL records hold
/// a few hundred; a record above it (which only a SQLite database written by another
/// program can hold) is exported, but not imported again.
pub const MAX_JSON_VALUES: usize = 1 << 18;

/// Whether JSON text holds more than `max` values, counted outside strings as one per comma
/// and two per opening bracket (the container and its first element): never fewer than the
/// values, and at most twice as many (a container inside another is counted by both).
/// Malformed JSON is left for the parser.
#[must_use]
pub fn json_values_exceed(bytes: &[u8], max: usize) -> bool {
    let mut values = 0usize;
    for byte in outside_strings(bytes) {
        values += match byte {
            b',' => 1,
            b'[' | b'{' => 2,
            _ => 0,
        };
        if values > max {
            return true;
        }
    }
    false
}

/// The bytes of JSON text that lie outside its strings (quotes themselves excluded).
fn outside_strings(bytes: &[u8]) -> impl Iterator<Item = u8> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    bytes.iter().copied().filter(move |&byte| {
        if in_string {
            match (escaped, byte) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                (false, _) => {}
            }
            return false;
        }
        in_string = byte == b'"';
        !in_string
    })
}

/// Whether `text` is empty after PHP `trim`, which strips only ASCII space, `\t`, `\n`,
/// `\r`, NUL and vertical tab (not Unicode spaces such as U+00A0).
#[must_use]
pub fn is_blank(text: &str) -> bool {
    is_blank_bytes(text.as_bytes())
}

/// [`is_blank`] of text not yet known to be UTF-8 (the characters PHP strips are ASCII).
pub(crate) fn is_blank_bytes(text: &[u8]) -> bool {
    text.iter()
        .all(|byte| matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0 | 0x0b))
}

/// The map a JSON value holds as PHP reads it: an object as it is, a list as a map keyed
/// "0", "1", ... (PHP's `json_encode` writes empty and index-keyed maps as lists).
///
/// # Errors
///
/// Any other value, given back unchanged.
pub fn php_map(value: Value) -> Result<JsonMap, Value> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Array(items) => Ok(items
            .into_iter()
            .enumerate()
            .map(|(index, item)| (index.to_string(), item))
            .collect()),
        other => Err(other),
    }
}

/// Whether the brackets of JSON text nest deeper than `max` outside strings. Parsers run it
/// first, so deep input can never exhaust the stack of a recursive parser; malformed JSON is
/// left for the parser to report.
#[must_use]
pub fn json_nesting_exceeds(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    for byte in outside_strings(bytes) {
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// A captured ESL artifact as handed to the store (§1.1). Every field is copied verbatim
/// into the stored record; nothing is validated until [`Record::from_envelope`].
#[derive(Clone, Debug)]
pub struct Envelope {
    /// Schema version of the captured artifact, never upgraded. Must be non-blank.
    pub artifact_version: String,
    /// Artifact kind such as `api.dispatch` or `event.raw`; any non-blank name is accepted.
    pub artifact_name: String,
    /// When the artifact was captured, in the offset it was captured in (kept as is).
    pub capture_timestamp: OffsetDateTime,
    /// Where the artifact was captured, if known.
    pub capture_path: Option<String>,
    /// Connection generation (a string, not a number).
    pub connection_generation: Option<String>,
    /// FreeSWITCH session id.
    pub session_id: Option<String>,
    /// Background job UUID.
    pub job_uuid: Option<String>,
    /// ESL event name.
    pub event_name: Option<String>,
    /// Correlation ids (documented as string to string; not enforced).
    pub correlation_ids: JsonMap,
    /// Runtime flags, any JSON values.
    pub runtime_flags: JsonMap,
    /// The artifact payload, stored verbatim with its key order.
    pub payload: JsonMap,
}

impl Envelope {
    /// An envelope with the three fields every artifact has; the optional fields are
    /// `None` and the maps empty until a `with_*` method sets them.
    ///
    /// Nothing is validated here (see [`Record::from_envelope`]); the
    /// [module example](crate::record#examples) builds one.
    #[must_use]
    pub fn new(
        artifact_version: impl Into<String>,
        artifact_name: impl Into<String>,
        capture_timestamp: OffsetDateTime,
    ) -> Self {
        Self {
            artifact_version: artifact_version.into(),
            artifact_name: artifact_name.into(),
            capture_timestamp,
            capture_path: None,
            connection_generation: None,
            session_id: None,
            job_uuid: None,
            event_name: None,
            correlation_ids: JsonMap::new(),
            runtime_flags: JsonMap::new(),
            payload: JsonMap::new(),
        }
    }

    /// This envelope with [`capture_path`](Self::capture_path) set.
    #[must_use]
    pub fn with_capture_path(mut self, capture_path: impl Into<String>) -> Self {
        self.capture_path = Some(capture_path.into());
        self
    }

    /// This envelope with [`connection_generation`](Self::connection_generation) set.
    #[must_use]
    pub fn with_connection_generation(mut self, generation: impl Into<String>) -> Self {
        self.connection_generation = Some(generation.into());
        self
    }

    /// This envelope with [`session_id`](Self::session_id) set.
    #[must_use]
    pub fn with_session_id(mut self, session_id: impl Into<String>) -> Self {
        self.session_id = Some(session_id.into());
        self
    }

    /// This envelope with [`job_uuid`](Self::job_uuid) set.
    #[must_use]
    pub fn with_job_uuid(mut self, job_uuid: impl Into<String>) -> Self {
        self.job_uuid = Some(job_uuid.into());
        self
    }

    /// This envelope with [`event_name`](Self::event_name) set.
    #[must_use]
    pub fn with_event_name(mut self, event_name: impl Into<String>) -> Self {
        self.event_name = Some(event_name.into());
        self
    }

    /// This envelope with these [`correlation_ids`](Self::correlation_ids).
    #[must_use]
    pub fn with_correlation_ids(mut self, correlation_ids: JsonMap) -> Self {
        self.correlation_ids = correlation_ids;
        self
    }

    /// This envelope with these [`runtime_flags`](Self::runtime_flags).
    #[must_use]
    pub fn with_runtime_flags(mut self, runtime_flags: JsonMap) -> Self {
        self.runtime_flags = runtime_flags;
        self
    }

    /// This envelope with this [`payload`](Self::payload).
    #[must_use]
    pub fn with_payload(mut self, payload: JsonMap) -> Self {
        self.payload = payload;
        self
    }

    /// Computes the checksum a record built from this envelope gets (see [`checksum`]).
    ///
    /// # Errors
    ///
    /// [`Error::NestingTooDeep`] if the payload nests deeper than [`MAX_JSON_DEPTH`].
    pub fn checksum(&self) -> Result<String, Error> {
        checksum::compute(
            &self.artifact_name,
            &self.artifact_version,
            &self.capture_timestamp,
            &self.payload,
        )
    }
}

/// Every field of a stored record, for building one with [`Record::new`] or taking one
/// apart with [`Record::into_fields`]. Field meanings are as on [`Record`].
#[derive(Clone, Debug)]
pub struct RecordFields {
    /// See [`Record::id`].
    pub id: RecordId,
    /// See [`Record::artifact_version`].
    pub artifact_version: String,
    /// See [`Record::artifact_name`].
    pub artifact_name: String,
    /// See [`Record::capture_timestamp`].
    pub capture_timestamp: OffsetDateTime,
    /// See [`Record::stored_at`].
    pub stored_at: OffsetDateTime,
    /// See [`Record::append_sequence`].
    pub append_sequence: u64,
    /// See [`Record::connection_generation`].
    pub connection_generation: Option<String>,
    /// See [`Record::session_id`].
    pub session_id: Option<String>,
    /// See [`Record::job_uuid`].
    pub job_uuid: Option<String>,
    /// See [`Record::event_name`].
    pub event_name: Option<String>,
    /// See [`Record::capture_path`].
    pub capture_path: Option<String>,
    /// See [`Record::correlation_ids`].
    pub correlation_ids: JsonMap,
    /// See [`Record::runtime_flags`].
    pub runtime_flags: JsonMap,
    /// See [`Record::payload`].
    pub payload: JsonMap,
    /// See [`Record::checksum`].
    pub checksum: String,
    /// See [`Record::tags`].
    pub tags: JsonMap,
}

/// A stored replay record (schema version 1, §1.2): the envelope's fields plus id, storage
/// time, append sequence, checksum and tags. Immutable and always valid.
///
/// Equality compares every field; timestamps must agree on the instant *and* the offset,
/// because the offset is part of the checksum text. JSON numbers compare by value (so
/// `0.0 == -0.0`).
#[derive(Clone, Debug)]
pub struct Record {
    fields: RecordFields,
}

impl Record {
    /// Builds a record from all of its fields, as an import does.
    ///
    /// # Errors
    ///
    /// - [`Error::SequenceOutOfRange`] unless `1 <= append_sequence <= i64::MAX`;
    /// - [`Error::BlankField`] if `artifact_version`, `artifact_name` or `checksum` is blank;
    /// - [`Error::NestingTooDeep`] if a JSON map nests deeper than [`MAX_JSON_DEPTH`].
    pub fn new(fields: RecordFields) -> Result<Self, Error> {
        validate(
            fields.append_sequence,
            &fields.artifact_version,
            &fields.artifact_name,
            &fields.checksum,
            &[
                &fields.correlation_ids,
                &fields.runtime_flags,
                &fields.payload,
                &fields.tags,
            ],
        )?;
        Ok(Self { fields })
    }

    /// Builds the stored record for a captured envelope: copies every envelope field,
    /// computes the checksum and starts with empty tags.
    ///
    /// # Errors
    ///
    /// As [`Record::new`].
    pub fn from_envelope(
        envelope: Envelope,
        id: RecordId,
        stored_at: OffsetDateTime,
        append_sequence: u64,
    ) -> Result<Self, Error> {
        let checksum = envelope.checksum()?;
        Self::new(RecordFields {
            id,
            artifact_version: envelope.artifact_version,
            artifact_name: envelope.artifact_name,
            capture_timestamp: envelope.capture_timestamp,
            stored_at,
            append_sequence,
            connection_generation: envelope.connection_generation,
            session_id: envelope.session_id,
            job_uuid: envelope.job_uuid,
            event_name: envelope.event_name,
            capture_path: envelope.capture_path,
            correlation_ids: envelope.correlation_ids,
            runtime_flags: envelope.runtime_flags,
            payload: envelope.payload,
            checksum,
            tags: JsonMap::new(),
        })
    }

    /// Takes the record apart, for example to build a modified copy with [`Record::new`].
    #[must_use]
    pub fn into_fields(self) -> RecordFields {
        self.fields
    }

    /// Whether the stored checksum still matches the record (see [`checksum::verify`]).
    #[must_use]
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(self)
    }

    /// The record id.
    #[must_use]
    pub fn id(&self) -> &RecordId {
        &self.fields.id
    }

    /// Schema version of the captured artifact, as captured.
    #[must_use]
    pub fn artifact_version(&self) -> &str {
        &self.fields.artifact_version
    }

    /// Artifact kind such as `api.dispatch`.
    #[must_use]
    pub fn artifact_name(&self) -> &str {
        &self.fields.artifact_name
    }

    /// Capture time in its original offset, full precision.
    #[must_use]
    pub fn capture_timestamp(&self) -> &OffsetDateTime {
        &self.fields.capture_timestamp
    }

    /// When the store accepted the record.
    #[must_use]
    pub fn stored_at(&self) -> &OffsetDateTime {
        &self.fields.stored_at
    }

    /// Position in the stream, starting at 1.
    #[must_use]
    pub fn append_sequence(&self) -> u64 {
        self.fields.append_sequence
    }

    /// Connection generation, if captured.
    #[must_use]
    pub fn connection_generation(&self) -> Option<&str> {
        self.fields.connection_generation.as_deref()
    }

    /// FreeSWITCH session id, if captured.
    #[must_use]
    pub fn session_id(&self) -> Option<&str> {
        self.fields.session_id.as_deref()
    }

    /// Background job UUID, if captured.
    #[must_use]
    pub fn job_uuid(&self) -> Option<&str> {
        self.fields.job_uuid.as_deref()
    }

    /// ESL event name, if captured.
    #[must_use]
    pub fn event_name(&self) -> Option<&str> {
        self.fields.event_name.as_deref()
    }

    /// Capture path, if captured.
    #[must_use]
    pub fn capture_path(&self) -> Option<&str> {
        self.fields.capture_path.as_deref()
    }

    /// Correlation ids, in insertion order.
    #[must_use]
    pub fn correlation_ids(&self) -> &JsonMap {
        &self.fields.correlation_ids
    }

    /// Runtime flags, in insertion order.
    #[must_use]
    pub fn runtime_flags(&self) -> &JsonMap {
        &self.fields.runtime_flags
    }

    /// The artifact payload, verbatim, in insertion order.
    #[must_use]
    pub fn payload(&self) -> &JsonMap {
        &self.fields.payload
    }

    /// The stored checksum (lowercase hex SHA-256 for records built here; any non-blank
    /// text for imported ones).
    #[must_use]
    pub fn checksum(&self) -> &str {
        &self.fields.checksum
    }

    /// Tags: empty for records built from envelopes; kept from imported data.
    #[must_use]
    pub fn tags(&self) -> &JsonMap {
        &self.fields.tags
    }

    /// The replay session id (see [`identity::replay_session_id`]).
    #[must_use]
    pub fn replay_session_id(&self) -> Option<&str> {
        identity::replay_session_id(self.correlation_ids(), self.runtime_flags())
    }

    /// The PBX node slug (see [`identity::pbx_node_slug`]).
    #[must_use]
    pub fn pbx_node_slug(&self) -> Option<&str> {
        identity::pbx_node_slug(self.runtime_flags())
    }

    /// The worker session id (see [`identity::worker_session_id`]).
    #[must_use]
    pub fn worker_session_id(&self) -> Option<&str> {
        identity::worker_session_id(self.runtime_flags())
    }
}

/// What [`Record::new`] checks: a sequence in `1..=i64::MAX`, non-blank version, name and
/// checksum, and maps within [`MAX_JSON_DEPTH`].
fn validate(
    append_sequence: u64,
    artifact_version: &str,
    artifact_name: &str,
    checksum: &str,
    maps: &[&JsonMap],
) -> Result<(), Error> {
    if append_sequence == 0 || i64::try_from(append_sequence).is_err() {
        return Err(Error::SequenceOutOfRange {
            sequence: i128::from(append_sequence),
        });
    }
    for (field, value) in [
        ("artifact_version", artifact_version),
        ("artifact_name", artifact_name),
        ("checksum", checksum),
    ] {
        if is_blank(value) {
            return Err(Error::BlankField { field });
        }
    }
    for map in maps {
        check_map_depth(map)?;
    }
    Ok(())
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        let (left, right) = (&self.fields, &other.fields);
        left.id == right.id
            && left.artifact_version == right.artifact_version
            && left.artifact_name == right.artifact_name
            && same_timestamp(&left.capture_timestamp, &right.capture_timestamp)
            && same_timestamp(&left.stored_at, &right.stored_at)
            && left.append_sequence == right.append_sequence
            && left.connection_generation == right.connection_generation
            && left.session_id == right.session_id
            && left.job_uuid == right.job_uuid
            && left.event_name == right.event_name
            && left.capture_path == right.capture_path
            && left.correlation_ids == right.correlation_ids
            && left.runtime_flags == right.runtime_flags
            && left.payload == right.payload
            && left.checksum == right.checksum
            && left.tags == right.tags
    }
}

/// Same instant and same offset (`OffsetDateTime`'s own equality ignores the offset).
fn same_timestamp(left: &OffsetDateTime, right: &OffsetDateTime) -> bool {
    left == right && left.offset() == right.offset()
}

/// Checks that a map (level 1) nests no deeper than [`MAX_JSON_DEPTH`].
pub(crate) fn check_map_depth(map: &JsonMap) -> Result<(), Error> {
    map.values()
        .try_for_each(|value| check_value_depth(value, 2))
}

/// Checks that a value found at `level` nests no deeper than [`MAX_JSON_DEPTH`]. Recursion
/// stops at the limit, so the check itself is bounded.
pub(crate) fn check_value_depth(value: &Value, level: usize) -> Result<(), Error> {
    // The error is built only when returned: building it on every call and dropping it
    // was a tenth of an append's encoding.
    let too_deep = || Error::NestingTooDeep {
        max: MAX_JSON_DEPTH,
    };
    match value {
        Value::Array(items) => {
            if level > MAX_JSON_DEPTH {
                return Err(too_deep());
            }
            items
                .iter()
                .try_for_each(|item| check_value_depth(item, level + 1))
        }
        Value::Object(map) => {
            if level > MAX_JSON_DEPTH {
                return Err(too_deep());
            }
            map.values()
                .try_for_each(|item| check_value_depth(item, level + 1))
        }
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    fn map(value: Value) -> JsonMap {
        match value {
            Value::Object(map) => map,
            _ => JsonMap::new(),
        }
    }

    fn envelope() -> Envelope {
        Envelope::new("1", "api.dispatch", datetime!(2024-01-15 10:00:00 UTC))
            .with_session_id("sess-001")
            .with_job_uuid("job-1")
            .with_payload(map(
                json!({"command": "originate", "args": "sofia/internal/1000"}),
            ))
    }

    fn record_with(sequence: u64) -> Result<Record, Error> {
        Record::from_envelope(
            envelope(),
            RecordId::generate(),
            datetime!(2024-01-15 10:00:01 UTC),
            sequence,
        )
    }

    #[test]
    fn record_constructs_from_an_envelope() {
        let record = record_with(1).unwrap();
        assert_eq!(record.append_sequence(), 1);
        assert_eq!(record.artifact_name(), "api.dispatch");
        assert_eq!(record.artifact_version(), "1");
        assert_eq!(record.session_id(), Some("sess-001"));
        assert_eq!(record.job_uuid(), Some("job-1"));
        assert_eq!(record.capture_path(), None);
        assert_eq!(record.event_name(), None);
        assert_eq!(record.connection_generation(), None);
        assert!(record.tags().is_empty());
        assert_eq!(record.checksum().len(), 64);
        assert!(record.verify_checksum());
    }

    #[test]
    fn payload_is_preserved_exactly() {
        let mut envelope = envelope();
        envelope.payload = map(json!({"z": {"nested": [1, 2.5, null]}, "a": "x"}));
        let record = Record::from_envelope(
            envelope.clone(),
            RecordId::generate(),
            datetime!(2024-01-15 10:00:01 UTC),
            3,
        )
        .unwrap();
        assert_eq!(record.payload(), &envelope.payload);
        let keys: Vec<_> = record.payload().keys().collect();
        assert_eq!(keys, ["z", "a"]);
    }

    #[test]
    fn sequence_must_be_positive_and_fit_i64() {
        assert!(matches!(
            record_with(0),
            Err(Error::SequenceOutOfRange { sequence: 0 })
        ));
        assert!(record_with(i64::MAX as u64).is_ok());
        assert!(matches!(
            record_with(i64::MAX as u64 + 1),
            Err(Error::SequenceOutOfRange { .. })
        ));
    }

    #[test]
    fn blank_required_text_fields_are_rejected() {
        for (field, blank) in [
            ("artifact_version", ""),
            ("artifact_version", "  \t"),
            ("artifact_name", ""),
        ] {
            let mut envelope = envelope();
            if field == "artifact_version" {
                envelope.artifact_version = blank.into();
            } else {
                envelope.artifact_name = blank.into();
            }
            let result = Record::from_envelope(
                envelope,
                RecordId::generate(),
                datetime!(2024-01-15 10:00:01 UTC),
                1,
            );
            assert!(
                matches!(result, Err(Error::BlankField { field: found }) if found == field),
                "{field}"
            );
        }
        let mut fields = record_with(1).unwrap().into_fields();
        fields.checksum = String::new();
        assert!(matches!(
            Record::new(fields),
            Err(Error::BlankField { field: "checksum" })
        ));
    }

    #[test]
    fn unicode_spaces_are_not_blank() {
        assert!(is_blank(" \t\n\r\0\u{b}"));
        assert!(!is_blank("\u{a0}"));
        assert!(!is_blank("\u{c}"));
    }

    #[test]
    fn nesting_is_bounded() {
        let mut value = json!("leaf");
        for _ in 0..MAX_JSON_DEPTH - 1 {
            value = json!({"k": value});
        }
        let mut envelope = envelope();
        envelope.payload = map(json!({"deep": value}));
        assert!(
            Record::from_envelope(
                envelope.clone(),
                RecordId::generate(),
                datetime!(2024-01-15 10:00:01 UTC),
                1
            )
            .is_ok()
        );
        envelope.payload = map(json!({"deeper": [value]}));
        assert!(matches!(
            Record::from_envelope(
                envelope,
                RecordId::generate(),
                datetime!(2024-01-15 10:00:01 UTC),
                1
            ),
            Err(Error::NestingTooDeep {
                max: MAX_JSON_DEPTH
            })
        ));
    }

    #[test]
    fn equality_includes_the_timestamp_offset() {
        let record = record_with(1).unwrap();
        let mut fields = record.clone().into_fields();
        fields.capture_timestamp = datetime!(2024-01-15 12:00:00 +02:00);
        let shifted = Record::new(fields).unwrap();
        assert_eq!(record.capture_timestamp(), shifted.capture_timestamp());
        assert_ne!(record, shifted);
        assert_eq!(record, record.clone());
    }
}
