//! How is evidence written as bytes, identified, and read back?
//!
//! The export format (reference §7.7, decision K7) is compact JSON written with the
//! reference's `json_encode` conventions (the crate's [`canonical`] writer: `/` and
//! non-ASCII unescaped, empty map `[]`, PHP number forms) with a fixed key order for every
//! object, no trailing newline. Free-form maps (`checkpoint_metadata`, issue `details`,
//! `facts`, observed states) are *normalised*: their keys are sorted in PHP `ksort` order at
//! every level, lists keep their order. The same bundle therefore always gives the same
//! bytes, whichever backend the records came from and however their maps were ordered.
//! (One exception, shared with the reference: distinct keys that PHP compares as equal
//! numbers, such as `1.0` and `1e0` in one map, keep their stored order relative to each
//! other.)
//!
//! The bundle id ([`bundle_id`], §7.6) is the SHA-256 (lowercase hex) of the compact JSON
//! object `{"window":W,"continuity_snapshot":B}`, where `W` is the window's cursor, upper
//! bound, checkpoint key and checkpoint metadata *in insertion order*, and `B` is the whole
//! exported bundle with `bundle_id` written as `pending`. The id changes exactly when the
//! evidence (record ids included), the window (batch limit and criteria included) or the
//! issue wording changes.
//!
//! [`parse_bundle`] reads an exported bundle back (maps written `{}` or `[]`), so a saved
//! bundle can be compared later.

use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::Error;
use super::model::{
    ComparisonResult, ContinuitySnapshot, ContinuitySnapshotFields, EvidenceBundle,
    GenerationObservation, GenerationObservationFields, Issue, IssueCode, IssueFields, IssueKind,
    LifecycleSemanticRecord, LifecycleSemanticRecordFields, Manifest, ManifestFields,
    ObservedState, OperationRecord, OperationRecordFields, ReconstructionWindow,
    ReconstructionWindowFields, RecordReference, RecordReferenceFields, TerminalPublicationRecord,
    TerminalPublicationRecordFields, Verdict, VerdictPosture,
};
use crate::record::canonical::{self, KeyOrder};
use crate::record::{Criteria, CriteriaFields, JsonMap, ReadCursor, timestamp};

/// The bundle id written while the id itself is being derived.
const PENDING_ID: &str = "pending";

/// Bytes of output buffered before they are handed to the hasher.
const HASH_CHUNK: usize = 64 * 1024;

/// Where the writers put their bytes: a string, or a string that is drained into a SHA-256
/// hasher as it fills, so the id of a large bundle is derived in bounded memory.
struct Out {
    buf: String,
    hasher: Option<Sha256>,
}

impl Out {
    fn text() -> Self {
        Self {
            buf: String::new(),
            hasher: None,
        }
    }

    fn hashing() -> Self {
        Self {
            buf: String::with_capacity(2 * HASH_CHUNK),
            hasher: Some(Sha256::new()),
        }
    }

    fn push(&mut self, character: char) {
        self.buf.push(character);
    }

    fn push_str(&mut self, text: &str) {
        self.buf.push_str(text);
    }

    /// Hands full chunks to the hasher (called between list items).
    fn drain(&mut self) {
        if let Some(hasher) = &mut self.hasher
            && self.buf.len() >= HASH_CHUNK
        {
            hasher.update(self.buf.as_bytes());
            self.buf.clear();
        }
    }
}

/// Writes a bundle in the export format.
#[must_use]
pub fn export_bundle(bundle: &EvidenceBundle) -> String {
    let mut out = Out::text();
    out.buf.reserve(256 + 160 * bundle.record_references.len());
    write_bundle(&mut out, bundle, &bundle.manifest.bundle_id);
    out.buf
}

/// Writes a comparison result in the export format.
#[must_use]
pub fn export_comparison(result: &ComparisonResult) -> String {
    let mut out = Out::text();
    let mut object = Object::open(&mut out);
    write_string(object.key("scenario_name"), &result.scenario_name);
    object
        .key("passed")
        .push_str(if result.passed { "true" } else { "false" });
    write_string(object.key("bundle_id"), &result.bundle_id);
    write_list(object.key("issues"), &result.issues, write_issue);
    object.close();
    out.buf
}

