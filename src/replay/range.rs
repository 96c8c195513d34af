//! Replay a whole range: plan and execute batch after batch from a cursor, advancing the
//! cursor (and optionally a checkpoint) as batches complete.

use super::{Error, ExecutionResult, Executor};
use crate::checkpoint::CheckpointService;
use crate::record::{Criteria, JsonMap, ReadCursor};
use crate::store::ArtifactReader;

/// What [`replay_range`] walks and where it records progress.
#[derive(Clone, Debug, Default)]
pub struct RangeOptions<'a> {
    /// Only records matching these criteria are planned (the cursor still moves by append
    /// sequence, so criteria never change cursor meaning).
    pub criteria: Criteria,
    /// The last append sequence to replay; `None` replays to the current end.
    pub until: Option<u64>,
    /// Saves the cursor here after every batch that live execution dealt with, once the
    /// store has made the batch's records durable ([`ArtifactReader::sync_readable`]).
    /// Dry-run never saves: a checkpoint says records were consumed, and dry-run consumes
    /// nothing.
    pub checkpoint: Option<&'a CheckpointService>,
    /// Metadata saved with each checkpoint.
    pub checkpoint_metadata: JsonMap,
}

/// How a range replay ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeReport {
    /// The cursor after the last record dealt with (the start cursor if none was).
    pub cursor: ReadCursor,
    /// Batches planned and executed (empty final plans not counted).
    pub batches: u64,
    /// Records planned.
    pub records: u64,
    /// Records processed (handled, observed or injected).
    pub processed: u64,
    /// Records skipped (dry-run, or rejected by the re-injection guard).
    pub skipped: u64,
    /// Checkpoints saved.
    pub checkpoints_saved: u64,
    /// The failing handler's or injector's message, if a batch failed; replay stopped there.
    pub error: Option<String>,
    /// Whether the executor was asked to stop ([`Executor::stop_when`]) before the range
    /// ended; the cursor (and checkpoint) cover the records dealt with until then.
    pub stopped: bool,
}

impl RangeReport {
    /// Whether every planned record was dealt with.
    #[must_use]
    pub fn success(&self) -> bool {
        self.error.is_none()
    }
}

/// Replays every record after `from` (matching the criteria, up to `until`) in batches of
/// the executor's batch limit, calling `on_batch` with each batch's result.
///
/// After each batch the cursor advances past the records that have an outcome and, in
/// live execution, the checkpoint is saved. When a handler or injector fails, the records
/// dealt with before it still count as consumed (their handlers ran, their commands were
/// sent: replaying them again on resume would repeat side effects), the checkpoint is
/// saved there, and the report carries the error; the failing record is the next one a
/// resume reads.
///
/// # Errors
///
/// Store read errors; checkpoint save errors; [`Error::UntilBeforeStart`] if `until` is
/// below the cursor.
pub fn replay_range<S: ArtifactReader + ?Sized>(
    executor: &mut Executor<'_, S>,
    from: ReadCursor,
    options: &RangeOptions<'_>,
    mut on_batch: impl FnMut(&ExecutionResult),
) -> Result<RangeReport, Error> {
    if let Some(until) = options.until
        && until < from.last_consumed_sequence()
    {
        return Err(Error::UntilBeforeStart {
            from: from.last_consumed_sequence(),
            until,
        });
    }
    // Through this sequence every record is known durable.
    let mut durable = 0;
    let mut report = RangeReport {
        cursor: from,
        ..RangeReport::default()
    };
    loop {
        let plan = executor.plan_matching(&report.cursor, &options.criteria, options.until)?;
        if plan.is_empty() {
            break;
        }
        let dry_run = plan.is_dry_run();
        let result = executor.execute(plan);
        report.batches += 1;
        report.records += result.plan().record_count() as u64;
        report.processed += result.processed_count();
        report.skipped += result.skipped_count();
        on_batch(&result);
        if let Some(last) = result.last_dealt_sequence() {
            report.cursor = report.cursor.advance(last, None)?;
            if !dry_run && let Some(service) = options.checkpoint {
                // Not past a record a power loss could take back: a resume would then skip
                // the records that took its sequence.
                if last > durable {
                    durable = executor.store().sync_readable()?;
                }
                let saved = if last > durable {
                    // Records since lost to a power loss (the writer recovered without them):
                    // a resume reads whatever took their sequences.
                    ReadCursor::new(durable, None)
                } else {
                    report.cursor
                };
                service.save(saved, options.checkpoint_metadata.clone())?;
                report.checkpoints_saved += 1;
            }
        }
        if !result.success() {
            report.error = Some(result.error().unwrap_or("execution failed").to_owned());
            break;
        }
        if executor.stopping() {
            report.stopped = true;
            break;
        }
    }
    Ok(report)
}
