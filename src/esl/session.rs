//! What does an inbound ESL client session do with each frame, command and tick of time?
//!
//! [`Session`] is a sans-IO state machine for one TCP connection to FreeSWITCH (spec:
//! `esl-protocol.md` §1.1, §1.3-1.6, §1.10-1.11, §4.9). It never touches a socket or a
//! clock: the driver feeds it decoded [`Frame`]s ([`Session::handle_frame`]), the current
//! monotonic time as a [`Duration`] since any fixed origin, and timer expiries
//! ([`Session::handle_timeout`] at [`Session::poll_timeout`]); it hands back the bytes to
//! write ([`Session::poll_transmit`]) and lifecycle [`Output`]s ([`Session::poll_output`]).
//! The same inputs always give the same outputs, so tests and replay drive it exactly.
//!
//! - Handshake: greeting (`auth/request`) → [`Session::authenticate`] → `+OK accepted`, then
//!   the desired [`Subscriptions`] are restored (`event plain …`, then each `filter`); the
//!   session reports [`Output::Ready`] only when every restore command got `+OK`.
//! - Commands ([`Command`]): `event`, `nixevent`, `noevents`, `filter`, `filter delete`,
//!   `api`, `bgapi` (always with our own `Job-UUID` header), `log`, `nolog`, `exit`.
//!   FreeSWITCH answers strictly in order and nothing in a reply names its command, so
//!   replies are matched first-in first-out ([`Inbound::Reply`]).
//! - bgapi jobs are tracked by `Job-UUID` until their `BACKGROUND_JOB` event arrives
//!   ([`Inbound::Event`] names the job) or the orphan timeout passes. Jobs can be carried to
//!   the next connection ([`Session::take_jobs`]), since FreeSWITCH broadcasts the result.
//! - Liveness: any inbound frame is activity. After `idle_timeout` without one (default two
//!   HEARTBEAT intervals) the session turns [`Liveness::Degraded`] and probes with
//!   `api status`; if nothing arrives within `probe_timeout` it is [`Liveness::Dead`] and
//!   closes. A command that times out closes the session too, because a late reply would
//!   otherwise be matched to the wrong command.
//! - End: a disconnect notice (not a linger notice), a rude rejection, an auth `-ERR`, a
//!   timeout, a write the driver could not make ([`Session::handle_write_timeout`]) or end
//!   of stream close the session; every pending command is then settled
//!   with [`Output::Abandoned`], and [`Output::Closed`] says why and whether a reconnect
//!   makes sense.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;

pub use super::command::{
    Command, CommandId, CommandKind, EventFormat, Inbound, Job, Origin, Pending, ReplyStatus,
    Subscriptions,
};
use super::event::event_header;
use super::frame::{Frame, header_ci};

/// Timeouts and intervals of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// From connect to `+OK accepted` (greeting and auth reply).
    pub handshake_timeout: Duration,
    /// How long an `api` command may wait for its reply.
    pub api_timeout: Duration,
    /// How long any other command may wait for its `command/reply`.
    pub command_timeout: Duration,
    /// Without any inbound frame for this long the session probes (HEARTBEAT fires every
    /// 20 s by default, so the default is two missed heartbeats).
    pub idle_timeout: Duration,
    /// How long the probe may take before the session is declared dead.
    pub probe_timeout: Duration,
    /// How long a bgapi job is tracked before it is reported orphaned.
    pub job_orphan_timeout: Duration,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            api_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(40),
            probe_timeout: Duration::from_secs(10),
            job_orphan_timeout: Duration::from_secs(120),
        }
    }
}

/// Connection liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Frames arrive.
    Live,
    /// Idle past the window; a probe may be out.
    Degraded,
    /// The probe went unanswered.
    Dead,
}

impl Liveness {
    /// `live`, `degraded` or `dead`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Live => "live",
            Liveness::Degraded => "degraded",
            Liveness::Dead => "dead",
        }
    }
}

/// Where the session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Connected; waiting for `auth/request`.
    AwaitingGreeting,
    /// Greeting received; the driver should call [`Session::authenticate`].
    Greeted,
    /// `auth` sent.
    Authenticating,
    /// Authenticated; restoring subscriptions and filters.
    Restoring,
    /// Authenticated and restored.
    Ready,
    /// Closed (see [`Output::Closed`]).
    Closed,
}

