//! What happened to the operations of a recovering runtime, as far as the stored records
//! prove it?
//!
//! The evidence layer rebuilds recovery evidence from replay records (reference semantics
//! §7, decisions K7 and C9) and writes it as byte-stable JSON bundles:
//!
//! - [`keys`]: the recovery metadata keys and aliases, the ordered contexts they are read
//!   from, and the states implied by artifact names ([`RecordMetadata`]).
//! - [`model`]: the validated evidence types: window, generation observation, continuity
//!   snapshot, issue, verdict, manifest, operation, terminal publication, lifecycle
//!   semantic, record reference, bundle, scenario expectation and comparison result.
//! - [`Engine`]: reconstruction of a [`ReconstructionWindow`] read through an
//!   [`ArtifactStore`](crate::store::ArtifactStore)'s cursor and criteria in batches.
//! - [`export`]: the deterministic serializer, the bundle id, and reading bundles back.
//! - [`compare_scenario`]: scenario comparison with the reference's mismatch codes.
//! - [`resolve_checkpoint_window`]: a window resuming from a stored checkpoint, refused when
//!   the checkpoint contradicts the stream.
//!
//! What each verdict and issue code means for an operator is in `docs/evidence.md`.
//!
//! # Examples
//!
//! ```
//! use esl_replay::evidence::{Engine, ReconstructionWindow, VerdictPosture, export};
//! use esl_replay::store::{ArtifactReader, ArtifactStore, LogStore};
//!
//! let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
//! let store = LogStore::open(dir.path())?;
//! let bundle = Engine::new().reconstruct(&store, &ReconstructionWindow::default())?;
//! // An empty window proves nothing.
//! assert_eq!(bundle.manifest.verdict.posture, VerdictPosture::Insufficient);
//! let json = export::export_bundle(&bundle);
//! assert_eq!(export::parse_bundle(&json)?, bundle);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod compare;
mod de;
mod error;
pub mod export;
pub mod keys;
pub mod model;
mod reconstruct;
mod window;

pub use compare::compare_scenario;
pub use error::Error;
pub use keys::RecordMetadata;
pub use model::{
    ComparisonResult, ContinuitySnapshot, EvidenceBundle, ExpectedLifecycleSemantic,
    ExpectedOperationLifecycle, ExpectedTerminalPublication, GenerationObservation, Issue,
    IssueCode, IssueKind, LifecycleSemanticRecord, Manifest, OperationRecord, ReconstructionWindow,
    ReconstructionWindowFields, RecordReference, ScenarioExpectation, ScenarioExpectationFields,
    TerminalPublicationRecord, Verdict, VerdictPosture,
};
pub use reconstruct::Engine;
pub use window::resolve_checkpoint_window;
