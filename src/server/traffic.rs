//! Where do a server's events and api answers come from?
//!
//! A [`Traffic`] is what one server serves: [`crate::server::StoreReplay`] replays a store,
//! [`crate::server::Simulator`] generates traffic. Each listener gets its own [`Feed`],
//! started when it first subscribes, so every client sees the whole stream from its start;
//! api and bgapi commands are answered by the traffic.

use std::time::Duration;

use bytes::Bytes;

use super::error::Error;
use super::event::ServedEvent;

/// The next item of a feed.
#[derive(Debug)]
pub enum FeedItem {
    /// An event, due `due` after the feed started (`None`: as fast as possible).
    Event {
        /// The event.
        event: ServedEvent,
        /// When to deliver it, relative to the feed's start.
        due: Option<Duration>,
    },
    /// The stream is over: the server sends the disconnect notice unless the client lingers.
    End,
}

/// One listener's stream of events.
pub trait Feed: Send + std::fmt::Debug {
    /// The next event, or the end of the stream.
    ///
    /// # Errors
    ///
    /// Reading the underlying store failed; the connection is closed.
    fn next_item(&mut self) -> Result<FeedItem, Error>;

    /// The last item returned was handled: rendered into the connection's output, or
    /// filtered out. It is not delivered yet.
    fn handled(&mut self) {}

    /// Every item handled so far is delivered: its bytes were written whole to the socket
    /// (handed to the kernel). Progress may be saved up to here, never past it.
    fn delivered(&mut self) {}
}

/// How an `api` command is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiAnswer {
    /// The body of an `api/response` frame the server builds.
    Body(Vec<u8>),
    /// A complete recorded `api/response` frame, sent byte for byte.
    Frame(Bytes),
    /// Not a command this server knows: FreeSWITCH's `-ERR <command> Command not found!`.
    NotFound,
}

/// What a server serves.
pub trait Traffic: Send + Sync + std::fmt::Debug + 'static {
    /// A new feed for a listener that just subscribed.
    ///
    /// # Errors
    ///
    /// Opening the underlying source failed.
    fn feed(&self) -> Result<Box<dyn Feed>, Error>;

    /// The answer to `api <command>`; `occurrence` counts earlier asks of the same command
    /// text on this connection (0 first), so recorded answers can be cycled through.
    fn api(&self, command: &str, occurrence: usize) -> ApiAnswer;

    /// The `BACKGROUND_JOB` event for `bgapi <command>` run as `job_uuid`.
    fn bgapi(&self, command: &str, job_uuid: &str, occurrence: usize) -> ServedEvent;

    /// Whether the served switch has a session (channel) `uuid`: `Some(false)` only when
    /// the traffic knows there is none, so `myevents <uuid> <format>` gets FreeSWITCH's
    /// `-ERR invalid uuid`; `None` (the default) when it cannot tell.
    fn session_exists(&self, uuid: &str) -> Option<bool> {
        let _ = uuid;
        None
    }
}
