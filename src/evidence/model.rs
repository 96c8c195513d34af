//! What does recovery evidence consist of?
//!
//! The evidence types of reference §7.3 (decision K7), each a validated wrapper `X` around a
//! plain `XFields` struct (the evidence module docs describe the pattern).
//!
//! The types read from JSON deserialize into their fields struct and then go through
//! [`X::new`](ReconstructionWindow::new), so reading validates exactly as building does.
//! Bundle types read the export form (`export`'s module docs): every key present, `null`
//! for an absent value (`deserialize_with = "Option::deserialize"` makes an `Option` key
//! required), lists written `[]` or, when empty, `{}`, free-form maps written `{}` or as
//! PHP lists, unknown keys ignored. Scenario expectations are hand-written, so their
//! optional keys may be left out and unknown keys are refused.

use std::ops::Deref;

use serde::Deserialize;
use serde::de::{self as serde_de, Deserializer};
use time::OffsetDateTime;

use super::{Error, de};
use crate::record::{Criteria, JsonMap, ReadCursor, is_blank, timestamp};

/// Declares a validated, immutable wrapper around a fields struct.
macro_rules! validated {
    ($(#[$attr:meta])* $name:ident($fields:ident)) => {
        $(#[$attr])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name($fields);

        impl $name {
            /// Validates the fields (see the fields type for the rules).
            ///
            /// # Errors
            ///
            /// [`Error::BlankField`], [`Error::SequenceOutOfRange`] or a type-specific
            /// variant naming the rule that failed.
            pub fn new(fields: $fields) -> Result<Self, Error> {
                fields.validate()?;
                Ok(Self(fields))
            }

            /// Gives the fields back, for example to build a changed copy.
            #[must_use]
            pub fn into_fields(self) -> $fields {
                self.0
            }
        }

        impl Deref for $name {
            type Target = $fields;

            fn deref(&self) -> &$fields {
                &self.0
            }
        }

        impl TryFrom<$fields> for $name {
            type Error = Error;

            fn try_from(fields: $fields) -> Result<Self, Error> {
                Self::new(fields)
            }
        }
    };
    ($(#[$attr:meta])* $name:ident($fields:ident) + Deserialize) => {
        validated! { $(#[$attr])* $name($fields) }

        impl<'de> Deserialize<'de> for $name {
            /// Reads the fields, then validates them with `new`.
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                Self::new($fields::deserialize(deserializer)?).map_err(serde_de::Error::custom)
            }
        }
    };
}

fn non_blank(type_name: &'static str, field: &'static str, value: &str) -> Result<(), Error> {
    if is_blank(value) {
        Err(Error::BlankField { type_name, field })
    } else {
        Ok(())
    }
}

fn non_blank_if_given(
    type_name: &'static str,
    field: &'static str,
    value: Option<&str>,
) -> Result<(), Error> {
    value.map_or(Ok(()), |value| non_blank(type_name, field, value))
}

fn positive(type_name: &'static str, field: &'static str, value: u64) -> Result<(), Error> {
    if value == 0 || i64::try_from(value).is_err() {
        Err(Error::SequenceOutOfRange {
            type_name,
            field,
            value,
        })
    } else {
        Ok(())
    }
}

fn positive_if_given(
    type_name: &'static str,
    field: &'static str,
    value: Option<u64>,
) -> Result<(), Error> {
    value.map_or(Ok(()), |value| positive(type_name, field, value))
}

/// The default batch limit of a reconstruction window.
pub(crate) const DEFAULT_BATCH_LIMIT: usize = 100;

/// The fields of a [`ReconstructionWindow`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ReconstructionWindowFields {
    /// Where reading starts: records after this cursor's last consumed sequence. Written
    /// as `from_last_consumed_sequence` and `from_byte_offset_hint`.
    #[serde(flatten, deserialize_with = "de::window_cursor")]
    pub from: ReadCursor,
    /// The last append sequence included; `None` reads to the end. Must be at least 1 and
    /// greater than the cursor's last consumed sequence.
    #[serde(deserialize_with = "Option::deserialize")]
    pub until_append_sequence: Option<u64>,
    /// The read filter, if any (`None` is written as `null`).
    #[serde(deserialize_with = "de::nullable_object")]
    pub criteria: Option<Criteria>,
    /// Records read per store call; at least 1. Part of the bundle id.
    pub batch_limit: usize,
    /// The checkpoint this window belongs to, if any; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub checkpoint_key: Option<String>,
    /// The checkpoint's metadata, in its insertion order (which the bundle id hashes).
    #[serde(deserialize_with = "de::map")]
    pub checkpoint_metadata: JsonMap,
}

impl Default for ReconstructionWindowFields {
    /// The whole stream from its start, unfiltered, 100 records per batch.
    fn default() -> Self {
        Self {
            from: ReadCursor::start(),
            until_append_sequence: None,
            criteria: None,
            batch_limit: DEFAULT_BATCH_LIMIT,
            checkpoint_key: None,
            checkpoint_metadata: JsonMap::new(),
        }
    }
}

impl ReconstructionWindowFields {
    fn validate(&self) -> Result<(), Error> {
        const TYPE: &str = "reconstruction window";
        if let Some(until) = self.until_append_sequence {
            positive(TYPE, "until_append_sequence", until)?;
            let from = self.from.last_consumed_sequence();
            if until <= from {
                return Err(Error::UntilNotAfterFrom { until, from });
            }
        }
        if self.batch_limit == 0 {
            return Err(Error::InvalidBatchLimit);
        }
        non_blank_if_given(TYPE, "checkpoint_key", self.checkpoint_key.as_deref())?;
        // The metadata is written into bundles and their ids by recursive writers.
        crate::record::check_map_depth(&self.checkpoint_metadata)?;
        Ok(())
    }
}

validated! {
    /// The bounded stretch of a stream that one reconstruction reads (§7.3). The default
    /// is the whole stream from its start, unfiltered, 100 records per batch.
    #[derive(Default)]
    ReconstructionWindow(ReconstructionWindowFields) + Deserialize
}

/// The fields of a [`GenerationObservation`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct GenerationObservationFields {
    /// The recovery generation id; non-blank.
    pub generation_id: String,
    /// The record where the generation was first seen (after a different one); at least 1.
    pub append_sequence: u64,
    /// That record's artifact name; non-blank.
    pub artifact_name: String,
}

impl GenerationObservationFields {
    fn validate(&self) -> Result<(), Error> {
        const TYPE: &str = "recovery generation observation";
        non_blank(TYPE, "generation_id", &self.generation_id)?;
        positive(TYPE, "append_sequence", self.append_sequence)?;
        non_blank(TYPE, "artifact_name", &self.artifact_name)
    }
}

validated! {
    /// A point where the stream's recovery generation changed (or was first seen).
    GenerationObservation(GenerationObservationFields) + Deserialize
}

/// The fields of a [`ContinuitySnapshot`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ContinuitySnapshotFields {
    /// Every change of recovery generation, in stream order.
    #[serde(deserialize_with = "de::list")]
    pub recovery_generations: Vec<GenerationObservation>,
    /// The last observed replay continuity posture; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub replay_continuity_posture: Option<String>,
    /// The last observed retry posture; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub retry_posture: Option<String>,
    /// The last observed drain posture; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub drain_posture: Option<String>,
    /// The last observed reconstruction posture; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub reconstruction_posture: Option<String>,
    /// The sequence of the last record read; at least 1 when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub last_observed_append_sequence: Option<u64>,
}

impl ContinuitySnapshotFields {
    fn validate(&self) -> Result<(), Error> {
        const TYPE: &str = "continuity snapshot";
        for (field, value) in [
            ("replay_continuity_posture", &self.replay_continuity_posture),
            ("retry_posture", &self.retry_posture),
            ("drain_posture", &self.drain_posture),
            ("reconstruction_posture", &self.reconstruction_posture),
        ] {
            non_blank_if_given(TYPE, field, value.as_deref())?;
        }
        positive_if_given(
            TYPE,
            "last_observed_append_sequence",
            self.last_observed_append_sequence,
        )
    }
}

validated! {
    /// The runtime continuity the window shows: generations and final postures.
    ContinuitySnapshot(ContinuitySnapshotFields) + Deserialize
}

impl Eq for GenerationObservation {}
impl Eq for ContinuitySnapshot {}

/// What kind of problem an issue reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IssueKind {
    /// The records do not carry enough evidence.
    Insufficient,
    /// The records carry evidence that changes within the window.
    Ambiguity,
    /// The records contradict each other (recognised by the verdict; never emitted).
    Contradiction,
    /// A bundle does not match a scenario expectation.
    Mismatch,
}

