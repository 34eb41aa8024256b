//! The live view wired to a tracing session.
//!
//! - [`plan`]: where the trace goes and whether the terminal shows the TUI. The TUI needs
//!   the terminal for itself, so a trace written to standard output means plain
//!   streaming; on a terminal without `--jsonl` the trace goes to a file named here.
//! - [`LiveFeed`]: what the session sends the TUI: one batch of events per tick, never
//!   waiting (a full channel keeps the batch for the next tick, so capture never blocks
//!   on the screen), and the current verdicts at most about once a second.
//! - [`LogWriter`] and [`hold_logs`]: log lines (`tracing`) are held back while the screen
//!   is up, shown on its status line, and printed once the terminal is restored.
use std::{
    io::{self, Write as _},
    path::{Path, PathBuf},
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::sync::{
    mpsc::{self, error::TrySendError},
    oneshot,
};

use crate::{
    capture::{target::StartedCommand, Capture},
    diagnose::{self, Verdict},
    event::{Event, EventKind},
    export::{jsonl::JsonlWriter, timeline::Timeline},
    session::{self, SessionOptions, Summary},
    tui::{self, TuiExit, TuiOptions, TuiUpdate},
};

/// Messages the channel from the session to the TUI holds.
pub const CHANNEL: usize = 64;

/// Where the JSON-lines trace goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TraceOut {
    Stdout,
    File(PathBuf),
}

/// How a session shows itself: the TUI or plain streaming, and where the trace goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub tui: bool,
    pub trace: TraceOut,
    /// No `--jsonl` was given and the file name is ours: the end of the session says where.
    pub named_by_us: bool,
}

impl Plan {
    /// The argument for [`crate::export::jsonl::JsonlWriter::create`].
    pub fn jsonl_arg(&self) -> String {
        match &self.trace {
            TraceOut::Stdout => "-".into(),
            TraceOut::File(p) => p.display().to_string(),
        }
    }

    pub fn trace_file(&self) -> Option<&Path> {
        match &self.trace {
            TraceOut::Stdout => None,
            TraceOut::File(p) => Some(p),
        }
    }
}

/// `--jsonl` values that write to the terminal or to standard output: the TUI cannot
/// share it with them.
pub fn writes_to_stdout(jsonl: &str) -> bool {
    matches!(jsonl, "-" | "/dev/stdout" | "/dev/fd/1" | "/proc/self/fd/1" | "/dev/tty")
}

/// Decides the session's output. `tui_allowed` is [`crate::tui::should_use_tui`] (not
/// `--no-tui`, stdout and stdin terminals, `TERM` not dumb); `default_file` names the
/// trace when the TUI is on and no `--jsonl` was given.
///
/// | `--jsonl`        | terminal (TUI allowed)           | otherwise          |
/// |------------------|----------------------------------|--------------------|
/// | none             | TUI, trace to `default_file()`   | plain, stdout      |
/// | `-`              | plain, stdout                    | plain, stdout      |
/// | `FILE`           | TUI, trace to FILE               | plain, FILE        |
pub fn plan(jsonl: Option<&str>, tui_allowed: bool, default_file: impl FnOnce() -> PathBuf) -> Plan {
    match jsonl {
        Some("-") => Plan { tui: false, trace: TraceOut::Stdout, named_by_us: false },
        Some(path) => {
            Plan { tui: tui_allowed && !writes_to_stdout(path), trace: TraceOut::File(path.into()), named_by_us: false }
        }
        None if tui_allowed => Plan { tui: true, trace: TraceOut::File(default_file()), named_by_us: true },
        None => Plan { tui: false, trace: TraceOut::Stdout, named_by_us: false },
    }
}

