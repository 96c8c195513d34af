//! What happened to the operations of a recovering runtime, as far as the stored records
//! prove it?
//!
//! The evidence layer rebuilds recovery evidence from replay records (reference semantics
//! §7, decisions K7 and C9) and writes it as byte-stable JSON bundles:
//!
//! - [`RecordMetadata`]: the recovery metadata of one record, read through the ordered
//!   contexts the reference reads it from (keys and aliases, then the states implied by
//!   artifact names).
//! - The validated evidence types: window, generation observation, continuity snapshot,
//!   issue, verdict, manifest, operation, terminal publication, lifecycle semantic, record
//!   reference, bundle ([`EvidenceBundle`]), scenario expectation and comparison result.
//! - [`Engine`]: reconstruction of a [`ReconstructionWindow`] read through an
//!   [`ArtifactStore`](crate::store::ArtifactStore)'s cursor and criteria in batches.
//! - [`export_bundle`] and [`export_comparison`]: the deterministic serializer;
//!   [`bundle_id`]: the bundle id; [`parse_bundle`]: reading bundles back, checked against
//!   themselves by [`verify_bundle`].
//! - [`compare_scenario`]: scenario comparison with the reference's mismatch codes.
//! - [`resolve_checkpoint_window`]: a window resuming from a stored checkpoint, refused when
//!   the checkpoint contradicts the stream.
//!
//! The evidence types of reference §7.3 are each validated on construction (the reference
//! raises `InvalidArgumentException`, we return [`Error`]). Every type `X` is built from a
//! plain `XFields` struct with [`X::new`](ReconstructionWindow::new) and reads like it (it
//! dereferences to its fields), but cannot be changed afterwards, so a value of `X` is
//! always valid. The types read from JSON deserialize into their fields struct and then go
//! through `X::new`, so reading validates exactly as building does. Bundle types read the
//! export form ([`parse_bundle`]); scenario expectations are hand-written, so their optional
//! keys may be left out and unknown keys are refused.
//!
//! What each verdict and issue code means for an operator is in `docs/evidence.md`.
//!
//! # Examples
//!
//! ```
//! use esl_replay::evidence::{
//!     Engine, ReconstructionWindow, VerdictPosture, export_bundle, parse_bundle,
//! };
//! use esl_replay::store::{ArtifactReader, ArtifactStore, LogStore};
//!
//! let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
//! let store = LogStore::open(dir.path())?;
//! let bundle = Engine::new().reconstruct(&store, &ReconstructionWindow::default())?;
//! // An empty window proves nothing.
//! assert_eq!(bundle.manifest.verdict.posture, VerdictPosture::Insufficient);
//! let json = export_bundle(&bundle);
//! assert_eq!(parse_bundle(&json)?, bundle);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compare;
mod de;
mod error;
mod export;
mod keys;
mod model;
mod reconstruct;
mod window;

pub use compare::compare_scenario;
pub use error::Error;
pub use export::{bundle_id, export_bundle, export_comparison, parse_bundle, verify_bundle};
pub use keys::{RecordMetadata, Snapshot};
pub use model::{
    BUNDLE_VERSION, ComparisonResult, ComparisonResultFields, ContinuitySnapshot,
    ContinuitySnapshotFields, EvidenceBundle, ExpectedLifecycleSemantic,
    ExpectedLifecycleSemanticFields, ExpectedOperationLifecycle, ExpectedOperationLifecycleFields,
    ExpectedTerminalPublication, ExpectedTerminalPublicationFields, GenerationObservation,
    GenerationObservationFields, Issue, IssueCode, IssueFields, IssueKind, LifecycleSemanticRecord,
    LifecycleSemanticRecordFields, Manifest, ManifestFields, ObservedState, OperationRecord,
    OperationRecordFields, ReconstructionWindow, ReconstructionWindowFields, RecordReference,
    RecordReferenceFields, ScenarioExpectation, ScenarioExpectationFields,
    TerminalPublicationRecord, TerminalPublicationRecordFields, Verdict, VerdictPosture,
};
pub use reconstruct::Engine;
pub use window::resolve_checkpoint_window;