/// Derives the id of a bundle from its content and window (the module docs say how). The
/// id the bundle currently carries takes no part.
#[must_use]
pub fn bundle_id(bundle: &EvidenceBundle) -> String {
    let window = &bundle.manifest.window;
    let mut input = Out::hashing();
    let mut object = Object::open(&mut input);
    {
        let out = object.key("window");
        let mut raw = Object::open(out);
        write_u64(
            raw.key("from_last_consumed_sequence"),
            window.from.last_consumed_sequence(),
        );
        write_opt_u64(
            raw.key("from_byte_offset_hint"),
            window.from.byte_offset_hint(),
        );
        write_opt_u64(
            raw.key("until_append_sequence"),
            window.until_append_sequence,
        );
        write_opt_str(raw.key("checkpoint_key"), window.checkpoint_key.as_deref());
        canonical::write_map(
            &mut raw.key("checkpoint_metadata").buf,
            &window.checkpoint_metadata,
            KeyOrder::Insertion,
        );
        raw.close();
    }
    write_bundle(object.key("continuity_snapshot"), bundle, PENDING_ID);
    object.close();
    let mut hasher = input.hasher.take().unwrap_or_default();
    hasher.update(input.buf.as_bytes());
    let digest = hasher.finalize();
    let mut id = String::with_capacity(64);
    for byte in digest {
        let _ = write!(id, "{byte:02x}");
    }
    id
}

/// Writes the keys of one JSON object in the order they are added.
struct Object<'a> {
    out: &'a mut Out,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Out) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    /// Writes the separator and `"name":`, and returns the output for the value.
    fn key(&mut self, name: &str) -> &mut Out {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        canonical::write_string(&mut self.out.buf, name);
        self.out.push(':');
        self.out
    }

    fn close(self) {
        self.out.push('}');
    }
}

fn write_string(out: &mut Out, text: &str) {
    canonical::write_string(&mut out.buf, text);
}

fn write_u64(out: &mut Out, value: u64) {
    let _ = write!(out.buf, "{value}");
}

fn write_opt_u64(out: &mut Out, value: Option<u64>) {
    match value {
        Some(value) => write_u64(out, value),
        None => out.push_str("null"),
    }
}

fn write_opt_str(out: &mut Out, value: Option<&str>) {
    match value {
        Some(text) => write_string(out, text),
        None => out.push_str("null"),
    }
}

fn write_normalised(out: &mut Out, map: &JsonMap) {
    canonical::write_map(&mut out.buf, map, KeyOrder::PhpKsort);
}

fn write_list<T>(out: &mut Out, items: &[T], write_item: fn(&mut Out, &T)) {
    out.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_item(out, item);
        out.drain();
    }
    out.push(']');
}

fn write_bundle(out: &mut Out, bundle: &EvidenceBundle, id: &str) {
    let mut object = Object::open(out);
    write_manifest(object.key("manifest"), &bundle.manifest, id);
    write_snapshot(
        object.key("continuity_snapshot"),
        &bundle.continuity_snapshot,
    );
    write_list(
        object.key("record_references"),
        &bundle.record_references,
        write_reference,
    );
    write_list(
        object.key("operations"),
        &bundle.operations,
        write_operation,
    );
    write_list(
        object.key("terminal_publications"),
        &bundle.terminal_publications,
        write_publication,
    );
    write_list(
        object.key("lifecycle_semantics"),
        &bundle.lifecycle_semantics,
        write_semantic,
    );
    object.close();
}

fn write_manifest(out: &mut Out, manifest: &Manifest, id: &str) {
    let mut object = Object::open(out);
    write_u64(object.key("bundle_version"), manifest.bundle_version);
    write_string(object.key("bundle_id"), id);
    write_window(object.key("window"), &manifest.window);
    write_u64(object.key("record_count"), manifest.record_count);
    write_opt_u64(
        object.key("first_append_sequence"),
        manifest.first_append_sequence,
    );
    write_opt_u64(
        object.key("last_append_sequence"),
        manifest.last_append_sequence,
    );
    {
        let mut verdict = Object::open(object.key("verdict"));
        write_string(verdict.key("posture"), manifest.verdict.posture.as_str());
        write_list(verdict.key("issues"), &manifest.verdict.issues, write_issue);
        verdict.close();
    }
    object.close();
}

