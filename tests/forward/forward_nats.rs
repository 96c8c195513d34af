//! Forwarding to NATS against a real `nats-server -js` started by the test (skipped, saying
//! so, when the binary is absent): JetStream holds every record exactly once through
//! forwarder kills and a server outage; core NATS delivers to a live subscriber; a missing
//! stream is a clear error.

use std::path::Path;
use std::time::Duration;

use async_nats::jetstream;
use esl_replay::record::from_ndjson_line;
use futures::StreamExt as _;
use rand::{Rng as _, SeedableRng as _};

use crate::support::forward::{
    Kind, Server, append_in_background, caught_up, check_in_order_at_least_once,
    checkpoint_sequence, expect_refusal, expect_success, fill_store, following_forwarder,
    free_port, outage, signal, spawn_forwarder, stdout_of, wait_exit,
};

const SUBJECT: &str = "fs.events";
const STREAM: &str = "FS_EVENTS";
const KEY: &str = "forward.nats.fs.events";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Every message of the stream as (append sequence header, record id header, body).
fn read_stream(url: &str, stream: &str) -> Vec<(u64, String, String)> {
    runtime().block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let context = jetstream::new(client);
        let mut stream = context.get_stream(stream).await.unwrap();
        let total = stream.info().await.unwrap().state.messages;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut messages = consumer.messages().await.unwrap();
        let mut entries = Vec::new();
        while (entries.len() as u64) < total {
            let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let headers = message.headers.clone().unwrap();
            let sequence = headers
                .get("Esl-Append-Sequence")
                .unwrap()
                .as_str()
                .parse()
                .unwrap();
            let id = headers.get("Esl-Record-Id").unwrap().as_str().to_owned();
            // The subject and the record id: unique in a stream that several subjects share.
            assert_eq!(
                headers.get("Nats-Msg-Id").unwrap().as_str(),
                format!("{}:{id}", message.subject)
            );
            let body = String::from_utf8(message.payload.to_vec()).unwrap();
            entries.push((sequence, id, body));
        }
        entries
    })
}

fn jetstream_args(store: &Path, checkpoints: &Path, server: &Server) -> Vec<String> {
    args_for_stream(store, checkpoints, server, STREAM)
}

