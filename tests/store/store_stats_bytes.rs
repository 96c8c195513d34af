//! Issue 15 item 8: `stats` reports the bytes a store holds, not the zero-filled space its
//! segments are preallocated with (a fresh store used to report 67,112,128 bytes for 391
//! records).

use esl_replay::store;

use crate::support::cli;
use crate::support::process::SpawnSafely as _;
use crate::support::server::{event_envelope, fixture_frame};

#[test]
fn stats_bytes_count_what_the_store_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let frame = fixture_frame("09-event-plain-channel-create.esl");
    let start = time::OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_767_261_600);
    let envelope = |i: i64| event_envelope(&frame, start + time::Duration::milliseconds(i));
    let mut store = store::open(&path, None).unwrap();
    store.write_batch((0..391).map(envelope).collect()).unwrap();
    store.sync().unwrap();
    let first = store.stats().unwrap();
    let payloads = 391 * frame.body().len() as u64;
    assert!(first.bytes >= payloads, "{} < {payloads}", first.bytes);
    assert!(
        first.bytes < 4 * payloads,
        "{} bytes for {payloads} bytes of payload: preallocation counted",
        first.bytes
    );
    let on_disk: u64 = walk(&path);
    assert!(
        first.bytes < on_disk,
        "preallocated files are larger than their contents"
    );

    store
        .write_batch((391..782).map(envelope).collect())
        .unwrap();
    store.sync().unwrap();
    let second = store.stats().unwrap();
    assert!(
        second.bytes >= first.bytes + payloads,
        "{second:?} after {first:?}"
    );
    drop(store);
    let closed = store::open_read_only(&path, None).unwrap().stats().unwrap();
    assert!(closed.bytes >= second.bytes, "{closed:?}");

    let output = cli::command()
        .args(["stats", "--store"])
        .arg(&path)
        .output_safely()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("bytes       {}\n", closed.bytes)),
        "{text}"
    );
}

fn walk(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                walk(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}
