//! Read-ahead for cursors reading mapped segments in order: one thread per process maps the
//! pages ahead of them into the page tables (`MADV_POPULATE_READ`, reading the file where
//! the page cache does not hold it), so that a replay's own thread does not stop on a page
//! fault at every few dozen KiB of a segment it reads for the first time (this took a
//! quarter off a decoded replay's first pass: 173 to 126 ns a record; benches/README.md).
//!
//! It is only a hint. A request that finds the queue full, a kernel without the advice, or a
//! failed call change nothing but speed: the cursor faults the pages in itself. A request
//! holds its segment (file and map) until it is done, as a cursor does.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};

use super::segment::SegmentData;

/// Bytes a cursor reads from where it started before it asks for read-ahead: a point read
/// never does.
pub(crate) const SEQUENTIAL_BYTES: u64 = 64 << 10;
/// Bytes ahead of a sequential cursor that read-ahead keeps mapped.
pub(crate) const AHEAD_BYTES: u64 = 16 << 20;
/// Bytes a cursor reads between two requests.
pub(crate) const STEP_BYTES: u64 = 4 << 20;
/// A cursor closer than this to its segment's end asks for nothing: its own faults there
/// cost less than a request, and the first request starts the thread (a one-shot lookup
/// scanning a segment's last few hundred KiB took 0.2-0.5 ms longer with it).
pub(crate) const NEAR_END_BYTES: u64 = STEP_BYTES;

/// Requests waiting for the thread; more are dropped.
const QUEUE: usize = 16;

/// A range of a segment's mapping to populate.
struct Job {
    segment: Arc<SegmentData>,
    from: usize,
    to: usize,
}

/// The thread's queue, started by the first request.
static SENDER: OnceLock<Option<SyncSender<Job>>> = OnceLock::new();
/// Set when the kernel refused the advice: no more requests are made.
static UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Asks for `[from, to)` of `segment`'s mapping to be populated; returns at once.
pub(crate) fn request(segment: &Arc<SegmentData>, from: u64, to: u64) {
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return;
    }
    let Some(sender) = SENDER.get_or_init(spawn_thread).as_ref() else {
        return;
    };
    let (Ok(from), Ok(to)) = (usize::try_from(from), usize::try_from(to)) else {
        return;
    };
    let job = Job {
        segment: segment.clone(),
        from,
        to,
    };
    match sender.try_send(job) {
        Ok(()) | Err(TrySendError::Full(_)) => {}
        // The thread stopped: the kernel refused the advice.
        Err(TrySendError::Disconnected(_)) => UNSUPPORTED.store(true, Ordering::Relaxed),
    }
}

