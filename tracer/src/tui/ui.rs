//! Drawing: `draw(frame, &app)` lays out the header, the memory chart, the event list,
//! the verdict panel and the help line, then any popup. Reads the app, never changes it.
use ratatui::{
    layout::{Constraint, Layout, Rect},
    style::{Color, Modifier, Style},
    text::{Line, Span, Text},
    widgets::{Block, Borders, Cell, Clear, Padding, Paragraph, Row, Table, Wrap},
    Frame,
};

use crate::diagnose::{Cause, Verdict};

use super::app::{App, Popup, TargetState};
use super::chart;
use super::detail::{bytes, clean, detail, duration, kind_color, who};

/// Below this the screen says it is too small instead of drawing.
pub const MIN_WIDTH: u16 = 40;
pub const MIN_HEIGHT: u16 = 12;

/// Where each part goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Areas {
    pub header: Rect,
    pub chart: Rect,
    /// Title row plus the list.
    pub events: Rect,
    /// Title row plus the verdicts.
    pub verdicts: Rect,
    pub help: Rect,
}

/// The layout for a terminal of this size; None when it is too small. At 80x24: header 3,
/// chart 8, events 7, verdicts 5, help 1.
pub fn layout(area: Rect) -> Option<Areas> {
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        return None;
    }
    let rest = area.height - 4;
    let verdicts = match area.height {
        0..=19 => 3,
        20..=35 => 5,
        _ => 7,
    };
    let chart = (rest * 2 / 5).clamp(4, 24).min(rest.saturating_sub(verdicts + 2));
    let events = rest - verdicts - chart;
    let [header, chart, events, verdicts, help] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(chart),
        Constraint::Length(events),
        Constraint::Length(verdicts),
        Constraint::Length(1),
    ])
    .areas(area);
    Some(Areas { header, chart, events, verdicts, help })
}

/// Rows of events shown at this terminal size (for PgUp/PgDn).
pub fn list_rows(area: Rect) -> usize {
    layout(area).map_or(1, |a| usize::from(a.events.height.saturating_sub(1)).max(1))
}

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let Some(a) = layout(area) else {
        let text = format!("terminal too small: {}x{}, needs {MIN_WIDTH}x{MIN_HEIGHT} (q quits)", area.width, area.height);
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    };
    header(frame, a.header, app);
    chart::draw(frame, a.chart, app.view());
    events(frame, a.events, app);
    verdicts(frame, a.verdicts, &app.view().verdicts);
    help_line(frame, a.help, app);
    match &app.popup {
        Some(Popup::Detail { title, json, scroll }) => detail_popup(frame, area, title, json, *scroll),
        Some(Popup::Help) => help_popup(frame, area),
        None => {}
    }
}

fn state_style(app: &App) -> Style {
    let color = match app.state {
        TargetState::Running => Color::Green,
        TargetState::Exited { code: Some(0) } => Color::Yellow,
        _ => Color::Red,
    };
    Style::new().fg(color).add_modifier(Modifier::BOLD)
}

