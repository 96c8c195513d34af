//! Where a forwarder resumes: never past records it did not deliver. A checkpoint behind
//! pruned records or beyond the store's end is refused with an error that says what to do,
//! a forwarder without a checkpoint saves one before it reads, so that retention keeps
//! what it has not delivered, and it delivers only records a power loss cannot take back
//! (library `forward`, a sink that collects).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use esl_replay::checkpoint::{CheckpointService, CheckpointStore};
use esl_replay::forward::{
    Delivery, Error, ForwardOptions, Message, Metrics, Sink, SinkError, Source, Stopped, forward,
};
use esl_replay::record::{JsonMap, ReadCursor};
use esl_replay::retention::{self, PrunePolicy};
use esl_replay::storage::WATERMARK_PATIENCE;
use esl_replay::store::{ArtifactStore as _, Backend, LogStore, SqliteStore, dataset};

/// Collects the sequences it is sent; with `checkpoints`, also what the forwarder's
/// checkpoint said when the first batch arrived.
#[derive(Default)]
struct Collect {
    sent: Vec<u64>,
    checkpoints: Option<PathBuf>,
    saved_before_first_batch: Option<Option<u64>>,
}

impl Sink for Collect {
    fn target(&self) -> &'static str {
        "collect"
    }

    async fn publish(&mut self, batch: &[Message]) -> Result<Delivery, SinkError> {
        if let (Some(dir), None) = (&self.checkpoints, self.saved_before_first_batch) {
            let saved = service(dir)
                .load()
                .unwrap()
                .map(|c| c.cursor().last_consumed_sequence());
            self.saved_before_first_batch = Some(saved);
        }
        self.sent.extend(batch.iter().map(|m| m.sequence));
        Ok(Delivery::default())
    }
}

fn service(dir: &Path) -> CheckpointService {
    CheckpointService::new(CheckpointStore::open(dir).unwrap(), "forward.collect").unwrap()
}

fn run(store: &Path, checkpoints: &Path, sink: &mut Collect) -> Result<(u64, Stopped), Box<Error>> {
    let source = Source::from(LogStore::open_read_only(store).unwrap());
    run_source(&source, checkpoints, sink)
}

fn run_source(
    source: &Source,
    checkpoints: &Path,
    sink: &mut Collect,
) -> Result<(u64, Stopped), Box<Error>> {
    let mut options = ForwardOptions::default();
    options.batch_size = 7;
    let metrics = Metrics::new("collect");
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let report = runtime
        .block_on(forward(
            source,
            sink,
            &service(checkpoints),
            &options,
            &metrics,
            shutdown,
        ))
        .map_err(Box::new)?;
    Ok((report.acked_sequence, report.stopped))
}

fn store_of(dir: &Path, records: u64) -> (PathBuf, LogStore) {
    let path = dir.join("store");
    let mut store = LogStore::open(&path).unwrap();
    store
        .write_batch((0..records).map(dataset::envelope).collect())
        .unwrap();
    (path, store)
}

#[test]
fn a_new_forwarder_saves_its_checkpoint_before_it_reads() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_of(dir.path(), 30);
    store.close().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let mut sink = Collect {
        checkpoints: Some(checkpoints.clone()),
        ..Collect::default()
    };
    let (acked, stopped) = run(&path, &checkpoints, &mut sink).unwrap();
    assert_eq!(sink.saved_before_first_batch, Some(Some(0)));
    assert_eq!(sink.sent, (1..=30).collect::<Vec<_>>());
    assert_eq!((acked, stopped), (30, Stopped::EndReached));
}

