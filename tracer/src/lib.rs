//! tracer: explains why a socket reset.
//!
//! Data flows one way: kernel -> [`capture`] -> [`event::Event`] -> sinks ([`export`]).
//! Nothing downstream of [`event`] knows about eBPF.
pub mod capture;
pub mod cli;
pub mod diagnose;
pub mod doctor;
pub mod event;
pub mod export;
pub mod live;
pub mod names;
pub mod sample;
pub mod session;
pub mod tui;
