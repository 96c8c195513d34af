//! Where a forwarder resumes: never past records it did not deliver. A checkpoint behind
//! pruned records or beyond the store's end is refused with an error that says what to do,
//! and a forwarder without a checkpoint saves one before it reads, so that retention keeps
//! what it has not delivered (library `forward`, a sink that collects).

use std::path::{Path, PathBuf};

use esl_replay::checkpoint::{CheckpointService, CheckpointStore};
use esl_replay::forward::{
    Delivery, Error, ForwardOptions, Message, Metrics, Sink, SinkError, Source, Stopped, forward,
};
use esl_replay::record::{JsonMap, ReadCursor};
use esl_replay::retention::{self, PrunePolicy};
use esl_replay::store::{ArtifactStore as _, LogStore, dataset};

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
            &source,
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
