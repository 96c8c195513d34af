//! How does every captured frame, command and connection change become a replay record?
//!
//! [`Captured`] is what the socket side observed, stamped with its [`Stamp`]; [`Mapper`]
//! turns it into [`CaptureArtifact`]s named and filled as the apntalk family does
//! (`esl-protocol.md` §4.3-4.7), plus our own `wire.*`, `connection.*` and `capture.gap`
//! artifacts that make the capture a complete wire log. `docs/capture.md` is the table. An
//! artifact is encoded into its record directly ([`CaptureArtifact::encode`]), without
//! building maps.
//!
//! Payload contract (shared with the replay server, which reads it through
//! [`crate::record::CapturePayload`]):
//! - `raw_payload`: for events the outer frame's body (the URL-encoded plain text, the JSON
//!   text); for replies and every other inbound frame the header lines, the blank line and
//!   the body; for dispatches the command line.
//! - `protocol_facts["content-type"]`: the outer `Content-Type`.
//! - `frame_headers`: the outer headers as an ordered list of `[name, value]` pairs.
//! - `raw_payload_base64`: present only when the bytes are not valid UTF-8; `raw_payload`
//!   then holds a lossy text and this the exact bytes.

use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::esl::event::{json_event, scan_plain_headers};
use crate::esl::session::{Command, CommandKind, Inbound, Job, Origin, Pending, ReplyStatus};
use crate::esl::{Frame, header_ci};
use crate::record::canonical::{self, KeyOrder};
use crate::record::{
    EncodedRecord, Envelope, JsonMap, RecordId, RecordText, checksum, keys, ksort,
};

/// The artifact version of everything this capture writes (the apntalk vocabulary's "1").
pub const ARTIFACT_VERSION: &str = "1";

/// Who captures: fixed for one node of one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The capture process's session id (a UUIDv4 made once per process).
    pub session_id: String,
    /// The FreeSWITCH node's slug (`runtime_flags.pbx_node_slug`).
    pub pbx_node_slug: String,
    /// An optional worker label (`runtime_flags.worker_session_id`).
    pub worker_session_id: Option<String>,
}

/// When and where something was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The node's capture sequence: +1 for every frame, dispatch and marker, dropped or not.
    pub capture_sequence: u64,
    /// Wall-clock capture time (UTC, microseconds kept).
    pub captured_at: OffsetDateTime,
    /// The TCP connection's generation (1 for the first connect, +1 per connect).
    pub connection_generation: u64,
}

/// Why capture lost continuity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GapKind {
    /// The connection was down: events FreeSWITCH fired meanwhile are gone.
    Reconnect {
        /// When the previous connection closed.
        down_since: OffsetDateTime,
        /// How long no connection was up, in microseconds.
        down_micros: u64,
        /// Why the previous connection closed.
        reason: String,
    },
    /// The write queue was full: these frames were dropped locally.
    LocalDrop {
        /// How many artifacts were dropped.
        dropped: u64,
        /// Their bytes.
        dropped_bytes: u64,
        /// First dropped capture sequence.
        first_capture_sequence: u64,
        /// Last dropped capture sequence.
        last_capture_sequence: u64,
    },
}

/// Something the capture observed.
#[derive(Debug, Clone)]
pub enum Captured {
    /// An inbound frame, as the session classified it.
    Frame {
        /// The frame.
        frame: Frame,
        /// Its classification.
        inbound: Inbound,
    },
    /// Bytes the codec could not frame (sent before the connection is closed).
    Malformed {
        /// The bytes buffered when the error happened, at most `client::MALFORMED_KEEP`.
        bytes: Bytes,
        /// How many bytes were buffered (more than `bytes` holds when capped).
        buffered: usize,
        /// The codec's error.
        error: String,
    },
    /// A request we sent (the auth password is never part of it).
    Dispatch {
        /// The request.
        pending: Pending,
    },
    /// A change of the desired subscription or filter state, before its command is sent.
    Mutation {
        /// `subscription.mutate` or `filter.mutate` style document (see docs/capture.md).
        filter: bool,
        /// The mutation document.
        document: Value,
    },
    /// A TCP connection was made.
    ConnectionOpened {
        /// The peer address.
        peer: String,
        /// Connect attempts since the last ready session (1 = first try).
        attempt: u64,
    },
    /// A TCP connection ended.
    ConnectionClosed {
        /// Why (`CloseReason::as_str` or an I/O description).
        reason: String,
        /// Whether the node reconnects.
        retryable: bool,
        /// Frames read on this connection.
        frames: u64,
    },
    /// Capture continuity was lost.
    Gap(GapKind),
}