/// Starts the read-ahead thread; `None` if it cannot be started (read-ahead is then off).
fn spawn_thread() -> Option<SyncSender<Job>> {
    let (sender, receiver) = std::sync::mpsc::sync_channel::<Job>(QUEUE);
    std::thread::Builder::new()
        .name("esl-replay-readahead".into())
        .spawn(move || {
            for job in receiver {
                let Some(map) = &job.segment.map else {
                    continue;
                };
                // EINVAL: a kernel older than 5.14, without the advice. Other failures (such
                // as a file truncated by another program) concern one range only.
                if let Err(e) = map.populate(job.from, job.to)
                    && e.kind() == std::io::ErrorKind::InvalidInput
                {
                    UNSUPPORTED.store(true, Ordering::Relaxed);
                    return;
                }
            }
        })
        .ok()?;
    Some(sender)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Log, LogOptions, ReadStrategy, Seq};

    /// A log whose first segment holds `records` frames of 1 KiB, and a reader of it.
    fn log_of(dir: &std::path::Path, strategy: ReadStrategy, records: usize) -> Log {
        let options = LogOptions {
            read_strategy: strategy,
            ..LogOptions::default()
        };
        let (mut log, _) = Log::open(dir, options).unwrap();
        let payloads: Vec<Vec<u8>> = (0..records).map(|i| vec![i as u8; 1024]).collect();
        log.append_batch(&payloads).unwrap();
        log.flush().unwrap();
        log
    }

    /// The first segment of `log`, as its readers hold it.
    fn first_segment(log: &Log) -> Arc<SegmentData> {
        log.reader().shared().segment_for(1).unwrap().unwrap()
    }

    /// Page faults this thread has taken (`minflt` in `/proc/thread-self/stat`), read into
    /// a buffer on the stack so that reading it takes none.
    fn minor_faults() -> u64 {
        use std::io::Read as _;
        let mut buffer = [0u8; 1024];
        let mut file = std::fs::File::open("/proc/thread-self/stat").unwrap();
        let len = file.read(&mut buffer).unwrap();
        let stat = std::str::from_utf8(&buffer[..len]).unwrap();
        // The fields after the command name in parentheses; minflt is the 10th of all.
        let after = stat.rsplit(')').next().unwrap();
        after.split_whitespace().nth(7).unwrap().parse().unwrap()
    }

    /// Page faults taken reading one byte of every page of `bytes`.
    fn faults_reading(bytes: &[u8]) -> u64 {
        let before = minor_faults();
        let sum = bytes
            .iter()
            .step_by(4096)
            .fold(0u64, |sum, byte| sum.wrapping_add(u64::from(*byte)));
        let faults = minor_faults() - before;
        assert!(std::hint::black_box(sum) > 0);
        faults
    }

    /// A point read, and a cursor that reads on but starts near the segment's end, ask for
    /// no read-ahead; a cursor that reads on from further away asks for the mapping ahead
    /// of it, never past the published end.
    #[test]
    fn only_cursors_reading_in_order_ask_for_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        // About 8 MiB of frames: twice the distance from the end within which cursors ask
        // for nothing.
        let records = 8_000;
        let log = log_of(dir.path(), ReadStrategy::Mmap, records);
        let reader = log.reader();
        let segment = first_segment(&log);

        let mut cursor = reader.cursor(Seq(1_000)).unwrap();
        assert_eq!(cursor.next().unwrap().unwrap().seq, Seq(1_000));
        drop(cursor);
        assert_eq!(
            segment.read_ahead.load(Ordering::Acquire),
            0,
            "a point read"
        );

        // About 2 MiB before the end.
        let mut cursor = reader.cursor(Seq(6_000)).unwrap();
        let mut read = 0;
        while cursor.next().unwrap().is_some() {
            read += 1;
        }
        assert_eq!(read, 2_001);
        assert_eq!(
            segment.read_ahead.load(Ordering::Acquire),
            0,
            "a cursor near the end"
        );

        let mut cursor = reader.cursor(Seq(1)).unwrap();
        let mut read = 0;
        while cursor.next().unwrap().is_some() {
            read += 1;
        }
        assert_eq!(read, records);
        let asked = segment.read_ahead.load(Ordering::Acquire);
        assert!(asked > SEQUENTIAL_BYTES, "asked for {asked} bytes");
        assert_eq!(
            asked,
            segment.load_end(),
            "read-ahead past the published end"
        );
    }

    /// Read with `pread`, there is no mapping to populate and nothing is asked.
    #[test]
    fn pread_readers_ask_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = log_of(dir.path(), ReadStrategy::Pread, 2_000);
        let mut cursor = log.reader().cursor(Seq(1)).unwrap();
        while cursor.next().unwrap().is_some() {}
        let segment = first_segment(&log);
        assert_eq!(segment.read_ahead.load(Ordering::Acquire), 0);
    }

    /// What the read-ahead thread does to a range: afterwards, reading it takes no page
    /// fault. A kernel without `MADV_POPULATE_READ` (before 5.14) refuses with `EINVAL`,
    /// which turns read-ahead off.
    #[test]
    fn a_populated_range_reads_without_page_faults() {
        let dir = tempfile::tempdir().unwrap();
        // 16 MiB: enough that reading it unpopulated faults many times on any kernel, even
        // one that maps a whole 2 MiB folio on a fault.
        let records = 16_000;
        let segment = first_segment(&log_of(dir.path(), ReadStrategy::Mmap, records));
        let map = segment.map.as_ref().unwrap();
        let end = usize::try_from(segment.load_end()).unwrap();
        // Past the published end is clamped, not an error.
        match map.populate(0, end + (1 << 20)) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
                return;
            }
        }
        let faults = faults_reading(map.published());
        assert!(
            faults <= 1,
            "{faults} page faults reading {end} populated bytes"
        );
        // Unpopulated, the same bytes of another log fault again and again (each fault maps
        // only the folios around it: about one fault per 150 KiB on ext4, Linux 6.18).
        let other = tempfile::tempdir().unwrap();
        let segment = first_segment(&log_of(other.path(), ReadStrategy::Mmap, records));
        assert_eq!(segment.load_end(), end as u64);
        let faults = faults_reading(segment.map.as_ref().unwrap().published());
        assert!(faults >= 4, "{faults} page faults unpopulated");
    }

    /// A forgotten range leaves this process's page tables: reading it again faults, and
    /// reads the same bytes (`SegmentMap::forget`, used by the packer).
    #[test]
    fn a_forgotten_range_faults_again_and_reads_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let segment = first_segment(&log_of(dir.path(), ReadStrategy::Mmap, 16_000));
        let map = segment.map.as_ref().unwrap();
        assert!(segment.load_end() > 8 << 20);
        let bytes = map.published();
        let before = bytes.to_vec();
        faults_reading(bytes);
        assert!(faults_reading(bytes) <= 1, "resident after a first read");
        map.forget(0, bytes.len()).unwrap();
        let faults = faults_reading(bytes);
        assert!(faults >= 4, "{faults} page faults after forgetting");
        assert!(bytes == before.as_slice(), "the bytes changed");
    }
}
