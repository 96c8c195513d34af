//! The ESL injector: stored `api.dispatch` / `bgapi.dispatch` records re-sent by the replay
//! executor (and `replay run --reinject-to`) to a live event socket, here the built-in
//! simulator and a `serve`d store, whose replies prove the commands arrived.

use std::sync::Arc;
use std::time::Duration;

use esl_replay::capture::{
    Capture, CaptureOptions, EslInjector, GatewayCommand, INJECTED, InjectorConfig, NodeConfig,
    NodeSpec, Password,
};
use esl_replay::record::ReadCursor;
use esl_replay::replay::{ExecutionConfig, ExecutionSettings, Executor, HandlerRegistry, Outcome};
use esl_replay::server::{self, ServerConfig, Simulator, SimulatorConfig, StoreReplay};
use esl_replay::store;
use serde_json::Value;

use crate::support::cli;
use crate::support::process::SpawnSafely as _;
use crate::support::server::{
    captured_at, dispatch_envelope, event_envelope, fixture_frame, refusing_address,
    reply_envelope, write_store,
};

const HOSTNAME: &str = "fs-inject-target";

/// A runtime in the background serving a simulator; the tests run the executor on their
/// own thread, outside any runtime, as the CLI does.
fn simulator(password: &str) -> (tokio::runtime::Runtime, server::RunningServer) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let running = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = SimulatorConfig {
            rate: Some(50.0),
            hostname: HOSTNAME.into(),
            ..SimulatorConfig::default()
        };
        Simulator::start(listener, ServerConfig::new(password), config).unwrap()
    });
    (runtime, running)
}

fn reinjection(allowlist: &[&str]) -> ExecutionConfig {
    ExecutionConfig::new(ExecutionSettings {
        dry_run: false,
        reinjection_enabled: true,
        reinjection_allowlist: allowlist.iter().map(|s| (*s).to_owned()).collect(),
        batch_limit: 100,
    })
    .unwrap()
}

fn metadata_str<'a>(outcome: &'a Outcome, key: &str) -> &'a str {
    match outcome {
        Outcome::Injected { metadata, .. } => metadata[key].as_str().unwrap_or_default(),
        other => panic!("not injected: {other:?}"),
    }
}

#[test]
fn allowlisted_dispatches_reach_the_simulator_and_their_replies_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut bgapi = dispatch_envelope("bgapi.dispatch", "bgapi status", captured_at(3));
    bgapi.job_uuid = Some("0b6d0c36-0000-4000-8000-000000000001".into());
    write_store(
        dir.path(),
        vec![
            dispatch_envelope("api.dispatch", "api echo marker-7f3a", captured_at(0)),
            event_envelope(
                &fixture_frame("09-event-plain-channel-create.esl"),
                captured_at(1),
            ),
            dispatch_envelope("api.dispatch", "api status", captured_at(2)),
            bgapi,
            dispatch_envelope("api.dispatch", "api hostname", captured_at(4)),
        ],
    );
    let (_runtime, running) = simulator("inject-pw");
    let mut config = InjectorConfig::new(running.local_addr().to_string());
    config.password = Password::new("inject-pw");
    let injector = EslInjector::new(config).unwrap();

    let store = store::open_read_only(dir.path(), None).unwrap();
    let mut executor = Executor::new(
        reinjection(&["api.dispatch", "bgapi.dispatch"]),
        store.as_ref(),
        HandlerRegistry::new(),
        Some(Box::new(injector)),
    )
    .unwrap();
    let plan = executor.plan(&ReadCursor::start()).unwrap();
    let result = executor.execute(plan);
    assert!(result.success(), "{:?}", result.error());
    // Rejected records are reported but not processed.
    assert_eq!(result.processed_count(), 4);
    let outcomes = result.outcomes();
    let actions: Vec<&str> = outcomes.iter().map(Outcome::action).collect();
    assert_eq!(
        actions,
        [
            INJECTED,
            "reinjection_rejected",
            INJECTED,
            INJECTED,
            INJECTED
        ]
    );
    // The simulator echoes the exact arguments and tells its configured hostname.
    assert_eq!(metadata_str(&outcomes[0], "reply_text"), "marker-7f3a");
    assert_eq!(
        metadata_str(&outcomes[0], "command_line"),
        "api echo marker-7f3a"
    );
    assert!(
        metadata_str(&outcomes[2], "reply_text").starts_with("UP 0 years"),
        "{:?}",
        outcomes[2]
    );
    assert_eq!(metadata_str(&outcomes[4], "reply_text"), HOSTNAME);
    assert_eq!(metadata_str(&outcomes[4], "reply_status"), "other");
    // bgapi: acknowledged with a fresh Job-UUID of ours, the recorded one kept apart.
    assert_eq!(metadata_str(&outcomes[3], "command_type"), "bgapi");
    assert_eq!(metadata_str(&outcomes[3], "reply_status"), "ok");
    let job = metadata_str(&outcomes[3], "job_uuid");
    assert!(uuid::Uuid::parse_str(job).is_ok(), "{job}");
    assert!(
        metadata_str(&outcomes[3], "reply_text").contains(job),
        "{:?}",
        outcomes[3]
    );
    assert_eq!(
        metadata_str(&outcomes[3], "original_job_uuid"),
        "0b6d0c36-0000-4000-8000-000000000001"
    );
    // All four commands travelled over one connection.
    assert_eq!(running.figures().connections, 1);
}

