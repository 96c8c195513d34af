//! The forwarding loop shared by every target: read after the checkpoint, filter, publish
//! while reading the next batch, save the checkpoint after acknowledged batches (coalesced
//! to one save per interval), retry with backoff, keep metrics.

use std::sync::Arc;
use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::watch;

use super::routing::captured_event;
use super::{Backoff, Error, Message, MessageFormat, Metrics, Sink, SinkError, Source, Takes};
use crate::checkpoint::{CheckpointService, CompatibilityValidator};
use crate::record::{Criteria, JsonMap, ReadCursor};
use crate::storage::error_chain;
use crate::store::{ArtifactReader, StoreStats};

/// How a forwarder runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ForwardOptions {
    /// Only records matching these criteria are published; the others are skipped (the
    /// checkpoint still moves past them).
    pub criteria: Criteria,
    /// Records read (and at most published) per batch. Default: 1000. Minimum: 1.
    pub batch_size: usize,
    /// Keep following the store for new records; otherwise stop at the store's end as it
    /// was when the forwarder started.
    pub follow: bool,
    /// First retry delay ceiling.
    pub retry_initial: Duration,
    /// Largest retry delay ceiling.
    pub retry_max: Duration,
    /// How often a summary line is logged (at `info`).
    pub log_interval: Duration,
    /// Metadata saved with every checkpoint (e.g. the target), added to what the loaded
    /// checkpoint held.
    pub checkpoint_metadata: JsonMap,
    /// The shortest time between two checkpoint saves. The first acknowledged batch of a
    /// run is saved at once; later ones are saved together: at the first acknowledgement
    /// at least this long after the previous save, when this long has passed while the
    /// forwarder waits for new records, before a retry backoff, and always when it stops.
    /// A crash re-sends what was acknowledged since the last save (at most about this long
    /// of deliveries) plus the batch in flight. `Duration::ZERO` saves after every batch.
    /// Default: 1 s.
    pub checkpoint_interval: Duration,
    /// How records are written: whole records (the default), or captured events only in the
    /// `fs-events-v1` form, the other records skipped as the criteria skip them.
    pub format: MessageFormat,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            criteria: Criteria::any(),
            batch_size: 1000,
            follow: false,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(10),
            log_interval: Duration::from_secs(10),
            checkpoint_metadata: JsonMap::new(),
            checkpoint_interval: Duration::from_secs(1),
            format: MessageFormat::Record,
        }
    }
}

/// Why a forwarder returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Everything up to the store's end at start was delivered (without `follow`).
    EndReached,
    /// Shutdown was requested; the checkpoint holds the last acknowledged batch.
    Shutdown,
}

/// What a forwarder did.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ForwardReport {
    /// The sequence the checkpoint held at start (0 when starting fresh).
    pub resumed_after: u64,
    /// The sequence the checkpoint holds now.
    pub acked_sequence: u64,
    /// Records the target acknowledged (JetStream duplicates included).
    pub forwarded: u64,
    /// Records handed to core NATS whose flush failed: perhaps delivered, never resent.
    pub maybe_lost: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Why it returned.
    pub stopped: Stopped,
}

/// Forwards the records of `source` after the checkpoint of `checkpoints` into `sink` until
/// the store's end (or, with `follow`, until `shutdown` turns true).
///
/// Batches are published one at a time, in order; while the sink confirms one, the next is
/// read from the store and encoded (at most one batch ahead; it is published only after the
/// earlier one was acknowledged). The checkpoint only ever holds acknowledged records, and
/// saves are coalesced ([`ForwardOptions::checkpoint_interval`]); whenever the forwarder
/// returns, with or without an error, the last acknowledged batch is saved first. A crash
/// therefore re-sends the batch in flight plus what was acknowledged since the last save,
/// and never skips a record. Sink failures that may pass ([`SinkError::Unavailable`]) are
/// retried forever with capped, fully jittered exponential backoff; shutdown interrupts
/// waits and backoffs, never a batch the sink is confirming. While it runs, the forwarder
/// holds the key's run lock ([`CheckpointStore::lock`](crate::checkpoint::CheckpointStore::lock)),
/// so one key has one forwarder at a time.
///
/// # Errors
///
/// Store and checkpoint errors (among them the key's lock held by another forwarder, and a prune that removed records the forwarder had
/// not read yet, checked at the start and after every read); [`Error::Rejected`] when the
/// sink refuses a batch for good; [`Error::InvalidOption`] for a zero batch size. The error
/// is also left in `metrics` ([`MetricsSnapshot::stopped`](super::MetricsSnapshot::stopped)).
pub async fn forward<S: Sink>(
    source: &Source,
    sink: &mut S,
    checkpoints: &CheckpointService,
    options: &ForwardOptions,
    metrics: &Metrics,
    shutdown: watch::Receiver<bool>,
) -> Result<ForwardReport, Error> {
    let result = run_forwarder(source, sink, checkpoints, options, metrics, shutdown).await;
    if let Err(error) = &result {
        metrics.record_stopped(error_chain(error));
    }
    result
}

