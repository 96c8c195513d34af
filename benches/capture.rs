//! T14: ESL capture throughput from a local peer, with zero loss verified by sequence
//! accounting, and memory under a 10× burst.
//!
//! A thread plays FreeSWITCH on 127.0.0.1: greeting, auth, the `event` reply, then a burst of
//! plain events (~370-byte bodies, each with its own Event-Sequence) written as fast as the
//! socket takes them. `capture` runs the full node (session, queue, batch writer, segment
//! log with group commit, sealed segments packed in the background as `esl-replay capture`
//! does) and stops when every event is stored; the run then checks that the
//! store holds every Event-Sequence exactly once and no gap. The baseline, measured in the
//! same run, is the floor: the same socket read and ESL decode with nothing stored.
//!
//! After the criterion groups, `RESULT` lines give events/s of both and their ratio; drops
//! when paced at 100 k events/s for 30 s; for a burst of 10× the events into a 16 MiB queue,
//! peak queue bytes, drops and the resident memory it added (measured in a fresh child
//! process); and T15, capture-to-durable latency at 5 k and 20 k events/s (from the
//! capture's own `esl_capture_durable_latency_seconds` histogram) against raw 4 KiB
//! `fdatasync` measured in the same run.

mod common;

// The same allocator as the `esl-replay` binary: the capture writer builds many small maps.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Throughput;
use esl_replay::capture::{Capture, CaptureOptions, NodeConfig, NodeSpec, Password, Telemetry};
use esl_replay::esl::EslCodec;
use esl_replay::esl::session::Subscriptions;
use esl_replay::record::{Criteria, ReadCursor};
use esl_replay::storage::{DEFAULT_PACK_LEVEL, LogOptions};
use esl_replay::store::{ArtifactReader, LogStore};
use futures_util::StreamExt as _;
use tokio_util::codec::FramedRead;

const EVENTS: u64 = 100_000;

