//! Helpers shared by the replay tests: stores in temporary directories holding
//! reference-fixture envelopes, and recording handlers and injectors with stable names.

use std::sync::{Arc, Mutex};

use esl_replay::record::JsonMap;
use esl_replay::replay::{
    BoxError, ExecutionCandidate, Handler, HandlerResult, InjectionResult, Injector,
};
#[cfg(feature = "sqlite")]
use esl_replay::store::SqliteStore;
use esl_replay::store::{ArtifactStore, LogStore};
use serde_json::json;

use super::process::open_store;
use super::record::fixture_named;

/// A segment-log store in a fresh temporary directory holding these artifact names.
pub(crate) fn log_store(names: &[&str]) -> (tempfile::TempDir, LogStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path().join("store")).unwrap();
    write(&mut store, names);
    (dir, store)
}

/// A SQLite store in a fresh temporary directory holding these artifact names.
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite_store(names: &[&str]) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = SqliteStore::open(&dir.path().join("store.sqlite")).unwrap();
    write(&mut store, names);
    (dir, store)
}

pub(crate) fn write(store: &mut dyn ArtifactStore, names: &[&str]) {
    if !names.is_empty() {
        store
            .write_batch(names.iter().map(|name| fixture_named(name)).collect())
            .unwrap();
    }
}

/// A handler that records the sequences it saw, answers with a fixed action, and fails
/// on its `fail_on`-th call (1-based) if set.
pub(crate) struct Recording {
    pub(crate) name: &'static str,
    pub(crate) action: &'static str,
    pub(crate) seen: Arc<Mutex<Vec<u64>>>,
    pub(crate) fail_on: Option<usize>,
}

impl Recording {
    pub(crate) fn new(name: &'static str, action: &'static str) -> (Self, Arc<Mutex<Vec<u64>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        (
            Self {
                name,
                action,
                seen: Arc::clone(&seen),
                fail_on: None,
            },
            seen,
        )
    }

    pub(crate) fn failing_on(mut self, call: usize) -> Self {
        self.fail_on = Some(call);
        self
    }

    fn call(&mut self, sequence: u64) -> Result<JsonMap, BoxError> {
        let mut seen = self.seen.lock().unwrap();
        if self.fail_on == Some(seen.len() + 1) {
            return Err(format!("{} boom", self.name).into());
        }
        seen.push(sequence);
        let mut metadata = JsonMap::new();
        metadata.insert("call".into(), json!(seen.len()));
        Ok(metadata)
    }
}

impl Handler for Recording {
    fn name(&self) -> &str {
        self.name
    }

    fn handle(&mut self, record: &esl_replay::record::Record) -> Result<HandlerResult, BoxError> {
        let metadata = self.call(record.append_sequence())?;
        Ok(HandlerResult::new(self.action, metadata)?)
    }
}

impl Injector for Recording {
    fn name(&self) -> &str {
        self.name
    }

    fn inject(&mut self, candidate: &ExecutionCandidate) -> Result<InjectionResult, BoxError> {
        let metadata = self.call(candidate.append_sequence())?;
        Ok(InjectionResult::new(self.action, metadata)?)
    }
}
