//! Fold replay: the state of a stream at any sequence, rebuilt by folding its records
//! through a pure function, starting from the nearest persisted snapshot.
//!
//! A [`Stream`] is a criteria selection of the store (one replay session, one job, one
//! connection generation, ...) named by a key; snapshots are kept per key. Because `apply`
//! is pure and records are immutable and ordered, the state at a sequence is the same
//! whether it was folded from the start or from any snapshot at or before it.

use serde_json::Value;

use super::Error;
use super::snapshot::SnapshotStore;
use crate::record::{Criteria, JsonMap, ReadCursor, Record, is_blank, timestamp};
use crate::store::ArtifactReader;

/// A named criteria selection of a store: the records a fold applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    key: String,
    criteria: Criteria,
}

impl Stream {
    /// A stream named `key` selecting the records that match `criteria`.
    ///
    /// # Errors
    ///
    /// [`Error::BlankField`] if the key is blank.
    pub fn new(key: impl Into<String>, criteria: Criteria) -> Result<Self, Error> {
        let key = key.into();
        if is_blank(&key) {
            return Err(Error::BlankField {
                field: "stream key",
            });
        }
        Ok(Self { key, criteria })
    }

    /// A stream keyed by its criteria: `all` when they select everything, else the JSON
    /// object of the set conditions in a fixed order (so equal criteria share snapshots).
    /// Time bounds are keyed exactly as the criteria compare them, to the nanosecond:
    /// whole milliseconds in the reference text (the key snapshots were always stored
    /// under), finer bounds in full (two bounds that differ below a millisecond select
    /// different records, so they must not share snapshots).
    #[must_use]
    pub fn from_criteria(criteria: Criteria) -> Self {
        let fields = criteria.fields();
        let mut set = JsonMap::new();
        let mut put = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                set.insert(name.to_owned(), Value::String(value));
            }
        };
        put(
            "captured_from",
            fields.captured_from.as_ref().map(bound_text),
        );
        put(
            "captured_until",
            fields.captured_until.as_ref().map(bound_text),
        );
        put("artifact_name", fields.artifact_name.clone());
        put("job_uuid", fields.job_uuid.clone());
        put("replay_session_id", fields.replay_session_id.clone());
        put("pbx_node_slug", fields.pbx_node_slug.clone());
        put("worker_session_id", fields.worker_session_id.clone());
        put("session_id", fields.session_id.clone());
        put(
            "connection_generation",
            fields.connection_generation.clone(),
        );
        let key = if set.is_empty() {
            "all".to_owned()
        } else {
            Value::Object(set).to_string()
        };
        Self { key, criteria }
    }

    /// Every record of the store, keyed `all`.
    #[must_use]
    pub fn all() -> Self {
        Self::from_criteria(Criteria::any())
    }

    /// The key snapshots are kept under.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The selection.
    #[must_use]
    pub fn criteria(&self) -> &Criteria {
        &self.criteria
    }
}

/// How a fold reads and how often it persists its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FoldOptions {
    /// Records read per store read (at least 1).
    pub read_batch: usize,
    /// Save a snapshot after every this many applied records, once they are durable
    /// ([`ArtifactReader::sync_readable`]); 0 never saves.
    pub snapshot_every: u64,
}

impl Default for FoldOptions {
    fn default() -> Self {
        Self {
            read_batch: super::DEFAULT_BATCH_LIMIT,
            snapshot_every: 0,
        }
    }
}

/// The state a fold reached, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Folded<S> {
    /// The state after every stream record up to the target was applied.
    pub state: S,
    /// The append sequence of the last record the state reflects (0 if none).
    pub sequence: u64,
    /// The snapshot sequence the fold started from, if it used one.
    pub from_snapshot: Option<u64>,
    /// Records applied by this call.
    pub applied: u64,
    /// Snapshots saved by this call.
    pub snapshots_saved: u64,
}

