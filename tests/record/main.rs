//! Replay records: checksums, the binary codec and reference NDJSON. Each module is one
//! former test file.

#[path = "../support/mod.rs"]
mod support;

mod record_checksum;
mod record_codec;
mod record_ndjson;
