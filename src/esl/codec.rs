//! How are ESL bytes cut into frames, and frames written back?
//!
//! [`EslCodec`] is a `tokio_util` [`Decoder`] and [`Encoder`]. It is a two-state machine
//! (awaiting headers, reading body) over one byte buffer: the header block ends at the first
//! `\n\n`; a `Content-Length` header (its name in any case, as libesl; ASCII digits only, at
//! most the configured cap) announces exactly that many body bytes; without it the frame has
//! no body. Stray `\r`/`\n` bytes
//! between frames are skipped as FreeSWITCH's own reader does, but kept in the next frame's
//! raw header so re-encoding stays byte-exact (stray newlines at end of stream are dropped).
//! A partial frame yields `Ok(None)`; the header block is capped, so a peer that never sends
//! `\n\n` cannot grow memory without bound. No input makes the decoder panic.

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::error::{Block, Error};
use super::frame::{Frame, Split, find_terminator, parse_block, parse_length};

/// Default cap on a frame's `Content-Length`: 16 MiB, as libesl.
pub const DEFAULT_MAX_CONTENT_LENGTH: usize = 16 * 1024 * 1024;

/// Default cap on a frame's header block (including its terminator): 1 MiB.
pub const DEFAULT_MAX_HEADER_BLOCK: usize = 1024 * 1024;

#[derive(Debug)]
enum State {
    /// Looking for the end of the header block; bytes before `scanned` hold no `\n\n`
    /// starting there.
    Head { scanned: usize },
    /// Header block parsed; waiting for the body.
    Body {
        head_len: usize,
        headers: Vec<(String, String)>,
        body_len: usize,
    },
}

/// The ESL frame codec: a [`Decoder`] of [`Frame`]s and a byte-exact [`Encoder`] of them.
#[derive(Debug)]
pub struct EslCodec {
    max_content_length: usize,
    max_header_block: usize,
    state: State,
}

impl Default for EslCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl EslCodec {
    /// A codec with the default caps ([`DEFAULT_MAX_CONTENT_LENGTH`],
    /// [`DEFAULT_MAX_HEADER_BLOCK`]).
    pub fn new() -> Self {
        Self {
            max_content_length: DEFAULT_MAX_CONTENT_LENGTH,
            max_header_block: DEFAULT_MAX_HEADER_BLOCK,
            state: State::Head { scanned: 0 },
        }
    }

    /// Sets the largest `Content-Length` accepted.
    #[must_use]
    pub fn with_max_content_length(mut self, max: usize) -> Self {
        self.max_content_length = max;
        self
    }

    /// Sets the largest header block accepted, counting stray leading newlines and the
    /// terminating `\n\n`.
    #[must_use]
    pub fn with_max_header_block(mut self, max: usize) -> Self {
        self.max_header_block = max;
        self
    }

    /// The largest `Content-Length` accepted.
    pub fn max_content_length(&self) -> usize {
        self.max_content_length
    }

    /// The largest header block accepted.
    pub fn max_header_block(&self) -> usize {
        self.max_header_block
    }

    /// Advances the header state; `Ok(true)` once the header block is parsed.
    fn decode_head(&mut self, src: &mut BytesMut, scanned: usize) -> Result<bool, Error> {
        let prefix = src
            .iter()
            .take_while(|&&b| b == b'\n' || b == b'\r')
            .count();
        let from = scanned.max(prefix);
        let Some(end) = find_terminator(src, from) else {
            if src.len() > self.max_header_block {
                return Err(Error::HeaderBlockTooLarge {
                    length: src.len(),
                    max: self.max_header_block,
                });
            }
            self.state = State::Head {
                scanned: src.len().saturating_sub(1).max(prefix),
            };
            return Ok(false);
        };
        let head_len = end + 2;
        if head_len > self.max_header_block {
            return Err(Error::HeaderBlockTooLarge {
                length: head_len,
                max: self.max_header_block,
            });
        }
        let block = src.get(prefix..end).unwrap_or_default();
        let headers = parse_block(block, Block::Outer, Split::FirstColon)?;
        let body_len = match headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("Content-Length"))
        {
            None => 0,
            Some((_, v)) => parse_length(v.as_bytes(), Block::Outer)?,
        };
        if body_len > self.max_content_length {
            return Err(Error::ContentLengthTooLarge {
                length: body_len,
                max: self.max_content_length,
            });
        }
        self.state = State::Body {
            head_len,
            headers,
            body_len,
        };
        Ok(true)
    }
}

impl Decoder for EslCodec {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if let State::Head { scanned } = self.state
            && (src.is_empty() || !self.decode_head(src, scanned)?)
        {
            return Ok(None);
        }
        let State::Body {
            head_len, body_len, ..
        } = self.state
        else {
            return Ok(None);
        };
        let total = head_len.saturating_add(body_len);
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let State::Body { headers, .. } =
            std::mem::replace(&mut self.state, State::Head { scanned: 0 })
        else {
            return Ok(None);
        };
        let head = src.split_to(head_len).freeze();
        let body = src.split_to(body_len).freeze();
        Ok(Some(Frame::from_parts(head, headers, body)))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if buf.iter().all(|&b| b == b'\n' || b == b'\r') {
            buf.clear();
            self.state = State::Head { scanned: 0 };
            return Ok(None);
        }
        Err(Error::Truncated {
            buffered: buf.len(),
        })
    }
}

impl Encoder<&Frame> for EslCodec {
    type Error = Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Error> {
        frame.write_to(dst);
        Ok(())
    }
}
