//! Smoke test of the log's basic life cycle: append, read back, reopen, roll, truncate.

use esl_replay::storage::{LogOptions, Reader, Seq, SyncPolicy};

use crate::support::process::open_log;

fn small() -> LogOptions {
    LogOptions {
        segment_bytes: 64 << 10,
        max_payload_bytes: 8 << 10,
        ..LogOptions::default()
    }
}

#[test]
fn append_read_reopen_roll_truncate() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = open_log(dir.path(), small()).unwrap();
    assert_eq!(report.next_seq, 1);
    for i in 0..10000u32 {
        let seq = log.append(format!("record {i}").as_bytes()).unwrap();
        assert_eq!(seq, Seq(u64::from(i) + 1));
    }
    log.sync().unwrap();
    let reader = log.reader();
    assert!(reader.segments().len() > 1, "small segments must roll");
    let all: Vec<_> = reader.iter(Seq(1)).unwrap().map(Result::unwrap).collect();
    assert_eq!(all.len(), 10000);
    assert_eq!(all[1234].1, b"record 1234");
    assert_eq!(reader.get(Seq(777)).unwrap().unwrap(), b"record 776");
    log.close().unwrap();

    let (mut log, report) = open_log(dir.path(), small()).unwrap();
    assert!(report.clean_shutdown, "{report:?}");
    assert_eq!(report.next_seq, 10001);
    assert_eq!(log.append(b"after").unwrap(), Seq(10001));
    let truncated = log.truncate_prefix(Seq(7500)).unwrap();
    assert!(truncated.segments_removed > 0);
    let reader = log.reader();
    assert_eq!(reader.first_seq(), Seq(7500));
    assert_eq!(reader.get(Seq(10)).unwrap(), None);
    let first = reader.iter(Seq(1)).unwrap().next().unwrap().unwrap();
    assert_eq!(first.0, Seq(7500));

    let follower = Reader::open(dir.path(), &small()).unwrap();
    assert_eq!(follower.next_seq().unwrap(), Seq(10002));
    log.append(b"later").unwrap();
    assert!(
        follower
            .wait_for(Seq(10002), std::time::Duration::from_secs(5))
            .unwrap()
    );
    assert_eq!(follower.get(Seq(10002)).unwrap().unwrap(), b"later");
    drop(log);

    let (log, report) = open_log(
        dir.path(),
        LogOptions {
            sync_policy: SyncPolicy::EveryAppend,
            ..small()
        },
    )
    .unwrap();
    assert_eq!(report.first_seq, 7500);
    assert_eq!(log.next_seq(), Seq(10003));
}
