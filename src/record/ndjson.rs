//! How is a record written to and read from a reference NDJSON line?
//!
//! The reference filesystem adapter stores one compact JSON object per line (§1.8,
//! decision K3). [`to_ndjson_line`] writes it and [`from_ndjson_line`] reads it (their docs
//! give the rules); [`NdjsonReader`] reads a whole stream, skipping blank lines and naming
//! the line number of every failure (decision C10).

use std::io::BufRead;

use serde::Deserialize;
use serde_json::Value;

use super::canonical;
use super::view::{MapTexts, RecordView};
use super::{
    Error, JsonMap, MAX_JSON_DEPTH, MAX_JSON_VALUES, Record, RecordFields, RecordId, is_blank,
    timestamp,
};

/// The NDJSON schema version this build reads and writes.
pub(crate) const SCHEMA_VERSION: u8 = 1;

/// Writes a record as a reference NDJSON line, without the terminating `\n`.
///
/// The bytes are exactly those the reference serializer writes: keys `schema_version` (1),
/// `id`, `artifact_version`, `artifact_name`, `capture_timestamp`, `stored_at`,
/// `append_sequence`, `connection_generation`, `session_id`, `job_uuid`, `event_name`,
/// `capture_path` (string or `null`, always present), `correlation_ids`, `runtime_flags`,
/// `payload`, `checksum`, `tags`; payload and maps in insertion order (not sorted); PHP
/// escaping and number forms ([`canonical`](super::canonical)); the four maps as PHP writes
/// arrays (empty as `[]`), with the objects and lists inside them in the form they were
/// written in (`{}` stays `{}`); timestamps in the millisecond reference text form.
#[must_use]
pub fn to_ndjson_line(record: &Record) -> String {
    let mut line = String::with_capacity(512);
    write_line(&record.view(&MapTexts::of(record)), &mut line);
    line
}

/// Appends a record's NDJSON line and its terminating `\n` to `out`.
pub fn append_ndjson_line(record: &Record, out: &mut String) {
    record.view(&MapTexts::of(record)).append_ndjson_line(out);
}

/// Writes a viewed record's line, without the terminating `\n`; the maps are copied from
/// their text.
pub(super) fn write_line(record: &RecordView<'_>, out: &mut String) {
    out.push_str("{\"schema_version\":");
    out.push_str(itoa::Buffer::new().format(SCHEMA_VERSION));
    out.push_str(",\"id\":");
    canonical::write_string(out, record.id());
    out.push_str(",\"artifact_version\":");
    canonical::write_string(out, record.artifact_version());
    out.push_str(",\"artifact_name\":");
    canonical::write_string(out, record.artifact_name());
    out.push_str(",\"capture_timestamp\":\"");
    record.capture_timestamp.write_reference_text(out);
    out.push_str("\",\"stored_at\":\"");
    record.stored_at.write_reference_text(out);
    out.push_str("\",\"append_sequence\":");
    out.push_str(itoa::Buffer::new().format(record.append_sequence()));
    for (key, value) in [
        ("connection_generation", record.connection_generation()),
        ("session_id", record.session_id()),
        ("job_uuid", record.job_uuid()),
        ("event_name", record.event_name()),
        ("capture_path", record.capture_path()),
    ] {
        out.push_str(",\"");
        out.push_str(key);
        out.push_str("\":");
        match value {
            Some(text) => canonical::write_string(out, text),
            None => out.push_str("null"),
        }
    }
    out.push_str(",\"correlation_ids\":");
    out.push_str(record.correlation_ids_json());
    out.push_str(",\"runtime_flags\":");
    out.push_str(record.runtime_flags_json());
    out.push_str(",\"payload\":");
    out.push_str(record.payload_json());
    out.push_str(",\"checksum\":");
    canonical::write_string(out, record.checksum());
    out.push_str(",\"tags\":");
    out.push_str(record.tags_json());
    out.push('}');
}

