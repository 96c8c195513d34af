//! What is a record's checksum, and does a stored record still match its own?
//!
//! The checksum (§1.7, decision K2) is an integrity marker, byte-compatible with the
//! reference: SHA-256, lowercase hex, over the compact PHP JSON ([`super::canonical`]) of
//! the four-key map `artifact_name`, `artifact_version`, `capture_timestamp` (reference text
//! form, see [`super::timestamp`]) and `payload`, in that order, with the payload key-sorted
//! in PHP `ksort` order at every map level. Nothing else (id, sequence, stored_at, tags,
//! identity fields, correlation ids, runtime flags) takes part.
//!
//! It is computed once when a record is built from an envelope. [`verify`] recomputes it
//! from a stored record and compares in constant time; readers never verify on their own.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::canonical::{self, KeyOrder};
use super::{Error, JsonMap, Record, check_map_depth, timestamp};

/// Builds the exact text the checksum is computed over.
///
/// # Errors
///
/// [`Error::NestingTooDeep`] if the payload nests deeper than
/// [`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH) levels.
pub fn canonical_json(
    artifact_name: &str,
    artifact_version: &str,
    capture_timestamp: &OffsetDateTime,
    payload: &JsonMap,
) -> Result<String, Error> {
    check_map_depth(payload)?;
    let mut out = String::with_capacity(128);
    write_canonical(
        &mut out,
        artifact_name,
        artifact_version,
        capture_timestamp,
        |out| canonical::write_map(out, payload, KeyOrder::PhpKsort),
    );
    Ok(out)
}

/// Writes the checksum's input with the payload's canonical text written by `payload`.
fn write_canonical(
    out: &mut String,
    artifact_name: &str,
    artifact_version: &str,
    capture_timestamp: &OffsetDateTime,
    payload: impl FnOnce(&mut String),
) {
    out.push_str("{\"artifact_name\":");
    canonical::write_string(out, artifact_name);
    out.push_str(",\"artifact_version\":");
    canonical::write_string(out, artifact_version);
    out.push_str(",\"capture_timestamp\":\"");
    timestamp::write_reference_text(capture_timestamp, out);
    out.push_str("\",\"payload\":");
    payload(out);
    out.push('}');
}

/// Computes the checksum of a payload held in another form than a map: `payload` writes
/// the text [`canonical::write_map`] would write for it in PHP `ksort` order. `scratch`
/// holds the input (its earlier content is dropped) so that callers can reuse it.
pub(crate) fn compute_with(
    scratch: &mut String,
    artifact_name: &str,
    artifact_version: &str,
    capture_timestamp: &OffsetDateTime,
    payload: impl FnOnce(&mut String),
) -> String {
    scratch.clear();
    write_canonical(
        scratch,
        artifact_name,
        artifact_version,
        capture_timestamp,
        payload,
    );
    to_lower_hex(&Sha256::digest(scratch.as_bytes()))
}

/// Computes the checksum: lowercase hex SHA-256 of [`canonical_json`].
///
/// # Errors
///
/// [`Error::NestingTooDeep`] as for [`canonical_json`].
pub fn compute(
    artifact_name: &str,
    artifact_version: &str,
    capture_timestamp: &OffsetDateTime,
    payload: &JsonMap,
) -> Result<String, Error> {
    let canonical = canonical_json(artifact_name, artifact_version, capture_timestamp, payload)?;
    Ok(to_lower_hex(&Sha256::digest(canonical.as_bytes())))
}

/// Recomputes a stored record's checksum and compares it with the stored one in constant
/// time (for equal lengths). Returns `false` on any difference.
#[must_use]
pub fn verify(record: &Record) -> bool {
    compute(
        record.artifact_name(),
        record.artifact_version(),
        record.capture_timestamp(),
        record.payload(),
    )
    .is_ok_and(|expected| constant_time_eq(expected.as_bytes(), record.checksum().as_bytes()))
}

fn to_lower_hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // A nibble is below 16, so both lookups are in bounds.
        out.extend([HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]]);
    }
    // Hex digits are ASCII: the conversion only checks that.
    String::from_utf8(out).unwrap_or_default()
}

/// Compares two byte strings without an early exit on the first difference.
fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    if left.len() != right.len() {
        return false;
    }
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |accumulated, (a, b)| accumulated | (a ^ b));
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_complete() {
        assert_eq!(to_lower_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }
}
