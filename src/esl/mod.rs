//! How are FreeSWITCH Event Socket bytes framed, re-encoded and parsed?
//!
//! This module is the pure ESL frame codec; it does no I/O and uses nothing else from the
//! crate (spec: `esl-protocol.md` §1.2, §1.7, §1.8, §1.12, §1.13).
//!
//! - [`Frame`] is one frame as received: raw header bytes (so it re-encodes byte for byte),
//!   headers as an ordered multimap, and the body.
//! - [`EslCodec`] is the `tokio_util` decoder and encoder of frames, with configurable caps
//!   on `Content-Length` and on the header block.
//! - [`event`] parses event bodies on demand: [`event::PlainEvent`] for `text/event-plain`
//!   (percent-decoded values, inner body) and [`event::json_event`] for `text/event-json`.
//! - [`header_ci`] finds a frame header by name regardless of case, as libesl does;
//!   [`event::scan_plain_headers`] picks single headers out of a plain event body.
//! - [`could_start_frame`] tells bytes left undecoded at a close that could begin a frame
//!   from bytes that are not ESL at all.
//! - [`session`] is the sans-IO client session: handshake, commands and FIFO reply
//!   correlation, bgapi jobs, subscriptions, liveness and timeouts, with time passed in.
//!   Its command and reply types live in their own file and are re-exported there.
//! - [`Error`] is every failure, one structured variant each.

mod codec;
mod command;
mod error;
pub mod event;
mod frame;
pub mod session;

pub use codec::{DEFAULT_MAX_CONTENT_LENGTH, DEFAULT_MAX_HEADER_BLOCK, EslCodec};
pub use error::{Block, Error};
pub use frame::{ALLOCATION_OVERHEAD, Frame, could_start_frame, header_ci};
