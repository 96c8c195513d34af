//! Checkpoint commands: `checkpoint save`, `show`, `list`, `find` and `delete` on a
//! checkpoint directory.
//!
//! Output is for people by default; `--format json` prints compact JSON for scripts: one object
//! per checkpoint with the file layout's keys (`key`, `last_consumed_sequence`,
//! `byte_offset_hint`, `saved_at`, `metadata`) plus `file`, and a JSON array for `list`
//! and `find`. Commands that only read never create the directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::{CHECKPOINT_DIR_ENV, Outcome, Output};
use esl_replay::checkpoint::{
    Checkpoint, CheckpointCriteria, CheckpointReference, CheckpointStore, IdentityAnchors,
    LocatedCheckpoint, newest_first,
};
use esl_replay::record::canonical::{self, KeyOrder};
use esl_replay::record::{JsonMap, ReadCursor, php_map, timestamp};

#[derive(Debug, Subcommand)]
pub(crate) enum CheckpointCommand {
    /// Save a checkpoint, replacing the key's previous one (atomic and durable).
    Save(SaveArgs),
    /// Print the checkpoint of a key.
    Show(ShowArgs),
    /// Print every checkpoint in a directory, newest saved first; damaged files are
    /// reported on stderr and make the exit code 1.
    List(ListArgs),
    /// Print the checkpoints whose metadata matches every given identity anchor, newest
    /// saved first.
    Find(FindArgs),
    /// Delete the checkpoint of a key (its current and legacy files); deleting a missing
    /// checkpoint is not an error.
    Delete(DeleteArgs),
}

/// The checkpoint directory.
#[derive(Debug, Args)]
pub(crate) struct DirArg {
    /// The checkpoint directory.
    #[arg(long = "checkpoint-dir", short = 'd', env = CHECKPOINT_DIR_ENV)]
    dir: PathBuf,
}

impl DirArg {
    /// Opens the directory, creating it (for saves).
    fn create(&self) -> anyhow::Result<CheckpointStore> {
        not_a_file(&self.dir)?;
        CheckpointStore::open(&self.dir).with_context(|| {
            format!(
                "cannot open the checkpoint directory {}",
                self.dir.display()
            )
        })
    }

    /// Opens an existing directory (for reads and deletes, which must not create it).
    fn existing(&self) -> anyhow::Result<CheckpointStore> {
        not_a_file(&self.dir)?;
        if !self.dir.is_dir() {
            bail!("checkpoint directory {} does not exist", self.dir.display());
        }
        self.create()
    }
}

/// Refuses a `--checkpoint-dir` that names something other than a directory (a regular
/// file, say), which would otherwise be reported as missing or as "File exists".
pub(crate) fn not_a_file(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!("--checkpoint-dir {} is not a directory", dir.display());
    }
    Ok(())
}

/// The five identity anchors.
#[derive(Debug, Args, Default)]
pub(crate) struct AnchorArgs {
    /// Replay session id (metadata `replay_session_id`).
    #[arg(long)]
    replay_session_id: Option<String>,
    /// Background job UUID (metadata `job_uuid`).
    #[arg(long)]
    job_uuid: Option<String>,
    /// PBX node slug (metadata `pbx_node_slug`).
    #[arg(long)]
    pbx_node_slug: Option<String>,
    /// Worker session id (metadata `worker_session_id`).
    #[arg(long)]
    worker_session_id: Option<String>,
    /// Recovery generation id (metadata `recovery_generation_id`).
    #[arg(long)]
    recovery_generation_id: Option<String>,
}

impl AnchorArgs {
    fn anchors(&self) -> IdentityAnchors {
        IdentityAnchors {
            replay_session_id: self.replay_session_id.clone(),
            job_uuid: self.job_uuid.clone(),
            pbx_node_slug: self.pbx_node_slug.clone(),
            worker_session_id: self.worker_session_id.clone(),
            recovery_generation_id: self.recovery_generation_id.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct SaveArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The checkpoint key.
    #[arg(long)]
    key: String,
    /// The last consumed append sequence (0 = nothing consumed yet).
    #[arg(long)]
    sequence: u64,
    /// An advisory byte-offset hint.
    #[arg(long)]
    hint: Option<u64>,
    /// When it was saved, RFC 3339 (default: now). Files keep whole milliseconds.
    #[arg(long, value_parser = parse_time)]
    saved_at: Option<time::OffsetDateTime>,
    /// Metadata as a JSON object; identity anchors are added after its entries and
    /// override entries of the same name.
    #[arg(long)]
    metadata: Option<String>,
    #[command(flatten)]
    anchors: AnchorArgs,
    /// Output: text, or the saved checkpoint as JSON.
    #[arg(long, value_enum, default_value_t)]
    format: Output,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The checkpoint key.
    #[arg(long)]
    key: String,
    /// Output: text, or JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    format: Output,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Output: text, or JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    format: Output,
}

#[derive(Debug, Args)]
pub(crate) struct FindArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    anchors: AnchorArgs,
    /// At most this many checkpoints (at least 1).
    #[arg(long, default_value_t = CheckpointCriteria::DEFAULT_LIMIT as u64,
          value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "all")]
    limit: u64,
    /// Every matching checkpoint, without a limit.
    #[arg(long)]
    all: bool,
    /// Output: text, or JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    format: Output,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The checkpoint key.
    #[arg(long)]
    key: String,
    /// Output: text, or JSON for scripts.
    #[arg(long, value_enum, default_value_t)]
    format: Output,
}

