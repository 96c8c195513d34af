//! Helpers shared by the storage tests: small-segment options (so that rolls happen after a
//! few dozen records), a sync-free [`NoSyncIo`] for tests that only need page-cache
//! semantics, the fault-injecting [`FaultyIo`] behind the `storage::Io` seam, a seeded
//! generator, deterministic payloads (some compressible, some not), a map of the frames in a
//! segment file, and byte surgery on segment files (zeroing and flipping, never shrinking:
//! segment files are preallocated and readers may have them mapped).

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use esl_replay::storage::codec::{
    Decoded, FileHeader, HEADER_LEN, SEGMENT_MAGIC, decode_frame, segment_path,
};
use esl_replay::storage::{Io, LogOptions, ReadStrategy, Reader, Seq, SyncPolicy};

/// Segment size of the small logs: the minimum, so that logs roll every few dozen records.
pub(crate) const SEGMENT_BYTES: u64 = 64 << 10;
/// Largest payload of the small logs.
pub(crate) const MAX_PAYLOAD: u32 = 8 << 10;
/// Payloads at least this long are compressed when that pays.
pub(crate) const COMPRESS_MIN: u32 = 1 << 10;

/// A fresh temporary directory for one log.
pub(crate) fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("esl-replay-test-")
        .tempdir()
        .expect("create a temporary directory")
}

/// A fresh temporary directory in memory (`/dev/shm`) when there is one, else on disk: for
/// the exhaustive tests, which copy and reopen a log thousands of times and need only
/// page-cache semantics, not a disk's.
pub(crate) fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let in_memory = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("esl-replay-test-")
            .tempdir_in(shm)
            .ok()
    } else {
        None
    };
    in_memory.unwrap_or_else(temp_dir)
}

/// Options with 64 KiB segments, 8 KiB payloads and compression from 1 KiB, on the real file
/// system.
pub(crate) fn small_options() -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES,
        max_payload_bytes: MAX_PAYLOAD,
        compress_min_bytes: Some(COMPRESS_MIN),
        ..LogOptions::default()
    }
}

/// [`small_options`] over [`NoSyncIo`]: for tests whose crashes keep the page cache (a killed
/// process, `simulate_crash`), where syncing only costs time.
pub(crate) fn fast_options() -> LogOptions {
    LogOptions {
        io: Arc::new(NoSyncIo),
        ..small_options()
    }
}

/// `options` with another I/O seam.
pub(crate) fn with_io(options: LogOptions, io: Arc<dyn Io>) -> LogOptions {
    LogOptions { io, ..options }
}

/// `options` with another read strategy.
pub(crate) fn with_strategy(options: LogOptions, read_strategy: ReadStrategy) -> LogOptions {
    LogOptions {
        read_strategy,
        ..options
    }
}

/// `options` with another sync policy.
pub(crate) fn with_policy(options: LogOptions, sync_policy: SyncPolicy) -> LogOptions {
    LogOptions {
        sync_policy,
        ..options
    }
}

/// The real file system with every sync skipped.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NoSyncIo;

impl Io for NoSyncIo {
    fn sync_data(&self, _file: &File) -> io::Result<()> {
        Ok(())
    }

    fn sync_all(&self, _file: &File) -> io::Result<()> {
        Ok(())
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }
}

/// The kinds of operation [`FaultyIo`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// `write_at`.
    Write,
    /// `sync_data`, `sync_all` and `sync_dir`.
    Sync,
    /// `remove_file`.
    Remove,
}

/// What [`FaultyIo`] does wrong. Counters restart whenever a plan is set.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    /// Fail the N-th write (1-based).
    pub(crate) fail_write: Option<u64>,
    /// Fail the N-th sync (1-based) of any kind.
    pub(crate) fail_sync: Option<u64>,
    /// Fail the N-th removal (1-based).
    pub(crate) fail_remove: Option<u64>,
    /// Only operations on paths containing this are counted for (and can meet) the
    /// `fail_*` points; `None` counts every operation.
    pub(crate) target: Option<String>,
    /// After the first injected failure, fail every later operation of that kind: a dead disk.
    pub(crate) sticky: bool,
    /// Write at most half of each buffer (at least one byte) per call.
    pub(crate) short_writes: bool,
    /// Every other write first reports `EINTR` without writing.
    pub(crate) interrupt_writes: bool,
    /// Writes report success having written nothing.
    pub(crate) zero_writes: bool,
    /// Writes to files whose path contains this fail with `ENOSPC`.
    pub(crate) enospc_path: Option<String>,
}

