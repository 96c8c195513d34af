//! Evidence commands: `evidence reconstruct` builds a recovery evidence bundle from a store
//! window, `evidence compare` checks a saved bundle against a scenario expectation.
//!
//! JSON is the default output (the bundle or comparison export format, byte-stable);
//! `--format text` prints a summary for people. `compare` exits 0 when the bundle matches
//! the expectation and 1 when it does not.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::input::{MAX_BUNDLE_BYTES, MAX_SCENARIO_BYTES, read_text};
use super::store::{CriteriaArgs, StoreArg, progress};
use super::{Outcome, Output};
use esl_replay::checkpoint::{CheckpointStore, CompatibilityValidator};
use esl_replay::evidence::{
    ComparisonResult, Engine, EvidenceBundle, Issue, ReconstructionWindow,
    ReconstructionWindowFields, ScenarioExpectation, compare_scenario, export_bundle,
    export_comparison, parse_bundle, resolve_checkpoint_window,
};
use esl_replay::record::{JsonMap, ReadCursor};

#[derive(Debug, Subcommand)]
pub(crate) enum EvidenceCommand {
    /// Rebuild the recovery evidence of a window of a store as a bundle.
    Reconstruct(Box<ReconstructArgs>),
    /// Compare a saved bundle with a scenario expectation; exit 1 if it does not match.
    Compare(CompareArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ReconstructArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Start after this append sequence (0 = from the start of the stream).
    #[arg(long)]
    after: Option<u64>,
    /// The last append sequence included (default: read to the end).
    #[arg(long)]
    until: Option<u64>,
    #[command(flatten)]
    criteria: CriteriaArgs,
    /// Records read per store call (part of the bundle id), at most 100,000 (a call's
    /// records are held in memory).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_limit: u64,
    /// The checkpoint key: a label for the window, or, with --checkpoint-dir, the stored
    /// checkpoint to resume from.
    #[arg(long)]
    checkpoint_key: Option<String>,
    /// Checkpoint metadata to label the window with, as a JSON object.
    #[arg(long)]
    checkpoint_metadata: Option<String>,
    /// Resolve the window from the stored checkpoint --checkpoint-key in this directory:
    /// start at its cursor, carry its metadata, and refuse when its replay_session_id or
    /// recovery_generation_id contradicts the first record after it. Without
    /// --checkpoint-key it is not used.
    #[arg(long, env = super::CHECKPOINT_DIR_ENV)]
    checkpoint_dir: Option<PathBuf>,
    /// Use the reference's operation identity (a record without operation_id never joins
    /// the operation its job UUID belongs to), to reproduce reference bundles.
    #[arg(long)]
    reference_operation_identity: bool,
    /// Write the bundle to this file instead of stdout (exact bytes, no trailing newline).
    #[arg(long, short = 'o')]
    output: Option<PathBuf>,
    /// Output: `json` (the export format, compact and byte-stable, for tools) or `text`
    /// (a readable summary).
    #[arg(long, value_enum, default_value = "json")]
    format: Output,
}

#[derive(Debug, Args)]
pub(crate) struct CompareArgs {
    /// The bundle, as written by `evidence reconstruct`.
    #[arg(long)]
    bundle: PathBuf,
    /// The scenario expectation, a JSON object (see docs/evidence.md).
    #[arg(long)]
    expect: PathBuf,
    /// Output: `json` (the export format, compact and byte-stable, for tools) or `text`
    /// (a readable summary).
    #[arg(long, value_enum, default_value = "json")]
    format: Output,
}

pub(crate) fn run(command: &EvidenceCommand) -> anyhow::Result<Outcome> {
    match command {
        EvidenceCommand::Reconstruct(args) => reconstruct(args),
        EvidenceCommand::Compare(args) => compare(args),
    }
}

fn reconstruct(args: &ReconstructArgs) -> anyhow::Result<Outcome> {
    let store = args.store.open_read()?;
    if let Some(output) = &args.output {
        args.store.refuse_as_output(output)?;
    }
    let criteria = args.criteria.criteria()?;
    let criteria = (!criteria.is_empty()).then_some(criteria);
    let batch_limit = usize::try_from(args.batch_limit).context("--batch-limit is too large")?;
    let window = match (&args.checkpoint_dir, &args.checkpoint_key) {
        (Some(dir), Some(key)) => {
            if args.after.is_some() || args.checkpoint_metadata.is_some() {
                bail!(
                    "--after and --checkpoint-metadata come from the stored checkpoint {key} in \
                     {}: give them only without a checkpoint directory",
                    dir.display()
                );
            }
            super::checkpoint::not_a_file(dir)?;
            if !dir.is_dir() {
                bail!("checkpoint directory {} does not exist", dir.display());
            }
            let checkpoints = CheckpointStore::open(dir).with_context(|| {
                format!("cannot open the checkpoint directory {}", dir.display())
            })?;
            let checkpoint = checkpoints
                .load_for_resume(key)
                .with_context(|| format!("cannot load checkpoint {key}"))?
                .with_context(|| format!("no checkpoint {key} in {}", dir.display()))?;
            // A window whose first records were pruned, or beyond the end, would prove
            // something about records it never saw.
            CompatibilityValidator
                .assert_resumable(&*store, &checkpoint)
                .with_context(|| format!("cannot resume from checkpoint {key}"))?;
            resolve_checkpoint_window(&*store, &checkpoint, criteria, args.until, batch_limit)
                .with_context(|| format!("cannot resume from checkpoint {key}"))?
        }
        _ => {
            if let Some(after) = args.after.filter(|after| *after > 0)
                && let Some(pruned) = store.stats()?.pruned_through.filter(|p| *p > after)
            {
                bail!(
                    "records {} to {pruned} were pruned: a window after {after} would prove something about records it never saw (start at --after {pruned}, or without --after)",
                    after + 1
                );
            }
            ReconstructionWindow::new(ReconstructionWindowFields {
                from: match args.after {
                    None | Some(0) => ReadCursor::start(),
                    Some(after) => ReadCursor::new(after, None),
                },
                until_append_sequence: args.until,
                criteria,
                batch_limit,
                checkpoint_key: args.checkpoint_key.clone(),
                checkpoint_metadata: parse_metadata(args.checkpoint_metadata.as_deref())?,
            })
            .context("cannot build the evidence window from these flags")?
        }
    };
    let engine = if args.reference_operation_identity {
        Engine::reference()
    } else {
        Engine::new()
    };
    let bar = progress(None, "reconstructing");
    let bundle = engine
        .reconstruct_with_progress(&*store, &window, |records| bar.set_position(records))
        .context("reconstruction failed")?;
    bar.finish_and_clear();
    let text = match args.format {
        Output::Json => export_bundle(&bundle),
        Output::Text => bundle_summary(&bundle),
    };
    emit(&text, args.output.as_deref())?;
    Ok(Outcome::Success)
}

fn parse_metadata(text: Option<&str>) -> anyhow::Result<JsonMap> {
    let Some(text) = text else {
        return Ok(JsonMap::new());
    };
    match serde_json::from_str(text).context("--checkpoint-metadata is not valid JSON")? {
        Value::Object(map) => Ok(map),
        Value::Array(items) if items.is_empty() => Ok(JsonMap::new()),
        _ => bail!("--checkpoint-metadata must be a JSON object"),
    }
}

fn compare(args: &CompareArgs) -> anyhow::Result<Outcome> {
    let bundle_text = read_text(&args.bundle, MAX_BUNDLE_BYTES, "the bundle")?;
    let bundle = parse_bundle(&bundle_text)
        .with_context(|| format!("cannot use the evidence bundle {}", args.bundle.display()))?;
    let expect_text = read_text(&args.expect, MAX_SCENARIO_BYTES, "the expectation")?;
    let expectation: ScenarioExpectation = serde_json::from_str(&expect_text)
        .with_context(|| format!("{} is not a scenario expectation", args.expect.display()))?;
    let result = compare_scenario(&bundle, &expectation)?;
    let text = match args.format {
        Output::Json => export_comparison(&result),
        Output::Text => comparison_summary(&result),
    };
    emit(&text, None)?;
    Ok(if result.passed {
        Outcome::Success
    } else {
        Outcome::ProblemsFound
    })
}

/// Writes to the file (exact bytes) or to stdout (with a final newline).
fn emit(text: &str, output: Option<&Path>) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            if !text.ends_with('\n') {
                stdout.write_all(b"\n")?;
            }
            stdout.flush()?;
            Ok(())
        }
    }
}

