//! The offline replay executor against the reference's executor tests (§10): one module
//! per reference test class, one test per reference test, under the reference test's name.
//! The module `outcomes` and `range` add what the reference leaves implicit: the exact key
//! order of every outcome kind (K6) and whole-range replay with checkpoints.

use esl_replay::record::{JsonMap, ReadCursor};
use esl_replay::replay::{
    Error, ExecutionConfig, ExecutionResult, ExecutionSettings, Executor, HandlerRegistry,
    Injector, Plan,
};
use esl_replay::store::{ArtifactReader, ArtifactStore};
use time::OffsetDateTime;

#[cfg(feature = "sqlite")]
use crate::support::replay::sqlite_store;
use crate::support::replay::{Recording, log_store};

fn config(settings: ExecutionSettings) -> ExecutionConfig {
    ExecutionConfig::new(settings).unwrap()
}

fn live() -> ExecutionConfig {
    config(ExecutionSettings {
        dry_run: false,
        ..ExecutionSettings::default()
    })
}

fn reinjecting(dry_run: bool, allowlist: &[&str]) -> ExecutionConfig {
    config(ExecutionSettings {
        dry_run,
        reinjection_enabled: true,
        reinjection_allowlist: allowlist.iter().map(|s| (*s).to_owned()).collect(),
        ..ExecutionSettings::default()
    })
}

fn registry(name: &str, handler: Recording) -> HandlerRegistry {
    let mut registry = HandlerRegistry::new();
    registry.register(name, Box::new(handler)).unwrap();
    registry
}

fn actions(result: &ExecutionResult) -> Vec<&str> {
    result.outcomes().iter().map(|o| o.action()).collect()
}

fn sequences(plan: &Plan) -> Vec<u64> {
    plan.records().iter().map(|r| r.append_sequence()).collect()
}

fn run(
    store: &dyn ArtifactStore,
    config: ExecutionConfig,
    handlers: HandlerRegistry,
    injector: Option<Box<dyn Injector>>,
) -> ExecutionResult {
    let mut executor = Executor::new(config, store, handlers, injector).unwrap();
    let plan = executor.plan(&ReadCursor::start()).unwrap();
    executor.execute(plan)
}

/// tests/Unit/Config/ExecutionConfigTest
mod execution_config {
    use super::*;

    #[test]
    fn defaults_to_dry_run_true() {
        assert!(ExecutionConfig::default().dry_run());
        assert!(
            ExecutionConfig::new(ExecutionSettings::default())
                .unwrap()
                .dry_run()
        );
    }

    #[test]
    fn defaults_reinjection_enabled_to_false() {
        assert!(!ExecutionConfig::default().reinjection_enabled());
        assert!(
            ExecutionConfig::default()
                .reinjection_allowlist()
                .is_empty()
        );
    }

    #[test]
    fn defaults_batch_limit_to_500() {
        assert_eq!(ExecutionConfig::default().batch_limit(), 500);
    }

    #[test]
    fn accepts_dry_run_false() {
        assert!(!live().dry_run());
    }

    #[test]
    fn reinjection_enabled_requires_explicit_allowlist() {
        let error = ExecutionConfig::new(ExecutionSettings {
            reinjection_enabled: true,
            ..ExecutionSettings::default()
        })
        .unwrap_err();
        assert!(matches!(error, Error::AllowlistRequired));
        assert!(
            error.to_string().contains("reinjection_artifact_allowlist"),
            "{error}"
        );
    }

    #[test]
    fn reinjection_enabled_accepts_explicit_allowlist() {
        let config = reinjecting(false, &["api.dispatch"]);
        assert!(config.reinjection_enabled());
        assert_eq!(config.reinjection_allowlist(), ["api.dispatch"]);
    }

    #[test]
    fn rejects_batch_limit_below_one() {
        let error = ExecutionConfig::new(ExecutionSettings {
            batch_limit: 0,
            ..ExecutionSettings::default()
        })
        .unwrap_err();
        assert!(matches!(error, Error::InvalidBatchLimit));
    }

    #[test]
    fn accepts_custom_batch_limit() {
        let config = config(ExecutionSettings {
            batch_limit: 100,
            ..ExecutionSettings::default()
        });
        assert_eq!(config.batch_limit(), 100);
    }

    /// Fields are private and reachable only through getters; changing a copy of the
    /// settings leaves the configuration as it was.
    #[test]
    fn config_is_immutable() {
        let config = reinjecting(true, &["api.dispatch"]);
        let mut settings = config.settings().clone();
        settings.reinjection_allowlist.push("bgapi.dispatch".into());
        settings.batch_limit = 1;
        assert_eq!(config.reinjection_allowlist(), ["api.dispatch"]);
        assert_eq!(config.batch_limit(), 500);
    }

    #[test]
    fn blank_allowlist_entries_are_rejected() {
        let error = ExecutionConfig::new(ExecutionSettings {
            reinjection_enabled: true,
            reinjection_allowlist: vec!["api.dispatch".into(), " ".into()],
            ..ExecutionSettings::default()
        })
        .unwrap_err();
        assert!(matches!(error, Error::BlankAllowlistEntry { index: 1 }));
    }
}

/// tests/Unit/Execution/InjectionGuardTest
mod injection_guard {
    use esl_replay::replay::InjectionGuard;

    use super::*;

    #[test]
    fn allows_configured_artifact_names() {
        let guard = InjectionGuard::new(["api.dispatch"]).unwrap();
        assert!(guard.allows("api.dispatch"));
        assert!(!guard.allows("bgapi.dispatch"));
        assert!(!guard.allows("API.DISPATCH"));
    }

