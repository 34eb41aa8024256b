//! `tracer --pid PID` and `tracer run -- CMD`: attach capture to the target, choose the
//! sinks (the trace file, the live view), run the session, then say what it found.
mod live;
pub mod output;
mod summary;

use std::{collections::BTreeSet, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::Context as _;
use clap::Args;

use self::output::Plan;
use crate::{
    capture::{Capture, CaptureError, CaptureOptions, ProbeGroup},
    event::{Event, EventKind},
    export::jsonl::JsonlWriter,
    process::{
        self,
        spawn::{HeldCommand, Redirect},
    },
    session::{self, SessionOptions, Target},
    tui::{self, TuiOptions},
    units::parse_bytes,
};

#[derive(Debug, Args, Clone)]
pub struct TraceArgs {
    /// Also trace processes the target forks (threads are always traced)
    #[arg(long)]
    pub follow_children: bool,

    /// When the target dies, keep tracing and attach to its successor: the next process
    /// anywhere on the host that execs the same program with the same arguments within
    /// --restart-wait (a supervisor's restart, a shell loop, systemd). A `restart` event
    /// names the old and new pid; no successor in time ends the trace (`no_restart`).
    /// `--pid` only
    #[arg(long)]
    pub follow_restarts: bool,

    /// How long --follow-restarts waits for a successor after the target died
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration, value_name = "DURATION")]
    pub restart_wait: Duration,

    /// Stop after this long (e.g. 30s, 5m); default: until the target exits or Ctrl-C.
    /// With `run`, the command keeps running when the trace stops this way, unless
    /// --kill-on-exit
    #[arg(short, long, value_parser = parse_positive_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// `run`: when the trace stops before the command has ended (--duration, a closed
    /// output), stop the command too: SIGTERM, then SIGKILL 2 s later
    #[arg(long)]
    pub kill_on_exit: bool,

    /// Where to write the events, one JSON object per line; `-` is standard output (and
    /// no live view). A name ending in `.zst` is written zstd-compressed (about a tenth of
    /// the size; `tracer report` and `zstdcat` read it). Default: with the live view,
    /// tracer-PID-YYYYMMDD-HHMMSS.jsonl in the current directory (`run`:
    /// tracer-PROGRAM-...); without it, standard output
    #[arg(short = 'o', long, visible_alias = "output", value_name = "FILE|-")]
    pub jsonl: Option<String>,

    /// Keep the trace file under this size (e.g. 100MiB, at least 1MiB): the most recent
    /// events are kept, with the first line; `trace_end` counts what was left out
    /// (`cut`). While tracing the file is written in parts next to it (FILE.part1, ...),
    /// joined at the end (`cat` joins parts left by a killed tracer)
    #[arg(long, value_parser = parse_max_size, value_name = "BYTES")]
    pub max_size: Option<u64>,

    /// No live timeline on the terminal: stream plain lines (as when standard output or
    /// input is not a terminal)
    #[arg(long)]
    pub no_tui: bool,

    /// At the end, also write a Perfetto/Chrome trace (JSON) of the session to FILE
    #[arg(long, value_name = "FILE")]
    pub perfetto: Option<PathBuf>,

    /// After the target exits, keep tracing this long for the resets that follow its death
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub grace: Duration,

    /// Probe groups to attach, comma separated (e.g. --probes oom,signal,tcp); `process`
    /// is always on. Default: all
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = ProbeGroup::ALL, hide_default_value = true)]
    pub probes: Vec<ProbeGroup>,

    /// Emit an rss event when a memory counter moved by this much (e.g. 8MiB, 512KiB, 1048576)
    #[arg(long, default_value = "8MiB", value_parser = parse_bytes, value_name = "BYTES")]
    pub rss_threshold: u64,

    /// Size of the kernel ring buffer (power of two, e.g. 16MiB); larger loses less in bursts
    #[arg(long, default_value = "16MiB", value_parser = parse_ring_size, value_name = "BYTES")]
    pub ring_buffer: u64,

    /// Write a `sample` event this often (e.g. 100ms, 1s; 0 disables, 50ms is the finest):
    /// RSS, VmSize, VmHWM, threads and open fds of each traced process, the memory cgroup's
    /// usage, limit, peak and OOM kills, GPU memory (NVML, when a driver is present) and the
    /// system's available memory and pressure. The tracer reads them from /proc and /sys
    /// itself: it costs the target nothing
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub sample_interval: Duration,

    /// How memory calls are written. `each`: one line per mmap, munmap, mremap and brk.
    /// `summary`: successful anonymous calls under 1 MiB and brk calls are counted per
    /// process per second (a `memory_summary` line with exact counts and bytes), for a
    /// trace that stays small when attached for hours to a process that allocates all the
    /// time; file mappings, failed calls and larger calls are still one line each
    #[arg(long, value_enum, default_value = "each", value_name = "HOW")]
    pub mappings: Mappings,

    /// Write a `forecast` event when a memory limit (the memory cgroup's, the host's, a
    /// GPU's) will be reached within this time at the rate memory grows now: headroom,
    /// rate, time to the limit and the process growing fastest, at most one a second per
    /// limit (0 disables). Needs samples (`--sample-interval`)
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub warn_before: Duration,

    /// Write a `memory_stall` event (and sample at once) when the kernel says tasks waited
    /// this long for memory within a second: a PSI trigger on the memory cgroup (v2) and
    /// on the whole host, where the kernel has PSI. 0 disables. Reclaim and thrashing
    /// come before an OOM kill
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub stall_trigger: Duration,
}

