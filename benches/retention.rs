//! Retention benchmark (T12): durable-append latency while another thread truncates the
//! prefix (deleting whole 64 MiB segments), against the same appender when nothing is deleted.
//!
//! A log is prefilled with many segments, then one appender runs closed-loop durable appends
//! (`append` then `wait_durable`, group commit) for alternating one-second phases: quiet,
//! then deleting (a second thread calls `Reader::truncate_prefix` to drop the oldest segment
//! every 200 ms). Samples are attributed to the phase they started in, except that samples
//! that overlap a deletion running on past its phase count as deleting.
//!
//! The same phases are then run without the log, as the file system's floor: `pwrite` of
//! 4 KiB plus `fdatasync` on a pre-zeroed file, while another thread unlinks synced 64 MiB
//! files. If the floor itself degrades, no retention design can meet T12 on this machine.
//! Criterion has nothing to add to latency distributions, so this bench only prints.
//! Run with `cargo bench --bench retention`.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{
    Percentiles, fmt_ns, group_commit, nanos, ours, payloads, percentiles, print_latency,
    print_note, print_ratio, print_section, scratch_dir, selected, settle_disk, size,
};
use esl_replay::storage::{Log, LogOptions, SyncPolicy};

/// Latencies of `op` in quiet and deleting phases, and how long each deletion took.
struct Phased {
    quiet: Vec<u64>,
    deleting: Vec<u64>,
    deletions: Vec<u64>,
}