/// `tracer-LABEL-YYYYMMDD-HHMMSS.jsonl` in `dir` (local time), with `-2`, `-3`... when that
/// name is taken.
pub fn default_trace_path(dir: &Path, label: &str) -> PathBuf {
    let stem = format!("tracer-{label}-{}", local_timestamp());
    let mut path = dir.join(format!("{stem}.jsonl"));
    let mut n = 2;
    while path.exists() || output_log_path(&path).exists() {
        path = dir.join(format!("{stem}-{n}.jsonl"));
        n += 1;
    }
    path
}

/// A file-name-safe label for a command: its program's base name.
pub fn program_label(program: &str) -> String {
    let base = Path::new(program).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let label: String =
        base.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).take(32).collect();
    if label.is_empty() || label.starts_with('.') {
        format!("cmd{label}")
    } else {
        label
    }
}

/// Where a command started by `tracer run` under the TUI writes its stdout and stderr:
/// next to the trace, `NAME.jsonl` -> `NAME.output.log`.
pub fn output_log_path(trace: &Path) -> PathBuf {
    let name = trace.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "trace".into());
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    trace.with_file_name(format!("{stem}.output.log"))
}

/// `YYYYMMDD-HHMMSS` in local time.
fn local_timestamp() -> String {
    // SAFETY: time and localtime_r write only into the locals given.
    let tm = unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return format!("{t}");
        }
        tm
    };
    format!("{:04}{:02}{:02}-{:02}{:02}{:02}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// Memory syscalls and RSS steps: what a burst is made of, and what the view skips first
/// when it falls far behind.
fn is_bulk(ev: &Event) -> bool {
    matches!(
        ev.kind,
        EventKind::Mmap { .. }
            | EventKind::Munmap { .. }
            | EventKind::Brk { .. }
            | EventKind::Mremap { .. }
            | EventKind::Rss { .. }
    )
}

/// What one [`Batcher::flush`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flush {
    /// Nothing was waiting.
    Empty,
    /// One batch of this many events went out.
    Sent(usize),
    /// The channel is full: the events wait for the next tick.
    Full(usize),
    /// The TUI is gone: nothing more is kept.
    Closed,
}

/// Events for the TUI, sent as one batch per tick without ever waiting. While the channel
/// is full the events accumulate; past `cap` waiting events the bulk kinds (memory
/// syscalls, RSS steps) are skipped, past twice `cap` everything is, and the TUI is told
/// how many (the trace file has them all).
pub struct Batcher {
    tx: mpsc::Sender<TuiUpdate>,
    pending: Vec<Event>,
    cap: usize,
    /// Events skipped and not reported yet.
    skipped: u64,
    closed: bool,
}

impl Batcher {
    /// Events waiting at most (then bulk kinds are skipped).
    pub const CAP: usize = 250_000;

    pub fn new(tx: mpsc::Sender<TuiUpdate>, cap: usize) -> Batcher {
        Batcher { tx, pending: Vec::new(), cap: cap.max(1), skipped: 0, closed: false }
    }

    pub fn push(&mut self, ev: &Event) {
        if self.closed {
            return;
        }
        let n = self.pending.len();
        if n >= self.cap.saturating_mul(2) || (n >= self.cap && is_bulk(ev)) {
            self.skipped += 1;
            return;
        }
        self.pending.push(ev.clone());
    }

    /// Events waiting for the channel.
    pub fn waiting(&self) -> usize {
        self.pending.len()
    }

    pub fn closed(&self) -> bool {
        self.closed
    }

    /// Sends what is waiting as one batch if the channel has room; never waits.
    pub fn flush(&mut self) -> Flush {
        if self.closed {
            return Flush::Closed;
        }
        if self.pending.is_empty() {
            return Flush::Empty;
        }
        let n = self.pending.len();
        match self.tx.try_send(TuiUpdate::Events(std::mem::take(&mut self.pending))) {
            Ok(()) => {
                if self.skipped > 0 && self.try_send(TuiUpdate::Notice(skipped_notice(self.skipped))) {
                    self.skipped = 0;
                }
                Flush::Sent(n)
            }
            Err(TrySendError::Full(TuiUpdate::Events(batch))) => {
                self.pending = batch;
                Flush::Full(n)
            }
            Err(TrySendError::Full(_)) => unreachable!("try_send hands back what it was given"),
            Err(TrySendError::Closed(_)) => {
                self.close();
                Flush::Closed
            }
        }
    }

