//! Which keys do the maps of a record and of a checkpoint use?
//!
//! Every key that one layer writes into a record's `correlation_ids`, `runtime_flags` or
//! `payload` (or into a checkpoint's metadata) and another layer reads back is named here
//! once. The record layer is the lowest one every other layer may import, so capture (the
//! writer), the server, evidence, checkpoints and the stores all share these names.
//!
//! - Identity keys (reference §3, §4.3-4.4) appear in `correlation_ids`, `runtime_flags`
//!   and checkpoint metadata; [`super::identity`] says which map each is read from.
//! - Recovery metadata keys, their aliases and the payload sub-objects they are read from
//!   (reference §7.1-7.2) are what the evidence layer looks up; the order of lookup is the
//!   evidence layer's (`evidence::RecordMetadata`).
//! - Capture payload and runtime-flag keys are what capture writes for every artifact and
//!   what the server and re-injection read back.

// Identity.

/// Key of the replay session id, in `correlation_ids`, `runtime_flags` and checkpoint
/// metadata.
pub const REPLAY_SESSION_ID: &str = "replay_session_id";
/// Key of a background-job UUID in `correlation_ids` and checkpoint metadata; also an
/// alias of [`BGAPI_JOB_UUID`] in recovery metadata.
pub const JOB_UUID: &str = "job_uuid";
/// Key of the PBX node slug, in `runtime_flags` and checkpoint metadata.
pub const PBX_NODE_SLUG: &str = "pbx_node_slug";
/// Key of the worker session id, in `runtime_flags` (capture also writes it to
/// `correlation_ids`) and checkpoint metadata.
pub const WORKER_SESSION_ID: &str = "worker_session_id";
/// Key of the recovery generation id, in recovery metadata and checkpoint metadata.
pub const RECOVERY_GENERATION_ID: &str = "recovery_generation_id";

// Recovery metadata.

/// Key of the retry posture.
pub const RETRY_POSTURE: &str = "retry_posture";
/// Key of the drain posture.
pub const DRAIN_POSTURE: &str = "drain_posture";
/// Key of the reconstruction posture.
pub const RECONSTRUCTION_POSTURE: &str = "reconstruction_posture";
/// Key of the replay continuity posture.
pub const REPLAY_CONTINUITY_POSTURE: &str = "replay_continuity_posture";
/// Key of the operation id.
pub const OPERATION_ID: &str = "operation_id";
/// Key of the operation kind.
pub const OPERATION_KIND: &str = "operation_kind";
/// Key of the operation state.
pub const OPERATION_STATE: &str = "operation_state";
/// Key of the background-job UUID of an operation.
pub const BGAPI_JOB_UUID: &str = "bgapi_job_uuid";
/// Key of a terminal publication's id.
pub const TERMINAL_PUBLICATION_ID: &str = "terminal_publication_id";
/// Key of a terminal publication's status.
pub const TERMINAL_PUBLICATION_STATUS: &str = "terminal_publication_status";
/// Key of a lifecycle semantic.
pub const LIFECYCLE_SEMANTIC: &str = "lifecycle_semantic";

/// Alias of [`RECOVERY_GENERATION_ID`].
pub const ALIAS_GENERATION_ID: &str = "generation_id";
/// Alias of [`OPERATION_KIND`].
pub const ALIAS_KIND: &str = "kind";
/// Alias of [`OPERATION_STATE`], and second key of a lifecycle snapshot's posture.
pub const ALIAS_STATE: &str = "state";
/// Alias of [`TERMINAL_PUBLICATION_ID`].
pub const ALIAS_PUBLICATION_ID: &str = "publication_id";
/// Alias of [`TERMINAL_PUBLICATION_STATUS`].
pub const ALIAS_STATUS: &str = "status";
/// Alias of [`LIFECYCLE_SEMANTIC`].
pub const ALIAS_SEMANTIC: &str = "semantic";
/// Key of a lifecycle snapshot's posture.
pub const ALIAS_POSTURE: &str = "posture";

