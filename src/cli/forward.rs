//! `forward redis` and `forward nats`: ship a store's records to Redis Streams or NATS with
//! checkpointed, resumable delivery.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use tokio::sync::watch;

use super::Outcome;
use super::store::{CriteriaArgs, StoreArg, progress};
use crate::checkpoint::CheckpointService;
use crate::checkpoint::CheckpointStore;
use crate::forward::{
    self, ForwardOptions, MessageFormat, Metrics, NatsMode, NatsOptions, NatsSink, RedisOptions,
    RedisSink, Sink, Source, Stopped, Trim,
};
use crate::record::JsonMap;

#[derive(Debug, Subcommand)]
pub(crate) enum ForwardCommand {
    /// Append records to a Redis stream with pipelined XADD (at-least-once).
    Redis(Box<RedisArgs>),
    /// Publish records to NATS: JetStream with acks and dedup (exactly once within the
    /// duplicate window), or core NATS (at-most-once).
    Nats(Box<NatsArgs>),
}

/// Options every target shares.
#[derive(Debug, Args)]
pub(crate) struct CommonArgs {
    #[command(flatten)]
    store: StoreArg,
    /// Directory of checkpoint files; the forwarder resumes after its saved sequence.
    #[arg(long, env = super::CHECKPOINT_DIR_ENV)]
    checkpoint_dir: PathBuf,
    /// Checkpoint key [default: forward.redis.<stream> / forward.nats.<subject>].
    #[arg(long)]
    checkpoint_key: Option<String>,
    /// Keep following the store as records are appended (run as a daemon); without it the
    /// forwarder stops at the store's end as it was at start.
    #[arg(long, short = 'f')]
    follow: bool,
    /// How records are written: `record` (each record as one reference NDJSON line), or
    /// `fs-events-v1` (captured events only, normalised; docs/schemas/fs-events-v1.json).
    #[arg(long, value_enum, default_value_t)]
    message_format: Format,
    /// Records per batch (one acknowledgement round each; the next batch is read while
    /// one is being confirmed).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch_size: u64,
    /// Shortest time between checkpoint saves: acknowledged batches are saved together, and
    /// always when the forwarder stops; a crash re-sends at most about this long of
    /// deliveries plus the batch in flight. 0 saves after every batch.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    checkpoint_interval: Duration,
    /// First retry delay ceiling when the server is unavailable (full jitter below it).
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    retry_initial: Duration,
    /// Largest retry delay ceiling.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    retry_max: Duration,
    /// Serve Prometheus metrics at http://ADDR/metrics and health at /health.
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// How often a progress line is logged (at info level: use -v).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    log_interval: Duration,
    #[command(flatten)]
    criteria: CriteriaArgs,
}

#[derive(Debug, Args)]
pub(crate) struct RedisArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// Redis URL.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    url: String,
    /// Stream key.
    #[arg(long, default_value = "fs:events")]
    stream: String,
    /// Trim the stream to about N entries (XADD MAXLEN ~ N).
    #[arg(long, conflicts_with = "max_age")]
    maxlen: Option<u64>,
    /// Trim entries older than this (XADD MINID ~ now-AGE), e.g. 7d.
    #[arg(long, value_parser = super::input::parse_age)]
    max_age: Option<Duration>,
}

/// `--message-format`: how forwarded records are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// Each record as one reference NDJSON line.
    #[default]
    Record,
    /// Captured events only, normalised (`fs-events-v1`).
    #[value(name = "fs-events-v1")]
    FsEventsV1,
}

impl From<Format> for MessageFormat {
    fn from(format: Format) -> MessageFormat {
        match format {
            Format::Record => MessageFormat::Record,
            Format::FsEventsV1 => MessageFormat::FsEventsV1,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// JetStream publish, every acknowledgement awaited, Nats-Msg-Id = record id.
    #[default]
    Jetstream,
    /// Core NATS publish: no acknowledgement, at-most-once.
    Core,
}

#[derive(Debug, Args)]
pub(crate) struct NatsArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// NATS URL.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Subject every record is published on.
    #[arg(long, default_value = "fs.events")]
    subject: String,
    /// Delivery mode.
    #[arg(long, value_enum, default_value_t)]
    mode: Mode,
    /// JetStream stream that holds the subject (checked before publishing).
    #[arg(long)]
    jetstream_stream: Option<String>,
    /// Create the JetStream stream (file storage, the subject) if it does not exist.
    #[arg(long, requires = "jetstream_stream")]
    create_stream: bool,
    /// Duplicate window of a created stream (how long re-sent records are recognised).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duplicate_window: Duration,
    /// How long a connection, acknowledgement or flush may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub(crate) fn run(command: &ForwardCommand) -> anyhow::Result<Outcome> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            ForwardCommand::Redis(args) => {
                let mut options = RedisOptions::new(&args.url, &args.stream);
                options.trim = match (args.maxlen, args.max_age) {
                    (Some(max), _) => Some(Trim::MaxLen(max)),
                    (None, Some(age)) => Some(Trim::MaxAge(age)),
                    (None, None) => None,
                };
                let sink = RedisSink::new(options).map_err(|e| anyhow::anyhow!("{e}"))?;
                let key = format!("forward.redis.{}", args.stream);
                let destination = format!("{} {}", args.url, args.stream);
                run_sink(&args.common, sink, &key, &destination).await
            }
            ForwardCommand::Nats(args) => {
                let mode = match args.mode {
                    Mode::Jetstream => NatsMode::JetStream {
                        stream: args.jetstream_stream.clone(),
                        create: args.create_stream,
                        duplicate_window: args.duplicate_window,
                    },
                    Mode::Core => {
                        eprintln!(
                            "note: core NATS mode is at-most-once: records are not acknowledged \
                             and are lost if no subscriber or server takes them"
                        );
                        NatsMode::Core
                    }
                };
                let mut options = NatsOptions::new(&args.url, &args.subject, mode);
                options.timeout = args.timeout;
                let key = format!("forward.nats.{}", args.subject);
                let destination = format!("{} {}", args.url, args.subject);
                run_sink(&args.common, NatsSink::new(options), &key, &destination).await
            }
        }
    })
}

