//! tracer: explains why a socket reset.
//!
//! Data flows one way: kernel -> [`capture`] -> [`event::Event`] -> sinks ([`export`]).
//! Nothing downstream of [`event`] knows about eBPF.
pub mod capture;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod diagnose;
pub mod doctor;
pub mod export;
pub mod forecast;
pub mod names;
pub mod process;
pub mod sample;
pub mod mappings;
pub mod timeline;
pub mod session;
pub mod summary;
pub mod sink;
pub mod tui;
pub mod units;

/// The event model lives in its own crate (no eBPF, no tokio) so that every consumer of
/// traces, the benchmarks included, reads the same types.
pub use tracer_event as event;