    /// Another update, if the channel has room; false when it did not go.
    pub fn try_send(&mut self, update: TuiUpdate) -> bool {
        match self.tx.try_send(update) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => false,
            Err(TrySendError::Closed(_)) => {
                self.close();
                false
            }
        }
    }

    /// Sends whatever is waiting, then `update`, waiting for room (the end of a session:
    /// nothing is captured any more). A gone TUI is not an error.
    pub async fn send_rest(&mut self, then: Vec<TuiUpdate>) {
        if self.closed {
            return;
        }
        let mut updates = Vec::new();
        if !self.pending.is_empty() {
            updates.push(TuiUpdate::Events(std::mem::take(&mut self.pending)));
        }
        if self.skipped > 0 {
            updates.push(TuiUpdate::Notice(skipped_notice(self.skipped)));
            self.skipped = 0;
        }
        for u in updates.into_iter().chain(then) {
            if self.tx.send(u).await.is_err() {
                self.close();
                return;
            }
        }
    }

    fn close(&mut self) {
        self.closed = true;
        self.pending = Vec::new();
    }
}

fn skipped_notice(n: u64) -> String {
    format!("the view fell behind and skipped {n} events; the trace file has them all")
}

/// When to diagnose the live timeline again: only after new events, at most once per
/// `every`, and never more than a tenth of the time (a diagnosis that took 300 ms waits
/// 3 s before the next).
#[derive(Clone, Debug)]
pub struct VerdictPacer {
    every: Duration,
    next_at: Option<Instant>,
    fresh: bool,
}

impl VerdictPacer {
    pub fn new(every: Duration) -> VerdictPacer {
        VerdictPacer { every, next_at: None, fresh: false }
    }

    pub fn saw_events(&mut self) {
        self.fresh = true;
    }

    pub fn due(&self, now: Instant) -> bool {
        self.fresh && self.next_at.is_none_or(|t| now >= t)
    }

    /// A diagnosis finished at `now` after `cost`; `delivered`: the TUI got it (else the
    /// next one is due as soon as the pace allows, even without new events).
    pub fn done(&mut self, now: Instant, cost: Duration, delivered: bool) {
        self.fresh = !delivered;
        self.next_at = Some(now + self.every.max(cost.saturating_mul(10)));
    }
}

/// The session's side of the live view.
pub struct LiveFeed {
    batcher: Batcher,
    pacer: VerdictPacer,
    quit: Option<oneshot::Receiver<bool>>,
}

impl LiveFeed {
    /// Live verdicts at most this often.
    pub const VERDICTS_EVERY: Duration = Duration::from_secs(1);

    /// `tx` goes to the TUI; `quit` fires when it closes: `true` when the user quit with a
    /// key (q, Ctrl-C), `false` for a signal, the end of input or a failure.
    pub fn new(tx: mpsc::Sender<TuiUpdate>, quit: oneshot::Receiver<bool>) -> LiveFeed {
        LiveFeed { batcher: Batcher::new(tx, Batcher::CAP), pacer: VerdictPacer::new(Self::VERDICTS_EVERY), quit: Some(quit) }
    }

    /// The quit signal, for the session's event loop (once).
    pub fn take_quit(&mut self) -> Option<oneshot::Receiver<bool>> {
        self.quit.take()
    }

    /// An event released to the trace.
    pub fn event(&mut self, ev: &Event) {
        self.batcher.push(ev);
        self.pacer.saw_events();
    }