/// `n` plain events with ~370-byte bodies and Event-Sequence 1..=n, as one byte buffer and
/// the end offset of each event.
struct Burst {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

fn burst(n: u64) -> Burst {
    let mut out = Vec::with_capacity(n as usize * 420);
    let mut ends = Vec::with_capacity(n as usize);
    for seq in 1..=n {
        write_event(&mut out, seq);
        ends.push(out.len());
    }
    Burst { bytes: out, ends }
}

/// Appends plain event `seq` (~370-byte body) with its outer headers.
fn write_event(out: &mut Vec<u8>, seq: u64) {
    let body = format!(
        "Event-Name: CHANNEL_STATE\nCore-UUID: 8a5f3c2e-1b7d-4c9e-a6f0-3d2b1e9c7a41\n\
         FreeSWITCH-Hostname: fs1\nEvent-Date-Timestamp: {}\nEvent-Sequence: {seq}\n\
         Channel-State: CS_ROUTING\nChannel-Name: sofia/internal/1001%40192.0.2.10\n\
         Unique-ID: 4f1c2d9a-6b3e-4a7f-9c2d-{:012}\nCall-Direction: inbound\n\
         Caller-Caller-ID-Number: 1001\nCaller-Destination-Number: 3000\n\
         variable_sip_call_id: a84b4c76e66710%40198.51.100.23\n\n",
        1_767_261_600_000_000u64 + seq,
        seq
    );
    out.extend_from_slice(
        format!(
            "Content-Length: {}\nContent-Type: text/event-plain\n\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body.as_bytes());
}

/// What the peer sends after the handshake.
#[derive(Clone)]
enum Source {
    /// These events, as fast as the socket takes them.
    Burst(Arc<Burst>),
    /// `total` events written as they fall due at `rate` events/s, in 0.5 ms slices.
    Paced { rate: u64, total: u64 },
}

impl Source {
    fn events(&self) -> u64 {
        match self {
            Source::Burst(burst) => burst.ends.len() as u64,
            Source::Paced { total, .. } => *total,
        }
    }
}

/// A one-connection FreeSWITCH that sends `source` after the handshake, then waits for the
/// client to leave.
fn peer(source: Source) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        // As mod_event_socket does: each event leaves when it is written.
        socket.set_nodelay(true).unwrap();
        let mut reader = BufReader::new(socket.try_clone().unwrap());
        let mut command = || {
            let mut seen = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return false;
                }
                if line == "\n" && seen > 0 {
                    return true;
                }
                seen += 1;
            }
        };
        socket.write_all(b"Content-Type: auth/request\n\n").unwrap();
        if !command() {
            return;
        }
        socket
            .write_all(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
            .unwrap();
        if !command() {
            return;
        }
        socket
            .write_all(
                b"Content-Type: command/reply\nReply-Text: +OK event listener enabled plain\n\n",
            )
            .unwrap();
        match source {
            Source::Burst(events) => {
                let _ = socket.write_all(&events.bytes);
            }
            Source::Paced { rate, total } => {
                let started = Instant::now();
                let mut sent = 0;
                let mut slice = Vec::new();
                while sent < total {
                    let due =
                        ((started.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
                    if due > sent {
                        slice.clear();
                        for seq in sent + 1..=due {
                            write_event(&mut slice, seq);
                        }
                        let _ = socket.write_all(&slice);
                        sent = due;
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
            }
        }
        while command() {}
    });
    address
}

struct Run {
    elapsed: Duration,
    drops: u64,
    peak_queue_bytes: usize,
    /// The capture's Prometheus text after the run.
    metrics: String,
}

/// Captures the events into a fresh store; with `verify`, checks every Event-Sequence is
/// stored once and nothing was dropped; with `settle`, first lets the store prepare its
/// spare segment and waits for the disk to finish earlier writeback (as T4 does), so that
/// latency is not measured against the previous runs' dirty pages.
fn capture_run(
    runtime: &tokio::runtime::Runtime,
    source: &Source,
    queue_bytes: usize,
    verify: bool,
    settle: bool,
) -> Run {
    let n = source.events();
    let dir = common::scratch_dir("t14");
    let address = peer(source.clone());
    // As `esl-replay capture` opens it: sealed segments are packed in the background
    // (`ESL_BENCH_NO_PACK` set: not packed, to compare), their originals reused for the next
    // segments (`ESL_BENCH_NO_RECYCLE` set: new zero-filled ones, to compare).
    let options = LogOptions {
        pack_level: std::env::var_os("ESL_BENCH_NO_PACK")
            .is_none()
            .then_some(DEFAULT_PACK_LEVEL),
        recycle_segments: std::env::var_os("ESL_BENCH_NO_RECYCLE").is_none(),
        ..LogOptions::default()
    };
    let store = LogStore::open_with(dir.path().join("store"), options).unwrap();
    if settle {
        std::thread::sleep(Duration::from_secs(1));
        common::settle_disk(dir.path());
    }
    runtime.block_on(async {
        let mut config = NodeConfig::new(address);
        config.password = Password::default();
        config.subscriptions = Subscriptions::all();
        let options = CaptureOptions {
            queue_bytes,
            ..CaptureOptions::default()
        };
        let started = Instant::now();
        let capture = Capture::start(
            vec![NodeSpec {
                slug: "bench".into(),
                config,
            }],
            Box::new(store),
            options,
        )
        .unwrap();
        let telemetry = capture.telemetry();
        let label = Telemetry::node("bench");
        let mut peak_queue_bytes = 0;
        // Handshake: subscription.mutate, opened, greeting, auth, reply, command, reply.
        while telemetry.artifacts.get_or_create(&label).get()
            + telemetry.drops.get_or_create(&label).get()
            < n + 7
        {
            peak_queue_bytes = peak_queue_bytes.max(capture.queue_depth().1);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let elapsed = started.elapsed();
        let drops = telemetry.drops.get_or_create(&label).get();
        let (store, _) = capture.shutdown().await.unwrap();
        let metrics = telemetry.encode();
        if verify {
            assert_eq!(drops, 0, "zero loss");
            check_sequences(store.as_ref(), n);
        }
        Run {
            elapsed,
            drops,
            peak_queue_bytes,
            metrics,
        }
    })
}

/// Every Event-Sequence 1..=n is stored exactly once, and no gap was recorded.
fn check_sequences(store: &dyn ArtifactReader, n: u64) {
    let mut seen = vec![false; n as usize + 1];
    let mut cursor = ReadCursor::start();
    loop {
        let batch = store
            .read_from_cursor(&cursor, 10_000, &Criteria::default())
            .unwrap();
        let Some(last) = batch.last() else { break };
        cursor = ReadCursor::new(last.append_sequence(), None);
        for record in &batch {
            assert_ne!(record.artifact_name(), "capture.gap", "a gap was recorded");
            if record.artifact_name() == "event.raw" {
                let seq: usize = record.runtime_flags()["replay_protocol_sequence"]
                    .as_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                assert!(!seen[seq], "sequence {seq} stored twice");
                seen[seq] = true;
            }
        }
    }
    assert!(seen[1..].iter().all(|s| *s), "an event is missing");
}

/// The floor: read and decode the same burst from the socket, storing nothing.
fn floor_run(runtime: &tokio::runtime::Runtime, events: &Arc<Burst>) -> Duration {
    let n = events.ends.len() as u64;
    let address = peer(Source::Burst(Arc::clone(events)));
    runtime.block_on(async {
        let started = Instant::now();
        let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
        use tokio::io::AsyncWriteExt as _;
        socket
            .write_all(b"auth ClueCon\n\nevent plain ALL\n\n")
            .await
            .unwrap();
        let mut frames = FramedRead::new(socket, EslCodec::new());
        let mut count = 0;
        while count < n + 3 {
            frames.next().await.unwrap().unwrap();
            count += 1;
        }
        started.elapsed()
    })
}

/// A field of `/proc/self/status` in KiB (`VmRSS`, `VmHWM`).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The latency at quantile `q` from a Prometheus histogram in `metrics` (linear within the
/// bucket, as `histogram_quantile` does), and its sample count.
fn histogram_quantile(metrics: &str, name: &str, q: f64) -> (f64, u64) {
    let prefix = format!("{name}_bucket{{le=\"");
    let buckets: Vec<(f64, u64)> = metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    let total = buckets.last().map_or(0, |b| b.1);
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(le, count) in &buckets {
        if count as f64 >= rank {
            if le.is_infinite() {
                return (lower.0, total);
            }
            let within = (rank - lower.1 as f64) / (count - lower.1).max(1) as f64;
            return (lower.0 + (le - lower.0) * within, total);
        }
        lower = (le, count);
    }
    (f64::NAN, total)
}

/// The child process of the burst measurement: run it alone, print its RESULT line.
const CHILD_ENV: &str = "ESL_BENCH_T14_BURST_CHILD";

fn main() {
    if let Ok(n) = std::env::var(CHILD_ENV) {
        burst_child(n.parse().expect("burst size"));
        return;
    }
    let mut c = common::criterion();
    bench(&mut c);
}

/// A 10× burst at line rate into a 16 MiB queue, in a fresh process so that nothing an
/// earlier run allocated hides or inflates the resident memory the capture adds.
fn burst_child(n: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let source = Source::Burst(Arc::new(burst(n)));
    let before = status_kib("VmRSS:");
    let run = capture_run(&runtime, &source, 16 << 20, false, false);
    let added = status_kib("VmHWM:").saturating_sub(before);
    println!(
        "RESULT t14 burst {n} events at line rate with a 16 MiB queue: done in {:.2}s, peak queue {:.1} MiB, {} dropped (each in a gap record), resident memory added {} MiB (target <= 16 + 64 MiB)",
        run.elapsed.as_secs_f64(),
        run.peak_queue_bytes as f64 / f64::from(1 << 20),
        run.drops,
        added / 1024,
    );
}

/// A capture queue no run fills: nothing is dropped, so the figure is the pipeline's own.
const UNBOUNDED_QUEUE: usize = 1 << 30;

fn bench(c: &mut criterion::Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let test_mode = !std::env::args().any(|a| a == "--bench");
    // `ESL_BENCH_ONLY=t15` measures T15 alone.
    if !test_mode && std::env::var("ESL_BENCH_ONLY").is_ok_and(|only| only == "t15") {
        t15(&runtime);
        return;
    }
    let n = if test_mode { 200 } else { EVENTS };
    let events = Arc::new(burst(n));
    let whole_burst = Source::Burst(Arc::clone(&events));
    // The pipeline's sustained rate: nothing is dropped, and the time is how long capture
    // takes to store the burst.
    let mut group = c.benchmark_group("t14_capture");
    group.throughput(Throughput::Elements(n));
    group.bench_function("capture_to_log_store", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| capture_run(&runtime, &whole_burst, UNBOUNDED_QUEUE, true, false).elapsed)
                .sum()
        })
    });
    group.bench_function("floor_read_and_decode", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| floor_run(&runtime, &events)).sum())
    });
    group.finish();
    c.final_summary();
    if test_mode {
        return;
    }
    let mut ratios = Vec::new();
    let mut rates = Vec::new();
    for _ in 0..5 {
        let ours = capture_run(&runtime, &whole_burst, UNBOUNDED_QUEUE, true, false).elapsed;
        let floor = floor_run(&runtime, &events);
        rates.push(n as f64 / ours.as_secs_f64());
        ratios.push(floor.as_secs_f64() / ours.as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    ratios.sort_by(f64::total_cmp);
    println!(
        "RESULT t14 capture sustained median {:.0} events/s (every Event-Sequence stored once, no gap; target >= 100000), {:.2} of the decode-only floor",
        rates[2], ratios[2]
    );
    // Paced at T14's 100 k events/s (or ESL_BENCH_T14_RATE) for 30 s (or
    // ESL_BENCH_T14_SECONDS) through the default queue: zero loss is the target; drops are
    // reported, each in a gap record.
    let rate: u64 = env_or("ESL_BENCH_T14_RATE", 100_000);
    let seconds: u64 = env_or("ESL_BENCH_T14_SECONDS", 30);
    let paced = Source::Paced {
        rate,
        total: rate * seconds,
    };
    let run = capture_run(
        &runtime,
        &paced,
        CaptureOptions::default().queue_bytes,
        false,
        false,
    );
    println!(
        "RESULT t14 paced {rate} events/s for {seconds} s: {} events in {:.2}s, {} dropped (target 0), peak queue {:.1} MiB",
        rate * seconds,
        run.elapsed.as_secs_f64(),
        run.drops,
        run.peak_queue_bytes as f64 / f64::from(1 << 20)
    );
    // The burst, in a child process (see `burst_child`).
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, (10 * n).to_string())
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}",
        String::from_utf8_lossy(&child.stderr)
    );
    print!("{}", String::from_utf8_lossy(&child.stdout));
    t15(&runtime);
}

