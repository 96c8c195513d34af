//! `esl-replay capture`: capture one or more FreeSWITCH nodes into a store until SIGINT or
//! SIGTERM (or `--duration`), then flush and sync the store.
//!
//! Passwords come from `--password-file` or the `ESL_PASSWORD` environment variable (default
//! `ClueCon`), never from the command line; the gateway token from `--token-file` or
//! `ESL_REPLAY_TOKEN`, the gateway's JWT secret from `--jwt-secret-file` or
//! `ESL_REPLAY_JWT_SECRET`. Nodes come from `--esl [SLUG=]HOST:PORT` (repeatable) or a TOML
//! `--config` file (format in `docs/capture.md`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use serde::Deserialize;

use super::Outcome;
use super::compat::{Compat, CompatDefaults};
use super::forward::{RedisLayout, read_redis_password};
use super::input::{MAX_CONFIG_BYTES, MAX_SECRET_BYTES, read_text};
use esl_replay::capture::{
    Capture, CaptureOptions, DEFAULT_MAX_COMMANDS_IN_FLIGHT, DEFAULT_QUEUE_BYTES, HealthForm,
    HttpState, JwtKey, NodeConfig, NodeExit, NodeSpec, Password, router,
};
use esl_replay::checkpoint::{CheckpointService, CheckpointStore};
use esl_replay::esl::session::Subscriptions;
use esl_replay::forward::{
    ForwardOptions, ForwardReport, MessageFormat, Metrics, NatsMode, NatsOptions, NatsSink,
    RedisSink, Sink, Source, forward,
};
use esl_replay::http_server::{DEFAULT_MAX_CONNECTIONS, Limits};
use esl_replay::retention::{PeriodicPrune, PrunePolicy};
use esl_replay::storage::{DEFAULT_PACK_LEVEL, LogOptions};
use esl_replay::store::{ArtifactStore, Backend, LogStore};
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::watch;

