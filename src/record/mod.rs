//! The replay record model (placeholder: filled in by the record-model work).
