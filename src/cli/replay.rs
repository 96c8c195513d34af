//! Replay commands: `replay plan` shows the next batch an executor would take;
//! `replay run` replays a range (dry-run by default) through a built-in handler or the
//! guarded re-injection path, optionally resuming from and saving a checkpoint.
//!
//! Human output by default. `--format ndjson` prints one compact JSON object per line: for `plan`
//! the plan with its records (reference NDJSON layout); for `run` one `{"plan", "result"}`
//! object per batch, each outcome under the reference keys (`record_id`, `artifact_name`,
//! `append_sequence`, `action`, `would_dispatch_handler`, `handler`, `would_reinject`,
//! `reinjection_reason`, ...), then one `{"summary"}` object.
//!
//! `run --execute --reinject --allowlist api.dispatch --reinject-to HOST:PORT` sends the
//! allowlisted dispatches to a live event socket through the capture layer's ESL injector
//! (password from `--password-file`, else `ESL_PASSWORD`, else `ClueCon`).
//!
//! Exit codes: 0 when every record was dealt with, 1 when a handler or injector failed
//! (progress up to the record before it is saved) or a signal stopped the run, 2 on
//! errors: among them a resume refused (a record marked in flight, other criteria, a
//! checkpoint file that does not say where to resume, the key in use by another run) and
//! records pruned while the run was behind.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use super::Outcome;
use super::store::{CriteriaArgs, StoreArg, progress};
use esl_replay::capture::{EslInjector, InjectorConfig, Password, command_line};
use esl_replay::checkpoint::{
    CheckpointService, CheckpointStore, CompatibilityValidator, KeyLock, ResumeState,
};
use esl_replay::record::{Criteria, JsonMap, ReadCursor, Record, keys, timestamp, to_ndjson_line};
use esl_replay::replay::{
    BoxError, ExecutionCandidate, ExecutionConfig, ExecutionResult, ExecutionSettings, Executor,
    Handler, HandlerRegistry, HandlerResult, IN_FLIGHT_KEY, InjectionResult, Injector,
    Outcome as ReplayOutcome, Plan, RangeOptions, in_flight_sequence, replay_range,
};
use esl_replay::store::ArtifactReader;

#[derive(Debug, Subcommand)]
pub(crate) enum ReplayCommand {
    /// Show the next batch a replay would take (reads only; never saves a checkpoint).
    Plan(PlanArgs),
    /// Replay a range: dry-run by default, `--execute` to run the handler or re-inject.
    Run(RunArgs),
}

/// Where a replay starts and which records it selects.
#[derive(Debug, Args)]
pub(crate) struct RangeArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Start after this append sequence.
    #[arg(long, conflicts_with = "checkpoint_key")]
    after: Option<u64>,
    /// Checkpoint directory to resume from (and, for `run --execute`, to save progress to);
    /// used with --checkpoint-key.
    #[arg(long, env = super::CHECKPOINT_DIR_ENV)]
    checkpoint_dir: Option<PathBuf>,
    /// Checkpoint key naming this consumer.
    #[arg(long, requires = "checkpoint_dir")]
    checkpoint_key: Option<String>,
    /// Stop after this append sequence (inclusive); one below the starting sequence
    /// (`--after` or the checkpoint's) is refused.
    #[arg(long)]
    until: Option<u64>,
    /// Records per batch (plan).
    #[arg(long, default_value_t = esl_replay::replay::DEFAULT_BATCH_LIMIT, value_parser = parse_batch)]
    batch: usize,
    #[command(flatten)]
    criteria: CriteriaArgs,
    /// Output: text, or NDJSON (one compact JSON object per line) for scripts.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

impl RangeArgs {
    /// Whether the output is NDJSON (for scripts) rather than text.
    fn ndjson(&self) -> bool {
        self.format == Format::Ndjson
    }
}

/// `--format` of the replay commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Text for people.
    #[default]
    Text,
    /// One compact JSON object per line.
    Ndjson,
}

/// Records a batch may hold at most: a batch is held in memory whole, so the bound is what
/// keeps a flag from sizing memory by the store.
pub(crate) const MAX_BATCH: usize = 100_000;

