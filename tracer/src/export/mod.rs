//! Sinks for events. JSON lines is the recording format: `tracer report` reads it back
//! ([`reader`]) and renders the root-cause [`report`] and a [`perfetto`] timeline.
pub mod jsonl;
pub mod otlp;
pub mod perfetto;
pub mod reader;
pub mod report;
pub mod trace_file;
