//! ESL server benchmarks: how fast the simulator generates events, and how fast `simulate`
//! and `serve` deliver them to one client over 127.0.0.1.
//!
//! Criterion measures generating one simulated event and rendering its frame (plain, and
//! converted to JSON). The printed sections (only under `cargo bench`) stream events to a
//! client that decodes every frame with the crate's codec and count events per second:
//! `simulate` (generation + delivery), `serve` from a segment-log store (store reads +
//! delivery), and the baseline of the same client reading pre-rendered frames from a plain
//! socket writer (the loopback floor). Run with `cargo bench --bench serve`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput};
use esl_replay::esl::EslCodec;
use esl_replay::record::{Envelope, JsonMap};
use esl_replay::server::{
    self, EventFormat, FeedItem, ReplayOptions, ServerConfig, Simulator, SimulatorConfig,
    StoreReplay, Traffic,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder as _;

/// Criterion's own rule: `cargo bench` passes `--bench`, `cargo test --benches` does not.
fn bench_mode() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test")
}

fn simulator() -> Simulator {
    Simulator::new(SimulatorConfig {
        rate: None,
        ..SimulatorConfig::default()
    })
    .expect("simulator")
}

fn criterion_benches(c: &mut Criterion) {
    let sim = simulator();
    let mut feed = sim.feed().expect("feed");
    let mut out = BytesMut::with_capacity(1 << 20);
    let mut group = c.benchmark_group("simulator");
    group.throughput(Throughput::Elements(1));
    for format in [EventFormat::Plain, EventFormat::Json] {
        group.bench_function(format!("generate_render_{}", format.keyword()), |b| {
            b.iter(|| {
                if let FeedItem::Event { event, .. } = feed.next_item().expect("item") {
                    event.render(format, &mut out);
                }
                if out.len() > (1 << 20) - 16 * 1024 {
                    out.clear();
                }
            });
        });
    }
    group.finish();
}

/// Authenticates, subscribes to everything, and counts event frames until the disconnect
/// notice. Returns (events, bytes).
async fn count_events(addr: std::net::SocketAddr) -> (u64, u64) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    stream
        .write_all(b"auth ClueCon\n\nevent plain ALL\n\n")
        .await
        .expect("subscribe");
    read_frames(stream).await
}

async fn read_frames(mut stream: TcpStream) -> (u64, u64) {
    let mut codec = EslCodec::new();
    let mut buf = BytesMut::with_capacity(1 << 20);
    let (mut events, mut bytes) = (0u64, 0u64);
    loop {
        while let Some(frame) = codec.decode(&mut buf).expect("frame") {
            match frame.content_type() {
                Some("text/event-plain") => {
                    events += 1;
                    bytes += (frame.raw_head().len() + frame.body().len()) as u64;
                }
                Some("text/disconnect-notice") => return (events, bytes),
                _ => {}
            }
        }
        if stream.read_buf(&mut buf).await.expect("read") == 0 {
            return (events, bytes);
        }
    }
}

fn report(name: &str, events: u64, bytes: u64, elapsed: Duration) -> f64 {
    let rate = events as f64 / elapsed.as_secs_f64();
    println!(
        "  {name:<34} {events} events, {:.1} MB in {:.2} s: {:.0} k events/s, {:.0} MB/s",
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        rate / 1e3,
        bytes as f64 / 1e6 / elapsed.as_secs_f64()
    );
    rate
}

/// The loopback floor: pre-rendered frames written by a plain socket writer.
async fn floor(events: u64) -> (u64, u64, Duration) {
    let sim = simulator();
    let mut feed = sim.feed().expect("feed");
    let mut chunk = BytesMut::new();
    let per_chunk = 10_000u64;
    for _ in 0..per_chunk {
        if let FeedItem::Event { event, .. } = feed.next_item().expect("item") {
            event.render(EventFormat::Plain, &mut chunk);
        }
    }
    let chunk = chunk.freeze();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let writer = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut sent = 0;
        while sent < events {
            socket.write_all(&chunk).await.expect("write");
            sent += per_chunk;
        }
        socket
            .write_all(b"Content-Type: text/disconnect-notice\nContent-Length: 0\n\n")
            .await
            .expect("notice");
    });
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (n, bytes) = read_frames(stream).await;
    let elapsed = started.elapsed();
    writer.await.expect("writer");
    (n, bytes, elapsed)
}

