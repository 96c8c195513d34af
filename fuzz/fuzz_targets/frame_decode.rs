//! `codec::decode_frame` on arbitrary bytes, salt, sequence and payload limit: it never
//! panics, what it accepts re-encodes to exactly the bytes it was decoded from, and what the
//! encoder writes decodes back.

#![no_main]

use esl_replay::storage::codec::{self, Decoded, FRAME_HEADER_LEN, FRAME_PAYLOAD_LIMIT, FrameKind};
use esl_replay_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let salt = input.u64();
    let seq = input.u64();
    let max = input.u32();
    let bytes = input.rest();

    match codec::decode_frame(bytes, salt, seq, max) {
        Decoded::Record {
            compressed,
            payload,
            frame_len,
        } => {
            assert_eq!(frame_len, FRAME_HEADER_LEN + payload.len());
            assert!(frame_len <= bytes.len());
            assert!(payload.len() as u64 <= u64::from(max.min(FRAME_PAYLOAD_LIMIT)));
            assert_eq!(payload, &bytes[FRAME_HEADER_LEN..frame_len]);
            let kind = if compressed {
                FrameKind::Compressed
            } else {
                FrameKind::Plain
            };
            assert_eq!(
                codec::encode_frame(salt, seq, kind, payload),
                &bytes[..frame_len],
                "a decoded record re-encodes to the same bytes"
            );
            // [FRM-03] the frame is bound to its sequence (the tag is a bijection of the
            // folded sequence, so neighbours below 2^32 never share it).
            if seq < u64::from(u32::MAX) {
                assert!(!matches!(
                    codec::decode_frame(bytes, salt, seq + 1, max),
                    Decoded::Record { .. } | Decoded::Seal
                ));
            }
        }
        Decoded::Seal => {
            assert_eq!(
                codec::encode_frame(salt, seq, FrameKind::Seal, &[]),
                &bytes[..FRAME_HEADER_LEN],
                "a decoded seal re-encodes to the same bytes"
            );
        }
        Decoded::Empty => {
            let head = &bytes[..bytes.len().min(FRAME_HEADER_LEN)];
            assert!(head.iter().all(|b| *b == 0), "Empty only for a zero header");
        }
        Decoded::Invalid(_) => {}
    }

    // What the encoder writes decodes back, for every kind.
    let payload = &bytes[..bytes.len().min(4096)];
    for kind in [FrameKind::Plain, FrameKind::Compressed] {
        let frame = codec::encode_frame(salt, seq, kind, payload);
        assert_eq!(
            codec::decode_frame(&frame, salt, seq, FRAME_PAYLOAD_LIMIT),
            Decoded::Record {
                compressed: kind == FrameKind::Compressed,
                payload,
                frame_len: frame.len(),
            }
        );
    }
    let seal = codec::encode_frame(salt, seq, FrameKind::Seal, &[]);
    assert_eq!(codec::decode_frame(&seal, salt, seq, 0), Decoded::Seal);
});
