//! Which window resumes from a stored checkpoint, and may it?
//!
//! [`resolve_checkpoint_window`] (reference §7.4, decision K7) builds a
//! [`ReconstructionWindow`] that starts at a checkpoint's cursor (hint included) and carries
//! its key and metadata, then checks the first record visible after the cursor under the
//! window's criteria. It fails closed with [`Error::CheckpointContradiction`] when the
//! checkpoint's `replay_session_id` or `recovery_generation_id` (metadata strings) differs
//! from what that record carries: resuming there would mix a different session or
//! generation into the evidence. A value missing on either side never fails, and only the
//! first visible record is checked.

use serde_json::Value;

use super::Error;
use super::keys::RecordMetadata;
use super::model::{ReconstructionWindow, ReconstructionWindowFields};
use crate::checkpoint::Checkpoint;
use crate::record::Criteria;
use crate::record::keys::{RECOVERY_GENERATION_ID, REPLAY_SESSION_ID};
use crate::store::ArtifactReader;

/// Builds the window that resumes from `checkpoint` and checks it against the stream.
///
/// # Errors
///
/// Window validation errors ([`Error::UntilNotAfterFrom`], [`Error::InvalidBatchLimit`]);
/// [`Error::Store`] when the read fails; [`Error::CheckpointContradiction`].
pub fn resolve_checkpoint_window<S: ArtifactReader + ?Sized>(
    store: &S,
    checkpoint: &Checkpoint,
    criteria: Option<Criteria>,
    until_append_sequence: Option<u64>,
    batch_limit: usize,
) -> Result<ReconstructionWindow, Error> {
    let window = ReconstructionWindow::new(ReconstructionWindowFields {
        from: *checkpoint.cursor(),
        until_append_sequence,
        criteria,
        batch_limit,
        checkpoint_key: Some(checkpoint.key().to_owned()),
        checkpoint_metadata: checkpoint.metadata().clone(),
    })?;
    let any = Criteria::any();
    let filter = window.criteria.as_ref().unwrap_or(&any);
    let first = store.read_from_cursor(&window.from, 1, filter)?;
    let Some(record) = first.first() else {
        return Ok(window);
    };
    let checks = [
        (REPLAY_SESSION_ID, record.replay_session_id()),
        (
            RECOVERY_GENERATION_ID,
            RecordMetadata::of(record).recovery_generation_id(),
        ),
    ];
    for (field, observed) in checks {
        if let (Some(Value::String(expected)), Some(observed)) =
            (checkpoint.metadata().get(field), observed)
            && expected != observed
        {
            return Err(Error::CheckpointContradiction {
                key: checkpoint.key().to_owned(),
                field,
                expected: expected.clone(),
                observed: observed.to_owned(),
                sequence: record.append_sequence(),
            });
        }
    }
    Ok(window)
}
