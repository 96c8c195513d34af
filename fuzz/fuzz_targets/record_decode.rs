//! The record body decoders (format/record.md) on arbitrary bytes: viewing and decoding never
//! panic; a body that decodes into a record re-encodes (as version 2) to bytes that decode to
//! the same record, and a version 2 body that decodes re-encodes to exactly itself; a view
//! agrees with the record built from the same bytes and writes the same NDJSON line.

#![no_main]

use esl_replay::record::{
    DecodeBuffer, FORMAT_VERSION, Record, RecordView, append_ndjson_line, to_ndjson_line,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buffer = DecodeBuffer::default();
    let view = RecordView::decode(data, &mut buffer);
    let Ok(record) = Record::decode(data) else {
        return;
    };
    let view = view.expect("a body that decodes can be viewed");
    assert_eq!(
        view.to_record().ok().as_ref(),
        Some(&record),
        "a view builds the record"
    );
    let mut line = String::new();
    view.append_ndjson_line(&mut line);
    let mut expected = String::new();
    append_ndjson_line(&record, &mut expected);
    assert_eq!(line, expected, "a view writes the record's line");
    let again = record.encode().expect("a decoded record encodes");
    if data.first() == Some(&FORMAT_VERSION) {
        assert_eq!(again, data, "version 2 bodies round-trip exactly");
    }
    let reread = Record::decode(&again).expect("what was encoded decodes");
    assert_eq!(
        to_ndjson_line(&reread),
        to_ndjson_line(&record),
        "a re-encoded record writes the same line"
    );
});
