//! `esl-replay capture --compat telephony-event-sync` as a drop-in for that service: the
//! capture of the built-in simulator, configured by the service's environment variables
//! (ESL_HOST, ESL_PORT, REDIS_REMOTE_ADDR and _PASSWORD, STREAM_JOBS, EVENTS_TO_PUSH, ...) under a
//! configuration file that overrides one of them, forwards from the same process to a real
//! `redis-server` (skipped, saying so, when absent; required under `CI=true`). A consumer
//! reading both streams, in the service's default database 2 and under its default events
//! stream name, sees exactly the configured events and the `BACKGROUND_JOB` results of the
//! bgapi jobs sent through the capture's gateway only on the jobs stream. Bad values of the
//! service's variables are refused, naming the variable.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::support::forward::checkpoint_sequence;
use crate::support::routing::{
    Entry, Redis, Running, expect_refusal, free_port, read_stream, simulator, stored_events,
    stored_records, wait_until,
};

const TOKEN: &str = "routing-test-token";

/// `POST /v1/bgapi {"command": "status"}` to the capture's gateway; the Job-UUID once the
/// node is ready (`None` before, or while nothing listens yet).
fn bgapi(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    let body = r#"{"command":"status"}"#;
    write!(
        stream,
        "POST /v1/bgapi HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    let reply: serde_json::Value = serde_json::from_str(body).ok()?;
    reply["job_uuid"].as_str().map(str::to_owned)
}

/// `GET /health` from the capture: the status code and the JSON body.
fn health(port: u16) -> (u16, serde_json::Value) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    (
        head[9..12].parse().unwrap(),
        serde_json::from_str(body).unwrap(),
    )
}

