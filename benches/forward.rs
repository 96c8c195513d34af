//! Forwarding throughput (records/s) from a segment-log store to real servers on 127.0.0.1:
//! Redis Streams (pipelined `XADD` in `MULTI`/`EXEC`), NATS JetStream (acknowledged, with
//! `Nats-Msg-Id`) and core NATS, through the library's forwarder with a checkpoint saved
//! (atomically, with fsync) after every batch. The servers are started by the bench
//! (Redis without persistence, JetStream with file storage); a missing binary skips its
//! group with a message.

#[path = "../tests/forward_support/mod.rs"]
mod forward_support;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use esl_replay::checkpoint::{CheckpointService, CheckpointStore};
use esl_replay::forward::{
    self, ForwardOptions, Metrics, NatsMode, NatsOptions, NatsSink, RedisOptions, RedisSink, Sink,
    Source,
};
use forward_support::{Kind, Server, fill_store};

/// Records forwarded per measured run.
const RECORDS: u64 = 20_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Forwards the whole store once with a fresh checkpoint key; returns the time taken.
fn forward_once<S: Sink>(
    runtime: &tokio::runtime::Runtime,
    source: &Source,
    sink: &mut S,
    checkpoints: &Path,
    key: &str,
    batch_size: usize,
) -> Duration {
    let service = CheckpointService::new(CheckpointStore::open(checkpoints).unwrap(), key).unwrap();
    let mut options = ForwardOptions::default();
    options.batch_size = batch_size;
    let metrics = Metrics::new(sink.target());
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let report = runtime
        .block_on(forward::forward(
            source, sink, &service, &options, &metrics, shutdown,
        ))
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.acked_sequence, RECORDS);
    elapsed
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fill_store(&store, RECORDS);
    let source = Source::open_read_only(&store, None).unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let runtime = runtime();
    let mut group = c.benchmark_group("forward");
    group.throughput(Throughput::Elements(RECORDS));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    let mut run = 0u64;

    if let Some(redis) = Server::start_with(Kind::Redis, false) {
        for batch in [100, 1000] {
            let mut sink = RedisSink::new(RedisOptions::new(redis.url(), "bench")).unwrap();
            group.bench_function(format!("redis/batch_{batch}"), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            run += 1;
                            let key = format!("redis-{run}");
                            forward_once(&runtime, &source, &mut sink, &checkpoints, &key, batch)
                        })
                        .sum()
                });
            });
        }
    }

    if let Some(nats) = Server::start(Kind::Nats) {
        for batch in [100, 1000] {
            group.bench_function(format!("jetstream/batch_{batch}"), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            // A fresh stream per run: the same record ids would otherwise all
                            // be duplicates.
                            run += 1;
                            let mode = NatsMode::JetStream {
                                stream: Some(format!("BENCH_{run}")),
                                create: true,
                                duplicate_window: Duration::from_secs(120),
                            };
                            let options =
                                NatsOptions::new(nats.url(), format!("bench.{run}"), mode);
                            let mut sink = NatsSink::new(options);
                            let key = format!("jetstream-{run}");
                            forward_once(&runtime, &source, &mut sink, &checkpoints, &key, batch)
                        })
                        .sum()
                });
            });
        }
        let options = NatsOptions::new(nats.url(), "bench.core", NatsMode::Core);
        let mut sink = NatsSink::new(options);
        group.bench_function("nats_core/batch_1000", |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        run += 1;
                        let key = format!("core-{run}");
                        forward_once(&runtime, &source, &mut sink, &checkpoints, &key, 1000)
                    })
                    .sum()
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
