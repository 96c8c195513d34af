//! Identifier newtypes: a record's sequence number and a segment's identity.
//!
//! Sequences start at 1, increase by exactly one per appended record and are never reused
//! (format/README.md [LOG-01]). A segment is identified by the first sequence it holds,
//! which is also its file name.

use std::fmt;

/// The sequence number of a record in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Seq(pub u64);

impl Seq {
    /// The first sequence a new log assigns.
    pub const FIRST: Seq = Seq(1);

    /// The raw number.
    #[must_use]
    pub fn get(self) -> u64 {
        self.0
    }

    /// The sequence after this one.
    #[must_use]
    pub fn next(self) -> Seq {
        Seq(self.0.saturating_add(1))
    }
}

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A segment, named by the first sequence it holds (its base sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId(pub u64);

impl SegmentId {
    /// The segment's base sequence.
    #[must_use]
    pub fn base(self) -> Seq {
        Seq(self.0)
    }
}

impl fmt::Display for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:020}", self.0)
    }
}
