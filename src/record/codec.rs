//! How is a record stored inside a log frame?
//!
//! A frame body starts with a format-version byte. Version 2 ([`FORMAT_VERSION`], written
//! by this build) is specified in `format/record.md`: a 112-byte fixed header (the version,
//! both timestamps as Unix seconds, nanoseconds and offset, the append sequence and sixteen
//! field lengths) followed by the fields' bytes: the nine record strings, the three identity
//! values derived from the maps, and the four maps as the JSON text an NDJSON export writes.
//! [`RecordView::decode`] reads it in place, without allocating; [`Record::decode`] builds
//! an owned record from it.
//!
//! Version 1 ([`FORMAT_V1`]), written by earlier builds and still read, is the record as a
//! MessagePack array (written with `rmp-serde`), fields in this order:
//!
//! | # | Field | MessagePack type |
//! |---|---|---|
//! | 0 | `id` | str |
//! | 1 | `artifact_version` | str |
//! | 2 | `artifact_name` | str |
//! | 3 | `capture_timestamp` | timestamp array (below) |
//! | 4 | `stored_at` | timestamp array |
//! | 5 | `append_sequence` | uint |
//! | 6-10 | `connection_generation`, `session_id`, `job_uuid`, `event_name`, `capture_path` | str or nil |
//! | 11-14 | `correlation_ids`, `runtime_flags`, `payload`, `checksum` (str) | map, map, map, str |
//! | 15 | `tags` | map |
//!
//! A timestamp is the array `[year, ordinal day, hour, minute, second, nanosecond,
//! offset seconds]` in the timestamp's own offset, so precision and offset survive exactly.
//! JSON values map to MessagePack natively: null -> nil, booleans, integers as int/uint,
//! floats as float 64 (bit-exact, `-0.0` included), strings, lists as arrays, maps as maps
//! with string keys in insertion order.
//!
//! Decoding rejects an unknown version byte ([`Error::UnsupportedFormatVersion`], decision
//! C4), trailing bytes, and (version 1) non-finite floats, non-string map keys, binary and
//! extension values; JSON nested deeper than [`MAX_JSON_DEPTH`] is refused, and the record
//! is validated like [`Record::new`]. Pre-allocation is capped so a forged length cannot
//! reserve memory the frame does not contain.

use std::cell::RefCell;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::canonical::{self, KeyOrder};
use super::view::{
    ARTIFACT_NAME, ARTIFACT_VERSION, CHECKSUM, CORRELATION_IDS, FIELDS, Fields, ID, MapTexts,
    RecordView, StoredTime,
};
use super::{
    Envelope, Error, JsonMap, MAX_JSON_DEPTH, Record, RecordFields, RecordId, checksum, identity,
};

/// The binary record format version this build writes (it also reads version 1).
pub const FORMAT_VERSION: u8 = 2;

/// The first binary record format version (MessagePack), still read.
pub(crate) const FORMAT_V1: u8 = 1;

/// Bytes of a version 2 frame before its fields.
pub(crate) const V2_HEADER_LEN: usize = 112;

/// The length a version 2 frame gives an absent optional field.
const ABSENT: u32 = u32::MAX;

/// The sixteen fields of a version 2 frame, in order, and whether each may be absent.
static V2_FIELDS: [(&str, bool); 16] = [
    ("id", false),
    ("artifact_version", false),
    ("artifact_name", false),
    ("connection_generation", true),
    ("session_id", true),
    ("job_uuid", true),
    ("event_name", true),
    ("capture_path", true),
    ("checksum", false),
    ("replay_session_id", true),
    ("pbx_node_slug", true),
    ("worker_session_id", true),
    ("correlation_ids", false),
    ("runtime_flags", false),
    ("payload", false),
    ("tags", false),
];

/// A bit per field of [`V2_FIELDS`] that may be absent (read as a mask: the decoder's loop
/// then copies no name).
const V2_OPTIONAL: u16 = {
    let mut mask = 0u16;
    let mut index = 0;
    while index < V2_FIELDS.len() {
        if V2_FIELDS[index].1 {
            mask |= 1 << index;
        }
        index += 1;
    }
    mask
};

