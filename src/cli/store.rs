//! Store commands: `import`, `export`, `read`, `get`, `tail`, `stats`, and `verify` of stores.

use std::io::{BufReader, IsTerminal as _, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::Outcome;
use esl_replay::record::{
    Criteria, CriteriaFields, MapTexts, ReadCursor, Record, RecordId, RecordView, timestamp,
};
use esl_replay::store::{self, ArtifactReader, ArtifactStore, Backend, LogStore, RowCheck, Tail};

/// The regular files under `dir`, in its subdirectories too (a store's few dozen files).
fn walkdir_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(kind) if kind.is_file() => files.push(entry.path()),
                _ => {}
            }
        }
    }
    files
}

/// Where the store is: `.sqlite`/`.db` selects SQLite, anything else a segment-log store.
#[derive(Debug, Args)]
pub(crate) struct StoreArg {
    /// The store: a directory (segment log) or a `.sqlite`/`.db` file.
    #[arg(long, short = 's', env = "ESL_REPLAY_STORE")]
    pub(crate) store: PathBuf,
    /// Force the SQLite backend whatever the path's extension.
    #[arg(long)]
    pub(crate) sqlite: bool,
}

impl StoreArg {
    fn backend(&self) -> Option<Backend> {
        self.sqlite.then_some(Backend::Sqlite)
    }

    pub(crate) fn open_read(&self) -> anyhow::Result<Box<dyn ArtifactReader>> {
        store::open_read_only(&self.store, self.backend()).with_context(|| {
            let missing = std::fs::symlink_metadata(&self.store)
                .is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound);
            format!(
                "cannot open the store {} for reading{}",
                self.store.display(),
                if missing {
                    ": there is nothing at that path"
                } else {
                    ""
                }
            )
        })
    }

    /// Refuses an output file that is the store, one of its files (by name or as a hard
    /// link), or a new file inside its directory: writing it would destroy what is read.
    pub(crate) fn refuse_as_output(&self, output: &Path) -> anyhow::Result<()> {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(store) = std::fs::canonicalize(&self.store) else {
            return Ok(());
        };
        let resolved = std::fs::canonicalize(output).ok().or_else(|| {
            let parent = match output.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => parent,
                _ => Path::new("."),
            };
            Some(
                std::fs::canonicalize(parent)
                    .ok()?
                    .join(output.file_name()?),
            )
        });
        let refuse = || {
            anyhow::anyhow!(
                "the output {} is the store {} or one of its files; write it somewhere else",
                output.display(),
                self.store.display()
            )
        };
        // The SQLite database's own files, or every file of a segment-log store.
        let store_files: Vec<PathBuf> = if store.is_dir() {
            if resolved
                .as_ref()
                .is_some_and(|path| path.starts_with(&store))
            {
                return Err(refuse());
            }
            walkdir_files(&store)
        } else {
            let sidecars = ["-wal", "-shm", "-journal"].map(|suffix| {
                let mut name = store.as_os_str().to_owned();
                name.push(suffix);
                PathBuf::from(name)
            });
            if resolved
                .as_ref()
                .is_some_and(|path| *path == store || sidecars.contains(path))
            {
                return Err(refuse());
            }
            std::iter::once(store).chain(sidecars).collect()
        };
        if let Ok(target) = std::fs::metadata(output) {
            let same = |path: &PathBuf| {
                std::fs::metadata(path)
                    .is_ok_and(|file| (file.dev(), file.ino()) == (target.dev(), target.ino()))
            };
            if store_files.iter().any(same) {
                return Err(refuse());
            }
        }
        Ok(())
    }

    pub(crate) fn open_write(&self) -> anyhow::Result<Box<dyn ArtifactStore>> {
        store::open(&self.store, self.backend()).map_err(|error| {
            let damaged = matches!(&error, store::Error::Storage(e) if e.is_corruption());
            let hint = if damaged {
                format!(
                    " (`esl-replay verify -s {0}` lists the damage; `esl-replay log repair {0}/log` cuts a damaged end or accepts missing segment files, losing those records)",
                    self.store.display()
                )
            } else {
                String::new()
            };
            anyhow::Error::new(error).context(format!(
                "cannot open the store {} for writing{hint}",
                self.store.display()
            ))
        })
    }
}

