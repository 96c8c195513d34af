//! Which commands does an ESL client send, and what do their replies and the other inbound
//! frames mean?
//!
//! The command and reply types of the sans-IO [`Session`](super::session::Session) (spec:
//! `esl-protocol.md` §1.3-1.6): [`Command`] and its wire encoding, the requests in flight
//! ([`Pending`]) with their [`CommandKind`], [`CommandId`] and [`Origin`], how a reply reads
//! ([`ReplyStatus`]), tracked bgapi [`Job`]s, what an inbound frame is ([`Inbound`]), and the
//! desired [`Subscriptions`] restored after every authentication. They are re-exported from
//! [`super::session`].

use std::time::Duration;

use bytes::Bytes;

use super::session::SessionError;

/// The event format named in an `event` command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EventFormat {
    /// `text/event-plain`: exact, ASCII-safe bytes (the capture default).
    #[default]
    Plain,
    /// `text/event-json`.
    Json,
    /// `text/event-xml`.
    Xml,
}

impl EventFormat {
    fn keyword(self) -> &'static str {
        match self {
            EventFormat::Plain => "plain",
            EventFormat::Json => "json",
            EventFormat::Xml => "xml",
        }
    }
}

/// A command the client sends after authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `event <format> <names…>`: adds events to the subscription.
    Event {
        /// Format of every later event on the connection.
        format: EventFormat,
        /// Event names; put `CUSTOM <subclasses…>` last.
        names: Vec<String>,
    },
    /// `nixevent <names…>`: removes events from the subscription.
    NixEvent {
        /// Event names to remove.
        names: Vec<String>,
    },
    /// `noevents`: removes every subscription.
    NoEvents,
    /// `filter <header> <value>`.
    Filter {
        /// Header name.
        header: String,
        /// Value (`+`/`-` prefix, `/regex/`, or a literal).
        value: String,
    },
    /// `filter delete <header> [<value>]`.
    FilterDelete {
        /// Header name (or `all`).
        header: String,
        /// Value; `None` deletes every filter on the header.
        value: Option<String>,
    },
    /// `api <command>`: runs synchronously; answered by an `api/response`.
    Api {
        /// Command and arguments (`status`, `show channels as json`).
        command: String,
    },
    /// `bgapi <command>` with our own `Job-UUID` header.
    BgApi {
        /// Command and arguments.
        command: String,
        /// The job's UUID, chosen by us so correlation is deterministic.
        job_uuid: String,
    },
    /// `log <level>`: stream console logs as `log/data` frames.
    Log {
        /// Log level (`debug`, `7`, …).
        level: String,
    },
    /// `nolog`.
    NoLog,
    /// `exit`: ends the session.
    Exit,
}

impl Command {
    /// The command line as sent, without the trailing newline (`api status`).
    #[must_use]
    pub fn line(&self) -> String {
        match self {
            Command::Event { format, names } => {
                format!("event {} {}", format.keyword(), names.join(" "))
            }
            Command::NixEvent { names } => format!("nixevent {}", names.join(" ")),
            Command::NoEvents => "noevents".into(),
            Command::Filter { header, value } => format!("filter {header} {value}"),
            Command::FilterDelete {
                header,
                value: Some(value),
            } => format!("filter delete {header} {value}"),
            Command::FilterDelete {
                header,
                value: None,
            } => format!("filter delete {header}"),
            Command::Api { command } => format!("api {command}"),
            Command::BgApi { command, .. } => format!("bgapi {command}"),
            Command::Log { level } => format!("log {level}"),
            Command::NoLog => "nolog".into(),
            Command::Exit => "exit".into(),
        }
    }

    /// The exact bytes sent: the command line, extra header lines, an empty line.
    #[must_use]
    pub fn encode(&self) -> Bytes {
        let mut text = self.line();
        text.push('\n');
        if let Command::BgApi { job_uuid, .. } = self {
            text.push_str("Job-UUID: ");
            text.push_str(job_uuid);
            text.push('\n');
        }
        text.push('\n');
        Bytes::from(text)
    }

