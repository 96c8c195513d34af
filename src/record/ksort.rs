//! In which order does PHP's `ksort` put the keys of a map?
//!
//! The reference checksum sorts payload maps with PHP 8 `ksort` (default `SORT_REGULAR`),
//! and byte compatibility (decision K2) needs the same order. PHP first turns every key
//! that is a canonical decimal integer in the `i64` range ("0", "10", "-1"; not "01", "-0",
//! "+1" or " 1") into an integer key. Two keys then compare as follows:
//!
//! - integer with integer: numerically;
//! - string with string: if both are PHP *numeric strings* (optional leading and trailing
//!   whitespace, optional sign, decimal digits with an optional fraction and exponent, such
//!   as "1.5", " 2", "1e3"), numerically (with PHP's overflow rules); otherwise byte-wise;
//! - integer with string: numerically if the string is numeric, otherwise the integer's
//!   decimal text is compared byte-wise with the string.
//!
//! So `{"9","10","B","_","a"}` is already in order. Keys that compare equal (for example
//! "1.0" and "1.00") keep their insertion order, because PHP 8 sorts stably.
//!
//! PHP's comparison is not a total order in every case: `9 < 10`, `10 < "1a"` and
//! `"1a" < 9` form a cycle. For such key sets PHP's result depends on the internals of its
//! hybrid sort and this module may order them differently. We use our own stable merge
//! sort, which never panics on an inconsistent comparison (the standard library sort may).

use std::cmp::Ordering;

/// The largest `i64` magnitude written without its sign, as PHP compares 19-digit strings.
const LONG_MIN_DIGITS: &[u8] = b"9223372036854775808";
/// PHP's `MAX_LENGTH_OF_LONG` on 64-bit platforms.
const MAX_LENGTH_OF_LONG: usize = 20;

/// Sorts map entries by key in PHP `ksort` order, stably.
pub(crate) fn sort_entries<V>(entries: Vec<(&str, V)>) -> Vec<(&str, V)> {
    let mut keyed: Vec<_> = entries
        .into_iter()
        .map(|(key, value)| (PhpKey::classify(key), key, value))
        .collect();
    if is_total_order(&keyed) {
        // Any stable sort orders a total order as the merge sort does; the library's is
        // faster and allocates once.
        keyed.sort_by(|left, right| compare(&left.0, &right.0));
    } else {
        keyed = merge_sort(keyed, &mut |left, right| compare(&left.0, &right.0));
    }
    keyed
        .into_iter()
        .map(|(_, key, value)| (key, value))
        .collect()
}