fn parse_batch(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n @ 1..=MAX_BATCH) => Ok(n),
        Ok(_) => Err(format!("batch must be between 1 and {MAX_BATCH}")),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, Args)]
pub(crate) struct PlanArgs {
    #[command(flatten)]
    range: RangeArgs,
}

/// The built-in handlers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum HandlerKind {
    /// No handler: records are `observed`.
    #[default]
    None,
    /// Print each record as a reference NDJSON line on stdout.
    Print,
    /// Count records by artifact name or event name (`--count-by`); print the counts.
    Count,
    /// Run the command after `--` once per record with the record as one NDJSON line on
    /// its stdin; a non-zero exit stops the replay.
    Exec,
}

/// What `count` counts by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum CountBy {
    /// The artifact name.
    #[default]
    Artifact,
    /// The event name (`-` when a record has none).
    Event,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    range: RangeArgs,
    /// Report what would happen without invoking anything (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
    /// Run the handler (or re-inject) for real.
    #[arg(long)]
    execute: bool,
    /// The built-in handler.
    #[arg(long, value_enum, default_value_t)]
    handler: HandlerKind,
    /// Register the handler only for these exact artifact names (default: every record).
    #[arg(long = "handle-artifact", value_name = "NAME")]
    handle_artifacts: Vec<String>,
    /// What `--handler count` counts by.
    #[arg(long, value_enum, default_value_t)]
    count_by: CountBy,
    /// Re-inject allowlisted executable artifacts (`api.dispatch`, `bgapi.dispatch`)
    /// instead of running a handler.
    #[arg(long, requires = "allowlist")]
    reinject: bool,
    /// Artifact names re-injection may send, comma-separated.
    #[arg(long, value_delimiter = ',', value_name = "NAME,...")]
    allowlist: Vec<String>,
    /// The live FreeSWITCH event socket `--reinject --execute` sends the commands to.
    #[arg(long, value_name = "HOST:PORT", requires = "reinject")]
    reinject_to: Option<String>,
    /// File holding the target's `auth` password (else `ESL_PASSWORD`, else `ClueCon`).
    #[arg(long, requires = "reinject_to")]
    password_file: Option<PathBuf>,
    /// How long a re-injected command's reply may take (e.g. `30s`, `2m`). A command whose
    /// reply does not come in time stays *unconfirmed*: the run stops, and the checkpoint
    /// marks the record in flight.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "reinject_to")]
    reply_timeout: Option<std::time::Duration>,
    /// Resume past a record the checkpoint marks in flight (sent by an earlier run, its
    /// reply never came) by sending it again: only once the target shows it did not run.
    #[arg(long, conflicts_with = "skip_unconfirmed")]
    retry_unconfirmed: bool,
    /// Resume past a record the checkpoint marks in flight by counting it as done (it ran
    /// on the target, or must not run again).
    #[arg(long)]
    skip_unconfirmed: bool,
    /// Resume a checkpoint saved by a run with other criteria (records the old criteria
    /// left out before the checkpoint are not replayed).
    #[arg(long)]
    allow_criteria_change: bool,
    /// Print only the summary, not one line per record.
    #[arg(long)]
    summary: bool,
    /// The command for `--handler exec`, after `--`.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) fn run(command: &ReplayCommand) -> anyhow::Result<Outcome> {
    match command {
        ReplayCommand::Plan(args) => plan(args),
        ReplayCommand::Run(args) => execute(args),
    }
}

/// Where a range starts: the cursor, and with a checkpoint, the service that keeps
/// progress, the metadata the checkpoint held (which saves keep), and for a run that
/// saves, the key's run lock (held until the run ends).
struct Start {
    cursor: ReadCursor,
    service: Option<CheckpointService>,
    metadata: JsonMap,
    _lock: Option<KeyLock>,
}

/// How a run that resumes treats what its checkpoint says about earlier runs.
#[derive(Default)]
struct Resume {
    /// The run saves progress (`run --execute`): it takes the key's lock, and refuses to
    /// resume past an unconfirmed record or with other criteria unless told to.
    save: bool,
    retry_unconfirmed: bool,
    skip_unconfirmed: bool,
    allow_criteria_change: bool,
}