/// Builds envelopes for one node; remembers the last `(Core-UUID, Event-Sequence)` stored
/// so gap markers can name where continuity stopped. An item mapped but then not stored
/// (its record is larger than the store takes) is taken back with
/// [`Mapper::last_item_dropped`], so that `last_seen` never names a dropped event.
#[derive(Debug)]
pub struct Mapper {
    identity: Arc<NodeIdentity>,
    last_core_uuid: Option<String>,
    last_event_sequence: Option<String>,
    /// What the item mapped last replaced of `last_core_uuid` and `last_event_sequence`,
    /// for [`Mapper::last_item_dropped`].
    seen_before: Option<SeenBefore>,
    /// esl-react's recovery generation: 1, then the connection generation of every
    /// accepted `auth` (`esl-protocol.md` §4.5).
    recovery_generation: u64,
    /// `continuous` until the first gap, `gap-detected` from then on.
    continuity: &'static str,
}

/// The values an event replaced in a [`Mapper`]'s `last_seen` (`Some` for each field it set).
#[derive(Debug)]
struct SeenBefore {
    core_uuid: Option<Option<String>>,
    event_sequence: Option<Option<String>>,
}

impl Mapper {
    /// A mapper for one node.
    #[must_use]
    pub fn new(identity: Arc<NodeIdentity>) -> Mapper {
        Mapper {
            identity,
            last_core_uuid: None,
            last_event_sequence: None,
            seen_before: None,
            recovery_generation: 1,
            continuity: "continuous",
        }
    }

    /// The artifacts [`Mapper::map`] returned last were not stored (the store refused the
    /// item as too large): the event they hold is not the last one seen, and a later gap's
    /// `last_seen` names the event stored before it again.
    pub fn last_item_dropped(&mut self) {
        if let Some(before) = self.seen_before.take() {
            if let Some(core_uuid) = before.core_uuid {
                self.last_core_uuid = core_uuid;
            }
            if let Some(event_sequence) = before.event_sequence {
                self.last_event_sequence = event_sequence;
            }
        }
    }

    /// The node's identity.
    #[must_use]
    pub fn identity(&self) -> &NodeIdentity {
        &self.identity
    }

    /// The artifacts of one captured item, in order (a bgapi ack gives `command.reply` then
    /// `bgapi.ack`; a tracked BACKGROUND_JOB gives `event.raw` then `bgapi.complete`).
    pub fn map(&mut self, stamp: &Stamp, captured: Captured) -> Vec<CaptureArtifact> {
        self.seen_before = None;
        match captured {
            Captured::Frame { frame, inbound } => self.frame(stamp, &frame, inbound),
            Captured::Malformed {
                bytes,
                buffered,
                error,
            } => {
                let mut a = Artifact::new("wire.malformed", "wire", "malformed");
                a.raw(&bytes);
                a.derived("malformed-error", &error);
                if buffered > bytes.len() {
                    a.derived("malformed-buffered-bytes", &buffered.to_string());
                }
                vec![self.finish(stamp, a)]
            }
            Captured::Dispatch { pending } => vec![self.dispatch(stamp, &pending)],
            Captured::Mutation { filter, document } => {
                let name = if filter {
                    "filter.mutate"
                } else {
                    "subscription.mutate"
                };
                let mut a = Artifact::new(name, "dispatch", name);
                a.raw_payload = document.to_string();
                let kind = document["mutation_kind"].as_str().unwrap_or_default();
                a.fact(
                    "command-type",
                    if filter { "filter" } else { "subscription" },
                );
                a.fact("mutation-kind", kind);
                a.derived(
                    "runtime-command-type",
                    if filter { "filter" } else { "subscription" },
                );
                a.derived("runtime-mutation-kind", kind);
                a.derived("runtime-mutation-noop", "false");
                if filter {
                    for (key, field) in [
                        ("filter-header-name", "header_name"),
                        ("filter-header-value", "header_value"),
                    ] {
                        let value = document[field].as_str().unwrap_or_default();
                        a.fact(key, value);
                        a.derived(&format!("runtime-{key}"), value);
                    }
                }
                vec![self.finish(stamp, a)]
            }
            Captured::ConnectionOpened { peer, attempt } => {
                let mut a = Artifact::new("connection.opened", "connection", "opened");
                let doc = json!({"peer": peer, "attempt": attempt, "connection_generation": stamp.connection_generation});
                a.raw_payload = doc.to_string();
                a.fact("peer", &peer);
                a.derived("connect-attempt", &attempt.to_string());
                vec![self.finish(stamp, a)]
            }
            Captured::ConnectionClosed {
                reason,
                retryable,
                frames,
            } => {
                let mut a = Artifact::new("connection.closed", "connection", "closed");
                let doc = json!({"reason": reason, "retryable": retryable, "frames": frames});
                a.raw_payload = doc.to_string();
                a.fact("close-reason", &reason);
                a.derived("close-retryable", if retryable { "true" } else { "false" });
                a.derived("connection-frames", &frames.to_string());
                vec![self.finish(stamp, a)]
            }
            Captured::Gap(kind) => vec![self.gap(stamp, kind)],
        }
    }

