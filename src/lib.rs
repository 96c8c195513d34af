//! esl-replay: a storage engine and toolkit for FreeSWITCH Event Socket (ESL) traffic.
//!
//! The crate is layered; each top-level module is drawn as a future crate and may only use
//! the modules below it (see `docs/ARCHITECTURE.md`):
//!
//! - [`storage`]: the segment log engine. It knows only bytes: CRC-framed records in
//!   segment files, sparse index, mmap reads, torn-tail recovery, group commit, prefix
//!   truncation, atomic files and the single-writer lock. Its byte layout is specified in
//!   `format/`.
//! - [`record`]: the replay record model, its reference-compatible checksum and NDJSON
//!   interchange, and its binary encoding inside log frames.
//! - [`checkpoint`]: consumer progress (key, cursor, metadata) in reference-compatible,
//!   atomically replaced files; lookup by identity; resume state; compatibility with what
//!   the artifact store retains.
//! - [`store`]: the artifact store contract and its two backends, the segment log
//!   ([`store::LogStore`]) and SQLite with the reference schema (`store::SqliteStore`,
//!   feature `sqlite`); NDJSON import and export; live tail.
//! - [`retention`]: checkpoint-aware planning and applying of prefix prunes.
//! - [`replay`]: offline replay: the plan/execute executor (dry-run, handler dispatch,
//!   guarded re-injection), whole-range replay with checkpoints, and fold replay of typed
//!   state from persisted snapshots.
//! - `esl` (feature `esl`): the pure ESL wire codec: frames, the `tokio_util`
//!   decoder/encoder, and plain/JSON event-body parsers. It uses no other module.
//! - [`evidence`]: recovery evidence rebuilt from stored records (operations, generations,
//!   postures, publications), written as byte-stable JSON bundles and compared with
//!   scenario expectations; windows resumed from checkpoints.
//! - `forward` (feature `forward`): ships records to Redis Streams and NATS (JetStream or
//!   core) with checkpointed, resumable delivery, retries with backoff, and metrics.
//! - `http_server` (feature `http_server`): the HTTP server of capture's endpoints and
//!   forward's metrics, with a connection cap, a header timeout and a header size bound.
//! - `capture` (feature `capture`): the ESL capture node: a tokio client per FreeSWITCH
//!   node (auth, subscriptions restored after every reconnect, backoff with jitter, gap
//!   markers), a byte-bounded queue to a batch writer, `/health`, `/metrics`, a command
//!   gateway, and the ESL injector that re-sends stored commands for [`replay`].
//! - `server` (feature `server`): a FreeSWITCH-compatible inbound ESL server that replays a
//!   store's events to any ESL client (`serve`) or simulates a busy FreeSWITCH
//!   (`simulate`).
//!
//! The `esl-replay` command (feature `cli`) is a separate binary built on this public API;
//! its code is in `src/cli/`, outside the library. Library code returns errors, never panics
//! on input and never prints.
//!
//! # Features
//!
//! The engine needs no feature: [`storage`], [`record`], [`store`] (the segment-log
//! backend), [`checkpoint`], [`retention`], [`replay`] and [`evidence`] build with
//! `default-features = false`, without tokio, axum, redis, async-nats, SQLite or clap.
//! Features add the rest, each enabling the features of the modules it uses:
//!
//! | feature | adds | enables |
//! |---|---|---|
//! | `sqlite` | `store::SqliteStore`; without it, [`store::open`] refuses a SQLite path | |
//! | `esl` | the `esl` module | |
//! | `http_server` | the `http_server` module | |
//! | `capture` | the `capture` module | `esl`, `http_server` |
//! | `server` | the `server` module | `esl` |
//! | `forward` | the `forward` module | `esl`, `http_server` |
//! | `cli` (default) | the `esl-replay` binary | all of the above |
//!
//! # Example
//!
//! Open a store, append captured artifacts, read them back by cursor, look one up by id,
//! and fold the stream into a state:
//!
//! ```
//! use esl_replay::record::{Criteria, Envelope, JsonMap, ReadCursor, Record};
//! use esl_replay::replay::{FoldOptions, MemorySnapshots, Stream, fold};
//! use esl_replay::store::{ArtifactReader as _, ArtifactStore as _, LogStore};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! let mut store = LogStore::open(dir.path().join("store"))?;
//!
//! // The store gives each artifact its id, sequence, storage time and checksum.
//! let mut ids = Vec::new();
//! for event in ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP"] {
//!     let mut payload = JsonMap::new();
//!     payload.insert("Event-Name".into(), event.into());
//!     let envelope = Envelope::new("1", "event.raw", time::OffsetDateTime::now_utc())
//!         .with_connection_generation("1")
//!         .with_event_name(event)
//!         .with_payload(payload);
//!     ids.push(store.write(envelope)?);
//! }
//!
//! // Read in append order from a cursor (the last sequence consumed), with criteria.
//! let records = store.read_from_cursor(&ReadCursor::start(), 500, &Criteria::any())?;
//! assert_eq!(records.len(), 3);
//!
//! // Or visit them where they are stored, without copying: the payload is its JSON text.
//! let mut payloads = Vec::new();
//! store.visit_from_cursor(&ReadCursor::start(), 500, &Criteria::any(), &mut |record| {
//!     payloads.push(record.payload_json().to_owned());
//! })?;
//! assert_eq!(payloads[0], r#"{"Event-Name":"CHANNEL_CREATE"}"#);
//!
//! // Look one up by id, through the store's index.
//! let answer = store.read_by_id(&ids[1])?.expect("stored");
//! assert_eq!(answer.event_name(), Some("CHANNEL_ANSWER"));
//!
//! // Fold the stream into a state: here, the events seen so far, in order.
//! let folded = fold(
//!     &store,
//!     &mut MemorySnapshots::new(),
//!     &Stream::all(),
//!     3,
//!     |mut seen: Vec<String>, record: &Record| {
//!         seen.extend(record.event_name().map(str::to_owned));
//!         seen
//!     },
//!     Vec::new(),
//!     &FoldOptions::default(),
//! )?;
//! assert_eq!(folded.state, ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_HANGUP"]);
//! # Ok(())
//! # }
//! ```
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stdout,
    clippy::print_stderr
)]

#[cfg(feature = "capture")]
pub mod capture;
pub mod checkpoint;
#[cfg(feature = "esl")]
pub mod esl;
pub mod evidence;
#[cfg(feature = "forward")]
pub mod forward;
#[cfg(feature = "http_server")]
pub mod http_server;
pub mod record;
pub mod replay;
pub mod retention;
#[cfg(feature = "server")]
pub mod server;
pub mod storage;
pub mod store;
