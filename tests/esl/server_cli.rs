//! `esl-replay simulate` as a process: the password comes from `--password-file` (there is
//! no flag for it on the command line and it is never printed), and a listener's stream of
//! `--max-events` simulated events ends with the disconnect notice.

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use crate::support::cli;
use crate::support::process::SpawnSafely as _;
use crate::support::server::{Client, event_name};

#[tokio::test]
async fn simulate_reads_its_password_from_a_file_and_streams_events() {
    let dir = tempfile::tempdir().unwrap();
    let password_file = dir.path().join("esl-password");
    std::fs::write(&password_file, "file-secret\n").unwrap();
    let mut child = cli::command()
        .args([
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--rate",
            "0",
            "--max-events",
            "25",
        ])
        .arg("--password-file")
        .arg(&password_file)
        .stderr(Stdio::piped())
        .spawn_safely()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let banner = lines.next().unwrap().unwrap();
    assert!(!banner.contains("file-secret"));
    let addr = banner
        .split_whitespace()
        .find_map(|word| word.parse::<std::net::SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no address in {banner:?}"));

    let mut wrong = Client::connect(addr).await;
    wrong.frame().await.unwrap();
    assert_eq!(wrong.command("auth ClueCon").await, "-ERR invalid");

    let mut c = Client::authenticated(addr, "file-secret").await;
    c.command("event plain ALL").await;
    let (events, _) = c.events_until_notice().await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(events.len(), 25);
    assert_eq!(event_name(&events[0]), "CHANNEL_CREATE");
}

#[test]
fn the_password_cannot_be_given_on_the_command_line() {
    let output = cli::command()
        .args(["simulate", "--password", "x"])
        .output_safely()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// A serving checkpoint beyond the store's end (taken on another store) is refused at
/// start-up with the message replay gives, exit 2; it used to serve nothing, silently.
#[test]
fn serve_refuses_a_checkpoint_beyond_the_stores_end() {
    use esl_replay::store::{ArtifactStore as _, dataset};
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store");
    let mut store = crate::support::process::open_store(&store_path).unwrap();
    store
        .write_batch((0..3).map(dataset::envelope).collect())
        .unwrap();
    store.close().unwrap();
    let checkpoints = dir.path().join("checkpoints");
    let checkpoints = checkpoints.to_str().unwrap();
    cli::run_ok(&[
        "checkpoint",
        "save",
        "-d",
        checkpoints,
        "--key",
        "lab",
        "--sequence",
        "10",
    ]);
    let output = cli::run(&[
        "serve",
        "--store",
        store_path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--checkpoint-dir",
        checkpoints,
        "--checkpoint-key",
        "lab",
    ]);
    let text = cli::error_output(&output);
    assert!(
        text.contains("beyond the store's last sequence 3"),
        "{text}"
    );
    assert!(
        text.contains("cannot resume serving from checkpoint `lab`"),
        "{text}"
    );
}

/// `serve` and `capture` read a password file alike: the first line; a file whose first
/// line is empty while later lines are not is refused saying so.
#[test]
fn a_password_files_empty_first_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("password");
    std::fs::write(&file, "\nClueCon\n").unwrap();
    let file = file.to_str().unwrap();
    for args in [
        vec!["serve", "--store", "absent", "--password-file", file],
        vec![
            "simulate",
            "--listen",
            "127.0.0.1:0",
            "--password-file",
            file,
        ],
        vec![
            "capture",
            "--store",
            "absent",
            "--esl",
            "127.0.0.1:9",
            "--password-file",
            file,
        ],
    ] {
        let text = cli::error_output(&cli::run(&args));
        assert!(
            text.contains(&format!(
                "the first line of the password file {file} is empty"
            )),
            "{args:?}: {text}"
        );
    }
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_str().unwrap();
    let text = cli::error_output(&cli::run(&[
        "capture",
        "--store",
        "absent",
        "--esl",
        "127.0.0.1:9",
        "--password-file",
        empty,
    ]));
    assert!(
        text.contains(&format!("the password file {empty} is empty")),
        "{text}"
    );
}
