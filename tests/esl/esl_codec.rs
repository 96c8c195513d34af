//! The ESL frame codec and event-body parsers, against the fixture corpus.
//!
//! - Every synthetic fixture (copied under `tests/fixtures/esl/synthetic/`) decodes to the
//!   same frames whatever the read split: 1-byte chunks, every two-way split, seeded random
//!   chunks, and all fixtures concatenated in one read; the frames re-encode byte for byte.
//! - The third-party apntalk fixtures are read from `../shared/fixtures/esl/apntalk-esl-core/`
//!   at test time; each test skips with a message when that folder is absent.
//! - Limits, percent decoding, JSON events, and a property: arbitrary bytes never panic.

use std::path::{Path, PathBuf};

use bytes::BytesMut;
use esl_replay::esl::event::{PlainEvent, json_event, percent_decode};
use esl_replay::esl::{Block, Error, EslCodec, Frame};
use quickcheck::{QuickCheck, TestResult};
use tokio_util::codec::{Decoder, Encoder};

fn synthetic() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/esl/synthetic");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "esl"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(out.len() >= 30, "synthetic fixtures missing: {}", out.len());
    out
}

fn apntalk() -> Option<PathBuf> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/esl/apntalk-esl-core");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: {} is absent", dir.display());
        None
    }
}

fn read(dir: &Path, rel: &str) -> Vec<u8> {
    std::fs::read(dir.join(rel)).unwrap()
}

/// Feeds `chunks` in order, then signals end of stream; returns frames and the final result.
fn decode_chunks<'a>(
    codec: &mut EslCodec,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Frame>, Error> {
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(frame) = codec.decode(&mut buf)? {
            frames.push(frame);
        }
    }
    while let Some(frame) = codec.decode_eof(&mut buf)? {
        frames.push(frame);
    }
    Ok(frames)
}

fn decode_all(bytes: &[u8]) -> Vec<Frame> {
    decode_chunks(&mut EslCodec::new(), [bytes]).unwrap()
}

fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut codec = EslCodec::new();
    let mut out = BytesMut::new();
    for frame in frames {
        codec.encode(frame, &mut out).unwrap();
    }
    out.to_vec()
}

/// A small seeded generator (xorshift64*), so random splits are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn random_chunks<'a>(bytes: &'a [u8], rng: &mut Rng, max: usize) -> Vec<&'a [u8]> {
    let mut chunks = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = 1 + rng.below(max.min(rest.len()));
        let (a, b) = rest.split_at(n);
        chunks.push(a);
        rest = b;
    }
    chunks
}

#[test]
fn synthetic_fixtures_decode_and_reencode_byte_exactly() {
    for (name, bytes) in synthetic() {
        let frames = decode_all(&bytes);
        assert!(!frames.is_empty(), "{name}: no frames");
        assert_eq!(encode(&frames), bytes, "{name}: re-encoding differs");
        for frame in &frames {
            assert!(frame.content_type().is_some(), "{name}: no content type");
            let declared = frame.content_length().unwrap().unwrap_or(0);
            assert_eq!(frame.body().len(), declared, "{name}");
            let mut one = BytesMut::new();
            frame.write_to(&mut one);
            assert_eq!(one.freeze(), frame.to_bytes());
        }
    }
}

#[test]
fn synthetic_frame_counts_and_headers() {
    let all = synthetic();
    let get = |n: &str| {
        let (_, b) = all.iter().find(|(name, _)| name.starts_with(n)).unwrap();
        decode_all(b)
    };
    assert_eq!(get("20-").len(), 14);
    assert_eq!(get("21-").len(), 2);
    assert_eq!(get("03-").len(), 2);
    assert_eq!(get("19-").len(), 2);
    let greeting = get("01-");
    assert_eq!(greeting.len(), 1);
    assert_eq!(greeting[0].content_type(), Some("auth/request"));
    assert!(greeting[0].body().is_empty());
    assert_eq!(greeting[0].content_length().unwrap(), None);
    let bgapi = get("07-");
    assert!(
        bgapi[0]
            .header("Reply-Text")
            .unwrap()
            .starts_with("+OK Job-UUID: ")
    );
    assert!(bgapi[0].header("Job-UUID").is_some());
    // Exact case: a lookup in another case does not match.
    assert!(bgapi[0].header("content-type").is_none());
}

