//! `prune`: plan or apply checkpoint-aware retention on a segment-log store.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use time::OffsetDateTime;

use super::{CHECKPOINT_DIR_ENV, Outcome, Output};
use esl_replay::checkpoint::{CheckpointCriteria, CheckpointStore, IdentityAnchors};
use esl_replay::record::timestamp;
use esl_replay::retention::{self, PrunePolicy, RetentionPlan};
use esl_replay::store::{ArtifactReader as _, Backend, LogStore};

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["plan", "apply"])))]
pub(crate) struct PruneArgs {
    /// The segment-log store directory.
    #[arg(long, short = 's', env = "ESL_REPLAY_STORE")]
    store: PathBuf,
    /// Only show what would be pruned.
    #[arg(long)]
    plan: bool,
    /// Prune: make the new start durable, then delete whole segments below it.
    #[arg(long)]
    apply: bool,
    /// Prune records captured at or before now minus this age (e.g. 7d, 12h, 90m); an age
    /// reaching before the earliest representable date prunes nothing.
    #[arg(long, value_parser = super::input::parse_age)]
    max_age: Option<Duration>,
    /// Then prune further while the stream is larger than this (e.g. 10GB, 512MiB, 1000000).
    #[arg(long, value_parser = parse_bytes)]
    max_bytes: Option<u64>,
    /// Never prune the newest this many records.
    #[arg(long, default_value_t = 0)]
    protect: u64,
    /// Directory of active checkpoints; none is pruned past (every checkpoint there counts,
    /// or those matching the query flags).
    #[arg(long, env = CHECKPOINT_DIR_ENV)]
    checkpoint_dir: Option<PathBuf>,
    /// Active checkpoints are those with this replay session id.
    #[arg(long, requires = "checkpoint_dir")]
    replay_session_id: Option<String>,
    /// Active checkpoints are those with this job UUID.
    #[arg(long, requires = "checkpoint_dir")]
    job_uuid: Option<String>,
    /// Active checkpoints are those with this PBX node slug.
    #[arg(long, requires = "checkpoint_dir")]
    pbx_node_slug: Option<String>,
    /// Active checkpoints are those with this worker session id.
    #[arg(long, requires = "checkpoint_dir")]
    worker_session_id: Option<String>,
    /// Active checkpoints are those with this recovery generation id.
    #[arg(long, requires = "checkpoint_dir")]
    recovery_generation_id: Option<String>,
    /// Prune even when the checkpoint directory holds no checkpoint, or the query matches
    /// none.
    #[arg(long)]
    allow_empty_checkpoint_query: bool,
    /// Prune even when a checkpoint names a sequence beyond the store's last one (it then
    /// protects nothing: it most likely belongs to another store).
    #[arg(long)]
    allow_checkpoint_beyond_end: bool,
    /// Plan against this instant (RFC 3339) instead of now, so plans are reproducible.
    #[arg(long, value_parser = |t: &str| timestamp::parse(t).map_err(|e| e.to_string()))]
    now: Option<OffsetDateTime>,
    /// Output: text, or JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    format: Output,
}

/// Parses a byte size such as `10GB`, `512MiB`, `64k` or `1000`.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().map_err(|error: std::num::ParseIntError| {
        if *error.kind() == std::num::IntErrorKind::PosOverflow {
            too_large(text)
        } else {
            format!("{text:?} is not a byte size (e.g. 10GB, 512MiB)")
        }
    })?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ));
        }
    };
    number.checked_mul(factor).ok_or_else(|| too_large(text))
}

fn too_large(text: &str) -> String {
    format!(
        "{text:?} is too large (at most {} bytes, about 18 EB)",
        u64::MAX
    )
}

