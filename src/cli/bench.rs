//! `bench compare`: the segment-log store against SQLite on the same generated dataset, in
//! one run, printed as a table of figures and ratios against the targets of
//! `performance.md` (T2, T5, T6, T6b, T7, T9).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Subcommand};

use super::Outcome;
use esl_replay::record::{Criteria, ReadCursor, RecordId, RecordView};
use esl_replay::storage::{LogOptions, Seq, SyncPolicy};
use esl_replay::store::{
    self, ArtifactReader, ArtifactStore, LogStore, SqliteOptions, SqliteStore, SqliteSync, dataset,
};

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Compare the segment-log store with SQLite on the same dataset.
    Compare(CompareArgs),
    /// Time prune planning and applying on a large store, and a concurrent writer's append
    /// latency during the prune against quiet (T12).
    Retention(RetentionArgs),
}

/// The most records a bench stores: both stores' ids are held in memory (about 150 bytes a
/// record), and each store takes about 1 KiB a record on disk.
const MAX_RECORDS: u64 = 10_000_000;
/// The most durable appends: each waits for a sync, so this takes hours on most disks.
const MAX_DURABLE_RECORDS: u64 = 1_000_000;
/// The most lookups: every lookup's time is kept, for both engines and for point reads.
const MAX_LOOKUPS: u64 = 10_000_000;

#[derive(Debug, Args)]
pub(crate) struct RetentionArgs {
    /// Records in the store: 1 to 10,000,000.
    #[arg(long, default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_RECORDS))]
    records: u64,
    /// Where to put the store (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// Records in the dataset: 1 to 10,000,000.
    #[arg(long, default_value_t = 200_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_RECORDS))]
    records: u64,
    /// Records appended one by one, durably, for the per-record durable comparison: 1 to
    /// 1,000,000.
    #[arg(long, default_value_t = 1_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_DURABLE_RECORDS))]
    durable_records: u64,
    /// Random lookups by id (and as many point reads by sequence): 1 to 10,000,000.
    #[arg(long, default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=MAX_LOOKUPS))]
    lookups: u64,
    /// Where to put the stores (default: a temporary directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Pack the log store's sealed segments after appending, as capture stores do, so that
    /// the reads run on packed segments.
    #[arg(long)]
    pack: bool,
}

pub(crate) fn run(command: &BenchCommand) -> anyhow::Result<Outcome> {
    let (dir, records) = match command {
        BenchCommand::Compare(args) => (&args.dir, None),
        BenchCommand::Retention(args) => (&args.dir, Some(args.records)),
    };
    let (dir, temporary) = match dir {
        // The figures count every record in the stores, so stores left by an earlier run
        // would be read again and miscounted.
        Some(dir) => (
            super::input::new_or_empty(dir, "the bench writes its stores there")?,
            false,
        ),
        None => (
            std::env::temp_dir().join(format!("esl-replay-bench-{}", std::process::id())),
            true,
        ),
    };
    // Removes the temporary directory however the bench ends: returning, failing, a panic
    // (dropped while unwinding), SIGINT or SIGTERM (the watcher below).
    let _removed = temporary.then(|| TemporaryDir::remove_on_signal(dir.clone()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match (command, records) {
        (BenchCommand::Compare(args), _) => compare(&dir, args),
        (BenchCommand::Retention(_), Some(records)) => retention(&dir, records),
        (BenchCommand::Retention(_), None) => Ok(Outcome::Success),
    }
}

/// The bench's temporary directory, removed when dropped, or on SIGINT or SIGTERM by a
/// thread that then ends the process as the signal would have (exit 130 or 143).
#[derive(Debug)]
struct TemporaryDir(PathBuf);

impl TemporaryDir {
    fn remove_on_signal(dir: PathBuf) -> TemporaryDir {
        use signal_hook::consts::{SIGINT, SIGTERM};
        match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
            Ok(mut signals) => {
                let removed = dir.clone();
                let watcher = std::thread::Builder::new()
                    .name("bench-signals".into())
                    .spawn(move || {
                        if let Some(signal) = signals.forever().next() {
                            remove_all(&removed);
                            std::process::exit(128 + signal);
                        }
                    });
                if let Err(error) = watcher {
                    eprintln!(
                        "cannot watch for signals ({error}); a signal leaves {} behind",
                        dir.display()
                    );
                }
            }
            Err(error) => {
                eprintln!(
                    "cannot watch for signals ({error}); a signal leaves {} behind",
                    dir.display()
                );
            }
        }
        TemporaryDir(dir)
    }
}

impl Drop for TemporaryDir {
    fn drop(&mut self) {
        remove_all(&self.0);
    }
}

/// Removes `dir` and everything in it. Tried again a few times: the bench (or an export it
/// started) may be writing a file there while it is removed.
fn remove_all(dir: &Path) {
    for _ in 0..5 {
        match std::fs::remove_dir_all(dir) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {}
            _ => return,
        }
    }
}