impl Phase {
    /// A short lower-case name.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::AwaitingGreeting => "awaiting_greeting",
            Phase::Greeted => "greeted",
            Phase::Authenticating => "authenticating",
            Phase::Restoring => "restoring",
            Phase::Ready => "ready",
            Phase::Closed => "closed",
        }
    }
}

/// Why a session closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// FreeSWITCH sent a disconnect notice.
    DisconnectNotice,
    /// FreeSWITCH refused the peer (ACL).
    Rejected,
    /// Auth was answered with `-ERR`.
    AuthRejected {
        /// The reply text.
        reply_text: String,
    },
    /// No greeting or auth reply within the handshake timeout.
    HandshakeTimeout,
    /// A restore command (`event`, `filter`) was answered with `-ERR`.
    RestoreFailed {
        /// The command line.
        command: String,
        /// The reply text.
        reply_text: String,
    },
    /// A request got no reply in time.
    CommandTimeout {
        /// The request's kind.
        kind: CommandKind,
    },
    /// The liveness probe went unanswered.
    Dead,
    /// A write made no progress within the driver's write timeout: the peer stopped
    /// reading our commands ([`Session::handle_write_timeout`]).
    WriteTimeout,
    /// The stream ended (without a notice: possibly FreeSWITCH killed a slow listener).
    Eof,
    /// The driver closed the session (local shutdown, I/O or codec error).
    Local {
        /// What happened.
        detail: String,
    },
}

impl CloseReason {
    /// Whether reconnecting makes sense: everything but a rejected password or ACL.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            CloseReason::AuthRejected { .. } | CloseReason::Rejected
        )
    }

    /// A short snake-case name.
    #[must_use]
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::DisconnectNotice => "disconnect_notice",
            CloseReason::Rejected => "rude_rejection",
            CloseReason::AuthRejected { .. } => "auth_rejected",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::RestoreFailed { .. } => "restore_failed",
            CloseReason::CommandTimeout { .. } => "command_timeout",
            CloseReason::Dead => "dead",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::Eof => "eof",
            CloseReason::Local { .. } => "local",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::AuthRejected { reply_text } => write!(f, "auth rejected: {reply_text}"),
            CloseReason::RestoreFailed {
                command,
                reply_text,
            } => write!(f, "restore of {command:?} failed: {reply_text}"),
            CloseReason::CommandTimeout { kind } => {
                write!(f, "{} command timed out", kind.as_str())
            }
            CloseReason::Local { detail } => write!(f, "closed locally: {detail}"),
            other => f.write_str(other.as_str()),
        }
    }
}

/// A lifecycle event the driver acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The greeting arrived; call [`Session::authenticate`].
    AuthRequested,
    /// Auth accepted; restore commands are on their way.
    Authenticated,
    /// Authenticated and every subscription and filter restored.
    Ready,
    /// Liveness changed.
    Liveness(Liveness),
    /// A request timed out (the session closes right after).
    TimedOut(Pending),
    /// A request that will never get its reply (the session closed first).
    Abandoned(Pending),
    /// A tracked bgapi job whose BACKGROUND_JOB did not arrive in time.
    JobOrphaned(Job),
    /// The session closed; nothing more will be transmitted.
    Closed(CloseReason),
}

/// Requests the session refuses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The session is not authenticated and restored yet.
    #[error("the esl session is not ready (phase {phase})")]
    NotReady {
        /// The current phase.
        phase: &'static str,
    },
    /// `authenticate` outside the greeted phase.
    #[error("authentication is only possible after the greeting (phase {phase})")]
    NotGreeted {
        /// The current phase.
        phase: &'static str,
    },
    /// A command text with a line break would smuggle extra commands.
    #[error("command text contains a line break: {text:?}")]
    LineBreakInCommand {
        /// The offending part (cut to 64 characters).
        text: String,
    },
    /// An `event`/`nixevent` without names.
    #[error("an event subscription command needs at least one event name")]
    EmptyEventList,
    /// An empty event name, filter header or filter value (FreeSWITCH would read the
    /// command differently from what was meant).
    #[error("empty {what}")]
    EmptyText {
        /// Which text is empty (`event name`, `filter header`, `filter value`).
        what: &'static str,
    },
}

/// Where liveness stands.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// No probe out.
    Idle,
    /// Degraded while commands are in flight: their timeouts decide.
    Busy,
    /// A probe was sent; dead at this time.
    Sent { dead_at: Duration },
}

