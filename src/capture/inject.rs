//! How are stored `api.dispatch` / `bgapi.dispatch` records sent again to a live FreeSWITCH?
//!
//! [`EslInjector`] implements the replay executor's [`Injector`]: for each cleared candidate
//! it reads the command line the capture stored (`payload.raw_payload`, `api <cmd> <args>` or
//! `bgapi <cmd> <args>`) and sends it over one authenticated [`CommandConnection`], opened on
//! first use and reused. The executor is synchronous, so the injector owns a small
//! current-thread tokio runtime and blocks on it; it must not be called from inside another
//! runtime's worker thread.
//!
//! A reply of any status counts as injected (the command reached the switch); the status
//! and text are reported in the outcome metadata. A transport failure is an error, which
//! stops the replay; the broken connection is dropped so a later call reconnects. Commands
//! are never retried, since a command may have reached the switch before the failure.

use std::time::Duration;

use serde_json::Value;

use super::client::Password;
use super::command::{CommandConnection, CommandError, CommandReply};
use crate::esl::session::ReplyStatus;
use crate::record::{CapturePayload, JsonMap};
use crate::replay::{BoxError, ExecutionCandidate, InjectionResult, Injector};

/// The action word of a sent command.
pub const INJECTED: &str = "injected";

/// Default time allowed to connect and authenticate, and for each reply.
pub const DEFAULT_INJECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the ESL injector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InjectError {
    /// The injector's runtime could not be built.
    #[error("cannot start the injector's runtime")]
    Runtime(#[source] std::io::Error),
    /// The record has no command line to send.
    #[error("record {sequence} ({artifact}) has no string payload.raw_payload to send")]
    MissingCommand {
        /// Its append sequence.
        sequence: u64,
        /// Its artifact name.
        artifact: String,
    },
    /// The stored command line does not match the artifact (`api.dispatch` must hold
    /// `api <command>`, `bgapi.dispatch` `bgapi <command>`).
    #[error("record {sequence} ({artifact}) holds {line:?}, not a `{expected} <command>` line")]
    UnexpectedCommand {
        /// Its append sequence.
        sequence: u64,
        /// Its artifact name.
        artifact: String,
        /// The stored line.
        line: String,
        /// The keyword the artifact calls for.
        expected: &'static str,
    },
    /// Connecting, authenticating or sending failed.
    #[error("re-injecting record {sequence} to {address}")]
    Command {
        /// Its append sequence.
        sequence: u64,
        /// The target.
        address: String,
        /// The cause.
        #[source]
        source: CommandError,
    },
}

/// Where and how the injector sends.
#[derive(Debug, Clone)]
pub struct InjectorConfig {
    /// `host:port` of the target event socket.
    pub address: String,
    /// The `auth` password.
    pub password: Password,
    /// Connect-and-authenticate timeout and per-reply timeout.
    pub timeout: Duration,
}

impl InjectorConfig {
    /// A target at `address` with FreeSWITCH's default password and timeout.
    #[must_use]
    pub fn new(address: impl Into<String>) -> InjectorConfig {
        InjectorConfig {
            address: address.into(),
            password: Password::default(),
            timeout: DEFAULT_INJECT_TIMEOUT,
        }
    }
}

/// Which command keyword an executable artifact carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Api,
    BgApi,
}

impl Kind {
    fn keyword(self) -> &'static str {
        match self {
            Kind::Api => "api",
            Kind::BgApi => "bgapi",
        }
    }
}

/// Re-sends stored dispatches to a live event socket (see the module docs).
#[derive(Debug)]
pub struct EslInjector {
    config: InjectorConfig,
    runtime: tokio::runtime::Runtime,
    connection: Option<CommandConnection>,
    sent: u64,
}