    #[test]
    fn rejects_empty_allowlist() {
        assert!(matches!(
            InjectionGuard::new(Vec::<String>::new()),
            Err(Error::EmptyAllowlist)
        ));
        assert!(matches!(
            InjectionGuard::new([""]),
            Err(Error::BlankAllowlistEntry { index: 0 })
        ));
    }
}

/// tests/Unit/Execution/InjectionResultTest
mod injection_result {
    use esl_replay::replay::InjectionResult;

    use super::*;

    #[test]
    fn constructs_with_valid_action() {
        let result = InjectionResult::new("injected", JsonMap::new()).unwrap();
        assert_eq!(result.action(), "injected");
        assert!(result.metadata().is_empty());
    }

    #[test]
    fn rejects_empty_action() {
        assert!(matches!(
            InjectionResult::new("  ", JsonMap::new()),
            Err(Error::BlankField { field: "action" })
        ));
    }
}

/// tests/Unit/Execution/OfflineReplayPlanTest
mod offline_replay_plan {
    use super::*;

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn constructs_empty_plan() {
        let plan = Plan::from_parts(ReadCursor::start(), 0, Vec::new(), true, now()).unwrap();
        assert!(plan.is_empty());
        assert_eq!(plan.record_count(), 0);
    }

    #[test]
    fn is_empty_returns_false_when_records_present() {
        let (_dir, store) = log_store(&["api.dispatch"]);
        let records = store
            .read_from_cursor(&ReadCursor::start(), 10, &Default::default())
            .unwrap();
        let plan = Plan::from_parts(ReadCursor::start(), 1, records, true, now()).unwrap();
        assert!(!plan.is_empty());
        assert_eq!(plan.record_count(), 1);
    }

    #[test]
    fn rejects_negative_record_count() {
        assert!(matches!(
            Plan::from_parts(ReadCursor::start(), -1, Vec::new(), true, now()),
            Err(Error::NegativeCount {
                field: "record_count",
                value: -1
            })
        ));
    }

    #[test]
    fn rejects_mismatched_record_count() {
        assert!(matches!(
            Plan::from_parts(ReadCursor::start(), 3, Vec::new(), true, now()),
            Err(Error::RecordCountMismatch {
                count: 3,
                records: 0
            })
        ));
    }

    #[test]
    fn dry_run_flag_is_preserved() {
        let plan = Plan::from_parts(ReadCursor::start(), 0, Vec::new(), false, now()).unwrap();
        assert!(!plan.is_dry_run());
        let plan = Plan::new(ReadCursor::start(), Vec::new(), true, now());
        assert!(plan.is_dry_run());
    }
}

/// tests/Unit/Execution/OfflineReplayResultTest
mod offline_replay_result {
    use super::*;

    fn plan() -> Plan {
        Plan::new(
            ReadCursor::start(),
            Vec::new(),
            false,
            OffsetDateTime::now_utc(),
        )
    }

    #[test]
    fn constructs_with_success() {
        let result = ExecutionResult::from_parts(
            plan(),
            true,
            0,
            0,
            Vec::new(),
            OffsetDateTime::now_utc(),
            None,
        )
        .unwrap();
        assert!(result.success());
        assert_eq!(result.error(), None);
    }

    #[test]
    fn constructs_with_error_message() {
        let result = ExecutionResult::from_parts(
            plan(),
            false,
            0,
            0,
            Vec::new(),
            OffsetDateTime::now_utc(),
            Some("handler failed".into()),
        )
        .unwrap();
        assert!(!result.success());
        assert_eq!(result.error(), Some("handler failed"));
    }

    #[test]
    fn rejects_negative_processed_count() {
        let result = ExecutionResult::from_parts(
            plan(),
            true,
            -1,
            0,
            Vec::new(),
            OffsetDateTime::now_utc(),
            None,
        );
        assert!(matches!(
            result,
            Err(Error::NegativeCount {
                field: "processed_count",
                value: -1
            })
        ));
    }

    #[test]
    fn rejects_negative_skipped_count() {
        let result = ExecutionResult::from_parts(
            plan(),
            true,
            0,
            -1,
            Vec::new(),
            OffsetDateTime::now_utc(),
            None,
        );
        assert!(matches!(
            result,
            Err(Error::NegativeCount {
                field: "skipped_count",
                value: -1
            })
        ));
    }
}

/// tests/Unit/Execution/ReplayHandlerRegistryTest
mod replay_handler_registry {
    use super::*;

    #[test]
    fn resolves_handler_by_exact_artifact_name() {
        let (handler, _) = Recording::new("api-handler", "handled");
        let registry = registry("api.dispatch", handler);
        assert_eq!(
            registry.get("api.dispatch").map(|h| h.name()),
            Some("api-handler")
        );
        assert!(registry.get("bgapi.dispatch").is_none());
        assert!(registry.get("api.dispatch ").is_none());
        assert!(!registry.is_empty());
        assert!(HandlerRegistry::new().is_empty());
    }

    #[test]
    fn rejects_empty_artifact_name_keys() {
        let (handler, _) = Recording::new("h", "handled");
        let mut registry = HandlerRegistry::new();
        assert!(matches!(
            registry.register("   ", Box::new(handler)),
            Err(Error::BlankField { .. })
        ));
        assert!(registry.is_empty());
    }
}

/// tests/Unit/Execution/ReplayHandlerResultTest
mod replay_handler_result {
    use esl_replay::replay::HandlerResult;
    use serde_json::json;

    use super::*;