#[test]
fn every_split_gives_the_same_frames() {
    for (name, bytes) in synthetic() {
        let expected = decode_all(&bytes);
        // 1-byte chunks.
        let ones = decode_chunks(&mut EslCodec::new(), bytes.chunks(1)).unwrap();
        assert_eq!(ones, expected, "{name}: 1-byte chunks");
        // Every two-way split.
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            let frames = decode_chunks(&mut EslCodec::new(), [a, b]).unwrap();
            assert_eq!(frames, expected, "{name}: split at {at}");
        }
        // Seeded random chunk sizes.
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ bytes.len() as u64);
        for round in 0..50 {
            let max = [2, 7, 64, 512][round % 4];
            let chunks = random_chunks(&bytes, &mut rng, max);
            let frames = decode_chunks(&mut EslCodec::new(), chunks).unwrap();
            assert_eq!(frames, expected, "{name}: random round {round}");
        }
    }
}

#[test]
fn several_frames_per_read() {
    let all = synthetic();
    let mut stream = Vec::new();
    let mut expected = Vec::new();
    for (_, bytes) in &all {
        stream.extend_from_slice(bytes);
        expected.extend(decode_all(bytes));
    }
    let frames = decode_all(&stream);
    assert_eq!(frames, expected);
    assert_eq!(encode(&frames), stream);
    let mut rng = Rng(42);
    for round in 0..20 {
        let chunks = random_chunks(&stream, &mut rng, 4096);
        let frames = decode_chunks(&mut EslCodec::new(), chunks).unwrap();
        assert_eq!(frames, expected, "round {round}");
    }
}

#[test]
fn stray_newlines_between_frames_are_kept_for_reencoding() {
    let stream = b"\nContent-Type: auth/request\n\n\r\n\nContent-Type: command/reply\nReply-Text: +OK accepted\n\n";
    let frames = decode_all(stream);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1].header("Reply-Text"), Some("+OK accepted"));
    assert_eq!(encode(&frames), stream);
    // Trailing stray newlines at end of stream are dropped, not an error.
    let frames = decode_all(b"Content-Type: auth/request\n\n\n\n");
    assert_eq!(frames.len(), 1);
}

/// Review finding 5: `Content-Length` is found whatever its case, as libesl finds it, so a
/// lower-case `content-length:` does not misframe the stream; the frame still re-encodes
/// byte for byte.
#[test]
fn content_length_is_matched_whatever_its_case() {
    let stream = b"content-length: 5\nContent-Type: text/event-plain\n\nhello\
        CONTENT-LENGTH: 2\nContent-Type: api/response\n\nok\
        Content-Type: auth/request\n\n";
    let frames = decode_all(stream);
    assert_eq!(frames.len(), 3);
    assert_eq!(&frames[0].body()[..], b"hello");
    assert_eq!(&frames[1].body()[..], b"ok");
    assert_eq!(frames[2].header("Content-Type"), Some("auth/request"));
    assert_eq!(encode(&frames), stream);
}

#[test]
fn duplicate_headers_and_order_are_kept() {
    let stream = b"Content-Type: x\nA: 1\nB: 2\nA: 3\nV: has: colon\nT:\tno-space\n\n";
    let frames = decode_all(stream);
    let h = frames[0].headers();
    assert_eq!(h.len(), 6);
    assert_eq!(frames[0].header("A"), Some("1"));
    assert_eq!(h[3], ("A".to_string(), "3".to_string()));
    assert_eq!(frames[0].header("V"), Some("has: colon"));
    assert_eq!(frames[0].header("T"), Some("no-space"));
}

fn first_error(bytes: &[u8]) -> Error {
    let mut codec = EslCodec::new();
    let mut buf = BytesMut::from(bytes);
    loop {
        match codec.decode_eof(&mut buf) {
            Err(e) => return e,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("no error"),
        }
    }
}

