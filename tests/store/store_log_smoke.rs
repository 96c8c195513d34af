//! Smoke test of the segment-log artifact store across segment rolls, reopen, read-only
//! handles, id lookups, time windows and imports with sequence gaps.

use esl_replay::record::{
    Criteria, CriteriaFields, Envelope, JsonMap, ReadCursor, Record, RecordFields, RecordId,
};
use esl_replay::storage::LogOptions;
use esl_replay::store::{ArtifactReader, ArtifactStore, LogStore};
use serde_json::json;
use time::macros::datetime;

use crate::support::map;
use crate::support::process::{open_store, open_store_with};

fn envelope(i: u64) -> Envelope {
    let name = if i.is_multiple_of(2) {
        "event.raw"
    } else {
        "api.dispatch"
    };
    let captured = datetime!(2024-01-15 10:00:00 UTC) + time::Duration::seconds(i as i64);
    Envelope::new("1", name, captured)
        .with_connection_generation("1")
        .with_payload(map(json!({
            "Event-Name": "CHANNEL_ANSWER",
            "n": i,
            "pad": "x".repeat(300)
        })))
}

fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        max_payload_bytes: 16 << 10,
        ..LogOptions::default()
    }
}

#[test]
fn log_store_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let mut store = open_store_with(&root, small()).unwrap();
    let mut ids = Vec::new();
    for chunk in (0..1000u64).collect::<Vec<_>>().chunks(37) {
        ids.extend(
            store
                .write_batch(chunk.iter().map(|i| envelope(*i)).collect())
                .unwrap(),
        );
    }
    assert!(store.log_reader().segments().len() > 3);
    let mut cursor = ReadCursor::start();
    let mut seen = 0;
    loop {
        let page = store
            .read_from_cursor(&cursor, 137, &Criteria::any())
            .unwrap();
        let Some(last) = page.last() else { break };
        for record in &page {
            seen += 1;
            assert_eq!(record.append_sequence(), seen);
            assert!(record.verify_checksum());
        }
        cursor = cursor.advance(last.append_sequence(), None).unwrap();
    }
    assert_eq!(seen, 1000);
    for i in [0usize, 1, 500, 999] {
        let found = store.read_by_id(&ids[i]).unwrap().unwrap();
        assert_eq!(found.append_sequence(), i as u64 + 1);
    }
    assert!(store.read_by_id(&RecordId::generate()).unwrap().is_none());
    let window = Criteria::new(CriteriaFields {
        captured_from: Some(datetime!(2024-01-15 10:10:00 UTC)),
        captured_until: Some(datetime!(2024-01-15 12:10:01 +02:00)),
        artifact_name: Some("event.raw".into()),
        ..CriteriaFields::default()
    })
    .unwrap();
    let hits = store
        .read_from_cursor(&ReadCursor::start(), 1000, &window)
        .unwrap();
    let sequences: Vec<u64> = hits.iter().map(Record::append_sequence).collect();
    assert_eq!(sequences, vec![601u64]);
    store.close().unwrap();

    let reopened = open_store_with(&root, small()).unwrap();
    assert_eq!(
        reopened
            .read_by_id(&ids[3])
            .unwrap()
            .unwrap()
            .append_sequence(),
        4
    );
    let follower = LogStore::open_read_only(&root).unwrap();
    assert_eq!(
        follower
            .read_by_id(&ids[998])
            .unwrap()
            .unwrap()
            .append_sequence(),
        999
    );
    assert_eq!(follower.stats().unwrap().last_sequence, 1000);
}

#[test]
fn import_with_gaps_keeps_sequences_and_continues_after_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = open_store(dir.path().join("store")).unwrap();
    let make = |seq: u64| {
        let e = envelope(seq);
        let checksum = e.checksum().unwrap();
        Record::new(RecordFields {
            id: RecordId::generate(),
            artifact_version: e.artifact_version,
            artifact_name: e.artifact_name,
            capture_timestamp: e.capture_timestamp,
            stored_at: e.capture_timestamp,
            append_sequence: seq,
            connection_generation: None,
            session_id: None,
            job_uuid: None,
            event_name: None,
            capture_path: None,
            correlation_ids: JsonMap::new(),
            runtime_flags: JsonMap::new(),
            payload: e.payload,
            checksum,
            tags: JsonMap::new(),
        })
        .unwrap()
    };
    store
        .append_records(&[make(57), make(58), make(70)])
        .unwrap();
    assert!(store.append_records(&[make(70)]).is_err());
    store.write(envelope(1)).unwrap();
    let all: Vec<u64> = store
        .read_from_cursor(&ReadCursor::start(), 10, &Criteria::any())
        .unwrap()
        .iter()
        .map(Record::append_sequence)
        .collect();
    assert_eq!(all, vec![57, 58, 70, 71]);
    let after: Vec<u64> = store
        .read_from_cursor(&ReadCursor::new(60, None), 10, &Criteria::any())
        .unwrap()
        .iter()
        .map(Record::append_sequence)
        .collect();
    assert_eq!(after, vec![70, 71]);
    drop(store);
    let store = open_store(dir.path().join("store")).unwrap();
    assert_eq!(store.stats().unwrap().last_sequence, 71);
    assert_eq!(store.stats().unwrap().first_sequence, Some(57));
}