fn issue_line(issue: &Issue) -> String {
    let at = match (issue.append_sequence, issue.artifact_name.as_deref()) {
        (Some(sequence), Some(name)) => format!("#{sequence} {name}"),
        (Some(sequence), None) => format!("#{sequence}"),
        _ => "window".to_owned(),
    };
    let mut line = format!(
        "  [{}] {} at {at}: {}",
        issue.kind.as_str(),
        issue.code.as_str(),
        issue.message
    );
    if !issue.details.is_empty() {
        line.push_str(&format!(" {}", Value::Object(issue.details.clone())));
    }
    line
}

fn or_none(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

fn bundle_summary(bundle: &EvidenceBundle) -> String {
    let manifest = &bundle.manifest;
    let mut out = String::new();
    let range = match (
        manifest.first_append_sequence,
        manifest.last_append_sequence,
    ) {
        (Some(first), Some(last)) => format!("sequences {first}..={last}"),
        _ => "no sequences".to_owned(),
    };
    out.push_str(&format!("bundle   {}\n", manifest.bundle_id));
    out.push_str(&format!("records  {} ({range})\n", manifest.record_count));
    out.push_str(&format!("verdict  {}\n", manifest.verdict.posture.as_str()));
    if manifest.verdict.issues.is_empty() {
        out.push_str("issues   none\n");
    } else {
        out.push_str(&format!("issues   {}\n", manifest.verdict.issues.len()));
        for issue in &manifest.verdict.issues {
            out.push_str(&issue_line(issue));
            out.push('\n');
        }
    }
    let snapshot = &bundle.continuity_snapshot;
    out.push_str("generations\n");
    if snapshot.recovery_generations.is_empty() {
        out.push_str("  none\n");
    }
    for generation in &snapshot.recovery_generations {
        out.push_str(&format!(
            "  #{} {} ({})\n",
            generation.append_sequence, generation.generation_id, generation.artifact_name
        ));
    }
    out.push_str(&format!(
        "postures continuity {}, retry {}, drain {}, reconstruction {}\n",
        or_none(snapshot.replay_continuity_posture.as_deref()),
        or_none(snapshot.retry_posture.as_deref()),
        or_none(snapshot.drain_posture.as_deref()),
        or_none(snapshot.reconstruction_posture.as_deref()),
    ));
    out.push_str(&format!("operations {}\n", bundle.operations.len()));
    for operation in &bundle.operations {
        let states: Vec<String> = operation
            .observed_states
            .iter()
            .map(|observed| format!("{} #{}", observed.state, observed.append_sequence))
            .collect();
        out.push_str(&format!(
            "  {} (kind {}, job {}): {}; final {}, retry {}, drain {}\n",
            operation.operation_id,
            or_none(operation.operation_kind.as_deref()),
            or_none(operation.bgapi_job_uuid.as_deref()),
            if states.is_empty() {
                "no states".to_owned()
            } else {
                states.join(" -> ")
            },
            or_none(operation.final_state.as_deref()),
            or_none(operation.retry_posture.as_deref()),
            or_none(operation.drain_posture.as_deref()),
        ));
    }
    out.push_str(&format!(
        "terminal publications {}\n",
        bundle.terminal_publications.len()
    ));
    for publication in &bundle.terminal_publications {
        out.push_str(&format!(
            "  #{} {} {} (operation {})\n",
            publication.append_sequence,
            publication.publication_id,
            publication.status,
            or_none(publication.operation_id.as_deref())
        ));
    }
    out.push_str(&format!(
        "lifecycle semantics {}\n",
        bundle.lifecycle_semantics.len()
    ));
    for semantic in &bundle.lifecycle_semantics {
        out.push_str(&format!(
            "  #{} {} {} (operation {})\n",
            semantic.append_sequence,
            semantic.semantic,
            semantic.posture,
            or_none(semantic.operation_id.as_deref())
        ));
    }
    out
}

fn comparison_summary(result: &ComparisonResult) -> String {
    let mut out = format!(
        "scenario {}: {}\nbundle   {}\n",
        result.scenario_name,
        if result.passed { "PASS" } else { "FAIL" },
        result.bundle_id
    );
    if result.issues.is_empty() {
        out.push_str("issues   none\n");
    } else {
        out.push_str(&format!("issues   {}\n", result.issues.len()));
        for issue in &result.issues {
            out.push_str(&issue_line(issue));
            out.push('\n');
        }
    }
    out
}
