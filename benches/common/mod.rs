//! Shared bench helpers: the deterministic ~370-byte ESL payloads, the naive-log floor of
//! `shared/spec/performance.md`, the raw-device `fdatasync` baseline, and latency statistics.
//!
//! Every bench measures its baseline in the same process run as our figure, interleaving the
//! two where it can, so that a ratio is never taken between runs on a noisy machine.
//! Each bench file includes this module, and not every bench uses every helper.
#![allow(
    dead_code,
    reason = "each bench uses a different subset of the helpers"
)]

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::Criterion;
use esl_replay::storage::{LogOptions, SyncPolicy};
use memmap2::Mmap;

/// Mean payload length of the generated records, as in the spec's datasets.
pub(crate) const PAYLOAD_MEAN: usize = 370;

/// A short criterion configuration: the machine is shared and `cargo bench` of everything
/// should take about ten minutes, so samples are few and short; the custom sections print
/// medians of interleaved rounds, which carry the comparisons.
pub(crate) fn criterion() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
        .configure_from_args()
}

/// A small xorshift generator: deterministic datasets without a dependency.
#[derive(Clone, Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A value in `0..bound` (bound > 0).
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

const EVENTS: [&str; 8] = [
    "CHANNEL_CREATE",
    "CHANNEL_ANSWER",
    "CHANNEL_STATE",
    "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE",
    "CHANNEL_HANGUP",
    "HEARTBEAT",
    "DTMF",
];

/// `count` realistic ESL event bodies of 330..=410 bytes (mean ~370), deterministic in `seed`.
pub(crate) fn payloads(count: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let target = 330 + rng.below(81) as usize;
            let uuid = format!(
                "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
                rng.next_u64() as u32,
                rng.below(0x1_0000),
                rng.below(0x1000),
                rng.below(0x1000),
                rng.next_u64() & 0xffff_ffff_ffff
            );
            let event = EVENTS[rng.below(EVENTS.len() as u64) as usize];
            let mut text = format!(
                "Event-Name: {event}\nCore-UUID: 6f1e3a52-1c1b-4f43-9a0e-2b8c5d0f7e11\n\
                 FreeSWITCH-Hostname: fs01.example.net\nEvent-Date-Timestamp: {}\n\
                 Event-Sequence: {}\nUnique-ID: {uuid}\nChannel-State: CS_EXECUTE\n\
                 Caller-Caller-ID-Number: 1555{:07}\nCaller-Destination-Number: 1800{:07}\n",
                1_700_000_000_000_000u64 + i as u64 * 997,
                10_000 + i,
                rng.below(10_000_000),
                rng.below(10_000_000),
            );
            let mut n = 0;
            while text.len() < target {
                text.push_str(&format!(
                    "variable_sip_h_X-Tag-{n}: {:016x}\n",
                    rng.next_u64()
                ));
                n += 1;
            }
            let mut bytes = text.into_bytes();
            bytes.truncate(target);
            bytes
        })
        .collect()
}

/// A scratch directory for one bench, under `ESL_BENCH_DIR` (default: the system temp dir),
/// removed when dropped.
pub(crate) fn scratch_dir(tag: &str) -> tempfile::TempDir {
    let base = std::env::var_os("ESL_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::Builder::new()
        .prefix(&format!("esl-bench-{tag}-"))
        .tempdir_in(base)
        .expect("create a scratch directory")
}

/// Log options with this sync policy and every other option at its default.
pub(crate) fn ours(sync_policy: SyncPolicy) -> LogOptions {
    LogOptions {
        sync_policy,
        // `ESL_BENCH_NO_RECYCLE` set: zero-filled segments only, to compare ([SEG-10]).
        recycle_segments: std::env::var_os("ESL_BENCH_NO_RECYCLE").is_none(),
        ..LogOptions::default()
    }
}

/// The default group commit: sync as soon as anything is pending.
pub(crate) fn group_commit() -> SyncPolicy {
    SyncPolicy::GroupCommit {
        max_delay: Duration::ZERO,
        max_bytes: 4 << 20,
    }
}

/// Removes a scratch file of the naive log.
pub(crate) fn remove_scratch(path: &Path) -> std::io::Result<()> {
    #[expect(
        clippy::disallowed_methods,
        reason = "naive-log scratch files, not log files: durability is not wanted here"
    )]
    std::fs::remove_file(path)
}