/// The checkpoint metadata key holding the criteria of the run that saved it.
const CRITERIA_KEY: &str = "replay_criteria";

/// Where to start. Only a run that saves (`save`) creates a missing checkpoint directory;
/// otherwise a missing directory means a fresh start. Either way a start without a saved
/// checkpoint is said on standard error: a mistyped directory or key must not pass unseen.
fn start(
    args: &RangeArgs,
    resume: &Resume,
    criteria: &Criteria,
    store: &dyn ArtifactReader,
) -> anyhow::Result<Start> {
    let (Some(dir), Some(key)) = (&args.checkpoint_dir, &args.checkpoint_key) else {
        if let Some(after) = args.after {
            let last = store.stats()?.last_sequence;
            if after > last {
                bail!(
                    "--after {after} is past the store's last sequence {last}: the run would skip \
                     every record stored until the store passes it (is this the right store?)"
                );
            }
        }
        return Ok(Start {
            cursor: ReadCursor::new(args.after.unwrap_or(0), None),
            service: None,
            metadata: JsonMap::new(),
            _lock: None,
        });
    };
    super::checkpoint::not_a_file(dir)?;
    if !resume.save && !dir.is_dir() {
        eprintln!(
            "note: no checkpoint directory {}; starting at the first record",
            dir.display()
        );
        return Ok(Start {
            cursor: ReadCursor::start(),
            service: None,
            metadata: JsonMap::new(),
            _lock: None,
        });
    }
    let checkpoints = CheckpointStore::open(dir)
        .with_context(|| format!("cannot open the checkpoint directory {}", dir.display()))?;
    // Taken before the checkpoint is read: no other run of the key moves it meanwhile.
    let lock = if resume.save {
        Some(checkpoints.lock(key)?)
    } else {
        None
    };
    let state = ResumeState::resolve_for_resume(&checkpoints, key)
        .with_context(|| format!("cannot load checkpoint `{key}`"))?;
    let service = CheckpointService::new(checkpoints, key.clone())
        .with_context(|| format!("--checkpoint-key {key:?} cannot name a checkpoint"))?;
    let mut cursor = *state.cursor();
    // Resuming past pruned records, or from beyond the end, would skip records unseen.
    let metadata = match state.checkpoint() {
        Some(checkpoint) => {
            CompatibilityValidator
                .assert_resumable(store, checkpoint)
                .with_context(|| {
                    format!("cannot resume from checkpoint `{key}` in {}", dir.display())
                })?;
            let mut metadata = checkpoint.metadata().clone();
            check_criteria(&metadata, criteria, resume, key, dir)?;
            if let Some(mark) = in_flight_sequence(&metadata) {
                let sequence = mark.unwrap_or(cursor.last_consumed_sequence() + 1);
                let record = describe_in_flight(&metadata, sequence);
                if !resume.save {
                    eprintln!(
                        "note: checkpoint `{key}` marks {record} in flight: an earlier run sent it \
                         and its reply never came"
                    );
                } else if resume.skip_unconfirmed {
                    eprintln!("note: --skip-unconfirmed: counting {record} as done");
                    cursor = ReadCursor::new(sequence.max(cursor.last_consumed_sequence()), None);
                } else if resume.retry_unconfirmed {
                    eprintln!("note: --retry-unconfirmed: sending {record} again");
                } else {
                    bail!(
                        "checkpoint `{key}` in {} marks {record} in flight: an earlier run sent it to \
                         the switch and its reply never came, so it may have run; resuming would send \
                         it again. Check on the switch whether it ran, then resume with \
                         --skip-unconfirmed (it ran: go on after it) or --retry-unconfirmed (it did \
                         not: send it again)",
                        dir.display()
                    );
                }
                if resume.save {
                    metadata.shift_remove(IN_FLIGHT_KEY);
                    // Decided once: the mark is gone from the file before anything is sent.
                    service
                        .save_advancing(cursor, with_criteria(metadata.clone(), criteria))
                        .with_context(|| format!("cannot save checkpoint `{key}`"))?;
                }
            }
            metadata
        }
        None => {
            eprintln!(
                "note: no checkpoint `{key}` in {}; starting at the first record",
                dir.display()
            );
            JsonMap::new()
        }
    };
    Ok(Start {
        cursor,
        service: Some(service),
        metadata,
        _lock: lock,
    })
}

