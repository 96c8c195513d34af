//! Checkpoint-aware retention: planning and applying prefix prunes of a log store.
//!
//! Semantics follow reference §6 with decisions C7: the age pass prunes the prefix captured
//! at or before `now - max_record_age`; the size pass then prunes further only while the
//! stream is above `max_stream_bytes`; a policy with neither prunes nothing. The protected
//! newest-N window and the lowest active checkpoint cap both passes; a checkpoint whose next
//! needed record was already pruned fails the plan; a damaged record inside the range to be
//! pruned fails the plan (damage beyond it does not). Byte figures are the records' real
//! stored bytes (frame header and payload as stored, compressed in packed segments).
//!
//! Applying a plan truncates the log prefix through the log engine: the new start is made
//! durable first, then whole segments below it are deleted. This is safe beside a writer
//! appending in this or another process, and sequence numbering continues after any prune,
//! even one of everything (C1).

use std::time::Duration;

use time::OffsetDateTime;

use crate::checkpoint::{Checkpoint, CheckpointCriteria, CheckpointStore};
use crate::record::Record;
use crate::storage::Seq;
use crate::storage::error_chain;
use crate::store::LogStore;

/// Errors of retention.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A policy value is out of range.
    #[error("invalid prune policy: {0}")]
    InvalidPolicy(String),
    /// An active checkpoint needs a record that is no longer stored.
    #[error(
        "checkpoint {key} needs append sequence {needed}, but records from there on were pruned before it read them (the stream now starts at {first}); it is incompatible with the retained stream"
    )]
    IncompatibleCheckpoint {
        /// The checkpoint's key.
        key: String,
        /// The sequence it needs next.
        needed: u64,
        /// The first retained sequence.
        first: u64,
    },
    /// A checkpoint query matched nothing and an empty match was not allowed.
    #[error(
        "checkpoint query matched no active checkpoints; refusing to prune without them (pass the explicit opt-in to prune anyway)"
    )]
    NoActiveCheckpoints,
    /// A record in the range to prune does not decode.
    #[error("record at append sequence {sequence} inside the range to prune is damaged")]
    DamagedRecord {
        /// Its append sequence.
        sequence: u64,
        /// Why.
        #[source]
        source: crate::store::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The log engine failed.
    #[error(transparent)]
    Storage(#[from] crate::storage::Error),
    /// The checkpoint store failed.
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::Error),
}

/// The retention result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What to prune (§6.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PrunePolicy {
    /// Prune records captured at or before `now - max_record_age`.
    pub max_record_age: Option<Duration>,
    /// Then prune further while the stream is larger than this many bytes.
    pub max_stream_bytes: Option<u64>,
    /// Never prune the newest this many records.
    pub protected_record_count: u64,
}

/// An active checkpoint as retention sees it: its key and last consumed sequence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActiveCheckpoint {
    /// The checkpoint's key (for messages).
    pub key: String,
    /// The last append sequence it consumed.
    pub last_consumed: u64,
}

/// What a prune would do (§6.1), computed by [`plan`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionPlan {
    /// Stored bytes of the stream before the prune.
    pub stream_bytes_before: u64,
    /// Stored bytes after it.
    pub stream_bytes_after: u64,
    /// Records pruned.
    pub pruned_count: u64,
    /// Records retained.
    pub retained_count: u64,
    /// Append sequences of the pruned prefix, in order.
    pub pruned_sequences: Vec<u64>,
    /// First retained append sequence.
    pub retained_first_sequence: Option<u64>,
    /// Last retained append sequence.
    pub retained_last_sequence: Option<u64>,
    /// The lowest active checkpoint's last consumed sequence, when checkpoints were given.
    pub checkpoint_floor_sequence: Option<u64>,
    /// First sequence of the protected newest-N window.
    pub protected_window_start_sequence: Option<u64>,
    /// Whether the stream ends at or below `max_stream_bytes` (true when there is none).
    pub size_target_satisfied: bool,
    /// The log sequence the log will start at after the prune.
    pub(crate) new_log_start: Option<u64>,
}

/// What applying a plan did (§6.1).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionResult {
    /// The plan applied.
    pub plan: RetentionPlan,
    /// Whether anything was pruned.
    pub changed: bool,
    /// When it was applied.
    pub pruned_at: OffsetDateTime,
    /// Whole segment files deleted (space is reclaimed a segment at a time).
    pub segments_removed: usize,
    /// Bytes of files deleted.
    pub bytes_reclaimed: u64,
}

impl From<&Checkpoint> for ActiveCheckpoint {
    fn from(checkpoint: &Checkpoint) -> ActiveCheckpoint {
        ActiveCheckpoint {
            key: checkpoint.key().to_owned(),
            last_consumed: checkpoint.cursor().last_consumed_sequence(),
        }
    }
}