/// A measured figure for both engines; `higher_is_better` decides the ratio's direction.
struct Row {
    what: String,
    ours: f64,
    sqlite: f64,
    unit: &'static str,
    higher_is_better: bool,
    target: &'static str,
}

impl Row {
    fn ratio(&self) -> f64 {
        if self.higher_is_better {
            self.ours / self.sqlite
        } else {
            self.sqlite / self.ours
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

/// `count` pseudo-random indexes below `len` (xorshift, the same every run), made as they
/// are taken.
fn random_picks(count: u64, len: usize) -> impl Iterator<Item = usize> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..count).map(move |_| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % len.max(1) as u64) as usize
    })
}

fn progress(message: &str) {
    eprintln!("… {message}");
}

fn compare(dir: &Path, args: &CompareArgs) -> anyhow::Result<Outcome> {
    let log_path = dir.join("log-store");
    let sqlite_path = dir.join("store.sqlite");
    let mut rows = Vec::new();
    let mut log = LogStore::open(&log_path)?;
    let mut sqlite = SqliteStore::open(&sqlite_path)?;

    // T2: artifact append in batches of 1,000 (ids, checksums, encoding, framing).
    progress(&format!("appending {} records to each store", args.records));
    let (mut log_time, mut sqlite_time) = (Duration::ZERO, Duration::ZERO);
    let mut ids: Vec<RecordId> = Vec::new();
    let mut sqlite_ids: Vec<RecordId> = Vec::new();
    let mut n = 0;
    while n < args.records {
        let batch: Vec<u64> = (n..(n + 1000).min(args.records)).collect();
        let envelopes: Vec<_> = batch.iter().map(|i| dataset::envelope(*i)).collect();
        let started = Instant::now();
        ids.extend(log.write_batch(envelopes)?);
        log_time += started.elapsed();
        let envelopes: Vec<_> = batch.iter().map(|i| dataset::envelope(*i)).collect();
        let started = Instant::now();
        sqlite_ids.extend(sqlite.write_batch(envelopes)?);
        sqlite_time += started.elapsed();
        n += batch.len() as u64;
    }
    log.sync()?;
    sqlite.sync()?;
    if args.pack {
        progress("packing the log store's sealed segments");
        let started = Instant::now();
        let packed = log.pack_sealed()?;
        progress(&format!(
            "packed {} segments in {:.1}s",
            packed.len(),
            started.elapsed().as_secs_f64()
        ));
    }
    let per_sec = |count: u64, time: Duration| count as f64 / time.as_secs_f64();
    rows.push(Row {
        what: "artifact append, batches of 1,000 (T2)".into(),
        ours: per_sec(args.records, log_time),
        sqlite: per_sec(args.records, sqlite_time),
        unit: "records/s",
        higher_is_better: true,
        target: ">= 20x",
    });

    // T6: replay of decoded records in cursor pages of 500, every field of every record
    // touched: ours as views of the stored frames, SQLite's as the values of its rows.
    progress("replaying decoded records in pages of 500");
    let started = Instant::now();
    let (mut cursor, mut log_count, mut touched) = (ReadCursor::start(), 0u64, 0usize);
    loop {
        let mut last = None;
        let count = log.visit_from_cursor(&cursor, 500, &Criteria::any(), &mut |record| {
            touched = touched.wrapping_add(touch(record));
            last = Some(record.append_sequence());
        })?;
        let Some(last) = last else { break };
        cursor = cursor.advance(last, None)?;
        log_count += count as u64;
    }
    let log_time = started.elapsed();
    let (sqlite_count, sqlite_time) = sqlite_paged_read(&sqlite_path, 500)?;
    anyhow::ensure!(
        log_count == args.records && sqlite_count == args.records && touched > 0,
        "replay saw {log_count} and {sqlite_count} records"
    );
    rows.push(Row {
        what: "replay decoded records, pages of 500 (T6)".into(),
        ours: per_sec(log_count, log_time),
        sqlite: per_sec(sqlite_count, sqlite_time),
        unit: "records/s",
        higher_is_better: true,
        target: ">= 10x",
    });

    // T6b: export to reference NDJSON against `cat` copying the identical file.
    progress("exporting to NDJSON and copying the file with cat");
    let exported = dir.join("export.ndjson");
    let started = Instant::now();
    let file = std::fs::File::create(&exported)?;
    let written = store::export(
        &log,
        std::io::BufWriter::with_capacity(1 << 20, file),
        0,
        &Criteria::any(),
        &mut |_| {},
    )?;
    let export_time = started.elapsed();
    anyhow::ensure!(written == args.records, "export wrote {written} records");
    let copy = dir.join("copy.ndjson");
    let started = Instant::now();
    let status = std::process::Command::new("cat")
        .arg(&exported)
        .stdout(std::fs::File::create(&copy)?)
        .status()
        .context("cannot run cat")?;
    let cat_time = started.elapsed();
    anyhow::ensure!(status.success(), "cat failed: {status}");
    let bytes = std::fs::metadata(&exported)?.len();
    rows.push(Row {
        what: "export NDJSON vs cat of the same file (T6b)".into(),
        ours: bytes as f64 / export_time.as_secs_f64() / 1e6,
        sqlite: bytes as f64 / cat_time.as_secs_f64() / 1e6,
        unit: "MB/s",
        higher_is_better: true,
        target: ">= 0.33x (of cat)",
    });

    // One process each: `esl-replay export` against the sqlite3 shell selecting the same
    // rows in sequence order (skipped when sqlite3 is not installed).
    progress("one export process against one sqlite3 process");
    let ours = std::env::current_exe().context("cannot find this program")?;
    let started = Instant::now();
    let status = std::process::Command::new(&ours)
        .arg("export")
        .arg("--store")
        .arg(&log_path)
        .arg("--output")
        .arg(&copy)
        .status()
        .context("cannot run esl-replay export")?;
    let process_time = started.elapsed();
    anyhow::ensure!(status.success(), "esl-replay export failed: {status}");
    let started = Instant::now();
    match std::process::Command::new("sqlite3")
        .arg(&sqlite_path)
        .arg(
            "SELECT id, artifact_version, artifact_name, capture_timestamp, stored_at, \
             append_sequence, connection_generation, session_id, job_uuid, event_name, \
             capture_path, correlation_ids, runtime_flags, payload, checksum, tags \
             FROM replay_records ORDER BY append_sequence",
        )
        .stdout(std::fs::File::create(dir.join("sqlite3.out"))?)
        .status()
    {
        Ok(status) if status.success() => rows.push(Row {
            what: "export process vs sqlite3 process".into(),
            ours: process_time.as_secs_f64() * 1e3,
            sqlite: started.elapsed().as_secs_f64() * 1e3,
            unit: "ms",
            higher_is_better: false,
            target: "> 1x (faster than sqlite3)",
        }),
        _ => progress("sqlite3 is not installed or failed: the process comparison is skipped"),
    }

    // T7: raw frames (zero-copy, CRC checked) against an SQLite full scan.
    progress("scanning raw frames and raw rows");
    let started = Instant::now();
    let mut cursor = log.log_reader().cursor(Seq::FIRST)?;
    let (mut frames, mut bytes) = (0u64, 0u64);
    while let Some(record) = cursor.next()? {
        frames += 1;
        bytes += record.payload.len() as u64;
    }
    let log_time = started.elapsed();
    let (rows_scanned, sqlite_time) = sqlite_full_scan(&sqlite_path)?;
    anyhow::ensure!(
        frames == args.records && rows_scanned == args.records && bytes > 0,
        "raw scans saw {frames} frames and {rows_scanned} rows"
    );
    let record_bytes = bytes / frames;
    rows.push(Row {
        what: "replay raw frames vs SQLite full scan (T7)".into(),
        ours: per_sec(frames, log_time),
        sqlite: per_sec(rows_scanned, sqlite_time),
        unit: "records/s",
        higher_is_better: true,
        target: ">= 6x",
    });

    // T9: lookup by id, random ids.
    progress(&format!("{} random lookups by id", args.lookups));
    let picks = || random_picks(args.lookups, ids.len());
    // The engines take turns, lookup by lookup (each going first every other time), so
    // that both meet the same background work: the writeback of the files written above
    // goes on for seconds.
    let mut times: [Vec<Duration>; 2] = Default::default();
    let engines: [(&dyn ArtifactReader, &[RecordId], &str); 2] =
        [(&log, &ids, "log store"), (&sqlite, &sqlite_ids, "sqlite")];
    for (turn, pick) in picks().enumerate() {
        for side in [turn % 2, 1 - turn % 2] {
            let (store, ids, name) = engines[side];
            let id = ids.get(pick).context("no ids")?;
            let started = Instant::now();
            let found = store.read_by_id(id)?;
            let elapsed = started.elapsed();
            anyhow::ensure!(
                found.is_some_and(|r| r.id() == id),
                "{name}: lookup of {id} (record {}) failed",
                pick + 1
            );
            times[side].push(elapsed);
        }
    }
    let [mut log_times, mut sqlite_times] = times;
    log_times.sort_unstable();
    sqlite_times.sort_unstable();
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        rows.push(Row {
            what: format!("lookup by id, {name} (T9)"),
            ours: percentile(&log_times, p),
            sqlite: percentile(&sqlite_times, p),
            unit: "µs",
            higher_is_better: false,
            target: if p > 0.9 {
                ">= 2x (p99 <= 1/2 SQLite's)"
            } else {
                "-"
            },
        });
    }
    // T8: point reads by sequence, raw frames, random sequences of sealed segments (packed
    // with --pack), against SQLite selecting the same record's payload by append sequence.
    progress(&format!("{} random point reads by sequence", args.lookups));
    let reader = log.log_reader();
    let sealed_end = reader.segments().last().map_or(1, |last| last.0).max(2);
    let seqs: Vec<u64> = picks()
        .map(|pick| 1 + pick as u64 % (sealed_end - 1))
        .collect();
    let mut log_times = Vec::with_capacity(seqs.len());
    for &seq in &seqs {
        let started = Instant::now();
        let found = reader.get(Seq(seq))?;
        log_times.push(started.elapsed());
        anyhow::ensure!(found.is_some_and(|f| !f.is_empty()), "no record at {seq}");
    }
    log_times.sort_unstable();
    let sqlite_times = sqlite_point_reads(&sqlite_path, &seqs)?;
    rows.push(Row {
        what: format!(
            "point read by sequence, p99 (T8{})",
            if args.pack { ", packed" } else { "" }
        ),
        ours: percentile(&log_times, 0.99),
        sqlite: percentile(&sqlite_times, 0.99),
        unit: "µs",
        higher_is_better: false,
        target: "<= 10 µs packed",
    });
    // T13b's measure for these stores: what each takes on disk.
    let stats = log.stats()?;
    let log_disk = allocated_bytes(&log_path);
    let sqlite_disk = allocated_bytes(&sqlite_path);
    rows.push(Row {
        what: "bytes on disk, whole store (MB)".into(),
        ours: log_disk as f64 / 1e6,
        sqlite: sqlite_disk as f64 / 1e6,
        unit: "MB",
        higher_is_better: false,
        target: "-",
    });
    let space_note = format!(
        "log store: frames and indexes {} bytes, {} unpacked ({:.3}); {} bytes on disk with the active segment's preallocated space",
        stats.bytes,
        stats.unpacked_bytes,
        stats.bytes as f64 / stats.unpacked_bytes.max(1) as f64,
        log_disk
    );
    log.close()?;
    drop(sqlite);

    // T5: durable per-record append (sync every append) against synchronous=FULL autocommit.
    progress(&format!(
        "{} durable appends, one by one, to each store",
        args.durable_records
    ));
    let mut durable_log = LogStore::open_with(
        dir.join("durable-log"),
        LogOptions {
            sync_policy: SyncPolicy::EveryAppend,
            ..LogOptions::default()
        },
    )?;
    let mut durable_sqlite = SqliteStore::open_with(
        &dir.join("durable.sqlite"),
        SqliteOptions::new().synchronous(SqliteSync::Full),
    )?;
    let durable = |store: &mut dyn ArtifactStore| -> anyhow::Result<(Duration, Vec<Duration>)> {
        let mut times = Vec::new();
        let started = Instant::now();
        for i in 0..args.durable_records {
            let envelope = dataset::envelope(i);
            let one = Instant::now();
            store.write(envelope)?;
            times.push(one.elapsed());
        }
        let total = started.elapsed();
        times.sort_unstable();
        Ok((total, times))
    };
    let (log_total, log_times) = durable(&mut durable_log)?;
    let (sqlite_total, sqlite_times) = durable(&mut durable_sqlite)?;
    let (floor_total, floor_times) = raw_sync_floor(
        &dir.join("raw-sync.bin"),
        args.durable_records,
        record_bytes,
    )?;
    let floor_note = format!(
        "device floor for T5: {} pwrite + fdatasync of {record_bytes} bytes into written zeros: {:.0} records/s, p99 {:.1} µs (ours {:.2}x of it)",
        args.durable_records,
        per_sec(args.durable_records, floor_total),
        percentile(&floor_times, 0.99),
        floor_total.as_secs_f64() / log_total.as_secs_f64()
    );
    rows.push(Row {
        what: "durable append, one at a time (T5)".into(),
        ours: per_sec(args.durable_records, log_total),
        sqlite: per_sec(args.durable_records, sqlite_total),
        unit: "records/s",
        higher_is_better: true,
        target: ">= 2x",
    });
    rows.push(Row {
        what: "durable append latency p99 (T5)".into(),
        ours: percentile(&log_times, 0.99),
        sqlite: percentile(&sqlite_times, 0.99),
        unit: "µs",
        higher_is_better: false,
        target: ">= 4x (p99 <= 1/4)",
    });

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "dataset: {} records, {} bytes each stored on average; {} durable appends; {} lookups",
        args.records, record_bytes, args.durable_records, args.lookups
    )?;
    writeln!(
        out,
        "{:<46} {:>14} {:>14} {:>10} {:>8}  target",
        "measure", "esl-replay", "sqlite", "unit", "ratio"
    )?;
    for row in &rows {
        writeln!(
            out,
            "{:<46} {:>14.1} {:>14.1} {:>10} {:>7.2}x  {}",
            row.what,
            row.ours,
            row.sqlite,
            row.unit,
            row.ratio(),
            row.target
        )?;
    }
    writeln!(out, "{space_note}")?;
    writeln!(out, "{floor_note}")?;
    Ok(Outcome::Success)
}