/// `record N (artifact, id)` for the record a checkpoint marks in flight.
fn describe_in_flight(metadata: &JsonMap, sequence: u64) -> String {
    let mark = metadata.get(IN_FLIGHT_KEY);
    let field = |name: &str| mark.and_then(|m| m.get(name)).and_then(Value::as_str);
    match (field("artifact_name"), field("record_id")) {
        (Some(artifact), Some(id)) => format!("record {sequence} ({artifact}, id {id})"),
        _ => format!("record {sequence}"),
    }
}

/// The criteria as saved in checkpoint metadata: each field given, time bounds to the
/// nanosecond (RFC 3339), so that any difference is seen.
fn criteria_json(criteria: &Criteria) -> Value {
    let fields = criteria.fields();
    let mut saved = JsonMap::new();
    for (key, value) in [
        ("captured_from", &fields.captured_from),
        ("captured_until", &fields.captured_until),
    ] {
        if let Some(at) = value {
            let text = at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_else(|_| at.unix_timestamp_nanos().to_string());
            saved.insert(key.to_owned(), Value::String(text));
        }
    }
    for (key, value) in fields.texts() {
        if let Some(value) = value {
            saved.insert(key.to_owned(), Value::String(value.to_owned()));
        }
    }
    Value::Object(saved)
}

/// The metadata with the criteria of this run under [`CRITERIA_KEY`].
fn with_criteria(mut metadata: JsonMap, criteria: &Criteria) -> JsonMap {
    metadata.insert(CRITERIA_KEY.to_owned(), criteria_json(criteria));
    metadata
}

/// A resume with criteria other than those the checkpoint was saved with would skip the
/// records the old criteria left out (or replay others): refused unless allowed. A
/// checkpoint without saved criteria (older, or saved by another tool) is not checked.
fn check_criteria(
    metadata: &JsonMap,
    criteria: &Criteria,
    resume: &Resume,
    key: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let Some(saved) = metadata.get(CRITERIA_KEY) else {
        return Ok(());
    };
    let now = criteria_json(criteria);
    // The checkpoint file writes an empty map as PHP does, `[]`, and reads it back a list.
    let same = *saved == now
        || (saved.as_array().is_some_and(Vec::is_empty)
            && now.as_object().is_some_and(JsonMap::is_empty));
    if same || !resume.save {
        return Ok(());
    }
    if resume.allow_criteria_change {
        eprintln!("note: --allow-criteria-change: resuming checkpoint `{key}` with other criteria");
        return Ok(());
    }
    bail!(
        "checkpoint `{key}` in {} was saved by a run with the criteria {saved}, but this run's are \
         {now}: records one selects and the other does not would be skipped or replayed. Resume \
         with the same criteria, or pass --allow-criteria-change",
        dir.display()
    )
}

fn plan(args: &PlanArgs) -> anyhow::Result<Outcome> {
    let range = &args.range;
    let store = range.store.open_read()?;
    let criteria = range.criteria.criteria()?;
    let cursor = start(range, &Resume::default(), &criteria, store.as_ref())?.cursor;
    let config = ExecutionConfig::new(ExecutionSettings {
        batch_limit: range.batch,
        ..ExecutionSettings::default()
    })?;
    let executor = Executor::new(config, store.as_ref(), HandlerRegistry::new(), None)?;
    let plan = executor.plan_matching(&cursor, &criteria, range.until)?;
    let mut out = std::io::stdout().lock();
    if range.ndjson() {
        // The records as `export` writes them, byte for byte: spliced in as text, since
        // parsing and writing them again would change how numbers are written.
        let mut line = plan_json(&plan).to_string();
        line.pop();
        line.push_str(",\"records\":[");
        for (i, record) in plan.records().iter().enumerate() {
            if i > 0 {
                line.push(',');
            }
            line.push_str(&to_ndjson_line(record));
        }
        line.push_str("]}");
        writeln!(out, "{line}")?;
        return Ok(Outcome::Success);
    }
    writeln!(
        out,
        "plan: {} records after sequence {} (batch limit {}), planned at {}",
        plan.record_count(),
        cursor.last_consumed_sequence(),
        range.batch,
        timestamp::to_reference_text(plan.planned_at())
    )?;
    for record in plan.records() {
        writeln!(
            out,
            "{:>10}  {:<20}  {:<28}  {}",
            record.append_sequence(),
            record.artifact_name(),
            record.event_name().unwrap_or("-"),
            record.id()
        )?;
    }
    Ok(Outcome::Success)
}

