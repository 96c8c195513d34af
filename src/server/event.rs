//! What is one event the server delivers, and how is it rendered in each format?
//!
//! A [`ServedEvent`] keeps the event's bytes in the format it was captured or generated in
//! (its native format), the few facts subscriptions need (name, CUSTOM subclass, time), and
//! optionally the recorded outer frame head. Rendered in its native format it is written
//! byte for byte; in another format it is converted as FreeSWITCH would have serialized the
//! same event (esl-protocol.md §1.7-1.9): plain values are URL-encoded and `ARRAY::`-joined,
//! JSON values are decoded strings or arrays of strings with the body as `_body`, XML
//! values are URL-encoded then XML-escaped. Stored XML events are only sent as XML.

use bytes::{BufMut, Bytes, BytesMut};

use super::command::EventFormat;
use super::wire::{event_head, json_string, put_decimal, url_encode, xml_escape};
use crate::esl::event::percent_decode;

/// One event ready to be delivered to any number of listeners.
#[derive(Debug, Clone)]
pub struct ServedEvent {
    name: String,
    subclass: Option<String>,
    native: EventFormat,
    body: Bytes,
    head: Option<Bytes>,
    timestamp_us: Option<i64>,
}

/// An event's headers in wire order, values decoded; arrays as their elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// One value.
    One(Vec<u8>),
    /// A multi-valued header (`ARRAY::a|:b` in plain, a JSON array in JSON).
    Many(Vec<Vec<u8>>),
}

impl HeaderValue {
    fn from_decoded(decoded: Vec<u8>) -> HeaderValue {
        match decoded.strip_prefix(b"ARRAY::") {
            Some(rest) => HeaderValue::Many(split_array(rest)),
            None => HeaderValue::One(decoded),
        }
    }

    /// The value as FreeSWITCH's header lookup sees it: arrays in their `ARRAY::` form.
    #[must_use]
    pub fn joined(&self) -> Vec<u8> {
        match self {
            HeaderValue::One(v) => v.clone(),
            HeaderValue::Many(items) => {
                let mut out = b"ARRAY::".to_vec();
                out.extend_from_slice(&items.join(&b"|:"[..]));
                out
            }
        }
    }
}

fn split_array(rest: &[u8]) -> Vec<Vec<u8>> {
    let mut items = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < rest.len() {
        if rest.get(i..i + 2) == Some(b"|:") {
            items.push(rest.get(start..i).unwrap_or_default().to_vec());
            i += 2;
            start = i;
        } else {
            i += 1;
        }
    }
    items.push(rest.get(start..).unwrap_or_default().to_vec());
    items
}

/// A parsed event: headers (name, decoded value) in order and the body.
#[derive(Debug, Clone, Default)]
pub struct EventParts {
    /// Headers in order, duplicates kept; the serializer's own `Content-Length` excluded.
    pub headers: Vec<(String, HeaderValue)>,
    /// The event body (BACKGROUND_JOB output, ...), empty if none.
    pub body: Vec<u8>,
}