#[test]
fn a_wrong_password_or_a_dead_target_fails_the_replay_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_store(
        dir.path(),
        vec![dispatch_envelope(
            "api.dispatch",
            "api status",
            captured_at(0),
        )],
    );
    let store = store::open_read_only(dir.path(), None).unwrap();
    let (runtime, running) = simulator("right");
    let mut config = InjectorConfig::new(running.local_addr().to_string());
    config.password = Password::new("wrong");
    config.timeout = Duration::from_secs(3);
    let mut executor = Executor::new(
        reinjection(&["api.dispatch"]),
        store.as_ref(),
        HandlerRegistry::new(),
        Some(Box::new(EslInjector::new(config).unwrap())),
    )
    .unwrap();
    let result = executor.execute(executor.plan(&ReadCursor::start()).unwrap());
    assert!(!result.success());
    assert_eq!(result.processed_count(), 0);
    let error = result.error().unwrap();
    assert!(error.contains("re-injecting record 1"), "{error}");
    assert!(error.contains("auth rejected"), "{error}");

    // A target that refuses the connection.
    runtime.block_on(running.abort());
    let (_reserved, address) = refusing_address();
    let mut config = InjectorConfig::new(address.to_string());
    config.timeout = Duration::from_secs(3);
    let mut executor = Executor::new(
        reinjection(&["api.dispatch"]),
        store.as_ref(),
        HandlerRegistry::new(),
        Some(Box::new(EslInjector::new(config).unwrap())),
    )
    .unwrap();
    let result = executor.execute(executor.plan(&ReadCursor::start()).unwrap());
    let error = result.error().unwrap();
    assert!(error.contains(&format!("connect to {address}")), "{error}");
}

#[test]
fn a_record_whose_line_does_not_match_its_artifact_is_rejected_unsent() {
    let dir = tempfile::tempdir().unwrap();
    write_store(
        dir.path(),
        vec![dispatch_envelope(
            "api.dispatch",
            "bgapi status",
            captured_at(0),
        )],
    );
    let store = store::open_read_only(dir.path(), None).unwrap();
    // The target is never contacted: the record is refused before connecting.
    let mut executor = Executor::new(
        reinjection(&["api.dispatch"]),
        store.as_ref(),
        HandlerRegistry::new(),
        Some(Box::new(
            EslInjector::new(InjectorConfig::new("127.0.0.1:9")).unwrap(),
        )),
    )
    .unwrap();
    // Rejected with the injector's reason, as the dry-run reports it, not failed on.
    let result = executor.execute(executor.plan(&ReadCursor::start()).unwrap());
    assert!(result.success(), "{:?}", result.error());
    assert_eq!(result.skipped_count(), 1);
    match &result.outcomes()[0] {
        Outcome::ReinjectionRejected { reason, .. } => assert!(
            reason.starts_with("record cannot be sent:")
                && reason.contains("not a `api <command>` line"),
            "unexpected reason: {reason}"
        ),
        other => panic!("not rejected: {other:?}"),
    }
}

