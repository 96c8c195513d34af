//! How is the evidence of a window rebuilt from stored records?
//!
//! [`Engine::reconstruct`] reads the window through the store's cursor and criteria in
//! batches of the window's batch limit, stopping at `until_append_sequence`, and walks the
//! records in append order (reference §7.5, decisions K7 and C9). Per record:
//!
//! 1. a record reference;
//! 2. a generation observation when the record names a recovery generation different from
//!    the last one observed;
//! 3. the four postures (continuity, retry, drain, reconstruction): a value different from
//!    the current one raises an `ambiguity` issue, and the last value wins;
//! 4. the operation: its state and id (the stated `operation_id`, else the record's
//!    `job_uuid`); a state without any id raises `operation_state_without_identity`;
//!    otherwise the state is appended, `accepted` sets the accepted sequence once, and the
//!    record's retry and drain postures update the operation;
//! 5. a terminal publication and 6. a lifecycle semantic from their snapshots; a snapshot
//!    missing its id or status (semantic or posture) raises an `insufficient` issue.
//!
//! Before any of this, the record's checksum is recomputed: a record whose content no
//! longer matches it was changed after it was written, and reconstruction stops with
//! [`Error::ChecksumMismatch`] naming it rather than build evidence from it.
//!
//! Afterwards operations are sorted by id (PHP string comparison: numeric ids numerically),
//! publications and semantics by sequence; an empty window raises `no_records_in_window`,
//! a window without any generation `missing_recovery_generation_evidence`; the verdict is
//! the worst issue kind; the bundle id is derived last.
//!
//! Decision C9 differs from the reference in two ways. A blank `job_uuid` counts as absent
//! (the reference aborts). And a record without an `operation_id` whose `job_uuid` equals
//! the background-job UUID of an operation already seen in the window joins that operation
//! (the reference opens a second operation named after the job UUID). [`Engine::reference`]
//! turns the second rule off, which reproduces reference bundles exactly.

use std::collections::HashMap;

use super::Error;
use super::export::bundle_id;
use super::keys::RecordMetadata;
use super::model::{
    BUNDLE_VERSION, ContinuitySnapshot, ContinuitySnapshotFields, EvidenceBundle,
    GenerationObservation, GenerationObservationFields, Issue, IssueCode, IssueFields, IssueKind,
    LifecycleSemanticRecord, LifecycleSemanticRecordFields, Manifest, ManifestFields,
    ObservedState, OperationRecord, OperationRecordFields, ReconstructionWindow, RecordReference,
    RecordReferenceFields, TerminalPublicationRecord, TerminalPublicationRecordFields, Verdict,
};
use crate::record::{Criteria, JsonMap, Record, ksort};
use crate::store::ArtifactReader;

/// Reconstructs evidence bundles and compares them with expectations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Engine {
    join_job_uuid_to_known_operation: bool,
}

impl Default for Engine {
    fn default() -> Self {
        Self::new()
    }
}

impl Engine {
    /// The engine with our rules (decisions K7 and C9).
    #[must_use]
    pub const fn new() -> Self {
        Self {
            join_job_uuid_to_known_operation: true,
        }
    }

    /// The engine with the reference's operation identity: a record without
    /// `operation_id` always opens (or continues) an operation named after its `job_uuid`,
    /// even when that job UUID belongs to an operation already seen. Use it to reproduce
    /// bundles of the reference package; a blank `job_uuid` still counts as absent.
    #[must_use]
    pub const fn reference() -> Self {
        Self {
            join_job_uuid_to_known_operation: false,
        }
    }

    /// Reads the window from the store and rebuilds its evidence.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] when a read fails; [`Error::ChecksumMismatch`] for a record whose
    /// content does not match its stored checksum; validation errors of the evidence types
    /// (which the engine only builds from valid values).
    pub fn reconstruct<S: ArtifactReader + ?Sized>(
        &self,
        store: &S,
        window: &ReconstructionWindow,
    ) -> Result<EvidenceBundle, Error> {
        self.reconstruct_with_progress(store, window, |_| {})
    }

