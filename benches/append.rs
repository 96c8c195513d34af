//! Append benchmarks: raw append against the naive-log floor (T1), group-commit durable
//! throughput against naive "fsync every 1,000 records" (T3), durable-ack latency under
//! group commit against raw `fdatasync` (T4), and durable per-append (`EveryAppend`).
//!
//! Criterion measures the throughput routines; the sections after it interleave ours and the
//! baseline round by round, print medians and per-round ratios, and print the latency
//! percentiles criterion cannot (n, p50, p99, p99.9, max, and the rate used).
//! Run one part with `cargo bench --bench append -- t4` (filters match criterion ids and
//! section names).

mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use common::{
    NaiveLog, Percentiles, fmt_ns, fmt_rate, group_commit, median, nanos, ours, payloads,
    percentiles, print_latency, print_note, print_rate_ratio, print_ratio, print_section,
    raw_fdatasync_latencies, scratch_dir, selected, settle_disk, size,
};
use criterion::{Criterion, Throughput};
use esl_replay::storage::{Log, Seq, SyncPolicy};

/// Distinct payloads cycled through (a multiple of the batch size).
const POOL: usize = 4096;
/// Records per `append_batch` call.
const BATCH: usize = 64;

/// Appends `count` records one by one, starting at pool position `at`.
fn append_ours(log: &mut Log, pool: &[Vec<u8>], count: usize) -> Seq {
    let mut last = Seq(0);
    for i in 0..count {
        last = log.append(&pool[i % pool.len()]).expect("append");
    }
    last
}

/// Appends `count` records (a multiple of `BATCH`) in batches.
fn append_ours_batched(log: &mut Log, pool: &[Vec<u8>], count: usize) -> Seq {
    let mut last = Seq(0);
    let mut at = 0;
    for _ in 0..count / BATCH {
        let range = log
            .append_batch(&pool[at..at + BATCH])
            .expect("append batch");
        last = Seq(range.end.get() - 1);
        at = (at + BATCH) % pool.len();
    }
    last
}

fn append_naive(log: &mut NaiveLog, pool: &[Vec<u8>], count: usize) {
    for i in 0..count {
        log.append(&pool[i % pool.len()]).expect("naive append");
    }
}

/// Naive durability: flush and `fdatasync` after every 1,000 records and at the end.
fn append_naive_fsync_1000(log: &mut NaiveLog, pool: &[Vec<u8>], count: usize) {
    for i in 0..count {
        log.append(&pool[i % pool.len()]).expect("naive append");
        if log.records().is_multiple_of(1000) {
            log.sync().expect("naive sync");
        }
    }
    log.sync().expect("naive sync");
}

/// Ours, waiting for durability after every 1,000 records (the naive semantics).
fn append_ours_wait_1000(log: &mut Log, pool: &[Vec<u8>], count: usize) {
    let mut done = 0;
    while done < count {
        let n = 1000.min(count - done);
        let last = append_ours(log, pool, n);
        log.wait_durable(last).expect("wait durable");
        done += n;
    }
}

/// Deletes every whole segment before the active one, outside the timed region, so rounds
/// do not fill the disk.
fn trim(log: &Log) {
    log.truncate_prefix(log.next_seq()).expect("truncate");
}

