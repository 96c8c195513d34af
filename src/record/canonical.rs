//! How does PHP's `json_encode` write a JSON value, byte for byte?
//!
//! The reference writes every JSON document (NDJSON lines, the checksum input) with
//! `json_encode` and the flags "unescaped slashes, unescaped unicode" (§1.6). This module
//! reproduces those bytes for a [`serde_json::Value`]:
//!
//! - strings: `"` and `\` escaped, `\b \f \n \r \t` as short escapes, other C0 controls as
//!   `\u00XX` with lowercase hex, U+2028 and U+2029 as `\u2028` and `\u2029`; `/`, DEL,
//!   every other non-ASCII character and `< > & '` written raw;
//! - integers in the `i64` range as decimal; larger integers as the float PHP would have
//!   decoded them to (`12345678901234567890` -> `1.2345678901234567e+19`);
//! - floats as PHP's `serialize_precision = -1` form: the shortest digits that round-trip,
//!   positional when the decimal exponent is in `-4..=16`, otherwise `d.ddde±x`; a zero
//!   fraction is not written (`1.0` -> `1`, `1e100` -> `1.0e+100`, `-0.0` -> `-0`);
//! - maps: an empty map as `[]`, and a map whose keys are exactly "0", "1", ... "n-1" in
//!   that order as a list, because PHP cannot tell such an array from a list (a record's
//!   maps keep the form of what is inside them instead: `write_record_map`);
//! - compact output, no whitespace ([`to_json`]); or PHP's `JSON_PRETTY_PRINT` layout
//!   ([`to_json_pretty`]), which the reference uses for checkpoint files (§4.2): every
//!   non-empty list or map opens a new line per element, indented four spaces per level,
//!   `"key": value` with one space after the colon, `\n` line breaks, no trailing newline,
//!   and empty lists and maps stay on one line as `[]`.
//!
//! Keys are written in insertion order, or in PHP `ksort` order at every map level for the
//! checksum ([`KeyOrder`]). Lists always keep their order.
//!
//! Non-finite floats never reach this writer: `serde_json` cannot hold them.

use serde_json::{Number, Value};

use super::{Error, JsonMap, check_value_depth, ksort};

/// The order in which the keys of every map are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyOrder {
    /// Insertion order, as `json_encode` writes an array it did not sort (NDJSON lines).
    Insertion,
    /// PHP `ksort` order applied at every map level, as the checksum writes its payload.
    PhpKsort,
}

/// Writes a JSON value exactly as the reference's `json_encode` would.
///
/// # Errors
///
/// [`Error::NestingTooDeep`] if the value nests deeper than
/// [`MAX_JSON_DEPTH`](super::MAX_JSON_DEPTH) levels (the value itself is level 1).
pub fn to_json(value: &Value, order: KeyOrder) -> Result<String, Error> {
    let mut out = String::new();
    write_json(value, order, &mut out)?;
    Ok(out)
}

/// Appends a JSON value to `out` exactly as the reference's `json_encode` would.
///
/// # Errors
///
/// [`Error::NestingTooDeep`] as for [`to_json`]; nothing is written in that case.
pub fn write_json(value: &Value, order: KeyOrder, out: &mut String) -> Result<(), Error> {
    check_value_depth(value, 1)?;
    write_value(out, value, order);
    Ok(())
}

/// Writes a JSON value as the reference's `json_encode` with `JSON_PRETTY_PRINT` would
/// (see the module docs for the layout).
///
/// # Errors
///
/// [`Error::NestingTooDeep`] as for [`to_json`].
pub fn to_json_pretty(value: &Value, order: KeyOrder) -> Result<String, Error> {
    let mut out = String::new();
    write_json_pretty(value, order, &mut out)?;
    Ok(out)
}

/// Appends a JSON value to `out` in PHP's `JSON_PRETTY_PRINT` layout, starting at the
/// current position with no indentation.
///
/// # Errors
///
/// [`Error::NestingTooDeep`] as for [`to_json`]; nothing is written in that case.
pub fn write_json_pretty(value: &Value, order: KeyOrder, out: &mut String) -> Result<(), Error> {
    check_value_depth(value, 1)?;
    write_value_in(out, value, order, Layout::Pretty { level: 0 });
    Ok(())
}