/// Upper bound on elements reserved ahead of reading them.
const PREALLOCATION_MAX: usize = 256;

impl Record {
    /// Appends the binary frame body of this record (format version 2) to `out`.
    ///
    /// # Errors
    ///
    /// [`Error::FieldTooLong`] if a field is 4 GiB or longer; `out` is then restored to its
    /// previous length.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let start = out.len();
        let result = self.encode_v2(out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_v2(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        with_scratch(|scratch| self.encode_v2_with(&mut scratch.maps, out))
    }

    fn encode_v2_with(&self, maps_text: &mut String, out: &mut Vec<u8>) -> Result<(), Error> {
        let maps = MapsText::of(
            maps_text,
            [
                self.correlation_ids(),
                self.runtime_flags(),
                self.payload(),
                self.tags(),
            ],
        );
        RecordText {
            id: self.id(),
            artifact_version: self.artifact_version(),
            artifact_name: self.artifact_name(),
            capture_timestamp: self.capture_timestamp(),
            stored_at: self.stored_at(),
            append_sequence: self.append_sequence(),
            connection_generation: self.connection_generation(),
            session_id: self.session_id(),
            job_uuid: self.job_uuid(),
            event_name: self.event_name(),
            capture_path: self.capture_path(),
            checksum: self.checksum(),
            replay_session_id: self.replay_session_id(),
            pbx_node_slug: self.pbx_node_slug(),
            worker_session_id: self.worker_session_id(),
            correlation_ids: maps.get(0),
            runtime_flags: maps.get(1),
            payload: maps.get(2),
            tags: maps.get(3),
        }
        .write(out)
    }

    /// Encodes this record into a new frame body (see [`Record::encode_into`]).
    ///
    /// # Errors
    ///
    /// As [`Record::encode_into`].
    pub fn encode(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out)?;
        Ok(out)
    }