/// [`forward`], whose errors it marks in the metrics.
async fn run_forwarder<S: Sink>(
    source: &Source,
    sink: &mut S,
    checkpoints: &CheckpointService,
    options: &ForwardOptions,
    metrics: &Metrics,
    mut shutdown: watch::Receiver<bool>,
) -> Result<ForwardReport, Error> {
    if options.batch_size == 0 {
        return Err(Error::InvalidOption(
            "the batch size must be at least 1".into(),
        ));
    }
    // Held until the forwarder returns, and taken before the checkpoint is read: a second
    // forwarder of the key would deliver everything again and move its checkpoint back.
    let _key = checkpoints.store().lock(checkpoints.key())?;
    let store = source.store();
    let resume = checkpoints.resume_state()?;
    // What a checkpoint held stays (retention queries find its consumer by it); the
    // options' keys are added or replace their values.
    let mut metadata = resume
        .checkpoint()
        .map(|checkpoint| checkpoint.metadata().clone())
        .unwrap_or_default();
    metadata.extend(options.checkpoint_metadata.clone());
    match resume.checkpoint() {
        // Resuming past pruned records, or from beyond the end, would skip records unseen.
        Some(checkpoint) => CompatibilityValidator.assert_resumable(store, checkpoint)?,
        // Saved before the first read, so that retention (capture's `--retain-for`) keeps
        // what this consumer has not delivered yet.
        None => {
            checkpoints.save(*resume.cursor(), metadata.clone())?;
        }
    }
    let resumed_after = resume.cursor().last_consumed_sequence();
    let end = if options.follow {
        None
    } else {
        Some(store.stats()?.last_sequence)
    };
    tracing::info!(
        target = sink.target(),
        key = checkpoints.key(),
        resumed_after,
        end = ?end,
        checkpoint_interval = ?options.checkpoint_interval,
        "forwarding"
    );
    let mut progress = Progress {
        metrics,
        backoff: Backoff::new(options.retry_initial, options.retry_max),
        last_log: Instant::now(),
        log_interval: options.log_interval,
        started: Instant::now(),
        forwarded: 0,
        maybe_lost: 0,
        retries: 0,
    };
    let mut saver = Saver {
        service: checkpoints,
        metadata: &metadata,
        interval: options.checkpoint_interval,
        metrics,
        saved: resumed_after,
        acknowledged: resumed_after,
        last_save: None,
    };
    metrics.record_checkpoint(resumed_after);
    progress.observe(source, resumed_after, None)?;
    let run = Run {
        source,
        selection: Arc::new(Selection {
            criteria: options.criteria.clone(),
            takes: sink.takes(),
            format: options.format,
            batch_size: options.batch_size,
            key: checkpoints.key().to_owned(),
            pruned_at_start: pruned_through(&store.stats()?),
        }),
        end,
        cursor: *resume.cursor(),
    };
    // The sink's housekeeping runs exactly as long as the loop; if it ends early, it idles.
    let maintenance = sink.maintain();
    let maintenance = async move {
        maintenance.await;
        std::future::pending::<std::convert::Infallible>().await
    };
    let result = tokio::select! {
        result = run.forward(sink, &mut saver, &mut progress, &mut shutdown) => result,
        never = maintenance => match never {},
    };
    // Whatever happened, what the target acknowledged is saved before returning.
    let flushed = saver.flush();
    let stopped = match (result, flushed) {
        (Ok(stopped), Ok(())) => stopped,
        (Err(error), flushed) => {
            if let Err(save) = flushed {
                tracing::warn!(error = %error_chain(&save), "cannot save the last acknowledged batch");
            }
            return Err(error);
        }
        (Ok(_), Err(save)) => return Err(save),
    };
    let acked_sequence = saver.saved;
    progress.observe(source, acked_sequence, None)?;
    tracing::info!(
        target = sink.target(),
        acked_sequence,
        forwarded = progress.forwarded,
        retries = progress.retries,
        ?stopped,
        "forwarder stopped"
    );
    Ok(ForwardReport {
        resumed_after,
        acked_sequence,
        forwarded: progress.forwarded,
        maybe_lost: progress.maybe_lost,
        retries: progress.retries,
        stopped,
    })
}

/// The fixed inputs of one forwarding run and where reading has got to.
struct Run<'a> {
    source: &'a Source,
    /// What a batch read takes: the criteria and the batch size (shared with the thread
    /// that reads ahead).
    selection: Arc<Selection>,
    /// The last sequence to forward (the store's end at start), or `None` when following.
    end: Option<u64>,
    /// Where the next read starts: after the last batch read (acknowledged or not).
    cursor: ReadCursor,
}

/// A batch read from the store, ready to publish.
struct Batch {
    /// The last sequence read; the checkpoint moves to it once the batch is acknowledged.
    last: u64,
    /// When the first record of the batch was stored (for the lag in seconds).
    oldest_pending: Option<OffsetDateTime>,
    /// The records the criteria select, in append order.
    messages: Vec<Message>,
    /// When each of `messages` was captured (Unix nanoseconds), for the publish lag.
    captured: Vec<i128>,
    /// Records read but left out by the criteria, the sink or the message format.
    skipped: u64,
}

/// Which records a batch holds.
struct Selection {
    criteria: Criteria,
    /// What the sink takes (its streams' event lists).
    takes: Takes,
    format: MessageFormat,
    batch_size: usize,
    /// The checkpoint's key, for the error when a prune passed the forwarder.
    key: String,
    /// What was pruned when the forwarder started: a new forwarder starts at the first
    /// retained record, so only prunes while it runs can pass it.
    pruned_at_start: u64,
}

