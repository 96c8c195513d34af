//! Simulated power loss: after a power failure at any moment, every record acknowledged as
//! durable is there, intact and in order, and nothing is returned that was never appended.
//!
//! The process-kill tests (`storage_crash.rs`) keep the page cache, so they never lose an
//! unsynced write. Here the workloads run on `sim_disk::SimDisk`, an `Io` seam over
//! a scratch directory that keeps a durable model beside the page cache (synced file
//! contents, synced directory entries, and the entry changes since). At random crash points
//! (seam operations of the workload's thread, and points between its steps) the disk
//! records its state; each state is turned into several on-disk images a power loss could
//! leave (format/recovery.md, "Fault model and media assumptions"): the page cache as a
//! process crash leaves it, only the synced data, and mixtures where every unsynced sector
//! is independently kept or dropped (so writes are dropped, reordered and torn at sector
//! granularity, sometimes inside a sector) and every unsynced directory change is
//! independently kept or lost (a rename atomically). Each image is opened and checked:
//!
//! * `segment log`: appends and batches under `EveryAppend`, group commit and `OsOnly`
//!   (with explicit syncs), 64 KiB segments so that rolls are frequent, prefix truncations,
//!   packings of sealed segments ([PACK-01] to [PACK-05]), rolls that fail on a full disk
//!   and are repeated once there is room ([ROLL-04]), clean closes and reopens, process
//!   crashes (`simulate_crash`) and reopens. A read-only
//!   follower on the unrecovered image returns only records appended with those sequences,
//!   contiguously. Opening in the default mode must succeed, or refuse with
//!   damage before the tail only where the image reorders unsynced writes (or, under group
//!   commit, where a sync raced with appends); such an image must then open in `PointInTime`
//!   mode. Either way: the start is the last acknowledged truncation or the one in flight,
//!   every acknowledged record at or above it is present with its payload, every record
//!   present is the one appended with that sequence, contiguously, and a further append
//!   gets the next sequence and reads back.
//! * `artifact store`: `LogStore` appends, with gaps in the append sequences (so
//!   `store.meta` gets runs), durability waits, clean closes; sealed segments' id indexes.
//!   Every acknowledged record is read back in order with its append sequence and found by
//!   id; the records beyond are a prefix of what was appended; a further append works.
//! * `checkpoints`: saves and deletions of a few keys. Each key loads as its last
//!   acknowledged checkpoint or the one being saved or deleted at the crash, never torn, and
//!   the directory lists without errors.
//!
//! This binary has no test harness (`harness = false`): it runs the three suites in
//! parallel and prints one summary line per suite and a total. `POWER_LOSS_STATES` sets how
//! many images (crash states) to check in all (default 30,000; a long mode is 1,000,000);
//! `POWER_LOSS_SEED` sets the seed (default fixed, so CI runs are reproducible up to the
//! timing of background threads), and `POWER_LOSS_ONLY=<suite>[:<run>]` repeats one suite or
//! one run of a failure report. Failing images are kept on disk and their paths printed.

mod sim_disk;
#[path = "../support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use esl_replay::checkpoint::{Checkpoint, CheckpointStore};
use esl_replay::record::{Criteria, JsonMap, ReadCursor, Record, RecordId};
use esl_replay::storage::codec::{START_FILE, StartMark};
use esl_replay::storage::{
    CorruptKind, Error, Io, Log, LogOptions, PackOutcome, Reader, RecoveryMode, Seq, SyncPolicy,
};
use esl_replay::store::{self, ArtifactReader, ArtifactStore, LogStore, dataset};
use time::OffsetDateTime;

use sim_disk::{CrashState, ImageInfo, Lie, Pick, SimDisk, fresh_dir};

use crate::support::storage::{
    COMPRESS_MIN, MAX_PAYLOAD, NoSyncIo, Rng, SEGMENT_BYTES, mix, scratch_dir,
};

const SEED_ENV: &str = "POWER_LOSS_SEED";
const STATES_ENV: &str = "POWER_LOSS_STATES";
const ONLY_ENV: &str = "POWER_LOSS_ONLY";
const DEFAULT_SEED: u64 = 0x5eed_0016;
const DEFAULT_STATES: u64 = 30_000;
/// Images built from each crash point: the page cache, the synced data, and mixtures.
const IMAGES_PER_POINT: u64 = 6;
/// A crash point is taken at each opportunity with this probability.
const CRASH_CHANCE: (u64, u64) = (1, 5);
/// Detailed reports (and kept images) of at most this many failures per suite.
const REPORTED_FAILURES: usize = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Suite {
    Log,
    Store,
    Checkpoints,
}

impl Suite {
    const ALL: [Suite; 3] = [Suite::Log, Suite::Store, Suite::Checkpoints];

    fn name(self) -> &'static str {
        match self {
            Suite::Log => "log",
            Suite::Store => "store",
            Suite::Checkpoints => "checkpoints",
        }
    }

    /// The share of the states this suite checks, in percent.
    fn share(self) -> u64 {
        match self {
            Suite::Log => 50,
            Suite::Store => 25,
            Suite::Checkpoints => 25,
        }
    }
}

/// What a suite did and found.
#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    points: u64,
    images: u64,
    reordered_images: u64,
    acked_checked: u64,
    acked_lost: u64,
    beyond_checked: u64,
    followed: u64,
    refusals: u64,
    /// Refusals of images whose unsynced writes were not reordered (a sync raced appends).
    refusals_racing: u64,
    failures: Vec<String>,
    failure_count: u64,
    /// Whether failing images are copied out for a report (not in the self-checks, whose
    /// lying disks fail on purpose).
    keeps_images: bool,
    /// What the workloads did (appends, rolls, truncations, closes, ...).
    workload: BTreeMap<&'static str, u64>,
    /// Crash points by the operation they interrupted.
    point_kinds: BTreeMap<&'static str, u64>,
}

