//! What does a captured record's payload say about the wire?
//!
//! Capture writes every payload in one shape (`capture::CaptureArtifact`, the
//! table in docs/capture.md); [`CapturePayload`] reads that shape back for the code that
//! replays or re-sends what was captured (`serve`, guarded injection), so writer and
//! readers share the key names in [`super::keys`] and one reading of them.

use std::borrow::Cow;

use base64::Engine as _;
use serde_json::Value;

use super::{JsonMap, keys};

/// A record payload read as a capture payload. Every accessor is `None` when the payload
/// does not hold that part in the capture shape (a record imported from elsewhere).
#[derive(Clone, Copy, Debug)]
pub struct CapturePayload<'a> {
    map: &'a JsonMap,
}

impl<'a> CapturePayload<'a> {
    /// Reads `payload` as a capture payload.
    #[must_use]
    pub fn of(payload: &'a JsonMap) -> CapturePayload<'a> {
        CapturePayload { map: payload }
    }

    /// The captured bytes: `raw_payload_base64` decoded when present (the bytes were not
    /// UTF-8), otherwise `raw_payload`'s text.
    #[must_use]
    pub fn raw_bytes(&self) -> Option<Cow<'a, [u8]>> {
        if let Some(Value::String(encoded)) = self.map.get(keys::RAW_PAYLOAD_BASE64)
            && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(encoded)
        {
            return Some(Cow::Owned(bytes));
        }
        self.raw_text().map(|text| Cow::Borrowed(text.as_bytes()))
    }

    /// `raw_payload` as stored: the text of a dispatch's command line, an event's body or a
    /// reply's whole frame (lossy when the bytes were not UTF-8).
    #[must_use]
    pub fn raw_text(&self) -> Option<&'a str> {
        self.map.get(keys::RAW_PAYLOAD).and_then(Value::as_str)
    }

    /// One of the protocol facts (`keys::FACT_*`), such as the outer `Content-Type`.
    #[must_use]
    pub fn fact(&self, key: &str) -> Option<&'a str> {
        self.map
            .get(keys::PROTOCOL_FACTS)
            .and_then(Value::as_object)
            .and_then(|facts| facts.get(key))
            .and_then(Value::as_str)
    }

    /// The frame's outer headers in wire order; `None` if any pair is not two strings.
    #[must_use]
    pub fn frame_headers(&self) -> Option<Vec<(&'a str, &'a str)>> {
        self.map
            .get(keys::FRAME_HEADERS)?
            .as_array()?
            .iter()
            .map(|pair| match pair.as_array()?.as_slice() {
                [Value::String(name), Value::String(value)] => {
                    Some((name.as_str(), value.as_str()))
                }
                _ => None,
            })
            .collect()
    }
}