/// Reads a record from one NDJSON line (a trailing `\n` or `\r\n` is allowed).
///
/// It accepts every line the reference accepts, with its rules:
///
/// - the line must be JSON whose top level is an object (anything else is
///   [`Error::InvalidJson`] or [`Error::NotAnObject`]);
/// - `schema_version` must be the integer 1 (a string `"1"`, `1.0` or `2` is
///   [`Error::UnsupportedSchemaVersion`] naming the value; decision C4);
/// - `id`, `artifact_version`, `artifact_name`, `capture_timestamp`, `stored_at` and
///   `checksum` must be strings ([`Error::FieldNotString`]);
/// - `append_sequence` must be a JSON integer ([`Error::FieldNotInteger`]; `1.0` fails);
/// - `correlation_ids`, `runtime_flags`, `payload` and `tags` must be a JSON object or a
///   list ([`Error::FieldNotObject`]); a list becomes a map keyed "0", "1", ... exactly as
///   PHP holds it, and is written back as the same list;
/// - the five optional fields become `None` when missing, `null` or not a string;
/// - unknown keys are ignored (and not written back);
/// - timestamps must parse ([`Error::InvalidField`]) and the record must be valid
///   ([`Record::new`]).
///
/// A record's maps nest at most [`MAX_JSON_DEPTH`] levels (the line object is one more), the
/// limit of every way a record enters a store, and hold at most [`MAX_JSON_VALUES`] values
/// (a bound on the memory a line takes). An NDJSON export imported again gives the same records and the same bytes,
/// with one corner case that keeps its bytes but changes representation: a float with a
/// zero fraction (written `1`) comes back as an integer. A float `-0.0` is written `-0` and
/// read back as `-0.0` (PHP would read an integer 0), so checksums stay valid.
///
/// # Errors
///
/// Each rule above with its own variant; [`Error::NestingTooDeep`] for lines nested too
/// deeply.
pub fn from_ndjson_line(line: &str) -> Result<Record, Error> {
    from_ndjson_bytes(line.as_bytes())
}