impl IssueKind {
    /// Every kind.
    pub const ALL: [IssueKind; 4] = [
        IssueKind::Insufficient,
        IssueKind::Ambiguity,
        IssueKind::Contradiction,
        IssueKind::Mismatch,
    ];

    /// The name written in bundles.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            IssueKind::Insufficient => "insufficient",
            IssueKind::Ambiguity => "ambiguity",
            IssueKind::Contradiction => "contradiction",
            IssueKind::Mismatch => "mismatch",
        }
    }

    /// The kind with this name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }
}

/// Which rule an issue reports. The names are the reference's codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IssueCode {
    /// The replay continuity posture changed within the window.
    ReplayContinuityPostureChanged,
    /// The retry posture changed within the window.
    RetryPostureChanged,
    /// The drain posture changed within the window.
    DrainPostureChanged,
    /// The reconstruction posture changed within the window.
    ReconstructionPostureChanged,
    /// A record states an operation state but no operation id or job UUID.
    OperationStateWithoutIdentity,
    /// A terminal-publication snapshot lacks its id or status.
    TerminalPublicationSnapshotIncomplete,
    /// A lifecycle-semantic snapshot lacks its semantic or posture.
    LifecycleSemanticSnapshotIncomplete,
    /// The window holds no records.
    NoRecordsInWindow,
    /// No record in the window names a recovery generation.
    MissingRecoveryGenerationEvidence,
    /// The generation sequence differs from the expected one.
    RecoveryGenerationSequenceMismatch,
    /// The final replay continuity posture differs from the expected one.
    ReplayContinuityPostureMismatch,
    /// The final retry posture differs from the expected one.
    RetryPostureMismatch,
    /// The final drain posture differs from the expected one.
    DrainPostureMismatch,
    /// The final reconstruction posture differs from the expected one.
    ReconstructionPostureMismatch,
    /// An expected operation was not reconstructed.
    MissingOperationLifecycle,
    /// An operation's states differ from the expected ones.
    OperationStateSequenceMismatch,
    /// An operation's final state differs from the expected one.
    OperationFinalStateMismatch,
    /// An operation's retry posture differs from the expected one.
    OperationRetryPostureMismatch,
    /// An operation's drain posture differs from the expected one.
    OperationDrainPostureMismatch,
    /// An expected terminal publication is missing or differs.
    TerminalPublicationMismatch,
    /// An expected lifecycle semantic is missing or differs.
    LifecycleSemanticMismatch,
}