fn criterion_benches(c: &mut Criterion, pool: &[Vec<u8>]) {
    let round = size(100_000, 1_000);

    let mut group = c.benchmark_group("t1_append");
    group.throughput(Throughput::Elements(round as u64));
    {
        let dir = scratch_dir("t1-ours");
        let (mut log, _) = Log::open(dir.path(), ours(SyncPolicy::OsOnly)).expect("open");
        group.bench_function("ours_append", |b| {
            b.iter_custom(|iters| {
                trim(&log);
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(append_ours(&mut log, pool, round));
                }
                start.elapsed()
            });
        });
        group.bench_function("ours_append_batch64", |b| {
            b.iter_custom(|iters| {
                trim(&log);
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(append_ours_batched(&mut log, pool, round));
                }
                start.elapsed()
            });
        });
        log.close().expect("close");
    }
    {
        let dir = scratch_dir("t1-naive");
        let mut log = NaiveLog::create(dir.path()).expect("naive");
        group.bench_function("naive_append", |b| {
            b.iter_custom(|iters| {
                log.drop_old_segments().expect("trim naive");
                let start = Instant::now();
                for _ in 0..iters {
                    append_naive(&mut log, pool, round);
                }
                start.elapsed()
            });
        });
    }
    group.finish();

    let round = size(50_000, 1_000);
    let mut group = c.benchmark_group("t3_durable_throughput");
    group.throughput(Throughput::Elements(round as u64));
    {
        let dir = scratch_dir("t3-ours");
        let (mut log, _) = Log::open(dir.path(), ours(group_commit())).expect("open");
        group.bench_function("ours_group_commit", |b| {
            b.iter_custom(|iters| {
                trim(&log);
                let start = Instant::now();
                for _ in 0..iters {
                    let last = append_ours(&mut log, pool, round);
                    log.wait_durable(last).expect("wait durable");
                }
                start.elapsed()
            });
        });
        group.bench_function("ours_group_commit_wait_every_1000", |b| {
            b.iter_custom(|iters| {
                trim(&log);
                let start = Instant::now();
                for _ in 0..iters {
                    append_ours_wait_1000(&mut log, pool, round);
                }
                start.elapsed()
            });
        });
        log.close().expect("close");
    }
    {
        let dir = scratch_dir("t3-naive");
        let mut log = NaiveLog::create(dir.path()).expect("naive");
        group.bench_function("naive_fsync_every_1000", |b| {
            b.iter_custom(|iters| {
                log.drop_old_segments().expect("trim naive");
                let start = Instant::now();
                for _ in 0..iters {
                    append_naive_fsync_1000(&mut log, pool, round);
                }
                start.elapsed()
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("durable_every_append");
    group.throughput(Throughput::Elements(1));
    {
        let dir = scratch_dir("every-append");
        let (mut log, _) = Log::open(dir.path(), ours(SyncPolicy::EveryAppend)).expect("open");
        let mut i = 0;
        group.bench_function("ours_every_append", |b| {
            b.iter(|| {
                i += 1;
                log.append(&pool[i % pool.len()]).expect("append")
            });
        });
        log.close().expect("close");
    }
    group.finish();
}

/// T1 throughput, interleaved: each round appends the same records to ours (single and
/// batched) and to the naive log; ratios are per round, then the median is taken.
fn t1_throughput(pool: &[Vec<u8>]) {
    print_section("t1_throughput: raw append, OsOnly, ~370-byte payloads, 64 MiB segments");
    let rounds = 5;
    let count = 500_000;
    let ours_dir = scratch_dir("t1i-ours");
    let naive_dir = scratch_dir("t1i-naive");
    let (mut log, _) = Log::open(ours_dir.path(), ours(SyncPolicy::OsOnly)).expect("open");
    let mut naive = NaiveLog::create(naive_dir.path()).expect("naive");
    settle_disk(ours_dir.path());
    let (mut single, mut batched, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        trim(&log);
        let start = Instant::now();
        black_box(append_ours(&mut log, pool, count));
        single.push(count as f64 / start.elapsed().as_secs_f64());

        trim(&log);
        let start = Instant::now();
        black_box(append_ours_batched(&mut log, pool, count));
        batched.push(count as f64 / start.elapsed().as_secs_f64());

        naive.drop_old_segments().expect("trim naive");
        let start = Instant::now();
        append_naive(&mut naive, pool, count);
        floor.push(count as f64 / start.elapsed().as_secs_f64());
    }
    log.close().expect("close");
    print_note(&format!(
        "{rounds} rounds of {count} records; medians: ours single {}, ours batch{BATCH} {}, naive {}",
        fmt_rate(median(&single)),
        fmt_rate(median(&batched)),
        fmt_rate(median(&floor)),
    ));
    print_rate_ratio("T1 append (single)", &single, &floor, 1.0);
    print_rate_ratio("T1 append (batch 64)", &batched, &floor, 1.0);
}

/// T1 caller-thread latency: every append timed on the caller thread (rolls included).
fn t1_latency(pool: &[Vec<u8>]) {
    print_section("t1_latency: caller-thread append latency, back-to-back, OsOnly");
    let n = 1_000_000;
    print_note(&format!(
        "timer overhead (Instant::now pair) p50 = {}; included in every sample",
        fmt_ns(common::timer_overhead_ns())
    ));
    let dir = scratch_dir("t1-lat");
    let (mut log, _) = Log::open(dir.path(), ours(SyncPolicy::OsOnly)).expect("open");
    std::thread::sleep(Duration::from_secs(1)); // let the spare segment be prepared
    settle_disk(dir.path());
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let payload = &pool[i % pool.len()];
        let start = Instant::now();
        black_box(log.append(payload).expect("append"));
        samples.push(nanos(start.elapsed()));
    }
    log.close().expect("close");
    let total: u64 = samples.iter().sum();
    let slow: Vec<u64> = samples
        .iter()
        .copied()
        .filter(|ns| *ns >= 100_000)
        .collect();
    let p_ours = percentiles(&mut samples);
    print_latency("ours append (OsOnly)", &p_ours, "back-to-back");
    print_note(&format!(
        "ours: {} appends took >= 100 µs (segment rolls, and writes of the staged frames when the flusher thread falls behind): {} of {} total ({:.0} %)",
        slow.len(),
        fmt_ns(slow.iter().sum()),
        fmt_ns(total),
        slow.iter().sum::<u64>() as f64 / total as f64 * 100.0
    ));

    let dir = scratch_dir("t1-lat-naive");
    let mut naive = NaiveLog::create(dir.path()).expect("naive");
    settle_disk(dir.path());
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let payload = &pool[i % pool.len()];
        let start = Instant::now();
        naive.append(payload).expect("naive append");
        samples.push(nanos(start.elapsed()));
    }
    let total: u64 = samples.iter().sum();
    let slow: u64 = samples.iter().copied().filter(|ns| *ns >= 100_000).sum();
    print_note(&format!(
        "naive: appends >= 100 µs (1 MiB buffer flushes and segment creation): {} of {} total ({:.0} %)",
        fmt_ns(slow),
        fmt_ns(total),
        slow as f64 / total as f64 * 100.0
    ));
    let p_naive = percentiles(&mut samples);
    print_latency("naive append (1 MiB buffer)", &p_naive, "back-to-back");
    print_ratio(
        "T1 latency p99",
        &fmt_ns(p_ours.p99),
        &fmt_ns(p_naive.p99),
        p_ours.p99 as f64 / p_naive.p99 as f64,
        "p99 <= 1 us",
        p_ours.p99 <= 1_000,
    );
    print_ratio(
        "T1 latency p99.9",
        &fmt_ns(p_ours.p999),
        &fmt_ns(p_naive.p999),
        p_ours.p999 as f64 / p_naive.p999 as f64,
        "p99.9 <= 5 us",
        p_ours.p999 <= 5_000,
    );
}

/// T3, interleaved: group commit (append continuously, then wait for the last record), group
/// commit waiting every 1,000 records, and naive fsync every 1,000 records.
/// Returns the median pipelined group-commit rate (the "max rate" for T4).
fn t3_throughput(pool: &[Vec<u8>]) -> f64 {
    print_section("t3_durable: group-commit durable throughput vs naive fsync every 1,000 records");
    let rounds = 5;
    let count = 1_000_000;
    let ours_dir = scratch_dir("t3i-ours");
    let naive_dir = scratch_dir("t3i-naive");
    let (mut log, _) = Log::open(ours_dir.path(), ours(group_commit())).expect("open");
    let mut naive = NaiveLog::create(naive_dir.path()).expect("naive");
    let (mut pipelined, mut every_1000, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        trim(&log);
        settle_disk(ours_dir.path());
        let start = Instant::now();
        let last = append_ours(&mut log, pool, count);
        log.wait_durable(last).expect("wait durable");
        pipelined.push(count as f64 / start.elapsed().as_secs_f64());

        trim(&log);
        settle_disk(ours_dir.path());
        let start = Instant::now();
        append_ours_wait_1000(&mut log, pool, count);
        every_1000.push(count as f64 / start.elapsed().as_secs_f64());

        naive.drop_old_segments().expect("trim naive");
        settle_disk(naive_dir.path());
        let start = Instant::now();
        append_naive_fsync_1000(&mut naive, pool, count);
        floor.push(count as f64 / start.elapsed().as_secs_f64());
    }
    log.close().expect("close");
    print_note(&format!(
        "{rounds} rounds of {count} records; medians: group commit {}, group commit waiting every 1000 {}, naive fsync/1000 {}",
        fmt_rate(median(&pipelined)),
        fmt_rate(median(&every_1000)),
        fmt_rate(median(&floor)),
    ));
    print_rate_ratio("T3 group commit", &pipelined, &floor, 1.5);
    print_rate_ratio("T3 (wait every 1000)", &every_1000, &floor, 1.5);
    median(&pipelined)
}

/// Lets `thread::sleep` wake within microseconds instead of the default 50 µs slack, so the
/// open-loop producer appends close to its schedule.
fn precise_sleeps() {
    #[expect(unsafe_code, reason = "prctl has no safe wrapper in std")]
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and only changes this thread's
    // timer slack; no memory is passed.
    let result = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1u64, 0u64, 0u64, 0u64) };
    if result != 0 {
        print_note("could not lower the timer slack; producer lateness will be higher");
    }
}

