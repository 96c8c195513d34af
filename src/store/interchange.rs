//! NDJSON interchange with the reference package: import and export (K3, C4, C10).
//!
//! Export writes lines byte-identical to the reference serializer, one per record, each
//! ending in `\n`. Import reads any line the reference writes and keeps ids, sequences,
//! `stored_at`, checksums and tags unchanged; sequences must strictly increase (a pruned
//! reference file that starts above 1 is fine). A malformed line fails the import with its
//! line number and reason, unless malformed lines are skipped on request, in which case
//! each is reported. An unknown `schema_version` is always such a malformed line.

use std::io::{BufRead, Write};

use super::{ArtifactStore, Error, Result};
use crate::record::{Criteria, ReadCursor, ndjson};

/// How to import.
#[derive(Clone, Copy, Debug)]
pub struct ImportOptions {
    /// Skip malformed lines (reporting each) instead of failing on the first.
    pub skip_malformed: bool,
    /// Records appended per batch.
    pub batch: usize,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions {
            skip_malformed: false,
            batch: 1000,
        }
    }
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImportReport {
    /// Records imported.
    pub imported: u64,
    /// Malformed lines skipped: line number and reason.
    pub skipped: Vec<(u64, String)>,
    /// The first and last append sequence imported.
    pub sequences: Option<(u64, u64)>,
}

/// Imports reference NDJSON into `store`. `progress` is called with the records imported so
/// far after each batch.
///
/// # Errors
///
/// The first malformed line ([`crate::record::Error::AtLine`] inside [`Error::Record`])
/// unless skipping. A failure while writing ([`Error::SequenceNotIncreasing`], backend
/// errors such as a full disk) comes as [`Error::ImportStopped`], which counts the records
/// committed before it (they stay imported, including the part of the failed batch that
/// was written) and holds the cause.
pub fn import(
    store: &mut dyn ArtifactStore,
    input: impl BufRead,
    options: ImportOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    // The store's last sequence before each batch, to count what a failed batch committed.
    let mut last_before = store.stats().ok().map(|s| s.last_sequence);
    let mut batch = Vec::with_capacity(options.batch.max(1));
    let mut flush =
        |batch: &mut Vec<crate::record::Record>, report: &mut ImportReport| -> Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            if let Err(source) = store.append_records(batch) {
                // Part of the batch may be in: the store's last sequence tells how much.
                let last = store.stats().ok().map(|s| s.last_sequence);
                let in_batch = match (last_before, last) {
                    (Some(before), Some(after)) => batch
                        .iter()
                        .filter(|r| (before + 1..=after).contains(&r.append_sequence()))
                        .count() as u64,
                    _ => 0,
                };
                let committed = report.imported + in_batch;
                let last_committed = match in_batch {
                    0 => report.sequences.map(|s| s.1),
                    n => batch.get(n as usize - 1).map(|r| r.append_sequence()),
                };
                return Err(Error::ImportStopped {
                    committed,
                    last_committed,
                    source: Box::new(source),
                });
            }
            let first = batch.first().map_or(0, |r| r.append_sequence());
            let last = batch.last().map_or(0, |r| r.append_sequence());
            last_before = Some(last);
            report.sequences = Some((report.sequences.map_or(first, |s| s.0), last));
            report.imported += batch.len() as u64;
            batch.clear();
            progress(report.imported);
            Ok(())
        };
    for line in ndjson::NdjsonReader::new(input) {
        match line {
            Ok(record) => batch.push(record),
            Err(error @ crate::record::Error::Io { .. }) => return Err(error.into()),
            Err(error) if options.skip_malformed => {
                let (number, reason) = match &error {
                    crate::record::Error::AtLine { line, source } => (*line, source.to_string()),
                    other => (0, other.to_string()),
                };
                report.skipped.push((number, reason));
            }
            Err(error) => return Err(error.into()),
        }
        if batch.len() >= options.batch.max(1) {
            flush(&mut batch, &mut report)?;
        }
    }
    flush(&mut batch, &mut report)?;
    Ok(report)
}

/// Exports the records after `after` that match `criteria` as reference NDJSON; returns how
/// many were written. `progress` is called with the count after each page.
///
/// # Errors
///
/// Damaged stored records, backend and output errors.
pub fn export(
    store: &dyn ArtifactStore,
    mut output: impl Write,
    after: u64,
    criteria: &Criteria,
    progress: &mut dyn FnMut(u64),
) -> Result<u64> {
    let mut cursor = ReadCursor::new(after, None);
    let mut written = 0u64;
    let mut line = String::new();
    loop {
        let page = store.read_from_cursor(&cursor, 1000, criteria)?;
        let Some(last) = page.last() else { break };
        cursor = cursor.advance(last.append_sequence(), None)?;
        for record in &page {
            line.clear();
            ndjson::append_ndjson_line(record, &mut line);
            output
                .write_all(line.as_bytes())
                .map_err(|source| Error::Io {
                    op: "write",
                    path: "export output".into(),
                    source,
                })?;
        }
        written += page.len() as u64;
        progress(written);
    }
    output.flush().map_err(|source| Error::Io {
        op: "write",
        path: "export output".into(),
        source,
    })?;
    Ok(written)
}