impl Run<'_> {
    /// Reads the batch after the cursor while the caller's sink confirms the previous one.
    /// A segment-log store is read on a blocking thread, in parallel; other stores (whose
    /// handles cannot be shared with another thread) are read on this task, after letting
    /// the sink's connection task take its batch.
    async fn read_ahead(&self) -> Result<Option<Batch>, Error> {
        let (cursor, end) = (self.cursor, self.end);
        match self.source {
            Source::Log(store) => {
                let store = Arc::clone(store);
                let selection = Arc::clone(&self.selection);
                tokio::task::spawn_blocking(move || {
                    let through = readable(end, store.durable_through()?);
                    read_batch(store.as_ref(), &cursor, &selection, through)
                })
                .await
                .map_err(Error::ReadAhead)?
            }
            Source::Other(store) => {
                yield_once().await;
                let through = readable(end, store.sync_readable()?);
                read_batch(store.as_ref(), &cursor, &self.selection, through)
            }
        }
    }

    /// The loop: returns why it stopped; the caller saves the last acknowledged batch.
    async fn forward<S: Sink>(
        mut self,
        sink: &mut S,
        saver: &mut Saver<'_>,
        progress: &mut Progress<'_>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<Stopped, Error> {
        let store = self.source.store();
        // The batch read while the previous one was being confirmed.
        let mut ahead: Option<Batch> = None;
        loop {
            saver.save_if_due()?;
            if *shutdown.borrow() {
                return Ok(Stopped::Shutdown);
            }
            let acked = saver.acknowledged;
            if self.end.is_some_and(|end| acked >= end) {
                return Ok(Stopped::EndReached);
            }
            // The durable bound is looked up only for a batch read here (one read ahead
            // looked it up on its own thread).
            let (batch, durable) = match ahead.take() {
                Some(batch) => (Some(batch), None),
                None => {
                    let durable = self.source.durable_through()?;
                    let through = readable(self.end, durable);
                    let batch = read_batch(store, &self.cursor, &self.selection, through)?;
                    (batch, Some(durable))
                }
            };
            let Some(batch) = batch else {
                if let Some(end) = self.end
                    && durable.is_none_or(|durable| durable >= end)
                {
                    // Nothing is left below the end (the rest was pruned while we ran).
                    return Ok(Stopped::EndReached);
                }
                progress.observe(self.source, acked, None)?;
                progress.maybe_log(acked);
                let tick = progress
                    .log_interval
                    .min(Duration::from_secs(1))
                    .min(saver.due_in());
                tokio::select! {
                    waited = self.source.wait_after(acked) => waited?,
                    _ = shutdown.changed() => {}
                    () = tokio::time::sleep(tick) => {}
                }
                continue;
            };
            self.cursor = ReadCursor::new(batch.last, None);
            let read_next = self.end.is_none_or(|end| batch.last < end);
            let (delivery, next) = if batch.messages.is_empty() {
                (Ok(Some(Delivery::default())), None)
            } else {
                // Biased: the sink's first poll hands it the batch before the read starts.
                tokio::join!(
                    biased;
                    deliver(
                        sink,
                        &batch,
                        self.source,
                        acked,
                        progress,
                        shutdown,
                        saver
                    ),
                    async {
                        if read_next {
                            Some(self.read_ahead().await)
                        } else {
                            None
                        }
                    }
                )
            };
            let Some(delivery) = delivery? else {
                return Ok(Stopped::Shutdown);
            };
            let sent = batch.messages.len() as u64;
            let delivered = sent - delivery.duplicates - delivery.maybe_lost;
            progress.metrics.record_batch(
                delivered,
                batch.skipped,
                delivery.duplicates,
                delivery.maybe_lost,
            );
            progress.metrics.record_publish_lag(&batch.captured);
            progress.forwarded += sent - delivery.maybe_lost;
            progress.maybe_lost += delivery.maybe_lost;
            saver.acknowledge(batch.last);
            drop(batch);
            ahead = next.transpose()?.flatten();
            progress.observe(self.source, saver.acknowledged, None)?;
            progress.maybe_log(saver.acknowledged);
        }
    }
}

/// Returns `Pending` once after waking its own task, so that tasks woken by the caller (a
/// connection task the sink handed a batch to) get a thread before the caller blocks in a
/// store read. Unlike `tokio::task::yield_now`, whose wake-up is deferred until a runtime
/// worker parks, this resumes at once when the caller is not itself a worker (the CLI
/// runs the forwarder in `Runtime::block_on`).
async fn yield_once() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

/// The last sequence a batch may hold: none after the end of a run that has one, and none
/// a power loss could take back.
fn readable(end: Option<u64>, durable: u64) -> u64 {
    end.map_or(durable, |end| end.min(durable))
}

/// Reads the batch after `cursor` (at most `batch_size` records, none after `through`) and
/// encodes the records the criteria select; `None` when there is nothing to read. Records
/// are viewed where they are stored, so a message's body is copied from the stored text.
///
/// A prune while the forwarder runs (one that ignored its checkpoint) must not make it skip
/// records, so every read is checked as a resume is: [`checkpoint::Error::Incompatible`]
/// when the store pruned a record after `cursor` that this read did not return.
///
/// [`checkpoint::Error::Incompatible`]: crate::checkpoint::Error::Incompatible
fn read_batch(
    store: &dyn ArtifactReader,
    cursor: &ReadCursor,
    selection: &Selection,
    through: u64,
) -> Result<Option<Batch>, Error> {
    let after = cursor.last_consumed_sequence();
    if after >= through {
        return Ok(None);
    }
    let (mut oldest_pending, mut read) = (None, Vec::with_capacity(selection.batch_size));
    let mut messages = Vec::with_capacity(selection.batch_size);
    let mut captured = Vec::with_capacity(selection.batch_size);
    store.visit_from_cursor(
        cursor,
        selection.batch_size,
        &Criteria::any(),
        &mut |record| {
            if record.append_sequence() > through {
                return;
            }
            read.push(record.append_sequence());
            oldest_pending.get_or_insert_with(|| record.stored_at());
            let event = captured_event(record.artifact_name(), record.event_name());
            if selection.criteria.matches_view(record)
                && selection.takes.takes(event)
                && let Some(message) = Message::encode(record, selection.format)
            {
                messages.push(message);
                captured.push(record.capture_unix_nanos());
            }
        },
    )?;
    // Looked up after the read: a record pruned before it was never returned, and the
    // last record pruned is then one after `after` that the read lacks. A prune after the
    // read took records it returned; one past them is found by the next read. A read that
    // holds every sequence from `after` to its last lacks none, and needs no look (a
    // SQLite store counts its rows for its figures).
    let lacks_none = read
        .last()
        .is_some_and(|&last| last.saturating_sub(after) == read.len() as u64);
    let stats = if lacks_none {
        None
    } else {
        Some(store.stats()?)
    };
    if let Some(stats) = stats.filter(|stats| {
        let pruned = pruned_through(stats);
        pruned > after.max(selection.pruned_at_start)
            && read
                .last()
                .is_none_or(|&last| pruned <= last && read.binary_search(&pruned).is_err())
    }) {
        return Err(crate::checkpoint::Error::Incompatible {
            key: selection.key.clone(),
            first_retained: stats
                .first_sequence
                .unwrap_or_else(|| stats.last_sequence.saturating_add(1)),
            required_next: after.saturating_add(1),
        }
        .into());
    }
    let Some(&last) = read.last() else {
        return Ok(None);
    };
    let skipped = read.len() as u64 - messages.len() as u64;
    Ok(Some(Batch {
        last,
        oldest_pending,
        messages,
        captured,
        skipped,
    }))
}

