//! `demo`: the whole pipeline on one machine, with no FreeSWITCH needed.
//!
//! The built-in simulator plays a busy FreeSWITCH on 127.0.0.1; a capture node records
//! every frame into a fresh store while the demo sends an `api` and a `bgapi` through the
//! command gateway and drops the simulator's socket halfway (the capture reconnects,
//! restores its subscription and records the gap). Then it prints what was captured, a
//! dry-run replay summary and the evidence verdict of the captured window.
//! `demo storage` is the storage engine's own crash-and-recover demonstration.

mod storage;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use tokio::net::TcpListener;

use super::Outcome;
use esl_replay::capture::{Backoff, Capture, CaptureOptions, GatewayCommand, NodeConfig, NodeSpec};
use esl_replay::evidence::{Engine, ReconstructionWindow, ReconstructionWindowFields};
use esl_replay::record::{Criteria, JsonMap, ReadCursor, Record};
use esl_replay::replay::{
    BoxError, ExecutionConfig, ExecutionSettings, Executor, Handler, HandlerRegistry,
    HandlerResult, RangeOptions, replay_range,
};
use esl_replay::server::{ServerConfig, Simulator, SimulatorConfig};
use esl_replay::store::{self, ArtifactReader, ArtifactStore, Backend};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct DemoArgs {
    #[command(subcommand)]
    command: Option<DemoCommand>,
    /// Directory for the demo store, new or empty (default: a fresh temporary directory,
    /// removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// How long to capture, in seconds.
    #[arg(long, default_value_t = 4.0, value_parser = super::input::parse_non_negative)]
    seconds: f64,
    /// Simulated events per second.
    #[arg(long, default_value_t = 2_000.0, value_parser = super::input::parse_non_negative)]
    rate: f64,
}

#[derive(Debug, Subcommand)]
enum DemoCommand {
    /// Demonstrate the storage engine: append, crash, recover, read back, truncate.
    Storage(storage::StorageArgs),
}