    /// As [`Engine::reconstruct`], calling `progress` with the number of records taken
    /// after every batch.
    ///
    /// # Errors
    ///
    /// As [`Engine::reconstruct`].
    pub fn reconstruct_with_progress<S: ArtifactReader + ?Sized>(
        &self,
        store: &S,
        window: &ReconstructionWindow,
        mut progress: impl FnMut(u64),
    ) -> Result<EvidenceBundle, Error> {
        let any = Criteria::any();
        let criteria = window.criteria.as_ref().unwrap_or(&any);
        let until = window.until_append_sequence;
        let mut walk = Walk::new(*self);
        let mut cursor = window.from;
        loop {
            // One record owned at a time: a batch of large records is never held whole.
            let (mut failed, mut past_until) = (None, false);
            let from = cursor;
            let visited =
                store.visit_from_cursor(&from, window.batch_limit, criteria, &mut |view| {
                    if failed.is_some() || past_until {
                        return;
                    }
                    let sequence = view.append_sequence();
                    if until.is_some_and(|until| sequence > until) {
                        past_until = true;
                        return;
                    }
                    let taken = view
                        .to_record()
                        .map_err(|source| {
                            Error::Store(crate::store::Error::CorruptRecord { sequence, source })
                        })
                        .and_then(|record| walk.record(&record))
                        .and_then(|()| Ok(cursor.advance(sequence, None)?));
                    match taken {
                        Ok(advanced) => cursor = advanced,
                        Err(error) => failed = Some(error),
                    }
                })?;
            if let Some(error) = failed {
                return Err(error);
            }
            if visited == 0 || past_until {
                break;
            }
            progress(walk.references.len() as u64);
            // Nothing after the upper bound can be taken; spare the extra read.
            if until.is_some_and(|until| cursor.last_consumed_sequence() >= until) {
                break;
            }
        }
        walk.finish(window.clone())
    }

    /// Reconstructs evidence from records already in memory, in the order given, as if a
    /// window had read exactly these records (no criteria or bounds are applied).
    ///
    /// # Errors
    ///
    /// As [`Engine::reconstruct`].
    pub fn reconstruct_records<'r>(
        &self,
        records: impl IntoIterator<Item = &'r Record>,
        window: &ReconstructionWindow,
    ) -> Result<EvidenceBundle, Error> {
        let mut walk = Walk::new(*self);
        for record in records {
            walk.record(record)?;
        }
        walk.finish(window.clone())
    }
}

/// An operation while the walk is still adding to it.
struct OperationDraft {
    id: String,
    kind: Option<String>,
    bgapi_job_uuid: Option<String>,
    accepted_append_sequence: Option<u64>,
    observed_states: Vec<ObservedState>,
    retry_posture: Option<String>,
    drain_posture: Option<String>,
}

/// The state of one reconstruction while records are walked.
struct Walk {
    engine: Engine,
    references: Vec<RecordReference>,
    generations: Vec<GenerationObservation>,
    /// Continuity, retry, drain and reconstruction posture, in that order.
    postures: [Option<String>; 4],
    operations: Vec<OperationDraft>,
    operation_index: HashMap<String, usize>,
    /// The first operation seen with each background-job UUID (decision C9).
    job_index: HashMap<String, usize>,
    publications: Vec<TerminalPublicationRecord>,
    semantics: Vec<LifecycleSemanticRecord>,
    issues: Vec<Issue>,
}

const POSTURE_CODES: [(IssueCode, &str); 4] = [
    (
        IssueCode::ReplayContinuityPostureChanged,
        "replay continuity posture",
    ),
    (IssueCode::RetryPostureChanged, "retry posture"),
    (IssueCode::DrainPostureChanged, "drain posture"),
    (
        IssueCode::ReconstructionPostureChanged,
        "reconstruction posture",
    ),
];

impl Walk {
    fn new(engine: Engine) -> Self {
        Self {
            engine,
            references: Vec::new(),
            generations: Vec::new(),
            postures: [None, None, None, None],
            operations: Vec::new(),
            operation_index: HashMap::new(),
            job_index: HashMap::new(),
            publications: Vec::new(),
            semantics: Vec::new(),
            issues: Vec::new(),
        }
    }