    /// Once per session tick: the batch, and the verdicts when due.
    pub fn tick(&mut self, timeline: &Timeline) {
        self.batcher.flush();
        let started = Instant::now();
        if self.batcher.closed() || !self.pacer.due(started) {
            return;
        }
        let verdicts = diagnose::diagnose(timeline.events());
        let cost = started.elapsed();
        let delivered = self.batcher.try_send(TuiUpdate::Verdicts(verdicts));
        self.pacer.done(Instant::now(), cost, delivered);
    }

    /// The end of the session: the last events, the final verdicts and why it ended. The
    /// screen stays up until the user quits.
    pub async fn finish(&mut self, verdicts: Vec<Verdict>, reason: &str) {
        self.batcher.send_rest(vec![TuiUpdate::Verdicts(verdicts), TuiUpdate::Finished { reason: reason.to_string() }]).await;
    }
}

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
    target_pid: u32,
    child: Option<StartedCommand>,
    start: Event,
    opts: &SessionOptions,
    out: &mut JsonlWriter,
    tui_opts: TuiOptions,
) -> Outcome {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (quit_tx, quit_rx) = oneshot::channel();
    let logs = hold_logs(Some(tx.clone()));
    let mut feed = LiveFeed::new(tx, quit_rx);
    let session = async {
        let r = session::run_live(capture, target_pid, child, start, opts, out, Some(&mut feed)).await;
        match &r {
            Ok(s) => feed.finish(s.verdicts.clone(), s.reason.as_str()).await,
            Err(e) => feed.finish(Vec::new(), &format!("error: {e:#}")).await,
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
/// quit with a key; never without a view.
pub async fn quit_requested(quit: &mut Option<oneshot::Receiver<bool>>) -> bool {
    match quit {
        Some(rx) => rx.await.unwrap_or(false),
        None => std::future::pending().await,
    }
}

/// Log lines held while the screen is up.
struct Held {
    text: Vec<u8>,
    /// Lines not kept past [`HELD_MAX`].
    dropped: u64,
    notices: Option<mpsc::Sender<TuiUpdate>>,
}

/// Bytes of log text held at most.
const HELD_MAX: usize = 1 << 20;

static HELD: Mutex<Option<Held>> = Mutex::new(None);

fn held() -> std::sync::MutexGuard<'static, Option<Held>> {
    HELD.lock().unwrap_or_else(|e| e.into_inner())
}

/// The writer of the `tracing` subscriber: standard error, or the held lines while
/// [`hold_logs`] is in effect.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogWriter;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::new())
    }
}

/// One log record, routed when dropped.
pub struct LogLine(Vec<u8>);

impl io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let mut guard = held();
        match guard.as_mut() {
            Some(h) => {
                if h.text.len() + self.0.len() <= HELD_MAX {
                    h.text.extend_from_slice(&self.0);
                } else {
                    h.dropped += 1;
                }
                if let Some((tx, text)) = h.notices.as_ref().zip(notice_text(&self.0)) {
                    let _ = tx.try_send(TuiUpdate::Notice(text));
                }
            }
            None => {
                drop(guard);
                let _ = io::stderr().write_all(&self.0);
            }
        }
    }
}

/// A warning or error record as one status line: no colours, no timestamp. Other levels
/// (debug logs with `-v`) are only held, not flashed on the screen.
fn notice_text(record: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(record);
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters, then a final letter.
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let words: Vec<&str> = plain.split_whitespace().collect();
    let skip = usize::from(words.first().is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit())));
    let words = &words[skip..];
    matches!(words.first(), Some(&"WARN" | &"ERROR")).then(|| words.join(" "))
}

/// While the returned guard lives, log lines are held (and shown on the TUI's status line
/// when `notices` is given) instead of written to standard error; dropping it (after the
/// terminal is restored) prints them.
#[must_use = "logs are held only while the guard lives"]
pub struct HeldLogs(());

pub fn hold_logs(notices: Option<mpsc::Sender<TuiUpdate>>) -> HeldLogs {
    let mut guard = held();
    if guard.is_none() {
        *guard = Some(Held { text: Vec::new(), dropped: 0, notices });
    }
    HeldLogs(())
}