fn execute(args: &RunArgs) -> anyhow::Result<Outcome> {
    let range = &args.range;
    let dry_run = !args.execute;
    if range.ndjson() && args.handler == HandlerKind::Print {
        bail!(
            "--format ndjson and --handler print both write records to standard output; choose one"
        );
    }
    if args.handler == HandlerKind::Exec && args.command.is_empty() {
        bail!("--handler exec needs a command after `--`, e.g. `--handler exec -- jq -c .`");
    }
    if args.handler != HandlerKind::Exec && !args.command.is_empty() {
        bail!("a command after `--` is only used by --handler exec");
    }
    let store = range.store.open_read()?;
    let criteria = range.criteria.criteria()?;
    let resume = Resume {
        save: !dry_run,
        retry_unconfirmed: args.retry_unconfirmed,
        skip_unconfirmed: args.skip_unconfirmed,
        allow_criteria_change: args.allow_criteria_change,
    };
    let Start {
        cursor,
        service: checkpoint,
        metadata: checkpoint_metadata,
        _lock,
    } = start(range, &resume, &criteria, store.as_ref())?;
    // What the checkpoint held stays (retention queries find its consumer by it); the
    // criteria's anchors are added or replace their keys, and the criteria are kept whole
    // so that a resume with others is seen.
    let mut checkpoint_metadata = with_criteria(checkpoint_metadata, &criteria);
    checkpoint_metadata.extend(anchors(&criteria));
    let config = ExecutionConfig::new(ExecutionSettings {
        dry_run,
        reinjection_enabled: args.reinject,
        reinjection_allowlist: args.allowlist.clone(),
        batch_limit: range.batch,
    })?;
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let handlers = handlers(args, &counts)?;
    let injector = if args.reinject {
        Some(injector(args, dry_run)?)
    } else {
        None
    };
    let mut executor =
        Executor::new(config, store.as_ref(), handlers, injector)?.stop_when(stop_on_signal()?);

    let end = match range.until {
        Some(until) => until,
        None => store.stats()?.last_sequence,
    };
    let first = cursor.last_consumed_sequence();
    let bar = progress(Some(end.saturating_sub(first)), "replaying");
    // One line per outcome, unless the handler's own output is the point (live print,
    // count, exec) or only the summary was asked for.
    let per_record =
        !range.ndjson() && !args.summary && (dry_run || args.handler == HandlerKind::None);
    let mut out = std::io::stdout().lock();
    let mut write_error = None;
    let options = RangeOptions {
        criteria: criteria.clone(),
        until: range.until,
        checkpoint: checkpoint.as_ref(),
        checkpoint_metadata,
        // Slow external side effects: a resume must not repeat one however the run ends
        // (the exec handler; live re-injection always saves after every record).
        save_every_record: !dry_run && args.handler == HandlerKind::Exec,
    };
    // What the batches so far did, for the summary of a run that ends in an error.
    let mut partial = (0_u64, 0_u64, 0_u64, 0_u64, first);
    let report = replay_range(&mut executor, cursor, &options, |result| {
        partial.0 += 1;
        partial.1 += result.plan().record_count() as u64;
        partial.2 += result.processed_count();
        partial.3 += result.skipped_count();
        if let Some(last) = result.last_dealt_sequence() {
            partial.4 = last;
        }
        if let Some(last) = result.plan().last_sequence() {
            bar.set_position(last.saturating_sub(first));
        }
        let written = if range.ndjson() {
            writeln!(out, "{}", batch_json(result))
        } else if per_record {
            result
                .outcomes()
                .iter()
                .try_for_each(|o| writeln!(out, "{}", outcome_line(o)))
        } else {
            Ok(())
        };
        if let Err(error) = written.and_then(|()| out.flush()) {
            write_error.get_or_insert(error);
        }
    });
    bar.finish_and_clear();
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            let (batches, records, processed, skipped, last) = partial;
            eprintln!(
                "{}replay ended by an error after {records} records in {batches} {}: {processed} \
                 processed, {skipped} skipped; last consumed sequence {last}",
                if dry_run { "dry-run: " } else { "" },
                if batches == 1 { "batch" } else { "batches" },
            );
            return Err(error.into());
        }
    };
    if let Some(error) = write_error {
        return Err(error.into());
    }
    let counts = counts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if range.ndjson() {
        let mut summary = json!({
            "dry_run": dry_run,
            "success": report.success(),
            "batches": report.batches,
            "records": report.records,
            "processed": report.processed,
            "skipped": report.skipped,
            "not_reached": report.not_reached,
            "unconfirmed_sequence": report.unconfirmed,
            "last_consumed_sequence": report.cursor.last_consumed_sequence(),
            "checkpoints_saved": report.checkpoints_saved,
            "error": report.error,
            "stopped_by_signal": report.stopped,
        });
        if args.handler == HandlerKind::Count && !dry_run {
            summary["counts"] = json!(counts);
        }
        writeln!(out, "{}", json!({ "summary": summary }))?;
    } else {
        if args.handler == HandlerKind::Count && !dry_run {
            for (key, count) in &counts {
                writeln!(out, "{count:>10}  {key}")?;
            }
        }
        let mut err = std::io::stderr().lock();
        writeln!(
            err,
            "{}{} records in {} {}: {} processed, {} skipped{}; last consumed sequence {}{}",
            if dry_run { "dry-run: " } else { "" },
            report.records,
            report.batches,
            if report.batches == 1 {
                "batch"
            } else {
                "batches"
            },
            report.processed,
            report.skipped,
            if report.not_reached > 0 {
                format!(", {} not reached", report.not_reached)
            } else {
                String::new()
            },
            report.cursor.last_consumed_sequence(),
            match (&checkpoint, report.checkpoints_saved) {
                (Some(service), saved) if saved > 0 =>
                    format!(" (saved to checkpoint `{}`)", service.key()),
                _ => String::new(),
            }
        )?;
        if let Some(error) = &report.error {
            writeln!(
                err,
                "replay stopped at sequence {}: {error}",
                report.cursor.last_consumed_sequence() + 1
            )?;
        }
        if let Some(sequence) = report.unconfirmed {
            writeln!(
                err,
                "record {sequence} was sent but its reply never came: it is unconfirmed (it may \
                 have run). The checkpoint marks it in flight; a resume refuses until told \
                 --skip-unconfirmed or --retry-unconfirmed"
            )?;
        }
        if report.stopped {
            writeln!(
                err,
                "replay stopped by a signal; a resume from the checkpoint starts at sequence {}",
                report.cursor.last_consumed_sequence() + 1
            )?;
        }
    }
    Ok(if report.success() {
        Outcome::Success
    } else {
        Outcome::ProblemsFound
    })
}

