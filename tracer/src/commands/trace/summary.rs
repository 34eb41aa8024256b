//! What the trace command says once the session is over (after the live view restored the
//! terminal): counts, verdicts, where the files are.
use std::{io::Write as _, path::Path, process::ExitCode};

use super::{output::Plan, TraceArgs};
use crate::{
    diagnose,
    export::{perfetto, report},
    session::Summary,
    tui::TuiExit,
};

/// A line on stderr that never panics (the terminal may be gone after a SIGHUP).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// Prints the end of a session; the exit status of the command.
pub fn print(
    summary: &Summary,
    pid: u32,
    args: &TraceArgs,
    plan: &Plan,
    output_log: Option<&Path>,
    tui_exit: Option<anyhow::Result<TuiExit>>,
) -> anyhow::Result<ExitCode> {
    say!("tracer: {} events from pid {pid}, {} lost, stopped: {}", summary.events, summary.lost, summary.reason.as_str());
    let events = summary.timeline.events();
    if summary.timeline.dropped() > 0 {
        let kinds: Vec<String> = summary.timeline.dropped_by_kind().iter().map(|(kind, n)| format!("{n} {kind}")).collect();
        say!(
            "tracer: {} events were left out of the in-memory timeline (diagnosis, --perfetto) to bound its memory: {}; the JSON-lines trace has them all",
            summary.timeline.dropped(),
            kinds.join(", ")
        );
    }
    if summary.verdicts.is_empty() {
        for line in report::summary_lines(events, &[]) {
            say!("tracer: {line}");
        }
    }
    for (i, v) in summary.verdicts.iter().enumerate() {
        let _ = write!(std::io::stderr(), "tracer: verdict {}/{}: {}", i + 1, summary.verdicts.len(), diagnose::describe(v));
    }
    if let Some(path) = &args.perfetto {
        perfetto::write(path, events, &summary.verdicts, Some(summary.timeline.dropped()))?;
        say!("tracer: Perfetto trace written to {} (open it in ui.perfetto.dev)", path.display());
    }
    if let (true, Some(path)) = (plan.tui || plan.named_by_us, plan.trace_file()) {
        say!("tracer: trace written to {} (`tracer report {}` explains it again)", path.display(), path.display());
    }
    if let Some(log) = output_log {
        say!("tracer: the command's stdout and stderr are in {}", log.display());
    }
    if let Some(why) = &summary.failure {
        anyhow::bail!("{why}; the capture stopped there (the trace file has what was written before)");
    }
    match tui_exit {
        Some(Err(e)) => Err(e.context("the live view failed")),
        Some(Ok(TuiExit::Signal(sig))) => {
            say!("tracer: {sig} closed the live view");
            Ok(ExitCode::SUCCESS)
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}