    /// Decodes a record from a complete binary frame body.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyFrame`], [`Error::UnsupportedFormatVersion`]; for version 2 the errors
    /// of [`RecordView::decode`] and [`RecordView::to_record`]; for version 1
    /// [`Error::Decode`] for malformed MessagePack or disallowed values,
    /// [`Error::TrailingBytes`], [`Error::TimestampOutOfRange`]; and any validation error of
    /// [`Record::new`].
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        match bytes.first() {
            Some(&FORMAT_VERSION) => RecordView::parse_v2(bytes)?.to_record(),
            _ => Record::decode_v1(bytes),
        }
    }

    /// Decodes a version 1 (MessagePack) frame body.
    fn decode_v1(bytes: &[u8]) -> Result<Self, Error> {
        let (&version, mut body) = bytes.split_first().ok_or(Error::EmptyFrame)?;
        if version != FORMAT_V1 {
            return Err(Error::UnsupportedFormatVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let mut deserializer = rmp_serde::Deserializer::new(&mut body);
        let wire = WireRecord::deserialize(&mut deserializer)
            .map_err(|source| Error::Decode { source })?;
        if !body.is_empty() {
            return Err(Error::TrailingBytes { count: body.len() });
        }
        Record::new(RecordFields {
            id: RecordId::new(wire.id)?,
            artifact_version: wire.artifact_version,
            artifact_name: wire.artifact_name,
            capture_timestamp: wire.capture_timestamp.into_timestamp("capture_timestamp")?,
            stored_at: wire.stored_at.into_timestamp("stored_at")?,
            append_sequence: wire.append_sequence,
            connection_generation: wire.connection_generation,
            session_id: wire.session_id,
            job_uuid: wire.job_uuid,
            event_name: wire.event_name,
            capture_path: wire.capture_path,
            correlation_ids: wire.correlation_ids.0,
            runtime_flags: wire.runtime_flags.0,
            payload: wire.payload.0,
            checksum: wire.checksum,
            tags: wire.tags.0,
        })
    }
}

/// Where a version 2 header holds the append sequence.
const V2_SEQUENCE_AT: usize = 40;

impl Envelope {
    /// Appends the frame body of the record this envelope becomes with `id`, `stored_at`
    /// and `append_sequence`: byte for byte what [`Record::from_envelope`] followed by
    /// [`Record::encode_into`] writes, validated the same way, without building the record.
    ///
    /// # Errors
    ///
    /// As [`Record::from_envelope`] and [`Record::encode_into`]; `out` is then restored to
    /// its previous length.
    pub fn encode_record_into(
        &self,
        id: &RecordId,
        stored_at: &OffsetDateTime,
        append_sequence: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        with_scratch(|scratch| {
            self.encode_record_with(scratch, id, stored_at, append_sequence, out)
        })
    }

    fn encode_record_with(
        &self,
        scratch: &mut Scratch,
        id: &RecordId,
        stored_at: &OffsetDateTime,
        append_sequence: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        // The payload's depth is checked once, before its checksum text is written; the
        // errors come in the order `Record::from_envelope` returns them.
        super::check_map_depth(&self.payload)?;
        let checksum = checksum::compute_with(
            &mut scratch.canonical,
            &self.artifact_name,
            &self.artifact_version,
            &self.capture_timestamp,
            |out| canonical::write_map(out, &self.payload, KeyOrder::PhpKsort),
        );
        let tags = JsonMap::new();
        super::validate(
            append_sequence,
            &self.artifact_version,
            &self.artifact_name,
            &checksum,
            &[&self.correlation_ids, &self.runtime_flags, &tags],
        )?;
        let maps = MapsText::of(
            &mut scratch.maps,
            [
                &self.correlation_ids,
                &self.runtime_flags,
                &self.payload,
                &tags,
            ],
        );
        let start = out.len();
        let result = RecordText {
            id,
            artifact_version: &self.artifact_version,
            artifact_name: &self.artifact_name,
            capture_timestamp: &self.capture_timestamp,
            stored_at,
            append_sequence,
            connection_generation: self.connection_generation.as_deref(),
            session_id: self.session_id.as_deref(),
            job_uuid: self.job_uuid.as_deref(),
            event_name: self.event_name.as_deref(),
            capture_path: self.capture_path.as_deref(),
            checksum: &checksum,
            replay_session_id: identity::replay_session_id(
                &self.correlation_ids,
                &self.runtime_flags,
            ),
            pbx_node_slug: identity::pbx_node_slug(&self.runtime_flags),
            worker_session_id: identity::worker_session_id(&self.runtime_flags),
            correlation_ids: maps.get(0),
            runtime_flags: maps.get(1),
            payload: maps.get(2),
            tags: maps.get(3),
        }
        .write(out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }
}

/// Text buffers a thread reuses from one record's encoding to the next.
#[derive(Default)]
struct Scratch {
    /// The checksum's input.
    canonical: String,
    /// The four maps' stored texts ([`MapsText`]).
    maps: String,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Scratch capacity kept for the next record; a larger record's buffers are freed.
const SCRATCH_KEPT: usize = 1 << 20;

/// Runs `encode` with this thread's scratch buffers.
fn with_scratch<T>(encode: impl FnOnce(&mut Scratch) -> T) -> T {
    SCRATCH.with_borrow_mut(|scratch| {
        let result = encode(scratch);
        if scratch.canonical.capacity() + scratch.maps.capacity() > SCRATCH_KEPT {
            *scratch = Scratch::default();
        }
        result
    })
}

/// The stored JSON texts of a record's four maps (correlation ids, runtime flags, payload,
/// tags), one after the other in one buffer.
struct MapsText<'a> {
    text: &'a str,
    ends: [usize; 4],
}

impl MapsText<'_> {
    /// Writes the texts into `text` (its earlier content is dropped).
    fn of<'a>(text: &'a mut String, maps: [&JsonMap; 4]) -> MapsText<'a> {
        text.clear();
        let mut ends = [0usize; 4];
        for (end, map) in ends.iter_mut().zip(maps) {
            super::canonical::write_record_map(text, map);
            *end = text.len();
        }
        MapsText { text, ends }
    }

    /// The text of map `index` (0 to 3).
    fn get(&self, index: usize) -> &str {
        let start = index.checked_sub(1).map_or(0, |i| self.ends[i]);
        self.text.get(start..self.ends[index]).unwrap_or_default()
    }
}

