//! The Redis Streams sink: pipelined `XADD` batches over a reconnecting connection, each
//! record routed to the first stream that takes it (by event name), every stream kept short
//! by `MAXLEN ~` on its `XADD`s and, for an age limit, by a periodic `XTRIM MINID ~`.

use std::future::Future;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    ErrorKind, IntoConnectionInfo as _, RedisError, RetryMethod, ServerError, ServerErrorKind,
};

use super::message::FIELD_RECORD;
use super::{Delivery, Message, Sink, SinkError, Takes};
use crate::storage::error_chain;

/// One stream the sink writes: its key, the records it takes, and how it is kept short.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisStream {
    /// The stream key, e.g. `fs:events`.
    pub key: String,
    /// The records it takes, of those no earlier stream took. Default: every record.
    pub takes: Takes,
    /// `MAXLEN ~ n` on every `XADD`: about the newest `n` entries are kept (at least `n`,
    /// fewer than `n` plus one macro node). Default: none.
    pub maxlen: Option<u64>,
    /// Entries older than this, by their time-based ids (the Redis server's clock), are
    /// removed by `XTRIM key MINID ~ <server time - age>` every
    /// [`RedisOptions::trim_interval`] while the forwarder runs. Default: none.
    pub max_age: Option<Duration>,
}

impl RedisStream {
    /// A stream that takes every record and is never trimmed.
    #[must_use]
    pub fn new(key: impl Into<String>) -> RedisStream {
        RedisStream {
            key: key.into(),
            takes: Takes::Everything,
            maxlen: None,
            max_age: None,
        }
    }
}

/// Where and how to write.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisOptions {
    /// `redis://[:password@]host:port[/db]` (or `rediss://`, `redis+unix://` as the client
    /// accepts).
    pub url: String,
    /// The password to authenticate with, in place of one in the URL (so that it stays out
    /// of the URL, which logs and checkpoint metadata show). Default: none.
    pub password: Option<String>,
    /// The streams in routing order: each record goes to the first stream that takes it;
    /// a record no stream takes is skipped. At least one.
    pub streams: Vec<RedisStream>,
    /// How often the streams with a [`RedisStream::max_age`] are trimmed (the first time
    /// when the forwarder starts). Default: 10 s. Must not be zero.
    pub trim_interval: Duration,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How long the server may take to answer a batch.
    pub response_timeout: Duration,
}

impl RedisOptions {
    /// Options for `url` and one stream, `key`, that takes every record and is not trimmed;
    /// 2 s / 10 s timeouts.
    #[must_use]
    pub fn new(url: impl Into<String>, key: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            password: None,
            streams: vec![RedisStream::new(key)],
            trim_interval: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(10),
        }
    }

    /// The stream a record goes to: the first that takes it.
    fn route(&self, message: &Message) -> Option<&RedisStream> {
        let event = message.captured_event();
        self.streams.iter().find(|stream| stream.takes.takes(event))
    }
}

/// Publishes each batch as one `MULTI`/`EXEC` pipeline of `XADD key [MAXLEN ~ n] * field
/// value…`, each record to its stream, so a batch is stored entirely or not at all in every
/// stream (unless the connection breaks after `EXEC` ran, when the retried batch is stored
/// twice: at-least-once). Stream ids are assigned by the server (`*`); the `sequence` field
/// identifies a record for consumers that dedupe.
#[derive(Debug)]
pub struct RedisSink {
    options: RedisOptions,
    client: redis::Client,
    connection: Option<ConnectionManager>,
}

