//! How is a stored record read without copying it?
//!
//! A [`RecordView`] holds every field of a record borrowed from where it is stored: the
//! strings and the four maps' JSON texts point into a version 2 log frame (or into an owned
//! [`Record`] and its [`MapTexts`]). Nothing is allocated to make one, the checksum is the
//! stored one, and the maps are the exact JSON text an NDJSON export writes; they are parsed
//! only when asked ([`RecordView::payload`], [`RecordView::to_record`]).
//!
//! A view also carries the operator identity derived from the maps ([`super::identity`]),
//! so criteria ([`super::Criteria::matches_view`]) test the fixed fields without touching a
//! map.

use time::{OffsetDateTime, UtcOffset};

use super::{
    Error, JsonMap, MAX_JSON_DEPTH, Record, RecordFields, RecordId, canonical, ndjson, php_map,
};

/// A stored record, borrowed. See the module docs.
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    pub(super) fields: Fields<'a>,
    pub(super) capture_timestamp: StoredTime,
    pub(super) stored_at: StoredTime,
    pub(super) append_sequence: u64,
}

/// Where a view's sixteen text fields are, numbered as in a version 2 frame
/// (format/record.md [BODY-02]).
#[derive(Clone, Copy, Debug)]
pub(super) enum Fields<'a> {
    /// In a version 2 frame: the fields' text, where each field ends in it, and a bit per
    /// absent field (an absent field ends where the one before it does).
    Frame {
        text: &'a str,
        ends: [u32; FIELDS],
        absent: u16,
    },
    /// In an owned record and its maps' texts.
    Owned {
        record: &'a Record,
        texts: &'a MapTexts,
    },
}

/// How many text fields a record has.
pub(super) const FIELDS: usize = 16;

// The numbers of the fields, in frame order.
pub(super) const ID: usize = 0;
pub(super) const ARTIFACT_VERSION: usize = 1;
pub(super) const ARTIFACT_NAME: usize = 2;
pub(super) const CONNECTION_GENERATION: usize = 3;
pub(super) const SESSION_ID: usize = 4;
pub(super) const JOB_UUID: usize = 5;
pub(super) const EVENT_NAME: usize = 6;
pub(super) const CAPTURE_PATH: usize = 7;
pub(super) const CHECKSUM: usize = 8;
pub(super) const REPLAY_SESSION_ID: usize = 9;
pub(super) const PBX_NODE_SLUG: usize = 10;
pub(super) const WORKER_SESSION_ID: usize = 11;
pub(super) const CORRELATION_IDS: usize = 12;
pub(super) const RUNTIME_FLAGS: usize = 13;
pub(super) const PAYLOAD: usize = 14;
pub(super) const TAGS: usize = 15;

/// The JSON texts of an owned record's four maps, as
/// [`to_ndjson_line`](super::to_ndjson_line) writes them, so that the record can be viewed
/// ([`Record::view`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapTexts {
    correlation_ids: String,
    runtime_flags: String,
    payload: String,
    tags: String,
}

impl MapTexts {
    /// Writes the texts of `record`'s maps.
    #[must_use]
    pub fn of(record: &Record) -> MapTexts {
        let text = |map: &JsonMap| {
            let mut out = String::new();
            canonical::write_record_map(&mut out, map);
            out
        };
        MapTexts {
            correlation_ids: text(record.correlation_ids()),
            runtime_flags: text(record.runtime_flags()),
            payload: text(record.payload()),
            tags: text(record.tags()),
        }
    }
}

impl Record {
    /// This record as a view; `texts` must be [`MapTexts::of`] this record.
    #[must_use]
    pub fn view<'a>(&'a self, texts: &'a MapTexts) -> RecordView<'a> {
        RecordView {
            fields: Fields::Owned {
                record: self,
                texts,
            },
            capture_timestamp: StoredTime::of(self.capture_timestamp()),
            stored_at: StoredTime::of(self.stored_at()),
            append_sequence: self.append_sequence(),
        }
    }
}

