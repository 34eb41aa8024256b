//! The memory chart: RSS of the target, memcg usage and its limit, GPU memory, against
//! seconds since the trace start, with markers (OOM kills, fatal signals, the exit,
//! resets) as labelled vertical lines on the same axis.
//!
//! Drawn on a ratatui `Canvas` rather than a `Chart` so that marker labels can be put at
//! the exact column of their line; the axes' labels are laid out here.
use ratatui::{
    layout::Rect,
    style::{Color, Modifier, Style},
    symbols::Marker as Dots,
    text::{Line as TextLine, Span},
    widgets::{
        canvas::{Canvas, Line},
        Paragraph,
    },
    Frame,
};

use super::app::View;
use super::detail::{bytes, duration};
use super::series::{MarkerKind, Series};

pub const RSS: Color = Color::Cyan;
pub const MEMCG: Color = Color::Blue;
pub const LIMIT: Color = Color::LightRed;
pub const GPU: Color = Color::Green;
/// The forecast's line from memory now to the limit.
pub const PROJECTION: Color = Color::Yellow;

/// Width of the y-axis labels.
const GUTTER: u16 = 6;

fn marker_color(kind: &MarkerKind) -> Color {
    match kind {
        MarkerKind::Oom | MarkerKind::Exit => Color::Red,
        MarkerKind::Signal(_) => Color::Magenta,
        MarkerKind::Rst => Color::Yellow,
        MarkerKind::Restart => Color::Green,
    }
}

/// The legend line: what each colour is, with its latest value.
fn legend(view: &View) -> TextLine<'static> {
    let mut spans = vec![Span::styled(" memory ", Style::new().add_modifier(Modifier::BOLD))];
    let mut item = |color: Color, glyph: &str, name: &str, value: Option<String>| {
        spans.push(Span::styled(format!(" {glyph}"), Style::new().fg(color)));
        spans.push(Span::raw(match value {
            Some(v) => format!(" {name} {v}"),
            None => format!(" {name}"),
        }));
    };
    let last = |s: &Series| s.last().map(|p| bytes(p.1 as u64));
    if !view.rss.is_empty() {
        item(RSS, "━", "rss", last(&view.rss));
    }
    if !view.memcg.is_empty() {
        item(MEMCG, "━", "memcg", last(&view.memcg));
    }
    if let Some(l) = view.limit {
        item(LIMIT, "─", "limit", Some(bytes(l)));
    }
    if !view.gpu.is_empty() {
        item(GPU, "━", "gpu", last(&view.gpu));
    }
    if let Some(p) = &view.projection {
        item(PROJECTION, "╱", "limit in", Some(duration(p[2] - p[0])));
    }
    TextLine::from(spans)
}

/// The series as line segments, at most one point per braille column (its peak).
fn segments(s: &Series, span: f64, bins: usize) -> Vec<(f64, f64)> {
    let mut out: Vec<(usize, f64, f64)> = Vec::new();
    let bins = bins.max(2);
    for &(x, y) in s.points() {
        let b = ((x / span).clamp(0.0, 1.0) * (bins - 1) as f64).round() as usize;
        match out.last_mut() {
            Some(last) if last.0 == b => {
                last.2 = last.2.max(y);
                last.1 = x;
            }
            _ => out.push((b, x, y)),
        }
    }
    // The newest value is drawn as it is (a drop to 0 at the exit must show).
    if let (Some(&(bin, _, peak)), Some(p)) = (out.last(), s.last()) {
        if peak != p.1 {
            out.push((bin, p.0, p.1));
        }
    }
    out.into_iter().map(|(_, x, y)| (x, y)).collect()
}

/// A group of markers drawn in one column: its label and colour.
struct Group {
    col: u16,
    x: f64,
    kinds: Vec<(MarkerKind, u64)>,
}

impl Group {
    fn label(&self) -> String {
        let mut kinds = self.kinds.clone();
        kinds.sort_by(|a, b| a.0.cmp(&b.0));
        kinds.iter().map(|(k, n)| if *n > 1 { format!("{}×{n}", k.label()) } else { k.label().to_string() }).collect::<Vec<_>>().join(" ")
    }

    fn top(&self) -> &MarkerKind {
        self.kinds.iter().map(|(k, _)| k).min().expect("a group has a marker")
    }
}