/// The naive-log floor: `[len u32][crc u32][payload]` appended through a 1 MiB buffer to
/// 64 MiB segment files (created as they fill, not preallocated), CRC-32 of the payload.
#[derive(Debug)]
pub(crate) struct NaiveLog {
    dir: PathBuf,
    file: File,
    segment: u64,
    segment_len: u64,
    buf: Vec<u8>,
    records: u64,
}

impl NaiveLog {
    pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;
    pub(crate) const BUFFER_BYTES: usize = 1 << 20;

    fn segment_path(dir: &Path, segment: u64) -> PathBuf {
        dir.join(format!("{segment:08}.naive"))
    }

    pub(crate) fn create(dir: &Path) -> std::io::Result<NaiveLog> {
        Ok(NaiveLog {
            dir: dir.to_path_buf(),
            file: File::create(Self::segment_path(dir, 0))?,
            segment: 0,
            segment_len: 0,
            buf: Vec::with_capacity(Self::BUFFER_BYTES),
            records: 0,
        })
    }

    pub(crate) fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let frame = 8 + payload.len();
        if self.segment_len + frame as u64 > Self::SEGMENT_BYTES {
            self.flush()?;
            self.segment += 1;
            self.file = File::create(Self::segment_path(&self.dir, self.segment))?;
            self.segment_len = 0;
        }
        if self.buf.len() + frame > Self::BUFFER_BYTES {
            self.flush()?;
        }
        let len = u32::try_from(payload.len()).expect("payload fits u32");
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf
            .extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.segment_len += frame as u64;
        self.records += 1;
        Ok(())
    }

    /// Writes the buffer to the current segment file.
    pub(crate) fn flush(&mut self) -> std::io::Result<()> {
        self.file.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    /// Flushes and `fdatasync`s the current segment file.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.file.sync_data()
    }

    pub(crate) fn records(&self) -> u64 {
        self.records
    }

    /// Deletes every segment file before the current one (bounds disk use between rounds).
    pub(crate) fn drop_old_segments(&mut self) -> std::io::Result<()> {
        for segment in 0..self.segment {
            match remove_scratch(&Self::segment_path(&self.dir, segment)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Memory maps of a naive log's segment files, scanned with the CRC checked.
#[derive(Debug)]
pub(crate) struct NaiveReader {
    maps: Vec<Mmap>,
}

impl NaiveReader {
    pub(crate) fn open(dir: &Path) -> std::io::Result<NaiveReader> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "naive"))
            .collect();
        paths.sort();
        let mut maps = Vec::new();
        for path in paths {
            let file = File::open(&path)?;
            #[expect(
                unsafe_code,
                reason = "the naive floor reads through mmap, by definition"
            )]
            // SAFETY: the bench wrote these scratch files and nothing modifies or truncates
            // them while they are mapped.
            let map = unsafe { Mmap::map(&file)? };
            maps.push(map);
        }
        Ok(NaiveReader { maps })
    }

    /// Scans every record, checking CRCs; returns (records, payload bytes, a checksum of the
    /// first payload bytes so the work cannot be optimised away).
    pub(crate) fn scan(&self) -> (u64, u64, u64) {
        let (mut records, mut bytes, mut mix) = (0u64, 0u64, 0u64);
        for map in &self.maps {
            let data: &[u8] = map;
            let mut at = 0usize;
            while let Some(head) = data.get(at..at + 8) {
                let len = u32::from_le_bytes(head[0..4].try_into().expect("4 bytes")) as usize;
                let crc = u32::from_le_bytes(head[4..8].try_into().expect("4 bytes"));
                let Some(payload) = data.get(at + 8..at + 8 + len) else {
                    break;
                };
                assert_eq!(crc32fast::hash(payload), crc, "naive frame CRC mismatch");
                records += 1;
                bytes += len as u64;
                mix = mix.wrapping_add(u64::from(payload.first().copied().unwrap_or(0)));
                at += 8 + len;
            }
        }
        (records, bytes, mix)
    }
}

