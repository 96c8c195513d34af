//! Replay a whole range: plan and execute batch after batch from a cursor, advancing the
//! cursor (and optionally a checkpoint) as batches complete.

use std::cell::RefCell;

use serde_json::{Value, json};

use super::{Error, ExecutionResult, Executor, Step};
use crate::checkpoint::CheckpointService;
use crate::record::{Criteria, JsonMap, ReadCursor, Record};
use crate::store::{ArtifactReader, StoreStats};

/// The checkpoint metadata key that marks a record sent to a live target whose reply has
/// not come yet (see [`replay_range`]): an object with the record's `sequence`,
/// `record_id` and `artifact_name`. A checkpoint saved with it says "consumed up to the
/// record before, and this one may or may not have run".
pub const IN_FLIGHT_KEY: &str = "replay_in_flight";

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
    /// Saves the checkpoint after every record live execution deals with, not once per
    /// batch: for handlers and injectors with external side effects, which a resume must
    /// not repeat however the process ends. Live re-injection with a checkpoint always
    /// saves after every record.
    pub save_every_record: bool,
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
    /// Records planned but not dealt with: after a failure (the failing record included)
    /// or a stop, the rest of the batch.
    pub not_reached: u64,
    /// Checkpoints saved.
    pub checkpoints_saved: u64,
    /// The failing handler's or injector's message, if a batch failed; replay stopped there.
    pub error: Option<String>,
    /// Whether the executor was asked to stop ([`Executor::stop_when`]) before the range
    /// ended; the cursor (and checkpoint) cover the records dealt with until then.
    pub stopped: bool,
    /// The record whose injection failed after it may have been sent (no reply confirmed
    /// it): the checkpoint keeps it marked in flight ([`IN_FLIGHT_KEY`]).
    pub unconfirmed: Option<u64>,
}

impl RangeReport {
    /// Whether every planned record was dealt with: no failure and no stop.
    #[must_use]
    pub fn success(&self) -> bool {
        self.error.is_none() && !self.stopped
    }
}

