//! The subcommands that trace, watch the host and report. Each owns its options type; `tracer doctor`
//! lives in [`crate::doctor`].
pub mod report;
pub mod trace;
pub mod watch;