/// The active checkpoints of a checkpoint directory (§6.4 with C7): every checkpoint there,
/// or every one matching `query` — with no silent limit. A query that matches nothing fails
/// closed unless `allow_empty` is set, in which case the prune proceeds as an uncheckpointed
/// one.
///
/// # Errors
///
/// [`Error::NoActiveCheckpoints`]; checkpoint-store errors (a corrupt file names its path).
pub fn active_checkpoints(
    store: &CheckpointStore,
    query: Option<&CheckpointCriteria>,
    allow_empty: bool,
) -> Result<Vec<ActiveCheckpoint>> {
    let checkpoints = match query {
        Some(criteria) => store.find_all(criteria)?,
        None => store.list()?,
    };
    if checkpoints.is_empty() && query.is_some() && !allow_empty {
        return Err(Error::NoActiveCheckpoints);
    }
    Ok(checkpoints.iter().map(ActiveCheckpoint::from).collect())
}

/// Checks that no active checkpoint needs a record that is no longer stored (§4.7):
/// `pruned_through` is the append sequence of the last record pruned away (0 if none was),
/// and `first` the first retained one, for the message. A checkpoint whose next sequence is
/// above `pruned_through` lost nothing, whatever gap an import left before `first`.
///
/// # Errors
///
/// [`Error::IncompatibleCheckpoint`] for the first such checkpoint.
pub fn check_compatible(
    pruned_through: u64,
    first: u64,
    checkpoints: &[ActiveCheckpoint],
) -> Result<()> {
    for checkpoint in checkpoints {
        let needed = checkpoint.last_consumed.saturating_add(1);
        if needed <= pruned_through {
            return Err(Error::IncompatibleCheckpoint {
                key: checkpoint.key.clone(),
                needed,
                first,
            });
        }
    }
    Ok(())
}

/// Plans a prune of `store` under `policy` at `now` (§6.2 with C7).
///
/// `progress` is called with the number of records examined, now and then.
///
/// # Errors
///
/// An incompatible checkpoint, a damaged record inside the range to prune, storage errors.
pub fn plan(
    store: &LogStore,
    checkpoints: &[ActiveCheckpoint],
    policy: &PrunePolicy,
    now: OffsetDateTime,
    progress: &mut dyn FnMut(u64),
) -> Result<RetentionPlan> {
    let reader = store.log_reader();
    let first_log = reader.first_seq().0;
    let next_log = reader.next_seq()?.0;
    let count = next_log - first_log;
    let mut plan = RetentionPlan {
        size_target_satisfied: true,
        ..RetentionPlan::default()
    };
    if count == 0 {
        return Ok(plan);
    }
    let first = store.append_sequence_of(first_log);
    let last = store.append_sequence_of(next_log - 1);
    check_compatible(store.pruned_through(first_log), first, checkpoints)?;

    // Stored bytes of every record, from a raw scan (no decoding). Damage does not stop it
    // (verify reports it): the bytes of records it cannot read are left out, so the size
    // pass prunes no more for them, and damage inside the range to prune fails the walk
    // below.
    let mut before = 0u64;
    let mut examined = 0u64;
    let mut cursor = reader.cursor(Seq(first_log))?;
    loop {
        match cursor.next() {
            Ok(Some(found)) => {
                before += found.stored_bytes;
                examined += 1;
                if examined.is_multiple_of(100_000) {
                    progress(examined);
                }
            }
            Ok(None) => break,
            Err(error) if error.is_corruption() => {
                if cursor.skip_damage()?.is_none() {
                    break;
                }
            }
            Err(error) => return Err(error.into()),
        }
    }

    let floor = checkpoints.iter().map(|c| c.last_consumed).min();
    let protected_start = (policy.protected_record_count > 0).then(|| {
        last.saturating_sub(policy.protected_record_count - 1)
            .max(1)
    });
    let floor_or_last = floor.unwrap_or(last);
    let max_prunable = match protected_start {
        Some(start) => floor_or_last.min(start.saturating_sub(1)),
        None => floor_or_last,
    };
    let cutoff = policy.max_record_age.and_then(|age| age_cutoff(now, age));

    // Walk the prefix, decoding each candidate (a damaged one fails the plan).
    let mut pruned_bytes = 0u64;
    let mut cursor = reader.cursor(Seq(first_log))?;
    // No cutoff (no age policy, or one reaching past the earliest date): the age pass
    // prunes nothing.
    let mut age_pass = cutoff.is_some();
    let mut new_log_start = first_log;
    while let Some(found) = cursor.next()? {
        let size = found.stored_bytes;
        let record = store
            .decode_record(found)
            .map_err(|source| Error::DamagedRecord {
                sequence: store.append_sequence_of(new_log_start),
                source,
            })?;
        let sequence = record.append_sequence();
        if sequence > max_prunable {
            break;
        }
        if age_pass && !captured_at_or_before(&record, cutoff) {
            age_pass = false;
        }
        let over_size = policy
            .max_stream_bytes
            .is_some_and(|max| before - pruned_bytes > max);
        if !age_pass && !over_size {
            break;
        }
        plan.pruned_sequences.push(sequence);
        pruned_bytes += size;
        new_log_start += 1;
    }
    progress(count);

    plan.stream_bytes_before = before;
    plan.stream_bytes_after = before - pruned_bytes;
    plan.pruned_count = plan.pruned_sequences.len() as u64;
    plan.retained_count = count - plan.pruned_count;
    if plan.retained_count > 0 {
        plan.retained_first_sequence = Some(store.append_sequence_of(new_log_start));
        plan.retained_last_sequence = Some(last);
    }
    plan.checkpoint_floor_sequence = floor;
    plan.protected_window_start_sequence = protected_start;
    plan.size_target_satisfied = policy
        .max_stream_bytes
        .is_none_or(|max| plan.stream_bytes_after <= max);
    plan.new_log_start = (plan.pruned_count > 0).then_some(new_log_start);
    Ok(plan)
}

