//! How are record timestamps written as text and read back?
//!
//! In memory a timestamp is a [`time::OffsetDateTime`] that keeps full sub-second precision
//! and the offset it was captured in. The reference text form (§1.5), used by NDJSON and the
//! checksum, is PHP's `RFC3339_EXTENDED`: `YYYY-MM-DDTHH:MM:SS.mmm±HH:MM`, exactly three
//! fractional digits *truncated* (never rounded), rendered in the timestamp's own offset,
//! with a numeric offset (`+00:00`, never `Z`). Offset seconds, which that form cannot show,
//! are dropped from the offset text as PHP drops them, so a timestamp whose offset has
//! seconds (possible only when built in code) keeps its text but not its instant through a
//! text round trip.
//!
//! The parser used on import accepts RFC 3339 with 0 to 9 fractional digits, `T`, `t` or a
//! space between date and time, and an offset written `Z`, `z`, `±HH:MM`, `±HHMM` or `±HH`.
//! It deliberately rejects the free-form input PHP's parser also takes (relative words such
//! as `tomorrow`, named zones, leap second `:60`), so a line PHP reads may fail here; lines
//! written by the reference or by us always parse.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::Error;

const NANOS_PER_MILLI: u32 = 1_000_000;
const ERROR_TEXT_CHARS_MAX: usize = 64;

/// Renders a timestamp in the reference text form, e.g. `2024-01-15T12:00:00.123+02:00`.
#[must_use]
pub fn to_reference_text(timestamp: &OffsetDateTime) -> String {
    let mut text = String::with_capacity(29);
    write_reference_text(timestamp, &mut text);
    text
}

/// Appends the reference text form of a timestamp to `out` (see [`to_reference_text`]).
pub fn write_reference_text(timestamp: &OffsetDateTime, out: &mut String) {
    write_reference_text_of(
        timestamp.unix_timestamp(),
        timestamp.nanosecond(),
        timestamp.offset().whole_seconds(),
        out,
    );
}