#[test]
fn the_services_variables_route_events_and_job_results_to_its_two_streams() {
    let Some(redis) = Redis::start_with(Some("tes-secret")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_runtime, switch) = simulator(1_000.0);
    let http = free_port();
    let store = dir.path().join("store");
    let checkpoints = dir.path().join("checkpoints");
    // The file wins over the variable EVENTS_TO_PUSH; HEALTH_PORT places the HTTP server.
    let config = format!(
        "compat = \"telephony-event-sync\"\nstore = {:?}\ncheckpoint_dir = {:?}\n\n\
         [forward]\n\
         stream_events = [\"CHANNEL_ANSWER\", \"CUSTOM\", \"CHANNEL_HANGUP_COMPLETE\"]\n",
        store.display().to_string(),
        checkpoints.display().to_string(),
    );
    std::fs::write(dir.path().join("capture.toml"), config).unwrap();
    let log = std::fs::File::create(dir.path().join("capture.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_esl-replay"))
        .arg("capture")
        .arg("--config")
        .arg(dir.path().join("capture.toml"))
        .env("ESL_HOST", "127.0.0.1")
        .env("ESL_PORT", switch.local_addr().port().to_string())
        .env("REDIS_REMOTE_ADDR", format!("127.0.0.1:{}", redis.port))
        .env("REDIS_REMOTE_PASSWORD", "tes-secret")
        .env("STREAM_JOBS", "tes:jobs")
        .env("EVENTS_TO_PUSH", "CHANNEL_ANSWER")
        .env("HEALTH_PORT", http.to_string())
        .env("ESL_REPLAY_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let child = Running::new(child);
    let log_text = || std::fs::read_to_string(dir.path().join("capture.log")).unwrap_or_default();

    let mut jobs = Vec::new();
    wait_until("three bgapi jobs accepted by the gateway", || {
        if let Some(job) = bgapi(http) {
            jobs.push(job);
        }
        jobs.len() == 3
    });
    wait_until("the job results and 200 events in the store", || {
        if !store.join("log").exists() {
            return false;
        }
        let events = stored_events(&stored_records(&store));
        let done = jobs.iter().all(|job| {
            events
                .iter()
                .any(|e| e.name == "BACKGROUND_JOB" && e.job_uuid.as_ref() == Some(job))
        });
        done && events.len() >= 200
    });
    // /health in the service's shape, over ours.
    let (status, body) = health(http);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy", "{body}");
    let data = &body["data"];
    assert_eq!(data["is_healthy"], true, "{body}");
    assert_eq!(data["recovery_attempts"], 0, "{body}");
    assert!(data["last_error"].is_null(), "{body}");
    for field in ["last_heartbeat", "last_check"] {
        let at = data[field].as_str().unwrap_or_default();
        assert!(
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok(),
            "{field}: {body}"
        );
    }
    assert!(
        body["nodes"].as_object().is_some_and(|n| n.len() == 1),
        "{body}"
    );
    let output = child.terminate();
    assert!(output.status.success(), "{}", log_text());

    let records = stored_records(&store);
    let events = stored_events(&records);
    // The event sequences a stream's entries carry, through the stored records.
    let sequences = |entries: &[Entry]| -> Vec<u64> {
        entries
            .iter()
            .map(|entry| {
                let sequence = entry.sequence();
                events
                    .iter()
                    .find(|e| e.append_sequence == sequence)
                    .unwrap_or_else(|| panic!("entry {entry:?} is not a stored event"))
                    .event_sequence
            })
            .collect()
    };
    let expected = |names: &[&str]| -> Vec<u64> {
        events
            .iter()
            .filter(|e| names.contains(&e.name.as_str()))
            .map(|e| e.event_sequence)
            .collect()
    };
    // Database 2 (REDIS_REMOTE_DB's default), the default events stream name.
    let mut connection = redis.connection(2);
    let ev = read_stream(&mut connection, "freeswitch:telephony:events");
    let job_entries = read_stream(&mut connection, "tes:jobs");
    assert_eq!(
        sequences(&ev),
        expected(&["CHANNEL_ANSWER", "CUSTOM", "CHANNEL_HANGUP_COMPLETE"])
    );
    // EVENTS_TO_PUBLISH's default takes DTMF (listed first) and BACKGROUND_JOB.
    assert_eq!(
        sequences(&job_entries),
        expected(&["BACKGROUND_JOB", "DTMF"])
    );
    let job_results: Vec<&str> = job_entries
        .iter()
        .filter(|e| e.field("event_name") == "BACKGROUND_JOB")
        .map(|e| e.field("job_uuid"))
        .collect();
    assert_eq!(job_results, jobs);
    assert!(
        ev.len() > 20 && job_entries.len() > 20,
        "{} {}",
        ev.len(),
        job_entries.len()
    );
    assert!(read_stream(&mut redis.connection(0), "freeswitch:telephony:events").is_empty());
    assert_eq!(
        checkpoint_sequence(&checkpoints, "forward.redis.freeswitch:telephony:events"),
        records.last().map(|r| r.append_sequence()),
        "{}",
        log_text()
    );
}

#[test]
fn bad_values_of_the_services_variables_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let checkpoints = dir.path().join("checkpoints").display().to_string();
    let base = [
        "capture",
        "--compat",
        "telephony-event-sync",
        "--store",
        &store,
        "--checkpoint-dir",
        &checkpoints,
        "--duration",
        "1s",
    ];
    for (env, extra, reason) in [
        (
            ("EVENTS_MAX_LEN", "lots"),
            &[][..],
            "EVENTS_MAX_LEN=\"lots\" is not a whole number",
        ),
        (
            ("JOBS_EXPIRE_TIME", "a while"),
            &[][..],
            "JOBS_EXPIRE_TIME=\"a while\" is not a duration",
        ),
        (
            ("ESL_PORT", "80211"),
            &[][..],
            "ESL_PORT=\"80211\" is not a port number",
        ),
        (
            ("STREAM_JOBS", "fs:same"),
            &["--forward-stream", "fs:same"][..],
            "name two streams",
        ),
        (
            ("ESL_HOST", "127.0.0.1"),
            &["--forward-nats", "nats://127.0.0.1:4222"][..],
            "forwards to Redis; leave out --forward-nats",
        ),
    ] {
        let args: Vec<&str> = base.iter().chain(extra).copied().collect();
        expect_refusal(&args, &[env], reason);
    }
}
