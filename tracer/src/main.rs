//! `tracer`: explains why a socket reset.
use std::process::ExitCode;

use clap::FromArgMatches as _;

use tracer::{
    cli::{Cli, Command},
    commands::{report, trace, watch},
    doctor,
    tui::logs::LogWriter,
};

fn main() -> ExitCode {
    let cli = Cli::from_arg_matches(&tracer::cli::command().get_matches()).unwrap_or_else(|e| e.exit());
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
    // Colours only for a person at a terminal, never in a log file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(LogWriter).try_init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    if cli.command.is_some() && (cli.cgroup.is_some() || cli.unit.is_some()) {
        anyhow::bail!("`--cgroup` and `--unit` trace a running service: give them without a subcommand (`tracer --cgroup PATH`)");
    }
    match (cli.command, cli.pid) {
        (Some(Command::Run { .. }), Some(_)) => {
            anyhow::bail!("`--pid` and `run` exclude each other: trace an existing process with `--pid PID`, or start one with `run -- CMD`")
        }
        (Some(Command::Run { trace, cmd }), None) => trace::trace_command(&trace, &cmd),
        // Before anything that needs privileges: a recorded trace is read as any user.
        (Some(Command::Report(_)), Some(_)) => {
            anyhow::bail!("`--pid` and `report` exclude each other: `tracer report TRACE.jsonl` reads a recorded trace")
        }
        (Some(Command::Report(args)), None) => report::run(&args),
        // Also without privileges: the doctor says what root would add.
        (Some(Command::Doctor(_)), Some(pid)) => {
            anyhow::bail!("`--pid` goes after `doctor`: `tracer doctor --pid {pid}`")
        }
        (Some(Command::Doctor(args)), None) => doctor::run(&args),
        (Some(Command::Watch(_)), Some(_)) => {
            anyhow::bail!("`--pid` and `watch` exclude each other: `tracer watch` watches every process (name services with --cgroup, --unit or --match)")
        }
        (Some(Command::Watch(args)), None) => watch::run(&args),
        (Some(Command::Completions { shell }), _) => {
            clap_complete::generate(shell, &mut tracer::cli::command(), "tracer", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        (Some(Command::Man), _) => {
            clap_mangen::Man::new(tracer::cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        (None, Some(pid)) => trace::trace_pid(&cli.trace, pid),
        (None, None) if cli.cgroup.is_some() || cli.unit.is_some() => {
            let dir = match (&cli.cgroup, &cli.unit) {
                (Some(path), _) => tracer::process::scope::resolve_cgroup(path)?,
                (None, Some(unit)) => tracer::process::scope::resolve_unit(unit)?,
                (None, None) => unreachable!("checked above"),
            };
            trace::trace_cgroup(&cli.trace, &dir)
        }
        (None, None) => {
            anyhow::bail!("nothing to trace: give `--pid PID`, `--cgroup PATH` or `--unit NAME`, or `run -- CMD ARGS...` to start one (see `tracer --help`)")
        }
    }
}