/// A flag that SIGINT or SIGTERM sets: the replay stops before its next record, after the
/// one in hand, and saves its progress, so that a resume neither skips nor repeats a
/// record (a live re-injection or `exec` repeated is a side effect done twice). A second
/// signal ends the process at once (exit 130).
fn stop_on_signal() -> anyhow::Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .context("cannot watch for SIGINT and SIGTERM")?;
    }
    Ok(stop)
}

/// The identity anchors of the criteria, saved as checkpoint metadata so that checkpoint
/// lookups and retention queries find this consumer.
fn anchors(criteria: &Criteria) -> JsonMap {
    let fields = criteria.fields();
    let mut metadata = JsonMap::new();
    for (key, value) in [
        (keys::REPLAY_SESSION_ID, &fields.replay_session_id),
        (keys::JOB_UUID, &fields.job_uuid),
        (keys::PBX_NODE_SLUG, &fields.pbx_node_slug),
        (keys::WORKER_SESSION_ID, &fields.worker_session_id),
    ] {
        if let Some(value) = value {
            metadata.insert(key.to_owned(), Value::String(value.clone()));
        }
    }
    metadata
}

fn handlers(
    args: &RunArgs,
    counts: &Arc<Mutex<BTreeMap<String, u64>>>,
) -> anyhow::Result<HandlerRegistry> {
    let make = || -> Option<Box<dyn Handler>> {
        match args.handler {
            HandlerKind::None => None,
            HandlerKind::Print => Some(Box::new(PrintHandler)),
            HandlerKind::Count => Some(Box::new(CountHandler {
                by: args.count_by,
                counts: Arc::clone(counts),
            })),
            HandlerKind::Exec => Some(Box::new(ExecHandler {
                command: args.command.clone(),
                output_to_stderr: args.range.ndjson(),
            })),
        }
    };
    let mut registry = HandlerRegistry::new();
    if args.handle_artifacts.is_empty() {
        if let Some(handler) = make() {
            registry.set_fallback(handler);
        }
    } else {
        for name in &args.handle_artifacts {
            if let Some(handler) = make() {
                registry.register(name.clone(), handler)?;
            }
        }
    }
    Ok(registry)
}

