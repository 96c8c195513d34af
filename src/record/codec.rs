//! How is a record stored inside a log frame?
//!
//! A frame body is one format-version byte ([`FORMAT_VERSION`]) followed by the record as a
//! MessagePack array (written with `rmp-serde`), fields in this order:
//!
//! | # | Field | MessagePack type |
//! |---|---|---|
//! | 0 | `id` | str |
//! | 1 | `artifact_version` | str |
//! | 2 | `artifact_name` | str |
//! | 3 | `capture_timestamp` | timestamp array (below) |
//! | 4 | `stored_at` | timestamp array |
//! | 5 | `append_sequence` | uint |
//! | 6-10 | `connection_generation`, `session_id`, `job_uuid`, `event_name`, `capture_path` | str or nil |
//! | 11-14 | `correlation_ids`, `runtime_flags`, `payload`, `checksum` (str) | map, map, map, str |
//! | 15 | `tags` | map |
//!
//! A timestamp is the array `[year, ordinal day, hour, minute, second, nanosecond,
//! offset seconds]` in the timestamp's own offset, so precision and offset survive exactly.
//! JSON values map to MessagePack natively: null -> nil, booleans, integers as int/uint,
//! floats as float 64 (bit-exact, `-0.0` included), strings, lists as arrays, maps as maps
//! with string keys in insertion order.
//!
//! Decoding rejects an unknown version byte ([`Error::UnsupportedFormatVersion`], decision
//! C4), trailing bytes, non-finite floats, non-string map keys, binary and extension
//! values, and JSON nested deeper than [`MAX_JSON_DEPTH`], then validates the record like
//! [`Record::new`]. It reads straight from the frame slice into the record's own strings
//! and maps, without an intermediate document, and caps pre-allocation so a forged length
//! cannot reserve memory the frame does not contain.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::{Error, JsonMap, MAX_JSON_DEPTH, Record, RecordFields, RecordId};

/// The binary record format version this build reads and writes.
pub const FORMAT_VERSION: u8 = 1;

/// Upper bound on elements reserved ahead of reading them.
const PREALLOCATION_MAX: usize = 256;

