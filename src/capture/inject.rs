//! How are stored `api.dispatch` / `bgapi.dispatch` records sent again to a live FreeSWITCH?
//!
//! [`EslInjector`] implements the replay executor's [`Injector`]: for each cleared candidate
//! it reads the command line the capture stored (`payload.raw_payload`, `api <cmd> <args>` or
//! `bgapi <cmd> <args>`) and sends it over one authenticated [`CommandConnection`], opened on
//! first use and reused. The executor is synchronous, so the injector owns a small
//! current-thread tokio runtime and blocks on it; it must not be called from inside another
//! runtime's worker thread.
//!
//! A record in the reference's dispatch shape (`payload {"command", "args"}`, no
//! `raw_payload`) is sent as `<command> <args>`. [`Injector::check`] runs the same parse,
//! so a dry-run reports a record the injector cannot send as not re-injectable.
//!
//! A reply of any status counts as injected (the command reached the switch); the status
//! and text are reported in the outcome metadata. A transport failure is an error, which
//! stops the replay; the broken connection is dropped so a later call reconnects. Commands
//! are never retried, since a command may have reached the switch before the failure. A
//! failure to connect or authenticate is [`NotSent`] (nothing left this process); any
//! later failure, a reply that does not come within [`InjectorConfig::reply_timeout`]
//! among them, leaves the command unconfirmed.

use std::time::Duration;

use serde_json::Value;

use super::client::Password;
use super::command::{CommandConnection, CommandError, CommandReply};
use crate::esl::session::ReplyStatus;
use crate::record::{CapturePayload, JsonMap};
use crate::replay::{BoxError, ExecutionCandidate, InjectionResult, Injector, NotSent};

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
    #[error(
        "record {sequence} ({artifact}) has no command to send: neither a string payload.raw_payload nor a string payload.command (with an optional string payload.args, on one line)"
    )]
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
    /// Connect-and-authenticate timeout.
    pub timeout: Duration,
    /// How long a sent command's reply may take. Past it the command is *unconfirmed*: it
    /// reached the switch (or may have) and may still run, so it is never sent again
    /// automatically.
    pub reply_timeout: Duration,
}

impl InjectorConfig {
    /// A target at `address` with FreeSWITCH's default password and timeout.
    #[must_use]
    pub fn new(address: impl Into<String>) -> InjectorConfig {
        InjectorConfig {
            address: address.into(),
            password: Password::default(),
            timeout: DEFAULT_INJECT_TIMEOUT,
            reply_timeout: DEFAULT_INJECT_TIMEOUT,
        }
    }
}

/// Whether a failed send reached the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// Connecting or authenticating failed: the command never left this process.
    No,
    /// The command was written (or being written) when the failure came.
    Maybe,
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

    /// Sends one command (`api …` or `bgapi …`) and returns its reply. The error says
    /// whether the command was sent: [`Sent::No`] when connecting or authenticating
    /// failed, else [`Sent::Maybe`].
    fn send(&mut self, kind: Kind, command: &str) -> Result<CommandReply, (Sent, CommandError)> {
        let config = &self.config;
        let connection = &mut self.connection;
        let reply = self.runtime.block_on(async {
            let open = match connection {
                Some(open) => open,
                None => connection.insert(
                    CommandConnection::connect(&config.address, &config.password, config.timeout)
                        .await
                        .map_err(|error| (Sent::No, error))?,
                ),
            };
            match kind {
                Kind::Api => open.api(command, config.reply_timeout).await,
                Kind::BgApi => open.bgapi(command, config.reply_timeout).await,
            }
            .map_err(|error| (Sent::Maybe, error))
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
///
/// The command is the line the capture stored (`payload.raw_payload`, `api <cmd> <args>`),
/// or, for a record in the reference's dispatch shape (`payload {"command", "args"}`,
/// reference semantics §1.7), `<command> <args>` trimmed, as the capture would have
/// stored it (`esl-protocol.md`, the dispatch artifacts).
fn command_of(candidate: &ExecutionCandidate) -> Result<(Kind, String), InjectError> {
    let sequence = candidate.append_sequence();
    let artifact = candidate.artifact_name();
    let kind = if artifact.starts_with("bgapi.") {
        Kind::BgApi
    } else {
        Kind::Api
    };
    let Some(line) = CapturePayload::of(candidate.payload()).raw_text() else {
        return reference_command(candidate.payload())
            .map(|command| (kind, command))
            .ok_or_else(|| InjectError::MissingCommand {
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

/// The command line an [`EslInjector`] would send for a candidate (`api <cmd> <args>` or
/// `bgapi <cmd> <args>`), without sending it: what a dry-run checks.
///
/// # Errors
///
/// [`InjectError::MissingCommand`] or [`InjectError::UnexpectedCommand`]: the record holds
/// nothing the injector can send.
pub fn command_line(candidate: &ExecutionCandidate) -> Result<String, InjectError> {
    command_of(candidate).map(|(kind, command)| format!("{} {command}", kind.keyword()))
}

/// The command of a reference-shaped dispatch payload: a non-blank string `command` and
/// an optional string `args` (missing or `null` for none), joined by a space and trimmed.
/// A line break in either would let one record send a second command: refused.
fn reference_command(payload: &JsonMap) -> Option<String> {
    let command = payload.get("command")?.as_str()?;
    let args = match payload.get("args") {
        None | Some(Value::Null) => "",
        Some(Value::String(args)) => args,
        Some(_) => return None,
    };
    let line = format!("{command} {args}");
    let line = line.trim();
    (!command.trim().is_empty() && !line.contains(['\n', '\r'])).then(|| line.to_owned())
}

/// The error's message followed by each of its causes, joined by `: `.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
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

    fn check(&self, candidate: &ExecutionCandidate) -> Result<(), BoxError> {
        command_of(candidate).map(|_| ()).map_err(Into::into)
    }

    fn inject(&mut self, candidate: &ExecutionCandidate) -> Result<InjectionResult, BoxError> {
        let (kind, command) =
            command_of(candidate).map_err(|error| NotSent::new(with_causes(&error)))?;
        let reply = self.send(kind, &command).map_err(|(sent, source)| {
            // The executor keeps only the message: carry the whole cause chain in it.
            let text = with_causes(&InjectError::Command {
                sequence: candidate.append_sequence(),
                address: self.config.address.clone(),
                source,
            });
            match sent {
                Sent::No => Box::new(NotSent::new(text)) as BoxError,
                Sent::Maybe => format!(
                    "{text} (the command was sent, or may have been, and its reply did not come: it is unconfirmed)"
                )
                .into(),
            }
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
