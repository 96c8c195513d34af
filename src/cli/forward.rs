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
use esl_replay::checkpoint::CheckpointService;
use esl_replay::checkpoint::CheckpointStore;
use esl_replay::forward::{
    self, ForwardOptions, MessageFormat, Metrics, NatsMode, NatsOptions, NatsSink, RedisOptions,
    RedisSink, RedisStream, Sink, Source, Stopped, Takes,
};
use esl_replay::record::JsonMap;

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
    /// First retry delay ceiling when the server is unavailable (full jitter below it); at
    /// most `--retry-max`.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    retry_initial: Duration,
    /// Largest retry delay ceiling; at least `--retry-initial`.
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
    /// File holding the Redis password (else the URL's, if any).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Stream key: every record goes here, except what `--jobs-stream` takes.
    #[arg(long, default_value = "fs:events")]
    stream: String,
    /// Only these captured events go to `--stream` (comma separated `Event-Name`s, e.g.
    /// CHANNEL_ANSWER,CHANNEL_HANGUP,DTMF,CUSTOM); without it, every record.
    #[arg(long, value_delimiter = ',')]
    stream_events: Option<Vec<String>>,
    /// Keep `--stream` to about N entries (XADD MAXLEN ~ N).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    maxlen: Option<u64>,
    /// Remove entries of `--stream` older than this, e.g. 10m or 7d (XTRIM MINID ~ every
    /// `--trim-interval`).
    #[arg(long, value_parser = super::input::parse_age)]
    max_age: Option<Duration>,
    /// A second stream for background-job results: the `--jobs-events` go here, not to
    /// `--stream`.
    #[arg(long)]
    jobs_stream: Option<String>,
    /// The captured events `--jobs-stream` takes [default: BACKGROUND_JOB].
    #[arg(long, value_delimiter = ',', requires = "jobs_stream")]
    jobs_events: Option<Vec<String>>,
    /// Keep `--jobs-stream` to about N entries (XADD MAXLEN ~ N).
    #[arg(long, requires = "jobs_stream", value_parser = clap::value_parser!(u64).range(1..))]
    jobs_maxlen: Option<u64>,
    /// Remove entries of `--jobs-stream` older than this (XTRIM MINID ~).
    #[arg(long, requires = "jobs_stream", value_parser = super::input::parse_age)]
    jobs_max_age: Option<Duration>,
    /// How often streams with an age limit are trimmed (and once at start).
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    trim_interval: Duration,
}

/// Parses a duration above zero (`10s`, `500ms`).
pub(crate) fn parse_interval(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(interval) if !interval.is_zero() => Ok(interval),
        Ok(_) => Err("must be longer than zero".into()),
        Err(error) => Err(error.to_string()),
    }
}

/// Parses a NATS subject records can be published on: dot-separated tokens, none empty
/// (no leading, trailing or double dot), without whitespace or the wildcards `*` and `>`
/// (a subscription's, not a publisher's). The server refuses any other, and core NATS
/// would lose every record published on it.
pub(crate) fn parse_subject(text: &str) -> Result<String, String> {
    forward::check_subject(text)?;
    Ok(text.to_owned())
}

/// Refuses a first retry delay above the largest (the backoff would silently use the first
/// for every retry).
pub(crate) fn check_retry(initial: Duration, max: Duration) -> anyhow::Result<()> {
    anyhow::ensure!(
        initial <= max,
        "--retry-initial ({}) is longer than --retry-max ({}): the first retry delay must be at most the largest",
        humantime::format_duration(initial),
        humantime::format_duration(max)
    );
    Ok(())
}