impl EslInjector {
    /// An injector for `config`; it connects on the first injection.
    ///
    /// # Errors
    ///
    /// [`InjectError::Runtime`] if its runtime cannot be built.
    pub fn new(config: InjectorConfig) -> Result<EslInjector, InjectError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(InjectError::Runtime)?;
        Ok(EslInjector {
            config,
            runtime,
            connection: None,
            sent: 0,
        })
    }

    /// The target address.
    #[must_use]
    pub fn address(&self) -> &str {
        &self.config.address
    }

    /// How many commands were sent and answered.
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sends one command line (`api …` or `bgapi …`, as stored) and returns its reply.
    fn send(&mut self, kind: Kind, command: &str) -> Result<CommandReply, CommandError> {
        let config = &self.config;
        let connection = &mut self.connection;
        let reply = self.runtime.block_on(async {
            let open = match connection {
                Some(open) => open,
                None => connection.insert(
                    CommandConnection::connect(&config.address, &config.password, config.timeout)
                        .await?,
                ),
            };
            match kind {
                Kind::Api => open.api(command, config.timeout).await,
                Kind::BgApi => open.bgapi(command, config.timeout).await,
            }
        });
        if reply.is_err() {
            // FIFO reply matching is unsafe after a failure: start afresh next time.
            self.connection = None;
        }
        reply
    }

    /// Sends `exit` and closes the connection, if one is open.
    ///
    /// # Errors
    ///
    /// I/O failures while closing.
    pub fn close(&mut self) -> Result<(), CommandError> {
        match self.connection.take() {
            Some(connection) => self.runtime.block_on(connection.close()),
            None => Ok(()),
        }
    }
}

/// The kind and the command text after the keyword, checked against the artifact name.
fn command_of(candidate: &ExecutionCandidate) -> Result<(Kind, String), InjectError> {
    let sequence = candidate.append_sequence();
    let artifact = candidate.artifact_name();
    let kind = if artifact.starts_with("bgapi.") {
        Kind::BgApi
    } else {
        Kind::Api
    };
    let Some(line) = CapturePayload::of(candidate.payload()).raw_text() else {
        return Err(InjectError::MissingCommand {
            sequence,
            artifact: artifact.to_owned(),
        });
    };
    let trimmed = line.trim();
    let command = trimmed
        .split_once(char::is_whitespace)
        .filter(|(keyword, _)| *keyword == kind.keyword())
        .map(|(_, rest)| rest.trim())
        .filter(|rest| !rest.is_empty());
    match command {
        Some(command) => Ok((kind, command.to_owned())),
        None => Err(InjectError::UnexpectedCommand {
            sequence,
            artifact: artifact.to_owned(),
            line: line.to_owned(),
            expected: kind.keyword(),
        }),
    }
}

/// The error's message followed by each of its causes, joined by `: `.
fn with_causes(error: &dyn std::error::Error) -> BoxError {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text.into()
}

fn status_word(status: &ReplyStatus) -> &'static str {
    match status {
        ReplyStatus::Ok => "ok",
        ReplyStatus::Err => "err",
        ReplyStatus::Other => "other",
    }
}

impl Injector for EslInjector {
    fn name(&self) -> &str {
        "esl"
    }

    fn inject(&mut self, candidate: &ExecutionCandidate) -> Result<InjectionResult, BoxError> {
        let (kind, command) = command_of(candidate)?;
        let reply = self.send(kind, &command).map_err(|source| {
            // The executor keeps only the message: carry the whole cause chain in it.
            with_causes(&InjectError::Command {
                sequence: candidate.append_sequence(),
                address: self.config.address.clone(),
                source,
            })
        })?;
        self.sent += 1;
        let mut metadata = JsonMap::new();
        let mut put = |key: &str, value: Value| {
            metadata.insert(key.to_owned(), value);
        };
        put("target", Value::String(self.config.address.clone()));
        put("command_type", Value::String(kind.keyword().to_owned()));
        put(
            "command_line",
            Value::String(format!("{} {command}", kind.keyword())),
        );
        put(
            "reply_status",
            Value::String(status_word(&reply.status).to_owned()),
        );
        put("reply_text", Value::String(reply.text()));
        if let Some(job_uuid) = reply.job_uuid {
            put("job_uuid", Value::String(job_uuid));
        }
        if let Some(original) = candidate.source_record().job_uuid() {
            put("original_job_uuid", Value::String(original.to_owned()));
        }
        Ok(InjectionResult::new(INJECTED, metadata)?)
    }
}