/// The injector for `--reinject`. Dry-run never calls it, so it can report would-be
/// re-injections without a target; live re-injection sends to `--reinject-to`.
fn injector(args: &RunArgs, dry_run: bool) -> anyhow::Result<Box<dyn Injector>> {
    if dry_run {
        return Ok(Box::new(NoTarget));
    }
    let Some(address) = &args.reinject_to else {
        bail!(
            "--reinject --execute needs an injector target: add --reinject-to HOST:PORT (a FreeSWITCH \
             event socket), or run without --execute to see what would be re-injected"
        );
    };
    let mut config = InjectorConfig::new(address.clone());
    config.password = injection_password(args.password_file.as_deref())?;
    if let Some(timeout) = args.reply_timeout {
        config.reply_timeout = timeout;
    }
    Ok(Box::new(
        EslInjector::new(config).context("cannot start the ESL injector")?,
    ))
}

/// The target's password: `--password-file` (first line), else `ESL_PASSWORD`, else
/// FreeSWITCH's default. Never taken from the command line.
fn injection_password(file: Option<&Path>) -> anyhow::Result<Password> {
    if let Some(path) = file {
        return Ok(Password::new(super::input::read_password_file(path)?));
    }
    Ok(match std::env::var("ESL_PASSWORD") {
        Ok(password) if !password.is_empty() => Password::new(password),
        _ => Password::default(),
    })
}

/// An injector for dry-runs: it has nowhere to send to and fails if ever called.
struct NoTarget;

impl Injector for NoTarget {
    fn name(&self) -> &str {
        "none"
    }

    fn inject(&mut self, _candidate: &ExecutionCandidate) -> Result<InjectionResult, BoxError> {
        Err("no injector target configured".into())
    }

    /// The ESL injector's own parse: a dry-run reports what a live run would reject.
    fn check(&self, candidate: &ExecutionCandidate) -> Result<(), BoxError> {
        command_line(candidate).map(|_| ()).map_err(Into::into)
    }
}

/// `--handler print`: each record as a reference NDJSON line on stdout.
struct PrintHandler;

impl Handler for PrintHandler {
    fn name(&self) -> &str {
        "print"
    }

    fn handle(&mut self, record: &Record) -> Result<HandlerResult, BoxError> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", to_ndjson_line(record))?;
        Ok(HandlerResult::new("printed", JsonMap::new())?)
    }
}

