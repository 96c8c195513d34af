//! How an executor runs: dry-run or live, re-injection and its allowlist, batch size (§5,
//! `ExecutionConfig` of §1.9).

use super::Error;
use crate::record::is_blank;

/// The default number of records one plan reads.
pub const DEFAULT_BATCH_LIMIT: usize = 500;

/// The settings of an [`ExecutionConfig`] before validation. The default is the safe one:
/// dry-run, no re-injection, empty allowlist, batches of [`DEFAULT_BATCH_LIMIT`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecutionSettings {
    /// Report what would happen without invoking any handler or injector.
    pub dry_run: bool,
    /// Re-inject allowlisted executable artifacts instead of dispatching handlers.
    pub reinjection_enabled: bool,
    /// The artifact names re-injection may send (exact names); required when enabled.
    pub reinjection_allowlist: Vec<String>,
    /// How many records one plan reads (at least 1).
    pub batch_limit: usize,
}

impl Default for ExecutionSettings {
    fn default() -> Self {
        Self {
            dry_run: true,
            reinjection_enabled: false,
            reinjection_allowlist: Vec::new(),
            batch_limit: DEFAULT_BATCH_LIMIT,
        }
    }
}

/// A validated, immutable execution configuration. The default is
/// [`ExecutionSettings::default`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecutionConfig {
    settings: ExecutionSettings,
}

impl ExecutionConfig {
    /// Validates the settings.
    ///
    /// # Errors
    ///
    /// - [`Error::AllowlistRequired`] if re-injection is enabled with an empty allowlist;
    /// - [`Error::BlankAllowlistEntry`] if an allowlist entry is blank;
    /// - [`Error::InvalidBatchLimit`] if the batch limit is 0.
    pub fn new(settings: ExecutionSettings) -> Result<Self, Error> {
        if settings.reinjection_enabled && settings.reinjection_allowlist.is_empty() {
            return Err(Error::AllowlistRequired);
        }
        if let Some(index) = settings
            .reinjection_allowlist
            .iter()
            .position(|name| is_blank(name))
        {
            return Err(Error::BlankAllowlistEntry { index });
        }
        if settings.batch_limit == 0 {
            return Err(Error::InvalidBatchLimit);
        }
        Ok(Self { settings })
    }

    /// Whether plans report without invoking anything.
    #[must_use]
    pub fn dry_run(&self) -> bool {
        self.settings.dry_run
    }

    /// Whether live execution re-injects instead of dispatching handlers.
    #[must_use]
    pub fn reinjection_enabled(&self) -> bool {
        self.settings.reinjection_enabled
    }

    /// The artifact names re-injection may send.
    #[must_use]
    pub fn reinjection_allowlist(&self) -> &[String] {
        &self.settings.reinjection_allowlist
    }

    /// How many records one plan reads.
    #[must_use]
    pub fn batch_limit(&self) -> usize {
        self.settings.batch_limit
    }

    /// The validated settings (a copy to build a changed configuration from).
    #[must_use]
    pub fn settings(&self) -> &ExecutionSettings {
        &self.settings
    }
}