/// Latency percentiles of one sample set, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Percentiles {
    pub(crate) n: usize,
    pub(crate) p50: u64,
    pub(crate) p99: u64,
    pub(crate) p999: u64,
    pub(crate) max: u64,
}

/// Sorts `samples` (ns) and takes nearest-rank percentiles.
pub(crate) fn percentiles(samples: &mut [u64]) -> Percentiles {
    assert!(!samples.is_empty(), "no latency samples");
    samples.sort_unstable();
    let n = samples.len();
    let rank = |q: f64| samples[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    Percentiles {
        n,
        p50: rank(0.50),
        p99: rank(0.99),
        p999: rank(0.999),
        max: samples[n - 1],
    }
}

/// Formats nanoseconds with a unit that keeps three significant digits.
pub(crate) fn fmt_ns(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// Prints one latency line: label, n, p50/p99/p99.9/max and any context (rate, policy).
#[expect(clippy::print_stdout, reason = "benches report on stdout")]
pub(crate) fn print_latency(label: &str, p: &Percentiles, context: &str) {
    println!(
        "  {label:<44} n={:<8} p50={:>10} p99={:>10} p99.9={:>10} max={:>10}  {context}",
        p.n,
        fmt_ns(p.p50),
        fmt_ns(p.p99),
        fmt_ns(p.p999),
        fmt_ns(p.max),
    );
}

/// Prints a section header.
#[expect(clippy::print_stdout, reason = "benches report on stdout")]
pub(crate) fn print_section(title: &str) {
    println!("\n== {title}");
}

/// Prints one result line of a comparison table: our figure, the baseline's, the ratio, the
/// target and whether it is met.
#[expect(clippy::print_stdout, reason = "benches report on stdout")]
pub(crate) fn print_ratio(
    id: &str,
    ours: &str,
    baseline: &str,
    ratio: f64,
    target: &str,
    met: bool,
) {
    println!(
        "  RESULT {id:<28} ours={ours:<22} baseline={baseline:<22} ratio={ratio:>6.3}  target {target:<16} {}",
        if met { "MET" } else { "NOT MET" }
    );
}

/// Prints the result line for a throughput compared round by round with a baseline: the
/// medians of both, and the median of the per-round ratios against `min_ratio`.
pub(crate) fn print_rate_ratio(id: &str, ours: &[f64], baseline: &[f64], min_ratio: f64) {
    let ratios: Vec<f64> = ours.iter().zip(baseline).map(|(o, b)| o / b).collect();
    let ratio = median(&ratios);
    print_ratio(
        id,
        &fmt_rate(median(ours)),
        &fmt_rate(median(baseline)),
        ratio,
        &format!(">= {min_ratio:.1}x naive"),
        ratio >= min_ratio,
    );
}

/// Prints a free-form line.
#[expect(clippy::print_stdout, reason = "benches report on stdout")]
pub(crate) fn print_note(text: &str) {
    println!("  {text}");
}

/// The median of some values.
pub(crate) fn median(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "no values");
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        f64::midpoint(v[mid - 1], v[mid])
    }
}

/// Formats a rate in records per second.
pub(crate) fn fmt_rate(per_second: f64) -> String {
    if per_second >= 1e6 {
        format!("{:.2} M rec/s", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1} k rec/s", per_second / 1e3)
    } else {
        format!("{per_second:.0} rec/s")
    }
}

