//! How do captured items reach the store without the socket ever waiting on storage?
//!
//! [`CaptureQueue`] is a queue bounded in bytes between the socket tasks (which only ever
//! [`CaptureQueue::push`], never block) and one writer thread ([`spawn_writer`]) that maps
//! items to envelopes and appends them in batches; the store's group commit makes a batch
//! durable with one sync. The queue also hands out each node's capture sequence, so every
//! item, stored or dropped, has one.
//!
//! When an item does not fit, it is dropped and counted in the node's drop run (how many,
//! bytes, first and last capture sequence). The next item of that node that fits is
//! preceded by a `capture.gap` marker with exactly that run, so no loss is silent and the
//! capture sequences of stored records plus the gap ranges cover every sequence handed out.
//! A run still open at shutdown is written then.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use time::OffsetDateTime;

use super::artifact::{Captured, EncodeBuffers, GapKind, Mapper, NodeIdentity, Stamp};
use super::telemetry::Telemetry;
use crate::record::{EncodedRecord, RecordId};
use crate::storage::error_chain;
use crate::store::{ArtifactStore, DurableMark};

/// Bytes an item is charged on top of what its frame holds
/// ([`Frame::held_bytes`](crate::esl::Frame::held_bytes)): the queue's bookkeeping.
const ITEM_OVERHEAD: usize = 512;

/// Most queue bytes one batch takes out of the queue: what the batches in flight (one being
/// mapped, two waiting, one being appended) hold beyond the queue bound is a fixed amount,
/// whatever the frames' size.
const BATCH_BYTES: usize = 4 << 20;

/// One queued item.
#[derive(Debug)]
struct Entry {
    node: usize,
    stamp: Stamp,
    captured: Captured,
    size: usize,
    /// When it was queued: for a frame, right after it was read and decoded.
    queued_at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct DropRun {
    dropped: u64,
    bytes: u64,
    first: u64,
    last: u64,
    generation: u64,
}

#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Entry>,
    bytes: usize,
    next_sequence: Vec<u64>,
    drops: Vec<Option<DropRun>>,
    closed: bool,
}

/// What happened to a pushed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Queued with this capture sequence.
    Queued(u64),
    /// Dropped (queue full); it had this capture sequence.
    Dropped(u64),
    /// The queue is closed (shutdown).
    Closed,
}

/// The bounded queue between the socket tasks and the writer (see the module docs).
#[derive(Debug)]
pub struct CaptureQueue {
    inner: Mutex<Inner>,
    wake: Condvar,
    max_bytes: usize,
    nodes: Vec<Arc<NodeIdentity>>,
    telemetry: Arc<Telemetry>,
}

impl CaptureQueue {
    /// A queue holding at most `max_bytes` (what frames hold plus a fixed overhead per item) for
    /// these nodes (indexes into `nodes` name a node in [`CaptureQueue::push`]).
    #[must_use]
    pub fn new(
        max_bytes: usize,
        nodes: Vec<Arc<NodeIdentity>>,
        telemetry: Arc<Telemetry>,
    ) -> CaptureQueue {
        let n = nodes.len();
        CaptureQueue {
            inner: Mutex::new(Inner {
                next_sequence: vec![1; n],
                drops: vec![None; n],
                ..Inner::default()
            }),
            wake: Condvar::new(),
            max_bytes,
            nodes,
            telemetry,
        }
    }

    /// The nodes this queue serves.
    #[must_use]
    pub fn nodes(&self) -> &[Arc<NodeIdentity>] {
        &self.nodes
    }