    #[test]
    fn constructs_with_valid_action_and_metadata() {
        let mut metadata = JsonMap::new();
        metadata.insert("k".into(), json!("v"));
        let result = HandlerResult::new("handled", metadata.clone()).unwrap();
        assert_eq!(result.action(), "handled");
        assert_eq!(result.metadata(), &metadata);
    }

    #[test]
    fn rejects_empty_action() {
        assert!(matches!(
            HandlerResult::new("", JsonMap::new()),
            Err(Error::BlankField { field: "action" })
        ));
    }
}

/// tests/Integration/Execution/GuardedReinjectionChaosTest
mod guarded_reinjection_chaos {
    use esl_replay::replay::Outcome;

    use super::*;

    #[test]
    fn policy_blocked_stream_reports_explicit_rejection_reasons() {
        let (_dir, store) = log_store(&["event.raw", "bgapi.dispatch"]);
        let (injector, seen) = Recording::new("injector", "injected");
        let result = run(
            &store,
            reinjecting(false, &["api.dispatch", "event.raw"]),
            HandlerRegistry::new(),
            Some(Box::new(injector)),
        );
        assert!(result.success());
        assert_eq!(result.processed_count(), 0);
        assert_eq!(result.skipped_count(), 2);
        let reasons: Vec<&str> = result
            .outcomes()
            .iter()
            .map(|o| match o {
                Outcome::ReinjectionRejected { reason, .. } => reason.as_ref(),
                other => panic!("not rejected: {other:?}"),
            })
            .collect();
        assert_eq!(
            reasons,
            [
                "artifact type is observational and not injectable",
                "artifact type is not allowlisted for reinjection"
            ]
        );
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn injector_exception_returns_failed_result_with_partial_outcomes() {
        let (_dir, store) = log_store(&["api.dispatch", "api.dispatch"]);
        let (injector, seen) = Recording::new("injector", "injected");
        let result = run(
            &store,
            reinjecting(false, &["api.dispatch"]),
            HandlerRegistry::new(),
            Some(Box::new(injector.failing_on(2))),
        );
        assert!(!result.success());
        assert_eq!(result.processed_count(), 1);
        assert_eq!(actions(&result), ["injected"]);
        assert_eq!(result.error(), Some("injector boom"));
        assert_eq!(*seen.lock().unwrap(), [1]);
    }
}

/// tests/Integration/Execution/OfflineReplayChaosTest
mod offline_replay_chaos {
    use super::*;

    #[test]
    fn handler_exception_mid_stream_returns_failed_result_with_partial_outcomes() {
        let (_dir, store) = log_store(&["event.raw", "api.dispatch", "api.dispatch"]);
        let (handler, seen) = Recording::new("handler", "handled_once");
        let result = run(
            &store,
            live(),
            registry("api.dispatch", handler.failing_on(2)),
            None,
        );
        assert!(!result.success());
        assert_eq!(result.processed_count(), 2);
        assert_eq!(result.skipped_count(), 0);
        assert_eq!(actions(&result), ["observed", "handled_once"]);
        assert_eq!(result.error(), Some("handler boom"));
        assert_eq!(*seen.lock().unwrap(), [2]);
    }

    #[test]
    fn repeated_dry_run_over_same_stream_is_stable_on_documented_fields() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw", "bgapi.dispatch"]);
        let documented = || {
            let (handler, _) = Recording::new("handler", "handled");
            let result = run(
                &store,
                ExecutionConfig::default(),
                registry("api.dispatch", handler),
                None,
            );
            result
                .outcomes()
                .iter()
                .map(|o| {
                    let value = serde_json::to_value(o).unwrap();
                    (
                        value["artifact_name"].clone(),
                        value["append_sequence"].clone(),
                        value["action"].clone(),
                        value["would_dispatch_handler"].clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        let first = documented();
        assert_eq!(first.len(), 3);
        assert_eq!(first, documented());
    }
}

/// tests/Integration/Execution/OfflineReplayDeterminismTest
#[cfg(feature = "sqlite")]
mod offline_replay_determinism {
    use super::*;

    #[test]
    fn handler_driven_replay_outcomes_match_across_filesystem_and_sqlite() {
        let names = ["api.dispatch", "event.raw", "api.dispatch", "bgapi.ack"];
        let outcomes = |store: &dyn ArtifactStore| {
            let (handler, _) = Recording::new("handler", "handled_api_dispatch");
            let result = run(store, live(), registry("api.dispatch", handler), None);
            assert!(result.success());
            result
                .outcomes()
                .iter()
                .map(|o| {
                    let mut value = serde_json::to_value(o).unwrap();
                    value.as_object_mut().unwrap().remove("record_id");
                    value
                })
                .collect::<Vec<_>>()
        };
        let (_log_dir, log) = log_store(&names);
        let (_sqlite_dir, sqlite) = sqlite_store(&names);
        let from_log = outcomes(&log);
        assert_eq!(from_log.len(), 4);
        assert_eq!(from_log, outcomes(&sqlite));
    }
}

/// tests/Integration/OfflineReplayExecutorTest
mod offline_replay_executor {
    use esl_replay::replay::Outcome;

    use super::*;

    fn executor<'s>(store: &'s dyn ArtifactReader, config: ExecutionConfig) -> Executor<'s> {
        Executor::new(config, store, HandlerRegistry::new(), None).unwrap()
    }

    #[test]
    fn plan_with_empty_store_produces_empty_plan() {
        let (_dir, store) = log_store(&[]);
        let plan = executor(&store, ExecutionConfig::default())
            .plan(&ReadCursor::start())
            .unwrap();
        assert!(plan.is_empty());
    }

    #[test]
    fn plan_includes_all_available_records() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw", "bgapi.dispatch"]);
        let plan = executor(&store, ExecutionConfig::default())
            .plan(&ReadCursor::start())
            .unwrap();
        assert_eq!(plan.record_count(), 3);
    }