/// The bounded read criteria, shared by every command that reads.
#[derive(Debug, Args, Default)]
pub(crate) struct CriteriaArgs {
    /// Only this artifact name (e.g. event.raw).
    #[arg(long)]
    artifact_name: Option<String>,
    /// Only this background job UUID.
    #[arg(long)]
    job_uuid: Option<String>,
    /// Only this replay session id (correlation ids, then runtime flags).
    #[arg(long)]
    replay_session_id: Option<String>,
    /// Only this PBX node slug (runtime flags).
    #[arg(long)]
    pbx_node_slug: Option<String>,
    /// Only this worker session id (runtime flags).
    #[arg(long)]
    worker_session_id: Option<String>,
    /// Only this session id.
    #[arg(long)]
    session_id: Option<String>,
    /// Only this connection generation.
    #[arg(long)]
    connection_generation: Option<String>,
    /// Only records captured at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    captured_from: Option<time::OffsetDateTime>,
    /// Only records captured at or before this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    captured_until: Option<time::OffsetDateTime>,
}

fn parse_time(text: &str) -> Result<time::OffsetDateTime, String> {
    timestamp::parse(text).map_err(|e| e.to_string())
}

impl CriteriaArgs {
    pub(crate) fn criteria(&self) -> anyhow::Result<Criteria> {
        Criteria::new(CriteriaFields {
            captured_from: self.captured_from,
            captured_until: self.captured_until,
            artifact_name: self.artifact_name.clone(),
            job_uuid: self.job_uuid.clone(),
            replay_session_id: self.replay_session_id.clone(),
            pbx_node_slug: self.pbx_node_slug.clone(),
            worker_session_id: self.worker_session_id.clone(),
            session_id: self.session_id.clone(),
            connection_generation: self.connection_generation.clone(),
        })
        .context("invalid criteria")
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One reference NDJSON line per record.
    #[default]
    Ndjson,
    /// A JSON array of records (reference layout).
    Json,
    /// A table for people (`table` is accepted too).
    #[value(alias = "table")]
    Text,
}

#[derive(Debug, Args)]
pub(crate) struct ImportArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The reference NDJSON file (`-` for standard input).
    file: PathBuf,
    /// Skip bad lines (not a valid record, too long, out of sequence order, or a record
    /// too large for the store), reporting each, instead of failing on the first.
    #[arg(long)]
    skip_malformed: bool,
    /// The longest line accepted, in bytes (not counting the line end), at most 256 MiB; a
    /// longer line is a bad line, read past without being held in memory.
    #[arg(long, default_value_t = esl_replay::record::DEFAULT_MAX_LINE_BYTES, value_parser = parse_max_line_bytes)]
    max_line_bytes: usize,
}

/// The ceiling of `--max-line-bytes`: a line is held whole while it is parsed, and no
/// longer line holds a record the store accepts (16 MiB, even with every byte escaped).
const MAX_LINE_BYTES_CEILING: usize = 256 << 20;

fn parse_max_line_bytes(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(bytes @ 1..=MAX_LINE_BYTES_CEILING) => Ok(bytes),
        _ => Err(format!(
            "{text:?} is not a line length from 1 to {MAX_LINE_BYTES_CEILING} bytes (256 MiB)"
        )),
    }
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Write here instead of standard output.
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Only records after this append sequence.
    #[arg(long, default_value_t = 0)]
    after: u64,
    #[command(flatten)]
    criteria: CriteriaArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Only records after this append sequence (the cursor's last consumed sequence).
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many records (at least 1).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    limit: u64,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    criteria: CriteriaArgs,
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    store: StoreArg,
    /// The record id.
    id: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Keep waiting for new records (like `tail -f`).
    #[arg(long, short = 'f')]
    follow: bool,
    /// Start after this append sequence (default: show the last 10 records first).
    #[arg(long)]
    after: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    #[command(flatten)]
    criteria: CriteriaArgs,
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Output: text, or one JSON object for scripts.
    #[arg(long, value_enum, default_value_t)]
    format: super::Output,
}

pub(crate) fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(total) => ProgressBar::new(total),
        None => ProgressBar::new_spinner(),
    };
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
        let template = if total.is_some() {
            "{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})"
        } else {
            "{msg} {pos} ({per_sec})"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
    } else {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_message(what.to_owned());
    bar
}