/// The streams a Redis forwarder writes, as `forward redis` flags, the capture's
/// `--forward-*` flags, its `[forward]` table or a compatibility mode give them; a field
/// left `None` takes the next source's value, then the default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RedisLayout {
    pub(crate) password: Option<String>,
    pub(crate) stream: Option<String>,
    pub(crate) stream_events: Option<Vec<String>>,
    pub(crate) maxlen: Option<u64>,
    pub(crate) max_age: Option<Duration>,
    pub(crate) jobs_stream: Option<String>,
    pub(crate) jobs_events: Option<Vec<String>>,
    pub(crate) jobs_maxlen: Option<u64>,
    pub(crate) jobs_max_age: Option<Duration>,
    pub(crate) trim_interval: Option<Duration>,
}

impl RedisLayout {
    /// The stream every record goes to by default.
    pub(crate) const STREAM: &str = "fs:events";
    /// What the jobs stream takes by default: background-job results.
    pub(crate) const JOBS_EVENTS: &str = "BACKGROUND_JOB";
    /// How often streams are trimmed by age by default.
    pub(crate) const TRIM_INTERVAL: Duration = Duration::from_secs(10);

    /// This layout, with `fallback`'s values where this one has none.
    pub(crate) fn or(self, fallback: RedisLayout) -> RedisLayout {
        RedisLayout {
            password: self.password.or(fallback.password),
            stream: self.stream.or(fallback.stream),
            stream_events: self.stream_events.or(fallback.stream_events),
            maxlen: self.maxlen.or(fallback.maxlen),
            max_age: self.max_age.or(fallback.max_age),
            jobs_stream: self.jobs_stream.or(fallback.jobs_stream),
            jobs_events: self.jobs_events.or(fallback.jobs_events),
            jobs_maxlen: self.jobs_maxlen.or(fallback.jobs_maxlen),
            jobs_max_age: self.jobs_max_age.or(fallback.jobs_max_age),
            trim_interval: self.trim_interval.or(fallback.trim_interval),
        }
    }

    /// The events stream's key.
    pub(crate) fn stream(&self) -> &str {
        self.stream.as_deref().unwrap_or(Self::STREAM)
    }

    /// Where records go, for messages and checkpoint metadata (no password).
    pub(crate) fn destination(&self, url: &str) -> String {
        match &self.jobs_stream {
            Some(jobs) => format!("{url} {} (jobs: {jobs})", self.stream()),
            None => format!("{url} {}", self.stream()),
        }
    }

    /// The sink's options: the jobs stream first (it takes its events before the events
    /// stream sees them), then the events stream.
    ///
    /// # Errors
    ///
    /// Jobs settings without a jobs stream, the two streams under one key, an event list
    /// that names no event, a zero length or trim interval.
    pub(crate) fn options(&self, url: &str) -> anyhow::Result<RedisOptions> {
        let mut options = RedisOptions::new(url, self.stream());
        options.password.clone_from(&self.password);
        options.trim_interval = self.trim_interval.unwrap_or(Self::TRIM_INTERVAL);
        anyhow::ensure!(
            !options.trim_interval.is_zero(),
            "the trim interval must be longer than zero"
        );
        let mut events = RedisStream::new(self.stream());
        events.takes = takes("the events stream's", self.stream_events.as_deref())?;
        events.maxlen = positive("the events stream's", self.maxlen)?;
        events.max_age = self.max_age;
        let Some(key) = &self.jobs_stream else {
            anyhow::ensure!(
                self.jobs_events.is_none()
                    && self.jobs_maxlen.is_none()
                    && self.jobs_max_age.is_none(),
                "the jobs stream's events, length and age need a jobs stream"
            );
            options.streams = vec![events];
            return Ok(options);
        };
        anyhow::ensure!(
            key != self.stream(),
            "the jobs stream and the events stream are both {key:?}: name two streams"
        );
        let mut jobs = RedisStream::new(key.as_str());
        let default_jobs = [Self::JOBS_EVENTS.to_owned()];
        jobs.takes = takes(
            "the jobs stream's",
            Some(self.jobs_events.as_deref().unwrap_or(&default_jobs)),
        )?;
        jobs.maxlen = positive("the jobs stream's", self.jobs_maxlen)?;
        jobs.max_age = self.jobs_max_age;
        options.streams = vec![jobs, events];
        Ok(options)
    }
}

