//! Bounds on what a caller's numbers and files can make us do: deadlines that cannot
//! overflow, and whole-file reads that cannot allocate past a limit.
//!
//! Every layer uses these for values that come from users (timeouts, files named on the
//! command line, files another process may have replaced), so a huge timeout means "wait
//! forever" instead of a panic, and `/dev/zero` or a runaway file is refused after
//! `limit + 1` bytes instead of filling memory.

use std::io::Read as _;
use std::path::Path;
use std::time::{Duration, Instant};

/// The instant `timeout` from now, or `None` when that lies beyond what [`Instant`] can
/// represent: such a wait has no deadline (it waits until woken).
#[must_use]
pub fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// How long until `deadline` (zero once passed); `None` for a wait with no deadline.
#[must_use]
pub fn time_left(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// Reads all of `reader` into memory, but never more than `limit` bytes: a longer input is
/// refused with [`std::io::ErrorKind::FileTooLarge`] after reading `limit + 1` bytes, so
/// memory stays bounded by the limit whatever the input (a pipe, `/dev/zero`, a growing
/// file).
///
/// # Errors
///
/// The reader's errors; `FileTooLarge` naming the limit.
pub fn read_to_end_limited(reader: impl std::io::Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    reader
        .take(limit.saturating_add(1))
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("larger than the limit of {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// [`read_to_end_limited`] on the file at `path`.
///
/// # Errors
///
/// Opening or reading the file; `FileTooLarge` when it holds more than `limit` bytes.
pub fn read_file_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    read_to_end_limited(std::fs::File::open(path)?, limit)
}

/// [`read_file_limited`] for UTF-8 text.
///
/// # Errors
///
/// As [`read_file_limited`]; `InvalidData` when the file is not UTF-8.
pub fn read_text_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_file_limited(path, limit)?).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is not UTF-8 text")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_beyond_the_clock_is_no_deadline() {
        assert!(deadline_after(Duration::MAX).is_none());
        assert!(deadline_after(Duration::from_secs(u64::MAX)).is_none());
        let soon = deadline_after(Duration::from_secs(1));
        assert!(soon.is_some());
        assert!(time_left(soon).is_some_and(|left| left <= Duration::from_secs(1)));
        assert_eq!(time_left(None), None);
    }

    #[test]
    fn reads_stop_one_byte_past_the_limit() {
        assert_eq!(read_to_end_limited(&b"abc"[..], 3).unwrap(), b"abc");
        let endless = std::io::repeat(0);
        let error = read_to_end_limited(endless, 1 << 20).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::FileTooLarge);
        assert!(error.to_string().contains("1048576"), "{error}");
    }
}