    fn gap(&mut self, stamp: &Stamp, kind: GapKind) -> CaptureArtifact {
        let last = json!({
            "core_uuid": self.last_core_uuid,
            "event_sequence": self.last_event_sequence,
        });
        let (name, doc) = match kind {
            GapKind::Reconnect {
                down_since,
                down_micros,
                reason,
            } => (
                "reconnect",
                json!({
                    "kind": "reconnect",
                    "down_since": rfc3339(down_since),
                    "reconnected_at": rfc3339(stamp.captured_at),
                    "down_micros": down_micros,
                    "reason": reason,
                    "last_seen": last,
                }),
            ),
            GapKind::LocalDrop {
                dropped,
                dropped_bytes,
                first_capture_sequence,
                last_capture_sequence,
            } => (
                "local_drop",
                json!({
                    "kind": "local_drop",
                    "dropped": dropped,
                    "dropped_bytes": dropped_bytes,
                    "first_capture_sequence": first_capture_sequence,
                    "last_capture_sequence": last_capture_sequence,
                    "last_seen": last,
                }),
            ),
        };
        self.continuity = "gap-detected";
        let mut a = Artifact::new("capture.gap", "gap", name);
        a.raw_payload = doc.to_string();
        a.derived("runtime-replay-continuity", "gap-detected");
        a.gap = Some(doc);
        self.finish(stamp, a)
    }

    fn dispatch(&mut self, stamp: &Stamp, pending: &Pending) -> CaptureArtifact {
        let line = pending.line();
        let kind = pending.kind();
        let (name, type_) = match kind {
            CommandKind::Api => ("api.dispatch", "api"),
            CommandKind::BgApi => ("bgapi.dispatch", "bgapi"),
            CommandKind::Auth => ("wire.auth", "auth"),
            _ => ("wire.command", kind.as_str()),
        };
        let (command_name, args) = command_parts(pending.command.as_ref());
        let captured_name = if command_name.is_empty() {
            kind.as_str().to_owned()
        } else {
            command_name.clone()
        };
        let mut a = Artifact::new(name, "dispatch", &captured_name);
        a.raw_payload = line;
        a.classifier("runtime-capture-path", name);
        a.classifier("runtime-command-type", type_);
        a.fact("command-type", type_);
        a.fact("command-name", &command_name);
        a.fact("command-args", &args);
        a.derived("runtime-command-type", type_);
        a.derived("runtime-command-name", &command_name);
        a.derived("runtime-command-args", &args);
        a.derived("runtime-command-origin", origin_str(pending.origin));
        a.derived("runtime-command-id", &pending.id.0.to_string());
        a.operation = Some(Self::operation(stamp, pending, "accepted"));
        if let Some(Command::BgApi { job_uuid, .. }) = &pending.command {
            a.job_uuid = Some(job_uuid.clone());
            a.derived("runtime-job-uuid", job_uuid);
        }
        self.finish(stamp, a)
    }

    fn frame(&mut self, stamp: &Stamp, frame: &Frame, inbound: Inbound) -> Vec<CaptureArtifact> {
        let content_type = header_ci(frame, "Content-Type")
            .unwrap_or_default()
            .to_owned();
        match inbound {
            Inbound::Event { completes, .. } => self.event(stamp, frame, &content_type, completes),
            Inbound::Reply {
                pending,
                status,
                job_uuid,
            } => self.reply(
                stamp,
                frame,
                &content_type,
                Some(&pending),
                status,
                job_uuid,
            ),
            Inbound::UnexpectedReply => {
                self.reply(stamp, frame, &content_type, None, ReplyStatus::Other, None)
            }
            other => {
                let (name, captured_name) = match other {
                    Inbound::Greeting => ("wire.greeting", "auth/request"),
                    Inbound::Disconnect { linger: true } => ("wire.disconnect", "linger"),
                    Inbound::Disconnect { linger: false } => ("wire.disconnect", "disconnect"),
                    Inbound::RudeRejection => ("wire.rejection", "rude-rejection"),
                    Inbound::Log => ("wire.log", "log/data"),
                    _ => ("wire.unknown", "unknown"),
                };
                let mut a = Artifact::new(name, "wire", captured_name);
                a.frame_whole(frame);
                a.classifier("content-type", &content_type);
                a.fact(keys::FACT_CONTENT_TYPE, &content_type);
                for header in [
                    "Content-Disposition",
                    "Controlled-Session-UUID",
                    "Log-Level",
                ] {
                    if let Some(v) = header_ci(frame, header) {
                        a.fact(&header.to_ascii_lowercase(), v);
                    }
                }
                vec![self.finish(stamp, a)]
            }
        }
    }

