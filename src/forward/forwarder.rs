//! The forwarding loop shared by every target: read after the checkpoint, filter, publish,
//! save the checkpoint after each acknowledged batch, retry with backoff, keep metrics.

use std::time::{Duration, Instant};

use time::OffsetDateTime;
use tokio::sync::watch;

use super::{Backoff, Error, Message, Metrics, Sink, SinkError, Source};
use crate::checkpoint::CheckpointService;
use crate::record::{Criteria, JsonMap, ReadCursor, Record};

/// How a forwarder runs.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ForwardOptions {
    /// Only records matching these criteria are published; the others are skipped (the
    /// checkpoint still moves past them).
    pub criteria: Criteria,
    /// Records read (and at most published) per batch; one checkpoint save per batch.
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
    /// Extra metadata saved with every checkpoint (e.g. the target).
    pub checkpoint_metadata: JsonMap,
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
    /// Failed attempts that were retried.
    pub retries: u64,
    /// Why it returned.
    pub stopped: Stopped,
}

/// Forwards the records of `source` after the checkpoint of `checkpoints` into `sink` until
/// the store's end (or, with `follow`, until `shutdown` turns true).
///
/// Delivery is confirmed batch by batch: a batch's checkpoint is saved only after the sink
/// acknowledged every record in it, so a crash at any point re-sends at most the batch in
/// flight and never skips a record. Sink failures that may pass ([`SinkError::Unavailable`])
/// are retried forever with capped, fully jittered exponential backoff; shutdown interrupts
/// waits and backoffs, never a batch the sink is confirming.
///
/// # Errors
///
/// Store and checkpoint errors; [`Error::Rejected`] when the sink refuses a batch for good;
/// [`Error::InvalidOption`] for a zero batch size.
pub async fn forward<S: Sink>(
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
    let store = source.store();
    let resume = checkpoints.resume_state()?;
    let mut cursor = *resume.cursor();
    let resumed_after = cursor.last_consumed_sequence();
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
        "forwarding"
    );
    let mut progress = Progress {
        metrics,
        backoff: Backoff::new(options.retry_initial, options.retry_max),
        last_log: Instant::now(),
        log_interval: options.log_interval,
        started: Instant::now(),
        forwarded: 0,
        retries: 0,
    };
    progress.observe(source, resumed_after, None)?;
    let stopped = loop {
        if *shutdown.borrow() {
            break Stopped::Shutdown;
        }
        let acked = cursor.last_consumed_sequence();
        if end.is_some_and(|end| acked >= end) {
            break Stopped::EndReached;
        }
        let mut page = store.read_from_cursor(&cursor, options.batch_size, &Criteria::any())?;
        if let Some(end) = end {
            page.retain(|record| record.append_sequence() <= end);
        }
        let Some(last) = page.last().map(Record::append_sequence) else {
            if end.is_some() {
                // Nothing is left below the end (the rest was pruned while we ran).
                break Stopped::EndReached;
            }
            progress.observe(source, acked, None)?;
            progress.maybe_log(acked);
            let tick = progress.log_interval.min(Duration::from_secs(1));
            tokio::select! {
                waited = source.wait_after(acked) => waited?,
                _ = shutdown.changed() => {}
                () = tokio::time::sleep(tick) => {}
            }
            continue;
        };
        let oldest_pending = page.first().map(|record| *record.stored_at());
        let messages: Vec<Message> = page
            .iter()
            .filter(|record| options.criteria.matches(record))
            .map(Message::from_record)
            .collect();
        let skipped = (page.len() - messages.len()) as u64;
        drop(page);
        let delivery = if messages.is_empty() {
            Delivery::default()
        } else {
            match deliver(
                sink,
                &messages,
                source,
                acked,
                oldest_pending,
                &mut progress,
                &mut shutdown,
            )
            .await?
            {
                Some(delivery) => delivery,
                None => break Stopped::Shutdown,
            }
        };
        cursor = ReadCursor::new(last, None);
        checkpoints.save(cursor, options.checkpoint_metadata.clone())?;
        let delivered = messages.len() as u64 - delivery.duplicates - delivery.maybe_lost;
        metrics.record_batch(delivered, skipped, delivery.duplicates, delivery.maybe_lost);
        progress.forwarded += messages.len() as u64;
        progress.observe(source, last, None)?;
        progress.maybe_log(last);
    };
    let acked_sequence = cursor.last_consumed_sequence();
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
        retries: progress.retries,
        stopped,
    })
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
async fn deliver<S: Sink>(
    sink: &mut S,
    messages: &[Message],
    source: &Source,
    acked: u64,
    oldest_pending: Option<OffsetDateTime>,
    progress: &mut Progress<'_>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<Option<Delivery>, Error> {
    loop {
        match sink.publish(messages).await {
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
                progress.observe(source, acked, oldest_pending)?;
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
    use std::collections::VecDeque;

    use super::*;
    use crate::checkpoint::CheckpointStore;
    use crate::record::CriteriaFields;
    use crate::store::{ArtifactStore as _, LogStore, dataset};

    /// A sink that records what it was given and fails as scripted.
    #[derive(Default)]
    struct FakeSink {
        script: VecDeque<SinkError>,
        received: Vec<u64>,
        attempts: u32,
    }

    impl Sink for FakeSink {
        fn target(&self) -> &'static str {
            "fake"
        }

        async fn publish(&mut self, batch: &[Message]) -> Result<Delivery, SinkError> {
            self.attempts += 1;
            if let Some(error) = self.script.pop_front() {
                return Err(error);
            }
            self.received.extend(batch.iter().map(|m| m.sequence));
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
    fn a_rejected_batch_stops_without_moving_the_checkpoint() {
        let fixture = fixture(100);
        let mut sink = FakeSink::default();
        sink.script
            .push_back(SinkError::Rejected("WRONGTYPE".into()));
        let (_stop, shutdown) = watch::channel(false);
        let error = run(
            &fixture,
            &mut sink,
            &options(),
            &Metrics::new("fake"),
            shutdown,
        )
        .unwrap_err();
        assert!(
            matches!(error, Error::Rejected { target: "fake", .. }),
            "{error}"
        );
        assert_eq!(saved(&fixture), None);
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
        assert_eq!(saved(&fixture), None);

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
            crate::record::ndjson::to_ndjson_line(record).as_bytes()
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