/// Payload sub-object holding the prepared recovery context.
pub const PREPARED_RECOVERY_CONTEXT: &str = "prepared_recovery_context";
/// Payload sub-object holding the runtime recovery snapshot (postures).
pub const RUNTIME_RECOVERY_SNAPSHOT: &str = "runtime_recovery_snapshot";
/// Payload sub-object holding the runtime operation snapshot.
pub const RUNTIME_OPERATION_SNAPSHOT: &str = "runtime_operation_snapshot";
/// Sub-object holding a terminal-publication snapshot.
pub const RUNTIME_TERMINAL_PUBLICATION_SNAPSHOT: &str = "runtime_terminal_publication_snapshot";
/// Sub-object holding a lifecycle-semantic snapshot.
pub const RUNTIME_LIFECYCLE_SEMANTIC_SNAPSHOT: &str = "runtime_lifecycle_semantic_snapshot";
/// Payload sub-object holding replay metadata (capture writes its recovery metadata here).
pub const REPLAY_METADATA: &str = "replay_metadata";

// Capture payload.

/// Payload key of the captured artifact's kind (`event`, `dispatch`, `reply`, `wire`, ...).
pub const CAPTURED_TYPE: &str = "captured_type";
/// Payload key of the captured artifact's name within its kind.
pub const CAPTURED_NAME: &str = "captured_name";
/// Payload key of the raw text: an event's outer body, a reply's whole frame, a dispatch's
/// command line (`src/capture/artifact.rs` has the contract).
pub const RAW_PAYLOAD: &str = "raw_payload";
/// Payload key of the exact bytes in base64, present only when they are not valid UTF-8.
pub const RAW_PAYLOAD_BASE64: &str = "raw_payload_base64";
/// Payload key of the classifier's context pairs.
pub const CLASSIFIER_CONTEXT: &str = "classifier_context";
/// Payload key of the protocol facts (`content-type` and other facts about the frame).
pub const PROTOCOL_FACTS: &str = "protocol_facts";
/// Payload key of the derived metadata map.
pub const DERIVED_METADATA: &str = "derived_metadata";
/// Payload key of the frame's outer headers, as `[name, value]` pairs in wire order.
pub const FRAME_HEADERS: &str = "frame_headers";
/// Payload key of a `capture.gap` record: the gap document (docs/capture.md).
pub const GAP: &str = "gap";

/// Protocol-fact key of the outer `Content-Type`.
pub const FACT_CONTENT_TYPE: &str = "content-type";
/// Protocol-fact key of a reply's `Reply-Text`.
pub const FACT_REPLY_TEXT: &str = "reply-text";
/// Protocol-fact key of a reply's or event's `Job-UUID`.
pub const FACT_JOB_UUID: &str = "job-uuid";

// Capture runtime flags.

/// Runtime-flag key of the provider (`freeswitch`).
pub const PROVIDER_CODE: &str = "provider_code";
/// Runtime-flag key of the transport (`tcp`).
pub const TRANSPORT: &str = "transport";
/// Runtime-flag key of the capture's own sequence number.
pub const REPLAY_CAPTURE_SEQUENCE: &str = "replay_capture_sequence";
/// Runtime-flag key of the protocol sequence an event carries, if any.
pub const REPLAY_PROTOCOL_SEQUENCE: &str = "replay_protocol_sequence";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_key_names_match_the_stored_contract() {
        assert_eq!(REPLAY_SESSION_ID, "replay_session_id");
        assert_eq!(PBX_NODE_SLUG, "pbx_node_slug");
        assert_eq!(WORKER_SESSION_ID, "worker_session_id");
        assert_eq!(JOB_UUID, "job_uuid");
        assert_eq!(RECOVERY_GENERATION_ID, "recovery_generation_id");
    }
}