impl EventParts {
    /// The first header named `name` (case-insensitive, as FreeSWITCH looks headers up).
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Parses a plain event body, leniently: a line without `": "` or `:` is skipped.
    #[must_use]
    pub fn from_plain(body: &[u8]) -> EventParts {
        let (block, rest) = match find(body, b"\n\n") {
            Some(end) => (
                body.get(..end).unwrap_or_default(),
                body.get(end + 2..).unwrap_or_default(),
            ),
            None => (body.strip_suffix(b"\n").unwrap_or(body), &b""[..]),
        };
        let mut headers: Vec<(String, HeaderValue)> = block
            .split(|&b| b == b'\n')
            .filter_map(|line| {
                let at = find(line, b": ").or_else(|| line.iter().position(|&b| b == b':'))?;
                let name = String::from_utf8_lossy(line.get(..at)?).into_owned();
                let mut value = line.get(at + 1..)?;
                while let [b' ', tail @ ..] = value {
                    value = tail;
                }
                Some((name, HeaderValue::from_decoded(percent_decode(value))))
            })
            .collect();
        if !rest.is_empty()
            && let Some(at) = headers
                .iter()
                .rposition(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        {
            headers.remove(at);
        }
        EventParts {
            headers,
            body: rest.to_vec(),
        }
    }

    /// Parses a JSON event body; `None` if it is not a JSON object. Non-string values are
    /// kept as their JSON text. `_body` becomes the body and its `Content-Length` is dropped.
    #[must_use]
    pub fn from_json(body: &[u8]) -> Option<EventParts> {
        let serde_json::Value::Object(map) = serde_json::from_slice(body).ok()? else {
            return None;
        };
        let mut parts = EventParts::default();
        let has_body = map.contains_key("_body");
        for (key, value) in map {
            if key == "_body" {
                parts.body = text_of(&value).into_bytes();
                continue;
            }
            if has_body && key == "Content-Length" {
                continue;
            }
            let value = match value {
                serde_json::Value::Array(items) => {
                    HeaderValue::Many(items.iter().map(|i| text_of(i).into_bytes()).collect())
                }
                other => HeaderValue::One(text_of(&other).into_bytes()),
            };
            parts.headers.push((key, value));
        }
        Some(parts)
    }

    /// Writes the parts as a plain event body.
    pub fn write_plain(&self, out: &mut Vec<u8>) {
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            let start = out.len();
            url_encode(out, &value.joined());
            if out.len() == start {
                out.extend_from_slice(b"_undef_");
            }
            out.push(b'\n');
        }
        if !self.body.is_empty() {
            out.extend_from_slice(b"Content-Length: ");
            put_decimal(out, self.body.len() as u64);
            out.extend_from_slice(b"\n\n");
            out.extend_from_slice(&self.body);
        } else {
            out.push(b'\n');
        }
    }

    /// Writes the parts as a JSON event body (`cJSON_PrintUnformatted` layout).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        let mut comma = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        for (name, value) in &self.headers {
            comma(out);
            json_string(out, name.as_bytes());
            out.push(b':');
            match value {
                HeaderValue::One(v) => json_string(out, v),
                HeaderValue::Many(items) => {
                    out.push(b'[');
                    for (i, item) in items.iter().enumerate() {
                        if i > 0 {
                            out.push(b',');
                        }
                        json_string(out, item);
                    }
                    out.push(b']');
                }
            }
        }
        if !self.body.is_empty() {
            comma(out);
            out.extend_from_slice(b"\"Content-Length\":\"");
            put_decimal(out, self.body.len() as u64);
            out.extend_from_slice(b"\",\"_body\":");
            json_string(out, &self.body);
        }
        out.push(b'}');
    }

    /// Writes the parts as an XML event body (`switch_event_xmlize` layout).
    pub fn write_xml(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"<event>\n  <headers>\n");
        for (name, value) in &self.headers {
            let mut encoded = Vec::new();
            url_encode(&mut encoded, &value.joined());
            out.extend_from_slice(b"    <");
            out.extend_from_slice(name.as_bytes());
            out.push(b'>');
            xml_escape(out, &encoded);
            out.extend_from_slice(b"</");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b">\n");
        }
        out.extend_from_slice(b"  </headers>\n");
        if !self.body.is_empty() {
            out.extend_from_slice(b"  <Content-Length>");
            put_decimal(out, self.body.len() as u64);
            out.extend_from_slice(b"</Content-Length>\n  <body>");
            xml_escape(out, &self.body);
            if self.body.ends_with(b"\n") {
                out.extend_from_slice(b"  ");
            }
            out.extend_from_slice(b"</body>\n");
        }
        out.extend_from_slice(b"</event>\n");
    }
}