impl HeldLogs {
    /// Stops holding and prints what was held.
    pub fn release(self) {}
}

impl Drop for HeldLogs {
    fn drop(&mut self) {
        let Some(h) = held().take() else { return };
        let mut err = io::stderr().lock();
        let _ = err.write_all(&h.text);
        if h.dropped > 0 {
            let _ = writeln!(err, "tracer: {} more log lines while the live view was up were not kept", h.dropped);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::tui_allowed;
    use std::ffi::OsStr;

    fn ev(ts: u64, kind: EventKind) -> Event {
        Event { ts_ns: ts, pid: 7, tid: 7, comm: "t".into(), kind }
    }

    fn brk(ts: u64) -> Event {
        ev(ts, EventKind::Brk { requested: 0, result: 4096, duration_ns: 1 })
    }

    fn exit(ts: u64) -> Event {
        ev(
            ts,
            EventKind::Exit {
                group_dead: true,
                exit_code: None,
                signal: Some(9),
                signal_name: Some("SIGKILL".into()),
                core_dumped: false,
                source: Default::default(),
            },
        )
    }

    /// The decision as main makes it: from the flags and the terminal.
    fn decide(no_tui: bool, jsonl: Option<&str>, stdout_tty: bool, stdin_tty: bool, term: Option<&str>) -> Plan {
        let allowed = tui_allowed(no_tui, stdout_tty, stdin_tty, term.map(OsStr::new));
        plan(jsonl, allowed, || PathBuf::from("tracer-42-20250101-120000.jsonl"))
    }

    #[test]
    fn the_tui_needs_a_terminal_on_both_ends_no_flag_against_it_and_the_trace_off_stdout() {
        let auto = TraceOut::File("tracer-42-20250101-120000.jsonl".into());
        let file = TraceOut::File("t.jsonl".into());
        // A terminal, no --jsonl: the TUI, the trace in a file named for the user.
        assert_eq!(decide(false, None, true, true, Some("xterm")), Plan { tui: true, trace: auto.clone(), named_by_us: true });
        assert_eq!(decide(false, None, true, true, None), Plan { tui: true, trace: auto, named_by_us: true });
        // A terminal and --jsonl FILE: the TUI, the user's file.
        assert_eq!(
            decide(false, Some("t.jsonl"), true, true, Some("xterm")),
            Plan { tui: true, trace: file.clone(), named_by_us: false }
        );
        // The trace to stdout: plain streaming, whatever the terminal.
        for out in ["-", "/dev/stdout", "/dev/tty"] {
            let p = decide(false, Some(out), true, true, Some("xterm"));
            assert!(!p.tui, "{out}: {p:?}");
        }
        assert_eq!(decide(false, Some("-"), true, true, Some("xterm")).trace, TraceOut::Stdout);
        // --no-tui: today's behaviour, stdout by default.
        assert_eq!(
            decide(true, None, true, true, Some("xterm")),
            Plan { tui: false, trace: TraceOut::Stdout, named_by_us: false }
        );
        assert_eq!(
            decide(true, Some("t.jsonl"), true, true, Some("xterm")),
            Plan { tui: false, trace: file.clone(), named_by_us: false }
        );
        // Not a terminal on either end, or a dumb one: plain.
        for (o, i, t) in
            [(false, true, Some("xterm")), (true, false, Some("xterm")), (false, false, None), (true, true, Some("dumb"))]
        {
            assert_eq!(
                decide(false, None, o, i, t),
                Plan { tui: false, trace: TraceOut::Stdout, named_by_us: false },
                "{o} {i} {t:?}"
            );
            assert_eq!(decide(false, Some("t.jsonl"), o, i, t), Plan { tui: false, trace: file.clone(), named_by_us: false });
        }
        assert_eq!(decide(false, None, true, true, None).jsonl_arg(), "tracer-42-20250101-120000.jsonl");
        assert_eq!(decide(false, None, false, false, None).jsonl_arg(), "-");
    }

    #[test]
    fn default_names_are_unique_and_the_output_log_sits_next_to_the_trace() {
        let dir = tempfile::tempdir().unwrap();
        let a = default_trace_path(dir.path(), "4711");
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("tracer-4711-2")
                && name.ends_with(".jsonl")
                && name.len() == "tracer-4711-YYYYMMDD-HHMMSS.jsonl".len(),
            "{name}"
        );
        std::fs::write(&a, "").unwrap();
        let b = default_trace_path(dir.path(), "4711");
        assert_ne!(a, b);
        assert_eq!(output_log_path(Path::new("/x/t.jsonl")), Path::new("/x/t.output.log"));
        assert_eq!(output_log_path(Path::new("trace")), Path::new("trace.output.log"));
        assert_eq!(program_label("/usr/bin/python3"), "python3");
        assert_eq!(program_label("./my server"), "my_server");
        assert_eq!(program_label("/"), "cmd");
    }

    #[tokio::test]
    async fn a_full_channel_keeps_the_events_for_the_next_tick_in_order_and_never_waits() {
        let (tx, mut rx) = mpsc::channel(2);
        let mut b = Batcher::new(tx, 1_000);
        assert_eq!(b.flush(), Flush::Empty);
        let mut ts = 0;
        let mut tick = |b: &mut Batcher, n: usize| {
            for _ in 0..n {
                ts += 1;
                b.push(&brk(ts));
            }
            b.flush()
        };
        assert_eq!(tick(&mut b, 3), Flush::Sent(3));
        assert_eq!(tick(&mut b, 2), Flush::Sent(2));
        // The TUI is not reading: the channel is full, nothing blocks, events accumulate.
        assert_eq!(tick(&mut b, 4), Flush::Full(4));
        assert_eq!(tick(&mut b, 1), Flush::Full(5));
        assert_eq!(b.waiting(), 5);
        // The TUI reads one message: the next tick sends everything kept, as one batch.
        assert!(matches!(rx.recv().await, Some(TuiUpdate::Events(v)) if v.len() == 3));
        assert_eq!(tick(&mut b, 1), Flush::Sent(6));
        assert!(matches!(rx.recv().await, Some(TuiUpdate::Events(v)) if v.len() == 2));
        match rx.recv().await {
            Some(TuiUpdate::Events(v)) => assert_eq!(v.iter().map(|e| e.ts_ns).collect::<Vec<_>>(), (6..=11).collect::<Vec<_>>()),
            other => panic!("{other:?}"),
        }
        // The TUI is gone: nothing is kept any more.
        drop(rx);
        assert_eq!(tick(&mut b, 1), Flush::Closed);
        assert_eq!(tick(&mut b, 1), Flush::Closed);
        assert_eq!(b.waiting(), 0);
    }

    #[tokio::test]
    async fn far_behind_bulk_events_are_skipped_first_and_the_tui_is_told() {
        let (tx, mut rx) = mpsc::channel(1);
        let mut b = Batcher::new(tx, 4);
        b.push(&brk(0));
        assert_eq!(b.flush(), Flush::Sent(1));
        for ts in 1..=10 {
            b.push(&brk(ts));
        }
        b.push(&exit(11));
        assert_eq!(b.flush(), Flush::Full(5), "four memory events and the exit");
        for ts in 12..=20 {
            b.push(&exit(ts));
        }
        assert_eq!(b.waiting(), 8, "twice the cap at most");
        let _ = rx.recv().await;
        assert_eq!(b.flush(), Flush::Sent(8));
        let _ = rx.recv().await;
        // The notice waited for room (the batch took it); at the end it says how many
        // were skipped (6 brk + 6 exits).
        assert!(rx.try_recv().is_err());
        b.send_rest(Vec::new()).await;
        match rx.try_recv() {
            Ok(TuiUpdate::Notice(n)) => assert!(n.contains("skipped 12 events"), "{n}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verdicts_are_paced_to_new_events_once_a_second_and_a_tenth_of_the_time() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = VerdictPacer::new(s(1));
        assert!(!p.due(t0), "nothing seen yet");
        p.saw_events();
        assert!(p.due(t0));
        p.done(t0, Duration::from_millis(5), true);
        assert!(!p.due(t0 + s(5)), "no new events");
        p.saw_events();
        assert!(!p.due(t0 + Duration::from_millis(900)));
        assert!(p.due(t0 + s(1)));
        // An expensive diagnosis slows the pace down.
        p.done(t0 + s(1), Duration::from_millis(400), true);
        p.saw_events();
        assert!(!p.due(t0 + s(4)));
        assert!(p.due(t0 + s(5)));
        // Not delivered (channel full): due again at the next pace without new events.
        p.done(t0 + s(5), Duration::ZERO, false);
        assert!(p.due(t0 + s(6)));
    }

    #[tokio::test]
    async fn the_feed_sends_batches_and_verdicts_then_the_end() {
        let (tx, mut rx) = mpsc::channel(CHANNEL);
        let (_quit_tx, quit_rx) = oneshot::channel();
        let mut feed = LiveFeed::new(tx, quit_rx);
        let mut timeline = Timeline::new();
        for e in [brk(1), exit(2)] {
            timeline.push(&e);
            feed.event(&e);
        }
        feed.tick(&timeline);
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Events(v)) if v.len() == 2));
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Verdicts(_))));
        feed.event(&brk(3));
        feed.tick(&timeline);
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Events(v)) if v.len() == 1));
        assert!(rx.try_recv().is_err(), "verdicts not again within the second");
        feed.finish(Vec::new(), "target_exited").await;
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Verdicts(_))));
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Finished { reason }) if reason == "target_exited"));
    }

    #[tokio::test]
    async fn the_view_closing_stops_the_session_and_says_whether_a_key_did_it() {
        let (tx, rx) = oneshot::channel();
        tx.send(true).unwrap();
        assert!(quit_requested(&mut Some(rx)).await, "q or Ctrl-C");
        let (tx, rx) = oneshot::channel();
        tx.send(false).unwrap();
        assert!(!quit_requested(&mut Some(rx)).await, "a signal");
        let (tx, rx) = oneshot::channel::<bool>();
        drop(tx);
        assert!(!quit_requested(&mut Some(rx)).await, "the view failed");
        let never = tokio::time::timeout(Duration::from_millis(20), quit_requested(&mut None)).await;
        assert!(never.is_err(), "no view: never");
    }

    /// One test: the held logs are global.
    #[test]
    fn logs_are_held_while_the_screen_is_up_and_shown_as_notices() {
        use tracing_subscriber::fmt::MakeWriter as _;
        let (tx, mut rx) = mpsc::channel(4);
        let guard = hold_logs(Some(tx));
        {
            let mut line = LogWriter.make_writer();
            line.write_all(b"2025-01-01T00:00:00.000Z \x1b[33m WARN\x1b[0m tracer::session: leaving pid 7 running\n").unwrap();
        }
        assert!(matches!(rx.try_recv(), Ok(TuiUpdate::Notice(n)) if n == "WARN tracer::session: leaving pid 7 running"));
        {
            let mut line = LogWriter.make_writer();
            line.write_all(b"2025-01-01T00:00:00.000Z DEBUG tracer::capture: chatter\n").unwrap();
        }
        assert!(rx.try_recv().is_err(), "debug lines are held, not flashed");
        let text = held().as_ref().map(|h| String::from_utf8_lossy(&h.text).into_owned()).unwrap();
        assert!(text.contains("leaving pid 7 running") && text.contains("chatter"), "{text}");
        guard.release();
        assert!(held().is_none(), "released: logs go to stderr again");
    }
}
