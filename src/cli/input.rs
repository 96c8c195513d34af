//! What users hand the command line, checked before it reaches library code: durations and
//! factors that arithmetic cannot overflow on, files read with a size limit, and directories
//! a demo or bench fills, which must be new or empty.
//!
//! The limits on whole-file inputs (documented in the README, "Limits on input"):
//! evidence bundles [`MAX_BUNDLE_BYTES`], scenario expectations [`MAX_SCENARIO_BYTES`],
//! configuration files [`MAX_CONFIG_BYTES`], password and token files
//! [`MAX_SECRET_BYTES`]. A longer input is refused after reading one byte past the limit.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

/// Largest evidence bundle `evidence compare` reads: 256 MiB.
pub(crate) const MAX_BUNDLE_BYTES: u64 = 256 << 20;
/// Largest scenario expectation `evidence compare` reads: 16 MiB.
pub(crate) const MAX_SCENARIO_BYTES: u64 = 16 << 20;
/// Largest configuration file (`capture --config`): 1 MiB.
pub(crate) const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest password or token file: 64 KiB.
pub(crate) const MAX_SECRET_BYTES: u64 = 64 << 10;

/// Reads an ESL password file: its first line, without the line break (LF or CR LF). An
/// empty password is refused: "is empty" for a file with nothing else, "the first line
/// is empty" for one whose text starts on a later line.
pub(crate) fn read_password_file(path: &Path) -> anyhow::Result<String> {
    let text = read_text(path, MAX_SECRET_BYTES, "the password file")?;
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default().trim_end_matches('\r');
    if first.is_empty() {
        if lines.any(|line| !line.trim().is_empty()) {
            anyhow::bail!(
                "the first line of the password file {} is empty (the password is the first line)",
                path.display()
            );
        }
        anyhow::bail!("the password file {} is empty", path.display());
    }
    Ok(first.to_owned())
}

/// Reads a UTF-8 file of at most `limit` bytes; `what` names it in errors ("the bundle").
pub(crate) fn read_text(path: &Path, limit: u64, what: &str) -> anyhow::Result<String> {
    esl_replay::storage::read_text_limited(path, limit).with_context(|| {
        format!(
            "cannot read {what} {} (at most {limit} bytes are read)",
            path.display()
        )
    })
}

/// The longest age that can be subtracted from a date: the whole representable date range
/// (years -9999 to 9999).
fn max_age() -> Duration {
    let span = time::PrimitiveDateTime::MAX - time::PrimitiveDateTime::MIN;
    Duration::try_from(span).unwrap_or(Duration::MAX)
}

/// Parses an age such as `7d` or `12h` (`--max-age`, `--retain-for`), refusing ages longer
/// than the representable date range, which no capture time can be older than.
pub(crate) fn parse_age(text: &str) -> Result<Duration, String> {
    let age = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    let max = max_age();
    if age > max {
        return Err(format!(
            "{text} is beyond the representable date range (an age can be at most {} days)",
            max.as_secs() / 86_400
        ));
    }
    Ok(age)
}

/// Parses a speed factor: a finite number above 0.
pub(crate) fn parse_speed(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(speed) if speed.is_finite() && speed > 0.0 => Ok(speed),
        _ => Err(format!(
            "{text:?} is not a speed factor (a number above 0, e.g. 0.5 or 2)"
        )),
    }
}

/// Parses a rate or a count of seconds: a number from 0 up to the largest count of seconds
/// a duration holds (2^64, about 1.8e19).
pub(crate) fn parse_non_negative(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if value >= 0.0 && Duration::try_from_secs_f64(value).is_ok() => Ok(value),
        Ok(value) if value > 0.0 => Err(format!(
            "{text:?} is too large: the accepted range is 0 to 1.8e19 (2^64, the most seconds a duration holds)"
        )),
        _ => Err(format!(
            "{text:?} is not a number at or above 0 (e.g. 0, 2.5 or 100; at most 1.8e19)"
        )),
    }
}

/// `--dir`, refused unless it is missing or an empty directory: a demo or bench that writes
/// its own data there (`why` says so) would otherwise add it to a real store, and count
/// what was there as its own.
pub(crate) fn new_or_empty(dir: &Path, why: &str) -> anyhow::Result<PathBuf> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => anyhow::ensure!(
            entries.next().is_none(),
            "--dir {} is not empty: {why}, so give it a new or empty directory",
            dir.display()
        ),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("cannot list --dir {}", dir.display()));
        }
    }
    Ok(dir.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_beyond_the_date_range_are_refused_with_a_reason() {
        for absurd in ["9999999999d", "106751991167300d", "18446744073709551615s"] {
            let error = parse_age(absurd).unwrap_err();
            assert!(
                error.contains("beyond the representable date range"),
                "{error}"
            );
        }
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(
            parse_age("7300000d").is_ok(),
            "about 20,000 years still fits"
        );
    }

    #[test]
    fn speeds_and_rates_must_be_finite_and_in_range() {
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(parse_speed(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_speed("1e-300"), Ok(1e-300));
        for bad in ["-1", "NaN", "inf", "1e300"] {
            assert!(parse_non_negative(bad).is_err(), "{bad}");
        }
        // A number too large is named as such, with the range, never as "not a number".
        for huge in ["1e308", "inf", "18446744073709551616"] {
            let error = parse_non_negative(huge).unwrap_err();
            assert!(
                error.contains("too large") && error.contains("0 to 1.8e19"),
                "{huge}: {error}"
            );
        }
        assert!(
            parse_non_negative("-1")
                .unwrap_err()
                .contains("at or above 0")
        );
        assert_eq!(parse_non_negative("1.8e19"), Ok(1.8e19));
        assert_eq!(parse_non_negative("0"), Ok(0.0));
    }
}
