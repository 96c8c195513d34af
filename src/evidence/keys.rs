//! Which metadata keys carry recovery evidence, and where in a record are they read?
//!
//! [`RecordMetadata`] reads one record through the ordered contexts of reference §7.1-7.2
//! (its docs give the rules); an operation state missing from every context is implied by
//! the artifact name ([`implied_operation_state`]). The keys themselves are named in
//! [`crate::record::keys`]; this module owns their lookup order.

use serde_json::Value;

use crate::record::keys::{
    ALIAS_GENERATION_ID, ALIAS_KIND, ALIAS_POSTURE, ALIAS_PUBLICATION_ID, ALIAS_SEMANTIC,
    ALIAS_STATE, ALIAS_STATUS, BGAPI_JOB_UUID, DRAIN_POSTURE, JOB_UUID, LIFECYCLE_SEMANTIC,
    OPERATION_ID, OPERATION_KIND, OPERATION_STATE, PREPARED_RECOVERY_CONTEXT,
    RECONSTRUCTION_POSTURE, RECOVERY_GENERATION_ID, REPLAY_CONTINUITY_POSTURE, REPLAY_METADATA,
    RETRY_POSTURE, RUNTIME_LIFECYCLE_SEMANTIC_SNAPSHOT, RUNTIME_OPERATION_SNAPSHOT,
    RUNTIME_RECOVERY_SNAPSHOT, RUNTIME_TERMINAL_PUBLICATION_SNAPSHOT, TERMINAL_PUBLICATION_ID,
    TERMINAL_PUBLICATION_STATUS,
};
use crate::record::{JsonMap, Record, is_blank};

/// The payload sub-objects that are general contexts, in lookup order.
pub(crate) const GENERAL_PAYLOAD_CONTEXTS: [&str; 6] = [
    PREPARED_RECOVERY_CONTEXT,
    RUNTIME_RECOVERY_SNAPSHOT,
    RUNTIME_OPERATION_SNAPSHOT,
    RUNTIME_TERMINAL_PUBLICATION_SNAPSHOT,
    RUNTIME_LIFECYCLE_SEMANTIC_SNAPSHOT,
    REPLAY_METADATA,
];

/// The payload sub-objects that are operation contexts, in lookup order (the reader's
/// slots encode them; the tests' oracle reads this list).
#[cfg(test)]
const OPERATION_PAYLOAD_CONTEXTS: [&str; 2] = [RUNTIME_OPERATION_SNAPSHOT, REPLAY_METADATA];

/// The operation state an artifact implies when no context states one: dispatches and the
/// background-job acknowledgement mean `accepted`, completions and replies `completed`.
#[must_use]
pub(crate) fn implied_operation_state(artifact_name: &str) -> Option<&'static str> {
    match artifact_name {
        "api.dispatch" | "bgapi.dispatch" | "bgapi.ack" => Some("accepted"),
        "bgapi.complete" | "api.reply" | "command.reply" => Some("completed"),
        _ => None,
    }
}

/// The values [`RecordMetadata`] extracts with context lookup, in table order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Generation,
    ContinuityPosture,
    RetryPosture,
    DrainPosture,
    ReconstructionPosture,
    OperationId,
    OperationKind,
    BgapiJobUuid,
    OperationState,
}

const FIELDS: usize = 9;

impl Field {
    /// The field a key feeds and the key's rank in that field's key list (0 = canonical).
    fn of_key(key: &str) -> Option<(Field, u8)> {
        Some(match key {
            RECOVERY_GENERATION_ID => (Field::Generation, 0),
            ALIAS_GENERATION_ID => (Field::Generation, 1),
            REPLAY_CONTINUITY_POSTURE => (Field::ContinuityPosture, 0),
            RETRY_POSTURE => (Field::RetryPosture, 0),
            DRAIN_POSTURE => (Field::DrainPosture, 0),
            RECONSTRUCTION_POSTURE => (Field::ReconstructionPosture, 0),
            OPERATION_ID => (Field::OperationId, 0),
            OPERATION_KIND => (Field::OperationKind, 0),
            ALIAS_KIND => (Field::OperationKind, 1),
            BGAPI_JOB_UUID => (Field::BgapiJobUuid, 0),
            JOB_UUID => (Field::BgapiJobUuid, 1),
            OPERATION_STATE => (Field::OperationState, 0),
            ALIAS_STATE => (Field::OperationState, 1),
            _ => return None,
        })
    }