/// One failure [`FaultyIo`] injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Injected {
    pub(crate) kind: OpKind,
    pub(crate) path: PathBuf,
    /// Bytes the failed write would have written (zero for other kinds).
    pub(crate) len: usize,
    pub(crate) errno: i32,
}

impl Injected {
    /// Whether this was a failed data sync of a live segment file, which must poison the log.
    pub(crate) fn is_segment_sync(&self) -> bool {
        self.kind == OpKind::Sync && self.path.extension().is_some_and(|e| e == "seg")
    }
}

#[derive(Debug, Default)]
struct FaultState {
    plan: Plan,
    writes: u64,
    syncs: u64,
    removes: u64,
    /// Whether the previous write reported `EINTR` (they alternate under `interrupt_writes`).
    interrupted_last: bool,
    dead: Vec<OpKind>,
    injected: Vec<Injected>,
}

/// An [`Io`] that counts operations and fails them as its [`Plan`] says; everything else is
/// passed to an inner `Io`.
#[derive(Debug)]
pub(crate) struct FaultyIo {
    inner: Arc<dyn Io>,
    state: Mutex<FaultState>,
}

impl FaultyIo {
    pub(crate) fn new(inner: Arc<dyn Io>) -> Arc<FaultyIo> {
        Arc::new(FaultyIo {
            inner,
            state: Mutex::new(FaultState::default()),
        })
    }

    fn state(&self) -> MutexGuard<'_, FaultState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the plan and restarts the counters.
    pub(crate) fn set_plan(&self, plan: Plan) {
        let mut state = self.state();
        *state = FaultState {
            plan,
            injected: std::mem::take(&mut state.injected),
            ..FaultState::default()
        };
    }

    /// Stops injecting anything (a repaired disk); counts and the record of failures stay.
    pub(crate) fn heal(&self) {
        let mut state = self.state();
        state.plan = Plan::default();
        state.dead.clear();
    }

    /// Operations seen since the plan was set: (writes, syncs, removals).
    pub(crate) fn counts(&self) -> (u64, u64, u64) {
        let state = self.state();
        (state.writes, state.syncs, state.removes)
    }

    /// Every failure injected so far.
    pub(crate) fn injected(&self) -> Vec<Injected> {
        self.state().injected.clone()
    }

    /// Decides whether the next operation of `kind` on `path` fails, and with which errno.
    fn decide(&self, kind: OpKind, path: &Path, len: usize) -> Option<i32> {
        let mut state = self.state();
        let targeted = state
            .plan
            .target
            .as_deref()
            .is_none_or(|needle| path.to_string_lossy().contains(needle));
        let (count, target) = match kind {
            _ if !targeted => (0, None),
            OpKind::Write => {
                state.writes += 1;
                (state.writes, state.plan.fail_write)
            }
            OpKind::Sync => {
                state.syncs += 1;
                (state.syncs, state.plan.fail_sync)
            }
            OpKind::Remove => {
                state.removes += 1;
                (state.removes, state.plan.fail_remove)
            }
        };
        let enospc = kind == OpKind::Write
            && state
                .plan
                .enospc_path
                .as_deref()
                .is_some_and(|needle| path.to_string_lossy().contains(needle));
        let errno = if enospc {
            Some(libc::ENOSPC)
        } else if target == Some(count) || (targeted && state.dead.contains(&kind)) {
            Some(libc::EIO)
        } else {
            None
        }?;
        if state.plan.sticky && !state.dead.contains(&kind) {
            state.dead.push(kind);
        }
        state.injected.push(Injected {
            kind,
            path: path.to_path_buf(),
            len,
            errno,
        });
        Some(errno)
    }
}

