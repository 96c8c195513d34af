//! The command line's shared conventions, across commands: every `--checkpoint-dir` reads
//! `ESL_REPLAY_CHECKPOINT_DIR` when the flag is absent (and `replay`/`evidence` use it only
//! with a key), every command that prints takes `--format`, and `stats --format json` holds
//! the figures the text shows.

use std::process::Output;

use esl_replay::store::{ArtifactStore as _, LogStore, dataset};
use serde_json::Value;

use crate::support::cli::{command, run, run_ok};
use crate::support::process::SpawnSafely as _;

const ENV: &str = "ESL_REPLAY_CHECKPOINT_DIR";

/// The binary with the checkpoint directory given only through the environment.
fn with_env_dir(dir: &std::path::Path, args: &[&str]) -> Output {
    command().args(args).env(ENV, dir).output_safely().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A log store of `n` dataset records.
fn store(dir: &std::path::Path, n: u64) -> String {
    let path = dir.join("store");
    let mut store = LogStore::open(&path).unwrap();
    store
        .write_batch((0..n).map(dataset::envelope).collect())
        .unwrap();
    store.close().unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn checkpoint_commands_take_the_directory_from_the_environment() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("checkpoints");
    let saved = with_env_dir(
        &dir,
        &["checkpoint", "save", "--key", "k", "--sequence", "7"],
    );
    assert!(saved.status.success(), "{}", stderr(&saved));
    assert!(dir.is_dir(), "the environment's directory was not used");
    // The flag and the environment name the same directory.
    let listed = run_ok(&[
        "checkpoint",
        "list",
        "--checkpoint-dir",
        dir.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[0]["key"], "k");
    assert_eq!(listed[0]["last_consumed_sequence"], 7);
}

#[test]
fn an_environment_directory_without_a_key_leaves_replay_and_evidence_as_they_were() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path(), 20);
    let dir = root.path().join("checkpoints");
    // The plan without its time: the same records from the same start.
    let plan = |text: &str| {
        let mut plan: Value = serde_json::from_str(text).unwrap();
        plan.as_object_mut().unwrap().remove("planned_at");
        plan
    };
    let plain = plan(&run_ok(&[
        "replay", "plan", "-s", &store, "--format", "ndjson",
    ]));
    let with_env = with_env_dir(
        &dir,
        &["replay", "plan", "-s", &store, "--format", "ndjson"],
    );
    assert!(with_env.status.success(), "{}", stderr(&with_env));
    assert!(plan(&String::from_utf8(with_env.stdout).unwrap()) == plain);
    assert_eq!(plain["record_count"], 20);
    let bundle = run_ok(&["evidence", "reconstruct", "-s", &store, "--after", "5"]);
    let with_env = with_env_dir(
        &dir,
        &["evidence", "reconstruct", "-s", &store, "--after", "5"],
    );
    assert!(with_env.status.success(), "{}", stderr(&with_env));
    assert!(String::from_utf8(with_env.stdout).unwrap() == bundle);
    assert!(
        !dir.exists(),
        "a command without a key created the directory"
    );
}

#[test]
fn evidence_refuses_a_start_beside_the_checkpoint_that_gives_one() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path(), 5);
    let dir = root.path().join("checkpoints");
    let output = with_env_dir(
        &dir,
        &[
            "evidence",
            "reconstruct",
            "-s",
            &store,
            "--checkpoint-key",
            "k",
            "--after",
            "2",
        ],
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("come from the stored checkpoint k"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn record_printers_accept_text_and_the_older_table() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path(), 3);
    let text = run_ok(&["read", "-s", &store, "--format", "text"]);
    assert_eq!(text.lines().count(), 4, "a header and three rows:\n{text}");
    assert_eq!(run_ok(&["read", "-s", &store, "--format", "table"]), text);
    let refused = run(&["read", "-s", &store, "--json"]);
    assert_eq!(refused.status.code(), Some(2));
}

#[test]
fn stats_as_json_holds_the_figures_of_the_text() {
    let root = tempfile::tempdir().unwrap();
    let store = store(root.path(), 25);
    let value: Value =
        serde_json::from_str(&run_ok(&["stats", "-s", &store, "--format", "json"])).unwrap();
    assert_eq!(value["backend"], "log");
    assert_eq!(value["records"], 25);
    assert_eq!(value["first_sequence"], 1);
    assert_eq!(value["last_sequence"], 25);
    let artifacts: u64 = value["artifacts"]
        .as_object()
        .unwrap()
        .values()
        .map(|count| count.as_u64().unwrap())
        .sum();
    assert_eq!(artifacts, 25);
    assert_eq!(value["problems"], Value::Array(Vec::new()));
    let text = run_ok(&["stats", "-s", &store]);
    assert!(text.contains("records     25"), "{text}");
    assert!(
        text.contains(&format!("bytes       {}", value["bytes"])),
        "{text}"
    );
}