pub(crate) fn run(args: &DemoArgs) -> anyhow::Result<Outcome> {
    if let Some(DemoCommand::Storage(storage)) = &args.command {
        return storage::run(storage);
    }
    if !(args.seconds > 0.0 && args.seconds <= 3600.0) {
        bail!("--seconds must be more than 0 and at most 3600");
    }
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be a positive number of events per second");
    }
    let (dir, temporary) = match &args.dir {
        Some(dir) => (
            super::input::new_or_empty(dir, "the demo writes its own store there")?,
            false,
        ),
        None => (
            std::env::temp_dir().join(format!("esl-replay-demo-{}", std::process::id())),
            true,
        ),
    };
    let result = pipeline(&dir, args);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn pipeline(dir: &Path, args: &DemoArgs) -> anyhow::Result<Outcome> {
    let store_dir = dir.join("store");
    let mut out = std::io::stdout().lock();
    writeln!(out, "esl-replay demo: store {}", store_dir.display())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let started = Instant::now();
    let store = runtime.block_on(capture_phase(&store_dir, args, &mut out))?;
    let captured_for = started.elapsed();
    drop(runtime);

    // What was captured, read back in batches.
    let summary = summarize(store.as_ref())?;
    writeln!(
        out,
        "\n2. captured {} records in {:.1} s",
        summary.records,
        captured_for.as_secs_f64()
    )?;
    for (name, count) in &summary.by_name {
        writeln!(out, "   {count:>7}  {name}")?;
    }
    let events: Vec<String> = summary
        .events
        .iter()
        .map(|(n, c)| format!("{n} {c}"))
        .collect();
    writeln!(out, "   events: {}", events.join(", "))?;
    for gap in &summary.gaps {
        writeln!(out, "   {gap}")?;
    }

    // A dry-run replay of everything: nothing is invoked.
    let mut handlers = HandlerRegistry::new();
    handlers
        .register("event.raw", Box::new(CountEvents))
        .context("register the demo handler")?;
    let config = ExecutionConfig::new(ExecutionSettings::default())?;
    let mut executor = Executor::new(config, store.as_ref(), handlers, None)?;
    let mut would_handle = 0u64;
    let report = replay_range(
        &mut executor,
        ReadCursor::start(),
        &RangeOptions {
            criteria: Criteria::any(),
            until: None,
            checkpoint: None,
            checkpoint_metadata: JsonMap::new(),
            save_every_record: false,
        },
        |result| {
            would_handle += result
                .outcomes()
                .iter()
                .filter(|o| o.handler().is_some())
                .count() as u64;
        },
    )?;
    let dispatches = summary.by_name.get("api.dispatch").copied().unwrap_or(0)
        + summary.by_name.get("bgapi.dispatch").copied().unwrap_or(0);
    writeln!(
        out,
        "\n3. dry-run replay: {} records in {} batches, {} skipped, {} processed; the handler \
         would run for {would_handle} event.raw records; {dispatches} api/bgapi dispatches \
         could be re-injected once allowlisted (`replay run --reinject`)",
        report.records, report.batches, report.skipped, report.processed
    )?;

    // Evidence over the captured window.
    let window = ReconstructionWindow::new(ReconstructionWindowFields {
        from: ReadCursor::start(),
        until_append_sequence: None,
        criteria: None,
        batch_limit: 500,
        checkpoint_key: None,
        checkpoint_metadata: JsonMap::new(),
    })?;
    let bundle = Engine::new().reconstruct(store.as_ref(), &window)?;
    let manifest = &bundle.manifest;
    let mut codes: BTreeMap<&str, u64> = BTreeMap::new();
    for issue in &manifest.verdict.issues {
        *codes.entry(issue.code.as_str()).or_default() += 1;
    }
    let codes: Vec<String> = codes.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
    writeln!(
        out,
        "\n4. evidence: verdict {} over {} records; {} operations, {} recovery generations; \
         issues: {}\n   bundle {}",
        manifest.verdict.posture.as_str(),
        manifest.record_count,
        bundle.operations.len(),
        bundle.continuity_snapshot.recovery_generations.len(),
        if codes.is_empty() {
            "none".to_owned()
        } else {
            codes.join(", ")
        },
        manifest.bundle_id
    )?;
    writeln!(
        out,
        "\nNext: `esl-replay stats --store DIR`, `esl-replay replay run --store DIR`, \
         `esl-replay evidence reconstruct --store DIR --format text` (keep the store with --dir)."
    )?;
    Ok(Outcome::Success)
}

