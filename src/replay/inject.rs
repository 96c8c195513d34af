//! Guarded re-injection: which records may be sent back to a live switch, and the
//! injector that sends them (§5.6, §5.7).
//!
//! A record becomes an [`ExecutionCandidate`] only if its artifact is intrinsically
//! executable ([`EXECUTABLE_ARTIFACTS`]: `api.dispatch`, `bgapi.dispatch`) **and** the
//! [`InjectionGuard`]'s allowlist names it; everything else is rejected with one of the
//! reference's reasons. Allowlisting an observational artifact such as `event.raw` does
//! not make it injectable.

use std::borrow::Cow;
use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::Error;
use super::handler::{ActionResult, BoxError};
use crate::record::{JsonMap, Record, is_blank};

/// The artifact names that carry a command and can be re-injected at all.
pub const EXECUTABLE_ARTIFACTS: [&str; 2] = ["api.dispatch", "bgapi.dispatch"];

/// The reason reported for a record that may be re-injected.
pub const ELIGIBLE: &str = "eligible";
/// The rejection reason of an artifact that carries no command.
pub const REJECT_OBSERVATIONAL: &str = "artifact type is observational and not injectable";
/// The rejection reason of an executable artifact missing from the allowlist.
pub const REJECT_NOT_ALLOWLISTED: &str = "artifact type is not allowlisted for reinjection";

/// The start of the rejection reason of an allowlisted dispatch the injector cannot send
/// (its record holds no command it can build); the injector's reason follows.
pub const REJECT_CANNOT_SEND: &str = "record cannot be sent";

/// The exact artifact names re-injection may send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectionGuard {
    allowlist: BTreeSet<String>,
}

impl InjectionGuard {
    /// A guard allowing exactly these names.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyAllowlist`] for an empty list; [`Error::BlankAllowlistEntry`] for a
    /// blank entry.
    pub fn new<I, S>(allowlist: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names = BTreeSet::new();
        for (index, name) in allowlist.into_iter().enumerate() {
            let name = name.into();
            if is_blank(&name) {
                return Err(Error::BlankAllowlistEntry { index });
            }
            names.insert(name);
        }
        if names.is_empty() {
            return Err(Error::EmptyAllowlist);
        }
        Ok(Self { allowlist: names })
    }

    /// Whether the allowlist names this artifact exactly.
    #[must_use]
    pub fn allows(&self, artifact_name: &str) -> bool {
        self.allowlist.contains(artifact_name)
    }
}

/// A classifier's decision about one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The record may be re-injected.
    Eligible,
    /// The record must not be re-injected, for this reason.
    Rejected(Cow<'static, str>),
}

impl Verdict {
    /// The reason text outcomes report: [`ELIGIBLE`] or the rejection reason.
    #[must_use]
    pub fn reason(&self) -> &str {
        match self {
            Verdict::Eligible => ELIGIBLE,
            Verdict::Rejected(reason) => reason,
        }
    }

    /// Whether the record may be re-injected.
    #[must_use]
    pub fn is_eligible(&self) -> bool {
        matches!(self, Verdict::Eligible)
    }
}

/// Decides which records may be re-injected.
pub trait Classifier: Send {
    /// The verdict for one record under a guard.
    fn classify(&self, record: &Record, guard: &InjectionGuard) -> Verdict;
}

/// The reference classifier: executable ([`EXECUTABLE_ARTIFACTS`]) and allowlisted.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultClassifier;

impl Classifier for DefaultClassifier {
    fn classify(&self, record: &Record, guard: &InjectionGuard) -> Verdict {
        let name = record.artifact_name();
        if !EXECUTABLE_ARTIFACTS.contains(&name) {
            Verdict::Rejected(Cow::Borrowed(REJECT_OBSERVATIONAL))
        } else if !guard.allows(name) {
            Verdict::Rejected(Cow::Borrowed(REJECT_NOT_ALLOWLISTED))
        } else {
            Verdict::Eligible
        }
    }
}

/// A record cleared for re-injection: the projection an injector works from.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionCandidate {
    source: Record,
}

impl ExecutionCandidate {
    /// The candidate for a record (records always have a non-blank artifact name).
    #[must_use]
    pub fn new(source: Record) -> Self {
        Self { source }
    }

    /// The stored record this candidate was made from.
    #[must_use]
    pub fn source_record(&self) -> &Record {
        &self.source
    }

    /// The artifact name (`api.dispatch` or `bgapi.dispatch` under the default classifier).
    #[must_use]
    pub fn artifact_name(&self) -> &str {
        self.source.artifact_name()
    }

    /// The record's append sequence.
    #[must_use]
    pub fn append_sequence(&self) -> u64 {
        self.source.append_sequence()
    }

    /// When the artifact was captured.
    #[must_use]
    pub fn captured_at(&self) -> &OffsetDateTime {
        self.source.capture_timestamp()
    }

    /// The artifact payload (for dispatches: `command` and `args`).
    #[must_use]
    pub fn payload(&self) -> &JsonMap {
        self.source.payload()
    }
}

/// What an [`Injector`] did with a candidate (the reference's `InjectionResult`).
pub type InjectionResult = ActionResult;

/// Sends cleared candidates somewhere live (for example `api`/`bgapi` commands to a
/// FreeSWITCH Event Socket). Object-safe and synchronous: an asynchronous transport blocks
/// on its own runtime inside `inject`.
pub trait Injector: Send {
    /// The stable name of this injector.
    fn name(&self) -> &str;

    /// Injects one candidate. An error stops execution: the result is failed, with the
    /// outcomes produced so far and this error's message.
    ///
    /// # Errors
    ///
    /// Whatever the transport considers a failure.
    fn inject(&mut self, candidate: &ExecutionCandidate) -> Result<InjectionResult, BoxError>;

    /// Whether this injector could send the candidate at all (whether its record holds a
    /// command it can send), without sending anything. Dry-run reports a refusal as a
    /// record that would not be re-injected, and live execution rejects the record with
    /// the refusal as its reason instead of failing on it; the default accepts everything.
    ///
    /// # Errors
    ///
    /// Why the candidate cannot be sent.
    fn check(&self, candidate: &ExecutionCandidate) -> Result<(), BoxError> {
        let _ = candidate;
        Ok(())
    }
}

/// An injector's error saying that nothing was sent: the command never left this process
/// (the connection or authentication failed before it), so sending it again later cannot
/// run it twice. Any other error of [`Injector::inject`] leaves the record *unconfirmed*:
/// it may have reached the target, and a resume must not send it again unasked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NotSent {
    message: String,
}

impl NotSent {
    /// An error with this message (which should say why nothing was sent).
    #[must_use]
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// Whether an injector's error says nothing was sent.
    #[must_use]
    pub fn is(error: &(dyn std::error::Error + Send + Sync + 'static)) -> bool {
        error.downcast_ref::<NotSent>().is_some()
    }
}
