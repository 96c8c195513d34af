//! `demo storage`: a self-demonstration of the storage engine that needs nothing but a
//! directory.
//!
//! It appends synthetic ESL events, runs a writer in a child process and kills it with
//! `SIGKILL` mid-stream, reopens (recovery), checks that every record the child saw
//! acknowledged as durable survived, reads everything back and truncates the prefix.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;

use crate::cli::Outcome;
use esl_replay::storage::{Log, LogOptions, Reader, Seq, SyncPolicy};

#[derive(Debug, Args)]
pub(super) struct StorageArgs {
    /// Directory for the demo log, new or empty (default: a fresh temporary directory,
    /// removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Records to append in the first phase (1 to 10,000,000; about 370 bytes each).
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    records: u64,
    /// How long the child writer runs before it is killed, in milliseconds (1 to 600,000).
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    kill_after_ms: u64,
    /// Run as the child writer (used by the demo itself).
    #[arg(long, hide = true)]
    child_writer: Option<PathBuf>,
}

fn options() -> LogOptions {
    LogOptions {
        segment_bytes: 8 << 20,
        max_payload_bytes: 1 << 20,
        sync_policy: SyncPolicy::default(),
        ..LogOptions::default()
    }
}

/// A synthetic plain-format ESL event of about 370 bytes, deterministic in `n`.
fn event(n: u64) -> Vec<u8> {
    let names = [
        "CHANNEL_CREATE",
        "CHANNEL_ANSWER",
        "CHANNEL_BRIDGE",
        "CHANNEL_HANGUP_COMPLETE",
        "HEARTBEAT",
    ];
    let name = names
        .get((n % names.len() as u64) as usize)
        .copied()
        .unwrap_or("HEARTBEAT");
    format!(
        "Event-Name: {name}\nCore-UUID: 6d3c9a2e-1f0b-4c5d-9e8f-a1b2c3d4e5f6\nFreeSWITCH-Hostname: pbx-01\n\
         Event-Date-Timestamp: {}\nEvent-Sequence: {n}\nUnique-ID: {:08x}-0000-4000-8000-{:012x}\n\
         Caller-Caller-ID-Number: 1{:03}\nCaller-Destination-Number: 2{:03}\nChannel-State: CS_EXECUTE\n\
         Answer-State: answered\nCall-Direction: inbound\nContent-Length: 0\n\n",
        1_700_000_000_000_000u64 + n * 1_000,
        n / 5,
        n,
        n % 1000,
        (n * 7) % 1000
    )
    .into_bytes()
}