    fn record(&mut self, record: &Record) -> Result<(), Error> {
        let sequence = record.append_sequence();
        if !record.verify_checksum() {
            return Err(Error::ChecksumMismatch {
                sequence,
                record_id: record.id().as_str().to_owned(),
                stored: record.checksum().to_owned(),
            });
        }
        let name = record.artifact_name();
        let metadata = RecordMetadata::of(record);
        self.references
            .push(RecordReference::new(RecordReferenceFields {
                record_id: record.id().as_str().to_owned(),
                append_sequence: sequence,
                artifact_name: name.to_owned(),
                capture_timestamp: *record.capture_timestamp(),
            })?);

        if let Some(generation) = metadata.recovery_generation_id()
            && self
                .generations
                .last()
                .is_none_or(|last| last.generation_id != generation)
        {
            self.generations
                .push(GenerationObservation::new(GenerationObservationFields {
                    generation_id: generation.to_owned(),
                    append_sequence: sequence,
                    artifact_name: name.to_owned(),
                })?);
        }

        let observed = [
            metadata.replay_continuity_posture(),
            metadata.retry_posture(),
            metadata.drain_posture(),
            metadata.reconstruction_posture(),
        ];
        for ((current, observed), (code, label)) in
            self.postures.iter_mut().zip(observed).zip(POSTURE_CODES)
        {
            let Some(observed) = observed else { continue };
            if let Some(previous) = current.as_deref()
                && previous != observed
            {
                self.issues.push(record_issue(
                    IssueKind::Ambiguity,
                    code,
                    format!("{label} changed from {previous} to {observed} inside one window"),
                    record,
                )?);
            }
            if current.as_deref() != Some(observed) {
                *current = Some(observed.to_owned());
            }
        }

        let operation_id = self.operation(record, &metadata)?;

        if let Some(snapshot) = metadata.terminal_publication_snapshot() {
            match snapshot.publication() {
                (Some(id), Some(status)) => self.publications.push(TerminalPublicationRecord::new(
                    TerminalPublicationRecordFields {
                        publication_id: id.to_owned(),
                        status: status.to_owned(),
                        append_sequence: sequence,
                        artifact_name: name.to_owned(),
                        operation_id: operation_id.clone(),
                        facts: snapshot.facts(),
                    },
                )?),
                _ => self.issues.push(record_issue(
                    IssueKind::Insufficient,
                    IssueCode::TerminalPublicationSnapshotIncomplete,
                    "terminal publication snapshot lacks a publication id or status".into(),
                    record,
                )?),
            }
        }

        if let Some(snapshot) = metadata.lifecycle_semantic_snapshot() {
            match snapshot.lifecycle() {
                (Some(semantic), Some(posture)) => self.semantics.push(
                    LifecycleSemanticRecord::new(LifecycleSemanticRecordFields {
                        semantic: semantic.to_owned(),
                        posture: posture.to_owned(),
                        append_sequence: sequence,
                        artifact_name: name.to_owned(),
                        operation_id,
                        facts: snapshot.facts(),
                    })?,
                ),
                _ => self.issues.push(record_issue(
                    IssueKind::Insufficient,
                    IssueCode::LifecycleSemanticSnapshotIncomplete,
                    "lifecycle semantic snapshot lacks a semantic or posture".into(),
                    record,
                )?),
            }
        }
        Ok(())
    }

    /// Step 4; returns the operation id the record belongs to, for steps 5 and 6.
    fn operation(
        &mut self,
        record: &Record,
        metadata: &RecordMetadata<'_>,
    ) -> Result<Option<String>, Error> {
        let state = metadata.operation_state();
        let index = match metadata.stated_operation_id() {
            Some(id) => self.operation_index.get(id).copied().ok_or(id),
            None => match metadata.job_uuid() {
                Some(job) => {
                    let joined = if self.engine.join_job_uuid_to_known_operation {
                        self.job_index.get(job).copied()
                    } else {
                        None
                    };
                    joined
                        .or_else(|| self.operation_index.get(job).copied())
                        .ok_or(job)
                }
                None => {
                    if state.is_some() {
                        self.issues.push(record_issue(
                            IssueKind::Insufficient,
                            IssueCode::OperationStateWithoutIdentity,
                            "operation state present but no operation_id or job_uuid names the operation".into(),
                            record,
                        )?);
                    }
                    return Ok(None);
                }
            },
        };
        let index = match index {
            Ok(index) => index,
            Err(new_id) => {
                let index = self.operations.len();
                let bgapi_job_uuid = metadata.bgapi_job_uuid().map(str::to_owned);
                if let Some(job) = &bgapi_job_uuid {
                    self.job_index.entry(job.clone()).or_insert(index);
                }
                self.operations.push(OperationDraft {
                    id: new_id.to_owned(),
                    kind: metadata.operation_kind().map(str::to_owned),
                    bgapi_job_uuid,
                    accepted_append_sequence: None,
                    observed_states: Vec::new(),
                    retry_posture: None,
                    drain_posture: None,
                });
                self.operation_index.insert(new_id.to_owned(), index);
                index
            }
        };
        let Some(operation) = self.operations.get_mut(index) else {
            return Ok(None);
        };
        let sequence = record.append_sequence();
        if let Some(state) = state {
            operation.observed_states.push(ObservedState {
                state: state.to_owned(),
                append_sequence: sequence,
                artifact_name: record.artifact_name().to_owned(),
            });
            if state == "accepted" && operation.accepted_append_sequence.is_none() {
                operation.accepted_append_sequence = Some(sequence);
            }
        }
        if let Some(retry) = metadata.retry_posture() {
            operation.retry_posture = Some(retry.to_owned());
        }
        if let Some(drain) = metadata.drain_posture() {
            operation.drain_posture = Some(drain.to_owned());
        }
        Ok(Some(operation.id.clone()))
    }

