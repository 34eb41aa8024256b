//! The terminal side: raw mode and the alternate screen behind a guard that restores them
//! on drop, on panic (a hook) and on SIGTERM/SIGHUP/SIGINT; and the loop that feeds the
//! app from the session and the keyboard and redraws at a steady rate.
//!
//! The loop ([`event_loop`]) is generic over ratatui's `Backend` and the input stream, so
//! tests drive it on a `TestBackend` with keys from a channel.
use std::{
    io::{self, IsTerminal as _, Stdout},
    sync::{
        atomic::{AtomicBool, Ordering},
        Once,
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use crossterm::{
    cursor::{Hide, Show},
    event::{Event as TermEvent, EventStream},
    execute,
    terminal::{disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen},
};
use futures_util::{Stream, StreamExt as _};
use ratatui::{backend::Backend, layout::Rect, prelude::CrosstermBackend, Terminal};
use tokio::sync::{mpsc, oneshot};

use crate::diagnose::Verdict;
use crate::event::Event;

use super::app::{Action, App, Limits};
use super::ui;

/// What the session sends the TUI.
#[derive(Debug)]
pub enum TuiUpdate {
    Event(Box<Event>),
    /// A batch of events in time order (cheaper than one message each).
    Events(Vec<Event>),
    /// The current diagnosis; replaces the previous one.
    Verdicts(Vec<Verdict>),
    /// A warning for the status line (what would have gone to stderr).
    Notice(String),
    /// The trace is over; the screen stays up until `q`.
    Finished {
        reason: String,
    },
}

/// Why the TUI returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TuiExit {
    /// `q` or Ctrl-C.
    Quit,
    /// The terminal's input ended.
    InputClosed,
    /// SIGTERM, SIGHUP or SIGINT reached the process.
    Signal(&'static str),
}

#[derive(Clone, Copy, Debug)]
pub struct TuiOptions {
    /// Time between redraws.
    pub frame: Duration,
    /// Most time per frame spent taking in updates; the rest waits for the next frame, so
    /// a flood of events never stops the redraws.
    pub budget: Duration,
    pub limits: Limits,
}

impl Default for TuiOptions {
    fn default() -> TuiOptions {
        TuiOptions { frame: Duration::from_millis(100), budget: Duration::from_millis(50), limits: Limits::default() }
    }
}

/// Whether to show the TUI: not asked off, and both ends of the terminal are one.
pub fn should_use_tui(no_tui: bool) -> bool {
    let allowed = tui_allowed(no_tui, io::stdout().is_terminal(), io::stdin().is_terminal(), std::env::var_os("TERM").as_deref());
    if allowed && !in_terminal_foreground() {
        // `timeout 90 tracer ...`, `tracer ... &`: taking the terminal from a background
        // process group gets the process stopped (SIGTTOU) with its target held.
        tracing::info!("not in the terminal's foreground process group: plain lines instead of the live view");
        return false;
    }
    allowed
}

/// Whether this process's group is the one the terminal on stdin belongs to now.
fn in_terminal_foreground() -> bool {
    // SAFETY: plain syscalls on fd 0 and our own process group.
    let (fg, own) = unsafe { (libc::tcgetpgrp(0), libc::getpgrp()) };
    fg >= 0 && fg == own
}

/// [`should_use_tui`] on given facts: not asked off, stdout and stdin terminals, and
/// `TERM` not `dumb`.
pub fn tui_allowed(no_tui: bool, stdout_tty: bool, stdin_tty: bool, term: Option<&std::ffi::OsStr>) -> bool {
    !no_tui && stdout_tty && stdin_tty && term.is_none_or(|t| t != "dumb")
}

/// Set while the terminal is in TUI mode: the panic hook and the guard restore it once.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Leaves raw mode and the alternate screen and shows the cursor, if the TUI set them.
pub fn restore() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let _ = disable_raw_mode();
        let _ = execute!(io::stdout(), LeaveAlternateScreen, Show);
    }
}

/// A panic prints on a usable terminal: restore first, then the previous hook.
fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            previous(info);
        }));
    });
}

/// The terminal in TUI mode; dropping it restores the terminal.
pub struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    pub fn enter() -> io::Result<TerminalGuard> {
        install_panic_hook();
        enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let setup = execute!(io::stdout(), EnterAlternateScreen, Hide).and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())));
        match setup {
            Ok(mut terminal) => {
                terminal.clear()?;
                Ok(TerminalGuard { terminal })
            }
            Err(e) => {
                restore();
                Err(e)
            }
        }
    }

    pub fn terminal(&mut self) -> &mut Terminal<CrosstermBackend<Stdout>> {
        &mut self.terminal
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore();
    }
}

/// Updates waiting to be applied: the channel and the rest of a batch that did not fit in
/// a frame's budget.
pub struct Inbox<'a> {
    rx: &'a mut mpsc::Receiver<TuiUpdate>,
    rest: std::vec::IntoIter<Event>,
    open: bool,
}

