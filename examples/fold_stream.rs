//! Fold replay: rebuild a state from a stored stream at any sequence, with snapshots so that
//! a later fold starts from the nearest one instead of the beginning.
//!
//! Here the state is how many calls are open and how many events of each name were seen,
//! folded over a store of generated ESL events.
//! `cargo run --release --example fold_stream`.

use std::collections::BTreeMap;

use esl_replay::record::Record;
use esl_replay::replay::{FoldOptions, MemorySnapshots, Stream, fold};
use esl_replay::store::{ArtifactStore as _, LogStore, dataset};

/// Calls answered minus calls hung up, and how many events of each name were seen.
#[derive(Clone, Debug, Default, PartialEq)]
struct Calls {
    open: i64,
    events: BTreeMap<String, u64>,
}

/// Pure: the result depends only on the arguments, so snapshots and folds agree.
fn apply(mut calls: Calls, record: &Record) -> Calls {
    let name = record.event_name().unwrap_or("unknown");
    *calls.events.entry(name.to_owned()).or_default() += 1;
    match name {
        "CHANNEL_ANSWER" => calls.open += 1,
        "CHANNEL_HANGUP" | "CHANNEL_HANGUP_COMPLETE" => calls.open -= 1,
        _ => {}
    }
    calls
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut store = LogStore::open(dir.path().join("store"))?;
    store.write_batch((0..20_000).map(dataset::envelope).collect())?;

    let mut snapshots = MemorySnapshots::new();
    let options = FoldOptions {
        snapshot_every: 5_000,
        ..FoldOptions::default()
    };
    let stream = Stream::all();
    let at_half = fold(
        &store,
        &mut snapshots,
        &stream,
        10_000,
        apply,
        Calls::default(),
        &options,
    )?;
    println!(
        "at 10000: {:?} ({} applied, {} snapshots saved)",
        at_half.state, at_half.applied, at_half.snapshots_saved
    );
    let at_end = fold(
        &store,
        &mut snapshots,
        &stream,
        20_000,
        apply,
        Calls::default(),
        &options,
    )?;
    println!(
        "at 20000: {:?} (from snapshot {:?}, {} applied)",
        at_end.state, at_end.from_snapshot, at_end.applied
    );
    // The same state from scratch: snapshots only save work.
    let scratch = fold(
        &store,
        &mut MemorySnapshots::new(),
        &stream,
        20_000,
        apply,
        Calls::default(),
        &FoldOptions::default(),
    )?;
    assert_eq!(scratch.state, at_end.state);
    Ok(())
}
