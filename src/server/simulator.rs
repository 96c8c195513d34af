//! How does the server imitate a busy FreeSWITCH?
//!
//! [`Simulator`] generates realistic inbound-ESL traffic: calls that each produce
//! `CHANNEL_CREATE`, `CHANNEL_ANSWER`, two `DTMF`, `CHANNEL_BRIDGE` and
//! `CHANNEL_HANGUP_COMPLETE` with plausible channel data and variables, a `CUSTOM`
//! `sofia::register` every fourth call, and a `HEARTBEAT` every 20 seconds; all with one
//! Core-UUID and one `Event-Sequence` counter that increases across every connection.
//! The core API commands (`status`, `version`, `switchname`, `show channels`, ... see
//! `core_api`) are answered from the simulated switch, whose open channels are the calls
//! listeners are in the middle of; `echo` and `originate` too. `bgapi` jobs are acknowledged
//! and their `BACKGROUND_JOB` sent at once.
//!
//! Generation is cheap: every event kind is a template rendered once at start and split at
//! its variable fields, so an event costs a few `memcpy`s of literal text plus the
//! per-call and per-event values (UUIDs, numbers, dates formatted once per second).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::net::TcpListener;

use super::command::EventFormat;
use super::core_api::{self, ChannelRow, SessionFigures, SwitchIdentity};
use super::error::Error;
use super::event::ServedEvent;
use super::traffic::{ApiAnswer, Feed, FeedItem, Traffic};
use super::wire::{put_decimal, url_encode};
use super::{RunningServer, ServerConfig, spawn};

/// The identity a simulated (or replayed) switch reports in its events.
#[derive(Debug, Clone)]
pub(crate) struct CoreIdentity {
    pub(crate) core_uuid: String,
    pub(crate) hostname: String,
    pub(crate) ipv4: String,
}

impl Default for CoreIdentity {
    fn default() -> Self {
        Self {
            core_uuid: uuid::Uuid::new_v4().to_string(),
            hostname: "fs-sim".into(),
            ipv4: "192.0.2.10".into(),
        }
    }
}

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    /// Events per second per listener; `None` generates as fast as the client reads.
    pub rate: Option<f64>,
    /// Events per listener after which the stream ends (disconnect notice); `None`: endless.
    pub max_events: Option<u64>,
    /// How long a listener's stream lasts; `None`: endless.
    pub duration: Option<Duration>,
    /// Interval between `HEARTBEAT` events (FreeSWITCH's default is 20 s).
    pub heartbeat_interval: Duration,
    /// `FreeSWITCH-Hostname` and `FreeSWITCH-Switchname`.
    pub hostname: String,
    /// The Core-UUID to report; `None` makes a fresh one (a restarted switch). Reuse one to
    /// simulate a listener that died while the switch kept running.
    pub core_uuid: Option<String>,
    /// The first `Event-Sequence` handed out.
    pub first_sequence: u64,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            rate: Some(100.0),
            max_events: None,
            duration: None,
            heartbeat_interval: Duration::from_secs(20),
            hostname: "fs-sim".into(),
            core_uuid: None,
            first_sequence: 1,
        }
    }
}

/// The FreeSWITCH simulator's traffic.
#[derive(Debug)]
pub struct Simulator {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: SimulatorConfig,
    core: CoreIdentity,
    sequence: AtomicU64,
    calls: AtomicU64,
    sessions: Mutex<OpenCalls>,
    started: Instant,
    templates: Templates,
}

/// The calls listeners are in the middle of: the simulated switch's open channels.
#[derive(Debug, Default)]
struct OpenCalls {
    channels: std::collections::BTreeMap<String, ChannelRow>,
    peak: u64,
    /// Calls started in the current second, and the most in any second.
    second: (u64, u64),
    peak_per_second: u64,
}

impl Simulator {
    /// A simulator with a fresh Core-UUID.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidOption`] for a rate that is not a positive finite number, or a zero
    /// heartbeat interval.
    pub fn new(config: SimulatorConfig) -> Result<Simulator, Error> {
        if let Some(rate) = config.rate
            && !(rate.is_finite() && rate > 0.0)
        {
            return Err(Error::InvalidOption(format!(
                "rate must be a positive number of events per second, got {rate}"
            )));
        }
        if config.heartbeat_interval.is_zero() {
            return Err(Error::InvalidOption(
                "heartbeat interval must not be zero".into(),
            ));
        }
        let mut core = CoreIdentity {
            hostname: config.hostname.clone(),
            ..CoreIdentity::default()
        };
        if let Some(uuid) = &config.core_uuid {
            core.core_uuid.clone_from(uuid);
        }
        let templates = Templates::new(&core);
        let first_sequence = config.first_sequence;
        Ok(Simulator {
            shared: Arc::new(Shared {
                config,
                core,
                sequence: AtomicU64::new(first_sequence),
                calls: AtomicU64::new(0),
                sessions: Mutex::new(OpenCalls::default()),
                started: Instant::now(),
                templates,
            }),
        })
    }

    /// The Core-UUID every event carries.
    #[must_use]
    pub fn core_uuid(&self) -> &str {
        &self.shared.core.core_uuid
    }