impl<'a> Inbox<'a> {
    pub fn new(rx: &'a mut mpsc::Receiver<TuiUpdate>) -> Inbox<'a> {
        Inbox { rx, rest: Vec::new().into_iter(), open: true }
    }

    /// Applies updates until none is waiting or `budget` is spent (checked every 1024
    /// events). When the session drops its sender the trace counts as finished.
    pub fn drain(&mut self, app: &mut App, budget: Duration) {
        let started = Instant::now();
        let mut n = 0u32;
        let mut spent = || {
            n = n.wrapping_add(1);
            n.is_multiple_of(1024) && started.elapsed() >= budget
        };
        loop {
            for ev in self.rest.by_ref() {
                app.on_event(&ev);
                if spent() {
                    return;
                }
            }
            if !self.open {
                return;
            }
            match self.rx.try_recv() {
                Ok(TuiUpdate::Event(ev)) => app.on_event(&ev),
                Ok(TuiUpdate::Events(batch)) => self.rest = batch.into_iter(),
                Ok(TuiUpdate::Verdicts(v)) => app.set_verdicts(v),
                Ok(TuiUpdate::Notice(text)) => app.set_notice(&text),
                Ok(TuiUpdate::Finished { reason }) => app.finish(&reason),
                Err(mpsc::error::TryRecvError::Empty) => return,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.open = false;
                    if app.finished.is_none() {
                        app.finish("the session stopped");
                    }
                }
            }
            if spent() {
                return;
            }
        }
    }

    /// Events of a batch not applied yet.
    pub fn backlog(&self) -> usize {
        self.rest.len()
    }
}

fn redraw<B>(terminal: &mut Terminal<B>, app: &mut App) -> anyhow::Result<()>
where
    B: Backend,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let size = terminal.size().context("reading the terminal size")?;
    app.set_page(ui::list_rows(Rect::new(0, 0, size.width, size.height)));
    terminal.draw(|f| ui::draw(f, app)).context("drawing the terminal")?;
    Ok(())
}

/// Until the user quits: apply updates and redraw every `opts.frame`, handle keys (and
/// redraw at once), follow resizes. `now` gives the wall clock in ns since the epoch.
pub async fn event_loop<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    updates: &mut mpsc::Receiver<TuiUpdate>,
    mut input: S,
    opts: &TuiOptions,
    now: &dyn Fn() -> u64,
) -> anyhow::Result<TuiExit>
where
    B: Backend,
    B::Error: std::error::Error + Send + Sync + 'static,
    S: Stream<Item = io::Result<TermEvent>> + Unpin,
{
    let mut inbox = Inbox::new(updates);
    let mut frames = tokio::time::interval(opts.frame);
    frames.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            input = input.next() => match input {
                Some(Ok(TermEvent::Key(key))) => {
                    if app.on_key(key) == Action::Quit {
                        return Ok(TuiExit::Quit);
                    }
                    redraw(terminal, app)?;
                }
                Some(Ok(TermEvent::Resize(..))) => {
                    terminal.autoresize().context("resizing")?;
                    redraw(terminal, app)?;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e).context("reading the terminal"),
                None => return Ok(TuiExit::InputClosed),
            },
            _ = frames.tick() => {
                inbox.drain(app, opts.budget);
                app.tick(now());
                redraw(terminal, app)?;
            }
        }
    }
}

