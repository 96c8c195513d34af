//! Where is a reader in a stream?
//!
//! A [`ReadCursor`] (§2.1) is the last consumed append sequence (0 = nothing consumed) and
//! an optional byte-offset hint. Cursors are values: advancing returns a new cursor and
//! only ever moves forward. The hint is advisory (decision C5): a reader may use it to seek
//! but must validate it, so it can never hide a record. A cursor's meaning is per stream;
//! it implies no ordering across streams, and read criteria never change it.

use super::Error;

/// The position of a reader in one stream: the last consumed sequence plus a hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadCursor {
    last_consumed_sequence: u64,
    byte_offset_hint: Option<u64>,
}

impl ReadCursor {
    /// A cursor at `last_consumed_sequence` with an optional byte-offset hint.
    #[must_use]
    pub const fn new(last_consumed_sequence: u64, byte_offset_hint: Option<u64>) -> Self {
        Self {
            last_consumed_sequence,
            byte_offset_hint,
        }
    }

    /// The start of a stream: nothing consumed, hint 0 (as the reference: a hint, not null).
    #[must_use]
    pub const fn start() -> Self {
        Self::new(0, Some(0))
    }

    /// Whether nothing has been consumed yet (the hint is ignored).
    #[must_use]
    pub const fn is_at_start(&self) -> bool {
        self.last_consumed_sequence == 0
    }

    /// The last consumed append sequence; 0 when nothing was consumed.
    #[must_use]
    pub const fn last_consumed_sequence(&self) -> u64 {
        self.last_consumed_sequence
    }

    /// The byte-offset hint, if any. Advisory only.
    #[must_use]
    pub const fn byte_offset_hint(&self) -> Option<u64> {
        self.byte_offset_hint
    }

    /// A new cursor that has consumed `sequence`, with `next_byte_offset` as its hint (the
    /// hint is cleared when `None`). The original cursor is unchanged.
    ///
    /// # Errors
    ///
    /// [`Error::CursorNotAdvanced`] unless `sequence` is strictly greater than the last
    /// consumed sequence.
    pub fn advance(&self, sequence: u64, next_byte_offset: Option<u64>) -> Result<Self, Error> {
        if sequence <= self.last_consumed_sequence {
            return Err(Error::CursorNotAdvanced {
                current: self.last_consumed_sequence,
                requested: sequence,
            });
        }
        Ok(Self::new(sequence, next_byte_offset))
    }
}

impl Default for ReadCursor {
    fn default() -> Self {
        Self::start()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_is_sequence_zero_with_hint_zero() {
        let cursor = ReadCursor::start();
        assert_eq!(cursor.last_consumed_sequence(), 0);
        assert_eq!(cursor.byte_offset_hint(), Some(0));
        assert!(cursor.is_at_start());
        assert_eq!(ReadCursor::default(), cursor);
    }

    #[test]
    fn is_at_start_ignores_the_hint() {
        assert!(ReadCursor::new(0, Some(512)).is_at_start());
        assert!(ReadCursor::new(0, None).is_at_start());
        assert!(!ReadCursor::start().advance(1, None).unwrap().is_at_start());
    }

    #[test]
    fn advance_moves_to_the_given_sequence() {
        assert_eq!(
            ReadCursor::start()
                .advance(5, None)
                .unwrap()
                .last_consumed_sequence(),
            5
        );
    }

    #[test]
    fn advance_takes_an_optional_hint_and_clears_it_otherwise() {
        assert_eq!(
            ReadCursor::start()
                .advance(1, Some(128))
                .unwrap()
                .byte_offset_hint(),
            Some(128)
        );
        assert_eq!(
            ReadCursor::start()
                .advance(1, None)
                .unwrap()
                .byte_offset_hint(),
            None
        );
    }

    #[test]
    fn advance_rejects_equal_and_lower_sequences() {
        let cursor = ReadCursor::new(3, None);
        assert!(matches!(
            cursor.advance(3, None),
            Err(Error::CursorNotAdvanced {
                current: 3,
                requested: 3
            })
        ));
        let cursor = ReadCursor::new(5, None);
        assert!(matches!(
            cursor.advance(4, None),
            Err(Error::CursorNotAdvanced {
                current: 5,
                requested: 4
            })
        ));
    }

    #[test]
    fn advancing_leaves_the_original_unchanged() {
        let original = ReadCursor::new(2, Some(10));
        let advanced = original.advance(3, None).unwrap();
        assert_eq!(original, ReadCursor::new(2, Some(10)));
        assert_eq!(advanced, ReadCursor::new(3, None));
    }

    #[test]
    fn chained_advances_work() {
        let cursor = ReadCursor::start()
            .advance(1, None)
            .unwrap()
            .advance(2, None)
            .unwrap()
            .advance(10, None)
            .unwrap();
        assert_eq!(cursor.last_consumed_sequence(), 10);
    }
}