fn header(frame: &mut Frame, area: Rect, app: &App) {
    let rows = Layout::vertical([Constraint::Length(1); 3]).split(area);

    // Target and state.
    let mut state = app.state.text();
    if app.oom_killed {
        state.push_str(" (OOM killer)");
    }
    let state = format!(" {state} ");
    let [left, right] = Layout::horizontal([Constraint::Fill(1), Constraint::Length(state.chars().count() as u16)]).areas(rows[0]);
    let target = match app.target_pid {
        Some(pid) => vec![
            Span::raw(format!(" pid {pid} ")),
            Span::styled(clean(&app.target_comm), Style::new().add_modifier(Modifier::BOLD)),
            Span::styled(format!("  {}", clean(&app.cmdline)), Style::new().fg(Color::Gray)),
        ],
        None => vec![Span::raw(" waiting for the trace to start")],
    };
    let mut line = vec![Span::styled(" tracer ", Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD))];
    line.extend(target);
    frame.render_widget(Paragraph::new(Line::from(line)), left);
    frame.render_widget(Paragraph::new(Span::styled(state, state_style(app))), right);

    // Counters.
    let dim = Style::new().fg(Color::Gray);
    let sep = || Span::styled("  ", dim);
    let mut c = vec![
        Span::styled(" elapsed ", dim),
        Span::raw(duration(app.elapsed())),
        sep(),
        Span::raw(format!("{:.0}", app.events_per_sec())),
        Span::styled(" ev/s", dim),
        sep(),
        Span::raw(app.total.to_string()),
        Span::styled(" events", dim),
        sep(),
    ];
    let lost = format!("lost {}", app.lost);
    c.push(if app.lost > 0 {
        Span::styled(lost, Style::new().fg(Color::Red).add_modifier(Modifier::BOLD))
    } else {
        Span::styled(lost, dim)
    });
    if let Some((usage, limit)) = app.memcg_now {
        c.push(sep());
        c.push(Span::styled("memcg ", dim));
        match limit {
            Some(l) if l > 0 => {
                let pct = usage as f64 * 100.0 / l as f64;
                let style = if pct >= 90.0 { Style::new().fg(Color::Red) } else { Style::new() };
                c.push(Span::styled(format!("{}/{} {pct:.0}%", bytes(usage), bytes(l)), style));
            }
            _ => c.push(Span::raw(format!("{} (no limit)", bytes(usage)))),
        }
    }
    if let Some((left, f)) = app.limit_in() {
        c.push(sep());
        let red = Style::new().fg(Color::Red).add_modifier(Modifier::BOLD);
        let what = match f.limit.as_str() {
            "memory_cgroup" => "memcg",
            "gpu" => "gpu",
            _ => "host",
        };
        c.push(Span::styled(format!("{what} limit in ~{left:.1}s"), red));
        c.push(Span::styled(format!(" ({} free, +{}/s)", bytes(f.headroom_bytes), bytes(f.rate_bytes_per_s.max(0.0) as u64)), dim));
    }
    if let Some(rss) = app.rss_now {
        c.push(sep());
        c.push(Span::styled("rss ", dim));
        c.push(Span::raw(bytes(rss)));
    }
    if let Some(g) = &app.gpu_now {
        c.push(sep());
        let name = if g.count > 1 { format!("{} gpus ", g.count) } else { "gpu ".to_string() };
        c.push(Span::styled(name, dim));
        // The traced processes' share when NVML tells, else what the devices use.
        c.push(Span::raw(format!("{}/{}", bytes(g.process.unwrap_or(g.used)), bytes(g.total))));
    }
    frame.render_widget(Paragraph::new(Line::from(c)), rows[1]);

    // Status: the end of the trace, a pause, a notice, else what the list does.
    let status = if let Some(reason) = &app.finished {
        Span::styled(
            format!(" trace ended: {} — q quits and prints the verdicts ", clean(reason)),
            Style::new().fg(Color::Black).bg(Color::Yellow).add_modifier(Modifier::BOLD),
        )
    } else if app.paused() {
        Span::styled(
            format!(" PAUSED — {} new events held, space resumes ", app.held),
            Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(Modifier::BOLD),
        )
    } else if let Some(n) = &app.notice {
        Span::styled(format!(" {}", clean(n)), Style::new().fg(Color::Yellow))
    } else {
        Span::styled(" live", Style::new().fg(Color::Green))
    };
    let mut status = vec![status];
    if app.paused() && app.finished.is_some() {
        status.push(Span::styled(" PAUSED ", Style::new().fg(Color::Black).bg(Color::Cyan)));
    }
    frame.render_widget(Paragraph::new(Line::from(status)), rows[2]);
}

/// Seconds since the trace start, as wide as the column.
fn rel(secs: f64) -> String {
    if secs < 1000.0 {
        format!("{secs:>8.3}s")
    } else if secs < 100_000.0 {
        format!("{secs:>8.1}s")
    } else {
        format!("{:>9}", duration(secs))
    }
}