pub(crate) fn import(args: &ImportArgs) -> anyhow::Result<Outcome> {
    // The input first: an input that cannot be read leaves no new store behind.
    let input: Box<dyn std::io::BufRead> = if args.file == Path::new("-") {
        Box::new(std::io::stdin().lock())
    } else {
        let file = std::fs::File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        Box::new(BufReader::new(file))
    };
    let mut store = args.store.open_write()?;
    let bar = progress(None, "importing");
    let options = store::ImportOptions {
        skip_malformed: args.skip_malformed,
        max_line_bytes: args.max_line_bytes,
        ..store::ImportOptions::default()
    };
    let mut on_progress = |n: u64| bar.set_position(n);
    let report = store::import(store.as_mut(), input, options, &mut on_progress);
    bar.finish_and_clear();
    let mut err = std::io::stderr().lock();
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            for (line, reason) in &error.report().skipped {
                writeln!(err, "skipped line {line}: {reason}")?;
            }
            report_checksum_mismatches(&mut err, error.report())?;
            // Make what was committed durable before saying so.
            let synced = store.sync();
            return Err(import_failure(&args.file, &error, synced.err()));
        }
    };
    store.sync()?;
    for (line, reason) in &report.skipped {
        writeln!(err, "skipped line {line}: {reason}")?;
    }
    report_checksum_mismatches(&mut err, &report)?;
    let mismatches = report.checksum_mismatches.len();
    writeln!(
        err,
        "imported {} records{}; skipped {} bad lines{}",
        report.imported,
        sequence_range(&report),
        report.skipped.len(),
        if mismatches > 0 {
            format!("; {mismatches} records imported do not match their checksum")
        } else {
            String::new()
        }
    )?;
    // Skipped lines and altered records are problems found, as `verify` reports them.
    if report.skipped.is_empty() && mismatches == 0 {
        Ok(Outcome::Success)
    } else {
        writeln!(
            err,
            "exit 1: {}",
            match (report.skipped.is_empty(), mismatches == 0) {
                (false, true) => "lines were skipped, their records are not in the store",
                (true, false) =>
                    "records that were changed after they were written were imported (as they are)",
                _ =>
                    "lines were skipped, and records that were changed after they were written were imported (as they are)",
            }
        )?;
        Ok(Outcome::ProblemsFound)
    }
}

/// Names every imported record whose content does not match its checksum.
fn report_checksum_mismatches(
    err: &mut impl Write,
    report: &store::ImportReport,
) -> std::io::Result<()> {
    for (line, sequence, id, stored) in &report.checksum_mismatches {
        writeln!(
            err,
            "line {line}: record {id} at append sequence {sequence} does not match its checksum \
             {stored} (it was changed after it was written); imported as it is, and \
             `esl-replay verify` reports it"
        )?;
    }
    Ok(())
}

fn sequence_range(report: &store::ImportReport) -> String {
    report
        .sequences
        .map_or_else(String::new, |(a, b)| format!(", sequences {a}..={b}"))
}

/// The message of a failed import: what went wrong, where, what is committed, what to do.
/// Only a bad line suggests `--skip-malformed`.
fn import_failure(
    file: &Path,
    error: &store::ImportError,
    sync_error: Option<store::Error>,
) -> anyhow::Error {
    use store::ImportError;
    let report = error.report();
    let file = file.display();
    let committed = format!(
        "{} records were imported before it{}",
        report.imported,
        sequence_range(report)
    );
    let message = match error {
        ImportError::BadLine { line, reason, .. } => {
            let fix = match reason {
                store::BadLine::Malformed(esl_replay::record::Error::LineTooLong { .. }) => {
                    "shorten the line or raise --max-line-bytes, or pass --skip-malformed to skip bad lines"
                }
                _ => "fix the line, or pass --skip-malformed to skip bad lines",
            };
            let reason = esl_replay::storage::error_chain(reason);
            format!("import of {file} stopped at line {line}: {reason}; {committed}; {fix}")
        }
        ImportError::Store { line, source, .. } => {
            let chain = esl_replay::storage::error_chain(source);
            format!(
                "import of {file} stopped at line {line}: the store failed: {chain}; {committed}, and the store is consistent up to there; fix the cause (free disk space, stop the other writer, ...) and import the rest from line {line} on (e.g. `tail -n +{line} FILE | esl-replay import --store STORE -`)"
            )
        }
        ImportError::Input { line, source, .. } => format!(
            "import of {file} stopped at line {line}: cannot read the input: {source}; {committed}; import the rest from line {line} on once the input is readable"
        ),
        other => format!("import of {file} stopped: {other}; {committed}"),
    };
    match sync_error {
        Some(sync) => {
            anyhow::anyhow!("{message} (and syncing the store afterwards failed: {sync})")
        }
        None => anyhow::anyhow!(message),
    }
}

