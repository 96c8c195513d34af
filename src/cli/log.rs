//! `inspect` and `verify`: looking at a log directory without writing to it; `repair`: the
//! explicit cut of a damaged end that a plain open refuses; `pack`: packing sealed segments
//! on demand.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::Outcome;
use esl_replay::storage::{
    DEFAULT_PACK_LEVEL, Log, LogOptions, PackOutcome, Reader, RecoveryMode, codec,
};

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// The log directory.
    dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The log directory.
    dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct PackArgs {
    /// The log directory (for a store, its `log` subdirectory).
    dir: PathBuf,
    /// zstd level, 1 (fastest) to 19 (smallest).
    #[arg(long, default_value_t = DEFAULT_PACK_LEVEL, value_parser = clap::value_parser!(i32).range(1..=19))]
    level: i32,
}

#[derive(Debug, Args)]
pub(crate) struct RepairArgs {
    /// The log directory (for a store, its `log` subdirectory).
    dir: PathBuf,
}

/// Refuses `dir` unless it holds a segment log's files: `repair` and `pack` open a writer,
/// which would create a new, empty log in any other directory and report success.
fn existing_log(dir: &Path) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list the log directory {}", dir.display()))?;
    let is_log_file = |name: &str| {
        [codec::START_FILE, codec::CLEAN_FILE, codec::DURABLE_FILE].contains(&name)
            || codec::segment_base(name).is_some()
            || codec::index_base(name).is_some()
    };
    if entries
        .flatten()
        .any(|entry| entry.file_name().to_str().is_some_and(is_log_file))
    {
        return Ok(());
    }
    let store_log = dir.join("log");
    if store_log.is_dir() {
        anyhow::bail!(
            "{} holds no segment log; for a store, give its log subdirectory: {}",
            dir.display(),
            store_log.display()
        );
    }
    anyhow::bail!(
        "{} holds no segment log (no segment, index or log metadata files)",
        dir.display()
    )
}

fn open(dir: &PathBuf) -> anyhow::Result<Reader> {
    Reader::open(dir, &LogOptions::default())
        .with_context(|| format!("cannot open the log in {}", dir.display()))
}

pub(crate) fn inspect(args: &InspectArgs) -> anyhow::Result<Outcome> {
    let reader = open(&args.dir)?;
    let first = reader.first_seq();
    let next = reader.next_seq()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "log        {}", args.dir.display())?;
    writeln!(
        out,
        "records    {} (sequences {first}..{next})",
        next.0 - first.0
    )?;
    let segments = reader.segments();
    writeln!(out, "segments   {}", segments.len())?;
    for id in segments {
        let path = codec::segment_path(&args.dir, id.0);
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        match packed_from(&path) {
            Some(unpacked) => writeln!(
                out,
                "  {id}.seg  {bytes} bytes, packed from {unpacked} ({:.3})",
                bytes as f64 / unpacked.max(1) as f64
            )?,
            None => writeln!(out, "  {id}.seg  {bytes} bytes")?,
        }
    }
    let space = reader.space().context("cannot read the segments")?;
    writeln!(
        out,
        "bytes      {} in frames, {} unpacked",
        space.used, space.unpacked
    )?;
    Ok(Outcome::Success)
}

/// For a packed segment file, its bytes before it was packed (from its trailer).
fn packed_from(path: &std::path::Path) -> Option<u64> {
    use std::io::Read as _;
    // Not a FIFO or a device put in a segment's place: it could block or never end.
    let mut file =
        esl_replay::storage::open_regular_with(std::fs::OpenOptions::new().read(true), path)
            .ok()?;
    let mut head = [0u8; codec::HEADER_LEN];
    file.read_exact(&mut head).ok()?;
    let header = codec::FileHeader::decode(&head, codec::SEGMENT_MAGIC).ok()?;
    if !header.is_packed() {
        return None;
    }
    let mut bytes = head.to_vec();
    file.read_to_end(&mut bytes).ok()?;
    codec::Trailer::decode_end(&bytes, header.salt)
        .ok()
        .map(|trailer| trailer.unpacked_len)
}