fn write_window(out: &mut Out, window: &ReconstructionWindow) {
    let mut object = Object::open(out);
    write_u64(
        object.key("from_last_consumed_sequence"),
        window.from.last_consumed_sequence(),
    );
    write_opt_u64(
        object.key("from_byte_offset_hint"),
        window.from.byte_offset_hint(),
    );
    write_opt_u64(
        object.key("until_append_sequence"),
        window.until_append_sequence,
    );
    match &window.criteria {
        Some(criteria) => write_criteria(object.key("criteria"), criteria),
        None => object.key("criteria").push_str("null"),
    }
    write_u64(object.key("batch_limit"), window.batch_limit as u64);
    write_opt_str(
        object.key("checkpoint_key"),
        window.checkpoint_key.as_deref(),
    );
    write_normalised(
        object.key("checkpoint_metadata"),
        &window.checkpoint_metadata,
    );
    object.close();
}

fn write_criteria(out: &mut Out, criteria: &Criteria) {
    let fields = criteria.fields();
    let mut object = Object::open(out);
    for (key, time) in [
        ("captured_from", &fields.captured_from),
        ("captured_until", &fields.captured_until),
    ] {
        let out = object.key(key);
        match time {
            Some(time) => write_string(out, &timestamp::to_reference_text(time)),
            None => out.push_str("null"),
        }
    }
    for (key, value) in [
        ("artifact_name", &fields.artifact_name),
        ("job_uuid", &fields.job_uuid),
        ("replay_session_id", &fields.replay_session_id),
        ("pbx_node_slug", &fields.pbx_node_slug),
        ("worker_session_id", &fields.worker_session_id),
        ("session_id", &fields.session_id),
        ("connection_generation", &fields.connection_generation),
    ] {
        write_opt_str(object.key(key), value.as_deref());
    }
    object.close();
}

fn write_issue(out: &mut Out, issue: &Issue) {
    let mut object = Object::open(out);
    write_string(object.key("kind"), issue.kind.as_str());
    write_string(object.key("code"), issue.code.as_str());
    write_string(object.key("message"), &issue.message);
    write_opt_u64(object.key("append_sequence"), issue.append_sequence);
    write_opt_str(object.key("artifact_name"), issue.artifact_name.as_deref());
    write_normalised(object.key("details"), &issue.details);
    object.close();
}

fn write_snapshot(out: &mut Out, snapshot: &ContinuitySnapshot) {
    let mut object = Object::open(out);
    write_list(
        object.key("recovery_generations"),
        &snapshot.recovery_generations,
        write_generation,
    );
    write_opt_str(
        object.key("replay_continuity_posture"),
        snapshot.replay_continuity_posture.as_deref(),
    );
    write_opt_str(
        object.key("retry_posture"),
        snapshot.retry_posture.as_deref(),
    );
    write_opt_str(
        object.key("drain_posture"),
        snapshot.drain_posture.as_deref(),
    );
    write_opt_str(
        object.key("reconstruction_posture"),
        snapshot.reconstruction_posture.as_deref(),
    );
    write_opt_u64(
        object.key("last_observed_append_sequence"),
        snapshot.last_observed_append_sequence,
    );
    object.close();
}

fn write_generation(out: &mut Out, generation: &GenerationObservation) {
    let mut object = Object::open(out);
    write_string(object.key("generation_id"), &generation.generation_id);
    write_u64(object.key("append_sequence"), generation.append_sequence);
    write_string(object.key("artifact_name"), &generation.artifact_name);
    object.close();
}

fn write_reference(out: &mut Out, reference: &RecordReference) {
    let mut object = Object::open(out);
    write_string(object.key("record_id"), &reference.record_id);
    write_u64(object.key("append_sequence"), reference.append_sequence);
    write_string(object.key("artifact_name"), &reference.artifact_name);
    let out = object.key("capture_timestamp");
    out.push('"');
    timestamp::write_reference_text(&reference.capture_timestamp, &mut out.buf);
    out.push('"');
    object.close();
}

fn write_operation(out: &mut Out, operation: &OperationRecord) {
    let mut object = Object::open(out);
    write_string(object.key("operation_id"), &operation.operation_id);
    write_opt_str(
        object.key("operation_kind"),
        operation.operation_kind.as_deref(),
    );
    write_opt_str(
        object.key("bgapi_job_uuid"),
        operation.bgapi_job_uuid.as_deref(),
    );
    write_opt_u64(
        object.key("accepted_append_sequence"),
        operation.accepted_append_sequence,
    );
    write_list(
        object.key("observed_states"),
        &operation.observed_states,
        write_observed_state,
    );
    write_opt_str(object.key("final_state"), operation.final_state.as_deref());
    write_opt_str(
        object.key("retry_posture"),
        operation.retry_posture.as_deref(),
    );
    write_opt_str(
        object.key("drain_posture"),
        operation.drain_posture.as_deref(),
    );
    write_list(object.key("issues"), &operation.issues, write_issue);
    object.close();
}

