//! What bytes does the server write?
//!
//! The frames FreeSWITCH's `mod_event_socket` sends (esl-protocol.md §1.1-1.11): the
//! `auth/request` greeting, `command/reply` frames with their exact reply texts, the bgapi
//! acknowledgement, `api/response`, disconnect notices and event frames; plus FreeSWITCH's
//! value encodings, needed to convert events between the plain, JSON and XML formats:
//! [`url_encode`] (`switch_url_encode` with "no double encoding") and JSON/XML escaping.
//! Every header line ends in LF only, as FreeSWITCH writes them.

use bytes::{BufMut, BytesMut};

use super::command::EventFormat;

/// The greeting sent on every accepted inbound connection.
pub(crate) const GREETING: &[u8] = b"Content-Type: auth/request\n\n";

/// Body of the disconnect notice of a plain inbound listener.
pub(crate) const DISCONNECT_BODY: &[u8] =
    b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n";

/// Body of the disconnect notice sent when FreeSWITCH shuts down.
pub(crate) const SHUTDOWN_BODY: &[u8] = b"The system is being shut down.\n";

/// The most bytes of a `Reply-Text`: FreeSWITCH formats every reply into a 512-byte buffer
/// (`char reply[512]` in `listener_run`, filled by `switch_snprintf`), so a longer text is
/// cut to its first 511 bytes (esl-protocol.md §1.3, §1.12), even inside a UTF-8 character.
pub(crate) const REPLY_TEXT_MAX: usize = 511;

/// Appends a `command/reply` frame with `Reply-Text: text`, cut to [`REPLY_TEXT_MAX`] bytes.
pub(crate) fn command_reply(out: &mut BytesMut, text: &str) {
    let text = text.as_bytes();
    out.put_slice(b"Content-Type: command/reply\nReply-Text: ");
    out.put_slice(text.get(..REPLY_TEXT_MAX).unwrap_or(text));
    out.put_slice(b"\n\n");
}

/// The body of the `text/rude-rejection` frame sent to a connection refused because the
/// server already serves its maximum number of connections (FreeSWITCH sends this frame
/// type, with `Access Denied, go away.`, to a peer its ACL refuses).
pub(crate) fn too_many_connections_body(limit: usize) -> Vec<u8> {
    format!("Too many connections ({limit}), try again later.\n").into_bytes()
}

/// Appends a `text/rude-rejection` frame carrying `body`.
pub(crate) fn rude_rejection(out: &mut BytesMut, body: &[u8]) {
    out.put_slice(b"Content-Type: text/rude-rejection\nContent-Length: ");
    put_decimal(out, body.len() as u64);
    out.put_slice(b"\n\n");
    out.put_slice(body);
}

/// Appends the bgapi acknowledgement: `Reply-Text: +OK Job-UUID: <uuid>` and a separate
/// `Job-UUID` header (§1.6).
pub(crate) fn bgapi_ack(out: &mut BytesMut, job_uuid: &str) {
    out.put_slice(b"Content-Type: command/reply\nReply-Text: +OK Job-UUID: ");
    out.put_slice(job_uuid.as_bytes());
    out.put_slice(b"\nJob-UUID: ");
    out.put_slice(job_uuid.as_bytes());
    out.put_slice(b"\n\n");
}

/// Appends an `api/response` frame carrying `body` (an empty body becomes
/// `-ERR no reply\n`, as FreeSWITCH does).
pub(crate) fn api_response(out: &mut BytesMut, body: &[u8]) {
    let body = if body.is_empty() {
        &b"-ERR no reply\n"[..]
    } else {
        body
    };
    out.put_slice(b"Content-Type: api/response\nContent-Length: ");
    put_decimal(out, body.len() as u64);
    out.put_slice(b"\n\n");
    out.put_slice(body);
}

/// The `api/response` body FreeSWITCH gives for an unknown API command.
#[must_use]
pub(crate) fn unknown_api_body(command: &str) -> Vec<u8> {
    let name = command.split_whitespace().next().unwrap_or_default();
    format!("-ERR {name} Command not found!\n").into_bytes()
}

/// Appends a `text/disconnect-notice` frame with `body` (headers in FreeSWITCH's order:
/// `Content-Type`, then `Content-Length`).
pub(crate) fn disconnect_notice(out: &mut BytesMut, body: &[u8]) {
    out.put_slice(b"Content-Type: text/disconnect-notice\nContent-Length: ");
    put_decimal(out, body.len() as u64);
    out.put_slice(b"\n\n");
    out.put_slice(body);
}

/// Appends an event frame head as `mod_event_socket` writes it: `Content-Length` first,
/// then `Content-Type`.
pub(crate) fn event_head(out: &mut BytesMut, format: EventFormat, body_len: usize) {
    out.put_slice(b"Content-Length: ");
    put_decimal(out, body_len as u64);
    out.put_slice(b"\nContent-Type: ");
    out.put_slice(format.content_type().as_bytes());
    out.put_slice(b"\n\n");
}

/// Appends `n` in decimal without allocating.
pub(crate) fn put_decimal(out: &mut impl BufMut, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        if let Some(d) = digits.get_mut(at) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    out.put_slice(digits.get(at..).unwrap_or_default());
}

/// Whether FreeSWITCH's URL encoder leaves `byte` as is.
fn url_safe(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'$' | b'\'' | b'(' | b')' | b'*' | b',' | b'-' | b'.' | b'/' | b'_' | b'~'
        )
}