    /// The `Event-Sequence` the next event gets: with [`SimulatorConfig::first_sequence`],
    /// the count of events generated so far (across all listeners).
    #[must_use]
    pub fn next_sequence(&self) -> u64 {
        self.shared.sequence.load(Ordering::Relaxed)
    }

    /// Serves this simulator on `listener`; the caller keeps the simulator to read its
    /// Core-UUID and sequence counter (call from within a tokio runtime).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the listener's address cannot be read.
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        server: ServerConfig,
    ) -> Result<RunningServer, Error> {
        spawn(listener, server, Arc::clone(self) as Arc<dyn Traffic>)
    }

    /// Starts a simulator serving on `listener` (call from within a tokio runtime).
    ///
    /// # Errors
    ///
    /// As [`Simulator::new`], or [`Error::Io`] if the listener's address cannot be read.
    pub fn start(
        listener: TcpListener,
        server: ServerConfig,
        config: SimulatorConfig,
    ) -> Result<RunningServer, Error> {
        let simulator = Simulator::new(config)?;
        spawn(listener, server, Arc::new(simulator))
    }

    /// The answer to `api <command>`, `None` for a command the simulator does not know.
    fn answer(&self, command: &str) -> Option<Vec<u8>> {
        let (name, args) = command
            .trim()
            .split_once(' ')
            .map_or((command.trim(), ""), |(n, a)| (n, a.trim()));
        match name {
            "echo" => Some(args.as_bytes().to_vec()),
            "originate" => Some(format!("+OK {}\n", uuid::Uuid::new_v4()).into_bytes()),
            _ => core_api::answer(command, &self.identity(), || self.figures()),
        }
    }

    fn identity(&self) -> SwitchIdentity {
        let core = &self.shared.core;
        SwitchIdentity {
            core_uuid: core.core_uuid.clone(),
            hostname: core.hostname.clone(),
            switchname: core.hostname.clone(),
            version: SIMULATOR_VERSION.into(),
            ipv4: core.ipv4.clone(),
            ipv6: "::1".into(),
        }
    }

    /// One snapshot, so the counts agree: every started call is a session since startup,
    /// the calls not yet hung up are the open channels.
    fn figures(&self) -> SessionFigures {
        let sessions = self.shared.sessions.lock();
        SessionFigures {
            uptime: self.shared.started.elapsed(),
            since_startup: self.shared.calls.load(Ordering::Relaxed),
            channels: sessions.channels.values().cloned().collect(),
            peak: sessions.peak,
            peak_per_second: sessions.peak_per_second,
            max_sessions: 1000,
            max_per_second: 30,
            idle_cpu: 99.0,
        }
    }
}

/// `switch_version_full()` of the simulator: a 1.10.12 release that says what it is.
const SIMULATOR_VERSION: &str = "1.10.12-release+esl-replay~simulator~64bit";

impl Traffic for Simulator {
    fn feed(&self) -> Result<Box<dyn Feed>, Error> {
        Ok(Box::new(SimFeed {
            shared: Arc::clone(&self.shared),
            values: Values::new(rand::random()),
            open_call: None,
            call: 0,
            step: 0,
            emitted: 0,
            started: Instant::now(),
            next_heartbeat: self.shared.config.heartbeat_interval,
            dates: DateCache::default(),
        }))
    }

    fn api(&self, command: &str, _occurrence: usize) -> ApiAnswer {
        self.answer(command)
            .map_or(ApiAnswer::NotFound, ApiAnswer::Body)
    }

    /// A session exists while a listener is in the middle of its call.
    fn session_exists(&self, uuid: &str) -> Option<bool> {
        Some(self.shared.sessions.lock().channels.contains_key(uuid))
    }

    fn bgapi(&self, command: &str, job_uuid: &str, _occurrence: usize) -> ServedEvent {
        let body = self
            .answer(command)
            .unwrap_or_else(|| super::wire::unknown_api_body(command));
        let sequence = self.shared.sequence.fetch_add(1, Ordering::Relaxed);
        background_job(&self.shared.core, sequence, job_uuid, command, &body)
    }
}