    /// Queues an item of `node`, or drops it when the queue is full. Never blocks beyond a
    /// short lock.
    pub fn push(
        &self,
        node: usize,
        connection_generation: u64,
        captured_at: OffsetDateTime,
        captured: Captured,
    ) -> Pushed {
        let size = ITEM_OVERHEAD + captured_size(&captured);
        let queued_at = Instant::now();
        let mut inner = self.inner.lock();
        if inner.closed || node >= inner.next_sequence.len() {
            return Pushed::Closed;
        }
        let sequence = inner.next_sequence[node];
        inner.next_sequence[node] += 1;
        let gap_size = if inner.drops[node].is_some() {
            ITEM_OVERHEAD
        } else {
            0
        };
        if inner.bytes + size + gap_size > self.max_bytes && !inner.items.is_empty() {
            let run = inner.drops[node].get_or_insert(DropRun {
                dropped: 0,
                bytes: 0,
                first: sequence,
                last: sequence,
                generation: connection_generation,
            });
            run.dropped += 1;
            run.bytes += size as u64;
            run.last = sequence;
            drop(inner);
            self.telemetry
                .count_drops(&self.nodes[node].pbx_node_slug, 1);
            return Pushed::Dropped(sequence);
        }
        let mut sequence = sequence;
        if let Some(run) = inner.drops[node].take() {
            // The marker takes this sequence; the item the next one.
            let marker_sequence = sequence;
            sequence = inner.next_sequence[node];
            inner.next_sequence[node] += 1;
            Self::enqueue(
                &mut inner,
                Entry {
                    node,
                    stamp: Stamp {
                        capture_sequence: marker_sequence,
                        captured_at,
                        connection_generation: run.generation,
                    },
                    captured: Captured::Gap(GapKind::LocalDrop {
                        dropped: run.dropped,
                        dropped_bytes: run.bytes,
                        first_capture_sequence: run.first,
                        last_capture_sequence: run.last,
                    }),
                    size: ITEM_OVERHEAD,
                    queued_at,
                },
            );
        }
        Self::enqueue(
            &mut inner,
            Entry {
                node,
                stamp: Stamp {
                    capture_sequence: sequence,
                    captured_at,
                    connection_generation,
                },
                captured,
                size,
                queued_at,
            },
        );
        self.telemetry.queue_depth.set(inner.items.len() as i64);
        self.telemetry.queue_bytes.set(inner.bytes as i64);
        drop(inner);
        self.wake.notify_one();
        Pushed::Queued(sequence)
    }

    /// Adds items the writer could not store to the node's drop run.
    fn merge_drop_run(&self, node: usize, lost: DropRun) {
        let mut inner = self.inner.lock();
        let Some(slot) = inner.drops.get_mut(node) else {
            return;
        };
        let run = slot.get_or_insert(DropRun {
            dropped: 0,
            bytes: 0,
            ..lost
        });
        run.dropped += lost.dropped;
        run.bytes += lost.bytes;
        run.first = run.first.min(lost.first);
        run.last = run.last.max(lost.last);
        drop(inner);
        if let Some(identity) = self.nodes.get(node) {
            self.telemetry
                .count_drops(&identity.pbx_node_slug, lost.dropped);
        }
    }

    /// [`CaptureQueue::merge_drop_run`] for each item of a batch that was not stored.
    fn merge_lost_items<'a>(&self, items: impl IntoIterator<Item = &'a MappedItem>) {
        for item in items {
            self.merge_drop_run(item.node, item.lost);
        }
    }

    fn enqueue(inner: &mut Inner, entry: Entry) {
        inner.bytes += entry.size;
        inner.items.push_back(entry);
    }

    /// Items and bytes waiting.
    #[must_use]
    pub fn depth(&self) -> (usize, usize) {
        let inner = self.inner.lock();
        (inner.items.len(), inner.bytes)
    }

    /// Stops accepting items; the writer drains what is queued, writes open drop runs as
    /// gap markers, syncs and ends.
    pub fn close(&self) {
        self.inner.lock().closed = true;
        self.wake.notify_all();
    }

    /// Whether [`CaptureQueue::close`] was called.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Turns open drop runs into gap markers (when the writer finds the queue empty).
    fn flush_drop_runs(inner: &mut Inner) {
        let runs: Vec<(usize, DropRun)> = inner
            .drops
            .iter_mut()
            .enumerate()
            .filter_map(|(node, run)| run.take().map(|r| (node, r)))
            .collect();
        for (node, run) in runs {
            let sequence = inner.next_sequence[node];
            inner.next_sequence[node] += 1;
            Self::enqueue(
                inner,
                Entry {
                    node,
                    stamp: Stamp {
                        capture_sequence: sequence,
                        captured_at: OffsetDateTime::now_utc(),
                        connection_generation: run.generation,
                    },
                    captured: Captured::Gap(GapKind::LocalDrop {
                        dropped: run.dropped,
                        dropped_bytes: run.bytes,
                        first_capture_sequence: run.first,
                        last_capture_sequence: run.last,
                    }),
                    size: ITEM_OVERHEAD,
                    queued_at: Instant::now(),
                },
            );
        }
    }

    /// Up to `max` items and [`BATCH_BYTES`] (at least one item); waits up to `wait` for
    /// the first. `None` once closed and empty.
    fn pop_batch(&self, max: usize, wait: Duration) -> Option<Vec<Entry>> {
        let mut inner = self.inner.lock();
        if inner.items.is_empty() && !inner.closed {
            self.wake.wait_for(&mut inner, wait);
        }
        // An empty queue: the drops since the last item are stored now as gap markers, not
        // when the node's next item comes (a burst followed by silence is not hidden).
        if inner.items.is_empty() {
            Self::flush_drop_runs(&mut inner);
            if inner.items.is_empty() && inner.closed {
                return None;
            }
        }
        let mut bytes = 0;
        let n = inner
            .items
            .iter()
            .take(max)
            .take_while(|entry| {
                bytes += entry.size;
                bytes <= BATCH_BYTES
            })
            .count()
            .max(1)
            .min(inner.items.len());
        let batch: Vec<Entry> = inner.items.drain(..n).collect();
        inner.bytes -= batch.iter().map(|e| e.size).sum::<usize>();
        self.telemetry.queue_depth.set(inner.items.len() as i64);
        self.telemetry.queue_bytes.set(inner.bytes as i64);
        Some(batch)
    }
}