    /// The kind of this command.
    #[must_use]
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::Event { .. } => CommandKind::Event,
            Command::NixEvent { .. } => CommandKind::NixEvent,
            Command::NoEvents => CommandKind::NoEvents,
            Command::Filter { .. } => CommandKind::Filter,
            Command::FilterDelete { .. } => CommandKind::FilterDelete,
            Command::Api { .. } => CommandKind::Api,
            Command::BgApi { .. } => CommandKind::BgApi,
            Command::Log { .. } => CommandKind::Log,
            Command::NoLog => CommandKind::NoLog,
            Command::Exit => CommandKind::Exit,
        }
    }

    /// Checks that no text would break the line framing (a newline ends a command).
    pub(super) fn validate(&self) -> Result<(), SessionError> {
        let mut parts: Vec<&str> = Vec::new();
        match self {
            Command::Event { names, .. } | Command::NixEvent { names } => {
                if names.is_empty() {
                    return Err(SessionError::EmptyEventList);
                }
                parts.extend(names.iter().map(String::as_str));
            }
            Command::Filter { header, value } => parts.extend([header.as_str(), value.as_str()]),
            Command::FilterDelete { header, value } => {
                parts.push(header);
                parts.extend(value.as_deref());
            }
            Command::Api { command } => parts.push(command),
            Command::BgApi { command, job_uuid } => parts.extend([command.as_str(), job_uuid]),
            Command::Log { level } => parts.push(level),
            Command::NoEvents | Command::NoLog | Command::Exit => {}
        }
        match parts.iter().find(|p| p.contains(['\n', '\r'])) {
            Some(part) => Err(SessionError::LineBreakInCommand {
                text: part.chars().take(64).collect(),
            }),
            None => Ok(()),
        }
    }
}

/// What a pending request is, without its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CommandKind {
    /// `auth`.
    Auth,
    /// `event`.
    Event,
    /// `nixevent`.
    NixEvent,
    /// `noevents`.
    NoEvents,
    /// `filter`.
    Filter,
    /// `filter delete`.
    FilterDelete,
    /// `api`.
    Api,
    /// `bgapi`.
    BgApi,
    /// `log`.
    Log,
    /// `nolog`.
    NoLog,
    /// `exit`.
    Exit,
}

impl CommandKind {
    /// The wire keyword (`api`, `filter`, …; `filter delete` for deletions).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Auth => "auth",
            CommandKind::Event => "event",
            CommandKind::NixEvent => "nixevent",
            CommandKind::NoEvents => "noevents",
            CommandKind::Filter => "filter",
            CommandKind::FilterDelete => "filter delete",
            CommandKind::Api => "api",
            CommandKind::BgApi => "bgapi",
            CommandKind::Log => "log",
            CommandKind::NoLog => "nolog",
            CommandKind::Exit => "exit",
        }
    }
}

/// Identifies one request within a session (auth, restore, probe and user commands alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

/// Why a request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The handshake's `auth`.
    Handshake,
    /// Re-applying the desired subscriptions and filters after auth.
    Restore,
    /// The liveness probe (`api status`).
    Probe,
    /// The session's user.
    User,
}

/// One request in flight, as handed back with its reply. The auth password is never kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The request's id.
    pub id: CommandId,
    /// Why it was sent.
    pub origin: Origin,
    /// The command; `None` for `auth`.
    pub command: Option<Command>,
    /// When it was sent.
    pub sent_at: Duration,
    pub(super) deadline: Duration,
}

impl Pending {
    /// The request's kind.
    #[must_use]
    pub fn kind(&self) -> CommandKind {
        self.command
            .as_ref()
            .map_or(CommandKind::Auth, Command::kind)
    }

    /// The command line as sent (`auth` without its password).
    #[must_use]
    pub fn line(&self) -> String {
        self.command
            .as_ref()
            .map_or_else(|| "auth".to_owned(), Command::line)
    }
}

