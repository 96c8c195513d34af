//! The ESL codec and the client session on arbitrary bytes cut at arbitrary points: neither
//! panics; every decoded frame re-encodes to exactly the bytes consumed for it; the same
//! bytes in one read give the same frames; every frame goes through `Session::handle_frame`
//! and every timer through `handle_timeout`, and once closed the session transmits nothing.

#![no_main]

use std::time::Duration;

use bytes::BytesMut;
use esl_replay::esl::EslCodec;
use esl_replay::esl::session::{Phase, Session, SessionConfig, Subscriptions};
use esl_replay_fuzz::Bytes;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn decode_all(chunks: &[&[u8]], max: usize) -> (Vec<esl_replay::esl::Frame>, Vec<u8>, bool) {
    let mut codec = EslCodec::new()
        .with_max_content_length(max)
        .with_max_header_block(max.max(64));
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut consumed = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => {
                    consumed.extend_from_slice(&frame.to_bytes());
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(_) => return (frames, consumed, true),
            }
        }
    }
    (frames, consumed, false)
}

fuzz_target!(|data: &[u8]| {
    let mut input = Bytes(data);
    let max = usize::from(input.u8()) * 64 + 16;
    let step = usize::from(input.u8()).max(1);
    let bytes = input.rest();

    let chunks: Vec<&[u8]> = bytes.chunks(step).collect();
    let (frames, consumed, failed) = decode_all(&chunks, max);
    let (whole, whole_consumed, whole_failed) = decode_all(&[bytes], max);
    assert!(bytes.starts_with(&consumed), "frames re-encode to the consumed bytes");
    if !failed && !whole_failed {
        assert_eq!(frames, whole, "the read split does not change the frames");
        assert_eq!(consumed, whole_consumed);
    }

    let mut session = Session::new(SessionConfig::default(), Subscriptions::all(), Duration::ZERO);
    for (i, frame) in frames.iter().enumerate() {
        let now = Duration::from_secs(i as u64);
        session.handle_frame(frame, now);
        if session.phase() == Phase::Greeted {
            let _ = session.authenticate("ClueCon", now);
        }
        if let Some(at) = session.poll_timeout() {
            session.handle_timeout(at.min(now + Duration::from_secs(5)));
        }
        while session.poll_output().is_some() {}
        if session.phase() == Phase::Closed {
            assert!(session.poll_transmit().is_none());
            assert!(session.poll_timeout().is_none());
        }
        while session.poll_transmit().is_some() {}
    }
});