impl Record {
    /// Appends the binary frame body of this record (version byte plus MessagePack) to `out`.
    ///
    /// # Errors
    ///
    /// [`Error::Encode`] if the MessagePack encoder fails, which does not happen for a valid
    /// record; `out` is then restored to its previous length.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        out.push(FORMAT_VERSION);
        let wire = WireRecordRef {
            id: self.id().as_str(),
            artifact_version: self.artifact_version(),
            artifact_name: self.artifact_name(),
            capture_timestamp: WireTimestamp::from(self.capture_timestamp()),
            stored_at: WireTimestamp::from(self.stored_at()),
            append_sequence: self.append_sequence(),
            connection_generation: self.connection_generation(),
            session_id: self.session_id(),
            job_uuid: self.job_uuid(),
            event_name: self.event_name(),
            capture_path: self.capture_path(),
            correlation_ids: self.correlation_ids(),
            runtime_flags: self.runtime_flags(),
            payload: self.payload(),
            checksum: self.checksum(),
            tags: self.tags(),
        };
        rmp_serde::encode::write(out, &wire).map_err(|source| {
            out.truncate(start);
            Error::Encode { source }
        })
    }

    /// Encodes this record into a new frame body (see [`Record::encode_into`]).
    ///
    /// # Errors
    ///
    /// As [`Record::encode_into`].
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decodes a record from a complete binary frame body.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyFrame`], [`Error::UnsupportedFormatVersion`], [`Error::Decode`] for
    /// malformed MessagePack or disallowed values, [`Error::TrailingBytes`],
    /// [`Error::TimestampOutOfRange`], and any validation error of [`Record::new`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        let (&version, mut body) = bytes.split_first().ok_or(Error::EmptyFrame)?;
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedFormatVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let mut deserializer = rmp_serde::Deserializer::new(&mut body);
        let wire = WireRecord::deserialize(&mut deserializer)
            .map_err(|source| Error::Decode { source })?;
        if !body.is_empty() {
            return Err(Error::TrailingBytes { count: body.len() });
        }
        Record::new(RecordFields {
            id: RecordId::new(wire.id)?,
            artifact_version: wire.artifact_version,
            artifact_name: wire.artifact_name,
            capture_timestamp: wire.capture_timestamp.into_timestamp("capture_timestamp")?,
            stored_at: wire.stored_at.into_timestamp("stored_at")?,
            append_sequence: wire.append_sequence,
            connection_generation: wire.connection_generation,
            session_id: wire.session_id,
            job_uuid: wire.job_uuid,
            event_name: wire.event_name,
            capture_path: wire.capture_path,
            correlation_ids: wire.correlation_ids.0,
            runtime_flags: wire.runtime_flags.0,
            payload: wire.payload.0,
            checksum: wire.checksum,
            tags: wire.tags.0,
        })
    }
}

/// The record as written: borrowed fields in wire order.
#[derive(Serialize)]
struct WireRecordRef<'a> {
    id: &'a str,
    artifact_version: &'a str,
    artifact_name: &'a str,
    capture_timestamp: WireTimestamp,
    stored_at: WireTimestamp,
    append_sequence: u64,
    connection_generation: Option<&'a str>,
    session_id: Option<&'a str>,
    job_uuid: Option<&'a str>,
    event_name: Option<&'a str>,
    capture_path: Option<&'a str>,
    correlation_ids: &'a JsonMap,
    runtime_flags: &'a JsonMap,
    payload: &'a JsonMap,
    checksum: &'a str,
    tags: &'a JsonMap,
}

/// The record as read: owned fields in wire order.
#[derive(Deserialize)]
struct WireRecord {
    id: String,
    artifact_version: String,
    artifact_name: String,
    capture_timestamp: WireTimestamp,
    stored_at: WireTimestamp,
    append_sequence: u64,
    connection_generation: Option<String>,
    session_id: Option<String>,
    job_uuid: Option<String>,
    event_name: Option<String>,
    capture_path: Option<String>,
    correlation_ids: WireMap,
    runtime_flags: WireMap,
    payload: WireMap,
    checksum: String,
    tags: WireMap,
}

/// `[year, ordinal, hour, minute, second, nanosecond, offset seconds]`, local to the offset.
#[derive(Serialize, Deserialize)]
struct WireTimestamp(i32, u16, u8, u8, u8, u32, i32);

impl From<&OffsetDateTime> for WireTimestamp {
    fn from(timestamp: &OffsetDateTime) -> Self {
        let (hour, minute, second, nanosecond) = timestamp.to_hms_nano();
        Self(
            timestamp.year(),
            timestamp.ordinal(),
            hour,
            minute,
            second,
            nanosecond,
            timestamp.offset().whole_seconds(),
        )
    }
}

impl WireTimestamp {
    fn into_timestamp(self, field: &'static str) -> Result<OffsetDateTime, Error> {
        let Self(year, ordinal, hour, minute, second, nanosecond, offset_seconds) = self;
        let out_of_range = |_| Error::TimestampOutOfRange { field };
        let date = Date::from_ordinal_date(year, ordinal).map_err(out_of_range)?;
        let time = Time::from_hms_nano(hour, minute, second, nanosecond).map_err(out_of_range)?;
        let offset = UtcOffset::from_whole_seconds(offset_seconds).map_err(out_of_range)?;
        Ok(PrimitiveDateTime::new(date, time).assume_offset(offset))
    }
}

/// A record map read through [`JsonVisitor`] at level 1.
struct WireMap(JsonMap);

impl<'de> Deserialize<'de> for WireMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_map(JsonVisitor { level: 1 })? {
            Value::Object(map) => Ok(Self(map)),
            _ => Err(de::Error::custom("record map field is not a map")),
        }
    }
}

/// Reads one JSON value found at `level` (a record map is level 1).
#[derive(Clone, Copy)]
struct JsonSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(JsonVisitor { level: self.level })
    }
}

/// Builds a JSON value, rejecting what JSON cannot hold and nesting beyond the limit.
struct JsonVisitor {
    level: usize,
}

impl JsonVisitor {
    fn check_container<E: de::Error>(&self) -> Result<(), E> {
        if self.level > MAX_JSON_DEPTH {
            return Err(E::custom(format_args!(
                "json value is nested deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a json value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format_args!("non-finite float {value} in json value")))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Value, A::Error> {
        self.check_container()?;
        let mut items =
            Vec::with_capacity(sequence.size_hint().unwrap_or(0).min(PREALLOCATION_MAX));
        while let Some(item) = sequence.next_element_seed(JsonSeed {
            level: self.level + 1,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        self.check_container()?;
        let mut map =
            JsonMap::with_capacity(entries.size_hint().unwrap_or(0).min(PREALLOCATION_MAX));
        while let Some(key) = entries.next_key::<String>()? {
            let value = entries.next_value_seed(JsonSeed {
                level: self.level + 1,
            })?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    fn record(payload: Value) -> Record {
        let payload = payload.as_object().cloned().unwrap_or_default();
        Record::new(RecordFields {
            id: RecordId::new("id-1").unwrap(),
            artifact_version: "1".into(),
            artifact_name: "event.raw".into(),
            capture_timestamp: datetime!(2024-01-15 12:00:00.123456789 +02:00),
            stored_at: datetime!(2024-01-15 10:00:01 UTC),
            append_sequence: 7,
            connection_generation: None,
            session_id: Some("s".into()),
            job_uuid: None,
            event_name: Some("CHANNEL_CREATE".into()),
            capture_path: None,
            correlation_ids: JsonMap::new(),
            runtime_flags: JsonMap::new(),
            payload,
            checksum: "c".into(),
            tags: JsonMap::new(),
        })
        .unwrap()
    }

    #[test]
    fn frames_start_with_the_format_version() {
        let bytes = record(json!({})).encode().unwrap();
        assert_eq!(bytes.first(), Some(&FORMAT_VERSION));
    }

    #[test]
    fn encode_into_appends_after_existing_bytes() {
        let record = record(json!({"a": 1}));
        let mut out = vec![0xAA, 0xBB];
        record.encode_into(&mut out).unwrap();
        assert_eq!(out.get(..2), Some(&[0xAA, 0xBB][..]));
        assert_eq!(Record::decode(out.get(2..).unwrap()).unwrap(), record);
    }

    #[test]
    fn wire_maps_reject_non_map_values() {
        let mut bytes = vec![0x91]; // fixarray of one element
        bytes.push(0x01);
        let result: Result<WireMap, _> = rmp_serde::from_slice(&bytes);
        assert!(result.is_err());
    }
}