/// The path an open file was opened under (or renamed to), for path-based faults.
pub(crate) fn file_path(file: &File) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap_or_default()
}

impl Io for FaultyIo {
    fn write_at(&self, file: &File, buf: &[u8], offset: u64) -> io::Result<usize> {
        let path = file_path(file);
        if let Some(errno) = self.decide(OpKind::Write, &path, buf.len()) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        let (short, interrupt, zero) = {
            let mut state = self.state();
            let interrupt = state.plan.interrupt_writes && !state.interrupted_last;
            state.interrupted_last = interrupt;
            if interrupt {
                // The retry must not count as another write.
                state.writes = state.writes.saturating_sub(1);
            }
            (state.plan.short_writes, interrupt, state.plan.zero_writes)
        };
        if interrupt {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if zero && !buf.is_empty() {
            return Ok(0);
        }
        let len = if short {
            (buf.len() / 2).max(1).min(buf.len())
        } else {
            buf.len()
        };
        self.inner
            .write_at(file, buf.get(..len).unwrap_or_default(), offset)
    }

    /// Reserving space is a write as far as faults go: `ENOSPC` above all.
    fn allocate(&self, file: &File, len: u64) -> io::Result<bool> {
        let size = usize::try_from(len).unwrap_or(usize::MAX);
        if let Some(errno) = self.decide(OpKind::Write, &file_path(file), size) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.inner.allocate(file, len)
    }

    fn sync_data(&self, file: &File) -> io::Result<()> {
        if let Some(errno) = self.decide(OpKind::Sync, &file_path(file), 0) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.inner.sync_data(file)
    }

    fn sync_all(&self, file: &File) -> io::Result<()> {
        if let Some(errno) = self.decide(OpKind::Sync, &file_path(file), 0) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.inner.sync_all(file)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if let Some(errno) = self.decide(OpKind::Sync, dir, 0) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.inner.sync_dir(dir)
    }

    fn rename(&self, source: &Path, target: &Path) -> io::Result<()> {
        self.inner.rename(source, target)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        if let Some(errno) = self.decide(OpKind::Remove, path, 0) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.inner.remove_file(path)
    }
}

/// A small seeded generator (splitmix64), so failures reproduce from a printed seed.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A seed from the environment variable `name` if set, else from the clock; printed so a
    /// failing run can be repeated.
    pub(crate) fn seed_from_env(name: &str) -> u64 {
        let seed = std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                mix(now.as_nanos() as u64 ^ u64::from(std::process::id()))
            });
        eprintln!("seed: {name}={seed}");
        seed
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `low..high`.
    pub(crate) fn range(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low)
    }

    /// True with probability `numerator / denominator`.
    pub(crate) fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        self.below(denominator) < numerator
    }
}