fn captured_size(captured: &Captured) -> usize {
    match captured {
        Captured::Frame { frame, .. } => frame.held_bytes(),
        Captured::Malformed { bytes, .. } => bytes.len(),
        Captured::Mutation { document, .. } => document.to_string().len(),
        _ => 0,
    }
}

/// Writer options.
#[derive(Debug, Clone, Copy)]
pub struct WriterOptions {
    /// Most items per store batch.
    pub max_batch: usize,
    /// Delay before retrying after a failed batch.
    pub retry_delay: Duration,
    /// Failed batches in a row after which the store counts as persistently failed and
    /// the writer stops (each failed batch is recorded as a gap; see [`spawn_writer`]).
    pub max_consecutive_failures: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            max_batch: 4096,
            retry_delay: Duration::from_millis(500),
            max_consecutive_failures: 10,
        }
    }
}

/// A mapped batch on its way from the mapping thread to the store thread.
struct Mapped {
    records: Vec<EncodedRecord>,
    /// When each frame of the batch arrived (for T15).
    frames_queued_at: Vec<Instant>,
    per_node: Vec<u64>,
    /// The queued items the records came from, in order.
    items: Vec<MappedItem>,
}

/// A queued item of a mapped batch: its node, where its records end in the batch, and what
/// a gap record names if they are not all stored (the item, and the drops a gap marker it
/// carried named).
struct MappedItem {
    node: usize,
    end: usize,
    lost: DropRun,
}

/// Starts the writer: a mapping thread turns queued items into complete records (the
/// checksum is most of the work) while the store thread appends the previous batch with
/// `append_records`, so the two overlap. The store thread appends until the queue is closed
/// and drained, then syncs the store and hands it back.
///
/// Failure policy: a failed batch is logged at once (error level), counted in
/// `esl_capture_write_errors`, shown as the writer error on `/health`, and recorded as a
/// gap so the next write of each node names the lost capture sequences; the batch is not
/// retried. A failure that cannot heal (the store's sequences are exhausted) or
/// `max_consecutive_failures` failed batches in a row stop the writer: it sets
/// `esl_capture_writer_failed` to 1 and ends with the error, and the thread's
/// [`JoinHandle::is_finished`] tells the capture to stop.
///
/// # Errors
///
/// A thread could not be spawned.
pub fn spawn_writer(
    queue: Arc<CaptureQueue>,
    store: Box<dyn ArtifactStore>,
    options: WriterOptions,
) -> std::io::Result<JoinHandle<crate::store::Result<Box<dyn ArtifactStore>>>> {
    let (batches, mapped) = std::sync::mpsc::sync_channel::<Mapped>(2);
    let mapper_queue = Arc::clone(&queue);
    let max_record_bytes = store.max_record_bytes();
    let mapper = std::thread::Builder::new()
        .name("capture-mapper".into())
        .spawn(move || {
            map_batches(&mapper_queue, options.max_batch, max_record_bytes, &batches);
        })?;
    let (durable, marks) = std::sync::mpsc::channel::<(DurableMark, Vec<Instant>)>();
    let telemetry = Arc::clone(&queue.telemetry);
    let watcher = std::thread::Builder::new()
        .name("capture-durable".into())
        .spawn(move || {
            for (mark, frames_queued_at) in marks {
                // A failed sync is the writer's to report; its frames are not observed.
                if mark.wait().is_ok() {
                    observe_durable(&telemetry, &frames_queued_at);
                }
            }
        })?;
    std::thread::Builder::new()
        .name("capture-writer".into())
        .spawn(move || {
            let mut store = store;
            let written = write_batches(&queue, store.as_mut(), &mapped, &durable, options);
            drop(durable);
            if let Err(error) = written {
                tracing::error!(error = %error_chain(&error), "the capture writer stopped: the store failed persistently; nothing more is stored");
                queue.telemetry.set_writer_error(Some(error_chain(&error)));
                queue.telemetry.writer_failed.set(1);
                return Err(error);
            }
            if mapper.join().is_err() {
                // A bug, not an input: say so as loudly as a store failure.
                let error = "the capture mapping thread panicked; nothing more is stored";
                tracing::error!("{error}");
                queue.telemetry.set_writer_error(Some(error.into()));
                queue.telemetry.writer_failed.set(1);
            }
            store.sync()?;
            let _ = watcher.join();
            Ok(store)
        })
}