/// Compact output, or PHP's pretty-print layout at an indentation level.
#[derive(Clone, Copy)]
enum Layout {
    Compact,
    Pretty { level: usize },
}

impl Layout {
    /// The layout of the elements inside a list or map written with this layout.
    fn inner(self) -> Layout {
        match self {
            Layout::Compact => Layout::Compact,
            Layout::Pretty { level } => Layout::Pretty { level: level + 1 },
        }
    }

    /// What goes before the element at `index` inside a container written with this layout.
    fn push_element_separator(self, out: &mut String, index: usize) {
        if index > 0 {
            out.push(',');
        }
        if let Layout::Pretty { level } = self {
            out.push('\n');
            push_indent(out, level + 1);
        }
    }

    /// What goes before the closing bracket of a non-empty container.
    fn push_close_separator(self, out: &mut String) {
        if let Layout::Pretty { level } = self {
            out.push('\n');
            push_indent(out, level);
        }
    }

    fn key_separator(self) -> &'static str {
        match self {
            Layout::Compact => ":",
            Layout::Pretty { .. } => ": ",
        }
    }
}

fn push_indent(out: &mut String, level: usize) {
    for _ in 0..level {
        out.push_str("    ");
    }
}

/// Writes a value; the caller has checked that its depth is bounded.
pub(crate) fn write_value(out: &mut String, value: &Value, order: KeyOrder) {
    write_value_in(out, value, order, Layout::Compact);
}

fn write_value_in(out: &mut String, value: &Value, order: KeyOrder, layout: Layout) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => write_number(out, number),
        Value::String(text) => write_string(out, text),
        Value::Array(items) => write_list(out, items.iter(), order, layout),
        Value::Object(map) => write_map_in(out, map, order, layout),
    }
}

fn write_list<'a>(
    out: &mut String,
    items: impl ExactSizeIterator<Item = &'a Value>,
    order: KeyOrder,
    layout: Layout,
) {
    out.push('[');
    let empty = items.len() == 0;
    for (index, item) in items.enumerate() {
        layout.push_element_separator(out, index);
        write_value_in(out, item, order, layout.inner());
    }
    if !empty {
        layout.push_close_separator(out);
    }
    out.push(']');
}

/// Writes a map; the caller has checked that its depth is bounded.
pub(crate) fn write_map(out: &mut String, map: &JsonMap, order: KeyOrder) {
    write_map_in(out, map, order, Layout::Compact);
}

fn write_map_in(out: &mut String, map: &JsonMap, order: KeyOrder, layout: Layout) {
    match order {
        KeyOrder::Insertion => write_entries(
            out,
            map.iter().map(|(key, value)| (key.as_str(), value)),
            order,
            layout,
        ),
        KeyOrder::PhpKsort => {
            let entries = map
                .iter()
                .map(|(key, value)| (key.as_str(), value))
                .collect();
            write_entries(out, ksort::sort_entries(entries).into_iter(), order, layout);
        }
    }
}

fn write_entries<'a>(
    out: &mut String,
    entries: impl ExactSizeIterator<Item = (&'a str, &'a Value)> + Clone,
    order: KeyOrder,
    layout: Layout,
) {
    let is_list = entries
        .clone()
        .enumerate()
        .all(|(index, (key, _))| key_is_index(key, index));
    if is_list {
        write_list(out, entries.map(|(_, value)| value), order, layout);
        return;
    }
    out.push('{');
    for (index, (key, value)) in entries.enumerate() {
        layout.push_element_separator(out, index);
        write_string(out, key);
        out.push_str(layout.key_separator());
        write_value_in(out, value, order, layout.inner());
    }
    layout.push_close_separator(out);
    out.push('}');
}

/// Writes one of a record's maps as its NDJSON line holds it (decision K3): the map itself
/// as PHP writes an array (empty or keyed "0".."n-1" as a list), and every value inside it
/// in the form it was written in: an object stays an object, even when empty (`{}`) or keyed
/// like a list, and a list stays a list. Keys keep insertion order. The caller has checked
/// that the map's depth is bounded.
///
/// PHP decodes the reference's lines into arrays, so a nested `{}` can only come from an
/// object the writer held (`stdClass`); keeping it is what makes an import of the
/// reference's file export byte-identical.
pub(crate) fn write_record_map(out: &mut String, map: &JsonMap) {
    let is_list = map
        .keys()
        .enumerate()
        .all(|(index, key)| key_is_index(key, index));
    if is_list {
        write_items_as_written(out, map.values());
    } else {
        write_entries_as_written(out, map);
    }
}