/// How a reply reads: FreeSWITCH's `+OK` / `-ERR` convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// Text starts with `+OK`.
    Ok,
    /// Text starts with `-ERR`.
    Err,
    /// Neither (`api/response` bodies such as `UP 0 years…`, `getvar` values).
    Other,
}

impl ReplyStatus {
    pub(super) fn of(text: &[u8]) -> ReplyStatus {
        if text.starts_with(b"+OK") {
            ReplyStatus::Ok
        } else if text.starts_with(b"-ERR") {
            ReplyStatus::Err
        } else {
            ReplyStatus::Other
        }
    }
}

/// A tracked bgapi job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// The job's UUID.
    pub job_uuid: String,
    /// The `bgapi` command line.
    pub line: String,
    /// When the bgapi was sent.
    pub sent_at: Duration,
}

/// What one inbound frame is, decided by its `Content-Type` and the session state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// `auth/request`.
    Greeting,
    /// `command/reply` or `api/response`, matched to the oldest pending request.
    Reply {
        /// The request it answers.
        pending: Pending,
        /// `+OK` / `-ERR` / other, from `Reply-Text` or the `api/response` body.
        status: ReplyStatus,
        /// The `Job-UUID` of a bgapi acknowledgement.
        job_uuid: Option<String>,
    },
    /// A reply while no request was pending.
    UnexpectedReply,
    /// `text/event-plain|json|xml`.
    Event {
        /// The Event-Name, when the body could be read (plain or JSON).
        event_name: Option<String>,
        /// For a BACKGROUND_JOB of a job this session tracks: that job (now settled).
        completes: Option<Job>,
    },
    /// `text/disconnect-notice`; `linger` when it is a linger notice (the socket stays).
    Disconnect {
        /// Whether this is a linger notice.
        linger: bool,
    },
    /// `text/rude-rejection` (ACL refusal).
    RudeRejection,
    /// `log/data`.
    Log,
    /// Any other or no `Content-Type`.
    Unknown,
}

/// The desired subscription state, restored after every authentication.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscriptions {
    /// Event names (plain format); `ALL` subscribes to everything. Put `CUSTOM <subclasses>`
    /// last.
    pub events: Vec<String>,
    /// Filters as `(header, value)`, applied in order.
    pub filters: Vec<(String, String)>,
}

impl Subscriptions {
    /// Subscribes to every event (`event plain ALL`), no filters.
    #[must_use]
    pub fn all() -> Subscriptions {
        Subscriptions {
            events: vec!["ALL".into()],
            filters: Vec::new(),
        }
    }

    /// Checks that every event name, filter header and filter value is non-empty and
    /// holds no line break, so that [`Subscriptions::restore_commands`] send exactly the
    /// commands meant (a line break would smuggle another command to the switch).
    ///
    /// # Errors
    ///
    /// [`SessionError::EmptyText`] or [`SessionError::LineBreakInCommand`].
    pub fn validate(&self) -> Result<(), SessionError> {
        let empty = |text: &str, what| {
            if text.trim().is_empty() {
                Err(SessionError::EmptyText { what })
            } else {
                Ok(())
            }
        };
        for name in &self.events {
            empty(name, "event name")?;
        }
        for (header, value) in &self.filters {
            empty(header, "filter header")?;
            empty(value, "filter value")?;
        }
        self.restore_commands()
            .iter()
            .try_for_each(Command::validate)
    }

    /// The commands that install this state on a fresh connection.
    #[must_use]
    pub fn restore_commands(&self) -> Vec<Command> {
        let mut commands = Vec::new();
        if !self.events.is_empty() {
            commands.push(Command::Event {
                format: EventFormat::Plain,
                names: self.events.clone(),
            });
        }
        commands.extend(self.filters.iter().map(|(h, v)| Command::Filter {
            header: h.clone(),
            value: v.clone(),
        }));
        commands
    }
}
