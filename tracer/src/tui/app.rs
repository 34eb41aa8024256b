//! The state of the live timeline and the methods that change it. Pure: no terminal, no
//! clock (the loop hands `now` to [`App::tick`]), so tests drive it event by event and
//! key by key.
//!
//! What is shown lives in a [`View`]: the last events (bounded), the chart series
//! (bounded, downsampled), the markers and the verdicts. Space freezes a copy of it while
//! the live one keeps taking events; the header (counters, state) stays live.
use std::collections::VecDeque;

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::diagnose::Verdict;
use crate::event::{Event, EventKind};

use super::detail::{clean, is_fatal_signal, Filter};
use super::rate::Rate;
use super::series::{MarkerKind, Markers, Series};

/// Bounds on what the view keeps (everything still goes to the trace file).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Events kept for the list.
    pub events: usize,
    /// Points per chart series.
    pub points: usize,
    /// Markers on the chart.
    pub markers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { events: 10_000, points: 2_048, markers: 512 }
    }
}

/// What the loop should do after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
}

/// How the target is doing, from its exit events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetState {
    Running,
    Exited { code: Option<i32> },
    Killed { signal: String, core_dumped: bool },
}

impl TargetState {
    /// `running`, `exited with code 0`, `killed by SIGKILL`.
    pub fn text(&self) -> String {
        match self {
            TargetState::Running => "running".into(),
            TargetState::Exited { code: Some(c) } => format!("exited with code {c}"),
            TargetState::Exited { code: None } => "exited".into(),
            TargetState::Killed { signal, core_dumped: false } => format!("killed by {signal}"),
            TargetState::Killed { signal, core_dumped: true } => format!("killed by {signal} (core dumped)"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Popup {
    /// An event's JSON, pretty-printed, with a scroll offset.
    Detail {
        title: String,
        json: String,
        scroll: u16,
    },
    Help,
}

/// One kept event and its number in the stream (0 for the first event seen).
#[derive(Clone, Debug)]
pub struct Row {
    pub seq: u64,
    pub ev: Event,
    /// What the list adds to the event: for an mmap of a file mapped before, that
    /// file's bytes and how often it was mapped.
    pub note: Option<String>,
}

/// What the screen shows below the header: live, or frozen by a pause.
#[derive(Clone, Debug)]
pub struct View {
    pub rows: VecDeque<Row>,
    /// RSS of the target.
    pub rss: Series,
    pub memcg: Series,
    /// GPU memory: the traced processes' when NVML says, else the devices' used.
    pub gpu: Series,
    pub limit: Option<u64>,
    /// The last memory-cgroup forecast as a line on the chart, (x, bytes) now to (x, the
    /// limit) when it is reached at that rate; gone once stale or after an OOM kill.
    pub projection: Option<[f64; 4]>,
    pub markers: Markers,
    pub verdicts: Vec<Verdict>,
    /// Seconds since the trace start at the right end of the time axis.
    pub end_x: f64,
}

impl View {
    fn new(l: &Limits) -> View {
        View {
            rows: VecDeque::new(),
            rss: Series::new(l.points),
            memcg: Series::new(l.points),
            gpu: Series::new(l.points),
            limit: None,
            projection: None,
            markers: Markers::new(l.markers, 0.5),
            verdicts: Vec::new(),
            end_x: 0.0,
        }
    }

    /// Positions in `rows` of the events that pass `filter`.
    pub fn filtered(&self, filter: Filter) -> Vec<usize> {
        self.rows.iter().enumerate().filter(|(_, r)| filter.matches(&r.ev.kind)).map(|(i, _)| i).collect()
    }
}

/// The latest GPU numbers for the header.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuNow {
    pub count: usize,
    pub name: String,
    pub used: u64,
    pub total: u64,
    pub process: Option<u64>,
}

/// RSS members the kernel counts in VmRSS.
const RSS_MEMBERS: [&str; 3] = ["MM_ANONPAGES", "MM_FILEPAGES", "MM_SHMEMPAGES"];

/// The last line a popup can scroll to.
fn last_line(text: &str) -> u16 {
    u16::try_from(text.lines().count().saturating_sub(1)).unwrap_or(u16::MAX)
}

pub struct App {
    limits: Limits,
    // Target and trace.
    pub target_pid: Option<u32>,
    pub target_comm: String,
    pub cmdline: String,
    pub start_ns: Option<u64>,
    pub last_ns: u64,
    pub state: TargetState,
    /// The OOM killer chose the target.
    pub oom_killed: bool,
    /// Why the trace ended, once it has.
    pub finished: Option<String>,
    pub notice: Option<String>,
    // Counters.
    pub total: u64,
    pub lost: u64,
    now_ns: u64,
    rate: Rate,
    pub rss_now: Option<u64>,
    pub memcg_now: Option<(u64, Option<u64>)>,
    /// The memory cgroup of the last sample: the memcg series follows one cgroup.
    memcg_path: Option<String>,
    pub gpu_now: Option<GpuNow>,
    /// The last `forecast` and when it came.
    pub forecast: Option<(u64, crate::event::Forecast)>,
    rss_members: [Option<i64>; 3],
    rss_from_events: bool,
    // What is shown.
    live: View,
    frozen: Option<View>,
    /// Events that arrived since the pause.
    pub held: u64,
    pub filter: Filter,
    /// The list follows the newest event; off once the user scrolls.
    pub follow: bool,
    selected: u64,
    top: u64,
    page: usize,
    pub popup: Option<Popup>,
    /// File mappings so far, per file.
    files: crate::mappings::Mappings,
}

impl App {
    pub fn new(limits: Limits) -> App {
        App {
            limits,
            target_pid: None,
            target_comm: String::new(),
            cmdline: String::new(),
            start_ns: None,
            last_ns: 0,
            state: TargetState::Running,
            oom_killed: false,
            finished: None,
            notice: None,
            total: 0,
            lost: 0,
            now_ns: 0,
            rate: Rate::new(2_000_000_000),
            rss_now: None,
            memcg_now: None,
            memcg_path: None,
            gpu_now: None,
            forecast: None,
            rss_members: [None; 3],
            rss_from_events: false,
            live: View::new(&limits),
            frozen: None,
            held: 0,
            filter: Filter::All,
            follow: true,
            selected: 0,
            top: 0,
            page: 10,
            popup: None,
            files: Default::default(),
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The view drawn: frozen while paused, else live.
    pub fn view(&self) -> &View {
        self.frozen.as_ref().unwrap_or(&self.live)
    }

    pub fn paused(&self) -> bool {
        self.frozen.is_some()
    }

    /// Seconds since the trace start.
    fn x(&self, ts_ns: u64) -> f64 {
        ts_ns.saturating_sub(self.start_ns.unwrap_or(ts_ns)) as f64 / 1e9
    }

    /// Seconds since the trace start, to now (or to the end of the trace).
    pub fn elapsed(&self) -> f64 {
        let end = if self.finished.is_some() { self.last_ns } else { self.now_ns.max(self.last_ns) };
        self.x(end)
    }

    /// The time left to a memory limit by the last forecast, counted down to now, with
    /// the forecast; None once it is older than its projection (or two seconds stale).
    pub fn limit_in(&self) -> Option<(f64, &crate::event::Forecast)> {
        let (at, f) = self.forecast.as_ref()?;
        let since = self.last_ns.saturating_sub(*at) as f64 * 1e-9;
        (since <= 2.0 && since < f.seconds_to_limit).then_some((f.seconds_to_limit - since, f))
    }

    pub fn events_per_sec(&self) -> f64 {
        self.rate.per_sec()
    }

    /// Called once per frame with the wall clock (ns since the epoch, like event times).
    pub fn tick(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
        self.rate.tick(now_ns, self.total);
        if self.finished.is_none() {
            let x = self.elapsed();
            self.live.end_x = self.live.end_x.max(x);
        }
    }

    fn is_target(&self, pid: u32) -> bool {
        self.target_pid == Some(pid)
    }

    pub fn on_event(&mut self, ev: &Event) {
        self.total += 1;
        if self.paused() {
            self.held += 1;
        }
        if self.start_ns.is_none() || matches!(ev.kind, EventKind::TraceStart { .. }) && self.target_pid.is_none() {
            self.start_ns = Some(ev.ts_ns);
        }
        self.last_ns = self.last_ns.max(ev.ts_ns);
        let x = self.x(ev.ts_ns);
        self.live.end_x = self.live.end_x.max(x);
        self.header_and_chart(ev, x);

        let seq = self.total - 1;
        if self.live.rows.len() >= self.limits.events.max(1) {
            self.live.rows.pop_front();
        }
        let note = self
            .files
            .add(seq as usize, ev)
            .filter(|m| m.calls > 1)
            .map(|m| format!("this file: {}{}", crate::units::format_bytes(m.distinct_bytes), m.how(crate::units::format_bytes)));
        self.live.rows.push_back(Row { seq, ev: ev.clone(), note });
    }

    fn header_and_chart(&mut self, ev: &Event, x: f64) {
        use EventKind as K;
        match &ev.kind {
            K::Forecast(f) => {
                self.forecast = Some((ev.ts_ns, f.clone()));
                if f.limit == "memory_cgroup" {
                    self.live.projection = Some([x, f.used_bytes as f64, x + f.seconds_to_limit, f.limit_bytes as f64]);
                }
            }
            K::Exec { argv: Some(argv), argv_cut, .. } if self.is_target(ev.pid) && !argv.is_empty() => {
                self.target_comm = ev.comm.clone();
                let line = crate::event::argv_line(argv, *argv_cut);
                // The same program cut at the kernel's limit keeps the whole command line.
                if !self.cmdline.starts_with(line.trim_end_matches(" …")) {
                    self.cmdline = line;
                }
            }
            K::TraceStart { target_pid, target_cmdline, .. } => {
                self.target_pid = Some(*target_pid);
                self.cmdline = target_cmdline.clone();
                if ev.pid == *target_pid && !ev.comm.is_empty() {
                    self.target_comm = ev.comm.clone();
                }
            }
            K::TraceEnd { reason, lost, .. } => {
                self.lost = self.lost.max(*lost);
                self.finished.get_or_insert_with(|| reason.clone());
            }
            K::Exec { .. } if self.is_target(ev.pid) => self.target_comm = ev.comm.clone(),
            K::Exit { group_dead: true, exit_code, signal, signal_name, core_dumped, .. } if self.is_target(ev.pid) => {
                self.state = match (signal, exit_code) {
                    (Some(s), _) => TargetState::Killed {
                        signal: signal_name.as_deref().filter(|n| !n.is_empty()).map_or_else(|| crate::names::signal_name(*s), clean),
                        core_dumped: *core_dumped,
                    },
                    (None, code) => TargetState::Exited { code: *code },
                };
                self.live.markers.push(x, MarkerKind::Exit);
                self.rss_now = Some(0);
                self.live.rss.push(x, 0.0);
            }
            K::Signal { target_pid, signal, signal_name, .. } if self.is_target(*target_pid) && is_fatal_signal(*signal) => {
                let name = if signal_name.is_empty() { crate::names::signal_name(*signal) } else { clean(signal_name) };
                self.live.markers.push(x, MarkerKind::Signal(name));
            }
            K::OomKill { victim_pid, .. } => {
                if victim_pid.is_some_and(|p| self.is_target(p)) {
                    self.oom_killed = true;
                }
                self.live.markers.push(x, MarkerKind::Oom);
                self.live.projection = None;
            }
            K::TcpReset { attributed_by: Some(_), .. } => self.live.markers.push(x, MarkerKind::Rst),
            K::Restart { old_pid, new_pid, argv, .. } if self.is_target(*old_pid) => {
                // The live view follows the service to its new pid.
                self.target_pid = Some(*new_pid);
                self.target_comm = ev.comm.clone();
                self.cmdline = argv.join(" ");
                self.state = TargetState::Running;
                self.live.markers.push(x, MarkerKind::Restart);
            }
            K::Lost { count, .. } => self.lost = self.lost.saturating_add(*count),
            K::Rss { member, bytes } if self.is_target(ev.pid) => {
                if let Some(i) = RSS_MEMBERS.iter().position(|m| m == member) {
                    self.rss_members[i] = Some(*bytes);
                    self.rss_from_events = true;
                    let sum: i64 = self.rss_members.iter().flatten().fold(0i64, |a, b| a.saturating_add((*b).max(0)));
                    self.rss_now = Some(sum as u64);
                    self.live.rss.push(x, sum as f64);
                }
            }
            K::Sample { processes, cgroup, gpus, .. } => {
                if self.limit_in().is_none() {
                    self.live.projection = None;
                }
                if let Some(p) = processes.iter().find(|p| self.is_target(p.pid)) {
                    if self.target_comm.is_empty() {
                        self.target_comm = p.comm.clone();
                    }
                    // rss events are exact and more frequent: samples fill in without them.
                    if !self.rss_from_events {
                        self.rss_now = Some(p.rss_bytes);
                        self.live.rss.push(x, p.rss_bytes as f64);
                    }
                }
                if let Some(c) = cgroup {
                    // A target that joins its cgroup after the trace started (`tracer run`
                    // of a command that moves itself) was first sampled in the parent's:
                    // the series starts again in the new one.
                    if self.memcg_path.as_ref().is_some_and(|p| *p != c.path) {
                        self.live.memcg = Series::new(self.limits.points);
                    }
                    self.memcg_path = Some(c.path.clone());
                    self.memcg_now = Some((c.usage_bytes, c.limit_bytes));
                    self.live.memcg.push(x, c.usage_bytes as f64);
                    self.live.limit = c.limit_bytes;
                }
                if let Some(first) = gpus.first() {
                    let process = gpus.iter().filter_map(|g| g.process_bytes).reduce(u64::saturating_add);
                    let used = gpus.iter().map(|g| g.used_bytes).fold(0u64, u64::saturating_add);
                    let total = gpus.iter().map(|g| g.total_bytes).fold(0u64, u64::saturating_add);
                    self.gpu_now = Some(GpuNow { count: gpus.len(), name: first.name.clone(), used, total, process });
                    self.live.gpu.push(x, process.unwrap_or(used) as f64);
                }
            }
            _ => {}
        }
        if self.target_comm.is_empty() && self.is_target(ev.pid) && !ev.comm.is_empty() {
            self.target_comm = ev.comm.clone();
        }
    }

    /// The current diagnosis of what was seen.
    pub fn set_verdicts(&mut self, verdicts: Vec<Verdict>) {
        self.live.verdicts = verdicts;
    }

    /// The trace is over (the session stopped); the screen stays up until `q`.
    pub fn finish(&mut self, reason: &str) {
        self.finished = Some(reason.to_string());
    }

    /// A line for the status bar (a warning the session would have printed).
    pub fn set_notice(&mut self, text: &str) {
        self.notice = Some(text.to_string());
    }

    /// Rows the event list shows, so that PgUp/PgDn move a page.
    pub fn set_page(&mut self, rows: usize) {
        self.page = rows.max(1);
    }

    /// The selected row as a position in `list` (positions in the view's rows), and the
    /// first row shown, for a list `height` rows high.
    pub fn window(&self, list: &[usize], height: usize) -> (Option<usize>, usize) {
        if list.is_empty() {
            return (None, 0);
        }
        let height = height.max(1);
        if self.follow {
            return (Some(list.len() - 1), list.len().saturating_sub(height));
        }
        let rows = &self.view().rows;
        let pos_of = |seq: u64| list.partition_point(|&i| rows[i].seq < seq).min(list.len() - 1);
        let sel = pos_of(self.selected);
        let mut top = pos_of(self.top);
        if sel < top {
            top = sel;
        }
        if sel >= top + height {
            top = sel + 1 - height;
        }
        (Some(sel), top.min(list.len().saturating_sub(height)))
    }

    /// The event under the cursor (the newest one while following).
    pub fn selected_event(&self) -> Option<&Row> {
        let list = self.view().filtered(self.filter);
        let (sel, _) = self.window(&list, self.page);
        sel.map(|p| &self.view().rows[list[p]])
    }

    /// Moves the cursor to `pos` in the filtered list and scrolls just enough to show it.
    fn select(&mut self, list: &[usize], pos: usize) {
        let (_, top) = self.window(list, self.page);
        let rows = &self.view().rows;
        let pos = pos.min(list.len() - 1);
        let mut top = top;
        if pos < top {
            top = pos;
        }
        if pos >= top + self.page {
            top = pos + 1 - self.page;
        }
        let (sel_seq, top_seq) = (rows[list[pos]].seq, rows[list[top]].seq);
        self.selected = sel_seq;
        self.top = top_seq;
        self.follow = false;
    }

    fn scroll(&mut self, delta: isize) {
        let list = self.view().filtered(self.filter);
        let (Some(cur), _) = self.window(&list, self.page) else { return };
        let pos = cur.saturating_add_signed(delta).min(list.len() - 1);
        self.select(&list, pos);
    }

    fn toggle_pause(&mut self) {
        if self.frozen.take().is_none() {
            self.frozen = Some(self.live.clone());
            self.held = 0;
        }
    }

    fn open_detail(&mut self) {
        let Some(row) = self.selected_event() else { return };
        let json = serde_json::to_string_pretty(&row.ev).unwrap_or_else(|e| format!("cannot show this event: {e}"));
        let title = format!("event #{} {}", row.seq, row.ev.kind_name());
        self.popup = Some(Popup::Detail { title, json, scroll: 0 });
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::None;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c') if ctrl => return Action::Quit,
            KeyCode::Char('q') | KeyCode::Char('Q') => return Action::Quit,
            _ => {}
        }
        if let Some(popup) = &mut self.popup {
            match (key.code, popup) {
                (KeyCode::Esc, _) | (KeyCode::Enter, Popup::Detail { .. }) | (KeyCode::Char('?'), Popup::Help) => self.popup = None,
                (KeyCode::Up | KeyCode::Char('k'), Popup::Detail { scroll, .. }) => *scroll = scroll.saturating_sub(1),
                (KeyCode::Down | KeyCode::Char('j'), Popup::Detail { scroll, json, .. }) => *scroll = (*scroll + 1).min(last_line(json)),
                (KeyCode::PageUp, Popup::Detail { scroll, .. }) => *scroll = scroll.saturating_sub(10),
                (KeyCode::PageDown, Popup::Detail { scroll, json, .. }) => *scroll = scroll.saturating_add(10).min(last_line(json)),
                (KeyCode::Home, Popup::Detail { scroll, .. }) => *scroll = 0,
                (KeyCode::Char(' '), _) => self.toggle_pause(),
                _ => {}
            }
            return Action::None;
        }
        let page = self.page as isize;
        match key.code {
            KeyCode::Char(' ') => self.toggle_pause(),
            KeyCode::Up | KeyCode::Char('k') => self.scroll(-1),
            KeyCode::Down | KeyCode::Char('j') => self.scroll(1),
            KeyCode::PageUp => self.scroll(-page),
            KeyCode::PageDown => self.scroll(page),
            KeyCode::Home | KeyCode::Char('g') => {
                let list = self.view().filtered(self.filter);
                if !list.is_empty() {
                    self.select(&list, 0);
                }
            }
            KeyCode::End | KeyCode::Char('G') => self.follow = true,
            KeyCode::Char('f') => self.cycle_filter(),
            KeyCode::Enter => self.open_detail(),
            KeyCode::Char('?') => self.popup = Some(Popup::Help),
            _ => {}
        }
        Action::None
    }

    /// Next kind filter; a selection stays on the nearest event that passes.
    fn cycle_filter(&mut self) {
        let old = self.selected_event().map(|r| r.seq);
        self.filter = self.filter.next();
        if self.follow {
            return;
        }
        let list = self.view().filtered(self.filter);
        if list.is_empty() {
            self.follow = true;
            return;
        }
        let rows = &self.view().rows;
        let pos = old.map_or(0, |seq| list.partition_point(|&i| rows[i].seq <= seq).saturating_sub(1));
        self.top = rows[list[pos]].seq;
        self.select(&list, pos);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::testdata::{oom_verdict, ts, Rec, GIB, MIB, PID};

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn fed(ev: &[Event]) -> App {
        let mut app = App::new(Limits::default());
        for e in ev {
            app.on_event(e);
        }
        app
    }

    /// The oom scenario without its samples: every event shows under the `all` filter,
    /// so that list positions are event positions.
    fn without_samples() -> Vec<Event> {
        Rec::oom_scenario().ev.into_iter().filter(|e| e.kind_name() != "sample").collect()
    }

    fn shown_kinds(app: &App) -> Vec<&'static str> {
        let v = app.view();
        v.filtered(app.filter).iter().map(|&i| v.rows[i].ev.kind_name()).collect()
    }

    #[test]
    fn the_oom_scenario_fills_header_state_counters_series_and_markers() {
        let r = Rec::oom_scenario();
        let app = fed(&r.ev);
        assert_eq!((app.target_pid, app.target_comm.as_str()), (Some(PID), "workload"));
        assert_eq!(app.cmdline, "workload serve --port 8000 --load eager");
        assert_eq!(app.state, TargetState::Killed { signal: "SIGKILL".into(), core_dumped: false });
        assert_eq!(app.state.text(), "killed by SIGKILL");
        assert!(app.oom_killed);
        assert_eq!(app.lost, 3);
        assert_eq!(app.total, r.ev.len() as u64);
        assert_eq!(app.finished.as_deref(), Some("target_exited"));
        assert_eq!(app.memcg_now, Some((10 * MIB, Some(2 * GIB))));
        assert_eq!(app.elapsed(), 8.0);
        let v = app.view();
        assert_eq!(v.limit, Some(2 * GIB));
        // RSS from the rss events once they came (anon + file), 0 at the exit.
        assert_eq!(v.rss.points().first(), Some(&(0.1, (300 * MIB) as f64)), "from the first sample");
        assert!(v.rss.points().contains(&(5.9, (2000 * MIB) as f64)), "{:?}", v.rss.points());
        assert_eq!(v.rss.last(), Some((6.02, 0.0)));
        assert_eq!(v.memcg.max_y(), (2 * GIB - 10 * MIB) as f64);
        assert_eq!(v.gpu.max_y(), (3 * GIB) as f64);
        let labels: Vec<String> = v.markers.iter().map(|m| m.label()).collect();
        assert_eq!(labels, ["SIGKILL", "OOM", "exit", "RST×2"]);
    }

    #[test]
    fn the_memcg_series_starts_again_when_the_target_moves_to_another_cgroup() {
        let mut r = Rec::new();
        r.sample(100, 2 * MIB, 5 * GIB, None, None);
        let mut moved = r.ev[1].clone();
        if let EventKind::Sample { cgroup: Some(c), .. } = &mut moved.kind {
            c.path = "/sys/fs/cgroup/workload/small".into();
            c.usage_bytes = 30 * MIB;
            c.limit_bytes = Some(64 * MIB);
        }
        moved.ts_ns = ts(200);
        r.ev.push(moved);
        let app = fed(&r.ev);
        let v = app.view();
        assert_eq!(v.memcg.points(), &[(0.2, (30 * MIB) as f64)], "the parent's usage is not charted");
        assert_eq!(v.limit, Some(64 * MIB));
        assert_eq!(app.memcg_now, Some((30 * MIB, Some(64 * MIB))));
    }

    #[test]
    fn exit_of_the_target_with_a_code_and_other_processes_exits() {
        let mut r = Rec::new();
        r.push(
            5,
            999,
            EventKind::Exit {
                group_dead: true,
                exit_code: None,
                signal: Some(11),
                signal_name: None,
                core_dumped: true,
                source: "x".into(),
            },
        );
        let mut app = fed(&r.ev);
        assert_eq!(app.state, TargetState::Running, "another process's death is not the target's");
        r.push(
            6,
            PID,
            EventKind::Exit {
                group_dead: false,
                exit_code: Some(1),
                signal: None,
                signal_name: None,
                core_dumped: false,
                source: "x".into(),
            },
        );
        r.push(
            7,
            PID,
            EventKind::Exit {
                group_dead: true,
                exit_code: Some(3),
                signal: None,
                signal_name: None,
                core_dumped: false,
                source: "x".into(),
            },
        );
        app.on_event(&r.ev[2]);
        assert_eq!(app.state, TargetState::Running, "a thread's exit is not the process's");
        app.on_event(&r.ev[3]);
        assert_eq!(app.state.text(), "exited with code 3");
    }

    #[test]
    fn the_header_shows_the_program_the_target_execd() {
        let pid = crate::diagnose::testkit::PID;
        let mut b = crate::diagnose::testkit::Tb::new(pid);
        b.push(5, pid, "workload", EventKind::Exec {
            filename: "/bin/workload".into(),
            old_pid: pid,
            argv: Some(vec!["workload".into(), "serve".into(), "--load".into(), "background".into()]),
            argv_cut: false,
        });
        b.ev[0].comm = "sh".into();
        if let EventKind::TraceStart { target_cmdline, .. } = &mut b.ev[0].kind {
            *target_cmdline = "sh -c exec workload serve --load background".into();
        }
        let app = fed(&b.ev);
        assert_eq!((app.target_comm.as_str(), app.cmdline.as_str()), ("workload", "workload serve --load background"));
    }

    #[test]
    fn a_file_mapped_again_says_so_in_the_list() {
        let mut b = crate::diagnose::testkit::Tb::new(crate::diagnose::testkit::PID);
        let pid = crate::diagnose::testkit::PID;
        for ms in [10, 20] {
            let i = b.mmap_file(ms, pid, 3 << 20, "/m/model.safetensors");
            if let EventKind::Mmap { file, .. } = &mut b.ev[i].kind {
                *file = Some(crate::event::FileId { dev: "08:01".into(), ino: 42, size: 3 << 20, path_cut: false });
            }
        }
        let app = fed(&b.ev);
        let notes: Vec<Option<&str>> = app.view().rows.iter().map(|r| r.note.as_deref()).collect();
        assert_eq!(notes.iter().filter(|n| n.is_some()).count(), 1, "{notes:?}");
        assert_eq!(notes.last().copied().flatten(), Some("this file: 3.00 MiB, mapped twice"));
        let line = crate::tui::detail::detail(&app.view().rows.back().unwrap().ev);
        assert!(line.contains("/m/model.safetensors (a 3.00M file)"), "{line}");
    }

    #[test]
    fn events_per_second_come_from_the_injected_clock() {
        let r = Rec::oom_scenario();
        let mut app = App::new(Limits::default());
        app.tick(ts(0));
        for e in &r.ev[..10] {
            app.on_event(e);
        }
        app.tick(ts(500));
        assert_eq!(app.events_per_sec(), 20.0);
        app.tick(ts(3_000));
        app.tick(ts(5_000));
        assert_eq!(app.events_per_sec(), 0.0);
    }

    #[test]
    fn a_million_events_keep_the_list_and_the_series_bounded() {
        let mut app = App::new(Limits::default());
        let r = Rec::oom_scenario();
        app.on_event(&r.ev[0]);
        let mut ev = r.ev.iter().find(|e| e.kind_name() == "rss").unwrap().clone();
        let sample = r.ev.iter().find(|e| e.kind_name() == "sample").unwrap().clone();
        let rst = r.ev.iter().find(|e| e.kind_name() == "tcp_reset").unwrap().clone();
        for i in 0..1_000_000u64 {
            let e = match i % 100 {
                0 => &sample,
                1 => &rst,
                _ => &ev,
            };
            let mut e = e.clone();
            e.ts_ns = ts(i / 10);
            if let EventKind::Rss { bytes, .. } = &mut ev.kind {
                *bytes = (i % 5000) as i64 * MIB as i64;
            }
            app.on_event(&e);
        }
        let l = app.limits();
        let v = app.view();
        assert_eq!(app.total, 1_000_001);
        assert_eq!(v.rows.len(), l.events);
        assert_eq!(v.rows.back().unwrap().seq, 1_000_000);
        assert!(v.rss.len() <= l.points && v.memcg.len() <= l.points && v.gpu.len() <= l.points);
        assert!(v.rss.len() > l.points / 4, "downsampled, not emptied");
        assert!(v.markers.len() <= l.markers);
    }

    #[test]
    fn f_cycles_filters_and_the_list_only_shows_matching_kinds() {
        let mut app = fed(&Rec::oom_scenario().ev);
        assert_eq!(app.filter, Filter::All);
        let samples = app.view().rows.iter().filter(|r| r.ev.kind_name() == "sample").count();
        assert_eq!(shown_kinds(&app).len(), app.view().rows.len() - samples);
        app.on_key(key(KeyCode::Char('f')));
        assert_eq!(app.filter, Filter::Memory);
        let kinds = shown_kinds(&app);
        assert!(kinds.iter().all(|k| ["rss", "mmap", "oom_kill"].contains(k)), "{kinds:?}");
        assert!(kinds.contains(&"rss"));
        app.on_key(key(KeyCode::Char('f')));
        assert_eq!(shown_kinds(&app), ["signal", "oom_kill", "exit"]);
        app.on_key(key(KeyCode::Char('f')));
        assert_eq!(shown_kinds(&app), ["trace_start", "fork", "lost", "exit", "trace_end"]);
        app.on_key(key(KeyCode::Char('f')));
        assert_eq!(shown_kinds(&app), ["tcp_state", "tcp_reset", "tcp_reset"]);
        app.on_key(key(KeyCode::Char('f')));
        assert_eq!(app.filter, Filter::Samples);
        assert!(shown_kinds(&app).iter().all(|k| *k == "sample") && !shown_kinds(&app).is_empty());
        app.on_key(key(KeyCode::Char('f')));
        assert_eq!(app.filter, Filter::All);
        assert!(!shown_kinds(&app).contains(&"sample"), "samples feed the header and chart, not the list");
    }

    #[test]
    fn arrows_stop_following_and_end_follows_again() {
        let ev = without_samples();
        let mut app = fed(&ev);
        app.set_page(5);
        let n = ev.len();
        assert!(app.follow);
        assert_eq!(app.selected_event().unwrap().seq, n as u64 - 1);
        app.on_key(key(KeyCode::Up));
        assert!(!app.follow);
        assert_eq!(app.selected_event().unwrap().seq, n as u64 - 2);
        // A new event does not move the selection while not following.
        let mut extra = ev[1].clone();
        extra.ts_ns = ts(9_000);
        app.on_event(&extra);
        assert_eq!(app.selected_event().unwrap().seq, n as u64 - 2);
        app.on_key(key(KeyCode::PageUp));
        assert_eq!(app.selected_event().unwrap().seq, n as u64 - 7);
        let list = app.view().filtered(app.filter);
        let (sel, top) = app.window(&list, 5);
        assert_eq!((sel, top), (Some(n - 7), n - 7), "scrolled up just enough to show the selection");
        app.on_key(key(KeyCode::Home));
        assert_eq!(app.selected_event().unwrap().seq, 0);
        assert_eq!(app.window(&list, 5), (Some(0), 0));
        app.on_key(key(KeyCode::Down));
        assert_eq!(app.selected_event().unwrap().seq, 1);
        assert!(!app.follow);
        app.on_key(key(KeyCode::PageDown));
        app.on_key(key(KeyCode::PageDown));
        app.on_key(key(KeyCode::PageDown));
        app.on_key(key(KeyCode::PageDown));
        app.on_key(key(KeyCode::PageDown));
        assert_eq!(app.selected_event().unwrap().seq, n as u64 + 1 - 1, "clamped at the last");
        assert!(!app.follow);
        app.on_key(key(KeyCode::End));
        assert!(app.follow);
        app.on_event(&extra);
        assert_eq!(app.selected_event().unwrap().seq, n as u64 + 1, "following the newest again");
    }

    #[test]
    fn space_pauses_the_view_while_events_keep_counting() {
        let r = Rec::oom_scenario();
        let mut app = fed(&r.ev[..5]);
        app.on_key(key(KeyCode::Char(' ')));
        assert!(app.paused());
        for e in &r.ev[5..] {
            app.on_event(e);
        }
        app.set_verdicts(vec![oom_verdict()]);
        assert_eq!(app.view().rows.len(), 5, "new events stay out of the paused view");
        assert!(app.view().verdicts.is_empty());
        assert!(app.view().markers.is_empty());
        assert_eq!((app.total, app.held), (r.ev.len() as u64, (r.ev.len() - 5) as u64));
        assert_eq!(app.lost, 3, "the header stays live");
        app.on_key(key(KeyCode::Char(' ')));
        assert!(!app.paused());
        assert_eq!(app.view().rows.len(), r.ev.len());
        assert_eq!(app.view().verdicts.len(), 1);
    }

    #[test]
    fn enter_opens_the_selected_events_json_and_esc_closes_it() {
        let ev = without_samples();
        let mut app = fed(&ev);
        let oom = ev.iter().position(|e| e.kind_name() == "oom_kill").unwrap();
        app.on_key(key(KeyCode::Home));
        for _ in 0..oom {
            app.on_key(key(KeyCode::Down));
        }
        assert_eq!(app.on_key(key(KeyCode::Enter)), Action::None);
        let Some(Popup::Detail { title, json, .. }) = &app.popup else { panic!("no detail popup: {:?}", app.popup) };
        assert!(title.contains("oom_kill"), "{title}");
        for field in ["\"kind\": \"oom_kill\"", "\"victim_pid\": 4711", "\"anon_rss_kb\"", "\"ts_ns\"", "\"comm\""] {
            assert!(json.contains(field), "{field} in {json}");
        }
        app.on_key(key(KeyCode::Down));
        assert!(matches!(app.popup, Some(Popup::Detail { scroll: 1, .. })));
        for _ in 0..10 {
            app.on_key(key(KeyCode::PageDown));
        }
        let Some(Popup::Detail { scroll, json, .. }) = &app.popup else { panic!() };
        assert_eq!(usize::from(*scroll), json.lines().count() - 1, "scrolls no further than the last line");
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.popup, None);
        app.on_key(key(KeyCode::Char('?')));
        assert_eq!(app.popup, Some(Popup::Help));
        app.on_key(key(KeyCode::Esc));
        assert_eq!(app.popup, None);
    }

    #[test]
    fn q_and_ctrl_c_quit_even_from_a_popup_and_other_keys_do_not() {
        let mut app = fed(&Rec::oom_scenario().ev);
        for code in [KeyCode::Char('x'), KeyCode::Left, KeyCode::Tab, KeyCode::Esc] {
            assert_eq!(app.on_key(key(code)), Action::None);
        }
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
        app.on_key(key(KeyCode::Char('?')));
        assert_eq!(app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)), Action::Quit);
        assert_eq!(app.on_key(key(KeyCode::Char('c'))), Action::None);
        let mut release = key(KeyCode::Char('q'));
        release.kind = KeyEventKind::Release;
        assert_eq!(app.on_key(release), Action::None);
    }

    #[test]
    fn keys_on_an_empty_app_do_nothing_harmful() {
        let mut app = App::new(Limits::default());
        for code in [
            KeyCode::Up,
            KeyCode::Down,
            KeyCode::PageUp,
            KeyCode::PageDown,
            KeyCode::Home,
            KeyCode::End,
            KeyCode::Enter,
            KeyCode::Char('f'),
        ] {
            assert_eq!(app.on_key(key(code)), Action::None);
        }
        assert_eq!(app.popup, None);
        assert!(app.selected_event().is_none());
    }

    #[test]
    fn a_filter_change_keeps_the_selection_near_where_it_was() {
        let ev = without_samples();
        let mut app = fed(&ev);
        let oom = ev.iter().position(|e| e.kind_name() == "oom_kill").unwrap();
        app.on_key(key(KeyCode::Home));
        for _ in 0..oom + 1 {
            app.on_key(key(KeyCode::Down));
        }
        assert_eq!(app.selected_event().unwrap().ev.kind_name(), "exit");
        // Memory has no exit: the nearest earlier memory event is the oom_kill.
        app.on_key(key(KeyCode::Char('f')));
        assert_eq!(app.selected_event().unwrap().ev.kind_name(), "oom_kill");
        assert!(!app.follow);
    }
}