/// T15: capture-to-durable latency, open loop, group commit, against raw fdatasync.
fn t15(runtime: &tokio::runtime::Runtime) {
    let dir = common::scratch_dir("t15-raw");
    common::settle_disk(dir.path());
    let raw = common::percentiles(&mut common::raw_fdatasync_latencies(dir.path(), 2_000));
    let reserved = common::percentiles(&mut common::raw_fallocated_fdatasync_latencies(
        dir.path(),
        2_000,
        3_000,
    ));
    println!(
        "context: raw 3,000 B pwrite + fdatasync into fallocated space (how the log reserves segments): p50 {} p99 {}",
        common::fmt_ns(reserved.p50),
        common::fmt_ns(reserved.p99),
    );
    for rate in [5_000, 20_000] {
        let run = capture_run(
            runtime,
            &Source::Paced {
                rate,
                total: rate * 10,
            },
            UNBOUNDED_QUEUE,
            false,
            true,
        );
        let name = "esl_capture_durable_latency_seconds";
        let (p50, count) = histogram_quantile(&run.metrics, name, 0.50);
        let (p99, _) = histogram_quantile(&run.metrics, name, 0.99);
        let (p999, _) = histogram_quantile(&run.metrics, name, 0.999);
        let raw50 = raw.p50 as f64 / 1e9;
        let raw99 = raw.p99 as f64 / 1e9;
        println!(
            "RESULT t15 capture-to-durable at {rate} events/s for 10 s, group commit: n={count} p50 {} p99 {} p99.9 {}; raw 4 KiB fdatasync p50 {} p99 {}; ratio p50 {:.2}x (target <= 2), p99 {:.2}x (target <= 4)",
            common::fmt_ns((p50 * 1e9) as u64),
            common::fmt_ns((p99 * 1e9) as u64),
            common::fmt_ns((p999 * 1e9) as u64),
            common::fmt_ns(raw.p50),
            common::fmt_ns(raw.p99),
            p50 / raw50,
            p99 / raw99,
        );
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}