/// Replays every record after `from` (matching the criteria, up to `until`) in batches of
/// the executor's batch limit, calling `on_batch` with each batch's result.
///
/// After each batch the cursor advances past the records that have an outcome and, in
/// live execution, the checkpoint is saved (after each record with
/// [`RangeOptions::save_every_record`]). When a handler or injector fails, the records
/// dealt with before it still count as consumed (their handlers ran, their commands were
/// sent: replaying them again on resume would repeat side effects), the checkpoint is
/// saved there, and the report carries the error; the failing record is the next one a
/// resume reads.
///
/// Live re-injection with a checkpoint saves it before each send with the record marked
/// in flight ([`IN_FLIGHT_KEY`]), and again once the record is dealt with. An injection
/// that fails after it may have been sent leaves the mark ([`RangeReport::unconfirmed`]):
/// whoever resumes must decide whether to send it again. One that fails before sending
/// anything ([`NotSent`](super::NotSent)) clears it.
///
/// Before each batch is executed, the store is checked for records pruned after the cursor
/// while the range ran (a prune that ignored this consumer): those would be skipped
/// unseen, so the range stops with [`crate::checkpoint::Error::Incompatible`] (with a
/// checkpoint) or [`Error::PrunedWhileReplaying`].
///
/// # Errors
///
/// Store read errors; checkpoint save errors (among them a checkpoint on disk already
/// past the one to save, [`crate::checkpoint::Error::WouldGoBack`]); records pruned while
/// the range ran; [`Error::UntilBeforeStart`] if `until` is below the cursor.
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
    let store = executor.store();
    let live_injection = executor.config().reinjection_enabled() && !executor.config().dry_run();
    let every_record = options.save_every_record || live_injection;
    let mut saver = Saver {
        store,
        service: options.checkpoint,
        metadata: &options.checkpoint_metadata,
        durable: 0,
        saved: None,
        in_flight: None,
        saves: 0,
    };
    // What was pruned when the range started: a fresh start begins at the first retained
    // record, so only prunes while it runs can pass it.
    let pruned_at_start = pruned_through(&store.stats()?);
    let mut report = RangeReport {
        cursor: from,
        ..RangeReport::default()
    };
    loop {
        let plan = executor.plan_matching(&report.cursor, &options.criteria, options.until)?;
        // A plan that holds every sequence from the cursor to its last lacks none: it needs
        // no look at the store's figures (a SQLite store counts its rows for them).
        let after = report.cursor.last_consumed_sequence();
        let lacks_none = plan.records().last().is_some_and(|last| {
            last.append_sequence().saturating_sub(after) == plan.record_count() as u64
        });
        if !lacks_none {
            check_not_pruned(
                &store.stats()?,
                &report.cursor,
                options,
                pruned_at_start,
                plan.records(),
            )?;
        }
        if plan.is_empty() {
            break;
        }
        let dry_run = plan.is_dry_run();
        let planned = plan.record_count() as u64;
        let saver_cell = RefCell::new(&mut saver);
        let failed_save = RefCell::new(None);
        let mut last_dealt = report.cursor.last_consumed_sequence();
        let result = executor.execute_with(plan, &mut |step| {
            if dry_run {
                return Ok(());
            }
            let mut saver = saver_cell.borrow_mut();
            let saved = match step {
                Step::Sending(record) if live_injection => saver.mark(last_dealt, record),
                Step::Dealt(record) => {
                    last_dealt = record.append_sequence();
                    if every_record {
                        saver.save(last_dealt)
                    } else {
                        Ok(())
                    }
                }
                Step::NotSent(_) if live_injection => saver.save(last_dealt),
                _ => Ok(()),
            };
            saved.map_err(|error| {
                let message = format!(
                    "cannot save progress: {}",
                    crate::storage::error_chain(&error)
                );
                *failed_save.borrow_mut() = Some(error);
                message
            })
        });
        report.batches += 1;
        report.records += planned;
        report.processed += result.processed_count();
        report.skipped += result.skipped_count();
        report.not_reached += planned - result.outcomes().len() as u64;
        on_batch(&result);
        if let Some(error) = failed_save.into_inner() {
            return Err(error);
        }
        if let Some(last) = result.last_dealt_sequence() {
            report.cursor = report.cursor.advance(last, None)?;
        }
        if let Some(unconfirmed) = saver.in_flight {
            // The injection failed after its command may have been sent: the checkpoint
            // keeps it marked in flight, and nothing more is saved.
            report.unconfirmed = Some(unconfirmed);
        } else if !dry_run && result.last_dealt_sequence().is_some() {
            saver.save(report.cursor.last_consumed_sequence())?;
        }
        if let Some(error) = result.error() {
            report.error = Some(error.to_owned());
            break;
        }
        if executor.stopping() {
            report.stopped = true;
            break;
        }
        if !result.success() {
            report.error = Some("execution failed".to_owned());
            break;
        }
    }
    report.checkpoints_saved = saver.saves;
    Ok(report)
}

/// Saves the checkpoint of a range, never past a record a power loss could take back.
struct Saver<'o, S: ?Sized> {
    store: &'o S,
    service: Option<&'o CheckpointService>,
    metadata: &'o JsonMap,
    /// Through this sequence every record is known durable.
    durable: u64,
    /// The sequence last saved without an in-flight mark.
    saved: Option<u64>,
    /// The sequence the saved checkpoint marks in flight.
    in_flight: Option<u64>,
    saves: u64,
}