/// The splitmix64 finaliser.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The payload of record `seq` in a log generated with `seed`: its length is mostly small,
/// sometimes up to `max`; about half of the payloads are repetitive text (compressible), the
/// rest pseudo-random bytes.
pub(crate) fn payload(seed: u64, seq: u64, max: usize) -> Vec<u8> {
    let h = mix(seed ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let len = match h % 20 {
        0..=13 => (h >> 8) % 200,
        14..=18 => 200 + (h >> 8) % 1800,
        _ => 2000 + (h >> 8) % 8000,
    };
    payload_of_len(h, (len as usize).min(max))
}

/// A payload of exactly `len` bytes derived from `tag`.
pub(crate) fn payload_of_len(tag: u64, len: usize) -> Vec<u8> {
    let h = mix(tag);
    if h & 1 == 0 {
        let text = format!("record {tag:x} ");
        text.bytes().cycle().take(len).collect()
    } else {
        let mut rng = Rng::new(h);
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// CRC-32 of a payload, as the crash test's child reports it.
pub(crate) fn checksum(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

/// Every record a reader holds from its first sequence on.
pub(crate) fn read_all(reader: &Reader) -> Vec<(u64, Vec<u8>)> {
    reader
        .iter(Seq(1))
        .expect("seek to the start")
        .map(|r| {
            let (seq, payload) = r.expect("read a record");
            (seq.0, payload)
        })
        .collect()
}

/// One frame found in a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameSpan {
    /// Byte offset of the frame header.
    pub(crate) offset: u64,
    /// Bytes of the frame, header included.
    pub(crate) len: u64,
    /// The frame's sequence (the seal carries the next sequence).
    pub(crate) seq: u64,
    /// Whether this is the seal.
    pub(crate) seal: bool,
}

impl FrameSpan {
    pub(crate) fn end(&self) -> u64 {
        self.offset + self.len
    }
}

/// The header of a segment file and the valid frames from its start, up to the seal or the
/// first position that holds no valid frame.
pub(crate) fn frames_of(path: &Path) -> (FileHeader, Vec<FrameSpan>) {
    let bytes = std::fs::read(path).expect("read a segment file");
    let header = FileHeader::decode(&bytes, SEGMENT_MAGIC).expect("a valid segment header");
    let mut frames = Vec::new();
    let mut offset = HEADER_LEN;
    let mut seq = header.base;
    loop {
        let rest = bytes.get(offset..).unwrap_or_default();
        match decode_frame(rest, header.salt, seq, MAX_PAYLOAD) {
            Decoded::Record { frame_len, .. } => {
                frames.push(FrameSpan {
                    offset: offset as u64,
                    len: frame_len as u64,
                    seq,
                    seal: false,
                });
                offset += frame_len;
                seq += 1;
            }
            Decoded::Seal => {
                frames.push(FrameSpan {
                    offset: offset as u64,
                    len: 8,
                    seq,
                    seal: true,
                });
                break;
            }
            Decoded::Empty | Decoded::Invalid(_) => break,
        }
    }
    (header, frames)
}

/// The segment file of the segment starting at `base`.
pub(crate) fn segment_file(dir: &Path, base: u64) -> PathBuf {
    segment_path(dir, base)
}

/// Bases of the segment files in `dir`, ascending.
pub(crate) fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(dir)
        .expect("list the log directory")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".seg")?.parse().ok()
        })
        .collect();
    bases.sort_unstable();
    bases
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open a file for surgery")
}

/// Overwrites `[from, to)` of a file with zeros (a "truncation" that keeps the file's size).
pub(crate) fn zero_range(path: &Path, from: u64, to: u64) {
    let file = open_rw(path);
    let len = usize::try_from(to.saturating_sub(from)).expect("range fits memory");
    file.write_all_at(&vec![0; len], from)
        .expect("zero a range");
}

/// XORs one byte of a file with `mask`.
pub(crate) fn flip_byte(path: &Path, offset: u64, mask: u8) {
    let file = open_rw(path);
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, offset).expect("read a byte");
    byte[0] ^= mask;
    file.write_all_at(&byte, offset).expect("write a byte");
}

/// Overwrites bytes at `offset`.
pub(crate) fn write_bytes(path: &Path, offset: u64, bytes: &[u8]) {
    open_rw(path)
        .write_all_at(bytes, offset)
        .expect("write bytes");
}

/// Reads `[from, to)` of a file.
pub(crate) fn read_range(path: &Path, from: u64, to: u64) -> Vec<u8> {
    let file = File::open(path).expect("open a file");
    let mut out = vec![0; usize::try_from(to - from).expect("range fits memory")];
    file.read_exact_at(&mut out, from).expect("read a range");
    out
}

/// Copies every regular file of `from` into `to` (which must exist).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("list a directory") {
        let entry = entry.expect("a directory entry");
        if entry.file_type().is_ok_and(|t| t.is_file()) {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy a file");
        }
    }
}

/// Runs a future to completion on this thread (the tests need no async runtime otherwise).
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut context) {
            return output;
        }
        std::thread::park_timeout(Duration::from_millis(50));
    }
}
