//! The metadata decoders (`StartMark`, `CleanMark`, `DurableWatermark`, `FileHeader` with
//! either magic) on arbitrary bytes: they never panic, and what they accept re-encodes to
//! bytes that decode to the same value and carry the same fields. A file header has no unchecked bits, so it must
//! re-encode to exactly the bytes it came from.

#![no_main]

use esl_replay::storage::codec::{
    CLEAN_LEN, CleanMark, DURABLE_LEN, DurableWatermark, FileHeader, HEADER_LEN, INDEX_MAGIC,
    SEGMENT_MAGIC, START_LEN, StartMark,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mark) = StartMark::decode(data) {
        assert_eq!(data.len(), START_LEN);
        let again = mark.encode();
        assert_eq!(StartMark::decode(&again), Ok(mark));
        assert_eq!(
            again[16..24],
            data[16..24],
            "the start field is where it was read"
        );
    }
    if let Ok(mark) = CleanMark::decode(data) {
        assert_eq!(data.len(), CLEAN_LEN);
        let again = mark.encode();
        assert_eq!(CleanMark::decode(&again), Ok(mark));
        assert_eq!(
            again[16..48],
            data[16..48],
            "the fields are where they were read"
        );
    }
    if let Ok(watermark) = DurableWatermark::decode(data) {
        assert_eq!(data.len(), DURABLE_LEN);
        let again = watermark.encode();
        assert_eq!(DurableWatermark::decode(&again), Ok(watermark));
        assert_eq!(
            again[16..24],
            data[16..24],
            "the watermark is where it was read"
        );
    }
    for magic in [SEGMENT_MAGIC, INDEX_MAGIC] {
        if let Ok(header) = FileHeader::decode(data, magic) {
            assert!(data.len() >= HEADER_LEN);
            assert_eq!(
                header.encode(magic),
                data[..HEADER_LEN],
                "headers round-trip exactly"
            );
        }
    }
});
