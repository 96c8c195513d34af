//! Plans, outcomes and results: what an executor will look at, what it did with each
//! record, and how a batch ended (§5.2-5.6).

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeMap, Serializer};
use time::OffsetDateTime;

use super::Error;
use crate::record::{JsonMap, ReadCursor, Record};

/// The records one execution will look at, read after a cursor. Making a plan never
/// advances a cursor; callers advance theirs after executing it.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    from: ReadCursor,
    records: Vec<Record>,
    dry_run: bool,
    planned_at: OffsetDateTime,
}

impl Plan {
    /// A plan over `records`, read after `from`.
    #[must_use]
    pub fn new(
        from: ReadCursor,
        records: Vec<Record>,
        dry_run: bool,
        planned_at: OffsetDateTime,
    ) -> Self {
        Self {
            from,
            records,
            dry_run,
            planned_at,
        }
    }

    /// A plan from reference DTO parts, with its explicit record count validated (for plans
    /// rebuilt from serialized form).
    ///
    /// # Errors
    ///
    /// [`Error::NegativeCount`] if `record_count < 0`; [`Error::RecordCountMismatch`] if it
    /// is not the number of records.
    pub fn from_parts(
        from: ReadCursor,
        record_count: i64,
        records: Vec<Record>,
        dry_run: bool,
        planned_at: OffsetDateTime,
    ) -> Result<Self, Error> {
        check_count("record_count", record_count)?;
        if usize::try_from(record_count).ok() != Some(records.len()) {
            return Err(Error::RecordCountMismatch {
                count: record_count,
                records: records.len(),
            });
        }
        Ok(Self::new(from, records, dry_run, planned_at))
    }

    /// The cursor the records were read after.
    #[must_use]
    pub fn from(&self) -> &ReadCursor {
        &self.from
    }

    /// The planned records, in append order.
    #[must_use]
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// How many records are planned.
    #[must_use]
    pub fn record_count(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is planned.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Whether executing this plan only reports (decides dry-run, whatever the executor's
    /// configuration says, as in the reference).
    #[must_use]
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// When the plan was made (UTC).
    #[must_use]
    pub fn planned_at(&self) -> &OffsetDateTime {
        &self.planned_at
    }

    /// The append sequence of the last planned record.
    #[must_use]
    pub fn last_sequence(&self) -> Option<u64> {
        self.records.last().map(Record::append_sequence)
    }
}

fn check_count(field: &'static str, value: i64) -> Result<(), Error> {
    if value < 0 {
        Err(Error::NegativeCount { field, value })
    } else {
        Ok(())
    }
}

/// The identity of the record an outcome is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutcomeRecord {
    /// The record id.
    pub record_id: String,
    /// The artifact name.
    pub artifact_name: String,
    /// The artifact version (not reported by dry-run outcomes).
    pub artifact_version: String,
    /// The append sequence.
    pub append_sequence: u64,
}

impl OutcomeRecord {
    pub(crate) fn of(record: &Record) -> Self {
        Self {
            record_id: record.id().as_str().to_owned(),
            artifact_name: record.artifact_name().to_owned(),
            artifact_version: record.artifact_version().to_owned(),
            append_sequence: record.append_sequence(),
        }
    }
}

/// The action word of dry-run outcomes.
pub const ACTION_DRY_RUN_SKIP: &str = "dry_run_skip";
/// The action word of records observed without a handler.
pub const ACTION_OBSERVED: &str = "observed";
/// The action word of records the guard rejected.
pub const ACTION_REINJECTION_REJECTED: &str = "reinjection_rejected";

/// What execution did with one record. Serializes to the reference outcome map, with
/// the reference's keys in the reference's order for each kind (§5.4-5.6; decisions K6).
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// Dry-run: nothing invoked; reports what live execution would do.
    /// Keys: `record_id`, `artifact_name`, `append_sequence`, `action` (`dry_run_skip`),
    /// `would_dispatch_handler`, `handler`, `would_reinject`, `reinjection_reason`.
    DryRunSkip {
        /// The record.
        record: OutcomeRecord,
        /// The name of the handler observational mode would call, if any.
        handler: Option<String>,
        /// Whether re-injection mode would inject the record.
        would_reinject: bool,
        /// `None` when re-injection is disabled; else `eligible` or the rejection reason.
        reinjection_reason: Option<Cow<'static, str>>,
    },
    /// Observational mode, no handler for the artifact. Keys: `record_id`,
    /// `artifact_name`, `artifact_version`, `append_sequence`, `action` (`observed`),
    /// `handler` (null).
    Observed {
        /// The record.
        record: OutcomeRecord,
    },
    /// Observational mode, a handler ran. Keys: the four record keys, `action` (the
    /// handler's), `handler`, `metadata`.
    Handled {
        /// The record.
        record: OutcomeRecord,
        /// The handler's action word.
        action: String,
        /// The handler's name.
        handler: String,
        /// The handler's metadata.
        metadata: JsonMap,
    },
    /// Re-injection mode, the guard rejected the record. Keys: the four record keys,
    /// `action` (`reinjection_rejected`), `reason`.
    ReinjectionRejected {
        /// The record.
        record: OutcomeRecord,
        /// Why it was rejected.
        reason: Cow<'static, str>,
    },
    /// Re-injection mode, the injector ran. Keys: the four record keys, `action` (the
    /// injector's), `metadata`.
    Injected {
        /// The record.
        record: OutcomeRecord,
        /// The injector's action word.
        action: String,
        /// The injector's metadata.
        metadata: JsonMap,
    },
}

