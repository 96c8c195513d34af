//! How are event bodies (`text/event-plain`, `text/event-json`) parsed?
//!
//! These parsers run on demand over a frame's body; framing never depends on them.
//!
//! - [`PlainEvent::parse`] reads the inner header block of a plain event. Names are kept as
//!   sent; values are percent-decoded with [`percent_decode`] (`%XX` only, never failing) and
//!   kept as bytes, because decoded values are not guaranteed UTF-8. The raw encoded values
//!   stay available. The inner body is everything after the inner `\n\n`; it must be at
//!   least as long as the inner `Content-Length`.
//! - [`json_event`] parses an event-json body into an ordered map whose values are strings
//!   or arrays of strings (multi-valued headers).

use std::borrow::Cow;

use super::error::{Block, Error};
use super::frame::{Frame, Split, find_terminator, parse_block, parse_length};

/// One parsed `text/event-plain` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainEvent {
    /// Names and raw (still percent-encoded) values, in order, duplicates kept.
    raw: Vec<(String, String)>,
    /// Percent-decoded values, parallel to `raw`.
    decoded: Vec<Vec<u8>>,
    /// The inner body (after the inner `\n\n`); empty for events without one.
    body: Vec<u8>,
}

impl PlainEvent {
    /// Parses a plain event body: the inner header block up to the first `\n\n`, then the
    /// inner body. Fails on a malformed header line, a missing inner terminator, an invalid
    /// inner `Content-Length`, or an inner body shorter than that length.
    pub fn parse(body: &[u8]) -> Result<PlainEvent, Error> {
        let end = find_terminator(body, 0).ok_or(Error::MissingInnerTerminator)?;
        let block = body.get(..end).unwrap_or_default();
        let rest = body.get(end + 2..).unwrap_or_default();
        let raw = parse_block(block, Block::Inner, Split::ColonSpace)?;
        if let Some((_, v)) = raw.iter().find(|(n, _)| n == "Content-Length") {
            let declared = parse_length(v.as_bytes(), Block::Inner)?;
            if rest.len() < declared {
                return Err(Error::InnerBodyTruncated {
                    declared,
                    actual: rest.len(),
                });
            }
        }
        let decoded = raw
            .iter()
            .map(|(_, v)| percent_decode(v.as_bytes()))
            .collect();
        Ok(PlainEvent {
            raw,
            decoded,
            body: rest.to_vec(),
        })
    }

    /// Headers with their raw, still percent-encoded values, in order.
    pub fn raw_headers(&self) -> &[(String, String)] {
        &self.raw
    }

    /// Header names with their decoded values, in order, duplicates kept.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.raw
            .iter()
            .zip(&self.decoded)
            .map(|((n, _), v)| (n.as_str(), v.as_slice()))
    }

    /// The decoded value of the first header named exactly `name`.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// The decoded value of the first header named `name`, as text (lossy for non-UTF-8).
    pub fn header_str(&self, name: &str) -> Option<Cow<'_, str>> {
        self.header(name).map(String::from_utf8_lossy)
    }

    /// The decoded `Event-Name`.
    pub fn event_name(&self) -> Option<Cow<'_, str>> {
        self.header_str("Event-Name")
    }

    /// The inner `Content-Length`, if present (already validated by [`PlainEvent::parse`]).
    pub fn content_length(&self) -> Option<usize> {
        self.raw
            .iter()
            .find(|(n, _)| n == "Content-Length")
            .and_then(|(_, v)| parse_length(v.as_bytes(), Block::Inner).ok())
    }

    /// The inner body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

/// Decodes `%XX` sequences (either hex case) and nothing else: `+` stays `+`, and a `%` not
/// followed by two hex digits stays literal. Never fails.
pub fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            let hi = input.get(i + 1).and_then(|&h| hex(h));
            let lo = input.get(i + 2).and_then(|&l| hex(l));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Parses a `text/event-json` body into an ordered map (duplicate keys: the last wins, as in
/// any JSON map). Every value must be a string or an array of strings.
pub fn json_event(body: &[u8]) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|source| Error::InvalidJson { source })?;
    let serde_json::Value::Object(map) = value else {
        return Err(Error::JsonNotObject);
    };
    for (key, value) in &map {
        let ok = match value {
            serde_json::Value::String(_) => true,
            serde_json::Value::Array(items) => items.iter().all(serde_json::Value::is_string),
            _ => false,
        };
        if !ok {
            return Err(Error::JsonValueType { key: key.clone() });
        }
    }
    Ok(map)
}

/// An event header's decoded value from a plain or JSON body (`None` for XML or unreadable
/// bodies; framing never depends on this).
#[must_use]
pub fn event_header(frame: &Frame, content_type: &str, name: &str) -> Option<String> {
    if content_type.eq_ignore_ascii_case("text/event-plain") {
        let [value] = scan_plain_headers(frame.body(), [name]);
        value
    } else if content_type.eq_ignore_ascii_case("text/event-json") {
        let map = json_event(frame.body()).ok()?;
        map.get(name).and_then(|v| v.as_str()).map(str::to_owned)
    } else {
        None
    }
}

/// The first values of the named headers of a plain event body, percent-decoded (lossy for
/// non-UTF-8), found by scanning the inner header block only: no full parse, no copy of
/// the other headers. Names compare exactly; lines without `": "` are skipped.
#[must_use]
pub fn scan_plain_headers<const N: usize>(body: &[u8], names: [&str; N]) -> [Option<String>; N] {
    let mut found: [Option<String>; N] = std::array::from_fn(|_| None);
    let mut missing = N;
    for line in body.split(|&b| b == b'\n') {
        if line.is_empty() || missing == 0 {
            break;
        }
        let Some(colon) = line.windows(2).position(|w| w == b": ") else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 2..]);
        for (slot, wanted) in found.iter_mut().zip(names) {
            if slot.is_none() && name == wanted.as_bytes() {
                let decoded = super::event::percent_decode(value);
                *slot = Some(String::from_utf8_lossy(&decoded).into_owned());
                missing -= 1;
                break;
            }
        }
    }
    found
}