pub fn draw(frame: &mut Frame, area: Rect, view: &View) {
    if area.height == 0 || area.width == 0 {
        return;
    }
    let title = Rect { height: 1, ..area };
    frame.render_widget(Paragraph::new(legend(view)).style(Style::new().bg(Color::Black)), title);
    if area.height < 4 || area.width < GUTTER + 10 {
        return;
    }
    let plot = Rect { x: area.x + GUTTER, y: area.y + 1, width: area.width - GUTTER, height: area.height - 2 };
    let xaxis = Rect { x: plot.x, y: plot.bottom(), width: plot.width, height: 1 };

    // A forecast's projection runs past the newest event, to where it meets the limit.
    let span = view.projection.map_or(view.end_x, |p| view.end_x.max(p[2])).max(1.0);
    let ymax = [view.rss.max_y(), view.memcg.max_y(), view.gpu.max_y(), view.limit.unwrap_or(0) as f64].into_iter().fold(0.0, f64::max);
    let empty = ymax <= 0.0;
    let ymax = if empty { 1.0 } else { ymax * 1.1 };

    // Marker groups, one per column (a kill, its signal, the exit and the resets often
    // land within milliseconds).
    let col_of = |x: f64| ((x / span).clamp(0.0, 1.0) * f64::from(plot.width - 1)) as u16;
    let mut groups: Vec<Group> = Vec::new();
    for m in view.markers.iter() {
        let col = col_of(m.x);
        match groups.last_mut() {
            Some(g) if col.abs_diff(g.col) <= 1 => match g.kinds.iter_mut().find(|(k, _)| *k == m.kind) {
                Some((_, n)) => *n += m.count,
                None => g.kinds.push((m.kind.clone(), m.count)),
            },
            _ => groups.push(Group { col, x: m.x, kinds: vec![(m.kind.clone(), m.count)] }),
        }
    }

    let bins = usize::from(plot.width) * 2;
    let lines: Vec<(Vec<(f64, f64)>, Color)> = [(&view.gpu, GPU), (&view.memcg, MEMCG), (&view.rss, RSS)]
        .into_iter()
        .filter(|(s, _)| !s.is_empty())
        .map(|(s, c)| (segments(s, span, bins), c))
        .collect();
    let canvas = Canvas::default().marker(Dots::Braille).x_bounds([0.0, span]).y_bounds([0.0, ymax]).paint(|ctx| {
        for g in &groups {
            ctx.draw(&Line { x1: g.x, y1: 0.0, x2: g.x, y2: ymax, color: marker_color(g.top()) });
        }
        ctx.layer();
        if let Some(l) = view.limit {
            ctx.draw(&Line { x1: 0.0, y1: l as f64, x2: span, y2: l as f64, color: LIMIT });
        }
        if let Some([x1, y1, x2, y2]) = view.projection {
            ctx.draw(&Line { x1, y1, x2, y2, color: PROJECTION });
        }
        for (pts, color) in &lines {
            if let [only] = pts.as_slice() {
                ctx.draw(&Line { x1: only.0, y1: only.1, x2: only.0, y2: only.1, color: *color });
            }
            for w in pts.windows(2) {
                ctx.draw(&Line { x1: w[0].0, y1: w[0].1, x2: w[1].0, y2: w[1].1, color: *color });
            }
        }
    });
    frame.render_widget(canvas, plot);

    let buf = frame.buffer_mut();
    if empty {
        let text = "no memory data yet";
        let w = (text.len() as u16).min(plot.width);
        buf.set_stringn(plot.x + (plot.width - w) / 2, plot.y + plot.height / 2, text, usize::from(w), Style::new().fg(Color::DarkGray));
    }

    // Marker labels on the top rows, the most important first, never overlapping.
    groups.sort_by(|a, b| a.top().cmp(b.top()).then(a.col.cmp(&b.col)));
    let rows = plot.height.min(2);
    let mut taken: Vec<Vec<(u16, u16)>> = vec![Vec::new(); usize::from(rows)];
    for g in &groups {
        let label = g.label();
        let w = (label.chars().count() as u16).min(plot.width);
        let start = g.col.min(plot.width - w);
        let end = start + w;
        let Some(row) = (0..rows).find(|&r| taken[usize::from(r)].iter().all(|&(a, b)| end < a || b < start)) else {
            continue;
        };
        taken[usize::from(row)].push((start, end));
        let style = Style::new().fg(marker_color(g.top())).add_modifier(Modifier::BOLD);
        buf.set_stringn(plot.x + start, plot.y + row, &label, usize::from(w), style);
    }

    // Y labels: top, middle, bottom of the plot.
    let axis = Style::new().fg(Color::DarkGray);
    let last_row = plot.height - 1;
    let mut ys = vec![0, last_row];
    if plot.height >= 5 {
        ys.push(last_row / 2);
    }
    for r in ys {
        let v = if empty { 0.0 } else { ymax * f64::from(last_row - r) / f64::from(last_row.max(1)) };
        let text = if v <= 0.0 { "0".to_string() } else { bytes(v as u64) };
        let text = format!("{text:>w$}", w = usize::from(GUTTER - 1));
        buf.set_stringn(area.x, plot.y + r, &text, usize::from(GUTTER - 1), axis);
    }

    // X labels: 0, the middle and the end of the time axis.
    if xaxis.bottom() <= area.bottom() {
        buf.set_stringn(xaxis.x, xaxis.y, "0s", usize::from(xaxis.width), axis);
        let end = duration(span);
        let w = end.len() as u16;
        if w + 3 < xaxis.width {
            buf.set_stringn(xaxis.right() - w, xaxis.y, &end, usize::from(w), axis);
        }
        let mid = duration(span / 2.0);
        let mw = mid.len() as u16;
        if xaxis.width >= 30 {
            buf.set_stringn(xaxis.x + xaxis.width / 2 - mw / 2, xaxis.y, &mid, usize::from(mw), axis);
        }
    }
}