/// The last sequence pruned, as the resume check judges it: the segment log's own record
/// of it, or, for a backend that keeps none (SQLite), the one before the first retained.
fn pruned_through(stats: &StoreStats) -> u64 {
    stats.pruned_through.unwrap_or_else(|| {
        stats
            .first_sequence
            .map_or(stats.last_sequence, |first| first.saturating_sub(1))
    })
}

/// Saves the checkpoint of acknowledged batches, at most once per interval.
struct Saver<'a> {
    service: &'a CheckpointService,
    metadata: &'a JsonMap,
    interval: Duration,
    metrics: &'a Metrics,
    /// The sequence in the saved checkpoint.
    saved: u64,
    /// The last sequence of the last acknowledged batch (at or after `saved`).
    acknowledged: u64,
    /// When this run last saved; the first acknowledged batch of a run is saved at once.
    last_save: Option<Instant>,
}

impl Saver<'_> {
    /// Notes that everything up to `sequence` was acknowledged; saved by a later call.
    fn acknowledge(&mut self, sequence: u64) {
        self.acknowledged = sequence;
    }

    /// How long until a pending save is due (`Duration::MAX` when nothing is pending).
    fn due_in(&self) -> Duration {
        if self.acknowledged == self.saved {
            return Duration::MAX;
        }
        self.last_save.map_or(Duration::ZERO, |last| {
            self.interval.saturating_sub(last.elapsed())
        })
    }

    /// Saves the acknowledged position if it is newer than the saved one and the interval
    /// since the last save has passed.
    fn save_if_due(&mut self) -> Result<(), Error> {
        if self.due_in().is_zero() {
            self.flush()?;
        }
        Ok(())
    }

    /// Saves the acknowledged position now if it is newer than the saved one.
    fn flush(&mut self) -> Result<(), Error> {
        if self.acknowledged == self.saved {
            return Ok(());
        }
        self.service.save(
            ReadCursor::new(self.acknowledged, None),
            self.metadata.clone(),
        )?;
        self.saved = self.acknowledged;
        self.last_save = Some(Instant::now());
        self.metrics.record_checkpoint(self.saved);
        Ok(())
    }
}

/// What the sink reported for an acknowledged batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// Records the server already held (JetStream deduplication).
    pub duplicates: u64,
    /// Records sent without confirmation whose flush failed (core NATS; not resent).
    pub maybe_lost: u64,
}

impl Delivery {
    /// A delivery with these counts.
    #[must_use]
    pub fn new(duplicates: u64, maybe_lost: u64) -> Delivery {
        Delivery {
            duplicates,
            maybe_lost,
        }
    }
}

/// Publishes one batch until the sink acknowledges it; `None` if shutdown came first.
/// Before backing off after a failure, acknowledged progress not yet saved is saved.
async fn deliver<S: Sink>(
    sink: &mut S,
    batch: &Batch,
    source: &Source,
    acked: u64,
    progress: &mut Progress<'_>,
    shutdown: &mut watch::Receiver<bool>,
    saver: &mut Saver<'_>,
) -> Result<Option<Delivery>, Error> {
    loop {
        match sink.publish(&batch.messages).await {
            Ok(delivery) => {
                progress.backoff.reset();
                return Ok(Some(delivery));
            }
            Err(SinkError::Rejected(message)) => {
                progress.metrics.record_failure(&message);
                return Err(Error::Rejected {
                    target: sink.target(),
                    message,
                });
            }
            Err(SinkError::Unavailable(message)) => {
                progress.retries += 1;
                progress.metrics.record_failure(&message);
                let delay = progress.backoff.next_delay();
                tracing::warn!(
                    target = sink.target(),
                    error = %message,
                    attempt = progress.backoff.attempts(),
                    retry_in = ?delay,
                    "delivery failed; retrying"
                );
                saver.flush()?;
                progress.observe(source, acked, batch.oldest_pending)?;
                progress.maybe_log(acked);
                if *shutdown.borrow() {
                    return Ok(None);
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => return Ok(None),
                }
            }
        }
    }
}

