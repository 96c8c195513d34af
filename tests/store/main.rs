//! Artifact stores: the contract both backends meet, the segment-log and SQLite stores,
//! integrity, layouts, lookups, statistics, retention, and hostile input to the store
//! commands. Each module is one former test file.

#[path = "../support/mod.rs"]
mod support;

#[cfg(feature = "cli")]
mod cli_consistency;
#[cfg(feature = "cli")]
mod hostile_input;
mod retention;
mod store_contract;
mod store_dataset;
#[cfg(feature = "cli")]
mod store_integrity;
#[cfg(feature = "sqlite")]
mod store_interchange_limits;
#[cfg(feature = "cli")]
mod store_layouts;
mod store_log_smoke;
mod store_lookup;
#[cfg(feature = "sqlite")]
mod store_sqlite;
#[cfg(feature = "cli")]
mod store_stats_bytes;
#[cfg(feature = "cli")]
mod wrong_paths;