impl RedisSink {
    /// A sink for these options; nothing is connected until the first batch.
    ///
    /// # Errors
    ///
    /// [`SinkError::Rejected`] for an invalid URL, no stream, or a zero trim interval with
    /// a stream that has an age limit.
    pub fn new(options: RedisOptions) -> Result<RedisSink, SinkError> {
        if options.streams.is_empty() {
            return Err(SinkError::Rejected("no Redis stream to write to".into()));
        }
        if options.trim_interval.is_zero() && options.streams.iter().any(|s| s.max_age.is_some()) {
            return Err(SinkError::Rejected(
                "the trim interval must be longer than zero".into(),
            ));
        }
        let invalid =
            |error: RedisError| SinkError::Rejected(format!("invalid Redis URL: {error}"));
        let mut info = options
            .url
            .as_str()
            .into_connection_info()
            .map_err(invalid)?;
        if let Some(password) = &options.password {
            let settings = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(invalid)?;
        Ok(RedisSink {
            options,
            client,
            connection: None,
        })
    }

    async fn connection(&mut self) -> Result<ConnectionManager, SinkError> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let connection = connect(&self.client, &self.options).await?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    fn pipeline(&self, batch: &[Message]) -> redis::Pipeline {
        let mut pipe = redis::Pipeline::with_capacity(batch.len());
        pipe.atomic();
        for message in batch {
            // The forwarder only hands over records some stream takes.
            let Some(stream) = self.options.route(message) else {
                continue;
            };
            // Room for every argument (the stream, trimming, `*`, 6 fields and values) and
            // their bytes, so that building the command does not reallocate.
            let mut cmd =
                redis::Cmd::with_capacity(18, stream.key.len() + message.body.len() + 256);
            cmd.arg("XADD").arg(&stream.key);
            if let Some(max) = stream.maxlen {
                cmd.arg("MAXLEN").arg("~").arg(max);
            }
            cmd.arg("*");
            for (field, _, value) in message.fields() {
                cmd.arg(field).arg(value.as_ref());
            }
            cmd.arg(FIELD_RECORD).arg(message.body.as_ref());
            // Not `ignore()`d: the replies are not kept anyway (parsed as `()`), and an
            // error reply inside `EXEC` still fails the batch.
            pipe.add_command(cmd);
        }
        pipe
    }
}

impl Sink for RedisSink {
    fn target(&self) -> &'static str {
        "redis"
    }

    fn takes(&self) -> Takes {
        Takes::union(self.options.streams.iter().map(|stream| &stream.takes))
    }

    fn maintain(&self) -> impl Future<Output = ()> + 'static {
        let aged: Vec<(String, Duration)> = self
            .options
            .streams
            .iter()
            .filter_map(|stream| Some((stream.key.clone(), stream.max_age?)))
            .collect();
        trim_by_age(self.client.clone(), self.options.clone(), aged)
    }

    async fn publish(&mut self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let mut connection = self.connection().await?;
        let pipe = self.pipeline(batch);
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(classify)?;
        Ok(Delivery::default())
    }
}

/// A connection that reconnects by itself; the forwarder owns retries and backoff, so the
/// manager only reconnects once per use. A `PING` checks it first: a server that requires
/// a password accepts a connection without one and closes it at the first large command,
/// which would look like a broken pipe and be retried forever.
async fn connect(
    client: &redis::Client,
    options: &RedisOptions,
) -> Result<ConnectionManager, SinkError> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(options.connect_timeout))
        .set_response_timeout(Some(options.response_timeout))
        .set_number_of_retries(1);
    let mut connection = ConnectionManager::new_with_config(client.clone(), config)
        .await
        .map_err(classify)?;
    redis::cmd("PING")
        .query_async::<()>(&mut connection)
        .await
        .map_err(classify)?;
    Ok(connection)
}

