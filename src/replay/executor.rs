//! The offline replay executor: plan a batch after a cursor, then execute it in one of
//! three modes (§5).
//!
//! - **Dry-run** (the plan says so): nothing is invoked; every record gets a
//!   `dry_run_skip` outcome saying which handler would run and whether it would be
//!   re-injected.
//! - **Observational** (live, re-injection off): each record is handed to the handler
//!   registered for its exact artifact name, or recorded as `observed`.
//! - **Re-injection** (live, re-injection on): handlers are ignored; records the
//!   classifier clears are handed to the injector, the rest are rejected with a reason.
//!
//! A handler or injector error stops the batch: the result is failed, carries the outcomes
//! produced before the failing record and the error's message. A stop
//! ([`Executor::stop_when`]) before the batch's last record also leaves the result not
//! successful (without an error): not every planned record was dealt with.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use time::OffsetDateTime;

use super::handler::HandlerRegistry;
use super::inject::{
    Classifier, DefaultClassifier, ExecutionCandidate, InjectionGuard, Injector, NotSent,
    REJECT_CANNOT_SEND, Verdict,
};
use super::plan::{ExecutionResult, Outcome, OutcomeRecord, Plan};
use super::{Error, ExecutionConfig};
use crate::record::{Criteria, ReadCursor, Record};
use crate::storage::error_chain;
use crate::store::ArtifactReader;

/// Plans and executes replay batches over one artifact store.
pub struct Executor<'s, S: ArtifactReader + ?Sized = dyn ArtifactReader + 's> {
    config: ExecutionConfig,
    store: &'s S,
    handlers: HandlerRegistry,
    injector: Option<Box<dyn Injector>>,
    classifier: Box<dyn Classifier>,
    guard: Option<InjectionGuard>,
    /// Once set, live execution stops before its next record ([`Executor::stop_when`]).
    stop: Option<Arc<AtomicBool>>,
}

/// Payload text a planned batch holds past its first record ([`Executor::plan_matching`]).
const PLAN_PAYLOAD_BYTES: usize = 8 << 20;

/// Records a plan reads at a time, so that [`PLAN_PAYLOAD_BYTES`] can stop the read.
const PLAN_PAGE: usize = 64;

impl<S: ArtifactReader + ?Sized> fmt::Debug for Executor<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("config", &self.config)
            .field("handlers", &self.handlers)
            .field("injector", &self.injector.as_ref().map(|i| i.name()))
            .field("guard", &self.guard)
            .finish_non_exhaustive()
    }
}

impl<'s, S: ArtifactReader + ?Sized> Executor<'s, S> {
    /// An executor over `store` with the reference classifier.
    ///
    /// # Errors
    ///
    /// [`Error::InjectorRequired`] if the configuration enables re-injection and no
    /// injector is given.
    pub fn new(
        config: ExecutionConfig,
        store: &'s S,
        handlers: HandlerRegistry,
        injector: Option<Box<dyn Injector>>,
    ) -> Result<Self, Error> {
        if config.reinjection_enabled() && injector.is_none() {
            return Err(Error::InjectorRequired);
        }
        let guard = if config.reinjection_allowlist().is_empty() {
            None
        } else {
            Some(InjectionGuard::new(
                config.reinjection_allowlist().iter().cloned(),
            )?)
        };
        Ok(Self {
            config,
            store,
            handlers,
            injector,
            classifier: Box::new(DefaultClassifier),
            guard,
            stop: None,
        })
    }

