//! `replay run --execute` runs that end early and resume: re-injections sent but never
//! confirmed, two runs of one checkpoint key, progress saved record by record, records in
//! the reference's dispatch shape, checkpoint files that do not say where to resume, and
//! resumes with other criteria.

use std::path::{Path, PathBuf};

use esl_replay::checkpoint::CheckpointStore;
use esl_replay::record::Envelope;
use esl_replay::replay::IN_FLIGHT_KEY;
use serde_json::{Value, json};

use crate::support::cli::{error_output, run, stderr, stdout};
use crate::support::fake_esl::{FakeSwitch, NEVER_ANSWERED};
use crate::support::map;
use crate::support::record::fixture_named;
use crate::support::server::{captured_at, dispatch_envelope, write_store};
use crate::support::wait_until;

fn store_of(dir: &Path, envelopes: Vec<Envelope>) -> PathBuf {
    let path = dir.join("store");
    write_store(&path, envelopes);
    path
}

fn checkpoint(dir: &Path, key: &str) -> Option<esl_replay::checkpoint::Checkpoint> {
    CheckpointStore::open(dir).unwrap().load(key).unwrap()
}

/// The last consumed sequence of the saved checkpoint of `key`.
fn consumed(dir: &Path, key: &str) -> u64 {
    checkpoint(dir, key)
        .expect("a saved checkpoint")
        .cursor()
        .last_consumed_sequence()
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| (*arg).to_owned()).collect()
}

fn run_owned(args: &[String]) -> std::process::Output {
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A slow command (no reply within `--reply-timeout`) reached the switch: the run stops
/// with it unconfirmed and marked in flight; a resume refuses to send it again unasked,
/// naming it, and `--skip-unconfirmed` goes on after it. The switch sees it once.
#[test]
fn an_unconfirmed_injection_is_never_sent_again_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let slow = format!("api originate {NEVER_ANSWERED}");
    let store = store_of(
        dir.path(),
        vec![
            dispatch_envelope("api.dispatch", &slow, captured_at(0)),
            dispatch_envelope("api.dispatch", "api status", captured_at(1)),
        ],
    );
    let switch = FakeSwitch::start();
    let cp = dir.path().join("cp");
    let base = owned(&[
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-dir",
        cp.to_str().unwrap(),
        "--checkpoint-key",
        "inject",
        "--execute",
        "--reinject",
        "--allowlist",
        "api.dispatch",
        "--reinject-to",
        switch.address(),
        "--reply-timeout",
        "200ms",
    ]);

    let first = run_owned(&base);
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    assert!(
        stderr(&first).contains("record 1 was sent but its reply never came"),
        "{}",
        stderr(&first)
    );
    wait_until("the switch has the command", || {
        switch.commands().len() == 1
    });
    let saved = checkpoint(&cp, "inject").unwrap();
    assert_eq!(saved.cursor().last_consumed_sequence(), 0);
    assert_eq!(saved.metadata()[IN_FLIGHT_KEY]["sequence"], 1);
    assert_eq!(
        saved.metadata()[IN_FLIGHT_KEY]["artifact_name"],
        "api.dispatch"
    );

    let resumed = run_owned(&base);
    let text = error_output(&resumed);
    assert!(
        text.contains("marks record 1 (api.dispatch, id ")
            && text.contains("--skip-unconfirmed")
            && text.contains("--retry-unconfirmed"),
        "{text}"
    );
    assert_eq!(switch.commands(), std::slice::from_ref(&slow));

    let mut skip = base.clone();
    skip.push("--skip-unconfirmed".into());
    let skipped = run_owned(&skip);
    assert!(skipped.status.success(), "{}", stderr(&skipped));
    assert_eq!(switch.commands(), [slow, "api status".to_owned()]);
    let saved = checkpoint(&cp, "inject").unwrap();
    assert_eq!(saved.cursor().last_consumed_sequence(), 2);
    assert!(!saved.metadata().contains_key(IN_FLIGHT_KEY));
}

/// A connection that fails before anything is sent leaves nothing in flight: the next
/// run sends the record without being told to.
#[test]
fn an_injection_that_never_connected_is_sent_by_the_next_run() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(
        dir.path(),
        vec![dispatch_envelope(
            "api.dispatch",
            "api status",
            captured_at(0),
        )],
    );
    let cp = dir.path().join("cp");
    let args = |address: &str| {
        owned(&[
            "replay",
            "run",
            "--store",
            store.to_str().unwrap(),
            "--checkpoint-dir",
            cp.to_str().unwrap(),
            "--checkpoint-key",
            "inject",
            "--execute",
            "--reinject",
            "--allowlist",
            "api.dispatch",
            "--reinject-to",
            address,
        ])
    };
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let failed = run_owned(&args(&closed));
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let saved = checkpoint(&cp, "inject").unwrap();
    assert_eq!(saved.cursor().last_consumed_sequence(), 0);
    assert!(!saved.metadata().contains_key(IN_FLIGHT_KEY), "{saved:?}");

    let switch = FakeSwitch::start();
    let sent = run_owned(&args(switch.address()));
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert_eq!(switch.commands(), ["api status"]);
}

