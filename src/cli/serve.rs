//! The ESL server commands: `serve` (replay a store to ESL clients) and `simulate`
//! (a built-in FreeSWITCH simulator).
//!
//! Both listen like FreeSWITCH's `mod_event_socket` and expect the password from the
//! `ESL_PASSWORD` environment variable or `--password-file`, defaulting to `ClueCon`. The
//! password is never taken from the command line and never logged. Both run until Ctrl-C
//! (or SIGTERM), then send every client FreeSWITCH's shutdown notice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use super::Outcome;
use super::store::StoreArg;
use esl_replay::checkpoint::{CheckpointService, CheckpointStore, CompatibilityValidator};
use esl_replay::server::{
    self, DEFAULT_PASSWORD, ReplayOptions, ServerConfig, Simulator, SimulatorConfig, StoreReplay,
};

/// Where the expected ESL password comes from.
#[derive(Debug, Args)]
pub(crate) struct PasswordArg {
    /// Read the expected `auth` password from this file (first line). Otherwise the
    /// `ESL_PASSWORD` environment variable, otherwise FreeSWITCH's default `ClueCon`.
    #[arg(long)]
    password_file: Option<PathBuf>,
}

impl PasswordArg {
    fn load(&self) -> anyhow::Result<String> {
        if let Some(path) = &self.password_file {
            return super::input::read_password_file(path);
        }
        match std::env::var("ESL_PASSWORD") {
            Ok(password) if !password.is_empty() => Ok(password),
            _ => Ok(DEFAULT_PASSWORD.to_owned()),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8021")]
    listen: SocketAddr,
    /// Pace events by their original times divided by this factor (2 = twice as fast).
    #[arg(long, default_value_t = 1.0, conflicts_with = "as_fast_as_possible",
          value_parser = super::input::parse_speed)]
    speed: f64,
    /// Send events as fast as the client reads them, ignoring their original times.
    #[arg(long)]
    as_fast_as_possible: bool,
    /// Start over at the end instead of sending the disconnect notice.
    #[arg(long = "loop")]
    looping: bool,
    /// First append sequence to serve.
    #[arg(long, default_value_t = 1)]
    from_seq: u64,
    /// Save serving progress in this checkpoint directory and resume from it.
    #[arg(long, env = super::CHECKPOINT_DIR_ENV)]
    checkpoint_dir: Option<PathBuf>,
    /// The checkpoint key serving progress is saved under.
    #[arg(long, default_value = "esl-replay-serve", requires = "checkpoint_dir")]
    checkpoint_key: String,
    #[command(flatten)]
    connections: ConnectionsArg,
    #[command(flatten)]
    password: PasswordArg,
}

/// How many clients are served at once.
#[derive(Debug, Args)]
pub(crate) struct ConnectionsArg {
    /// Serve at most this many connections at once; one more gets a `text/rude-rejection`
    /// frame naming the limit and the disconnect notice, and is closed.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: u32,
}

impl ConnectionsArg {
    fn config(&self, password: String) -> ServerConfig {
        let max = usize::try_from(self.max_connections).unwrap_or(usize::MAX);
        ServerConfig::new(password).with_max_connections(max)
    }
}

#[derive(Debug, Args)]
pub(crate) struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8021")]
    listen: SocketAddr,
    /// Events per second per connected listener (0 = as fast as the client reads).
    #[arg(long, default_value_t = 100.0, value_parser = super::input::parse_non_negative)]
    rate: f64,
    /// Stop after this long (e.g. 30s, 5m), sending the shutdown notice.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// End each listener's stream after this many events (then the disconnect notice).
    #[arg(long)]
    max_events: Option<u64>,
    /// Interval between HEARTBEAT events.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    heartbeat_interval: Duration,
    /// The FreeSWITCH hostname the events report.
    #[arg(long, default_value = "fs-sim")]
    hostname: String,
    #[command(flatten)]
    connections: ConnectionsArg,
    #[command(flatten)]
    password: PasswordArg,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// Waits for Ctrl-C or SIGTERM.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub(crate) fn serve(args: &ServeArgs) -> anyhow::Result<Outcome> {
    let password = args.password.load()?;
    let checkpoint = match &args.checkpoint_dir {
        Some(dir) => {
            super::checkpoint::not_a_file(dir)?;
            let store = CheckpointStore::open(dir.clone()).with_context(|| {
                format!("cannot open the checkpoint directory {}", dir.display())
            })?;
            Some(CheckpointService::new(store, args.checkpoint_key.clone())?)
        }
        None => None,
    };
    let store = args.store.open_read()?;
    // Resuming past pruned records, or from beyond the store's end (a checkpoint of another
    // store), would serve records unseen or nothing at all: refused, as replay refuses it.
    if let Some(service) = &checkpoint
        && let Some(saved) = service
            .resume_state()
            .with_context(|| format!("cannot load checkpoint `{}`", service.key()))?
            .checkpoint()
    {
        CompatibilityValidator
            .assert_resumable(&*store, saved)
            .with_context(|| {
                format!("cannot resume serving from checkpoint `{}`", service.key())
            })?;
    }
    let options = ReplayOptions {
        speed: (!args.as_fast_as_possible).then_some(args.speed),
        looping: args.looping,
        from_sequence: args.from_seq.max(1),
        checkpoint,
    };
    let replay = StoreReplay::load(store, options)
        .with_context(|| format!("cannot load {} for serving", args.store.store.display()))?;
    let summary = replay.summary();
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let running = server::spawn(
            listener,
            args.connections.config(password),
            Arc::new(replay),
        )?;
        eprintln!(
            "serving {} events ({} api and {} bgapi commands recorded) from {} on {}; Ctrl-C stops",
            summary.events,
            summary.api_commands,
            summary.bgapi_commands,
            args.store.store.display(),
            running.local_addr()
        );
        if summary.events_without_payload > 0 {
            eprintln!(
                "note: {} event.raw records have no raw payload and are skipped",
                summary.events_without_payload
            );
        }
        stop_signal().await;
        let figures = running.figures();
        running.shutdown().await;
        eprintln!(
            "stopped: {} connections, {} events sent, {} bytes",
            figures.connections, figures.events_sent, figures.bytes_written
        );
        Ok(Outcome::Success)
    })
}

pub(crate) fn simulate(args: &SimulateArgs) -> anyhow::Result<Outcome> {
    let password = args.password.load()?;
    let config = SimulatorConfig {
        rate: (args.rate > 0.0).then_some(args.rate),
        max_events: args.max_events,
        duration: None,
        heartbeat_interval: args.heartbeat_interval,
        hostname: args.hostname.clone(),
        ..SimulatorConfig::default()
    };
    runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let running = Simulator::start(listener, args.connections.config(password), config)?;
        let rate = if args.rate > 0.0 {
            format!("{} events/s per listener", args.rate)
        } else {
            "as fast as clients read".to_owned()
        };
        eprintln!(
            "simulating FreeSWITCH on {} ({rate}); Ctrl-C stops",
            running.local_addr()
        );
        match args.duration {
            Some(duration) => {
                tokio::select! {
                    () = tokio::time::sleep(duration) => {}
                    () = stop_signal() => {}
                }
            }
            None => stop_signal().await,
        }
        let figures = running.figures();
        running.shutdown().await;
        eprintln!(
            "stopped: {} connections, {} events sent, {} bytes",
            figures.connections, figures.events_sent, figures.bytes_written
        );
        Ok(Outcome::Success)
    })
}