    #[test]
    fn plan_respects_batch_limit() {
        let (_dir, store) = log_store(&["event.raw"; 10]);
        let config = config(ExecutionSettings {
            batch_limit: 3,
            ..ExecutionSettings::default()
        });
        let plan = executor(&store, config).plan(&ReadCursor::start()).unwrap();
        assert_eq!(sequences(&plan), [1, 2, 3]);
    }

    #[test]
    fn plan_inherits_dry_run_flag_from_config() {
        let (_dir, store) = log_store(&["event.raw"]);
        let start = ReadCursor::start();
        assert!(
            executor(&store, ExecutionConfig::default())
                .plan(&start)
                .unwrap()
                .is_dry_run()
        );
        assert!(!executor(&store, live()).plan(&start).unwrap().is_dry_run());
    }

    #[test]
    fn execute_dry_run_skips_all_records() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw"]);
        let result = run(
            &store,
            ExecutionConfig::default(),
            HandlerRegistry::new(),
            None,
        );
        assert!(result.success());
        assert_eq!(result.processed_count(), 0);
        assert_eq!(result.skipped_count(), 2);
        assert_eq!(actions(&result), ["dry_run_skip", "dry_run_skip"]);
    }

    #[test]
    fn execute_live_mode_processes_all_records() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw", "bgapi.dispatch"]);
        let result = run(&store, live(), HandlerRegistry::new(), None);
        assert!(result.success());
        assert_eq!(result.processed_count(), 3);
        assert_eq!(result.skipped_count(), 0);
        assert_eq!(actions(&result)[0], "observed");
    }

    #[test]
    fn execute_live_mode_dispatches_matching_handlers() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw", "api.dispatch"]);
        let (handler, seen) = Recording::new("api-handler", "handled_api_dispatch");
        let result = run(&store, live(), registry("api.dispatch", handler), None);
        assert_eq!(*seen.lock().unwrap(), [1, 3]);
        assert_eq!(
            actions(&result),
            ["handled_api_dispatch", "observed", "handled_api_dispatch"]
        );
        assert_eq!(result.outcomes()[0].handler(), Some("api-handler"));
        assert_eq!(result.outcomes()[1].handler(), None);
    }

    #[test]
    fn execute_dry_run_does_not_dispatch_handlers() {
        let (_dir, store) = log_store(&["api.dispatch"]);
        let (handler, seen) = Recording::new("api-handler", "handled");
        let result = run(
            &store,
            ExecutionConfig::default(),
            registry("api.dispatch", handler),
            None,
        );
        assert!(seen.lock().unwrap().is_empty());
        let value = serde_json::to_value(&result.outcomes()[0]).unwrap();
        assert_eq!(value["would_dispatch_handler"], true);
        assert_eq!(value["handler"], "api-handler");
    }

    #[test]
    fn execute_reporting_remains_deterministic_with_handlers() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw", "api.dispatch"]);
        let report = || {
            let (handler, _) = Recording::new("api-handler", "handled_api_dispatch");
            let result = run(&store, live(), registry("api.dispatch", handler), None);
            result
                .outcomes()
                .iter()
                .map(|o| (o.action().to_owned(), o.record().append_sequence))
                .collect::<Vec<_>>()
        };
        let first = report();
        assert_eq!(first.len(), 3);
        assert_eq!(first, report());
    }

    #[test]
    fn execute_returns_failed_result_when_handler_throws() {
        let (_dir, store) = log_store(&["api.dispatch"]);
        let (handler, _) = Recording::new("handler", "handled");
        let result = run(
            &store,
            live(),
            registry("api.dispatch", handler.failing_on(1)),
            None,
        );
        assert!(!result.success());
        assert_eq!(result.processed_count(), 0);
        assert!(result.outcomes().is_empty());
        assert_eq!(result.error(), Some("handler boom"));
    }

    #[test]
    fn make_requires_injector_when_reinjection_is_enabled() {
        let (_dir, store) = log_store(&[]);
        let result = Executor::new(
            reinjecting(false, &["api.dispatch"]),
            &store,
            HandlerRegistry::new(),
            None,
        );
        assert!(matches!(result, Err(Error::InjectorRequired)));
    }

    #[test]
    fn reinjection_executes_only_allowlisted_executable_artifacts() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw", "bgapi.dispatch"]);
        let (injector, seen) = Recording::new("injector", "injected");
        let (handler, handled) = Recording::new("handler", "handled");
        let result = run(
            &store,
            reinjecting(false, &["api.dispatch"]),
            registry("api.dispatch", handler),
            Some(Box::new(injector)),
        );
        assert!(result.success());
        assert_eq!(*seen.lock().unwrap(), [1]);
        assert!(handled.lock().unwrap().is_empty(), "handlers are ignored");
        assert_eq!(
            actions(&result),
            ["injected", "reinjection_rejected", "reinjection_rejected"]
        );
        assert_eq!(result.processed_count(), 1);
        assert_eq!(result.skipped_count(), 2);
    }

    #[test]
    fn reinjection_dry_run_reports_candidate_without_injecting() {
        let (_dir, store) = log_store(&["api.dispatch"]);
        let (injector, seen) = Recording::new("injector", "injected");
        let result = run(
            &store,
            reinjecting(true, &["api.dispatch"]),
            HandlerRegistry::new(),
            Some(Box::new(injector)),
        );
        assert!(seen.lock().unwrap().is_empty());
        match &result.outcomes()[0] {
            Outcome::DryRunSkip {
                would_reinject,
                reinjection_reason,
                ..
            } => {
                assert!(would_reinject);
                assert_eq!(reinjection_reason.as_deref(), Some("eligible"));
            }
            other => panic!("not a dry-run outcome: {other:?}"),
        }
        assert_eq!(actions(&result), ["dry_run_skip"]);
    }

    #[test]
    fn plan_from_cursor_only_includes_unconsumed_records() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw", "bgapi.dispatch"]);
        let plan = executor(&store, ExecutionConfig::default())
            .plan(&ReadCursor::new(1, None))
            .unwrap();
        assert_eq!(sequences(&plan), [2, 3]);
        assert_eq!(plan.from().last_consumed_sequence(), 1);
    }

    #[test]
    fn execute_result_contains_record_ids() {
        let (_dir, store) = log_store(&["api.dispatch"]);
        let result = run(&store, live(), HandlerRegistry::new(), None);
        let record_id = &result.outcomes()[0].record().record_id;
        assert!(!record_id.is_empty());
        assert_eq!(record_id, result.plan().records()[0].id().as_str());
    }

    #[test]
    fn plan_records_are_in_append_sequence_order() {
        let (_dir, store) = log_store(&["event.raw"; 7]);
        let plan = executor(&store, ExecutionConfig::default())
            .plan(&ReadCursor::start())
            .unwrap();
        assert_eq!(sequences(&plan), [1, 2, 3, 4, 5, 6, 7]);
    }

    #[test]
    fn make_does_not_throw_with_valid_config() {
        let (_dir, store) = log_store(&[]);
        for config in [ExecutionConfig::default(), live()] {
            assert!(Executor::new(config, &store, HandlerRegistry::new(), None).is_ok());
        }
        let (injector, _) = Recording::new("injector", "injected");
        assert!(
            Executor::new(
                reinjecting(false, &["api.dispatch"]),
                &store,
                HandlerRegistry::new(),
                Some(Box::new(injector))
            )
            .is_ok()
        );
    }
}