/// Appends the reference text form of the instant `seconds` + `nanos` (since the Unix epoch)
/// seen in an offset of `offset_seconds`, without building a date: the calendar date comes
/// from the day number with the civil-from-days algorithm (proleptic Gregorian, any year).
pub(crate) fn write_reference_text_of(
    seconds: i64,
    nanos: u32,
    offset_seconds: i32,
    out: &mut String,
) {
    let local = seconds.saturating_add(i64::from(offset_seconds));
    let (days, second_of_day) = (local.div_euclid(86_400), local.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    // Below 86,400, so the casts cannot truncate.
    let second_of_day = second_of_day as u32;
    let magnitude = offset_seconds.unsigned_abs();
    let (hours, minutes) = (magnitude / 3600, magnitude % 3600 / 60);
    // PHP would write "-00:00" for an offset of a few seconds west; no parser can tell that
    // from UTC, so it is written "+00:00" to keep export -> import -> export identical.
    let west = offset_seconds < 0 && (hours, minutes) != (0, 0);
    // "YYYY-MM-DDTHH:MM:SS.mmm+HH:MM" (the year takes four digits within the range of
    // `OffsetDateTime`), built at once from pairs of digits.
    let year_digits = u32::try_from(year.unsigned_abs() % 10_000).unwrap_or(0);
    let millis = nanos / NANOS_PER_MILLI % 1000;
    let [y1, y2] = digit_pair(year_digits / 100);
    let [y3, y4] = digit_pair(year_digits);
    let [mo1, mo2] = digit_pair(month);
    let [d1, d2] = digit_pair(day);
    let [h1, h2] = digit_pair(second_of_day / 3600);
    let [mi1, mi2] = digit_pair(second_of_day % 3600 / 60);
    let [s1, s2] = digit_pair(second_of_day % 60);
    let [_, ms1] = digit_pair(millis / 100);
    let [ms2, ms3] = digit_pair(millis);
    let sign = if west { b'-' } else { b'+' };
    let [oh1, oh2] = digit_pair(hours);
    let [om1, om2] = digit_pair(minutes);
    let text = [
        y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, b'T', h1, h2, b':', mi1, mi2, b':', s1, s2,
        b'.', ms1, ms2, ms3, sign, oh1, oh2, b':', om1, om2,
    ];
    if year < 0 {
        out.push('-');
    }
    // ASCII digits and punctuation only, so the text is always UTF-8.
    out.push_str(std::str::from_utf8(&text).unwrap_or_default());
}

/// The two ASCII digits of `value` below 100 (of `value % 100` otherwise).
fn digit_pair(value: u32) -> [u8; 2] {
    const PAIRS: [[u8; 2]; 100] = {
        let mut pairs = [[0; 2]; 100];
        let mut value = 0;
        while value < 100 {
            pairs[value] = [b'0' + (value / 10) as u8, b'0' + (value % 10) as u8];
            value += 1;
        }
        pairs
    };
    PAIRS.get((value % 100) as usize).copied().unwrap_or(*b"00")
}

/// The (year, month, day) of a day number counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    // Day 1..=31 and month 1..=12 by construction.
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Truncates a timestamp to whole milliseconds, keeping its offset: the precision the
/// reference text form keeps.
#[must_use]
pub fn truncate_to_millis(timestamp: OffsetDateTime) -> OffsetDateTime {
    let millis_only = timestamp.nanosecond() / NANOS_PER_MILLI * NANOS_PER_MILLI;
    // A value below the original nanosecond is always in range, so the fallback is unused.
    timestamp
        .replace_nanosecond(millis_only)
        .unwrap_or(timestamp)
}

/// Parses an RFC 3339 timestamp as accepted on import (see the module docs), keeping its
/// offset and up to nanosecond precision.
///
/// # Errors
///
/// [`Error::InvalidTimestamp`] if the text is not such a timestamp or names an impossible
/// date, time or offset, or an instant whose UTC date is outside years -9999 to 9999.
pub fn parse(text: &str) -> Result<OffsetDateTime, Error> {
    parse_bytes(text.as_bytes()).ok_or_else(|| Error::InvalidTimestamp {
        text: text.chars().take(ERROR_TEXT_CHARS_MAX).collect(),
    })
}

fn parse_bytes(bytes: &[u8]) -> Option<OffsetDateTime> {
    let mut scanner = Scanner { bytes, position: 0 };
    let year_negative = scanner.eat(b'-');
    let year_magnitude = i32::try_from(scanner.digits(4)?).ok()?;
    let year = if year_negative {
        -year_magnitude
    } else {
        year_magnitude
    };
    scanner.expect(b'-')?;
    let month = Month::try_from(u8::try_from(scanner.digits(2)?).ok()?).ok()?;
    scanner.expect(b'-')?;
    let day = u8::try_from(scanner.digits(2)?).ok()?;
    if !(scanner.eat(b'T') || scanner.eat(b't') || scanner.eat(b' ')) {
        return None;
    }
    let hour = u8::try_from(scanner.digits(2)?).ok()?;
    scanner.expect(b':')?;
    let minute = u8::try_from(scanner.digits(2)?).ok()?;
    scanner.expect(b':')?;
    let second = u8::try_from(scanner.digits(2)?).ok()?;
    let nanosecond = if scanner.eat(b'.') || scanner.eat(b',') {
        scanner.fraction()?
    } else {
        0
    };
    let offset = scanner.offset()?;
    if scanner.position != bytes.len() {
        return None;
    }
    let date = Date::from_calendar_date(year, month, day).ok()?;
    let time = Time::from_hms_nano(hour, minute, second, nanosecond).ok()?;
    let timestamp = PrimitiveDateTime::new(date, time).assume_offset(offset);
    // Its instant must be a date too (years -9999 to 9999), in UTC as in its own offset: a
    // record stores both, and one holding another could not be read back.
    timestamp.checked_to_offset(UtcOffset::UTC)?;
    Some(timestamp)
}

/// A cursor over the bytes of a timestamp text; every step returns `None` on a mismatch.
struct Scanner<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn eat(&mut self, expected: u8) -> bool {
        if self.peek() == Some(expected) {
            self.position += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, expected: u8) -> Option<()> {
        self.eat(expected).then_some(())
    }

    /// Reads exactly `count` ASCII digits as a number.
    fn digits(&mut self, count: usize) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..count {
            let digit = self.peek().filter(u8::is_ascii_digit)?;
            value = value * 10 + u32::from(digit - b'0');
            self.position += 1;
        }
        Some(value)
    }

    /// Reads 1 to 9 fractional digits as nanoseconds.
    fn fraction(&mut self) -> Option<u32> {
        let mut nanoseconds = 0u32;
        let mut scale = 100_000_000u32;
        let mut count = 0usize;
        while let Some(digit) = self.peek().filter(u8::is_ascii_digit) {
            count += 1;
            if count > 9 {
                return None;
            }
            nanoseconds += u32::from(digit - b'0') * scale;
            scale /= 10;
            self.position += 1;
        }
        (count > 0).then_some(nanoseconds)
    }

    fn offset(&mut self) -> Option<UtcOffset> {
        if self.eat(b'Z') || self.eat(b'z') {
            return Some(UtcOffset::UTC);
        }
        let negative = if self.eat(b'-') {
            true
        } else if self.eat(b'+') {
            false
        } else {
            return None;
        };
        let hours = i8::try_from(self.digits(2)?).ok()?;
        // Minutes follow after an optional colon, or are absent at the end of the text.
        let has_minutes = self.eat(b':') || self.peek().is_some();
        let minutes = if has_minutes {
            i8::try_from(self.digits(2)?).ok()?
        } else {
            0
        };
        if minutes > 59 {
            return None;
        }
        let sign = if negative { -1 } else { 1 };
        UtcOffset::from_hms(sign * hours, sign * minutes, 0).ok()
    }
}

