//! NDJSON interchange with the reference package: import and export (K3, C4, C10).
//!
//! [`export`] writes lines byte-identical to the reference serializer; [`import`] reads any
//! line the reference writes and tells bad lines, store failures and input failures apart
//! ([`ImportError`]).

use std::io::{BufRead, Write};

use super::{ArtifactReader, ArtifactStore, Error, Result};
use crate::record::{Criteria, DEFAULT_MAX_LINE_BYTES, NdjsonReader, ReadCursor, Record};
use crate::storage::error_chain;

/// How to import.
#[derive(Clone, Copy, Debug)]
pub struct ImportOptions {
    /// Skip bad lines (reporting each) instead of failing on the first.
    pub skip_malformed: bool,
    /// Records appended per batch, at most (a batch also ends after 8 MiB of input lines).
    pub batch: usize,
    /// The longest line read, not counting its end; longer lines are bad lines.
    pub max_line_bytes: usize,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions {
            skip_malformed: false,
            batch: 1000,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// What an import did (or, inside an [`ImportError`], did before it failed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Records imported (committed to the store).
    pub imported: u64,
    /// Bad lines skipped: line number and reason.
    pub skipped: Vec<(u64, String)>,
    /// The first and last append sequence imported.
    pub sequences: Option<(u64, u64)>,
    /// Lines whose record does not match its own checksum (it was changed after it was
    /// written): line number, append sequence, id and the stored checksum. Such records are
    /// imported unchanged, as every stored record is (decision K3: a store exported and
    /// imported again is identical, damage included), and reported here, as `verify`
    /// reports them in the store.
    pub checksum_mismatches: Vec<(u64, u64, String, String)>,
}

/// Why a line is bad.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BadLine {
    /// Not a valid record, or longer than the line limit.
    #[error(transparent)]
    Malformed(crate::record::Error),
    /// Its sequence does not follow the previous record's.
    #[error("append sequence {found} does not follow {last} (sequences must strictly increase)")]
    OutOfOrder {
        /// The sequence before it (the store's last, or the previous line's).
        last: u64,
        /// Its sequence.
        found: u64,
    },
    /// The record is larger than the store can hold.
    #[error("the record takes {bytes} bytes stored, more than the store's limit of {max} bytes")]
    TooLarge {
        /// Its stored size.
        bytes: u64,
        /// The store's limit.
        max: u64,
    },
    /// Its id is already taken ([`Error::DuplicateId`]).
    #[error("id {id} is already taken by the record with append sequence {holder}")]
    DuplicateId {
        /// The id.
        id: String,
        /// The append sequence of the record that has it.
        holder: u64,
    },
}

/// Why an import stopped. Each variant carries the report of what was committed before.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A bad line, and bad lines were not to be skipped. Nothing of it was stored.
    #[error("line {line}: {reason}")]
    BadLine {
        /// Its 1-based number.
        line: u64,
        /// What is wrong with it.
        reason: BadLine,
        /// What was committed before it.
        report: ImportReport,
    },
    /// The store failed; the records of every line before `line` are committed.
    #[error("the store failed while storing line {line} or a line before it in its batch")]
    Store {
        /// The first line whose record is not stored.
        line: u64,
        /// The store's error.
        #[source]
        source: Error,
        /// What was committed before.
        report: ImportReport,
    },
    /// The input could not be read at `line`; the records of every line before it are
    /// committed.
    #[error("cannot read the input at line {line}")]
    Input {
        /// The line being read.
        line: u64,
        /// The I/O error.
        #[source]
        source: std::io::Error,
        /// What was committed before.
        report: ImportReport,
    },
}

impl ImportError {
    /// What was committed before the failure.
    #[must_use]
    pub fn report(&self) -> &ImportReport {
        match self {
            ImportError::BadLine { report, .. }
            | ImportError::Store { report, .. }
            | ImportError::Input { report, .. } => report,
        }
    }
}

/// The most input bytes whose records an import holds before appending them. A record in
/// memory can take tens of times the bytes of its line (a long list becomes a map of string
/// keys), so a batch is bounded by the bytes it was read from as well as by its count.
const BATCH_INPUT_BYTES: usize = 8 << 20;

/// The batch being built: records, the line each came from, and the bytes of those lines.
struct Batch {
    records: Vec<Record>,
    lines: Vec<u64>,
    bytes: usize,
}