/// What a stream takes: every record, or the events a list names (blank names dropped).
fn takes(whose: &str, names: Option<&[String]>) -> anyhow::Result<Takes> {
    let Some(names) = names else {
        return Ok(Takes::Everything);
    };
    let names: Vec<&str> = names
        .iter()
        .map(|name| name.trim())
        .filter(|name| !name.is_empty())
        .collect();
    anyhow::ensure!(
        !names.is_empty(),
        "{whose} event list names no event (leave it out to take every record)"
    );
    Ok(Takes::events(names))
}

/// A maximum length, refusing 0 (which would empty the stream on every append).
fn positive(whose: &str, maxlen: Option<u64>) -> anyhow::Result<Option<u64>> {
    anyhow::ensure!(
        maxlen != Some(0),
        "{whose} maximum length must be at least 1"
    );
    Ok(maxlen)
}

/// Reads a Redis password file (one line; a trailing newline is not part of it).
pub(crate) fn read_redis_password(path: &std::path::Path) -> anyhow::Result<String> {
    let text = super::input::read_text(
        path,
        super::input::MAX_SECRET_BYTES,
        "the Redis password file",
    )?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
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
    /// Subject every record is published on: dot-separated tokens, none empty, without
    /// whitespace or the wildcards `*` and `>`.
    #[arg(long, default_value = "fs.events", value_parser = parse_subject)]
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
    /// How long a connection, acknowledgement or flush may take (longer than zero).
    #[arg(long, default_value = "5s", value_parser = parse_interval)]
    timeout: Duration,
}

pub(crate) fn run(command: &ForwardCommand) -> anyhow::Result<Outcome> {
    let common = match command {
        ForwardCommand::Redis(args) => &args.common,
        ForwardCommand::Nats(args) => &args.common,
    };
    check_retry(common.retry_initial, common.retry_max)?;
    super::checkpoint::not_a_file(&common.checkpoint_dir)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        match command {
            ForwardCommand::Redis(args) => {
                let layout = RedisLayout {
                    password: args
                        .password_file
                        .as_deref()
                        .map(read_redis_password)
                        .transpose()?,
                    stream: Some(args.stream.clone()),
                    stream_events: args.stream_events.clone(),
                    maxlen: args.maxlen,
                    max_age: args.max_age,
                    jobs_stream: args.jobs_stream.clone(),
                    jobs_events: args.jobs_events.clone(),
                    jobs_maxlen: args.jobs_maxlen,
                    jobs_max_age: args.jobs_max_age,
                    trim_interval: Some(args.trim_interval),
                };
                let sink = RedisSink::new(layout.options(&args.url)?)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let key = format!("forward.redis.{}", args.stream);
                let destination = layout.destination(&args.url);
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
        args.store
            .sqlite
            .then_some(esl_replay::store::Backend::Sqlite),
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
    let mut options = ForwardOptions::default();
    options.criteria = args.criteria.criteria()?;
    options.batch_size = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    options.follow = args.follow;
    options.retry_initial = args.retry_initial;
    options.retry_max = args.retry_max;
    options.log_interval = args.log_interval;
    options.checkpoint_metadata = metadata;
    options.checkpoint_interval = args.checkpoint_interval;
    options.format = args.message_format.into();

    let metrics = Arc::new(Metrics::new(sink.target()));
    let (stop, shutdown) = watch::channel(false);
    stop_on_signal(stop)?;
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen for metrics on {addr}"))?;
        let served = Arc::clone(&metrics);
        let stopping = shutdown.clone();
        tokio::spawn(forward::serve_metrics(listener, served, stopping));
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
        "forwarded {} records to {destination}{} (checkpoint {:?} at sequence {}, resumed after {}, {} retries{}{})",
        report.forwarded,
        if report.maybe_lost > 0 {
            format!(
                "; {} more may be lost (core NATS could not confirm their flush; they are not resent)",
                report.maybe_lost
            )
        } else {
            String::new()
        },
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
