//! How is one inbound ESL connection served?
//!
//! [`serve_connection`] speaks FreeSWITCH's side of the inbound protocol (esl-protocol.md
//! §1.1-1.6, §1.11): greeting, authentication (only `auth`, `userauth` and `exit` before it,
//! each a short command without a body; on a wrong password, after a short delay, a
//! `-ERR invalid` reply then the disconnect notice; closed 25 s after the accept if not
//! authenticated by then), then commands answered in order with FreeSWITCH's reply texts,
//! interleaved with the listener's events. Events come from the listener's own [`Feed`],
//! started at its first subscription and paced by the feed's due times; at the end of the
//! feed the server sends the disconnect notice and closes (as it does when the client hangs
//! up, and after a malformed command). Writes go through one buffer flushed between
//! batches, so a slow client slows only its own connection; the feed hears which events are
//! delivered only once the socket has taken their bytes whole.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::time::Instant;

use super::command::{ClientCommand, Command, CommandDecoder};
use super::error::Error;
use super::event::ServedEvent;
use super::subscription::Subscription;
use super::traffic::{ApiAnswer, Feed, FeedItem, Traffic};
use super::wire;
use super::{ServerConfig, ServerStats, Stop};

/// Events rendered per batch before the socket is written and commands are read again.
const BATCH_EVENTS: usize = 512;
/// Bytes buffered per batch before the socket is written.
const BATCH_BYTES: usize = 256 * 1024;

/// How long closing may take: writing the last reply and the disconnect notice (a client
/// that does not read them is not waited for longer), then, after a protocol error,
/// reading (and dropping) what the client still sends, so the close does not reset the
/// connection before the client has read the notice.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Input capacity kept between commands; a larger buffer, grown for one large command, is
/// given back once that command has been taken out of it.
const INPUT_KEPT: usize = 64 * 1024;

/// What handling a command asks the connection to do next.
enum After {
    Continue,
    /// Send the disconnect notice and close.
    Disconnect,
    /// A wrong password: wait [`ServerConfig::auth_failure_delay`], then reply `-ERR invalid`,
    /// send the disconnect notice and close (a brake on password guessing).
    RejectAuth,
}

struct Connection {
    config: Arc<ServerConfig>,
    traffic: Arc<dyn Traffic>,
    stats: Arc<ServerStats>,
    authenticated: bool,
    subscription: Subscription,
    logging: bool,
    feed: Option<Box<dyn Feed>>,
    feed_started: Instant,
    /// The next feed event, not yet due.
    pending: Option<(ServedEvent, Option<Instant>)>,
    feed_done: bool,
    asked: HashMap<String, usize>,
    out: BytesMut,
    /// Event frames in `out`, counted as sent once `out` is written.
    events_in_out: u64,
}

/// Serves one accepted connection until the client leaves, the stream ends or the server
/// stops. Errors are the connection's own (I/O, a malformed command, a store read); every
/// one but a failed socket is answered as FreeSWITCH would (a `-ERR` reply where it sends
/// one) and followed by the disconnect notice before the close.
pub(crate) async fn serve_connection<S>(
    stream: S,
    config: Arc<ServerConfig>,
    traffic: Arc<dyn Traffic>,
    stats: Arc<ServerStats>,
    mut stop: watch::Receiver<Stop>,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut conn = Connection {
        config: Arc::clone(&config),
        traffic,
        stats,
        authenticated: false,
        subscription: Subscription::default(),
        logging: false,
        feed: None,
        feed_started: Instant::now(),
        pending: None,
        feed_done: false,
        asked: HashMap::new(),
        out: BytesMut::with_capacity(64 * 1024),
        events_in_out: 0,
    };
    conn.out.extend_from_slice(wire::GREETING);
    match conn.run(&mut reader, &mut writer, &mut stop).await {
        Ok(()) => Ok(()),
        // The socket failed, or the client stopped reading: nothing more can be said on it.
        Err(error @ (Error::Io { .. } | Error::ClientNotReading { .. })) => Err(error),
        Err(error) => {
            if let Some(text) = error_reply(&error) {
                wire::command_reply(&mut conn.out, text);
            }
            wire::disconnect_notice(&mut conn.out, wire::DISCONNECT_BODY);
            let closed = tokio::time::timeout(CLOSE_GRACE, async {
                conn.flush(&mut writer).await?;
                writer.shutdown().await?;
                Ok::<(), Error>(())
            })
            .await;
            if matches!(closed, Ok(Ok(()))) {
                drain(&mut reader).await;
            }
            Err(error)
        }
    }
}

