//! Forwarding throughput (records/s) from a segment-log store to real servers on 127.0.0.1:
//! Redis Streams (pipelined `XADD` in `MULTI`/`EXEC`), NATS JetStream (acknowledged, with
//! `Nats-Msg-Id`) and core NATS, through the library's forwarder with its default options
//! (one batch read ahead, checkpoint saves coalesced to one a second and one at the end).
//! The servers are started by the bench (Redis without persistence, JetStream with file
//! storage); a missing binary skips its group with a message.
//!
//! After the criterion groups, the `f1` section compares, round by round in one run, our
//! Redis forward of `ESL_BENCH_FORWARD_RECORDS` records (default 100,000) in batches of
//! 1,000 with `redis-benchmark -P 1000` running `XADD` with the same field names and value
//! sizes on the same server, and prints a `RESULT` line (target F1: ≥ 0.5×).

// The tests' helpers, for starting redis-server and nats-server.
#[path = "../tests/support/mod.rs"]
mod support;

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use esl_replay::checkpoint::{CheckpointService, CheckpointStore};
use esl_replay::forward::{
    self, ForwardOptions, Message, Metrics, NatsMode, NatsOptions, NatsSink, RedisOptions,
    RedisSink, Sink, Source,
};
use esl_replay::record::{Criteria, ReadCursor};
use support::forward::{Kind, Server, fill_store, find_binary};

/// Records forwarded per measured criterion run.
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
    let end = source.store().stats().unwrap().last_sequence;
    assert_eq!(report.acked_sequence, end);
    elapsed
}

fn bench(c: &mut Criterion) {
    let records = common::size(RECORDS as usize, 2_000) as u64;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fill_store(&store, records);
    let source = Source::open_read_only(&store, None).unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let runtime = runtime();
    let mut group = c.benchmark_group("forward");
    group.throughput(Throughput::Elements(records));
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

/// The `XADD` arguments redis-benchmark sends: the field names our sink writes, each value
/// as long as the mean of that field over `messages` (fields present in at least half of
/// them), in the sink's order. Returns the arguments and the mean bytes of field values.
fn baseline_fields(messages: &[Message]) -> (Vec<String>, usize) {
    let mut names: Vec<&'static str> = Vec::new();
    let mut totals: Vec<(usize, usize)> = Vec::new();
    let mut add = |name: &'static str, len: usize| {
        let at = names.iter().position(|n| *n == name).unwrap_or_else(|| {
            names.push(name);
            totals.push((0, 0));
            names.len() - 1
        });
        totals[at].0 += len;
        totals[at].1 += 1;
    };
    for message in messages {
        for (field, _, value) in message.routing_fields() {
            add(field, value.len());
        }
        add(forward::message::FIELD_RECORD, message.body.len());
    }
    let mut arguments = Vec::new();
    let mut bytes = 0;
    for (name, (total, count)) in names.iter().zip(&totals) {
        if count * 2 < messages.len() {
            continue;
        }
        let mean = total / count;
        bytes += mean;
        arguments.push((*name).to_owned());
        arguments.push("x".repeat(mean));
    }
    (arguments, bytes)
}

/// One `redis-benchmark` run of `count` `XADD`s on `stream` in pipelines of 1,000 over
/// `clients` connections; requests per second as it reports them.
fn redis_benchmark(port: u16, clients: u32, count: u64, stream: &str, fields: &[String]) -> f64 {
    let output = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-c", &clients.to_string(), "-P", "1000"])
        .args(["-n", &count.to_string(), "--csv"])
        .args(["XADD", stream, "*"])
        .args(fields)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "redis-benchmark failed: {output:?}"
    );
    let text = String::from_utf8_lossy(&output.stdout);
    // "test","rps",...\n"XADD ...","123456.79",...
    let row = text.lines().nth(1).unwrap_or_default();
    row.split("\",\"")
        .nth(1)
        .and_then(|rps| rps.trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("cannot read redis-benchmark's output: {text}"))
}

fn delete_key(url: &str, key: &str) {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_connection().unwrap();
    let _: () = redis::cmd("DEL").arg(key).query(&mut connection).unwrap();
}

/// F1: our Redis forward against `redis-benchmark`, interleaved, medians of per-round ratios.
fn f1_redis_benchmark() {
    common::print_section("f1: forward to Redis vs redis-benchmark -P 1000 XADD");
    if find_binary("redis-benchmark").is_none() {
        common::print_note("SKIPPED: redis-benchmark is not installed");
        return;
    }
    let Some(redis) = Server::start_with(Kind::Redis, false) else {
        return;
    };
    let records: u64 = std::env::var("ESL_BENCH_FORWARD_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    fill_store(&store, records);
    let source = Source::open_read_only(&store, None).unwrap();
    // The last 1,000 records: their sequences have as many digits as most of the store's.
    let sample = source
        .store()
        .read_from_cursor(
            &ReadCursor::new(records.saturating_sub(1000), None),
            1000,
            &Criteria::any(),
        )
        .unwrap();
    let messages: Vec<Message> = sample.iter().map(Message::from_record).collect();
    let (fields, bytes) = baseline_fields(&messages);
    let shape: Vec<String> = fields
        .chunks(2)
        .map(|pair| format!("{}={}B", pair[0], pair[1].len()))
        .collect();
    common::print_note(&format!(
        "{records} records per run; XADD fields {} ({bytes} value bytes per entry)",
        shape.join(" ")
    ));
    let checkpoints = dir.path().join("checkpoints");
    let runtime = runtime();
    let mut sink = RedisSink::new(RedisOptions::new(redis.url(), "bench:ours")).unwrap();
    let (mut ours, mut baseline, mut single) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..5 {
        // The command as given (50 connections), then one connection as our forwarder uses.
        for (clients, rates) in [(50, &mut baseline), (1, &mut single)] {
            rates.push(redis_benchmark(
                redis.port,
                clients,
                records,
                "bench:baseline",
                &fields,
            ));
            delete_key(&redis.url(), "bench:baseline");
        }
        let key = format!("f1-{round}");
        let elapsed = forward_once(&runtime, &source, &mut sink, &checkpoints, &key, 1000);
        ours.push(records as f64 / elapsed.as_secs_f64());
        delete_key(&redis.url(), "bench:ours");
    }
    let fmt = |rates: &[f64]| {
        rates
            .iter()
            .map(|r| format!("{:.0}k", r / 1e3))
            .collect::<Vec<_>>()
            .join(" ")
    };
    common::print_note(&format!(
        "rounds: ours {} | redis-benchmark -c 50 {} | -c 1 {}",
        fmt(&ours),
        fmt(&baseline),
        fmt(&single)
    ));
    let ratio = |base: &[f64]| {
        common::median(
            &ours
                .iter()
                .zip(base)
                .map(|(o, b)| o / b)
                .collect::<Vec<_>>(),
        )
    };
    let ours_median = common::fmt_rate(common::median(&ours));
    for (id, rates, clients) in [
        ("f1_forward_redis_vs_rb_c50", &baseline, "-c 50"),
        ("f1_forward_redis_vs_rb_c1", &single, "-c 1"),
    ] {
        let ratio = ratio(rates);
        common::print_ratio(
            id,
            &ours_median,
            &common::fmt_rate(common::median(rates)),
            ratio,
            &format!(">= 0.5x r-b {clients}"),
            ratio >= 0.5,
        );
    }
}

fn main() {
    let mut c = common::criterion();
    bench(&mut c);
    c.final_summary();
    if common::selected("f1") {
        f1_redis_benchmark();
    }
}
