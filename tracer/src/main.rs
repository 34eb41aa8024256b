//! `tracer`: explains why a socket reset.
use std::{io::Write as _, process::ExitCode};

use anyhow::Context as _;
use clap::Parser;

use tracer::{
    capture::{target, Capture, CaptureError, CaptureOptions},
    cli::{Cli, Command, ReportArgs, ReportFormat, TraceArgs},
    diagnose,
    event::{Event, EventKind},
    export::{jsonl::JsonlWriter, perfetto, reader, report},
    live::{self, LogWriter, Plan},
    session::{self, SessionOptions},
    tui::{self, TuiExit, TuiOptions},
};

/// A line on stderr that never panics (the terminal may be gone after a SIGHUP).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(verbose: bool) {
    // Verbose: our own debug logs and the kernel programs' aya-log messages, not the
    // loader's relocation chatter.
    let default = if verbose { "warn,tracer=debug,tracer_ebpf=trace" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TRACER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Standard error, except while the live view is up (then held and printed after it).
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(LogWriter).try_init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match (cli.command, cli.pid) {
        (Some(Command::Run { .. }), Some(_)) => {
            anyhow::bail!("`--pid` and `run` exclude each other: trace an existing process with `--pid PID`, or start one with `run -- CMD`")
        }
        (Some(Command::Run { trace, cmd }), None) => trace_command(&trace, &cmd),
        // Before anything that needs privileges: a recorded trace is read as any user.
        (Some(Command::Report(_)), Some(_)) => {
            anyhow::bail!("`--pid` and `report` exclude each other: `tracer report TRACE.jsonl` reads a recorded trace")
        }
        (Some(Command::Report(args)), None) => report_command(&args),
        // Also without privileges: the doctor says what root would add.
        (Some(Command::Doctor(_)), Some(pid)) => {
            anyhow::bail!("`--pid` goes after `doctor`: `tracer doctor --pid {pid}`")
        }
        (Some(Command::Doctor(args)), None) => tracer::doctor::run(&args),
        (None, Some(pid)) => trace_pid(&cli.trace, pid),
        (None, None) => {
            anyhow::bail!("nothing to trace: give `--pid PID`, or `run -- CMD ARGS...` to start one (see `tracer --help`)")
        }
    }
}

fn capture_options(args: &TraceArgs) -> CaptureOptions {
    CaptureOptions {
        follow_children: args.follow_children,
        rss_threshold_bytes: args.rss_threshold,
        probes: args.probe_set(),
        ring_buffer_bytes: args.ring_buffer as u32,
    }
}

/// The live view or plain lines, and where the trace goes (see `live::plan`).
fn output_plan(args: &TraceArgs, label: &str) -> Plan {
    live::plan(args.jsonl.as_deref(), tui::should_use_tui(args.no_tui), || {
        live::default_trace_path(std::path::Path::new(""), label)
    })
}

fn trace_pid(args: &TraceArgs, pid: u32) -> anyhow::Result<ExitCode> {
    if !target::process_exists(pid) {
        return Err(CaptureError::NoSuchProcess(pid).into());
    }
    let plan = output_plan(args, &pid.to_string());
    let mut capture = Capture::load(&capture_options(args))?;
    capture.add_process(pid)?;
    if args.follow_children {
        for child in target::descendants(pid) {
            capture.add_process(child)?;
        }
    }
    if !target::process_exists(pid) {
        return Err(CaptureError::ExitedDuringAttach(pid).into());
    }
    let start = start_event(&capture, pid, args);
    stream(capture, pid, None, start, args, &plan, None)
}

fn trace_command(args: &TraceArgs, cmd: &[String]) -> anyhow::Result<ExitCode> {
    let plan = output_plan(args, &live::program_label(&cmd[0]));
    let mut capture = Capture::load(&capture_options(args))?;
    // The live view owns the terminal: the command's output goes to a file next to the trace.
    let output_log = if plan.tui { plan.trace_file().map(live::output_log_path) } else { None };
    let redirect = match &output_log {
        Some(log) => Some(target::Redirect::to_log(log).with_context(|| {
            format!("cannot write the command's output to {} (next to the trace; --no-tui leaves it on the terminal)", log.display())
        })?),
        None => None,
    };
    let held = target::HeldCommand::spawn_with(cmd, redirect.as_ref())?;
    drop(redirect);
    let pid = held.pid;
    capture.add_process(pid)?;
    let mut start = start_event(&capture, pid, args);
    if let EventKind::TraceStart { target_cmdline, .. } = &mut start.kind {
        *target_cmdline = cmd.join(" ");
    }
    let child = held.release(&cmd[0])?;
    stream(capture, pid, Some(child), start, args, &plan, output_log.as_deref())
}