/// Runs `op` back to back for `phases` alternating phases (quiet first); during deleting
/// phases another thread calls `delete` every 200 ms (it returns false when nothing is left).
/// A sample counts as deleting if it starts in a deleting phase or while a deletion that
/// began in one is still running, so that quiet samples are quiet.
fn run_phases(
    phases: u32,
    phase: Duration,
    mut op: impl FnMut(),
    mut delete: impl FnMut() -> bool + Send,
) -> Phased {
    let deleting = AtomicBool::new(false);
    let busy = AtomicBool::new(false);
    let done = AtomicBool::new(false);
    let mut result = Phased {
        quiet: Vec::new(),
        deleting: Vec::new(),
        deletions: Vec::new(),
    };
    std::thread::scope(|scope| {
        let deleter = scope.spawn(|| {
            let mut took = Vec::new();
            while !done.load(Ordering::Acquire) {
                if deleting.load(Ordering::Acquire) {
                    busy.store(true, Ordering::Release);
                    let t = Instant::now();
                    if delete() {
                        took.push(nanos(t.elapsed()));
                    }
                    busy.store(false, Ordering::Release);
                    std::thread::sleep(Duration::from_millis(200));
                } else {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            took
        });
        let start = Instant::now();
        while start.elapsed() < phase * phases {
            let in_deleting = (start.elapsed().as_nanos() / phase.as_nanos()) % 2 == 1;
            deleting.store(in_deleting, Ordering::Release);
            let overlaps = busy.load(Ordering::Acquire);
            let t = Instant::now();
            op();
            let elapsed = nanos(t.elapsed());
            if in_deleting || overlaps || busy.load(Ordering::Acquire) {
                result.deleting.push(elapsed);
            } else {
                result.quiet.push(elapsed);
            }
        }
        done.store(true, Ordering::Release);
        result.deletions = deleter.join().expect("deleter");
    });
    result
}

fn report(label: &str, run: &mut Phased, what: &str) -> (Percentiles, Percentiles) {
    if !run.deletions.is_empty() {
        print_latency(
            &format!("{label}: one deletion"),
            &percentiles(&mut run.deletions),
            "on the deleting thread",
        );
    }
    let q = percentiles(&mut run.quiet);
    let d = percentiles(&mut run.deleting);
    print_latency(&format!("{label}, quiet"), &q, what);
    print_latency(&format!("{label}, deleting"), &d, "1 segment / 200 ms");
    (q, d)
}

/// The file-system floor: raw durable writes while synced 64 MiB files are unlinked.
fn floor(dir: &Path, phases: u32, phase: Duration, file_bytes: u64) -> Phased {
    let zeros = vec![0u8; 1 << 20];
    let make = |path: &Path, len: u64| {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .expect("create");
        for chunk in 0..len.div_ceil(1 << 20) {
            file.write_all_at(&zeros, chunk << 20).expect("zero");
        }
        file.sync_all().expect("sync");
        file
    };
    let mut victims: Vec<PathBuf> = (0..phases / 2 * 5 + 1)
        .map(|i| {
            let path = dir.join(format!("victim-{i}"));
            make(&path, file_bytes);
            path
        })
        .collect();
    victims.reverse();
    let target = make(&dir.join("target"), 64 << 20);
    common::sync_dir(dir);
    settle_disk(dir);
    let block = [0x5au8; 4096];
    let mut offset = 0u64;
    run_phases(
        phases,
        phase,
        || {
            target.write_all_at(&block, offset).expect("write");
            target.sync_data().expect("fdatasync");
            offset = (offset + 4096) % (64 << 20);
        },
        move || match victims.pop() {
            Some(path) => {
                common::remove_scratch(&path).expect("unlink");
                common::sync_dir(path.parent().expect("parent"));
                true
            }
            None => false,
        },
    )
}

fn main() {
    let pool = payloads(4096, 12);
    let phases: u32 = if common::bench_mode() { 8 } else { 2 };
    let phase = Duration::from_millis(if common::bench_mode() { 1000 } else { 100 });
    let segments_wanted = (phases / 2 * 5 + 3) as usize;
    let dir = scratch_dir("retention");

    // Prefill: enough whole segments for every deleting phase.
    let fill_start = Instant::now();
    // Smoke runs (`cargo test --benches`) use 1 MiB segments.
    let segment_bytes = size(64 << 20, 1 << 20) as u64;
    let options = |sync_policy| LogOptions {
        segment_bytes,
        max_payload_bytes: 64 << 10,
        ..ours(sync_policy)
    };
    let (mut log, _) = Log::open(dir.path(), options(SyncPolicy::OsOnly)).expect("open");
    let mut i = 0;
    while log.reader().segments().len() < segments_wanted {
        let at = (i * 64) % pool.len();
        log.append_batch(&pool[at..at + 64]).expect("append");
        i += 1;
    }
    log.close().expect("close");
    let fill = fill_start.elapsed();

    let (mut log, _) = Log::open(dir.path(), options(group_commit())).expect("open");
    std::thread::sleep(Duration::from_secs(1)); // let the spare segment be prepared
    settle_disk(dir.path());
    let reader = log.reader();
    let mut n = 0usize;
    let mut ours = run_phases(
        phases,
        phase,
        || {
            let seq = log.append(&pool[n % pool.len()]).expect("append");
            log.wait_durable(seq).expect("durable");
            n += 1;
        },
        || {
            let segments = reader.segments();
            match segments.get(1).filter(|_| segments.len() > 2) {
                Some(next) => {
                    let report = reader.truncate_prefix(next.base()).expect("truncate");
                    report.segments_removed > 0
                }
                None => false,
            }
        },
    );
    log.close().expect("close");
    drop(dir);

    let floor_dir = scratch_dir("retention-floor");
    let mut raw = floor(floor_dir.path(), phases, phase, segment_bytes);

    if selected("t12_retention") {
        print_section(
            "t12_retention: durable append (group commit, closed loop) quiet vs deleting",
        );
        print_note(&format!(
            "prefilled {segments_wanted} segments of {} MiB in {:.1}s; {phases} alternating phases of {} ms",
            segment_bytes >> 20,
            fill.as_secs_f64(),
            phase.as_millis(),
        ));
        let (q, d) = report("ours durable append", &mut ours, "closed loop");
        let r = d.p999 as f64 / q.p999 as f64;
        print_ratio(
            "T12 p99.9 deleting/quiet",
            &fmt_ns(d.p999),
            &fmt_ns(q.p999),
            r,
            "<= 2x quiet",
            r <= 2.0,
        );
        let r99 = d.p99 as f64 / q.p99 as f64;
        print_note(&format!("p99 deleting/quiet = {r99:.2} (no target)"));
        let (q, d) = report("floor: pwrite 4 KiB + fdatasync", &mut raw, "back-to-back");
        print_note(&format!(
            "file-system floor p99.9 deleting/quiet = {:.2} (unlink + directory fsync of synced 64 MiB files)",
            d.p999 as f64 / q.p999 as f64
        ));
    }
}
