//! How is a store replayed to ESL clients?
//!
//! [`StoreReplay`] serves the `event.raw` records of an artifact store. A captured event
//! record carries the outer frame body in `payload.raw_payload` (or, for bytes that are not
//! UTF-8, exactly in `payload.raw_payload_base64`), the outer `Content-Type` in
//! `payload.protocol_facts["content-type"]` and optionally the outer headers in order in
//! `payload.frame_headers`; a listener subscribed in the captured format receives the frame
//! byte for byte. Records without a raw payload are skipped.
//!
//! Each listener's feed reads the store in pages from the start sequence (or from the
//! serving checkpoint, which it keeps saving), paces events by their original times
//! (`Event-Date-Timestamp`, else the capture time) divided by the speed factor, never
//! reordering them, and starts over at the end when looping.
//!
//! `api` and `bgapi` are answered from the recording: at load the store is scanned once and
//! every `api.dispatch` (`raw_payload` = `api <command>`) is paired with the next `api.reply`
//! of the same connection, every `bgapi.dispatch` with the Job-UUID of its acknowledgement
//! and that job's `BACKGROUND_JOB` event. A command asked again gets the next recorded
//! answer, cycling. The core commands clients send on their own (`status`, `version`,
//! `switchname`, `show channels`, ...) are answered, when not recorded, from the switch the
//! store describes: its identity from the events' `FreeSWITCH-*` headers, its sessions from
//! the channels the events open and close (see `core_api`). Anything else gets FreeSWITCH's
//! unknown-command answer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;

use super::command::EventFormat;
use super::core_api::{self, ChannelRow, SessionFigures, SwitchIdentity};
use super::error::Error;
use super::event::{HeaderValue, ServedEvent};
use super::simulator::{CoreIdentity, background_job};
use super::traffic::{ApiAnswer, Feed, FeedItem, Traffic};
use super::wire;
use crate::checkpoint::CheckpointService;
use crate::record::{CapturePayload, Criteria, CriteriaFields, JsonMap, ReadCursor, Record, keys};
use crate::storage::error_chain;
use crate::store::ArtifactReader;

/// Records read per store page.
const PAGE: usize = 512;
/// How often a feed saves the serving checkpoint.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The most distinct channels (`Unique-ID`s) a load remembers (8 bytes each); a store with
/// more cannot tell `myevents` a session is missing, and any UUID is accepted.
const MAX_KNOWN_SESSIONS: usize = 4 * 1024 * 1024;

/// How a store is replayed.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Speed factor for pacing by original times (2.0 = twice as fast); `None` sends as fast
    /// as possible.
    pub speed: Option<f64>,
    /// Start over at the end instead of sending the disconnect notice.
    pub looping: bool,
    /// First append sequence served (1 = the start).
    pub from_sequence: u64,
    /// Where serving progress is saved and resumed from.
    pub checkpoint: Option<CheckpointService>,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        Self {
            speed: None,
            looping: false,
            from_sequence: 1,
            checkpoint: None,
        }
    }
}

/// What loading found in the store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplaySummary {
    /// Records scanned.
    pub records: u64,
    /// `event.raw` records with a raw payload (the stream).
    pub events: u64,
    /// `event.raw` records without one (skipped).
    pub events_without_payload: u64,
    /// Distinct `api` command texts with recorded replies.
    pub api_commands: usize,
    /// Distinct `bgapi` command texts with a recorded `BACKGROUND_JOB`.
    pub bgapi_commands: usize,
}

/// A store served to ESL clients.
pub struct StoreReplay {
    store: Arc<Mutex<Box<dyn ArtifactReader>>>,
    options: ReplayOptions,
    api: HashMap<String, Vec<Bytes>>,
    bgapi: HashMap<String, Vec<ServedEvent>>,
    core: CoreIdentity,
    identity: SwitchIdentity,
    /// Hashes of every `Unique-ID` the stored events carry (`None`: too many to remember).
    known_sessions: Option<HashSet<u64>>,
    /// Sessions at the end of the store; the uptime grows from there while serving.
    figures: SessionFigures,
    loaded: Instant,
    summary: ReplaySummary,
}