pub(crate) fn export(args: &ExportArgs) -> anyhow::Result<Outcome> {
    let store = args.store.open_read()?;
    let criteria = args.criteria.criteria()?;
    let bar = progress(Some(store.stats()?.records), "exporting");
    let mut on_progress = |n: u64| bar.set_position(n);
    let written = match &args.output {
        Some(path) => {
            args.store.refuse_as_output(path)?;
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            store::export(
                store.as_ref(),
                std::io::BufWriter::new(file),
                args.after,
                &criteria,
                &mut on_progress,
            )?
        }
        None => store::export(
            store.as_ref(),
            std::io::stdout().lock(),
            args.after,
            &criteria,
            &mut on_progress,
        )?,
    };
    bar.finish_and_clear();
    if args.output.is_some() {
        eprintln!("exported {written} records");
    }
    Ok(Outcome::Success)
}

/// Prints records in a format; `json` collects them into one array.
struct Printer<W: Write> {
    out: W,
    format: Format,
    first: bool,
}

impl<W: Write> Printer<W> {
    fn new(out: W, format: Format) -> anyhow::Result<Printer<W>> {
        let mut printer = Printer {
            out,
            format,
            first: true,
        };
        if format == Format::Text {
            writeln!(
                printer.out,
                "{:>10}  {:<29}  {:<20}  {:<28}  {:<36}  id",
                "sequence", "captured", "artifact", "event", "job"
            )?;
        }
        Ok(printer)
    }

    /// Prints an owned record.
    fn print(&mut self, record: &Record) -> anyhow::Result<()> {
        self.print_view(&record.view(&MapTexts::of(record)))
    }

    /// Prints a viewed record.
    fn print_view(&mut self, record: &RecordView<'_>) -> anyhow::Result<()> {
        match self.format {
            Format::Ndjson => {
                let mut line = String::with_capacity(512);
                record.append_ndjson_line(&mut line);
                self.out.write_all(line.as_bytes())?;
            }
            Format::Json => {
                let mut line = String::from(if self.first { "[" } else { "," });
                record.append_ndjson_line(&mut line);
                self.out.write_all(line.as_bytes())?;
            }
            Format::Text => writeln!(
                self.out,
                "{:>10}  {:<29}  {:<20}  {:<28}  {:<36}  {}",
                record.append_sequence(),
                timestamp::to_reference_text(&record.capture_timestamp()),
                record.artifact_name(),
                record.event_name().unwrap_or("-"),
                record.job_uuid().unwrap_or("-"),
                record.id()
            )?,
        }
        self.first = false;
        self.out.flush()?;
        Ok(())
    }

    /// Writes out what is buffered, so that a follower sees each page as it comes.
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(self.out.flush()?)
    }

    fn finish(mut self) -> anyhow::Result<()> {
        if self.format == Format::Json {
            writeln!(self.out, "{}", if self.first { "[]" } else { "]" })?;
        }
        self.flush()
    }
}

/// Standard output in 64 KiB writes rather than one per line (it is line-buffered).
fn stdout_buffered() -> std::io::BufWriter<std::io::StdoutLock<'static>> {
    std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock())
}

pub(crate) fn read(args: &ReadArgs) -> anyhow::Result<Outcome> {
    let store = args.store.open_read()?;
    let criteria = args.criteria.criteria()?;
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let mut printer = Printer::new(stdout_buffered(), args.format)?;
    // Records are printed as they are viewed; the first print failure stops the output.
    let mut failed = None;
    store.visit_from_cursor(
        &ReadCursor::new(args.after, None),
        limit,
        &criteria,
        &mut |record| {
            if failed.is_none() {
                failed = printer.print_view(record).err();
            }
        },
    )?;
    if let Some(error) = failed {
        return Err(error);
    }
    printer.finish()?;
    Ok(Outcome::Success)
}