/// A record's fields with its four maps already written as the JSON text a version 2 frame
/// stores (the text `canonical::write_record_map` writes for each map): what
/// [`Record::encode_into`] writes, and what writers that build that text directly instead
/// of building maps hand to `EncodedRecord::new`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RecordText<'a> {
    /// The record id.
    pub(crate) id: &'a RecordId,
    /// `artifact_version`.
    pub(crate) artifact_version: &'a str,
    /// `artifact_name`.
    pub(crate) artifact_name: &'a str,
    /// `capture_timestamp`.
    pub(crate) capture_timestamp: &'a OffsetDateTime,
    /// `stored_at`.
    pub(crate) stored_at: &'a OffsetDateTime,
    /// `append_sequence` (it can be changed later: [`EncodedRecord::set_append_sequence`]).
    pub(crate) append_sequence: u64,
    /// `connection_generation`.
    pub(crate) connection_generation: Option<&'a str>,
    /// `session_id`.
    pub(crate) session_id: Option<&'a str>,
    /// `job_uuid`.
    pub(crate) job_uuid: Option<&'a str>,
    /// `event_name`.
    pub(crate) event_name: Option<&'a str>,
    /// `capture_path`.
    pub(crate) capture_path: Option<&'a str>,
    /// The checksum of the record ([`super::checksum`]).
    pub(crate) checksum: &'a str,
    /// The identity derived from the maps ([`super::identity`]): the replay session id.
    pub(crate) replay_session_id: Option<&'a str>,
    /// The derived PBX node slug.
    pub(crate) pbx_node_slug: Option<&'a str>,
    /// The derived worker session id.
    pub(crate) worker_session_id: Option<&'a str>,
    /// `correlation_ids` as stored JSON text.
    pub(crate) correlation_ids: &'a str,
    /// `runtime_flags` as stored JSON text.
    pub(crate) runtime_flags: &'a str,
    /// `payload` as stored JSON text.
    pub(crate) payload: &'a str,
    /// `tags` as stored JSON text.
    pub(crate) tags: &'a str,
}

impl RecordText<'_> {
    /// Writes the version 2 frame body: the header, then the sixteen fields.
    fn write(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let fields: [Option<&str>; 16] = [
            Some(self.id.as_str()),
            Some(self.artifact_version),
            Some(self.artifact_name),
            self.connection_generation,
            self.session_id,
            self.job_uuid,
            self.event_name,
            self.capture_path,
            Some(self.checksum),
            self.replay_session_id,
            self.pbx_node_slug,
            self.worker_session_id,
            Some(self.correlation_ids),
            Some(self.runtime_flags),
            Some(self.payload),
            Some(self.tags),
        ];
        out.reserve(V2_HEADER_LEN + fields.iter().flatten().map(|f| f.len()).sum::<usize>());
        out.extend_from_slice(&[FORMAT_VERSION, 0, 0, 0]);
        for timestamp in [self.capture_timestamp, self.stored_at] {
            out.extend_from_slice(&timestamp.offset().whole_seconds().to_le_bytes());
            out.extend_from_slice(&timestamp.unix_timestamp().to_le_bytes());
            out.extend_from_slice(&timestamp.nanosecond().to_le_bytes());
        }
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.append_sequence.to_le_bytes());
        for ((name, _), field) in V2_FIELDS.iter().zip(&fields) {
            let length = match field {
                None => ABSENT,
                Some(text) => u32::try_from(text.len())
                    .ok()
                    .filter(|length| *length != ABSENT)
                    .ok_or_else(|| Error::FieldTooLong {
                        field: name,
                        bytes: text.len(),
                    })?,
            };
            out.extend_from_slice(&length.to_le_bytes());
        }
        for text in fields.iter().flatten() {
            out.extend_from_slice(text.as_bytes());
        }
        Ok(())
    }
}