/// Rebuilds the state of `stream` at `target_seq`: loads the latest snapshot at or before
/// the target (else starts from `initial`), then applies every later stream record up to
/// and including the target, in append order, saving a snapshot every
/// `options.snapshot_every` applied records.
///
/// `apply` must be pure (its result depends only on its arguments): snapshots are only
/// interchangeable with folding from the start under that condition.
///
/// # Errors
///
/// [`Error::InvalidFoldOption`] for a read batch of 0; store read errors; snapshot load
/// and save errors.
pub fn fold<T, S, F>(
    store: &T,
    snapshots: &mut dyn SnapshotStore<S>,
    stream: &Stream,
    target_seq: u64,
    apply: F,
    initial: S,
    options: &FoldOptions,
) -> Result<Folded<S>, Error>
where
    T: ArtifactReader + ?Sized,
    F: Fn(S, &Record) -> S,
{
    if options.read_batch == 0 {
        return Err(Error::InvalidFoldOption {
            option: "read_batch",
        });
    }
    let (mut state, mut sequence, from_snapshot) =
        match snapshots.latest_at_or_before(stream.key(), target_seq)? {
            Some(snapshot) => (snapshot.state, snapshot.sequence, Some(snapshot.sequence)),
            None => (initial, 0, None),
        };
    let (mut applied, mut snapshots_saved, mut durable) = (0u64, 0u64, 0u64);
    let mut cursor = ReadCursor::new(sequence, None);
    'read: while cursor.last_consumed_sequence() < target_seq {
        let records = store.read_from_cursor(&cursor, options.read_batch, stream.criteria())?;
        let Some(last) = records.last() else { break };
        cursor = cursor.advance(last.append_sequence(), None)?;
        for record in &records {
            if record.append_sequence() > target_seq {
                break 'read;
            }
            state = apply(state, record);
            sequence = record.append_sequence();
            applied += 1;
            if options.snapshot_every > 0 && applied.is_multiple_of(options.snapshot_every) {
                // A snapshot of records a power loss could take back would stand for records
                // that took their sequences after it.
                if sequence > durable {
                    durable = store.sync_readable()?;
                }
                // Records since lost to a power loss are not part of any snapshot.
                if sequence <= durable {
                    snapshots.save(stream.key(), sequence, &state)?;
                    snapshots_saved += 1;
                }
            }
        }
    }
    Ok(Folded {
        state,
        sequence,
        from_snapshot,
        applied,
        snapshots_saved,
    })
}

/// A time bound as a stream key holds it (see [`Stream::from_criteria`]).
fn bound_text(at: &time::OffsetDateTime) -> String {
    if at.nanosecond().is_multiple_of(1_000_000) {
        return timestamp::to_reference_text(at);
    }
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{}ns", at.unix_timestamp_nanos()))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::record::CriteriaFields;

    fn key_from(at: time::OffsetDateTime) -> String {
        Stream::from_criteria(
            Criteria::new(CriteriaFields {
                captured_from: Some(at),
                ..CriteriaFields::default()
            })
            .unwrap(),
        )
        .key()
        .to_owned()
    }

    #[test]
    fn time_bounds_are_keyed_to_the_nanosecond_and_millisecond_keys_stay() {
        assert_eq!(
            key_from(datetime!(2024-01-15 12:00:00.123 +02:00)),
            r#"{"captured_from":"2024-01-15T12:00:00.123+02:00"}"#
        );
        let fine = key_from(datetime!(2024-01-15 12:00:00.123_000_001 UTC));
        let finer = key_from(datetime!(2024-01-15 12:00:00.123_000_002 UTC));
        assert_ne!(fine, finer);
        assert_ne!(fine, key_from(datetime!(2024-01-15 12:00:00.123 UTC)));
        assert_eq!(
            fine,
            r#"{"captured_from":"2024-01-15T12:00:00.123000001Z"}"#
        );
    }
}