impl std::fmt::Debug for StoreReplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReplay")
            .field("options", &self.options)
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

fn event_criteria() -> Criteria {
    Criteria::new(CriteriaFields {
        artifact_name: Some("event.raw".into()),
        ..CriteriaFields::default()
    })
    .unwrap_or_default()
}

impl StoreReplay {
    /// Scans `store` once for recorded api/bgapi answers and counts its events.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] if reading fails; [`Error::InvalidOption`] for a speed that is not
    /// a positive finite number.
    pub fn load(store: Box<dyn ArtifactReader>, options: ReplayOptions) -> Result<Self, Error> {
        if let Some(speed) = options.speed
            && !(speed.is_finite() && speed > 0.0)
        {
            return Err(Error::InvalidOption(format!(
                "speed must be a positive number, got {speed}"
            )));
        }
        let mut scan = Scan::default();
        let mut cursor = ReadCursor::start();
        loop {
            let page = store.read_from_cursor(&cursor, PAGE, &Criteria::default())?;
            let Some(last) = page.last() else { break };
            cursor = ReadCursor::new(last.append_sequence(), None);
            for record in &page {
                scan.record(record);
            }
        }
        let summary = ReplaySummary {
            records: scan.records,
            events: scan.events,
            events_without_payload: scan.events_without_payload,
            api_commands: scan.api.len(),
            bgapi_commands: scan.bgapi.len(),
        };
        let figures = scan.sessions.figures();
        let header = |name: &str| scan.identity.get(name).cloned();
        let hostname = header("FreeSWITCH-Hostname").unwrap_or_else(|| "esl-replay".into());
        let identity = SwitchIdentity {
            core_uuid: header("Core-UUID").unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            switchname: header("FreeSWITCH-Switchname").unwrap_or_else(|| hostname.clone()),
            hostname,
            version: header("FreeSWITCH-Version")
                .unwrap_or_else(|| core_api::DEFAULT_VERSION.into()),
            ipv4: header("FreeSWITCH-IPv4").unwrap_or_default(),
            ipv6: header("FreeSWITCH-IPv6").unwrap_or_default(),
        };
        let core = CoreIdentity {
            core_uuid: identity.core_uuid.clone(),
            hostname: identity.hostname.clone(),
            ipv4: identity.ipv4.clone(),
        };
        Ok(StoreReplay {
            store: Arc::new(Mutex::new(store)),
            options,
            api: scan.api,
            bgapi: scan.bgapi,
            core,
            identity,
            known_sessions: (!scan.known_sessions.overflowed).then_some(scan.known_sessions.hashes),
            figures,
            loaded: Instant::now(),
            summary,
        })
    }

    /// What loading found.
    #[must_use]
    pub fn summary(&self) -> ReplaySummary {
        self.summary
    }

    fn start_cursor(&self) -> Result<ReadCursor, Error> {
        // A serving checkpoint that does not say exactly where to resume is refused, never
        // read as a guessed position (PHP's cast would make `"garbage"` a 0).
        if let Some(service) = &self.options.checkpoint
            && let Some(checkpoint) = service.resume_state()?.checkpoint()
        {
            return Ok(ReadCursor::new(
                checkpoint.cursor().last_consumed_sequence(),
                None,
            ));
        }
        Ok(ReadCursor::new(
            self.options.from_sequence.saturating_sub(1),
            None,
        ))
    }
}

/// The recorded api/bgapi pairs found by one scan.
#[derive(Default)]
struct Scan {
    records: u64,
    events: u64,
    events_without_payload: u64,
    /// The first value seen of each identity header.
    identity: HashMap<&'static str, String>,
    known_sessions: KnownSessions,
    sessions: Sessions,
    pending_api: HashMap<String, VecDeque<String>>,
    pending_bgapi: HashMap<String, VecDeque<String>>,
    job_commands: HashMap<String, String>,
    orphan_jobs: HashMap<String, ServedEvent>,
    api: HashMap<String, Vec<Bytes>>,
    bgapi: HashMap<String, Vec<ServedEvent>>,
}