fn five_events(dir: &Path) -> PathBuf {
    let envelopes = (0..5)
        .map(|i| {
            let mut envelope = fixture_named("event.raw");
            envelope.payload = map(json!({ "n": i }));
            envelope
        })
        .collect();
    store_of(dir, envelopes)
}

/// A second executing run of a key is refused while the first holds it; dry-runs, which
/// save nothing, are not.
#[test]
fn one_key_is_executed_by_one_run_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = five_events(dir.path());
    let cp = dir.path().join("cp");
    let args = [
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-dir",
        cp.to_str().unwrap(),
        "--checkpoint-key",
        "shared",
    ];
    let held = CheckpointStore::open(&cp).unwrap().lock("shared").unwrap();
    let refused = run(&[&args[..], &["--execute"]].concat());
    let text = error_output(&refused);
    assert!(
        text.contains("\"shared\" is in use by another run"),
        "{text}"
    );
    assert!(checkpoint(&cp, "shared").is_none());
    let dry = run(&args);
    assert!(dry.status.success(), "{}", stderr(&dry));

    drop(held);
    let ran = run(&[&args[..], &["--execute"]].concat());
    assert!(ran.status.success(), "{}", stderr(&ran));
    assert_eq!(consumed(&cp, "shared"), 5);
}

/// `--handler exec` saves after every record: killed outright (SIGKILL, no chance to
/// save) while handling record 3, the run leaves its checkpoint at 2, so a resume
/// repeats no command that finished.
#[test]
fn exec_progress_is_saved_after_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = five_events(dir.path());
    let cp = dir.path().join("cp");
    let killed = run(&[
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-dir",
        cp.to_str().unwrap(),
        "--checkpoint-key",
        "exec",
        "--execute",
        "--handler",
        "exec",
        "--",
        "sh",
        "-c",
        r#"if grep -q '"append_sequence":3,'; then kill -KILL "$PPID"; fi"#,
    ]);
    assert_eq!(killed.status.code(), None, "{}", stderr(&killed));
    let saved = checkpoint(&cp, "exec").expect("a checkpoint before the kill");
    assert_eq!(saved.cursor().last_consumed_sequence(), 2);
}

/// A dispatch in the reference's shape (`payload {"command", "args"}`) is sent as
/// `<command> <args>`; one without a command the injector can send is reported as not
/// re-injectable by the dry-run and rejected by the live run, never eligible then failed.
#[test]
fn reference_shaped_dispatches_are_sent_and_unsendable_ones_rejected_alike() {
    let dir = tempfile::tempdir().unwrap();
    let mut unsendable = fixture_named("api.dispatch");
    unsendable.payload = map(json!({ "command": 7, "args": "x" }));
    let store = store_of(dir.path(), vec![fixture_named("api.dispatch"), unsendable]);
    let path = store.to_str().unwrap();
    let reinject = [
        "--reinject",
        "--allowlist",
        "api.dispatch",
        "--format",
        "ndjson",
    ];
    let dry = run(&[&["replay", "run", "--store", path][..], &reinject].concat());
    assert!(dry.status.success(), "{}", stderr(&dry));
    let lines: Vec<Value> = stdout(&dry)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let outcomes = lines[0]["result"]["outcomes"].as_array().unwrap();
    assert_eq!(outcomes[0]["would_reinject"], true);
    assert_eq!(outcomes[0]["reinjection_reason"], "eligible");
    assert_eq!(outcomes[1]["would_reinject"], false);
    let reason = outcomes[1]["reinjection_reason"].as_str().unwrap();
    assert!(
        reason.starts_with("record cannot be sent: record 2 (api.dispatch) has no command"),
        "{reason}"
    );

    let switch = FakeSwitch::start();
    let live = run(&[
        &[
            "replay",
            "run",
            "--store",
            path,
            "--execute",
            "--reinject-to",
        ][..],
        &[switch.address()],
        &reinject,
    ]
    .concat());
    assert!(live.status.success(), "{}", stderr(&live));
    assert_eq!(switch.commands(), ["api originate sofia/internal/1000"]);
    let lines: Vec<Value> = stdout(&live)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let outcomes = lines[0]["result"]["outcomes"].as_array().unwrap();
    assert_eq!(outcomes[0]["action"], "injected");
    assert_eq!(outcomes[1]["action"], "reinjection_rejected");
    assert_eq!(outcomes[1]["reason"], reason);
}