/// What an open-loop run measured: durable-ack latency from each record's scheduled time,
/// and how late the producer appended relative to the schedule (harness overhead).
struct OpenLoop {
    ack: Vec<u64>,
    lateness: Vec<u64>,
}

/// Open-loop durable-ack latency under group commit: records are appended on a fixed
/// schedule at `rate` per second for `duration`; a waiter thread timestamps the moment each
/// record is reported durable. Latency is measured from the scheduled time (not the actual
/// append), so a late append counts against us (no coordinated omission).
fn ack_latencies(pool: &[Vec<u8>], rate: f64, duration: Duration) -> OpenLoop {
    let dir = scratch_dir("t4");
    let (mut log, _) = Log::open(dir.path(), ours(group_commit())).expect("open");
    std::thread::sleep(Duration::from_secs(1)); // let the spare segment be prepared
    settle_disk(dir.path());
    precise_sleeps();
    let n = (rate * duration.as_secs_f64()) as u64;
    let period = 1e9 / rate;
    let scheduled = move |i: u64| (i as f64 * period) as u64;
    let first = log.next_seq().get();
    let durability = log.durability();
    let start = Instant::now();
    let waiter = std::thread::spawn(move || {
        let mut samples = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let end = first + n;
        let mut next = first;
        while next < end {
            durability.wait(Seq(next)).expect("wait durable");
            let now = nanos(start.elapsed());
            let acked = durability.durable_seq().get().min(end);
            for seq in next..acked {
                samples.push(now.saturating_sub(scheduled(seq - first)));
            }
            next = acked;
        }
        samples
    });
    let mut lateness = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 0..n {
        let due = scheduled(i);
        let mut now = nanos(start.elapsed());
        if now < due {
            std::thread::sleep(Duration::from_nanos(due - now));
            now = nanos(start.elapsed());
        }
        lateness.push(now.saturating_sub(due));
        log.append(&pool[(i as usize) % pool.len()])
            .expect("append");
    }
    let ack = waiter.join().expect("waiter");
    log.close().expect("close");
    OpenLoop { ack, lateness }
}