#[derive(Debug, Args)]
pub(crate) struct CaptureArgs {
    /// FreeSWITCH event socket as `[SLUG=]HOST:PORT` (repeat for several nodes; default
    /// 127.0.0.1:8021). The slug (not empty; default the address) tags artifacts as
    /// `runtime_flags.pbx_node_slug`; the port is 1-65535; a host name is resolved at each
    /// connection attempt.
    #[arg(long = "esl", value_parser = parse_esl)]
    esl: Vec<String>,
    /// Store to append to (a directory, or a `.sqlite` file).
    #[arg(long, short = 's', env = "ESL_REPLAY_STORE")]
    store: Option<PathBuf>,
    /// TOML configuration file (nodes, store, options); flags override its top-level values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// File holding the ESL password: its first line, as `serve` and `replay` read it
    /// (else `ESL_PASSWORD`, else `ClueCon`); an empty first line is refused.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Events to subscribe to (plain format), comma separated; `CUSTOM` subclasses last.
    #[arg(long, default_value = "ALL", value_delimiter = ',')]
    events: Vec<String>,
    /// Delivery filter `HEADER=VALUE` (repeatable). Add `Event-Name=HEARTBEAT` to keep the
    /// liveness signal.
    #[arg(long = "filter")]
    filters: Vec<String>,
    /// Bound of the write queue (`64MiB`, `512KiB`, bytes) [default: 64MiB]; at least
    /// 1MiB. When it is full, captured frames are dropped (and the gap recorded); a frame
    /// larger than the bound is still taken when the queue is empty.
    #[arg(long, value_parser = parse_queue_bytes)]
    queue_bytes: Option<u64>,
    /// Serve `/health`, `/metrics`, the command gateway and the fs-esl-gateway REST
    /// contract on this address only: `IP:PORT` (e.g. 127.0.0.1:9821), or a bare port,
    /// which binds 127.0.0.1; port 0 takes a free port (printed). The address is bound
    /// before the capture starts: one that cannot be bound stops the command (exit 2).
    #[arg(long, value_parser = parse_http)]
    http: Option<String>,
    /// Connections `--http` serves at once; more are closed as soon as accepted. A
    /// connection that takes over 10 s to send a request's headers (or idles that long
    /// between requests) is closed.
    #[arg(long, default_value_t = DEFAULT_MAX_CONNECTIONS as u64, value_parser = clap::value_parser!(u64).range(1..))]
    http_max_connections: u64,
    /// File holding the gateway's bearer token (else `ESL_REPLAY_TOKEN`; without a token
    /// or a JWT secret the gateway refuses every command).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// File holding the HS256 secret of JWTs the gateway accepts besides the token (else
    /// `ESL_REPLAY_JWT_SECRET`); a JWT must carry an unexpired `exp`.
    #[arg(long)]
    jwt_secret_file: Option<PathBuf>,
    /// Gateway commands that may await their replies at once; one more is answered 429
    /// [default: 32].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    max_commands_in_flight: Option<u32>,
    /// Stop after this long (e.g. `30s`); default: until SIGINT/SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Give up (exit 2) if a node's session has not become ready (connected, authenticated,
    /// subscribed) within this long (e.g. `30s`); by default a node that never became
    /// ready is an error only when the capture stops.
    #[arg(long, value_parser = humantime::parse_duration)]
    startup_timeout: Option<Duration>,
    /// `runtime_flags.worker_session_id` of every artifact.
    #[arg(long)]
    worker_session_id: Option<String>,
    /// Prune records older than this, every `--retention-interval` (segment-log stores).
    #[arg(long, value_parser = super::input::parse_age)]
    retain_for: Option<Duration>,
    /// How often retention runs (at least 1s).
    #[arg(long, value_parser = parse_retention_interval, default_value = "5m")]
    retention_interval: Duration,
    /// Checkpoint directory retention must honour (and the forwarder saves its progress in).
    #[arg(long, env = super::CHECKPOINT_DIR_ENV)]
    checkpoint_dir: Option<PathBuf>,
    /// Keep sealed segments as written. By default a segment-log store packs each sealed
    /// segment in the background (every record compressed against a dictionary trained on
    /// its segment: ESL traffic takes about a thirteenth of the space).
    #[arg(long)]
    no_pack: bool,
    /// Forward what is captured to this Redis server (`redis://HOST:PORT`), in this process,
    /// reading the store: nothing is lost while Redis is down, and delivery resumes from the
    /// checkpoint in `--checkpoint-dir` (key `forward.redis.STREAM`, the one
    /// `esl-replay forward redis` uses).
    #[arg(long)]
    forward_redis: Option<String>,
    /// The Redis stream `--forward-redis` appends to [default: fs:events].
    #[arg(long)]
    forward_stream: Option<String>,
    /// Only these captured events go to the Redis stream (comma separated `Event-Name`s);
    /// without it, every record.
    #[arg(long, value_delimiter = ',')]
    forward_stream_events: Option<Vec<String>>,
    /// Keep the Redis stream to about N entries (XADD MAXLEN ~ N).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    forward_maxlen: Option<u64>,
    /// Remove Redis stream entries older than this, e.g. 10m (XTRIM MINID ~ every
    /// `--forward-trim-interval`).
    #[arg(long, value_parser = super::input::parse_age)]
    forward_max_age: Option<Duration>,
    /// A second Redis stream for background-job results: the `--forward-jobs-events` go
    /// there, not to `--forward-stream`.
    #[arg(long)]
    forward_jobs_stream: Option<String>,
    /// The captured events the jobs stream takes [default: BACKGROUND_JOB].
    #[arg(long, value_delimiter = ',')]
    forward_jobs_events: Option<Vec<String>>,
    /// Keep the jobs stream to about N entries (XADD MAXLEN ~ N).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    forward_jobs_maxlen: Option<u64>,
    /// Remove jobs stream entries older than this (XTRIM MINID ~).
    #[arg(long, value_parser = super::input::parse_age)]
    forward_jobs_max_age: Option<Duration>,
    /// How often Redis streams with an age limit are trimmed [default: 10s].
    #[arg(long, value_parser = super::forward::parse_interval)]
    forward_trim_interval: Option<Duration>,
    /// File holding the Redis password (else the URL's, if any).
    #[arg(long)]
    forward_password_file: Option<PathBuf>,
    /// Stand in for another service: take its environment variables and defaults (flags
    /// and the config file still win). `telephony-event-sync`: ESL_HOST, ESL_PORT,
    /// REDIS_REMOTE_ADDR, STREAM_EVENTS, ... (docs/forwarding.md).
    #[arg(long, value_enum)]
    compat: Option<Compat>,
    /// Forward what is captured to this NATS server (`nats://HOST:PORT`) from this process,
    /// as `--forward-redis` does (checkpoint key `forward.nats.SUBJECT`): to JetStream with
    /// `--forward-jetstream-stream`, otherwise core NATS (at-most-once).
    #[arg(long, conflicts_with = "forward_redis")]
    forward_nats: Option<String>,
    /// The subject `--forward-nats` publishes on [default: fs.events]: dot-separated
    /// tokens, none empty, without whitespace or the wildcards `*` and `>`.
    #[arg(long, value_parser = super::forward::parse_subject)]
    forward_subject: Option<String>,
    /// The JetStream stream that holds the subject (created if missing, with a 10-minute
    /// duplicate window).
    #[arg(long)]
    forward_jetstream_stream: Option<String>,
    /// How forwarded records are written: `record` or `fs-events-v1` (captured events only,
    /// normalised) [default: record].
    #[arg(long, value_enum)]
    forward_format: Option<super::forward::Format>,
    /// At a stop, how long to let the forwarder deliver what is still undelivered; the rest
    /// goes at the next start.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    forward_drain: Duration,
}

/// The TOML configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    store: Option<PathBuf>,
    queue_bytes: Option<u64>,
    http: Option<String>,
    token_file: Option<PathBuf>,
    jwt_secret_file: Option<PathBuf>,
    max_commands_in_flight: Option<u32>,
    worker_session_id: Option<String>,
    /// `false`: as `--no-pack`.
    pack: Option<bool>,
    checkpoint_dir: Option<PathBuf>,
    /// As `--compat`.
    compat: Option<Compat>,
    forward: Option<FileForward>,
    #[serde(default, rename = "node")]
    nodes: Vec<FileNode>,
}