impl<S: ArtifactReader + ?Sized> Saver<'_, S> {
    /// The cursor to save for `last` dealt: `last`, unless the store lost records since
    /// (the writer recovered without them after a power loss): a resume then reads
    /// whatever took their sequences.
    fn cursor(&mut self, last: u64) -> Result<ReadCursor, Error> {
        if last > self.durable {
            self.durable = self.store.sync_readable()?;
        }
        Ok(ReadCursor::new(last.min(self.durable), None))
    }

    /// Saves `last` as consumed (clearing any in-flight mark).
    fn save(&mut self, last: u64) -> Result<(), Error> {
        let Some(service) = self.service else {
            return Ok(());
        };
        if self.saved == Some(last) && self.in_flight.is_none() {
            return Ok(());
        }
        let cursor = self.cursor(last)?;
        service.save_advancing(cursor, self.metadata.clone())?;
        self.saved = Some(last);
        self.in_flight = None;
        self.saves += 1;
        Ok(())
    }

    /// Saves `last` as consumed with `record` marked in flight, before it is sent.
    fn mark(&mut self, last: u64, record: &Record) -> Result<(), Error> {
        let Some(service) = self.service else {
            return Ok(());
        };
        let cursor = self.cursor(last)?;
        let mut metadata = self.metadata.clone();
        metadata.insert(
            IN_FLIGHT_KEY.to_owned(),
            json!({
                "sequence": record.append_sequence(),
                "record_id": record.id().to_string(),
                "artifact_name": record.artifact_name(),
            }),
        );
        service.save_advancing(cursor, metadata)?;
        self.in_flight = Some(record.append_sequence());
        self.saves += 1;
        Ok(())
    }
}

/// The sequence of the record a checkpoint's metadata marks in flight ([`IN_FLIGHT_KEY`]),
/// if it marks one. A mark that is not an object holding an integer `sequence` reads as
/// `Some(None)`: something is marked, but not which record.
#[must_use]
pub fn in_flight_sequence(metadata: &JsonMap) -> Option<Option<u64>> {
    metadata
        .get(IN_FLIGHT_KEY)
        .map(|mark| mark.get("sequence").and_then(Value::as_u64))
}

/// The last sequence pruned, as the resume check judges it: the segment log's own record
/// of it, or, for a backend that keeps none (SQLite), the one before the first retained.
/// (The forwarder judges a prune the same way.)
fn pruned_through(stats: &StoreStats) -> u64 {
    stats.pruned_through.unwrap_or_else(|| {
        stats
            .first_sequence
            .map_or(stats.last_sequence, |first| first.saturating_sub(1))
    })
}

/// Fails if records after `cursor` that the range needs were pruned since it started
/// (the forwarder's check): looked up after the plan was read, so a
/// prune before the read took the last pruned record from it, and the plan lacks that
/// record; a prune after the read took records the plan holds, and one past them is
/// found by the next batch's look. A plan that lacks the last pruned record only because
/// the criteria left it out is refused too: which records the prune took cannot be told.
fn check_not_pruned(
    stats: &StoreStats,
    cursor: &ReadCursor,
    options: &RangeOptions<'_>,
    pruned_at_start: u64,
    planned: &[Record],
) -> Result<(), Error> {
    let after = cursor.last_consumed_sequence();
    let pruned = pruned_through(stats);
    if options.until.is_some_and(|until| until <= after) || pruned <= after.max(pruned_at_start) {
        return Ok(());
    }
    let holds_it = |last: &Record| {
        pruned > last.append_sequence()
            || planned
                .binary_search_by_key(&pruned, Record::append_sequence)
                .is_ok()
    };
    if planned.last().is_some_and(holds_it) {
        return Ok(());
    }
    let first_retained = stats
        .first_sequence
        .unwrap_or_else(|| stats.last_sequence.saturating_add(1));
    let required_next = after.saturating_add(1);
    Err(match options.checkpoint {
        Some(service) => crate::checkpoint::Error::Incompatible {
            key: service.key().to_owned(),
            first_retained,
            required_next,
        }
        .into(),
        None => Error::PrunedWhileReplaying {
            required_next,
            first_retained,
        },
    })
}