/// `--handler count`: counts by artifact or event name.
struct CountHandler {
    by: CountBy,
    counts: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl Handler for CountHandler {
    fn name(&self) -> &str {
        "count"
    }

    fn handle(&mut self, record: &Record) -> Result<HandlerResult, BoxError> {
        let key = match self.by {
            CountBy::Artifact => record.artifact_name(),
            CountBy::Event => record.event_name().unwrap_or("-"),
        };
        *self
            .counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.to_owned())
            .or_default() += 1;
        let mut metadata = JsonMap::new();
        metadata.insert("key".into(), Value::String(key.to_owned()));
        Ok(HandlerResult::new("counted", metadata)?)
    }
}

/// `--handler exec -- CMD ARGS`: runs the command once per record, the record as one
/// NDJSON line on its stdin; its exit status decides success.
struct ExecHandler {
    command: Vec<String>,
    /// With `--format ndjson`, the command's stdout goes to stderr so stdout stays JSON.
    output_to_stderr: bool,
}

impl Handler for ExecHandler {
    fn name(&self) -> &str {
        "exec"
    }

    fn handle(&mut self, record: &Record) -> Result<HandlerResult, BoxError> {
        let Some((program, arguments)) = self.command.split_first() else {
            return Err("no command given for --handler exec".into());
        };
        let stdout = if self.output_to_stderr {
            Stdio::from(std::io::stderr())
        } else {
            Stdio::inherit()
        };
        let mut child = Command::new(program)
            .args(arguments)
            .stdin(Stdio::piped())
            .stdout(stdout)
            .spawn()
            .map_err(|e| format!("cannot run `{program}`: {e}"))?;
        if let Some(mut stdin) = child.stdin.take() {
            let line = to_ndjson_line(record) + "\n";
            match stdin.write_all(line.as_bytes()) {
                // A command that does not read its input is free to exit early.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    let _ = child.wait();
                    return Err(format!("cannot write to `{program}`: {e}").into());
                }
                _ => {}
            }
        }
        let status = child
            .wait()
            .map_err(|e| format!("cannot wait for `{program}`: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`{program}` failed ({status}) for record at sequence {}",
                record.append_sequence()
            )
            .into());
        }
        let mut metadata = JsonMap::new();
        metadata.insert("exit_code".into(), json!(status.code()));
        Ok(HandlerResult::new("executed", metadata)?)
    }
}

fn plan_json(plan: &Plan) -> Value {
    json!({
        "from": {
            "last_consumed_sequence": plan.from().last_consumed_sequence(),
            "byte_offset_hint": plan.from().byte_offset_hint(),
        },
        "record_count": plan.record_count(),
        "is_dry_run": plan.is_dry_run(),
        "planned_at": timestamp::to_reference_text(plan.planned_at()),
    })
}

fn batch_json(result: &ExecutionResult) -> Value {
    json!({
        "plan": plan_json(result.plan()),
        "result": {
            "success": result.success(),
            "processed_count": result.processed_count(),
            "skipped_count": result.skipped_count(),
            "executed_at": timestamp::to_reference_text(result.executed_at()),
            "error": result.error(),
            "outcomes": result.outcomes(),
        },
    })
}

/// One outcome as a line for people: sequence, artifact, action, then the detail.
fn outcome_line(outcome: &ReplayOutcome) -> String {
    let record = outcome.record();
    let detail = match outcome {
        ReplayOutcome::DryRunSkip {
            handler,
            would_reinject,
            reinjection_reason,
            ..
        } => {
            let mut detail = match handler {
                Some(handler) => format!("would run {handler}"),
                None => "no handler".to_owned(),
            };
            if let Some(reason) = reinjection_reason {
                let verb = if *would_reinject {
                    "would re-inject"
                } else {
                    "would not re-inject"
                };
                detail.push_str(&format!("; {verb} ({reason})"));
            }
            detail
        }
        ReplayOutcome::Observed { .. } => String::new(),
        ReplayOutcome::Handled { handler, .. } => format!("by {handler}"),
        ReplayOutcome::ReinjectionRejected { reason, .. } => reason.to_string(),
        ReplayOutcome::Injected { metadata, .. } => Value::Object(metadata.clone()).to_string(),
    };
    format!(
        "{:>10}  {:<20}  {:<22}  {}",
        record.append_sequence,
        record.artifact_name,
        outcome.action(),
        detail
    )
    .trim_end()
    .to_owned()
}