/// A record already encoded as a version 2 frame body, ready to append as it is
/// ([`crate::store::ArtifactStore::append_encoded`]).
///
/// It always holds a valid record: it is made from one ([`EncodedRecord::of`]) or by
/// capture's writer (`capture::CaptureArtifact::encode`), whose bytes the tests
/// compare with the record built from maps. That writer promises what
/// [`RecordView::to_record`] checks on every read (each map text is the stored text of its
/// map, the identity fields are the ones derived from the maps); `new` checks the rest, as
/// [`Record::new`] does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EncodedRecord {
    bytes: Vec<u8>,
}

impl EncodedRecord {
    /// Encodes a record.
    ///
    /// # Errors
    ///
    /// As [`Record::encode_into`].
    pub fn of(record: &Record) -> Result<EncodedRecord, Error> {
        Ok(EncodedRecord {
            bytes: record.encode()?,
        })
    }

    /// Encodes the fields.
    ///
    /// # Errors
    ///
    /// [`Error::SequenceOutOfRange`], [`Error::BlankField`] as [`Record::new`];
    /// [`Error::FieldTooLong`].
    #[cfg(feature = "capture")]
    pub(crate) fn new(text: &RecordText<'_>) -> Result<EncodedRecord, Error> {
        check_sequence(text.append_sequence)?;
        for (field, value) in [
            ("artifact_version", text.artifact_version),
            ("artifact_name", text.artifact_name),
            ("checksum", text.checksum),
        ] {
            if super::is_blank(value) {
                return Err(Error::BlankField { field });
            }
        }
        let mut bytes = Vec::new();
        text.write(&mut bytes)?;
        Ok(EncodedRecord { bytes })
    }

    /// The frame body.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The record's append sequence.
    #[must_use]
    pub fn append_sequence(&self) -> u64 {
        self.bytes
            .get(V2_SEQUENCE_AT..V2_SEQUENCE_AT + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    }

    /// Gives the record another append sequence (a writer places records after the store's
    /// last one only when it appends them).
    ///
    /// # Errors
    ///
    /// [`Error::SequenceOutOfRange`] as [`Record::new`].
    pub fn set_append_sequence(&mut self, sequence: u64) -> Result<(), Error> {
        check_sequence(sequence)?;
        if let Some(slot) = self.bytes.get_mut(V2_SEQUENCE_AT..V2_SEQUENCE_AT + 8) {
            slot.copy_from_slice(&sequence.to_le_bytes());
        }
        Ok(())
    }

    /// Views the record.
    ///
    /// # Errors
    ///
    /// As [`RecordView::decode`] (only for text its writer broke).
    pub fn view(&self) -> Result<RecordView<'_>, Error> {
        RecordView::parse_v2(&self.bytes)
    }
}

fn check_sequence(sequence: u64) -> Result<(), Error> {
    if sequence == 0 || i64::try_from(sequence).is_err() {
        return Err(Error::SequenceOutOfRange {
            sequence: i128::from(sequence),
        });
    }
    Ok(())
}

/// Where a view of a version 1 frame lives: the decoded record and its maps' texts.
#[derive(Debug, Default)]
pub struct DecodeBuffer {
    owned: Option<(Record, MapTexts)>,
}

