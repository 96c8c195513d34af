//! The `esl-replay checkpoint` commands end to end: save (with metadata, anchors, hint and
//! an explicit time) writes the reference file; show, list and find print it for people
//! and as JSON; delete removes it; damaged files and missing checkpoints exit with the
//! documented codes (1 for `list` reporting damaged files, 2 for errors).

use std::path::Path;
use std::process::Output;

use serde_json::{Value, json};
use tempfile::tempdir;

use crate::support::cli::{run, stderr, stdout};

fn save(dir: &Path, key: &str, sequence: &str, extra: &[&str]) -> Output {
    let dir = dir.to_str().unwrap();
    let mut args = vec![
        "checkpoint",
        "save",
        "--checkpoint-dir",
        dir,
        "--key",
        key,
        "--sequence",
        sequence,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

#[test]
fn save_writes_the_reference_file_and_show_prints_it() {
    let root = tempdir().unwrap();
    let dir = root.path().join("cp");
    let output = save(
        &dir,
        "k2",
        "1",
        &[
            "--saved-at",
            "2024-06-01T12:00:00Z",
            "--metadata",
            r#"{"attempt":2,"replay_session_id":"caller"}"#,
            "--replay-session-id",
            "r-1",
            "--hint",
            "4096",
        ],
    );
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("saved checkpoint \"k2\" at sequence 1 to "));
    let file = dir.join(
        "k2-015f7e6bc5aeaf483724089e9252cc13b50951a6b69412522765cff4d780306e.checkpoint.json",
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "{\n    \"key\": \"k2\",\n    \"last_consumed_sequence\": 1,\n    \"byte_offset_hint\": 4096,\n    \"saved_at\": \"2024-06-01T12:00:00.000+00:00\",\n    \"metadata\": {\n        \"attempt\": 2,\n        \"replay_session_id\": \"r-1\"\n    }\n}"
    );

    let dir_text = dir.to_str().unwrap();
    let output = run(&[
        "checkpoint",
        "show",
        "--checkpoint-dir",
        dir_text,
        "--key",
        "k2",
    ]);
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.contains("key         k2\n"), "{text}");
    assert!(text.contains("sequence    1\n"), "{text}");
    assert!(text.contains("hint        4096\n"), "{text}");
    assert!(
        text.contains("saved at    2024-06-01T12:00:00.000+00:00\n"),
        "{text}"
    );
    assert!(text.contains("replay_session_id"), "{text}");

    let output = run(&[
        "checkpoint",
        "show",
        "--checkpoint-dir",
        dir_text,
        "--key",
        "k2",
        "--format",
        "json",
    ]);
    let value: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(value["key"], json!("k2"));
    assert_eq!(value["last_consumed_sequence"], json!(1));
    assert_eq!(value["byte_offset_hint"], json!(4096));
    assert_eq!(value["metadata"]["replay_session_id"], json!("r-1"));
    assert_eq!(value["file"], json!(file.to_str().unwrap()));
}