/// Imports reference NDJSON into `store`. `progress` is called with the records imported so
/// far after each batch.
///
/// Any line the reference writes is read, and ids, sequences, `stored_at`, checksums and
/// tags are kept unchanged; sequences must strictly increase (a pruned reference file that
/// starts above 1 is fine). Every record's checksum is recomputed: a record that does not
/// match its own is imported unchanged (the reference's readers return such records as
/// they are, and an export of a store holding one must import to the same store) and
/// reported in [`ImportReport::checksum_mismatches`]. Three kinds of failure are told apart:
///
/// - a bad line ([`BadLine`]): not a valid record (an unknown `schema_version` included),
///   longer than the line limit, a sequence that does not follow the previous one, or a
///   record larger than the store can hold. It names the line; on request such lines are
///   skipped, and each is reported;
/// - a store failure (no space, a locked or read-only store, I/O): never skipped. Records
///   of the lines before it are committed and the store is consistent up to there; the
///   error names the first line not stored;
/// - an input failure (the file or pipe could not be read), likewise.
///
/// # Errors
///
/// [`ImportError`]: a bad line (unless skipping), a store failure, an input failure; each
/// with the report of what was committed before it.
#[expect(
    clippy::result_large_err,
    reason = "an import fails at most once; the error carries its report by value"
)]
pub fn import(
    store: &mut dyn ArtifactStore,
    input: impl BufRead,
    options: ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> std::result::Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut last = match store.stats() {
        Ok(stats) => stats.last_sequence,
        Err(source) => {
            return Err(ImportError::Store {
                line: 1,
                source,
                report,
            });
        }
    };
    let size = options.batch.max(1);
    let mut batch = Batch {
        records: Vec::with_capacity(size),
        lines: Vec::with_capacity(size),
        bytes: 0,
    };
    let mut reader = NdjsonReader::with_max_line_bytes(input, options.max_line_bytes);
    while let Some(item) = reader.next() {
        let line = reader.line_number();
        let bad = match item {
            Ok(record) if record.append_sequence() <= last => BadLine::OutOfOrder {
                last,
                found: record.append_sequence(),
            },
            Ok(record) => {
                last = record.append_sequence();
                if !record.verify_checksum() {
                    report.checksum_mismatches.push((
                        line,
                        record.append_sequence(),
                        record.id().as_str().to_owned(),
                        record.checksum().to_owned(),
                    ));
                }
                batch.records.push(record);
                batch.lines.push(line);
                batch.bytes += reader.line_bytes();
                if batch.records.len() >= size || batch.bytes >= BATCH_INPUT_BYTES {
                    flush(store, &mut batch, &mut report, options, progress)?;
                }
                continue;
            }
            Err(crate::record::Error::Io { line, source }) => {
                flush(store, &mut batch, &mut report, options, progress)?;
                return Err(ImportError::Input {
                    line,
                    source,
                    report,
                });
            }
            Err(crate::record::Error::AtLine { source, .. }) => BadLine::Malformed(*source),
            Err(other) => BadLine::Malformed(other),
        };
        if !options.skip_malformed {
            flush(store, &mut batch, &mut report, options, progress)?;
            return Err(ImportError::BadLine {
                line,
                reason: bad,
                report,
            });
        }
        report.skipped.push((line, error_chain(&bad)));
    }
    flush(store, &mut batch, &mut report, options, progress)?;
    report.skipped.sort_by_key(|(line, _)| *line);
    Ok(report)
}

