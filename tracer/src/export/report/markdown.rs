//! The report for an incident ticket: markdown headings and tables.
use std::fmt::Write as _;

use super::{
    label,
    prose::{format_bytes, rel, time_of_day, verdict_scope, who},
    Report,
};

/// A table cell: no line breaks, no column separators.
fn md(cell: &str) -> String {
    cell.replace('\\', "\\\\").replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn md_table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(out, "| {} |", header.join(" | "));
    let _ = writeln!(out, "|{}|", header.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for row in rows {
        let cells: Vec<String> = row.iter().map(|c| md(c)).collect();
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
}

pub fn render_markdown(r: &Report) -> String {
    let t0 = r.span.start_ns;
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", r.title());
    let _ = writeln!(out, "- **Trace:** {}", r.trace_line());
    let _ = writeln!(out, "- **Target:** {}", r.target_line());
    let _ = writeln!(out, "- **Events:** {}", r.events_line());

    out.push_str("\n## Summary\n\n");
    for (i, line) in r.summary.iter().enumerate() {
        if r.verdicts.is_empty() {
            let _ = writeln!(out, "{line}");
        } else {
            let _ = writeln!(out, "{}. {line}", i + 1);
        }
    }

    for (i, v) in r.verdicts.iter().enumerate() {
        let _ = writeln!(out, "\n## Verdict {}: {} ({} confidence)\n", i + 1, label(&v.cause), label(&v.confidence));
        let _ = writeln!(out, "{}\n", v.summary);
        if let Some(a) = &v.action {
            let _ = writeln!(out, "**What to do:** {a}\n");
        }
        let _ = writeln!(out, "{}", verdict_scope(v, t0));
        if !v.chain.is_empty() {
            out.push_str("\n### Chain\n\n");
            let rows: Vec<Vec<String>> = v
                .chain
                .iter()
                .map(|l| vec![time_of_day(l.ts_ns), rel(l.ts_ns, t0), format!("`{}`", l.kind), l.what.clone()])
                .collect();
            md_table(&mut out, &["time (UTC)", "since start", "event", "what"], &rows);
        }
        if !v.evidence.is_empty() {
            out.push_str("\n### Evidence\n\n");
            for e in &v.evidence {
                let _ = writeln!(out, "- {}", e.replace('\n', " "));
            }
        }
    }

    out.push_str("\n## Memory\n\n");
    let m = &r.memory;
    let _ = writeln!(out, "{}", r.memory_source_line());
    if !m.processes.is_empty() {
        out.push('\n');
        let rows: Vec<Vec<String>> = m
            .processes
            .iter()
            .map(|p| {
                let members: Vec<String> = p.members.iter().map(|(k, v)| format!("{k} {}", format_bytes(*v))).collect();
                vec![
                    who(Some(p.pid), Some(&p.comm)),
                    format_bytes(p.peak_rss_bytes),
                    rel(p.at_ns, t0),
                    format_bytes(p.first_rss_bytes),
                    if members.is_empty() { "-".into() } else { members.join(", ") },
                ]
            })
            .collect();
        md_table(&mut out, &["process", "peak RSS", "at", "first seen", "members at peak"], &rows);
    }
    let facts = r.memory_facts(|c| format!("memory cgroup `{}` (v{})", c.path, c.version));
    if !facts.is_empty() {
        out.push('\n');
        md_table(&mut out, &["what", "peak / low"], &facts);
    }
    if !m.file_mappings.is_empty() {
        out.push_str("\n### Largest file mappings\n\n");
        let rows: Vec<Vec<String>> = m
            .file_mappings
            .iter()
            .map(|f| {
                vec![
                    format!("`{}`", f.path),
                    format_bytes(f.bytes),
                    f.mmaps_cell(),
                    f.pid.to_string(),
                    rel(f.first_ns, t0),
                ]
            })
            .collect();
        md_table(&mut out, &["file", "mapped", "mmaps", "pid", "first at"], &rows);
    }

    out.push_str("\n## Events\n\n");
    let _ = writeln!(out, "{}\n", r.events_line());
    let rows: Vec<Vec<String>> = r.events.by_kind.iter().map(|(k, n)| vec![format!("`{k}`"), n.to_string()]).collect();
    md_table(&mut out, &["kind", "count"], &rows);

    out.push_str("\n## Environment\n\n");
    let rows: Vec<Vec<String>> = r.environment_rows().into_iter().map(|(k, v)| vec![k.to_string(), v]).collect();
    md_table(&mut out, &["setting", "value"], &rows);

    if !r.problems.is_empty() {
        out.push_str("\n## Trace problems\n\n");
        for p in &r.problems {
            let _ = writeln!(out, "- line {}: {}", p.line, p.message.replace('\n', " "));
        }
    }
    out
}