fn sections() {
    let events: u64 = std::env::var("ESL_BENCH_SERVE_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("\nserve: one client decoding every frame over 127.0.0.1 ({events} events)");

    // Generation alone, one thread.
    let sim = simulator();
    let mut feed = sim.feed().expect("feed");
    let mut out = BytesMut::with_capacity(1 << 20);
    let (mut bytes, started) = (0u64, Instant::now());
    for _ in 0..events {
        if let FeedItem::Event { event, .. } = feed.next_item().expect("item") {
            event.render(EventFormat::Plain, &mut out);
            bytes += out.len() as u64;
            out.clear();
        }
    }
    report(
        "simulator generation (no socket)",
        events,
        bytes,
        started.elapsed(),
    );

    runtime.block_on(async {
        let (n, b, elapsed) = floor(events).await;
        let floor_rate = report("baseline: pre-rendered frames", n, b, elapsed);

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let config = SimulatorConfig {
            rate: None,
            max_events: Some(events),
            ..SimulatorConfig::default()
        };
        let running =
            Simulator::start(listener, ServerConfig::default(), config).expect("simulator");
        let started = Instant::now();
        let (n, b) = count_events(running.local_addr()).await;
        let rate = report("simulate", n, b, started.elapsed());
        assert_eq!(n, events, "every generated event arrives");
        println!(
            "  RESULT simulate_delivery ours={rate:.0}/s baseline={floor_rate:.0}/s ratio={:.3}",
            rate / floor_rate
        );
        running.shutdown().await;

        let dir = tempfile::tempdir().expect("tempdir");
        let stored = events.min(200_000);
        {
            let mut store = esl_replay::store::open(dir.path(), None).expect("store");
            let mut feed = simulator().feed().expect("feed");
            let mut batch = Vec::new();
            for _ in 0..stored {
                if let FeedItem::Event { event, .. } = feed.next_item().expect("item") {
                    batch.push(envelope(&event));
                }
                if batch.len() == 1000 {
                    store
                        .write_batch(std::mem::take(&mut batch))
                        .expect("write");
                }
            }
            store.write_batch(batch).expect("write");
            store.sync().expect("sync");
        }
        let store = esl_replay::store::open_read_only(dir.path(), None).expect("open");
        let replay = StoreReplay::load(store, ReplayOptions::default()).expect("load");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let running =
            server::spawn(listener, ServerConfig::default(), Arc::new(replay)).expect("serve");
        let started = Instant::now();
        let (n, b) = count_events(running.local_addr()).await;
        let rate = report("serve (segment-log store)", n, b, started.elapsed());
        assert_eq!(n, stored, "every stored event arrives");
        println!(
            "  RESULT serve_delivery ours={rate:.0}/s baseline={floor_rate:.0}/s ratio={:.3}",
            rate / floor_rate
        );
        running.shutdown().await;
    });
}

fn envelope(event: &esl_replay::server::ServedEvent) -> Envelope {
    let mut facts = JsonMap::new();
    facts.insert("content-type".into(), "text/event-plain".into());
    let mut payload = JsonMap::new();
    payload.insert(
        "raw_payload".into(),
        String::from_utf8_lossy(event.body()).into_owned().into(),
    );
    payload.insert("protocol_facts".into(), facts.into());
    Envelope::new("1", "event.raw", time::OffsetDateTime::now_utc())
        .with_connection_generation("1")
        .with_event_name(event.name())
        .with_payload(payload)
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion);
    criterion.final_summary();
    if bench_mode() {
        sections();
    }
}