impl Outcome {
    /// The record the outcome is about.
    #[must_use]
    pub fn record(&self) -> &OutcomeRecord {
        match self {
            Outcome::DryRunSkip { record, .. }
            | Outcome::Observed { record }
            | Outcome::Handled { record, .. }
            | Outcome::ReinjectionRejected { record, .. }
            | Outcome::Injected { record, .. } => record,
        }
    }

    /// The outcome's `action` value.
    #[must_use]
    pub fn action(&self) -> &str {
        match self {
            Outcome::DryRunSkip { .. } => ACTION_DRY_RUN_SKIP,
            Outcome::Observed { .. } => ACTION_OBSERVED,
            Outcome::ReinjectionRejected { .. } => ACTION_REINJECTION_REJECTED,
            Outcome::Handled { action, .. } | Outcome::Injected { action, .. } => action,
        }
    }

    /// The handler reported (dry-run: the one that would run; handled: the one that ran).
    #[must_use]
    pub fn handler(&self) -> Option<&str> {
        match self {
            Outcome::DryRunSkip { handler, .. } => handler.as_deref(),
            Outcome::Handled { handler, .. } => Some(handler),
            _ => None,
        }
    }
}

impl Serialize for Outcome {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let record = self.record();
        map.serialize_entry("record_id", &record.record_id)?;
        map.serialize_entry("artifact_name", &record.artifact_name)?;
        if !matches!(self, Outcome::DryRunSkip { .. }) {
            map.serialize_entry("artifact_version", &record.artifact_version)?;
        }
        map.serialize_entry("append_sequence", &record.append_sequence)?;
        map.serialize_entry("action", self.action())?;
        match self {
            Outcome::DryRunSkip {
                handler,
                would_reinject,
                reinjection_reason,
                ..
            } => {
                map.serialize_entry("would_dispatch_handler", &handler.is_some())?;
                map.serialize_entry("handler", handler)?;
                map.serialize_entry("would_reinject", would_reinject)?;
                map.serialize_entry("reinjection_reason", reinjection_reason)?;
            }
            Outcome::Observed { .. } => map.serialize_entry("handler", &None::<&str>)?,
            Outcome::Handled {
                handler, metadata, ..
            } => {
                map.serialize_entry("handler", handler)?;
                map.serialize_entry("metadata", metadata)?;
            }
            Outcome::ReinjectionRejected { reason, .. } => {
                map.serialize_entry("reason", reason)?;
            }
            Outcome::Injected { metadata, .. } => map.serialize_entry("metadata", metadata)?,
        }
        map.end()
    }
}

/// How one execution of a plan ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionResult {
    plan: Plan,
    success: bool,
    processed_count: u64,
    skipped_count: u64,
    outcomes: Vec<Outcome>,
    executed_at: OffsetDateTime,
    error: Option<String>,
}

impl ExecutionResult {
    /// A result. `error` is the failing handler's or injector's message, if any.
    #[must_use]
    pub fn new(
        plan: Plan,
        success: bool,
        processed_count: u64,
        skipped_count: u64,
        outcomes: Vec<Outcome>,
        executed_at: OffsetDateTime,
        error: Option<String>,
    ) -> Self {
        Self {
            plan,
            success,
            processed_count,
            skipped_count,
            outcomes,
            executed_at,
            error,
        }
    }

    /// A result from reference DTO parts, with signed counts validated.
    ///
    /// # Errors
    ///
    /// [`Error::NegativeCount`] if a count is negative.
    #[allow(
        clippy::too_many_arguments,
        reason = "mirrors the reference DTO field for field"
    )]
    pub fn from_parts(
        plan: Plan,
        success: bool,
        processed_count: i64,
        skipped_count: i64,
        outcomes: Vec<Outcome>,
        executed_at: OffsetDateTime,
        error: Option<String>,
    ) -> Result<Self, Error> {
        check_count("processed_count", processed_count)?;
        check_count("skipped_count", skipped_count)?;
        Ok(Self::new(
            plan,
            success,
            processed_count.unsigned_abs(),
            skipped_count.unsigned_abs(),
            outcomes,
            executed_at,
            error,
        ))
    }

    /// The plan that was executed.
    #[must_use]
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether every planned record was dealt with.
    #[must_use]
    pub fn success(&self) -> bool {
        self.success
    }

    /// Records handed to a handler, observed, or injected.
    #[must_use]
    pub fn processed_count(&self) -> u64 {
        self.processed_count
    }

    /// Records skipped (every record in dry-run; rejected ones in re-injection mode).
    #[must_use]
    pub fn skipped_count(&self) -> u64 {
        self.skipped_count
    }

    /// One outcome per record dealt with, in order; on failure, those before the failing
    /// record.
    #[must_use]
    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    /// When execution finished (UTC).
    #[must_use]
    pub fn executed_at(&self) -> &OffsetDateTime {
        &self.executed_at
    }

    /// The failing handler's or injector's message.
    #[must_use]
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The append sequence of the last record with an outcome: how far a cursor may
    /// advance after this result.
    #[must_use]
    pub fn last_dealt_sequence(&self) -> Option<u64> {
        self.outcomes.last().map(|o| o.record().append_sequence)
    }

    /// Takes the result apart into its plan and outcomes.
    #[must_use]
    pub fn into_parts(self) -> (Plan, Vec<Outcome>) {
        (self.plan, self.outcomes)
    }
}