/// Whether the keys compare as a total order: all plain (non-numeric) text, compared
/// byte-wise, or all integers. Mixed sets may hold PHP's comparison cycles.
fn is_total_order<T>(keyed: &[(PhpKey<'_>, T, impl Sized)]) -> bool {
    let plain = |key: &PhpKey<'_>| matches!(key, PhpKey::Text { numeric: None, .. });
    let integer = |key: &PhpKey<'_>| matches!(key, PhpKey::Integer { .. });
    keyed.iter().all(|(key, ..)| plain(key)) || keyed.iter().all(|(key, ..)| integer(key))
}

/// Compares two map keys the way PHP 8 `ksort` does.
#[cfg(test)]
pub(crate) fn compare_keys(left: &str, right: &str) -> Ordering {
    compare(&PhpKey::classify(left), &PhpKey::classify(right))
}

/// A map key as PHP holds it: an integer key or a string key with its numeric reading.
/// An integer key's canonical decimal text is the original key, kept for text comparisons.
#[derive(Clone, Copy, Debug)]
enum PhpKey<'a> {
    Integer {
        value: i64,
        text: &'a [u8],
    },
    Text {
        bytes: &'a [u8],
        numeric: Option<Numeric>,
    },
}

/// The number a PHP numeric string denotes (`is_numeric_string`).
#[derive(Clone, Copy, Debug)]
enum Numeric {
    Long(i64),
    /// A float; `overflow` is +1 or -1 when an integer-looking string left the `i64` range.
    Double {
        value: f64,
        overflow: i8,
    },
}

impl<'a> PhpKey<'a> {
    fn classify(key: &'a str) -> Self {
        match integer_key(key) {
            Some(value) => PhpKey::Integer {
                value,
                text: key.as_bytes(),
            },
            None => PhpKey::Text {
                bytes: key.as_bytes(),
                numeric: numeric_string(key.as_bytes()),
            },
        }
    }
}

fn compare(left: &PhpKey<'_>, right: &PhpKey<'_>) -> Ordering {
    match (left, right) {
        (PhpKey::Integer { value: left, .. }, PhpKey::Integer { value: right, .. }) => {
            left.cmp(right)
        }
        (
            PhpKey::Text {
                bytes: left,
                numeric: left_numeric,
            },
            PhpKey::Text {
                bytes: right,
                numeric: right_numeric,
            },
        ) => match (left_numeric, right_numeric) {
            (Some(left_numeric), Some(right_numeric)) => {
                compare_numeric_strings(left, *left_numeric, right, *right_numeric)
            }
            _ => left.cmp(right),
        },
        (PhpKey::Integer { value, text }, PhpKey::Text { bytes, numeric }) => {
            compare_integer_with_text(*value, text, bytes, *numeric)
        }
        (PhpKey::Text { bytes, numeric }, PhpKey::Integer { value, text }) => {
            compare_integer_with_text(*value, text, bytes, *numeric).reverse()
        }
    }
}

/// PHP's `zendi_smart_strcmp` for two numeric strings.
fn compare_numeric_strings(
    left: &[u8],
    left_numeric: Numeric,
    right: &[u8],
    right_numeric: Numeric,
) -> Ordering {
    match (left_numeric, right_numeric) {
        (Numeric::Long(left), Numeric::Long(right)) => left.cmp(&right),
        (
            Numeric::Double {
                value: left_value,
                overflow: left_overflow,
            },
            Numeric::Double {
                value: right_value,
                overflow: right_overflow,
            },
        ) => {
            // Both overflowed to the same side and look equal: fall back to the text.
            if left_overflow != 0 && left_overflow == right_overflow && left_value == right_value {
                return left.cmp(right);
            }
            // Both infinite with the same sign: a numeric comparison would be meaningless.
            if left_value == right_value && !left_value.is_finite() {
                return left.cmp(right);
            }
            three_way(left_value, right_value)
        }
        (Numeric::Long(left), Numeric::Double { value, overflow }) => {
            if overflow != 0 {
                return if overflow > 0 {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
            }
            three_way(left as f64, value)
        }
        (Numeric::Double { value, overflow }, Numeric::Long(right)) => {
            if overflow != 0 {
                return if overflow > 0 {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
            }
            three_way(value, right as f64)
        }
    }
}

/// PHP's `compare_longs_to_string`; `integer_text` is the integer's decimal text.
fn compare_integer_with_text(
    integer: i64,
    integer_text: &[u8],
    text: &[u8],
    numeric: Option<Numeric>,
) -> Ordering {
    match numeric {
        Some(Numeric::Long(other)) => integer.cmp(&other),
        Some(Numeric::Double { value, .. }) => three_way(integer as f64, value),
        None => integer_text.cmp(text),
    }
}

/// `a < b`, `a > b` or neither, as PHP's `ZEND_THREEWAY_COMPARE` on doubles.
fn three_way(left: f64, right: f64) -> Ordering {
    if left < right {
        Ordering::Less
    } else if left > right {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// The integer PHP stores a string key as, if it is a canonical decimal integer in range.
fn integer_key(key: &str) -> Option<i64> {
    let bytes = key.as_bytes();
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let first = *digits.first()?;
    if !digits.iter().all(u8::is_ascii_digit) || (first == b'0' && bytes.len() > 1) {
        return None;
    }
    key.parse().ok()
}

fn is_php_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// PHP 8 `is_numeric_string` (no trailing data allowed) returning the value it denotes.
fn numeric_string(text: &[u8]) -> Option<Numeric> {
    let start = text.iter().position(|byte| !is_php_whitespace(*byte))?;
    let body = text.get(start..)?;
    let mut position = 0usize;
    let negative = match body.first() {
        Some(b'-') => {
            position += 1;
            true
        }
        Some(b'+') => {
            position += 1;
            false
        }
        _ => false,
    };
    let integer_start = position;
    while body.get(position).is_some_and(u8::is_ascii_digit) {
        position += 1;
    }
    let integer_end = position;
    let mut is_double = false;
    if body.get(position) == Some(&b'.') {
        let fraction_start = position + 1;
        let mut fraction_end = fraction_start;
        while body.get(fraction_end).is_some_and(u8::is_ascii_digit) {
            fraction_end += 1;
        }
        if integer_end == integer_start && fraction_end == fraction_start {
            return None;
        }
        is_double = true;
        position = fraction_end;
    } else if integer_end == integer_start {
        return None;
    }
    if matches!(body.get(position), Some(b'e' | b'E')) {
        let mut exponent = position + 1;
        if matches!(body.get(exponent), Some(b'+' | b'-')) {
            exponent += 1;
        }
        if body.get(exponent).is_some_and(u8::is_ascii_digit) {
            while body.get(exponent).is_some_and(u8::is_ascii_digit) {
                exponent += 1;
            }
            is_double = true;
            position = exponent;
        }
    }
    let number_end = position;
    let rest = body.get(number_end..)?;
    if !rest.iter().all(|byte| is_php_whitespace(*byte)) {
        return None;
    }
    let number = std::str::from_utf8(body.get(..number_end)?).ok()?;
    let integer_digits = body.get(integer_start..integer_end)?;
    let significant_start = integer_digits.iter().position(|digit| *digit != b'0');
    let significant = significant_start
        .and_then(|first| integer_digits.get(first..))
        .unwrap_or(&[]);
    let overflow_sign = if negative { -1 } else { 1 };
    // Our grammar check above guarantees Rust's parser accepts `number`.
    let double = |overflow: i8| {
        number
            .parse()
            .ok()
            .map(|value| Numeric::Double { value, overflow })
    };
    if significant.len() >= MAX_LENGTH_OF_LONG {
        // PHP stops counting at 20 integer digits and flags an overflow even when a fraction
        // or exponent follows.
        return double(overflow_sign);
    }
    if is_double {
        return double(0);
    }
    if significant.len() == MAX_LENGTH_OF_LONG - 1 {
        // PHP compares from the first significant digit to the end of the string with
        // `strcmp`, so trailing whitespace takes part in the comparison.
        let tail = significant_start
            .and_then(|first| body.get(integer_start + first..))
            .unwrap_or(&[]);
        let order = c_strcmp(tail, LONG_MIN_DIGITS);
        if !(order == Ordering::Less || (order == Ordering::Equal && negative)) {
            return double(overflow_sign);
        }
    }
    let magnitude: i128 = std::str::from_utf8(significant).ok()?.parse().unwrap_or(0);
    let value = if negative { -magnitude } else { magnitude };
    i64::try_from(value).ok().map(Numeric::Long)
}

/// C `strcmp` over byte strings that end at their length or at a NUL byte.
fn c_strcmp(left: &[u8], right: &[u8]) -> Ordering {
    let left = left.split(|byte| *byte == 0).next().unwrap_or(&[]);
    let right = right.split(|byte| *byte == 0).next().unwrap_or(&[]);
    left.cmp(right)
}

/// A stable top-down merge sort that tolerates inconsistent comparisons.
fn merge_sort<T>(mut items: Vec<T>, compare: &mut impl FnMut(&T, &T) -> Ordering) -> Vec<T> {
    if items.len() <= 1 {
        return items;
    }
    let right = items.split_off(items.len() / 2);
    let left = merge_sort(items, compare);
    let right = merge_sort(right, compare);
    let mut merged = Vec::with_capacity(left.len() + right.len());
    let mut left = left.into_iter().peekable();
    let mut right = right.into_iter().peekable();
    loop {
        let take_right = match (left.peek(), right.peek()) {
            (Some(left_item), Some(right_item)) => compare(right_item, left_item) == Ordering::Less,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (None, None) => break,
        };
        let next = if take_right {
            right.next()
        } else {
            left.next()
        };
        merged.extend(next);
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(keys: &[&str]) -> Vec<String> {
        let entries: Vec<(&str, ())> = keys.iter().map(|key| (*key, ())).collect();
        sort_entries(entries)
            .into_iter()
            .map(|(key, ())| key.to_owned())
            .collect()
    }

    /// The library sort taken for total orders gives what the merge sort gives.
    #[test]
    fn total_orders_sort_as_the_merge_sort_does() {
        fn check(keys: Vec<String>) -> bool {
            let merged: Vec<String> = {
                let keyed: Vec<_> = keys.iter().map(|k| (PhpKey::classify(k), k, ())).collect();
                merge_sort(keyed, &mut |l, r| compare(&l.0, &r.0))
                    .into_iter()
                    .map(|(_, k, ())| k.clone())
                    .collect()
            };
            merged == sorted(&keys.iter().map(String::as_str).collect::<Vec<_>>())
        }
        fn plain(keys: Vec<String>) -> bool {
            // Letters first keep every key non-numeric.
            check(keys.into_iter().map(|k| format!("k{k}")).collect())
        }
        fn integers(keys: Vec<i64>) -> bool {
            check(keys.into_iter().map(|k| k.to_string()).collect())
        }
        quickcheck::quickcheck(plain as fn(Vec<String>) -> bool);
        quickcheck::quickcheck(integers as fn(Vec<i64>) -> bool);
    }

    #[test]
    fn plain_string_keys_sort_byte_wise() {
        assert_eq!(
            sorted(&["a", "_", "B", "ab", "é", "A"]),
            ["A", "B", "_", "a", "ab", "é"]
        );
    }

    #[test]
    fn integer_keys_sort_numerically_and_as_text_against_words() {
        // The verified reference order from §1.7.
        assert_eq!(
            sorted(&["a", "_", "B", "10", "9"]),
            ["9", "10", "B", "_", "a"]
        );
        assert_eq!(sorted(&["10", "-1", "2", "0"]), ["-1", "0", "2", "10"]);
    }

    #[test]
    fn integer_key_detection_follows_php() {
        assert_eq!(integer_key("0"), Some(0));
        assert_eq!(integer_key("-1"), Some(-1));
        assert_eq!(integer_key("9223372036854775807"), Some(i64::MAX));
        assert_eq!(integer_key("-9223372036854775808"), Some(i64::MIN));
        for not_integer in [
            "",
            "-",
            "-0",
            "01",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "9223372036854775808",
        ] {
            assert_eq!(integer_key(not_integer), None, "{not_integer:?}");
        }
    }

    #[test]
    fn numeric_strings_follow_php_8() {
        let long = |text: &str| match numeric_string(text.as_bytes()) {
            Some(Numeric::Long(value)) => Some(value),
            _ => None,
        };
        let double = |text: &str| match numeric_string(text.as_bytes()) {
            Some(Numeric::Double { value, .. }) => Some(value),
            _ => None,
        };
        assert_eq!(long(" 12"), Some(12));
        assert_eq!(long("12 "), Some(12));
        assert_eq!(long("+7"), Some(7));
        assert_eq!(long("007"), Some(7));
        assert_eq!(long("-0"), Some(0));
        assert_eq!(double("1.5"), Some(1.5));
        assert_eq!(double(".5"), Some(0.5));
        assert_eq!(double("5."), Some(5.0));
        assert_eq!(double("1e3"), Some(1000.0));
        assert_eq!(double("-1.5E-1"), Some(-0.15));
        assert_eq!(
            double("9223372036854775808"),
            Some(9_223_372_036_854_775_808.0)
        );
        assert_eq!(long("-9223372036854775808"), Some(i64::MIN));
        for not_numeric in [
            "", " ", ".", "-", "1e", "1e+", "1a", "0x1A", "1 2", "inf", "NAN", "١",
        ] {
            assert!(
                numeric_string(not_numeric.as_bytes()).is_none(),
                "{not_numeric:?}"
            );
        }
    }

    #[test]
    fn numeric_strings_compare_numerically() {
        assert_eq!(compare_keys("1.5", "10"), Ordering::Less);
        assert_eq!(compare_keys("1e1", "9"), Ordering::Greater);
        assert_eq!(compare_keys("1e1", "10"), Ordering::Equal);
        assert_eq!(compare_keys(" 5", "40"), Ordering::Less);
        assert_eq!(compare_keys("2.5", "10.5"), Ordering::Less);
        // Non-numeric against integer: text comparison, so "10" < "9a".
        assert_eq!(compare_keys("10", "9a"), Ordering::Less);
        assert_eq!(compare_keys("9", "9a"), Ordering::Less);
    }

    #[test]
    fn overflowing_integers_compare_like_php() {
        let huge = "99999999999999999999";
        assert_eq!(compare_keys("1.5", huge), Ordering::Less);
        assert_eq!(
            compare_keys(huge, "-99999999999999999999"),
            Ordering::Greater
        );
        // Same side, same double value: decided by the text.
        assert_eq!(
            compare_keys("99999999999999999999", "99999999999999999998"),
            Ordering::Greater
        );
        assert_eq!(compare_keys(" 7", huge), Ordering::Less);
    }

    #[test]
    fn equal_keys_keep_insertion_order() {
        assert_eq!(
            sorted(&["1.00", "b", "1.0", "1e0"]),
            ["1.00", "1.0", "1e0", "b"]
        );
    }

    #[test]
    fn cyclic_comparisons_do_not_panic() {
        let keys: Vec<String> = (0..200)
            .flat_map(|n| [n.to_string(), format!("{n}a"), format!(" {n}")])
            .collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        assert_eq!(sorted(&keys).len(), keys.len());
    }
}
