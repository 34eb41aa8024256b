//! `tracer report TRACE.jsonl`: reads a recorded trace, diagnoses it and renders the
//! report. Needs no privileges: nothing here touches eBPF or tracefs.
use std::{io::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, ValueEnum};

use crate::{
    diagnose,
    export::{perfetto, reader, report},
};

/// `tracer report TRACE.jsonl`.
#[derive(Debug, Args, Clone)]
pub struct ReportArgs {
    /// A trace written by `tracer --jsonl FILE`
    #[arg(value_name = "TRACE.jsonl")]
    pub trace: PathBuf,

    /// text for a terminal, markdown for an incident ticket, json for programs
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,

    /// Also write a Perfetto/Chrome trace (JSON) to FILE: open it in ui.perfetto.dev
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,

    /// Write the report to FILE instead of standard output
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Markdown,
    Json,
}

/// Most unreadable lines named one by one; the rest are counted.
const PROBLEMS_SHOWN: usize = 20;

/// `tracer report`: reads a recorded trace, diagnoses it and renders the report. Needs no
/// privileges: nothing here touches eBPF or tracefs.
pub fn run(args: &ReportArgs) -> anyhow::Result<ExitCode> {
    let trace = reader::read_trace_file(&args.trace)?;
    let name = args.trace.display().to_string();
    for p in trace.problems.iter().take(PROBLEMS_SHOWN) {
        eprintln!("tracer: warning: {name}:{}: {} (line skipped)", p.line, p.message);
    }
    if trace.problems.len() > PROBLEMS_SHOWN {
        eprintln!("tracer: warning: {name}: {} more unreadable lines skipped", trace.problems.len() - PROBLEMS_SHOWN);
    }
    let verdicts = diagnose::diagnose(&trace.events);
    if let Some(path) = &args.perfetto {
        perfetto::write(path, &trace.events, &verdicts, None)?;
    }
    let report = report::Report::build(&trace.events, verdicts, trace.problems, Some(name));
    let text = match args.format {
        ReportFormat::Text => report::render_text(&report),
        ReportFormat::Markdown => report::render_markdown(&report),
        ReportFormat::Json => report::render_json(&report).context("rendering the report as JSON")?,
    };
    match &args.out {
        Some(path) if path.as_os_str() != "-" => std::fs::write(path, text).with_context(|| {
            format!("cannot write the report to {}: give a writable path to --out", path.display())
        })?,
        _ => match std::io::stdout().lock().write_all(text.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(e).context("writing the report to standard output")
            }
            _ => {}
        },
    }
    Ok(ExitCode::SUCCESS)
}
