//! Which records does a bounded read filter select?
//!
//! [`Criteria`] (§3, decisions K4 and C8) holds up to nine optional conditions, all of
//! which must hold:
//!
//! - `captured_from` / `captured_until`: an inclusive capture-time window. Bounds and
//!   capture times are compared as instants, whatever their offsets. The record side is
//!   first truncated to whole milliseconds, the precision of the reference text form, so a
//!   filter selects the same records before and after an NDJSON round trip and the same
//!   records as the reference filesystem adapter (a capture at `10:00:00.000500` matches
//!   `captured_until = 10:00:00.000`).
//! - `artifact_name`, `job_uuid`, `session_id`, `connection_generation`: exact,
//!   case-sensitive equality with the record field; a record without the field never
//!   matches.
//! - `replay_session_id`, `pbx_node_slug`, `worker_session_id`: exact equality with the
//!   identity derived by [`super::identity`]; absent identity never matches.
//!
//! Criteria never change cursor meaning or append order; they only skip records.

use serde::Deserialize;
use time::OffsetDateTime;

use super::{Error, Record, RecordView, is_blank, timestamp};

/// The nine optional conditions of a read filter, before validation.
/// `CriteriaFields::default()` selects every record.
///
/// It deserializes from the JSON object evidence bundles write: every key present, `null`
/// for an unset condition, times as text (any form [`timestamp::parse`] reads); other keys
/// are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct CriteriaFields {
    /// Earliest capture time selected (inclusive).
    #[serde(deserialize_with = "timestamp::deserialize_nullable")]
    pub captured_from: Option<OffsetDateTime>,
    /// Latest capture time selected (inclusive).
    #[serde(deserialize_with = "timestamp::deserialize_nullable")]
    pub captured_until: Option<OffsetDateTime>,
    /// Exact artifact name.
    #[serde(deserialize_with = "Option::deserialize")]
    pub artifact_name: Option<String>,
    /// Exact job UUID.
    #[serde(deserialize_with = "Option::deserialize")]
    pub job_uuid: Option<String>,
    /// Exact replay session id (from correlation ids, then runtime flags).
    #[serde(deserialize_with = "Option::deserialize")]
    pub replay_session_id: Option<String>,
    /// Exact PBX node slug (runtime flags only).
    #[serde(deserialize_with = "Option::deserialize")]
    pub pbx_node_slug: Option<String>,
    /// Exact worker session id (runtime flags only).
    #[serde(deserialize_with = "Option::deserialize")]
    pub worker_session_id: Option<String>,
    /// Exact session id.
    #[serde(deserialize_with = "Option::deserialize")]
    pub session_id: Option<String>,
    /// Exact connection generation.
    #[serde(deserialize_with = "Option::deserialize")]
    pub connection_generation: Option<String>,
}

impl CriteriaFields {
    /// The exact-text conditions with their reference key names, in the reference's order.
    #[must_use]
    pub fn texts(&self) -> [(&'static str, Option<&str>); 7] {
        [
            ("artifact_name", self.artifact_name.as_deref()),
            ("job_uuid", self.job_uuid.as_deref()),
            ("replay_session_id", self.replay_session_id.as_deref()),
            ("pbx_node_slug", self.pbx_node_slug.as_deref()),
            ("worker_session_id", self.worker_session_id.as_deref()),
            ("session_id", self.session_id.as_deref()),
            (
                "connection_generation",
                self.connection_generation.as_deref(),
            ),
        ]
    }
}

/// A validated, bounded read filter. The default selects every record. It deserializes as
/// [`CriteriaFields`] do, then validates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "CriteriaFields")]
pub struct Criteria {
    fields: CriteriaFields,
}

impl TryFrom<CriteriaFields> for Criteria {
    type Error = Error;

    fn try_from(fields: CriteriaFields) -> Result<Self, Error> {
        Self::new(fields)
    }
}

impl Criteria {
    /// Validates the conditions.
    ///
    /// # Errors
    ///
    /// - [`Error::BlankField`] if a given text condition is blank;
    /// - [`Error::InvertedTimeWindow`] if `captured_from` is after `captured_until` (equal
    ///   bounds are allowed).
    pub fn new(fields: CriteriaFields) -> Result<Self, Error> {
        for (field, value) in fields.texts() {
            if value.is_some_and(is_blank) {
                return Err(Error::BlankField { field });
            }
        }
        if let (Some(from), Some(until)) = (fields.captured_from, fields.captured_until)
            && from > until
        {
            return Err(Error::InvertedTimeWindow { from, until });
        }
        Ok(Self { fields })
    }