pub(crate) fn get(args: &GetArgs) -> anyhow::Result<Outcome> {
    let store = args.store.open_read()?;
    let id = RecordId::new(args.id.clone()).context("invalid record id")?;
    let Some(record) = store.read_by_id(&id)? else {
        bail!(
            "no record with id {} in {}",
            args.id,
            args.store.store.display()
        );
    };
    let mut printer = Printer::new(stdout_buffered(), args.format)?;
    printer.print(&record)?;
    printer.finish()?;
    Ok(Outcome::Success)
}

pub(crate) fn tail(args: &TailArgs) -> anyhow::Result<Outcome> {
    let store = args.store.open_read()?;
    let criteria = args.criteria.criteria()?;
    let after = match args.after {
        Some(after) => after,
        None => newest_start(store.as_ref(), &criteria, TAIL_NEWEST)?,
    };
    let mut printer = Printer::new(stdout_buffered(), args.format)?;
    let mut tail = Tail::new(store.as_ref(), ReadCursor::new(after, None), criteria);
    let wait = if args.follow {
        Duration::from_secs(3600)
    } else {
        Duration::ZERO
    };
    // Records are printed as they are viewed; the first print failure stops the output.
    let mut failed = None;
    loop {
        let visited = tail.visit_within(wait, &mut |record| {
            if failed.is_none() {
                failed = printer.print_view(record).err();
            }
        })?;
        if let Some(error) = failed {
            return Err(error);
        }
        if visited == 0 && !args.follow {
            break;
        }
        printer.flush()?;
    }
    printer.finish()?;
    Ok(Outcome::Success)
}

/// Records `tail` prints without `--after`.
const TAIL_NEWEST: usize = 10;

/// The cursor after which the newest `want` records matching `criteria` lie. Sequences may
/// have gaps and criteria skip records, so windows before the last sequence are widened
/// fourfold until they hold `want` matches (or reach the start), keeping only sequences.
fn newest_start(
    store: &dyn ArtifactReader,
    criteria: &Criteria,
    want: usize,
) -> anyhow::Result<u64> {
    let last = store.stats()?.last_sequence;
    let mut span = want as u64;
    loop {
        let after = last.saturating_sub(span);
        let mut found = Vec::new();
        let mut cursor = ReadCursor::new(after, None);
        loop {
            let visited = store.visit_from_cursor(&cursor, 1000, criteria, &mut |view| {
                found.push(view.append_sequence());
            })?;
            match found.last() {
                Some(&seen) if visited > 0 && seen < last => {
                    cursor = ReadCursor::new(seen, None);
                }
                _ => break,
            }
        }
        found.retain(|seq| *seq <= last);
        if found.len() >= want || after == 0 {
            let first = found.len().saturating_sub(want);
            return Ok(found.get(first).map_or(after, |seq| seq.saturating_sub(1)));
        }
        span = span.saturating_mul(4);
    }
}