/// A checkpoint file that reads (leniently, as the reference reads it) but does not say
/// where this consumer resumes is refused by a resuming run, naming the file, never read
/// as sequence 0 or 1. Listing still reads it.
#[test]
fn a_checkpoint_that_does_not_say_where_to_resume_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = five_events(dir.path());
    let cp = dir.path().join("cp");
    let checkpoints = CheckpointStore::open(&cp).unwrap();
    let file = checkpoints.path_for("k");
    for (content, says) in [
        ("{}", "no `last_consumed_sequence`"),
        (
            r#"{"key":"k","last_consumed_sequence":"garbage"}"#,
            "\"garbage\", not an integer",
        ),
        (
            r#"{"key":"k","last_consumed_sequence":null}"#,
            "null, not an integer",
        ),
        (
            r#"{"key":"k","last_consumed_sequence":[5]}"#,
            "[5], not an integer",
        ),
        (
            r#"{"key":"other","last_consumed_sequence":3}"#,
            "another consumer's progress",
        ),
    ] {
        std::fs::write(&file, content).unwrap();
        assert!(checkpoints.load("k").is_ok(), "{content}");
        let output = run(&[
            "replay",
            "run",
            "--store",
            store.to_str().unwrap(),
            "--checkpoint-dir",
            cp.to_str().unwrap(),
            "--checkpoint-key",
            "k",
            "--execute",
        ]);
        let text = error_output(&output);
        assert!(
            text.contains(&file.display().to_string())
                && text.contains("cannot be resumed from")
                && text.contains(says),
            "{content}: {text}"
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), content);
    }
}

/// Criteria are saved with the checkpoint; a resume with others is refused unless
/// `--allow-criteria-change`.
#[test]
fn a_resume_with_other_criteria_is_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = store_of(
        dir.path(),
        vec![
            fixture_named("event.raw"),
            fixture_named("api.dispatch"),
            fixture_named("event.raw"),
            fixture_named("api.dispatch"),
        ],
    );
    let cp = dir.path().join("cp");
    let base = [
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-dir",
        cp.to_str().unwrap(),
        "--checkpoint-key",
        "c",
        "--execute",
    ];
    let first = run(&[&base[..], &["--artifact-name", "event.raw", "--until", "2"]].concat());
    assert!(first.status.success(), "{}", stderr(&first));
    let saved = checkpoint(&cp, "c").unwrap();
    assert_eq!(
        saved.metadata()["replay_criteria"]["artifact_name"],
        "event.raw"
    );
    // The cursor is at the last record the criteria selected.
    assert_eq!(saved.cursor().last_consumed_sequence(), 1);

    let same = run(&[&base[..], &["--artifact-name", "event.raw", "--until", "2"]].concat());
    assert!(same.status.success(), "{}", stderr(&same));
    let other = run(&base);
    let text = error_output(&other);
    assert!(
        text.contains("was saved by a run with the criteria {\"artifact_name\":\"event.raw\"}")
            && text.contains("--allow-criteria-change"),
        "{text}"
    );
    assert_eq!(consumed(&cp, "c"), 1);
    let allowed = run(&[&base[..], &["--allow-criteria-change"]].concat());
    assert!(allowed.status.success(), "{}", stderr(&allowed));
    assert_eq!(consumed(&cp, "c"), 4);
}

/// `--after` past the store's end is refused like a checkpoint past it.
#[test]
fn after_past_the_end_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = five_events(dir.path());
    let output = run(&[
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--after",
        "9",
    ]);
    let text = error_output(&output);
    assert!(
        text.contains("--after 9 is past the store's last sequence 5"),
        "{text}"
    );
}

/// A run whose checkpoint another run of the key moved ahead meanwhile (here the `exec`
/// command itself, standing in for a run that took no lock) refuses to move it back, and
/// prints what it did before the error ends it.
#[test]
fn a_run_never_moves_its_checkpoint_back_and_reports_what_it_did_before_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = five_events(dir.path());
    let cp = dir.path().join("cp");
    let file = CheckpointStore::open(&cp).unwrap().path_for("k");
    let ahead = r#"{"key":"k","last_consumed_sequence":99}"#;
    let output = run(&[
        "replay",
        "run",
        "--store",
        store.to_str().unwrap(),
        "--checkpoint-dir",
        cp.to_str().unwrap(),
        "--checkpoint-key",
        "k",
        "--execute",
        "--handler",
        "exec",
        "--",
        "sh",
        "-c",
        r#"if grep -q '"append_sequence":2,'; then printf '%s' "$0" > "$1"; fi"#,
        ahead,
        file.to_str().unwrap(),
    ]);
    let text = error_output(&output);
    assert!(
        text.contains(
            "replay ended by an error after 5 records in 1 batch: 2 processed, 0 skipped; \
             last consumed sequence 2"
        ) && text.contains("is already at sequence 99, past the sequence 2"),
        "{text}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), ahead);
}