/// One key, one forwarder: while another run holds the key, a forwarder sends nothing and
/// saves nothing; once it is released, the same call delivers everything.
#[test]
fn a_second_forwarder_of_one_key_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_of(dir.path(), 30);
    store.close().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let first = service_lock(&checkpoints);
    let mut sink = Collect::default();
    let refused = run(&path, &checkpoints, &mut sink).unwrap_err();
    assert!(
        matches!(
            *refused,
            Error::Checkpoint(esl_replay::checkpoint::Error::KeyInUse { .. })
        ),
        "{refused}"
    );
    assert!(sink.sent.is_empty());
    assert!(service(&checkpoints).load().unwrap().is_none());
    drop(first);
    assert_eq!(
        run(&path, &checkpoints, &mut sink).unwrap(),
        (30, Stopped::EndReached)
    );
    assert_eq!(sink.sent, (1..=30).collect::<Vec<_>>());
    drop(service_lock(&checkpoints));
}

fn service_lock(checkpoints: &Path) -> esl_replay::checkpoint::KeyLock {
    service(checkpoints)
        .store()
        .lock("forward.collect")
        .unwrap()
}

/// A forwarder that resumes keeps what its checkpoint held: metadata a retention query
/// finds the consumer by survives its saves.
#[test]
fn a_resumed_forwarder_keeps_its_checkpoints_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_of(dir.path(), 20);
    store.close().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let mut held = JsonMap::new();
    held.insert("recovery_generation_id".into(), "g1".into());
    service(&checkpoints)
        .save(ReadCursor::new(5, None), held)
        .unwrap();
    let (acked, _) = run(&path, &checkpoints, &mut Collect::default()).unwrap();
    assert_eq!(acked, 20);
    let saved = service(&checkpoints).load().unwrap().unwrap();
    assert_eq!(saved.cursor().last_consumed_sequence(), 20);
    assert_eq!(
        saved.metadata().get("recovery_generation_id"),
        Some(&"g1".into()),
        "{:?}",
        saved.metadata()
    );
}

/// A prune that did not honour the checkpoint (`prune --apply` without
/// `--checkpoint-dir`): resuming would skip records 11..=60.
#[test]
fn a_forwarder_refuses_to_resume_past_pruned_records() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_of(dir.path(), 100);
    let checkpoints = dir.path().join("checkpoints");
    service(&checkpoints)
        .save(ReadCursor::new(10, None), JsonMap::new())
        .unwrap();
    let keep_40 = PrunePolicy {
        max_record_age: None,
        max_stream_bytes: Some(1),
        protected_record_count: 40,
    };
    let pruned = retention::prune(&store, &[], &keep_40, time::OffsetDateTime::now_utc()).unwrap();
    assert_eq!(pruned.plan.retained_first_sequence, Some(61));
    store.close().unwrap();
    let mut sink = Collect::default();
    let error = run(&path, &checkpoints, &mut sink).unwrap_err();
    assert!(
        matches!(
            error.as_ref(),
            Error::Checkpoint(esl_replay::checkpoint::Error::Incompatible {
                required_next: 11,
                first_retained: 61,
                ..
            })
        ),
        "{error:?}"
    );
    assert!(sink.sent.is_empty());
    // Saved past the gap on purpose, it resumes there.
    service(&checkpoints)
        .save(ReadCursor::new(60, None), JsonMap::new())
        .unwrap();
    let (acked, _) = run(&path, &checkpoints, &mut sink).unwrap();
    assert_eq!(sink.sent, (61..=100).collect::<Vec<_>>());
    assert_eq!(acked, 100);
}

/// Delivers every batch; while delivering the first, it runs `prune` (a prune that does
/// not honour the forwarder's checkpoint, run while the forwarder is behind).
struct PruneWhileBehind {
    sent: Vec<u64>,
    prune: Option<Box<dyn FnOnce()>>,
}

impl Sink for PruneWhileBehind {
    fn target(&self) -> &'static str {
        "collect"
    }

    async fn publish(&mut self, batch: &[Message]) -> Result<Delivery, SinkError> {
        if let Some(prune) = self.prune.take() {
            prune();
        }
        self.sent.extend(batch.iter().map(|m| m.sequence));
        Ok(Delivery::default())
    }
}