impl<'a> RecordView<'a> {
    /// The record id.
    #[inline]
    #[must_use]
    pub fn id(&self) -> &'a str {
        self.text(ID)
    }

    /// Schema version of the captured artifact.
    #[inline]
    #[must_use]
    pub fn artifact_version(&self) -> &'a str {
        self.text(ARTIFACT_VERSION)
    }

    /// Artifact kind such as `api.dispatch`.
    #[inline]
    #[must_use]
    pub fn artifact_name(&self) -> &'a str {
        self.text(ARTIFACT_NAME)
    }

    /// Capture time in its original offset, full precision.
    #[inline]
    #[must_use]
    pub fn capture_timestamp(&self) -> OffsetDateTime {
        self.capture_timestamp.timestamp()
    }

    /// The capture instant in nanoseconds since the Unix epoch, read without building a
    /// calendar date (what time windows compare).
    #[inline]
    #[must_use]
    pub fn capture_unix_nanos(&self) -> i128 {
        self.capture_timestamp.unix_nanos()
    }

    /// When the store accepted the record.
    #[inline]
    #[must_use]
    pub fn stored_at(&self) -> OffsetDateTime {
        self.stored_at.timestamp()
    }

    /// Position in the stream, starting at 1.
    #[inline]
    #[must_use]
    pub fn append_sequence(&self) -> u64 {
        self.append_sequence
    }

    /// Connection generation, if captured.
    #[inline]
    #[must_use]
    pub fn connection_generation(&self) -> Option<&'a str> {
        self.field(CONNECTION_GENERATION)
    }

    /// FreeSWITCH session id, if captured.
    #[inline]
    #[must_use]
    pub fn session_id(&self) -> Option<&'a str> {
        self.field(SESSION_ID)
    }

    /// Background job UUID, if captured.
    #[inline]
    #[must_use]
    pub fn job_uuid(&self) -> Option<&'a str> {
        self.field(JOB_UUID)
    }

    /// ESL event name, if captured.
    #[inline]
    #[must_use]
    pub fn event_name(&self) -> Option<&'a str> {
        self.field(EVENT_NAME)
    }

    /// Capture path, if captured.
    #[inline]
    #[must_use]
    pub fn capture_path(&self) -> Option<&'a str> {
        self.field(CAPTURE_PATH)
    }

    /// The stored checksum (never recomputed on read).
    #[inline]
    #[must_use]
    pub fn checksum(&self) -> &'a str {
        self.text(CHECKSUM)
    }

    /// The replay session id derived from the maps ([`super::identity::replay_session_id`]).
    #[inline]
    #[must_use]
    pub fn replay_session_id(&self) -> Option<&'a str> {
        self.field(REPLAY_SESSION_ID)
    }

    /// The PBX node slug derived from the runtime flags ([`super::identity::pbx_node_slug`]).
    #[inline]
    #[must_use]
    pub fn pbx_node_slug(&self) -> Option<&'a str> {
        self.field(PBX_NODE_SLUG)
    }

    /// The worker session id derived from the runtime flags
    /// ([`super::identity::worker_session_id`]).
    #[inline]
    #[must_use]
    pub fn worker_session_id(&self) -> Option<&'a str> {
        self.field(WORKER_SESSION_ID)
    }

    /// The correlation ids as the JSON text an NDJSON export writes.
    #[inline]
    #[must_use]
    pub fn correlation_ids_json(&self) -> &'a str {
        self.text(CORRELATION_IDS)
    }

    /// The runtime flags as the JSON text an NDJSON export writes.
    #[inline]
    #[must_use]
    pub fn runtime_flags_json(&self) -> &'a str {
        self.text(RUNTIME_FLAGS)
    }

    /// The payload as the JSON text an NDJSON export writes, keys in insertion order.
    #[inline]
    #[must_use]
    pub fn payload_json(&self) -> &'a str {
        self.text(PAYLOAD)
    }

    /// The tags as the JSON text an NDJSON export writes.
    #[inline]
    #[must_use]
    pub fn tags_json(&self) -> &'a str {
        self.text(TAGS)
    }

    /// The payload, parsed.
    ///
    /// # Errors
    ///
    /// As [`RecordView::to_record`] for the payload's text.
    pub fn payload(&self) -> Result<JsonMap, Error> {
        parse_map(self.payload_json(), "payload")
    }

    /// The record as an owned [`Record`]: the maps are parsed and every rule of
    /// [`Record::new`] applies; the derived identity must agree with the maps.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidField`] for a map whose text is not JSON, [`Error::FieldNotObject`]
    /// for one that is not a JSON object or list,
    /// [`Error::NestingTooDeep`], [`Error::InconsistentFrame`] if the derived identity
    /// disagrees, and the validation errors of [`Record::new`].
    pub fn to_record(&self) -> Result<Record, Error> {
        let record = Record::new(RecordFields {
            id: RecordId::new(self.id())?,
            artifact_version: self.artifact_version().to_owned(),
            artifact_name: self.artifact_name().to_owned(),
            capture_timestamp: self.capture_timestamp(),
            stored_at: self.stored_at(),
            append_sequence: self.append_sequence,
            connection_generation: self.connection_generation().map(str::to_owned),
            session_id: self.session_id().map(str::to_owned),
            job_uuid: self.job_uuid().map(str::to_owned),
            event_name: self.event_name().map(str::to_owned),
            capture_path: self.capture_path().map(str::to_owned),
            correlation_ids: parse_map(self.correlation_ids_json(), "correlation_ids")?,
            runtime_flags: parse_map(self.runtime_flags_json(), "runtime_flags")?,
            payload: parse_map(self.payload_json(), "payload")?,
            checksum: self.checksum().to_owned(),
            tags: parse_map(self.tags_json(), "tags")?,
        })?;
        for (field, derived, from_maps) in [
            (
                "replay_session_id",
                self.replay_session_id(),
                record.replay_session_id(),
            ),
            (
                "pbx_node_slug",
                self.pbx_node_slug(),
                record.pbx_node_slug(),
            ),
            (
                "worker_session_id",
                self.worker_session_id(),
                record.worker_session_id(),
            ),
        ] {
            if derived != from_maps {
                return Err(Error::InconsistentFrame { field });
            }
        }
        Ok(record)
    }

    /// Field `index` ([BODY-02] order), `None` when absent.
    #[inline]
    fn field(&self, index: usize) -> Option<&'a str> {
        match self.fields {
            Fields::Frame { text, ends, absent } => {
                if absent & (1 << index) != 0 {
                    return None;
                }
                let start = index
                    .checked_sub(1)
                    .and_then(|before| ends.get(before))
                    .map_or(0, |end| *end as usize);
                let end = ends.get(index).map_or(0, |end| *end as usize);
                text.get(start..end)
            }
            Fields::Owned { record, texts } => owned_field(record, texts, index),
        }
    }

    /// A field that is never absent (decoding checked it is present and on character
    /// boundaries, so the empty fallback is never taken).
    #[inline]
    fn text(&self, index: usize) -> &'a str {
        self.field(index).unwrap_or_default()
    }

    /// Appends the record's reference NDJSON line and its terminating `\n` to `out`: the
    /// bytes [`append_ndjson_line`](super::append_ndjson_line) writes for the same record,
    /// with the maps copied from their stored text.
    pub fn append_ndjson_line(&self, out: &mut String) {
        ndjson::write_line(self, out);
        out.push('\n');
    }
}

