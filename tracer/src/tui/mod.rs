//! The live timeline: a ratatui + crossterm screen that shows a running trace. Header
//! (target, state, rates, lost events, memcg, GPU), a memory chart with markers at OOM
//! kills, fatal signals, exits and resets, the event list, the current verdicts, a help
//! line. Not a terminal (or `--no-tui`): the session streams plain lines instead.
//!
//! - [`app`]: the state and what changes it (events, verdicts, keys); pure.
//! - [`ui`] and [`chart`]: drawing, from `&App` only.
//! - [`term`]: the terminal guard, the panic hook, and [`run_tui`], the loop that shows
//!   the session: updates come in on a channel, the screen redraws every 100 ms.
//! - [`feed`]: the session's side, a sink that batches events and paces verdicts onto
//!   that channel without ever making capture wait.
//! - [`logs`]: log lines held while the screen is up.
//!
//! The view keeps a bounded window (the last 10,000 events, downsampled chart series);
//! the trace file has everything.
pub mod app;
pub mod chart;
pub mod detail;
pub mod feed;
pub mod logs;
pub mod rate;
pub mod series;
pub mod term;
#[cfg(test)]
mod testdata;
pub mod ui;

pub use app::{Action, App, Limits, TargetState};
pub use detail::Filter;
pub use term::{event_loop, restore, run_tui, should_use_tui, tui_allowed, TerminalGuard, TuiExit, TuiOptions, TuiUpdate};
