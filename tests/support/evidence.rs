//! Shared helpers of the evidence tests: record builders, the records of the worked example
//! (reference §7.9), and stores of both backends holding given records.

use std::path::{Path, PathBuf};

use esl_replay::evidence::{ReconstructionWindow, ReconstructionWindowFields};
use esl_replay::record::{Envelope, Record, RecordId};
use esl_replay::store::ArtifactStore;
#[cfg(feature = "sqlite")]
use esl_replay::store::SqliteStore;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use super::map;
use super::process::open_store;

/// What varies between the records of a test.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) name: &'static str,
    pub(crate) job_uuid: Option<&'static str>,
    pub(crate) event_name: Option<&'static str>,
    pub(crate) correlation_ids: Value,
    pub(crate) runtime_flags: Value,
    pub(crate) payload: Value,
}

impl Spec {
    pub(crate) fn new(name: &'static str) -> Self {
        Self {
            name,
            job_uuid: None,
            event_name: None,
            correlation_ids: json!({}),
            runtime_flags: json!({}),
            payload: json!({}),
        }
    }

    pub(crate) fn job(mut self, job: &'static str) -> Self {
        self.job_uuid = Some(job);
        self
    }

    pub(crate) fn event(mut self, event: &'static str) -> Self {
        self.event_name = Some(event);
        self
    }

    pub(crate) fn correlation(mut self, value: Value) -> Self {
        self.correlation_ids = value;
        self
    }

    pub(crate) fn flags(mut self, value: Value) -> Self {
        self.runtime_flags = value;
        self
    }

    pub(crate) fn payload(mut self, value: Value) -> Self {
        self.payload = value;
        self
    }
}

/// Record `sequence` built from a spec: id `rec-N`, version "1", connection `conn-1`,
/// session `sess-1`, captured at `2024-01-15T10:00:0N+00:00` (plus N seconds).
pub(crate) fn record(sequence: u64, spec: &Spec) -> Record {
    let capture: OffsetDateTime =
        datetime!(2024-01-15 10:00:00 UTC) + time::Duration::seconds(sequence as i64);
    let mut envelope = Envelope::new("1", spec.name, capture)
        .with_connection_generation("conn-1")
        .with_session_id("sess-1")
        .with_correlation_ids(map(spec.correlation_ids.clone()))
        .with_runtime_flags(map(spec.runtime_flags.clone()))
        .with_payload(map(spec.payload.clone()));
    envelope.job_uuid = spec.job_uuid.map(str::to_owned);
    envelope.event_name = spec.event_name.map(str::to_owned);
    Record::from_envelope(
        envelope,
        RecordId::new(format!("rec-{sequence}")).unwrap(),
        capture,
        sequence,
    )
    .unwrap()
}

/// Records 1.. built from the specs in order.
pub(crate) fn records(specs: &[Spec]) -> Vec<Record> {
    specs
        .iter()
        .zip(1..)
        .map(|(spec, sequence)| record(sequence, spec))
        .collect()
}

/// The five records of the worked example (§7.9).
pub(crate) fn worked_example() -> Vec<Record> {
    records(&[
        Spec::new("bgapi.dispatch")
            .job("job-1")
            .correlation(json!({"replay_session_id": "replay-1"}))
            .flags(json!({"pbx_node_slug": "pbx-a"}))
            .payload(json!({
                "command": "status",
                "prepared_recovery_context": {"recovery_generation_id": "gen-1"},
                "runtime_recovery_snapshot": {
                    "replay_continuity_posture": "continuous",
                    "retry_posture": "stable",
                    "drain_posture": "not_draining",
                    "reconstruction_posture": "bounded"
                },
                "runtime_operation_snapshot": {
                    "operation_id": "op-1",
                    "operation_kind": "bgapi",
                    "operation_state": "accepted",
                    "bgapi_job_uuid": "job-1"
                }
            })),
        Spec::new("bgapi.ack")
            .job("job-1")
            .payload(json!({"reply_text": "+OK Job-UUID: job-1"})),
        Spec::new("event.raw")
            .event("BACKGROUND_JOB")
            .job("job-1")
            .flags(json!({"recovery_generation_id": "gen-2"}))
            .payload(json!({"Event-Name": "BACKGROUND_JOB", "Job-UUID": "job-1"})),
        Spec::new("bgapi.complete").job("job-1").payload(json!({
            "runtime_recovery_snapshot": {"retry_posture": "retrying"},
            "runtime_operation_snapshot": {"operation_id": "op-1", "operation_state": "completed"},
            "runtime_terminal_publication_snapshot": {
                "terminal_publication_id": "pub-1",
                "terminal_publication_status": "published",
                "z_fact": 1,
                "a_fact": {"y": 2, "x": 1}
            },
            "runtime_lifecycle_semantic_snapshot": {
                "lifecycle_semantic": "runtime_terminal",
                "posture": "observed"
            }
        })),
        Spec::new("event.raw")
            .payload(json!({"runtime_terminal_publication_snapshot": {"publication_id": "pub-2"}})),
    ])
}

/// The two backends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Log,
    #[cfg(feature = "sqlite")]
    Sqlite,
}

/// Every backend this build has.
pub(crate) const BACKENDS: &[Backend] = &[
    Backend::Log,
    #[cfg(feature = "sqlite")]
    Backend::Sqlite,
];

/// Where a store of the backend lives inside `dir`.
pub(crate) fn store_path(dir: &Path, backend: Backend) -> PathBuf {
    match backend {
        Backend::Log => dir.join("store"),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => dir.join("store.sqlite"),
    }
}

/// A store of the backend inside `dir`, holding exactly these records (ids kept).
pub(crate) fn store_with(
    dir: &Path,
    backend: Backend,
    records: &[Record],
) -> Box<dyn ArtifactStore> {
    let path = store_path(dir, backend);
    let mut store: Box<dyn ArtifactStore> = match backend {
        Backend::Log => Box::new(open_store(&path).unwrap()),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => Box::new(SqliteStore::open(&path).unwrap()),
    };
    if !records.is_empty() {
        store.append_records(records).unwrap();
    }
    store.sync().unwrap();
    store
}

/// The window of the worked example: from the start, until 5, batches of 2, checkpoint
/// `worker-a` with metadata in the order replay session, generation.
pub(crate) fn worked_window() -> ReconstructionWindow {
    ReconstructionWindow::new(ReconstructionWindowFields {
        until_append_sequence: Some(5),
        batch_limit: 2,
        checkpoint_key: Some("worker-a".into()),
        checkpoint_metadata: map(
            json!({"replay_session_id": "replay-1", "recovery_generation_id": "gen-1"}),
        ),
        ..ReconstructionWindowFields::default()
    })
    .unwrap()
}