/// Nanoseconds in a duration, saturating.
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The raw-device baseline: latency of `pwrite` of 4 KiB plus `fdatasync`, overwriting a
/// pre-zeroed, synced 64 MiB file at successive offsets; `n` samples in ns.
pub(crate) fn raw_fdatasync_latencies(dir: &Path, n: usize) -> Vec<u64> {
    const FILE_BYTES: u64 = 64 << 20;
    let path = dir.join("raw-fdatasync.bin");
    let file = create_scratch_file(&path);
    let zeros = vec![0u8; 1 << 20];
    for chunk in 0..FILE_BYTES / (1 << 20) {
        file.write_all_at(&zeros, chunk << 20).expect("zero");
    }
    file.sync_all().expect("sync the zeroed file");
    let block = [0x5au8; 4096];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let offset = (i * 4096) % FILE_BYTES;
        let start = Instant::now();
        file.write_all_at(&block, offset).expect("overwrite 4 KiB");
        file.sync_data().expect("fdatasync");
        samples.push(nanos(start.elapsed()));
    }
    drop(file);
    let _ = remove_scratch(&path);
    samples
}

/// A second raw baseline, closer to what our log does: copy `record_bytes` into a shared
/// mapping of a pre-zeroed, synced 64 MiB file at successive offsets, then `fdatasync`; `n`
/// samples in ns. The gap between this and [`raw_fdatasync_latencies`] is the cost of
/// syncing through a mapping on this file system, which no code of ours adds.
pub(crate) fn raw_mmap_fdatasync_latencies(dir: &Path, n: usize, record_bytes: usize) -> Vec<u64> {
    const FILE_BYTES: usize = 64 << 20;
    let path = dir.join("raw-mmap-fdatasync.bin");
    let file = create_scratch_file(&path);
    let zeros = vec![0u8; 1 << 20];
    for chunk in 0..(FILE_BYTES >> 20) as u64 {
        file.write_all_at(&zeros, chunk << 20).expect("zero");
    }
    file.sync_all().expect("sync the zeroed file");
    #[expect(
        unsafe_code,
        reason = "the baseline writes through a shared mapping, as the log does"
    )]
    // SAFETY: the bench created this scratch file, nothing else truncates or maps it, and
    // the mapping is dropped before the file is removed.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&file).expect("map") };
    let record = vec![0x5au8; record_bytes];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let offset = (i * record_bytes) % (FILE_BYTES - record_bytes);
        let start = Instant::now();
        map[offset..offset + record_bytes].copy_from_slice(&record);
        file.sync_data().expect("fdatasync");
        samples.push(nanos(start.elapsed()));
    }
    drop(map);
    drop(file);
    let _ = remove_scratch(&path);
    samples
}

/// Creates (or empties) a scratch file for reading and writing.
fn create_scratch_file(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap_or_else(|error| panic!("create {}: {error}", path.display()))
}

/// A third raw baseline, for context: `record_bytes` written at successive offsets of a
/// 64 MiB file whose blocks were reserved with `fallocate` (as the log reserves a segment's,
/// format/segment.md [SEG-08]), each followed by `fdatasync`; `n` samples in ns. The first
/// write to a reserved block changes its extent from unwritten to written, so each sync also
/// commits the file system's journal: the gap between this and [`raw_fdatasync_latencies`]
/// is what preallocating without writing zeros costs every durable ack on this file system.
pub(crate) fn raw_fallocated_fdatasync_latencies(
    dir: &Path,
    n: usize,
    record_bytes: usize,
) -> Vec<u64> {
    const FILE_BYTES: usize = 64 << 20;
    let path = dir.join("raw-fallocated-fdatasync.bin");
    let file = create_scratch_file(&path);
    rustix::fs::fallocate(
        &file,
        rustix::fs::FallocateFlags::empty(),
        0,
        FILE_BYTES as u64,
    )
    .expect("fallocate");
    file.sync_all().expect("sync the reserved file");
    let record = vec![0x5au8; record_bytes];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let offset = (i * record_bytes) % (FILE_BYTES - record_bytes);
        let start = Instant::now();
        file.write_all_at(&record, offset as u64)
            .expect("write a record");
        file.sync_data().expect("fdatasync");
        samples.push(nanos(start.elapsed()));
    }
    drop(file);
    let _ = remove_scratch(&path);
    samples
}

/// The cost of one `Instant::now()` pair, for reading caller-thread latencies.
pub(crate) fn timer_overhead_ns() -> u64 {
    let mut samples: Vec<u64> = (0..100_000)
        .map(|_| {
            let start = Instant::now();
            nanos(std::hint::black_box(start).elapsed())
        })
        .collect();
    percentiles(&mut samples).p50
}