/// Reads a record from one NDJSON line given as bytes (invalid UTF-8 is invalid JSON).
///
/// # Errors
///
/// As [`from_ndjson_line`].
pub(crate) fn from_ndjson_bytes(line: &[u8]) -> Result<Record, Error> {
    // The line object is one level above the record's maps.
    if super::json_nesting_exceeds(line, MAX_JSON_DEPTH + 1) {
        return Err(Error::NestingTooDeep {
            max: MAX_JSON_DEPTH,
        });
    }
    if super::json_values_exceed(line, MAX_JSON_VALUES) {
        return Err(Error::TooManyValues {
            max: MAX_JSON_VALUES,
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(line);
    // Safe to lift serde_json's own limit: the nesting check above bounded the depth.
    deserializer.disable_recursion_limit();
    let value =
        Value::deserialize(&mut deserializer).map_err(|source| Error::InvalidJson { source })?;
    deserializer
        .end()
        .map_err(|source| Error::InvalidJson { source })?;
    let Value::Object(object) = value else {
        return Err(Error::NotAnObject);
    };
    record_from_object(object)
}

fn record_from_object(mut object: JsonMap) -> Result<Record, Error> {
    match object.get("schema_version") {
        None => {
            return Err(Error::MissingSchemaVersion {
                supported: SCHEMA_VERSION,
            });
        }
        Some(Value::Number(number))
            if number.is_u64() && number.as_u64() == Some(u64::from(SCHEMA_VERSION)) => {}
        Some(found) => {
            return Err(Error::UnsupportedSchemaVersion {
                found: found.clone(),
                supported: SCHEMA_VERSION,
            });
        }
    }
    let id = take_string(&mut object, "id")?;
    let artifact_version = take_string(&mut object, "artifact_version")?;
    let artifact_name = take_string(&mut object, "artifact_name")?;
    let capture_timestamp = take_string(&mut object, "capture_timestamp")?;
    let stored_at = take_string(&mut object, "stored_at")?;
    let checksum = take_string(&mut object, "checksum")?;
    let append_sequence = take_sequence(&mut object)?;
    let correlation_ids = take_map(&mut object, "correlation_ids")?;
    let runtime_flags = take_map(&mut object, "runtime_flags")?;
    let payload = take_map(&mut object, "payload")?;
    let tags = take_map(&mut object, "tags")?;
    Record::new(RecordFields {
        id: RecordId::new(id)?,
        artifact_version,
        artifact_name,
        capture_timestamp: parse_timestamp("capture_timestamp", &capture_timestamp)?,
        stored_at: parse_timestamp("stored_at", &stored_at)?,
        append_sequence,
        connection_generation: take_optional(&mut object, "connection_generation"),
        session_id: take_optional(&mut object, "session_id"),
        job_uuid: take_optional(&mut object, "job_uuid"),
        event_name: take_optional(&mut object, "event_name"),
        capture_path: take_optional(&mut object, "capture_path"),
        correlation_ids,
        runtime_flags,
        payload,
        checksum,
        tags,
    })
}

fn take_string(object: &mut JsonMap, field: &'static str) -> Result<String, Error> {
    match object.swap_remove(field) {
        Some(Value::String(text)) => Ok(text),
        _ => Err(Error::FieldNotString { field }),
    }
}

fn take_optional(object: &mut JsonMap, field: &'static str) -> Option<String> {
    match object.swap_remove(field) {
        Some(Value::String(text)) => Some(text),
        _ => None,
    }
}

fn take_sequence(object: &mut JsonMap) -> Result<u64, Error> {
    const FIELD: &str = "append_sequence";
    let Some(Value::Number(number)) = object.swap_remove(FIELD) else {
        return Err(Error::FieldNotInteger { field: FIELD });
    };
    // Integers beyond i64 are floats to PHP, so they are not integers here either.
    let Some(sequence) = number.as_i64() else {
        return Err(Error::FieldNotInteger { field: FIELD });
    };
    u64::try_from(sequence)
        .ok()
        .filter(|sequence| *sequence >= 1)
        .ok_or(Error::SequenceOutOfRange {
            sequence: i128::from(sequence),
        })
}

fn take_map(object: &mut JsonMap, field: &'static str) -> Result<JsonMap, Error> {
    object
        .swap_remove(field)
        .and_then(|value| super::php_map(value).ok())
        .ok_or(Error::FieldNotObject { field })
}

fn parse_timestamp(field: &'static str, text: &str) -> Result<time::OffsetDateTime, Error> {
    timestamp::parse(text).map_err(|source| Error::InvalidField {
        field,
        source: Box::new(source),
    })
}

/// The longest NDJSON line [`NdjsonReader::new`] accepts: 64 MiB, well above what a
/// record the segment log can store (16 MiB by default) takes as JSON.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// Reads records from an NDJSON stream, one per non-blank line.
///
/// Blank lines (empty after PHP `trim`) are skipped, as the reference reader skips them.
/// Unlike the reference, a malformed line is not skipped silently: it is yielded as
/// [`Error::AtLine`] with its 1-based line number, and iteration continues with the next
/// line. A line longer than the reader's limit is such a malformed line
/// ([`Error::LineTooLong`]): it is read past without being buffered, so memory stays
/// bounded by the limit plus one read buffer whatever the input (a 1 GB line, a stream of
/// zero bytes without a newline). An I/O error is yielded as [`Error::Io`] and ends the
/// iteration.
#[derive(Debug)]
pub struct NdjsonReader<R> {
    reader: R,
    buffer: Vec<u8>,
    line: u64,
    max_line_bytes: usize,
    /// The rest of an over-long line is still to be read past (lazily, so a caller that
    /// stops at the error never reads it: the input may be endless).
    skip_rest: bool,
    finished: bool,
}

/// What one bounded line read found.
enum LineRead {
    /// The end of the input.
    End,
    /// A line (in the buffer, with its `\n` if it had one).
    Line,
    /// A line longer than the limit, read past and dropped.
    TooLong,
}

impl<R: BufRead> NdjsonReader<R> {
    /// Reads NDJSON from `reader`, with lines of at most [`DEFAULT_MAX_LINE_BYTES`].
    pub fn new(reader: R) -> Self {
        Self::with_max_line_bytes(reader, DEFAULT_MAX_LINE_BYTES)
    }

    /// Reads NDJSON from `reader`, with lines of at most `max_line_bytes` (not counting the
    /// line end).
    pub fn with_max_line_bytes(reader: R, max_line_bytes: usize) -> Self {
        Self {
            reader,
            buffer: Vec::new(),
            line: 0,
            max_line_bytes,
            skip_rest: false,
            finished: false,
        }
    }

    /// The 1-based number of the last line read (0 before the first).
    #[must_use]
    pub fn line_number(&self) -> u64 {
        self.line
    }

    /// The bytes of the last line read, its line end included (0 before the first, and for
    /// a line refused as too long).
    #[must_use]
    pub fn line_bytes(&self) -> usize {
        self.buffer.len()
    }

    /// Reads the next line into the buffer, never holding more than the limit plus one
    /// chunk of the underlying reader. An over-long line ends the read at once; its rest is
    /// read past by the next call.
    fn read_line(&mut self) -> std::io::Result<LineRead> {
        self.buffer.clear();
        let mut skipping = std::mem::take(&mut self.skip_rest);
        let mut any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(available) => available,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error),
            };
            if available.is_empty() {
                break;
            }
            let newline = available.iter().position(|&b| b == b'\n');
            let take = newline.map_or(available.len(), |at| at + 1);
            if skipping {
                // The rest of the previous, over-long line.
                self.reader.consume(take);
                skipping = newline.is_none();
                continue;
            }
            any = true;
            let content = self.buffer.len() + newline.unwrap_or(take);
            if content > self.max_line_bytes {
                self.buffer = Vec::new();
                self.skip_rest = true;
                return Ok(LineRead::TooLong);
            }
            let needed = self.buffer.len() + take;
            if needed > self.buffer.capacity() {
                // Grow by doubling, but never past the limit (plus the line end).
                let target = self
                    .buffer
                    .capacity()
                    .saturating_mul(2)
                    .clamp(needed, self.max_line_bytes.saturating_add(2));
                self.buffer.reserve_exact(target - self.buffer.len());
            }
            if let Some(chunk) = available.get(..take) {
                self.buffer.extend_from_slice(chunk);
            }
            self.reader.consume(take);
            if newline.is_some() {
                break;
            }
        }
        Ok(if any { LineRead::Line } else { LineRead::End })
    }
}

