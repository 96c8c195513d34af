//! Offline replay: execute stored records again (plan/execute with dry-run, handler
//! dispatch and guarded re-injection), and rebuild typed state at any sequence (fold
//! replay from persisted snapshots).
//!
//! This layer uses [`record`](crate::record), [`store`](crate::store) and
//! [`checkpoint`](crate::checkpoint); only the command line sits above it.
//!
//! # Executor (reference semantics §5, decisions K6)
//!
//! - [`ExecutionConfig`]: dry-run by default, re-injection off by default and then only
//!   with an explicit allowlist, batches of [`DEFAULT_BATCH_LIMIT`] records.
//! - [`Executor::plan`] reads at most a batch after a cursor (never advancing it);
//!   [`Executor::plan_matching`] adds criteria and an upper sequence.
//! - [`Executor::execute`] runs a [`Plan`] in dry-run, observational or re-injection mode
//!   and returns an [`ExecutionResult`] whose [`Outcome`]s serialize to the reference
//!   outcome maps (`record_id`, `artifact_name`, `append_sequence`, `action`, ...).
//! - [`Handler`]s are registered by exact artifact name in a [`HandlerRegistry`];
//!   an [`Injector`] receives the [`ExecutionCandidate`]s that the [`Classifier`] clears
//!   under the [`InjectionGuard`]. Handlers and injectors report stable names and both
//!   return an [`ActionResult`].
//! - [`replay_range`] walks a whole range batch by batch, advancing a cursor and saving a
//!   checkpoint as it goes.
//!
//! # Fold replay
//!
//! [`fold`] rebuilds the state of a [`Stream`] (a criteria selection) at a target sequence
//! from the latest snapshot at or before it, through a pure `apply`; snapshots live in a
//! [`SnapshotStore`]: [`MemorySnapshots`] or the durable [`DirSnapshots`].
//!
//! # Examples
//!
//! ```
//! use esl_replay::record::ReadCursor;
//! use esl_replay::replay::{ExecutionConfig, Executor, HandlerRegistry};
//! use esl_replay::store::{ArtifactReader, ArtifactStore, LogStore, dataset};
//!
//! let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
//! let mut store = LogStore::open(&dir.path().join("store"))?;
//! store.write_batch((1..=3).map(dataset::envelope).collect())?;
//!
//! // Dry-run is the default: nothing is invoked, every record is reported.
//! let mut executor =
//!     Executor::new(ExecutionConfig::default(), &store, HandlerRegistry::new(), None)?;
//! let plan = executor.plan(&ReadCursor::start())?;
//! assert_eq!(plan.record_count(), 3);
//! let result = executor.execute(plan);
//! assert!(result.success());
//! assert_eq!(result.skipped_count(), 3);
//! assert!(result.outcomes().iter().all(|o| o.action() == "dry_run_skip"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod error;
mod executor;
mod fold;
mod handler;
mod inject;
mod plan;
mod range;
mod snapshot;

pub use config::{DEFAULT_BATCH_LIMIT, ExecutionConfig, ExecutionSettings};
pub use error::Error;
pub use executor::{Executor, Step};
pub use fold::{FoldOptions, Folded, Stream, fold};
pub use handler::{ActionResult, BoxError, Handler, HandlerRegistry, HandlerResult};
pub use inject::{
    Classifier, DefaultClassifier, ELIGIBLE, EXECUTABLE_ARTIFACTS, ExecutionCandidate,
    InjectionGuard, InjectionResult, Injector, NotSent, REJECT_CANNOT_SEND, REJECT_NOT_ALLOWLISTED,
    REJECT_OBSERVATIONAL, Verdict,
};
pub use plan::{
    ACTION_DRY_RUN_SKIP, ACTION_OBSERVED, ACTION_REINJECTION_REJECTED, ExecutionResult, Outcome,
    OutcomeRecord, Plan,
};
pub use range::{IN_FLIGHT_KEY, RangeOptions, RangeReport, in_flight_sequence, replay_range};
pub use snapshot::{
    DirSnapshots, MAX_SNAPSHOT_FILE_BYTES, MemorySnapshots, SNAPSHOT_FORMAT, Snapshot,
    SnapshotStore,
};