impl Scan {
    fn record(&mut self, record: &Record) {
        self.records += 1;
        let connection = format!(
            "{}/{}",
            record.session_id().unwrap_or_default(),
            record.connection_generation().unwrap_or_default()
        );
        let payload = record.payload();
        match record.artifact_name() {
            "api.dispatch" => {
                if let Some(command) = dispatch_command(payload, "api") {
                    self.pending_api
                        .entry(connection)
                        .or_default()
                        .push_back(command);
                }
            }
            "api.reply" => {
                let command = self
                    .pending_api
                    .get_mut(&connection)
                    .and_then(VecDeque::pop_front);
                if let (Some(command), Some(raw)) = (command, raw_payload(payload)) {
                    self.api.entry(command).or_default().push(api_frame(raw));
                }
            }
            "bgapi.dispatch" => {
                if let Some(command) = dispatch_command(payload, "bgapi") {
                    self.pending_bgapi
                        .entry(connection)
                        .or_default()
                        .push_back(command);
                }
            }
            "command.reply" | "bgapi.ack" => {
                let Some(job) = ack_job_uuid(record) else {
                    return;
                };
                if self.job_commands.contains_key(&job) {
                    return;
                }
                let Some(command) = self
                    .pending_bgapi
                    .get_mut(&connection)
                    .and_then(VecDeque::pop_front)
                else {
                    return;
                };
                if let Some(event) = self.orphan_jobs.remove(&job) {
                    self.bgapi.entry(command.clone()).or_default().push(event);
                }
                self.job_commands.insert(job, command);
            }
            "event.raw" => {
                let Some(event) = served_event(record) else {
                    self.events_without_payload += 1;
                    return;
                };
                self.events += 1;
                if let Some(uuid) = event.unique_id() {
                    self.known_sessions.insert(&uuid);
                }
                let needs_identity = self.identity.len() < IDENTITY_HEADERS.len();
                if needs_identity || Sessions::tracks(event.name()) {
                    let parts = event.parts();
                    if needs_identity {
                        for name in IDENTITY_HEADERS {
                            if !self.identity.contains_key(name)
                                && let Some(value) = text(&parts, name)
                            {
                                self.identity.insert(name, value);
                            }
                        }
                    }
                    self.sessions.event(&event, &parts);
                }
                self.sessions.seen(event.timestamp_us());
                if event.name() == "BACKGROUND_JOB" {
                    let parts = event.parts();
                    let Some(job) = parts
                        .header("Job-UUID")
                        .map(|v| String::from_utf8_lossy(&v.joined()).into_owned())
                    else {
                        return;
                    };
                    match self.job_commands.get(&job) {
                        Some(command) => {
                            self.bgapi.entry(command.clone()).or_default().push(event);
                        }
                        None => {
                            self.orphan_jobs.insert(job, event);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The channels a store's events name, by a hash of their `Unique-ID` (a collision can
/// only make an unknown UUID pass for a known one, as if nothing were checked).
#[derive(Default)]
struct KnownSessions {
    hashes: HashSet<u64>,
    /// More than [`MAX_KNOWN_SESSIONS`]: forgotten, nothing can be told.
    overflowed: bool,
}

impl KnownSessions {
    fn insert(&mut self, uuid: &str) {
        if self.overflowed {
            return;
        }
        self.hashes.insert(session_hash(uuid));
        if self.hashes.len() > MAX_KNOWN_SESSIONS {
            self.hashes = HashSet::new();
            self.overflowed = true;
        }
    }
}

fn session_hash(uuid: &str) -> u64 {
    use std::hash::{Hash as _, Hasher as _};
    let mut hasher = std::hash::DefaultHasher::new();
    uuid.hash(&mut hasher);
    hasher.finish()
}

/// The headers a served switch takes its identity from.
const IDENTITY_HEADERS: [&str; 6] = [
    "Core-UUID",
    "FreeSWITCH-Hostname",
    "FreeSWITCH-Switchname",
    "FreeSWITCH-Version",
    "FreeSWITCH-IPv4",
    "FreeSWITCH-IPv6",
];

fn text(parts: &super::event::EventParts, name: &str) -> Option<String> {
    parts
        .header(name)
        .map(|v| String::from_utf8_lossy(&v.joined()).into_owned())
}

/// The switch's sessions as the stored events tell them: channels opened by
/// `CHANNEL_CREATE` and closed by `CHANNEL_DESTROY`, the peaks, and the last `HEARTBEAT`'s
/// limits and uptime.
#[derive(Default)]
struct Sessions {
    open: HashMap<String, ChannelRow>,
    since_startup: u64,
    peak: u64,
    /// Creates in the current second, and the most in any second.
    second: (i64, u64),
    peak_per_second: u64,
    heartbeat: Option<(SessionFigures, Duration, i64)>,
    first_us: Option<i64>,
    last_us: Option<i64>,
}

impl Sessions {
    fn tracks(name: &str) -> bool {
        matches!(
            name,
            "CHANNEL_CREATE" | "CHANNEL_DESTROY" | "CHANNEL_CALLSTATE" | "HEARTBEAT"
        )
    }

    fn seen(&mut self, at_us: Option<i64>) {
        if let Some(at) = at_us {
            self.first_us.get_or_insert(at);
            self.last_us = Some(self.last_us.map_or(at, |last| last.max(at)));
        }
    }

    fn event(&mut self, event: &ServedEvent, parts: &super::event::EventParts) {
        let value = |name| text(parts, name).unwrap_or_default();
        let number = |name| value(name).trim().parse::<u64>().ok();
        let uuid = value("Unique-ID");
        match event.name() {
            "CHANNEL_CREATE" => {
                self.since_startup += 1;
                let second = event.timestamp_us().unwrap_or(0) / 1_000_000;
                self.second = if self.second.0 == second {
                    (second, self.second.1 + 1)
                } else {
                    (second, 1)
                };
                self.peak_per_second = self.peak_per_second.max(self.second.1);
                let created = number("Caller-Channel-Created-Time")
                    .or_else(|| event.timestamp_us().and_then(|t| u64::try_from(t).ok()))
                    .unwrap_or(0);
                self.open.insert(
                    uuid.clone(),
                    ChannelRow {
                        uuid,
                        direction: value("Call-Direction"),
                        created_epoch: created / 1_000_000,
                        name: value("Channel-Name"),
                        state: value("Channel-State"),
                        cid_name: value("Caller-Caller-ID-Name"),
                        cid_num: value("Caller-Caller-ID-Number"),
                        dest: value("Caller-Destination-Number"),
                        call_uuid: value("Channel-Call-UUID"),
                        callstate: value("Channel-Call-State"),
                    },
                );
                self.peak = self.peak.max(self.open.len() as u64);
            }
            "CHANNEL_DESTROY" => {
                self.open.remove(&uuid);
            }
            "CHANNEL_CALLSTATE" => {
                if let Some(row) = self.open.get_mut(&uuid) {
                    row.callstate = value("Channel-Call-State");
                    row.state = value("Channel-State");
                }
            }
            "HEARTBEAT" => {
                let limits = SessionFigures {
                    max_sessions: number("Max-Sessions").unwrap_or(1000),
                    max_per_second: number("Session-Per-Sec").unwrap_or(30),
                    idle_cpu: value("Idle-CPU").trim().parse().unwrap_or(100.0),
                    ..SessionFigures::default()
                };
                let uptime = Duration::from_millis(number("Uptime-msec").unwrap_or(0));
                self.heartbeat = Some((limits, uptime, event.timestamp_us().unwrap_or(0)));
            }
            _ => {}
        }
    }

    /// The figures at the end of the store; `uptime` is the switch's uptime at its last
    /// event (from the last heartbeat, else the span of the events).
    fn figures(&self) -> SessionFigures {
        let last = self.last_us.unwrap_or(0);
        let (limits, uptime) = match &self.heartbeat {
            Some((limits, uptime, at)) => {
                (limits.clone(), *uptime + micros(last.saturating_sub(*at)))
            }
            None => (
                SessionFigures {
                    max_sessions: 1000,
                    max_per_second: 30,
                    idle_cpu: 100.0,
                    ..SessionFigures::default()
                },
                micros(last.saturating_sub(self.first_us.unwrap_or(last))),
            ),
        };
        let mut channels: Vec<ChannelRow> = self.open.values().cloned().collect();
        channels.sort_by(|a, b| (a.created_epoch, &a.uuid).cmp(&(b.created_epoch, &b.uuid)));
        SessionFigures {
            uptime,
            since_startup: self.since_startup,
            channels,
            peak: self.peak,
            peak_per_second: self.peak_per_second,
            ..limits
        }
    }
}

fn micros(us: i64) -> Duration {
    Duration::from_micros(u64::try_from(us).unwrap_or(0))
}

fn raw_payload(payload: &JsonMap) -> Option<Bytes> {
    CapturePayload::of(payload)
        .raw_bytes()
        .map(|bytes| Bytes::from(bytes.into_owned()))
}

/// The command text of a dispatch payload `"<kind> <command>"`, trimmed.
fn dispatch_command(payload: &JsonMap, kind: &str) -> Option<String> {
    let raw = raw_payload(payload)?;
    let text = String::from_utf8_lossy(&raw);
    let (word, rest) = text.trim().split_once(' ')?;
    (word.eq_ignore_ascii_case(kind) && !rest.trim().is_empty()).then(|| normalize(rest))
}

/// Command texts are compared with surrounding and repeated whitespace ignored.
fn normalize(command: &str) -> String {
    command.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A recorded reply payload (header lines, blank line, body) as a frame to send: kept as is
/// when its `Content-Length` matches the body, else rebuilt around the body.
fn api_frame(raw: Bytes) -> Bytes {
    let split = raw.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(at) => (
            raw.get(..at).unwrap_or_default(),
            raw.get(at + 2..).unwrap_or_default(),
        ),
        None => (&raw[..], &b""[..]),
    };
    let declared = String::from_utf8_lossy(head).lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("Content-Length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    if split.is_some() && declared == Some(body.len()) {
        return raw;
    }
    let mut out = bytes::BytesMut::new();
    wire::api_response(&mut out, body);
    out.freeze()
}

fn ack_job_uuid(record: &Record) -> Option<String> {
    let payload = CapturePayload::of(record.payload());
    let reply_text = payload.fact(keys::FACT_REPLY_TEXT).unwrap_or_default();
    if !reply_text.is_empty() && !reply_text.starts_with("+OK Job-UUID") {
        return None;
    }
    record
        .job_uuid()
        .or_else(|| payload.fact(keys::FACT_JOB_UUID))
        .map(str::to_owned)
        .or_else(|| {
            reply_text
                .strip_prefix("+OK Job-UUID: ")
                .map(|u| u.trim().to_owned())
        })
}

/// The event a captured `event.raw` record replays, `None` without a raw payload.
fn served_event(record: &Record) -> Option<ServedEvent> {
    let payload = record.payload();
    let body = raw_payload(payload)?;
    let content_type = CapturePayload::of(payload).fact(keys::FACT_CONTENT_TYPE);
    let format = content_type
        .and_then(EventFormat::from_content_type)
        .unwrap_or(match body.first() {
            Some(b'{') => EventFormat::Json,
            Some(b'<') => EventFormat::Xml,
            _ => EventFormat::Plain,
        });
    let event = ServedEvent::from_body(format, body.clone());
    match frame_head(payload, body.len()) {
        Some(head) => Some(event.with_head(head)),
        None => Some(event),
    }
}

/// The recorded outer header block, if present and consistent with the body length.
fn frame_head(payload: &JsonMap, body_len: usize) -> Option<Bytes> {
    let mut head = Vec::new();
    let mut length_ok = false;
    for (name, value) in CapturePayload::of(payload).frame_headers()? {
        if name.eq_ignore_ascii_case("Content-Length") {
            length_ok = value.trim().parse::<usize>().ok() == Some(body_len);
        }
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.push(b'\n');
    }
    head.push(b'\n');
    length_ok.then(|| Bytes::from(head))
}

/// The original time of an event in microseconds.
fn event_time_us(record: &Record, event: &ServedEvent) -> i64 {
    event.timestamp_us().unwrap_or_else(|| {
        i64::try_from(record.capture_timestamp().unix_timestamp_nanos() / 1000).unwrap_or(0)
    })
}

/// A job's recorded `BACKGROUND_JOB` with the new Job-UUID, in its captured format.
fn with_job_uuid(event: &ServedEvent, job_uuid: &str) -> ServedEvent {
    let mut parts = event.parts();
    for (name, value) in &mut parts.headers {
        if name.eq_ignore_ascii_case("Job-UUID") {
            *value = HeaderValue::One(job_uuid.as_bytes().to_vec());
        }
    }
    let mut body = Vec::new();
    let format = match event.native_format() {
        EventFormat::Json => {
            parts.write_json(&mut body);
            EventFormat::Json
        }
        _ => {
            parts.write_plain(&mut body);
            EventFormat::Plain
        }
    };
    ServedEvent::from_parts(
        "BACKGROUND_JOB",
        None,
        format,
        Bytes::from(body),
        event.timestamp_us(),
    )
}

impl Traffic for StoreReplay {
    fn feed(&self) -> Result<Box<dyn Feed>, Error> {
        let start = self.start_cursor()?;
        Ok(Box::new(ReplayFeed {
            store: Arc::clone(&self.store),
            criteria: event_criteria(),
            speed: self.options.speed,
            looping: self.options.looping,
            loop_start: ReadCursor::new(self.options.from_sequence.saturating_sub(1), None),
            cursor: start,
            page: VecDeque::new(),
            pass_base_us: None,
            pass_offset: Duration::ZERO,
            last_due: Duration::ZERO,
            served_this_pass: 0,
            checkpoint: self.options.checkpoint.clone(),
            handed: None,
            handled: None,
            delivered: None,
            saved: None,
            last_save: Instant::now(),
        }))
    }

    fn api(&self, command: &str, occurrence: usize) -> ApiAnswer {
        match self.api.get(&normalize(command)) {
            Some(replies) if !replies.is_empty() => {
                let frame = replies
                    .get(occurrence % replies.len())
                    .cloned()
                    .unwrap_or_default();
                ApiAnswer::Frame(frame)
            }
            _ => self
                .core_answer(command)
                .map_or(ApiAnswer::NotFound, ApiAnswer::Body),
        }
    }

    /// A session exists in what is served if a stored event names it (`Unique-ID`).
    fn session_exists(&self, uuid: &str) -> Option<bool> {
        self.known_sessions
            .as_ref()
            .map(|known| known.contains(&session_hash(uuid)))
    }

    fn bgapi(&self, command: &str, job_uuid: &str, occurrence: usize) -> ServedEvent {
        match self.bgapi.get(&normalize(command)) {
            Some(events) if !events.is_empty() => {
                events.get(occurrence % events.len()).map_or_else(
                    || self.job(command, job_uuid),
                    |e| with_job_uuid(e, job_uuid),
                )
            }
            _ => self.job(command, job_uuid),
        }
    }
}

impl StoreReplay {
    /// A core command's answer from the served switch (uptime grown since loading).
    fn core_answer(&self, command: &str) -> Option<Vec<u8>> {
        core_api::answer(command, &self.identity, || SessionFigures {
            uptime: self.figures.uptime + self.loaded.elapsed(),
            ..self.figures.clone()
        })
    }

    /// The `BACKGROUND_JOB` of a job with no recorded one: a core answer or not found.
    fn job(&self, command: &str, job_uuid: &str) -> ServedEvent {
        static SEQUENCE: AtomicU64 = AtomicU64::new(1);
        let output = self
            .core_answer(command)
            .unwrap_or_else(|| wire::unknown_api_body(command));
        background_job(
            &self.core,
            SEQUENCE.fetch_add(1, Ordering::Relaxed),
            job_uuid,
            command,
            &output,
        )
    }
}

/// One listener's pass(es) over the store.
struct ReplayFeed {
    store: Arc<Mutex<Box<dyn ArtifactReader>>>,
    criteria: Criteria,
    speed: Option<f64>,
    looping: bool,
    /// Where every later pass starts (a resumed first pass starts at the checkpoint).
    loop_start: ReadCursor,
    cursor: ReadCursor,
    page: VecDeque<(u64, ServedEvent, i64)>,
    pass_base_us: Option<i64>,
    pass_offset: Duration,
    last_due: Duration,
    served_this_pass: u64,
    checkpoint: Option<CheckpointService>,
    /// Sequence of the last record handed out, of the last one the connection handled
    /// (rendered or filtered out), and of the last one whose bytes the socket took: only
    /// that one is ever saved.
    handed: Option<u64>,
    handled: Option<u64>,
    delivered: Option<u64>,
    saved: Option<u64>,
    last_save: Instant,
}

impl std::fmt::Debug for ReplayFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayFeed")
            .field("cursor", &self.cursor)
            .field("speed", &self.speed)
            .field("looping", &self.looping)
            .finish_non_exhaustive()
    }
}

impl ReplayFeed {
    /// Reads the next page of records; returns how many were read (0 at the end).
    fn fill(&mut self) -> Result<usize, Error> {
        let records = self
            .store
            .lock()
            .read_from_cursor(&self.cursor, PAGE, &self.criteria)?;
        if let Some(last) = records.last() {
            self.cursor = ReadCursor::new(last.append_sequence(), None);
        }
        for record in &records {
            if let Some(event) = served_event(record) {
                let at = event_time_us(record, &event);
                self.page.push_back((record.append_sequence(), event, at));
            }
        }
        Ok(records.len())
    }

    fn save_checkpoint(&mut self) {
        let (Some(service), Some(sequence)) = (&self.checkpoint, self.delivered) else {
            return;
        };
        if self.saved == Some(sequence) {
            return;
        }
        // Not past a record a power loss could take back. A failure waits for the next
        // save's turn, like a failed save.
        let durable = self.store.lock().sync_readable();
        self.last_save = Instant::now();
        let sequence = match durable {
            Ok(durable) => sequence.min(durable),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot make the served records durable; checkpoint not saved");
                return;
            }
        };
        // What the checkpoint held stays (retention queries find its consumer by it).
        let mut metadata = service
            .load()
            .ok()
            .flatten()
            .map(|checkpoint| checkpoint.metadata().clone())
            .unwrap_or_default();
        metadata.insert("consumer".into(), "esl-replay serve".into());
        match service.save(ReadCursor::new(sequence, None), metadata) {
            Ok(_) => self.saved = Some(sequence),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "cannot save the serving checkpoint")
            }
        }
    }
}

impl Feed for ReplayFeed {
    fn next_item(&mut self) -> Result<FeedItem, Error> {
        loop {
            // A page may hold only records without a payload: read on until one has.
            while self.page.is_empty() && self.fill()? > 0 {}
            if let Some((sequence, event, at)) = self.page.pop_front() {
                self.handed = Some(sequence);
                self.served_this_pass += 1;
                let due = self.speed.map(|speed| {
                    let base = *self.pass_base_us.get_or_insert(at);
                    let offset_us = u64::try_from(at.saturating_sub(base)).unwrap_or(0);
                    // A tiny speed (or a huge offset) saturates instead of overflowing.
                    let scaled = Duration::try_from_secs_f64(offset_us as f64 / 1e6 / speed)
                        .unwrap_or(Duration::MAX);
                    let due = self.pass_offset.saturating_add(scaled).max(self.last_due);
                    self.last_due = due;
                    due
                });
                return Ok(FeedItem::Event { event, due });
            }
            if !self.looping || self.served_this_pass == 0 {
                self.save_checkpoint();
                return Ok(FeedItem::End);
            }
            // Start the next pass just after the last event of this one.
            self.cursor = self.loop_start;
            self.pass_base_us = None;
            self.pass_offset = self.last_due.saturating_add(Duration::from_millis(1));
            self.served_this_pass = 0;
        }
    }

    fn handled(&mut self) {
        self.handled = self.handed;
    }

    fn delivered(&mut self) {
        self.delivered = self.handled;
        if self.checkpoint.is_some() && self.last_save.elapsed() >= CHECKPOINT_EVERY {
            self.save_checkpoint();
        }
    }
}

impl Drop for ReplayFeed {
    /// Saves the progress delivered so far: events handled but not written whole (a batch
    /// whose write failed, or one never flushed) are not covered, so the next client gets
    /// them again.
    fn drop(&mut self) {
        self.save_checkpoint();
    }
}