    /// Whether the field is read from the operation contexts only.
    fn is_operation_field(self) -> bool {
        matches!(
            self,
            Field::OperationId | Field::OperationKind | Field::BgapiJobUuid | Field::OperationState
        )
    }
}

/// Context slots in lookup order: the six payload sub-objects of
/// [`GENERAL_PAYLOAD_CONTEXTS`], then runtime flags, correlation ids, payload.
const SLOTS: usize = 9;

/// Whether a slot is also an operation context (`runtime_operation_snapshot`,
/// `replay_metadata`, runtime flags, correlation ids, payload).
fn is_operation_slot(slot: usize) -> bool {
    matches!(slot, 2 | 5..=8)
}

/// The recovery metadata of one record, read through its contexts.
///
/// Recovery metadata (reference §7.1-7.2, decision K7) is read from a fixed, ordered list
/// of *contexts* inside a record; for each context in order, each key of a key list is
/// tried in order, and the first non-blank string wins. So an alias in an earlier context
/// beats the canonical key in a later one.
///
/// - General contexts: the payload's `prepared_recovery_context`,
///   `runtime_recovery_snapshot`, `runtime_operation_snapshot`,
///   `runtime_terminal_publication_snapshot`, `runtime_lifecycle_semantic_snapshot` and
///   `replay_metadata` sub-objects, then `runtime_flags`, `correlation_ids` and finally the
///   whole payload.
/// - Operation contexts: the payload's `runtime_operation_snapshot` and `replay_metadata`,
///   then `runtime_flags`, `correlation_ids` and the whole payload.
///
/// A context that is not a JSON object is skipped (the reference also admits lists, but no
/// key it looks up can match a list index). Values that are not strings, and blank strings,
/// count as absent. Two rules go beyond plain lookup: the operation id and the
/// background-job UUID fall back to the record's top-level `job_uuid`, which counts as
/// absent when blank (decision C9; the reference crashes on it), and an operation state
/// missing from every context is implied by the artifact name (dispatches and the
/// background-job acknowledgement mean `accepted`, completions and replies `completed`).
///
/// Every value is found in one pass over the entries of the record's contexts, in context
/// order, keeping for each value the first context that has it and, within that context,
/// the key that comes first in the value's key list; the result is exactly that of trying
/// each context and each key in order.
#[derive(Clone, Copy, Debug)]
pub struct RecordMetadata<'a> {
    record: &'a Record,
    /// Per field: the slot and key rank it was found with, and the value.
    found: [Option<(usize, u8, &'a str)>; FIELDS],
    terminal_publication: Option<Snapshot<'a>>,
    lifecycle_semantic: Option<Snapshot<'a>>,
}

impl<'a> RecordMetadata<'a> {
    /// Reads the recovery metadata of a record.
    #[must_use]
    pub fn of(record: &'a Record) -> Self {
        let payload = record.payload();
        let mut slots: [Option<&'a JsonMap>; SLOTS] = [None; SLOTS];
        for (key, value) in payload {
            if let Value::Object(map) = value
                && let Some(slot) = GENERAL_PAYLOAD_CONTEXTS
                    .iter()
                    .position(|name| *name == key.as_str())
                && let Some(entry) = slots.get_mut(slot)
            {
                *entry = Some(map);
            }
        }
        slots[6] = Some(record.runtime_flags());
        slots[7] = Some(record.correlation_ids());
        slots[8] = Some(payload);

        let mut metadata = Self {
            record,
            found: [None; FIELDS],
            terminal_publication: None,
            lifecycle_semantic: None,
        };
        for (slot, context) in slots.iter().enumerate() {
            let Some(context) = context else { continue };
            for (key, value) in *context {
                metadata.take(slot, key, value);
            }
        }
        metadata
    }

    fn take(&mut self, slot: usize, key: &str, value: &'a Value) {
        if let Some((field, rank)) = Field::of_key(key) {
            if field.is_operation_field() && !is_operation_slot(slot) {
                return;
            }
            let Value::String(text) = value else { return };
            if is_blank(text) {
                return;
            }
            if let Some(found) = self.found.get_mut(field as usize) {
                let better = match found {
                    None => true,
                    Some((found_slot, found_rank, _)) => *found_slot == slot && rank < *found_rank,
                };
                if better {
                    *found = Some((slot, rank, text));
                }
            }
            return;
        }
        let target = match key {
            RUNTIME_TERMINAL_PUBLICATION_SNAPSHOT => &mut self.terminal_publication,
            RUNTIME_LIFECYCLE_SEMANTIC_SNAPSHOT => &mut self.lifecycle_semantic,
            _ => return,
        };
        if target.is_none() {
            *target = match value {
                Value::Object(map) => Some(Snapshot::Object(map)),
                Value::Array(_) => Some(Snapshot::List),
                _ => None,
            };
        }
    }

    fn get(&self, field: Field) -> Option<&'a str> {
        self.found
            .get(field as usize)
            .copied()
            .flatten()
            .map(|(_, _, text)| text)
    }

    /// The recovery generation id (`recovery_generation_id`, alias `generation_id`).
    #[must_use]
    pub fn recovery_generation_id(&self) -> Option<&'a str> {
        self.get(Field::Generation)
    }

    /// The replay continuity posture.
    #[must_use]
    pub fn replay_continuity_posture(&self) -> Option<&'a str> {
        self.get(Field::ContinuityPosture)
    }

    /// The retry posture.
    #[must_use]
    pub fn retry_posture(&self) -> Option<&'a str> {
        self.get(Field::RetryPosture)
    }

    /// The drain posture.
    #[must_use]
    pub fn drain_posture(&self) -> Option<&'a str> {
        self.get(Field::DrainPosture)
    }

    /// The reconstruction posture.
    #[must_use]
    pub fn reconstruction_posture(&self) -> Option<&'a str> {
        self.get(Field::ReconstructionPosture)
    }

    /// The `operation_id` stated in an operation context, without any fallback.
    #[must_use]
    pub fn stated_operation_id(&self) -> Option<&'a str> {
        self.get(Field::OperationId)
    }

    /// The record's top-level `job_uuid`, absent when blank (decision C9).
    #[must_use]
    pub fn job_uuid(&self) -> Option<&'a str> {
        self.record.job_uuid().filter(|text| !is_blank(text))
    }

    /// The operation id: the stated `operation_id`, else the record's `job_uuid`.
    #[must_use]
    pub fn operation_id(&self) -> Option<&'a str> {
        self.stated_operation_id().or_else(|| self.job_uuid())
    }

    /// The operation kind (`operation_kind`, alias `kind`).
    #[must_use]
    pub fn operation_kind(&self) -> Option<&'a str> {
        self.get(Field::OperationKind)
    }

    /// The background-job UUID (`bgapi_job_uuid`, alias `job_uuid`), else the record's
    /// `job_uuid`.
    #[must_use]
    pub fn bgapi_job_uuid(&self) -> Option<&'a str> {
        self.get(Field::BgapiJobUuid).or_else(|| self.job_uuid())
    }

    /// The operation state (`operation_state`, alias `state`), else the state the artifact
    /// name implies.
    #[must_use]
    pub fn operation_state(&self) -> Option<&'a str> {
        self.get(Field::OperationState)
            .or_else(|| implied_operation_state(self.record.artifact_name()))
    }

    /// The terminal-publication snapshot: the first general context's
    /// `runtime_terminal_publication_snapshot` that is an object or a list.
    #[must_use]
    pub fn terminal_publication_snapshot(&self) -> Option<Snapshot<'a>> {
        self.terminal_publication
    }

    /// The lifecycle-semantic snapshot, found as the terminal-publication one.
    #[must_use]
    pub fn lifecycle_semantic_snapshot(&self) -> Option<Snapshot<'a>> {
        self.lifecycle_semantic
    }
}