impl<'a> RecordView<'a> {
    /// Views the record in a frame body of either version. A version 2 body is read in
    /// place; a version 1 body is decoded into `buffer` and viewed there.
    ///
    /// The maps' texts are not parsed here: [`RecordView::to_record`] (and `verify`) parse
    /// them. Every other field is checked as [`Record::new`] would.
    ///
    /// # Errors
    ///
    /// [`Error::EmptyFrame`], [`Error::UnsupportedFormatVersion`],
    /// [`Error::MalformedFrame`] naming what breaks the layout (lengths, reserved bytes,
    /// UTF-8, an absent required field, a map text that does not start like a map),
    /// [`Error::TimestampOutOfRange`], [`Error::SequenceOutOfRange`], [`Error::BlankField`];
    /// for version 1 the errors of [`Record::decode`].
    #[inline]
    pub fn decode(bytes: &'a [u8], buffer: &'a mut DecodeBuffer) -> Result<RecordView<'a>, Error> {
        match bytes.first() {
            Some(&FORMAT_VERSION) => RecordView::parse_v2(bytes),
            _ => {
                let record = Record::decode_v1(bytes)?;
                let texts = MapTexts::of(&record);
                let (record, texts) = buffer.owned.insert((record, texts));
                Ok(record.view(texts))
            }
        }
    }

    /// The id bytes of a stored record, read from a version 2 frame's header and first field
    /// alone; `None` for a version 1 frame or a body too short to hold them. Nothing else is
    /// checked: for a caller that compares ids and decodes only the record it keeps.
    pub(crate) fn stored_id(bytes: &[u8]) -> Option<&[u8]> {
        if bytes.first() != Some(&FORMAT_VERSION) {
            return None;
        }
        let length = bytes.get(48..52)?.try_into().ok().map(u32::from_le_bytes)?;
        bytes.get(V2_HEADER_LEN..V2_HEADER_LEN.checked_add(usize::try_from(length).ok()?)?)
    }

    /// Reads a version 2 frame body in place (see `format/record.md`).
    #[inline]
    pub(crate) fn parse_v2(bytes: &'a [u8]) -> Result<RecordView<'a>, Error> {
        let malformed = |reason: String| Error::MalformedFrame { reason };
        let header: &[u8; V2_HEADER_LEN] = bytes.first_chunk().ok_or_else(|| {
            malformed(format!("{} bytes is shorter than the header", bytes.len()))
        })?;
        let u32_at = |at: usize| {
            header
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u32::from_le_bytes)
        };
        let u64_at = |at: usize| {
            header
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        if header.get(1..4) != Some(&[0, 0, 0][..]) || u32_at(36) != 0 {
            return Err(malformed("reserved header bytes are not zero".into()));
        }
        let timestamp = |at: usize, field: &'static str| {
            StoredTime::new(
                u64_at(at + 4).cast_signed(),
                u32_at(at + 12),
                u32_at(at).cast_signed(),
                field,
            )
        };
        let capture_timestamp = timestamp(4, "capture_timestamp")?;
        let stored_at = timestamp(20, "stored_at")?;
        let append_sequence = u64_at(40);
        if append_sequence == 0 || i64::try_from(append_sequence).is_err() {
            return Err(Error::SequenceOutOfRange {
                sequence: i128::from(append_sequence),
            });
        }
        let body = bytes.get(V2_HEADER_LEN..).unwrap_or_default();
        let name = |index: usize| V2_FIELDS.get(index).map_or("?", |(name, _)| *name);
        let (ends, absent) = field_ends(header, body.len()).map_err(|(index, absent)| {
            let name = name(index);
            if absent {
                malformed(format!("required field `{name}` is absent"))
            } else {
                malformed(format!("field `{name}` runs past the frame's end"))
            }
        })?;
        let end = ends.last().map_or(0, |end| *end as usize);
        if end != body.len() {
            return Err(Error::TrailingBytes {
                count: body.len() - end,
            });
        }
        // One check of the whole text, then each field must start and end on a character.
        let not_utf8 = |at: usize| {
            let index = ends.iter().position(|end| *end as usize > at).unwrap_or(0);
            malformed(format!("field `{}` is not UTF-8", name(index)))
        };
        let text =
            simdutf8::compat::from_utf8(body).map_err(|error| not_utf8(error.valid_up_to()))?;
        if let Some(end) = ends
            .iter()
            .find(|end| !text.is_char_boundary(**end as usize))
        {
            return Err(not_utf8(*end as usize));
        }
        // Required texts must not be blank, and maps' texts must be maps (read from the spans
        // directly: cheaper than through the view's accessors).
        let span = |index: usize| {
            let start = index.checked_sub(1).map_or(0, |before| ends[before]);
            body.get(start as usize..ends[index] as usize)
                .unwrap_or_default()
        };
        for index in [ID, ARTIFACT_VERSION, ARTIFACT_NAME, CHECKSUM] {
            if super::is_blank_bytes(span(index)) {
                return Err(Error::BlankField { field: name(index) });
            }
        }
        for index in CORRELATION_IDS..FIELDS {
            if !matches!(span(index).first(), Some(b'{' | b'[')) {
                let name = name(index);
                return Err(malformed(format!("field `{name}` is not a json map")));
            }
        }
        let view = RecordView {
            fields: Fields::Frame { text, ends, absent },
            capture_timestamp,
            stored_at,
            append_sequence,
        };
        Ok(view)
    }
}