/// Forwards `source` in batches of 7 with a sink that prunes while the first batch is
/// delivered; the error the forwarder stops with, and what it sent.
fn forward_while_pruned(
    source: &Source,
    checkpoints: &Path,
    prune: Box<dyn FnOnce()>,
) -> (Error, Vec<u64>) {
    let mut sink = PruneWhileBehind {
        sent: Vec::new(),
        prune: Some(prune),
    };
    let mut options = ForwardOptions::default();
    options.batch_size = 7;
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let error = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(forward(
            source,
            &mut sink,
            &service(checkpoints),
            &options,
            &Metrics::new("collect"),
            shutdown,
        ))
        .unwrap_err();
    (error, sink.sent)
}

/// A prune while the forwarder runs is refused as one before it resumes, with either
/// backend: the read after the first batch finds records 8..=60 pruned, and the forwarder
/// stops naming its position and the first retained record, its checkpoint after what it
/// delivered, instead of skipping to 61.
#[test]
fn a_prune_while_the_forwarder_is_behind_is_refused_not_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_of(dir.path(), 100);
    let checkpoints = dir.path().join("checkpoints");
    let source = Source::from(LogStore::open_read_only(&path).unwrap());
    let keep_40 = PrunePolicy {
        max_record_age: None,
        max_stream_bytes: Some(1),
        protected_record_count: 40,
    };
    let prune = Box::new(move || {
        let pruned =
            retention::prune(&store, &[], &keep_40, time::OffsetDateTime::now_utc()).unwrap();
        assert_eq!(pruned.plan.retained_first_sequence, Some(61));
    });
    let (error, sent) = forward_while_pruned(&source, &checkpoints, prune);

    let sqlite = dir.path().join("store.sqlite");
    let mut writer = SqliteStore::open(&sqlite).unwrap();
    writer
        .write_batch((0..100).map(dataset::envelope).collect())
        .unwrap();
    let sqlite_checkpoints = dir.path().join("sqlite-checkpoints");
    let source = Source::open_read_only(&sqlite, Some(Backend::Sqlite)).unwrap();
    let path = sqlite.clone();
    let prune = Box::new(move || {
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute("DELETE FROM replay_records WHERE append_sequence <= 60", [])
            .unwrap();
    });
    let (sqlite_error, sqlite_sent) = forward_while_pruned(&source, &sqlite_checkpoints, prune);
    drop(writer);

    for (error, sent, checkpoints) in [
        (error, sent, &checkpoints),
        (sqlite_error, sqlite_sent, &sqlite_checkpoints),
    ] {
        assert!(
            matches!(
                error,
                Error::Checkpoint(esl_replay::checkpoint::Error::Incompatible {
                    required_next: 8,
                    first_retained: 61,
                    ..
                })
            ),
            "{error:?}"
        );
        let text = esl_replay::storage::error_chain(&error);
        assert!(
            text.contains("resumes at sequence 8") && text.contains("sequence is 61"),
            "{text}"
        );
        assert_eq!(sent, (1..=7).collect::<Vec<_>>());
        let saved = service(checkpoints).load().unwrap().unwrap();
        assert_eq!(saved.cursor().last_consumed_sequence(), 7);
    }
}

/// A checkpoint of another store (the default key names the target, not the store).
#[test]
fn a_forwarder_refuses_to_resume_from_beyond_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (path, store) = store_of(dir.path(), 50);
    store.close().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    service(&checkpoints)
        .save(ReadCursor::new(1_000, None), JsonMap::new())
        .unwrap();
    let mut sink = Collect::default();
    let error = run(&path, &checkpoints, &mut sink).unwrap_err();
    assert!(
        matches!(
            error.as_ref(),
            Error::Checkpoint(esl_replay::checkpoint::Error::BeyondEnd {
                last_consumed: 1_000,
                last_sequence: 50,
                ..
            })
        ),
        "{error:?}"
    );
    assert!(sink.sent.is_empty());
}