/// A snapshot sub-object found in a record. A list counts as a snapshot (the reference
/// cannot tell an empty object from an empty list) but can hold none of the keys.
#[derive(Clone, Copy, Debug)]
pub enum Snapshot<'a> {
    /// A JSON object.
    Object(&'a JsonMap),
    /// A JSON list.
    List,
}

impl<'a> Snapshot<'a> {
    /// The first non-blank string under one of `keys`, tried in order.
    #[must_use]
    pub fn string(&self, keys: &[&str]) -> Option<&'a str> {
        match self {
            Snapshot::Object(map) => lookup(std::iter::once(*map), keys),
            Snapshot::List => None,
        }
    }

    /// The whole snapshot as a map (empty for a list).
    #[must_use]
    pub fn facts(&self) -> JsonMap {
        match self {
            Snapshot::Object(map) => (*map).clone(),
            Snapshot::List => JsonMap::new(),
        }
    }

    /// A terminal publication's id and status.
    #[must_use]
    pub fn publication(&self) -> (Option<&'a str>, Option<&'a str>) {
        (
            self.string(&[TERMINAL_PUBLICATION_ID, ALIAS_PUBLICATION_ID]),
            self.string(&[TERMINAL_PUBLICATION_STATUS, ALIAS_STATUS]),
        )
    }

    /// A lifecycle semantic and its posture.
    #[must_use]
    pub fn lifecycle(&self) -> (Option<&'a str>, Option<&'a str>) {
        (
            self.string(&[LIFECYCLE_SEMANTIC, ALIAS_SEMANTIC]),
            self.string(&[ALIAS_POSTURE, ALIAS_STATE]),
        )
    }
}