/// Writes a value inside a record map in the form it was written in (see
/// [`write_record_map`]).
pub(crate) fn write_as_written(out: &mut String, value: &Value) {
    match value {
        Value::Array(items) => write_items_as_written(out, items.iter()),
        Value::Object(map) => write_entries_as_written(out, map),
        scalar => write_value(out, scalar, KeyOrder::Insertion),
    }
}

fn write_items_as_written<'a>(out: &mut String, items: impl Iterator<Item = &'a Value>) {
    out.push('[');
    for (index, item) in items.enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_as_written(out, item);
    }
    out.push(']');
}

fn write_entries_as_written(out: &mut String, map: &JsonMap) {
    out.push('{');
    for (index, (key, value)) in map.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_as_written(out, value);
    }
    out.push('}');
}

/// Whether `key` is the canonical decimal text of `index` (PHP's integer key `index`).
fn key_is_index(key: &str, index: usize) -> bool {
    let bytes = key.as_bytes();
    let canonical = match bytes {
        [b'0'] => true,
        [first, ..] => *first != b'0' && bytes.iter().all(u8::is_ascii_digit),
        [] => false,
    };
    canonical && key.parse::<usize>().is_ok_and(|value| value == index)
}

/// Writes a JSON string with PHP's escaping (see the module docs).
///
/// Runs of bytes that need no escape are copied whole; every escape starts at an ASCII byte
/// or at the 0xE2 that leads U+2028 and U+2029, so runs end on character boundaries.
pub(crate) fn write_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let bytes = text.as_bytes();
    let mut run = 0;
    let mut at = 0;
    while let Some(offset) = bytes.get(at..).and_then(next_escape_lead) {
        at += offset;
        let lead = bytes.get(at).copied().unwrap_or_default();
        let (escape, width): (&str, usize) = match lead {
            b'"' => ("\\\"", 1),
            b'\\' => ("\\\\", 1),
            0x08 => ("\\b", 1),
            0x0c => ("\\f", 1),
            b'\n' => ("\\n", 1),
            b'\r' => ("\\r", 1),
            b'\t' => ("\\t", 1),
            0xe2 => match bytes.get(at + 1..at + 3) {
                Some([0x80, 0xa8]) => ("\\u2028", 3),
                Some([0x80, 0xa9]) => ("\\u2029", 3),
                _ => {
                    at += 1;
                    continue;
                }
            },
            _ => ("", 1),
        };
        out.push_str(text.get(run..at).unwrap_or_default());
        if escape.is_empty() {
            // Another C0 control: \u00XX with lowercase hex.
            out.push_str("\\u00");
            for nibble in [lead >> 4, lead & 0xf] {
                out.extend(HEX.get(usize::from(nibble)).map(|digit| char::from(*digit)));
            }
        } else {
            out.push_str(escape);
        }
        at += width;
        run = at;
    }
    out.push_str(text.get(run..).unwrap_or_default());
    out.push('"');
}

/// Where the first byte of `bytes` at which [`write_string`] may have to escape is
/// ([`ESCAPE_LEAD`]). Blocks of 16 bytes are tested without branches, which the compiler
/// turns into vector compares, and only a block that holds one is looked at byte by byte:
/// most strings hold none.
fn next_escape_lead(bytes: &[u8]) -> Option<usize> {
    let lead = |block: &[u8]| block.iter().position(|b| ESCAPE_LEAD[usize::from(*b)]);
    let (blocks, rest) = bytes.as_chunks::<16>();
    for (index, block) in blocks.iter().enumerate() {
        let any = block.iter().fold(false, |any, b| {
            any | (*b < 0x20) | (*b == b'"') | (*b == b'\\') | (*b == 0xe2)
        });
        if any && let Some(at) = lead(block) {
            return Some(index * 16 + at);
        }
    }
    lead(rest).map(|at| blocks.len() * 16 + at)
}