/// Observes T15 for frames whose records are durable now.
fn observe_durable(telemetry: &Telemetry, frames_queued_at: &[Instant]) {
    let now = Instant::now();
    for queued_at in frames_queued_at {
        telemetry
            .durable_latency
            .observe(now.duration_since(*queued_at).as_secs_f64());
    }
}

/// The store thread's loop (see [`spawn_writer`] for the failure policy).
fn write_batches(
    queue: &CaptureQueue,
    store: &mut dyn ArtifactStore,
    mapped: &std::sync::mpsc::Receiver<Mapped>,
    durable: &std::sync::mpsc::Sender<(DurableMark, Vec<Instant>)>,
    options: WriterOptions,
) -> crate::store::Result<()> {
    let telemetry = Arc::clone(&queue.telemetry);
    let labels: Vec<_> = queue
        .nodes
        .iter()
        .map(|n| Telemetry::node(&n.pbx_node_slug))
        .collect();
    let mut last = store.stats()?.last_sequence;
    let mut failures_in_a_row = 0u32;
    for batch in mapped {
        let Mapped {
            mut records,
            frames_queued_at,
            per_node,
            items,
        } = batch;
        let count = records.len();
        // Records were built with sequence 1; place them after the store's last one.
        let result = crate::store::next_sequences(last, count).and_then(|first| {
            for (record, sequence) in records.iter_mut().zip(first..) {
                record.set_append_sequence(sequence)?;
            }
            let started = Instant::now();
            telemetry.note_append(true);
            let appended = store.append_encoded(&records);
            telemetry.note_append(false);
            appended?;
            telemetry
                .append_latency
                .observe(started.elapsed().as_secs_f64());
            Ok(())
        });
        match result {
            Ok(()) => {
                match store.durable_mark() {
                    // The durability thread observes the latency when the sync returns.
                    Some(mark) => {
                        let _ = durable.send((mark, frames_queued_at));
                    }
                    None => observe_durable(&telemetry, &frames_queued_at),
                }
                failures_in_a_row = 0;
                telemetry.set_writer_error(None);
                last += count as u64;
                for (label, n) in labels.iter().zip(per_node) {
                    telemetry.artifacts.get_or_create(label).inc_by(n);
                }
            }
            Err(error) => {
                telemetry.write_errors.inc();
                telemetry.set_writer_error(Some(error_chain(&error)));
                // A segment log stores a failed batch's records up to where it failed (a
                // roll that found the disk full, say); the items not stored whole are lost:
                // accounted like a queue drop (counted), so the next write of each node
                // carries a gap marker naming their sequences.
                let stored = stored_prefix(&*store, &records);
                let kept = items.partition_point(|item| item.end <= stored);
                let mut start = 0;
                for item in &items[..kept] {
                    if let Some(label) = labels.get(item.node) {
                        telemetry
                            .artifacts
                            .get_or_create(label)
                            .inc_by((item.end - start) as u64);
                    }
                    start = item.end;
                }
                queue.merge_lost_items(&items[kept..]);
                let permanent = matches!(error, crate::store::Error::SequencesExhausted { .. });
                failures_in_a_row += 1;
                if queue.is_closed()
                    || permanent
                    || failures_in_a_row >= options.max_consecutive_failures
                {
                    return Err(error);
                }
                tracing::error!(error = %error_chain(&error), records = count, failures_in_a_row, "store batch write failed; recorded as a gap");
                last = store.stats()?.last_sequence;
                std::thread::sleep(options.retry_delay);
            }
        }
    }
    Ok(())
}

