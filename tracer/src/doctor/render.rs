//! The report as a table for a terminal (aligned, wrapped to fit, coloured only on a
//! TTY) or as JSON for programs.
use super::{Report, Status};

/// The table fits this many columns.
pub const WIDTH: usize = 100;
const GAP: &str = "  ";
const STATUS_WIDTH: usize = 7;

/// `{"checks": [...], "summary": {...}}`, pretty-printed, with a final newline.
pub fn render_json(report: &Report) -> String {
    let mut s = serde_json::to_string_pretty(report).expect("a report is plain data");
    s.push('\n');
    s
}

/// Splits `text` into lines of at most `width` characters, at spaces where it can;
/// a word longer than a line is cut.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut len = 0;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        while !word.is_empty() {
            let room = if len == 0 { width } else { width.saturating_sub(len + 1) };
            if word.len() <= room {
                if len > 0 {
                    line.push(' ');
                    len += 1;
                }
                line.extend(word.iter());
                len += word.len();
                word.clear();
            } else if len > 0 {
                lines.push(std::mem::take(&mut line));
                len = 0;
            } else {
                let rest = word.split_off(width);
                lines.push(word.iter().collect());
                word = rest;
            }
        }
    }
    if len > 0 || lines.is_empty() {
        lines.push(line);
    }
    lines
}