/// A `BACKGROUND_JOB` event (plain) for a finished job, as `mod_event_socket` fires it.
pub(crate) fn background_job(
    core: &CoreIdentity,
    sequence: u64,
    job_uuid: &str,
    command: &str,
    output: &[u8],
) -> ServedEvent {
    let now_us = now_micros();
    let mut dates = DateCache::default();
    let (local, gmt) = dates.get(now_us);
    let mut body = Vec::with_capacity(1024);
    standard_head(
        &mut body,
        core,
        "BACKGROUND_JOB",
        ("mod_event_socket.c", "api_exec", 1572),
    );
    let text = |body: &mut Vec<u8>, name: &str, value: &[u8]| {
        body.extend_from_slice(name.as_bytes());
        body.extend_from_slice(b": ");
        url_encode(body, value);
        body.push(b'\n');
    };
    let body = {
        let mut out = Vec::with_capacity(body.len() + 256);
        for piece in Template::parse(&String::from_utf8_lossy(&body)).pieces {
            match piece {
                Piece::Literal(bytes) => out.extend_from_slice(&bytes),
                Piece::Slot(Slot::DateLocal) => out.extend_from_slice(local),
                Piece::Slot(Slot::DateGmt) => out.extend_from_slice(gmt),
                Piece::Slot(Slot::Timestamp) => put_decimal(&mut out, now_us),
                Piece::Slot(Slot::Sequence) => put_decimal(&mut out, sequence),
                Piece::Slot(_) => {}
            }
        }
        let (name, args) = command
            .trim()
            .split_once(' ')
            .map_or((command.trim(), ""), |(n, a)| (n, a.trim()));
        text(&mut out, "Job-UUID", job_uuid.as_bytes());
        text(&mut out, "Job-Command", name.as_bytes());
        if !args.is_empty() {
            text(&mut out, "Job-Command-Arg", args.as_bytes());
        }
        out.extend_from_slice(b"Content-Length: ");
        put_decimal(&mut out, output.len() as u64);
        out.extend_from_slice(b"\n\n");
        out.extend_from_slice(output);
        out
    };
    ServedEvent::from_parts(
        "BACKGROUND_JOB",
        None,
        EventFormat::Plain,
        Bytes::from(body),
        i64::try_from(now_us).ok(),
    )
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The per-second date strings (`Event-Date-Local`, `Event-Date-GMT`), URL-encoded.
#[derive(Debug, Default)]
struct DateCache {
    second: Option<u64>,
    local: Vec<u8>,
    gmt: Vec<u8>,
}

impl DateCache {
    fn get(&mut self, now_us: u64) -> (&[u8], &[u8]) {
        let second = now_us / 1_000_000;
        if self.second != Some(second) {
            self.second = Some(second);
            let at = time::OffsetDateTime::from_unix_timestamp(i64::try_from(second).unwrap_or(0))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let local = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                at.year(),
                u8::from(at.month()),
                at.day(),
                at.hour(),
                at.minute(),
                at.second()
            );
            let gmt = format!(
                "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
                weekday(at.weekday()),
                at.day(),
                month(at.month()),
                at.year(),
                at.hour(),
                at.minute(),
                at.second()
            );
            self.local.clear();
            url_encode(&mut self.local, local.as_bytes());
            self.gmt.clear();
            url_encode(&mut self.gmt, gmt.as_bytes());
        }
        (&self.local, &self.gmt)
    }
}

fn weekday(day: time::Weekday) -> &'static str {
    match day {
        time::Weekday::Monday => "Mon",
        time::Weekday::Tuesday => "Tue",
        time::Weekday::Wednesday => "Wed",
        time::Weekday::Thursday => "Thu",
        time::Weekday::Friday => "Fri",
        time::Weekday::Saturday => "Sat",
        time::Weekday::Sunday => "Sun",
    }
}

fn month(month: time::Month) -> &'static str {
    const NAMES: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    NAMES
        .get(usize::from(u8::from(month)).saturating_sub(1))
        .copied()
        .unwrap_or("Jan")
}

/// The variable fields of the templates, written `{{name}}` in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    DateLocal,
    DateGmt,
    Timestamp,
    Sequence,
    Uuid,
    OtherUuid,
    Caller,
    Destination,
    CallId,
    SessionNumber,
    CreatedUs,
    AnsweredUs,
    BridgedUs,
    HangupUs,
    Digit,
    Billsec,
    Duration,
    CallerPort,
    SessionCount,
    SessionPeak,
    PeakPerSecond,
}

const SLOTS: [(&str, Slot); 21] = [
    ("date_local", Slot::DateLocal),
    ("date_gmt", Slot::DateGmt),
    ("timestamp", Slot::Timestamp),
    ("sequence", Slot::Sequence),
    ("uuid", Slot::Uuid),
    ("other_uuid", Slot::OtherUuid),
    ("caller", Slot::Caller),
    ("destination", Slot::Destination),
    ("call_id", Slot::CallId),
    ("session_number", Slot::SessionNumber),
    ("created_us", Slot::CreatedUs),
    ("answered_us", Slot::AnsweredUs),
    ("bridged_us", Slot::BridgedUs),
    ("hangup_us", Slot::HangupUs),
    ("digit", Slot::Digit),
    ("billsec", Slot::Billsec),
    ("duration", Slot::Duration),
    ("caller_port", Slot::CallerPort),
    ("session_count", Slot::SessionCount),
    ("session_peak", Slot::SessionPeak),
    ("peak_per_second", Slot::PeakPerSecond),
];

#[derive(Debug, Clone)]
enum Piece {
    Literal(Vec<u8>),
    Slot(Slot),
}