#[test]
fn malformed_apntalk_fixtures_give_specific_errors() {
    let Some(dir) = apntalk() else { return };
    match first_error(&read(&dir, "malformed/empty-header-name.esl")) {
        Error::EmptyHeaderName {
            block: Block::Outer,
            line: 1,
            ..
        } => {}
        e => panic!("empty name: {e:?}"),
    }
    match first_error(&read(&dir, "malformed/missing-header-colon.esl")) {
        Error::MissingColon {
            block: Block::Outer,
            line: 1,
            text,
        } => {
            assert_eq!(text, "Content-Type auth/request")
        }
        e => panic!("missing colon: {e:?}"),
    }
    match first_error(&read(
        &dir,
        "malformed/header-name-with-surrounding-whitespace.esl",
    )) {
        Error::HeaderNameWhitespace {
            block: Block::Outer,
            line: 1,
            ..
        } => {}
        e => panic!("whitespace: {e:?}"),
    }
    match first_error(&read(&dir, "malformed/invalid-content-length.esl")) {
        Error::InvalidContentLength {
            block: Block::Outer,
            value,
        } => {
            assert_eq!(value, "not-a-number")
        }
        e => panic!("content length: {e:?}"),
    }
    // The inner cases frame fine; the plain-event parser rejects their bodies.
    for (file, want_truncated) in [
        ("malformed/event-plain-inner-body-truncated.esl", true),
        ("malformed/event-plain-missing-inner-terminator.esl", false),
    ] {
        let bytes = read(&dir, file);
        let mut codec = EslCodec::new();
        let mut buf = BytesMut::from(&bytes[..]);
        let frame = codec.decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.content_type(), Some("text/event-plain"));
        match (PlainEvent::parse(frame.body()), want_truncated) {
            (
                Err(Error::InnerBodyTruncated {
                    declared: 12,
                    actual: 0,
                }),
                true,
            ) => {}
            (Err(Error::MissingInnerTerminator), false) => {}
            (r, _) => panic!("{file}: {r:?}"),
        }
    }
}

#[test]
fn partial_apntalk_fixtures_wait_then_report_truncation() {
    let Some(dir) = apntalk() else { return };
    for file in [
        "partial/api-response-body-truncated-partial.bin",
        "partial/auth-request-missing-terminator-partial.bin",
    ] {
        let bytes = read(&dir, file);
        for chunk in [1, 3, bytes.len()] {
            let mut codec = EslCodec::new();
            let mut buf = BytesMut::new();
            for piece in bytes.chunks(chunk) {
                buf.extend_from_slice(piece);
                assert!(codec.decode(&mut buf).unwrap().is_none(), "{file}");
            }
            match codec.decode_eof(&mut buf) {
                Err(Error::Truncated { buffered }) => assert_eq!(buffered, bytes.len()),
                r => panic!("{file}: {r:?}"),
            }
        }
    }
}

#[test]
fn live_and_sequence_apntalk_fixtures_round_trip() {
    let Some(dir) = apntalk() else { return };
    let mut files = vec![
        "live/api-status-response.esl".to_string(),
        "live/auth-accepted-command-reply.esl".to_string(),
        "sequences/bgapi-acceptance-and-completion.esl".to_string(),
    ];
    for e in std::fs::read_dir(dir.join("live/events")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        files.push(format!("live/events/{name}"));
    }
    for file in files {
        let bytes = read(&dir, &file);
        let frames = decode_all(&bytes);
        assert_eq!(encode(&frames), bytes, "{file}");
        let ones = decode_chunks(&mut EslCodec::new(), bytes.chunks(1)).unwrap();
        assert_eq!(ones, frames, "{file}");
        for frame in &frames {
            match frame.content_type() {
                Some("text/event-plain") => {
                    PlainEvent::parse(frame.body()).unwrap();
                }
                Some("text/event-json") => {
                    json_event(frame.body()).unwrap();
                }
                _ => {}
            }
        }
    }
    let bytes = read(&dir, "live/events/playback-start-tone-stream-plain.esl");
    let frame = &decode_all(&bytes)[0];
    let event = PlainEvent::parse(frame.body()).unwrap();
    let raw = event
        .raw_headers()
        .iter()
        .find(|(_, v)| v.contains("%25("))
        .unwrap();
    let decoded = event.header(&raw.0).unwrap();
    assert!(decoded.windows(2).any(|w| w == b"%("), "{:?}", raw);
}

#[test]
fn content_length_cap_and_validation() {
    let ok = b"Content-Type: api/response\nContent-Length: 10\n\n0123456789";
    let mut codec = EslCodec::new().with_max_content_length(10);
    assert_eq!(codec.max_content_length(), 10);
    assert_eq!(decode_chunks(&mut codec, [&ok[..]]).unwrap().len(), 1);
    let mut codec = EslCodec::new().with_max_content_length(9);
    match decode_chunks(&mut codec, [&ok[..]]) {
        Err(Error::ContentLengthTooLarge { length: 10, max: 9 }) => {}
        r => panic!("{r:?}"),
    }
    // Default cap: 16 MiB; one byte more is rejected before any body arrives.
    let big = format!("Content-Length: {}\n\n", 16 * 1024 * 1024 + 1);
    let mut buf = BytesMut::from(big.as_bytes());
    assert!(matches!(
        EslCodec::new().decode(&mut buf),
        Err(Error::ContentLengthTooLarge { .. })
    ));
    for bad in [
        "-1",
        "+5",
        "5 ",
        "5\t",
        "",
        "0x10",
        "99999999999999999999999999",
    ] {
        let text = format!("Content-Type: x\nContent-Length: {bad}\n\n");
        let mut buf = BytesMut::from(text.as_bytes());
        match EslCodec::new().decode(&mut buf) {
            Err(Error::InvalidContentLength { .. }) => {}
            r => panic!("{bad:?}: {r:?}"),
        }
    }
}

