//! How is evidence written as bytes, identified, and read back?
//!
//! [`export_bundle`] and [`export_comparison`] write the export format (reference §7.7,
//! decision K7), [`bundle_id`] derives a bundle's id (§7.6), and [`parse_bundle`] reads an
//! exported bundle back, so a saved bundle can be compared later. Each function's docs give
//! its rules.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::model::{
    BUNDLE_VERSION, ComparisonResult, ContinuitySnapshot, EvidenceBundle, GenerationObservation,
    Issue, Manifest, ObservedState, OperationRecord, ReconstructionWindow, RecordReference,
    SnapshotRecord, VerdictPosture,
};
use super::{Error, de};
use crate::record::canonical::{self, KeyOrder};
use crate::record::{Criteria, JsonMap, MAX_JSON_DEPTH, json_nesting_exceeds, timestamp};

/// How deep a bundle nests at most: a record's maps nest [`MAX_JSON_DEPTH`] levels, and
/// the deepest part of a bundle written from them (a snapshot's `facts`, at least one level
/// inside its record's payload) or from a window (its `checkpoint_metadata`, validated to
/// the same limit) lies three levels inside the bundle object.
const MAX_BUNDLE_DEPTH: usize = MAX_JSON_DEPTH + 3;

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
///
/// The format is compact JSON written with the reference's `json_encode` conventions (the
/// crate's [`canonical`](crate::record::canonical) writer: `/` and non-ASCII unescaped, empty map `[]`, PHP number
/// forms) with a fixed key order for every object, no trailing newline. Free-form maps
/// (`checkpoint_metadata`, issue `details`, `facts`, observed states) are *normalised*:
/// their keys are sorted in PHP `ksort` order at every level, lists keep their order. The
/// same bundle therefore always gives the same bytes, whichever backend the records came
/// from and however their maps were ordered. (One exception, shared with the reference:
/// distinct keys that PHP compares as equal numbers, such as `1.0` and `1e0` in one map,
/// keep their stored order relative to each other.)
#[must_use]
pub fn export_bundle(bundle: &EvidenceBundle) -> String {
    let mut out = Out::text();
    out.buf.reserve(256 + 160 * bundle.record_references.len());
    write_bundle(&mut out, bundle, &bundle.manifest.bundle_id);
    out.buf
}

/// Writes a comparison result in the export format (see [`export_bundle`]).
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