    fn reply(
        &mut self,
        stamp: &Stamp,
        frame: &Frame,
        content_type: &str,
        pending: Option<&Pending>,
        status: ReplyStatus,
        job_uuid: Option<String>,
    ) -> Vec<CaptureArtifact> {
        let is_api = content_type.eq_ignore_ascii_case("api/response");
        let reply_text = header_ci(frame, "Reply-Text")
            .unwrap_or_default()
            .to_owned();
        let kind = pending.map(Pending::kind);
        let captured_name = match (kind, status) {
            (None, _) => "UnknownReply",
            (_, _) if is_api => "ApiReply",
            (Some(CommandKind::Auth), ReplyStatus::Ok) => "AuthAcceptedReply",
            (Some(CommandKind::BgApi), ReplyStatus::Ok) => "BgapiAcceptedReply",
            (_, ReplyStatus::Err) => "ErrorReply",
            _ => "CommandReply",
        };
        let name = if is_api { "api.reply" } else { "command.reply" };
        let mut a = Artifact::new(name, "reply", captured_name);
        a.frame_whole(frame);
        a.classifier("content-type", content_type);
        a.classifier("reply-text", &reply_text);
        a.fact(keys::FACT_CONTENT_TYPE, content_type);
        a.fact(keys::FACT_REPLY_TEXT, &reply_text);
        if let Some(job) = &job_uuid {
            a.fact(keys::FACT_JOB_UUID, job);
            a.derived("job-correlation.job-uuid", job);
            a.job_uuid = Some(job.clone());
        }
        if let Some(p) = pending {
            if p.kind() == CommandKind::Auth && status == ReplyStatus::Ok {
                self.recovery_generation = stamp.connection_generation;
            }
            let state = match (p.kind(), status) {
                (_, ReplyStatus::Err) => "failed",
                (CommandKind::BgApi, ReplyStatus::Ok) => "accepted",
                _ => "completed",
            };
            a.operation = Some(Self::operation(stamp, p, state));
            a.derived("runtime-command-id", &p.id.0.to_string());
            a.derived("runtime-command-origin", origin_str(p.origin));
            a.derived("runtime-command-line", &p.line());
        } else {
            a.derived("runtime-correlation", "unmatched");
        }
        let acknowledged = status == ReplyStatus::Ok
            && job_uuid.is_some()
            && pending.is_some_and(|p| p.kind() == CommandKind::BgApi);
        if !acknowledged {
            return vec![self.finish(stamp, a)];
        }
        let mut out = vec![self.finish(stamp, a.clone())];
        if let (Some(p), Some(job), ReplyStatus::Ok) = (pending, &job_uuid, status)
            && p.kind() == CommandKind::BgApi
        {
            let (command_name, args) = command_parts(p.command.as_ref());
            a.name = "bgapi.ack";
            a.derived.retain(|(k, _)| !k.starts_with("job-correlation"));
            a.derived("runtime-command-type", "bgapi");
            a.derived("runtime-command-name", &command_name);
            a.derived("runtime-command-args", &args);
            a.derived("runtime-job-uuid", job);
            out.push(self.finish(stamp, a));
        }
        out
    }

    fn event(
        &mut self,
        stamp: &Stamp,
        frame: &Frame,
        content_type: &str,
        completes: Option<Job>,
    ) -> Vec<CaptureArtifact> {
        const NAMES: [&str; 7] = [
            "Event-Name",
            "Event-Sequence",
            "Event-Date-Timestamp",
            "Core-UUID",
            "Unique-ID",
            "Job-UUID",
            "Channel-Name",
        ];
        let values: [Option<String>; 7] = if content_type.eq_ignore_ascii_case("text/event-plain") {
            scan_plain_headers(frame.body(), NAMES)
        } else if content_type.eq_ignore_ascii_case("text/event-json") {
            match json_event(frame.body()) {
                Ok(map) => NAMES.map(|n| map.get(n).and_then(Value::as_str).map(str::to_owned)),
                Err(_) => Default::default(),
            }
        } else {
            Default::default()
        };
        let [event_name, sequence, date, core, unique, job, channel] = values;
        let event_name_text = event_name.clone().unwrap_or_default();
        let mut a = Artifact::new(
            "event.raw",
            "event",
            if event_name_text.is_empty() {
                "unknown"
            } else {
                &event_name_text
            },
        );
        a.raw(frame.body());
        a.headers = Some(frame.headers().to_vec());
        a.event_name = event_name.clone();
        a.classifier("content-type", content_type);
        a.classifier("event-name", &event_name_text);
        a.classifier("unique-id", unique.as_deref().unwrap_or_default());
        a.fact(keys::FACT_CONTENT_TYPE, content_type);
        for (key, value) in [
            ("event-name", &event_name),
            ("event-sequence", &sequence),
            ("event-date-timestamp", &date),
            ("core-uuid", &core),
            ("unique-id", &unique),
            (keys::FACT_JOB_UUID, &job),
        ] {
            if let Some(v) = value {
                a.fact(key, v);
            }
        }
        if let Some(u) = &unique {
            a.derived("channel-correlation.unique-id", u);
        }
        if let Some(c) = &channel {
            a.derived("channel-correlation.channel-name", c);
        }
        if let Some(j) = &job {
            a.derived("job-correlation.job-uuid", j);
            a.job_uuid = Some(j.clone());
        }
        a.protocol_sequence = sequence.clone();
        let before = SeenBefore {
            core_uuid: core.map(|c| self.last_core_uuid.replace(c)),
            event_sequence: sequence.map(|s| self.last_event_sequence.replace(s)),
        };
        if before.core_uuid.is_some() || before.event_sequence.is_some() {
            self.seen_before = Some(before);
        }
        let Some(job) = completes else {
            return vec![self.finish(stamp, a)];
        };
        let mut out = vec![self.finish(stamp, a.clone())];
        let (command_name, args) = split_line(job.line.strip_prefix("bgapi ").unwrap_or(&job.line));
        a.name = "bgapi.complete";
        a.operation = Some(Operation {
            id: None,
            kind: "bgapi",
            state: "completed",
        });
        a.derived.retain(|(k, _)| !k.contains("correlation"));
        a.derived("runtime-command-type", "bgapi");
        a.derived("runtime-command-name", &command_name);
        a.derived("runtime-command-args", &args);
        a.derived("runtime-job-uuid", &job.job_uuid);
        out.push(self.finish(stamp, a));
        out
    }