async fn run_sink<S: Sink>(
    args: &CommonArgs,
    mut sink: S,
    default_key: &str,
    destination: &str,
) -> anyhow::Result<Outcome> {
    let source = Source::open_read_only(
        &args.store.store,
        args.store.sqlite.then_some(crate::store::Backend::Sqlite),
    )
    .with_context(|| {
        format!(
            "cannot open the store {} for reading",
            args.store.store.display()
        )
    })?;
    let checkpoints = CheckpointStore::open(&args.checkpoint_dir).with_context(|| {
        format!(
            "cannot open the checkpoint directory {}",
            args.checkpoint_dir.display()
        )
    })?;
    let key = args
        .checkpoint_key
        .clone()
        .unwrap_or_else(|| default_key.to_owned());
    let service = CheckpointService::new(checkpoints, key.clone())
        .with_context(|| format!("--checkpoint-key {key:?} cannot name a checkpoint"))?;
    let mut metadata = JsonMap::new();
    metadata.insert("forward_target".into(), sink.target().into());
    metadata.insert("forward_destination".into(), destination.into());
    let options = ForwardOptions {
        criteria: args.criteria.criteria()?,
        batch_size: usize::try_from(args.batch_size).unwrap_or(usize::MAX),
        follow: args.follow,
        retry_initial: args.retry_initial,
        retry_max: args.retry_max,
        log_interval: args.log_interval,
        checkpoint_metadata: metadata,
        checkpoint_interval: args.checkpoint_interval,
        format: args.message_format.into(),
    };

    let metrics = Arc::new(Metrics::new(sink.target()));
    let (stop, shutdown) = watch::channel(false);
    stop_on_signal(stop)?;
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        let served = Arc::clone(&metrics);
        let stopping = shutdown.clone();
        tokio::spawn(async move {
            if let Err(error) = forward::metrics::serve(listener, served, stopping).await {
                tracing::error!(error = %error, "metrics endpoint stopped");
            }
        });
    }
    let bar = progress(None, &format!("forwarding to {}", sink.target()));
    let shown = Arc::clone(&metrics);
    let bar_task = bar.clone();
    let ticker = tokio::spawn(async move {
        loop {
            let snapshot = shown.snapshot();
            bar_task.set_position(snapshot.forwarded);
            bar_task.set_message(format!(
                "acked {} lag {} records {:.1}s retries {}",
                snapshot.acked_sequence,
                snapshot.lag_records,
                snapshot.lag_seconds,
                snapshot.retries
            ));
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let result = forward::forward(&source, &mut sink, &service, &options, &metrics, shutdown).await;
    ticker.abort();
    bar.finish_and_clear();
    let report = result.with_context(|| format!("forwarding to {destination} failed"))?;
    let snapshot = metrics.snapshot();
    println!(
        "forwarded {} records to {destination} (checkpoint {:?} at sequence {}, resumed after {}, {} retries{}{})",
        report.forwarded,
        service.key(),
        report.acked_sequence,
        report.resumed_after,
        report.retries,
        if snapshot.duplicates > 0 {
            format!(", {} already stored", snapshot.duplicates)
        } else {
            String::new()
        },
        match report.stopped {
            Stopped::EndReached => "",
            Stopped::Shutdown => ", stopped by signal",
        }
    );
    Ok(Outcome::Success)
}

/// Turns the first SIGINT or SIGTERM into a graceful stop. The handlers are installed
/// before this returns, so a signal arriving right after start is not fatal.
fn stop_on_signal(stop: watch::Sender<bool>) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("stopping: finishing the batch in flight and keeping its checkpoint");
        let _ = stop.send(true);
    });
    Ok(())
}