/// An event body split at its variable fields.
#[derive(Debug, Clone)]
struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    fn parse(text: &str) -> Template {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let Some(close) = rest
                .get(open..)
                .and_then(|r| r.find("}}"))
                .map(|c| c + open)
            else {
                break;
            };
            let name = rest.get(open + 2..close).unwrap_or_default();
            match SLOTS.iter().find(|(n, _)| *n == name) {
                Some((_, slot)) => {
                    pieces.push(Piece::Literal(
                        rest.get(..open).unwrap_or_default().as_bytes().to_vec(),
                    ));
                    pieces.push(Piece::Slot(*slot));
                }
                None => pieces.push(Piece::Literal(
                    rest.get(..close + 2)
                        .unwrap_or_default()
                        .as_bytes()
                        .to_vec(),
                )),
            }
            rest = rest.get(close + 2..).unwrap_or_default();
        }
        pieces.push(Piece::Literal(rest.as_bytes().to_vec()));
        pieces.retain(|p| !matches!(p, Piece::Literal(l) if l.is_empty()));
        Template { pieces }
    }

    fn render(&self, values: &Values, out: &mut Vec<u8>) {
        for piece in &self.pieces {
            match piece {
                Piece::Literal(bytes) => out.extend_from_slice(bytes),
                Piece::Slot(slot) => out.extend_from_slice(values.get(*slot)),
            }
        }
    }
}

/// The current value of every slot, already encoded.
#[derive(Debug)]
struct Values {
    salt: u64,
    values: Vec<Vec<u8>>,
}

impl Values {
    fn new(salt: u64) -> Values {
        Values {
            salt,
            values: vec![Vec::new(); SLOTS.len()],
        }
    }

