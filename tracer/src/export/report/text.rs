//! The report for a terminal: underlined headings, aligned columns.
use std::fmt::Write as _;

use super::{
    label,
    prose::{format_bytes, rel, time_of_day, verdict_scope, who},
    Report,
};

fn heading(out: &mut String, title: &str, underline: char) {
    let _ = writeln!(out, "{title}");
    let _ = writeln!(out, "{}", underline.to_string().repeat(title.chars().count()));
}

/// Rows as aligned columns, indented.
fn columns(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..n).map(|i| rows.iter().filter_map(|r| r.get(i)).map(|c| c.chars().count()).max().unwrap_or(0)).collect();
    for row in rows {
        let mut line = String::from(indent);
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

pub fn render_text(r: &Report) -> String {
    let t0 = r.span.start_ns;
    let mut out = String::new();
    heading(&mut out, &r.title(), '=');
    columns(
        &mut out,
        "",
        &[
            vec!["Trace".into(), r.trace_line()],
            vec!["Target".into(), r.target_line()],
            vec!["Events".into(), r.events_line()],
        ],
    );

    out.push('\n');
    heading(&mut out, "Summary", '-');
    for (i, line) in r.summary.iter().enumerate() {
        if r.verdicts.is_empty() {
            let _ = writeln!(out, "{line}");
        } else {
            let _ = writeln!(out, "{}. {line}", i + 1);
        }
    }

    for (i, v) in r.verdicts.iter().enumerate() {
        out.push('\n');
        heading(
            &mut out,
            &format!("Verdict {}: {} ({} confidence)", i + 1, label(&v.cause), label(&v.confidence)),
            '-',
        );
        let _ = writeln!(out, "{}", v.summary);
        if let Some(a) = &v.action {
            let _ = writeln!(out, "What to do: {a}");
        }
        let _ = writeln!(out, "{}", verdict_scope(v, t0));
        if !v.chain.is_empty() {
            out.push_str("\nChain:\n");
            let rows: Vec<Vec<String>> = v
                .chain
                .iter()
                .map(|l| vec![time_of_day(l.ts_ns), rel(l.ts_ns, t0), l.kind.clone(), l.what.clone()])
                .collect();
            columns(&mut out, "  ", &rows);
        }
        if !v.evidence.is_empty() {
            out.push_str("\nEvidence:\n");
            for e in &v.evidence {
                let _ = writeln!(out, "  - {e}");
            }
        }
    }

    out.push('\n');
    heading(&mut out, "Memory", '-');
    let m = &r.memory;
    let _ = writeln!(out, "{}", r.memory_source_line());
    if !m.processes.is_empty() {
        out.push_str("Peak RSS per process:\n");
        let rows: Vec<Vec<String>> =
            m.processes.iter().map(|p| vec![who(Some(p.pid), Some(&p.comm)), r.process_peak_line(p)]).collect();
        columns(&mut out, "  ", &rows);
    }
    for f in r.memory_facts(|c| format!("Memory cgroup {} (v{})", c.path, c.version)) {
        let _ = writeln!(out, "{}: {}", f[0], f[1]);
    }
    if !m.file_mappings.is_empty() {
        out.push_str("Largest file mappings:\n");
        let rows: Vec<Vec<String>> = m
            .file_mappings
            .iter()
            .map(|f| {
                vec![
                    format_bytes(f.bytes),
                    f.mmaps_cell(),
                    format!("pid {}", f.pid),
                    format!("from {}", rel(f.first_ns, t0)),
                    f.path.clone(),
                ]
            })
            .collect();
        columns(&mut out, "  ", &rows);
    }

    out.push('\n');
    heading(&mut out, "Events", '-');
    let _ = writeln!(out, "{}", r.events_line());
    let rows: Vec<Vec<String>> = r.events.by_kind.iter().map(|(k, n)| vec![k.clone(), n.to_string()]).collect();
    columns(&mut out, "  ", &rows);

    out.push('\n');
    heading(&mut out, "Environment", '-');
    let rows: Vec<Vec<String>> = r.environment_rows().into_iter().map(|(k, v)| vec![k.to_string(), v]).collect();
    columns(&mut out, "", &rows);

    if !r.problems.is_empty() {
        out.push('\n');
        heading(&mut out, "Trace problems", '-');
        for p in &r.problems {
            let _ = writeln!(out, "line {}: {}", p.line, p.message);
        }
    }
    out
}
