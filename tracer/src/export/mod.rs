//! Sinks for events. JSON lines is the recording format: `tracer report` reads it back.
pub mod jsonl;