fn events(frame: &mut Frame, area: Rect, app: &App) {
    let view = app.view();
    let list = view.filtered(app.filter);
    let height = usize::from(area.height.saturating_sub(1));
    let (sel, top) = app.window(&list, height);
    let mode = if app.follow { "following" } else { "scrolled (End follows)" };
    let title = format!(" events · filter {} · {} of {} · {mode} ", app.filter.label(), list.len(), app.total);
    let block = Block::new().borders(Borders::TOP).title(title).border_style(Style::new().fg(Color::DarkGray));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let start = app.start_ns.unwrap_or(0);
    let rows: Vec<Row> = list
        .iter()
        .enumerate()
        .skip(top)
        .take(height)
        .map(|(pos, &i)| {
            let ev = &view.rows[i].ev;
            let text = match &view.rows[i].note {
                Some(note) => format!("{} ({})", detail(ev), crate::tui::detail::clean(note)),
                None => detail(ev),
            };
            let secs = ev.ts_ns.saturating_sub(start) as f64 / 1e9;
            let row = Row::new(vec![
                Cell::from(rel(secs)).style(Style::new().fg(Color::Gray)),
                Cell::from(ev.kind_name()).style(Style::new().fg(kind_color(&ev.kind))),
                Cell::from(who(&ev.comm, ev.pid)),
                Cell::from(text),
            ]);
            if Some(pos) == sel {
                row.style(Style::new().add_modifier(Modifier::REVERSED))
            } else {
                row
            }
        })
        .collect();
    let kind_w = if area.width >= 70 { 14 } else { 9 };
    let widths = [Constraint::Length(9), Constraint::Length(kind_w), Constraint::Length(16), Constraint::Fill(1)];
    frame.render_widget(Table::new(rows, widths).column_spacing(1), inner);
}

fn cause_style(cause: Cause) -> Style {
    let color = match cause {
        Cause::OomKilled | Cause::KilledBySignal | Cause::Crashed => Color::Red,
        Cause::Unexplained => Color::Gray,
        _ => Color::Yellow,
    };
    Style::new().fg(color).add_modifier(Modifier::BOLD)
}

fn verdict_line(v: &Verdict) -> Line<'static> {
    Line::from(vec![
        Span::styled(v.cause.as_str().to_string(), cause_style(v.cause)),
        Span::raw(" "),
        Span::raw(clean(&v.summary)),
        Span::styled(format!(" ({})", v.confidence.as_str()), Style::new().fg(Color::Gray)),
    ])
}

fn verdicts(frame: &mut Frame, area: Rect, verdicts: &[Verdict]) {
    let height = usize::from(area.height.saturating_sub(1));
    let width = usize::from(area.width.saturating_sub(2).max(1));
    let lines: Vec<Line> = verdicts.iter().map(verdict_line).collect();
    // With room, each verdict is followed by what to do about it.
    let with_actions: Vec<Line> = verdicts
        .iter()
        .flat_map(|v| {
            let action = v.action.as_deref().map(|a| {
                Line::from(vec![Span::styled("→ what to do: ", Style::new().fg(Color::Cyan)), Span::raw(clean(a))])
            });
            std::iter::once(verdict_line(v)).chain(action)
        })
        .collect();
    let rows = |ls: &[Line]| -> usize { ls.iter().map(|l| l.width().div_ceil(width).max(1)).sum() };
    let wrapped = rows(&lines);
    let lines = if rows(&with_actions) <= height { with_actions } else { lines };
    let (title, text, wrap) = if verdicts.is_empty() {
        (
            " verdict ".to_string(),
            Text::styled(" none yet: no fatal event or reset of the target so far", Style::new().fg(Color::Gray)),
            false,
        )
    } else if wrapped <= height || lines.len() == 1 {
        (format!(" verdicts ({}) ", verdicts.len()), Text::from(lines), true)
    } else {
        // One line each, the newest kept.
        let skip = lines.len().saturating_sub(height);
        let title = if skip > 0 {
            format!(" verdicts ({}, last {} shown) ", verdicts.len(), height)
        } else {
            format!(" verdicts ({}) ", verdicts.len())
        };
        (title, Text::from(lines.into_iter().skip(skip).collect::<Vec<_>>()), false)
    };
    let block =
        Block::new().borders(Borders::TOP).title(title).border_style(Style::new().fg(Color::DarkGray)).padding(Padding::horizontal(1));
    let mut p = Paragraph::new(text).block(block);
    if wrap {
        p = p.wrap(Wrap { trim: false });
    }
    frame.render_widget(p, area);
}