impl IssueCode {
    /// Every code.
    pub const ALL: [IssueCode; 21] = [
        IssueCode::ReplayContinuityPostureChanged,
        IssueCode::RetryPostureChanged,
        IssueCode::DrainPostureChanged,
        IssueCode::ReconstructionPostureChanged,
        IssueCode::OperationStateWithoutIdentity,
        IssueCode::TerminalPublicationSnapshotIncomplete,
        IssueCode::LifecycleSemanticSnapshotIncomplete,
        IssueCode::NoRecordsInWindow,
        IssueCode::MissingRecoveryGenerationEvidence,
        IssueCode::RecoveryGenerationSequenceMismatch,
        IssueCode::ReplayContinuityPostureMismatch,
        IssueCode::RetryPostureMismatch,
        IssueCode::DrainPostureMismatch,
        IssueCode::ReconstructionPostureMismatch,
        IssueCode::MissingOperationLifecycle,
        IssueCode::OperationStateSequenceMismatch,
        IssueCode::OperationFinalStateMismatch,
        IssueCode::OperationRetryPostureMismatch,
        IssueCode::OperationDrainPostureMismatch,
        IssueCode::TerminalPublicationMismatch,
        IssueCode::LifecycleSemanticMismatch,
    ];

    /// The code written in bundles.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            IssueCode::ReplayContinuityPostureChanged => "replay_continuity_posture_changed",
            IssueCode::RetryPostureChanged => "retry_posture_changed",
            IssueCode::DrainPostureChanged => "drain_posture_changed",
            IssueCode::ReconstructionPostureChanged => "reconstruction_posture_changed",
            IssueCode::OperationStateWithoutIdentity => "operation_state_without_identity",
            IssueCode::TerminalPublicationSnapshotIncomplete => {
                "terminal_publication_snapshot_incomplete"
            }
            IssueCode::LifecycleSemanticSnapshotIncomplete => {
                "lifecycle_semantic_snapshot_incomplete"
            }
            IssueCode::NoRecordsInWindow => "no_records_in_window",
            IssueCode::MissingRecoveryGenerationEvidence => "missing_recovery_generation_evidence",
            IssueCode::RecoveryGenerationSequenceMismatch => {
                "recovery_generation_sequence_mismatch"
            }
            IssueCode::ReplayContinuityPostureMismatch => "replay_continuity_posture_mismatch",
            IssueCode::RetryPostureMismatch => "retry_posture_mismatch",
            IssueCode::DrainPostureMismatch => "drain_posture_mismatch",
            IssueCode::ReconstructionPostureMismatch => "reconstruction_posture_mismatch",
            IssueCode::MissingOperationLifecycle => "missing_operation_lifecycle",
            IssueCode::OperationStateSequenceMismatch => "operation_state_sequence_mismatch",
            IssueCode::OperationFinalStateMismatch => "operation_final_state_mismatch",
            IssueCode::OperationRetryPostureMismatch => "operation_retry_posture_mismatch",
            IssueCode::OperationDrainPostureMismatch => "operation_drain_posture_mismatch",
            IssueCode::TerminalPublicationMismatch => "terminal_publication_mismatch",
            IssueCode::LifecycleSemanticMismatch => "lifecycle_semantic_mismatch",
        }
    }

    /// The code with this name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|code| code.as_str() == name)
    }
}