    /// The evidence engine's operation for a request (reference §7.2). The id has
    /// esl-react's shape `<kind>-g<generation>-<n>`, with the connection generation: it is
    /// the same for a request and its reply (an `auth` changes the recovery generation
    /// between the two), and request numbers restart on every connection.
    fn operation(stamp: &Stamp, pending: &Pending, state: &'static str) -> Operation {
        let kind = pending.kind().as_str();
        Operation {
            id: Some(format!(
                "{}-g{}-{}",
                kind.replace(' ', "-"),
                stamp.connection_generation,
                pending.id.0
            )),
            kind,
            state,
        }
    }

    /// The artifact as it stands, with the mapper's replay state at this point.
    fn finish(&self, stamp: &Stamp, artifact: Artifact) -> CaptureArtifact {
        CaptureArtifact {
            identity: Arc::clone(&self.identity),
            stamp: *stamp,
            recovery_generation: self.recovery_generation,
            continuity: self.continuity,
            artifact,
        }
    }
}

/// One artifact of a captured item: everything its record holds except the record id, the
/// store's time and the append sequence, with the capture payload typed (docs/capture.md
/// lists its fields).
///
/// It becomes a record in one of two ways that give the same bytes: [`Self::encode`]
/// writes the record's JSON texts and checksum input directly (what capture does), and
/// [`Self::envelope`] builds the maps an [`Envelope`] holds (for code that wants maps; the
/// tests compare the two).
#[derive(Debug, Clone)]
pub struct CaptureArtifact {
    identity: Arc<NodeIdentity>,
    stamp: Stamp,
    recovery_generation: u64,
    continuity: &'static str,
    artifact: Artifact,
}

/// Reusable buffers for [`CaptureArtifact::encode`].
#[derive(Debug, Default)]
pub struct EncodeBuffers {
    canonical: String,
    payload: String,
    correlation_ids: String,
    runtime_flags: String,
}

/// The numbers a record's maps hold as text.
struct Numbers {
    micros: String,
    generation: String,
    recovery_generation: String,
}

/// The entries of a capture artifact's maps, borrowed (see [`CaptureArtifact::parts`]).
struct Parts<'a> {
    classifier: Vec<(&'a str, &'a str)>,
    facts: Vec<(&'a str, &'a str)>,
    derived: Vec<(&'a str, &'a str)>,
    replay: Vec<(&'a str, &'a str)>,
    correlation_ids: Vec<(&'a str, &'a str)>,
    /// `runtime_flags` holding text; `replay_capture_sequence` (a number) and
    /// `replay_protocol_sequence` follow them.
    text_flags: Vec<(&'a str, &'a str)>,
}

