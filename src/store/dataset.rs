//! A deterministic dataset of realistic ESL artifacts, for benchmarks, demos and tests.
//!
//! Record `n` is an `event.raw` artifact (every fifth a `bgapi.complete` with a job UUID)
//! whose payload carries the headers of a plain-format FreeSWITCH channel event. Its record
//! body is about 500 bytes (format/record.md version 2; version 1 stored it in about 370, the
//! size performance targets are stated for).

use time::OffsetDateTime;

use crate::record::{Envelope, JsonMap, keys};

const EVENTS: [&str; 5] = [
    "CHANNEL_CREATE",
    "CHANNEL_ANSWER",
    "CHANNEL_BRIDGE",
    "CHANNEL_HANGUP_COMPLETE",
    "HEARTBEAT",
];

/// The `n`-th artifact of the dataset.
#[must_use]
pub fn envelope(n: u64) -> Envelope {
    let event = EVENTS
        .get((n % EVENTS.len() as u64) as usize)
        .copied()
        .unwrap_or("HEARTBEAT");
    let call = n / 5;
    let unique_id = format!(
        "{call:08x}-7d1e-4c5d-9e8f-{:012x}",
        call.wrapping_mul(2_654_435_761)
    );
    let mut payload = JsonMap::new();
    payload.insert("Event-Name".into(), event.into());
    payload.insert("Event-Sequence".into(), n.to_string().into());
    payload.insert("Unique-ID".into(), unique_id.clone().into());
    payload.insert(
        "Caller-Caller-ID-Number".into(),
        format!("1{:03}", call % 1000).into(),
    );
    let job = n
        .is_multiple_of(5)
        .then(|| format!("{:08x}-0000-4000-8000-{n:012x}", n / 5));
    let mut runtime_flags = JsonMap::new();
    runtime_flags.insert(keys::PBX_NODE_SLUG.into(), "pbx-01".into());
    let mut correlation_ids = JsonMap::new();
    correlation_ids.insert(keys::REPLAY_SESSION_ID.into(), "session-1".into());
    let at = OffsetDateTime::UNIX_EPOCH
        + time::Duration::seconds(1_700_000_000)
        + time::Duration::milliseconds(i64::try_from(n).unwrap_or(i64::MAX));
    Envelope {
        artifact_version: "1".into(),
        artifact_name: if job.is_some() {
            "bgapi.complete".into()
        } else {
            "event.raw".into()
        },
        capture_timestamp: at,
        capture_path: None,
        connection_generation: Some("1".into()),
        session_id: Some(unique_id),
        job_uuid: job,
        event_name: Some(event.into()),
        correlation_ids,
        runtime_flags,
        payload,
    }
}
