//! Evidence reconstruction throughput over a 1M-record window of the segment-log store.
//!
//! The records are the realistic ~370-byte ESL dataset with recovery metadata laid over
//! it, so the engine does real work: one background-job operation per five records
//! (dispatch with an operation snapshot, acknowledgement joined by job UUID, a channel
//! event carrying the four postures, completion with terminal-publication and
//! lifecycle-semantic snapshots, a plain event), a recovery generation change every 250k
//! records and a retry-posture flip every 1,000 operations. The baseline, measured in the
//! same run on the same window, is reading and decoding the records through the same
//! cursor and batch size without reconstructing anything: the ratio is the engine's cost on
//! top of the read.
//!
//! Run with `cargo bench --bench evidence` (`ESL_BENCH_EVIDENCE_RECORDS` changes the
//! window size, default 1,000,000).

mod common;

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use esl_replay::evidence::{Engine, ReconstructionWindow, ReconstructionWindowFields};
use esl_replay::record::{Criteria, Envelope, ReadCursor};
use esl_replay::store::{ArtifactReader, ArtifactStore, LogStore, dataset};
use serde_json::json;

// The same allocator as the `esl-replay` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BATCH_LIMIT: usize = 500;

/// Record `n` of the dataset with the recovery metadata of the module docs.
fn envelope(n: u64) -> Envelope {
    let mut envelope = dataset::envelope(n);
    let operation = n / 5;
    let generation = format!("gen-{}", n / 250_000);
    let job = format!("job-{operation:08}");
    let payload = &mut envelope.payload;
    match n % 5 {
        0 => {
            envelope.artifact_name = "bgapi.dispatch".into();
            envelope.job_uuid = Some(job.clone());
            payload.insert(
                "prepared_recovery_context".into(),
                json!({"recovery_generation_id": generation}),
            );
            payload.insert(
                "runtime_operation_snapshot".into(),
                json!({
                    "operation_id": format!("op-{operation:08}"),
                    "operation_kind": "bgapi",
                    "operation_state": "accepted",
                    "bgapi_job_uuid": job
                }),
            );
        }
        1 => {
            envelope.artifact_name = "bgapi.ack".into();
            envelope.job_uuid = Some(job);
        }
        2 => {
            envelope.artifact_name = "event.raw".into();
            envelope.job_uuid = None;
            envelope
                .runtime_flags
                .insert("recovery_generation_id".into(), generation.into());
            let retry = if operation % 1000 == 999 {
                "retrying"
            } else {
                "stable"
            };
            payload.insert(
                "runtime_recovery_snapshot".into(),
                json!({
                    "replay_continuity_posture": "continuous",
                    "retry_posture": retry,
                    "drain_posture": "not_draining",
                    "reconstruction_posture": "bounded"
                }),
            );
        }
        3 => {
            envelope.artifact_name = "bgapi.complete".into();
            envelope.job_uuid = Some(job);
            payload.insert(
                "runtime_operation_snapshot".into(),
                json!({
                    "operation_id": format!("op-{operation:08}"),
                    "operation_state": "completed"
                }),
            );
            payload.insert(
                "runtime_terminal_publication_snapshot".into(),
                json!({
                    "terminal_publication_id": format!("pub-{operation:08}"),
                    "terminal_publication_status": "published",
                    "channel": "events"
                }),
            );
            payload.insert(
                "runtime_lifecycle_semantic_snapshot".into(),
                json!({"lifecycle_semantic": "runtime_terminal", "posture": "observed"}),
            );
        }
        _ => {
            envelope.artifact_name = "event.raw".into();
            envelope.job_uuid = None;
        }
    }
    envelope
}

fn read_only(store: &dyn ArtifactReader) -> u64 {
    let mut cursor = ReadCursor::start();
    let mut count = 0u64;
    let criteria = Criteria::any();
    loop {
        let batch = store
            .read_from_cursor(&cursor, BATCH_LIMIT, &criteria)
            .unwrap();
        let Some(last) = batch.last() else { break };
        cursor = ReadCursor::new(last.append_sequence(), None);
        count += batch.len() as u64;
        black_box(&batch);
    }
    count
}

fn reconstruct(store: &dyn ArtifactReader, window: &ReconstructionWindow) -> u64 {
    let bundle = Engine::new().reconstruct(store, window).unwrap();
    let count = bundle.manifest.record_count;
    black_box(bundle);
    count
}

fn main() {
    let records: u64 = std::env::var("ESL_BENCH_EVIDENCE_RECORDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(common::size(1_000_000, 2_000) as u64);
    let dir = common::scratch_dir("evidence");
    let mut store = LogStore::open(dir.path().join("store")).unwrap();
    let fill = Instant::now();
    for start in (0..records).step_by(1000) {
        let end = (start + 1000).min(records);
        store
            .write_batch((start..end).map(envelope).collect())
            .unwrap();
    }
    store.sync().unwrap();
    let fill = fill.elapsed();
    let window = ReconstructionWindow::new(ReconstructionWindowFields {
        batch_limit: BATCH_LIMIT,
        ..ReconstructionWindowFields::default()
    })
    .unwrap();

    let mut c: Criterion = common::criterion();
    {
        let mut group = c.benchmark_group("evidence_window");
        group.throughput(Throughput::Elements(records));
        group.bench_function("read_only", |b| b.iter(|| read_only(&store)));
        group.bench_function("reconstruct", |b| b.iter(|| reconstruct(&store, &window)));
        group.finish();
    }

    if common::selected("evidence_ratio") {
        common::print_section(&format!(
            "evidence reconstruction over a {records}-record window (log store, batches of {BATCH_LIMIT}; filled in {:.1} s)",
            fill.as_secs_f64()
        ));
        let bundle = Engine::new().reconstruct(&store, &window).unwrap();
        common::print_note(&format!(
            "bundle: {} operations, {} generations, {} publications, {} semantics, {} issues, verdict {}",
            bundle.operations.len(),
            bundle.continuity_snapshot.recovery_generations.len(),
            bundle.terminal_publications.len(),
            bundle.lifecycle_semantics.len(),
            bundle.manifest.verdict.issues.len(),
            bundle.manifest.verdict.posture.as_str()
        ));
        drop(bundle);
        let (mut ours, mut baseline) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let start = Instant::now();
            let read = read_only(&store);
            baseline.push(read as f64 / start.elapsed().as_secs_f64());
            let start = Instant::now();
            let rebuilt = reconstruct(&store, &window);
            ours.push(rebuilt as f64 / start.elapsed().as_secs_f64());
        }
        let ratios: Vec<f64> = ours.iter().zip(&baseline).map(|(o, b)| o / b).collect();
        common::print_ratio(
            "evidence_reconstruct",
            &common::fmt_rate(common::median(&ours)),
            &common::fmt_rate(common::median(&baseline)),
            common::median(&ratios),
            "(read-only)",
            true,
        );
    }
    c.final_summary();
}