/// Field `index` ([BODY-02] order) of an owned record, `None` when absent (kept out of
/// line: views of frames are the hot path).
fn owned_field<'a>(record: &'a Record, texts: &'a MapTexts, index: usize) -> Option<&'a str> {
    match index {
        ID => Some(record.id().as_str()),
        ARTIFACT_VERSION => Some(record.artifact_version()),
        ARTIFACT_NAME => Some(record.artifact_name()),
        CONNECTION_GENERATION => record.connection_generation(),
        SESSION_ID => record.session_id(),
        JOB_UUID => record.job_uuid(),
        EVENT_NAME => record.event_name(),
        CAPTURE_PATH => record.capture_path(),
        CHECKSUM => Some(record.checksum()),
        REPLAY_SESSION_ID => record.replay_session_id(),
        PBX_NODE_SLUG => record.pbx_node_slug(),
        WORKER_SESSION_ID => record.worker_session_id(),
        CORRELATION_IDS => Some(&texts.correlation_ids),
        RUNTIME_FLAGS => Some(&texts.runtime_flags),
        PAYLOAD => Some(&texts.payload),
        TAGS => Some(&texts.tags),
        _ => None,
    }
}

/// A timestamp as a version 2 frame stores it: an instant and an offset, turned into a
/// calendar date only when asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StoredTime {
    seconds: i64,
    nanos: u32,
    offset: UtcOffset,
}

impl StoredTime {
    /// The first and last Unix second a timestamp may have, in UTC and in its own offset
    /// (years -9999 to 9999, the range of [`OffsetDateTime`]).
    const MIN_SECONDS: i64 = -377_705_116_800;
    const MAX_SECONDS: i64 = 253_402_300_799;

    fn of(timestamp: &OffsetDateTime) -> StoredTime {
        StoredTime {
            seconds: timestamp.unix_timestamp(),
            nanos: timestamp.nanosecond(),
            offset: timestamp.offset(),
        }
    }