/// Observed states are normalised maps: their keys appear in sorted order.
fn write_observed_state(out: &mut Out, observed: &ObservedState) {
    let mut object = Object::open(out);
    write_u64(object.key("append_sequence"), observed.append_sequence);
    write_string(object.key("artifact_name"), &observed.artifact_name);
    write_string(object.key("state"), &observed.state);
    object.close();
}

fn write_publication(out: &mut Out, publication: &TerminalPublicationRecord) {
    let mut object = Object::open(out);
    write_string(object.key("publication_id"), &publication.publication_id);
    write_string(object.key("status"), &publication.status);
    write_u64(object.key("append_sequence"), publication.append_sequence);
    write_string(object.key("artifact_name"), &publication.artifact_name);
    write_opt_str(
        object.key("operation_id"),
        publication.operation_id.as_deref(),
    );
    write_normalised(object.key("facts"), &publication.facts);
    object.close();
}

fn write_semantic(out: &mut Out, semantic: &LifecycleSemanticRecord) {
    let mut object = Object::open(out);
    write_string(object.key("semantic"), &semantic.semantic);
    write_string(object.key("posture"), &semantic.posture);
    write_u64(object.key("append_sequence"), semantic.append_sequence);
    write_string(object.key("artifact_name"), &semantic.artifact_name);
    write_opt_str(object.key("operation_id"), semantic.operation_id.as_deref());
    write_normalised(object.key("facts"), &semantic.facts);
    object.close();
}

