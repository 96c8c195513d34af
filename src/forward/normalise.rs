//! The `fs-events-v1` message form: one captured FreeSWITCH event as a flat JSON object with
//! the fields consumers route on (the gateway ADR's `event_type`, `call_uuid`, `timestamp`,
//! `source_host`), the identifiers that tie it to the switch and to the store, and every
//! header of the event for troubleshooting. The schema is `docs/schemas/fs-events-v1.json`;
//! it only grows (a change that breaks a consumer would be `fs-events-v2`).

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::esl::event::{PlainEvent, json_event};
use crate::record::{CapturePayload, JsonMap, RecordView, keys};

/// The value of the `schema` field.
pub const SCHEMA: &str = "fs-events-v1";

/// How forwarded records are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MessageFormat {
    /// The whole record as one reference NDJSON line.
    #[default]
    Record,
    /// Captured events only, each in the `fs-events-v1` form; other records are skipped.
    FsEventsV1,
}

/// The `fs-events-v1` object of a captured event record (`event.raw` with a plain or JSON
/// body); `None` for every other record, which this form does not carry.
#[must_use]
pub fn fs_event_v1(record: &RecordView<'_>) -> Option<String> {
    if record.artifact_name() != super::routing::EVENT_ARTIFACT {
        return None;
    }
    let payload = record.payload().ok()?;
    let headers = event_headers(&payload)?;
    let text = |name: &str| headers.get(name).and_then(Value::as_str).map(str::to_owned);
    let micros = text("Event-Date-Timestamp").and_then(|t| t.parse::<i128>().ok());
    let timestamp = micros
        .and_then(|us| OffsetDateTime::from_unix_timestamp_nanos(us * 1000).ok())
        .unwrap_or_else(|| record.capture_timestamp());
    let mut out = Map::new();
    out.insert("schema".into(), SCHEMA.into());
    out.insert("event_type".into(), text("Event-Name").into());
    out.insert("event_subclass".into(), text("Event-Subclass").into());
    let call = text("Unique-ID").or_else(|| text("Channel-Call-UUID"));
    out.insert("call_uuid".into(), call.into());
    out.insert("timestamp".into(), rfc3339_micros(timestamp).into());
    out.insert("source_host".into(), text("FreeSWITCH-Hostname").into());
    let sequence = text("Event-Sequence").and_then(|s| s.parse::<u64>().ok());
    out.insert("event_sequence".into(), sequence.into());
    out.insert("core_uuid".into(), text("Core-UUID").into());
    out.insert("job_uuid".into(), text("Job-UUID").into());
    out.insert("record_id".into(), record.id().into());
    out.insert("append_sequence".into(), record.append_sequence().into());
    out.insert(
        "captured_at".into(),
        rfc3339_micros(record.capture_timestamp()).into(),
    );
    let body = headers.get("_body").cloned().unwrap_or(Value::Null);
    let mut headers = headers;
    headers.remove("_body");
    out.insert("headers".into(), Value::Object(headers));
    out.insert("body".into(), body);
    serde_json::to_string(&Value::Object(out)).ok()
}

/// The event's headers, values decoded (strings, or arrays of strings for multi-valued JSON
/// headers), in the order sent, with the inner body under `_body` when there is one.
fn event_headers(payload: &JsonMap) -> Option<Map<String, Value>> {
    let capture = CapturePayload::of(payload);
    let raw = capture.raw_text()?;
    let content_type = capture.fact(keys::FACT_CONTENT_TYPE)?;
    match content_type {
        "text/event-plain" => {
            let event = PlainEvent::parse(raw.as_bytes()).ok()?;
            let mut headers: Map<String, Value> = event
                .headers()
                .map(|(name, value)| {
                    let value = String::from_utf8_lossy(value).into_owned();
                    (name.to_owned(), Value::String(value))
                })
                .collect();
            if !event.body().is_empty() {
                let body = String::from_utf8_lossy(event.body()).into_owned();
                headers.insert("_body".into(), Value::String(body));
            }
            Some(headers)
        }
        "text/event-json" => json_event(raw.as_bytes()).ok(),
        _ => None,
    }
}

