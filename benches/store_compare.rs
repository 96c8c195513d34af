//! The artifact store on the segment log against SQLite, through the same `ArtifactStore`
//! trait, on the realistic ~370-byte dataset: batched append (T2), decoded replay in pages of
//! 500 (T6) and lookup by id (T9). `esl-replay bench compare` prints the same comparison as a
//! table with ratios in one run.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use esl_replay::record::{Criteria, ReadCursor, RecordId};
use esl_replay::store::{ArtifactStore, LogStore, SqliteStore, dataset};

// The same allocator as the `esl-replay` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RECORDS: u64 = 20_000;

fn filled(store: &mut dyn ArtifactStore) -> Vec<RecordId> {
    let mut ids = Vec::new();
    for start in (0..RECORDS).step_by(1000) {
        ids.extend(
            store
                .write_batch((start..start + 1000).map(dataset::envelope).collect())
                .unwrap(),
        );
    }
    store.sync().unwrap();
    ids
}

fn backends(dir: &std::path::Path) -> Vec<(&'static str, Box<dyn ArtifactStore>)> {
    vec![
        (
            "log",
            Box::new(LogStore::open(dir.join("log-store")).unwrap()),
        ),
        (
            "sqlite",
            Box::new(SqliteStore::open(&dir.join("store.sqlite")).unwrap()),
        ),
    ]
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("store_append_batch_1000");
    group.throughput(Throughput::Elements(1000));
    group.sample_size(20);
    let dir = tempfile::tempdir().unwrap();
    for (name, mut store) in backends(dir.path()) {
        let mut n = 0;
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n += 1000;
                    (n..n + 1000).map(dataset::envelope).collect::<Vec<_>>()
                },
                |batch| black_box(store.write_batch(batch).unwrap()),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn replay_and_lookup(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut stores: Vec<(&str, Box<dyn ArtifactStore>, Vec<RecordId>)> = backends(dir.path())
        .into_iter()
        .map(|(name, mut store)| {
            let ids = filled(store.as_mut());
            (name, store, ids)
        })
        .collect();
    let mut group = c.benchmark_group("store_replay_pages_of_500");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    for (name, store, _) in &stores {
        group.bench_function(*name, |b| {
            b.iter(|| {
                let (mut cursor, mut count) = (ReadCursor::start(), 0);
                loop {
                    let page = store
                        .read_from_cursor(&cursor, 500, &Criteria::any())
                        .unwrap();
                    let Some(last) = page.last() else { break };
                    cursor = cursor.advance(last.append_sequence(), None).unwrap();
                    count += page.len();
                }
                assert_eq!(count as u64, RECORDS);
            });
        });
    }
    group.finish();
    let mut group = c.benchmark_group("store_lookup_by_id");
    for (name, store, ids) in &mut stores {
        let mut i = 0usize;
        group.bench_function(*name, |b| {
            b.iter(|| {
                i = (i + 7919) % ids.len();
                black_box(store.read_by_id(&ids[i]).unwrap().unwrap())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, append, replay_and_lookup);
criterion_main!(benches);
