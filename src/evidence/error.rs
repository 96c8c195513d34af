//! How can building, reconstructing, comparing or reading evidence fail?
//!
//! Every failure of the evidence layer is one variant of [`Error`]. Validation failures of
//! the evidence types (the reference raises `InvalidArgumentException`) name the type and
//! the field; a checkpoint that contradicts the records it would resume from is
//! [`Error::CheckpointContradiction`] with both values and the sequence.

use crate::{record, store};

/// An error of the evidence layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A text field that must be non-blank (empty after PHP `trim`) is blank.
    #[error("{type_name}: field `{field}` must not be blank")]
    BlankField {
        /// The evidence type being built.
        type_name: &'static str,
        /// The field, named as in the bundle JSON.
        field: &'static str,
    },

    /// An append sequence that must be at least 1 is 0 (or out of the stored range).
    #[error("{type_name}: field `{field}` must be between 1 and {max}, got {value}", max = i64::MAX)]
    SequenceOutOfRange {
        /// The evidence type being built.
        type_name: &'static str,
        /// The field, named as in the bundle JSON.
        field: &'static str,
        /// The rejected value.
        value: u64,
    },

    /// A window's `until_append_sequence` does not lie after its starting cursor.
    #[error(
        "reconstruction window: until_append_sequence {until} must be greater than the cursor's last consumed sequence {from}"
    )]
    UntilNotAfterFrom {
        /// The rejected upper bound.
        until: u64,
        /// The cursor's last consumed sequence.
        from: u64,
    },

    /// A window's batch limit is 0.
    #[error("reconstruction window: batch_limit must be at least 1")]
    InvalidBatchLimit,

    /// An expected operation lifecycle lists no states.
    #[error("expected operation {operation_id}: states must list at least one state")]
    EmptyExpectedStates {
        /// The operation whose expectation is empty.
        operation_id: String,
    },

    /// A bundle declares a version this build does not read.
    #[error("bundle_version {version} is not supported (this build reads version 1)")]
    UnsupportedBundleVersion {
        /// The version found.
        version: u64,
    },

    /// A bundle or expectation document does not have the expected shape.
    #[error("{document}: {path}: {reason}")]
    Malformed {
        /// Which document (`bundle`, `expectation`).
        document: &'static str,
        /// Where in the document, as a JSON path such as `manifest.window.batch_limit`.
        path: String,
        /// What is wrong there.
        reason: String,
    },

    /// A bundle contradicts itself: a field says something else than what the rest of the
    /// bundle derives (see [`verify_bundle`](super::verify_bundle)).
    #[error(
        "bundle: {path} {reason}: the bundle was changed after it was written; reconstruct it again from the store"
    )]
    InconsistentBundle {
        /// The field, as a JSON path such as `manifest.record_count`.
        path: String,
        /// What it says and what the rest of the bundle says.
        reason: String,
    },

    /// A bundle's id is not the id of its content (see [`bundle_id`](super::bundle_id)).
    #[error(
        "bundle: manifest.bundle_id is {found}, but the bundle's content gives {expected}: the bundle was changed after it was written; reconstruct it again from the store"
    )]
    BundleIdMismatch {
        /// The id the bundle carries.
        found: String,
        /// The id derived from its content.
        expected: String,
    },

    /// The checkpoint a window is resolved from names an identity that the first record
    /// after its cursor contradicts: resuming there would mix two sessions or generations.
    #[error(
        "checkpoint {key}: expected {field} {expected}, observed {observed} at append sequence {sequence}"
    )]
    CheckpointContradiction {
        /// The checkpoint key.
        key: String,
        /// `replay_session_id` or `recovery_generation_id`.
        field: &'static str,
        /// The value in the checkpoint's metadata.
        expected: String,
        /// The value the record carries.
        observed: String,
        /// The record's append sequence.
        sequence: u64,
    },

    /// A stored record's content no longer matches the checksum it was stored with: it was
    /// changed after it was written, and evidence is never built from it. No issue code of
    /// the reference covers this (decision K7), so reconstruction stops.
    #[error(
        "record {record_id} at append sequence {sequence}: its content does not match its stored checksum {stored}, so it was changed after it was written and is not evidence (`esl-replay verify` lists every such record; restore the store from a copy, or reconstruct a window that ends before sequence {sequence})"
    )]
    ChecksumMismatch {
        /// The record's append sequence.
        sequence: u64,
        /// The record's id.
        record_id: String,
        /// The checksum it was stored with.
        stored: String,
    },

    /// Reading records from the store failed.
    #[error("reading the artifact store failed")]
    Store(#[from] store::Error),

    /// A record-layer value was invalid (a cursor that could not advance, a map nested too
    /// deep to write).
    #[error("record layer error")]
    Record(#[from] record::Error),
}