/// The live timeline, for the session: takes over the terminal, shows what `updates`
/// brings, and returns when the user quits (or a signal asks to); the terminal is restored
/// before it returns, so the caller prints the verdicts on a normal screen. `quit` fires
/// as soon as the user quits, so that the session stops capturing and flushes the trace.
pub async fn run_tui(
    mut updates: mpsc::Receiver<TuiUpdate>,
    quit: Option<oneshot::Sender<()>>,
    opts: TuiOptions,
) -> anyhow::Result<TuiExit> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut guard = TerminalGuard::enter().context("setting up the terminal for the live view (--no-tui streams lines instead)")?;
    let mut app = App::new(opts.limits);
    let result = tokio::select! {
        r = event_loop(guard.terminal(), &mut app, &mut updates, EventStream::new(), &opts, &crate::clock::wall_now_ns) => r,
        _ = term.recv() => Ok(TuiExit::Signal("SIGTERM")),
        _ = hup.recv() => Ok(TuiExit::Signal("SIGHUP")),
        _ = int.recv() => Ok(TuiExit::Signal("SIGINT")),
    };
    if let Some(q) = quit {
        let _ = q.send(());
    }
    drop(guard);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::testdata::{oom_verdict, ts, Rec};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    use ratatui::backend::TestBackend;

    fn screen(t: &Terminal<TestBackend>) -> String {
        let buf = t.backend().buffer();
        let mut s = String::new();
        for y in 0..buf.area.height {
            for x in 0..buf.area.width {
                s.push_str(buf[(x, y)].symbol());
            }
            s.push('\n');
        }
        s
    }

    fn keys(rx: mpsc::UnboundedReceiver<TermEvent>) -> impl Stream<Item = io::Result<TermEvent>> + Unpin {
        let mut rx = rx;
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|k| k.map(Ok)))
    }

    fn key(c: char) -> TermEvent {
        TermEvent::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }

    #[tokio::test]
    async fn the_loop_shows_the_updates_stays_up_after_the_end_and_quits_on_q() {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let (tx, mut rx) = mpsc::channel(16);
        let (ktx, krx) = mpsc::unbounded_channel();
        let mut app = App::new(Limits::default());
        let opts = TuiOptions { frame: Duration::from_millis(5), ..TuiOptions::default() };
        tx.send(TuiUpdate::Events(Rec::oom_scenario().ev)).await.unwrap();
        tx.send(TuiUpdate::Verdicts(vec![oom_verdict()])).await.unwrap();
        tx.send(TuiUpdate::Finished { reason: "target_exited".into() }).await.unwrap();
        drop(tx);
        let user = async {
            tokio::time::sleep(Duration::from_millis(60)).await;
            // Still up after the end of the trace, until q.
            ktx.send(key('f')).unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            ktx.send(key('q')).unwrap();
        };
        let now = || ts(8_000);
        let (r, ()) = tokio::join!(event_loop(&mut terminal, &mut app, &mut rx, keys(krx), &opts, &now), user);
        assert_eq!(r.unwrap(), TuiExit::Quit);
        let text = screen(&terminal);
        assert!(text.contains("trace ended: target_exited"), "{text}");
        assert!(text.contains("OOM"), "{text}");
        assert!(text.contains("filter memory"), "the key was handled: {text}");
        assert!(text.contains("oom_killed pid 4711 (workload)"), "{text}");
    }

    #[tokio::test]
    async fn input_closing_ends_the_loop_and_a_closed_session_counts_as_finished() {
        let mut terminal = Terminal::new(TestBackend::new(80, 24)).unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        drop(tx);
        let (ktx, krx) = mpsc::unbounded_channel();
        let mut app = App::new(Limits::default());
        let opts = TuiOptions { frame: Duration::from_millis(5), ..TuiOptions::default() };
        let closer = async {
            tokio::time::sleep(Duration::from_millis(30)).await;
            drop(ktx);
        };
        let (r, ()) = tokio::join!(event_loop(&mut terminal, &mut app, &mut rx, keys(krx), &opts, &|| ts(0)), closer);
        assert_eq!(r.unwrap(), TuiExit::InputClosed);
        assert_eq!(app.finished.as_deref(), Some("the session stopped"));
    }

    #[test]
    fn a_flood_is_taken_in_over_several_frames_within_the_budget() {
        let (tx, mut rx) = mpsc::channel(4);
        let r = Rec::oom_scenario();
        let mut batch = Vec::new();
        for i in 0..300_000u64 {
            let mut e = r.ev[(i % 10) as usize + 1].clone();
            e.ts_ns = ts(i / 100);
            batch.push(e);
        }
        tx.try_send(TuiUpdate::Event(Box::new(r.ev[0].clone()))).unwrap();
        tx.try_send(TuiUpdate::Events(batch)).unwrap();
        tx.try_send(TuiUpdate::Verdicts(vec![oom_verdict()])).unwrap();
        let mut app = App::new(Limits::default());
        let mut inbox = Inbox::new(&mut rx);
        // No budget: each frame takes one slice of 1024 events, never the whole flood.
        inbox.drain(&mut app, Duration::ZERO);
        assert!(app.total > 1 && app.total <= 1025, "one slice of the batch: {}", app.total);
        assert!(inbox.backlog() > 290_000);
        let mut frames = 1;
        while inbox.backlog() > 0 || app.view().verdicts.is_empty() {
            inbox.drain(&mut app, Duration::ZERO);
            frames += 1;
            assert!(frames < 1_000, "the flood never drained");
        }
        assert_eq!(app.total, 300_001);
        assert!(frames > 200, "{frames} frames");
        // With a real budget the rest of the channel is taken in one frame.
        tx.try_send(TuiUpdate::Finished { reason: "duration".into() }).unwrap();
        inbox.drain(&mut app, Duration::from_millis(50));
        assert_eq!(app.finished.as_deref(), Some("duration"));
    }

    /// One test: the flag is global.
    #[test]
    fn a_panic_restores_the_terminal_and_restoring_twice_is_harmless() {
        restore();
        assert!(!ACTIVE.load(Ordering::SeqCst));
        install_panic_hook();
        // As if the TUI had the terminal (raw mode is not touched: crossterm only undoes
        // what it did).
        ACTIVE.store(true, Ordering::SeqCst);
        let caught = std::panic::catch_unwind(|| panic!("boom in the draw code"));
        assert!(caught.is_err());
        assert!(!ACTIVE.load(Ordering::SeqCst), "the hook restored the terminal");
        restore();
    }
}