/// Criterion options that take a value, so that their values are not taken for filters.
const VALUE_OPTIONS: [&str; 15] = [
    "--save-baseline",
    "--baseline",
    "--baseline-lenient",
    "--load-baseline",
    "--sample-size",
    "--warm-up-time",
    "--measurement-time",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--profile-time",
    "--output-format",
    "--color",
    "--plotting-backend",
];

/// Whether the binary runs as a benchmark (`cargo bench`) rather than as a smoke test
/// (`cargo test --benches`, where criterion runs each routine once): criterion's own rule.
pub(crate) fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

/// Whether a custom section runs: in bench mode, when no filter is given or the section's
/// name contains the filter (or one of its `|`-separated alternatives).
pub(crate) fn selected(section: &str) -> bool {
    if !bench_mode() {
        return false;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut filters = Vec::new();
    let mut skip_value = false;
    for arg in &args {
        if skip_value {
            skip_value = false;
        } else if arg.starts_with('-') {
            skip_value = VALUE_OPTIONS.contains(&arg.as_str());
        } else {
            filters.push(arg.as_str());
        }
    }
    // Criterion takes one filter, a regex; alternatives separated by `|` are honoured here.
    filters.is_empty()
        || filters
            .iter()
            .flat_map(|f| f.split('|'))
            .any(|f| section.contains(f))
}

/// `full` in bench mode, `quick` when criterion only smoke-tests the routines.
pub(crate) fn size(full: usize, quick: usize) -> usize {
    if bench_mode() { full } else { quick }
}

/// The block device's `stat` file for the file system holding `dir`.
fn device_stat_path(dir: &Path) -> Option<PathBuf> {
    use std::os::unix::fs::MetadataExt as _;
    let dev = std::fs::metadata(dir).ok()?.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    Some(PathBuf::from(format!(
        "/sys/dev/block/{major}:{minor}/stat"
    )))
}

/// Milliseconds the device has spent doing I/O (field 10 of its `stat`).
fn io_ticks(stat: &Path) -> Option<u64> {
    std::fs::read_to_string(stat)
        .ok()?
        .split_whitespace()
        .nth(9)?
        .parse()
        .ok()
}

/// Dirty plus writeback page-cache bytes, from `/proc/meminfo`.
fn dirty_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<u64> {
        info.lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((kib("Dirty:")? + kib("Writeback:")?) * 1024)
}

/// Waits (at most 30 s) until the disk holding `dir` is nearly idle (busy under 10 % of a
/// 250 ms window) and little dirty data is left, so that a latency measurement does not pay
/// for the writeback, deletes and discards of the previous one. Prints what it waited for.
pub(crate) fn settle_disk(dir: &Path) {
    let stat = device_stat_path(dir);
    let start = Instant::now();
    let window = Duration::from_millis(250);
    let mut busy = None;
    while start.elapsed() < Duration::from_secs(30) {
        let before = stat.as_deref().and_then(io_ticks);
        std::thread::sleep(window);
        let after = stat.as_deref().and_then(io_ticks);
        busy = before.zip(after).map(|(b, a)| a.saturating_sub(b));
        let idle = busy.is_none_or(|ms| ms * 10 < window.as_millis() as u64);
        let clean = dirty_bytes().is_none_or(|b| b < 256 << 20);
        if idle && clean {
            break;
        }
    }
    if start.elapsed() > Duration::from_secs(1) {
        print_note(&format!(
            "(waited {:.1}s for the disk to settle: busy {} ms per 250 ms, dirty {} MiB)",
            start.elapsed().as_secs_f64(),
            busy.map_or("?".into(), |b| b.to_string()),
            dirty_bytes().map_or("?".into(), |b| (b >> 20).to_string()),
        ));
    }
}

/// Makes a scratch directory's entries durable (as the log does after creating or removing
/// files), so a baseline pays the same directory sync.
pub(crate) fn sync_dir(dir: &Path) {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .expect("sync directory");
}
