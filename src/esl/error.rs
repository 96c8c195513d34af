//! How can framing or parsing ESL bytes fail?
//!
//! Every failure of the ESL codec and of the event-body parsers is one variant of [`Error`].
//! Variants carry the line number, length or key involved, so callers can report the problem
//! precisely without matching on message text. Messages are lowercase without a trailing
//! period. Line numbers are 1-based and count lines of the header block they refer to (the
//! outer frame's block, or the inner block of a plain event).

/// Which header block an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// The outer frame's header block.
    Outer,
    /// The inner header block of a `text/event-plain` body.
    Inner,
}

impl std::fmt::Display for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Block::Outer => "outer",
            Block::Inner => "inner",
        })
    }
}

/// An error from the ESL codec or the event-body parsers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A header line whose name (the text before the colon) is empty.
    #[error("{block} header line {line} has an empty name: {text:?}")]
    EmptyHeaderName {
        /// Which header block.
        block: Block,
        /// 1-based line number in that block.
        line: usize,
        /// The line, lossily decoded and cut to at most 128 characters.
        text: String,
    },

    /// A header line without a colon.
    #[error("{block} header line {line} has no colon: {text:?}")]
    MissingColon {
        /// Which header block.
        block: Block,
        /// 1-based line number in that block.
        line: usize,
        /// The line, lossily decoded and cut to at most 128 characters.
        text: String,
    },

    /// A header name with leading or trailing whitespace (`Content-Type : x`).
    #[error("{block} header line {line} has whitespace around its name: {text:?}")]
    HeaderNameWhitespace {
        /// Which header block.
        block: Block,
        /// 1-based line number in that block.
        line: usize,
        /// The line, lossily decoded and cut to at most 128 characters.
        text: String,
    },

    /// A `Content-Length` value that is not one or more ASCII digits (or overflows `usize`).
    #[error("{block} content-length {value:?} is not a decimal byte count")]
    InvalidContentLength {
        /// Which header block.
        block: Block,
        /// The rejected value, cut to at most 128 characters.
        value: String,
    },

    /// A `Content-Length` above the codec's cap.
    #[error("content-length {length} exceeds the cap of {max} bytes")]
    ContentLengthTooLarge {
        /// The declared length.
        length: usize,
        /// The configured cap.
        max: usize,
    },

    /// The header block (terminated or not yet) is longer than the codec's cap.
    #[error("header block of at least {length} bytes exceeds the cap of {max} bytes")]
    HeaderBlockTooLarge {
        /// Bytes seen so far in the header block.
        length: usize,
        /// The configured cap.
        max: usize,
    },

    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame ({buffered} bytes buffered)")]
    Truncated {
        /// Bytes of the incomplete frame that were buffered.
        buffered: usize,
    },

    /// A plain event body whose inner header block has no terminating empty line.
    #[error("plain event has no inner header terminator")]
    MissingInnerTerminator,

    /// A plain event whose inner body is shorter than its inner `Content-Length`.
    #[error("plain event inner body has {actual} bytes but declares {declared}")]
    InnerBodyTruncated {
        /// The inner `Content-Length`.
        declared: usize,
        /// Bytes present after the inner header block.
        actual: usize,
    },

    /// A `text/event-json` body that is not valid JSON.
    #[error("event json is invalid")]
    InvalidJson {
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },

    /// A `text/event-json` body whose top level is not an object.
    #[error("event json is not an object")]
    JsonNotObject,

    /// A `text/event-json` value that is neither a string nor an array of strings.
    #[error(
        "event json key {key:?} holds a value that is neither a string nor an array of strings"
    )]
    JsonValueType {
        /// The offending key.
        key: String,
    },

    /// An I/O error from the underlying transport (required by `tokio_util` codecs).
    #[error("i/o error on the esl stream")]
    Io {
        /// The transport's error.
        #[from]
        source: std::io::Error,
    },
}

/// Cuts `bytes` to a short, lossily decoded text for error messages.
pub(crate) fn snippet(bytes: &[u8]) -> String {
    let cut = &bytes[..bytes.len().min(128)];
    String::from_utf8_lossy(cut).into_owned()
}