/// A value of the capture payload's top-level map.
enum PayloadValue<'a> {
    Text(&'a str),
    /// A map of strings (`classifier_context`, ...).
    Texts(&'a [(&'a str, &'a str)]),
    /// `frame_headers`: a list of `[name, value]` lists.
    Headers(&'a [(String, String)]),
    Json(&'a serde_json::Value),
}

impl PayloadValue<'_> {
    fn to_json(&self) -> Value {
        match self {
            PayloadValue::Text(text) => Value::String((*text).to_owned()),
            PayloadValue::Texts(pairs) => Value::Object(text_map(pairs)),
            PayloadValue::Headers(headers) => {
                Value::Array(headers.iter().map(|(n, v)| json!([n, v])).collect())
            }
            PayloadValue::Json(value) => (*value).clone(),
        }
    }
}

fn text_map(pairs: &[(&str, &str)]) -> JsonMap {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
        .collect()
}

impl CaptureArtifact {
    /// The artifact name (`event.raw`, `command.reply`, ...).
    #[must_use]
    pub fn name(&self) -> &'static str {
        self.artifact.name
    }

    /// The time, capture sequence and connection generation it was captured with.
    #[must_use]
    pub fn stamp(&self) -> &Stamp {
        &self.stamp
    }

    fn numbers(&self) -> Numbers {
        Numbers {
            micros: micros(self.stamp.captured_at).to_string(),
            generation: self.stamp.connection_generation.to_string(),
            recovery_generation: self.recovery_generation.to_string(),
        }
    }

    /// The entries of the record's maps, in order (a key set twice keeps its first place
    /// and its last value, as a map does).
    fn parts<'a>(&'a self, numbers: &'a Numbers) -> Parts<'a> {
        let a = &self.artifact;
        let identity = &*self.identity;
        let mut derived: Vec<(&str, &str)> = Vec::with_capacity(a.derived.len() + 6);
        for (key, value) in &a.derived {
            upsert(&mut derived, key, value);
        }
        for (key, value) in [
            ("session-id", identity.session_id.as_str()),
            ("captured-at-micros", numbers.micros.as_str()),
            ("replay-artifact-version", ARTIFACT_VERSION),
            ("replay-artifact-name", a.name),
            ("runtime-capture-path", a.name),
            ("runtime-connection-generation", numbers.generation.as_str()),
        ] {
            upsert(&mut derived, key, value);
        }
        let mut replay = vec![
            (
                keys::RECOVERY_GENERATION_ID,
                numbers.recovery_generation.as_str(),
            ),
            (keys::REPLAY_CONTINUITY_POSTURE, self.continuity),
        ];
        if let Some(operation) = &a.operation {
            if let Some(id) = &operation.id {
                replay.push((keys::OPERATION_ID, id.as_str()));
            }
            replay.push((keys::OPERATION_KIND, operation.kind));
            replay.push((keys::OPERATION_STATE, operation.state));
        }
        let worker = identity.worker_session_id.as_deref();
        let mut correlation_ids = vec![(keys::REPLAY_SESSION_ID, identity.session_id.as_str())];
        if let Some(job) = &a.job_uuid {
            correlation_ids.push((keys::JOB_UUID, job));
        }
        let mut text_flags = vec![
            (keys::PROVIDER_CODE, "freeswitch"),
            (keys::PBX_NODE_SLUG, identity.pbx_node_slug.as_str()),
        ];
        if let Some(worker) = worker {
            correlation_ids.push((keys::WORKER_SESSION_ID, worker));
            text_flags.push((keys::WORKER_SESSION_ID, worker));
        }
        text_flags.push((keys::TRANSPORT, "tcp"));
        text_flags.push((keys::REPLAY_SESSION_ID, identity.session_id.as_str()));
        Parts {
            classifier: as_strs(&a.classifier),
            facts: as_strs(&a.facts),
            derived,
            replay,
            correlation_ids,
            text_flags,
        }
    }

    /// The payload's top-level entries in insertion order.
    fn payload_entries<'a>(
        &'a self,
        parts: &'a Parts<'a>,
    ) -> Vec<(&'static str, PayloadValue<'a>)> {
        let a = &self.artifact;
        let mut entries = Vec::with_capacity(10);
        entries.push((keys::CAPTURED_TYPE, PayloadValue::Text(a.captured_type)));
        entries.push((keys::CAPTURED_NAME, PayloadValue::Text(&a.captured_name)));
        entries.push((keys::RAW_PAYLOAD, PayloadValue::Text(&a.raw_payload)));
        if let Some(b64) = &a.raw_payload_base64 {
            entries.push((keys::RAW_PAYLOAD_BASE64, PayloadValue::Text(b64)));
        }
        entries.push((
            keys::CLASSIFIER_CONTEXT,
            PayloadValue::Texts(&parts.classifier),
        ));
        entries.push((keys::PROTOCOL_FACTS, PayloadValue::Texts(&parts.facts)));
        entries.push((keys::DERIVED_METADATA, PayloadValue::Texts(&parts.derived)));
        if let Some(headers) = &a.headers {
            entries.push((keys::FRAME_HEADERS, PayloadValue::Headers(headers)));
        }
        if let Some(gap) = &a.gap {
            entries.push((keys::GAP, PayloadValue::Json(gap)));
        }
        entries.push((keys::REPLAY_METADATA, PayloadValue::Texts(&parts.replay)));
        entries
    }

    /// Encodes the record: its JSON texts and checksum input are written directly, with the
    /// bytes the map-built record ([`Self::envelope`]) would have.
    ///
    /// # Errors
    ///
    /// [`crate::record::Error::FieldTooLong`] for a field of 4 GiB.
    pub fn encode(
        &self,
        id: &RecordId,
        stored_at: &OffsetDateTime,
        buffers: &mut EncodeBuffers,
    ) -> Result<EncodedRecord, crate::record::Error> {
        let a = &self.artifact;
        let identity = &*self.identity;
        let numbers = self.numbers();
        let parts = self.parts(&numbers);
        let mut entries = self.payload_entries(&parts);
        buffers.payload.clear();
        write_payload(&mut buffers.payload, &entries, KeyOrder::Insertion);
        entries = ksort::sort_entries(entries);
        let checksum = checksum::compute_with(
            &mut buffers.canonical,
            a.name,
            ARTIFACT_VERSION,
            &self.stamp.captured_at,
            |out| write_payload(out, &entries, KeyOrder::PhpKsort),
        );
        buffers.correlation_ids.clear();
        canonical::write_text_object(&mut buffers.correlation_ids, &parts.correlation_ids);
        let out = &mut buffers.runtime_flags;
        out.clear();
        canonical::write_text_object(out, &parts.text_flags);
        out.pop();
        out.push(',');
        canonical::write_string(out, keys::REPLAY_CAPTURE_SEQUENCE);
        out.push(':');
        out.push_str(itoa::Buffer::new().format(self.stamp.capture_sequence));
        if let Some(seq) = &a.protocol_sequence {
            out.push(',');
            canonical::write_string(out, keys::REPLAY_PROTOCOL_SEQUENCE);
            out.push(':');
            canonical::write_string(out, seq);
        }
        out.push('}');
        EncodedRecord::new(&RecordText {
            id,
            artifact_version: ARTIFACT_VERSION,
            artifact_name: a.name,
            capture_timestamp: &self.stamp.captured_at,
            stored_at,
            append_sequence: 1,
            connection_generation: Some(&numbers.generation),
            session_id: Some(&identity.session_id),
            job_uuid: a.job_uuid.as_deref(),
            event_name: a.event_name.as_deref(),
            capture_path: Some(a.name),
            checksum: &checksum,
            replay_session_id: non_blank(&identity.session_id),
            pbx_node_slug: non_blank(&identity.pbx_node_slug),
            worker_session_id: identity.worker_session_id.as_deref().and_then(non_blank),
            correlation_ids: &buffers.correlation_ids,
            runtime_flags: &buffers.runtime_flags,
            payload: &buffers.payload,
            tags: "[]",
        })
    }

    /// The envelope, with the record's maps built as maps (from the same entries
    /// [`Self::encode`] writes as text).
    #[must_use]
    pub fn envelope(&self) -> Envelope {
        let a = &self.artifact;
        let numbers = self.numbers();
        let parts = self.parts(&numbers);
        let payload = self
            .payload_entries(&parts)
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.to_json()))
            .collect();
        let mut flags = text_map(&parts.text_flags);
        flags.insert(
            keys::REPLAY_CAPTURE_SEQUENCE.into(),
            self.stamp.capture_sequence.into(),
        );
        if let Some(seq) = &a.protocol_sequence {
            flags.insert(keys::REPLAY_PROTOCOL_SEQUENCE.into(), seq.clone().into());
        }
        let correlation_ids = text_map(&parts.correlation_ids);
        Envelope {
            artifact_version: ARTIFACT_VERSION.into(),
            artifact_name: a.name.into(),
            capture_timestamp: self.stamp.captured_at,
            capture_path: Some(a.name.into()),
            connection_generation: Some(numbers.generation),
            session_id: Some(self.identity.session_id.clone()),
            job_uuid: a.job_uuid.clone(),
            event_name: a.event_name.clone(),
            correlation_ids,
            runtime_flags: flags,
            payload,
        }
    }
}