fn help_line(frame: &mut Frame, area: Rect, app: &App) {
    let key = Style::new().fg(Color::Black).bg(Color::Gray);
    let pause = if app.paused() { "resume" } else { "pause" };
    // Narrow terminals get short names: the whole line fits 80 columns (the events title
    // names the filter).
    let wide = area.width >= 96;
    let filter = if wide { format!("filter:{}", app.filter.label()) } else { "filter".to_string() };
    let scroll = if wide { "↑↓ PgUp PgDn Home End" } else { "↑↓ Pg Home End" };
    let items: [(&str, &str); 6] = [("q", "quit"), ("space", pause), (scroll, "move"), ("f", &filter), ("Enter", "event"), ("?", "help")];
    let mut spans = Vec::new();
    for (k, what) in items {
        spans.push(Span::styled(format!(" {k} "), key));
        spans.push(Span::raw(format!(" {what} ")));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A rectangle of at most `w`x`h` centred in `area`.
fn centered(area: Rect, w: u16, h: u16) -> Rect {
    let w = w.min(area.width);
    let h = h.min(area.height);
    Rect { x: area.x + (area.width - w) / 2, y: area.y + (area.height - h) / 2, width: w, height: h }
}

fn detail_popup(frame: &mut Frame, area: Rect, title: &str, json: &str, scroll: u16) {
    let r = centered(area, area.width.saturating_sub(4).max(20), area.height.saturating_sub(2));
    frame.render_widget(Clear, r);
    let block =
        Block::bordered().title(format!(" {title} ")).title_bottom(" ↑↓ scroll · Esc closes ").border_style(Style::new().fg(Color::Cyan));
    frame.render_widget(Paragraph::new(json).block(block).scroll((scroll, 0)), r);
}

const HELP: &[(&str, &str)] = &[
    ("q, Ctrl-C", "quit: the trace is flushed, verdicts printed"),
    ("space", "pause / resume the view (capture goes on)"),
    ("↑ ↓ k j", "move the selection (stops following)"),
    ("PgUp PgDn", "move a page"),
    ("Home g", "first event kept"),
    ("End G", "follow the newest events"),
    ("f", "filter: all (no samples), memory, signals, process, tcp, samples"),
    ("Enter", "the selected event's fields"),
    ("?", "this help"),
    ("Esc", "close a popup"),
];

fn help_popup(frame: &mut Frame, area: Rect) {
    let r = centered(area, 64, HELP.len() as u16 + 4);
    frame.render_widget(Clear, r);
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(k, what)| Line::from(vec![Span::styled(format!(" {k:<11}"), Style::new().add_modifier(Modifier::BOLD)), Span::raw(*what)]))
        .collect();
    lines.push(Line::raw(""));
    lines.push(Line::styled(" chart: rss cyan, memcg blue, limit red, gpu green", Style::new().fg(Color::Gray)));
    let block = Block::bordered().title(" keys ").border_style(Style::new().fg(Color::Cyan));
    frame.render_widget(Paragraph::new(lines).block(block), r);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tui::testdata::{find, oom_app, render, screen, unexplained_verdict, Rec, MIB, SUMMARY};
    use crate::tui::{App, Limits};
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    fn press(app: &mut App, code: KeyCode) {
        app.on_key(KeyEvent::new(code, KeyModifiers::NONE));
    }

    #[test]
    fn a_forecast_puts_the_time_to_the_limit_in_the_header_counted_down_then_gone() {
        use crate::event::{EventKind, Forecast};
        let mut r = Rec::new();
        r.sample(100, 100 * MIB, 100 * MIB, Some(256 * MIB), None);
        let f = Forecast {
            limit: "memory_cgroup".into(),
            limit_name: "memory cgroup /sys/fs/cgroup/svc".into(),
            limit_bytes: 256 * MIB,
            used_bytes: 200 * MIB,
            headroom_bytes: 56 * MIB,
            headroom_percent: 21.9,
            rate_bytes_per_s: (20 * MIB) as f64,
            seconds_to_limit: 2.8,
            window_ms: 3000,
            points: 30,
            r_squared: 0.99,
            confidence: "high".into(),
            fastest_rate_bytes_per_s: Some((20 * MIB) as f64),
            psi_some_avg10: None,
            limit_hits: None,
        };
        r.push(200, crate::tui::testdata::PID, EventKind::Forecast(f));
        let mut app = App::new(Limits::default());
        for e in &r.ev {
            app.on_event(e);
        }
        let buf = render(&app, 120, 40);
        let text = screen(&buf);
        assert!(text.contains("memcg limit in ~2.8s (56.0M free, +20.0M/s)"), "{text}");
        // On the chart: the projection's legend and its yellow line in the plot.
        assert!(text.contains("limit in 2.8s"), "{text}");
        let chart = crate::tui::ui::layout(buf.area).unwrap().chart;
        let yellow = (chart.y + 1..chart.bottom() - 1)
            .flat_map(|y| (chart.x + 6..chart.right()).map(move |x| (x, y)))
            .filter(|&(x, y)| buf[(x, y)].fg == crate::tui::chart::PROJECTION && buf[(x, y)].symbol() != " ")
            .count();
        assert!(yellow >= 10, "the projection line is {yellow} cells:\n{text}");
        // A second later it counts down; once past its projection it is gone.
        r.sample(1200, 100 * MIB, 220 * MIB, Some(256 * MIB), None);
        app.on_event(r.ev.last().unwrap());
        assert!(screen(&render(&app, 120, 40)).contains("memcg limit in ~1.8s"));
        r.sample(3100, 100 * MIB, 100 * MIB, Some(256 * MIB), None);
        app.on_event(r.ev.last().unwrap());
        let text = screen(&render(&app, 120, 40));
        assert!(!text.contains("limit in"), "the header and the chart drop a stale forecast:\n{text}");
    }

    #[test]
    fn the_layout_fits_80x24_as_designed_and_grows() {
        let a = layout(Rect::new(0, 0, 80, 24)).unwrap();
        let heights = [a.header.height, a.chart.height, a.events.height, a.verdicts.height, a.help.height];
        assert_eq!(heights, [3, 8, 7, 5, 1]);
        assert_eq!(a.help.bottom(), 24);
        let b = layout(Rect::new(0, 0, 120, 40)).unwrap();
        assert!(b.chart.height > 8 && b.events.height > 7 && b.verdicts.height == 7, "{b:?}");
        assert_eq!(b.help.bottom(), 40);
        let small = layout(Rect::new(0, 0, MIN_WIDTH, MIN_HEIGHT)).unwrap();
        assert!(small.events.height >= 2 && small.chart.height >= 1, "{small:?}");
        assert_eq!(layout(Rect::new(0, 0, 39, 24)), None);
        assert_eq!(list_rows(Rect::new(0, 0, 80, 24)), 6);
    }

    #[test]
    fn the_oom_scenario_at_80x24_shows_target_state_lost_oom_marker_and_verdict() {
        let app = oom_app();
        let buf = render(&app, 80, 24);
        let text = screen(&buf);
        assert!(text.contains("pid 4711 workload"), "{text}");
        assert!(text.contains("killed by SIGKILL (OOM killer)"), "{text}");
        assert!(text.contains("trace ended: target_exited"), "{text}");
        // The lost counter, in red.
        let (x, y) = find(&buf, "lost 3").unwrap_or_else(|| panic!("no lost counter in\n{text}"));
        for i in 0..6 {
            assert_eq!(buf[(x + i, y)].fg, Color::Red, "lost counter cell {i}");
        }
        // The OOM marker label, on the chart rows, in red.
        let (ox, oy) = find(&buf, "OOM SIGKILL").unwrap_or_else(|| panic!("no OOM marker in\n{text}"));
        let a = layout(buf.area).unwrap();
        assert!(oy > a.chart.y && oy < a.chart.bottom(), "OOM label at row {oy}:\n{text}");
        assert_eq!(buf[(ox, oy)].fg, Color::Red);
        assert!(text.contains("OOM SIGKILL exit RST×2"), "{text}");
        // The verdict: its cause and the start of its summary.
        let verdict_rows: String = text.lines().skip(usize::from(a.verdicts.y)).take(5).collect::<Vec<_>>().join("\n");
        assert!(verdict_rows.contains("oom_killed pid 4711 (workload) was OOM-killed"), "{verdict_rows}");
        // The newest events at the bottom of the list, the last one selected.
        let list_rows: Vec<&str> = text.lines().skip(usize::from(a.events.y) + 1).take(6).collect();
        assert!(list_rows[5].contains("trace_end"), "{list_rows:#?}");
        assert!(list_rows[4].contains("tcp_reset") && list_rows[4].contains("6.022s"), "{list_rows:#?}");
        assert!(!list_rows.iter().any(|r| r.contains("sample")), "samples are not listed: {list_rows:#?}");
        let (tx, ty) = find(&buf, "trace_end").unwrap();
        assert!(buf[(tx, ty)].modifier.contains(Modifier::REVERSED));
        // The help line fits.
        assert!(text.lines().last().unwrap().trim_end().ends_with("help"), "{text}");
    }

    #[test]
    fn at_120x40_everything_has_more_room() {
        let app = oom_app();
        let buf = render(&app, 120, 40);
        let text = screen(&buf);
        assert!(text.contains("OOM SIGKILL exit RST×2"), "{text}");
        assert!(text.contains(&SUMMARY[..100]), "{text}");
        assert!(text.contains("memcg 10.0M/2.00G 0%"), "{text}");
        assert!(text.contains("gpu 0B/140G"), "{text}");
        assert!(text.contains("killed by SIGKILL"), "{text}");
        assert!(text.contains("workload serve --port 8000 --load eager"), "{text}");
        assert!(text.contains("limit 2.00G"), "{text}");
        assert!(text.contains("filter:all"), "{text}");
        // The list has room for the last 14 events.
        assert!(text.contains("filter all · 15 of 20 · following"), "the 5 samples are not listed:\n{text}");
        assert!(!text.contains("  mmap  ") && text.contains("MM_FILEPAGES 100M"), "{text}");
        for kind in ["rss", "lost", "signal", "oom_kill", "exit", "tcp_reset", "trace_end"] {
            assert!(text.contains(kind), "{kind} in\n{text}");
        }
        let (x, y) = find(&buf, "lost 3").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::Red);
        let (x, y) = find(&buf, "oom_kill").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::Red, "oom_kill coloured by its kind");
        let (x, y) = find(&buf, "tcp_reset").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::Yellow);
        let (x, y) = find(&buf, "signal ").unwrap();
        assert_eq!(buf[(x, y)].fg, Color::Magenta);
    }

    #[test]
    fn no_lost_events_is_not_red_and_a_running_target_says_so() {
        let r = Rec::oom_scenario();
        let mut app = App::new(Limits::default());
        for e in r.ev.iter().take(5) {
            app.on_event(e);
        }
        let buf = render(&app, 80, 24);
        let text = screen(&buf);
        let (x, y) = find(&buf, "lost 0").unwrap_or_else(|| panic!("{text}"));
        assert_ne!(buf[(x, y)].fg, Color::Red);
        assert!(text.contains(" running "), "{text}");
        assert!(text.contains("none yet"), "{text}");
        assert!(!text.contains("OOM"), "{text}");
    }

    #[test]
    fn the_filter_changes_what_the_list_shows() {
        let mut app = oom_app();
        press(&mut app, KeyCode::Char('f'));
        press(&mut app, KeyCode::Char('f'));
        press(&mut app, KeyCode::Char('f'));
        press(&mut app, KeyCode::Char('f'));
        let buf = render(&app, 120, 40);
        let text = screen(&buf);
        let a = layout(buf.area).unwrap();
        let list: Vec<&str> = text.lines().skip(usize::from(a.events.y)).take(usize::from(a.events.height)).collect();
        assert!(list[0].contains("filter tcp") && list[0].contains("3 of 20"), "{list:#?}");
        assert!(list[1].contains("tcp_state") && list[2].contains("tcp_reset") && list[3].contains("tcp_reset"), "{list:#?}");
        assert!(list[4].trim().is_empty(), "{list:#?}");
    }

    #[test]
    fn a_paused_view_shows_no_new_events_until_resumed() {
        let r = Rec::oom_scenario();
        let mut app = App::new(Limits::default());
        for e in r.ev.iter().take(8) {
            app.on_event(e);
        }
        press(&mut app, KeyCode::Char(' '));
        for e in r.ev.iter().skip(8) {
            app.on_event(e);
        }
        let text = screen(&render(&app, 120, 40));
        assert!(text.contains("PAUSED"), "{text}");
        assert!(!text.contains("oom_kill") && !text.contains("OOM SIGKILL"), "{text}");
        assert!(text.contains("killed by SIGKILL"), "the header stays live: {text}");
        press(&mut app, KeyCode::Char(' '));
        let text = screen(&render(&app, 120, 40));
        assert!(!text.contains("PAUSED") && text.contains("oom_kill") && text.contains("OOM SIGKILL"), "{text}");
    }

    #[test]
    fn enter_pops_up_the_json_and_question_mark_the_help() {
        let mut app = oom_app();
        press(&mut app, KeyCode::Up);
        press(&mut app, KeyCode::Enter);
        let text = screen(&render(&app, 80, 24));
        assert!(text.contains("event #17 tcp_reset"), "{text}");
        for field in [
            "\"daddr\": \"127.0.0.1:51235\"",
            "\"kind\": \"tcp_reset\"",
            "\"direction\": \"sent\"",
            "\"reason\": \"TCP_ABORT_ON_CLOSE\"",
            "\"attributed_by\"",
        ] {
            assert!(text.contains(field), "{field} in\n{text}");
        }
        press(&mut app, KeyCode::Esc);
        press(&mut app, KeyCode::Char('?'));
        let text = screen(&render(&app, 80, 24));
        assert!(text.contains(" keys ") && text.contains("pause / resume the view"), "{text}");
        press(&mut app, KeyCode::Esc);
        assert!(!screen(&render(&app, 80, 24)).contains("pause / resume the view"));
    }

    #[test]
    fn many_verdicts_get_a_line_each_the_newest_kept() {
        let mut app = oom_app();
        let mut v = vec![crate::tui::testdata::oom_verdict()];
        v.extend((1..=6).map(unexplained_verdict));
        app.set_verdicts(v);
        let text = screen(&render(&app, 80, 24));
        assert!(text.contains("verdicts (7, last 4 shown)"), "{text}");
        assert!(text.contains("reset number 6 has") && text.contains("reset number 3 has"), "{text}");
        assert!(!text.contains("reset number 2 has"), "{text}");
    }

    #[test]
    fn tiny_odd_and_huge_terminals_do_not_panic() {
        let mut app = oom_app();
        for (w, h) in [(1, 1), (20, 5), (39, 11), (40, 12), (41, 13), (60, 20), (80, 24), (300, 100)] {
            let text = screen(&render(&app, w, h));
            if w < MIN_WIDTH || h < MIN_HEIGHT {
                assert!(w < 20 || text.contains("terminal too small"), "{w}x{h}: {text}");
            }
            press(&mut app, KeyCode::Enter);
            let _ = render(&app, w, h);
            press(&mut app, KeyCode::Esc);
            press(&mut app, KeyCode::Char('?'));
            let _ = render(&app, w, h);
            press(&mut app, KeyCode::Esc);
        }
        // Nothing at all yet, and a trace with junk values.
        let empty = App::new(Limits::default());
        assert!(screen(&render(&empty, 80, 24)).contains("waiting for the trace to start"));
        let mut junk = App::new(Limits::default());
        let mut r = Rec::oom_scenario();
        r.ev[3].ts_ns = u64::MAX;
        r.ev[5].comm = "\u{1b}[31mevil\n\t".into();
        r.sample(1, u64::MAX, u64::MAX, Some(0), Some(u64::MAX));
        for e in &r.ev {
            junk.on_event(e);
        }
        let text = screen(&render(&junk, 80, 24));
        assert!(!text.contains('\u{1b}'), "{text}");
    }
}
