//! The benchmark dataset is deterministic and its records encode to about 500 bytes (record
//! body version 2; version 1 stored them in about 370).

use esl_replay::record::{Record, RecordId};
use esl_replay::store::dataset;

#[test]
fn dataset_records_are_about_500_bytes_and_deterministic() {
    let mut total = 0;
    for n in 0..1000 {
        let envelope = dataset::envelope(n);
        assert_eq!(
            envelope.checksum().unwrap(),
            dataset::envelope(n).checksum().unwrap()
        );
        let record = Record::from_envelope(
            envelope,
            RecordId::generate(),
            time::OffsetDateTime::UNIX_EPOCH,
            n + 1,
        )
        .unwrap();
        total += record.encode().unwrap().len();
    }
    let mean = total / 1000;
    assert!((450..=540).contains(&mean), "mean encoded size {mean}");
}