    /// Criteria that select every record.
    #[must_use]
    pub fn any() -> Self {
        Self::default()
    }

    /// The validated conditions.
    #[must_use]
    pub fn fields(&self) -> &CriteriaFields {
        &self.fields
    }

    /// Whether no condition is set.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        let fields = &self.fields;
        fields.captured_from.is_none()
            && fields.captured_until.is_none()
            && [
                &fields.artifact_name,
                &fields.job_uuid,
                &fields.replay_session_id,
                &fields.pbx_node_slug,
                &fields.worker_session_id,
                &fields.session_id,
                &fields.connection_generation,
            ]
            .iter()
            .all(|field| field.is_none())
    }

    /// Whether the record satisfies every condition.
    #[must_use]
    pub fn matches(&self, record: &Record) -> bool {
        self.is_empty()
            || self.matches_fields(Subject {
                captured: record.capture_timestamp().unix_timestamp_nanos(),
                artifact_name: record.artifact_name(),
                job_uuid: record.job_uuid(),
                session_id: record.session_id(),
                connection_generation: record.connection_generation(),
                replay_session_id: record.replay_session_id(),
                pbx_node_slug: record.pbx_node_slug(),
                worker_session_id: record.worker_session_id(),
            })
    }

    /// Whether the viewed record satisfies every condition; its maps are not read (the
    /// identity they hold is stored beside them).
    #[must_use]
    pub fn matches_view(&self, record: &RecordView<'_>) -> bool {
        self.is_empty()
            || self.matches_fields(Subject {
                captured: record.capture_unix_nanos(),
                artifact_name: record.artifact_name(),
                job_uuid: record.job_uuid(),
                session_id: record.session_id(),
                connection_generation: record.connection_generation(),
                replay_session_id: record.replay_session_id(),
                pbx_node_slug: record.pbx_node_slug(),
                worker_session_id: record.worker_session_id(),
            })
    }

    fn matches_fields(&self, subject: Subject<'_>) -> bool {
        let fields = &self.fields;
        // Truncated to whole milliseconds, the precision of the reference text form.
        const NANOS_PER_MILLI: i128 = 1_000_000;
        let captured = subject.captured.div_euclid(NANOS_PER_MILLI) * NANOS_PER_MILLI;
        fields
            .captured_from
            .is_none_or(|from| captured >= from.unix_timestamp_nanos())
            && fields
                .captured_until
                .is_none_or(|until| captured <= until.unix_timestamp_nanos())
            && equals(fields.artifact_name.as_deref(), Some(subject.artifact_name))
            && equals(fields.job_uuid.as_deref(), subject.job_uuid)
            && equals(fields.session_id.as_deref(), subject.session_id)
            && equals(
                fields.connection_generation.as_deref(),
                subject.connection_generation,
            )
            && equals(
                fields.replay_session_id.as_deref(),
                subject.replay_session_id,
            )
            && equals(fields.pbx_node_slug.as_deref(), subject.pbx_node_slug)
            && equals(
                fields.worker_session_id.as_deref(),
                subject.worker_session_id,
            )
    }
}

/// The fields of a record that criteria test.
struct Subject<'a> {
    /// The capture instant in nanoseconds since the Unix epoch.
    captured: i128,
    artifact_name: &'a str,
    job_uuid: Option<&'a str>,
    session_id: Option<&'a str>,
    connection_generation: Option<&'a str>,
    replay_session_id: Option<&'a str>,
    pbx_node_slug: Option<&'a str>,
    worker_session_id: Option<&'a str>,
}