/// The fields of an [`Issue`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct IssueFields {
    /// What kind of problem.
    pub kind: IssueKind,
    /// Which rule.
    pub code: IssueCode,
    /// A sentence for people; non-blank. Part of the bundle id.
    pub message: String,
    /// The record it concerns, if one; at least 1 when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub append_sequence: Option<u64>,
    /// That record's artifact name; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub artifact_name: Option<String>,
    /// Machine-readable details (written with sorted keys).
    #[serde(deserialize_with = "de::map")]
    pub details: JsonMap,
}

impl IssueFields {
    fn validate(&self) -> Result<(), Error> {
        const TYPE: &str = "issue";
        non_blank(TYPE, "message", &self.message)?;
        positive_if_given(TYPE, "append_sequence", self.append_sequence)?;
        non_blank_if_given(TYPE, "artifact_name", self.artifact_name.as_deref())
    }
}

validated! {
    /// A problem found while reconstructing or comparing (§7.3).
    Issue(IssueFields) + Deserialize
}

/// How far the evidence of a window can be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum VerdictPosture {
    /// Every rule held.
    Complete,
    /// Some evidence changed within the window (an `ambiguity` issue).
    Partial,
    /// Some evidence is missing (an `insufficient` issue).
    Insufficient,
    /// Evidence contradicts itself (a `contradiction` issue; never emitted today).
    Contradicted,
}

impl VerdictPosture {
    /// Every posture.
    pub const ALL: [VerdictPosture; 4] = [
        VerdictPosture::Complete,
        VerdictPosture::Partial,
        VerdictPosture::Insufficient,
        VerdictPosture::Contradicted,
    ];