fn paint(status: Status, text: &str, color: bool) -> String {
    if !color {
        return text.to_string();
    }
    let code = match status {
        Status::Ok => "32",
        Status::Info => "36",
        Status::Skipped => "2",
        Status::Warn => "33",
        Status::Fail => "1;31",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// Columns CHECK, STATUS, FINDING, FIX, `width` wide in all; FINDING and FIX wrap.
pub fn render_table(report: &Report, color: bool, width: usize) -> String {
    let name_w = report.checks.iter().map(|c| c.name.chars().count()).max().unwrap_or(5).clamp(5, 22);
    // FINDING takes what FIX does not need, FIX at most 45% of it (none without fixes).
    let rest = width.saturating_sub(name_w + STATUS_WIDTH + 2 * GAP.len()).max(24);
    let longest_fix = report.checks.iter().filter_map(|c| c.fix.as_deref()).map(|f| f.chars().count()).max();
    let fix_w = longest_fix.map_or(0, |l| l.min(rest * 45 / 100).max(10));
    let finding_w = if fix_w == 0 { rest } else { rest - fix_w - GAP.len() };
    let mut out = String::new();
    let header = if fix_w == 0 {
        format!("{:name_w$}{GAP}{:STATUS_WIDTH$}{GAP}FINDING", "CHECK", "STATUS")
    } else {
        format!("{:name_w$}{GAP}{:STATUS_WIDTH$}{GAP}{:finding_w$}{GAP}FIX", "CHECK", "STATUS", "FINDING")
    };
    out.push_str(&if color { format!("\x1b[1m{header}\x1b[0m") } else { header });
    out.push('\n');
    for c in &report.checks {
        let names = wrap(&c.name, name_w);
        // A row without a fix lends its FIX cell to FINDING.
        let findings = wrap(&c.finding, if c.fix.is_some() || fix_w == 0 { finding_w } else { rest });
        let fixes = c.fix.as_deref().map(|f| wrap(f, fix_w.max(1))).unwrap_or_default();
        let rows = names.len().max(findings.len()).max(fixes.len());
        for i in 0..rows {
            let cell = |v: &Vec<String>| v.get(i).cloned().unwrap_or_default();
            let status = if i == 0 {
                let s = c.status.as_str();
                format!("{}{}", paint(c.status, s, color), " ".repeat(STATUS_WIDTH - s.len()))
            } else {
                " ".repeat(STATUS_WIDTH)
            };
            let fix = cell(&fixes);
            let line = if fix.is_empty() {
                format!("{:name_w$}{GAP}{status}{GAP}{}", cell(&names), cell(&findings))
            } else {
                format!("{:name_w$}{GAP}{status}{GAP}{:finding_w$}{GAP}{fix}", cell(&names), cell(&findings))
            };
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out.push('\n');
    for line in summary_lines(report) {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The lines under the table: counts, the exit status, and what root would add.
pub fn summary_lines(report: &Report) -> Vec<String> {
    let s = &report.summary;
    let counts = format!("{} ok, {} info, {} warn, {} fail, {} skipped", s.ok, s.info, s.warn, s.fail, s.skipped);
    let mut lines = vec![if s.fail == 0 {
        format!("{counts}: nothing blocks tracing here (exit status 0)")
    } else {
        format!(
            "{counts}: {} problem{} to fix first, see FIX (exit status 1)",
            s.fail,
            if s.fail == 1 { "" } else { "s" }
        )
    }];
    if !s.root {
        lines.push(format!(
            "not root: {} check{} could not look; `sudo tracer doctor` also reads tracefs and the tracepoints",
            s.skipped,
            if s.skipped == 1 { "" } else { "s" }
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Check;

    fn report() -> Report {
        Report::new(
            vec![
                Check::ok("kernel", "Linux 6.18.44-fc-v657 (5.8+ needed for the BPF ring buffer)"),
                Check::warn(
                    "tracefs",
                    "tracefs is not mounted",
                    "mount -t tracefs nodev /sys/kernel/tracing (tracer mounts it itself when root)",
                ),
                Check::fail(
                    "model.aya",
                    "model aya needs 8.68 GiB at f32 (8.27 GiB of weights + 5% working memory) but the memory cgroup \
                     allows 8.00 GiB (/sys/fs/cgroup/memory/translate)",
                    "raise memory.limit_in_bytes, --dtype bf16 (needs 4.34 GiB) or use a smaller model",
                ),
            ],
            false,
        )
    }

    #[test]
    fn wrapping_breaks_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("a bb ccc dddd", 6), vec!["a bb", "ccc", "dddd"]);
        assert_eq!(wrap("/sys/fs/cgroup/memory/x", 10), vec!["/sys/fs/cg", "roup/memor", "y/x"]);
        assert_eq!(wrap("", 10), vec![""]);
        assert_eq!(wrap("ab  cd", 2), vec!["ab", "cd"]);
    }

    #[test]
    fn table_fits_100_columns_with_aligned_status_and_no_colour_when_asked() {
        let text = render_table(&report(), false, WIDTH);
        assert!(!text.contains('\x1b'));
        for line in text.lines() {
            assert!(line.chars().count() <= WIDTH, "{} columns: {line}", line.chars().count());
        }
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("CHECK") && lines[0].contains("STATUS") && lines[0].ends_with("FIX"));
        let status_col = lines[0].find("STATUS").unwrap();
        for name in ["kernel", "tracefs", "model.aya"] {
            let line = lines.iter().find(|l| l.starts_with(name)).unwrap();
            assert!(
                ["ok", "warn", "fail"].iter().any(|s| line[status_col..].starts_with(s)),
                "status not aligned: {line}"
            );
        }
        // The fix column wraps: its words all appear, on several lines.
        let fix_col = lines[0].find("FIX").unwrap();
        let fix_text: Vec<&str> =
            lines.iter().skip(1).filter(|l| l.len() > fix_col).map(|l| l[fix_col..].trim()).collect();
        assert!(fix_text.join(" ").contains("(tracer mounts it itself when root)"), "{text}");
        assert!(text.contains("1 problem to fix first, see FIX (exit status 1)"), "{text}");
        assert!(text.contains("not root:"), "{text}");
    }

    #[test]
    fn rows_without_a_fix_use_the_fix_column_for_their_finding() {
        let r = Report::new(vec![Check::ok("kernel", "x ".repeat(60)), Check::warn("btf", "y ".repeat(30), "z")], true);
        let text = render_table(&r, false, WIDTH);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].ends_with("FIX"), "{text}");
        assert!(lines[1].starts_with("kernel") && lines[1].chars().count() > 80, "{text}");
        assert!(lines.iter().all(|l| l.chars().count() <= WIDTH), "{text}");
        let fix_col = lines[0].find("FIX").unwrap();
        let btf = lines.iter().find(|l| l.starts_with("btf")).unwrap();
        assert_eq!(&btf[fix_col..], "z", "{text}");
    }

    #[test]
    fn without_fixes_the_finding_takes_the_whole_width() {
        let r = Report::new(vec![Check::ok("kernel", "x ".repeat(60))], true);
        let text = render_table(&r, false, WIDTH);
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines[0].contains("FIX") && lines[0].ends_with("FINDING"), "{text}");
        assert!(lines[1].chars().count() > 80 && lines[1].chars().count() <= WIDTH, "{text}");
        assert!(!text.contains("not root"), "{text}");
    }

    #[test]
    fn colour_marks_statuses_and_keeps_alignment() {
        let text = render_table(&report(), true, WIDTH);
        assert!(text.contains("\x1b[1;31mfail\x1b[0m") && text.contains("\x1b[32mok\x1b[0m"));
        let plain = render_table(&report(), false, WIDTH);
        let stripped = text
            .replace("\x1b[1;31m", "")
            .replace("\x1b[32m", "")
            .replace("\x1b[33m", "")
            .replace("\x1b[1m", "")
            .replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn json_round_trips_with_every_field() {
        let r = report();
        let json = render_json(&r);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["checks"][1]["name"], "tracefs");
        assert_eq!(v["checks"][1]["status"], "warn");
        assert!(v["checks"][0]["fix"].is_null());
        assert_eq!(v["summary"]["exit_status"], 1);
        assert_eq!(v["summary"]["root"], false);
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
    }
}