/// Sets `key` in a list of unique keys: in place if it is there, at the end otherwise.
fn upsert<'a>(list: &mut Vec<(&'a str, &'a str)>, key: &'a str, value: &'a str) {
    match list.iter_mut().find(|(k, _)| *k == key) {
        Some(slot) => slot.1 = value,
        None => list.push((key, value)),
    }
}

fn as_strs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// The value itself unless it is blank (how the identity fields are derived from the maps).
fn non_blank(value: &str) -> Option<&str> {
    Some(value).filter(|v| !crate::record::is_blank(v))
}

/// Writes the payload map: as the record stores it (`Insertion`: nested maps as objects,
/// [`canonical::write_record_map`]) or as the checksum reads it (`PhpKsort`, entries
/// already sorted: every nested map sorted and written by PHP's array rules).
fn write_payload(out: &mut String, entries: &[(&str, PayloadValue<'_>)], order: KeyOrder) {
    out.push('{');
    for (index, (key, value)) in entries.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        canonical::write_string(out, key);
        out.push(':');
        match value {
            PayloadValue::Text(text) => canonical::write_string(out, text),
            PayloadValue::Texts(pairs) => match order {
                KeyOrder::Insertion => canonical::write_text_object(out, pairs),
                KeyOrder::PhpKsort => canonical::write_text_map(out, pairs, order),
            },
            PayloadValue::Headers(headers) => {
                out.push('[');
                for (index, (name, value)) in headers.iter().enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    out.push('[');
                    canonical::write_string(out, name);
                    out.push(',');
                    canonical::write_string(out, value);
                    out.push(']');
                }
                out.push(']');
            }
            PayloadValue::Json(json) => match order {
                KeyOrder::Insertion => canonical::write_as_written(out, json),
                KeyOrder::PhpKsort => canonical::write_value(out, json, order),
            },
        }
    }
    out.push('}');
}

/// An artifact under construction.
#[derive(Debug, Clone)]
struct Artifact {
    name: &'static str,
    captured_type: &'static str,
    captured_name: String,
    raw_payload: String,
    raw_payload_base64: Option<String>,
    headers: Option<Vec<(String, String)>>,
    classifier: Vec<(String, String)>,
    facts: Vec<(String, String)>,
    derived: Vec<(String, String)>,
    job_uuid: Option<String>,
    event_name: Option<String>,
    protocol_sequence: Option<String>,
    gap: Option<Value>,
    operation: Option<Operation>,
}