/// `--mappings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mappings {
    Each,
    Summary,
}

/// `--mappings summary` counts anonymous calls smaller than this.
pub const SUMMARY_BELOW_BYTES: u64 = 1 << 20;

impl TraceArgs {
    pub fn probe_set(&self) -> BTreeSet<ProbeGroup> {
        self.probes.iter().copied().collect()
    }
}

/// A duration the trace can run for: more than zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e}): use e.g. 30s or 5m"))?;
    if d.is_zero() {
        return Err("a trace of no time records nothing: give more than 0 (e.g. 30s), or leave --duration out to trace until the target exits".into());
    }
    Ok(d)
}

fn parse_max_size(s: &str) -> Result<u64, String> {
    let n = parse_bytes(s)?;
    let min = crate::export::trace_file::MIN_MAX_SIZE;
    if n < min {
        return Err(format!("--max-size {s:?} leaves no room for a trace: give at least {}", crate::units::format_bytes(min)));
    }
    Ok(n)
}

pub(crate) fn parse_ring_size(s: &str) -> Result<u64, String> {
    let n = parse_bytes(s)?;
    if !n.is_power_of_two() || !(4096..=(1 << 30)).contains(&n) {
        return Err(format!("ring buffer size {s:?} must be a power of two between 4KiB and 1GiB"));
    }
    Ok(n)
}

fn capture_options(args: &TraceArgs) -> CaptureOptions {
    CaptureOptions {
        follow_children: args.follow_children,
        rss_threshold_bytes: args.rss_threshold,
        probes: args.probe_set(),
        ring_buffer_bytes: args.ring_buffer as u32,
        follow_restarts: args.follow_restarts,
        scope: None,
        host_wide: false,
        without: Vec::new(),
    }
}

/// The live view or plain lines, and where the trace goes (see [`output::plan`]).
fn output_plan(args: &TraceArgs, label: &str) -> Plan {
    output::plan(args.jsonl.as_deref(), tui::should_use_tui(args.no_tui), || {
        output::default_trace_path(std::path::Path::new(""), label)
    })
}

/// tracer never kills what it attached to: `--kill-on-exit` is for `run`.
fn refuse_kill_on_exit(args: &TraceArgs) -> anyhow::Result<()> {
    if args.kill_on_exit {
        anyhow::bail!("--kill-on-exit stops a command `tracer run` started; tracer never stops a process it attached to: leave it out");
    }
    Ok(())
}

/// `tracer --pid PID`.
pub fn trace_pid(args: &TraceArgs, pid: u32) -> anyhow::Result<ExitCode> {
    refuse_kill_on_exit(args)?;
    let resolved = process::target::resolve(pid)?;
    if let Some(tid) = resolved.from_thread {
        eprintln!("tracer: {tid} is a thread of process {}: tracing the whole process", resolved.pid);
    }
    let pid = resolved.pid;
    let plan = output_plan(args, &pid.to_string());
    let mut capture = Capture::load(&capture_options(args))?;
    capture.add_process(pid)?;
    if args.follow_children {
        for child in process::descendants(pid) {
            capture.add_process(child)?;
        }
    }
    if !process::process_exists(pid) {
        return Err(CaptureError::ExitedDuringAttach(pid).into());
    }
    if args.follow_restarts {
        capture.watch_restarts(pid, &process::cmdline_bytes(pid))?;
    }
    let argv = process::argv(pid);
    let start = start_event(&capture, pid, argv.join(" "), args);
    record(capture, Target { pid, child: None, argv, scope: None }, start, args, &plan, None)
}