/// The bytes at which [`write_string`] may have to escape: C0 controls, `"`, `\\` and 0xE2.
const ESCAPE_LEAD: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = true;
        byte += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table[0xe2] = true;
    table
};

/// Writes a map of strings held as `(key, value)` pairs with unique keys, exactly as
/// [`write_map`] writes the same map (PHP's array rules, keys in `order`).
#[cfg(feature = "capture")]
pub(crate) fn write_text_map(out: &mut String, pairs: &[(&str, &str)], order: KeyOrder) {
    let sorted;
    let pairs = match order {
        KeyOrder::Insertion => pairs,
        KeyOrder::PhpKsort => {
            sorted = ksort::sort_entries(pairs.to_vec());
            sorted.as_slice()
        }
    };
    if pairs
        .iter()
        .enumerate()
        .all(|(index, (key, _))| key_is_index(key, index))
    {
        out.push('[');
        for (index, (_, value)) in pairs.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            write_string(out, value);
        }
        out.push(']');
        return;
    }
    write_text_object(out, pairs);
}

/// Writes a map of strings held as `(key, value)` pairs with unique keys as an object, in
/// their order: how a record map holds an object inside it ([`write_record_map`]).
#[cfg(feature = "capture")]
pub(crate) fn write_text_object(out: &mut String, pairs: &[(&str, &str)]) {
    out.push('{');
    for (index, (key, value)) in pairs.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_string(out, value);
    }
    out.push('}');
}

/// Writes a JSON number as PHP would after decoding it (see the module docs).
pub(crate) fn write_number(out: &mut String, number: &Number) {
    if let Some(integer) = number.as_i64() {
        out.push_str(&integer.to_string());
    } else if let Some(unsigned) = number.as_u64() {
        // Beyond i64::MAX PHP decodes an integer literal as a float.
        write_php_float(out, unsigned as f64);
    } else if let Some(float) = number.as_f64() {
        write_php_float(out, float);
    }
}