    /// The name written in bundles.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            VerdictPosture::Complete => "complete",
            VerdictPosture::Partial => "partial",
            VerdictPosture::Insufficient => "insufficient",
            VerdictPosture::Contradicted => "contradicted",
        }
    }

    /// The posture with this name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|posture| posture.as_str() == name)
    }

    /// The posture issues of these kinds force: any contradiction, else any insufficiency,
    /// else any ambiguity, else complete.
    #[must_use]
    pub fn for_issues<'a>(issues: impl IntoIterator<Item = &'a Issue>) -> Self {
        let (mut contradiction, mut insufficient, mut ambiguity) = (false, false, false);
        for issue in issues {
            match issue.kind {
                IssueKind::Contradiction => contradiction = true,
                IssueKind::Insufficient => insufficient = true,
                IssueKind::Ambiguity => ambiguity = true,
                IssueKind::Mismatch => {}
            }
        }
        if contradiction {
            VerdictPosture::Contradicted
        } else if insufficient {
            VerdictPosture::Insufficient
        } else if ambiguity {
            VerdictPosture::Partial
        } else {
            VerdictPosture::Complete
        }
    }
}

/// Implements `Deserialize` for a named enum through its `from_name`.
macro_rules! deserialize_by_name {
    ($($name:ident: $what:literal),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                de::by_name(deserializer, $what, Self::from_name)
            }
        }
    )*};
}

deserialize_by_name! {
    IssueKind: "issue kind",
    IssueCode: "issue code",
    VerdictPosture: "verdict posture",
}

/// The outcome of a reconstruction: a posture and every issue in emission order.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Verdict {
    /// How far the evidence can be trusted.
    pub posture: VerdictPosture,
    /// Every issue, in the order found.
    #[serde(deserialize_with = "de::list")]
    pub issues: Vec<Issue>,
}

impl Verdict {
    /// The verdict the issues force (see [`VerdictPosture::for_issues`]).
    #[must_use]
    pub fn from_issues(issues: Vec<Issue>) -> Self {
        Self {
            posture: VerdictPosture::for_issues(&issues),
            issues,
        }
    }
}

/// The bundle format version this build writes and reads.
pub const BUNDLE_VERSION: u64 = 1;

/// The fields of a [`Manifest`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ManifestFields {
    /// The bundle format version; must be [`BUNDLE_VERSION`].
    pub bundle_version: u64,
    /// The bundle id (lowercase hex SHA-256, see [`bundle_id`](super::bundle_id)); non-blank.
    pub bundle_id: String,
    /// The window read.
    #[serde(deserialize_with = "de::object")]
    pub window: ReconstructionWindow,
    /// Records read.
    pub record_count: u64,
    /// The first record's sequence; at least 1 when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub first_append_sequence: Option<u64>,
    /// The last record's sequence; at least 1 when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub last_append_sequence: Option<u64>,
    /// The verdict.
    #[serde(deserialize_with = "de::object")]
    pub verdict: Verdict,
}

impl ManifestFields {
    fn validate(&self) -> Result<(), Error> {
        const TYPE: &str = "manifest";
        if self.bundle_version != BUNDLE_VERSION {
            return Err(Error::UnsupportedBundleVersion {
                version: self.bundle_version,
            });
        }
        non_blank(TYPE, "bundle_id", &self.bundle_id)?;
        positive_if_given(TYPE, "first_append_sequence", self.first_append_sequence)?;
        positive_if_given(TYPE, "last_append_sequence", self.last_append_sequence)
    }
}

validated! {
    /// What a bundle covers and concludes.
    Manifest(ManifestFields) + Deserialize
}

/// One state an operation was observed in.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct ObservedState {
    /// The state, as stated or implied.
    pub state: String,
    /// The record that showed it.
    pub append_sequence: u64,
    /// That record's artifact name.
    pub artifact_name: String,
}