fn parse_time(text: &str) -> Result<time::OffsetDateTime, String> {
    timestamp::parse(text).map_err(|e| e.to_string())
}

pub(crate) fn run(command: &CheckpointCommand) -> anyhow::Result<Outcome> {
    match command {
        CheckpointCommand::Save(args) => save(args),
        CheckpointCommand::Show(args) => show(args),
        CheckpointCommand::List(args) => list(args),
        CheckpointCommand::Find(args) => find(args),
        CheckpointCommand::Delete(args) => delete(args),
    }
}

fn parse_metadata(text: &str) -> anyhow::Result<JsonMap> {
    let value: Value = serde_json::from_str(text).context("--metadata is not valid JSON")?;
    // PHP writes an empty map as `[]`, so accept lists as the file reader does.
    php_map(value).or_else(|_| bail!("--metadata must be a JSON object"))
}

fn save(args: &SaveArgs) -> anyhow::Result<Outcome> {
    let metadata = match &args.metadata {
        Some(text) => parse_metadata(text)?,
        None => JsonMap::new(),
    };
    let reference = CheckpointReference::new(args.key.clone(), args.anchors.anchors(), metadata)
        .with_context(|| format!("cannot save checkpoint {:?}", args.key))?;
    let store = args.dir.create()?;
    let saved_at = args
        .saved_at
        .unwrap_or_else(|| timestamp::truncate_to_millis(store.now()));
    let checkpoint = Checkpoint::new(
        reference.key(),
        ReadCursor::new(args.sequence, args.hint),
        saved_at,
        reference.metadata_with_identity_anchors(),
    )
    .with_context(|| format!("cannot save checkpoint {:?}", args.key))?;
    store.save(&checkpoint)?;
    let path = store.path_for(checkpoint.key());
    let mut out = std::io::stdout().lock();
    if args.format.is_json() {
        writeln!(out, "{}", checkpoint_json(&checkpoint, &path)?)?;
    } else {
        writeln!(
            out,
            "saved checkpoint {:?} at sequence {} to {}",
            checkpoint.key(),
            checkpoint.cursor().last_consumed_sequence(),
            path.display()
        )?;
    }
    Ok(Outcome::Success)
}

fn show(args: &ShowArgs) -> anyhow::Result<Outcome> {
    let store = args.dir.existing()?;
    let Some(checkpoint) = store.load(&args.key)? else {
        bail!(
            "no checkpoint with key {:?} in {}",
            args.key,
            args.dir.dir.display()
        );
    };
    let path = file_of(&store, &args.key);
    let mut out = std::io::stdout().lock();
    if args.format.is_json() {
        writeln!(out, "{}", checkpoint_json(&checkpoint, &path)?)?;
    } else {
        let cursor = checkpoint.cursor();
        writeln!(out, "key         {}", checkpoint.key())?;
        writeln!(out, "sequence    {}", cursor.last_consumed_sequence())?;
        match cursor.byte_offset_hint() {
            Some(hint) => writeln!(out, "hint        {hint}")?,
            None => writeln!(out, "hint        -")?,
        }
        writeln!(
            out,
            "saved at    {}",
            timestamp::to_reference_text(checkpoint.saved_at())
        )?;
        writeln!(out, "file        {}", path.display())?;
        if checkpoint.metadata().is_empty() {
            writeln!(out, "metadata    -")?;
        } else {
            writeln!(out, "metadata")?;
            for (key, value) in checkpoint.metadata() {
                writeln!(out, "  {key:<24}  {}", compact(value)?)?;
            }
        }
    }
    Ok(Outcome::Success)
}