/// Reads a bundle written by [`export_bundle`] (or by the reference package).
///
/// # Errors
///
/// [`Error::Malformed`] naming the path of the first value that is missing or mistyped;
/// [`Error::UnsupportedBundleVersion`]; validation errors of the evidence types.
pub fn parse_bundle(text: &str) -> Result<EvidenceBundle, Error> {
    let value: Value = serde_json::from_str(text).map_err(|error| Error::Malformed {
        document: "bundle",
        path: "$".into(),
        reason: error.to_string(),
    })?;
    let root = At::root(&value);
    let manifest = root.field("manifest")?;
    let version = manifest.field("bundle_version")?.u64()?;
    if version != super::model::BUNDLE_VERSION {
        return Err(Error::UnsupportedBundleVersion { version });
    }
    let verdict = manifest.field("verdict")?;
    let posture_at = verdict.field("posture")?;
    let posture_name = posture_at.str()?;
    let posture = VerdictPosture::from_name(posture_name)
        .ok_or_else(|| posture_at.malformed(format!("unknown verdict posture {posture_name:?}")))?;
    let manifest = Manifest::new(ManifestFields {
        bundle_version: version,
        bundle_id: manifest.field("bundle_id")?.str()?.to_owned(),
        window: parse_window(&manifest.field("window")?)?,
        record_count: manifest.field("record_count")?.u64()?,
        first_append_sequence: manifest.field("first_append_sequence")?.opt_u64()?,
        last_append_sequence: manifest.field("last_append_sequence")?.opt_u64()?,
        verdict: Verdict {
            posture,
            issues: parse_issues(&verdict.field("issues")?)?,
        },
    })?;
    let snapshot = root.field("continuity_snapshot")?;
    let continuity_snapshot = ContinuitySnapshot::new(ContinuitySnapshotFields {
        recovery_generations: snapshot
            .field("recovery_generations")?
            .list()?
            .iter()
            .map(|at| {
                GenerationObservation::new(GenerationObservationFields {
                    generation_id: at.field("generation_id")?.string()?,
                    append_sequence: at.field("append_sequence")?.u64()?,
                    artifact_name: at.field("artifact_name")?.string()?,
                })
            })
            .collect::<Result<_, Error>>()?,
        replay_continuity_posture: snapshot.field("replay_continuity_posture")?.opt_string()?,
        retry_posture: snapshot.field("retry_posture")?.opt_string()?,
        drain_posture: snapshot.field("drain_posture")?.opt_string()?,
        reconstruction_posture: snapshot.field("reconstruction_posture")?.opt_string()?,
        last_observed_append_sequence: snapshot
            .field("last_observed_append_sequence")?
            .opt_u64()?,
    })?;
    let record_references = root
        .field("record_references")?
        .list()?
        .iter()
        .map(|at| {
            let time_at = at.field("capture_timestamp")?;
            let capture_timestamp = timestamp::parse(time_at.str()?)
                .map_err(|error| time_at.malformed(error.to_string()))?;
            RecordReference::new(RecordReferenceFields {
                record_id: at.field("record_id")?.string()?,
                append_sequence: at.field("append_sequence")?.u64()?,
                artifact_name: at.field("artifact_name")?.string()?,
                capture_timestamp,
            })
        })
        .collect::<Result<_, Error>>()?;
    let operations = root
        .field("operations")?
        .list()?
        .iter()
        .map(parse_operation)
        .collect::<Result<_, Error>>()?;
    let terminal_publications = root
        .field("terminal_publications")?
        .list()?
        .iter()
        .map(|at| {
            TerminalPublicationRecord::new(TerminalPublicationRecordFields {
                publication_id: at.field("publication_id")?.string()?,
                status: at.field("status")?.string()?,
                append_sequence: at.field("append_sequence")?.u64()?,
                artifact_name: at.field("artifact_name")?.string()?,
                operation_id: at.field("operation_id")?.opt_string()?,
                facts: at.field("facts")?.map()?,
            })
        })
        .collect::<Result<_, Error>>()?;
    let lifecycle_semantics = root
        .field("lifecycle_semantics")?
        .list()?
        .iter()
        .map(|at| {
            LifecycleSemanticRecord::new(LifecycleSemanticRecordFields {
                semantic: at.field("semantic")?.string()?,
                posture: at.field("posture")?.string()?,
                append_sequence: at.field("append_sequence")?.u64()?,
                artifact_name: at.field("artifact_name")?.string()?,
                operation_id: at.field("operation_id")?.opt_string()?,
                facts: at.field("facts")?.map()?,
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok(EvidenceBundle {
        manifest,
        continuity_snapshot,
        record_references,
        operations,
        terminal_publications,
        lifecycle_semantics,
    })
}

fn parse_window(at: &At<'_>) -> Result<ReconstructionWindow, Error> {
    let criteria_at = at.field("criteria")?;
    let criteria = if criteria_at.value.is_null() {
        None
    } else {
        let time = |key: &str| -> Result<Option<time::OffsetDateTime>, Error> {
            let time_at = criteria_at.field(key)?;
            time_at
                .opt_str()?
                .map(|text| {
                    timestamp::parse(text).map_err(|error| time_at.malformed(error.to_string()))
                })
                .transpose()
        };
        let text = |key: &str| criteria_at.field(key)?.opt_string();
        let fields = CriteriaFields {
            captured_from: time("captured_from")?,
            captured_until: time("captured_until")?,
            artifact_name: text("artifact_name")?,
            job_uuid: text("job_uuid")?,
            replay_session_id: text("replay_session_id")?,
            pbx_node_slug: text("pbx_node_slug")?,
            worker_session_id: text("worker_session_id")?,
            session_id: text("session_id")?,
            connection_generation: text("connection_generation")?,
        };
        Some(Criteria::new(fields).map_err(|error| criteria_at.malformed(error.to_string()))?)
    };
    let batch_at = at.field("batch_limit")?;
    let batch_limit = usize::try_from(batch_at.u64()?)
        .map_err(|_| batch_at.malformed("batch limit out of range".into()))?;
    ReconstructionWindow::new(ReconstructionWindowFields {
        from: ReadCursor::new(
            at.field("from_last_consumed_sequence")?.u64()?,
            at.field("from_byte_offset_hint")?.opt_u64()?,
        ),
        until_append_sequence: at.field("until_append_sequence")?.opt_u64()?,
        criteria,
        batch_limit,
        checkpoint_key: at.field("checkpoint_key")?.opt_string()?,
        checkpoint_metadata: at.field("checkpoint_metadata")?.map()?,
    })
}

fn parse_issues(at: &At<'_>) -> Result<Vec<Issue>, Error> {
    at.list()?
        .iter()
        .map(|at| {
            let kind_at = at.field("kind")?;
            let kind = IssueKind::from_name(kind_at.str()?)
                .ok_or_else(|| kind_at.malformed("unknown issue kind".into()))?;
            let code_at = at.field("code")?;
            let code = IssueCode::from_name(code_at.str()?)
                .ok_or_else(|| code_at.malformed("unknown issue code".into()))?;
            Issue::new(IssueFields {
                kind,
                code,
                message: at.field("message")?.string()?,
                append_sequence: at.field("append_sequence")?.opt_u64()?,
                artifact_name: at.field("artifact_name")?.opt_string()?,
                details: at.field("details")?.map()?,
            })
        })
        .collect()
}

fn parse_operation(at: &At<'_>) -> Result<OperationRecord, Error> {
    OperationRecord::new(OperationRecordFields {
        operation_id: at.field("operation_id")?.string()?,
        operation_kind: at.field("operation_kind")?.opt_string()?,
        bgapi_job_uuid: at.field("bgapi_job_uuid")?.opt_string()?,
        accepted_append_sequence: at.field("accepted_append_sequence")?.opt_u64()?,
        observed_states: at
            .field("observed_states")?
            .list()?
            .iter()
            .map(|state| {
                Ok(ObservedState {
                    state: state.field("state")?.string()?,
                    append_sequence: state.field("append_sequence")?.u64()?,
                    artifact_name: state.field("artifact_name")?.string()?,
                })
            })
            .collect::<Result<_, Error>>()?,
        final_state: at.field("final_state")?.opt_string()?,
        retry_posture: at.field("retry_posture")?.opt_string()?,
        drain_posture: at.field("drain_posture")?.opt_string()?,
        issues: parse_issues(&at.field("issues")?)?,
    })
}

/// A value inside a parsed bundle, with its path for error messages.
struct At<'a> {
    value: &'a Value,
    path: String,
}

impl<'a> At<'a> {
    fn root(value: &'a Value) -> Self {
        Self {
            value,
            path: String::new(),
        }
    }

    fn malformed(&self, reason: String) -> Error {
        Error::Malformed {
            document: "bundle",
            path: if self.path.is_empty() {
                "$".into()
            } else {
                self.path.clone()
            },
            reason,
        }
    }

    fn field(&self, key: &str) -> Result<At<'a>, Error> {
        let path = if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        };
        match self.value {
            Value::Object(map) => match map.get(key) {
                Some(value) => Ok(At { value, path }),
                None => Err(Error::Malformed {
                    document: "bundle",
                    path,
                    reason: "missing".into(),
                }),
            },
            _ => Err(self.malformed("not an object".into())),
        }
    }

    fn list(&self) -> Result<Vec<At<'a>>, Error> {
        match self.value {
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(index, value)| At {
                    value,
                    path: format!("{}[{index}]", self.path),
                })
                .collect()),
            // An empty object is how PHP may write an empty list.
            Value::Object(map) if map.is_empty() => Ok(Vec::new()),
            _ => Err(self.malformed("not a list".into())),
        }
    }

    /// A map, written `{}` or, as PHP writes empty or index-keyed maps, as a list.
    fn map(&self) -> Result<JsonMap, Error> {
        match self.value {
            Value::Object(map) => Ok(map.clone()),
            Value::Array(items) => Ok(items
                .iter()
                .enumerate()
                .map(|(index, value)| (index.to_string(), value.clone()))
                .collect()),
            _ => Err(self.malformed("not an object".into())),
        }
    }

    fn str(&self) -> Result<&'a str, Error> {
        self.value
            .as_str()
            .ok_or_else(|| self.malformed("not a string".into()))
    }

    fn string(&self) -> Result<String, Error> {
        self.str().map(str::to_owned)
    }

    fn opt_str(&self) -> Result<Option<&'a str>, Error> {
        if self.value.is_null() {
            Ok(None)
        } else {
            self.str().map(Some)
        }
    }

    fn opt_string(&self) -> Result<Option<String>, Error> {
        Ok(self.opt_str()?.map(str::to_owned))
    }

    fn u64(&self) -> Result<u64, Error> {
        self.value
            .as_u64()
            .ok_or_else(|| self.malformed("not a non-negative integer".into()))
    }

    fn opt_u64(&self) -> Result<Option<u64>, Error> {
        if self.value.is_null() {
            Ok(None)
        } else {
            self.u64().map(Some)
        }
    }
}