/// Where a check happens, for failure reports.
struct Context<'a> {
    seed: u64,
    suite: Suite,
    run: u64,
    point: u64,
    what: &'a str,
    image: u64,
    pick: Pick,
}

impl Tally {
    fn fail(&mut self, context: &Context<'_>, image_dir: &Path, message: &str) {
        self.failure_count += 1;
        if self.failures.len() >= REPORTED_FAILURES {
            return;
        }
        let kept = if self.keeps_images {
            keep_image(image_dir).display().to_string()
        } else {
            "nowhere (a self-check)".to_owned()
        };
        self.failures.push(format!(
            "{message}\n    {SEED_ENV}={} {ONLY_ENV}={}:{} crash point {} ({}), image {} ({:?}), image kept at {kept}",
            context.seed,
            context.suite.name(),
            context.run,
            context.point,
            context.what,
            context.image,
            context.pick,
        ));
    }
}

fn keep_image(dir: &Path) -> PathBuf {
    let kept = tempfile::Builder::new()
        .prefix("esl-replay-power-loss-failure-")
        .tempdir()
        .expect("create a directory for the failing image")
        .keep();
    copy_tree(dir, &kept);
    kept
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).into_iter().flatten().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::create_dir_all(&target).expect("copy the failing image");
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy the failing image");
        }
    }
}