/// Polls `done` every few milliseconds; panics after 30 s.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A store whose writer syncs only when told (`OsOnly`), holding `records` records in its
/// files, none of them synced.
fn unsynced_store(dir: &Path, records: u64) -> (PathBuf, LogStore) {
    let root = dir.join("store");
    let writer = crate::support::process::unsynced_store(
        &root,
        (0..records).map(dataset::envelope).collect(),
    );
    (root, writer)
}

/// [META-04] A record a power loss could take back is not forwarded: records a writer has
/// written but not synced wait until it syncs them.
#[test]
fn only_records_the_writer_made_durable_are_forwarded() {
    let dir = tempfile::tempdir().unwrap();
    let (root, mut writer) = unsynced_store(dir.path(), 10);
    writer.log_reader().sync().unwrap();
    writer
        .write_batch((10..20).map(dataset::envelope).collect())
        .unwrap();
    let source = Source::from(LogStore::open_read_only(&root).unwrap());
    let mut options = ForwardOptions::default();
    options.follow = true;
    let metrics = Metrics::new("collect");
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut sink = Collect::default();
    let forwarded = || metrics.snapshot().forwarded;
    let checkpoints = service(&dir.path().join("checkpoints"));
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let forwarding = forward(
                &source,
                &mut sink,
                &checkpoints,
                &options,
                &metrics,
                shutdown,
            );
            let checks = async {
                wait_until("the synced records are forwarded", || forwarded() == 10).await;
                // Less than the patience after which a follower syncs for itself.
                tokio::time::sleep(WATERMARK_PATIENCE / 3).await;
                assert_eq!(forwarded(), 10, "unsynced records were forwarded");
                writer.log_reader().sync().unwrap();
                wait_until("the rest is forwarded", || forwarded() == 20).await;
                stop.send(true).unwrap();
            };
            let (report, ()) = tokio::join!(forwarding, checks);
            assert_eq!(report.unwrap().stopped, Stopped::Shutdown);
        });
    assert_eq!(sink.sent, (1..=20).collect::<Vec<_>>());
}

/// [META-04] Records no writer will sync (one under `OsOnly`, or one that died) are
/// forwarded once the forwarder has synced them itself, after `WATERMARK_PATIENCE`.
#[test]
fn records_no_writer_syncs_are_forwarded_after_the_forwarder_syncs_them() {
    let dir = tempfile::tempdir().unwrap();
    let (root, writer) = unsynced_store(dir.path(), 10);
    let started = Instant::now();
    let mut sink = Collect::default();
    let (acked, stopped) = run(&root, &dir.path().join("checkpoints"), &mut sink).unwrap();
    assert_eq!((acked, stopped), (10, Stopped::EndReached));
    assert_eq!(sink.sent, (1..=10).collect::<Vec<_>>());
    assert!(
        started.elapsed() >= WATERMARK_PATIENCE,
        "forwarded before any sync"
    );
    assert_eq!(
        writer.log_reader().durable_seq().unwrap().0,
        1,
        "the writer synced"
    );
    drop(writer);
}

/// A SQLite store's commits, under `synchronous=NORMAL`, wait for a WAL checkpoint to be
/// durable; its forwarder syncs the write-ahead log itself and forwards every row.
#[test]
fn a_sqlite_store_is_forwarded_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    let mut writer = SqliteStore::open(&path).unwrap();
    writer
        .write_batch((0..10).map(dataset::envelope).collect())
        .unwrap();
    let source = Source::open_read_only(&path, Some(Backend::Sqlite)).unwrap();
    let mut sink = Collect::default();
    let (acked, stopped) = run_source(&source, &dir.path().join("checkpoints"), &mut sink).unwrap();
    assert_eq!((acked, stopped), (10, Stopped::EndReached));
    assert_eq!(sink.sent, (1..=10).collect::<Vec<_>>());
}