pub(crate) fn stats(args: &StatsArgs) -> anyhow::Result<Outcome> {
    let is_log = !args.store.sqlite && Backend::for_path(&args.store.store) == Backend::Log;
    // A log store sums its segments' summaries; SQLite is read record by record.
    let (stats, summary, segments, damage) = if is_log {
        let store = LogStore::open_read_only(&args.store.store)?;
        let summary = store.summary()?;
        let segments = store.log_reader().segments().len();
        let mut damage = store.damage_met();
        // Records the figures cannot count: in no segment file, or behind damage at the end.
        damage.extend(store.log_reader().missing_records()?);
        (store.stats()?, summary, Some(segments), damage)
    } else {
        let store = args.store.open_read()?;
        let stats = store.stats()?;
        let bar = progress(Some(stats.records), "summing");
        let summary = store.summary()?;
        bar.finish_and_clear();
        (stats, summary, None, Vec::new())
    };
    let problems: Vec<String> = damage
        .iter()
        .map(|error| match error {
            esl_replay::storage::Error::Corrupt {
                segment,
                offset,
                kind,
            } => format!("damaged frame: segment {segment} at offset {offset}: {kind}"),
            other => other.to_string(),
        })
        .collect();
    let outcome = if damage.is_empty() {
        Outcome::Success
    } else {
        Outcome::ProblemsFound
    };
    let captured = |ms: i64| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .map_or_else(|_| ms.to_string(), |t| timestamp::to_reference_text(&t))
    };
    let mut out = std::io::stdout().lock();
    if args.format.is_json() {
        let value = serde_json::json!({
            "store": args.store.store.display().to_string(),
            "backend": stats.backend,
            "records": stats.records,
            "readable_records": summary.records,
            "first_sequence": stats.first_sequence,
            "last_sequence": stats.last_sequence,
            "bytes": stats.bytes,
            "unpacked_bytes": stats.unpacked_bytes,
            "captured_from": summary.captured_ms.map(|(first, _)| captured(first)),
            "captured_until": summary.captured_ms.map(|(_, last)| captured(last)),
            "segments": segments,
            "artifacts": summary.artifacts,
            "events": summary.events,
            "problems": problems,
        });
        writeln!(out, "{value}")?;
        return Ok(outcome);
    }
    writeln!(
        out,
        "store       {} ({})",
        args.store.store.display(),
        stats.backend
    )?;
    let unreadable = stats.records.saturating_sub(summary.records);
    if unreadable == 0 {
        writeln!(out, "records     {}", stats.records)?;
    } else {
        writeln!(
            out,
            "records     {} ({unreadable} of them unreadable, see the problems below)",
            stats.records
        )?;
    }
    match stats.first_sequence {
        Some(first) => writeln!(out, "sequences   {first}..={}", stats.last_sequence)?,
        None => writeln!(
            out,
            "sequences   none (last assigned {})",
            stats.last_sequence
        )?,
    }
    if stats.unpacked_bytes == stats.bytes {
        writeln!(out, "bytes       {}", stats.bytes)?;
    } else {
        writeln!(
            out,
            "bytes       {} ({} unpacked, packed to {:.3} of that)",
            stats.bytes,
            stats.unpacked_bytes,
            stats.bytes as f64 / stats.unpacked_bytes.max(1) as f64
        )?;
    }
    if let Some((first, last)) = summary.captured_ms {
        writeln!(out, "captured    {} .. {}", captured(first), captured(last))?;
    }
    if let Some(segments) = segments {
        writeln!(out, "segments    {segments}")?;
    }
    writeln!(out, "artifacts")?;
    for (name, count) in &summary.artifacts {
        writeln!(out, "  {count:>10}  {name}")?;
    }
    writeln!(out, "events")?;
    for (name, count) in &summary.events {
        writeln!(out, "  {count:>10}  {name}")?;
    }
    // The counts above leave out what could not be read; say where that is.
    for problem in &problems {
        writeln!(out, "problem     {problem}")?;
    }
    Ok(outcome)
}

/// What a full read of a store met.
struct Scan {
    /// Records read (decoded or not).
    checked: u64,
    /// One line per problem: a damaged frame with its segment and offset, or a record that
    /// does not decode.
    problems: Vec<String>,
}

/// Hands every readable record to `visit`: a log store's in sequence order, read past
/// damage, each damaged frame becoming a problem line, so records in other segments (and
/// after the damage) are still read; a SQLite store's in table order, every row once, each
/// row that does not decode (its sequence included) becoming a problem line.
fn scan_records(
    arg: &StoreArg,
    bar: &ProgressBar,
    visit: &mut dyn FnMut(&Record),
) -> anyhow::Result<Scan> {
    let mut scan = Scan {
        checked: 0,
        problems: Vec::new(),
    };
    if !arg.sqlite && Backend::for_path(&arg.store) == Backend::Log {
        let log = LogStore::open_read_only(&arg.store)?;
        let mut undecodable = Vec::new();
        let report = log.log_reader().verify_each(&mut |seq, payload| {
            match Record::decode(payload) {
                Ok(record) => visit(&record),
                Err(error) => undecodable.push(format!(
                    "sequence {}: record does not decode: {}",
                    log.append_sequence_of(seq.0),
                    esl_replay::storage::error_chain(&error)
                )),
            }
            scan.checked += 1;
            if scan.checked.is_multiple_of(4096) {
                bar.set_position(scan.checked);
            }
        })?;
        scan.problems = report
            .problems
            .iter()
            .map(|damage| describe_damage(&log, damage))
            .collect();
        scan.problems.extend(undecodable);
        return Ok(scan);
    }
    let store = store::SqliteStore::open_read_only(&arg.store)
        .with_context(|| format!("cannot open the store {} for reading", arg.store.display()))?;
    scan.checked = store.check_rows(&mut |row| {
        match row {
            RowCheck::Record(record) => visit(&record),
            RowCheck::Damaged { rowid, id, error } => scan.problems.push(format!(
                "row {rowid} (id {}): record does not decode: {}",
                id.as_deref().unwrap_or("unreadable"),
                esl_replay::storage::error_chain(&error)
            )),
        }
        bar.inc(1);
    })?;
    Ok(scan)
}

fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// A damaged frame of a log store, with the append sequences it makes unreadable.
fn describe_damage(log: &LogStore, damage: &esl_replay::storage::Damage) -> String {
    let what = format!(
        "damaged frame: segment {} at offset {}: {}",
        damage.segment, damage.offset, damage.kind
    );
    let first = log.append_sequence_of(damage.first_seq.0);
    match damage.resumes_at {
        Some(end) if end > damage.first_seq => format!(
            "{what} ({} unreadable, append sequences {first}..={})",
            plural(end.0 - damage.first_seq.0, "record"),
            log.append_sequence_of(end.0 - 1)
        ),
        Some(_) => what,
        None => format!("{what} (records from append sequence {first} on unreadable)"),
    }
}

/// Verifies a store: its sequence map (log backend, format/store.md [STORE-02]), every
/// frame's CRC (log backend, continuing past damage) and every record's checksum; reports
/// each problem with where it is. Returns the number of problems.
pub(crate) fn verify_store(arg: &StoreArg) -> anyhow::Result<u64> {
    if !arg.sqlite && Backend::for_path(&arg.store) == Backend::Log {
        // The sequence map decides which records readers find: check it first. Other
        // failures to open are reported by the open below, as for every command.
        let checked = match LogStore::open_read_only(&arg.store) {
            Ok(store) => store.verify_metadata(),
            Err(error @ store::Error::Metadata { .. }) => Err(error),
            Err(_) => Ok(()),
        };
        match checked {
            Ok(()) => {}
            Err(error @ store::Error::Metadata { .. }) => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{error}")?;
                writeln!(
                    out,
                    "records not checked: readers cannot find them without valid store metadata \
                     (`esl-replay log verify {}` checks the frames)",
                    arg.store.join("log").display()
                )?;
                return Ok(1);
            }
            Err(error) => return Err(error).context("cannot check the store metadata"),
        }
    }
    let store = arg.open_read()?;
    // Only for the progress bar: damage that fails the summary is what the scan reports.
    let total = store.stats().ok().map(|stats| stats.records);
    let bar = progress(total, "verifying");
    let mut mismatches = Vec::new();
    let scan = scan_records(arg, &bar, &mut |record| {
        if !record.verify_checksum() {
            mismatches.push(format!(
                "sequence {} id {}: checksum mismatch (stored {})",
                record.append_sequence(),
                record.id(),
                record.checksum()
            ));
        }
    })?;
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    for line in scan.problems.iter().chain(&mismatches) {
        writeln!(out, "{line}")?;
    }
    let problems = (scan.problems.len() + mismatches.len()) as u64;
    writeln!(out, "checked {} records: {problems} problems", scan.checked)?;
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 16 item 8: a store failure says what happened, what is committed and how to
    /// resume, and never suggests `--skip-malformed`.
    #[test]
    fn a_store_failure_message_never_suggests_skipping_lines() {
        let mut report = store::ImportReport::default();
        report.imported = 2000;
        report.sequences = Some((1, 2000));
        let error = store::ImportError::Store {
            line: 2001,
            source: store::Error::Io {
                op: "write",
                path: "log".into(),
                source: std::io::Error::from_raw_os_error(28),
            },
            report,
        };
        let message = import_failure(Path::new("in.ndjson"), &error, None).to_string();
        assert!(
            message.contains("stopped at line 2001: the store failed"),
            "{message}"
        );
        assert!(message.contains("No space left on device"), "{message}");
        assert!(
            message.contains("2000 records were imported before it, sequences 1..=2000"),
            "{message}"
        );
        assert!(message.contains("consistent up to there"), "{message}");
        assert!(message.contains("tail -n +2001"), "{message}");
        assert!(!message.contains("--skip-malformed"), "{message}");
    }
}
