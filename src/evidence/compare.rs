//! Does a bundle show what a scenario expects?
//!
//! [`compare_scenario`] checks a bundle against a [`ScenarioExpectation`] (reference §7.8,
//! decision K7) and reports every difference as a `mismatch` issue, in this order:
//! generations (only when some are expected; exact ordered equality), the four final
//! postures (each only when expected), then each expected operation (missing, state
//! sequence, final state, retry and drain posture), each expected terminal publication
//! (missing, status or operation differs; an expectation without an operation requires a
//! publication without one) and each expected lifecycle semantic (looked up by semantic
//! and operation, missing or posture differs). The bundle's verdict and any evidence the
//! scenario does not mention are not considered; a bundle that contradicts itself or its
//! id is refused before anything is compared.

use std::collections::HashMap;

use serde_json::Value;

use super::Error;
use super::model::{
    ComparisonResult, ComparisonResultFields, EvidenceBundle, Issue, IssueCode, IssueFields,
    IssueKind, ScenarioExpectation,
};
use crate::record::JsonMap;

/// Compares a bundle with a scenario expectation. The bundle is first checked against
/// itself ([`verify_bundle`](super::verify_bundle)), so the result never carries the id of
/// a bundle whose content is not the content that id was derived from.
///
/// # Errors
///
/// The errors of [`verify_bundle`](super::verify_bundle) for a bundle that contradicts
/// itself or its id; otherwise only validation errors of the result types, which valid
/// inputs never cause.
pub fn compare_scenario(
    bundle: &EvidenceBundle,
    expectation: &ScenarioExpectation,
) -> Result<ComparisonResult, Error> {
    super::verify_bundle(bundle)?;
    let mut issues = Vec::new();
    let snapshot = &bundle.continuity_snapshot;

    let actual_generations: Vec<&str> = snapshot
        .recovery_generations
        .iter()
        .map(|generation| generation.generation_id.as_str())
        .collect();
    if !expectation.expected_recovery_generations.is_empty()
        && expectation.expected_recovery_generations != actual_generations
    {
        issues.push(mismatch(
            IssueCode::RecoveryGenerationSequenceMismatch,
            "the reconstructed recovery generations differ from the expected sequence".into(),
            details([
                (
                    "expected",
                    strings(&expectation.expected_recovery_generations),
                ),
                ("actual", strings(&actual_generations)),
            ]),
        )?);
    }

    for (code, field, expected, actual) in [
        (
            IssueCode::ReplayContinuityPostureMismatch,
            "expected_replay_continuity_posture",
            &expectation.expected_replay_continuity_posture,
            &snapshot.replay_continuity_posture,
        ),
        (
            IssueCode::RetryPostureMismatch,
            "expected_retry_posture",
            &expectation.expected_retry_posture,
            &snapshot.retry_posture,
        ),
        (
            IssueCode::DrainPostureMismatch,
            "expected_drain_posture",
            &expectation.expected_drain_posture,
            &snapshot.drain_posture,
        ),
        (
            IssueCode::ReconstructionPostureMismatch,
            "expected_reconstruction_posture",
            &expectation.expected_reconstruction_posture,
            &snapshot.reconstruction_posture,
        ),
    ] {
        if let Some(expected) = expected
            && actual.as_deref() != Some(expected.as_str())
        {
            issues.push(mismatch(
                code,
                format!(
                    "{field} is {expected} but the window ends with {}",
                    actual.as_deref().unwrap_or("no posture")
                ),
                details([
                    ("expected", text(Some(expected))),
                    ("actual", text(actual.as_deref())),
                ]),
            )?);
        }
    }

    // The first operation with each id, as a search in order would find it.
    let mut operations = HashMap::with_capacity(bundle.operations.len());
    for operation in &bundle.operations {
        operations
            .entry(operation.operation_id.as_str())
            .or_insert(operation);
    }
    for expected in &expectation.expected_operations {
        let id = expected.operation_id.as_str();
        let Some(actual) = operations.get(id) else {
            issues.push(mismatch(
                IssueCode::MissingOperationLifecycle,
                format!("expected operation {id} does not appear in the bundle"),
                JsonMap::new(),
            )?);
            continue;
        };
        let actual_states: Vec<&str> = actual
            .observed_states
            .iter()
            .map(|observed| observed.state.as_str())
            .collect();
        if expected.states != actual_states {
            issues.push(mismatch(
                IssueCode::OperationStateSequenceMismatch,
                format!("operation {id} went through other states than expected"),
                details([
                    ("operation_id", text(Some(id))),
                    ("expected", strings(&expected.states)),
                    ("actual", strings(&actual_states)),
                ]),
            )?);
        }
        for (code, what, expected, actual) in [
            (
                IssueCode::OperationFinalStateMismatch,
                "final state",
                &expected.final_state,
                &actual.final_state,
            ),
            (
                IssueCode::OperationRetryPostureMismatch,
                "retry posture",
                &expected.retry_posture,
                &actual.retry_posture,
            ),
            (
                IssueCode::OperationDrainPostureMismatch,
                "drain posture",
                &expected.drain_posture,
                &actual.drain_posture,
            ),
        ] {
            if let Some(expected) = expected
                && actual.as_deref() != Some(expected.as_str())
            {
                issues.push(mismatch(
                    code,
                    format!(
                        "operation {id} ends with {what} {} instead of {expected}",
                        actual.as_deref().unwrap_or("none")
                    ),
                    details([
                        ("operation_id", text(Some(id))),
                        ("expected", text(Some(expected))),
                        ("actual", text(actual.as_deref())),
                    ]),
                )?);
            }
        }
    }

    // Later entries win, as the reference indexes them.
    let publications: HashMap<&str, _> = bundle
        .terminal_publications
        .iter()
        .map(|publication| (publication.publication_id.as_str(), publication))
        .collect();
    for expected in &expectation.expected_terminal_publications {
        let actual = publications.get(expected.publication_id.as_str());
        let matches = actual.is_some_and(|actual| {
            actual.status == expected.status && actual.operation_id == expected.operation_id
        });
        if !matches {
            issues.push(mismatch(
                IssueCode::TerminalPublicationMismatch,
                format!(
                    "terminal publication {} is missing or differs from the expectation",
                    expected.publication_id
                ),
                details([
                    ("publication_id", text(Some(&expected.publication_id))),
                    ("expected_status", text(Some(&expected.status))),
                    (
                        "actual_status",
                        text(actual.map(|actual| actual.status.as_str())),
                    ),
                    (
                        "expected_operation_id",
                        text(expected.operation_id.as_deref()),
                    ),
                    (
                        "actual_operation_id",
                        text(actual.and_then(|actual| actual.operation_id.as_deref())),
                    ),
                ]),
            )?);
        }
    }

    let semantics: HashMap<(&str, &str), _> = bundle
        .lifecycle_semantics
        .iter()
        .map(|semantic| {
            (
                (
                    semantic.semantic.as_str(),
                    semantic.operation_id.as_deref().unwrap_or(""),
                ),
                semantic,
            )
        })
        .collect();
    for expected in &expectation.expected_lifecycle_semantics {
        let key = (
            expected.semantic.as_str(),
            expected.operation_id.as_deref().unwrap_or(""),
        );
        let actual = semantics.get(&key);
        if actual.is_none_or(|actual| actual.posture != expected.posture) {
            issues.push(mismatch(
                IssueCode::LifecycleSemanticMismatch,
                format!(
                    "lifecycle semantic {} is missing or has another posture than expected",
                    expected.semantic
                ),
                details([
                    ("semantic", text(Some(&expected.semantic))),
                    ("expected_posture", text(Some(&expected.posture))),
                    (
                        "actual_posture",
                        text(actual.map(|actual| actual.posture.as_str())),
                    ),
                    ("operation_id", text(expected.operation_id.as_deref())),
                ]),
            )?);
        }
    }

    ComparisonResult::new(ComparisonResultFields {
        scenario_name: expectation.scenario_name.clone(),
        passed: issues.is_empty(),
        bundle_id: bundle.manifest.bundle_id.clone(),
        issues,
    })
}

fn mismatch(code: IssueCode, message: String, details: JsonMap) -> Result<Issue, Error> {
    Issue::new(IssueFields {
        kind: IssueKind::Mismatch,
        code,
        message,
        append_sequence: None,
        artifact_name: None,
        details,
    })
}

fn details<const N: usize>(entries: [(&str, Value); N]) -> JsonMap {
    entries
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

fn text(value: Option<&str>) -> Value {
    value.map_or(Value::Null, |text| Value::String(text.to_owned()))
}

fn strings<S: AsRef<str>>(values: &[S]) -> Value {
    Value::Array(
        values
            .iter()
            .map(|value| Value::String(value.as_ref().to_owned()))
            .collect(),
    )
}