/// The request an artifact belongs to, as the evidence engine sees it.
#[derive(Debug, Clone)]
struct Operation {
    /// `None` when the job UUID identifies it (a bgapi's completion).
    id: Option<String>,
    kind: &'static str,
    state: &'static str,
}

impl Artifact {
    fn new(name: &'static str, captured_type: &'static str, captured_name: &str) -> Artifact {
        Artifact {
            name,
            captured_type,
            captured_name: captured_name.to_owned(),
            raw_payload: String::new(),
            raw_payload_base64: None,
            headers: None,
            classifier: Vec::new(),
            facts: Vec::new(),
            derived: Vec::new(),
            job_uuid: None,
            event_name: None,
            protocol_sequence: None,
            gap: None,
            operation: None,
        }
    }

    /// Sets `raw_payload` to the bytes as text, with the exact bytes in base64 when they
    /// are not UTF-8.
    fn raw(&mut self, bytes: &[u8]) {
        match std::str::from_utf8(bytes) {
            Ok(text) => text.clone_into(&mut self.raw_payload),
            Err(_) => {
                self.raw_payload = String::from_utf8_lossy(bytes).into_owned();
                self.raw_payload_base64 =
                    Some(base64::engine::general_purpose::STANDARD.encode(bytes));
            }
        }
    }

    /// The whole frame without stray leading newlines: header lines, blank line, body.
    fn frame_whole(&mut self, frame: &Frame) {
        let head = frame.raw_head();
        let start = head
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        let mut bytes = Vec::with_capacity(head.len() - start + frame.body().len());
        bytes.extend_from_slice(&head[start..]);
        bytes.extend_from_slice(frame.body());
        self.raw(&bytes);
        self.headers = Some(frame.headers().to_vec());
    }

    fn classifier(&mut self, key: &str, value: &str) {
        set(&mut self.classifier, key, value);
    }

    /// Protocol facts drop empty values, as esl-core does.
    fn fact(&mut self, key: &str, value: &str) {
        if !value.is_empty() {
            set(&mut self.facts, key, value);
        }
    }

    fn derived(&mut self, key: &str, value: &str) {
        set(&mut self.derived, key, value);
    }
}

/// Sets `key` in one of an artifact's maps, held as pairs: in place if it is there (as a map
/// keeps a key's first place), at the end otherwise.
fn set(map: &mut Vec<(String, String)>, key: &str, value: &str) {
    match map.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => value.clone_into(&mut slot.1),
        None => map.push((key.to_owned(), value.to_owned())),
    }
}

fn origin_str(origin: Origin) -> &'static str {
    match origin {
        Origin::Handshake => "handshake",
        Origin::Restore => "restore",
        Origin::Probe => "probe",
        Origin::User => "user",
    }
}

/// `(command name, args)` of an api/bgapi command; empty for the others.
fn command_parts(command: Option<&Command>) -> (String, String) {
    match command {
        Some(Command::Api { command } | Command::BgApi { command, .. }) => split_line(command),
        _ => (String::new(), String::new()),
    }
}

fn split_line(text: &str) -> (String, String) {
    let text = text.trim();
    match text.split_once(' ') {
        Some((name, args)) => (name.to_owned(), args.trim().to_owned()),
        None => (text.to_owned(), String::new()),
    }
}

/// Microseconds since the Unix epoch.
#[must_use]
pub(crate) fn micros(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos() / 1000
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The `subscription.mutate` document (`esl-protocol.md` §4.3).
#[must_use]
pub fn subscription_document(
    kind: &str,
    names: &[String],
    before: &crate::esl::session::Subscriptions,
    after: &crate::esl::session::Subscriptions,
) -> Value {
    let state = |s: &crate::esl::session::Subscriptions| {
        let all = s.events.iter().any(|e| e.eq_ignore_ascii_case("ALL"));
        json!({"subscribe_all": all, "event_names": s.events})
    };
    json!({
        "mutation_kind": kind,
        "input": {"event_names": names},
        "desired_state_before": state(before),
        "desired_state_after": state(after),
        "noop": before == after,
    })
}

/// The `filter.mutate` document (`esl-protocol.md` §4.3).
#[must_use]
pub fn filter_document(
    kind: &str,
    header: &str,
    value: &str,
    before: &crate::esl::session::Subscriptions,
    after: &crate::esl::session::Subscriptions,
) -> Value {
    let state = |s: &crate::esl::session::Subscriptions| {
        s.filters
            .iter()
            .map(|(h, v)| json!({"headerName": h, "headerValue": v}))
            .collect::<Vec<_>>()
    };
    json!({
        "mutation_kind": kind,
        "header_name": header,
        "header_value": value,
        "desired_state_before": state(before),
        "desired_state_after": state(after),
        "noop": before == after,
    })
}
