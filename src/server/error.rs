//! How can the ESL server fail?
//!
//! Every failure of the server layer is one variant of [`Error`]: reading the client's
//! commands, socket I/O, and loading traffic from a store or a checkpoint. Protocol mistakes
//! by a client are not errors: they get the `-ERR` reply FreeSWITCH would send.

/// An error of the ESL server layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A client command's header block grew past the cap without ending.
    #[error("client command header block exceeds {max} bytes")]
    CommandTooLarge {
        /// The cap in bytes.
        max: usize,
    },

    /// A client command announced a body longer than the cap, or a malformed length.
    #[error("client command has an invalid Content-Length {value:?} (cap {max} bytes)")]
    CommandContentLength {
        /// The value as sent, cut to 64 characters.
        value: String,
        /// The cap in bytes.
        max: usize,
    },

    /// A client announced a command body before authenticating; it is never read.
    #[error("unauthenticated client command announces a {length}-byte body")]
    CommandBodyUnauthenticated {
        /// The announced `Content-Length`.
        length: usize,
    },

    /// The client read nothing of what the server had to write until a deadline (the
    /// authentication deadline, or the grace of a close).
    #[error("the client read nothing of the server's output for {waited:?}")]
    ClientNotReading {
        /// How long the write waited.
        waited: std::time::Duration,
    },

    /// Socket I/O failed.
    #[error("socket I/O failed")]
    Io {
        /// The underlying error.
        #[from]
        source: std::io::Error,
    },

    /// Reading records from the artifact store failed.
    #[error("reading the artifact store failed")]
    Store {
        /// The underlying error.
        #[from]
        source: crate::store::Error,
    },

    /// Loading or saving the serving checkpoint failed.
    #[error("serving checkpoint failed")]
    Checkpoint {
        /// The underlying error.
        #[from]
        source: crate::checkpoint::Error,
    },

    /// A stored record that should be replayed is unusable.
    #[error("record {sequence} cannot be served: {reason}")]
    BadRecord {
        /// Its append sequence.
        sequence: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// An option is out of range.
    #[error("invalid server option: {0}")]
    InvalidOption(String),
}
