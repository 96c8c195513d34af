//! The segment-log backend of the artifact store.
//!
//! Layout of a store directory: `log/` holds the segment log (one record per frame, in the
//! record module's binary form), `ids/` the per-segment id indexes and time ranges, and
//! `store.meta` the mapping between log sequences and append sequences.
//!
//! Native writes give each record the append sequence that follows the last; the log's own
//! sequence then moves in step. Imported reference data may start above 1 or have gaps
//! (the reference leaves one for every failed write), so the store keeps *runs*: each run
//! says "from log sequence L on, append sequence = R + (log sequence - L)". A run is made
//! durable before the first record that needs it is appended. Reads seek by log sequence
//! through the runs and then compare decoded append sequences, so a stale run can cost a
//! few extra records read but never hide one.

use std::path::{Path, PathBuf};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use time::OffsetDateTime;

use super::ids::{IdIndex, capture_ms, hash_id};
use super::{ArtifactStore, Error, Result, StoreStats, build_records, check_limit};
use crate::record::{Criteria, Envelope, ReadCursor, Record, RecordId};
use crate::storage::{Log, LogOptions, Reader, Seq};

const META_FILE: &str = "store.meta";
const META_MAGIC: &str = "esl-replay store";
const META_VERSION: u32 = 1;

/// Log-sequence ↔ append-sequence runs; empty means they are equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Runs(Vec<(u64, u64)>);

impl Runs {
    fn run_for_log(&self, log_seq: u64) -> (u64, u64) {
        self.0
            .iter()
            .rev()
            .find(|(l, _)| *l <= log_seq)
            .copied()
            .unwrap_or((1, 1))
    }

    /// The append sequence the record at `log_seq` has (or gets).
    fn append_seq(&self, log_seq: u64) -> u64 {
        let (l, r) = self.run_for_log(log_seq);
        r + (log_seq - l)
    }

    /// The first log sequence whose append sequence is above `after`.
    fn log_seq_after(&self, after: u64) -> u64 {
        let want = after + 1;
        let mut chosen = want; // identity when there are no runs
        let mut runs = self.0.iter().peekable();
        if self.0.first().is_some_and(|(_, r)| *r > want) {
            return self.0.first().map_or(want, |(l, _)| *l);
        }
        while let Some(&(l, r)) = runs.next() {
            if r <= want {
                chosen = l + (want - r);
                if let Some(&&(next_l, _)) = runs.peek()
                    && chosen >= next_l
                {
                    chosen = next_l;
                }
            }
        }
        chosen.max(1)
    }

    fn encode(&self) -> String {
        let runs: Vec<String> = self.0.iter().map(|(l, r)| format!("{l} {r}")).collect();
        format!(
            "{META_MAGIC}\nversion {META_VERSION}\n{}\n",
            runs.join("\n")
        )
    }

    fn decode(text: &str, path: &Path) -> Result<Runs> {
        let invalid = |reason: String| Error::Metadata {
            path: path.to_path_buf(),
            reason,
        };
        let mut lines = text.lines();
        if lines.next() != Some(META_MAGIC) {
            return Err(invalid("not an esl-replay store metadata file".into()));
        }
        let version = lines
            .next()
            .and_then(|l| l.strip_prefix("version "))
            .and_then(|v| v.parse::<u32>().ok());
        if version != Some(META_VERSION) {
            return Err(invalid(format!(
                "unknown version {version:?} (this build reads {META_VERSION})"
            )));
        }
        let mut runs = Vec::new();
        for line in lines.filter(|l| !l.is_empty()) {
            let mut parts = line.split(' ').map(str::parse::<u64>);
            match (parts.next(), parts.next(), parts.next()) {
                (Some(Ok(l)), Some(Ok(r)), None) => runs.push((l, r)),
                _ => return Err(invalid(format!("bad run line {line:?}"))),
            }
        }
        Ok(Runs(runs))
    }

    fn load(root: &Path) -> Result<Runs> {
        let path = root.join(META_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => Runs::decode(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Runs::default()),
            Err(source) => Err(Error::Io {
                op: "read",
                path,
                source,
            }),
        }
    }
}

