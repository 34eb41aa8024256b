//! The command line: the top-level parser and its subcommands. Each subcommand owns its
//! options type, next to the code that runs it.
use clap::{Parser, Subcommand};

use crate::{
    commands::{report::ReportArgs, trace::TraceArgs, watch::WatchArgs},
    doctor::DoctorArgs,
};

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
        it SIGINT, as Ctrl-C would. The verdicts are printed when the view closes. With `--no-tui`, \
        `--jsonl -`, standard output or input not a terminal, or tracer not in the terminal's \
        foreground (under `timeout`, or with `&`): plain lines on standard error, the trace on \
        standard output unless `--jsonl FILE`.\n\n\
        `tracer watch` is the always-on agent for a host: every process, verdicts as they happen, \
        Prometheus metrics, OTLP logs and incident folders (see `tracer watch --help`).\n\n\
        Examples:\n  sudo tracer -p 4711\n  sudo tracer -p 4711 -d 5m -o trace.jsonl\n  sudo tracer --unit model-server --follow-children\n  \
        sudo tracer run -o - -- python3 server.py\n  \
        tracer report trace.jsonl --format markdown --perfetto trace.perfetto.json\n\n\
        Needs root (or CAP_BPF + CAP_PERFMON) and tracefs; kprobes are not used. `report` needs neither.",
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Process to trace (with all its threads)
    #[arg(short, long, value_name = "PID", conflicts_with_all = ["cgroup", "unit"])]
    pub pid: Option<u32>,

    /// Trace every process in this cgroup and below it (v1 or v2), now and later: the
    /// ones there at the start, what they fork, and processes moved in while tracing
    /// (from the move, in the kernel). A folder under /sys/fs/cgroup, or a path relative
    /// to it as /proc/PID/cgroup shows it. Ends on Ctrl-C, --duration, or when the cgroup
    /// is removed
    #[arg(long, value_name = "PATH", conflicts_with = "unit")]
    pub cgroup: Option<std::path::PathBuf>,

    /// Trace the processes of this systemd unit (its cgroup, as --cgroup)
    #[arg(long, value_name = "NAME")]
    pub unit: Option<String>,

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
    /// Watch the whole host, always on: verdicts as things happen, to Prometheus,
    /// OpenTelemetry, JSON lines and incident folders
    Watch(WatchArgs),
    /// Check this machine for tracing, and whether models fit (no privileges needed)
    Doctor(DoctorArgs),
    /// Print a shell completion script (for packagers: bash, zsh, fish, elvish, powershell)
    Completions {
        /// The shell to print the completions of
        #[arg(value_enum, value_name = "SHELL")]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to standard output (for packagers: `tracer man > tracer.1`)
    Man,
}

/// The parser, with `--version` saying the commit and the probe set.
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    // Built once per process; clap wants it for the life of the program.
    let long: &'static str = Box::leak(long_version().into_boxed_str());
    Cli::command().long_version(long)
}

/// `tracer --version`: the version, the commit it was built from, and the kernel hooks it
/// attaches (by `--probes` group).
pub fn long_version() -> String {
    use crate::capture::probes::{ProbeGroup, PROBES};
    let groups: Vec<String> = ProbeGroup::ALL
        .iter()
        .map(|g| {
            let hooks: Vec<String> =
                PROBES.iter().filter(|p| p.group == *g).flat_map(|p| p.programs.iter().map(|prog| prog.label())).collect();
            let name = clap::ValueEnum::to_possible_value(g).map(|v| v.get_name().to_string()).unwrap_or_default();
            format!("  {name}: {}", hooks.join(", "))
        })
        .collect();
    format!(
        "{}\ncommit {}\nprobes (classic tracepoints, no kprobes):\n{}",
        env!("CARGO_PKG_VERSION"),
        env!("TRACER_GIT_COMMIT"),
        groups.join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::report::ReportFormat;
    use clap::CommandFactory;
    use std::{path::PathBuf, time::Duration};

    #[test]
    fn the_long_version_names_the_commit_and_every_tracepoint_by_group() {
        let v = long_version();
        assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
        let commit = v.lines().nth(1).unwrap().strip_prefix("commit ").unwrap();
        assert!(commit == "unknown" || (commit.len() >= 7 && commit.chars().all(|c| c.is_ascii_hexdigit())), "{v}");
        for p in crate::capture::probes::PROBES {
            for prog in p.programs {
                assert!(v.contains(&prog.label()), "{} missing from\n{v}", prog.label());
            }
        }
        assert!(v.contains("  tcp: ") && v.contains("  oom: "), "{v}");
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
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

    #[test]
    fn doctor_command_takes_pid_models_and_json() {
        let cli = Cli::try_parse_from([
            "tracer",
            "doctor",
            "--pid",
            "42",
            "--model",
            "aya=/m/aya",
            "--model",
            "/m/nllb",
            "--json",
        ])
        .unwrap();
        let Some(Command::Doctor(args)) = cli.command else { panic!("{:?}", cli.command) };
        assert_eq!(args.pid, Some(42));
        assert!(args.json);
        let names: Vec<&str> = args.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["aya", "nllb"]);
        assert_eq!(cli.pid, None, "--pid after doctor is the doctor's");
        let plain = Cli::try_parse_from(["tracer", "doctor"]).unwrap();
        assert!(matches!(plain.command, Some(Command::Doctor(DoctorArgs { pid: None, json: false, .. }))));
        assert!(Cli::try_parse_from(["tracer", "doctor", "--model", "aya="]).is_err());
    }

    #[test]
    fn sample_interval_option_defaults_to_100ms_and_0_disables() {
        let cli = Cli::try_parse_from(["tracer", "--pid", "1"]).unwrap();
        assert_eq!(cli.trace.sample_interval, Duration::from_millis(100));
        let cli = Cli::try_parse_from(["tracer", "--pid", "1", "--sample-interval", "0"]).unwrap();
        assert!(cli.trace.sample_interval.is_zero());
        let cli = Cli::try_parse_from(["tracer", "run", "--sample-interval", "1s", "--", "true"]).unwrap();
        assert!(
            matches!(cli.command, Some(Command::Run { trace, .. }) if trace.sample_interval == Duration::from_secs(1))
        );
        assert!(Cli::try_parse_from(["tracer", "--pid", "1", "--sample-interval", "often"]).is_err());
    }
}
