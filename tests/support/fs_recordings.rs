//! The real FreeSWITCH 1.10.12 recordings in `../shared/fixtures/freeswitch-1.10.12/` (see
//! its README): one JSON line per proxy read, `{"t", "dir": "c2s"|"s2c", "data": base64}`.
//! They are third-party data, read in place and never copied into the project. Tests skip
//! when the directory is absent, except under `CI=true`, where its absence is a failure.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use bytes::BytesMut;
use esl_replay::esl::{EslCodec, Frame};
use esl_replay::server::CommandDecoder;
use tokio_util::codec::Decoder as _;

/// Which side sent a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// The client.
    ClientToServer,
    /// FreeSWITCH.
    ServerToClient,
}

/// One proxy read.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    pub(crate) seconds: f64,
    pub(crate) dir: Dir,
    pub(crate) data: Vec<u8>,
}

/// The recordings directory, `None` (with a message) when absent outside CI.
pub(crate) fn dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/freeswitch-1.10.12");
    if dir.is_dir() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but the FreeSWITCH recordings are missing at {}",
        dir.display()
    );
    println!("skipped: {} is absent", dir.display());
    None
}

/// The chunks of one recording, in the order the proxy saw them.
pub(crate) fn load(dir: &Path, name: &str) -> Vec<Chunk> {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            let dir = match value["dir"].as_str() {
                Some("c2s") => Dir::ClientToServer,
                Some("s2c") => Dir::ServerToClient,
                other => panic!("{name}: unknown dir {other:?}"),
            };
            let data = base64::engine::general_purpose::STANDARD
                .decode(value["data"].as_str().unwrap())
                .unwrap();
            Chunk {
                seconds: value["t"].as_f64().unwrap_or_default(),
                dir,
                data,
            }
        })
        .collect()
}

/// One direction's byte stream.
pub(crate) fn stream(chunks: &[Chunk], dir: Dir) -> Vec<u8> {
    chunks
        .iter()
        .filter(|c| c.dir == dir)
        .flat_map(|c| c.data.iter().copied())
        .collect()
}

/// Every frame of a server byte stream, in order.
pub(crate) fn frames(bytes: &[u8]) -> Vec<Frame> {
    let mut codec = EslCodec::new();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(frame) = codec.decode_eof(&mut buf).expect("recorded frames decode") {
        out.push(frame);
    }
    out
}

/// One client command as sent and the switch's frames that followed it.
#[derive(Debug)]
pub(crate) struct Turn {
    /// The command's exact bytes (command line, header lines, blank line, body).
    pub(crate) command: Vec<u8>,
    /// The frames completed after this command was sent and before the next one.
    pub(crate) replies: Vec<Frame>,
}

/// A recorded conversation cut into turns: the frames before any command (the greeting),
/// then each command with what followed it.
#[derive(Debug)]
pub(crate) struct Conversation {
    pub(crate) opening: Vec<Frame>,
    pub(crate) turns: Vec<Turn>,
}

/// Cuts a recording into turns by the order in which the proxy saw the bytes.
pub(crate) fn conversation(chunks: &[Chunk]) -> Conversation {
    let mut commands = CommandDecoder::default();
    let mut codec = EslCodec::new();
    let (mut c2s, mut s2c) = (BytesMut::new(), BytesMut::new());
    let mut opening = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for chunk in chunks {
        match chunk.dir {
            Dir::ClientToServer => {
                c2s.extend_from_slice(&chunk.data);
                loop {
                    let before = c2s.clone();
                    let Some(_) = commands.decode(&mut c2s).expect("recorded command") else {
                        break;
                    };
                    let used = before.len() - c2s.len();
                    turns.push(Turn {
                        command: before[..used].to_vec(),
                        replies: Vec::new(),
                    });
                }
            }
            Dir::ServerToClient => {
                s2c.extend_from_slice(&chunk.data);
                while let Some(frame) = codec.decode(&mut s2c).expect("recorded frame") {
                    match turns.last_mut() {
                        Some(turn) => turn.replies.push(frame),
                        None => opening.push(frame),
                    }
                }
            }
        }
    }
    assert!(s2c.is_empty(), "a recorded frame is incomplete");
    Conversation { opening, turns }
}