fn main() -> ExitCode {
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let states = std::env::var(STATES_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_STATES);
    let only = std::env::var(ONLY_ENV).ok();
    let (only_suite, only_run) = match only
        .as_deref()
        .map(|o| o.split_once(':').unwrap_or((o, "")))
    {
        Some((suite, run)) => (Some(suite.to_owned()), run.parse::<u64>().ok()),
        None => (None, None),
    };
    eprintln!("power loss: {SEED_ENV}={seed} {STATES_ENV}={states}");
    let started = Instant::now();
    let suites: Vec<Suite> = Suite::ALL
        .into_iter()
        .filter(|s| only_suite.as_deref().is_none_or(|o| o == s.name()))
        .collect();
    let results: Vec<(Suite, Tally, f64)> = std::thread::scope(|scope| {
        let handles: Vec<_> = suites
            .iter()
            .map(|&suite| {
                let target = if only_suite.is_some() {
                    states
                } else {
                    states * suite.share() / 100
                };
                scope.spawn(move || {
                    let started = Instant::now();
                    let tally = run_suite(seed, suite, target, only_run, Lie::None);
                    (suite, tally, started.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a suite panicked"))
            .collect()
    });
    let mut detected = true;
    if only_suite.is_none() {
        let tally = kill_then_reopen(seed);
        eprintln!(
            "power loss [kill, reopen, wait]: {} states, {} acknowledged records checked, {} lost, {} failures",
            tally.images, tally.acked_checked, tally.acked_lost, tally.failure_count
        );
        for failure in &tally.failures {
            eprintln!("  FAILED: {failure}");
        }
        detected &= tally.acked_lost == 0 && tally.failure_count == 0;
        for lie in [Lie::SegmentSyncs, Lie::DirectorySyncs] {
            let tally = run_suite(seed, Suite::Log, 1_000, None, lie);
            let caught = tally.acked_lost > 0 || tally.failure_count > 0;
            eprintln!(
                "power loss self-check: a disk that lies about {lie:?} is caught: {caught} ({} acknowledged records lost, {} failures in {} images)",
                tally.acked_lost, tally.failure_count, tally.images
            );
            detected &= caught;
        }
    }
    let mut total = Tally::default();
    for (suite, tally, seconds) in &results {
        eprintln!(
            "power loss [{}]: {} runs, {} crash points, {} states (images) opened ({} reordering), {} acknowledged records checked, {} lost, {} unacknowledged records checked, {} records read by followers before recovery, {} damage-before-tail refusals ({} where a sync raced appends, the rest in images with reordered writes; all recovered in PointInTime mode), {} failures, {seconds:.1} s",
            suite.name(),
            tally.runs,
            tally.points,
            tally.images,
            tally.reordered_images,
            tally.acked_checked,
            tally.acked_lost,
            tally.beyond_checked,
            tally.followed,
            tally.refusals,
            tally.refusals_racing,
            tally.failure_count
        );
        eprintln!(
            "    workload: {}; crash points: {}",
            render(&tally.workload),
            render(&tally.point_kinds)
        );
        for failure in &tally.failures {
            eprintln!("  FAILED: {failure}");
        }
        total.points += tally.points;
        total.images += tally.images;
        total.acked_checked += tally.acked_checked;
        total.acked_lost += tally.acked_lost;
        total.refusals += tally.refusals;
        total.failure_count += tally.failure_count;
    }
    eprintln!(
        "power loss: seed {seed}: {} crash states tried from {} crash points, {} acknowledged records checked, {} acknowledged records lost, {} damage-before-tail refusals, {} failures in {:.1} s",
        total.images,
        total.points,
        total.acked_checked,
        total.acked_lost,
        total.refusals,
        total.failure_count,
        started.elapsed().as_secs_f64()
    );
    if total.failure_count == 0 && total.acked_lost == 0 && total.images > 0 && detected {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn render(counts: &BTreeMap<&'static str, u64>) -> String {
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
    parts.join(", ")
}

fn run_suite(seed: u64, suite: Suite, target: u64, only_run: Option<u64>, lie: Lie) -> Tally {
    let mut tally = Tally {
        keeps_images: lie == Lie::None,
        ..Tally::default()
    };
    let image_root = scratch_dir();
    let mut run = only_run.unwrap_or(0);
    while tally.images < target {
        let run_seed = mix(seed ^ mix(suite as u64 + 1) ^ run.wrapping_mul(0x9E37_79B9));
        let mut harness = Harness {
            seed,
            suite,
            run,
            rng: Rng::new(run_seed),
            image_dir: image_root.path().join("image"),
            tally: &mut tally,
        };
        match suite {
            Suite::Log => log_run(&mut harness, run_seed, lie),
            Suite::Store => store_run(&mut harness, run_seed),
            Suite::Checkpoints => checkpoint_run(&mut harness, run_seed),
        }
        tally.runs += 1;
        if only_run.is_some() {
            break;
        }
        run += 1;
    }
    tally
}

/// One run's image generator and counters.
struct Harness<'a> {
    seed: u64,
    suite: Suite,
    run: u64,
    rng: Rng,
    image_dir: PathBuf,
    tally: &'a mut Tally,
}

/// The outcome of checking one image.
#[derive(Debug, Default)]
struct Checked {
    acked: u64,
    beyond: u64,
    lost: u64,
    refused: bool,
    /// Records a follower read before recovery.
    followed: u64,
}

impl Harness<'_> {
    /// Builds the images of each crash state and checks them with `check`.
    fn check_states<P: std::fmt::Debug>(
        &mut self,
        states: Vec<CrashState<P>>,
        mut check: impl FnMut(&Path, &P, Pick, ImageInfo) -> Result<Checked, String>,
    ) {
        for state in states {
            self.tally.points += 1;
            *self
                .tally
                .point_kinds
                .entry(point_kind(&state.what))
                .or_default() += 1;
            for image in 0..IMAGES_PER_POINT {
                let pick = match image {
                    0 => Pick::AllNew,
                    1 => Pick::AllOld,
                    _ => Pick::Mixed {
                        new_per_mille: self.rng.below(1001),
                        tear_per_mille: if self.rng.chance(1, 4) { 100 } else { 0 },
                    },
                };
                fresh_dir(&self.image_dir);
                let before = self.rng.clone();
                let info = state.materialize(&mut self.rng, pick, &self.image_dir);
                self.tally.images += 1;
                self.tally.reordered_images += u64::from(info.reordered);
                let message = match check(&self.image_dir, &state.progress, pick, info) {
                    Ok(checked) => {
                        self.tally.acked_checked += checked.acked;
                        self.tally.beyond_checked += checked.beyond;
                        self.tally.followed += checked.followed;
                        self.tally.acked_lost += checked.lost;
                        self.tally.refusals += u64::from(checked.refused);
                        self.tally.refusals_racing += u64::from(checked.refused && !info.reordered);
                        if checked.lost == 0 {
                            continue;
                        }
                        format!(
                            "{} acknowledged records lost ({:?})",
                            checked.lost, state.progress
                        )
                    }
                    Err(message) => format!("{message} ({:?})", state.progress),
                };
                // The check changed the image (recovery, a probe append): rebuild it as it was.
                fresh_dir(&self.image_dir);
                state.materialize(&mut before.clone(), pick, &self.image_dir);
                let context = Context {
                    seed: self.seed,
                    suite: self.suite,
                    run: self.run,
                    point: state.point,
                    what: &state.what,
                    image,
                    pick,
                };
                self.tally.fail(&context, &self.image_dir, &message);
            }
        }
    }
}

/// The kind of operation a crash point interrupted, from its description.
fn point_kind(what: &str) -> &'static str {
    const KINDS: [(&str, &str); 9] = [
        ("write of", "before a write"),
        ("sync of directory", "before a directory sync"),
        ("sync of", "before a file sync"),
        ("rename", "before a rename"),
        ("link", "before a link"),
        ("removal", "before a removal"),
        ("preallocation", "before a preallocation"),
        ("closed", "after a clean close"),
        ("killed", "after a process crash"),
    ];
    KINDS
        .iter()
        .find(|(prefix, _)| what.starts_with(prefix))
        .map_or("between steps", |(_, kind)| kind)
}

impl Harness<'_> {
    fn count(&mut self, what: &'static str, n: u64) {
        *self.tally.workload.entry(what).or_default() += n;
    }
}

/// Log options of the small logs, over `io`.
fn log_options(
    io: Arc<dyn Io>,
    sync_policy: SyncPolicy,
    recovery_mode: RecoveryMode,
) -> LogOptions {
    LogOptions {
        segment_bytes: SEGMENT_BYTES,
        max_payload_bytes: MAX_PAYLOAD,
        compress_min_bytes: Some(COMPRESS_MIN),
        sync_policy,
        recovery_mode,
        // Every path of the engine under power loss, recycled segments included [SEG-10].
        recycle_segments: true,
        io,
        ..LogOptions::default()
    }
}

/// Options for opening an image: no syncs needed (the image is checked, then thrown away).
fn image_options(recovery_mode: RecoveryMode) -> LogOptions {
    log_options(Arc::new(NoSyncIo), SyncPolicy::OsOnly, recovery_mode)
}

fn pick_policy(rng: &mut Rng) -> SyncPolicy {
    match rng.below(3) {
        0 => SyncPolicy::EveryAppend,
        1 => SyncPolicy::default(),
        _ => SyncPolicy::OsOnly,
    }
}

/// Whether a sync may run on another thread while the workload appends: then a synced
/// image may itself hold a frame written after one that did not make it (as a real
/// `fdatasync` racing with appends can leave).
fn syncs_race_appends(policy: SyncPolicy) -> bool {
    matches!(
        policy,
        SyncPolicy::GroupCommit { .. } | SyncPolicy::Periodic { .. }
    )
}

/// Whether the default mode may refuse this image with damage before the tail.
fn refusal_allowed(policy: SyncPolicy, pick: Pick, info: ImageInfo) -> bool {
    pick != Pick::AllNew && (info.reordered || syncs_race_appends(policy))
}

// ---------------------------------------------------------------------------------------
// The segment log.

/// What the log workload had been told when the power failed.
#[derive(Clone, Debug)]
struct LogProgress {
    /// Every sequence below this was acknowledged durable.
    acked: u64,
    /// No sequence at or above this was ever handed to `append`.
    attempted: u64,
    /// The start after the last truncation that returned.
    start_acked: u64,
    /// The largest start any truncation was asked for (one may be in flight).
    start_requested: u64,
}

impl LogProgress {
    /// A new log: nothing appended, acknowledged or truncated.
    const FRESH: LogProgress = LogProgress {
        acked: 1,
        attempted: 1,
        start_acked: 1,
        start_requested: 1,
    };
}

const LOG_STEPS: u64 = 240;

/// The payload appended as `seq` in the run with `seed`: 200 to 4,000 bytes, half of them
/// compressible, so that a 64 KiB segment holds a few dozen records and rolls are frequent.
fn log_payload(seed: u64, seq: u64) -> Vec<u8> {
    let tag = mix(seed ^ seq.wrapping_mul(0x2545_F491_4F6C_DD1D));
    support::storage::payload_of_len(tag, 200 + (tag >> 8) as usize % 3800)
}

fn log_run(harness: &mut Harness<'_>, seed: u64, lie: Lie) {
    let policy = pick_policy(&mut harness.rng);
    let disk_dir = scratch_dir();
    let disk = Arc::new(SimDisk::new(
        disk_dir.path(),
        harness.rng.next_u64(),
        CRASH_CHANCE,
        LogProgress::FRESH,
    ));
    let options = log_options(disk.clone(), policy, RecoveryMode::TolerateTornTail);
    let dir = disk_dir.path().join("log");
    let mut log = Some(
        Log::open(&dir, options.clone())
            .expect("open the simulated log")
            .0,
    );
    disk.lie(lie);
    // Followers are checked on honest disks only: the self-check's lying disks leave images
    // no real power loss can (a sealed segment whose successor's entry is lost while later
    // ones survive), on which a follower does not return (reported separately).
    let follow = lie == Lie::None;
    let run = LogCheck {
        seed,
        policy,
        follow,
    };
    let check = |image: &Path, progress: &LogProgress, pick, info| {
        check_log_image(&image.join("log"), progress, pick, info, run)
    };
    let every_append = policy == SyncPolicy::EveryAppend;
    harness.count(
        match policy {
            SyncPolicy::EveryAppend => "runs under EveryAppend",
            SyncPolicy::OsOnly => "runs under OsOnly",
            _ => "runs under GroupCommit",
        },
        1,
    );
    for step in 0..LOG_STEPS {
        let current = log.as_mut().expect("the log is open");
        let next = current.next_seq().0;
        let segment = current.active_segment();
        match harness.rng.below(100) {
            0..=44 => {
                disk.progress(|p| p.attempted = next + 1);
                let seq = current.append(&log_payload(seed, next)).expect("append");
                assert_eq!(seq.0, next, "sequences are contiguous");
                harness.count("appends", 1);
                if every_append {
                    disk.progress(|p| p.acked = next + 1);
                }
            }
            45..=64 => {
                let count = harness.rng.range(1, 9);
                let payloads: Vec<Vec<u8>> =
                    (next..next + count).map(|s| log_payload(seed, s)).collect();
                disk.progress(|p| p.attempted = next + count);
                let range = current.append_batch(&payloads).expect("append a batch");
                assert_eq!(range, Seq(next)..Seq(next + count));
                harness.count("batch appends", 1);
                if every_append {
                    disk.progress(|p| p.acked = next + count);
                }
            }
            65..=79 if next > 1 => {
                if harness.rng.chance(1, 2) {
                    current.sync().expect("sync");
                } else {
                    current
                        .wait_durable(Seq(next - 1))
                        .expect("wait for durability");
                }
                disk.progress(|p| p.acked = p.acked.max(next));
                harness.count("syncs and durability waits", 1);
            }
            80..=87 => {
                let first = current.reader().first_seq().0;
                let before = harness.rng.range(first, next + 1);
                disk.progress(|p| p.start_requested = p.start_requested.max(before));
                // Half of them from a follower, as retention in another process truncates:
                // it cannot reach the writer's sync thread, whose rolls may be unfinished.
                let report = if harness.rng.chance(1, 2) {
                    current
                        .flush()
                        .expect("write the staged frames for the follower");
                    harness.count("prefix truncations from a follower", 1);
                    Reader::open(&dir, &options)
                        .expect("open a follower")
                        .truncate_prefix(Seq(before))
                } else {
                    current.truncate_prefix(Seq(before))
                }
                .expect("truncate the prefix");
                disk.progress(|p| p.start_acked = p.start_acked.max(before));
                harness.count("prefix truncations", 1);
                harness.count("segments truncated away", report.segments_removed as u64);
                harness.count("segment files kept for reuse", report.recycled as u64);
            }
            88..=89 => {
                // A process crash (the page cache survives) and a reopen: recovery finds every
                // record, durable or not, and must not call the unsynced ones durable.
                log.take().expect("the log is open").simulate_crash();
                disk.crash_point(&format!("killed after step {step}"));
                log = Some(
                    Log::open(&dir, options.clone())
                        .expect("reopen after a kill")
                        .0,
                );
                harness.count("process crashes and reopens", 1);
            }
            90..=93 => {
                log.take()
                    .expect("the log is open")
                    .close()
                    .expect("close cleanly");
                disk.progress(|p| p.acked = next);
                disk.crash_point(&format!("closed after step {step}"));
                log = Some(Log::open(&dir, options.clone()).expect("reopen").0);
                harness.count("clean closes and reopens", 1);
            }
            94..=96 => {
                // Packing rewrites sealed segments whose roll is durable [PACK-01]: a power
                // loss at any point of it must leave every record as it was.
                let packed = current.pack_sealed().expect("pack sealed segments");
                let done = packed
                    .iter()
                    .filter(|(_, o)| matches!(o, PackOutcome::Packed { .. }))
                    .count();
                harness.count("segments packed", done as u64);
            }
            97..=98 if follow => {
                // What a follower counts as durable, from the writer's watermark file or its
                // own sync [META-04], a power loss must keep: a forwarder delivers it.
                current
                    .flush()
                    .expect("write the staged frames for the follower");
                let follower = Reader::open(&dir, &options).expect("open a follower");
                let durable = if step % 2 == 0 {
                    harness.count("watermark files read by followers", 1);
                    follower.durable_seq()
                } else {
                    harness.count("syncs by followers", 1);
                    follower.sync()
                }
                .expect("ask a follower what is durable");
                disk.progress(|p| p.acked = p.acked.max(durable.0));
            }
            _ => {
                // A full disk: appends go on until a roll needs a new segment file, which
                // fails with every record before it durable [ROLL-04]; the disk then has room
                // again and the next append repeats the roll from its successor.
                disk.set_full(true);
                for _ in 0..100 {
                    let next = current.next_seq().0;
                    disk.progress(|p| p.attempted = next + 1);
                    match current.append(&log_payload(seed, next)) {
                        Ok(seq) => assert_eq!(seq.0, next, "sequences are contiguous"),
                        Err(Error::Io { source, .. })
                            if source.raw_os_error() == Some(libc::ENOSPC) =>
                        {
                            assert_eq!(
                                current.next_seq().0,
                                next,
                                "a failed roll takes no sequence"
                            );
                            disk.progress(|p| p.acked = p.acked.max(next));
                            harness.count("rolls failed on a full disk", 1);
                            // Room again: the next append repeats the roll from its
                            // successor, and the power fails before that roll's syncs.
                            disk.set_full(false);
                            current
                                .append(&log_payload(seed, next))
                                .expect("append after a failed roll");
                            if every_append {
                                disk.progress(|p| p.acked = next + 1);
                            }
                            disk.crash_now("after a roll that repeated a failed one");
                            break;
                        }
                        Err(error) => panic!("append on a full disk: {error}"),
                    }
                    if every_append {
                        disk.progress(|p| p.acked = next + 1);
                    }
                    if current.active_segment() != segment {
                        // The spare was ready before the disk filled.
                        break;
                    }
                }
                disk.set_full(false);
            }
        }
        if log.as_ref().is_some_and(|l| l.active_segment() != segment) {
            harness.count("rolls", 1);
        }
        disk.crash_point(&format!("after step {step}"));
        harness.check_states(disk.take_crashes(), check);
    }
    if let Some(open) = log.take() {
        let next = open.next_seq().0;
        open.close().expect("close cleanly");
        disk.progress(|p| p.acked = next);
    }
    disk.crash_now("after the final close");
    harness.check_states(disk.take_crashes(), check);
}

/// A writer killed with appends not yet synced, reopened, asked to wait for durability and
/// then powered off: the wait must have made the records it acknowledged durable [REC-07].
fn kill_then_reopen(seed: u64) -> Tally {
    let mut tally = Tally {
        keeps_images: true,
        ..Tally::default()
    };
    let image_root = scratch_dir();
    let mut harness = Harness {
        seed,
        suite: Suite::Log,
        run: u64::MAX,
        rng: Rng::new(seed),
        image_dir: image_root.path().join("image"),
        tally: &mut tally,
    };
    for policy in [SyncPolicy::OsOnly, SyncPolicy::default()] {
        for roll in [false, true] {
            let disk_dir = scratch_dir();
            let disk = Arc::new(SimDisk::new(
                disk_dir.path(),
                seed,
                (0, 1),
                LogProgress::FRESH,
            ));
            let options = log_options(disk.clone(), policy, RecoveryMode::TolerateTornTail);
            let dir = disk_dir.path().join("log");
            let mut log = Log::open(&dir, options.clone()).expect("open").0;
            let first_segment = log.active_segment();
            let mut seq = 1;
            // Fill the first segment (and, with `roll`, go on into a second one), syncing
            // only what is in the first.
            while log.active_segment() == first_segment || (roll && seq % 7 != 0) {
                disk.progress(|p| p.attempted = seq + 1);
                assert_eq!(log.append(&log_payload(seed, seq)).expect("append").0, seq);
                seq += 1;
                if !roll && seq == 20 {
                    log.sync().expect("sync");
                    disk.progress(|p| p.acked = 20);
                    break;
                }
            }
            for _ in 0..5 {
                disk.progress(|p| p.attempted = seq + 1);
                log.append(&log_payload(seed, seq)).expect("append");
                seq += 1;
            }
            log.flush().unwrap();
            log.simulate_crash();
            let log = Log::open(&dir, options).expect("reopen after a kill").0;
            log.wait_durable(Seq(seq - 1)).expect("wait for durability");
            disk.progress(|p| p.acked = seq);
            disk.crash_now(&format!("killed, reopened and waited under {policy:?}"));
            harness.check_states(disk.take_crashes(), |image, progress, pick, info| {
                let run = LogCheck {
                    seed,
                    policy,
                    follow: true,
                };
                check_log_image(&image.join("log"), progress, pick, info, run)
            });
            log.close().expect("close");
        }
    }
    tally
}

/// How a run's log images are checked.
#[derive(Clone, Copy, Debug)]
struct LogCheck {
    /// The run's payload seed.
    seed: u64,
    policy: SyncPolicy,
    /// Whether a follower reads the image before recovery.
    follow: bool,
}

fn check_log_image(
    dir: &Path,
    progress: &LogProgress,
    pick: Pick,
    info: ImageInfo,
    run: LogCheck,
) -> Result<Checked, String> {
    let followed = if run.follow {
        follow_unrecovered(dir, progress, run.seed)?
    } else {
        0
    };
    let mut checked = recover_log_image(dir, progress, run, pick, info)?;
    checked.followed = followed;
    Ok(checked)
}

fn recover_log_image(
    dir: &Path,
    progress: &LogProgress,
    run: LogCheck,
    pick: Pick,
    info: ImageInfo,
) -> Result<Checked, String> {
    let LogCheck { seed, policy, .. } = run;
    match Log::open(dir, image_options(RecoveryMode::TolerateTornTail)) {
        Ok((_, report)) if report.start_beyond_end.is_some() => Err(format!(
            "the start file said {:?}, beyond the recovered end {}: a truncation made it durable before the records below it",
            report.start_beyond_end, report.next_seq
        )),
        Ok((log, _)) => verify_log(dir, log, progress, seed),
        Err(Error::Corrupt {
            segment,
            offset,
            kind: CorruptKind::DamagedBeforeTail { next_valid },
        }) => {
            if !refusal_allowed(policy, pick, info) {
                return Err(format!(
                    "the default mode refused damage before the tail (segment {segment}, offset {offset}, next valid frame at {next_valid}) in an image that reorders nothing"
                ));
            }
            let (log, report) = Log::open(dir, image_options(RecoveryMode::PointInTime))
                .map_err(|e| format!("PointInTime mode could not open a refused image: {e}"))?;
            if report.torn_tail.is_none() {
                return Err("PointInTime mode opened a refused image without cutting it".into());
            }
            let mut checked = verify_log(dir, log, progress, seed)?;
            checked.refused = true;
            Ok(checked)
        }
        Err(error) => Err(format!("opening the image failed: {error}")),
    }
}

/// A read-only follower on the image before any recovery returns only records appended
/// with those sequences, contiguously.
fn follow_unrecovered(dir: &Path, progress: &LogProgress, seed: u64) -> Result<u64, String> {
    let Ok(reader) = Reader::open(dir, &image_options(RecoveryMode::TolerateTornTail)) else {
        return Ok(0); // no log to follow (its directory entry was lost), or nothing in it yet
    };
    let first = reader.first_seq().0;
    let records = reader
        .iter(Seq(first))
        .map_err(|e| format!("a follower cannot seek to {first}: {e}"))?;
    let mut expected = first;
    for record in records {
        let (seq, payload) = record.map_err(|e| format!("a follower failed at {expected}: {e}"))?;
        if seq.0 != expected || seq.0 >= progress.attempted || payload != log_payload(seed, seq.0) {
            return Err(format!(
                "a follower read sequence {} (expected {expected}) with bytes never appended there",
                seq.0
            ));
        }
        expected += 1;
    }
    Ok(expected - first)
}

fn verify_log(
    dir: &Path,
    mut log: Log,
    progress: &LogProgress,
    seed: u64,
) -> Result<Checked, String> {
    let reader = log.reader();
    let first = reader.first_seq().0;
    let next = reader.next_seq().map_err(|e| e.to_string())?.0;
    let mut checked = Checked::default();
    if first != progress.start_acked && first != progress.start_requested {
        // A start between the two would be a truncation nobody asked for.
        return Err(format!(
            "the log starts at {first}, neither the acknowledged start {} nor the requested {}",
            progress.start_acked, progress.start_requested
        ));
    }
    if let Ok(bytes) = std::fs::read(dir.join(START_FILE)) {
        let start = StartMark::decode(&bytes)
            .map_err(|e| format!("the start file is damaged: {e}"))?
            .start;
        if start > next {
            return Err(format!(
                "the start file says {start}, beyond the recovered end {next}"
            ));
        }
    }
    if next > progress.attempted {
        return Err(format!(
            "the log ends at {next}, but only sequences below {} were ever appended",
            progress.attempted
        ));
    }
    let must_from = first.max(progress.start_acked);
    checked.lost = progress.acked.saturating_sub(next.max(must_from));
    let mut cursor = reader.cursor(Seq(first)).map_err(|e| e.to_string())?;
    let mut expected = first;
    loop {
        let found = cursor
            .next()
            .map_err(|e| format!("reading at {expected}: {e}"))?;
        let Some(found) = found else { break };
        if found.seq.0 != expected {
            return Err(format!(
                "read sequence {} where {expected} was due",
                found.seq.0
            ));
        }
        if found.payload != log_payload(seed, expected).as_slice() {
            if expected < progress.acked {
                checked.lost += 1;
            } else {
                return Err(format!(
                    "record {expected} holds bytes never appended as {expected}"
                ));
            }
        }
        if expected < progress.acked {
            checked.acked += 1;
        } else {
            checked.beyond += 1;
        }
        expected += 1;
    }
    if expected != next {
        return Err(format!(
            "read up to {expected}, but the log says it ends at {next}"
        ));
    }
    let probe = b"appended after recovery";
    let seq = log
        .append(probe)
        .map_err(|e| format!("append after recovery: {e}"))?;
    if seq.0 != next {
        return Err(format!(
            "the append after recovery got {}, not {next}",
            seq.0
        ));
    }
    if reader.get(seq).map_err(|e| e.to_string())?.as_deref() != Some(&probe[..]) {
        return Err("the append after recovery does not read back".into());
    }
    log.close()
        .map_err(|e| format!("close after recovery: {e}"))?;
    Ok(checked)
}

// ---------------------------------------------------------------------------------------
// The artifact store.

#[derive(Clone, Debug)]
struct StoreProgress {
    /// Records `[0, acked)` of the run's list were acknowledged durable.
    acked: usize,
    /// Records at or beyond this index were never handed to the store.
    attempted: usize,
}

const STORE_STEPS: u64 = 200;

fn store_record(seed: u64, n: u64, append_sequence: u64) -> Record {
    let id = RecordId::new(format!("power-loss-{seed:016x}-{n}")).expect("a valid id");
    let stored_at = OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_800_000_000);
    Record::from_envelope(dataset::envelope(n), id, stored_at, append_sequence)
        .expect("a valid record")
}

fn store_run(harness: &mut Harness<'_>, seed: u64) {
    let policy = if harness.rng.chance(1, 2) {
        SyncPolicy::EveryAppend
    } else {
        SyncPolicy::default()
    };
    let disk_dir = scratch_dir();
    let disk = Arc::new(SimDisk::new(
        disk_dir.path(),
        harness.rng.next_u64(),
        CRASH_CHANCE,
        StoreProgress {
            acked: 0,
            attempted: 0,
        },
    ));
    let options = log_options(disk.clone(), policy, RecoveryMode::TolerateTornTail);
    let root = disk_dir.path().join("store");
    let mut records: Vec<Record> = Vec::new();
    let mut store = Some(LogStore::open_with(&root, options.clone()).expect("open the store"));
    for step in 0..STORE_STEPS {
        let current = store.as_mut().expect("the store is open");
        let segments = current.log_reader().segments().len();
        match harness.rng.below(100) {
            0..=59 => {
                let count = harness.rng.range(1, 13);
                let mut last = records.last().map_or(0, Record::append_sequence);
                let mut batch = Vec::new();
                for _ in 0..count {
                    // Now and then a gap, as imported reference data has: store.meta gets a
                    // run (sometimes before the very first record).
                    last += if harness.rng.chance(1, 12) {
                        harness.rng.range(2, 40)
                    } else {
                        1
                    };
                    batch.push(store_record(
                        seed,
                        records.len() as u64 + batch.len() as u64,
                        last,
                    ));
                }
                records.extend(batch.iter().cloned());
                let attempted = records.len();
                disk.progress(|p| p.attempted = attempted);
                current.append_records(&batch).expect("append records");
                harness.count("record batches", 1);
                if policy == SyncPolicy::EveryAppend {
                    disk.progress(|p| p.acked = attempted);
                }
            }
            60..=79 => {
                let attempted = records.len();
                if harness.rng.chance(1, 2) {
                    current.sync().expect("sync the store");
                } else {
                    current.wait_durable().expect("wait for durability");
                }
                disk.progress(|p| p.acked = attempted);
                harness.count("syncs and durability waits", 1);
            }
            80..=85 => {
                store
                    .take()
                    .expect("the store is open")
                    .close()
                    .expect("close the store");
                let attempted = records.len();
                disk.progress(|p| p.acked = attempted);
                disk.crash_point(&format!("closed after step {step}"));
                store =
                    Some(LogStore::open_with(&root, options.clone()).expect("reopen the store"));
                harness.count("clean closes and reopens", 1);
            }
            _ => {}
        }
        if let Some(open) = &store {
            let rolled = open.log_reader().segments().len().saturating_sub(segments);
            harness.count("rolls", rolled as u64);
        }
        disk.crash_point(&format!("after step {step}"));
        let states = disk.take_crashes();
        harness.check_states(states, |image, progress, pick, info| {
            check_store_image(&image.join("store"), progress, &records, policy, pick, info)
        });
    }
    if let Some(open) = store.take() {
        open.close().expect("close the store");
        let attempted = records.len();
        disk.progress(|p| p.acked = attempted);
    }
    disk.crash_now("after the final close");
    let states = disk.take_crashes();
    harness.check_states(states, |image, progress, pick, info| {
        check_store_image(&image.join("store"), progress, &records, policy, pick, info)
    });
}

fn store_options(recovery_mode: RecoveryMode) -> LogOptions {
    image_options(recovery_mode)
}

fn check_store_image(
    root: &Path,
    progress: &StoreProgress,
    records: &[Record],
    policy: SyncPolicy,
    pick: Pick,
    info: ImageInfo,
) -> Result<Checked, String> {
    match LogStore::open_with(root, store_options(RecoveryMode::TolerateTornTail)) {
        Ok(store) => verify_store(store, progress, records),
        Err(store::Error::Storage(Error::Corrupt {
            segment,
            offset,
            kind: CorruptKind::DamagedBeforeTail { .. },
        })) => {
            if !refusal_allowed(policy, pick, info) {
                return Err(format!(
                    "the default mode refused damage before the tail (segment {segment}, offset {offset}) in an image that reorders nothing"
                ));
            }
            let store = LogStore::open_with(root, store_options(RecoveryMode::PointInTime))
                .map_err(|e| format!("PointInTime mode could not open a refused store: {e}"))?;
            let mut checked = verify_store(store, progress, records)?;
            checked.refused = true;
            Ok(checked)
        }
        Err(error) => Err(format!("opening the store image failed: {error}")),
    }
}

fn verify_store(
    mut store: LogStore,
    progress: &StoreProgress,
    records: &[Record],
) -> Result<Checked, String> {
    let mut checked = Checked::default();
    let found = store
        .read_from_cursor(&ReadCursor::new(0, None), usize::MAX, &Criteria::default())
        .map_err(|e| format!("reading the store: {e}"))?;
    if found.len() > progress.attempted {
        return Err(format!(
            "the store returned {} records, but only {} were appended",
            found.len(),
            progress.attempted
        ));
    }
    for (i, record) in found.iter().enumerate() {
        if *record != records[i] {
            if i < progress.acked {
                checked.lost += 1;
                continue;
            }
            return Err(format!(
                "record {i} (append sequence {}) is not the record appended there (append sequence {})",
                record.append_sequence(),
                records[i].append_sequence()
            ));
        }
        if i < progress.acked {
            checked.acked += 1;
        } else {
            checked.beyond += 1;
        }
    }
    checked.lost += progress.acked.saturating_sub(found.len()) as u64;
    // Lookups by id: the last acknowledged record, the last present, and every 16th.
    let mut probes: BTreeSet<usize> = (0..found.len()).step_by(16).collect();
    probes.extend(progress.acked.checked_sub(1));
    probes.extend(found.len().checked_sub(1));
    for i in probes.into_iter().filter(|i| *i < found.len()) {
        let by_id = store
            .read_by_id(records[i].id())
            .map_err(|e| format!("looking up record {i} by id: {e}"))?;
        if by_id.as_ref() != Some(&records[i]) {
            return Err(format!("record {i} is not found by its id"));
        }
    }
    // A further write continues the append sequences (a run recorded for records a power
    // loss dropped may leave a gap, never a repeat).
    let last = found.last().map_or(0, Record::append_sequence);
    let ids = store
        .write_batch(vec![dataset::envelope(7)])
        .map_err(|e| format!("write after recovery: {e}"))?;
    let written = ids
        .first()
        .map(|id| store.read_by_id(id))
        .transpose()
        .map_err(|e| e.to_string())?
        .flatten()
        .ok_or("the record written after recovery is not found by id")?;
    if written.append_sequence() <= last {
        return Err(format!(
            "the record written after recovery got append sequence {}, not above {last}",
            written.append_sequence()
        ));
    }
    store
        .close()
        .map_err(|e| format!("close after recovery: {e}"))?;
    Ok(checked)
}

// ---------------------------------------------------------------------------------------
// Checkpoints.

const KEYS: [&str; 3] = ["worker-a", "worker-b", "worker/c with spaces"];
const CHECKPOINT_STEPS: u64 = 60;

/// A key's checkpoint: its last acknowledged version (`None`: absent) and the one being
/// saved or deleted when the power failed.
#[derive(Clone, Debug, Default)]
struct KeyProgress {
    acked: Option<u64>,
    in_flight: Option<Option<u64>>,
}

#[derive(Clone, Debug, Default)]
struct CheckpointProgress {
    keys: [KeyProgress; 3],
}

/// Version `v` of a key's checkpoint; its metadata makes the file span several sectors.
fn checkpoint(key: &str, version: u64) -> Checkpoint {
    let mut metadata = JsonMap::new();
    metadata.insert("version".into(), version.into());
    let pad = (version * 617) % 3000;
    metadata.insert(
        "note".into(),
        format!("{version:x}-").repeat(pad as usize / 4 + 1).into(),
    );
    let saved_at = OffsetDateTime::UNIX_EPOCH
        + time::Duration::seconds(1_800_000_000)
        + time::Duration::milliseconds(i64::try_from(version).unwrap_or(0));
    Checkpoint::new(key, ReadCursor::new(version, None), saved_at, metadata)
        .expect("a valid checkpoint")
}

fn checkpoint_run(harness: &mut Harness<'_>, _seed: u64) {
    let disk_dir = scratch_dir();
    let disk = Arc::new(SimDisk::new(
        disk_dir.path(),
        harness.rng.next_u64(),
        CRASH_CHANCE,
        CheckpointProgress::default(),
    ));
    let dir = disk_dir.path().join("checkpoints");
    let store =
        CheckpointStore::open_with_io(&dir, disk.clone()).expect("open the checkpoint store");
    let mut version = 0;
    for step in 0..CHECKPOINT_STEPS {
        let k = harness.rng.below(KEYS.len() as u64) as usize;
        let key = KEYS[k];
        if harness.rng.chance(1, 6) {
            disk.progress(|p| p.keys[k].in_flight = Some(None));
            store.delete(key).expect("delete a checkpoint");
            harness.count("deletions", 1);
            disk.progress(|p| p.keys[k] = KeyProgress::default());
        } else {
            version += 1;
            disk.progress(|p| p.keys[k].in_flight = Some(Some(version)));
            store
                .save(&checkpoint(key, version))
                .expect("save a checkpoint");
            harness.count("saves", 1);
            disk.progress(|p| {
                p.keys[k] = KeyProgress {
                    acked: Some(version),
                    in_flight: None,
                }
            });
        }
        disk.crash_point(&format!("after step {step}"));
        let states = disk.take_crashes();
        harness.check_states(states, |image, progress, _, _| {
            check_checkpoints(&image.join("checkpoints"), progress)
        });
    }
}

fn check_checkpoints(dir: &Path, progress: &CheckpointProgress) -> Result<Checked, String> {
    let store = CheckpointStore::open(dir).map_err(|e| format!("open the checkpoints: {e}"))?;
    let mut checked = Checked::default();
    let mut present = 0;
    for (k, key) in KEYS.iter().enumerate() {
        let state = &progress.keys[k];
        let loaded = store
            .load(key)
            .map_err(|e| format!("loading {key:?}: {e}"))?;
        let version = loaded.as_ref().map(|c| c.cursor().last_consumed_sequence());
        let allowed = version == state.acked || state.in_flight == Some(version);
        if !allowed && state.acked.is_some() {
            // The acknowledged checkpoint is gone or replaced by something never saved.
            checked.lost += 1;
            continue;
        }
        if !allowed {
            return Err(format!(
                "{key:?} loads as version {version:?}; acknowledged {:?}, in flight {:?}",
                state.acked, state.in_flight
            ));
        }
        if let (Some(found), Some(v)) = (&loaded, version) {
            let expected = checkpoint(key, v);
            if found.metadata() != expected.metadata() || found.key() != expected.key() {
                return Err(format!("{key:?} version {v} does not hold what was saved"));
            }
            present += 1;
        }
        checked.acked += u64::from(state.acked.is_some());
    }
    let listed = store
        .list()
        .map_err(|e| format!("listing the checkpoints: {e}"))?;
    if listed.len() != present {
        return Err(format!(
            "{} checkpoints listed, {present} loaded",
            listed.len()
        ));
    }
    Ok(checked)
}