/// The fields of an [`OperationRecord`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct OperationRecordFields {
    /// The operation id; non-blank.
    pub operation_id: String,
    /// The kind, from the record that first showed the operation; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub operation_kind: Option<String>,
    /// The background-job UUID, from that record; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub bgapi_job_uuid: Option<String>,
    /// The first record that showed state `accepted`; at least 1 when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub accepted_append_sequence: Option<u64>,
    /// Every state observed, in stream order.
    #[serde(deserialize_with = "de::list")]
    pub observed_states: Vec<ObservedState>,
    /// The last observed state; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub final_state: Option<String>,
    /// The last observed retry posture; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub retry_posture: Option<String>,
    /// The last observed drain posture; non-blank when given.
    #[serde(deserialize_with = "Option::deserialize")]
    pub drain_posture: Option<String>,
    /// Issues about this operation (none are raised today).
    #[serde(deserialize_with = "de::list")]
    pub issues: Vec<Issue>,
}

impl OperationRecordFields {
    fn validate(&self) -> Result<(), Error> {
        const TYPE: &str = "operation record";
        non_blank(TYPE, "operation_id", &self.operation_id)?;
        for (field, value) in [
            ("operation_kind", &self.operation_kind),
            ("bgapi_job_uuid", &self.bgapi_job_uuid),
            ("final_state", &self.final_state),
            ("retry_posture", &self.retry_posture),
            ("drain_posture", &self.drain_posture),
        ] {
            non_blank_if_given(TYPE, field, value.as_deref())?;
        }
        positive_if_given(
            TYPE,
            "accepted_append_sequence",
            self.accepted_append_sequence,
        )?;
        for observed in &self.observed_states {
            non_blank(TYPE, "observed_states.state", &observed.state)?;
            positive(
                TYPE,
                "observed_states.append_sequence",
                observed.append_sequence,
            )?;
            non_blank(
                TYPE,
                "observed_states.artifact_name",
                &observed.artifact_name,
            )?;
        }
        Ok(())
    }
}

validated! {
    /// The lifecycle of one operation as the window shows it.
    OperationRecord(OperationRecordFields) + Deserialize
}

