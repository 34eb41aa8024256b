//! Where finished events go. A session pushes every event to every sink, in time order;
//! a sink is the trace file, the live view, or (later) metrics and OTLP. No sink knows
//! another, and none knows where events come from: adding one touches its own file and
//! the one place where the command chooses its sinks.
use std::{future::Future, pin::Pin};

use thiserror::Error;

use crate::{diagnose::Verdict, event::Event, timeline::Timeline};

#[derive(Debug, Error)]
pub enum SinkError {
    /// The reader went away (a closed pipe, a closed view): a quiet stop, not a failure.
    #[error("{0} closed")]
    Closed(&'static str),
    /// Writing failed for good; the message names what and why.
    #[error("{0}")]
    Failed(String),
}

/// The end of a sink's work, which may wait (a channel with room, a network peer).
pub type Finishing<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + 'a>>;

pub trait Sink {
    /// One event, in time order.
    fn event(&mut self, ev: &Event) -> Result<(), SinkError>;

    /// Once per session tick, after the tick's events: flush, pace, redraw. `timeline` is
    /// what the session keeps of the trace so far, for a sink that diagnoses as it goes.
    fn tick(&mut self, _timeline: &Timeline) -> Result<(), SinkError> {
        Ok(())
    }

    /// The end of the trace: the verdicts over all of it, then the last event
    /// (`trace_end`), then whatever the sink does to finish. `reason` says why it ended.
    fn finish<'a>(&'a mut self, verdicts: &'a [Verdict], end: &'a Event, reason: &'a str) -> Finishing<'a>;
}

/// A finished [`Finishing`] for sinks that never wait.
pub fn finished<'a>(result: Result<(), SinkError>) -> Finishing<'a> {
    Box::pin(std::future::ready(result))
}
