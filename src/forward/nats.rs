//! The NATS sink: JetStream publish with acknowledgements and server-side deduplication, or
//! core NATS publish without any confirmation.

use std::time::Duration;

use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use async_nats::{HeaderMap, header::NATS_MESSAGE_ID};

use super::{Delivery, Message, Sink, SinkError};

/// How records are published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatsMode {
    /// JetStream: every publish acknowledged by the stream, `Nats-Msg-Id` = record id.
    JetStream {
        /// The stream that must hold the subject; checked (or created) before the first
        /// batch. `None` publishes without checking.
        stream: Option<String>,
        /// Create the stream (file storage, the subject, `duplicate_window`) if missing.
        create: bool,
        /// The duplicate window of a created stream: how long the server remembers ids.
        duplicate_window: Duration,
    },
    /// Core NATS: fire and forget. At-most-once: a record is never resent, and records
    /// written before a connection failure may be lost.
    Core,
}

/// Where and how to publish.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NatsOptions {
    /// `nats://host:port`.
    pub url: String,
    /// The subject every record is published on, e.g. `fs.events`.
    pub subject: String,
    /// JetStream or core.
    pub mode: NatsMode,
    /// How long a connection attempt, an acknowledgement or a flush may take.
    pub timeout: Duration,
}

impl NatsOptions {
    /// Options for `url`, `subject` and `mode`, with a 5 s timeout.
    #[must_use]
    pub fn new(url: impl Into<String>, subject: impl Into<String>, mode: NatsMode) -> NatsOptions {
        NatsOptions {
            url: url.into(),
            subject: subject.into(),
            mode,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Publishes batches to NATS. In JetStream mode every message of a batch is sent before
/// the acknowledgements are awaited (one round trip per batch, not per record); a record
/// already stored under the same `Nats-Msg-Id` within the duplicate window is acknowledged
/// as a duplicate and not stored again, which makes re-sent batches harmless.
#[derive(Debug)]
pub struct NatsSink {
    options: NatsOptions,
    client: Option<async_nats::Client>,
    context: Option<jetstream::Context>,
    stream_ready: bool,
}

impl NatsSink {
    /// A sink for these options; nothing is connected until the first batch.
    #[must_use]
    pub fn new(options: NatsOptions) -> NatsSink {
        NatsSink {
            options,
            client: None,
            context: None,
            stream_ready: false,
        }
    }

    /// Connects once; afterwards the client reconnects by itself in the background.
    async fn client(&mut self) -> Result<async_nats::Client, SinkError> {
        if let Some(client) = &self.client {
            if client.connection_state() != State::Connected {
                return Err(SinkError::Unavailable(format!(
                    "not connected to {}",
                    self.options.url
                )));
            }
            return Ok(client.clone());
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(self.options.timeout)
            .max_reconnects(None)
            .connect(self.options.url.as_str())
            .await
            .map_err(|error| SinkError::Unavailable(format!("{}: {error}", self.options.url)))?;
        let context = jetstream::ContextBuilder::new()
            .timeout(self.options.timeout)
            .build(client.clone());
        self.client = Some(client.clone());
        self.context = Some(context);
        Ok(client)
    }

    async fn prepare_stream(&mut self, context: &jetstream::Context) -> Result<(), SinkError> {
        let NatsMode::JetStream {
            stream: Some(name),
            create,
            duplicate_window,
        } = &self.options.mode
        else {
            return Ok(());
        };
        if self.stream_ready {
            return Ok(());
        }
        let found = if *create {
            context
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![self.options.subject.clone()],
                    duplicate_window: *duplicate_window,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .map_err(|error| {
                    let message = format!("cannot create stream {name}: {error}");
                    if invalid_subject(&message) {
                        SinkError::Rejected(message)
                    } else {
                        SinkError::Unavailable(message)
                    }
                })?
        } else {
            match context.get_stream(name).await {
                Ok(found) => found,
                Err(error)
                    if matches!(
                        error.kind(),
                        jetstream::context::GetStreamErrorKind::JetStream(_)
                    ) =>
                {
                    return Err(SinkError::Rejected(format!(
                        "JetStream stream {name} does not exist (create it, or pass --create-stream): {error}"
                    )));
                }
                Err(error) => {
                    return Err(SinkError::Unavailable(format!(
                        "cannot look up stream {name}: {error}"
                    )));
                }
            }
        };
        // Published anyway, the messages would land in whichever stream does capture the
        // subject (or none), unchecked.
        let subject = &self.options.subject;
        let subjects = &found.cached_info().config.subjects;
        if !subjects
            .iter()
            .any(|filter| subject_matches(filter, subject))
        {
            return Err(SinkError::Rejected(format!(
                "JetStream stream {name} captures the subjects {subjects:?}, not {subject}: add {subject} to the stream's subjects, or name the stream that captures it"
            )));
        }
        self.stream_ready = true;
        Ok(())
    }

    /// The message's headers; `dedup_subject`, in JetStream mode, names the subject that
    /// the message id carries with the record id: the server deduplicates per stream, and
    /// forwarders of one store to two subjects of one stream must not drop each other's.
    fn headers(message: &Message, dedup_subject: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(subject) = dedup_subject {
            headers.insert(
                NATS_MESSAGE_ID,
                format!("{subject}:{}", message.id).as_str(),
            );
        }
        for (_, header, value) in message.fields() {
            // Header values cannot carry line breaks; such a value stays in the body only.
            if !value.contains(['\r', '\n']) {
                headers.insert(header, value.as_ref());
            }
        }
        headers
    }

    async fn publish_jetstream(&mut self, batch: &[Message]) -> Result<Delivery, SinkError> {
        check_subject(&self.options.subject)
            .map_err(|error| SinkError::Rejected(format!("invalid subject: {error}")))?;
        let client = self.client().await?;
        let Some(context) = self.context.clone() else {
            return Err(SinkError::Unavailable("no JetStream context".into()));
        };
        self.prepare_stream(&context).await?;
        let subject = self.options.subject.clone();
        let headers = prepare(batch, Some(subject.as_str()), client.max_payload())?;
        let mut pending = Vec::with_capacity(batch.len());
        for (message, headers) in batch.iter().zip(headers) {
            let ack = context
                .publish_with_headers(subject.clone(), headers, message.body.clone())
                .await
                .map_err(|error| self.publish_failed("publish", &error))?;
            pending.push(ack);
        }
        let mut duplicates = 0;
        for ack in pending {
            // A missing stream right after a server restart is JetStream still starting,
            // so acknowledgement failures are retried.
            let ack = ack
                .await
                .map_err(|error| self.publish_failed("acknowledgement", &error))?;
            if ack.duplicate {
                duplicates += 1;
            }
        }
        Ok(Delivery::new(duplicates, 0))
    }

    /// A failed JetStream publish or acknowledgement: retried, except a message too large
    /// for the server. A stream gone while the sink may create it is created again first.
    fn publish_failed(
        &mut self,
        what: &str,
        error: &jetstream::context::PublishError,
    ) -> SinkError {
        use jetstream::context::PublishErrorKind;
        if invalid_subject(&error.to_string()) {
            return SinkError::Rejected(format!("{what}: {error}"));
        }
        match error.kind() {
            PublishErrorKind::MaxPayloadExceeded => {
                return SinkError::Rejected(format!("{what}: {error}"));
            }
            PublishErrorKind::StreamNotFound
                if matches!(self.options.mode, NatsMode::JetStream { create: true, .. }) =>
            {
                self.stream_ready = false;
            }
            _ => {}
        }
        SinkError::Unavailable(format!("{what}: {error}"))
    }

    async fn publish_core(&mut self, batch: &[Message]) -> Result<Delivery, SinkError> {
        check_subject(&self.options.subject)
            .map_err(|error| SinkError::Rejected(format!("invalid subject: {error}")))?;
        // Waiting for a connection before sending is safe; after sending, nothing is resent.
        let client = self.client().await?;
        let subject = self.options.subject.clone();
        let headers = prepare(batch, None, client.max_payload())?;
        let mut sent = 0u64;
        let mut failure = None;
        for (message, headers) in batch.iter().zip(headers) {
            match client
                .publish_with_headers(subject.clone(), headers, message.body.clone())
                .await
            {
                Ok(()) => sent += 1,
                Err(error) => {
                    if matches!(
                        error.kind(),
                        async_nats::client::PublishErrorKind::MaxPayloadExceeded
                            | async_nats::client::PublishErrorKind::InvalidSubject
                    ) {
                        return Err(SinkError::Rejected(format!("publish: {error}")));
                    }
                    failure = Some(error.to_string());
                    break;
                }
            }
        }
        if failure.is_none()
            && let Err(error) = tokio::time::timeout(self.options.timeout, client.flush())
                .await
                .map_err(|_| "flush timed out".to_owned())
                .and_then(|flushed| flushed.map_err(|error| error.to_string()))
        {
            failure = Some(error);
        }
        match failure {
            None => Ok(Delivery::default()),
            Some(error) => {
                tracing::warn!(
                    subject = %self.options.subject,
                    error = %error,
                    records = batch.len(),
                    "core NATS could not confirm a flush; at-most-once: the batch is not resent"
                );
                let unsent = batch.len() as u64 - sent;
                Ok(Delivery::new(0, sent + unsent))
            }
        }
    }
}

/// Checks that records can be published on `subject`: dot-separated tokens, none empty (no
/// leading, trailing or double dot), without whitespace or the wildcards `*` and `>` (a
/// subscription's, not a publisher's). A server refuses any other subject, or (core NATS)
/// takes it and delivers nothing.
///
/// # Errors
///
/// What is wrong with the subject.
pub fn check_subject(subject: &str) -> Result<(), String> {
    if subject.is_empty() {
        return Err("a NATS subject cannot be empty".into());
    }
    if subject.chars().any(char::is_whitespace) {
        return Err(format!(
            "the NATS subject {subject:?} contains whitespace, which subjects cannot"
        ));
    }
    if subject.split('.').any(str::is_empty) {
        return Err(format!(
            "the NATS subject {subject:?} has an empty token (a leading, trailing or double dot)"
        ));
    }
    if subject.contains(['*', '>']) {
        return Err(format!(
            "the NATS subject {subject:?} contains a wildcard (`*` or `>`): records are published on one subject"
        ));
    }
    Ok(())
}

/// Whether a client's or server's error says the subject is invalid: permanent, as no
/// retry makes a subject valid (the server says "invalid subject", code 10052 when a
/// stream is created for it).
fn invalid_subject(message: &str) -> bool {
    message.to_ascii_lowercase().contains("invalid subject")
}

/// Each message's headers (see [`NatsSink::headers`]), once every message of the batch was
/// found small enough for the server: a record larger than its `max_payload` could never
/// be published, so the batch is refused before any of it is sent.
fn prepare(
    batch: &[Message],
    dedup_subject: Option<&str>,
    max_payload: usize,
) -> Result<Vec<HeaderMap>, SinkError> {
    batch
        .iter()
        .map(|message| {
            let headers = NatsSink::headers(message, dedup_subject);
            let size = wire_size(&headers, &message.body);
            if size > max_payload {
                return Err(SinkError::Rejected(format!(
                    "record {} (id {}) is {size} bytes as a NATS message, more than the server's max_payload of {max_payload} bytes: it can never be published (raise max_payload in the server's configuration, or leave the record out with the criteria flags)",
                    message.sequence, message.id
                )));
            }
            Ok(headers)
        })
        .collect()
}

/// The bytes a message counts against `max_payload`, as the client writes it: the body,
/// and a header block of `NATS/1.0\r\n`, a `Name: value\r\n` line per value and `\r\n`.
fn wire_size(headers: &HeaderMap, body: &[u8]) -> usize {
    if headers.is_empty() {
        return body.len();
    }
    let lines: usize = headers
        .iter()
        .flat_map(|(name, values)| {
            values.iter().map(move |value| {
                AsRef::<[u8]>::as_ref(name).len() + ": ".len() + value.as_str().len() + 2
            })
        })
        .sum();
    "NATS/1.0\r\n".len() + lines + "\r\n".len() + body.len()
}

/// Whether a stream's subject `filter` (tokens split by `.`; `*` matches one token, a final
/// `>` one or more) captures `subject`.
fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut subject_tokens = subject.split('.');
    for token in filter.split('.') {
        match (token, subject_tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (token, Some(actual)) if token == actual => {}
            _ => return false,
        }
    }
    subject_tokens.next().is_none()
}

impl Sink for NatsSink {
    fn target(&self) -> &'static str {
        match self.options.mode {
            NatsMode::JetStream { .. } => "jetstream",
            NatsMode::Core => "nats",
        }
    }

    async fn publish(&mut self, batch: &[Message]) -> Result<Delivery, SinkError> {
        match self.options.mode {
            NatsMode::JetStream { .. } => self.publish_jetstream(batch).await,
            NatsMode::Core => self.publish_core(batch).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_subjects_match_as_nats_matches_them() {
        assert!(subject_matches("fs.events", "fs.events"));
        assert!(subject_matches("fs.*", "fs.events"));
        assert!(subject_matches("fs.>", "fs.events.a"));
        assert!(subject_matches(">", "w2.ev"));
        assert!(!subject_matches("w.other", "w2.ev"));
        assert!(!subject_matches("fs.*", "fs.events.a"));
        assert!(!subject_matches("fs.events.a", "fs.events"));
        assert!(!subject_matches("fs.>", "fs"));
    }

    #[test]
    fn the_size_checked_is_the_size_the_client_sends() {
        let mut headers = HeaderMap::new();
        headers.insert("Esl-Record-Id", "abc");
        headers.insert("Esl-Append-Sequence", "7");
        let expected = "NATS/1.0\r\nEsl-Record-Id: abc\r\nEsl-Append-Sequence: 7\r\n\r\n".len();
        assert_eq!(wire_size(&headers, b"body"), expected + 4);
        assert_eq!(wire_size(&HeaderMap::new(), b"body"), 4);
    }
}