/// Declares a snapshot record: a named value with a status-like value seen in one record
/// (terminal publications and lifecycle semantics share this shape and its rules).
macro_rules! snapshot_record {
    (
        $(#[$attr:meta])*
        $name:ident($fields:ident), $type_name:literal,
        $(#[$key_doc:meta])* $key:ident,
        $(#[$value_doc:meta])* $value:ident $(,)?
    ) => {
        #[doc = concat!("The fields of a [`", stringify!($name), "`].")]
        #[derive(Clone, Debug, PartialEq, Deserialize)]
        pub struct $fields {
            $(#[$key_doc])*
            pub $key: String,
            $(#[$value_doc])*
            pub $value: String,
            /// The record that showed it; at least 1.
            pub append_sequence: u64,
            /// That record's artifact name; non-blank.
            pub artifact_name: String,
            /// The operation of that record, if any; non-blank when given.
            #[serde(deserialize_with = "Option::deserialize")]
            pub operation_id: Option<String>,
            /// The whole snapshot (written with sorted keys).
            #[serde(deserialize_with = "de::map")]
            pub facts: JsonMap,
        }

        impl $fields {
            fn validate(&self) -> Result<(), Error> {
                const TYPE: &str = $type_name;
                non_blank(TYPE, stringify!($key), &self.$key)?;
                non_blank(TYPE, stringify!($value), &self.$value)?;
                positive(TYPE, "append_sequence", self.append_sequence)?;
                non_blank(TYPE, "artifact_name", &self.artifact_name)?;
                non_blank_if_given(TYPE, "operation_id", self.operation_id.as_deref())
            }
        }

        validated! {
            $(#[$attr])*
            $name($fields) + Deserialize
        }

        impl SnapshotRecord for $name {
            fn named(&self) -> [(&'static str, &str); 2] {
                [(stringify!($key), &self.$key), (stringify!($value), &self.$value)]
            }

            fn append_sequence(&self) -> u64 {
                self.append_sequence
            }

            fn artifact_name(&self) -> &str {
                &self.artifact_name
            }

            fn operation_id(&self) -> Option<&str> {
                self.operation_id.as_deref()
            }

            fn facts(&self) -> &JsonMap {
                &self.facts
            }
        }
    };
}

/// What the writer needs of a snapshot record, whichever kind it is.
pub(super) trait SnapshotRecord {
    /// The two kind-specific fields as `(key, value)`, in the order they are written.
    fn named(&self) -> [(&'static str, &str); 2];
    /// The record that showed it.
    fn append_sequence(&self) -> u64;
    /// That record's artifact name.
    fn artifact_name(&self) -> &str;
    /// The operation of that record, if any.
    fn operation_id(&self) -> Option<&str>;
    /// The whole snapshot.
    fn facts(&self) -> &JsonMap;
}

snapshot_record! {
    /// A terminal publication seen in the window.
    TerminalPublicationRecord(TerminalPublicationRecordFields), "terminal publication record",
    /// The publication id; non-blank.
    publication_id,
    /// Its status; non-blank.
    status,
}

snapshot_record! {
    /// A lifecycle semantic seen in the window.
    LifecycleSemanticRecord(LifecycleSemanticRecordFields), "lifecycle semantic record",
    /// The semantic; non-blank.
    semantic,
    /// Its posture; non-blank.
    posture,
}

/// The fields of a [`RecordReference`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct RecordReferenceFields {
    /// The record id; non-blank.
    pub record_id: String,
    /// Its append sequence; at least 1.
    pub append_sequence: u64,
    /// Its artifact name; non-blank.
    pub artifact_name: String,
    /// Its capture time (written in the reference text form).
    #[serde(deserialize_with = "timestamp::deserialize")]
    pub capture_timestamp: OffsetDateTime,
}

impl RecordReferenceFields {
    fn validate(&self) -> Result<(), Error> {
        const TYPE: &str = "record reference";
        non_blank(TYPE, "record_id", &self.record_id)?;
        positive(TYPE, "append_sequence", self.append_sequence)?;
        non_blank(TYPE, "artifact_name", &self.artifact_name)
    }
}

validated! {
    /// A pointer to one record the window read.
    RecordReference(RecordReferenceFields) + Deserialize
}

/// Everything one reconstruction found (§7.3). Its parts are validated; the bundle itself
/// adds no rule.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EvidenceBundle {
    /// What the bundle covers and concludes.
    #[serde(deserialize_with = "de::object")]
    pub manifest: Manifest,
    /// Generations and final postures.
    #[serde(deserialize_with = "de::object")]
    pub continuity_snapshot: ContinuitySnapshot,
    /// Every record read, in stream order.
    #[serde(deserialize_with = "de::list")]
    pub record_references: Vec<RecordReference>,
    /// Operations, sorted by id.
    #[serde(deserialize_with = "de::list")]
    pub operations: Vec<OperationRecord>,
    /// Terminal publications, by sequence.
    #[serde(deserialize_with = "de::list")]
    pub terminal_publications: Vec<TerminalPublicationRecord>,
    /// Lifecycle semantics, by sequence.
    #[serde(deserialize_with = "de::list")]
    pub lifecycle_semantics: Vec<LifecycleSemanticRecord>,
}

/// The fields of an [`ExpectedOperationLifecycle`]; JSON keys as named here.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedOperationLifecycleFields {
    /// The operation id; non-blank.
    pub operation_id: String,
    /// The states expected, in order; at least one.
    pub states: Vec<String>,
    /// The expected final state, if checked.
    #[serde(default)]
    pub final_state: Option<String>,
    /// The expected retry posture, if checked.
    #[serde(default)]
    pub retry_posture: Option<String>,
    /// The expected drain posture, if checked.
    #[serde(default)]
    pub drain_posture: Option<String>,
}

impl ExpectedOperationLifecycleFields {
    fn validate(&self) -> Result<(), Error> {
        non_blank("expected operation", "operation_id", &self.operation_id)?;
        if self.states.is_empty() {
            return Err(Error::EmptyExpectedStates {
                operation_id: self.operation_id.clone(),
            });
        }
        Ok(())
    }
}

validated! {
    /// How one operation is expected to have run.
    ExpectedOperationLifecycle(ExpectedOperationLifecycleFields) + Deserialize
}

/// The fields of an [`ExpectedTerminalPublication`]; JSON keys as named here.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedTerminalPublicationFields {
    /// The publication id.
    pub publication_id: String,
    /// The expected status; non-blank.
    pub status: String,
    /// The expected operation (`None` requires a publication without one); non-blank when
    /// given.
    #[serde(default)]
    pub operation_id: Option<String>,
}

impl ExpectedTerminalPublicationFields {
    fn validate(&self) -> Result<(), Error> {
        const TYPE: &str = "expected terminal publication";
        non_blank(TYPE, "publication_id", &self.publication_id)?;
        non_blank(TYPE, "status", &self.status)?;
        non_blank_if_given(TYPE, "operation_id", self.operation_id.as_deref())
    }
}

validated! {
    /// A terminal publication the scenario expects.
    ExpectedTerminalPublication(ExpectedTerminalPublicationFields) + Deserialize
}

/// The fields of an [`ExpectedLifecycleSemantic`]; JSON keys as named here.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedLifecycleSemanticFields {
    /// The semantic.
    pub semantic: String,
    /// The expected posture; non-blank.
    pub posture: String,
    /// The operation it belongs to (`None` matches only records without one); non-blank
    /// when given.
    #[serde(default)]
    pub operation_id: Option<String>,
}

impl ExpectedLifecycleSemanticFields {
    fn validate(&self) -> Result<(), Error> {
        const TYPE: &str = "expected lifecycle semantic";
        non_blank(TYPE, "semantic", &self.semantic)?;
        non_blank(TYPE, "posture", &self.posture)?;
        non_blank_if_given(TYPE, "operation_id", self.operation_id.as_deref())
    }
}

validated! {
    /// A lifecycle semantic the scenario expects.
    ExpectedLifecycleSemantic(ExpectedLifecycleSemanticFields) + Deserialize
}

/// The fields of a [`ScenarioExpectation`]; JSON keys as named here, every key but
/// `scenario_name` optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioExpectationFields {
    /// The scenario's name; non-blank.
    pub scenario_name: String,
    /// The generation ids expected in order; empty skips the check.
    #[serde(default)]
    pub expected_recovery_generations: Vec<String>,
    /// The final replay continuity posture expected, if checked.
    #[serde(default)]
    pub expected_replay_continuity_posture: Option<String>,
    /// The final retry posture expected, if checked.
    #[serde(default)]
    pub expected_retry_posture: Option<String>,
    /// The final drain posture expected, if checked.
    #[serde(default)]
    pub expected_drain_posture: Option<String>,
    /// The final reconstruction posture expected, if checked.
    #[serde(default)]
    pub expected_reconstruction_posture: Option<String>,
    /// Operations expected.
    #[serde(default)]
    pub expected_operations: Vec<ExpectedOperationLifecycle>,
    /// Terminal publications expected.
    #[serde(default)]
    pub expected_terminal_publications: Vec<ExpectedTerminalPublication>,
    /// Lifecycle semantics expected.
    #[serde(default)]
    pub expected_lifecycle_semantics: Vec<ExpectedLifecycleSemantic>,
}

impl ScenarioExpectationFields {
    fn validate(&self) -> Result<(), Error> {
        non_blank("scenario expectation", "scenario_name", &self.scenario_name)
    }
}

validated! {
    /// What a scenario expects a bundle to show (§7.3, §7.8).
    ScenarioExpectation(ScenarioExpectationFields) + Deserialize
}

/// The fields of a [`ComparisonResult`].
#[derive(Clone, Debug, PartialEq)]
pub struct ComparisonResultFields {
    /// The scenario compared; non-blank.
    pub scenario_name: String,
    /// Whether no issue was found.
    pub passed: bool,
    /// The bundle compared; non-blank.
    pub bundle_id: String,
    /// Every mismatch, in the order checked.
    pub issues: Vec<Issue>,
}

impl ComparisonResultFields {
    fn validate(&self) -> Result<(), Error> {
        const TYPE: &str = "comparison result";
        non_blank(TYPE, "scenario_name", &self.scenario_name)?;
        non_blank(TYPE, "bundle_id", &self.bundle_id)
    }
}

validated! {
    /// The outcome of comparing a bundle with a scenario expectation.
    ComparisonResult(ComparisonResultFields)
}
