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
//! (progress up to the record before it is saved), 2 on errors.

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
use esl_replay::capture::{EslInjector, InjectorConfig, Password};
use esl_replay::checkpoint::{
    CheckpointService, CheckpointStore, CompatibilityValidator, ResumeState,
};
use esl_replay::record::{Criteria, JsonMap, ReadCursor, Record, keys, timestamp, to_ndjson_line};
use esl_replay::replay::{
    BoxError, ExecutionCandidate, ExecutionConfig, ExecutionResult, ExecutionSettings, Executor,
    Handler, HandlerRegistry, HandlerResult, InjectionResult, Injector, Outcome as ReplayOutcome,
    Plan, RangeOptions, replay_range,
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
    /// Stop after this append sequence (inclusive).
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
/// progress and the metadata the checkpoint held (which saves keep).
struct Start {
    cursor: ReadCursor,
    service: Option<CheckpointService>,
    metadata: JsonMap,
}

/// Where to start. Only a run that saves (`save`) creates a missing checkpoint directory;
/// otherwise a missing directory means a fresh start. Either way a start without a saved
/// checkpoint is said on standard error: a mistyped directory or key must not pass unseen.
fn start(args: &RangeArgs, save: bool, store: &dyn ArtifactReader) -> anyhow::Result<Start> {
    let (Some(dir), Some(key)) = (&args.checkpoint_dir, &args.checkpoint_key) else {
        return Ok(Start {
            cursor: ReadCursor::new(args.after.unwrap_or(0), None),
            service: None,
            metadata: JsonMap::new(),
        });
    };
    if dir.exists() && !dir.is_dir() {
        bail!("--checkpoint-dir {} is not a directory", dir.display());
    }
    if !save && !dir.is_dir() {
        eprintln!(
            "note: no checkpoint directory {}; starting at the first record",
            dir.display()
        );
        return Ok(Start {
            cursor: ReadCursor::start(),
            service: None,
            metadata: JsonMap::new(),
        });
    }
    let checkpoints = CheckpointStore::open(dir)
        .with_context(|| format!("cannot open the checkpoint directory {}", dir.display()))?;
    let state = ResumeState::resolve(&checkpoints, key)
        .with_context(|| format!("cannot load checkpoint `{key}`"))?;
    // Resuming past pruned records, or from beyond the end, would skip records unseen.
    let metadata = match state.checkpoint() {
        Some(checkpoint) => {
            CompatibilityValidator
                .assert_resumable(store, checkpoint)
                .with_context(|| {
                    format!("cannot resume from checkpoint `{key}` in {}", dir.display())
                })?;
            checkpoint.metadata().clone()
        }
        None => {
            eprintln!(
                "note: no checkpoint `{key}` in {}; starting at the first record",
                dir.display()
            );
            JsonMap::new()
        }
    };
    let service = CheckpointService::new(checkpoints, key.clone())
        .with_context(|| format!("--checkpoint-key {key:?} cannot name a checkpoint"))?;
    Ok(Start {
        cursor: *state.cursor(),
        service: Some(service),
        metadata,
    })
}

fn plan(args: &PlanArgs) -> anyhow::Result<Outcome> {
    let range = &args.range;
    let store = range.store.open_read()?;
    let criteria = range.criteria.criteria()?;
    let cursor = start(range, false, store.as_ref())?.cursor;
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
    let Start {
        cursor,
        service: checkpoint,
        metadata: mut checkpoint_metadata,
    } = start(range, !dry_run, store.as_ref())?;
    // What the checkpoint held stays (retention queries find its consumer by it); the
    // criteria's anchors are added or replace their keys.
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
    };
    let report = replay_range(&mut executor, cursor, &options, |result| {
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
    })?;
    bar.finish_and_clear();
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
            "{}{} records in {} {}: {} processed, {} skipped; last consumed sequence {}{}",
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
        if report.stopped {
            writeln!(
                err,
                "replay stopped by a signal; a resume from the checkpoint starts at sequence {}",
                report.cursor.last_consumed_sequence() + 1
            )?;
        }
    }
    Ok(if report.success() && !report.stopped {
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
    Ok(Box::new(
        EslInjector::new(config).context("cannot start the ESL injector")?,
    ))
}

/// The target's password: `--password-file` (first line), else `ESL_PASSWORD`, else
/// FreeSWITCH's default. Never taken from the command line.
fn injection_password(file: Option<&Path>) -> anyhow::Result<Password> {
    if let Some(path) = file {
        let text =
            super::input::read_text(path, super::input::MAX_SECRET_BYTES, "the password file")?;
        let line = text
            .lines()
            .next()
            .unwrap_or_default()
            .trim_end_matches('\r');
        if line.is_empty() {
            bail!("the password file {} is empty", path.display());
        }
        return Ok(Password::new(line));
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