/// The capture-time cutoff `now - age`, or `None` when that lies before the earliest
/// representable date: no capture time can be that old, so nothing is old enough to prune.
#[must_use]
pub fn age_cutoff(now: OffsetDateTime, age: Duration) -> Option<OffsetDateTime> {
    time::Duration::try_from(age)
        .ok()
        .and_then(|age| now.checked_sub(age))
}

fn captured_at_or_before(record: &Record, cutoff: Option<OffsetDateTime>) -> bool {
    cutoff.is_some_and(|cutoff| {
        crate::record::timestamp::truncate_to_millis(*record.capture_timestamp()) <= cutoff
    })
}

/// Applies a plan: makes the new start durable, then deletes whole segments below it.
///
/// # Errors
///
/// Storage errors; the prune is then partial but consistent (the start, once durable, holds).
pub fn apply(
    store: &LogStore,
    plan: RetentionPlan,
    now: OffsetDateTime,
) -> Result<RetentionResult> {
    let Some(new_start) = plan.new_log_start else {
        return Ok(RetentionResult {
            plan,
            changed: false,
            pruned_at: now,
            segments_removed: 0,
            bytes_reclaimed: 0,
        });
    };
    let report = store.truncate_log_before(Seq(new_start))?;
    Ok(RetentionResult {
        plan,
        changed: report.moved,
        pruned_at: now,
        segments_removed: report.segments_removed,
        bytes_reclaimed: report.bytes_reclaimed,
    })
}

/// Plans and applies in one step.
///
/// # Errors
///
/// As [`plan`] and [`apply`].
pub fn prune(
    store: &LogStore,
    checkpoints: &[ActiveCheckpoint],
    policy: &PrunePolicy,
    now: OffsetDateTime,
) -> Result<RetentionResult> {
    let planned = plan(store, checkpoints, policy, now, &mut |_| {})?;
    apply(store, planned, now)
}

/// A policy run periodically beside a long-running writer (for example a capture daemon),
/// on a thread of its own through a read-only handle, so appends are never blocked.
#[derive(Debug)]
pub struct PeriodicPrune {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a periodic prune reports after each run.
pub type PruneReporter = Box<dyn FnMut(std::result::Result<&RetentionResult, &Error>) + Send>;

impl PeriodicPrune {
    /// Starts pruning the store at `root` every `interval`, honouring the checkpoints in
    /// `checkpoint_dir` (all of them are active). Failures are logged at error level,
    /// handed to `report` (for health and metrics) and retried next time.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a zero `interval` (the thread would prune without pause); the
    /// thread could not be spawned.
    pub fn start(
        root: std::path::PathBuf,
        checkpoint_dir: Option<std::path::PathBuf>,
        policy: PrunePolicy,
        interval: Duration,
        mut report: PruneReporter,
    ) -> std::io::Result<PeriodicPrune> {
        if interval.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "the interval between periodic prunes must be more than zero",
            ));
        }
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("esl-replay-retention".into())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(interval)
                {
                    let result = prune_once(&root, checkpoint_dir.as_deref(), &policy);
                    match &result {
                        Ok(result) if result.changed => tracing::info!(
                            pruned = result.plan.pruned_count,
                            segments = result.segments_removed,
                            bytes = result.bytes_reclaimed,
                            "periodic retention pruned the store"
                        ),
                        Ok(_) => {}
                        Err(error) => tracing::error!(
                            error = %error_chain(&error),
                            "periodic retention failed; retrying next period"
                        ),
                    }
                    report(result.as_ref());
                }
            })?;
        Ok(PeriodicPrune {
            stop,
            thread: Some(thread),
        })
    }

    /// Whether the schedule's thread is still running (it ends only when stopped, or if it
    /// died, which the owner should treat as a failure).
    #[must_use]
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the schedule and waits for a prune in progress to finish.
    pub fn stop(mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn prune_once(
    root: &std::path::Path,
    checkpoint_dir: Option<&std::path::Path>,
    policy: &PrunePolicy,
) -> Result<RetentionResult> {
    let store = LogStore::open_read_only(root)?;
    let checkpoints = match checkpoint_dir {
        Some(dir) => active_checkpoints(&CheckpointStore::open(dir.to_path_buf())?, None, true)?,
        None => Vec::new(),
    };
    prune(&store, &checkpoints, policy, OffsetDateTime::now_utc())
}