pub(super) fn run(args: &StorageArgs) -> anyhow::Result<Outcome> {
    if let Some(dir) = &args.child_writer {
        return child_writer(dir);
    }
    let (dir, temporary) = match &args.dir {
        Some(dir) => (
            crate::cli::input::new_or_empty(dir, "the demo writes its own log there")?,
            false,
        ),
        None => (
            std::env::temp_dir().join(format!("esl-replay-demo-{}", std::process::id())),
            true,
        ),
    };
    let result = demo(&dir, args);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn demo(dir: &Path, args: &StorageArgs) -> anyhow::Result<Outcome> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "esl-replay storage demo in {}", dir.display())?;

    // 1. Append in batches with group commit, and wait until durable.
    let (mut log, report) = Log::open(dir, options()).context("cannot open the demo log")?;
    let first_new = report.next_seq;
    let started = Instant::now();
    let mut bytes = 0u64;
    let mut batch = Vec::with_capacity(1000);
    let mut n = first_new;
    while n < first_new + args.records {
        batch.clear();
        while batch.len() < 1000 && n < first_new + args.records {
            let payload = event(n);
            bytes += payload.len() as u64;
            batch.push(payload);
            n += 1;
        }
        log.append_batch(&batch)?;
    }
    log.wait_durable(Seq(n - 1))?;
    let elapsed = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "1. appended {} records ({:.1} MB) in {:.3} s ({:.0} records/s), all durable (group commit)",
        args.records,
        bytes as f64 / 1e6,
        elapsed,
        args.records as f64 / elapsed
    )?;
    log.close()?;

    // 2. A writer in a child process, killed mid-stream.
    let exe =
        std::env::current_exe().context("cannot find this program to run the child writer")?;
    let mut child = Command::new(exe)
        .args(["demo", "storage", "--child-writer"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot start the child writer")?;
    let stdout = child.stdout.take().context("child writer has no stdout")?;
    let acks = std::thread::spawn(move || {
        let mut last = 0u64;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(seq) = line.trim().parse::<u64>() {
                last = seq;
            }
        }
        last
    });
    std::thread::sleep(Duration::from_millis(args.kill_after_ms));
    child.kill().context("cannot kill the child writer")?;
    let _ = child.wait();
    let last_acked = acks.join().unwrap_or(0);
    writeln!(
        out,
        "2. killed the child writer with SIGKILL after {} ms; last sequence it saw durable: {last_acked}",
        args.kill_after_ms
    )?;

    // 3. Reopen: recovery.
    let started = Instant::now();
    let (log, report) = Log::open(dir, options()).context("cannot reopen after the crash")?;
    let next = log.next_seq();
    writeln!(
        out,
        "3. reopened in {:.1} ms: clean shutdown {}, scanned {} bytes of the tail, torn tail {}; next sequence {}",
        started.elapsed().as_secs_f64() * 1e3,
        report.clean_shutdown,
        report.scanned_bytes,
        report.torn_tail.as_ref().map_or_else(
            || "none".to_owned(),
            |t| format!("{} bytes cut at offset {}", t.bytes_dropped, t.offset)
        ),
        next
    )?;
    if next.0 <= last_acked {
        bail!(
            "acknowledged record {last_acked} was lost: the log ends at {}",
            next.0 - 1
        );
    }
    let reader = log.reader();
    if last_acked > 0
        && reader.get(Seq(last_acked))?.as_deref() != Some(event(last_acked).as_slice())
    {
        bail!("acknowledged record {last_acked} does not read back intact");
    }
    writeln!(
        out,
        "   every acknowledged record is present (last acknowledged {last_acked} < next {next})"
    )?;

    // 4. Read everything back, checking every frame.
    let started = Instant::now();
    let mut cursor = reader.cursor(reader.first_seq())?;
    let (mut count, mut expected) = (0u64, reader.first_seq().0);
    while let Some(record) = cursor.next()? {
        if record.seq.0 != expected || record.payload != event(record.seq.0).as_slice() {
            bail!("record {} does not match what was written", record.seq);
        }
        expected += 1;
        count += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    writeln!(
        out,
        "4. read back {count} records in {:.3} s ({:.0} records/s): contiguous, every checksum valid",
        elapsed,
        count as f64 / elapsed
    )?;

    // 5. Retention: truncate the older half; numbering continues.
    let before = Seq(reader.first_seq().0 + count / 2);
    let truncated = log.truncate_prefix(before)?;
    writeln!(
        out,
        "5. truncated before {before}: {} segments deleted ({:.1} MB); first sequence now {}, next {}",
        truncated.segments_removed,
        truncated.bytes_reclaimed as f64 / 1e6,
        reader.first_seq(),
        log.next_seq()
    )?;
    log.close()?;
    let follower = Reader::open(dir, &options())?;
    writeln!(
        out,
        "   a read-only reader sees sequences {}..{}",
        follower.first_seq(),
        follower.next_seq()?
    )?;
    Ok(Outcome::Success)
}

/// The child: appends until killed, printing each sequence once it is durable.
fn child_writer(dir: &Path) -> anyhow::Result<Outcome> {
    let (mut log, _) = Log::open(dir, options())?;
    let durability = log.durability();
    let mut out = std::io::stdout().lock();
    loop {
        let mut last = Seq(0);
        for _ in 0..256 {
            let n = log.next_seq().0;
            last = log.append(&event(n))?;
        }
        durability.wait(last)?;
        writeln!(out, "{last}")?;
        out.flush()?;
    }
}