/// Where each field of a version 2 frame whose body holds `body_len` bytes ends, and which are
/// absent, from the lengths in its `header`; the first field that is absent but required
/// (`true`) or runs past the body (`false`) otherwise. One pass without branches: frames are
/// valid far more often than not, so the checks are made on the sums.
#[inline]
fn field_ends(
    header: &[u8; V2_HEADER_LEN],
    body_len: usize,
) -> Result<([u32; FIELDS], u16), (usize, bool)> {
    let (lengths, _) = header.get(48..).unwrap_or_default().as_chunks::<4>();
    let mut ends = [0u32; FIELDS];
    let (mut absent, mut end) = (0u16, 0u64);
    for (index, (slot, length)) in ends.iter_mut().zip(lengths).enumerate() {
        let length = u32::from_le_bytes(*length);
        let is_absent = length == ABSENT;
        absent |= u16::from(is_absent) << index;
        end += u64::from(if is_absent { 0 } else { length });
        // Exact once the last end passes the check below, which bounds every end.
        *slot = end as u32;
    }
    let missing = absent & !V2_OPTIONAL;
    if missing == 0 && end <= body_len as u64 {
        return Ok((ends, absent));
    }
    // The first field at fault, in field order.
    let mut end = 0u64;
    for (index, length) in lengths.iter().take(FIELDS).enumerate() {
        let length = u32::from_le_bytes(*length);
        if missing & (1 << index) != 0 {
            return Err((index, true));
        }
        end += u64::from(if length == ABSENT { 0 } else { length });
        if end > body_len as u64 {
            return Err((index, false));
        }
    }
    Err((0, false))
}

/// The record as read: owned fields in wire order.
#[derive(Deserialize)]
struct WireRecord {
    id: String,
    artifact_version: String,
    artifact_name: String,
    capture_timestamp: WireTimestamp,
    stored_at: WireTimestamp,
    append_sequence: u64,
    connection_generation: Option<String>,
    session_id: Option<String>,
    job_uuid: Option<String>,
    event_name: Option<String>,
    capture_path: Option<String>,
    correlation_ids: WireMap,
    runtime_flags: WireMap,
    payload: WireMap,
    checksum: String,
    tags: WireMap,
}

/// `[year, ordinal, hour, minute, second, nanosecond, offset seconds]`, local to the offset.
#[derive(Deserialize)]
struct WireTimestamp(i32, u16, u8, u8, u8, u32, i32);

impl WireTimestamp {
    fn into_timestamp(self, field: &'static str) -> Result<OffsetDateTime, Error> {
        let Self(year, ordinal, hour, minute, second, nanosecond, offset_seconds) = self;
        let out_of_range = |_| Error::TimestampOutOfRange { field };
        let date = Date::from_ordinal_date(year, ordinal).map_err(out_of_range)?;
        let time = Time::from_hms_nano(hour, minute, second, nanosecond).map_err(out_of_range)?;
        let offset = UtcOffset::from_whole_seconds(offset_seconds).map_err(out_of_range)?;
        Ok(PrimitiveDateTime::new(date, time).assume_offset(offset))
    }
}

