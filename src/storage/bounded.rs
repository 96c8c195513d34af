//! Bounds on what a caller's numbers and files can make us do: deadlines that cannot
//! overflow, and whole-file reads that cannot allocate past a limit.
//!
//! Every layer uses these for values that come from users (timeouts, files named on the
//! command line, files another process may have replaced), so a huge timeout means "wait
//! forever" instead of a panic, and `/dev/zero` or a runaway file is refused after
//! `limit + 1` bytes instead of filling memory.

use std::io::Read;
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
/// refused with [`std::io::ErrorKind::FileTooLarge`] as soon as it passes the limit, and the
/// buffer never grows beyond the limit plus one 64 KiB chunk, whatever the input (a pipe,
/// `/dev/zero`, a growing file).
///
/// # Errors
///
/// The reader's errors; `FileTooLarge` naming the limit.
pub fn read_to_end_limited(reader: impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    read_limited(reader, limit, 0)
}

/// [`read_to_end_limited`] with a first allocation of `expected` bytes (capped at the limit).
fn read_limited(mut reader: impl Read, limit: u64, expected: u64) -> std::io::Result<Vec<u8>> {
    let cap = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut bytes = Vec::with_capacity(usize::try_from(expected.min(limit)).unwrap_or(0));
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(0) => return Ok(bytes),
            Ok(n) => n,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        let len = bytes.len().saturating_add(n);
        if len > cap {
            return Err(too_large(limit));
        }
        if len > bytes.capacity() {
            // Grow by doubling, but never past the limit.
            let target = bytes.capacity().saturating_mul(2).clamp(len, cap);
            bytes.reserve_exact(target - bytes.len());
        }
        bytes.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
}

fn too_large(limit: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::FileTooLarge,
        format!("larger than the limit of {limit} bytes"),
    )
}

/// [`read_to_end_limited`] on the file at `path`; a regular file whose size is already
/// above the limit is refused without reading it.
///
/// # Errors
///
/// Opening or reading the file; `FileTooLarge` when it holds more than `limit` bytes.
pub fn read_file_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let metadata = file.metadata()?;
    if metadata.is_file() && metadata.len() > limit {
        return Err(too_large(limit));
    }
    // One allocation for a regular file; doubling (at most 1.5 times the limit while
    // moving) for devices and pipes.
    read_limited(file, limit, metadata.len())
}

/// [`read_file_limited`] for a file that must be a regular file, as the files of a store
/// and of a checkpoint directory are: anything else (a FIFO, a device) is refused with
/// `InvalidInput` before a byte is read. Opened without blocking, so a FIFO put in its
/// place cannot hang the reader.
///
/// # Errors
///
/// As [`read_file_limited`]; `InvalidInput` when the path is not a regular file.
pub fn read_regular_file_limited(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    let file = open_regular(path)?;
    let len = file.metadata()?.len();
    if len > limit {
        return Err(too_large(limit));
    }
    read_limited(file, limit, len)
}

/// Opens `path` for reading if it is a regular file; anything else (a FIFO, a device) is
/// refused with `InvalidInput`. Opened without blocking, so a FIFO put in a file's place
/// cannot hang the caller.
///
/// # Errors
///
/// Opening the file; `InvalidInput` when it is not a regular file.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    open_regular_with(std::fs::OpenOptions::new().read(true), path)
}

/// Opens `path` with `options` if it is (or, created, becomes) a regular file; anything else
/// (a FIFO, a socket, a device, a directory) is refused with `InvalidInput` ("not a regular
/// file"). Opened without blocking, so a FIFO put in the place of a store's file cannot hang
/// the caller [DIR-05]; a symbolic link is followed, and one to a regular file opens it.
///
/// # Errors
///
/// Opening the file; `InvalidInput` when it is not a regular file.
pub fn open_regular_with(
    options: &mut std::fs::OpenOptions,
    path: &Path,
) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let opened = options
        .custom_flags(i32::try_from(rustix::fs::OFlags::NONBLOCK.bits()).unwrap_or_default())
        .open(path);
    let file = match opened {
        Ok(file) => file,
        // A FIFO opened for writing alone, without a reader, fails (`ENXIO`): say why.
        Err(error) => {
            return Err(match std::fs::metadata(path) {
                Ok(metadata) if !metadata.is_file() && !metadata.is_dir() => not_regular(),
                _ => error,
            });
        }
    };
    if !file.metadata()?.is_file() {
        return Err(not_regular());
    }
    Ok(file)
}

fn not_regular() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file")
}

/// [`read_file_limited`] for UTF-8 text.
///
/// # Errors
///
/// As [`read_file_limited`]; `InvalidData` when the file is not UTF-8.
pub fn read_text_limited(path: &Path, limit: u64) -> std::io::Result<String> {
    String::from_utf8(read_file_limited(path, limit)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the file is not UTF-8 text",
        )
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
        assert_eq!(
            read_to_end_limited(&b"abcd"[..], 3).unwrap_err().kind(),
            std::io::ErrorKind::FileTooLarge
        );
        let endless = std::io::repeat(0);
        let error = read_to_end_limited(endless, 1 << 20).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::FileTooLarge);
        assert!(error.to_string().contains("1048576"), "{error}");
        // A long input that fits is read whole, in a buffer no larger than the limit.
        let fits = read_to_end_limited(std::io::repeat(7).take(300_000), 300_000).unwrap();
        assert_eq!(fits.len(), 300_000);
        assert!(fits.capacity() <= 300_000);
    }
}