/// Bytes waiting to be written. Its `Debug` shows only sizes: the `auth` line holds the
/// password.
#[derive(Default)]
struct Transmit(VecDeque<Bytes>);

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transmit({} chunks)", self.0.len())
    }
}

/// The sans-IO inbound ESL client session (see the module docs).
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    phase: Phase,
    subscriptions: Subscriptions,
    pending: VecDeque<Pending>,
    jobs: Vec<(Job, Duration)>,
    next_id: u64,
    connected_at: Duration,
    last_inbound: Duration,
    liveness: Liveness,
    probe: Probe,
    restoring: usize,
    rejected: bool,
    transmit: Transmit,
    outputs: VecDeque<Output>,
}

impl Session {
    /// A session for a TCP connection made at `now`, restoring `subscriptions` after auth.
    #[must_use]
    pub fn new(config: SessionConfig, subscriptions: Subscriptions, now: Duration) -> Session {
        Session {
            config,
            phase: Phase::AwaitingGreeting,
            subscriptions,
            pending: VecDeque::new(),
            jobs: Vec::new(),
            next_id: 1,
            connected_at: now,
            last_inbound: now,
            liveness: Liveness::Live,
            probe: Probe::Idle,
            restoring: 0,
            rejected: false,
            transmit: Transmit::default(),
            outputs: VecDeque::new(),
        }
    }

    /// The current phase.
    #[must_use]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The current liveness.
    #[must_use]
    pub fn liveness(&self) -> Liveness {
        self.liveness
    }

    /// The desired subscription state (updated by the mutation methods).
    #[must_use]
    pub fn subscriptions(&self) -> &Subscriptions {
        &self.subscriptions
    }