impl<R: BufRead> Iterator for NdjsonReader<R> {
    type Item = Result<Record, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.finished {
            match self.read_line() {
                Ok(LineRead::End) => self.finished = true,
                Ok(LineRead::TooLong) => {
                    self.line += 1;
                    return Some(Err(Error::AtLine {
                        line: self.line,
                        source: Box::new(Error::LineTooLong {
                            max: self.max_line_bytes as u64,
                        }),
                    }));
                }
                Ok(LineRead::Line) => {
                    self.line += 1;
                    let is_blank_line = std::str::from_utf8(&self.buffer).is_ok_and(is_blank);
                    if !is_blank_line {
                        let line = self.line;
                        return Some(from_ndjson_bytes(&self.buffer).map_err(|source| {
                            Error::AtLine {
                                line,
                                source: Box::new(source),
                            }
                        }));
                    }
                }
                Err(source) => {
                    self.finished = true;
                    return Some(Err(Error::Io {
                        line: self.line + 1,
                        source,
                    }));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_check_counts_only_brackets_outside_strings() {
        let inside_string = format!("{{\"a\":\"{}\"}}", "[".repeat(1000));
        let check = |bytes: &[u8], max| !super::super::json_nesting_exceeds(bytes, max);
        assert!(check(inside_string.as_bytes(), 2));
        let escaped_quote = format!("{{\"a\":\"\\\"{}\"}}", "{".repeat(10));
        assert!(check(escaped_quote.as_bytes(), 2));
        assert!(check(b"[[[]]]", 3));
        assert!(!check(b"[[[[]]]]", 3));
    }

    #[test]
    fn value_count_bounds_the_values_and_ignores_strings() {
        let count = |bytes: &[u8]| {
            (0..20)
                .find(|max| !super::super::json_values_exceed(bytes, *max))
                .unwrap()
        };
        assert_eq!(count(b"[1,2,3]"), 4);
        // Six values; the list and the inner object are counted by their parents too.
        assert_eq!(count(br#"{"a":[1,{"b":2}],"c":"x,[{"}"#), 8);
        assert_eq!(count(br#""a,b,[c""#), 0);
    }

    /// A line with more values than a record may hold is refused before it is parsed; one
    /// just under the limit reads.
    #[test]
    fn a_line_of_too_many_values_is_refused() {
        let line = |tags: usize| {
            let zeros = vec!["0"; tags].join(",");
            format!(
                r#"{{"schema_version":1,"id":"a","artifact_version":"1","artifact_name":"x","capture_timestamp":"2024-01-15T10:00:00.000+00:00","stored_at":"2024-01-15T10:00:01.250+00:00","append_sequence":1,"connection_generation":null,"session_id":null,"job_uuid":null,"event_name":null,"capture_path":null,"correlation_ids":[],"runtime_flags":[],"payload":{{}},"checksum":"kept","tags":[{zeros}]}}"#
            )
        };
        let record = from_ndjson_line(&line(MAX_JSON_VALUES - 64)).unwrap();
        assert_eq!(record.tags().len(), MAX_JSON_VALUES - 64);
        assert!(matches!(
            from_ndjson_line(&line(MAX_JSON_VALUES)),
            Err(Error::TooManyValues {
                max: MAX_JSON_VALUES
            })
        ));
    }

    #[test]
    fn list_maps_are_keyed_by_index() {
        let mut object = JsonMap::new();
        object.insert("payload".into(), serde_json::json!(["a", "b"]));
        let map = take_map(&mut object, "payload").unwrap();
        assert_eq!(map.keys().collect::<Vec<_>>(), ["0", "1"]);
    }
}