/// What T5 cannot beat on this device: `count` writes of `bytes` each, one after the other
/// into a file of zeros written and synced beforehand, each followed by `fdatasync`. Returns
/// the total time and the sorted latencies.
fn raw_sync_floor(
    path: &Path,
    count: u64,
    bytes: u64,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let zeros = vec![0; 1 << 20];
    let len = count.saturating_mul(bytes);
    for at in (0..len).step_by(zeros.len()) {
        let chunk = zeros
            .get(..usize::try_from(len - at)?.min(zeros.len()))
            .unwrap_or_default();
        file.write_all_at(chunk, at)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    file.sync_all()?;
    let record = vec![b'x'; usize::try_from(bytes)?];
    let mut times = Vec::new();
    let started = Instant::now();
    for i in 0..count {
        let one = Instant::now();
        file.write_all_at(&record, i * bytes)?;
        file.sync_data()?;
        times.push(one.elapsed());
    }
    let total = started.elapsed();
    times.sort_unstable();
    Ok((total, times))
}

/// Reads every field of a viewed record; returns a figure the caller sums so the reads
/// are not optimised away.
fn touch(record: &RecordView<'_>) -> usize {
    let optional = [
        record.connection_generation(),
        record.session_id(),
        record.job_uuid(),
        record.event_name(),
        record.capture_path(),
    ]
    .iter()
    .map(|field| field.map_or(0, str::len))
    .sum::<usize>();
    record.id().len()
        + record.artifact_version().len()
        + record.artifact_name().len()
        + record.capture_timestamp().nanosecond() as usize
        + record.stored_at().nanosecond() as usize
        + record.append_sequence() as usize
        + optional
        + record.correlation_ids_json().len()
        + record.runtime_flags_json().len()
        + record.payload_json().len()
        + record.checksum().len()
        + record.tags_json().len()
}

/// SQLite's paged read: pages of `page` rows after the last sequence read, every column of
/// every row touched and the two timestamps decoded from their text (the view side builds
/// both timestamps too): the least work a reader of SQLite does to see each field decoded.
fn sqlite_paged_read(path: &Path, page: usize) -> anyhow::Result<(u64, Duration)> {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let started = Instant::now();
    let mut statement = connection.prepare(
        "SELECT id, artifact_version, artifact_name, capture_timestamp, stored_at, \
         append_sequence, connection_generation, session_id, job_uuid, event_name, \
         capture_path, correlation_ids, runtime_flags, payload, checksum, tags \
         FROM replay_records WHERE append_sequence > ?1 ORDER BY append_sequence LIMIT ?2",
    )?;
    let columns = statement.column_count();
    let (mut after, mut count, mut bytes) = (0i64, 0u64, 0usize);
    loop {
        let mut rows = statement.query(rusqlite::params![after, page as i64])?;
        let mut in_page = 0;
        while let Some(row) = rows.next()? {
            for column in 0..columns {
                bytes += match row.get_ref(column)? {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        t.len()
                    }
                    _ => 1,
                };
            }
            for column in [3, 4] {
                let text = row.get_ref(column)?.as_str()?;
                bytes += esl_replay::record::timestamp::parse(text)?.nanosecond() as usize;
            }
            after = row.get(5)?;
            in_page += 1;
        }
        count += in_page;
        if in_page < page as u64 {
            break;
        }
    }
    anyhow::ensure!(bytes > 0, "the paged read read nothing");
    Ok((count, started.elapsed()))
}