/// `[forward]` of the configuration file: the `--forward-*` flags without their prefix.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForward {
    /// `record` or `fs-events-v1`.
    format: Option<String>,
    redis: Option<String>,
    stream: Option<String>,
    nats: Option<String>,
    subject: Option<String>,
    jetstream_stream: Option<String>,
    stream_events: Option<Vec<String>>,
    maxlen: Option<u64>,
    /// An age, e.g. `10m`.
    max_age: Option<String>,
    jobs_stream: Option<String>,
    jobs_events: Option<Vec<String>>,
    jobs_maxlen: Option<u64>,
    /// An age, e.g. `1m`.
    jobs_max_age: Option<String>,
    /// A duration, e.g. `10s`.
    trim_interval: Option<String>,
    password_file: Option<PathBuf>,
}

impl FileForward {
    /// The Redis streams the table sets, its durations parsed.
    fn layout(&self) -> anyhow::Result<RedisLayout> {
        let age = |key: &str, text: &Option<String>| {
            text.as_deref()
                .map(|text| {
                    super::input::parse_age(text)
                        .map_err(|error| anyhow::anyhow!("[forward] {key} = {text:?}: {error}"))
                })
                .transpose()
        };
        Ok(RedisLayout {
            password: self
                .password_file
                .as_deref()
                .map(read_redis_password)
                .transpose()?,
            stream: self.stream.clone(),
            stream_events: self.stream_events.clone(),
            maxlen: self.maxlen,
            max_age: age("max_age", &self.max_age)?,
            jobs_stream: self.jobs_stream.clone(),
            jobs_events: self.jobs_events.clone(),
            jobs_maxlen: self.jobs_maxlen,
            jobs_max_age: age("jobs_max_age", &self.jobs_max_age)?,
            trim_interval: self
                .trim_interval
                .as_deref()
                .map(|text| {
                    super::forward::parse_interval(text).map_err(|error| {
                        anyhow::anyhow!("[forward] trim_interval = {text:?}: {error}")
                    })
                })
                .transpose()?,
        })
    }
}

/// Where the capture forwards what it stores, and where delivery's checkpoint is.
#[derive(Debug, Clone)]
struct Forwarding {
    to: ForwardTo,
    format: MessageFormat,
    checkpoints: PathBuf,
}

#[derive(Debug, Clone)]
enum ForwardTo {
    Redis {
        url: String,
        layout: RedisLayout,
    },
    Nats {
        url: String,
        subject: String,
        jetstream_stream: Option<String>,
    },
}