fn is_upper_hex(byte: u8) -> bool {
    byte.is_ascii_digit() || (b'A'..=b'F').contains(&byte)
}

/// Appends `value` URL-encoded as `switch_url_encode` does: `%XX` in upper-case hex for
/// every byte outside the safe set, except that a `%` already followed by two upper-case
/// hex digits is copied (FreeSWITCH never double-encodes).
pub(crate) fn url_encode(out: &mut impl BufMut, value: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for (i, &b) in value.iter().enumerate() {
        let escaped_already = b == b'%'
            && value.get(i + 1).copied().is_some_and(is_upper_hex)
            && value.get(i + 2).copied().is_some_and(is_upper_hex);
        if url_safe(b) || escaped_already {
            out.put_u8(b);
        } else {
            out.put_u8(b'%');
            out.put_u8(HEX[usize::from(b >> 4)]);
            out.put_u8(HEX[usize::from(b & 0x0f)]);
        }
    }
}

/// Appends `value` as a JSON string the way cJSON prints it: `"` and `\` escaped, control
/// characters as short escapes or `\u00XX`, everything else (non-ASCII UTF-8 included) as is.
/// Invalid UTF-8 is replaced, since a JSON document must be text.
pub(crate) fn json_string(out: &mut Vec<u8>, value: &[u8]) {
    let text = String::from_utf8_lossy(value);
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Copy runs of bytes that need no escape in one go; only ASCII bytes are ever escaped.
    let mut run = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&[u8]> = match b {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0..=0x1f => None,
            _ => continue,
        };
        out.extend_from_slice(bytes.get(run..i).unwrap_or_default());
        match escape {
            Some(text) => out.extend_from_slice(text),
            None => out.extend_from_slice(format!("\\u{b:04x}").as_bytes()),
        }
        run = i + 1;
    }
    out.extend_from_slice(bytes.get(run..).unwrap_or_default());
    out.push(b'"');
}

/// Appends `value` as XML element text the way FreeSWITCH's XML writer escapes it: `&`, `<`,
/// `>` and carriage returns; quotes and apostrophes stay as they are (a real switch sends
/// `'` in an `API-Command-Argument` unescaped).
pub(crate) fn xml_escape(out: &mut Vec<u8>, value: &[u8]) {
    for &b in value {
        match b {
            b'&' => out.extend_from_slice(b"&amp;"),
            b'<' => out.extend_from_slice(b"&lt;"),
            b'>' => out.extend_from_slice(b"&gt;"),
            b'\r' => out.extend_from_slice(b"&#xD;"),
            b => out.push(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(value: &[u8]) -> String {
        let mut out = Vec::new();
        url_encode(&mut out, value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn xml_text_is_escaped_as_freeswitch_escapes_it() {
        let mut out = Vec::new();
        xml_escape(&mut out, b"a&b<c>d\"e'f\rg\nh\ti");
        assert_eq!(out, b"a&amp;b&lt;c&gt;d\"e'f&#xD;g\nh\ti");
    }

    #[test]
    fn url_encoding_follows_freeswitch_rules() {
        assert_eq!(encode(b"Thu, 01 Jan 2026"), "Thu,%2001%20Jan%202026");
        assert_eq!(encode("Zoë".as_bytes()), "Zo%C3%AB");
        assert_eq!(encode(b"1.10+git"), "1.10%2Bgit");
        assert_eq!(
            encode(b"tone_stream://%(250,50,440)"),
            "tone_stream%3A//%25(250,50,440)"
        );
        assert_eq!(encode(b"already%3Aencoded"), "already%3Aencoded");
        assert_eq!(encode(b"lower%3a"), "lower%253a");
        assert_eq!(encode(b"::1"), "%3A%3A1");
    }

    #[test]
    fn decimal_and_frames() {
        let mut out = BytesMut::new();
        put_decimal(&mut out, 0);
        out.put_u8(b' ');
        put_decimal(&mut out, u64::MAX);
        assert_eq!(&out[..], b"0 18446744073709551615");
        let mut out = BytesMut::new();
        disconnect_notice(&mut out, DISCONNECT_BODY);
        assert_eq!(
            out.len(),
            124,
            "the size of the FreeSWITCH notice (fixture 15)"
        );
    }

    #[test]
    fn reply_texts_are_cut_to_511_bytes_as_freeswitch_does() {
        let long = format!("+OK filter added. [Unique-ID]=[{}]", "é".repeat(400));
        let mut out = BytesMut::new();
        command_reply(&mut out, &long);
        let head = b"Content-Type: command/reply\nReply-Text: ";
        assert_eq!(out.len(), head.len() + 511 + 2);
        assert_eq!(&out[head.len()..head.len() + 511], &long.as_bytes()[..511]);
        assert!(out.ends_with(b"\n\n"));
        let mut out = BytesMut::new();
        command_reply(&mut out, "+OK accepted");
        assert_eq!(
            &out[..],
            b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n"
        );
    }

    #[test]
    fn json_strings_escape_like_cjson() {
        let mut out = Vec::new();
        json_string(&mut out, b"a\"b\\c/d\n\x01\xc3\xab");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "\"a\\\"b\\\\c/d\\n\\u0001ë\""
        );
    }
}
