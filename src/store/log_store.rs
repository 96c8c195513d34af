//! The segment-log backend of the artifact store.
//!
//! Layout of a store directory (format/store.md): `log/` holds the segment log (one record
//! per frame, in the record module's binary form), `ids/` the per-segment id indexes and time
//! ranges, and `store.meta` the runs that map log sequences to append sequences
//! ([`SequenceMap`]).
//!
//! Native writes give each record the append sequence that follows the last; the log's own
//! sequence then moves in step. Imported reference data may start above 1 or have gaps, and
//! each jump is a run, made durable before the first record that needs it is appended
//! ([STORE-03]). Reads seek by log sequence through the runs and then compare decoded append
//! sequences. The runs are validated on every load and checked against the records on
//! the writer's open (the last record) and by [`LogStore::verify_metadata`] (every run).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use time::OffsetDateTime;

use super::encode::encode_all;
use super::ids::{Entry, IdIndex, Search, Summary, hash_id, millis};
use super::meta::{self, Layout, SequenceMap};
use super::{
    ArtifactReader, ArtifactStore, DurableMark, Error, ReadOnly, Result, StoreStats, check_limit,
    next_sequences,
};
use crate::record::{
    Criteria, DecodeBuffer, EncodedRecord, Envelope, ReadCursor, Record, RecordId, RecordView,
};
use crate::storage::Io;
use crate::storage::{Log, LogOptions, PackOutcome, Reader, SegmentId, Seq, SyncPolicy};

/// Reads and validates `store.meta`; a missing file is the identity map.
fn load_map(root: &Path) -> Result<(SequenceMap, Option<Layout>)> {
    let path = root.join(meta::FILE_NAME);
    match crate::storage::read_regular_file_limited(&path, meta::MAX_FILE_BYTES) {
        Ok(bytes) => SequenceMap::decode(&bytes)
            .map(|(map, layout)| (map, Some(layout)))
            .map_err(|e| Error::Metadata {
                path,
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((SequenceMap::default(), None)),
        Err(source) => Err(Error::Io {
            op: "read",
            path,
            source,
        }),
    }
}

/// An artifact store on the segment log.
#[derive(Debug)]
pub struct LogStore {
    root: PathBuf,
    log: Option<Log>,
    reader: Reader,
    runs: RwLock<SequenceMap>,
    ids: Mutex<IdIndex>,
    encoded: Vec<Vec<u8>>,
    /// The log's payload limit: a larger record is refused before its batch is written.
    max_payload: u64,
    /// The most runs `store.meta` may hold ([`super::meta::MAX_RUNS`]; smaller in tests).
    max_runs: usize,
    /// The log's I/O seam, which `store.meta` and the id indexes are written through too.
    io: Arc<dyn Io>,
    /// For a read-only handle: whether the map it holds was checked against a record
    /// ([`LogStore::refresh_runs`]).
    map_checked: AtomicBool,
}

/// Where the ids of appended records come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ids {
    /// Generated for these records ([`RecordId::generate`]): no stored record can have them.
    Generated,
    /// Given by the caller (an import): checked against the stored records.
    Given,
}

/// A frame body to append, with the facts of its record that appending needs.
struct Body<'a, B> {
    bytes: B,
    facts: Facts<'a>,
}

impl<B: AsRef<[u8]>> AsRef<[u8]> for Body<'_, B> {
    fn as_ref(&self) -> &[u8] {
        self.bytes.as_ref()
    }
}

/// What appending a record needs to know besides its bytes: its append sequence, and what
/// the id index keeps of it. Taken from the record or envelope a body was encoded from (on
/// the encoding threads, so the hash of the id is too), or read from a body encoded
/// elsewhere.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Facts<'a> {
    sequence: u64,
    id: &'a str,
    id_hash: u64,
    capture_ms: i64,
    artifact: &'a str,
    event: Option<&'a str>,
}