    /// Requests waiting for their reply, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.pending.iter()
    }

    /// Tracked bgapi jobs.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter().map(|(job, _)| job)
    }

    /// Takes the tracked jobs, to hand them to the next connection's session.
    pub fn take_jobs(&mut self) -> Vec<Job> {
        self.jobs.drain(..).map(|(job, _)| job).collect()
    }

    /// Adopts jobs from an earlier connection; their orphan timeouts keep running from
    /// when they were sent.
    pub fn adopt_jobs(&mut self, jobs: Vec<Job>) {
        let timeout = self.config.job_orphan_timeout;
        self.jobs.extend(
            jobs.into_iter()
                .map(|job| (job.clone(), job.sent_at + timeout)),
        );
    }

    /// The next bytes to write, in order.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmit.0.pop_front()
    }

    /// The next lifecycle output, in order.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Session::handle_timeout`] should next be called, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.phase == Phase::Closed {
            return None;
        }
        let mut next: Option<Duration> = None;
        let mut consider = |t: Duration| next = Some(next.map_or(t, |n: Duration| n.min(t)));
        if matches!(
            self.phase,
            Phase::AwaitingGreeting | Phase::Greeted | Phase::Authenticating
        ) {
            consider(self.connected_at + self.config.handshake_timeout);
        }
        for pending in &self.pending {
            consider(pending.deadline);
        }
        for (_, orphan_at) in &self.jobs {
            consider(*orphan_at);
        }
        if matches!(self.phase, Phase::Ready) {
            match self.probe {
                Probe::Idle => consider(self.last_inbound + self.config.idle_timeout),
                Probe::Sent { dead_at } => consider(dead_at),
                Probe::Busy => {}
            }
        }
        next
    }

    /// Sends `auth <password>`. The password goes only into the transmitted bytes; it is
    /// not kept, and the pending request reads `auth`.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotGreeted`] before the greeting or after auth;
    /// [`SessionError::LineBreakInCommand`] for a password with a line break.
    pub fn authenticate(
        &mut self,
        password: &str,
        now: Duration,
    ) -> Result<CommandId, SessionError> {
        if self.phase != Phase::Greeted {
            return Err(SessionError::NotGreeted {
                phase: self.phase.as_str(),
            });
        }
        if password.contains(['\n', '\r']) {
            return Err(SessionError::LineBreakInCommand {
                text: "<password>".into(),
            });
        }
        self.phase = Phase::Authenticating;
        self.transmit
            .0
            .push_back(Bytes::from(format!("auth {password}\n\n")));
        let deadline = self.connected_at + self.config.handshake_timeout;
        Ok(self.track(Origin::Handshake, None, now, deadline))
    }

    /// Sends a command. `event`/`nixevent`/`filter` sent this way do not change the desired
    /// state restored after a reconnect; use the mutation methods for that.
    ///
    /// # Errors
    ///
    /// [`SessionError::NotReady`] before the session is ready or after it closed; invalid
    /// command text.
    pub fn send(&mut self, command: Command, now: Duration) -> Result<CommandId, SessionError> {
        if self.phase != Phase::Ready {
            return Err(SessionError::NotReady {
                phase: self.phase.as_str(),
            });
        }
        command.validate()?;
        Ok(self.dispatch(Origin::User, command, now))
    }

    /// Adds event names to the desired state and subscribes to them. Returns the command's
    /// id and the desired state before and after.
    ///
    /// # Errors
    ///
    /// As [`Session::send`].
    pub fn subscribe(
        &mut self,
        names: Vec<String>,
        now: Duration,
    ) -> Result<(CommandId, Subscriptions, Subscriptions), SessionError> {
        let before = self.subscriptions.clone();
        let id = self.send(
            Command::Event {
                format: EventFormat::Plain,
                names: names.clone(),
            },
            now,
        )?;
        for name in names {
            if !self.subscriptions.events.contains(&name) {
                self.subscriptions.events.push(name);
            }
        }
        Ok((id, before, self.subscriptions.clone()))
    }

    /// Removes event names from the desired state with `nixevent` (never by re-sending a
    /// shorter `event` list, which FreeSWITCH would not honour).
    ///
    /// # Errors
    ///
    /// As [`Session::send`].
    pub fn unsubscribe(
        &mut self,
        names: Vec<String>,
        now: Duration,
    ) -> Result<(CommandId, Subscriptions, Subscriptions), SessionError> {
        let before = self.subscriptions.clone();
        let id = self.send(
            Command::NixEvent {
                names: names.clone(),
            },
            now,
        )?;
        self.subscriptions.events.retain(|e| !names.contains(e));
        Ok((id, before, self.subscriptions.clone()))
    }

    /// Adds a filter to the desired state and installs it.
    ///
    /// # Errors
    ///
    /// As [`Session::send`].
    pub fn add_filter(
        &mut self,
        header: String,
        value: String,
        now: Duration,
    ) -> Result<(CommandId, Subscriptions, Subscriptions), SessionError> {
        let before = self.subscriptions.clone();
        let id = self.send(
            Command::Filter {
                header: header.clone(),
                value: value.clone(),
            },
            now,
        )?;
        self.subscriptions.filters.push((header, value));
        Ok((id, before, self.subscriptions.clone()))
    }

    /// Removes a filter from the desired state and deletes it.
    ///
    /// # Errors
    ///
    /// As [`Session::send`].
    pub fn remove_filter(
        &mut self,
        header: String,
        value: String,
        now: Duration,
    ) -> Result<(CommandId, Subscriptions, Subscriptions), SessionError> {
        let before = self.subscriptions.clone();
        let id = self.send(
            Command::FilterDelete {
                header: header.clone(),
                value: Some(value.clone()),
            },
            now,
        )?;
        self.subscriptions
            .filters
            .retain(|(h, v)| !(h == &header && v == &value));
        Ok((id, before, self.subscriptions.clone()))
    }

    /// Bytes arrived at `now` that do not complete a frame yet (a large frame on a slow
    /// link): for liveness they are activity as much as a frame is, so a switch that keeps
    /// sending is not probed or declared dead while one frame takes long to arrive.
    pub fn note_activity(&mut self, now: Duration) {
        if self.phase != Phase::Closed && now > self.last_inbound {
            self.activity(now);
        }
    }

    fn activity(&mut self, now: Duration) {
        self.last_inbound = now;
        if self.phase == Phase::Ready && self.liveness != Liveness::Live {
            self.liveness = Liveness::Live;
            self.outputs.push_back(Output::Liveness(Liveness::Live));
        }
        if !matches!(self.probe, Probe::Idle) {
            self.probe = Probe::Idle;
        }
    }

    /// Classifies one inbound frame and advances the session.
    pub fn handle_frame(&mut self, frame: &Frame, now: Duration) -> Inbound {
        self.activity(now);
        let content_type = header_ci(frame, "Content-Type").unwrap_or_default();
        match content_type.to_ascii_lowercase().as_str() {
            "auth/request" => self.on_greeting(),
            "command/reply" => {
                let text = header_ci(frame, "Reply-Text").unwrap_or_default();
                let status = ReplyStatus::of(text.as_bytes());
                let job_uuid = header_ci(frame, "Job-UUID").map(str::to_owned);
                self.on_reply(status, text, job_uuid, now)
            }
            "api/response" => {
                let status = ReplyStatus::of(frame.body());
                let text = String::from_utf8_lossy(frame.body()).into_owned();
                self.on_reply(status, &text, None, now)
            }
            "text/event-plain" | "text/event-json" | "text/event-xml" => {
                self.on_event(frame, content_type)
            }
            "text/disconnect-notice" => {
                let linger = header_ci(frame, "Content-Disposition")
                    .is_some_and(|d| d.eq_ignore_ascii_case("linger"));
                if !linger {
                    let reason = if self.rejected {
                        CloseReason::Rejected
                    } else {
                        CloseReason::DisconnectNotice
                    };
                    self.close(reason);
                }
                Inbound::Disconnect { linger }
            }
            "text/rude-rejection" => {
                self.rejected = true;
                Inbound::RudeRejection
            }
            "log/data" => Inbound::Log,
            _ => Inbound::Unknown,
        }
    }

    /// Handles timers due at `now` (call at [`Session::poll_timeout`]; early calls are
    /// harmless).
    pub fn handle_timeout(&mut self, now: Duration) {
        if self.phase == Phase::Closed {
            return;
        }
        if matches!(
            self.phase,
            Phase::AwaitingGreeting | Phase::Greeted | Phase::Authenticating
        ) && now >= self.connected_at + self.config.handshake_timeout
        {
            self.close(CloseReason::HandshakeTimeout);
            return;
        }
        if let Some(late) = self.pending.iter().find(|p| now >= p.deadline).cloned() {
            self.pending.retain(|p| p.id != late.id);
            let kind = late.kind();
            self.outputs.push_back(Output::TimedOut(late));
            self.close(CloseReason::CommandTimeout { kind });
            return;
        }
        let (orphaned, kept): (Vec<_>, Vec<_>) =
            self.jobs.drain(..).partition(|(_, at)| now >= *at);
        self.jobs = kept;
        self.outputs.extend(
            orphaned
                .into_iter()
                .map(|(job, _)| Output::JobOrphaned(job)),
        );
        if self.phase != Phase::Ready {
            return;
        }
        match self.probe {
            Probe::Sent { dead_at } if now >= dead_at => {
                self.liveness = Liveness::Dead;
                self.outputs.push_back(Output::Liveness(Liveness::Dead));
                self.close(CloseReason::Dead);
            }
            Probe::Idle if now >= self.last_inbound + self.config.idle_timeout => {
                self.liveness = Liveness::Degraded;
                self.outputs.push_back(Output::Liveness(Liveness::Degraded));
                if self.pending.is_empty() {
                    let probe = Command::Api {
                        command: "status".into(),
                    };
                    self.dispatch(Origin::Probe, probe, now);
                    self.probe = Probe::Sent {
                        dead_at: now + self.config.probe_timeout,
                    };
                } else {
                    self.probe = Probe::Busy;
                }
            }
            _ => {}
        }
    }

    /// The driver's write made no progress for its write timeout: the peer stopped reading
    /// (its receive window stayed shut). The session is dead, and closes
    /// ([`CloseReason::WriteTimeout`]).
    pub fn handle_write_timeout(&mut self, _now: Duration) {
        if self.phase == Phase::Closed {
            return;
        }
        self.liveness = Liveness::Dead;
        self.outputs.push_back(Output::Liveness(Liveness::Dead));
        self.close(CloseReason::WriteTimeout);
    }

    /// The stream ended at `now`. After a rude rejection the end is the rejection's
    /// ([`CloseReason::Rejected`], terminal) whether or not a disconnect notice came first.
    pub fn handle_eof(&mut self, _now: Duration) {
        let reason = if self.rejected {
            CloseReason::Rejected
        } else {
            CloseReason::Eof
        };
        self.close(reason);
    }

    /// The driver closes the session (shutdown, I/O or codec error).
    pub fn close_locally(&mut self, detail: impl Into<String>) {
        self.close(CloseReason::Local {
            detail: detail.into(),
        });
    }

    fn on_greeting(&mut self) -> Inbound {
        if self.phase == Phase::AwaitingGreeting {
            self.phase = Phase::Greeted;
            self.outputs.push_back(Output::AuthRequested);
        }
        Inbound::Greeting
    }

    fn on_reply(
        &mut self,
        status: ReplyStatus,
        text: &str,
        job_uuid: Option<String>,
        now: Duration,
    ) -> Inbound {
        let Some(pending) = self.pending.pop_front() else {
            return Inbound::UnexpectedReply;
        };
        match pending.origin {
            Origin::Handshake => {
                if status == ReplyStatus::Ok {
                    self.outputs.push_back(Output::Authenticated);
                    self.phase = Phase::Restoring;
                    let commands = self.subscriptions.restore_commands();
                    // Nothing that would smuggle another command onto the line is sent,
                    // however the desired state was built.
                    if let Err(error) = self.subscriptions.validate() {
                        self.close(CloseReason::RestoreFailed {
                            command: "event/filter".into(),
                            reply_text: format!("not sent: {error}"),
                        });
                        return Inbound::Reply {
                            pending,
                            status,
                            job_uuid,
                        };
                    }
                    self.restoring = commands.len();
                    for command in commands {
                        let deadline = now + self.config.command_timeout;
                        self.transmit.0.push_back(command.encode());
                        self.track(Origin::Restore, Some(command), now, deadline);
                    }
                    self.ready_if_restored();
                } else {
                    self.close(CloseReason::AuthRejected {
                        reply_text: text.to_owned(),
                    });
                }
            }
            Origin::Restore => {
                if status == ReplyStatus::Err {
                    self.close(CloseReason::RestoreFailed {
                        command: pending.line(),
                        reply_text: text.to_owned(),
                    });
                } else {
                    self.restoring = self.restoring.saturating_sub(1);
                    self.ready_if_restored();
                }
            }
            Origin::Probe | Origin::User => {}
        }
        if let (Some(Command::BgApi { job_uuid: ours, .. }), ReplyStatus::Ok) =
            (&pending.command, status)
        {
            // FreeSWITCH honours our Job-UUID; track the one it echoes, else ours.
            let job_uuid = job_uuid.clone().unwrap_or_else(|| ours.clone());
            let job = Job {
                job_uuid,
                line: pending.line(),
                sent_at: pending.sent_at,
            };
            let orphan_at = pending.sent_at + self.config.job_orphan_timeout;
            self.jobs.push((job, orphan_at));
        }
        Inbound::Reply {
            pending,
            status,
            job_uuid,
        }
    }

    fn on_event(&mut self, frame: &Frame, content_type: &str) -> Inbound {
        let event_name = event_header(frame, content_type, "Event-Name");
        let mut completes = None;
        if !self.jobs.is_empty()
            && event_name.as_deref() == Some("BACKGROUND_JOB")
            && let Some(uuid) = event_header(frame, content_type, "Job-UUID")
            && let Some(at) = self.jobs.iter().position(|(j, _)| j.job_uuid == uuid)
        {
            completes = Some(self.jobs.remove(at).0);
        }
        Inbound::Event {
            event_name,
            completes,
        }
    }

    fn ready_if_restored(&mut self) {
        if self.phase == Phase::Restoring && self.restoring == 0 {
            self.phase = Phase::Ready;
            self.outputs.push_back(Output::Ready);
        }
    }

    fn dispatch(&mut self, origin: Origin, command: Command, now: Duration) -> CommandId {
        let timeout = match command.kind() {
            CommandKind::Api => self.config.api_timeout,
            _ => self.config.command_timeout,
        };
        self.transmit.0.push_back(command.encode());
        self.track(origin, Some(command), now, now + timeout)
    }

    fn track(
        &mut self,
        origin: Origin,
        command: Option<Command>,
        now: Duration,
        deadline: Duration,
    ) -> CommandId {
        let id = CommandId(self.next_id);
        self.next_id += 1;
        self.pending.push_back(Pending {
            id,
            origin,
            command,
            sent_at: now,
            deadline,
        });
        id
    }

    fn close(&mut self, reason: CloseReason) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Closed;
        self.transmit.0.clear();
        for pending in self.pending.drain(..) {
            self.outputs.push_back(Output::Abandoned(pending));
        }
        self.outputs.push_back(Output::Closed(reason));
    }
}
