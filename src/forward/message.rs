//! What one forwarded record looks like on the wire: the reference NDJSON line as the body,
//! plus routing fields consumers can read without parsing it.

use std::borrow::Cow;

use bytes::Bytes;

use super::MessageFormat;
use crate::record::{MapTexts, Record, RecordView};

/// Redis stream field holding the record as reference NDJSON (one JSON object).
pub const FIELD_RECORD: &str = "record";
/// Redis stream field holding the record id.
pub const FIELD_ID: &str = "id";
/// Redis stream field holding the append sequence (decimal).
pub const FIELD_SEQUENCE: &str = "sequence";
/// Redis stream field holding the artifact name.
pub const FIELD_ARTIFACT_NAME: &str = "artifact_name";
/// Redis stream field holding the ESL event name (absent when the record has none).
pub const FIELD_EVENT_NAME: &str = "event_name";
/// Redis stream field holding the background job UUID (absent when the record has none).
pub const FIELD_JOB_UUID: &str = "job_uuid";

/// NATS header holding the record id (besides `Nats-Msg-Id`, which JetStream consumes).
pub const HEADER_RECORD_ID: &str = "Esl-Record-Id";
/// NATS header holding the append sequence (decimal).
pub const HEADER_SEQUENCE: &str = "Esl-Append-Sequence";
/// NATS header holding the artifact name.
pub const HEADER_ARTIFACT_NAME: &str = "Esl-Artifact-Name";
/// NATS header holding the ESL event name (absent when the record has none).
pub const HEADER_EVENT_NAME: &str = "Esl-Event-Name";
/// NATS header holding the background job UUID (absent when the record has none).
pub const HEADER_JOB_UUID: &str = "Esl-Job-Uuid";

/// One record ready to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The record's append sequence.
    pub sequence: u64,
    /// The record id (also the JetStream deduplication id).
    pub id: String,
    /// The artifact name, e.g. `event.raw`.
    pub artifact_name: String,
    /// The ESL event name, if any.
    pub event_name: Option<String>,
    /// The background job UUID, if any.
    pub job_uuid: Option<String>,
    /// The record as one reference NDJSON line (without the newline).
    pub body: Bytes,
}

impl Message {
    /// The message for a record.
    #[must_use]
    pub fn from_record(record: &Record) -> Message {
        Message::from_view(&record.view(&MapTexts::of(record)))
    }

    /// The message for a viewed record: its body is the NDJSON line with the maps copied
    /// from their stored text.
    #[must_use]
    pub fn from_view(record: &RecordView<'_>) -> Message {
        let mut line = String::with_capacity(512);
        record.append_ndjson_line(&mut line);
        line.pop(); // the line's '\n'
        Message {
            body: Bytes::from(line),
            ..Message::routing_of(record)
        }
    }

    /// The message for a viewed record in `format`; `None` when the format does not carry
    /// the record (`fs-events-v1` carries captured events only).
    #[must_use]
    pub fn encode(record: &RecordView<'_>, format: MessageFormat) -> Option<Message> {
        match format {
            MessageFormat::Record => Some(Message::from_view(record)),
            MessageFormat::FsEventsV1 => {
                let body = super::normalise::fs_event_v1(record)?;
                Some(Message {
                    body: Bytes::from(body),
                    ..Message::routing_of(record)
                })
            }
        }
    }

    /// The event name when the record is a captured event (what [`super::Takes`] routes
    /// on), else `None`.
    #[must_use]
    pub fn captured_event(&self) -> Option<&str> {
        super::routing::captured_event(&self.artifact_name, self.event_name.as_deref())
    }

    /// A message of `record`'s routing fields with an empty body.
    fn routing_of(record: &RecordView<'_>) -> Message {
        Message {
            sequence: record.append_sequence(),
            id: record.id().to_owned(),
            artifact_name: record.artifact_name().to_owned(),
            event_name: record.event_name().map(str::to_owned),
            job_uuid: record.job_uuid().map(str::to_owned),
            body: Bytes::new(),
        }
    }

    /// The routing fields as (Redis field, NATS header, value) triples, absent ones left
    /// out, in a fixed order: id, sequence, artifact name, event name, job UUID. Only the
    /// sequence is formatted; the other values are borrowed.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &'static str, Cow<'_, str>)> {
        [
            Some((FIELD_ID, HEADER_RECORD_ID, Cow::Borrowed(self.id.as_str()))),
            Some((
                FIELD_SEQUENCE,
                HEADER_SEQUENCE,
                Cow::Owned(self.sequence.to_string()),
            )),
            Some((
                FIELD_ARTIFACT_NAME,
                HEADER_ARTIFACT_NAME,
                Cow::Borrowed(self.artifact_name.as_str()),
            )),
            self.event_name
                .as_deref()
                .map(|event| (FIELD_EVENT_NAME, HEADER_EVENT_NAME, Cow::Borrowed(event))),
            self.job_uuid
                .as_deref()
                .map(|job| (FIELD_JOB_UUID, HEADER_JOB_UUID, Cow::Borrowed(job))),
        ]
        .into_iter()
        .flatten()
    }

    /// The routing fields as [`Message::fields`] gives them, with owned values.
    #[must_use]
    pub fn routing_fields(&self) -> Vec<(&'static str, &'static str, String)> {
        self.fields()
            .map(|(field, header, value)| (field, header, value.into_owned()))
            .collect()
    }
}