/// The outcome maps of every kind, key for key in the reference order (§5.4-5.6, §11.26).
mod outcomes {
    use serde_json::{Value, json};

    use super::*;

    fn keys(value: &Value) -> Vec<&str> {
        value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect()
    }

    #[test]
    fn dry_run_outcome_keys_and_values() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw"]);
        let (handler, _) = Recording::new("api-handler", "handled");
        let result = run(
            &store,
            ExecutionConfig::default(),
            registry("api.dispatch", handler),
            None,
        );
        let first = serde_json::to_value(&result.outcomes()[0]).unwrap();
        assert_eq!(
            keys(&first),
            [
                "record_id",
                "artifact_name",
                "append_sequence",
                "action",
                "would_dispatch_handler",
                "handler",
                "would_reinject",
                "reinjection_reason"
            ]
        );
        assert_eq!(first["artifact_name"], "api.dispatch");
        assert_eq!(first["append_sequence"], 1);
        assert_eq!(first["would_reinject"], false);
        assert_eq!(first["reinjection_reason"], Value::Null);
        let second = serde_json::to_value(&result.outcomes()[1]).unwrap();
        assert_eq!(second["would_dispatch_handler"], false);
        assert_eq!(second["handler"], Value::Null);
    }

    #[test]
    fn dry_run_with_reinjection_reports_reasons() {
        let (_dir, store) = log_store(&["api.dispatch", "bgapi.dispatch", "event.raw"]);
        let (injector, _) = Recording::new("injector", "injected");
        let result = run(
            &store,
            reinjecting(true, &["api.dispatch", "event.raw"]),
            HandlerRegistry::new(),
            Some(Box::new(injector)),
        );
        let reported: Vec<(Value, Value)> = result
            .outcomes()
            .iter()
            .map(|o| {
                let v = serde_json::to_value(o).unwrap();
                (v["would_reinject"].clone(), v["reinjection_reason"].clone())
            })
            .collect();
        assert_eq!(
            reported,
            [
                (json!(true), json!("eligible")),
                (
                    json!(false),
                    json!("artifact type is not allowlisted for reinjection")
                ),
                (
                    json!(false),
                    json!("artifact type is observational and not injectable")
                ),
            ]
        );
    }

    #[test]
    fn observational_outcome_keys() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw"]);
        let (handler, _) = Recording::new("api-handler", "handled");
        let result = run(&store, live(), registry("api.dispatch", handler), None);
        let handled = serde_json::to_value(&result.outcomes()[0]).unwrap();
        assert_eq!(
            keys(&handled),
            [
                "record_id",
                "artifact_name",
                "artifact_version",
                "append_sequence",
                "action",
                "handler",
                "metadata"
            ]
        );
        assert_eq!(handled["handler"], "api-handler");
        assert_eq!(handled["metadata"], json!({"call": 1}));
        let observed = serde_json::to_value(&result.outcomes()[1]).unwrap();
        assert_eq!(
            keys(&observed),
            [
                "record_id",
                "artifact_name",
                "artifact_version",
                "append_sequence",
                "action",
                "handler"
            ]
        );
        assert_eq!(observed["artifact_version"], "1");
        assert_eq!(observed["handler"], Value::Null);
    }

    #[test]
    fn reinjection_outcome_keys() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw"]);
        let (injector, _) = Recording::new("injector", "injected");
        let result = run(
            &store,
            reinjecting(false, &["api.dispatch"]),
            HandlerRegistry::new(),
            Some(Box::new(injector)),
        );
        let injected = serde_json::to_value(&result.outcomes()[0]).unwrap();
        assert_eq!(
            keys(&injected),
            [
                "record_id",
                "artifact_name",
                "artifact_version",
                "append_sequence",
                "action",
                "metadata"
            ]
        );
        let rejected = serde_json::to_value(&result.outcomes()[1]).unwrap();
        assert_eq!(
            keys(&rejected),
            [
                "record_id",
                "artifact_name",
                "artifact_version",
                "append_sequence",
                "action",
                "reason"
            ]
        );
    }

    #[test]
    fn plan_decides_dry_run_not_the_executing_config() {
        let (_dir, store) = log_store(&["api.dispatch"]);
        let (handler, seen) = Recording::new("api-handler", "handled");
        let mut executor =
            Executor::new(live(), &store, registry("api.dispatch", handler), None).unwrap();
        let live_plan = executor.plan(&ReadCursor::start()).unwrap();
        let dry_plan = Plan::new(
            *live_plan.from(),
            live_plan.records().to_vec(),
            true,
            *live_plan.planned_at(),
        );
        assert_eq!(actions(&executor.execute(dry_plan)), ["dry_run_skip"]);
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(actions(&executor.execute(live_plan)), ["handled"]);
    }

    #[test]
    fn fallback_handler_serves_names_without_exact_registration() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw"]);
        let (exact, exact_seen) = Recording::new("exact", "exact");
        let (fallback, fallback_seen) = Recording::new("fallback", "fallback");
        let mut handlers = registry("api.dispatch", exact);
        handlers.set_fallback(Box::new(fallback));
        let result = run(&store, live(), handlers, None);
        assert_eq!(actions(&result), ["exact", "fallback"]);
        assert_eq!(*exact_seen.lock().unwrap(), [1]);
        assert_eq!(*fallback_seen.lock().unwrap(), [2]);
    }
}