/// An unset condition holds; a set one needs an equal, present value.
fn equals(wanted: Option<&str>, actual: Option<&str>) -> bool {
    wanted.is_none_or(|wanted| actual == Some(wanted))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use time::macros::datetime;

    use super::*;
    use crate::record::{JsonMap, RecordFields, RecordId};

    fn map(value: Value) -> JsonMap {
        match value {
            Value::Object(map) => map,
            _ => JsonMap::new(),
        }
    }

    fn record() -> Record {
        Record::new(RecordFields {
            id: RecordId::generate(),
            artifact_version: "1".into(),
            artifact_name: "api.dispatch".into(),
            capture_timestamp: datetime!(2024-01-15 10:00:00.000500 UTC),
            stored_at: datetime!(2024-01-15 10:00:01 UTC),
            append_sequence: 1,
            connection_generation: Some("gen-1".into()),
            session_id: Some("sess-001".into()),
            job_uuid: Some("job-1".into()),
            event_name: None,
            capture_path: None,
            correlation_ids: map(
                json!({"replay_session_id": "replay-1", "pbx_node_slug": "ignored"}),
            ),
            runtime_flags: map(json!({"pbx_node_slug": "node-a", "worker_session_id": "worker-1"})),
            payload: JsonMap::new(),
            checksum: "x".into(),
            tags: JsonMap::new(),
        })
        .unwrap()
    }

    fn criteria(fields: CriteriaFields) -> Criteria {
        Criteria::new(fields).unwrap()
    }

    fn text(value: &str) -> Option<String> {
        Some(value.to_owned())
    }

    #[test]
    fn empty_criteria_match_everything() {
        assert!(Criteria::any().is_empty());
        assert!(Criteria::any().matches(&record()));
    }

    #[test]
    fn all_nine_fields_are_retained() {
        let fields = CriteriaFields {
            captured_from: Some(datetime!(2024-01-15 09:00 UTC)),
            captured_until: Some(datetime!(2024-01-15 11:00 UTC)),
            artifact_name: text("api.dispatch"),
            job_uuid: text("job-1"),
            replay_session_id: text("replay-1"),
            pbx_node_slug: text("node-a"),
            worker_session_id: text("worker-1"),
            session_id: text("sess-001"),
            connection_generation: text("gen-1"),
        };
        let criteria = criteria(fields.clone());
        assert_eq!(criteria.fields(), &fields);
        assert!(!criteria.is_empty());
        assert!(criteria.matches(&record()));
    }

    #[test]
    fn blank_text_conditions_are_rejected() {
        let result = Criteria::new(CriteriaFields {
            artifact_name: text("  "),
            ..CriteriaFields::default()
        });
        assert!(matches!(
            result,
            Err(Error::BlankField {
                field: "artifact_name"
            })
        ));
        let result = Criteria::new(CriteriaFields {
            replay_session_id: text(""),
            ..CriteriaFields::default()
        });
        assert!(matches!(
            result,
            Err(Error::BlankField {
                field: "replay_session_id"
            })
        ));
    }

    #[test]
    fn inverted_windows_are_rejected_and_equal_bounds_allowed() {
        let late = datetime!(2024-01-15 11:00 UTC);
        let early = datetime!(2024-01-15 10:00 UTC);
        let result = Criteria::new(CriteriaFields {
            captured_from: Some(late),
            captured_until: Some(early),
            ..CriteriaFields::default()
        });
        assert!(matches!(result, Err(Error::InvertedTimeWindow { .. })));
        assert!(
            Criteria::new(CriteriaFields {
                captured_from: Some(early),
                captured_until: Some(early),
                ..CriteriaFields::default()
            })
            .is_ok()
        );
    }

    #[test]
    fn time_window_is_inclusive_at_millisecond_precision() {
        let at = datetime!(2024-01-15 10:00:00 UTC);
        let window = |from, until| {
            criteria(CriteriaFields {
                captured_from: from,
                captured_until: until,
                ..CriteriaFields::default()
            })
        };
        // The capture at .000500 is stored as .000, so it matches an upper bound of .000.
        assert!(window(None, Some(at)).matches(&record()));
        assert!(window(Some(at), None).matches(&record()));
        assert!(window(Some(at), Some(at)).matches(&record()));
        assert!(!window(Some(datetime!(2024-01-15 10:00:00.001 UTC)), None).matches(&record()));
        assert!(!window(None, Some(datetime!(2024-01-15 09:59:59.999 UTC))).matches(&record()));
    }

    #[test]
    fn time_window_compares_instants_across_offsets() {
        let from = datetime!(2024-01-15 12:00:00 +02:00);
        let until = datetime!(2024-01-15 05:00:00 -05:00);
        let window = criteria(CriteriaFields {
            captured_from: Some(from),
            captured_until: Some(until),
            ..CriteriaFields::default()
        });
        assert!(window.matches(&record()));
        let later = criteria(CriteriaFields {
            captured_from: Some(datetime!(2024-01-15 12:30:00 +02:00)),
            ..CriteriaFields::default()
        });
        assert!(!later.matches(&record()));
    }

    #[test]
    fn artifact_name_is_exact_and_case_sensitive() {
        assert!(
            criteria(CriteriaFields {
                artifact_name: text("api.dispatch"),
                ..CriteriaFields::default()
            })
            .matches(&record())
        );
        assert!(
            !criteria(CriteriaFields {
                artifact_name: text("API.dispatch"),
                ..CriteriaFields::default()
            })
            .matches(&record())
        );
    }

    #[test]
    fn job_uuid_matches_exactly_and_never_a_missing_field() {
        assert!(
            criteria(CriteriaFields {
                job_uuid: text("job-1"),
                ..CriteriaFields::default()
            })
            .matches(&record())
        );
        assert!(
            !criteria(CriteriaFields {
                job_uuid: text("job-2"),
                ..CriteriaFields::default()
            })
            .matches(&record())
        );
        let mut fields = record().into_fields();
        fields.job_uuid = None;
        let without = Record::new(fields).unwrap();
        assert!(
            !criteria(CriteriaFields {
                job_uuid: text("job-1"),
                ..CriteriaFields::default()
            })
            .matches(&without)
        );
    }

    #[test]
    fn session_id_matches_exactly() {
        assert!(
            criteria(CriteriaFields {
                session_id: text("sess-001"),
                ..CriteriaFields::default()
            })
            .matches(&record())
        );
        assert!(
            !criteria(CriteriaFields {
                session_id: text("sess-002"),
                ..CriteriaFields::default()
            })
            .matches(&record())
        );
    }

    #[test]
    fn connection_generation_matches_exactly() {
        let matching = CriteriaFields {
            connection_generation: text("gen-1"),
            ..CriteriaFields::default()
        };
        assert!(criteria(matching).matches(&record()));
        let other = CriteriaFields {
            connection_generation: text("gen-2"),
            ..CriteriaFields::default()
        };
        assert!(!criteria(other).matches(&record()));
    }

    #[test]
    fn replay_session_id_uses_correlation_then_runtime_flags() {
        let wanted = |value: &str| {
            criteria(CriteriaFields {
                replay_session_id: text(value),
                ..CriteriaFields::default()
            })
        };
        assert!(wanted("replay-1").matches(&record()));
        let mut fields = record().into_fields();
        fields.correlation_ids = map(json!({"replay_session_id": " "}));
        fields.runtime_flags = map(json!({"replay_session_id": "replay-2"}));
        let fallback = Record::new(fields).unwrap();
        assert!(wanted("replay-2").matches(&fallback));
        assert!(!wanted("replay-1").matches(&fallback));
    }

    #[test]
    fn pbx_node_slug_comes_only_from_runtime_flags() {
        let wanted = |value: &str| {
            criteria(CriteriaFields {
                pbx_node_slug: text(value),
                ..CriteriaFields::default()
            })
        };
        assert!(wanted("node-a").matches(&record()));
        assert!(!wanted("ignored").matches(&record()));
    }

    #[test]
    fn worker_session_id_comes_only_from_runtime_flags() {
        let wanted = |value: &str| {
            criteria(CriteriaFields {
                worker_session_id: text(value),
                ..CriteriaFields::default()
            })
        };
        assert!(wanted("worker-1").matches(&record()));
        let mut fields = record().into_fields();
        fields.runtime_flags = JsonMap::new();
        fields.correlation_ids = map(json!({"worker_session_id": "worker-1"}));
        assert!(!wanted("worker-1").matches(&Record::new(fields).unwrap()));
    }

    #[test]
    fn non_string_identity_values_never_match() {
        let mut fields = record().into_fields();
        fields.runtime_flags = map(json!({"pbx_node_slug": 7}));
        let record = Record::new(fields).unwrap();
        assert!(
            !criteria(CriteriaFields {
                pbx_node_slug: text("7"),
                ..CriteriaFields::default()
            })
            .matches(&record)
        );
    }

    #[test]
    fn conditions_are_conjunctive() {
        let fields = CriteriaFields {
            artifact_name: text("api.dispatch"),
            session_id: text("other"),
            ..CriteriaFields::default()
        };
        assert!(!criteria(fields).matches(&record()));
    }
}
