//! Command line.
use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::capture::ProbeGroup;

#[derive(Debug, Parser)]
#[command(
    name = "tracer",
    version,
    about = "Explains why a socket reset: traces a process's memory, OOM kills, signals, exits and TCP resets with eBPF",
    long_about = "Explains why a socket reset.\n\n\
        tracer follows a process from the kernel (eBPF tracepoints) and writes one JSON object per \
        event: memory growth (mmap/munmap/brk/mremap, RSS), OOM kills, signals, exits, and TCP resets \
        attributed to the sockets and ports the process owned, also after it died.\n\n\
        On a terminal, `--pid` and `run` show a live timeline (memory chart, events, verdicts; \
        q quits, space pauses, f filters, Enter shows an event, ? helps) and write the trace to \
        a file: the one given with `--jsonl FILE`, else tracer-PID-YYYYMMDD-HHMMSS.jsonl (`run`: \
        tracer-PROGRAM-...) in the current directory. With the live view, a command started by \
        `run` reads /dev/null and writes its output next to the trace (NAME.output.log); q sends \
        it SIGINT, as Ctrl-C would. The verdicts are printed when the view closes. `--no-tui`, \
        `--jsonl -`, or standard output or input not a terminal: plain lines as before, the trace \
        to standard output unless `--jsonl FILE`.\n\n\
        Examples:\n  sudo tracer --pid 4711\n  sudo tracer --pid 4711 --jsonl trace.jsonl\n  sudo tracer run --jsonl - -- python3 server.py\n  \
        tracer report trace.jsonl --format markdown --perfetto trace.perfetto.json\n\n\
        Needs root (or CAP_BPF + CAP_PERFMON) and tracefs; kprobes are not used. `report` needs neither.",
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Process to trace (with all its threads)
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    #[command(flatten)]
    pub trace: TraceArgs,

    /// Show debug logs, including messages from the kernel programs
    #[arg(short, long, global = true)]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start a command and trace it from its first instruction
    Run {
        #[command(flatten)]
        trace: TraceArgs,
        /// The command and its arguments, after `--`
        #[arg(last = true, required = true, value_name = "CMD")]
        cmd: Vec<String>,
    },
    /// Explain a recorded trace: the root-cause report (no privileges needed)
    Report(ReportArgs),
    /// Check this machine for tracing, and whether models fit (no privileges needed)
    Doctor(DoctorArgs),
}

/// `tracer doctor [--pid PID] [--model NAME=DIR ...] [--json]`.
#[derive(Debug, Args, Clone)]
#[command(
    long_about = "Checks this machine for tracing and for the workload: kernel version and config \
        (BTF, tracefs, the tracepoints tracer needs, kprobes), privileges (root, CAP_BPF, \
        CAP_PERFMON, RLIMIT_MEMLOCK), cgroup version and the memory limit of --pid, memory and \
        swap, NVIDIA driver and per-GPU memory (NVML), the workload's candle build (CPU/CUDA) and \
        whether the --model checkpoints fit. Each problem comes with its fix.\n\n\
        Runs without root; what only root can see is `skipped`, saying so.\n\n\
        Exit status: 0 when no check is `fail`, 1 otherwise."
)]
pub struct DoctorArgs {
    /// The model server's pid: its memory cgroup and limit (default: the doctor's own)
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// A checkpoint folder to size against that memory and the GPUs (repeat for several,
    /// in load order): config.json with model.safetensors, shards with
    /// model.safetensors.index.json, or pytorch_model.bin
    #[arg(long = "model", value_name = "NAME=DIR", value_parser = crate::doctor::parse_model_arg)]
    pub models: Vec<crate::doctor::ModelSpec>,

    /// JSON for programs: {"checks": [{name, status, finding, fix}], "summary": {...}}
    #[arg(long)]
    pub json: bool,
}

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

#[derive(Debug, Args, Clone)]
pub struct TraceArgs {
    /// Also trace processes the target forks (threads are always traced)
    #[arg(long)]
    pub follow_children: bool,

    /// Stop after this long (e.g. 30s, 5m); default: until the target exits or Ctrl-C
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub duration: Option<Duration>,

    /// Where to write the events, one JSON object per line; `-` is standard output (and
    /// no live view). Default: with the live view, tracer-PID-YYYYMMDD-HHMMSS.jsonl in the
    /// current directory (`run`: tracer-PROGRAM-...); without it, standard output
    #[arg(long, value_name = "FILE|-")]
    pub jsonl: Option<String>,

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

    /// Probe groups to attach, comma separated; `process` is always on
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = ProbeGroup::ALL)]
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
}

impl TraceArgs {
    pub fn probe_set(&self) -> BTreeSet<ProbeGroup> {
        self.probes.iter().copied().collect()
    }
}

/// `8MiB`, `512KiB`, `1GiB`, `4096`, `2M`.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(digits_end);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size: use e.g. 8MiB, 512KiB or 4096"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => return Err(format!("unknown size unit {other:?} in {s:?}: use B, KiB, MiB or GiB")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_ring_size(s: &str) -> Result<u64, String> {
    let n = parse_bytes(s)?;
    if !n.is_power_of_two() || !(4096..=(1 << 30)).contains(&n) {
        return Err(format!("ring buffer size {s:?} must be a power of two between 4KiB and 1GiB"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

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
    fn run_takes_command_after_double_dash() {
        let cli = Cli::try_parse_from(["tracer", "run", "--jsonl", "x", "--", "sleep", "1"]).unwrap();
        match cli.command {
            Some(Command::Run { cmd, trace }) => {
                assert_eq!(cmd, vec!["sleep", "1"]);
                assert_eq!(trace.jsonl.as_deref(), Some("x"));
                assert!(!trace.no_tui);
                assert_eq!(trace.probes.len(), 6);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["tracer", "--pid", "12", "--probes", "oom,tcp"]).unwrap();
        assert_eq!(cli.pid, Some(12));
        assert_eq!(cli.trace.probe_set().len(), 2);
        assert_eq!(cli.trace.jsonl, None, "no default: the live view names the file, plain mode streams");
        let cli = Cli::try_parse_from(["tracer", "--pid", "12", "--no-tui"]).unwrap();
        assert!(cli.trace.no_tui);
        let cli = Cli::try_parse_from(["tracer", "run", "--no-tui", "--", "true"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Run { trace: TraceArgs { no_tui: true, .. }, .. })));
    }

    #[test]
    fn report_takes_a_trace_and_a_format_and_live_forms_take_perfetto() {
        let cli = Cli::try_parse_from(["tracer", "report", "t.jsonl", "--format", "markdown", "--perfetto", "p.json"])
            .unwrap();
        match cli.command {
            Some(Command::Report(r)) => {
                assert_eq!(r.trace, PathBuf::from("t.jsonl"));
                assert_eq!(r.format, ReportFormat::Markdown);
                assert_eq!(r.perfetto, Some(PathBuf::from("p.json")));
                assert_eq!(r.out, None);
            }
            other => panic!("{other:?}"),
        }
        let cli = Cli::try_parse_from(["tracer", "report", "t.jsonl"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Report(ReportArgs { format: ReportFormat::Text, .. }))));
        assert!(Cli::try_parse_from(["tracer", "report"]).is_err());
        let cli = Cli::try_parse_from(["tracer", "--pid", "1", "--perfetto", "p.json"]).unwrap();
        assert_eq!(cli.trace.perfetto, Some(PathBuf::from("p.json")));
        let cli = Cli::try_parse_from(["tracer", "run", "--perfetto", "p.json", "--", "true"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Run { trace: TraceArgs { perfetto: Some(_), .. }, .. })));
    }
}