/// Writes a finite float the way PHP's `json_encode` does with `serialize_precision = -1`.
pub(crate) fn write_php_float(out: &mut String, value: f64) {
    // Rust's `{:e}` gives the shortest round-trip digits, as PHP's `zend_gcvt` mode 0 does:
    // "1.5e20", "1e-7", "-0e0".
    let scientific = format!("{value:e}");
    let (negative, unsigned) = match scientific.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, scientific.as_str()),
    };
    let Some((mantissa, exponent)) = unsigned.split_once('e') else {
        // Only "inf" and "NaN" lack an exponent, and serde_json cannot hold them.
        out.push('0');
        return;
    };
    let digits: Vec<char> = mantissa.chars().filter(char::is_ascii_digit).collect();
    let exponent: i32 = exponent.parse().unwrap_or(0);
    // PHP's `decpt`: the position of the decimal point relative to the first digit.
    let point = exponent + 1;
    if negative {
        out.push('-');
    }
    if !(-3..=17).contains(&point) {
        let mut rest = digits.iter();
        out.extend(rest.next());
        out.push('.');
        if digits.len() > 1 {
            out.extend(rest);
        } else {
            out.push('0');
        }
        out.push('e');
        out.push(if point - 1 < 0 { '-' } else { '+' });
        out.push_str(&(point - 1).unsigned_abs().to_string());
    } else if point <= 0 {
        out.push_str("0.");
        for _ in point..0 {
            out.push('0');
        }
        out.extend(digits.iter());
    } else {
        let whole = usize::try_from(point).unwrap_or(0);
        for index in 0..whole {
            out.push(digits.get(index).copied().unwrap_or('0'));
        }
        if digits.len() > whole {
            out.push('.');
            out.extend(digits.iter().skip(whole));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn float(value: f64) -> String {
        let mut out = String::new();
        write_php_float(&mut out, value);
        out
    }

    fn insertion(value: &Value) -> String {
        to_json(value, KeyOrder::Insertion).unwrap()
    }

    #[test]
    fn floats_use_php_positional_form_for_moderate_exponents() {
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(1.5), "1.5");
        assert_eq!(float(-2.25), "-2.25");
        assert_eq!(float(0.0001), "0.0001");
        assert_eq!(float(0.000_123_4), "0.0001234");
        assert_eq!(float(123_456.789), "123456.789");
        assert_eq!(float(1e16), "10000000000000000");
        assert_eq!(float(0.30000000000000004), "0.30000000000000004");
    }

    #[test]
    fn zero_fraction_floats_are_written_as_integers() {
        assert_eq!(float(1.0), "1");
        assert_eq!(float(0.0), "0");
        assert_eq!(float(-0.0), "-0");
        assert_eq!(float(100.0), "100");
        assert_eq!(float(-42.0), "-42");
    }

    #[test]
    fn floats_use_php_exponent_form_for_large_and_small_magnitudes() {
        assert_eq!(float(1.5e20), "1.5e+20");
        assert_eq!(float(1e100), "1.0e+100");
        assert_eq!(float(1e17), "1.0e+17");
        assert_eq!(float(1e-5), "1.0e-5");
        assert_eq!(float(-1.5e-7), "-1.5e-7");
        assert_eq!(float(1.7976931348623157e308), "1.7976931348623157e+308");
        assert_eq!(
            float(12_345_678_901_234_567_890.0),
            "1.2345678901234567e+19"
        );
    }

    #[test]
    fn integers_beyond_i64_are_written_as_php_floats() {
        let value: Value = serde_json::from_str("12345678901234567890").unwrap();
        assert_eq!(insertion(&value), "1.2345678901234567e+19");
        assert_eq!(insertion(&json!(u64::MAX)), "1.8446744073709552e+19");
        assert_eq!(insertion(&json!(i64::MAX)), "9223372036854775807");
        assert_eq!(insertion(&json!(i64::MIN)), "-9223372036854775808");
    }

    #[test]
    fn strings_use_php_escaping() {
        let value = json!(
            "a/b \"q\" \\ é 😀 <>&' \u{7f} \u{85} \u{2028}\u{2029} \u{8}\u{c}\n\r\t \u{0}\u{1}\u{1f}"
        );
        assert_eq!(
            insertion(&value),
            "\"a/b \\\"q\\\" \\\\ é 😀 <>&' \u{7f} \u{85} \\u2028\\u2029 \\b\\f\\n\\r\\t \\u0000\\u0001\\u001f\""
        );
    }

    /// The escaping rules one character at a time, as the module docs state them.
    fn escaped_by_character(text: &str) -> String {
        let mut out = String::from("\"");
        for character in text.chars() {
            match character {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{2028}' => out.push_str("\\u2028"),
                '\u{2029}' => out.push_str("\\u2029"),
                control if u32::from(control) < 0x20 => {
                    out.push_str(&format!("\\u{:04x}", u32::from(control)));
                }
                other => out.push(other),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn strings_are_escaped_run_by_run_as_character_by_character() {
        fn agrees(text: String) -> bool {
            let mut out = String::new();
            write_string(&mut out, &text);
            out == escaped_by_character(&text)
        }
        for text in [
            "",
            "\u{2028}\u{2029}\u{2027}\u{202a}",
            "\u{1f}\u{0}\u{7f}",
            "€\"",
            "\\\u{e2}",
        ] {
            assert!(agrees(text.to_owned()), "{text:?}");
        }
        quickcheck::QuickCheck::new()
            .tests(5_000)
            .quickcheck(agrees as fn(String) -> bool);
    }

    #[test]
    fn escape_leads_are_found_as_byte_by_byte() {
        fn agrees(bytes: Vec<u8>, skip: u8) -> bool {
            let bytes = bytes.get(usize::from(skip % 16)..).unwrap_or_default();
            let by_byte = bytes.iter().position(|b| ESCAPE_LEAD[usize::from(*b)]);
            next_escape_lead(bytes) == by_byte
        }
        for lead in [0, 0x1f, b'"', b'\\', 0xe2] {
            // Two blocks and a rest.
            for at in 0..40 {
                let mut bytes = vec![b'a'; 40];
                bytes[at] = lead;
                // Neighbours that a block test could confuse with a lead (39 - at != at).
                bytes[39 - at] = 0x20;
                assert!(agrees(bytes.clone(), 0), "{lead:#x} at {at}");
                bytes[39 - at] = 0xe3;
                assert!(agrees(bytes, 0), "{lead:#x} at {at}");
            }
        }
        quickcheck::QuickCheck::new()
            .tests(5_000)
            .quickcheck(agrees as fn(Vec<u8>, u8) -> bool);
    }

    #[test]
    fn strings_without_escapes_are_copied_whole_and_others_escaped() {
        // Plain text, and text whose only U+2xxx characters are not U+2028/U+2029.
        assert_eq!(insertion(&json!("plain/text é")), "\"plain/text é\"");
        assert_eq!(insertion(&json!("€ – ‘x’")), "\"€ – ‘x’\"");
        assert_eq!(insertion(&json!("€\u{2028}")), "\"€\\u2028\"");
        assert_eq!(insertion(&json!("a\"")), "\"a\\\"\"");
    }

    #[test]
    fn empty_maps_are_written_as_empty_lists() {
        assert_eq!(insertion(&json!({})), "[]");
        assert_eq!(insertion(&json!({"a": {}, "b": []})), "{\"a\":[],\"b\":[]}");
    }

    #[test]
    fn maps_with_sequential_index_keys_are_written_as_lists() {
        assert_eq!(insertion(&json!({"0": "a", "1": "b"})), "[\"a\",\"b\"]");
        assert_eq!(
            insertion(&json!({"1": "b", "0": "a"})),
            "{\"1\":\"b\",\"0\":\"a\"}"
        );
        assert_eq!(
            insertion(&json!({"0": "a", "2": "b"})),
            "{\"0\":\"a\",\"2\":\"b\"}"
        );
        assert_eq!(insertion(&json!({"00": "a"})), "{\"00\":\"a\"}");
        assert_eq!(
            to_json(&json!({"1": "b", "0": "a"}), KeyOrder::PhpKsort).unwrap(),
            "[\"a\",\"b\"]"
        );
    }

    #[test]
    fn ksort_applies_at_every_map_level_but_not_to_lists() {
        let value = json!({"z": {"b": 1, "a": [3, 1, {"y": 1, "x": 2}]}, "a": true});
        assert_eq!(
            to_json(&value, KeyOrder::PhpKsort).unwrap(),
            "{\"a\":true,\"z\":{\"a\":[3,1,{\"x\":2,\"y\":1}],\"b\":1}}"
        );
        assert_eq!(
            insertion(&value),
            "{\"z\":{\"b\":1,\"a\":[3,1,{\"y\":1,\"x\":2}]},\"a\":true}"
        );
    }

    #[test]
    fn pretty_layout_matches_php_pretty_print() {
        let value = json!({
            "a": 1,
            "b": [1, "x/y"],
            "c": {},
            "e": [],
            "d": {"x": {"y": null, "z": [{}]}},
            "l": {"0": true, "1": false}
        });
        let expected = "{\n    \"a\": 1,\n    \"b\": [\n        1,\n        \"x/y\"\n    ],\n    \"c\": [],\n    \"e\": [],\n    \"d\": {\n        \"x\": {\n            \"y\": null,\n            \"z\": [\n                []\n            ]\n        }\n    },\n    \"l\": [\n        true,\n        false\n    ]\n}";
        assert_eq!(
            to_json_pretty(&value, KeyOrder::Insertion).unwrap(),
            expected
        );
    }

    #[test]
    fn pretty_layout_of_scalars_and_empty_containers_is_compact() {
        for value in [json!(1), json!("a"), json!(null), json!({}), json!([])] {
            assert_eq!(
                to_json_pretty(&value, KeyOrder::Insertion).unwrap(),
                insertion(&value)
            );
        }
        assert_eq!(
            to_json_pretty(&json!({"b": 1, "a": 2}), KeyOrder::PhpKsort).unwrap(),
            "{\n    \"a\": 2,\n    \"b\": 1\n}"
        );
    }

    #[test]
    fn too_deep_values_are_rejected() {
        let mut value = json!(1);
        for _ in 0..super::super::MAX_JSON_DEPTH {
            value = json!([value]);
        }
        assert!(to_json(&value, KeyOrder::Insertion).is_ok());
        let value = json!([value]);
        assert!(matches!(
            to_json(&value, KeyOrder::Insertion),
            Err(Error::NestingTooDeep {
                max: super::super::MAX_JSON_DEPTH
            })
        ));
    }
}