/// Whole-range replay: batches, cursor advance, checkpoints, `until`, failures.
mod range {
    use esl_replay::checkpoint::{CheckpointService, CheckpointStore};
    use esl_replay::record::{Criteria, CriteriaFields};
    use esl_replay::replay::{RangeOptions, replay_range};

    use super::*;

    fn batches_of(limit: usize, dry_run: bool) -> ExecutionConfig {
        config(ExecutionSettings {
            dry_run,
            batch_limit: limit,
            ..ExecutionSettings::default()
        })
    }

    fn service(dir: &std::path::Path) -> CheckpointService {
        CheckpointService::new(CheckpointStore::open(dir.join("cp")).unwrap(), "worker").unwrap()
    }

    #[test]
    fn walks_every_batch_and_saves_a_checkpoint_after_each() {
        let (dir, store) = log_store(&["event.raw"; 10]);
        let service = service(dir.path());
        let (handler, seen) = Recording::new("h", "handled");
        let mut handlers = HandlerRegistry::new();
        handlers.set_fallback(Box::new(handler));
        let mut executor = Executor::new(batches_of(3, false), &store, handlers, None).unwrap();
        let mut batch_sizes = Vec::new();
        let options = RangeOptions {
            checkpoint: Some(&service),
            ..RangeOptions::default()
        };
        let report = replay_range(&mut executor, ReadCursor::start(), &options, |result| {
            batch_sizes.push(result.plan().record_count());
        })
        .unwrap();
        assert!(report.success());
        assert_eq!(batch_sizes, [3, 3, 3, 1]);
        assert_eq!(report.batches, 4);
        assert_eq!(report.processed, 10);
        assert_eq!(report.checkpoints_saved, 4);
        assert_eq!(report.cursor.last_consumed_sequence(), 10);
        assert_eq!(*seen.lock().unwrap(), (1..=10).collect::<Vec<_>>());
        let saved = service.load().unwrap().unwrap();
        assert_eq!(saved.cursor().last_consumed_sequence(), 10);
    }

    #[test]
    fn stops_at_until_and_resumes_from_the_checkpoint() {
        let (dir, store) = log_store(&["event.raw"; 10]);
        let service = service(dir.path());
        let mut executor =
            Executor::new(batches_of(4, false), &store, HandlerRegistry::new(), None).unwrap();
        let first = RangeOptions {
            checkpoint: Some(&service),
            until: Some(6),
            ..RangeOptions::default()
        };
        let report = replay_range(&mut executor, ReadCursor::start(), &first, |_| {}).unwrap();
        assert_eq!(report.records, 6);
        assert_eq!(report.cursor.last_consumed_sequence(), 6);
        let resume = *service.load().unwrap().unwrap().cursor();
        let mut seen = Vec::new();
        let rest = RangeOptions {
            checkpoint: Some(&service),
            ..RangeOptions::default()
        };
        replay_range(&mut executor, resume, &rest, |result| {
            seen.extend(result.outcomes().iter().map(|o| o.record().append_sequence));
        })
        .unwrap();
        assert_eq!(seen, [7, 8, 9, 10]);
    }

    /// A checkpoint says records were consumed: it is saved only once they are durable, so a
    /// power loss cannot leave it past the store's end with other records in their place.
    /// Here the writer never syncs (`OsOnly`) and the replay reads through a read-only handle.
    #[test]
    fn a_checkpoint_is_saved_only_after_its_records_are_durable() {
        use esl_replay::store::{LogStore, dataset};

        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let writer = crate::support::process::unsynced_store(
            &root,
            (0..10).map(dataset::envelope).collect(),
        );
        let store = LogStore::open_read_only(&root).unwrap();
        assert_eq!(store.durable_through().unwrap(), 0);
        let service = service(dir.path());
        let mut executor =
            Executor::new(batches_of(4, false), &*store, HandlerRegistry::new(), None).unwrap();
        let options = RangeOptions {
            checkpoint: Some(&service),
            ..RangeOptions::default()
        };
        let report = replay_range(&mut executor, ReadCursor::start(), &options, |_| {}).unwrap();
        assert_eq!(report.checkpoints_saved, 3);
        let saved = service.load().unwrap().unwrap();
        assert_eq!(saved.cursor().last_consumed_sequence(), 10);
        assert_eq!(store.durable_through().unwrap(), 10);
        drop(writer);
    }