/// Loop state for metrics and log lines.
struct Progress<'m> {
    metrics: &'m Metrics,
    backoff: Backoff,
    last_log: Instant,
    log_interval: Duration,
    started: Instant,
    forwarded: u64,
    maybe_lost: u64,
    retries: u64,
}

impl Progress<'_> {
    /// Updates the position gauges: the store's end and the age of the oldest pending record.
    fn observe(
        &mut self,
        source: &Source,
        acked: u64,
        oldest_pending: Option<OffsetDateTime>,
    ) -> Result<(), Error> {
        let store_last = source.store().stats()?.last_sequence;
        let lag_seconds = match oldest_pending {
            Some(stored_at) if store_last > acked => {
                (OffsetDateTime::now_utc() - stored_at).as_seconds_f64()
            }
            _ if store_last > acked => self.oldest_pending_age(source, acked)?,
            _ => 0.0,
        };
        self.metrics.record_position(acked, store_last, lag_seconds);
        Ok(())
    }

    /// The age of the first record after `acked`.
    fn oldest_pending_age(&self, source: &Source, acked: u64) -> Result<f64, Error> {
        let next =
            source
                .store()
                .read_from_cursor(&ReadCursor::new(acked, None), 1, &Criteria::any())?;
        Ok(next.first().map_or(0.0, |record| {
            (OffsetDateTime::now_utc() - *record.stored_at()).as_seconds_f64()
        }))
    }

    fn maybe_log(&mut self, acked: u64) {
        if self.last_log.elapsed() < self.log_interval {
            return;
        }
        self.last_log = Instant::now();
        let snapshot = self.metrics.snapshot();
        let rate = self.forwarded as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
        tracing::info!(
            acked_sequence = acked,
            forwarded = self.forwarded,
            records_per_second = rate.round(),
            lag_records = snapshot.lag_records,
            lag_seconds = snapshot.lag_seconds,
            retries = snapshot.retries,
            last_error = snapshot.last_error.as_deref().unwrap_or("-"),
            "forwarder progress"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, VecDeque};
    use std::sync::Arc;

    use super::*;
    use crate::checkpoint::CheckpointStore;
    use crate::record::CriteriaFields;
    use crate::store::{ArtifactStore as _, LogStore, dataset};

    /// A sink that records what it was given and fails as scripted.
    #[derive(Default)]
    struct FakeSink {
        /// Failures of the first attempts, in order.
        script: VecDeque<SinkError>,
        /// Failures by attempt number (1 is the first attempt).
        fail_at: BTreeMap<u32, SinkError>,
        /// The attempt that takes its batch and never answers (a crash while the target
        /// holds the batch unconfirmed), and who to tell when it is reached.
        hang_at: Option<(u32, Arc<tokio::sync::Notify>)>,
        /// Sequences of every batch the target took, re-sent ones again.
        received: Vec<u64>,
        /// First and last sequence of every attempt, and whether it succeeded.
        ranges: Vec<(u64, u64, bool)>,
        /// A checkpoint to look at on every attempt, and what it held then.
        watch: Option<CheckpointService>,
        seen: Vec<Option<u64>>,
        /// How long every attempt takes at least.
        delay: Duration,
        /// The attempt whose records the target may have lost (core NATS's failed flush).
        lose_at: Option<u32>,
        attempts: u32,
    }

    impl Sink for FakeSink {
        fn target(&self) -> &'static str {
            "fake"
        }

        async fn publish(&mut self, batch: &[Message]) -> Result<Delivery, SinkError> {
            self.attempts += 1;
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            if let Some(service) = &self.watch {
                let saved = service.load().unwrap();
                self.seen
                    .push(saved.map(|c| c.cursor().last_consumed_sequence()));
            }
            let first = batch.first().map_or(0, |m| m.sequence);
            let last = batch.last().map_or(0, |m| m.sequence);
            let failure = self
                .script
                .pop_front()
                .or_else(|| self.fail_at.remove(&self.attempts));
            self.ranges.push((first, last, failure.is_none()));
            if let Some(error) = failure {
                return Err(error);
            }
            self.received.extend(batch.iter().map(|m| m.sequence));
            if let Some((attempt, reached)) = &self.hang_at
                && *attempt == self.attempts
            {
                reached.notify_one();
                std::future::pending::<()>().await;
            }
            if self.lose_at == Some(self.attempts) {
                return Ok(Delivery::new(0, batch.len() as u64));
            }
            Ok(Delivery::default())
        }
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        source: Source,
        service: CheckpointService,
    }

    fn fixture(records: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let mut store = LogStore::open(dir.path().join("store")).unwrap();
        store
            .write_batch((0..records).map(dataset::envelope).collect())
            .unwrap();
        store.close().unwrap();
        let source = Source::from(LogStore::open_read_only(dir.path().join("store")).unwrap());
        let checkpoints = CheckpointStore::open(dir.path().join("checkpoints")).unwrap();
        let service = CheckpointService::new(checkpoints, "test").unwrap();
        Fixture {
            _dir: dir,
            source,
            service,
        }
    }

    fn options() -> ForwardOptions {
        ForwardOptions {
            retry_initial: Duration::from_millis(1),
            retry_max: Duration::from_millis(4),
            ..ForwardOptions::default()
        }
    }

    fn run(
        fixture: &Fixture,
        sink: &mut FakeSink,
        options: &ForwardOptions,
        metrics: &Metrics,
        shutdown: watch::Receiver<bool>,
    ) -> Result<ForwardReport, Error> {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(forward(
                &fixture.source,
                sink,
                &fixture.service,
                options,
                metrics,
                shutdown,
            ))
    }

    /// Runs to the end (or an error) without a shutdown and with throwaway metrics.
    fn run_to_end(
        fixture: &Fixture,
        sink: &mut FakeSink,
        options: &ForwardOptions,
    ) -> Result<ForwardReport, Error> {
        let (_stop, shutdown) = watch::channel(false);
        run(fixture, sink, options, &Metrics::new("fake"), shutdown)
    }

    fn batches(batch_size: usize, checkpoint_interval: Duration) -> ForwardOptions {
        ForwardOptions {
            batch_size,
            checkpoint_interval,
            ..options()
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// A sink that notes the saved checkpoint on every attempt.
    fn watching(fixture: &Fixture) -> FakeSink {
        FakeSink {
            watch: Some(fixture.service.clone()),
            ..FakeSink::default()
        }
    }

    /// Runs until the sink hangs on the batch it was told to, then drops the forwarder
    /// there, as a crash would (nothing runs after it: no final save); `None` then, or the
    /// report if the forwarder returned first.
    fn run_until_hang(
        fixture: &Fixture,
        sink: &mut FakeSink,
        options: &ForwardOptions,
    ) -> Option<ForwardReport> {
        let reached = sink
            .hang_at
            .as_ref()
            .map(|(_, reached)| Arc::clone(reached));
        let reached = reached.unwrap();
        let (_stop, shutdown) = watch::channel(false);
        let metrics = Metrics::new("fake");
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                tokio::select! {
                    report = forward(
                        &fixture.source,
                        sink,
                        &fixture.service,
                        options,
                        &metrics,
                        shutdown,
                    ) => Some(report.unwrap()),
                    () = reached.notified() => None,
                }
            })
    }

    fn saved(fixture: &Fixture) -> Option<u64> {
        fixture
            .service
            .load()
            .unwrap()
            .map(|c| c.cursor().last_consumed_sequence())
    }

    #[test]
    fn unavailable_batches_are_retried_and_the_checkpoint_follows_acks() {
        let fixture = fixture(2500);
        let mut sink = FakeSink::default();
        sink.script.push_back(SinkError::Unavailable("down".into()));
        sink.script
            .push_back(SinkError::Unavailable("still down".into()));
        let metrics = Metrics::new("fake");
        let (_stop, shutdown) = watch::channel(false);
        let report = run(&fixture, &mut sink, &options(), &metrics, shutdown).unwrap();
        assert_eq!(report.stopped, Stopped::EndReached);
        assert_eq!((report.forwarded, report.retries), (2500, 2));
        assert_eq!(sink.received, (1..=2500).collect::<Vec<_>>());
        assert_eq!(sink.attempts, 5, "3 batches, the first tried 3 times");
        assert_eq!(saved(&fixture), Some(2500));
        let snapshot = metrics.snapshot();
        assert_eq!((snapshot.forwarded, snapshot.retries), (2500, 2));
        assert_eq!(snapshot.last_error.as_deref(), Some("still down"));
        assert_eq!((snapshot.lag_records, snapshot.lag_seconds), (0, 0.0));
        assert!(snapshot.connected);
    }

    #[test]
    fn records_that_may_be_lost_are_not_counted_as_forwarded() {
        let fixture = fixture(300);
        let mut sink = FakeSink {
            lose_at: Some(2),
            ..FakeSink::default()
        };
        let (_stop, shutdown) = watch::channel(false);
        let metrics = Metrics::new("fake");
        let report = run(
            &fixture,
            &mut sink,
            &batches(100, Duration::ZERO),
            &metrics,
            shutdown,
        )
        .unwrap();
        assert_eq!((report.forwarded, report.maybe_lost), (200, 100));
        let snapshot = metrics.snapshot();
        assert_eq!((snapshot.forwarded, snapshot.maybe_lost), (200, 100));
        // Never resent: the checkpoint moves past them.
        assert_eq!(saved(&fixture), Some(300));
    }

    #[test]
    fn a_restart_resumes_after_the_checkpoint() {
        let fixture = fixture(2500);
        fixture
            .service
            .save(ReadCursor::new(1200, None), JsonMap::new())
            .unwrap();
        let mut sink = FakeSink::default();
        let (_stop, shutdown) = watch::channel(false);
        let report = run(
            &fixture,
            &mut sink,
            &options(),
            &Metrics::new("fake"),
            shutdown,
        )
        .unwrap();
        assert_eq!(report.resumed_after, 1200);
        assert_eq!(sink.received, (1201..=2500).collect::<Vec<_>>());
    }

    #[test]
    fn criteria_skip_records_but_the_checkpoint_moves_past_them() {
        let fixture = fixture(2500);
        let mut sink = FakeSink::default();
        let mut options = options();
        options.criteria = Criteria::new(CriteriaFields {
            artifact_name: Some("bgapi.complete".into()),
            ..CriteriaFields::default()
        })
        .unwrap();
        let metrics = Metrics::new("fake");
        let (_stop, shutdown) = watch::channel(false);
        run(&fixture, &mut sink, &options, &metrics, shutdown).unwrap();
        assert_eq!(sink.received.len(), 500);
        assert!(sink.received.iter().all(|s| (s - 1) % 5 == 0));
        assert_eq!(metrics.snapshot().skipped, 2000);
        assert_eq!(saved(&fixture), Some(2500));
    }

    #[test]
    fn shutdown_interrupts_backoff_and_following() {
        let fixture = fixture(100);
        // Down for good: shutdown ends the retries, the checkpoint stays where it was.
        let mut sink = FakeSink::default();
        for _ in 0..1000 {
            sink.script.push_back(SinkError::Unavailable("down".into()));
        }
        let (stop, shutdown) = watch::channel(false);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let _ = stop.send(true);
        });
        let report = run(
            &fixture,
            &mut sink,
            &options(),
            &Metrics::new("fake"),
            shutdown,
        )
        .unwrap();
        assert_eq!(report.stopped, Stopped::Shutdown);
        assert!(report.retries > 1);
        // Only the starting point, saved before the first read: nothing was delivered.
        assert_eq!(saved(&fixture), Some(0));

        // Following an idle store: shutdown ends the wait after everything was delivered.
        let mut sink = FakeSink::default();
        let mut options = options();
        options.follow = true;
        let (stop, shutdown) = watch::channel(false);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let _ = stop.send(true);
        });
        let report = run(
            &fixture,
            &mut sink,
            &options,
            &Metrics::new("fake"),
            shutdown,
        )
        .unwrap();
        assert_eq!(report.stopped, Stopped::Shutdown);
        assert_eq!(report.acked_sequence, 100);
        assert_eq!(sink.received.len(), 100);
    }

    #[test]
    fn a_sqlite_store_is_followed_by_polling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.sqlite");
        let mut store = crate::store::open(&path, None).unwrap();
        store
            .write_batch((0..300).map(dataset::envelope).collect())
            .unwrap();
        let source = Source::open_read_only(&path, None).unwrap();
        assert!(matches!(source, Source::Other(_)));
        let checkpoints = CheckpointStore::open(dir.path().join("checkpoints")).unwrap();
        let fixture = Fixture {
            _dir: dir,
            source,
            service: CheckpointService::new(checkpoints, "sqlite").unwrap(),
        };
        let mut options = options();
        options.follow = true;
        let (stop, shutdown) = watch::channel(false);
        let metrics = std::sync::Arc::new(Metrics::new("fake"));
        let watched = std::sync::Arc::clone(&metrics);
        let writer = std::thread::spawn(move || {
            // Appended while the forwarder follows: found by a later poll.
            std::thread::sleep(Duration::from_millis(150));
            store
                .write_batch((300..400).map(dataset::envelope).collect())
                .unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while watched.snapshot().acked_sequence < 400 && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = stop.send(true);
        });
        let mut sink = FakeSink::default();
        let report = run(&fixture, &mut sink, &options, &metrics, shutdown).unwrap();
        writer.join().unwrap();
        assert_eq!(report.acked_sequence, 400);
        assert_eq!(sink.received, (1..=400).collect::<Vec<_>>());
    }

    #[test]
    fn batches_read_ahead_are_published_in_order_and_a_failed_one_is_retried_whole() {
        let fixture = fixture(1050);
        let mut sink = FakeSink::default();
        for attempt in [2, 3, 7] {
            sink.fail_at
                .insert(attempt, SinkError::Unavailable("down".into()));
        }
        let report = run_to_end(&fixture, &mut sink, &batches(100, Duration::ZERO)).unwrap();
        assert_eq!(report.stopped, Stopped::EndReached);
        assert_eq!((report.forwarded, report.retries), (1050, 3));
        assert_eq!(sink.received, (1..=1050).collect::<Vec<_>>());
        // Every attempt starts right after the last acknowledged batch: a failed batch is
        // retried with the same records, and the batch read ahead is never sent before the
        // one before it was acknowledged.
        let mut acknowledged = 0;
        for &(first, last, ok) in &sink.ranges {
            assert_eq!(first, acknowledged + 1, "attempts: {:?}", sink.ranges);
            if ok {
                acknowledged = last;
            }
        }
        assert_eq!(acknowledged, 1050);
        assert_eq!(sink.ranges.len(), 11 + 3);
        assert_eq!(saved(&fixture), Some(1050));
    }

    #[test]
    fn a_rejected_batch_stops_after_saving_only_the_acknowledged_ones() {
        // Rejected at once: only the starting point, saved before the first read.
        let fixture = fixture(100);
        let mut sink = FakeSink::default();
        sink.script
            .push_back(SinkError::Rejected("WRONGTYPE".into()));
        let error = run_to_end(&fixture, &mut sink, &options()).unwrap_err();
        assert!(
            matches!(error, Error::Rejected { target: "fake", .. }),
            "{error}"
        );
        assert_eq!(saved(&fixture), Some(0));

        // Rejected mid-run, with an hour between saves.
        let fixture = self::fixture(1000);
        let mut sink = FakeSink::default();
        sink.fail_at
            .insert(3, SinkError::Rejected("WRONGTYPE".into()));
        let error = run_to_end(&fixture, &mut sink, &batches(100, HOUR)).unwrap_err();
        assert!(matches!(error, Error::Rejected { .. }), "{error}");
        // The batch read ahead of the rejected one was never sent.
        assert_eq!(sink.received, (1..=200).collect::<Vec<_>>());
        assert_eq!(sink.ranges.len(), 3);
        // Saved on the way out, although the interval had not passed.
        assert_eq!(saved(&fixture), Some(200));
    }

    #[test]
    fn checkpoint_saves_follow_the_interval_and_zero_saves_every_batch() {
        // Zero: when a batch is published, the one before it is already saved.
        let fixture = fixture(2500);
        let mut sink = watching(&fixture);
        let (_stop, shutdown) = watch::channel(false);
        let metrics = Metrics::new("fake");
        let report = run(
            &fixture,
            &mut sink,
            &batches(100, Duration::ZERO),
            &metrics,
            shutdown,
        )
        .unwrap();
        // The first batch finds the starting point saved before the first read.
        let every_batch: Vec<Option<u64>> = (0..25).map(|batch| Some(batch * 100)).collect();
        assert_eq!(sink.seen, every_batch);
        assert_eq!((report.acked_sequence, saved(&fixture)), (2500, Some(2500)));
        assert_eq!(metrics.snapshot().checkpoint_sequence, 2500);

        // An hour: the first batch is saved at once, the rest only at the end.
        let fixture = self::fixture(2500);
        let mut sink = watching(&fixture);
        let report = run_to_end(&fixture, &mut sink, &batches(100, HOUR)).unwrap();
        let mut first_only = vec![Some(100); 25];
        first_only[0] = Some(0);
        assert_eq!(sink.seen, first_only);
        assert_eq!((report.acked_sequence, saved(&fixture)), (2500, Some(2500)));
    }

    #[test]
    fn a_failed_attempt_saves_the_acknowledged_batches_before_backing_off() {
        let fixture = fixture(1000);
        let mut sink = watching(&fixture);
        sink.fail_at
            .insert(3, SinkError::Unavailable("down".into()));
        run_to_end(&fixture, &mut sink, &batches(100, HOUR)).unwrap();
        // The first batch is saved at once; the failure of batch 3 saves batch 2 before the
        // backoff; after that the hour holds further saves back until the end.
        assert_eq!(&sink.seen[..4], &[Some(0), Some(100), Some(100), Some(200)]);
        assert!(sink.seen[4..].iter().all(|seen| *seen == Some(200)));
        assert_eq!(saved(&fixture), Some(1000));
    }

    #[test]
    fn a_crash_between_coalesced_saves_resends_from_the_checkpoint_and_skips_nothing() {
        const TOTAL: u64 = 3000;
        // (checkpoint interval, least time per attempt, the attempt that hangs)
        let cases = [
            (Duration::ZERO, Duration::ZERO, 7),
            (HOUR, Duration::ZERO, 7),
            (Duration::from_millis(20), Duration::from_millis(2), 15),
        ];
        for (interval, delay, hang) in cases {
            let fixture = fixture(TOTAL);
            let options = batches(100, interval);
            let mut crashed = FakeSink {
                hang_at: Some((hang, Arc::new(tokio::sync::Notify::new()))),
                delay,
                ..FakeSink::default()
            };
            assert!(run_until_hang(&fixture, &mut crashed, &options).is_none());
            // The target took `hang` batches and confirmed all but the last.
            let taken = u64::from(hang) * 100;
            assert_eq!(crashed.received, (1..=taken).collect::<Vec<_>>());
            let acknowledged = taken - 100;
            let checkpoint = saved(&fixture).unwrap_or(0);
            assert!(
                checkpoint <= acknowledged,
                "{interval:?}: ahead of the acks"
            );
            if interval.is_zero() {
                assert_eq!(checkpoint, acknowledged, "every batch saved");
            } else if interval == HOUR {
                assert_eq!(
                    checkpoint, 100,
                    "only the first batch saved within the hour"
                );
            } else {
                // Saves came every 20 ms and every attempt takes 2 ms or more, so at most
                // 10 acknowledged batches wait for a save, plus the batch in flight.
                assert!(checkpoint > 100, "a coalesced save after the first batch's");
                assert!(
                    taken - checkpoint <= 1100,
                    "re-sends {}",
                    taken - checkpoint
                );
            }

            let mut restarted = FakeSink::default();
            let report = run_to_end(&fixture, &mut restarted, &options).unwrap();
            // It resumes right after the saved checkpoint: every record after it is sent
            // again, none before it, none skipped.
            assert_eq!(report.resumed_after, checkpoint);
            assert_eq!(
                restarted.received,
                (checkpoint + 1..=TOTAL).collect::<Vec<_>>()
            );
            assert_eq!(saved(&fixture), Some(TOTAL));
        }
    }

    #[test]
    fn a_caught_up_follower_saves_once_the_interval_has_passed() {
        let fixture = fixture(100);
        let mut options = batches(30, Duration::from_millis(50));
        options.follow = true;
        let (stop, shutdown) = watch::channel(false);
        let service = fixture.service.clone();
        // Stops the forwarder once the checkpoint holds everything; says whether it did.
        let watcher = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut held = false;
            while !held && Instant::now() < deadline {
                held = service
                    .load()
                    .unwrap()
                    .is_some_and(|c| c.cursor().last_consumed_sequence() == 100);
                std::thread::sleep(Duration::from_millis(5));
            }
            let _ = stop.send(true);
            held
        });
        let (mut sink, metrics) = (FakeSink::default(), Metrics::new("fake"));
        let report = run(&fixture, &mut sink, &options, &metrics, shutdown).unwrap();
        assert!(
            watcher.join().unwrap(),
            "saved while following, before shutdown"
        );
        assert_eq!(report.stopped, Stopped::Shutdown);
        assert_eq!(sink.received, (1..=100).collect::<Vec<_>>());
    }

    #[test]
    fn messages_carry_the_ndjson_line_and_routing_fields() {
        let fixture = fixture(1);
        let records = fixture
            .source
            .store()
            .read_from_cursor(&ReadCursor::start(), 1, &Criteria::any())
            .unwrap();
        let record = &records[0];
        let message = Message::from_record(record);
        assert_eq!(
            message.body.as_ref(),
            crate::record::to_ndjson_line(record).as_bytes()
        );
        let fields: Vec<(&str, String)> = message
            .routing_fields()
            .into_iter()
            .map(|(field, _, value)| (field, value))
            .collect();
        assert_eq!(fields[0], ("id", record.id().as_str().to_owned()));
        assert_eq!(fields[1], ("sequence", "1".to_owned()));
        assert_eq!(fields[2], ("artifact_name", "bgapi.complete".to_owned()));
        assert!(fields.contains(&("job_uuid", record.job_uuid().unwrap().to_owned())));
    }
}