/// An artifact store on the segment log.
#[derive(Debug)]
pub struct LogStore {
    root: PathBuf,
    log: Option<Log>,
    reader: Reader,
    runs: RwLock<Runs>,
    ids: Mutex<IdIndex>,
    encoded: Vec<Vec<u8>>,
}

impl LogStore {
    /// Opens (creating if needed) the store in `root` for writing, with default log options.
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] (including another writer holding the log), damaged metadata.
    pub fn open(root: &Path) -> Result<LogStore> {
        LogStore::open_with(root, LogOptions::default())
    }

    /// Opens the store for writing with these log options.
    ///
    /// # Errors
    ///
    /// As [`LogStore::open`].
    pub fn open_with(root: &Path, options: LogOptions) -> Result<LogStore> {
        std::fs::create_dir_all(root).map_err(|source| Error::Io {
            op: "create",
            path: root.to_path_buf(),
            source,
        })?;
        let (log, report) = Log::open(root.join("log"), options)?;
        if report.torn_tail.is_some() {
            tracing::warn!(store = %root.display(), ?report.torn_tail, "cut a torn tail on open");
        }
        let reader = log.reader();
        let store = LogStore {
            root: root.to_path_buf(),
            log: Some(log),
            reader,
            runs: RwLock::new(Runs::load(root)?),
            ids: Mutex::new(IdIndex::new(root.join("ids"), true)),
            encoded: Vec::new(),
        };
        store
            .ids
            .lock()
            .forget_below(store.reader.segments().first().map_or(0, |s| s.0));
        Ok(store)
    }

    /// Opens the store read-only: no lock, beside a writer in any process (C6).
    ///
    /// # Errors
    ///
    /// [`Error::Storage`] if there is no store, damaged metadata.
    pub fn open_read_only(root: &Path) -> Result<LogStore> {
        let reader = Reader::open(root.join("log"), &LogOptions::default())?;
        Ok(LogStore {
            root: root.to_path_buf(),
            log: None,
            reader,
            runs: RwLock::new(Runs::load(root)?),
            ids: Mutex::new(IdIndex::new(root.join("ids"), false)),
            encoded: Vec::new(),
        })
    }

    /// The underlying log reader (for raw-frame tools such as `verify`).
    #[must_use]
    pub fn log_reader(&self) -> &Reader {
        &self.reader
    }

    /// The append sequence of the record at (or that will get) this log sequence.
    pub(crate) fn append_sequence_of(&self, log_seq: u64) -> u64 {
        self.runs.read().append_seq(log_seq)
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

    /// The last append sequence ever assigned (0 for a new store).
    fn last_sequence(&self) -> Result<u64> {
        let next_log = self.reader.next_seq()?.0;
        Ok(self.runs.read().append_seq(next_log) - 1)
    }

    /// Followers pick up runs another process added.
    fn refresh_runs(&self) -> Result<()> {
        if self.log.is_none() {
            *self.runs.write() = Runs::load(&self.root)?;
        }
        Ok(())
    }

    fn append(&mut self, records: &[Record]) -> Result<()> {
        let mut last = self.last_sequence()?;
        let first_log = self.reader.next_seq()?.0;
        let mut new_runs = self.runs.read().clone();
        let mut encoded = std::mem::take(&mut self.encoded);
        encoded.resize_with(records.len(), Vec::new);
        for (next_log, (record, buffer)) in
            (first_log..).zip(records.iter().zip(encoded.iter_mut()))
        {
            let sequence = record.append_sequence();
            if sequence <= last {
                self.encoded = encoded;
                return Err(Error::SequenceNotIncreasing {
                    last,
                    found: sequence,
                });
            }
            if sequence != new_runs.append_seq(next_log) {
                new_runs.0.push((next_log, sequence));
            }
            buffer.clear();
            record.encode_into(buffer)?;
            last = sequence;
        }
        let result = self.append_encoded(records, &encoded, new_runs);
        self.encoded = encoded;
        result
    }

    fn append_encoded(
        &mut self,
        records: &[Record],
        encoded: &[Vec<u8>],
        runs: Runs,
    ) -> Result<()> {
        if runs != *self.runs.read() {
            // A run is durable before the first record that needs it.
            crate::storage::write_atomic(&self.root.join(META_FILE), runs.encode().as_bytes())?;
            *self.runs.write() = runs;
        }
        let range = self.writer()?.append_batch(encoded)?;
        let entries: Vec<(u64, u64, i64)> = records
            .iter()
            .zip(range.start.0..)
            .map(|(record, seq)| (seq, hash_id(record.id().as_str()), capture_ms(record)))
            .collect();
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

    /// The time window of `criteria` in milliseconds, if it has one.
    fn window(criteria: &Criteria) -> Option<(i64, i64)> {
        let fields = criteria.fields();
        if fields.captured_from.is_none() && fields.captured_until.is_none() {
            return None;
        }
        let ms = |t: &OffsetDateTime| {
            i64::try_from(t.unix_timestamp_nanos().div_euclid(1_000_000)).unwrap_or(i64::MAX)
        };
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
    fn write_batch(&mut self, envelopes: Vec<Envelope>) -> Result<Vec<RecordId>> {
        self.writer()?;
        let records = build_records(envelopes, self.last_sequence()?, OffsetDateTime::now_utc())?;
        self.append(&records)?;
        Ok(records.into_iter().map(|r| r.id().clone()).collect())
    }

    fn append_records(&mut self, records: &[Record]) -> Result<()> {
        self.writer()?;
        self.append(records)
    }

    fn read_from_cursor(
        &self,
        cursor: &ReadCursor,
        limit: usize,
        criteria: &Criteria,
    ) -> Result<Vec<Record>> {
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
        let mut out = Vec::new();
        let mut log_cursor = self.reader.cursor(Seq(start))?;
        let mut segment_end = None::<u64>;
        while out.len() < limit {
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
            let Some(found) = log_cursor.next()? else {
                break;
            };
            let record = self.decode(found)?;
            if record.append_sequence() > after && criteria.matches(&record) {
                out.push(record);
            }
        }
        Ok(out)
    }

    fn read_by_id(&self, id: &RecordId) -> Result<Option<Record>> {
        let candidates = self.ids.lock().candidates(&self.reader, id.as_str())?;
        for seq in candidates {
            let mut cursor = self.reader.cursor(Seq(seq))?;
            if let Some(found) = cursor.next()?.filter(|f| f.seq.0 == seq) {
                let record = self.decode(found)?;
                if record.id() == id {
                    return Ok(Some(record));
                }
            }
        }
        // Not found: absent, unless damaged records that could hold it were left unindexed.
        match self.ids.lock().damage() {
            Some(damage) => Err(damage.into()),
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
        let mut bytes = 0;
        for dir in [self.root.join("log"), self.root.join("ids")] {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                bytes += entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>();
            }
        }
        Ok(StoreStats {
            backend: "log",
            records: next_log - first_log,
            first_sequence,
            last_sequence: self.runs.read().append_seq(next_log) - 1,
            bytes,
        })
    }

    fn sync(&mut self) -> Result<()> {
        if let Some(log) = self.log.as_ref() {
            log.sync()?;
        }
        Ok(())
    }

    fn wait_for_records(&self, after: u64, timeout: Duration) -> Result<bool> {
        self.refresh_runs()?;
        let log_seq = self.runs.read().log_seq_after(after);
        Ok(self.reader.wait_for(Seq(log_seq), timeout)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_map_both_ways_across_gaps() {
        let runs = Runs(vec![(1, 57), (4, 70)]);
        assert_eq!(runs.append_seq(1), 57);
        assert_eq!(runs.append_seq(3), 59);
        assert_eq!(runs.append_seq(4), 70);
        assert_eq!(runs.append_seq(6), 72);
        assert_eq!(runs.log_seq_after(0), 1);
        assert_eq!(runs.log_seq_after(57), 2);
        assert_eq!(runs.log_seq_after(59), 4);
        assert_eq!(runs.log_seq_after(65), 4);
        assert_eq!(runs.log_seq_after(70), 5);
        assert_eq!(Runs::default().log_seq_after(9), 10);
        let text = runs.encode();
        assert_eq!(Runs::decode(&text, Path::new("x")).unwrap(), runs);
    }
}