    #[test]
    fn dry_run_walks_the_range_but_never_saves_a_checkpoint() {
        let (dir, store) = log_store(&["event.raw"; 5]);
        let service = service(dir.path());
        let mut executor =
            Executor::new(batches_of(2, true), &store, HandlerRegistry::new(), None).unwrap();
        let options = RangeOptions {
            checkpoint: Some(&service),
            ..RangeOptions::default()
        };
        let report = replay_range(&mut executor, ReadCursor::start(), &options, |_| {}).unwrap();
        assert_eq!(report.skipped, 5);
        assert_eq!(report.cursor.last_consumed_sequence(), 5);
        assert_eq!(report.checkpoints_saved, 0);
        assert!(service.load().unwrap().is_none());
    }

    #[test]
    fn a_failure_saves_progress_up_to_the_last_record_dealt_with() {
        let (dir, store) = log_store(&[
            "event.raw",
            "api.dispatch",
            "event.raw",
            "api.dispatch",
            "event.raw",
        ]);
        let service = service(dir.path());
        let (handler, _) = Recording::new("h", "handled");
        let mut executor = Executor::new(
            batches_of(2, false),
            &store,
            registry("api.dispatch", handler.failing_on(2)),
            None,
        )
        .unwrap();
        let options = RangeOptions {
            checkpoint: Some(&service),
            ..RangeOptions::default()
        };
        let report = replay_range(&mut executor, ReadCursor::start(), &options, |_| {}).unwrap();
        assert_eq!(report.error.as_deref(), Some("h boom"));
        // Batch [1,2] succeeded, batch [3,4] failed on 4 after dealing with 3.
        assert_eq!(report.cursor.last_consumed_sequence(), 3);
        assert_eq!(
            service
                .load()
                .unwrap()
                .unwrap()
                .cursor()
                .last_consumed_sequence(),
            3
        );
    }

    #[test]
    fn criteria_select_records_and_the_cursor_moves_by_sequence() {
        let (_dir, store) = log_store(&["api.dispatch", "event.raw", "api.dispatch", "event.raw"]);
        let mut executor =
            Executor::new(batches_of(1, true), &store, HandlerRegistry::new(), None).unwrap();
        let options = RangeOptions {
            criteria: Criteria::new(CriteriaFields {
                artifact_name: Some("api.dispatch".into()),
                ..CriteriaFields::default()
            })
            .unwrap(),
            ..RangeOptions::default()
        };
        let mut seen = Vec::new();
        let report = replay_range(&mut executor, ReadCursor::start(), &options, |result| {
            seen.extend(result.outcomes().iter().map(|o| o.record().append_sequence));
        })
        .unwrap();
        assert_eq!(seen, [1, 3]);
        assert_eq!(report.cursor.last_consumed_sequence(), 3);
    }

    /// A handler that runs `prune` on its first call (a prune that ignores the replay's
    /// checkpoint, run while the replay is behind), then handles every record.
    struct PruneOnFirstCall {
        prune: Option<Box<dyn FnOnce() + Send>>,
        seen: std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    }

    impl esl_replay::replay::Handler for PruneOnFirstCall {
        fn name(&self) -> &str {
            "prune-on-first-call"
        }

        fn handle(
            &mut self,
            record: &esl_replay::record::Record,
        ) -> Result<esl_replay::replay::HandlerResult, esl_replay::replay::BoxError> {
            if let Some(prune) = self.prune.take() {
                prune();
            }
            self.seen.lock().unwrap().push(record.append_sequence());
            Ok(esl_replay::replay::HandlerResult::new(
                "handled",
                JsonMap::new(),
            )?)
        }
    }