/// An SQLite full scan of every row in sequence order, memory-mapped, touching each column.
/// Bytes the file system allocates to a file, or to every file under a directory.
fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| allocated_bytes(&e.path())).sum())
        .unwrap_or(0)
}

/// SQLite's point reads: one prepared select of a record's payload by append sequence each.
fn sqlite_point_reads(path: &Path, seqs: &[u64]) -> anyhow::Result<Vec<Duration>> {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut statement =
        connection.prepare("SELECT payload FROM replay_records WHERE append_sequence = ?1")?;
    let mut times = Vec::with_capacity(seqs.len());
    for &seq in seqs {
        let started = Instant::now();
        let payload: String = statement.query_row([seq as i64], |row| row.get(0))?;
        times.push(started.elapsed());
        anyhow::ensure!(!payload.is_empty(), "no row at {seq}");
    }
    times.sort_unstable();
    Ok(times)
}

fn sqlite_full_scan(path: &Path) -> anyhow::Result<(u64, Duration)> {
    let connection =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    connection.pragma_update(None, "mmap_size", 1u64 << 32)?;
    let started = Instant::now();
    let mut statement =
        connection.prepare("SELECT * FROM replay_records ORDER BY append_sequence")?;
    let columns = statement.column_count();
    let mut rows = statement.query([])?;
    let mut count = 0u64;
    let mut bytes = 0usize;
    while let Some(row) = rows.next()? {
        for column in 0..columns {
            bytes += match row.get_ref(column)? {
                rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.len(),
                _ => 1,
            };
        }
        count += 1;
    }
    anyhow::ensure!(bytes > 0, "the scan read nothing");
    Ok((count, started.elapsed()))
}