/// Derives the id of a bundle from its content and window. The id the bundle currently
/// carries takes no part.
///
/// The id is the SHA-256 (lowercase hex) of the compact JSON object
/// `{"window":W,"continuity_snapshot":B}`, where `W` is the window's cursor, upper bound,
/// checkpoint key and checkpoint metadata, and `B` is the whole exported bundle with
/// `bundle_id` written as `pending`. The id changes exactly when the evidence (record ids
/// included), the window (batch limit and criteria included) or the issue wording changes.
///
/// The checkpoint metadata in `W` is normalised (keys sorted at every level) as the export
/// writes it, so the id can be recomputed from the exported bundle alone and does not
/// depend on the order the metadata was given in. The reference hashes the metadata in its
/// insertion order while exporting it sorted; for metadata whose keys were given in sorted
/// order (or no metadata) the two ids are the same, otherwise they differ and the
/// reference's id could not be checked from its own bundle (docs/evidence.md).
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
        write_normalised(raw.key("checkpoint_metadata"), &window.checkpoint_metadata);
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
        write_snapshot_record,
    );
    write_list(
        object.key("lifecycle_semantics"),
        &bundle.lifecycle_semantics,
        write_snapshot_record,
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
    for (key, value) in fields.texts() {
        write_opt_str(object.key(key), value);
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

/// Terminal publications and lifecycle semantics: their two own fields, then the rest.
fn write_snapshot_record<T: SnapshotRecord>(out: &mut Out, record: &T) {
    let mut object = Object::open(out);
    for (key, value) in record.named() {
        write_string(object.key(key), value);
    }
    write_u64(object.key("append_sequence"), record.append_sequence());
    write_string(object.key("artifact_name"), record.artifact_name());
    write_opt_str(object.key("operation_id"), record.operation_id());
    write_normalised(object.key("facts"), record.facts());
    object.close();
}

/// The version of a bundle, whatever the rest of it holds (the first pass of
/// [`parse_bundle`]).
#[derive(Deserialize)]
struct VersionOnly {
    #[serde(default)]
    manifest: Option<ManifestVersion>,
}

#[derive(Deserialize)]
struct ManifestVersion {
    #[serde(default)]
    bundle_version: Option<Value>,
}

/// Reads a bundle written by [`export_bundle`] (or by the reference package), with the
/// rules of the evidence types' `Deserialize`: every key present, `null` for an absent
/// value, lists and maps in either of PHP's forms, unknown keys ignored, every part
/// validated as it is built.
///
/// The bundle read is then checked against itself with [`verify_bundle`]: a bundle
/// changed after it was written is refused, never compared.
///
/// # Errors
///
/// [`Error::UnsupportedBundleVersion`] for another `manifest.bundle_version`;
/// [`Error::Malformed`] for anything else, naming the JSON path of the value that could
/// not be read (`manifest.record_count`, `record_references[3]`) and why: missing,
/// mistyped, an unknown name, or the validation error of the part built there; the errors
/// of [`verify_bundle`] for a bundle that contradicts itself or its id.
pub fn parse_bundle(text: &str) -> Result<EvidenceBundle, Error> {
    let bundle = read_bundle(text)?;
    verify_bundle(&bundle)?;
    Ok(bundle)
}

/// Checks that a bundle agrees with itself: what reconstruction derives from the rest of
/// the bundle says what the bundle says, and the bundle id is the id of its content.
///
/// In this order: the verdict posture is the one its issues force (reference §7.5 step
/// 10); `record_count`, `first_append_sequence`, `last_append_sequence` and the
/// continuity snapshot's `last_observed_append_sequence` match the record references;
/// operation ids are unique, each operation's `final_state` is its last observed state and
/// its `accepted_append_sequence` the first `accepted` one; and [`bundle_id`] of the
/// bundle is the id it carries.
///
/// The id is an unkeyed hash: it shows that a bundle was changed after it was written
/// (by hand or by damage), not who wrote it. Someone who recomputes the id after changing
/// a bundle consistently is not detected; keep bundles that must be trusted where they
/// cannot be changed, or reconstruct them again from the store.
///
/// # Errors
///
/// [`Error::InconsistentBundle`] naming the first field that contradicts the rest;
/// [`Error::BundleIdMismatch`] with the id found and the id the content gives.
pub fn verify_bundle(bundle: &EvidenceBundle) -> Result<(), Error> {
    let inconsistent = |path: String, reason: String| Error::InconsistentBundle { path, reason };
    let manifest = &bundle.manifest;
    let references = &bundle.record_references;

    let forced = VerdictPosture::for_issues(&manifest.verdict.issues);
    if manifest.verdict.posture != forced {
        return Err(inconsistent(
            "manifest.verdict.posture".into(),
            format!(
                "is {}, but its {} issue(s) make it {}",
                manifest.verdict.posture.as_str(),
                manifest.verdict.issues.len(),
                forced.as_str()
            ),
        ));
    }
    if manifest.record_count != references.len() as u64 {
        return Err(inconsistent(
            "manifest.record_count".into(),
            format!(
                "is {}, but the bundle lists {} record reference(s)",
                manifest.record_count,
                references.len()
            ),
        ));
    }
    let first = references
        .first()
        .map(|reference| reference.append_sequence);
    let last = references.last().map(|reference| reference.append_sequence);
    for (path, stated, derived, which) in [
        (
            "manifest.first_append_sequence",
            manifest.first_append_sequence,
            first,
            "first",
        ),
        (
            "manifest.last_append_sequence",
            manifest.last_append_sequence,
            last,
            "last",
        ),
        (
            "continuity_snapshot.last_observed_append_sequence",
            bundle.continuity_snapshot.last_observed_append_sequence,
            last,
            "last",
        ),
    ] {
        if stated != derived {
            return Err(inconsistent(
                path.into(),
                format!(
                    "is {}, but the {which} record reference has {}",
                    show_sequence(stated),
                    show_sequence(derived)
                ),
            ));
        }
    }
    let mut seen = HashMap::with_capacity(bundle.operations.len());
    for (index, operation) in bundle.operations.iter().enumerate() {
        if let Some(earlier) = seen.insert(operation.operation_id.as_str(), index) {
            return Err(inconsistent(
                format!("operations[{index}].operation_id"),
                format!(
                    "{:?} is also the id of operations[{earlier}]",
                    operation.operation_id
                ),
            ));
        }
        let last_state = operation.observed_states.last().map(|s| s.state.as_str());
        if operation.final_state.as_deref() != last_state {
            return Err(inconsistent(
                format!("operations[{index}].final_state"),
                format!(
                    "is {}, but the last observed state is {}",
                    show_state(operation.final_state.as_deref()),
                    show_state(last_state)
                ),
            ));
        }
        let accepted = operation
            .observed_states
            .iter()
            .find(|observed| observed.state == "accepted")
            .map(|observed| observed.append_sequence);
        if operation.accepted_append_sequence != accepted {
            return Err(inconsistent(
                format!("operations[{index}].accepted_append_sequence"),
                format!(
                    "is {}, but the first observed `accepted` state has {}",
                    show_sequence(operation.accepted_append_sequence),
                    show_sequence(accepted)
                ),
            ));
        }
    }
    let expected = bundle_id(bundle);
    if manifest.bundle_id != expected {
        return Err(Error::BundleIdMismatch {
            found: manifest.bundle_id.clone(),
            expected,
        });
    }
    Ok(())
}

fn show_sequence(sequence: Option<u64>) -> String {
    sequence.map_or_else(|| "null".to_owned(), |sequence| sequence.to_string())
}

fn show_state(state: Option<&str>) -> String {
    state.map_or_else(|| "null".to_owned(), |state| format!("{state:?}"))
}

/// Reads a bundle without checking it against itself (the first step of
/// [`parse_bundle`]).
fn read_bundle(text: &str) -> Result<EvidenceBundle, Error> {
    let malformed = |path: String, reason: String| Error::Malformed {
        document: "bundle",
        path,
        reason,
    };
    // A first pass reads only the version, skipping everything else without keeping it (a
    // bundle is never held as a JSON tree: that takes many times its text): a bundle of
    // another version may be laid out differently, so say so before anything else.
    if json_nesting_exceeds(text.as_bytes(), MAX_BUNDLE_DEPTH) {
        return Err(malformed(
            "$".into(),
            format!(
                "nested deeper than {MAX_BUNDLE_DEPTH} levels, deeper than any bundle is written"
            ),
        ));
    }
    let version_only = {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        // Safe to lift serde_json's own limit: the nesting check above bounded the depth.
        deserializer.disable_recursion_limit();
        VersionOnly::deserialize(&mut deserializer)
            .and_then(|version| deserializer.end().map(|()| version))
    };
    match version_only {
        Err(error) if !error.is_data() => return Err(malformed("$".into(), error.to_string())),
        Ok(VersionOnly {
            manifest:
                Some(ManifestVersion {
                    bundle_version: Some(version),
                }),
        }) => {
            if let Some(version) = version.as_u64()
                && version != BUNDLE_VERSION
            {
                return Err(Error::UnsupportedBundleVersion { version });
            }
        }
        _ => {}
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    deserializer.disable_recursion_limit();
    // (The first pass has checked that nothing follows the bundle.)
    serde_path_to_error::deserialize(&mut deserializer)
        .map(|de::Object(bundle)| bundle)
        .map_err(|error| {
            let path = error.path().to_string();
            let inner = error.into_inner();
            let mut reason = inner.to_string();
            // The path names the place; the text's line and column add nothing to it.
            if inner.line() > 0
                && let Some(at) = reason.rfind(" at line ")
            {
                reason.truncate(at);
            }
            let parent = (path != ".").then_some(path);
            // serde reports a missing key at its parent as "missing field `key`" (the text of
            // `serde::de::Error::missing_field`); the path names the key itself, as for every
            // other problem.
            match reason
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'))
            {
                Some(key) => malformed(
                    parent.map_or_else(|| key.to_owned(), |parent| format!("{parent}.{key}")),
                    "missing".into(),
                ),
                None => malformed(parent.unwrap_or_else(|| "$".into()), reason),
            }
        })
}