/// Runs the simulator and the capture, and returns the store once the capture has
/// flushed and synced it.
async fn capture_phase(
    store_dir: &Path,
    args: &DemoArgs,
    out: &mut impl std::io::Write,
) -> anyhow::Result<Box<dyn ArtifactStore>> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind the simulator")?;
    let address = listener.local_addr()?;
    let simulator = Arc::new(Simulator::new(SimulatorConfig {
        rate: Some(args.rate),
        heartbeat_interval: Duration::from_secs(1),
        ..SimulatorConfig::default()
    })?);
    let server = simulator.serve(listener, ServerConfig::default())?;
    writeln!(
        out,
        "1. simulator on {address} ({} events/s, Core-UUID {}); capturing for {} s",
        args.rate,
        simulator.core_uuid(),
        args.seconds
    )?;

    let store = store::open(store_dir, Some(Backend::Log)).context("open the demo store")?;
    let mut node = NodeConfig::new(address.to_string());
    node.backoff = Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    };
    let capture = Capture::start(
        vec![NodeSpec {
            slug: "demo-pbx".into(),
            config: node,
        }],
        store,
        CaptureOptions::default(),
    )?;
    let half = Duration::from_secs_f64(args.seconds / 2.0);
    tokio::time::sleep(half / 2).await;

    let gateway = capture.gateway();
    for command in [
        GatewayCommand::Api("status".into()),
        GatewayCommand::BgApi("status".into()),
    ] {
        let label = match &command {
            GatewayCommand::Api(text) => format!("api {text}"),
            GatewayCommand::BgApi(text) => format!("bgapi {text}"),
        };
        match gateway.dispatch(None, command).await {
            Ok(reply) => {
                let answer = match &reply.job_uuid {
                    Some(_) => reply.reply_text.clone(),
                    None => format!("{} bytes of api/response", reply.body.len()),
                };
                writeln!(
                    out,
                    "   gateway `{label}` through the capture connection: {answer}"
                )?;
            }
            Err(error) => writeln!(out, "   gateway `{label}` failed: {error}")?,
        }
    }
    tokio::time::sleep(half / 2).await;

    // The socket drops (as when FreeSWITCH kills a slow listener); the switch keeps its
    // Core-UUID and sequence numbering, and listens again shortly after.
    let (core_uuid, next_sequence) = (simulator.core_uuid().to_owned(), simulator.next_sequence());
    server.abort().await;
    writeln!(
        out,
        "   dropped the simulator's sockets without a disconnect notice (as when FreeSWITCH \
         kills a slow listener)"
    )?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let listener = TcpListener::bind(address)
        .await
        .context("rebind the simulator")?;
    let server = Simulator::start(
        listener,
        ServerConfig::default(),
        SimulatorConfig {
            rate: Some(args.rate),
            heartbeat_interval: Duration::from_secs(1),
            core_uuid: Some(core_uuid),
            first_sequence: next_sequence,
            ..SimulatorConfig::default()
        },
    )?;
    tokio::time::sleep(half).await;

    let (store, _exits) = capture.shutdown().await.context("stop the capture")?;
    server.shutdown().await;
    Ok(store)
}

/// Counts of what a store holds, and a line per gap marker.
#[derive(Debug, Default)]
struct Summary {
    records: u64,
    by_name: BTreeMap<String, u64>,
    events: BTreeMap<String, u64>,
    gaps: Vec<String>,
}

fn summarize(store: &dyn ArtifactReader) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut cursor = ReadCursor::start();
    let any = Criteria::any();
    loop {
        let batch = store.read_from_cursor(&cursor, 1000, &any)?;
        let Some(last) = batch.last() else {
            return Ok(summary);
        };
        cursor = cursor.advance(last.append_sequence(), None)?;
        for record in &batch {
            summary.records += 1;
            let name = record.artifact_name();
            *summary.by_name.entry(name.to_owned()).or_default() += 1;
            match name {
                "event.raw" => {
                    let event = record.event_name().unwrap_or("?").to_owned();
                    *summary.events.entry(event).or_default() += 1;
                }
                "capture.gap" => summary.gaps.push(gap_line(record)),
                _ => {}
            }
        }
    }
}

/// `gap at #SEQ: KIND after Event-Sequence N, down D µs`, from a `capture.gap` record.
fn gap_line(gap: &Record) -> String {
    let details = gap.payload().get("gap");
    let text = |value: Option<&serde_json::Value>| match value {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "?".to_owned(),
    };
    let field = |name: &str| text(details.and_then(|d| d.get(name)));
    let last_seen = text(
        details
            .and_then(|d| d.get("last_seen"))
            .and_then(|l| l.get("event_sequence")),
    );
    format!(
        "gap at #{}: {} after Event-Sequence {last_seen}, down {} µs",
        gap.append_sequence(),
        field("kind"),
        field("down_micros"),
    )
}

/// The demo's handler for `event.raw`: it would count events (dry-run never calls it).
struct CountEvents;

impl Handler for CountEvents {
    fn name(&self) -> &str {
        "count-events"
    }

    fn handle(&mut self, _record: &Record) -> Result<HandlerResult, BoxError> {
        Ok(HandlerResult::new("counted", JsonMap::new())?)
    }
}