fn text_of(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl ServedEvent {
    /// An event whose facts are already known (the simulator's templates): no parsing.
    #[must_use]
    pub fn from_parts(
        name: impl Into<String>,
        subclass: Option<String>,
        native: EventFormat,
        body: Bytes,
        timestamp_us: Option<i64>,
    ) -> ServedEvent {
        ServedEvent {
            name: name.into(),
            subclass,
            native,
            body,
            head: None,
            timestamp_us,
        }
    }

    /// An event from a captured frame body in `native` format; name, subclass and
    /// `Event-Date-Timestamp` are read from it (missing facts stay empty).
    #[must_use]
    pub fn from_body(native: EventFormat, body: Bytes) -> ServedEvent {
        let (name, subclass, timestamp_us) = match native {
            EventFormat::Plain => scan_plain(&body),
            EventFormat::Json => match EventParts::from_json(&body) {
                Some(parts) => facts_of(&parts),
                None => (String::new(), None, None),
            },
            EventFormat::Xml => (
                xml_element(&body, "Event-Name").unwrap_or_default(),
                xml_element(&body, "Event-Subclass"),
                xml_element(&body, "Event-Date-Timestamp").and_then(|t| t.parse().ok()),
            ),
        };
        ServedEvent {
            name,
            subclass,
            native,
            body,
            head: None,
            timestamp_us,
        }
    }

    /// Uses `head` (a complete outer header block ending in the empty line) when the event
    /// is rendered in its native format, so a recorded frame is reproduced byte for byte.
    #[must_use]
    pub fn with_head(mut self, head: Bytes) -> ServedEvent {
        self.head = Some(head);
        self
    }

    /// The event name (`CUSTOM` for custom events).
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The CUSTOM subclass, if any.
    #[must_use]
    pub fn subclass(&self) -> Option<&str> {
        self.subclass.as_deref()
    }

    /// The format the body is in.
    #[must_use]
    pub fn native_format(&self) -> EventFormat {
        self.native
    }

    /// The body bytes in the native format.
    #[must_use]
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// `Event-Date-Timestamp` in microseconds, if the event carries one.
    #[must_use]
    pub fn timestamp_us(&self) -> Option<i64> {
        self.timestamp_us
    }

    /// The `Unique-ID` header (the channel the event belongs to), read without parsing
    /// every header of a plain or XML event.
    #[must_use]
    pub fn unique_id(&self) -> Option<String> {
        match self.native {
            EventFormat::Plain => self
                .body
                .split(|&b| b == b'\n')
                .take_while(|line| !line.is_empty())
                .find_map(|line| line.strip_prefix(b"Unique-ID: "))
                .map(|v| String::from_utf8_lossy(&percent_decode(v)).into_owned()),
            EventFormat::Json => {
                // Most events without a channel are not parsed at all.
                find(&self.body, b"\"Unique-ID\"")?;
                EventParts::from_json(&self.body)?
                    .header("Unique-ID")
                    .map(|v| String::from_utf8_lossy(&v.joined()).into_owned())
            }
            EventFormat::Xml => xml_element(&self.body, "Unique-ID"),
        }
    }

    /// The parsed headers and body (used by filters and conversions). XML events yield
    /// only their name.
    #[must_use]
    pub fn parts(&self) -> EventParts {
        match self.native {
            EventFormat::Plain => EventParts::from_plain(&self.body),
            EventFormat::Json => EventParts::from_json(&self.body).unwrap_or_default(),
            EventFormat::Xml => EventParts {
                headers: vec![(
                    "Event-Name".into(),
                    HeaderValue::One(self.name.clone().into_bytes()),
                )],
                body: Vec::new(),
            },
        }
    }

    /// Appends the complete frame (head and body) in `format` to `out`. XML events are
    /// always sent as XML.
    pub fn render(&self, format: EventFormat, out: &mut BytesMut) {
        if format == self.native || self.native == EventFormat::Xml {
            match &self.head {
                Some(head) => out.put_slice(head),
                None => event_head(out, self.native, self.body.len()),
            }
            out.put_slice(&self.body);
            return;
        }
        let parts = self.parts();
        let mut body = Vec::with_capacity(self.body.len() + self.body.len() / 4);
        match format {
            EventFormat::Plain => parts.write_plain(&mut body),
            EventFormat::Json => parts.write_json(&mut body),
            EventFormat::Xml => parts.write_xml(&mut body),
        }
        event_head(out, format, body.len());
        out.put_slice(&body);
    }
}

fn facts_of(parts: &EventParts) -> (String, Option<String>, Option<i64>) {
    let text = |name: &str| {
        parts
            .header(name)
            .map(|v| String::from_utf8_lossy(&v.joined()).into_owned())
    };
    (
        text("Event-Name").unwrap_or_default(),
        text("Event-Subclass"),
        text("Event-Date-Timestamp").and_then(|t| t.trim().parse().ok()),
    )
}

/// Reads name, subclass and timestamp from a plain body without parsing every header.
fn scan_plain(body: &[u8]) -> (String, Option<String>, Option<i64>) {
    let (mut name, mut subclass, mut timestamp) = (None, None, None);
    for line in body.split(|&b| b == b'\n') {
        if line.is_empty() {
            break;
        }
        let value = |prefix: &[u8]| {
            line.strip_prefix(prefix)
                .map(|v| String::from_utf8_lossy(&percent_decode(v)).into_owned())
        };
        if name.is_none() {
            name = value(b"Event-Name: ");
        }
        if subclass.is_none() {
            subclass = value(b"Event-Subclass: ");
        }
        if timestamp.is_none() {
            timestamp = value(b"Event-Date-Timestamp: ").and_then(|t| t.trim().parse().ok());
        }
        if name.is_some() && timestamp.is_some() && subclass.is_some() {
            break;
        }
    }
    (name.unwrap_or_default(), subclass, timestamp)
}

fn xml_element(body: &[u8], tag: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text.get(start..)?.find('<')? + start;
    let raw = text.get(start..end)?;
    Some(String::from_utf8_lossy(&percent_decode(raw.as_bytes())).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN: &[u8] = b"Event-Name: BACKGROUND_JOB\nCore-UUID: c1\nFreeSWITCH-IPv6: %3A%3A1\nEvent-Date-Timestamp: 1767261603623456\nJob-UUID: j1\nvariable_multi: ARRAY%3A%3Aa%7C%3Ab\nContent-Length: 4\n\n+OK\n";

    #[test]
    fn plain_facts_and_parts() {
        let event = ServedEvent::from_body(EventFormat::Plain, Bytes::from_static(PLAIN));
        assert_eq!(event.name(), "BACKGROUND_JOB");
        assert_eq!(event.timestamp_us(), Some(1_767_261_603_623_456));
        let parts = event.parts();
        assert_eq!(parts.body, b"+OK\n");
        assert!(parts.header("content-length").is_none());
        assert_eq!(
            parts.header("variable_multi"),
            Some(&HeaderValue::Many(vec![b"a".to_vec(), b"b".to_vec()]))
        );
    }

    #[test]
    fn plain_json_plain_round_trip() {
        let parts = EventParts::from_plain(PLAIN);
        let mut json = Vec::new();
        parts.write_json(&mut json);
        let text = String::from_utf8(json.clone()).unwrap();
        assert!(
            text.starts_with("{\"Event-Name\":\"BACKGROUND_JOB\""),
            "{text}"
        );
        assert!(text.contains("\"FreeSWITCH-IPv6\":\"::1\""), "{text}");
        assert!(text.contains("\"variable_multi\":[\"a\",\"b\"]"), "{text}");
        assert!(
            text.ends_with("\"Content-Length\":\"4\",\"_body\":\"+OK\\n\"}"),
            "{text}"
        );
        let back = EventParts::from_json(&json).unwrap();
        let mut plain = Vec::new();
        back.write_plain(&mut plain);
        assert_eq!(plain, PLAIN);
    }

    #[test]
    fn xml_layout() {
        let mut xml = Vec::new();
        EventParts::from_plain(PLAIN).write_xml(&mut xml);
        let text = String::from_utf8(xml).unwrap();
        assert!(
            text.contains("    <FreeSWITCH-IPv6>%3A%3A1</FreeSWITCH-IPv6>\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "  <Content-Length>4</Content-Length>\n  <body>+OK\n  </body>\n</event>\n"
            ),
            "{text}"
        );
    }
}