/// Every `trim_interval` (the first time at once), `XTRIM key MINID ~ <server time - age>`
/// for each `(key, age)`; never returns (nothing to do without streams). A failure is logged
/// and the next tick tries again: trimming is housekeeping, not delivery.
async fn trim_by_age(client: redis::Client, options: RedisOptions, aged: Vec<(String, Duration)>) {
    if aged.is_empty() {
        return std::future::pending().await;
    }
    let mut ticks = tokio::time::interval(options.trim_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut connection = None;
    loop {
        ticks.tick().await;
        if let Err(error) = trim_once(&client, &options, &mut connection, &aged).await {
            connection = None;
            tracing::warn!(error = %error_chain(&error), "cannot trim the Redis streams by age; trying again in {:?}", options.trim_interval);
        }
    }
}

/// One round of age trimming. The cut-off comes from the server's `TIME`, the clock that
/// made the entry ids.
async fn trim_once(
    client: &redis::Client,
    options: &RedisOptions,
    connection: &mut Option<ConnectionManager>,
    aged: &[(String, Duration)],
) -> Result<(), SinkError> {
    let mut manager = match connection {
        Some(manager) => manager.clone(),
        None => connect(client, options).await?,
    };
    *connection = Some(manager.clone());
    let (seconds, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut manager)
        .await
        .map_err(classify)?;
    let now_ms = seconds.saturating_mul(1000).saturating_add(micros / 1000);
    let mut pipe = redis::pipe();
    for (key, age) in aged {
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        let min_id = now_ms.saturating_sub(age_ms);
        pipe.cmd("XTRIM").arg(key).arg("MINID").arg("~").arg(min_id);
    }
    let removed: Vec<u64> = pipe.query_async(&mut manager).await.map_err(classify)?;
    for ((key, age), removed) in aged.iter().zip(removed) {
        tracing::debug!(stream = %key, ?age, removed, "trimmed by age");
    }
    Ok(())
}

/// Transport trouble and server states that pass (loading, busy, out of memory until memory
/// is freed or `maxmemory` raised) are retried; authentication and the rest (wrong key
/// type, syntax, permissions) stop the forwarder.
fn classify(error: RedisError) -> SinkError {
    // The replies of a pipeline's or transaction's commands, without the `EXECABORT` that
    // only says the others failed.
    let failures: Vec<ServerError> = error
        .clone()
        .into_server_errors()
        .iter()
        .flat_map(|errors| errors.iter())
        .map(|(_, reply)| reply.clone())
        .filter(|reply| reply.code() != "EXECABORT")
        .collect();
    let text = describe(&error, &failures);
    let said = |code: &str| failures.iter().any(|reply| reply.code() == code);
    if error.kind() == ErrorKind::AuthenticationFailed || said("WRONGPASS") {
        return SinkError::Rejected(format!(
            "authentication failed: the server refused the password ({text}); give its password (a password file, or in the URL)"
        ));
    }
    if said("NOAUTH") {
        return SinkError::Rejected(format!(
            "authentication required: the server needs a password and none was given ({text}); give its password (a password file, or in the URL)"
        ));
    }
    let passing = !failures.is_empty()
        && failures.iter().all(|reply| {
            matches!(
                reply.code(),
                "OOM" | "LOADING" | "BUSY" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN"
            )
        });
    let transient = passing
        || error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || !matches!(error.retry_method(), RetryMethod::NoRetry)
        || matches!(error.kind(), ErrorKind::Io);
    if transient {
        SinkError::Unavailable(text)
    } else {
        SinkError::Rejected(text)
    }
}

/// The error's text; for a batch whose commands failed, the first failure and how many
/// there were, not one line per command (a full server refuses every `XADD` of a batch).
fn describe(error: &RedisError, failures: &[ServerError]) -> String {
    match failures {
        [first, _, ..] => {
            let what = if error.kind() == ErrorKind::Server(ServerErrorKind::ExecAbort) {
                "the transaction was aborted"
            } else {
                "the pipeline failed"
            };
            // As the server wrote it: `OOM command not allowed ...`.
            let first = match first.details() {
                Some(detail) => format!("{} {detail}", first.code()),
                None => first.code().to_owned(),
            };
            format!(
                "{what}: {} of its commands failed, the first with: {first}",
                failures.len()
            )
        }
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authentication_errors_stop_the_forwarder() {
        let wrong = RedisError::from((
            ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert!(
            matches!(classify(wrong), SinkError::Rejected(m) if m.starts_with("authentication failed")),
        );
    }
}
