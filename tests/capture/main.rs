//! The capture node: sessions, reconnects, recordings, re-injection, recovery, the
//! `capture` command, and end to end with the simulator. Each module is one former test
//! file.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "capture")]
mod capture;
#[cfg(feature = "cli")]
mod capture_cli;
#[cfg(feature = "cli")]
mod capture_gateway;
#[cfg(feature = "capture")]
mod capture_hostile;
#[cfg(feature = "cli")]
mod capture_inject;
#[cfg(all(feature = "capture", feature = "server"))]
mod capture_recordings;
#[cfg(feature = "cli")]
mod capture_recovery;
#[cfg(feature = "cli")]
mod e2e_capture;