    /// Records pruned while the range runs (between two batches) are not skipped: the
    /// range stops naming the sequence it needs and the first retained one, with its
    /// checkpoint after the batch it finished, as a resume past them is refused.
    #[test]
    fn records_pruned_while_the_range_runs_are_refused_not_skipped() {
        use esl_replay::retention::{self, PrunePolicy};
        use esl_replay::store::{LogStore, dataset};

        for with_checkpoint in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("store");
            let mut writer = crate::support::process::open_store(&root).unwrap();
            writer
                .write_batch((0..100).map(dataset::envelope).collect())
                .unwrap();
            writer.sync().unwrap();
            let reader = LogStore::open_read_only(&root).unwrap();
            let keep_40 = PrunePolicy {
                max_record_age: None,
                max_stream_bytes: Some(1),
                protected_record_count: 40,
            };
            let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let mut handlers = HandlerRegistry::new();
            handlers.set_fallback(Box::new(PruneOnFirstCall {
                prune: Some(Box::new(move || {
                    let pruned =
                        retention::prune(&writer, &[], &keep_40, OffsetDateTime::now_utc())
                            .unwrap();
                    assert_eq!(pruned.plan.retained_first_sequence, Some(61));
                })),
                seen: std::sync::Arc::clone(&seen),
            }));
            let service = service(dir.path());
            let mut executor =
                Executor::new(batches_of(7, false), &*reader, handlers, None).unwrap();
            let options = RangeOptions {
                checkpoint: with_checkpoint.then_some(&service),
                ..RangeOptions::default()
            };
            let error =
                replay_range(&mut executor, ReadCursor::start(), &options, |_| {}).unwrap_err();
            if with_checkpoint {
                assert!(
                    matches!(
                        error,
                        Error::Checkpoint(esl_replay::checkpoint::Error::Incompatible {
                            required_next: 8,
                            first_retained: 61,
                            ..
                        })
                    ),
                    "{error:?}"
                );
                let saved = service.load().unwrap().unwrap();
                assert_eq!(saved.cursor().last_consumed_sequence(), 7);
            } else {
                assert!(
                    matches!(
                        error,
                        Error::PrunedWhileReplaying {
                            required_next: 8,
                            first_retained: 61,
                        }
                    ),
                    "{error:?}"
                );
            }
            assert_eq!(*seen.lock().unwrap(), (1..=7).collect::<Vec<_>>());
        }
    }

    /// A run that would save its checkpoint behind the one on disk (another run of the key
    /// got further) refuses rather than move it back.
    #[test]
    fn a_checkpoint_is_never_saved_behind_the_one_on_disk() {
        let (dir, store) = log_store(&["event.raw"; 6]);
        let service = service(dir.path());
        service
            .save(ReadCursor::new(5, None), JsonMap::new())
            .unwrap();
        let mut executor =
            Executor::new(batches_of(2, false), &store, HandlerRegistry::new(), None).unwrap();
        let options = RangeOptions {
            checkpoint: Some(&service),
            ..RangeOptions::default()
        };
        let error = replay_range(&mut executor, ReadCursor::start(), &options, |_| {}).unwrap_err();
        assert!(
            matches!(
                error,
                Error::Checkpoint(esl_replay::checkpoint::Error::WouldGoBack {
                    on_disk: 5,
                    saving: 2,
                    ..
                })
            ),
            "{error:?}"
        );
        assert_eq!(
            service
                .load()
                .unwrap()
                .unwrap()
                .cursor()
                .last_consumed_sequence(),
            5
        );
    }

    /// A handler that sets the stop flag while handling its `at`-th record.
    struct StopAt {
        at: u64,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl esl_replay::replay::Handler for StopAt {
        fn name(&self) -> &str {
            "stop-at"
        }

        fn handle(
            &mut self,
            record: &esl_replay::record::Record,
        ) -> Result<esl_replay::replay::HandlerResult, esl_replay::replay::BoxError> {
            if record.append_sequence() == self.at {
                self.stop.store(true, std::sync::atomic::Ordering::Release);
            }
            Ok(esl_replay::replay::HandlerResult::new(
                "handled",
                JsonMap::new(),
            )?)
        }
    }

    /// A stop is not success: the batch and the range say so, and count the records not
    /// reached. With `save_every_record` the checkpoint is at the last record handled.
    #[test]
    fn a_stopped_range_is_not_a_success_and_counts_what_it_did_not_reach() {
        let (dir, store) = log_store(&["event.raw"; 6]);
        let service = service(dir.path());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut handlers = HandlerRegistry::new();
        handlers.set_fallback(Box::new(StopAt {
            at: 2,
            stop: std::sync::Arc::clone(&stop),
        }));
        let mut executor = Executor::new(batches_of(4, false), &store, handlers, None)
            .unwrap()
            .stop_when(stop);
        let options = RangeOptions {
            checkpoint: Some(&service),
            save_every_record: true,
            ..RangeOptions::default()
        };
        let mut batch_success = Vec::new();
        let report = replay_range(&mut executor, ReadCursor::start(), &options, |result| {
            batch_success.push(result.success());
        })
        .unwrap();
        assert_eq!(batch_success, [false]);
        assert!(report.stopped);
        assert!(!report.success());
        assert_eq!(report.error, None);
        assert_eq!(report.processed, 2);
        assert_eq!(report.not_reached, 2);
        assert_eq!(report.checkpoints_saved, 2);
        assert_eq!(
            service
                .load()
                .unwrap()
                .unwrap()
                .cursor()
                .last_consumed_sequence(),
            2
        );
    }

    #[test]
    fn until_before_the_cursor_is_an_error() {
        let (_dir, store) = log_store(&["event.raw"; 3]);
        let mut executor = Executor::new(
            ExecutionConfig::default(),
            &store,
            HandlerRegistry::new(),
            None,
        )
        .unwrap();
        let options = RangeOptions {
            until: Some(1),
            ..RangeOptions::default()
        };
        assert!(matches!(
            replay_range(&mut executor, ReadCursor::new(2, None), &options, |_| {}),
            Err(Error::UntilBeforeStart { from: 2, until: 1 })
        ));
    }
}

/// A batch of large records is cut short by the plan's payload budget (8 MiB past its
/// first record), not read whole: the next plan goes on after it, and every record is
/// planned once, in order.
#[test]
fn a_plan_of_large_records_stops_at_its_payload_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = crate::support::process::open_store(dir.path()).unwrap();
    let large = "x".repeat(3 << 20);
    for n in 0..5 {
        store
            .write(
                crate::support::record::fixture_envelope().with_payload(crate::support::map(
                    serde_json::json!({"n": n, "body": large}),
                )),
            )
            .unwrap();
    }
    let executor = Executor::new(
        config(ExecutionSettings::default()),
        &store,
        HandlerRegistry::new(),
        None,
    )
    .unwrap();
    let first = executor.plan(&ReadCursor::start()).unwrap();
    assert_eq!(sequences(&first), [1, 2, 3]);
    let second = executor.plan(&ReadCursor::new(3, None)).unwrap();
    assert_eq!(sequences(&second), [4, 5]);
}