/// For each context in order, each key in order: the first non-blank string.
fn lookup<'a>(contexts: impl Iterator<Item = &'a JsonMap>, keys: &[&str]) -> Option<&'a str> {
    for context in contexts {
        for key in keys {
            if let Some(Value::String(text)) = context.get(*key)
                && !is_blank(text)
            {
                return Some(text);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use time::macros::datetime;

    use super::*;
    use crate::record::{RecordFields, RecordId};

    fn map(value: Value) -> JsonMap {
        match value {
            Value::Object(map) => map,
            _ => JsonMap::new(),
        }
    }

    fn stored(name: &str, job: Option<&str>, flags: Value, payload: Value) -> Record {
        Record::new(RecordFields {
            id: RecordId::generate(),
            artifact_version: "1".into(),
            artifact_name: name.into(),
            capture_timestamp: datetime!(2024-01-15 10:00 UTC),
            stored_at: datetime!(2024-01-15 10:00 UTC),
            append_sequence: 1,
            connection_generation: None,
            session_id: None,
            job_uuid: job.map(str::to_owned),
            event_name: None,
            capture_path: None,
            correlation_ids: JsonMap::new(),
            runtime_flags: map(flags),
            payload: map(payload),
            checksum: "x".into(),
            tags: JsonMap::new(),
        })
        .unwrap()
    }

    #[test]
    fn an_alias_in_an_earlier_context_beats_the_key_in_a_later_one() {
        let record = stored(
            "event.raw",
            None,
            json!({"recovery_generation_id": "from-flags"}),
            json!({"prepared_recovery_context": {"generation_id": "from-alias"}}),
        );
        assert_eq!(
            RecordMetadata::of(&record).recovery_generation_id(),
            Some("from-alias")
        );
    }

    #[test]
    fn blank_and_non_string_values_are_absent() {
        let record = stored(
            "event.raw",
            Some("  "),
            json!({"retry_posture": "  ", "drain_posture": 7}),
            json!({"retry_posture": "stable"}),
        );
        let metadata = RecordMetadata::of(&record);
        assert_eq!(metadata.retry_posture(), Some("stable"));
        assert_eq!(metadata.drain_posture(), None);
        assert_eq!(
            metadata.operation_id(),
            None,
            "blank job_uuid is absent (C9)"
        );
        assert_eq!(metadata.bgapi_job_uuid(), None);
    }

    #[test]
    fn operation_identity_falls_back_to_job_uuid_and_state_to_the_artifact() {
        let record = stored("bgapi.ack", Some("job-1"), json!({}), json!({}));
        let metadata = RecordMetadata::of(&record);
        assert_eq!(metadata.operation_id(), Some("job-1"));
        assert_eq!(metadata.stated_operation_id(), None);
        assert_eq!(metadata.bgapi_job_uuid(), Some("job-1"));
        assert_eq!(metadata.operation_state(), Some("accepted"));
    }

    #[test]
    fn prepared_recovery_context_is_not_an_operation_context() {
        let record = stored(
            "event.raw",
            None,
            json!({}),
            json!({"prepared_recovery_context": {"operation_id": "hidden"}}),
        );
        assert_eq!(RecordMetadata::of(&record).operation_id(), None);
    }

    #[test]
    fn implied_states_follow_the_artifact_name() {
        for name in ["api.dispatch", "bgapi.dispatch", "bgapi.ack"] {
            assert_eq!(implied_operation_state(name), Some("accepted"));
        }
        for name in ["bgapi.complete", "api.reply", "command.reply"] {
            assert_eq!(implied_operation_state(name), Some("completed"));
        }
        assert_eq!(implied_operation_state("event.raw"), None);
    }

    #[test]
    fn a_nested_snapshot_copy_takes_precedence_and_lists_count_as_snapshots() {
        let record = stored(
            "event.raw",
            None,
            json!({"runtime_terminal_publication_snapshot": {"publication_id": "nested", "status": "s"}}),
            json!({"runtime_terminal_publication_snapshot": {"publication_id": "top", "status": "s"}}),
        );
        let snapshot = RecordMetadata::of(&record)
            .terminal_publication_snapshot()
            .unwrap();
        assert_eq!(snapshot.publication(), (Some("nested"), Some("s")));

        let record = stored(
            "event.raw",
            None,
            json!({}),
            json!({"runtime_lifecycle_semantic_snapshot": []}),
        );
        let snapshot = RecordMetadata::of(&record)
            .lifecycle_semantic_snapshot()
            .unwrap();
        assert_eq!(snapshot.lifecycle(), (None, None));
    }

    /// The straightforward reading of §7.2: try each context, then each key, in order.
    mod oracle {
        use super::*;

        fn lookup<'a>(contexts: &[&'a JsonMap], keys: &[&str]) -> Option<&'a str> {
            contexts.iter().find_map(|context| {
                keys.iter().find_map(|key| match context.get(*key) {
                    Some(Value::String(text)) if !is_blank(text) => Some(text.as_str()),
                    _ => None,
                })
            })
        }

        fn sub<'a>(payload: &'a JsonMap, key: &str) -> Option<&'a JsonMap> {
            match payload.get(key) {
                Some(Value::Object(map)) => Some(map),
                _ => None,
            }
        }

        /// Everything the metadata reader extracts, as owned text, from the oracle.
        pub(super) fn extract(record: &Record) -> Vec<Option<String>> {
            let payload = record.payload();
            let general: Vec<&JsonMap> = GENERAL_PAYLOAD_CONTEXTS
                .iter()
                .filter_map(|key| sub(payload, key))
                .chain([record.runtime_flags(), record.correlation_ids(), payload])
                .collect();
            let operation: Vec<&JsonMap> = OPERATION_PAYLOAD_CONTEXTS
                .iter()
                .filter_map(|key| sub(payload, key))
                .chain([record.runtime_flags(), record.correlation_ids(), payload])
                .collect();
            let job = record.job_uuid().filter(|text| !is_blank(text));
            let snapshot = |key: &str| {
                general.iter().find_map(|context| match context.get(key) {
                    Some(Value::Object(map)) => {
                        Some(format!("object {}", Value::Object(map.clone())))
                    }
                    Some(Value::Array(_)) => Some("list".to_owned()),
                    _ => None,
                })
            };
            let values = [
                lookup(&general, &[RECOVERY_GENERATION_ID, ALIAS_GENERATION_ID]),
                lookup(&general, &[REPLAY_CONTINUITY_POSTURE]),
                lookup(&general, &[RETRY_POSTURE]),
                lookup(&general, &[DRAIN_POSTURE]),
                lookup(&general, &[RECONSTRUCTION_POSTURE]),
                lookup(&operation, &[OPERATION_ID]).or(job),
                lookup(&operation, &[OPERATION_KIND, ALIAS_KIND]),
                lookup(&operation, &[BGAPI_JOB_UUID, JOB_UUID]).or(job),
                lookup(&operation, &[OPERATION_STATE, ALIAS_STATE])
                    .or_else(|| implied_operation_state(record.artifact_name())),
            ];
            values
                .iter()
                .map(|value| value.map(str::to_owned))
                .chain([
                    snapshot(RUNTIME_TERMINAL_PUBLICATION_SNAPSHOT),
                    snapshot(RUNTIME_LIFECYCLE_SEMANTIC_SNAPSHOT),
                ])
                .collect()
        }
    }

    fn extract(record: &Record) -> Vec<Option<String>> {
        let metadata = RecordMetadata::of(record);
        let snapshot = |found: Option<Snapshot<'_>>| {
            found.map(|snapshot| match snapshot {
                Snapshot::Object(map) => format!("object {}", Value::Object(map.clone())),
                Snapshot::List => "list".to_owned(),
            })
        };
        [
            metadata.recovery_generation_id(),
            metadata.replay_continuity_posture(),
            metadata.retry_posture(),
            metadata.drain_posture(),
            metadata.reconstruction_posture(),
            metadata.operation_id(),
            metadata.operation_kind(),
            metadata.bgapi_job_uuid(),
            metadata.operation_state(),
        ]
        .iter()
        .map(|value| value.map(str::to_owned))
        .chain([
            snapshot(metadata.terminal_publication_snapshot()),
            snapshot(metadata.lifecycle_semantic_snapshot()),
        ])
        .collect()
    }

    const KEYS: &[&str] = &[
        "recovery_generation_id",
        "generation_id",
        "replay_continuity_posture",
        "retry_posture",
        "drain_posture",
        "reconstruction_posture",
        "operation_id",
        "operation_kind",
        "kind",
        "bgapi_job_uuid",
        "job_uuid",
        "operation_state",
        "state",
        "prepared_recovery_context",
        "runtime_recovery_snapshot",
        "runtime_operation_snapshot",
        "runtime_terminal_publication_snapshot",
        "runtime_lifecycle_semantic_snapshot",
        "replay_metadata",
        "other",
    ];

    fn arbitrary_map(g: &mut quickcheck::Gen, depth: u8) -> JsonMap {
        use quickcheck::Arbitrary as _;
        let mut map = JsonMap::new();
        for _ in 0..u8::arbitrary(g) % 8 {
            let key = g.choose(KEYS).copied().unwrap_or("other");
            let value = match u8::arbitrary(g) % 7 {
                0 if depth > 0 => Value::Object(arbitrary_map(g, depth - 1)),
                1 => Value::Array(vec![]),
                2 => json!(7),
                3 => json!(" "),
                _ => json!(g.choose(&["a", "b", "c"]).copied().unwrap_or("a")),
            };
            map.insert(key.to_owned(), value);
        }
        map
    }

    #[derive(Clone, Debug)]
    struct Maps {
        name: &'static str,
        job: Option<&'static str>,
        correlation: JsonMap,
        flags: JsonMap,
        payload: JsonMap,
    }

    impl quickcheck::Arbitrary for Maps {
        fn arbitrary(g: &mut quickcheck::Gen) -> Self {
            Maps {
                name: g
                    .choose(&["api.dispatch", "bgapi.ack", "bgapi.complete", "event.raw"])
                    .copied()
                    .unwrap_or("event.raw"),
                job: g
                    .choose(&[None, Some("job-1"), Some("  ")])
                    .copied()
                    .flatten(),
                correlation: arbitrary_map(g, 1),
                flags: arbitrary_map(g, 1),
                payload: arbitrary_map(g, 2),
            }
        }
    }

    #[test]
    fn the_one_pass_reader_agrees_with_trying_each_context_and_key_in_order() {
        fn agrees(maps: Maps) -> bool {
            let mut record = stored(
                maps.name,
                maps.job,
                Value::Object(maps.flags),
                Value::Object(maps.payload),
            )
            .into_fields();
            record.correlation_ids = maps.correlation;
            let record = Record::new(record).unwrap();
            extract(&record) == oracle::extract(&record)
        }
        quickcheck::QuickCheck::new()
            .tests(2000)
            .quickcheck(agrees as fn(Maps) -> bool);
    }
}
