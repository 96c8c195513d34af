//! Forwarding flags that cannot work are refused when the command line is read, exit 2 with
//! a message naming the flag, before any server is contacted or checkpoint moved: NATS
//! subjects no record can be published on, a zero timeout, a first retry delay above the
//! largest (for `forward` and the capture's `--forward-*` flags alike).

use crate::support::cli;

/// Subjects a publisher cannot use: empty, with whitespace, an empty token, or a wildcard.
const BAD_SUBJECTS: [&str; 8] = ["", "bad subject", "a\tb", "a..b", ".a", "a.", "a.*", "a.>"];

#[test]
fn forward_nats_refuses_a_subject_no_record_can_be_published_on() {
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    for mode in ["core", "jetstream"] {
        for subject in BAD_SUBJECTS {
            let output = cli::run(&[
                "forward",
                "nats",
                "--store",
                store.to_str().unwrap(),
                "--checkpoint-dir",
                checkpoints.to_str().unwrap(),
                "--url",
                "nats://127.0.0.1:9",
                "--mode",
                mode,
                "--subject",
                subject,
            ]);
            let stderr = cli::error_output(&output);
            assert!(stderr.contains("--subject"), "{subject:?}: {stderr}");
            assert!(stderr.contains("NATS subject"), "{subject:?}: {stderr}");
        }
    }
    assert!(!checkpoints.exists(), "nothing was started");
}

#[test]
fn capture_refuses_a_forward_subject_no_record_can_be_published_on() {
    let dir = tempfile::tempdir().unwrap();
    for subject in BAD_SUBJECTS {
        let output = cli::run(&[
            "capture",
            "--store",
            dir.path().join("store").to_str().unwrap(),
            "--esl",
            "127.0.0.1:9",
            "--checkpoint-dir",
            dir.path().join("checkpoints").to_str().unwrap(),
            "--forward-nats",
            "nats://127.0.0.1:9",
            "--forward-subject",
            subject,
        ]);
        let stderr = cli::error_output(&output);
        assert!(
            stderr.contains("--forward-subject"),
            "{subject:?}: {stderr}"
        );
        assert!(stderr.contains("NATS subject"), "{subject:?}: {stderr}");
    }
    assert!(!dir.path().join("store").exists(), "no capture was started");
}

#[test]
fn forward_nats_refuses_a_zero_timeout() {
    let dir = tempfile::tempdir().unwrap();
    for timeout in ["0s", "0ms"] {
        let output = cli::run(&[
            "forward",
            "nats",
            "--store",
            dir.path().join("store").to_str().unwrap(),
            "--checkpoint-dir",
            dir.path().join("checkpoints").to_str().unwrap(),
            "--timeout",
            timeout,
        ]);
        let stderr = cli::error_output(&output);
        assert!(stderr.contains("--timeout"), "{timeout}: {stderr}");
        assert!(stderr.contains("longer than zero"), "{timeout}: {stderr}");
    }
}

#[test]
fn a_first_retry_delay_above_the_largest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, checkpoints) = (dir.path().join("store"), dir.path().join("checkpoints"));
    for target in ["redis", "nats"] {
        let output = cli::run(&[
            "forward",
            target,
            "--store",
            store.to_str().unwrap(),
            "--checkpoint-dir",
            checkpoints.to_str().unwrap(),
            "--retry-initial",
            "1h",
            "--retry-max",
            "1s",
        ]);
        let stderr = cli::error_output(&output);
        assert!(
            stderr.contains("--retry-initial (1h)") && stderr.contains("--retry-max (1s)"),
            "{target}: {stderr}"
        );
    }
    assert!(!checkpoints.exists(), "nothing was started");
}