fn args_for_stream(store: &Path, checkpoints: &Path, server: &Server, stream: &str) -> Vec<String> {
    [
        "nats",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
        "--url",
        &server.url(),
        "--subject",
        SUBJECT,
        "--jetstream-stream",
        stream,
        "--create-stream",
        "--retry-max",
        "500ms",
        "--timeout",
        "2s",
        "--log-interval",
        "1s",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Exactly once: one message per sequence 1..=total, in append order.
fn check_exactly_once(entries: &[(u64, String, String)], total: u64) {
    let sequences: Vec<u64> = entries.iter().map(|entry| entry.0).collect();
    let repeats = check_in_order_at_least_once(&sequences, total);
    assert_eq!(repeats, 0, "JetStream stored {repeats} records twice");
    assert_eq!(entries.len() as u64, total);
}

#[test]
fn killed_and_restarted_forwarders_leave_every_record_exactly_once_in_jetstream() {
    let Some(server) = Server::start(Kind::Nats) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    let log = dir.path().join("forwarder.log");
    const TOTAL: u64 = 100_000;
    let writer = append_in_background(&store, TOTAL, 1000, Duration::from_millis(25));
    let seed: u64 = rand::random();
    eprintln!("seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut args = jetstream_args(&store, &checkpoints, &server);
    args.extend(["--batch-size", "500"].map(str::to_owned));
    let mut saved = Vec::new();
    for run in 0..6 {
        let mut following = args.clone();
        following.push("--follow".into());
        // Checkpoints saved after every batch, or coalesced: a kill then re-sends what was
        // acknowledged since the last save.
        let interval = ["0", "50ms", "300ms"][run % 3];
        following.extend(["--checkpoint-interval".to_owned(), interval.to_owned()]);
        let mut child = spawn_forwarder(&following, &log);
        std::thread::sleep(Duration::from_millis(rng.random_range(200..1000)));
        child.kill().unwrap();
        child.wait().unwrap();
        saved.push(checkpoint_sequence(&checkpoints, KEY).unwrap_or(0));
    }
    writer.join().unwrap();
    let mut child = spawn_forwarder(&args, &log);
    let status = wait_exit(&mut child, Duration::from_secs(90));
    let summary = stdout_of(&mut child);
    assert!(
        status.success(),
        "final run failed: {status}; see {}",
        log.display()
    );
    assert!(summary.contains("at sequence 100000"), "{summary}");
    eprintln!("checkpoints after kills: {saved:?}; {summary}");
    assert!(saved.windows(2).all(|pair| pair[0] <= pair[1]), "{saved:?}");
    // At least one kill interrupted delivery mid-stream (later ones may find it caught up).
    assert!(saved.iter().any(|&s| s > 0 && s < TOTAL), "{saved:?}");

    let entries = read_stream(&server.url(), STREAM);
    check_exactly_once(&entries, TOTAL);
    for (sequence, id, body) in entries.iter().step_by(997) {
        let record = from_ndjson_line(body).unwrap();
        assert_eq!(record.append_sequence(), *sequence);
        assert_eq!(record.id().as_str(), id);
    }
    assert_eq!(checkpoint_sequence(&checkpoints, KEY), Some(TOTAL));

    // A crash between the acknowledgements and the checkpoint save, made certain: move the
    // checkpoint back and run again. Every re-sent record is a server-side duplicate.
    let service = esl_replay::checkpoint::CheckpointService::new(
        esl_replay::checkpoint::CheckpointStore::open(&checkpoints).unwrap(),
        KEY,
    )
    .unwrap();
    service
        .save(
            esl_replay::record::ReadCursor::new(TOTAL - 5000, None),
            Default::default(),
        )
        .unwrap();
    let mut child = spawn_forwarder(&args, &log);
    expect_success(&mut child, &log);
    let summary = stdout_of(&mut child);
    assert!(summary.starts_with("forwarded 5000 records"), "{summary}");
    assert!(summary.contains("5000 already stored"), "{summary}");
    check_exactly_once(&read_stream(&server.url(), STREAM), TOTAL);
}

#[test]
fn a_jetstream_outage_is_retried_and_shows_as_lag_without_duplicates() {
    let Some(mut server) = Server::start(Kind::Nats) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    let log = dir.path().join("forwarder.log");
    const TOTAL: u64 = 20_000;
    let writer = append_in_background(&store, TOTAL, 100, Duration::from_millis(25));
    let args = jetstream_args(&store, &checkpoints, &server);
    let (mut child, metrics_port) = following_forwarder(&args, &log, 2000);

    let outage = outage(&mut server, metrics_port, 1);
    server.restart();

    let during = &outage.during;
    assert!(outage.saw_503, "/health reports the failing target");
    assert!(during["retries"].as_u64().unwrap() >= 1, "{during}");
    assert!(outage.worst_lag_records > 0);
    assert!(
        outage.worst_lag_seconds >= 2.0,
        "lag in seconds: {}",
        outage.worst_lag_seconds
    );

    writer.join().unwrap();
    caught_up(metrics_port, TOTAL);
    signal(&child, "INT");
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
    assert_eq!(checkpoint_sequence(&checkpoints, KEY), Some(TOTAL));
    check_exactly_once(&read_stream(&server.url(), STREAM), TOTAL);
}

#[test]
fn core_nats_reaches_a_live_subscriber_and_a_missing_stream_is_an_error() {
    let Some(server) = Server::start(Kind::Nats) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    fill_store(&store, 3000);
    let rt = runtime();
    let client = rt.block_on(async_nats::connect(server.url())).unwrap();
    let mut subscriber = rt.block_on(client.subscribe("core.events")).unwrap();
    rt.block_on(client.flush()).unwrap();

    let args: Vec<String> = [
        "nats",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-dir",
        checkpoints.to_str().unwrap(),
        "--url",
        &server.url(),
        "--subject",
        "core.events",
        "--mode",
        "core",
        "--artifact-name",
        "event.raw",
    ]
    .map(str::to_owned)
    .to_vec();
    let log = dir.path().join("core.log");
    let mut child = spawn_forwarder(&args, &log);
    expect_success(&mut child, &log);
    let mut received = Vec::new();
    rt.block_on(async {
        while received.len() < 2400 {
            let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
                .await
                .unwrap()
                .unwrap();
            let headers = message.headers.unwrap();
            assert!(
                headers.get("Nats-Msg-Id").is_none(),
                "core mode sets no dedup id"
            );
            assert_eq!(
                headers.get("Esl-Artifact-Name").unwrap().as_str(),
                "event.raw"
            );
            received.push(
                headers
                    .get("Esl-Append-Sequence")
                    .unwrap()
                    .as_str()
                    .parse::<u64>()
                    .unwrap(),
            );
        }
    });
    let expected: Vec<u64> = (1..=3000).filter(|s| (s - 1) % 5 != 0).collect();
    assert_eq!(
        received, expected,
        "a live subscriber gets the event.raw records in order"
    );
    assert_eq!(
        checkpoint_sequence(&checkpoints, "forward.nats.core.events"),
        Some(3000)
    );

    // JetStream mode without --create-stream refuses a stream that does not exist.
    let mut args = args_for_stream(&store, &checkpoints, &server, "MISSING");
    args.retain(|arg| arg != "--create-stream");
    expect_refusal(
        &args,
        &dir.path().join("missing.log"),
        "MISSING does not exist",
    );
    // Saved before the first read, the checkpoint says that nothing was delivered.
    assert_eq!(checkpoint_sequence(&checkpoints, KEY), Some(0));
}

#[test]
fn metrics_port_in_use_is_reported() {
    let Some(server) = Server::start(Kind::Nats) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    fill_store(&store, 10);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let mut args = jetstream_args(&store, &checkpoints, &server);
    args.extend(["--metrics-listen".to_owned(), format!("127.0.0.1:{port}")]);
    let log = dir.path().join("taken.log");
    let mut child = spawn_forwarder(&args, &log);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(30)).code(),
        Some(2)
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("cannot listen for metrics")
    );
    let _ = free_port();
}

/// Two forwarders of one store, to two subjects that one stream captures (the record form
/// and `fs-events-v1`, say): JetStream deduplicates per stream, so each message id carries
/// its subject, and the stream holds both subjects' messages.
#[test]
fn forwarders_to_two_subjects_of_one_stream_do_not_drop_each_other() {
    use esl_replay::checkpoint::{CheckpointService, CheckpointStore};
    use esl_replay::forward::{ForwardOptions, Metrics, NatsMode, NatsOptions, NatsSink, Source};
    use esl_replay::store::{ArtifactStore as _, LogStore, dataset};
    let Some(server) = Server::start(Kind::Nats) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = LogStore::open(&path).unwrap();
    store
        .write_batch((0..20).map(dataset::envelope).collect())
        .unwrap();
    store.close().unwrap();
    let url = server.url();
    let stored = runtime().block_on(async {
        let context = jetstream::new(async_nats::connect(url.as_str()).await.unwrap());
        context
            .create_stream(jetstream::stream::Config {
                name: "BOTH".into(),
                subjects: vec!["both.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        let checkpoints = CheckpointStore::open(dir.path().join("checkpoints")).unwrap();
        for subject in ["both.raw", "both.v1"] {
            let service =
                CheckpointService::new(checkpoints.clone(), format!("forward.nats.{subject}"))
                    .unwrap();
            let mode = NatsMode::JetStream {
                stream: Some("BOTH".into()),
                create: false,
                duplicate_window: Duration::from_secs(600),
            };
            let mut sink = NatsSink::new(NatsOptions::new(&url, subject, mode));
            let source = Source::from(LogStore::open_read_only(&path).unwrap());
            let metrics = Metrics::new("jetstream");
            let (_stop, shutdown) = tokio::sync::watch::channel(false);
            let report = esl_replay::forward::forward(
                &source,
                &mut sink,
                &service,
                &ForwardOptions::default(),
                &metrics,
                shutdown,
            )
            .await
            .unwrap();
            assert_eq!(report.acked_sequence, 20, "{subject}");
        }
        let mut stream = context.get_stream("BOTH").await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    assert_eq!(stored, 40, "both subjects' messages are stored");
}

/// A store of `total` dataset records whose record `big` carries a payload of `bytes`
/// bytes.
fn store_with_a_big_record(store: &Path, total: u64, big: u64, bytes: usize) {
    let mut writer = crate::support::process::open_store(store).unwrap();
    let envelopes = (0..total)
        .map(|n| {
            let mut envelope = esl_replay::store::dataset::envelope(n);
            if n + 1 == big {
                envelope
                    .payload
                    .insert("Big".into(), "x".repeat(bytes).into());
            }
            envelope
        })
        .collect();
    esl_replay::store::ArtifactStore::write_batch(&mut writer, envelopes).unwrap();
    writer.close().unwrap();
}

/// A record larger than the server's `max_payload` (1 MiB by default) can never be
/// published: JetStream and core NATS refuse its batch before sending any of it, exit 2
/// naming the record and both sizes, and keep the checkpoint after the batches before.
#[test]
fn a_record_larger_than_the_servers_max_payload_is_refused() {
    let Some(server) = Server::start(Kind::Nats) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    store_with_a_big_record(&store, 200, 150, 1_200_000);
    let too_big = "record 150 (id ";
    let limit = "more than the server's max_payload of 1048576 bytes";

    let mut args = jetstream_args(&store, &checkpoints, &server);
    args.extend(["--batch-size", "100"].map(str::to_owned));
    let log = dir.path().join("jetstream.log");
    expect_refusal(&args, &log, too_big);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(limit), "{text}");
    assert_eq!(checkpoint_sequence(&checkpoints, KEY), Some(100));
    check_exactly_once(&read_stream(&server.url(), STREAM), 100);

    // Core NATS: nothing of the big record's batch reaches a subscriber.
    let rt = runtime();
    let client = rt.block_on(async_nats::connect(server.url())).unwrap();
    let mut subscriber = rt.block_on(client.subscribe("core.big")).unwrap();
    rt.block_on(client.flush()).unwrap();
    let mut args = jetstream_args(&store, &checkpoints, &server);
    args.retain(|arg| arg != "--create-stream");
    let subject = args.iter().position(|arg| arg == "--subject").unwrap();
    args[subject + 1] = "core.big".into();
    let stream = args
        .iter()
        .position(|arg| arg == "--jetstream-stream")
        .unwrap();
    args.drain(stream..stream + 2);
    args.extend(["--mode", "core", "--batch-size", "100"].map(str::to_owned));
    let log = dir.path().join("core.log");
    expect_refusal(&args, &log, too_big);
    assert_eq!(
        checkpoint_sequence(&checkpoints, "forward.nats.core.big"),
        Some(100)
    );
    // The first batch, then (after a message published now) nothing more.
    rt.block_on(client.publish("core.big", "end".into()))
        .unwrap();
    rt.block_on(client.flush()).unwrap();
    let mut received = Vec::new();
    rt.block_on(async {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), subscriber.next())
                .await
                .unwrap()
                .unwrap();
            let Some(headers) = message.headers else {
                break;
            };
            let sequence = headers.get("Esl-Append-Sequence").unwrap().as_str();
            received.push(sequence.parse::<u64>().unwrap());
        }
    });
    assert_eq!(received, (1..=100).collect::<Vec<_>>());
}

/// With `--create-stream`, a stream deleted while the forwarder runs is created again and
/// delivery goes on into it.
#[test]
fn a_stream_deleted_while_forwarding_is_created_again() {
    let Some(server) = Server::start(Kind::Nats) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    fill_store(&store, 100);
    let args = jetstream_args(&store, &checkpoints, &server);
    let log = dir.path().join("deleted.log");
    let (mut child, metrics_port) = following_forwarder(&args, &log, 100);
    let rt = runtime();
    rt.block_on(async {
        let context = jetstream::new(async_nats::connect(server.url()).await.unwrap());
        assert!(context.delete_stream(STREAM).await.unwrap().success);
    });
    let mut writer = crate::support::process::open_store(&store).unwrap();
    let envelopes = (100..200)
        .map(esl_replay::store::dataset::envelope)
        .collect();
    esl_replay::store::ArtifactStore::write_batch(&mut writer, envelopes).unwrap();
    writer.close().unwrap();
    crate::support::forward::acknowledged(metrics_port, 200);
    signal(&child, "TERM");
    expect_success(&mut child, &log);
    let sequences: Vec<u64> = read_stream(&server.url(), STREAM)
        .iter()
        .map(|entry| entry.0)
        .collect();
    assert_eq!(sequences, (101..=200).collect::<Vec<_>>());
}

/// `--jetstream-stream` names a stream that must capture `--subject`: one that does not is
/// refused (exit 2, naming the stream, its subjects and the subject), with or without
/// `--create-stream`, even when another stream would take the messages.
#[test]
fn a_stream_that_does_not_capture_the_subject_is_refused() {
    let Some(server) = Server::start(Kind::Nats) else {
        return;
    };
    runtime().block_on(async {
        let context = jetstream::new(async_nats::connect(server.url()).await.unwrap());
        for (name, subject) in [("W", "w.other"), ("ELSEWHERE", "w2.ev")] {
            context
                .create_stream(jetstream::stream::Config {
                    name: name.into(),
                    subjects: vec![subject.into()],
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    fill_store(&store, 10);
    let mut args = args_for_stream(&store, &checkpoints, &server, "W");
    let subject = args.iter().position(|arg| arg == "--subject").unwrap();
    args[subject + 1] = "w2.ev".into();
    let refusal = r#"JetStream stream W captures the subjects ["w.other"], not w2.ev"#;
    expect_refusal(&args, &dir.path().join("create.log"), refusal);
    args.retain(|arg| arg != "--create-stream");
    expect_refusal(&args, &dir.path().join("named.log"), refusal);
    let elsewhere = runtime().block_on(async {
        let context = jetstream::new(async_nats::connect(server.url()).await.unwrap());
        let mut stream = context.get_stream("ELSEWHERE").await.unwrap();
        stream.info().await.unwrap().state.messages
    });
    assert_eq!(elsewhere, 0, "nothing was published");
}

/// Subjects the server (or the client) calls invalid are a permanent refusal, in core and
/// JetStream mode alike: core NATS used to count the batch as maybe lost and move the
/// checkpoint past it, JetStream retried "invalid subject (10052)" forever. (The command
/// line refuses these subjects before connecting; this is the library's own guard.)
#[test]
fn an_invalid_subject_is_refused_not_retried_or_lost() {
    use esl_replay::checkpoint::{CheckpointService, CheckpointStore};
    use esl_replay::forward::{
        Error, ForwardOptions, Metrics, NatsMode, NatsOptions, NatsSink, Source,
    };
    use esl_replay::store::{ArtifactStore as _, LogStore, dataset};
    let Some(server) = Server::start(Kind::Nats) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut store = LogStore::open(&path).unwrap();
    store
        .write_batch((0..5).map(dataset::envelope).collect())
        .unwrap();
    store.close().unwrap();
    let url = server.url();
    let checkpoints = CheckpointStore::open(dir.path().join("checkpoints")).unwrap();
    let modes = [
        ("core", NatsMode::Core),
        (
            "jetstream",
            NatsMode::JetStream {
                stream: Some("BAD".into()),
                create: true,
                duplicate_window: Duration::from_secs(600),
            },
        ),
    ];
    for (name, mode) in modes {
        for subject in ["a b", "a..b", ""] {
            let key = format!("bad.{name}.{}", subject.len());
            let service = CheckpointService::new(checkpoints.clone(), key.clone()).unwrap();
            let mut sink = NatsSink::new(NatsOptions::new(&url, subject, mode.clone()));
            let source = Source::from(LogStore::open_read_only(&path).unwrap());
            let metrics = Metrics::new("nats");
            let (_stop, shutdown) = tokio::sync::watch::channel(false);
            let result = runtime().block_on(esl_replay::forward::forward(
                &source,
                &mut sink,
                &service,
                &ForwardOptions::default(),
                &metrics,
                shutdown,
            ));
            match result {
                Err(Error::Rejected { message, .. }) => assert!(
                    message.to_ascii_lowercase().contains("invalid subject"),
                    "{name} {subject:?}: {message}"
                ),
                other => panic!("{name} {subject:?}: {other:?}"),
            }
            assert!(
                checkpoint_sequence(&dir.path().join("checkpoints"), &key).unwrap_or(0) == 0,
                "{name} {subject:?}: the checkpoint does not move past undelivered records"
            );
        }
    }
}