/// Appends the batch. A record too large for the store, or whose id is taken, is a bad line:
/// skipped (and the rest appended) when skipping, else the batch before it is appended and
/// the import ends.
/// On a store failure the store is asked what it holds, so the report counts exactly the
/// records committed (a partly written batch included).
#[expect(
    clippy::result_large_err,
    reason = "an import fails at most once; the error carries its report by value"
)]
fn flush(
    store: &mut dyn ArtifactStore,
    batch: &mut Batch,
    report: &mut ImportReport,
    options: ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> std::result::Result<(), ImportError> {
    while !batch.records.is_empty() {
        let error = match store.append_records(&batch.records) {
            Ok(()) => {
                commit(report, &batch.records);
                batch.records.clear();
                batch.lines.clear();
                batch.bytes = 0;
                progress(report.imported);
                continue;
            }
            Err(error) => error,
        };
        match bad_record(error) {
            Ok((sequence, reason)) => {
                let at = batch
                    .records
                    .iter()
                    .position(|r| r.append_sequence() == sequence)
                    .unwrap_or(0);
                let line = batch.lines.get(at).copied().unwrap_or(0);
                if !options.skip_malformed {
                    // Store what came before it, then stop at it.
                    batch.records.truncate(at);
                    batch.lines.truncate(at);
                    flush(store, batch, report, options, progress)?;
                    return Err(ImportError::BadLine {
                        line,
                        reason,
                        report: report.clone(),
                    });
                }
                report.skipped.push((line, error_chain(&reason)));
                // The records before it are good. Those after it go one at a time: another
                // failed attempt at them all would encode every one of them again, and a
                // batch of bad lines would cost its length squared.
                let rest: Vec<(Record, u64)> = batch
                    .records
                    .split_off(at + 1)
                    .into_iter()
                    .zip(batch.lines.split_off(at + 1))
                    .collect();
                batch.records.truncate(at);
                batch.lines.truncate(at);
                flush(store, batch, report, options, progress)?;
                for (record, line) in rest {
                    batch.records.push(record);
                    batch.lines.push(line);
                    flush(store, batch, report, options, progress)?;
                }
                batch.bytes = 0;
            }
            Err(source) => {
                // Count what the store holds of this batch: it may have written a prefix.
                // By id, not by the store's last sequence, which another writer's records
                // may have raised past the whole batch.
                let written = batch
                    .records
                    .iter()
                    .take_while(|r| {
                        store
                            .read_by_id(r.id())
                            .ok()
                            .flatten()
                            .is_some_and(|stored| stored.append_sequence() == r.append_sequence())
                    })
                    .count();
                let after_batch = batch.lines.last().map_or(1, |line| line + 1);
                let line = batch.lines.get(written).copied().unwrap_or(after_batch);
                commit(report, batch.records.get(..written).unwrap_or_default());
                return Err(ImportError::Store {
                    line,
                    source,
                    report: report.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The sequence of the record a store refused, and why, when the record itself is at fault
/// (a bad line); the error back otherwise (a store failure).
fn bad_record(error: Error) -> std::result::Result<(u64, BadLine), Error> {
    match error {
        Error::RecordTooLarge {
            sequence,
            bytes,
            max,
        } => Ok((sequence, BadLine::TooLarge { bytes, max })),
        Error::DuplicateId {
            id,
            sequence,
            holder,
        } => Ok((sequence, BadLine::DuplicateId { id, holder })),
        other => Err(other),
    }
}

/// Adds committed records to the report.
fn commit(report: &mut ImportReport, records: &[Record]) {
    let (Some(first), Some(last)) = (records.first(), records.last()) else {
        return;
    };
    report.sequences = Some((
        report.sequences.map_or(first.append_sequence(), |s| s.0),
        last.append_sequence(),
    ));
    report.imported += records.len() as u64;
}

/// Exports the records after `after` that match `criteria` as reference NDJSON, one line
/// per record byte-identical to the reference serializer's, each ending in `\n`; returns
/// how many were written. `progress` is called with the count after each page.
///
/// # Errors
///
/// Damaged stored records, backend and output errors.
pub fn export(
    store: &dyn ArtifactReader,
    mut output: impl Write,
    after: u64,
    criteria: &Criteria,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let write_error = |source| Error::Io {
        op: "write",
        path: "export output".into(),
        source,
    };
    let mut cursor = ReadCursor::new(after, None);
    let mut written = 0u64;
    // One page of lines, written with one call; the lines copy the stored map texts.
    let mut lines = String::new();
    loop {
        lines.clear();
        let mut last = None;
        let mut count = 0u64;
        let visited = store.visit_from_cursor(&cursor, 1000, criteria, &mut |record| {
            record.append_ndjson_line(&mut lines);
            last = Some(record.append_sequence());
            count += 1;
        });
        // The records read before a damaged one are written before the damage is reported:
        // an export is how records are salvaged from a damaged store.
        output.write_all(lines.as_bytes()).map_err(write_error)?;
        written += count;
        if let Err(error) = visited {
            output.flush().map_err(write_error)?;
            return Err(error);
        }
        let Some(last) = last else { break };
        cursor = cursor.advance(last, None)?;
        progress(written);
    }
    output.flush().map_err(write_error)?;
    Ok(written)
}