#[test]
fn header_block_cap_bounds_memory() {
    let mut codec = EslCodec::new().with_max_header_block(64);
    assert_eq!(codec.max_header_block(), 64);
    let mut buf = BytesMut::new();
    let mut failed = false;
    for _ in 0..100 {
        buf.extend_from_slice(b"X-Header: never-ends\n");
        match codec.decode(&mut buf) {
            Ok(None) => assert!(buf.len() <= 64),
            Err(Error::HeaderBlockTooLarge { max: 64, .. }) => {
                failed = true;
                break;
            }
            r => panic!("{r:?}"),
        }
    }
    assert!(failed);
    // A terminated block over the cap is rejected too.
    let mut codec = EslCodec::new().with_max_header_block(20);
    let mut buf = BytesMut::from(&b"Content-Type: auth/request\n\n"[..]);
    assert!(matches!(
        codec.decode(&mut buf),
        Err(Error::HeaderBlockTooLarge { .. })
    ));
    assert_eq!(EslCodec::new().max_header_block(), 1024 * 1024);
}

#[test]
fn synthetic_plain_events_parse() {
    for (name, bytes) in synthetic() {
        for frame in decode_all(&bytes) {
            match frame.content_type() {
                Some("text/event-plain") => {
                    let event = PlainEvent::parse(frame.body()).unwrap();
                    assert!(event.event_name().is_some(), "{name}");
                    if let Some(n) = event.content_length() {
                        assert_eq!(event.body().len(), n, "{name}");
                    }
                }
                Some("text/event-json") => {
                    let map = json_event(frame.body()).unwrap();
                    assert!(map.contains_key("Event-Name"), "{name}");
                }
                _ => {}
            }
        }
    }
    let all = synthetic();
    let find = |n: &str| {
        let (_, b) = all.iter().find(|(name, _)| name.starts_with(n)).unwrap();
        decode_all(b).remove(0)
    };
    let dtmf = PlainEvent::parse(find("13-").body()).unwrap();
    assert_eq!(dtmf.header("DTMF-Digit"), Some(&b"#"[..]));
    let job = PlainEvent::parse(find("08-").body()).unwrap();
    assert!(!job.body().is_empty());
    let array = PlainEvent::parse(find("23-").body()).unwrap();
    assert!(array.headers().any(|(_, v)| v.starts_with(b"ARRAY::")));
    let json = json_event(find("23b-").body()).unwrap();
    assert!(json.values().any(serde_json::Value::is_array));
}

#[test]
fn percent_decoding_rules() {
    assert_eq!(percent_decode(b"%25("), b"%(");
    assert_eq!(
        percent_decode(b"tone_stream%3A//%25(250,50,440)"),
        b"tone_stream://%(250,50,440)"
    );
    assert_eq!(percent_decode(b"%"), b"%");
    assert_eq!(percent_decode(b"100%"), b"100%");
    assert_eq!(percent_decode(b"%4"), b"%4");
    assert_eq!(percent_decode(b"%zz%41"), b"%zzA");
    assert_eq!(percent_decode(b"a+b%2Bc"), b"a+b+c");
    assert_eq!(percent_decode(b"%c3%AB"), "ë".as_bytes());
    assert_eq!(percent_decode(b"%FF"), [0xFF]);
    assert_eq!(percent_decode(b"Tue,%2014%20Apr"), b"Tue, 14 Apr");
    assert_eq!(percent_decode(b""), b"");
}