pub(crate) fn verify(args: &VerifyArgs) -> anyhow::Result<Outcome> {
    let reader = open(&args.dir)?;
    let report = reader
        .verify()
        .with_context(|| format!("cannot verify the log in {}", args.dir.display()))?;
    let mut out = std::io::stdout().lock();
    for damage in &report.problems {
        writeln!(out, "damaged: {damage}")?;
    }
    if let Some((segment, offset)) = report.unclean_tail {
        writeln!(
            out,
            "note: segment {segment} ends in bytes after offset {offset} that hold no valid frame (an unclean stop); the next writer open cuts them"
        )?;
    }
    if report.is_ok() {
        writeln!(
            out,
            "ok: {} records in {} segments, every frame checksum valid",
            report.records, report.segments
        )?;
        Ok(Outcome::Success)
    } else {
        writeln!(
            out,
            "checked {} intact records in {} segments: {} damaged regions",
            report.records,
            report.segments,
            report.problems.len()
        )?;
        Ok(Outcome::ProblemsFound)
    }
}

/// Opens the log with `RecoveryMode::PointInTime`, which cuts the active segment at its first
/// damaged frame (records after it included) and accepts records whose segment files are
/// missing, and reports what was lost.
pub(crate) fn repair(args: &RepairArgs) -> anyhow::Result<Outcome> {
    let options = LogOptions {
        recovery_mode: RecoveryMode::PointInTime,
        ..LogOptions::default()
    };
    existing_log(&args.dir)?;
    let (log, report) = Log::open(&args.dir, options)
        .with_context(|| format!("cannot repair the log in {}", args.dir.display()))?;
    log.close()
        .with_context(|| format!("cannot close the log in {}", args.dir.display()))?;
    let mut out = std::io::stdout().lock();
    if let Some(head) = &report.missing_head {
        writeln!(
            out,
            "records {} to {} were in no segment file: the log now starts at {}",
            head.start,
            head.end - 1,
            head.end
        )?;
    }
    if let Some(tail) = &report.missing_tail {
        writeln!(
            out,
            "records {} to {} were in no segment file: the next record gets sequence {} again",
            tail.start,
            tail.end - 1,
            tail.start
        )?;
    }
    match report.torn_tail {
        Some(cut) => writeln!(
            out,
            "cut segment {} from offset {}: {} bytes zeroed ({}); the log now ends before sequence {}",
            cut.segment, cut.offset, cut.bytes_dropped, cut.kind, report.next_seq
        )?,
        None => writeln!(
            out,
            "nothing to cut: the end of the log is intact (next sequence {})",
            report.next_seq
        )?,
    }
    Ok(Outcome::Success)
}

/// Packs every sealed segment of the log, one line per segment as it goes.
pub(crate) fn pack(args: &PackArgs) -> anyhow::Result<Outcome> {
    let options = LogOptions {
        pack_level: None,
        ..LogOptions::default()
    };
    existing_log(&args.dir)?;
    let (log, _) = Log::open(&args.dir, options)
        .with_context(|| format!("cannot open the log in {}", args.dir.display()))?;
    // Every segment but the last is sealed; some may be packed already.
    let sealed = log.reader().segments().len().saturating_sub(1);
    let bar = super::store::progress(Some(sealed as u64), "packing segments");
    let mut out = std::io::stdout().lock();
    let (mut before, mut after, mut damaged) = (0u64, 0u64, 0usize);
    loop {
        let step = log
            .pack_next_sealed(args.level)
            .with_context(|| format!("cannot pack the log in {}", args.dir.display()))?;
        let Some((segment, outcome)) = step else {
            break;
        };
        bar.inc(1);
        match outcome {
            PackOutcome::Packed {
                records,
                unpacked,
                packed,
            } => {
                before += unpacked;
                after += packed;
                bar.suspend(|| {
                    writeln!(
                        out,
                        "packed {segment}: {records} records, {unpacked} -> {packed} bytes ({:.3})",
                        packed as f64 / unpacked.max(1) as f64
                    )
                })?;
            }
            PackOutcome::Damaged { offset, kind } => {
                damaged += 1;
                bar.suspend(|| {
                    writeln!(
                        out,
                        "left {segment} as written: damaged at offset {offset} ({kind}); run `log verify`"
                    )
                })?;
            }
            PackOutcome::AlreadyPacked | PackOutcome::Gone | PackOutcome::Stopped => {}
        }
        out.flush()?;
    }
    bar.finish_and_clear();
    log.close()
        .with_context(|| format!("cannot close the log in {}", args.dir.display()))?;
    writeln!(
        out,
        "done: {before} -> {after} bytes of sealed segments packed ({:.3}); {damaged} damaged segments left as written",
        after as f64 / before.max(1) as f64
    )?;
    Ok(if damaged == 0 {
        Outcome::Success
    } else {
        Outcome::ProblemsFound
    })
}