/// How many of `records`, from the first, the store holds at their sequences: what it
/// kept of a batch that failed. By id, not by the store's last sequence, which another
/// writer's records may have raised past the whole batch; a record the store cannot look up
/// counts as not kept.
fn stored_prefix(store: &dyn ArtifactStore, records: &[EncodedRecord]) -> usize {
    records
        .iter()
        .take_while(|record| {
            record
                .view()
                .ok()
                .and_then(|view| RecordId::new(view.id().to_owned()).ok())
                .and_then(|id| store.read_by_id(&id).ok().flatten())
                .is_some_and(|stored| stored.append_sequence() == record.append_sequence())
        })
        .count()
}

/// The mapping thread: queue items to complete records, until the queue is closed and empty.
/// An item with a record larger than the store takes (`max_record_bytes`) is dropped and
/// counted like a queue drop, so that a gap record names it and the rest of its batch is
/// stored: a hostile peer's oversized frames cannot fail batches until the writer stops.
fn map_batches(
    queue: &CaptureQueue,
    max_batch: usize,
    max_record_bytes: Option<u64>,
    out: &std::sync::mpsc::SyncSender<Mapped>,
) {
    let mut mappers: Vec<Mapper> = queue.nodes.iter().cloned().map(Mapper::new).collect();
    let mut buffers = EncodeBuffers::default();
    while let Some(batch) = queue.pop_batch(max_batch, Duration::from_millis(200)) {
        if batch.is_empty() {
            continue;
        }
        let mut per_node = vec![0u64; mappers.len()];
        let mut items = Vec::with_capacity(batch.len());
        let mut records = Vec::with_capacity(batch.len() + 8);
        let mut frames_queued_at = Vec::with_capacity(batch.len());
        let stored_at = OffsetDateTime::now_utc();
        for entry in batch {
            let stamp = entry.stamp;
            let lone = DropRun {
                dropped: 1,
                bytes: entry.size as u64,
                first: stamp.capture_sequence,
                last: stamp.capture_sequence,
                generation: stamp.connection_generation,
            };
            // A lost gap marker takes the drops it named with it: a run covers them too.
            let named = match &entry.captured {
                Captured::Gap(GapKind::LocalDrop {
                    dropped,
                    dropped_bytes,
                    first_capture_sequence,
                    last_capture_sequence,
                }) => Some(DropRun {
                    dropped: *dropped,
                    bytes: *dropped_bytes,
                    first: *first_capture_sequence,
                    last: *last_capture_sequence,
                    generation: stamp.connection_generation,
                }),
                _ => None,
            };
            let frame = matches!(entry.captured, Captured::Frame { .. });
            let mut built = Vec::new();
            for artifact in mappers[entry.node].map(&stamp, entry.captured) {
                match artifact.encode(&RecordId::generate(), &stored_at, &mut buffers) {
                    Ok(record) => built.push(record),
                    // Our envelopes are always valid; if one is not, say so loudly.
                    Err(error) => {
                        tracing::error!(error = %error_chain(&error), "capture built an invalid record; skipped")
                    }
                }
            }
            let largest = built.iter().map(|r| r.as_bytes().len() as u64).max();
            if let (Some(largest), Some(max)) = (largest, max_record_bytes)
                && largest > max
            {
                tracing::warn!(
                    capture_sequence = stamp.capture_sequence,
                    bytes = largest,
                    max,
                    "a captured item's record is larger than the store takes; dropped and recorded as a gap"
                );
                // A gap's `last_seen` names the last event stored, never this one.
                mappers[entry.node].last_item_dropped();
                queue.merge_drop_run(entry.node, lone);
                continue;
            }
            let mut lost = lone;
            if let Some(named) = named {
                lost.dropped += named.dropped;
                lost.bytes += named.bytes;
                lost.first = lost.first.min(named.first);
                lost.last = lost.last.max(named.last);
            }
            if frame {
                frames_queued_at.push(entry.queued_at);
            }
            per_node[entry.node] += built.len() as u64;
            records.extend(built);
            items.push(MappedItem {
                node: entry.node,
                end: records.len(),
                lost,
            });
        }
        if let Err(std::sync::mpsc::SendError(lost)) = out.send(Mapped {
            records,
            frames_queued_at,
            per_node,
            items,
        }) {
            // The writer stopped on a store failure: this batch is dropped, and counted.
            queue.merge_lost_items(&lost.items);
            return;
        }
    }
}