/// `tracer --cgroup PATH` / `--unit NAME`: every process of the cgroup's subtree.
pub fn trace_cgroup(args: &TraceArgs, dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    refuse_kill_on_exit(args)?;
    if args.follow_restarts {
        anyhow::bail!("--follow-restarts is for one process (`--pid`); a cgroup's new processes are traced anyway");
    }
    let members = process::scope::members(dir);
    let Some(&first) = members.first() else {
        anyhow::bail!("{} has no processes yet: start the service first, or start it under `tracer run`", dir.display());
    };
    let mut args = args.clone();
    // What the members fork belongs to the service too.
    args.follow_children = true;
    let plan = output_plan(&args, &format!("cgroup-{}", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
    let mut options = capture_options(&args);
    options.scope = process::scope::hierarchy_of(dir);
    if options.scope.is_none() {
        tracing::warn!("{} is in no cgroup mount this process can see: new members are found by listing it", dir.display());
    }
    let mut capture = Capture::load(&options)?;
    for &pid in &members {
        // A member may end while we attach: not an error for a scope.
        if let Err(e) = capture.add_process(pid) {
            tracing::debug!("pid {pid} of {}: {e}", dir.display());
        }
    }
    let names: Vec<String> = members.iter().take(5).map(|p| format!("{p} {}", process::comm(*p))).collect();
    let more = if members.len() > 5 { format!(" and {} more", members.len() - 5) } else { String::new() };
    let line = format!("cgroup {} ({} processes: {}{more})", dir.display(), members.len(), names.join(", "));
    let start = start_event(&capture, first, line, &args);
    record(capture, Target { pid: first, child: None, argv: Vec::new(), scope: Some(dir.to_path_buf()) }, start, &args, &plan, None)
}

/// `tracer run -- CMD ARGS...`.
pub fn trace_command(args: &TraceArgs, cmd: &[String]) -> anyhow::Result<ExitCode> {
    if args.follow_restarts {
        anyhow::bail!(
            "--follow-restarts follows a service that something else restarts; `tracer run` starts the command itself and \
             ends with it: trace the running service with `tracer --pid PID --follow-restarts` instead"
        );
    }
    // The command's pid would be the namespace's, not the one the kernel reports.
    process::target::require_host_pids()?;
    let plan = output_plan(args, &output::program_label(&cmd[0]));
    let mut capture = Capture::load(&capture_options(args))?;
    // The live view owns the terminal: the command's output goes to a file next to the trace.
    let output_log = if plan.tui { plan.trace_file().map(output::output_log_path) } else { None };
    let redirect = match &output_log {
        Some(log) => Some(Redirect::to_log(log).with_context(|| {
            format!("cannot write the command's output to {} (next to the trace; --no-tui leaves it on the terminal)", log.display())
        })?),
        None => None,
    };
    let held = HeldCommand::spawn_with(cmd, redirect.as_ref())?;
    drop(redirect);
    let pid = held.pid;
    capture.add_process(pid)?;
    let start = start_event(&capture, pid, cmd.join(" "), args);
    let child = held.release(&cmd[0])?;
    record(capture, Target { pid, child: Some(child), argv: cmd.to_vec(), scope: None }, start, args, &plan, output_log.as_deref())
}

/// Runs the session into the trace file, under the live view or with plain lines, then
/// prints the end.
fn record(
    capture: Capture,
    target: Target,
    start: Event,
    args: &TraceArgs,
    plan: &Plan,
    output_log: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let jsonl = plan.jsonl_arg();
    let mut out = JsonlWriter::create(&jsonl, args.max_size).with_context(|| format!("cannot write the trace to {jsonl}"))?;
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
        restart_wait: args.follow_restarts.then_some(args.restart_wait),
        kill_on_exit: args.kill_on_exit,
        summarize_below: (args.mappings == Mappings::Summary).then_some(SUMMARY_BELOW_BYTES),
        warn_before: Some(args.warn_before).filter(|d| !d.is_zero() && !args.sample_interval.is_zero()),
        stall_trigger: Some(args.stall_trigger).filter(|d| !d.is_zero() && !args.sample_interval.is_zero()),
    };
    let pid = target.pid;
    if let EventKind::TraceStart { probes, target_cmdline, .. } = &start.kind {
        let stops = if plan.tui { "the live view starts (q quits)" } else { "Ctrl-C stops" };
        eprintln!("tracer: tracing pid {pid} ({target_cmdline}) with {} probes; {stops}", probes.len());
    }
    // With the live view, everything below is printed after the terminal is restored.
    let (summary, tui_exit) = if plan.tui {
        let outcome = runtime.block_on(live::run_with_tui(capture, target, start, &opts, &mut out, TuiOptions::default()));
        (outcome.session, Some(outcome.tui))
    } else {
        (runtime.block_on(session::run(capture, target, start, &opts, &mut [&mut out], None)), None)
    };
    summary::print(&summary?, pid, args, plan, output_log, tui_exit)
}

/// The trace's first event: what is traced, on which kernel, with which probes.
fn start_event(capture: &Capture, pid: u32, cmdline: String, args: &TraceArgs) -> Event {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string();
    Event {
        // Before anything of the target was traced: the first line is the first in time.
        ts_ns: capture.attached_at_ns,
        pid,
        tid: pid,
        comm,
        kind: EventKind::TraceStart {
            target_pid: pid,
            target_cmdline: cmdline,
            follow_children: args.follow_children,
            kernel,
            probes: capture.attached.clone(),
            missing_probes: capture.missing.clone(),
            rss_threshold_bytes: capture.rss_threshold_bytes,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_reject_nonsense() {
        assert_eq!(parse_bytes("8MiB"), Ok(8 << 20));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("2k"), Ok(2048));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("3XB").is_err());
        assert!(parse_ring_size("3MiB").is_err());
    }

    #[test]
    fn a_zero_duration_is_refused_with_what_to_give_instead() {
        assert_eq!(parse_positive_duration("30s"), Ok(Duration::from_secs(30)));
        let e = parse_positive_duration("0s").unwrap_err();
        assert!(e.contains("more than 0") && e.contains("leave --duration out"), "{e}");
        assert!(parse_positive_duration("0").is_err());
        assert!(parse_positive_duration("soon").unwrap_err().contains("not a duration"));
    }
}
