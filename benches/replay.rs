//! Offline replay throughput: the executor over one million stored records (the realistic
//! ~370-byte dataset), in dry-run and with a handler that does nothing, against reading
//! the same records in pages of 500 without an executor (the store's own decode cost,
//! measured in the same run).
//!
//! The store is built once in a scratch directory; every iteration replays it from the
//! start in batches of the default 500. Run with `cargo bench --bench replay`;
//! `cargo test --benches` replays 2,000 records once.

mod common;

use std::hint::black_box;
use std::time::Duration;

use common::{scratch_dir, size};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use esl_replay::record::{Criteria, JsonMap, ReadCursor, Record};
use esl_replay::replay::{
    BoxError, ExecutionConfig, ExecutionSettings, Executor, Handler, HandlerRegistry,
    HandlerResult, RangeOptions, replay_range,
};
use esl_replay::store::{ArtifactReader, ArtifactStore, LogStore, dataset};

// The same allocator as the `esl-replay` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A handler that does nothing but answer.
struct Noop;

impl Handler for Noop {
    fn name(&self) -> &str {
        "noop"
    }

    fn handle(&mut self, _record: &Record) -> Result<HandlerResult, BoxError> {
        Ok(HandlerResult::new("noop", JsonMap::new())?)
    }
}

fn replay_all(store: &LogStore, dry_run: bool, handlers: HandlerRegistry) -> u64 {
    let config = ExecutionConfig::new(ExecutionSettings {
        dry_run,
        ..ExecutionSettings::default()
    })
    .unwrap();
    let mut executor = Executor::new(config, store, handlers, None).unwrap();
    let mut outcomes = 0u64;
    let report = replay_range(
        &mut executor,
        ReadCursor::start(),
        &RangeOptions::default(),
        |result| outcomes += result.outcomes().len() as u64,
    )
    .unwrap();
    assert!(report.success());
    outcomes
}

fn replay(c: &mut Criterion) {
    let records = size(1_000_000, 2_000) as u64;
    let dir = scratch_dir("replay");
    let mut store = LogStore::open(dir.path().join("store")).unwrap();
    for start in (0..records).step_by(10_000) {
        let end = (start + 10_000).min(records);
        store
            .write_batch((start..end).map(dataset::envelope).collect())
            .unwrap();
    }
    store.sync().unwrap();

    let mut group = c.benchmark_group("replay_1m");
    group.throughput(Throughput::Elements(records));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(30));
    group.bench_function("store_pages_of_500", |b| {
        b.iter(|| {
            let (mut cursor, mut count) = (ReadCursor::start(), 0u64);
            loop {
                let page = store
                    .read_from_cursor(&cursor, 500, &Criteria::any())
                    .unwrap();
                let Some(last) = page.last() else { break };
                cursor = cursor.advance(last.append_sequence(), None).unwrap();
                count += page.len() as u64;
            }
            assert_eq!(black_box(count), records);
        });
    });
    group.bench_function("dry_run", |b| {
        b.iter(|| assert_eq!(replay_all(&store, true, HandlerRegistry::new()), records));
    });
    group.bench_function("noop_handler", |b| {
        b.iter(|| {
            let mut handlers = HandlerRegistry::new();
            handlers.set_fallback(Box::new(Noop));
            assert_eq!(replay_all(&store, false, handlers), records);
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = common::criterion();
    targets = replay
}
criterion_main!(benches);