    fn finish(mut self, window: ReconstructionWindow) -> Result<EvidenceBundle, Error> {
        // Sort operations by id in PHP's string order (stable for equal ids).
        let drafts: Vec<(String, OperationDraft)> = self
            .operations
            .into_iter()
            .map(|draft| (draft.id.clone(), draft))
            .collect();
        let entries = drafts
            .iter()
            .map(|(id, draft)| (id.as_str(), draft))
            .collect();
        let operations = ksort::sort_entries(entries)
            .into_iter()
            .map(|(_, draft)| {
                OperationRecord::new(OperationRecordFields {
                    operation_id: draft.id.clone(),
                    operation_kind: draft.kind.clone(),
                    bgapi_job_uuid: draft.bgapi_job_uuid.clone(),
                    accepted_append_sequence: draft.accepted_append_sequence,
                    final_state: draft.observed_states.last().map(|last| last.state.clone()),
                    observed_states: draft.observed_states.clone(),
                    retry_posture: draft.retry_posture.clone(),
                    drain_posture: draft.drain_posture.clone(),
                    issues: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        // Records are walked in sequence order and carry at most one of each, so these
        // are already in (sequence, id) order; the stable sort only states the rule.
        self.publications
            .sort_by_key(|publication| publication.append_sequence);
        self.semantics
            .sort_by_key(|semantic| semantic.append_sequence);

        if self.references.is_empty() {
            self.issues.push(window_issue(
                IssueCode::NoRecordsInWindow,
                "the window holds no records",
            )?);
        }
        if self.generations.is_empty() {
            self.issues.push(window_issue(
                IssueCode::MissingRecoveryGenerationEvidence,
                "no record in the window names a recovery generation",
            )?);
        }
        let [continuity, retry, drain, reconstruction] = self.postures;
        let continuity_snapshot = ContinuitySnapshot::new(ContinuitySnapshotFields {
            recovery_generations: self.generations,
            replay_continuity_posture: continuity,
            retry_posture: retry,
            drain_posture: drain,
            reconstruction_posture: reconstruction,
            last_observed_append_sequence: self.references.last().map(|r| r.append_sequence),
        })?;
        let manifest = ManifestFields {
            bundle_version: BUNDLE_VERSION,
            bundle_id: "pending".into(),
            window,
            record_count: self.references.len() as u64,
            first_append_sequence: self.references.first().map(|r| r.append_sequence),
            last_append_sequence: self.references.last().map(|r| r.append_sequence),
            verdict: Verdict::from_issues(self.issues),
        };
        let mut bundle = EvidenceBundle {
            manifest: Manifest::new(manifest)?,
            continuity_snapshot,
            record_references: self.references,
            operations,
            terminal_publications: self.publications,
            lifecycle_semantics: self.semantics,
        };
        let id = bundle_id(&bundle);
        let mut fields = bundle.manifest.into_fields();
        fields.bundle_id = id;
        bundle.manifest = Manifest::new(fields)?;
        Ok(bundle)
    }
}

fn record_issue(
    kind: IssueKind,
    code: IssueCode,
    message: String,
    record: &Record,
) -> Result<Issue, Error> {
    Issue::new(IssueFields {
        kind,
        code,
        message,
        append_sequence: Some(record.append_sequence()),
        artifact_name: Some(record.artifact_name().to_owned()),
        details: JsonMap::new(),
    })
}

fn window_issue(code: IssueCode, message: &str) -> Result<Issue, Error> {
    Issue::new(IssueFields {
        kind: IssueKind::Insufficient,
        code,
        message: message.to_owned(),
        append_sequence: None,
        artifact_name: None,
        details: JsonMap::new(),
    })
}
