//! What is one ESL frame, and how are its header lines parsed?
//!
//! A [`Frame`] is a header block, an empty line and an optional body, exactly as FreeSWITCH
//! wrote it. The frame keeps the raw bytes of its header block (including any stray newlines
//! that preceded it and the terminating `\n\n`), so [`Frame::to_bytes`] reproduces the wire
//! bytes exactly; the parsed headers are an ordered multimap that keeps duplicates and order.

use bytes::{Bytes, BytesMut};

use super::error::{Block, Error, snippet};

/// One ESL frame: raw header bytes, parsed headers in wire order, and the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Raw header block: leading stray newlines, header lines, and the terminating `\n\n`.
    head: Bytes,
    /// Headers as received: order and duplicates kept.
    headers: Vec<(String, String)>,
    /// Body bytes (exactly `Content-Length` of them; empty without that header).
    body: Bytes,
}

impl Frame {
    pub(crate) fn from_parts(head: Bytes, headers: Vec<(String, String)>, body: Bytes) -> Self {
        Self {
            head,
            headers,
            body,
        }
    }

    /// Headers in wire order, duplicates kept.
    pub fn headers(&self) -> &[(String, String)] {
        &self.headers
    }

    /// The value of the first header named exactly `name` (case as FreeSWITCH sends it).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `Content-Type` header, if any.
    pub fn content_type(&self) -> Option<&str> {
        self.header("Content-Type")
    }

    /// The body length this frame declares: `Ok(None)` without a `Content-Length` header,
    /// an error if the value is not ASCII digits.
    pub fn content_length(&self) -> Result<Option<usize>, Error> {
        self.header("Content-Length")
            .map(|v| parse_length(v.as_bytes(), Block::Outer))
            .transpose()
    }

    /// The raw header block, including the terminating empty line.
    pub fn raw_head(&self) -> &Bytes {
        &self.head
    }

    /// The body bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Bytes this frame holds in memory: its wire bytes, and its parsed headers (the list's
    /// slots, and each name's and value's allocation with [`ALLOCATION_OVERHEAD`]). What a
    /// queue bounded in bytes charges for it: a block of many tiny headers holds several
    /// times its wire bytes.
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        let allocation = |capacity: usize| match capacity {
            0 => 0,
            n => n + ALLOCATION_OVERHEAD,
        };
        let strings: usize = self
            .headers
            .iter()
            .map(|(name, value)| allocation(name.capacity()) + allocation(value.capacity()))
            .sum();
        self.head.len()
            + self.body.len()
            + self.headers.capacity() * std::mem::size_of::<(String, String)>()
            + strings
    }

    /// Appends the frame's exact wire bytes to `dst`.
    pub fn write_to(&self, dst: &mut BytesMut) {
        dst.reserve(self.head.len() + self.body.len());
        dst.extend_from_slice(&self.head);
        dst.extend_from_slice(&self.body);
    }

    /// The frame's exact wire bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::new();
        self.write_to(&mut out);
        out.freeze()
    }
}

/// What one heap allocation costs beyond the bytes asked for, as [`Frame::held_bytes`]
/// counts it: the rounding up to a size class (mimalloc's, the binary's allocator, rounds
/// small sizes to 8 or 16 bytes). An estimate: glibc's smallest chunk is 32 bytes, so there
/// a name or value under 16 bytes holds up to 15 bytes more than counted.
pub const ALLOCATION_OVERHEAD: usize = 16;

/// The first header named `name`, compared case-insensitively (FreeSWITCH is not consistent
/// about case, and libesl matches this way).
#[must_use]
pub fn header_ci<'a>(frame: &'a Frame, name: &str) -> Option<&'a str> {
    frame
        .headers()
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Parses a `Content-Length` value: one or more ASCII digits, no sign, no spaces.
pub(crate) fn parse_length(value: &[u8], block: Block) -> Result<usize, Error> {
    let invalid = || Error::InvalidContentLength {
        block,
        value: snippet(value),
    };
    if value.is_empty() {
        return Err(invalid());
    }
    let mut n: usize = 0;
    for &b in value {
        if !b.is_ascii_digit() {
            return Err(invalid());
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(b - b'0')))
            .ok_or_else(invalid)?;
    }
    Ok(n)
}