/// T4 (and the raw baseline it is relative to), then durable per-append latency.
fn t4_latency(pool: &[Vec<u8>], max_rate: f64) {
    print_section("t4_ack_latency: group-commit durable-ack latency, open loop, vs raw fdatasync");
    let dir = scratch_dir("raw");
    settle_disk(dir.path());
    let mut raw = raw_fdatasync_latencies(dir.path(), 5_000);
    let raw = percentiles(&mut raw);
    print_latency(
        "raw pwrite 4 KiB + fdatasync (pre-zeroed)",
        &raw,
        "back-to-back",
    );
    let mut raw_mmap = common::raw_mmap_fdatasync_latencies(dir.path(), 5_000, 378);
    let raw_mmap = percentiles(&mut raw_mmap);
    print_latency(
        "raw mmap write 378 B + fdatasync (pre-zeroed)",
        &raw_mmap,
        "back-to-back; not the T4 baseline, shows the cost of syncing a mapping",
    );
    let mut raw_fallocated = common::raw_fallocated_fdatasync_latencies(dir.path(), 5_000, 378);
    print_latency(
        "raw pwrite 378 B + fdatasync (fallocated)",
        &percentiles(&mut raw_fallocated),
        "back-to-back; not the T4 baseline: the floor of a log whose segments are reserved, not zeroed",
    );
    let half = (max_rate / 2.0).floor();
    let mut rates = vec![(half, "50% of the T3 group-commit max")];
    for (rate, why) in [
        (100_000.0, "T14 capture rate"),
        (10_000.0, "light load"),
        (1_000.0, "near idle: about one sync per record"),
    ] {
        if rate < half {
            rates.push((rate, why));
        }
    }
    let mut results: Vec<(f64, Percentiles)> = Vec::new();
    for (rate, why) in rates {
        let duration = Duration::from_secs(if rate < 5_000.0 { 4 } else { 2 });
        let mut run = ack_latencies(pool, rate, duration);
        let p = percentiles(&mut run.ack);
        print_latency(
            &format!("ours ack at {}", fmt_rate(rate)),
            &p,
            &format!("open loop, {}s, {why}", duration.as_secs()),
        );
        let late = percentiles(&mut run.lateness);
        print_latency(
            "  (producer lateness vs schedule)",
            &late,
            "harness overhead, included above",
        );
        results.push((rate, p));
    }
    for (rate, p) in results {
        let id = format!("T4 @{}", fmt_rate(rate));
        let r50 = p.p50 as f64 / raw.p50 as f64;
        let r99 = p.p99 as f64 / raw.p99 as f64;
        let r999 = p.p999 as f64 / raw.p999 as f64;
        print_ratio(
            &format!("{id} p50"),
            &fmt_ns(p.p50),
            &fmt_ns(raw.p50),
            r50,
            "<= 1.5x raw",
            r50 <= 1.5,
        );
        print_ratio(
            &format!("{id} p99"),
            &fmt_ns(p.p99),
            &fmt_ns(raw.p99),
            r99,
            "<= 2x raw",
            r99 <= 2.0,
        );
        print_ratio(
            &format!("{id} p99.9"),
            &fmt_ns(p.p999),
            &fmt_ns(raw.p999),
            r999,
            "<= 3x raw",
            r999 <= 3.0,
        );
    }

    print_section("every_append: durable per-append latency (EveryAppend), closed loop");
    let dir = scratch_dir("every-append-lat");
    let (mut log, _) = Log::open(dir.path(), ours(SyncPolicy::EveryAppend)).expect("open");
    std::thread::sleep(Duration::from_secs(1)); // let the spare segment be prepared
    settle_disk(dir.path());
    let n = 5_000;
    let mut samples = Vec::with_capacity(n);
    let all = Instant::now();
    for i in 0..n {
        let start = Instant::now();
        black_box(log.append(&pool[i % pool.len()]).expect("append"));
        samples.push(nanos(start.elapsed()));
    }
    let rate = n as f64 / all.elapsed().as_secs_f64();
    log.close().expect("close");
    let p = percentiles(&mut samples);
    print_latency(
        "ours append (EveryAppend)",
        &p,
        &format!("back-to-back, {}", fmt_rate(rate)),
    );
    print_note(&format!(
        "EveryAppend vs raw fdatasync: p50 {:.2}x, p99 {:.2}x (no target; T5 compares against SQLite, not run here)",
        p.p50 as f64 / raw.p50 as f64,
        p.p99 as f64 / raw.p99 as f64
    ));
}

fn main() {
    let pool = payloads(POOL, 370);
    let mut c = common::criterion();
    criterion_benches(&mut c, &pool);
    c.final_summary();

    if selected("t1_throughput") {
        t1_throughput(&pool);
    }
    if selected("t1_latency") {
        t1_latency(&pool);
    }
    let mut max_rate = None;
    if selected("t3_durable") {
        max_rate = Some(t3_throughput(&pool));
    }
    if selected("t4_ack_latency every_append") {
        let max_rate = max_rate.unwrap_or_else(|| {
            // Measure the max quickly when T3 was filtered out.
            let dir = scratch_dir("t4-max");
            let (mut log, _) = Log::open(dir.path(), ours(group_commit())).expect("open");
            let start = Instant::now();
            let last = append_ours(&mut log, &pool, 1_000_000);
            log.wait_durable(last).expect("wait durable");
            1_000_000.0 / start.elapsed().as_secs_f64()
        });
        t4_latency(&pool, max_rate);
    }
}