    /// Checks the parts the way building the timestamp would, without building it.
    pub(super) fn new(
        seconds: i64,
        nanos: u32,
        offset_seconds: i32,
        field: &'static str,
    ) -> Result<StoredTime, Error> {
        let out_of_range = || Error::TimestampOutOfRange { field };
        let offset = UtcOffset::from_whole_seconds(offset_seconds).map_err(|_| out_of_range())?;
        let range = StoredTime::MIN_SECONDS..=StoredTime::MAX_SECONDS;
        let local = seconds.checked_add(i64::from(offset_seconds));
        if nanos >= 1_000_000_000
            || !range.contains(&seconds)
            || !local.is_some_and(|local| range.contains(&local))
        {
            return Err(out_of_range());
        }
        Ok(StoredTime {
            seconds,
            nanos,
            offset,
        })
    }

    /// Appends the reference text form ([`super::timestamp`]) without building a date.
    pub(super) fn write_reference_text(&self, out: &mut String) {
        super::timestamp::write_reference_text_of(
            self.seconds,
            self.nanos,
            self.offset.whole_seconds(),
            out,
        );
    }

    #[inline]
    fn unix_nanos(&self) -> i128 {
        i128::from(self.seconds) * 1_000_000_000 + i128::from(self.nanos)
    }

    #[inline]
    fn timestamp(&self) -> OffsetDateTime {
        // One calendar computation: the local wall-clock time, then its offset. `new` checked
        // both the instant and the local time against the range, so the fallback is never
        // taken.
        let local = self
            .seconds
            .saturating_add(i64::from(self.offset.whole_seconds()));
        OffsetDateTime::from_unix_timestamp(local)
            .ok()
            .and_then(|wall| wall.replace_nanosecond(self.nanos).ok())
            .map_or(OffsetDateTime::UNIX_EPOCH, |wall| {
                wall.replace_offset(self.offset)
            })
    }
}