    /// Stops live execution before the next record once `stop` is set (by a signal
    /// handler, say): the record in hand finishes, and the result ends with it, so that a
    /// checkpoint saved from it covers exactly the records dealt with.
    #[must_use]
    pub fn stop_when(mut self, stop: Arc<AtomicBool>) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Whether the flag given to [`Executor::stop_when`] is set.
    #[must_use]
    pub fn stopping(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|stop| stop.load(Ordering::Acquire))
    }

    /// Replaces the classifier that decides which records may be re-injected.
    #[must_use]
    pub fn with_classifier(mut self, classifier: Box<dyn Classifier>) -> Self {
        self.classifier = classifier;
        self
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &ExecutionConfig {
        &self.config
    }

    /// The store records are planned from.
    #[must_use]
    pub fn store(&self) -> &'s S {
        self.store
    }

    /// The handler registry.
    #[must_use]
    pub fn handlers(&self) -> &HandlerRegistry {
        &self.handlers
    }

    /// Takes the executor apart into its handlers and injector (to read what they
    /// gathered after a run).
    #[must_use]
    pub fn into_parts(self) -> (HandlerRegistry, Option<Box<dyn Injector>>) {
        (self.handlers, self.injector)
    }

    /// Plans the next batch: at most `batch_limit` records after `from`, every record, as
    /// the reference does. The cursor is not advanced.
    ///
    /// # Errors
    ///
    /// Store read errors.
    pub fn plan(&self, from: &ReadCursor) -> Result<Plan, Error> {
        self.plan_matching(from, &Criteria::any(), None)
    }

    /// Plans the next batch of records after `from` that match `criteria`, up to and
    /// including sequence `until` if given. A batch holds at most `batch_limit` records;
    /// the cursor is not advanced.
    ///
    /// # Errors
    ///
    /// Store read errors; [`Error::UntilBeforeStart`] if `until` is below the cursor (as
    /// [`crate::replay::replay_range`] refuses it).
    pub fn plan_matching(
        &self,
        from: &ReadCursor,
        criteria: &Criteria,
        until: Option<u64>,
    ) -> Result<Plan, Error> {
        if let Some(until) = until
            && until < from.last_consumed_sequence()
        {
            return Err(Error::UntilBeforeStart {
                from: from.last_consumed_sequence(),
                until,
            });
        }
        let mut records = Vec::new();
        let mut bytes = 0;
        let mut cursor = *from;
        // At most `batch_limit` records, and (past the first) at most PLAN_PAYLOAD_BYTES of
        // payload text: a record in memory costs many times its text, so a batch of large
        // records is cut short rather than held whole. Pages of a few records let the
        // budget stop the read.
        while records.len() < self.config.batch_limit()
            && (records.is_empty() || bytes < PLAN_PAYLOAD_BYTES)
        {
            if until.is_some_and(|until| until <= cursor.last_consumed_sequence()) {
                break;
            }
            let page = (self.config.batch_limit() - records.len()).min(PLAN_PAGE);
            let mut failed = None;
            let visited = self
                .store
                .visit_from_cursor(&cursor, page, criteria, &mut |view| {
                    if failed.is_some() || (!records.is_empty() && bytes >= PLAN_PAYLOAD_BYTES) {
                        return;
                    }
                    let sequence = view.append_sequence();
                    if until.is_some_and(|until| sequence > until) {
                        return;
                    }
                    match view.to_record() {
                        Ok(record) => {
                            bytes += view.payload_json().len();
                            records.push(record);
                        }
                        Err(source) => {
                            failed = Some(crate::store::Error::CorruptRecord { sequence, source })
                        }
                    }
                })?;
            if let Some(error) = failed {
                return Err(error.into());
            }
            match records.last() {
                Some(last)
                    if visited == page
                        && last.append_sequence() > cursor.last_consumed_sequence() =>
                {
                    cursor = ReadCursor::new(last.append_sequence(), None);
                }
                _ => break,
            }
        }
        Ok(Plan::new(
            *from,
            records,
            self.config.dry_run(),
            OffsetDateTime::now_utc(),
        ))
    }

    /// Executes a plan: dry-run if the plan says so, else re-injection if this executor's
    /// configuration enables it, else observational.
    pub fn execute(&mut self, plan: Plan) -> ExecutionResult {
        self.execute_with(plan, &mut |_| Ok(()))
    }

    /// Executes a plan as [`Executor::execute`] does, telling `observer` about each step of
    /// live execution as it happens ([`Step`]): before each injection is sent, after each
    /// record is dealt with, and when an injection failed without sending anything. An
    /// error from the observer stops the batch there (before the send, for
    /// [`Step::Sending`]): the result is failed with the observer's message.
    pub fn execute_with(
        &mut self,
        plan: Plan,
        observer: &mut dyn FnMut(Step<'_>) -> Result<(), String>,
    ) -> ExecutionResult {
        if plan.is_dry_run() {
            self.dry_run(plan)
        } else if self.config.reinjection_enabled() {
            self.reinject(plan, observer)
        } else {
            self.observe(plan, observer)
        }
    }

    /// What the re-injection classifier says about a record, if re-injection is enabled.
    fn verdict(&self, record: &Record) -> Option<Verdict> {
        if !self.config.reinjection_enabled() {
            return None;
        }
        self.guard
            .as_ref()
            .map(|guard| self.classifier.classify(record, guard))
    }

    fn dry_run(&self, plan: Plan) -> ExecutionResult {
        let outcomes: Vec<Outcome> = plan
            .records()
            .iter()
            .map(|record| {
                let verdict = self
                    .verdict(record)
                    .map(|verdict| self.sendable(record, verdict));
                Outcome::DryRunSkip {
                    record: OutcomeRecord::of(record),
                    handler: self
                        .handlers
                        .get(record.artifact_name())
                        .map(|h| h.name().to_owned()),
                    would_reinject: verdict.as_ref().is_some_and(Verdict::is_eligible),
                    reinjection_reason: verdict.map(|v| match v {
                        Verdict::Eligible => super::inject::ELIGIBLE.into(),
                        Verdict::Rejected(reason) => reason,
                    }),
                }
            })
            .collect();
        let skipped = outcomes.len() as u64;
        finished(plan, true, 0, skipped, outcomes, None)
    }

    /// A verdict of eligible stands only if the injector could send the record
    /// ([`Injector::check`]): dry-run and live execution judge a record alike.
    fn sendable(&self, record: &Record, verdict: Verdict) -> Verdict {
        match (&verdict, self.injector.as_ref()) {
            (Verdict::Eligible, Some(injector)) => {
                match injector.check(&ExecutionCandidate::new(record.clone())) {
                    Ok(()) => verdict,
                    Err(error) => Verdict::Rejected(
                        format!("{REJECT_CANNOT_SEND}: {}", error_chain(&*error)).into(),
                    ),
                }
            }
            _ => verdict,
        }
    }

    fn observe(
        &mut self,
        plan: Plan,
        observer: &mut dyn FnMut(Step<'_>) -> Result<(), String>,
    ) -> ExecutionResult {
        let mut outcomes = Vec::with_capacity(plan.record_count());
        let mut failure = None;
        for record in plan.records() {
            if self.stopping() {
                break;
            }
            let outcome = match self.handlers.get_mut(record.artifact_name()) {
                None => Outcome::Observed {
                    record: OutcomeRecord::of(record),
                },
                Some(handler) => match handler.handle(record) {
                    Ok(result) => {
                        let (action, metadata) = result.into_parts();
                        Outcome::Handled {
                            record: OutcomeRecord::of(record),
                            action,
                            handler: handler.name().to_owned(),
                            metadata,
                        }
                    }
                    Err(error) => {
                        failure = Some(error_chain(&*error));
                        break;
                    }
                },
            };
            outcomes.push(outcome);
            if let Err(error) = observer(Step::Dealt(record)) {
                failure = Some(error);
                break;
            }
        }
        let processed = outcomes.len() as u64;
        let complete = failure.is_none() && outcomes.len() == plan.record_count();
        finished(plan, complete, processed, 0, outcomes, failure)
    }

    fn reinject(
        &mut self,
        plan: Plan,
        observer: &mut dyn FnMut(Step<'_>) -> Result<(), String>,
    ) -> ExecutionResult {
        let mut outcomes = Vec::with_capacity(plan.record_count());
        let (mut processed, mut skipped) = (0, 0);
        let mut failure = None;
        for record in plan.records() {
            if self.stopping() {
                break;
            }
            let verdict = self
                .verdict(record)
                .map(|verdict| self.sendable(record, verdict));
            let Some(Verdict::Eligible) = verdict else {
                skipped += 1;
                outcomes.push(Outcome::ReinjectionRejected {
                    record: OutcomeRecord::of(record),
                    reason: match verdict {
                        Some(Verdict::Rejected(reason)) => reason,
                        // Unreachable with a valid configuration: re-injection mode always
                        // has a guard. Reject rather than inject unguarded.
                        _ => super::inject::REJECT_NOT_ALLOWLISTED.into(),
                    },
                });
                if let Err(error) = observer(Step::Dealt(record)) {
                    failure = Some(error);
                    break;
                }
                continue;
            };
            let Some(injector) = self.injector.as_mut() else {
                failure = Some(Error::InjectorRequired.to_string());
                break;
            };
            if let Err(error) = observer(Step::Sending(record)) {
                failure = Some(error);
                break;
            }
            match injector.inject(&ExecutionCandidate::new(record.clone())) {
                Ok(result) => {
                    processed += 1;
                    let (action, metadata) = result.into_parts();
                    outcomes.push(Outcome::Injected {
                        record: OutcomeRecord::of(record),
                        action,
                        metadata,
                    });
                    if let Err(error) = observer(Step::Dealt(record)) {
                        failure = Some(error);
                        break;
                    }
                }
                Err(error) => {
                    let mut message = error_chain(&*error);
                    if NotSent::is(&*error)
                        && let Err(observed) = observer(Step::NotSent(record))
                    {
                        message = format!("{message}; then: {observed}");
                    }
                    failure = Some(message);
                    break;
                }
            }
        }
        let complete = failure.is_none() && outcomes.len() == plan.record_count();
        finished(plan, complete, processed, skipped, outcomes, failure)
    }
}

/// One step of live execution, as [`Executor::execute_with`] reports it.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Step<'r> {
    /// The injector is about to send this record. Once it is sent, only a reply confirms
    /// it: an observer that keeps progress durably marks it in flight here.
    Sending(&'r Record),
    /// This record was dealt with: it has its outcome (handled, observed, injected or
    /// rejected).
    Dealt(&'r Record),
    /// The injection of this record failed without sending anything ([`NotSent`]): it is
    /// no longer in flight.
    NotSent(&'r Record),
}

fn finished(
    plan: Plan,
    success: bool,
    processed: u64,
    skipped: u64,
    outcomes: Vec<Outcome>,
    error: Option<String>,
) -> ExecutionResult {
    ExecutionResult::new(
        plan,
        success,
        processed,
        skipped,
        outcomes,
        OffsetDateTime::now_utc(),
        error,
    )
}
