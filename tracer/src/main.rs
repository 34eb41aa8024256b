//! `tracer`: explains why a socket reset.
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

use tracer::{
    capture::{target, Capture, CaptureError, CaptureOptions},
    cli::{Cli, Command, TraceArgs},
    event::{Event, EventKind},
    export::jsonl::JsonlWriter,
    session::{self, SessionOptions},
};

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
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match (cli.command, cli.pid) {
        (Some(Command::Run { .. }), Some(_)) => {
            anyhow::bail!("`--pid` and `run` exclude each other: trace an existing process with `--pid PID`, or start one with `run -- CMD`")
        }
        (Some(Command::Run { trace, cmd }), None) => trace_command(&trace, &cmd),
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

fn trace_pid(args: &TraceArgs, pid: u32) -> anyhow::Result<ExitCode> {
    if !target::process_exists(pid) {
        return Err(CaptureError::NoSuchProcess(pid).into());
    }
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
    stream(capture, pid, None, start, args)
}

fn trace_command(args: &TraceArgs, cmd: &[String]) -> anyhow::Result<ExitCode> {
    let mut capture = Capture::load(&capture_options(args))?;
    let held = target::HeldCommand::spawn(cmd)?;
    let pid = held.pid;
    capture.add_process(pid)?;
    let mut start = start_event(&capture, pid, args);
    if let EventKind::TraceStart { target_cmdline, .. } = &mut start.kind {
        *target_cmdline = cmd.join(" ");
    }
    let child = held.release(&cmd[0])?;
    stream(capture, pid, Some(child), start, args)
}

fn stream(
    capture: Capture,
    pid: u32,
    child: Option<target::StartedCommand>,
    start: Event,
    args: &TraceArgs,
) -> anyhow::Result<ExitCode> {
    let mut out = JsonlWriter::create(&args.jsonl).with_context(|| format!("cannot write the trace to {}", args.jsonl))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let opts = SessionOptions { duration: args.duration, grace: args.grace };
    if let EventKind::TraceStart { probes, target_cmdline, .. } = &start.kind {
        eprintln!("tracer: tracing pid {pid} ({target_cmdline}) with {} probes; Ctrl-C stops", probes.len());
    }
    let summary = runtime.block_on(session::run(capture, pid, child, start, &opts, &mut out))?;
    eprintln!(
        "tracer: {} events from pid {pid}, {} lost, stopped: {}",
        summary.events,
        summary.lost,
        summary.reason.as_str()
    );
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