/// Parses one of a record's maps from its JSON text (the map is level 1).
fn parse_map(text: &str, field: &'static str) -> Result<JsonMap, Error> {
    if super::json_nesting_exceeds(text.as_bytes(), MAX_JSON_DEPTH) {
        return Err(Error::NestingTooDeep {
            max: MAX_JSON_DEPTH,
        });
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    // Safe to lift serde_json's own limit: the nesting check above bounded the depth.
    deserializer.disable_recursion_limit();
    let value = serde::Deserialize::deserialize(&mut deserializer)
        .and_then(|value| deserializer.end().map(|()| value))
        .map_err(|source| Error::InvalidField {
            field,
            source: Box::new(Error::InvalidJson { source }),
        })?;
    let map = php_map(value).map_err(|_| Error::FieldNotObject { field })?;
    // The text must be exactly what the writer makes of the map, so that the view and the
    // record always export the same line (a duplicate key, another number, escape or space
    // form would make them differ).
    let mut again = String::with_capacity(text.len());
    canonical::write_record_map(&mut again, &map);
    if again != text {
        return Err(Error::MalformedFrame {
            reason: format!(
                "field `{field}` is not the text this store writes for its map (a duplicate \
                 key, or another number, escape or spacing form)"
            ),
        });
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    fn record() -> Record {
        let map = |value: serde_json::Value| php_map(value).unwrap_or_default();
        Record::new(RecordFields {
            id: RecordId::new("id-1").unwrap(),
            artifact_version: "1".into(),
            artifact_name: "event.raw".into(),
            capture_timestamp: datetime!(2024-01-15 12:00:00.123456789 +02:00),
            stored_at: datetime!(2024-01-15 10:00:01 UTC),
            append_sequence: 7,
            connection_generation: Some("3".into()),
            session_id: None,
            job_uuid: Some("job".into()),
            event_name: Some("CUSTOM".into()),
            capture_path: None,
            correlation_ids: map(json!({"replay_session_id": "r"})),
            runtime_flags: map(json!({"pbx_node_slug": "n", "worker_session_id": "w"})),
            payload: map(json!({"obj": {}, "list": [], "k": "v"})),
            checksum: "c".into(),
            tags: JsonMap::new(),
        })
        .unwrap()
    }

    #[test]
    fn a_view_of_an_owned_record_round_trips_and_writes_the_same_line() {
        let record = record();
        let texts = MapTexts::of(&record);
        let view = record.view(&texts);
        assert_eq!(view.to_record().unwrap(), record);
        assert_eq!(view.payload_json(), r#"{"obj":{},"list":[],"k":"v"}"#);
        assert_eq!(view.tags_json(), "[]");
        assert_eq!(view.replay_session_id(), Some("r"));
        let mut line = String::new();
        view.append_ndjson_line(&mut line);
        let mut expected = String::new();
        ndjson::append_ndjson_line(&record, &mut expected);
        assert_eq!(line, expected);
    }

    #[test]
    fn stored_times_accept_exactly_the_range_of_offset_date_time() {
        let first = time::PrimitiveDateTime::MIN.assume_utc();
        let last = time::PrimitiveDateTime::MAX.assume_utc();
        assert_eq!(first.unix_timestamp(), StoredTime::MIN_SECONDS);
        assert_eq!(last.unix_timestamp(), StoredTime::MAX_SECONDS);
        for (seconds, nanos, offset) in [
            (StoredTime::MIN_SECONDS, 0, 0),
            (StoredTime::MAX_SECONDS, 999_999_999, 0),
            (StoredTime::MAX_SECONDS - 7200, 5, 7200),
            (0, 123, -93_599),
        ] {
            let time = StoredTime::new(seconds, nanos, offset, "t").unwrap();
            let built = time.timestamp();
            assert_eq!(built.unix_timestamp(), seconds);
            assert_eq!(built.nanosecond(), nanos);
            assert_eq!(built.offset().whole_seconds(), offset);
        }
        for (seconds, nanos, offset) in [
            (StoredTime::MIN_SECONDS - 1, 0, 0),
            (StoredTime::MAX_SECONDS + 1, 0, 0),
            (StoredTime::MAX_SECONDS, 0, 1),
            (StoredTime::MIN_SECONDS, 0, -1),
            (0, 1_000_000_000, 0),
            (0, 0, 93_600),
            (i64::MAX, 0, 60),
        ] {
            assert!(StoredTime::new(seconds, nanos, offset, "t").is_err());
        }
    }

    #[test]
    fn a_stored_time_builds_the_timestamp_time_itself_converts_to() {
        fn agrees(seconds: i64, nanos: u32, offset: i32) -> bool {
            let span = StoredTime::MAX_SECONDS - StoredTime::MIN_SECONDS;
            let seconds = StoredTime::MIN_SECONDS + seconds.rem_euclid(span);
            let (nanos, offset) = (nanos % 1_000_000_000, offset % 93_600);
            let Ok(stored) = StoredTime::new(seconds, nanos, offset, "t") else {
                return true;
            };
            let expected = OffsetDateTime::from_unix_timestamp(seconds)
                .and_then(|utc| utc.replace_nanosecond(nanos))
                .ok()
                .and_then(|utc| utc.checked_to_offset(UtcOffset::from_whole_seconds(offset).ok()?));
            // Equality of `OffsetDateTime`s compares instants: compare the parts too.
            let parts = |t: OffsetDateTime| (t.date(), t.time(), t.offset());
            expected.map(parts) == Some(parts(stored.timestamp()))
        }
        quickcheck::QuickCheck::new()
            .tests(20_000)
            .quickcheck(agrees as fn(i64, u32, i32) -> bool);
    }

    #[test]
    fn a_derived_identity_that_disagrees_with_the_maps_is_reported() {
        let record = record();
        let mut flags = record.runtime_flags().clone();
        flags.insert("pbx_node_slug".into(), "other".into());
        let mut fields = record.clone().into_fields();
        fields.runtime_flags = flags;
        let other = Record::new(fields).unwrap();
        let mut texts = MapTexts::of(&record);
        texts.runtime_flags = MapTexts::of(&other).runtime_flags;
        let view = record.view(&texts);
        assert!(matches!(
            view.to_record(),
            Err(Error::InconsistentFrame {
                field: "pbx_node_slug"
            })
        ));
    }

    #[test]
    fn map_texts_that_are_not_maps_are_reported_by_field() {
        let record = record();
        let mut texts = MapTexts::of(&record);
        texts.payload = "\"text\"".into();
        assert!(matches!(
            record.view(&texts).to_record(),
            Err(Error::FieldNotObject { field: "payload" })
        ));
        texts.payload = "{\"a\":".into();
        assert!(matches!(
            record.view(&texts).payload(),
            Err(Error::InvalidField { .. })
        ));
    }
}
