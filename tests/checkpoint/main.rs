//! Checkpoints: files shared with the reference package, persistence, compatibility,
//! crashes, stress and the `checkpoint` commands. Each module is one former test file.

#[path = "../support/mod.rs"]
mod support;

mod checkpoint_chaos;
#[cfg(feature = "cli")]
mod checkpoint_cli;
mod checkpoint_compat;
mod checkpoint_crash;
mod checkpoint_files;
mod checkpoint_persistence;
mod checkpoint_stress;
mod checkpoint_unit;