/// The `-ERR` reply to a command the connection ends on, where FreeSWITCH replies: none to
/// a `Content-Length` out of range (its `read_packet` fails and it only says goodbye).
fn error_reply(error: &Error) -> Option<&'static str> {
    match error {
        // FreeSWITCH's answer to any command but auth, userauth and exit before auth.
        Error::CommandBodyUnauthenticated { .. } => Some("-ERR command not found"),
        // Our own cap (FreeSWITCH reads up to 10 MiB, then answers the cut command).
        Error::CommandTooLarge { .. } => Some("-ERR command too long"),
        _ => None,
    }
}

/// Reads and drops what the client still sends, until it closes or [`CLOSE_GRACE`] passes,
/// so the close does not reset the connection under unread input.
async fn drain(reader: &mut (impl AsyncRead + Unpin)) {
    let mut sink = vec![0u8; 64 * 1024];
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

impl Connection {
    /// The connection's loop; returns once it has said goodbye (or the server aborted), or
    /// with the error that ends it, before any notice.
    async fn run(
        &mut self,
        reader: &mut (impl AsyncRead + Unpin),
        writer: &mut (impl AsyncWrite + Unpin),
        stop: &mut watch::Receiver<Stop>,
    ) -> Result<(), Error> {
        let config = Arc::clone(&self.config);
        // A timeout too long for the clock means no deadline, never an overflow.
        let auth_deadline = Instant::now().checked_add(config.auth_timeout);
        let mut decoder = CommandDecoder::unauthenticated();
        let mut input = BytesMut::with_capacity(4096);
        loop {
            // Checked before rendering more events, so a stop is not delayed by a batch.
            let state = *stop.borrow();
            match state {
                Stop::Running => {}
                Stop::Graceful => {
                    wire::disconnect_notice(&mut self.out, wire::SHUTDOWN_BODY);
                    let _ = self.flush_closing(writer).await;
                    let _ = writer.shutdown().await;
                    return Ok(());
                }
                Stop::Abort => return Ok(()),
            }
            // The commands already read, answered until their replies fill a batch: a
            // client that pipelines commands and does not read makes the server hold at
            // most a batch of replies, and no more input.
            let mut backlog = false;
            while let Some(command) = decoder.decode(&mut input)? {
                let after = self.handle(command)?;
                if self.authenticated {
                    decoder.authenticated();
                }
                match after {
                    After::Continue => {}
                    After::Disconnect => {
                        wire::disconnect_notice(&mut self.out, wire::DISCONNECT_BODY);
                        self.flush_closing(writer).await?;
                        let _ = writer.shutdown().await;
                        return Ok(());
                    }
                    After::RejectAuth => {
                        self.flush_by(writer, auth_deadline).await?;
                        // Input sent meanwhile is never read: the connection is closing.
                        tokio::select! {
                            () = tokio::time::sleep(config.auth_failure_delay) => {}
                            _ = stop.changed() => {}
                        }
                        wire::command_reply(&mut self.out, "-ERR invalid");
                        wire::disconnect_notice(&mut self.out, wire::DISCONNECT_BODY);
                        let _ = self.flush_closing(writer).await;
                        let _ = writer.shutdown().await;
                        return Ok(());
                    }
                }
                if self.out.len() >= BATCH_BYTES {
                    backlog = true;
                    break;
                }
            }
            if input.is_empty() && input.capacity() > INPUT_KEPT {
                input = BytesMut::with_capacity(4096);
            }
            let (wait_until, more_ready) = self.pump_events()?;
            if self.feed_done && self.pending.is_none() {
                wire::disconnect_notice(&mut self.out, wire::DISCONNECT_BODY);
                self.flush(writer).await?;
                let _ = writer.shutdown().await;
                return Ok(());
            }
            // Never interrupted once authenticated: a partly written frame cannot be taken
            // back, and a slow client slows only itself. An abort cancels the whole task
            // instead. Before authentication the writing counts against the auth deadline,
            // so a client that neither authenticates nor reads is closed at it.
            let deadline = if self.authenticated {
                None
            } else {
                auth_deadline
            };
            self.flush_by(writer, deadline).await?;
            if backlog {
                continue;
            }
            tokio::select! {
                biased;
                changed = stop.changed() => if changed.is_err() { return Ok(()) },
                read = reader.read_buf(&mut input) => {
                    if read? == 0 {
                        // FreeSWITCH says goodbye whenever its listener loop ends, EOF
                        // included.
                        wire::disconnect_notice(&mut self.out, wire::DISCONNECT_BODY);
                        let _ = self.flush_closing(writer).await;
                        return Ok(());
                    }
                }
                // Until authenticated, whatever the client sent meanwhile (FreeSWITCH stops
                // timing after a first command; a refused command must not buy a client
                // unlimited time).
                () = sleep_until_opt(auth_deadline), if auth_deadline.is_some() && !self.authenticated => {
                    tracing::info!(timeout = ?config.auth_timeout, "closing a connection that did not authenticate in time");
                    wire::disconnect_notice(&mut self.out, wire::DISCONNECT_BODY);
                    let _ = self.flush_closing(writer).await;
                    let _ = writer.shutdown().await;
                    return Ok(());
                }
                () = sleep_until_opt(wait_until), if wait_until.is_some() => {}
                // Yield so other tasks (and stop requests) run between batches.
                () = tokio::task::yield_now(), if more_ready => {}
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl Connection {
    /// [`Connection::flush`], given up at `deadline` (if any) with
    /// [`Error::ClientNotReading`].
    async fn flush_by(
        &mut self,
        writer: &mut (impl AsyncWrite + Unpin),
        deadline: Option<Instant>,
    ) -> Result<(), Error> {
        let Some(deadline) = deadline else {
            return self.flush(writer).await;
        };
        let waited = deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout_at(deadline, self.flush(writer))
            .await
            .map_err(|_| Error::ClientNotReading { waited })?
    }

    /// [`Connection::flush`] of the last words before a close, given up after
    /// [`CLOSE_GRACE`].
    async fn flush_closing(&mut self, writer: &mut (impl AsyncWrite + Unpin)) -> Result<(), Error> {
        self.flush_by(writer, Some(Instant::now() + CLOSE_GRACE))
            .await
    }

    /// Writes the output buffer whole; only then are its events counted as sent and the
    /// feed told they are delivered (so a serving checkpoint never covers an event whose
    /// bytes the socket did not take).
    async fn flush(&mut self, writer: &mut (impl AsyncWrite + Unpin)) -> Result<(), Error> {
        if !self.out.is_empty() {
            writer.write_all(&self.out).await?;
            self.stats
                .bytes_written
                .fetch_add(self.out.len() as u64, Ordering::Relaxed);
            self.out.clear();
        }
        self.stats
            .events_sent
            .fetch_add(std::mem::take(&mut self.events_in_out), Ordering::Relaxed);
        if let Some(feed) = self.feed.as_mut() {
            feed.delivered();
        }
        Ok(())
    }

    /// Renders the events that are due into the output buffer. Returns when the next event
    /// is due (if it is in the future) and whether more are ready now (batch full).
    fn pump_events(&mut self) -> Result<(Option<Instant>, bool), Error> {
        if !self.authenticated || self.feed_done {
            return Ok((None, false));
        }
        if self.feed.is_none() {
            if !self.subscription.is_listening() {
                return Ok((None, false));
            }
            self.feed = Some(self.traffic.feed()?);
            self.feed_started = Instant::now();
        }
        let Some(feed) = self.feed.as_mut() else {
            return Ok((None, false));
        };
        let now = Instant::now();
        let mut count = 0;
        loop {
            if self.pending.is_none() {
                match feed.next_item()? {
                    FeedItem::Event { event, due } => {
                        // A due time beyond the clock (a tiny speed) is a century away.
                        let due = due.map(|d| {
                            self.feed_started.checked_add(d).unwrap_or_else(|| {
                                now + std::time::Duration::from_secs(100 * 365 * 86_400)
                            })
                        });
                        self.pending = Some((event, due));
                    }
                    FeedItem::End => {
                        self.feed_done = true;
                        return Ok((None, false));
                    }
                }
            }
            let Some((event, due)) = &self.pending else {
                return Ok((None, false));
            };
            if let Some(due) = *due
                && due > now
            {
                return Ok((Some(due), false));
            }
            if self.subscription.wants(event) {
                event.render(self.subscription.format(), &mut self.out);
                self.events_in_out += 1;
            }
            self.pending = None;
            feed.handled();
            count += 1;
            if count >= BATCH_EVENTS || self.out.len() >= BATCH_BYTES {
                return Ok((None, true));
            }
        }
    }

    fn reply(&mut self, reply: Result<String, String>) {
        let text = match reply {
            Ok(text) | Err(text) => text,
        };
        wire::command_reply(&mut self.out, &text);
    }

    fn occurrence(&mut self, key: String) -> usize {
        let count = self.asked.entry(key).or_insert(0);
        let occurrence = *count;
        *count += 1;
        occurrence
    }

    fn handle(&mut self, command: ClientCommand) -> Result<After, Error> {
        let parsed = Command::parse(&command.line);
        if !self.authenticated {
            return Ok(self.handle_unauthenticated(parsed));
        }
        match parsed {
            Command::Auth(_) | Command::UserAuth(_) => {
                // FreeSWITCH treats a second auth as an unknown command.
                wire::command_reply(&mut self.out, "-ERR command not found");
            }
            Command::Exit => {
                wire::command_reply(&mut self.out, "+OK bye");
                return Ok(After::Disconnect);
            }
            Command::Api(text) => {
                let occurrence = self.occurrence(format!("api {text}"));
                match self.traffic.api(&text, occurrence) {
                    ApiAnswer::Body(body) => wire::api_response(&mut self.out, &body),
                    ApiAnswer::Frame(frame) => self.out.extend_from_slice(&frame),
                    ApiAnswer::NotFound => {
                        // Through the console (`console_execute: true`, as fs_cli sends)
                        // FreeSWITCH names the whole command line, else the command word.
                        let body = if command.header("console_execute").is_some_and(is_true) {
                            format!("-ERR {text} Command not found!\n").into_bytes()
                        } else {
                            wire::unknown_api_body(&text)
                        };
                        wire::api_response(&mut self.out, &body);
                    }
                }
            }
            Command::BgApi(text) => {
                let job_uuid = command
                    .header("Job-UUID")
                    .filter(|v| !v.trim().is_empty())
                    .map_or_else(|| uuid::Uuid::new_v4().to_string(), job_uuid_of);
                wire::bgapi_ack(&mut self.out, &job_uuid);
                let occurrence = self.occurrence(format!("bgapi {text}"));
                let event = self.traffic.bgapi(&text, &job_uuid, occurrence);
                if self.subscription.wants(&event) {
                    event.render(self.subscription.format(), &mut self.out);
                    self.events_in_out += 1;
                }
            }
            Command::Event(words) => {
                let reply = self.subscription.event(&words);
                self.reply(reply);
            }
            Command::NixEvent(words) => {
                let reply = self.subscription.nixevent(&words);
                self.reply(reply);
            }
            Command::NoEvents => {
                let reply = self.subscription.noevents();
                self.reply(reply);
            }
            Command::MyEvents(words) if words.is_empty() => {
                // Only `myevents <uuid>` is an inbound command (`"myevents "` in FreeSWITCH).
                wire::command_reply(&mut self.out, "-ERR command not found");
            }
            Command::MyEvents(words) => {
                // With a format word, FreeSWITCH refuses a UUID that names no session; what
                // is served can tell only when the traffic knows its sessions.
                let traffic = &self.traffic;
                let reply = self
                    .subscription
                    .myevents(&words, |uuid| traffic.session_exists(uuid) == Some(false));
                self.reply(reply);
            }
            Command::Filter(_) => {
                let rest = command
                    .line
                    .split_once([' ', '\t'])
                    .map(|(_, rest)| rest)
                    .unwrap_or_default();
                let reply = self.subscription.filter(rest);
                self.reply(reply);
            }
            Command::DivertEvents(None) => {
                wire::command_reply(&mut self.out, "-ERR missing value.");
            }
            Command::DivertEvents(Some(_)) => {
                wire::command_reply(&mut self.out, "-ERR not controlling a session.");
            }
            Command::SendMsg(uuid) => {
                let uuid = uuid.unwrap_or_default();
                wire::command_reply(&mut self.out, &format!("-ERR invalid session id [{uuid}]"));
            }
            Command::SendEvent(_) => {
                let id = uuid::Uuid::new_v4();
                wire::command_reply(&mut self.out, &format!("+OK {id}"));
            }
            Command::Linger(_) | Command::NoLinger => {
                // Lingering keeps a call's socket open after hangup; inbound has no call.
                wire::command_reply(&mut self.out, "-ERR not controlling a session");
            }
            Command::Log(level) => {
                // FreeSWITCH echoes the level word as given (none: empty) and defaults to 7.
                let level = level
                    .as_deref()
                    .and_then(|l| l.split_whitespace().next())
                    .unwrap_or_default()
                    .to_owned();
                let number = if level.is_empty() {
                    Some(7)
                } else {
                    log_level(&level)
                };
                match number {
                    Some(number) => {
                        self.logging = true;
                        let text = format!("+OK log level {level} [{number}]");
                        wire::command_reply(&mut self.out, &text);
                    }
                    None => wire::command_reply(&mut self.out, "-ERR invalid log level"),
                }
            }
            Command::NoLog => {
                let text = if std::mem::take(&mut self.logging) {
                    "+OK no longer logging"
                } else {
                    "-ERR not loging"
                };
                wire::command_reply(&mut self.out, text);
            }
            Command::SessionOnly(_) | Command::Unknown(_) => {
                wire::command_reply(&mut self.out, "-ERR command not found");
            }
        }
        Ok(After::Continue)
    }

    fn handle_unauthenticated(&mut self, command: Command) -> After {
        match command {
            Command::Auth(password) => {
                if password == self.config.password {
                    self.authenticated = true;
                    wire::command_reply(&mut self.out, "+OK accepted");
                    After::Continue
                } else {
                    self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                    After::RejectAuth
                }
            }
            Command::UserAuth(credentials) => {
                let password = credentials.split_once(':').map(|(_, p)| p);
                if password == Some(self.config.password.as_str()) {
                    self.authenticated = true;
                    self.out.extend_from_slice(
                        b"Content-Type: command/reply\nReply-Text: +OK accepted\nAllowed-Events: all\nAllowed-API: all\nAllowed-LOG: true\n\n",
                    );
                    After::Continue
                } else {
                    self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                    After::RejectAuth
                }
            }
            Command::Exit => {
                wire::command_reply(&mut self.out, "+OK bye");
                After::Disconnect
            }
            _ => {
                wire::command_reply(&mut self.out, "-ERR command not found");
                After::Continue
            }
        }
    }
}

/// A client's `Job-UUID` as FreeSWITCH keeps it: copied into a UUID-sized buffer, so cut to
/// 36 bytes (at a character boundary here).
fn job_uuid_of(value: &str) -> String {
    let value = value.trim();
    let mut end = value.len().min(36);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.get(..end).unwrap_or_default().to_owned()
}

/// `switch_true`: the words FreeSWITCH reads as yes.
fn is_true(value: &str) -> bool {
    let value = value.trim();
    [
        "yes", "on", "true", "t", "enabled", "enable", "active", "allow",
    ]
    .iter()
    .any(|w| w.eq_ignore_ascii_case(value))
        || value.parse::<i64>().is_ok_and(|n| n != 0)
}

/// FreeSWITCH's log level names and numbers (`switch_log_str2level`).
fn log_level(name: &str) -> Option<u8> {
    // FreeSWITCH reads a number (an optional sign, then digits and dots) as C's `atoi`
    // would, takes a negative one as 0 and one above 64 as 63; 64 itself is its "invalid".
    let unsigned = name.strip_prefix(['-', '+']).unwrap_or(name);
    if unsigned.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let digits = unsigned.split('.').next().unwrap_or_default();
        let value = if digits.is_empty() {
            0
        } else {
            digits.parse::<u64>().unwrap_or(u64::MAX)
        };
        return match value {
            _ if name.starts_with('-') => Some(0),
            64 => None,
            65.. => Some(63),
            level => u8::try_from(level).ok(),
        };
    }
    let levels = [
        ("console", 0),
        ("alert", 1),
        ("crit", 2),
        ("err", 3),
        ("error", 3),
        ("warning", 4),
        ("notice", 5),
        ("info", 6),
        ("debug", 7),
    ];
    levels
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, level)| *level)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{CheckpointService, CheckpointStore};
    use crate::record::{Envelope, JsonMap};
    use crate::server::{ReplayOptions, StoreReplay};

    /// A store of `count` plain HEARTBEATs of about 1 KiB each, served as fast as possible
    /// with a serving checkpoint in `checkpoints`.
    fn replay(store: &std::path::Path, checkpoints: &std::path::Path, count: u64) -> StoreReplay {
        let envelopes: Vec<Envelope> = (1..=count)
            .map(|n| {
                let body = format!(
                    "Event-Name: HEARTBEAT\nEvent-Sequence: {n}\nPadding: {}\n\n",
                    "x".repeat(1000)
                );
                let mut facts = JsonMap::new();
                facts.insert("content-type".into(), "text/event-plain".into());
                let mut payload = JsonMap::new();
                payload.insert("raw_payload".into(), body.into());
                payload.insert("protocol_facts".into(), facts.into());
                Envelope::new("1", "event.raw", time::OffsetDateTime::UNIX_EPOCH)
                    .with_payload(payload)
            })
            .collect();
        let mut writer = crate::store::open(store, None).unwrap();
        writer.write_batch(envelopes).unwrap();
        writer.sync().unwrap();
        drop(writer);
        let checkpoint =
            CheckpointService::new(CheckpointStore::open(checkpoints).unwrap(), "k").unwrap();
        let options = ReplayOptions {
            checkpoint: Some(checkpoint),
            ..ReplayOptions::default()
        };
        StoreReplay::load(crate::store::open_read_only(store, None).unwrap(), options).unwrap()
    }

    fn consumed(checkpoints: &std::path::Path) -> Option<u64> {
        CheckpointService::new(CheckpointStore::open(checkpoints).unwrap(), "k")
            .unwrap()
            .load()
            .unwrap()
            .map(|c| c.cursor().last_consumed_sequence())
    }

    /// Answers every `api` with a 1 KiB body, counting them.
    #[derive(Debug, Default)]
    struct CountedAnswers(std::sync::atomic::AtomicUsize);

    impl Traffic for CountedAnswers {
        fn feed(&self) -> Result<Box<dyn Feed>, Error> {
            Err(Error::InvalidOption("no events here".into()))
        }

        fn api(&self, _command: &str, _occurrence: usize) -> ApiAnswer {
            self.0.fetch_add(1, Ordering::Relaxed);
            ApiAnswer::Body(vec![b'x'; 1024])
        }

        fn bgapi(&self, _command: &str, _job_uuid: &str, _occurrence: usize) -> ServedEvent {
            unreachable!("no bgapi is sent")
        }
    }

    /// A socket's sending side that takes the first `room` bytes, then none.
    struct Unread {
        room: usize,
    }

    impl AsyncWrite for Unread {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            if self.room == 0 {
                return std::task::Poll::Pending;
            }
            let taken = buf.len().min(self.room);
            self.room -= taken;
            std::task::Poll::Ready(Ok(taken))
        }

        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    /// Hostile review: the replies to commands a client pipelined without reading piled up
    /// in memory (95 MB per connection, after a 1 MiB command had grown the input buffer
    /// so that each read took a megabyte of commands). The server answers until a batch
    /// of replies waits, then answers no more until it is written. With the clock paused,
    /// the long sleep ends only once the server waits on a socket that takes nothing.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_pipelines_commands_and_does_not_read_holds_a_batch_of_replies() {
        let mut sent = b"auth ClueCon\n\napi status\nX-Pad: ".to_vec();
        sent.resize(sent.len() + 1000 * 1024, b'a');
        sent.extend_from_slice(b"\n\n");
        for _ in 0..200_000 {
            sent.extend_from_slice(b"api status\n\n");
        }
        let traffic = Arc::new(CountedAnswers::default());
        let (_stop, stop_rx) = watch::channel(Stop::Running);
        let stream = tokio::io::join(std::io::Cursor::new(sent), Unread { room: 64 * 1024 });
        let task = tokio::spawn(serve_connection(
            stream,
            Arc::new(ServerConfig::default()),
            Arc::clone(&traffic) as Arc<dyn Traffic>,
            Arc::new(ServerStats::default()),
            stop_rx,
        ));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!task.is_finished());
        // What the socket took and one batch, at a little over 1 KiB a reply.
        let answered = traffic.0.load(Ordering::Relaxed);
        assert!(
            answered <= (64 * 1024 + BATCH_BYTES) / 1024 + 1,
            "{answered} replies were made for a client that reads none"
        );
        task.abort();
    }

    /// Issue: the serving checkpoint covered events rendered into the output buffer whose
    /// write then failed, so the next client skipped them. Here the pipe takes 16 KiB, the
    /// client reads a little of the first batch (200 events, about 200 KiB) and goes away:
    /// the write fails, nothing of the batch counts as delivered, and a second client gets
    /// every event.
    #[tokio::test]
    async fn a_batch_whose_write_fails_is_not_covered_by_the_checkpoint() {
        let store = tempfile::tempdir().unwrap();
        let checkpoints = tempfile::tempdir().unwrap();
        let traffic: Arc<dyn Traffic> = Arc::new(replay(store.path(), checkpoints.path(), 200));
        let config = Arc::new(ServerConfig::default());
        let stats = Arc::new(ServerStats::default());
        let (_stop, stop_rx) = watch::channel(Stop::Running);

        let (mut client, server) = tokio::io::duplex(16 * 1024);
        let task = tokio::spawn(serve_connection(
            server,
            Arc::clone(&config),
            Arc::clone(&traffic),
            Arc::clone(&stats),
            stop_rx.clone(),
        ));
        client
            .write_all(b"auth ClueCon\n\nevent plain ALL\n\n")
            .await
            .unwrap();
        let mut some = vec![0u8; 4096];
        client.read_exact(&mut some).await.unwrap();
        drop(client);
        let ended = task.await.unwrap();
        assert!(matches!(ended, Err(Error::Io { .. })), "{ended:?}");
        assert_eq!(stats.events_sent.load(Ordering::Relaxed), 0);
        assert_eq!(
            consumed(checkpoints.path()),
            None,
            "no event was written whole, so none is consumed"
        );

        let (mut client, server) = tokio::io::duplex(1024 * 1024);
        let task = tokio::spawn(serve_connection(server, config, traffic, stats, stop_rx));
        client
            .write_all(b"auth ClueCon\n\nevent plain ALL\n\n")
            .await
            .unwrap();
        let mut received = Vec::new();
        client.read_to_end(&mut received).await.unwrap();
        task.await.unwrap().unwrap();
        let events = received
            .windows(b"text/event-plain".len())
            .filter(|w| w == b"text/event-plain")
            .count();
        assert_eq!(events, 200, "the second client gets every event");
        assert_eq!(consumed(checkpoints.path()), Some(200));
    }
}