/// `replay run --reinject-to` against `serve` of a recording: the served store answers
/// from its recorded replies, so what comes back is exactly what was recorded.
#[test]
fn the_cli_reinjects_into_a_served_store_and_gets_the_recorded_replies() {
    let recorded = tempfile::tempdir().unwrap();
    let version_reply = fixture_frame("06-api-response-version.esl");
    write_store(
        recorded.path(),
        vec![
            event_envelope(
                &fixture_frame("12-event-plain-heartbeat.esl"),
                captured_at(0),
            ),
            dispatch_envelope("api.dispatch", "api version", captured_at(1)),
            reply_envelope("api.reply", &version_reply, captured_at(2)),
            dispatch_envelope("api.dispatch", "api sofia status", captured_at(3)),
            // Ten seconds later, so the paced stream outlasts the re-injection.
            event_envelope(
                &fixture_frame("12-event-plain-heartbeat.esl"),
                captured_at(10_000),
            ),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let running = runtime.block_on(async {
        let replay = StoreReplay::load(
            store::open_read_only(recorded.path(), None).unwrap(),
            server::ReplayOptions {
                speed: Some(1.0),
                looping: true,
                ..server::ReplayOptions::default()
            },
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        server::spawn(listener, ServerConfig::new("served-pw"), Arc::new(replay)).unwrap()
    });
    let password_file = recorded.path().join("password");
    std::fs::write(&password_file, "served-pw\n").unwrap();
    let output = cli::command()
        .args(["replay", "run", "--store"])
        .arg(recorded.path())
        .args(["--execute", "--reinject", "--allowlist", "api.dispatch"])
        .args(["--reinject-to", &running.local_addr().to_string()])
        .arg("--password-file")
        .arg(&password_file)
        .args(["--format", "ndjson"])
        .output_safely()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outcomes = lines[0]["result"]["outcomes"].as_array().unwrap();
    let actions: Vec<&str> = outcomes
        .iter()
        .map(|o| o["action"].as_str().unwrap())
        .collect();
    let rejected = "reinjection_rejected";
    assert_eq!(actions, [rejected, INJECTED, rejected, INJECTED, rejected]);
    // The recorded body comes back for the recorded command, FreeSWITCH's unknown-command
    // answer for the one never answered in the recording.
    assert_eq!(
        outcomes[1]["metadata"]["reply_text"].as_str().unwrap(),
        String::from_utf8_lossy(version_reply.body())
    );
    assert!(
        outcomes[3]["metadata"]["reply_text"]
            .as_str()
            .unwrap()
            .starts_with("-ERR sofia Command not found"),
        "{}",
        outcomes[3]
    );
    assert_eq!(outcomes[3]["metadata"]["reply_status"], "err");
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["processed"], 2);
    assert_eq!(summary["success"], true);
    runtime.block_on(running.abort());
}

#[test]
fn the_cli_refuses_execute_reinject_without_a_target() {
    let dir = tempfile::tempdir().unwrap();
    write_store(
        dir.path(),
        vec![dispatch_envelope(
            "api.dispatch",
            "api status",
            captured_at(0),
        )],
    );
    let output = cli::command()
        .args(["replay", "run", "--store"])
        .arg(dir.path())
        .args(["--execute", "--reinject", "--allowlist", "api.dispatch"])
        .output_safely()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--reinject-to HOST:PORT"), "{stderr}");
}

/// The whole loop: commands dispatched through a capture's gateway are stored by the
/// capture, and re-injecting that store sends the same commands to a second switch.
#[test]
fn commands_captured_through_the_gateway_are_reinjected_as_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    let (runtime, source) = simulator("ClueCon");
    runtime.block_on(async {
        let store = store::open(&store_dir, None).unwrap();
        let capture = Capture::start(
            vec![NodeSpec {
                slug: "pbx-a".into(),
                config: NodeConfig::new(source.local_addr().to_string()),
            }],
            store,
            CaptureOptions::default(),
        )
        .unwrap();
        let telemetry = capture.telemetry();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while telemetry
            .health()
            .get("pbx-a")
            .is_none_or(|h| h.connection != "ready")
        {
            assert!(std::time::Instant::now() < deadline, "capture never ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let gateway = capture.gateway();
        let echo = gateway
            .dispatch(None, GatewayCommand::Api("echo captured-91c2".into()))
            .await
            .unwrap();
        assert_eq!(echo.body, "captured-91c2");
        gateway
            .dispatch(None, GatewayCommand::BgApi("hostname".into()))
            .await
            .unwrap();
        capture.shutdown().await.unwrap();
    });

    let (_target_runtime, target) = simulator("ClueCon");
    let store = store::open_read_only(&store_dir, None).unwrap();
    let mut executor = Executor::new(
        reinjection(&["api.dispatch", "bgapi.dispatch"]),
        store.as_ref(),
        HandlerRegistry::new(),
        Some(Box::new(
            EslInjector::new(InjectorConfig::new(target.local_addr().to_string())).unwrap(),
        )),
    )
    .unwrap();
    let plan = executor.plan(&ReadCursor::start()).unwrap();
    let result = executor.execute(plan);
    assert!(result.success(), "{:?}", result.error());
    let injected: Vec<&Outcome> = result
        .outcomes()
        .iter()
        .filter(|o| o.action() == INJECTED)
        .collect();
    assert_eq!(injected.len(), 2, "{:?}", result.outcomes());
    assert_eq!(
        metadata_str(injected[0], "command_line"),
        "api echo captured-91c2"
    );
    assert_eq!(metadata_str(injected[0], "reply_text"), "captured-91c2");
    assert_eq!(metadata_str(injected[1], "command_line"), "bgapi hostname");
    assert_eq!(metadata_str(injected[1], "reply_status"), "ok");
    assert_eq!(target.figures().connections, 1);
    runtime.block_on(source.abort());
}