/// Appends durably (group commit) at a fixed rate for `duration` and returns each append's
/// latency until its record is durable: open loop, so a stall shows as latency.
fn paced_durable_appends(
    store: &mut LogStore,
    rate: u64,
    duration: Duration,
    first: u64,
) -> anyhow::Result<Vec<Duration>> {
    let interval = Duration::from_secs(1) / u32::try_from(rate).unwrap_or(u32::MAX);
    let started = Instant::now();
    let mut times = Vec::new();
    let mut n = first;
    while started.elapsed() < duration {
        let due = started + interval * u32::try_from(times.len()).unwrap_or(u32::MAX);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        store.write(dataset::envelope(n))?;
        store.wait_durable()?;
        times.push(due.elapsed());
        n += 1;
    }
    times.sort_unstable();
    Ok(times)
}

fn retention(dir: &Path, records: u64) -> anyhow::Result<Outcome> {
    use esl_replay::retention::{self, PrunePolicy};
    let root = dir.join("store");
    progress(&format!("writing {records} records"));
    let mut store = LogStore::open(&root)?;
    let mut n = 0;
    while n < records {
        let batch: Vec<_> = (n..(n + 1000).min(records))
            .map(dataset::envelope)
            .collect();
        n += batch.len() as u64;
        store.write_batch(batch)?;
    }
    store.sync()?;
    let policy = PrunePolicy {
        max_stream_bytes: Some(0),
        protected_record_count: records / 10,
        ..PrunePolicy::default()
    };
    let now = time::OffsetDateTime::now_utc();

    progress("quiet: durable appends at 500/s for 3 s");
    let quiet = paced_durable_appends(&mut store, 500, Duration::from_secs(3), records)?;

    progress("planning the prune of 90 % of the store");
    let reader = LogStore::open_read_only(&root)?;
    let started = Instant::now();
    let plan = retention::plan(&reader, &[], &policy, now, &mut |_| {})?;
    let plan_time = started.elapsed();
    let pruned = plan.pruned_count;

    progress("applying it from another handle while the writer appends durably at 500/s");
    let applying = std::thread::spawn(
        move || -> anyhow::Result<(Duration, esl_replay::retention::RetentionResult)> {
            std::thread::sleep(Duration::from_millis(500));
            let started = Instant::now();
            let result = retention::apply(&reader, plan, now)?;
            Ok((started.elapsed(), result))
        },
    );
    let during = paced_durable_appends(&mut store, 500, Duration::from_secs(3), records * 2)?;
    let (apply_time, result) = applying
        .join()
        .map_err(|_| anyhow::anyhow!("the prune thread panicked"))??;
    store.close()?;

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "store: {records} records; pruned {pruned} ({} segments, {:.1} MB reclaimed)",
        result.segments_removed,
        result.bytes_reclaimed as f64 / 1e6
    )?;
    writeln!(out, "plan  {:>10.1} ms", plan_time.as_secs_f64() * 1e3)?;
    writeln!(out, "apply {:>10.1} ms", apply_time.as_secs_f64() * 1e3)?;
    writeln!(
        out,
        "durable append latency at 500/s (group commit), µs: {:>8} {:>8} {:>8} {:>8} {:>6}",
        "p50", "p99", "p99.9", "max", "n"
    )?;
    for (name, times) in [("quiet", &quiet), ("during prune", &during)] {
        writeln!(
            out,
            "  {name:<52} {:>8.0} {:>8.0} {:>8.0} {:>8.0} {:>6}",
            percentile(times, 0.5),
            percentile(times, 0.99),
            percentile(times, 0.999),
            percentile(times, 1.0),
            times.len()
        )?;
    }
    writeln!(
        out,
        "p99.9 during prune / quiet: {:.2} (target T12: <= 2)",
        percentile(&during, 0.999) / percentile(&quiet, 0.999)
    )?;
    Ok(Outcome::Success)
}
