//! Handlers: what observational replay calls for a record, chosen by exact artifact name
//! (§5.1, §5.5).

use std::collections::BTreeMap;
use std::fmt;

use super::Error;
use crate::record::{JsonMap, Record, is_blank};

/// The error a handler or injector returns; its message becomes the failed result's error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a handler or an injector did with a record: a non-blank action word and free-form
/// metadata, reported in the record's [`Outcome`](super::Outcome).
#[derive(Clone, Debug, PartialEq)]
pub struct ActionResult {
    action: String,
    metadata: JsonMap,
}

/// What a [`Handler`] did with a record (the reference's `ReplayHandlerResult`).
pub type HandlerResult = ActionResult;

impl ActionResult {
    /// A result with an action and metadata.
    ///
    /// # Errors
    ///
    /// [`Error::BlankField`] if the action is blank.
    pub fn new(action: impl Into<String>, metadata: JsonMap) -> Result<Self, Error> {
        let action = action.into();
        if is_blank(&action) {
            return Err(Error::BlankField { field: "action" });
        }
        Ok(Self { action, metadata })
    }

    /// The action word reported in the outcome (`handled_api_dispatch`, `printed`,
    /// `injected`, ...).
    #[must_use]
    pub fn action(&self) -> &str {
        &self.action
    }

    /// The metadata reported in the outcome.
    #[must_use]
    pub fn metadata(&self) -> &JsonMap {
        &self.metadata
    }

    /// Takes the result apart into action and metadata.
    #[must_use]
    pub fn into_parts(self) -> (String, JsonMap) {
        (self.action, self.metadata)
    }
}

/// Handles records during observational replay.
///
/// A handler has a stable [`name`](Handler::name) that outcomes report (the reference
/// reports PHP class names, which a port cannot reproduce; decisions K6, reference §11.25).
pub trait Handler: Send {
    /// The stable name outcomes report for this handler.
    fn name(&self) -> &str;

    /// Handles one record. An error stops execution: the result is failed, with the
    /// outcomes produced so far and this error's message.
    ///
    /// # Errors
    ///
    /// Whatever the handler considers a failure.
    fn handle(&mut self, record: &Record) -> Result<HandlerResult, BoxError>;
}

/// Handlers by exact artifact name, plus an optional catch-all.
///
/// Lookup is exact, case-sensitive artifact-name equality, as in the reference. The
/// catch-all (not in the reference, unset by default) serves names without an exact
/// registration; the command line uses it for handlers that apply to every record.
#[derive(Default)]
pub struct HandlerRegistry {
    by_name: BTreeMap<String, Box<dyn Handler>>,
    fallback: Option<Box<dyn Handler>>,
}

impl fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerRegistry")
            .field(
                "by_name",
                &self
                    .by_name
                    .iter()
                    .map(|(artifact, handler)| (artifact.as_str(), handler.name()))
                    .collect::<Vec<_>>(),
            )
            .field("fallback", &self.fallback.as_ref().map(|h| h.name()))
            .finish()
    }
}

impl HandlerRegistry {
    /// An empty registry.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for records named exactly `artifact_name`.
    ///
    /// # Errors
    ///
    /// [`Error::BlankField`] if the name is blank; [`Error::DuplicateHandler`] if one is
    /// already registered for it.
    pub fn register(
        &mut self,
        artifact_name: impl Into<String>,
        handler: Box<dyn Handler>,
    ) -> Result<(), Error> {
        let artifact_name = artifact_name.into();
        if is_blank(&artifact_name) {
            return Err(Error::BlankField {
                field: "handler registry artifact name",
            });
        }
        if self.by_name.contains_key(&artifact_name) {
            return Err(Error::DuplicateHandler { artifact_name });
        }
        self.by_name.insert(artifact_name, handler);
        Ok(())
    }

    /// Builds a registry from `(artifact name, handler)` pairs.
    ///
    /// # Errors
    ///
    /// As [`HandlerRegistry::register`].
    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, Box<dyn Handler>)>,
    ) -> Result<Self, Error> {
        let mut registry = Self::new();
        for (name, handler) in pairs {
            registry.register(name, handler)?;
        }
        Ok(registry)
    }

    /// Sets the handler for every artifact name that has no exact registration.
    pub fn set_fallback(&mut self, handler: Box<dyn Handler>) {
        self.fallback = Some(handler);
    }

    /// The handler for this artifact name, if any.
    #[must_use]
    pub fn get(&self, artifact_name: &str) -> Option<&dyn Handler> {
        self.by_name
            .get(artifact_name)
            .or(self.fallback.as_ref())
            .map(Box::as_ref)
    }

    /// The handler for this artifact name, mutably, if any.
    pub fn get_mut(&mut self, artifact_name: &str) -> Option<&mut (dyn Handler + 'static)> {
        match self.by_name.get_mut(artifact_name) {
            Some(handler) => Some(handler.as_mut()),
            None => self.fallback.as_deref_mut(),
        }
    }

    /// Whether a handler would serve this artifact name.
    #[must_use]
    pub fn has(&self, artifact_name: &str) -> bool {
        self.get(artifact_name).is_some()
    }

    /// Whether no handler is registered (neither by name nor as catch-all).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty() && self.fallback.is_none()
    }
}
