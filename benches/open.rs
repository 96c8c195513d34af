//! Open benchmark: time of `Log::open` after a clean shutdown, for a small log (64 MiB of
//! records) and a large one, whose ratio T10 bounds (open must not depend on log size).
//!
//! The large log defaults to 10 GiB of records (`ESL_BENCH_OPEN_GIB` overrides it); it is
//! shrunk to what the scratch file system can hold with 8 GiB to spare, and the size used
//! is printed. Each open is timed alone; the close that follows (which waits for the spare
//! segment the open started preparing) is not. `Reader::open` is timed the same way.
//! Run with `cargo bench --bench open`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use common::{
    fmt_ns, median, nanos, ours, payloads, print_note, print_ratio, print_section, scratch_dir,
    selected, size,
};
use criterion::Criterion;
use esl_replay::storage::{Log, LogOptions, Reader, SyncPolicy};

const GIB: u64 = 1 << 30;

/// Free bytes on the file system holding `dir`, from `df` (no unsafe statvfs needed).
fn free_bytes(dir: &Path) -> Option<u64> {
    let output = Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .ok()?;
    String::from_utf8(output.stdout)
        .ok()?
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// Writes about `bytes` of ~370-byte records and closes the log cleanly.
fn write_log(dir: &Path, bytes: u64) -> u64 {
    let pool = payloads(4096, 10);
    let (mut log, _) = Log::open(dir, ours(SyncPolicy::OsOnly)).expect("open");
    let mut written = 0u64;
    let mut records = 0u64;
    let mut at = 0;
    while written < bytes {
        let range = log.append_batch(&pool[at..at + 64]).expect("append");
        records += range.end.get() - range.start.get();
        written += pool[at..at + 64]
            .iter()
            .map(|p| p.len() as u64 + 8)
            .sum::<u64>();
        at = (at + 64) % pool.len();
    }
    log.close().expect("close");
    records
}

/// Opens after a clean shutdown and returns the time `Log::open` took.
fn timed_open(dir: &Path) -> u64 {
    let start = Instant::now();
    let (log, report) = Log::open(dir, LogOptions::default()).expect("open");
    let elapsed = nanos(start.elapsed());
    assert!(
        report.clean_shutdown,
        "the log must have been closed cleanly"
    );
    log.close().expect("close");
    elapsed
}

fn timed_reader_open(dir: &Path) -> u64 {
    let start = Instant::now();
    let reader = Reader::open(dir, &LogOptions::default()).expect("reader");
    let elapsed = nanos(start.elapsed());
    drop(reader);
    elapsed
}

fn main() {
    let scratch = scratch_dir("open");
    let small_bytes = 64 << 20;
    let wanted = std::env::var("ESL_BENCH_OPEN_GIB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(10)
        * GIB;
    let wanted = size(usize::try_from(wanted).unwrap_or(usize::MAX), 256 << 20) as u64;
    let free = free_bytes(scratch.path()).unwrap_or(0);
    let large_bytes = wanted
        .min(free.saturating_sub(8 * GIB))
        .max(small_bytes * 4);
    let small = scratch.path().join("small");
    let large = scratch.path().join("large");
    let start = Instant::now();
    let small_records = write_log(&small, small_bytes);
    let large_records = write_log(&large, large_bytes);
    if selected("t10_open") {
        print_section("t10_open: Log::open after clean shutdown, small vs large log");
        print_note(&format!(
            "small: {small_records} records ({} MiB of frames); large: {large_records} records ({:.2} GiB of frames, asked {:.2} GiB, {:.1} GiB free before writing); written in {:.1}s",
            small_bytes >> 20,
            large_bytes as f64 / GIB as f64,
            wanted as f64 / GIB as f64,
            free as f64 / GIB as f64,
            start.elapsed().as_secs_f64()
        ));
    }

    let mut c: Criterion = common::criterion();
    {
        let mut group = c.benchmark_group("t10_open");
        group.sampling_mode(criterion::SamplingMode::Flat);
        for (name, dir) in [("small_64MiB", &small), ("large", &large)] {
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| std::time::Duration::from_nanos(timed_open(dir)))
                        .sum()
                });
            });
        }
        group.finish();
    }
    c.final_summary();

    if selected("t10_open") {
        let rounds = 9;
        let (mut s, mut l, mut rs, mut rl) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            common::settle_disk(scratch.path());
            s.push(timed_open(&small) as f64);
            l.push(timed_open(&large) as f64);
            rs.push(timed_reader_open(&small) as f64);
            rl.push(timed_reader_open(&large) as f64);
        }
        let ratios: Vec<f64> = l.iter().zip(&s).map(|(l, s)| l / s).collect();
        let reader_ratios: Vec<f64> = rl.iter().zip(&rs).map(|(l, s)| l / s).collect();
        print_note(&format!(
            "{rounds} interleaved rounds; medians: Log::open small {}, large {}; Reader::open small {}, large {}",
            fmt_ns(median(&s) as u64),
            fmt_ns(median(&l) as u64),
            fmt_ns(median(&rs) as u64),
            fmt_ns(median(&rl) as u64),
        ));
        let r = median(&ratios);
        print_ratio(
            &format!("T10 open {:.1}GiB/64MiB", large_bytes as f64 / GIB as f64),
            &fmt_ns(median(&l) as u64),
            &fmt_ns(median(&s) as u64),
            r,
            "<= 1.5",
            r <= 1.5,
        );
        let r = median(&reader_ratios);
        print_ratio(
            "T10 Reader::open (no target)",
            &fmt_ns(median(&rl) as u64),
            &fmt_ns(median(&rs) as u64),
            r,
            "(info)",
            r <= 1.5,
        );
    }
}
