//! How is one inbound ESL connection served?
//!
//! [`serve_connection`] speaks FreeSWITCH's side of the inbound protocol (esl-protocol.md
//! §1.1-1.6, §1.11): greeting, authentication (only `auth`, `userauth` and `exit` before it;
//! on a wrong password, after a short delay, a `-ERR invalid` reply then the disconnect
//! notice; a 25 s timeout until the first command, as FreeSWITCH),
//! then commands answered in order with FreeSWITCH's reply texts, interleaved with the
//! listener's events. Events come from the listener's own [`Feed`], started at its first
//! subscription and paced by the feed's due times; at the end of the feed the server sends
//! the disconnect notice and closes (as it does when the client hangs up). Writes go through
//! one buffer flushed between batches, so a slow client slows only its own connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
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
    /// FreeSWITCH waits for the first command at most 25 s; after it, never again.
    first_command_seen: bool,
    subscription: Subscription,
    logging: bool,
    feed: Option<Box<dyn Feed>>,
    feed_started: Instant,
    /// The next feed event, not yet due.
    pending: Option<(ServedEvent, Option<Instant>)>,
    feed_done: bool,
    asked: HashMap<String, usize>,
    out: BytesMut,
}

/// Serves one accepted connection until the client leaves, the stream ends or the server
/// stops. Errors are the connection's own (I/O, a malformed command, a store read).
pub(crate) async fn serve_connection(
    mut stream: TcpStream,
    config: Arc<ServerConfig>,
    traffic: Arc<dyn Traffic>,
    stats: Arc<ServerStats>,
    mut stop: watch::Receiver<Stop>,
) -> Result<(), Error> {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.split();
    let mut conn = Connection {
        config: Arc::clone(&config),
        traffic,
        stats,
        authenticated: false,
        first_command_seen: false,
        subscription: Subscription::default(),
        logging: false,
        feed: None,
        feed_started: Instant::now(),
        pending: None,
        feed_done: false,
        asked: HashMap::new(),
        out: BytesMut::with_capacity(64 * 1024),
    };
    conn.out.extend_from_slice(wire::GREETING);
    // A timeout too long for the clock means no deadline, never an overflow.
    let auth_deadline = Instant::now().checked_add(config.auth_timeout);
    let mut decoder = CommandDecoder::default();
    let mut input = BytesMut::with_capacity(4096);
    loop {
        // Checked before rendering more events, so a stop is not delayed by a batch.
        let state = *stop.borrow();
        match state {
            Stop::Running => {}
            Stop::Graceful => {
                wire::disconnect_notice(&mut conn.out, wire::SHUTDOWN_BODY);
                let _ = conn.flush(&mut writer).await;
                let _ = writer.shutdown().await;
                return Ok(());
            }
            Stop::Abort => return Ok(()),
        }
        let (wait_until, more_ready) = conn.pump_events()?;
        if conn.feed_done && conn.pending.is_none() {
            wire::disconnect_notice(&mut conn.out, wire::DISCONNECT_BODY);
            conn.flush(&mut writer).await?;
            let _ = writer.shutdown().await;
            return Ok(());
        }
        // Never interrupted: a partly written frame cannot be taken back. An abort cancels
        // the whole task instead.
        conn.flush(&mut writer).await?;
        tokio::select! {
            biased;
            changed = stop.changed() => if changed.is_err() { return Ok(()) },
            read = reader.read_buf(&mut input) => {
                if read? == 0 {
                    // FreeSWITCH says goodbye whenever its listener loop ends, EOF included.
                    wire::disconnect_notice(&mut conn.out, wire::DISCONNECT_BODY);
                    let _ = conn.flush(&mut writer).await;
                    return Ok(());
                }
                while let Some(command) = decoder.decode(&mut input)? {
                    conn.first_command_seen = true;
                    match conn.handle(command)? {
                        After::Continue => {}
                        After::Disconnect => {
                            wire::disconnect_notice(&mut conn.out, wire::DISCONNECT_BODY);
                            conn.flush(&mut writer).await?;
                            let _ = writer.shutdown().await;
                            return Ok(());
                        }
                        After::RejectAuth => {
                            conn.flush(&mut writer).await?;
                            // Input sent meanwhile is never read: the connection is closing.
                            tokio::select! {
                                () = tokio::time::sleep(config.auth_failure_delay) => {}
                                _ = stop.changed() => {}
                            }
                            wire::command_reply(&mut conn.out, "-ERR invalid");
                            wire::disconnect_notice(&mut conn.out, wire::DISCONNECT_BODY);
                            let _ = conn.flush(&mut writer).await;
                            let _ = writer.shutdown().await;
                            return Ok(());
                        }
                    }
                }
            }
            () = sleep_until_opt(auth_deadline), if auth_deadline.is_some() && !conn.first_command_seen => {
                wire::disconnect_notice(&mut conn.out, wire::DISCONNECT_BODY);
                let _ = conn.flush(&mut writer).await;
                return Ok(());
            }
            () = sleep_until_opt(wait_until), if wait_until.is_some() => {}
            // Yield so other tasks (and stop requests) run between batches.
            () = tokio::task::yield_now(), if more_ready => {}
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

impl Connection {
    async fn flush(
        &mut self,
        writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<(), Error> {
        if self.out.is_empty() {
            return Ok(());
        }
        writer.write_all(&self.out).await?;
        self.stats
            .bytes_written
            .fetch_add(self.out.len() as u64, Ordering::Relaxed);
        self.out.clear();
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
                self.stats.events_sent.fetch_add(1, Ordering::Relaxed);
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
                    .map_or_else(|| uuid::Uuid::new_v4().to_string(), |v| v.trim().to_owned());
                wire::bgapi_ack(&mut self.out, &job_uuid);
                let occurrence = self.occurrence(format!("bgapi {text}"));
                let event = self.traffic.bgapi(&text, &job_uuid, occurrence);
                if self.subscription.wants(&event) {
                    event.render(self.subscription.format(), &mut self.out);
                    self.stats.events_sent.fetch_add(1, Ordering::Relaxed);
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
                let reply = self.subscription.myevents(&words);
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
    if let Ok(n) = name.parse::<u8>() {
        return (n <= 7).then_some(n);
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