/// A record map read through [`JsonVisitor`] at level 1.
struct WireMap(JsonMap);

impl<'de> Deserialize<'de> for WireMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match deserializer.deserialize_map(JsonVisitor { level: 1 })? {
            Value::Object(map) => Ok(Self(map)),
            _ => Err(de::Error::custom("record map field is not a map")),
        }
    }
}

/// Reads one JSON value found at `level` (a record map is level 1).
#[derive(Clone, Copy)]
struct JsonSeed {
    level: usize,
}

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(JsonVisitor { level: self.level })
    }
}

/// Builds a JSON value, rejecting what JSON cannot hold and nesting beyond the limit.
struct JsonVisitor {
    level: usize,
}

impl JsonVisitor {
    fn check_container<E: de::Error>(&self) -> Result<(), E> {
        if self.level > MAX_JSON_DEPTH {
            return Err(E::custom(format_args!(
                "json value is nested deeper than {MAX_JSON_DEPTH} levels"
            )));
        }
        Ok(())
    }
}

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Value;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a json value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Value, E> {
        Ok(Value::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Value, E> {
        Ok(Value::Number(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Value, E> {
        Number::from_f64(value)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format_args!("non-finite float {value} in json value")))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Value, E> {
        Ok(Value::String(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Value, E> {
        Ok(Value::String(value))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut sequence: A) -> Result<Value, A::Error> {
        self.check_container()?;
        let mut items =
            Vec::with_capacity(sequence.size_hint().unwrap_or(0).min(PREALLOCATION_MAX));
        while let Some(item) = sequence.next_element_seed(JsonSeed {
            level: self.level + 1,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Value, A::Error> {
        self.check_container()?;
        let mut map =
            JsonMap::with_capacity(entries.size_hint().unwrap_or(0).min(PREALLOCATION_MAX));
        while let Some(key) = entries.next_key::<String>()? {
            let value = entries.next_value_seed(JsonSeed {
                level: self.level + 1,
            })?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;

    fn record(payload: Value) -> Record {
        let payload = payload.as_object().cloned().unwrap_or_default();
        Record::new(RecordFields {
            id: RecordId::new("id-1").unwrap(),
            artifact_version: "1".into(),
            artifact_name: "event.raw".into(),
            capture_timestamp: datetime!(2024-01-15 12:00:00.123456789 +02:00),
            stored_at: datetime!(2024-01-15 10:00:01 UTC),
            append_sequence: 7,
            connection_generation: None,
            session_id: Some("s".into()),
            job_uuid: None,
            event_name: Some("CHANNEL_CREATE".into()),
            capture_path: None,
            correlation_ids: JsonMap::new(),
            runtime_flags: JsonMap::new(),
            payload,
            checksum: "c".into(),
            tags: JsonMap::new(),
        })
        .unwrap()
    }

    #[test]
    fn frames_start_with_the_format_version() {
        let bytes = record(json!({})).encode().unwrap();
        assert_eq!(bytes.first(), Some(&FORMAT_VERSION));
    }

    #[test]
    fn encode_into_appends_after_existing_bytes() {
        let record = record(json!({"a": 1}));
        let mut out = vec![0xAA, 0xBB];
        record.encode_into(&mut out).unwrap();
        assert_eq!(out.get(..2), Some(&[0xAA, 0xBB][..]));
        assert_eq!(Record::decode(out.get(2..).unwrap()).unwrap(), record);
    }

    #[test]
    fn wire_maps_reject_non_map_values() {
        let mut bytes = vec![0x91]; // fixarray of one element
        bytes.push(0x01);
        let result: Result<WireMap, _> = rmp_serde::from_slice(&bytes);
        assert!(result.is_err());
    }
}