/// How a header line is split into name and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    /// At the first colon (outer frames, as libesl does).
    FirstColon,
    /// At the first `": "`, falling back to the first colon: plain-event names are not
    /// encoded and may hold colons (`variable_nolocal:origination_uuid`), values are
    /// encoded and never hold a raw colon or space.
    ColonSpace,
}

/// Parses one header line (without its `\n`) into a raw name and raw value.
pub(crate) fn parse_line(
    line: &[u8],
    number: usize,
    block: Block,
    split: Split,
) -> Result<(&[u8], &[u8]), Error> {
    let colon = match split {
        Split::FirstColon => line.iter().position(|&b| b == b':'),
        Split::ColonSpace => line
            .windows(2)
            .position(|w| w == b": ")
            .or_else(|| line.iter().position(|&b| b == b':')),
    };
    let Some(colon) = colon else {
        return Err(Error::MissingColon {
            block,
            line: number,
            text: snippet(line),
        });
    };
    let name = &line[..colon];
    if name.is_empty() {
        return Err(Error::EmptyHeaderName {
            block,
            line: number,
            text: snippet(line),
        });
    }
    if name.trim_ascii() != name {
        return Err(Error::HeaderNameWhitespace {
            block,
            line: number,
            text: snippet(line),
        });
    }
    let mut value = &line[colon + 1..];
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    Ok((name, value))
}

/// Parses a header block (lines separated by `\n`, without the terminating empty line).
pub(crate) fn parse_block(
    block_bytes: &[u8],
    block: Block,
    split: Split,
) -> Result<Vec<(String, String)>, Error> {
    let mut headers = Vec::new();
    if block_bytes.is_empty() {
        return Ok(headers);
    }
    for (i, line) in block_bytes.split(|&b| b == b'\n').enumerate() {
        let (name, value) = parse_line(line, i + 1, block, split)?;
        headers.push((
            String::from_utf8_lossy(name).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Ok(headers)
}

/// Whether bytes the decoder has not made into a frame yet could be the start of an ESL
/// frame, or are something else (an HTTP greeting, TLS, binary noise). After stray line
/// breaks, every complete line of the header block so far must start with a header name
/// (ASCII letters, digits, `-`, `_`, `.`) followed by its colon, and the incomplete last line
/// with such a name; a complete header block (the frame waits for its body) counts. Bytes
/// that are only line breaks are no frame at all (`false`).
#[must_use]
pub fn could_start_frame(bytes: &[u8]) -> bool {
    let start = bytes
        .iter()
        .take_while(|&&b| b == b'\n' || b == b'\r')
        .count();
    let rest = bytes.get(start..).unwrap_or_default();
    if rest.is_empty() {
        return false;
    }
    // The header block: up to its terminator, whose lines are all complete; else up to the
    // last line break, followed by an incomplete line.
    let (complete, partial) = match find_terminator(rest, 0) {
        Some(end) => (rest.get(..end).unwrap_or_default(), &[][..]),
        None => match rest.iter().rposition(|&b| b == b'\n') {
            Some(last) => (
                rest.get(..last).unwrap_or_default(),
                rest.get(last + 1..).unwrap_or_default(),
            ),
            None => (&[][..], rest),
        },
    };
    let name_len = |line: &[u8]| {
        line.iter()
            .take_while(|&&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            .count()
    };
    let complete_ok = complete.is_empty()
        || complete.split(|&b| b == b'\n').all(|line| {
            let n = name_len(line);
            n > 0 && line.get(n) == Some(&b':')
        });
    let n = name_len(partial);
    let partial_ok = match partial.get(n) {
        None => true,
        Some(&b':') => n > 0,
        Some(_) => false,
    };
    complete_ok && partial_ok
}

/// Position of the first `\n\n` in `bytes` at or after `from`.
pub(crate) fn find_terminator(bytes: &[u8], from: usize) -> Option<usize> {
    bytes
        .get(from..)?
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|p| p + from)
}