/// Reads a timestamp written as text (any form [`parse`] accepts), for
/// `#[serde(deserialize_with = "timestamp::deserialize")]`.
///
/// # Errors
///
/// The deserializer's error for a value that is not a string; the message of
/// [`Error::InvalidTimestamp`] for text that is not a timestamp.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<OffsetDateTime, D::Error> {
    deserializer.deserialize_str(TextVisitor)
}

/// As [`deserialize`], for a timestamp that may be `null`. Used with `deserialize_with`, the
/// key must still be present.
///
/// # Errors
///
/// As [`deserialize`].
pub fn deserialize_nullable<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<OffsetDateTime>, D::Error> {
    struct Text(OffsetDateTime);

    impl<'de> Deserialize<'de> for Text {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserialize(deserializer).map(Text)
        }
    }

    Ok(Option::<Text>::deserialize(deserializer)?.map(|text| text.0))
}

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = OffsetDateTime;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("an RFC 3339 timestamp")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<OffsetDateTime, E> {
        parse(text).map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    /// A record stores its timestamp's instant and its offset; an instant that is not a date
    /// in UTC could be parsed but never read back from a stored record.
    #[test]
    fn instants_outside_the_utc_date_range_are_refused() {
        for text in [
            "-9999-01-01T00:00:00.000+00:01",
            "9999-12-31T23:59:59.999-23:59",
        ] {
            assert!(parse(text).is_err(), "{text}");
        }
        for text in [
            "-9999-01-01T00:00:00.000+00:00",
            "9999-12-31T23:59:59.999+00:00",
            "9999-12-31T23:59:59.999+23:59",
        ] {
            assert!(parse(text).is_ok(), "{text}");
        }
    }

    /// The text the calendar fields of `time` give, as the oracle of the day-number writer.
    fn text_from_calendar(timestamp: &OffsetDateTime) -> String {
        let (year, month, day) = timestamp.to_calendar_date();
        let offset = timestamp.offset().whole_seconds();
        let magnitude = offset.unsigned_abs();
        let (hours, minutes) = (magnitude / 3600, magnitude % 3600 / 60);
        let sign = if offset < 0 && (hours, minutes) != (0, 0) {
            '-'
        } else {
            '+'
        };
        format!(
            "{}{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{sign}{hours:02}:{minutes:02}",
            if year < 0 { "-" } else { "" },
            year.unsigned_abs(),
            u8::from(month),
            day,
            timestamp.hour(),
            timestamp.minute(),
            timestamp.second(),
            timestamp.millisecond()
        )
    }

    #[test]
    fn the_day_number_writer_agrees_with_the_calendar_for_any_instant_and_offset() {
        fn property(seconds: i64, nanos: u32, offset: i32) -> bool {
            let first = time::PrimitiveDateTime::MIN.assume_utc().unix_timestamp() + 93_600;
            let last = time::PrimitiveDateTime::MAX.assume_utc().unix_timestamp() - 93_600;
            let seconds = first + seconds.rem_euclid(last - first);
            let offset = UtcOffset::from_whole_seconds(offset % 93_600).unwrap();
            let timestamp = OffsetDateTime::from_unix_timestamp(seconds)
                .unwrap()
                .replace_nanosecond(nanos % 1_000_000_000)
                .unwrap()
                .to_offset(offset);
            to_reference_text(&timestamp) == text_from_calendar(&timestamp)
        }
        quickcheck::QuickCheck::new()
            .tests(20_000)
            .quickcheck(property as fn(i64, u32, i32) -> bool);
        for text in [
            "-9999-01-01T00:00:00.000+00:00",
            "9999-12-31T23:59:59.999+00:00",
            "0000-02-29T12:00:00.000-05:30",
            "1969-12-31T23:59:59.999+00:00",
            "2000-02-29T00:00:00.500+14:00",
        ] {
            let timestamp = parse(text).unwrap();
            assert_eq!(to_reference_text(&timestamp), text);
            assert_eq!(text_from_calendar(&timestamp), text);
        }
    }

    #[test]
    fn reference_text_truncates_to_milliseconds() {
        let timestamp = datetime!(2024-01-15 10:00:00.999999 UTC);
        assert_eq!(
            to_reference_text(&timestamp),
            "2024-01-15T10:00:00.999+00:00"
        );
    }

    #[test]
    fn reference_text_keeps_the_original_offset() {
        let timestamp = datetime!(2024-01-15 12:00:00.123456 +02:00);
        assert_eq!(
            to_reference_text(&timestamp),
            "2024-01-15T12:00:00.123+02:00"
        );
        let timestamp = datetime!(2024-01-15 12:00:00 -03:30);
        assert_eq!(
            to_reference_text(&timestamp),
            "2024-01-15T12:00:00.000-03:30"
        );
        let timestamp = datetime!(2024-01-15 12:00:00 -00:30);
        assert_eq!(
            to_reference_text(&timestamp),
            "2024-01-15T12:00:00.000-00:30"
        );
    }

    #[test]
    fn reference_text_pads_small_and_negative_years_like_php() {
        assert_eq!(
            to_reference_text(&datetime!(0042-03-04 05:06:07.008 UTC)),
            "0042-03-04T05:06:07.008+00:00"
        );
        assert_eq!(
            to_reference_text(&datetime!(-0005-01-01 00:00:00 UTC)),
            "-0005-01-01T00:00:00.000+00:00"
        );
    }

    #[test]
    fn reference_text_drops_offset_seconds_like_php() {
        let offset = UtcOffset::from_hms(1, 0, 30).unwrap();
        let timestamp = datetime!(2024-01-15 12:00:00 UTC).to_offset(offset);
        assert!(to_reference_text(&timestamp).ends_with("+01:00"));
    }

    #[test]
    fn sub_minute_western_offsets_render_as_utc_not_minus_zero() {
        let offset = UtcOffset::from_hms(0, 0, -50).unwrap();
        let timestamp = datetime!(2024-01-15 12:00:00 UTC).to_offset(offset);
        let text = to_reference_text(&timestamp);
        assert!(text.ends_with("+00:00"), "{text}");
        assert_eq!(to_reference_text(&parse(&text).unwrap()), text);
    }

    #[test]
    fn z_is_parsed_and_rendered_as_numeric_utc() {
        let timestamp = parse("2024-01-15T10:00:00Z").unwrap();
        assert_eq!(
            to_reference_text(&timestamp),
            "2024-01-15T10:00:00.000+00:00"
        );
    }

    #[test]
    fn zero_to_nine_fractional_digits_are_parsed_exactly() {
        assert_eq!(parse("2024-01-15T10:00:00+00:00").unwrap().nanosecond(), 0);
        assert_eq!(
            parse("2024-01-15T10:00:00.5+00:00").unwrap().nanosecond(),
            500_000_000
        );
        assert_eq!(
            parse("2024-01-15T10:00:00.000500Z").unwrap().nanosecond(),
            500_000
        );
        assert_eq!(
            parse("2024-01-15T10:00:00.123456789Z")
                .unwrap()
                .nanosecond(),
            123_456_789
        );
        assert!(parse("2024-01-15T10:00:00.1234567891Z").is_err());
        assert!(parse("2024-01-15T10:00:00.Z").is_err());
    }

    #[test]
    fn reference_text_round_trips() {
        for text in [
            "2024-01-15T10:00:00.000+00:00",
            "2024-01-15T12:00:00.123+02:00",
            "1999-12-31T23:59:59.999-11:45",
            "-0005-01-01T00:00:00.000+00:00",
        ] {
            assert_eq!(to_reference_text(&parse(text).unwrap()), text);
        }
    }

    #[test]
    fn offset_variants_are_accepted() {
        let expected = datetime!(2024-01-15 10:00:00 +02:30);
        for text in [
            "2024-01-15T10:00:00+02:30",
            "2024-01-15T10:00:00+0230",
            "2024-01-15t10:00:00+02:30",
            "2024-01-15 10:00:00+02:30",
        ] {
            let parsed = parse(text).unwrap();
            assert_eq!(parsed, expected, "{text}");
            assert_eq!(parsed.offset(), expected.offset(), "{text}");
        }
        assert_eq!(
            parse("2024-01-15T10:00:00-05")
                .unwrap()
                .offset()
                .whole_hours(),
            -5
        );
    }

    #[test]
    fn free_form_and_impossible_input_is_rejected() {
        for text in [
            "",
            "tomorrow",
            "now",
            "2024-01-15",
            "2024-01-15T10:00:00",
            "2024-01-15T10:00:00 UTC",
            "2024-02-30T10:00:00Z",
            "2024-01-15T24:00:00Z",
            "2024-12-31T23:59:60Z",
            "2024-01-15T10:00:00+02:60",
            "2024-01-15T10:00:00+02:00 ",
            "24-01-15T10:00:00Z",
        ] {
            assert!(
                matches!(parse(text), Err(Error::InvalidTimestamp { .. })),
                "{text:?} should be rejected"
            );
        }
    }

    #[test]
    fn error_text_is_cut_short() {
        let long = "x".repeat(1000);
        assert!(matches!(parse(&long), Err(Error::InvalidTimestamp { text }) if text.len() == 64));
    }

    #[test]
    fn truncation_keeps_offset_and_milliseconds() {
        let timestamp = datetime!(2024-01-15 10:00:00.000999 +05:00);
        let truncated = truncate_to_millis(timestamp);
        assert_eq!(truncated.nanosecond(), 0);
        assert_eq!(truncated.offset(), timestamp.offset());
        let timestamp = datetime!(2024-01-15 10:00:00.123999 UTC);
        assert_eq!(truncate_to_millis(timestamp).nanosecond(), 123_000_000);
    }
}
