//! What identifies a stored replay record?
//!
//! A [`RecordId`] is an opaque, non-blank string (§1.3 of the reference semantics). Fresh
//! ids are random UUIDv4 values rendered as lowercase hyphenated hex; imported ids are kept
//! verbatim whatever their shape, because the reference accepts any non-blank string.
//! Equality is exact string equality. Ids are never used for de-duplication.

use std::fmt;
use std::str::FromStr;

use super::{Error, is_blank};

/// The identifier of a stored replay record: any non-blank string.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId(String);

impl RecordId {
    /// Generates a fresh random UUIDv4 id in lowercase hyphenated form
    /// (`xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`).
    #[must_use]
    pub fn generate() -> Self {
        Self(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Wraps an existing id, accepting any non-blank string.
    ///
    /// # Errors
    ///
    /// [`Error::BlankField`] (field `id`) if the value is empty after PHP `trim`.
    pub fn new(value: impl Into<String>) -> Result<Self, Error> {
        let value = value.into();
        if is_blank(&value) {
            return Err(Error::BlankField { field: "id" });
        }
        Ok(Self(value))
    }

    /// The id as text, exactly as generated or imported.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the id and returns its text.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for RecordId {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl AsRef<str> for RecordId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for RecordId {
    type Err = Error;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Self::new(value)
    }
}

impl TryFrom<String> for RecordId {
    type Error = Error;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_uuid_v4(text: &str) -> bool {
        let bytes = text.as_bytes();
        bytes.len() == 36
            && bytes.iter().enumerate().all(|(index, byte)| match index {
                8 | 13 | 18 | 23 => *byte == b'-',
                14 => *byte == b'4',
                19 => matches!(byte, b'8' | b'9' | b'a' | b'b'),
                _ => matches!(byte, b'0'..=b'9' | b'a'..=b'f'),
            })
    }

    #[test]
    fn generated_ids_are_lowercase_uuid_v4() {
        for _ in 0..100 {
            let id = RecordId::generate();
            assert!(is_uuid_v4(id.as_str()), "{id}");
        }
    }

    #[test]
    fn generated_ids_are_unique() {
        let ids: std::collections::HashSet<_> = (0..1000).map(|_| RecordId::generate()).collect();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn any_non_blank_string_is_accepted_verbatim() {
        let id = RecordId::new("not-a-uuid ").unwrap();
        assert_eq!(id.as_str(), "not-a-uuid ");
        assert_eq!(id.to_string(), "not-a-uuid ");
        assert_eq!(id.clone().into_string(), "not-a-uuid ");
    }

    #[test]
    fn blank_ids_are_rejected() {
        for blank in ["", "   ", "\t\n\r\0\u{b}"] {
            assert!(matches!(
                RecordId::new(blank),
                Err(Error::BlankField { field: "id" })
            ));
        }
        // PHP trim does not strip Unicode spaces, so a no-break space is a valid id.
        assert!(RecordId::new("\u{a0}").is_ok());
    }

    #[test]
    fn equality_is_exact_string_equality() {
        assert_eq!(
            RecordId::new("abc").unwrap(),
            "abc".parse::<RecordId>().unwrap()
        );
        assert_ne!(RecordId::new("abc").unwrap(), RecordId::new("ABC").unwrap());
    }
}
