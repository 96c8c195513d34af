//! The segment log engine (placeholder: filled in by the storage work).
