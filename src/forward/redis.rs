//! The Redis Streams sink: pipelined `XADD` batches over a reconnecting connection.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RetryMethod};

use super::message::FIELD_RECORD;
use super::{Delivery, Message, Sink, SinkError};

/// How the stream is kept short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trim {
    /// `MAXLEN ~ n`: about the newest `n` entries are kept.
    MaxLen(u64),
    /// `MINID ~ now-age`: entries older than `age` (by their time-based stream id) go.
    MaxAge(Duration),
}

/// Where and how to write.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RedisOptions {
    /// `redis://host:port[/db]` (or `rediss://`, `redis+unix://` as the client accepts).
    pub url: String,
    /// The stream key, e.g. `fs:events`.
    pub stream: String,
    /// Optional trimming on every `XADD`.
    pub trim: Option<Trim>,
    /// How long a connection attempt may take.
    pub connect_timeout: Duration,
    /// How long the server may take to answer a batch.
    pub response_timeout: Duration,
}

impl RedisOptions {
    /// Options for `url` and `stream`, without trimming, with 2 s / 10 s timeouts.
    #[must_use]
    pub fn new(url: impl Into<String>, stream: impl Into<String>) -> RedisOptions {
        RedisOptions {
            url: url.into(),
            stream: stream.into(),
            trim: None,
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(10),
        }
    }
}

/// Publishes each batch as one `MULTI`/`EXEC` pipeline of `XADD key [trim] * field value…`,
/// so a batch is stored entirely or not at all (unless the connection breaks after `EXEC`
/// ran, when the retried batch is stored twice: at-least-once). Stream ids are assigned by
/// the server (`*`); the `sequence` field identifies a record for consumers that dedupe.
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
    /// [`SinkError::Rejected`] for an invalid URL.
    pub fn new(options: RedisOptions) -> Result<RedisSink, SinkError> {
        let client = redis::Client::open(options.url.as_str())
            .map_err(|error| SinkError::Rejected(format!("invalid Redis URL: {error}")))?;
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
        // The forwarder owns retries and backoff; the manager only reconnects once per use.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout))
            .set_response_timeout(Some(self.options.response_timeout))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_with_config(self.client.clone(), config)
            .await
            .map_err(classify)?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    fn pipeline(&self, batch: &[Message]) -> redis::Pipeline {
        let mut pipe = redis::Pipeline::with_capacity(batch.len());
        pipe.atomic();
        let min_id = match self.options.trim {
            Some(Trim::MaxAge(age)) => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
                let cutoff = now - i128::try_from(age.as_millis()).unwrap_or(i128::MAX);
                Some(cutoff.max(0).to_string())
            }
            _ => None,
        };
        for message in batch {
            // Room for every argument (the stream, trimming, `*`, 6 fields and values) and
            // their bytes, so that building the command does not reallocate.
            let mut cmd =
                redis::Cmd::with_capacity(18, self.options.stream.len() + message.body.len() + 256);
            cmd.arg("XADD").arg(&self.options.stream);
            match (self.options.trim, &min_id) {
                (Some(Trim::MaxLen(max)), _) => {
                    cmd.arg("MAXLEN").arg("~").arg(max);
                }
                (Some(Trim::MaxAge(_)), Some(min_id)) => {
                    cmd.arg("MINID").arg("~").arg(min_id);
                }
                _ => {}
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

    async fn publish(&mut self, batch: &[Message]) -> Result<Delivery, SinkError> {
        let mut connection = self.connection().await?;
        let pipe = self.pipeline(batch);
        pipe.query_async::<()>(&mut connection)
            .await
            .map_err(classify)?;
        Ok(Delivery::default())
    }
}

/// Transport trouble and server states that pass (loading, busy) are retried; the rest
/// (wrong key type, syntax, permissions) stops the forwarder.
fn classify(error: RedisError) -> SinkError {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || !matches!(error.retry_method(), RetryMethod::NoRetry)
        || matches!(error.kind(), ErrorKind::Io);
    if transient {
        SinkError::Unavailable(error.to_string())
    } else {
        SinkError::Rejected(error.to_string())
    }
}