fn list(args: &ListArgs) -> anyhow::Result<Outcome> {
    let store = args.dir.existing()?;
    let mut good = Vec::new();
    let mut problems = Vec::new();
    for scanned in store.scan()? {
        match scanned.checkpoint {
            Ok(checkpoint) => good.push(LocatedCheckpoint {
                path: scanned.path,
                checkpoint,
            }),
            Err(error) => problems.push(error),
        }
    }
    good.sort_by(newest_first);
    print_checkpoints(&good, args.format.is_json())?;
    let mut err = std::io::stderr().lock();
    for problem in &problems {
        writeln!(err, "error: {}", esl_replay::storage::error_chain(problem))?;
    }
    Ok(if problems.is_empty() {
        Outcome::Success
    } else {
        Outcome::ProblemsFound
    })
}

fn find(args: &FindArgs) -> anyhow::Result<Outcome> {
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let criteria =
        CheckpointCriteria::new(args.anchors.anchors(), limit).context("invalid criteria")?;
    let store = args.dir.existing()?;
    let mut found = store.locate_all(Some(&criteria))?;
    if !args.all {
        found.truncate(criteria.limit());
    }
    print_checkpoints(&found, args.format.is_json())?;
    Ok(Outcome::Success)
}

fn delete(args: &DeleteArgs) -> anyhow::Result<Outcome> {
    let store = args.dir.existing()?;
    let deleted = store.delete(&args.key)?;
    let mut out = std::io::stdout().lock();
    if args.format.is_json() {
        let mut object = JsonMap::new();
        object.insert("key".into(), args.key.clone().into());
        object.insert("deleted".into(), deleted.into());
        writeln!(out, "{}", compact(&Value::Object(object))?)?;
    } else if deleted {
        writeln!(out, "deleted checkpoint {:?}", args.key)?;
    } else {
        writeln!(
            out,
            "no checkpoint {:?} in {} (nothing to delete)",
            args.key,
            args.dir.dir.display()
        )?;
    }
    Ok(Outcome::Success)
}

/// The file a loaded checkpoint came from: its current file if that exists, else the
/// legacy one.
fn file_of(store: &CheckpointStore, requested: &str) -> PathBuf {
    let current = store.path_for(requested);
    match store.legacy_path_for(requested) {
        Some(legacy) if !current.exists() => legacy,
        _ => current,
    }
}

fn print_checkpoints(checkpoints: &[LocatedCheckpoint], json: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        if checkpoints.is_empty() {
            writeln!(out, "[]")?;
        }
        for (index, located) in checkpoints.iter().enumerate() {
            let open = if index == 0 { "[" } else { "," };
            writeln!(
                out,
                "{open}{}",
                checkpoint_json(&located.checkpoint, &located.path)?
            )?;
        }
        if !checkpoints.is_empty() {
            writeln!(out, "]")?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<29}  {:>10}  {:>10}  key",
        "saved at", "sequence", "hint"
    )?;
    for LocatedCheckpoint { checkpoint, .. } in checkpoints {
        let cursor = checkpoint.cursor();
        writeln!(
            out,
            "{:<29}  {:>10}  {:>10}  {}",
            timestamp::to_reference_text(checkpoint.saved_at()),
            cursor.last_consumed_sequence(),
            cursor
                .byte_offset_hint()
                .map_or_else(|| "-".to_owned(), |hint| hint.to_string()),
            checkpoint.key()
        )?;
    }
    Ok(())
}

/// One checkpoint as a compact JSON object: the file layout's keys plus `file`.
fn checkpoint_json(checkpoint: &Checkpoint, path: &Path) -> anyhow::Result<String> {
    let cursor = checkpoint.cursor();
    let mut object = JsonMap::new();
    object.insert("key".into(), checkpoint.key().into());
    object.insert(
        "last_consumed_sequence".into(),
        cursor.last_consumed_sequence().into(),
    );
    object.insert(
        "byte_offset_hint".into(),
        cursor.byte_offset_hint().map_or(Value::Null, Value::from),
    );
    object.insert(
        "saved_at".into(),
        timestamp::to_reference_text(checkpoint.saved_at()).into(),
    );
    object.insert(
        "metadata".into(),
        Value::Object(checkpoint.metadata().clone()),
    );
    object.insert("file".into(), path.to_string_lossy().into_owned().into());
    compact(&Value::Object(object))
}

fn compact(value: &Value) -> anyhow::Result<String> {
    Ok(canonical::to_json(value, KeyOrder::Insertion)?)
}