fn stream(
    capture: Capture,
    pid: u32,
    child: Option<target::StartedCommand>,
    start: Event,
    args: &TraceArgs,
    plan: &Plan,
    output_log: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let jsonl = plan.jsonl_arg();
    let mut out = JsonlWriter::create(&jsonl).with_context(|| format!("cannot write the trace to {jsonl}"))?;
    // Fail now rather than after the trace: the Perfetto file is written at the end.
    if let Some(path) = &args.perfetto {
        std::fs::File::create(path).with_context(|| {
            format!("cannot write the Perfetto trace to {}: give a writable path to --perfetto", path.display())
        })?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let opts = SessionOptions {
        duration: args.duration,
        grace: args.grace,
        sample_interval: Some(args.sample_interval).filter(|d| !d.is_zero()),
        follow_children: args.follow_children,
    };
    if let EventKind::TraceStart { probes, target_cmdline, .. } = &start.kind {
        let stops = if plan.tui { "the live view starts (q quits)" } else { "Ctrl-C stops" };
        eprintln!("tracer: tracing pid {pid} ({target_cmdline}) with {} probes; {stops}", probes.len());
    }
    // With the live view, everything below is printed after the terminal is restored.
    let (summary, tui_exit) = if plan.tui {
        let outcome =
            runtime.block_on(live::run_with_tui(capture, pid, child, start, &opts, &mut out, TuiOptions::default()));
        (outcome.session, Some(outcome.tui))
    } else {
        (runtime.block_on(session::run(capture, pid, child, start, &opts, &mut out)), None)
    };
    let summary = summary?;
    say!("tracer: {} events from pid {pid}, {} lost, stopped: {}", summary.events, summary.lost, summary.reason.as_str());
    let events = summary.timeline.events();
    if summary.timeline.dropped() > 0 {
        say!(
            "tracer: {} memory syscalls were left out of the in-memory timeline (diagnosis, --perfetto); the JSON-lines trace has them all",
            summary.timeline.dropped()
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
        let mut trace = perfetto::build(events, &summary.verdicts);
        trace.other_data.insert("timeline_dropped_events".into(), summary.timeline.dropped().into());
        perfetto::write_file(path, &trace)?;
        say!("tracer: Perfetto trace written to {} (open it in ui.perfetto.dev)", path.display());
    }
    if let (true, Some(path)) = (plan.tui || plan.named_by_us, plan.trace_file()) {
        say!("tracer: trace written to {} (`tracer report {}` explains it again)", path.display(), path.display());
    }
    if let Some(log) = output_log {
        say!("tracer: the command's stdout and stderr are in {}", log.display());
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

/// Most unreadable lines named one by one; the rest are counted.
const PROBLEMS_SHOWN: usize = 20;

/// `tracer report`: reads a recorded trace, diagnoses it and renders the report. Needs no
/// privileges: nothing here touches eBPF or tracefs.
fn report_command(args: &ReportArgs) -> anyhow::Result<ExitCode> {
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
        perfetto::write_file(path, &perfetto::build(&trace.events, &verdicts))?;
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

fn start_event(capture: &Capture, pid: u32, args: &TraceArgs) -> Event {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
    Event {
        ts_ns: tracer::capture::decode::clock_ns(libc::CLOCK_REALTIME),
        pid,
        tid: pid,
        comm,
        kind: EventKind::TraceStart {
            target_pid: pid,
            target_cmdline: target::cmdline(pid),
            follow_children: args.follow_children,
            kernel,
            probes: capture.attached.clone(),
            missing_probes: capture.missing.clone(),
            rss_threshold_bytes: capture.rss_threshold_bytes,
        },
    }
}