/// `2026-12-05T15:33:31.256123Z`: UTC, microseconds, as JSON Schema's `date-time` reads it.
fn rfc3339_micros(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        at.year(),
        u8::from(at.month()),
        at.day(),
        at.hour(),
        at.minute(),
        at.second(),
        at.microsecond()
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::record::{MapTexts, Record, RecordId};

    /// A stored `artifact_name` record whose payload holds `raw` as an event of `content_type`.
    fn record(artifact_name: &str, content_type: &str, raw: &str) -> Record {
        let mut envelope = crate::store::dataset::envelope(1);
        envelope.artifact_name = artifact_name.into();
        let payload = json!({
            keys::RAW_PAYLOAD: raw,
            keys::PROTOCOL_FACTS: { keys::FACT_CONTENT_TYPE: content_type },
        });
        envelope.payload = payload.as_object().cloned().unwrap_or_default();
        let stored = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        Record::from_envelope(envelope, RecordId::generate(), stored, 7).unwrap()
    }

    fn normalised(record: &Record) -> Option<Value> {
        let texts = MapTexts::of(record);
        fs_event_v1(&record.view(&texts)).map(|text| serde_json::from_str(&text).unwrap())
    }

    #[test]
    fn a_plain_event_is_normalised_with_its_headers_and_body() {
        let raw = "Event-Name: CUSTOM\nEvent-Subclass: esl%3A%3Atest\nCore-UUID: c1\n\
                   FreeSWITCH-Hostname: vm\nEvent-Date-Timestamp: 1733412000123456\n\
                   Event-Sequence: 42\nUnique-ID: u1\nContent-Length: 5\n\nhello";
        let event = normalised(&record("event.raw", "text/event-plain", raw)).unwrap();
        assert_eq!(event["schema"], SCHEMA);
        assert_eq!(event["event_type"], "CUSTOM");
        assert_eq!(event["event_subclass"], "esl::test");
        assert_eq!(event["call_uuid"], "u1");
        assert_eq!(event["timestamp"], "2024-12-05T15:20:00.123456Z");
        assert_eq!(event["source_host"], "vm");
        assert_eq!(event["event_sequence"], 42);
        assert_eq!(event["core_uuid"], "c1");
        assert_eq!(event["job_uuid"], Value::Null);
        assert_eq!(event["append_sequence"], 7);
        assert_eq!(event["headers"]["Event-Subclass"], "esl::test");
        assert_eq!(event["body"], "hello");
    }

    #[test]
    fn a_json_event_keeps_its_arrays_and_body() {
        let raw = r#"{"Event-Name":"BACKGROUND_JOB","Job-UUID":"j1","Core-UUID":"c1",
            "Channel-Call-UUID":"call","Event-Sequence":"9","list":["a","b"],"_body":"+OK"}"#;
        let event = normalised(&record("event.raw", "text/event-json", raw)).unwrap();
        assert_eq!(event["event_type"], "BACKGROUND_JOB");
        assert_eq!(event["job_uuid"], "j1");
        assert_eq!(event["call_uuid"], "call");
        assert_eq!(event["event_sequence"], 9);
        assert_eq!(event["headers"]["list"], json!(["a", "b"]));
        assert_eq!(event["body"], "+OK");
        assert!(event["headers"].get("_body").is_none());
        // No Event-Date-Timestamp: the capture time.
        assert_eq!(event["timestamp"], event["captured_at"]);
    }

    #[test]
    fn other_records_and_unreadable_events_are_not_carried() {
        let plain = "Event-Name: HEARTBEAT\n\n";
        assert!(normalised(&record("command.reply", "text/event-plain", plain)).is_none());
        let xml = "<event><headers><Event-Name>HEARTBEAT</Event-Name></headers></event>";
        assert!(normalised(&record("event.raw", "text/event-xml", xml)).is_none());
        assert!(normalised(&record("event.raw", "text/event-plain", "no terminator")).is_none());
    }
}