pub(crate) fn run(args: &PruneArgs) -> anyhow::Result<Outcome> {
    if Backend::for_path(&args.store) == Backend::Sqlite {
        bail!(
            "{} is a SQLite store, and prune works on segment-log stores only (it removes whole \
             segments); a SQLite store keeps every row",
            args.store.display()
        );
    }
    // Retention truncates through a read-only handle ([TRUNC-01]), beside a running writer
    // (a capture daemon) or none: taking the writer lock, even for a moment, would refuse a
    // capture that starts meanwhile, and a plan only reads.
    let reader = LogStore::open_read_only(&args.store)
        .with_context(|| format!("cannot open the store {}", args.store.display()))?;
    let store: &LogStore = &reader;
    let checkpoints = match &args.checkpoint_dir {
        Some(dir) => {
            // Opening would create it: a mistyped path would then protect nothing.
            super::checkpoint::not_a_file(dir)?;
            if !dir.is_dir() {
                bail!(
                    "the checkpoint directory {} does not exist; pass the directory your consumers save their checkpoints in",
                    dir.display()
                );
            }
            let checkpoint_store = CheckpointStore::open(dir.clone())
                .with_context(|| format!("cannot open checkpoints in {}", dir.display()))?;
            let anchors = IdentityAnchors {
                replay_session_id: args.replay_session_id.clone(),
                job_uuid: args.job_uuid.clone(),
                pbx_node_slug: args.pbx_node_slug.clone(),
                worker_session_id: args.worker_session_id.clone(),
                recovery_generation_id: args.recovery_generation_id.clone(),
            };
            let query = if anchors.is_empty() {
                None
            } else {
                Some(CheckpointCriteria::new(
                    anchors,
                    CheckpointCriteria::DEFAULT_LIMIT,
                )?)
            };
            let found = retention::active_checkpoints(&checkpoint_store, query.as_ref(), args.allow_empty_checkpoint_query)
                .context("resolving active checkpoints (--allow-empty-checkpoint-query prunes when none match)")?;
            if found.is_empty() && !args.allow_empty_checkpoint_query {
                bail!(
                    "the checkpoint directory {} holds no checkpoint, so nothing would protect unconsumed records; pass --allow-empty-checkpoint-query to prune anyway",
                    dir.display()
                );
            }
            found
        }
        None => Vec::new(),
    };
    // A consumer cannot have consumed records that do not exist (§4.7 keeps such a
    // checkpoint compatible, and it would let everything be pruned).
    let stats = store.stats()?;
    let last = stats.last_sequence;
    if let Some(beyond) = checkpoints.iter().find(|c| c.last_consumed > last)
        && !args.allow_checkpoint_beyond_end
    {
        bail!(
            "checkpoint {:?} names sequence {}, beyond the store's last sequence {last}: it does not describe this store, and it would let every record be pruned; delete it (`esl-replay checkpoint delete`) or pass --allow-checkpoint-beyond-end",
            beyond.key,
            beyond.last_consumed
        );
    }
    let policy = PrunePolicy {
        max_record_age: args.max_age,
        max_stream_bytes: args.max_bytes,
        protected_record_count: args.protect,
    };
    if policy == PrunePolicy::default() {
        eprintln!("note: no --max-age or --max-bytes given, so nothing is pruned");
    }
    let now = args.now.unwrap_or_else(OffsetDateTime::now_utc);
    let bar = super::store::progress(Some(stats.records), "planning");
    let plan = retention::plan(store, &checkpoints, &policy, now, &mut |n| {
        bar.set_position(n)
    })?;
    bar.finish_and_clear();
    let mut out = std::io::stdout().lock();
    if args.plan {
        if args.format.is_json() {
            writeln!(out, "{}", plan_json(&plan, None))?;
        } else {
            print_plan(&mut out, &plan, checkpoints.len())?;
        }
        return Ok(Outcome::Success);
    }
    let result = retention::apply(store, plan, now)?;
    if args.format.is_json() {
        let applied = serde_json::json!({
            "changed": result.changed,
            "pruned_at": timestamp::to_reference_text(&result.pruned_at),
            "segments_removed": result.segments_removed,
            "bytes_reclaimed": result.bytes_reclaimed,
        });
        writeln!(out, "{}", plan_json(&result.plan, Some(applied)))?;
    } else {
        print_plan(&mut out, &result.plan, checkpoints.len())?;
        writeln!(
            out,
            "applied: {}; {} segments deleted, {} bytes reclaimed (space returns a whole segment at a time)",
            if result.changed {
                "pruned"
            } else {
                "nothing to prune"
            },
            result.segments_removed,
            result.bytes_reclaimed
        )?;
    }
    if !result.plan.size_target_satisfied {
        eprintln!(
            "warning: the size target is not met: active checkpoints or the protected window hold more records"
        );
    }
    Ok(Outcome::Success)
}

fn print_plan(
    out: &mut impl std::io::Write,
    plan: &RetentionPlan,
    checkpoints: usize,
) -> anyhow::Result<()> {
    let range = |s: &[u64]| match (s.first(), s.last()) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        _ => "none".to_owned(),
    };
    writeln!(
        out,
        "records     {} pruned ({}), {} retained",
        plan.pruned_count,
        range(&plan.pruned_sequences),
        plan.retained_count
    )?;
    writeln!(
        out,
        "bytes       {} -> {}",
        plan.stream_bytes_before, plan.stream_bytes_after
    )?;
    if let (Some(first), Some(last)) = (plan.retained_first_sequence, plan.retained_last_sequence) {
        writeln!(out, "retained    {first}..={last}")?;
    }
    let floor = plan
        .checkpoint_floor_sequence
        .map_or_else(|| "none".to_owned(), |f| f.to_string());
    writeln!(out, "checkpoints {checkpoints} active; floor {floor}")?;
    if let Some(start) = plan.protected_window_start_sequence {
        writeln!(out, "protected   from {start}")?;
    }
    writeln!(
        out,
        "size target {}",
        if plan.size_target_satisfied {
            "satisfied"
        } else {
            "NOT satisfied"
        }
    )?;
    Ok(())
}

/// The plan in the reference field names (snake_case).
fn plan_json(plan: &RetentionPlan, applied: Option<serde_json::Value>) -> serde_json::Value {
    let mut value = serde_json::json!({
        "stream_bytes_before": plan.stream_bytes_before,
        "stream_bytes_after": plan.stream_bytes_after,
        "pruned_count": plan.pruned_count,
        "retained_count": plan.retained_count,
        "pruned_sequences": plan.pruned_sequences,
        "retained_first_sequence": plan.retained_first_sequence,
        "retained_last_sequence": plan.retained_last_sequence,
        "checkpoint_floor_sequence": plan.checkpoint_floor_sequence,
        "protected_window_start_sequence": plan.protected_window_start_sequence,
        "size_target_satisfied": plan.size_target_satisfied,
    });
    if let (Some(applied), Some(map)) = (applied, value.as_object_mut()) {
        map.insert("result".into(), applied);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::parse_bytes;

    #[test]
    fn byte_sizes_parse_with_units() {
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert!(parse_bytes("12 parsecs").is_err());
        assert!(parse_bytes("GB").is_err());
    }
}