/// Flags over the `[forward]` table over a compatibility mode's defaults.
fn forwarding(
    args: &CaptureArgs,
    file: Option<FileForward>,
    checkpoints: Option<&PathBuf>,
    compat: Option<&CompatDefaults>,
) -> anyhow::Result<Option<Forwarding>> {
    let file = file.unwrap_or_default();
    let flags = RedisLayout {
        password: args
            .forward_password_file
            .as_deref()
            .map(read_redis_password)
            .transpose()?,
        stream: args.forward_stream.clone(),
        stream_events: args.forward_stream_events.clone(),
        maxlen: args.forward_maxlen,
        max_age: args.forward_max_age,
        jobs_stream: args.forward_jobs_stream.clone(),
        jobs_events: args.forward_jobs_events.clone(),
        jobs_maxlen: args.forward_jobs_maxlen,
        jobs_max_age: args.forward_jobs_max_age,
        trim_interval: args.forward_trim_interval,
    };
    // The mode's password belongs to the mode's server, not to a URL given here.
    let url_given = args.forward_redis.is_some() || file.redis.is_some();
    let compat_layout = compat.map_or_else(RedisLayout::default, |c| RedisLayout {
        password: c.layout.password.clone().filter(|_| !url_given),
        ..c.layout.clone()
    });
    let layout = flags.or(file.layout()?).or(compat_layout);
    let format = match (args.forward_format, file.format.as_deref()) {
        (Some(format), _) => format.into(),
        (None, None | Some("record")) => MessageFormat::Record,
        (None, Some("fs-events-v1")) => MessageFormat::FsEventsV1,
        (None, Some(other)) => {
            bail!("[forward] format {other:?} is not `record` or `fs-events-v1`")
        }
    };
    let redis =
        (args.forward_redis.clone().or(file.redis)).or_else(|| compat.map(|c| c.redis_url.clone()));
    let nats = args.forward_nats.clone().or(file.nats);
    let redis_only = "the Redis stream settings (stream, events, lengths, ages, trim interval, password) need --forward-redis";
    let to = match (redis, nats) {
        (Some(_), Some(_)) if compat.is_some() => {
            bail!("--compat telephony-event-sync forwards to Redis; leave out --forward-nats")
        }
        (Some(_), Some(_)) => bail!("forward to Redis or to NATS, not both"),
        (Some(url), None) => {
            // Checked now, not when the forwarder starts after the capture.
            layout.options(&url)?;
            ForwardTo::Redis { url, layout }
        }
        (None, _) if layout != RedisLayout::default() => bail!("{redis_only}"),
        (None, Some(url)) => ForwardTo::Nats {
            url,
            subject: match (args.forward_subject.clone(), file.subject) {
                (Some(subject), _) => subject,
                (None, Some(subject)) => super::forward::parse_subject(&subject)
                    .map_err(|error| anyhow::anyhow!("[forward] subject: {error}"))?,
                (None, None) => "fs.events".into(),
            },
            jetstream_stream: args
                .forward_jetstream_stream
                .clone()
                .or(file.jetstream_stream),
        },
        (None, None) => return Ok(None),
    };
    let checkpoints = checkpoints.cloned().context(
        "forwarding needs --checkpoint-dir (or `checkpoint_dir` in the config file): delivery resumes from the checkpoint kept there",
    )?;
    Ok(Some(Forwarding {
        to,
        format,
        checkpoints,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileNode {
    slug: Option<String>,
    esl: String,
    password_file: Option<PathBuf>,
    events: Option<Vec<String>>,
    #[serde(default)]
    filters: Vec<(String, String)>,
}

pub(crate) fn run(args: &CaptureArgs) -> anyhow::Result<Outcome> {
    let file = match &args.config {
        Some(path) => {
            let text = read_text(path, MAX_CONFIG_BYTES, "the configuration file")?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parse {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let store_path = args
        .store
        .clone()
        .or(file.store.clone())
        .context("--store (or `store` in the config file) is required")?;
    if args.retain_for.is_some() && Backend::for_path(&store_path) != Backend::Log {
        bail!(
            "--retain-for needs a segment-log store; {} is a SQLite store, which keeps every row",
            store_path.display()
        );
    }
    let compat = args
        .compat
        .or(file.compat)
        .map(|mode| mode.defaults(&|name| std::env::var(name).ok()))
        .transpose()
        .context("the compatibility mode's environment")?;
    let default_password = read_password(args.password_file.as_deref())?;
    let filters = args
        .filters
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .with_context(|| format!("--filter {f:?} is not HEADER=VALUE"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut nodes = Vec::new();
    for node in &file.nodes {
        check_esl_address(&node.esl).map_err(|error| anyhow::anyhow!("[[node]] esl: {error}"))?;
        if node.slug.as_deref().is_some_and(str::is_empty) {
            bail!("[[node]] slug of {} is empty", node.esl);
        }
        let password = match &node.password_file {
            Some(path) => read_password(Some(path))?,
            None => default_password.clone(),
        };
        let mut config = NodeConfig::new(node.esl.clone());
        config.password = password;
        config.subscriptions = Subscriptions {
            events: node.events.clone().unwrap_or_else(|| args.events.clone()),
            filters: node.filters.clone(),
        };
        nodes.push(NodeSpec {
            slug: node.slug.clone().unwrap_or_else(|| node.esl.clone()),
            config,
        });
    }
    let esl = if args.esl.is_empty() && nodes.is_empty() {
        vec![
            compat
                .as_ref()
                .map_or("127.0.0.1:8021", |c| c.esl.as_str())
                .to_owned(),
        ]
    } else {
        args.esl.clone()
    };
    for spec in esl {
        parse_esl(&spec).map_err(|error| anyhow::anyhow!("ESL address: {error}"))?;
        let (slug, address) = match spec.split_once('=') {
            Some((slug, address)) => (slug.to_owned(), address.to_owned()),
            None => (spec.clone(), spec.clone()),
        };
        let mut config = NodeConfig::new(address);
        config.password = default_password.clone();
        config.subscriptions = Subscriptions {
            events: args.events.clone(),
            filters: filters.clone(),
        };
        nodes.push(NodeSpec { slug, config });
    }
    // An event name or filter with a line break would send the switch another command.
    for node in &nodes {
        node.config
            .subscriptions
            .validate()
            .with_context(|| format!("--events/--filter of node {}", node.slug))?;
    }
    let token = match args.token_file.as_ref().or(file.token_file.as_ref()) {
        Some(path) => read_text(path, MAX_SECRET_BYTES, "the token file")?
            .trim()
            .to_owned(),
        None => std::env::var("ESL_REPLAY_TOKEN").unwrap_or_default(),
    };
    let jwt = jwt_key(
        args.jwt_secret_file
            .as_ref()
            .or(file.jwt_secret_file.as_ref()),
    )?;
    let max_commands_in_flight = match args.max_commands_in_flight.or(file.max_commands_in_flight) {
        Some(0) => bail!("max_commands_in_flight must be at least 1"),
        Some(n) => n as usize,
        None => DEFAULT_MAX_COMMANDS_IN_FLIGHT,
    };
    let options = CaptureOptions {
        queue_bytes: match args.queue_bytes.or(file.queue_bytes) {
            Some(bytes) if bytes < MIN_QUEUE_BYTES => {
                bail!("queue_bytes {bytes} is below the minimum of 1MiB ({MIN_QUEUE_BYTES} bytes)")
            }
            Some(bytes) => usize::try_from(bytes).unwrap_or(usize::MAX),
            None => DEFAULT_QUEUE_BYTES,
        },
        worker_session_id: args
            .worker_session_id
            .clone()
            .or(file.worker_session_id.clone()),
        max_commands_in_flight,
        ..CaptureOptions::default()
    };
    let http = args
        .http
        .as_ref()
        .or(file.http.as_ref())
        .or(compat.as_ref().map(|c| &c.http))
        .map(|a| http_address(a).map_err(|error| anyhow::anyhow!("--http: {error}")))
        .transpose()?;
    let health = if compat.is_some() {
        HealthForm::TelephonyEventSync
    } else {
        HealthForm::EslReplay
    };
    let pack = !args.no_pack && file.pack.unwrap_or(true);
    let checkpoint_dir = args.checkpoint_dir.clone().or(file.checkpoint_dir.clone());
    if let Some(dir) = &checkpoint_dir {
        super::checkpoint::not_a_file(dir)?;
    }
    let forward = forwarding(args, file.forward, checkpoint_dir.as_ref(), compat.as_ref())?;
    // Bound before the store is opened and the capture starts: an address that cannot be
    // served stops the command before it connects to anything.
    let http = http
        .map(|address| {
            let listener = std::net::TcpListener::bind(address)
                .with_context(|| format!("--http: cannot listen on {address}"))?;
            listener
                .set_nonblocking(true)
                .with_context(|| format!("--http: cannot listen on {address}"))?;
            anyhow::Ok(listener)
        })
        .transpose()?;
    let services = Services {
        http,
        health,
        token,
        jwt,
        checkpoint_dir,
        forward,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let store = open_store(&store_path, pack)?;
    runtime.block_on(capture(args, &store_path, store, nodes, options, services))
}

/// What runs beside the capture: the HTTP server, retention's checkpoints, the forwarder.
struct Services {
    /// `--http`'s listener, bound before the capture starts.
    http: Option<std::net::TcpListener>,
    /// The shape of `/health` (a compatibility mode's, or ours).
    health: HealthForm,
    token: String,
    jwt: Option<JwtKey>,
    checkpoint_dir: Option<PathBuf>,
    forward: Option<Forwarding>,
}

/// Opens the capture's store; a segment-log store packs sealed segments unless told not to.
fn open_store(path: &Path, pack: bool) -> anyhow::Result<Box<dyn ArtifactStore>> {
    let opened: esl_replay::store::Result<Box<dyn ArtifactStore>> = match Backend::for_path(path) {
        Backend::Log => {
            let options = LogOptions {
                pack_level: pack.then_some(DEFAULT_PACK_LEVEL),
                ..LogOptions::default()
            };
            LogStore::open_with(path, options).map(|s| Box::new(s) as Box<dyn ArtifactStore>)
        }
        Backend::Sqlite => esl_replay::store::open(path, None),
    };
    opened.with_context(|| format!("open store {}", path.display()))
}

async fn capture(
    args: &CaptureArgs,
    store_path: &Path,
    store: Box<dyn ArtifactStore>,
    nodes: Vec<NodeSpec>,
    options: CaptureOptions,
    services: Services,
) -> anyhow::Result<Outcome> {
    let Services {
        http,
        health,
        token,
        jwt,
        checkpoint_dir,
        forward,
    } = services;
    let slugs: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}={}", n.slug, n.config.address))
        .collect();
    let capture = Capture::start(nodes, store, options).context("start the capture")?;
    tracing::info!(session_id = capture.session_id(), nodes = ?slugs, store = %store_path.display(), "capture started");
    eprintln!(
        "capturing {} into {} (session {})",
        slugs.join(", "),
        store_path.display(),
        capture.session_id()
    );

    let forwarder = match forward {
        Some(forward) => {
            let forwarder = start_forwarder(
                store_path,
                forward,
                capture.telemetry().event_publish_lag_ms.clone(),
            )?;
            capture
                .telemetry()
                .attach_forwarding(Arc::new(ForwardingView(Arc::clone(&forwarder.metrics))));
            Some(forwarder)
        }
        None => None,
    };

    let server = match http {
        Some(listener) => {
            let listener = tokio::net::TcpListener::from_std(listener)
                .context("--http: serve the listener")?;
            let address = listener
                .local_addr()
                .context("--http: the listener's address")?;
            let state = HttpState {
                telemetry: capture.telemetry(),
                gateway: capture.gateway(),
                token: Arc::from(token),
                jwt,
                queue: Some(capture.queue()),
                health,
            };
            eprintln!("http: /health, /metrics, /v1/api, /v1/bgapi, /api/v1/fs/... on {address}");
            let limits = Limits {
                max_connections: usize::try_from(args.http_max_connections).unwrap_or(usize::MAX),
                ..Limits::default()
            };
            let serve = esl_replay::http_server::serve(
                listener,
                router(state),
                limits,
                std::future::pending(),
            );
            Some(tokio::spawn(serve))
        }
        None => None,
    };
    let retention = match args.retain_for {
        // A SQLite store was refused before anything started.
        Some(age) => {
            let telemetry = capture.telemetry();
            // Each run's outcome reaches /health and /metrics; failures are retried.
            let report = move |result: Result<&_, &esl_replay::retention::Error>| match result {
                Ok(_) => telemetry.set_retention_error(None),
                Err(error) => {
                    telemetry.retention_failures.inc();
                    telemetry.set_retention_error(Some(esl_replay::storage::error_chain(error)));
                }
            };
            Some(
                PeriodicPrune::start(
                    store_path.to_path_buf(),
                    checkpoint_dir.clone(),
                    PrunePolicy {
                        max_record_age: Some(age),
                        max_stream_bytes: None,
                        protected_record_count: 0,
                    },
                    args.retention_interval,
                    Box::new(report),
                )
                .context("start the retention thread")?,
            )
        }
        None => None,
    };

    let stop = wait_for_stop(
        args.duration,
        args.startup_timeout,
        &capture,
        retention.as_ref(),
    )
    .await;
    match stop {
        Stop::Requested => eprintln!("stopping: flushing and syncing the store"),
        Stop::WriterFailed => eprintln!(
            "stopping: the store failed persistently ({}); nothing more can be stored",
            capture.telemetry().writer_error().unwrap_or_default()
        ),
        Stop::RetentionDied => eprintln!("stopping: the retention thread ended unexpectedly"),
    }
    if let Some(server) = server {
        server.abort();
    }
    if let Some(retention) = retention {
        retention.stop();
    }
    let telemetry = capture.telemetry();
    // Read before shutdown, which marks every node stopped.
    let never_ready: Vec<String> = telemetry
        .health()
        .into_iter()
        .filter(|(_, h)| !h.ever_ready)
        .map(|(slug, h)| {
            let error = h.last_error.unwrap_or_else(|| "no attempt finished".into());
            if h.connection_generation == 0 {
                format!("node {slug} never connected to {}: {error}", h.address)
            } else {
                format!(
                    "node {slug} connected to {} but no session became ready: {error}",
                    h.address
                )
            }
        })
        .collect();
    let queue = capture.queue();
    let (store, exits) = match capture.shutdown().await {
        Ok(done) => done,
        Err(error) => {
            // Dropped (the lost batches included) plus what was still queued.
            let drops = telemetry_sum(&telemetry.encode(), "esl_capture_dropped_artifacts_total");
            let unstored = drops + queue.depth().0 as u64;
            return Err(error).context(format!(
                "the capture stopped: its store failed, and {unstored} captured items were not stored (records stored before the failure are intact)"
            ));
        }
    };
    let stats = store.stats().context(
        "the capture stopped, but the store's figures could not be read for its summary",
    )?;
    drop(store);
    if let Some(forwarder) = forwarder {
        forwarder
            .finish(stats.last_sequence, args.forward_drain)
            .await?;
    }
    let artifacts: u64 = telemetry_sum(&telemetry.encode(), "esl_capture_artifacts_total");
    let drops: u64 = telemetry_sum(&telemetry.encode(), "esl_capture_dropped_artifacts_total");
    eprintln!(
        "captured {artifacts} artifacts ({drops} dropped); store holds {} records up to sequence {}",
        stats.records, stats.last_sequence
    );
    let mut failed = false;
    for (slug, exit) in exits {
        match exit {
            NodeExit::Shutdown => {}
            NodeExit::Terminal(reason) | NodeExit::GaveUp(reason) => {
                failed = true;
                eprintln!("node {slug} stopped: {reason}");
            }
        }
    }
    if !never_ready.is_empty() {
        for line in &never_ready {
            eprintln!("{line}");
        }
        bail!(
            "{} (is FreeSWITCH's event socket listening there, and are the address and password right?)",
            never_ready.join("; ")
        );
    }
    if failed {
        bail!("a node stopped before shutdown");
    }
    if stop == Stop::RetentionDied {
        bail!("the retention thread ended unexpectedly; records were captured without retention");
    }
    Ok(Outcome::Success)
}

/// The in-process forwarder: `esl-replay forward redis|nats --follow` on a thread of its own,
/// reading the capture's store as a follower.
struct Forwarder {
    stop: watch::Sender<bool>,
    task: std::thread::JoinHandle<anyhow::Result<ForwardReport>>,
    metrics: Arc<Metrics>,
    destination: String,
}

/// The in-process forwarder as the capture's `/health` and `/metrics` show it.
#[derive(Debug)]
struct ForwardingView(Arc<Metrics>);

impl esl_replay::capture::Forwarding for ForwardingView {
    fn status(&self) -> &'static str {
        self.0.snapshot().status()
    }

    fn last_error(&self) -> Option<String> {
        let snapshot = self.0.snapshot();
        snapshot.stopped.or(snapshot.last_error)
    }

    fn encode(&self) -> String {
        // Writing into a String cannot fail.
        self.0.encode().unwrap_or_default()
    }
}

/// Starts the forwarder the capture was asked for; it observes its publish lag into `lag`
/// (the capture's `fs_esl_event_publish_lag_ms`).
fn start_forwarder(store: &Path, forward: Forwarding, lag: Histogram) -> anyhow::Result<Forwarder> {
    let (checkpoints, format) = (&forward.checkpoints, forward.format);
    let started = match forward.to {
        ForwardTo::Redis { url, layout } => {
            let sink = RedisSink::new(layout.options(&url)?).map_err(|e| anyhow::anyhow!("{e}"))?;
            let key = format!("forward.redis.{}", layout.stream());
            let destination = layout.destination(&url);
            Forwarder::start(store, checkpoints, sink, key, destination, format, lag)
        }
        ForwardTo::Nats {
            url,
            subject,
            jetstream_stream,
        } => {
            let mode = match jetstream_stream {
                Some(stream) => NatsMode::JetStream {
                    stream: Some(stream),
                    create: true,
                    duplicate_window: Duration::from_secs(600),
                },
                None => {
                    eprintln!(
                        "note: core NATS is at-most-once: records are lost if no subscriber or server takes them (add --forward-jetstream-stream)"
                    );
                    NatsMode::Core
                }
            };
            let sink = NatsSink::new(NatsOptions::new(&url, &subject, mode));
            let key = format!("forward.nats.{subject}");
            let destination = format!("{url} {subject}");
            Forwarder::start(store, checkpoints, sink, key, destination, format, lag)
        }
    };
    started.context("start the forwarder")
}

impl Forwarder {
    fn start<S: Sink + Send + 'static>(
        store: &Path,
        checkpoints: &Path,
        mut sink: S,
        key: String,
        destination: String,
        format: MessageFormat,
        publish_lag: Histogram,
    ) -> anyhow::Result<Self> {
        let source = Source::open_read_only(store, None)
            .with_context(|| format!("open the store {} for forwarding", store.display()))?;
        let checkpoints = CheckpointStore::open(checkpoints)
            .with_context(|| format!("open the checkpoint directory {}", checkpoints.display()))?;
        let service = CheckpointService::new(checkpoints, key.clone()).with_context(|| {
            format!("{key:?} cannot name a checkpoint (choose another forwarder key)")
        })?;
        let mut metadata = esl_replay::record::JsonMap::new();
        metadata.insert("forward_target".into(), sink.target().into());
        metadata.insert("forward_destination".into(), destination.clone().into());
        let mut options = ForwardOptions::default();
        options.follow = true;
        options.format = format;
        options.checkpoint_metadata = metadata;
        let metrics = Arc::new(Metrics::with_publish_lag(sink.target(), publish_lag));
        let (stop, shutdown) = watch::channel(false);
        let counted = Arc::clone(&metrics);
        // The store handle is not `Sync`, so the forwarding future cannot move between the
        // capture runtime's workers: it gets a thread and a runtime of its own.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the forwarder's runtime")?;
        let task = std::thread::Builder::new()
            .name("esl-forward".into())
            .spawn(move || {
                let result = runtime.block_on(forward(
                    &source, &mut sink, &service, &options, &counted, shutdown,
                ));
                // Said now, not only at the stop: the capture goes on storing meanwhile, and
                // what is not delivered is delivered by the next start.
                if let Err(error) = &result {
                    tracing::error!(error = %esl_replay::storage::error_chain(error), "the forwarder stopped; records are still stored");
                }
                result.map_err(anyhow::Error::from)
            })
            .context("start the forwarder thread")?;
        eprintln!("forwarding to {destination}");
        Ok(Forwarder {
            stop,
            task,
            metrics,
            destination,
        })
    }

    /// Lets the forwarder deliver up to `last` (the store's last sequence) for at most
    /// `drain`, then stops it; its checkpoint holds what was acknowledged.
    async fn finish(self, last: u64, drain: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + drain;
        while self.metrics.snapshot().acked_sequence < last
            && tokio::time::Instant::now() < deadline
            && !self.task.is_finished()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        let task = self.task;
        let report = tokio::task::spawn_blocking(move || task.join())
            .await
            .context("the forwarder thread failed")?
            .map_err(|_| anyhow::anyhow!("the forwarder thread panicked"))?
            .with_context(|| format!("forwarding to {}", self.destination))?;
        if report.maybe_lost > 0 {
            eprintln!(
                "{} records may be lost: core NATS could not confirm their flush (they are not resent)",
                report.maybe_lost
            );
        }
        if report.acked_sequence >= last {
            eprintln!(
                "forwarded {} records to {}; everything up to sequence {last} is delivered",
                report.forwarded, self.destination
            );
        } else {
            eprintln!(
                "forwarded {} records to {}; delivered up to sequence {} of {last}: the rest goes at the next start (or with `esl-replay forward`)",
                report.forwarded, self.destination, report.acked_sequence
            );
        }
        Ok(())
    }
}

/// Why the capture stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// A signal, the duration, the start-up timeout, or every node stopped on its own.
    Requested,
    /// The writer stopped on a persistent store failure.
    WriterFailed,
    /// The retention thread is gone.
    RetentionDied,
}

/// Waits for SIGINT, SIGTERM, the duration, every node having stopped on its own, the
/// start-up timeout with a node that has not connected yet, the writer having failed, or the
/// retention thread having died.
async fn wait_for_stop(
    duration: Option<Duration>,
    startup_timeout: Option<Duration>,
    capture: &Capture,
    retention: Option<&PeriodicPrune>,
) -> Stop {
    let deadline = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let startup = async {
        let Some(timeout) = startup_timeout else {
            return std::future::pending().await;
        };
        tokio::time::sleep(timeout).await;
        let telemetry = capture.telemetry();
        if telemetry.health().values().all(|h| h.ever_ready) {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        #[cfg(unix)]
        {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        std::future::pending::<()>().await
    };
    let stopped = async {
        loop {
            if capture.writer_stopped() {
                return Stop::WriterFailed;
            }
            if retention.is_some_and(|r| !r.is_running()) {
                return Stop::RetentionDied;
            }
            if capture.all_nodes_stopped() {
                return Stop::Requested;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => Stop::Requested,
        () = terminate => Stop::Requested,
        () = deadline => Stop::Requested,
        () = startup => Stop::Requested,
        stop = stopped => stop,
    }
}

/// Where the HTTP server binds: `IP:PORT` as given (`localhost:PORT` is 127.0.0.1), or
/// 127.0.0.1 for a bare port (a control API is never exposed on every interface by
/// accident). Port 0 takes a free port, printed when the server starts.
fn http_address(address: &str) -> Result<SocketAddr, String> {
    let port = |text: &str| {
        text.parse::<u16>()
            .map_err(|_| format!("{address:?} has the port {text:?}; a port is 0-65535"))
    };
    if !address.is_empty() && address.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port(address)?)));
    }
    if let Some(text) = address.strip_prefix("localhost:") {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port(text)?)));
    }
    address.parse().map_err(|_| {
        format!("{address:?} is not IP:PORT (e.g. 127.0.0.1:9821, [::1]:9821) or a bare port")
    })
}

/// `--http`: an address [`http_address`] accepts, kept as given.
fn parse_http(text: &str) -> Result<String, String> {
    http_address(text)?;
    Ok(text.to_owned())
}

/// The gateway's JWT secret, from `file` or `ESL_REPLAY_JWT_SECRET` (none: JWTs refused).
fn jwt_key(file: Option<&PathBuf>) -> anyhow::Result<Option<JwtKey>> {
    let secret = match file {
        Some(path) => read_text(path, MAX_SECRET_BYTES, "the JWT secret file")?
            .trim_end_matches(['\n', '\r'])
            .to_owned(),
        None => match std::env::var("ESL_REPLAY_JWT_SECRET") {
            Ok(secret) => secret,
            Err(_) => return Ok(None),
        },
    };
    JwtKey::hs256(secret.as_bytes())
        .map(Some)
        .context("the gateway's JWT secret (--jwt-secret-file or ESL_REPLAY_JWT_SECRET)")
}

fn read_password(file: Option<&Path>) -> anyhow::Result<Password> {
    Ok(match file {
        Some(path) => Password::new(super::input::read_password_file(path)?),
        None => std::env::var("ESL_PASSWORD").map_or_else(|_| Password::default(), Password::new),
    })
}

/// Sums every sample of a counter family in a Prometheus text exposition.
fn telemetry_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `--esl [SLUG=]HOST:PORT`: a non-empty slug, if any, and an address [`check_esl_address`]
/// accepts.
fn parse_esl(text: &str) -> Result<String, String> {
    let address = match text.split_once('=') {
        Some(("", _)) => return Err(format!("{text:?} has an empty slug before `=`")),
        Some((_, address)) => address,
        None => text,
    };
    check_esl_address(address)?;
    Ok(text.to_owned())
}

/// A `HOST:PORT` to connect to: a non-empty host without whitespace (a name, an IPv4
/// address or a bracketed IPv6 address) and a port 1-65535. A name is resolved when
/// connecting (and retried if it does not resolve).
fn check_esl_address(address: &str) -> Result<(), String> {
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("{address:?} is not HOST:PORT"));
    };
    if host.is_empty() || host.chars().any(char::is_whitespace) {
        return Err(format!("{address:?} has no valid host before the port"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(format!(
            "{address:?}: an IPv6 address goes in brackets, e.g. [::1]:8021"
        ));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => Ok(()),
        _ => Err(format!(
            "{address:?} has the port {port:?}; a port is 1-65535"
        )),
    }
}

/// The smallest write queue: below it, ordinary bursts of events would be dropped (and at
/// 0 every frame but one at a time).
const MIN_QUEUE_BYTES: u64 = 1 << 20;

/// `--queue-bytes`: a size of at least [`MIN_QUEUE_BYTES`].
fn parse_queue_bytes(text: &str) -> Result<u64, String> {
    let bytes = parse_bytes(text)?;
    if bytes < MIN_QUEUE_BYTES {
        return Err(format!(
            "{bytes} bytes is below the minimum of 1MiB ({MIN_QUEUE_BYTES} bytes)"
        ));
    }
    Ok(bytes)
}

/// `--retention-interval`: a duration of at least a second (retention scans the store on
/// each run; shorter intervals would keep it busy).
fn parse_retention_interval(text: &str) -> Result<Duration, String> {
    let interval = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if interval < Duration::from_secs(1) {
        return Err(format!(
            "{} is shorter than the minimum of 1s",
            humantime::format_duration(interval)
        ));
    }
    Ok(interval)
}

fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size"))?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?}")),
    };
    number
        .checked_mul(factor)
        .ok_or_else(|| format!("{text:?} is too large"))
}