impl<'a> Facts<'a> {
    fn new(
        sequence: u64,
        id: &'a str,
        captured: &OffsetDateTime,
        artifact: &'a str,
        event: Option<&'a str>,
    ) -> Facts<'a> {
        Facts {
            sequence,
            id,
            id_hash: hash_id(id),
            capture_ms: millis(captured.unix_timestamp_nanos()),
            artifact,
            event,
        }
    }

    fn of_record(record: &'a Record) -> Facts<'a> {
        Facts::new(
            record.append_sequence(),
            record.id().as_str(),
            record.capture_timestamp(),
            record.artifact_name(),
            record.event_name(),
        )
    }

    fn of(view: &RecordView<'a>) -> Facts<'a> {
        Facts {
            sequence: view.append_sequence(),
            id: view.id(),
            id_hash: hash_id(view.id()),
            capture_ms: millis(view.capture_unix_nanos()),
            artifact: view.artifact_name(),
            event: view.event_name(),
        }
    }
}

fn duplicate(id: &str, sequence: u64, holder: u64) -> Error {
    Error::DuplicateId {
        id: id.to_owned(),
        sequence,
        holder,
    }
}

impl LogStore {
    /// The record with this id among the candidate log sequences, if one of them holds it.
    fn read_candidates(&self, id: &RecordId, candidates: Vec<u64>) -> Result<Option<Record>> {
        // Only the candidate whose id matches is built into a record.
        self.find_among(id.as_str(), candidates, |view| {
            view.to_record().map_err(|source| Error::CorruptRecord {
                sequence: view.append_sequence(),
                source,
            })
        })
    }

    /// For a one-shot lookup the sealed segments did not answer: the record with `id` from
    /// the segment based at `active` on, and whether a miss there means absent.
    fn find_in_active(&self, id: &RecordId, active: u64) -> Result<(Option<Record>, bool)> {
        // Its newest records first: a recent record is found there without checking every
        // chunk of the segment's index.
        let text = id.as_str();
        let mut newest = self
            .ids
            .lock()
            .newest_candidates(&self.reader, text, active)?;
        if let Some(record) = self.read_candidates(id, std::mem::take(&mut newest.seqs))? {
            return Ok((Some(record), true));
        }
        let rest = self
            .ids
            .lock()
            .active_candidates(&self.reader, text, active, &newest)?;
        Ok((self.read_candidates(id, rest.seqs)?, rest.exact))
    }

    /// `found` of the record with this id among the candidate log sequences, if one of them
    /// holds it.
    fn find_among<T>(
        &self,
        id: &str,
        candidates: Vec<u64>,
        found: impl FnOnce(&RecordView<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        let mut buffer = DecodeBuffer::default();
        for seq in candidates {
            let mut cursor = self.reader.cursor(Seq(seq))?;
            let Some(frame) = cursor.next()?.filter(|f| f.seq.0 == seq) else {
                continue;
            };
            let view = RecordView::decode(frame.payload, &mut buffer).map_err(|source| {
                Error::CorruptRecord {
                    sequence: self.runs.read().append_seq(seq),
                    source,
                }
            })?;
            if view.id() == id {
                return found(&view).map(Some);
            }
        }
        Ok(None)
    }

    /// Opens (creating if needed) the store in `root` for writing, with default log options.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] (including another writer holding the log), damaged metadata.
    pub fn open(root: impl AsRef<Path>) -> Result<LogStore> {
        LogStore::open_with(root, LogOptions::default())
    }

    /// Opens the store for writing with these log options. A new store directory is made
    /// durable in its parent before anything is written in it ([STORE-04]).
    ///
    /// # Errors
    ///
    /// As [`LogStore::open`]; [`Error::Metadata`] if `store.meta` is damaged or does not
    /// describe the last record.
    pub fn open_with(root: impl AsRef<Path>, options: LogOptions) -> Result<LogStore> {
        LogStore::open_at(root.as_ref(), options)
    }

    fn open_at(root: &Path, options: LogOptions) -> Result<LogStore> {
        refuse_raw_log(root)?;
        // Durably: a store directory whose own entry a power loss can drop takes every
        // record acknowledged in it along.
        let io = options.io.clone();
        crate::storage::create_dir_durable_with(&*io, root)?;
        let max_payload = u64::from(options.max_payload_bytes);
        let (log, report) = Log::open(root.join("log"), options)?;
        if report.torn_tail.is_some() {
            tracing::warn!(store = %root.display(), ?report.torn_tail, "cut a torn tail on open");
        }
        let reader = log.reader();
        let (mut map, layout) = load_map(root)?;
        let stored = map.clone();
        // Runs of records a crash lost describe nothing; the next append must not use them.
        let next_log = reader.next_seq()?.0;
        map.forget_from(next_log);
        let store = LogStore {
            root: root.to_path_buf(),
            log: Some(log),
            reader,
            runs: RwLock::new(map),
            ids: Mutex::new(IdIndex::new(root.join("ids"), true, io.clone())),
            encoded: Vec::new(),
            max_payload,
            max_runs: super::meta::MAX_RUNS,
            io,
            map_checked: AtomicBool::new(true),
        };
        // The last record decides the next append sequence: it must agree with the map, or
        // an import could reuse sequences.
        if next_log > store.reader.first_seq().0 {
            store.check_map_at(&[next_log - 1])?;
        }
        if layout == Some(Layout::LegacyText) || *store.runs.read() != stored {
            store.write_map(&store.runs.read())?;
        }
        let segments = store.reader.segments();
        let mut ids = store.ids.lock();
        ids.forget_below(segments.first().map_or(0, |s| s.0));
        if !report.clean_shutdown {
            ids.remove_after_crash(segments.last().map_or(0, |s| s.0))?;
        }
        drop(ids);
        Ok(store)
    }

    /// Opens the store read-only: no lock, beside a writer in any process (C6).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if there is no store, [`Error::Metadata`] if `store.meta` is damaged.
    pub fn open_read_only(root: impl AsRef<Path>) -> Result<ReadOnly<LogStore>> {
        LogStore::open_read_only_at(root.as_ref())
    }

    fn open_read_only_at(root: &Path) -> Result<ReadOnly<LogStore>> {
        let options = LogOptions::default();
        let reader = Reader::open(root.join("log"), &options)?;
        let store = LogStore {
            root: root.to_path_buf(),
            log: None,
            reader,
            runs: RwLock::new(SequenceMap::default()),
            ids: Mutex::new(IdIndex::new(root.join("ids"), false, options.io.clone())),
            encoded: Vec::new(),
            max_payload: u64::from(options.max_payload_bytes),
            max_runs: super::meta::MAX_RUNS,
            io: options.io,
            map_checked: AtomicBool::new(false),
        };
        store.refresh_runs()?;
        Ok(ReadOnly::new(store))
    }

    /// Replaces `store.meta` atomically and durably ([STORE-03], [ATOM-01]).
    fn write_map(&self, map: &SequenceMap) -> Result<()> {
        let path = self.root.join(meta::FILE_NAME);
        crate::storage::write_atomic_with(&*self.io, &path, &map.encode())?;
        Ok(())
    }

    /// The append sequence stored in the record at `log_seq`, if that record exists and
    /// decodes (damage is `verify`'s to report, not this check's).
    fn stored_append_seq(&self, log_seq: u64) -> Result<Option<u64>> {
        let stored = self.reader.cursor(Seq(log_seq)).and_then(|mut cursor| {
            Ok(cursor
                .next()?
                .filter(|found| found.seq.0 == log_seq)
                .and_then(|found| Record::decode(found.payload).ok())
                .map(|record| record.append_sequence()))
        });
        match stored {
            Ok(stored) => Ok(stored),
            Err(error) if error.is_corruption() => Ok(None),
            Err(error) => Err(error.into()),
        }
    }

    /// Checks that the records at these log sequences have the append sequences the map
    /// gives them.
    fn check_map_at(&self, log_seqs: &[u64]) -> Result<()> {
        for &log_seq in log_seqs {
            let Some(stored) = self.stored_append_seq(log_seq)? else {
                continue;
            };
            let mapped = self.runs.read().append_seq(log_seq);
            if stored != mapped {
                return Err(Error::Metadata {
                    path: self.root.join(meta::FILE_NAME),
                    reason: format!(
                        "it maps log sequence {log_seq} to append sequence {mapped}, but the \
                         record there has {stored}: the file does not describe this log \
                         (restore it from a backup; nothing was changed)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Checks `store.meta` against the log ([STORE-02]): the first and last record of every
    /// run must have the append sequences the run gives them. Append sequences strictly
    /// increase along the log, so this proves the whole mapping with two reads per run.
    ///
    /// # Errors
    ///
    /// [`Error::Metadata`] naming the first record that disagrees; storage errors.
    pub fn verify_metadata(&self) -> Result<()> {
        self.refresh_runs()?;
        let first = self.reader.reload_start()?.0;
        let next = self.reader.next_seq()?.0;
        let mut bounds: Vec<u64> = std::iter::once(1)
            .chain(self.runs.read().runs().iter().map(|r| r.log_seq))
            .collect();
        bounds.dedup();
        bounds.push(u64::MAX);
        let mut points = Vec::new();
        for pair in bounds.windows(2) {
            let [start, end] = *pair else { continue };
            let (start, end) = (start.max(first), end.min(next));
            if start < end {
                points.extend([start, end - 1]);
            }
        }
        self.check_map_at(&points)
    }

    /// The damaged frames this handle met while indexing ids or summing records: the
    /// records they hide are missing from lookups' "absent" answers and from
    /// [`ArtifactReader::summary`]. (`verify` checks every frame.)
    #[must_use]
    pub fn damage_met(&self) -> Vec<crate::storage::Error> {
        self.ids.lock().damage_met()
    }

    /// Packs the log's sealed segments now, as the background packer would
    /// ([`Log::pack_sealed`]); a read-only handle packs nothing.
    ///
    /// # Errors
    ///
    /// Storage errors; the segment being packed then stays as written.
    pub fn pack_sealed(&self) -> Result<Vec<(SegmentId, PackOutcome)>> {
        match &self.log {
            Some(log) => Ok(log.pack_sealed()?),
            None => Ok(Vec::new()),
        }
    }

    /// The underlying log reader (for raw-frame tools such as `verify`).
    #[must_use]
    pub fn log_reader(&self) -> &Reader {
        &self.reader
    }

    /// The append sequence of the record at (or that will get) this log sequence: how a
    /// tool reading raw frames through [`log_reader`](Self::log_reader) names a record.
    #[must_use]
    pub fn append_sequence_of(&self, log_seq: u64) -> u64 {
        self.runs.read().append_seq(log_seq)
    }

    /// The append sequence of the last record truncated away below `first_log`, the log's
    /// first sequence (0 if none was): the sequence map still covers the log sequences a
    /// truncation removed.
    pub(crate) fn pruned_through(&self, first_log: u64) -> u64 {
        match first_log {
            0 | 1 => 0,
            _ => self.append_sequence_of(first_log - 1),
        }
    }

    /// Decodes a record read from the log.
    pub(crate) fn decode_record(&self, found: crate::storage::RecordRef<'_>) -> Result<Record> {
        self.decode(found)
    }

    /// Truncates the log before `log_seq` (through the writer when this handle is one) and
    /// forgets the id indexes of deleted segments.
    pub(crate) fn truncate_log_before(
        &self,
        log_seq: Seq,
    ) -> Result<crate::storage::TruncateReport> {
        let report = match self.log.as_ref() {
            Some(log) => log.truncate_prefix(log_seq)?,
            None => self.reader.truncate_prefix(log_seq)?,
        };
        self.ids
            .lock()
            .forget_below(self.reader.segments().first().map_or(0, |s| s.0));
        Ok(report)
    }

    /// The store directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn writer(&mut self) -> Result<&mut Log> {
        let path = self.root.clone();
        self.log.as_mut().ok_or(Error::ReadOnly { path })
    }

    /// The last append sequence ever assigned (0 for a new store): the one of the last
    /// record written, whether or not it was pruned since.
    fn last_sequence(&self) -> Result<u64> {
        let next_log = self.reader.next_seq()?.0;
        Ok(match next_log {
            0 | 1 => 0,
            _ => self.runs.read().append_seq(next_log - 1),
        })
    }

    /// Followers pick up runs another process added.
    /// For a read-only handle: loads `store.meta` again (a writer may have added a run) and,
    /// when it is new to this handle, checks it against the last record, as the writer's
    /// open does ([STORE-02]): a file that was deleted or replaced would otherwise number
    /// records wrongly, and reads by append sequence would pass over some of them. (Records
    /// appended later follow the map their writer wrote, so a map checked once holds.)
    fn refresh_runs(&self) -> Result<()> {
        if self.log.is_none() {
            // The end before the map: a run is durable before the records that need it
            // ([STORE-03]), so the map read next describes every record below this end.
            let next = self.reader.next_seq()?.0;
            let loaded = load_map(&self.root)?.0;
            let changed = *self.runs.read() != loaded;
            *self.runs.write() = loaded;
            if changed {
                self.map_checked.store(false, Ordering::Release);
            }
            if !self.map_checked.load(Ordering::Acquire) && next > self.reader.first_seq().0 {
                self.check_map_at(&[next - 1])?;
                self.map_checked.store(true, Ordering::Release);
            }
        }
        Ok(())
    }

    fn append(&mut self, records: &[Record], ids: Ids) -> Result<()> {
        self.encode_and_append(records.len(), ids, |index, buffer| {
            let Some(record) = records.get(index) else {
                return Ok(Facts::default());
            };
            record.encode_into(buffer)?;
            Ok(Facts::of_record(record))
        })
    }

    /// Encodes `count` frame bodies, the `index`-th by `encode`, into the reused buffers
    /// (a long batch on several cores: [`encode_all`]), then appends them all; nothing is
    /// appended if one fails to encode. `encode` returns the facts of the record it
    /// encoded, taken from the record and not parsed back from the body.
    fn encode_and_append<'a>(
        &mut self,
        count: usize,
        ids: Ids,
        encode: impl Fn(usize, &mut Vec<u8>) -> std::result::Result<Facts<'a>, crate::record::Error>
        + Sync,
    ) -> Result<()> {
        let mut encoded = std::mem::take(&mut self.encoded);
        encoded.resize_with(count, Vec::new);
        let mut bodies: Vec<Body<'a, &mut Vec<u8>>> = encoded
            .iter_mut()
            .map(|bytes| Body {
                bytes,
                facts: Facts::default(),
            })
            .collect();
        let result = encode_all(&mut bodies, &|index, body: &mut Body<'a, &mut Vec<u8>>| {
            body.bytes.clear();
            body.facts = encode(index, body.bytes)?;
            Ok::<_, crate::record::Error>(())
        })
        .map_err(Error::from)
        .and_then(|()| self.append_bodies(&bodies, ids));
        drop(bodies);
        self.encoded = encoded;
        result
    }

    /// Refuses the first of `given` (append sequence, id, id hash) whose id an earlier one,
    /// or a stored record, has: a lookup by id must find the one record with it, and a
    /// record imported later must not shadow a stored one.
    fn check_new_ids(&self, given: &[(u64, &str, u64)]) -> Result<()> {
        if given.is_empty() {
            return Ok(());
        }
        let hashes: Vec<u64> = given.iter().map(|(_, _, hash)| *hash).collect();
        let candidates = self.ids.lock().stored_candidates(&self.reader, &hashes)?;
        // In order, the first record whose id is taken: by a stored record, or by an earlier
        // record of the batch (which passed the stored check, so it holds the id once the
        // records before this one are appended).
        let mut batch = HashMap::with_capacity(given.len());
        for ((sequence, id, _), seqs) in given.iter().zip(candidates) {
            if let Some(holder) = self.find_among(id, seqs, |view| Ok(view.append_sequence()))? {
                return Err(duplicate(id, *sequence, holder));
            }
            if let Some(holder) = batch.insert(*id, *sequence) {
                return Err(duplicate(id, *sequence, holder));
            }
        }
        Ok(())
    }

    /// Appends version 2 frame bodies as they are, after checking that their sequences
    /// increase, that each fits a frame and, for ids given by the caller, that no stored
    /// record and no earlier record of the batch has the same id.
    fn append_bodies<B: AsRef<[u8]>>(&mut self, bodies: &[Body<'_, B>], ids: Ids) -> Result<()> {
        let mut last = self.last_sequence()?;
        let first_log = self.reader.next_seq()?.0;
        let mut map = self.runs.read().clone();
        let mut entries = Vec::with_capacity(bodies.len());
        let mut given = Vec::new();
        for (next_log, body) in (first_log..).zip(bodies) {
            let Body { bytes, facts } = body;
            let bytes = bytes.as_ref().len() as u64;
            let sequence = facts.sequence;
            if sequence <= last {
                return Err(Error::SequenceNotIncreasing {
                    last,
                    found: sequence,
                });
            }
            if bytes > self.max_payload {
                return Err(Error::RecordTooLarge {
                    sequence,
                    bytes,
                    max: self.max_payload,
                });
            }
            map.continue_at(next_log, sequence);
            if ids == Ids::Given {
                given.push((sequence, facts.id, facts.id_hash));
            }
            entries.push(Entry {
                seq: next_log,
                hash: facts.id_hash,
                ms: facts.capture_ms,
                artifact: facts.artifact,
                event: facts.event,
                bytes,
            });
            last = sequence;
        }
        self.check_new_ids(&given)?;
        if map.runs().len() > self.max_runs {
            return Err(Error::TooManyRuns {
                runs: map.runs().len(),
                max: self.max_runs,
            });
        }
        if map != *self.runs.read() {
            // A run is durable before the first record that needs it ([STORE-03]).
            self.write_map(&map)?;
            *self.runs.write() = map;
        }
        let writer = self.writer()?;
        let range = writer.append_batch(bodies)?;
        // A write returns with its records in the file: read-only handles in any process see
        // them, and a crash of this process keeps them (durable per the sync policy).
        writer.flush()?;
        debug_assert_eq!(entries.first().map(|e| e.seq), Some(range.start.0));
        self.ids.lock().written(&self.reader, &entries)
    }

    /// Decodes a frame's record; an error names the append sequence the record should have.
    fn decode(&self, found: crate::storage::RecordRef<'_>) -> Result<Record> {
        Record::decode(found.payload).map_err(|source| Error::CorruptRecord {
            sequence: self.runs.read().append_seq(found.seq.0),
            source,
        })
    }

    /// Waits until a record with an append sequence above `after` exists; for async code on
    /// any executor.
    ///
    /// # Errors
    ///
    /// Storage errors met while a read-only handle looks for new records.
    pub async fn wait_for_records_async(&self, after: u64) -> Result<()> {
        let log_seq = self.runs.read().log_seq_after(after);
        Ok(self.reader.wait_for_async(Seq(log_seq)).await?)
    }

    /// The append sequence of the last record known durable (0 if none is): what a consumer
    /// that must not deliver a record a power loss could take back may read up to. A
    /// read-only handle learns it from the writer's watermark file ([`Reader::durable_seq`]).
    ///
    /// # Errors
    ///
    /// Storage errors met while a read-only handle looks for new records.
    pub fn durable_through(&self) -> Result<u64> {
        let durable = self.reader.durable_seq()?;
        // Loaded after the bound: the map of the records it names, not an older one that a
        // writer's reopen may have rewritten (runs are durable before their records).
        self.refresh_runs()?;
        Ok(self.append_seq_below(durable))
    }

    /// The append sequence of the last record below log sequence `end` (0 if none is).
    fn append_seq_below(&self, end: Seq) -> u64 {
        match end.0 {
            0 | 1 => 0,
            _ => self.runs.read().append_seq(end.0 - 1),
        }
    }

    /// Waits until a record with an append sequence above `after` exists and is durable;
    /// for async code on any executor. A read-only handle syncs the records itself when the
    /// writer has not made them durable within
    /// [`WATERMARK_PATIENCE`](crate::storage::WATERMARK_PATIENCE)
    /// ([`Reader::wait_durable_async`]).
    ///
    /// # Errors
    ///
    /// Storage errors; [`Error::Storage`] if the writer in this process is poisoned.
    pub async fn wait_for_durable_records_async(&self, after: u64) -> Result<()> {
        let log_seq = self.runs.read().log_seq_after(after);
        Ok(self.reader.wait_durable_async(Seq(log_seq)).await?)
    }

    /// Waits until every record written so far is durable under the log's sync policy (with
    /// group commit, the sync thread's next batch), without forcing a sync of its own.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if a sync failed (the log is then poisoned).
    pub fn wait_durable(&self) -> Result<()> {
        if let Some(log) = self.log.as_ref() {
            let next = log.next_seq().0;
            if next > 1 {
                log.wait_durable(Seq(next - 1))?;
            }
        }
        Ok(())
    }

    /// Makes the store's records durable and closes it cleanly.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn close(mut self) -> Result<()> {
        if let Some(log) = self.log.take() {
            log.close()?;
        }
        Ok(())
    }

    /// Calls `found` with up to `limit` records after the cursor that match `criteria`, in
    /// append order, each viewed in place (criteria test the view, so a record that does not
    /// match is never parsed further); returns how many were found. A time window skips
    /// whole segments whose capture-time range misses it.
    fn scan(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
        found: &mut dyn FnMut(u64, &RecordView<'_>) -> Result<()>,
    ) -> Result<usize> {
        check_limit(limit)?;
        self.refresh_runs()?;
        // A prune through another handle or process moves the start; honour it at once.
        self.reader.reload_start()?;
        let after = cursor.last_consumed_sequence();
        let mut start = self.runs.read().log_seq_after(after);
        let window = LogStore::window(criteria);
        if let Some(window) = window {
            start = self.skip_segments(start, window)?;
        }
        let mut count = 0;
        let mut buffer = DecodeBuffer::default();
        let mut log_cursor = self.reader.cursor(Seq(start))?;
        // With no criteria, the page is the next `limit` records: packed segments are not
        // decompressed ahead past them.
        if criteria.is_empty() {
            log_cursor.will_read(limit as u64);
        }
        let mut segment_end = None::<u64>;
        while count < limit {
            if let (Some(window), Some(end)) = (window, segment_end)
                && log_cursor.position().0 >= end
            {
                let next = self.skip_segments(log_cursor.position().0, window)?;
                if next > log_cursor.position().0 {
                    log_cursor = self.reader.cursor(Seq(next))?;
                }
                segment_end = None;
            }
            if window.is_some() && segment_end.is_none() {
                let position = log_cursor.position().0;
                segment_end = self
                    .reader
                    .segments()
                    .iter()
                    .map(|s| s.0)
                    .find(|b| *b > position)
                    .or(Some(u64::MAX));
            }
            let Some(frame) = log_cursor.next()? else {
                break;
            };
            let view = match RecordView::decode(frame.payload, &mut buffer) {
                Ok(view) => view,
                Err(source) => {
                    let sequence = self.runs.read().append_seq(frame.seq.0);
                    return Err(Error::CorruptRecord { sequence, source });
                }
            };
            if view.append_sequence() > after && criteria.matches_view(&view) {
                found(view.append_sequence(), &view)?;
                count += 1;
            }
        }
        Ok(count)
    }

    /// The time window of `criteria` in milliseconds, if it has one.
    fn window(criteria: &Criteria) -> Option<(i64, i64)> {
        let fields = criteria.fields();
        if fields.captured_from.is_none() && fields.captured_until.is_none() {
            return None;
        }
        let ms = |t: &OffsetDateTime| millis(t.unix_timestamp_nanos());
        Some((
            fields.captured_from.as_ref().map_or(i64::MIN, ms),
            fields.captured_until.as_ref().map_or(i64::MAX, ms),
        ))
    }

    /// The first log sequence at or after `log_seq` in a segment that may match the window.
    fn skip_segments(&self, log_seq: u64, window: (i64, i64)) -> Result<u64> {
        let segments: Vec<u64> = self.reader.segments().iter().map(|s| s.0).collect();
        let mut ids = self.ids.lock();
        let mut position = log_seq;
        for pair in segments.windows(2) {
            let [base, end] = *pair else { continue };
            if end <= position {
                continue;
            }
            if ids.may_overlap(&self.reader, base, end, window.0, window.1)? {
                break;
            }
            position = end;
        }
        Ok(position)
    }
}

impl ArtifactStore for LogStore {
    fn max_record_bytes(&self) -> Option<u64> {
        Some(self.max_payload)
    }

    fn write_batch(&mut self, envelopes: Vec<Envelope>) -> Result<Vec<RecordId>> {
        self.writer()?;
        let first = next_sequences(self.last_sequence()?, envelopes.len())?;
        let stored_at = OffsetDateTime::now_utc();
        // The frame bodies are written straight from the envelopes, without building records.
        let ids: Vec<RecordId> = envelopes.iter().map(|_| RecordId::generate()).collect();
        self.encode_and_append(envelopes.len(), Ids::Generated, |index, buffer| {
            let (Some(envelope), Some(id)) = (envelopes.get(index), ids.get(index)) else {
                return Ok(Facts::default());
            };
            let sequence = first + index as u64;
            envelope.encode_record_into(id, &stored_at, sequence, buffer)?;
            Ok(Facts::new(
                sequence,
                id.as_str(),
                &envelope.capture_timestamp,
                &envelope.artifact_name,
                envelope.event_name.as_deref(),
            ))
        })?;
        Ok(ids)
    }

    fn append_records(&mut self, records: &[Record]) -> Result<()> {
        self.writer()?;
        self.append(records, Ids::Given)
    }

    fn durable_mark(&self) -> Option<DurableMark> {
        let log = self.log.as_ref()?;
        if log.sync_policy() == SyncPolicy::OsOnly {
            return None;
        }
        Some(DurableMark::new(
            log.durability(),
            Seq(log.next_seq().0.saturating_sub(1)),
        ))
    }

    fn append_encoded(&mut self, records: &[EncodedRecord]) -> Result<()> {
        self.writer()?;
        // These bodies were encoded elsewhere: their facts are read from the bodies, which
        // checks that each is a whole version 2 record.
        let mut last = self.last_sequence()?;
        let mut bodies = Vec::with_capacity(records.len());
        for record in records {
            let bytes = record.as_bytes();
            let view = RecordView::parse_v2(bytes).map_err(|source| Error::CorruptRecord {
                sequence: last + 1,
                source,
            })?;
            // The order is checked when appending; here `last` only names a damaged body.
            last = last.max(view.append_sequence());
            bodies.push(Body {
                bytes,
                facts: Facts::of(&view),
            });
        }
        // Capture's records carry ids it generated; see the trait's documentation.
        self.append_bodies(&bodies, Ids::Generated)
    }

    fn sync(&mut self) -> Result<()> {
        if let Some(log) = self.log.as_ref() {
            log.sync()?;
        }
        Ok(())
    }
}

impl ArtifactReader for LogStore {
    fn read_from_cursor(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
    ) -> Result<Vec<Record>> {
        let mut out = Vec::new();
        self.scan(cursor, limit, criteria, &mut |sequence, view| {
            out.push(
                view.to_record()
                    .map_err(|source| Error::CorruptRecord { sequence, source })?,
            );
            Ok(())
        })?;
        Ok(out)
    }

    fn visit_from_cursor(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
        visit: &mut dyn FnMut(&RecordView<'_>),
    ) -> Result<usize> {
        self.scan(cursor, limit, criteria, &mut |_, view| {
            visit(view);
            Ok(())
        })
    }

    fn read_by_id(&self, id: &RecordId) -> Result<Option<Record>> {
        // Ids are unique, so a match among the records already indexed is the answer, found
        // without looking for new ones (for a read-only handle, a read of the log's end);
        // a one-shot lookup checks the id files in place before it loads them whole, the
        // sealed segments' before the active one's. Only a miss in checked indexes means
        // absent.
        for search in [Search::Known, Search::Hinted, Search::Verified] {
            let Some(candidates) = self
                .ids
                .lock()
                .candidates(&self.reader, id.as_str(), search)?
            else {
                continue;
            };
            if let Some(record) = self.read_candidates(id, candidates.seqs)? {
                return Ok(Some(record));
            }
            let mut exact = candidates.exact;
            if let Some(active) = candidates.active_left {
                let (record, active_exact) = self.find_in_active(id, active)?;
                if record.is_some() {
                    return Ok(record);
                }
                exact &= active_exact;
            }
            if exact && search != Search::Known {
                break;
            }
        }
        // Not found: absent, unless damaged records that could hold it were left unindexed,
        // or records the log acknowledged are in no segment file [REC-12].
        if let Some(damage) = self.ids.lock().damage() {
            return Err(damage.into());
        }
        match self.reader.missing_records()? {
            Some(missing) => Err(missing.into()),
            None => Ok(None),
        }
    }

    fn stats(&self) -> Result<StoreStats> {
        self.refresh_runs()?;
        let first_log = self.reader.reload_start()?.0;
        let next_log = self.reader.next_seq()?.0;
        let first_sequence = match self.reader.cursor(Seq(first_log))?.next()? {
            Some(found) => Some(self.decode(found)?.append_sequence()),
            None => None,
        };
        // Segments count what they hold, not their preallocated length (a fresh store is
        // 64 MiB of zeros on disk); indexes and metadata count whole.
        let space = self.reader.space()?;
        let mut bytes = space.used;
        let mut unpacked_bytes = space.unpacked;
        for dir in [self.root.join("log"), self.root.join("ids")] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                let others = entries
                    .flatten()
                    .filter(|e| {
                        let name = e.file_name();
                        let name = name.to_string_lossy();
                        !name.ends_with(".seg") && !name.ends_with(".seg.tmp")
                    })
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>();
                bytes += others;
                unpacked_bytes += others;
            }
        }
        Ok(StoreStats {
            backend: "log",
            records: next_log - first_log,
            first_sequence,
            last_sequence: self.last_sequence()?,
            pruned_through: Some(self.pruned_through(first_log)),
            bytes,
            unpacked_bytes,
        })
    }

    fn summary(&self) -> Result<Summary> {
        self.refresh_runs()?;
        self.reader.reload_start()?;
        self.ids.lock().summary(&self.reader)
    }

    fn wait_for_records(&self, after: u64, timeout: Duration) -> Result<bool> {
        self.refresh_runs()?;
        let log_seq = self.runs.read().log_seq_after(after);
        Ok(self.reader.wait_for(Seq(log_seq), timeout)?)
    }

    fn sync_readable(&self) -> Result<u64> {
        let mut durable = self.reader.durable_seq()?;
        // Sync only when the writer has not already made every record durable.
        if durable < self.reader.next_seq()? {
            durable = self.reader.sync()?;
        }
        // Loaded after the bound, as in `durable_through`.
        self.refresh_runs()?;
        Ok(self.append_seq_below(durable))
    }
}

/// Refuses a store root that is itself a segment log (a store's `log` subdirectory, or a
/// raw log): opening it as a store would create a second, empty store inside it.
fn refuse_raw_log(root: &Path) -> Result<()> {
    if root.join("log").exists() {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    if entries.flatten().any(|entry| {
        entry
            .file_name()
            .to_str()
            .and_then(crate::storage::codec::segment_base)
            .is_some()
    }) {
        return Err(Error::NotAStore {
            path: root.to_path_buf(),
            reason: "it is a segment log (a store keeps its log in a `log` subdirectory); \
                     give the store directory that holds it"
                .into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::store::dataset;
    use crate::store::ids::Newest;

    /// The facts appending takes from a record are the ones its body holds: the id index
    /// built while writing is the one rebuilt from the bodies later.
    #[test]
    fn facts_taken_from_a_record_are_those_its_body_holds() {
        let mut envelopes: Vec<Envelope> = (0..20).map(dataset::envelope).collect();
        // Before 1970 with a fraction of a millisecond, in an offset of its own, and without
        // an event name.
        let mut odd = dataset::envelope(20);
        odd.capture_timestamp = datetime!(1969-12-31 23:59:59.999_600_001 +03:30);
        odd.event_name = None;
        envelopes.push(odd);
        let stored_at = OffsetDateTime::now_utc();
        for (sequence, envelope) in (7..).zip(envelopes) {
            let record =
                Record::from_envelope(envelope, RecordId::generate(), stored_at, sequence).unwrap();
            let mut body = Vec::new();
            record.encode_into(&mut body).unwrap();
            let view = RecordView::parse_v2(&body).unwrap();
            assert_eq!(Facts::of_record(&record), Facts::of(&view));
        }
    }

    /// A one-shot lookup reads the active segment's records after its newest chunk first,
    /// and then the rest of the segment without reading those again.
    #[test]
    fn a_lookup_reads_the_newest_records_first_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let mut store = LogStore::open(&root).unwrap();
        let mut ids = Vec::new();
        for n in (0..5_000u64).step_by(500) {
            let batch = (n..n + 500).map(dataset::envelope).collect();
            ids.extend(store.write_batch(batch).unwrap());
        }
        let reader = LogStore::open_read_only(&root).unwrap();
        let active = reader.reader.segments().last().unwrap().0;
        let index = reader.ids.lock();
        let recent = ids[4_999].as_str();
        let newest = index
            .newest_candidates(&reader.reader, recent, active)
            .unwrap();
        assert_eq!(newest.seqs, [5_000], "the newest records are read");
        let rest = index
            .active_candidates(&reader.reader, recent, active, &newest)
            .unwrap();
        assert!(rest.exact);
        assert!(rest.seqs.is_empty(), "read again: {:?}", rest.seqs);
        // A record in a chunk is not among the newest; the rest of the segment has it.
        let older = ids[10].as_str();
        let newest = index
            .newest_candidates(&reader.reader, older, active)
            .unwrap();
        assert!(newest.seqs.is_empty());
        let rest = index
            .active_candidates(&reader.reader, older, active, &newest)
            .unwrap();
        assert_eq!((rest.seqs, rest.exact), (vec![11], true));
        drop(index);
        for (i, id) in [(4_999, &ids[4_999]), (10, &ids[10])] {
            let found = reader.read_by_id(id).unwrap().map(|r| r.append_sequence());
            assert_eq!(found, Some(i as u64 + 1));
        }
    }

    /// Log options with the smallest segments, so that a few records roll.
    fn small_segments() -> LogOptions {
        LogOptions {
            segment_bytes: crate::storage::SEGMENT_BYTES_MIN,
            max_payload_bytes: 32 << 10,
            ..LogOptions::default()
        }
    }

    /// Writes 1,200 dataset records in batches of 100 and returns their ids.
    fn write_in_batches(store: &mut LogStore) -> Vec<RecordId> {
        let mut ids = Vec::new();
        for batch in 0..12 {
            let envelopes = (batch * 100..batch * 100 + 100)
                .map(dataset::envelope)
                .collect();
            ids.extend(store.write_batch(envelopes).unwrap());
        }
        ids
    }

    /// Every one of `ids` is found at its sequence, and an id never written nowhere.
    fn assert_found_by_id(store: &LogStore, ids: &[RecordId]) {
        for (i, id) in ids.iter().enumerate() {
            let found = store.read_by_id(id).unwrap().map(|r| r.append_sequence());
            assert_eq!(found, Some(i as u64 + 1), "{id}");
        }
        let absent = RecordId::new("00000000-0000-4000-8000-000000000000").unwrap();
        assert!(store.read_by_id(&absent).unwrap().is_none());
    }

    /// An import's duplicate check finds the fourth record's id in its (let-go) segment.
    fn assert_duplicate_refused(store: &mut LogStore, ids: &[RecordId]) {
        let stored = store.read_by_id(&ids[3]).unwrap().unwrap();
        let mut fields = stored.into_fields();
        fields.append_sequence = ids.len() as u64 + 1;
        let again = Record::new(fields).unwrap();
        let duplicate = store.append_records(std::slice::from_ref(&again));
        assert!(
            matches!(duplicate, Err(Error::DuplicateId { holder: 4, .. })),
            "{duplicate:?}"
        );
    }

    /// A writer keeps the ids of only as many sealed segments in memory as its budget allows
    /// (the oldest let go of, their files read in place), and still finds every record by
    /// id, and an id it never wrote nowhere, before and after reopening.
    #[test]
    fn a_writer_within_its_id_memory_budget_finds_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let options = small_segments();
        let mut store = LogStore::open_with(&root, options.clone()).unwrap();
        store.ids.lock().set_loaded_budget(1);
        let ids = write_in_batches(&mut store);
        let sealed = store.reader.segments().len() - 1;
        assert!(sealed > 4, "{sealed} sealed segments");
        // The one kept last and the newest stay.
        assert!(store.ids.lock().loaded_sealed() <= 2);
        for _ in 0..2 {
            assert_found_by_id(&store, &ids);
            assert!(store.ids.lock().loaded_sealed() <= 2);
        }
        // An import's duplicate check reads the let-go segments through their filters.
        assert_duplicate_refused(&mut store, &ids);
        store.close().unwrap();
        let store = LogStore::open_with(&root, options).unwrap();
        for (i, id) in ids.iter().enumerate().step_by(97) {
            let found = store.read_by_id(id).unwrap().map(|r| r.append_sequence());
            assert_eq!(found, Some(i as u64 + 1), "{id}");
        }
    }

    /// With the let-go segments' filters over their budget too, they fold (to one word each
    /// here) and lookups and duplicate checks still find every record and no absent one.
    #[test]
    fn a_writer_whose_filters_are_folded_finds_every_record() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let mut store = LogStore::open_with(&root, small_segments()).unwrap();
        store.ids.lock().set_loaded_budget(1);
        store.ids.lock().set_let_go_budget(1);
        let ids = write_in_batches(&mut store);
        // Enough records a segment that an unfolded filter has more than one word (six each).
        let per_segment = ids.len() / store.reader.segments().len();
        assert!(per_segment > 12, "{per_segment} records a segment");
        let (bytes, filters) = store.ids.lock().let_go_filters();
        assert!(filters > 2, "{filters} let-go filters");
        assert_eq!(bytes, filters * 8, "not folded to one word each");
        assert_found_by_id(&store, &ids);
        assert_duplicate_refused(&mut store, &ids);
    }

    /// A one-shot lookup searches the sealed segments, then the segment that was active
    /// when it began: a record there is found even when that segment is sealed in between.
    #[test]
    fn a_lookup_finds_a_record_whose_segment_was_sealed_between_its_two_parts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let options = small_segments();
        let mut store = LogStore::open_with(&root, options).unwrap();
        let ids = store
            .write_batch((0..10).map(dataset::envelope).collect())
            .unwrap();
        let reader = LogStore::open_read_only(&root).unwrap();
        let id = ids[5].as_str();
        let sealed = reader
            .ids
            .lock()
            .candidates(&reader.reader, id, Search::Hinted)
            .unwrap()
            .unwrap();
        assert_eq!((sealed.seqs.len(), sealed.exact), (0, true));
        let active = sealed.active_left.unwrap();
        let mut n = 10;
        while store.reader.segments().len() < 3 {
            store
                .write_batch((n..n + 50).map(dataset::envelope).collect())
                .unwrap();
            n += 50;
        }
        reader.reader.next_seq().unwrap();
        assert!(
            reader.reader.segments().len() >= 3,
            "the reader sees the rolls"
        );
        let rest = reader
            .ids
            .lock()
            .active_candidates(&reader.reader, id, active, &Newest::default())
            .unwrap();
        assert!(rest.exact);
        let found = reader.find_among(id, rest.seqs, |view| Ok(view.append_sequence()));
        assert_eq!(found.unwrap(), Some(6));
        assert_eq!(
            reader
                .read_by_id(&ids[5])
                .unwrap()
                .map(|r| r.append_sequence()),
            Some(6)
        );
    }

    /// One record captured at `ms` milliseconds after the epoch.
    fn captured_at(n: u64, ms: i64) -> crate::record::Envelope {
        let mut envelope = dataset::envelope(n);
        envelope.capture_timestamp = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms);
        envelope
    }

    /// Records captured at exactly `ms`.
    fn captured_exactly(ms: i64) -> Criteria {
        let when = OffsetDateTime::UNIX_EPOCH + time::Duration::milliseconds(ms);
        Criteria::new(crate::record::CriteriaFields {
            captured_from: Some(when),
            captured_until: Some(when),
            ..Default::default()
        })
        .unwrap()
    }

    /// Appends records captured at `ms` until the log has `segments` segments.
    fn fill_to(store: &mut LogStore, n: &mut u64, segments: usize, ms: i64) {
        while store.reader.segments().len() < segments {
            store.write_batch(vec![captured_at(*n, ms)]).unwrap();
            *n += 1;
        }
    }

    /// A reader that indexes after each of the writer's rolls files every record under its
    /// own segment: it learns of new segments before it lists them, so a segment's capture
    /// times are whole and a read of a window does not skip the segment holding a match.
    #[test]
    fn a_reader_indexing_between_rolls_skips_no_segment_of_a_window() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let mut writer = LogStore::open_with(&root, small_segments()).unwrap();
        let mut n = 0;
        fill_to(&mut writer, &mut n, 1, 1_000);
        writer.write_batch(vec![captured_at(n, 1_000)]).unwrap();
        n += 1;
        let reader = LogStore::open_read_only(&root).unwrap();
        reader.summary().unwrap();
        fill_to(&mut writer, &mut n, 2, 1_000);
        let special = writer.write_batch(vec![captured_at(n, 5_000_000)]).unwrap();
        n += 1;
        reader.summary().unwrap();
        for segments in [3, 4] {
            fill_to(&mut writer, &mut n, segments, 1_000);
            reader.summary().unwrap();
        }
        let window = captured_exactly(5_000_000);
        for (handle, store) in [("writer", &writer), ("reader", &*reader)] {
            let found = store
                .read_from_cursor(&ReadCursor::start(), 100, &window)
                .unwrap();
            let ids: Vec<&RecordId> = found.iter().map(Record::id).collect();
            assert_eq!(ids, [&special[0]], "{handle}");
            assert!(store.read_by_id(&special[0]).unwrap().is_some(), "{handle}");
        }
    }

    /// A read of a window meets damage that left records out of a segment's index (their
    /// capture times unknown) and reports it, as a read without criteria does.
    #[test]
    fn a_read_of_a_window_reports_damage_in_a_segment_it_could_not_index() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let mut writer = LogStore::open_with(&root, small_segments()).unwrap();
        let mut n = 0;
        fill_to(&mut writer, &mut n, 2, 1_000);
        let special = writer.write_batch(vec![captured_at(n, 5_000_000)]).unwrap();
        n += 1;
        fill_to(&mut writer, &mut n, 3, 1_000);
        let damaged = writer.reader.segments()[1].0;
        writer.close().unwrap();
        crate::storage::remove_durable(&root.join("ids").join(format!("{damaged:020}.ids")))
            .unwrap();
        let segment = root.join("log").join(format!("{damaged:020}.seg"));
        let mut bytes = std::fs::read(&segment).unwrap();
        let id = special[0].as_str().as_bytes();
        let at = bytes.windows(id.len()).position(|w| w == id).unwrap();
        bytes[at + 3] ^= 0x01;
        std::fs::write(&segment, bytes).unwrap();

        let reader = LogStore::open_read_only(&root).unwrap();
        for criteria in [Criteria::any(), captured_exactly(5_000_000)] {
            let read = reader.read_from_cursor(&ReadCursor::start(), 10_000, &criteria);
            assert!(
                matches!(read, Err(Error::Storage(ref e)) if e.is_corruption()),
                "{read:?}"
            );
        }
    }

    /// An append whose sequences would give `store.meta` more runs than a store can read is
    /// refused whole, so the store keeps opening (an import of sequences 2, 4, 6, … would
    /// otherwise write a map that no open accepts).
    #[test]
    fn appends_that_would_outgrow_the_sequence_map_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let mut store = LogStore::open(&root).unwrap();
        store.max_runs = 3;
        let record = |sequence: u64| {
            Record::from_envelope(
                dataset::envelope(sequence),
                RecordId::generate(),
                datetime!(2024-01-15 10:00:01 UTC),
                sequence,
            )
            .unwrap()
        };
        store.append_records(&[record(2), record(4)]).unwrap();
        let refused = store.append_records(&[record(6), record(8), record(9)]);
        assert!(
            matches!(refused, Err(Error::TooManyRuns { runs: 4, max: 3 })),
            "{refused:?}"
        );
        store.append_records(&[record(6), record(7)]).unwrap();
        store.close().unwrap();
        let store = LogStore::open_read_only(&root).unwrap();
        let sequences: Vec<u64> = store
            .read_from_cursor(&ReadCursor::start(), 10, &Criteria::any())
            .unwrap()
            .iter()
            .map(Record::append_sequence)
            .collect();
        assert_eq!(sequences, [2, 4, 6, 7]);
    }
}
