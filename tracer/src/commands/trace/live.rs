//! The session under the live view: the session and the TUI side by side on one thread,
//! joined by the feed's channel and the view's quit signal.
use tokio::sync::{mpsc, oneshot};

use crate::{
    capture::Capture,
    event::Event,
    export::jsonl::JsonlWriter,
    session::{self, SessionOptions, StopRequest, Summary, Target},
    tui::{
        self,
        feed::{LiveFeed, CHANNEL},
        logs::hold_logs,
        TuiExit, TuiOptions,
    },
};

/// How a session under the live view ended.
pub struct Outcome {
    pub session: anyhow::Result<Summary>,
    pub tui: anyhow::Result<TuiExit>,
}

/// [`session::run`] under the live view: the session and the TUI side by side on this
/// thread, joined by a channel of [`CHANNEL`] messages and the quit signal. Log lines are
/// held while the screen is up and printed when this returns, after the terminal is
/// restored; the screen stays up after the session ends, until the user quits.
pub async fn run_with_tui(
    capture: Capture,
    target: Target,
    start: Event,
    opts: &SessionOptions,
    out: &mut JsonlWriter,
    tui_opts: TuiOptions,
) -> Outcome {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (quit_tx, quit_rx) = oneshot::channel();
    let logs = hold_logs(Some(tx.clone()));
    let mut feed = LiveFeed::new(tx);
    let session = async {
        let stop: StopRequest = Box::pin(quit_requested(quit_rx));
        let r = session::run(capture, target, start, opts, &mut [out, &mut feed], Some(stop)).await;
        // A session that failed never reached the sinks' end: the view still says why.
        if let Err(e) = &r {
            feed.end(Vec::new(), &format!("error: {e:#}")).await;
        }
        drop(feed);
        r
    };
    // The quit signal is sent here rather than by run_tui, to say why the view closed: a
    // key (q, Ctrl-C) also stops a command started by `tracer run`, as Ctrl-C would on a
    // terminal without the view; a signal or a failure only stops the trace.
    let tui = async {
        let exit = tui::run_tui(rx, None, tui_opts).await;
        let _ = quit_tx.send(matches!(exit, Ok(TuiExit::Quit)));
        exit
    };
    let (session, tui) = tokio::join!(session, tui);
    // The terminal is restored (run_tui returned): the held lines can go to stderr now.
    logs.release();
    Outcome { session, tui }
}

/// Resolves when the live view closed (or its sender is gone), with whether the user
/// quit with a key.
async fn quit_requested(quit: oneshot::Receiver<bool>) -> bool {
    quit.await.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_view_closing_stops_the_session_and_says_whether_a_key_did_it() {
        let (tx, rx) = oneshot::channel();
        tx.send(true).unwrap();
        assert!(quit_requested(rx).await, "q or Ctrl-C");
        let (tx, rx) = oneshot::channel();
        tx.send(false).unwrap();
        assert!(!quit_requested(rx).await, "a signal");
        let (tx, rx) = oneshot::channel::<bool>();
        drop(tx);
        assert!(!quit_requested(rx).await, "the view failed");
    }

}