    fn get(&self, slot: Slot) -> &[u8] {
        self.values
            .get(slot as usize)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    fn set(&mut self, slot: Slot, value: &[u8]) {
        if let Some(v) = self.values.get_mut(slot as usize) {
            v.clear();
            v.extend_from_slice(value);
        }
    }

    fn set_number(&mut self, slot: Slot, n: u64) {
        if let Some(v) = self.values.get_mut(slot as usize) {
            v.clear();
            put_decimal(v, n);
        }
    }

    /// Sets the per-call fields for call number `call` starting at `now_us`.
    fn start_call(&mut self, call: u64, now_us: u64) {
        let h = splitmix(self.salt ^ call);
        let g = splitmix(h);
        let uuid = |x: u64, y: u64| {
            format!(
                "{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}",
                x >> 32,
                (x >> 16) & 0xffff,
                x & 0xfff,
                8 + (y >> 62),
                (y >> 48) & 0xfff,
                y & 0xffff_ffff_ffff
            )
        };
        self.set(Slot::Uuid, uuid(h, g).as_bytes());
        self.set(Slot::OtherUuid, uuid(g, h).as_bytes());
        self.set_number(Slot::Caller, 1000 + h % 900);
        self.set_number(Slot::Destination, 2000 + g % 7000);
        self.set(
            Slot::CallId,
            format!("{:016x}%40198.51.100.23", h ^ g).as_bytes(),
        );
        self.set_number(Slot::SessionNumber, call + 1);
        self.set_number(Slot::CallerPort, 5060 + h % 40);
        let answer_after = 1_000_000 + h % 5_000_000;
        let talk = 5_000_000 + g % 120_000_000;
        self.set_number(Slot::CreatedUs, now_us);
        self.set_number(Slot::AnsweredUs, now_us + answer_after);
        self.set_number(Slot::BridgedUs, now_us + answer_after + 150_000);
        self.set_number(Slot::HangupUs, now_us + answer_after + talk);
        self.set_number(Slot::Billsec, talk / 1_000_000);
        self.set_number(Slot::Duration, (answer_after + talk) / 1_000_000);
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One template per generated event kind.
#[derive(Debug)]
struct Templates {
    create: Template,
    answer: Template,
    dtmf: Template,
    bridge: Template,
    hangup: Template,
    register: Template,
    heartbeat: Template,
}

/// The 13 standard headers every event starts with (§1.7), with slots for the per-event
/// fields.
fn standard_head(out: &mut Vec<u8>, core: &CoreIdentity, name: &str, at: (&str, &str, u32)) {
    let mut host = Vec::new();
    url_encode(&mut host, core.hostname.as_bytes());
    let host = String::from_utf8_lossy(&host);
    out.extend_from_slice(
        format!(
            "Event-Name: {name}\nCore-UUID: {}\nFreeSWITCH-Hostname: {host}\n\
             FreeSWITCH-Switchname: {host}\nFreeSWITCH-IPv4: {}\nFreeSWITCH-IPv6: %3A%3A1\n\
             Event-Date-Local: {{{{date_local}}}}\nEvent-Date-GMT: {{{{date_gmt}}}}\n\
             Event-Date-Timestamp: {{{{timestamp}}}}\nEvent-Calling-File: {}\n\
             Event-Calling-Function: {}\nEvent-Calling-Line-Number: {}\n\
             Event-Sequence: {{{{sequence}}}}\n",
            core.core_uuid, core.ipv4, at.0, at.1, at.2
        )
        .as_bytes(),
    );
}

/// Channel data, caller profile and (optionally) channel variables of the A leg.
fn channel_block(state: (&str, &str, u8), answer_state: &str, codecs: bool, extra: &str) -> String {
    let codec_lines = if codecs {
        "Channel-Read-Codec-Name: PCMU\nChannel-Read-Codec-Rate: 8000\n\
         Channel-Read-Codec-Bit-Rate: 64000\nChannel-Write-Codec-Name: PCMU\n\
         Channel-Write-Codec-Rate: 8000\nChannel-Write-Codec-Bit-Rate: 64000\n"
    } else {
        ""
    };
    format!(
        "Channel-State: {}\nChannel-Call-State: {}\nChannel-State-Number: {}\n\
         Channel-Name: sofia/internal/{{{{caller}}}}%40192.0.2.10\nUnique-ID: {{{{uuid}}}}\n\
         Call-Direction: inbound\nPresence-Call-Direction: inbound\nChannel-HIT-Dialplan: true\n\
         Channel-Presence-ID: {{{{caller}}}}%40192.0.2.10\nChannel-Call-UUID: {{{{uuid}}}}\n\
         Answer-State: {answer_state}\n{codec_lines}\
         Caller-Direction: inbound\nCaller-Logical-Direction: inbound\n\
         Caller-Username: {{{{caller}}}}\nCaller-Dialplan: XML\n\
         Caller-Caller-ID-Name: Extension%20{{{{caller}}}}\nCaller-Caller-ID-Number: {{{{caller}}}}\n\
         Caller-Orig-Caller-ID-Name: Extension%20{{{{caller}}}}\n\
         Caller-Orig-Caller-ID-Number: {{{{caller}}}}\nCaller-Network-Addr: 198.51.100.23\n\
         Caller-ANI: {{{{caller}}}}\nCaller-Destination-Number: {{{{destination}}}}\n\
         Caller-Unique-ID: {{{{uuid}}}}\nCaller-Source: mod_sofia\nCaller-Context: default\n\
         Caller-Channel-Name: sofia/internal/{{{{caller}}}}%40192.0.2.10\n\
         Caller-Profile-Index: 1\nCaller-Profile-Created-Time: {{{{created_us}}}}\n\
         Caller-Channel-Created-Time: {{{{created_us}}}}\n{extra}\
         Caller-Screen-Bit: true\nCaller-Privacy-Hide-Name: false\nCaller-Privacy-Hide-Number: false\n",
        state.0, state.1, state.2
    )
}

const VARIABLES: &str = "variable_direction: inbound\nvariable_uuid: {{uuid}}\n\
    variable_session_id: {{session_number}}\nvariable_sip_from_user: {{caller}}\n\
    variable_sip_from_uri: {{caller}}%40192.0.2.10\nvariable_sip_from_host: 192.0.2.10\n\
    variable_channel_name: sofia/internal/{{caller}}%40192.0.2.10\n\
    variable_sip_call_id: {{call_id}}\nvariable_sip_local_network_addr: 192.0.2.10\n\
    variable_sip_network_ip: 198.51.100.23\nvariable_sip_network_port: {{caller_port}}\n\
    variable_sip_received_ip: 198.51.100.23\nvariable_sip_received_port: {{caller_port}}\n\
    variable_sip_via_protocol: udp\nvariable_sip_from_display: Extension%20{{caller}}\n\
    variable_sip_full_from: %22Extension%20{{caller}}%22%20%3Csip%3A{{caller}}%40192.0.2.10%3E\n\
    variable_sip_to_user: {{destination}}\nvariable_sip_req_uri: {{destination}}%40192.0.2.10\n\
    variable_caller_id_name: Extension%20{{caller}}\nvariable_caller_id_number: {{caller}}\n\
    variable_destination_number: {{destination}}\n";

impl Templates {
    fn new(core: &CoreIdentity) -> Templates {
        let build = |name: &str, at: (&str, &str, u32), rest: &str| {
            let mut text = Vec::new();
            standard_head(&mut text, core, name, at);
            text.extend_from_slice(rest.as_bytes());
            text.push(b'\n');
            Template::parse(&String::from_utf8_lossy(&text))
        };
        let times = |answered: &str, bridged: &str, hangup: &str| {
            format!(
                "Caller-Channel-Answered-Time: {answered}\nCaller-Channel-Progress-Time: 0\n\
                 Caller-Channel-Progress-Media-Time: 0\nCaller-Channel-Hangup-Time: {hangup}\n\
                 Caller-Channel-Transfer-Time: 0\nCaller-Channel-Resurrect-Time: 0\n\
                 Caller-Channel-Bridged-Time: {bridged}\nCaller-Channel-Last-Hold: 0\n\
                 Caller-Channel-Hold-Accum: 0\n"
            )
        };
        let create = format!(
            "{}{VARIABLES}",
            channel_block(
                ("CS_INIT", "DOWN", 2),
                "ringing",
                false,
                &times("0", "0", "0")
            )
        );
        let answer = format!(
            "{}{VARIABLES}variable_current_application: answer\nvariable_endpoint_disposition: ANSWER\n",
            channel_block(
                ("CS_EXECUTE", "ACTIVE", 4),
                "answered",
                true,
                &times("{{answered_us}}", "0", "0")
            )
        );
        let dtmf = format!(
            "{}DTMF-Digit: {{{{digit}}}}\nDTMF-Duration: 2000\nDTMF-Source: RTP\n",
            channel_block(
                ("CS_EXECUTE", "ACTIVE", 4),
                "answered",
                true,
                &times("{{answered_us}}", "0", "0")
            )
        );
        let bridge = format!(
            "{}Bridge-A-Unique-ID: {{{{uuid}}}}\nBridge-B-Unique-ID: {{{{other_uuid}}}}\n\
             Other-Type: originatee\nOther-Leg-Direction: outbound\n\
             Other-Leg-Caller-ID-Name: Extension%20{{{{caller}}}}\n\
             Other-Leg-Caller-ID-Number: {{{{caller}}}}\n\
             Other-Leg-Destination-Number: {{{{destination}}}}\n\
             Other-Leg-Unique-ID: {{{{other_uuid}}}}\n\
             Other-Leg-Channel-Name: sofia/internal/{{{{destination}}}}%40198.51.100.40\n\
             {VARIABLES}variable_current_application: bridge\n\
             variable_current_application_data: user/{{{{destination}}}}\n\
             variable_bridge_uuid: {{{{other_uuid}}}}\nvariable_signal_bond: {{{{other_uuid}}}}\n",
            channel_block(
                ("CS_EXECUTE", "ACTIVE", 4),
                "answered",
                true,
                &times("{{answered_us}}", "{{bridged_us}}", "0")
            )
        );
        let hangup = format!(
            "{}{VARIABLES}variable_endpoint_disposition: ANSWER\n\
             variable_current_application: bridge\nvariable_bridge_uuid: {{{{other_uuid}}}}\n\
             variable_sip_hangup_phrase: OK\nvariable_last_bridge_hangup_cause: NORMAL_CLEARING\n\
             variable_sip_term_status: 200\nvariable_sip_term_cause: 16\n\
             variable_hangup_cause: NORMAL_CLEARING\nvariable_hangup_cause_q850: 16\n\
             variable_digits_dialed: none\nvariable_start_uepoch: {{{{created_us}}}}\n\
             variable_answer_uepoch: {{{{answered_us}}}}\nvariable_end_uepoch: {{{{hangup_us}}}}\n\
             variable_duration: {{{{duration}}}}\nvariable_billsec: {{{{billsec}}}}\n\
             variable_sip_user_agent: Linphone/5.2.0%20(belle-sip/5.2.0)\n\
             variable_rtp_audio_in_media_packet_count: 2257\n\
             variable_rtp_audio_out_media_packet_count: 2251\n",
            channel_block(
                ("CS_REPORTING", "HANGUP", 11),
                "hangup",
                true,
                &format!(
                    "Hangup-Cause: NORMAL_CLEARING\n{}",
                    times("{{answered_us}}", "{{bridged_us}}", "{{hangup_us}}")
                )
            )
        );
        let register = "Event-Subclass: sofia%3A%3Aregister\nprofile-name: internal\n\
             from-user: {{caller}}\nfrom-host: 192.0.2.10\npresence-hosts: 192.0.2.10\n\
             contact: %22Desk%20{{caller}}%22%20%3Csip%3A{{caller}}%40198.51.100.40%3A{{caller_port}}%3Btransport%3Dudp%3E\n\
             call-id: {{call_id}}\nrpid: unknown\nstatus: Registered(UDP)\nexpires: 120\n\
             to-user: {{caller}}\nto-host: 192.0.2.10\nnetwork-ip: 198.51.100.40\n\
             network-port: {{caller_port}}\nusername: {{caller}}\nrealm: 192.0.2.10\n\
             user-agent: Zoiper%20rv2.10.20.3\n";
        let heartbeat = "Event-Info: System%20Ready\nUp-Time: {{duration}}%20seconds\n\
             FreeSWITCH-Version: 1.10.12-release%2Besl-replay~simulator~64bit\n\
             Uptime-msec: {{billsec}}\nSession-Count: {{session_count}}\nMax-Sessions: 1000\n\
             Session-Per-Sec: 30\nSession-Per-Sec-Last: 0\nSession-Per-Sec-Max: {{peak_per_second}}\n\
             Session-Per-Sec-FiveMin: 0\nSession-Since-Startup: {{session_number}}\n\
             Session-Peak-Max: {{session_peak}}\nSession-Peak-FiveMin: {{session_peak}}\nIdle-CPU: 99.000000\n";
        Templates {
            create: build(
                "CHANNEL_CREATE",
                (
                    "switch_core_state_machine.c",
                    "switch_core_session_run",
                    626,
                ),
                &create,
            ),
            answer: build(
                "CHANNEL_ANSWER",
                (
                    "switch_channel.c",
                    "switch_channel_perform_mark_answered",
                    3848,
                ),
                &answer,
            ),
            dtmf: build(
                "DTMF",
                ("switch_channel.c", "switch_channel_queue_dtmf", 678),
                &dtmf,
            ),
            bridge: build(
                "CHANNEL_BRIDGE",
                (
                    "switch_ivr_bridge.c",
                    "audio_bridge_on_exchange_media",
                    2115,
                ),
                &bridge,
            ),
            hangup: build(
                "CHANNEL_HANGUP_COMPLETE",
                (
                    "switch_core_state_machine.c",
                    "switch_core_session_reporting_state",
                    943,
                ),
                &hangup,
            ),
            register: build(
                "CUSTOM",
                ("sofia_reg.c", "sofia_reg_handle_register_token", 2078),
                register,
            ),
            heartbeat: build(
                "HEARTBEAT",
                ("switch_core.c", "send_heartbeat", 117),
                heartbeat,
            ),
        }
    }
}

/// The steps of one simulated call (the fourth call also registers a phone).
const CALL_STEPS: [&str; 7] = [
    "CHANNEL_CREATE",
    "CHANNEL_ANSWER",
    "DTMF",
    "DTMF",
    "CHANNEL_BRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
    "CUSTOM",
];

/// One listener's simulated stream.
#[derive(Debug)]
struct SimFeed {
    shared: Arc<Shared>,
    values: Values,
    /// The UUID of the call in progress (an open channel until its hangup).
    open_call: Option<String>,
    call: u64,
    step: usize,
    emitted: u64,
    started: Instant,
    next_heartbeat: Duration,
    dates: DateCache,
}

impl SimFeed {
    fn render(&mut self, name: &'static str, heartbeat: bool) -> ServedEvent {
        let now_us = now_micros();
        let sequence = self.shared.sequence.fetch_add(1, Ordering::Relaxed);
        let (local, gmt) = self.dates.get(now_us);
        let (local, gmt) = (local.to_vec(), gmt.to_vec());
        self.values.set(Slot::DateLocal, &local);
        self.values.set(Slot::DateGmt, &gmt);
        self.values.set_number(Slot::Timestamp, now_us);
        self.values.set_number(Slot::Sequence, sequence);
        let templates = &self.shared.templates;
        let template = match (heartbeat, name) {
            (true, _) => &templates.heartbeat,
            (_, "CHANNEL_CREATE") => &templates.create,
            (_, "CHANNEL_ANSWER") => &templates.answer,
            (_, "DTMF") => &templates.dtmf,
            (_, "CHANNEL_BRIDGE") => &templates.bridge,
            (_, "CHANNEL_HANGUP_COMPLETE") => &templates.hangup,
            _ => &templates.register,
        };
        let mut body = Vec::with_capacity(4096);
        template.render(&self.values, &mut body);
        let subclass = (name == "CUSTOM").then(|| "sofia::register".to_owned());
        ServedEvent::from_parts(
            name,
            subclass,
            EventFormat::Plain,
            Bytes::from(body),
            i64::try_from(now_us).ok(),
        )
    }
}

impl SimFeed {
    fn open_channel(&mut self, now_us: u64) {
        let text = |slot| String::from_utf8_lossy(self.values.get(slot)).into_owned();
        let uuid = text(Slot::Uuid);
        let caller = text(Slot::Caller);
        let row = ChannelRow {
            uuid: uuid.clone(),
            direction: "inbound".into(),
            created_epoch: now_us / 1_000_000,
            name: format!("sofia/internal/{caller}@{}", self.shared.core.ipv4),
            state: "CS_EXECUTE".into(),
            cid_name: format!("Extension {caller}"),
            cid_num: caller,
            dest: text(Slot::Destination),
            call_uuid: uuid.clone(),
            callstate: "ACTIVE".into(),
        };
        let mut sessions = self.shared.sessions.lock();
        sessions.channels.insert(uuid.clone(), row);
        sessions.peak = sessions.peak.max(sessions.channels.len() as u64);
        let second = now_us / 1_000_000;
        sessions.second = if sessions.second.0 == second {
            (second, sessions.second.1 + 1)
        } else {
            (second, 1)
        };
        sessions.peak_per_second = sessions.peak_per_second.max(sessions.second.1);
        self.open_call = Some(uuid);
    }

    fn close_channel(&mut self) {
        if let Some(uuid) = self.open_call.take() {
            self.shared.sessions.lock().channels.remove(&uuid);
        }
    }
}

impl Drop for SimFeed {
    fn drop(&mut self) {
        // A listener that leaves mid-call ends its call.
        self.close_channel();
    }
}

impl Feed for SimFeed {
    fn next_item(&mut self) -> Result<FeedItem, Error> {
        let config = &self.shared.config;
        if config.max_events.is_some_and(|max| self.emitted >= max) {
            return Ok(FeedItem::End);
        }
        let due = config.rate.map(|rate| {
            // A tiny rate saturates instead of overflowing.
            Duration::try_from_secs_f64(self.emitted as f64 / rate).unwrap_or(Duration::MAX)
        });
        let elapsed = due.unwrap_or_else(|| self.started.elapsed());
        if config.duration.is_some_and(|limit| elapsed >= limit) {
            return Ok(FeedItem::End);
        }
        self.emitted += 1;
        if elapsed >= self.next_heartbeat {
            let heartbeat_due = config.rate.map(|_| self.next_heartbeat);
            self.next_heartbeat += config.heartbeat_interval;
            let uptime = self.shared.started.elapsed();
            self.values.set_number(Slot::Duration, uptime.as_secs());
            self.values.set_number(
                Slot::Billsec,
                u64::try_from(uptime.as_millis()).unwrap_or(0),
            );
            // The same figures `status` reports, so the two never disagree.
            let (open, peak, per_second) = {
                let sessions = self.shared.sessions.lock();
                (
                    sessions.channels.len() as u64,
                    sessions.peak,
                    sessions.peak_per_second,
                )
            };
            let call_session = self.values.get(Slot::SessionNumber).to_vec();
            self.values.set_number(
                Slot::SessionNumber,
                self.shared.calls.load(Ordering::Relaxed),
            );
            self.values.set_number(Slot::SessionCount, open);
            self.values.set_number(Slot::SessionPeak, peak);
            self.values.set_number(Slot::PeakPerSecond, per_second);
            let event = self.render("HEARTBEAT", true);
            // The call in progress keeps its own session number.
            self.values.set(Slot::SessionNumber, &call_session);
            return Ok(FeedItem::Event {
                event,
                due: heartbeat_due,
            });
        }
        if self.step == 0 {
            self.shared.calls.fetch_add(1, Ordering::Relaxed);
            let now_us = now_micros();
            self.values.start_call(self.call, now_us);
            self.open_channel(now_us);
        }
        let name = CALL_STEPS.get(self.step).copied().unwrap_or("CUSTOM");
        if name == "CHANNEL_HANGUP_COMPLETE" {
            self.close_channel();
        }
        if name == "DTMF" {
            let digits = b"0123456789*#";
            let pick = (self.call as usize + self.step) % digits.len();
            let mut digit = Vec::new();
            url_encode(&mut digit, digits.get(pick..=pick).unwrap_or(b"1"));
            self.values.set(Slot::Digit, &digit);
        }
        let event = self.render(name, false);
        self.step += 1;
        let steps = if self.call % 4 == 3 {
            CALL_STEPS.len()
        } else {
            CALL_STEPS.len() - 1
        };
        if self.step >= steps {
            self.step = 0;
            self.call += 1;
        }
        Ok(FeedItem::Event { event, due })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esl::event::PlainEvent;

    #[test]
    fn generated_events_parse_and_count_up() {
        let simulator = Simulator::new(SimulatorConfig {
            rate: None,
            max_events: Some(30),
            ..SimulatorConfig::default()
        })
        .unwrap();
        let mut feed = simulator.feed().unwrap();
        let mut last = 0;
        let mut names = Vec::new();
        while let FeedItem::Event { event, .. } = feed.next_item().unwrap() {
            let parsed = PlainEvent::parse(event.body()).unwrap();
            assert_eq!(parsed.event_name().unwrap(), event.name());
            assert_eq!(
                parsed.header_str("Core-UUID").unwrap(),
                simulator.core_uuid()
            );
            let sequence: u64 = parsed
                .header_str("Event-Sequence")
                .unwrap()
                .parse()
                .unwrap();
            assert!(sequence > last, "sequence increases");
            last = sequence;
            assert!(
                !String::from_utf8_lossy(event.body()).contains("{{"),
                "no slot left"
            );
            names.push(event.name().to_owned());
        }
        assert_eq!(names.len(), 30);
        assert_eq!(names.first().map(String::as_str), Some("CHANNEL_CREATE"));
        assert!(names.iter().any(|n| n == "CUSTOM"));
        assert!(names.iter().any(|n| n == "CHANNEL_HANGUP_COMPLETE"));
    }

    #[test]
    fn heartbeats_report_the_sessions_status_reports() {
        let simulator = Simulator::new(SimulatorConfig {
            rate: Some(1000.0),
            max_events: Some(60),
            heartbeat_interval: Duration::from_millis(20),
            ..SimulatorConfig::default()
        })
        .unwrap();
        let mut feed = simulator.feed().unwrap();
        let mut heartbeats = 0;
        while let FeedItem::Event { event, .. } = feed.next_item().unwrap() {
            if event.name() != "HEARTBEAT" {
                continue;
            }
            heartbeats += 1;
            let parsed = PlainEvent::parse(event.body()).unwrap();
            let number = |name| -> u64 { parsed.header_str(name).unwrap().parse().unwrap() };
            let (count, peak, since) = (
                number("Session-Count"),
                number("Session-Peak-Max"),
                number("Session-Since-Startup"),
            );
            assert!(
                count <= 1 && count <= peak && peak <= since,
                "{count} {peak} {since}"
            );
            assert!(since >= 1);
        }
        assert!(heartbeats >= 2);
    }

    #[test]
    fn background_job_carries_job_fields_and_body() {
        let core = CoreIdentity::default();
        let event = background_job(&core, 7, "j-1", "originate user/1000 &park()", b"+OK x\n");
        let parsed = PlainEvent::parse(event.body()).unwrap();
        assert_eq!(parsed.header_str("Job-UUID").unwrap(), "j-1");
        assert_eq!(parsed.header_str("Job-Command").unwrap(), "originate");
        assert_eq!(
            parsed.header_str("Job-Command-Arg").unwrap(),
            "user/1000 &park()"
        );
        assert_eq!(parsed.body(), b"+OK x\n");
        assert_eq!(parsed.header_str("Event-Sequence").unwrap(), "7");
    }
}
