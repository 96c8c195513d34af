//! The storage engine: the segment log's life cycle, concurrency, damage, faults, the model
//! test, packing, recycled segments, torn tails, the format rules and vectors on real files, and the fuzz
//! regressions. Each module is one former test file.

#[path = "../support/mod.rs"]
mod support;

mod format_files;
mod format_rules;
mod format_vectors;
mod fuzz_regressions;
mod storage_concurrency;
mod storage_damage;
mod storage_faults;
mod storage_model;
mod storage_pack;
mod storage_recycle;
mod storage_regressions;
mod storage_smoke;
mod storage_torn_tail;
