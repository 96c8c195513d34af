//! The evidence engine: the reference cases, determinism and the `evidence` commands. Each
//! module is one former test file.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "cli")]
mod evidence_cli;
mod evidence_determinism;
mod evidence_integrity;
mod evidence_reference;