#[test]
fn list_find_and_delete() {
    let root = tempdir().unwrap();
    let dir = root.path();
    let dir_text = dir.to_str().unwrap();
    for (key, sequence, time, worker) in [
        ("worker-a", "3", "2024-06-01T12:00:00Z", "a"),
        ("worker-b", "7", "2024-06-02T12:00:00Z", "b"),
    ] {
        let output = save(
            dir,
            key,
            sequence,
            &[
                "--saved-at",
                time,
                "--replay-session-id",
                "r",
                "--worker-session-id",
                worker,
            ],
        );
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let output = run(&["checkpoint", "list", "--checkpoint-dir", dir_text]);
    assert!(output.status.success());
    let lines: Vec<String> = stdout(&output).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(
        lines[1].ends_with("worker-b") && lines[2].ends_with("worker-a"),
        "{lines:?}"
    );

    let output = run(&[
        "checkpoint",
        "list",
        "--checkpoint-dir",
        dir_text,
        "--format",
        "json",
    ]);
    let value: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 2);

    let output = run(&[
        "checkpoint",
        "find",
        "--checkpoint-dir",
        dir_text,
        "--replay-session-id",
        "r",
        "--worker-session-id",
        "a",
        "--format",
        "json",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let value: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 1);
    assert_eq!(value[0]["key"], json!("worker-a"));

    let output = run(&[
        "checkpoint",
        "find",
        "--checkpoint-dir",
        dir_text,
        "--replay-session-id",
        "r",
        "--limit",
        "1",
        "--format",
        "json",
    ]);
    let value: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(value.as_array().unwrap().len(), 1);
    assert_eq!(value[0]["key"], json!("worker-b"));

    let output = run(&[
        "checkpoint",
        "find",
        "--checkpoint-dir",
        dir_text,
        "--job-uuid",
        "none",
        "--format",
        "json",
    ]);
    assert_eq!(stdout(&output).trim(), "[]");

    let output = run(&[
        "checkpoint",
        "delete",
        "--checkpoint-dir",
        dir_text,
        "--key",
        "worker-a",
        "--format",
        "json",
    ]);
    assert_eq!(
        stdout(&output).trim(),
        r#"{"key":"worker-a","deleted":true}"#
    );
    let output = run(&[
        "checkpoint",
        "delete",
        "--checkpoint-dir",
        dir_text,
        "--key",
        "worker-a",
    ]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("nothing to delete"));
}

#[test]
fn errors_exit_with_code_two_and_damaged_files_are_reported() {
    let root = tempdir().unwrap();
    let dir = root.path();
    let dir_text = dir.to_str().unwrap();

    let output = run(&[
        "checkpoint",
        "show",
        "--checkpoint-dir",
        dir_text,
        "--key",
        "missing",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("no checkpoint with key \"missing\""));

    let output = run(&["checkpoint", "find", "--checkpoint-dir", dir_text]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("at least one of"));

    let output = save(dir, "   ", "1", &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("blank"));

    let output = save(dir, "k", "1", &["--metadata", "[1"]);
    assert_eq!(output.status.code(), Some(2));

    let missing = root.path().join("absent");
    let output = run(&[
        "checkpoint",
        "list",
        "--checkpoint-dir",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        !missing.exists(),
        "read commands must not create the directory"
    );

    assert!(save(dir, "good", "1", &[]).status.success());
    std::fs::write(dir.join("bad.checkpoint.json"), "{\"key\":").unwrap();
    let output = run(&["checkpoint", "list", "--checkpoint-dir", dir_text]);
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("good"));
    assert!(
        stderr(&output).contains("bad.checkpoint.json is corrupt"),
        "{}",
        stderr(&output)
    );

    let output = run(&[
        "checkpoint",
        "find",
        "--checkpoint-dir",
        dir_text,
        "--job-uuid",
        "x",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("bad.checkpoint.json is corrupt"));
}

/// A `--checkpoint-dir` that is a regular file is named as not a directory by every command
/// that takes one (it used to be reported as missing, or as "File exists" by `save`).
#[test]
fn a_checkpoint_dir_that_is_a_file_is_reported_as_not_a_directory() {
    use esl_replay::store::{ArtifactStore as _, dataset};
    let root = tempdir().unwrap();
    let file = root.path().join("not-a-dir");
    std::fs::write(&file, "x").unwrap();
    let file = file.to_str().unwrap();
    let store_path = root.path().join("store");
    let mut store = crate::support::process::open_store(&store_path).unwrap();
    store
        .write_batch((0..3).map(dataset::envelope).collect())
        .unwrap();
    store.close().unwrap();
    let store = store_path.to_str().unwrap();
    let commands: Vec<Vec<&str>> = vec![
        vec!["checkpoint", "list", "-d", file],
        vec!["checkpoint", "show", "-d", file, "--key", "k"],
        vec![
            "checkpoint",
            "save",
            "-d",
            file,
            "--key",
            "k",
            "--sequence",
            "1",
        ],
        vec!["checkpoint", "delete", "-d", file, "--key", "k"],
        vec!["checkpoint", "find", "-d", file, "--job-uuid", "j"],
        vec![
            "prune",
            "--store",
            store,
            "--plan",
            "--max-age",
            "7d",
            "--checkpoint-dir",
            file,
        ],
        vec![
            "replay",
            "run",
            "--store",
            store,
            "--checkpoint-dir",
            file,
            "--checkpoint-key",
            "k",
        ],
        vec![
            "replay",
            "plan",
            "--store",
            store,
            "--checkpoint-dir",
            file,
            "--checkpoint-key",
            "k",
        ],
        vec![
            "forward",
            "redis",
            "--store",
            store,
            "--checkpoint-dir",
            file,
        ],
        vec![
            "forward",
            "nats",
            "--store",
            store,
            "--checkpoint-dir",
            file,
        ],
        vec![
            "evidence",
            "reconstruct",
            "--store",
            store,
            "--checkpoint-dir",
            file,
            "--checkpoint-key",
            "k",
        ],
        vec![
            "serve",
            "--store",
            store,
            "--listen",
            "127.0.0.1:0",
            "--checkpoint-dir",
            file,
        ],
    ];
    for args in commands {
        let output = run(&args);
        let text = crate::support::cli::error_output(&output);
        assert!(
            text.contains(&format!("{file} is not a directory")),
            "{args:?}: {text}"
        );
    }
}