#[test]
fn plain_event_edge_cases() {
    let event =
        PlainEvent::parse(b"Event-Name: X\nvariable_nolocal:origination_uuid: a%20b\nLone: 5%\n\n")
            .unwrap();
    assert_eq!(
        event.header("variable_nolocal:origination_uuid"),
        Some(&b"a b"[..])
    );
    assert_eq!(event.header_str("Lone").as_deref(), Some("5%"));
    assert!(event.body().is_empty());
    assert_eq!(event.content_length(), None);
    match PlainEvent::parse(b"Event-Name: X\n: v\n\n") {
        Err(Error::EmptyHeaderName {
            block: Block::Inner,
            line: 2,
            ..
        }) => {}
        r => panic!("{r:?}"),
    }
    match PlainEvent::parse(b"Event-Name: X\nContent-Length: x\n\nbody") {
        Err(Error::InvalidContentLength {
            block: Block::Inner,
            ..
        }) => {}
        r => panic!("{r:?}"),
    }
    match PlainEvent::parse(b"Event-Name: X\nContent-Length: 5\n\nabc") {
        Err(Error::InnerBodyTruncated {
            declared: 5,
            actual: 3,
        }) => {}
        r => panic!("{r:?}"),
    }
    let ok = PlainEvent::parse(b"Event-Name: X\nContent-Length: 3\n\nabc").unwrap();
    assert_eq!(ok.body(), b"abc");
    assert_eq!(ok.content_length(), Some(3));
}

#[test]
fn json_event_value_rules() {
    let map = json_event(br#"{"Event-Name":"X","multi":["a","b"]}"#).unwrap();
    assert_eq!(map.keys().collect::<Vec<_>>(), ["Event-Name", "multi"]);
    assert!(matches!(json_event(b"[1]"), Err(Error::JsonNotObject)));
    assert!(matches!(
        json_event(b"{\"a\":"),
        Err(Error::InvalidJson { .. })
    ));
    match json_event(br#"{"a":"x","n":1}"#) {
        Err(Error::JsonValueType { key }) => assert_eq!(key, "n"),
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        json_event(br#"{"a":["x",2]}"#),
        Err(Error::JsonValueType { .. })
    ));
}

fn never_panics(data: Vec<u8>, sizes: Vec<u8>) -> TestResult {
    for codec in [
        EslCodec::new(),
        EslCodec::new()
            .with_max_header_block(16)
            .with_max_content_length(8),
    ] {
        let mut codec = codec;
        let mut buf = BytesMut::new();
        let mut rest = &data[..];
        let mut i = 0;
        'feed: while !rest.is_empty() {
            let n = 1 + usize::from(sizes.get(i).copied().unwrap_or(255)) % rest.len().max(1);
            let n = n.min(rest.len());
            i += 1;
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        let _ = PlainEvent::parse(frame.body());
                        let _ = json_event(frame.body());
                        let _ = frame.content_length();
                    }
                    Ok(None) => break,
                    Err(_) => {
                        // Calling again after an error must not panic either.
                        let _ = codec.decode(&mut buf);
                        let _ = codec.decode_eof(&mut buf);
                        break 'feed;
                    }
                }
            }
        }
        let _ = codec.decode_eof(&mut buf);
    }
    let _ = percent_decode(&data);
    TestResult::passed()
}

#[test]
fn arbitrary_bytes_never_panic() {
    QuickCheck::new()
        .tests(2000)
        .quickcheck(never_panics as fn(Vec<u8>, Vec<u8>) -> TestResult);
    // Structured-ish input: header-like lines with arbitrary lengths and bodies.
    fn framed(lines: Vec<(String, String)>, len: u8, body: Vec<u8>) -> TestResult {
        let mut data = Vec::new();
        for (n, v) in lines {
            data.extend_from_slice(format!("{n}: {v}\n").as_bytes());
        }
        data.extend_from_slice(format!("Content-Length: {len}\n\n").as_bytes());
        data.extend_from_slice(&body);
        never_panics(data, vec![1, 2, 3, 200])
    }
    QuickCheck::new()
        .tests(1000)
        .quickcheck(framed as fn(Vec<(String, String)>, u8, Vec<u8>) -> TestResult);
}

#[test]
fn errors_name_the_line_and_repeat_without_consuming() {
    let bytes = b"Content-Type: x\nGood: 1\nBad line\n\n";
    let mut codec = EslCodec::new();
    let mut buf = BytesMut::from(&bytes[..]);
    for _ in 0..2 {
        match codec.decode(&mut buf) {
            Err(Error::MissingColon {
                block: Block::Outer,
                line: 3,
                text,
            }) => {
                assert_eq!(text, "Bad line")
            }
            r => panic!("{r:?}"),
        }
    }
    assert_eq!(buf.len(), bytes.len());
    let message = Error::EmptyHeaderName {
        block: Block::Inner,
        line: 2,
        text: ": v".into(),
    };
    assert_eq!(
        message.to_string(),
        "inner header line 2 has an empty name: \": v\""
    );
}
